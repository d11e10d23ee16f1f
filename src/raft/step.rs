//! The role-specific message handlers (`step_leader`, `step_candidate`,
//! `step_follower`) and the leader's replication machinery.

use super::error::Result;
use super::log_store::LogStore;
use super::progress::ProgressState;
use super::quorum::VoteResult;
use super::raft::{CampaignKind, Raft, Role};
use super::types::{LogIndex, Message, MessageKind, NodeId, ReadState};

impl<S: LogStore> Raft<S> {
    // ---- leader ----

    pub(super) fn step_leader(&mut self, message: Message) -> Result<()> {
        let from = message.from;
        if !self.tracker.progress.contains_key(&from) {
            return Ok(()); // Not a member (any more).
        }
        match message.kind {
            MessageKind::AppendEntriesResponse => self.handle_append_response(&message),
            MessageKind::HeartbeatResponse => self.handle_heartbeat_response(&message),
            MessageKind::ReadIndex => self.handle_read_index(from, message.context),
            // Another node of our term cannot lead; anything else is stale.
            _ => {}
        }
        Ok(())
    }

    fn handle_append_response(&mut self, message: &Message) {
        let from = message.from;
        let first_index = self.log.first_index();
        let progress = self.tracker.progress.get_mut(&from).expect("checked by step_leader");
        progress.recent_active = true;
        if message.reject {
            let hint = self.next_index_after_rejection(message);
            let progress = self.tracker.progress.get_mut(&from).expect("checked by step_leader");
            if progress.maybe_decrease_to(message.index, hint) {
                if progress.state == ProgressState::Replicate {
                    progress.become_probe();
                }
                self.send_append(from);
            }
            return;
        }
        let was_paused = progress.is_paused();
        if !progress.maybe_update(message.index) {
            return;
        }
        match progress.state {
            ProgressState::Probe => progress.become_replicate(),
            ProgressState::Snapshot if progress.matched.next() >= first_index => {
                progress.become_probe();
                progress.become_replicate();
            }
            ProgressState::Snapshot => {}
            ProgressState::Replicate => progress.inflights.free_to(message.index),
        }
        let matched = progress.matched;
        if self.maybe_commit() {
            self.broadcast_append();
        } else if was_paused {
            self.send_append(from);
        }
        // Fill the in-flight window.
        while self.maybe_send_append(from, false) {}
        if self.lead_transferee == Some(from) && matched == self.log.last_index() {
            self.send_timeout_now(from);
        }
    }

    /// §5.3 optimisation: skip back over the whole conflicting term. If our
    /// log has the follower's conflicting term, resume after our last entry
    /// of it; otherwise at the first index the follower holds of it.
    fn next_index_after_rejection(&self, message: &Message) -> LogIndex {
        if message.log_term == super::types::Term::ZERO {
            return message.reject_hint;
        }
        match self.log.last_index_of_term(message.index, message.log_term) {
            Some(last) => last.next(),
            None => message.reject_hint,
        }
    }

    fn handle_heartbeat_response(&mut self, message: &Message) {
        let from = message.from;
        let last_index = self.log.last_index();
        let progress = self.tracker.progress.get_mut(&from).expect("checked by step_leader");
        progress.recent_active = true;
        progress.probe_sent = false;
        progress.lease_ack_tick = progress.lease_ack_tick.max(message.lease_tick);
        if progress.state == ProgressState::Replicate && progress.inflights.full() {
            progress.inflights.free_first_one();
        }
        let (lagging, is_learner) = (progress.matched < last_index, progress.is_learner);
        if lagging {
            self.send_append(from);
        }
        if message.context.is_empty() || is_learner {
            return;
        }
        let Some(acks) = self.read_only.receive_ack(from, &message.context) else { return };
        let votes = acks.iter().map(|&id| (id, true)).collect();
        if self.tracker.config.voters.vote_result(&votes) != VoteResult::Won {
            return;
        }
        for read in self.read_only.advance(&message.context) {
            self.answer_read(read.from, read.index, read.context);
        }
    }

    fn answer_read(&mut self, to: NodeId, index: LogIndex, context: Vec<u8>) {
        if to == self.id {
            self.read_states.push(ReadState { index, context });
        } else {
            let mut response = Message::new(MessageKind::ReadIndexResponse, self.id, to, self.term);
            response.index = index;
            response.context = context;
            self.send(response);
        }
    }

