//! Value encodings of the storage layer. Every value starts with a format
//! tag byte so the layout can evolve; log entries also carry a CRC32 of the
//! rest, checked on every read (etcd #14143: never trust bytes read back).

use std::collections::BTreeSet;

use super::error::{Result, StorageError};
use crate::raft::{
    ConfChange, ConfChangeKind, ConfChangeSingle, ConfChangeTransition, ConfState, Entry, EntryPayload, GroupId,
    HardState, LogIndex, NodeId, Term,
};

const ENTRY_V1: u8 = 1;
const STATE_V1: u8 = 1;
const KIND_NORMAL: u8 = 0;
const KIND_CONF_CHANGE: u8 = 1;

/// A little cursor that turns short reads into errors instead of panics.
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    pub fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        if self.bytes.len() < n {
            return Err(format!("needs {n} more bytes, has {}", self.bytes.len()));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    pub fn u8(&mut self) -> std::result::Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    pub fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    pub fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }

    pub fn finish(&self) -> std::result::Result<(), String> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(format!("{} trailing bytes", self.bytes.len()))
        }
    }
}

pub fn encode_entry(entry: &Entry) -> Vec<u8> {
    let mut body = Vec::with_capacity(16 + entry.size_bytes() as usize);
    body.extend_from_slice(&entry.term.0.to_be_bytes());
    match &entry.payload {
        EntryPayload::Normal(data) => {
            body.push(KIND_NORMAL);
            body.extend_from_slice(data);
        }
        EntryPayload::ConfChange(change) => {
            body.push(KIND_CONF_CHANGE);
            encode_conf_change(change, &mut body);
        }
    }
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(ENTRY_V1);
    out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Decodes the entry stored at `index` of `group`.
pub fn decode_entry(group: GroupId, index: LogIndex, bytes: &[u8]) -> Result<Entry> {
    let corrupt = |detail: String| StorageError::corrupt(group, index, "log entry", detail);
    let mut reader = Reader::new(bytes);
    let tag = reader.u8().map_err(corrupt)?;
    if tag != ENTRY_V1 {
        return Err(corrupt(format!("unknown format tag {tag}")));
    }
    let checksum = reader.u32().map_err(corrupt)?;
    let body = reader.rest();
    let actual = crc32fast::hash(body);
    if actual != checksum {
        return Err(corrupt(format!("checksum {actual:08x} does not match stored {checksum:08x}")));
    }
    let mut body = Reader::new(body);
    let term = Term(body.u64().map_err(corrupt)?);
    let payload = match body.u8().map_err(corrupt)? {
        KIND_NORMAL => EntryPayload::Normal(body.rest().to_vec()),
        KIND_CONF_CHANGE => EntryPayload::ConfChange(decode_conf_change(&mut body).map_err(corrupt)?),
        other => return Err(corrupt(format!("unknown entry kind {other}"))),
    };
    Ok(Entry { term, index, payload })
}

fn encode_conf_change(change: &ConfChange, out: &mut Vec<u8>) {
    out.push(match change.transition {
        ConfChangeTransition::Auto => 0,
        ConfChangeTransition::JointAutoLeave => 1,
        ConfChangeTransition::JointExplicit => 2,
    });
    out.extend_from_slice(&(change.changes.len() as u32).to_be_bytes());
    for single in &change.changes {
        out.push(match single.kind {
            ConfChangeKind::AddVoter => 0,
            ConfChangeKind::AddLearner => 1,
            ConfChangeKind::RemoveNode => 2,
        });
        out.extend_from_slice(&single.node.0.to_be_bytes());
    }
}

fn decode_conf_change(reader: &mut Reader<'_>) -> std::result::Result<ConfChange, String> {
    let transition = match reader.u8()? {
        0 => ConfChangeTransition::Auto,
        1 => ConfChangeTransition::JointAutoLeave,
        2 => ConfChangeTransition::JointExplicit,
        other => return Err(format!("unknown conf change transition {other}")),
    };
    let count = reader.u32()?;
    let mut changes = Vec::with_capacity(count.min(1024) as usize);
    for _ in 0..count {
        let kind = match reader.u8()? {
            0 => ConfChangeKind::AddVoter,
            1 => ConfChangeKind::AddLearner,
            2 => ConfChangeKind::RemoveNode,
            other => return Err(format!("unknown conf change kind {other}")),
        };
        changes.push(ConfChangeSingle { kind, node: NodeId(reader.u64()?) });
    }
    reader.finish()?;
    Ok(ConfChange { transition, changes })
}

pub fn encode_hard_state(state: &HardState) -> Vec<u8> {
    let mut out = vec![STATE_V1];
    out.extend_from_slice(&state.term.0.to_be_bytes());
    out.extend_from_slice(&state.vote.map_or(0, |v| v.0).to_be_bytes());
    out.extend_from_slice(&state.commit.0.to_be_bytes());
    out
}

pub fn decode_hard_state(group: GroupId, bytes: &[u8]) -> Result<HardState> {
    let corrupt = |detail: String| StorageError::corrupt(group, LogIndex::ZERO, "hard state", detail);
    let mut reader = Reader::new(bytes);
    let tag = reader.u8().map_err(corrupt)?;
    if tag != STATE_V1 {
        return Err(corrupt(format!("unknown format tag {tag}")));
    }
    let term = Term(reader.u64().map_err(corrupt)?);
    let vote = reader.u64().map_err(corrupt)?;
    let commit = LogIndex(reader.u64().map_err(corrupt)?);
    reader.finish().map_err(corrupt)?;
    Ok(HardState { term, vote: (vote != 0).then_some(NodeId(vote)), commit })
}

/// An (index, term) pair: the truncated state and the apply state.
pub fn encode_index_term(index: LogIndex, term: Term) -> Vec<u8> {
    let mut out = vec![STATE_V1];
    out.extend_from_slice(&index.0.to_be_bytes());
    out.extend_from_slice(&term.0.to_be_bytes());
    out
}

pub fn decode_index_term(group: GroupId, what: &'static str, bytes: &[u8]) -> Result<(LogIndex, Term)> {
    let corrupt = |detail: String| StorageError::corrupt(group, LogIndex::ZERO, what, detail);
    let mut reader = Reader::new(bytes);
    let tag = reader.u8().map_err(corrupt)?;
    if tag != STATE_V1 {
        return Err(corrupt(format!("unknown format tag {tag}")));
    }
    let index = LogIndex(reader.u64().map_err(corrupt)?);
    let term = Term(reader.u64().map_err(corrupt)?);
    reader.finish().map_err(corrupt)?;
    Ok((index, term))
}

pub fn encode_conf_state(state: &ConfState) -> Vec<u8> {
    let mut out = vec![STATE_V1, u8::from(state.auto_leave)];
    for set in [&state.voters, &state.learners, &state.voters_outgoing, &state.learners_next] {
        out.extend_from_slice(&(set.len() as u32).to_be_bytes());
        for id in set {
            out.extend_from_slice(&id.0.to_be_bytes());
        }
    }
    out
}

pub fn decode_conf_state(group: GroupId, bytes: &[u8]) -> Result<ConfState> {
    let corrupt = |detail: String| StorageError::corrupt(group, LogIndex::ZERO, "conf state", detail);
    let mut reader = Reader::new(bytes);
    let tag = reader.u8().map_err(corrupt)?;
    if tag != STATE_V1 {
        return Err(corrupt(format!("unknown format tag {tag}")));
    }
    let auto_leave = reader.u8().map_err(corrupt)? != 0;
    let mut sets: Vec<BTreeSet<NodeId>> = Vec::with_capacity(4);
    for _ in 0..4 {
        let count = reader.u32().map_err(corrupt)?;
        let mut set = BTreeSet::new();
        for _ in 0..count {
            set.insert(NodeId(reader.u64().map_err(corrupt)?));
        }
        sets.push(set);
    }
    reader.finish().map_err(corrupt)?;
    let mut sets = sets.into_iter();
    let mut next = || sets.next().expect("four sets");
    Ok(ConfState { voters: next(), learners: next(), voters_outgoing: next(), learners_next: next(), auto_leave })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_entries() -> Vec<Entry> {
        vec![
            Entry::new_normal(Term(3), LogIndex(7), b"hello".to_vec()),
            Entry::new_normal(Term(3), LogIndex(8), Vec::new()),
            Entry {
                term: Term(4),
                index: LogIndex(9),
                payload: EntryPayload::ConfChange(ConfChange {
                    transition: ConfChangeTransition::JointExplicit,
                    changes: vec![
                        ConfChangeSingle { kind: ConfChangeKind::AddVoter, node: NodeId(4) },
                        ConfChangeSingle { kind: ConfChangeKind::RemoveNode, node: NodeId(1) },
                    ],
                }),
            },
        ]
    }

    #[test]
    fn entries_round_trip() {
        for entry in sample_entries() {
            let bytes = encode_entry(&entry);
            assert_eq!(decode_entry(GroupId(1), entry.index, &bytes).unwrap(), entry);
        }
    }

    #[test]
    fn every_single_byte_corruption_of_an_entry_is_an_error_naming_group_and_index() {
        for entry in sample_entries() {
            let bytes = encode_entry(&entry);
            for position in 0..bytes.len() {
                let mut bad = bytes.clone();
                bad[position] ^= 0x5a;
                let error = decode_entry(GroupId(42), entry.index, &bad).unwrap_err().to_string();
                assert!(error.contains("group 42") && error.contains(&format!("index {}", entry.index)), "{error}");
            }
            for length in 0..bytes.len() {
                assert!(decode_entry(GroupId(42), entry.index, &bytes[..length]).is_err());
            }
        }
    }

    #[test]
    fn states_round_trip_and_reject_garbage() {
        let hard = HardState { term: Term(9), vote: Some(NodeId(2)), commit: LogIndex(77) };
        assert_eq!(decode_hard_state(GroupId(1), &encode_hard_state(&hard)).unwrap(), hard);
        let no_vote = HardState { vote: None, ..hard };
        assert_eq!(decode_hard_state(GroupId(1), &encode_hard_state(&no_vote)).unwrap(), no_vote);
        let conf = ConfState {
            voters: [NodeId(1), NodeId(2)].into(),
            learners: [NodeId(5)].into(),
            voters_outgoing: [NodeId(1), NodeId(3)].into(),
            learners_next: [NodeId(3)].into(),
            auto_leave: true,
        };
        assert_eq!(decode_conf_state(GroupId(1), &encode_conf_state(&conf)).unwrap(), conf);
        let pair = (LogIndex(5), Term(2));
        assert_eq!(decode_index_term(GroupId(1), "apply state", &encode_index_term(pair.0, pair.1)).unwrap(), pair);
        for garbage in [&b""[..], b"\x02", b"\x01\x00", &[1u8; 40]] {
            assert!(decode_hard_state(GroupId(1), garbage).is_err());
            assert!(decode_conf_state(GroupId(1), garbage).is_err());
            assert!(decode_index_term(GroupId(1), "apply state", garbage).is_err());
        }
    }
}
