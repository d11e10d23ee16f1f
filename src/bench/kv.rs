//! `flotilla bench kv`: load a running cluster through the client library
//! and report what a user gets: operations per second and latency
//! percentiles. `flotilla bench idle`: the CPU that running processes (the
//! nodes) use, as a percentage of one core.
//!
//! **kv.** `concurrency` tokio tasks share `connections` [`Client`]s (one
//! by default: one HTTP/2 connection per node, requests multiplexed on it).
//! Each task keeps one request in flight (a closed loop): a put of a
//! `value_size`-byte value, a linearizable get, or, for `mixed`, a get with
//! probability `read_ratio` and otherwise a put, each to a key drawn
//! uniformly from `keys` keys. For `get` and `mixed` every key is written
//! first (unmeasured), so every get finds its key. After `warmup` seconds
//! the run measures for `seconds`: every call that starts in that window is
//! measured, waited for up to `drain` past its end, and its latency is the
//! whole client call, retries included (so a call that stalls shows in the
//! percentiles, not only as a dip in throughput); ops/s is the successful
//! measured calls per second of window. A progress line goes to stderr
//! every second. Errors never stop a run; they are counted by kind.
//! Latencies are kept per task as microseconds and sorted once at the end.
//!
//! **idle.** Reads `utime + stime` of each process from `/proc/PID/stat`
//! (optionally of each thread, from `/proc/PID/task/*/stat`) at the start
//! and the end of a window; CPU% of one core = ticks / CLK_TCK / seconds.
//! CLK_TCK comes from `getconf CLK_TCK` (100 if that fails, which is
//! Linux's value on every common platform).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::idle::{clock_ticks_per_second, cpu_percent, parse_stat};
use super::kv_report::{format_json, format_report};
use super::{BenchError, Result};
use crate::client::{Client, ClientError, ClientOptions};

/// A call this slow (1 s) is counted as a stall.
const SLOW_MICROS: u32 = 1_000_000;
/// Requests in flight while the keys are written before a read workload.
const PRELOAD_CONCURRENCY: usize = 256;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Puts only.
    Put,
    /// Linearizable gets only (of keys written first).
    Get,
    /// Gets with probability --read-ratio, puts otherwise.
    Mixed,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Get => "get",
            Workload::Mixed => "mixed",
        }
    }
}

