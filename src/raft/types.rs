//! The vocabulary of the Raft core: identifiers, log entries, persistent state,
//! messages and the configuration-change requests. Plain data, no behaviour
//! beyond small helpers.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::{Add, AddAssign, Sub};

/// A node (process) in the cluster. Node ids are assigned by the operator and
/// never reused; `0` is not a valid id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NodeId(pub u64);

/// One Raft group (one shard). The core itself never looks at it; the layers
/// above use it to multiplex many groups over one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GroupId(pub u64);

/// A Raft term (§5.1). Term 0 is before any election.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Term(pub u64);

/// A position in the replicated log. Index 0 is the empty prefix; the first
/// real entry has index 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LogIndex(pub u64);

impl Term {
    pub const ZERO: Term = Term(0);
    pub fn next(self) -> Term {
        Term(self.0 + 1)
    }
}

impl LogIndex {
    pub const ZERO: LogIndex = LogIndex(0);
    /// The index before this one; saturates at zero.
    pub fn prev(self) -> LogIndex {
        LogIndex(self.0.saturating_sub(1))
    }
    pub fn next(self) -> LogIndex {
        LogIndex(self.0 + 1)
    }
}

impl Add<u64> for LogIndex {
    type Output = LogIndex;
    fn add(self, rhs: u64) -> LogIndex {
        LogIndex(self.0 + rhs)
    }
}

impl AddAssign<u64> for LogIndex {
    fn add_assign(&mut self, rhs: u64) {
        self.0 += rhs;
    }
}

/// Distance between two indexes (`self - rhs`), saturating at zero.
impl Sub<LogIndex> for LogIndex {
    type Output = u64;
    fn sub(self, rhs: LogIndex) -> u64 {
        self.0.saturating_sub(rhs.0)
    }
}

macro_rules! display_inner {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    )*};
}
display_inner!(NodeId, GroupId, Term, LogIndex);

/// What an entry carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryPayload {
    /// An opaque command for the state machine. Empty data is the no-op a new
    /// leader appends to commit entries of earlier terms (§5.4.2).
    Normal(Vec<u8>),
    /// A membership change; takes effect when the application applies it and
    /// calls `RawNode::apply_conf_change`.
    ConfChange(ConfChange),
}

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub term: Term,
    pub index: LogIndex,
    pub payload: EntryPayload,
}

impl Entry {
    pub fn new_normal(term: Term, index: LogIndex, data: Vec<u8>) -> Entry {
        Entry { term, index, payload: EntryPayload::Normal(data) }
    }

    /// Approximate encoded size, used only to bound message and Ready sizes.
    pub fn size_bytes(&self) -> u64 {
        let payload = match &self.payload {
            EntryPayload::Normal(data) => data.len(),
            EntryPayload::ConfChange(cc) => 8 + cc.changes.len() * 16,
        };
        24 + payload as u64
    }

    pub fn is_conf_change(&self) -> bool {
        matches!(self.payload, EntryPayload::ConfChange(_))
    }
}

/// The state every node must persist before answering any RPC (Figure 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HardState {
    pub term: Term,
    /// The candidate this node voted for in `term`, if any.
    pub vote: Option<NodeId>,
    /// Persisting commit is an optimisation (no re-replication to learn it
    /// after a restart); safety does not depend on it.
    pub commit: LogIndex,
}

impl HardState {
    /// Whether going from `persisted` to `self` changes what must be
    /// durable before answering: term and vote (a node must never vote
    /// twice in a term). A change of commit alone may stay in memory; a
    /// restarted node learns the commit index again from the leader.
    pub fn durable_part_differs(&self, persisted: &HardState) -> bool {
        self.term != persisted.term || self.vote != persisted.vote
    }
}

