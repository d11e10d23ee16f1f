//! `flotilla bench` (also spelt `flotilla bench kv`): load a running
//! cluster through its client API and report what a user gets: throughput,
//! latency percentiles and failed calls by gRPC status code.
//!
//! This file holds the flags and their validation; the load itself is in
//! [`super::kv_load`], where the calls go (a Flotilla cluster through the
//! client library, or etcd through its own gRPC KV API) in
//! [`super::kv_target`], and the report in [`super::kv_report`].
//!
//! `concurrency` tokio tasks each keep one request in flight (a closed
//! loop): a put of a `value_size`-byte value, a linearizable get, or, for
//! `mixed`, a get with probability `read_ratio` and otherwise a put, each
//! to a key drawn uniformly from `keys` keys. For `get` and `mixed` every
//! key is written first (unmeasured), so every get finds its key. After
//! `warmup` the run measures for `duration`: every call that starts in that
//! window is measured, waited for up to `drain` past its end, and its
//! latency is the whole client call, retries included (so a call that
//! stalls shows in the percentiles, not only as a dip in throughput);
//! ops/s is the successful measured calls per second of window.

use std::time::Duration;

use super::kv_load::run;
use super::kv_report::{format_json, format_report};
use super::{BenchError, Result};

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

/// What the endpoints are.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetKind {
    /// Flotilla nodes, through the client library (src/client).
    Flotilla,
    /// etcd v3 members, through etcd's own gRPC KV API (Put, and Range
    /// with serializable=false: linearizable, like Flotilla's gets), the
    /// tasks spread round-robin over the endpoints.
    Etcd,
}

impl TargetKind {
    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Flotilla => "flotilla",
            TargetKind::Etcd => "etcd",
        }
    }
}

/// The flags of `flotilla bench` and `flotilla bench kv`.
#[derive(clap::Args, Clone, Debug)]
pub struct KvBenchArgs {
    /// Node addresses (host:port), comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub endpoints: Vec<String>,
    /// What the endpoints are.
    #[arg(long, value_enum, default_value_t = TargetKind::Flotilla)]
    pub target: TargetKind,
    #[arg(long, value_enum, default_value_t = Workload::Put)]
    pub workload: Workload,
    /// Requests in flight: one tokio task each, in a closed loop.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Measured time, e.g. 10s, 500ms, 2m, or seconds (2.5).
    #[arg(long, visible_alias = "seconds", default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Unmeasured load before the measured window (e.g. 2s, 0).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
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
    /// How long past the window a call may still run before the run stops
    /// waiting for it and counts it as abandoned. The default is the
    /// client's total timeout (30 s) plus 5 s, so every call normally ends
    /// with an answer or the client's own error.
    #[arg(long, default_value = "35s", value_parser = parse_duration)]
    pub drain: Duration,
    /// Print exactly one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// A validated run.
#[derive(Clone, Debug)]
pub struct KvBenchConfig {
    pub endpoints: Vec<String>,
    pub target: TargetKind,
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

/// A duration flag: a number with a unit (`10s`, `500ms`, `2m`) or plain
/// seconds (`10`, `0.5`, as `bench kv --seconds` always took).
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let trimmed = text.trim();
    let (number, unit_seconds) = if let Some(number) = trimmed.strip_suffix("ms") {
        (number, 1e-3)
    } else if let Some(number) = trimmed.strip_suffix('s') {
        (number, 1.0)
    } else if let Some(number) = trimmed.strip_suffix('m') {
        (number, 60.0)
    } else {
        (trimmed, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (write e.g. 10s, 500ms, 2m, or seconds such as 2.5)"))?;
    Duration::try_from_secs_f64(value * unit_seconds)
        .map_err(|_| format!("{text:?} is not a duration: it must be a finite time of zero or more"))
}

fn positive(flag: &str, value: u64) -> Result<()> {
    if value == 0 {
        return Err(BenchError::Config(format!("{flag} 0: must be at least 1")));
    }
    Ok(())
}

impl KvBenchArgs {
    pub fn config(&self) -> Result<KvBenchConfig> {
        let endpoints: Vec<String> =
            self.endpoints.iter().map(|e| e.trim().to_owned()).filter(|e| !e.is_empty()).collect();
        if endpoints.is_empty() {
            return Err(BenchError::Config("--endpoints: no address given (host:port,...)".into()));
        }
        positive("--concurrency", self.concurrency as u64)?;
        positive("--keys", self.keys)?;
        positive("--connections", self.connections as u64)?;
        if self.duration.is_zero() {
            return Err(BenchError::Config("--duration 0: the measured window must be longer than zero".into()));
        }
        if !(0.0..=1.0).contains(&self.read_ratio) {
            return Err(BenchError::Config(format!("--read-ratio {}: must be between 0 and 1", self.read_ratio)));
        }
        Ok(KvBenchConfig {
            endpoints,
            target: self.target,
            workload: self.workload,
            concurrency: self.concurrency,
            duration: self.duration,
            warmup: self.warmup,
            value_size: self.value_size,
            keys: self.keys,
            read_ratio: self.read_ratio,
            connections: self.connections.min(self.concurrency),
            preload: self.workload != Workload::Put && !self.no_preload,
            key_prefix: self.key_prefix.clone(),
            drain: self.drain,
        })
    }
}

/// `flotilla bench`: validate, run (progress lines on stderr), print the
/// table or the JSON object on stdout.
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

    #[derive(Parser)]
    struct KvCli {
        #[command(flatten)]
        args: KvBenchArgs,
    }

    fn kv(args: &[&str]) -> std::result::Result<KvBenchArgs, clap::Error> {
        KvCli::try_parse_from(std::iter::once("kv").chain(args.iter().copied())).map(|cli| cli.args)
    }

    fn refusal(args: &[&str]) -> String {
        let mut all = vec!["--endpoints=a:1"];
        all.extend_from_slice(args);
        match kv(&all) {
            Err(error) => error.to_string(),
            Ok(parsed) => parsed.config().expect_err("must be refused").to_string(),
        }
    }

    #[test]
    fn durations_take_units_or_plain_seconds() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration(" 0 "), Ok(Duration::ZERO));
        for bad in ["", "s", "ten", "10h", "-1s", "NaN", "inf"] {
            let error = parse_duration(bad).expect_err(bad);
            assert!(error.contains("duration"), "{bad}: {error}");
        }
    }

