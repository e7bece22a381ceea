//! The delivery worker of one remote target: reads batches from its outbox in order, sends them,
//! and moves the cursor only after the receiver acknowledged; failures are retried with
//! exponential backoff and jitter, forever (audit data is not given up; the outbox's maximum
//! backlog is the alarm).
//!
//! Wire formats:
//! * **trailkeep** — `POST <url>/v1/events`, NDJSON of the stored events, `Authorization: Bearer
//!   <key>`, `X-Trailkeep-Forwarded-From: <this instance's location>`. The receiver stores them
//!   (de-duplicating by account and id) and does not forward them to another Trailkeep. Items it
//!   rejects for good are counted (`trailkeep_route_rejected_events_total`) and logged.
//! * **webhook** — `POST <url>`, `{"source": {"location"}, "batchId", "events": [{"account",
//!   "event"}]}` with `X-Trailkeep-Batch-Id`, `X-Trailkeep-Timestamp` and
//!   `X-Trailkeep-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<body>">` (the alert webhooks'
//!   scheme, `alerts::notify::signature`). Any 2xx acknowledges.
//! * **syslog** — see [`super::syslog`].
//! * **s3** — objects in an S3-compatible bucket ([`s3_objects`]): each batch is split by
//!   account, location and UTC hour of receipt into objects
//!   `<prefix>/<account>/<location>/<yyyy>/<mm>/<dd>/<hh>/<first>-<last>.<ndjson|parquet>`,
//!   written with the export writer (the columns of an export, `index` being the event's sequence
//!   number in this target's stream). The batch is pinned in the outbox before it is sent, so a
//!   batch sent again (a failure, a crash before the cursor moved) writes the very same keys
//!   with the very same bytes: objects are replaced, never duplicated.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::Value;

use super::model::{Target, TargetKind};
use super::outbox::Entry;
use super::{Routing, RoutingMetrics, Worker, now_nanos};
use crate::archive::object::{event_location, location_segment};
use crate::archive::s3::{Bucket, S3Target};

/// Largest batch in bytes (the receiving server's default body limit is 16 MiB).
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

fn random_unit() -> f64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// What a receiver made of a batch: how many events it refused for good.
type Sent = Result<u64, String>;

