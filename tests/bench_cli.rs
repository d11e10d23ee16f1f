//! `flotilla bench` through the real binary: against a local 3-node cluster
//! (`flotilla demo` in a temp dir) for 2 s with the put and mixed
//! workloads, the table and the `--json` object; bad flag values; and the
//! same against 3 etcd members on loopback (etcd from the Debian package
//! `etcd-server`, which scripts/setup.sh installs).
//! Every process started is killed by its guard, even when a test fails,
//! and every command is bounded in time.

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/process.rs"]
mod process;
use process::{free_port, KillOnDrop as Guard};

const BIN: &str = env!("CARGO_BIN_EXE_flotilla");

/// What a finished command printed.
struct Ran {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `flotilla ARGS` to the end, or kills it after `limit`. Output goes
/// through files, so a chatty command cannot block on a full pipe.
fn flotilla(dir: &Path, args: &[&str], limit: Duration) -> Ran {
    let (out, err) = (dir.join("cmd.out"), dir.join("cmd.err"));
    let child = Command::new(BIN)
        .args(args)
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let mut guard = Guard(child);
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = guard.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "flotilla {args:?} still running after {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let read = |path| std::fs::read_to_string(path).unwrap();
    Ran { ok: status.success(), stdout: read(&out), stderr: read(&err) }
}

/// Starts `flotilla demo` (3 nodes, 8 shards) in `dir`; returns it and its
/// client endpoints once every shard has a leader.
fn start_demo(dir: &Path) -> (Guard, String) {
    let out = dir.join("demo.out");
    let child = Command::new(BIN)
        .args(["demo", "--shards", "8", "--dir"])
        .arg(dir.join("demo"))
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(dir.join("demo.err")).unwrap())
        .spawn()
        .unwrap();
    let guard = Guard(child);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if let Some(line) = text.lines().find_map(|line| line.strip_prefix("endpoints: ")) {
            return (guard, line.trim().to_owned());
        }
        let log = std::fs::read_to_string(dir.join("demo.err")).unwrap_or_default();
        assert!(Instant::now() < deadline, "the demo printed no endpoints within 120 s: {log}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The figure after `label` in the table, e.g. "throughput: 1234 ops/s".
fn figure_after(text: &str, label: &str) -> f64 {
    let rest = text.split(label).nth(1).unwrap_or_else(|| panic!("no {label:?} in:\n{text}"));
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

/// Checks the table of a run: throughput above zero, the percentile
/// columns, and one row per operation with a latency in each.
fn check_table(ran: &Ran, ops: &[&str]) {
    assert!(ran.ok, "bench failed:\n{}\n{}", ran.stdout, ran.stderr);
    let text = &ran.stdout;
    assert!(figure_after(text, "throughput: ") > 0.0, "{text}");
    for column in ["p50 ms", "p99 ms", "p999 ms", "max ms"] {
        assert!(text.contains(column), "no {column} column:\n{text}");
    }
    for op in ops {
        let row = text.lines().find(|line| line.trim_start().starts_with(&format!("{op} "))).expect(op);
        let p99: f64 = row.split_whitespace().nth(5).unwrap().parse().unwrap();
        assert!(p99 > 0.0, "{row}");
    }
    assert!(text.contains("errors in the window, by gRPC status code:"), "{text}");
    assert!(ran.stderr.contains("ops/s now"), "no progress line on stderr:\n{}", ran.stderr);
}

/// Checks that stdout is exactly one JSON object with the figures.
fn check_json(ran: &Ran, ops: &[&str]) -> serde_json::Value {
    assert!(ran.ok, "bench --json failed:\n{}\n{}", ran.stdout, ran.stderr);
    assert_eq!(ran.stdout.trim().lines().count(), 1, "one line:\n{}", ran.stdout);
    let json: serde_json::Value = serde_json::from_str(ran.stdout.trim()).expect("parseable JSON");
    assert!(json.is_object(), "{json}");
    assert!(json["ops_per_sec"].as_f64().unwrap() > 0.0, "{json}");
    for field in ["p50_us", "p99_us", "p999_us", "max_us"] {
        assert!(json[field].as_u64().unwrap() > 0, "{field}: {json}");
    }
    assert!(json["p50_us"].as_u64() <= json["p99_us"].as_u64() && json["p99_us"].as_u64() <= json["max_us"].as_u64());
    for op in ops {
        assert!(json["ops"][op]["count"].as_u64().unwrap() > 0, "{op}: {json}");
        assert!(json["ops"][op]["p999_us"].as_u64().unwrap() > 0, "{op}: {json}");
    }
    assert!(json["errors"].is_object(), "{json}");
    json
}

/// The flags of a 2-second run.
fn short_run<'a>(target: &'a str, endpoints: &'a str, workload: &'a str) -> Vec<&'a str> {
    vec![
        "bench",
        "--target",
        target,
        "--endpoints",
        endpoints,
        "--workload",
        workload,
        "--concurrency",
        "8",
        "--duration",
        "2s",
        "--warmup",
        "500ms",
        "--value-size",
        "128",
        "--keys",
        "500",
    ]
}

#[test]
fn bench_reports_throughput_percentiles_and_one_json_object_against_a_local_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let (_demo, endpoints) = start_demo(dir.path());
    let limit = Duration::from_secs(90);
    check_table(&flotilla(dir.path(), &short_run("flotilla", &endpoints, "put"), limit), &["put"]);
    check_table(&flotilla(dir.path(), &short_run("flotilla", &endpoints, "mixed"), limit), &["get", "put", "all"]);
    let mut args = short_run("flotilla", &endpoints, "mixed");
    args.push("--json");
    let json = check_json(&flotilla(dir.path(), &args, limit), &["get", "put"]);
    assert_eq!((json["target"].as_str(), json["workload"].as_str()), (Some("flotilla"), Some("mixed")));
    assert_eq!(json["preload"]["failed"].as_u64(), Some(0), "{json}");
    assert_eq!(json["not_found"].as_u64(), Some(0), "every key read was written first: {json}");
    assert_eq!(json["errors_total"].as_u64(), Some(0), "{json}");
}

