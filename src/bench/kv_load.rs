//! The load of `flotilla bench`: writes the keys first when the workload
//! reads, then runs `concurrency` closed-loop tasks through the warm-up
//! and the measured window, printing a progress line about once a second,
//! and merges what the tasks saw into a [`KvBenchReport`].
//!
//! Errors never stop a run: they are counted by gRPC status code. A call
//! still unanswered `drain` after the window is abandoned (counted, not
//! measured), so a wedged cluster cannot hold the tool forever.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::idle::{clock_ticks_per_second, cpu_percent, parse_stat};
use super::kv::{KvBenchConfig, Workload};
use super::kv_report::{new_latencies, record, KvBenchReport, Latencies, OpStats, SLOW_MICROS};
use super::kv_target::{Answer, Op, Target};
use super::Result;

/// Requests in flight while the keys are written before a read workload.
const PRELOAD_CONCURRENCY: usize = 256;

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

/// What one task saw (and, merged, what all saw).
struct TaskResult {
    get: Latencies,
    put: Latencies,
    errors: BTreeMap<String, u64>,
    warmup_errors: BTreeMap<String, u64>,
    not_found: u64,
    /// When each abandoned call started, after the start of the warm-up.
    abandoned_started: Vec<Duration>,
    stalls_by_start_second: BTreeMap<u64, u64>,
    completed_in_window: u64,
}

impl TaskResult {
    fn new() -> TaskResult {
        TaskResult {
            get: new_latencies(),
            put: new_latencies(),
            errors: BTreeMap::new(),
            warmup_errors: BTreeMap::new(),
            not_found: 0,
            abandoned_started: Vec::new(),
            stalls_by_start_second: BTreeMap::new(),
            completed_in_window: 0,
        }
    }

    fn merge(&mut self, other: TaskResult) {
        // Cannot fail: both grow on demand and share one precision.
        let _ = self.get.add(&other.get);
        let _ = self.put.add(&other.put);
        add_counts(&mut self.errors, other.errors);
        add_counts(&mut self.warmup_errors, other.warmup_errors);
        add_counts(&mut self.stalls_by_start_second, other.stalls_by_start_second);
        self.not_found += other.not_found;
        self.abandoned_started.extend(other.abandoned_started);
        self.completed_in_window += other.completed_in_window;
    }

    /// Counts one call that started at `started` and ended now (`None`:
    /// abandoned).
    fn count(&mut self, plan: &Plan, op: Op, started: Instant, answer: Option<Answer>, live: &Live) {
        let micros = u64::try_from(Instant::now().duration_since(started).as_micros()).unwrap_or(u64::MAX);
        let since_start = started.duration_since(plan.start);
        live.completed.fetch_add(1, Ordering::Relaxed);
        if micros >= SLOW_MICROS || answer.is_none() {
            *self.stalls_by_start_second.entry(since_start.as_secs()).or_default() += 1;
        }
        // Measured: the calls that started in the window, however long they
        // took (a stalled call shows in the percentiles, not just as a dip).
        let in_window = started >= plan.measure_from && started < plan.end;
        match answer {
            None => self.abandoned_started.push(since_start),
            Some(Answer::Failed(code)) => {
                live.failed.fetch_add(1, Ordering::Relaxed);
                let counts = if in_window { &mut self.errors } else { &mut self.warmup_errors };
                *counts.entry(code.to_owned()).or_default() += 1;
            }
            Some(Answer::NotFound) if in_window => self.not_found += 1,
            Some(Answer::Ok | Answer::NotFound) => {}
        }
        if in_window && answer.is_some() {
            self.completed_in_window += 1;
            if matches!(answer, Some(Answer::Ok | Answer::NotFound)) {
                record(if op == Op::Get { &mut self.get } else { &mut self.put }, micros);
            }
        }
    }
}

fn add_counts<K: Ord>(into: &mut BTreeMap<K, u64>, from: BTreeMap<K, u64>) {
    for (key, count) in from {
        *into.entry(key).or_default() += count;
    }
}