/// The flags of `flotilla bench kv`.
#[derive(clap::Args, Clone, Debug)]
pub struct KvBenchArgs {
    /// Node addresses (host:port), comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub endpoints: Vec<String>,
    #[arg(long, value_enum, default_value_t = Workload::Put)]
    pub workload: Workload,
    /// Requests in flight: one tokio task each, in a closed loop.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Unmeasured seconds of load before the measured ones.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Bytes per value written.
    #[arg(long, default_value_t = 128)]
    pub value_size: usize,
    /// Distinct keys, chosen uniformly.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// For `mixed`: the fraction of operations that are gets.
    #[arg(long, default_value_t = 0.9)]
    pub read_ratio: f64,
    /// Client instances the tasks are spread over (each has its own
    /// connection to each node).
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// For `get` and `mixed`: do not write the keys first (they were
    /// written by an earlier run with the same --keys and --key-prefix).
    #[arg(long)]
    pub no_preload: bool,
    /// Every key is this prefix followed by an 8-digit number.
    #[arg(long, default_value = "bench/")]
    pub key_prefix: String,
    /// Seconds past the window a call may still run before the run stops
    /// waiting for it and counts it as abandoned. The default is the
    /// client's total timeout (30 s) plus 5 s, so every call normally ends
    /// with an answer or the client's own error.
    #[arg(long, default_value_t = 35.0)]
    pub drain: f64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// A validated `bench kv` run.
#[derive(Clone, Debug)]
pub struct KvBenchConfig {
    pub endpoints: Vec<String>,
    pub workload: Workload,
    pub concurrency: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub value_size: usize,
    pub keys: u64,
    pub read_ratio: f64,
    pub connections: usize,
    pub preload: bool,
    pub key_prefix: String,
    pub drain: Duration,
}

impl KvBenchArgs {
    pub fn config(&self) -> Result<KvBenchConfig> {
        let seconds = |flag: &str, value: f64, allow_zero: bool| {
            let duration = Duration::try_from_secs_f64(value)
                .map_err(|_| BenchError::Config(format!("{flag} {value}: not a number of seconds")))?;
            if duration.is_zero() && !allow_zero {
                return Err(BenchError::Config(format!("{flag} must be positive")));
            }
            Ok(duration)
        };
        if self.concurrency == 0 || self.keys == 0 || self.connections == 0 {
            return Err(BenchError::Config("--concurrency, --keys and --connections must be positive".into()));
        }
        if !(0.0..=1.0).contains(&self.read_ratio) {
            return Err(BenchError::Config(format!("--read-ratio {}: must be between 0 and 1", self.read_ratio)));
        }
        Ok(KvBenchConfig {
            endpoints: self.endpoints.clone(),
            workload: self.workload,
            concurrency: self.concurrency,
            duration: seconds("--seconds", self.seconds, false)?,
            warmup: seconds("--warmup", self.warmup, true)?,
            value_size: self.value_size,
            keys: self.keys,
            read_ratio: self.read_ratio,
            connections: self.connections.min(self.concurrency),
            preload: self.workload != Workload::Put && !self.no_preload,
            key_prefix: self.key_prefix.clone(),
            drain: seconds("--drain", self.drain, true)?,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    Get,
    Put,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Put => "put",
        }
    }
}

/// Latency figures of one kind of operation, in microseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct OpStats {
    pub op: Op,
    /// Successful operations started in the measured window.
    pub count: u64,
    pub per_second: f64,
    pub mean_us: f64,
    pub p50_us: u32,
    pub p99_us: u32,
    pub p999_us: u32,
    pub max_us: u32,
    /// Calls that took a second or more (stalls: a healthy call takes
    /// milliseconds).
    pub slow: u64,
}

impl OpStats {
    /// Figures of `latencies` (sorted here) measured over `window`.
    pub fn from_latencies(op: Op, mut latencies: Vec<u32>, window: Duration) -> OpStats {
        latencies.sort_unstable();
        let count = latencies.len() as u64;
        let sum: u64 = latencies.iter().map(|&l| u64::from(l)).sum();
        OpStats {
            op,
            count,
            per_second: count as f64 / window.as_secs_f64().max(f64::MIN_POSITIVE),
            mean_us: if count == 0 { 0.0 } else { sum as f64 / count as f64 },
            p50_us: percentile(&latencies, 50.0).unwrap_or(0),
            p99_us: percentile(&latencies, 99.0).unwrap_or(0),
            p999_us: percentile(&latencies, 99.9).unwrap_or(0),
            max_us: latencies.last().copied().unwrap_or(0),
            slow: latencies.iter().filter(|&&l| l >= SLOW_MICROS).count() as u64,
        }
    }
}

/// The nearest-rank percentile `p` (0 < p <= 100) of sorted samples: the
/// smallest sample with at least p% of the samples at or below it.
pub fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    // Rounded first so that e.g. 99.9% of 1000 is rank 999, not 1000
    // through floating-point error.
    let exact = (p / 100.0 * n as f64 * 1e6).round() / 1e6;
    let rank = (exact.ceil() as usize).clamp(1, n);
    Some(sorted[rank - 1])
}

/// The error kind a failed call is counted under.
pub fn error_kind(error: &ClientError) -> String {
    match error {
        ClientError::NoEndpoints => "no_endpoints".into(),
        ClientError::InvalidEndpoint { .. } => "invalid_endpoint".into(),
        ClientError::InvalidArgument(_) => "invalid_argument".into(),
        ClientError::Unavailable { .. } => "unavailable".into(),
        ClientError::OutcomeUnknown(_) => "outcome_unknown".into(),
        ClientError::Server { code, .. } => format!("server_{code:?}").to_lowercase(),
    }
}

