//! The codec: lossless round trips for every message the core produces, the
//! coalescing rule and its per-group order, and the refusal of malformed
//! input with a message that names what was wrong.

use std::collections::BTreeMap;

use super::*;

const LEADER: NodeId = NodeId(1);
const FOLLOWER: NodeId = NodeId(2);

fn msg(kind: MessageKind) -> Message {
    Message::new(kind, LEADER, FOLLOWER, Term(7))
}

fn joint_conf() -> ConfState {
    ConfState {
        voters: [1, 2, 3].map(NodeId).into(),
        learners: [4].map(NodeId).into(),
        voters_outgoing: [1, 2, 5].map(NodeId).into(),
        learners_next: [5].map(NodeId).into(),
        auto_leave: true,
    }
}

/// One representative of every kind, with the fields the core sets for it.
fn every_kind() -> Vec<Message> {
    let mut append = msg(MessageKind::AppendEntries);
    append.index = LogIndex(10);
    append.log_term = Term(6);
    append.commit = LogIndex(9);
    append.entries = vec![
        Entry::new_normal(Term(6), LogIndex(11), b"put a=1".to_vec()),
        Entry::new_normal(Term(7), LogIndex(12), Vec::new()),
        Entry {
            term: Term(7),
            index: LogIndex(13),
            payload: EntryPayload::ConfChange(ConfChange {
                transition: ConfChangeTransition::JointExplicit,
                changes: vec![
                    ConfChangeSingle { kind: ConfChangeKind::AddVoter, node: NodeId(4) },
                    ConfChangeSingle { kind: ConfChangeKind::AddLearner, node: NodeId(5) },
                    ConfChangeSingle { kind: ConfChangeKind::RemoveNode, node: NodeId(3) },
                ],
            }),
        },
        Entry { term: Term(7), index: LogIndex(14), payload: EntryPayload::ConfChange(ConfChange::leave_joint()) },
        Entry {
            term: Term(7),
            index: LogIndex(15),
            payload: EntryPayload::ConfChange(ConfChange {
                transition: ConfChangeTransition::JointAutoLeave,
                changes: vec![ConfChangeSingle { kind: ConfChangeKind::AddVoter, node: NodeId(9) }],
            }),
        },
    ];
    let mut append_reject = msg(MessageKind::AppendEntriesResponse);
    append_reject.reject = true;
    append_reject.index = LogIndex(10);
    append_reject.log_term = Term(5);
    append_reject.reject_hint = LogIndex(8);
    let mut append_ok = msg(MessageKind::AppendEntriesResponse);
    append_ok.index = LogIndex(15);
    let mut vote = msg(MessageKind::RequestVote);
    vote.index = LogIndex(20);
    vote.log_term = Term(6);
    vote.leader_transfer = true;
    let mut vote_no = msg(MessageKind::RequestVoteResponse);
    vote_no.reject = true;
    let mut pre_vote = msg(MessageKind::RequestPreVote);
    pre_vote.index = LogIndex(20);
    pre_vote.log_term = Term(6);
    let pre_vote_yes = msg(MessageKind::RequestPreVoteResponse);
    let mut heartbeat = msg(MessageKind::Heartbeat);
    heartbeat.commit = LogIndex(9);
    heartbeat.context = b"read-17".to_vec();
    heartbeat.lease_tick = 12345;
    let mut quiesce = msg(MessageKind::Heartbeat);
    quiesce.quiesce = true;
    quiesce.index = LogIndex(15);
    quiesce.log_term = Term(7);
    quiesce.commit = LogIndex(15);
    quiesce.lease_tick = 99;
    let mut heartbeat_answer = msg(MessageKind::HeartbeatResponse);
    heartbeat_answer.context = b"read-17".to_vec();
    heartbeat_answer.lease_tick = 12345;
    let mut snapshot = msg(MessageKind::InstallSnapshot);
    snapshot.snapshot = Some(Snapshot {
        metadata: SnapshotMetadata { index: LogIndex(100), term: Term(6), conf_state: joint_conf() },
        data: Vec::new(),
    });
    let timeout_now = msg(MessageKind::TimeoutNow);
    let mut read_index = msg(MessageKind::ReadIndex);
    read_index.context = vec![0, 1, 2, 255];
    let mut read_answer = msg(MessageKind::ReadIndexResponse);
    read_answer.index = LogIndex(42);
    read_answer.context = vec![0, 1, 2, 255];
    vec![
        append,
        append_reject,
        append_ok,
        vote,
        vote_no,
        pre_vote,
        pre_vote_yes,
        heartbeat,
        quiesce,
        heartbeat_answer,
        snapshot,
        timeout_now,
        read_index,
        read_answer,
    ]
}

