//! `GET /v1/export` and `trailkeep export` (issue #8): NDJSON, CSV and Parquet exports of a real
//! server, read back by an independent reader (pyarrow and Python's csv module, installed by
//! `scripts/python-env`), the account scoping of a reader key, and paging past one index page.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use sha2::Digest as _;

use crate::server::{ADMIN_KEY, Server, enc, get, post_json, request, wait_for};
use crate::{text, trailkeep};

pub const READER_KEY: &str = "e2e-reader-acme-key-0123456789";

/// Writes a key file holding a reader key limited to `acme`, before the server first starts.
pub fn write_reader_key(data_dir: &Path) {
    std::fs::create_dir_all(data_dir).unwrap();
    let keys = json!({"version": 1, "keys": [{
        "id": "reader-acme", "name": "reader of acme", "role": "reader",
        "accounts": {"kind": "only", "ids": ["acme"]}, "defaultAccount": "acme",
        "createdAt": "2026-11-21T00:00:00+00:00",
        "secretSha256": hex::encode(sha2::Sha256::digest(READER_KEY.as_bytes())),
        "revoked": false
    }]});
    std::fs::write(data_dir.join("keys.json"), keys.to_string()).unwrap();
}

/// 20 events of `acme` and 5 of `globex`, one minute apart, with awkward text in some.
pub fn sample_events() -> Vec<Value> {
    let mut out = Vec::new();
    for i in 0..25u32 {
        let account = if i % 5 == 4 { "globex" } else { "acme" };
        let mut e = json!({
            "id": format!("exp-{i:03}"),
            "eventTime": format!("2026-11-20T10:{i:02}:00.123+0000"),
            "action": if i % 3 == 0 { "codeengine.application.delete" } else { "codeengine.application.create" },
            "outcome": if i % 4 == 0 { "failure" } else { "success" },
            "initiator": {"id": format!("IBMid-{i}"), "name": format!("user{i}@acme.example"), "typeURI": "service/security/account/user"},
            "target": {"id": format!("crn:v1:bluemix:public:codeengine:us-south:a/{account}:proj-1:application:app-{i}"),
                       "name": format!("app-{i}"), "typeURI": "codeengine/application"},
            "correlationId": format!("corr-{i}"),
            "logSourceCRN": format!("crn:v1:bluemix:public:codeengine:us-south:a/{account}:proj-1::"),
        });
        if i == 7 {
            e["message"] = json!("Code Engine: \"quoted\", comma\nnew line — ünïcödé");
            e["eventTime"] = json!("2026-11-20T10:07:00.123456789+0000");
        }
        if i == 9 {
            // No initiator name, no correlation id: empty in CSV, null in Parquet.
            e["initiator"].as_object_mut().unwrap().remove("name");
            e.as_object_mut().unwrap().remove("correlationId");
        }
        out.push(e);
    }
    out
}

/// The Python interpreter with pyarrow (created on first use, like `scripts/test` does).
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("TRAILKEEP_PYTHON") {
        return PathBuf::from(p);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/python-env");
    let out = Command::new("bash").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "scripts/python-env failed: {}",
        text(&out.stderr)
    );
    PathBuf::from(text(&out.stdout).trim())
}

/// Reads a Parquet file with pyarrow: its schema and its rows (timestamps as integers).
const READ_PARQUET: &str = r#"
import json, sys
import pyarrow as pa, pyarrow.parquet as pq
t = pq.read_table(sys.argv[1])
schema = {f.name: str(f.type) for f in t.schema}
cols = {}
for name in t.column_names:
    c = t.column(name)
    if pa.types.is_timestamp(c.type):
        c = c.cast(pa.int64())
    cols[name] = c.to_pylist()
rows = [{k: cols[k][i] for k in t.column_names} for i in range(t.num_rows)]
meta = pq.ParquetFile(sys.argv[1]).metadata
print(json.dumps({"schema": schema, "columns": t.column_names, "rows": rows, "num_rows": meta.num_rows}))
"#;

/// Reads a CSV file with Python's csv module.
const READ_CSV: &str = r#"
import csv, json, sys
with open(sys.argv[1], newline="", encoding="utf-8") as f:
    r = csv.reader(f)
    header = next(r)
    rows = [dict(zip(header, row)) for row in r]
print(json.dumps({"columns": header, "rows": rows}))
"#;