/// A group's membership. Outside a joint configuration `voters_outgoing` and
/// `learners_next` are empty.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ConfState {
    /// Voters of the incoming (or only) configuration.
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
    /// Voters of the outgoing configuration while joint (thesis §4.3).
    pub voters_outgoing: BTreeSet<NodeId>,
    /// Voters being demoted to learners: they stay voters in the outgoing
    /// configuration and become learners when the joint configuration is left.
    pub learners_next: BTreeSet<NodeId>,
    /// Leave the joint configuration automatically once it is applied.
    pub auto_leave: bool,
}

impl ConfState {
    pub fn with_voters(voters: impl IntoIterator<Item = u64>) -> ConfState {
        ConfState { voters: voters.into_iter().map(NodeId).collect(), ..ConfState::default() }
    }

    pub fn is_joint(&self) -> bool {
        !self.voters_outgoing.is_empty()
    }

    /// Whether `id` is a voter in either half of the configuration.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.voters_outgoing.contains(&id)
    }
}

/// What a snapshot covers. The state machine data travels beside it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SnapshotMetadata {
    pub index: LogIndex,
    pub term: Term,
    pub conf_state: ConfState,
}

/// A point-in-time image of the state machine up to `metadata.index`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub metadata: SnapshotMetadata,
    pub data: Vec<u8>,
}

/// One change of membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfChangeKind {
    AddVoter,
    AddLearner,
    RemoveNode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfChangeSingle {
    pub kind: ConfChangeKind,
    pub node: NodeId,
}

/// How a configuration change moves between configurations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ConfChangeTransition {
    /// One voter change goes directly; anything larger goes through a joint
    /// configuration that the leader leaves by itself once it is applied.
    #[default]
    Auto,
    /// Always enter a joint configuration and leave it automatically.
    JointAutoLeave,
    /// Always enter a joint configuration; the application proposes the
    /// empty change that leaves it.
    JointExplicit,
}

/// A membership change request. An empty `changes` list leaves a joint
/// configuration.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ConfChange {
    pub transition: ConfChangeTransition,
    pub changes: Vec<ConfChangeSingle>,
}

impl ConfChange {
    pub fn single(kind: ConfChangeKind, node: NodeId) -> ConfChange {
        ConfChange { transition: ConfChangeTransition::Auto, changes: vec![ConfChangeSingle { kind, node }] }
    }

    /// The change that leaves a joint configuration.
    pub fn leave_joint() -> ConfChange {
        ConfChange::default()
    }

    pub fn is_leave_joint(&self) -> bool {
        self.changes.is_empty()
    }

    /// Whether applying this change enters a joint configuration, and if so
    /// whether it is left automatically.
    pub fn enters_joint(&self) -> Option<bool> {
        match self.transition {
            ConfChangeTransition::Auto if self.changes.len() > 1 => Some(true),
            ConfChangeTransition::Auto => None,
            ConfChangeTransition::JointAutoLeave => Some(true),
            ConfChangeTransition::JointExplicit => Some(false),
        }
    }
}

/// Message kinds exchanged between the members of one group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageKind {
    AppendEntries,
    AppendEntriesResponse,
    RequestVote,
    RequestVoteResponse,
    RequestPreVote,
    RequestPreVoteResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    /// Leadership transfer: the receiver campaigns at once (thesis §3.10).
    TimeoutNow,
    /// A follower forwards a read-index request to its leader.
    ReadIndex,
    ReadIndexResponse,
}

