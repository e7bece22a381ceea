//! Objects: what each event does to the resource it targets, derived from the ordered events of
//! one account (issue #11).
//!
//! Owns: the action class of an event (`create|update|delete|info|read`, from
//! [`crate::action::crud_class`]), the object hierarchy read from a `target.id` ([`ancestors`],
//! [`scopes`]), the last known state of an object ([`ObjectState`]: type, name, parent,
//! attributes, tombstone), the changes an event makes (old → new, [`Change`]) and a human-readable
//! description in the UbiOps style ("Updated pipeline object 'deployment-object' for pipeline
//! 'pipeline-1': name changed from 'deployment-1' to 'deployment-object'").
//!
//! Must never: do I/O, show the value of a sensitive attribute in a description or a change, or
//! depend on anything but the event and the states handed in — the caller keeps the states and
//! feeds events in log order, so deriving again from the ledger gives the same result.
//!
//! **How updates are read.** An emitter may send `requestData.update: [{updateType, initialValue,
//! newValue}, …]`, a single `requestData.{updateType, initialValue, newValue}`, or only the new
//! attribute values (`requestData: {"memory": "512Mi"}`); when the old value is not sent it is
//! taken from the last known state. A changed `target.name` is a `name` change.
//!
//! **Parents.** A CRN `crn:v1:…:<instance>:<type>:<a>/<collection>/<b>` has the parents
//! `crn:v1:…:<instance>:<type>:<a>` (one `collection/name` pair less each step) and then the
//! service instance `crn:v1:…:<instance>::` (a project, in the UbiOps mapping). A path id
//! `projects/p/deployments/d` has the parent `projects/p` (Kubernetes' `namespaces/ns/pods/x` →
//! `namespaces/ns`). Other ids have no parent.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::action::{self, CrudClass};
use crate::redact::{DEFAULT_MARKER, is_redacted};

/// What a sensitive attribute's value is shown as.
pub const SENSITIVE_VALUE: &str = "[sensitive]";

/// Keys of `requestData` that describe the request, not the object.
const META_KEYS: &[&str] = &[
    "resourceGroupId",
    "serviceInstanceId",
    "accountId",
    "resourceType",
    "requestId",
    "platformSource",
    "customizationId",
    "environmentId",
    "reasonForFailure",
    "totalNumberChanges",
    "updateType",
    "initialValue",
    "newValue",
    "update",
    // The HTTP request's headers, as some emitters record them: about the request, not the object.
    "headers",
];

/// The last known state of one object (one `target.id` of one account).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectState {
    /// The `target.id` (left out when empty: a store keyed by id need not repeat it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// The object type, from the action (`pipeline-object`).
    #[serde(rename = "type")]
    pub object_type: String,
    /// The last known name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The nearest parent's id ([`ancestors`]); filled in by [`ObjectState::masked`], not kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The last known attribute values: as sent when short, a digest when sensitive or longer
    /// than [`MAX_KEPT_BYTES`] (enough to tell a later change; see [`ObjectState::masked`]).
    #[serde(default)]
    pub attributes: Map<String, Value>,
    /// Whether the last create/delete was a delete (a tombstone).
    #[serde(default)]
    pub deleted: bool,
}

impl ObjectState {
    /// The state as shown: sensitive attribute values as [`SENSITIVE_VALUE`], values too long
    /// to keep (over [`MAX_KEPT_BYTES`]) as [`LONG_VALUE`].
    /// The parent is filled in from the id.
    pub fn masked(&self) -> ObjectState {
        let mut out = self.clone();
        out.parent = ancestors(&self.id).into_iter().next();
        for (k, v) in &mut out.attributes {
            let digest = v.as_str().filter(|s| s.starts_with('\u{1}'));
            if digest.is_some_and(|s| s.starts_with(SENSITIVE_PREFIX))
                || is_sensitive(&self.object_type, k, [Some(&*v)])
            {
                *v = Value::String(SENSITIVE_VALUE.to_owned());
            } else if digest.is_some_and(|s| s.starts_with(LONG_PREFIX)) {
                *v = Value::String(LONG_VALUE.to_owned());
            }
        }
        out
    }
}

