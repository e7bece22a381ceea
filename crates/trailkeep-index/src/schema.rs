//! The index schema and how a stored event becomes an index document.
//!
//! The index stores **no document bodies**: the ledger holds them. Every field is indexed
//! (inverted) and/or a fast column; only the derived `class` and `description` are also
//! `STORED` (they are derived from the account's history, so the index is where they live). A
//! hit is read back from the fast columns `account` and `idx` only.
//!
//! | field | from | indexed as |
//! |---|---|---|
//! | `account` | item | raw term + fast (dictionary) |
//! | `idx` | item | u64 term + fast |
//! | `eventTime` | `eventTime` | fast date (µs) |
//! | `receivedAt` | item | fast date (s) |
//! | `action`, `outcome`, `severity`, `target.id`, `initiator.id` | event | raw term + fast |
//! | `id`, `correlationId` | event | u64 term of [`hash64`] of the value (exact match only) |
//! | `logSourceCRN` | event | raw term |
//! | `reasonCode` | `reason.reasonCode` when an integer | i64 term + fast |
//! | `dataEvent` | `dataEvent` | bool term + fast |
//! | `message`, `reasonForFailure` | event | words with positions |
//! | `actionWords` | `action` split into words | words |
//! | `class` | derived: the action class | raw term + fast + stored |
//! | `description` | derived: the human-readable description | words with positions + stored |
//! | `scope` | derived: the object and each parent id | raw terms |
//! | `attrs` | every other leaf of the event, by dotted path | raw terms (JSON field); strings over [`MAX_PLAIN_VALUE_BYTES`] as a hash token |
//!
//! No field keeps field norms (searches never score) and only the fields phrases are searched
//! in keep positions: the rest record which documents hold a term, nothing more.
//!
//! Unique long values (UUIDs, request ids) dominate an index's term dictionary: a 36-byte UUID
//! costs about 40 bytes there, its 64-bit hash about 10. So `id`, `correlationId` and long JSON
//! strings are indexed by hash: exact matches work, prefix search does not reach them.
//!
//! **Architecture Invariant.** Changing anything here that changes what is indexed bumps
//! [`FORMAT_VERSION`]; an index of another version is rebuilt from the ledger, never migrated.

use serde_json::Value;
use tantivy::schema::{
    DateOptions, DateTimePrecision, Field, IndexRecordOption, JsonObjectOptions, NumericOptions,
    OwnedValue, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{
    LowerCaser, RawTokenizer, RemoveLongFilter, SimpleTokenizer, TextAnalyzer,
};
use tantivy::{DateTime, Index, TantivyDocument};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::query::KnownField;

/// The version of what is indexed and how; recorded in every commit.
pub const FORMAT_VERSION: u32 = 3;

/// Tokenizer for full text: words split on non-alphanumerics, lower-cased, long words dropped.
pub(crate) const WORDS: &str = "tk_words";
/// Tokenizer for JSON leaves: the whole value.
pub(crate) const KEYWORD: &str = "tk_keyword";
/// JSON string values longer than this are indexed as a hash token ([`hashed_token`]): exact
/// matches work, prefix search does not reach them.
pub const MAX_PLAIN_VALUE_BYTES: usize = 32;

/// FNV-1a, 64 bits: stable across Rust versions and platforms (it is part of the index format).
pub fn hash64(value: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in value.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The token that stands for a long JSON string value: U+0001 followed by the unpadded
/// base64url of the little-endian bytes of [`hash64`] (12 bytes in all).
pub fn hashed_token(value: &str) -> String {
    use base64::Engine as _;
    let mut token = String::with_capacity(12);
    token.push('\u{1}');
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode_string(hash64(value).to_le_bytes(), &mut token);
    token
}

/// The token a JSON string value is indexed as.
pub(crate) fn json_token(value: &str) -> std::borrow::Cow<'_, str> {
    if value.len() > MAX_PLAIN_VALUE_BYTES {
        std::borrow::Cow::Owned(hashed_token(value))
    } else {
        std::borrow::Cow::Borrowed(value)
    }
}

/// The fields of the schema.
#[derive(Debug, Clone)]
pub(crate) struct Fields {
    pub schema: Schema,
    pub account: Field,
    pub idx: Field,
    pub event_time: Field,
    pub received_at: Field,
    pub action: Field,
    pub outcome: Field,
    pub severity: Field,
    pub id: Field,
    pub correlation_id: Field,
    pub target_id: Field,
    pub initiator_id: Field,
    pub log_source_crn: Field,
    pub reason_code: Field,
    pub data_event: Field,
    pub message: Field,
    pub reason_for_failure: Field,
    pub action_words: Field,
    pub attrs: Field,
    pub class: Field,
    pub description: Field,
    pub scope: Field,
}

impl Fields {
    /// The derived class and description stored with a document, when it has them.
    pub(crate) fn stored_derived(&self, doc: &TantivyDocument) -> Option<(String, String)> {
        use tantivy::schema::Value as _;
        let text = |f| doc.get_first(f).and_then(|v| v.as_str().map(str::to_owned));
        match (text(self.class), text(self.description)) {
            (Some(class), Some(description)) => Some((class, description)),
            _ => None,
        }
    }

    /// Documents of `account` that hold `term` (an `idx` or a hashed `id`).
    pub(crate) fn in_account(
        &self,
        account: &str,
        term: tantivy::Term,
    ) -> tantivy::query::BooleanQuery {
        use tantivy::query::{Occur, Query, TermQuery};
        use tantivy::schema::IndexRecordOption;
        tantivy::query::BooleanQuery::new(vec![
            (
                Occur::Must,
                Box::new(TermQuery::new(
                    tantivy::Term::from_field_text(self.account, account),
                    IndexRecordOption::Basic,
                )) as Box<dyn Query>,
            ),
            (
                Occur::Must,
                Box::new(TermQuery::new(term, IndexRecordOption::Basic)),
            ),
        ])
    }
}

/// What the server derives for an event and the index makes searchable (issue #11): the
/// event's bytes in the ledger stay as received, these fields live beside them.
#[derive(Debug, Clone, Copy, Default)]
pub struct DerivedFields<'a> {
    /// `create`, `update`, `delete`, `read` or `info`.
    pub class: &'a str,
    /// The human-readable description.
    pub description: &'a str,
    /// The event's object and every parent of it.
    pub scopes: &'a [String],
}

