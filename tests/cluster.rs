//! In-process clusters: real nodes (storage, event loop, transport, gRPC)
//! on 127.0.0.1 port 0, driven through the generated gRPC client.
//! Every wait is bounded; every node started is stopped.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use flotilla::multiraft::{Operation, RequestError, RuntimeConfig, ShardId};
use flotilla::node::RunningNode;
use flotilla::proto::kv_client::KvClient;
use flotilla::proto::{CompareAndSwapRequest, DeleteRequest, GetRequest, PutRequest, ScanRequest};
use flotilla::raft::NodeId;
use flotilla::server::ServerConfig;
use tonic::transport::Channel;

#[path = "support/local_cluster.rs"]
mod local_cluster;

use local_cluster::LocalCluster;

/// A local cluster with the default server settings, driven through the
/// generated gRPC client.
struct TestCluster(LocalCluster);

impl std::ops::Deref for TestCluster {
    type Target = LocalCluster;
    fn deref(&self) -> &LocalCluster {
        &self.0
    }
}

impl std::ops::DerefMut for TestCluster {
    fn deref_mut(&mut self) -> &mut LocalCluster {
        &mut self.0
    }
}

impl TestCluster {
    async fn start(size: u64, shards: u32, runtime: RuntimeConfig) -> TestCluster {
        TestCluster(LocalCluster::start(size, shards, ServerConfig::default(), runtime).await)
    }

    async fn client(&self, id: NodeId) -> KvClient<Channel> {
        self.raw(id)
    }

    /// The node leading `shard`, asked of the running nodes.
    async fn leader_of(&self, shard: ShardId) -> Option<NodeId> {
        for node in self.nodes.values() {
            let deadline = Instant::now() + Duration::from_secs(1);
            // Only a leader accepts a write; the others name the leader.
            let write = Operation::Write(flotilla::kv::Command::Delete { key: b"\0leader-probe".to_vec() });
            match node.handle.call(shard, write, deadline).await {
                Ok(_) => return Some(node.handle.node_id()),
                Err(RequestError::NotLeader { leader: Some((leader, _)), .. }) => return Some(leader),
                Err(_) => continue,
            }
        }
        None
    }
}

