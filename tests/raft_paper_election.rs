//! Raft paper §5.2 (leader election), thesis §9.6 (pre-vote) and §4.2.3 /
//! §6.2 (check-quorum, leases on votes). Each test checks the exact
//! messages and state a step produces.

mod common;

use common::*;
use flotilla::raft::{LogIndex, MessageKind, NodeId, Role, Term};

fn ticks_until_campaign(node: &mut Node, limit: usize) -> usize {
    for t in 1..=limit {
        node.tick();
        if role(node) != Role::Follower {
            return t;
        }
    }
    panic!("no campaign within {limit} ticks");
}

// §5.2: "Raft uses randomized election timeouts" chosen from [T, 2T); here
// the randomness is the config's seed, so the timeout is reproducible.
#[test]
fn election_timeout_is_randomized_from_the_seed() {
    let mut observed = Vec::new();
    for seed in 1..=8u64 {
        let mut config = plain_config(1);
        config.random_seed = seed;
        let mut node = new_node(config.clone(), &[1, 2, 3]);
        let mut state = seed;
        let expected = 10 + (splitmix64(&mut state) % 10) as usize;
        let waited = ticks_until_campaign(&mut node, 40);
        assert_eq!(waited, expected, "seed {seed}");
        assert!((10..20).contains(&waited));
        // The same seed replays the same timeout.
        let mut again = new_node(config, &[1, 2, 3]);
        assert_eq!(ticks_until_campaign(&mut again, 40), expected);
        observed.push(waited);
    }
    observed.sort();
    observed.dedup();
    assert!(observed.len() >= 3, "timeouts are not spread: {observed:?}");
}

// §5.2: a follower that hears nothing for an election timeout increments its
// term, votes for itself and sends RequestVote (lastLogIndex, lastLogTerm)
// to every other server. Both the vote and the requests wait for the write.
#[test]
fn follower_times_out_and_becomes_candidate() {
    let log = log_with_terms(&[1, 1, 2]);
    let mut node = node_with_log(plain_config(1), &[1, 2, 3], &log, hs(2, None, 1));
    ticks_until_campaign(&mut node, 20);
    let ready = persist_and_advance(&mut node);
    assert_eq!(ready.hard_state, Some(hs(3, Some(1), 1)));
    assert_eq!(ready.soft_state.unwrap().role, Role::Candidate);
    assert!(ready.messages.is_empty(), "votes must not go out before the write");
    let mut expected = Vec::new();
    for to in [2, 3] {
        let mut m = msg(MessageKind::RequestVote, 1, to, 3);
        m.index = LogIndex(3);
        m.log_term = Term(2);
        expected.push(m);
    }
    assert_eq!(ready.persisted_messages, expected);
}

// §5.2: a candidate that receives votes from a majority becomes leader and
// sends AppendEntries to every other server; it appends a no-op of its term
// (§5.4.2 / §8).
#[test]
fn candidate_with_majority_becomes_leader_and_broadcasts() {
    let mut node = new_node(plain_config(1), &[1, 2, 3]);
    node.campaign();
    persist_and_advance(&mut node);
    step(&mut node, msg(MessageKind::RequestVoteResponse, 2, 1, 1));
    assert_eq!(role(&node), Role::Leader);
    let ready = persist_and_advance(&mut node);
    assert_eq!(ready.soft_state.map(|s| (s.role, s.leader)), Some((Role::Leader, Some(NodeId(1)))));
    assert_eq!(ready.entries, vec![ent(1, 1)]);
    let mut expected = Vec::new();
    for to in [2, 3] {
        let mut m = msg(MessageKind::AppendEntries, 1, to, 1);
        m.entries = vec![ent(1, 1)];
        expected.push(m);
    }
    assert_eq!(ready.messages, expected);
    assert!(ready.persisted_messages.is_empty());
}

// §5.2: a candidate that a majority refuses loses and returns to follower,
// keeping its term and its own vote.
#[test]
fn candidate_rejected_by_majority_becomes_follower() {
    let mut node = new_node(plain_config(1), &[1, 2, 3]);
    node.campaign();
    persist_and_advance(&mut node);
    let mut reject = msg(MessageKind::RequestVoteResponse, 2, 1, 1);
    reject.reject = true;
    step(&mut node, reject.clone());
    assert_eq!(role(&node), Role::Candidate, "one rejection of three is not decisive");
    reject.from = NodeId(3);
    step(&mut node, reject);
    assert_eq!(role(&node), Role::Follower);
    assert_eq!(node.status().hard_state, hs(1, Some(1), 0));
    assert_eq!(leader(&node), None);
}

