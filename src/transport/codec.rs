//! Conversions between the Raft core's types and the wire types of
//! `proto/raft.proto`. Encoding is infallible; decoding validates everything
//! that came off the wire and names what was wrong, so a bad peer closes its
//! own stream instead of reaching a group.
//!
//! Lossless: for every message the core produces,
//! `from_proto(to_proto(..))` gives back the same messages in the same
//! per-group order. The one exception is `Snapshot::data`, which never
//! travels on the replication stream (it is a file sent on the
//! InstallSnapshot RPC; the core's store always leaves it empty).

use std::collections::HashMap;

use prost::Message as _;

use crate::proto;
use crate::raft::{
    ConfChange, ConfChangeKind, ConfChangeSingle, ConfChangeTransition, ConfState, Entry, EntryPayload, GroupId,
    LogIndex, Message, MessageKind, NodeId, Snapshot, SnapshotMetadata, Term,
};

/// Why a message off the wire was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("the batch names no sender (from_node 0)")]
    NoSender,
    #[error("the batch claims to come from node {0}, which is this node")]
    FromSelf(NodeId),
    #[error("group {group}: {detail}")]
    InvalidMessage { group: GroupId, detail: String },
    #[error("{0}")]
    Invalid(String),
}

/// Encodes one turn's messages from node `from` to node `to` as one batch.
/// Each group's trailing heartbeats (then trailing heartbeat responses) are
/// coalesced into the batch's compact lists; everything else, and any
/// heartbeat the compact form cannot describe, goes as a `GroupMessage`.
/// Per-group order survives because `from_proto` reads `messages`, then
/// `heartbeats`, then `heartbeat_responses`.
pub fn to_proto(from: NodeId, to: NodeId, messages: Vec<(GroupId, Message)>) -> proto::MessageBatch {
    let slots = slots(from, to, &messages);
    let mut batch = proto::MessageBatch { from_node: from.0, ..Default::default() };
    for ((group, message), slot) in messages.into_iter().zip(slots) {
        match slot {
            Slot::Inline => {
                batch.messages.push(proto::GroupMessage { group_id: group.0, message: Some(message_to_proto(message)) })
            }
            Slot::Heartbeat => batch.heartbeats.push(proto::Heartbeat {
                group_id: group.0,
                term: message.term.0,
                commit: message.commit.0,
                context: message.context,
                lease_tick: message.lease_tick,
                quiesce: message.quiesce,
                index: message.index.0,
                log_term: message.log_term.0,
            }),
            Slot::Response => batch.heartbeat_responses.push(proto::HeartbeatResponse {
                group_id: group.0,
                term: message.term.0,
                context: message.context,
                lease_tick: message.lease_tick,
            }),
        }
    }
    batch
}

/// Decodes a batch received by node `local`. Returns the sending node and
/// the messages, each group's in the order it sent them. Every message must
/// come from the batch's `from_node` and be addressed to `local`.
pub fn from_proto(batch: proto::MessageBatch, local: NodeId) -> Result<(NodeId, Vec<(GroupId, Message)>), CodecError> {
    let from = NodeId(batch.from_node);
    if from.0 == 0 {
        return Err(CodecError::NoSender);
    }
    if from == local {
        return Err(CodecError::FromSelf(local));
    }
    let total = batch.messages.len() + batch.heartbeats.len() + batch.heartbeat_responses.len();
    let mut out = Vec::with_capacity(total);
    for item in batch.messages {
        let group = GroupId(item.group_id);
        let invalid = |detail: String| CodecError::InvalidMessage { group, detail };
        let message = item.message.ok_or_else(|| invalid("a group message without its message".into()))?;
        let message = message_from_proto(message).map_err(|e| invalid(e.to_string()))?;
        if message.from != from {
            return Err(invalid(format!("a message from node {} in a batch from node {from}", message.from)));
        }
        if message.to != local {
            return Err(invalid(format!("a message to node {}, but this is node {local}", message.to)));
        }
        out.push((group, message));
    }
    for beat in batch.heartbeats {
        let mut message = Message::new(MessageKind::Heartbeat, from, local, Term(beat.term));
        message.commit = LogIndex(beat.commit);
        message.context = beat.context;
        message.lease_tick = beat.lease_tick;
        message.quiesce = beat.quiesce;
        message.index = LogIndex(beat.index);
        message.log_term = Term(beat.log_term);
        out.push((GroupId(beat.group_id), message));
    }
    for answer in batch.heartbeat_responses {
        let mut message = Message::new(MessageKind::HeartbeatResponse, from, local, Term(answer.term));
        message.context = answer.context;
        message.lease_tick = answer.lease_tick;
        out.push((GroupId(answer.group_id), message));
    }
    Ok((from, out))
}

