//! The runtime-facing contract of src/raft/mod.rs beyond the paper: which
//! messages may leave before the write, reads dropped on a leadership change,
//! a failed store failing the group (not the process), a conf change that
//! cannot apply, per-group election jitter, and a lease voided by TimeoutNow.

mod common;

use std::cell::Cell;
use std::rc::Rc;

use common::*;
use flotilla::raft::{
    ConfChange, ConfChangeKind, ConfState, Config, Entry, GroupId, LogIndex, LogStore, MemoryLogStore, MessageKind,
    NodeId, RaftError, RawNode, ReadMode, ReadState, Role, Snapshot, StorageError, Term,
};

#[test]
fn only_messages_that_promise_nothing_durable_may_leave_before_the_write() {
    use MessageKind::*;
    let early = [
        AppendEntries,
        Heartbeat,
        InstallSnapshot,
        TimeoutNow,
        ReadIndex,
        ReadIndexResponse,
        RequestPreVote,
        RequestPreVoteResponse,
        HeartbeatResponse,
    ];
    let after_write = [AppendEntriesResponse, RequestVote, RequestVoteResponse];
    for kind in early {
        assert!(kind.may_send_before_persist(), "{kind:?}");
    }
    for kind in after_write {
        assert!(!kind.may_send_before_persist(), "{kind:?}");
    }
}

#[test]
fn a_forwarded_read_and_a_pre_vote_do_not_wait_for_the_write() {
    let mut c = settled(&[1, 2, 3], plain_config);
    c.node(2).read_index(b"r".to_vec()).unwrap();
    let ready = c.ready(2);
    assert_eq!(ready.messages.iter().map(|m| m.kind).collect::<Vec<_>>(), vec![MessageKind::ReadIndex]);
    assert!(ready.persisted_messages.is_empty());

    let mut config = plain_config(1);
    config.pre_vote = true;
    let mut node = new_node(config, &[1, 2, 3]);
    node.campaign();
    let ready = node.ready();
    assert_eq!(ready.messages.iter().map(|m| m.kind).collect::<Vec<_>>(), vec![MessageKind::RequestPreVote; 2]);
    assert!(ready.persisted_messages.is_empty());
    assert!(!ready.must_sync(), "a pre-campaign changes nothing durable");
}

fn read_state(index: u64, context: &[u8]) -> ReadState {
    ReadState { index: LogIndex(index), context: context.to_vec() }
}

#[test]
fn a_leader_that_steps_down_reports_its_pending_reads_dropped() {
    let mut c = settled(&[1, 2, 3], plain_config);
    c.node(1).read_index(b"mine".to_vec()).unwrap();
    let mut forwarded = msg(MessageKind::ReadIndex, 2, 1, 1);
    forwarded.context = b"theirs".to_vec();
    step(c.node(1), forwarded);
    c.ready(1); // the heartbeat round is lost
    step(c.node(1), msg(MessageKind::AppendEntries, 3, 1, 2));
    let ready = c.ready(1);
    assert_eq!(role(&c.nodes[&1]), Role::Follower);
    assert_eq!(ready.dropped_reads, vec![b"mine".to_vec()], "node 2 drops its own read");
    assert!(ready.read_states.is_empty());
    assert!(c.ready(1).dropped_reads.is_empty(), "reported once");
}

#[test]
fn a_new_leader_reports_reads_held_for_its_first_commit_dropped_when_it_loses() {
    let log = log_with_terms(&[1, 1]);
    let mut leader = node_with_log(plain_config(1), &[1, 2, 3], &log, hs(1, None, 0));
    leader.campaign();
    persist_and_advance(&mut leader);
    step(&mut leader, msg(MessageKind::RequestVoteResponse, 2, 1, 2));
    leader.read_index(b"held".to_vec()).unwrap();
    persist_and_advance(&mut leader);
    step(&mut leader, msg(MessageKind::Heartbeat, 3, 1, 3));
    assert_eq!(persist_and_advance(&mut leader).dropped_reads, vec![b"held".to_vec()]);
}

#[test]
fn a_follower_reports_forwarded_reads_dropped_when_its_leader_changes() {
    let mut c = settled(&[1, 2, 3], plain_config);
    c.node(2).read_index(b"f".to_vec()).unwrap();
    c.ready(2);
    step(c.node(2), msg(MessageKind::Heartbeat, 3, 2, 2));
    let ready = c.ready(2);
    assert_eq!(leader(&c.nodes[&2]), Some(3));
    assert_eq!(ready.dropped_reads, vec![b"f".to_vec()]);
    // A late answer from the old leader (older term) is ignored, and even at
    // the same term a dropped read is never answered twice.
    let mut late = msg(MessageKind::ReadIndexResponse, 3, 2, 2);
    late.index = LogIndex(1);
    late.context = b"f".to_vec();
    step(c.node(2), late);
    assert!(c.ready(2).read_states.is_empty());
}

