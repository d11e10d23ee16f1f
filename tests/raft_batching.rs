//! Batching for many groups per node: proposals between two Readies leave as
//! one append per follower, a new commit index rides on the next append or
//! heartbeat instead of an empty append per acknowledgement, and reads
//! between two Readies share one heartbeat round (tested in
//! raft_read_index.rs).

mod common;

use common::*;
use flotilla::raft::{LogIndex, MessageKind, NodeId, ProgressState, ProposalId, Term};

fn appends_to(messages: &[flotilla::raft::Message], to: u64) -> Vec<flotilla::raft::Message> {
    messages.iter().filter(|m| m.kind == MessageKind::AppendEntries && m.to.0 == to).cloned().collect()
}

#[test]
fn fifty_proposals_between_two_readies_go_out_as_one_append_per_follower() {
    let mut c = settled(&[1, 2, 3], plain_config);
    for i in 0..50u8 {
        c.node(1).propose(vec![i]).unwrap();
    }
    let ready = c.ready(1);
    assert_eq!(ready.entries.len(), 50);
    for follower in [2, 3] {
        let appends = appends_to(&ready.messages, follower);
        assert_eq!(appends.len(), 1, "follower {follower}");
        let expected: Vec<_> = (0..50u8).map(|i| ent_data(1, 2 + u64::from(i), &[i])).collect();
        assert_eq!(appends[0], append(1, follower, 1, (1, 1), 1, expected));
    }
    assert_eq!(ready.messages.len(), 2, "nothing else");
}

#[test]
fn propose_batch_appends_every_command_in_order_as_one_append() {
    let mut c = settled(&[1, 2, 3], plain_config);
    let ids = c.node(1).propose_batch(vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]).unwrap();
    let expected: Vec<_> = (2..5).map(|i| ProposalId { index: LogIndex(i), term: Term(1) }).collect();
    assert_eq!(ids, expected);
    assert_eq!(c.node(1).propose_batch(Vec::new()).unwrap(), Vec::new(), "an empty batch appends nothing");
    let ready = c.ready(1);
    let entries = vec![ent_data(1, 2, b"a"), ent_data(1, 3, b"b"), ent_data(1, 4, b"c")];
    assert_eq!(ready.entries, entries);
    assert_eq!(appends_to(&ready.messages, 2), vec![append(1, 2, 1, (1, 1), 1, entries)]);
}

#[test]
fn propose_batch_is_refused_like_a_single_proposal() {
    let mut c = settled(&[1, 2, 3], plain_config);
    let refused = c.node(2).propose_batch(vec![b"a".to_vec()]);
    assert_eq!(refused, Err(flotilla::raft::RaftError::NotLeader { hint: Some(NodeId(1)) }));
    assert!(!c.nodes[&2].has_ready());
}

#[test]
fn a_batch_larger_than_one_message_splits_by_size_only() {
    let mut c = settled(&[1, 2, 3], |id| {
        let mut config = plain_config(id);
        config.max_size_per_message_bytes = 100; // an entry of 10 bytes counts 34: two fit
        config
    });
    let commands: Vec<Vec<u8>> = (0..7u8).map(|i| vec![i; 10]).collect();
    c.node(1).propose_batch(commands).unwrap();
    let sizes: Vec<usize> = appends_to(&c.ready(1).messages, 2).iter().map(|m| m.entries.len()).collect();
    assert_eq!(sizes, vec![2, 2, 2, 1]);
}

#[test]
fn a_probing_follower_gets_one_append_for_a_batch_and_nothing_more_until_it_answers() {
    let mut c = settled(&[1, 2, 3], plain_config);
    c.node(1).report_unreachable(NodeId(2));
    for i in 0..10u8 {
        c.node(1).propose(vec![i]).unwrap();
    }
    assert_eq!(appends_to(&c.ready(1).messages, 2).len(), 1);
    c.node(1).propose(b"more".to_vec()).unwrap();
    assert!(appends_to(&c.ready(1).messages, 2).is_empty(), "the probe is unanswered");
}

/// Leader 1 with entry 2 sent to both followers and their acknowledgements
/// in hand (not yet stepped), `ticks` ticks after the last heartbeat.
fn acks_pending(ticks: usize) -> (Cluster, Vec<flotilla::raft::Message>) {
    let mut c = settled(&[1, 2, 3], plain_config);
    c.tick(1, 2); // a heartbeat round: heartbeat_elapsed is back at 0
    for _ in 0..ticks {
        c.node(1).tick();
    }
    c.node(1).propose(b"x".to_vec()).unwrap();
    let ready = c.ready(1);
    let mut acks = Vec::new();
    for append in ready.messages {
        let to = append.to.0;
        step(c.node(to), append);
        acks.extend(all_messages(&c.ready(to)));
    }
    (c, acks)
}

