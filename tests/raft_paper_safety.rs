//! Raft paper §5.4 (safety): the election restriction, committing only
//! current-term entries by counting (Figure 8), persistent votes, and the
//! durability rule for the leader's own acknowledgement (etcd #14370).

mod common;

use common::*;
use flotilla::raft::{Config, LogIndex, MessageKind, NodeId, Role, Term};

fn vote_request(from: u64, to: u64, term: u64, last_index: u64, last_term: u64) -> flotilla::raft::Message {
    let mut m = msg(MessageKind::RequestVote, from, to, term);
    m.index = LogIndex(last_index);
    m.log_term = Term(last_term);
    m
}

// §5.4.1: a voter denies its vote if its own log is more up-to-date than the
// candidate's: compare last terms first, then lengths.
#[test]
fn vote_only_for_up_to_date_candidate() {
    // The voter's log ends at index 3, term 2.
    let cases = [
        ((2, 2), false), // same last term, shorter
        ((3, 2), true),  // identical
        ((4, 2), true),  // same last term, longer
        ((5, 1), false), // longer but older last term
        ((1, 3), true),  // shorter but newer last term
    ];
    for ((last_index, last_term), granted) in cases {
        let log = log_with_terms(&[1, 1, 2]);
        let mut node = node_with_log(plain_config(1), &[1, 2, 3], &log, hs(2, None, 1));
        step(&mut node, vote_request(2, 1, 3, last_index, last_term));
        let ready = persist_and_advance(&mut node);
        let mut expected = msg(MessageKind::RequestVoteResponse, 1, 2, 3);
        expected.reject = !granted;
        assert_eq!(ready.persisted_messages, vec![expected], "candidate log ({last_index}, {last_term})");
        let vote = granted.then_some(2);
        assert_eq!(ready.hard_state, Some(hs(3, vote, 1)), "candidate log ({last_index}, {last_term})");
    }
}

// §5.4.1 end to end: a node that missed a committed entry cannot be elected,
// because every node holding the entry refuses it.
#[test]
fn node_missing_committed_entry_cannot_win() {
    let mut c = settled(&[1, 2, 3], plain_config);
    c.isolate(3);
    c.propose(1, b"x");
    assert_eq!(commit(&c.nodes[&1]), 2);
    c.heal();
    c.node(3).campaign();
    let requests = drain(c.node(3));
    assert_eq!(requests, vec![vote_request(3, 1, 2, 1, 1), vote_request(3, 2, 2, 1, 1)]);
    step(c.node(2), requests[1].clone());
    let answer = drain(c.node(2));
    let mut reject = msg(MessageKind::RequestVoteResponse, 2, 3, 2);
    reject.reject = true;
    assert_eq!(answer, vec![reject]);
    step(c.node(3), answer[0].clone());
    step(c.node(1), requests[0].clone());
    let answer = drain(c.node(1));
    assert!(answer[0].reject);
    step(c.node(3), answer[0].clone());
    assert_eq!(role(&c.nodes[&3]), Role::Follower);
}

// §5.2 / Figure 2: the vote is persistent state; a voter that restarts keeps
// refusing other candidates of the term it voted in.
#[test]
fn persisted_vote_survives_restart() {
    let mut node = node_with_log(plain_config(1), &[1, 2, 3], &[], hs(1, Some(2), 0));
    step(&mut node, vote_request(3, 1, 1, 0, 0));
    let mut reject = msg(MessageKind::RequestVoteResponse, 1, 3, 1);
    reject.reject = true;
    assert_eq!(drain(&mut node), vec![reject]);
    step(&mut node, vote_request(2, 1, 1, 0, 0));
    assert_eq!(drain(&mut node), vec![msg(MessageKind::RequestVoteResponse, 1, 2, 1)]);
}

/// Figure 8 (c): S1 leads term 4 of five servers with log [1:1, 2:2]; it
/// appends its no-op 3:4.
fn figure8_leader() -> Node {
    let mut s1 = node_with_log(plain_config(1), &[1, 2, 3, 4, 5], &log_with_terms(&[1, 2]), hs(3, None, 1));
    s1.campaign();
    persist_and_advance(&mut s1);
    step(&mut s1, msg(MessageKind::RequestVoteResponse, 2, 1, 4));
    step(&mut s1, msg(MessageKind::RequestVoteResponse, 3, 1, 4));
    assert_eq!(role(&s1), Role::Leader);
    let ready = persist_and_advance(&mut s1);
    assert_eq!(ready.entries, vec![ent(4, 3)]);
    assert_eq!(ready.messages[0], append(1, 2, 4, (2, 2), 1, vec![ent(4, 3)]));
    s1
}

// §5.4.2, Figure 8: an entry of an earlier term stored on a majority is NOT
// committed by counting; it commits only with an entry of the current term.
#[test]
fn figure8_old_term_entry_on_majority_is_not_committed() {
    let mut s1 = figure8_leader();
    // S2 and S3 hold 2:2 (a majority with S1) but not 3:4 yet.
    step(&mut s1, append_ok(2, 1, 4, 2));
    step(&mut s1, append_ok(3, 1, 4, 2));
    let ready = persist_and_advance(&mut s1);
    assert_eq!(ready.hard_state, None, "2:2 is on a majority but must not commit");
    assert!(ready.committed_entries.is_empty());
    assert_eq!(commit(&s1), 1);

    step(&mut s1, append_ok(2, 1, 4, 3));
    assert_eq!(commit(&s1), 1, "3:4 is on two of five");
    step(&mut s1, append_ok(3, 1, 4, 3));
    let ready = persist_and_advance(&mut s1);
    assert_eq!(ready.hard_state, Some(hs(4, Some(1), 3)));
    assert_eq!(ready.committed_entries, vec![ent(2, 2), ent(4, 3)], "2:2 commits indirectly");
}

