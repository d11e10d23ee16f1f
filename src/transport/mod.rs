//! Peer traffic between nodes: one long-lived gRPC stream per ordered pair
//! of nodes carrying every group's Raft messages as batches, plus a separate
//! streaming RPC for snapshot files.
//!
//! **Owns:** the per-peer sender tasks (bounded outgoing queue, connect,
//! reconnect with jittered exponential backoff, peer up/down detection),
//! the `RaftTransport` gRPC service (inbound batches and snapshot chunks,
//! validated and handed to the node's event loop through one bounded
//! channel), the conversion between the core's messages and
//! `proto/raft.proto` ([`codec`], including coalesced heartbeats), and the
//! limits on snapshot transfers (size, concurrency, per-chunk timeout).
//!
//! **Must not:** drive Raft (it never steps, ticks or reports to a group:
//! it emits [`TransportEvent`]s and the runtime decides), or touch storage
//! beyond the snapshot files it streams: it reads a built
//! [`SnapshotFile`] chunk by chunk, writes a received one through
//! [`SnapshotDir::receive`], and removes a received file the runtime
//! refused. It never buffers without bound: the per-peer queues, the
//! stream buffers and the event channel are bounded, and a full event
//! channel slows the peer's inbound stream (HTTP/2 flow control) instead.
//!
//! # Shutdown
//!
//! [`Transport::new`] takes a `tokio::sync::watch::Receiver<bool>`: sending
//! `true` (or dropping the sender) stops every sender task, ends every
//! inbound stream (so the gRPC server's graceful shutdown can finish) and
//! abandons snapshot transfers (received temp files removed). Dropping
//! every `Transport` clone does not stop the tasks; the signal does.
//!
//! # Layout
//!
//! - [`codec`]: raft <-> proto conversions with validation.
//! - `peer`: one sender task per peer node.
//! - `service`: the gRPC server side ([`TransportService`]).
//! - `snapshot`: sending a snapshot file on the InstallSnapshot RPC.
//! - `backoff`: reconnect delays.

mod backoff;
pub mod codec;
mod peer;
mod service;
mod snapshot;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use crate::metrics::PeerMetrics;
use crate::proto::raft_transport_server::RaftTransportServer;
use crate::raft::{GroupId, Message, MessageKind, NodeId};
use crate::storage::snapshot::{SnapshotDir, SnapshotFile};
use crate::storage::StorageError;

pub use codec::CodecError;
pub use service::TransportService;

/// Largest gRPC message accepted or sent on the peer service: a batch of a
/// busy turn can be much larger than tonic's 4 MiB default.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Settings of the peer transport.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// This node's id (never 0); inbound batches claiming it are refused.
    pub node_id: NodeId,
    /// Bound of each peer's outgoing queue, in turns (calls to
    /// [`Transport::send`]); past it `send` fails with `QueueFull`.
    pub peer_queue_batches: usize,
    /// First reconnect delay after a stream broke or failed to open.
    pub reconnect_min: Duration,
    /// Cap of the (doubling) reconnect delay.
    pub reconnect_max: Duration,
    /// Largest snapshot sent or accepted, in bytes of chunks.
    pub max_snapshot_bytes: u64,
    /// Snapshot transfers in flight at once, per direction: excess outgoing
    /// ones wait for a slot, excess incoming ones are refused.
    pub max_concurrent_snapshots: usize,
    /// Longest wait for the next chunk (receiver) or for room to send it
    /// (sender). After the last chunk the sender waits up to four times
    /// this for the receiver's answer (which includes the install).
    pub snapshot_chunk_timeout: Duration,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            node_id: NodeId(0),
            peer_queue_batches: 1024,
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(2),
            max_snapshot_bytes: 8 << 30,
            max_concurrent_snapshots: 2,
            snapshot_chunk_timeout: Duration::from_secs(10),
        }
    }
}

/// What the transport tells the node's event loop.
// `SnapshotReceived` is much larger than the other variants; it is rare and
// its shape is the interface the runtime codes against, so it is not boxed.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum TransportEvent {
    /// Everything one peer sent in one batch, converted and validated.
    /// Messages of one group keep their order.
    Batch { from: NodeId, messages: Vec<(GroupId, Message)> },
    /// The outgoing stream to the node is (re)established: sent once per
    /// recovery.
    PeerUp(NodeId),
    /// The outgoing stream to the node broke or cannot be opened: every
    /// group's peer on that node is unreachable. Sent once per outage.
    PeerDown(NodeId),
    /// A snapshot fully received and verified into `file`. `message` is the
    /// InstallSnapshot message (metadata, term, from, to). Answer `done`
    /// with `Ok(())` once it is stepped/installed, or `Err(reason)`; the
    /// sender's RPC answer reflects it. On `Err` (or if `done` is dropped)
    /// the transport removes the file.
    SnapshotReceived {
        from: NodeId,
        group: GroupId,
        message: Message,
        file: SnapshotFile,
        done: oneshot::Sender<Result<(), String>>,
    },
    /// Outcome of [`Transport::send_snapshot`] (or of an InstallSnapshot
    /// message wrongly given to [`Transport::send`]): the runtime calls
    /// `RawNode::report_snapshot(to, delivered)`.
    SnapshotSent { to: NodeId, group: GroupId, delivered: bool },
}