/// One attribute an event changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// The attribute (a key of `requestData`, or `updateType`).
    pub attribute: String,
    /// The value before, when known (never for sensitive attributes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<Value>,
    /// The value after, when there is one (never for sensitive attributes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<Value>,
    /// Sensitive: the values are left out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sensitive: bool,
}

/// What is derived for one event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Derived {
    /// `create`, `update`, `delete`, `read` or `info`.
    pub class: String,
    /// The human-readable description.
    pub description: String,
    /// The object (`target.id`), when the event names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// The attributes changed, old → new.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<Change>,
}

/// The result of [`derive()`]: the derived fields and the object's new state.
#[derive(Debug, Clone, PartialEq)]
pub struct Derivation {
    /// What is stored and indexed with the event.
    pub derived: Derived,
    /// The object's state after the event; `None` when the event names no object or leaves an
    /// already known state as it was.
    pub state: Option<ObjectState>,
}

/// The class of an event: the CRUD class of its action's verb (`info` when the action cannot be read).
pub fn class_of(event: &Value) -> CrudClass {
    action_info(event).map_or(CrudClass::Info, |i| i.crud)
}

fn action_info(event: &Value) -> Option<action::ActionInfo> {
    let act = event.get("action")?.as_str()?;
    let type_of = |res: &str| {
        event
            .get(res)
            .and_then(|r| r.get("typeURI"))
            .and_then(Value::as_str)
    };
    action::analyse(act, type_of("target"), type_of("observer"))
}

/// The object type an event names: its action's object type (`pipeline-object`), else `resource`.
pub fn object_type_of(event: &Value) -> String {
    action_info(event)
        .map(|i| i.object_type)
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "resource".to_owned())
}

/// The object an event acts on: `target.id` (or `targetId`), unless it is a CADF short form.
pub fn target_id(event: &Value) -> Option<&str> {
    let id = event
        .get("target")
        .and_then(|t| t.get("id"))
        .or_else(|| event.get("targetId"))
        .and_then(Value::as_str)?;
    (!id.is_empty() && !matches!(id, "target" | "initiator" | "observer")).then_some(id)
}

/// How a parent was found in an id.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ParentRef {
    id: String,
    /// The type the id's structure suggests (`pipeline`, `deployment`, `instance`).
    type_hint: String,
    /// The last segment of the id.
    name_hint: String,
    /// The CRN's service instance (a project): "in project", not "for deployment".
    instance: bool,
}

const MAX_DEPTH: usize = 16;

fn parent_refs(id: &str) -> Vec<ParentRef> {
    let mut out = Vec::new();
    if id.starts_with("crn:") {
        let parts: Vec<&str> = id.splitn(10, ':').collect();
        if parts.len() != 10 {
            return out;
        }
        let prefix = parts[..8].join(":");
        let (rtype, resource) = (parts[8], parts[9]);
        let segs: Vec<&str> = resource.split('/').collect();
        if !resource.is_empty() {
            path_parents(&segs, |k, segs| {
                out.push(ParentRef {
                    id: format!("{prefix}:{rtype}:{}", segs[..k].join("/")),
                    type_hint: if k == 1 {
                        rtype.to_owned()
                    } else {
                        singular(segs[k - 2])
                    },
                    name_hint: segs[k - 1].to_owned(),
                    instance: false,
                });
            });
        }
        if (!rtype.is_empty() || !resource.is_empty()) && !parts[7].is_empty() {
            out.push(ParentRef {
                id: format!("{prefix}::"),
                type_hint: "instance".to_owned(),
                name_hint: parts[7].to_owned(),
                instance: true,
            });
        }
    } else if id.contains('/') && !id.contains("://") {
        let segs: Vec<&str> = id.trim_matches('/').split('/').collect();
        path_parents(&segs, |k, segs| {
            out.push(ParentRef {
                id: segs[..k].join("/"),
                type_hint: if k >= 2 {
                    singular(segs[k - 2])
                } else {
                    "object".to_owned()
                },
                name_hint: segs[k - 1].to_owned(),
                instance: false,
            });
        });
    }
    out
}

