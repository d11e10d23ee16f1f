//! The report of `flotilla bench kv`: the table for people and one JSON
//! object for scripts (written by hand: no serde in this crate).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::kv::{KvBenchReport, Workload};

fn ms(micros: u32) -> f64 {
    f64::from(micros) / 1000.0
}

fn format_counts(counts: &BTreeMap<String, u64>) -> String {
    if counts.is_empty() {
        return "none".into();
    }
    counts.iter().map(|(kind, count)| format!("{kind}={count}")).collect::<Vec<_>>().join(" ")
}

pub fn format_report(report: &KvBenchReport) -> String {
    let c = &report.config;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "kv bench: {}{}, {} in flight over {} client(s), {}-byte values, {} keys, {:.1} s measured after {:.1} s warm-up, endpoints {}",
        c.workload.name(),
        if c.workload == Workload::Mixed { format!(" ({:.0}% gets)", c.read_ratio * 100.0) } else { String::new() },
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
    let _ = writeln!(
        out,
        "{:>4} {:>9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6}",
        "op", "count", "ops/s", "mean ms", "p50 ms", "p99 ms", "p999 ms", "max ms", ">=1s"
    );
    for op in &report.ops {
        let _ = writeln!(
            out,
            "{:>4} {:>9} {:>10.0} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>6}",
            op.op.name(),
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
    if report.ops.len() > 1 {
        let _ = writeln!(out, "{:>4} {:>9} {:>10.0}", "all", report.successes(), report.per_second());
    }
    if !report.errors.is_empty() {
        let _ = writeln!(out, "calls started in the window, failed or not: {:.0}/s", report.completed_per_second);
    }
    if let Some(percent) = report.own_cpu_percent {
        let _ = writeln!(out, "load tool CPU in the window: {percent:.0}% of one core");
    }
    let _ = writeln!(out, "errors in the window: {}", format_counts(&report.errors));
    let _ = writeln!(out, "errors in calls started during the warm-up: {}", format_counts(&report.warmup_errors));
    if report.not_found > 0 {
        let _ = writeln!(out, "gets that found no value: {}", report.not_found);
    }
    if report.abandoned > 0 {
        let _ = write!(
            out,
            "calls still unanswered {:.1} s after the window (abandoned): {}",
            c.drain.as_secs_f64(),
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

pub fn format_json(report: &KvBenchReport) -> String {
    let c = &report.config;
    let ops: Vec<String> = report
        .ops
        .iter()
        .map(|op| {
            format!(
                "{}:{{\"count\":{},\"ops_per_sec\":{},\"mean_us\":{},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},\"slow_1s\":{}}}",
                json_string(op.op.name()),
                op.count,
                json_number(op.per_second),
                json_number(op.mean_us),
                op.p50_us,
                op.p99_us,
                op.p999_us,
                op.max_us,
                op.slow
            )
        })
        .collect();
    let preload = match report.preload {
        Some((keys, failed, took)) => {
            format!("{{\"keys\":{keys},\"failed\":{failed},\"seconds\":{}}}", json_number(took.as_secs_f64()))
        }
        None => "null".into(),
    };
    let endpoints: Vec<String> = c.endpoints.iter().map(|e| json_string(e)).collect();
    format!(
        "{{\"workload\":{},\"concurrency\":{},\"connections\":{},\"value_size\":{},\"keys\":{},\"read_ratio\":{},\
         \"seconds\":{},\"warmup\":{},\"endpoints\":[{}],\"ops_per_sec\":{},\"ops\":{{{}}},\"errors\":{},\
         \"warmup_errors\":{},\"not_found\":{},\"abandoned\":{},\"preload\":{},\"load_tool_cpu_percent\":{},\
         \"stalls_by_start_second\":{}}}",
        json_string(c.workload.name()),
        c.concurrency,
        c.connections,
        c.value_size,
        c.keys,
        json_number(c.read_ratio),
        json_number(report.window.as_secs_f64()),
        json_number(c.warmup.as_secs_f64()),
        endpoints.join(","),
        json_number(report.per_second()),
        ops.join(","),
        json_counts(&report.errors),
        json_counts(&report.warmup_errors),
        report.not_found,
        report.abandoned,
        preload,
        report.own_cpu_percent.map_or_else(|| "null".to_owned(), json_number),
        json_counts(&report.stalls_by_start_second.iter().map(|(s, n)| (s.to_string(), *n)).collect())
    )
}
