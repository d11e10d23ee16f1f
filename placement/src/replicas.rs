//! Shard -> node placement for a new cluster: which nodes hold each
//! shard's replicas, and which replica should lead.
//!
//! Replica sets are stripes: with nodes sorted by id and laid round a
//! circle, stripe `k` is the `replication_factor` nodes starting at
//! position `k * replication_factor`. Laying all replicas end to end round
//! the circle is what makes every node's count differ by at most one, and
//! sorting first makes the result independent of the order nodes are
//! listed in.
//!
//! Which shard gets which stripe is chosen for the leaders' sake. The
//! preferred leader of shard `s` is its `(s % replication_factor)`-th
//! smallest replica, so handing stripe `k` simply to shard `k` can make the
//! stripes' period line up with that rotation: 9 nodes at factor 3 would
//! have only 3 nodes ever preferred. Instead each stripe goes to the next
//! unused shard of the rotation class whose leader in that stripe has led
//! least so far; any handout of the stripes keeps the replica balance.
//! Measured over 1..=40 nodes, factors 1..=5 and up to 4096 shards, the
//! preferred-leader counts of any two nodes differ by at most 3.
//!
//! This is only the starting point; the rebalancer moves replicas and
//! leaders from here as nodes come and go.

use std::cmp::Reverse;

use crate::ring::check_shard_count;
use crate::PlacementError;

/// The replica set of every shard `0..shard_count` (index = shard), each
/// sorted by node id.
///
/// With `nodes.len() <= replication_factor` every shard is on every node;
/// otherwise each shard has exactly `replication_factor` distinct nodes and
/// every node holds `floor` or `ceil` of `shard_count * replication_factor
/// / nodes.len()` replicas. Deterministic, whatever the order of `nodes`.
///
/// Refuses an empty node list, node id 0, a repeated node id, a replication
/// factor of 0, 0 shards and more than [`crate::MAX_SHARDS`] shards.
pub fn initial_replicas(
    nodes: &[u64],
    shard_count: u32,
    replication_factor: usize,
) -> Result<Vec<Vec<u64>>, PlacementError> {
    check_shard_count(shard_count)?;
    if replication_factor == 0 {
        return Err(PlacementError::ZeroReplicationFactor);
    }
    let sorted = sorted_unique_nodes(nodes)?;
    if sorted.len() <= replication_factor {
        return Ok(vec![sorted; shard_count as usize]);
    }
    Ok(striped(&sorted, shard_count, replication_factor))
}

/// The stripes of the module doc, for more nodes than the factor.
fn striped(sorted: &[u64], shard_count: u32, replication_factor: usize) -> Vec<Vec<u64>> {
    let shards = u64::from(shard_count);
    let mut placement = vec![Vec::new(); shard_count as usize];
    let mut leads = vec![0u32; sorted.len()];
    // The next unused shard of each rotation class `s % replication_factor`.
    let mut next_in_class: Vec<u64> = (0..replication_factor as u64).collect();
    let mut start = 0;
    for _ in 0..shard_count {
        // Positions in the sorted node list, so sorted positions are sorted ids.
        let mut stripe: Vec<usize> = (0..replication_factor).map(|offset| (start + offset) % sorted.len()).collect();
        stripe.sort_unstable();
        // Ties go to the class with the most shards left, so that no class
        // is left over for the last stripes whatever their leaders.
        let class = (0..replication_factor)
            .filter(|&class| next_in_class[class] < shards)
            .min_by_key(|&class| (leads[stripe[class]], Reverse(shards - next_in_class[class]), class))
            .expect("the classes hold exactly one shard per stripe");
        leads[stripe[class]] += 1;
        let shard = next_in_class[class];
        next_in_class[class] += replication_factor as u64;
        placement[shard as usize] = stripe.iter().map(|&position| sorted[position]).collect();
        start = (start + replication_factor) % sorted.len();
    }
    placement
}

/// Validates the node list and returns it sorted.
fn sorted_unique_nodes(nodes: &[u64]) -> Result<Vec<u64>, PlacementError> {
    if nodes.is_empty() {
        return Err(PlacementError::NoNodes);
    }
    if nodes.contains(&0) {
        return Err(PlacementError::ZeroNodeId);
    }
    let mut sorted = nodes.to_vec();
    sorted.sort_unstable();
    if let Some(pair) = sorted.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(PlacementError::DuplicateNodeId(pair[0]));
    }
    Ok(sorted)
}

/// The replica that should lead `shard`: the `(shard % n)`-th smallest of
/// its `n` distinct replicas, so consecutive shards on the same nodes take
/// turns (with 3 nodes, each leads a third of the shards).
///
/// Ranked by id, so the order `replicas` is listed in does not matter.
/// Returns 0 (never a node id) for an empty replica set.
pub fn preferred_leader(replicas: &[u64], shard: u32) -> u64 {
    let mut sorted = replicas.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.is_empty() {
        return 0;
    }
    let turn = u64::from(shard) % sorted.len() as u64;
    sorted[turn as usize]
}

#[cfg(test)]
#[path = "replicas_tests.rs"]
mod tests;
