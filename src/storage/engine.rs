//! The node's one RocksDB instance: opening (with format and identity
//! checks), tuning, and the single durable write path.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, Options, WriteBatch,
    WriteBufferManager, WriteOptions, DB,
};

use super::batch::StorageBatch;
use super::error::{Result, StorageError};
use super::keys::{self, CF_DATA, CF_META, CF_RAFT_LOG, CF_RAFT_STATE, COLUMN_FAMILIES};

/// The on-disk format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Storage tuning. Defaults suit a node hosting thousands of small groups.
#[derive(Clone, Debug)]
pub struct StorageConfig {
    /// One LRU block cache shared by every column family, so hot data of
    /// any group competes for the same memory instead of per-CF budgets.
    /// The memtables are charged to it too, so this is the storage
    /// engine's whole memory budget: memtables first, cached blocks after.
    pub block_cache_bytes: usize,
    /// Memtables of all column families together are capped by one write
    /// buffer manager (charged to the block cache), so memory does not grow
    /// with the number of column families or groups. Room for the log's
    /// memtable twice (one filling, one flushing) plus the others.
    pub write_buffer_total_bytes: usize,
    /// Per-memtable size of `raft_state`, `data` and `meta`.
    pub write_buffer_bytes: usize,
    /// Memtable size of `raft_log`. Every active group keeps a live tail
    /// (entries not yet purged): in the storage benchmark (128-byte
    /// entries, purged past 64) 10,000 groups hold up to about 110 MB of
    /// log. A larger memtable flushes less often, and more of each flush is
    /// entries already purged (range tombstones), which never reach an SST
    /// file; with the per-group insert hints (see `column_family_options`)
    /// a larger memtable does not make inserts slower. With the hints,
    /// 32 -> 128 MiB cut the CPU per entry with 10,000 groups from 3.2 to
    /// 1.8 us in a scratch build (BENCHMARKS.md). TiKV's raft log DB also
    /// uses 128 MB.
    pub log_write_buffer_bytes: usize,
    /// Compress user data (values are often text); the log and state are
    /// short-lived or tiny and stay uncompressed to save CPU.
    pub compress_data: bool,
    /// Background flush and compaction threads.
    pub background_jobs: i32,
    /// fsync on every write batch. Only tests that measure something else
    /// turn this off; a node never does (acknowledged writes must survive).
    pub sync_writes: bool,
}

impl Default for StorageConfig {
    fn default() -> StorageConfig {
        StorageConfig {
            block_cache_bytes: 512 << 20,
            write_buffer_total_bytes: 384 << 20,
            write_buffer_bytes: 32 << 20,
            log_write_buffer_bytes: 128 << 20,
            compress_data: true,
            background_jobs: 2,
            sync_writes: true,
        }
    }
}

/// An open RocksDB with Flotilla's column families.
pub struct Engine {
    pub(super) db: DB,
    path: PathBuf,
    sync_writes: bool,
    /// Durable writes issued, for metrics and the group-commit benchmark.
    sync_count: AtomicU64,
    // Keep the shared cache alive as long as the DB uses it.
    _block_cache: Cache,
}

impl Engine {
    /// Opens `path` for node `node_id`, creating it if it does not exist.
    /// An existing directory must hold every column family, this format
    /// version and this node's id; otherwise nothing is changed.
    pub fn open(path: &Path, node_id: u64, config: &StorageConfig) -> Result<Engine> {
        if !path.join("CURRENT").exists() {
            create(path, node_id, config)?;
        }
        let present = DB::list_cf(&Options::default(), path)?;
        if let Some(name) = COLUMN_FAMILIES.iter().find(|cf| !present.iter().any(|p| p == *cf)) {
            return Err(StorageError::MissingColumnFamily { path: path.display().to_string(), name });
        }
        let engine = Engine::open_db(path, false, config)?;
        engine.check_identity(node_id)?;
        Ok(engine)
    }