/// Retries `put` until it succeeds or `within` passes; returns the time taken.
async fn put_within(client: &mut KvClient<Channel>, key: &str, value: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let request = PutRequest { key: key.into(), value: value.into() };
        match client.put(request).await {
            Ok(_) => return started.elapsed(),
            Err(status) if started.elapsed() < within => {
                assert!(
                    matches!(status.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded),
                    "put {key}: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("put {key} still failing after {within:?}: {status:?}"),
        }
    }
}

/// A linearizable read, retried while its shard is still electing (up to
/// 10 s); any other error fails the test.
async fn get(client: &mut KvClient<Channel>, key: &str) -> Option<Vec<u8>> {
    let started = Instant::now();
    loop {
        match client.get(GetRequest { key: key.into(), stale_ok: false }).await {
            Ok(response) => {
                let response = response.into_inner();
                return response.found.then_some(response.value);
            }
            Err(status) if status.code() == tonic::Code::Unavailable && started.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("get {key}: {status:?}"),
        }
    }
}

fn quick_runtime() -> RuntimeConfig {
    RuntimeConfig { compact_log_entries: 40, compact_keep_entries: 5, ..RuntimeConfig::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_serve_every_call_with_its_semantics_and_errors() {
    let mut cluster = TestCluster::start(3, 64, RuntimeConfig::default()).await;
    let mut client = cluster.client(NodeId(1)).await;
    put_within(&mut client, "a", "1", Duration::from_secs(20)).await;
    for i in 0..30 {
        put_within(&mut client, &format!("k{i:02}"), &format!("v{i}"), Duration::from_secs(10)).await;
    }
    // Any node answers for any key (forwarded to the shard's leader).
    for id in [NodeId(2), NodeId(3)] {
        let mut other = cluster.client(id).await;
        assert_eq!(get(&mut other, "k07").await, Some(b"v7".to_vec()));
        assert_eq!(get(&mut other, "missing").await, None);
    }
    let deleted = client.delete(DeleteRequest { key: "a".into() }).await.unwrap().into_inner();
    assert!(deleted.existed);
    let again = client.delete(DeleteRequest { key: "a".into() }).await.unwrap().into_inner();
    assert!(!again.existed, "deleting a missing key is not an error");

    let cas = |expected: Option<&str>, new: Option<&str>| CompareAndSwapRequest {
        key: "c".into(),
        expected: expected.map(Into::into),
        new_value: new.map(Into::into),
    };
    let created = client.compare_and_swap(cas(None, Some("x"))).await.unwrap().into_inner();
    assert!(created.succeeded && !created.found);
    let refused = client.compare_and_swap(cas(Some("y"), Some("z"))).await.unwrap().into_inner();
    assert!(!refused.succeeded && refused.found);
    assert_eq!(refused.current, b"x");
    let removed = client.compare_and_swap(cas(Some("x"), None)).await.unwrap().into_inner();
    assert!(removed.succeeded);
    assert_eq!(get(&mut client, "c").await, None);

    let scan = client.scan(ScanRequest { prefix: "k".into(), limit: 0, start_after: Vec::new() }).await.unwrap();
    let keys: Vec<String> = scan.into_inner().items.iter().map(|i| String::from_utf8(i.key.clone()).unwrap()).collect();
    let expected: Vec<String> = (0..30).map(|i| format!("k{i:02}")).collect();
    assert_eq!(keys, expected, "every shard's keys, merged in order");

    for (request, named) in [
        (PutRequest { key: Vec::new(), value: b"v".to_vec() }, "empty"),
        (PutRequest { key: vec![b'k'; 5000], value: b"v".to_vec() }, "4096"),
        (PutRequest { key: b"k".to_vec(), value: vec![0; (1 << 20) + 1] }, "1048576"),
    ] {
        let status = client.put(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(named), "{named}: {}", status.message());
    }
    // And the node keeps serving.
    assert_eq!(get(&mut client, "k01").await, Some(b"v1".to_vec()));
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_whose_leader_node_stops_takes_writes_again_within_ten_seconds() {
    let mut cluster = TestCluster::start(3, 16, RuntimeConfig::default()).await;
    let mut client = cluster.client(NodeId(1)).await;
    put_within(&mut client, "warm", "1", Duration::from_secs(20)).await;
    // A key whose shard is led by a node other than the one we talk to.
    let handle = cluster.nodes[&NodeId(1)].handle.clone();
    let mut target = None;
    for i in 0..200 {
        let key = format!("key{i}");
        put_within(&mut client, &key, "before", Duration::from_secs(10)).await;
        let leader = cluster.leader_of(handle.shard_for_key(key.as_bytes())).await;
        if let Some(leader) = leader.filter(|l| *l != NodeId(1)) {
            target = Some((key, leader));
            break;
        }
    }
    let (key, leader) = target.expect("some shard is led by node 2 or 3");
    cluster.stop_node(leader).await;
    let took = put_within(&mut client, &key, "after", Duration::from_secs(10)).await;
    assert_eq!(get(&mut client, &key).await, Some(b"after".to_vec()), "written in {took:?}");
    cluster.restart_node(leader).await;
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_stopping_and_restarting_every_node() {
    let mut cluster = TestCluster::start(3, 16, RuntimeConfig::default()).await;
    let mut client = cluster.client(NodeId(2)).await;
    put_within(&mut client, "warm", "1", Duration::from_secs(20)).await;
    for i in 0..60 {
        put_within(&mut client, &format!("durable{i}"), &format!("{i}"), Duration::from_secs(10)).await;
    }
    cluster.stop_all().await;
    for id in [NodeId(1), NodeId(2), NodeId(3)] {
        cluster.restart_node(id).await;
    }
    let mut client = cluster.client(NodeId(3)).await;
    put_within(&mut client, "after-restart", "1", Duration::from_secs(20)).await;
    for i in 0..60 {
        assert_eq!(get(&mut client, &format!("durable{i}")).await, Some(format!("{i}").into_bytes()), "durable{i}");
    }
    cluster.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_missed_a_compacted_log_catches_up_by_snapshot() {
    let mut cluster = TestCluster::start(3, 4, quick_runtime()).await;
    let mut client = cluster.client(NodeId(1)).await;
    put_within(&mut client, "warm", "1", Duration::from_secs(20)).await;
    // Node 3 must not lead anything we write through while it is down.
    cluster.stop_node(NodeId(3)).await;
    for i in 0..400 {
        put_within(&mut client, &format!("s{i}"), &format!("{i}"), Duration::from_secs(10)).await;
    }
    // Let the leaders purge past what node 3 has (compaction runs every 64 ticks).
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.restart_node(NodeId(3)).await;
    // Stale reads on node 3 show what it holds; wait until all is there.
    let mut on_three = cluster.client(NodeId(3)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0..400 {
        let key = format!("s{i}");
        loop {
            let request = GetRequest { key: key.clone().into(), stale_ok: true };
            let found = on_three.get(request).await.map(|r| r.into_inner()).ok();
            if found.as_ref().is_some_and(|r| r.found && r.value == format!("{i}").as_bytes()) {
                break;
            }
            assert!(Instant::now() < deadline, "node 3 never got {key}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let installed = cluster.nodes[&NodeId(3)].handle.stats().snapshots_installed.load(Ordering::Relaxed);
    assert!(installed > 0, "node 3 caught up by snapshot, not only by log");
    cluster.stop_all().await;
}

fn stat(node: &RunningNode, pick: fn(&flotilla::multiraft::NodeStats) -> &std::sync::atomic::AtomicU64) -> u64 {
    pick(node.handle.stats()).load(Ordering::Relaxed)
}

/// Waits until `done` holds, checking every 100 ms, for at most `within`.
async fn eventually(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// With 1,000 shards and no load, every group quiesces and the nodes
/// exchange O(nodes) batches, not O(groups); when a node dies, the groups
/// it led wake at no more than the configured rate and all get leaders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_shards_quiesce_and_wake_at_a_bounded_rate_when_a_node_dies() {
    const SHARDS: u64 = 1000;
    let runtime = RuntimeConfig { max_wakeups_per_tick: 40, ..RuntimeConfig::default() };
    let mut cluster = TestCluster::start(3, SHARDS as u32, runtime).await;
    let nodes = [NodeId(1), NodeId(2), NodeId(3)];
    let led = |c: &TestCluster| {
        nodes.iter().filter_map(|id| c.nodes.get(id)).map(|n| stat(n, |s| &s.groups_led)).sum::<u64>()
    };
    eventually(Duration::from_secs(60), "every shard has a leader", || led(&cluster) == SHARDS).await;
    // Leaders are spread by placement's preferred leader, not won by
    // whichever node started first.
    eventually(Duration::from_secs(60), "every node leads at least a fifth of the shards", || {
        cluster.nodes.values().all(|node| stat(node, |s| &s.groups_led) >= SHARDS / 5)
    })
    .await;
    eventually(Duration::from_secs(60), "every group quiesced", || {
        cluster.nodes.values().all(|n| stat(n, |s| &s.groups_quiesced) == SHARDS)
    })
    .await;

    // Settled: over a second of ticks, count the batches node 1 sends.
    let one = &cluster.nodes[&NodeId(1)];
    let (batches, ticks) = (stat(one, |s| &s.peer_batches_sent), stat(one, |s| &s.ticks));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (batches, ticks) = (stat(one, |s| &s.peer_batches_sent) - batches, stat(one, |s| &s.ticks) - ticks);
    assert!(ticks >= 10, "the clock runs ({ticks} ticks)");
    assert!(batches <= 2 * 2 * ticks, "{batches} batches to 2 peers in {ticks} ticks: more than 2 per peer per tick");

    // The node leading the most groups dies; the survivors wake the groups
    // it led, a few per tick.
    let victim = *nodes.iter().max_by_key(|id| stat(&cluster.nodes[id], |s| &s.groups_led)).unwrap();
    let victim_led = stat(&cluster.nodes[&victim], |s| &s.groups_led);
    assert!(victim_led >= SHARDS / 3, "the busiest node leads at least a third ({victim_led})");
    let survivors: Vec<NodeId> = nodes.iter().copied().filter(|id| *id != victim).collect();
    let before: Vec<(u64, u64)> = survivors
        .iter()
        .map(|id| (stat(&cluster.nodes[id], |s| &s.wakeups), stat(&cluster.nodes[id], |s| &s.ticks)))
        .collect();
    cluster.stop_node(victim).await;
    eventually(Duration::from_secs(60), "every shard has a leader on the survivors", || led(&cluster) == SHARDS).await;
    for (id, (wakeups, ticks)) in survivors.iter().zip(before) {
        let node = &cluster.nodes[id];
        let woken = stat(node, |s| &s.wakeups) - wakeups;
        let elapsed = stat(node, |s| &s.ticks) - ticks;
        assert!(woken > 0, "node {id} woke the groups node {victim} led");
        assert!(woken <= 40 * (elapsed + 1), "node {id} woke {woken} groups in {elapsed} ticks: over 40 per tick");
    }
    cluster.stop_all().await;
}

/// The tail caches hold entries only while some follower may still need
/// them: after a burst, once every follower has everything, no cache keeps
/// memory; and the node-wide budget bounds them meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_caches_keep_no_memory_after_a_burst() {
    let runtime = RuntimeConfig { compact_every_ticks: 5, cache_budget_bytes: 4 << 10, ..RuntimeConfig::default() };
    let mut cluster = TestCluster::start(3, 8, runtime).await;
    let mut client = cluster.client(NodeId(1)).await;
    put_within(&mut client, "warm", "1", Duration::from_secs(20)).await;
    let value = "v".repeat(1000);
    for i in 0..100 {
        put_within(&mut client, &format!("burst{i}"), &value, Duration::from_secs(10)).await;
    }
    let budget_kept = cluster.nodes.values().all(|n| stat(n, |s| &s.cache_bytes) <= 4 << 10);
    assert!(budget_kept, "every node's caches fit the budget as of its last sweep");
    eventually(Duration::from_secs(20), "every cache is empty once followers have everything", || {
        cluster.nodes.values().all(|n| stat(n, |s| &s.cache_bytes) == 0)
    })
    .await;
    cluster.stop_all().await;
}

/// Leadership follows placement's preferred replicas: a node that was down
/// gets its share of leaders back once it returns (even for groups that
/// fell asleep under another leader meanwhile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_node_gets_its_preferred_leaderships_back() {
    const SHARDS: u64 = 30;
    let runtime = RuntimeConfig { compact_every_ticks: 5, ..RuntimeConfig::default() };
    let mut cluster = TestCluster::start(3, SHARDS as u32, runtime).await;
    let led = |c: &TestCluster, id: NodeId| c.nodes.get(&id).map_or(0, |n| stat(n, |s| &s.groups_led));
    let balanced = |c: &TestCluster| [NodeId(1), NodeId(2), NodeId(3)].iter().all(|id| led(c, *id) == SHARDS / 3);
    eventually(Duration::from_secs(30), "each node leads its preferred third", || balanced(&cluster)).await;
    cluster.stop_node(NodeId(3)).await;
    eventually(Duration::from_secs(30), "nodes 1 and 2 lead everything", || {
        led(&cluster, NodeId(1)) + led(&cluster, NodeId(2)) == SHARDS
    })
    .await;
    // Let the groups fall asleep under their stand-in leaders.
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.restart_node(NodeId(3)).await;
    eventually(Duration::from_secs(30), "node 3 leads its preferred third again", || balanced(&cluster)).await;
    cluster.stop_all().await;
}

/// Reads through every node at once, on a fresh cluster where each node's
/// read counter starts at the same value: the leader holds all replicas'
/// read rounds, and each must be answered (contexts once collided across
/// nodes, leaving one of two reads unanswered until its deadline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_through_every_node_are_all_answered() {
    let mut cluster = TestCluster::start(3, 1, RuntimeConfig::default()).await;
    let mut client = cluster.client(NodeId(1)).await;
    put_within(&mut client, "key", "value", Duration::from_secs(20)).await;
    let mut reads = tokio::task::JoinSet::new();
    for id in [NodeId(1), NodeId(2), NodeId(3)] {
        for _ in 0..40 {
            let mut client = cluster.client(id).await;
            reads.spawn(async move {
                let mut request = tonic::Request::new(GetRequest { key: b"key".to_vec(), stale_ok: false });
                request.set_timeout(Duration::from_secs(3));
                client.get(request).await.map(|r| r.into_inner().value)
            });
        }
    }
    while let Some(read) = reads.join_next().await {
        assert_eq!(read.unwrap().map_err(|s| s.message().to_string()), Ok(b"value".to_vec()));
    }
    cluster.stop_all().await;
}
