//! `RawNode`: the API the runtime drives. Inputs go in (tick, step, propose,
//! ...), one `Ready` comes out, one `advance` acknowledges it. See the
//! ordering contract in `mod.rs`.

use super::error::{RaftError, Result};
use super::log_store::LogStore;
use super::progress::ProgressState;
use super::raft::{Config, Raft, Role};
use super::tracker::Configuration;
use super::types::{
    ConfChange, ConfState, Entry, EntryPayload, HardState, LogIndex, Message, NodeId, ProposalId, ReadState, Snapshot,
    Term,
};

/// Volatile state the runtime may want to react to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftState {
    pub leader: Option<NodeId>,
    pub role: Role,
}

/// Everything the application must do after feeding inputs in.
#[derive(Clone, Debug, Default)]
pub struct Ready {
    /// Changed leader or role, if any.
    pub soft_state: Option<SoftState>,
    /// To persist, if it changed. A change of `commit` alone need not be
    /// written (see [`HardState::durable_part_differs`]).
    pub hard_state: Option<HardState>,
    /// To install (state machine AND log) and persist, if one arrived.
    pub snapshot: Option<Snapshot>,
    /// To append to the durable log, overwriting any conflicting suffix.
    pub entries: Vec<Entry>,
    /// May be sent at once, before the write of this Ready completes
    /// (a leader's appends and heartbeats; thesis §10.2.1).
    pub messages: Vec<Message>,
    /// Must be sent only after this Ready's write is durable (votes and
    /// acknowledgements promise persisted state).
    pub persisted_messages: Vec<Message>,
    /// Committed entries to apply, in order.
    pub committed_entries: Vec<Entry>,
    /// Read indexes confirmed since the last Ready.
    pub read_states: Vec<ReadState>,
    /// Contexts of reads started on this node (`read_index`) that will never
    /// get a ReadState: leadership changed, or the leader was forgotten.
    /// Fail them (retryably) instead of letting the client wait.
    pub dropped_reads: Vec<Vec<u8>>,
    /// Whether `hard_state` changed term or vote, not only commit.
    term_or_vote_changed: bool,
}

impl Ready {
    /// Whether the write must be fsynced before the persisted messages go
    /// out or the entries are acknowledged. A new commit index alone does
    /// not need it (etcd's `MustSync` agrees).
    pub fn must_sync(&self) -> bool {
        self.term_or_vote_changed || self.snapshot.is_some() || !self.entries.is_empty()
    }
}

/// What `advance` needs to remember of the Ready it acknowledges.
#[derive(Clone, Copy, Debug, Default)]
struct ReadyMark {
    last_entry: Option<(LogIndex, Term)>,
    snapshot_index: Option<LogIndex>,
    last_committed: Option<LogIndex>,
}

/// A read-only view for status pages and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub hard_state: HardState,
    pub soft_state: SoftState,
    pub applied: LogIndex,
    pub persisted: LogIndex,
    pub first_index: LogIndex,
    pub last_index: LogIndex,
    pub conf_state: ConfState,
    /// On a leader: each member's (matched, next_index, state).
    pub progress: Vec<(NodeId, LogIndex, LogIndex, ProgressState)>,
    pub lead_transferee: Option<NodeId>,
    pub quiesced: bool,
}

/// One group's Raft, driven by the runtime.
pub struct RawNode<S: LogStore> {
    raft: Raft<S>,
    previous_soft_state: SoftState,
    previous_hard_state: HardState,
    /// Set between `ready()` and `advance()`.
    pending: Option<ReadyMark>,
}

impl<S: LogStore> RawNode<S> {
    /// Creates (or restarts) a member from what it persisted: the hard state,
    /// the configuration as of the applied index, and the log in `store`.
    pub fn new(config: Config, store: S, hard_state: HardState, conf_state: &ConfState) -> Result<RawNode<S>> {
        let raft = Raft::new(config, store, hard_state, conf_state)?;
        let previous_soft_state = SoftState { leader: raft.leader, role: raft.role };
        let previous_hard_state = raft.hard_state();
        Ok(RawNode { raft, previous_soft_state, previous_hard_state, pending: None })
    }

    pub fn id(&self) -> NodeId {
        self.raft.id
    }

