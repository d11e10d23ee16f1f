//! Installing a snapshot file into a group without holding it in memory:
//! its records are streamed into an SST file, which RocksDB ingests whole.
//!
//! An ingest cannot share a `WriteBatch` with the Raft state, so an install
//! takes three writes, ordered so that a crash at any point is finished on
//! restart (TiKV keeps a region in an "applying" state the same way):
//!
//! 1. one synced batch: the group's new Raft state (log cleared, truncated,
//!    applied and membership at the snapshot, term and vote), a range
//!    delete of its data, and the `STATE_INSTALLING` marker naming the
//!    install's own hard link to the snapshot file
//!    (`<group>-installing.snap`: the transport may remove the received
//!    name whenever it sees the install fail);
//! 2. the SST is ingested (it sorts after the range delete, so the snapshot's
//!    records are what the group reads);
//! 3. the marker is deleted in the turn's batch, where the snapshot state
//!    is staged again (the batch may hold an older log purge of the group).
//!
//! A restart that finds a marker redoes 1's data part and 2 from the link
//! (kept until 3 is durable): [`SnapshotDir::resume_installs`]. A build
//! refuses a group whose marker is set: its data is not there yet.
//! A failure after write 1 has begun leaves the group's in-memory state
//! ahead of its data: the caller must stop the group (its restart finishes
//! the install), never serve it.

use std::fs;
use std::path::{Path, PathBuf};

use rocksdb::{DBCompressionType, IngestExternalFileOptions, Options, SstFileWriter};

use super::batch::StorageBatch;
use super::engine::{sync_parent, Engine};
use super::error::{Result, StorageError};
use super::group::GroupStorage;
use super::keys::{self, CF_DATA, CF_RAFT_STATE};
use super::snapshot::{group_data_range, next_record, SnapshotDir, SnapshotFile, KIND_DATA};
use crate::raft::{GroupId, HardState};

impl SnapshotFile {
    /// Installs this snapshot into `storage`'s group: writes 1 and 2 above
    /// happen now (write 1 fsynced); write 3 is staged into `batch`, so
    /// entries applied later in the same batch read the installed data
    /// from the engine. `hard_state`, the Ready's, is written with the
    /// install so that the stored term is never older than the snapshot's.
    ///
    /// Returns the install's own link to the file, which the marker names:
    /// the caller removes it once `batch` is durable. Until then the
    /// received file itself may go (a transport that sees the install fail
    /// removes it) without making the install impossible to finish.
    ///
    /// Refused with nothing written: a snapshot of another group, one older
    /// than what the group applied, or a file whose records do not verify.
    /// After any error the group's state may be ahead of its data: the
    /// caller must stop serving it (a restart finishes the install).
    pub fn install(
        &self,
        storage: &mut GroupStorage,
        hard_state: Option<HardState>,
        batch: &mut StorageBatch,
    ) -> Result<PathBuf> {
        let (link, sst) = self.write_install_state(storage, hard_state)?;
        let engine = storage.engine().clone();
        ingest(&engine, sst.as_deref())?;
        // `batch` may already hold a log purge of this group, staged by
        // maintenance before the install: its truncated state would
        // overwrite write 1's. Staged again, the snapshot has the last word.
        storage.stage_snapshot_state(batch, &self.metadata);
        batch.delete(engine.cf(CF_RAFT_STATE), keys::state_key(self.group, keys::STATE_INSTALLING));
        Ok(link)
    }

    /// The checks, the install's link, the SST and write 1; returns the
    /// link and the SST to ingest.
    fn write_install_state(
        &self,
        storage: &mut GroupStorage,
        hard_state: Option<HardState>,
    ) -> Result<(PathBuf, Option<PathBuf>)> {
        let group = storage.group();
        if group != self.group {
            return Err(StorageError::InvalidWrite { group, detail: format!("snapshot is of group {}", self.group) });
        }
        storage.check_snapshot(&self.metadata)?;
        let engine = storage.engine().clone();
        let link = self.link_for_install()?;
        let sst = self.write_sst()?;
        let mut first = StorageBatch::new();
        first.put(engine.cf(CF_RAFT_STATE), keys::state_key(group, keys::STATE_INSTALLING), file_name(group, &link)?);
        let (from, to) = group_data_range(group)?;
        first.delete_range(engine.cf(CF_DATA), from, to);
        storage.stage_snapshot_state(&mut first, &self.metadata);
        if let Some(hard_state) = hard_state {
            // The log is empty after the snapshot: a commit index beyond it
            // would not survive the checks of a restart before the turn's
            // entries are written. The Ready's own write stores the rest.
            let commit = self.metadata.index;
            storage.stage_hard_state(&mut first, HardState { commit, ..hard_state });
        }
        if let Err(error) = engine.commit(first) {
            if let Some(sst) = &sst {
                let _ = fs::remove_file(sst);
            }
            return Err(error);
        }
        Ok((link, sst))
    }

