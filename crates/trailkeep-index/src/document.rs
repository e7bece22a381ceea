//! The index document of one item, built without copying the event.
//!
//! tantivy indexes any type that implements its `Document` trait. [`EventDocument`] holds the
//! stored event (shared, not copied) and the handful of fields computed from it; the `attrs`
//! catch-all is read straight out of the event while tantivy indexes it. Building a
//! `TantivyDocument` instead copied every leaf of the event twice (into an `OwnedValue` tree,
//! then into the document's compact form) — about 60 allocations per event.
//!
//! What is indexed is exactly what the schema's table (see the `schema` module) says, and
//! exactly what the `TantivyDocument` built before held: a test indexes a corpus both ways and
//! compares every term, column and stored value.

use std::sync::Arc;

use serde_json::{Map, Value};
use tantivy::DateTime;
use tantivy::schema::document::{Document, ReferenceValue, ReferenceValueLeaf};
use tantivy::schema::{Field, Value as TantivyValue};

use crate::schema::{DerivedFields, Fields, MAX_PLAIN_VALUE_BYTES, event_time_nanos, hash64};

/// An event as the index takes it: shared with the caller when it is already in an [`Arc`],
/// copied once otherwise.
pub trait IntoEvent {
    /// The event.
    fn as_event(&self) -> &Value;
    /// The event, shared.
    fn into_event(self) -> Arc<Value>;
}

impl IntoEvent for Arc<Value> {
    fn as_event(&self) -> &Value {
        self
    }
    fn into_event(self) -> Arc<Value> {
        self
    }
}

impl IntoEvent for &Arc<Value> {
    fn as_event(&self) -> &Value {
        self
    }
    fn into_event(self) -> Arc<Value> {
        self.clone()
    }
}

impl IntoEvent for Value {
    fn as_event(&self) -> &Value {
        self
    }
    fn into_event(self) -> Arc<Value> {
        Arc::new(self)
    }
}

impl IntoEvent for &Value {
    fn as_event(&self) -> &Value {
        self
    }
    fn into_event(self) -> Arc<Value> {
        Arc::new(self.clone())
    }
}

/// A value the document computed (everything but `attrs`).
#[derive(Debug, Clone)]
pub(crate) enum Computed {
    Str(String),
    U64(u64),
    I64(i64),
    Bool(bool),
    Date(DateTime),
}

/// Keys left out of an object of `attrs` because they have their own field.
const SKIP_ID: u8 = 1;
const SKIP_REASON_CODE: u8 = 2;
const SKIP_REASON_FOR_FAILURE: u8 = 4;

fn skipped(key: &str, skip: u8) -> bool {
    skip != 0
        && ((skip & SKIP_ID != 0 && key == "id")
            || (skip & SKIP_REASON_CODE != 0 && key == "reasonCode")
            || (skip & SKIP_REASON_FOR_FAILURE != 0 && key == "reasonForFailure"))
}

/// The hash tokens of the long strings of `attrs` (see [`crate::hashed_token`]), found by the
/// address of the string in the shared event, which does not move while the document lives.
#[derive(Debug, Default)]
pub(crate) struct Tokens {
    /// Every token, [`TOKEN_LEN`] bytes each.
    text: String,
    /// (address of the string's bytes, offset of its token in `text`), by address.
    at: Vec<(usize, u32)>,
}

/// Length of a hashed token: U+0001 and 11 base64url characters.
const TOKEN_LEN: usize = 12;

impl Tokens {
    fn collect(&mut self, value: &Value) {
        match value {
            Value::String(s) if s.len() > MAX_PLAIN_VALUE_BYTES => {
                use base64::Engine as _;
                let start = self.text.len();
                self.text.push('\u{1}');
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode_string(hash64(s).to_le_bytes(), &mut self.text);
                debug_assert_eq!(self.text.len() - start, TOKEN_LEN);
                self.at.push((s.as_ptr() as usize, start as u32));
            }
            Value::Array(items) => items.iter().for_each(|v| self.collect(v)),
            Value::Object(map) => map.values().for_each(|v| self.collect(v)),
            _ => {}
        }
    }