fn by_group(messages: &[(GroupId, Message)]) -> BTreeMap<GroupId, Vec<Message>> {
    let mut out: BTreeMap<GroupId, Vec<Message>> = BTreeMap::new();
    for (group, message) in messages {
        out.entry(*group).or_default().push(message.clone());
    }
    out
}

fn round_trip(messages: Vec<(GroupId, Message)>) -> (proto::MessageBatch, Vec<(GroupId, Message)>) {
    let batch = to_proto(LEADER, FOLLOWER, messages);
    let wire = batch.encode_to_vec();
    let decoded = proto::MessageBatch::decode(wire.as_slice()).expect("decodes");
    let (from, out) = from_proto(decoded, FOLLOWER).expect("valid");
    assert_eq!(from, LEADER);
    (batch, out)
}

#[test]
fn every_message_kind_round_trips_on_its_own() {
    let all = every_kind();
    let kinds: std::collections::HashSet<_> = all.iter().map(|m| m.kind).collect();
    assert_eq!(kinds.len(), 12, "a representative of every MessageKind");
    for message in all {
        let decoded = message_from_proto(message_to_proto(message.clone())).expect("valid");
        assert_eq!(decoded, message);
        let (_, out) = round_trip(vec![(GroupId(3), message.clone())]);
        assert_eq!(out, vec![(GroupId(3), message)]);
    }
}

#[test]
fn a_mixed_batch_round_trips_per_group_and_coalesces_heartbeats() {
    let mut messages = Vec::new();
    for (i, message) in every_kind().into_iter().enumerate() {
        messages.push((GroupId(i as u64 % 3), message)); // group 0 (the meta group) too
    }
    for group in 10..20 {
        let mut beat = msg(MessageKind::Heartbeat);
        beat.commit = LogIndex(group);
        messages.push((GroupId(group), beat));
    }
    let mut answer = msg(MessageKind::HeartbeatResponse);
    answer.lease_tick = 5;
    messages.push((GroupId(30), answer));
    let (batch, out) = round_trip(messages.clone());
    assert_eq!(by_group(&out), by_group(&messages));
    assert_eq!(out.len(), messages.len());
    assert!(batch.heartbeats.len() >= 10, "the idle groups' heartbeats are coalesced");
    assert_eq!(batch.heartbeat_responses.len(), 1);
}

#[test]
fn only_trailing_heartbeats_are_coalesced_so_group_order_holds() {
    let beat = msg(MessageKind::Heartbeat);
    let append = every_kind().remove(0);
    let mut answer = msg(MessageKind::HeartbeatResponse);
    answer.lease_tick = 1;
    let group = GroupId(4);
    // heartbeat, append, heartbeat, answer, answer: the first heartbeat must
    // stay inline (it precedes the append), the rest coalesce.
    let messages = vec![
        (group, beat.clone()),
        (group, append),
        (group, beat.clone()),
        (group, answer.clone()),
        (group, answer.clone()),
        (GroupId(5), answer.clone()),
        (GroupId(5), beat.clone()),
    ];
    let (batch, out) = round_trip(messages.clone());
    assert_eq!(out.iter().filter(|(g, _)| *g == group).collect::<Vec<_>>(), messages[..5].iter().collect::<Vec<_>>());
    assert_eq!(by_group(&out), by_group(&messages));
    assert_eq!(batch.messages.len(), 3, "group 4's first two and group 5's answer before its heartbeat");
    assert_eq!(batch.heartbeats.len(), 2);
    assert_eq!(batch.heartbeat_responses.len(), 2);
}

#[test]
fn heartbeats_the_compact_form_cannot_describe_travel_inline() {
    let mut odd = msg(MessageKind::Heartbeat);
    odd.reject_hint = LogIndex(3);
    let mut odd_answer = msg(MessageKind::HeartbeatResponse);
    odd_answer.commit = LogIndex(2);
    let messages = vec![(GroupId(1), odd), (GroupId(2), odd_answer)];
    let (batch, out) = round_trip(messages.clone());
    assert_eq!(batch.messages.len(), 2);
    assert_eq!(out, messages);
}

fn group_message(message: proto::Message) -> proto::MessageBatch {
    proto::MessageBatch {
        from_node: LEADER.0,
        messages: vec![proto::GroupMessage { group_id: 8, message: Some(message) }],
        ..Default::default()
    }
}

fn refused(batch: proto::MessageBatch) -> String {
    from_proto(batch, FOLLOWER).expect_err("must be refused").to_string()
}

fn proto_of(message: Message) -> proto::Message {
    message_to_proto(message)
}