/// Where one message goes in a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Inline,
    Heartbeat,
    Response,
}

/// Picks each message's slot: walking each group's messages backwards, the
/// longest suffix shaped `Heartbeat* HeartbeatResponse*` is coalesced.
fn slots(from: NodeId, to: NodeId, messages: &[(GroupId, Message)]) -> Vec<Slot> {
    let mut phase: HashMap<GroupId, Slot> = HashMap::new();
    let mut slots = vec![Slot::Inline; messages.len()];
    for (i, (group, message)) in messages.iter().enumerate().rev() {
        let phase = phase.entry(*group).or_insert(Slot::Response);
        let routed = message.from == from && message.to == to;
        let slot = match (*phase, message.kind) {
            (Slot::Response, MessageKind::HeartbeatResponse) if routed && fits_response(message) => Slot::Response,
            (Slot::Response | Slot::Heartbeat, MessageKind::Heartbeat) if routed && fits_heartbeat(message) => {
                Slot::Heartbeat
            }
            _ => Slot::Inline,
        };
        *phase = slot;
        slots[i] = slot;
    }
    slots
}

/// Whether `proto::Heartbeat` describes the message exactly.
fn fits_heartbeat(m: &Message) -> bool {
    m.entries.is_empty() && m.snapshot.is_none() && !m.reject && m.reject_hint == LogIndex::ZERO && !m.leader_transfer
}

/// Whether `proto::HeartbeatResponse` describes the message exactly.
fn fits_response(m: &Message) -> bool {
    fits_heartbeat(m)
        && m.index == LogIndex::ZERO
        && m.log_term == Term::ZERO
        && m.commit == LogIndex::ZERO
        && !m.quiesce
}

/// One message, field by field. `Snapshot::data` is not carried.
pub fn message_to_proto(m: Message) -> proto::Message {
    proto::Message {
        kind: kind_to_proto(m.kind) as i32,
        from: m.from.0,
        to: m.to.0,
        term: m.term.0,
        log_term: m.log_term.0,
        index: m.index.0,
        entries: m.entries.into_iter().map(entry_to_proto).collect(),
        commit: m.commit.0,
        snapshot: m.snapshot.map(|s| metadata_to_proto(&s.metadata)),
        reject: m.reject,
        reject_hint: m.reject_hint.0,
        context: m.context,
        leader_transfer: m.leader_transfer,
        lease_tick: m.lease_tick,
        quiesce: m.quiesce,
    }
}

/// Decodes and checks one message: a known kind, nonzero endpoints,
/// entries only on appends (consecutive, right after `index`), snapshot
/// metadata exactly on InstallSnapshot.
pub fn message_from_proto(m: proto::Message) -> Result<Message, CodecError> {
    let kind = kind_from_proto(m.kind)?;
    let invalid = |detail: String| Err(CodecError::Invalid(detail));
    if m.from == 0 || m.to == 0 {
        return invalid(format!("a {kind:?} message from node {} to node {} (node 0 is not a node)", m.from, m.to));
    }
    if !m.entries.is_empty() && kind != MessageKind::AppendEntries {
        return invalid(format!("{} entries on a {kind:?} message", m.entries.len()));
    }
    match (kind, &m.snapshot) {
        (MessageKind::InstallSnapshot, None) => {
            return invalid("an InstallSnapshot message without snapshot metadata".into())
        }
        (MessageKind::InstallSnapshot, Some(_)) | (_, None) => {}
        (_, Some(_)) => return invalid(format!("snapshot metadata on a {kind:?} message")),
    }
    let mut entries = Vec::with_capacity(m.entries.len());
    for (i, entry) in m.entries.into_iter().enumerate() {
        let expected = m.index.checked_add(1 + i as u64);
        if Some(entry.index) != expected {
            let expected = expected.map_or("none".to_string(), |e| e.to_string());
            return invalid(format!(
                "entry {i} has index {}, expected {expected} (after index {})",
                entry.index, m.index
            ));
        }
        entries.push(entry_from_proto(entry)?);
    }
    let snapshot = match m.snapshot {
        Some(metadata) => Some(Snapshot { metadata: metadata_from_proto(metadata)?, data: Vec::new() }),
        None => None,
    };
    Ok(Message {
        kind,
        from: NodeId(m.from),
        to: NodeId(m.to),
        term: Term(m.term),
        log_term: Term(m.log_term),
        index: LogIndex(m.index),
        entries,
        commit: LogIndex(m.commit),
        snapshot,
        reject: m.reject,
        reject_hint: LogIndex(m.reject_hint),
        context: m.context,
        leader_transfer: m.leader_transfer,
        lease_tick: m.lease_tick,
        quiesce: m.quiesce,
    })
}

