//! Raft paper §5.3 (log replication) and the replication machinery of
//! etcd/raft-rs the design asks for: pipelining with a bounded in-flight
//! window, probe/replicate progress states, fast conflict backtracking, and
//! the split between messages that may go before the write and those that
//! must wait for it.

mod common;

use common::*;
use flotilla::raft::{LogIndex, MessageKind, ProgressState, ProposalId, Role, Term};

// §5.3: the leader appends the command to its log and issues AppendEntries
// (prevLogIndex, prevLogTerm, leaderCommit, entries) to every follower.
// Leader appends may go before the leader's own write (thesis §10.2.1).
#[test]
fn leader_appends_proposal_and_sends_append_entries() {
    let mut c = settled(&[1, 2, 3], plain_config);
    let id = c.node(1).propose(b"x".to_vec()).unwrap();
    assert_eq!(id, ProposalId { index: LogIndex(2), term: Term(1) });
    let ready = c.ready(1);
    assert_eq!(ready.entries, vec![ent_data(1, 2, b"x")]);
    assert_eq!(ready.hard_state, None);
    assert!(ready.committed_entries.is_empty());
    assert!(ready.persisted_messages.is_empty());
    assert_eq!(
        ready.messages,
        vec![
            append(1, 2, 1, (1, 1), 1, vec![ent_data(1, 2, b"x")]),
            append(1, 3, 1, (1, 1), 1, vec![ent_data(1, 2, b"x")]),
        ]
    );
}

// §5.3: the follower appends and acknowledges; the acknowledgement promises
// durable state, so it waits for the write (persisted_messages).
#[test]
fn follower_appends_and_acknowledges_after_persisting() {
    let mut c = settled(&[1, 2, 3], plain_config);
    step(c.node(2), append(1, 2, 1, (1, 1), 1, vec![ent_data(1, 2, b"x")]));
    let ready = c.ready(2);
    assert_eq!(ready.entries, vec![ent_data(1, 2, b"x")]);
    assert!(ready.messages.is_empty(), "an ack must not leave before the write");
    assert_eq!(ready.persisted_messages, vec![append_ok(2, 1, 1, 2)]);
    assert!(ready.must_sync());
}

// §5.3: once a majority stored the entry, the leader commits it, hands it out
// for applying, and tells the followers the new commit index.
#[test]
fn leader_commits_on_majority_and_propagates_commit() {
    let mut c = settled(&[1, 2, 3], plain_config);
    c.node(1).propose(b"x".to_vec()).unwrap();
    c.ready(1);
    step(c.node(1), append_ok(2, 1, 1, 2));
    let ready = c.ready(1);
    assert_eq!(ready.hard_state, Some(hs(1, Some(1), 2)));
    assert_eq!(ready.committed_entries, vec![ent_data(1, 2, b"x")]);
    assert_eq!(ready.messages, vec![append(1, 2, 1, (2, 1), 2, vec![]), append(1, 3, 1, (2, 1), 2, vec![])]);
    assert_eq!(progress_of(&c.nodes[&1], 2), (2, 3, ProgressState::Replicate));
}

// §5.3: a follower sets commitIndex = min(leaderCommit, index of last new
// entry); entries past what this append verified are not committed.
#[test]
fn follower_commit_is_min_of_leader_commit_and_last_new_entry() {
    let log = log_with_terms(&[1, 1, 1]);
    let mut node = node_with_log(plain_config(2), &[1, 2, 3], &log, hs(1, None, 0));
    step(&mut node, append(1, 2, 1, (1, 1), 3, vec![ent(1, 2)]));
    let ready = persist_and_advance(&mut node);
    assert_eq!(ready.hard_state, Some(hs(1, None, 2)));
    assert!(ready.entries.is_empty(), "the entry is already there");
    assert_eq!(ready.committed_entries, vec![ent(1, 1), ent(1, 2)]);
    assert_eq!(ready.persisted_messages, vec![append_ok(2, 1, 1, 2)]);

    step(&mut node, append(1, 2, 1, (3, 1), 3, vec![]));
    let ready = persist_and_advance(&mut node);
    assert_eq!(ready.hard_state, Some(hs(1, None, 3)));
    assert_eq!(ready.committed_entries, vec![ent(1, 3)]);
}

