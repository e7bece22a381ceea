//! Splitting outside bytes into raw events.
//!
//! Owns: recognising what was sent — one JSON event, a JSON array, NDJSON, a
//! Kubernetes audit `Event`/`EventList`, an OpenStack (oslo) notification envelope
//! (also the oslo messaging v2 `{"oslo.message": "<json>"}` wrapper), a legacy
//! `{"payload": …, "meta": …}` wrapper — and the input limits. Must never: let one
//! bad item lose the good ones, or read past a limit.
//!
//! Detection of one JSON object, in order:
//! 1. no `action`, `kind: "EventList"` and `apiVersion: "audit.k8s.io/…"` → its `items`, each a
//!    Kubernetes event;
//! 2. no `action`, `kind: "Event"` and `apiVersion: "audit.k8s.io/…"` → a Kubernetes event; only the
//!    final stage of a request (`ResponseComplete`, `Panic`) is kept, other stages
//!    become [`ItemKind::Skipped`];
//! 3. a string `oslo.message` → its parsed content, detected again;
//! 4. no `action`, a `payload`, and one of `event_type`, `publisher_id`, `message_id`
//!    → an OpenStack envelope; the event is the `payload`;
//! 5. no `action` and a `payload` → the legacy wrapper; the event is the `payload`
//!    (`meta` and any other key are ignored);
//! 6. anything else → a plain event.
//!
//! A `payload` may itself be stringified JSON. The input is a whole JSON document when
//! it parses as one; otherwise it is NDJSON when it has several non-blank lines and
//! its first line is a JSON object by itself; otherwise, when it is still one bracketed
//! array, its elements are parsed one by one (each bad element is its own error);
//! otherwise it is one syntax error.

use crate::error::{InputError, ItemError, Position};
use serde_json::{Map, Value};

/// Bounds on outside input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputLimits {
    /// Maximum bytes of the whole input (default 16 MiB).
    pub max_input_bytes: usize,
    /// Maximum JSON nesting depth of one event, counting its own object as 1
    /// (default 64; serde_json refuses more than 128 in any case).
    pub max_depth: usize,
    /// Maximum number of items in one input (default 10,000).
    pub max_items: usize,
}

impl Default for InputLimits {
    fn default() -> Self {
        Self {
            max_input_bytes: 16 << 20,
            max_depth: 64,
            max_items: 10_000,
        }
    }
}

/// The shape an event arrived in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shape {
    /// A CADF / Activity Tracker event at the top level.
    Plain,
    /// The legacy wrapper: the event under `payload`, `meta` ignored.
    LegacyPayload,
    /// An OpenStack oslo notification envelope: the event under `payload`.
    OpenStack,
    /// A Kubernetes `audit.k8s.io` event, mapped to CADF by normalisation.
    Kubernetes,
}

impl Shape {
    /// A short name: `plain`, `legacy-payload`, `openstack`, `kubernetes`.
    pub fn as_str(self) -> &'static str {
        match self {
            Shape::Plain => "plain",
            Shape::LegacyPayload => "legacy-payload",
            Shape::OpenStack => "openstack",
            Shape::Kubernetes => "kubernetes",
        }
    }
}

/// An event value as sent, before normalisation, with the shape it came in.
#[derive(Debug, Clone, PartialEq)]
pub struct RawEvent {
    /// The event (for [`Shape::Kubernetes`], the Kubernetes audit event).
    pub value: Value,
    /// Where it came from.
    pub shape: Shape,
}

impl RawEvent {
    /// A plain event value (no wrapper detection).
    pub fn plain(value: Value) -> Self {
        Self {
            value,
            shape: Shape::Plain,
        }
    }
}

/// What one item of the input turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemKind {
    /// An event to normalise.
    Event(RawEvent),
    /// Deliberately not stored (e.g. a non-final Kubernetes stage); the reason says why.
    Skipped(String),
    /// Could not be read.
    Error(ItemError),
}

/// One item of the input.
#[derive(Debug, Clone, PartialEq)]
pub struct InputItem {
    /// Where it sits.
    pub position: Position,
    /// What it is.
    pub kind: ItemKind,
}

/// Split `input` into items. Fails as a whole only for limits on the whole input
/// (size, item count) and for an empty input; everything else is per item.
pub fn split_input(input: &[u8], limits: &InputLimits) -> Result<Vec<InputItem>, InputError> {
    let mut items = Vec::new();
    split_each(input, limits, &mut |item| items.push(item))?;
    Ok(items)
}