async fn worker(target: Target, task: usize, plan: Arc<Plan>, live: Arc<Live>) -> TaskResult {
    let config = &plan.config;
    let mut rng = SplitMix64::new(0xF107_111A ^ (task as u64).wrapping_mul(0x1000_0000_01B3));
    let value = value_for(task as u64, config.value_size);
    let give_up = plan.end + config.drain;
    let mut result = TaskResult::new();
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
        let limit = give_up.saturating_duration_since(started);
        let answer = tokio::time::timeout(limit, target.call(op, key, &value)).await.ok();
        result.count(&plan, op, started, answer, &live);
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

/// Awaits `all`, calling `tick` about once a second meanwhile.
async fn with_ticks<T>(all: impl std::future::Future<Output = T>, mut tick: impl FnMut()) -> T {
    let mut all = std::pin::pin!(all);
    let second = Duration::from_secs(1);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + second, second);
    loop {
        tokio::select! {
            done = &mut all => return done,
            _ = ticker.tick() => tick(),
        }
    }
}

/// Awaits every handle (a panicked task is reported, not propagated).
async fn join_all<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut results = Vec::with_capacity(handles.len());
    for handle in handles {
        match handle.await {
            Ok(result) => results.push(result),
            Err(error) => eprintln!("a benchmark task failed: {error}"),
        }
    }
    results
}

