use super::*;
use crate::MAX_SHARDS;
use std::collections::BTreeMap;

/// Sparse, unordered ids, so nothing can lean on ids being `1..=n`.
fn node_ids(count: u64) -> Vec<u64> {
    (1..=count).rev().map(|i| i * 7919 + 3).collect()
}

fn spread(counts: &BTreeMap<u64, u32>) -> u32 {
    counts.values().max().unwrap() - counts.values().min().unwrap()
}

/// Checks every promise of `initial_replicas` for one input and returns the
/// spread of preferred-leader counts across nodes.
fn check_placement(nodes: &[u64], shard_count: u32, rf: usize) -> u32 {
    let placement = initial_replicas(nodes, shard_count, rf).expect("a valid input");
    let context = format!("{} nodes, {shard_count} shards, factor {rf}", nodes.len());
    assert_eq!(placement.len(), shard_count as usize, "{context}");
    let mut replicas: BTreeMap<u64, u32> = nodes.iter().map(|&node| (node, 0)).collect();
    let mut leaders = replicas.clone();
    for (shard, set) in placement.iter().enumerate() {
        assert_eq!(set.len(), rf.min(nodes.len()), "{context}: shard {shard} {set:?}");
        assert!(set.windows(2).all(|pair| pair[0] < pair[1]), "{context}: shard {shard} not sorted/unique {set:?}");
        for node in set {
            *replicas.get_mut(node).unwrap_or_else(|| panic!("{context}: unknown node {node}")) += 1;
        }
        *leaders.get_mut(&preferred_leader(set, shard as u32)).unwrap() += 1;
    }
    assert!(spread(&replicas) <= 1, "{context}: replica counts {replicas:?}");
    spread(&leaders)
}

#[test]
fn replicas_balance_on_every_small_cluster() {
    for node_count in 1..=12 {
        let nodes = node_ids(node_count);
        for shard_count in [1, 7, 64, 1000] {
            for rf in 1..=5 {
                let leader_spread = check_placement(&nodes, shard_count, rf);
                let bound = if nodes.len() <= rf { 1 } else { 3 };
                assert!(
                    leader_spread <= bound,
                    "{node_count} nodes, {shard_count} shards, factor {rf}: {leader_spread}"
                );
            }
        }
    }
}

/// Larger clusters, where the stripes' period and the leader rotation can
/// line up in more ways; see the module doc for the bound of 3.
#[test]
fn leaders_spread_on_larger_clusters() {
    for node_count in 13..=40 {
        let nodes = node_ids(node_count);
        for shard_count in [64, 1000, 4096] {
            for rf in 1..=5 {
                let leader_spread = check_placement(&nodes, shard_count, rf);
                assert!(leader_spread <= 3, "{node_count} nodes, {shard_count} shards, factor {rf}: {leader_spread}");
            }
        }
    }
}

/// With stripes handed out in order, 9 nodes at factor 3 made only 3 nodes
/// preferred leaders.
#[test]
fn every_node_is_preferred_when_stripes_repeat() {
    let nodes: Vec<u64> = (1..=9).collect();
    let placement = initial_replicas(&nodes, 64, 3).unwrap();
    let mut leaders = BTreeMap::new();
    for (shard, set) in placement.iter().enumerate() {
        *leaders.entry(preferred_leader(set, shard as u32)).or_insert(0u32) += 1;
    }
    assert_eq!(leaders.len(), 9, "{leaders:?}");
    assert!(spread(&leaders) <= 1, "{leaders:?}");
}

#[test]
fn few_nodes_hold_every_shard() {
    let placement = initial_replicas(&[30, 10, 20], 64, 3).unwrap();
    assert!(placement.iter().all(|set| set == &[10, 20, 30]));
    let placement = initial_replicas(&[5, 1], 7, 3).unwrap();
    assert!(placement.iter().all(|set| set == &[1, 5]));
}