    /// A read-index request from this node (`from == id`) or a follower.
    pub(super) fn handle_read_index(&mut self, from: NodeId, context: Vec<u8>) {
        if !self.committed_in_current_term() {
            // Our commit index may lag the true one until an entry of this
            // term commits (Redis-Raft #18): hold the read until then.
            self.reads_awaiting_commit.push((from, context));
            return;
        }
        let index = self.log.committed;
        let single_voter = self.tracker.config.voters.ids().len() == 1 && self.tracker.is_voter(self.id);
        if single_voter || self.lease_valid() {
            self.answer_read(from, index, context);
            return;
        }
        self.read_only.add_request(index, from, context.clone(), self.id);
        self.broadcast_heartbeat(context);
    }

    pub(super) fn committed_in_current_term(&self) -> bool {
        self.log.term_or_zero(self.log.committed) == self.term
    }

    /// Under lease reads: a quorum heard from us recently enough that none
    /// of them can have voted for another leader yet.
    pub(super) fn lease_valid(&self) -> bool {
        let super::raft::ReadMode::Lease { clock_drift_bound_ticks } = self.config.read_mode else {
            return false;
        };
        if self.lead_transferee.is_some() {
            return false; // We asked someone else to take over.
        }
        let since = self.tracker.quorum_lease_tick(self.id, self.ticks);
        let lease_ticks = (self.config.election_timeout_ticks - clock_drift_bound_ticks) as u64;
        since > 0 && self.ticks < since + lease_ticks
    }

    /// Releases reads held until this leader's first commit.
    pub(super) fn release_reads_awaiting_commit(&mut self) {
        if self.reads_awaiting_commit.is_empty() || !self.committed_in_current_term() {
            return;
        }
        for (from, context) in std::mem::take(&mut self.reads_awaiting_commit) {
            self.handle_read_index(from, context);
        }
    }

    /// Advances the commit index to what a (joint) quorum has acknowledged,
    /// counting only entries of the current term (§5.4.2).
    pub(super) fn maybe_commit(&mut self) -> bool {
        let committed = self.tracker.committed();
        let advanced = self.log.maybe_commit(committed, self.term);
        if advanced {
            self.release_reads_awaiting_commit();
        }
        advanced
    }

    // ---- sending ----

    pub(super) fn send_append(&mut self, to: NodeId) {
        self.maybe_send_append(to, true);
    }

    /// Sends the follower what it lacks: entries from its next index, or a
    /// snapshot if those are compacted. Returns whether a message was sent.
    pub(super) fn maybe_send_append(&mut self, to: NodeId, send_if_empty: bool) -> bool {
        if to == self.id {
            return false;
        }
        let Some(progress) = self.tracker.progress.get(&to) else { return false };
        if progress.is_paused() {
            return false;
        }
        let next = progress.next_index;
        let prev_term = self.log.term(next.prev());
        let max_size = self.config.max_size_per_message_bytes;
        let entries = match self.send_limit(to) {
            Some(limit) if next > limit => Ok(Vec::new()),
            Some(limit) => self.log.slice(next, limit.next(), max_size),
            None => self.log.entries_from(next, max_size),
        };
        let (Ok(prev_term), Ok(entries)) = (prev_term, entries) else {
            return self.send_snapshot(to);
        };
        if entries.is_empty() && !send_if_empty {
            return false;
        }
        let mut message = Message::new(MessageKind::AppendEntries, self.id, to, self.term);
        message.index = next.prev();
        message.log_term = prev_term;
        message.commit = self.log.committed;
        if let Some(last) = entries.last() {
            let progress = self.tracker.progress.get_mut(&to).expect("checked above");
            progress.sent_entries(last.index);
        }
        message.entries = entries;
        self.send(message);
        true
    }

    fn send_snapshot(&mut self, to: NodeId) -> bool {
        let progress = &self.tracker.progress[&to];
        if !progress.recent_active {
            return false; // Do not ship a snapshot to a node that seems down.
        }
        let Ok(snapshot) = self.log.snapshot() else { return false };
        if snapshot.metadata.index == LogIndex::ZERO {
            return false;
        }
        let progress = self.tracker.progress.get_mut(&to).expect("checked above");
        progress.become_snapshot(snapshot.metadata.index);
        let mut message = Message::new(MessageKind::InstallSnapshot, self.id, to, self.term);
        message.snapshot = Some(snapshot);
        self.send(message);
        true
    }

    pub(super) fn broadcast_append(&mut self) {
        for id in self.tracker.progress.keys().copied().collect::<Vec<_>>() {
            self.send_append(id);
        }
    }