/// Writes every key once (`PRELOAD_CONCURRENCY` in flight). Returns the
/// failures.
async fn preload(targets: &[Target], config: &KvBenchConfig, progress: &(dyn Fn(&str) + Sync)) -> u64 {
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let tasks = PRELOAD_CONCURRENCY.min(config.keys as usize).max(1);
    let handles = (0..tasks)
        .map(|task| {
            let target = targets[task % targets.len()].clone();
            let (done, failed) = (done.clone(), failed.clone());
            let (keys, prefix) = (config.keys, config.key_prefix.clone());
            let value = value_for(task as u64, config.value_size);
            tokio::spawn(async move {
                for index in (task as u64..keys).step_by(tasks) {
                    if let Answer::Failed(_) = target.call(Op::Put, key_name(&prefix, index), &value).await {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let started = Instant::now();
    with_ticks(join_all(handles), || {
        progress(&format!(
            "[{:5.1} s] preloading: {} of {} keys written, {} failed",
            started.elapsed().as_secs_f64(),
            done.load(Ordering::Relaxed),
            config.keys,
            failed.load(Ordering::Relaxed)
        ))
    })
    .await;
    failed.load(Ordering::Relaxed)
}

/// The progress line: this second's rate and errors, and the totals so far.
fn progress_line(plan: &Plan, live: &Live, last: &mut (u64, u64, Instant)) -> String {
    let now = Instant::now();
    let (completed, failed) = (live.completed.load(Ordering::Relaxed), live.failed.load(Ordering::Relaxed));
    let phase = if now < plan.measure_from {
        "warm-up"
    } else if now < plan.end {
        "measure"
    } else {
        "ending "
    };
    let elapsed = now.duration_since(plan.start).as_secs_f64();
    let rate = (completed - last.0) as f64 / now.duration_since(last.2).as_secs_f64().max(1e-9);
    let line = format!(
        "[{elapsed:5.1} s] {phase} {} {rate:>8.0} ops/s now, {:>8.0} ops/s so far; errors: {} now, {failed} so far",
        plan.config.workload.name(),
        completed as f64 / elapsed.max(1e-9),
        failed - last.1,
    );
    *last = (completed, failed, now);
    line
}

/// Runs the benchmark against a running cluster.
pub async fn run(config: &KvBenchConfig, progress: &(dyn Fn(&str) + Sync)) -> Result<KvBenchReport> {
    let targets = Target::connect(config.target, &config.endpoints, config.connections)?;
    let preload_result = if config.preload {
        progress(&format!("writing {} keys first ...", config.keys));
        let started = Instant::now();
        let failed = preload(&targets, config, progress).await;
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
    let handles = (0..config.concurrency)
        .map(|task| tokio::spawn(worker(targets[task % targets.len()].clone(), task, plan.clone(), live.clone())))
        .collect();
    let mut last = (0, 0, start);
    let results = with_ticks(join_all(handles), || progress(&progress_line(&plan, &live, &mut last))).await;
    let mut merged = TaskResult::new();
    for result in results {
        merged.merge(result);
    }
    let own_cpu_percent = own_cpu.await.ok().flatten();
    Ok(report(config, merged, preload_result, own_cpu_percent))
}

fn report(
    config: &KvBenchConfig,
    merged: TaskResult,
    preload: Option<(u64, u64, Duration)>,
    own_cpu_percent: Option<f64>,
) -> KvBenchReport {
    let window = config.duration;
    let mut ops = Vec::new();
    if config.workload != Workload::Put {
        ops.push(OpStats::from_latencies(Op::Get.name(), &merged.get, window));
    }
    if config.workload != Workload::Get {
        ops.push(OpStats::from_latencies(Op::Put.name(), &merged.put, window));
    }
    let mut all = merged.get.clone();
    let _ = all.add(&merged.put);
    let started = &merged.abandoned_started;
    KvBenchReport {
        config: config.clone(),
        window,
        ops,
        all: OpStats::from_latencies("all", &all, window),
        errors: merged.errors,
        warmup_errors: merged.warmup_errors,
        not_found: merged.not_found,
        abandoned: started.len() as u64,
        abandoned_started: started.iter().min().copied().zip(started.iter().max().copied()),
        stalls_by_start_second: merged.stalls_by_start_second,
        preload,
        completed_per_second: merged.completed_in_window as f64 / window.as_secs_f64(),
        own_cpu_percent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn plan(warmup: u64, window: u64) -> Plan {
        let config = crate::bench::kv::KvBenchConfig {
            endpoints: vec!["h:1".into()],
            target: crate::bench::kv::TargetKind::Flotilla,
            workload: Workload::Mixed,
            concurrency: 1,
            duration: Duration::from_secs(window),
            warmup: Duration::from_secs(warmup),
            value_size: 1,
            keys: 1,
            read_ratio: 0.5,
            connections: 1,
            preload: false,
            key_prefix: "k".into(),
            drain: Duration::from_secs(1),
        };
        // The window began `warmup` ago, so calls started now are in it.
        let start = Instant::now() - Duration::from_secs(warmup);
        Plan {
            config,
            start,
            measure_from: start + Duration::from_secs(warmup),
            end: Instant::now() + Duration::from_secs(window),
        }
    }

    #[test]
    fn calls_are_counted_by_outcome_and_window() {
        let (plan, live) = (plan(1, 60), Live::default());
        let mut result = TaskResult::new();
        let now = Instant::now();
        result.count(&plan, Op::Put, now, Some(Answer::Ok), &live);
        result.count(&plan, Op::Get, now, Some(Answer::NotFound), &live);
        result.count(&plan, Op::Get, now, Some(Answer::Failed("UNAVAILABLE")), &live);
        result.count(&plan, Op::Get, plan.start, Some(Answer::Failed("UNKNOWN")), &live);
        result.count(&plan, Op::Put, now, None, &live);
        assert_eq!((result.put.len(), result.get.len()), (1, 1), "successes in the window are measured");
        assert_eq!(result.not_found, 1);
        assert_eq!(result.errors, BTreeMap::from([("UNAVAILABLE".to_owned(), 1)]));
        assert_eq!(result.warmup_errors, BTreeMap::from([("UNKNOWN".to_owned(), 1)]), "started before the window");
        assert_eq!(result.abandoned_started.len(), 1);
        assert_eq!(result.completed_in_window, 3, "the abandoned call never completed");
        assert_eq!((live.completed.load(Ordering::Relaxed), live.failed.load(Ordering::Relaxed)), (5, 2));
        let mut merged = TaskResult::new();
        merged.merge(result);
        merged.merge(TaskResult::new());
        assert_eq!((merged.put.len(), merged.errors["UNAVAILABLE"], merged.abandoned_started.len()), (1, 1, 1));
    }
}
