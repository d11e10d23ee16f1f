//! Builds snapshots on a thread of their own, for the event loop.
//!
//! A build reads a whole group out of one RocksDB snapshot and writes it to
//! a file: for a large shard that is seconds of work, and on the loop's
//! thread it would stall every other group's turn (heartbeats included,
//! so followers would campaign). The loop hands a build off with
//! `submit` (never blocking) and gets the file back through `built`,
//! which it passes to `Node::on_snapshot_built` between turns.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::mpsc;

use crate::raft::{GroupId, NodeId};
use crate::storage::snapshot::{SnapshotDir, SnapshotFile};
use crate::storage::Engine;

/// Builds waiting for the thread. The loop asks for at most one build per
/// group at a time, so this bounds only a burst of many groups; a build
/// that does not fit is reported failed and its group asks again later.
const QUEUED_BUILDS: usize = 256;

pub(super) type Built = (GroupId, Result<SnapshotFile, String>);

pub(super) struct SnapshotBuilder {
    /// Jobs for the build thread. `None` once stopping: dropping the sender
    /// ends the thread's loop.
    jobs: Option<std_mpsc::SyncSender<GroupId>>,
    /// Finished builds, read by the event loop. Bounded like the jobs: the
    /// thread waits (off the loop) when the loop is behind.
    pub built: mpsc::Receiver<Built>,
    /// Set by `stop`: the thread starts no further build, even one already
    /// queued (a build of a large shard takes seconds).
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SnapshotBuilder {
    pub fn start(node: NodeId, engine: Arc<Engine>, snapshots: Arc<SnapshotDir>) -> std::io::Result<SnapshotBuilder> {
        let (jobs, queued) = std_mpsc::sync_channel::<GroupId>(QUEUED_BUILDS);
        let (finished, built) = mpsc::channel(QUEUED_BUILDS);
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = stopping.clone();
        let thread = std::thread::Builder::new().name(format!("flotilla-snap-{node}")).spawn(move || {
            while let Ok(group) = queued.recv() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                // A panic fails this build, not the thread: the group waiting
                // for it hears back and asks again later.
                let result = catch_unwind(AssertUnwindSafe(|| snapshots.build(&engine, group)))
                    .map_err(|_| "the snapshot build panicked".to_string())
                    .and_then(|built| built.map_err(|error| error.to_string()));
                if finished.blocking_send((group, result)).is_err() {
                    break; // the loop stopped
                }
            }
        })?;
        Ok(SnapshotBuilder { jobs: Some(jobs), built, stopping, thread: Some(thread) })
    }

    /// Queues a build of `group`; an error says why it cannot run now.
    pub fn submit(&self, group: GroupId) -> Result<(), String> {
        let Some(jobs) = &self.jobs else { return Err("the node is shutting down".into()) };
        jobs.try_send(group).map_err(|error| match error {
            std_mpsc::TrySendError::Full(_) => format!("{QUEUED_BUILDS} snapshot builds are already queued"),
            std_mpsc::TrySendError::Disconnected(_) => "the snapshot build thread has stopped".into(),
        })
    }

    /// Stops the thread after the build it is running, if any; queued
    /// builds are dropped. Every engine handle the thread held is gone
    /// when this returns, so the caller may close the engine.
    pub fn stop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.jobs = None;
        self.built.close();
        // Results already sent are dropped with the channel; drain them so
        // their files' handles go too.
        while self.built.try_recv().is_ok() {}
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the snapshot build thread panicked");
            }
        }
    }
}

impl Drop for SnapshotBuilder {
    fn drop(&mut self) {
        self.stop();
    }
}
