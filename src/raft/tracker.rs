//! The group's configuration (voters, learners, joint state) and the leader's
//! per-peer progress, plus the membership-change rules that move from one
//! configuration to the next (thesis §4.3, joint consensus).

use std::collections::{BTreeMap, BTreeSet};

use super::error::RaftError;
use super::progress::Progress;
use super::quorum::{JointVoters, VoteResult};
use super::types::{ConfChange, ConfChangeKind, ConfState, LogIndex, NodeId};

/// Who is in the group.
///
/// Invariants: `learners` is disjoint from both halves of `voters`; `learners_next`
/// is a subset of `voters.outgoing` and is empty unless joint;
/// `auto_leave` implies joint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Configuration {
    pub voters: JointVoters,
    pub learners: BTreeSet<NodeId>,
    pub learners_next: BTreeSet<NodeId>,
    pub auto_leave: bool,
}

impl Configuration {
    pub fn from_conf_state(cs: &ConfState) -> Configuration {
        Configuration {
            voters: JointVoters { incoming: cs.voters.clone(), outgoing: cs.voters_outgoing.clone() },
            learners: cs.learners.clone(),
            learners_next: cs.learners_next.clone(),
            auto_leave: cs.auto_leave,
        }
    }

    pub fn to_conf_state(&self) -> ConfState {
        ConfState {
            voters: self.voters.incoming.clone(),
            learners: self.learners.clone(),
            voters_outgoing: self.voters.outgoing.clone(),
            learners_next: self.learners_next.clone(),
            auto_leave: self.auto_leave,
        }
    }

    /// Every member: voters of both halves and learners (now and next).
    pub fn members(&self) -> BTreeSet<NodeId> {
        let mut all = self.voters.ids();
        all.extend(self.learners.iter().copied());
        all.extend(self.learners_next.iter().copied());
        all
    }

    pub fn check(&self) -> Result<(), String> {
        if let Some(id) = self.learners.intersection(&self.voters.incoming).next() {
            return Err(format!("node {id} is both a voter and a learner"));
        }
        if let Some(id) = self.learners.intersection(&self.voters.outgoing).next() {
            return Err(format!("node {id} is both an outgoing voter and a learner"));
        }
        if let Some(id) = self.learners_next.difference(&self.voters.outgoing).next() {
            return Err(format!("node {id} is to become a learner but is not an outgoing voter"));
        }
        if !self.voters.is_joint() && (self.auto_leave || !self.learners_next.is_empty()) {
            return Err("joint-only state outside a joint configuration".into());
        }
        Ok(())
    }

    /// The configuration after applying `cc` (which must be valid here).
    pub fn apply(&self, cc: &ConfChange) -> Result<Configuration, RaftError> {
        let invalid = |why: String| RaftError::InvalidConfChange(why);
        let mut next = self.clone();
        if cc.is_leave_joint() {
            if !self.voters.is_joint() {
                return Err(invalid("cannot leave a joint configuration: not joint".into()));
            }
            next.learners.extend(std::mem::take(&mut next.learners_next));
            next.voters.outgoing.clear();
            next.auto_leave = false;
            next.check().map_err(invalid)?;
            return Ok(next);
        }
        if self.voters.is_joint() {
            return Err(invalid("already in a joint configuration; leave it first".into()));
        }
        let joint = cc.enters_joint();
        if let Some(auto_leave) = joint {
            next.voters.outgoing = self.voters.incoming.clone();
            next.auto_leave = auto_leave;
        }
        for change in &cc.changes {
            next.apply_single(change.kind, change.node);
        }
        if next.voters.incoming.is_empty() {
            return Err(invalid("the change removes every voter".into()));
        }
        if joint.is_none() {
            let changed = self.voters.incoming.symmetric_difference(&next.voters.incoming).count();
            if changed > 1 {
                return Err(invalid(format!("a simple change may alter one voter, this alters {changed}")));
            }
        }
        next.check().map_err(invalid)?;
        Ok(next)
    }

