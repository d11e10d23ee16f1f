//! Raft paper §6 and thesis §4 (membership changes): learners, single-voter
//! changes, joint consensus (§4.3) with automatic and explicit leave, the
//! one-change-at-a-time rule, a removed leader stepping down (§4.2.2), and
//! leadership transfer (thesis §3.10).
//!
//! Design choice tested as implemented (as in etcd/raft): a configuration
//! takes effect when the application applies its entry and calls
//! `apply_conf_change`, not when the entry is appended.

mod common;

use std::collections::BTreeSet;

use common::*;
use flotilla::raft::{
    ConfChange, ConfChangeKind, ConfChangeSingle, ConfChangeTransition, ConfState, Entry, EntryPayload, LogIndex,
    MessageKind, NodeId, RaftError, Role, Term,
};

fn ids(list: &[u64]) -> BTreeSet<NodeId> {
    list.iter().copied().map(NodeId).collect()
}

fn with_learners(voters: &[u64], learners: &[u64]) -> ConfState {
    ConfState { learners: ids(learners), ..ConfState::with_voters(voters.iter().copied()) }
}

fn change(transition: ConfChangeTransition, changes: &[(ConfChangeKind, u64)]) -> ConfChange {
    ConfChange {
        transition,
        changes: changes.iter().map(|&(kind, node)| ConfChangeSingle { kind, node: NodeId(node) }).collect(),
    }
}

fn conf_of(c: &Cluster, id: u64) -> ConfState {
    c.nodes[&id].status().conf_state
}

// Thesis §4.2.1: learners (non-voting members) never start elections.
#[test]
fn learner_never_campaigns() {
    let mut c = Cluster::with_conf(&[1, 2, 3, 4], &with_learners(&[1, 2, 3], &[4]), |id| {
        let mut config = plain_config(id);
        config.pre_vote = true;
        config
    });
    c.tick(4, 100);
    let learner = &c.nodes[&4];
    assert_eq!((role(learner), term(learner)), (Role::Follower, 0));
    assert!(c.delivered.is_empty(), "the learner sent nothing");
}

// Thesis §4.2.1: a candidate asks only voters, and a learner's vote does not
// count toward the majority.
#[test]
fn learner_votes_do_not_count() {
    let mut node = node_with_conf(plain_config(1), &with_learners(&[1, 2, 3], &[4]), &[], hs(0, None, 0));
    node.campaign();
    let requests: Vec<u64> = drain(&mut node).iter().map(|m| m.to.0).collect();
    assert_eq!(requests, vec![2, 3]);
    step(&mut node, msg(MessageKind::RequestVoteResponse, 4, 1, 1));
    assert_eq!(role(&node), Role::Candidate);
    step(&mut node, msg(MessageKind::RequestVoteResponse, 2, 1, 1));
    assert_eq!(role(&node), Role::Leader);
}

// Thesis §4.2.1: learners receive the log but do not count for commitment.
#[test]
fn learners_do_not_count_for_commit() {
    let mut c = Cluster::with_conf(&[1, 2, 3, 4], &with_learners(&[1, 2, 3], &[4]), plain_config);
    c.elect(1);
    c.node(1).propose(b"x".to_vec()).unwrap();
    let appends = of_kind(&c.ready(1).messages, MessageKind::AppendEntries);
    assert_eq!(appends.iter().map(|m| m.to.0).collect::<Vec<_>>(), vec![2, 3, 4], "learner 4 gets the entry too");
    step(c.node(4), appends[2].clone());
    let ack = drain(c.node(4));
    assert_eq!(ack, vec![append_ok(4, 1, 1, 2)]);
    step(c.node(1), ack[0].clone());
    assert_eq!(commit(&c.nodes[&1]), 1, "leader + learner is not a majority of {{1,2,3}}");
    step(c.node(2), appends[0].clone());
    let ack = drain(c.node(2));
    step(c.node(1), ack[0].clone());
    assert_eq!(commit(&c.nodes[&1]), 2);
    c.stabilize();
    assert_eq!(c.applied_data(4), vec![b"x".to_vec()]);
}