/// What a run measured.
#[derive(Clone, Debug)]
pub struct KvBenchReport {
    pub config: KvBenchConfig,
    /// The measured window as it actually ran.
    pub window: Duration,
    /// Per operation kind that occurred, gets first.
    pub ops: Vec<OpStats>,
    /// Failed calls started in the measured window, by kind.
    pub errors: BTreeMap<String, u64>,
    /// Failed calls started during the warm-up, by kind.
    pub warmup_errors: BTreeMap<String, u64>,
    /// Gets in the window that found no value (the key was not written).
    pub not_found: u64,
    /// Calls still running `drain` after the window closed.
    pub abandoned: u64,
    /// When the earliest and the latest of them started, after the start
    /// of the warm-up.
    pub abandoned_started: Option<(Duration, Duration)>,
    /// Calls (warm-up included) that took a second or more, or were
    /// abandoned, by the second (after the warm-up began) they started in.
    pub stalls_by_start_second: BTreeMap<u64, u64>,
    /// Keys written first, the failures among them, and how long it took.
    pub preload: Option<(u64, u64, Duration)>,
    /// Calls started in the window, whatever their outcome, per second.
    pub completed_per_second: f64,
    /// This process's own CPU over the window, % of one core (the load
    /// tool shares the machine with the nodes).
    pub own_cpu_percent: Option<f64>,
}

impl KvBenchReport {
    pub fn successes(&self) -> u64 {
        self.ops.iter().map(|op| op.count).sum()
    }

