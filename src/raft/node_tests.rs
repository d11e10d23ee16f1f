//! `has_ready` and `check_invariants` are pure functions of the state: each
//! is tested here one condition at a time, by setting that state directly.

use super::*;
use crate::raft::log_store::MemoryLogStore;
use crate::raft::types::{MessageKind, SnapshotMetadata};

/// A follower of a three-voter group with entries 1..=3 of term 1, all
/// committed and applied, and no work left.
fn idle_follower() -> RawNode<MemoryLogStore> {
    let mut store = MemoryLogStore::new();
    let entries: Vec<Entry> = (1..=3).map(|i| Entry::new_normal(Term(1), LogIndex(i), Vec::new())).collect();
    store.append(&entries).unwrap();
    let mut config = Config::new(NodeId(2));
    config.applied = LogIndex(3);
    let hard_state = HardState { term: Term(1), vote: None, commit: LogIndex(3) };
    let node = RawNode::new(config, store, hard_state, &ConfState::with_voters([1, 2, 3])).unwrap();
    assert!(!node.has_ready());
    assert_eq!(node.id(), NodeId(2));
    node.check_invariants().unwrap();
    node
}

#[test]
fn each_kind_of_work_alone_makes_a_ready() {
    type Change = fn(&mut RawNode<MemoryLogStore>);
    let changes: [(&str, Change); 10] = [
        ("soft state", |n| n.raft.leader = Some(NodeId(1))),
        ("hard state", |n| n.raft.vote = Some(NodeId(3))),
        ("snapshot", |n| {
            let metadata = SnapshotMetadata { index: LogIndex(9), term: Term(1), conf_state: ConfState::default() };
            n.raft.log.restore(Snapshot { metadata, data: Vec::new() });
            n.previous_hard_state = n.raft.hard_state();
        }),
        ("entries", |n| {
            n.raft.log.append(&[Entry::new_normal(Term(1), LogIndex(4), Vec::new())]);
        }),
        ("messages", |n| n.raft.messages.push(Message::new(MessageKind::Heartbeat, NodeId(2), NodeId(1), Term(1)))),
        ("read states", |n| n.raft.read_states.push(ReadState { index: LogIndex(3), context: b"r".to_vec() })),
        ("dropped reads", |n| n.raft.dropped_reads.push(b"r".to_vec())),
        ("entries to send", |n| n.raft.entries_to_send = true),
        ("read round", |n| n.raft.read_round_pending = true),
        ("committed entries", |n| {
            n.raft.log.applied = LogIndex(2);
        }),
    ];
    for (what, change) in changes {
        let mut node = idle_follower();
        change(&mut node);
        assert!(node.has_ready(), "{what} alone is work");
    }
}

fn broken(change: impl FnOnce(&mut RawNode<MemoryLogStore>)) -> String {
    let mut node = idle_follower();
    change(&mut node);
    node.check_invariants().unwrap_err()
}

#[test]
fn every_written_invariant_is_checked() {
    assert_eq!(broken(|n| n.raft.log.committed = LogIndex(2)), "node 2: applied 3 > committed 2");
    assert_eq!(
        broken(|n| {
            n.raft.log.committed = LogIndex(4);
            n.raft.log.applied = LogIndex(3);
        }),
        "node 2: committed 4 > last index 3"
    );
    assert_eq!(broken(|n| n.raft.log.persisted = LogIndex(4)), "node 2: persisted 4 > last index 3");
    assert_eq!(
        broken(|n| n.raft.randomized_election_timeout = 9),
        "node 2: randomized election timeout 9 out of range"
    );
    assert_eq!(
        broken(|n| n.raft.randomized_election_timeout = 20),
        "node 2: randomized election timeout 20 out of range"
    );
    assert_eq!(
        broken(|n| n.raft.lead_transferee = Some(NodeId(3))),
        "node 2: a non-leader has a leadership transferee"
    );
    assert_eq!(
        broken(|n| {
            n.raft.role = Role::Candidate;
            n.raft.quiesced = true;
        }),
        "node 2: a quiesced Candidate"
    );
    assert_eq!(broken(|n| n.raft.role = Role::Leader), "node 2: a leader that does not know it leads");
    assert_eq!(
        broken(|n| {
            n.raft.tracker.config.learners.insert(NodeId(3));
        }),
        "node 2: node 3 is both a voter and a learner"
    );
    assert_eq!(
        broken(|n| {
            n.raft.tracker.progress.remove(&NodeId(3));
        }),
        "node 2: progress does not track exactly the members"
    );
    assert_eq!(
        broken(|n| {
            n.raft.role = Role::Leader;
            n.raft.leader = Some(NodeId(2));
            n.raft.tracker.progress.get_mut(&NodeId(1)).unwrap().matched = LogIndex(9);
        }),
        "node 2: progress of 1: matched 9 >= next 4"
    );
    assert_eq!(
        broken(|n| {
            n.raft.log.append(&[Entry::new_normal(Term(0), LogIndex(4), Vec::new())]);
        }),
        "node 2: term decreases at 4"
    );
}

#[test]
fn quiesced_leaders_and_followers_are_fine() {
    let mut node = idle_follower();
    node.raft.quiesced = true;
    assert_eq!(node.check_invariants(), Ok(()));
}

#[test]
fn only_the_last_64_entries_are_walked_for_contiguity() {
    let mut node = idle_follower();
    let entries: Vec<Entry> = (4..=100).map(|i| Entry::new_normal(Term(2), LogIndex(i), Vec::new())).collect();
    node.raft.log.append(&entries);
    assert_eq!(node.check_invariants(), Ok(()));
    node.raft.log.append(&[Entry::new_normal(Term(1), LogIndex(101), Vec::new())]);
    assert_eq!(node.check_invariants(), Err("node 2: term decreases at 101".to_string()));
    // A dip 70 entries back is outside the window: not walked (the
    // simulator checks whole logs separately, every 500 steps).
    let mut node = idle_follower();
    let dip = |i| Entry::new_normal(Term(if i == 10 { 0 } else { 2 }), LogIndex(i), Vec::new());
    node.raft.log.append(&(4..=80).map(dip).collect::<Vec<_>>());
    assert_eq!(node.check_invariants(), Ok(()));
}
