//! `flotilla bench raft`: what the Raft core costs a node that hosts many
//! groups, with no network or disk in the way.
//!
//! - **Idle groups.** Three in-memory nodes host `groups` three-replica
//!   groups (leaders spread evenly). A plain loop drives them as the node
//!   runtime will: each tick it ticks the groups in its active set, handles
//!   their Readies and delivers their messages. First every group is awake
//!   and ticked every tick (heartbeats, their answers: what a node pays
//!   without quiescence); then every leader quiesces, and the loop visits
//!   only groups with work, of which there are none. Reported per group and
//!   per second of the node's clock at `ticks_per_second`.
//! - **Batching.** One group gets `proposals` proposals between two Readies;
//!   the appends each follower receives are counted (the target is one).
//!
//! Single-threaded and CPU-bound, so the thread's CPU time is the cost.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::{BenchError, Result};
use crate::raft::{
    ConfState, Config, EntryPayload, GroupId, HardState, LogIndex, MemoryLogStore, Message, MessageKind, NodeId,
    RawNode, Role, Snapshot, SnapshotMetadata, Term,
};

const NODES: u64 = 3;

#[derive(Clone, Debug)]
pub struct RaftBenchConfig {
    /// Groups, each with a replica on all three nodes.
    pub groups: u64,
    /// Ticks driven in each measured phase.
    pub ticks: u64,
    /// The node's clock rate, to turn per-tick costs into per-second ones
    /// (10: a 100 ms tick, etcd's heartbeat interval).
    pub ticks_per_second: u64,
    /// Proposals fed to one group between two Readies.
    pub proposals: usize,
}

impl Default for RaftBenchConfig {
    fn default() -> RaftBenchConfig {
        RaftBenchConfig { groups: 10_000, ticks: 200, ticks_per_second: 10, proposals: 100 }
    }
}

/// One measured phase of the idle-group loop.
#[derive(Clone, Debug)]
pub struct Phase {
    pub ticks: u64,
    /// Group visits (ticks plus Readies handled) on all nodes.
    pub visits: u64,
    /// Messages delivered between the nodes.
    pub messages: u64,
    /// CPU of the driving thread, where the platform reports it (the
    /// kernel updates it at scheduler ticks, so a phase of a few
    /// milliseconds may read as zero).
    pub cpu: Option<Duration>,
    /// Wall time of the phase. The loop never blocks, so this is the CPU
    /// time plus whatever else the machine ran meanwhile: an upper bound.
    pub wall: Duration,
}

impl Phase {
    /// CPU per group per second of node clock, for one node (the loop runs
    /// all three nodes, so a third of it). Uses the larger of CPU and wall
    /// time, so a coarse CPU clock never flatters the figure.
    pub fn micros_per_group_second(&self, groups: u64, ticks_per_second: u64) -> f64 {
        let spent = self.cpu.map_or(self.wall, |cpu| cpu.max(self.wall));
        let per_tick = spent.as_secs_f64() * 1e6 / self.ticks.max(1) as f64;
        per_tick * ticks_per_second as f64 / groups.max(1) as f64 / NODES as f64
    }
}

#[derive(Clone, Debug)]
pub struct RaftBenchReport {
    pub config: RaftBenchConfig,
    pub awake: Phase,
    pub quiesced: Phase,
    /// Groups whose replicas were all quiesced before the quiet phase.
    pub quiesced_groups: u64,
    /// AppendEntries each follower got for `proposals` proposals in one
    /// turn, and the entries they carried.
    pub appends_per_follower: Vec<(NodeId, usize, usize)>,
}

/// One node's replicas: group `g` is `replicas[g]`.
struct Node {
    replicas: Vec<RawNode<MemoryLogStore>>,
    /// Groups with work: a message arrived or a Ready is pending.
    active: BTreeSet<usize>,
    /// Groups whose clock runs (not quiesced): the only ones a tick visits.
    awake: BTreeSet<usize>,
}

/// Three in-memory nodes and the messages between them.
struct Cluster {
    nodes: Vec<Node>,
    /// (to, group, message), delivered in order.
    inbox: Vec<(NodeId, usize, Message)>,
    visits: u64,
    delivered: u64,
}

