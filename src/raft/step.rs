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
        // A new commit index rides on the next append or heartbeat (see
        // `flush_sends`): acknowledgements arrive one by one, and answering
        // each with an empty append to every follower would multiply traffic.
        self.maybe_commit();
        if was_paused {
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
        let lagging = progress.matched < last_index;
        if progress.state == ProgressState::Probe && !lagging {
            // It has everything: stream to it from now on, rather than
            // probing with the next proposal first.
            progress.become_replicate();
        }
        if lagging {
            self.send_append(from);
        }
        if message.context.is_empty() {
            return;
        }
        // A learner's acknowledgement is recorded but never counted: only
        // voters make the quorum that confirms a read.
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
        // Every read that arrives before the next Ready shares one heartbeat
        // round: an acknowledgement of the newest context confirms them all.
        self.read_only.add_request(index, from, context, self.id);
        self.read_round_pending = true;
    }

    pub(super) fn committed_in_current_term(&self) -> bool {
        self.log.term_or_zero(self.log.committed) == self.term
    }

    /// Under lease reads: a quorum heard from us recently enough that none
    /// of them can have voted for another leader yet.
    pub(super) fn lease_valid(&self) -> bool {
        let Some(lease_ticks) = self.config.lease_ticks() else { return false };
        if self.lead_transferee.is_some() || self.timeout_now_sent {
            return false; // We asked someone else to take over.
        }
        if self.quiesced || self.ticks < self.lease_resumes_at_tick {
            return false; // Our clock stood still; see `lease_resumes_at_tick`.
        }
        let since = self.tracker.quorum_lease_tick(self.id, self.ticks);
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
            self.commit_to_send = true;
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
            // Past the limit the slice is empty: an append with the commit.
            Some(limit) => self.log.slice(next, limit.next().max(next), max_size),
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
        let progress = self.tracker.progress.get_mut(&to).expect("checked above");
        // The follower commits up to the last entry this message carries.
        let last = entries.last().map_or(message.index, |e| e.index);
        progress.commit_sent = progress.commit_sent.max(message.commit.min(last));
        if !entries.is_empty() {
            progress.sent_entries(last);
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
        let (id, committed, term, ticks) = (self.id, self.log.committed, self.term, self.ticks);
        let mut heartbeats = Vec::new();
        for (&to, progress) in self.tracker.progress.iter_mut().filter(|(&peer, _)| peer != id) {
            let mut message = Message::new(MessageKind::Heartbeat, id, to, term);
            message.commit = progress.matched.min(committed);
            message.context = context.clone();
            message.lease_tick = ticks;
            progress.commit_sent = progress.commit_sent.max(message.commit);
            heartbeats.push(message);
        }
        self.messages.extend(heartbeats);
    }

    /// A heartbeat round carrying the newest pending read's context, which
    /// confirms every read queued before it too.
    pub(super) fn broadcast_heartbeat_with_reads(&mut self) {
        let context = self.read_only.last_pending_context().map(<[u8]>::to_vec).unwrap_or_default();
        self.read_round_pending = false;
        self.broadcast_heartbeat(context);
    }

    pub(super) fn send_timeout_now(&mut self, to: NodeId) {
        self.timeout_now_sent = true;
        self.send(Message::new(MessageKind::TimeoutNow, self.id, to, self.term));
    }

    /// Sends what proposals, acknowledgements and reads left for this
    /// Ready: all new entries as one append per follower (more only when
    /// they exceed the message size), one heartbeat round for every read
    /// queued since the last Ready, and a new commit index. The commit waits
    /// for the next append or heartbeat, unless a follower would otherwise
    /// wait a whole heartbeat interval (the heartbeat went out this tick):
    /// then it gets one empty append in this Ready.
    pub(super) fn flush_sends(&mut self) {
        let (entries, commit) = (self.entries_to_send, self.commit_to_send);
        self.entries_to_send = false;
        self.commit_to_send = false;
        if self.role != Role::Leader {
            self.read_round_pending = false;
            return;
        }
        if self.read_round_pending {
            self.broadcast_heartbeat_with_reads();
        }
        let heartbeat_just_sent = self.heartbeat_elapsed == 0;
        let peers: Vec<NodeId> = self.tracker.progress.keys().copied().filter(|&peer| peer != self.id).collect();
        for peer in peers {
            if entries {
                while self.maybe_send_append(peer, false) {}
            }
            if commit && heartbeat_just_sent && self.owes_commit(peer) {
                self.send_append(peer);
            }
        }
    }

    /// Whether `peer` could commit more than the messages sent to it so far
    /// told it: an empty append at its next index would let it commit up to
    /// that index.
    fn owes_commit(&self, peer: NodeId) -> bool {
        let progress = &self.tracker.progress[&peer];
        progress.commit_sent < self.log.committed.min(progress.next_index.prev())
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
                if message.quiesce && self.quiesce_with_leader(&message) {
                    return Ok(()); // Asleep; an answer would wake the leader.
                }
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
                // Only reads still waiting: one dropped on a leader change was
                // already reported to the caller as failed.
                if let Some(at) = self.forwarded_reads.iter().position(|c| *c == message.context) {
                    self.forwarded_reads.swap_remove(at);
                    self.read_states.push(ReadState { index: message.index, context: message.context });
                }
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
        if !configuration.members().contains(&self.id) {
            // A snapshot from before we were added (or after we were
            // removed) would leave us with a configuration we are not in;
            // etcd refuses it too. The leader's next snapshot will do.
            return false;
        }
        let next_index = metadata.index.next();
        self.log.restore(snapshot);
        self.tracker.set_config(configuration, next_index);
        true
    }
}
