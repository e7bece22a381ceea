//! End-to-end tests of `trailkeep serve`: the real binary on a loopback port with a temporary data
//! directory, driven over HTTP.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const ADMIN_KEY: &str = "e2e-admin-key-0123456789abcdef";

/// A running server process; killed when dropped.
pub struct Server {
    pub child: Child,
    pub url: String,
    pub stderr_lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    pub fn start(data_dir: &Path, extra: &[&str]) -> Server {
        Self::start_with_env(data_dir, extra, &[])
    }

    /// [`Server::start`] with extra environment variables.
    pub fn start_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_trailkeep"));
        cmd.arg("serve");
        // A test that restarts a server on the same port passes its own --listen.
        if !extra.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        cmd.arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("TRAILKEEP_ADMIN_KEY", ADMIN_KEY)
            .env("TRAILKEEP_LOG", "warn")
            .env_remove("TRAILKEEP_CONFIG")
            .envs(env.iter().copied())
            .current_dir(data_dir.parent().unwrap_or(data_dir))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("the server starts");
        let stderr = child.stderr.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(rest) = line.split("listening on ").nth(1) {
                        let url = rest
                            .split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_string();
                        let _ = tx.send(url);
                    }
                    lines.lock().unwrap().push(line);
                }
            });
        }
        let url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!("the server did not start: {:?}", lines.lock().unwrap());
            }
        };
        Server {
            child,
            url,
            stderr_lines: lines,
        }
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "graceful shutdown exits 0: {:?}",
            self.stderr_lines.lock().unwrap()
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response: status, headers we look at, body.
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build()
}