// Figure 2: commitIndex is volatile state. A Ready whose only durable-looking
// change is a new commit index needs no fsync; one that also changes term or
// vote, or carries entries, does.
#[test]
fn a_new_commit_index_alone_needs_no_fsync() {
    let log = log_with_terms(&[1, 1]);
    let mut node = node_with_log(plain_config(2), &[1, 2, 3], &log, hs(1, Some(1), 0));
    step(&mut node, append(1, 2, 1, (2, 1), 2, vec![]));
    let ready = persist_and_advance(&mut node);
    assert_eq!(ready.hard_state, Some(hs(1, Some(1), 2)));
    assert!(ready.entries.is_empty());
    assert!(!ready.must_sync(), "only commit changed");

    step(&mut node, append(1, 2, 1, (2, 1), 2, vec![ent(1, 3)]));
    assert!(persist_and_advance(&mut node).must_sync(), "a new entry");
    step(&mut node, append(3, 2, 2, (3, 1), 2, vec![]));
    let ready = persist_and_advance(&mut node);
    assert_eq!(ready.hard_state, Some(hs(2, None, 2)));
    assert!(ready.must_sync(), "a new term");
}

// The storage layer may leave a commit-only change unwritten, so a restart can
// present a commit index below the applied one; everything applied was
// committed, so the core starts from the applied index.
#[test]
fn restart_with_a_stale_commit_starts_from_the_applied_index() {
    let log = log_with_terms(&[1, 1, 1, 1]);
    let mut config = plain_config(2);
    config.applied = LogIndex(3);
    let node = node_with_log(config, &[1, 2, 3], &log, hs(1, Some(1), 1));
    assert_eq!(commit(&node), 3);
    assert_eq!(applied(&node), 3);
}

// §5.3: heartbeats carry the commit index but never past what the follower is
// known to hold; the follower clamps it to its own last index too.
#[test]
fn heartbeat_commit_is_clamped_to_the_followers_match() {
    let mut c = settled(&[1, 2, 3], plain_config);
    c.isolate(3);
    c.propose(1, b"x");
    assert_eq!(commit(&c.nodes[&1]), 2);
    c.node(1).tick();
    c.node(1).tick();
    let ready = c.ready(1);
    let beats: Vec<_> = of_kind(&ready.messages, MessageKind::Heartbeat).iter().map(|m| (m.to.0, m.commit.0)).collect();
    assert_eq!(beats, vec![(2, 2), (3, 1)]);

    // A follower given a commit past its log only commits what it holds.
    let mut beat = msg(MessageKind::Heartbeat, 1, 3, 1);
    beat.commit = LogIndex(5);
    step(c.node(3), beat);
    let ready = c.ready(3);
    assert_eq!(ready.hard_state, None, "node 3 holds nothing past 1");
    assert_eq!(ready.messages, vec![msg(MessageKind::HeartbeatResponse, 3, 1, 1)]);
}

// §5.3 consistency check: a follower refuses entries whose prevLogIndex /
// prevLogTerm it does not hold, and returns the conflicting term and the
// first index it holds of that term (the §5.3 optimisation), or its last
// index + 1 with term 0 when its log is too short.
#[test]
fn follower_rejects_with_conflict_term_and_its_first_index() {
    let log = log_with_terms(&[1, 1, 2, 2, 2]);
    let mut node = node_with_log(plain_config(2), &[1, 2, 3], &log, hs(3, None, 1));
    step(&mut node, append(1, 2, 4, (5, 3), 1, vec![ent(4, 6)]));
    let ready = persist_and_advance(&mut node);
    assert!(ready.entries.is_empty());
    assert_eq!(ready.persisted_messages, vec![append_reject(2, 1, 4, 5, 2, 3)]);

    step(&mut node, append(1, 2, 4, (8, 3), 1, vec![]));
    assert_eq!(drain(&mut node), vec![append_reject(2, 1, 4, 8, 0, 6)]);
    assert_eq!(log_terms(&node), vec![1, 1, 2, 2, 2], "a rejection changes nothing");
}

