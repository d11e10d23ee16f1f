//! The cheap, cloneable way into a running node: the gRPC services hold a
//! `NodeHandle` and hand requests to the event loop through its bounded
//! inbox; the loop answers each on its own oneshot channel.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::api::{Operation, Outcome, Request, RequestError, ShardId};
use super::Input;
use crate::raft::{GroupId, NodeId, Status};

/// What every handle shares: fixed for the life of the node.
pub struct ClusterView {
    pub node_id: NodeId,
    pub ring: flotilla_placement::ShardRing,
    /// Client (and peer) address of every node, this one included.
    pub addresses: BTreeMap<NodeId, String>,
    /// The nodes holding a replica of each shard, by shard.
    pub replicas: Vec<Vec<NodeId>>,
}

/// Counters the event loop keeps and anyone may read (tests, and the
/// metrics endpoint reads them at scrape time). Relaxed atomics: each is a
/// statistic on its own.
#[derive(Debug, Default)]
pub struct NodeStats {
    pub ticks: AtomicU64,
    pub turns: AtomicU64,
    pub synced_turns: AtomicU64,
    pub peer_batches_sent: AtomicU64,
    pub snapshots_sent: AtomicU64,
    /// Snapshots received whole from peers (installed or not).
    pub snapshots_received: AtomicU64,
    pub snapshots_installed: AtomicU64,
    /// Quiesced groups woken because their leader's node went down.
    pub wakeups: AtomicU64,
    pub groups: AtomicU64,
    pub groups_quiesced: AtomicU64,
    pub groups_led: AtomicU64,
    /// Bytes held by all groups' log tail caches, as of the last sweep.
    pub cache_bytes: AtomicU64,
    /// What the layers record where their events happen (histograms,
    /// per-peer and per-method counters), for the node's registry.
    pub metrics: crate::metrics::NodeMetrics,
}

#[derive(Clone)]
pub struct NodeHandle {
    /// Into the event loop; bounded, so a flood of requests meets `Busy`
    /// instead of growing memory.
    inbox: mpsc::Sender<Input>,
    view: Arc<ClusterView>,
    stats: Arc<NodeStats>,
}

impl NodeHandle {
    pub(super) fn new(inbox: mpsc::Sender<Input>, view: Arc<ClusterView>, stats: Arc<NodeStats>) -> NodeHandle {
        NodeHandle { inbox, view, stats }
    }

    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }

    pub fn node_id(&self) -> NodeId {
        self.view.node_id
    }

    pub fn shard_count(&self) -> u32 {
        self.view.ring.shard_count()
    }

    pub fn shard_for_key(&self, key: &[u8]) -> ShardId {
        ShardId(self.view.ring.shard_for_key(key))
    }

    /// The client address of `node`, if it is a member.
    pub fn address_of(&self, node: NodeId) -> Option<&str> {
        self.view.addresses.get(&node).map(String::as_str)
    }

    /// The nodes holding a replica of `shard` (empty for an unknown shard).
    pub fn replicas(&self, shard: ShardId) -> &[NodeId] {
        self.view.replicas.get(shard.0 as usize).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Whether this node holds a replica of `shard`.
    pub fn hosts(&self, shard: ShardId) -> bool {
        self.replicas(shard).contains(&self.view.node_id)
    }

    /// Runs one operation on this node's replica of `shard`. Waits until it
    /// is answered; the event loop answers every request by `deadline` at
    /// the latest (with `OutcomeUnknown` for a write already proposed).
    pub async fn call(&self, shard: ShardId, operation: Operation, deadline: Instant) -> Result<Outcome, RequestError> {
        let (reply, answer) = oneshot::channel();
        let request = Request { shard, operation, deadline, reply };
        self.enqueue(Input::Request(request))?;
        // A dropped reply sender means the loop stopped with the request
        // in hand: a write may have been proposed.
        answer.await.unwrap_or_else(|_| Err(RequestError::OutcomeUnknown("the node stopped".into())))
    }

    /// Every member's client address by node id, this node included.
    pub fn members(&self) -> &BTreeMap<NodeId, String> {
        &self.view.addresses
    }

    /// Every group this node hosts, with its Raft status as the event loop
    /// sees it now. Answered between two turns (never blocks the loop).
    pub async fn group_statuses(&self) -> Result<Vec<(GroupId, Status)>, RequestError> {
        let (reply, answer) = oneshot::channel();
        self.enqueue(Input::Status(reply))?;
        answer.await.map_err(|_| RequestError::ShuttingDown)
    }

    /// Resolves once the event loop no longer takes requests: it stopped
    /// (shutdown, or a storage error that ended it).
    pub async fn closed(&self) {
        self.inbox.closed().await
    }

    fn enqueue(&self, input: Input) -> Result<(), RequestError> {
        self.inbox.try_send(input).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => RequestError::Busy("the node's request queue is full".into()),
            mpsc::error::TrySendError::Closed(_) => RequestError::ShuttingDown,
        })
    }
}
