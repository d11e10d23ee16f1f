//! The cluster as this node knows it: its members and their addresses,
//! the number of shards, and which nodes hold each shard.
//!
//! **Owns:** the cluster record stored in the data directory (written once,
//! when the node is created, and read on every restart, so the flags may
//! then be left out) and the initial placement of shard replicas.
//! **Must not:** route requests or drive Raft. (The meta group that lets
//! the cluster change, with joining nodes and rebalancing, comes later; for
//! now the membership is the initial cluster.)

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::multiraft::ClusterView;
use crate::raft::NodeId;
use crate::storage::codec::Reader;
use crate::storage::keys::{self, CF_META};
use crate::storage::{Engine, StorageBatch, StorageError};

/// Replicas per shard once there are more nodes than this.
pub const REPLICATION_FACTOR: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("invalid cluster: {0}")]
    Invalid(String),
    /// The flags describe another cluster than the one stored.
    #[error("the data directory belongs to a cluster with {stored}, but the flags say {given}")]
    Mismatch { stored: String, given: String },
}

/// The members and shard count this node's cluster was created with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    pub shard_count: u32,
    /// Every member's address ("host:port"), this node included.
    pub nodes: BTreeMap<NodeId, String>,
}

impl ClusterConfig {
    /// Parses `--initial-cluster 1=127.0.0.1:7001,2=...`.
    pub fn parse_members(text: &str) -> Result<BTreeMap<NodeId, String>, ClusterError> {
        let mut nodes = BTreeMap::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (id, addr) =
                part.split_once('=').ok_or_else(|| ClusterError::Invalid(format!("'{part}' is not ID=HOST:PORT")))?;
            let id: u64 = id.trim().parse().map_err(|_| ClusterError::Invalid(format!("'{id}' is not a node id")))?;
            if id == 0 {
                return Err(ClusterError::Invalid("node id 0 is reserved".into()));
            }
            if !addr.contains(':') {
                return Err(ClusterError::Invalid(format!("'{addr}' is not HOST:PORT")));
            }
            if nodes.insert(NodeId(id), addr.trim().to_string()).is_some() {
                return Err(ClusterError::Invalid(format!("node {id} is listed twice")));
            }
        }
        if nodes.is_empty() {
            return Err(ClusterError::Invalid("the cluster has no members".into()));
        }
        Ok(nodes)
    }

    /// The stored record, if this data directory was created before.
    pub fn load(engine: &Engine) -> Result<Option<ClusterConfig>, ClusterError> {
        let key = keys::meta_key(keys::META_CLUSTER);
        let Some(bytes) = engine.db().get_cf(engine.cf(CF_META), key).map_err(StorageError::from)? else {
            return Ok(None);
        };
        decode(&bytes).map(Some).map_err(|detail| {
            ClusterError::Storage(StorageError::corrupt(
                crate::raft::GroupId(0),
                crate::raft::LogIndex::ZERO,
                "cluster record",
                detail,
            ))
        })
    }

    /// Stages the record; the caller commits it (synced) before any group
    /// is created, so a restart always finds the cluster its groups are in.
    pub fn stage(&self, engine: &Engine, batch: &mut StorageBatch) {
        batch.put(engine.cf(CF_META), keys::meta_key(keys::META_CLUSTER), encode(self));
    }

    /// Uses the stored record, or creates it from `given` on first start.
    /// A stored record wins; flags that contradict it are an error (a node
    /// must not silently join its data to another cluster).
    pub fn load_or_create(engine: &Engine, given: Option<ClusterConfig>) -> Result<ClusterConfig, ClusterError> {
        match (ClusterConfig::load(engine)?, given) {
            (Some(stored), Some(given)) if stored != given => {
                Err(ClusterError::Mismatch { stored: stored.describe(), given: given.describe() })
            }
            (Some(stored), _) => Ok(stored),
            (None, Some(given)) => {
                given.validate()?;
                let mut batch = StorageBatch::new();
                given.stage(engine, &mut batch);
                engine.commit(batch)?;
                Ok(given)
            }
            (None, None) => Err(ClusterError::Invalid("no cluster is stored and none was given".into())),
        }
    }

    fn validate(&self) -> Result<(), ClusterError> {
        if self.shard_count == 0 || self.shard_count > flotilla_placement::MAX_SHARDS {
            let max = flotilla_placement::MAX_SHARDS;
            return Err(ClusterError::Invalid(format!("{} shards; between 1 and {max} are allowed", self.shard_count)));
        }
        Ok(())
    }

    fn describe(&self) -> String {
        let members: Vec<String> = self.nodes.iter().map(|(id, addr)| format!("{id}={addr}")).collect();
        format!("{} shards and members {}", self.shard_count, members.join(","))
    }

    /// What `node` needs to serve: the ring, the addresses and the
    /// replicas of every shard.
    pub fn view(&self, node: NodeId) -> Result<Arc<ClusterView>, ClusterError> {
        if !self.nodes.contains_key(&node) {
            return Err(ClusterError::Invalid(format!("node {node} is not a member of {}", self.describe())));
        }
        let invalid = |e: flotilla_placement::PlacementError| ClusterError::Invalid(e.to_string());
        let ring = flotilla_placement::ShardRing::new(self.shard_count).map_err(invalid)?;
        let ids: Vec<u64> = self.nodes.keys().map(|n| n.0).collect();
        let replicas = flotilla_placement::initial_replicas(&ids, self.shard_count, REPLICATION_FACTOR)
            .map_err(invalid)?
            .into_iter()
            .map(|nodes| nodes.into_iter().map(NodeId).collect())
            .collect();
        Ok(Arc::new(ClusterView { node_id: node, ring, addresses: self.nodes.clone(), replicas }))
    }
}

