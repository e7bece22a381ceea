//! The client on its own: rejections, retries with `Retry-After`, batch splitting on 413, TLS with
//! a private CA, shutdown.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use trailkeep_client::{
    Client, EmitError, Event, Failure, Initiator, Metrics, Outcome, Reason, Target,
};

use crate::support::{
    ADMIN_KEY, Sink, TestServer, client_builder, client_with_counters, dead_addr, start_sink,
    wait_until,
};

fn event(n: usize) -> Event {
    Event::builder("sdk.widget.update")
        .initiator(Initiator::new("IBMid-test"))
        .target(Target::new(format!("widget-{n}")))
        .correlation_id(format!("c-{n:04}"))
        .build()
        .unwrap()
}

/// Records every hook call.
#[derive(Debug, Default)]
struct Recorder {
    failures: Mutex<Vec<Failure>>,
    delays: Mutex<Vec<Duration>>,
    sent: Mutex<u64>,
}

impl Metrics for Recorder {
    fn sent(&self, n: u64) {
        *self.sent.lock().unwrap() += n;
    }
    fn failed(&self, failure: &Failure) {
        self.failures.lock().unwrap().push(failure.clone());
    }
    fn retrying(&self, _attempt: u32, delay: Duration, _error: &str) {
        self.delays.lock().unwrap().push(delay);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_event_is_reported_once_and_not_retried() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), None).await;
    let recorder = Arc::new(Recorder::default());
    let client = client_builder(&server.url)
        .metrics(recorder.clone())
        .build()
        .unwrap();
    // Larger than the server's 16 KiB limit even after it drops request/response data.
    let huge = Event::builder("sdk.widget.update")
        .initiator(Initiator::new("IBMid-test"))
        .target(Target::new("widget-huge"))
        .outcome(Outcome::Failure)
        .reason(Reason::http(500).failure("x".repeat(20_000)))
        .build()
        .unwrap();
    let huge_id = huge.id().to_string();
    client.emit(event(1)).unwrap();
    client.emit(huge).unwrap();
    client.emit(event(2)).unwrap();
    client.flush().await.unwrap();

    assert_eq!(*recorder.sent.lock().unwrap(), 2);
    let failures = recorder.failures.lock().unwrap().clone();
    assert_eq!(failures.len(), 1, "{failures:?}");
    match &failures[0] {
        Failure::Rejected { id, errors } => {
            assert_eq!(id, &huge_id);
            assert!(
                errors.iter().any(|e| e.reason.contains("16384")),
                "the server's reason names the limit: {errors:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(recorder.delays.lock().unwrap().is_empty(), "no retry");
    server.wait_for_search("action:sdk.widget.update", 2).await;
    client.shutdown().await.unwrap();
    server.stop().await;
}

/// A server whose routing has no route and no default target stores events nowhere and says
/// so per item (`"status": "dropped"` with a reason): the client reports that as its own
/// failure, with the server's reason, and does not retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_routing_drops_is_reported_as_dropped_with_the_reason() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), None).await;
    let r = crate::support::http()
        .put(format!("{}/v1/settings", server.url))
        .bearer_auth(ADMIN_KEY)
        .header("Content-Type", "application/json")
        .body(r#"{"defaultTargets": []}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let recorder = Arc::new(Recorder::default());
    let (client, counters) = client_with_counters(client_builder(&server.url));
    let client2 = client_builder(&server.url)
        .metrics(recorder.clone())
        .build()
        .unwrap();
    let dropped = event(7);
    let dropped_id = dropped.id().to_string();
    client2.emit(dropped).unwrap();
    client2.flush().await.unwrap();
    client.emit(event(8)).unwrap();
    client.flush().await.unwrap();

    assert_eq!(*recorder.sent.lock().unwrap(), 0);
    let failures = recorder.failures.lock().unwrap().clone();
    match failures.as_slice() {
        [Failure::Dropped { id, reason }] => {
            assert_eq!(id, &dropped_id);
            assert!(
                reason.contains("no default target is set"),
                "the server's reason: {reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(recorder.delays.lock().unwrap().is_empty(), "no retry");
    let c = counters.snapshot();
    assert_eq!(
        (c.sent, c.failed, c.dropped, c.rejected),
        (0, 1, 1, 0),
        "{c:?}"
    );
    client.shutdown().await.unwrap();
    client2.shutdown().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_and_a_413_splits_the_batch() {
    let sink = Sink {
        busy: Arc::new(Mutex::new(1)),
        max_events: 3,
        ..Sink::default()
    };
    let addr = start_sink(sink.clone()).await;
    let recorder = Arc::new(Recorder::default());
    let client = client_builder(&format!("http://{addr}"))
        .metrics(recorder.clone())
        .linger(Duration::from_secs(10))
        .batch_size(10)
        .build()
        .unwrap();
    for n in 0..10 {
        client.emit(event(n)).unwrap();
    }
    client.flush().await.unwrap();

    assert_eq!(*recorder.sent.lock().unwrap(), 10);
    let delays = recorder.delays.lock().unwrap().clone();
    assert_eq!(delays.len(), 1, "one retry, after the 429");
    assert!(
        delays[0] >= Duration::from_secs(1),
        "the pause honours Retry-After: {delays:?}"
    );
    let requests = sink.requests.lock().unwrap().clone();
    let sizes: Vec<usize> = requests.iter().map(|(_, e)| e.len()).collect();
    // 429 for the batch of 10, 413 for the retry, then halves until it fits, in order.
    assert_eq!(&sizes[..2], &[10, 10], "{sizes:?}");
    assert!(sizes[2..].iter().skip(1).all(|&s| s <= 3), "{sizes:?}");
    let delivered: Vec<String> = requests
        .iter()
        .filter(|(_, e)| e.len() <= 3)
        .flat_map(|(_, e)| {
            e.iter()
                .map(|v| v["correlationId"].as_str().unwrap().to_string())
        })
        .collect();
    let expected: Vec<String> = (0..10).map(|n| format!("c-{n:04}")).collect();
    assert_eq!(delivered, expected, "in order, none lost");
    // The same ids on every attempt: the server can recognise a resend.
    let first_ids: Vec<&Value> = requests[0].1.iter().map(|e| &e["id"]).collect();
    let second_ids: Vec<&Value> = requests[1].1.iter().map(|e| &e["id"]).collect();
    assert_eq!(first_ids, second_ids);
    let (headers, _) = &requests[0];
    assert_eq!(headers["authorization"], format!("Bearer {ADMIN_KEY}"));
    assert_eq!(headers["content-type"], "application/x-ndjson");
    client.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let data = dir.path().join("data");
    let server = TestServer::start_with(&data, None, Some((&cert_path, &key_path))).await;
    assert!(server.url.starts_with("https://localhost:"));

    // Without the CA the connection is refused as untrusted: the event waits, nothing is sent.
    let (untrusting, counters) =
        client_with_counters(client_builder(&server.url).tls_built_in_roots(false));
    untrusting.emit(event(0)).unwrap();
    wait_until("a failed TLS attempt", || counters.snapshot().retries > 0).await;
    assert_eq!(counters.snapshot().sent, 0);
    drop(untrusting);

    let (client, counters) = client_with_counters(
        client_builder(&server.url)
            .tls_built_in_roots(false)
            .add_root_certificate_pem(cert.cert.pem()),
    );
    client.emit(event(1)).unwrap();
    client.flush().await.unwrap();
    assert_eq!(counters.snapshot().sent, 1);
    client.shutdown().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_without_a_spool_gives_up_in_time_and_later_emits_fail() {
    let (client, counters) = client_with_counters(
        client_builder(&format!("http://{}", dead_addr()))
            .shutdown_timeout(Duration::from_millis(300)),
    );
    client.emit(event(0)).unwrap();
    client.emit(event(1)).unwrap();
    let report = tokio::time::timeout(Duration::from_secs(60), client.shutdown())
        .await
        .expect("shutdown is bounded by its timeout")
        .unwrap();
    assert!(!report.spool_backlog);
    let c = counters.snapshot();
    assert_eq!(c.sent, 0);
    assert_eq!(c.failed, 2, "both events are reported lost: {c:?}");
    assert_eq!(client.emit(event(2)), Err(EmitError::Closed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_without_a_spool_drops_and_reports() {
    let (client, counters) = client_with_counters(
        client_builder(&format!("http://{}", dead_addr()))
            .queue_capacity(3)
            .shutdown_timeout(Duration::from_millis(100)),
    );
    let results: Vec<_> = (0..5).map(|n| client.emit(event(n))).collect();
    assert_eq!(
        results
            .iter()
            .filter(|r| **r == Err(EmitError::QueueFull))
            .count(),
        2
    );
    let c = counters.snapshot();
    assert_eq!((c.queued, c.failed), (3, 2));
    client.shutdown().await.unwrap();
}

#[test]
fn a_client_needs_no_runtime_and_checks_its_settings() {
    let client = Client::builder("http://127.0.0.1:9", "k").build().unwrap();
    drop(client);
    assert!(Client::builder("ftp://x", "k").build().is_err());
    assert!(Client::builder("not a url", "k").build().is_err());
    assert!(
        Client::builder("http://x", "k")
            .batch_size(0)
            .build()
            .is_err()
    );
    assert!(
        Client::builder("http://x", "k")
            .add_root_certificate_pem("not PEM")
            .build()
            .is_err()
    );
}
