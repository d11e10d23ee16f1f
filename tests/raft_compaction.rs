//! Raft paper §7 (log compaction): the leader sends InstallSnapshot to a
//! follower that needs compacted entries; the follower resets its log to the
//! snapshot; the leader's progress moves Snapshot -> Probe/Replicate.

mod common;

use common::*;
use flotilla::raft::{
    ConfState, LogIndex, MemoryLogStore, MessageKind, NodeId, ProgressState, RawNode, Role, Snapshot, SnapshotMetadata,
    Term,
};

fn snapshot(index: u64, term: u64, voters: &[u64], data: &[u8]) -> Snapshot {
    Snapshot {
        metadata: SnapshotMetadata {
            index: LogIndex(index),
            term: Term(term),
            conf_state: ConfState::with_voters(voters.iter().copied()),
        },
        data: data.to_vec(),
    }
}

fn install(from: u64, to: u64, term: u64, snap: Snapshot) -> flotilla::raft::Message {
    let mut m = msg(MessageKind::InstallSnapshot, from, to, term);
    m.snapshot = Some(snap);
    m
}

/// Node 1 of {1, 2, 3}: entries 1..=7 of term 1, compacted through a
/// snapshot at 5, elected in term 2 (no-op 8:2 persisted).
fn compacted_leader() -> Node {
    let mut store = MemoryLogStore::new();
    store.append(&log_with_terms(&[1; 7])).unwrap();
    store.create_snapshot(snapshot(5, 1, &[1, 2, 3], b"state@5")).unwrap();
    store.compact(LogIndex(5)).unwrap();
    let mut config = plain_config(1);
    config.applied = LogIndex(7);
    let mut leader = RawNode::new(config, store, hs(1, None, 7), &ConfState::with_voters([1, 2, 3])).unwrap();
    assert_eq!(leader.status().first_index, LogIndex(6));
    leader.campaign();
    persist_and_advance(&mut leader);
    step(&mut leader, msg(MessageKind::RequestVoteResponse, 3, 1, 2));
    assert_eq!(role(&leader), Role::Leader);
    let ready = persist_and_advance(&mut leader);
    assert_eq!(ready.messages[0], append(1, 2, 2, (7, 1), 7, vec![ent(2, 8)]));
    leader
}

/// The compacted leader after node 2 (empty log) rejected its probe.
fn leader_sending_snapshot() -> Node {
    let mut leader = compacted_leader();
    step(&mut leader, append_reject(2, 1, 2, 7, 0, 1));
    let ready = persist_and_advance(&mut leader);
    assert_eq!(ready.messages, vec![install(1, 2, 2, snapshot(5, 1, &[1, 2, 3], b"state@5"))]);
    leader
}

// §7: the leader sends InstallSnapshot to a follower that lags so far that
// the entries it needs were discarded; its progress enters Snapshot state.
#[test]
fn leader_sends_snapshot_when_entries_are_compacted() {
    let leader = leader_sending_snapshot();
    assert_eq!(progress_of(&leader, 2).2, ProgressState::Snapshot);
}

// Snapshot state pauses appends to that follower until the snapshot is
// reported or answered; the other followers are unaffected.
#[test]
fn snapshot_state_pauses_appends() {
    let mut leader = leader_sending_snapshot();
    leader.propose(b"x".to_vec()).unwrap();
    let ready = persist_and_advance(&mut leader);
    assert!(ready.messages.iter().all(|m| m.to.0 != 2), "nothing for node 2 while its snapshot is in flight");
    assert_eq!(progress_of(&leader, 2).2, ProgressState::Snapshot);
}