#[test]
fn malformed_batches_are_refused_naming_the_problem() {
    let ok = proto_of(msg(MessageKind::TimeoutNow));
    let cases: Vec<(proto::MessageBatch, &str)> = vec![
        (proto::MessageBatch { from_node: 0, ..group_message(ok.clone()) }, "from_node 0"),
        (proto::MessageBatch { from_node: 2, ..group_message(ok.clone()) }, "which is this node"),
        (
            proto::MessageBatch {
                from_node: 1,
                messages: vec![proto::GroupMessage { group_id: 8, message: None }],
                ..Default::default()
            },
            "group 8: a group message without its message",
        ),
        (group_message(proto::Message { kind: 0, ..ok.clone() }), "unspecified"),
        (group_message(proto::Message { kind: 99, ..ok.clone() }), "unknown message kind 99"),
        (group_message(proto::Message { from: 3, ..ok.clone() }), "from node 3 in a batch from node 1"),
        (group_message(proto::Message { to: 5, ..ok.clone() }), "to node 5, but this is node 2"),
        (group_message(proto::Message { from: 0, ..ok.clone() }), "node 0 is not a node"),
        (
            group_message(proto_of(msg(MessageKind::InstallSnapshot))),
            "InstallSnapshot message without snapshot metadata",
        ),
        (
            group_message(proto::Message { snapshot: Some(Default::default()), ..ok.clone() }),
            "snapshot metadata on a TimeoutNow",
        ),
        (
            group_message(proto::Message {
                entries: vec![entry_to_proto(Entry::new_normal(Term(1), LogIndex(1), vec![]))],
                ..ok.clone()
            }),
            "1 entries on a TimeoutNow",
        ),
    ];
    for (batch, expected) in cases {
        let error = refused(batch);
        assert!(error.contains(expected), "{error:?} should mention {expected:?}");
    }
}

fn append_with(entries: Vec<proto::Entry>) -> proto::MessageBatch {
    let mut append = proto_of(msg(MessageKind::AppendEntries));
    append.index = 4;
    append.entries = entries;
    group_message(append)
}

#[test]
fn malformed_entries_are_refused_naming_the_problem() {
    let normal = |index: u64| entry_to_proto(Entry::new_normal(Term(2), LogIndex(index), b"x".to_vec()));
    let conf = |change: proto::ConfChange| proto::Entry {
        term: 2,
        index: 5,
        kind: proto::EntryKind::ConfChange as i32,
        data: change.encode_to_vec(),
    };
    let single = |kind: i32, node: u64| proto::ConfChange {
        transition: 0,
        changes: vec![proto::ConfChangeSingle { kind, node }],
    };
    let cases: Vec<(proto::MessageBatch, &str)> = vec![
        (append_with(vec![normal(5), normal(7)]), "entry 1 has index 7, expected 6"),
        (append_with(vec![normal(4)]), "entry 0 has index 4, expected 5"),
        (append_with(vec![proto::Entry { term: 0, ..normal(5) }]), "entry at index 5: term 0"),
        (append_with(vec![proto::Entry { kind: 7, ..normal(5) }]), "unknown entry kind 7"),
        (
            append_with(vec![proto::Entry { kind: 1, data: vec![0xff, 0xff, 0xff], ..normal(5) }]),
            "the conf change does not decode",
        ),
        (append_with(vec![conf(single(0, 3))]), "conf change of unspecified kind"),
        (append_with(vec![conf(single(12, 3))]), "unknown conf change kind 12"),
        (append_with(vec![conf(single(1, 0))]), "AddVoter conf change for node 0"),
        (
            append_with(vec![conf(proto::ConfChange { transition: 9, changes: vec![] })]),
            "unknown conf change transition 9",
        ),
    ];
    for (batch, expected) in cases {
        let error = refused(batch);
        assert!(error.contains(expected), "{error:?} should mention {expected:?}");
        assert!(error.starts_with("group 8: "), "{error:?} names the group");
    }
}

#[test]
fn snapshot_metadata_with_node_zero_is_refused() {
    let mut install = proto_of(every_kind().remove(10));
    assert_eq!(install.kind, proto::MessageKind::InstallSnapshot as i32);
    install.snapshot.as_mut().unwrap().conf_state.as_mut().unwrap().learners.push(0);
    let error = refused(group_message(install));
    assert!(error.contains("node 0 among its learners"), "{error}");
}

#[test]
fn missing_conf_state_decodes_as_the_empty_configuration() {
    let metadata = metadata_from_proto(proto::SnapshotMetadata { index: 3, term: 2, conf_state: None }).unwrap();
    assert_eq!(metadata, SnapshotMetadata { index: LogIndex(3), term: Term(2), conf_state: ConfState::default() });
}

#[test]
fn an_empty_batch_is_valid() {
    let (from, out) = from_proto(to_proto(LEADER, FOLLOWER, Vec::new()), FOLLOWER).unwrap();
    assert_eq!((from, out.len()), (LEADER, 0));
}
