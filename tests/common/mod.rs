//! Shared helpers for the Raft paper tests: node construction over
//! `MemoryLogStore`, a `persist_and_advance` that follows the ordering
//! contract of `src/raft/mod.rs`, and a small in-memory cluster that
//! delivers messages between nodes until quiet. No part of the core is mocked.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use flotilla::raft::{
    ConfState, Config, Entry, EntryPayload, HardState, LogIndex, LogStore, MemoryLogStore, Message, MessageKind,
    NodeId, RawNode, Ready, Role, Term,
};

pub type Node = RawNode<MemoryLogStore>;

/// A config with neither pre-vote nor check-quorum, so that elections follow
/// the plain §5.2 rules; tests switch the extensions on where they check them.
pub fn plain_config(id: u64) -> Config {
    let mut config = Config::new(NodeId(id));
    config.pre_vote = false;
    config.check_quorum = false;
    config
}

/// A normal entry with empty data (what preset logs are made of).
pub fn ent(term: u64, index: u64) -> Entry {
    Entry::new_normal(Term(term), LogIndex(index), Vec::new())
}

/// A normal entry carrying `data`.
pub fn ent_data(term: u64, index: u64, data: &[u8]) -> Entry {
    Entry::new_normal(Term(term), LogIndex(index), data.to_vec())
}

/// A log whose entry `i + 1` has term `terms[i]`.
pub fn log_with_terms(terms: &[u64]) -> Vec<Entry> {
    terms.iter().enumerate().map(|(i, &t)| ent(t, i as u64 + 1)).collect()
}

pub fn msg(kind: MessageKind, from: u64, to: u64, term: u64) -> Message {
    Message::new(kind, NodeId(from), NodeId(to), Term(term))
}

pub fn hs(term: u64, vote: Option<u64>, commit: u64) -> HardState {
    HardState { term: Term(term), vote: vote.map(NodeId), commit: LogIndex(commit) }
}

/// A member restarting with `log` in its store, `hard_state` and `conf`.
pub fn node_with_conf(config: Config, conf: &ConfState, log: &[Entry], hard_state: HardState) -> Node {
    let mut store = MemoryLogStore::new();
    store.append(log).expect("preset log");
    let node = RawNode::new(config, store, hard_state, conf).expect("valid node");
    node.check_invariants().expect("invariants at start");
    node
}

/// A member of a group of `voters` with `log` and `hard_state`.
pub fn node_with_log(config: Config, voters: &[u64], log: &[Entry], hard_state: HardState) -> Node {
    node_with_conf(config, &ConfState::with_voters(voters.iter().copied()), log, hard_state)
}

/// A fresh member of a group of `voters` (empty log, term 0).
pub fn new_node(config: Config, voters: &[u64]) -> Node {
    node_with_log(config, voters, &[], HardState::default())
}

/// Handles one Ready exactly as the ordering contract says: install the
/// snapshot, append the entries (the hard state lives in the Ready; the
/// memory store keeps none), apply the committed entries (calling
/// `apply_conf_change` for conf changes), then `advance`. Returns the Ready
/// so the test can inspect it; its messages are NOT sent anywhere.
pub fn persist_and_advance(node: &mut Node) -> Ready {
    let ready = node.ready();
    if let Some(snapshot) = &ready.snapshot {
        node.store_mut().apply_snapshot(snapshot.clone()).expect("install snapshot");
    }
    node.store_mut().append(&ready.entries).expect("append entries");
    let commit = node.status().hard_state.commit;
    for entry in &ready.committed_entries {
        assert!(entry.index <= commit, "applying {} beyond commit {commit}", entry.index);
        assert!(
            node.store().last_index() >= entry.index,
            "applying {} that is not durable (last durable {})",
            entry.index,
            node.store().last_index()
        );
        if let EntryPayload::ConfChange(change) = &entry.payload {
            node.apply_conf_change(change).expect("committed conf change applies");
        }
    }
    node.advance();
    node.check_invariants().unwrap_or_else(|e| panic!("invariant broken: {e}"));
    ready
}

/// Every message of a Ready: the ones that may go early, then the ones that
/// wait for the write.
pub fn all_messages(ready: &Ready) -> Vec<Message> {
    ready.messages.iter().chain(ready.persisted_messages.iter()).cloned().collect()
}

pub fn of_kind(messages: &[Message], kind: MessageKind) -> Vec<Message> {
    messages.iter().filter(|m| m.kind == kind).cloned().collect()
}

/// Persists and advances `node` and returns all messages of that Ready.
pub fn drain(node: &mut Node) -> Vec<Message> {
    all_messages(&persist_and_advance(node))
}

