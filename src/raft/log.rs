//! The Raft log as the core sees it: the durable part behind a [`LogStore`],
//! plus the not-yet-persisted tail (and snapshot) held in memory until the
//! application has written it and called `advance`.

use std::cell::OnceCell;

use super::error::StorageError;
use super::log_store::{limit_size, LogStore};
use super::types::{Entry, LogIndex, Snapshot, Term};

/// Entries and a snapshot that the core has accepted but the application has
/// not yet persisted.
///
/// Invariant: `entries[i].index == offset + i`; with a snapshot present,
/// `offset == snapshot.index + 1`.
#[derive(Debug, Default)]
struct Unstable {
    snapshot: Option<Snapshot>,
    entries: Vec<Entry>,
    offset: LogIndex,
}

impl Unstable {
    fn last_index(&self) -> Option<LogIndex> {
        match self.entries.last() {
            Some(last) => Some(last.index),
            None => self.snapshot.as_ref().map(|s| s.metadata.index),
        }
    }

    fn term(&self, index: LogIndex) -> Option<Term> {
        if index < self.offset {
            let snapshot = self.snapshot.as_ref()?;
            return (snapshot.metadata.index == index).then_some(snapshot.metadata.term);
        }
        self.entries.get((index - self.offset) as usize).map(|e| e.term)
    }

    /// Appends `new`, first dropping whatever it overwrites.
    fn truncate_and_append(&mut self, new: &[Entry]) {
        let Some(first) = new.first() else { return };
        let after = first.index;
        if after == self.offset + self.entries.len() as u64 {
            // Plain append.
        } else if after <= self.offset {
            // Replaces everything unstable.
            self.offset = after;
            self.entries.clear();
        } else {
            self.entries.truncate((after - self.offset) as usize);
        }
        self.entries.extend_from_slice(new);
    }

    /// Entries up to `index` (with `term`) are durable. A mismatched term
    /// means they were overwritten since and are still unstable.
    fn stable_to(&mut self, index: LogIndex, term: Term) {
        if self.term(index) != Some(term) || index < self.offset {
            return;
        }
        self.entries.drain(..(index.next() - self.offset) as usize);
        self.offset = index.next();
    }
}

/// The log of one group.
///
/// Invariants: `applied <= committed <= last_index()`;
/// `persisted <= last_index()`; `applied <= persisted` once a snapshot has
/// been installed (apply only what is durable).
#[derive(Debug)]
pub struct RaftLog<S: LogStore> {
    pub(super) store: S,
    unstable: Unstable,
    /// Highest index known to be committed (§5.3).
    pub(super) committed: LogIndex,
    /// Highest index handed to the application to apply (it has applied it
    /// by the time `advance` is called).
    pub(super) applied: LogIndex,
    /// Highest index known durable on this node. The leader counts itself
    /// towards a commit quorum only up to here (etcd #14370).
    pub(super) persisted: LogIndex,
    /// The first failure of the store (not a compacted or missing index:
    /// the store itself broke). Set from `&self` reads, hence the cell; once
    /// set, the group refuses all work and the caller sees the error.
    failure: OnceCell<StorageError>,
}

impl<S: LogStore> RaftLog<S> {
    pub fn new(store: S, committed: LogIndex, applied: LogIndex) -> RaftLog<S> {
        let last = store.last_index();
        let first = store.first_index();
        let unstable = Unstable { snapshot: None, entries: Vec::new(), offset: last.next() };
        // A restarted node may have applied less than the snapshot it holds
        // (not possible with our stores, but be safe): the snapshot covers it.
        let floor = first.prev();
        let applied = applied.max(floor).min(last);
        // The stored commit may lag the applied index (storage need not
        // write a change of commit alone); everything applied was committed.
        let committed = committed.max(applied).min(last);
        RaftLog { store, unstable, committed, applied, persisted: last, failure: OnceCell::new() }
    }

    /// The store's first failure, if it failed.
    pub fn failure(&self) -> Option<&StorageError> {
        self.failure.get()
    }

    /// Passes a store result through, remembering a store failure. Callers
    /// may carry on with a placeholder after one: the group is failed at the
    /// end of the input, and nothing it produced after is used.
    fn note<T>(&self, result: Result<T, StorageError>) -> Result<T, StorageError> {
        if let Err(error @ StorageError::Store(_)) = &result {
            let _ = self.failure.set(error.clone());
        }
        result
    }