/// Calls `f(k, segs)` for each parent prefix length `k` (one `collection/name` pair less each
/// step, nearest first).
fn path_parents(segs: &[&str], mut f: impl FnMut(usize, &[&str])) {
    if segs.iter().any(|s| s.is_empty()) {
        return;
    }
    let mut k = segs.len();
    let mut depth = 0;
    while k > 2 && depth < MAX_DEPTH {
        k -= 2;
        f(k, segs);
        depth += 1;
    }
}

fn singular(collection: &str) -> String {
    let c = collection;
    if let Some(stem) = c.strip_suffix("ies") {
        format!("{stem}y")
    } else if c.ends_with("ss") {
        c.to_owned()
    } else {
        c.strip_suffix('s').unwrap_or(c).to_owned()
    }
}

/// The nearest parent of an object, if it has one.
pub fn parent(id: &str) -> Option<String> {
    parent_refs(id).into_iter().next().map(|p| p.id)
}

/// The parents of an object, nearest first (see the module docs).
pub fn ancestors(id: &str) -> Vec<String> {
    parent_refs(id).into_iter().map(|p| p.id).collect()
}

/// The scopes an event belongs to: its object and every parent (`scope:<id>` finds the events
/// of an object and of everything under it).
pub fn scopes(event: &Value) -> Vec<String> {
    match target_id(event) {
        Some(id) => {
            let mut out = vec![id.to_owned()];
            out.extend(ancestors(id));
            out
        }
        None => Vec::new(),
    }
}

/// Whether an attribute is sensitive: its value was redacted (a marker or an HMAC), or it is an
/// environment-variable value, labels, a description, a token, secret, password or key, or the
/// data of a request schedule.
pub fn is_sensitive<'v>(
    object_type: &str,
    attribute: &str,
    values: impl IntoIterator<Item = Option<&'v Value>>,
) -> bool {
    let redacted = values
        .into_iter()
        .flatten()
        .any(|v| v.as_str().is_some_and(|s| is_redacted(s, DEFAULT_MARKER)));
    if redacted {
        return true;
    }
    // The last path segment, lower-cased, without `_` and `-` (on the stack for short keys).
    let last = attribute.rsplit('.').next().unwrap_or(attribute);
    let mut buf = [0u8; 48];
    let mut n = 0;
    for b in last.bytes().filter(|b| *b != b'_' && *b != b'-') {
        if n == buf.len() {
            break;
        }
        buf[n] = b.to_ascii_lowercase();
        n += 1;
    }
    let key = std::str::from_utf8(&buf[..n]).unwrap_or("");
    if matches!(
        key,
        "labels" | "label" | "description" | "credentials" | "credential"
    ) || [
        "token",
        "secret",
        "password",
        "passwd",
        "apikey",
        "privatekey",
    ]
    .iter()
    .any(|s| key.ends_with(s))
    {
        return true;
    }
    let ty = object_type.as_bytes();
    let has = |word: &str| {
        ty.windows(word.len())
            .any(|w| w.eq_ignore_ascii_case(word.as_bytes()))
    };
    if key == "value" && (has("variable") || has("env")) {
        return true;
    }
    matches!(key, "requestdata" | "data" | "input" | "payload") && has("schedule")
}

/// A change as read from the event, before the state fills in the old value.
struct Raw<'e> {
    attribute: String,
    old: Option<&'e Value>,
    new: Option<&'e Value>,
}

