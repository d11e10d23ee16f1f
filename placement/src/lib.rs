//! Flotilla placement: pure functions that decide where data lives.
//!
//! This crate owns:
//!
//! - **Key -> shard routing** ([`ShardRing`], `ring.rs`): a consistent-hash
//!   ring of shards, [`VNODES_PER_SHARD`] virtual nodes each, built with
//!   the `consistent_hash` crate but hashed with our own XXH64 (`hash.rs`).
//!   The mapping is part of the wire contract (every node and every client,
//!   in any language, must agree on it forever), so it is specified in
//!   `ring.rs` and pinned by test vectors.
//! - **Initial shard -> node placement** ([`initial_replicas`],
//!   [`preferred_leader`], `replicas.rs`): replica sets for a new cluster
//!   that balance replicas across nodes to within one, and preferred
//!   leaders that take turns across each shard's replicas.
//! - **Why an input is refused** ([`PlacementError`], `error.rs`).
//!
//! Still to come with the rebalancer: zone-aware targets, and move plans
//! from today's replica sets to the target ones (add learner -> catch up ->
//! promote -> remove old -> move leadership), never dropping a group below
//! quorum and moving as little as possible.
//!
//! What it must not do: I/O, clocks, randomness, async, or anything that
//! depends on the platform or the Rust release (std's `Hash` and
//! `DefaultHasher` included). The node (`src/cluster` in the `flotilla`
//! crate) calls it, stores the results in the meta group and carries out
//! the plans; shard `s` there is Raft group `s + 1`, which is not this
//! crate's concern.

mod error;
mod hash;
mod replicas;
mod ring;

pub use error::PlacementError;
pub use replicas::{initial_replicas, preferred_leader};
pub use ring::{ShardRing, MAX_SHARDS, VNODES_PER_SHARD};
