//! Snapshots end to end: build on one node's store, stream the chunks to
//! another node's receiver, install, compare; and every way a transfer can
//! go wrong is refused without touching the receiver's data.

use std::path::Path;
use std::sync::Arc;

use flotilla::kv::{self, apply_entries, encode_command, Command, CommandResult};
use flotilla::raft::{ConfState, Entry, GroupId, LogIndex, LogStore, NodeId, Term};
use flotilla::storage::snapshot::{SnapshotDir, SnapshotFile, MAX_CHUNK_BYTES};
use flotilla::storage::{keys, Engine, GroupStorage, StorageBatch, StorageConfig};

struct Node {
    engine: Arc<Engine>,
    snapshots: SnapshotDir,
    _dir: tempfile::TempDir,
}

fn node(id: u64) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::open(&dir.path().join("db"), id, &StorageConfig::default()).unwrap());
    let snapshots = SnapshotDir::open(&dir.path().join("snap")).unwrap();
    Node { engine, snapshots, _dir: dir }
}

fn conf() -> ConfState {
    ConfState { voters: [NodeId(1), NodeId(2), NodeId(3)].into(), ..ConfState::default() }
}

/// Bootstraps `group` and applies `commands` as entries 2.. in one batch.
fn group_with(node: &Node, group: u64, commands: &[Command]) -> GroupStorage {
    let mut batch = StorageBatch::new();
    let mut store = GroupStorage::bootstrap(node.engine.clone(), GroupId(group), conf(), &mut batch).unwrap();
    let entries: Vec<Entry> = commands
        .iter()
        .enumerate()
        .map(|(i, c)| Entry::new_normal(Term(2), LogIndex(i as u64 + 2), encode_command(c)))
        .collect();
    store.stage_entries(&mut batch, &entries).unwrap();
    apply_entries(&mut store, &mut batch, &entries, None).unwrap();
    node.engine.commit(batch).unwrap();
    store
}

fn puts(prefix: &str, count: usize, value_bytes: usize) -> Vec<Command> {
    (0..count)
        .map(|i| Command::Put {
            key: format!("{prefix}{i:05}").into_bytes(),
            value: vec![(i % 251) as u8; value_bytes],
        })
        .collect()
}

fn all(node: &Node, group: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
    kv::scan(&node.engine, GroupId(group), b"", b"", usize::MAX).unwrap()
}

fn chunks_of(file: &SnapshotFile) -> Vec<Vec<u8>> {
    let mut reader = file.chunks().unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = reader.next_chunk().unwrap() {
        out.push(chunk);
    }
    out
}

fn snap_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

#[test]
fn a_snapshot_round_trips_to_another_node() {
    let sender = node(1);
    let mut commands = puts("key", 3000, 1000);
    commands.push(Command::Put { key: b"big".to_vec(), value: vec![9; 1 << 20] });
    commands.push(Command::Delete { key: b"key00007".to_vec() });
    let sender_store = group_with(&sender, 5, &commands);
    let file = sender.snapshots.build(&sender.engine, GroupId(5)).unwrap();
    assert_eq!(file.metadata.index, LogIndex(commands.len() as u64 + 1));
    assert_eq!(file.metadata.term, Term(2));
    assert_eq!(file.metadata.conf_state, conf());
    assert_eq!(file.record_count, 3000);
    let chunks = chunks_of(&file);
    assert!(chunks.len() >= 5, "about 4 MiB of data spans several chunks, got {}", chunks.len());
    assert!(chunks.iter().all(|c| c.len() <= MAX_CHUNK_BYTES));

    // The receiver already holds older data of the same group and another group.
    let receiver = node(2);
    let mut receiver_store = group_with(&receiver, 5, &puts("stale", 10, 10));
    group_with(&receiver, 6, &puts("other", 10, 10));
    let bystander = all(&receiver, 6);
    let mut incoming = receiver.snapshots.receive(GroupId(5)).unwrap();
    for chunk in &chunks {
        incoming.accept(chunk).unwrap();
    }
    let received = incoming.finish().unwrap();
    let mut batch = StorageBatch::new();
    received.install(&mut receiver_store, None, &mut batch).unwrap();
    receiver.engine.commit(batch).unwrap();

    assert_eq!(all(&receiver, 5), all(&sender, 5), "same data after install");
    assert_eq!(all(&receiver, 6), bystander, "other groups untouched");
    assert_eq!(receiver_store.first_index(), file.metadata.index.next(), "log reset after the snapshot");
    assert_eq!(receiver_store.last_index(), file.metadata.index);
    assert_eq!(receiver_store.term(file.metadata.index).unwrap(), Term(2));
    assert_eq!(receiver_store.applied().index, file.metadata.index);
    drop(receiver_store);
    let reopened = GroupStorage::open(receiver.engine.clone(), GroupId(5)).unwrap().unwrap();
    assert_eq!(reopened.snapshot().unwrap().metadata, file.metadata, "restart sees the installed state");
    // The stored hard state still has the receiver's old commit (1); the
    // installed snapshot is applied, so a restart starts from its index.
    assert_eq!(reopened.hard_state().commit, file.metadata.index, "commit lifted to the snapshot");
    assert_eq!(sender_store.snapshot().unwrap().metadata, file.metadata);
}

