//! `flotilla admin status` through the real binary against three
//! `flotilla server` processes: the JSON scripts rely on, the table, and
//! the exit codes. Every process started is stopped by its PID (SIGTERM,
//! then SIGKILL if it lingers), even when the test fails.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "support/process.rs"]
mod process;
use process::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_flotilla");

/// Stops the server when dropped (a failing assertion included).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(id: u64, port: u16, cluster: &str, dir: &Path) -> Server {
    let log = std::fs::File::create(dir.join(format!("n{id}.log"))).unwrap();
    let child = Command::new(BIN)
        .args(["server", "--id", &id.to_string(), "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir.join(format!("n{id}")))
        .args(["--initial-cluster", cluster, "--shards", "64"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Server(child)
}

/// `flotilla admin --endpoints ENDPOINTS ARGS...`, killed after 30 s.
fn admin(endpoints: &str, args: &[&str]) -> Output {
    let child = Command::new("timeout")
        .args(["30", BIN, "admin", "--endpoints", endpoints])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.wait_with_output().unwrap()
}

/// (nodes, shards, shards with a leader) of `status --json`'s one object.
fn summary(json: &serde_json::Value) -> (usize, usize, usize) {
    let shards = json["shards"].as_array().unwrap();
    let led = shards.iter().filter(|s| s["leader"].as_u64().unwrap() != 0).count();
    (json["nodes"].as_array().unwrap().len(), shards.len(), led)
}

#[test]
fn admin_status_prints_the_agreed_json_and_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let ports = [free_port(), free_port(), free_port()];
    let cluster = format!("1=127.0.0.1:{},2=127.0.0.1:{},3=127.0.0.1:{}", ports[0], ports[1], ports[2]);
    let servers: Vec<Server> = (0..3).map(|i| start(i as u64 + 1, ports[i], &cluster, dir.path())).collect();
    // Nothing listens on the first endpoint: the command moves on.
    let endpoints = format!("127.0.0.1:{},127.0.0.1:{},127.0.0.1:{}", free_port(), ports[1], ports[2]);

    let deadline = Instant::now() + Duration::from_secs(60);
    let json = loop {
        let out = admin(&endpoints, &["status", "--json"]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            let json: serde_json::Value = serde_json::from_str(&stdout).expect("stdout is one JSON object");
            if summary(&json) == (3, 64, 64) {
                break json;
            }
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(Instant::now() < deadline, "no 3 nodes / 64 led shards within 60 s: {stdout} {stderr}");
        std::thread::sleep(Duration::from_millis(500));
    };
    for node in json["nodes"].as_array().unwrap() {
        let (id, addr) = (node["id"].as_u64().unwrap(), node["addr"].as_str().unwrap());
        assert_eq!(addr, format!("127.0.0.1:{}", ports[id as usize - 1]));
        assert!(node["up"].is_boolean());
    }
    for shard in json["shards"].as_array().unwrap() {
        let number = |field: &str| shard[field].as_u64().unwrap_or_else(|| panic!("{field} is a number: {shard}"));
        assert!(number("applied") <= number("commit") && number("term") >= 1, "{shard}");
        assert!(shard["quiesced"].is_boolean(), "{shard}");
        let replicas = shard["replicas"].as_array().unwrap();
        assert_eq!(replicas.len(), 3, "{shard}");
        assert!(replicas.iter().all(|r| r["role"] == "voter" && r["node_id"].as_u64().is_some()), "{shard}");
    }

    let table = admin(&endpoints, &["status"]);
    assert!(table.status.success());
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("NODE") && text.contains("\nSHARD"), "{text}");
    assert!(text.contains("64 shards: 64 with a leader"), "{text}");

    let dead = format!("127.0.0.1:{}", free_port());
    let unavailable = admin(&dead, &["status"]);
    assert_eq!(unavailable.status.code(), Some(3), "{unavailable:?}");
    let invalid = admin("bad host:1", &["status"]);
    assert_eq!(invalid.status.code(), Some(2), "{invalid:?}");
    drop(servers);
}