impl MessageKind {
    /// Messages that promise nothing about this node's durable state, so
    /// they may leave before the write of the Ready that produced them
    /// completes. A leader's appends, heartbeats, snapshots and TimeoutNow
    /// (thesis §10.2.1: the leader counts itself only once its own write is
    /// durable); read-index traffic, which carries commit indexes, not
    /// persisted state; a pre-vote and its answer, which change no term or
    /// vote (a granted pre-vote binds nobody, the real vote that follows is
    /// persisted); and a heartbeat answer, which only says "I heard you"
    /// (its lease promise survives a restart through the restart guard in
    /// `Raft::in_lease`). Everything else (append answers, votes, and the
    /// answers that carry a newly adopted term) waits for the write.
    pub fn may_send_before_persist(self) -> bool {
        matches!(
            self,
            MessageKind::AppendEntries
                | MessageKind::Heartbeat
                | MessageKind::InstallSnapshot
                | MessageKind::TimeoutNow
                | MessageKind::ReadIndex
                | MessageKind::ReadIndexResponse
                | MessageKind::RequestPreVote
                | MessageKind::RequestPreVoteResponse
                | MessageKind::HeartbeatResponse
        )
    }
}

/// One Raft message. Field meaning depends on `kind`; unused fields are zero.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub kind: MessageKind,
    pub from: NodeId,
    pub to: NodeId,
    pub term: Term,
    /// AppendEntries: term of the entry at `index` (prevLogTerm).
    /// RequestVote: term of the candidate's last entry.
    /// Rejected AppendEntriesResponse: the follower's term at `index`
    /// (the conflicting term), or 0 when its log is shorter.
    pub log_term: Term,
    /// AppendEntries: prevLogIndex. RequestVote: candidate's last index.
    /// AppendEntriesResponse: last index matched, or the rejected prevLogIndex.
    /// ReadIndexResponse: the read index.
    pub index: LogIndex,
    pub entries: Vec<Entry>,
    /// The sender's commit index (AppendEntries, Heartbeat).
    pub commit: LogIndex,
    pub snapshot: Option<Snapshot>,
    pub reject: bool,
    /// Rejected AppendEntriesResponse: the first index the follower holds
    /// with the conflicting term, or its last index + 1 when its log is shorter.
    pub reject_hint: LogIndex,
    /// Opaque read-index context, echoed by heartbeats and responses.
    pub context: Vec<u8>,
    /// RequestVote sent because of TimeoutNow: voters grant it even while
    /// they believe a leader is alive.
    pub leader_transfer: bool,
    /// Heartbeat: the leader's tick counter when it was sent; echoed in the
    /// response so the leader knows how old each follower's promise is (leases).
    pub lease_tick: u64,
    /// Heartbeat: the leader is going quiet. `index` and `log_term` are its
    /// last entry and `commit` its commit index; a follower whose log ends
    /// exactly there with that commit stops its clock too and does not
    /// answer (an answer would wake the leader again).
    pub quiesce: bool,
}

impl Message {
    pub fn new(kind: MessageKind, from: NodeId, to: NodeId, term: Term) -> Message {
        Message {
            kind,
            from,
            to,
            term,
            log_term: Term::ZERO,
            index: LogIndex::ZERO,
            entries: Vec::new(),
            commit: LogIndex::ZERO,
            snapshot: None,
            reject: false,
            reject_hint: LogIndex::ZERO,
            context: Vec::new(),
            leader_transfer: false,
            lease_tick: 0,
            quiesce: false,
        }
    }
}

/// The answer to a read-index request: once the state machine has applied
/// `index`, a read issued with `context` reflects every write committed
/// before the request was made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub index: LogIndex,
    pub context: Vec<u8>,
}