    /// A second name for the file, `<group>-installing.snap`, owned by the
    /// install (a hard link: no copy), made durable before write 1 names it.
    fn link_for_install(&self) -> Result<PathBuf> {
        let dir = self.path.parent().ok_or_else(|| StorageError::InvalidWrite {
            group: self.group,
            detail: format!("snapshot path {} has no folder", self.path.display()),
        })?;
        let link = dir.join(format!("{:016x}-installing.snap", self.group.0));
        match fs::remove_file(&link) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(StorageError::io(&link, error)),
        }
        fs::hard_link(&self.path, &link).map_err(|error| StorageError::io(&link, error))?;
        sync_parent(&link)?;
        Ok(link)
    }

    /// Streams the records into `<file>.sst`, verifying their count and
    /// order; `None` for a snapshot without records (nothing to ingest).
    /// Memory: one chunk and one SST block at a time.
    fn write_sst(&self) -> Result<Option<PathBuf>> {
        let group = self.group;
        let path = self.path.with_extension("sst");
        let mut options = Options::default();
        options.set_compression_type(DBCompressionType::Lz4);
        let mut writer = SstFileWriter::create(&options);
        writer.open(&path)?;
        let outcome = self.stream_records(&mut writer);
        let result = match outcome {
            Ok(0) => Ok(None),
            Ok(_) => writer.finish().map(|()| Some(path.clone())).map_err(StorageError::from),
            Err(error) => Err(error),
        };
        if !matches!(result, Ok(Some(_))) {
            drop(writer);
            let _ = fs::remove_file(&path);
        }
        result.map_err(|error| match error {
            StorageError::Rocks(error) => StorageError::BadSnapshotChunk {
                group,
                chunk: self.chunk_count,
                detail: format!("cannot write the records into {}: {error}", path.display()),
            },
            other => other,
        })
    }

    /// Puts every record into `writer`; returns how many there were.
    fn stream_records(&self, writer: &mut SstFileWriter) -> Result<u64> {
        let group = self.group;
        let mut pending = Vec::new();
        let mut records = 0u64;
        for chunk in self.chunks()? {
            let (kind, payload) = chunk?;
            if kind != KIND_DATA {
                continue;
            }
            pending.extend_from_slice(&payload);
            let mut used = 0;
            while let Some((key, value, size)) = next_record(&pending[used..]) {
                // SstFileWriter refuses keys out of order; the builder wrote
                // them in key order, so disorder means a damaged file.
                writer.put(keys::data_key(group, key), value)?;
                used += size;
                records += 1;
            }
            pending.drain(..used);
        }
        if !pending.is_empty() || records != self.record_count {
            let detail = format!("{records} records decoded, {} expected", self.record_count);
            return Err(StorageError::BadSnapshotChunk { group, chunk: self.chunk_count, detail });
        }
        Ok(records)
    }
}

fn file_name(group: GroupId, path: &Path) -> Result<&str> {
    path.file_name().and_then(|name| name.to_str()).ok_or_else(|| StorageError::InvalidWrite {
        group,
        detail: format!("snapshot path {} has no file name", path.display()),
    })
}

/// Moves the SST into the database (a link, not a copy).
fn ingest(engine: &Engine, sst: Option<&Path>) -> Result<()> {
    let Some(sst) = sst else { return Ok(()) };
    let mut options = IngestExternalFileOptions::default();
    options.set_move_files(true);
    engine.db().ingest_external_file_cf_opts(engine.cf(CF_DATA), &options, vec![sst])?;
    Ok(())
}