fn kind_to_proto(kind: MessageKind) -> proto::MessageKind {
    use proto::MessageKind as P;
    match kind {
        MessageKind::AppendEntries => P::AppendEntries,
        MessageKind::AppendEntriesResponse => P::AppendEntriesResponse,
        MessageKind::RequestVote => P::RequestVote,
        MessageKind::RequestVoteResponse => P::RequestVoteResponse,
        MessageKind::RequestPreVote => P::RequestPreVote,
        MessageKind::RequestPreVoteResponse => P::RequestPreVoteResponse,
        MessageKind::Heartbeat => P::Heartbeat,
        MessageKind::HeartbeatResponse => P::HeartbeatResponse,
        MessageKind::InstallSnapshot => P::InstallSnapshot,
        MessageKind::TimeoutNow => P::TimeoutNow,
        MessageKind::ReadIndex => P::ReadIndex,
        MessageKind::ReadIndexResponse => P::ReadIndexResponse,
    }
}

fn kind_from_proto(value: i32) -> Result<MessageKind, CodecError> {
    use proto::MessageKind as P;
    let kind = P::try_from(value).map_err(|_| CodecError::Invalid(format!("unknown message kind {value}")))?;
    Ok(match kind {
        P::Unspecified => return Err(CodecError::Invalid("the message kind is unspecified".into())),
        P::AppendEntries => MessageKind::AppendEntries,
        P::AppendEntriesResponse => MessageKind::AppendEntriesResponse,
        P::RequestVote => MessageKind::RequestVote,
        P::RequestVoteResponse => MessageKind::RequestVoteResponse,
        P::RequestPreVote => MessageKind::RequestPreVote,
        P::RequestPreVoteResponse => MessageKind::RequestPreVoteResponse,
        P::Heartbeat => MessageKind::Heartbeat,
        P::HeartbeatResponse => MessageKind::HeartbeatResponse,
        P::InstallSnapshot => MessageKind::InstallSnapshot,
        P::TimeoutNow => MessageKind::TimeoutNow,
        P::ReadIndex => MessageKind::ReadIndex,
        P::ReadIndexResponse => MessageKind::ReadIndexResponse,
    })
}

/// One entry; a conf change is carried as an encoded `proto::ConfChange`.
pub fn entry_to_proto(entry: Entry) -> proto::Entry {
    let (kind, data) = match entry.payload {
        EntryPayload::Normal(data) => (proto::EntryKind::Normal, data),
        EntryPayload::ConfChange(change) => {
            (proto::EntryKind::ConfChange, conf_change_to_proto(&change).encode_to_vec())
        }
    };
    proto::Entry { term: entry.term.0, index: entry.index.0, kind: kind as i32, data }
}

pub fn entry_from_proto(entry: proto::Entry) -> Result<Entry, CodecError> {
    let invalid = |detail: String| CodecError::Invalid(format!("entry at index {}: {detail}", entry.index));
    if entry.term == 0 {
        return Err(invalid("term 0 (entries are created in a term >= 1)".into()));
    }
    let payload = match proto::EntryKind::try_from(entry.kind) {
        Ok(proto::EntryKind::Normal) => EntryPayload::Normal(entry.data),
        Ok(proto::EntryKind::ConfChange) => {
            let change = proto::ConfChange::decode(entry.data.as_slice())
                .map_err(|e| invalid(format!("the conf change does not decode: {e}")))?;
            EntryPayload::ConfChange(conf_change_from_proto(change).map_err(|e| invalid(e.to_string()))?)
        }
        Err(_) => return Err(invalid(format!("unknown entry kind {}", entry.kind))),
    };
    Ok(Entry { term: Term(entry.term), index: LogIndex(entry.index), payload })
}

