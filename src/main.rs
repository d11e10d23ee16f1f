//! The `flotilla` command line: `demo` runs a local 3-node cluster,
//! `server` runs a node, `kv` talks to a
//! cluster, `admin status` shows its nodes and shards, `sim` runs the
//! deterministic Raft simulator, `bench storage` measures group commit on
//! this machine's disk and `bench raft` the Raft core's cost per idle
//! group.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use flotilla::bench::raft::{self as raft_bench, RaftBenchConfig};
use flotilla::bench::storage::{self as storage_bench, StorageBenchConfig};
use flotilla::sim::multi::{run_multi, MultiConfig};
use flotilla::sim::{run, SimConfig};

#[derive(Parser)]
#[command(name = "flotilla", version, about = "A sharded, replicated key-value store")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a local 3-node cluster in this process (data in ./flotilla-demo)
    /// and print its endpoints, metrics URLs and example commands; Ctrl-C stops it.
    Demo(flotilla::demo::DemoArgs),
    /// Run one node of a cluster until SIGTERM or Ctrl-C.
    /// Settings: flags > FLOTILLA_* variables > --config FILE > defaults.
    Server(flotilla::config::ServerFlags),
    /// Read and write keys: put KEY VALUE | get KEY | delete KEY | cas KEY | scan.
    Kv(flotilla::client::cli::KvArgs),
    /// Operate a cluster: `status` lists every node and shard (--json for scripts).
    Admin(flotilla::client::admin_cli::AdminArgs),
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
        /// Simulate whole nodes with many groups each (the runtime's logic
        /// over RocksDB in a temp dir) instead of single groups.
        #[arg(long)]
        multi: bool,
    },
    /// Load a running cluster (Flotilla, or etcd with --target etcd) through
    /// its client API: `flotilla bench --endpoints ... --workload
    /// put|get|mixed`; or measure one layer of a node with a subcommand
    /// (results: BENCHMARKS.md).
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Bench {
        #[command(subcommand)]
        bench: Option<Bench>,
        #[command(flatten)]
        load: flotilla::bench::kv::KvBenchArgs,
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
    /// The same as `flotilla bench` with flags (the older spelling): load a
    /// running cluster through the client library (puts, linearizable gets
    /// or a mix from N concurrent requests): ops/s and latency percentiles.
    Kv(flotilla::bench::kv::KvBenchArgs),
    /// CPU used by running processes (e.g. idle nodes), as % of one core.
    Idle(flotilla::bench::idle::IdleArgs),
}

fn main() -> Result<std::process::ExitCode> {
    match Cli::parse().command {
        Command::Demo(args) => {
            // Warnings only, so the endpoints and commands stand out.
            init_logging_at("warn");
            tokio_runtime()?.block_on(flotilla::demo::run(args))?;
        }
        Command::Server(args) => {
            init_logging();
            tokio_runtime()?.block_on(serve(args))?;
        }
        Command::Kv(args) => {
            init_logging();
            return Ok(match tokio_runtime()?.block_on(flotilla::client::cli::run_kv(args)) {
                Ok(code) => code,
                Err(error) => {
                    eprintln!("error: {error}");
                    flotilla::client::cli::exit_code(&error).into()
                }
            });
        }
        Command::Admin(args) => {
            init_logging();
            return Ok(tokio_runtime()?.block_on(flotilla::client::admin_cli::run_admin(args)));
        }
        Command::Sim { multi: true, seed, seeds, first_seed } => {
            let range = match seed {
                Some(seed) => seed..seed + 1,
                None => first_seed..first_seed + seeds,
            };
            let replay = seed.is_some();
            for seed in range {
                let mut config = MultiConfig::for_seed(seed);
                config.verbose = replay;
                let (nodes, shards) = (config.nodes, config.shards);
                match run_multi(config) {
                    Ok(report) => println!("seed {seed:>6}: ok  nodes={nodes} shards={shards} {report:?}"),
                    Err(failure) => bail!("{failure}"),
                }
            }
        }
        Command::Sim { seed: Some(seed), .. } => {
            let mut config = SimConfig::for_seed(seed);
            config.verbose = true;
            match run(config) {
                Ok(report) => println!("seed {seed} passed: {report:?}"),
                Err(failure) => bail!("{failure}"),
            }
        }
        Command::Sim { seeds, first_seed, seed: None, .. } => simulate(first_seed, seeds)?,
        Command::Bench {
            bench: Some(Bench::Storage { groups, clients, seconds, warmup, rounds, dir, purge_after, apply_state }),
            ..
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
        Command::Bench { bench: Some(Bench::Raft { groups, ticks, ticks_per_second, proposals }), .. } => {
            let config = RaftBenchConfig { groups, ticks, ticks_per_second, proposals };
            let report = raft_bench::run(&config, |line| eprintln!("{line}"))?;
            print!("{}", raft_bench::format_report(&report));
        }
        Command::Bench { bench: Some(Bench::Kv(args)), .. } | Command::Bench { bench: None, load: args } => {
            init_logging();
            tokio_runtime()?.block_on(flotilla::bench::kv::run_cli(args))?;
        }
        Command::Bench { bench: Some(Bench::Idle(args)), .. } => flotilla::bench::idle::run_idle_cli(&args)?,
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn init_logging() {
    init_logging_at("info");
}

/// Logs to stderr at `default` unless RUST_LOG says otherwise.
fn init_logging_at(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

fn tokio_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the tokio runtime")
}

async fn serve(flags: flotilla::config::ServerFlags) -> Result<()> {
    let config = flotilla::config::load(&flags, &|name| std::env::var(name).ok())?;
    // Handlers first: a SIGTERM while the node starts must stop it in
    // order, not kill it with the default action.
    let mut signals = flotilla::node::Signals::new().context("cannot watch for Ctrl-C and SIGTERM")?;
    let listener =
        tokio::net::TcpListener::bind(&config.listen).await.with_context(|| format!("listen {}", config.listen))?;
    let metrics = match &config.metrics_listen {
        Some(addr) => {
            Some(tokio::net::TcpListener::bind(addr).await.with_context(|| format!("metrics-listen {addr}"))?)
        }
        None => None,
    };
    let (id, options) = (config.node.id, config.node);
    let node = flotilla::node::start(options, listener).await.context("starting the node")?;
    let (stop_metrics, metrics_stop) = tokio::sync::watch::channel(false);
    if let Some(metrics) = metrics {
        tokio::spawn(serve_metrics(metrics, node.metrics_registry().clone(), metrics_stop));
    }
    eprintln!("flotilla node {id} serving on {}", node.addr);
    signals.recv().await;
    tracing::info!("shutting down (a second Ctrl-C or SIGTERM exits at once)");
    tokio::spawn(signals.exit_on_next());
    let _ = stop_metrics.send(true);
    node.stop(Duration::from_secs(5)).await;
    Ok(())
}

/// Serves a node's registry on `--metrics-listen` until `stop`; a failure
/// is logged and the node keeps serving clients.
async fn serve_metrics(
    listener: tokio::net::TcpListener,
    registry: prometheus::Registry,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    if let Err(error) = flotilla::metrics::run(listener, registry, stop).await {
        tracing::error!("the metrics endpoint stopped: {error}");
    }
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
