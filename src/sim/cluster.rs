//! A simulated group: nodes, an in-memory network with faults, clients, and
//! the checker, all driven by one seeded RNG in discrete time. One tick is
//! `TIME_UNITS_PER_TICK` time units; messages take 1..=`max_delay` units.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};

use super::checker::{check_log_matching, Checker, Violation};
use super::node::{encode_value, Applied, SimNode};
use super::rng::Rng;
use super::SimConfig;
use crate::raft::{
    ConfChange, ConfChangeKind, ConfChangeSingle, ConfChangeTransition, ConfState, LogIndex, Message, MessageKind,
    NodeId, ProposalId, ReadState, Role, Term,
};

pub const TIME_UNITS_PER_TICK: u64 = 10;

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    deliver_at: u64,
    sequence: u64,
    from: NodeId,
    to: NodeId,
    #[allow(clippy::struct_field_names)]
    message: MessageBox,
}

/// `Message` is not `Ord`; order in-flight messages by time and sequence only.
struct MessageBox(Message);
impl PartialEq for MessageBox {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for MessageBox {}
impl PartialOrd for MessageBox {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for MessageBox {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

/// A read waiting for its ReadState and then for the apply index.
struct PendingRead {
    node: NodeId,
    incarnation: u64,
    /// The highest index of a write acknowledged before the read began.
    acked_floor: LogIndex,
    read_index: Option<LogIndex>,
}

#[derive(Default, Debug, Clone)]
pub struct Stats {
    pub proposals: u64,
    pub acknowledged: u64,
    pub reads_served: u64,
    pub crashes: u64,
    pub conf_changes: u64,
    pub transfers: u64,
    pub snapshots_sent: u64,
    pub compactions: u64,
    pub elections_won: u64,
    /// Times a leader quiesced its group, and times a quiesced group woke.
    pub quiesced: u64,
    pub woken: u64,
    /// Followers that forgot a leader whose peer stream broke.
    pub leaders_forgotten: u64,
    pub quiesced_leader_crashes: u64,
    /// Reads reported dropped (leadership changed) instead of answered.
    pub reads_dropped: u64,
    /// Appends a Raft-paper leader would send after a rejection (§5.3).
    pub paper_backtracks: u64,
}

impl Stats {
    /// Adds another run's counts to these.
    pub fn absorb(&mut self, other: &Stats) {
        let pairs = [
            (&mut self.proposals, other.proposals),
            (&mut self.acknowledged, other.acknowledged),
            (&mut self.reads_served, other.reads_served),
            (&mut self.crashes, other.crashes),
            (&mut self.conf_changes, other.conf_changes),
            (&mut self.transfers, other.transfers),
            (&mut self.snapshots_sent, other.snapshots_sent),
            (&mut self.compactions, other.compactions),
            (&mut self.elections_won, other.elections_won),
            (&mut self.quiesced, other.quiesced),
            (&mut self.woken, other.woken),
            (&mut self.leaders_forgotten, other.leaders_forgotten),
            (&mut self.quiesced_leader_crashes, other.quiesced_leader_crashes),
            (&mut self.reads_dropped, other.reads_dropped),
            (&mut self.paper_backtracks, other.paper_backtracks),
        ];
        for (total, add) in pairs {
            *total += add;
        }
    }
}

pub struct Cluster {
    pub config: SimConfig,
    pub rng: Rng,
    pub time: u64,
    pub nodes: BTreeMap<NodeId, SimNode>,
    network: BinaryHeap<Reverse<InFlight>>,
    sequence: u64,
    /// Directed links that drop everything.
    pub(super) blocked: HashSet<(NodeId, NodeId)>,
    /// A link that toggles every few ticks, if any.
    flapping: Option<(NodeId, NodeId)>,
    pub checker: Checker,
    /// Proposals in flight: (node, incarnation, proposal) -> value.
    proposals: HashMap<(NodeId, u64, ProposalId), u64>,
    /// Acknowledged writes: value -> index.
    pub acknowledged: BTreeMap<u64, LogIndex>,
    reads: HashMap<Vec<u8>, PendingRead>,
    next_value: u64,
    next_node_id: u64,
    /// Nodes that applied their own removal; they must never lead again.
    removed: BTreeSet<NodeId>,
    /// Nodes that have applied a configuration including themselves.
    members_seen: BTreeSet<NodeId>,
    /// (leader, term) pairs already checked for leader completeness.
    leaders_checked: HashSet<(NodeId, Term)>,
    tick_phase: HashMap<NodeId, u64>,
    pub stats: Stats,
    pub trace: Vec<String>,
    /// Whether faults are injected (off once the run heals).
    pub(super) chaos: bool,
    /// Per directed link, when its last message is due (FIFO after heal).
    last_delivery: HashMap<(NodeId, NodeId), u64>,
    /// A leader chosen to crash at a time: (leader, term, time).
    doomed_leader: Option<(NodeId, Term, u64)>,
    /// Clients send nothing before this time (an idle spell).
    pub(super) idle_until: u64,
    /// Followers that will forget a leader whose stream broke:
    /// (when, follower, its incarnation, leader).
    pub(super) forgets: Vec<(u64, NodeId, u64, NodeId)>,
    /// Whether each node's clock was stopped at the end of its last flush.
    pub(super) was_quiesced: HashMap<NodeId, bool>,
    /// Reads reported dropped; they must never be answered.
    dropped_reads: HashSet<Vec<u8>>,
}

impl Cluster {
    pub fn new(config: SimConfig) -> Cluster {
        let mut rng = Rng::new(config.seed);
        let voters = ConfState::with_voters(1..=config.nodes as u64);
        let mut nodes = BTreeMap::new();
        let mut tick_phase = HashMap::new();
        for id in 1..=config.nodes as u64 {
            nodes.insert(NodeId(id), SimNode::bootstrap(NodeId(id), &voters, config.node_settings()));
            tick_phase.insert(NodeId(id), rng.range(0, TIME_UNITS_PER_TICK));
        }
        let initial = config.nodes;
        Cluster {
            next_node_id: config.nodes as u64 + 1,
            config,
            rng,
            time: 0,
            nodes,
            network: BinaryHeap::new(),
            sequence: 0,
            blocked: HashSet::new(),
            flapping: None,
            checker: Checker::default(),
            proposals: HashMap::new(),
            acknowledged: BTreeMap::new(),
            reads: HashMap::new(),
            next_value: 1,
            removed: BTreeSet::new(),
            leaders_checked: HashSet::new(),
            members_seen: (1..=initial as u64).map(NodeId).collect(),
            tick_phase,
            stats: Stats::default(),
            trace: Vec::new(),
            chaos: true,
            doomed_leader: None,
            last_delivery: HashMap::new(),
            idle_until: 0,
            forgets: Vec::new(),
            was_quiesced: HashMap::new(),
            dropped_reads: HashSet::new(),
        }
    }

