//! The kept checkpoints of one account: append-only chunk objects
//! `log/<account>/checkpoints/<first size>` of CRC-framed signed notes (FORMAT.md §7).
//!
//! Pure framing and parsing; the ledger appends, syncs and cuts torn tails.

use crate::note::MAX_NOTE_LEN;

/// Notes per chunk before a new chunk object is started.
pub const NOTES_PER_CHUNK: usize = 4096;

/// Object name of the chunk whose first checkpoint has tree size `first_size`.
pub fn chunk_name(account: &str, first_size: u64) -> String {
    format!("log/{account}/checkpoints/{first_size:020}")
}

/// Prefix of an account's chunk objects.
pub fn chunk_prefix(account: &str) -> String {
    format!("log/{account}/checkpoints/")
}

/// Frame one note: length (u32 LE), CRC-32 of the note (u32 LE), the note.
pub fn encode(note: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + note.len());
    out.extend_from_slice(&(note.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(note.as_bytes()).to_le_bytes());
    out.extend_from_slice(note.as_bytes());
    out
}

/// A parsed chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// (byte offset, note text) of every valid frame, in order.
    pub notes: Vec<(u64, String)>,
    /// Length of the valid prefix.
    pub valid_len: u64,
    /// Why parsing stopped early: (byte offset, reason).
    pub tail: Option<(u64, String)>,
}

/// Parse a chunk, stopping at the first frame that is cut, too long, not UTF-8 or fails its CRC.
pub fn parse(bytes: &[u8]) -> Chunk {
    let mut notes = Vec::new();
    let mut off = 0usize;
    let mut tail = None;
    while off < bytes.len() {
        let rest = &bytes[off..];
        if rest.len() < 8 {
            tail = Some((off as u64, "frame header cut off".to_string()));
            break;
        }
        let len = u32::from_le_bytes(rest[0..4].try_into().expect("4")) as usize;
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4"));
        if len == 0 || len > MAX_NOTE_LEN {
            tail = Some((off as u64, format!("note length {len} out of range")));
            break;
        }
        let Some(body) = rest.get(8..8 + len) else {
            tail = Some((off as u64, "note cut off".to_string()));
            break;
        };
        if crc32fast::hash(body) != crc {
            tail = Some((off as u64, "note CRC mismatch".to_string()));
            break;
        }
        let Ok(text) = std::str::from_utf8(body) else {
            tail = Some((off as u64, "note is not UTF-8".to_string()));
            break;
        };
        notes.push((off as u64, text.to_owned()));
        off += 8 + len;
    }
    Chunk {
        notes,
        valid_len: off as u64,
        tail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_torn_tail() {
        let mut b = encode("a\n1\nx\n\n— k sig\n");
        b.extend(encode("a\n2\ny\n\n— k sig\n"));
        let whole = parse(&b);
        assert_eq!(whole.notes.len(), 2);
        assert_eq!(whole.tail, None);
        for cut in 1..b.len() {
            let c = parse(&b[..b.len() - cut]);
            assert!(c.notes.len() < 2 && c.tail.is_some() || c.valid_len == (b.len() - cut) as u64);
        }
        b[10] ^= 1;
        assert_eq!(parse(&b).notes.len(), 0);
    }
}