    fn collect_object(&mut self, map: &Map<String, Value>, skip: u8) {
        for (k, v) in map {
            if !skipped(k, skip) {
                self.collect(v);
            }
        }
    }

    /// The token of a long string of the event.
    fn of(&self, s: &str) -> Option<&str> {
        let i = self
            .at
            .binary_search_by_key(&(s.as_ptr() as usize), |&(p, _)| p)
            .ok()?;
        let start = self.at[i].1 as usize;
        self.text.get(start..start + TOKEN_LEN)
    }
}

/// How a top-level key of the event is indexed in `attrs`: not at all, whole, or as an object
/// without the keys that have their own field.
fn attrs_part(key: &str, value: &Value) -> Option<u8> {
    match (key, value) {
        ("eventTime", _)
        | (
            "id" | "correlationId" | "outcome" | "severity" | "logSourceCRN" | "message" | "action",
            Value::String(_),
        )
        | ("dataEvent", Value::Bool(_)) => None,
        ("dataEvent", Value::String(s)) if s == "true" || s == "false" => None,
        ("target" | "initiator", Value::Object(obj)) => Some(match obj.get("id") {
            Some(Value::String(_)) => SKIP_ID,
            _ => 0,
        }),
        ("reason", Value::Object(reason)) => {
            let mut skip = 0;
            if reason_code(reason).is_some() {
                skip |= SKIP_REASON_CODE;
            }
            if let Some(Value::String(_)) = reason.get("reasonForFailure") {
                skip |= SKIP_REASON_FOR_FAILURE;
            }
            Some(skip)
        }
        _ => Some(0),
    }
}

fn reason_code(reason: &Map<String, Value>) -> Option<i64> {
    match reason.get("reasonCode") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
        _ => None,
    }
}

/// The index document of one item.
#[derive(Debug)]
pub(crate) struct EventDocument {
    event: Arc<Value>,
    computed: Vec<(Field, Computed)>,
    attrs: Field,
    tokens: Tokens,
}

impl EventDocument {
    /// The document of the event stored at `(account, index)`, received at
    /// `received_at_nanos`, with what was derived for it.
    pub(crate) fn new(
        f: &Fields,
        account: &str,
        index: u64,
        received_at_nanos: i64,
        event: Arc<Value>,
        derived: Option<&DerivedFields<'_>>,
    ) -> EventDocument {
        let mut computed = Vec::with_capacity(24);
        if let Some(d) = derived {
            if !d.class.is_empty() {
                computed.push((f.class, Computed::Str(d.class.to_lowercase())));
            }
            if !d.description.is_empty() {
                computed.push((f.description, Computed::Str(d.description.to_owned())));
            }
            for s in d.scopes {
                computed.push((f.scope, Computed::Str(s.clone())));
            }
        }
        computed.push((f.account, Computed::Str(account.to_owned())));
        computed.push((f.idx, Computed::U64(index)));
        let event_time = event_time_nanos(&event).unwrap_or(received_at_nanos);
        computed.push((
            f.event_time,
            Computed::Date(DateTime::from_timestamp_nanos(event_time)),
        ));
        computed.push((
            f.received_at,
            Computed::Date(DateTime::from_timestamp_nanos(received_at_nanos)),
        ));
        let mut tokens = Tokens::default();
        if let Value::Object(map) = event.as_ref() {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("id", Value::String(s)) => computed.push((f.id, Computed::U64(hash64(s)))),
                    ("correlationId", Value::String(s)) => {
                        computed.push((f.correlation_id, Computed::U64(hash64(s))));
                    }
                    ("outcome", Value::String(s)) => {
                        computed.push((f.outcome, Computed::Str(s.to_lowercase())));
                    }
                    ("severity", Value::String(s)) => {
                        computed.push((f.severity, Computed::Str(s.to_lowercase())));
                    }
                    ("logSourceCRN", Value::String(s)) => {
                        computed.push((f.log_source_crn, Computed::Str(s.clone())));
                    }
                    ("message", Value::String(s)) => {
                        computed.push((f.message, Computed::Str(s.clone())));
                    }
                    ("action", Value::String(s)) => {
                        computed.push((f.action, Computed::Str(s.clone())));
                        computed.push((f.action_words, Computed::Str(s.clone())));
                    }
                    ("dataEvent", Value::Bool(b)) => {
                        computed.push((f.data_event, Computed::Bool(*b)));
                    }
                    ("dataEvent", Value::String(s)) if s == "true" || s == "false" => {
                        computed.push((f.data_event, Computed::Bool(s == "true")));
                    }
                    ("target" | "initiator", Value::Object(obj)) => {
                        if let Some(Value::String(id)) = obj.get("id") {
                            let field = if key == "target" {
                                f.target_id
                            } else {
                                f.initiator_id
                            };
                            computed.push((field, Computed::Str(id.clone())));
                            tokens.collect_object(obj, SKIP_ID);
                        } else {
                            tokens.collect_object(obj, 0);
                        }
                    }
                    ("reason", Value::Object(reason)) => {
                        if let Some(code) = reason_code(reason) {
                            computed.push((f.reason_code, Computed::I64(code)));
                        }
                        if let Some(Value::String(text)) = reason.get("reasonForFailure") {
                            computed.push((f.reason_for_failure, Computed::Str(text.clone())));
                        }
                        let skip = attrs_part(key, value).unwrap_or(0);
                        tokens.collect_object(reason, skip);
                    }
                    ("eventTime", _) => {}
                    _ => tokens.collect(value),
                }
            }
        }
        tokens.at.sort_unstable_by_key(|&(p, _)| p);
        EventDocument {
            event,
            computed,
            attrs: f.attrs,
            tokens,
        }
    }
}

