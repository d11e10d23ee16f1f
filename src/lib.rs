//! Flotilla: a sharded, replicated key-value store. Each shard is one Raft
//! group; every node hosts thousands of groups and shares one event loop,
//! one RocksDB instance and one connection per peer between them.
//!
//! # Layout
//!
//! - [`raft`]: the pure, synchronous Raft state machine of one group
//!   (tick / step / propose -> `Ready` -> `advance`). No I/O, clock or
//!   randomness.
//! - [`sim`]: a seeded, deterministic simulator of whole groups on an
//!   in-memory network with faults; it checks Raft's safety properties after
//!   every step. Used by the tests and `flotilla sim`.
//!
//! - [`storage`]: the node's one RocksDB: key encoding, every group's log
//!   store and hard state, group commit (one fsync per batch), snapshots.
//! - [`kv`]: the replicated state machine: commands, apply, reads.
//! - [`proto`]: generated gRPC types (client, peer and admin APIs).
//! - [`bench`]: `flotilla bench` measurements (storage group commit; the
//!   Raft core's cost per idle group and its batching).
//!
//! Still to come (see DESIGN.md): `multiraft` (the node runtime), `transport`,
//! `cluster`, `server`, `client`, metrics and config.

pub mod bench;
pub mod kv;
pub mod proto;
pub mod raft;
pub mod sim;
pub mod storage;
