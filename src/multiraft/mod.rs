//! The node runtime: every Raft group this node hosts, driven by one event
//! loop.
//!
//! **Owns:** the groups of this node and their turn: draining the inbox
//! (client requests, peer batches, the tick), stepping the groups
//! addressed, collecting their Readies into ONE storage batch with at most
//! one fsync, sending each peer one batch per turn, applying, answering
//! clients, advancing; quiescence and the staggered wake-up when a peer
//! node goes down; log compaction.
//! **Must not:** implement Raft (that is `raft`), encode messages for the
//! wire (`transport`), speak gRPC to clients (`server`), or block the loop
//! on anything but its own storage writes.

use std::sync::Arc;

pub mod api;
mod event_loop;
mod group;
mod handle;
mod maintenance;
mod node;
mod snapshot_builder;
mod turn;

pub use api::{Operation, Outcome, Request, RequestError, ShardId};
pub use event_loop::EventLoop;
pub use handle::{ClusterView, NodeHandle, NodeStats};
pub use node::{group_of, Node, RuntimeConfig};
pub use turn::{Outbox, Turn};

/// A handle for `view`'s node and the inbox its event loop reads; the
/// inbox holds at most `capacity` requests (beyond that callers get
/// `RequestError::Busy`).
pub fn channel(
    view: Arc<ClusterView>,
    stats: Arc<NodeStats>,
    capacity: usize,
) -> (NodeHandle, tokio::sync::mpsc::Receiver<Input>) {
    let (sender, receiver) = tokio::sync::mpsc::channel(capacity);
    (NodeHandle::new(sender, view, stats), receiver)
}

/// Everything the event loop reacts to, in one bounded inbox.
pub enum Input {
    Request(Request),
    /// Every hosted group's Raft status, for the admin service and the
    /// health check (an answer also shows that the loop is running).
    Status(tokio::sync::oneshot::Sender<Vec<(crate::raft::GroupId, crate::raft::Status)>>),
}