    pub fn log(&mut self, line: String) {
        if self.config.verbose {
            eprintln!("[t={}] {line}", self.time);
        }
        if self.trace.len() >= 200 {
            self.trace.remove(0);
        }
        self.trace.push(format!("[t={}] {line}", self.time));
    }

    pub(super) fn up_nodes(&self) -> Vec<NodeId> {
        self.nodes.iter().filter(|(_, n)| n.is_up()).map(|(&id, _)| id).collect()
    }

    /// The up node that leads the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|(&id, n)| n.raw.as_ref().map(|r| (id, r.status())))
            .filter(|(_, s)| s.soft_state.role == Role::Leader)
            .max_by_key(|(_, s)| s.hard_state.term)
            .map(|(id, _)| id)
    }

    // ---- one step of simulated time ----

    pub fn step(&mut self) -> Result<(), Violation> {
        self.time += 1;
        self.deliver_due()?;
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            if (self.time + self.tick_phase.get(&id).copied().unwrap_or(0)) % TIME_UNITS_PER_TICK == 0 {
                // A quiesced group is not ticked: that is the point.
                if let Some(raw) = self.nodes.get_mut(&id).and_then(|n| n.raw.as_mut()) {
                    if !raw.is_quiesced() {
                        raw.tick();
                    }
                }
                self.maybe_quiesce(id);
                self.flush(id)?;
            }
        }
        self.watch_streams();
        self.forget_due()?;
        if self.chaos {
            self.client_actions()?;
            self.inject_faults()?;
        }
        self.check_reads()
    }