// §5.2: "each server will vote for at most one candidate in a given term, on
// a first-come-first-served basis"; repeating the grant to the same
// candidate is harmless.
#[test]
fn at_most_one_vote_per_term() {
    let mut node = new_node(plain_config(1), &[1, 2, 3]);
    step(&mut node, msg(MessageKind::RequestVote, 2, 1, 1));
    let ready = persist_and_advance(&mut node);
    assert_eq!(ready.hard_state, Some(hs(1, Some(2), 0)));
    assert_eq!(ready.persisted_messages, vec![msg(MessageKind::RequestVoteResponse, 1, 2, 1)]);
    assert!(ready.messages.is_empty());

    step(&mut node, msg(MessageKind::RequestVote, 3, 1, 1));
    let ready = persist_and_advance(&mut node);
    let mut rejected = msg(MessageKind::RequestVoteResponse, 1, 3, 1);
    rejected.reject = true;
    assert_eq!(ready.persisted_messages, vec![rejected]);
    assert_eq!(ready.hard_state, None);

    step(&mut node, msg(MessageKind::RequestVote, 2, 1, 1));
    assert_eq!(drain(&mut node), vec![msg(MessageKind::RequestVoteResponse, 1, 2, 1)]);
}

// §5.2: a candidate that receives AppendEntries from a leader of its own term
// recognises it and returns to follower; it answers the append.
#[test]
fn candidate_steps_down_for_leader_of_same_term() {
    let mut node = new_node(plain_config(1), &[1, 2, 3]);
    node.campaign();
    persist_and_advance(&mut node);
    let mut append = msg(MessageKind::AppendEntries, 2, 1, 1);
    append.entries = vec![ent(1, 1)];
    step(&mut node, append);
    assert_eq!((role(&node), leader(&node)), (Role::Follower, Some(2)));
    let ready = persist_and_advance(&mut node);
    assert_eq!(ready.entries, vec![ent(1, 1)]);
    let mut ack = msg(MessageKind::AppendEntriesResponse, 1, 2, 1);
    ack.index = LogIndex(1);
    assert_eq!(ready.persisted_messages, vec![ack]);
    assert_eq!(node.status().hard_state, hs(1, Some(1), 0), "the vote of the term stays");
}

// §5.1: a server that sees a larger term updates its term and reverts to
// follower (a leader included).
#[test]
fn leader_steps_down_on_higher_term() {
    let mut c = Cluster::new(&[1, 2, 3], plain_config);
    c.elect(1);
    let mut response = msg(MessageKind::AppendEntriesResponse, 2, 1, 5);
    response.index = LogIndex(1);
    step(c.node(1), response);
    let node = &c.nodes[&1];
    assert_eq!((role(node), leader(node)), (Role::Follower, None));
    assert_eq!(node.status().hard_state.term, Term(5));
    assert_eq!(node.status().hard_state.vote, None);
}

// §5.2: with no winner (split vote), the candidate times out and starts a new
// election with a new term.
#[test]
fn split_vote_leads_to_new_election_in_next_term() {
    let mut node = new_node(plain_config(1), &[1, 2, 3, 4]);
    node.campaign();
    persist_and_advance(&mut node);
    step(&mut node, msg(MessageKind::RequestVoteResponse, 2, 1, 1));
    let mut reject = msg(MessageKind::RequestVoteResponse, 3, 1, 1);
    reject.reject = true;
    step(&mut node, reject);
    assert_eq!(role(&node), Role::Candidate, "2 of 4 is neither a win nor a loss");
    persist_and_advance(&mut node);
    for _ in 0..20 {
        node.tick();
        if term(&node) == 2 {
            break;
        }
    }
    assert_eq!(role(&node), Role::Candidate);
    let ready = persist_and_advance(&mut node);
    assert_eq!(ready.hard_state, Some(hs(2, Some(1), 0)));
    let kinds: Vec<_> = ready.persisted_messages.iter().map(|m| (m.kind, m.to.0, m.term.0)).collect();
    assert_eq!(
        kinds,
        vec![(MessageKind::RequestVote, 2, 2), (MessageKind::RequestVote, 3, 2), (MessageKind::RequestVote, 4, 2)]
    );
}

