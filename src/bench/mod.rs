//! Benchmarks run by `flotilla bench …`: `storage` (group commit on this
//! machine's disk), `raft` (the core's cost per idle group, batching), `kv`
//! (a running cluster under load, through the client, or etcd through its
//! own API; also plain `flotilla bench --endpoints ...`) and `idle` (the
//! CPU of running processes).
//!
//! Owns: measuring one layer at a time on the local machine and reporting
//! figures a person records in BENCHMARKS.md. Must not: change what it
//! measures (it drives the public APIs the node runtime uses, the same way
//! the runtime does) or assert on timings (tests check only its counts).

pub mod idle;
pub mod kv;
pub mod kv_load;
pub mod kv_report;
pub mod kv_target;
pub mod raft;
pub mod storage;

use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("i/o on {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("invalid benchmark parameters: {0}")]
    Config(String),
}

impl BenchError {
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> BenchError + '_ {
        move |source| BenchError::Io { path: path.display().to_string(), source }
    }
}

pub type Result<T> = std::result::Result<T, BenchError>;
