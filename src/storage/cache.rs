//! The in-memory tail of one group's log. The leader sends entries right
//! after appending them and followers usually lag by a few entries, so the
//! replication hot path reads from here instead of RocksDB.
//!
//! The cache is bounded per group (entries and bytes) so ten thousand groups
//! cannot hold the whole log in memory; the runtime also trims it once every
//! follower has an entry (`compact_to`).

use std::collections::VecDeque;

use crate::raft::{Entry, LogIndex, Term};

#[derive(Debug)]
pub struct EntryCache {
    /// Invariant: contiguous, `entries[i].index == entries[0].index + i`,
    /// and always a suffix of the group's durable-or-staged log.
    entries: VecDeque<Entry>,
    bytes: u64,
    max_entries: usize,
    max_bytes: u64,
}

impl EntryCache {
    pub fn new(max_entries: usize, max_bytes: u64) -> EntryCache {
        EntryCache { entries: VecDeque::new(), bytes: 0, max_entries, max_bytes }
    }

    pub fn first_index(&self) -> Option<LogIndex> {
        self.entries.front().map(|e| e.index)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn size_bytes(&self) -> u64 {
        self.bytes
    }

    /// Adds entries that were just written, dropping any cached suffix they
    /// replace. A batch that does not continue the cached tail (after a gap,
    /// e.g. a snapshot) replaces the cache.
    pub fn append(&mut self, new_entries: &[Entry]) {
        let Some(first) = new_entries.first() else { return };
        match (self.first_index(), self.entries.back().map(|e| e.index)) {
            (Some(cache_first), Some(cache_last)) if first.index >= cache_first && first.index <= cache_last.next() => {
                self.truncate_from(first.index);
            }
            _ => self.clear(),
        }
        for entry in new_entries {
            self.bytes += entry.size_bytes();
            self.entries.push_back(entry.clone());
        }
        while self.entries.len() > self.max_entries || (self.bytes > self.max_bytes && self.entries.len() > 1) {
            self.pop_front();
        }
        // Only the O(1) form here: a walk of the whole cache on every append
        // cost 9% of a 10,000-group benchmark (see `check_invariants`).
        debug_assert!(self.ends_agree_with_length(), "entry cache is not contiguous");
    }

    fn ends_agree_with_length(&self) -> bool {
        match (self.entries.front(), self.entries.back()) {
            (Some(front), Some(back)) => back.index - front.index + 1 == self.entries.len() as u64,
            _ => self.bytes == 0,
        }
    }

    /// Drops cached entries with index >= `index`.
    fn truncate_from(&mut self, index: LogIndex) {
        while self.entries.back().is_some_and(|e| e.index >= index) {
            let entry = self.entries.pop_back().expect("checked non-empty");
            self.bytes -= entry.size_bytes();
        }
    }

    /// Drops cached entries with index < `index` (every follower has them,
    /// or the log was purged).
    pub fn compact_to(&mut self, index: LogIndex) {
        while self.entries.front().is_some_and(|e| e.index < index) {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some(entry) = self.entries.pop_front() {
            self.bytes -= entry.size_bytes();
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    pub fn term(&self, index: LogIndex) -> Option<Term> {
        self.get(index).map(|e| e.term)
    }

    fn get(&self, index: LogIndex) -> Option<&Entry> {
        let first = self.first_index()?;
        if index < first {
            return None;
        }
        self.entries.get((index - first) as usize)
    }

    /// Entries `[low, high)` when the cache holds them all.
    pub fn range(&self, low: LogIndex, high: LogIndex) -> Option<impl Iterator<Item = &Entry>> {
        let first = self.first_index()?;
        let last = self.entries.back()?.index;
        if low < first || high > last.next() || low > high {
            return None;
        }
        let start = (low - first) as usize;
        Some(self.entries.range(start..start + (high - low) as usize))
    }

    /// The full check, O(cached entries): for tests and
    /// `GroupStorage::check_invariants`, not for every append.
    pub fn check_invariants(&self) -> Result<(), String> {
        if let Some(pair) =
            self.entries.iter().zip(self.entries.iter().skip(1)).find(|(a, b)| b.index != a.index.next())
        {
            return Err(format!("entry cache jumps from {} to {}", pair.0.index, pair.1.index));
        }
        let bytes = self.entries.iter().map(Entry::size_bytes).sum::<u64>();
        if bytes != self.bytes {
            return Err(format!("entry cache counts {} bytes but holds {bytes}", self.bytes));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(term: u64, range: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
        range.map(|i| Entry::new_normal(Term(term), LogIndex(i), vec![0; 10])).collect()
    }

    fn indexes(cache: &EntryCache, low: u64, high: u64) -> Option<Vec<(u64, u64)>> {
        Some(cache.range(LogIndex(low), LogIndex(high))?.map(|e| (e.index.0, e.term.0)).collect())
    }

    #[test]
    fn appends_overwrite_a_conflicting_tail() {
        let mut cache = EntryCache::new(100, 1 << 20);
        cache.append(&entries(1, 1..=5));
        cache.append(&entries(2, 4..=6));
        assert_eq!(indexes(&cache, 3, 7), Some(vec![(3, 1), (4, 2), (5, 2), (6, 2)]));
        assert_eq!(cache.term(LogIndex(6)), Some(Term(2)));
        assert_eq!(cache.term(LogIndex(7)), None);
        assert_eq!(indexes(&cache, 0, 2), None, "index 0 was never cached");
    }

    #[test]
    fn a_gap_replaces_the_cache_and_bounds_hold() {
        let mut cache = EntryCache::new(3, 1 << 20);
        cache.append(&entries(1, 1..=2));
        cache.append(&entries(1, 10..=14));
        assert_eq!(cache.first_index(), Some(LogIndex(12)));
        assert_eq!(cache.len(), 3);
        let one_entry = Entry::new_normal(Term(1), LogIndex(1), vec![0; 10]).size_bytes();
        let mut small = EntryCache::new(100, one_entry * 2);
        small.append(&entries(1, 1..=5));
        assert_eq!(small.len(), 2);
        assert_eq!(small.size_bytes(), one_entry * 2);
        small.compact_to(LogIndex(5));
        assert_eq!(indexes(&small, 5, 6), Some(vec![(5, 1)]));
    }
}
