//! Exact tests of `RaftLog` and its unstable tail: every boundary of the
//! index arithmetic the replication code relies on.

use super::*;
use crate::raft::log_store::MemoryLogStore;
use crate::raft::types::{ConfState, SnapshotMetadata};

fn ent(term: u64, index: u64) -> Entry {
    Entry::new_normal(Term(term), LogIndex(index), Vec::new())
}

fn terms(terms: &[u64], first: u64) -> Vec<Entry> {
    terms.iter().enumerate().map(|(i, &t)| ent(t, first + i as u64)).collect()
}

/// A log whose store holds entries 1..=n with `stored` terms, committed
/// and applied as given; nothing unstable.
fn log(stored: &[u64], committed: u64, applied: u64) -> RaftLog<MemoryLogStore> {
    let mut store = MemoryLogStore::new();
    store.append(&terms(stored, 1)).unwrap();
    RaftLog::new(store, LogIndex(committed), LogIndex(applied))
}

/// A log with a snapshot at `index` (term `term`) and entries after it.
fn compacted(index: u64, term: u64, after: &[u64]) -> RaftLog<MemoryLogStore> {
    let mut store = MemoryLogStore::new();
    let metadata = SnapshotMetadata { index: LogIndex(index), term: Term(term), conf_state: ConfState::default() };
    store.apply_snapshot(Snapshot { metadata, data: Vec::new() }).unwrap();
    store.append(&terms(after, index + 1)).unwrap();
    RaftLog::new(store, LogIndex(index), LogIndex(index))
}

fn snapshot(index: u64, term: u64) -> Snapshot {
    let metadata = SnapshotMetadata { index: LogIndex(index), term: Term(term), conf_state: ConfState::default() };
    Snapshot { metadata, data: b"s".to_vec() }
}

#[test]
fn a_new_log_clamps_applied_and_lifts_commit() {
    let l = log(&[1, 1, 2], 1, 2);
    assert_eq!((l.committed, l.applied, l.persisted), (LogIndex(2), LogIndex(2), LogIndex(3)));
    let l = log(&[1, 1, 2], 5, 9);
    assert_eq!((l.committed, l.applied), (LogIndex(3), LogIndex(3)), "never past the last index");
    let l = compacted(5, 2, &[2, 3]);
    assert_eq!(
        (l.first_index(), l.last_index(), l.committed, l.applied),
        (LogIndex(6), LogIndex(7), LogIndex(5), LogIndex(5))
    );
    let mut store = MemoryLogStore::new();
    store.apply_snapshot(snapshot(4, 1)).unwrap();
    let l = RaftLog::new(store, LogIndex(0), LogIndex(0));
    assert_eq!(l.applied, LogIndex(4), "the snapshot covers what is below it");
}

#[test]
fn terms_are_known_from_the_snapshot_index_to_the_last_index() {
    let l = compacted(5, 2, &[2, 3]);
    assert_eq!(l.term(LogIndex(4)), Err(StorageError::Compacted(LogIndex(4))));
    assert_eq!(l.term(LogIndex(5)), Ok(Term(2)));
    assert_eq!(l.term(LogIndex(7)), Ok(Term(3)));
    assert_eq!(l.term(LogIndex(8)), Err(StorageError::Unavailable(LogIndex(8))));
    assert_eq!(l.term_or_zero(LogIndex(8)), Term::ZERO);
    assert_eq!(l.last_term(), Term(3));
    assert!(l.match_term(LogIndex(6), Term(2)));
    assert!(!l.match_term(LogIndex(6), Term(3)));
    assert!(!l.match_term(LogIndex(9), Term(3)));
    let empty = log(&[], 0, 0);
    assert_eq!((empty.last_index(), empty.last_term()), (LogIndex(0), Term(0)));
}

#[test]
fn up_to_date_compares_last_term_then_last_index() {
    let l = log(&[1, 2, 2], 0, 0);
    let cases = [((3, 2), true), ((4, 2), true), ((2, 2), false), ((1, 3), true), ((9, 1), false)];
    for ((index, term), expected) in cases {
        assert_eq!(l.is_up_to_date(LogIndex(index), Term(term)), expected, "({index}, {term})");
    }
}