impl SnapshotDir {
    /// Finishes every install a crash interrupted (see the module doc),
    /// then removes every snapshot file: none is needed any more, and no
    /// transfer can be in flight before the node serves. Returns the
    /// groups whose install was finished.
    pub fn resume_installs(&self, engine: &Engine, groups: impl IntoIterator<Item = GroupId>) -> Result<Vec<GroupId>> {
        let mut resumed = Vec::new();
        for group in groups {
            let marker = keys::state_key(group, keys::STATE_INSTALLING);
            let Some(name) = engine.db().get_cf(engine.cf(CF_RAFT_STATE), marker)? else { continue };
            let name = String::from_utf8(name).map_err(|_| StorageError::InvalidWrite {
                group,
                detail: "the interrupted install's file name is not UTF-8".into(),
            })?;
            let file =
                SnapshotFile::open(&self.path().join(&name), group).map_err(|error| StorageError::InvalidWrite {
                    group,
                    detail: format!("cannot finish the snapshot install a crash interrupted ({name}): {error}"),
                })?;
            let sst = file.write_sst()?;
            let mut clear = StorageBatch::new();
            let (from, to) = group_data_range(group)?;
            clear.delete_range(engine.cf(CF_DATA), from, to);
            engine.commit(clear)?;
            ingest(engine, sst.as_deref())?;
            let mut done = StorageBatch::new();
            done.delete(engine.cf(CF_RAFT_STATE), marker);
            engine.commit(done)?;
            tracing::info!(%group, file = %name, "finished a snapshot install interrupted by a crash");
            resumed.push(group);
        }
        self.remove_files(|_| true)?;
        Ok(resumed)
    }
}

#[cfg(test)]
mod tests {
    //! Crashes inside an install, at the two points between its writes.
    //! (Closing the engine stands in for the crash: write 1 is synced, so
    //! a kill -9 would leave the same state on disk.)
    use std::sync::Arc;

    use super::*;
    use crate::kv::{self, apply_entries, encode_command, Command};
    use crate::raft::{ConfState, Entry, LogIndex, LogStore, NodeId, Term};
    use crate::storage::StorageConfig;

    const GROUP: GroupId = GroupId(5);

    fn open(dir: &Path) -> (Arc<Engine>, SnapshotDir) {
        let engine = Engine::open(&dir.join("db"), 2, &StorageConfig::default()).unwrap();
        (Arc::new(engine), SnapshotDir::open(&dir.join("snap")).unwrap())
    }

    /// Bootstraps GROUP and applies one put per key as entries 2...
    fn group_with(engine: &Arc<Engine>, prefix: &str, count: usize) -> GroupStorage {
        let conf = ConfState { voters: [NodeId(1), NodeId(2), NodeId(3)].into(), ..ConfState::default() };
        let mut batch = StorageBatch::new();
        let mut store = GroupStorage::bootstrap(engine.clone(), GROUP, conf, &mut batch).unwrap();
        let entries: Vec<Entry> = (0..count)
            .map(|i| {
                let put = Command::Put { key: format!("{prefix}{i:04}").into_bytes(), value: vec![i as u8; 300] };
                Entry::new_normal(Term(2), LogIndex(i as u64 + 2), encode_command(&put))
            })
            .collect();
        store.stage_entries(&mut batch, &entries).unwrap();
        apply_entries(&mut store, &mut batch, &entries, None).unwrap();
        engine.commit(batch).unwrap();
        store
    }

    fn data(engine: &Engine) -> Vec<(Vec<u8>, Vec<u8>)> {
        kv::scan(engine, GROUP, b"", b"", usize::MAX).unwrap()
    }

    /// A sender's snapshot of 5,000 records (several chunks), copied into
    /// the receiver's directory as a transfer would leave it; and the
    /// sender's data to compare with.
    fn snapshot_for(receiver: &SnapshotDir) -> (SnapshotFile, Vec<(Vec<u8>, Vec<u8>)>) {
        let dir = tempfile::tempdir().unwrap();
        let (engine, snapshots) = open(dir.path());
        group_with(&engine, "snap", 5000);
        let built = snapshots.build(&engine, GROUP).unwrap();
        assert!(built.chunk_count > 3, "the snapshot spans several chunks");
        let copy = receiver.path().join(built.path.file_name().unwrap());
        fs::copy(&built.path, &copy).unwrap();
        (SnapshotFile::open(&copy, GROUP).unwrap(), data(&engine))
    }