// §7: a follower that receives a snapshot covering more than its log
// discards its log; the Ready carries the snapshot to install, and after it
// the log starts right after the snapshot (first_index = index + 1).
#[test]
fn follower_installs_snapshot_and_resets_log() {
    let conflicting = log_with_terms(&[1, 1, 1, 2, 2, 2, 2]);
    let mut follower = node_with_log(plain_config(2), &[1, 2, 3], &conflicting, hs(2, None, 3));
    let snap = snapshot(5, 1, &[1, 2, 3], b"state@5");
    step(&mut follower, install(1, 2, 2, snap.clone()));
    let ready = persist_and_advance(&mut follower);
    assert_eq!(ready.snapshot, Some(snap));
    assert!(ready.entries.is_empty());
    assert!(ready.committed_entries.is_empty(), "the snapshot replaces the state machine");
    assert_eq!(ready.hard_state, Some(hs(2, None, 5)));
    assert!(ready.messages.is_empty());
    assert_eq!(ready.persisted_messages, vec![append_ok(2, 1, 2, 5)]);
    let status = follower.status();
    assert_eq!((status.first_index, status.last_index), (LogIndex(6), LogIndex(5)));
    assert_eq!((status.applied, status.hard_state.commit), (LogIndex(5), LogIndex(5)));
    assert_eq!(follower.term_at(LogIndex(5)), Some(Term(1)));
    assert_eq!(log_terms(&follower), Vec::<u64>::new());

    // The log continues from the snapshot.
    step(&mut follower, append(1, 2, 2, (5, 1), 6, vec![ent(1, 6), ent(2, 7)]));
    let ready = persist_and_advance(&mut follower);
    assert_eq!(ready.committed_entries, vec![ent(1, 6)]);
    assert_eq!(log_terms(&follower), vec![1, 2]);
}

// §7: "if the follower receives a snapshot that describes a prefix of its
// log, log entries covered by the snapshot are deleted but entries following
// the snapshot are retained" — here: nothing is installed, the commit index
// learns the snapshot's index.
#[test]
fn snapshot_matching_log_prefix_only_advances_commit() {
    let mut follower = node_with_log(plain_config(2), &[1, 2, 3], &log_with_terms(&[1; 7]), hs(1, None, 3));
    step(&mut follower, install(1, 2, 2, snapshot(5, 1, &[1, 2, 3], b"state@5")));
    let ready = persist_and_advance(&mut follower);
    assert_eq!(ready.snapshot, None);
    assert_eq!(ready.hard_state, Some(hs(2, None, 5)));
    assert_eq!(ready.persisted_messages, vec![append_ok(2, 1, 2, 5)]);
    assert_eq!(log_terms(&follower), vec![1; 7]);
}

// §7: a snapshot at or below the follower's commit index is stale: ignored,
// answered with the commit index.
#[test]
fn stale_snapshot_is_ignored() {
    let mut follower = node_with_log(plain_config(2), &[1, 2, 3], &log_with_terms(&[1; 7]), hs(2, None, 6));
    step(&mut follower, install(1, 2, 2, snapshot(5, 1, &[1, 2, 3], b"state@5")));
    let ready = persist_and_advance(&mut follower);
    assert_eq!(ready.snapshot, None);
    assert_eq!(ready.persisted_messages, vec![append_ok(2, 1, 2, 6)]);
    assert_eq!(follower.status().first_index, LogIndex(1));
}

// Snapshot -> Replicate: the follower's answer to the snapshot (match = the
// snapshot index, past which the leader still has entries) resumes
// replication right after the snapshot.
#[test]
fn snapshot_response_moves_progress_to_replicate() {
    let mut leader = leader_sending_snapshot();
    step(&mut leader, append_ok(2, 1, 2, 5));
    assert_eq!(progress_of(&leader, 2), (5, 9, ProgressState::Replicate));
    let ready = persist_and_advance(&mut leader);
    assert_eq!(ready.messages, vec![append(1, 2, 2, (5, 1), 7, vec![ent(1, 6), ent(1, 7), ent(2, 8)])]);
}

