//! The compact byte layout of an object's state ([`ObjectState`]), as the server's object
//! store keeps it: see the layout table in the server's `objects` module documentation.
//!
//! [`decode`] reads bytes from a file on disk, so it trusts nothing: every length is bounded by
//! what is left, every string id must be in the [`Dictionary`], and a value that does not read
//! exactly is a [`Corrupt`] error that says what and at which byte, never a guessed state. It
//! has a fuzz target (`fuzz/fuzz_targets/object_state.rs`).

use crate::object::{self, DigestKind, ObjectState};
use serde_json::{Map, Value};

use std::collections::HashMap;
use std::sync::Arc;

/// Strings many states share (types, attribute names, repeated values), stored once in the
/// `strings` table and held in memory; bounded: past [`MAX_STRINGS`] strings or
/// [`MAX_STRING_BYTES`] bytes, new strings are written inline.
#[derive(Debug, Default)]
pub struct Dictionary {
    ids: HashMap<Arc<str>, u32>,
    texts: Vec<Arc<str>>,
    bytes: usize,
}

/// The most strings the dictionary holds.
pub const MAX_STRINGS: usize = 1 << 20;
/// The most bytes of text the dictionary holds.
pub const MAX_STRING_BYTES: usize = 32 << 20;
/// Longer strings are always written inline (a value kept in a state is at most 128 bytes
/// of JSON).
const MAX_INTERNED_LEN: usize = 256;

impl Dictionary {
    /// The dictionary of the `strings` table's rows, which must number the strings from 0.
    pub fn load(rows: impl IntoIterator<Item = (u32, String)>) -> Result<Dictionary, Corrupt> {
        let mut d = Dictionary::default();
        for (id, text) in rows {
            if id as usize != d.texts.len() {
                return Err(corrupt(format!(
                    "string {id} where {} was expected",
                    d.texts.len()
                )));
            }
            d.push(Arc::from(text));
        }
        Ok(d)
    }

    fn push(&mut self, text: Arc<str>) {
        self.bytes += text.len();
        self.ids.insert(text.clone(), self.texts.len() as u32);
        self.texts.push(text);
    }

    /// The number of strings held.
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    /// Whether no string is held.
    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    /// Adds strings written to the table (by [`Interner`]) since.
    pub fn extend(&mut self, fresh: Vec<Arc<str>>) {
        for text in fresh {
            self.push(text);
        }
    }

    fn text(&self, id: u64) -> Result<&str, Corrupt> {
        self.texts
            .get(usize::try_from(id).unwrap_or(usize::MAX))
            .map(|t| &**t)
            .ok_or_else(|| corrupt(format!("string {id} is not in the dictionary")))
    }
}

/// Encodes states against a dictionary, collecting the strings it adds (to be written in
/// the same transaction, and added to the dictionary once it is committed).
#[derive(Debug)]
pub struct Interner<'d> {
    dict: &'d Dictionary,
    fresh: Vec<Arc<str>>,
    fresh_ids: HashMap<Arc<str>, u32>,
    fresh_bytes: usize,
}

impl<'d> Interner<'d> {
    pub fn new(dict: &'d Dictionary) -> Self {
        Interner {
            dict,
            fresh: Vec::new(),
            fresh_ids: HashMap::default(),
            fresh_bytes: 0,
        }
    }

    fn id(&mut self, s: &str) -> Option<u32> {
        if s.len() > MAX_INTERNED_LEN {
            return None;
        }
        if let Some(id) = self.dict.ids.get(s).or_else(|| self.fresh_ids.get(s)) {
            return Some(*id);
        }
        let n = self.dict.texts.len() + self.fresh.len();
        if n >= MAX_STRINGS || self.dict.bytes + self.fresh_bytes + s.len() > MAX_STRING_BYTES {
            return None;
        }
        let text: Arc<str> = Arc::from(s);
        self.fresh_bytes += s.len();
        self.fresh_ids.insert(text.clone(), n as u32);
        self.fresh.push(text);
        Some(n as u32)
    }

    /// The strings added, numbered from the dictionary's length on.
    pub fn fresh(self) -> Vec<Arc<str>> {
        self.fresh
    }
}