    fn deliver_due(&mut self) -> Result<(), Violation> {
        while self.network.peek().is_some_and(|Reverse(m)| m.deliver_at <= self.time) {
            let Reverse(in_flight) = self.network.pop().expect("peeked");
            let (from, to, message) = (in_flight.from, in_flight.to, in_flight.message.0);
            let is_snapshot = message.kind == MessageKind::InstallSnapshot;
            let delivered = !self.blocked.contains(&(from, to)) && self.nodes.get(&to).is_some_and(SimNode::is_up);
            if delivered {
                let rejected_append = message.kind == MessageKind::AppendEntriesResponse && message.reject;
                let raw = self.nodes.get_mut(&to).expect("checked").raw();
                let _ = raw.step(message.clone());
                self.flush(to)?;
                if rejected_append && self.rng.chance(self.config.paper_backtrack_per_million) {
                    self.paper_backtrack(to, &message);
                }
            }
            if is_snapshot {
                self.stats.snapshots_sent += u64::from(delivered);
                if let Some(raw) = self.nodes.get_mut(&from).and_then(|n| n.raw.as_mut()) {
                    raw.report_snapshot(to, delivered);
                }
                self.flush(from)?;
            }
        }
        Ok(())
    }

    pub(super) fn send(&mut self, message: Message) {
        let (from, to) = (message.from, message.to);
        if self.blocked.contains(&(from, to)) {
            if self.rng.chance(200_000) {
                if let Some(raw) = self.nodes.get_mut(&from).and_then(|n| n.raw.as_mut()) {
                    raw.report_unreachable(to);
                }
            }
            if message.kind != MessageKind::InstallSnapshot {
                return;
            }
        }
        let lossy = self.chaos && message.kind != MessageKind::InstallSnapshot;
        if lossy && self.rng.chance(self.config.loss_per_million) {
            return;
        }
        let copies = if lossy && self.rng.chance(self.config.duplicate_per_million) { 2 } else { 1 };
        for copy in 0..copies {
            let delay = if copy == 1 {
                // A duplicate shows up late (a retransmission after a
                // reconnect): up to 40 ticks, across several terms.
                self.rng.range(1, 40 * TIME_UNITS_PER_TICK)
            } else if self.chaos && self.rng.chance(self.config.long_delay_per_million) {
                self.rng.range(1, 8 * self.config.max_delay)
            } else {
                self.rng.range(1, self.config.max_delay + 1)
            };
            self.sequence += 1;
            let mut deliver_at = self.time + delay;
            if !self.chaos {
                // A healed network is what the transport gives: one ordered
                // stream per peer. Reordering is a fault of the chaos phase.
                let last = self.last_delivery.entry((from, to)).or_insert(0);
                deliver_at = deliver_at.max(*last);
                *last = deliver_at;
            }
            let in_flight =
                InFlight { deliver_at, sequence: self.sequence, from, to, message: MessageBox(message.clone()) };
            self.network.push(Reverse(in_flight));
        }
    }

    /// Handles every Ready the node has, routing messages and checking.
    pub fn flush(&mut self, id: NodeId) -> Result<(), Violation> {
        let result = self.flush_readies(id);
        self.note_quiescence(id);
        result
    }

