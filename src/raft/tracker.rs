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
