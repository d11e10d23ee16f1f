//! Applying committed entries to a group's `data` range, and reading it.

use std::collections::BTreeMap;

use rocksdb::{Direction, IteratorMode, ReadOptions};

use super::command::{decode_command, Command};
use super::KvError;
use crate::raft::{ConfState, Entry, EntryPayload, GroupId, LogIndex};
use crate::storage::keys::{self, CF_DATA};
use crate::storage::{ApplyState, Engine, GroupStorage, StorageBatch};

/// What applying one entry did, for the client waiting on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandResult {
    Put,
    Delete {
        existed: bool,
    },
    CompareAndSwap {
        succeeded: bool,
        previous: Option<Vec<u8>>,
    },
    /// An empty entry (a new leader's) or a membership change: no data.
    NoOp,
    /// The entry's command did not decode; every replica skips it alike.
    Rejected(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub index: LogIndex,
    pub result: CommandResult,
}

/// Stages the effects of committed `entries` and the new applied index into
/// `batch`, in order. Entries at or below the applied index are skipped, so
/// re-delivery after a crash applies nothing twice. `conf_state` is the
/// configuration after these entries when one of them changed it (the
/// runtime gets it from `RawNode::apply_conf_change`).
///
/// All or nothing: the commands are worked out first against a private
/// overlay (their reads can fail), and only once every entry is done are
/// their writes and the applied index staged, which cannot fail. An error
/// leaves `batch` and `storage` exactly as they were, so the batch, which
/// carries other groups' writes, never holds half of this apply.
pub fn apply_entries(
    storage: &mut GroupStorage,
    batch: &mut StorageBatch,
    entries: &[Entry],
    conf_state: Option<&ConfState>,
) -> Result<Vec<Applied>, KvError> {
    let applied = storage.applied();
    let fresh: Vec<&Entry> = entries.iter().filter(|e| e.index > applied.index).collect();
    let (Some(first), Some(last)) = (fresh.first(), fresh.last()) else { return Ok(Vec::new()) };
    if first.index != applied.index.next() {
        return Err(KvError::Storage(crate::storage::StorageError::InvalidWrite {
            group: storage.group(),
            detail: format!("apply skips from {} to {}", applied.index, first.index),
        }));
    }
    let engine = storage.engine().clone();
    let mut writer = DataWriter { engine: &engine, group: storage.group(), batch: &*batch, writes: BTreeMap::new() };
    let mut results = Vec::with_capacity(fresh.len());
    for entry in &fresh {
        let result = match &entry.payload {
            EntryPayload::Normal(data) if data.is_empty() => CommandResult::NoOp,
            EntryPayload::Normal(data) => match decode_command(writer.group, entry.index, data) {
                Ok(command) => writer.apply(command)?,
                Err(error) => CommandResult::Rejected(error.to_string()),
            },
            EntryPayload::ConfChange(_) => CommandResult::NoOp,
        };
        results.push(Applied { index: entry.index, result });
    }
    // Every entry applied: from here on nothing can fail.
    let writes = writer.writes;
    let cf = engine.cf(CF_DATA);
    for (data_key, value) in writes {
        batch.stage_data(cf, data_key, value);
    }
    let point = ApplyState { index: last.index, term: last.term };
    storage.stage_apply_state(batch, point, conf_state);
    Ok(results)
}

/// Works out one group's commands of one `apply_entries` call. Reads see,
/// newest first, this call's writes, what the batch staged before (earlier
/// calls, a snapshot install: `StorageBatch::staged_data`), and RocksDB.
struct DataWriter<'a> {
    engine: &'a Engine,
    group: GroupId,
    batch: &'a StorageBatch,
    /// This call's writes by `data` key (`None`: deleted), only the last
    /// per key, staged once every entry has applied. Ordered, so the batch
    /// a call stages does not depend on hashing.
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl DataWriter<'_> {
    fn current(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        let data_key = keys::data_key(self.group, key);
        if let Some(value) = self.writes.get(&data_key) {
            return Ok(value.clone());
        }
        if let Some(value) = self.batch.staged_data(&data_key) {
            return Ok(value.map(<[u8]>::to_vec));
        }
        get(self.engine, self.group, key)
    }

    fn set(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.writes.insert(keys::data_key(self.group, &key), value);
    }

    fn apply(&mut self, command: Command) -> Result<CommandResult, KvError> {
        Ok(match command {
            Command::Put { key, value } => {
                self.set(key, Some(value));
                CommandResult::Put
            }
            Command::Delete { key } => {
                let existed = self.current(&key)?.is_some();
                self.set(key, None);
                CommandResult::Delete { existed }
            }
            Command::CompareAndSwap { key, expected, new } => {
                let previous = self.current(&key)?;
                let succeeded = previous == expected;
                if succeeded {
                    self.set(key, new);
                }
                CommandResult::CompareAndSwap { succeeded, previous }
            }
        })
    }
}