/// Steps a message, panicking on error.
pub fn step(node: &mut Node, message: Message) {
    node.step(message).expect("step");
}

pub fn role(node: &Node) -> Role {
    node.status().soft_state.role
}

pub fn leader(node: &Node) -> Option<u64> {
    node.status().soft_state.leader.map(|l| l.0)
}

pub fn term(node: &Node) -> u64 {
    node.status().hard_state.term.0
}

pub fn commit(node: &Node) -> u64 {
    node.status().hard_state.commit.0
}

pub fn applied(node: &Node) -> u64 {
    node.status().applied.0
}

pub fn last_index(node: &Node) -> u64 {
    node.status().last_index.0
}

/// Terms of the entries `[first_index, last_index]` as the node sees them.
pub fn log_terms(node: &Node) -> Vec<u64> {
    let status = node.status();
    node.entries(status.first_index, status.last_index.next()).expect("entries").iter().map(|e| e.term.0).collect()
}

/// An in-memory group: every node is a real `RawNode<MemoryLogStore>`.
pub struct Cluster {
    pub nodes: BTreeMap<u64, Node>,
    /// Entries each node applied, in order.
    pub applied: BTreeMap<u64, Vec<Entry>>,
    /// Messages waiting to be delivered.
    pub queue: VecDeque<Message>,
    /// Directed links (from, to) that drop everything.
    pub cut: BTreeSet<(u64, u64)>,
    /// Every message delivered so far, for assertions on traffic.
    pub delivered: Vec<Message>,
}

impl Cluster {
    /// A group of `ids`, all voters, configured by `make_config`.
    pub fn new(ids: &[u64], make_config: impl Fn(u64) -> Config) -> Cluster {
        Cluster::with_conf(ids, &ConfState::with_voters(ids.iter().copied()), make_config)
    }

    /// Nodes `ids` starting with configuration `conf` (which may name
    /// learners, or leave some ids out for nodes that join later).
    pub fn with_conf(ids: &[u64], conf: &ConfState, make_config: impl Fn(u64) -> Config) -> Cluster {
        let mut cluster = Cluster {
            nodes: BTreeMap::new(),
            applied: BTreeMap::new(),
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            delivered: Vec::new(),
        };
        for &id in ids {
            cluster.add_node(id, conf, make_config(id));
        }
        cluster
    }

    pub fn add_node(&mut self, id: u64, conf: &ConfState, config: Config) {
        self.nodes.insert(id, node_with_conf(config, conf, &[], HardState::default()));
        self.applied.insert(id, Vec::new());
    }

    pub fn node(&mut self, id: u64) -> &mut Node {
        self.nodes.get_mut(&id).expect("no such node")
    }

    /// Handles one Ready of `id` and returns it; its messages are NOT queued.
    pub fn ready(&mut self, id: u64) -> Ready {
        let node = self.nodes.get_mut(&id).expect("no such node");
        // What the state machine already reflects (entries or a snapshot).
        let mut last = node.status().applied;
        let ready = persist_and_advance(node);
        let applied = self.applied.get_mut(&id).expect("no such node");
        for entry in &ready.committed_entries {
            assert_eq!(entry.index, last.next(), "node {id} applies out of order");
            last = entry.index;
            applied.push(entry.clone());
        }
        ready
    }

    /// Handles one Ready of `id` and queues its messages.
    pub fn process(&mut self, id: u64) -> Ready {
        let ready = self.ready(id);
        self.queue.extend(all_messages(&ready));
        ready
    }

    pub fn send(&mut self, messages: impl IntoIterator<Item = Message>) {
        self.queue.extend(messages);
    }

