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
//! Still to come (see DESIGN.md): `storage` (one shared RocksDB),
//! `kv` (the state machine), `multiraft` (the node runtime), `transport`,
//! `cluster`, `server`, `client`, metrics and config.

pub mod raft;
pub mod sim;