/// The committed value of `key` in `group`, as of the last commit.
pub fn get(engine: &Engine, group: GroupId, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
    let value = engine
        .db()
        .get_pinned_cf(engine.cf(CF_DATA), keys::data_key(group, key))
        .map_err(crate::storage::StorageError::from)?;
    Ok(value.map(|v| v.to_vec()))
}

/// Up to `limit` pairs with `start <= key < end` (`end` empty: no bound).
pub fn scan(
    engine: &Engine,
    group: GroupId,
    start: &[u8],
    end: &[u8],
    limit: usize,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>, KvError> {
    scan_page(engine, group, start, end, limit, usize::MAX).map(|page| page.pairs)
}

/// One page of a scan: its pairs in key order, and whether the range may
/// hold more after the last of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanPage {
    pub pairs: Vec<(Vec<u8>, Vec<u8>)>,
    pub more: bool,
}

/// Pairs with `start <= key < end` (`end` empty: no bound), stopping at
/// `limit` pairs or before the pair that would take the keys and values
/// past `max_bytes` (a page holds at least one pair, so a scan always
/// makes progress, even past one huge value). Memory: the page itself.
pub fn scan_page(
    engine: &Engine,
    group: GroupId,
    start: &[u8],
    end: &[u8],
    limit: usize,
    max_bytes: usize,
) -> Result<ScanPage, KvError> {
    let mut options = ReadOptions::default();
    let upper = if end.is_empty() { keys::group_range(group).1 } else { Some(keys::data_key(group, end)) };
    if let Some(upper) = upper {
        options.set_iterate_upper_bound(upper);
    }
    let from = keys::data_key(group, start);
    let iter = engine.db().iterator_cf_opt(engine.cf(CF_DATA), options, IteratorMode::From(&from, Direction::Forward));
    let mut page = ScanPage::default();
    let mut bytes = 0usize;
    for item in iter {
        let (key, value) = item.map_err(crate::storage::StorageError::from)?;
        let Some(user_key) = keys::user_key(group, &key) else { break };
        let size = user_key.len().saturating_add(value.len());
        if page.pairs.len() >= limit || (!page.pairs.is_empty() && bytes.saturating_add(size) > max_bytes) {
            page.more = true;
            break;
        }
        bytes = bytes.saturating_add(size);
        page.pairs.push((user_key.to_vec(), value.to_vec()));
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::kv::encode_command;
    use crate::raft::{LogStore, NodeId, Term};
    use crate::storage::StorageConfig;

    fn entry(index: u64, command: Command) -> Entry {
        Entry::new_normal(Term(2), LogIndex(index), encode_command(&command))
    }

    fn put(key: &str, value: &str) -> Command {
        Command::Put { key: key.into(), value: value.into() }
    }

    #[test]
    fn later_apply_calls_of_one_batch_see_earlier_ones() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(Engine::open(dir.path(), 1, &StorageConfig::default()).unwrap());
        let mut batch = StorageBatch::new();
        let conf = ConfState { voters: [NodeId(1)].into(), ..ConfState::default() };
        let mut storage = GroupStorage::bootstrap(engine.clone(), GroupId(3), conf, &mut batch).unwrap();
        let cas = |expected: &str, new: Option<&str>| Command::CompareAndSwap {
            key: b"c".to_vec(),
            expected: Some(expected.into()),
            new: new.map(Into::into),
        };
        let first = [entry(2, put("c", "0")), entry(3, cas("0", Some("1")))];
        let second =
            [entry(4, cas("1", None)), entry(5, Command::Delete { key: b"c".to_vec() }), entry(6, put("d", "x"))];
        let log: Vec<Entry> = first.iter().chain(&second).cloned().collect();
        storage.stage_entries(&mut batch, &log).unwrap();
        let mut results = apply_entries(&mut storage, &mut batch, &first, None).unwrap();
        results.extend(apply_entries(&mut storage, &mut batch, &second, None).unwrap());
        let results: Vec<CommandResult> = results.into_iter().map(|a| a.result).collect();
        assert_eq!(
            results,
            vec![
                CommandResult::Put,
                CommandResult::CompareAndSwap { succeeded: true, previous: Some(b"0".to_vec()) },
                CommandResult::CompareAndSwap { succeeded: true, previous: Some(b"1".to_vec()) },
                CommandResult::Delete { existed: false },
                CommandResult::Put,
            ]
        );
        engine.commit(batch).unwrap();
        assert_eq!(get(&engine, GroupId(3), b"c").unwrap(), None);
        assert_eq!(scan(&engine, GroupId(3), b"", b"", 10).unwrap(), vec![(b"d".to_vec(), b"x".to_vec())]);
        assert_eq!(storage.applied().index, LogIndex(6));
    }

    #[test]
    fn a_command_that_does_not_decode_is_rejected_alike_and_apply_moves_on() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(Engine::open(dir.path(), 1, &StorageConfig::default()).unwrap());
        let mut batch = StorageBatch::new();
        let conf = ConfState { voters: [NodeId(1)].into(), ..ConfState::default() };
        let mut storage = GroupStorage::bootstrap(engine.clone(), GroupId(3), conf, &mut batch).unwrap();
        let entries = [Entry::new_normal(Term(2), LogIndex(2), vec![1, 9, 9]), entry(3, put("k", "v"))];
        storage.stage_entries(&mut batch, &entries).unwrap();
        let results = apply_entries(&mut storage, &mut batch, &entries, None).unwrap();
        let CommandResult::Rejected(error) = &results[0].result else { panic!("{results:?}") };
        assert!(error.contains("group 3") && error.contains("index 2"), "{error}");
        assert_eq!(results[1].result, CommandResult::Put);
        assert_eq!(storage.applied().index, LogIndex(3));
    }

    /// Flips a byte in the first block of every `data` SST file, so reading
    /// a key stored there fails its checksum (the engine must be closed).
    fn damage_data_files(dir: &std::path::Path, files: &[String]) {
        for name in files {
            let path = dir.join(name.trim_start_matches('/'));
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[2] ^= 0xff;
            std::fs::write(&path, bytes).unwrap();
        }
    }

    /// A read that fails half way through an apply (here a damaged data
    /// block under a delete) stages nothing: the batch stays exactly as it
    /// was, the group's applied index does not move, and another group's
    /// writes in the same batch still commit.
    #[test]
    fn an_apply_that_fails_half_way_leaves_the_batch_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let config = StorageConfig::default();
        let conf = ConfState { voters: [NodeId(1)].into(), ..ConfState::default() };
        let files = {
            let engine = Arc::new(Engine::open(dir.path(), 1, &config).unwrap());
            let mut batch = StorageBatch::new();
            let mut storage = GroupStorage::bootstrap(engine.clone(), GroupId(3), conf.clone(), &mut batch).unwrap();
            GroupStorage::bootstrap(engine.clone(), GroupId(4), conf, &mut batch).unwrap();
            let log =
                [entry(2, put("k", "v")), entry(3, put("a", "1")), entry(4, Command::Delete { key: b"k".to_vec() })];
            storage.stage_entries(&mut batch, &log).unwrap();
            apply_entries(&mut storage, &mut batch, &log[..1], None).unwrap();
            engine.commit(batch).unwrap();
            engine.db().flush_cf(engine.cf(CF_DATA)).unwrap();
            let live = engine.db().live_files().unwrap();
            live.into_iter().filter(|f| f.column_family_name == CF_DATA).map(|f| f.name).collect::<Vec<_>>()
        };
        assert_eq!(files.len(), 1, "{files:?}");
        damage_data_files(dir.path(), &files);
        let engine = Arc::new(Engine::open(dir.path(), 1, &config).unwrap());
        let mut storage = GroupStorage::open(engine.clone(), GroupId(3)).unwrap().unwrap();
        let mut other = GroupStorage::open(engine.clone(), GroupId(4)).unwrap().unwrap();
        assert!(get(&engine, GroupId(3), b"k").is_err(), "the damaged block does not read");

        let mut batch = StorageBatch::new();
        let other_entries = [entry(2, put("o", "1"))];
        other.stage_entries(&mut batch, &other_entries).unwrap();
        apply_entries(&mut other, &mut batch, &other_entries, None).unwrap();
        let shape = |batch: &StorageBatch| (batch.entry_count(), batch.size_bytes(), batch.is_empty());
        let before = shape(&batch);
        // Entry 3 (a put) applies; entry 4 (a delete) must read "k" and fails.
        let log = storage.entries(LogIndex(3), LogIndex(5), u64::MAX).unwrap();
        let error = apply_entries(&mut storage, &mut batch, &log, None).unwrap_err().to_string();
        assert!(error.contains("rocksdb"), "{error}");
        assert_eq!(shape(&batch), before, "the failed apply staged nothing");
        assert_eq!(batch.staged_data(&keys::data_key(GroupId(3), b"a")), None, "not even the entry before it");
        assert_eq!(storage.applied().index, LogIndex(2));

        engine.commit(batch).unwrap();
        assert_eq!(get(&engine, GroupId(4), b"o").unwrap(), Some(b"1".to_vec()), "the other group's write committed");
        assert!(!matches!(get(&engine, GroupId(3), b"a"), Ok(Some(_))), "the failed apply wrote nothing");
        drop((storage, other));
        let reopened = GroupStorage::open(engine, GroupId(3)).unwrap().unwrap();
        assert_eq!(reopened.applied().index, LogIndex(2), "the applied index on disk did not move");
    }
}
