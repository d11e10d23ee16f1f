//! Errors of the Raft core. Retryable API errors (`NotLeader`, `ProposalDropped`,
//! `ConfChangePending`) are separate from storage failures, which are fatal
//! for the group.

use super::types::{LogIndex, NodeId};

/// Errors from a [`LogStore`](super::LogStore).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The index lies before the first available entry: it was compacted into
    /// a snapshot.
    #[error("log index {0} is compacted")]
    Compacted(LogIndex),
    /// The index lies after the last entry.
    #[error("log index {0} is not available yet")]
    Unavailable(LogIndex),
    /// The snapshot is being generated; ask again later.
    #[error("snapshot temporarily unavailable")]
    SnapshotTemporarilyUnavailable,
    /// The backing store failed. The group cannot continue.
    #[error("log store failure: {0}")]
    Store(String),
}

/// Errors returned to callers of the core's inputs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RaftError {
    /// Only the leader accepts this request. `hint` is the leader this node
    /// knows of, if any. Retryable elsewhere.
    #[error("not the leader (leader hint: {hint:?})")]
    NotLeader { hint: Option<NodeId> },
    /// The request was not appended, for the reason given. Retryable.
    #[error("proposal dropped: {0}")]
    ProposalDropped(&'static str),
    /// A configuration change is already in flight. Retryable later.
    #[error("a configuration change is still pending")]
    ConfChangePending,
    /// The configuration change is not valid in the current configuration.
    #[error("invalid configuration change: {0}")]
    InvalidConfChange(String),
    /// A leadership transfer request that cannot be carried out.
    #[error("invalid leadership transfer: {0}")]
    InvalidTransfer(String),
    /// The configuration given to the core is invalid.
    #[error("invalid raft configuration: {0}")]
    InvalidConfig(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

pub type Result<T> = std::result::Result<T, RaftError>;