// §5.1: requests with a stale term are rejected. Plain Raft ignores a stale
// append; with check-quorum or pre-vote the follower answers with its term so
// the stale leader steps down.
#[test]
fn stale_term_append_is_ignored_or_answered_with_newer_term() {
    let mut node = node_with_log(plain_config(1), &[1, 2, 3], &[], hs(3, None, 0));
    let mut stale = msg(MessageKind::AppendEntries, 2, 1, 2);
    stale.entries = vec![ent(2, 1)];
    step(&mut node, stale.clone());
    assert!(!node.has_ready(), "plain Raft ignores a stale append");
    assert_eq!(last_index(&node), 0);

    let mut config = plain_config(1);
    config.check_quorum = true;
    let mut node = node_with_log(config, &[1, 2, 3], &[], hs(3, None, 0));
    step(&mut node, stale);
    let ready = persist_and_advance(&mut node);
    assert!(ready.entries.is_empty());
    assert_eq!(all_messages(&ready), vec![msg(MessageKind::AppendEntriesResponse, 1, 2, 3)]);
}

// §5.1 + §6.2: an old leader learns of the newer term from a follower's
// answer to its heartbeat, and steps down.
#[test]
fn stale_leader_steps_down_after_partition_heals() {
    let mut c = Cluster::new(&[1, 2, 3], |id| {
        let mut config = plain_config(id);
        config.check_quorum = true;
        config
    });
    c.elect(1);
    c.isolate(1);
    // Nodes 2 and 3 stop hearing from 1; once past the lease one of them wins.
    for _ in 0..60 {
        c.node(2).tick();
        c.node(3).tick();
        c.stabilize();
        if c.leaders().len() == 2 {
            break;
        }
    }
    let new_leader = *c.leaders().iter().find(|&&l| l != 1).expect("a new leader");
    let new_term = term(&c.nodes[&new_leader]);
    assert!(new_term >= 2);
    assert_eq!(role(&c.nodes[&1]), Role::Leader, "the old leader does not know yet");
    c.heal();
    c.node(1).tick();
    c.node(1).tick();
    let heartbeats = of_kind(&drain(c.node(1)), MessageKind::Heartbeat);
    assert_eq!(heartbeats.len(), 2);
    assert!(heartbeats.iter().all(|m| m.term == Term(1)));
    assert_eq!(heartbeats[1].to, NodeId(3));
    step(c.node(3), heartbeats[1].clone());
    let answer = drain(c.node(3));
    assert_eq!(answer, vec![msg(MessageKind::AppendEntriesResponse, 3, 1, new_term)]);
    step(c.node(1), answer[0].clone());
    let old = &c.nodes[&1];
    assert_eq!((role(old), term(old), leader(old)), (Role::Follower, new_term, None));
}

// §5.2: a single voter wins its own election at once (pre-vote included).
#[test]
fn single_voter_elects_itself() {
    let mut node = new_node(flotilla::raft::Config::new(NodeId(1)), &[1]);
    node.campaign();
    assert_eq!((role(&node), term(&node)), (Role::Leader, 1));
    let ready = persist_and_advance(&mut node);
    assert_eq!(ready.hard_state, Some(hs(1, Some(1), 0)));
    assert!(all_messages(&ready).is_empty());
}

// ---- pre-vote (thesis §9.6) ----

fn pre_vote_config(id: u64) -> flotilla::raft::Config {
    let mut config = plain_config(id);
    config.pre_vote = true;
    config
}

// §9.6: a timed-out follower first asks for pre-votes for term+1 without
// changing its term or vote.
#[test]
fn pre_candidate_keeps_term_and_asks_for_next_term() {
    let log = log_with_terms(&[1, 2]);
    let mut node = node_with_log(pre_vote_config(1), &[1, 2, 3], &log, hs(2, Some(3), 1));
    ticks_until_campaign(&mut node, 20);
    assert_eq!(role(&node), Role::PreCandidate);
    let ready = persist_and_advance(&mut node);
    assert_eq!(ready.hard_state, None, "pre-vote changes neither term nor vote");
    assert_eq!(node.status().hard_state, hs(2, Some(3), 1));
    let mut expected = Vec::new();
    for to in [2, 3] {
        let mut m = msg(MessageKind::RequestPreVote, 1, to, 3);
        m.index = LogIndex(2);
        m.log_term = Term(2);
        expected.push(m);
    }
    assert_eq!(all_messages(&ready), expected);
}