#[test]
fn a_follower_answers_only_reads_it_is_waiting_for() {
    let mut c = settled(&[1, 2, 3], plain_config);
    c.node(2).read_index(b"f".to_vec()).unwrap();
    c.ready(2);
    let mut response = msg(MessageKind::ReadIndexResponse, 1, 2, 1);
    response.index = LogIndex(1);
    response.context = b"f".to_vec();
    step(c.node(2), response.clone());
    assert_eq!(c.ready(2).read_states, vec![read_state(1, b"f")]);
    step(c.node(2), response);
    assert!(c.ready(2).read_states.is_empty(), "a duplicate answer is not a second read");
}

#[test]
fn forgetting_the_leader_drops_the_reads_forwarded_to_it() {
    let mut c = settled(&[1, 2, 3], |id| {
        let mut config = plain_config(id);
        config.check_quorum = true;
        config
    });
    c.node(2).read_index(b"a".to_vec()).unwrap();
    c.node(2).read_index(b"b".to_vec()).unwrap();
    c.ready(2);
    c.node(2).forget_leader();
    let ready = c.ready(2);
    assert_eq!(ready.dropped_reads, vec![b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(leader(&c.nodes[&2]), None);
    assert_eq!(c.node(2).read_index(b"c".to_vec()), Err(RaftError::NotLeader { hint: None }));
}

/// A log store whose reads fail while `broken` is set, as a disk does.
struct FailingStore {
    inner: MemoryLogStore,
    broken: Rc<Cell<bool>>,
}

impl FailingStore {
    fn check(&self) -> Result<(), StorageError> {
        if self.broken.get() {
            return Err(StorageError::Store("read error on the raft log".into()));
        }
        Ok(())
    }
}

impl LogStore for FailingStore {
    fn entries(&self, low: LogIndex, high: LogIndex, max_size_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        self.check()?;
        self.inner.entries(low, high, max_size_bytes)
    }
    fn term(&self, index: LogIndex) -> Result<Term, StorageError> {
        self.check()?;
        self.inner.term(index)
    }
    fn first_index(&self) -> LogIndex {
        self.inner.first_index()
    }
    fn last_index(&self) -> LogIndex {
        self.inner.last_index()
    }
    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        self.check()?;
        self.inner.snapshot()
    }
}

fn failing_follower() -> (RawNode<FailingStore>, Rc<Cell<bool>>) {
    let mut inner = MemoryLogStore::new();
    inner.append(&log_with_terms(&[1, 1])).unwrap();
    let broken = Rc::new(Cell::new(false));
    let store = FailingStore { inner, broken: broken.clone() };
    let node = RawNode::new(plain_config(2), store, hs(1, None, 1), &ConfState::with_voters([1, 2, 3])).unwrap();
    (node, broken)
}

#[test]
fn a_store_read_error_fails_the_group_not_the_process() {
    let (mut node, broken) = failing_follower();
    broken.set(true);
    let failure = StorageError::Store("read error on the raft log".into());
    // The follower must read its log to check the append.
    let result = node.step(append(1, 2, 1, (2, 1), 2, vec![ent(1, 3)]));
    assert_eq!(result, Err(RaftError::Storage(failure.clone())));
    assert_eq!(node.failure(), Some(&failure));
    assert!(!node.has_ready(), "nothing it did after the failure is handed out");
    let ready = node.ready();
    assert!(ready.entries.is_empty() && ready.messages.is_empty() && ready.persisted_messages.is_empty());
    node.advance();

    // Every later input is refused with the same error; a tick does nothing.
    broken.set(false);
    assert_eq!(node.step(msg(MessageKind::Heartbeat, 1, 2, 1)), Err(RaftError::Storage(failure.clone())));
    assert_eq!(node.propose(b"x".to_vec()), Err(RaftError::Storage(failure.clone())));
    assert_eq!(node.propose_batch(vec![b"x".to_vec()]), Err(RaftError::Storage(failure.clone())));
    assert_eq!(node.read_index(b"r".to_vec()), Err(RaftError::Storage(failure.clone())));
    assert_eq!(node.transfer_leader(NodeId(1)), Err(RaftError::Storage(failure.clone())));
    let change = ConfChange::single(ConfChangeKind::AddLearner, NodeId(4));
    assert_eq!(node.propose_conf_change(change.clone()), Err(RaftError::Storage(failure.clone())));
    assert_eq!(node.apply_conf_change(&change), Err(RaftError::Storage(failure.clone())));
    for _ in 0..30 {
        node.tick();
    }
    node.campaign();
    node.forget_leader();
    assert!(!node.quiesce(|_| true));
    assert!(!node.can_quiesce(|_| true));
    assert!(!node.has_ready(), "a failed group never campaigns");
    assert_eq!(node.status().hard_state.term, Term(1));
}

#[test]
fn a_store_that_fails_while_committed_entries_are_read_yields_an_empty_ready() {
    let (mut node, broken) = failing_follower();
    node.step(append(1, 2, 1, (2, 1), 2, vec![])).unwrap();
    assert!(node.has_ready());
    broken.set(true);
    let ready = node.ready();
    assert!(ready.committed_entries.is_empty() && ready.hard_state.is_none());
    node.advance();
    assert!(node.failure().is_some());
    assert_eq!(node.status().applied, LogIndex(0), "nothing was applied");
}

#[test]
fn a_store_that_fails_at_start_refuses_to_open() {
    let mut inner = MemoryLogStore::new();
    inner.append(&log_with_terms(&[1])).unwrap();
    let store = FailingStore { inner, broken: Rc::new(Cell::new(true)) };
    let result = RawNode::new(plain_config(2), store, hs(1, None, 0), &ConfState::with_voters([1, 2, 3]));
    assert!(matches!(result.err(), Some(RaftError::Storage(StorageError::Store(_)))));
}

#[test]
fn a_conf_change_that_cannot_apply_leaves_the_configuration_alone() {
    let mut c = settled(&[1, 2, 3], plain_config);
    let before = c.nodes[&2].configuration();
    // Leaving a joint configuration that is not joint: every replica fails
    // the same way, applies the entry as a no-op and keeps its configuration.
    let result = c.node(2).apply_conf_change(&ConfChange::leave_joint());
    assert!(matches!(result, Err(RaftError::InvalidConfChange(_))));
    assert_eq!(c.nodes[&2].configuration(), before);
    let removes_all = ConfChange {
        transition: flotilla::raft::ConfChangeTransition::JointExplicit,
        changes: [1, 2, 3]
            .map(|n| flotilla::raft::ConfChangeSingle { kind: ConfChangeKind::RemoveNode, node: NodeId(n) })
            .to_vec(),
    };
    assert!(matches!(c.node(1).apply_conf_change(&removes_all), Err(RaftError::InvalidConfChange(_))));
    assert_eq!(c.nodes[&1].configuration(), before);
    assert_eq!(role(&c.nodes[&1]), Role::Leader);
}

#[test]
fn an_outgoing_voter_cannot_also_be_a_learner() {
    let conf = ConfState {
        voters: [1, 2].map(NodeId).into(),
        voters_outgoing: [1, 2, 3].map(NodeId).into(),
        learners: [3].map(NodeId).into(),
        ..Default::default()
    };
    let result = RawNode::new(plain_config(1), MemoryLogStore::new(), hs(0, None, 0), &conf);
    assert_eq!(result.err(), Some(RaftError::InvalidConfig("node 3 is both an outgoing voter and a learner".into())));
}

/// Ticks a fresh follower until it campaigns; returns the tick count.
fn election_ticks(config: Config) -> u32 {
    let mut node = new_node(config, &[1, 2, 3]);
    for tick in 1..=40 {
        node.tick();
        if node.has_ready() {
            return tick;
        }
    }
    panic!("no campaign within 40 ticks");
}

#[test]
fn one_nodes_groups_spread_their_elections_over_the_randomized_window() {
    let mut counts = [0u32; 20];
    for group in 0..1000 {
        let ticks = election_ticks(Config::for_group(NodeId(1), GroupId(group)));
        assert!((10..20).contains(&ticks), "group {group} campaigned at tick {ticks}");
        counts[ticks as usize] += 1;
    }
    // 100 per tick on average; a seed that ignored the group would put all
    // 1000 on one tick.
    for (tick, &count) in counts.iter().enumerate().skip(10) {
        assert!((50..160).contains(&count), "tick {tick}: {count} groups ({counts:?})");
    }
}

#[test]
fn a_groups_replicas_on_different_nodes_get_different_jitter() {
    let seeds: Vec<u64> = (1..=5).map(|node| Config::for_group(NodeId(node), GroupId(7)).random_seed).collect();
    let mut distinct = seeds.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 5, "{seeds:?}");
    assert_ne!(
        Config::for_group(NodeId(1), GroupId(2)).random_seed,
        Config::for_group(NodeId(2), GroupId(1)).random_seed
    );
    assert_eq!(Config::new(NodeId(3)).random_seed, 3, "without a group the seed is the node id");
    let group_zero: Vec<u64> = (1..=3).map(|node| Config::for_group(NodeId(node), GroupId(0)).random_seed).collect();
    assert!(group_zero[0] != group_zero[1] && group_zero[1] != group_zero[2], "{group_zero:?}");
    assert_eq!(Config::for_group(NodeId(3), GroupId(9)).id, NodeId(3));
}

