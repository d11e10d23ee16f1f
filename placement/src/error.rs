//! Why a placement request was refused.
//!
//! Display and `Error` are written by hand so this crate stays free of
//! dependencies beyond the ring.

use std::fmt;

/// A placement input that cannot describe a working cluster.
///
/// Non-exhaustive: move plans will add their own refusals.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlacementError {
    /// A ring or a placement over zero shards.
    NoShards,
    /// More shards than [`crate::MAX_SHARDS`].
    TooManyShards { requested: u32, max: u32 },
    /// A placement over an empty node list.
    NoNodes,
    /// Node id 0 is reserved to mean "no node".
    ZeroNodeId,
    /// The same node id appears twice in the node list.
    DuplicateNodeId(u64),
    /// A replication factor of 0 would keep no copy of the data.
    ZeroReplicationFactor,
}

impl fmt::Display for PlacementError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlacementError::NoShards => write!(f, "the shard count is 0; a cluster needs at least one shard"),
            PlacementError::TooManyShards { requested, max } => {
                write!(f, "the shard count {requested} exceeds the maximum of {max}")
            }
            PlacementError::NoNodes => write!(f, "the node list is empty; replicas need at least one node"),
            PlacementError::ZeroNodeId => write!(f, "node id 0 is reserved and cannot hold replicas"),
            PlacementError::DuplicateNodeId(id) => write!(f, "node id {id} appears more than once in the node list"),
            PlacementError::ZeroReplicationFactor => {
                write!(f, "the replication factor is 0; every shard needs at least one replica")
            }
        }
    }
}

impl std::error::Error for PlacementError {}