/// A value of an [`EventDocument`]: computed, or a part of the event indexed in `attrs`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum DocValue<'a> {
    /// A computed field value.
    Computed(&'a Computed),
    /// `{key: value}` for a top-level key of the event, without the `skip` keys of `value`.
    Top(&'a str, &'a Value, u8, &'a Tokens),
    /// An object of the event without the `skip` keys.
    Object(&'a Map<String, Value>, u8, &'a Tokens),
    /// A part of the event, as is (long strings as their token).
    Json(&'a Value, &'a Tokens),
}

/// Iterates an array of the event.
#[derive(Debug, Clone)]
pub(crate) struct ArrayIter<'a>(std::slice::Iter<'a, Value>, &'a Tokens);

impl<'a> Iterator for ArrayIter<'a> {
    type Item = DocValue<'a>;
    fn next(&mut self) -> Option<DocValue<'a>> {
        self.0.next().map(|v| DocValue::Json(v, self.1))
    }
}

/// Iterates an object of the event (or the one key of a top-level part).
pub(crate) enum ObjectIter<'a> {
    /// The single key of [`DocValue::Top`].
    One(Option<(&'a str, DocValue<'a>)>),
    /// The keys of an object, without the skipped ones.
    Map(serde_json::map::Iter<'a>, u8, &'a Tokens),
}

impl<'a> Iterator for ObjectIter<'a> {
    type Item = (&'a str, DocValue<'a>);
    fn next(&mut self) -> Option<(&'a str, DocValue<'a>)> {
        match self {
            ObjectIter::One(one) => one.take(),
            ObjectIter::Map(iter, skip, tokens) => {
                for (k, v) in iter.by_ref() {
                    if !skipped(k, *skip) {
                        return Some((k.as_str(), DocValue::Json(v, tokens)));
                    }
                }
                None
            }
        }
    }
}

