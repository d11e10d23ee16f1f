//! Key -> shard routing: a consistent-hash ring of shards.
//!
//! # The mapping (fixed forever)
//!
//! Every node and every client must send a key to the same shard, across
//! Rust releases, platforms and languages, so the mapping is specified here
//! in terms a reimplementation can follow, and pinned by test vectors:
//!
//! 1. Shard `s` owns [`VNODES_PER_SHARD`] points on a 64-bit ring: for each
//!    `v` in `0..VNODES_PER_SHARD`, XXH64 (seed 0) of `s` as u32 LE followed
//!    by `v` as u32 LE.
//! 2. A key's point is XXH64 (seed 0) of the key's bytes.
//! 3. The key belongs to the shard of the first virtual node whose point is
//!    `>=` the key's point (equal points: the smaller shard id first),
//!    wrapping to the smallest point past the end of the ring.
//!
//! # Why the `consistent_hash` crate, and how its hash is made stable
//!
//! The crate's default hasher is SipHash-1-3 fed through Rust's `Hash`
//! trait. That is not stable: `Hash` for byte slices and `usize` (its
//! virtual node index) writes a length prefix and native-width, native-
//! endian integers, and std documents that the bytes `Hash` feeds a hasher
//! are not portable across platforms nor stable across compiler versions.
//! A 32-bit or big-endian client would route keys differently.
//!
//! The crate does, however, let the caller supply the hash ([`RingHash`]),
//! so it keeps the part it is good at (building the sorted ring, the
//! successor search with wrap-around) while every point comes from
//! [`crate::hash`]. To keep even the plumbing out of std's hands, the crate
//! only ever sees two newtypes whose `Hash` impls are ours and hand over
//! one integer each ([`ShardKey`], [`KeyPoint`]); [`Capture`] takes that
//! integer back out, and our `RingHash` turns it into the XXH64 point.
//! `reference_model_agrees` in the tests checks the crate's lookup against
//! a plain sorted-vector implementation of the specification above.
//!
//! Costs accepted with the crate: one small allocation per lookup (its
//! candidate iterator records the shards it has visited), unsafe internals
//! that make its ring self-referential and uncloneable, and two old
//! transitive dependencies. Should any of that come to matter, that
//! sorted-vector reference model (about 15 lines) can replace it without
//! moving a single key, and the test vectors would prove it.

use std::fmt;
use std::hash::{Hash, Hasher};

use consistent_hash::{Node, RingHash, StaticHashRing};

use crate::hash::{key_point, vnode_point};
use crate::PlacementError;

/// Virtual nodes per shard: part of the fixed mapping, never to change.
///
/// A shard's share of the ring varies with a coefficient of variation of
/// about 1/sqrt(vnodes). Measured for this hash over 64 shards, the
/// heaviest shard sits 35% above the mean with 64 vnodes, 21% with 128,
/// 15% with 160 (7-8% spread), and 256 only reach 9% for 60% more memory
/// and build time: 160 is where more vnodes stop paying for themselves.
/// Each node hosts many shards, which averages the rest out further.
/// Memory is about 2.5 KiB per shard.
pub const VNODES_PER_SHARD: u32 = 160;

/// The most shards a ring or a placement accepts (a ring that size takes
/// about 160 MiB and a second to build).
///
/// A guard against a corrupted or mistyped shard count exhausting memory
/// on every node and client, far above any cluster this project targets.
pub const MAX_SHARDS: u32 = 1 << 16;

/// Routes keys to shards `0..shard_count`; see the module doc for the
/// mapping.
///
/// Build it once per shard count and share it: building takes about 16 ms
/// for 1000 shards, a lookup 60-140 ns (measured, release build), and
/// lookups take `&self`, so one ring serves many threads.
pub struct ShardRing {
    shard_count: u32,
    ring: StaticHashRing<'static, ShardKey, (), StableRingHash>,
}

