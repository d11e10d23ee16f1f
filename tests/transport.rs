//! The peer transport over real tonic servers on 127.0.0.1: batches both
//! ways in per-group order, peer down/up across a restart on the same port,
//! queue-full and backpressure, snapshots delivered / refused / aborted /
//! oversize (never leaving temp files), garbage on the port and malformed
//! peers closing only their own stream. Nothing of ours is mocked; a raw
//! generated client stands in for a misbehaving peer.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use flotilla::kv::{apply_entries, encode_command, Command};
use flotilla::proto::raft_transport_client::RaftTransportClient;
use flotilla::proto::{self as wire, MessageBatch, SnapshotChunk};
use flotilla::raft::{ConfState, Entry, GroupId, LogIndex, Message, MessageKind, NodeId, Snapshot, Term};
use flotilla::storage::snapshot::{SnapshotDir, SnapshotFile};
use flotilla::storage::{Engine, GroupStorage, StorageBatch, StorageConfig};
use flotilla::transport::{codec, Transport, TransportConfig, TransportError, TransportEvent};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};

const WAIT: Duration = Duration::from_secs(20);

fn config(id: u64) -> TransportConfig {
    TransportConfig {
        node_id: NodeId(id),
        reconnect_min: Duration::from_millis(20),
        reconnect_max: Duration::from_millis(200),
        snapshot_chunk_timeout: Duration::from_secs(5),
        ..TransportConfig::default()
    }
}

/// One node's transport, its gRPC server and its event channel.
struct TestNode {
    addr: SocketAddr,
    transport: Transport,
    events: mpsc::Receiver<TransportEvent>,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
    snapshots: Arc<SnapshotDir>,
    dir: tempfile::TempDir,
}

impl TestNode {
    async fn start(config: TransportConfig, listener: TcpListener, peers: HashMap<NodeId, String>) -> TestNode {
        TestNode::start_with(config, listener, peers, 64).await
    }

    async fn start_with(
        config: TransportConfig,
        listener: TcpListener,
        peers: HashMap<NodeId, String>,
        event_capacity: usize,
    ) -> TestNode {
        // Logs show in a failing test's output (RUST_LOG filters them).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let snapshots = Arc::new(SnapshotDir::open(&dir.path().join("snap")).unwrap());
        let (events_tx, events) = mpsc::channel(event_capacity);
        let (stop, stop_rx) = watch::channel(false);
        let transport = Transport::new(config, peers, snapshots.clone(), events_tx, stop_rx.clone());
        let addr = listener.local_addr().unwrap();
        let service = transport.service();
        let mut signal = stop_rx;
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                    let _ = signal.wait_for(|s| *s).await;
                })
                .await
                .unwrap();
        });
        TestNode { addr, transport, events, stop, server, snapshots, dir }
    }

    /// Stops the transport and the server; the server must finish (inbound
    /// streams end on shutdown, so graceful shutdown completes).
    async fn stop(self) -> tempfile::TempDir {
        self.stop.send(true).unwrap();
        timeout(WAIT, self.server).await.expect("the server stops").unwrap();
        self.dir
    }

    /// The next event other than `Batch`es (which are checked elsewhere).
    async fn next_event(&mut self) -> TransportEvent {
        timeout(WAIT, self.events.recv()).await.expect("an event in time").expect("channel open")
    }

    /// Receives batches until `count` messages came; other events are kept
    /// out of the way (returned second).
    async fn messages(&mut self, from: NodeId, count: usize) -> (Vec<(GroupId, Message)>, Vec<TransportEvent>) {
        let mut messages = Vec::new();
        let mut others = Vec::new();
        while messages.len() < count {
            match self.next_event().await {
                TransportEvent::Batch { from: sender, messages: batch } => {
                    assert_eq!(sender, from);
                    messages.extend(batch);
                }
                other => others.push(other),
            }
        }
        assert_eq!(messages.len(), count);
        (messages, others)
    }

    async fn expect_peer(&mut self, up: bool, node: NodeId) {
        loop {
            match self.next_event().await {
                TransportEvent::PeerUp(n) if up && n == node => return,
                TransportEvent::PeerDown(n) if !up && n == node => return,
                TransportEvent::PeerUp(n) | TransportEvent::PeerDown(n) if n == node => {
                    panic!("unexpected liveness event for node {n} (waiting for up={up})")
                }
                _ => {}
            }
        }
    }
}

async fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// Two nodes that know each other.
async fn pair(config1: TransportConfig, config2: TransportConfig) -> (TestNode, TestNode) {
    let (l1, l2) = (listener().await, listener().await);
    let (a1, a2) = (l1.local_addr().unwrap().to_string(), l2.local_addr().unwrap().to_string());
    let n1 = TestNode::start(config1, l1, HashMap::from([(NodeId(2), a2)])).await;
    let n2 = TestNode::start(config2, l2, HashMap::from([(NodeId(1), a1)])).await;
    (n1, n2)
}

fn append(from: u64, to: u64, group_seq: u64) -> Message {
    let mut m = Message::new(MessageKind::AppendEntries, NodeId(from), NodeId(to), Term(3));
    m.index = LogIndex(group_seq);
    m.log_term = Term(3);
    m.entries = vec![Entry::new_normal(Term(3), LogIndex(group_seq + 1), group_seq.to_be_bytes().to_vec())];
    m
}

fn heartbeat(from: u64, to: u64, tick: u64) -> Message {
    let mut m = Message::new(MessageKind::Heartbeat, NodeId(from), NodeId(to), Term(3));
    m.lease_tick = tick;
    m.context = tick.to_be_bytes().to_vec();
    m
}

/// `turns` turns of traffic over `groups` groups (group 0 included):
/// appends with a per-group sequence and trailing heartbeats.
fn traffic(from: u64, to: u64, turns: u64, groups: u64) -> Vec<Vec<(GroupId, Message)>> {
    let mut seq = vec![0u64; groups as usize];
    (0..turns)
        .map(|turn| {
            let mut out = Vec::new();
            for g in 0..groups {
                if (turn + g) % 3 != 0 {
                    seq[g as usize] += 1;
                    out.push((GroupId(g), append(from, to, seq[g as usize])));
                }
                out.push((GroupId(g), heartbeat(from, to, turn)));
            }
            out
        })
        .collect()
}

