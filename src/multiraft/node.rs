//! `Node`: every group this node hosts, as one synchronous state machine.
//!
//! Inputs are methods (`on_request`, `on_peer_messages`, `on_tick`,
//! `on_peer_down`, ...) that only step groups and mark them touched; the
//! work is done once per turn by `prepare_turn` / `finish_turn` (turn.rs),
//! so everything that reaches a group in one turn shares one Ready, one
//! storage batch and one message batch per peer. The event loop (the tokio
//! shell in event_loop.rs) owns the clock, the sockets and the disk writes.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;

use super::api::{Operation, Outcome, Request, RequestError, ShardId};
use super::group::{Group, PendingRead, Waiter};
use super::handle::{ClusterView, NodeStats};
use crate::kv;
use crate::raft::{ConfState, Config, GroupId, Message, NodeId, RaftError, RawNode, ReadMode, Role};
use crate::storage::snapshot::{SnapshotDir, SnapshotFile};
use crate::storage::{Engine, GroupStorage, StorageBatch, StorageError};

/// Tunables of the runtime (the clock's period lives in the shell).
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    pub election_timeout_ticks: u32,
    pub heartbeat_interval_ticks: u32,
    /// A leader with nothing pending for this many ticks quiesces its group.
    pub quiesce_after_idle_ticks: u32,
    /// At most this many quiesced groups are woken per tick after their
    /// leader's node went down (TiKV #19070, CockroachDB #35063: waking them
    /// all at once starves the survivors).
    pub max_wakeups_per_tick: usize,
    /// Purge a group's log once it holds this many applied entries.
    pub compact_log_entries: u64,
    /// Entries kept below the purge point for slightly lagging followers.
    pub compact_keep_entries: u64,
    /// How often the purge sweep runs.
    pub compact_every_ticks: u64,
    /// All groups' log tail caches together stay under this; past it the
    /// largest caches are dropped (reads then go to RocksDB).
    pub cache_budget_bytes: u64,
}

impl Default for RuntimeConfig {
    fn default() -> RuntimeConfig {
        RuntimeConfig {
            election_timeout_ticks: 10,
            heartbeat_interval_ticks: 2,
            quiesce_after_idle_ticks: 6,
            max_wakeups_per_tick: 200,
            compact_log_entries: 2_000,
            compact_keep_entries: 200,
            compact_every_ticks: 64,
            cache_budget_bytes: 64 << 20,
        }
    }
}

/// Why a quiesced group is queued to wake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Wake {
    /// A follower whose leader's node went down: forget that leader.
    LeaderDown,
    /// A leader that must act: a follower returned behind, or it lost its
    /// quorum.
    Leader,
}

/// A snapshot received from a peer, waiting for its group's Ready to
/// install it; `done` answers the sender's RPC.
pub(super) struct IncomingSnapshot {
    pub file: SnapshotFile,
    pub done: oneshot::Sender<Result<(), String>>,
}