    /// Advances the clock by one tick, waking a quiesced group. Does
    /// nothing once the group has failed.
    pub fn tick(&mut self) {
        if self.raft.check_failure().is_ok() {
            self.raft.tick();
        }
    }

    /// Feeds a message from a peer.
    pub fn step(&mut self, message: Message) -> Result<()> {
        self.raft.check_failure()?;
        let result = self.raft.step(message);
        self.raft.check_failure()?;
        result
    }

    /// Starts an election now (tests and operator tools).
    pub fn campaign(&mut self) {
        if self.raft.check_failure().is_ok() {
            self.raft.wake();
            self.raft.hup(false);
        }
    }

    /// Appends a command to the log (leader only). The returned id tells
    /// whether a later applied entry is this proposal.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<ProposalId> {
        let ids = self.append_proposals(vec![EntryPayload::Normal(data)])?;
        Ok(ids[0])
    }

    /// Appends many commands at once (leader only), one id per command, in
    /// order. However the proposals arrive between two `ready()` calls, they
    /// go out as one append per follower; this saves the per-call checks.
    pub fn propose_batch(&mut self, commands: Vec<Vec<u8>>) -> Result<Vec<ProposalId>> {
        self.append_proposals(commands.into_iter().map(EntryPayload::Normal).collect())
    }

    /// Proposes a membership change (leader only; one at a time).
    pub fn propose_conf_change(&mut self, change: ConfChange) -> Result<ProposalId> {
        self.raft.check_failure()?;
        self.raft.wake();
        let raft = &self.raft;
        if raft.role == Role::Leader && raft.pending_conf_index > raft.log.applied {
            return Err(RaftError::ConfChangePending);
        }
        // Reject now what would be rejected at apply time.
        raft.tracker.config.apply(&change)?;
        let leave = change.is_leave_joint();
        let id = self.append_proposals(vec![EntryPayload::ConfChange(change)])?[0];
        self.raft.pending_conf_index = id.index;
        if leave {
            self.raft.leave_joint_index = id.index;
        }
        Ok(id)
    }

    fn append_proposals(&mut self, payloads: Vec<EntryPayload>) -> Result<Vec<ProposalId>> {
        self.raft.check_failure()?;
        let raft = &mut self.raft;
        raft.wake();
        if raft.role != Role::Leader {
            return Err(RaftError::NotLeader { hint: raft.leader });
        }
        if raft.lead_transferee.is_some() {
            return Err(RaftError::ProposalDropped("leadership is being transferred"));
        }
        if !raft.tracker.is_voter(raft.id) {
            return Err(RaftError::ProposalDropped("this node was removed from the group"));
        }
        let (first, term) = (raft.log.last_index().next(), raft.term);
        let entries: Vec<Entry> = payloads
            .into_iter()
            .zip(first.0..)
            .map(|(payload, i)| Entry { term, index: LogIndex(i), payload })
            .collect();
        let ids = entries.iter().map(|e| ProposalId { index: e.index, term }).collect();
        raft.log.append(&entries);
        // Sent in `ready()`, together with every other proposal of this turn.
        raft.entries_to_send = true;
        Ok(ids)
    }

    /// Asks for a linearizable read point. The answer arrives as a
    /// `ReadState` with the same context in a later Ready; on a follower the
    /// request is forwarded to the leader.
    pub fn read_index(&mut self, context: Vec<u8>) -> Result<()> {
        self.raft.check_failure()?;
        let raft = &mut self.raft;
        raft.wake();
        match (raft.role, raft.leader) {
            (Role::Leader, _) => {
                let id = raft.id;
                raft.handle_read_index(id, context);
                Ok(())
            }
            (Role::Follower, Some(leader)) => {
                let mut message = Message::new(super::types::MessageKind::ReadIndex, raft.id, leader, raft.term);
                message.context = context.clone();
                raft.send(message);
                raft.forwarded_reads.push(context);
                Ok(())
            }
            (_, hint) => Err(RaftError::NotLeader { hint }),
        }
    }

    /// Hands leadership to `to` (thesis §3.10): stop accepting proposals,
    /// bring it up to date, then tell it to campaign at once.
    pub fn transfer_leader(&mut self, to: NodeId) -> Result<()> {
        self.raft.check_failure()?;
        let raft = &mut self.raft;
        raft.wake();
        if raft.role != Role::Leader {
            return Err(RaftError::NotLeader { hint: raft.leader });
        }
        if to == raft.id {
            return Err(RaftError::InvalidTransfer("already the leader".into()));
        }
        if !raft.tracker.is_voter(to) {
            return Err(RaftError::InvalidTransfer(format!("node {to} is not a voter")));
        }
        raft.lead_transferee = Some(to);
        // The transfer must finish within an election timeout.
        raft.election_elapsed = 0;
        if raft.tracker.progress[&to].matched == raft.log.last_index() {
            raft.send_timeout_now(to);
        } else {
            raft.send_append(to);
        }
        Ok(())
    }

    /// Applies a committed membership change; call it when applying the
    /// entry that carries it. Returns the configuration to persist with the
    /// applied index.
    pub fn apply_conf_change(&mut self, change: &ConfChange) -> Result<ConfState> {
        self.raft.check_failure()?;
        let raft = &mut self.raft;
        let next = raft.tracker.config.apply(change)?;
        let next_index = raft.log.last_index().next();
        raft.tracker.set_config(next, next_index);
        // A new configuration: any leave entry seen so far left an older one.
        raft.leave_joint_index = LogIndex::ZERO;
        self.after_config_change();
        Ok(self.raft.tracker.config.to_conf_state())
    }

    fn after_config_change(&mut self) {
        let raft = &mut self.raft;
        if raft.role != Role::Leader {
            return;
        }
        if !raft.tracker.is_voter(raft.id) {
            // The leader left the group (thesis §4.2.2): step down.
            raft.become_follower(raft.term, None);
            return;
        }
        if raft.lead_transferee.is_some_and(|t| !raft.tracker.is_voter(t)) {
            raft.lead_transferee = None;
        }
        // The new quorum may commit more; the commit goes out in `ready()`.
        raft.maybe_commit();
        for id in raft.tracker.progress.keys().copied().collect::<Vec<_>>() {
            raft.maybe_send_append(id, false);
        }
    }

    /// The transport could not reach `peer`: stop streaming to it.
    pub fn report_unreachable(&mut self, peer: NodeId) {
        if self.raft.role != Role::Leader {
            return;
        }
        if let Some(progress) = self.raft.tracker.progress.get_mut(&peer) {
            if progress.state == ProgressState::Replicate {
                progress.become_probe();
            }
        }
    }

    /// The transport finished (or failed) sending a snapshot to `peer`.
    pub fn report_snapshot(&mut self, peer: NodeId, delivered: bool) {
        if self.raft.role != Role::Leader {
            return;
        }
        if let Some(progress) = self.raft.tracker.progress.get_mut(&peer) {
            if progress.state == ProgressState::Snapshot {
                if !delivered {
                    progress.pending_snapshot = LogIndex::ZERO;
                }
                progress.become_probe();
                // Wait for the follower's answer before probing again.
                progress.probe_sent = true;
            }
        }
    }

    // ---- quiescence (see quiesce.rs) ----

    /// Whether the leader could quiesce now; `is_live` says which nodes the
    /// caller believes are up.
    pub fn can_quiesce(&self, is_live: impl Fn(NodeId) -> bool) -> bool {
        self.raft.check_failure().is_ok() && self.raft.can_quiesce(&is_live)
    }

    /// Quiesces the leader if it can; the quiesce heartbeats are in the next
    /// Ready. Returns whether the group is quiesced. Stop ticking it then.
    pub fn quiesce(&mut self, is_live: impl Fn(NodeId) -> bool) -> bool {
        self.raft.check_failure().is_ok() && self.raft.quiesce(&is_live)
    }

    /// Whether the group's clock is stopped (leader or follower). Any input
    /// restarts it.
    pub fn is_quiesced(&self) -> bool {
        self.raft.quiesced
    }

    /// The leader's node is unreachable: wake, and (under ReadIndex reads)
    /// forget the leader so a new one can be elected at once. Reads this
    /// follower forwarded come back as `dropped_reads`.
    pub fn forget_leader(&mut self) {
        if self.raft.check_failure().is_ok() {
            self.raft.forget_leader();
        }
    }

    /// The store failure that stopped this group, if any. A failed group
    /// refuses every input with `RaftError::Storage` and has no Ready; the
    /// caller reports it and stops serving the group.
    pub fn failure(&self) -> Option<&super::error::StorageError> {
        self.raft.log.failure()
    }

    // ---- Ready / advance ----

    fn soft_state(&self) -> SoftState {
        SoftState { leader: self.raft.leader, role: self.raft.role }
    }

    /// Whether `ready()` would return anything.
    pub fn has_ready(&self) -> bool {
        let raft = &self.raft;
        if raft.log.failure().is_some() {
            return false;
        }
        self.soft_state() != self.previous_soft_state
            || raft.hard_state() != self.previous_hard_state
            || raft.log.unstable_snapshot().is_some()
            || !raft.log.unstable_entries().is_empty()
            || !raft.messages.is_empty()
            || !raft.read_states.is_empty()
            || !raft.dropped_reads.is_empty()
            || raft.entries_to_send
            || raft.read_round_pending
            || raft.log.has_next_committed_entries()
    }

    /// Collects the work to do. Must be followed by exactly one `advance`
    /// before any other input.
    pub fn ready(&mut self) -> Ready {
        debug_assert!(self.pending.is_none(), "ready() called twice without advance()");
        self.pending = Some(ReadyMark::default());
        if self.raft.log.failure().is_some() {
            return Ready::default();
        }
        let raft = &mut self.raft;
        raft.flush_sends();
        let soft_state = SoftState { leader: raft.leader, role: raft.role };
        let hard_state = raft.hard_state();
        let entries = raft.log.unstable_entries().to_vec();
        let snapshot = raft.log.unstable_snapshot().cloned();
        let committed_entries = raft.log.next_committed_entries(raft.config.max_committed_size_per_ready_bytes);
        let (messages, persisted_messages) =
            std::mem::take(&mut raft.messages).into_iter().partition(|m| m.kind.may_send_before_persist());
        let ready = Ready {
            soft_state: (soft_state != self.previous_soft_state).then_some(soft_state),
            hard_state: (hard_state != self.previous_hard_state).then_some(hard_state),
            snapshot,
            entries,
            messages,
            persisted_messages,
            committed_entries,
            read_states: std::mem::take(&mut raft.read_states),
            dropped_reads: std::mem::take(&mut raft.dropped_reads),
            term_or_vote_changed: hard_state.durable_part_differs(&self.previous_hard_state),
        };
        self.previous_soft_state = soft_state;
        self.previous_hard_state = hard_state;
        self.pending = Some(ReadyMark {
            last_entry: ready.entries.last().map(|e| (e.index, e.term)),
            snapshot_index: ready.snapshot.as_ref().map(|s| s.metadata.index),
            last_committed: ready.committed_entries.last().map(|e| e.index),
        });
        if self.raft.log.failure().is_some() {
            // Reading the committed entries failed: none of this is usable.
            self.pending = Some(ReadyMark::default());
            return Ready::default();
        }
        ready
    }

    /// The application has persisted the Ready's state, sent its messages
    /// and applied its committed entries.
    pub fn advance(&mut self) {
        let mark = self.pending.take().unwrap_or_default();
        if self.raft.log.failure().is_some() {
            return;
        }
        let raft = &mut self.raft;
        if let Some(index) = mark.snapshot_index {
            raft.log.stable_snapshot_to(index);
        }
        if let Some((index, term)) = mark.last_entry {
            raft.log.stable_to(index, term);
        }
        if let Some(index) = mark.last_committed {
            raft.log.applied_to(index);
        }
        if raft.role == Role::Leader {
            self.after_leader_persisted();
        }
    }

    /// The leader's own write is durable: count it toward the quorum, and
    /// leave an auto-leave joint configuration once it is applied.
    fn after_leader_persisted(&mut self) {
        let raft = &mut self.raft;
        let (id, persisted) = (raft.id, raft.log.persisted);
        if let Some(progress) = raft.tracker.progress.get_mut(&id) {
            progress.maybe_update(persisted);
        }
        raft.maybe_commit();
        let config = &raft.tracker.config;
        if config.auto_leave && config.voters.is_joint() && raft.log.applied >= raft.pending_conf_index {
            let index = raft.log.last_index().next();
            let entry = Entry { term: raft.term, index, payload: EntryPayload::ConfChange(ConfChange::leave_joint()) };
            raft.log.append(&[entry]);
            raft.pending_conf_index = index;
            raft.leave_joint_index = index;
            raft.entries_to_send = true;
        }
    }

    // ---- inspection ----

    pub fn status(&self) -> Status {
        let raft = &self.raft;
        let progress = if raft.role == Role::Leader {
            raft.tracker.progress.iter().map(|(&id, p)| (id, p.matched, p.next_index, p.state)).collect()
        } else {
            Vec::new()
        };
        Status {
            id: raft.id,
            hard_state: raft.hard_state(),
            soft_state: self.soft_state(),
            applied: raft.log.applied,
            persisted: raft.log.persisted,
            first_index: raft.log.first_index(),
            last_index: raft.log.last_index(),
            conf_state: raft.tracker.config.to_conf_state(),
            progress,
            lead_transferee: raft.lead_transferee,
            quiesced: raft.quiesced,
        }
    }

    pub fn store(&self) -> &S {
        &self.raft.log.store
    }

    /// For the application to write the Ready's entries and snapshot, and
    /// to compact, between `ready()` and `advance()`.
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.raft.log.store
    }

    /// Entries in `[low, high)` as the core sees them (durable or not).
    pub fn entries(&self, low: LogIndex, high: LogIndex) -> Result<Vec<Entry>> {
        Ok(self.raft.log.slice(low, high, u64::MAX)?)
    }

    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        self.raft.log.term(index).ok()
    }

    /// Checks the invariants written on the core's fields; the simulator
    /// calls this after every step. Returns the first one broken.
    pub fn check_invariants(&self) -> std::result::Result<(), String> {
        let raft = &self.raft;
        let log = &raft.log;
        let fail = |what: String| Err(format!("node {}: {what}", raft.id));
        if log.applied > log.committed {
            return fail(format!("applied {} > committed {}", log.applied, log.committed));
        }
        if log.committed > log.last_index() {
            return fail(format!("committed {} > last index {}", log.committed, log.last_index()));
        }
        if log.persisted > log.last_index() {
            return fail(format!("persisted {} > last index {}", log.persisted, log.last_index()));
        }
        if log.first_index() > log.last_index().next() {
            return fail(format!("first index {} > last index {} + 1", log.first_index(), log.last_index()));
        }
        if raft.randomized_election_timeout < raft.config.election_timeout_ticks
            || raft.randomized_election_timeout >= 2 * raft.config.election_timeout_ticks
        {
            return fail(format!("randomized election timeout {} out of range", raft.randomized_election_timeout));
        }
        if raft.role != Role::Leader && raft.lead_transferee.is_some() {
            return fail("a non-leader has a leadership transferee".into());
        }
        if raft.quiesced && !matches!(raft.role, Role::Leader | Role::Follower) {
            return fail(format!("a quiesced {:?}", raft.role));
        }
        if raft.role == Role::Leader && raft.leader != Some(raft.id) {
            return fail("a leader that does not know it leads".into());
        }
        raft.tracker.config.check().map_err(|e| format!("node {}: {e}", raft.id))?;
        let members = raft.tracker.config.members();
        if !members.iter().eq(raft.tracker.progress.keys()) {
            return fail("progress does not track exactly the members".into());
        }
        for (id, progress) in &raft.tracker.progress {
            if progress.matched >= progress.next_index && raft.role == Role::Leader {
                return fail(format!("progress of {id}: matched {} >= next {}", progress.matched, progress.next_index));
            }
        }
        self.check_log_contiguous()
    }

    fn check_log_contiguous(&self) -> std::result::Result<(), String> {
        let log = &self.raft.log;
        let mut previous_term = log.term(log.first_index().prev()).unwrap_or(Term::ZERO);
        let mut index = log.first_index();
        // Only the tail is checked: walking thousands of entries after every
        // simulated step would dominate the run time.
        if log.last_index() > index + 64 {
            index = LogIndex(log.last_index().0 - 64);
            previous_term = log.term(index.prev()).unwrap_or(Term::ZERO);
        }
        while index <= log.last_index() {
            let term = log.term(index).map_err(|e| format!("node {}: log hole at {index}: {e}", self.raft.id))?;
            if term < previous_term {
                return Err(format!("node {}: term decreases at {index}", self.raft.id));
            }
            previous_term = term;
            index = index.next();
        }
        Ok(())
    }

    /// The current configuration (for tests and the simulator).
    pub fn configuration(&self) -> Configuration {
        self.raft.tracker.config.clone()
    }
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
