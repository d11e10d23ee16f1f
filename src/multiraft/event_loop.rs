//! The thin tokio shell around `Node`: one OS thread per node runs the
//! event loop on its own single-threaded runtime. It waits for input (a
//! client request, a peer batch, the tick), drains whatever else is already
//! queued, and runs one turn: send what may go early, write the batch (one
//! fsync at most), finish, send the rest.
//!
//! The loop blocks on its own storage write on purpose: the write is the
//! turn's commit point, and a second turn cannot start before the first is
//! durable without a pipeline this runtime does not have yet. Everything
//! else (gRPC, encoding, sockets) runs on the process's main runtime.

use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::api::RequestError;
use super::node::Node;
use super::snapshot_builder::SnapshotBuilder;
use super::turn::Outbox;
use super::Input;
use crate::raft::{GroupId, NodeId};
use crate::storage::{StorageBatch, StorageError};
use crate::transport::{Transport, TransportEvent};

/// Inputs drained per source per turn, so one busy source cannot starve
/// the others and a turn's batch stays bounded.
const MAX_DRAIN_PER_TURN: usize = 4096;

pub struct EventLoop {
    pub node: Node,
    /// Client requests (from `NodeHandle`s).
    pub inbox: mpsc::Receiver<Input>,
    /// Peer batches, peer up/down, snapshots (from the transport).
    pub events: mpsc::Receiver<TransportEvent>,
    pub transport: Transport,
    pub tick_interval: Duration,
}