// §5.4.2, Figure 8 (d): why the rule matters. The uncommitted 2:2 may be
// overwritten by a later leader whose log has 2:3.
#[test]
fn figure8_uncommitted_old_entry_may_be_overwritten() {
    let mut s2 = node_with_log(plain_config(2), &[1, 2, 3, 4, 5], &log_with_terms(&[1, 2]), hs(4, Some(1), 1));
    step(&mut s2, append(5, 2, 5, (1, 1), 1, vec![ent(3, 2)]));
    let ready = persist_and_advance(&mut s2);
    assert_eq!(ready.entries, vec![ent(3, 2)]);
    assert_eq!(ready.persisted_messages, vec![append_ok(2, 5, 5, 2)]);
    assert_eq!(log_terms(&s2), vec![1, 3]);
}

// §5.4.3 (State Machine Safety) end to end: a deposed leader's uncommitted
// entry is replaced, and every node applies the same sequence.
#[test]
fn deposed_leaders_uncommitted_entry_is_replaced() {
    let mut c = settled(&[1, 2, 3], plain_config);
    c.propose(1, b"a");
    c.isolate(1);
    c.propose(1, b"lost");
    assert_eq!(commit(&c.nodes[&1]), 2);
    c.elect(2);
    c.propose(2, b"c");
    c.heal();
    c.tick(2, 2); // a heartbeat deposes node 1 and repairs its log
    for id in [1, 2, 3] {
        assert_eq!(c.applied_data(id), vec![b"a".to_vec(), b"c".to_vec()], "node {id}");
    }
    assert_eq!(log_terms(&c.nodes[&1]), vec![1, 1, 2, 2]);
    assert_eq!((role(&c.nodes[&1]), leader(&c.nodes[&1])), (Role::Follower, Some(2)));
}

// etcd #14370: a single-voter leader must not count itself before its own
// write is durable, so no Ready may hand out an entry for persisting and,
// in the same Ready, as committed.
#[test]
fn single_voter_commits_only_after_its_write_is_durable() {
    let mut node = new_node(Config::new(NodeId(1)), &[1]);
    node.campaign();
    let ready = node.ready();
    assert_eq!(ready.entries, vec![ent(1, 1)]);
    assert!(ready.committed_entries.is_empty(), "the no-op is not durable yet");
    assert_eq!(ready.hard_state.map(|h| h.commit), Some(LogIndex(0)));
    node.store_mut().append(&ready.entries).unwrap();
    node.advance();
    let ready = persist_and_advance(&mut node);
    assert_eq!(ready.hard_state, Some(hs(1, Some(1), 1)));
    assert_eq!(ready.committed_entries, vec![ent(1, 1)]);
    assert!(ready.entries.is_empty());

    node.propose(b"x".to_vec()).unwrap();
    assert_eq!(commit(&node), 1, "proposing does not commit");
    let ready = persist_and_advance(&mut node);
    assert_eq!(ready.entries, vec![ent_data(1, 2, b"x")]);
    assert!(ready.committed_entries.is_empty(), "committed in the same Ready that persists it");
    assert_eq!(ready.hard_state, None);
    let ready = persist_and_advance(&mut node);
    assert_eq!(ready.hard_state, Some(hs(1, Some(1), 2)));
    assert_eq!(ready.committed_entries, vec![ent_data(1, 2, b"x")]);
    assert_eq!(applied(&node), 2);
}

// Thesis §10.2.1: the leader may send before its own write, but counts
// itself only once the write is durable (after advance): one follower's ack
// plus the leader's unwritten entry is not a majority of three.
#[test]
fn leader_counts_itself_only_after_advance() {
    let mut c = settled(&[1, 2, 3], plain_config);
    c.node(1).propose(b"x".to_vec()).unwrap();
    step(c.node(1), append_ok(2, 1, 1, 2));
    assert_eq!(commit(&c.nodes[&1]), 1, "the leader has not persisted index 2");
    assert_eq!(progress_of(&c.nodes[&1], 1).0, 1, "self match is the durable index");
    let ready = c.ready(1);
    assert_eq!(ready.entries, vec![ent_data(1, 2, b"x")]);
    assert!(ready.committed_entries.is_empty());
    let ready = c.ready(1);
    assert_eq!(ready.hard_state.map(|h| h.commit), Some(LogIndex(2)));
    assert_eq!(ready.committed_entries, vec![ent_data(1, 2, b"x")]);
}

// Figure 2 / §5.4: committed entries are handed out in order, each once,
// never beyond the commit index (persist_and_advance checks each one).
#[test]
fn committed_entries_are_applied_once_in_order() {
    let mut c = settled(&[1, 2, 3], plain_config);
    for i in 0..5u8 {
        c.node(1).propose(vec![i + 1]).unwrap();
        if i % 2 == 0 {
            c.stabilize();
        }
    }
    c.stabilize();
    c.tick(1, 2);
    let expected: Vec<Vec<u8>> = (1..=5u8).map(|i| vec![i]).collect();
    for id in [1, 2, 3] {
        assert_eq!(c.applied_data(id), expected, "node {id}");
        let indexes: Vec<u64> = c.applied[&id].iter().map(|e| e.index.0).collect();
        assert_eq!(indexes, (1..=6).collect::<Vec<_>>(), "node {id}");
    }
}