// §6 / thesis §4.1: adding one voter is a simple change, effective once
// applied; the new member then counts toward the majority (3 of 4).
#[test]
fn add_single_voter() {
    let mut c = Cluster::with_conf(&[1, 2, 3, 4], &ConfState::with_voters([1, 2, 3]), plain_config);
    c.elect(1);
    let id = c.node(1).propose_conf_change(ConfChange::single(ConfChangeKind::AddVoter, NodeId(4))).unwrap();
    assert_eq!((id.index, id.term), (LogIndex(2), Term(1)));
    c.stabilize();
    assert_eq!(conf_of(&c, 1).voters, ids(&[1, 2, 3, 4]));
    c.tick(1, 2); // the heartbeat shows node 4 is behind; it is caught up
    for id in [1, 2, 3, 4] {
        assert_eq!(conf_of(&c, id), ConfState::with_voters([1, 2, 3, 4]), "node {id}");
        assert_eq!(commit(&c.nodes[&id]), 2, "node {id}");
    }
    assert_eq!(progress_of(&c.nodes[&1], 4).0, 2);

    c.isolate(3);
    c.isolate(4);
    c.propose(1, b"y");
    assert_eq!(commit(&c.nodes[&1]), 2, "2 of 4 voters is not a majority");
    c.heal();
    c.tick(1, 2);
    assert_eq!(commit(&c.nodes[&1]), 3);
}

// §6: removing a voter shrinks the majority; the leader stops tracking it.
#[test]
fn remove_single_voter() {
    let mut c = settled(&[1, 2, 3], plain_config);
    c.node(1).propose_conf_change(ConfChange::single(ConfChangeKind::RemoveNode, NodeId(3))).unwrap();
    c.stabilize();
    assert_eq!(conf_of(&c, 1), ConfState::with_voters([1, 2]));
    let tracked: Vec<u64> = c.nodes[&1].status().progress.iter().map(|p| p.0 .0).collect();
    assert_eq!(tracked, vec![1, 2]);
    c.node(1).tick();
    c.node(1).tick();
    let beats: Vec<u64> = drain(c.node(1)).iter().map(|m| m.to.0).collect();
    assert_eq!(beats, vec![2], "no traffic to the removed node");
    c.isolate(2);
    c.propose(1, b"y");
    assert_eq!(commit(&c.nodes[&1]), 2, "1 of {{1,2}} is not a majority");
}

// Thesis §4.3: in a joint configuration, elections need a majority of BOTH
// the old and the new voters.
#[test]
fn joint_election_needs_both_majorities() {
    let joint = ConfState { voters_outgoing: ids(&[1, 4, 5]), ..ConfState::with_voters([1, 2, 3]) };
    let mut node = node_with_conf(plain_config(1), &joint, &[], hs(0, None, 0));
    node.campaign();
    let requests: Vec<u64> = drain(&mut node).iter().map(|m| m.to.0).collect();
    assert_eq!(requests, vec![2, 3, 4, 5]);
    step(&mut node, msg(MessageKind::RequestVoteResponse, 2, 1, 1));
    step(&mut node, msg(MessageKind::RequestVoteResponse, 3, 1, 1));
    assert_eq!(role(&node), Role::Candidate, "only the incoming half agreed");
    step(&mut node, msg(MessageKind::RequestVoteResponse, 4, 1, 1));
    assert_eq!(role(&node), Role::Leader);
}

// Thesis §4.3: in a joint configuration, commitment needs a majority of BOTH
// halves.
#[test]
fn joint_commit_needs_both_majorities() {
    let joint = ConfState { voters_outgoing: ids(&[1, 4, 5]), ..ConfState::with_voters([1, 2, 3]) };
    let mut node = node_with_conf(plain_config(1), &joint, &[], hs(0, None, 0));
    node.campaign();
    persist_and_advance(&mut node);
    step(&mut node, msg(MessageKind::RequestVoteResponse, 2, 1, 1));
    step(&mut node, msg(MessageKind::RequestVoteResponse, 4, 1, 1));
    persist_and_advance(&mut node);
    step(&mut node, append_ok(2, 1, 1, 1));
    step(&mut node, append_ok(3, 1, 1, 1));
    assert_eq!(commit(&node), 0, "incoming majority only");
    step(&mut node, append_ok(4, 1, 1, 1));
    assert_eq!(commit(&node), 1);
}