fn run_python(script: &str, file: &Path) -> Value {
    let out = Command::new(python())
        .args(["-c", script])
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "python: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// An NDJSON export line split into its item fields and the raw bytes of `event`.
/// An NDJSON line as an item and the raw text of its `event` member (the line ends with the
/// event, or with the event and the item's `derived` member).
fn split_line(line: &str) -> (Value, String) {
    let item: Value = serde_json::from_str(line).unwrap();
    let at = line.find(",\"event\":").expect("an event member") + ",\"event\":".len();
    let end = line
        .rfind(",\"derived\":{\"class\":")
        .unwrap_or(line.len() - 1);
    (item, line[at..end].to_string())
}

fn unix_nanos(rfc3339: &str) -> i64 {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .unwrap();
    i64::try_from(t.unix_timestamp_nanos()).unwrap()
}

const COLUMNS: [&str; 16] = [
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

/// The value an export row should hold in `column` for an item, as text (None: absent).
fn expected(column: &str, item: &Value, raw_event: &str) -> Option<String> {
    let e = &item["event"];
    let s = |v: &Value| v.as_str().map(str::to_string);
    match column {
        "eventTime" => s(&e["eventTime"]),
        "receivedAt" => s(&item["receivedAt"]),
        "account" => s(&item["account"]),
        "index" => Some(item["index"].to_string()),
        "initiatorId" => s(&e["initiator"]["id"]),
        "initiatorName" => s(&e["initiator"]["name"]),
        "targetId" => s(&e["target"]["id"]),
        "targetName" => s(&e["target"]["name"]),
        "targetTypeURI" => s(&e["target"]["typeURI"]),
        "event" => Some(raw_event.to_string()),
        other => s(&e[other]),
    }
}

/// A search item without the derived data (issue #11) search adds; export items carry the
/// stored event only.
/// The events the tests sent, without the server's own records of the tests' reads.
const SERVICES: &str = "NOT action:trailkeep.*";

#[test]
fn export_streams_ndjson_csv_and_parquet_that_an_independent_reader_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_reader_key(&data);
    let server = Server::start(&data, &[]);
    let r = post_json(&server, "/v1/events", &Value::Array(sample_events()));
    assert_eq!(r.json()["accepted"], 25, "{}", r.text());
    let (searched, _) = wait_for(&server, SERVICES, 25);
    assert_eq!(searched.len(), 25);

    // NDJSON over HTTP: the search's items (their derived fields too), in the search's order,
    // event bytes as stored.
    let r = get(
        &server,
        &format!("/v1/export?format=ndjson&q={}", enc(SERVICES)),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.content_type, "application/x-ndjson");
    let body = r.text();
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.len(), 25);
    let items: Vec<(Value, String)> = lines.iter().map(|l| split_line(l)).collect();
    for ((item, raw), found) in items.iter().zip(&searched) {
        assert!(found["derived"]["class"].is_string(), "{found}");
        assert_eq!(item, found);
        // The bytes are the canonical form: parsing and re-serialising (sorted keys) is a no-op.
        assert_eq!(
            raw,
            &serde_json::to_string(&serde_json::from_str::<Value>(raw).unwrap()).unwrap()
        );
    }

    // The CLI writes the three formats to files.
    let url = server.url.clone();
    let export = |format: &str, extra: &[&str]| -> PathBuf {
        let file = dir
            .path()
            .join(format!("out-{format}-{}.{format}", extra.len()));
        let f = file.to_str().unwrap().to_string();
        let mut args = vec![
            "export", "--url", &url, "--key", ADMIN_KEY, "--format", format, "--output", &f,
        ];
        args.extend_from_slice(extra);
        if !extra.iter().any(|a| a.contains(':') && !a.starts_with('-')) {
            args.push(SERVICES); // no query given: the tests' events only
        }
        let out = trailkeep(&args, b"");
        assert!(
            out.status.success(),
            "export {format}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("wrote "),
            "{}",
            text(&out.stderr)
        );
        file
    };
    let ndjson_file = export("ndjson", &[]);
    assert_eq!(std::fs::read_to_string(&ndjson_file).unwrap(), body);

    // CSV, read by Python's csv module: the documented header and one row per item.
    let csv = run_python(READ_CSV, &export("csv", &[]));
    assert_eq!(csv["columns"], json!(COLUMNS));
    let rows = csv["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 25);
    for (row, (item, raw)) in rows.iter().zip(&items) {
        for col in COLUMNS {
            assert_eq!(
                row[col].as_str().unwrap(),
                expected(col, item, raw).unwrap_or_default(),
                "csv column {col} of {item}"
            );
        }
    }

    // Parquet, read by pyarrow: typed columns and the same rows.
    let pq = run_python(READ_PARQUET, &export("parquet", &[]));
    assert_eq!(pq["columns"], json!(COLUMNS));
    assert_eq!(pq["num_rows"], 25);
    let schema = &pq["schema"];
    assert_eq!(schema["eventTime"], "timestamp[ns, tz=UTC]");
    assert_eq!(schema["receivedAt"], "timestamp[us, tz=UTC]");
    assert_eq!(schema["index"], "uint64");
    for col in ["account", "id", "action", "message", "event"] {
        assert_eq!(schema[col], "string", "{col}");
    }
    let rows = pq["rows"].as_array().unwrap();
    for (row, (item, raw)) in rows.iter().zip(&items) {
        for col in COLUMNS {
            let want = expected(col, item, raw);
            match col {
                "eventTime" | "receivedAt" => {
                    let nanos = unix_nanos(want.as_deref().unwrap());
                    let got = row[col].as_i64().unwrap();
                    let got = if col == "receivedAt" { got * 1000 } else { got };
                    assert_eq!(got, nanos, "{col} of {item}");
                }
                "index" => assert_eq!(row[col], item["index"]),
                _ => assert_eq!(row[col].as_str().map(str::to_string), want, "{col}"),
            }
        }
    }
    // Nanosecond precision survives in Parquet.
    let seven = rows.iter().find(|r| r["id"] == "exp-007").unwrap();
    assert_eq!(
        seven["eventTime"].as_i64().unwrap() % 1_000_000_000,
        123_456_789
    );
    assert!(
        seven["message"]
            .as_str()
            .unwrap()
            .contains("\"quoted\", comma\nnew line")
    );
    let nine = rows.iter().find(|r| r["id"] == "exp-009").unwrap();
    assert!(nine["initiatorName"].is_null() && nine["correlationId"].is_null());

    // A query and a time range narrow the export exactly like search.
    let q = "outcome:failure AND account:acme";
    let from = "2026-11-20T10:05:00Z";
    let r = get(
        &server,
        &format!("/v1/export?q={}&from={}&format=ndjson", enc(q), enc(from)),
    );
    let got: Vec<Value> = r.text().lines().map(|l| split_line(l).0).collect();
    let s = get(
        &server,
        &format!("/v1/events?q={}&from={}&limit=100", enc(q), enc(from)),
    );
    let searched: Vec<Value> = s.json()["events"].as_array().unwrap().to_vec();
    assert_eq!(
        got, searched,
        "NDJSON export lines are the search items, derived included"
    );
    assert!(!got.is_empty() && got.len() < 25);
    // … also through the CLI, with --account.
    let narrowed = export(
        "parquet",
        &["--from", from, "--account", "acme", "outcome:failure"],
    );
    let pq = run_python(READ_PARQUET, &narrowed);
    assert_eq!(pq["num_rows"].as_u64().unwrap() as usize, got.len());

    // A reader key sees only its account; asking for another is refused as in search.
    let reader = |path: &str| {
        request(
            "GET",
            &format!("{}{path}", server.url),
            Some(READER_KEY),
            &[],
            None,
        )
    };
    let r = reader(&format!("/v1/export?format=csv&q={}", enc(SERVICES)));
    assert_eq!(r.status, 200);
    let csv_text = r.text();
    assert_eq!(csv_text.matches("\r\n2026-").count(), 20, "{csv_text}");
    assert!(!csv_text.contains("globex"));
    let r = reader("/v1/export?account=globex&format=csv");
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(reader("/v1/events?account=globex").status, 403);
    assert!(!r.text().contains("exp-"));

    // Request errors use the error shape.
    let r = get(&server, "/v1/export?format=xml");
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ndjson, csv, parquet, bundle")
    );
    assert_eq!(get(&server, "/v1/export?limit=5").status, 400);
    assert_eq!(get(&server, "/v1/export?q=outcome%3A").status, 400);
    let r = request("GET", &format!("{}/v1/export", server.url), None, &[], None);
    assert_eq!(r.status, 401);

    // A failed export leaves no file behind.
    let bad = dir.path().join("bad.csv");
    let out = trailkeep(
        &[
            "export",
            "--url",
            &url,
            "--key",
            ADMIN_KEY,
            "--format",
            "csv",
            "--output",
            bad.to_str().unwrap(),
            "outcome:",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("400"), "{}", text(&out.stderr));
    assert!(!bad.exists());
}

#[test]
fn export_pages_through_more_events_than_one_index_page_without_gaps_or_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let total = 12_000usize;
    for chunk in 0..(total / 3000) {
        let mut body = String::new();
        for i in chunk * 3000..(chunk + 1) * 3000 {
            // Many events share one instant, so the order falls back to account and index.
            body.push_str(&json!({
                "id": format!("bulk-{i}"),
                "eventTime": format!("2026-11-20T11:{:02}:00+0000", i % 7),
                "action": "codeengine.application.read",
                "outcome": "success",
                "initiator": {"id": "IBMid-1", "name": "ada@acme.example", "typeURI": "service/security/account/user"},
                "target": {"id": format!("app-{i}"), "name": format!("app-{i}"), "typeURI": "codeengine/application"},
                "logSourceCRN": format!("crn:v1:bluemix:public:codeengine:us-south:a/{}:p::", ["acme", "globex", "initech"][i % 3]),
            }).to_string());
            body.push('\n');
        }
        let r = request(
            "POST",
            &format!("{}/v1/events", server.url),
            Some(ADMIN_KEY),
            &[("Content-Type", "application/x-ndjson")],
            Some(body.as_bytes()),
        );
        let head: String = r.text().chars().take(400).collect();
        assert_eq!(r.json()["accepted"], 3000, "{head}");
    }
    wait_for_total(&server, total);
    let r = get(
        &server,
        &format!("/v1/export?format=ndjson&q={}", enc(SERVICES)),
    );
    assert_eq!(r.status, 200);
    let mut seen = BTreeSet::new();
    let mut last: Option<(String, String, u64)> = None;
    for line in r.text().lines() {
        let item: Value = serde_json::from_str(line).unwrap();
        let key = (
            item["event"]["eventTime"].as_str().unwrap().to_string(),
            item["account"].as_str().unwrap().to_string(),
            item["index"].as_u64().unwrap(),
        );
        assert!(seen.insert((key.1.clone(), key.2)), "repeated {key:?}");
        if let Some(prev) = &last {
            assert!(prev > &key, "newest first: {prev:?} before {key:?}");
        }
        last = Some(key);
    }
    assert_eq!(seen.len(), total);

    // A bundle of the same: 4,000 events per log, so proofs span several tiles and tile levels.
    let r = get(
        &server,
        &format!("/v1/export?format=bundle&q={}", enc(SERVICES)),
    );
    assert_eq!(r.status, 200);
    let bundle = dir.path().join("bulk.tkbundle");
    std::fs::write(&bundle, &r.body).unwrap();
    let out = trailkeep(&["verify", "--bundle", bundle.to_str().unwrap()], b"");
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("ok    12000 events proven in 3 logs"),
        "{said}"
    );
}

