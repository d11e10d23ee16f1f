//! Applying committed entries to a group's `data` range, and reading it.

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
    let mut writer = DataWriter { engine: &engine, group: storage.group(), batch };
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
    let point = ApplyState { index: last.index, term: last.term };
    storage.stage_apply_state(writer.batch, point, conf_state);
    Ok(results)
}

/// Writes one group's commands into the batch; reads see what earlier
/// commands staged in the same batch (`StorageBatch::staged_data`).
struct DataWriter<'a> {
    engine: &'a Engine,
    group: GroupId,
    batch: &'a mut StorageBatch,
}

impl DataWriter<'_> {
    fn current(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        if let Some(value) = self.batch.staged_data(&keys::data_key(self.group, key)) {
            return Ok(value.map(<[u8]>::to_vec));
        }
        get(self.engine, self.group, key)
    }

    fn set(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        let cf = self.engine.cf(CF_DATA);
        self.batch.stage_data(cf, keys::data_key(self.group, &key), value);
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
    let mut options = ReadOptions::default();
    let upper = if end.is_empty() { keys::group_range(group).1 } else { Some(keys::data_key(group, end)) };
    if let Some(upper) = upper {
        options.set_iterate_upper_bound(upper);
    }
    let from = keys::data_key(group, start);
    let iter = engine.db().iterator_cf_opt(engine.cf(CF_DATA), options, IteratorMode::From(&from, Direction::Forward));
    let mut out = Vec::new();
    for item in iter.take(limit) {
        let (key, value) = item.map_err(crate::storage::StorageError::from)?;
        match keys::user_key(group, &key) {
            Some(user_key) => out.push((user_key.to_vec(), value.to_vec())),
            None => break,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::kv::encode_command;
    use crate::raft::{NodeId, Term};
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
}
