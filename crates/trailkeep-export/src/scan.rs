//! A lazy scan of a JSON object's top-level members: finds the values of a few named members
//! as byte ranges of the text, stepping over every other value without building it.
//!
//! An export reads millions of stored events and needs a handful of fields of each (the CSV
//! and Parquet columns; NDJSON's `target` to find the object). A `serde` struct with only those
//! fields still walks every other value through the parser's state machine a byte at a time;
//! here the strings, which are most of an event's bytes, are stepped over eight bytes at a time.
//!
//! The scan checks the structure it steps over (brackets that match, strings that end, members
//! separated as JSON has them) but not the content of skipped scalars: the stored events it
//! reads were validated when they were ingested. Whatever it cannot follow is an error, upon
//! which callers parse the event with `serde_json` instead, so a malformed event is reported in
//! `serde_json`'s words and a well-formed one the scan does not follow (nested deeper than
//! [`MAX_DEPTH`]) is still read.

use std::ops::Range;

/// Deepest nesting of arrays and objects the scan follows (the ingest limit is 64 by default).
pub const MAX_DEPTH: usize = 128;

/// Why a text could not be scanned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanError(pub &'static str);

impl std::fmt::Display for ScanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for ScanError {}

type Result<T> = std::result::Result<T, ScanError>;

/// Finds the top-level members of the JSON object `text` named in `wanted`: `found[i]` is set
/// to the byte range of the value of `wanted[i]` (left `None` when the object lacks it). A
/// member named twice is an error, as it is to `serde`'s derived structs.
pub fn members(text: &[u8], wanted: &[&str], found: &mut [Option<Range<usize>>]) -> Result<()> {
    debug_assert_eq!(wanted.len(), found.len());
    found.iter_mut().for_each(|f| *f = None);
    let mut s = Scanner { b: text, i: 0 };
    s.ws();
    s.expect(b'{')?;
    s.ws();
    if s.peek() == Some(b'}') {
        s.i += 1;
    } else {
        loop {
            s.ws();
            if s.peek() != Some(b'"') {
                return Err(ScanError("expected a member name"));
            }
            let key_start = s.i;
            s.string()?;
            let key = &text[key_start..s.i];
            s.ws();
            s.expect(b':')?;
            s.ws();
            let value_start = s.i;
            s.value()?;
            if let Some(slot) = slot_of(key, wanted)? {
                if found[slot].is_some() {
                    return Err(ScanError("a member named twice"));
                }
                found[slot] = Some(value_start..s.i);
            }
            s.ws();
            match s.next() {
                Some(b',') => continue,
                Some(b'}') => break,
                _ => return Err(ScanError("expected ',' or '}' after a member")),
            }
        }
    }
    s.ws();
    if s.i != text.len() {
        return Err(ScanError("text after the object"));
    }
    Ok(())
}

