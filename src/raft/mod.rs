//! The Raft consensus protocol for one group, as a pure, synchronous state
//! machine.
//!
//! **Owns:** elections (with pre-vote and check-quorum), log replication
//! (batching, pipelining, a bounded in-flight window, probe / replicate /
//! snapshot progress, fast conflict backtracking), commitment, learners,
//! joint-consensus membership changes, leadership transfer, ReadIndex and
//! lease reads, snapshot install and the log-compaction hooks.
//!
//! **Must not:** do I/O, spawn tasks, read a clock or draw random numbers.
//! No `tokio`, `tonic`, `rocksdb`, `std::time`, `std::fs`, `std::net` or
//! `rand` here (`tests/raft_purity.rs` checks). Time is `tick()`; randomness
//! is a seed in [`Config`]; storage is read through [`LogStore`] and written
//! by the caller. This is what lets one node host thousands of groups as
//! plain structs and lets the simulator replay any run from its seed.
//!
//! # Driving a group: the ordering contract
//!
//! Inputs are [`RawNode::tick`], [`RawNode::step`], [`RawNode::propose`],
//! [`RawNode::propose_batch`], [`RawNode::propose_conf_change`],
//! [`RawNode::read_index`], [`RawNode::transfer_leader`],
//! [`RawNode::quiesce`] and [`RawNode::forget_leader`]. After any of them,
//! if [`RawNode::has_ready`], the caller takes ONE [`Ready`] and handles it
//! in this order:
//!
//! 1. Send `ready.messages` at once if desired: they promise nothing about
//!    this node's durable state ([`MessageKind::may_send_before_persist`]):
//!    a leader's appends, heartbeats and snapshots, which may go out before
//!    the leader's own write (thesis §10.2.1; the leader counts itself
//!    toward a commit quorum only after step 6), read-index traffic,
//!    pre-votes and heartbeat answers.
//! 2. Persist, atomically and durably (fsync when [`Ready::must_sync`]):
//!    `ready.snapshot` (install it: log reset to the snapshot, state machine
//!    replaced), then `ready.entries` (appended, overwriting any conflicting
//!    suffix), then `ready.hard_state`. A hard state whose only change is
//!    `commit` may be left unwritten ([`HardState::durable_part_differs`]):
//!    a restart then passes an older commit, which the core lifts to
//!    [`Config::applied`].
//! 3. Only then send `ready.persisted_messages`: votes and acknowledgements
//!    promise state that must already be on disk.
//! 4. Apply `ready.committed_entries` in order. They are committed and, by
//!    step 2, durable here. For a conf-change entry call
//!    [`RawNode::apply_conf_change`] and persist the returned [`ConfState`]
//!    with the applied index. If it returns an error, the change is invalid
//!    in the configuration it meets (every replica meets the same one and
//!    fails the same way): apply the entry as a no-op, keep and persist the
//!    current configuration, and go on. Persist the applied index in the
//!    same batch as the state machine's data, so a crash never applies an
//!    entry twice.
//! 5. Serve `ready.read_states`: a read with that context may be answered
//!    once the applied index reaches the read state's index. Fail the reads
//!    in `ready.dropped_reads` with a retryable error: leadership changed
//!    (or the leader was forgotten) and they will never be answered.
//! 6. Call [`RawNode::advance`] exactly once. No other input may be fed
//!    between `ready()` and `advance()`. Advancing can create new work (a
//!    single voter commits there; a leader leaves an auto-leave joint
//!    configuration): check [`RawNode::has_ready`] again afterwards.
//!
//! The rest of the contract:
//!
//! - **Read contexts** must be unique among this node's reads in flight;
//!   reads that arrive between two `ready()` calls share one heartbeat round,
//!   and a context names the read in `read_states` and `dropped_reads`.
//! - **Batching.** Proposals between two `ready()` calls leave as one append
//!   per follower (more only past `max_size_per_message_bytes`), so feed a
//!   turn's proposals to a group before taking its Ready. A new commit index
//!   rides on the next append or heartbeat, or on one empty append per
//!   follower when the next heartbeat is a whole interval away.
//! - [`RawNode::report_unreachable`]: the transport could not deliver to a
//!   peer (a broken stream). The leader stops streaming to it and probes.
//! - [`RawNode::report_snapshot`]: call it exactly once for every
//!   `InstallSnapshot` message taken from a Ready, with `delivered = false`
//!   when the transfer failed, was dropped or timed out. The leader sends the
//!   follower nothing else while its snapshot is out, so a lost snapshot
//!   never reported leaves that follower behind for good.
//! - **Quiescence** (`quiesce.rs`): call [`RawNode::quiesce`] on an idle
//!   leader; while [`RawNode::is_quiesced`], do not tick the group. Any
//!   input wakes it. When the node of a follower's leader becomes
//!   unreachable, call [`RawNode::forget_leader`] (staggered across groups).
//! - **Election jitter** comes from [`Config::random_seed`]; use
//!   [`Config::for_group`] so one node's groups do not time out together.
//! - **Storage failures.** A [`LogStore`] read that fails with
//!   [`StorageError::Store`] fails the group: every later input returns
//!   [`RaftError::Storage`], [`RawNode::failure`] names the error, and
//!   there is no Ready any more. Nothing the group did in the failing input
//!   is handed out. The process does not panic; the caller reports the
//!   failure and stops serving the group.
//!
//! Compaction is the caller's decision: once entries up to some index
//! `<= applied` are covered by a snapshot the store holds, it may discard
//! them; the leader then sends that snapshot to followers that need them.
//! Build that snapshot from current state: a member refuses a snapshot whose
//! configuration does not include it.
//!
//! # Layout
//!
//! - `types`: ids, entries, messages, hard/conf state, snapshots.
//! - `log_store`: the [`LogStore`] trait and [`MemoryLogStore`].
//! - `log`: the log as the core sees it (durable part + unstable tail).
//! - `progress`, `tracker`, `quorum`: per-follower progress, membership,
//!   majority and joint-majority arithmetic.
//! - `read_only`: ReadIndex bookkeeping.
//! - `quiesce`: stopping and restarting an idle group's clock.
//! - `raft`: state, role transitions, the clock and the common step checks.
//! - `step`: `step_leader`, `step_candidate`, `step_follower`, replication.
//! - `node`: [`RawNode`], [`Ready`], `advance`, invariants.

mod error;
mod log;
mod log_store;
mod node;
mod progress;
mod quiesce;
mod quorum;
#[allow(clippy::module_inception)]
mod raft;
mod read_only;
mod step;
mod tracker;
mod types;

pub use error::{RaftError, Result, StorageError};
pub use log_store::{limit_size, LogStore, MemoryLogStore};
pub use node::{RawNode, Ready, SoftState, Status};
pub use progress::ProgressState;
pub use quorum::VoteResult;
pub use raft::{Config, ReadMode, Role};
pub use tracker::Configuration;
pub use types::{
    ConfChange, ConfChangeKind, ConfChangeSingle, ConfChangeTransition, ConfState, Entry, EntryPayload, GroupId,
    HardState, LogIndex, Message, MessageKind, NodeId, ProposalId, ReadState, Snapshot, SnapshotMetadata, Term,
};