    fn apply_single(&mut self, kind: ConfChangeKind, id: NodeId) {
        match kind {
            ConfChangeKind::AddVoter => {
                self.learners.remove(&id);
                self.learners_next.remove(&id);
                self.voters.incoming.insert(id);
            }
            ConfChangeKind::AddLearner => {
                self.voters.incoming.remove(&id);
                // A voter of the outgoing half stays a voter until the joint
                // configuration is left, then becomes a learner.
                if self.voters.outgoing.contains(&id) {
                    self.learners_next.insert(id);
                } else {
                    self.learners.insert(id);
                }
            }
            ConfChangeKind::RemoveNode => {
                self.voters.incoming.remove(&id);
                self.learners.remove(&id);
                self.learners_next.remove(&id);
            }
        }
    }
}

/// The configuration plus the leader's view of every member.
#[derive(Clone, Debug)]
pub struct ProgressTracker {
    pub config: Configuration,
    /// One entry per member of `config` (Invariant: keys == config.members()).
    pub progress: BTreeMap<NodeId, Progress>,
    /// Votes received in the current election (true = granted).
    pub votes: BTreeMap<NodeId, bool>,
    max_inflight: usize,
}

impl ProgressTracker {
    pub fn new(max_inflight: usize) -> ProgressTracker {
        ProgressTracker {
            config: Configuration::default(),
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            max_inflight,
        }
    }

    /// Switches to `config`, keeping the progress of members that stay and
    /// starting new members at `next_index`.
    pub fn set_config(&mut self, config: Configuration, next_index: LogIndex) {
        let members = config.members();
        self.progress.retain(|id, _| members.contains(id));
        for &id in &members {
            let is_learner = !config.voters.contains(id);
            let max_inflight = self.max_inflight;
            let progress = self.progress.entry(id).or_insert_with(|| {
                let mut progress = Progress::new(next_index, max_inflight, is_learner);
                // A new member counts as active for the first check-quorum
                // round, so adding one never makes the leader step down.
                progress.recent_active = true;
                progress
            });
            progress.is_learner = is_learner;
        }
        self.config = config;
    }

    pub fn is_voter(&self, id: NodeId) -> bool {
        self.config.voters.contains(id)
    }

    /// The highest index a (joint) majority has acknowledged.
    pub fn committed(&self) -> LogIndex {
        self.config.voters.committed(|id| self.progress.get(&id).map(|p| p.matched))
    }

    pub fn record_vote(&mut self, id: NodeId, granted: bool) {
        self.votes.entry(id).or_insert(granted);
    }

    pub fn vote_result(&self) -> VoteResult {
        self.config.voters.vote_result(&self.votes)
    }

    /// Whether a (joint) majority has been heard from since the last reset;
    /// `self_id` always counts.
    pub fn quorum_active(&self, self_id: NodeId) -> bool {
        let votes: BTreeMap<NodeId, bool> = self
            .progress
            .iter()
            .filter(|(_, p)| !p.is_learner)
            .map(|(&id, p)| (id, id == self_id || p.recent_active))
            .collect();
        self.config.voters.vote_result(&votes) == VoteResult::Won
    }

