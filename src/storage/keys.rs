//! Key encoding for every column family. Big-endian integers, group id
//! first, so each group owns one contiguous range of each column family and
//! a group's log is a prefix scan in index order.
//!
//! | column family | key |
//! |---|---|
//! | `raft_log`   | group (u64 BE) ‖ index (u64 BE) |
//! | `raft_state` | group ‖ tag (u8) |
//! | `data`       | group ‖ user key |
//! | `meta`       | tag (u8) ‖ … |

use crate::raft::{GroupId, LogIndex};

pub const CF_RAFT_LOG: &str = "raft_log";
pub const CF_RAFT_STATE: &str = "raft_state";
pub const CF_DATA: &str = "data";
pub const CF_META: &str = "meta";
pub const COLUMN_FAMILIES: [&str; 4] = [CF_RAFT_LOG, CF_RAFT_STATE, CF_DATA, CF_META];

/// Tags under a group's prefix in `raft_state`.
pub const STATE_HARD: u8 = 0x01;
/// The index and term of the last entry removed from the log (the snapshot
/// boundary): the log's first index is this + 1.
pub const STATE_TRUNCATED: u8 = 0x02;
/// The configuration as of the applied index.
pub const STATE_CONF: u8 = 0x03;
/// A snapshot install whose Raft state is written but whose data may not be
/// (the name of its file in the snapshot directory): finished on restart.
pub const STATE_INSTALLING: u8 = 0x04;

/// Tags of `meta` keys.
pub const META_FORMAT_VERSION: u8 = 0x01;
pub const META_NODE_ID: u8 = 0x02;
/// meta: tag ‖ group -> applied index and term of the group's state machine.
pub const META_APPLY_STATE: u8 = 0x03;
/// meta: tag -> the cluster this node was created in (shard count, members).
pub const META_CLUSTER: u8 = 0x04;

pub fn log_key(group: GroupId, index: LogIndex) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&group.0.to_be_bytes());
    key[8..].copy_from_slice(&index.0.to_be_bytes());
    key
}

/// Splits a `raft_log` key; `None` if it is not 16 bytes.
pub fn decode_log_key(key: &[u8]) -> Option<(GroupId, LogIndex)> {
    let group = u64::from_be_bytes(key.get(..8)?.try_into().ok()?);
    let index = u64::from_be_bytes(key.get(8..16)?.try_into().ok()?);
    (key.len() == 16).then_some((GroupId(group), LogIndex(index)))
}

/// `[start, end)` covering the group's log entries with index in `[low, high)`.
pub fn log_range(group: GroupId, low: LogIndex, high: LogIndex) -> ([u8; 16], [u8; 16]) {
    (log_key(group, low), log_key(group, high))
}

pub fn state_key(group: GroupId, tag: u8) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[..8].copy_from_slice(&group.0.to_be_bytes());
    key[8] = tag;
    key
}

pub fn data_key(group: GroupId, user_key: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + user_key.len());
    key.extend_from_slice(&group.0.to_be_bytes());
    key.extend_from_slice(user_key);
    key
}

/// The user key inside a `data` key of `group`, if it is one.
pub fn user_key(group: GroupId, data_key: &[u8]) -> Option<&[u8]> {
    data_key.strip_prefix(&group.0.to_be_bytes()[..])
}

/// `[start, end)` of every key with the group's 8-byte prefix; the end is
/// the next group's prefix (`None` for the last possible group).
pub fn group_range(group: GroupId) -> (Vec<u8>, Option<Vec<u8>>) {
    let start = group.0.to_be_bytes().to_vec();
    let end = group.0.checked_add(1).map(|next| next.to_be_bytes().to_vec());
    (start, end)
}

/// `[start, end)` of the group's data keys that start with `prefix`.
pub fn data_prefix_range(group: GroupId, prefix: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
    let start = data_key(group, prefix);
    (start.clone(), prefix_successor(start))
}

/// The smallest key greater than every key starting with `prefix`.
pub fn prefix_successor(mut prefix: Vec<u8>) -> Option<Vec<u8>> {
    while let Some(last) = prefix.pop() {
        if last < 0xff {
            prefix.push(last + 1);
            return Some(prefix);
        }
    }
    None
}

pub fn meta_key(tag: u8) -> [u8; 1] {
    [tag]
}

pub fn apply_state_key(group: GroupId) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = META_APPLY_STATE;
    key[1..].copy_from_slice(&group.0.to_be_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_keys_sort_by_group_then_index() {
        let keys = [
            log_key(GroupId(1), LogIndex(1)),
            log_key(GroupId(1), LogIndex(2)),
            log_key(GroupId(1), LogIndex(256)),
            log_key(GroupId(1), LogIndex(u64::MAX)),
            log_key(GroupId(2), LogIndex(0)),
            log_key(GroupId(256), LogIndex(1)),
        ];
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(log_key(GroupId(0x0102), LogIndex(0x0304)), [0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 3, 4]);
    }

    #[test]
    fn log_keys_round_trip_and_reject_wrong_lengths() {
        let key = log_key(GroupId(7), LogIndex(99));
        assert_eq!(decode_log_key(&key), Some((GroupId(7), LogIndex(99))));
        assert_eq!(decode_log_key(&key[..15]), None);
        assert_eq!(decode_log_key(&[key.as_slice(), &[0]].concat()), None);
    }

    #[test]
    fn data_keys_stay_inside_their_group_range() {
        let (start, end) = group_range(GroupId(5));
        let end = end.unwrap();
        for user in [&b""[..], b"a", b"\xff\xff\xff", &[0xff; 40]] {
            let key = data_key(GroupId(5), user);
            assert!(key.as_slice() >= start.as_slice() && key.as_slice() < end.as_slice());
            assert_eq!(user_key(GroupId(5), &key), Some(user));
        }
        assert_eq!(group_range(GroupId(u64::MAX)).1, None);
    }

    #[test]
    fn prefix_ranges_cover_exactly_the_prefix() {
        let (start, end) = data_prefix_range(GroupId(1), b"ab\xff");
        let end = end.unwrap();
        assert_eq!(end, data_key(GroupId(1), b"ac"));
        assert!(data_key(GroupId(1), b"ab\xff\xff\x01").as_slice() < end.as_slice());
        assert!(data_key(GroupId(1), b"ab\xff").as_slice() >= start.as_slice());
        assert_eq!(prefix_successor(vec![0xff, 0xff]), None);
        assert_eq!(prefix_successor(vec![1, 0xff]), Some(vec![2]));
    }

    #[test]
    fn state_and_meta_keys_are_distinct_per_group_and_tag() {
        assert_ne!(state_key(GroupId(1), STATE_HARD), state_key(GroupId(1), STATE_TRUNCATED));
        assert_ne!(state_key(GroupId(1), STATE_HARD), state_key(GroupId(2), STATE_HARD));
        assert_eq!(apply_state_key(GroupId(3))[0], META_APPLY_STATE);
        assert_ne!(&apply_state_key(GroupId(3))[..1], &meta_key(META_NODE_ID)[..]);
    }
}