    /// Runs an install through write 1 (and the ingest when asked),
    /// "crashes", restarts, and checks that the restart finished it: the
    /// snapshot's data and state, no marker, no file left behind. The
    /// received file is gone before the crash, as when the transport
    /// removes it after seeing the install fail: the install's own link
    /// is what the restart reads.
    fn crash_and_restart(ingested_before_crash: bool) {
        let dir = tempfile::tempdir().unwrap();
        let (engine, snapshots) = open(dir.path());
        let mut store = group_with(&engine, "stale", 40);
        let (file, expected) = snapshot_for(&snapshots);
        let (link, sst) = file.write_install_state(&mut store, None).unwrap();
        assert_ne!(link, file.path);
        if ingested_before_crash {
            ingest(&engine, sst.as_deref()).unwrap();
        }
        fs::remove_file(&file.path).unwrap();
        drop((store, engine, snapshots));

        let (engine, snapshots) = open(dir.path());
        let resumed = snapshots.resume_installs(&engine, [GroupId(4), GROUP]).unwrap();
        assert_eq!(resumed, vec![GROUP], "only the interrupted group is resumed");
        assert_eq!(data(&engine), expected, "the group holds exactly the snapshot's data");
        let marker = keys::state_key(GROUP, keys::STATE_INSTALLING);
        assert_eq!(engine.db().get_cf(engine.cf(CF_RAFT_STATE), marker).unwrap(), None, "marker removed");
        assert_eq!(fs::read_dir(snapshots.path()).unwrap().count(), 0, "no snapshot or SST file left");
        let store = GroupStorage::open(engine.clone(), GROUP).unwrap().unwrap();
        assert_eq!(store.applied().index, file.metadata.index);
        assert_eq!((store.first_index(), store.last_index()), (file.metadata.index.next(), file.metadata.index));
        assert_eq!(snapshots.resume_installs(&engine, [GROUP]).unwrap(), vec![], "nothing left to resume");
    }

    #[test]
    fn a_crash_before_the_ingest_is_finished_on_restart() {
        crash_and_restart(false);
    }

    #[test]
    fn a_crash_after_the_ingest_before_the_marker_delete_is_finished_on_restart() {
        crash_and_restart(true);
    }

    /// A marker whose file is gone cannot be finished: the node must not
    /// start serving the group's half-installed data.
    #[test]
    fn a_marker_without_its_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, snapshots) = open(dir.path());
        let mut store = group_with(&engine, "stale", 5);
        let (file, _) = snapshot_for(&snapshots);
        let (link, _) = file.write_install_state(&mut store, None).unwrap();
        fs::remove_file(&link).unwrap();
        let error = snapshots.resume_installs(&engine, [GROUP]).unwrap_err().to_string();
        assert!(error.contains("cannot finish the snapshot install") && error.contains("installing.snap"), "{error}");
    }

    /// A log purge that maintenance staged into the turn's batch before the
    /// install must not roll the truncated state back when the batch is
    /// written after the install: the group reopens at the snapshot.
    #[test]
    fn a_purge_staged_before_the_install_in_the_same_batch_does_not_undo_it() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, snapshots) = open(dir.path());
        let mut store = group_with(&engine, "stale", 40);
        let (file, expected) = snapshot_for(&snapshots);
        let mut batch = StorageBatch::new();
        store.stage_purge(&mut batch, LogIndex(30)).unwrap();
        let link = file.install(&mut store, None, &mut batch).unwrap();
        engine.commit(batch).unwrap();
        fs::remove_file(link).unwrap();
        drop(store);
        let store = GroupStorage::open(engine.clone(), GROUP).unwrap().unwrap();
        assert_eq!(store.truncated().index, file.metadata.index, "the snapshot's truncated state was written last");
        assert_eq!(store.applied().index, file.metadata.index);
        assert_eq!(data(&engine), expected);
    }

    /// A build that runs between an install's first write and its ingest
    /// would ship the group without its data: it is refused.
    #[test]
    fn a_group_in_the_middle_of_an_install_is_not_built() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, snapshots) = open(dir.path());
        let mut store = group_with(&engine, "stale", 5);
        let (file, _) = snapshot_for(&snapshots);
        file.write_install_state(&mut store, None).unwrap();
        let error = snapshots.build(&engine, GROUP).unwrap_err().to_string();
        assert!(error.contains("installing a snapshot"), "{error}");
    }
}