pub struct Node {
    pub(super) id: NodeId,
    pub(super) stats: Arc<NodeStats>,
    pub(super) engine: Arc<Engine>,
    pub(super) snapshots: Arc<SnapshotDir>,
    pub(super) view: Arc<ClusterView>,
    pub(super) config: RuntimeConfig,
    /// Ordered, so a turn visits groups in the same order every run.
    pub(super) groups: BTreeMap<GroupId, Group>,
    /// Groups whose clock runs (not quiesced). Only these are ticked: a
    /// sleeping group costs nothing per tick.
    pub(super) awake: BTreeSet<GroupId>,
    /// Groups that got an input since the last turn (or have work left).
    pub(super) touched: BTreeSet<GroupId>,
    /// Groups that fell asleep since the last log sweep (which otherwise
    /// visits only awake groups).
    pub(super) maintenance_due: BTreeSet<GroupId>,
    /// New groups this node is the preferred leader of: each campaigns once
    /// a majority of its replicas' nodes is reachable (a few per tick).
    pub(super) to_campaign: VecDeque<GroupId>,
    /// Groups with client requests waiting, swept for deadlines each tick.
    pub(super) waiting: BTreeSet<GroupId>,
    /// Peer nodes whose stream is up (node-level liveness for quiescence).
    pub(super) peers_up: BTreeSet<NodeId>,
    /// Quiesced followers whose leader's node went down, woken a few per tick.
    pub(super) wake_queue: VecDeque<(GroupId, Wake)>,
    pub(super) incoming_snapshots: BTreeMap<GroupId, IncomingSnapshot>,
    /// Snapshot builds the shell is running: each group's waiting
    /// followers and their InstallSnapshot messages.
    pub(super) building_snapshots: BTreeMap<GroupId, Vec<(NodeId, Message)>>,
    /// Built snapshots to stream with the next turn.
    pub(super) built_snapshots: Vec<(NodeId, GroupId, Message, SnapshotFile)>,
    /// Writes staged outside a turn (log purges), committed with the next
    /// turn's batch.
    pub(super) staged: Option<StorageBatch>,
    /// The groups in `wake_queue`, so a flapping peer does not queue a
    /// group twice.
    pub(super) wake_queued: BTreeSet<GroupId>,
    /// Read contexts are unique per node (the core's contract).
    pub(super) next_read_context: u64,
    pub(super) ticks: u64,
    /// This thread's histograms (`stats.metrics.runtime`), flushed once
    /// per turn by the shell.
    pub(super) recorder: crate::metrics::LoopRecorder,
}

/// The Raft group of a shard (group 0 is kept for the meta group).
pub fn group_of(shard: ShardId) -> GroupId {
    GroupId(u64::from(shard.0) + 1)
}