    fn open_db(path: &Path, create: bool, config: &StorageConfig) -> Result<Engine> {
        let block_cache = Cache::new_lru_cache(config.block_cache_bytes);
        let write_buffers = WriteBufferManager::new_write_buffer_manager_with_cache(
            config.write_buffer_total_bytes,
            false,
            block_cache.clone(),
        );
        let mut db_options = Options::default();
        db_options.create_if_missing(create);
        db_options.create_missing_column_families(create);
        db_options.set_write_buffer_manager(&write_buffers);
        db_options.set_max_background_jobs(config.background_jobs);
        // Many groups' tiny writes: let RocksDB pipeline WAL and memtable work.
        db_options.set_enable_pipelined_write(true);
        let descriptors = COLUMN_FAMILIES
            .iter()
            .map(|&name| Ok(ColumnFamilyDescriptor::new(name, column_family_options(name, config, &block_cache)?)))
            .collect::<Result<Vec<_>>>()?;
        let db = DB::open_cf_descriptors(&db_options, path, descriptors)?;
        Ok(Engine {
            db,
            path: path.to_path_buf(),
            sync_writes: config.sync_writes,
            sync_count: AtomicU64::new(0),
            _block_cache: block_cache,
        })
    }

    /// Checks the recorded format version and node id.
    fn check_identity(&self, node_id: u64) -> Result<()> {
        let meta = self.cf(CF_META);
        let path = self.path.display().to_string();
        let version = self.db.get_cf(meta, keys::meta_key(keys::META_FORMAT_VERSION))?;
        let stored_node = self.db.get_cf(meta, keys::meta_key(keys::META_NODE_ID))?;
        let (Some(version), Some(node)) = (version, stored_node) else {
            return Err(StorageError::UnsupportedFormat { path, found: 0, supported: FORMAT_VERSION });
        };
        let found = decode_u32(&version).unwrap_or(u32::MAX);
        if found != FORMAT_VERSION {
            return Err(StorageError::UnsupportedFormat { path, found, supported: FORMAT_VERSION });
        }
        let found = decode_u64(&node).unwrap_or(0);
        if found != node_id {
            return Err(StorageError::WrongNode { path, expected: node_id, found });
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn cf(&self, name: &'static str) -> &ColumnFamily {
        self.db.cf_handle(name).expect("every column family is opened with the engine")
    }

    pub fn db(&self) -> &DB {
        &self.db
    }

    /// Writes a raw batch atomically and durably; used for the identity
    /// records. Everything else goes through [`commit`](Self::commit).
    fn write(&self, batch: WriteBatch) -> Result<()> {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        self.db.write_opt(batch, &options)?;
        self.sync_count.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Group commit: writes every group's staged parts atomically with one
    /// fsync. An empty batch costs nothing (idle turns do not sync).
    pub fn commit(&self, batch: StorageBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut options = WriteOptions::default();
        let sync = self.sync_writes && batch.needs_sync;
        options.set_sync(sync);
        self.db.write_opt(batch.inner, &options)?;
        if sync {
            self.sync_count.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Durable writes issued on the write path (group commits and the
    /// identity records) since the engine was opened. RocksDB's own flush
    /// and compaction syncs are not counted.
    pub fn sync_count(&self) -> u64 {
        self.sync_count.load(Ordering::Relaxed)
    }
}

/// Creates a complete data directory (every column family and the identity
/// records) beside `path` and renames it into place, so a crash during
/// creation never leaves a half-made directory that cannot be opened: the
/// next start finds no `CURRENT` at `path` and creates it again.
fn create(path: &Path, node_id: u64, config: &StorageConfig) -> Result<()> {
    let io = StorageError::io;
    let mut staging = path.as_os_str().to_owned();
    staging.push(".creating");
    let staging = PathBuf::from(staging);
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| io(&staging, e))?;
    }
    if path.exists() && std::fs::read_dir(path).map_err(|e| io(path, e))?.next().is_some() {
        let detail = "it is not empty and holds no RocksDB database (no CURRENT file)";
        return Err(StorageError::Io { path: path.display().to_string(), source: std::io::Error::other(detail) });
    }
    {
        let engine = Engine::open_db(&staging, true, config)?;
        let meta = engine.cf(CF_META);
        let mut batch = WriteBatch::default();
        batch.put_cf(meta, keys::meta_key(keys::META_FORMAT_VERSION), FORMAT_VERSION.to_be_bytes());
        batch.put_cf(meta, keys::meta_key(keys::META_NODE_ID), node_id.to_be_bytes());
        engine.write(batch)?;
    }
    // rename(2) replaces an empty directory at `path` atomically.
    rename_durably(&staging, path)
}

/// Renames `from` to `to` and fsyncs the parent directory, so the new name
/// survives a crash (etcd #6368).
pub(super) fn rename_durably(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|e| StorageError::io(to, e))?;
    sync_parent(to)
}

/// Fsyncs the folder holding `path`, so that a name just created, renamed
/// or linked there survives a crash (etcd #6368).
pub(super) fn sync_parent(path: &Path) -> Result<()> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(parent).and_then(|dir| dir.sync_all()).map_err(|e| StorageError::io(parent, e))
}

fn column_family_options(name: &str, config: &StorageConfig, cache: &Cache) -> Result<Options> {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    // Bloom filters pay off for point lookups of user keys; log reads are
    // range scans of one group's prefix.
    if name == CF_DATA {
        table.set_bloom_filter(10.0, false);
    }
    let mut options = Options::default();
    options.set_block_based_table_factory(&table);
    let memtable_bytes = if name == CF_RAFT_LOG { config.log_write_buffer_bytes } else { config.write_buffer_bytes };
    options.set_write_buffer_size(memtable_bytes);
    let compression =
        if name == CF_DATA && config.compress_data { DBCompressionType::Lz4 } else { DBCompressionType::None };
    options.set_compression_type(compression);
    if name == CF_DATA && config.compress_data {
        // Cold, bottom-level data compresses better and is read less.
        options.set_bottommost_compression_type(DBCompressionType::Zstd);
    }
    if name == CF_RAFT_LOG || name == CF_RAFT_STATE {
        // Purged log ranges are range tombstones; compacting them away
        // early keeps scans of a group's live tail cheap.
        options.set_level_compaction_dynamic_level_bytes(true);
    }
    if name == CF_RAFT_LOG {
        // Each turn appends one entry to each of hundreds of groups: keys at
        // scattered places of the memtable's skiplist, each found by a
        // search from the top through cold memory (about half the event
        // loop's CPU with 10,000 groups). With a hint per 8-byte group prefix,
        // RocksDB remembers where each group's last insert went and puts
        // the next entry beside it, as it does for one group's sequential
        // keys. (RocksDB ignores hints when several writers fill a memtable
        // at once; the node has one writer.) Only settable by name: the C
        // API has no setter for it. The
        // copy lacks rust-rocksdb's keep-alive handles; C++ shares the cache
        // by reference count, and the engine holds `_block_cache` anyway.
        return Ok(options.get_options_from_string(LOG_INSERT_HINT)?);
    }
    Ok(options)
}

/// Per-group insert hints for the log memtable (see `column_family_options`).
const LOG_INSERT_HINT: &str = "memtable_insert_with_hint_prefix_extractor=rocksdb.FixedPrefix.8";

fn decode_u32(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

fn decode_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_opens_again_for_the_same_node_only() {
        let dir = tempfile::tempdir().unwrap();
        drop(Engine::open(dir.path(), 1, &StorageConfig::default()).unwrap());
        drop(Engine::open(dir.path(), 1, &StorageConfig::default()).unwrap());
        let error = Engine::open(dir.path(), 2, &StorageConfig::default()).err().unwrap().to_string();
        assert!(error.contains("belongs to node 1, not node 2"), "{error}");
    }

    #[test]
    fn a_newer_format_version_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        {
            let engine = Engine::open(dir.path(), 1, &StorageConfig::default()).unwrap();
            let mut batch = WriteBatch::default();
            batch.put_cf(engine.cf(CF_META), keys::meta_key(keys::META_FORMAT_VERSION), 9u32.to_be_bytes());
            engine.write(batch).unwrap();
        }
        for _ in 0..2 {
            let error = Engine::open(dir.path(), 1, &StorageConfig::default()).err().unwrap().to_string();
            assert!(error.contains("format version 9") && error.contains("reads version 1"), "{error}");
        }
    }

    #[test]
    fn a_creation_cut_short_by_a_crash_is_redone_on_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        // What a kill during creation leaves: a half-made staging directory.
        let staging = dir.path().join("db.creating");
        std::fs::create_dir(&staging).unwrap();
        std::fs::write(staging.join("LOCK"), b"").unwrap();
        drop(Engine::open(&path, 3, &StorageConfig::default()).unwrap());
        assert!(!staging.exists(), "the leftover is removed");
        drop(Engine::open(&path, 3, &StorageConfig::default()).unwrap());
        // An empty directory made by an operator is fine too.
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        drop(Engine::open(&empty, 3, &StorageConfig::default()).unwrap());
    }