/// Errors of the transport layer.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("the outgoing queue to node {peer} is full")]
    QueueFull { peer: NodeId },
    #[error("node {peer} is not a known peer")]
    UnknownPeer { peer: NodeId },
    #[error("the transport is shut down")]
    Closed,
    #[error("cannot reach node {peer} at {address}: {detail}")]
    Connect { peer: NodeId, address: String, detail: String },
    #[error("rpc to node {peer} failed: {status}")]
    Rpc { peer: NodeId, status: Box<tonic::Status> },
    #[error("snapshot of group {group} for node {peer}: {detail}")]
    Snapshot { peer: NodeId, group: GroupId, detail: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("invalid peer message: {0}")]
    Codec(#[from] CodecError),
}

/// The node's peer transport. Cheap to clone; every clone is the same
/// transport.
#[derive(Clone)]
pub struct Transport {
    shared: Arc<Shared>,
}

/// Peer liveness as the sender task last saw it.
const STATE_UNKNOWN: u8 = 0;
const STATE_UP: u8 = 1;
const STATE_DOWN: u8 = 2;

/// One turn's messages for one peer.
type Turn = Vec<(GroupId, Message)>;

/// What every task of the transport shares.
pub(crate) struct Shared {
    config: TransportConfig,
    /// Where tasks are spawned: `send` and `send_snapshot` may be called
    /// from a thread outside the runtime (the event loop).
    runtime: Handle,
    /// The sender task of each peer. A std mutex: held only to look up,
    /// insert or remove a handle, never across an await.
    peers: Mutex<HashMap<NodeId, PeerHandle>>,
    snapshots: Arc<SnapshotDir>,
    /// Into the node's event loop; bounded, so a slow loop slows the peers.
    events: mpsc::Sender<TransportEvent>,
    shutdown: watch::Receiver<bool>,
    /// Outgoing snapshot transfers in flight (`max_concurrent_snapshots`).
    sending: Arc<Semaphore>,
    /// Incoming snapshot transfers in flight (`max_concurrent_snapshots`).
    receiving: Arc<Semaphore>,
    /// Groups whose snapshot is being received: a group has one temp file
    /// in the snapshot directory, so a second transfer of it is refused.
    /// A std mutex, held only to insert or remove.
    receiving_groups: Mutex<HashSet<GroupId>>,
    /// Per-peer traffic counters (the node's metrics).
    metrics: PeerMetrics,
}

/// The transport's side of one peer's sender task.
struct PeerHandle {
    /// Turns waiting to be encoded and sent; bounded by `peer_queue_batches`.
    queue: mpsc::Sender<Turn>,
    /// The peer's address; a new value makes the task reconnect there, and
    /// dropping the sender stops the task.
    address: watch::Sender<String>,
    /// `STATE_*`, written by the task, read by `send` and `is_peer_up`.
    state: Arc<AtomicU8>,
}

impl Transport {
    /// Starts one sender task per peer in `peers` (node id -> "host:port";
    /// an entry for this node itself is ignored). Must be called within a
    /// Tokio runtime. `shutdown`: see the module documentation. Its
    /// traffic is counted in metrics nobody gathers; a node uses
    /// [`Transport::with_metrics`].
    pub fn new(
        config: TransportConfig,
        peers: HashMap<NodeId, String>,
        snapshots: Arc<SnapshotDir>,
        events: mpsc::Sender<TransportEvent>,
        shutdown: watch::Receiver<bool>,
    ) -> Transport {
        Transport::with_metrics(config, peers, snapshots, events, shutdown, PeerMetrics::default())
    }

    /// [`Transport::new`], counting each peer's traffic in `metrics`.
    pub fn with_metrics(
        config: TransportConfig,
        peers: HashMap<NodeId, String>,
        snapshots: Arc<SnapshotDir>,
        events: mpsc::Sender<TransportEvent>,
        shutdown: watch::Receiver<bool>,
        metrics: PeerMetrics,
    ) -> Transport {
        let permits = config.max_concurrent_snapshots.max(1);
        let shared = Arc::new(Shared {
            runtime: Handle::current(),
            peers: Mutex::new(HashMap::new()),
            snapshots,
            events,
            shutdown,
            sending: Arc::new(Semaphore::new(permits)),
            receiving: Arc::new(Semaphore::new(permits)),
            receiving_groups: Mutex::new(HashSet::new()),
            config,
            metrics,
        });
        let transport = Transport { shared };
        for (node, address) in peers {
            transport.set_peer(node, address);
        }
        transport
    }

