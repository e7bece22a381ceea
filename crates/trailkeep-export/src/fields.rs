//! The main fields of an event, as the CSV and Parquet columns carry them.

use std::borrow::Cow;

use serde::Deserialize;
use time::OffsetDateTime;

use crate::{ExportError, ExportItem};

/// The columns of CSV and Parquet exports, in order. `eventTime` and `receivedAt` are
/// timestamps in Parquet (ns and µs, UTC) and RFC 3339 text in CSV; `index` is an unsigned
/// 64-bit integer; `event` is the whole stored event as its canonical JSON text; the rest are
/// text, empty (CSV) or null (Parquet) when the event lacks the field.
pub const COLUMNS: [&str; 16] = [
    "eventTime",
    "receivedAt",
    "account",
    "index",
    "id",
    "action",
    "outcome",
    "severity",
    "initiatorId",
    "initiatorName",
    "targetId",
    "targetName",
    "targetTypeURI",
    "correlationId",
    "message",
    "event",
];

#[derive(Debug, Default, Deserialize)]
struct Party<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "typeURI")]
    type_uri: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw<'a> {
    #[serde(borrow, default)]
    event_time: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    action: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    outcome: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    severity: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    initiator: Option<Party<'a>>,
    #[serde(borrow, default)]
    target: Option<Party<'a>>,
    #[serde(borrow, default)]
    correlation_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
}

/// The column values of one item, borrowing from its bytes where it can.
#[derive(Debug)]
pub struct Fields<'a> {
    /// `eventTime` as stored.
    pub event_time: Option<Cow<'a, str>>,
    /// `eventTime` in ns since the Unix epoch, when it parses.
    pub event_time_nanos: Option<i64>,
    /// `receivedAt` as the API prints it.
    pub received_at: String,
    /// `receivedAt` in µs since the Unix epoch.
    pub received_at_micros: i64,
    /// The item's account.
    pub account: &'a str,
    /// The item's index.
    pub index: u64,
    pub id: Option<Cow<'a, str>>,
    pub action: Option<Cow<'a, str>>,
    pub outcome: Option<Cow<'a, str>>,
    pub severity: Option<Cow<'a, str>>,
    pub initiator_id: Option<Cow<'a, str>>,
    pub initiator_name: Option<Cow<'a, str>>,
    pub target_id: Option<Cow<'a, str>>,
    pub target_name: Option<Cow<'a, str>>,
    pub target_type_uri: Option<Cow<'a, str>>,
    pub correlation_id: Option<Cow<'a, str>>,
    pub message: Option<Cow<'a, str>>,
    /// The canonical JSON text.
    pub event: &'a str,
}

impl<'a> Fields<'a> {
    /// Reads the column values of `item`.
    pub fn of(item: &ExportItem<'a>) -> Result<Fields<'a>, ExportError> {
        let bad = |reason: String| ExportError::Event {
            account: item.account.to_string(),
            index: item.index,
            reason,
        };
        let event = std::str::from_utf8(item.bytes).map_err(|e| bad(e.to_string()))?;
        let raw: Raw<'a> = serde_json::from_str(event).map_err(|e| bad(e.to_string()))?;
        let event_time_nanos = raw.event_time.as_deref().and_then(|t| {
            OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                .ok()
                .and_then(|t| i64::try_from(t.unix_timestamp_nanos()).ok())
        });
        let received =
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(item.received_at_unix_nanos))
                .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let initiator = raw.initiator.unwrap_or_default();
        let target = raw.target.unwrap_or_default();
        Ok(Fields {
            event_time: raw.event_time,
            event_time_nanos,
            received_at: format_time(received),
            received_at_micros: item.received_at_unix_nanos.div_euclid(1000),
            account: item.account,
            index: item.index,
            id: raw.id,
            action: raw.action,
            outcome: raw.outcome,
            severity: raw.severity,
            initiator_id: initiator.id,
            initiator_name: initiator.name,
            target_id: target.id,
            target_name: target.name,
            target_type_uri: target.type_uri,
            correlation_id: raw.correlation_id,
            message: raw.message,
            event,
        })
    }
}

/// RFC 3339 UTC with a `+00:00` offset and microseconds (how the API prints `receivedAt`).
pub fn format_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}+00:00",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}
