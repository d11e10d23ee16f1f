//! Quiescence: a group with nothing to do stops its clock, so a node can
//! host thousands of idle groups without ticking or heartbeating them
//! (CockroachDB's quiescence; etcd's `MsgForgetLeader` for the way back).
//!
//! - The leader quiesces when every live follower holds its whole log, the
//!   whole log is committed, applied and durable, and nothing is pending
//!   (no read, transfer, conf change or joint configuration to leave). It
//!   tells the followers with a heartbeat flagged `quiesce`.
//! - A follower whose log ends exactly where the leader's does, with the
//!   same commit, stops its clock and does not answer; any other follower
//!   answers as for a normal heartbeat, which wakes the leader again.
//! - Any input wakes a quiesced group: a tick, a message, a proposal, a read,
//!   a transfer. The caller decides when to tick; it stops ticking a group
//!   while [`RawNode::is_quiesced`](super::RawNode::is_quiesced) holds.
//! - A quiesced follower does not campaign: its leader's NODE is alive as
//!   far as the caller knows. When the caller learns that node is down it
//!   calls `forget_leader`; the follower then grants votes at once (under
//!   ReadIndex) or after its own election timeout (under leases, whose
//!   promise it must keep), and campaigns after its randomized timeout.
//! - A quiesced leader never serves a lease read: its clock stood still
//!   while real time went on. After waking it uses ReadIndex until it has
//!   ticked a full lease again.

use super::log_store::LogStore;
use super::quorum::VoteResult;
use super::raft::{Raft, ReadMode, Role};
use super::types::{Message, MessageKind, NodeId};

impl<S: LogStore> Raft<S> {
    /// Whether the leader may quiesce now. `is_live` says which nodes the
    /// caller believes are up; a follower on a down node is not waited for
    /// (it catches up when it comes back and wakes the group), but the live
    /// voters must still form a quorum.
    pub(super) fn can_quiesce(&self, is_live: &dyn Fn(NodeId) -> bool) -> bool {
        let last = self.log.last_index();
        let log = &self.log;
        let idle = self.role == Role::Leader
            && self.lead_transferee.is_none()
            && !self.tracker.config.voters.is_joint()
            && log.committed == last
            && log.applied == last
            && log.persisted == last
            && self.messages.is_empty()
            && !self.entries_to_send
            && !self.read_round_pending
            && self.read_only.is_empty()
            && self.reads_awaiting_commit.is_empty();
        if !idle {
            return false;
        }
        let mut live_voters = std::collections::BTreeMap::new();
        for (&id, progress) in &self.tracker.progress {
            let live = id == self.id || is_live(id);
            if id != self.id && live && progress.matched != last {
                return false;
            }
            if !progress.is_learner {
                live_voters.insert(id, live);
            }
        }
        self.tracker.config.voters.vote_result(&live_voters) == VoteResult::Won
    }

    /// Quiesces the leader if it may, sending every follower a quiesce
    /// heartbeat. Returns whether the group is quiesced.
    pub(super) fn quiesce(&mut self, is_live: &dyn Fn(NodeId) -> bool) -> bool {
        if self.quiesced {
            return true;
        }
        if !self.can_quiesce(is_live) {
            return false;
        }
        self.quiesced = true;
        let (id, term, ticks) = (self.id, self.term, self.ticks);
        let (last, last_term, committed) = (self.log.last_index(), self.log.last_term(), self.log.committed);
        let mut heartbeats = Vec::new();
        for (&to, progress) in self.tracker.progress.iter_mut() {
            progress.inflights.release();
            if to == id {
                continue;
            }
            let mut message = Message::new(MessageKind::Heartbeat, id, to, term);
            message.quiesce = true;
            message.index = last;
            message.log_term = last_term;
            // A follower on a down node may lack entries: it gets only what
            // it is known to hold, so it would answer (and wake us) instead
            // of sleeping with a stale commit.
            message.commit = progress.matched.min(committed);
            message.lease_tick = ticks;
            progress.commit_sent = progress.commit_sent.max(message.commit);
            heartbeats.push(message);
        }
        self.messages.extend(heartbeats);
        true
    }

    /// A follower got a quiesce heartbeat from its leader (already
    /// accepted). It sleeps only if its log is exactly the leader's and the
    /// heartbeat commits all of it; returns whether it did.
    pub(super) fn quiesce_with_leader(&mut self, message: &Message) -> bool {
        let last = self.log.last_index();
        let whole_log = last == message.index && self.log.match_term(message.index, message.log_term);
        if !whole_log || message.commit != message.index {
            return false;
        }
        self.log.commit_to(message.commit);
        self.quiesced = true;
        true
    }

    /// Restarts a quiesced group's clock. Both clocks start from zero: the
    /// follower counts its election timeout from now (its leader's node was
    /// alive until now, as far as anyone told it), and the leader starts a
    /// fresh check-quorum round, hearing from nobody yet.
    pub(super) fn wake(&mut self) {
        if !self.quiesced {
            return;
        }
        self.quiesced = false;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        if self.role == Role::Leader {
            if let Some(lease_ticks) = self.config.lease_ticks() {
                self.lease_resumes_at_tick = self.ticks + lease_ticks;
            }
            let id = self.id;
            for (&peer, progress) in self.tracker.progress.iter_mut() {
                progress.recent_active = peer == id;
            }
        }
    }

    /// The caller learned that the leader's node is unreachable (the peer
    /// stream broke). Wakes the follower; under ReadIndex reads it also
    /// forgets the leader, so it grants votes at once instead of waiting out
    /// an election timeout. Under leases the leader may still be serving
    /// lease reads on the promise this follower made, so the promise is kept:
    /// it votes once its own clock has run an election timeout, as etcd does.
    /// Reads this follower forwarded to that leader are reported dropped.
    pub(super) fn forget_leader(&mut self) {
        if self.role != Role::Follower {
            return;
        }
        self.wake();
        self.dropped_reads.append(&mut self.forwarded_reads);
        if self.config.read_mode == ReadMode::Safe {
            self.leader = None;
        }
    }
}
