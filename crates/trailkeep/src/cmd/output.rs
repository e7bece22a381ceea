//! How `search` and `tail` print events: an aligned table for people, JSON for programs.

use std::io::Write;

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One aligned line per event: time, account, action, outcome, severity, initiator, target,
    /// message.
    Table,
    /// One JSON array of `{account, index, received_at, event}` items.
    Json,
    /// One stored event per line, as sent: ready to pipe into `trailkeep send`.
    Ndjson,
}

const COLUMNS: [(&str, usize); 7] = [
    ("TIME", 24),
    ("ACCOUNT", 14),
    ("ACTION", 34),
    ("OUTCOME", 8),
    ("SEVERITY", 8),
    ("INITIATOR", 18),
    ("TARGET", 24),
];

pub fn table_header(out: &mut impl Write) -> std::io::Result<()> {
    let mut line = String::new();
    for (name, width) in COLUMNS {
        line.push_str(&format!("{name:<width$} "));
    }
    line.push_str("MESSAGE");
    writeln!(out, "{line}")
}

/// One item (`{account, index, received_at, event}`) as a table row.
pub fn table_row(out: &mut impl Write, item: &Value) -> std::io::Result<()> {
    let e = &item["event"];
    let initiator = e["initiator"]["name"]
        .as_str()
        .or_else(|| e["initiator"]["id"].as_str());
    let target = e["target"]["name"]
        .as_str()
        .or_else(|| e["target"]["id"].as_str());
    let time = e["eventTime"].as_str().map(utc_millis);
    let cells = [
        time.as_deref(),
        item["account"].as_str(),
        e["action"].as_str(),
        e["outcome"].as_str(),
        e["severity"].as_str(),
        initiator,
        target,
    ];
    let mut line = String::new();
    for (cell, (_, width)) in cells.iter().zip(COLUMNS) {
        line.push_str(&format!("{:<width$} ", clip(cell.unwrap_or("-"), width)));
    }
    line.push_str(e["message"].as_str().unwrap_or(""));
    writeln!(out, "{line}")
}

/// `2026-11-22T01:00:00.123Z` whatever offset the event was sent with, so the column lines up
/// and sorts; a time that does not parse is shown as sent.
fn utc_millis(t: &str) -> String {
    use time::format_description::well_known::Rfc3339;
    use time::macros::format_description;
    time::OffsetDateTime::parse(t, &Rfc3339)
        .ok()
        .and_then(|t| {
            t.to_offset(time::UtcOffset::UTC)
                .format(format_description!(
                    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
                ))
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

/// Shortens `s` to `width` characters, marking the cut with `…`.
fn clip(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(width.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_fall_back_to_ids_and_clip_long_cells() {
        let item = serde_json::json!({
            "account": "a1",
            "event": {
                "eventTime": "2026-01-01T01:00:00.5+01:00",
                "action": "codeengine.application.create",
                "outcome": "success",
                "initiator": {"id": "IBMid-1"},
                "target": {"id": "crn:v1:bluemix:public:codeengine:us-south:a/a1::application:verylongname"},
                "message": "hello"
            }
        });
        let mut out = Vec::new();
        table_row(&mut out, &item).unwrap();
        let line = String::from_utf8(out).unwrap();
        assert!(line.starts_with("2026-01-01T00:00:00.500Z "), "{line}");
        assert!(line.contains("IBMid-1"), "{line}");
        assert!(line.contains('…'), "{line}");
        assert!(line.trim_end().ends_with("hello"), "{line}");
        assert!(line.contains(" -  "), "missing severity shows as -: {line}");
    }
}
