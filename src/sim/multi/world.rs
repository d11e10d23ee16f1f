//! The simulated world of a multi-group run: nodes, network, clock,
//! clients and faults. One time unit is one simulated millisecond; each
//! node ticks every `TICK_UNITS`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{MultiConfig, MultiReport};
use crate::cluster::ClusterConfig;
use crate::kv::Command;
use crate::multiraft::{
    group_of, ClusterView, Node, NodeStats, Operation, Outbox, Outcome, Request, RequestError, RuntimeConfig, ShardId,
    Turn,
};
use crate::raft::{GroupId, Message, NodeId, Term};
use crate::sim::Rng;
use crate::storage::snapshot::{SnapshotDir, SnapshotFile};
use crate::storage::{Engine, StorageConfig};

pub(super) const TICK_UNITS: u64 = 10;
/// Client requests expire this long after they are issued.
const REQUEST_TIMEOUT_UNITS: u64 = 3_000;
/// An idle spell: long enough for every group to quiesce.
const IDLE_UNITS: u64 = 600;

pub(super) enum Delivery {
    Messages {
        from: NodeId,
        messages: Vec<(GroupId, Message)>,
    },
    Request(Request),
    PeerUp(NodeId),
    PeerDown(NodeId),
    Snapshot {
        from: NodeId,
        group: GroupId,
        message: Message,
        file: SnapshotFile,
        done: oneshot::Sender<Result<(), String>>,
    },
    SnapshotSent {
        to: NodeId,
        group: GroupId,
        delivered: bool,
    },
    /// A snapshot this node built for one of its groups (the real shell
    /// builds on another thread; here the build is synchronous and its
    /// result arrives with the next step, still after the turn).
    SnapshotBuilt {
        group: GroupId,
        built: Result<SnapshotFile, String>,
    },
}

pub(super) struct SimNode {
    pub id: NodeId,
    dir: PathBuf,
    pub node: Option<Node>,
    snapshots: Option<Arc<SnapshotDir>>,
    stats: Arc<NodeStats>,
    /// A turn whose write has not completed yet (a slow disk), and when it
    /// completes. The node takes no input meanwhile, as the real loop.
    pending: Option<(Turn, u64)>,
    inbox: VecDeque<Delivery>,
    tick_phase: u64,
}

impl SimNode {
    pub fn has_pending_turn(&self) -> bool {
        self.pending.is_some()
    }
}

struct InFlight {
    at: u64,
    from: NodeId,
    to: NodeId,
    messages: Vec<(GroupId, Message)>,
}

struct SnapshotTransfer {
    at: u64,
    from: NodeId,
    to: NodeId,
    group: GroupId,
    message: Message,
    file: SnapshotFile,
}

pub(super) enum ClientOp {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        shard: ShardId,
    },
    /// A read of a key whose write was acknowledged before it was issued.
    Get {
        key: Vec<u8>,
        expected: Vec<u8>,
    },
}

pub struct World {
    pub(super) config: MultiConfig,
    rng: Rng,
    base: Instant,
    pub(super) now: u64,
    _dir: tempfile::TempDir,
    cluster: ClusterConfig,
    /// Built once: a view holds the key ring, which is costly to build.
    views: BTreeMap<NodeId, Arc<ClusterView>>,
    pub(super) nodes: Vec<SimNode>,
    network: Vec<InFlight>,
    transfers: Vec<SnapshotTransfer>,
    /// Snapshot acks awaited by senders: (sender, receiver, group, the
    /// received file, ack).
    snapshot_acks: Vec<(NodeId, NodeId, GroupId, PathBuf, oneshot::Receiver<Result<(), String>>)>,
    /// Unordered pairs of nodes that cannot talk.
    cut: BTreeSet<(NodeId, NodeId)>,
    clients: Vec<(ClientOp, oneshot::Receiver<Result<Outcome, RequestError>>)>,
    next_key: u64,
    pub(super) acked: BTreeMap<Vec<u8>, Vec<u8>>,
    unknown: BTreeSet<Vec<u8>>,
    /// Writes answered with a retryable error: "not done". None may ever
    /// become visible (Redis-Raft #23 the other way round).
    pub(super) refused: BTreeSet<Vec<u8>>,
    /// Once the healed cluster has settled, every read must be answered
    /// (a read left unanswered until its deadline is a liveness bug).
    pub(super) strict_reads: bool,
    leader_guess: BTreeMap<ShardId, NodeId>,
    idle_until: u64,
    crash_after_idle: bool,
    pub(super) leaders_by_term: BTreeMap<(GroupId, Term), NodeId>,
    pub(super) report: MultiReport,
}

