//! One group's durable Raft state in the shared engine: its log (behind the
//! core's `LogStore` trait, with an in-memory tail cache), hard state,
//! truncated (snapshot) boundary, configuration and apply state.
//!
//! Writes are staged into a [`StorageBatch`] that the runtime fills with the
//! Ready parts of many groups and commits with one fsync
//! ([`Engine::commit`](super::Engine::commit)). Staging updates this
//! struct's in-memory view at once: the runtime is single-threaded per node
//! and does not read a group between staging and committing, and a failed
//! commit is fatal for the node (what it staged may or may not be on disk,
//! exactly as after a crash, which restart handles).

use std::sync::Arc;

use rocksdb::{Direction, IteratorMode, ReadOptions};

use super::batch::StorageBatch;
use super::cache::EntryCache;
use super::codec;
use super::engine::Engine;
use super::error::{Result, StorageError};
use super::keys::{self, CF_META, CF_RAFT_LOG, CF_RAFT_STATE};
use crate::raft::{self, ConfState, Entry, GroupId, HardState, LogIndex, LogStore, Snapshot, SnapshotMetadata, Term};

/// Per-group tail cache bounds: enough for a burst of pipelined appends.
/// The worst case, every one of 10,000 groups with a full cache, is 640 MiB;
/// the runtime keeps it far below that by trimming each cache to what some
/// follower still lacks (`compact_cache_to`), which is empty once the
/// followers are caught up. (A node-wide budget is left for later.)
pub const CACHE_MAX_ENTRIES: usize = 512;
pub const CACHE_MAX_BYTES: u64 = 64 << 10;

/// The state machine's position: the last applied entry and its term.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyState {
    pub index: LogIndex,
    pub term: Term,
}

pub struct GroupStorage {
    engine: Arc<Engine>,
    group: GroupId,
    hard_state: HardState,
    conf_state: ConfState,
    /// The last entry removed from the log (snapshot or purge boundary).
    /// Invariant: truncated.index <= applied.index <= last_index.
    truncated: ApplyState,
    applied: ApplyState,
    /// Invariant: the log holds exactly the entries (truncated.index, last_index].
    last_index: LogIndex,
    last_term: Term,
    cache: EntryCache,
}

impl GroupStorage {
    /// Stages a brand-new group whose initial members are `conf_state`: like
    /// every initial member, it starts from a snapshot at index 1, term 1,
    /// so later members can be brought up the same way (by snapshot).
    pub fn bootstrap(
        engine: Arc<Engine>,
        group: GroupId,
        conf_state: ConfState,
        batch: &mut StorageBatch,
    ) -> Result<GroupStorage> {
        let mut storage = GroupStorage::empty(engine, group);
        let metadata = SnapshotMetadata { index: LogIndex(1), term: Term(1), conf_state };
        storage.stage_snapshot(batch, &metadata)?;
        storage.stage_hard_state(batch, HardState { term: Term(1), vote: None, commit: LogIndex(1) });
        Ok(storage)
    }

    /// A group this node will join by receiving a snapshot: nothing stored
    /// until it writes a hard state (it votes), and from then on `open`
    /// finds it.
    pub fn empty(engine: Arc<Engine>, group: GroupId) -> GroupStorage {
        GroupStorage {
            engine,
            group,
            hard_state: HardState::default(),
            conf_state: ConfState::default(),
            truncated: ApplyState::default(),
            applied: ApplyState::default(),
            last_index: LogIndex::ZERO,
            last_term: Term::ZERO,
            cache: EntryCache::new(CACHE_MAX_ENTRIES, CACHE_MAX_BYTES),
        }
    }