impl EventLoop {
    /// Starts the loop on its own thread. It runs until `shutdown` turns
    /// true (or its sender is dropped), then answers every waiting request
    /// with `ShuttingDown` and returns the node (whose engine the caller
    /// may then close).
    pub fn spawn(self, shutdown: watch::Receiver<bool>) -> std::io::Result<JoinHandle<Node>> {
        let name = format!("flotilla-node-{}", self.node.id());
        std::thread::Builder::new().name(name).spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build();
            match runtime {
                Ok(runtime) => runtime.block_on(self.run(shutdown)),
                Err(error) => {
                    tracing::error!("cannot start the event loop's runtime: {error}");
                    let mut node = self.node;
                    node.shut_down();
                    node
                }
            }
        })
    }

    async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Node {
        let mut next_tick = tokio::time::Instant::now() + self.tick_interval;
        let engine = self.node.engine.clone();
        let mut builder = match SnapshotBuilder::start(self.node.id(), engine, self.node.snapshots.clone()) {
            Ok(builder) => builder,
            Err(error) => {
                tracing::error!(node = %self.node.id(), "cannot start the snapshot build thread: {error}");
                self.node.shut_down();
                return self.node;
            }
        };
        loop {
            if *shutdown.borrow() {
                break;
            }
            if !self.node.has_work() {
                tokio::select! {
                    biased;
                    changed = shutdown.changed() => {
                        if changed.is_err() { break }
                        continue;
                    }
                    _ = tokio::time::sleep_until(next_tick) => {}
                    Some(event) = self.events.recv() => self.on_event(event),
                    Some(input) = self.inbox.recv() => self.on_input(input, Instant::now()),
                    Some((group, built)) = builder.built.recv() => self.node.on_snapshot_built(group, built),
                }
            }
            // The clock runs even when every turn has work (a busy
            // single-voter group always has): deadlines, purges and
            // quiescence depend on it. Missed ticks are skipped, not
            // replayed in a burst.
            let now = tokio::time::Instant::now();
            if now >= next_tick {
                self.node.on_tick(now.into_std());
                next_tick = (next_tick + self.tick_interval).max(now);
            }
            self.drain(&mut builder);
            if let Err(error) = self.turn(&builder) {
                // What was staged may or may not be on disk, exactly as
                // after a crash; a restart recovers, carrying on would not.
                tracing::error!(node = %self.node.id(), "storage write failed, stopping the node: {error}");
                break;
            }
        }
        // Requests still queued were never proposed: "not done", retryable.
        self.inbox.close();
        // A status query dropped here reads as "shutting down" to its caller.
        while let Ok(input) = self.inbox.try_recv() {
            if let Input::Request(request) = input {
                let _ = request.reply.send(Err(RequestError::ShuttingDown));
            }
        }
        builder.stop();
        self.node.shut_down();
        self.node
    }

    fn drain(&mut self, builder: &mut SnapshotBuilder) {
        let now = Instant::now();
        while let Ok((group, built)) = builder.built.try_recv() {
            self.node.on_snapshot_built(group, built);
        }
        for _ in 0..MAX_DRAIN_PER_TURN {
            match self.events.try_recv() {
                Ok(event) => self.on_event(event),
                Err(_) => break,
            }
        }
        for _ in 0..MAX_DRAIN_PER_TURN {
            match self.inbox.try_recv() {
                Ok(input) => self.on_input(input, now),
                Err(_) => break,
            }
        }
    }

    fn on_input(&mut self, input: Input, now: Instant) {
        match input {
            Input::Request(request) => self.node.on_request(request, now),
            // Answered at once from memory: the loop never waits on the caller.
            Input::Status(reply) => {
                let _ = reply.send(self.node.group_statuses());
            }
        }
    }

    fn on_event(&mut self, event: TransportEvent) {
        match event {
            TransportEvent::Batch { from, messages } => self.node.on_peer_messages(from, messages),
            TransportEvent::PeerUp(node) => self.node.on_peer_up(node),
            TransportEvent::PeerDown(node) => self.node.on_peer_down(node),
            TransportEvent::SnapshotReceived { from, group, message, file, done } => {
                self.node.stats.snapshots_received.fetch_add(1, Ordering::Relaxed);
                self.node.on_snapshot_received(from, group, message, file, done)
            }
            TransportEvent::SnapshotSent { to, group, delivered } => self.node.on_snapshot_sent(to, group, delivered),
        }
    }

    fn turn(&mut self, builder: &SnapshotBuilder) -> Result<(), crate::storage::StorageError> {
        let mut turn = self.node.prepare_turn();
        let stats = self.node.stats.clone();
        stats.turns.fetch_add(1, Ordering::Relaxed);
        if turn.batch.needs_sync() {
            stats.synced_turns.fetch_add(1, Ordering::Relaxed);
        }
        // A failed send is reported to its groups only after `advance`:
        // no input may reach a group between its `ready` and `advance`.
        let early_failures = self.send(std::mem::take(&mut turn.early));
        stats.snapshots_sent.fetch_add(turn.snapshots.len() as u64, Ordering::Relaxed);
        for (to, group, message, file) in std::mem::take(&mut turn.snapshots) {
            self.transport.send_snapshot(to, group, message, file);
        }
        debug_assert!(
            !turn.must_sync || turn.batch.needs_sync(),
            "a Ready that must sync staged a batch that does not"
        );
        let batch = std::mem::take(&mut turn.batch);
        self.write(batch, turn.started, turn.applied_entries)?;
        let builds = std::mem::take(&mut turn.snapshot_builds);
        let late = self.node.finish_turn(turn);
        // After `advance`: a build that cannot start is reported to its
        // group at once.
        for group in builds {
            if let Err(error) = builder.submit(group) {
                self.node.on_snapshot_built(group, Err(error));
            }
        }
        for (to, groups) in early_failures {
            self.node.on_send_failed(to, &groups);
        }
        for (to, groups) in self.send(late) {
            self.node.on_send_failed(to, &groups);
        }
        Ok(())
    }

    /// Writes the turn's batch (its commit point) and records it: latency,
    /// entries and bytes when it synced, and commit-to-apply for the
    /// entries it applies (committed as of `started`, applied once written).
    fn write(&self, batch: StorageBatch, started: Instant, applied_entries: usize) -> Result<(), StorageError> {
        let engine = &self.node.engine;
        let (syncs, entries, bytes) = (engine.sync_count(), batch.entry_count(), batch.size_bytes());
        let writing = Instant::now();
        engine.commit(batch)?;
        let written = Instant::now();
        let recorder = &self.node.recorder;
        // The engine counts the writes it synced (an apply-only batch, or
        // a test engine without fsync, does not).
        if engine.sync_count() != syncs {
            recorder.synced(written - writing, entries, bytes);
        }
        recorder.entries_applied(applied_entries, written.saturating_duration_since(started));
        recorder.flush();
        Ok(())
    }

    /// Queues each peer's batch; returns the peers (and their groups) whose
    /// batch could not be queued.
    fn send(&mut self, outbox: Outbox) -> Vec<(NodeId, Vec<GroupId>)> {
        let mut failed = Vec::new();
        for (to, messages) in outbox {
            let groups: Vec<GroupId> = messages.iter().map(|(group, _)| *group).collect();
            self.node.stats.peer_batches_sent.fetch_add(1, Ordering::Relaxed);
            if let Err(error) = self.transport.send(to, messages) {
                tracing::debug!(node = %self.node.id(), peer = %to, "send failed: {error}");
                failed.push((to, groups));
            }
        }
        failed
    }
}