#[test]
fn bad_flag_values_exit_nonzero_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let limit = Duration::from_secs(20);
    for (flag, value) in [
        ("--concurrency", "0"),
        ("--concurrency", "lots"),
        ("--workload", "scan"),
        ("--duration", "soon"),
        ("--duration", "0s"),
        ("--read-ratio", "1.5"),
        ("--keys", "0"),
        ("--target", "redis"),
    ] {
        let ran = flotilla(dir.path(), &["bench", "--endpoints", "127.0.0.1:1", flag, value], limit);
        assert!(!ran.ok, "{flag} {value} was accepted");
        assert!(ran.stderr.contains(flag), "{flag} {value}: the message does not name the flag:\n{}", ran.stderr);
        assert!(ran.stdout.is_empty(), "{flag} {value}: printed a report:\n{}", ran.stdout);
    }
    let ran = flotilla(dir.path(), &["bench", "--workload", "put"], limit);
    assert!(!ran.ok && ran.stderr.contains("--endpoints"), "{}", ran.stderr);
    // The subcommands still parse as before.
    assert!(flotilla(dir.path(), &["bench", "storage", "--help"], limit).ok);
    assert!(flotilla(dir.path(), &["bench", "kv", "--help"], limit).ok);
}

/// Whether etcd's `/health` on `port` says the member is healthy.
fn etcd_healthy(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /health HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let mut answer = String::new();
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_to_string(&mut answer).is_ok()
        && answer.contains("\"health\":\"true\"")
}

/// Three etcd members on loopback (fresh ports and data dirs); returns
/// them and their client endpoints once each is healthy.
fn start_etcd(dir: &Path) -> (Vec<Guard>, String) {
    let clients = [free_port(), free_port(), free_port()];
    let peers = [free_port(), free_port(), free_port()];
    let cluster: Vec<String> = peers.iter().enumerate().map(|(i, p)| format!("m{i}=http://127.0.0.1:{p}")).collect();
    let mut members = Vec::new();
    for i in 0..3 {
        let (client, peer) = (format!("http://127.0.0.1:{}", clients[i]), format!("http://127.0.0.1:{}", peers[i]));
        let child = Command::new("etcd")
            .args(["--name", &format!("m{i}"), "--data-dir"])
            .arg(dir.join(format!("m{i}")))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &cluster.join(","), "--initial-cluster-state", "new"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(File::create(dir.join(format!("m{i}.log"))).unwrap())
            .spawn()
            .unwrap();
        members.push(Guard(child));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for port in clients {
        while !etcd_healthy(port) {
            assert!(Instant::now() < deadline, "etcd member on {port} not healthy within 60 s");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    (members, clients.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(","))
}

#[test]
fn bench_drives_etcd_through_its_own_grpc_api() {
    let installed = Command::new("etcd").arg("--version").stdout(Stdio::null()).status().is_ok();
    assert!(installed, "etcd is not installed: run scripts/setup.sh (apt-get install -y etcd-server)");
    let dir = tempfile::tempdir().unwrap();
    let (_members, endpoints) = start_etcd(dir.path());
    let limit = Duration::from_secs(90);
    check_table(&flotilla(dir.path(), &short_run("etcd", &endpoints, "put"), limit), &["put"]);
    let mut args = short_run("etcd", &endpoints, "mixed");
    args.push("--json");
    let json = check_json(&flotilla(dir.path(), &args, limit), &["get", "put"]);
    assert_eq!(json["target"].as_str(), Some("etcd"));
    assert_eq!(json["not_found"].as_u64(), Some(0), "the linearizable gets found the preloaded keys: {json}");
    assert_eq!(json["errors_total"].as_u64(), Some(0), "{json}");
}
