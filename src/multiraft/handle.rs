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
use crate::raft::NodeId;

/// What every handle shares: fixed for the life of the node.
pub struct ClusterView {
    pub node_id: NodeId,
    pub ring: flotilla_placement::ShardRing,
    /// Client (and peer) address of every node, this one included.
    pub addresses: BTreeMap<NodeId, String>,
    /// The nodes holding a replica of each shard, by shard.
    pub replicas: Vec<Vec<NodeId>>,
}

/// Counters the event loop keeps and anyone may read (tests, and later
/// the metrics endpoint). Relaxed atomics: each is a statistic on its own.
#[derive(Debug, Default)]
pub struct NodeStats {
    pub ticks: AtomicU64,
    pub turns: AtomicU64,
    pub synced_turns: AtomicU64,
    pub peer_batches_sent: AtomicU64,
    pub snapshots_sent: AtomicU64,
    pub snapshots_installed: AtomicU64,
    /// Quiesced groups woken because their leader's node went down.
    pub wakeups: AtomicU64,
    pub groups: AtomicU64,
    pub groups_quiesced: AtomicU64,
    pub groups_led: AtomicU64,
    /// Bytes held by all groups' log tail caches, as of the last sweep.
    pub cache_bytes: AtomicU64,
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
        match self.inbox.try_send(Input::Request(request)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Err(RequestError::Busy("the node's request queue is full".into()))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(RequestError::ShuttingDown),
        }
        // A dropped reply sender means the loop stopped with the request
        // in hand: a write may have been proposed.
        answer.await.unwrap_or_else(|_| Err(RequestError::OutcomeUnknown("the node stopped".into())))
    }
}
