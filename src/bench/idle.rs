//! `flotilla bench idle`: the CPU that running processes (the nodes) use,
//! as a percentage of one core. Reads `utime + stime` of each process from
//! `/proc/PID/stat` (optionally of each thread, from `/proc/PID/task/*/stat`)
//! at the start and the end of a window; CPU% of one core = ticks / CLK_TCK /
//! seconds. CLK_TCK comes from `getconf CLK_TCK` (100 if that fails, which is
//! Linux's value on every common platform).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use super::kv_report::{json_number, json_string};
use super::{BenchError, Result};

/// The flags of `flotilla bench idle`.
#[derive(clap::Args, Clone, Debug)]
pub struct IdleArgs {
    /// Process ids, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub pids: Vec<u32>,
    /// The sampling window.
    #[arg(long, default_value_t = 30.0)]
    pub seconds: f64,
    /// Also break each process's CPU down by thread name.
    #[arg(long)]
    pub threads: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Linux's clock tick rate where `getconf` cannot tell.
pub const DEFAULT_CLK_TCK: u64 = 100;

/// `getconf CLK_TCK`, or [`DEFAULT_CLK_TCK`] when that fails.
pub fn clock_ticks_per_second() -> (u64, bool) {
    let output = std::process::Command::new("getconf").arg("CLK_TCK").output();
    match output.ok().filter(|o| o.status.success()).and_then(|o| String::from_utf8(o.stdout).ok()) {
        Some(text) => match text.trim().parse::<u64>() {
            Ok(ticks) if ticks > 0 => (ticks, true),
            _ => (DEFAULT_CLK_TCK, false),
        },
        None => (DEFAULT_CLK_TCK, false),
    }
}

/// The name and `utime + stime` (in clock ticks) from the text of a
/// `/proc/PID/stat` or `/proc/PID/task/TID/stat` file. The name is in
/// parentheses and may itself contain spaces and parentheses, so the
/// fields are counted from the last `)`.
pub fn parse_stat(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // After the name: state is field 3 of the man page (index 0 here),
    // utime field 14 (index 11), stime field 15 (index 12).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

/// CPU time as a percentage of one core over `wall`.
pub fn cpu_percent(ticks: u64, ticks_per_second: u64, wall: Duration) -> f64 {
    let wall = wall.as_secs_f64();
    if wall <= 0.0 || ticks_per_second == 0 {
        return 0.0;
    }
    ticks as f64 / ticks_per_second as f64 / wall * 100.0
}

/// A thread name with its trailing digits and separators dropped, so that
/// e.g. RocksDB's or tokio's numbered workers add up under one name.
pub fn thread_family(name: &str) -> String {
    let trimmed = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-' || c == '_' || c == ':');
    if trimmed.is_empty() {
        name.to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// One sample of a process: its total ticks and each thread's.
#[derive(Clone, Debug, Default)]
pub struct ProcessSample {
    pub name: String,
    pub ticks: u64,
    /// thread id -> (name, ticks)
    pub threads: BTreeMap<u32, (String, u64)>,
}

fn read_to_string(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(BenchError::io(path))
}

pub fn sample_process(pid: u32, threads: bool) -> Result<ProcessSample> {
    let path = format!("/proc/{pid}/stat");
    let text = read_to_string(Path::new(&path))?;
    let (name, ticks) =
        parse_stat(&text).ok_or_else(|| BenchError::Config(format!("{path}: cannot parse {text:?}")))?;
    let mut sample = ProcessSample { name, ticks, threads: BTreeMap::new() };
    if threads {
        let dir = format!("/proc/{pid}/task");
        let entries = std::fs::read_dir(&dir).map_err(BenchError::io(Path::new(&dir)))?;
        for entry in entries.flatten() {
            let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse::<u32>().ok()) else { continue };
            // A thread may exit between the listing and the read.
            if let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) {
                if let Some(parsed) = parse_stat(&text) {
                    sample.threads.insert(tid, parsed);
                }
            }
        }
    }
    Ok(sample)
}

/// CPU of one process over the window.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessCpu {
    pub pid: u32,
    pub name: String,
    pub percent: f64,
    /// By thread family, largest first (only with --threads).
    pub threads: Vec<(String, usize, f64)>,
}

/// The CPU between two samples of one process.
pub fn process_cpu(
    pid: u32,
    before: &ProcessSample,
    after: &ProcessSample,
    ticks_per_second: u64,
    wall: Duration,
) -> ProcessCpu {
    let mut families: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    for (tid, (name, ticks)) in &after.threads {
        // A thread born during the window started at zero.
        let start = before.threads.get(tid).map_or(0, |(_, ticks)| *ticks);
        let family = families.entry(thread_family(name)).or_default();
        family.0 += 1;
        family.1 += ticks.saturating_sub(start);
    }
    let mut threads: Vec<(String, usize, f64)> = families
        .into_iter()
        .map(|(name, (count, ticks))| (name, count, cpu_percent(ticks, ticks_per_second, wall)))
        .collect();
    threads.sort_by(|a, b| b.2.total_cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    ProcessCpu {
        pid,
        name: after.name.clone(),
        percent: cpu_percent(after.ticks.saturating_sub(before.ticks), ticks_per_second, wall),
        threads,
    }
}

/// `flotilla bench idle`: sample, wait, sample, print.
pub fn run_idle_cli(args: &IdleArgs) -> Result<()> {
    let window = Duration::try_from_secs_f64(args.seconds)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| BenchError::Config(format!("--seconds {}: must be a positive number", args.seconds)))?;
    let (ticks_per_second, from_getconf) = clock_ticks_per_second();
    let before: Vec<ProcessSample> =
        args.pids.iter().map(|&pid| sample_process(pid, args.threads)).collect::<Result<_>>()?;
    let started = Instant::now();
    eprintln!(
        "sampling {} process(es) for {:.1} s (CLK_TCK {ticks_per_second}{}) ...",
        args.pids.len(),
        window.as_secs_f64(),
        if from_getconf { "" } else { ", assumed: getconf failed" }
    );
    std::thread::sleep(window);
    let after: Vec<ProcessSample> =
        args.pids.iter().map(|&pid| sample_process(pid, args.threads)).collect::<Result<_>>()?;
    let wall = started.elapsed();
    let results: Vec<ProcessCpu> = args
        .pids
        .iter()
        .zip(before.iter().zip(&after))
        .map(|(&pid, (b, a))| process_cpu(pid, b, a, ticks_per_second, wall))
        .collect();
    if args.json {
        let items: Vec<String> = results
            .iter()
            .map(|r| {
                let threads: Vec<String> = r
                    .threads
                    .iter()
                    .map(|(name, count, percent)| {
                        format!(
                            "{{\"name\":{},\"threads\":{count},\"percent\":{}}}",
                            json_string(name),
                            json_number(*percent)
                        )
                    })
                    .collect();
                format!(
                    "{{\"pid\":{},\"name\":{},\"percent_of_one_core\":{},\"threads\":[{}]}}",
                    r.pid,
                    json_string(&r.name),
                    json_number(r.percent),
                    threads.join(",")
                )
            })
            .collect();
        println!(
            "{{\"seconds\":{},\"clk_tck\":{ticks_per_second},\"processes\":[{}]}}",
            json_number(wall.as_secs_f64()),
            items.join(",")
        );
        return Ok(());
    }
    println!(
        "CPU over {:.1} s, % of one core (CLK_TCK {ticks_per_second}, resolution {:.3}%):",
        wall.as_secs_f64(),
        cpu_percent(1, ticks_per_second, wall)
    );
    for r in &results {
        println!("{:>8} {:<16} {:>7.2}%", r.pid, r.name, r.percent);
        for (name, count, percent) in &r.threads {
            if *percent > 0.0 {
                println!("{:>8}   {:<22} {:>7.2}%  ({count} thread(s))", "", name, percent);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct IdleCli {
        #[command(flatten)]
        args: IdleArgs,
    }

    #[test]
    fn idle_flags_parse() {
        let cli = IdleCli::try_parse_from(["idle", "--pids", "1,22,333", "--seconds", "30"]).unwrap();
        assert_eq!(cli.args.pids, vec![1, 22, 333]);
        assert_eq!(cli.args.seconds, 30.0);
        assert!(!cli.args.threads);
        assert!(IdleCli::try_parse_from(["idle"]).is_err());
        assert!(IdleCli::try_parse_from(["idle", "--pids", "x"]).is_err());
    }

    #[test]
    fn stat_lines_parse_even_with_odd_names() {
        let line = "4242 (flotilla) S 1 4242 4242 0 -1 4194560 1234 0 0 0 150 37 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_stat(line), Some(("flotilla".into(), 187)));
        let odd = "77 (a) b (c)) R 1 77 77 0 -1 0 0 0 0 0 5 6 0 0 20 0 1 0 1 0 0";
        assert_eq!(parse_stat(odd), Some(("a) b (c)".into(), 11)));
        assert_eq!(parse_stat("77 (x) R 1 2"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn cpu_arithmetic() {
        // 30 ticks at 100 per second over 30 s: 0.3 s of CPU = 1% of a core.
        assert!((cpu_percent(30, 100, Duration::from_secs(30)) - 1.0).abs() < 1e-9);
        // 200 ticks in 1 s: two cores busy.
        assert!((cpu_percent(200, 100, Duration::from_secs(1)) - 200.0).abs() < 1e-9);
        assert_eq!(cpu_percent(0, 100, Duration::from_secs(30)), 0.0);
        assert_eq!(cpu_percent(5, 100, Duration::ZERO), 0.0);
        assert_eq!(cpu_percent(5, 0, Duration::from_secs(1)), 0.0);
    }

    #[test]
    fn thread_families_and_process_cpu() {
        assert_eq!(thread_family("tokio-runtime-w"), "tokio-runtime-w");
        assert_eq!(thread_family("rocksdb:low12"), "rocksdb:low");
        assert_eq!(thread_family("flotilla-node-3"), "flotilla-node");
        assert_eq!(thread_family("42"), "42");
        let before = ProcessSample {
            name: "flotilla".into(),
            ticks: 100,
            threads: BTreeMap::from([(1, ("flotilla".into(), 50)), (2, ("rocksdb:low0".into(), 40))]),
        };
        let after = ProcessSample {
            name: "flotilla".into(),
            ticks: 160,
            threads: BTreeMap::from([
                (1, ("flotilla".into(), 60)),
                (2, ("rocksdb:low0".into(), 70)),
                (3, ("rocksdb:low1".into(), 20)),
            ]),
        };
        let cpu = process_cpu(9, &before, &after, 100, Duration::from_secs(10));
        assert!((cpu.percent - 6.0).abs() < 1e-9);
        assert_eq!(cpu.threads.len(), 2);
        assert_eq!(cpu.threads[0].0, "rocksdb:low");
        assert_eq!(cpu.threads[0].1, 2);
        assert!((cpu.threads[0].2 - 5.0).abs() < 1e-9);
        assert!((cpu.threads[1].2 - 1.0).abs() < 1e-9);
    }
}
