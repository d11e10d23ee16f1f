//! One group-commit batch: the Ready parts of any number of groups (and the
//! apply results of any number of groups) gathered into one RocksDB
//! `WriteBatch`, committed with one fsync by [`Engine::commit`].
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
    pub fn stage_data(&mut self, cf: &ColumnFamily, data_key: Vec<u8>, value: Option<Vec<u8>>) {
        match &value {
            Some(value) => self.put(cf, &data_key, value),
            None => self.delete(cf, &data_key),
        }
        self.staged_data.insert(data_key, value);
    }

    /// The value staged for `data_key` in this batch: `None` if the batch
    /// does not touch it, `Some(None)` if it deletes it.
    pub fn staged_data(&self, data_key: &[u8]) -> Option<Option<&[u8]>> {
        self.staged_data.get(data_key).map(|v| v.as_deref())
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