#[test]
fn unstable_entries_overwrite_from_their_first_index() {
    let mut l = log(&[1, 1], 1, 1);
    assert_eq!(l.append(&terms(&[2, 2], 3)), LogIndex(4));
    assert_eq!(l.unstable_entries(), terms(&[2, 2], 3).as_slice());
    // Plain append after the unstable tail.
    l.append(&[ent(2, 5)]);
    assert_eq!(l.unstable_entries().len(), 3);
    // Inside the tail: truncate it there.
    l.append(&[ent(3, 4)]);
    assert_eq!(l.unstable_entries(), &[ent(2, 3), ent(3, 4)]);
    // Before the tail, into the stable part: everything unstable is replaced.
    l.append(&[ent(3, 2)]);
    assert_eq!(l.unstable_entries(), &[ent(3, 2)]);
    assert_eq!(l.persisted, LogIndex(1), "the overwritten stable entry is not durable any more");
    assert_eq!((l.last_index(), l.last_term()), (LogIndex(2), Term(3)));
    assert_eq!(l.append(&[]), LogIndex(2), "an empty append changes nothing");
}

#[test]
fn stable_to_needs_the_same_term_at_the_index() {
    let mut l = log(&[1], 1, 1);
    l.append(&terms(&[2, 2, 2], 2));
    l.stable_to(LogIndex(3), Term(1));
    assert_eq!((l.unstable_entries().len(), l.persisted), (3, LogIndex(1)), "wrong term: overwritten since");
    l.stable_to(LogIndex(3), Term(2));
    assert_eq!((l.unstable_entries(), l.persisted), (&[ent(2, 4)][..], LogIndex(3)));
    l.stable_to(LogIndex(2), Term(2));
    assert_eq!((l.unstable_entries().len(), l.persisted), (1, LogIndex(3)), "below the tail: nothing to do");
    l.stable_to(LogIndex(4), Term(2));
    assert!(l.unstable_entries().is_empty());
    assert_eq!(l.persisted, LogIndex(4));
}

#[test]
fn maybe_append_checks_the_previous_entry_and_commits_only_new_entries() {
    // No entry at the previous index, or another term there: refused.
    let mut l = log(&[1, 1, 2], 1, 1);
    assert_eq!(l.maybe_append(LogIndex(4), Term(2), LogIndex(3), &[]), None);
    assert_eq!(l.maybe_append(LogIndex(3), Term(1), LogIndex(3), &[]), None);
    assert_eq!(l.committed, LogIndex(1));
    // Matching entries are not rewritten; the commit stops at the last new
    // entry even though the log holds more (a stale suffix past it).
    let mut l = log(&[1, 1, 2], 1, 1);
    assert_eq!(l.maybe_append(LogIndex(1), Term(1), LogIndex(3), &[ent(1, 2)]), Some(LogIndex(2)));
    assert!(l.unstable_entries().is_empty());
    assert_eq!(l.committed, LogIndex(2));
    // A conflict truncates from the first differing entry.
    assert_eq!(
        l.maybe_append(LogIndex(1), Term(1), LogIndex(2), &[ent(1, 2), ent(3, 3), ent(3, 4)]),
        Some(LogIndex(4))
    );
    assert_eq!(l.unstable_entries(), &[ent(3, 3), ent(3, 4)]);
    assert_eq!(l.committed, LogIndex(2), "the leader's commit bounds it");
    // An empty append commits up to its previous index at most.
    assert_eq!(l.maybe_append(LogIndex(3), Term(3), LogIndex(9), &[]), Some(LogIndex(3)));
    assert_eq!(l.committed, LogIndex(3));
}

#[test]
fn the_first_conflict_is_the_first_entry_not_held_with_its_term() {
    let l = log(&[1, 2, 2], 0, 0);
    assert_eq!(l.find_conflict(&terms(&[1, 2, 2], 1)), None);
    assert_eq!(l.find_conflict(&terms(&[2, 2], 2)), None);
    assert_eq!(l.find_conflict(&terms(&[1, 3, 3], 1)), Some(LogIndex(2)));
    assert_eq!(l.find_conflict(&terms(&[2, 3], 3)), Some(LogIndex(4)));
    assert_eq!(l.find_conflict(&[]), None);
}

#[test]
fn a_rejection_hint_skips_back_over_the_conflicting_term_but_not_past_commit() {
    // Log: 1:1 2:2 3:2 4:2 5:3, committed 1.
    let l = log(&[1, 2, 2, 2, 3], 1, 1);
    assert_eq!(l.conflict_hint(LogIndex(7)), (Term(0), LogIndex(6)), "shorter log: resume after its end");
    assert_eq!(l.conflict_hint(LogIndex(6)), (Term(0), LogIndex(6)));
    assert_eq!(l.conflict_hint(LogIndex(5)), (Term(3), LogIndex(5)));
    assert_eq!(l.conflict_hint(LogIndex(4)), (Term(2), LogIndex(2)));
    assert_eq!(l.conflict_hint(LogIndex(2)), (Term(2), LogIndex(2)));
    // Committed entries match the leader's: never hint at or below them.
    let l = log(&[1, 2, 2, 2, 3], 3, 3);
    assert_eq!(l.conflict_hint(LogIndex(4)), (Term(2), LogIndex(4)));
    // A compacted index: resume after the commit.
    let l = compacted(5, 2, &[2, 3]);
    assert_eq!(l.conflict_hint(LogIndex(3)), (Term(0), LogIndex(6)));
}

