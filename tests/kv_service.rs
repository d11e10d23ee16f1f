//! The `Kv` gRPC service and the client library (`flotilla::client`)
//! end to end, against real in-process clusters: real nodes (storage, event
//! loop, transport, gRPC) on 127.0.0.1 port 0, reached through `Client`, the
//! `flotilla kv` command, and the generated `KvClient` when the wire itself
//! (status codes, metadata) is what is checked.
//!
//! Every wait is bounded; every node started is stopped. Scenarios that
//! need a healthy cluster share one (each with its own keys); the ones that
//! stop nodes get their own.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Parser;
use flotilla::client::cli::{run_kv, KvArgs};
use flotilla::client::{CasResult, Client, ClientError, ClientOptions, ScanPage};
use flotilla::multiraft::{Operation, RequestError, RuntimeConfig, ShardId};
use flotilla::proto::{CompareAndSwapRequest, GetRequest, PutRequest, ScanRequest};
use flotilla::raft::NodeId;
use flotilla::server::{ServerConfig, FORWARDED_HEADER, LEADER_HEADER, SHARDS_HEADER};
use flotilla_placement::ShardRing;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::Code;

const SHARDS: u32 = 16;
const MAX_KEY: usize = 4096;
const MAX_VALUE: usize = 1 << 20;

#[path = "support/local_cluster.rs"]
mod local_cluster;

use local_cluster::LocalCluster;

/// A local cluster of `SHARDS` shards, with the key ring to pick keys of
/// chosen shards.
struct TestCluster {
    local: LocalCluster,
    ring: ShardRing,
}

impl std::ops::Deref for TestCluster {
    type Target = LocalCluster;
    fn deref(&self) -> &LocalCluster {
        &self.local
    }
}

impl std::ops::DerefMut for TestCluster {
    fn deref_mut(&mut self) -> &mut LocalCluster {
        &mut self.local
    }
}

impl TestCluster {
    async fn start(size: u64, server: ServerConfig) -> TestCluster {
        TestCluster::start_with(size, server, RuntimeConfig::default()).await
    }

    async fn start_with(size: u64, server: ServerConfig, runtime: RuntimeConfig) -> TestCluster {
        let local = LocalCluster::start(size, SHARDS, server, runtime).await;
        TestCluster { local, ring: ShardRing::new(SHARDS).unwrap() }
    }

    fn address(&self, id: NodeId) -> &str {
        &self.addresses[&id]
    }

    /// The client library, given `ids` as its endpoints.
    fn client(&self, ids: &[NodeId], options: ClientOptions) -> Client {
        Client::connect(ids.iter().map(|id| self.addresses[id].clone()).collect(), options).unwrap()
    }

    /// A node other than `leader` (every node hosts every shard).
    fn follower_of(&self, leader: NodeId) -> NodeId {
        *self.addresses.keys().find(|id| **id != leader).unwrap()
    }

    fn shard_of(&self, key: &[u8]) -> ShardId {
        ShardId(self.ring.shard_for_key(key))
    }

    /// A key starting with `prefix` in each of `shards`, in that order.
    fn keys_in(&self, prefix: &str, shards: &[ShardId]) -> Vec<String> {
        shards
            .iter()
            .map(|&shard| {
                (0..10_000)
                    .map(|i| format!("{prefix}{i}"))
                    .find(|key| self.shard_of(key.as_bytes()) == shard)
                    .expect("10,000 keys cover every shard")
            })
            .collect()
    }

    /// The node leading `shard`, asked of the running nodes (as
    /// tests/cluster.rs does: only a leader accepts a write; the others
    /// name the leader).
    async fn leader_of(&self, shard: ShardId) -> Option<NodeId> {
        for node in self.nodes.values() {
            let deadline = Instant::now() + Duration::from_secs(1);
            let write = Operation::Write(flotilla::kv::Command::Delete { key: b"\0leader-probe".to_vec() });
            match node.handle.call(shard, write, deadline).await {
                Ok(_) => return Some(node.handle.node_id()),
                Err(RequestError::NotLeader { leader: Some((leader, _)), .. }) => return Some(leader),
                Err(_) => continue,
            }
        }
        None
    }