    pub fn first_index(&self) -> LogIndex {
        match &self.unstable.snapshot {
            Some(snapshot) => snapshot.metadata.index.next(),
            None => self.store.first_index(),
        }
    }

    pub fn last_index(&self) -> LogIndex {
        self.unstable.last_index().unwrap_or_else(|| self.store.last_index())
    }

    /// The term of the last entry. The last index always has a term unless
    /// the store failed (recorded; the group is then failed).
    pub fn last_term(&self) -> Term {
        self.term(self.last_index()).unwrap_or(Term::ZERO)
    }

    /// The term at `index`; errors when compacted or beyond the last index.
    pub fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        let dummy = self.first_index().prev();
        if index < dummy {
            return Err(StorageError::Compacted(index));
        }
        if index > self.last_index() {
            return Err(StorageError::Unavailable(index));
        }
        if let Some(term) = self.unstable.term(index) {
            return Ok(term);
        }
        self.note(self.store.term(index))
    }

    /// The term at `index`, or zero when it is not held (compacted or absent).
    pub fn term_or_zero(&self, index: LogIndex) -> Term {
        self.term(index).unwrap_or(Term::ZERO)
    }

    pub fn match_term(&self, index: LogIndex, term: Term) -> bool {
        self.term(index).map(|t| t == term).unwrap_or(false)
    }

    /// §5.4.1: a candidate's log is at least as up-to-date as ours.
    pub fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        last_term > self.last_term() || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Appends leader-assigned entries; returns the new last index.
    pub fn append(&mut self, entries: &[Entry]) -> LogIndex {
        if let Some(first) = entries.first() {
            debug_assert!(first.index > self.committed, "append would overwrite committed entry {}", first.index);
            self.persisted = self.persisted.min(first.index.prev());
            self.unstable.truncate_and_append(entries);
        }
        self.last_index()
    }

    /// The follower side of AppendEntries (§5.3): if our log holds
    /// `prev_index` with `prev_term`, append `entries` (dropping a conflicting
    /// suffix), advance commit to `min(leader_commit, last new entry)`, and
    /// return the index of the last new entry.
    pub fn maybe_append(
        &mut self,
        prev_index: LogIndex,
        prev_term: Term,
        leader_commit: LogIndex,
        entries: &[Entry],
    ) -> Option<LogIndex> {
        if !self.match_term(prev_index, prev_term) {
            return None;
        }
        let last_new = prev_index + entries.len() as u64;
        if let Some(conflict) = self.find_conflict(entries) {
            assert!(conflict > self.committed, "entry {conflict} conflicts with a committed entry");
            let start = (conflict - prev_index.next()) as usize;
            self.append(&entries[start..]);
        }
        self.commit_to(leader_commit.min(last_new));
        Some(last_new)
    }

    /// The first index in `entries` whose term differs from ours (or that
    /// we do not hold yet).
    fn find_conflict(&self, entries: &[Entry]) -> Option<LogIndex> {
        entries.iter().find(|e| !self.match_term(e.index, e.term)).map(|e| e.index)
    }

    /// For a rejected AppendEntries at `index`: our term there (zero when our
    /// log is shorter) and the first index we hold with that term, never at or
    /// below the commit index (those entries match the leader's).
    pub fn conflict_hint(&self, index: LogIndex) -> (Term, LogIndex) {
        if index > self.last_index() {
            return (Term::ZERO, self.last_index().next());
        }
        let Ok(conflict_term) = self.term(index) else {
            return (Term::ZERO, self.committed.next());
        };
        let mut first = index;
        while first > self.committed.next() && self.term(first.prev()) == Ok(conflict_term) {
            first = first.prev();
        }
        (conflict_term, first.max(self.committed.next()))
    }

    /// The leader side of a rejection: the last index at or below `index`
    /// where our log has `term`, if it has that term at all.
    pub fn last_index_of_term(&self, index: LogIndex, term: Term) -> Option<LogIndex> {
        // Terms never decrease along a log, so walk down while they are
        // higher. Index 0 has term 0 (or is compacted), which ends the walk.
        let mut at = index.min(self.last_index());
        loop {
            match self.term(at) {
                Ok(t) if t > term => at = at.prev(),
                Ok(t) if t == term => return Some(at),
                _ => return None,
            }
        }
    }

    pub fn commit_to(&mut self, index: LogIndex) {
        if index > self.committed {
            assert!(index <= self.last_index(), "commit {index} is past the last index {}", self.last_index());
            self.committed = index;
        }
    }

    /// §5.4.2: commit `index` only if it holds an entry of the current term.
    pub fn maybe_commit(&mut self, index: LogIndex, current_term: Term) -> bool {
        if index > self.committed && self.term_or_zero(index) == current_term {
            self.commit_to(index);
            return true;
        }
        false
    }

    pub fn applied_to(&mut self, index: LogIndex) {
        if index == LogIndex::ZERO {
            return;
        }
        assert!(
            index >= self.applied && index <= self.committed,
            "applied {index} out of range [{}, {}]",
            self.applied,
            self.committed
        );
        self.applied = index;
    }

    /// Entries in `[low, last_index]`, bounded by size.
    pub fn entries_from(&self, low: LogIndex, max_size_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        if low > self.last_index() {
            return Ok(Vec::new());
        }
        self.slice(low, self.last_index().next(), max_size_bytes)
    }

    /// Entries in `[low, high)`, from the store and then the unstable tail.
    pub fn slice(&self, low: LogIndex, high: LogIndex, max_size_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        if low < self.first_index() {
            return Err(StorageError::Compacted(low));
        }
        if high > self.last_index().next() {
            return Err(StorageError::Unavailable(high.prev()));
        }
        let mut out = Vec::new();
        let offset = self.unstable.offset;
        if low < offset {
            out = self.note(self.store.entries(low, high.min(offset), max_size_bytes))?;
            if (out.len() as u64) < high.min(offset) - low {
                return Ok(out); // The size limit cut the stable part short.
            }
        }
        if high > offset {
            let from = (low.max(offset) - offset) as usize;
            let to = (high - offset) as usize;
            out.extend_from_slice(&self.unstable.entries[from..to]);
        }
        limit_size(&mut out, max_size_bytes);
        Ok(out)
    }

    /// Committed entries not yet handed out for applying. Nothing while a
    /// snapshot is waiting to be installed.
    pub fn next_committed_entries(&self, max_size_bytes: u64) -> Vec<Entry> {
        if self.unstable.snapshot.is_some() {
            return Vec::new();
        }
        let low = self.applied.next().max(self.first_index());
        if low > self.committed {
            return Vec::new();
        }
        // Committed entries past the applied index are always held; an
        // error here is a store failure, recorded by `slice`.
        self.slice(low, self.committed.next(), max_size_bytes).unwrap_or_default()
    }

    pub fn has_next_committed_entries(&self) -> bool {
        self.unstable.snapshot.is_none() && self.committed > self.applied.max(self.first_index().prev())
    }

    pub fn unstable_entries(&self) -> &[Entry] {
        &self.unstable.entries
    }

    pub fn unstable_snapshot(&self) -> Option<&Snapshot> {
        self.unstable.snapshot.as_ref()
    }

    /// The application persisted entries up to `index` with `term`.
    pub fn stable_to(&mut self, index: LogIndex, term: Term) {
        if self.unstable.term(index) == Some(term) {
            self.persisted = self.persisted.max(index);
        }
        self.unstable.stable_to(index, term);
    }

    /// The application installed the unstable snapshot at `index`.
    pub fn stable_snapshot_to(&mut self, index: LogIndex) {
        if let Some(snapshot) = &self.unstable.snapshot {
            if snapshot.metadata.index == index {
                self.unstable.snapshot = None;
                self.persisted = self.persisted.max(index);
                self.applied = self.applied.max(index);
            }
        }
    }

    /// The snapshot to send to a follower: a pending one first, else the store's.
    pub fn snapshot(&self) -> Result<Snapshot, StorageError> {
        match &self.unstable.snapshot {
            Some(snapshot) => Ok(snapshot.clone()),
            None => self.note(self.store.snapshot()),
        }
    }

    /// Replaces the log with a snapshot received from the leader.
    pub fn restore(&mut self, snapshot: Snapshot) {
        let index = snapshot.metadata.index;
        self.committed = index;
        self.persisted = self.persisted.min(index.prev());
        self.unstable = Unstable { snapshot: Some(snapshot), entries: Vec::new(), offset: index.next() };
    }
}

#[cfg(test)]
#[path = "log_tests.rs"]
mod tests;
