//! What `AuditLayer` adds to a request on the service's hot path, at a paced 10,000 requests/s.
//!
//! ```sh
//! cargo bench -p trailkeep-client --bench layer
//! TRAILKEEP_BENCH_REQUESTS=100000 cargo bench -p trailkeep-client --bench layer
//! ```
//!
//! The same small axum service (an authentication middleware and a handler returning JSON) is
//! called in-process, once without the layer and once with it; each request's latency is timed
//! and requests are paced at 10,000/s. The client sends the events for real — to a minimal ingest
//! endpoint on loopback that accepts everything, so the figures measure the SDK, not a Trailkeep
//! server sharing the same cores. Prints figures; asserts nothing about time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::json;
use tower::ServiceExt;
use trailkeep_client::audit::{AuditHandle, AuditLayer, AuditMap, Rule};
use trailkeep_client::{Client, Counters, Event, Initiator, Target};

const RATE_PER_SEC: u64 = 10_000;

fn main() {
    let n: usize = std::env::var("TRAILKEEP_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30_000);
    let sink = start_sink();
    let counters = Arc::new(Counters::new());
    let client = Client::builder(format!("http://{sink}"), "bench-key")
        .metrics(counters.clone())
        .build()
        .expect("client");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "AuditLayer hot-path cost: {n} requests per case, paced at {RATE_PER_SEC}/s, one service thread"
    );
    println!(
        "{:<44} {:>9} {:>9} {:>9} {:>9}",
        "case", "mean µs", "p50 µs", "p99 µs", "added µs"
    );
    let plain = app(None);
    let base = rt.block_on(run(&plain, n, get_request));
    print_row("GET /projects/{id}, no layer", &base, None);

    let audited = app(Some(AuditLayer::new(audit_map(), client.clone())));
    let r = rt.block_on(run(&audited, n, get_request));
    print_row("GET /projects/{id}, AuditLayer", &r, Some(&base));

    let base_post = rt.block_on(run(&plain, n, action_request));
    print_row("POST …/actions {\"restart\"}, no layer", &base_post, None);
    let r = rt.block_on(run(&audited, n, action_request));
    print_row(
        "POST …/actions, AuditLayer (body verb)",
        &r,
        Some(&base_post),
    );

    let capturing = app(Some(
        AuditLayer::new(audit_map(), client.clone())
            .capture_request_body(16 * 1024)
            .capture_response_body(16 * 1024),
    ));
    let r = rt.block_on(run(&capturing, n, action_request));
    print_row(
        "POST …/actions, AuditLayer + both bodies",
        &r,
        Some(&base_post),
    );

    // The part the layer hands over: build one event and emit it.
    let k = n.max(10_000);
    let start = Instant::now();
    for i in 0..k {
        let e = Event::builder("bench.project.read")
            .initiator(Initiator::new("IBMid-bench").name("bench@example.com"))
            .target(Target::new(format!("p-{i}")))
            .correlation_id("c")
            .build()
            .unwrap();
        let _ = client.emit(e);
    }
    let per = start.elapsed() / k as u32;
    println!(
        "Event::builder(..).build() + Client::emit alone: {:.2} µs per event",
        per.as_secs_f64() * 1e6
    );

    rt.block_on(async {
        client.flush().await.unwrap();
        client.shutdown().await.unwrap();
    });
    let c = counters.snapshot();
    println!(
        "events: {} queued, {} spooled, {} sent, {} failed",
        c.queued, c.spooled, c.sent, c.failed
    );
}

struct Figures {
    mean: Duration,
    p50: Duration,
    p99: Duration,
}

fn print_row(name: &str, f: &Figures, base: Option<&Figures>) {
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let added = base.map_or(String::from("-"), |b| {
        format!("{:.2}", us(f.mean) - us(b.mean))
    });
    println!(
        "{:<44} {:>9.2} {:>9.2} {:>9.2} {:>9}",
        name,
        us(f.mean),
        us(f.p50),
        us(f.p99),
        added
    );
}