pub fn request(
    method: &str,
    url: &str,
    key: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Reply {
    let mut req = agent().request(method, url);
    if let Some(k) = key {
        req = req.set("Authorization", &format!("Bearer {k}"));
    }
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let result = match body {
        Some(b) => req.send_bytes(b),
        None => req.call(),
    };
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = response.status();
    let retry_after = response.header("Retry-After").map(str::to_string);
    let content_type = response
        .header("Content-Type")
        .unwrap_or_default()
        .to_string();
    let mut body = Vec::new();
    response.into_reader().read_to_end(&mut body).unwrap();
    Reply {
        status,
        retry_after,
        content_type,
        body,
    }
}

pub fn post_json(server: &Server, path: &str, body: &Value) -> Reply {
    request(
        "POST",
        &format!("{}{path}", server.url),
        Some(ADMIN_KEY),
        &[("Content-Type", "application/json")],
        Some(body.to_string().as_bytes()),
    )
}

pub fn get(server: &Server, path_and_query: &str) -> Reply {
    request(
        "GET",
        &format!("{}{path_and_query}", server.url),
        Some(ADMIN_KEY),
        &[],
        None,
    )
}

pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Polls a search until it returns `want` events (or gives up after 10 s); returns the events and
/// how long it took.
pub fn wait_for(server: &Server, q: &str, want: usize) -> (Vec<Value>, Duration) {
    let started = Instant::now();
    loop {
        let r = get(server, &format!("/v1/events?q={}&limit=1000", enc(q)));
        assert_eq!(r.status, 200, "{}", r.text());
        let events = r.json()["events"].as_array().unwrap().clone();
        if events.len() >= want || started.elapsed() > Duration::from_secs(10) {
            return (events, started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn event(account: &str, id: &str, action: &str, outcome: &str, target: &str) -> Value {
    json!({
        "id": id,
        "eventTime": "2026-11-20T10:00:00.123+0000",
        "action": action,
        "outcome": outcome,
        "initiator": {"id": "IBMid-550001", "name": "ada@acme.example", "typeURI": "service/security/account/user",
                      "credential": {"type": "token", "token": "eyJhbGciOiJSUzI1NiJ9.secret"}},
        "target": {"id": target, "name": target.rsplit(':').next().unwrap(), "typeURI": "codeengine/application"},
        "reason": {"reasonCode": if outcome == "failure" { 403 } else { 200 }},
        "correlationId": format!("corr-{id}"),
        "logSourceCRN": format!("crn:v1:bluemix:public:codeengine:us-south:a/{account}:proj-1::"),
        "requestData": {"name": "web", "database": {"dbPassword": "s3cr3t"}}
    })
}

#[test]
fn ingest_shapes_idempotency_search_get_proof_and_aggregate() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let crn = "crn:v1:bluemix:public:codeengine:us-south:a/acme:proj-1:application:web";

    // One event.
    let r = post_json(
        &server,
        "/v1/events",
        &event(
            "acme",
            "ev-1",
            "codeengine.application.create",
            "success",
            crn,
        ),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["accepted"], 1);
    assert_eq!(
        body["results"][0],
        json!({"status": "accepted", "account": "acme", "index": 0, "id": "ev-1", "duplicate": false})
    );

    // An array with one bad item: per-item results in order.
    let arr = json!([
        event("acme", "ev-2", "codeengine.application.update", "failure", crn),
        {"action": "nope", "outcome": "maybe"},
        event("globex", "ev-3", "kms.secrets.rotate", "success", "crn:v1:bluemix:public:kms:eu-de:a/globex:k1:key:k")
    ]);
    let r = post_json(&server, "/v1/events", &arr);
    assert_eq!(r.status, 200);
    let body = r.json();
    assert_eq!(
        (body["accepted"].as_u64(), body["rejected"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(body["results"][1]["status"], "rejected");
    assert!(
        body["results"][1]["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["path"] == "outcome")
    );
    assert_eq!(body["results"][2]["account"], "globex");

    // NDJSON, gzip-compressed.
    let ndjson = format!(
        "{}\n{}\n",
        event(
            "acme",
            "ev-4",
            "codeengine.application.delete",
            "success",
            crn
        ),
        event(
            "acme",
            "ev-5",
            "codeengine.application.read",
            "failure",
            crn
        )
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(ndjson.as_bytes()).unwrap();
    let r = request(
        "POST",
        &format!("{}/v1/events", server.url),
        Some(ADMIN_KEY),
        &[
            ("Content-Type", "application/x-ndjson"),
            ("Content-Encoding", "gzip"),
        ],
        Some(&gz.finish().unwrap()),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["accepted"], 2);

    // zstd.
    let one = event("acme", "ev-6", "codeengine.secret.create", "success", crn).to_string();
    let r = request(
        "POST",
        &format!("{}/v1/events", server.url),
        Some(ADMIN_KEY),
        &[
            ("Content-Type", "application/json"),
            ("Content-Encoding", "zstd"),
        ],
        Some(&zstd::encode_all(one.as_bytes(), 3).unwrap()),
    );
    assert_eq!(r.status, 200, "{}", r.text());

    // Idempotency: the same (account, id) again answers the original position.
    let r = post_json(
        &server,
        "/v1/events",
        &event(
            "acme",
            "ev-1",
            "codeengine.application.create",
            "success",
            crn,
        ),
    );
    assert_eq!(
        r.json()["results"][0],
        json!({"status": "accepted", "account": "acme", "index": 0, "id": "ev-1", "duplicate": true})
    );

    // Nothing accepted: 422 with the ingest shape.
    let r = post_json(&server, "/v1/events", &json!({"action": "x"}));
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["rejected"], 1);

    // Searchable (the first search may wait for the index commit).
    let (events, took) = wait_for(&server, "account:acme", 5);
    assert_eq!(events.len(), 5, "acme has 5 distinct events");
    eprintln!("ingest-to-searchable: {took:?}");
    // Newest first by eventTime, items in the documented shape, secrets never in clear.
    let first = &events[0];
    for key in ["account", "index", "receivedAt", "event"] {
        assert!(first.get(key).is_some(), "{key} in {first}");
    }
    let all = serde_json::to_string(&events).unwrap();
    assert!(
        !all.contains("eyJhbGciOiJSUzI1NiJ9.secret"),
        "credential tokens are never stored in clear"
    );
    assert!(
        !all.contains("s3cr3t"),
        "token-like values in request data are redacted"
    );

    let (failures, _) = wait_for(&server, "outcome:failure AND reason.reasonCode:403", 2);
    assert_eq!(failures.len(), 2);
    let (prefix, _) = wait_for(
        &server,
        "action:codeengine.application.* -action:codeengine.application.read",
        3,
    );
    assert_eq!(prefix.len(), 3, "{prefix:?}");

    // Bad query: 400 with a position.
    let r = get(
        &server,
        &format!("/v1/events?q={}", enc("outcome:(failure")),
    );
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]["details"][0]["path"]
            .as_str()
            .unwrap()
            .starts_with("q[")
    );

    // Cursor paging: pages of 2 cover the account without gaps or repeats.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/v1/events?q=account:acme&limit=2".to_string();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={}", enc(c)));
        }
        let page = get(&server, &path).json();
        for e in page["events"].as_array().unwrap() {
            seen.push(e["event"]["id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, ["ev-1", "ev-2", "ev-4", "ev-5", "ev-6"]);

    // Get one event with an inclusion proof, and verify it independently.
    let r = get(&server, "/v1/events/ev-4?proof=true");
    assert_eq!(r.status, 200, "{}", r.text());
    let item = r.json();
    assert_eq!(item["account"], "acme");
    let key = get(&server, "/v1/log/key").text();
    assert!(r.content_type.starts_with("application/json"));
    crate::verifier::check_item_proof(&item, key.trim());

    // Another account's event by id is a 404 when asked for in the wrong account.
    let r = get(&server, "/v1/events/ev-3?account=acme");
    assert_eq!(r.status, 404);

    // Aggregate by action.
    let r = get(
        &server,
        // The server's own records of these reads are in acme's log too (once indexed).
        &format!(
            "/v1/aggregate?q={}&by=action&interval=1h",
            enc("account:acme AND NOT action:trailkeep.*")
        ),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let agg = r.json();
    assert_eq!(agg["total"], 5, "{agg}");
    assert!(
        agg["terms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["key"] == "codeengine.application.create" && t["count"] == 1)
    );

    // Checkpoint and tiles.
    let r = get(&server, "/v1/log/acme/checkpoint");
    assert_eq!(r.status, 200);
    assert!(r.text().starts_with("trailkeep/acme\n"), "{}", r.text());
    let r = get(&server, "/v1/log/acme/tile/0/000.p/5");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body.len(), 5 * 32);

    server.stop();
}

#[test]
fn request_level_errors_use_the_error_shape() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--max-body-bytes", "20000"]);
    let url = format!("{}/v1/events", server.url);
    let ev = event("acme", "e", "kms.secrets.rotate", "success", "t").to_string();

    let r = request("POST", &url, None, &[], Some(ev.as_bytes()));
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "unauthorized");
    let r = request(
        "POST",
        &url,
        Some("not-a-real-key-000000"),
        &[],
        Some(ev.as_bytes()),
    );
    assert_eq!(r.status, 401);
    let r = request(
        "POST",
        &url,
        Some(ADMIN_KEY),
        &[("Content-Type", "text/csv")],
        Some(ev.as_bytes()),
    );
    assert_eq!(r.status, 415);
    let big = format!("[{}]", vec![ev.as_str(); 40].join(","));
    let r = request(
        "POST",
        &url,
        Some(ADMIN_KEY),
        &[("Content-Type", "application/json")],
        Some(big.as_bytes()),
    );
    assert_eq!(r.status, 413, "{}", r.text());
    let bomb = zstd::encode_all(&vec![b' '; 1_000_000][..], 3).unwrap();
    let r = request(
        "POST",
        &url,
        Some(ADMIN_KEY),
        &[("Content-Encoding", "zstd")],
        Some(&bomb),
    );
    assert_eq!(r.status, 413);
    let r = request("POST", &url, Some(ADMIN_KEY), &[], Some(b"   "));
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("empty")
    );
    let r = get(&server, "/v1/events?from=yesterday");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["details"][0]["path"], "from");
}

#[test]
fn a_full_queue_answers_429_with_retry_after_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--ingest-queue", "600"]);
    let url = server.url.clone();
    let stop_at = Instant::now() + Duration::from_secs(20);
    let saw_429 = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let (url, saw_429, acked) = (url.clone(), saw_429.clone(), acked.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !saw_429.load(std::sync::atomic::Ordering::Relaxed)
                    && Instant::now() < stop_at
                {
                    let batch: Vec<Value> = (0..500)
                        .map(|i| {
                            event(
                                "acme",
                                &format!("q-{t}-{n}-{i}"),
                                "kms.secrets.wrap",
                                "success",
                                "t",
                            )
                        })
                        .collect();
                    let r = request(
                        "POST",
                        &format!("{url}/v1/events"),
                        Some(ADMIN_KEY),
                        &[("Content-Type", "application/json")],
                        Some(serde_json::to_string(&batch).unwrap().as_bytes()),
                    );
                    match r.status {
                        200 => acked
                            .lock()
                            .unwrap()
                            .extend(batch.iter().map(|e| e["id"].as_str().unwrap().to_string())),
                        429 => {
                            assert_eq!(r.retry_after.as_deref(), Some("1"));
                            assert_eq!(r.json()["error"]["code"], "overloaded");
                            saw_429.store(true, std::sync::atomic::Ordering::Relaxed);
                        }
                        other => panic!("unexpected {other}: {}", r.text()),
                    }
                    n += 1;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(
        saw_429.load(std::sync::atomic::Ordering::Relaxed),
        "concurrent batches overflow a 600-event queue"
    );
    let acked = acked.lock().unwrap().len();
    let (events, _) = wait_for(&server, "account:acme", acked.min(1000));
    assert_eq!(events.len(), acked.min(1000));
    // A batch bigger than the whole queue can never fit: 413, not an endless 429.
    let batch: Vec<Value> = (0..700)
        .map(|i| {
            event(
                "acme",
                &format!("big-{i}"),
                "kms.secrets.wrap",
                "success",
                "t",
            )
        })
        .collect();
    let r = post_json(&server, "/v1/events", &Value::Array(batch));
    assert_eq!(r.status, 413, "{}", r.text());
}

#[test]
fn kill_9_mid_ingest_loses_nothing_acknowledged_and_the_index_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    let url = server.url.clone();
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let writer = {
        let acked = acked.clone();
        std::thread::spawn(move || {
            for n in 0.. {
                let batch: Vec<Value> = (0..50)
                    .map(|i| {
                        event(
                            "acme",
                            &format!("k-{n}-{i}"),
                            "kms.secrets.wrap",
                            "success",
                            "t",
                        )
                    })
                    .collect();
                let r = ureq::post(&format!("{url}/v1/events"))
                    .set("Authorization", &format!("Bearer {ADMIN_KEY}"))
                    .set("Content-Type", "application/json")
                    .send_string(&serde_json::to_string(&batch).unwrap());
                match r {
                    Ok(resp) if resp.status() == 200 => {
                        acked
                            .lock()
                            .unwrap()
                            .extend(batch.iter().map(|e| e["id"].as_str().unwrap().to_string()));
                    }
                    _ => return,
                }
            }
        })
    };
    while acked.lock().unwrap().len() < 2_000 {
        std::thread::sleep(Duration::from_millis(5));
    }
    server.kill9();
    writer.join().unwrap();
    let acked = acked.lock().unwrap().clone();

    let out = Command::new(env!("CARGO_BIN_EXE_trailkeep"))
        .args(["verify", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "verify after kill -9: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    let server = Server::start(&data, &[]);
    let agg = get(&server, "/v1/aggregate?q=account:acme").json();
    let total = agg["total"].as_u64().unwrap() as usize;
    assert!(
        total >= acked.len(),
        "index caught up: {total} indexed, {} acknowledged",
        acked.len()
    );
    for id in acked.iter().step_by(97) {
        let r = get(&server, &format!("/v1/events/{id}"));
        assert_eq!(r.status, 200, "acknowledged {id} survives kill -9");
    }
    // Resending acknowledged events after the restart is idempotent.
    let batch: Vec<Value> = acked[..10]
        .iter()
        .map(|id| event("acme", id, "kms.secrets.wrap", "success", "t"))
        .collect();
    let r = post_json(&server, "/v1/events", &Value::Array(batch));
    assert!(
        r.json()["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["duplicate"] == true),
        "{}",
        r.text()
    );
}

#[test]
fn live_tail_streams_new_matching_events() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let url = format!(
        "{}/v1/events/stream?q={}&from=2026-01-01",
        server.url,
        enc("outcome:failure")
    );
    let response = ureq::get(&url)
        .set("Authorization", &format!("Bearer {ADMIN_KEY}"))
        .call()
        .unwrap();
    assert!(
        response
            .header("Content-Type")
            .unwrap_or_default()
            .starts_with("text/event-stream")
    );
    let mut reader = BufReader::new(response.into_reader());
    post_json(
        &server,
        "/v1/events",
        &json!([
            event("acme", "t-1", "kms.secrets.unwrap", "success", "t"),
            event("acme", "t-2", "kms.secrets.unwrap", "failure", "t"),
        ]),
    );
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut data = None;
    while Instant::now() < deadline {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(d) = line.strip_prefix("data:") {
            data = Some(serde_json::from_str::<Value>(d.trim()).unwrap());
            break;
        }
    }
    let item = data.expect("a streamed event");
    assert_eq!(item["event"]["id"], "t-2");
}

#[test]
fn openapi_lists_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let r = request(
        "GET",
        &format!("{}/openapi.json", server.url),
        None,
        &[],
        None,
    );
    assert_eq!(r.status, 200);
    let doc = r.json();
    let paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for p in [
        "/v1/events",
        "/v1/ingest/kubernetes",
        "/v1/ingest/openstack",
        "/v1/events/stream",
        "/v1/events/{id}",
        "/v1/objects/{targetId}/timeline",
        "/v1/aggregate",
        "/v1/views",
        "/v1/views/{id}",
        "/v1/alerts",
        "/v1/alerts/{id}",
        "/v1/alerts/{id}/history",
        "/v1/alerts/{id}/test",
        "/v1/log/key",
        "/v1/log/{account}/checkpoint",
        "/v1/log/{account}/tile/{path}",
        "/v1/log/{account}/proof/inclusion",
        "/v1/log/{account}/proof/consistency",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(paths.contains(&p), "{p} documented");
    }
    // And every documented path answers something other than the router's 404.
    for p in paths.iter().filter(|p| !p.ends_with("/stream")) {
        let concrete = p
            .replace("{id}", "x")
            .replace("{targetId}", "x")
            .replace("{account}", "acme")
            .replace("{path}", "0/000");
        let r = request(
            "GET",
            &format!("{}{concrete}", server.url),
            Some(ADMIN_KEY),
            &[],
            None,
        );
        assert!(
            !(r.status == 404 && r.text().contains("no such route")),
            "{p} is routed: {} {}",
            r.status,
            r.text()
        );
    }
    let r = request("GET", &format!("{}/metrics", server.url), None, &[], None);
    assert!(r.text().contains("trailkeep_ingest_queue_depth"));
}

#[test]
fn reindex_rebuilds_the_index_from_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    let batch: Vec<Value> = (0..120)
        .map(|i| {
            event(
                "acme",
                &format!("r-{i}"),
                "kms.secrets.wrap",
                "success",
                "t",
            )
        })
        .collect();
    assert_eq!(
        post_json(&server, "/v1/events", &Value::Array(batch)).status,
        200
    );
    server.stop();

    // Throw the index away entirely; the ledger alone rebuilds it.
    std::fs::remove_dir_all(data.join("index")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_trailkeep"))
        .args(["reindex", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("reindexed 120 events"));

    let server = Server::start(&data, &[]);
    let agg = get(&server, "/v1/aggregate?q=account:acme").json();
    assert_eq!(agg["total"], 120);
}

/// Once events are searchable the server no longer holds their ids exactly (they move to a
/// compact filter), and a retry is then answered from the index: still the original position.
#[test]
fn retries_of_events_already_searchable_answer_their_original_positions() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let batch = |ids: std::ops::Range<u32>| {
        Value::Array(
            ids.map(|n| {
                event(
                    "acct-r",
                    &format!("r-{n}"),
                    "kms.secrets.wrap",
                    "success",
                    "t",
                )
            })
            .collect(),
        )
    };
    let first = post_json(&server, "/v1/events", &batch(0..50)).json();
    let (found, _) = wait_for(&server, "account:acct-r AND NOT action:trailkeep.*", 50);
    assert_eq!(found.len(), 50);
    // Another request after the index commit lets the server move those ids on.
    assert_eq!(
        post_json(&server, "/v1/events", &batch(100..101)).status,
        200
    );
    let again = post_json(&server, "/v1/events", &batch(0..60)).json();
    assert_eq!(again["accepted"], 60, "{again}");
    for n in 0..60 {
        let r = &again["results"][n];
        if n < 50 {
            assert_eq!(r["duplicate"], true, "{r}");
            assert_eq!(r["index"], first["results"][n]["index"], "{r}");
        } else {
            assert_eq!(r["duplicate"], false, "{r}");
        }
    }
    let (found, _) = wait_for(&server, "account:acct-r AND NOT action:trailkeep.*", 61);
    assert_eq!(found.len(), 61);
    // The retries were answered from the index.
    let metrics = request("GET", &format!("{}/metrics", server.url), None, &[], None).text();
    let lookups: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("trailkeep_ingest_id_lookups_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(lookups >= 50, "{lookups} index lookups");
}

/// `/metrics` shows how long ingest requests waited for the index and how long index commits
/// took, by part: one hold-back observation per ingest request, one observation of each part per
/// commit.
#[test]
fn metrics_time_the_hold_back_of_every_ingest_request_and_every_index_commit() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let metric = |name: &str| -> f64 {
        let text = request("GET", &format!("{}/metrics", server.url), None, &[], None).text();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
            .trim()
            .parse()
            .unwrap()
    };
    let held_before = metric("trailkeep_ingest_held_back_seconds_count");
    for n in 0..3 {
        let batch = Value::Array(
            (0..20)
                .map(|i| {
                    event(
                        "acct-m",
                        &format!("m-{n}-{i}"),
                        "kms.secrets.wrap",
                        "success",
                        "t",
                    )
                })
                .collect(),
        );
        assert_eq!(post_json(&server, "/v1/events", &batch).status, 200);
    }
    let (found, _) = wait_for(&server, "account:acct-m", 60);
    assert_eq!(found.len(), 60);
    assert_eq!(
        metric("trailkeep_ingest_held_back_seconds_count") - held_before,
        3.0,
        "one observation per ingest request"
    );
    assert!(metric("trailkeep_ingest_held_back_seconds_sum") >= 0.0);
    for part in ["index", "objects", "reload"] {
        assert!(
            metric(&format!(
                "trailkeep_index_commit_seconds_count{{part=\"{part}\"}}"
            )) >= 1.0,
            "the {part} part of the commit that made the events searchable was timed"
        );
    }
    assert!(metric("trailkeep_index_commit_seconds_sum{part=\"index\"}") > 0.0);
}
