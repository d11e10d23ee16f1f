//! Snapshot files: a consistent image of one group's `data` range plus its
//! applied index, term and membership, stored and sent as a sequence of
//! checksummed chunks of at most 1 MiB.
//!
//! A chunk (the same bytes on disk and on the wire):
//! `[crc32 of the rest u32][seq u64][kind u8][len u32][payload]`, all BE.
//! Chunk 0 is `META` (group, index, term, conf state); then `DATA` chunks
//! carry a byte stream of records `[key len u32][key][value len u32][value]`
//! (a record may span chunks); the last is `END` (data chunk count, record
//! count). The receiver checks every checksum and the sequence before it
//! writes the file. Building reads one RocksDB snapshot and may run on any
//! thread; installing streams the file into an SST (see `install`). Neither
//! holds more than a chunk of the snapshot in memory.
//!
//! Files are written to `*.tmp`, fsynced, renamed, and the directory is
//! fsynced (etcd #6368); leftovers of a crash are removed on open.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use rocksdb::{Direction, IteratorMode, ReadOptions};

use super::codec::{self, Reader};
use super::engine::{rename_durably, Engine};
use super::error::{Result, StorageError};
use super::keys::{self, CF_DATA, CF_META, CF_RAFT_STATE};
use crate::raft::{ConfState, GroupId, SnapshotMetadata};

/// Upper bound of one chunk, header included.
pub const MAX_CHUNK_BYTES: usize = 1 << 20;
const HEADER_BYTES: usize = 4 + 8 + 1 + 4;
const MAX_PAYLOAD_BYTES: usize = MAX_CHUNK_BYTES - HEADER_BYTES;
const KIND_META: u8 = 1;
pub(super) const KIND_DATA: u8 = 2;
const KIND_END: u8 = 3;

/// A complete, verified snapshot file.
#[derive(Clone, Debug)]
pub struct SnapshotFile {
    pub path: PathBuf,
    pub group: GroupId,
    pub metadata: SnapshotMetadata,
    pub chunk_count: u64,
    pub record_count: u64,
}

/// The node's snapshot directory.
pub struct SnapshotDir {
    path: PathBuf,
}

impl SnapshotDir {
    /// Opens (creating) the directory and removes half-written files
    /// (`*.tmp`, and SSTs an install left before it ingested them).
    pub fn open(path: &Path) -> Result<SnapshotDir> {
        fs::create_dir_all(path).map_err(|e| StorageError::io(path, e))?;
        let dir = SnapshotDir { path: path.to_path_buf() };
        dir.remove_files(|name| name.ends_with(".tmp") || name.ends_with(".sst"))?;
        Ok(dir)
    }

    /// Builds a snapshot of the group from one consistent RocksDB snapshot
    /// (data, apply state and configuration as of the same instant), then
    /// removes the group's older built files. Safe on any thread, at the
    /// same time as the node writes; not twice at once for one group (both
    /// would write the same file).
    pub fn build(&self, engine: &Engine, group: GroupId) -> Result<SnapshotFile> {
        let image = engine.db().snapshot();
        let read = |cf: &'static str, key: &[u8]| image.get_cf(engine.cf(cf), key);
        let applied = read(CF_META, &keys::apply_state_key(group))?
            .or(read(CF_RAFT_STATE, &keys::state_key(group, keys::STATE_TRUNCATED))?)
            .ok_or_else(|| StorageError::InvalidWrite { group, detail: "no such group to snapshot".into() })?;
        let (index, term) = codec::decode_index_term(group, "apply state", &applied)?;
        // Between an install's first write and its ingest the group's data
        // is not there yet (see `install`): such an image must not be sent.
        if read(CF_RAFT_STATE, &keys::state_key(group, keys::STATE_INSTALLING))?.is_some() {
            return Err(StorageError::InvalidWrite { group, detail: "the group is installing a snapshot".into() });
        }
        let conf_state = match read(CF_RAFT_STATE, &keys::state_key(group, keys::STATE_CONF))? {
            Some(bytes) => codec::decode_conf_state(group, &bytes)?,
            None => ConfState::default(),
        };
        let metadata = SnapshotMetadata { index, term, conf_state };
        let path = snapshot_path(&self.path, group, &metadata, "built");
        let mut writer = ChunkWriter::create(&path)?;
        writer.write_chunk(KIND_META, &encode_meta(group, &metadata))?;
        let (from, to) = group_data_range(group)?;
        let mut options = ReadOptions::default();
        options.set_iterate_upper_bound(to);
        let iter = image.iterator_cf_opt(engine.cf(CF_DATA), options, IteratorMode::From(&from, Direction::Forward));
        let mut stream = Vec::with_capacity(MAX_PAYLOAD_BYTES);
        let mut records = 0u64;
        for item in iter {
            let (key, value) = item?;
            let user_key = &key[8..];
            stream.extend_from_slice(&(user_key.len() as u32).to_be_bytes());
            stream.extend_from_slice(user_key);
            stream.extend_from_slice(&(value.len() as u32).to_be_bytes());
            stream.extend_from_slice(&value);
            records += 1;
            while stream.len() >= MAX_PAYLOAD_BYTES {
                let rest = stream.split_off(MAX_PAYLOAD_BYTES);
                writer.write_chunk(KIND_DATA, &stream)?;
                stream = rest;
            }
        }
        if !stream.is_empty() {
            writer.write_chunk(KIND_DATA, &stream)?;
        }
        let data_chunks = writer.next_seq - 1;
        writer.write_chunk(KIND_END, &[data_chunks.to_be_bytes(), records.to_be_bytes()].concat())?;
        let chunk_count = writer.finish(&path)?;
        self.remove_older(group, &path)?;
        Ok(SnapshotFile { path, group, metadata, chunk_count, record_count: records })
    }

