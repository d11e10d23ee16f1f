//! Raft thesis §6.4 (linearizable reads): ReadIndex confirmed by a heartbeat
//! round, a new leader's reads held until it commits an entry of its term
//! (Redis-Raft #18), follower forwarding, and lease reads (§6.4.1), which
//! require check-quorum.

mod common;

use common::*;
use flotilla::raft::{
    Config, LogIndex, MemoryLogStore, MessageKind, NodeId, RaftError, RawNode, ReadMode, ReadState, Role,
};

fn read_state(index: u64, context: &[u8]) -> ReadState {
    ReadState { index: LogIndex(index), context: context.to_vec() }
}

fn heartbeat(from: u64, to: u64, term: u64, commit: u64, context: &[u8], lease_tick: u64) -> flotilla::raft::Message {
    let mut m = msg(MessageKind::Heartbeat, from, to, term);
    m.commit = LogIndex(commit);
    m.context = context.to_vec();
    m.lease_tick = lease_tick;
    m
}

/// Delivers `beat` to its follower and returns the follower's answer.
fn answer(c: &mut Cluster, beat: &flotilla::raft::Message) -> flotilla::raft::Message {
    let to = beat.to.0;
    step(c.node(to), beat.clone());
    let out = drain(c.node(to));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].kind, MessageKind::HeartbeatResponse);
    assert_eq!(out[0].context, beat.context, "the context is echoed");
    out[0].clone()
}

// §6.4: the leader records its commit index as the read index, confirms it is
// still leader with a heartbeat round carrying the read's context, and
// releases the ReadState only once a majority acknowledged.
#[test]
fn leader_read_index_waits_for_heartbeat_quorum() {
    let mut c = settled(&[1, 2, 3], plain_config);
    c.node(1).read_index(b"r1".to_vec()).unwrap();
    let ready = c.ready(1);
    assert!(ready.read_states.is_empty(), "no answer before the heartbeat round");
    assert_eq!(ready.messages, vec![heartbeat(1, 2, 1, 1, b"r1", 0), heartbeat(1, 3, 1, 1, b"r1", 0)]);

    // An acknowledgement of an unrelated heartbeat does not confirm the read.
    step(c.node(1), msg(MessageKind::HeartbeatResponse, 2, 1, 1));
    assert!(c.ready(1).read_states.is_empty());

    let ack = answer(&mut c, &ready.messages[0]);
    step(c.node(1), ack);
    assert_eq!(c.ready(1).read_states, vec![read_state(1, b"r1")]);

    let late = answer(&mut c, &ready.messages[1]);
    step(c.node(1), late);
    assert!(c.ready(1).read_states.is_empty(), "each read is answered once");
}

// §6.4: the read index is the commit index when the request arrived, even if
// more commits before the confirmation.
#[test]
fn read_index_is_commit_at_request_time() {
    let mut c = settled(&[1, 2, 3], plain_config);
    c.node(1).read_index(b"r".to_vec()).unwrap();
    let beats = c.ready(1).messages;
    c.propose(1, b"x");
    assert_eq!(commit(&c.nodes[&1]), 2);
    let ack = answer(&mut c, &beats[0]);
    step(c.node(1), ack);
    assert_eq!(c.ready(1).read_states, vec![read_state(1, b"r")]);
}

// §6.4: reads queued in order are all confirmed by an acknowledgement of a
// later heartbeat round.
#[test]
fn later_confirmation_releases_earlier_reads_in_order() {
    let mut c = settled(&[1, 2, 3], plain_config);
    c.node(1).read_index(b"a".to_vec()).unwrap();
    let first = c.ready(1).messages;
    c.node(1).read_index(b"b".to_vec()).unwrap();
    let beats = c.ready(1).messages;
    let contexts: Vec<_> = first.iter().chain(&beats).map(|m| (m.to.0, m.context.clone())).collect();
    assert_eq!(contexts, vec![(2, b"a".to_vec()), (3, b"a".to_vec()), (2, b"b".to_vec()), (3, b"b".to_vec())]);
    let ack = answer(&mut c, &beats[1]);
    step(c.node(1), ack);
    assert_eq!(c.ready(1).read_states, vec![read_state(1, b"a"), read_state(1, b"b")]);
}

