//! Metrics of real nodes: an in-process 3-node cluster under puts, scraped
//! over HTTP from each node's `/metrics`, and a real Prometheus server
//! (the Debian package's binary, installed by scripts/setup.sh) scraping a
//! node and answering a query through its HTTP API. Everything listens on
//! 127.0.0.1; every wait is bounded; everything started is stopped.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use flotilla::multiraft::{RuntimeConfig, ShardId};
use flotilla::node::RunningNode;
use flotilla::proto::{GetRequest, PutRequest};
use flotilla::raft::NodeId;
use flotilla::server::ServerConfig;

#[path = "support/local_cluster.rs"]
#[allow(dead_code)] // Not every test file restarts nodes.
mod local_cluster;
#[path = "support/scrape.rs"]
mod scrape;

use local_cluster::LocalCluster;
use scrape::{families, http_get, sum, value, Endpoint};

#[path = "support/process.rs"]
mod process;
use process::{free_port, KillOnDrop};

const SHARDS: u32 = 8;
const PUTS: usize = 50;

/// Waits until `done` holds, checking every 100 ms, for at most `within`.
async fn eventually(within: Duration, what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done().await {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn hosted(node: &RunningNode) -> f64 {
    (0..node.handle.shard_count()).filter(|s| node.handle.hosts(ShardId(*s))).count() as f64
}

async fn every_shard_has_a_leader(cluster: &LocalCluster) {
    let led =
        |c: &LocalCluster| c.nodes.values().map(|n| n.handle.stats().groups_led.load(Ordering::Relaxed)).sum::<u64>();
    eventually(Duration::from_secs(60), "every shard has a leader", async || led(cluster) == u64::from(SHARDS)).await;
}

/// Puts through node 1 (which forwards to each shard's leader), retrying
/// while leadership settles.
async fn put_keys(cluster: &LocalCluster, count: usize) {
    let mut client = cluster.raw(NodeId(1));
    for i in 0..count {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let request = PutRequest { key: format!("metrics-{i}").into(), value: format!("v{i}").into() };
            match client.put(request).await {
                Ok(_) => break,
                Err(status) if Instant::now() < deadline && status.code() == tonic::Code::Unavailable => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(status) => panic!("put {i}: {status:?}"),
            }
        }
    }
}

/// Every family the issue asks for, on every node, and each counter moved
/// by what the cluster did: elections at start, then puts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_under_puts_exports_every_family_and_the_counters_move() {
    let mut cluster = LocalCluster::start(3, SHARDS, ServerConfig::default(), RuntimeConfig::default()).await;
    let mut endpoints = Vec::new();
    for node in cluster.nodes.values() {
        endpoints.push((node.handle.node_id(), hosted(node), Endpoint::serve(node.metrics_registry().clone()).await));
    }
    every_shard_has_a_leader(&cluster).await;
    put_keys(&cluster, PUTS).await;
    let get = cluster.raw(NodeId(2)).get(GetRequest { key: "metrics-0".into(), stale_ok: false }).await;
    assert_eq!(get.expect("get after the puts").into_inner().value, b"v0");

    // Followers apply once they learn the commit index: wait for it.
    let all_applied = async || {
        for (_, _, endpoint) in &endpoints {
            let text = endpoint.scrape().await;
            if value(&text, "flotilla_raft_commit_to_apply_latency_seconds_count", &[]) < PUTS as f64 {
                return false;
            }
        }
        true
    };
    eventually(Duration::from_secs(20), "every node applied every put", all_applied).await;

    let mut scraped = Vec::new();
    for (id, hosted, endpoint) in &endpoints {
        let text = endpoint.scrape().await;
        check_node(*id, *hosted, &text, &endpoints.iter().map(|(id, ..)| *id).collect::<Vec<_>>());
        scraped.push(text);
    }
    let total = |name: &str, with: &[&str]| scraped.iter().map(|text| value(text, name, with)).sum::<f64>();
    assert_eq!(total("flotilla_raft_groups_led", &[]), f64::from(SHARDS), "one leader per shard");
    let won = total("flotilla_raft_elections_won_total", &[]);
    assert!(won >= f64::from(SHARDS), "{won} elections won for {SHARDS} shards");
    assert!(total("flotilla_raft_elections_started_total", &[]) >= won, "every win began with a campaign");
    // Leaders propose; forwarded puts are proposed once, on the leader.
    assert!(total("flotilla_raft_proposals_total", &[]) >= PUTS as f64);
    assert!(total("flotilla_raft_propose_to_commit_latency_seconds_count", &[]) >= PUTS as f64);
    let put_ok = ["method=\"Put\"", "code=\"OK\""];
    let node_one = &scraped[0];
    assert!(value(node_one, "flotilla_server_requests_total", &put_ok) >= PUTS as f64, "node 1 answered the puts");
    // The puts it forwarded to the leaders on nodes 2 and 3 count once,
    // where the client's call arrived.
    for other in &scraped[1..] {
        assert_eq!(value(other, "flotilla_server_requests_total", &put_ok), 0.0, "a forwarded put counted twice");
    }
    let put_latency = value(node_one, "flotilla_server_request_latency_seconds_count", &["method=\"Put\""]);
    assert!(put_latency >= PUTS as f64, "{put_latency} put latencies on node 1");
    let get_ok = ["method=\"Get\"", "code=\"OK\""];
    assert_eq!(value(&scraped[1], "flotilla_server_requests_total", &get_ok), 1.0, "node 2 answered one get");

    // Idle now: every group's leader heartbeats (coalesced per peer), then
    // quiesces, and no proposal is left pending.
    let quiet = async || {
        for (_, hosted, endpoint) in &endpoints {
            let text = endpoint.scrape().await;
            let quiesced = value(&text, "flotilla_raft_groups_quiesced", &[]);
            if quiesced != *hosted || value(&text, "flotilla_raft_pending_proposals", &[]) != 0.0 {
                return false;
            }
        }
        true
    };
    eventually(Duration::from_secs(30), "every group quiesced with nothing pending", quiet).await;
    let mut coalesced = 0.0;
    for (_, _, endpoint) in &endpoints {
        coalesced += value(&endpoint.scrape().await, "flotilla_transport_heartbeats_coalesced_total", &[]);
    }
    assert!(coalesced > 0.0, "heartbeats travel in the batches' compact lists");
    for (_, _, endpoint) in endpoints {
        endpoint.stop().await;
    }
    cluster.stop_all().await;
}

