//! The RocksDB-backed log store against an in-memory model: seeded random
//! sequences of append (overwriting a suffix), hard-state updates, apply,
//! purge, restart, and crash (a staged batch that is never committed). After
//! every step the store must agree with the model exactly.

use std::collections::BTreeMap;
use std::sync::Arc;

use flotilla::raft::{
    ConfState, Entry, GroupId, HardState, LogIndex, LogStore, NodeId, StorageError as RaftStorageError, Term,
};
use flotilla::sim::Rng;
use flotilla::storage::{ApplyState, Engine, GroupStorage, StorageBatch, StorageConfig};

const GROUPS: u64 = 3;

fn conf() -> ConfState {
    ConfState { voters: [NodeId(1), NodeId(2), NodeId(3)].into(), ..ConfState::default() }
}

/// What one group's store must hold.
#[derive(Clone, Debug)]
struct Model {
    truncated: ApplyState,
    applied: ApplyState,
    /// index -> (term, payload) for (truncated, last]
    entries: BTreeMap<u64, (u64, Vec<u8>)>,
    hard_state: HardState,
    /// The commit index on disk: written only with a term or vote change.
    stored_commit: LogIndex,
}

impl Model {
    fn bootstrapped() -> Model {
        let point = ApplyState { index: LogIndex(1), term: Term(1) };
        Model {
            truncated: point,
            applied: point,
            entries: BTreeMap::new(),
            hard_state: HardState { term: Term(1), vote: None, commit: LogIndex(1) },
            stored_commit: LogIndex(1),
        }
    }

    /// What a restart finds: commit-only changes were not written, and the
    /// applied index (stored with the applied data) lifts the stored commit.
    fn after_restart(mut self) -> Model {
        self.hard_state.commit = self.stored_commit.max(self.applied.index);
        self
    }

    fn last_index(&self) -> u64 {
        self.entries.keys().next_back().copied().unwrap_or(self.truncated.index.0)
    }

    fn term(&self, index: u64) -> u64 {
        if index == self.truncated.index.0 {
            return self.truncated.term.0;
        }
        self.entries[&index].0
    }
}

fn open_all(engine: &Arc<Engine>) -> Vec<GroupStorage> {
    (1..=GROUPS).map(|g| GroupStorage::open(engine.clone(), GroupId(g)).unwrap().expect("group exists")).collect()
}

fn check(store: &GroupStorage, model: &Model, context: &str) {
    let group = store.group();
    assert_eq!(store.first_index(), model.truncated.index.next(), "{context}: first index of {group}");
    assert_eq!(store.last_index().0, model.last_index(), "{context}: last index of {group}");
    assert_eq!(store.truncated(), model.truncated, "{context}: truncated state of {group}");
    assert_eq!(store.applied(), model.applied, "{context}: apply state of {group}");
    assert_eq!(store.hard_state(), &model.hard_state, "{context}: hard state of {group}");
    for index in model.truncated.index.0..=model.last_index() {
        assert_eq!(store.term(LogIndex(index)).unwrap(), Term(model.term(index)), "{context}: term {index} of {group}");
    }
    let below = model.truncated.index.prev();
    assert_eq!(store.term(below), Err(RaftStorageError::Compacted(below)), "{context}: purged term of {group}");
    let (first, last) = (model.truncated.index.0 + 1, model.last_index());
    let entries = store.entries(LogIndex(first), LogIndex(last + 1), u64::MAX).unwrap();
    let found: Vec<(u64, u64, Vec<u8>)> = entries.iter().map(|e| (e.index.0, e.term.0, payload(e))).collect();
    let expected: Vec<(u64, u64, Vec<u8>)> = model.entries.iter().map(|(&i, (t, p))| (i, *t, p.clone())).collect();
    assert_eq!(found, expected, "{context}: entries of {group}");
    if last >= first + 2 {
        // A size limit returns a non-empty prefix.
        let limited = store.entries(LogIndex(first), LogIndex(last + 1), 1).unwrap();
        assert_eq!(limited.len(), 1, "{context}: size-limited read of {group}");
    }
    store.check_invariants().unwrap();
}