// §5.3: the conflict hint never points at or below the follower's commit
// index (entries there match the leader's by Log Matching).
#[test]
fn conflict_hint_stays_above_commit() {
    let log = log_with_terms(&[1, 1, 1, 1]);
    let mut node = node_with_log(plain_config(2), &[1, 2, 3], &log, hs(1, None, 2));
    step(&mut node, append(1, 2, 2, (4, 2), 2, vec![]));
    assert_eq!(drain(&mut node), vec![append_reject(2, 1, 2, 4, 1, 3)]);
}

/// A leader (node 1 of {1, 2, 3}) elected in term 8 over the Figure 7
/// leader log, with its no-op 11:8 persisted and its probes drained.
fn figure7_leader() -> Node {
    let log = log_with_terms(&[1, 1, 1, 4, 4, 5, 5, 6, 6, 6]);
    let mut leader = node_with_log(plain_config(1), &[1, 2, 3], &log, hs(7, None, 3));
    leader.campaign();
    persist_and_advance(&mut leader);
    step(&mut leader, msg(MessageKind::RequestVoteResponse, 3, 1, 8));
    assert_eq!(role(&leader), Role::Leader);
    let ready = persist_and_advance(&mut leader);
    assert_eq!(ready.messages[0], append(1, 2, 8, (10, 6), 3, vec![ent(8, 11)]));
    leader
}

/// Runs the leader/follower exchange, returning the (prevIndex, prevTerm)
/// of every append and the (index, log_term, hint) of every rejection.
#[allow(clippy::type_complexity)]
fn backtrack(leader: &mut Node, follower: &mut Node) -> (Vec<(u64, u64)>, Vec<(u64, u64, u64)>) {
    let (mut appends, mut rejects) = (Vec::new(), Vec::new());
    let mut pending = vec![append(1, 2, 8, (10, 6), 3, vec![ent(8, 11)])];
    while let Some(m) = pending.pop() {
        appends.push((m.index.0, m.log_term.0));
        step(follower, m);
        let answer = drain(follower);
        assert_eq!(answer.len(), 1);
        if !answer[0].reject {
            assert_eq!(answer[0], append_ok(2, 1, 8, 11));
            step(leader, answer[0].clone());
            break;
        }
        rejects.push((answer[0].index.0, answer[0].log_term.0, answer[0].reject_hint.0));
        step(leader, answer[0].clone());
        pending = of_kind(&drain(leader), MessageKind::AppendEntries);
        assert_eq!(pending.len(), 1, "one probe at a time");
    }
    (appends, rejects)
}

// §5.3 optimisation, Figure 7 (f): the follower names its conflicting term
// and its first index; the leader, lacking that term, jumps there. Two
// round trips instead of seven.
#[test]
fn fast_backtracking_figure7_f() {
    let mut leader = figure7_leader();
    let f = log_with_terms(&[1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3]);
    let mut follower = node_with_log(plain_config(2), &[1, 2, 3], &f, hs(7, None, 3));
    let (appends, rejects) = backtrack(&mut leader, &mut follower);
    assert_eq!(appends, vec![(10, 6), (6, 5), (3, 1)]);
    assert_eq!(rejects, vec![(10, 3, 7), (6, 2, 4)]);
    assert_eq!(log_terms(&follower), vec![1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 8]);
    assert_eq!(progress_of(&leader, 2), (11, 12, ProgressState::Replicate));
}

// §5.3 optimisation, Figure 7 (e): the follower's log is short (term 0 hint =
// last + 1), then conflicts in term 4, which the leader also has: the leader
// resumes right after its own last entry of term 4.
#[test]
fn fast_backtracking_figure7_e_leader_has_conflict_term() {
    let mut leader = figure7_leader();
    let e = log_with_terms(&[1, 1, 1, 4, 4, 4, 4]);
    let mut follower = node_with_log(plain_config(2), &[1, 2, 3], &e, hs(4, None, 3));
    let (appends, rejects) = backtrack(&mut leader, &mut follower);
    assert_eq!(appends, vec![(10, 6), (7, 5), (5, 4)]);
    assert_eq!(rejects, vec![(10, 0, 8), (7, 4, 4)]);
    assert_eq!(log_terms(&follower), vec![1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 8]);
}