/// Where a proposal landed. It is committed only if an entry with this index
/// AND this term is later applied; a different term at the index means it was
/// overwritten and never committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProposalId {
    pub index: LogIndex,
    pub term: Term,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_arithmetic_saturates_at_zero() {
        assert_eq!(LogIndex(5).prev(), LogIndex(4));
        assert_eq!(LogIndex(0).prev(), LogIndex(0));
        assert_eq!(LogIndex(5).next(), LogIndex(6));
        assert_eq!(LogIndex(5) + 3, LogIndex(8));
        let mut index = LogIndex(5);
        index += 2;
        assert_eq!(index, LogIndex(7));
        assert_eq!(LogIndex(7) - LogIndex(5), 2);
        assert_eq!(LogIndex(5) - LogIndex(7), 0);
        assert_eq!(Term(3).next(), Term(4));
        assert_eq!(format!("{} {} {} {}", NodeId(1), GroupId(2), Term(3), LogIndex(4)), "1 2 3 4");
    }

    #[test]
    fn entry_sizes_and_kinds() {
        let normal = Entry::new_normal(Term(1), LogIndex(1), vec![0; 10]);
        assert_eq!(normal.size_bytes(), 34);
        assert!(!normal.is_conf_change());
        let change = ConfChange::single(ConfChangeKind::AddVoter, NodeId(4));
        let conf = Entry { term: Term(1), index: LogIndex(2), payload: EntryPayload::ConfChange(change) };
        assert_eq!(conf.size_bytes(), 24 + 8 + 16);
        assert!(conf.is_conf_change());
    }

    #[test]
    fn only_term_and_vote_must_be_durable() {
        let stored = HardState { term: Term(2), vote: Some(NodeId(1)), commit: LogIndex(5) };
        assert!(!HardState { commit: LogIndex(9), ..stored }.durable_part_differs(&stored));
        assert!(HardState { term: Term(3), ..stored }.durable_part_differs(&stored));
        assert!(HardState { vote: None, ..stored }.durable_part_differs(&stored));
        assert!(!stored.durable_part_differs(&stored));
    }

    #[test]
    fn conf_state_membership() {
        let simple = ConfState::with_voters([1, 2, 3]);
        assert!(!simple.is_joint());
        assert!(simple.is_voter(NodeId(2)) && !simple.is_voter(NodeId(4)));
        let joint = ConfState { voters_outgoing: [1, 4].map(NodeId).into(), ..simple.clone() };
        assert!(joint.is_joint());
        assert!(joint.is_voter(NodeId(4)), "an outgoing voter is a voter");
        let learner = ConfState { learners: [5].map(NodeId).into(), ..simple };
        assert!(!learner.is_voter(NodeId(5)));
    }

    #[test]
    fn conf_changes_enter_a_joint_configuration_when_asked_or_when_large() {
        let add = ConfChangeSingle { kind: ConfChangeKind::AddVoter, node: NodeId(4) };
        let remove = ConfChangeSingle { kind: ConfChangeKind::RemoveNode, node: NodeId(1) };
        let change = |transition, changes: &[ConfChangeSingle]| ConfChange { transition, changes: changes.to_vec() };
        assert_eq!(change(ConfChangeTransition::Auto, &[add]).enters_joint(), None);
        assert_eq!(change(ConfChangeTransition::Auto, &[add, remove]).enters_joint(), Some(true));
        assert_eq!(change(ConfChangeTransition::JointAutoLeave, &[add]).enters_joint(), Some(true));
        assert_eq!(change(ConfChangeTransition::JointExplicit, &[add]).enters_joint(), Some(false));
        assert!(ConfChange::leave_joint().is_leave_joint());
        assert!(!change(ConfChangeTransition::Auto, &[add]).is_leave_joint());
        assert_eq!(ConfChange::single(ConfChangeKind::AddVoter, NodeId(4)), change(ConfChangeTransition::Auto, &[add]));
    }

    #[test]
    fn a_new_message_has_every_optional_field_empty() {
        let m = Message::new(MessageKind::Heartbeat, NodeId(1), NodeId(2), Term(3));
        assert_eq!((m.kind, m.from, m.to, m.term), (MessageKind::Heartbeat, NodeId(1), NodeId(2), Term(3)));
        assert_eq!((m.log_term, m.index, m.commit, m.reject_hint), (Term(0), LogIndex(0), LogIndex(0), LogIndex(0)));
        assert!(m.entries.is_empty() && m.snapshot.is_none() && m.context.is_empty());
        assert!(!m.reject && !m.leader_transfer && !m.quiesce);
        assert_eq!(m.lease_tick, 0);
    }
}
