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

    fn indexes(inflights: &Inflights) -> Vec<u64> {
        inflights.last_indexes.iter().map(|i| i.0).collect()
    }

    /// A progress in `state` with the given matched and next indexes, window of `cap`.
    fn progress(state: ProgressState, matched: u64, next: u64, cap: usize) -> Progress {
        let mut p = Progress::new(LogIndex(next), cap, false);
        p.matched = LogIndex(matched);
        p.state = state;
        p
    }

    // A new progress probes from the given next index with everything else zero or false.
    #[test]
    fn a_new_progress_probes_from_next_index() {
        let p = Progress::new(LogIndex(7), 3, true);
        assert_eq!((p.matched, p.next_index, p.state), (LogIndex(0), LogIndex(7), ProgressState::Probe));
        assert_eq!((p.pending_snapshot, p.commit_sent, p.lease_ack_tick), (LogIndex(0), LogIndex(0), 0));
        assert!(!p.probe_sent && !p.recent_active && p.is_learner);
        assert!(indexes(&p.inflights).is_empty());
        assert_eq!(p.inflights.capacity, 3);
        assert!(!Progress::new(LogIndex(1), 3, false).is_learner);
    }

    // Probe after Replicate resumes at matched + 1 and clears the window and probe flag.
    #[test]
    fn become_probe_from_replicate_resumes_after_matched() {
        let mut p = progress(ProgressState::Replicate, 5, 9, 4);
        p.inflights.add(LogIndex(7));
        p.inflights.add(LogIndex(8));
        p.probe_sent = true;
        p.become_probe();
        assert_eq!((p.state, p.next_index, p.matched), (ProgressState::Probe, LogIndex(6), LogIndex(5)));
        assert!(!p.probe_sent);
        assert!(indexes(&p.inflights).is_empty());
        assert_eq!(p.pending_snapshot, LogIndex(0));
        // Only a Snapshot state consults pending_snapshot.
        let mut p = progress(ProgressState::Replicate, 5, 9, 4);
        p.pending_snapshot = LogIndex(20);
        p.become_probe();
        assert_eq!((p.next_index, p.pending_snapshot), (LogIndex(6), LogIndex(0)));
        let mut p = progress(ProgressState::Probe, 3, 9, 4);
        p.probe_sent = true;
        p.become_probe();
        assert_eq!((p.state, p.next_index, p.probe_sent), (ProgressState::Probe, LogIndex(4), false));
    }

    // Probe after Snapshot resumes at max(matched + 1, pending_snapshot + 1) and clears pending_snapshot.
    #[test]
    fn become_probe_from_snapshot_resumes_after_the_snapshot() {
        for (matched, pending, want) in [(5, 10, 11), (12, 10, 13), (10, 10, 11), (9, 10, 11), (11, 10, 12), (0, 0, 1)]
        {
            let mut p = progress(ProgressState::Replicate, matched, matched + 1, 4);
            p.become_snapshot(LogIndex(pending));
            p.become_probe();
            assert_eq!(p.state, ProgressState::Probe);
            assert_eq!(p.next_index, LogIndex(want), "matched {matched} pending {pending}");
            assert_eq!(p.pending_snapshot, LogIndex(0));
            assert_eq!(p.matched, LogIndex(matched));
        }
    }

    // Replicate streams from matched + 1 with an empty window and no pending snapshot.
    #[test]
    fn become_replicate_streams_after_matched() {
        let mut p = progress(ProgressState::Snapshot, 4, 9, 2);
        p.pending_snapshot = LogIndex(8);
        p.probe_sent = true;
        p.inflights.add(LogIndex(6));
        p.become_replicate();
        assert_eq!((p.state, p.next_index, p.matched), (ProgressState::Replicate, LogIndex(5), LogIndex(4)));
        assert_eq!(p.pending_snapshot, LogIndex(0));
        assert!(!p.probe_sent);
        assert!(indexes(&p.inflights).is_empty());
    }

    // Snapshot state records the snapshot index and leaves next_index and matched alone.
    #[test]
    fn become_snapshot_records_the_pending_snapshot() {
        let mut p = progress(ProgressState::Replicate, 4, 9, 2);
        p.probe_sent = true;
        p.inflights.add(LogIndex(6));
        p.become_snapshot(LogIndex(20));
        assert_eq!((p.state, p.pending_snapshot), (ProgressState::Snapshot, LogIndex(20)));
        assert_eq!((p.matched, p.next_index), (LogIndex(4), LogIndex(9)));
        assert!(!p.probe_sent);
        assert!(indexes(&p.inflights).is_empty());
    }

    // maybe_update reports news only above matched, raises next_index to at least index + 1, and
    // clears probe_sent only when it updated.
    #[test]
    fn maybe_update_table() {
        // (matched, next, index) -> (updated, matched, next)
        let cases = [
            ((5, 6), 4, (false, 5, 6)),
            ((5, 6), 5, (false, 5, 6)),
            ((5, 6), 6, (true, 6, 7)),
            ((5, 6), 9, (true, 9, 10)),
            ((5, 10), 7, (true, 7, 10)),
            ((5, 10), 9, (true, 9, 10)),
            ((5, 10), 10, (true, 10, 11)),
            ((5, 10), 3, (false, 5, 10)),
            ((0, 1), 0, (false, 0, 1)),
            ((0, 1), 1, (true, 1, 2)),
        ];
        for ((matched, next), index, (updated, want_matched, want_next)) in cases {
            let mut p = progress(ProgressState::Probe, matched, next, 4);
            p.probe_sent = true;
            assert_eq!(p.maybe_update(LogIndex(index)), updated, "({matched}, {next}) <- {index}");
            assert_eq!((p.matched, p.next_index), (LogIndex(want_matched), LogIndex(want_next)), "{index}");
            assert_eq!(p.probe_sent, !updated, "probe_sent is cleared only by news");
        }
    }

    // sent_entries: Replicate advances next and fills the window, Probe sets probe_sent, Snapshot does nothing.
    #[test]
    fn sent_entries_per_state() {
        let mut p = progress(ProgressState::Replicate, 4, 5, 2);
        p.sent_entries(LogIndex(7));
        assert_eq!(p.next_index, LogIndex(8));
        assert_eq!(indexes(&p.inflights), vec![7]);
        assert!(!p.probe_sent && !p.is_paused());
        p.sent_entries(LogIndex(9));
        assert_eq!(p.next_index, LogIndex(10));
        assert_eq!(indexes(&p.inflights), vec![7, 9]);
        assert!(p.is_paused(), "the window is full");

        let mut p = progress(ProgressState::Probe, 4, 5, 2);
        p.sent_entries(LogIndex(7));
        assert!(p.probe_sent);
        assert_eq!(p.next_index, LogIndex(5), "a probe does not move next_index");
        assert!(indexes(&p.inflights).is_empty());

        let mut p = progress(ProgressState::Snapshot, 4, 5, 2);
        p.sent_entries(LogIndex(7));
        assert!(!p.probe_sent);
        assert_eq!(p.next_index, LogIndex(5));
        assert!(indexes(&p.inflights).is_empty());
    }

    // In Replicate a rejection at or below matched is stale; above it, next falls back to matched + 1.
    #[test]
    fn maybe_decrease_to_in_replicate() {
        // (matched, next, rejected, hint) -> (accepted, next)
        let cases = [
            ((5, 10), 4, 0, (false, 10)),
            ((5, 10), 5, 0, (false, 10)),
            ((5, 10), 6, 0, (true, 6)),
            ((5, 10), 9, 2, (true, 6)),
            ((5, 10), 9, 8, (true, 6)),
            ((0, 3), 0, 0, (false, 3)),
            ((0, 3), 1, 0, (true, 1)),
        ];
        for ((matched, next), rejected, hint, (accepted, want_next)) in cases {
            let mut p = progress(ProgressState::Replicate, matched, next, 4);
            assert_eq!(p.maybe_decrease_to(LogIndex(rejected), LogIndex(hint)), accepted, "{rejected}");
            assert_eq!(p.next_index, LogIndex(want_next), "{rejected}");
            assert_eq!(p.matched, LogIndex(matched));
            assert_eq!(p.state, ProgressState::Replicate);
        }
    }

    // In Probe (and Snapshot) only a rejection of next - 1 counts; next becomes min(hint, rejected),
    // at least matched + 1 and at least 1, and probe_sent is cleared.
    #[test]
    fn maybe_decrease_to_in_probe() {
        // (matched, next, rejected, hint) -> (accepted, next)
        let cases = [
            ((0, 10), 8, 3, (false, 10)),
            ((0, 10), 10, 3, (false, 10)),
            ((0, 10), 9, 4, (true, 4)),
            ((0, 10), 9, 9, (true, 9)),
            ((0, 10), 9, 8, (true, 8)),
            ((0, 10), 9, 20, (true, 9)),
            ((0, 10), 9, 10, (true, 9)),
            ((5, 10), 9, 3, (true, 6)),
            ((5, 10), 9, 6, (true, 6)),
            ((5, 10), 9, 7, (true, 7)),
            ((5, 10), 9, 5, (true, 6)),
            ((0, 10), 9, 0, (true, 1)),
            ((0, 2), 1, 0, (true, 1)),
            ((0, 1), 0, 0, (true, 1)),
        ];
        for state in [ProgressState::Probe, ProgressState::Snapshot] {
            for ((matched, next), rejected, hint, (accepted, want_next)) in cases {
                let mut p = progress(state, matched, next, 4);
                p.probe_sent = true;
                let got = p.maybe_decrease_to(LogIndex(rejected), LogIndex(hint));
                assert_eq!(got, accepted, "{state:?} ({matched}, {next}) rejected {rejected} hint {hint}");
                assert_eq!(p.next_index, LogIndex(want_next), "{state:?} rejected {rejected} hint {hint}");
                assert_eq!(p.probe_sent, !accepted, "probe_sent is cleared only by an accepted rejection");
                assert_eq!((p.matched, p.state), (LogIndex(matched), state));
            }
        }
    }

    // Paused: Probe while a probe is out, Replicate while the window is full, Snapshot always.
    #[test]
    fn is_paused_per_state() {
        let mut p = progress(ProgressState::Probe, 0, 1, 1);
        assert!(!p.is_paused());
        p.probe_sent = true;
        assert!(p.is_paused());
        p.inflights.add(LogIndex(1));
        p.probe_sent = false;
        assert!(!p.is_paused(), "a probe ignores the window");

        let mut p = progress(ProgressState::Replicate, 0, 1, 1);
        p.probe_sent = true;
        assert!(!p.is_paused(), "replication ignores probe_sent");
        p.inflights.add(LogIndex(1));
        assert!(p.is_paused());

        let p = progress(ProgressState::Snapshot, 0, 1, 1);
        assert!(p.is_paused());
    }

    // The window keeps last indexes in order; full at exactly capacity.
    #[test]
    fn inflights_add_and_full_at_capacity() {
        let mut inflights = Inflights::new(3);
        assert!(!inflights.full());
        inflights.add(LogIndex(2));
        inflights.add(LogIndex(4));
        assert!(!inflights.full(), "2 of 3");
        inflights.add(LogIndex(9));
        assert!(inflights.full(), "3 of 3");
        assert_eq!(indexes(&inflights), vec![2, 4, 9]);
        assert!(Inflights::new(0).full());
        let mut one = Inflights::new(1);
        assert!(!one.full());
        one.add(LogIndex(1));
        assert!(one.full());
    }

    // free_to frees every append ending at or below the index and nothing above.
    #[test]
    fn inflights_free_to_boundaries() {
        let mut inflights = Inflights::new(4);
        for i in [3, 5, 8] {
            inflights.add(LogIndex(i));
        }
        inflights.free_to(LogIndex(2));
        assert_eq!(indexes(&inflights), vec![3, 5, 8]);
        inflights.free_to(LogIndex(3));
        assert_eq!(indexes(&inflights), vec![5, 8]);
        inflights.free_to(LogIndex(7));
        assert_eq!(indexes(&inflights), vec![8]);
        inflights.free_to(LogIndex(100));
        assert!(indexes(&inflights).is_empty());
        inflights.free_to(LogIndex(200));
        assert!(indexes(&inflights).is_empty());
    }

    // free_first_one frees exactly the oldest append (and nothing on an empty window); reset frees all.
    #[test]
    fn inflights_free_first_one_and_reset() {
        let mut inflights = Inflights::new(3);
        for i in [3, 5, 8] {
            inflights.add(LogIndex(i));
        }
        inflights.free_first_one();
        assert_eq!(indexes(&inflights), vec![5, 8]);
        assert!(!inflights.full());
        inflights.reset();
        assert!(indexes(&inflights).is_empty());
        inflights.free_first_one();
        assert!(indexes(&inflights).is_empty());
        assert_eq!(inflights.capacity, 3, "reset keeps the capacity");
    }
}