fn raw_changes(request: Option<&Map<String, Value>>) -> Vec<Raw<'_>> {
    let Some(req) = request else {
        return Vec::new();
    };
    fn explicit<'e>(item: &'e Map<String, Value>, out: &mut Vec<Raw<'e>>) {
        let old = item.get("initialValue").filter(|v| !v.is_null());
        let new = item.get("newValue");
        match (item.get("updateType").and_then(Value::as_str), old, new) {
            (Some(t), _, _) => out.push(Raw {
                attribute: t.to_owned(),
                old,
                new,
            }),
            // Whole objects without a name: one change per key.
            (None, o, Some(Value::Object(n))) if o.is_none_or(Value::is_object) => {
                let o = o.and_then(Value::as_object);
                if let Some(o) = o {
                    for (key, v) in o {
                        out.push(Raw {
                            attribute: key.clone(),
                            old: Some(v),
                            new: n.get(key),
                        });
                    }
                }
                for (key, v) in n {
                    if o.is_none_or(|o| !o.contains_key(key)) {
                        out.push(Raw {
                            attribute: key.clone(),
                            old: None,
                            new: Some(v),
                        });
                    }
                }
            }
            (None, _, _) => out.push(Raw {
                attribute: "value".to_owned(),
                old,
                new,
            }),
        }
    }
    let mut out = Vec::new();
    if let Some(Value::Array(items)) = req.get("update") {
        for item in items.iter().filter_map(Value::as_object) {
            explicit(item, &mut out);
        }
    } else if req.contains_key("newValue") || req.contains_key("initialValue") {
        explicit(req, &mut out);
    } else {
        for (k, v) in req {
            if !META_KEYS.contains(&k.as_str()) {
                out.push(Raw {
                    attribute: k.clone(),
                    old: None,
                    new: Some(v),
                });
            }
        }
    }
    out
}

/// Attribute values up to this many bytes of JSON are kept in the state as they are; longer ones
/// (and sensitive ones) as a digest, which still tells whether a later value differs.
pub const MAX_KEPT_BYTES: usize = 128;
/// Values in changes are cut to this many characters.
const PREVIEW_CHARS: usize = 80;
/// How the digest of a long value starts.
const LONG_PREFIX: &str = "\u{1}sha256:";
/// How the digest of a sensitive value starts.
const SENSITIVE_PREFIX: &str = "\u{1}sensitive:";
/// What a long value is shown as in a state.
pub const LONG_VALUE: &str = "[long value]";

/// Whether a value's JSON is longer than `limit` bytes (stops counting early).
fn longer_than(v: &Value, limit: usize) -> bool {
    fn size(v: &Value, budget: &mut isize) {
        if *budget < 0 {
            return;
        }
        match v {
            Value::String(s) => *budget -= s.len() as isize + 2,
            Value::Array(items) => {
                *budget -= 2;
                for i in items {
                    size(i, budget);
                }
            }
            Value::Object(map) => {
                *budget -= 2;
                for (k, i) in map {
                    *budget -= k.len() as isize + 4;
                    size(i, budget);
                }
            }
            _ => *budget -= 8,
        }
    }
    let mut budget = limit as isize;
    size(v, &mut budget);
    budget < 0
}

/// The form a value is kept in the state: as is, or a digest when long or sensitive.
fn kept(v: &Value, sensitive: bool) -> Value {
    if !sensitive && !longer_than(v, MAX_KEPT_BYTES) {
        return v.clone();
    }
    let kind = if sensitive {
        DigestKind::Sensitive
    } else {
        DigestKind::Long
    };
    digest_value(kind, fnv(v, 0xcbf2_9ce4_8422_2325))
}

/// Why an attribute value is kept as a digest in a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestKind {
    /// Longer than [`MAX_KEPT_BYTES`].
    Long,
    /// Sensitive.
    Sensitive,
}

/// The state's form of a digest (a string no event value is mistaken for: it starts with
/// U+0001).
pub fn digest_value(kind: DigestKind, digest: u64) -> Value {
    let prefix = match kind {
        DigestKind::Long => LONG_PREFIX,
        DigestKind::Sensitive => SENSITIVE_PREFIX,
    };
    Value::String(format!("{prefix}{digest:016x}"))
}