// Batching: reads that arrive between two Readies share one heartbeat round,
// carrying the newest context; its acknowledgement answers all of them.
#[test]
fn reads_between_two_readies_share_one_heartbeat_round() {
    let mut c = settled(&[1, 2, 3], plain_config);
    for context in [b"a", b"b", b"c"] {
        c.node(1).read_index(context.to_vec()).unwrap();
    }
    let beats = c.ready(1).messages;
    assert_eq!(beats, vec![heartbeat(1, 2, 1, 1, b"c", 0), heartbeat(1, 3, 1, 1, b"c", 0)]);
    let ack = answer(&mut c, &beats[0]);
    step(c.node(1), ack);
    assert_eq!(c.ready(1).read_states, vec![read_state(1, b"a"), read_state(1, b"b"), read_state(1, b"c")]);
}

// Redis-Raft #18 / thesis §6.4 step 1: a new leader's commit index may be
// stale until it commits an entry of its own term, so it holds reads until
// then; the read index is then at least its no-op.
#[test]
fn new_leader_holds_reads_until_it_commits_in_its_term() {
    let log = log_with_terms(&[1, 1]);
    let mut leader = node_with_log(plain_config(1), &[1, 2, 3], &log, hs(1, None, 0));
    leader.campaign();
    persist_and_advance(&mut leader);
    step(&mut leader, msg(MessageKind::RequestVoteResponse, 2, 1, 2));
    assert_eq!(role(&leader), Role::Leader);
    leader.read_index(b"r".to_vec()).unwrap();
    let ready = persist_and_advance(&mut leader);
    assert!(ready.read_states.is_empty());
    assert!(of_kind(&ready.messages, MessageKind::Heartbeat).is_empty(), "no read round before the commit");

    step(&mut leader, append_ok(2, 1, 2, 3));
    let ready = persist_and_advance(&mut leader);
    assert_eq!(ready.hard_state.map(|h| h.commit), Some(LogIndex(3)));
    assert!(ready.read_states.is_empty());
    let beats = of_kind(&ready.messages, MessageKind::Heartbeat);
    assert_eq!(beats, vec![heartbeat(1, 2, 2, 3, b"r", 0), heartbeat(1, 3, 2, 0, b"r", 0)]);

    let mut ack = msg(MessageKind::HeartbeatResponse, 3, 1, 2);
    ack.context = b"r".to_vec();
    step(&mut leader, ack);
    assert_eq!(persist_and_advance(&mut leader).read_states, vec![read_state(3, b"r")]);
}

// §6.4: a follower forwards the request to its leader, which runs the
// heartbeat round and answers with ReadIndexResponse; the follower then
// exposes the ReadState.
#[test]
fn follower_forwards_read_index_to_leader() {
    let mut c = settled(&[1, 2, 3], plain_config);
    c.node(2).read_index(b"f".to_vec()).unwrap();
    let ready = c.ready(2);
    let mut forward = msg(MessageKind::ReadIndex, 2, 1, 1);
    forward.context = b"f".to_vec();
    assert_eq!(all_messages(&ready), vec![forward.clone()]);

    step(c.node(1), forward);
    let beats = c.ready(1).messages;
    assert_eq!(beats, vec![heartbeat(1, 2, 1, 1, b"f", 0), heartbeat(1, 3, 1, 1, b"f", 0)]);
    let ack = answer(&mut c, &beats[1]);
    step(c.node(1), ack);
    let ready = c.ready(1);
    assert!(ready.read_states.is_empty(), "the leader answers the follower, not itself");
    let mut response = msg(MessageKind::ReadIndexResponse, 1, 2, 1);
    response.index = LogIndex(1);
    response.context = b"f".to_vec();
    assert_eq!(ready.messages, vec![response.clone()]);

    step(c.node(2), response);
    assert_eq!(c.ready(2).read_states, vec![read_state(1, b"f")]);
}