// Thesis §4.3: a change of several voters goes through a joint
// configuration; with auto-leave the leader itself appends the empty change
// that leaves it, once the joint entry is applied.
#[test]
fn joint_consensus_with_auto_leave() {
    let mut c = Cluster::with_conf(&[1, 2, 3, 4], &ConfState::with_voters([1, 2, 3]), plain_config);
    c.elect(1);
    let cc = change(ConfChangeTransition::Auto, &[(ConfChangeKind::AddVoter, 4), (ConfChangeKind::RemoveNode, 3)]);
    c.node(1).propose_conf_change(cc.clone()).unwrap();
    let out = c.ready(1).messages;
    step(c.node(2), out.into_iter().find(|m| m.to.0 == 2).unwrap());
    let ack = drain(c.node(2));
    step(c.node(1), ack[0].clone());
    // Applying the joint entry enters the joint configuration; advance then
    // appends the leave entry.
    let ready = c.ready(1);
    assert_eq!(ready.committed_entries.last().map(|e| e.payload.clone()), Some(EntryPayload::ConfChange(cc)));
    let joint = conf_of(&c, 1);
    assert_eq!(
        joint,
        ConfState { voters_outgoing: ids(&[1, 2, 3]), auto_leave: true, ..ConfState::with_voters([1, 2, 4]) }
    );
    let leave = c.nodes[&1].entries(LogIndex(3), LogIndex(4)).unwrap();
    assert_eq!(leave[0].payload, EntryPayload::ConfChange(ConfChange::leave_joint()));
    assert_eq!(leave[0].term, Term(1));
    assert!(matches!(
        c.node(1).propose_conf_change(ConfChange::single(ConfChangeKind::AddLearner, NodeId(5))),
        Err(RaftError::ConfChangePending)
    ));

    c.stabilize();
    c.tick(1, 2);
    for id in [1, 2, 4] {
        assert_eq!(conf_of(&c, id), ConfState::with_voters([1, 2, 4]), "node {id}");
    }
    assert_eq!(last_index(&c.nodes[&1]), 3, "exactly one leave entry");
}

// Thesis §4.3 (etcd's explicit variant): a JointExplicit change stays joint
// until the application proposes the empty change that leaves it.
#[test]
fn joint_consensus_with_explicit_leave() {
    let mut c = Cluster::with_conf(&[1, 2, 3, 4], &ConfState::with_voters([1, 2, 3]), plain_config);
    c.elect(1);
    let cc = change(ConfChangeTransition::JointExplicit, &[(ConfChangeKind::AddVoter, 4)]);
    c.node(1).propose_conf_change(cc).unwrap();
    c.stabilize();
    c.tick(1, 4);
    let joint = conf_of(&c, 1);
    assert_eq!(joint, ConfState { voters_outgoing: ids(&[1, 2, 3]), ..ConfState::with_voters([1, 2, 3, 4]) });
    assert_eq!(last_index(&c.nodes[&1]), 2, "no automatic leave entry");

    // A second joint change while joint is invalid.
    let again = change(ConfChangeTransition::JointExplicit, &[(ConfChangeKind::AddLearner, 5)]);
    assert!(matches!(c.node(1).propose_conf_change(again), Err(RaftError::InvalidConfChange(_))));

    c.node(1).propose_conf_change(ConfChange::leave_joint()).unwrap();
    c.stabilize();
    c.tick(1, 2);
    for id in [1, 2, 3, 4] {
        assert_eq!(conf_of(&c, id), ConfState::with_voters([1, 2, 3, 4]), "node {id}");
    }
}

