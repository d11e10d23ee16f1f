//! What `flotilla bench` measured, and its report: the table for people
//! and one JSON object for scripts (written by hand: no serde here).
//!
//! Latencies are recorded in microseconds in hdrhistograms with 3
//! significant figures (so a percentile is within 0.1% of the exact
//! sample), one per task and kind of operation, merged at the end.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::kv::{KvBenchConfig, Workload};

/// A call this slow (1 s) is counted as a stall.
pub const SLOW_MICROS: u64 = 1_000_000;

/// Latencies in microseconds.
pub type Latencies = Histogram<u64>;

/// An empty latency histogram that grows to whatever it records.
pub fn new_latencies() -> Latencies {
    // Cannot fail: 3 significant figures is within hdrhistogram's 0..=5.
    Histogram::new(3).expect("3 significant figures is a valid precision")
}

/// Longer latencies are recorded as this (an hour), which bounds how far
/// a histogram grows (to under 200 kB; a few tens of kB for calls under
/// a second).
const MAX_MICROS: u64 = 3_600_000_000;

/// Records `micros` (at most an hour).
pub fn record(latencies: &mut Latencies, micros: u64) {
    let micros = micros.min(MAX_MICROS);
    if latencies.record(micros).is_err() {
        // Only if growing failed: count it at the largest value held.
        latencies.saturating_record(micros);
    }
}

/// Latency figures of one kind of operation, or of all, in microseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct OpStats {
    /// `get`, `put` or `all`.
    pub name: &'static str,
    /// Successful operations started in the measured window.
    pub count: u64,
    pub per_second: f64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// Calls that took a second or more (stalls: a healthy call takes
    /// milliseconds).
    pub slow: u64,
}

impl OpStats {
    /// The figures of `latencies`, measured over `window`.
    pub fn from_latencies(name: &'static str, latencies: &Latencies, window: Duration) -> OpStats {
        let count = latencies.len();
        let at = |quantile: f64| if count == 0 { 0 } else { latencies.value_at_quantile(quantile) };
        OpStats {
            name,
            count,
            per_second: count as f64 / window.as_secs_f64().max(f64::MIN_POSITIVE),
            mean_us: latencies.mean(),
            p50_us: at(0.5),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: if count == 0 { 0 } else { latencies.max() },
            slow: latencies.count_between(SLOW_MICROS, u64::MAX),
        }
    }
}