/// Waits until the index counts `want` events.
pub fn wait_for_total(server: &Server, want: usize) {
    for _ in 0..500 {
        let r = get(server, &format!("/v1/aggregate?q={}", enc(SERVICES)));
        if r.json()["total"].as_u64() == Some(want as u64) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("the index never reached {want} events");
}

#[test]
fn bench_export_prints_throughput_and_server_memory_for_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("bench-data");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_trailkeep"))
            .args(args)
            .current_dir(dir.path())
            .env_remove("TRAILKEEP_KEY")
            .env_remove("TRAILKEEP_BENCH_URL")
            .output()
            .unwrap()
    };
    let d = data.to_str().unwrap();
    let out = run(&[
        "bench",
        "ingest",
        "--events",
        "2000",
        "--connections",
        "1",
        "--batch",
        "500",
        "--data-dir",
        d,
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let out = run(&["bench", "export", "--data-dir", d]);
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{report}{}", text(&out.stderr));
    // The ingest benchmark adds a few probe events of its own, and the server records the
    // benchmark's reads (self-audit).
    let total: u64 = report
        .split("export of ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no total in:\n{report}"));
    assert!((2000..2400).contains(&total), "{report}");
    for format in ["ndjson", "csv", "parquet", "bundle"] {
        let line = report
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{format}:")))
            .unwrap_or_else(|| panic!("no {format} line in:\n{report}"));
        // Each export is recorded in every account it covers (self-audit), so later formats see
        // more events.
        let exported: u64 = line
            .split(": ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count in {line}"));
        assert!((total..total + 1000).contains(&exported), "{line}");
        assert!(
            line.contains(" events/s, ") && line.contains("server peak RSS"),
            "{line}"
        );
    }
}