fn payload(entry: &Entry) -> Vec<u8> {
    match &entry.payload {
        flotilla::raft::EntryPayload::Normal(data) => data.clone(),
        other => panic!("unexpected payload {other:?}"),
    }
}

/// One random step on group `g`; returns the new staged model.
fn step(rng: &mut Rng, store: &mut GroupStorage, batch: &mut StorageBatch, model: &Model, serial: &mut u64) -> Model {
    let mut next = model.clone();
    match rng.range(0, 10) {
        0..=5 => {
            // Append, sometimes overwriting part of the unapplied tail.
            let last = model.last_index();
            // Never a committed entry, as in Raft.
            let low = (model.hard_state.commit.0 + 1).max(last.saturating_sub(rng.range(0, 4)));
            let start = if rng.range(0, 3) == 0 { low } else { last + 1 };
            let term = model.hard_state.term.0 + u64::from(start <= last);
            let count = 1 + rng.range(0, 6);
            next.entries.retain(|&i, _| i < start);
            let mut entries = Vec::new();
            for index in start..start + count {
                *serial += 1;
                let data = format!("g{}-e{serial}", store.group().0).into_bytes();
                next.entries.insert(index, (term, data.clone()));
                entries.push(Entry::new_normal(Term(term), LogIndex(index), data));
            }
            store.stage_entries(batch, &entries).unwrap();
            next.hard_state = HardState { term: Term(term), vote: Some(NodeId(1)), commit: model.hard_state.commit };
            if (next.hard_state.term, next.hard_state.vote) != (model.hard_state.term, model.hard_state.vote) {
                next.stored_commit = next.hard_state.commit;
            }
            store.stage_hard_state(batch, next.hard_state);
        }
        6 | 7 => {
            // Commit part of the log and apply part of what is committed
            // (a restart must not lose the applied part of it).
            let (last, applied, commit) = (next.last_index(), model.applied.index.0, model.hard_state.commit.0);
            let commit = commit.max(applied + rng.range(0, last - applied + 1));
            let to = applied + rng.range(0, commit - applied + 1);
            next.applied = ApplyState { index: LogIndex(to), term: Term(next.term(to)) };
            next.hard_state.commit = LogIndex(commit);
            store.stage_hard_state(batch, next.hard_state);
            store.stage_apply_state(batch, next.applied, None);
        }
        _ => {
            let to = model.truncated.index.0 + rng.range(0, model.applied.index.0 - model.truncated.index.0 + 1);
            store.stage_purge(batch, LogIndex(to)).unwrap();
            if to > model.truncated.index.0 {
                next.truncated = ApplyState { index: LogIndex(to), term: Term(next.term(to)) };
                next.entries.retain(|&i, _| i > to);
            }
        }
    }
    next
}

fn run_seed(seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig::default();
    let mut engine = Arc::new(Engine::open(dir.path(), 1, &config).unwrap());
    let mut batch = StorageBatch::new();
    let mut stores: Vec<GroupStorage> = (1..=GROUPS)
        .map(|g| GroupStorage::bootstrap(engine.clone(), GroupId(g), conf(), &mut batch).unwrap())
        .collect();
    engine.commit(batch).unwrap();
    let mut durable: Vec<Model> = vec![Model::bootstrapped(); GROUPS as usize];
    let mut rng = Rng::new(seed);
    let mut serial = 0;
    for turn in 0..150 {
        let context = format!("seed {seed} turn {turn}");
        let mut batch = StorageBatch::new();
        let mut staged = durable.clone();
        // Several groups in one batch: group commit.
        for _ in 0..1 + rng.range(0, 4) {
            let g = rng.range(0, GROUPS) as usize;
            staged[g] = step(&mut rng, &mut stores[g], &mut batch, &staged[g], &mut serial);
        }
        match rng.range(0, 20) {
            0 => {
                // Crash before the batch is written: the staged state is lost.
                drop(batch);
                drop(stores);
                durable = durable.into_iter().map(Model::after_restart).collect();
                engine = reopen(engine, dir.path(), &config);
                stores = open_all(&engine);
            }
            1 => {
                engine.commit(batch).unwrap();
                durable = staged.into_iter().map(Model::after_restart).collect();
                drop(stores);
                engine = reopen(engine, dir.path(), &config);
                stores = open_all(&engine);
            }
            _ => {
                engine.commit(batch).unwrap();
                durable = staged;
            }
        }
        for (store, model) in stores.iter().zip(&durable) {
            check(store, model, &context);
        }
    }
}

