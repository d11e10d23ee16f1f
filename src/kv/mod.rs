//! The replicated state machine of one group: the commands a client can
//! propose, how committed commands change the group's `data` range, and
//! reads of it.
//!
//! Owns: the command encoding (versioned by a tag byte), apply (data and
//! applied index in one batch, so a crash never applies an entry twice or
//! skips one; staged all or nothing, so a failed apply leaves the shared
//! batch as it was), and point/range reads.
//! Must not: talk to the network, drive Raft, or fsync on its own; it stages
//! writes into the runtime's group-commit batch.

mod apply;
mod command;

pub use apply::{apply_entries, get, scan, scan_page, Applied, CommandResult, ScanPage};
pub use command::{decode_command, encode_command, Command, MAX_KEY_BYTES, MAX_VALUE_BYTES};

use crate::raft::{GroupId, LogIndex};
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A committed entry's command does not decode. It is applied as a
    /// failed command on every replica alike, so the group keeps going.
    #[error("invalid command in group {group} at index {index}: {detail}")]
    InvalidCommand { group: GroupId, index: LogIndex, detail: String },
    /// A request rejected before it was proposed.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}
