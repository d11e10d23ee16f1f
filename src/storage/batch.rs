//! One group-commit batch: the Ready parts of any number of groups (and the
//! apply results of any number of groups) gathered into one RocksDB
//! `WriteBatch`, committed with one fsync by [`Engine::commit`].
//!
//! Staging is all-or-nothing per call. Every `stage_*` function of this
//! layer (and `kv::apply_entries`) does all its fallible work first
//! (checks, reads, decoding) and only then writes into the batch, which
//! cannot fail. An error thus leaves the batch exactly as it was, never half
//! of one group's change in a batch other groups commit. (The alternatives
//! cost more: the `rocksdb` crate 0.25 does not expose the C API's write
//! batch save points, and a per-group scratch batch appended on success
//! would copy every group's writes a second time each turn.)
//!
//! [`Engine::commit`]: super::Engine::commit

use std::collections::HashMap;

use rocksdb::{ColumnFamily, WriteBatch};

#[derive(Default)]
pub struct StorageBatch {
    pub(super) inner: WriteBatch,
    /// Whether anything in the batch must survive a crash before it is
    /// acknowledged; a batch without it is written without an fsync.
    pub(super) needs_sync: bool,
    entries: usize,
    /// User data staged so far, by `data` key (`None`: deleted). A
    /// `WriteBatch` cannot be read, and a command applied later in the same
    /// batch (a compare-and-swap after a put, maybe in another apply call)
    /// must see what earlier ones wrote.
    staged_data: HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// `[from, to)` ranges of `data` keys deleted in this batch (a snapshot
    /// install, a removed replica): a key in one reads as deleted unless a
    /// later write put it in `staged_data`.
    cleared_data: Vec<(Vec<u8>, Vec<u8>)>,
}

impl StorageBatch {
    pub fn new() -> StorageBatch {
        StorageBatch::default()
    }

    pub fn put(&mut self, cf: &ColumnFamily, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.inner.put_cf(cf, key, value);
        self.needs_sync = true;
    }

    pub fn delete(&mut self, cf: &ColumnFamily, key: impl AsRef<[u8]>) {
        self.inner.delete_cf(cf, key);
        self.needs_sync = true;
    }

    /// Deletes `[from, to)`: one range tombstone, whatever the size.
    pub fn delete_range(&mut self, cf: &ColumnFamily, from: impl AsRef<[u8]>, to: impl AsRef<[u8]>) {
        self.inner.delete_range_cf(cf, from.as_ref(), to.as_ref());
        self.needs_sync = true;
    }

    /// Stages a write of user data that later reads of this batch see.
    /// Applying needs no fsync of its own (DESIGN.md: an apply-only batch
    /// is written unsynced): the entries it applies are already durable in
    /// the log, and data and applied index share the batch, so a crash that
    /// loses it re-applies the same entries exactly once.
    pub fn stage_data(&mut self, cf: &ColumnFamily, data_key: Vec<u8>, value: Option<Vec<u8>>) {
        match &value {
            Some(value) => self.inner.put_cf(cf, &data_key, value),
            None => self.inner.delete_cf(cf, &data_key),
        }
        self.staged_data.insert(data_key, value);
    }

    /// Stages a write that, like applied data, needs no fsync of its own
    /// (the apply state: see `stage_data`).
    pub(super) fn put_unsynced(&mut self, cf: &ColumnFamily, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.inner.put_cf(cf, key, value);
    }

    /// Whether committing this batch fsyncs (when the engine syncs at all).
    pub fn needs_sync(&self) -> bool {
        self.needs_sync
    }

    /// Stages deleting the `data` keys in `[from, to)` (one range
    /// tombstone) so that later reads of this batch see them deleted: a
    /// command applied right after a snapshot install must not read a value
    /// the snapshot replaced or lacks.
    pub fn stage_data_delete_range(&mut self, cf: &ColumnFamily, from: Vec<u8>, to: Vec<u8>) {
        self.delete_range(cf, &from, &to);
        // Writes staged before the tombstone are deleted with it.
        self.staged_data.retain(|key, _| !in_range(key, &from, &to));
        self.cleared_data.push((from, to));
    }

    /// The value staged for `data_key` in this batch: `None` if the batch
    /// does not touch it, `Some(None)` if it deletes it.
    pub fn staged_data(&self, data_key: &[u8]) -> Option<Option<&[u8]>> {
        if let Some(value) = self.staged_data.get(data_key) {
            return Some(value.as_deref());
        }
        // A write after a range delete is in `staged_data`, so a key found
        // only in a cleared range is deleted, whatever RocksDB holds.
        self.cleared_data.iter().any(|(from, to)| in_range(data_key, from, to)).then_some(None)
    }

    pub(super) fn count_entries(&mut self, count: usize) {
        self.entries += count;
    }

    /// Log entries staged in this batch (for metrics and benchmarks); hard
    /// states, apply states and data writes are not counted.
    pub fn entry_count(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    pub fn size_bytes(&self) -> usize {
        self.inner.size_in_bytes()
    }
}

fn in_range(key: &[u8], from: &[u8], to: &[u8]) -> bool {
    from <= key && key < to
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::GroupId;
    use crate::storage::keys::{self, CF_DATA};
    use crate::storage::{Engine, StorageConfig};

    #[test]
    fn a_cleared_range_reads_as_deleted_until_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), 1, &StorageConfig::default()).unwrap();
        let cf = engine.cf(CF_DATA);
        let key = |group: u64, user: &str| keys::data_key(GroupId(group), user.as_bytes());
        let mut batch = StorageBatch::new();
        batch.stage_data(cf, key(5, "before"), Some(b"1".to_vec()));
        batch.stage_data(cf, key(6, "other"), Some(b"2".to_vec()));
        let (from, to) = keys::group_range(GroupId(5));
        batch.stage_data_delete_range(cf, from, to.unwrap());
        batch.stage_data(cf, key(5, "after"), Some(b"3".to_vec()));
        assert_eq!(batch.staged_data(&key(5, "before")), Some(None), "a write before the range delete is gone");
        assert_eq!(batch.staged_data(&key(5, "untouched")), Some(None), "a key only on disk reads as deleted");
        assert_eq!(batch.staged_data(&key(5, "after")), Some(Some(&b"3"[..])), "a write after it stands");
        assert_eq!(batch.staged_data(&key(6, "other")), Some(Some(&b"2"[..])), "other groups are untouched");
        assert_eq!(batch.staged_data(&key(7, "x")), None, "a key the batch does not touch");
        engine.commit(batch).unwrap();
        let read = |k: Vec<u8>| engine.db().get_cf(cf, k).unwrap();
        assert_eq!((read(key(5, "before")), read(key(5, "after"))), (None, Some(b"3".to_vec())), "RocksDB agrees");
        assert_eq!(read(key(6, "other")), Some(b"2".to_vec()));
    }
}