/// The digest a state's value stands for, when it is one exactly as [`digest_value`] writes it
/// (a store may keep it as 8 bytes).
pub fn parse_digest(s: &str) -> Option<(DigestKind, u64)> {
    let (kind, hex) = if let Some(h) = s.strip_prefix(LONG_PREFIX) {
        (DigestKind::Long, h)
    } else {
        (DigestKind::Sensitive, s.strip_prefix(SENSITIVE_PREFIX)?)
    };
    if hex.len() != 16 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    Some((kind, u64::from_str_radix(hex, 16).ok()?))
}

/// FNV-1a (64 bits) over a value's structure: stable across builds, no allocation. Enough to
/// tell whether a long value changed; sensitive values are also stored only this way.
fn fnv(v: &Value, mut h: u64) -> u64 {
    fn bytes(mut h: u64, b: &[u8]) -> u64 {
        for x in b {
            h ^= u64::from(*x);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    }
    match v {
        Value::Null => bytes(h, b"n"),
        Value::Bool(b) => bytes(h, if *b { b"t" } else { b"f" }),
        Value::Number(n) => {
            // The number's text, written on the stack (no allocation).
            struct Text([u8; 40], usize);
            impl std::fmt::Write for Text {
                fn write_str(&mut self, s: &str) -> std::fmt::Result {
                    let end = self.1 + s.len();
                    self.0
                        .get_mut(self.1..end)
                        .ok_or(std::fmt::Error)?
                        .copy_from_slice(s.as_bytes());
                    self.1 = end;
                    Ok(())
                }
            }
            let mut text = Text([0; 40], 0);
            let h = bytes(h, b"#");
            if std::fmt::Write::write_fmt(&mut text, format_args!("{n}")).is_ok() {
                bytes(h, &text.0[..text.1])
            } else {
                bytes(h, n.to_string().as_bytes())
            }
        }
        Value::String(s) => bytes(bytes(h, b"\""), s.as_bytes()),
        Value::Array(items) => {
            h = bytes(h, b"[");
            for i in items {
                h = fnv(i, h);
            }
            bytes(h, b"]")
        }
        Value::Object(map) => {
            h = bytes(h, b"{");
            for (k, i) in map {
                h = bytes(bytes(h, k.as_bytes()), b":");
                h = fnv(i, h);
            }
            bytes(h, b"}")
        }
    }
}

fn is_digest(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.starts_with(LONG_PREFIX) || s.starts_with(SENSITIVE_PREFIX))
}

/// A value as shown in a change: as is, or its first characters when long.
fn preview(v: &Value) -> Value {
    if !longer_than(v, MAX_KEPT_BYTES) {
        return v.clone();
    }
    let text = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut cut: String = text.chars().take(PREVIEW_CHARS).collect();
    cut.push('…');
    Value::String(cut)
}