    pub fn per_second(&self) -> f64 {
        self.successes() as f64 / self.window.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

/// A small, fast, seedable generator (SplitMix64); good enough to pick keys.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), by multiply-shift.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

pub fn key_name(prefix: &str, index: u64) -> String {
    format!("{prefix}{index:08}")
}

/// A value of `size` printable bytes that differ from task to task (so
/// they do not compress to nothing).
fn value_for(seed: u64, size: usize) -> Vec<u8> {
    let mut rng = SplitMix64::new(seed ^ 0x5EED);
    (0..size).map(|_| b'a' + rng.below(26) as u8).collect()
}

/// Counters the progress line reads.
#[derive(Default)]
struct Live {
    completed: AtomicU64,
    failed: AtomicU64,
}

/// Timing shared by every task.
struct Plan {
    config: KvBenchConfig,
    start: Instant,
    measure_from: Instant,
    end: Instant,
}

/// What one task saw.
#[derive(Default)]
struct TaskResult {
    get: Vec<u32>,
    put: Vec<u32>,
    errors: BTreeMap<String, u64>,
    warmup_errors: BTreeMap<String, u64>,
    not_found: u64,
    /// When each abandoned call started, after the start of the warm-up.
    abandoned_started: Vec<Duration>,
    stalls_by_start_second: BTreeMap<u64, u64>,
    completed_in_window: u64,
}

enum Outcome {
    Ok,
    NotFound,
    Failed(String),
    Abandoned,
}

async fn call(client: &Client, op: Op, key: String, value: &[u8], give_up: Instant) -> Outcome {
    let limit = give_up.saturating_duration_since(Instant::now());
    let outcome = match op {
        Op::Put => tokio::time::timeout(limit, client.put(key, value.to_vec())).await.map(|r| r.map(|()| true)),
        Op::Get => tokio::time::timeout(limit, client.get(key)).await.map(|r| r.map(|v| v.is_some())),
    };
    match outcome {
        Err(_elapsed) => Outcome::Abandoned,
        Ok(Ok(true)) => Outcome::Ok,
        Ok(Ok(false)) => Outcome::NotFound,
        Ok(Err(error)) => Outcome::Failed(error_kind(&error)),
    }
}

async fn worker(client: Client, task: usize, plan: Arc<Plan>, live: Arc<Live>) -> TaskResult {
    let config = &plan.config;
    let mut rng = SplitMix64::new(0xF107_111A ^ (task as u64).wrapping_mul(0x1000_0000_01B3));
    let value = value_for(task as u64, config.value_size);
    let give_up = plan.end + config.drain;
    let mut result = TaskResult::default();
    loop {
        let started = Instant::now();
        if started >= plan.end {
            break;
        }
        let op = match config.workload {
            Workload::Put => Op::Put,
            Workload::Get => Op::Get,
            Workload::Mixed if rng.chance(config.read_ratio) => Op::Get,
            Workload::Mixed => Op::Put,
        };
        let key = key_name(&config.key_prefix, rng.below(config.keys));
        let outcome = call(&client, op, key, &value, give_up).await;
        let finished = Instant::now();
        // Measured: the calls that started in the window, however long they
        // took (a stalled call shows in the percentiles, not just as a dip).
        let in_window = started >= plan.measure_from && started < plan.end;
        let micros = u32::try_from(finished.duration_since(started).as_micros()).unwrap_or(u32::MAX);
        live.completed.fetch_add(1, Ordering::Relaxed);
        if micros >= SLOW_MICROS || matches!(outcome, Outcome::Abandoned) {
            *result.stalls_by_start_second.entry(started.duration_since(plan.start).as_secs()).or_default() += 1;
        }
        match outcome {
            Outcome::Abandoned => {
                result.abandoned_started.push(started.duration_since(plan.start));
                continue;
            }
            Outcome::Failed(ref kind) => {
                live.failed.fetch_add(1, Ordering::Relaxed);
                let counts = if in_window { &mut result.errors } else { &mut result.warmup_errors };
                *counts.entry(kind.clone()).or_default() += 1;
            }
            Outcome::NotFound if in_window => result.not_found += 1,
            Outcome::Ok | Outcome::NotFound => {}
        }
        if in_window {
            result.completed_in_window += 1;
            if matches!(outcome, Outcome::Ok | Outcome::NotFound) {
                match op {
                    Op::Get => result.get.push(micros),
                    Op::Put => result.put.push(micros),
                }
            }
        }
    }
    result
}

/// This process's CPU between `from` and `to`, % of one core.
async fn own_cpu_over(from: Instant, to: Instant) -> Option<f64> {
    let (ticks_per_second, _) = clock_ticks_per_second();
    let read = || std::fs::read_to_string("/proc/self/stat").ok().and_then(|text| parse_stat(&text)).map(|(_, t)| t);
    tokio::time::sleep_until(from.into()).await;
    let (before, started) = (read()?, Instant::now());
    tokio::time::sleep_until(to.into()).await;
    let after = read()?;
    Some(cpu_percent(after.saturating_sub(before), ticks_per_second, started.elapsed()))
}

/// Writes every key once (`PRELOAD_CONCURRENCY` in flight). Returns the
/// failures.
async fn preload(clients: &[Client], config: &KvBenchConfig, progress: &(dyn Fn(&str) + Sync)) -> u64 {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let tasks = PRELOAD_CONCURRENCY.min(config.keys as usize).max(1);
    let mut handles = Vec::new();
    for task in 0..tasks {
        let client = clients[task % clients.len()].clone();
        let (done, failed) = (done.clone(), failed.clone());
        let (keys, prefix) = (config.keys, config.key_prefix.clone());
        let value = value_for(task as u64, config.value_size);
        handles.push(tokio::spawn(async move {
            let mut index = task as u64;
            while index < keys {
                if client.put(key_name(&prefix, index), value.clone()).await.is_err() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                done.fetch_add(1, Ordering::Relaxed);
                index += tasks as u64;
            }
        }));
    }
    let started = Instant::now();
    let mut all = Box::pin(futures_join(handles));
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(1), Duration::from_secs(1));
    loop {
        tokio::select! {
            () = &mut all => break,
            _ = ticker.tick() => progress(&format!(
                "[{:5.1} s] preloading: {} of {} keys written, {} failed",
                started.elapsed().as_secs_f64(), done.load(Ordering::Relaxed), config.keys,
                failed.load(Ordering::Relaxed)
            )),
        }
    }
    failed.load(Ordering::Relaxed)
}

/// Awaits every handle (a panicked task is reported, not propagated).
async fn futures_join<T>(handles: Vec<tokio::task::JoinHandle<T>>) {
    for handle in handles {
        if let Err(error) = handle.await {
            eprintln!("a benchmark task failed: {error}");
        }
    }
}

/// Runs the benchmark against a running cluster.
pub async fn run(config: &KvBenchConfig, progress: &(dyn Fn(&str) + Sync)) -> Result<KvBenchReport> {
    let clients = (0..config.connections)
        .map(|_| Client::connect(config.endpoints.clone(), ClientOptions::default()))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|error| BenchError::Config(format!("--endpoints: {error}")))?;
    let preload_result = if config.preload {
        progress(&format!("writing {} keys first ...", config.keys));
        let started = Instant::now();
        let failed = preload(&clients, config, progress).await;
        let took = started.elapsed();
        progress(&format!("preloaded {} keys in {:.1} s, {failed} failed", config.keys, took.as_secs_f64()));
        Some((config.keys, failed, took))
    } else {
        None
    };
    let start = Instant::now();
    let plan = Arc::new(Plan {
        config: config.clone(),
        start,
        measure_from: start + config.warmup,
        end: start + config.warmup + config.duration,
    });
    let live = Arc::new(Live::default());
    let own_cpu = tokio::spawn(own_cpu_over(plan.measure_from, plan.end));
    let handles: Vec<_> = (0..config.concurrency)
        .map(|task| tokio::spawn(worker(clients[task % clients.len()].clone(), task, plan.clone(), live.clone())))
        .collect();
    let results;
    let mut all = Box::pin(async move {
        let mut results = Vec::new();
        for handle in handles {
            match handle.await {
                Ok(result) => results.push(result),
                Err(error) => eprintln!("a benchmark task failed: {error}"),
            }
        }
        results
    });
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(1), Duration::from_secs(1));
    let (mut last_completed, mut last_failed, mut last_at) = (0u64, 0u64, Instant::now());
    loop {
        tokio::select! {
            done = &mut all => { results = done; break }
            _ = ticker.tick() => {
                let now = Instant::now();
                let (completed, failed) = (live.completed.load(Ordering::Relaxed), live.failed.load(Ordering::Relaxed));
                let phase = if now < plan.measure_from { "warm-up" } else if now < plan.end { "measure" } else { "ending " };
                let rate = (completed - last_completed) as f64 / now.duration_since(last_at).as_secs_f64();
                progress(&format!(
                    "[{:5.1} s] {phase} {:>9.0} {}s/s  {} errors this second",
                    now.duration_since(start).as_secs_f64(), rate, config.workload.name(), failed - last_failed
                ));
                (last_completed, last_failed, last_at) = (completed, failed, now);
            }
        }
    }
    let window = config.duration;
    let mut merged = TaskResult::default();
    for result in results {
        merged.get.extend(result.get);
        merged.put.extend(result.put);
        for (kind, count) in result.errors {
            *merged.errors.entry(kind).or_default() += count;
        }
        for (kind, count) in result.warmup_errors {
            *merged.warmup_errors.entry(kind).or_default() += count;
        }
        merged.not_found += result.not_found;
        merged.abandoned_started.extend(result.abandoned_started);
        for (second, count) in result.stalls_by_start_second {
            *merged.stalls_by_start_second.entry(second).or_default() += count;
        }
        merged.completed_in_window += result.completed_in_window;
    }
    let mut ops = Vec::new();
    if config.workload != Workload::Put {
        ops.push(OpStats::from_latencies(Op::Get, merged.get, window));
    }
    if config.workload != Workload::Get {
        ops.push(OpStats::from_latencies(Op::Put, merged.put, window));
    }
    Ok(KvBenchReport {
        config: config.clone(),
        window,
        ops,
        errors: merged.errors,
        warmup_errors: merged.warmup_errors,
        not_found: merged.not_found,
        abandoned: merged.abandoned_started.len() as u64,
        abandoned_started: merged
            .abandoned_started
            .iter()
            .min()
            .copied()
            .zip(merged.abandoned_started.iter().max().copied()),
        stalls_by_start_second: merged.stalls_by_start_second,
        preload: preload_result,
        completed_per_second: merged.completed_in_window as f64 / window.as_secs_f64(),
        own_cpu_percent: own_cpu.await.ok().flatten(),
    })
}