impl Node {
    /// Opens (or, on first start, bootstraps) every group this node hosts
    /// according to `view`. Bootstrapping writes all new groups in one
    /// synced batch.
    pub fn open(
        engine: Arc<Engine>,
        snapshots: Arc<SnapshotDir>,
        view: Arc<ClusterView>,
        stats: Arc<NodeStats>,
        config: RuntimeConfig,
    ) -> Result<Node, StorageError> {
        let id = view.node_id;
        let mut groups = BTreeMap::new();
        // A new cluster's groups are led by their preferred replica (spread
        // evenly by placement) instead of whichever node starts first.
        let mut to_campaign = Vec::new();
        let hosted = view.replicas.iter().enumerate().filter(|(_, replicas)| replicas.contains(&id));
        snapshots.resume_installs(&engine, hosted.map(|(shard, _)| group_of(ShardId(shard as u32))))?;
        let mut batch = StorageBatch::new();
        for (shard, replicas) in view.replicas.iter().enumerate() {
            if !replicas.contains(&id) {
                continue;
            }
            let shard = ShardId(shard as u32);
            let group = group_of(shard);
            let storage = match GroupStorage::open(engine.clone(), group)? {
                Some(storage) => storage,
                None => {
                    let voters = ConfState::with_voters(replicas.iter().map(|n| n.0));
                    let ids: Vec<u64> = replicas.iter().map(|n| n.0).collect();
                    if flotilla_placement::preferred_leader(&ids, shard.0) == id.0 {
                        to_campaign.push(group);
                    }
                    GroupStorage::bootstrap(engine.clone(), group, voters, &mut batch)?
                }
            };
            let raw = new_replica(id, group, storage, &config)?;
            groups.insert(group, Group::new(group, shard, raw));
        }
        engine.commit(batch)?;
        let awake = groups.keys().copied().collect();
        stats.groups.store(groups.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let recorder = stats.metrics.runtime.recorder();
        Ok(Node {
            recorder,
            id,
            stats,
            engine,
            snapshots,
            view,
            config,
            groups,
            awake,
            touched: BTreeSet::new(),
            waiting: BTreeSet::new(),
            maintenance_due: BTreeSet::new(),
            to_campaign: to_campaign.into(),
            peers_up: BTreeSet::new(),
            wake_queue: VecDeque::new(),
            incoming_snapshots: BTreeMap::new(),
            building_snapshots: BTreeMap::new(),
            built_snapshots: Vec::new(),
            next_read_context: 1,
            staged: None,
            wake_queued: BTreeSet::new(),
            ticks: 0,
        })
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// Groups whose clock is stopped.
    pub fn quiesced_count(&self) -> usize {
        self.groups.len() - self.awake.len()
    }

    /// Groups this node leads, as of their last Ready.
    pub fn leader_count(&self) -> usize {
        self.groups.values().filter(|g| g.role == Role::Leader).count()
    }

    /// Whether any group has work for another turn right away.
    pub fn has_work(&self) -> bool {
        !self.touched.is_empty() || self.staged.is_some() || !self.built_snapshots.is_empty()
    }

    /// A client request: checked and queued on its group, which proposes
    /// (or asks for a read index) once, at the end of the turn.
    pub fn on_request(&mut self, request: Request, now: Instant) {
        let Request { shard, operation, deadline, reply } = request;
        let waiter = Waiter { reply, deadline };
        if deadline <= now {
            return waiter.answer(Err(RequestError::DeadlineExceeded));
        }
        let Some(group) = self.groups.get_mut(&group_of(shard)) else {
            return waiter.answer(Err(self.not_leader(shard, None)));
        };
        if let Some(detail) = &group.failure {
            let error = RequestError::Failed { node: self.id, shard, detail: detail.clone() };
            return waiter.answer(Err(error));
        }
        // As of the last Ready: a leadership change this turn is caught when
        // the turn proposes (the core refuses) or reads (it drops the read).
        let leader = group.leader;
        match operation {
            Operation::Write(command) => {
                if let Err(error) = command.validate() {
                    return waiter.answer(Err(RequestError::InvalidArgument(error.to_string())));
                }
                if group.role != Role::Leader {
                    let error = self.not_leader(shard, leader);
                    return waiter.answer(Err(error));
                }
                group.new_writes.push((command, waiter));
            }
            Operation::Get { linearizable: false, .. } | Operation::Scan { linearizable: false, .. } => {
                let read = PendingRead { operation, waiter };
                let result = read_local(&self.engine, self.id, group, &read.operation);
                return read.waiter.answer(result);
            }
            Operation::Get { .. } | Operation::Scan { .. } => {
                if leader.is_none() {
                    return waiter.answer(Err(RequestError::NoLeader { shard }));
                }
                group.new_reads.push(PendingRead { operation, waiter });
            }
        }
        group.idle_ticks = 0;
        let id = group.id;
        self.touched.insert(id);
        self.waiting.insert(id);
    }

    fn not_leader(&self, shard: ShardId, leader: Option<NodeId>) -> RequestError {
        match leader {
            None if self.groups.contains_key(&group_of(shard)) => RequestError::NoLeader { shard },
            leader => RequestError::NotLeader {
                node: self.id,
                shard,
                leader: leader.and_then(|l| Some((l, self.view.addresses.get(&l)?.clone()))),
            },
        }
    }

    /// Messages from a peer node, for any number of groups.
    pub fn on_peer_messages(&mut self, from: NodeId, messages: Vec<(GroupId, Message)>) {
        for (group_id, message) in messages {
            let Some(group) = self.groups.get_mut(&group_id) else {
                tracing::debug!(node = %self.id, peer = %from, group = %group_id, "message for a group not hosted here");
                continue;
            };
            if group.failure.is_some() {
                continue;
            }
            if message.from != from {
                tracing::warn!(peer = %from, group = %group_id, "message claims to be from node {}", message.from);
                continue;
            }
            match group.raw.step(message) {
                Ok(()) => {}
                Err(RaftError::Storage(error)) => {
                    self.fail_group(group_id, format!("storage error: {error}"));
                    continue;
                }
                Err(error) => tracing::debug!(group = %group_id, "message refused: {error}"),
            }
            self.after_input(group_id);
        }
    }

    /// A peer's snapshot arrived whole; its group installs it when its
    /// Ready asks for it (this turn, if the core accepts the message).
    pub fn on_snapshot_received(
        &mut self,
        from: NodeId,
        group: GroupId,
        message: Message,
        file: SnapshotFile,
        done: oneshot::Sender<Result<(), String>>,
    ) {
        if !self.groups.contains_key(&group) {
            let _ = done.send(Err(format!("node {} hosts no replica of group {group}", self.id)));
            return;
        }
        if let Some(previous) = self.incoming_snapshots.insert(group, IncomingSnapshot { file, done }) {
            let _ = previous.done.send(Err("superseded by a newer snapshot".into()));
        }
        self.on_peer_messages(from, vec![(group, message)]);
    }

    /// A snapshot the shell built for `group` (see `Turn::snapshot_builds`):
    /// it goes to every follower that waited for it with the next turn.
    pub fn on_snapshot_built(&mut self, group: GroupId, built: Result<SnapshotFile, String>) {
        let waiting = self.building_snapshots.remove(&group).unwrap_or_default();
        match built {
            Ok(file) => {
                for (to, mut message) in waiting {
                    // The receiver installs the file: the message must
                    // describe exactly what the file holds.
                    if let Some(snapshot) = message.snapshot.as_mut() {
                        snapshot.metadata = file.metadata.clone();
                    }
                    self.built_snapshots.push((to, group, message, file.clone()));
                }
            }
            Err(error) => {
                let Some(g) = self.groups.get_mut(&group) else { return };
                for (to, _) in waiting {
                    tracing::warn!(%group, "cannot build a snapshot for node {to}: {error}");
                    g.raw.report_snapshot(to, false);
                }
                self.after_input(group);
            }
        }
    }

    /// The outcome of a snapshot this node sent.
    pub fn on_snapshot_sent(&mut self, to: NodeId, group: GroupId, delivered: bool) {
        if let Some(g) = self.groups.get_mut(&group) {
            g.raw.report_snapshot(to, delivered);
            self.after_input(group);
        }
    }

    /// A batch for `to` could not be queued (its stream is down or its
    /// queue is full): its groups stop pipelining to it and probe instead.
    pub fn on_send_failed(&mut self, to: NodeId, groups: &[GroupId]) {
        for &id in groups {
            if let Some(group) = self.groups.get_mut(&id) {
                group.raw.report_unreachable(to);
                self.after_input(id);
            }
        }
    }

    /// A peer node's stream is up again. A quiesced leader that went to
    /// sleep while that node was down did not wait for it to catch up:
    /// such groups are woken (a few per tick) so the leader brings the
    /// follower up to date, and a stale leader there learns the new term.
    pub fn on_peer_up(&mut self, node: NodeId) {
        self.peers_up.insert(node);
        let behind: Vec<GroupId> = self
            .groups
            .iter()
            .filter(|(_, g)| g.role == Role::Leader && g.raw.is_quiesced())
            .filter(|(_, g)| {
                let status = g.raw.status();
                status.progress.iter().any(|p| p.0 == node && p.1 < status.last_index)
            })
            .map(|(id, _)| *id)
            .collect();
        self.queue_wakes(behind.into_iter().map(|id| (id, Wake::Leader)).collect());
        // Sleeping groups this node leads in the returning node's place are
        // visited by the next log sweep, which hands them back.
        let preferred: Vec<GroupId> = self
            .groups
            .keys()
            .copied()
            .filter(|id| !self.awake.contains(id) && self.preferred_elsewhere(*id) == Some(node))
            .collect();
        self.maintenance_due.extend(preferred);
    }

    /// A peer node's stream broke. Its followers' groups stop streaming to
    /// it. Quiesced groups it led are queued to wake a few per tick, since
    /// nothing else will wake them (their clocks are stopped); so are
    /// quiesced groups this node leads that no longer reach a quorum, so
    /// that check-quorum steps them down instead of leaving a leader that
    /// clients keep trying.
    pub fn on_peer_down(&mut self, node: NodeId) {
        self.peers_up.remove(&node);
        let mut queued = Vec::new();
        for (&id, group) in self.groups.iter_mut() {
            let quiesced = group.raw.is_quiesced();
            if group.role == Role::Leader && !quiesced {
                group.raw.report_unreachable(node);
            } else if group.role == Role::Leader {
                let voters = group.raw.status().conf_state.voters;
                let live = voters.iter().filter(|v| **v == self.id || self.peers_up.contains(v)).count();
                if voters.contains(&node) && live <= voters.len() / 2 {
                    queued.push((id, Wake::Leader));
                }
            } else if group.leader == Some(node) && quiesced {
                queued.push((id, Wake::LeaderDown));
            }
        }
        tracing::info!(node = %self.id, peer = %node, queued = queued.len(), "peer down");
        self.queue_wakes(queued);
    }

    fn queue_wakes(&mut self, wakes: Vec<(GroupId, Wake)>) {
        for (id, wake) in wakes {
            if self.wake_queued.insert(id) {
                self.wake_queue.push_back((id, wake));
            }
        }
    }

    /// One clock tick: ticks the awake groups, wakes a few queued ones,
    /// quiesces idle leaders and expires requests past their deadline.
    pub fn on_tick(&mut self, now: Instant) {
        self.ticks += 1;
        self.stats.ticks.store(self.ticks, std::sync::atomic::Ordering::Relaxed);
        for _ in 0..self.config.max_wakeups_per_tick {
            let Some((id, wake)) = self.wake_queue.pop_front() else { break };
            self.wake_queued.remove(&id);
            let Some(group) = self.groups.get_mut(&id) else { continue };
            if !group.raw.is_quiesced() {
                continue; // Something else woke it meanwhile.
            }
            if wake == Wake::LeaderDown && group.leader.is_some_and(|l| self.peers_up.contains(&l)) {
                continue; // Its leader's node came back before its turn.
            }
            match wake {
                Wake::LeaderDown => group.raw.forget_leader(),
                // Any tick wakes a group; the leader then heartbeats.
                Wake::Leader => group.raw.tick(),
            }
            self.stats.wakeups.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.after_input(id);
        }
        self.campaign_preferred();
        let awake: Vec<GroupId> = self.awake.iter().copied().collect();
        for id in awake {
            self.tick_group(id);
        }
        let waiting: Vec<GroupId> = self.waiting.iter().copied().collect();
        // Every group with a proposal is in `waiting`, so this sweep (paid
        // anyway) counts them all.
        let mut pending_proposals = 0;
        for id in waiting {
            let Some(group) = self.groups.get_mut(&id) else { continue };
            group.expire(now);
            pending_proposals += group.proposals.values().map(Vec::len).sum::<usize>();
            if !group.has_waiters() {
                self.waiting.remove(&id);
            }
        }
        self.stats.metrics.runtime.pending_proposals.set(pending_proposals as i64);
        if self.ticks % self.config.compact_every_ticks.max(1) == 0 {
            self.maintain_logs();
        }
    }

    /// Starts the elections of new groups this node should lead, once
    /// their majority is reachable; a group that found a leader meanwhile
    /// is left alone.
    fn campaign_preferred(&mut self) {
        // Not rate-limited like wake-ups: this happens once, when a new
        // cluster starts, and a campaign is one small message per peer.
        loop {
            let Some(&id) = self.to_campaign.front() else { return };
            let Some(group) = self.groups.get(&id) else {
                self.to_campaign.pop_front();
                continue;
            };
            let replicas = &self.view.replicas[group.shard.0 as usize];
            let live = replicas.iter().filter(|n| **n == self.id || self.peers_up.contains(n)).count();
            if live <= replicas.len() / 2 {
                return; // Not yet: try again next tick.
            }
            self.to_campaign.pop_front();
            let group = self.groups.get_mut(&id).expect("checked above");
            if group.leader.is_none() && group.failure.is_none() {
                group.raw.campaign();
                self.after_input(id);
            }
        }
    }

    fn tick_group(&mut self, id: GroupId) {
        let Some(group) = self.groups.get_mut(&id) else { return };
        group.raw.tick();
        group.idle_ticks = group.idle_ticks.saturating_add(1);
        let (peers_up, me) = (&self.peers_up, self.id);
        let is_live = |n: NodeId| n == me || peers_up.contains(&n);
        if group.role == Role::Leader
            && group.idle_ticks >= self.config.quiesce_after_idle_ticks
            && !group.has_waiters()
            && group.raw.quiesce(is_live)
        {
            tracing::trace!(group = %id, "quiesced");
        }
        self.after_input(id);
    }

    /// Keeps the awake and touched sets true after any input to a group.
    pub(super) fn after_input(&mut self, id: GroupId) {
        let Some(group) = self.groups.get(&id) else { return };
        if group.raw.is_quiesced() {
            if self.awake.remove(&id) {
                // Gone to sleep: the next sweep trims it one last time.
                self.maintenance_due.insert(id);
            }
        } else {
            self.awake.insert(id);
        }
        if group.raw.has_ready() {
            self.touched.insert(id);
        }
    }

    /// A storage error: the group stops serving, its clients are told.
    pub(super) fn fail_group(&mut self, id: GroupId, detail: String) {
        let Some(group) = self.groups.get_mut(&id) else { return };
        tracing::error!(node = %self.id, group = %id, "group failed: {detail}");
        let error = RequestError::Failed { node: self.id, shard: group.shard, detail: detail.clone() };
        group.fail_all(error);
        group.failure = Some(detail);
        // A failed group serves nothing, so it leads nothing here any more
        // (another node's replica takes over).
        if group.role == Role::Leader {
            group.role = Role::Follower;
            self.stats.groups_led.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.awake.remove(&id);
        self.touched.remove(&id);
    }

    /// Answers every waiting request: the node is stopping.
    pub fn shut_down(&mut self) {
        for group in self.groups.values_mut() {
            group.fail_all(RequestError::ShuttingDown);
        }
        for (_, incoming) in std::mem::take(&mut self.incoming_snapshots) {
            let _ = incoming.done.send(Err("the node is shutting down".into()));
        }
        self.building_snapshots.clear();
        self.built_snapshots.clear();
    }

    /// Every group's Raft status, as the core sees it now (not as of the
    /// last Ready): for the simulator's checks and the admin service.
    pub fn group_statuses(&self) -> Vec<(GroupId, crate::raft::Status)> {
        self.groups.iter().map(|(id, group)| (*id, group.raw.status())).collect()
    }

    /// The engine this node writes to (tests and the simulator read it).
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Checks the invariants the tests rely on, for every group.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (id, group) in &self.groups {
            group.raw.check_invariants().map_err(|e| format!("group {id}: {e}"))?;
            group.raw.store().check_invariants().map_err(|e| format!("group {id}: {e}"))?;
            if group.raw.is_quiesced() == self.awake.contains(id) && group.failure.is_none() {
                let (quiesced, awake) = (group.raw.is_quiesced(), self.awake.contains(id));
                return Err(format!("group {id}: quiesced is {quiesced} but awake is {awake}"));
            }
        }
        Ok(())
    }
}

/// A replica's core, configured from the runtime's tunables.
fn new_replica(
    id: NodeId,
    group: GroupId,
    storage: GroupStorage,
    runtime: &RuntimeConfig,
) -> Result<RawNode<GroupStorage>, StorageError> {
    let mut config = Config::for_group(id, group);
    config.election_timeout_ticks = runtime.election_timeout_ticks;
    config.heartbeat_interval_ticks = runtime.heartbeat_interval_ticks;
    config.read_mode = ReadMode::Safe;
    config.applied = storage.applied().index;
    let (hard_state, conf_state) = (*storage.hard_state(), storage.conf_state().clone());
    RawNode::new(config, storage, hard_state, &conf_state).map_err(|error| StorageError::InvalidWrite {
        group,
        detail: format!("cannot start the replica from what is stored: {error}"),
    })
}

/// Serves a read from this node's replica as it is now.
pub(super) fn read_local(
    engine: &Engine,
    node: NodeId,
    group: &Group,
    operation: &Operation,
) -> Result<Outcome, RequestError> {
    let failed = |error: kv::KvError| RequestError::Failed { node, shard: group.shard, detail: error.to_string() };
    let group = group.id;
    match operation {
        Operation::Get { key, .. } => kv::get(engine, group, key).map(Outcome::Value).map_err(failed),
        Operation::Scan { start, end, limit, max_bytes, .. } => {
            kv::scan_page(engine, group, start, end, *limit, *max_bytes).map(Outcome::Pairs).map_err(failed)
        }
        Operation::Write(_) => Err(RequestError::InvalidArgument("a write is not a read".into())),
    }
}
