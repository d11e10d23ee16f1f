use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::multiraft::NodeStats;

fn registry() -> (Arc<NodeStats>, Registry) {
    let stats = Arc::new(NodeStats::default());
    let registry = node_registry(NodeId(7), stats.clone()).expect("a fresh registry accepts every family");
    (stats, registry)
}

fn exposition(registry: &Registry) -> String {
    String::from_utf8(encode(registry).expect("encodes")).expect("text format is UTF-8")
}

/// `(name, type)` of every `# TYPE` line.
fn families(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .map(|(name, kind)| (name.to_string(), kind.to_string()))
        .collect()
}

/// The value of the sample line `name{labels}` whose labels include all of
/// `with` (as `key="value"`).
fn sample(text: &str, name: &str, with: &[&str]) -> Option<f64> {
    text.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (series_name, labels) = series.split_once('{').unwrap_or((series, ""));
        (series_name == name && with.iter().all(|l| labels.contains(l))).then(|| value.parse().ok())?
    })
}

#[test]
fn every_family_is_named_flotilla_subsystem_name_unit_and_documented() {
    let (_, registry) = registry();
    let text = exposition(&registry);
    let ours: Vec<_> = families(&text).into_iter().filter(|(name, _)| name.starts_with("flotilla_")).collect();
    assert!(ours.len() >= 15, "only {} flotilla_ families:\n{text}", ours.len());
    let subsystems = ["raft", "runtime", "storage", "transport", "server"];
    for (name, kind) in &ours {
        let subsystem = name.trim_start_matches("flotilla_").split('_').next().unwrap_or_default();
        assert!(subsystems.contains(&subsystem), "{name}: unknown subsystem {subsystem}");
        assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'), "{name}");
        assert_eq!(
            kind == "counter",
            name.ends_with("_total"),
            "{name} ({kind}): counters and only they end in _total"
        );
        if name.contains("latency") {
            assert!(name.ends_with("_seconds"), "{name}: latencies are in seconds");
        }
        assert!(text.contains(&format!("# HELP {name} ")), "{name} has no help text");
    }
    // The process collector: CPU and memory of the node's process.
    assert!(sample(&text, "process_cpu_seconds_total", &["node=\"7\""]).is_some(), "{text}");
    assert!(sample(&text, "process_resident_memory_bytes", &[]).is_some_and(|bytes| bytes > 0.0));
}

#[test]
fn every_series_carries_the_node_and_only_bounded_labels() {
    let (stats, registry) = registry();
    let peer = stats.metrics.peers.peer(NodeId(2));
    peer.messages_sent.inc();
    stats.metrics.requests.observe(Method::Put, tonic::Code::Ok, Duration::from_millis(3));
    let text = exposition(&registry);
    let allowed = ["node", "peer", "method", "code", "le"];
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let labels = line.split_once('{').and_then(|(_, rest)| rest.split_once('}')).map_or("", |(labels, _)| labels);
        assert!(labels.contains("node=\"7\""), "no node label: {line}");
        for pair in labels.split(',') {
            let key = pair.split('=').next().unwrap_or_default();
            assert!(allowed.contains(&key), "label {key} is not per node, peer, method or code: {line}");
        }
    }
}

#[test]
fn stats_atomics_are_read_when_gathered() {
    let (stats, registry) = registry();
    stats.groups.store(64, Ordering::Relaxed);
    stats.groups_led.store(21, Ordering::Relaxed);
    stats.snapshots_sent.store(3, Ordering::Relaxed);
    stats.cache_bytes.store(4096, Ordering::Relaxed);
    let text = exposition(&registry);
    assert_eq!(sample(&text, "flotilla_raft_groups_hosted", &[]), Some(64.0));
    assert_eq!(sample(&text, "flotilla_raft_groups_led", &[]), Some(21.0));
    assert_eq!(sample(&text, "flotilla_raft_snapshots_sent_total", &[]), Some(3.0));
    assert_eq!(sample(&text, "flotilla_storage_tail_cache_bytes", &[]), Some(4096.0));
    assert!(text.contains("# TYPE flotilla_raft_groups_led gauge"));
    assert!(text.contains("# TYPE flotilla_raft_snapshots_sent_total counter"));
    stats.groups_led.store(22, Ordering::Relaxed);
    assert_eq!(sample(&exposition(&registry), "flotilla_raft_groups_led", &[]), Some(22.0), "read live");
}