    /// The leader of every shard, once each has one (bounded).
    async fn leaders(&self) -> BTreeMap<ShardId, NodeId> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut leaders = BTreeMap::new();
        for shard in (0..SHARDS).map(ShardId) {
            loop {
                if let Some(leader) = self.leader_of(shard).await {
                    leaders.insert(shard, leader);
                    break;
                }
                assert!(Instant::now() < deadline, "shard {shard} elected no leader in 20 s");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        leaders
    }

    /// Waits until every group on every running node has quiesced (its
    /// clock stopped because it is idle and fully replicated).
    async fn wait_until_quiesced(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let quiet = self.nodes.values().all(|node| {
                let stats = node.handle.stats();
                stats.groups_quiesced.load(Ordering::Relaxed) == stats.groups.load(Ordering::Relaxed)
            });
            if quiet {
                return;
            }
            assert!(Instant::now() < deadline, "the groups did not quiesce within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Client timeouts for a cluster expected to answer: generous in total
/// (elections on 2 busy cores), quick to back off and retry.
fn patient() -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_secs(2),
        total_timeout: Duration::from_secs(20),
        connect_timeout: Duration::from_secs(1),
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(100),
    }
}

/// Client timeouts for a scenario whose failure is the point: one attempt
/// may take `request`, the whole call `total`.
fn impatient(request: Duration, total: Duration) -> ClientOptions {
    ClientOptions { request_timeout: request, total_timeout: total, ..patient() }
}

/// Bounds a whole scenario, so a hang fails the test with its name.
async fn within<T>(limit: Duration, what: &str, future: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: not done within {limit:?}"),
    }
}

fn text(metadata: &MetadataMap, name: &str) -> Option<String> {
    metadata.get(name).map(|value| value.to_str().unwrap().to_owned())
}

fn put_request(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> PutRequest {
    PutRequest { key: key.into(), value: value.into() }
}

fn pairs(items: &[(&[u8], &[u8])]) -> Vec<(Vec<u8>, Vec<u8>)> {
    items.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect()
}

// ---------------------------------------------------------------------------
// One healthy cluster, several independent scenarios.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_cluster_serves_forwarding_reads_limits_scans_and_the_kv_command() {
    // Small scan pages, so that collecting a scan must page.
    let server = ServerConfig { scan_default_limit: 3, scan_max_limit: 4, ..ServerConfig::default() };
    let mut cluster = TestCluster::start(3, server).await;
    let client = cluster.client(&[NodeId(1), NodeId(2), NodeId(3)], patient());
    within(Duration::from_secs(25), "warm up", client.put("warm", "1")).await.unwrap();
    let leaders = within(Duration::from_secs(25), "find the leaders", cluster.leaders()).await;

    // First: the full scan below lists every key in the cluster.
    within(Duration::from_secs(20), "scans", scans_page_in_key_order_across_every_shard(&cluster)).await;
    within(Duration::from_secs(20), "forwarding", writes_at_a_follower_are_forwarded(&cluster, &leaders)).await;
    within(Duration::from_secs(20), "reads", reads_are_served_by_any_node(&cluster, &leaders)).await;
    within(Duration::from_secs(20), "limits", size_limits_are_refused_naming_the_limit(&cluster)).await;
    within(Duration::from_secs(20), "forwarded once", a_forwarded_write_is_not_forwarded_again(&cluster, &leaders))
        .await;
    within(Duration::from_secs(60), "kv command", the_kv_command_answers_with_its_exit_codes(&cluster)).await;
    cluster.stop_all().await;
}

/// With 4 nodes a node lacks some shards and asks another node for their
/// pages; every shard's page is cut at the byte budget, after however many
/// keys fit. Laid out so that shard S's page holds one large value (the
/// next, B, does not fit) while the merged page has room for many small
/// keys after it: a merge that took those would skip B for good. It must
/// keep only keys up to S's cut, and no page may exceed the budget by
/// more than one item.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_through_a_node_lacking_shards_page_by_bytes_without_losing_keys() {
    let server = ServerConfig { scan_max_bytes: 1000, ..ServerConfig::default() };
    let mut cluster = TestCluster::start(4, server).await;
    let lacking: Vec<ShardId> =
        (0..SHARDS).map(ShardId).filter(|&s| !cluster.nodes[&NodeId(1)].handle.hosts(s)).collect();
    let shard = *lacking.first().expect("with 4 nodes and 3 replicas node 1 lacks some shards");
    let big = |key: String| (key.into_bytes(), vec![b'B'; 600]);
    let small = |key: String| (key.into_bytes(), b"s".to_vec());
    let elsewhere = |prefix: &str| -> Vec<String> {
        (0..40).map(|i| format!("{prefix}{i:02}")).filter(|k| cluster.shard_of(k.as_bytes()) != shard).collect()
    };
    let mut expected = vec![big(cluster.keys_in("c/a-", &[shard]).remove(0))];
    expected.extend(elsewhere("c/b-").into_iter().take(5).map(small));
    expected.push(big(cluster.keys_in("c/c-", &[shard]).remove(0)));
    expected.extend(elsewhere("c/d-").into_iter().take(20).map(small));
    let client = cluster.client(&[NodeId(1)], patient());
    for (key, value) in &expected {
        within(Duration::from_secs(25), "put", client.put(key.clone(), value.clone())).await.unwrap();
    }
    let scanned = within(Duration::from_secs(25), "scan", client.scan("c/", 1000)).await.unwrap();
    let names = |pairs: &[(Vec<u8>, Vec<u8>)]| -> Vec<String> {
        pairs.iter().map(|(key, _)| String::from_utf8_lossy(key).into_owned()).collect()
    };
    assert_eq!(names(&scanned), names(&expected), "every key once, in order");
    assert!(scanned == expected, "and every value intact");
    let page = within(Duration::from_secs(25), "page", client.scan_page(b"c/".to_vec(), Vec::new(), 1000)).await;
    let page = page.unwrap();
    let bytes: usize = page.items.iter().map(|(key, value)| key.len() + value.len()).sum();
    assert!(page.more && bytes <= 1000, "a page holds the byte budget: {bytes} bytes");
    cluster.stop_all().await;
}

