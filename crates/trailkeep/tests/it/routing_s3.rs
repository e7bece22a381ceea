//! The `s3` routing target (issue #9) against a real Garage server (the one `archive.rs` starts):
//! events routed to a bucket arrive exactly once, as NDJSON and as Parquet objects under the
//! documented time-partitioned keys, read back by pyarrow through its own S3 client; a Garage
//! outage delays delivery and loses nothing; a crash between the puts and the cursor update,
//! followed by more events while the bucket is down, replaces the objects rather than
//! duplicating them.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::archive::{BUCKET, Garage};
use crate::export::python;
use crate::routing::{admin, cli, created, ev, ingest, metric, wait_until};
use crate::server::Server;
use crate::text;

/// Every object of the bucket, read by pyarrow: key → rows `{account, index, receivedAt, event}`
/// (`event` as JSON text in both formats).
const READ_OBJECTS: &str = r#"
import json, sys
import pyarrow as pa, pyarrow.fs as pafs, pyarrow.parquet as pq
endpoint, key, secret, bucket = sys.argv[1:5]
fs = pafs.S3FileSystem(access_key=key, secret_key=secret, endpoint_override=endpoint,
                       scheme="http", region="garage")
out = {}
for info in fs.get_file_info(pafs.FileSelector(bucket, recursive=True)):
    if info.type != pafs.FileType.File:
        continue
    rel = info.path[len(bucket) + 1:]
    rows = []
    if rel.endswith(".parquet"):
        t = pq.read_table(info.path, filesystem=fs)
        received = t.column("receivedAt")
        if pa.types.is_timestamp(received.type):
            received = received.cast(pa.int64())
        for a, i, r, e in zip(t.column("account").to_pylist(), t.column("index").to_pylist(),
                              received.to_pylist(), t.column("event").to_pylist()):
            rows.append({"account": a, "index": i, "receivedAt": r, "event": e})
    elif rel.endswith(".ndjson"):
        with fs.open_input_stream(info.path) as f:
            for line in f.read().decode().splitlines():
                item = json.loads(line)
                item["event"] = json.dumps(item["event"])
                rows.append(item)
    else:
        rows = None
    out[rel] = rows
print(json.dumps(out))
"#;

