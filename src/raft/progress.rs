//! What the leader knows of each follower's log, and how it sends to it.

use std::collections::VecDeque;

use super::types::LogIndex;

/// How the leader replicates to one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// The follower's log position is unknown: send one append at a time
    /// and wait for the answer (or a heartbeat response) before the next.
    Probe,
    /// The follower is known to match up to `matched`: stream appends
    /// optimistically, up to the in-flight window.
    Replicate,
    /// A snapshot is on its way; send nothing else until it is reported.
    Snapshot,
}

/// A bounded window of in-flight appends to one follower, each identified by
/// the last index it carries.
///
/// Memory is taken only when appends are in flight and given back when the
/// group quiesces: thousands of idle groups must not each hold a window.
#[derive(Clone, Debug)]
pub struct Inflights {
    // Invariant: indexes are increasing, and len() <= capacity.
    last_indexes: VecDeque<LogIndex>,
    capacity: usize,
}

impl Inflights {
    pub fn new(capacity: usize) -> Inflights {
        Inflights { last_indexes: VecDeque::new(), capacity }
    }

    /// Gives the window's memory back (the group went idle).
    pub fn release(&mut self) {
        if self.last_indexes.is_empty() {
            self.last_indexes = VecDeque::new();
        }
    }

    /// Slots allocated, for tests of the memory promise above.
    #[cfg(test)]
    pub fn allocated_slots(&self) -> usize {
        self.last_indexes.capacity()
    }

    pub fn add(&mut self, last_index: LogIndex) {
        debug_assert!(!self.full(), "inflight window overflow");
        debug_assert!(self.last_indexes.back().is_none_or(|&b| b < last_index));
        self.last_indexes.push_back(last_index);
    }

    /// Frees every in-flight append the follower acknowledged (`<= index`).
    pub fn free_to(&mut self, index: LogIndex) {
        while self.last_indexes.front().is_some_and(|&first| first <= index) {
            self.last_indexes.pop_front();
        }
    }

    pub fn free_first_one(&mut self) {
        self.last_indexes.pop_front();
    }

    pub fn full(&self) -> bool {
        self.last_indexes.len() >= self.capacity
    }

    pub fn reset(&mut self) {
        self.last_indexes.clear();
    }
}

/// The leader's view of one peer (§5.3 nextIndex / matchIndex).
///
/// Invariant: `matched < next_index`.
#[derive(Clone, Debug)]
pub struct Progress {
    pub matched: LogIndex,
    pub next_index: LogIndex,
    pub state: ProgressState,
    /// In `Snapshot` state: the index of the snapshot being sent.
    pub pending_snapshot: LogIndex,
    /// In `Probe` state: an append is outstanding; pause until it is answered
    /// or a heartbeat response shows the follower is alive.
    pub probe_sent: bool,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// The newest `lease_tick` this follower echoed in a heartbeat response.
    pub lease_ack_tick: u64,
    /// The highest commit index a message sent to this follower let it
    /// reach (an append's commit capped at its last entry, a heartbeat's).
    /// Only decides whether a commit-only append is worth sending.
    pub commit_sent: LogIndex,
    pub inflights: Inflights,
    pub is_learner: bool,
}

impl Progress {
    pub fn new(next_index: LogIndex, max_inflight: usize, is_learner: bool) -> Progress {
        Progress {
            matched: LogIndex::ZERO,
            next_index,
            state: ProgressState::Probe,
            pending_snapshot: LogIndex::ZERO,
            probe_sent: false,
            recent_active: false,
            lease_ack_tick: 0,
            commit_sent: LogIndex::ZERO,
            inflights: Inflights::new(max_inflight),
            is_learner,
        }
    }

    fn reset_state(&mut self, state: ProgressState) {
        self.probe_sent = false;
        self.pending_snapshot = LogIndex::ZERO;
        self.state = state;
        self.inflights.reset();
    }

    pub fn become_probe(&mut self) {
        // After a snapshot, resume right after it (or after matched if the
        // follower already acknowledged more).
        if self.state == ProgressState::Snapshot {
            let pending = self.pending_snapshot;
            self.reset_state(ProgressState::Probe);
            self.next_index = self.matched.next().max(pending.next());
        } else {
            self.reset_state(ProgressState::Probe);
            self.next_index = self.matched.next();
        }
    }

    pub fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next_index = self.matched.next();
    }

    pub fn become_snapshot(&mut self, snapshot_index: LogIndex) {
        self.reset_state(ProgressState::Snapshot);
        self.pending_snapshot = snapshot_index;
    }

    /// The follower acknowledged entries up to `index`. Returns whether that
    /// was news.
    pub fn maybe_update(&mut self, index: LogIndex) -> bool {
        let updated = index > self.matched;
        if updated {
            self.matched = index;
            self.probe_sent = false;
        }
        self.next_index = self.next_index.max(index.next());
        updated
    }

    /// The leader sent entries up to `last_index` optimistically.
    pub fn sent_entries(&mut self, last_index: LogIndex) {
        match self.state {
            ProgressState::Replicate => {
                self.next_index = last_index.next();
                self.inflights.add(last_index);
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot => {}
        }
    }

    /// The follower rejected an append whose previous index was `rejected`;
    /// `hint` is where it suggests to resume. Returns false when the
    /// rejection is stale (answers an older append).
    pub fn maybe_decrease_to(&mut self, rejected: LogIndex, hint: LogIndex) -> bool {
        if self.state == ProgressState::Replicate {
            if rejected <= self.matched {
                return false;
            }
            self.next_index = self.matched.next();
            return true;
        }
        if self.next_index.prev() != rejected {
            return false;
        }
        self.next_index = hint.min(rejected).max(self.matched.next()).max(LogIndex(1));
        self.probe_sent = false;
        true
    }

    /// Whether the leader must hold back appends to this follower.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.full(),
            ProgressState::Snapshot => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inflight_window_takes_memory_only_while_appends_are_in_flight() {
        let mut inflights = Inflights::new(256);
        assert_eq!(inflights.allocated_slots(), 0, "a new window allocates nothing");
        inflights.add(LogIndex(5));
        assert!(inflights.allocated_slots() > 0);
        inflights.release();
        assert!(inflights.allocated_slots() > 0, "an append still in flight keeps its slot");
        inflights.free_to(LogIndex(5));
        inflights.release();
        assert_eq!(inflights.allocated_slots(), 0, "an empty window gives its memory back");
    }

    #[test]
    fn the_inflight_window_is_full_at_capacity_and_frees_in_order() {
        let mut inflights = Inflights::new(2);
        inflights.add(LogIndex(3));
        assert!(!inflights.full());
        inflights.add(LogIndex(7));
        assert!(inflights.full());
        inflights.free_to(LogIndex(6));
        assert!(!inflights.full(), "the append ending at 3 was acknowledged");
        inflights.add(LogIndex(9));
        inflights.free_first_one();
        inflights.free_to(LogIndex(8));
        assert!(!inflights.full());
        inflights.free_to(LogIndex(9));
        inflights.release();
        assert_eq!(inflights.allocated_slots(), 0);
    }
}