fn lease_config(id: u64) -> Config {
    let mut config = plain_config(id);
    config.check_quorum = true;
    config.read_mode = ReadMode::Lease { clock_drift_bound_ticks: 2 };
    config
}

/// §3.10 + §6.4.1: a TimeoutNow the leader sent lets its target win with votes
/// that ignore leases; even when the transfer seems to have failed (it timed
/// out), the old leader must not serve a lease read for the rest of its term,
/// or a late TimeoutNow elects a leader that commits writes the old leader's
/// "lease" read would miss.
#[test]
fn after_timeout_now_the_leader_serves_no_lease_read_for_the_rest_of_its_term() {
    let mut c = Cluster::new(&[1, 2, 3], lease_config);
    let l = c.elect_by_ticking();
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|&id| id != l).collect();
    let (target, witness) = (others[0], others[1]);
    let index = commit(&c.nodes[&l]);
    c.node(l).read_index(b"before".to_vec()).unwrap();
    assert_eq!(c.ready(l).read_states, vec![read_state(index, b"before")], "a valid lease");

    c.node(l).transfer_leader(NodeId(target)).unwrap();
    let timeout_now = of_kind(&c.ready(l).messages, MessageKind::TimeoutNow);
    assert_eq!(timeout_now.len(), 1, "the target is up to date: TimeoutNow at once (and it is delayed)");
    // The transfer times out after an election timeout; the leader keeps
    // leading with fresh acknowledgements from both followers.
    c.tick(l, 10);
    assert_eq!(role(&c.nodes[&l]), Role::Leader);
    assert_eq!(c.nodes[&l].status().lead_transferee, None);
    c.node(l).read_index(b"after".to_vec()).unwrap();
    let ready = c.ready(l);
    assert!(ready.read_states.is_empty(), "no lease read after TimeoutNow");
    let round: Vec<_> = ready.messages.iter().filter(|m| m.context == b"after").cloned().collect();
    assert_eq!(round.len(), 2, "a ReadIndex round instead");

    // The late TimeoutNow arrives: the target wins the next term with the
    // witness's vote, which ignores the lease, and commits a write.
    step(c.node(target), timeout_now[0].clone());
    c.cut.insert((target, l));
    c.cut.insert((l, target));
    c.stabilize();
    assert_eq!(role(&c.nodes[&target]), Role::Leader);
    c.propose(target, b"w");
    assert_eq!(commit(&c.nodes[&target]), index + 2);

    // The old leader's read round reaches the witness, now in the new term:
    // the old leader steps down and reports the read dropped, never answered
    // with the stale index.
    let to_witness = round.into_iter().find(|m| m.to.0 == witness).unwrap();
    step(c.node(witness), to_witness);
    for message in all_messages(&c.ready(witness)) {
        step(c.node(l), message);
    }
    let ready = c.ready(l);
    assert!(ready.read_states.is_empty());
    assert_eq!(ready.dropped_reads, vec![b"after".to_vec()]);
    assert_eq!(role(&c.nodes[&l]), Role::Follower);
}