/// What a run measured.
#[derive(Clone, Debug)]
pub struct KvBenchReport {
    pub config: KvBenchConfig,
    /// The measured window.
    pub window: Duration,
    /// Per operation kind the workload has, gets first.
    pub ops: Vec<OpStats>,
    /// Every successful call in the window, whatever its kind.
    pub all: OpStats,
    /// Failed calls started in the window, by gRPC status code name.
    pub errors: BTreeMap<String, u64>,
    /// Failed calls started during the warm-up, by gRPC status code name.
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

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

fn format_counts(counts: &BTreeMap<String, u64>) -> String {
    if counts.is_empty() {
        return "none".into();
    }
    counts.iter().map(|(kind, count)| format!("{kind}={count}")).collect::<Vec<_>>().join(" ")
}

fn format_header(report: &KvBenchReport) -> String {
    let c = &report.config;
    let mix =
        if c.workload == Workload::Mixed { format!(" ({:.0}% gets)", c.read_ratio * 100.0) } else { String::new() };
    let mut out = format!(
        "bench: {} {}{mix}, {} in flight over {} connection(s), {}-byte values, {} keys, {:.1} s measured after {:.1} s warm-up, endpoints {}\n",
        c.target.name(),
        c.workload.name(),
        c.concurrency,
        c.connections,
        c.value_size,
        c.keys,
        report.window.as_secs_f64(),
        c.warmup.as_secs_f64(),
        c.endpoints.join(",")
    );
    if let Some((keys, failed, took)) = report.preload {
        let _ = writeln!(out, "preload: {keys} keys written in {:.1} s, {failed} failed", took.as_secs_f64());
    }
    let errors: u64 = report.errors.values().sum();
    let _ = writeln!(
        out,
        "throughput: {:.0} ops/s ({} successful calls, {errors} failed, in {:.1} s)",
        report.all.per_second,
        report.all.count,
        report.window.as_secs_f64()
    );
    out
}

fn format_row(out: &mut String, op: &OpStats) {
    let _ = writeln!(
        out,
        "{:>4} {:>9} {:>10.0} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>6}",
        op.name,
        op.count,
        op.per_second,
        op.mean_us / 1000.0,
        ms(op.p50_us),
        ms(op.p99_us),
        ms(op.p999_us),
        ms(op.max_us),
        op.slow
    );
}

fn format_stalls(out: &mut String, report: &KvBenchReport) {
    if report.abandoned > 0 {
        let _ = write!(
            out,
            "calls still unanswered {:.1} s after the window (abandoned): {}",
            report.config.drain.as_secs_f64(),
            report.abandoned
        );
        if let Some((first, last)) = report.abandoned_started {
            let _ = write!(
                out,
                ", started {:.1} to {:.1} s after the warm-up began",
                first.as_secs_f64(),
                last.as_secs_f64()
            );
        }
        let _ = writeln!(out);
    }
    if !report.stalls_by_start_second.is_empty() {
        let total: u64 = report.stalls_by_start_second.values().sum();
        let seconds: Vec<String> =
            report.stalls_by_start_second.iter().map(|(second, count)| format!("{second} s: {count}")).collect();
        let _ = writeln!(
            out,
            "calls that took 1 s or more (warm-up included): {total}; by the second they started in after the warm-up began: {}",
            seconds.join(", ")
        );
    }
}

pub fn format_report(report: &KvBenchReport) -> String {
    let mut out = format_header(report);
    let _ = writeln!(
        out,
        "{:>4} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6}",
        "op", "count", "ops/s", "mean ms", "p50 ms", "p99 ms", "p999 ms", "max ms", ">=1s"
    );
    for op in &report.ops {
        format_row(&mut out, op);
    }
    if report.ops.len() > 1 {
        format_row(&mut out, &report.all);
    }
    if !report.errors.is_empty() {
        let _ = writeln!(out, "calls started in the window, failed or not: {:.0}/s", report.completed_per_second);
    }
    if let Some(percent) = report.own_cpu_percent {
        let _ = writeln!(out, "load tool CPU in the window: {percent:.0}% of one core");
    }
    let _ = writeln!(out, "errors in the window, by gRPC status code: {}", format_counts(&report.errors));
    let _ = writeln!(out, "errors in calls started during the warm-up: {}", format_counts(&report.warmup_errors));
    if report.not_found > 0 {
        let _ = writeln!(out, "gets that found no value: {}", report.not_found);
    }
    format_stalls(&mut out, report);
    out
}

/// A JSON string literal.
pub(super) fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_counts(counts: &BTreeMap<String, u64>) -> String {
    let fields: Vec<String> = counts.iter().map(|(kind, count)| format!("{}:{count}", json_string(kind))).collect();
    format!("{{{}}}", fields.join(","))
}

/// A finite number as JSON (NaN and infinities become null).
pub(super) fn json_number(value: f64) -> String {
    if value.is_finite() {
        format!("{value:.3}")
    } else {
        "null".into()
    }
}

/// The latency fields of `op`, without braces.
fn json_latency_fields(op: &OpStats) -> String {
    format!(
        "\"mean_us\":{},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},\"slow_1s\":{}",
        json_number(op.mean_us),
        op.p50_us,
        op.p99_us,
        op.p999_us,
        op.max_us,
        op.slow
    )
}

fn json_op(op: &OpStats) -> String {
    format!("{{\"count\":{},\"ops_per_sec\":{},{}}}", op.count, json_number(op.per_second), json_latency_fields(op))
}

/// One JSON object: the run's settings, then throughput and latency of
/// all successful calls at the top level, per operation under `ops`.
pub fn format_json(report: &KvBenchReport) -> String {
    let c = &report.config;
    let ops: Vec<String> = report.ops.iter().map(|op| format!("{}:{}", json_string(op.name), json_op(op))).collect();
    let preload = match report.preload {
        Some((keys, failed, took)) => {
            format!("{{\"keys\":{keys},\"failed\":{failed},\"seconds\":{}}}", json_number(took.as_secs_f64()))
        }
        None => "null".into(),
    };
    let endpoints: Vec<String> = c.endpoints.iter().map(|e| json_string(e)).collect();
    format!(
        "{{\"target\":{},\"workload\":{},\"concurrency\":{},\"connections\":{},\"value_size\":{},\"keys\":{},\
         \"read_ratio\":{},\"seconds\":{},\"warmup\":{},\"endpoints\":[{}],\"count\":{},\"ops_per_sec\":{},{},\
         \"ops\":{{{}}},\"errors\":{},\"errors_total\":{},\"warmup_errors\":{},\"not_found\":{},\"abandoned\":{},\
         \"preload\":{},\"load_tool_cpu_percent\":{},\"stalls_by_start_second\":{}}}",
        json_string(c.target.name()),
        json_string(c.workload.name()),
        c.concurrency,
        c.connections,
        c.value_size,
        c.keys,
        json_number(c.read_ratio),
        json_number(report.window.as_secs_f64()),
        json_number(c.warmup.as_secs_f64()),
        endpoints.join(","),
        report.all.count,
        json_number(report.all.per_second),
        json_latency_fields(&report.all),
        ops.join(","),
        json_counts(&report.errors),
        report.errors.values().sum::<u64>(),
        json_counts(&report.warmup_errors),
        report.not_found,
        report.abandoned,
        preload,
        report.own_cpu_percent.map_or_else(|| "null".to_owned(), json_number),
        json_counts(&report.stalls_by_start_second.iter().map(|(s, n)| (s.to_string(), *n)).collect())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::kv::{KvBenchConfig, TargetKind};

    fn latencies(samples: impl IntoIterator<Item = u64>) -> Latencies {
        let mut histogram = new_latencies();
        for sample in samples {
            record(&mut histogram, sample);
        }
        histogram
    }

    /// Within hdrhistogram's 3 significant figures of `exact`.
    fn near(value: u64, exact: u64) -> bool {
        value.abs_diff(exact) as f64 <= exact as f64 * 0.001 + 1.0
    }

    #[test]
    fn stats_come_from_the_histogram() {
        let stats = OpStats::from_latencies("put", &latencies([400, 100, 300, 200]), Duration::from_secs(2));
        assert_eq!(stats.count, 4);
        assert_eq!(stats.per_second, 2.0);
        assert_eq!(stats.mean_us, 250.0);
        // Small values are exact.
        assert_eq!((stats.p50_us, stats.p99_us, stats.p999_us, stats.max_us), (200, 400, 400, 400));
        assert_eq!(stats.slow, 0);
        let thousand = OpStats::from_latencies("get", &latencies(1..=100_000), Duration::from_secs(1));
        assert!(near(thousand.p50_us, 50_000), "{thousand:?}");
        assert!(near(thousand.p99_us, 99_000), "{thousand:?}");
        assert!(near(thousand.p999_us, 99_900), "{thousand:?}");
        assert!(near(thousand.max_us, 100_000), "{thousand:?}");
        let stalled = latencies([999_000, 1_000_000, 10_000_000, u64::MAX]);
        let stalled = OpStats::from_latencies("get", &stalled, Duration::from_secs(1));
        assert_eq!((stalled.count, stalled.slow), (4, 3), "a huge value is clamped, not lost");
        assert!(near(stalled.max_us, MAX_MICROS), "{stalled:?}");
        let empty = OpStats::from_latencies("get", &new_latencies(), Duration::from_secs(1));
        assert_eq!((empty.count, empty.p50_us, empty.max_us, empty.mean_us), (0, 0, 0, 0.0));
    }

    fn sample_report() -> KvBenchReport {
        let config = KvBenchConfig {
            endpoints: vec!["h:1".into()],
            target: TargetKind::Flotilla,
            workload: Workload::Mixed,
            concurrency: 64,
            duration: Duration::from_secs(1),
            warmup: Duration::from_secs(2),
            value_size: 128,
            keys: 10,
            read_ratio: 0.9,
            connections: 1,
            preload: true,
            key_prefix: "bench/".into(),
            drain: Duration::from_secs(35),
        };
        let window = Duration::from_secs(1);
        KvBenchReport {
            config,
            window,
            ops: vec![
                OpStats::from_latencies("get", &latencies([100, 200]), window),
                OpStats::from_latencies("put", &latencies([300]), window),
            ],
            all: OpStats::from_latencies("all", &latencies([100, 200, 300]), window),
            errors: BTreeMap::from([("UNAVAILABLE".into(), 2)]),
            warmup_errors: BTreeMap::new(),
            not_found: 0,
            abandoned: 0,
            abandoned_started: None,
            stalls_by_start_second: BTreeMap::from([(0, 3), (4, 1)]),
            preload: Some((10, 0, Duration::from_millis(1500))),
            completed_per_second: 5.0,
            own_cpu_percent: Some(42.0),
        }
    }

    #[test]
    fn json_is_one_well_formed_object() {
        assert_eq!(json_string("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
        assert_eq!(json_number(f64::NAN), "null");
        let json = format_json(&sample_report());
        assert!(json.starts_with("{\"target\":\"flotilla\",\"workload\":\"mixed\""), "{json}");
        assert!(json.contains("\"ops_per_sec\":3.000,\"mean_us\":200.000,\"p50_us\":200,\"p99_us\":300"), "{json}");
        assert!(json.contains("\"p999_us\":300,\"max_us\":300"), "{json}");
        assert!(json.contains("\"get\":{\"count\":2,"), "{json}");
        assert!(json.contains("\"errors\":{\"UNAVAILABLE\":2},\"errors_total\":2"), "{json}");
        assert!(json.contains("\"warmup_errors\":{}"), "{json}");
        assert!(json.contains("\"endpoints\":[\"h:1\"]"), "{json}");
        assert!(json.contains("\"stalls_by_start_second\":{\"0\":3,\"4\":1}"), "{json}");
        assert!(!json.contains('\n'), "one line");
        // Balanced braces and brackets (no string here contains any).
        assert_eq!(json.matches('{').count(), json.matches('}').count());
        assert_eq!(json.matches('[').count(), json.matches(']').count());
    }

    #[test]
    fn the_table_has_throughput_percentiles_and_error_codes() {
        let text = format_report(&sample_report());
        assert!(text.starts_with("bench: flotilla mixed (90% gets), 64 in flight"), "{text}");
        assert!(text.contains("throughput: 3 ops/s (3 successful calls, 2 failed, in 1.0 s)"), "{text}");
        assert!(text.contains("p50 ms    p99 ms   p999 ms    max ms"), "{text}");
        assert!(text.contains(" all         3          3     0.200     0.200     0.300"), "{text}");
        assert!(text.contains("errors in the window, by gRPC status code: UNAVAILABLE=2"), "{text}");
        assert!(
            text.contains(
                "(warm-up included): 4; by the second they started in after the warm-up began: 0 s: 3, 4 s: 1"
            ),
            "{text}"
        );
    }
}
