//! Evaluating a [`Plan`] against one stored event in memory, without the index.
//!
//! The alert evaluator sees every committed record once, as it is committed; asking the index
//! whether that one record matches each rule would cost a search per rule and wait for an index
//! commit. [`matches`] answers the same question directly over the event's JSON, with the same
//! semantics as the index (`schema.rs` decides what is indexed how, `compile.rs` how a plan is
//! searched): words are split on non-alphanumerics and lower-cased, words of 64 bytes or more are
//! not indexed, `outcome`/`severity` compare lower-cased, `id`/`correlationId` and long JSON
//! strings match whole values only, keys with a dedicated field are not in the JSON catch-all,
//! times compare at the index's precision (µs for `eventTime`, s for `receivedAt`).
//!
//! The integration tests run every search case through both the index and this function and
//! require the same answer.
//!
//! Pure: no I/O, no clock.

use std::borrow::Cow;

use serde_json::Value;

use crate::query::{FieldKind, JsonOp, KnownField, Plan, TextKind};
use crate::schema::{MAX_PLAIN_VALUE_BYTES, event_time_nanos};

/// One committed item as the matcher sees it.
#[derive(Debug, Clone, Copy)]
pub struct MatchItem<'a> {
    /// The item's account.
    pub account: &'a str,
    /// The item's position in its account's log.
    pub index: u64,
    /// When Trailkeep received it, unix nanoseconds.
    pub received_at_nanos: i64,
    /// The stored event.
    pub event: &'a Value,
}

/// Does the item match the plan (exactly as a search over the index would answer)?
pub fn matches(plan: &Plan, item: &MatchItem<'_>) -> bool {
    match plan {
        Plan::All => true,
        Plan::And(items) => items.iter().all(|p| matches(p, item)),
        Plan::Or(items) => items.iter().any(|p| matches(p, item)),
        Plan::Not(inner) => !matches(inner, item),
        Plan::FullText { kind, value } => {
            let tokens = words(value);
            if tokens.is_empty() {
                return false;
            }
            let in_text = |text: Option<&str>| {
                text.is_some_and(|t| text_matches(&words(t), &tokens, *kind, true))
            };
            if in_text(message(item.event)) || in_text(reason_for_failure(item.event)) {
                return true;
            }
            // Action words have no positions: words and prefixes only.
            if *kind != TextKind::Phrase || tokens.len() == 1 {
                let kind = if *kind == TextKind::Phrase {
                    TextKind::Word
                } else {
                    *kind
                };
                if let Some(action) = str_at(item.event, "action") {
                    return text_matches(&words(action), &tokens, kind, false);
                }
            }
            false
        }
        Plan::Text { field, kind, value } => {
            let tokens = words(value);
            if tokens.is_empty() {
                return false;
            }
            let text = match field {
                KnownField::Message => message(item.event),
                KnownField::ReasonForFailure => reason_for_failure(item.event),
                _ => None,
            };
            text.is_some_and(|t| text_matches(&words(t), &tokens, *kind, true))
        }
        Plan::Keyword {
            field,
            value,
            prefix,
        } => match keyword(*field, item) {
            None => false,
            Some(v) if field.kind() == FieldKind::HashedKeyword => *v == **value,
            Some(v) if *prefix => v.starts_with(value.as_str()),
            Some(v) => *v == **value,
        },
        Plan::Int { field, min, max } => {
            let n: Option<i128> = match field {
                KnownField::Index => Some(i128::from(item.index)),
                KnownField::ReasonCode => reason_code(item.event).map(i128::from),
                _ => None,
            };
            n.is_some_and(|n| {
                min.is_none_or(|m| n >= i128::from(m)) && max.is_none_or(|m| n <= i128::from(m))
            })
        }
        Plan::Time { field, from, to } => {
            let (t, unit) = match field {
                KnownField::EventTime => (
                    event_time_nanos(item.event).unwrap_or(item.received_at_nanos),
                    1_000,
                ),
                KnownField::ReceivedAt => (item.received_at_nanos, 1_000_000_000),
                _ => return false,
            };
            // The stored value is truncated to the precision; the bounds are not.
            let t = t.div_euclid(unit).saturating_mul(unit);
            from.is_none_or(|f| t >= f) && to.is_none_or(|e| t < e)
        }
        Plan::Bool { field, value } => {
            *field == KnownField::DataEvent && data_event(item.event) == Some(*value)
        }
        Plan::Exists { field } => exists(*field, item),
        Plan::Json { path, op } => json_matches(item.event, path, op),
    }
}