#[test]
fn the_leader_finds_its_last_entry_of_a_term_at_or_below_an_index() {
    // Log: 1:1 2:2 3:2 4:4 5:4.
    let l = log(&[1, 2, 2, 4, 4], 0, 0);
    assert_eq!(l.last_index_of_term(LogIndex(5), Term(4)), Some(LogIndex(5)));
    assert_eq!(l.last_index_of_term(LogIndex(5), Term(2)), Some(LogIndex(3)));
    assert_eq!(l.last_index_of_term(LogIndex(2), Term(2)), Some(LogIndex(2)));
    assert_eq!(l.last_index_of_term(LogIndex(9), Term(2)), Some(LogIndex(3)), "from the last index down");
    assert_eq!(l.last_index_of_term(LogIndex(5), Term(3)), None, "term 3 is not in the log");
    assert_eq!(l.last_index_of_term(LogIndex(5), Term(1)), Some(LogIndex(1)));
    assert_eq!(l.last_index_of_term(LogIndex(1), Term(0)), Some(LogIndex(0)), "index 0 has term 0");
    assert_eq!(l.last_index_of_term(LogIndex(0), Term(0)), Some(LogIndex(0)));
    let l = compacted(5, 2, &[4]);
    assert_eq!(l.last_index_of_term(LogIndex(6), Term(1)), None, "below the snapshot nothing is known");
    assert_eq!(l.last_index_of_term(LogIndex(6), Term(2)), Some(LogIndex(5)));
}

#[test]
fn commit_moves_forward_only_and_only_onto_the_current_term_when_counted() {
    let mut l = log(&[1, 1, 2], 1, 1);
    l.commit_to(LogIndex(0));
    assert_eq!(l.committed, LogIndex(1));
    assert!(!l.maybe_commit(LogIndex(2), Term(2)), "entry 2 is of term 1");
    assert!(!l.maybe_commit(LogIndex(1), Term(1)), "not past the commit index");
    assert!(l.maybe_commit(LogIndex(3), Term(2)));
    assert_eq!(l.committed, LogIndex(3));
    assert!(!l.maybe_commit(LogIndex(3), Term(2)), "already committed");
}

#[test]
fn applied_moves_within_applied_and_commit() {
    let mut l = log(&[1, 1, 1], 3, 1);
    l.applied_to(LogIndex(0));
    assert_eq!(l.applied, LogIndex(1), "zero means nothing was applied");
    l.applied_to(LogIndex(3));
    assert_eq!(l.applied, LogIndex(3));
}

#[test]
fn slices_combine_the_store_and_the_unstable_tail_within_bounds() {
    let mut l = log(&[1, 1, 1], 3, 3);
    l.append(&terms(&[2, 2], 4));
    assert_eq!(l.slice(LogIndex(2), LogIndex(6), u64::MAX), Ok(terms(&[1, 1, 2, 2], 2)));
    assert_eq!(l.slice(LogIndex(4), LogIndex(6), u64::MAX), Ok(terms(&[2, 2], 4)));
    assert_eq!(l.slice(LogIndex(1), LogIndex(3), u64::MAX), Ok(terms(&[1, 1], 1)));
    assert_eq!(l.slice(LogIndex(3), LogIndex(3), u64::MAX), Ok(Vec::new()));
    assert_eq!(l.slice(LogIndex(0), LogIndex(2), u64::MAX), Err(StorageError::Compacted(LogIndex(0))));
    assert_eq!(l.slice(LogIndex(5), LogIndex(7), u64::MAX), Err(StorageError::Unavailable(LogIndex(6))));
    // The size limit: each empty entry counts 24 bytes; the first always goes.
    assert_eq!(l.slice(LogIndex(1), LogIndex(6), 0), Ok(terms(&[1], 1)));
    assert_eq!(l.slice(LogIndex(2), LogIndex(6), 48), Ok(terms(&[1, 1], 2)), "cut inside the stable part");
    assert_eq!(l.slice(LogIndex(3), LogIndex(6), 48), Ok(terms(&[1, 2], 3)), "cut inside the tail");
    assert_eq!(l.entries_from(LogIndex(4), u64::MAX), Ok(terms(&[2, 2], 4)));
    assert_eq!(l.entries_from(LogIndex(6), u64::MAX), Ok(Vec::new()));
}

