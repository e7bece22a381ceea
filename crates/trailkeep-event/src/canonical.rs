//! RFC 8785 JSON Canonicalization Scheme (JCS) for any [`serde_json::Value`].
//!
//! Owns: the byte string that the ledger hashes (DESIGN §4). Must never: depend on the
//! order in which a `serde_json::Map` iterates (a `preserve_order` build of serde_json
//! would change it), allocate per key, or fail — every `Value` has a canonical form.
//!
//! The rules (RFC 8785 §3.2):
//! * no whitespace;
//! * object members sorted by their keys compared as arrays of UTF-16 code units;
//! * strings escaped minimally: `\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, other
//!   controls as `\u00xx` (lower-case hex), everything else as UTF-8;
//! * numbers printed as ECMAScript `Number.prototype.toString` prints the IEEE-754
//!   double ([`ryu_js`] does this). Integers with magnitude up to 2^53 are printed
//!   exactly; larger integers are first converted to the nearest double, as JCS
//!   prescribes (normalisation stores such integers as strings so nothing is lost).
//!
//! The crates on crates.io (`serde_json_canonicalizer`, `serde_jcs`) work through
//! serde's `Serializer` and re-parse every key to sort it, which costs more than the
//! whole rest of normalisation; this module only needs `Value`, so it walks it
//! directly and uses `ryu-js` for the one hard part, the number format.

use serde_json::{Map, Number, Value};
use std::cmp::Ordering;

/// The RFC 8785 canonical bytes of `value`, in a vector of exactly their length.
pub fn to_canonical_vec(value: &Value) -> Vec<u8> {
    thread_local! {
        // Written into a reused buffer and copied once: no growth reallocations and no
        // spare capacity kept by every stored event.
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with(|buf| match buf.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            write_canonical(value, &mut buf);
            let out = buf.as_slice().to_vec();
            if buf.capacity() > 1 << 20 {
                *buf = Vec::new(); // do not keep a huge buffer around after a huge value
            }
            out
        }
        Err(_) => {
            let mut out = Vec::with_capacity(2048);
            write_canonical(value, &mut out);
            out
        }
    })
}

/// The RFC 8785 canonical form of `value` as a `String`.
pub fn to_canonical_string(value: &Value) -> String {
    let bytes = to_canonical_vec(value);
    // The writer only ever emits UTF-8 (copied from `str`s) and ASCII.
    String::from_utf8(bytes).unwrap_or_default()
}

/// Append the RFC 8785 canonical bytes of `value` to `out`.
pub fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => write_object(map, out),
    }
}

/// The length in bytes of the canonical form of `value`, without keeping it.
pub fn canonical_len(value: &Value) -> usize {
    // Simple and exact; only used on the (rare) size-policy path.
    to_canonical_vec(value).len()
}

fn write_object(map: &Map<String, Value>, out: &mut Vec<u8>) {
    out.push(b'{');
    // A default serde_json `Map` is a BTreeMap, already in UTF-8 order, which is the
    // UTF-16 order unless rare characters meet: check, and sort only when needed.
    let mut keys = map.keys();
    let sorted = match keys.next() {
        None => true,
        Some(first) => {
            let mut prev = first;
            keys.all(|k| {
                let ok = utf16_cmp(prev, k) == Ordering::Less;
                prev = k;
                ok
            })
        }
    };
    if sorted {
        for (i, (key, value)) in map.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_string(key, out);
            out.push(b':');
            write_canonical(value, out);
        }
    } else {
        let mut entries: Vec<(&String, &Value)> = map.iter().collect();
        entries.sort_unstable_by(|a, b| utf16_cmp(a.0, b.0));
        for (i, (key, value)) in entries.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_string(key, out);
            out.push(b':');
            write_canonical(value, out);
        }
    }
    out.push(b'}');
}

