//! The index schema and how a stored event becomes an index document.
//!
//! The index stores **no document bodies**: the ledger holds them. Every field is indexed
//! (inverted) and/or a fast column, nothing is `STORED`. A hit is read back from the fast
//! columns `account` and `idx` only.
//!
//! | field | from | indexed as |
//! |---|---|---|
//! | `account` | item | raw term + fast (dictionary) |
//! | `idx` | item | u64 term + fast |
//! | `eventTime` | `eventTime` | fast date (µs) |
//! | `receivedAt` | item | fast date (s) |
//! | `action`, `outcome`, `severity`, `target.id`, `initiator.id` | event | raw term + fast |
//! | `id`, `correlationId`, `logSourceCRN` | event | raw term |
//! | `reasonCode` | `reason.reasonCode` when an integer | i64 term + fast |
//! | `dataEvent` | `dataEvent` | bool term + fast |
//! | `message`, `reasonForFailure` | event | words with positions |
//! | `actionWords` | `action` split into words | words |
//! | `attrs` | every other leaf of the event, by dotted path | raw terms (JSON field) |
//!
//! **Architecture Invariant.** Changing anything here that changes what is indexed bumps
//! [`FORMAT_VERSION`]; an index of another version is rebuilt from the ledger, never migrated.

use std::collections::BTreeMap;

use serde_json::Value;
use tantivy::schema::{
    DateOptions, DateTimePrecision, FAST, Field, INDEXED, IndexRecordOption, JsonObjectOptions,
    NumericOptions, OwnedValue, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{
    LowerCaser, RawTokenizer, RemoveLongFilter, SimpleTokenizer, TextAnalyzer,
};
use tantivy::{DateTime, Index, TantivyDocument};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::query::KnownField;

/// The version of what is indexed and how; recorded in every commit.
pub const FORMAT_VERSION: u32 = 1;

/// Tokenizer for full text: words split on non-alphanumerics, lower-cased, long words dropped.
pub(crate) const WORDS: &str = "tk_words";
/// Tokenizer for JSON leaves: the whole value, values over [`MAX_KEYWORD_BYTES`] dropped.
pub(crate) const KEYWORD: &str = "tk_keyword";
/// JSON string values longer than this are not indexed (they are still in the ledger).
pub const MAX_KEYWORD_BYTES: usize = 256;

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
        let keyword_fast = STRING | FAST;
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
        let account = b.add_text_field("account", keyword_fast.clone());
        let idx = b.add_u64_field("idx", NumericOptions::default().set_indexed().set_fast());
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
        let action = b.add_text_field("action", keyword_fast.clone());
        let outcome = b.add_text_field("outcome", keyword_fast.clone());
        let severity = b.add_text_field("severity", keyword_fast.clone());
        let id = b.add_text_field("id", STRING);
        let correlation_id = b.add_text_field("correlationId", STRING);
        let target_id = b.add_text_field("target.id", keyword_fast.clone());
        let initiator_id = b.add_text_field("initiator.id", keyword_fast);
        let log_source_crn = b.add_text_field("logSourceCRN", STRING);
        let reason_code = b.add_i64_field("reasonCode", INDEXED | FAST);
        let data_event = b.add_bool_field("dataEvent", INDEXED | FAST);
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
        Fields {
            schema: b.build(),
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
    let keyword = TextAnalyzer::builder(RawTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_KEYWORD_BYTES + 1))
        .build();
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

/// Builds the index document of one item.
pub(crate) fn build_document(
    f: &Fields,
    account: &str,
    index: u64,
    received_at_nanos: i64,
    event: &Value,
) -> TantivyDocument {
    let mut doc = TantivyDocument::new();
    doc.add_text(f.account, account);
    doc.add_u64(f.idx, index);
    let event_time = event_time_nanos(event).unwrap_or(received_at_nanos);
    doc.add_date(f.event_time, DateTime::from_timestamp_nanos(event_time));
    doc.add_date(
        f.received_at,
        DateTime::from_timestamp_nanos(received_at_nanos),
    );

    let mut rest = match event {
        Value::Object(map) => map.clone(),
        _ => serde_json::Map::new(),
    };
    let mut take_str = |key: &str, field: Field, lower: bool| {
        if let Some(Value::String(s)) = rest.get(key) {
            if lower {
                doc.add_text(field, s.to_lowercase());
            } else {
                doc.add_text(field, s);
            }
            rest.remove(key);
        }
    };
    take_str("id", f.id, false);
    take_str("outcome", f.outcome, true);
    take_str("severity", f.severity, true);
    take_str("correlationId", f.correlation_id, false);
    take_str("logSourceCRN", f.log_source_crn, false);
    take_str("message", f.message, false);
    rest.remove("eventTime");
    if let Some(Value::String(action)) = rest.remove("action") {
        doc.add_text(f.action, &action);
        doc.add_text(f.action_words, &action);
    }
    match rest.get("dataEvent") {
        Some(Value::Bool(b)) => {
            doc.add_bool(f.data_event, *b);
            rest.remove("dataEvent");
        }
        Some(Value::String(s)) if s == "true" || s == "false" => {
            doc.add_bool(f.data_event, s == "true");
            rest.remove("dataEvent");
        }
        _ => {}
    }
    for (key, field) in [("target", f.target_id), ("initiator", f.initiator_id)] {
        if let Some(Value::Object(obj)) = rest.get_mut(key) {
            if let Some(Value::String(id)) = obj.remove("id") {
                doc.add_text(field, id);
            }
        }
    }
    if let Some(Value::Object(reason)) = rest.get_mut("reason") {
        let code = match reason.get("reasonCode") {
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => s.trim().parse::<i64>().ok(),
            _ => None,
        };
        if let Some(code) = code {
            doc.add_i64(f.reason_code, code);
            reason.remove("reasonCode");
        }
        if let Some(Value::String(text)) = reason.remove("reasonForFailure") {
            doc.add_text(f.reason_for_failure, text);
        }
    }
    // Whatever is left, by dotted path. Values that are stringified JSON stay strings.
    let attrs: BTreeMap<String, OwnedValue> = rest
        .into_iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k, OwnedValue::from(v)))
        .collect();
    if !attrs.is_empty() {
        doc.add_object(f.attrs, attrs);
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
}
