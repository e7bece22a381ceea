//! The example service, audited by `AuditLayer`, against a real Trailkeep: every request is one
//! correct, searchable event.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::app::CRN_BASE;
use crate::support::{TestServer, client_builder, client_with_counters, http, serve_example};

struct Call {
    method: &'static str,
    path: String,
    token: Option<&'static str>,
    body: Option<Value>,
    status: u16,
}

fn call(method: &'static str, path: impl Into<String>, body: Option<Value>, status: u16) -> Call {
    Call {
        method,
        path: path.into(),
        token: Some("alice-token"),
        body,
        status,
    }
}

/// Sends one request with a fresh correlation id; returns (correlation id, response body).
async fn send(base: &str, c: &Call, correlation: Option<&str>) -> (String, Value) {
    let mut req = http().request(c.method.parse().unwrap(), format!("{base}{}", c.path));
    if let Some(t) = c.token {
        req = req.bearer_auth(t);
    }
    if let Some(id) = correlation {
        req = req.header("X-Correlation-Id", id);
    }
    req = req.header("User-Agent", "sdk-test/1.0");
    if let Some(b) = &c.body {
        req = req
            .header("Content-Type", "application/json")
            .body(serde_json::to_vec(b).unwrap());
    }
    let response = req.send().await.expect("the example service answers");
    assert_eq!(
        response.status().as_u16(),
        c.status,
        "{} {}",
        c.method,
        c.path
    );
    let returned = response
        .headers()
        .get("x-correlation-id")
        .expect("the correlation id is returned")
        .to_str()
        .unwrap()
        .to_string();
    if let Some(id) = correlation {
        assert_eq!(returned, id, "the caller's correlation id is kept");
    }
    let body = response.bytes().await.unwrap();
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (returned, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_to_the_example_service_is_exactly_one_correct_event_issue_10() {
    let data = tempfile::tempdir().unwrap();
    let spool = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), None).await;
    let (client, counters) =
        client_with_counters(client_builder(&server.url).spool_dir(spool.path()));
    let (base, stop_app, app_task) = serve_example(client.clone()).await;

    // Create a project first: its id is needed by the other calls.
    let (create_corr, created) = send(
        &base,
        &call(
            "POST",
            "/projects",
            Some(json!({"name": "alpha", "settings": {"dbPassword": "s3cret", "tier": "gold"}})),
            201,
        ),
        Some("corr-create"),
    )
    .await;
    let pid = created["id"].as_str().unwrap().to_string();

    let mut unauthenticated = call("GET", "/projects", None, 401);
    unauthenticated.token = None;
    let calls = vec![
        ("corr-list", call("GET", "/projects", None, 200)),
        (
            "corr-read",
            call("GET", format!("/projects/{pid}"), None, 200),
        ),
        ("corr-missing", call("GET", "/projects/p-nope", None, 404)),
        (
            "corr-restart",
            call(
                "POST",
                format!("/projects/{pid}/actions"),
                Some(json!({"restart": {"force": true}})),
                200,
            ),
        ),
        (
            "corr-app",
            call(
                "POST",
                format!("/projects/{pid}/applications"),
                Some(json!({"name": "web", "image": "nginx:1.27",
                    "env": [{"name": "MODE", "value": "prod"}], "registryApiKey": "k-123"})),
                201,
            ),
        ),
        (
            "corr-app-delete",
            call(
                "DELETE",
                format!("/projects/{pid}/applications/web"),
                None,
                204,
            ),
        ),
        ("corr-unauth", unauthenticated),
        (
            "corr-bad-create",
            call("POST", "/projects", Some(json!({"settings": {}})), 400),
        ),
    ];
    let mut sent = BTreeMap::new();
    sent.insert(create_corr.clone(), "create".to_string());
    for (corr, c) in &calls {
        let (got, _) = send(&base, c, Some(corr)).await;
        sent.insert(got, corr.to_string());
    }
    // Without X-Correlation-Id the layer makes one up and returns it.
    let (generated, _) = send(
        &base,
        &call("GET", format!("/projects/{pid}"), None, 200),
        None,
    )
    .await;
    assert_eq!(generated.len(), 36, "a UUID: {generated}");
    sent.insert(generated.clone(), "generated".into());
    // Skipped path: no event.
    let health = http().get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    client.flush().await.unwrap();
    let expected = sent.len();
    let found = server.wait_for_search("action:projects.*", expected).await;
    let stored = server.ledger_events("acme");
    assert_eq!(
        stored.len(),
        expected,
        "one stored event per audited request: {stored:#?}"
    );
    assert_eq!(found.len(), expected);

    // Each correlation id: exactly one event, findable by `correlationId:`.
    let mut by_corr = BTreeMap::new();
    for corr in sent.keys() {
        let hits = server.search(&format!("correlationId:{corr}")).await;
        assert_eq!(hits.len(), 1, "exactly one event for {corr}");
        assert_eq!(hits[0]["account"], "acme");
        by_corr.insert(corr.clone(), hits[0]["event"].clone());
    }
    let ev = |c: &str| by_corr[c].clone();
    let project_crn = format!("{CRN_BASE}:project:{pid}");

    let e = ev("corr-create");
    assert_eq!(e["action"], "projects.project.create");
    assert_eq!(e["outcome"], "success");
    assert_eq!(e["reason"]["reasonCode"], 201);
    assert_eq!(e["reason"]["reasonType"], "Created");
    assert_eq!(e["target"]["id"], project_crn.as_str());
    assert_eq!(e["target"]["name"], "alpha");
    assert_eq!(e["target"]["typeURI"], "projects/project");
    assert_eq!(e["logSourceCRN"], format!("{CRN_BASE}::"));
    assert_eq!(e["initiator"]["id"], "IBMid-alice");
    assert_eq!(e["initiator"]["name"], "alice@example.com");
    assert_eq!(e["initiator"]["credential"]["type"], "token");
    assert_eq!(e["initiator"]["host"]["address"], "127.0.0.1");
    assert_eq!(e["initiator"]["host"]["agent"], "sdk-test/1.0");
    assert_eq!(e["requestData"]["name"], "alpha");
    assert_eq!(e["requestData"]["settings"]["tier"], "gold");
    assert_eq!(
        e["requestData"]["settings"]["dbPassword"], "[redacted]",
        "secrets never leave the service"
    );
    assert_eq!(e["severity"], "normal", "derived by the server");

    let e = ev("corr-list");
    assert_eq!(e["action"], "projects.project.list");
    assert_eq!(e["target"]["id"], format!("{CRN_BASE}:project:"));

    let e = ev("corr-read");
    assert_eq!(e["action"], "projects.project.read");
    assert_eq!(e["outcome"], "success");
    assert_eq!(e["reason"]["reasonCode"], 200);
    assert_eq!(e["target"]["id"], project_crn.as_str());

    let e = ev("corr-missing");
    assert_eq!(e["action"], "projects.project.read");
    assert_eq!(e["outcome"], "failure");
    assert_eq!(e["reason"]["reasonCode"], 404);
    assert_eq!(e["reason"]["reasonType"], "Not Found");
    assert_eq!(e["reason"]["reasonForFailure"], "project p-nope not found");
    assert_eq!(e["target"]["id"], format!("{CRN_BASE}:project:p-nope"));

    let e = ev("corr-restart");
    assert_eq!(
        e["action"], "projects.project.restart",
        "verb from the body key"
    );
    assert_eq!(e["target"]["id"], project_crn.as_str());
    assert_eq!(e["requestData"], json!({"restart": {"force": true}}));

    let e = ev("corr-app");
    assert_eq!(e["action"], "projects.application.create");
    assert_eq!(
        e["target"]["id"],
        format!("{CRN_BASE}:application:{pid}/web")
    );
    assert_eq!(e["requestData"]["registryApiKey"], "[redacted]");
    assert_eq!(e["requestData"]["env"][0]["value"], "prod");

    let e = ev("corr-app-delete");
    assert_eq!(e["action"], "projects.application.delete");
    assert_eq!(e["reason"]["reasonCode"], 204);

    let e = ev("corr-unauth");
    assert_eq!(e["action"], "projects.project.list");
    assert_eq!(e["outcome"], "failure");
    assert_eq!(e["reason"]["reasonCode"], 401);
    assert_eq!(e["initiator"]["id"], "unknown");
    assert_eq!(
        e["reason"]["reasonForFailure"],
        "missing or unknown bearer token"
    );
    assert_eq!(e["severity"], "critical", "401 is critical");

    let e = ev("corr-bad-create");
    assert_eq!(e["outcome"], "failure");
    assert_eq!(e["reason"]["reasonCode"], 400);
    assert_eq!(e["reason"]["reasonForFailure"], "name is required");

    let e = ev(&generated);
    assert_eq!(e["action"], "projects.project.read");

    // Every stored event has its own id, and the server's metrics hooks saw them all.
    let ids: std::collections::BTreeSet<_> = stored.iter().map(|e| e["id"].to_string()).collect();
    assert_eq!(ids.len(), expected);
    let c = counters.snapshot();
    assert_eq!(c.sent, expected as u64);
    assert_eq!(c.failed, 0);

    let _ = stop_app.send(());
    app_task.await.unwrap();
    let report = client.shutdown().await.unwrap();
    assert!(!report.spool_backlog);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The layer's edges, checked on the events it hands to the client (sent to a recording sink).

mod edges {
    use std::time::Duration;

    use axum::Router;
    use axum::body::{Body, Bytes};
    use axum::http::{Method, Request, StatusCode};
    use axum::routing::{get, post};
    use serde_json::{Value, json};
    use tower::ServiceExt;
    use trailkeep_client::Client;
    use trailkeep_client::audit::{AuditLayer, AuditMap, Rule};

    use crate::support::{Sink, client_builder, start_sink};

    async fn setup(configure: impl FnOnce(AuditLayer) -> AuditLayer) -> (Router, Client, Sink) {
        let sink = Sink::accepting();
        let addr = start_sink(sink.clone()).await;
        let client = client_builder(&format!("http://{addr}")).build().unwrap();
        let map = AuditMap::new("svc")
            .route(Method::POST, "/items/{id}/actions", Rule::body_key("item"))
            .route(Method::POST, "/items", Rule::new("item", "create"))
            .route(Method::GET, "/items/{id}", Rule::new("item", "read"))
            .route(Method::GET, "/slow", Rule::new("item", "wait"));
        let app = Router::new()
            // Echoes the length and a checksum of the body it received.
            .route(
                "/items/{id}/actions",
                post(|body: Bytes| async move {
                    axum::Json(json!({"len": body.len(), "crc": crc32fast::hash(&body)}))
                }),
            )
            .route(
                "/items",
                post(|body: Bytes| async move {
                    (
                        StatusCode::CREATED,
                        axum::Json(json!({"len": body.len(), "id": "i-1", "accessToken": "t0k"})),
                    )
                }),
            )
            .route("/items/{id}", get(|| async { "{}" }))
            .route("/healthz", get(|| async { "ok" }))
            .route("/slow", get(std::future::pending::<&'static str>))
            .layer(configure(AuditLayer::new(map, client.clone())));
        (app, client, sink)
    }

    async fn call(app: &Router, req: Request<Body>) -> (StatusCode, Value, Option<String>) {
        let response = app.clone().oneshot(req).await.unwrap();
        let status = response.status();
        let corr = response
            .headers()
            .get("x-correlation-id")
            .map(|v| v.to_str().unwrap().to_string());
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&body).unwrap_or(Value::Null),
            corr,
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bodies_reach_the_service_unchanged_and_only_small_json_is_recorded() {
        let (app, client, sink) = setup(|l| {
            l.capture_request_body(1024)
                .capture_response_body(1024)
                .body_key_limit(4096)
        })
        .await;

        // A large streamed body: read ahead up to the limit, then passed on whole.
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let chunks: Vec<Result<Bytes, std::io::Error>> = big
            .chunks(7_000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let req = Request::post("/items/i-1/actions")
            .body(Body::from_stream(futures_stream(chunks)))
            .unwrap();
        let (status, body, _) = call(&app, req).await;
        assert_eq!(status, 200);
        assert_eq!(body["len"], big.len());
        assert_eq!(body["crc"], crc32fast::hash(&big));

        // A small JSON body: verb from its first key, recorded (redacted).
        let small = br#"{"archive": {"keep": 7}, "apiKey": "secret"}"#;
        let req = Request::post("/items/i-1/actions")
            .header("content-type", "application/json")
            .header("x-correlation-id", "bad id with spaces")
            .body(Body::from(&small[..]))
            .unwrap();
        let (status, body, corr) = call(&app, req).await;
        assert_eq!(status, 200);
        assert_eq!(body["crc"], crc32fast::hash(small));
        let corr = corr.unwrap();
        assert_ne!(corr, "bad id with spaces", "an unusable id is replaced");

        // Response capture: recorded after the body was sent, redacted.
        let req = Request::post("/items")
            .header("content-type", "application/json")
            .body(Body::from(r#"{"name": "n1", "password": "p"}"#))
            .unwrap();
        let (status, _, _) = call(&app, req).await;
        assert_eq!(status, 201);

        client.flush().await.unwrap();
        let events = sink.events();
        assert_eq!(events.len(), 3, "{events:#?}");
        assert_eq!(
            events[0]["action"], "svc.item.update",
            "no usable body key: fallback verb"
        );
        assert!(
            events[0].get("requestData").is_none(),
            "too large to record"
        );
        assert_eq!(events[1]["action"], "svc.item.archive");
        assert_eq!(events[1]["correlationId"], corr);
        assert_eq!(
            events[1]["requestData"],
            json!({"archive": {"keep": 7}, "apiKey": "[redacted]"})
        );
        assert_eq!(events[2]["action"], "svc.item.create");
        assert_eq!(
            events[2]["requestData"],
            json!({"name": "n1", "password": "[redacted]"})
        );
        assert_eq!(
            events[2]["responseData"],
            json!({"len": 31, "id": "i-1", "accessToken": "[redacted]"})
        );
        client.shutdown().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn skips_and_a_request_abandoned_before_its_answer() {
        let (app, client, sink) =
            setup(|l| l.skip_path("/healthz").skip_method(Method::HEAD)).await;
        let (status, _, corr) =
            call(&app, Request::get("/healthz").body(Body::empty()).unwrap()).await;
        assert_eq!(status, 200);
        assert!(corr.is_none(), "skipped requests are not touched");
        let req = Request::head("/items/i-1").body(Body::empty()).unwrap();
        let _ = call(&app, req).await;

        // The caller gives up on a request the service never answers.
        let req = Request::get("/slow")
            .header("x-correlation-id", "abandoned-1")
            .body(Body::empty())
            .unwrap();
        let abandoned =
            tokio::time::timeout(Duration::from_millis(50), app.clone().oneshot(req)).await;
        assert!(abandoned.is_err(), "the request never completes");

        client.flush().await.unwrap();
        let events = sink.events();
        assert_eq!(events.len(), 1, "{events:#?}");
        assert_eq!(events[0]["action"], "svc.item.wait");
        assert_eq!(events[0]["outcome"], "unknown");
        assert_eq!(events[0]["correlationId"], "abandoned-1");
        assert!(events[0].get("reason").is_none());
        client.shutdown().await.unwrap();
    }

    /// A stream of the given chunks.
    fn futures_stream(
        chunks: Vec<Result<Bytes, std::io::Error>>,
    ) -> impl futures_core::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        struct Chunks(std::collections::VecDeque<Result<Bytes, std::io::Error>>);
        impl futures_core::Stream for Chunks {
            type Item = Result<Bytes, std::io::Error>;
            fn poll_next(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Self::Item>> {
                std::task::Poll::Ready(self.0.pop_front())
            }
        }
        Chunks(chunks.into())
    }
}