/// Which of `wanted` the quoted `key` names (a key with escapes is decoded first).
fn slot_of(key: &[u8], wanted: &[&str]) -> Result<Option<usize>> {
    let inner = &key[1..key.len() - 1];
    if memchr::memchr(b'\\', inner).is_none() {
        return Ok(wanted.iter().position(|w| w.as_bytes() == inner));
    }
    let decoded: String =
        serde_json::from_slice(key).map_err(|_| ScanError("a member name that does not decode"))?;
    Ok(wanted.iter().position(|w| *w == decoded))
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn expect(&mut self, c: u8) -> Result<()> {
        if self.next() == Some(c) {
            Ok(())
        } else {
            Err(ScanError("unexpected character"))
        }
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// Steps over the string starting at the current `"`.
    fn string(&mut self) -> Result<()> {
        self.i += 1;
        loop {
            match find_quote_or_backslash(&self.b[self.i..]) {
                None => return Err(ScanError("a string that does not end")),
                Some(at) if self.b[self.i + at] == b'"' => {
                    self.i += at + 1;
                    return Ok(());
                }
                // A backslash escapes the byte after it (`\uXXXX`'s digits need no care).
                Some(at) => self.i += at + 2,
            }
            if self.i > self.b.len() {
                return Err(ScanError("a string that does not end"));
            }
        }
    }

    /// Steps over one value of any kind.
    fn value(&mut self) -> Result<()> {
        match self.peek() {
            Some(b'"') => self.string(),
            Some(b'{' | b'[') => self.nested(),
            Some(_) => self.scalar(),
            None => Err(ScanError("a value is missing")),
        }
    }

    /// Steps over a number or `true`, `false`, `null`.
    fn scalar(&mut self) -> Result<()> {
        let start = self.i;
        while let Some(c) = self.peek() {
            if matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                break;
            }
            if !matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E' | b'a'..=b'z') {
                return Err(ScanError("not a JSON value"));
            }
            self.i += 1;
        }
        if self.i == start {
            Err(ScanError("a value is missing"))
        } else {
            Ok(())
        }
    }

    /// Steps over an array or object, checking that its brackets match.
    fn nested(&mut self) -> Result<()> {
        let b = self.b;
        let mut i = self.i;
        // One bit per open bracket: set for an object.
        let mut open: u128 = 0;
        let mut depth = 0usize;
        while let Some(&c) = b.get(i) {
            if !STRUCTURAL[usize::from(c)] {
                i += 1;
                continue;
            }
            match c {
                b'"' => {
                    // To the closing quote, stepping over escaped bytes.
                    i += 1;
                    loop {
                        let at = find_quote_or_backslash(b.get(i..).unwrap_or_default())
                            .ok_or(ScanError("a string that does not end"))?;
                        i += at;
                        if b[i] == b'"' {
                            break;
                        }
                        i += 2;
                    }
                }
                b'{' | b'[' => {
                    if depth == MAX_DEPTH {
                        return Err(ScanError("nested too deep to scan"));
                    }
                    open = (open << 1) | u128::from(c == b'{');
                    depth += 1;
                }
                _ => {
                    if depth == 0 || (open & 1 == 1) != (c == b'}') {
                        return Err(ScanError("brackets that do not match"));
                    }
                    open >>= 1;
                    depth -= 1;
                    if depth == 0 {
                        self.i = i + 1;
                        return Ok(());
                    }
                }
            }
            i += 1;
        }
        Err(ScanError("an array or object that does not end"))
    }
}

/// The bytes [`Scanner::nested`] stops at: quotes and brackets.
static STRUCTURAL: [bool; 256] = {
    let mut t = [false; 256];
    t[b'"' as usize] = true;
    t[b'{' as usize] = true;
    t[b'}' as usize] = true;
    t[b'[' as usize] = true;
    t[b']' as usize] = true;
    t
};

