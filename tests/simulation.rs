//! The deterministic simulator over many seeds (see `src/sim`).
//!
//! - `FLOTILLA_SIM_SEEDS=N` runs seeds `0..N` (default 500).
//! - `FLOTILLA_SIM_SEED=S` replays one seed verbosely.
//!
//! A failure prints the seed and the command that replays it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use flotilla::sim::{run, SimConfig, SimFailure};

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(value.trim().parse().unwrap_or_else(|_| panic!("{name}={value:?} is not a number")))
}

/// Runs `seeds` on every core, stopping soon after the first failure (the
/// seeds already started finish); returns the failures, lowest seed first.
/// Stopping early keeps a failing run, and each mutant of a mutation test,
/// short.
fn run_seeds(seeds: u64) -> Vec<SimFailure> {
    let next = AtomicU64::new(0);
    let failed = AtomicBool::new(false);
    let failures = Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= seeds || failed.load(Ordering::Relaxed) {
                    break;
                }
                if let Err(failure) = run(SimConfig::for_seed(seed)) {
                    failed.store(true, Ordering::Relaxed);
                    failures.lock().unwrap().push(failure);
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap();
    failures.sort_by_key(|f| f.seed);
    failures
}

#[test]
fn simulated_groups_stay_safe_and_live_under_faults() {
    if let Some(seed) = env_u64("FLOTILLA_SIM_SEED") {
        let mut config = SimConfig::for_seed(seed);
        config.verbose = true;
        match run(config) {
            Ok(report) => println!("seed {seed} passed: {report:?}"),
            Err(failure) => panic!("{failure}"),
        }
        return;
    }
    let seeds = env_u64("FLOTILLA_SIM_SEEDS").unwrap_or(500);
    let started = std::time::Instant::now();
    let failures = run_seeds(seeds);
    println!("simulated {seeds} seeds in {:.1}s", started.elapsed().as_secs_f64());
    if let Some(first) = failures.first() {
        let seeds: Vec<u64> = failures.iter().map(|f| f.seed).collect();
        panic!("seeds {seeds:?} failed (the run stops at the first failure)\n{first}");
    }
}

#[test]
fn the_same_seed_replays_the_same_run() {
    for seed in [7, 1234] {
        let first = run(SimConfig::for_seed(seed));
        let second = run(SimConfig::for_seed(seed));
        let describe = |r: &Result<flotilla::sim::SimReport, SimFailure>| match r {
            Ok(report) => format!("ok t={} {:?} recovery={}", report.time, report.stats, report.recovery_ticks),
            Err(failure) => format!("failed t={} {}", failure.time, failure.violation),
        };
        assert_eq!(describe(&first), describe(&second), "seed {seed} did not replay identically");
        assert!(first.is_ok(), "seed {seed}: {}", describe(&first));
    }
}

#[test]
fn runs_exercise_every_fault_and_feature() {
    // Guards against a simulator that silently stops doing what it claims.
    let mut total = flotilla::sim::Stats::default();
    for seed in 0..40 {
        let report = run(SimConfig::for_seed(seed)).unwrap_or_else(|f| panic!("{f}"));
        total.absorb(&report.stats);
    }
    println!("{total:?}");
    assert!(total.acknowledged > 1000, "{total:?}");
    assert!(total.reads_served > 50, "{total:?}");
    assert!(total.crashes > 20, "{total:?}");
    assert!(total.conf_changes > 20, "{total:?}");
    assert!(total.transfers > 5, "{total:?}");
    assert!(total.snapshots_sent > 5, "{total:?}");
    assert!(total.compactions > 50, "{total:?}");
    assert!(total.elections_won > 80, "{total:?}");
    assert!(total.quiesced > 50, "{total:?}");
    assert!(total.woken > 50, "{total:?}");
    assert!(total.leaders_forgotten > 20, "{total:?}");
    assert!(total.quiesced_leader_crashes > 2, "{total:?}");
    assert!(total.reads_dropped > 5, "{total:?}");
    assert!(total.paper_backtracks > 20, "{total:?}");
}