/// `[1][shard count u32][member count u32]` then per member
/// `[id u64][address length u32][address]`, big-endian.
fn encode(config: &ClusterConfig) -> Vec<u8> {
    let mut out = vec![1u8];
    out.extend_from_slice(&config.shard_count.to_be_bytes());
    out.extend_from_slice(&(config.nodes.len() as u32).to_be_bytes());
    for (id, addr) in &config.nodes {
        out.extend_from_slice(&id.0.to_be_bytes());
        out.extend_from_slice(&(addr.len() as u32).to_be_bytes());
        out.extend_from_slice(addr.as_bytes());
    }
    out
}

fn decode(bytes: &[u8]) -> Result<ClusterConfig, String> {
    let mut reader = Reader::new(bytes);
    let version = reader.u8()?;
    if version != 1 {
        return Err(format!("unknown cluster record version {version}"));
    }
    let shard_count = reader.u32()?;
    let count = reader.u32()?;
    let mut nodes = BTreeMap::new();
    for _ in 0..count {
        let id = NodeId(reader.u64()?);
        let len = reader.u32()? as usize;
        let addr = std::str::from_utf8(reader.take(len)?).map_err(|e| e.to_string())?.to_string();
        nodes.insert(id, addr);
    }
    reader.finish()?;
    Ok(ClusterConfig { shard_count, nodes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_parse_and_bad_ones_are_named() {
        let nodes = ClusterConfig::parse_members("1=127.0.0.1:7001, 2=127.0.0.1:7002").unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[&NodeId(2)], "127.0.0.1:7002");
        for (bad, named) in
            [("1", "'1'"), ("x=a:1", "'x'"), ("0=a:1", "0"), ("1=a:1,1=b:2", "twice"), ("", "no members")]
        {
            let error = ClusterConfig::parse_members(bad).unwrap_err().to_string();
            assert!(error.contains(named), "{bad}: {error}");
        }
    }

    #[test]
    fn the_record_round_trips_and_a_stored_cluster_wins_over_missing_flags() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), 1, &crate::storage::StorageConfig::default()).unwrap();
        let config = ClusterConfig { shard_count: 16, nodes: ClusterConfig::parse_members("1=a:1,2=b:2").unwrap() };
        assert_eq!(decode(&encode(&config)).unwrap(), config);
        assert!(ClusterConfig::load_or_create(&engine, None).is_err(), "nothing stored, nothing given");
        assert_eq!(ClusterConfig::load_or_create(&engine, Some(config.clone())).unwrap(), config);
        assert_eq!(ClusterConfig::load_or_create(&engine, None).unwrap(), config, "flags may be left out");
        let other = ClusterConfig { shard_count: 64, ..config.clone() };
        let error = ClusterConfig::load_or_create(&engine, Some(other)).unwrap_err().to_string();
        assert!(error.contains("16 shards") && error.contains("64 shards"), "{error}");
    }

    #[test]
    fn three_nodes_hold_every_shard_and_more_nodes_three_each() {
        let three = ClusterConfig { shard_count: 8, nodes: ClusterConfig::parse_members("1=a:1,2=b:2,3=c:3").unwrap() };
        let view = three.view(NodeId(2)).unwrap();
        assert!(view.replicas.iter().all(|r| r.len() == 3));
        let five = ClusterConfig {
            shard_count: 10,
            nodes: ClusterConfig::parse_members("1=a:1,2=b:2,3=c:3,4=d:4,5=e:5").unwrap(),
        };
        assert!(five.view(NodeId(5)).unwrap().replicas.iter().all(|r| r.len() == 3));
        assert!(five.view(NodeId(9)).is_err());
    }
}