/// Keys hash to shards, so a prefix's keys are spread over all 16; pages
/// of at most 4 (the configured cap) must still come out in key order,
/// with `more` exactly when keys may follow.
async fn scans_page_in_key_order_across_every_shard(cluster: &TestCluster) {
    let client = cluster.client(&[NodeId(2)], patient());
    let mut expected = Vec::new();
    for i in 0..25 {
        let (key, value) = (format!("p/{i:02}"), format!("v{i}"));
        client.put(key.clone(), value.clone()).await.unwrap();
        expected.push((key.into_bytes(), value.into_bytes()));
    }
    let shards: std::collections::BTreeSet<ShardId> = expected.iter().map(|(k, _)| cluster.shard_of(k)).collect();
    assert!(shards.len() > 8, "the prefix spans many shards: {shards:?}");
    client.put("q", "other prefix").await.unwrap();
    // 0xff prefixes have no successor: the range is open-ended.
    let high: &[(&[u8], &[u8])] = &[(&[0xff], b"a"), (&[0xff, 0x00], b"b"), (&[0xff, 0xff, 0x01], b"c")];
    for (key, value) in high {
        client.put(key.to_vec(), value.to_vec()).await.unwrap();
    }
    client.put(vec![0xfe, 0xff], "below the 0xff prefix").await.unwrap();

    assert_eq!(client.scan("p/", 1000).await.unwrap(), expected);
    assert_eq!(client.scan("p/", 10).await.unwrap(), expected[..10]);
    assert_eq!(client.scan("p/0", 1000).await.unwrap(), expected[..10]);
    assert_eq!(client.scan([0xff], 1000).await.unwrap(), pairs(high));
    assert_eq!(client.scan("none/", 1000).await.unwrap(), vec![]);

    // Every key in the cluster: this scenario's and the warm-up key.
    let mut everything = expected.clone();
    everything.extend(pairs(&[(b"q", b"other prefix"), (b"warm", b"1"), (&[0xfe, 0xff], b"below the 0xff prefix")]));
    everything.extend(pairs(high));
    everything.sort();
    assert_eq!(client.scan("", 1000).await.unwrap(), everything);

    // Single pages: the default limit is 3, requests are capped at 4.
    let page = client.scan_page(b"p/".to_vec(), b"p/20".to_vec(), 0).await.unwrap();
    assert_eq!(page, ScanPage { items: expected[21..24].to_vec(), more: true });
    let page = client.scan_page(b"p/".to_vec(), Vec::new(), 100).await.unwrap();
    assert_eq!(page, ScanPage { items: expected[..4].to_vec(), more: true });
    let last = client.scan_page(b"p/".to_vec(), b"p/23".to_vec(), 10).await.unwrap();
    assert_eq!(last, ScanPage { items: expected[24..].to_vec(), more: false });
    let past = client.scan_page(b"p/".to_vec(), b"p/24".to_vec(), 10).await.unwrap();
    assert_eq!(past, ScanPage { items: vec![], more: false });
    let high_page = client.scan_page(vec![0xff], vec![0xff, 0x00], 10).await.unwrap();
    assert_eq!(high_page, ScanPage { items: pairs(&high[2..]), more: false });

    // The same pages over the wire, from each node: any node serves a scan.
    for id in [NodeId(1), NodeId(2), NodeId(3)] {
        let request = ScanRequest { prefix: b"p/".to_vec(), limit: 2, start_after: b"p/10".to_vec() };
        let response = cluster.raw(id).scan(request).await.unwrap();
        assert_eq!(text(response.metadata(), SHARDS_HEADER).as_deref(), Some("16"));
        let body = response.into_inner();
        let keys: Vec<Vec<u8>> = body.items.iter().map(|item| item.key.clone()).collect();
        assert_eq!(keys, vec![b"p/11".to_vec(), b"p/12".to_vec()], "node {id}");
        assert!(body.more);
    }
}