#[test]
fn a_corrupted_chunk_is_rejected_by_name_and_changes_nothing() {
    let sender = node(1);
    group_with(&sender, 5, &puts("key", 2500, 1000));
    let file = sender.snapshots.build(&sender.engine, GroupId(5)).unwrap();
    let mut chunks = chunks_of(&file);
    let middle = chunks[2].len() / 2;
    chunks[2][middle] ^= 0x01;

    let receiver = node(2);
    let receiver_store = group_with(&receiver, 5, &puts("stale", 10, 10));
    let before = all(&receiver, 5);
    let mut incoming = receiver.snapshots.receive(GroupId(5)).unwrap();
    incoming.accept(&chunks[0]).unwrap();
    incoming.accept(&chunks[1]).unwrap();
    let error = incoming.accept(&chunks[2]).unwrap_err().to_string();
    assert!(error.contains("snapshot chunk 2 of group 5") && error.contains("checksum"), "{error}");
    drop(incoming);
    assert_eq!(all(&receiver, 5), before, "old data untouched");
    assert_eq!(receiver_store.applied().index, LogIndex(11));
    assert!(snap_files(receiver.snapshots.path()).is_empty(), "the partial transfer left no file");
}

#[test]
fn out_of_order_truncated_and_foreign_streams_are_refused() {
    let sender = node(1);
    group_with(&sender, 5, &puts("key", 2500, 1000));
    let chunks = chunks_of(&sender.snapshots.build(&sender.engine, GroupId(5)).unwrap());
    let receiver = node(2);

    let mut skipped = receiver.snapshots.receive(GroupId(5)).unwrap();
    skipped.accept(&chunks[0]).unwrap();
    let error = skipped.accept(&chunks[2]).unwrap_err().to_string();
    assert!(error.contains("chunk 2") && error.contains("expected chunk 1"), "{error}");

    let mut cut = receiver.snapshots.receive(GroupId(5)).unwrap();
    for chunk in &chunks[..chunks.len() - 1] {
        cut.accept(chunk).unwrap();
    }
    let error = cut.finish().unwrap_err().to_string();
    assert!(error.contains("ended before its last chunk"), "{error}");

    let mut foreign = receiver.snapshots.receive(GroupId(6)).unwrap();
    let error = foreign.accept(&chunks[0]).unwrap_err().to_string();
    assert!(error.contains("snapshot is of group 5"), "{error}");
    let error = foreign.accept(&chunks[0][..10]).unwrap_err().to_string();
    assert!(error.contains("out of bounds"), "{error}");
}

#[test]
fn old_snapshot_files_are_cleaned_up() {
    let sender = node(1);
    let mut store = group_with(&sender, 5, &puts("a", 10, 10));
    let first = sender.snapshots.build(&sender.engine, GroupId(5)).unwrap();
    let mut batch = StorageBatch::new();
    let more = [Entry::new_normal(Term(3), LogIndex(12), encode_command(&puts("b", 1, 10)[0]))];
    store.stage_entries(&mut batch, &more).unwrap();
    apply_entries(&mut store, &mut batch, &more, None).unwrap();
    sender.engine.commit(batch).unwrap();
    let second = sender.snapshots.build(&sender.engine, GroupId(5)).unwrap();
    assert_eq!(second.metadata.index, LogIndex(12));
    assert_eq!(snap_files(sender.snapshots.path()).len(), 1, "only the newest snapshot stays");
    assert!(!first.path.exists() && second.path.exists());
    // A crash mid-write leaves a temp file; reopening the directory removes it.
    std::fs::write(sender.snapshots.path().join("0000000000000005-incoming.tmp"), b"partial").unwrap();
    let reopened = SnapshotDir::open(sender.snapshots.path()).unwrap();
    assert_eq!(snap_files(reopened.path()).len(), 1);
}

fn put(key: &str, value: &str) -> Command {
    Command::Put { key: key.into(), value: value.into() }
}

/// What a batch holds, as far as it can be seen from outside.
fn shape(batch: &StorageBatch) -> (usize, usize, bool) {
    (batch.entry_count(), batch.size_bytes(), batch.is_empty())
}

/// The value `batch` stages for `key` of `group` (see `StorageBatch::staged_data`).
fn staged(batch: &StorageBatch, group: u64, key: &str) -> Option<Option<Vec<u8>>> {
    batch.staged_data(&keys::data_key(GroupId(group), key.as_bytes())).map(|v| v.map(<[u8]>::to_vec))
}

