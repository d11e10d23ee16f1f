//! Quiescence (src/raft/quiesce.rs): an idle group stops its clock so a node
//! can host thousands of them; any input wakes it; a follower whose leader's
//! node is gone forgets the leader (etcd's MsgForgetLeader); a quiesced
//! leader never serves a lease read.

mod common;

use common::*;
use flotilla::raft::{
    ConfChange, ConfChangeKind, ConfState, Config, LogIndex, Message, MessageKind, NodeId, ReadMode, ReadState, Role,
};

fn everyone_live(_: NodeId) -> bool {
    true
}

/// The quiesce heartbeat `from` sends `to`: the leader's last entry and the
/// commit the follower may sleep with.
fn quiesce_beat(from: u64, to: u64, term: u64, last: (u64, u64), commit: u64, lease_tick: u64) -> Message {
    let mut m = msg(MessageKind::Heartbeat, from, to, term);
    m.quiesce = true;
    m.index = LogIndex(last.0);
    m.log_term = flotilla::raft::Term(last.1);
    m.commit = LogIndex(commit);
    m.lease_tick = lease_tick;
    m
}

fn quiet_config(id: u64) -> Config {
    let mut config = plain_config(id);
    config.check_quorum = true;
    config.pre_vote = true;
    config
}

/// A settled group of three (node 1 leads term 1, everything applied) that
/// has quiesced: every node's clock is stopped.
fn quiesced_group(make_config: impl Fn(u64) -> Config) -> Cluster {
    let mut c = settled(&[1, 2, 3], make_config);
    assert!(c.node(1).quiesce(everyone_live));
    c.stabilize();
    for (id, node) in &c.nodes {
        assert!(node.is_quiesced(), "node {id} is not quiesced");
    }
    c
}

#[test]
fn an_idle_leader_quiesces_and_its_caught_up_followers_follow_without_answering() {
    let mut c = settled(&[1, 2, 3], plain_config);
    assert!(c.node(1).can_quiesce(everyone_live));
    assert!(c.node(1).quiesce(everyone_live));
    assert!(c.nodes[&1].is_quiesced());
    let ready = c.ready(1);
    assert_eq!(ready.messages, vec![quiesce_beat(1, 2, 1, (1, 1), 1, 0), quiesce_beat(1, 3, 1, (1, 1), 1, 0)]);
    assert!(ready.persisted_messages.is_empty());

    step(c.node(2), ready.messages[0].clone());
    assert!(c.nodes[&2].is_quiesced());
    assert!(!c.nodes[&2].has_ready(), "a sleeping follower does not answer: that would wake the leader");
    // Quiescing again is a no-op that says the group is asleep.
    assert!(c.node(1).quiesce(everyone_live));
    assert!(!c.nodes[&1].has_ready(), "no second round of quiesce heartbeats");
}

#[test]
fn a_quiesced_group_does_nothing_until_an_input_arrives() {
    let mut c = quiesced_group(plain_config);
    for node in c.nodes.values() {
        assert!(!node.has_ready());
        assert!(node.status().quiesced);
    }
    // The runtime does not tick it; a tick would wake it (tested below).
    c.stabilize();
    assert!(c.delivered.iter().all(|m| m.kind != MessageKind::HeartbeatResponse));
}

#[test]
fn a_follower_quiesces_with_the_leaders_commit() {
    // Node 2 holds the whole log but has not heard of the last commit yet:
    // the quiesce heartbeat carries it.
    let mut c = settled(&[1, 2, 3], plain_config);
    c.propose(1, b"x");
    let mut config = plain_config(2);
    config.applied = LogIndex(1);
    let mut follower = node_with_log(config, &[1, 2, 3], &log_with_terms(&[1, 1]), hs(1, None, 1));
    step(&mut follower, quiesce_beat(1, 2, 1, (2, 1), 2, 0));
    assert!(follower.is_quiesced());
    assert_eq!(commit(&follower), 2);
    let ready = persist_and_advance(&mut follower);
    assert_eq!(ready.committed_entries.len(), 1, "it applies what the heartbeat committed");
    assert!(all_messages(&ready).is_empty());
}

