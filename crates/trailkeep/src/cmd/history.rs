//! `trailkeep history <target.id>`: the history of one object from a server — its events oldest
//! first, each with its class and description (old → new values, sensitive ones left out), and
//! its last known state, also after it was deleted.

use std::io::Write;
use std::process::ExitCode;

use serde_json::Value;

use crate::cmd::output::Format;
use crate::remote::{Remote, RemoteArgs};

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    remote: RemoteArgs,

    /// The object's `target.id`, e.g. a CRN.
    #[arg(value_name = "TARGET_ID")]
    target_id: String,

    /// The account holding the object (needed when several accounts the key reads hold the id).
    #[arg(long)]
    account: Option<String>,

    /// Output format: `table` for people, `json` for the server's whole answer, `ndjson` for
    /// the stored events, oldest first.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

pub fn run(args: HistoryArgs) -> anyhow::Result<ExitCode> {
    let remote = Remote::new(&args.remote)?;
    let path = format!(
        "/v1/objects/{}/timeline",
        percent_encode_segment(&args.target_id)
    );
    let mut query = Vec::new();
    if let Some(a) = &args.account {
        query.push(("account", a.as_str()));
    }
    let answer = remote
        .get_json(&path, &query)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match args.format {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&answer)?)?,
        Format::Ndjson => {
            for item in answer["events"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or(&[])
            {
                writeln!(out, "{}", item["event"])?;
            }
        }
        Format::Table => print_table(&mut out, &answer)?,
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

const COLUMNS: [(&str, usize); 4] = [
    ("TIME", 24),
    ("CLASS", 7),
    ("OUTCOME", 8),
    ("INITIATOR", 18),
];

/// The object, then one line per event: time, class, outcome, initiator, description.
fn print_table(out: &mut impl Write, answer: &Value) -> std::io::Result<()> {
    let o = &answer["object"];
    let name = o["name"].as_str().unwrap_or("-");
    let state = if o["deleted"].as_bool() == Some(true) {
        "deleted"
    } else {
        "live"
    };
    writeln!(
        out,
        "{} '{}' ({state}) in account {}",
        o["type"].as_str().unwrap_or("object"),
        name,
        answer["account"].as_str().unwrap_or("-")
    )?;
    writeln!(out, "id:     {}", o["id"].as_str().unwrap_or("-"))?;
    if let Some(p) = o["parent"].as_str() {
        writeln!(out, "parent: {p}")?;
    }
    if let Some(attrs) = o["attributes"].as_object().filter(|a| !a.is_empty()) {
        let shown: Vec<String> = attrs
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect();
        writeln!(out, "attributes: {}", shown.join(", "))?;
    }
    writeln!(out)?;
    let mut header = String::new();
    for (n, w) in COLUMNS {
        header.push_str(&format!("{n:<w$} "));
    }
    header.push_str("DESCRIPTION");
    writeln!(out, "{header}")?;
    let events = answer["events"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    for item in events {
        let e = &item["event"];
        let d = &item["derived"];
        let initiator = e["initiator"]["name"]
            .as_str()
            .or_else(|| e["initiator"]["id"].as_str());
        let cells = [
            e["eventTime"].as_str(),
            d["class"].as_str(),
            e["outcome"].as_str(),
            initiator,
        ];
        let mut line = String::new();
        for (cell, (_, w)) in cells.iter().zip(COLUMNS) {
            line.push_str(&format!("{:<w$} ", clip(cell.unwrap_or("-"), w)));
        }
        line.push_str(d["description"].as_str().unwrap_or(""));
        writeln!(out, "{line}")?;
    }
    if answer["truncated"].as_bool() == Some(true) {
        writeln!(out, "(only the newest {} events are listed)", events.len())?;
    }
    Ok(())
}

fn clip(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(width.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// An id as one path segment: everything but unreserved characters percent-encoded (CRNs hold
/// `/` and `:`).
fn percent_encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_become_one_path_segment() {
        assert_eq!(
            percent_encode_segment("crn:v1:x:a/acme:p:deployment:d/versions/v 1"),
            "crn%3Av1%3Ax%3Aa%2Facme%3Ap%3Adeployment%3Ad%2Fversions%2Fv%201"
        );
    }
}