/// `flotilla bench kv`: parse, run, print.
pub async fn run_cli(args: KvBenchArgs) -> Result<()> {
    let config = args.config()?;
    let report = run(&config, &|line: &str| eprintln!("{line}")).await?;
    if args.json {
        println!("{}", format_json(&report));
    } else {
        print!("{}", format_report(&report));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::bench::kv_report::{json_number, json_string};

    #[derive(Parser)]
    struct KvCli {
        #[command(flatten)]
        args: KvBenchArgs,
    }

    fn kv(args: &[&str]) -> std::result::Result<KvBenchArgs, clap::Error> {
        KvCli::try_parse_from(std::iter::once("kv").chain(args.iter().copied())).map(|cli| cli.args)
    }

    #[test]
    fn percentile_is_nearest_rank() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7], 50.0), Some(7));
        assert_eq!(percentile(&[7], 99.9), Some(7));
        let hundred: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&hundred, 50.0), Some(50));
        assert_eq!(percentile(&hundred, 99.0), Some(99));
        assert_eq!(percentile(&hundred, 99.9), Some(100));
        assert_eq!(percentile(&hundred, 100.0), Some(100));
        assert_eq!(percentile(&hundred, 0.1), Some(1));
        let thousand: Vec<u32> = (1..=1000).collect();
        // 99.9% of 1000 is exactly rank 999 (no floating-point overshoot).
        assert_eq!(percentile(&thousand, 99.9), Some(999));
        assert_eq!(percentile(&thousand, 99.0), Some(990));
        assert_eq!(percentile(&[1, 2, 3, 4], 50.0), Some(2));
        assert_eq!(percentile(&[1, 2, 3, 4], 51.0), Some(3));
    }

    #[test]
    fn stats_sort_and_summarise() {
        let stats = OpStats::from_latencies(Op::Put, vec![400, 100, 300, 200], Duration::from_secs(2));
        assert_eq!(stats.count, 4);
        assert_eq!(stats.per_second, 2.0);
        assert_eq!(stats.mean_us, 250.0);
        assert_eq!((stats.p50_us, stats.p99_us, stats.p999_us, stats.max_us), (200, 400, 400, 400));
        assert_eq!(stats.slow, 0);
        let stalled = OpStats::from_latencies(Op::Get, vec![999_999, 1_000_000, 10_000_000], Duration::from_secs(1));
        assert_eq!(stalled.slow, 2);
        let empty = OpStats::from_latencies(Op::Get, Vec::new(), Duration::from_secs(1));
        assert_eq!((empty.count, empty.p50_us, empty.max_us, empty.mean_us), (0, 0, 0, 0.0));
    }

    #[test]
    fn flags_have_the_documented_defaults() {
        let args = kv(&["--endpoints", "127.0.0.1:1,127.0.0.1:2"]).unwrap();
        assert_eq!(args.endpoints, vec!["127.0.0.1:1", "127.0.0.1:2"]);
        let config = args.config().unwrap();
        assert_eq!(config.workload, Workload::Put);
        assert_eq!(config.concurrency, 64);
        assert_eq!(config.duration, Duration::from_secs(10));
        assert_eq!(config.warmup, Duration::from_secs(2));
        assert_eq!((config.value_size, config.keys, config.read_ratio), (128, 100_000, 0.9));
        assert_eq!(config.connections, 1);
        assert_eq!(config.drain, Duration::from_secs(35));
        assert!(!config.preload, "a put workload reads nothing, so it writes nothing first");
        assert!(!args.json);
    }

    #[test]
    fn flags_parse_and_validate() {
        let args = kv(&[
            "--endpoints=a:1",
            "--workload",
            "mixed",
            "--concurrency",
            "256",
            "--seconds",
            "0.5",
            "--warmup",
            "0",
            "--value-size",
            "16",
            "--keys",
            "10",
            "--read-ratio",
            "0.5",
            "--connections",
            "4",
            "--json",
        ])
        .unwrap();
        let config = args.config().unwrap();
        assert_eq!(config.workload, Workload::Mixed);
        assert_eq!((config.concurrency, config.value_size, config.keys, config.connections), (256, 16, 10, 4));
        assert_eq!((config.duration, config.warmup), (Duration::from_millis(500), Duration::ZERO));
        assert!(config.preload && args.json);
        assert!(!kv(&["--endpoints=a:1", "--workload", "get", "--no-preload"]).unwrap().config().unwrap().preload);
        assert!(kv(&["--endpoints=a:1", "--workload", "get"]).unwrap().config().unwrap().preload);
        // Errors.
        assert!(kv(&[]).is_err(), "--endpoints is required");
        assert!(kv(&["--endpoints=a:1", "--workload", "scan"]).is_err());
        for bad in [
            &["--concurrency", "0"][..],
            &["--keys", "0"],
            &["--seconds", "0"],
            &["--seconds", "-1"],
            &["--warmup", "-1"],
            &["--read-ratio", "1.5"],
            &["--connections", "0"],
        ] {
            let mut args = vec!["--endpoints=a:1"];
            args.extend_from_slice(bad);
            // clap itself refuses "-1" (it looks like a flag); either way it fails.
            assert!(kv(&args).map_or(true, |args| args.config().is_err()), "{bad:?} must be refused");
        }
        // More clients than tasks would sit unused.
        let config = kv(&["--endpoints=a:1", "--concurrency", "2", "--connections", "8"]).unwrap().config().unwrap();
        assert_eq!(config.connections, 2);
    }

    #[test]
    fn keys_values_and_randomness() {
        assert_eq!(key_name("bench/", 42), "bench/00000042");
        let value = value_for(3, 128);
        assert_eq!(value.len(), 128);
        assert!(value.iter().all(u8::is_ascii_lowercase));
        let mut rng = SplitMix64::new(1);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            seen[rng.below(10) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
        let mut rng = SplitMix64::new(2);
        let reads = (0..10_000).filter(|_| rng.chance(0.9)).count();
        assert!((8800..9200).contains(&reads), "{reads}");
    }

    #[test]
    fn json_is_well_formed() {
        assert_eq!(json_string("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
        assert_eq!(json_number(f64::NAN), "null");
        let config = kv(&["--endpoints=h:1", "--workload", "mixed"]).unwrap().config().unwrap();
        let report = KvBenchReport {
            config,
            window: Duration::from_secs(1),
            ops: vec![
                OpStats::from_latencies(Op::Get, vec![100, 200], Duration::from_secs(1)),
                OpStats::from_latencies(Op::Put, vec![300], Duration::from_secs(1)),
            ],
            errors: BTreeMap::from([("unavailable".into(), 2)]),
            warmup_errors: BTreeMap::new(),
            not_found: 0,
            abandoned: 0,
            abandoned_started: None,
            stalls_by_start_second: BTreeMap::from([(0, 3), (4, 1)]),
            preload: Some((10, 0, Duration::from_millis(1500))),
            completed_per_second: 5.0,
            own_cpu_percent: Some(42.0),
        };
        let json = format_json(&report);
        assert!(json.starts_with("{\"workload\":\"mixed\""), "{json}");
        assert!(json.contains("\"ops_per_sec\":3.000"), "{json}");
        assert!(json.contains("\"get\":{\"count\":2,"), "{json}");
        assert!(json.contains("\"errors\":{\"unavailable\":2}"), "{json}");
        assert!(json.contains("\"warmup_errors\":{}"), "{json}");
        assert!(json.contains("\"endpoints\":[\"h:1\"]"), "{json}");
        assert!(json.contains("\"stalls_by_start_second\":{\"0\":3,\"4\":1}"), "{json}");
        // Balanced braces and brackets (no string here contains any).
        assert_eq!(json.matches('{').count(), json.matches('}').count());
        assert_eq!(json.matches('[').count(), json.matches(']').count());
        let text = format_report(&report);
        assert!(text.contains("errors in the window: unavailable=2"), "{text}");
        assert!(text.contains(" all "), "{text}");
        assert!(
            text.contains(
                "(warm-up included): 4; by the second they started in after the warm-up began: 0 s: 3, 4 s: 1"
            ),
            "{text}"
        );
    }
}