fn reopen(engine: Arc<Engine>, path: &std::path::Path, config: &StorageConfig) -> Arc<Engine> {
    assert_eq!(Arc::strong_count(&engine), 1, "every store was dropped");
    drop(engine);
    Arc::new(Engine::open(path, 1, config).unwrap())
}

#[test]
fn the_log_store_agrees_with_its_model() {
    let seeds: u64 = std::env::var("FLOTILLA_STORAGE_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    for seed in 0..seeds {
        run_seed(seed);
    }
}

#[test]
fn one_batch_for_many_groups_is_one_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::open(dir.path(), 1, &StorageConfig::default()).unwrap());
    let before = engine.sync_count();
    let mut batch = StorageBatch::new();
    let mut stores: Vec<GroupStorage> =
        (1..=1000).map(|g| GroupStorage::bootstrap(engine.clone(), GroupId(g), conf(), &mut batch).unwrap()).collect();
    for store in &mut stores {
        let entry = Entry::new_normal(Term(1), LogIndex(2), b"x".to_vec());
        store.stage_entries(&mut batch, &[entry]).unwrap();
    }
    assert_eq!(batch.entry_count(), 1000);
    engine.commit(batch).unwrap();
    assert_eq!(engine.sync_count() - before, 1, "1000 groups, one batch, one fsync");
    engine.commit(StorageBatch::new()).unwrap();
    assert_eq!(engine.sync_count() - before, 1, "an empty batch is not synced");
    drop(stores);
    let reopened = GroupStorage::open(engine.clone(), GroupId(1000)).unwrap().unwrap();
    assert_eq!(reopened.last_index(), LogIndex(2));
    assert!(GroupStorage::open(engine, GroupId(1001)).unwrap().is_none(), "an unknown group is None");
}

#[test]
fn bad_writes_are_refused_with_the_group_named() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::open(dir.path(), 1, &StorageConfig::default()).unwrap());
    let mut batch = StorageBatch::new();
    let mut store = GroupStorage::bootstrap(engine.clone(), GroupId(9), conf(), &mut batch).unwrap();
    let gap = [Entry::new_normal(Term(1), LogIndex(5), vec![])];
    let error = store.stage_entries(&mut batch, &gap).unwrap_err().to_string();
    assert!(error.contains("group 9") && error.contains("entries start at 5"), "{error}");
    let error = store.stage_purge(&mut batch, LogIndex(3)).unwrap_err().to_string();
    assert!(error.contains("only 1 is applied"), "{error}");
    let jump = [Entry::new_normal(Term(1), LogIndex(2), vec![]), Entry::new_normal(Term(1), LogIndex(4), vec![])];
    assert!(store.stage_entries(&mut batch, &jump).unwrap_err().to_string().contains("jump from 2 to 4"));
}

#[test]
fn a_corrupted_stored_entry_is_an_error_naming_group_and_index() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::open(dir.path(), 1, &StorageConfig::default()).unwrap());
    let mut batch = StorageBatch::new();
    let mut store = GroupStorage::bootstrap(engine.clone(), GroupId(4), conf(), &mut batch).unwrap();
    let entries: Vec<Entry> = (2..=4).map(|i| Entry::new_normal(Term(1), LogIndex(i), vec![7; 20])).collect();
    store.stage_entries(&mut batch, &entries).unwrap();
    engine.commit(batch).unwrap();
    drop(store);
    // Flip one byte of entry 3 behind the store's back.
    let cf = engine.cf(flotilla::storage::keys::CF_RAFT_LOG);
    let key = flotilla::storage::keys::log_key(GroupId(4), LogIndex(3));
    let mut bytes = engine.db().get_cf(cf, key).unwrap().unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    let mut batch = StorageBatch::new();
    batch.put(cf, key, bytes);
    engine.commit(batch).unwrap();
    let store = GroupStorage::open(engine.clone(), GroupId(4)).unwrap().unwrap();
    let error = store.entries(LogIndex(2), LogIndex(5), u64::MAX).unwrap_err().to_string();
    assert!(error.contains("group 4") && error.contains("index 3"), "{error}");
    assert_eq!(store.entries(LogIndex(4), LogIndex(5), u64::MAX).unwrap().len(), 1, "other entries still read");
}

