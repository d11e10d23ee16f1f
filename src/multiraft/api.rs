//! What the rest of the process (the gRPC services) asks of the node, and
//! the answers: the boundary between the tokio world and the event loop.

use std::time::Instant;

use crate::kv::{Command, CommandResult};
use crate::raft::NodeId;

/// A shard of the key space: `0 .. shard_count`. Shard `s` is Raft group
/// `s + 1` (group 0 is kept for the meta group).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u32);

impl std::fmt::Display for ShardId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A client request for one shard, handed to the event loop.
#[derive(Clone, Debug)]
pub enum Operation {
    /// Propose a command; answered once it is committed and applied here.
    Write(Command),
    /// Read one key. `linearizable`: through ReadIndex on the leader;
    /// otherwise from this node's replica as it is.
    Get { key: Vec<u8>, linearizable: bool },
    /// Pairs with `start <= key < end` (`end` empty: to the end of the
    /// shard), in key order: up to `limit` of them and `max_bytes` of keys
    /// and values (at least one pair).
    Scan { start: Vec<u8>, end: Vec<u8>, limit: usize, max_bytes: usize, linearizable: bool },
}

/// The answer to an [`Operation`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Written(CommandResult),
    Value(Option<Vec<u8>>),
    Pairs(crate::kv::ScanPage),
}

/// Why a request was not served. `retryable()` says whether the same
/// request may be sent again (here or elsewhere) without risk.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// This node does not lead the shard; `leader` is the one it believes
    /// does (with its client address), if it knows one.
    #[error("node {node} does not lead shard {shard}{}", hint_text(.leader))]
    NotLeader { node: NodeId, shard: ShardId, leader: Option<(NodeId, String)> },
    /// The shard has no leader yet (an election is under way).
    #[error("shard {shard} has no leader yet")]
    NoLeader { shard: ShardId },
    #[error("the node is shutting down")]
    ShuttingDown,
    /// The node is overloaded (its inbox is full); try again shortly.
    #[error("the node is overloaded: {0}")]
    Busy(String),
    /// A write was proposed but its fate is not known: it may or may not
    /// have been (or still be) applied. Never retried blindly.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// The deadline passed before a read was answered or a write was
    /// proposed: nothing was changed.
    #[error("deadline exceeded before the request was served; nothing was changed")]
    DeadlineExceeded,
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The shard's replica failed (a storage error); it serves no more.
    #[error("shard {shard} failed on node {node}: {detail}")]
    Failed { node: NodeId, shard: ShardId, detail: String },
}

fn hint_text(leader: &Option<(NodeId, String)>) -> String {
    match leader {
        Some((id, addr)) => format!("; the leader is node {id} at {addr}"),
        None => String::new(),
    }
}

impl RequestError {
    /// Whether the same request may be sent again without risk of
    /// applying it twice.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            RequestError::NotLeader { .. }
                | RequestError::NoLeader { .. }
                | RequestError::ShuttingDown
                | RequestError::Busy(_)
                | RequestError::DeadlineExceeded
        )
    }
}

/// One request with its deadline, as queued for the event loop.
pub struct Request {
    pub shard: ShardId,
    pub operation: Operation,
    pub deadline: Instant,
    pub reply: tokio::sync::oneshot::Sender<Result<Outcome, RequestError>>,
}