#[test]
fn a_follower_without_the_whole_log_or_commit_answers_and_stays_awake() {
    let log = log_with_terms(&[1, 1]);
    // Shorter log than the leader's.
    let mut short = node_with_log(plain_config(2), &[1, 2, 3], &log[..1], hs(1, None, 1));
    step(&mut short, quiesce_beat(1, 2, 1, (2, 1), 2, 0));
    assert!(!short.is_quiesced());
    assert_eq!(drain(&mut short), vec![msg(MessageKind::HeartbeatResponse, 2, 1, 1)]);
    // Longer log (a stale entry the leader does not have).
    let long_log = log_with_terms(&[1, 1, 1]);
    let mut long = node_with_log(plain_config(2), &[1, 2, 3], &long_log, hs(1, None, 1));
    step(&mut long, quiesce_beat(1, 2, 1, (2, 1), 2, 0));
    assert!(!long.is_quiesced());
    // Same last index, other term.
    let mut other = node_with_log(plain_config(2), &[1, 2, 3], &log_with_terms(&[1, 2]), hs(2, None, 1));
    step(&mut other, quiesce_beat(1, 2, 2, (2, 1), 2, 0));
    assert!(!other.is_quiesced());
    // The whole log, but a commit below it (the leader did not know it had it).
    let mut behind = node_with_log(plain_config(2), &[1, 2, 3], &log, hs(1, None, 1));
    step(&mut behind, quiesce_beat(1, 2, 1, (2, 1), 1, 0));
    assert!(!behind.is_quiesced());
    assert_eq!(drain(&mut behind), vec![msg(MessageKind::HeartbeatResponse, 2, 1, 1)]);
}

#[test]
fn a_follower_answering_a_quiesce_heartbeat_wakes_the_leader_which_catches_it_up() {
    let mut c = settled(&[1, 2, 3], plain_config);
    c.isolate(3);
    c.propose(1, b"x");
    c.heal();
    assert!(!c.node(1).can_quiesce(everyone_live), "node 3 lacks entry 2");
    // The caller thinks node 3 is down: the leader quiesces without it.
    assert!(c.node(1).quiesce(|id| id != NodeId(3)));
    let ready = c.ready(1);
    assert_eq!(ready.messages[1], quiesce_beat(1, 3, 1, (2, 1), 1, 0), "node 3 gets only what it holds");
    step(c.node(3), ready.messages[1].clone());
    let answer = drain(c.node(3));
    assert_eq!(answer, vec![msg(MessageKind::HeartbeatResponse, 3, 1, 1)]);
    step(c.node(1), answer[0].clone());
    assert!(!c.nodes[&1].is_quiesced(), "the answer woke the leader");
    // It streamed entry 2 to node 3 before (lost): it resumes after it,
    // learns from the rejection, and sends the entry again.
    let to3 = of_kind(&c.process(1).messages, MessageKind::AppendEntries);
    assert_eq!(to3, vec![append(1, 3, 1, (2, 1), 2, vec![])]);
    c.stabilize();
    assert_eq!(progress_of(&c.nodes[&1], 3), (2, 3, flotilla::raft::ProgressState::Replicate));
    assert_eq!(log_terms(&c.nodes[&3]), vec![1, 1]);
}