// Changes that would be invalid at apply time are rejected at proposal time
// with InvalidConfChange, and append nothing.
#[test]
fn invalid_conf_changes_are_rejected() {
    let mut c = settled(&[1, 2, 3], plain_config);
    let err = c.node(1).propose_conf_change(ConfChange::leave_joint()).unwrap_err();
    assert!(matches!(err, RaftError::InvalidConfChange(_)), "{err:?}");
    assert!(!c.nodes[&1].has_ready());
    assert_eq!(last_index(&c.nodes[&1]), 1);

    let mut single = settled(&[1], plain_config);
    let err = single.node(1).propose_conf_change(ConfChange::single(ConfChangeKind::RemoveNode, NodeId(1)));
    assert!(matches!(err, Err(RaftError::InvalidConfChange(_))), "removing the last voter: {err:?}");
    assert_eq!(last_index(&single.nodes[&1]), 1);

    let err = c.node(2).propose_conf_change(ConfChange::single(ConfChangeKind::AddVoter, NodeId(4)));
    assert_eq!(err, Err(RaftError::NotLeader { hint: Some(NodeId(1)) }));
}

// Thesis §4.1: one membership change at a time; the next may be proposed
// only after the previous one is applied.
#[test]
fn one_pending_conf_change_at_a_time() {
    let mut c = settled(&[1, 2, 3], plain_config);
    c.node(1).propose_conf_change(ConfChange::single(ConfChangeKind::AddLearner, NodeId(4))).unwrap();
    let second = ConfChange::single(ConfChangeKind::AddLearner, NodeId(5));
    assert_eq!(c.node(1).propose_conf_change(second.clone()), Err(RaftError::ConfChangePending));
    assert_eq!(last_index(&c.nodes[&1]), 2);
    c.stabilize();
    assert_eq!(conf_of(&c, 1).learners, ids(&[4]));
    let id = c.node(1).propose_conf_change(second).unwrap();
    assert_eq!(id.index, LogIndex(3));
}

// Thesis §4.1: a new leader may hold an unapplied conf change from an earlier
// term in its tail; it accepts no new change until that tail is applied.
#[test]
fn new_leader_waits_for_its_tail_before_conf_change() {
    let log = log_with_terms(&[1, 1]);
    let mut node = node_with_log(plain_config(1), &[1, 2, 3], &log, hs(1, None, 0));
    node.campaign();
    persist_and_advance(&mut node);
    step(&mut node, msg(MessageKind::RequestVoteResponse, 2, 1, 2));
    persist_and_advance(&mut node);
    let cc = ConfChange::single(ConfChangeKind::AddLearner, NodeId(4));
    assert_eq!(node.propose_conf_change(cc.clone()), Err(RaftError::ConfChangePending));
    step(&mut node, append_ok(2, 1, 2, 3));
    persist_and_advance(&mut node);
    assert_eq!(applied(&node), 3);
    assert!(node.propose_conf_change(cc).is_ok());
}

// Thesis §4.2.2: a leader removed from the configuration steps down once it
// applies the change, and (no longer a voter) never campaigns again; the
// rest elect a leader among themselves.
#[test]
fn removed_leader_steps_down_and_never_campaigns() {
    let mut c = settled(&[1, 2, 3], |id| {
        let mut config = plain_config(id);
        config.pre_vote = true;
        config
    });
    c.node(1).propose_conf_change(ConfChange::single(ConfChangeKind::RemoveNode, NodeId(1))).unwrap();
    c.stabilize();
    let old = &c.nodes[&1];
    assert_eq!((role(old), leader(old)), (Role::Follower, None));
    assert_eq!(old.status().conf_state, ConfState::with_voters([2, 3]));
    assert!(matches!(c.node(1).propose(b"x".to_vec()), Err(RaftError::NotLeader { .. })));

    c.delivered.clear();
    c.tick_all(60);
    assert_eq!(term(&c.nodes[&1]), 1);
    assert_ne!(role(&c.nodes[&1]), Role::Leader);
    assert!(
        c.delivered
            .iter()
            .all(|m| m.from.0 != 1 || !matches!(m.kind, MessageKind::RequestVote | MessageKind::RequestPreVote)),
        "the removed node campaigned"
    );
    let leaders = c.leaders();
    assert_eq!(leaders.len(), 1);
    assert!(leaders[0] == 2 || leaders[0] == 3);
}

