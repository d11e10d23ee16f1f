//! Read access to the persisted log, and an in-memory implementation for
//! tests and the simulator. The RocksDB-backed store in `src/storage`
//! implements the same trait.

use super::error::StorageError;
use super::types::{Entry, LogIndex, Snapshot, Term};

/// What the core reads of the durable log. Writes are the application's job:
/// it persists each `Ready` and then calls `advance`.
pub trait LogStore {
    /// Entries in `[low, high)`, stopping early once their total size passes
    /// `max_size_bytes` (but always at least one entry when the range is not
    /// empty).
    fn entries(&self, low: LogIndex, high: LogIndex, max_size_bytes: u64) -> Result<Vec<Entry>, StorageError>;
    /// The term of the entry at `index`. Valid for `first_index() - 1`
    /// (the snapshot's index) up to `last_index()`.
    fn term(&self, index: LogIndex) -> Result<Term, StorageError>;
    /// The first index still held as an entry (the snapshot index + 1).
    fn first_index(&self) -> LogIndex;
    /// The last index held; `first_index() - 1` when the log is empty.
    fn last_index(&self) -> LogIndex;
    /// The most recent snapshot, to send to a follower that is too far behind.
    fn snapshot(&self) -> Result<Snapshot, StorageError>;
}

/// Collects entries until their size passes `max_size_bytes`; the first entry
/// is always kept so progress is possible with any limit.
pub fn limit_size(entries: &mut Vec<Entry>, max_size_bytes: u64) {
    let mut total = 0u64;
    let mut keep = 0usize;
    for entry in entries.iter() {
        total += entry.size_bytes();
        if keep > 0 && total > max_size_bytes {
            break;
        }
        keep += 1;
    }
    entries.truncate(keep);
}

/// A log held in memory.
///
/// Invariant: `entries[i].index == offset + 1 + i`, and
/// `snapshot.metadata.index >= offset` (the log may keep entries the
/// snapshot already covers, so slow followers can catch up without one).
#[derive(Clone, Debug, Default)]
pub struct MemoryLogStore {
    snapshot: Snapshot,
    /// The index just before the first entry held, and its term.
    offset: LogIndex,
    offset_term: Term,
    entries: Vec<Entry>,
}

impl MemoryLogStore {
    pub fn new() -> MemoryLogStore {
        MemoryLogStore::default()
    }

    /// Appends entries, dropping any existing suffix they overwrite.
    /// Entries must be contiguous and start at most one past the last index.
    pub fn append(&mut self, new_entries: &[Entry]) -> Result<(), StorageError> {
        let Some(first_new) = new_entries.first() else { return Ok(()) };
        if first_new.index <= self.offset {
            return Err(StorageError::Compacted(first_new.index));
        }
        if first_new.index > self.last_index().next() {
            return Err(StorageError::Store(format!(
                "append at {} leaves a gap after last index {}",
                first_new.index,
                self.last_index()
            )));
        }
        self.entries.truncate((first_new.index - self.first_index()) as usize);
        self.entries.extend_from_slice(new_entries);
        Ok(())
    }

    /// Replaces the whole log with a snapshot (a follower installing one).
    pub fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        if snapshot.metadata.index < self.snapshot.metadata.index {
            return Err(StorageError::Store(format!(
                "snapshot at {} is older than the current one at {}",
                snapshot.metadata.index, self.snapshot.metadata.index
            )));
        }
        self.offset = snapshot.metadata.index;
        self.offset_term = snapshot.metadata.term;
        self.snapshot = snapshot;
        self.entries.clear();
        Ok(())
    }

    /// Records a snapshot the application took at an index the log holds.
    /// Entries stay until [`compact`](Self::compact) discards them.
    pub fn create_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StorageError> {
        let index = snapshot.metadata.index;
        if index <= self.snapshot.metadata.index {
            return Ok(());
        }
        let term = self.term(index)?;
        if term != snapshot.metadata.term {
            return Err(StorageError::Store(format!(
                "snapshot term {} at {index} disagrees with log term {term}",
                snapshot.metadata.term
            )));
        }
        self.snapshot = snapshot;
        Ok(())
    }

    /// Discards entries up to and including `index`, which must be covered
    /// by the snapshot the store holds.
    pub fn compact(&mut self, index: LogIndex) -> Result<(), StorageError> {
        if index <= self.offset {
            return Ok(());
        }
        if index > self.snapshot.metadata.index {
            return Err(StorageError::Store(format!(
                "cannot compact to {index}: the snapshot only covers {}",
                self.snapshot.metadata.index
            )));
        }
        self.offset_term = self.term(index)?;
        self.entries.drain(..(index - self.offset) as usize);
        self.offset = index;
        Ok(())
    }

    pub fn all_entries(&self) -> &[Entry] {
        &self.entries
    }
}