// §5.3: a follower deletes a conflicting entry and all that follow it, and
// appends the leader's; the Ready hands out exactly the new suffix.
#[test]
fn follower_truncates_conflicting_suffix() {
    let log = log_with_terms(&[1, 1, 2, 2]);
    let mut node = node_with_log(plain_config(2), &[1, 2, 3], &log, hs(2, None, 2));
    step(&mut node, append(1, 2, 3, (2, 1), 2, vec![ent(3, 3)]));
    let ready = persist_and_advance(&mut node);
    assert_eq!(ready.entries, vec![ent(3, 3)]);
    assert_eq!(ready.persisted_messages, vec![append_ok(2, 1, 3, 3)]);
    assert_eq!(log_terms(&node), vec![1, 1, 3]);
}

// §5.3: "if an existing entry conflicts..." — only a conflict truncates; a
// delayed append of entries the follower already holds removes nothing.
#[test]
fn duplicate_append_does_not_truncate() {
    let log = log_with_terms(&[1, 1, 1]);
    let mut node = node_with_log(plain_config(2), &[1, 2, 3], &log, hs(1, None, 1));
    step(&mut node, append(1, 2, 1, (1, 1), 1, vec![ent(1, 2)]));
    let ready = persist_and_advance(&mut node);
    assert!(ready.entries.is_empty());
    assert_eq!(ready.persisted_messages, vec![append_ok(2, 1, 1, 2)]);
    assert_eq!(log_terms(&node), vec![1, 1, 1]);
}

// §5.3: an append whose prevLogIndex is below the commit index is answered
// with the commit index (what is known to match), changing nothing.
#[test]
fn append_below_commit_answers_with_commit() {
    let log = log_with_terms(&[1, 1, 1]);
    let mut node = node_with_log(plain_config(2), &[1, 2, 3], &log, hs(1, None, 3));
    step(&mut node, append(1, 2, 1, (1, 1), 3, vec![ent(1, 2)]));
    assert_eq!(drain(&mut node), vec![append_ok(2, 1, 1, 3)]);
    assert_eq!(log_terms(&node), vec![1, 1, 1]);
}

// Replication pipelining: in Replicate state the leader streams appends
// without waiting for acknowledgements (one per Ready here).
#[test]
fn replicate_state_pipelines_appends() {
    let mut c = settled(&[1, 2, 3], plain_config);
    let mut to2 = Vec::new();
    for data in [b"a", b"b", b"c"] {
        c.node(1).propose(data.to_vec()).unwrap();
        to2.extend(c.ready(1).messages.into_iter().filter(|m| m.to.0 == 2));
    }
    assert_eq!(
        to2,
        vec![
            append(1, 2, 1, (1, 1), 1, vec![ent_data(1, 2, b"a")]),
            append(1, 2, 1, (2, 1), 1, vec![ent_data(1, 3, b"b")]),
            append(1, 2, 1, (3, 1), 1, vec![ent_data(1, 4, b"c")]),
        ]
    );
    assert_eq!(progress_of(&c.nodes[&1], 2), (1, 5, ProgressState::Replicate));
}

// Bounded in-flight window: at most max_inflight_messages unacknowledged
// appends per follower; an acknowledgement frees the window.
#[test]
fn inflight_window_bounds_unacknowledged_appends() {
    let mut c = settled(&[1, 2, 3], |id| {
        let mut config = plain_config(id);
        config.max_inflight_messages = 2;
        config
    });
    let mut to2 = Vec::new();
    for data in [b"a", b"b", b"c"] {
        c.node(1).propose(data.to_vec()).unwrap();
        to2.extend(c.ready(1).messages.iter().filter(|m| m.to.0 == 2).map(|m| m.index.0));
    }
    assert_eq!(to2, vec![1, 2], "the third append waits for the window");
    assert_eq!(progress_of(&c.nodes[&1], 2), (1, 4, ProgressState::Replicate));

    step(c.node(1), append_ok(2, 1, 1, 2));
    let ready = c.ready(1);
    assert_eq!(ready.hard_state.map(|h| h.commit), Some(LogIndex(2)));
    // Node 2's window has room again: the held entry goes out with the new
    // commit; node 3's window is still full, so it gets nothing.
    assert_eq!(ready.messages, vec![append(1, 2, 1, (3, 1), 2, vec![ent_data(1, 4, b"c")])]);
}