fn runtime_config() -> RuntimeConfig {
    RuntimeConfig {
        max_wakeups_per_tick: 8,
        compact_log_entries: 30,
        compact_keep_entries: 5,
        compact_every_ticks: 8,
        ..RuntimeConfig::default()
    }
}

fn storage_config() -> StorageConfig {
    StorageConfig {
        block_cache_bytes: 8 << 20,
        write_buffer_total_bytes: 8 << 20,
        write_buffer_bytes: 1 << 20,
        log_write_buffer_bytes: 2 << 20,
        compress_data: false,
        background_jobs: 1,
        sync_writes: false,
    }
}

fn pair(a: NodeId, b: NodeId) -> (NodeId, NodeId) {
    (a.min(b), a.max(b))
}

impl World {
    pub fn new(config: MultiConfig) -> Result<World, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let members = (1..=config.nodes as u64).map(|id| (NodeId(id), format!("sim:{id}"))).collect();
        let cluster = ClusterConfig { shard_count: config.shards, nodes: members };
        let views = (1..=config.nodes as u64)
            .map(|id| Ok((NodeId(id), cluster.view(NodeId(id)).map_err(|e| e.to_string())?)))
            .collect::<Result<BTreeMap<_, _>, String>>()?;
        let mut rng = Rng::new(config.seed);
        let nodes = (1..=config.nodes as u64)
            .map(|id| SimNode {
                id: NodeId(id),
                dir: dir.path().join(format!("n{id}")),
                node: None,
                snapshots: None,
                stats: Arc::new(NodeStats::default()),
                pending: None,
                inbox: VecDeque::new(),
                tick_phase: rng.range(0, TICK_UNITS),
            })
            .collect();
        let mut world = World {
            config,
            rng,
            base: Instant::now(),
            now: 0,
            _dir: dir,
            cluster,
            views,
            nodes,
            network: Vec::new(),
            transfers: Vec::new(),
            snapshot_acks: Vec::new(),
            cut: BTreeSet::new(),
            clients: Vec::new(),
            next_key: 0,
            acked: BTreeMap::new(),
            unknown: BTreeSet::new(),
            refused: BTreeSet::new(),
            strict_reads: false,
            leader_guess: BTreeMap::new(),
            idle_until: 0,
            crash_after_idle: false,
            leaders_by_term: BTreeMap::new(),
            report: MultiReport::default(),
        };
        for index in 0..world.nodes.len() {
            world.start_node(index)?;
        }
        Ok(world)
    }

    pub(super) fn view(&self, id: NodeId) -> Arc<ClusterView> {
        self.views[&id].clone()
    }

    fn instant(&self, unit: u64) -> Instant {
        self.base + Duration::from_millis(unit)
    }

    pub(super) fn log(&self, line: impl FnOnce() -> String) {
        if self.config.verbose {
            println!("[{:>6}] {}", self.now, line());
        }
    }

    /// Opens a node from its directory (creating it the first time) and
    /// tells it and its reachable peers that they see each other.
    fn start_node(&mut self, index: usize) -> Result<(), String> {
        let id = self.nodes[index].id;
        let dir = self.nodes[index].dir.clone();
        let engine = Engine::open(&dir.join("db"), id.0, &storage_config()).map_err(|e| e.to_string())?;
        let engine = Arc::new(engine);
        if ClusterConfig::load(&engine).map_err(|e| e.to_string())?.is_none() {
            ClusterConfig::load_or_create(&engine, Some(self.cluster.clone())).map_err(|e| e.to_string())?;
        }
        let snapshots = Arc::new(SnapshotDir::open(&dir.join("snapshots")).map_err(|e| e.to_string())?);
        let stats = self.nodes[index].stats.clone();
        let node = Node::open(engine, snapshots.clone(), self.view(id), stats, runtime_config())
            .map_err(|e| format!("node {id} does not reopen: {e}"))?;
        let slot = &mut self.nodes[index];
        slot.node = Some(node);
        slot.snapshots = Some(snapshots);
        for other in 0..self.nodes.len() {
            let peer = self.nodes[other].id;
            if other != index && self.nodes[other].node.is_some() && !self.cut.contains(&pair(id, peer)) {
                self.nodes[index].inbox.push_back(Delivery::PeerUp(peer));
                self.nodes[other].inbox.push_back(Delivery::PeerUp(id));
            }
        }
        Ok(())
    }

    /// Drops the node and everything it had not written: its pending turn
    /// (whose early messages may already be out) is lost.
    fn crash(&mut self, index: usize) {
        let id = self.nodes[index].id;
        let slot = &mut self.nodes[index];
        if slot.node.take().is_none() {
            return;
        }
        slot.pending = None;
        slot.inbox.clear();
        slot.snapshots = None;
        self.report.crashes += 1;
        self.log(|| format!("crash node {id}"));
        for other in &mut self.nodes {
            if other.id != id && other.node.is_some() {
                other.inbox.push_back(Delivery::PeerDown(id));
            }
        }
    }

    fn up(&self, id: NodeId) -> bool {
        self.nodes.iter().any(|n| n.id == id && n.node.is_some())
    }

    pub fn run(&mut self) -> Result<MultiReport, String> {
        while self.now < self.config.chaos_units {
            self.chaos()?;
            self.step()?;
        }
        self.heal_all()?;
        let healed_at = self.now;
        self.recover(healed_at)?;
        self.check_final_writes(healed_at)?;
        self.check_replicas_agree()?;
        for node in &self.nodes {
            self.report.snapshots_installed +=
                node.stats.snapshots_installed.load(std::sync::atomic::Ordering::Relaxed);
            self.report.wakeups += node.stats.wakeups.load(std::sync::atomic::Ordering::Relaxed);
        }
        Ok(self.report.clone())
    }

    /// One time unit: network, then every node in id order, then clients.
    pub(super) fn step(&mut self) -> Result<(), String> {
        self.now += 1;
        self.deliver_network();
        self.deliver_snapshots()?;
        for index in 0..self.nodes.len() {
            self.step_node(index)?;
        }
        self.poll_clients()?;
        if self.now % TICK_UNITS == 0 {
            self.check_nodes()?;
        }
        Ok(())
    }

    fn deliver_network(&mut self) {
        let now = self.now;
        let (due, later): (Vec<InFlight>, Vec<InFlight>) =
            std::mem::take(&mut self.network).into_iter().partition(|m| m.at <= now);
        self.network = later;
        for message in due {
            if self.cut.contains(&pair(message.from, message.to)) || !self.up(message.to) {
                continue;
            }
            let slot = self.nodes.iter_mut().find(|n| n.id == message.to).expect("known node");
            slot.inbox.push_back(Delivery::Messages { from: message.from, messages: message.messages });
        }
    }

    /// Streams each due snapshot file into the receiver's directory (chunk
    /// by chunk, as the transport does) and hands it over; a transfer to a
    /// node that is down or cut off fails, and its sender is told.
    fn deliver_snapshots(&mut self) -> Result<(), String> {
        let now = self.now;
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.transfers).into_iter().partition(|t| t.at <= now);
        self.transfers = later;
        for transfer in due {
            let receiver = self.nodes.iter().position(|n| n.id == transfer.to).expect("known node");
            let reachable = self.up(transfer.to) && !self.cut.contains(&pair(transfer.from, transfer.to));
            let copied = match (&self.nodes[receiver].snapshots, reachable) {
                (Some(dir), true) => copy_snapshot(dir, &transfer.file).map_err(|e| format!("snapshot copy: {e}"))?,
                _ => None,
            };
            let Some(file) = copied else {
                self.tell_sender(transfer.from, transfer.to, transfer.group, false);
                continue;
            };
            let (done, ack) = oneshot::channel();
            let (from, group, message) = (transfer.from, transfer.group, transfer.message);
            let path = file.path.clone();
            self.nodes[receiver].inbox.push_back(Delivery::Snapshot { from, group, message, file, done });
            self.snapshot_acks.push((transfer.from, transfer.to, transfer.group, path, ack));
        }
        let mut waiting = Vec::new();
        for (from, to, group, path, mut ack) in std::mem::take(&mut self.snapshot_acks) {
            let delivered = match ack.try_recv() {
                Ok(result) => result.is_ok(),
                Err(oneshot::error::TryRecvError::Closed) => false,
                Err(oneshot::error::TryRecvError::Empty) => {
                    waiting.push((from, to, group, path, ack));
                    continue;
                }
            };
            // As the transport does: a refused file is removed at once,
            // whatever an install may have done with it (a crashed node's
            // transport removes nothing).
            if !delivered && self.up(to) {
                let _ = std::fs::remove_file(&path);
            }
            self.tell_sender(from, to, group, delivered);
        }
        self.snapshot_acks = waiting;
        Ok(())
    }

    fn tell_sender(&mut self, from: NodeId, to: NodeId, group: GroupId, delivered: bool) {
        if let Some(slot) = self.nodes.iter_mut().find(|n| n.id == from && n.node.is_some()) {
            slot.inbox.push_back(Delivery::SnapshotSent { to, group, delivered });
        }
    }

    fn step_node(&mut self, index: usize) -> Result<(), String> {
        if self.nodes[index].node.is_none() {
            return Ok(());
        }
        if let Some((_, completes_at)) = &self.nodes[index].pending {
            if *completes_at > self.now {
                return Ok(());
            }
            let (turn, _) = self.nodes[index].pending.take().expect("pending");
            self.complete_turn(index, turn)?;
        }
        let now = self.instant(self.now);
        let slot = &mut self.nodes[index];
        let node = slot.node.as_mut().expect("up");
        while let Some(delivery) = slot.inbox.pop_front() {
            match delivery {
                Delivery::Messages { from, messages } => node.on_peer_messages(from, messages),
                Delivery::Request(request) => node.on_request(request, now),
                Delivery::PeerUp(peer) => node.on_peer_up(peer),
                Delivery::PeerDown(peer) => node.on_peer_down(peer),
                Delivery::Snapshot { from, group, message, file, done } => {
                    node.on_snapshot_received(from, group, message, file, done)
                }
                Delivery::SnapshotSent { to, group, delivered } => node.on_snapshot_sent(to, group, delivered),
                Delivery::SnapshotBuilt { group, built } => node.on_snapshot_built(group, built),
            }
        }
        if (self.now + slot.tick_phase) % TICK_UNITS == 0 {
            node.on_tick(now);
        }
        // A few turns per unit at most: advancing can create more work.
        for _ in 0..3 {
            let node = self.nodes[index].node.as_mut().expect("up");
            if !node.has_work() {
                break;
            }
            let mut turn = node.prepare_turn();
            let id = self.nodes[index].id;
            let early = std::mem::take(&mut turn.early);
            self.send(id, early);
            for (to, group, message, file) in std::mem::take(&mut turn.snapshots) {
                let at = self.now + self.rng.range(1, 20);
                self.transfers.push(SnapshotTransfer { at, from: id, to, group, message, file });
            }
            if self.rng.chance(self.config.slow_disk_per_million) {
                let completes_at = self.now + self.rng.range(1, 31);
                self.nodes[index].pending = Some((turn, completes_at));
                self.report.slow_writes += 1;
                break;
            }
            self.complete_turn(index, turn)?;
        }
        Ok(())
    }

    /// The turn's write completes: commit it, then finish the turn.
    fn complete_turn(&mut self, index: usize, mut turn: Turn) -> Result<(), String> {
        let id = self.nodes[index].id;
        let node = self.nodes[index].node.as_mut().expect("up");
        let batch = std::mem::take(&mut turn.batch);
        node.engine().commit(batch).map_err(|e| format!("node {id}: write failed: {e}"))?;
        let builds = std::mem::take(&mut turn.snapshot_builds);
        let late = node.finish_turn(turn);
        let slot = &mut self.nodes[index];
        if let (Some(node), Some(snapshots)) = (slot.node.as_ref(), slot.snapshots.as_ref()) {
            for group in builds {
                let built = snapshots.build(node.engine(), group).map_err(|e| e.to_string());
                slot.inbox.push_back(Delivery::SnapshotBuilt { group, built });
            }
        }
        self.send(id, late);
        Ok(())
    }

    fn send(&mut self, from: NodeId, outbox: Outbox) {
        for (to, messages) in outbox {
            if self.rng.chance(self.config.loss_per_million) {
                continue;
            }
            let at = self.now + self.rng.range(1, self.config.max_delay_units + 1);
            self.network.push(InFlight { at, from, to, messages });
        }
    }

    /// Faults and load during the chaos phase.
    fn chaos(&mut self) -> Result<(), String> {
        let n = self.nodes.len();
        let config = self.config.clone();
        let down = self.nodes.iter().filter(|s| s.node.is_none()).count();
        // At most a minority down at once, so the cluster can make progress.
        if down < (n - 1) / 2 && self.rng.chance(config.crash_per_million) {
            let index = self.rng.range(0, n as u64) as usize;
            self.crash(index);
        }
        if down > 0 && self.rng.chance(config.restart_per_million) {
            let downs: Vec<usize> = (0..n).filter(|&i| self.nodes[i].node.is_none()).collect();
            let index = *self.rng.pick(&downs).expect("one is down");
            self.log(|| format!("restart node {}", index + 1));
            self.start_node(index)?;
        }
        if self.cut.is_empty() && self.rng.chance(config.partition_per_million) {
            self.partition();
        } else if !self.cut.is_empty() && self.rng.chance(config.heal_per_million) {
            self.heal();
        }
        self.idle_and_load()
    }

    /// Isolates a minority of nodes from the rest.
    fn partition(&mut self) {
        let mut ids: Vec<NodeId> = self.nodes.iter().map(|s| s.id).collect();
        self.rng.shuffle(&mut ids);
        let side = self.rng.range(1, (ids.len() as u64 - 1) / 2 + 1) as usize;
        let (minority, majority) = ids.split_at(side);
        for &a in minority {
            for &b in majority {
                self.cut.insert(pair(a, b));
                self.notify(a, Delivery::PeerDown(b));
                self.notify(b, Delivery::PeerDown(a));
            }
        }
        self.report.partitions += 1;
        self.log(|| format!("partition {minority:?} from {majority:?}"));
    }

    fn heal(&mut self) {
        for (a, b) in std::mem::take(&mut self.cut) {
            if self.up(a) && self.up(b) {
                self.notify(a, Delivery::PeerUp(b));
                self.notify(b, Delivery::PeerUp(a));
            }
        }
        self.log(|| "heal".to_string());
    }

    fn notify(&mut self, to: NodeId, delivery: Delivery) {
        if let Some(slot) = self.nodes.iter_mut().find(|s| s.id == to && s.node.is_some()) {
            slot.inbox.push_back(delivery);
        }
    }

    /// Clients write and read, except in idle spells; an idle spell may
    /// end with the crash of the node that leads the most (quiesced) groups.
    fn idle_and_load(&mut self) -> Result<(), String> {
        if self.now == self.idle_until && self.crash_after_idle {
            self.crash_after_idle = false;
            let leader = self.busiest_leader();
            if let Some(index) = leader {
                let quiesced = self.nodes[index].stats.groups_quiesced.load(std::sync::atomic::Ordering::Relaxed);
                self.log(|| format!("crash node {} after an idle spell ({quiesced} groups quiesced)", index + 1));
                self.crash(index);
                self.report.crashes_after_idle += 1;
            }
        }
        if self.now < self.idle_until {
            return Ok(());
        }
        if self.rng.chance(self.config.idle_per_million) {
            self.idle_until = self.now + IDLE_UNITS;
            let down = self.nodes.iter().filter(|s| s.node.is_none()).count();
            self.crash_after_idle = down < (self.nodes.len() - 1) / 2 && self.rng.chance(600_000);
            return Ok(());
        }
        if self.rng.chance(self.config.write_per_million) {
            self.issue_write();
        }
        if self.rng.chance(self.config.read_per_million) {
            self.issue_read();
        }
        Ok(())
    }

    fn busiest_leader(&self) -> Option<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].node.is_some())
            .max_by_key(|&i| self.nodes[i].stats.groups_led.load(std::sync::atomic::Ordering::Relaxed))
    }

    pub(super) fn issue_write(&mut self) {
        let key = format!("k{}", self.next_key).into_bytes();
        let value = format!("v{}", self.next_key).into_bytes();
        self.next_key += 1;
        let shard = self.view(NodeId(1)).ring.shard_for_key(&key);
        let shard = ShardId(shard);
        let command = Command::Put { key: key.clone(), value: value.clone() };
        self.submit(shard, Operation::Write(command), ClientOp::Put { key, value, shard });
    }

    pub(super) fn issue_read(&mut self) {
        if self.acked.is_empty() {
            return;
        }
        let nth = self.rng.range(0, self.acked.len() as u64) as usize;
        let (key, value) = self.acked.iter().nth(nth).map(|(k, v)| (k.clone(), v.clone())).expect("in range");
        let shard = ShardId(self.view(NodeId(1)).ring.shard_for_key(&key));
        let operation = Operation::Get { key: key.clone(), linearizable: true };
        self.submit(shard, operation, ClientOp::Get { key, expected: value });
    }

    /// Sends a request to the node believed to lead its shard, or to a
    /// random live replica.
    fn submit(&mut self, shard: ShardId, operation: Operation, op: ClientOp) {
        let replicas = self.view(NodeId(1)).replicas[shard.0 as usize].clone();
        let live: Vec<NodeId> = replicas.into_iter().filter(|id| self.up(*id)).collect();
        let guess = self.leader_guess.get(&shard).copied().filter(|id| live.contains(id));
        let Some(target) = guess.or_else(|| self.rng.pick(&live).copied()) else { return };
        let (reply, answer) = oneshot::channel();
        let deadline = self.instant(self.now + REQUEST_TIMEOUT_UNITS);
        self.notify(target, Delivery::Request(Request { shard, operation, deadline, reply }));
        self.clients.push((op, answer));
    }

    fn poll_clients(&mut self) -> Result<(), String> {
        let mut waiting = Vec::new();
        for (op, mut answer) in std::mem::take(&mut self.clients) {
            let result = match answer.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) => {
                    waiting.push((op, answer));
                    continue;
                }
                Err(oneshot::error::TryRecvError::Closed) => Err(RequestError::OutcomeUnknown("node crashed".into())),
                Ok(result) => result,
            };
            self.settle(op, result)?;
        }
        self.clients = waiting;
        Ok(())
    }

    fn settle(&mut self, op: ClientOp, result: Result<Outcome, RequestError>) -> Result<(), String> {
        match (op, result) {
            (ClientOp::Put { key, value, .. }, Ok(Outcome::Written(_))) => {
                self.unknown.remove(&key);
                self.acked.insert(key, value);
                self.report.acknowledged_writes += 1;
            }
            (ClientOp::Put { key, .. }, Err(RequestError::OutcomeUnknown(_))) => {
                self.unknown.insert(key);
                self.report.unknown_writes += 1;
            }
            (ClientOp::Put { key, shard, .. }, Err(error)) if error.retryable() => {
                if let RequestError::NotLeader { leader: Some((leader, _)), .. } = error {
                    self.leader_guess.insert(shard, leader);
                }
                self.refused.insert(key);
            }
            (ClientOp::Get { key, expected }, Ok(Outcome::Value(found))) => {
                if found.as_ref() != Some(&expected) {
                    return Err(format!(
                        "linearizable read of {} returned {:?}; its write was acknowledged before the read",
                        String::from_utf8_lossy(&key),
                        found.map(|v| String::from_utf8_lossy(&v).to_string())
                    ));
                }
                self.report.reads_checked += 1;
            }
            (_, Ok(other)) => return Err(format!("a request got the wrong kind of answer: {other:?}")),
            (ClientOp::Get { key, .. }, Err(error)) if self.strict_reads => {
                return Err(format!(
                    "a read of {} on the settled, healed cluster failed: {error}",
                    String::from_utf8_lossy(&key)
                ));
            }
            (_, Err(_)) => {}
        }
        Ok(())
    }

    /// Restarts every crashed node and heals the network.
    fn heal_all(&mut self) -> Result<(), String> {
        self.heal();
        for index in 0..self.nodes.len() {
            if self.nodes[index].node.is_none() {
                self.start_node(index)?;
            }
        }
        self.log(|| "healed: every node up, no partition".to_string());
        Ok(())
    }

    pub(super) fn shard_count(&self) -> u32 {
        self.cluster.shard_count
    }

    pub(super) fn group_of_shard(shard: u32) -> GroupId {
        group_of(ShardId(shard))
    }

    pub(super) fn clients_pending(&self) -> usize {
        self.clients.len()
    }

    pub(super) fn has_pending_turns(&self) -> bool {
        self.nodes.iter().any(|n| n.pending.is_some())
    }
}

/// Copies a snapshot file chunk by chunk into `dir`, as a receiver would
/// get it off the wire; `None` if the file cannot be read (a failed send).
fn copy_snapshot(dir: &SnapshotDir, file: &SnapshotFile) -> Result<Option<SnapshotFile>, String> {
    let Ok(mut chunks) = file.chunks() else { return Ok(None) };
    let mut receiver = dir.receive(file.group).map_err(|e| e.to_string())?;
    loop {
        match chunks.next_chunk() {
            Ok(Some(chunk)) => receiver.accept(&chunk).map_err(|e| e.to_string())?,
            Ok(None) => break,
            Err(_) => return Ok(None),
        }
    }
    receiver.finish().map(Some).map_err(|e| e.to_string())
}