impl ShardRing {
    /// A ring of `shard_count` shards. Refuses 0 shards (no key could be
    /// routed) and more than [`MAX_SHARDS`].
    pub fn new(shard_count: u32) -> Result<ShardRing, PlacementError> {
        check_shard_count(shard_count)?;
        let nodes = (0..shard_count).map(|shard| Node::new(ShardKey(shard)).quantity(VNODES_PER_SHARD as usize));
        // `'static` is sound: the crate's virtual nodes borrow from the ring's
        // own node vector, which never changes or moves its heap buffer after
        // construction, and every reference handed out is tied to `&self`.
        let ring = StaticHashRing::new(StableRingHash, nodes);
        Ok(ShardRing { shard_count, ring })
    }

    /// The number of shards keys are spread over.
    pub fn shard_count(&self) -> u32 {
        self.shard_count
    }

    /// The shard that owns `key`, in `0..shard_count`.
    pub fn shard_for_key(&self, key: &[u8]) -> u32 {
        let owner = self.ring.calc_candidates(&KeyPoint(key_point(key))).next();
        owner.expect("a ring always holds at least one shard").key.0
    }
}

/// Shared with the replica placement, which must agree on the shard range.
pub(crate) fn check_shard_count(shard_count: u32) -> Result<(), PlacementError> {
    if shard_count == 0 {
        return Err(PlacementError::NoShards);
    }
    if shard_count > MAX_SHARDS {
        return Err(PlacementError::TooManyShards { requested: shard_count, max: MAX_SHARDS });
    }
    Ok(())
}

/// Rebuilds rather than copies: the crate's ring holds references into
/// itself and cannot be cloned. A ring is a pure function of its shard
/// count, so the clone is identical.
impl Clone for ShardRing {
    fn clone(&self) -> ShardRing {
        ShardRing::new(self.shard_count).expect("the shard count was valid when this ring was built")
    }
}

/// Two rings with the same shard count route every key identically.
impl PartialEq for ShardRing {
    fn eq(&self, other: &ShardRing) -> bool {
        self.shard_count == other.shard_count
    }
}

impl Eq for ShardRing {}

/// Short on purpose: the derived form would print every virtual node.
impl fmt::Debug for ShardRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardRing")
            .field("shard_count", &self.shard_count)
            .field("vnodes_per_shard", &VNODES_PER_SHARD)
            .finish()
    }
}

/// A shard as a ring node. Its `Hash` impl is ours so that exactly one
/// `write_u32` of the shard id reaches [`Capture`], whatever std does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct ShardKey(u32);

impl Hash for ShardKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u32(self.0);
    }
}

/// A key's already-computed ring point, handed to the crate's lookup.
struct KeyPoint(u64);

impl Hash for KeyPoint {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0);
    }
}

/// Takes back the single integer that [`ShardKey`] or [`KeyPoint`] wrote.
#[derive(Default)]
struct Capture(u64);

impl Hasher for Capture {
    fn finish(&self) -> u64 {
        self.0
    }

    /// Unreached: only our own `Hash` impls feed this hasher, through the
    /// integer methods below. Defined anyway so that it is deterministic.
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u32(&mut self, value: u32) {
        self.0 = u64::from(value);
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

fn capture<T: Hash>(item: &T) -> u64 {
    let mut hasher = Capture::default();
    item.hash(&mut hasher);
    hasher.finish()
}

/// The crate's hashing hook, pointed at our fixed points.
#[derive(Debug, Clone, Copy)]
struct StableRingHash;

impl RingHash for StableRingHash {
    /// Items are always a [`KeyPoint`]: the point is already final.
    fn hash_item<T: Hash>(&self, item: &T) -> u64 {
        capture(item)
    }

    /// Node keys are always a [`ShardKey`], and `vnode_seq` is below
    /// [`VNODES_PER_SHARD`], so both narrowings are exact.
    fn hash_vnode<K: Hash>(&self, node_key: &K, vnode_seq: usize) -> u64 {
        vnode_point(capture(node_key) as u32, vnode_seq as u32)
    }
}

#[cfg(test)]
#[path = "ring_tests.rs"]
mod tests;