// Probe state: after an election the leader does not know the follower's
// log, sends one append and waits; a heartbeat response shows the follower
// is alive and releases the next probe.
#[test]
fn probe_state_sends_one_append_at_a_time() {
    let mut leader = new_node(plain_config(1), &[1, 2, 3]);
    leader.campaign();
    persist_and_advance(&mut leader);
    step(&mut leader, msg(MessageKind::RequestVoteResponse, 2, 1, 1));
    let first = persist_and_advance(&mut leader);
    assert_eq!(of_kind(&first.messages, MessageKind::AppendEntries).len(), 2);
    assert_eq!(progress_of(&leader, 2), (0, 1, ProgressState::Probe));

    leader.propose(b"x".to_vec()).unwrap();
    let ready = persist_and_advance(&mut leader);
    assert_eq!(ready.entries, vec![ent_data(1, 2, b"x")]);
    assert!(ready.messages.is_empty(), "probes are outstanding: no new appends");

    step(&mut leader, msg(MessageKind::HeartbeatResponse, 2, 1, 1));
    let ready = persist_and_advance(&mut leader);
    assert_eq!(ready.messages, vec![append(1, 2, 1, (0, 0), 0, vec![ent(1, 1), ent_data(1, 2, b"x")])]);

    // The first successful answer moves the follower to Replicate.
    step(&mut leader, append_ok(2, 1, 1, 2));
    assert_eq!(progress_of(&leader, 2), (2, 3, ProgressState::Replicate));
    let ready = persist_and_advance(&mut leader);
    assert_eq!(ready.hard_state.map(|h| h.commit), Some(LogIndex(2)));
    assert_eq!(ready.messages, vec![append(1, 2, 1, (2, 1), 2, vec![])], "node 3 is still probed");
}

// Replicate -> Probe: a rejection above the match index means the optimistic
// stream broke; the leader falls back to probing from match + 1. A stale
// rejection (at or below the match) is ignored.
#[test]
fn rejection_in_replicate_falls_back_to_probe() {
    let mut c = settled(&[1, 2, 3], plain_config);
    c.node(1).propose(b"a".to_vec()).unwrap();
    c.node(1).propose(b"b".to_vec()).unwrap();
    c.ready(1);
    assert_eq!(progress_of(&c.nodes[&1], 2), (1, 4, ProgressState::Replicate));

    step(c.node(1), append_reject(2, 1, 1, 1, 0, 2));
    assert!(!c.nodes[&1].has_ready(), "stale rejection ignored");

    step(c.node(1), append_reject(2, 1, 1, 2, 0, 2));
    assert_eq!(progress_of(&c.nodes[&1], 2), (1, 2, ProgressState::Probe));
    let ready = c.ready(1);
    assert_eq!(ready.messages, vec![append(1, 2, 1, (1, 1), 1, vec![ent_data(1, 2, b"a"), ent_data(1, 3, b"b")])]);
}

// Message sizes: one append carries at most max_size_per_message_bytes of
// entries (but always at least one entry).
#[test]
fn append_respects_max_message_size() {
    let mut c = settled(&[1, 2, 3], |id| {
        let mut config = plain_config(id);
        config.max_size_per_message_bytes = 60; // one 24-byte header + 32 bytes of data
        config
    });
    for _ in 0..3 {
        c.node(1).propose(vec![7; 32]).unwrap();
    }
    c.ready(1); // the three appends are lost
                // Node 2 holds index 1 only; after its rejection the leader resends from 2.
    step(c.node(1), append_reject(2, 1, 1, 2, 0, 2));
    let ready = c.ready(1);
    let sizes: Vec<usize> = ready.messages.iter().map(|m| m.entries.len()).collect();
    assert_eq!(sizes, vec![1]);
}

