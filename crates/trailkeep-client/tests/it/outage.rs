//! Trailkeep goes away and comes back; the service restarts: no audit event is lost, none is stored
//! twice, and the spool replays in order.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use trailkeep_client::{Event, Initiator, Target};

use crate::support::{
    TestServer, client_builder, client_with_counters, dead_addr, http, serve_example, wait_until,
};

/// Creates a project through the example service; the correlation id names the request.
async fn create_project(base: &str, name: &str) {
    let response = http()
        .post(format!("{base}/projects"))
        .bearer_auth("bob-token")
        .header("X-Correlation-Id", name)
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec(&json!({ "name": name })).unwrap())
        .send()
        .await
        .expect("the example service answers");
    assert_eq!(response.status(), 201);
}

fn correlation_ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["correlationId"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_event_is_lost_or_stored_twice_when_trailkeep_and_the_service_restart_issue_10() {
    let data = tempfile::tempdir().unwrap();
    let spool = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), None).await;
    let addr = server.addr;

    // Phase 1: all is well.
    let (client, counters) =
        client_with_counters(client_builder(&server.url).spool_dir(spool.path()));
    let (base, stop_app, app_task) = serve_example(client.clone()).await;
    let before: Vec<String> = (0..20).map(|i| format!("before-{i:02}")).collect();
    for name in &before {
        create_project(&base, name).await;
    }
    client.flush().await.unwrap();
    assert_eq!(counters.snapshot().sent, 20);

    // Phase 2: Trailkeep stops; the service keeps working and its events go to the spool.
    server.stop().await;
    let during: Vec<String> = (0..30).map(|i| format!("during-{i:02}")).collect();
    for name in &during {
        create_project(&base, name).await;
    }
    client.flush().await.unwrap();
    let c = counters.snapshot();
    assert_eq!(c.sent, 20, "nothing could be sent");
    assert_eq!(
        c.spooled, 30,
        "every event of the outage is in the spool: {c:?}"
    );
    assert_eq!(c.failed, 0);

    // The service restarts too: its client shuts down with a backlog in the spool.
    let _ = stop_app.send(());
    app_task.await.unwrap();
    let report = client.shutdown().await.unwrap();
    assert!(report.spool_backlog);
    drop(client);

    // Phase 3: Trailkeep is back (same address, same data); a new service process opens the same
    // spool and keeps serving.
    let server = TestServer::start(data.path(), Some(addr)).await;
    let (client, counters) =
        client_with_counters(client_builder(&server.url).spool_dir(spool.path()));
    let (base, stop_app, app_task) = serve_example(client.clone()).await;
    let after: Vec<String> = (0..20).map(|i| format!("after-{i:02}")).collect();
    for name in &after {
        create_project(&base, name).await;
    }
    client.flush().await.unwrap();
    wait_until("the spool drains", || {
        client.backlog() == (0, false) && counters.snapshot().sent >= 50
    })
    .await;

    let expected: Vec<String> = before
        .iter()
        .chain(&during)
        .chain(&after)
        .cloned()
        .collect();
    server
        .wait_for_search("action:projects.project.create", expected.len())
        .await;
    let stored = server.ledger_events("acme");
    assert_eq!(
        correlation_ids(&stored),
        expected,
        "every event stored once, in the order the service emitted them"
    );
    let ids: BTreeSet<String> = stored.iter().map(|e| e["id"].to_string()).collect();
    assert_eq!(ids.len(), expected.len());
    for name in ["before-00", "during-00", "during-29", "after-19"] {
        let hits = server.search(&format!("correlationId:{name}")).await;
        assert_eq!(hits.len(), 1, "{name} is searchable once");
    }
    assert_eq!(counters.snapshot().failed, 0);

    let _ = stop_app.send(());
    app_task.await.unwrap();
    assert!(!client.shutdown().await.unwrap().spool_backlog);
    server.stop().await;
}