// Thesis §3.10: with an up-to-date transferee the leader sends TimeoutNow at
// once; the transferee campaigns without pre-vote, with the transfer flag
// that overrides the voters' leases, and wins.
#[test]
fn leadership_transfer_to_up_to_date_follower() {
    let mut c = settled(&[1, 2, 3], |id| {
        let mut config = plain_config(id);
        config.check_quorum = true;
        config.pre_vote = true;
        config
    });
    c.node(1).transfer_leader(NodeId(2)).unwrap();
    let ready = c.ready(1);
    assert_eq!(ready.messages, vec![msg(MessageKind::TimeoutNow, 1, 2, 1)]);
    step(c.node(2), ready.messages[0].clone());
    let ready = c.ready(2);
    assert_eq!(ready.hard_state, Some(hs(2, Some(2), 1)));
    let mut expected = Vec::new();
    for to in [1, 3] {
        let mut m = msg(MessageKind::RequestVote, 2, to, 2);
        m.index = LogIndex(1);
        m.log_term = Term(1);
        m.leader_transfer = true;
        expected.push(m);
    }
    assert_eq!(ready.persisted_messages, expected);
    c.send(expected);
    c.stabilize();
    assert_eq!(c.leaders(), vec![2]);
    assert_eq!((role(&c.nodes[&1]), leader(&c.nodes[&1])), (Role::Follower, Some(2)));
}

// Thesis §3.10: a lagging transferee is first caught up; TimeoutNow goes out
// only when it matches the leader's last index. Proposals are refused
// meanwhile.
#[test]
fn leadership_transfer_catches_up_transferee_first() {
    let mut c = settled(&[1, 2, 3], plain_config);
    c.isolate(3);
    c.propose(1, b"x");
    c.heal();
    c.node(1).transfer_leader(NodeId(3)).unwrap();
    assert_eq!(c.node(1).propose(b"y".to_vec()), Err(RaftError::ProposalDropped("leadership is being transferred")));
    let ready = c.ready(1);
    assert_eq!(ready.messages, vec![append(1, 3, 1, (2, 1), 2, vec![])], "catch up, no TimeoutNow yet");
    c.send(ready.messages);
    c.stabilize();
    let timeout_at = c.delivered.iter().position(|m| m.kind == MessageKind::TimeoutNow).expect("TimeoutNow sent");
    let caught_up = c.delivered.iter().position(|m| *m == append_ok(3, 1, 1, 2)).expect("node 3 caught up");
    assert!(caught_up < timeout_at);
    assert_eq!(c.leaders(), vec![3]);
    assert_eq!(term(&c.nodes[&3]), 2);
    assert_eq!(c.applied_data(3), vec![b"x".to_vec()]);
}

// Thesis §3.10: a transfer that does not finish within an election timeout
// is abandoned and the leader accepts proposals again.
#[test]
fn leadership_transfer_aborts_after_election_timeout() {
    let mut c = settled(&[1, 2, 3], plain_config);
    c.isolate(3);
    c.node(1).transfer_leader(NodeId(3)).unwrap();
    c.stabilize();
    c.tick(1, 9);
    assert!(matches!(c.node(1).propose(b"y".to_vec()), Err(RaftError::ProposalDropped(_))));
    c.tick(1, 1);
    assert_eq!(c.nodes[&1].status().lead_transferee, None);
    assert!(c.node(1).propose(b"y".to_vec()).is_ok());
    assert_eq!(role(&c.nodes[&1]), Role::Leader);
}