    /// Starts receiving a snapshot of `group` chunk by chunk.
    pub fn receive(&self, group: GroupId) -> Result<SnapshotReceiver> {
        let temp = self.path.join(format!("{:016x}-incoming.tmp", group.0));
        Ok(SnapshotReceiver {
            group,
            final_dir: self.path.clone(),
            writer: Some(ChunkWriter::create(&temp)?),
            temp,
            check: SnapshotCheck::default(),
        })
    }

    /// Removes every file `group` built except `keep`. Received files are
    /// left alone: one may be waiting for its install.
    pub fn remove_older(&self, group: GroupId, keep: &Path) -> Result<()> {
        let prefix = format!("{:016x}-", group.0);
        let keep = keep.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        self.remove_files(|name| name.starts_with(&prefix) && name.ends_with("-built.snap") && name != keep)
    }

    /// Removes the files whose name `doomed` picks.
    pub(super) fn remove_files(&self, doomed: impl Fn(&str) -> bool) -> Result<()> {
        for item in fs::read_dir(&self.path).map_err(|e| StorageError::io(&self.path, e))? {
            let path = item.map_err(|e| StorageError::io(&self.path, e))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if doomed(name) {
                fs::remove_file(&path).map_err(|e| StorageError::io(&path, e))?;
            }
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl SnapshotFile {
    /// The file's chunks in order, each checked again as it is read.
    pub fn chunks(&self) -> Result<ChunkReader> {
        let file = File::open(&self.path).map_err(|e| StorageError::io(&self.path, e))?;
        Ok(ChunkReader { group: self.group, path: self.path.clone(), file: BufReader::new(file), next_seq: 0 })
    }

    /// Opens a complete snapshot file of `group` found on disk, verifying
    /// every chunk (one at a time) and its record count.
    pub fn open(path: &Path, group: GroupId) -> Result<SnapshotFile> {
        let file = SnapshotFile {
            path: path.to_path_buf(),
            group,
            metadata: SnapshotMetadata::default(),
            chunk_count: 0,
            record_count: 0,
        };
        let mut check = SnapshotCheck::default();
        let mut reader = file.chunks()?;
        while let Some(chunk) = reader.next_chunk()? {
            check.accept(group, &chunk)?;
        }
        let (Some(metadata), Some((_, record_count))) = (check.metadata, check.ended) else {
            let detail = "the file ends before its last chunk".to_string();
            return Err(StorageError::BadSnapshotChunk { group, chunk: reader.next_seq, detail });
        };
        Ok(SnapshotFile { metadata, chunk_count: reader.next_seq, record_count, ..file })
    }
}

/// `<group>-<term>-<index>-<origin>.snap`, hex, so names sort by group.
fn snapshot_path(dir: &Path, group: GroupId, metadata: &SnapshotMetadata, origin: &str) -> PathBuf {
    dir.join(format!("{:016x}-{:016x}-{:016x}-{origin}.snap", group.0, metadata.term.0, metadata.index.0))
}

pub(super) fn group_data_range(group: GroupId) -> Result<(Vec<u8>, Vec<u8>)> {
    match keys::group_range(group) {
        (from, Some(to)) => Ok((from, to)),
        (_, None) => Err(StorageError::InvalidWrite { group, detail: "group id u64::MAX is reserved".into() }),
    }
}

/// The first complete record of `stream`: key, value and encoded size.
pub(super) fn next_record(stream: &[u8]) -> Option<(&[u8], &[u8], usize)> {
    let mut reader = Reader::new(stream);
    let key_len = reader.u32().ok()?;
    let key = reader.take(key_len as usize).ok()?;
    let value_len = reader.u32().ok()?;
    let value = reader.take(value_len as usize).ok()?;
    Some((key, value, 8 + key.len() + value.len()))
}

fn encode_meta(group: GroupId, metadata: &SnapshotMetadata) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&group.0.to_be_bytes());
    out.extend_from_slice(&codec::encode_index_term(metadata.index, metadata.term));
    out.extend_from_slice(&codec::encode_conf_state(&metadata.conf_state));
    out
}

fn decode_meta(group: GroupId, payload: &[u8]) -> std::result::Result<SnapshotMetadata, String> {
    let mut reader = Reader::new(payload);
    let found = reader.u64()?;
    if found != group.0 {
        return Err(format!("snapshot is of group {found}"));
    }
    let pair = reader.take(17)?;
    let (index, term) = codec::decode_index_term(group, "snapshot metadata", pair).map_err(|e| e.to_string())?;
    let conf_state = codec::decode_conf_state(group, reader.rest()).map_err(|e| e.to_string())?;
    Ok(SnapshotMetadata { index, term, conf_state })
}

fn frame(seq: u64, kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_be_bytes());
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out[4..]);
    out[..4].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Checks one chunk; returns its sequence number, kind and payload.