fn read_objects(garage: &Garage) -> BTreeMap<String, Value> {
    let out = Command::new(python())
        .args(["-c", READ_OBJECTS])
        .args([
            format!("127.0.0.1:{}", garage.s3_port),
            garage.key_id.clone(),
            garage.secret.clone(),
            BUCKET.to_string(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "pyarrow: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The rows under `prefix/`: event id → (key, index), checking the key layout of each object
/// and that no event and no sequence number is in two objects. Returns the ids and the indexes.
fn delivered(objects: &BTreeMap<String, Value>, prefix: &str, ext: &str) -> BTreeMap<String, u64> {
    let mut ids: BTreeMap<String, u64> = BTreeMap::new();
    let mut indexes = std::collections::BTreeSet::new();
    for (key, rows) in objects {
        let Some(rest) = key.strip_prefix(&format!("{prefix}/")) else {
            continue;
        };
        let rows = rows
            .as_array()
            .unwrap_or_else(|| panic!("{key}: not an object of the target"));
        assert!(key.ends_with(&format!(".{ext}")), "{key}");
        // <account>/<location>/<yyyy>/<mm>/<dd>/<hh>/<first>-<last>.<ext>
        let parts: Vec<&str> = rest.split('/').collect();
        assert_eq!(parts.len(), 7, "{key}");
        let (first, last) = parts[6]
            .trim_end_matches(&format!(".{ext}"))
            .split_once('-')
            .unwrap();
        let (first, last): (u64, u64) = (first.parse().unwrap(), last.parse().unwrap());
        assert!(!rows.is_empty(), "{key}");
        for row in rows {
            let event: Value = serde_json::from_str(row["event"].as_str().unwrap()).unwrap();
            let id = event["id"].as_str().unwrap().to_string();
            let location = event["logSourceCRN"]
                .as_str()
                .unwrap()
                .split(':')
                .nth(5)
                .filter(|l| !l.is_empty())
                .unwrap_or("global")
                .to_string();
            assert_eq!(row["account"], "acme", "{key}");
            assert_eq!((parts[0], parts[1]), ("acme", location.as_str()), "{key}");
            // Parquet: a timestamp (µs, read as an integer); NDJSON: RFC 3339 text.
            let at = match &row["receivedAt"] {
                Value::String(t) => {
                    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                        .unwrap()
                }
                v => time::OffsetDateTime::from_unix_timestamp_nanos(
                    i128::from(v.as_i64().unwrap()) * 1_000,
                )
                .unwrap(),
            };
            assert_eq!(
                &parts[2..6],
                [
                    format!("{:04}", at.year()),
                    format!("{:02}", u8::from(at.month())),
                    format!("{:02}", at.day()),
                    format!("{:02}", at.hour())
                ],
                "{key}: the partition is the hour the event was received"
            );
            let index = row["index"].as_u64().unwrap();
            assert!((first..=last).contains(&index), "{key} holds index {index}");
            assert!(
                indexes.insert(index),
                "index {index} is in two objects ({key})"
            );
            let before = ids.insert(id.clone(), index);
            assert!(before.is_none(), "event {id} was written twice ({key})");
        }
    }
    // The sequence numbers of the target's stream are 0..n, each once.
    assert_eq!(
        indexes.into_iter().collect::<Vec<_>>(),
        (0..ids.len() as u64).collect::<Vec<_>>(),
        "{prefix}: sequence numbers"
    );
    ids
}

fn ids(events: &[Value], locations: &[&str]) -> Vec<String> {
    events
        .iter()
        .filter(|e| {
            let l = e["logSourceCRN"]
                .as_str()
                .unwrap()
                .split(':')
                .nth(5)
                .unwrap();
            locations.iter().any(|want| l.starts_with(want))
        })
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

/// Events of one round: eu-de and a family member, jp-tok, and us-south (stored locally).
fn round(name: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for i in 0..5 {
        out.push(ev("eu-de", &format!("{name}-eu-{i}")));
        out.push(ev("jp-tok", &format!("{name}-jp-{i}")));
    }
    out.push(ev("eu-de-1", &format!("{name}-eu1")));
    out.push(ev("us-south", &format!("{name}-us")));
    out
}

fn backlog(server: &Server, id: &str) -> u64 {
    let (status, t) = admin(server, "GET", &format!("/v1/targets/{id}"), None);
    assert_eq!(status, 200, "{t}");
    t["status"]["backlog"].as_u64().unwrap()
}

fn start(data: &Path, env: &[(&str, &str)]) -> Server {
    Server::start_with_env(
        data,
        &[
            "--location",
            "us-south",
            "--routing-retry-initial",
            "100ms",
            "--routing-retry-max",
            "300ms",
        ],
        env,
    )
}

/// Waits until both targets have delivered everything (at most 60 s).
fn wait_delivered(server: &Server, targets: &[&str]) {
    let started = Instant::now();
    while targets.iter().any(|t| backlog(server, t) > 0) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the s3 targets did not catch up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn events_routed_to_s3_arrive_exactly_once_through_an_outage_and_a_crash_issue_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut garage = Garage::start(&dir.path().join("garage"));
    let data = dir.path().join("us-south");
    let server = start(&data, &[]);

    // Targets: NDJSON (created with the CLI) and Parquet, in the same bucket under two prefixes.
    let (code, out, err) = cli(
        &server,
        &[
            "targets",
            "create",
            "--name",
            "bucket ndjson",
            "--type",
            "s3",
            "--endpoint",
            &garage.endpoint(),
            "--region",
            "garage",
            "--bucket",
            BUCKET,
            "--prefix",
            "/routed/nd/",
            "--access-key-id",
            &garage.key_id,
            "--secret-access-key",
            &garage.secret,
        ],
    );
    assert_eq!(code, 0, "{err}");
    let nd: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(nd["type"], "s3");
    assert_eq!(nd["prefix"], "routed/nd");
    assert_eq!(nd["format"], "ndjson");
    assert_eq!(nd["secretAccessKeySet"], true);
    assert!(
        !out.contains(&garage.secret),
        "the secret is never shown: {out}"
    );
    let pq = created(
        &server,
        "/v1/targets",
        json!({"name": "bucket parquet", "type": "s3", "endpoint": garage.endpoint(),
               "region": "garage", "bucket": BUCKET, "prefix": "routed/pq",
               "accessKeyId": garage.key_id, "secretAccessKey": garage.secret,
               "format": "parquet"}),
    );
    let (nd, pq) = (
        nd["id"].as_str().unwrap().to_string(),
        pq["id"].as_str().unwrap().to_string(),
    );
    let (status, list) = admin(&server, "GET", "/v1/targets", None);
    assert_eq!(status, 200);
    assert!(!list.to_string().contains(&garage.secret), "{list}");
    // Invalid fields are named; a PATCH keeps the secret it leaves out.
    let (status, e) = admin(
        &server,
        "POST",
        "/v1/targets",
        Some(&json!({"name": "x", "type": "s3", "bucket": "No_Such", "format": "csv"})),
    );
    assert_eq!(status, 422, "{e}");
    let paths: Vec<&str> = e["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        ["bucket", "accessKeyId", "secretAccessKey", "format"],
        "{e}"
    );
    let (status, patched) = admin(
        &server,
        "PATCH",
        &format!("/v1/targets/{pq}"),
        Some(&json!({"name": "bucket parquet (eu)"})),
    );
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["secretAccessKeySet"], true);
    created(
        &server,
        "/v1/routes",
        json!({"name": "to the bucket", "rules": [
            {"locations": ["eu-de"], "targetIds": [nd, pq]},
            {"locations": ["jp-tok"], "targetIds": [nd]},
            {"locations": ["us-south"], "targetIds": ["local"]}]}),
    );

    // 1. Delivery.
    let mut sent = round("r1");
    let report = ingest(&server, &sent);
    assert_eq!(
        report["accepted"].as_u64(),
        Some(sent.len() as u64),
        "{report}"
    );
    wait_delivered(&server, &[&nd, &pq]);
    let objects = read_objects(&garage);
    assert_eq!(
        sorted(
            delivered(&objects, "routed/nd", "ndjson")
                .into_keys()
                .collect()
        ),
        sorted(ids(&sent, &["eu-de", "jp-tok"]))
    );
    assert_eq!(
        sorted(
            delivered(&objects, "routed/pq", "parquet")
                .into_keys()
                .collect()
        ),
        sorted(ids(&sent, &["eu-de"]))
    );
    assert!(
        objects.keys().all(|k| !k.contains("us-south")),
        "us-south stays local: {objects:?}"
    );

    // 2. Garage is down: ingest still succeeds, delivery waits, nothing is lost.
    garage.stop();
    let r2 = round("r2");
    ingest(&server, &r2);
    sent.extend(r2);
    wait_until("a failed delivery to the stopped bucket", || {
        metric(
            &server,
            &format!("trailkeep_route_failures_total{{target=\"{nd}\"}}"),
        ) > 0.0
    });
    assert!(backlog(&server, &nd) > 0);
    let (_, t) = admin(&server, "GET", &format!("/v1/targets/{nd}"), None);
    assert!(t["status"]["lastError"].is_string(), "{t}");
    garage.run_server();
    wait_delivered(&server, &[&nd, &pq]);
    let objects = read_objects(&garage);
    assert_eq!(
        sorted(
            delivered(&objects, "routed/nd", "ndjson")
                .into_keys()
                .collect()
        ),
        sorted(ids(&sent, &["eu-de", "jp-tok"]))
    );
    assert_eq!(
        sorted(
            delivered(&objects, "routed/pq", "parquet")
                .into_keys()
                .collect()
        ),
        sorted(ids(&sent, &["eu-de"]))
    );
    server.stop();

    // 3. A crash after a batch's objects were written and before its cursor moved; after the
    // restart the bucket is down while more events arrive, so a batch read afresh would hold
    // those too (and be written under other keys). The pinned batch is written again as it was.
    let mut server = start(
        &data,
        &[("TRAILKEEP_TEST_ROUTING_FAULT", "exit-after-s3-objects")],
    );
    // The worker may abort the server before it answers: the answer is not awaited. The events
    // are durable before the worker can see them (the outbox append is fsynced first).
    let r3 = round("r3");
    let url = format!("{}/v1/events", server.url);
    let body = Value::Array(r3.clone()).to_string();
    let _ = crate::server::agent()
        .post(&url)
        .set(
            "Authorization",
            &format!("Bearer {}", crate::server::ADMIN_KEY),
        )
        .set("Content-Type", "application/json")
        .send_string(&body);
    sent.extend(r3);
    let started = Instant::now();
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the fault did not fire"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "the server aborted at the fault");
    drop(server);
    garage.stop();
    let server = start(&data, &[]);
    let r4 = round("r4");
    ingest(&server, &r4);
    sent.extend(r4);
    wait_until("a failed delivery after the restart", || {
        metric(
            &server,
            &format!("trailkeep_route_failures_total{{target=\"{nd}\"}}"),
        ) > 0.0
    });
    garage.run_server();
    wait_delivered(&server, &[&nd, &pq]);
    let objects = read_objects(&garage);
    assert_eq!(
        sorted(
            delivered(&objects, "routed/nd", "ndjson")
                .into_keys()
                .collect()
        ),
        sorted(ids(&sent, &["eu-de", "jp-tok"])),
        "every routed event is in exactly one NDJSON object"
    );
    assert_eq!(
        sorted(
            delivered(&objects, "routed/pq", "parquet")
                .into_keys()
                .collect()
        ),
        sorted(ids(&sent, &["eu-de"])),
        "every routed event is in exactly one Parquet object"
    );
    server.stop();
}