    /// The newest tick at which a (joint) majority is known to have heard
    /// from this leader; `now` for the leader itself.
    pub fn quorum_lease_tick(&self, self_id: NodeId, now: u64) -> u64 {
        let acked = |id: NodeId| {
            let tick = if id == self_id { now } else { self.progress.get(&id).map_or(0, |p| p.lease_ack_tick) };
            Some(LogIndex(tick))
        };
        self.config.voters.committed(acked).0.min(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::{ConfChangeSingle, ConfChangeTransition};
    use ConfChangeKind::{AddLearner, AddVoter, RemoveNode};

    fn ids(ids: &[u64]) -> BTreeSet<NodeId> {
        ids.iter().copied().map(NodeId).collect()
    }

    /// A configuration from its four sets and the auto-leave flag.
    fn config(
        incoming: &[u64],
        outgoing: &[u64],
        learners: &[u64],
        learners_next: &[u64],
        auto: bool,
    ) -> Configuration {
        Configuration {
            voters: JointVoters { incoming: ids(incoming), outgoing: ids(outgoing) },
            learners: ids(learners),
            learners_next: ids(learners_next),
            auto_leave: auto,
        }
    }

    fn simple(voters: &[u64], learners: &[u64]) -> Configuration {
        config(voters, &[], learners, &[], false)
    }

    fn change(transition: ConfChangeTransition, changes: &[(ConfChangeKind, u64)]) -> ConfChange {
        let changes = changes.iter().map(|&(kind, id)| ConfChangeSingle { kind, node: NodeId(id) }).collect();
        ConfChange { transition, changes }
    }

    fn invalid(why: &str) -> Result<Configuration, RaftError> {
        Err(RaftError::InvalidConfChange(why.to_string()))
    }

    fn tracker(cfg: Configuration) -> ProgressTracker {
        let mut t = ProgressTracker::new(4);
        t.set_config(cfg, LogIndex(1));
        t
    }

    // A ConfState survives from_conf_state then to_conf_state unchanged, field by field.
    #[test]
    fn conf_state_round_trip() {
        let cs = ConfState {
            voters: ids(&[1, 2]),
            learners: ids(&[5]),
            voters_outgoing: ids(&[1, 2, 3]),
            learners_next: ids(&[3]),
            auto_leave: true,
        };
        let c = Configuration::from_conf_state(&cs);
        assert_eq!(c, config(&[1, 2], &[1, 2, 3], &[5], &[3], true));
        assert_eq!(c.to_conf_state(), cs);
        let plain = ConfState::with_voters([1, 2, 3]);
        assert_eq!(Configuration::from_conf_state(&plain).to_conf_state(), plain);
    }

    // Members are voters of both halves, learners and learners_next, each once.
    #[test]
    fn members_span_every_set() {
        assert_eq!(config(&[1, 2], &[2, 3], &[5], &[3], false).members(), ids(&[1, 2, 3, 5]));
        assert_eq!(config(&[1], &[4], &[5], &[4], false).members(), ids(&[1, 4, 5]));
        // learners_next is listed on its own, not only through the outgoing half (here an invalid state).
        assert_eq!(config(&[1], &[2], &[], &[6], false).members(), ids(&[1, 2, 6]));
        assert_eq!(simple(&[1, 2], &[7]).members(), ids(&[1, 2, 7]));
        assert_eq!(Configuration::default().members(), ids(&[]));
    }

    // check rejects each broken invariant with its own message, and accepts valid simple and joint states.
    #[test]
    fn check_reports_each_broken_invariant() {
        assert_eq!(simple(&[1, 2, 3], &[4]).check(), Ok(()));
        assert_eq!(config(&[1, 2], &[1, 2, 3], &[4], &[3], true).check(), Ok(()));
        assert_eq!(config(&[1, 2], &[1, 2, 3], &[], &[], false).check(), Ok(()));
        assert_eq!(Configuration::default().check(), Ok(()));
        let cases = [
            (simple(&[1, 2, 3], &[2]), "node 2 is both a voter and a learner"),
            (config(&[1, 2], &[1, 3], &[3], &[], false), "node 3 is both an outgoing voter and a learner"),
            (config(&[1, 2], &[1, 3], &[], &[4], false), "node 4 is to become a learner but is not an outgoing voter"),
            (config(&[1, 2], &[], &[], &[1], false), "node 1 is to become a learner but is not an outgoing voter"),
            (config(&[1, 2], &[], &[], &[], true), "joint-only state outside a joint configuration"),
        ];
        for (cfg, want) in cases {
            assert_eq!(cfg.check(), Err(want.to_string()), "{cfg:?}");
        }
    }

    // Single Auto changes apply directly: add a voter, add a learner, remove a voter or learner, promote a learner.
    #[test]
    fn simple_changes_apply_directly() {
        let base = simple(&[1, 2, 3], &[4]);
        let auto = ConfChangeTransition::Auto;
        let cases = [
            ((AddVoter, 5), simple(&[1, 2, 3, 5], &[4])),
            ((AddLearner, 5), simple(&[1, 2, 3], &[4, 5])),
            ((RemoveNode, 3), simple(&[1, 2], &[4])),
            ((RemoveNode, 4), simple(&[1, 2, 3], &[])),
            ((RemoveNode, 9), simple(&[1, 2, 3], &[4])),
            ((AddVoter, 4), simple(&[1, 2, 3, 4], &[])),
            ((AddVoter, 2), simple(&[1, 2, 3], &[4])),
            ((AddLearner, 3), simple(&[1, 2], &[3, 4])),
        ];
        for (single, want) in cases {
            assert_eq!(base.apply(&change(auto, &[single])), Ok(want), "{single:?}");
        }
        assert_eq!(base.apply(&ConfChange::single(AddVoter, NodeId(5))).unwrap().voters.outgoing, ids(&[]));
    }

    // Entering a joint configuration copies the old voters to the outgoing half; auto_leave follows the transition.
    #[test]
    fn entering_a_joint_configuration() {
        let base = simple(&[1, 2, 3], &[]);
        let two = [(AddVoter, 4), (RemoveNode, 1)];
        let want = |auto| config(&[2, 3, 4], &[1, 2, 3], &[], &[], auto);
        assert_eq!(base.apply(&change(ConfChangeTransition::Auto, &two)), Ok(want(true)));
        assert_eq!(base.apply(&change(ConfChangeTransition::JointAutoLeave, &two)), Ok(want(true)));
        assert_eq!(base.apply(&change(ConfChangeTransition::JointExplicit, &two)), Ok(want(false)));
        let one = [(AddVoter, 4)];
        let joint_one = |auto| config(&[1, 2, 3, 4], &[1, 2, 3], &[], &[], auto);
        assert_eq!(base.apply(&change(ConfChangeTransition::JointAutoLeave, &one)), Ok(joint_one(true)));
        assert_eq!(base.apply(&change(ConfChangeTransition::JointExplicit, &one)), Ok(joint_one(false)));
    }

    // Demoting a voter through a joint change parks it in learners_next: still an outgoing voter.
    #[test]
    fn demoting_a_voter_goes_through_learners_next() {
        let base = simple(&[1, 2, 3], &[]);
        let demote = change(ConfChangeTransition::JointExplicit, &[(AddLearner, 3)]);
        assert_eq!(base.apply(&demote), Ok(config(&[1, 2], &[1, 2, 3], &[], &[3], false)));
        // A new node added as a learner in the same change is a learner at once.
        let mixed = change(ConfChangeTransition::Auto, &[(AddLearner, 3), (AddLearner, 5)]);
        assert_eq!(base.apply(&mixed), Ok(config(&[1, 2], &[1, 2, 3], &[5], &[3], true)));
        // Later changes in the same batch take the node out of learners_next again.
        let readd = change(ConfChangeTransition::JointExplicit, &[(AddLearner, 3), (AddVoter, 3)]);
        assert_eq!(base.apply(&readd), Ok(config(&[1, 2, 3], &[1, 2, 3], &[], &[], false)));
        let remove = change(ConfChangeTransition::JointExplicit, &[(AddLearner, 3), (RemoveNode, 3)]);
        assert_eq!(base.apply(&remove), Ok(config(&[1, 2], &[1, 2, 3], &[], &[], false)));
    }

    // Leaving a joint configuration turns learners_next into learners, clears the outgoing half and auto_leave.
    #[test]
    fn leaving_a_joint_configuration() {
        let joint = config(&[1, 2], &[1, 2, 3], &[5], &[3], true);
        assert_eq!(joint.apply(&ConfChange::leave_joint()), Ok(simple(&[1, 2], &[3, 5])));
        let explicit = config(&[2, 3, 4], &[1, 2, 3], &[], &[], false);
        assert_eq!(explicit.apply(&ConfChange::leave_joint()), Ok(simple(&[2, 3, 4], &[])));
        // An invalid joint state is caught when leaving it.
        let broken = config(&[1, 2], &[1, 3], &[2], &[], false);
        assert_eq!(broken.apply(&ConfChange::leave_joint()), invalid("node 2 is both a voter and a learner"));
    }

    // Invalid changes fail with their exact message: leave when simple, change when joint, no voter left.
    #[test]
    fn invalid_changes_are_refused() {
        let base = simple(&[1, 2, 3], &[]);
        assert_eq!(base.apply(&ConfChange::leave_joint()), invalid("cannot leave a joint configuration: not joint"));
        let joint = config(&[1, 2], &[1, 2, 3], &[], &[3], false);
        let msg = "already in a joint configuration; leave it first";
        assert_eq!(joint.apply(&ConfChange::single(AddVoter, NodeId(4))), invalid(msg));
        assert_eq!(joint.apply(&change(ConfChangeTransition::JointExplicit, &[(AddVoter, 4)])), invalid(msg));
        let lone = simple(&[1], &[2]);
        assert_eq!(lone.apply(&ConfChange::single(RemoveNode, NodeId(1))), invalid("the change removes every voter"));
        assert_eq!(lone.apply(&ConfChange::single(AddLearner, NodeId(1))), invalid("the change removes every voter"));
        let all = change(ConfChangeTransition::Auto, &[(RemoveNode, 1), (RemoveNode, 2), (RemoveNode, 3)]);
        assert_eq!(base.apply(&all), invalid("the change removes every voter"));
        // A change that keeps one voter is fine.
        let keep = change(ConfChangeTransition::Auto, &[(RemoveNode, 1), (RemoveNode, 2)]);
        assert_eq!(base.apply(&keep), Ok(config(&[3], &[1, 2, 3], &[], &[], true)));
        // An invalid starting state surfaces through check.
        let broken = simple(&[1, 2, 3], &[2]);
        assert_eq!(
            broken.apply(&ConfChange::single(AddVoter, NodeId(4))),
            invalid("node 2 is both a voter and a learner")
        );
    }

    // set_config keeps staying members' progress, starts new ones at next_index as recently active, drops leavers.
    #[test]
    fn set_config_keeps_progress_of_staying_members() {
        let mut t = ProgressTracker::new(2);
        t.set_config(simple(&[1, 2, 3], &[]), LogIndex(5));
        assert_eq!(t.progress.keys().copied().collect::<BTreeSet<_>>(), ids(&[1, 2, 3]));
        for p in t.progress.values() {
            assert_eq!((p.matched, p.next_index), (LogIndex(0), LogIndex(5)));
            assert!(p.recent_active && !p.is_learner);
        }
        let p2 = t.progress.get_mut(&NodeId(2)).unwrap();
        p2.matched = LogIndex(7);
        p2.next_index = LogIndex(8);
        p2.recent_active = false;
        t.set_config(simple(&[1, 2], &[4]), LogIndex(10));
        assert_eq!(t.progress.keys().copied().collect::<BTreeSet<_>>(), ids(&[1, 2, 4]));
        let p2 = &t.progress[&NodeId(2)];
        assert_eq!((p2.matched, p2.next_index, p2.recent_active), (LogIndex(7), LogIndex(8), false));
        let p4 = &t.progress[&NodeId(4)];
        assert_eq!(
            (p4.matched, p4.next_index, p4.recent_active, p4.is_learner),
            (LogIndex(0), LogIndex(10), true, true)
        );
        // New progress gets the tracker's window size.
        let mut p4 = p4.clone();
        p4.become_replicate();
        p4.sent_entries(LogIndex(1));
        assert!(!p4.is_paused());
        p4.sent_entries(LogIndex(2));
        assert!(p4.is_paused());
        assert_eq!(t.config, simple(&[1, 2], &[4]));
    }

    // set_config updates is_learner of staying members: promoted learners and outgoing voters are voters.
    #[test]
    fn set_config_updates_is_learner() {
        let mut t = ProgressTracker::new(4);
        t.set_config(simple(&[1, 2, 3], &[4]), LogIndex(1));
        t.progress.get_mut(&NodeId(4)).unwrap().matched = LogIndex(3);
        t.set_config(simple(&[1, 2, 3, 4], &[]), LogIndex(9));
        assert!(!t.progress[&NodeId(4)].is_learner);
        assert_eq!(t.progress[&NodeId(4)].matched, LogIndex(3), "promotion keeps progress");
        t.set_config(config(&[1, 2, 4], &[1, 2, 3, 4], &[], &[3], false), LogIndex(9));
        assert!(!t.progress[&NodeId(3)].is_learner, "an outgoing voter still votes");
        t.set_config(simple(&[1, 2, 4], &[3]), LogIndex(9));
        assert!(t.progress[&NodeId(3)].is_learner);
        assert!(!t.progress[&NodeId(1)].is_learner);
    }

    // is_voter covers both halves of a joint configuration but not learners or strangers.
    #[test]
    fn is_voter_covers_both_halves() {
        let t = tracker(config(&[1, 2], &[2, 3], &[5], &[3], false));
        assert!(t.is_voter(NodeId(1)) && t.is_voter(NodeId(2)) && t.is_voter(NodeId(3)));
        assert!(!t.is_voter(NodeId(5)));
        assert!(!t.is_voter(NodeId(9)));
    }

    // The commit index is the majority's matched index, the lower of both halves when joint.
    #[test]
    fn committed_uses_matched_and_joint_minimum() {
        let mut t = tracker(simple(&[1, 2, 3], &[4]));
        for (id, matched) in [(1, 5), (2, 3), (3, 1), (4, 9)] {
            t.progress.get_mut(&NodeId(id)).unwrap().matched = LogIndex(matched);
        }
        assert_eq!(t.committed(), LogIndex(3), "learners do not count");
        let mut t = tracker(config(&[1, 2, 3], &[3, 4, 5], &[], &[], false));
        for (id, matched) in [(1, 9), (2, 8), (3, 7), (4, 2), (5, 1)] {
            t.progress.get_mut(&NodeId(id)).unwrap().matched = LogIndex(matched);
        }
        assert_eq!(t.committed(), LogIndex(2));
        for id in [4, 5] {
            t.progress.get_mut(&NodeId(id)).unwrap().matched = LogIndex(9);
        }
        assert_eq!(t.committed(), LogIndex(8), "now the incoming half is lower");
    }

    // The first vote recorded from a node stands; the tally counts voters of both halves.
    #[test]
    fn record_vote_keeps_the_first_vote() {
        let mut t = tracker(simple(&[1, 2, 3], &[]));
        assert_eq!(t.vote_result(), VoteResult::Pending);
        t.record_vote(NodeId(1), true);
        t.record_vote(NodeId(2), false);
        t.record_vote(NodeId(2), true);
        assert_eq!(t.votes.get(&NodeId(2)), Some(&false));
        assert_eq!(t.vote_result(), VoteResult::Pending);
        t.record_vote(NodeId(3), true);
        assert_eq!(t.vote_result(), VoteResult::Won);
        let mut t = tracker(simple(&[1, 2, 3], &[]));
        t.record_vote(NodeId(2), true);
        t.record_vote(NodeId(2), false);
        t.record_vote(NodeId(3), false);
        assert_eq!(t.votes.get(&NodeId(2)), Some(&true));
        assert_eq!(t.vote_result(), VoteResult::Pending);
        t.record_vote(NodeId(1), false);
        assert_eq!(t.vote_result(), VoteResult::Lost);
        let mut t = tracker(config(&[1, 2, 3], &[3, 4, 5], &[], &[], false));
        for id in [1, 2] {
            t.record_vote(NodeId(id), true);
        }
        assert_eq!(t.vote_result(), VoteResult::Pending, "the outgoing half has not decided");
        t.record_vote(NodeId(3), true);
        t.record_vote(NodeId(4), true);
        assert_eq!(t.vote_result(), VoteResult::Won);
    }

    // Quorum activity counts self plus recently active voters of each half, never learners.
    #[test]
    fn quorum_active_counts_self_and_recent_voters() {
        let mut t = tracker(simple(&[1, 2, 3], &[4]));
        let set = |t: &mut ProgressTracker, active: &[u64]| {
            for (id, p) in t.progress.iter_mut() {
                p.recent_active = active.contains(&id.0);
            }
        };
        set(&mut t, &[]);
        assert!(!t.quorum_active(NodeId(1)), "self alone is not a majority of three");
        set(&mut t, &[4]);
        assert!(!t.quorum_active(NodeId(1)), "an active learner does not count");
        set(&mut t, &[2]);
        assert!(t.quorum_active(NodeId(1)), "self counts without recent_active");
        set(&mut t, &[1, 2]);
        assert!(t.quorum_active(NodeId(1)));
        set(&mut t, &[2, 3]);
        assert!(t.quorum_active(NodeId(9)), "a leader outside the config needs a majority of others");
        set(&mut t, &[2]);
        assert!(!t.quorum_active(NodeId(9)));

        let mut t = tracker(config(&[1, 2, 3], &[3, 4, 5], &[], &[], false));
        set(&mut t, &[2]);
        assert!(!t.quorum_active(NodeId(1)), "the outgoing half is not active");
        set(&mut t, &[2, 4]);
        assert!(!t.quorum_active(NodeId(1)));
        set(&mut t, &[2, 4, 5]);
        assert!(t.quorum_active(NodeId(1)));
        set(&mut t, &[2, 4]);
        assert!(t.quorum_active(NodeId(3)), "self in both halves counts in each");

        let single = tracker(simple(&[1], &[]));
        assert!(single.quorum_active(NodeId(1)));
    }

    // The lease tick is the quorum-th highest acked tick, with self at now, capped at now.
    #[test]
    fn quorum_lease_tick_table() {
        let mut t = tracker(simple(&[1, 2, 3], &[4]));
        let set = |t: &mut ProgressTracker, ticks: &[(u64, u64)]| {
            for &(id, tick) in ticks {
                t.progress.get_mut(&NodeId(id)).unwrap().lease_ack_tick = tick;
            }
        };
        set(&mut t, &[(1, 0), (2, 7), (3, 4), (4, 9)]);
        assert_eq!(t.quorum_lease_tick(NodeId(1), 10), 7);
        set(&mut t, &[(2, 0), (3, 4)]);
        assert_eq!(t.quorum_lease_tick(NodeId(1), 10), 4, "the learner's tick 9 does not count");
        set(&mut t, &[(2, 0), (3, 0)]);
        assert_eq!(t.quorum_lease_tick(NodeId(1), 10), 0);
        set(&mut t, &[(2, 9), (3, 8)]);
        assert_eq!(t.quorum_lease_tick(NodeId(1), 5), 5, "capped at now");
        assert_eq!(t.quorum_lease_tick(NodeId(1), 8), 8);
        assert_eq!(t.quorum_lease_tick(NodeId(1), 9), 9);
        assert_eq!(t.quorum_lease_tick(NodeId(1), 20), 9);
        set(&mut t, &[(1, 3), (2, 0), (3, 6)]);
        assert_eq!(t.quorum_lease_tick(NodeId(2), 10), 6, "self is 2: its own tick is now");
        assert_eq!(t.quorum_lease_tick(NodeId(3), 10), 3, "self is 3: node 2's tick 0 counts");

        let mut t = tracker(config(&[1, 2, 3], &[3, 4, 5], &[], &[], false));
        set(&mut t, &[(2, 8), (3, 5), (4, 3), (5, 2)]);
        assert_eq!(t.quorum_lease_tick(NodeId(1), 10), 3, "the outgoing half is older");
        assert_eq!(tracker(simple(&[1], &[])).quorum_lease_tick(NodeId(1), 42), 42);
    }
}