fn event(n: usize) -> Event {
    Event::builder("sdk.widget.update")
        .initiator(Initiator::new("IBMid-test"))
        .target(Target::new(format!("widget-{n}")))
        .correlation_id(format!("w-{n:04}"))
        .log_source_crn("crn:v1:bluemix:public:sdk:eu-de:a/widgets:inst::")
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_client_catches_up_when_trailkeep_comes_back() {
    let data = tempfile::tempdir().unwrap();
    let spool = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), None).await;
    let addr = server.addr;
    let (client, counters) =
        client_with_counters(client_builder(&server.url).spool_dir(spool.path()));
    client.emit(event(0)).unwrap();
    client.flush().await.unwrap();
    server.stop().await;

    for n in 1..=40 {
        client.emit(event(n)).unwrap();
    }
    client.flush().await.unwrap();
    assert!(counters.snapshot().spooled > 0);
    wait_until("a retry was made", || counters.snapshot().retries > 0).await;

    let server = TestServer::start(data.path(), Some(addr)).await;
    wait_until("everything is delivered", || counters.snapshot().sent == 41).await;
    wait_until("the spool drains", || client.backlog() == (0, false)).await;
    // Back on the in-memory queue.
    client.emit(event(41)).unwrap();
    client.flush().await.unwrap();
    wait_until("the new event is delivered", || {
        counters.snapshot().sent == 42
    })
    .await;

    let stored = server.ledger_events("widgets");
    let expected: Vec<String> = (0..=41).map(|n| format!("w-{n:04}")).collect();
    assert_eq!(correlation_ids(&stored), expected);
    assert_eq!(counters.snapshot().failed, 0);
    client.shutdown().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_overflows_to_the_spool_and_keeps_the_order() {
    let data = tempfile::tempdir().unwrap();
    let spool = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), None).await;
    let (client, counters) = client_with_counters(
        client_builder(&server.url)
            .spool_dir(spool.path())
            .queue_capacity(4)
            .batch_size(8),
    );
    for n in 0..300 {
        client.emit(event(n)).unwrap();
    }
    client.flush().await.unwrap();
    wait_until("everything is delivered", || {
        counters.snapshot().sent == 300
    })
    .await;
    let c = counters.snapshot();
    assert!(c.spooled > 0, "the queue overflowed: {c:?}");
    assert_eq!(c.failed, 0);
    let stored = server.ledger_events("widgets");
    let expected: Vec<String> = (0..300).map(|n| format!("w-{n:04}")).collect();
    assert_eq!(correlation_ids(&stored), expected);
    client.shutdown().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_spool_tail_is_skipped_and_the_rest_is_delivered() {
    let spool = tempfile::tempdir().unwrap();
    // Nothing listens: every event goes to the spool.
    let (client, counters) = client_with_counters(
        client_builder(&format!("http://{}", dead_addr())).spool_dir(spool.path()),
    );
    for n in 0..10 {
        client.emit(event(n)).unwrap();
    }
    client.flush().await.unwrap();
    assert_eq!(counters.snapshot().spooled, 10);
    assert!(client.shutdown().await.unwrap().spool_backlog);
    drop(client);

    // A crash in the middle of writing the last record: cut it short.
    let mut segments: Vec<_> = std::fs::read_dir(spool.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segments.sort();
    let full = segments
        .iter()
        .rev()
        .find(|p| std::fs::metadata(p).unwrap().len() > 8)
        .expect("a segment with records")
        .clone();
    let len = std::fs::metadata(&full).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&full)
        .unwrap()
        .set_len(len - 7)
        .unwrap();

    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), None).await;
    let (client, counters) =
        client_with_counters(client_builder(&server.url).spool_dir(spool.path()));
    client.emit(event(10)).unwrap();
    client.flush().await.unwrap();
    wait_until("the rest is delivered", || counters.snapshot().sent == 10).await;
    wait_until("the torn record is reported", || {
        counters.snapshot().failed == 1
    })
    .await;
    let stored = server.ledger_events("widgets");
    let expected: Vec<String> = (0..9)
        .chain(std::iter::once(10))
        .map(|n| format!("w-{n:04}"))
        .collect();
    assert_eq!(
        correlation_ids(&stored),
        expected,
        "9 spooled + 1 new, in order"
    );
    client.shutdown().await.unwrap();
    server.stop().await;
}