fn parse_frame(group: GroupId, chunk: &[u8]) -> Result<(u64, u8, &[u8])> {
    let bad = |chunk_seq: u64, detail: String| StorageError::BadSnapshotChunk { group, chunk: chunk_seq, detail };
    if chunk.len() < HEADER_BYTES || chunk.len() > MAX_CHUNK_BYTES {
        return Err(bad(0, format!("chunk of {} bytes is out of bounds", chunk.len())));
    }
    let seq = u64::from_be_bytes(chunk[4..12].try_into().expect("8 bytes"));
    let stored = u32::from_be_bytes(chunk[..4].try_into().expect("4 bytes"));
    let computed = crc32fast::hash(&chunk[4..]);
    if stored != computed {
        return Err(bad(seq, format!("checksum mismatch (stored {stored:08x}, computed {computed:08x})")));
    }
    let len = u32::from_be_bytes(chunk[13..17].try_into().expect("4 bytes")) as usize;
    if HEADER_BYTES + len != chunk.len() {
        return Err(bad(seq, format!("payload length {len} disagrees with chunk size {}", chunk.len())));
    }
    Ok((seq, chunk[12], &chunk[HEADER_BYTES..]))
}

struct ChunkWriter {
    file: BufWriter<File>,
    path: PathBuf,
    next_seq: u64,
}

impl ChunkWriter {
    fn create(path: &Path) -> Result<ChunkWriter> {
        let temp = path.with_extension("tmp");
        let file = File::create(&temp).map_err(|e| StorageError::io(&temp, e))?;
        Ok(ChunkWriter { file: BufWriter::new(file), path: temp, next_seq: 0 })
    }

    fn write_chunk(&mut self, kind: u8, payload: &[u8]) -> Result<()> {
        self.write_frame(&frame(self.next_seq, kind, payload))
    }

    fn write_frame(&mut self, bytes: &[u8]) -> Result<()> {
        self.file.write_all(bytes).map_err(|e| StorageError::io(&self.path, e))?;
        self.next_seq += 1;
        Ok(())
    }

    /// Makes the file durable under its final name; returns the chunk count.
    fn finish(self, final_path: &Path) -> Result<u64> {
        let file = self.file.into_inner().map_err(|e| StorageError::io(&self.path, e.into_error()))?;
        file.sync_all().map_err(|e| StorageError::io(&self.path, e))?;
        rename_durably(&self.path, final_path)?;
        Ok(self.next_seq)
    }
}

/// Reads a snapshot file's chunks, verifying each.
pub struct ChunkReader {
    group: GroupId,
    path: PathBuf,
    file: BufReader<File>,
    next_seq: u64,
}

impl ChunkReader {
    /// The next raw chunk as it goes on the wire, or `None` at the end.
    pub fn next_chunk(&mut self) -> Result<Option<Vec<u8>>> {
        let mut header = [0u8; HEADER_BYTES];
        match self.file.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(StorageError::io(&self.path, e)),
        }
        let len = u32::from_be_bytes(header[13..17].try_into().expect("4 bytes")) as usize;
        if len > MAX_PAYLOAD_BYTES {
            let detail = format!("payload length {len} is over the limit");
            return Err(StorageError::BadSnapshotChunk { group: self.group, chunk: self.next_seq, detail });
        }
        let mut chunk = header.to_vec();
        chunk.resize(HEADER_BYTES + len, 0);
        self.file.read_exact(&mut chunk[HEADER_BYTES..]).map_err(|e| StorageError::io(&self.path, e))?;
        let (seq, _, _) = parse_frame(self.group, &chunk)?;
        if seq != self.next_seq {
            let detail = format!("expected chunk {}", self.next_seq);
            return Err(StorageError::BadSnapshotChunk { group: self.group, chunk: seq, detail });
        }
        self.next_seq += 1;
        Ok(Some(chunk))
    }
}

