//! The simulator's multi-group mode over several seeds: whole nodes (the
//! runtime's `multiraft::Node`) with many groups each (see `src/sim/multi`).
//!
//! - `FLOTILLA_SIM_MULTI_SEEDS=N` runs seeds `0..N` (default 6).
//! - `FLOTILLA_SIM_MULTI_SEED=S` replays one seed, printing its events.
//!
//! A failure names the seed and the property it broke.

use flotilla::sim::multi::{run_multi, MultiConfig};

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(value.trim().parse().unwrap_or_else(|_| panic!("{name}={value:?} is not a number")))
}

#[test]
fn nodes_with_many_groups_stay_safe_and_live_under_faults() {
    if let Some(seed) = env_u64("FLOTILLA_SIM_MULTI_SEED") {
        let mut config = MultiConfig::for_seed(seed);
        config.verbose = true;
        println!("{config:?}");
        match run_multi(config) {
            Ok(report) => println!("seed {seed} passed: {report:?}"),
            Err(failure) => panic!("{failure}"),
        }
        return;
    }
    let seeds = env_u64("FLOTILLA_SIM_MULTI_SEEDS").unwrap_or(6);
    let started = std::time::Instant::now();
    let mut totals = flotilla::sim::multi::MultiReport::default();
    for seed in 0..seeds {
        let config = MultiConfig::for_seed(seed);
        let (nodes, shards) = (config.nodes, config.shards);
        let report = run_multi(config).unwrap_or_else(|failure| panic!("{failure}"));
        println!("seed {seed}: {nodes} nodes, {shards} shards: {report:?}");
        totals.acknowledged_writes += report.acknowledged_writes;
        totals.reads_checked += report.reads_checked;
        totals.crashes += report.crashes;
        totals.crashes_after_idle += report.crashes_after_idle;
        totals.slow_writes += report.slow_writes;
        totals.snapshots_installed += report.snapshots_installed;
        totals.wakeups += report.wakeups;
        totals.partitions += report.partitions;
    }
    println!("{seeds} multi-group seeds in {:.1}s: {totals:?}", started.elapsed().as_secs_f64());
    // The faults the mode exists for must actually happen across the seeds.
    assert!(totals.acknowledged_writes > 0 && totals.reads_checked > 0, "{totals:?}");
    if seeds >= 6 {
        assert!(totals.crashes > 0 && totals.partitions > 0 && totals.slow_writes > 0, "{totals:?}");
    }
}