/// Calls `app` `n` times (after a warm-up), paced at [`RATE_PER_SEC`], timing each call including
/// reading the response body.
async fn run(app: &Router, n: usize, make: fn(usize) -> Request<Body>) -> Figures {
    for i in 0..2_000 {
        one(app, make(i)).await;
    }
    let interval = Duration::from_nanos(1_000_000_000 / RATE_PER_SEC);
    let mut times = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let due = start + interval * i as u32;
        while Instant::now() < due {
            std::hint::spin_loop();
        }
        let req = make(i);
        let t = Instant::now();
        one(app, req).await;
        times.push(t.elapsed());
    }
    times.sort_unstable();
    let total: Duration = times.iter().sum();
    Figures {
        mean: total / n as u32,
        p50: times[n / 2],
        p99: times[n * 99 / 100],
    }
}

async fn one(app: &Router, req: Request<Body>) {
    let response = app.clone().oneshot(req).await.unwrap();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    std::hint::black_box(body);
}

fn get_request(i: usize) -> Request<Body> {
    Request::builder()
        .uri(format!("/projects/p-{}", i % 100))
        .header("authorization", "Bearer alice-token")
        .header("user-agent", "bench/1.0")
        .body(Body::empty())
        .unwrap()
}

fn action_request(i: usize) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri(format!("/projects/p-{}/actions", i % 100))
        .header("authorization", "Bearer alice-token")
        .header("content-type", "application/json")
        .body(Body::from(
            r#"{"restart": {"force": true, "reason": "deploy"}}"#,
        ))
        .unwrap()
}

fn audit_map() -> AuditMap {
    AuditMap::new("bench")
        .crn_base("crn:v1:bluemix:public:bench:us-south:a/acme:instance-1")
        .route(Method::GET, "/projects/{id}", Rule::new("project", "read"))
        .route(
            Method::POST,
            "/projects/{id}/actions",
            Rule::body_key("project"),
        )
}

/// The service: authentication (fills the audit handle when there is one) and two handlers.
fn app(layer: Option<AuditLayer>) -> Router {
    let router = Router::new()
        .route("/projects/{id}", get(read_project))
        .route("/projects/{id}/actions", post(project_action))
        .layer(middleware::from_fn(authenticate));
    match layer {
        Some(l) => router.layer(l),
        None => router,
    }
}

async fn authenticate(
    audit: Option<Extension<AuditHandle>>,
    mut req: Request,
    next: Next,
) -> Response {
    let ok = req
        .headers()
        .get("authorization")
        .is_some_and(|v| v == "Bearer alice-token");
    let initiator = Initiator::new("IBMid-alice")
        .name("alice@example.com")
        .credential_type("token");
    if let Some(Extension(a)) = &audit {
        a.set_initiator(initiator.clone());
    }
    if !ok {
        return axum::http::StatusCode::UNAUTHORIZED.into_response();
    }
    req.extensions_mut().insert(initiator);
    next.run(req).await
}

async fn read_project(Path(id): Path<String>) -> Json<serde_json::Value> {
    Json(json!({"id": id, "name": "alpha", "region": "us-south", "applications": 3}))
}

async fn project_action(Path(id): Path<String>, body: Bytes) -> Json<serde_json::Value> {
    Json(json!({"id": id, "status": "restarting", "request_bytes": body.len()}))
}

/// A minimal ingest endpoint: accepts every line.
fn start_sink() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = Router::new().route(
                "/v1/events",
                post(|body: Bytes| async move {
                    let n = body
                        .split(|b| *b == b'\n')
                        .filter(|l| !l.is_empty())
                        .count();
                    let mut out = String::from(r#"{"accepted":"#);
                    out.push_str(&format!(r#"{n},"rejected":0,"results":["#));
                    for i in 0..n {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push_str(r#"{"status":"accepted","duplicate":false}"#);
                    }
                    out.push_str("]}");
                    ([("content-type", "application/json")], out)
                }),
            );
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    addr
}