/// Where the first `"` or `\\` of `b` is. Eight bytes at a time in a `u64` (strings in events
/// are short, too short for `memchr`'s set-up to pay), the tail a byte at a time.
fn find_quote_or_backslash(b: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const QUOTES: u64 = ONES * b'"' as u64;
    const BACKSLASHES: u64 = ONES * b'\\' as u64;
    let mut at = 0;
    while let Some(chunk) = b.get(at..at + 8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        // The high bit of each byte that equals the one sought (exact for the lowest such
        // byte, which is all that is used).
        let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
        let hits = zero(w ^ QUOTES) | zero(w ^ BACKSLASHES);
        if hits != 0 {
            return Some(at + (hits.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    b[at..]
        .iter()
        .position(|&c| c == b'"' || c == b'\\')
        .map(|p| at + p)
}

/// The text of the JSON string value `raw` (a value's bytes as [`members`] found them):
/// borrowed when it has no escapes; `None` for `null`; an error for any other kind of value.
pub fn string_value(raw: &str) -> std::result::Result<Option<std::borrow::Cow<'_, str>>, String> {
    let b = raw.as_bytes();
    if b == b"null" {
        return Ok(None);
    }
    if b.len() >= 2 && b[0] == b'"' && b[b.len() - 1] == b'"' {
        let inner = &raw[1..raw.len() - 1];
        if memchr::memchr(b'\\', inner.as_bytes()).is_none() {
            return Ok(Some(std::borrow::Cow::Borrowed(inner)));
        }
        return serde_json::from_str::<String>(raw)
            .map(|s| Some(std::borrow::Cow::Owned(s)))
            .map_err(|e| e.to_string());
    }
    Err(format!("expected a string, found {}", kind(raw)))
}

/// What kind of JSON value `raw` is, for messages.
pub fn kind(raw: &str) -> &'static str {
    match raw.as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(text: &'a str, wanted: &[&str]) -> Result<Vec<Option<&'a str>>> {
        let mut found = vec![None; wanted.len()];
        members(text.as_bytes(), wanted, &mut found)?;
        Ok(found
            .into_iter()
            .map(|r| r.map(|r: Range<usize>| &text[r]))
            .collect())
    }

    #[test]
    fn finds_members_past_values_of_every_kind() {
        let text = r#"{"a":{"x":[1,{"y":"}]"}],"z":"\"{"},"b" : "two\"\\",
            "c":[[],{}],"d":-1.5e3,"e":true,"f":null,"g":"last"}"#;
        let got = find(text, &["g", "b", "missing", "d", "a", "f"]).unwrap();
        assert_eq!(
            got,
            vec![
                Some(r#""last""#),
                Some(r#""two\"\\""#),
                None,
                Some("-1.5e3"),
                Some(r#"{"x":[1,{"y":"}]"}],"z":"\"{"}"#),
                Some("null"),
            ]
        );
        assert_eq!(find("{}", &["a"]).unwrap(), vec![None]);
        assert_eq!(find(" { } ", &["a"]).unwrap(), vec![None]);
        // An escaped name is the name it decodes to.
        assert_eq!(find(r#"{"\u0061":1}"#, &["a"]).unwrap(), vec![Some("1")]);
    }

    #[test]
    fn malformed_text_is_an_error() {
        for bad in [
            "",
            "[]",
            r#""a""#,
            r#"{"a":1"#,
            r#"{"a":"1}"#,
            r#"{"a":[1}}"#,
            r#"{"a":{1]}"#,
            r#"{"a":1]"#,
            r#"{"a" 1}"#,
            r#"{a:1}"#,
            r#"{"a":1,}"#,
            r#"{"a":}"#,
            r#"{"a":1} x"#,
            r#"{"a":1,"a":2}"#,
            r#"{"a":"\"#,
            r#"{"a":@}"#,
        ] {
            assert!(find(bad, &["a"]).is_err(), "{bad:?} scanned");
        }
    }

    #[test]
    fn nesting_past_the_limit_is_an_error_not_a_misread() {
        let deep = format!(
            r#"{{"a":{}1{},"b":2}}"#,
            "[".repeat(MAX_DEPTH + 1),
            "]".repeat(MAX_DEPTH + 1)
        );
        assert!(find(&deep, &["b"]).is_err());
        let ok = format!(
            r#"{{"a":{}1{},"b":2}}"#,
            "[".repeat(MAX_DEPTH),
            "]".repeat(MAX_DEPTH)
        );
        assert_eq!(find(&ok, &["b"]).unwrap(), vec![Some("2")]);
    }

    #[test]
    fn quotes_and_backslashes_are_found_at_every_offset() {
        for len in 0..40 {
            for at in 0..len {
                for c in [b'"', b'\\'] {
                    let mut b = vec![b'a'; len];
                    // Bytes the word trick must not confuse with the ones sought.
                    for (i, x) in b.iter_mut().enumerate() {
                        *x = [b'a', 0x22 ^ 0x80, 0x5c ^ 0x01, 0xff, 0x00, b'#'][i % 6];
                    }
                    b[at] = c;
                    assert_eq!(find_quote_or_backslash(&b), Some(at), "{len} {at}");
                    if at + 1 < len {
                        b[at + 1] = b'"';
                        assert_eq!(find_quote_or_backslash(&b), Some(at));
                    }
                }
            }
            let none: Vec<u8> = (0..len).map(|i| [b'a', 0xa2, 0x5d, 0x00][i % 4]).collect();
            assert_eq!(find_quote_or_backslash(&none), None);
        }
    }

    #[test]
    fn string_values_decode_like_serde() {
        assert_eq!(
            string_value(r#""plain""#).unwrap().as_deref(),
            Some("plain")
        );
        assert!(matches!(
            string_value(r#""plain""#).unwrap(),
            Some(std::borrow::Cow::Borrowed(_))
        ));
        assert_eq!(
            string_value(r#""a\"b\u00e9\n""#).unwrap().as_deref(),
            Some("a\"bé\n")
        );
        assert_eq!(string_value("null").unwrap(), None);
        assert!(string_value("12").is_err());
        assert!(string_value("{}").is_err());
    }
}