// §6.4: without a known leader there is nobody to confirm a read.
#[test]
fn read_index_without_leader_fails() {
    let mut node = new_node(plain_config(1), &[1, 2, 3]);
    assert_eq!(node.read_index(b"r".to_vec()), Err(RaftError::NotLeader { hint: None }));
    node.campaign();
    assert_eq!(node.read_index(b"r".to_vec()), Err(RaftError::NotLeader { hint: None }));
}

// §6.4: a single voter is a majority by itself: once its no-op commits it
// answers at once, without any heartbeat.
#[test]
fn single_voter_answers_after_committing_in_its_term() {
    let mut node = new_node(plain_config(1), &[1]);
    node.campaign();
    node.read_index(b"r".to_vec()).unwrap();
    let ready = persist_and_advance(&mut node);
    assert!(ready.read_states.is_empty(), "the no-op is not committed yet");
    let ready = persist_and_advance(&mut node);
    assert_eq!(ready.read_states, vec![read_state(1, b"r")]);
    assert!(all_messages(&ready).is_empty());
}

fn lease_config(id: u64) -> Config {
    let mut config = plain_config(id);
    config.check_quorum = true;
    config.read_mode = ReadMode::Lease { clock_drift_bound_ticks: 2 };
    config
}

/// A lease-mode group with a settled leader that has just had one heartbeat
/// acknowledged by everyone. Returns the cluster, the leader and the tick at
/// which that heartbeat was sent.
fn lease_cluster() -> (Cluster, u64, u64) {
    let mut c = Cluster::new(&[1, 2, 3], lease_config);
    for _ in 0..60 {
        c.tick_all(1);
        if c.leaders().len() == 1 {
            break;
        }
    }
    let leader = c.leaders()[0];
    for _ in 0..4 {
        c.node(leader).tick();
        let ready = c.process(leader);
        if let Some(beat) = of_kind(&ready.messages, MessageKind::Heartbeat).first() {
            let sent_at = beat.lease_tick;
            c.stabilize();
            return (c, leader, sent_at);
        }
        c.stabilize();
    }
    panic!("no heartbeat");
}

// §6.4.1: while a majority acknowledged a heartbeat within the lease
// (election timeout minus the clock-drift bound), the leader answers at once,
// with no heartbeat round; once the lease runs out, it falls back to ReadIndex.
#[test]
fn lease_read_answers_immediately_only_while_lease_holds() {
    let (mut c, l, sent_at) = lease_cluster();
    let index = commit(&c.nodes[&l]);
    c.node(l).read_index(b"fast".to_vec()).unwrap();
    let ready = c.ready(l);
    assert_eq!(ready.read_states, vec![read_state(index, b"fast")]);
    assert!(ready.messages.iter().all(|m| m.context.is_empty()), "no read round under a lease");

    c.isolate(l);
    // The lease spans 10 - 2 = 8 ticks from the acknowledged heartbeat.
    let ticks_left = 7;
    c.tick(l, ticks_left);
    c.node(l).read_index(b"edge".to_vec()).unwrap();
    assert_eq!(c.ready(l).read_states, vec![read_state(index, b"edge")], "tick {}", sent_at + 7);

    c.tick(l, 1);
    assert_eq!(role(&c.nodes[&l]), Role::Leader, "still leader, but the lease is over");
    c.node(l).read_index(b"late".to_vec()).unwrap();
    let ready = c.ready(l);
    assert!(ready.read_states.is_empty(), "no lease read after expiry");
    let read_round: Vec<_> = ready.messages.iter().filter(|m| m.context == b"late").map(|m| m.kind).collect();
    assert_eq!(read_round, vec![MessageKind::Heartbeat, MessageKind::Heartbeat]);
}