/// The first byte of every value of this layout.
pub const TAG: u8 = 0xB3;
/// The longest string or JSON text a value may hold (states keep short values only).
const MAX_STR: usize = 1 << 20;

const DELETED: u8 = 1;
const NAME: u8 = 2;
const NAME_IS_LAST_SEGMENT: u8 = 4;
const PARENT: u8 = 8;

const NULL: u8 = 0;
const FALSE: u8 = 1;
const TRUE: u8 = 2;
const STRING: u8 = 3;
const LONG_DIGEST: u8 = 4;
const SENSITIVE_DIGEST: u8 = 5;
const INTEGER: u8 = 6;
const JSON: u8 = 7;

/// The last segment of an id (what a name often is).
fn last_segment(id: &str) -> &str {
    id.rsplit([':', '/']).find(|s| !s.is_empty()).unwrap_or(id)
}

fn varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn string(out: &mut Vec<u8>, s: &str) {
    text(out, s, None);
}

/// A `text`: varint `id << 1 | 1` for a string of the dictionary, else varint `len << 1`
/// and the bytes.
fn text(out: &mut Vec<u8>, s: &str, interner: Option<&mut Interner<'_>>) {
    match interner.and_then(|i| i.id(s)) {
        Some(id) => varint(out, u64::from(id) << 1 | 1),
        None => {
            varint(out, (s.len() as u64) << 1);
            out.extend_from_slice(s.as_bytes());
        }
    }
}

/// Appends `state` (without its id) to `out`.
pub fn encode(state: &ObjectState, out: &mut Vec<u8>, interner: &mut Interner<'_>) {
    let mut flags = 0;
    if state.deleted {
        flags |= DELETED;
    }
    if let Some(name) = &state.name {
        flags |= NAME;
        if !state.id.is_empty() && name == last_segment(&state.id) {
            flags |= NAME_IS_LAST_SEGMENT;
        }
    }
    if state.parent.is_some() {
        flags |= PARENT;
    }
    out.push(TAG);
    out.push(flags);
    text(out, &state.object_type, Some(interner));
    if let Some(name) = &state.name
        && flags & NAME_IS_LAST_SEGMENT == 0
    {
        string(out, name);
    }
    if let Some(parent) = &state.parent {
        string(out, parent);
    }
    varint(out, state.attributes.len() as u64);
    for (k, v) in &state.attributes {
        text(out, k, Some(interner));
        value(out, v, interner);
    }
}

fn value(out: &mut Vec<u8>, v: &Value, interner: &mut Interner<'_>) {
    match v {
        Value::Null => out.push(NULL),
        Value::Bool(false) => out.push(FALSE),
        Value::Bool(true) => out.push(TRUE),
        Value::String(s) => match object::parse_digest(s) {
            Some((kind, digest)) => {
                out.push(match kind {
                    DigestKind::Long => LONG_DIGEST,
                    DigestKind::Sensitive => SENSITIVE_DIGEST,
                });
                out.extend_from_slice(&digest.to_le_bytes());
            }
            None => {
                out.push(STRING);
                text(out, s, Some(interner));
            }
        },
        Value::Number(n) if n.as_i64().is_some() => {
            let i = n.as_i64().unwrap_or_default();
            out.push(INTEGER);
            varint(out, ((i << 1) ^ (i >> 63)) as u64);
        }
        other => {
            out.push(JSON);
            text(out, &other.to_string(), Some(interner));
        }
    }
}

/// Reads values of the layout, with every length checked against what is left.
struct Reader<'b> {
    bytes: &'b [u8],
    at: usize,
    dict: &'b Dictionary,
}

fn corrupt(what: impl std::fmt::Display) -> Corrupt {
    Corrupt(what.to_string())
}