pub fn run(config: &RaftBenchConfig, mut progress: impl FnMut(&str)) -> Result<RaftBenchReport> {
    if config.groups == 0 || config.ticks == 0 || config.ticks_per_second == 0 || config.proposals == 0 {
        return Err(BenchError::Config(
            "--groups, --ticks, --ticks-per-second and --proposals must be positive".into(),
        ));
    }
    let appends_per_follower = measure_batching(config.proposals);
    progress(&format!("bootstrapping {} groups on {NODES} nodes ...", config.groups));
    let mut cluster = Cluster::bootstrap(config.groups)?;
    progress(&format!("{} ticks with every group awake ...", config.ticks));
    let awake = cluster.measure(config.ticks, false);
    let quiesced_groups = cluster.quiesce_all();
    progress(&format!("{quiesced_groups} groups quiesced; {} ticks with the active set ...", config.ticks));
    let quiesced = cluster.measure(config.ticks, true);
    Ok(RaftBenchReport { config: config.clone(), awake, quiesced, quiesced_groups, appends_per_follower })
}

fn bootstrap_config(id: NodeId, group: GroupId) -> Config {
    let mut config = Config::for_group(id, group);
    config.applied = LogIndex(1);
    config
}

/// A replica of a group whose initial membership is a snapshot at index 1
/// (as a node bootstraps its groups).
fn replica(id: NodeId, group: GroupId) -> Result<RawNode<MemoryLogStore>> {
    let voters = ConfState::with_voters(1..=NODES);
    let metadata = SnapshotMetadata { index: LogIndex(1), term: Term(1), conf_state: voters.clone() };
    let mut store = MemoryLogStore::new();
    store.apply_snapshot(Snapshot { metadata, data: Vec::new() }).map_err(raft_error)?;
    let hard_state = HardState { term: Term(1), vote: None, commit: LogIndex(1) };
    RawNode::new(bootstrap_config(id, group), store, hard_state, &voters).map_err(raft_error)
}

fn raft_error(error: impl std::fmt::Display) -> BenchError {
    BenchError::Config(format!("raft: {error}"))
}

impl Cluster {
    fn bootstrap(groups: u64) -> Result<Cluster> {
        let mut nodes = Vec::new();
        for id in 1..=NODES {
            let replicas = (0..groups).map(|g| replica(NodeId(id), GroupId(g))).collect::<Result<Vec<_>>>()?;
            let awake = (0..groups as usize).collect();
            nodes.push(Node { replicas, active: BTreeSet::new(), awake });
        }
        let mut cluster = Cluster { nodes, inbox: Vec::new(), visits: 0, delivered: 0 };
        for g in 0..groups as usize {
            let leader = g % NODES as usize;
            cluster.nodes[leader].replicas[g].campaign();
            cluster.nodes[leader].active.insert(g);
        }
        cluster.settle();
        let leaders = (0..groups as usize)
            .filter(|&g| cluster.nodes.iter().any(|n| n.replicas[g].status().soft_state.role == Role::Leader))
            .count();
        if leaders != groups as usize {
            return Err(BenchError::Config(format!("only {leaders} of {groups} groups elected a leader")));
        }
        Ok(cluster)
    }

    /// Handles Readies and delivers messages until nothing is left.
    fn settle(&mut self) {
        loop {
            for index in 0..self.nodes.len() {
                self.handle_readies(index);
            }
            if self.inbox.is_empty() {
                return;
            }
            self.deliver();
        }
    }

    fn handle_readies(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        for g in std::mem::take(&mut node.active) {
            let replica = &mut node.replicas[g];
            while replica.has_ready() {
                self.visits += 1;
                let ready = replica.ready();
                if let Some(snapshot) = &ready.snapshot {
                    let _ = replica.store_mut().apply_snapshot(snapshot.clone());
                }
                let _ = replica.store_mut().append(&ready.entries);
                for entry in &ready.committed_entries {
                    if let EntryPayload::ConfChange(change) = &entry.payload {
                        let _ = replica.apply_conf_change(change);
                    }
                }
                let messages = ready.messages.into_iter().chain(ready.persisted_messages);
                self.inbox.extend(messages.map(|m| (m.to, g, m)));
                replica.advance();
            }
            if replica.is_quiesced() {
                node.awake.remove(&g);
            } else {
                node.awake.insert(g);
            }
        }
    }

    fn deliver(&mut self) {
        for (to, g, message) in std::mem::take(&mut self.inbox) {
            let node = &mut self.nodes[(to.0 - 1) as usize];
            self.delivered += 1;
            let _ = node.replicas[g].step(message);
            node.active.insert(g);
        }
    }

    /// Drives `ticks` ticks. With `awake_only`, a tick visits only the
    /// groups whose clock runs, as the node runtime does (a quiesced group
    /// is not even looked at); otherwise every group is ticked.
    fn measure(&mut self, ticks: u64, awake_only: bool) -> Phase {
        let (visits, delivered) = (self.visits, self.delivered);
        let (cpu_start, wall_start) = (thread_cpu_time(), Instant::now());
        for _ in 0..ticks {
            for node in &mut self.nodes {
                let to_tick: Vec<usize> =
                    if awake_only { node.awake.iter().copied().collect() } else { (0..node.replicas.len()).collect() };
                for g in to_tick {
                    self.visits += 1;
                    node.replicas[g].tick();
                    node.active.insert(g);
                }
            }
            self.settle();
        }
        let wall = wall_start.elapsed();
        let cpu = cpu_start.zip(thread_cpu_time()).map(|(start, end)| end.saturating_sub(start));
        Phase { ticks, visits: self.visits - visits, messages: self.delivered - delivered, cpu, wall }
    }