/// The words of a text as the index's `tk_words` tokenizer makes them.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && w.len() < 64)
        .map(str::to_lowercase)
        .collect()
}

/// Does a field holding `field_words` match the query words?
fn text_matches(field_words: &[String], query: &[String], kind: TextKind, positions: bool) -> bool {
    let has = |w: &String| field_words.contains(w);
    match (kind, query.len()) {
        (_, 0) => false,
        (TextKind::Prefix, n) => {
            query[..n - 1].iter().all(has)
                && field_words
                    .iter()
                    .any(|w| w.starts_with(query[n - 1].as_str()))
        }
        (_, 1) => has(&query[0]),
        _ if positions => field_words
            .windows(query.len())
            .any(|window| window == query),
        _ => query.iter().all(has),
    }
}

fn str_at<'a>(event: &'a Value, key: &str) -> Option<&'a str> {
    event.get(key)?.as_str()
}

fn message(event: &Value) -> Option<&str> {
    str_at(event, "message")
}

fn reason_for_failure(event: &Value) -> Option<&str> {
    event
        .get("reason")?
        .as_object()?
        .get("reasonForFailure")?
        .as_str()
}

fn reason_code(event: &Value) -> Option<i64> {
    match event.get("reason")?.as_object()?.get("reasonCode")? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    }
}

fn data_event(event: &Value) -> Option<bool> {
    match event.get("dataEvent")? {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s == "true" => Some(true),
        Value::String(s) if s == "false" => Some(false),
        _ => None,
    }
}

/// The value of a keyword field as indexed.
fn keyword<'a>(field: KnownField, item: &MatchItem<'a>) -> Option<Cow<'a, str>> {
    let e = item.event;
    let lower = |s: &'a str| {
        if s.chars().any(char::is_uppercase) {
            Cow::Owned(s.to_lowercase())
        } else {
            Cow::Borrowed(s)
        }
    };
    let s = match field {
        KnownField::Account => item.account,
        KnownField::Action => str_at(e, "action")?,
        KnownField::Outcome => return Some(lower(str_at(e, "outcome")?)),
        KnownField::Severity => return Some(lower(str_at(e, "severity")?)),
        KnownField::Id => str_at(e, "id")?,
        KnownField::CorrelationId => str_at(e, "correlationId")?,
        KnownField::TargetId => e.get("target")?.as_object()?.get("id")?.as_str()?,
        KnownField::InitiatorId => e.get("initiator")?.as_object()?.get("id")?.as_str()?,
        KnownField::LogSourceCrn => str_at(e, "logSourceCRN")?,
        _ => return None,
    };
    Some(Cow::Borrowed(s))
}

fn exists(field: KnownField, item: &MatchItem<'_>) -> bool {
    let e = item.event;
    match field {
        KnownField::Account
        | KnownField::Index
        | KnownField::EventTime
        | KnownField::ReceivedAt => true,
        KnownField::ReasonCode => reason_code(e).is_some(),
        KnownField::DataEvent => data_event(e).is_some(),
        KnownField::Message => message(e).is_some_and(|t| !words(t).is_empty()),
        KnownField::ReasonForFailure => reason_for_failure(e).is_some_and(|t| !words(t).is_empty()),
        other => keyword(other, item).is_some(),
    }
}