    #[test]
    fn a_non_empty_directory_that_is_not_a_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
        let error = Engine::open(dir.path(), 1, &StorageConfig::default()).err().unwrap().to_string();
        assert!(error.contains("not empty and holds no RocksDB database"), "{error}");
        assert_eq!(std::fs::read(dir.path().join("notes.txt")).unwrap(), b"mine");
    }

    #[test]
    fn a_directory_missing_a_column_family_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut options = Options::default();
            options.create_if_missing(true);
            options.create_missing_column_families(true);
            DB::open_cf(&options, dir.path(), [CF_RAFT_LOG, CF_META]).unwrap();
        }
        let error = Engine::open(dir.path(), 1, &StorageConfig::default()).err().unwrap().to_string();
        assert!(error.contains("lacks column family \"raft_state\""), "{error}");
        // Nothing was created by the failed open.
        let present = DB::list_cf(&Options::default(), dir.path()).unwrap();
        assert!(!present.iter().any(|cf| cf == CF_DATA));
    }

    /// RocksDB's own record of the options it opened with (the newest
    /// OPTIONS-* file), one column family's section.
    fn persisted_options(path: &Path, cf: &str) -> String {
        let newest = std::fs::read_dir(path)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.starts_with("OPTIONS-"))
            .max_by_key(|name| name["OPTIONS-".len()..].parse::<u64>().unwrap())
            .expect("an OPTIONS file");
        let text = std::fs::read_to_string(path.join(newest)).unwrap();
        let header = format!("[CFOptions \"{cf}\"]");
        let start = text.find(&header).unwrap_or_else(|| panic!("no section {header}"));
        let section = &text[start + header.len()..];
        section[..section.find("\n[").unwrap_or(section.len())].to_string()
    }

    #[test]
    fn the_log_memtable_has_per_group_insert_hints_and_its_own_size() {
        let dir = tempfile::tempdir().unwrap();
        let config = StorageConfig { log_write_buffer_bytes: 96 << 20, ..StorageConfig::default() };
        drop(Engine::open(dir.path(), 1, &config).unwrap());
        // Reopened, so the options of a normal start are the ones checked.
        drop(Engine::open(dir.path(), 1, &config).unwrap());
        let log = persisted_options(dir.path(), CF_RAFT_LOG);
        assert!(log.contains("memtable_insert_with_hint_prefix_extractor=rocksdb.FixedPrefix.8"), "{log}");
        assert!(log.contains(&format!("write_buffer_size={}", 96 << 20)), "{log}");
        // Set before the by-name copy; RocksDB's default compresses, so this
        // shows the copy started from our options, not from defaults.
        assert!(log.contains("\n  compression=kNoCompression\n"), "{log}");
        let data = persisted_options(dir.path(), CF_DATA);
        assert!(!data.contains("rocksdb.FixedPrefix"), "only the log gets hints: {data}");
        assert!(data.contains(&format!("write_buffer_size={}", 32 << 20)), "{data}");
    }
}
