//! A real Trailkeep server in the test process (the `trailkeep-server` library, as `trailkeep
//! serve` runs it) on a loopback port, and helpers to read back what it stored.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use std::sync::Mutex;
use tokio::sync::oneshot;
use trailkeep_client::{Client, ClientBuilder, Counters};
use trailkeep_server::config::ServeOptions;

pub const ADMIN_KEY: &str = "sdk-test-admin-key-0123456789";

/// How long any wait in these tests may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A running server; [`TestServer::stop`] shuts it down gracefully.
pub struct TestServer {
    pub addr: SocketAddr,
    pub url: String,
    pub core: Arc<trailkeep_server::core::Core>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server on `data_dir`, on `addr` (default: a free loopback port).
    pub async fn start(data_dir: &Path, addr: Option<SocketAddr>) -> TestServer {
        Self::start_with(data_dir, addr, None).await
    }

    /// As [`start`](Self::start), serving HTTPS with the given PEM certificate and key files.
    pub async fn start_with(
        data_dir: &Path,
        addr: Option<SocketAddr>,
        tls: Option<(&Path, &Path)>,
    ) -> TestServer {
        let options = ServeOptions {
            data_dir: Some(data_dir.to_path_buf()),
            listen: Some(addr.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap())),
            admin_key: Some(ADMIN_KEY.into()),
            tls_cert: tls.map(|t| t.0.to_path_buf()),
            tls_key: tls.map(|t| t.1.to_path_buf()),
            ..ServeOptions::default()
        };
        let config = options.resolve().expect("valid test options");
        let started = trailkeep_server::run::start(config, false)
            .await
            .expect("the server starts");
        let addr = started.addr;
        let scheme = if started.tls { "https" } else { "http" };
        let url = match tls {
            Some(_) => format!("{scheme}://localhost:{}", addr.port()),
            None => format!("{scheme}://{addr}"),
        };
        let core = started.core.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            started
                .serve(async {
                    let _ = stopped.await;
                })
                .await
                .expect("the server runs and stops cleanly");
        });
        TestServer {
            addr,
            url,
            core,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Graceful shutdown: stop accepting, finish requests, close the ledger and index.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(PATIENCE, t)
                .await
                .expect("the server stops in time")
                .expect("the server task does not panic");
        }
    }

    /// Every event the services stored in `account`'s log, in log order (read from the ledger
    /// itself), without the server's own records of the tests' searches (`trailkeep.*`).
    pub fn ledger_events(&self, account: &str) -> Vec<Value> {
        self.core
            .ledger
            .iter_account(account, 0)
            .map(|r| serde_json::from_slice(&r.expect("readable record").bytes).unwrap())
            .filter(|e: &Value| {
                !e["action"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("trailkeep."))
            })
            .collect()
    }

    /// Searches like a user would: `GET /v1/events?q=…` (newest first).
    pub async fn search(&self, q: &str) -> Vec<Value> {
        let response = http()
            .get(format!("{}/v1/events", self.url))
            .query(&[("q", q), ("limit", "10000")])
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .expect("search answers");
        assert_eq!(response.status(), 200, "search {q:?}");
        let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        body["events"].as_array().cloned().unwrap_or_default()
    }

    /// Waits (bounded) until a search finds at least `n` events, and returns them.
    pub async fn wait_for_search(&self, q: &str, n: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let found = self.search(q).await;
            if found.len() >= n {
                return found;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "search {q:?} found {} events, expected {n}",
                found.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A plain HTTP client for the tests' own requests.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(PATIENCE)
        .no_proxy()
        .build()
        .unwrap()
}

/// A client builder with test-friendly timings (short linger and backoff).
pub fn client_builder(url: &str) -> ClientBuilder {
    Client::builder(url, ADMIN_KEY)
        .linger(Duration::from_millis(10))
        .initial_backoff(Duration::from_millis(20))
        .max_backoff(Duration::from_millis(300))
        .connect_timeout(Duration::from_secs(5))
        .request_timeout(Duration::from_secs(30))
}

/// A client with counters.
pub fn client_with_counters(builder: ClientBuilder) -> (Client, Arc<Counters>) {
    let counters = Arc::new(Counters::new());
    let client = builder.metrics(counters.clone()).build().expect("client");
    (client, counters)
}

/// Waits (bounded) until `cond` holds.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An address on loopback where nothing listens (connections are refused).
pub fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Serves the example service on a loopback port; returns its base URL and a stop switch.
pub async fn serve_example(
    client: Client,
) -> (String, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let app = crate::app::router(client);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (format!("http://{addr}"), stop, task)
}

/// One request the sink received: its headers and events.
pub type Received = (HeaderMap, Vec<Value>);

/// A stand-in ingest endpoint with scripted answers, recording what it received.
#[derive(Clone, Default)]
pub struct Sink {
    pub requests: Arc<Mutex<Vec<Received>>>,
    /// Answer 429 (Retry-After: 1) to this many requests first.
    pub busy: Arc<Mutex<u32>>,
    /// Answer 413 to bodies with more events than this.
    pub max_events: usize,
}

async fn sink_ingest(
    axum::extract::State(sink): axum::extract::State<Sink>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let events: Vec<Value> = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    let n = events.len();
    sink.requests.lock().unwrap().push((headers, events));
    {
        let mut busy = sink.busy.lock().unwrap();
        if *busy > 0 {
            *busy -= 1;
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("Retry-After", "1")],
                r#"{"error":{"code":"overloaded","message":"busy"}}"#,
            )
                .into_response();
        }
    }
    if n > sink.max_events {
        return (StatusCode::PAYLOAD_TOO_LARGE, "{}").into_response();
    }
    let results: Vec<Value> = (0..n)
        .map(|i| json!({"status": "accepted", "account": "a", "index": i, "id": "x", "duplicate": false}))
        .collect();
    axum::Json(json!({"accepted": n, "rejected": 0, "results": results})).into_response()
}

pub async fn start_sink(sink: Sink) -> SocketAddr {
    let app = axum::Router::new()
        .route("/v1/events", axum::routing::post(sink_ingest))
        .with_state(sink);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

impl Sink {
    /// A sink that accepts everything.
    pub fn accepting() -> Sink {
        Sink {
            max_events: usize::MAX,
            ..Sink::default()
        }
    }

    /// Every event received, in order.
    pub fn events(&self) -> Vec<Value> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .flat_map(|(_, e)| e.clone())
            .collect()
    }
}