/// What every node must show after the puts.
fn check_node(id: NodeId, hosted: f64, text: &str, members: &[NodeId]) {
    let node = format!("node=\"{id}\"");
    let ours: Vec<_> = families(text).into_iter().filter(|(name, _)| name.starts_with("flotilla_")).collect();
    assert!(ours.len() >= 15, "node {id}: only {} flotilla_ families", ours.len());
    for histogram in [
        "flotilla_raft_propose_to_commit_latency_seconds",
        "flotilla_raft_commit_to_apply_latency_seconds",
        "flotilla_storage_fsync_latency_seconds",
        "flotilla_storage_fsync_entries",
        "flotilla_storage_fsync_bytes",
        "flotilla_server_request_latency_seconds",
    ] {
        assert!(ours.contains(&(histogram.to_string(), "histogram".to_string())), "node {id}: no {histogram}");
    }
    assert_eq!(sum(text, "flotilla_raft_groups_hosted", &[&node]), Some(hosted), "node {id}");
    // Every replica appends every put to its log before acknowledging it.
    assert!(value(text, "flotilla_storage_fsync_latency_seconds_count", &[]) > 0.0, "node {id} synced");
    let synced_entries = value(text, "flotilla_storage_fsync_entries_sum", &[]);
    assert!(synced_entries >= PUTS as f64, "node {id}: {synced_entries} entries synced");
    assert!(value(text, "flotilla_storage_fsync_bytes_sum", &[]) > 0.0, "node {id}");
    for counter in ["flotilla_runtime_ticks_total", "flotilla_runtime_turns_total"] {
        assert!(value(text, counter, &[]) > 0.0, "node {id}: {counter}");
    }
    assert!(sum(text, "flotilla_storage_tail_cache_bytes", &[]).is_some(), "node {id}");
    assert!(sum(text, "flotilla_raft_snapshots_sent_total", &[]).is_some(), "node {id}");
    for peer in members.iter().filter(|peer| **peer != id) {
        let peer = format!("peer=\"{peer}\"");
        for counter in [
            "flotilla_transport_messages_sent_total",
            "flotilla_transport_messages_received_total",
            "flotilla_transport_batches_sent_total",
            "flotilla_transport_batches_received_total",
        ] {
            assert!(value(text, counter, &[&peer]) > 0.0, "node {id}: {counter}{{{peer}}} did not move");
        }
        let (messages, batches) = (
            value(text, "flotilla_transport_messages_sent_total", &[&peer]),
            value(text, "flotilla_transport_batches_sent_total", &[&peer]),
        );
        assert!(messages >= batches, "node {id} to {peer}: a batch holds at least one message");
    }
    // The crate's collector counts CPU in whole seconds: present, maybe 0.
    assert!(sum(text, "process_cpu_seconds_total", &[&node]).is_some(), "node {id}: process CPU");
    assert!(value(text, "process_resident_memory_bytes", &[&node]) > 0.0, "node {id}: process memory");
}