// §9.6: with a majority of pre-votes, the node runs the real election.
#[test]
fn pre_vote_majority_starts_real_election() {
    let mut node = new_node(pre_vote_config(1), &[1, 2, 3]);
    node.campaign();
    persist_and_advance(&mut node);
    step(&mut node, msg(MessageKind::RequestPreVoteResponse, 2, 1, 1));
    assert_eq!(role(&node), Role::Candidate);
    let ready = persist_and_advance(&mut node);
    assert_eq!(ready.hard_state, Some(hs(1, Some(1), 0)));
    let kinds: Vec<_> = all_messages(&ready).iter().map(|m| (m.kind, m.to.0, m.term.0)).collect();
    assert_eq!(kinds, vec![(MessageKind::RequestVote, 2, 1), (MessageKind::RequestVote, 3, 1)]);
}

// §9.6: a pre-candidate that a majority refuses goes back to follower with
// its term untouched.
#[test]
fn pre_vote_rejected_leaves_term_unchanged() {
    let mut node = node_with_log(pre_vote_config(1), &[1, 2, 3], &[], hs(4, None, 0));
    node.campaign();
    persist_and_advance(&mut node);
    for from in [2, 3] {
        let mut reject = msg(MessageKind::RequestPreVoteResponse, from, 1, 4);
        reject.reject = true;
        step(&mut node, reject);
    }
    assert_eq!((role(&node), term(&node)), (Role::Follower, 4));
    assert_eq!(persist_and_advance(&mut node).hard_state, None);
}

// §9.6: a voter answers a pre-vote for a future term without adopting the
// term and without recording a vote; a stale log gets a rejection.
#[test]
fn pre_vote_granted_without_changing_voter_state() {
    let log = log_with_terms(&[1, 1]);
    let mut node = node_with_log(pre_vote_config(2), &[1, 2, 3], &log, hs(1, Some(1), 2));
    let mut request = msg(MessageKind::RequestPreVote, 3, 2, 2);
    request.index = LogIndex(2);
    request.log_term = Term(1);
    step(&mut node, request.clone());
    let ready = persist_and_advance(&mut node);
    assert_eq!(ready.hard_state, None);
    assert_eq!(all_messages(&ready), vec![msg(MessageKind::RequestPreVoteResponse, 2, 3, 2)]);
    assert_eq!(node.status().hard_state, hs(1, Some(1), 2));

    request.index = LogIndex(1); // shorter log: not up to date (§5.4.1)
    step(&mut node, request);
    let mut reject = msg(MessageKind::RequestPreVoteResponse, 2, 3, 1);
    reject.reject = true;
    assert_eq!(drain(&mut node), vec![reject]);
}

// §9.6: a partitioned node with pre-vote does not inflate its term, so it
// cannot disrupt the leader when it comes back.
#[test]
fn partitioned_node_with_pre_vote_does_not_disrupt_leader() {
    let mut c = Cluster::new(&[1, 2, 3], pre_vote_config);
    c.elect(1);
    c.isolate(3);
    c.tick(3, 100);
    assert_eq!(term(&c.nodes[&3]), 1, "pre-votes never raise the term");
    assert_ne!(role(&c.nodes[&3]), Role::Leader);
    c.heal();
    c.tick_all(30);
    assert_eq!(c.leaders(), vec![1]);
    assert!(c.nodes.values().all(|n| term(n) == 1));
    assert_eq!((role(&c.nodes[&3]), leader(&c.nodes[&3])), (Role::Follower, Some(1)));
}

// ---- check-quorum and leases on votes (thesis §6.2, §4.2.3) ----

fn check_quorum_config(id: u64) -> flotilla::raft::Config {
    let mut config = plain_config(id);
    config.check_quorum = true;
    config
}