    /// Cuts every link to and from `id`.
    pub fn isolate(&mut self, id: u64) {
        for &other in self.nodes.keys() {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Processes every node's Ready and delivers messages until nothing is
    /// left to do. Messages over cut links or to unknown nodes are dropped.
    pub fn stabilize(&mut self) {
        for _round in 0..10_000 {
            let ids: Vec<u64> = self.nodes.keys().copied().collect();
            for id in ids {
                if self.nodes[&id].has_ready() {
                    self.process(id);
                }
            }
            if self.queue.is_empty() {
                if self.nodes.values().any(|n| n.has_ready()) {
                    continue;
                }
                return;
            }
            while let Some(message) = self.queue.pop_front() {
                let (from, to) = (message.from.0, message.to.0);
                if self.cut.contains(&(from, to)) || !self.nodes.contains_key(&to) {
                    continue;
                }
                self.delivered.push(message.clone());
                self.node(to).step(message).expect("step");
            }
        }
        panic!("cluster did not stabilize");
    }

    /// Ticks `id` `n` times, stabilizing after each tick.
    pub fn tick(&mut self, id: u64, n: usize) {
        for _ in 0..n {
            self.node(id).tick();
            self.stabilize();
        }
    }

    /// Ticks every node `n` times, stabilizing after each round.
    pub fn tick_all(&mut self, n: usize) {
        for _ in 0..n {
            let ids: Vec<u64> = self.nodes.keys().copied().collect();
            for id in ids {
                self.node(id).tick();
            }
            self.stabilize();
        }
    }

    /// Makes `id` campaign and runs the election to the end.
    pub fn elect(&mut self, id: u64) {
        self.node(id).campaign();
        self.stabilize();
        assert_eq!(role(&self.nodes[&id]), Role::Leader, "node {id} did not win");
    }

    /// Ticks every node until exactly one leads and every node applied its
    /// no-op, then one heartbeat round more; returns the leader. For
    /// check-quorum groups, whose voters refuse a forced campaign at first.
    pub fn elect_by_ticking(&mut self) -> u64 {
        for _ in 0..100 {
            self.tick_all(1);
            let leaders = self.leaders();
            if leaders.len() == 1 && self.nodes.values().all(|n| applied(n) == commit(&self.nodes[&leaders[0]])) {
                self.tick_all(2);
                return leaders[0];
            }
        }
        panic!("no leader within 100 ticks");
    }

    /// Proposes `data` on `id` and stabilizes.
    pub fn propose(&mut self, id: u64, data: &[u8]) {
        self.node(id).propose(data.to_vec()).expect("propose");
        self.stabilize();
    }

    /// Data of the normal, non-empty entries `id` applied.
    pub fn applied_data(&self, id: u64) -> Vec<Vec<u8>> {
        self.applied[&id]
            .iter()
            .filter_map(|e| match &e.payload {
                EntryPayload::Normal(data) if !data.is_empty() => Some(data.clone()),
                _ => None,
            })
            .collect()
    }

    /// The current leader as seen by a majority of nodes in `Leader` role, if any.
    pub fn leaders(&self) -> Vec<u64> {
        self.nodes.iter().filter(|(_, n)| role(n) == Role::Leader).map(|(&id, _)| id).collect()
    }
}

/// Splitmix64 as the core draws its election jitter; the tests use it to
/// predict the randomized timeout exactly from the seed.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A settled group of `ids` (plain config) where node 1 leads term 1 and its
/// no-op at index 1 is committed and applied everywhere.
pub fn settled(ids: &[u64], make_config: impl Fn(u64) -> Config) -> Cluster {
    let mut c = Cluster::new(ids, make_config);
    c.elect(1);
    for (&id, node) in &c.nodes {
        assert_eq!((commit(node), applied(node), term(node)), (1, 1, 1), "node {id} not settled");
    }
    c
}

/// An AppendEntries of `term` from `from` to `to` with prevLogIndex/Term,
/// leader commit and entries.
pub fn append(from: u64, to: u64, term: u64, prev: (u64, u64), commit: u64, entries: Vec<Entry>) -> Message {
    let mut m = msg(MessageKind::AppendEntries, from, to, term);
    m.index = LogIndex(prev.0);
    m.log_term = Term(prev.1);
    m.commit = LogIndex(commit);
    m.entries = entries;
    m
}

/// A successful AppendEntriesResponse matching up to `index`.
pub fn append_ok(from: u64, to: u64, term: u64, index: u64) -> Message {
    let mut m = msg(MessageKind::AppendEntriesResponse, from, to, term);
    m.index = LogIndex(index);
    m
}

/// A rejected AppendEntriesResponse for prevLogIndex `index`, with the
/// follower's conflicting term and the first index it holds of that term.
pub fn append_reject(from: u64, to: u64, term: u64, index: u64, conflict_term: u64, hint: u64) -> Message {
    let mut m = msg(MessageKind::AppendEntriesResponse, from, to, term);
    m.index = LogIndex(index);
    m.reject = true;
    m.log_term = Term(conflict_term);
    m.reject_hint = LogIndex(hint);
    m
}

/// The progress (matched, next, state) the leader keeps for `peer`.
pub fn progress_of(node: &Node, peer: u64) -> (u64, u64, flotilla::raft::ProgressState) {
    let status = node.status();
    let (_, matched, next, state) =
        *status.progress.iter().find(|p| p.0 == NodeId(peer)).unwrap_or_else(|| panic!("no progress for {peer}"));
    (matched.0, next.0, state)
}