    /// Loads a group from disk after a restart and checks that its pieces
    /// agree (no hole between the truncated index and the first entry,
    /// applied and commit within the log). Returns `None` for a group with
    /// neither a truncated state nor a hard state: one never stored, or
    /// destroyed.
    pub fn open(engine: Arc<Engine>, group: GroupId) -> Result<Option<GroupStorage>> {
        let read_state = |tag| engine.db().get_cf(engine.cf(CF_RAFT_STATE), keys::state_key(group, tag));
        let (truncated, hard_state) = (read_state(keys::STATE_TRUNCATED)?, read_state(keys::STATE_HARD)?);
        // A group created empty to receive a snapshot has no truncated state
        // until one is installed, but stores its term and vote: forgetting
        // them would let a restarted node vote twice in one term.
        if truncated.is_none() && hard_state.is_none() {
            return Ok(None);
        }
        let truncated = match truncated {
            Some(bytes) => {
                let (index, term) = codec::decode_index_term(group, "truncated state", &bytes)?;
                ApplyState { index, term }
            }
            None => ApplyState::default(),
        };
        let hard_state = match hard_state {
            Some(bytes) => codec::decode_hard_state(group, &bytes)?,
            None => HardState::default(),
        };
        let conf_state = match read_state(keys::STATE_CONF)? {
            Some(bytes) => codec::decode_conf_state(group, &bytes)?,
            None => ConfState::default(),
        };
        let applied = match engine.db().get_cf(engine.cf(CF_META), keys::apply_state_key(group))? {
            Some(bytes) => {
                let (index, term) = codec::decode_index_term(group, "apply state", &bytes)?;
                ApplyState { index, term }
            }
            None => truncated,
        };
        let mut storage =
            GroupStorage { hard_state, conf_state, truncated, applied, ..GroupStorage::empty(engine, group) };
        storage.load_log_bounds()?;
        storage.validate_on_open()?;
        // Every applied entry was committed; commit-only changes are not
        // written (see `stage_hard_state`), so the stored commit may lag.
        storage.hard_state.commit = storage.hard_state.commit.max(storage.applied.index);
        Ok(Some(storage))
    }

    /// Finds the first and last stored entries; the first must directly
    /// follow the truncated index (Redis-Raft #43 was a gap here).
    fn load_log_bounds(&mut self) -> Result<()> {
        let group = self.group;
        let (first, end) = keys::log_range(group, LogIndex::ZERO, LogIndex(u64::MAX));
        let mut options = ReadOptions::default();
        options.set_iterate_upper_bound(end.to_vec());
        let db = self.engine.db();
        let cf = self.engine.cf(CF_RAFT_LOG);
        let first_key = db.iterator_cf_opt(cf, options, IteratorMode::From(&first, Direction::Forward)).next();
        self.last_index = self.truncated.index;
        self.last_term = self.truncated.term;
        let Some(item) = first_key else { return Ok(()) };
        let (key, _) = item?;
        let (_, first_index) = keys::decode_log_key(&key).ok_or_else(|| self.corrupt(LogIndex::ZERO, "bad log key"))?;
        if first_index != self.truncated.index.next() {
            let detail = format!("log starts at {first_index} but the truncated index is {}", self.truncated.index);
            return Err(self.corrupt(first_index, &detail));
        }
        let mut options = ReadOptions::default();
        options.set_iterate_lower_bound(first.to_vec());
        let (key, value) = db
            .iterator_cf_opt(cf, options, IteratorMode::From(&end, Direction::Reverse))
            .next()
            .expect("the first entry exists")?;
        let (_, last_index) = keys::decode_log_key(&key).ok_or_else(|| self.corrupt(LogIndex::ZERO, "bad log key"))?;
        let last = codec::decode_entry(group, last_index, &value)?;
        // Keys are dense; a count would cost a scan, so check the two ends.
        self.last_index = last_index;
        self.last_term = last.term;
        Ok(())
    }