/// Is a top-level key (or a key of `target`/`initiator`/`reason`) in the JSON catch-all field?
/// Keys that have a dedicated field (with a value of the expected type) are not.
fn in_attrs(event: &Value, parent: Option<&str>, key: &str, value: &Value) -> bool {
    match (parent, key, value) {
        (None, "eventTime", _) => false,
        (
            None,
            "id" | "correlationId" | "outcome" | "severity" | "logSourceCRN" | "message" | "action",
            Value::String(_),
        ) => false,
        (None, "dataEvent", Value::Bool(_)) => false,
        (None, "dataEvent", Value::String(s)) if s == "true" || s == "false" => false,
        (Some("target" | "initiator"), "id", Value::String(_)) => false,
        (Some("reason"), "reasonCode", _) => reason_code(event).is_none(),
        (Some("reason"), "reasonForFailure", Value::String(_)) => false,
        _ => true,
    }
}

/// Every indexed leaf at `path` of the catch-all field (arrays flattened, dotted keys expanded).
fn leaves<'a>(event: &'a Value, path: &str) -> Vec<&'a Value> {
    let segments: Vec<&str> = path.split('.').collect();
    let mut out = Vec::new();
    let Value::Object(map) = event else {
        return out;
    };
    for (key, value) in map {
        let parts: Vec<&str> = key.split('.').collect();
        if parts.len() > segments.len() || parts[..] != segments[..parts.len()] {
            continue;
        }
        if !in_attrs(event, None, key, value) {
            continue;
        }
        let rest = &segments[parts.len()..];
        // The three objects with dedicated sub-fields skip those keys one level down.
        let parent =
            matches!(key.as_str(), "target" | "initiator" | "reason").then_some(key.as_str());
        collect(event, parent, value, rest, &mut out);
    }
    out
}

fn collect<'a>(
    event: &'a Value,
    parent: Option<&str>,
    value: &'a Value,
    rest: &[&str],
    out: &mut Vec<&'a Value>,
) {
    match value {
        Value::Null => {}
        Value::Array(items) => {
            for v in items {
                collect(event, None, v, rest, out);
            }
        }
        Value::Object(map) => {
            for (key, v) in map {
                if parent.is_some() && !in_attrs(event, parent, key, v) {
                    continue;
                }
                if rest.is_empty() {
                    // At the path: every leaf beneath counts (for `exists`).
                    collect(event, None, v, rest, out);
                    continue;
                }
                let parts: Vec<&str> = key.split('.').collect();
                if parts.len() <= rest.len() && parts[..] == rest[..parts.len()] {
                    collect(event, None, v, &rest[parts.len()..], out);
                }
            }
        }
        leaf if rest.is_empty() => out.push(leaf),
        _ => {}
    }
}

fn json_matches(event: &Value, path: &str, op: &JsonOp) -> bool {
    let found = leaves(event, path);
    match op {
        JsonOp::Exists => !found.is_empty(),
        JsonOp::Exact(want) => found.iter().any(|leaf| match leaf {
            Value::String(s) => s == want,
            Value::Bool(b) => want == if *b { "true" } else { "false" },
            Value::Number(n) => number_equals(n, want),
            _ => false,
        }),
        JsonOp::Prefix(want) => found.iter().any(|leaf| {
            matches!(leaf, Value::String(s) if s.len() <= MAX_PLAIN_VALUE_BYTES && s.starts_with(want.as_str()))
        }),
    }
}

/// A JSON number against a query value, as tantivy's typed JSON terms compare them.
fn number_equals(n: &serde_json::Number, want: &str) -> bool {
    let want = want.trim();
    if let (Some(a), Ok(b)) = (n.as_i64(), want.parse::<i64>()) {
        return a == b;
    }
    if let (Some(a), Ok(b)) = (n.as_u64(), want.parse::<u64>()) {
        return a == b;
    }
    match (n.as_f64(), want.parse::<f64>()) {
        (Some(a), Ok(b)) => a == b,
        _ => false,
    }
}
