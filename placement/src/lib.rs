//! Flotilla placement: pure functions that decide where data lives.
//!
//! This crate will own:
//!
//! - **Key -> shard routing**: a consistent-hash ring of shards (the
//!   `consistent_hash` crate, several virtual nodes per shard). The hash of a
//!   key is fixed by the project and pinned by test vectors, because every
//!   node and every client must agree on it forever.
//! - **Shard -> node placement**: target replica sets that balance replicas
//!   and leaders across nodes (zone-aware when zones are set).
//! - **Move plans**: the steps from today's replica sets to the target ones
//!   (add learner -> catch up -> promote -> remove old -> move leadership),
//!   never dropping a group below quorum and moving as little as possible.
//!
//! Everything here is pure: no I/O, no clocks, no randomness, no async. The
//! node (`src/cluster` in the `flotilla` crate) calls it and carries out the
//! plans.
//!
//! Status: nothing is implemented yet; it arrives with the placement issue.