pub fn conf_change_to_proto(change: &ConfChange) -> proto::ConfChange {
    let transition = match change.transition {
        ConfChangeTransition::Auto => proto::ConfChangeTransition::Auto,
        ConfChangeTransition::JointAutoLeave => proto::ConfChangeTransition::JointAutoLeave,
        ConfChangeTransition::JointExplicit => proto::ConfChangeTransition::JointExplicit,
    };
    let changes = change
        .changes
        .iter()
        .map(|single| {
            let kind = match single.kind {
                ConfChangeKind::AddVoter => proto::ConfChangeKind::AddVoter,
                ConfChangeKind::AddLearner => proto::ConfChangeKind::AddLearner,
                ConfChangeKind::RemoveNode => proto::ConfChangeKind::RemoveNode,
            };
            proto::ConfChangeSingle { kind: kind as i32, node: single.node.0 }
        })
        .collect();
    proto::ConfChange { transition: transition as i32, changes }
}

pub fn conf_change_from_proto(change: proto::ConfChange) -> Result<ConfChange, CodecError> {
    let invalid = |detail: String| Err(CodecError::Invalid(detail));
    let transition = match proto::ConfChangeTransition::try_from(change.transition) {
        Ok(proto::ConfChangeTransition::Auto) => ConfChangeTransition::Auto,
        Ok(proto::ConfChangeTransition::JointAutoLeave) => ConfChangeTransition::JointAutoLeave,
        Ok(proto::ConfChangeTransition::JointExplicit) => ConfChangeTransition::JointExplicit,
        Err(_) => return invalid(format!("unknown conf change transition {}", change.transition)),
    };
    let mut changes = Vec::with_capacity(change.changes.len());
    for single in change.changes {
        let kind = match proto::ConfChangeKind::try_from(single.kind) {
            Ok(proto::ConfChangeKind::AddVoter) => ConfChangeKind::AddVoter,
            Ok(proto::ConfChangeKind::AddLearner) => ConfChangeKind::AddLearner,
            Ok(proto::ConfChangeKind::RemoveNode) => ConfChangeKind::RemoveNode,
            Ok(proto::ConfChangeKind::Unspecified) => return invalid("a conf change of unspecified kind".into()),
            Err(_) => return invalid(format!("unknown conf change kind {}", single.kind)),
        };
        if single.node == 0 {
            return invalid(format!("a {kind:?} conf change for node 0"));
        }
        changes.push(ConfChangeSingle { kind, node: NodeId(single.node) });
    }
    Ok(ConfChange { transition, changes })
}

pub fn metadata_to_proto(metadata: &SnapshotMetadata) -> proto::SnapshotMetadata {
    let ids = |set: &std::collections::BTreeSet<NodeId>| set.iter().map(|n| n.0).collect();
    let conf = &metadata.conf_state;
    proto::SnapshotMetadata {
        index: metadata.index.0,
        term: metadata.term.0,
        conf_state: Some(proto::ConfState {
            voters: ids(&conf.voters),
            learners: ids(&conf.learners),
            voters_outgoing: ids(&conf.voters_outgoing),
            learners_next: ids(&conf.learners_next),
            auto_leave: conf.auto_leave,
        }),
    }
}

/// Snapshot metadata; a missing configuration is the empty one, node 0 in
/// any member list is refused.
pub fn metadata_from_proto(metadata: proto::SnapshotMetadata) -> Result<SnapshotMetadata, CodecError> {
    let conf = metadata.conf_state.unwrap_or_default();
    let ids = |list: Vec<u64>, what: &str| {
        if list.contains(&0) {
            return Err(CodecError::Invalid(format!("snapshot configuration lists node 0 among its {what}")));
        }
        Ok(list.into_iter().map(NodeId).collect())
    };
    let conf_state = ConfState {
        voters: ids(conf.voters, "voters")?,
        learners: ids(conf.learners, "learners")?,
        voters_outgoing: ids(conf.voters_outgoing, "outgoing voters")?,
        learners_next: ids(conf.learners_next, "next learners")?,
        auto_leave: conf.auto_leave,
    };
    Ok(SnapshotMetadata { index: LogIndex(metadata.index), term: Term(metadata.term), conf_state })
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