/// A write sent to a node that does not lead the key's shard is forwarded
/// to the leader, and the answer names the leader for the client to cache.
async fn writes_at_a_follower_are_forwarded(cluster: &TestCluster, leaders: &BTreeMap<ShardId, NodeId>) {
    // Leaders are not spread evenly (the first node started often wins
    // every election), so pick the shard first, then a follower of it.
    let shard = ShardId(0);
    let leader = leaders[&shard];
    let follower = cluster.follower_of(leader);
    let key = cluster.keys_in("fwd/", &[shard]).remove(0);

    let response = cluster.raw(follower).put(put_request(key.clone(), "v0")).await.unwrap();
    assert_eq!(text(response.metadata(), LEADER_HEADER).as_deref(), Some(cluster.address(leader)));
    assert_eq!(text(response.metadata(), SHARDS_HEADER).as_deref(), Some("16"));

    // Every kind of call through a client that only knows the follower.
    let client = cluster.client(&[follower], patient());
    client.put(key.clone(), "v1").await.unwrap();
    assert_eq!(client.get(key.clone()).await.unwrap(), Some(b"v1".to_vec()));
    let swapped = client.compare_and_swap(key.clone(), Some(b"v1".to_vec()), Some(b"v2".to_vec())).await.unwrap();
    assert_eq!(swapped, CasResult { succeeded: true, current: Some(b"v1".to_vec()) });
    let refused = client.compare_and_swap(key.clone(), None, Some(b"x".to_vec())).await.unwrap();
    assert_eq!(refused, CasResult { succeeded: false, current: Some(b"v2".to_vec()) });
    assert!(client.delete(key.clone()).await.unwrap());
    assert!(!client.delete(key.clone()).await.unwrap(), "deleting a missing key is not an error");
    assert_eq!(client.get(key.clone()).await.unwrap(), None);
    let created = client.compare_and_swap(key.clone(), None, Some(b"new".to_vec())).await.unwrap();
    assert_eq!(created, CasResult { succeeded: true, current: None });
    let removed = client.compare_and_swap(key.clone(), Some(b"new".to_vec()), None).await.unwrap();
    assert_eq!(removed, CasResult { succeeded: true, current: Some(b"new".to_vec()) });
    assert_eq!(client.get(key).await.unwrap(), None);
}