/// Runs until the worker is stopped or routing is dropped.
pub async fn run(routing: Weak<Routing>, worker: Arc<Worker>) {
    let mut attempts = 0u32;
    let mut syslog: Option<(String, super::syslog::Connection)> = None;
    let mut bucket: Option<(String, Bucket)> = None;
    loop {
        if worker.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Some(r) = routing.upgrade() else { return };
        let (batch, location, http) = (
            r.options.batch_events,
            r.options.location.clone(),
            r.http.clone(),
        );
        let metrics = r.metrics.clone();
        let retry = r.options.retry;
        drop(r);
        let target = worker.target.read().expect("target lock").clone();
        let label = RoutingMetrics::label(&target.id);
        let w = worker.clone();
        let pin = matches!(target.kind, TargetKind::S3 { .. });
        let peeked = tokio::task::spawn_blocking(move || {
            let seq = w.outbox.seq();
            if !pin {
                return w
                    .outbox
                    .peek(batch, MAX_BATCH_BYTES)
                    .map(|(e, n)| (e, n, seq));
            }
            match w.outbox.pinned()? {
                Some(count) => w.outbox.peek(count, usize::MAX).map(|(e, n)| (e, n, seq)),
                None => {
                    let (entries, next) = w.outbox.peek(batch, MAX_BATCH_BYTES)?;
                    if !entries.is_empty() {
                        w.outbox.pin(entries.len())?;
                    }
                    Ok((entries, next, seq))
                }
            }
        })
        .await
        .expect("reading the outbox does not panic");
        let (entries, next, first_seq) = match peeked {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(target_id = %target.id, error = %e, "reading a routing outbox failed");
                *worker.last_error.lock().expect("error lock") = Some(format!("outbox: {e}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if entries.is_empty() {
            worker.oldest.store(0, Ordering::SeqCst);
            metrics.lag_seconds.get_or_create(&label).set(0.0);
            metrics.backlog.get_or_create(&label).set(0);
            let woken = worker.wake.notified();
            tokio::select! {
                () = woken => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        }
        let oldest = entries[0].queued_at;
        worker.oldest.store(oldest as u64, Ordering::SeqCst);
        metrics
            .lag_seconds
            .get_or_create(&label)
            .set((now_nanos() - oldest).max(0) as f64 / 1e9);
        let batch_id = format!("{}/{:x}-{:x}", target.id, next.segment, next.offset);
        let result = match &target.kind {
            TargetKind::Trailkeep { url, key } => {
                send_trailkeep(&http, url, key, &entries, &location).await
            }
            TargetKind::Webhook { url, secret } => {
                send_webhook(&http, url, secret, &entries, &location, &batch_id).await
            }
            TargetKind::Syslog { .. } => {
                send_syslog(&target, &mut syslog, &entries, &location).await
            }
            TargetKind::S3 { .. } => send_s3(&target, &mut bucket, &entries, first_seq).await,
            TargetKind::Local => Ok(0),
        };
        if worker.stopped.load(Ordering::SeqCst) {
            // Deleted meanwhile: its outbox directory is gone; write nothing back.
            return;
        }
        match result {
            Ok(rejected) => {
                attempts = 0;
                let n = entries.len() as u64;
                let w = worker.clone();
                let acked = tokio::task::spawn_blocking(move || w.outbox.ack(next, n))
                    .await
                    .expect("acknowledging does not panic");
                if let Err(e) = acked {
                    tracing::error!(target_id = %target.id, error = %e, "saving a routing cursor failed");
                }
                worker.delivered.fetch_add(n - rejected, Ordering::SeqCst);
                metrics.delivered.get_or_create(&label).inc_by(n - rejected);
                if rejected > 0 {
                    metrics.rejected.get_or_create(&label).inc_by(rejected);
                }
                metrics
                    .backlog
                    .get_or_create(&label)
                    .set(worker.outbox.backlog() as i64);
                if let Some(r) = routing.upgrade()
                    && worker.outbox.backlog() < r.options.max_backlog
                {
                    metrics.backlog_full.get_or_create(&label).set(0);
                }
                *worker.last_error.lock().expect("error lock") = None;
            }
            Err(reason) => {
                attempts = attempts.saturating_add(1);
                worker.failures.fetch_add(1, Ordering::SeqCst);
                metrics.failures.get_or_create(&label).inc();
                let wait = retry.backoff(attempts, random_unit());
                tracing::warn!(target_id = %target.id, attempts, error = %reason, wait_ms = wait.as_millis() as u64, "routing delivery failed; retrying");
                *worker.last_error.lock().expect("error lock") = Some(reason);
                // Wait out the backoff (cut short when the target is changed), keeping the lag
                // gauge current meanwhile.
                let until = tokio::time::Instant::now() + wait;
                let changed = worker.changed.notified();
                tokio::pin!(changed);
                loop {
                    let step = until
                        .saturating_duration_since(tokio::time::Instant::now())
                        .min(Duration::from_secs(1));
                    if step.is_zero() {
                        break;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(step) => {}
                        () = &mut changed => { attempts = 0; break; }
                    }
                    metrics
                        .lag_seconds
                        .get_or_create(&label)
                        .set((now_nanos() - oldest).max(0) as f64 / 1e9);
                }
            }
        }
    }
}

/// Largest answer read from a receiving Trailkeep (one result per event of a batch is far less).
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// Reads an answer body of at most `limit` bytes as text.
async fn read_limited(mut response: reqwest::Response, limit: usize) -> Result<String, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > limit {
            return Err(format!("the answer is larger than {limit} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| "the answer is not UTF-8".to_string())
}

fn ndjson(entries: &[Entry]) -> Vec<u8> {
    let mut body = Vec::with_capacity(entries.iter().map(|e| e.event.get().len() + 1).sum());
    for e in entries {
        body.extend_from_slice(e.event.get().as_bytes());
        body.push(b'\n');
    }
    body
}

async fn send_trailkeep(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    entries: &[Entry],
    location: &str,
) -> Sent {
    let endpoint = format!("{}/v1/events", url.trim_end_matches('/'));
    let response = http
        .post(&endpoint)
        .bearer_auth(key)
        .header("Content-Type", "application/x-ndjson")
        .header("X-Trailkeep-Forwarded-From", location)
        .body(ndjson(entries))
        .send()
        .await
        .map_err(|e| format!("POST {endpoint}: {e}"))?;
    let status = response.status();
    let text = read_limited(response, MAX_ANSWER_BYTES)
        .await
        .map_err(|e| format!("POST {endpoint}: reading the answer: {e}"))?;
    // 200: some accepted; 422: every item rejected (for good). Anything else (401, 403, 413,
    // 429, 5xx…) is a problem of the receiver or of this target's configuration: retried.
    if status.as_u16() != 200 && status.as_u16() != 422 {
        let mut snippet = text;
        snippet.truncate(300);
        return Err(format!("POST {endpoint}: HTTP {status}: {snippet}"));
    }
    let report: Value = serde_json::from_str(&text)
        .map_err(|e| format!("POST {endpoint}: the answer is not JSON: {e}"))?;
    let rejected = report.get("rejected").and_then(Value::as_u64).unwrap_or(0);
    if rejected > 0 {
        let first = report["results"]
            .as_array()
            .and_then(|r| r.iter().find(|i| i["status"] == "rejected"))
            .cloned()
            .unwrap_or(Value::Null);
        tracing::error!(endpoint, rejected, first = %first, "the receiving Trailkeep refused events for good");
    }
    Ok(rejected)
}

async fn send_webhook(
    http: &reqwest::Client,
    url: &str,
    secret: &str,
    entries: &[Entry],
    location: &str,
    batch_id: &str,
) -> Sent {
    let mut body = Vec::new();
    body.extend_from_slice(b"{\"source\":{\"location\":");
    serde_json::to_writer(&mut body, location).expect("serialises");
    body.extend_from_slice(b"},\"batchId\":");
    serde_json::to_writer(&mut body, batch_id).expect("serialises");
    body.extend_from_slice(b",\"events\":[");
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b"{\"account\":");
        serde_json::to_writer(&mut body, &e.account).expect("serialises");
        body.extend_from_slice(b",\"event\":");
        body.extend_from_slice(e.event.get().as_bytes());
        body.push(b'}');
    }
    body.extend_from_slice(b"]}");
    let ts = time::OffsetDateTime::now_utc().unix_timestamp();
    let signature = crate::alerts::notify::signature(secret, ts, &body);
    let response = http
        .post(url)
        .header("Content-Type", "application/json")
        .header("X-Trailkeep-Batch-Id", batch_id)
        .header("X-Trailkeep-Timestamp", ts.to_string())
        .header("X-Trailkeep-Signature", signature)
        .body(body)
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    if response.status().is_success() {
        Ok(0)
    } else {
        Err(format!("POST {url}: HTTP {}", response.status()))
    }
}

async fn send_syslog(
    target: &Target,
    conn: &mut Option<(String, super::syslog::Connection)>,
    entries: &[Entry],
    location: &str,
) -> Sent {
    let TargetKind::Syslog {
        address,
        tls,
        ca_cert,
        server_name,
    } = &target.kind
    else {
        return Err("not a syslog target".into());
    };
    // A changed target gets a new connection.
    if conn.as_ref().is_none_or(|(v, _)| *v != target.updated_at) {
        let c = super::syslog::Connection::new(
            address,
            *tls,
            ca_cert.as_deref(),
            server_name.as_deref(),
        )?;
        *conn = Some((target.updated_at.clone(), c));
    }
    let (_, c) = conn.as_mut().expect("just set");
    c.send(entries, location).await.map(|()| 0)
}

/// The objects of one batch of an `s3` target whose first event has sequence number
/// `first_seq`: one per account, location and UTC hour of receipt, in key order, as
/// `(key relative to the prefix, bytes)`. The same batch always gives the same keys and bytes.
pub fn s3_objects(
    entries: &[Entry],
    first_seq: u64,
    format: &str,
) -> Result<Vec<(String, Vec<u8>)>, String> {
    use std::collections::BTreeMap;
    use trailkeep_export::{ExportItem, Format, TabularWriter};
    let format = Format::parse(format).ok_or_else(|| format!("unknown format {format:?}"))?;
    type Part = (String, String, i32, u8, u8, u8);
    let mut groups: BTreeMap<Part, Vec<(u64, &Entry)>> = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(e.queued_at))
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let part = (
            location_segment(&e.account),
            location_segment(&event_location(e.event.get().as_bytes())),
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
        );
        groups
            .entry(part)
            .or_default()
            .push((first_seq + i as u64, e));
    }
    let mut out = Vec::with_capacity(groups.len());
    for ((account, location, y, m, d, h), rows) in groups {
        let first = rows.first().map_or(0, |r| r.0);
        let last = rows.last().map_or(0, |r| r.0);
        let key = format!(
            "{account}/{location}/{y:04}/{m:02}/{d:02}/{h:02}/{first}-{last}.{}",
            format.extension()
        );
        let mut writer = TabularWriter::new(format, Vec::new()).map_err(|e| e.to_string())?;
        for (seq, e) in rows {
            writer
                .write(&ExportItem {
                    account: &e.account,
                    index: seq,
                    received_at_unix_nanos: e.queued_at,
                    bytes: e.event.get().as_bytes(),
                })
                .map_err(|e| format!("{key}: {e}"))?;
        }
        out.push((key, writer.finish().map_err(|e| e.to_string())?));
    }
    Ok(out)
}

/// A test hook: in debug builds, `TRAILKEEP_TEST_ROUTING_FAULT=<point>` aborts the process at
/// that point (`exit-after-s3-objects`: every object of a batch written, the cursor not moved).
fn test_fault(point: &str) {
    if cfg!(debug_assertions)
        && std::env::var("TRAILKEEP_TEST_ROUTING_FAULT").is_ok_and(|p| p == point)
    {
        eprintln!("routing test fault {point}: aborting");
        std::process::abort();
    }
}

async fn send_s3(
    target: &Target,
    cache: &mut Option<(String, Bucket)>,
    entries: &[Entry],
    first_seq: u64,
) -> Sent {
    let TargetKind::S3 {
        endpoint,
        bucket,
        region,
        prefix,
        access_key_id,
        secret_access_key,
        format,
    } = &target.kind
    else {
        return Err("not an s3 target".into());
    };
    // A changed target gets a new client.
    if cache.as_ref().is_none_or(|(v, _)| *v != target.updated_at) {
        let b = Bucket::new(&S3Target {
            endpoint: endpoint.clone(),
            bucket: bucket.clone(),
            region: region.clone(),
            access_key_id: access_key_id.clone(),
            secret_access_key: secret_access_key.clone(),
            prefix: prefix.clone(),
            // The worker's own backoff takes over after this.
            retry: Duration::from_secs(10),
        })
        .map_err(|e| e.to_string())?;
        *cache = Some((target.updated_at.clone(), b));
    }
    let (_, b) = cache.as_ref().expect("just set");
    let objects = s3_objects(entries, first_seq, format)?;
    for (key, bytes) in objects {
        b.put(&key, bytes)
            .await
            .map_err(|e| format!("{}: {e}", b.describe()))?;
    }
    test_fault("exit-after-s3-objects");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(account: &str, location: &str, id: &str, at: i64) -> Entry {
        let event = format!(
            r#"{{"id":"{id}","logSourceCRN":"crn:v1:bluemix:public:svc:{location}:a/{account}:::"}}"#
        );
        Entry {
            account: account.into(),
            queued_at: at,
            event: serde_json::value::RawValue::from_string(event).unwrap(),
        }
    }

    #[test]
    fn s3_objects_are_partitioned_by_account_location_and_hour_and_named_by_sequence() {
        let h = 1_763_769_600_000_000_000i64; // 2025-11-22T00:00:00Z
        let hour = 3_600_000_000_000i64;
        let entries = vec![
            entry("acme", "eu-de", "a", h),
            entry("acme", "", "b", h),
            entry("acme", "eu-de", "c", h + 10),
            entry("acme", "eu-de", "d", h + hour),
            entry("globex", "eu-de", "e", h),
        ];
        let objects = s3_objects(&entries, 40, "ndjson").unwrap();
        let keys: Vec<&str> = objects.iter().map(|o| o.0.as_str()).collect();
        assert_eq!(
            keys,
            [
                "acme/eu-de/2025/11/22/00/40-42.ndjson",
                "acme/eu-de/2025/11/22/01/43-43.ndjson",
                "acme/global/2025/11/22/00/41-41.ndjson",
                "globex/eu-de/2025/11/22/00/44-44.ndjson",
            ]
        );
        let lines: Vec<serde_json::Value> = std::str::from_utf8(&objects[0].1)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["index"], 42);
        assert_eq!(lines[1]["event"]["id"], "c");
        // The same batch gives the same objects, byte for byte, in both formats.
        assert_eq!(s3_objects(&entries, 40, "ndjson").unwrap(), objects);
        let parquet = s3_objects(&entries, 40, "parquet").unwrap();
        assert_eq!(parquet[0].0, "acme/eu-de/2025/11/22/00/40-42.parquet");
        assert_eq!(s3_objects(&entries, 40, "parquet").unwrap(), parquet);
    }
}