    fn flush_readies(&mut self, id: NodeId) -> Result<(), Violation> {
        for _ in 0..self.config.readies_per_flush {
            let crash = self.chaos && self.rng.chance(self.config.crash_mid_ready_per_million);
            let Some(node) = self.nodes.get_mut(&id) else { return Ok(()) };
            let Some(raw) = node.raw.as_mut() else { return Ok(()) };
            if !raw.has_ready() {
                return Ok(());
            }
            let before = raw.status();
            let became_leader = before.soft_state.role == Role::Leader;
            // Entries are checked as they are handed out for persisting.
            let unstable = raw.entries(before.persisted.next().max(before.first_index), before.last_index.next());
            if let Ok(entries) = unstable {
                self.checker.observe_entries(id, &entries)?;
            }
            let incarnation = node.incarnation;
            let output = node.handle_ready(crash);
            if output.crashed_mid_ready {
                self.stats.crashes += 1;
                self.log(format!("node {id} crashed mid-ready"));
            }
            self.note_dropped_reads(output.dropped_reads);
            if became_leader {
                let term = before.hard_state.term;
                self.checker.observe_role(id, Role::Leader, term)?;
                if self.leaders_checked.insert((id, term)) {
                    self.stats.elections_won += 1;
                    if let Some(raw) = self.nodes.get(&id).and_then(|n| n.raw.as_ref()) {
                        self.checker.check_new_leader(id, raw, term)?;
                    }
                }
            }
            for message in output.messages {
                self.send(message);
            }
            self.after_apply(id, incarnation, before.hard_state.term, &output.applied)?;
            self.record_read_states(id, incarnation, output.read_states)?;
            if let Some(raw) = self.nodes.get(&id).and_then(|n| n.raw.as_ref()) {
                self.checker.check_progress(id, incarnation, raw)?;
            }
        }
        Ok(())
    }

    fn after_apply(&mut self, id: NodeId, incarnation: u64, term: Term, applied: &[Applied]) -> Result<(), Violation> {
        for item in applied {
            self.checker.observe_applied(id, term, item)?;
            let Applied::Entry { index, term: entry_term, value: Some(value) } = item else { continue };
            let key = (id, incarnation, ProposalId { index: *index, term: *entry_term });
            if self.proposals.remove(&key).is_some() {
                self.acknowledged.insert(*value, *index);
                self.stats.acknowledged += 1;
            }
        }
        if let Some(node) = self.nodes.get(&id) {
            let conf = &node.conf_state;
            // A new node may first install a snapshot from before its
            // addition: only a node that was a member can be removed.
            let member = conf.is_voter(id) || conf.learners.contains(&id);
            if member {
                self.members_seen.insert(id);
            } else if self.members_seen.contains(&id) && self.removed.insert(id) {
                self.log(format!("node {id} applied its own removal"));
            }
        }
        if self.removed.contains(&id) {
            let role = self.nodes[&id].raw.as_ref().map(|r| r.status().soft_state.role);
            if role == Some(Role::Leader) {
                return Err(format!("node {id} leads after applying its own removal"));
            }
        }
        Ok(())
    }

    fn note_dropped_reads(&mut self, contexts: Vec<Vec<u8>>) {
        for context in contexts {
            self.reads.remove(&context);
            self.stats.reads_dropped += 1;
            self.dropped_reads.insert(context);
        }
    }

    fn record_read_states(
        &mut self,
        id: NodeId,
        incarnation: u64,
        read_states: Vec<ReadState>,
    ) -> Result<(), Violation> {
        for state in read_states {
            if self.dropped_reads.contains(&state.context) {
                return Err(format!("node {id} answered read {:?} after reporting it dropped", state.context));
            }
            if let Some(read) = self.reads.get_mut(&state.context) {
                if read.node == id && read.incarnation == incarnation {
                    read.read_index = Some(state.index);
                }
            }
        }
        Ok(())
    }

    /// A read whose index the node has applied is served now: it must
    /// reflect every write acknowledged before it began.
    fn check_reads(&mut self) -> Result<(), Violation> {
        let mut served = Vec::new();
        for (context, read) in &self.reads {
            let Some(index) = read.read_index else { continue };
            let Some(node) = self.nodes.get(&read.node) else { continue };
            if node.incarnation != read.incarnation || node.raw.is_none() {
                served.push(context.clone());
                continue;
            }
            if node.disk.applied < index {
                continue;
            }
            if index < read.acked_floor {
                return Err(format!(
                    "stale read on node {}: read index {index} is below acknowledged write {}",
                    read.node, read.acked_floor
                ));
            }
            served.push(context.clone());
        }
        for context in served {
            if self.reads.remove(&context).is_some_and(|r| r.read_index.is_some()) {
                self.stats.reads_served += 1;
            }
        }
        Ok(())
    }

    // ---- clients ----