/// Names of the fast columns read by the collectors.
pub(crate) mod col {
    pub const ACCOUNT: &str = "account";
    pub const IDX: &str = "idx";
    pub const EVENT_TIME: &str = "eventTime";
}

impl Fields {
    pub fn new() -> Fields {
        let mut b = Schema::builder();
        // No field keeps field norms: searches never score (hits come in log or time order), and
        // a norm costs a byte per document and field, written and merged for nothing.
        let keyword = || {
            TextOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer("raw")
                    .set_fieldnorms(false)
                    .set_index_option(IndexRecordOption::Basic),
            )
        };
        let keyword_fast = || keyword().set_fast("raw");
        let indexed = || NumericOptions::default().set_indexed();
        let words = |positions: bool| {
            TextOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer(WORDS)
                    .set_fieldnorms(false)
                    .set_index_option(if positions {
                        IndexRecordOption::WithFreqsAndPositions
                    } else {
                        IndexRecordOption::Basic
                    }),
            )
        };
        let account = b.add_text_field("account", keyword_fast());
        let idx = b.add_u64_field("idx", indexed().set_fast());
        let event_time = b.add_date_field(
            "eventTime",
            DateOptions::default()
                .set_fast()
                .set_precision(DateTimePrecision::Microseconds),
        );
        let received_at = b.add_date_field(
            "receivedAt",
            DateOptions::default()
                .set_fast()
                .set_precision(DateTimePrecision::Seconds),
        );
        let action = b.add_text_field("action", keyword_fast());
        let outcome = b.add_text_field("outcome", keyword_fast());
        let severity = b.add_text_field("severity", keyword_fast());
        let id = b.add_u64_field("id", indexed());
        let correlation_id = b.add_u64_field("correlationId", indexed());
        let target_id = b.add_text_field("target.id", keyword_fast());
        let initiator_id = b.add_text_field("initiator.id", keyword_fast());
        let log_source_crn = b.add_text_field("logSourceCRN", keyword());
        let reason_code = b.add_i64_field("reasonCode", indexed().set_fast());
        let data_event = b.add_bool_field("dataEvent", indexed().set_fast());
        let message = b.add_text_field("message", words(true));
        let reason_for_failure = b.add_text_field("reasonForFailure", words(true));
        let action_words = b.add_text_field("actionWords", words(false));
        let attrs = b.add_json_field(
            "attrs",
            JsonObjectOptions::default()
                .set_indexing_options(
                    TextFieldIndexing::default()
                        .set_tokenizer(KEYWORD)
                        .set_fieldnorms(false)
                        .set_index_option(IndexRecordOption::Basic),
                )
                .set_expand_dots_enabled(),
        );
        // Class and description are also stored: items are returned with them (issue #11).
        let class = b.add_text_field("class", keyword_fast().set_stored());
        let description = b.add_text_field("description", words(true).set_stored());
        let scope = b.add_text_field("scope", keyword());
        Fields {
            schema: b.build(),
            class,
            description,
            scope,
            account,
            idx,
            event_time,
            received_at,
            action,
            outcome,
            severity,
            id,
            correlation_id,
            target_id,
            initiator_id,
            log_source_crn,
            reason_code,
            data_event,
            message,
            reason_for_failure,
            action_words,
            attrs,
        }
    }

    /// The index field of a known query field.
    pub fn field(&self, f: KnownField) -> Field {
        match f {
            KnownField::Account => self.account,
            KnownField::Index => self.idx,
            KnownField::EventTime => self.event_time,
            KnownField::ReceivedAt => self.received_at,
            KnownField::Action => self.action,
            KnownField::Outcome => self.outcome,
            KnownField::Severity => self.severity,
            KnownField::Id => self.id,
            KnownField::CorrelationId => self.correlation_id,
            KnownField::TargetId => self.target_id,
            KnownField::InitiatorId => self.initiator_id,
            KnownField::LogSourceCrn => self.log_source_crn,
            KnownField::ReasonCode => self.reason_code,
            KnownField::DataEvent => self.data_event,
            KnownField::Message => self.message,
            KnownField::ReasonForFailure => self.reason_for_failure,
            KnownField::Class => self.class,
            KnownField::Description => self.description,
            KnownField::Scope => self.scope,
        }
    }

    /// The fast-column name of a field (for aggregations and exists queries).
    pub fn column_name(&self, f: KnownField) -> &str {
        self.schema.get_field_name(self.field(f))
    }
}