    /// Adds a peer, or moves it to a new address (its stream reconnects
    /// there). Ignored for this node itself.
    pub fn set_peer(&self, node: NodeId, address: String) {
        if node == self.shared.config.node_id || node.0 == 0 {
            tracing::debug!(node = %node, "not a peer: ignored");
            return;
        }
        let mut peers = lock(&self.shared.peers);
        if let Some(peer) = peers.get(&node) {
            peer.address.send_if_modified(|current| {
                let changed = *current != address;
                *current = address;
                changed
            });
            return;
        }
        let (queue, turns) = mpsc::channel(self.shared.config.peer_queue_batches.max(1));
        let (address, address_rx) = watch::channel(address);
        let state = Arc::new(AtomicU8::new(STATE_UNKNOWN));
        let task = peer::PeerTask::new(self.shared.clone(), node, turns, address_rx, state.clone());
        self.shared.runtime.spawn(task.run());
        peers.insert(node, PeerHandle { queue, address, state });
    }

    /// Stops the sender task of `node`: queued messages are dropped, no
    /// `PeerDown` is sent, and `send` to it fails with `UnknownPeer`.
    pub fn remove_peer(&self, node: NodeId) {
        lock(&self.shared.peers).remove(&node);
    }

    /// Queues one turn's messages for `to` without blocking; they are
    /// encoded as one batch in the peer's task. While the peer is down the
    /// messages are dropped (the runtime learned of it from `PeerDown`).
    /// InstallSnapshot messages never travel here: they are reported as
    /// `SnapshotSent { delivered: false }` (use [`Transport::send_snapshot`]),
    /// and a message not from this node to `to` is dropped with an error log.
    pub fn send(&self, to: NodeId, mut messages: Vec<(GroupId, Message)>) -> Result<(), TransportError> {
        let peers = lock(&self.shared.peers);
        let peer = peers.get(&to).ok_or(TransportError::UnknownPeer { peer: to })?;
        let local = self.shared.config.node_id;
        if messages.iter().any(|(_, m)| m.kind == MessageKind::InstallSnapshot || m.from != local || m.to != to) {
            self.refuse_unsendable(to, &mut messages);
        }
        if messages.is_empty() || peer.state.load(Ordering::Acquire) == STATE_DOWN {
            return Ok(());
        }
        peer.queue.try_send(messages).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => TransportError::QueueFull { peer: to },
            mpsc::error::TrySendError::Closed(_) => TransportError::Closed,
        })
    }

    /// Removes what must not go on the stream: snapshots (reported as not
    /// delivered) and messages not from this node to `to` (the receiver
    /// would close the stream on them).
    fn refuse_unsendable(&self, to: NodeId, messages: &mut Vec<(GroupId, Message)>) {
        let local = self.shared.config.node_id;
        messages.retain(|(group, m)| {
            if m.kind == MessageKind::InstallSnapshot {
                tracing::error!(peer = %to, group = %group, "InstallSnapshot given to send(); use send_snapshot");
                let events = self.shared.events.clone();
                let sent = TransportEvent::SnapshotSent { to, group: *group, delivered: false };
                self.shared.runtime.spawn(async move { events.send(sent).await });
                return false;
            }
            let routed = m.from == local && m.to == to;
            if !routed {
                tracing::error!(peer = %to, group = %group, from = %m.from, to = %m.to, kind = ?m.kind,
                    "dropping a message not addressed from this node to the peer");
            }
            routed
        });
    }

    /// Streams `file` to `to` on the InstallSnapshot RPC in the background
    /// and reports [`TransportEvent::SnapshotSent`] when done.
    pub fn send_snapshot(&self, to: NodeId, group: GroupId, message: Message, file: SnapshotFile) {
        let shared = self.shared.clone();
        self.shared.runtime.spawn(snapshot::send(shared, to, group, message, file));
    }

    /// The gRPC service to mount on the node's server.
    pub fn service(&self) -> RaftTransportServer<TransportService> {
        RaftTransportServer::new(TransportService::new(self.shared.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Whether the outgoing stream to `node` is established now.
    pub fn is_peer_up(&self, node: NodeId) -> bool {
        lock(&self.shared.peers).get(&node).is_some_and(|p| p.state.load(Ordering::Acquire) == STATE_UP)
    }

    pub fn node_id(&self) -> NodeId {
        self.shared.config.node_id
    }
}

impl Shared {
    fn peer_address(&self, node: NodeId) -> Option<String> {
        lock(&self.peers).get(&node).map(|p| p.address.borrow().clone())
    }
}

/// A poisoned lock only means another thread panicked while holding it;
/// the maps it guards stay consistent (single inserts and removes).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Resolves once the transport is told to stop (or the signal's sender is
/// gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transport_can_be_shared_across_threads() {
        fn shareable<T: Clone + Send + Sync + 'static>() {}
        shareable::<Transport>();
    }
}