/// A readable example, worked by hand: stripes {1,2,3} {4,5,1} {2,3,4}
/// {5,1,2} {3,4,5} go to shards 0, 1, 3, 2, 4, whose preferred leaders
/// are 1, 4, 5, 2, 4. Every node holds 3 replicas.
#[test]
fn a_small_placement_is_pinned() {
    let placement = initial_replicas(&[5, 3, 1, 4, 2], 5, 3).unwrap();
    let expected: Vec<Vec<u64>> = vec![vec![1, 2, 3], vec![1, 4, 5], vec![1, 2, 5], vec![2, 3, 4], vec![3, 4, 5]];
    assert_eq!(placement, expected);
    let leaders: Vec<u64> = placement.iter().zip(0..).map(|(set, shard)| preferred_leader(set, shard)).collect();
    assert_eq!(leaders, [1, 4, 5, 2, 4]);
}

/// A deterministic Fisher-Yates shuffle (no randomness in this crate).
fn shuffled(nodes: &[u64], seed: u64) -> Vec<u64> {
    let mut state = seed;
    let mut out = nodes.to_vec();
    for i in (1..out.len()).rev() {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        out.swap(i, (state >> 33) as usize % (i + 1));
    }
    out
}

#[test]
fn the_order_of_nodes_does_not_matter() {
    for node_count in 1..=12 {
        let nodes = node_ids(node_count);
        for rf in 1..=4 {
            let expected = initial_replicas(&nodes, 64, rf).unwrap();
            let mut sorted = nodes.clone();
            sorted.sort_unstable();
            assert_eq!(initial_replicas(&sorted, 64, rf).unwrap(), expected);
            for seed in 0..8 {
                assert_eq!(initial_replicas(&shuffled(&nodes, seed), 64, rf).unwrap(), expected, "seed {seed}");
            }
        }
    }
}

#[test]
fn bad_inputs_are_refused_with_the_reason() {
    let cases: [(&[u64], u32, usize, PlacementError, &str); 6] = [
        (&[], 4, 3, PlacementError::NoNodes, "node list is empty"),
        (&[1, 0, 2], 4, 3, PlacementError::ZeroNodeId, "node id 0"),
        (&[1, 5, 2, 5], 4, 3, PlacementError::DuplicateNodeId(5), "node id 5 appears more than once"),
        (&[1, 2, 3], 4, 0, PlacementError::ZeroReplicationFactor, "replication factor is 0"),
        (&[1, 2, 3], 0, 3, PlacementError::NoShards, "shard count is 0"),
        (&[1, 2, 3], MAX_SHARDS + 1, 3, PlacementError::TooManyShards { requested: 65_537, max: 65_536 }, "65537"),
    ];
    for (nodes, shard_count, rf, error, message) in cases {
        let refused = initial_replicas(nodes, shard_count, rf).unwrap_err();
        assert_eq!(refused, error);
        assert!(refused.to_string().contains(message), "{refused}");
        let as_error: &dyn std::error::Error = &refused;
        assert!(as_error.source().is_none());
    }
}

#[test]
fn preferred_leaders_take_turns() {
    let mut counts = BTreeMap::new();
    for shard in 0..64 {
        *counts.entry(preferred_leader(&[1, 2, 3], shard)).or_insert(0) += 1;
    }
    assert_eq!(counts, BTreeMap::from([(1, 22), (2, 21), (3, 21)]));
    assert_eq!((0..4).map(|shard| preferred_leader(&[10, 20], shard)).collect::<Vec<_>>(), [10, 20, 10, 20]);
}

#[test]
fn preferred_leader_ignores_order_and_repeats() {
    for shard in 0..12 {
        let leader = preferred_leader(&[4, 8, 15], shard);
        assert_eq!(preferred_leader(&[15, 4, 8], shard), leader);
        assert_eq!(preferred_leader(&[8, 15, 4, 8], shard), leader);
    }
    assert_eq!(preferred_leader(&[7], u32::MAX), 7);
    assert_eq!(preferred_leader(&[], 3), 0);
}
