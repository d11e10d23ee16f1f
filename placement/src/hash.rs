//! XXH64, the hash that places keys and shards on the ring.
//!
//! The ring's layout is part of Flotilla's wire contract: every node and
//! every client, in any language, on any platform, must map a key to the
//! same shard forever. So the hash is a published algorithm with reference
//! vectors (XXH64, seed 0) over bytes we choose explicitly, never Rust's
//! `Hash` trait or `DefaultHasher`, whose output the standard library does
//! not promise to keep across releases, word sizes or endianness.
//!
//! Written here rather than taken from a crate because it is ~60 lines, and
//! a dependency upgrade must never be able to move keys between shards.

const PRIME_1: u64 = 0x9E37_79B1_85EB_CA87;
const PRIME_2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const PRIME_3: u64 = 0x1656_67B1_9E37_79F9;
const PRIME_4: u64 = 0x85EB_CA77_C2B2_AE63;
const PRIME_5: u64 = 0x27D4_EB2F_1656_67C5;

/// The point of a key on the ring: XXH64 of the key's bytes, seed 0.
pub(crate) fn key_point(key: &[u8]) -> u64 {
    xxh64(key, 0)
}

/// The point of virtual node `vnode` of `shard`: XXH64 (seed 0) of the
/// 8 bytes `shard` as u32 little-endian followed by `vnode` as u32
/// little-endian. Fixed-width, explicit byte order: nothing here depends on
/// the platform.
pub(crate) fn vnode_point(shard: u32, vnode: u32) -> u64 {
    let mut bytes = [0u8; 8];
    bytes[..4].copy_from_slice(&shard.to_le_bytes());
    bytes[4..].copy_from_slice(&vnode.to_le_bytes());
    xxh64(&bytes, 0)
}

/// XXH64 as specified by the xxHash project (one-shot form).
pub(crate) fn xxh64(input: &[u8], seed: u64) -> u64 {
    let mut rest = input;
    let mut hash = if input.len() >= 32 {
        let mut lanes = [
            seed.wrapping_add(PRIME_1).wrapping_add(PRIME_2),
            seed.wrapping_add(PRIME_2),
            seed,
            seed.wrapping_sub(PRIME_1),
        ];
        while rest.len() >= 32 {
            for (i, lane) in lanes.iter_mut().enumerate() {
                *lane = round(*lane, read_u64(&rest[i * 8..]));
            }
            rest = &rest[32..];
        }
        let mut hash = lanes[0]
            .rotate_left(1)
            .wrapping_add(lanes[1].rotate_left(7))
            .wrapping_add(lanes[2].rotate_left(12))
            .wrapping_add(lanes[3].rotate_left(18));
        for lane in lanes {
            hash = merge_round(hash, lane);
        }
        hash
    } else {
        seed.wrapping_add(PRIME_5)
    };
    hash = hash.wrapping_add(input.len() as u64);
    finalize(hash, rest)
}

fn round(acc: u64, lane: u64) -> u64 {
    acc.wrapping_add(lane.wrapping_mul(PRIME_2)).rotate_left(31).wrapping_mul(PRIME_1)
}

fn merge_round(acc: u64, lane: u64) -> u64 {
    (acc ^ round(0, lane)).wrapping_mul(PRIME_1).wrapping_add(PRIME_4)
}

/// Mixes in the last < 32 bytes, then avalanches.
fn finalize(mut hash: u64, mut rest: &[u8]) -> u64 {
    while rest.len() >= 8 {
        hash ^= round(0, read_u64(rest));
        hash = hash.rotate_left(27).wrapping_mul(PRIME_1).wrapping_add(PRIME_4);
        rest = &rest[8..];
    }
    if rest.len() >= 4 {
        hash ^= u64::from(read_u32(rest)).wrapping_mul(PRIME_1);
        hash = hash.rotate_left(23).wrapping_mul(PRIME_2).wrapping_add(PRIME_3);
        rest = &rest[4..];
    }
    for &byte in rest {
        hash ^= u64::from(byte).wrapping_mul(PRIME_5);
        hash = hash.rotate_left(11).wrapping_mul(PRIME_1);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(PRIME_2);
    hash ^= hash >> 29;
    hash = hash.wrapping_mul(PRIME_3);
    hash ^ (hash >> 32)
}

/// Callers guarantee at least 8 bytes.
fn read_u64(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(word)
}

/// Callers guarantee at least 4 bytes.
fn read_u32(bytes: &[u8]) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[..4]);
    u32::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 101-byte buffer of xxHash's own sanity check (`BMK_sanityCheck`):
    /// long enough to reach the 32-byte stripes, the 8-, 4- and 1-byte tails.
    fn sanity_buffer() -> Vec<u8> {
        const PRIME32_1: u32 = 2_654_435_761;
        let mut generator = PRIME32_1;
        (0..101)
            .map(|_| {
                let byte = (generator >> 24) as u8;
                generator = generator.wrapping_mul(generator);
                byte
            })
            .collect()
    }

    #[test]
    fn matches_the_reference_sanity_vectors() {
        const PRIME32_1: u64 = 2_654_435_761;
        let buffer = sanity_buffer();
        let cases: [(usize, u64, u64); 8] = [
            (0, 0, 0xEF46_DB37_51D8_E999),
            (0, PRIME32_1, 0xAC75_FDA2_929B_17EF),
            (1, 0, 0x4FCE_394C_C889_52D8),
            (1, PRIME32_1, 0x7398_40CB_819F_A723),
            (14, 0, 0xCFFA_8DB8_81BC_3A3D),
            (14, PRIME32_1, 0x5B96_1158_5EFC_C9CB),
            (101, 0, 0x0EAB_5433_84F8_78AD),
            (101, PRIME32_1, 0xCAA6_5939_306F_1E21),
        ];
        for (len, seed, expected) in cases {
            assert_eq!(xxh64(&buffer[..len], seed), expected, "len {len}, seed {seed}");
        }
    }

    #[test]
    fn matches_the_published_string_vectors() {
        assert_eq!(xxh64(b"a", 0), 0xD24E_C4F1_A98C_6E5B);
        assert_eq!(xxh64(b"abc", 0), 0x44BC_2CF5_AD77_0999);
        assert_eq!(xxh64(b"Nobody inspects the spammish repetition", 0), 0xFBCE_A83C_8A37_8BF1);
    }

    #[test]
    fn key_and_vnode_points_are_pinned() {
        assert_eq!(key_point(b""), 0xEF46_DB37_51D8_E999);
        assert_eq!(vnode_point(0, 0), xxh64(&[0; 8], 0));
        assert_eq!(vnode_point(0x0403_0201, 0x0807_0605), xxh64(&[1, 2, 3, 4, 5, 6, 7, 8], 0));
    }
}