#[test]
fn a_new_term_restores_the_lease() {
    let mut c = Cluster::new(&[1, 2, 3], lease_config);
    let l = c.elect_by_ticking();
    let target = if l == 1 { 2 } else { 1 };
    c.node(l).transfer_leader(NodeId(target)).unwrap();
    c.stabilize();
    assert_eq!(role(&c.nodes[&target]), Role::Leader);
    c.tick(target, 2);
    c.node(target).read_index(b"r".to_vec()).unwrap();
    assert_eq!(c.ready(target).read_states.len(), 1, "the new leader's lease is its own");
}

#[test]
fn a_restarted_node_with_committed_entries_to_apply_has_a_ready_with_only_those() {
    let mut config = plain_config(2);
    config.applied = LogIndex(1);
    let mut node = node_with_log(config, &[1, 2, 3], &log_with_terms(&[1, 1, 1]), hs(1, None, 3));
    assert!(node.has_ready());
    let ready = node.ready();
    assert_eq!(ready.committed_entries, log_with_terms(&[1, 1, 1])[1..].to_vec());
    assert!(ready.messages.is_empty() && ready.persisted_messages.is_empty() && ready.entries.is_empty());
    assert_eq!((ready.hard_state, ready.soft_state), (None, None));
    node.advance();
    assert!(!node.has_ready());
    assert_eq!(applied(&node), 3);
}
