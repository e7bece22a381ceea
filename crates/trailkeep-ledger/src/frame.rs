//! Record framing: the byte layout of one record inside a segment (see FORMAT.md §3).
//!
//! Pure functions over byte slices; no I/O. Every decoder bounds what it accepts and reports the
//! byte offset of what it refuses.

/// Largest record payload (canonical event bytes) the ledger stores.
pub const MAX_DATA_LEN: usize = 4 * 1024 * 1024;
/// Longest account name.
pub const MAX_ACCOUNT_LEN: usize = 128;
/// Bytes before the body: body length (u32 LE) and CRC-32 of the body (u32 LE).
pub const FRAME_HEADER_LEN: usize = 8;
/// Fixed part of a body: position (u64), index (u64), received-at time (i64), account length
/// (u8).
pub const BODY_FIXED_LEN: usize = 25;
/// Offset of the account length in a body.
pub const ACCOUNT_LEN_AT: usize = 24;
/// Largest body length accepted by the decoder.
pub const MAX_BODY_LEN: usize = BODY_FIXED_LEN + MAX_ACCOUNT_LEN + MAX_DATA_LEN;
/// Bit set in the account-length byte of a tombstone (a record whose body retention removed;
/// only in sealed segments of version 2, FORMAT.md §4.1).
pub const TOMBSTONE_FLAG: u8 = 0x80;
/// Data of a tombstone: the removed record's leaf hash (32 bytes) and the index (u64) of the
/// retention record in the same account's log that states the removal.
pub const TOMBSTONE_DATA_LEN: usize = 40;

/// One decoded record, borrowing from the buffer it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawRecord<'a> {
    /// Global position (0-based, across all accounts).
    pub position: u64,
    /// Index within the account's log (0-based).
    pub index: u64,
    /// When the ledger received the record: nanoseconds since the Unix epoch (UTC). Metadata,
    /// not part of the leaf hash.
    pub received_at: i64,
    /// The account.
    pub account: &'a str,
    /// The stored bytes; for a tombstone ([`RawRecord::removed`]) the leaf hash and the index of
    /// the retention record ([`RawRecord::tombstone`]).
    pub data: &'a [u8],
    /// Whether this is a tombstone: retention removed the record's bytes.
    pub removed: bool,
}

impl RawRecord<'_> {
    /// For a tombstone: the removed record's leaf hash and the index of the retention record
    /// that states the removal.
    pub fn tombstone(&self) -> Option<([u8; 32], u64)> {
        if !self.removed || self.data.len() != TOMBSTONE_DATA_LEN {
            return None;
        }
        let leaf: [u8; 32] = self.data[..32].try_into().expect("32");
        let by = u64::from_le_bytes(self.data[32..40].try_into().expect("8"));
        Some((leaf, by))
    }

    /// The record's leaf hash: computed from the bytes, or stored in a tombstone.
    pub fn leaf(&self) -> [u8; 32] {
        match self.tombstone() {
            Some((leaf, _)) => leaf,
            None => crate::merkle::leaf_hash(self.data),
        }
    }
}

/// The data of a tombstone for a record with leaf hash `leaf`, removed as stated by the
/// retention record at index `by`.
pub fn tombstone_data(leaf: &[u8; 32], by: u64) -> [u8; TOMBSTONE_DATA_LEN] {
    let mut d = [0u8; TOMBSTONE_DATA_LEN];
    d[..32].copy_from_slice(leaf);
    d[32..].copy_from_slice(&by.to_le_bytes());
    d
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The buffer ends inside the frame (a torn write if at the tail).
    Truncated {
        /// Bytes the frame needs.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The body's CRC does not match.
    Crc {
        /// CRC stored in the frame.
        stored: u32,
        /// CRC of the bytes present.
        computed: u32,
    },
    /// The frame is structurally invalid.
    Malformed(String),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Truncated { needed, available } => {
                write!(
                    f,
                    "frame truncated: needs {needed} bytes, {available} present"
                )
            }
            FrameError::Crc { stored, computed } => {
                write!(
                    f,
                    "CRC mismatch: stored {stored:08x}, computed {computed:08x}"
                )
            }
            FrameError::Malformed(m) => write!(f, "malformed frame: {m}"),
        }
    }
}