/// Registers the tokenizers the schema names (they are not persisted by tantivy).
pub(crate) fn register_tokenizers(index: &Index) {
    let words = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(64))
        .filter(LowerCaser)
        .build();
    index.tokenizers().register(WORDS, words);
    let keyword = TextAnalyzer::builder(RawTokenizer::default()).build();
    index.tokenizers().register(KEYWORD, keyword);
}

/// Unix nanoseconds of an instant (saturating far outside ±292 years).
pub fn unix_nanos(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos()).unwrap_or(if t.year() < 1970 {
        i64::MIN
    } else {
        i64::MAX
    })
}

/// Reads the event's `eventTime` (RFC 3339) as unix nanoseconds.
pub fn event_time_nanos(event: &Value) -> Option<i64> {
    let text = event.get("eventTime")?.as_str()?;
    let t = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos()).ok()
}

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
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .filter_map(|(k, v)| attr_value(v).map(|v| (k.clone(), v)))
        .collect();
    if items.is_empty() {
        None
    } else {
        Some(OwnedValue::Object(items))
    }
}

/// Builds the index document of one item.
pub(crate) fn build_document(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_fields_have_the_column_names_the_collectors_read() {
        let f = Fields::new();
        assert_eq!(f.schema.get_field_name(f.account), col::ACCOUNT);
        assert_eq!(f.schema.get_field_name(f.idx), col::IDX);
        assert_eq!(f.schema.get_field_name(f.event_time), col::EVENT_TIME);
    }

    #[test]
    fn no_field_keeps_field_norms_or_more_than_phrases_need() {
        let f = Fields::new();
        let with_positions = [f.message, f.reason_for_failure, f.description];
        for (field, entry) in f.schema.fields() {
            assert!(!entry.has_fieldnorms(), "{} has field norms", entry.name());
            let record = match entry.field_type() {
                tantivy::schema::FieldType::Str(o) => {
                    o.get_indexing_options().map(|i| i.index_option())
                }
                tantivy::schema::FieldType::JsonObject(o) => {
                    o.get_text_indexing_options().map(|i| i.index_option())
                }
                _ => None,
            };
            if let Some(record) = record {
                let want = if with_positions.contains(&field) {
                    IndexRecordOption::WithFreqsAndPositions
                } else {
                    IndexRecordOption::Basic
                };
                assert_eq!(record, want, "{}", entry.name());
            }
        }
    }
}
