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

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::Value;

use super::model::{Target, TargetKind};
use super::outbox::Entry;
use super::{Routing, RoutingMetrics, Worker, now_nanos};

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
        let peeked = tokio::task::spawn_blocking(move || w.outbox.peek(batch, MAX_BATCH_BYTES))
            .await
            .expect("reading the outbox does not panic");
        let (entries, next) = match peeked {
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