    #[test]
    fn flags_have_the_documented_defaults() {
        let args = kv(&["--endpoints", "127.0.0.1:1,127.0.0.1:2"]).unwrap();
        assert_eq!(args.endpoints, vec!["127.0.0.1:1", "127.0.0.1:2"]);
        let config = args.config().unwrap();
        assert_eq!((config.target, config.workload), (TargetKind::Flotilla, Workload::Put));
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
            "--target",
            "etcd",
            "--workload",
            "mixed",
            "--concurrency",
            "256",
            "--duration",
            "500ms",
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
        assert_eq!((config.target, config.workload), (TargetKind::Etcd, Workload::Mixed));
        assert_eq!((config.concurrency, config.value_size, config.keys, config.connections), (256, 16, 10, 4));
        assert_eq!((config.duration, config.warmup), (Duration::from_millis(500), Duration::ZERO));
        assert!(config.preload && args.json);
        // `bench kv`'s older spelling of the window still works.
        let old = kv(&["--endpoints=a:1", "--seconds", "0.1"]).unwrap().config().unwrap();
        assert_eq!(old.duration, Duration::from_millis(100));
        assert!(!kv(&["--endpoints=a:1", "--workload", "get", "--no-preload"]).unwrap().config().unwrap().preload);
        assert!(kv(&["--endpoints=a:1", "--workload", "get"]).unwrap().config().unwrap().preload);
        // More clients than tasks would sit unused.
        let config = kv(&["--endpoints=a:1", "--concurrency", "2", "--connections", "8"]).unwrap().config().unwrap();
        assert_eq!(config.connections, 2);
    }

    #[test]
    fn bad_flags_are_refused_with_a_message_naming_the_flag() {
        assert!(kv(&[]).unwrap_err().to_string().contains("--endpoints"), "--endpoints is required");
        assert!(refusal(&["--workload", "scan"]).contains("--workload"));
        assert!(refusal(&["--target", "redis"]).contains("--target"));
        for (flag, value) in [
            ("--concurrency", "0"),
            ("--concurrency", "many"),
            ("--keys", "0"),
            ("--connections", "0"),
            ("--duration", "0s"),
            ("--duration", "ten"),
            ("--warmup", "soon"),
            ("--read-ratio", "1.5"),
            ("--value-size", "lots"),
        ] {
            let message = refusal(&[flag, value]);
            assert!(message.contains(flag), "{flag} {value}: {message}");
        }
        let message = kv(&["--endpoints", " , "]).unwrap().config().unwrap_err().to_string();
        assert!(message.contains("--endpoints"), "{message}");
    }
}