    /// Heartbeats carry the commit index, but never past what the follower
    /// is known to hold, so it never commits an entry it may not have.
    pub(super) fn broadcast_heartbeat(&mut self, context: Vec<u8>) {
        let peers: Vec<(NodeId, LogIndex)> =
            self.tracker.progress.iter().filter(|(&id, _)| id != self.id).map(|(&id, p)| (id, p.matched)).collect();
        for (to, matched) in peers {
            let mut message = Message::new(MessageKind::Heartbeat, self.id, to, self.term);
            message.commit = matched.min(self.log.committed);
            message.context = context.clone();
            message.lease_tick = self.ticks;
            self.send(message);
        }
    }

    pub(super) fn send_timeout_now(&mut self, to: NodeId) {
        self.send(Message::new(MessageKind::TimeoutNow, self.id, to, self.term));
    }

    // ---- candidate ----

    pub(super) fn step_candidate(&mut self, message: Message) -> Result<()> {
        let response_kind = match self.role {
            Role::PreCandidate => MessageKind::RequestPreVoteResponse,
            _ => MessageKind::RequestVoteResponse,
        };
        match message.kind {
            // A leader of our term exists: it won, we lost.
            MessageKind::AppendEntries | MessageKind::Heartbeat | MessageKind::InstallSnapshot => {
                self.become_follower(self.term, Some(message.from));
                self.step_follower(message)?;
            }
            kind if kind == response_kind => {
                self.tracker.record_vote(message.from, !message.reject);
                match self.tracker.vote_result() {
                    VoteResult::Won if self.role == Role::PreCandidate => self.campaign(CampaignKind::Election),
                    VoteResult::Won => {
                        self.become_leader();
                        self.broadcast_append();
                    }
                    VoteResult::Lost => self.become_follower(self.term, None),
                    VoteResult::Pending => {}
                }
            }
            _ => {}
        }
        Ok(())
    }

    // ---- follower ----

    pub(super) fn step_follower(&mut self, message: Message) -> Result<()> {
        match message.kind {
            MessageKind::AppendEntries => {
                self.accept_leader(message.from);
                self.handle_append_entries(&message);
            }
            MessageKind::Heartbeat => {
                self.accept_leader(message.from);
                self.log.commit_to(message.commit.min(self.log.last_index()));
                let mut response = Message::new(MessageKind::HeartbeatResponse, self.id, message.from, self.term);
                response.context = message.context;
                response.lease_tick = message.lease_tick;
                self.send(response);
            }
            MessageKind::InstallSnapshot => {
                self.accept_leader(message.from);
                self.handle_snapshot(message);
            }
            MessageKind::TimeoutNow => self.hup(true),
            MessageKind::ReadIndexResponse => {
                self.read_states.push(ReadState { index: message.index, context: message.context });
            }
            _ => {}
        }
        Ok(())
    }

    fn accept_leader(&mut self, leader: NodeId) {
        self.election_elapsed = 0;
        self.leader = Some(leader);
    }

    fn handle_append_entries(&mut self, message: &Message) {
        let mut response = Message::new(MessageKind::AppendEntriesResponse, self.id, message.from, self.term);
        if message.index < self.log.committed {
            // Everything up to our commit index matches the leader already.
            response.index = self.log.committed;
        } else if let Some(last_new) =
            self.log.maybe_append(message.index, message.log_term, message.commit, &message.entries)
        {
            response.index = last_new;
        } else {
            let (conflict_term, first_index) = self.log.conflict_hint(message.index);
            response.reject = true;
            response.index = message.index;
            response.log_term = conflict_term;
            response.reject_hint = first_index;
        }
        self.send(response);
    }

    fn handle_snapshot(&mut self, message: Message) {
        let Some(snapshot) = message.snapshot else { return }; // Malformed; ignore.
        let index = snapshot.metadata.index;
        let mut response = Message::new(MessageKind::AppendEntriesResponse, self.id, message.from, self.term);
        response.index = if self.restore(snapshot) { index } else { self.log.committed };
        self.send(response);
    }

    /// Installs a snapshot unless our log already holds what it covers.
    fn restore(&mut self, snapshot: super::types::Snapshot) -> bool {
        let metadata = &snapshot.metadata;
        if metadata.index <= self.log.committed {
            return false;
        }
        if self.log.match_term(metadata.index, metadata.term) {
            // Our log already has it: just learn the commit.
            self.log.commit_to(metadata.index);
            return false;
        }
        let configuration = super::tracker::Configuration::from_conf_state(&metadata.conf_state);
        if configuration.check().is_err() {
            return false;
        }
        let next_index = metadata.index.next();
        self.log.restore(snapshot);
        self.tracker.set_config(configuration, next_index);
        true
    }
}