/// Derive the class, changes, description and new state of `event`, given the last known state
/// of its object (`prior`) and of its nearest parent (`parent`, the state of `ancestors(id)[0]`).
pub fn derive(
    event: &Value,
    prior: Option<&ObjectState>,
    parent: Option<&ObjectState>,
) -> Derivation {
    let info = action_info(event);
    let class = info.as_ref().map_or(CrudClass::Info, |i| i.crud);
    let verb = info.as_ref().map_or("act on", |i| i.verb.as_str());
    let Some(id) = target_id(event) else {
        let ty = info.as_ref().map_or("resource", |i| i.object_type.as_str());
        return Derivation {
            derived: Derived {
                class: class.as_str().to_owned(),
                description: format!("{} {}", past(verb), words(ty)),
                object: None,
                changes: Vec::new(),
            },
            state: None,
        };
    };
    let object_type = info
        .as_ref()
        .map(|i| i.object_type.clone())
        .filter(|t| !t.is_empty() && t != "resource")
        .or_else(|| prior.map(|p| p.object_type.clone()))
        .unwrap_or_else(|| "resource".to_owned());
    let target_name = event
        .get("target")
        .and_then(|t| t.get("name"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty());
    let outcome = event
        .get("outcome")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    let applied = matches!(outcome, "success" | "unknown");
    let request = event.get("requestData").and_then(Value::as_object);
    let parents = parent_refs(id);
    let parent_ref = parents.first();
    let live_prior = prior.filter(|p| !p.deleted);

    let mut changes = Vec::new();
    let mut state = None;
    let base = || ObjectState {
        id: id.to_owned(),
        object_type: object_type.clone(),
        name: target_name.map(str::to_owned),
        // Not stored: it follows from the id (see `masked`).
        parent: None,
        attributes: Map::new(),
        deleted: false,
    };
    if applied {
        match class {
            CrudClass::Create | CrudClass::Update => {
                // A create of a live object (an `add` to it) changes it like an update.
                let fresh = class == CrudClass::Create && live_prior.is_none();
                let mut next = match (fresh, prior) {
                    (false, Some(p)) => p.clone(),
                    _ => base(),
                };
                if fresh {
                    next.deleted = false;
                }
                next.object_type = object_type.clone();
                for raw in raw_changes(request) {
                    let sensitive = is_sensitive(&object_type, &raw.attribute, [raw.old, raw.new]);
                    let new_kept = raw.new.map(|v| kept(v, sensitive));
                    let old_kept = if fresh {
                        None
                    } else {
                        raw.old
                            .map(|v| kept(v, sensitive))
                            .or_else(|| known_value(prior, &raw.attribute))
                    };
                    if old_kept.is_some() && old_kept == new_kept {
                        continue;
                    }
                    if raw.attribute == "name" {
                        if let Some(Value::String(n)) = raw.new {
                            next.name = Some(n.clone());
                        }
                    } else {
                        match new_kept {
                            Some(v) => {
                                next.attributes.insert(raw.attribute.clone(), v);
                            }
                            None => {
                                next.attributes.remove(&raw.attribute);
                            }
                        }
                    }
                    // A create's initial attributes are in its requestData; only changes to a
                    // known object are listed.
                    if !fresh {
                        changes.push(Change {
                            attribute: raw.attribute,
                            old: old_kept.filter(|v| !is_digest(v)),
                            new: raw.new.map(preview),
                            sensitive,
                        });
                    }
                }
                if let Some(n) = target_name {
                    let before = if fresh {
                        None
                    } else {
                        prior.and_then(|p| p.name.clone())
                    };
                    if before.as_deref() != Some(n) {
                        if before.is_some() && !changes.iter().any(|c| c.attribute == "name") {
                            changes.push(Change {
                                attribute: "name".to_owned(),
                                old: before.map(Value::String),
                                new: Some(Value::String(n.to_owned())),
                                sensitive: false,
                            });
                        }
                        next.name = Some(n.to_owned());
                    }
                }
                state = Some(next);
            }
            CrudClass::Delete => {
                let mut next = prior.cloned().unwrap_or_else(base);
                next.deleted = true;
                if next.name.is_none() {
                    next.name = target_name.map(str::to_owned);
                }
                state = Some(next);
            }
            // Reads and notices change nothing (an object seen only through them, or through
            // failed events, has no state to keep).
            CrudClass::Read | CrudClass::Info => {}
        }
    }
    for c in &mut changes {
        if c.sensitive || is_sensitive(&object_type, &c.attribute, [c.old.as_ref(), c.new.as_ref()])
        {
            c.sensitive = true;
            c.old = None;
            c.new = None;
        }
    }

    let name = target_name
        .map(str::to_owned)
        .or_else(|| prior.and_then(|p| p.name.clone()))
        .or_else(|| state.as_ref().and_then(|s| s.name.clone()))
        .unwrap_or_else(|| last_segment(id).to_owned());
    let mut text = if applied {
        format!("{} {} '{}'", past(verb), words(&object_type), name)
    } else {
        format!(
            "Failed to {} {} '{}'",
            verb.to_ascii_lowercase(),
            words(&object_type),
            name
        )
    };
    if let Some(p) = parent_ref {
        let p_type = parent
            .map(|s| s.object_type.clone())
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| p.type_hint.clone());
        let p_name = parent
            .and_then(|s| s.name.clone())
            .unwrap_or_else(|| p.name_hint.clone());
        let joint = if p.instance { "in" } else { "for" };
        text.push_str(&format!(" {joint} {} '{}'", words(&p_type), p_name));
    }
    if applied && class == CrudClass::Update && !changes.is_empty() {
        let phrases: Vec<String> = changes.iter().map(phrase).collect();
        text.push_str(": ");
        text.push_str(&phrases.join(", "));
    }
    Derivation {
        derived: Derived {
            class: class.as_str().to_owned(),
            description: text,
            object: Some(id.to_owned()),
            changes,
        },
        state,
    }
}