/// Checks an account name: 1..=128 bytes of `[A-Za-z0-9._-]`, not starting with `.`.
pub fn valid_account(account: &str) -> bool {
    !account.is_empty()
        && account.len() <= MAX_ACCOUNT_LEN
        && !account.starts_with('.')
        && account
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Length of the encoded frame for these inputs.
pub fn frame_len(account: &str, data: &[u8]) -> usize {
    FRAME_HEADER_LEN + BODY_FIXED_LEN + account.len() + data.len()
}

/// Append one encoded frame to `out`. The caller has validated `account` and `data`.
pub fn encode_frame(
    out: &mut Vec<u8>,
    position: u64,
    index: u64,
    received_at: i64,
    account: &str,
    data: &[u8],
) {
    encode_frame_kind(out, position, index, received_at, account, data, false)
}

/// Append one encoded frame of a record or (with `removed`) of a tombstone, whose `data` is
/// [`tombstone_data`].
pub fn encode_frame_kind(
    out: &mut Vec<u8>,
    position: u64,
    index: u64,
    received_at: i64,
    account: &str,
    data: &[u8],
    removed: bool,
) {
    debug_assert!(valid_account(account) && data.len() <= MAX_DATA_LEN);
    debug_assert!(!removed || data.len() == TOMBSTONE_DATA_LEN);
    let body_len = BODY_FIXED_LEN + account.len() + data.len();
    let start = out.len();
    out.reserve(FRAME_HEADER_LEN + body_len);
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    let body_start = out.len();
    out.extend_from_slice(&position.to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(&received_at.to_le_bytes());
    out.push(account.len() as u8 | if removed { TOMBSTONE_FLAG } else { 0 });
    out.extend_from_slice(account.as_bytes());
    out.extend_from_slice(data);
    let crc = crc32fast::hash(&out[body_start..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Decode the frame at the start of `buf`. Returns the record and the frame's total length.
pub fn decode_frame(buf: &[u8]) -> Result<(RawRecord<'_>, usize), FrameError> {
    if buf.len() < FRAME_HEADER_LEN {
        return Err(FrameError::Truncated {
            needed: FRAME_HEADER_LEN,
            available: buf.len(),
        });
    }
    let total = stored_frame_len(buf)?;
    let stored = u32_at(buf, 4);
    let body = &buf[FRAME_HEADER_LEN..total];
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(FrameError::Crc { stored, computed });
    }
    decode_body(body).map(|r| (r, total))
}

/// The length of the frame at the start of `buf`, from its header alone (no CRC check): for
/// stepping over frames of a block whose CRC has been checked as a whole.
pub fn stored_frame_len(buf: &[u8]) -> Result<usize, FrameError> {
    if buf.len() < FRAME_HEADER_LEN {
        return Err(FrameError::Truncated {
            needed: FRAME_HEADER_LEN,
            available: buf.len(),
        });
    }
    let body_len = u32_at(buf, 0) as usize;
    if !(BODY_FIXED_LEN + 1..=MAX_BODY_LEN).contains(&body_len) {
        return Err(FrameError::Malformed(format!(
            "body length {body_len} outside {}..={MAX_BODY_LEN}",
            BODY_FIXED_LEN + 1
        )));
    }
    let total = FRAME_HEADER_LEN + body_len;
    if buf.len() < total {
        return Err(FrameError::Truncated {
            needed: total,
            available: buf.len(),
        });
    }
    Ok(total)
}

/// Decode a frame body whose CRC has been checked.
pub fn decode_body(body: &[u8]) -> Result<RawRecord<'_>, FrameError> {
    if body.len() < BODY_FIXED_LEN {
        return Err(FrameError::Malformed(
            "body shorter than its fixed part".into(),
        ));
    }
    let position = u64_at(body, 0);
    let index = u64_at(body, 8);
    let received_at = i64::from_le_bytes(body[16..24].try_into().expect("8"));
    let removed = body[ACCOUNT_LEN_AT] & TOMBSTONE_FLAG != 0;
    let alen = (body[ACCOUNT_LEN_AT] & !TOMBSTONE_FLAG) as usize;
    let rest = &body[BODY_FIXED_LEN..];
    if alen > rest.len() {
        return Err(FrameError::Malformed(format!(
            "account length {alen} exceeds body"
        )));
    }
    let account = std::str::from_utf8(&rest[..alen])
        .ok()
        .filter(|a| valid_account(a))
        .ok_or_else(|| FrameError::Malformed("invalid account name".into()))?;
    let data = &rest[alen..];
    if data.len() > MAX_DATA_LEN {
        return Err(FrameError::Malformed("record data too long".into()));
    }
    if removed && data.len() != TOMBSTONE_DATA_LEN {
        return Err(FrameError::Malformed(format!(
            "tombstone of {} bytes (expected {TOMBSTONE_DATA_LEN})",
            data.len()
        )));
    }
    if position > i64::MAX as u64 || index > position {
        return Err(FrameError::Malformed(format!(
            "impossible position {position} / index {index}"
        )));
    }
    Ok(RawRecord {
        position,
        index,
        received_at,
        account,
        data,
        removed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_every_truncation_is_detected() {
        let mut buf = Vec::new();
        encode_frame(
            &mut buf,
            7,
            3,
            1_700_000_000_000_000_000,
            "acme",
            b"{\"a\":1}",
        );
        let (r, n) = decode_frame(&buf).unwrap();
        assert_eq!(n, buf.len());
        assert_eq!(
            (r.position, r.index, r.account, r.data),
            (7, 3, "acme", &b"{\"a\":1}"[..])
        );
        assert_eq!(r.received_at, 1_700_000_000_000_000_000);
        for cut in 0..buf.len() {
            assert!(decode_frame(&buf[..cut]).is_err(), "cut {cut}");
        }
        for i in 0..buf.len() {
            let mut b = buf.clone();
            b[i] ^= 0x40;
            assert!(decode_frame(&b).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn tombstone_roundtrip() {
        let mut buf = Vec::new();
        let leaf = crate::merkle::leaf_hash(b"gone");
        encode_frame_kind(&mut buf, 9, 4, 5, "acme", &tombstone_data(&leaf, 12), true);
        let (r, n) = decode_frame(&buf).unwrap();
        assert_eq!(n, buf.len());
        assert!(r.removed);
        assert_eq!(r.tombstone(), Some((leaf, 12)));
        assert_eq!(r.leaf(), leaf);
        // A tombstone flag on a frame of the wrong length is refused.
        let mut bad = Vec::new();
        encode_frame(&mut bad, 9, 4, 5, "acme", b"short");
        bad[FRAME_HEADER_LEN + ACCOUNT_LEN_AT] |= TOMBSTONE_FLAG;
        let crc = crc32fast::hash(&bad[FRAME_HEADER_LEN..]);
        bad[4..8].copy_from_slice(&crc.to_le_bytes());
        assert!(decode_frame(&bad).is_err());
    }

    #[test]
    fn zero_filled_tail_is_not_a_record() {
        assert!(decode_frame(&[0u8; 64]).is_err());
    }

    #[test]
    fn account_names() {
        assert!(valid_account("acme-01_x.y"));
        assert!(!valid_account(""));
        assert!(!valid_account(".."));
        assert!(!valid_account("a/b"));
        assert!(!valid_account(&"a".repeat(129)));
    }
}