// §6.2: a leader that has not heard from a majority within an election
// timeout steps down.
#[test]
fn check_quorum_leader_steps_down_without_majority() {
    let mut c = Cluster::new(&[1, 2, 3], check_quorum_config);
    c.elect(1);
    c.isolate(1);
    // The first check covers the round in which the followers answered.
    c.tick(1, 10);
    assert_eq!(role(&c.nodes[&1]), Role::Leader);
    c.tick(1, 9);
    assert_eq!(role(&c.nodes[&1]), Role::Leader);
    c.tick(1, 1);
    let node = &c.nodes[&1];
    assert_eq!((role(node), leader(node), term(node)), (Role::Follower, None, 1));
}

// §6.2: a leader that keeps hearing from a majority keeps its role.
#[test]
fn check_quorum_leader_with_majority_stays() {
    let mut c = Cluster::new(&[1, 2, 3], check_quorum_config);
    c.elect(1);
    c.isolate(3);
    c.tick(1, 50);
    assert_eq!(role(&c.nodes[&1]), Role::Leader);
    assert_eq!(term(&c.nodes[&1]), 1);
}

// §4.2.3: a follower that heard from a leader within the minimum election
// timeout ignores a RequestVote (no answer, no term change) unless it comes
// from a leadership transfer.
#[test]
fn in_lease_follower_ignores_vote_requests() {
    let mut c = Cluster::new(&[1, 2, 3], check_quorum_config);
    c.elect(1);
    let mut request = msg(MessageKind::RequestVote, 3, 2, 2);
    request.index = LogIndex(1);
    request.log_term = Term(1);
    step(c.node(2), request.clone());
    assert!(!c.nodes[&2].has_ready(), "vote request in lease is dropped");
    assert_eq!(term(&c.nodes[&2]), 1);

    let mut pre = request.clone();
    pre.kind = MessageKind::RequestPreVote;
    step(c.node(2), pre);
    assert!(!c.nodes[&2].has_ready(), "pre-vote request in lease is dropped");

    request.leader_transfer = true;
    step(c.node(2), request);
    let ready = persist_and_advance(c.node(2));
    assert_eq!(ready.hard_state, Some(hs(2, Some(3), 1)));
    assert_eq!(ready.persisted_messages, vec![msg(MessageKind::RequestVoteResponse, 2, 3, 2)]);
}

// §4.2.3: once the follower has not heard from the leader for an election
// timeout, the lease is over and it votes normally.
#[test]
fn follower_votes_after_lease_expires() {
    let mut c = Cluster::new(&[1, 2, 3], check_quorum_config);
    c.elect(1);
    c.isolate(2);
    // The node's own timeout is randomized in [10, 20): stay below 10 ticks
    // of silence first, then pass it without letting 2 campaign itself.
    for _ in 0..9 {
        c.node(2).tick();
    }
    let mut request = msg(MessageKind::RequestVote, 3, 2, 2);
    request.index = LogIndex(1);
    request.log_term = Term(1);
    step(c.node(2), request.clone());
    assert!(!c.nodes[&2].has_ready());
    c.node(2).tick();
    assert_eq!(role(&c.nodes[&2]), Role::Follower, "timeout of node 2 is above 10 for seed 2");
    step(c.node(2), request);
    let ready = persist_and_advance(c.node(2));
    assert_eq!(ready.hard_state, Some(hs(2, Some(3), 1)));
    assert_eq!(ready.persisted_messages, vec![msg(MessageKind::RequestVoteResponse, 2, 3, 2)]);
}

// §5.2: votes are counted per server: a duplicated grant does not count twice.
#[test]
fn duplicate_vote_counts_once() {
    let mut node = new_node(plain_config(1), &[1, 2, 3, 4, 5]);
    node.campaign();
    persist_and_advance(&mut node);
    step(&mut node, msg(MessageKind::RequestVoteResponse, 2, 1, 1));
    step(&mut node, msg(MessageKind::RequestVoteResponse, 2, 1, 1));
    assert_eq!(role(&node), Role::Candidate, "1 + 2 is not 3 of 5");
    step(&mut node, msg(MessageKind::RequestVoteResponse, 3, 1, 1));
    assert_eq!(role(&node), Role::Leader);
}

