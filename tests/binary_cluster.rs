//! Through the real binary: three `flotilla server` processes, writes and
//! reads with `flotilla kv`, a `kill -9` of one node while writing goes on
//! through the others, and every key read back through the restarted node.
//! Every process started is killed by its guard, even when the test fails.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "support/process.rs"]
mod process;
use process::{free_port, KillOnDrop as Server};

const BIN: &str = env!("CARGO_BIN_EXE_flotilla");

fn start(id: u64, port: u16, cluster: &str, dir: &Path) -> Server {
    let log = std::fs::File::options().create(true).append(true).open(dir.join(format!("n{id}.log"))).unwrap();
    let child = Command::new(BIN)
        .args(["server", "--id", &id.to_string(), "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir.join(format!("n{id}")))
        .args(["--initial-cluster", cluster, "--shards", "16"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Server(child)
}

fn kv(endpoints: &str, args: &[&str]) -> Output {
    Command::new(BIN).args(["kv", "--endpoints", endpoints]).args(args).output().unwrap()
}

/// Retries `put` for up to `within` (the cluster may be electing).
fn put_within(endpoints: &str, key: &str, value: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let out = kv(endpoints, &["put", key, value]);
        if out.status.success() {
            return;
        }
        assert!(Instant::now() < deadline, "put {key}: {}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn get(endpoints: &str, key: &str) -> Option<String> {
    let out = kv(endpoints, &["get", key]);
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim_end_matches('\n').to_string())
}

#[test]
fn three_processes_survive_a_kill_9_and_the_restarted_node_serves_everything() {
    let dir = tempfile::tempdir().unwrap();
    let ports = [free_port(), free_port(), free_port()];
    let cluster = format!("1=127.0.0.1:{},2=127.0.0.1:{},3=127.0.0.1:{}", ports[0], ports[1], ports[2]);
    let mut servers: Vec<Option<Server>> =
        (0..3).map(|i| Some(start(i as u64 + 1, ports[i], &cluster, dir.path()))).collect();
    let all = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
    put_within(&all, "probe", "x", Duration::from_secs(60));
    for i in 1..=20 {
        put_within(&all, &format!("key{i}"), &format!("val{i}"), Duration::from_secs(10));
    }
    assert_eq!(get(&all, "key7").as_deref(), Some("val7"));
    let missing = kv(&all, &["get", "no-such-key"]);
    assert_eq!(missing.status.code(), Some(1), "a missing key exits 1");
    let big = "k".repeat(5000);
    let refused = kv(&all, &["put", &big, "v"]);
    assert_eq!(refused.status.code(), Some(2), "an invalid key exits 2");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("4096"), "the message names the limit");

    // kill -9 node 1 (SIGKILL: no shutdown path runs) and keep writing.
    let mut victim = servers[0].take().unwrap();
    victim.0.kill().unwrap();
    victim.0.wait().unwrap();
    let survivors = format!("127.0.0.1:{},127.0.0.1:{}", ports[1], ports[2]);
    for i in 21..=40 {
        put_within(&survivors, &format!("key{i}"), &format!("val{i}"), Duration::from_secs(10));
    }
    servers[0] = Some(start(1, ports[0], &cluster, dir.path()));
    let restarted = format!("127.0.0.1:{}", ports[0]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&restarted, "key40").as_deref() != Some("val40") {
        assert!(Instant::now() < deadline, "the restarted node never served key40");
        std::thread::sleep(Duration::from_millis(200));
    }
    for i in 1..=40 {
        assert_eq!(get(&restarted, &format!("key{i}")), Some(format!("val{i}")), "key{i} through node 1");
    }

    // SIGTERM: node 2 stops gracefully (exit status 0) within a few
    // seconds, and restarts from its data dir without the cluster flags.
    let mut node2 = servers[1].take().unwrap();
    let status = Command::new("kill").args(["-TERM", &node2.0.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(exit) = node2.0.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "node 2 did not stop within 15 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(exit.success(), "graceful stop exits 0, got {exit}");
    let log = std::fs::File::options().append(true).open(dir.path().join("n2.log")).unwrap();
    let child = Command::new(BIN)
        .args(["server", "--id", "2", "--listen", &format!("127.0.0.1:{}", ports[1])])
        .arg("--data-dir")
        .arg(dir.path().join("n2"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    servers[1] = Some(Server(child));
    let only_two = format!("127.0.0.1:{}", ports[1]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&only_two, "key40").as_deref() != Some("val40") {
        assert!(Instant::now() < deadline, "node 2 restarted from its data dir alone does not serve");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(servers);
}