// Snapshot -> Probe: a delivered snapshot resumes probing after it, but the
// leader waits for the follower's answer before sending.
#[test]
fn report_snapshot_delivered_moves_progress_to_probe() {
    let mut leader = leader_sending_snapshot();
    leader.report_snapshot(NodeId(2), true);
    assert_eq!(progress_of(&leader, 2), (0, 6, ProgressState::Probe));
    assert!(!leader.has_ready());
    step(&mut leader, append_ok(2, 1, 2, 5));
    assert_eq!(progress_of(&leader, 2), (5, 9, ProgressState::Replicate));
    let ready = persist_and_advance(&mut leader);
    assert_eq!(ready.messages, vec![append(1, 2, 2, (5, 1), 7, vec![ent(1, 6), ent(1, 7), ent(2, 8)])]);
}

// A failed snapshot send returns to Probe; once the follower shows it is
// alive, the leader sends the snapshot again.
#[test]
fn report_snapshot_failed_retries_snapshot() {
    let mut leader = leader_sending_snapshot();
    leader.report_snapshot(NodeId(2), false);
    assert_eq!(progress_of(&leader, 2), (0, 1, ProgressState::Probe));
    assert!(!leader.has_ready(), "paused until the follower answers");
    step(&mut leader, msg(MessageKind::HeartbeatResponse, 2, 1, 2));
    let ready = persist_and_advance(&mut leader);
    assert_eq!(ready.messages, vec![install(1, 2, 2, snapshot(5, 1, &[1, 2, 3], b"state@5"))]);
    assert_eq!(progress_of(&leader, 2).2, ProgressState::Snapshot);
}

// §7 end to end: a follower that was away while the leader compacted is
// brought back by a snapshot, then by ordinary appends.
#[test]
fn lagging_follower_recovers_through_snapshot() {
    let mut c = settled(&[1, 2, 3], plain_config);
    c.isolate(3);
    for data in [b"a", b"b", b"c", b"d", b"e"] {
        c.propose(1, data);
    }
    assert_eq!(applied(&c.nodes[&1]), 6);
    let conf = ConfState::with_voters([1, 2, 3]);
    let snap = Snapshot {
        metadata: SnapshotMetadata { index: LogIndex(6), term: Term(1), conf_state: conf },
        data: b"a,b,c,d,e".to_vec(),
    };
    c.node(1).store_mut().create_snapshot(snap.clone()).unwrap();
    c.node(1).store_mut().compact(LogIndex(6)).unwrap();
    assert_eq!(c.nodes[&1].status().first_index, LogIndex(7));

    c.heal();
    c.delivered.clear();
    c.tick(1, 2);
    let snapshots = of_kind(&c.delivered, MessageKind::InstallSnapshot);
    assert_eq!(snapshots, vec![install(1, 3, 1, snap)]);
    let status = c.nodes[&3].status();
    assert_eq!((status.first_index, status.applied, status.hard_state.commit), (LogIndex(7), LogIndex(6), LogIndex(6)));
    assert_eq!(progress_of(&c.nodes[&1], 3), (6, 7, ProgressState::Replicate));

    c.propose(1, b"f");
    assert_eq!(c.applied_data(3), vec![b"f".to_vec()], "only entries after the snapshot are applied");
    assert_eq!(log_terms(&c.nodes[&3]), vec![1]);
}

// §7: compaction is invisible to followers that are already past it.
#[test]
fn compaction_does_not_disturb_caught_up_followers() {
    let mut c = settled(&[1, 2, 3], plain_config);
    c.propose(1, b"a");
    let snap = snapshot(2, 1, &[1, 2, 3], b"a");
    c.node(1).store_mut().create_snapshot(snap).unwrap();
    c.node(1).store_mut().compact(LogIndex(2)).unwrap();
    c.node(1).propose(b"b".to_vec()).unwrap();
    let ready = c.ready(1);
    assert_eq!(
        ready.messages,
        vec![
            append(1, 2, 1, (2, 1), 2, vec![ent_data(1, 3, b"b")]),
            append(1, 3, 1, (2, 1), 2, vec![ent_data(1, 3, b"b")]),
        ]
    );
}