#[test]
fn a_leader_with_anything_pending_does_not_quiesce() {
    // Not applied yet.
    let mut c = settled(&[1, 2, 3], plain_config);
    c.node(1).propose(b"x".to_vec()).unwrap();
    assert!(!c.node(1).can_quiesce(everyone_live), "an unsent, unpersisted proposal");
    c.stabilize();
    assert!(c.node(1).can_quiesce(everyone_live));

    // A read in progress.
    c.node(1).read_index(b"r".to_vec()).unwrap();
    assert!(!c.node(1).can_quiesce(everyone_live), "a read waits for its round");
    c.process(1);
    assert!(!c.node(1).can_quiesce(everyone_live), "its heartbeat round is not answered");
    c.stabilize();
    assert!(c.node(1).can_quiesce(everyone_live));

    // Committed by everyone but not applied by the leader yet.
    c.node(1).propose(b"y".to_vec()).unwrap();
    let appends = c.ready(1).messages;
    for append in appends {
        let to = append.to.0;
        step(c.node(to), append);
        for ack in all_messages(&c.ready(to)) {
            step(c.node(1), ack);
        }
    }
    assert_eq!(progress_of(&c.nodes[&1], 2).0, last_index(&c.nodes[&1]));
    assert!(!c.node(1).can_quiesce(everyone_live), "committed, not applied");
    c.stabilize();
    assert!(c.node(1).can_quiesce(everyone_live));

    // Messages of its own not handed out yet (a heartbeat tick).
    c.node(1).tick();
    c.node(1).tick();
    assert!(!c.node(1).can_quiesce(everyone_live), "heartbeats wait in the next Ready");
    c.stabilize();
    assert!(c.node(1).can_quiesce(everyone_live));

    // A transfer in progress.
    c.isolate(2);
    c.node(1).transfer_leader(NodeId(2)).unwrap();
    assert!(!c.node(1).can_quiesce(everyone_live));
    c.stabilize();
    assert!(!c.node(1).can_quiesce(everyone_live), "the TimeoutNow is out; the transfer still runs");
    assert!(!c.node(1).quiesce(everyone_live));
    assert!(!c.nodes[&1].is_quiesced());

    // Followers are not quiesced by anyone but their leader.
    assert!(!c.node(2).can_quiesce(everyone_live));
    assert!(!c.node(2).quiesce(everyone_live));
}

#[test]
fn a_leader_waits_for_its_own_write_and_for_a_live_quorum() {
    let mut c = settled(&[1, 2, 3], plain_config);
    c.node(1).propose(b"x".to_vec()).unwrap();
    c.process(1);
    c.stabilize();
    assert!(c.node(1).can_quiesce(everyone_live));
    // Two of three voters down: no quorum to sleep on.
    assert!(!c.node(1).can_quiesce(|id| id == NodeId(1)));
    assert!(c.node(1).can_quiesce(|id| id != NodeId(3)));
}

#[test]
fn a_joint_configuration_is_left_before_quiescing() {
    let mut c = settled(&[1, 2, 3], plain_config);
    let change = ConfChange {
        transition: flotilla::raft::ConfChangeTransition::JointExplicit,
        changes: vec![flotilla::raft::ConfChangeSingle { kind: ConfChangeKind::RemoveNode, node: NodeId(3) }],
    };
    c.node(1).propose_conf_change(change).unwrap();
    c.stabilize();
    assert!(c.nodes[&1].configuration().voters.is_joint());
    assert!(!c.node(1).can_quiesce(everyone_live), "the joint configuration is still to be left");
    c.node(1).propose_conf_change(ConfChange::leave_joint()).unwrap();
    c.stabilize();
    assert!(c.node(1).can_quiesce(everyone_live));
}

#[test]
fn any_input_wakes_a_quiesced_leader() {
    type Waker = fn(&mut Node);
    let wakers: Vec<(&str, Waker)> = vec![
        ("tick", |n| n.tick()),
        ("proposal", |n| {
            n.propose(b"x".to_vec()).unwrap();
        }),
        ("batch", |n| {
            n.propose_batch(vec![b"x".to_vec()]).unwrap();
        }),
        ("read", |n| n.read_index(b"r".to_vec()).unwrap()),
        ("transfer", |n| n.transfer_leader(NodeId(2)).unwrap()),
        ("conf change", |n| {
            n.propose_conf_change(ConfChange::single(ConfChangeKind::AddLearner, NodeId(4))).unwrap();
        }),
        ("message", |n| step(n, msg(MessageKind::HeartbeatResponse, 2, 1, 1))),
        ("stale message", |n| step(n, msg(MessageKind::AppendEntriesResponse, 2, 1, 0))),
    ];
    for (what, wake) in wakers {
        let mut c = quiesced_group(plain_config);
        wake(c.node(1));
        assert!(!c.nodes[&1].is_quiesced(), "{what} did not wake the leader");
    }
}