    fn client_actions(&mut self) -> Result<(), Violation> {
        if self.time < self.idle_until {
            return Ok(());
        }
        if self.rng.chance(self.config.idle_per_million) {
            self.idle_until = self.time + self.rng.range(30, 150) * TIME_UNITS_PER_TICK;
            self.log("clients go idle".into());
            return Ok(());
        }
        if self.rng.chance(self.config.propose_per_million) {
            self.propose_on_leader();
        }
        if self.rng.chance(self.config.read_per_million) {
            self.start_read();
        }
        Ok(())
    }

    pub fn propose_on_leader(&mut self) -> Option<u64> {
        let leader = self.leader()?;
        let value = self.next_value;
        self.next_value += 1;
        let node = self.nodes.get_mut(&leader)?;
        let incarnation = node.incarnation;
        let id = node.raw().propose(encode_value(value)).ok()?;
        self.stats.proposals += 1;
        self.proposals.insert((leader, incarnation, id), value);
        let _ = self.flush(leader);
        Some(value)
    }

    fn start_read(&mut self) {
        let up = self.up_nodes();
        let Some(&id) = self.rng.pick(&up) else { return };
        let context = self.next_value.to_be_bytes().to_vec();
        self.next_value += 1;
        let acked_floor = self.acknowledged.values().max().copied().unwrap_or(LogIndex::ZERO);
        let node = self.nodes.get_mut(&id).expect("up");
        let incarnation = node.incarnation;
        if node.raw().read_index(context.clone()).is_ok() {
            self.reads.insert(context, PendingRead { node: id, incarnation, acked_floor, read_index: None });
        }
        let _ = self.flush(id);
    }

    // ---- faults ----

    fn inject_faults(&mut self) -> Result<(), Violation> {
        let c = self.config.clone();
        if self.rng.chance(c.crash_per_million) {
            let up = self.up_nodes();
            if let Some(&id) = self.rng.pick(&up) {
                self.log(format!("crash node {id}"));
                self.stats.crashes += 1;
                self.nodes.get_mut(&id).expect("up").crash();
            }
        }
        self.maybe_crash_new_leader();
        self.maybe_crash_quiesced_leader();
        if self.rng.chance(c.restart_per_million) {
            self.restart_one()?;
        }
        if self.rng.chance(c.partition_per_million) {
            self.partition();
        }
        if self.rng.chance(c.heal_per_million) {
            self.log("heal all links".into());
            self.blocked.clear();
            self.flapping = None;
        }
        if let Some((a, b)) = self.flapping {
            if self.time % (3 * TIME_UNITS_PER_TICK) == 0 && !self.blocked.remove(&(a, b)) {
                self.blocked.insert((a, b));
            }
        }
        if self.rng.chance(c.conf_change_per_million) {
            self.change_membership()?;
        }
        if self.rng.chance(c.transfer_per_million) {
            self.transfer_leadership()?;
        }
        if self.rng.chance(c.compact_per_million) {
            let up = self.up_nodes();
            if let Some(&id) = self.rng.pick(&up) {
                let keep = self.rng.range(0, 4);
                self.nodes.get_mut(&id).expect("up").compact(keep);
                self.stats.compactions += 1;
            }
        }
        Ok(())
    }

    /// Picks some new leaders to crash a few ticks into their term.
    fn maybe_crash_new_leader(&mut self) {
        let Some(id) = self.leader() else { return };
        let term = self.term_of(id);
        match self.doomed_leader {
            Some((doomed, doomed_term, at)) if (doomed, doomed_term) == (id, term) => {
                if self.time >= at {
                    self.log(format!("crash leader {id} of term {term}"));
                    self.stats.crashes += 1;
                    self.nodes.get_mut(&id).expect("up").crash();
                    self.doomed_leader = None;
                }
            }
            Some((_, doomed_term, _)) if doomed_term >= term => {}
            _ => {
                self.doomed_leader = None;
                if self.rng.chance(self.config.short_lived_leader_per_million) {
                    let at = self.time + self.rng.range(1, 4 * TIME_UNITS_PER_TICK);
                    self.doomed_leader = Some((id, term, at));
                } else {
                    // Remember the decision for this term.
                    self.doomed_leader = Some((id, term, u64::MAX));
                }
            }
        }
    }