// §5.1: a response from an earlier term is stale and ignored.
#[test]
fn stale_vote_response_is_ignored() {
    let mut node = node_with_log(plain_config(1), &[1, 2, 3], &[], hs(1, None, 0));
    node.campaign();
    persist_and_advance(&mut node);
    step(&mut node, msg(MessageKind::RequestVoteResponse, 2, 1, 1));
    assert_eq!((role(&node), term(&node)), (Role::Candidate, 2));
}

// A vote request from an older term is refused with our newer term, so a
// candidate that trails (e.g. behind terms raised by a removed node that
// does not know it) catches up instead of campaigning unheard forever.
#[test]
fn stale_vote_request_is_refused_with_the_newer_term() {
    let mut node = node_with_log(plain_config(1), &[1, 2, 3], &[], hs(5, None, 0));
    let mut request = msg(MessageKind::RequestVote, 2, 1, 3);
    request.index = LogIndex(9);
    request.log_term = Term(3);
    step(&mut node, request);
    let ready = persist_and_advance(&mut node);
    let responses = of_kind(&all_messages(&ready), MessageKind::RequestVoteResponse);
    assert_eq!(responses.len(), 1);
    assert_eq!((responses[0].to, responses[0].term, responses[0].reject), (NodeId(2), Term(5), true));
    assert_eq!((term(&node), role(&node)), (5, Role::Follower), "nothing changes here");
}

// §5.1 with §9.6: a pre-vote refusal that carries a newer term makes the
// pre-candidate adopt that term and return to follower (only a GRANTED
// pre-vote answer is for a term not adopted yet).
#[test]
fn a_pre_vote_refusal_from_a_newer_term_is_adopted() {
    let mut node = node_with_log(pre_vote_config(1), &[1, 2, 3], &[], hs(4, None, 0));
    node.campaign();
    persist_and_advance(&mut node);
    let mut reject = msg(MessageKind::RequestPreVoteResponse, 2, 1, 7);
    reject.reject = true;
    step(&mut node, reject);
    assert_eq!((role(&node), term(&node)), (Role::Follower, 7));
    // A granted one for the next term is counted without adopting it.
    let mut node = node_with_log(pre_vote_config(1), &[1, 2, 3], &[], hs(4, None, 0));
    node.campaign();
    persist_and_advance(&mut node);
    step(&mut node, msg(MessageKind::RequestPreVoteResponse, 2, 1, 5));
    assert_eq!((role(&node), term(&node)), (Role::Candidate, 5), "the pre-vote won; the real election runs");
}

// §9.6: a pre-vote for the voter's own current term is an ordinary vote
// question: with a leader (or a vote) in that term, it is refused.
#[test]
fn a_pre_vote_for_the_current_term_is_refused_while_a_leader_is_known() {
    let log = log_with_terms(&[1, 2]);
    let mut node = node_with_log(pre_vote_config(2), &[1, 2, 3], &log, hs(2, None, 1));
    step(&mut node, append(1, 2, 2, (2, 2), 1, vec![]));
    drain(&mut node);
    assert_eq!(leader(&node), Some(1));
    let mut request = msg(MessageKind::RequestPreVote, 3, 2, 2);
    request.index = LogIndex(2);
    request.log_term = Term(2);
    step(&mut node, request);
    let mut reject = msg(MessageKind::RequestPreVoteResponse, 2, 3, 2);
    reject.reject = true;
    assert_eq!(drain(&mut node), vec![reject]);
}

// §5.2: only a follower (or candidate) that is a voter campaigns: a forced
// campaign on a leader or a learner, or a TimeoutNow to a learner, does
// nothing.
#[test]
fn leaders_and_learners_do_not_campaign_when_asked() {
    let mut c = settled(&[1, 2, 3], plain_config);
    c.node(1).campaign();
    assert_eq!((role(&c.nodes[&1]), term(&c.nodes[&1])), (Role::Leader, 1));
    assert!(!c.nodes[&1].has_ready());

    let learners =
        flotilla::raft::ConfState { learners: [NodeId(4)].into(), ..flotilla::raft::ConfState::with_voters([1, 2, 3]) };
    let mut learner = node_with_conf(plain_config(4), &learners, &[], hs(1, None, 0));
    learner.campaign();
    step(&mut learner, msg(MessageKind::TimeoutNow, 1, 4, 1));
    assert_eq!((role(&learner), term(&learner)), (Role::Follower, 1));
    assert!(all_messages(&persist_and_advance(&mut learner)).is_empty());
}