// §7 restart: a node restarting from a snapshot plus later entries applies
// only the entries after the snapshot, even if it claims a lower applied
// index.
#[test]
fn restart_from_snapshot_applies_only_later_entries() {
    let mut store = MemoryLogStore::new();
    store.apply_snapshot(snapshot(5, 1, &[1, 2, 3], b"state@5")).unwrap();
    store.append(&[ent(1, 6), ent(2, 7)]).unwrap();
    let mut node = RawNode::new(plain_config(1), store, hs(2, None, 7), &ConfState::with_voters([1, 2, 3])).unwrap();
    assert_eq!(node.status().applied, LogIndex(5));
    let ready = persist_and_advance(&mut node);
    assert_eq!(ready.committed_entries, vec![ent(1, 6), ent(2, 7)]);
    assert_eq!(ready.snapshot, None);
    assert_eq!(applied(&node), 7);
}

// §7: a snapshot and the entries that follow it may arrive before the
// application handles a Ready; the Ready then carries both, the snapshot is
// installed first, and only entries after it are applied later.
#[test]
fn ready_with_snapshot_and_following_entries() {
    let mut follower = new_node(plain_config(2), &[1, 2, 3]);
    let snap = snapshot(5, 1, &[1, 2, 3], b"state@5");
    step(&mut follower, install(1, 2, 2, snap.clone()));
    step(&mut follower, append(1, 2, 2, (5, 1), 6, vec![ent(2, 6), ent(2, 7)]));
    let ready = persist_and_advance(&mut follower);
    assert_eq!(ready.snapshot, Some(snap));
    assert_eq!(ready.entries, vec![ent(2, 6), ent(2, 7)]);
    assert!(ready.committed_entries.is_empty(), "nothing is applied before the snapshot is installed");
    assert_eq!(ready.persisted_messages, vec![append_ok(2, 1, 2, 5), append_ok(2, 1, 2, 7)]);
    let ready = persist_and_advance(&mut follower);
    assert_eq!(ready.committed_entries, vec![ent(2, 6)]);
    assert_eq!(log_terms(&follower), vec![2, 2]);
    assert_eq!(follower.status().first_index, LogIndex(6));
}

// etcd does the same: a snapshot whose configuration does not include the
// receiver (taken before it was added) would leave it in a group it is not a
// member of. It is refused; the leader's next snapshot will include it.
#[test]
fn a_snapshot_that_leaves_the_receiver_out_is_refused() {
    let conf = ConfState { learners: [4].map(NodeId).into(), ..ConfState::with_voters([1, 2, 3]) };
    let mut newcomer = node_with_conf(plain_config(4), &ConfState::default(), &[], hs(0, None, 0));
    step(&mut newcomer, install(1, 4, 2, snapshot(5, 1, &[1, 2, 3], b"state@5")));
    let ready = persist_and_advance(&mut newcomer);
    assert_eq!(ready.snapshot, None);
    assert_eq!(ready.persisted_messages, vec![append_ok(4, 1, 2, 0)]);
    assert_eq!(newcomer.status().first_index, LogIndex(1));

    let mut with_it = snapshot(6, 1, &[1, 2, 3], b"state@6");
    with_it.metadata.conf_state = conf.clone();
    step(&mut newcomer, install(1, 4, 2, with_it.clone()));
    let ready = persist_and_advance(&mut newcomer);
    assert_eq!(ready.snapshot, Some(with_it));
    assert_eq!(newcomer.status().conf_state, conf);
}

// A follower whose snapshot is on its way answers an older append (a late
// acknowledgement below the leader's first index): the leader still cannot
// send it entries, so it stays in Snapshot state.
#[test]
fn an_acknowledgement_below_the_first_index_keeps_the_snapshot_state() {
    let mut leader = leader_sending_snapshot();
    step(&mut leader, append_ok(2, 1, 2, 3));
    assert_eq!(progress_of(&leader, 2), (3, 4, ProgressState::Snapshot));
    assert!(persist_and_advance(&mut leader).messages.is_empty());
    // Right below the first index (6) is enough: entries from 6 on are held.
    step(&mut leader, append_ok(2, 1, 2, 5));
    assert_eq!(progress_of(&leader, 2), (5, 9, ProgressState::Replicate));
}