// Thesis §3.10: only a voter other than the leader can be a transferee, and
// only a leader can transfer.
#[test]
fn invalid_leadership_transfers() {
    let mut c = Cluster::with_conf(&[1, 2, 3, 4], &with_learners(&[1, 2, 3], &[4]), plain_config);
    c.elect(1);
    assert!(matches!(c.node(1).transfer_leader(NodeId(1)), Err(RaftError::InvalidTransfer(_))));
    assert!(matches!(c.node(1).transfer_leader(NodeId(4)), Err(RaftError::InvalidTransfer(_))));
    assert_eq!(c.node(2).transfer_leader(NodeId(3)), Err(RaftError::NotLeader { hint: Some(NodeId(1)) }));
    assert_eq!(c.nodes[&1].status().lead_transferee, None);
}

// Thesis §4.2.2 with joint consensus: a leader that is only in the outgoing
// half keeps leading through the joint phase (it is still a voter there),
// appends the leave entry, and steps down once that is applied.
#[test]
fn leader_removed_by_joint_change_leads_until_leave_then_steps_down() {
    let mut c = Cluster::with_conf(&[1, 2, 3, 4], &ConfState::with_voters([1, 2, 3]), plain_config);
    c.elect(1);
    let cc = change(ConfChangeTransition::Auto, &[(ConfChangeKind::RemoveNode, 1), (ConfChangeKind::AddVoter, 4)]);
    c.node(1).propose_conf_change(cc).unwrap();
    c.stabilize();
    c.tick(1, 2);
    let old = &c.nodes[&1];
    assert_eq!((role(old), leader(old)), (Role::Follower, None));
    let leave = old.entries(LogIndex(3), LogIndex(4)).unwrap();
    assert_eq!(leave[0].payload, EntryPayload::ConfChange(ConfChange::leave_joint()), "node 1 appended the leave");
    for id in [1, 2, 3, 4] {
        assert_eq!(conf_of(&c, id), ConfState::with_voters([2, 3, 4]), "node {id}");
    }
    c.tick_all(60);
    let leaders = c.leaders();
    assert_eq!(leaders.len(), 1);
    assert_ne!(leaders[0], 1);
}

// Thesis §4.3 (etcd's learners_next): demoting a voter to learner in a joint
// change keeps it a voter of the outgoing half until the leave, then makes it
// a learner.
#[test]
fn joint_demotion_makes_voter_a_learner_on_leave() {
    let mut c = Cluster::with_conf(&[1, 2, 3, 4], &ConfState::with_voters([1, 2, 3]), plain_config);
    c.elect(1);
    let cc =
        change(ConfChangeTransition::JointExplicit, &[(ConfChangeKind::AddLearner, 3), (ConfChangeKind::AddVoter, 4)]);
    c.node(1).propose_conf_change(cc).unwrap();
    c.stabilize();
    c.tick(1, 2);
    let joint = conf_of(&c, 1);
    assert_eq!(joint.voters, ids(&[1, 2, 4]));
    assert_eq!(joint.voters_outgoing, ids(&[1, 2, 3]));
    assert_eq!(joint.learners_next, ids(&[3]));
    assert!(joint.learners.is_empty());

    c.node(1).propose_conf_change(ConfChange::leave_joint()).unwrap();
    c.stabilize();
    c.tick(1, 2);
    for id in [1, 2, 3, 4] {
        assert_eq!(conf_of(&c, id), with_learners(&[1, 2, 4], &[3]), "node {id}");
    }
}

// Thesis §4.2.1: promoting a caught-up learner is a simple change; it then
// counts toward the majority.
#[test]
fn learner_promoted_to_voter_counts_for_commit() {
    let mut c = Cluster::with_conf(&[1, 2, 3], &with_learners(&[1, 2], &[3]), plain_config);
    c.elect(1);
    c.node(1).propose_conf_change(ConfChange::single(ConfChangeKind::AddVoter, NodeId(3))).unwrap();
    c.stabilize();
    assert_eq!(conf_of(&c, 1), ConfState::with_voters([1, 2, 3]));
    c.isolate(2);
    c.propose(1, b"x");
    assert_eq!(commit(&c.nodes[&1]), 3, "leader + promoted node 3 are 2 of 3");
}