/// Only term and vote are durable in a hard state: a change of commit alone
/// is not written, and a restart takes the larger of the stored commit and
/// the applied index.
#[test]
fn commit_alone_is_not_written_and_restart_lifts_it_to_the_applied_index() {
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig::default();
    let mut engine = Arc::new(Engine::open(dir.path(), 1, &config).unwrap());
    let mut batch = StorageBatch::new();
    let mut store = GroupStorage::bootstrap(engine.clone(), GroupId(7), conf(), &mut batch).unwrap();
    let entries: Vec<Entry> = (2..=6).map(|i| Entry::new_normal(Term(1), LogIndex(i), vec![i as u8])).collect();
    store.stage_entries(&mut batch, &entries).unwrap();
    store.stage_hard_state(&mut batch, HardState { term: Term(1), vote: Some(NodeId(2)), commit: LogIndex(2) });
    engine.commit(batch).unwrap();

    let mut batch = StorageBatch::new();
    store.stage_hard_state(&mut batch, HardState { term: Term(1), vote: Some(NodeId(2)), commit: LogIndex(6) });
    assert!(batch.is_empty(), "a commit-only change writes nothing");
    assert_eq!(store.hard_state().commit, LogIndex(6), "but is kept in memory");
    store.stage_apply_state(&mut batch, ApplyState { index: LogIndex(4), term: Term(1) }, None);
    engine.commit(batch).unwrap();
    drop(store);
    engine = reopen(engine, dir.path(), &config);
    let mut store = GroupStorage::open(engine.clone(), GroupId(7)).unwrap().unwrap();
    assert_eq!(
        *store.hard_state(),
        HardState { term: Term(1), vote: Some(NodeId(2)), commit: LogIndex(4) },
        "stored commit 2, applied 4"
    );

    let mut batch = StorageBatch::new();
    store.stage_hard_state(&mut batch, HardState { term: Term(2), vote: None, commit: LogIndex(6) });
    assert!(!batch.is_empty(), "a new term is written, with the commit of the moment");
    engine.commit(batch).unwrap();
    drop(store);
    engine = reopen(engine, dir.path(), &config);
    let store = GroupStorage::open(engine, GroupId(7)).unwrap().unwrap();
    assert_eq!(*store.hard_state(), HardState { term: Term(2), vote: None, commit: LogIndex(6) });
}

/// A group created empty to receive a snapshot stores nothing but its hard
/// state once it votes. A restart must find it with that vote: a node that
/// forgot it would recreate the group empty and could vote twice in a term.
#[test]
fn an_empty_group_that_voted_reopens_with_its_vote() {
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig::default();
    let mut engine = Arc::new(Engine::open(dir.path(), 1, &config).unwrap());
    let mut store = GroupStorage::empty(engine.clone(), GroupId(8));
    let mut batch = StorageBatch::new();
    let voted = HardState { term: Term(3), vote: Some(NodeId(2)), commit: LogIndex::ZERO };
    store.stage_hard_state(&mut batch, voted);
    assert!(!batch.is_empty(), "a vote is written");
    engine.commit(batch).unwrap();
    drop(store);
    engine = reopen(engine, dir.path(), &config);
    let store = GroupStorage::open(engine.clone(), GroupId(8)).unwrap().expect("a group that voted is known");
    assert_eq!(*store.hard_state(), voted);
    assert_eq!((store.first_index(), store.last_index()), (LogIndex(1), LogIndex::ZERO), "and still empty");
    assert_eq!(store.applied(), ApplyState::default());
    store.check_invariants().unwrap();
    // Removed again, it is unknown again.
    let mut batch = StorageBatch::new();
    store.stage_destroy(&mut batch);
    engine.commit(batch).unwrap();
    assert!(GroupStorage::open(engine, GroupId(8)).unwrap().is_none(), "a destroyed group is None");
}
