//! The `flotilla` command line.
//!
//! For now it has one subcommand, `sim`, which runs the deterministic Raft
//! simulator; `server`, `demo`, `kv`, `admin` and `bench` come with the node
//! runtime (see DESIGN.md).

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

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
