//! Commands as they travel in log entries.
//!
//! Encoding v1: `[1][op u8][key len u32 BE][key]` then, per op:
//! put `[value len u32][value]`; delete nothing; compare-and-swap
//! `[expected: option][new: option]` where an option is `[0]` (absent) or
//! `[1][len u32][bytes]`. A new format gets a new leading tag; old entries
//! in logs and snapshots keep decoding.

use super::KvError;
use crate::raft::{GroupId, LogIndex};
use crate::storage::codec::Reader;

const COMMAND_V1: u8 = 1;
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_COMPARE_AND_SWAP: u8 = 3;

/// Limits checked before proposing (keys are copied into every index and
/// message; values travel in log entries that are replicated whole).
pub const MAX_KEY_BYTES: usize = 4 << 10;
pub const MAX_VALUE_BYTES: usize = 1 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
    /// Sets `key` to `new` (deletes it when `None`) only if its current
    /// value is `expected` (`None`: the key must not exist).
    CompareAndSwap {
        key: Vec<u8>,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    },
}

impl Command {
    pub fn key(&self) -> &[u8] {
        match self {
            Command::Put { key, .. } | Command::Delete { key } | Command::CompareAndSwap { key, .. } => key,
        }
    }

    /// Checks a client's command before it is proposed.
    pub fn validate(&self) -> Result<(), KvError> {
        let key = self.key();
        if key.is_empty() {
            return Err(KvError::InvalidRequest("the key is empty".into()));
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(KvError::InvalidRequest(format!(
                "the key is {} bytes; the limit is {MAX_KEY_BYTES}",
                key.len()
            )));
        }
        let values: Vec<&Vec<u8>> = match self {
            Command::Put { value, .. } => vec![value],
            Command::Delete { .. } => vec![],
            Command::CompareAndSwap { expected, new, .. } => expected.iter().chain(new.iter()).collect(),
        };
        match values.iter().find(|v| v.len() > MAX_VALUE_BYTES) {
            Some(v) => {
                Err(KvError::InvalidRequest(format!("a value is {} bytes; the limit is {MAX_VALUE_BYTES}", v.len())))
            }
            None => Ok(()),
        }
    }
}

pub fn encode_command(command: &Command) -> Vec<u8> {
    let (op, key) = match command {
        Command::Put { key, .. } => (OP_PUT, key),
        Command::Delete { key } => (OP_DELETE, key),
        Command::CompareAndSwap { key, .. } => (OP_COMPARE_AND_SWAP, key),
    };
    let mut out = Vec::with_capacity(10 + key.len());
    out.push(COMMAND_V1);
    out.push(op);
    put_bytes(&mut out, key);
    match command {
        Command::Put { value, .. } => put_bytes(&mut out, value),
        Command::Delete { .. } => {}
        Command::CompareAndSwap { expected, new, .. } => {
            put_option(&mut out, expected.as_deref());
            put_option(&mut out, new.as_deref());
        }
    }
    out
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn put_option(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => out.push(0),
        Some(bytes) => {
            out.push(1);
            put_bytes(out, bytes);
        }
    }
}

/// Decodes the command of the entry at `index` of `group`; any damage is an
/// error naming both, never a panic.
pub fn decode_command(group: GroupId, index: LogIndex, bytes: &[u8]) -> Result<Command, KvError> {
    decode(bytes).map_err(|detail| KvError::InvalidCommand { group, index, detail })
}

fn decode(bytes: &[u8]) -> Result<Command, String> {
    let mut reader = Reader::new(bytes);
    let version = reader.u8()?;
    if version != COMMAND_V1 {
        return Err(format!("unknown command format {version}"));
    }
    let op = reader.u8()?;
    let key = take_bytes(&mut reader)?;
    let command = match op {
        OP_PUT => Command::Put { key, value: take_bytes(&mut reader)? },
        OP_DELETE => Command::Delete { key },
        OP_COMPARE_AND_SWAP => {
            let expected = take_option(&mut reader)?;
            let new = take_option(&mut reader)?;
            Command::CompareAndSwap { key, expected, new }
        }
        other => return Err(format!("unknown operation {other}")),
    };
    reader.finish()?;
    Ok(command)
}

fn take_bytes(reader: &mut Reader<'_>) -> Result<Vec<u8>, String> {
    let len = reader.u32()? as usize;
    Ok(reader.take(len)?.to_vec())
}

fn take_option(reader: &mut Reader<'_>) -> Result<Option<Vec<u8>>, String> {
    match reader.u8()? {
        0 => Ok(None),
        1 => Ok(Some(take_bytes(reader)?)),
        other => Err(format!("bad option flag {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Command> {
        vec![
            Command::Put { key: b"k".to_vec(), value: b"v".to_vec() },
            Command::Put { key: b"empty".to_vec(), value: vec![] },
            Command::Delete { key: b"gone".to_vec() },
            Command::CompareAndSwap { key: b"c".to_vec(), expected: None, new: Some(b"1".to_vec()) },
            Command::CompareAndSwap { key: b"c".to_vec(), expected: Some(b"1".to_vec()), new: None },
        ]
    }

    #[test]
    fn commands_round_trip() {
        for command in samples() {
            let bytes = encode_command(&command);
            assert_eq!(decode_command(GroupId(1), LogIndex(1), &bytes).unwrap(), command);
        }
    }

    #[test]
    fn every_truncation_and_a_bad_tag_are_errors_naming_group_and_index() {
        for command in samples() {
            let bytes = encode_command(&command);
            for len in 0..bytes.len() {
                let error = decode_command(GroupId(7), LogIndex(42), &bytes[..len]).unwrap_err().to_string();
                assert!(error.contains("group 7") && error.contains("index 42"), "{error}");
            }
            let mut bad = bytes.clone();
            bad[0] = 9;
            let error = decode_command(GroupId(7), LogIndex(42), &bad).unwrap_err().to_string();
            assert!(error.contains("unknown command format 9"), "{error}");
            let mut long = bytes;
            long.push(0);
            assert!(decode_command(GroupId(7), LogIndex(42), &long).is_err(), "trailing bytes are refused");
        }
    }

    #[test]
    fn validation_names_the_problem() {
        let empty = Command::Delete { key: vec![] };
        assert!(empty.validate().unwrap_err().to_string().contains("key is empty"));
        let big = Command::Put { key: b"k".to_vec(), value: vec![0; MAX_VALUE_BYTES + 1] };
        assert!(big.validate().unwrap_err().to_string().contains("limit"));
        assert!(samples().iter().all(|c| c.validate().is_ok()));
    }
}
