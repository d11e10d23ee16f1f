//! Errors of the storage layer. Corruption names the group and what was
//! being decoded; none of these is retryable by a client.

use crate::raft::{GroupId, LogIndex};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("i/o on {path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// Bytes read back do not decode (bad checksum, unknown tag, truncated).
    #[error("corrupt {what} in group {group} at index {index}: {detail}")]
    Corrupt { group: GroupId, index: LogIndex, what: &'static str, detail: String },
    #[error("data directory {path} has format version {found}; this build reads version {supported}")]
    UnsupportedFormat { path: String, found: u32, supported: u32 },
    #[error("data directory {path} lacks column family {name:?} (not a complete Flotilla data directory)")]
    MissingColumnFamily { path: String, name: &'static str },
    #[error("data directory {path} belongs to node {found}, not node {expected}")]
    WrongNode { path: String, expected: u64, found: u64 },
    #[error("snapshot chunk {chunk} of group {group} is invalid: {detail}")]
    BadSnapshotChunk { group: GroupId, chunk: u64, detail: String },
    #[error("invalid write for group {group}: {detail}")]
    InvalidWrite { group: GroupId, detail: String },
}

impl StorageError {
    pub fn io(path: &std::path::Path, source: std::io::Error) -> StorageError {
        StorageError::Io { path: path.display().to_string(), source }
    }

    pub fn corrupt(group: GroupId, index: LogIndex, what: &'static str, detail: impl Into<String>) -> StorageError {
        StorageError::Corrupt { group, index, what, detail: detail.into() }
    }
}

impl From<StorageError> for crate::raft::StorageError {
    fn from(error: StorageError) -> Self {
        crate::raft::StorageError::Store(error.to_string())
    }
}

pub type Result<T> = std::result::Result<T, StorageError>;
