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
//! - [`storage`]: the node's one RocksDB: key encoding, every group's log
//!   store and hard state, group commit (one fsync per batch), snapshots.
//! - [`kv`]: the replicated state machine: commands, apply, reads.
//! - [`proto`]: generated gRPC types (client, peer and admin APIs).
//! - [`transport`]: peer traffic: one gRPC stream per peer node carrying
//!   every group's message batches, reconnect with backoff, snapshot files.
//! - [`server`]: client-facing gRPC services (Kv, Admin, health,
//!   reflection); the one error -> status mapping.
//! - [`client`]: the Rust client (routing, leader hints, retries); `flotilla
//!   kv` and `flotilla admin`.
//! - [`bench`]: `flotilla bench` measurements (storage group commit; the
//!   Raft core's cost per idle group and its batching).
//! - [`multiraft`]: the node runtime: every group of the node in one event
//!   loop; one storage batch and at most one fsync per turn; quiescence.
//! - [`cluster`]: the cluster record (members, shard count) and placement.
//! - [`node`]: one server process assembled and stopped in order.
//! - [`config`]: `flotilla server` settings: flags > `FLOTILLA_*` > the
//!   `--config` TOML file > defaults, each checked at start-up.
//! - [`demo`]: `flotilla demo`, a local 3-node cluster in one process.
//! - [`metrics`]: each node's Prometheus registry and the `/metrics`
//!   endpoint.
//!
//! Still to come (see DESIGN.md): the meta group and rebalancing.

pub mod bench;
pub mod client;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod kv;
pub mod metrics;
pub mod multiraft;
pub mod node;
pub mod proto;
pub mod raft;
pub mod server;
pub mod sim;
pub mod storage;
pub mod transport;
