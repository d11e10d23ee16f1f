//! The node's one RocksDB instance, shared by every group it hosts.
//!
//! Owns: opening the data directory (format version, node identity,
//! column families), key encoding, the binary encoding of entries and
//! states, each group's log store (with its in-memory tail cache), the
//! group-commit batch (many groups' writes, one fsync), and snapshot files.
//! Must not: drive Raft, talk to the network, or decide when to write; the
//! multi-raft runtime stages each turn's writes and commits them once.
//!
//! | column family | key | value |
//! |---|---|---|
//! | `raft_log` | group ‖ index | encoded entry (with a crc32) |
//! | `raft_state` | group ‖ tag | hard state, truncated index/term, conf state |
//! | `data` | group ‖ user key | user value |
//! | `meta` | tag ‖ … | format version, node id, apply state per group |
//!
//! The hard state is rewritten only when term or vote change; a change of
//! the commit index alone stays in memory (it is volatile in Raft), and
//! opening a group lifts the stored commit to the applied index. A group
//! exists on disk once it has a truncated state or a hard state, so a group
//! created empty that voted keeps its vote across a restart.
//!
//! Staging is all-or-nothing per call: a staging function that fails has
//! written nothing into the batch (see `batch`), because the batch also
//! carries other groups' writes and is committed whole.

mod batch;
mod cache;
pub mod codec;
mod engine;
mod error;
mod group;
mod install;
pub mod keys;
pub mod snapshot;

pub use batch::StorageBatch;
pub use cache::EntryCache;
pub use engine::{Engine, StorageConfig, FORMAT_VERSION};
pub use error::{Result, StorageError};
pub use group::{ApplyState, GroupStorage, CACHE_MAX_BYTES, CACHE_MAX_ENTRIES};