impl<'a> TantivyValue<'a> for DocValue<'a> {
    type ArrayIter = ArrayIter<'a>;
    type ObjectIter = ObjectIter<'a>;

    fn as_value(&self) -> ReferenceValue<'a, Self> {
        match *self {
            DocValue::Computed(c) => ReferenceValue::Leaf(match c {
                Computed::Str(s) => ReferenceValueLeaf::Str(s),
                Computed::U64(u) => ReferenceValueLeaf::U64(*u),
                Computed::I64(i) => ReferenceValueLeaf::I64(*i),
                Computed::Bool(b) => ReferenceValueLeaf::Bool(*b),
                Computed::Date(d) => ReferenceValueLeaf::Date(*d),
            }),
            DocValue::Top(key, value, skip, tokens) => {
                let inner = match value {
                    Value::Object(map) if skip != 0 => DocValue::Object(map, skip, tokens),
                    _ => DocValue::Json(value, tokens),
                };
                ReferenceValue::Object(ObjectIter::One(Some((key, inner))))
            }
            DocValue::Object(map, skip, tokens) => {
                ReferenceValue::Object(ObjectIter::Map(map.iter(), skip, tokens))
            }
            DocValue::Json(value, tokens) => match value {
                Value::Null => ReferenceValue::Leaf(ReferenceValueLeaf::Null),
                Value::Bool(b) => ReferenceValue::Leaf(ReferenceValueLeaf::Bool(*b)),
                Value::Number(n) => ReferenceValue::Leaf(if let Some(u) = n.as_u64() {
                    ReferenceValueLeaf::U64(u)
                } else if let Some(i) = n.as_i64() {
                    ReferenceValueLeaf::I64(i)
                } else {
                    ReferenceValueLeaf::F64(n.as_f64().unwrap_or(0.0))
                }),
                Value::String(s) if s.len() > MAX_PLAIN_VALUE_BYTES => {
                    // Every long string of `attrs` was hashed when the document was built.
                    match tokens.of(s) {
                        Some(token) => ReferenceValue::Leaf(ReferenceValueLeaf::Str(token)),
                        None => {
                            debug_assert!(false, "a long string without its token");
                            ReferenceValue::Leaf(ReferenceValueLeaf::Null)
                        }
                    }
                }
                Value::String(s) => ReferenceValue::Leaf(ReferenceValueLeaf::Str(s)),
                Value::Array(items) => ReferenceValue::Array(ArrayIter(items.iter(), tokens)),
                Value::Object(map) => {
                    ReferenceValue::Object(ObjectIter::Map(map.iter(), 0, tokens))
                }
            },
        }
    }
}

/// Iterates the fields and values of an [`EventDocument`]: the computed ones, then one
/// `attrs` value per top-level key of the event that goes there.
pub(crate) struct FieldValues<'a> {
    computed: std::slice::Iter<'a, (Field, Computed)>,
    event: Option<serde_json::map::Iter<'a>>,
    attrs: Field,
    tokens: &'a Tokens,
}

impl<'a> Iterator for FieldValues<'a> {
    type Item = (Field, DocValue<'a>);
    fn next(&mut self) -> Option<(Field, DocValue<'a>)> {
        if let Some((field, c)) = self.computed.next() {
            return Some((*field, DocValue::Computed(c)));
        }
        let event = self.event.as_mut()?;
        for (key, value) in event.by_ref() {
            if let Some(skip) = attrs_part(key, value) {
                return Some((
                    self.attrs,
                    DocValue::Top(key.as_str(), value, skip, self.tokens),
                ));
            }
        }
        None
    }
}

impl Document for EventDocument {
    type Value<'a> = DocValue<'a>;
    type FieldsValuesIter<'a> = FieldValues<'a>;

    fn iter_fields_and_values(&self) -> FieldValues<'_> {
        FieldValues {
            computed: self.computed.iter(),
            event: match self.event.as_ref() {
                Value::Object(map) => Some(map.iter()),
                _ => None,
            },
            attrs: self.attrs,
            tokens: &self.tokens,
        }
    }
}

#[cfg(test)]
mod tests {
    //! The document is checked against the `TantivyDocument` built before it (kept here as the
    //! reference): both index the same events and must write the same bytes.

    use std::collections::BTreeMap;