#[test]
fn a_woken_leader_heartbeats_and_wakes_its_followers() {
    let mut c = quiesced_group(plain_config);
    c.node(1).tick();
    assert!(!c.nodes[&1].has_ready(), "one tick of two before the heartbeat");
    c.node(1).tick();
    let beats = of_kind(&c.process(1).messages, MessageKind::Heartbeat);
    assert_eq!(beats.len(), 2);
    assert!(beats.iter().all(|b| !b.quiesce));
    c.stabilize();
    assert!(!c.nodes[&2].is_quiesced() && !c.nodes[&3].is_quiesced());
    assert!(c.node(1).quiesce(everyone_live), "and it can go back to sleep");
}

#[test]
fn a_message_wakes_a_follower_whose_clock_then_starts_from_zero() {
    let mut c = quiesced_group(quiet_config);
    // A stray vote request from a higher term: refused (the leader's node is
    // alive), but the follower is awake now and counts its election timeout.
    let mut request = msg(MessageKind::RequestPreVote, 3, 2, 2);
    request.index = LogIndex(1);
    request.log_term = flotilla::raft::Term(1);
    step(c.node(2), request);
    assert!(!c.nodes[&2].is_quiesced());
    assert!(!c.nodes[&2].has_ready(), "in lease: the pre-vote is ignored");
    assert_eq!(leader(&c.nodes[&2]), Some(1));
}

#[test]
fn a_quiesced_follower_with_a_known_leader_refuses_votes_until_it_forgets_the_leader() {
    let mut c = quiesced_group(quiet_config);
    let mut request = msg(MessageKind::RequestPreVote, 3, 2, 2);
    request.index = LogIndex(1);
    request.log_term = flotilla::raft::Term(1);
    step(c.node(2), request.clone());
    assert!(!c.nodes[&2].has_ready(), "refused: its leader's node is alive");

    c.node(2).forget_leader();
    assert_eq!(leader(&c.nodes[&2]), None);
    step(c.node(2), request);
    let mut granted = msg(MessageKind::RequestPreVoteResponse, 2, 3, 2);
    granted.reject = false;
    assert_eq!(drain(c.node(2)), vec![granted]);
    assert_eq!(term(&c.nodes[&2]), 1, "a pre-vote changes no term");
}

#[test]
fn a_forgotten_leader_is_replaced_after_one_election_timeout() {
    let mut c = quiesced_group(quiet_config);
    c.isolate(1);
    c.node(2).forget_leader();
    c.node(3).forget_leader();
    for _ in 0..20 {
        for id in [2, 3] {
            c.node(id).tick();
        }
        c.stabilize();
    }
    let leaders: Vec<u64> = [2, 3].into_iter().filter(|id| role(&c.nodes[id]) == Role::Leader).collect();
    assert_eq!(leaders.len(), 1, "a new leader within twice the election timeout");
    assert_eq!(term(&c.nodes[&leaders[0]]), 2);
}

#[test]
fn under_leases_a_forgotten_leader_keeps_its_lease_for_an_election_timeout() {
    let lease = |id| {
        let mut config = quiet_config(id);
        config.read_mode = ReadMode::Lease { clock_drift_bound_ticks: 2 };
        config
    };
    let mut c = Cluster::new(&[1, 2, 3], lease);
    let l = c.elect_by_ticking();
    let (f, other) = if l == 1 { (2, 3) } else { (1, if l == 2 { 3 } else { 2 }) };
    assert!(c.node(l).quiesce(everyone_live));
    c.stabilize();
    c.node(f).forget_leader();
    assert!(!c.nodes[&f].is_quiesced(), "forgetting wakes the follower");
    assert_eq!(leader(&c.nodes[&f]), Some(l), "under leases the promise not to vote is kept");
    let t = term(&c.nodes[&f]);
    let mut request = msg(MessageKind::RequestVote, other, f, t + 1);
    request.index = LogIndex(last_index(&c.nodes[&f]));
    request.log_term = flotilla::raft::Term(t);
    for _ in 0..9 {
        c.node(f).tick();
    }
    assert_eq!(role(&c.nodes[&f]), Role::Follower);
    step(c.node(f), request.clone());
    assert!(!c.nodes[&f].has_ready(), "still within the promised election timeout");
    c.node(f).tick();
    step(c.node(f), request);
    assert_eq!(drain(c.node(f)), vec![msg(MessageKind::RequestVoteResponse, f, other, t + 1)]);
}