    fn restart_one(&mut self) -> Result<(), Violation> {
        let down: Vec<NodeId> = self.nodes.iter().filter(|(_, n)| !n.is_up()).map(|(&id, _)| id).collect();
        if let Some(&id) = self.rng.pick(&down) {
            self.log(format!("restart node {id}"));
            self.nodes.get_mut(&id).expect("exists").restart();
            self.flush(id)?;
        }
        Ok(())
    }

    fn partition(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        let pair = |rng: &mut Rng| (*rng.pick(&ids).expect("nodes"), *rng.pick(&ids).expect("nodes"));
        match self.rng.range(0, 4) {
            0 => {
                // Symmetric split into two sides.
                let mut shuffled = ids.clone();
                self.rng.shuffle(&mut shuffled);
                let cut = self.rng.range(1, shuffled.len() as u64) as usize;
                let (left, right) = shuffled.split_at(cut);
                self.log(format!("partition {left:?} | {right:?}"));
                for &a in left {
                    for &b in right {
                        self.blocked.insert((a, b));
                        self.blocked.insert((b, a));
                    }
                }
            }
            1 => {
                let (a, b) = pair(&mut self.rng);
                self.log(format!("one-way block {a} -> {b}"));
                self.blocked.insert((a, b));
            }
            2 => {
                if let Some(leader) = self.leader() {
                    self.log(format!("isolate leader {leader}"));
                    for &other in &ids {
                        if other != leader {
                            self.blocked.insert((leader, other));
                            self.blocked.insert((other, leader));
                        }
                    }
                }
            }
            _ => {
                let (a, b) = pair(&mut self.rng);
                if a != b {
                    self.log(format!("flapping link {a} -> {b}"));
                    self.flapping = Some((a, b));
                }
            }
        }
    }

    fn change_membership(&mut self) -> Result<(), Violation> {
        let Some(leader) = self.leader() else { return Ok(()) };
        let conf = self.nodes[&leader].raw.as_ref().expect("leader is up").configuration();
        let voters: Vec<NodeId> = conf.voters.incoming.iter().copied().collect();
        let learners: Vec<NodeId> = conf.learners.iter().copied().collect();
        let change =
            if conf.voters.is_joint() { ConfChange::leave_joint() } else { self.pick_change(&voters, &learners) };
        let proposed = self.nodes.get_mut(&leader).expect("up").raw().propose_conf_change(change.clone());
        if proposed.is_ok() {
            self.stats.conf_changes += 1;
            self.log(format!("leader {leader} proposes {change:?}"));
            for single in &change.changes {
                if !self.nodes.contains_key(&single.node) {
                    let node = SimNode::empty(single.node, self.config.node_settings());
                    self.tick_phase.insert(single.node, self.rng.range(0, TIME_UNITS_PER_TICK));
                    self.nodes.insert(single.node, node);
                }
            }
        }
        self.flush(leader)
    }

    /// A random change that keeps 3 to 5 voters: add a learner, promote
    /// one, remove a voter, or swap a voter for a learner through a joint
    /// configuration.
    fn pick_change(&mut self, voters: &[NodeId], learners: &[NodeId]) -> ConfChange {
        let transition = match self.rng.range(0, 3) {
            0 => ConfChangeTransition::Auto,
            1 => ConfChangeTransition::JointAutoLeave,
            _ => ConfChangeTransition::JointExplicit,
        };
        let single = |kind, node| ConfChangeSingle { kind, node };
        let victim = *self.rng.pick(voters).expect("a leader has voters");
        let changes = match (learners, voters.len()) {
            (l, n) if l.len() < 2 && ((l.is_empty() && n <= 3) || self.rng.chance(400_000)) => {
                let id = NodeId(self.next_node_id);
                self.next_node_id += 1;
                vec![single(ConfChangeKind::AddLearner, id)]
            }
            // Replace two voters at once: the incoming majority can then be
            // disjoint from the outgoing one, which only joint consensus
            // (both majorities for commit and election) keeps safe.
            ([a, b, ..], n) if n >= 3 && self.rng.chance(500_000) => {
                let second = *self.rng.pick(voters).expect("a leader has voters");
                let second = if second == victim {
                    voters.iter().copied().find(|&v| v != victim).expect("3 voters")
                } else {
                    second
                };
                vec![
                    single(ConfChangeKind::AddVoter, *a),
                    single(ConfChangeKind::AddVoter, *b),
                    single(ConfChangeKind::RemoveNode, victim),
                    single(ConfChangeKind::RemoveNode, second),
                ]
            }
            ([learner, ..], n) if n < 5 && self.rng.chance(500_000) => vec![single(ConfChangeKind::AddVoter, *learner)],
            ([learner, ..], _) => {
                vec![single(ConfChangeKind::AddVoter, *learner), single(ConfChangeKind::RemoveNode, victim)]
            }
            ([], _) => vec![single(ConfChangeKind::RemoveNode, victim)],
        };
        let transition = if changes.len() > 1 && transition == ConfChangeTransition::Auto {
            ConfChangeTransition::JointAutoLeave
        } else {
            transition
        };
        ConfChange { transition, changes }
    }