/// How the items of an input are delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InputFormat {
    /// Work it out: a JSON document (one event, an array, an envelope) or NDJSON.
    #[default]
    Detect,
    /// Declared NDJSON (e.g. by `Content-Type: application/x-ndjson`): every non-blank line is
    /// one item, even when the first line is not valid JSON.
    Ndjson,
}

/// Like [`split_input`], handing each item to `sink` as soon as it is read (so that a
/// caller can normalise an NDJSON line while it is still in cache). On `Err`, the items
/// already handed over are to be discarded.
pub fn split_each(
    input: &[u8],
    limits: &InputLimits,
    sink: &mut dyn FnMut(InputItem),
) -> Result<(), InputError> {
    split_each_as(input, InputFormat::Detect, limits, sink)
}

/// [`split_each`] for an input whose format may be declared.
pub fn split_each_as(
    input: &[u8],
    format: InputFormat,
    limits: &InputLimits,
    sink: &mut dyn FnMut(InputItem),
) -> Result<(), InputError> {
    if input.len() > limits.max_input_bytes {
        return Err(InputError::TooLarge {
            limit: limits.max_input_bytes,
            size: input.len(),
        });
    }
    let (input, base) = match input.strip_prefix(b"\xEF\xBB\xBF") {
        Some(rest) => (rest, 3),
        None => (input, 0),
    };
    if input.iter().all(u8::is_ascii_whitespace) {
        return Err(InputError::Empty);
    }
    let mut out = Splitter {
        count: 0,
        limits,
        sink,
    };
    if format == InputFormat::Ndjson {
        return out.ndjson(input, base);
    }
    match crate::strict_json::from_slice(input) {
        Ok(Value::Array(elements)) => {
            if elements.len() > limits.max_items {
                return Err(InputError::TooManyItems {
                    limit: limits.max_items,
                });
            }
            for element in elements {
                let pos = out.next_position(None, None);
                out.document(element, pos, 2)?;
            }
        }
        Ok(value) => {
            let pos = out.next_position(None, Some(base));
            out.document(value, pos, 1)?;
        }
        Err(_) if looks_like_ndjson(input) => out.ndjson(input, base)?,
        Err(_) if array_spans(input).is_some() => {
            // A syntax error inside an array: parse its elements one by one so that
            // the good ones are kept.
            let spans = array_spans(input).unwrap_or_default();
            if spans.len() > limits.max_items {
                return Err(InputError::TooManyItems {
                    limit: limits.max_items,
                });
            }
            let (mut line, mut counted) = (1, 0);
            for (start, end) in spans {
                let text = &input[start..end];
                let lead = text.iter().take_while(|b| b.is_ascii_whitespace()).count();
                let at = start + lead;
                line += memchr::memchr_iter(b'\n', &input[counted..at]).count();
                counted = at;
                let pos = out.next_position(Some(line), Some(at + base));
                match crate::strict_json::from_slice(text) {
                    Ok(value) => out.document(value, pos, 2)?,
                    Err(_) if is_blank(text) => {
                        out.error(pos, ItemError::Syntax("empty array element".into()))?;
                    }
                    Err(e) => {
                        let pos = Position {
                            column: None,
                            ..pos
                        };
                        out.error(pos, ItemError::Syntax(strip_position(&e)))?;
                    }
                }
            }
        }
        Err(e) => {
            let offset = line_col_offset(input, e.line(), e.column()).map(|o| o + base);
            (out.sink)(InputItem {
                position: Position {
                    item: 0,
                    line: Some(e.line()),
                    column: Some(e.column()),
                    byte_offset: offset,
                },
                kind: ItemKind::Error(ItemError::Syntax(strip_position(&e))),
            });
        }
    }
    Ok(())
}

/// Detect the shape of one already-parsed value that stands for one or more events
/// (an `EventList` gives several). Depth limits are checked as in [`split_input`].
pub fn split_value(value: Value, limits: &InputLimits) -> Result<Vec<InputItem>, InputError> {
    let mut items = Vec::new();
    let mut sink = |item| items.push(item);
    let mut out = Splitter {
        count: 0,
        limits,
        sink: &mut sink,
    };
    let pos = out.next_position(None, None);
    out.document(value, pos, 1)?;
    Ok(items)
}

struct Splitter<'a> {
    count: usize,
    limits: &'a InputLimits,
    sink: &'a mut dyn FnMut(InputItem),
}