#[test]
fn the_event_loop_recorder_publishes_on_flush_only() {
    let (stats, registry) = registry();
    let recorder = stats.metrics.runtime.recorder();
    recorder.synced(Duration::from_micros(700), 12, 3000);
    recorder.entries_applied(5, Duration::from_micros(300));
    recorder.proposal_committed(Duration::from_millis(2));
    let count = |text: &str, name: &str| sample(text, &format!("{name}_count"), &[]);
    let before = exposition(&registry);
    assert_eq!(count(&before, "flotilla_storage_fsync_latency_seconds"), Some(0.0), "not yet flushed");
    recorder.flush();
    let text = exposition(&registry);
    assert!(text.contains("# TYPE flotilla_storage_fsync_latency_seconds histogram"));
    assert_eq!(count(&text, "flotilla_storage_fsync_latency_seconds"), Some(1.0));
    assert_eq!(count(&text, "flotilla_raft_commit_to_apply_latency_seconds"), Some(5.0), "one per entry");
    assert_eq!(count(&text, "flotilla_raft_propose_to_commit_latency_seconds"), Some(1.0));
    assert_eq!(sample(&text, "flotilla_storage_fsync_entries_sum", &[]), Some(12.0));
    assert_eq!(sample(&text, "flotilla_storage_fsync_bytes_sum", &[]), Some(3000.0));
    // 700 us lands in the 800 us bucket and above, not in the 400 us one.
    let bucket = |le: &str| sample(&text, "flotilla_storage_fsync_latency_seconds_bucket", &[le]);
    assert_eq!(bucket("le=\"0.0004\""), Some(0.0));
    assert_eq!(bucket("le=\"0.0008\""), Some(1.0));
    assert_eq!(bucket("le=\"+Inf\""), Some(1.0));
}

#[test]
fn requests_are_counted_by_method_and_code_and_timed_by_method() {
    let (stats, registry) = registry();
    let requests = &stats.metrics.requests;
    requests.observe(Method::Put, tonic::Code::Ok, Duration::from_millis(2));
    requests.observe(Method::Put, tonic::Code::Ok, Duration::from_millis(4));
    requests.observe(Method::Put, tonic::Code::Unavailable, Duration::from_millis(1));
    requests.observe(Method::Get, tonic::Code::Cancelled, Duration::from_millis(1));
    let text = exposition(&registry);
    let put_ok = sample(&text, "flotilla_server_requests_total", &["method=\"Put\"", "code=\"OK\""]);
    assert_eq!(put_ok, Some(2.0));
    let put_unavailable = sample(&text, "flotilla_server_requests_total", &["method=\"Put\"", "code=\"UNAVAILABLE\""]);
    assert_eq!(put_unavailable, Some(1.0));
    let get_cancelled = sample(&text, "flotilla_server_requests_total", &["method=\"Get\"", "code=\"CANCELLED\""]);
    assert_eq!(get_cancelled, Some(1.0));
    assert_eq!(sample(&text, "flotilla_server_requests_total", &["code=\"NOT_FOUND\""]), None, "no empty series");
    let put_latency = sample(&text, "flotilla_server_request_latency_seconds_count", &["method=\"Put\""]);
    assert_eq!(put_latency, Some(3.0));
    let scans = sample(&text, "flotilla_server_request_latency_seconds_count", &["method=\"Scan\""]);
    assert_eq!(scans, Some(0.0), "every method's latency series exists from the start");
    assert_eq!(code_name(tonic::Code::DeadlineExceeded), "DEADLINE_EXCEEDED");
}