/// Linearizable reads are answered by every node (followers confirm with
/// the leader); stale reads by the replica asked. Neither claims to be the
/// leader unless it is one.
async fn reads_are_served_by_any_node(cluster: &TestCluster, leaders: &BTreeMap<ShardId, NodeId>) {
    let shard = ShardId(3);
    let leader = leaders[&shard];
    let key = cluster.keys_in("read/", &[shard]).remove(0);
    cluster.client(&[leader], patient()).put(key.clone(), "value").await.unwrap();
    for id in [NodeId(1), NodeId(2), NodeId(3)] {
        let client = cluster.client(&[id], patient());
        assert_eq!(client.get(key.clone()).await.unwrap(), Some(b"value".to_vec()), "node {id}");
        assert_eq!(client.get("read/missing").await.unwrap(), None, "node {id}");
        assert_eq!(client.get_stale("read/missing").await.unwrap(), None, "node {id}");

        let request = GetRequest { key: key.clone().into_bytes(), stale_ok: false };
        let response = cluster.raw(id).get(request).await.unwrap();
        let named = text(response.metadata(), LEADER_HEADER);
        assert_eq!(response.into_inner().value, b"value");
        // No read names a leader: a follower serves a linearizable read
        // itself (ReadIndex), and naming the node that answered would let
        // the client cache a follower and send the shard's writes there.
        assert_eq!(named, None, "node {id} answered a read of shard {shard} led by node {leader}");
    }
    // A follower applies the write shortly after the leader: a stale read
    // there shows it within a bound.
    for id in [NodeId(1), NodeId(2), NodeId(3)] {
        let client = cluster.client(&[id], patient());
        let deadline = Instant::now() + Duration::from_secs(5);
        while client.get_stale(key.clone()).await.unwrap() != Some(b"value".to_vec()) {
            assert!(Instant::now() < deadline, "node {id} never applied {key}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Oversized or empty keys and values are refused at once with
/// INVALID_ARGUMENT naming the limit; exactly at the limit is accepted.
async fn size_limits_are_refused_naming_the_limit(cluster: &TestCluster) {
    let client = cluster.client(&[NodeId(1), NodeId(2), NodeId(3)], patient());
    let long_key = vec![b'k'; MAX_KEY + 1];
    let big = vec![7u8; MAX_VALUE + 1];
    let invalid = |message: &str| ClientError::InvalidArgument(message.to_owned());
    let key_message = "key is 4097 bytes; the limit is 4096 bytes";
    let value_message = |what: &str| format!("{what} is 1048577 bytes; the limit is 1048576 bytes");

    assert_eq!(client.put("", "v").await.unwrap_err(), invalid("key is empty"));
    assert_eq!(client.get("").await.unwrap_err(), invalid("key is empty"));
    assert_eq!(client.delete("").await.unwrap_err(), invalid("key is empty"));
    assert_eq!(client.put(long_key.clone(), "v").await.unwrap_err(), invalid(key_message));
    assert_eq!(client.get_stale(long_key.clone()).await.unwrap_err(), invalid(key_message));
    assert_eq!(client.put("lim/k", big.clone()).await.unwrap_err(), invalid(&value_message("value")));
    let error = client.compare_and_swap("lim/k", Some(big.clone()), None).await.unwrap_err();
    assert_eq!(error, invalid(&value_message("expected value")));
    let error = client.compare_and_swap("lim/k", None, Some(big.clone())).await.unwrap_err();
    assert_eq!(error, invalid(&value_message("new value")));
    let error = client.scan(long_key.clone(), 10).await.unwrap_err();
    assert_eq!(error, invalid("prefix is 4097 bytes; the limit is 4096 bytes"));

    // Over the wire: the status code, and the ring size even on an error.
    let status = cluster.raw(NodeId(2)).put(put_request(long_key, "v")).await.unwrap_err();
    assert_eq!((status.code(), status.message()), (Code::InvalidArgument, key_message));
    assert_eq!(text(status.metadata(), SHARDS_HEADER).as_deref(), Some("16"));
    let request = CompareAndSwapRequest { key: b"lim/k".to_vec(), expected: None, new_value: Some(big) };
    let status = cluster.raw(NodeId(3)).compare_and_swap(request).await.unwrap_err();
    assert_eq!((status.code(), status.message()), (Code::InvalidArgument, value_message("new value").as_str()));

    // Exactly at the limits is fine, and the nodes keep serving.
    let key = vec![b'k'; MAX_KEY];
    let value = vec![9u8; MAX_VALUE];
    client.put(key.clone(), value.clone()).await.unwrap();
    assert_eq!(client.get(key).await.unwrap(), Some(value));
    client.put("lim/after", "ok").await.unwrap();
    assert_eq!(client.get("lim/after").await.unwrap(), Some(b"ok".to_vec()));
}

/// A request another node already forwarded is never forwarded again, so
/// forwarding cannot loop: a follower refuses it naming the leader.
async fn a_forwarded_write_is_not_forwarded_again(cluster: &TestCluster, leaders: &BTreeMap<ShardId, NodeId>) {
    let shard = ShardId(1);
    let leader = leaders[&shard];
    let follower = cluster.follower_of(leader);
    let key = cluster.keys_in("once/", &[shard]).remove(0);
    cluster.client(&[leader], patient()).put(key.clone(), "before").await.unwrap();

    let mut request = tonic::Request::new(put_request(key.clone(), "after"));
    request.metadata_mut().insert(FORWARDED_HEADER, MetadataValue::from_static("1"));
    let status = cluster.raw(follower).put(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains(&format!("node {follower} does not lead shard {shard}")), "{status:?}");
    assert_eq!(text(status.metadata(), LEADER_HEADER).as_deref(), Some(cluster.address(leader)));
    assert_eq!(text(status.metadata(), SHARDS_HEADER).as_deref(), Some("16"));
    // Refused, not applied.
    let client = cluster.client(&[leader], patient());
    assert_eq!(client.get(key.clone()).await.unwrap(), Some(b"before".to_vec()));
    // The same request without the mark is forwarded and applied.
    cluster.raw(follower).put(put_request(key.clone(), "after")).await.unwrap();
    assert_eq!(client.get(key).await.unwrap(), Some(b"after".to_vec()));
}

#[derive(Parser)]
struct KvCommandLine {
    #[command(flatten)]
    kv: KvArgs,
}

/// `flotilla kv` as the binary runs it: parsed arguments, real cluster,
/// documented exit codes (0 done, 1 "no", 2 invalid argument).
async fn the_kv_command_answers_with_its_exit_codes(cluster: &TestCluster) {
    let endpoints: Vec<&str> = cluster.addresses.values().map(String::as_str).collect();
    let endpoints = endpoints.join(",");
    let kv = |args: &[&str]| {
        let line = ["kv", "--endpoints", endpoints.as_str()].into_iter().chain(args.iter().copied());
        let args = KvCommandLine::try_parse_from(line).unwrap().kv;
        async move { run_kv(args).await.unwrap() }
    };
    let client = cluster.client(&[NodeId(3)], patient());
    assert_eq!(kv(&["put", "cli/a", "1"]).await, ExitCode::SUCCESS);
    assert_eq!(client.get("cli/a").await.unwrap(), Some(b"1".to_vec()), "the put was applied");
    assert_eq!(kv(&["get", "cli/a"]).await, ExitCode::SUCCESS);
    assert_eq!(kv(&["get", "cli/a", "--stale"]).await, ExitCode::SUCCESS);
    assert_eq!(kv(&["get", "cli/missing"]).await, ExitCode::from(1));
    assert_eq!(kv(&["cas", "cli/a", "--expected", "0", "--new", "2"]).await, ExitCode::from(1));
    assert_eq!(client.get("cli/a").await.unwrap(), Some(b"1".to_vec()), "a failed cas changes nothing");
    assert_eq!(kv(&["cas", "cli/a", "--expected", "1", "--new", "2"]).await, ExitCode::SUCCESS);
    assert_eq!(client.get("cli/a").await.unwrap(), Some(b"2".to_vec()));
    assert_eq!(kv(&["scan", "--prefix", "cli/"]).await, ExitCode::SUCCESS);
    assert_eq!(kv(&["delete", "cli/a"]).await, ExitCode::SUCCESS);
    assert_eq!(client.get("cli/a").await.unwrap(), None);
    assert_eq!(kv(&["get", "cli/a"]).await, ExitCode::from(1));
    let long_key = "k".repeat(MAX_KEY + 1);
    assert_eq!(kv(&["put", long_key.as_str(), "v"]).await, ExitCode::from(2));
    assert_eq!(kv(&["get", ""]).await, ExitCode::from(2));
}

// ---------------------------------------------------------------------------
// Nodes stop: the client's leader cache and its retries.
// ---------------------------------------------------------------------------

/// The client learns a shard's leader from a forwarded answer and then goes
/// there directly, even once the node it was given is down; when that
/// leader stops, its put keeps retrying until a new leader is elected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_caches_the_leader_and_retries_a_put_through_a_leader_failover() {
    let mut cluster = TestCluster::start(3, ServerConfig::default()).await;
    let all = [NodeId(1), NodeId(2), NodeId(3)];
    within(Duration::from_secs(25), "warm up", cluster.client(&all, patient()).put("warm", "1")).await.unwrap();
    let leaders = within(Duration::from_secs(25), "find the leaders", cluster.leaders()).await;
    let shard = ShardId(0);
    let leader = leaders[&shard];
    let given = cluster.follower_of(leader);
    let key = cluster.keys_in("cache/", &[shard]).remove(0);

    // Only a follower of the shard is given.
    let client = cluster.client(&[given], impatient(Duration::from_secs(1), Duration::from_secs(15)));
    within(Duration::from_secs(5), "forwarded put", client.put(key.clone(), "v1")).await.unwrap();
    cluster.stop_node(given).await;
    // That node is gone: these succeed only by going to the cached leader.
    let cached = async {
        assert_eq!(client.get(key.clone()).await.unwrap(), Some(b"v1".to_vec()));
        let swapped = client.compare_and_swap(key.clone(), Some(b"v1".to_vec()), Some(b"v2".to_vec())).await;
        assert_eq!(swapped.unwrap(), CasResult { succeeded: true, current: Some(b"v1".to_vec()) });
        assert!(client.delete(key.clone()).await.unwrap());
        client.put(key.clone(), "v3").await.unwrap();
    };
    within(Duration::from_secs(10), "calls to the cached leader", cached).await;
    // The control: a client without that cache reaches nothing.
    let fresh = cluster.client(&[given], impatient(Duration::from_secs(1), Duration::from_secs(1)));
    let error = within(Duration::from_secs(5), "uncached get", fresh.get(key.clone())).await.unwrap_err();
    assert!(matches!(&error, ClientError::Unavailable { last, .. } if last.contains("could not connect")), "{error}");

    // The leader stops; the given node is back. The put first fails at the
    // cached leader (refused connection: nothing sent, so retried), then
    // goes to the given node, meeting "no leader" or a forward to the dead leader until the
    // shard elects a new one.
    cluster.restart_node(given).await;
    cluster.stop_node(leader).await;
    let started = Instant::now();
    within(Duration::from_secs(20), "put through failover", client.put(key.clone(), "v4")).await.unwrap();
    let took = started.elapsed();
    assert_eq!(client.get(key.clone()).await.unwrap(), Some(b"v4".to_vec()), "written in {took:?}");
    // A write's answer names the new leader: a running node, not the old one.
    let response = cluster.raw(given).put(put_request(key.clone(), "v5")).await.unwrap();
    let named = text(response.metadata(), LEADER_HEADER).expect("a write names its leader");
    let running: Vec<&str> = cluster.nodes.keys().map(|id| cluster.address(*id)).collect();
    assert!(running.contains(&named.as_str()) && named != cluster.address(leader), "{named}");
    cluster.stop_all().await;
}

/// With two of three nodes down the survivor cannot commit. Writes it
/// proposes while it still leads (check-quorum steps it down one election
/// timeout after it notices) have unknown outcomes: a put reports that
/// after retrying to the end, a compare-and-swap at once, never sent again;
/// a short gRPC deadline gets the server's own "outcome unknown". Stale
/// reads are still served locally; nothing else is. Restarted, the cluster
/// serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_quorum_writes_end_as_outcome_unknown_and_the_cluster_recovers() {
    // An election timeout of 1 s (50 ticks of 20 ms) instead of 200 ms: the
    // window in which the survivor still leads after losing its quorum,
    // long enough to send three writes into on 2 busy cores.
    let runtime = RuntimeConfig { election_timeout_ticks: 50, ..RuntimeConfig::default() };
    let mut cluster = TestCluster::start_with(3, ServerConfig::default(), runtime).await;
    let all = [NodeId(1), NodeId(2), NodeId(3)];
    let client = cluster.client(&all, patient());
    within(Duration::from_secs(25), "warm up", client.put("warm", "1")).await.unwrap();
    let leaders = within(Duration::from_secs(25), "find the leaders", cluster.leaders()).await;
    // The survivor: the node leading the most shards (at least 6 of 16).
    let survivor = *all.iter().max_by_key(|id| leaders.values().filter(|l| l == id).count()).unwrap();
    let led: Vec<ShardId> = leaders.iter().filter(|(_, l)| **l == survivor).map(|(s, _)| *s).collect();
    assert!(led.len() >= 6, "{leaders:?}");
    // One shard the survivor leads for each write (their leaders must not
    // have stepped down because of another write).
    let [cas_key, put_key, raw_key]: [String; 3] = cluster.keys_in("lost/", &led[..3]).try_into().unwrap();
    // Another key of the compare-and-swap's shard, which is leaderless
    // once its leader stepped down.
    let orphan_key = cluster.keys_in("orphan/", &led[..1]).remove(0);
    within(Duration::from_secs(10), "seed", async {
        client.put(cas_key.clone(), "old").await.unwrap();
        client.put(orphan_key.clone(), "kept").await.unwrap();
    })
    .await;
    // Idle groups quiesce. A quiesced leader's election clock restarts when
    // it wakes (when the survivor sees its quorum gone, or at the first
    // write), so each keeps its role a full election timeout after that.
    cluster.wait_until_quiesced().await;
    let others: Vec<NodeId> = all.iter().copied().filter(|id| *id != survivor).collect();
    for &id in &others {
        cluster.stop_node(id).await;
    }

    // Three writes at once, each proposed by a leader that cannot commit.
    let request_timeout = Duration::from_millis(1500);
    let cas_client = cluster.client(&[survivor], impatient(request_timeout, Duration::from_secs(10)));
    let put_client = cluster.client(&[survivor], impatient(request_timeout, Duration::from_millis(3500)));
    let grpc_timeout = Duration::from_millis(1200);
    let mut raw = cluster.raw(survivor);
    let started = Instant::now();
    let cas = async {
        let cas = cas_client.compare_and_swap(cas_key.clone(), Some(b"old".to_vec()), Some(b"new".to_vec()));
        (cas.await, started.elapsed())
    };
    let put = put_client.put(put_key.clone(), "x");
    let raw_put = async {
        let mut request = tonic::Request::new(put_request(raw_key.clone(), "x"));
        request.set_timeout(grpc_timeout);
        (raw.put(request).await, started.elapsed())
    };
    let ((cas, cas_took), put, (raw_put, raw_took)) =
        within(Duration::from_secs(15), "writes without a quorum", async { tokio::join!(cas, put, raw_put) }).await;

    // Compare-and-swap: its one attempt ends at the deadline as "outcome
    // unknown" and is not sent again (a retry would meet "no leader" once
    // the leader stepped down, until the 10 s total timeout).
    match cas {
        Err(ClientError::OutcomeUnknown(message)) => {
            assert!(message.contains("outcome unknown"), "{message}");
            assert!(!message.contains("gave up after"), "one attempt, not a retry loop: {message}");
        }
        other => panic!("compare-and-swap: expected OutcomeUnknown, got {other:?}"),
    }
    assert!(cas_took < request_timeout + Duration::from_millis(700), "answered after {cas_took:?}");

    // Put: sent again after the unknown outcome (a put is idempotent by
    // value); the retries fail until the total timeout, and the call says
    // that an attempt may have been applied.
    match put {
        Err(ClientError::OutcomeUnknown(message)) => {
            assert!(message.contains("may have been applied"), "{message}");
            let attempts = message.strip_prefix("gave up after ").and_then(|m| m.split(' ').next());
            let attempts: u32 = attempts.and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{message}"));
            assert!(attempts > 1, "the put was sent again: {message}");
        }
        other => panic!("put: expected OutcomeUnknown, got {other:?}"),
    }

    // The wire: the server answers before the caller's grpc-timeout (its
    // status carries flotilla-shards; tonic's own timeout would be a bare
    // CANCELLED).
    let status = raw_put.unwrap_err();
    assert!(raw_took < grpc_timeout, "answered after {raw_took:?}");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("outcome unknown"), "{status:?}");
    assert_eq!(text(status.metadata(), SHARDS_HEADER).as_deref(), Some("16"));

    // The compare-and-swap's shard has no leader now: a write there is
    // never proposed, so retrying to the end is plainly "unavailable".
    let orphan = cluster.client(&[survivor], impatient(request_timeout, Duration::from_millis(1500)));
    let error = within(Duration::from_secs(5), "orphan put", orphan.put(orphan_key.clone(), "y")).await.unwrap_err();
    match &error {
        ClientError::Unavailable { attempts, last, .. } => {
            assert!(*attempts > 1, "retried: {error}");
            assert!(last.contains("has no leader yet"), "{last}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(error.is_retryable());
    let error = within(Duration::from_secs(5), "orphan get", orphan.get(orphan_key.clone())).await.unwrap_err();
    assert!(matches!(error, ClientError::Unavailable { .. }), "{error:?}");
    // A stale read needs no leader: the survivor answers from its replica,
    // where the compare-and-swap was appended but never applied.
    let stale = within(Duration::from_secs(5), "stale get", orphan.get_stale(orphan_key.clone())).await;
    assert_eq!(stale.unwrap(), Some(b"kept".to_vec()));
    let stale = within(Duration::from_secs(5), "stale get", orphan.get_stale(cas_key.clone())).await;
    assert_eq!(stale.unwrap(), Some(b"old".to_vec()));
    // A scan must read every shard; the failure names the one it could not.
    let error = within(Duration::from_secs(5), "scan", orphan.scan("lost/", 10)).await.unwrap_err();
    match &error {
        ClientError::Unavailable { last, .. } => assert!(last.starts_with("scan of shard "), "{last}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }

    // Back to three nodes: the cluster serves again, and what was written
    // before is there. The compare-and-swap's fate was decided either way.
    for &id in &others {
        cluster.restart_node(id).await;
    }
    let recovered = async {
        client.put("lost/after", "1").await.unwrap();
        assert_eq!(client.get("lost/after").await.unwrap(), Some(b"1".to_vec()));
        assert_eq!(client.get(orphan_key.clone()).await.unwrap(), Some(b"kept".to_vec()));
        let swapped = client.get(cas_key.clone()).await.unwrap();
        assert!(swapped == Some(b"old".to_vec()) || swapped == Some(b"new".to_vec()), "{swapped:?}");
    };
    within(Duration::from_secs(25), "recovery", recovered).await;
    cluster.stop_all().await;
}

// ---------------------------------------------------------------------------
// More nodes than replicas: shards a node does not host.
// ---------------------------------------------------------------------------

/// With four nodes each shard has three replicas, so some node holds none
/// of a shard: it forwards that shard's requests to a node that does
/// (once), and reads those shards' part of a scan from such a node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_forwards_requests_for_shards_it_does_not_host() {
    let mut cluster = TestCluster::start(4, ServerConfig::default()).await;
    let all = [NodeId(1), NodeId(2), NodeId(3), NodeId(4)];
    within(Duration::from_secs(25), "warm up", cluster.client(&all, patient()).put("warm", "1")).await.unwrap();
    let outsider = NodeId(1);
    let handle = cluster.nodes[&outsider].handle.clone();
    let shard = (0..SHARDS).map(ShardId).find(|s| !handle.hosts(*s)).expect("node 1 hosts 12 of 16 shards");
    assert_eq!(handle.replicas(shard).len(), 3);
    let key = cluster.keys_in("away/", &[shard]).remove(0);

    let work = async {
        let client = cluster.client(&[outsider], patient());
        client.put(key.clone(), "v").await.unwrap();
        assert_eq!(client.get(key.clone()).await.unwrap(), Some(b"v".to_vec()));
        // Over the wire, to node 1 alone: a linearizable read is served by
        // whichever replica it is forwarded to.
        let request = GetRequest { key: key.clone().into_bytes(), stale_ok: false };
        let response = cluster.raw(outsider).get(request).await.unwrap().into_inner();
        assert_eq!(response.value, b"v");
    };
    within(Duration::from_secs(25), "forwarded calls", work).await;

    let mut request = tonic::Request::new(put_request(key.clone(), "w"));
    request.metadata_mut().insert(FORWARDED_HEADER, MetadataValue::from_static("1"));
    let status = cluster.raw(outsider).put(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let expected = format!("node 1 holds no replica of shard {shard}; the request was already forwarded once");
    assert_eq!(status.message(), expected);

    // A scan through node 1 reads the shards it does not host from nodes
    // that do (each such shard's page forwarded once, scoped to the shard).
    let keys = cluster.keys_in("every/", &(0..SHARDS).map(ShardId).collect::<Vec<_>>());
    let writes = async {
        let client = cluster.client(&all, patient());
        for key in &keys {
            client.put(key.clone(), "x").await.unwrap();
        }
    };
    within(Duration::from_secs(25), "a key in every shard", writes).await;
    let request = ScanRequest { prefix: b"every/".to_vec(), ..ScanRequest::default() };
    let scanned = cluster.raw(outsider).scan(request).await.unwrap().into_inner();
    let mut expected = keys.clone();
    expected.sort();
    let found: Vec<String> = scanned.items.iter().map(|i| String::from_utf8(i.key.clone()).unwrap()).collect();
    assert_eq!(found, expected, "every shard's key, through a node that hosts only some shards");
    // A scan already forwarded is not forwarded again.
    let mut request = tonic::Request::new(ScanRequest::default());
    request.metadata_mut().insert(FORWARDED_HEADER, MetadataValue::from_static("1"));
    let status = cluster.raw(outsider).scan(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("already forwarded once"), "{status:?}");
    cluster.stop_all().await;
}
