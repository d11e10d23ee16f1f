//! The `flotilla` command line.
//!
//! For now it has `sim`, which runs the deterministic Raft simulator,
//! `bench storage`, which measures group commit on this machine's disk, and
//! `bench raft`, which measures the Raft core's cost per idle group;
//! `server`, `demo`, `kv`, `admin` and the other benchmarks come with the
//! node runtime (see DESIGN.md).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use flotilla::bench::raft::{self as raft_bench, RaftBenchConfig};
use flotilla::bench::storage::{self as storage_bench, StorageBenchConfig};
use flotilla::sim::{run, SimConfig};

#[derive(Parser)]
#[command(name = "flotilla", version, about = "A sharded, replicated key-value store")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run Raft groups in the deterministic simulator under faults and check
    /// safety and liveness (the same seed replays the same run).
    Sim {
        /// Run seeds `first_seed .. first_seed + seeds`.
        #[arg(long, default_value_t = 200)]
        seeds: u64,
        #[arg(long, default_value_t = 0)]
        first_seed: u64,
        /// Replay one seed and print every event.
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Measure one layer of a node on this machine (results: BENCHMARKS.md).
    Bench {
        #[command(subcommand)]
        bench: Bench,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// Append 128-byte entries through group commit (one batch and one
    /// fsync per event-loop turn) for each group count, and measure the
    /// disk's plain fsync rate for comparison.
    Storage {
        /// Group counts, one run each on a fresh engine.
        #[arg(long, value_delimiter = ',', default_value = "1,100,10000")]
        groups: Vec<u64>,
        /// Proposals in flight in total, spread evenly over the groups.
        #[arg(long, default_value_t = 256)]
        clients: usize,
        /// Measured seconds per run (and for the plain fsync rate).
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Unmeasured seconds at the start of each run.
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        /// Repeat everything this many times, interleaved, and also report
        /// the median per group count (a shared disk's speed drifts).
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        /// Directory on the disk to measure; a scratch directory is created
        /// in it and removed afterwards. Default: the system temp dir.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Purge a group's applied log once this many entries piled up
        /// (TiKV's raft-log-gc-threshold is 50).
        #[arg(long, default_value_t = 64)]
        purge_after: u64,
        /// Also write each group's apply state in the turn after its
        /// append, as the KV layer will (the applied data is not written).
        #[arg(long)]
        apply_state: bool,
    },
    /// Drive many in-memory Raft groups with a plain loop: CPU per idle
    /// group with and without quiescence, and the appends a follower gets
    /// for a turn's worth of proposals.
    Raft {
        /// Groups, each with a replica on each of 3 in-memory nodes.
        #[arg(long, default_value_t = 10_000)]
        groups: u64,
        /// Ticks driven in each measured phase.
        #[arg(long, default_value_t = 200)]
        ticks: u64,
        /// The node's clock rate, to report per second (10 = 100 ms ticks).
        #[arg(long, default_value_t = 10)]
        ticks_per_second: u64,
        /// Proposals to one group between two Readies.
        #[arg(long, default_value_t = 100)]
        proposals: usize,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Sim { seed: Some(seed), .. } => {
            let mut config = SimConfig::for_seed(seed);
            config.verbose = true;
            match run(config) {
                Ok(report) => println!("seed {seed} passed: {report:?}"),
                Err(failure) => bail!("{failure}"),
            }
        }
        Command::Sim { seeds, first_seed, seed: None } => simulate(first_seed, seeds)?,
        Command::Bench {
            bench: Bench::Storage { groups, clients, seconds, warmup, rounds, dir, purge_after, apply_state },
        } => {
            let config = StorageBenchConfig {
                groups,
                clients,
                warmup: Duration::try_from_secs_f64(warmup).context("--warmup")?,
                duration: Duration::try_from_secs_f64(seconds).context("--seconds")?,
                rounds,
                dir,
                purge_after_entries: purge_after,
                record_apply_state: apply_state,
            };
            let report = storage_bench::run(&config, |line| eprintln!("{line}"))?;
            print!("{}", storage_bench::format_report(&report));
        }
        Command::Bench { bench: Bench::Raft { groups, ticks, ticks_per_second, proposals } } => {
            let config = RaftBenchConfig { groups, ticks, ticks_per_second, proposals };
            let report = raft_bench::run(&config, |line| eprintln!("{line}"))?;
            print!("{}", raft_bench::format_report(&report));
        }
    }
    Ok(())
}

fn simulate(first_seed: u64, seeds: u64) -> Result<()> {
    let started = std::time::Instant::now();
    let (mut acknowledged, mut elections, mut crashes) = (0, 0, 0);
    for seed in first_seed..first_seed + seeds {
        let config = SimConfig::for_seed(seed);
        let nodes = config.nodes;
        match run(config) {
            Ok(report) => {
                acknowledged += report.stats.acknowledged;
                elections += report.stats.elections_won;
                crashes += report.stats.crashes;
                println!(
                    "seed {seed:>6}: ok  nodes={nodes} writes={:>4} elections={:>3} crashes={:>2} conf_changes={:>2} recovered in {:>3} ticks",
                    report.stats.acknowledged, report.stats.elections_won, report.stats.crashes,
                    report.stats.conf_changes, report.recovery_ticks
                );
            }
            Err(failure) => bail!("{failure}"),
        }
    }
    println!(
        "{seeds} seeds passed in {:.1}s: {acknowledged} acknowledged writes, {elections} elections, {crashes} crashes; no safety violation",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