#[test]
fn acknowledgements_do_not_each_send_an_empty_append_to_every_follower() {
    let (mut c, acks) = acks_pending(0);
    for ack in acks {
        step(c.node(1), ack);
    }
    let ready = c.ready(1);
    assert_eq!(ready.hard_state.map(|h| h.commit), Some(LogIndex(2)));
    // The heartbeat went out this tick: without an append the followers
    // would wait a whole interval for the commit, so each gets exactly one.
    assert_eq!(appends_to(&ready.messages, 2), vec![append(1, 2, 1, (2, 1), 2, vec![])]);
    assert_eq!(appends_to(&ready.messages, 3), vec![append(1, 3, 1, (2, 1), 2, vec![])]);
    assert_eq!(ready.messages.len(), 2);
    assert!(c.ready(1).messages.is_empty(), "sent once, not again in the next Ready");
}

#[test]
fn a_new_commit_waits_for_the_heartbeat_when_it_is_due_sooner_than_an_interval() {
    let (mut c, acks) = acks_pending(1);
    for ack in acks {
        step(c.node(1), ack);
    }
    let ready = c.ready(1);
    assert_eq!(ready.hard_state.map(|h| h.commit), Some(LogIndex(2)));
    assert!(ready.messages.is_empty(), "the heartbeat one tick away carries the commit");
    c.node(1).tick();
    let beats: Vec<_> = c.ready(1).messages.iter().map(|m| (m.kind, m.to.0, m.commit.0)).collect();
    assert_eq!(beats, vec![(MessageKind::Heartbeat, 2, 2), (MessageKind::Heartbeat, 3, 2)]);
}

#[test]
fn a_new_commit_rides_on_the_next_batch_of_entries() {
    let (mut c, acks) = acks_pending(0);
    for ack in acks {
        step(c.node(1), ack);
    }
    c.node(1).propose(b"y".to_vec()).unwrap();
    let ready = c.ready(1);
    assert_eq!(appends_to(&ready.messages, 2), vec![append(1, 2, 1, (2, 1), 2, vec![ent_data(1, 3, b"y")])]);
    assert_eq!(ready.messages.len(), 2, "one append per follower, carrying the commit");
}

#[test]
fn a_follower_already_told_the_commit_gets_no_empty_append() {
    let (mut c, acks) = acks_pending(0);
    for ack in acks {
        step(c.node(1), ack);
    }
    // A heartbeat round after the commit, in the same turn, told both.
    c.node(1).tick();
    c.node(1).tick();
    let ready = c.ready(1);
    let kinds: Vec<_> = ready.messages.iter().map(|m| (m.kind, m.to.0, m.commit.0)).collect();
    assert_eq!(kinds, vec![(MessageKind::Heartbeat, 2, 2), (MessageKind::Heartbeat, 3, 2)]);
}

#[test]
fn a_caught_up_follower_in_probe_moves_to_replicate_on_a_heartbeat_answer() {
    let mut c = settled(&[1, 2, 3], plain_config);
    c.node(1).report_unreachable(NodeId(2));
    assert_eq!(progress_of(&c.nodes[&1], 2), (1, 2, ProgressState::Probe));
    step(c.node(1), msg(MessageKind::HeartbeatResponse, 2, 1, 1));
    assert_eq!(progress_of(&c.nodes[&1], 2), (1, 2, ProgressState::Replicate));
    // So the next proposals stream to it instead of waiting on a probe.
    c.node(1).propose(b"a".to_vec()).unwrap();
    c.ready(1);
    c.node(1).propose(b"b".to_vec()).unwrap();
    assert_eq!(appends_to(&c.ready(1).messages, 2).len(), 1);
    assert_eq!(progress_of(&c.nodes[&1], 2), (1, 4, ProgressState::Replicate));
}

#[test]
fn a_lagging_follower_in_probe_stays_in_probe_on_a_heartbeat_answer() {
    let mut c = settled(&[1, 2, 3], plain_config);
    c.isolate(2);
    c.propose(1, b"a");
    c.heal();
    c.node(1).report_unreachable(NodeId(2));
    step(c.node(1), msg(MessageKind::HeartbeatResponse, 2, 1, 1));
    assert_eq!(progress_of(&c.nodes[&1], 2), (1, 2, ProgressState::Probe));
    assert_eq!(appends_to(&c.ready(1).messages, 2), vec![append(1, 2, 1, (1, 1), 2, vec![ent_data(1, 2, b"a")])]);
}

#[test]
fn an_auto_leave_entry_goes_out_with_the_next_ready() {
    let mut c = settled(&[1, 2, 3], plain_config);
    let change = flotilla::raft::ConfChange {
        transition: flotilla::raft::ConfChangeTransition::JointAutoLeave,
        changes: vec![flotilla::raft::ConfChangeSingle {
            kind: flotilla::raft::ConfChangeKind::RemoveNode,
            node: NodeId(3),
        }],
    };
    c.node(1).propose_conf_change(change).unwrap();
    c.stabilize();
    let voters = c.nodes[&1].configuration().voters;
    assert!(!voters.is_joint(), "the leader left the joint configuration by itself");
    assert_eq!(voters.incoming, [1, 2].map(NodeId).into());
}
