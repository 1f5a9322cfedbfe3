//! Redis Cluster key slots: `CRC16(key or its hash tag) mod 16384`, as the cluster computes
//! them (CRC16-XMODEM, the `crc16` crate redis-rs itself uses).

/// Number of hash slots in a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// The hash slot of `key`, honouring `{hash tags}` as the cluster does.
pub fn key_slot(key: impl AsRef<[u8]>) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(hashed_part(key.as_ref())) % SLOTS
}

/// The part of the key that is hashed: the content of the first `{...}` when it is non-empty.
fn hashed_part(key: &[u8]) -> &[u8] {
    let Some(open) = key.iter().position(|&b| b == b'{') else {
        return key;
    };
    match key[open + 1..].iter().position(|&b| b == b'}') {
        Some(0) | None => key,
        Some(len) => &key[open + 1..open + 1 + len],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_slots() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(key_slot("123456789"), 0x31C3);
        assert_eq!(key_slot("foo"), 12182);
        assert_eq!(key_slot("{user1000}.following"), key_slot("user1000"));
        assert_eq!(key_slot("foo{}{bar}"), key_slot("foo{}{bar}".as_bytes()));
        assert_eq!(key_slot("foo{{bar}}zap"), key_slot("{bar"));
    }
}