/// The last known value of an attribute (`name` is kept apart from the attributes).
fn known_value(prior: Option<&ObjectState>, attribute: &str) -> Option<Value> {
    let p = prior?;
    if attribute == "name" {
        return p.name.clone().map(Value::String);
    }
    p.attributes.get(attribute).cloned()
}

fn phrase(c: &Change) -> String {
    match (c.sensitive, &c.old, &c.new) {
        (true, _, _) => format!("{} changed", c.attribute),
        (false, None, Some(n)) => format!("{} changed to {}", c.attribute, shown(n)),
        (false, Some(o), None) => format!("{} removed (was {})", c.attribute, shown(o)),
        (false, None, None) => format!("{} removed", c.attribute),
        (false, Some(o), Some(n)) => {
            format!("{} changed from {} to {}", c.attribute, shown(o), shown(n))
        }
    }
}

/// A value as shown in a description: quoted, at most 80 characters.
fn shown(v: &Value) -> String {
    const MAX: usize = 80;
    let text = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.chars().count() > MAX {
        let cut: String = text.chars().take(MAX).collect();
        format!("'{cut}…'")
    } else {
        format!("'{text}'")
    }
}

fn last_segment(id: &str) -> &str {
    id.rsplit([':', '/']).find(|s| !s.is_empty()).unwrap_or(id)
}

/// `pipeline-object` → `pipeline object`.
fn words(object_type: &str) -> String {
    object_type.replace(['-', '_'], " ")
}

/// The past tense of a verb as a sentence start (`update` → `Updated`).
fn past(verb: &str) -> String {
    let v = verb.to_ascii_lowercase();
    let head = v.split(['/', '.']).next().unwrap_or("");
    let word = past_lower(head);
    let mut chars = word.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => word,
    }
}

fn past_lower(verb: &str) -> String {
    if let Some((first, rest)) = verb.split_once('-') {
        return match rest {
            // power-on → powered on; ack-delete → acknowledged delete; soft-reboot → soft-rebooted
            "on" | "off" => format!("{} {rest}", past_lower(first)),
            _ if first == "ack" => format!("acknowledged {rest}"),
            _ => format!("{first}-{}", past_lower(rest)),
        };
    }
    match verb {
        "" => "acted on".to_owned(),
        "read" | "get" | "head" | "inspect" => "read".to_owned(),
        "set" | "reset" | "put" | "split" => verb.to_owned(),
        "created" | "updated" | "deleted" | "enabled" | "disabled" => verb.to_owned(),
        "send" => "sent".to_owned(),
        "build" => "built".to_owned(),
        "run" => "ran".to_owned(),
        "login" => "logged in to".to_owned(),
        "stop" | "wrap" | "unwrap" | "rewrap" | "scan" => {
            format!("{verb}{}ed", &verb[verb.len() - 1..])
        }
        "commit" => "committed".to_owned(),
        v if v.ends_with('e') => format!("{v}d"),
        v if v.len() > 1
            && v.ends_with('y')
            && !matches!(v.as_bytes()[v.len() - 2], b'a' | b'e' | b'i' | b'o' | b'u') =>
        {
            format!("{}ied", &v[..v.len() - 1])
        }
        v => format!("{v}ed"),
    }
}