/// A snapshot older than what the receiver applied is refused, and the
/// refusal stages nothing: the batch may already carry other groups' writes,
/// which must commit without any part of the refused install.
#[test]
fn a_refused_stale_install_leaves_the_batch_as_it_was() {
    let sender = node(1);
    group_with(&sender, 5, &puts("snap", 3, 10));
    let file = sender.snapshots.build(&sender.engine, GroupId(5)).unwrap();
    assert_eq!(file.metadata.index, LogIndex(4));
    let receiver = node(2);
    let mut store = group_with(&receiver, 5, &puts("stale", 10, 10));
    let mut other = group_with(&receiver, 6, &[]);
    let before = all(&receiver, 5);

    let mut batch = StorageBatch::new();
    let entries = [Entry::new_normal(Term(2), LogIndex(2), encode_command(&put("o", "1")))];
    other.stage_entries(&mut batch, &entries).unwrap();
    apply_entries(&mut other, &mut batch, &entries, None).unwrap();
    let shape_before = shape(&batch);
    let error = file.install(&mut store, None, &mut batch).unwrap_err().to_string();
    assert!(error.contains("group 5") && error.contains("older than the applied index 11"), "{error}");
    assert_eq!(shape(&batch), shape_before, "the refused install staged nothing");
    assert_eq!(staged(&batch, 5, "snap00000"), None, "no snapshot data staged");
    assert_eq!(staged(&batch, 5, "stale00000"), None, "no range delete staged");
    assert_eq!(staged(&batch, 6, "o"), Some(Some(b"1".to_vec())), "the other group's write is still staged");
    assert_eq!(
        (store.applied().index, store.first_index(), store.last_index()),
        (LogIndex(11), LogIndex(2), LogIndex(11))
    );

    receiver.engine.commit(batch).unwrap();
    assert_eq!(all(&receiver, 5), before, "the refused snapshot changed no data");
    assert_eq!(all(&receiver, 6), vec![(b"o".to_vec(), b"1".to_vec())], "the other group's write committed");
    drop(store);
    let reopened = GroupStorage::open(receiver.engine.clone(), GroupId(5)).unwrap().unwrap();
    assert_eq!((reopened.applied().index, reopened.truncated().index), (LogIndex(11), LogIndex(1)));
}

/// Entries applied after an install, in the same batch, read the installed
/// data: the snapshot's values, and nothing of what it replaced (a key
/// stored before but absent from the snapshot reads as absent).
#[test]
fn entries_applied_after_an_install_in_the_same_batch_read_the_installed_data() {
    let sender = node(1);
    let history = [put("shared", "old"), put("shared", "new"), put("snap-only", "s"), put("tmp", "t")];
    group_with(&sender, 5, &[&history[..], &[Command::Delete { key: b"tmp".to_vec() }]].concat());
    let file = sender.snapshots.build(&sender.engine, GroupId(5)).unwrap();
    let receiver = node(2);
    let mut store = group_with(&receiver, 5, &[put("shared", "old"), put("old-only", "x"), put("gone", "g")]);

    let mut batch = StorageBatch::new();
    // Newer than what the receiver applied (4), so it is installed.
    assert_eq!(file.metadata.index, LogIndex(6));
    file.install(&mut store, None, &mut batch).unwrap();
    // The install is written to the engine at once (its data goes in as an
    // ingested SST); the batch stages no data of the group.
    assert_eq!(staged(&batch, 5, "old-only"), None, "the install stages no data into the batch");
    assert_eq!(all(&receiver, 5), all(&sender, 5), "the installed data is in the engine already");
    let cas = |key: &str, expected: Option<&str>, new: Option<&str>| Command::CompareAndSwap {
        key: key.into(),
        expected: expected.map(Into::into),
        new: new.map(Into::into),
    };
    let commands = [
        vec![cas("old-only", None, Some("fresh")), Command::Delete { key: b"gone".to_vec() }],
        vec![cas("shared", Some("new"), Some("newer")), cas("snap-only", Some("s"), None), put("later", "l")],
    ];
    let mut results = Vec::new();
    let mut next = file.metadata.index.next();
    // Two apply calls: the second reads what the install and the first staged.
    for part in &commands {
        let entries: Vec<Entry> = part
            .iter()
            .zip(next.0..)
            .map(|(c, i)| Entry::new_normal(Term(3), LogIndex(i), encode_command(c)))
            .collect();
        next = LogIndex(next.0 + entries.len() as u64);
        store.stage_entries(&mut batch, &entries).unwrap();
        results.extend(apply_entries(&mut store, &mut batch, &entries, None).unwrap().into_iter().map(|a| a.result));
    }
    let swapped = |previous: Option<&str>| CommandResult::CompareAndSwap {
        succeeded: true,
        previous: previous.map(|p| p.as_bytes().to_vec()),
    };
    assert_eq!(
        results,
        vec![
            swapped(None),
            CommandResult::Delete { existed: false },
            swapped(Some("new")),
            swapped(Some("s")),
            CommandResult::Put
        ]
    );
    receiver.engine.commit(batch).unwrap();
    let pair = |k: &str, v: &str| (k.as_bytes().to_vec(), v.as_bytes().to_vec());
    assert_eq!(all(&receiver, 5), vec![pair("later", "l"), pair("old-only", "fresh"), pair("shared", "newer")]);
    assert_eq!(store.applied().index, next.prev());
}