#[test]
fn committed_entries_are_handed_out_once_and_not_while_a_snapshot_waits() {
    let mut l = log(&[1, 1, 1], 3, 1);
    assert!(l.has_next_committed_entries());
    assert_eq!(l.next_committed_entries(u64::MAX), terms(&[1, 1], 2));
    assert_eq!(l.next_committed_entries(24), terms(&[1], 2), "bounded by size");
    l.applied_to(LogIndex(3));
    assert!(!l.has_next_committed_entries());
    assert!(l.next_committed_entries(u64::MAX).is_empty());

    l.restore(snapshot(9, 2));
    assert_eq!((l.committed, l.first_index(), l.last_index()), (LogIndex(9), LogIndex(10), LogIndex(9)));
    assert!(!l.has_next_committed_entries(), "the snapshot replaces them");
    assert!(l.next_committed_entries(u64::MAX).is_empty());
    assert_eq!(l.snapshot(), Ok(snapshot(9, 2)), "a pending snapshot is what we would send");
    l.stable_snapshot_to(LogIndex(8));
    assert!(l.unstable_snapshot().is_some(), "another index: still pending");
    l.stable_snapshot_to(LogIndex(9));
    assert!(l.unstable_snapshot().is_none());
    assert_eq!((l.persisted, l.applied), (LogIndex(9), LogIndex(9)));
}

#[test]
fn committed_entries_start_after_a_compacted_applied_index() {
    // Applied 2 but the store starts at 6 (snapshot at 5): entries 6.. only.
    let mut l = compacted(5, 2, &[2, 3]);
    l.commit_to(LogIndex(7));
    assert!(l.has_next_committed_entries());
    assert_eq!(l.next_committed_entries(u64::MAX), terms(&[2, 3], 6));
    l.commit_to(LogIndex(5));
    let l = compacted(5, 2, &[2]);
    assert!(!l.has_next_committed_entries(), "committed 5 is the snapshot itself");
}

#[test]
fn restoring_a_snapshot_resets_the_log_and_lowers_persisted() {
    let mut l = log(&[1, 1, 1], 2, 2);
    l.restore(snapshot(5, 3));
    assert_eq!(l.persisted, LogIndex(3), "the store's log is not the snapshot's");
    assert_eq!(l.term(LogIndex(5)), Ok(Term(3)));
    assert_eq!(l.term(LogIndex(4)), Err(StorageError::Compacted(LogIndex(4))));
    assert_eq!(l.last_term(), Term(3));
    // Entries after the pending snapshot.
    l.append(&[ent(3, 6)]);
    assert_eq!(l.slice(LogIndex(6), LogIndex(7), u64::MAX), Ok(vec![ent(3, 6)]));
    assert_eq!(l.unstable.last_index(), Some(LogIndex(6)));
    let unstable = Unstable { snapshot: None, entries: Vec::new(), offset: LogIndex(3) };
    assert_eq!(unstable.last_index(), None);
    assert_eq!(unstable.term(LogIndex(2)), None);
}

#[test]
fn a_store_failure_is_remembered_and_other_errors_are_not() {
    let l = log(&[1], 1, 1);
    assert_eq!(l.term(LogIndex(5)), Err(StorageError::Unavailable(LogIndex(5))));
    assert_eq!(l.note::<()>(Err(StorageError::Compacted(LogIndex(1)))), Err(StorageError::Compacted(LogIndex(1))));
    assert_eq!(l.failure(), None);
    let broken = StorageError::Store("disk".into());
    assert_eq!(l.note::<()>(Err(broken.clone())), Err(broken.clone()));
    assert_eq!(l.note::<()>(Err(StorageError::Store("second".into()))), Err(StorageError::Store("second".into())));
    assert_eq!(l.failure(), Some(&broken), "the first failure is kept");
    assert_eq!(l.note(Ok(7)), Ok(7));
}

#[test]
fn the_tail_is_not_marked_stable_at_the_pending_snapshots_own_index() {
    let mut unstable = Unstable { snapshot: Some(snapshot(5, 3)), entries: vec![ent(3, 6)], offset: LogIndex(6) };
    assert_eq!(unstable.term(LogIndex(5)), Some(Term(3)));
    unstable.stable_to(LogIndex(5), Term(3));
    assert_eq!((unstable.offset, unstable.entries.len()), (LogIndex(6), 1), "the snapshot is installed separately");
    unstable.stable_to(LogIndex(6), Term(3));
    assert_eq!((unstable.offset, unstable.entries.len()), (LogIndex(7), 0));
}
