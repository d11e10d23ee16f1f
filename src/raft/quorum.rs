//! Quorum arithmetic for a simple majority and for a joint configuration
//! (thesis §4.3: a decision needs a majority of BOTH halves).

use std::collections::{BTreeMap, BTreeSet};

use super::types::{LogIndex, NodeId};

/// The outcome of counting votes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// Not decided yet: the missing votes could still win or lose.
    Pending,
    Lost,
    Won,
}

/// The index a majority of `voters` has acknowledged, given each voter's
/// acknowledged index (`acked`; absent counts as zero). An empty voter set
/// imposes no constraint and yields `u64::MAX`, so that a joint
/// configuration with an empty outgoing half reduces to its incoming half.
pub fn majority_committed(voters: &BTreeSet<NodeId>, acked: impl Fn(NodeId) -> Option<LogIndex>) -> LogIndex {
    if voters.is_empty() {
        return LogIndex(u64::MAX);
    }
    let mut indexes: Vec<LogIndex> = voters.iter().map(|&id| acked(id).unwrap_or(LogIndex::ZERO)).collect();
    indexes.sort_unstable_by(|a, b| b.cmp(a));
    // The quorum-th highest acknowledgement is held by a majority.
    indexes[voters.len() / 2]
}

/// Counts `votes` (true = granted) among `voters`.
pub fn majority_vote(voters: &BTreeSet<NodeId>, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
    if voters.is_empty() {
        return VoteResult::Won;
    }
    let quorum = voters.len() / 2 + 1;
    let granted = voters.iter().filter(|id| votes.get(id) == Some(&true)).count();
    let rejected = voters.iter().filter(|id| votes.get(id) == Some(&false)).count();
    if granted >= quorum {
        VoteResult::Won
    } else if voters.len() - rejected >= quorum {
        VoteResult::Pending
    } else {
        VoteResult::Lost
    }
}

/// The voters of a (possibly joint) configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JointVoters {
    pub incoming: BTreeSet<NodeId>,
    /// Empty unless the configuration is joint.
    pub outgoing: BTreeSet<NodeId>,
}

impl JointVoters {
    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.incoming.contains(&id) || self.outgoing.contains(&id)
    }

    /// Every voter of either half, once.
    pub fn ids(&self) -> BTreeSet<NodeId> {
        self.incoming.union(&self.outgoing).copied().collect()
    }

    pub fn committed(&self, acked: impl Fn(NodeId) -> Option<LogIndex>) -> LogIndex {
        let incoming = majority_committed(&self.incoming, &acked);
        let outgoing = majority_committed(&self.outgoing, &acked);
        incoming.min(outgoing)
    }

    pub fn vote_result(&self, votes: &BTreeMap<NodeId, bool>) -> VoteResult {
        let incoming = majority_vote(&self.incoming, votes);
        let outgoing = majority_vote(&self.outgoing, votes);
        match (incoming, outgoing) {
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }
}