// Thesis §4.3 leaves a liveness gap that the simulator found: voters of only
// the outgoing half that hold entries past the leave entry can out-vote every
// member of the new configuration once they have applied their removal (they
// never campaign, and vote only for a candidate at least as up to date). So
// the leader sends them nothing past the leave entry.
#[test]
fn outgoing_only_voters_get_nothing_past_the_leave_entry() {
    let mut c = Cluster::with_conf(&[1, 2, 3, 4, 5], &ConfState::with_voters([1, 2, 3]), plain_config);
    c.elect(1);
    let swap = [
        (ConfChangeKind::AddVoter, 4),
        (ConfChangeKind::AddVoter, 5),
        (ConfChangeKind::RemoveNode, 2),
        (ConfChangeKind::RemoveNode, 3),
    ];
    c.node(1).propose_conf_change(change(ConfChangeTransition::JointExplicit, &swap)).unwrap();
    c.stabilize();
    assert_eq!(conf_of(&c, 1).voters_outgoing, ids(&[1, 2, 3]), "joint");
    let leave = c.node(1).propose_conf_change(ConfChange::leave_joint()).unwrap();
    c.node(1).propose(b"after the leave".to_vec()).unwrap();
    let ready = c.process(1);
    let appends = of_kind(&all_messages(&ready), MessageKind::AppendEntries);
    let furthest = |to: u64| {
        appends.iter().filter(|m| m.to == NodeId(to)).map(|m| m.entries.last().map_or(m.index, |e| e.index)).max()
    };
    assert_eq!(furthest(2), Some(leave.index), "outgoing-only voters stop at the leave entry");
    assert_eq!(furthest(3), Some(leave.index));
    c.stabilize();
    c.tick(1, 2);
    for id in [1, 4, 5] {
        assert_eq!(conf_of(&c, id), ConfState::with_voters([1, 4, 5]), "node {id}");
        assert_eq!(c.applied_data(id).last().map(Vec::as_slice), Some(&b"after the leave"[..]), "node {id}");
    }
    assert_eq!(last_index(&c.nodes[&2]), leave.index.0, "node 2 stopped at the leave entry");
    assert_eq!(last_index(&c.nodes[&4]), leave.index.0 + 1, "node 4 got everything");
}

// Thesis §3.10 with §4: a conf change that keeps the transferee a voter
// leaves the transfer running; one that removes it abandons the transfer.
#[test]
fn a_transfer_survives_a_conf_change_unless_it_removes_the_target() {
    // The change was proposed before the transfer; applying it keeps node 3.
    let mut c = Cluster::with_conf(&[1, 2, 3, 4], &ConfState::with_voters([1, 2, 3]), plain_config);
    c.elect(1);
    c.node(1).propose_conf_change(ConfChange::single(ConfChangeKind::AddLearner, NodeId(4))).unwrap();
    c.isolate(3);
    c.node(1).transfer_leader(NodeId(3)).unwrap();
    c.stabilize();
    assert_eq!(conf_of(&c, 1), with_learners(&[1, 2, 3], &[4]));
    assert_eq!(c.nodes[&1].status().lead_transferee, Some(NodeId(3)), "node 3 is still a voter");
    // A change that removes node 3 ends the transfer.
    let removal = c.node(1).apply_conf_change(&ConfChange::single(ConfChangeKind::RemoveNode, NodeId(3))).unwrap();
    assert_eq!(removal, with_learners(&[1, 2], &[4]));
    assert_eq!(c.nodes[&1].status().lead_transferee, None, "node 3 is gone");
}

// Thesis §4.1: a follower whose committed tail holds a conf change it has not
// applied yet does not campaign under the old configuration (etcd's rule).
#[test]
fn a_committed_but_unapplied_conf_change_holds_back_a_campaign() {
    let change = ConfChange::single(ConfChangeKind::AddLearner, NodeId(4));
    let log = vec![ent(1, 1), Entry { term: Term(1), index: LogIndex(2), payload: EntryPayload::ConfChange(change) }];
    let mut config = plain_config(2);
    config.applied = LogIndex(1);
    let mut node = node_with_log(config, &[1, 2, 3], &log, hs(1, None, 2));
    for _ in 0..30 {
        node.tick();
    }
    assert_eq!((role(&node), term(&node)), (Role::Follower, 1), "no campaign before the change is applied");
    let ready = persist_and_advance(&mut node);
    assert_eq!(ready.committed_entries.len(), 1);
    assert!(all_messages(&ready).is_empty());
    for _ in 0..20 {
        node.tick();
    }
    assert_eq!((role(&node), term(&node)), (Role::Candidate, 2), "applied: it campaigns");
}