impl<'b> Reader<'b> {
    fn byte(&mut self) -> Result<u8, Corrupt> {
        let b = *self
            .bytes
            .get(self.at)
            .ok_or_else(|| corrupt(format!("the value ends early, at byte {}", self.at)))?;
        self.at += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'b [u8], Corrupt> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or_else(|| {
                corrupt(format!(
                    "a length of {n} at byte {} runs past the value's {} bytes",
                    self.at,
                    self.bytes.len()
                ))
            })?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn varint(&mut self) -> Result<u64, Corrupt> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(corrupt(format!(
            "a varint longer than 64 bits before byte {}",
            self.at
        )))
    }

    fn str(&mut self) -> Result<&'b str, Corrupt> {
        let v = self.varint()?;
        if v & 1 == 1 {
            return self.dict.text(v >> 1);
        }
        let n = v >> 1;
        if n > MAX_STR as u64 {
            return Err(corrupt(format!(
                "a string of {n} bytes (at most {MAX_STR})"
            )));
        }
        let at = self.at;
        std::str::from_utf8(self.take(n as usize)?)
            .map_err(|e| corrupt(format!("a string at byte {at} is not UTF-8: {e}")))
    }

    fn value(&mut self) -> Result<Value, Corrupt> {
        let at = self.at;
        Ok(match self.byte()? {
            NULL => Value::Null,
            FALSE => Value::Bool(false),
            TRUE => Value::Bool(true),
            STRING => Value::String(self.str()?.to_owned()),
            kind @ (LONG_DIGEST | SENSITIVE_DIGEST) => {
                let mut d = [0u8; 8];
                d.copy_from_slice(self.take(8)?);
                let kind = if kind == LONG_DIGEST {
                    DigestKind::Long
                } else {
                    DigestKind::Sensitive
                };
                object::digest_value(kind, u64::from_le_bytes(d))
            }
            INTEGER => {
                let z = self.varint()?;
                Value::from(((z >> 1) as i64) ^ -((z & 1) as i64))
            }
            JSON => serde_json::from_str(self.str()?)
                .map_err(|e| corrupt(format!("the JSON value at byte {at}: {e}")))?,
            other => return Err(corrupt(format!("unknown value kind {other} at byte {at}"))),
        })
    }

    /// Tag, flags, type and name (and the parent): what an item's `derived.object` needs.
    fn head(&mut self, id: &str) -> Result<ObjectState, Corrupt> {
        let tag = self.byte()?;
        if tag != TAG {
            return Err(corrupt(format!("tag {tag:#04x}, not {TAG:#04x}")));
        }
        let flags = self.byte()?;
        if flags & !(DELETED | NAME | NAME_IS_LAST_SEGMENT | PARENT) != 0
            || flags & (NAME | NAME_IS_LAST_SEGMENT) == NAME_IS_LAST_SEGMENT
        {
            return Err(corrupt(format!("flags {flags:#04x}")));
        }
        let object_type = self.str()?.to_owned();
        let name = match (flags & NAME != 0, flags & NAME_IS_LAST_SEGMENT != 0) {
            (false, _) => None,
            (true, true) => Some(last_segment(id).to_owned()),
            (true, false) => Some(self.str()?.to_owned()),
        };
        let parent = if flags & PARENT != 0 {
            Some(self.str()?.to_owned())
        } else {
            None
        };
        Ok(ObjectState {
            id: id.to_owned(),
            object_type,
            name,
            parent,
            attributes: Map::new(),
            deleted: flags & DELETED != 0,
        })
    }
}

/// The state of object `id` from its stored bytes.
pub fn decode(bytes: &[u8], id: &str, dict: &Dictionary) -> Result<ObjectState, Corrupt> {
    let mut r = Reader { bytes, at: 0, dict };
    let mut state = r.head(id)?;
    let count = r.varint()?;
    // Every attribute takes at least two bytes (an empty key and a kind).
    if count > (bytes.len() - r.at) as u64 / 2 {
        return Err(corrupt(format!(
            "{count} attributes in {} bytes",
            bytes.len()
        )));
    }
    for _ in 0..count {
        let key = r.str()?.to_owned();
        let value = r.value()?;
        if state.attributes.insert(key, value).is_some() {
            return Err(corrupt("an attribute twice"));
        }
    }
    if r.at != bytes.len() {
        return Err(corrupt(format!(
            "{} bytes after the state",
            bytes.len() - r.at
        )));
    }
    Ok(state)
}

/// The head of the state of object `id` (no attributes), from its stored bytes.
pub fn decode_head(bytes: &[u8], id: &str, dict: &Dictionary) -> Result<ObjectState, Corrupt> {
    Reader { bytes, at: 0, dict }.head(id)
}

/// Stored state bytes that do not read as a state of this layout: what is wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Corrupt(pub String);