    use serde_json::json;
    use tantivy::schema::OwnedValue;
    use tantivy::{DateTime, Index, IndexWriter, TantivyDocument};

    use super::*;
    use crate::schema::{json_token, register_tokenizers, unix_nanos};

    /// A JSON value as indexed in `attrs`: nulls dropped, long strings replaced by their hash token.
    fn attr_value(v: &Value) -> Option<OwnedValue> {
        Some(match v {
            Value::Null => return None,
            Value::Bool(b) => OwnedValue::Bool(*b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    OwnedValue::U64(u)
                } else if let Some(i) = n.as_i64() {
                    OwnedValue::I64(i)
                } else {
                    OwnedValue::F64(n.as_f64().unwrap_or(0.0))
                }
            }
            Value::String(s) => OwnedValue::Str(json_token(s).into_owned()),
            Value::Array(items) => OwnedValue::Array(items.iter().filter_map(attr_value).collect()),
            Value::Object(map) => OwnedValue::Object(
                map.iter()
                    .filter_map(|(k, v)| attr_value(v).map(|v| (k.clone(), v)))
                    .collect(),
            ),
        })
    }

    /// An object as indexed in `attrs`, without the keys that have their own field.
    fn attr_object(map: &serde_json::Map<String, Value>, skip: &[&str]) -> Option<OwnedValue> {
        let items: Vec<(String, OwnedValue)> = map
            .iter()
            .filter(|(k, _)| !skip.contains(&String::as_str(k)))
            .filter_map(|(k, v)| attr_value(v).map(|v| (k.clone(), v)))
            .collect();
        if items.is_empty() {
            None
        } else {
            Some(OwnedValue::Object(items))
        }
    }

    /// Builds the index document of one item.
    fn reference_document(
        f: &Fields,
        account: &str,
        index: u64,
        received_at_nanos: i64,
        event: &Value,
        derived: Option<&DerivedFields<'_>>,
    ) -> TantivyDocument {
        let mut doc = TantivyDocument::new();
        if let Some(d) = derived {
            if !d.class.is_empty() {
                doc.add_text(f.class, d.class.to_lowercase());
            }
            if !d.description.is_empty() {
                doc.add_text(f.description, d.description);
            }
            for s in d.scopes {
                doc.add_text(f.scope, s);
            }
        }
        doc.add_text(f.account, account);
        doc.add_u64(f.idx, index);
        let event_time = event_time_nanos(event).unwrap_or(received_at_nanos);
        doc.add_date(f.event_time, DateTime::from_timestamp_nanos(event_time));
        doc.add_date(
            f.received_at,
            DateTime::from_timestamp_nanos(received_at_nanos),
        );
        let Value::Object(map) = event else {
            return doc;
        };

        // Keys of a JSON object are unique, so the leaves go straight into the document's object
        // (no sorted map in between: tantivy does not need the keys in order).
        let mut attrs: Vec<(String, OwnedValue)> = Vec::with_capacity(map.len());
        for (key, value) in map {
            match (key.as_str(), value) {
                ("eventTime", _) => {}
                ("id", Value::String(s)) => doc.add_u64(f.id, hash64(s)),
                ("correlationId", Value::String(s)) => doc.add_u64(f.correlation_id, hash64(s)),
                ("outcome", Value::String(s)) => doc.add_text(f.outcome, s.to_lowercase()),
                ("severity", Value::String(s)) => doc.add_text(f.severity, s.to_lowercase()),
                ("logSourceCRN", Value::String(s)) => doc.add_text(f.log_source_crn, s),
                ("message", Value::String(s)) => doc.add_text(f.message, s),
                ("action", Value::String(s)) => {
                    doc.add_text(f.action, s);
                    doc.add_text(f.action_words, s);
                }
                ("dataEvent", Value::Bool(b)) => doc.add_bool(f.data_event, *b),
                ("dataEvent", Value::String(s)) if s == "true" || s == "false" => {
                    doc.add_bool(f.data_event, s == "true");
                }
                ("target" | "initiator", Value::Object(obj)) => {
                    let field = if key == "target" {
                        f.target_id
                    } else {
                        f.initiator_id
                    };
                    let mut skip: &[&str] = &[];
                    if let Some(Value::String(id)) = obj.get("id") {
                        doc.add_text(field, id);
                        skip = &["id"];
                    }
                    if let Some(v) = attr_object(obj, skip) {
                        attrs.push((key.clone(), v));
                    }
                }
                ("reason", Value::Object(reason)) => {
                    let mut skip = Vec::with_capacity(2);
                    let code = match reason.get("reasonCode") {
                        Some(Value::Number(n)) => n.as_i64(),
                        Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
                        _ => None,
                    };
                    if let Some(code) = code {
                        doc.add_i64(f.reason_code, code);
                        skip.push("reasonCode");
                    }
                    if let Some(Value::String(text)) = reason.get("reasonForFailure") {
                        doc.add_text(f.reason_for_failure, text);
                        skip.push("reasonForFailure");
                    }
                    if let Some(v) = attr_object(reason, &skip) {
                        attrs.push((key.clone(), v));
                    }
                }
                // Anything else (and known keys of an unexpected type), by dotted path.
                _ => {
                    if let Some(v) = attr_value(value) {
                        attrs.push((key.clone(), v));
                    }
                }
            }
        }
        if !attrs.is_empty() {
            doc.add_field_value(f.attrs, &OwnedValue::Object(attrs));
        }
        doc
    }

    fn events() -> Vec<Value> {
        let long = "x".repeat(MAX_PLAIN_VALUE_BYTES + 1);
        let mut events = vec![
            json!({
                "id": "e-1", "correlationId": "c-1", "action": "iam.user.create",
                "eventTime": "2026-11-15T08:37:46.000+00:00", "outcome": "Success",
                "severity": "Normal", "logSourceCRN": "crn:v1:bluemix:public:iam:global:a/1::",
                "message": "IAM: create user alice", "dataEvent": false,
                "initiator": {"id": "IBMid-1", "name": "alice", "host": {"address": "203.0.113.9"},
                              "credential": {"type": "token"}, "nothing": null},
                "target": {"id": "crn:v1:bluemix:public:iam:global:a/1::user:alice",
                           "name": long, "typeURI": "iam/user"},
                "reason": {"reasonCode": 201, "reasonType": "Created",
                           "reasonForFailure": "none at all"},
                "requestData": {"headers": {"x-request-id": "857863ff-17a9-4cba-a5a3-6c15609f7552",
                                            "accept": "application/json"},
                                "env": [{"name": "A", "value": long.clone() + "y"},
                                        {"name": "B", "value": null}, null, [1, "two", long]],
                                "labels": {"app.kubernetes.io/name": "checkout"}},
                "numbers": {"big": u64::MAX, "neg": -7, "float": 2.5, "whole": 2.0},
                "empty": {}, "top": null, "saveServiceCopy": true
            }),
            // Known keys of unexpected types go to attrs; so do objects without a string id.
            json!({"id": 5, "action": ["a"], "outcome": 1, "dataEvent": "maybe",
                   "target": {"id": 7, "name": "t"}, "initiator": "someone",
                   "reason": {"reasonCode": "404 ", "reasonForFailure": 3},
                   "eventTime": "not a time", "message": {"text": "hello there"}}),
            json!({"dataEvent": "true", "reason": {"reasonCode": "x"}, "severity": "critical",
                   "target": {"name": "no id"}}),
            json!({"reason": {"reasonCode": 1.5, "other": null}}),
            json!({}),
            json!(["not", "an", "object"]),
            json!({"eventTime": "2026-11-16T00:00:00Z",
                   "a": {"b.c": {"d": "dotted key", "e": [[["deep"]]]}}}),
        ];
        for i in 0..40u64 {
            events.push(json!({
                "id": format!("id-{i}"), "action": format!("svc.thing{}.update", i % 3),
                "initiator": {"id": format!("user-{}", i % 5)},
                "requestData": {"requestId": format!("{i:040}"), "n": i}
            }));
        }
        events
    }

    /// The bytes of each file of the index's single segment, by extension.
    fn segment_files(dir: &std::path::Path) -> BTreeMap<String, Vec<u8>> {
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with('.') || name == "meta.json" {
                continue;
            }
            let ext = path.extension().unwrap().to_string_lossy().into_owned();
            assert!(
                files.insert(ext, std::fs::read(&path).unwrap()).is_none(),
                "one segment: {name}"
            );
        }
        files
    }

    fn create(dir: &std::path::Path, f: &Fields) -> Index {
        let index = Index::create_in_dir(dir, f.schema.clone()).unwrap();
        register_tokenizers(&index);
        index
    }

    #[test]
    fn the_document_indexes_exactly_what_a_tantivy_document_built_from_the_event_does() {
        let f = Fields::new();
        let scopes = vec!["crn:a:proj:app:web".to_string(), "crn:a:proj::".to_string()];
        let d = DerivedFields {
            class: "Create",
            description: "Created application 'web' in project 'proj'",
            scopes: &scopes,
        };
        let received = unix_nanos(time::macros::datetime!(2026-11-20 10:00 UTC));
        let events = events();

        let old_dir = tempfile::tempdir().unwrap();
        let old = create(old_dir.path(), &f);
        let mut w: IndexWriter<TantivyDocument> = old.writer_with_num_threads(1, 20 << 20).unwrap();
        for (i, e) in events.iter().enumerate() {
            let derived = (i % 2 == 0).then_some(&d);
            w.add_document(reference_document(
                &f, "acme", i as u64, received, e, derived,
            ))
            .unwrap();
        }
        w.commit().unwrap();
        w.wait_merging_threads().unwrap();

        let new_dir = tempfile::tempdir().unwrap();
        let new = create(new_dir.path(), &f);
        let mut w: IndexWriter<EventDocument> = new.writer_with_num_threads(1, 20 << 20).unwrap();
        for (i, e) in events.iter().enumerate() {
            let derived = (i % 2 == 0).then_some(&d);
            let doc =
                EventDocument::new(&f, "acme", i as u64, received, Arc::new(e.clone()), derived);
            w.add_document(doc).unwrap();
        }
        w.commit().unwrap();
        w.wait_merging_threads().unwrap();

        let old_files = segment_files(old_dir.path());
        let new_files = segment_files(new_dir.path());
        assert!(old_files.contains_key("term") && old_files.contains_key("fast"));
        assert_eq!(
            old_files.keys().collect::<Vec<_>>(),
            new_files.keys().collect::<Vec<_>>()
        );
        for (ext, bytes) in &old_files {
            assert!(bytes == &new_files[ext], "the .{ext} files differ");
        }
    }

    #[test]
    fn every_long_string_of_attrs_has_its_token_and_no_other_string_does() {
        let f = Fields::new();
        for e in events() {
            let doc = EventDocument::new(&f, "a", 0, 0, Arc::new(e), None);
            let mut longs = 0;
            fn walk(v: DocValue<'_>, longs: &mut usize) {
                match v.as_value() {
                    ReferenceValue::Leaf(ReferenceValueLeaf::Str(s)) => {
                        if s.starts_with('\u{1}') {
                            assert_eq!(s.len(), TOKEN_LEN);
                            *longs += 1;
                        } else {
                            assert!(s.len() <= MAX_PLAIN_VALUE_BYTES, "{s}");
                        }
                    }
                    ReferenceValue::Leaf(_) => {}
                    ReferenceValue::Array(items) => items.for_each(|v| walk(v, longs)),
                    ReferenceValue::Object(items) => {
                        items.for_each(|(_, v)| walk(v, longs));
                    }
                }
            }
            for (field, value) in doc.iter_fields_and_values() {
                if field == f.attrs {
                    walk(value, &mut longs);
                }
            }
            assert_eq!(longs, doc.tokens.at.len());
        }
    }
}