// The liveness rule above, for a new leader that inherits the leave entry
// from an earlier term: outgoing-only voters get entries up to this term's
// first entry (the leave commits only with it) and nothing past it.
#[test]
fn an_inherited_leave_entry_limits_outgoing_voters_to_the_new_leaders_first_entry() {
    let mut c = Cluster::with_conf(&[1, 2, 3, 4, 5], &ConfState::with_voters([1, 2, 3]), plain_config);
    c.elect(1);
    let swap = [
        (ConfChangeKind::AddVoter, 4),
        (ConfChangeKind::AddVoter, 5),
        (ConfChangeKind::RemoveNode, 2),
        (ConfChangeKind::RemoveNode, 3),
    ];
    c.node(1).propose_conf_change(change(ConfChangeTransition::JointExplicit, &swap)).unwrap();
    c.stabilize();
    c.tick(1, 2);
    // Node 1 appends the leave entry; nodes 2 (outgoing only), 4 and 5
    // (members) get it, but their acknowledgements are lost: nobody knows
    // it committed.
    for link in [(1, 3), (2, 1), (4, 1), (5, 1)] {
        c.cut.insert(link);
    }
    let leave = c.node(1).propose_conf_change(ConfChange::leave_joint()).unwrap();
    c.stabilize();
    assert_eq!((last_index(&c.nodes[&2]), last_index(&c.nodes[&4])), (leave.index.0, leave.index.0));
    assert!(commit(&c.nodes[&1]) < leave.index.0 && commit(&c.nodes[&4]) < leave.index.0);
    // Node 4 takes over in term 2 with the leave entry unapplied in its tail.
    c.heal();
    c.isolate(1);
    c.node(4).campaign();
    let requests = all_messages(&c.ready(4));
    for request in requests {
        let voter = request.to.0;
        if voter == 1 {
            continue;
        }
        step(c.node(voter), request);
        for answer in all_messages(&c.ready(voter)) {
            step(c.node(4), answer);
        }
    }
    assert_eq!(role(&c.nodes[&4]), Role::Leader);
    let first = leave.index.next();
    assert_eq!(c.nodes[&4].term_at(first), Some(Term(2)), "its no-op follows the leave entry");
    // Its probes carry the no-op; every live voter acknowledges it.
    for probe in all_messages(&c.ready(4)) {
        let to = probe.to.0;
        if to == 1 {
            continue;
        }
        step(c.node(to), probe);
        for ack in all_messages(&c.ready(to)) {
            step(c.node(4), ack);
        }
    }
    // The leave is committed now but not yet applied: still joint. A
    // proposal goes to the members; outgoing-only voters get nothing past
    // the no-op.
    c.node(4).propose(b"later".to_vec()).unwrap();
    let appends = of_kind(&all_messages(&c.ready(4)), MessageKind::AppendEntries);
    let furthest = |to: u64| {
        appends.iter().filter(|m| m.to == NodeId(to)).map(|m| m.entries.last().map_or(m.index, |e| e.index)).max()
    };
    assert_eq!(progress_of(&c.nodes[&4], 2).2, flotilla::raft::ProgressState::Replicate, "node 2 is streamed to");
    assert_eq!(furthest(2), Some(first), "but gets nothing past the no-op: {appends:?}");
    assert_eq!(furthest(5), Some(first.next()), "members get everything");
    assert!(c.nodes[&4].configuration().voters.is_joint(), "the outgoing half has not committed the no-op");
    assert_eq!(c.nodes[&4].status().last_index, first.next());
}