impl LogStore for MemoryLogStore {
    fn entries(&self, low: LogIndex, high: LogIndex, max_size_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        if low <= self.offset {
            return Err(StorageError::Compacted(low));
        }
        if high > self.last_index().next() {
            return Err(StorageError::Unavailable(high.prev()));
        }
        let start = (low - self.first_index()) as usize;
        let end = (high - self.first_index()) as usize;
        let mut out = self.entries[start..end.max(start)].to_vec();
        limit_size(&mut out, max_size_bytes);
        Ok(out)
    }

    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        if index == self.offset {
            return Ok(self.offset_term);
        }
        if index < self.offset {
            return Err(StorageError::Compacted(index));
        }
        self.entries.get((index - self.first_index()) as usize).map(|e| e.term).ok_or(StorageError::Unavailable(index))
    }

    fn first_index(&self) -> LogIndex {
        self.offset.next()
    }

    fn last_index(&self) -> LogIndex {
        self.offset + self.entries.len() as u64
    }

    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::SnapshotMetadata;

    /// An entry of `term` at `index` whose size is 24 + `payload` bytes.
    fn ent(term: u64, index: u64, payload: usize) -> Entry {
        Entry::new_normal(Term(term), LogIndex(index), vec![0; payload])
    }

    /// Entries with the given terms, the first at `first`, each 24 bytes.
    fn ents(terms: &[u64], first: u64) -> Vec<Entry> {
        terms.iter().enumerate().map(|(i, &t)| ent(t, first + i as u64, 0)).collect()
    }

    fn snap(index: u64, term: u64, data: &[u8]) -> Snapshot {
        let metadata = SnapshotMetadata { index: LogIndex(index), term: Term(term), ..SnapshotMetadata::default() };
        Snapshot { metadata, data: data.to_vec() }
    }

    fn store(terms: &[u64]) -> MemoryLogStore {
        let mut s = MemoryLogStore::new();
        s.append(&ents(terms, 1)).unwrap();
        s
    }

    fn indexes(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.index.0).collect()
    }

    fn store_err(msg: &str) -> StorageError {
        StorageError::Store(msg.to_string())
    }

    // limit_size keeps the first entry always and stops once the running total exceeds the limit.
    #[test]
    fn limit_size_boundaries() {
        // Sizes 24, 25, 26 (running totals 24, 49, 75).
        let all = vec![ent(1, 1, 0), ent(1, 2, 1), ent(1, 3, 2)];
        let cases = [(0, 1), (23, 1), (24, 1), (48, 1), (49, 2), (74, 2), (75, 3), (76, 3), (u64::MAX, 3)];
        for (limit, keep) in cases {
            let mut entries = all.clone();
            limit_size(&mut entries, limit);
            assert_eq!(indexes(&entries), indexes(&all[..keep]), "limit {limit}");
        }
        let mut empty = Vec::new();
        limit_size(&mut empty, 0);
        assert!(empty.is_empty());
        let mut big = vec![ent(1, 1, 100), ent(1, 2, 0)];
        limit_size(&mut big, 10);
        assert_eq!(indexes(&big), vec![1], "an oversized first entry is still kept");
    }

    // An empty store: first 1, last 0, term(0) = 0, nothing beyond, default snapshot.
    #[test]
    fn an_empty_store() {
        let s = MemoryLogStore::new();
        assert_eq!((s.first_index(), s.last_index()), (LogIndex(1), LogIndex(0)));
        assert_eq!(s.term(LogIndex(0)), Ok(Term(0)));
        assert_eq!(s.term(LogIndex(1)), Err(StorageError::Unavailable(LogIndex(1))));
        assert_eq!(s.entries(LogIndex(1), LogIndex(1), u64::MAX), Ok(Vec::new()));
        assert_eq!(s.entries(LogIndex(1), LogIndex(2), u64::MAX), Err(StorageError::Unavailable(LogIndex(1))));
        assert_eq!(s.entries(LogIndex(0), LogIndex(1), u64::MAX), Err(StorageError::Compacted(LogIndex(0))));
        assert_eq!(s.snapshot(), Ok(Snapshot::default()));
        assert!(s.all_entries().is_empty());
    }

    // append extends at last + 1, overwrites the suffix from its first index, and ignores an empty slice.
    #[test]
    fn append_extends_and_overwrites_the_suffix() {
        let mut s = store(&[1, 1, 2]);
        assert_eq!(s.all_entries(), &ents(&[1, 1, 2], 1)[..]);
        s.append(&[]).unwrap();
        assert_eq!(s.last_index(), LogIndex(3));
        s.append(&ents(&[2, 2], 4)).unwrap();
        assert_eq!(s.all_entries(), &ents(&[1, 1, 2, 2, 2], 1)[..]);
        s.append(&ents(&[3], 2)).unwrap();
        assert_eq!(s.all_entries(), &ents(&[1, 3], 1)[..], "entries 3..=5 are dropped");
        assert_eq!((s.first_index(), s.last_index()), (LogIndex(1), LogIndex(2)));
        s.append(&ents(&[4, 4], 1)).unwrap();
        assert_eq!(s.all_entries(), &ents(&[4, 4], 1)[..]);
        s.append(&ents(&[5], 2)).unwrap();
        assert_eq!(s.all_entries(), &ents(&[4, 5], 1)[..]);
    }

    // append refuses an index at or below the offset (Compacted) and one past last + 1 (a gap).
    #[test]
    fn append_refuses_compacted_indexes_and_gaps() {
        let mut s = store(&[1, 1, 2]);
        assert_eq!(s.append(&ents(&[2], 5)), Err(store_err("append at 5 leaves a gap after last index 3")));
        assert_eq!(s.append(&ents(&[2], 0)), Err(StorageError::Compacted(LogIndex(0))));
        assert_eq!(s.last_index(), LogIndex(3));

        let mut s = MemoryLogStore::new();
        s.apply_snapshot(snap(5, 2, b"s")).unwrap();
        assert_eq!(s.append(&ents(&[2], 5)), Err(StorageError::Compacted(LogIndex(5))));
        assert_eq!(s.append(&ents(&[2], 4)), Err(StorageError::Compacted(LogIndex(4))));
        assert_eq!(s.append(&ents(&[2], 7)), Err(store_err("append at 7 leaves a gap after last index 5")));
        s.append(&ents(&[2, 3, 3], 6)).unwrap();
        assert_eq!(s.all_entries(), &ents(&[2, 3, 3], 6)[..]);
        s.append(&ents(&[4], 7)).unwrap();
        assert_eq!(s.all_entries(), &ents(&[2, 4], 6)[..], "overwrite after an offset");
        s.append(&ents(&[5], 6)).unwrap();
        assert_eq!(s.all_entries(), &ents(&[5], 6)[..]);
    }

    // apply_snapshot replaces the log; an equal index is accepted, an older one refused.
    #[test]
    fn apply_snapshot_replaces_the_log() {
        let mut s = store(&[1, 1, 2, 2]);
        s.apply_snapshot(snap(3, 2, b"a")).unwrap();
        assert!(s.all_entries().is_empty());
        assert_eq!((s.first_index(), s.last_index()), (LogIndex(4), LogIndex(3)));
        assert_eq!(s.term(LogIndex(3)), Ok(Term(2)));
        assert_eq!(s.snapshot(), Ok(snap(3, 2, b"a")));
        s.append(&ents(&[2, 3], 4)).unwrap();
        s.apply_snapshot(snap(3, 2, b"b")).unwrap();
        assert!(s.all_entries().is_empty(), "an equal index is installed again");
        assert_eq!(s.snapshot(), Ok(snap(3, 2, b"b")));
        let older = s.apply_snapshot(snap(2, 1, b"c"));
        assert_eq!(older, Err(store_err("snapshot at 2 is older than the current one at 3")));
        assert_eq!(s.snapshot(), Ok(snap(3, 2, b"b")));
        assert_eq!((s.first_index(), s.last_index()), (LogIndex(4), LogIndex(3)));
        s.apply_snapshot(snap(10, 4, b"d")).unwrap();
        assert_eq!((s.first_index(), s.last_index()), (LogIndex(11), LogIndex(10)));
        assert_eq!(s.term(LogIndex(10)), Ok(Term(4)));
    }

    // create_snapshot records a newer snapshot whose term matches the log; an older or equal one is ignored.
    #[test]
    fn create_snapshot_checks_the_term() {
        let mut s = store(&[1, 1, 2, 2, 3]);
        s.create_snapshot(snap(3, 2, b"a")).unwrap();
        assert_eq!(s.snapshot(), Ok(snap(3, 2, b"a")));
        assert_eq!(s.all_entries().len(), 5, "entries stay until compact");
        assert_eq!(s.first_index(), LogIndex(1));
        s.create_snapshot(snap(3, 2, b"b")).unwrap();
        assert_eq!(s.snapshot(), Ok(snap(3, 2, b"a")), "an equal index is ignored");
        s.create_snapshot(snap(2, 1, b"c")).unwrap();
        assert_eq!(s.snapshot(), Ok(snap(3, 2, b"a")), "an older index is ignored");
        s.create_snapshot(snap(2, 7, b"c")).unwrap();
        assert_eq!(s.snapshot(), Ok(snap(3, 2, b"a")), "ignored before the term is checked");
        let wrong = s.create_snapshot(snap(4, 1, b"d"));
        assert_eq!(wrong, Err(store_err("snapshot term 1 at 4 disagrees with log term 2")));
        assert_eq!(s.create_snapshot(snap(6, 3, b"d")), Err(StorageError::Unavailable(LogIndex(6))));
        assert_eq!(s.snapshot(), Ok(snap(3, 2, b"a")));
        s.create_snapshot(snap(4, 2, b"e")).unwrap();
        assert_eq!(s.snapshot(), Ok(snap(4, 2, b"e")));
        s.create_snapshot(snap(5, 3, b"f")).unwrap();
        assert_eq!(s.snapshot(), Ok(snap(5, 3, b"f")));
    }

    // compact drops entries up to the index (never past the snapshot) and keeps the offset's term.
    #[test]
    fn compact_up_to_the_snapshot() {
        let mut s = store(&[1, 1, 2, 2, 3, 3, 4]);
        assert_eq!(s.compact(LogIndex(1)), Err(store_err("cannot compact to 1: the snapshot only covers 0")));
        s.compact(LogIndex(0)).unwrap();
        assert_eq!(s.first_index(), LogIndex(1));
        s.create_snapshot(snap(3, 2, b"a")).unwrap();
        assert_eq!(s.compact(LogIndex(4)), Err(store_err("cannot compact to 4: the snapshot only covers 3")));
        assert_eq!(s.all_entries().len(), 7);
        s.compact(LogIndex(3)).unwrap();
        assert_eq!((s.first_index(), s.last_index()), (LogIndex(4), LogIndex(7)));
        assert_eq!(s.all_entries(), &ents(&[2, 3, 3, 4], 4)[..]);
        assert_eq!(s.term(LogIndex(3)), Ok(Term(2)));
        assert_eq!(s.term(LogIndex(2)), Err(StorageError::Compacted(LogIndex(2))));
        // At or below the offset: nothing happens.
        s.compact(LogIndex(3)).unwrap();
        s.compact(LogIndex(2)).unwrap();
        assert_eq!(s.all_entries(), &ents(&[2, 3, 3, 4], 4)[..]);
        // A second compaction from a non-zero offset.
        s.create_snapshot(snap(6, 3, b"b")).unwrap();
        s.compact(LogIndex(5)).unwrap();
        assert_eq!(s.all_entries(), &ents(&[3, 4], 6)[..]);
        assert_eq!(s.term(LogIndex(5)), Ok(Term(3)));
        s.compact(LogIndex(6)).unwrap();
        assert_eq!((s.first_index(), s.last_index()), (LogIndex(7), LogIndex(7)));
        assert_eq!(s.term(LogIndex(6)), Ok(Term(3)));
        assert_eq!(s.term(LogIndex(7)), Ok(Term(4)));
    }

    // entries: Compacted when low <= offset, Unavailable(high - 1) when high > last + 1, else the range.
    #[test]
    fn entries_range_checks() {
        let mut s = MemoryLogStore::new();
        s.apply_snapshot(snap(2, 1, b"s")).unwrap();
        s.append(&ents(&[1, 2, 2, 3], 3)).unwrap();
        let get = |low, high| s.entries(LogIndex(low), LogIndex(high), u64::MAX).map(|e| indexes(&e));
        assert_eq!(get(1, 4), Err(StorageError::Compacted(LogIndex(1))));
        assert_eq!(get(2, 4), Err(StorageError::Compacted(LogIndex(2))));
        assert_eq!(get(3, 4), Ok(vec![3]));
        assert_eq!(get(3, 7), Ok(vec![3, 4, 5, 6]));
        assert_eq!(get(4, 6), Ok(vec![4, 5]));
        assert_eq!(get(6, 7), Ok(vec![6]));
        assert_eq!(get(7, 7), Ok(vec![]));
        assert_eq!(get(5, 5), Ok(vec![]));
        assert_eq!(get(5, 4), Ok(vec![]), "an inverted range is empty");
        assert_eq!(get(3, 8), Err(StorageError::Unavailable(LogIndex(7))));
        assert_eq!(get(7, 9), Err(StorageError::Unavailable(LogIndex(8))));
        assert_eq!(s.entries(LogIndex(3), LogIndex(7), u64::MAX).unwrap(), ents(&[1, 2, 2, 3], 3));
    }

    // entries applies the size limit to the range it returns.
    #[test]
    fn entries_respect_the_size_limit() {
        let s = store(&[1, 1, 2, 2]);
        let get = |low, high, max| indexes(&s.entries(LogIndex(low), LogIndex(high), max).unwrap());
        assert_eq!(get(1, 5, 0), vec![1]);
        assert_eq!(get(1, 5, 47), vec![1]);
        assert_eq!(get(1, 5, 48), vec![1, 2]);
        assert_eq!(get(2, 5, 72), vec![2, 3, 4]);
        assert_eq!(get(2, 5, 71), vec![2, 3]);
        assert_eq!(get(3, 5, u64::MAX), vec![3, 4]);
    }

    // term: the offset's term at the offset, Compacted below it, Unavailable past the last index.
    #[test]
    fn term_lookups() {
        let mut s = MemoryLogStore::new();
        s.apply_snapshot(snap(3, 2, b"s")).unwrap();
        s.append(&ents(&[2, 3, 5], 4)).unwrap();
        let cases = [
            (0, Err(StorageError::Compacted(LogIndex(0)))),
            (2, Err(StorageError::Compacted(LogIndex(2)))),
            (3, Ok(Term(2))),
            (4, Ok(Term(2))),
            (5, Ok(Term(3))),
            (6, Ok(Term(5))),
            (7, Err(StorageError::Unavailable(LogIndex(7)))),
            (100, Err(StorageError::Unavailable(LogIndex(100)))),
        ];
        for (index, want) in cases {
            assert_eq!(s.term(LogIndex(index)), want, "term({index})");
        }
        assert_eq!((s.first_index(), s.last_index()), (LogIndex(4), LogIndex(6)));
    }
}
