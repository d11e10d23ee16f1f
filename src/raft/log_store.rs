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