/// Starts `prometheus` scraping `target` every second, on a free port.
fn start_prometheus(dir: &Path, target: std::net::SocketAddr) -> (KillOnDrop, std::net::SocketAddr) {
    let config = dir.join("prometheus.yml");
    let yaml = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: flotilla\n    \
         static_configs:\n      - targets: ['{target}']\n"
    );
    std::fs::write(&config, yaml).expect("writes the config");
    let port = free_port();
    let log = std::fs::File::create(dir.join("prometheus.log")).expect("creates the log");
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|error| {
            panic!("cannot run `prometheus` ({error}); `bash scripts/setup.sh` installs the Debian package")
        });
    (KillOnDrop(child), std::net::SocketAddr::from(([127, 0, 0, 1], port)))
}

/// The value Prometheus returns for an instant query, if any series matched.
fn first_value(body: &str) -> Option<String> {
    let answer: serde_json::Value = serde_json::from_str(body).ok()?;
    let result = answer.get("data")?.get("result")?.as_array()?;
    Some(result.first()?.get("value")?.get(1)?.as_str()?.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_a_node_and_answers_a_query() {
    let mut cluster = LocalCluster::start(1, 4, ServerConfig::default(), RuntimeConfig::default()).await;
    let node = &cluster.nodes[&NodeId(1)];
    let endpoint = Endpoint::serve(node.metrics_registry().clone()).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let (mut prometheus, api) = start_prometheus(dir.path(), endpoint.addr);
    let query = "/api/v1/query?query=flotilla_raft_groups_hosted%7Bnode%3D%221%22%7D";
    let deadline = Instant::now() + Duration::from_secs(60);
    let answer = loop {
        if let Ok(Some(exit)) = prometheus.0.try_wait() {
            let log = std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
            panic!("prometheus exited ({exit}): {}", &log[log.len().saturating_sub(2000)..]);
        }
        let (status, body) = http_get(api, query).await;
        if status.contains(" 200 ") {
            if let Some(value) = first_value(&body) {
                break value;
            }
        }
        assert!(Instant::now() < deadline, "prometheus never returned the series within 60 s: {status} {body}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(answer, "4", "the node hosts all 4 shards of its one-node cluster");
    // The scrape itself is healthy: `up` is 1 for the target.
    let (_, up) = http_get(api, "/api/v1/query?query=up%7Bjob%3D%22flotilla%22%7D").await;
    assert_eq!(first_value(&up).as_deref(), Some("1"), "{up}");
    drop(prometheus);
    endpoint.stop().await;
    cluster.stop_all().await;
}