impl Iterator for ChunkReader {
    /// (kind, payload) of each verified chunk.
    type Item = Result<(u8, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_chunk() {
            Ok(Some(chunk)) => Some(Ok((chunk[12], chunk[HEADER_BYTES..].to_vec()))),
            Ok(None) => None,
            Err(error) => Some(Err(error)),
        }
    }
}

/// Checks a sequence of chunks as it goes: checksums, order, kinds, and
/// the record and chunk counts the END chunk announces. Keeps only the
/// bytes of a record that spans chunks.
#[derive(Default)]
struct SnapshotCheck {
    next_seq: u64,
    metadata: Option<SnapshotMetadata>,
    data_chunks: u64,
    records: u64,
    /// The start of a record whose rest is in the next chunk.
    pending: Vec<u8>,
    /// (data chunk count, record count) announced by the END chunk.
    ended: Option<(u64, u64)>,
}

impl SnapshotCheck {
    fn accept(&mut self, group: GroupId, chunk: &[u8]) -> Result<()> {
        let (seq, kind, payload) = parse_frame(group, chunk)?;
        let bad = |detail: String| StorageError::BadSnapshotChunk { group, chunk: seq, detail };
        if self.ended.is_some() {
            return Err(bad("the snapshot is already complete".into()));
        }
        if seq != self.next_seq {
            return Err(bad(format!("out of order: expected chunk {}", self.next_seq)));
        }
        match (kind, &self.metadata) {
            (KIND_META, None) => self.metadata = Some(decode_meta(group, payload).map_err(bad)?),
            (KIND_DATA, Some(_)) => {
                self.pending.extend_from_slice(payload);
                let mut used = 0;
                while let Some((_, _, size)) = next_record(&self.pending[used..]) {
                    used += size;
                    self.records += 1;
                }
                self.pending.drain(..used);
                self.data_chunks += 1;
            }
            (KIND_END, Some(_)) => {
                let mut reader = Reader::new(payload);
                let chunks = reader.u64().map_err(&bad)?;
                let records = reader.u64().map_err(&bad)?;
                if chunks != self.data_chunks || records != self.records || !self.pending.is_empty() {
                    return Err(bad(format!(
                        "end announces {chunks} data chunks and {records} records; received {} and {}",
                        self.data_chunks, self.records
                    )));
                }
                self.ended = Some((chunks, records));
            }
            _ => return Err(bad(format!("unexpected chunk kind {kind} at this point"))),
        }
        self.next_seq += 1;
        Ok(())
    }
}

/// Receives a snapshot's chunks in order; only a complete, verified
/// sequence becomes a snapshot file.
pub struct SnapshotReceiver {
    group: GroupId,
    final_dir: PathBuf,
    temp: PathBuf,
    /// `None` once finished (the temp file was renamed).
    writer: Option<ChunkWriter>,
    check: SnapshotCheck,
}

impl SnapshotReceiver {
    /// Verifies one chunk (checksum, sequence, kind order) and keeps it.
    pub fn accept(&mut self, chunk: &[u8]) -> Result<()> {
        let group = self.group;
        let Some(writer) = self.writer.as_mut() else {
            let detail = "the snapshot is already complete".to_string();
            return Err(StorageError::BadSnapshotChunk { group, chunk: self.check.next_seq, detail });
        };
        self.check.accept(group, chunk)?;
        writer.write_frame(chunk)
    }

    /// Makes the received snapshot durable; fails unless the END chunk came.
    pub fn finish(mut self) -> Result<SnapshotFile> {
        let group = self.group;
        let (Some(metadata), Some((_, record_count))) = (self.check.metadata.clone(), self.check.ended) else {
            let detail = "the stream ended before its last chunk".to_string();
            return Err(StorageError::BadSnapshotChunk { group, chunk: self.check.next_seq, detail });
        };
        let writer = self.writer.take().expect("not finished twice");
        let path = snapshot_path(&self.final_dir, group, &metadata, "received");
        let chunk_count = writer.finish(&path)?;
        Ok(SnapshotFile { path, group, metadata, chunk_count, record_count })
    }
}

impl Drop for SnapshotReceiver {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            // An abandoned or rejected transfer leaves nothing behind.
            let _ = fs::remove_file(&self.temp);
        }
    }
}