    fn transfer_leadership(&mut self) -> Result<(), Violation> {
        let Some(leader) = self.leader() else { return Ok(()) };
        let raw = self.nodes.get_mut(&leader).expect("up").raw();
        let voters: Vec<NodeId> = raw.configuration().voters.ids().into_iter().filter(|&v| v != leader).collect();
        if let Some(&target) = self.rng.pick(&voters) {
            let raw = self.nodes.get_mut(&leader).expect("up").raw();
            if raw.transfer_leader(target).is_ok() {
                self.stats.transfers += 1;
                self.log(format!("leader {leader} transfers to {target}"));
            }
        }
        self.flush(leader)
    }

    // ---- healing and the final checks ----

    /// Ends the faults: heals every link and restarts every node.
    pub fn heal(&mut self) -> Result<(), Violation> {
        self.log("heal: all links up, all nodes restarted".into());
        self.chaos = false;
        self.blocked.clear();
        self.flapping = None;
        let down: Vec<NodeId> = self.nodes.iter().filter(|(_, n)| !n.is_up()).map(|(&id, _)| id).collect();
        for id in down {
            self.nodes.get_mut(&id).expect("exists").restart();
            self.flush(id)?;
        }
        Ok(())
    }

    /// Members of the configuration the leader has applied.
    pub fn members(&self, leader: NodeId) -> Vec<NodeId> {
        self.nodes[&leader]
            .conf_state
            .voters
            .iter()
            .chain(self.nodes[&leader].conf_state.learners.iter())
            .copied()
            .collect()
    }

    pub fn term_of(&self, id: NodeId) -> Term {
        self.nodes[&id].raw.as_ref().map_or(Term::ZERO, |r| r.status().hard_state.term)
    }

    pub fn describe_nodes(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|(id, node)| match &node.raw {
                None => format!("node {id}: down"),
                Some(raw) => {
                    let s = raw.status();
                    format!(
                        "node {id}: {:?} term={} vote={:?} leader={:?} commit={} applied={} log=[{}, {}] conf={:?} progress={:?}",
                        s.soft_state.role, s.hard_state.term, s.hard_state.vote, s.soft_state.leader,
                        s.hard_state.commit, s.applied, s.first_index, s.last_index, s.conf_state, s.progress
                    )
                }
            })
            .collect()
    }

    pub fn check_all_logs(&self) -> Result<(), Violation> {
        let logs: Vec<(NodeId, Vec<crate::raft::Entry>)> = self
            .nodes
            .iter()
            .filter_map(|(&id, n)| {
                let raw = n.raw.as_ref()?;
                let status = raw.status();
                raw.entries(status.first_index, status.last_index.next()).ok().map(|e| (id, e))
            })
            .collect();
        check_log_matching(&logs)
    }

    pub fn is_joint_explicit(&self, leader: NodeId) -> bool {
        let conf = self.nodes[&leader].raw.as_ref().map(|r| r.configuration());
        conf.is_some_and(|c| c.voters.is_joint() && !c.auto_leave)
    }

    /// Leaves a joint configuration the test entered explicitly.
    pub fn leave_joint(&mut self, leader: NodeId) -> Result<(), Violation> {
        let raw = self.nodes.get_mut(&leader).expect("up").raw();
        if raw.propose_conf_change(ConfChange::leave_joint()).is_ok() {
            self.log(format!("leader {leader} leaves the joint configuration"));
        }
        self.flush(leader)
    }
}