    /// Every leader quiesces (all nodes live); returns how many groups then
    /// have every replica quiesced.
    fn quiesce_all(&mut self) -> u64 {
        for node in &mut self.nodes {
            for (g, replica) in node.replicas.iter_mut().enumerate() {
                if replica.quiesce(|_| true) {
                    node.active.insert(g);
                }
            }
        }
        self.settle();
        let groups = self.nodes[0].replicas.len();
        (0..groups).filter(|&g| self.nodes.iter().all(|n| n.replicas[g].is_quiesced())).count() as u64
    }
}

/// Proposals to one settled group between two Readies: the appends each
/// follower gets, and the entries they carry.
fn measure_batching(proposals: usize) -> Vec<(NodeId, usize, usize)> {
    let mut cluster = Cluster::bootstrap(1).expect("one group elects a leader");
    let leader = &mut cluster.nodes[0].replicas[0];
    for i in 0..proposals {
        let _ = leader.propose(i.to_be_bytes().to_vec());
    }
    let ready = leader.ready();
    let appends =
        |to: NodeId| ready.messages.iter().filter(move |m| m.kind == MessageKind::AppendEntries && m.to == to);
    let counts = (2..=NODES)
        .map(NodeId)
        .map(|to| (to, appends(to).count(), appends(to).map(|m| m.entries.len()).sum()))
        .collect();
    leader.advance();
    counts
}

/// This thread's CPU time, from /proc/thread-self/schedstat (Linux; ns).
fn thread_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos = stat.split_whitespace().next()?.parse::<u64>().ok()?;
    Some(Duration::from_nanos(nanos))
}

pub fn format_report(report: &RaftBenchReport) -> String {
    let config = &report.config;
    let (groups, rate) = (config.groups, config.ticks_per_second);
    let mut out = String::new();
    let _ =
        writeln!(out, "{groups} groups x {NODES} replicas in memory, {} ticks per phase, {rate} ticks/s", config.ticks);
    let _ = writeln!(
        out,
        "{:>10} {:>10} {:>12} {:>10} {:>10} {:>22}",
        "phase", "visits", "messages", "cpu ms", "wall ms", "µs per group-second"
    );
    for (name, phase) in [("awake", &report.awake), ("quiesced", &report.quiesced)] {
        let cpu = phase.cpu.map_or("-".to_string(), |cpu| format!("{:.3}", cpu.as_secs_f64() * 1e3));
        let _ = writeln!(
            out,
            "{name:>10} {:>10} {:>12} {cpu:>10} {:>10.3} {:>22.5}",
            phase.visits,
            phase.messages,
            phase.wall.as_secs_f64() * 1e3,
            phase.micros_per_group_second(groups, rate)
        );
    }
    let _ = writeln!(out, "groups with every replica quiesced: {} of {groups}", report.quiesced_groups);
    for (to, appends, entries) in &report.appends_per_follower {
        let _ = writeln!(
            out,
            "{} proposals in one turn: follower {to} got {appends} append(s) carrying {entries} entries",
            config.proposals
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts only, never timings.
    #[test]
    fn quiesced_groups_are_never_visited_and_a_turn_of_proposals_is_one_append() {
        let config = RaftBenchConfig { groups: 30, ticks: 25, ticks_per_second: 10, proposals: 100 };
        let report = run(&config, |_| {}).unwrap();
        assert_eq!(report.quiesced_groups, 30);
        assert_eq!(report.quiesced.visits, 0, "a sleeping group is never visited");
        assert_eq!(report.quiesced.messages, 0);
        // Awake: every replica ticked every tick, plus its Readies.
        assert!(report.awake.visits >= 30 * 3 * 25);
        assert!(report.awake.messages > 0, "heartbeats and their answers");
        assert_eq!(report.appends_per_follower, vec![(NodeId(2), 1, 100), (NodeId(3), 1, 100)]);
        let text = format_report(&report);
        assert!(text.contains("follower 2 got 1 append(s) carrying 100 entries"), "{text}");
    }

    #[test]
    fn bad_parameters_are_refused() {
        let config = RaftBenchConfig { groups: 0, ..RaftBenchConfig::default() };
        assert!(matches!(run(&config, |_| {}), Err(BenchError::Config(_))));
    }
}