fn per_group(messages: &[(GroupId, Message)]) -> BTreeMap<GroupId, Vec<Message>> {
    let mut out: BTreeMap<GroupId, Vec<Message>> = BTreeMap::new();
    for (g, m) in messages {
        out.entry(*g).or_default().push(m.clone());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_flow_both_ways_in_group_order() {
    let (mut n1, mut n2) = pair(config(1), config(2)).await;
    // Sent before either stream is up: queued, not lost.
    let forward = traffic(1, 2, 200, 7);
    let backward = traffic(2, 1, 150, 4);
    for turn in &forward {
        n1.transport.send(NodeId(2), turn.clone()).unwrap();
    }
    for turn in &backward {
        n2.transport.send(NodeId(1), turn.clone()).unwrap();
    }
    let sent_forward: Vec<_> = forward.concat();
    let sent_backward: Vec<_> = backward.concat();
    let (got, _) = n2.messages(NodeId(1), sent_forward.len()).await;
    assert_eq!(per_group(&got), per_group(&sent_forward));
    let (got, _) = n1.messages(NodeId(2), sent_backward.len()).await;
    assert_eq!(per_group(&got), per_group(&sent_backward));
    assert!(n1.transport.is_peer_up(NodeId(2)) && n2.transport.is_peer_up(NodeId(1)));
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_peer_is_down_once_and_up_once_after_restarting_on_its_port() {
    let (mut n1, n2) = pair(config(1), config(2)).await;
    n1.expect_peer(true, NodeId(2)).await;
    let addr2 = n2.addr;
    let dir2 = n2.stop().await;
    n1.expect_peer(false, NodeId(2)).await;
    assert!(!n1.transport.is_peer_up(NodeId(2)));
    // While down, sends are dropped (not queued, not an error).
    for turn in traffic(1, 2, 50, 2) {
        n1.transport.send(NodeId(2), turn).unwrap();
    }
    // Several reconnect attempts fail meanwhile: still only one PeerDown.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(n1.events.try_recv().is_err(), "no second PeerDown during one outage");
    drop(dir2);
    let relisten = TcpListener::bind(addr2).await.expect("the same port again");
    let mut n2 = TestNode::start(config(2), relisten, HashMap::from([(NodeId(1), n1.addr.to_string())])).await;
    n1.expect_peer(true, NodeId(2)).await;
    assert!(n1.transport.is_peer_up(NodeId(2)));
    let turn = vec![(GroupId(4), append(1, 2, 9))];
    n1.transport.send(NodeId(2), turn.clone()).unwrap();
    let (got, _) = n2.messages(NodeId(1), 1).await;
    assert_eq!(got, turn, "only the batch sent after the recovery arrives");
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_reported_and_unknown_peers_refused() {
    // A port that accepts connections and never speaks: the stream cannot
    // open, so nothing leaves the peer's queue.
    let silent = listener().await;
    let silent_addr = silent.local_addr().unwrap().to_string();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let config = TransportConfig { peer_queue_batches: 2, ..config(1) };
    let n1 = TestNode::start(config, listener().await, HashMap::from([(NodeId(9), silent_addr)])).await;
    let turn = vec![(GroupId(1), heartbeat(1, 9, 1))];
    n1.transport.send(NodeId(9), turn.clone()).unwrap();
    n1.transport.send(NodeId(9), turn.clone()).unwrap();
    match n1.transport.send(NodeId(9), turn.clone()) {
        Err(TransportError::QueueFull { peer }) => assert_eq!(peer, NodeId(9)),
        other => panic!("expected QueueFull, got {other:?}"),
    }
    match n1.transport.send(NodeId(7), turn) {
        Err(TransportError::UnknownPeer { peer }) => assert_eq!(peer, NodeId(7)),
        other => panic!("expected UnknownPeer, got {other:?}"),
    }
    n1.stop().await;
    holder.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_event_loop_pushes_back_to_the_sender_without_loss() {
    let (l1, l2) = (listener().await, listener().await);
    let a2 = l2.local_addr().unwrap().to_string();
    let queue = TransportConfig { peer_queue_batches: 4, ..config(1) };
    let mut n1 = TestNode::start(queue, l1, HashMap::from([(NodeId(2), a2)])).await;
    // The receiver's loop takes one event and then does not read.
    let mut n2 = TestNode::start_with(config(2), l2, HashMap::new(), 1).await;
    n1.expect_peer(true, NodeId(2)).await;
    let mut sent = Vec::new();
    let mut full = false;
    for i in 0..20_000u64 {
        let mut m = append(1, 2, i + 1);
        m.entries[0] = Entry::new_normal(Term(3), LogIndex(i + 2), vec![7; 64 << 10]);
        match n1.transport.send(NodeId(2), vec![(GroupId(1), m.clone())]) {
            Ok(()) => sent.push((GroupId(1), m)),
            Err(TransportError::QueueFull { .. }) => {
                full = true;
                break;
            }
            Err(other) => panic!("{other}"),
        }
        if i % 4 == 3 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    assert!(full, "a stalled receiver must eventually fill the sender's queue");
    assert!(sent.len() < 20_000);
    // Once the loop reads again, everything accepted arrives, in order.
    let (got, _) = n2.messages(NodeId(1), sent.len()).await;
    assert_eq!(got, sent);
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_address_reconnects_the_stream() {
    let closed = listener().await;
    let dead_addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let (l1, l2) = (listener().await, listener().await);
    let a2 = l2.local_addr().unwrap().to_string();
    let mut n1 = TestNode::start(config(1), l1, HashMap::from([(NodeId(2), dead_addr)])).await;
    let mut n2 = TestNode::start(config(2), l2, HashMap::new()).await;
    n1.expect_peer(false, NodeId(2)).await;
    n1.transport.set_peer(NodeId(2), a2);
    n1.expect_peer(true, NodeId(2)).await;
    let turn = vec![(GroupId(0), heartbeat(1, 2, 5))];
    n1.transport.send(NodeId(2), turn.clone()).unwrap();
    assert_eq!(n2.messages(NodeId(1), 1).await.0, turn);
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_port_does_not_hurt_the_node() {
    use tokio::io::AsyncWriteExt;
    let (n1, mut n2) = pair(config(1), config(2)).await;
    for garbage in [&b"\x00\xff\x13garbage that is not http/2 at all\r\n\r\n"[..], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"]
    {
        // The server may hang up mid-write: write errors are expected.
        let mut raw = tokio::net::TcpStream::connect(n2.addr).await.unwrap();
        let _ = raw.write_all(garbage).await;
        let _ = raw.write_all(&[0xAB; 4096]).await;
        let _ = raw.shutdown().await;
    }
    // A valid HTTP/2 preface followed by nonsense frames.
    let mut raw = tokio::net::TcpStream::connect(n2.addr).await.unwrap();
    let _ = raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x04\x99\x00\x00\x00\x00\x01junk").await;
    drop(raw);
    let turn = vec![(GroupId(3), append(1, 2, 1))];
    n1.transport.send(NodeId(2), turn.clone()).unwrap();
    assert_eq!(n2.messages(NodeId(1), 1).await.0, turn);
    assert!(!n2.server.is_finished());
    n1.stop().await;
    n2.stop().await;
}

/// Opens a raw stream to `addr` (a misbehaving peer) and sends `batches`;
/// returns how the server ended the response half.
async fn raw_stream(addr: SocketAddr, batches: Vec<MessageBatch>) -> Option<tonic::Status> {
    let mut client = RaftTransportClient::connect(format!("http://{addr}")).await.unwrap();
    let (tx, rx) = mpsc::channel(batches.len().max(1));
    for batch in batches {
        tx.send(batch).await.unwrap();
    }
    let mut responses = client.stream(ReceiverStream::new(rx)).await.unwrap().into_inner();
    let ended = timeout(WAIT, responses.message()).await.expect("the server ends a refused stream");
    drop(tx);
    ended.err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_peer_loses_only_its_own_stream() {
    let (n1, mut n2) = pair(config(1), config(2)).await;
    let ok = |from: u64| codec::to_proto(NodeId(from), NodeId(2), vec![(GroupId(8), append(from, 2, 1))]);
    let claims_other = ok(4);
    let cases = vec![
        (vec![ok(3), claims_other], "now claims to come from node 4"),
        (vec![MessageBatch { from_node: 2, ..Default::default() }], "which is this node"),
        (vec![MessageBatch { from_node: 0, ..Default::default() }], "from_node 0"),
        (
            vec![codec::to_proto(NodeId(3), NodeId(2), vec![(GroupId(8), append(3, 5, 1))])],
            "a message to node 5, but this is node 2",
        ),
        (
            vec![MessageBatch {
                from_node: 3,
                messages: vec![wire::GroupMessage {
                    group_id: 1,
                    message: Some(wire::Message { kind: 77, from: 3, to: 2, ..Default::default() }),
                }],
                ..Default::default()
            }],
            "unknown message kind 77",
        ),
        (vec![install_snapshot_on_stream()], "InstallSnapshot message on the replication stream"),
    ];
    for (batches, expected) in cases {
        let status = raw_stream(n2.addr, batches).await.expect("refused with a status");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(expected), "{:?} should mention {expected:?}", status.message());
    }
    // The valid first batch of the first case was delivered before the refusal.
    let (got, _) = n2.messages(NodeId(3), 1).await;
    assert_eq!(got, vec![(GroupId(8), append(3, 2, 1))]);
    // The real peer's stream is untouched.
    let turn = vec![(GroupId(8), append(1, 2, 1))];
    n1.transport.send(NodeId(2), turn.clone()).unwrap();
    assert_eq!(n2.messages(NodeId(1), 1).await.0, turn);
    n1.stop().await;
    n2.stop().await;
}

fn install_snapshot_on_stream() -> MessageBatch {
    let mut m = Message::new(MessageKind::InstallSnapshot, NodeId(3), NodeId(2), Term(3));
    m.snapshot = Some(Snapshot::default());
    codec::to_proto(NodeId(3), NodeId(2), vec![(GroupId(2), m)])
}

// ---- snapshots ----

/// A node's RocksDB with `group` holding `records` keys of `value_bytes`,
/// and a snapshot file of it built in `snapshots`.
fn build_snapshot(
    snapshots: &SnapshotDir,
    group: u64,
    records: usize,
    value_bytes: usize,
) -> (SnapshotFile, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::open(&dir.path().join("db"), 1, &StorageConfig::default()).unwrap());
    let conf = ConfState::with_voters([1, 2, 3]);
    let mut batch = StorageBatch::new();
    let mut store = GroupStorage::bootstrap(engine.clone(), GroupId(group), conf, &mut batch).unwrap();
    let entries: Vec<Entry> = (0..records)
        .map(|i| {
            let command =
                Command::Put { key: format!("key{i:06}").into_bytes(), value: vec![(i % 251) as u8; value_bytes] };
            Entry::new_normal(Term(2), LogIndex(i as u64 + 2), encode_command(&command))
        })
        .collect();
    store.stage_entries(&mut batch, &entries).unwrap();
    apply_entries(&mut store, &mut batch, &entries, None).unwrap();
    engine.commit(batch).unwrap();
    (snapshots.build(&engine, GroupId(group)).unwrap(), dir)
}

fn install_message(file: &SnapshotFile, from: u64, to: u64) -> Message {
    let mut m = Message::new(MessageKind::InstallSnapshot, NodeId(from), NodeId(to), Term(4));
    m.snapshot = Some(Snapshot { metadata: file.metadata.clone(), data: Vec::new() });
    m
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

async fn snapshot_sent(node: &mut TestNode) -> (NodeId, GroupId, bool) {
    loop {
        if let TransportEvent::SnapshotSent { to, group, delivered } = node.next_event().await {
            return (to, group, delivered);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_arrives_verified_and_is_reported_delivered() {
    let (mut n1, mut n2) = pair(config(1), config(2)).await;
    let (file, _db) = build_snapshot(&n1.snapshots, 5, 3000, 1000);
    assert!(file.chunk_count > 3, "spans several chunks");
    let message = install_message(&file, 1, 2);
    n1.transport.send_snapshot(NodeId(2), GroupId(5), message.clone(), file.clone());
    let received = loop {
        if let TransportEvent::SnapshotReceived { from, group, message: got, file: received, done } =
            n2.next_event().await
        {
            assert_eq!((from, group), (NodeId(1), GroupId(5)));
            assert_eq!(got, message);
            assert_eq!(received.metadata, file.metadata);
            assert_eq!(received.record_count, 3000);
            assert!(received.path.starts_with(n2.snapshots.path()));
            done.send(Ok(())).unwrap();
            break received;
        }
    };
    assert_eq!(std::fs::read(&received.path).unwrap(), std::fs::read(&file.path).unwrap());
    assert_eq!(snapshot_sent(&mut n1).await, (NodeId(2), GroupId(5), true));
    assert!(files_in(n2.snapshots.path()).iter().all(|name| !name.ends_with(".tmp")));
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_the_runtime_refuses_is_not_delivered_and_removed() {
    let (mut n1, mut n2) = pair(config(1), config(2)).await;
    let (file, _db) = build_snapshot(&n1.snapshots, 6, 100, 100);
    n1.transport.send_snapshot(NodeId(2), GroupId(6), install_message(&file, 1, 2), file.clone());
    loop {
        if let TransportEvent::SnapshotReceived { done, .. } = n2.next_event().await {
            done.send(Err("stale snapshot".into())).unwrap();
            break;
        }
    }
    assert_eq!(snapshot_sent(&mut n1).await, (NodeId(2), GroupId(6), false));
    assert_eq!(files_in(n2.snapshots.path()), Vec::<String>::new());
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_snapshot_is_refused_without_leftovers() {
    let small = TransportConfig { max_snapshot_bytes: 1 << 20, ..config(2) };
    let (mut n1, n2) = pair(config(1), small).await;
    let (file, _db) = build_snapshot(&n1.snapshots, 5, 3000, 1000);
    n1.transport.send_snapshot(NodeId(2), GroupId(5), install_message(&file, 1, 2), file);
    assert_eq!(snapshot_sent(&mut n1).await, (NodeId(2), GroupId(5), false));
    assert_eq!(files_in(n2.snapshots.path()), Vec::<String>::new());
    let mut n2 = n2;
    assert_no_snapshot_received(&mut n2);
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_snapshot_file_is_not_delivered_and_leaves_nothing_behind() {
    let (mut n1, mut n2) = pair(config(1), config(2)).await;
    let (file, _db) = build_snapshot(&n1.snapshots, 5, 3000, 1000);
    let length = std::fs::metadata(&file.path).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&file.path).unwrap().set_len(length / 2).unwrap();
    n1.transport.send_snapshot(NodeId(2), GroupId(5), install_message(&file, 1, 2), file);
    assert_eq!(snapshot_sent(&mut n1).await, (NodeId(2), GroupId(5), false));
    wait_until_empty(n2.snapshots.path()).await;
    assert_no_snapshot_received(&mut n2);
    n1.stop().await;
    n2.stop().await;
}

/// Nothing of a failed transfer reached the receiver's runtime.
fn assert_no_snapshot_received(node: &mut TestNode) {
    while let Ok(event) = node.events.try_recv() {
        assert!(!matches!(event, TransportEvent::SnapshotReceived { .. }), "{event:?}");
    }
}

/// Cleanup may trail the sender's error by a moment (the receiver notices
/// the cut stream on its own).
async fn wait_until_empty(dir: &Path) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !files_in(dir).is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "leftovers: {:?}", files_in(dir));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until a transfer in progress shows as a temp file.
async fn wait_for_temp_file(dir: &Path) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !files_in(dir).iter().any(|name| name.ends_with(".tmp")) {
        assert!(tokio::time::Instant::now() < deadline, "no transfer in progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts a raw InstallSnapshot RPC sending the first `count` chunks of
/// `file` and then nothing; returns the chunk sender (dropping it ends the
/// stream) and the call.
async fn partial_transfer(
    addr: SocketAddr,
    file: &SnapshotFile,
    count: usize,
) -> (mpsc::Sender<SnapshotChunk>, JoinHandle<Result<wire::SnapshotAck, tonic::Status>>) {
    let mut reader = file.chunks().unwrap();
    let (tx, rx) = mpsc::channel(count.max(1));
    for seq in 0..count {
        let data = reader.next_chunk().unwrap().unwrap();
        let message = (seq == 0).then(|| codec::message_to_proto(install_message(file, 1, 2)));
        tx.send(SnapshotChunk { group_id: file.group.0, data, message, ..Default::default() }).await.unwrap();
    }
    let mut client = RaftTransportClient::connect(format!("http://{addr}")).await.unwrap();
    let call =
        tokio::spawn(async move { client.install_snapshot(ReceiverStream::new(rx)).await.map(|r| r.into_inner()) });
    (tx, call)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_or_cut_transfer_leaves_no_temp_file() {
    let quick = TransportConfig { snapshot_chunk_timeout: Duration::from_millis(300), ..config(2) };
    let (n1, n2) = pair(config(1), quick).await;
    let (file, _db) = build_snapshot(&n1.snapshots, 5, 3000, 1000);
    // Stalled: two chunks, then silence until the receiver's chunk timeout.
    let (held, call) = partial_transfer(n2.addr, &file, 2).await;
    let status = timeout(WAIT, call).await.unwrap().unwrap().expect_err("times out");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert_eq!(files_in(n2.snapshots.path()), Vec::<String>::new());
    drop(held);
    // Cut: two chunks, then the stream ends without the last one.
    let (tx, call) = partial_transfer(n2.addr, &file, 2).await;
    drop(tx);
    let status = timeout(WAIT, call).await.unwrap().unwrap().expect_err("incomplete");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("before its last chunk"), "{status:?}");
    assert_eq!(files_in(n2.snapshots.path()), Vec::<String>::new());
    // Aborted: the client goes away mid-transfer.
    let (tx, call) = partial_transfer(n2.addr, &file, 2).await;
    wait_for_temp_file(n2.snapshots.path()).await;
    call.abort();
    drop(tx);
    wait_until_empty(n2.snapshots.path()).await;
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_snapshot_receives_are_limited() {
    let one = TransportConfig { max_concurrent_snapshots: 1, ..config(2) };
    let (n1, n2) = pair(config(1), one).await;
    let (file, _db) = build_snapshot(&n1.snapshots, 5, 3000, 1000);
    let (held, first) = partial_transfer(n2.addr, &file, 1).await;
    wait_for_temp_file(n2.snapshots.path()).await; // the first holds the only slot
    let (tx, second) = partial_transfer(n2.addr, &file, 1).await;
    let status = timeout(WAIT, second).await.unwrap().unwrap().expect_err("refused");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    drop((tx, held));
    let _ = timeout(WAIT, first).await.unwrap();
    wait_until_empty(n2.snapshots.path()).await;
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_install_snapshot_given_to_send_is_reported_not_delivered() {
    let (mut n1, n2) = pair(config(1), config(2)).await;
    let mut m = Message::new(MessageKind::InstallSnapshot, NodeId(1), NodeId(2), Term(3));
    m.snapshot = Some(Snapshot::default());
    n1.transport.send(NodeId(2), vec![(GroupId(11), m)]).unwrap();
    assert_eq!(snapshot_sent(&mut n1).await, (NodeId(2), GroupId(11), false));
    n1.stop().await;
    n2.stop().await;
}