#[test]
fn peer_series_exist_once_the_peer_is_known() {
    let (stats, registry) = registry();
    assert_eq!(sample(&exposition(&registry), "flotilla_transport_batches_sent_total", &[]), None);
    let peer = stats.metrics.peers.peer(NodeId(3));
    peer.batches_sent.inc_by(2);
    peer.messages_sent.inc_by(9);
    let text = exposition(&registry);
    assert_eq!(sample(&text, "flotilla_transport_batches_sent_total", &["peer=\"3\""]), Some(2.0));
    assert_eq!(sample(&text, "flotilla_transport_messages_sent_total", &["peer=\"3\""]), Some(9.0));
    assert_eq!(sample(&text, "flotilla_transport_messages_received_total", &["peer=\"3\""]), Some(0.0));
}

#[test]
fn two_nodes_in_one_process_have_separate_registries() {
    let (one_stats, one) = registry();
    let two_stats = Arc::new(NodeStats::default());
    let two = node_registry(NodeId(8), two_stats.clone()).expect("a second registry");
    one_stats.metrics.runtime.proposals.inc_by(5);
    assert_eq!(sample(&exposition(&one), "flotilla_raft_proposals_total", &["node=\"7\""]), Some(5.0));
    assert_eq!(sample(&exposition(&two), "flotilla_raft_proposals_total", &["node=\"8\""]), Some(0.0));
}

#[test]
fn only_get_metrics_is_served() {
    let (_, registry) = registry();
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).expect("ASCII response");
    let ok = text(http::respond(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &registry));
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    assert!(ok.contains("content-type: text/plain; version=0.0.4"), "{ok}");
    let (head, body) = ok.split_once("\r\n\r\n").expect("head and body");
    assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
    assert!(body.contains("# TYPE flotilla_raft_groups_hosted gauge"));
    let query = text(http::respond(b"GET /metrics?name[]=x HTTP/1.1\r\n\r\n", &registry));
    assert!(query.starts_with("HTTP/1.1 200 OK"), "a query string is ignored: {query}");
    let missing = text(http::respond(b"GET /other HTTP/1.1\r\n\r\n", &registry));
    assert!(missing.starts_with("HTTP/1.1 404 Not Found"), "{missing}");
    let post = text(http::respond(b"POST /metrics HTTP/1.1\r\n\r\n", &registry));
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    let garbage = text(http::respond(b"\xff\xfe\r\n\r\n", &registry));
    assert!(garbage.starts_with("HTTP/1.1 405"), "{garbage}");
}

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\n\r\n");
    send(addr, request.as_bytes(), false).await
}

/// Writes `request` (then half-closes, if asked) and reads the answer.
async fn send(addr: std::net::SocketAddr, request: &[u8], half_close: bool) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connects");
    stream.write_all(request).await.expect("writes");
    if half_close {
        stream.shutdown().await.expect("half-closes");
    }
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("reads until the server closes");
    response
}

#[tokio::test]
async fn the_server_answers_over_tcp_and_stops_when_told() {
    let (stats, registry) = registry();
    stats.groups.store(5, Ordering::Relaxed);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("has an address");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(run(listener, registry, stopped));
    let within = Duration::from_secs(10);
    let response = tokio::time::timeout(within, get(addr, "/metrics")).await.expect("answers in time");
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert_eq!(sample(&response, "flotilla_raft_groups_hosted", &[]), Some(5.0));
    let missing = tokio::time::timeout(within, get(addr, "/")).await.expect("answers in time");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    // Hand-typed requests (`printf 'GET /metrics\n\n' | nc`): bare LF, or
    // a request line and then end of input.
    let bare = tokio::time::timeout(within, send(addr, b"GET /metrics HTTP/1.0\n\n", false)).await;
    assert!(bare.expect("answers a bare-LF head in time").starts_with("HTTP/1.1 200 OK"));
    let closed = tokio::time::timeout(within, send(addr, b"GET /metrics HTTP/1.0\n", true)).await;
    assert!(closed.expect("answers a half-closed request in time").starts_with("HTTP/1.1 200 OK"));
    let nothing = tokio::time::timeout(within, send(addr, b"GET /met", true)).await;
    assert_eq!(nothing.expect("closes in time"), "", "no whole request line: no answer");
    stop.send(true).expect("the server listens");
    let result = tokio::time::timeout(within, server).await.expect("stops in time").expect("did not panic");
    assert!(result.is_ok(), "{result:?}");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "the listener is closed");
}