impl Splitter<'_> {
    fn next_position(&self, line: Option<usize>, byte_offset: Option<usize>) -> Position {
        Position {
            item: self.count,
            line,
            column: None,
            byte_offset,
        }
    }

    fn push(&mut self, position: Position, kind: ItemKind) -> Result<(), InputError> {
        if self.count >= self.limits.max_items {
            return Err(InputError::TooManyItems {
                limit: self.limits.max_items,
            });
        }
        (self.sink)(InputItem {
            position: Position {
                item: self.count,
                ..position
            },
            kind,
        });
        self.count += 1;
        Ok(())
    }

    fn error(&mut self, position: Position, e: ItemError) -> Result<(), InputError> {
        self.push(position, ItemKind::Error(e))
    }

    /// One top-level value (or array element) at nesting level `level` (1 = the root).
    fn document(&mut self, value: Value, pos: Position, level: usize) -> Result<(), InputError> {
        let Value::Object(map) = value else {
            let what = if level > 1 {
                "an array element"
            } else {
                "the input"
            };
            return self.error(
                pos,
                ItemError::Shape(format!(
                    "{what} must be a JSON object holding an event, found {}",
                    kind_name(&value)
                )),
            );
        };
        if is_k8s(&map, "EventList") {
            let mut map = map;
            match map.remove("items") {
                Some(Value::Array(items)) => {
                    for item in items {
                        let pos = self.next_position(pos.line, pos.byte_offset);
                        match item {
                            Value::Object(m) => self.k8s_event(m, pos)?,
                            other => self.error(pos, ItemError::Shape(format!("EventList items must be Kubernetes audit events (objects), found {}", kind_name(&other))))?,
                        }
                    }
                    Ok(())
                }
                None | Some(Value::Null) => Ok(()),
                Some(_) => self.error(
                    pos,
                    ItemError::Shape("EventList `items` must be an array".into()),
                ),
            }
        } else if is_k8s(&map, "Event") {
            self.k8s_event(map, pos)
        } else {
            match unwrap_envelope(map, self.limits, 0) {
                Ok(raw) => {
                    if let Some(limit) = too_deep(&raw.value, self.limits.max_depth) {
                        return self.error(pos, ItemError::TooDeep { limit });
                    }
                    self.push(pos, ItemKind::Event(raw))
                }
                Err(e) => self.error(pos, e),
            }
        }
    }

    fn k8s_event(&mut self, map: Map<String, Value>, pos: Position) -> Result<(), InputError> {
        let stage = map.get("stage").and_then(Value::as_str).unwrap_or("");
        if matches!(stage, "RequestReceived" | "ResponseStarted") {
            let id = map.get("auditID").and_then(Value::as_str).unwrap_or("?");
            let reason =
                format!("Kubernetes stage {stage} of request {id}: only the final stage is stored");
            return self.push(pos, ItemKind::Skipped(reason));
        }
        let value = Value::Object(map);
        if let Some(limit) = too_deep(&value, self.limits.max_depth) {
            return self.error(pos, ItemError::TooDeep { limit });
        }
        self.push(
            pos,
            ItemKind::Event(RawEvent {
                value,
                shape: Shape::Kubernetes,
            }),
        )
    }

    fn ndjson(&mut self, input: &[u8], base: usize) -> Result<(), InputError> {
        // Every item is a line, so the newline count bounds the items: count exactly
        // (skipping blank lines) only when that bound is over the limit.
        if memchr::memchr_iter(b'\n', input).count() >= self.limits.max_items
            && lines(input).filter(|(_, l)| !is_blank(l)).count() > self.limits.max_items
        {
            return Err(InputError::TooManyItems {
                limit: self.limits.max_items,
            });
        }
        for (n, (start, line)) in lines(input).enumerate() {
            if is_blank(line) {
                continue;
            }
            let pos = self.next_position(Some(n + 1), Some(start + base));
            match crate::strict_json::from_slice(line) {
                Ok(value) => self.document(value, pos, 1)?,
                Err(e) => {
                    let pos = Position {
                        column: Some(e.column()),
                        ..pos
                    };
                    self.error(pos, ItemError::Syntax(strip_position(&e)))?;
                }
            }
        }
        Ok(())
    }
}

