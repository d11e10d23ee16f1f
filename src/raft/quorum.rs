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

#[cfg(test)]
mod tests {
    use super::*;

    /// A table of (id, acknowledged index).
    type Acks = &'static [(u64, u64)];
    /// A table of (id, granted).
    type Votes<'a> = &'a [(u64, bool)];

    fn ids(ids: &[u64]) -> BTreeSet<NodeId> {
        ids.iter().copied().map(NodeId).collect()
    }

    fn votes(votes: &[(u64, bool)]) -> BTreeMap<NodeId, bool> {
        votes.iter().map(|&(id, granted)| (NodeId(id), granted)).collect()
    }

    /// `acked` from a table of (id, index); ids not listed answer `None`.
    fn acks(table: &[(u64, u64)]) -> impl Fn(NodeId) -> Option<LogIndex> + '_ {
        move |id| table.iter().find(|&&(i, _)| NodeId(i) == id).map(|&(_, index)| LogIndex(index))
    }

    fn joint(incoming: &[u64], outgoing: &[u64]) -> JointVoters {
        JointVoters { incoming: ids(incoming), outgoing: ids(outgoing) }
    }

    // The committed index is the quorum-th highest acknowledgement, for odd and even sizes.
    #[test]
    fn majority_committed_is_the_quorum_th_highest_ack() {
        let cases: &[(&[u64], Acks, u64)] = &[
            (&[1], &[(1, 7)], 7),
            (&[1, 2], &[(1, 7), (2, 4)], 4),
            (&[1, 2, 3], &[(1, 5), (2, 3), (3, 1)], 3),
            (&[1, 2, 3], &[(1, 1), (2, 5), (3, 3)], 3),
            (&[1, 2, 3], &[(1, 5), (2, 5), (3, 1)], 5),
            (&[1, 2, 3, 4], &[(1, 4), (2, 3), (3, 2), (4, 1)], 2),
            (&[1, 2, 3, 4], &[(1, 1), (2, 2), (3, 3), (4, 4)], 2),
            (&[1, 2, 3, 4], &[(1, 9), (2, 9), (3, 9), (4, 1)], 9),
            (&[1, 2, 3, 4, 5], &[(1, 1), (2, 9), (3, 7), (4, 3), (5, 8)], 7),
        ];
        for (voters, table, want) in cases {
            assert_eq!(majority_committed(&ids(voters), acks(table)), LogIndex(*want), "{voters:?} {table:?}");
        }
    }

    // A voter without an acknowledgement counts as zero; an empty voter set yields u64::MAX.
    #[test]
    fn majority_committed_counts_absent_as_zero_and_empty_as_max() {
        assert_eq!(majority_committed(&ids(&[1, 2, 3]), acks(&[(1, 5)])), LogIndex(0));
        assert_eq!(majority_committed(&ids(&[1, 2, 3]), acks(&[(1, 5), (3, 6)])), LogIndex(5));
        assert_eq!(majority_committed(&ids(&[1, 2, 3]), acks(&[(1, 5), (4, 9), (5, 9)])), LogIndex(0));
        assert_eq!(majority_committed(&ids(&[]), acks(&[(1, 5)])), LogIndex(u64::MAX));
    }

    // Won at quorum granted, Lost once a quorum can no longer grant, Pending in between.
    #[test]
    fn majority_vote_table() {
        use VoteResult::*;
        let cases: &[(&[u64], Votes, VoteResult)] = &[
            (&[], &[], Won),
            (&[], &[(1, false)], Won),
            (&[1], &[], Pending),
            (&[1], &[(1, true)], Won),
            (&[1], &[(1, false)], Lost),
            (&[1, 2], &[(1, true)], Pending),
            (&[1, 2], &[(1, true), (2, true)], Won),
            (&[1, 2], &[(1, true), (2, false)], Lost),
            (&[1, 2, 3], &[], Pending),
            (&[1, 2, 3], &[(1, true)], Pending),
            (&[1, 2, 3], &[(1, true), (2, true)], Won),
            (&[1, 2, 3], &[(1, true), (2, false)], Pending),
            (&[1, 2, 3], &[(1, false)], Pending),
            (&[1, 2, 3], &[(1, false), (2, false)], Lost),
            (&[1, 2, 3], &[(1, true), (2, false), (3, false)], Lost),
            (&[1, 2, 3], &[(1, true), (2, true), (3, false)], Won),
            (&[1, 2, 3, 4], &[(1, true)], Pending),
            (&[1, 2, 3, 4], &[(1, true), (2, true)], Pending),
            (&[1, 2, 3, 4], &[(1, true), (2, true), (3, true)], Won),
            (&[1, 2, 3, 4], &[(1, false)], Pending),
            (&[1, 2, 3, 4], &[(1, false), (2, false)], Lost),
            (&[1, 2, 3, 4], &[(1, true), (2, true), (3, false)], Pending),
            (&[1, 2, 3, 4, 5], &[(1, true), (2, true)], Pending),
            (&[1, 2, 3, 4, 5], &[(1, true), (2, true), (3, true)], Won),
            (&[1, 2, 3, 4, 5], &[(1, false), (2, false)], Pending),
            (&[1, 2, 3, 4, 5], &[(1, false), (2, false), (3, false)], Lost),
        ];
        for (voters, table, want) in cases {
            assert_eq!(majority_vote(&ids(voters), &votes(table)), *want, "{voters:?} {table:?}");
        }
    }

    // Votes from nodes that are not voters are ignored, granted or not.
    #[test]
    fn majority_vote_ignores_non_voters() {
        let voters = ids(&[1, 2, 3]);
        assert_eq!(majority_vote(&voters, &votes(&[(1, true), (4, true), (5, true)])), VoteResult::Pending);
        assert_eq!(majority_vote(&voters, &votes(&[(1, true), (4, false), (5, false)])), VoteResult::Pending);
    }

    // A configuration is joint exactly when the outgoing half is non-empty; membership spans both halves.
    #[test]
    fn joint_voters_membership() {
        let simple = joint(&[1, 2, 3], &[]);
        assert!(!simple.is_joint());
        assert!(joint(&[1, 2, 3], &[3, 4]).is_joint());
        assert!(joint(&[], &[4]).is_joint());
        assert!(!JointVoters::default().is_joint());

        let j = joint(&[1, 2], &[2, 3]);
        assert!(j.contains(NodeId(1)), "incoming only");
        assert!(j.contains(NodeId(2)), "both halves");
        assert!(j.contains(NodeId(3)), "outgoing only");
        assert!(!j.contains(NodeId(4)));
        assert!(simple.contains(NodeId(3)) && !simple.contains(NodeId(4)));
        assert_eq!(j.ids(), ids(&[1, 2, 3]));
        assert_eq!(simple.ids(), ids(&[1, 2, 3]));
        assert_eq!(joint(&[], &[5]).ids(), ids(&[5]));
        assert_eq!(JointVoters::default().ids(), ids(&[]));
    }

    // A joint commit index is the lower of the two halves; a simple one is the incoming half's.
    #[test]
    fn joint_committed_is_the_minimum_of_both_halves() {
        let table = [(1, 9), (2, 8), (3, 7), (4, 2), (5, 1)];
        assert_eq!(joint(&[1, 2, 3], &[]).committed(acks(&table)), LogIndex(8));
        assert_eq!(joint(&[1, 2, 3], &[3, 4, 5]).committed(acks(&table)), LogIndex(2));
        assert_eq!(joint(&[3, 4, 5], &[1, 2, 3]).committed(acks(&table)), LogIndex(2));
        assert_eq!(joint(&[1, 2], &[2, 3]).committed(acks(&table)), LogIndex(7));
        assert_eq!(joint(&[2, 3], &[1, 2]).committed(acks(&table)), LogIndex(7));
        assert_eq!(JointVoters::default().committed(acks(&table)), LogIndex(u64::MAX));
    }

    // A joint vote is Won only if both halves win, Lost if either loses, else Pending.
    #[test]
    fn joint_vote_result_combines_both_halves() {
        use VoteResult::*;
        // incoming {1,2,3}, outgoing {4,5,6}: each half decided by its own votes.
        let j = joint(&[1, 2, 3], &[4, 5, 6]);
        let won_in = [(1, true), (2, true)];
        let lost_in = [(1, false), (2, false)];
        let pend_in = [(1, true)];
        let won_out = [(4, true), (5, true)];
        let lost_out = [(4, false), (5, false)];
        let pend_out = [(4, true)];
        let cases: &[(Votes, Votes, VoteResult)] = &[
            (&won_in, &won_out, Won),
            (&won_in, &pend_out, Pending),
            (&pend_in, &won_out, Pending),
            (&pend_in, &pend_out, Pending),
            (&lost_in, &won_out, Lost),
            (&won_in, &lost_out, Lost),
            (&lost_in, &pend_out, Lost),
            (&pend_in, &lost_out, Lost),
            (&lost_in, &lost_out, Lost),
        ];
        for (incoming, outgoing, want) in cases {
            let all = votes(&[*incoming, *outgoing].concat());
            assert_eq!(j.vote_result(&all), *want, "{incoming:?} {outgoing:?}");
        }
        // Without an outgoing half the incoming half decides alone.
        let simple = joint(&[1, 2, 3], &[]);
        assert_eq!(simple.vote_result(&votes(&won_in)), Won);
        assert_eq!(simple.vote_result(&votes(&pend_in)), Pending);
        assert_eq!(simple.vote_result(&votes(&lost_in)), Lost);
        // A voter of both halves counts in each.
        let overlap = joint(&[1, 2, 3], &[3, 4, 5]);
        assert_eq!(overlap.vote_result(&votes(&[(1, true), (3, true)])), Pending);
        assert_eq!(overlap.vote_result(&votes(&[(1, true), (3, true), (4, true)])), Won);
        assert_eq!(overlap.vote_result(&votes(&[(3, false), (4, false)])), Lost);
    }
}