// The Ready split: a leader's appends and heartbeats may leave before its
// own write; every answer (acks, votes) and every candidate request waits.
#[test]
fn messages_and_persisted_messages_split_by_kind() {
    let mut c = settled(&[1, 2, 3], plain_config);
    c.node(1).propose(b"x".to_vec()).unwrap();
    c.node(1).tick();
    c.node(1).tick();
    let ready = c.ready(1);
    assert!(!ready.messages.is_empty());
    assert!(ready.messages.iter().all(|m| matches!(m.kind, MessageKind::AppendEntries | MessageKind::Heartbeat)));
    assert!(ready.persisted_messages.is_empty());

    let append = of_kind(&ready.messages, MessageKind::AppendEntries).into_iter().find(|m| m.to.0 == 2).unwrap();
    step(c.node(2), append);
    let beat = of_kind(&ready.messages, MessageKind::Heartbeat).into_iter().find(|m| m.to.0 == 2).unwrap();
    step(c.node(2), beat);
    let ready = c.ready(2);
    // The acknowledgement promises durable entries; the heartbeat answer
    // promises nothing stored.
    let kinds: Vec<_> = ready.persisted_messages.iter().map(|m| m.kind).collect();
    assert_eq!(kinds, vec![MessageKind::AppendEntriesResponse]);
    let kinds: Vec<_> = ready.messages.iter().map(|m| m.kind).collect();
    assert_eq!(kinds, vec![MessageKind::HeartbeatResponse]);
}

// In-flight window recovery: if acknowledgements are lost, a heartbeat
// response frees one slot so replication does not stall forever.
#[test]
fn heartbeat_response_frees_a_full_window() {
    let mut c = settled(&[1, 2, 3], |id| {
        let mut config = plain_config(id);
        config.max_inflight_messages = 2;
        config
    });
    for data in [b"a", b"b", b"c"] {
        c.node(1).propose(data.to_vec()).unwrap();
        c.ready(1); // all appends are lost
    }
    step(c.node(1), msg(MessageKind::HeartbeatResponse, 2, 1, 1));
    let ready = c.ready(1);
    assert_eq!(ready.messages, vec![append(1, 2, 1, (3, 1), 1, vec![ent_data(1, 4, b"c")])]);
}

// The transport reports a follower unreachable: stop streaming (Replicate ->
// Probe) and resend from match + 1 in one probe.
#[test]
fn unreachable_follower_falls_back_to_probe() {
    let mut c = settled(&[1, 2, 3], plain_config);
    c.node(1).propose(b"a".to_vec()).unwrap();
    c.ready(1);
    c.node(1).report_unreachable(flotilla::raft::NodeId(2));
    assert_eq!(progress_of(&c.nodes[&1], 2), (1, 2, ProgressState::Probe));
    c.node(1).propose(b"b".to_vec()).unwrap();
    let to2: Vec<_> = c.ready(1).messages.into_iter().filter(|m| m.to.0 == 2).collect();
    assert_eq!(to2, vec![append(1, 2, 1, (1, 1), 1, vec![ent_data(1, 2, b"a"), ent_data(1, 3, b"b")])]);
    c.node(1).propose(b"c".to_vec()).unwrap();
    assert!(c.ready(1).messages.iter().all(|m| m.to.0 != 2), "one probe at a time");
}

// The heartbeat answer frees a slot only of a FULL window (its appends may
// be lost); otherwise acknowledgements alone free the window.
#[test]
fn a_heartbeat_answer_frees_no_slot_of_a_window_that_is_not_full() {
    let mut c = settled(&[1, 2, 3], |id| {
        let mut config = plain_config(id);
        config.max_inflight_messages = 2;
        config
    });
    c.node(1).propose(b"a".to_vec()).unwrap();
    let mut to2 = c.ready(1).messages.into_iter().filter(|m| m.to.0 == 2).count();
    step(c.node(1), msg(MessageKind::HeartbeatResponse, 2, 1, 1));
    for data in [b"b", b"c"] {
        c.node(1).propose(data.to_vec()).unwrap();
        let carrying = |m: &flotilla::raft::Message| m.to.0 == 2 && !m.entries.is_empty();
        to2 += c.ready(1).messages.iter().filter(|m| carrying(m)).count();
    }
    assert_eq!(to2, 2, "a and b fill the window; c waits");
}