/// The lines of `input` with their byte offsets (split at `\n`).
fn lines(input: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut start = 0;
    let mut ends = memchr::memchr_iter(b'\n', input).chain(std::iter::once(input.len()));
    std::iter::from_fn(move || {
        if start > input.len() {
            return None;
        }
        let end = ends.next()?;
        let line = (start, &input[start..end]);
        start = end + 1;
        Some(line)
    })
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

fn is_k8s(map: &Map<String, Value>, kind: &str) -> bool {
    // A CADF event always has an `action`; a Kubernetes one never does, so a stored
    // event that happens to carry `kind`/`apiVersion` fields stays a plain event.
    !map.contains_key("action")
        && map.get("kind").and_then(Value::as_str) == Some(kind)
        && map
            .get("apiVersion")
            .and_then(Value::as_str)
            .is_some_and(|v| v.starts_with("audit.k8s.io/"))
}

/// Unwrap oslo v2, OpenStack envelopes and legacy `payload` wrappers.
fn unwrap_envelope(
    mut map: Map<String, Value>,
    limits: &InputLimits,
    hops: u8,
) -> Result<RawEvent, ItemError> {
    if hops > 2 {
        return Err(ItemError::Shape("envelopes nested too deep".into()));
    }
    if let Some(Value::String(msg)) = map.get("oslo.message") {
        let inner = parse_nested(msg, limits, "oslo.message")?;
        return match inner {
            Value::Object(m) => unwrap_envelope(m, limits, hops + 1),
            other => Err(ItemError::Shape(format!(
                "oslo.message must hold a JSON object, found {}",
                kind_name(&other)
            ))),
        };
    }
    if map.contains_key("action") || !map.contains_key("payload") {
        return Ok(RawEvent {
            value: Value::Object(map),
            shape: Shape::Plain,
        });
    }
    let shape = if ["event_type", "publisher_id", "message_id"]
        .iter()
        .any(|k| map.contains_key(*k))
    {
        Shape::OpenStack
    } else {
        Shape::LegacyPayload
    };
    let payload = map.remove("payload").unwrap_or(Value::Null);
    let payload = match payload {
        Value::String(s) => parse_nested(&s, limits, "payload")?,
        other => other,
    };
    match payload {
        Value::Object(m) => Ok(RawEvent {
            value: Value::Object(m),
            shape,
        }),
        other => Err(ItemError::Shape(format!(
            "payload must be a JSON object holding the event, found {}",
            kind_name(&other)
        ))),
    }
}

fn parse_nested(text: &str, limits: &InputLimits, what: &str) -> Result<Value, ItemError> {
    crate::strict_json::from_str(text)
        .map_err(|e| ItemError::Syntax(format!("in {what}: {e}")))
        .and_then(|v| match too_deep(&v, limits.max_depth) {
            Some(limit) => Err(ItemError::TooDeep { limit }),
            None => Ok(v),
        })
}

/// `Some(limit)` when `value` nests deeper than `limit` (the value itself is level 1).
pub(crate) fn too_deep(value: &Value, limit: usize) -> Option<usize> {
    fn deeper(v: &Value, remaining: usize) -> bool {
        match v {
            Value::Array(a) => remaining == 0 || a.iter().any(|x| deeper(x, remaining - 1)),
            Value::Object(m) => remaining == 0 || m.values().any(|x| deeper(x, remaining - 1)),
            _ => false,
        }
    }
    deeper(value, limit).then_some(limit)
}

/// The byte spans of the top-level elements of a JSON array, found by bracket and
/// string tracking alone (so a syntax error inside one element does not hide the
/// others). `None` when the input is not one bracketed array.
fn array_spans(input: &[u8]) -> Option<Vec<(usize, usize)>> {
    let open = input.iter().position(|b| !b.is_ascii_whitespace())?;
    if input[open] != b'[' {
        return None;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    let mut spans = Vec::new();
    let mut start = open + 1;
    for (i, &b) in input.iter().enumerate().skip(open) {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => depth += 1,
            b']' | b'}' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    if b != b']' || !is_blank(&input[i + 1..]) {
                        return None;
                    }
                    let last = &input[start..i];
                    if !(spans.is_empty() && is_blank(last)) {
                        spans.push((start, i));
                    }
                    return Some(spans);
                }
            }
            b',' if depth == 1 => {
                spans.push((start, i));
                start = i + 1;
            }
            _ => {}
        }
    }
    None
}

fn looks_like_ndjson(input: &[u8]) -> bool {
    let mut lines = input
        .split(|&b| b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace));
    let Some(first) = lines.next() else {
        return false;
    };
    if lines.next().is_none() {
        return false;
    }
    let t = first.trim_ascii();
    t.starts_with(b"{") && t.ends_with(b"}")
}

fn line_col_offset(input: &[u8], line: usize, column: usize) -> Option<usize> {
    if line == 0 {
        return None;
    }
    let mut start = 0;
    for _ in 1..line {
        start += input[start..].iter().position(|&b| b == b'\n')? + 1;
    }
    Some((start + column.saturating_sub(1)).min(input.len()))
}

/// serde_json's message without its " at line L column C" tail (the position is kept apart).
fn strip_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

pub(crate) fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
