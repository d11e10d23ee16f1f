//! Through the real binary: `flotilla demo` in an empty folder prints its
//! endpoints and metrics URLs, serves put and get through `flotilla kv`,
//! exits 0 within 20 s of SIGINT, and a second start in the same folder
//! listens on the same ports and serves the key written before. Every
//! process started is killed by its guard, even when the test fails.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_flotilla");

/// Kills the demo when dropped (a failing assertion included).
struct Demo {
    child: Child,
    /// Every line the demo printed so far.
    printed: Vec<String>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `flotilla demo` in `dir` and waits (at most 120 s) for its
/// banner; returns the demo and the endpoints.
fn start(dir: &Path) -> (Demo, String) {
    let log = std::fs::File::options().create(true).append(true).open(dir.join("demo.log")).unwrap();
    let mut child = Command::new(BIN).arg("demo").current_dir(dir).stdout(Stdio::piped()).stderr(log).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines, printed) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut demo = Demo { child, printed: Vec::new() };
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut endpoints = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match printed.recv_timeout(left) {
            Ok(line) => {
                endpoints = line.strip_prefix("endpoints: ").map(str::to_string).or(endpoints);
                // The banner's last line: everything is printed.
                let done = line.starts_with("Ctrl-C stops");
                demo.printed.push(line);
                if let (true, Some(endpoints)) = (done, &endpoints) {
                    return (demo, endpoints.clone());
                }
            }
            Err(_) => panic!(
                "no endpoints line within 120 s; printed {:?}; log: {}",
                demo.printed,
                std::fs::read_to_string(dir.join("demo.log")).unwrap_or_default()
            ),
        }
    }
}

fn kv(endpoints: &str, args: &[&str]) -> Output {
    Command::new(BIN).args(["kv", "--endpoints", endpoints]).args(args).output().unwrap()
}

/// Retries until `kv` succeeds, for up to `within`.
fn kv_within(endpoints: &str, args: &[&str], within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let out = kv(endpoints, args);
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).trim_end().to_string();
        }
        assert!(Instant::now() < deadline, "kv {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// SIGINT, as Ctrl-C sends; the demo must exit 0 within 20 s.
fn interrupt(mut demo: Demo) {
    let pid = demo.child.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = demo.child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "the demo still runs 20 s after SIGINT");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(exit.success(), "Ctrl-C stops the demo with exit 0, got {exit}");
}

#[test]
fn the_demo_serves_stops_on_ctrl_c_and_restarts_from_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let (demo, endpoints) = start(dir.path());
    let addresses: Vec<&str> = endpoints.split(',').collect();
    assert_eq!(addresses.len(), 3, "{endpoints}");
    assert!(addresses.iter().all(|a| a.starts_with("127.0.0.1:")), "{endpoints}");
    let text = demo.printed.join("\n");
    let urls = text.matches("/metrics").count();
    assert!(urls >= 3 && text.contains("http://127.0.0.1:"), "a metrics URL per node: {text}");
    assert!(text.contains("64 shards"), "{text}");
    assert!(text.contains(&format!("kv --endpoints {endpoints}")), "example commands: {text}");
    assert!(text.contains(&format!("admin --endpoints {endpoints} status")), "{text}");
    for node in ["n1", "n2", "n3"] {
        assert!(dir.path().join("flotilla-demo").join(node).is_dir(), "data under ./flotilla-demo/{node}");
    }

    kv_within(&endpoints, &["put", "demo-key", "demo-value"], Duration::from_secs(30));
    assert_eq!(kv_within(&endpoints, &["get", "demo-key"], Duration::from_secs(10)), "demo-value");
    interrupt(demo);

    let (demo, again) = start(dir.path());
    assert_eq!(again, endpoints, "a second start listens on the same ports");
    assert_eq!(kv_within(&again, &["get", "demo-key"], Duration::from_secs(30)), "demo-value");
    interrupt(demo);
}