/// Compare two strings as sequences of UTF-16 code units (RFC 8785 §3.2.3).
///
/// UTF-8 byte order equals code point order, which equals UTF-16 order except
/// when a supplementary character (4 UTF-8 bytes, lead byte `0xF0..`) meets a
/// character in U+E000..U+FFFF (lead byte `0xEE`/`0xEF`): UTF-16 puts the
/// surrogate pair (0xD800..) first. So compare bytes, and only at the first
/// difference check for that case.
pub fn utf16_cmp(a: &str, b: &str) -> Ordering {
    let (ab, bb) = (a.as_bytes(), b.as_bytes());
    let common = ab.iter().zip(bb).position(|(x, y)| x != y);
    let Some(i) = common else {
        return ab.len().cmp(&bb.len());
    };
    let (x, y) = (ab[i], bb[i]);
    if x < 0xEE && y < 0xEE {
        return x.cmp(&y);
    }
    // Slow path: compare code units from the start of the differing character.
    let start = (0..=i)
        .rev()
        .find(|&j| a.is_char_boundary(j) && b.is_char_boundary(j))
        .unwrap_or(0);
    a[start..].encode_utf16().cmp(b[start..].encode_utf16())
}

const MAX_SAFE: u64 = 1 << 53;

fn write_number(n: &Number, out: &mut Vec<u8>) {
    if let Some(u) = n.as_u64() {
        if u <= MAX_SAFE {
            out.extend_from_slice(itoa::Buffer::new().format(u).as_bytes());
            return;
        }
    } else if let Some(i) = n.as_i64()
        && i.unsigned_abs() <= MAX_SAFE
    {
        out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
        return;
    }
    // A float, or an integer beyond 2^53 that JCS treats as the nearest double.
    let f = n.as_f64().unwrap_or(0.0);
    write_f64(f, out);
}

fn write_f64(f: f64, out: &mut Vec<u8>) {
    if f == 0.0 {
        // ES prints both +0 and -0 as "0".
        out.push(b'0');
        return;
    }
    // serde_json's Value never holds NaN or infinities.
    out.extend_from_slice(ryu_js::Buffer::new().format_finite(f).as_bytes());
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Append `s` as a JCS string literal (quotes included).
pub fn write_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Skip 8 bytes at a time while none needs escaping.
        if i + 8 <= bytes.len() {
            let mut chunk = [0u8; 8];
            chunk.copy_from_slice(&bytes[i..i + 8]);
            if !needs_escape(u64::from_le_bytes(chunk)) {
                i += 8;
                continue;
            }
        }
        let b = bytes[i];
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0C => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1F => b"",
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xF) as usize]);
        } else {
            out.extend_from_slice(escape);
        }
        i += 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Whether any byte of `w` is a control character, `"` or `\\` (SWAR).
#[inline]
fn needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    // Bytes below 0x20: (b - 0x20) borrows into the high bit, for bytes without it set.
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
    (control | has_zero(w ^ (ONES * b'"' as u64)) | has_zero(w ^ (ONES * b'\\' as u64))) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf16_order_differs_from_utf8_for_supplementary() {
        // U+1F600 (surrogates D83D DE00) sorts before U+FB33 in UTF-16, after it in UTF-8.
        assert_eq!(utf16_cmp("\u{1F600}", "\u{FB33}"), Ordering::Less);
        assert_eq!(utf16_cmp("a\u{1F600}", "a\u{FB33}"), Ordering::Less);
        assert_eq!(utf16_cmp("abc", "abd"), Ordering::Less);
        assert_eq!(utf16_cmp("ab", "abc"), Ordering::Less);
        assert_eq!(utf16_cmp("\u{E9}", "\u{E9}"), Ordering::Equal);
    }

    #[test]
    fn swar_escape_check_matches_the_bytewise_rule() {
        for b in 0u8..=255 {
            for pos in 0..8 {
                let mut chunk = [b'a'; 8];
                chunk[pos] = b;
                let want = b < 0x20 || b == b'"' || b == b'\\';
                assert_eq!(
                    needs_escape(u64::from_le_bytes(chunk)),
                    want,
                    "byte {b:#x} at {pos}"
                );
            }
        }
        let mut out = Vec::new();
        write_string("0123456789abcdef\"x\ny\u{1}z\\0123456789", &mut out);
        assert_eq!(out, b"\"0123456789abcdef\\\"x\\ny\\u0001z\\\\0123456789\"");
    }
}