    fn validate_on_open(&self) -> Result<()> {
        let problem = if self.applied.index < self.truncated.index {
            Some(format!("applied {} is below the truncated index {}", self.applied.index, self.truncated.index))
        } else if self.applied.index > self.last_index {
            Some(format!("applied {} is past the last index {}", self.applied.index, self.last_index))
        } else if self.hard_state.commit > self.last_index {
            Some(format!("commit {} is past the last index {}", self.hard_state.commit, self.last_index))
        } else {
            None
        };
        match problem {
            Some(detail) => Err(self.corrupt(self.last_index, &detail)),
            None => Ok(()),
        }
    }

    fn corrupt(&self, index: LogIndex, detail: &str) -> StorageError {
        StorageError::corrupt(self.group, index, "raft log", detail)
    }

    fn invalid(&self, detail: String) -> StorageError {
        StorageError::InvalidWrite { group: self.group, detail }
    }

    pub fn group(&self) -> GroupId {
        self.group
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    pub fn applied(&self) -> ApplyState {
        self.applied
    }

    pub fn truncated(&self) -> ApplyState {
        self.truncated
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn cache(&self) -> &EntryCache {
        &self.cache
    }

    /// Stages entries from a Ready: they overwrite any stored suffix from
    /// their first index on (a new leader's log wins over an unacknowledged
    /// tail), and entries past their end are deleted.
    pub fn stage_entries(&mut self, batch: &mut StorageBatch, entries: &[Entry]) -> Result<()> {
        let Some(first) = entries.first() else { return Ok(()) };
        if first.index <= self.truncated.index || first.index > self.last_index.next() {
            return Err(self.invalid(format!(
                "entries start at {} but the log holds ({}, {}]",
                first.index, self.truncated.index, self.last_index
            )));
        }
        if let Some(gap) = entries.windows(2).find(|pair| pair[1].index != pair[0].index.next()) {
            return Err(self.invalid(format!("entries jump from {} to {}", gap[0].index, gap[1].index)));
        }
        let last = entries.last().expect("non-empty");
        let log = self.engine.cf(CF_RAFT_LOG);
        for entry in entries {
            batch.put(log, keys::log_key(self.group, entry.index), codec::encode_entry(entry));
        }
        if last.index < self.last_index {
            let (from, to) = keys::log_range(self.group, last.index.next(), self.last_index.next());
            batch.delete_range(log, from, to);
        }
        batch.count_entries(entries.len());
        self.last_index = last.index;
        self.last_term = last.term;
        self.cache.append(entries);
        Ok(())
    }

    /// Stages a Ready's hard state. Only term and vote must be durable
    /// (a node must never vote twice in a term); the commit index is
    /// volatile in Raft (Figure 2: a restarted node learns it from the leader).
    /// So a change of commit alone is kept in memory and not written: that
    /// saves one write per active group per turn, half the memtable inserts
    /// of a one-entry append (see BENCHMARKS.md). The commit index on disk
    /// is the one written with the last term or vote change, and on open
    /// the applied index, stored with the applied data, lifts it.
    pub fn stage_hard_state(&mut self, batch: &mut StorageBatch, hard_state: HardState) {
        if hard_state.durable_part_differs(&self.hard_state) {
            let key = keys::state_key(self.group, keys::STATE_HARD);
            batch.put(self.engine.cf(CF_RAFT_STATE), key, codec::encode_hard_state(&hard_state));
        }
        self.hard_state = hard_state;
    }

    /// Stages the metadata part of installing a snapshot: the log is reset to
    /// start after it, and the truncated state, configuration and apply
    /// state move to it, all in the batch that also carries the snapshot's
    /// data, so a crash leaves either the old state or the new one.
    pub fn stage_snapshot(&mut self, batch: &mut StorageBatch, metadata: &SnapshotMetadata) -> Result<()> {
        self.check_snapshot(metadata)?;
        self.stage_snapshot_state(batch, metadata);
        Ok(())
    }

    /// Refuses a snapshot older than what the state machine applied: its
    /// data would roll the group back.
    pub(super) fn check_snapshot(&self, metadata: &SnapshotMetadata) -> Result<()> {
        if metadata.index < self.applied.index {
            return Err(self.invalid(format!(
                "snapshot at {} is older than the applied index {}",
                metadata.index, self.applied.index
            )));
        }
        Ok(())
    }

    /// The staging part of `stage_snapshot`, which cannot fail; the caller
    /// has called `check_snapshot` (all-or-nothing staging: see `batch`).
    pub(super) fn stage_snapshot_state(&mut self, batch: &mut StorageBatch, metadata: &SnapshotMetadata) {
        let (from, to) = keys::log_range(self.group, LogIndex::ZERO, LogIndex(u64::MAX));
        batch.delete_range(self.engine.cf(CF_RAFT_LOG), from, to);
        let point = ApplyState { index: metadata.index, term: metadata.term };
        self.stage_truncated(batch, point);
        self.stage_apply_state(batch, point, Some(&metadata.conf_state));
        self.last_index = metadata.index;
        self.last_term = metadata.term;
        self.cache.clear();
    }

    fn stage_truncated(&mut self, batch: &mut StorageBatch, point: ApplyState) {
        let key = keys::state_key(self.group, keys::STATE_TRUNCATED);
        batch.put(self.engine.cf(CF_RAFT_STATE), key, codec::encode_index_term(point.index, point.term));
        self.truncated = point;
    }

    /// Records how far the state machine got, with the configuration when
    /// it changed; the KV layer stages the data of the same entries in the
    /// same batch, so apply is exactly-once across crashes.
    pub fn stage_apply_state(&mut self, batch: &mut StorageBatch, applied: ApplyState, conf_state: Option<&ConfState>) {
        debug_assert!(applied.index >= self.applied.index, "apply went backwards");
        let key = keys::apply_state_key(self.group);
        batch.put_unsynced(self.engine.cf(CF_META), key, codec::encode_index_term(applied.index, applied.term));
        if let Some(conf_state) = conf_state {
            let key = keys::state_key(self.group, keys::STATE_CONF);
            batch.put(self.engine.cf(CF_RAFT_STATE), key, codec::encode_conf_state(conf_state));
            self.conf_state = conf_state.clone();
        }
        self.applied = applied;
    }

    /// Discards entries up to and including `index`, which the state machine
    /// must already have applied (the snapshot a follower would get covers it).
    pub fn stage_purge(&mut self, batch: &mut StorageBatch, index: LogIndex) -> Result<()> {
        if index <= self.truncated.index {
            return Ok(());
        }
        if index > self.applied.index {
            return Err(self.invalid(format!("cannot purge to {index}: only {} is applied", self.applied.index)));
        }
        let term = self.term(index).map_err(|e| self.invalid(format!("cannot purge to {index}: {e}")))?;
        let (from, to) = keys::log_range(self.group, self.truncated.index.next(), index.next());
        batch.delete_range(self.engine.cf(CF_RAFT_LOG), from, to);
        self.stage_truncated(batch, ApplyState { index, term });
        self.cache.compact_to(index.next());
        Ok(())
    }

    /// Stages removal of everything this group stored (replica removed).
    pub fn stage_destroy(self, batch: &mut StorageBatch) {
        let group = self.group;
        let (from, to) = keys::log_range(group, LogIndex::ZERO, LogIndex(u64::MAX));
        batch.delete_range(self.engine.cf(CF_RAFT_LOG), from, to);
        for tag in [keys::STATE_HARD, keys::STATE_TRUNCATED, keys::STATE_CONF, keys::STATE_INSTALLING] {
            batch.delete(self.engine.cf(CF_RAFT_STATE), keys::state_key(group, tag));
        }
        batch.delete(self.engine.cf(CF_META), keys::apply_state_key(group));
        let (from, to) = keys::group_range(group);
        if let Some(to) = to {
            // Through the batch's data view, so a later read of this batch
            // does not see the removed replica's data.
            batch.stage_data_delete_range(self.engine.cf(keys::CF_DATA), from, to);
        }
    }

    /// Trims the tail cache once every follower has the entries below `index`.
    pub fn compact_cache_to(&mut self, index: LogIndex) {
        self.cache.compact_to(index);
    }

    fn read_entries(&self, low: LogIndex, high: LogIndex, max_size_bytes: u64) -> Result<Vec<Entry>> {
        let mut options = ReadOptions::default();
        options.set_iterate_upper_bound(keys::log_key(self.group, high).to_vec());
        let start = keys::log_key(self.group, low);
        let iter = self.engine.db().iterator_cf_opt(
            self.engine.cf(CF_RAFT_LOG),
            options,
            IteratorMode::From(&start, Direction::Forward),
        );
        let mut out = Vec::new();
        let mut total = 0u64;
        let mut expected = low;
        for item in iter {
            let (key, value) = item?;
            let index = keys::decode_log_key(&key).map(|(_, index)| index).unwrap_or(LogIndex::ZERO);
            if index != expected {
                return Err(self.corrupt(expected, &format!("missing entry (found {index} next)")));
            }
            let entry = codec::decode_entry(self.group, index, &value)?;
            total += entry.size_bytes();
            if !out.is_empty() && total > max_size_bytes {
                return Ok(out);
            }
            out.push(entry);
            expected = expected.next();
        }
        if expected != high {
            return Err(self.corrupt(expected, "missing entry at the end of a range"));
        }
        Ok(out)
    }

    /// Checks the invariants the simulator and tests rely on.
    pub fn check_invariants(&self) -> std::result::Result<(), String> {
        if self.truncated.index > self.applied.index {
            return Err(format!("truncated {} > applied {}", self.truncated.index, self.applied.index));
        }
        if self.applied.index > self.last_index {
            return Err(format!("applied {} > last index {}", self.applied.index, self.last_index));
        }
        if self.cache.first_index().is_some_and(|first| first <= self.truncated.index) {
            return Err("cache holds purged entries".to_string());
        }
        self.cache.check_invariants()
    }
}

impl LogStore for GroupStorage {
    fn entries(
        &self,
        low: LogIndex,
        high: LogIndex,
        max_size_bytes: u64,
    ) -> std::result::Result<Vec<Entry>, raft::StorageError> {
        if low <= self.truncated.index {
            return Err(raft::StorageError::Compacted(low));
        }
        if high > self.last_index.next() {
            return Err(raft::StorageError::Unavailable(high.prev()));
        }
        if let Some(cached) = self.cache.range(low, high) {
            let mut out: Vec<Entry> = cached.cloned().collect();
            raft::limit_size(&mut out, max_size_bytes);
            return Ok(out);
        }
        Ok(self.read_entries(low, high, max_size_bytes)?)
    }

    fn term(&self, index: LogIndex) -> std::result::Result<Term, raft::StorageError> {
        if index == self.truncated.index {
            return Ok(self.truncated.term);
        }
        if index < self.truncated.index {
            return Err(raft::StorageError::Compacted(index));
        }
        if index > self.last_index {
            return Err(raft::StorageError::Unavailable(index));
        }
        if index == self.last_index {
            return Ok(self.last_term);
        }
        if let Some(term) = self.cache.term(index) {
            return Ok(term);
        }
        let entries = self.read_entries(index, index.next(), u64::MAX)?;
        Ok(entries[0].term)
    }

    fn first_index(&self) -> LogIndex {
        self.truncated.index.next()
    }

    fn last_index(&self) -> LogIndex {
        self.last_index
    }

    /// The metadata of the state machine's current image. Its data is not
    /// carried here: the runtime streams it in chunks on the snapshot RPC
    /// (see `storage::snapshot`), never on the replication stream.
    fn snapshot(&self) -> std::result::Result<Snapshot, raft::StorageError> {
        let metadata = SnapshotMetadata {
            index: self.applied.index,
            term: self.applied.term,
            conf_state: self.conf_state.clone(),
        };
        Ok(Snapshot { metadata, data: Vec::new() })
    }
}