// §6.4.1: lease reads depend on followers refusing votes while in lease, i.e.
// on check-quorum; the configuration is rejected without it, and the drift
// bound must leave a positive lease.
#[test]
fn lease_reads_require_check_quorum() {
    let mut config = lease_config(1);
    assert_eq!(config.validate(), Ok(()));
    config.check_quorum = false;
    assert!(matches!(config.validate(), Err(RaftError::InvalidConfig(_))));
    let node = RawNode::new(config, MemoryLogStore::new(), Default::default(), &Default::default());
    assert!(matches!(node.err(), Some(RaftError::InvalidConfig(_))));

    let mut config = lease_config(1);
    config.read_mode = ReadMode::Lease { clock_drift_bound_ticks: 10 };
    assert!(matches!(config.validate(), Err(RaftError::InvalidConfig(_))));
}

// §6.4.1: under lease reads a restarted voter refuses votes for its first
// election timeout, since before the restart it may have acknowledged a
// leader whose lease still runs.
#[test]
fn lease_mode_voter_refuses_votes_right_after_start() {
    // A seed whose first randomized timeout is above 10, so the node does
    // not campaign at tick 10.
    let seed = (1..100u64).find(|&s| 10 + splitmix64(&mut s.clone()) % 10 > 10).unwrap();
    let mut config = lease_config(1);
    config.random_seed = seed;
    let mut node = new_node(config, &[1, 2, 3]);
    let request = msg(MessageKind::RequestVote, 2, 1, 1);
    step(&mut node, request.clone());
    assert!(!node.has_ready(), "vote ignored during the restart guard");
    for _ in 0..10 {
        node.tick();
    }
    assert_eq!(role(&node), Role::Follower);
    step(&mut node, request);
    assert_eq!(drain(&mut node), vec![msg(MessageKind::RequestVoteResponse, 1, 2, 1)]);
    assert_eq!(node.status().hard_state.vote, Some(NodeId(2)));
}

// §6.4.1: a lease starts with an acknowledged heartbeat; a leader that has
// none (just elected, early in its clock) runs a ReadIndex round instead.
#[test]
fn a_leader_without_acknowledged_heartbeats_has_no_lease() {
    let mut leader = new_node(lease_config(1), &[1, 2, 3]);
    leader.campaign();
    persist_and_advance(&mut leader);
    step(&mut leader, msg(MessageKind::RequestVoteResponse, 2, 1, 1));
    persist_and_advance(&mut leader);
    step(&mut leader, append_ok(2, 1, 1, 1));
    persist_and_advance(&mut leader);
    assert_eq!(commit(&leader), 1);
    leader.read_index(b"r".to_vec()).unwrap();
    let ready = persist_and_advance(&mut leader);
    assert!(ready.read_states.is_empty(), "no acknowledged heartbeat: no lease");
    assert_eq!(of_kind(&ready.messages, MessageKind::Heartbeat).len(), 2);
}

// §6.4: if a read's heartbeat round is lost, the next periodic heartbeat
// carries the newest pending context, and its acknowledgement confirms it.
#[test]
fn a_lost_read_round_is_retried_by_the_next_heartbeat() {
    let mut c = settled(&[1, 2, 3], plain_config);
    c.node(1).read_index(b"r".to_vec()).unwrap();
    c.ready(1); // the round is lost
    c.node(1).tick();
    c.node(1).tick();
    let beats = c.ready(1).messages;
    assert_eq!(beats, vec![heartbeat(1, 2, 1, 1, b"r", 2), heartbeat(1, 3, 1, 1, b"r", 2)]);
    let ack = answer(&mut c, &beats[0]);
    step(c.node(1), ack);
    assert_eq!(c.ready(1).read_states, vec![read_state(1, b"r")]);
    // With nothing pending, heartbeats carry no context.
    c.node(1).tick();
    c.node(1).tick();
    assert!(c.ready(1).messages.iter().all(|m| m.context.is_empty()));
}
