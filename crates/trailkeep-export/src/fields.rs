//! The main fields of an event, as the CSV and Parquet columns carry them.

use std::borrow::Cow;

use serde::Deserialize;
use time::OffsetDateTime;

use crate::{ExportError, ExportItem, scan};

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

#[derive(Debug, Default, PartialEq, Deserialize)]
struct Party<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "typeURI")]
    type_uri: Option<Cow<'a, str>>,
}

#[derive(Debug, PartialEq, Deserialize)]
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

/// The top-level members [`Fields::of`] reads, in the order of [`Slots`].
const TOP: [&str; 9] = [
    "eventTime",
    "id",
    "action",
    "outcome",
    "severity",
    "initiator",
    "target",
    "correlationId",
    "message",
];
/// The members of `initiator` and `target` it reads.
const PARTY: [&str; 3] = ["id", "name", "typeURI"];

impl<'a> Fields<'a> {
    /// Reads the column values of `item`.
    pub fn of(item: &ExportItem<'a>) -> Result<Fields<'a>, ExportError> {
        let bad = |reason: String| ExportError::Event {
            account: item.account.to_string(),
            index: item.index,
            reason,
        };
        let event = std::str::from_utf8(item.bytes).map_err(|e| bad(e.to_string()))?;
        // The fast scan, or (for what it cannot follow) serde, which also words the errors.
        let raw = match scan_raw(event) {
            Ok(raw) => raw,
            Err(_) => serde_json::from_str(event).map_err(|e| bad(e.to_string()))?,
        };
        Ok(Self::from_raw(item, event, raw))
    }

    fn from_raw(item: &ExportItem<'a>, event: &'a str, raw: Raw<'a>) -> Fields<'a> {
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
        Fields {
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
        }
    }
}

/// [`Raw`] by the lazy scan ([`crate::scan`]): the members wanted, every other value stepped
/// over. Fails where serde's derived [`Raw`] would (a wanted member of the wrong kind, a
/// malformed event) and where the scan cannot follow; the caller then asks serde.
fn scan_raw(event: &str) -> Result<Raw<'_>, String> {
    let mut top: [Option<std::ops::Range<usize>>; 9] = Default::default();
    scan::members(event.as_bytes(), &TOP, &mut top).map_err(|e| e.to_string())?;
    let text = |i: usize| -> Result<Option<Cow<'_, str>>, String> {
        match &top[i] {
            None => Ok(None),
            Some(r) => scan::string_value(&event[r.clone()]),
        }
    };
    let party = |i: usize| -> Result<Option<Party<'_>>, String> {
        let Some(r) = &top[i] else {
            return Ok(None);
        };
        let raw = &event[r.clone()];
        if raw == "null" {
            return Ok(None);
        }
        let mut found: [Option<std::ops::Range<usize>>; 3] = Default::default();
        scan::members(raw.as_bytes(), &PARTY, &mut found).map_err(|e| e.to_string())?;
        let member = |j: usize| match &found[j] {
            None => Ok(None),
            Some(r) => scan::string_value(&raw[r.clone()]),
        };
        Ok(Some(Party {
            id: member(0)?,
            name: member(1)?,
            type_uri: member(2)?,
        }))
    };
    Ok(Raw {
        event_time: text(0)?,
        id: text(1)?,
        action: text(2)?,
        outcome: text(3)?,
        severity: text(4)?,
        initiator: party(5)?,
        target: party(6)?,
        correlation_id: text(7)?,
        message: text(8)?,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The lazy scan reads what serde's derived struct reads, and fails where it fails.
    #[test]
    fn the_scan_reads_what_serde_reads() {
        let events = [
            r#"{"action":"a.b.c","correlationId":"c-1","dataEvent":false,"eventTime":"2026-11-15T08:37:46.000+00:00","id":"e-1","initiator":{"credential":{"type":"token"},"host":{"address":"203.0.113.242"},"id":"IBMid-1","name":"linus","typeURI":"service/user"},"message":"hi","outcome":"success","reason":{"reasonCode":204},"requestData":{"env":[{"name":"X","value":"1"},{"name":"Y","value":"}]\"{["}]},"severity":"normal","target":{"id":"crn:1","name":"web","typeURI":"codeengine/application"}}"#,
            r#"{}"#,
            r#"{"other":[1,2,3]}"#,
            r#"{"action":null,"initiator":null,"target":{}}"#,
            r#"{"message":"line\nbreak \"quoted\" \u00e9\ud83d\ude00","target":{"name":"n\/a"}}"#,
            r#"{"message":"größe ✓ 日本","target":{"id":"ü"}}"#,
            r#"{ "id" : "spaced" , "target" : { "id" : "t" } }"#,
            r#"{"\u0061ction":"escaped name"}"#,
            // What both refuse.
            r#"{"action":12}"#,
            r#"{"target":"not an object"}"#,
            r#"{"target":{"id":["x"]}}"#,
            r#"{"id":"a","id":"b"}"#,
            r#"{"target":{"id":"a","id":"b"}}"#,
            r#"{"action":"x""#,
            r#"["not","an","object"]"#,
        ];
        let scanned = events.iter().filter(|e| scan_raw(e).is_ok()).count();
        assert_eq!(
            scanned, 8,
            "the well-formed events are scanned, not handed to serde"
        );
        for e in events {
            let serde: Result<Raw<'_>, _> = serde_json::from_str(e);
            let scanned = scan_raw(e);
            // Where the scan gives up, `Fields::of` asks serde; where it answers, it must
            // answer what serde does.
            match (&serde, &scanned) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{e}"),
                (_, Err(_)) => {}
                (Err(_), Ok(_)) => panic!("{e}: serde {serde:?}, scan {scanned:?}"),
            }
        }
    }

    /// An event the scan cannot follow (nested deeper than it goes) is read by serde instead.
    #[test]
    fn what_the_scan_cannot_follow_serde_reads() {
        let deep = format!(
            r#"{{"action":"deep","attrs":{}1{}}}"#,
            "[".repeat(scan::MAX_DEPTH + 1),
            "]".repeat(scan::MAX_DEPTH + 1)
        );
        assert!(scan_raw(&deep).is_err());
        let item = ExportItem {
            account: "acme",
            index: 7,
            received_at_unix_nanos: 1_000,
            bytes: deep.as_bytes(),
        };
        assert_eq!(Fields::of(&item).unwrap().action.as_deref(), Some("deep"));
        let bad = ExportItem {
            bytes: br#"{"action":12}"#,
            ..item
        };
        let e = Fields::of(&bad).unwrap_err().to_string();
        assert!(e.contains("acme/7") && e.contains("invalid type"), "{e}");
    }
}