fn lease_config(id: u64) -> Config {
    let mut config = quiet_config(id);
    config.pre_vote = false;
    config.read_mode = ReadMode::Lease { clock_drift_bound_ticks: 2 };
    config
}

/// A lease-mode group whose leader holds a fresh lease: every follower
/// acknowledged its last heartbeat. Returns the group and the leader.
fn leased_group() -> (Cluster, u64) {
    let mut c = Cluster::new(&[1, 2, 3], lease_config);
    let l = c.elect_by_ticking();
    c.node(l).read_index(b"warm".to_vec()).unwrap();
    assert_eq!(c.ready(l).read_states.len(), 1, "the lease holds");
    (c, l)
}

#[test]
fn a_quiesced_leader_answers_reads_through_read_index_until_it_ticked_a_full_lease() {
    let (mut c, l) = leased_group();
    let index = commit(&c.nodes[&l]);
    assert!(c.node(l).quiesce(everyone_live));
    c.stabilize();
    // Real time passes; the leader's clock does not. The followers may have
    // forgotten it and elected another leader meanwhile: its old lease is void.
    c.node(l).read_index(b"r1".to_vec()).unwrap();
    let ready = c.process(l);
    assert!(ready.read_states.is_empty(), "no lease read right after waking");
    let round: Vec<_> = ready.messages.iter().filter(|m| m.context == b"r1").map(|m| m.kind).collect();
    assert_eq!(round, vec![MessageKind::Heartbeat; 2], "a ReadIndex heartbeat round instead");
    c.stabilize();

    // Fresh acknowledgements, but not yet a full lease (8 ticks) since waking.
    for tick in 1..8 {
        c.tick(l, 1);
        c.node(l).read_index(format!("early {tick}").into_bytes()).unwrap();
        assert!(c.process(l).read_states.is_empty(), "lease read {tick} ticks after waking");
        c.stabilize();
    }
    c.tick(l, 1);
    c.node(l).read_index(b"again".to_vec()).unwrap();
    let ready = c.ready(l);
    assert_eq!(ready.read_states, vec![ReadState { index: LogIndex(index), context: b"again".to_vec() }]);
}

#[test]
fn quiescing_needs_the_configuration_it_would_sleep_with_to_be_whole() {
    // A learner is a member: it must hold the whole log too.
    let conf = ConfState { voters: [1, 2].map(NodeId).into(), learners: [3].map(NodeId).into(), ..Default::default() };
    let mut c = Cluster::with_conf(&[1, 2, 3], &conf, plain_config);
    c.elect(1);
    c.isolate(3);
    c.propose(1, b"x");
    assert!(!c.node(1).can_quiesce(everyone_live), "the learner lacks entry 2");
    c.heal();
    c.tick(1, 2);
    assert!(c.node(1).can_quiesce(everyone_live));
}

#[test]
fn a_woken_leader_starts_a_fresh_check_quorum_round() {
    let mut c = settled(&[1, 2, 3], quiet_config);
    // Nine ticks into a round, having heard from both followers.
    c.tick(1, 9);
    assert!(c.node(1).quiesce(everyone_live));
    c.stabilize();
    c.isolate(1);
    // Woken, it counts a whole election timeout again, hearing from nobody.
    c.tick(1, 9);
    assert_eq!(role(&c.nodes[&1]), Role::Leader, "not a quorum check nine ticks after waking");
    c.tick(1, 1);
    assert_eq!(role(&c.nodes[&1]), Role::Follower, "and it heard from no one since it woke");
}

#[test]
fn a_woken_leader_restarts_its_heartbeat_clock() {
    let mut c = settled(&[1, 2, 3], plain_config);
    c.tick(1, 1);
    assert!(c.node(1).quiesce(everyone_live));
    c.stabilize();
    c.node(1).tick();
    assert!(!c.nodes[&1].has_ready(), "one tick since waking: no heartbeat yet");
    c.node(1).tick();
    assert_eq!(of_kind(&c.ready(1).messages, MessageKind::Heartbeat).len(), 2);
}
