//! Alerts (issue #6) end to end: the real server, real receivers on loopback started by the test
//! (an HTTP server that records requests and checks signatures, one that fails before it succeeds,
//! a real SMTP server), restarts with pending deliveries.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::server::{ADMIN_KEY, Server, event, request};
use crate::views::{MANAGER_ACME, READER_ACME, READER_BETA, call, write_keys};

pub const SECRET: &str = "webhook-secret-0123456789";

/// One request a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A loopback HTTP server that records every request and answers 500 to the first `fail_first`
/// requests, 200 after.
pub struct Receiver {
    pub url: String,
    pub requests: Arc<Mutex<Vec<Received>>>,
    /// Requests still to be answered 500.
    pub fail_first: Arc<AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Receiver {
    pub fn start(fail_first: usize) -> Receiver {
        Receiver::start_on(TcpListener::bind("127.0.0.1:0").unwrap(), fail_first)
    }

    pub fn start_on(listener: TcpListener, fail_first: usize) -> Receiver {
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let fail = Arc::new(AtomicUsize::new(fail_first));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        {
            let (requests, fail, stop) = (requests.clone(), fail.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (requests, fail) = (requests.clone(), fail.clone());
                            std::thread::spawn(move || serve_one(stream, &requests, &fail));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
        }
        Receiver {
            url: format!("http://127.0.0.1:{port}"),
            requests,
            fail_first: fail,
            stop,
        }
    }

    pub fn received(&self, path: &str) -> Vec<Received> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Waits (at most 20 s) until `path` got `n` requests that were answered 200.
    pub fn wait_for(&self, path: &str, n: usize) -> Vec<Received> {
        let started = Instant::now();
        loop {
            let got = self.received(path);
            if got.len() >= n || started.elapsed() > Duration::from_secs(20) {
                return got;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve_one(stream: TcpStream, requests: &Mutex<Vec<Received>>, fail: &AtomicUsize) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut headers = Vec::new();
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap();
            }
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).unwrap();
    let failing = fail
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let mut stream = stream;
    if failing {
        let _ = stream.write_all(
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 11\r\nConnection: close\r\n\r\nnot now, 5",
        );
        return;
    }
    requests.lock().unwrap().push(Received {
        path,
        headers,
        body,
        at: Instant::now(),
    });
    let _ =
        stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
}

/// Checks `X-Trailkeep-Signature` the way a receiver should (README: webhook signature).
pub fn verify_signature(r: &Received, secret: &str) {
    let ts = r.header("X-Trailkeep-Timestamp").expect("timestamp header");
    let sig = r.header("X-Trailkeep-Signature").expect("signature header");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(&r.body);
    let expected = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(sig, expected, "the signature verifies");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let ts: i64 = ts.parse().unwrap();
    assert!((now - ts).abs() < 300, "a fresh timestamp");
    // A tampered body does not verify.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{ts}.").as_bytes());
    mac.update(&[r.body.as_slice(), b" "].concat());
    assert_ne!(
        sig,
        format!("v1={}", hex::encode(mac.finalize().into_bytes()))
    );
}

pub fn recent(mut e: Value) -> Value {
    e["eventTime"] = json!(
        time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    );
    e
}

pub const TARGET: &str = "crn:v1:bluemix:public:codeengine:us-south:a/acme:p1:application:web";

/// Ingests and returns when the server acknowledged.
pub fn ingest_at(server: &Server, events: &[Value]) -> Instant {
    crate::views::ingest(server, events);
    Instant::now()
}

pub fn create_view(server: &Server, query: &str) -> String {
    let (status, view) = call(
        server,
        MANAGER_ACME,
        "POST",
        "/v1/views",
        Some(&json!({"name": format!("view of {query}"), "account": "acme", "query": query})),
    );
    assert_eq!(status, 201, "{view}");
    view["id"].as_str().unwrap().to_string()
}

pub fn create_rule(server: &Server, body: Value) -> String {
    let (status, rule) = call(server, MANAGER_ACME, "POST", "/v1/alerts", Some(&body));
    assert_eq!(status, 201, "{rule}");
    rule["id"].as_str().unwrap().to_string()
}

pub fn history(server: &Server, rule: &str) -> Value {
    let (status, h) = call(
        server,
        READER_ACME,
        "GET",
        &format!("/v1/alerts/{rule}/history"),
        None,
    );
    assert_eq!(status, 200, "{h}");
    h
}

/// Waits (at most 20 s) until the rule's history holds an entry of `kind`.
pub fn wait_history(server: &Server, rule: &str, kind: &str, n: usize) -> Value {
    let started = Instant::now();
    loop {
        let h = history(server, rule);
        let count = h["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == kind)
            .count();
        if count >= n || started.elapsed() > Duration::from_secs(20) {
            return h;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kinds(h: &Value) -> Vec<String> {
    let mut k: Vec<String> = h["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    k.reverse(); // oldest first
    k
}

fn start(data: &Path, extra: &[&str]) -> Server {
    let mut args = vec![
        "--alert-retry-initial",
        "100ms",
        "--alert-retry-max",
        "400ms",
        // The receivers of these tests listen on loopback, which notifications may not reach
        // by default.
        "--notify-allow-networks",
        "127.0.0.1/32",
    ];
    args.extend_from_slice(extra);
    Server::start(data, &args)
}

#[test]
fn presence_fires_signed_webhook_slack_and_pagerduty_with_history_test_send_and_authorisation() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_keys(&data);
    let server = start(&data, &[]);
    let rx = Receiver::start(0);
    let view = create_view(
        &server,
        "action:codeengine.application.delete AND outcome:failure",
    );

    // Validation names each problem's path.
    let (status, bad) = call(
        &server,
        MANAGER_ACME,
        "POST",
        "/v1/alerts",
        Some(&json!({
            "name": "x", "viewId": view,
            "condition": {"type": "absence", "threshold": 0, "window": "7m"},
            "channels": [{"type": "webhook", "url": "ftp://x", "secret": "short"}, {"type": "email", "to": ["not-an-address"]}],
        })),
    );
    assert_eq!(status, 422, "{bad}");
    let paths: Vec<&str> = bad["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "condition.threshold",
            "channels[0].url",
            "channels[0].secret",
            "channels[1].to[0]"
        ],
        "{bad}"
    );

    let body = json!({
        "name": "application deleted after a failure",
        "viewId": view,
        "condition": {"type": "presence", "threshold": 1},
        "channels": [
            {"type": "webhook", "url": format!("{}/hook", rx.url), "secret": SECRET},
            {"type": "slack", "url": format!("{}/slack", rx.url)},
            {"type": "pagerduty", "url": format!("{}/pd", rx.url), "routingKey": "R0UTING-KEY-1"},
        ],
    });
    let (status, _) = call(&server, READER_ACME, "POST", "/v1/alerts", Some(&body));
    assert_eq!(status, 403, "a reader cannot create rules");
    let rule = create_rule(&server, body);

    // Secrets are write-only; another account's reader sees nothing.
    let (_, shown) = call(
        &server,
        READER_ACME,
        "GET",
        &format!("/v1/alerts/{rule}"),
        None,
    );
    assert!(
        !shown.to_string().contains(SECRET) && !shown.to_string().contains("R0UTING"),
        "{shown}"
    );
    let (s1, b1) = call(
        &server,
        READER_BETA,
        "GET",
        &format!("/v1/alerts/{rule}"),
        None,
    );
    let (s2, b2) = call(&server, READER_BETA, "GET", "/v1/alerts/alert_nosuch", None);
    assert_eq!((s1, &b1), (s2, &b2));
    assert_eq!(s1, 404);
    let (_, list) = call(&server, READER_BETA, "GET", "/v1/alerts", None);
    assert_eq!(list["alerts"], json!([]));
    let (status, _) = call(
        &server,
        READER_BETA,
        "GET",
        &format!("/v1/alerts/{rule}/history"),
        None,
    );
    assert_eq!(status, 404);

    // A non-matching event, then a matching one: one notification per channel.
    ingest_at(
        &server,
        &[recent(event(
            "acme",
            "ok-1",
            "codeengine.application.delete",
            "success",
            TARGET,
        ))],
    );
    let acked = ingest_at(
        &server,
        &[recent(event(
            "acme",
            "bad-1",
            "codeengine.application.delete",
            "failure",
            TARGET,
        ))],
    );
    let hooks = rx.wait_for("/hook", 1);
    assert_eq!(hooks.len(), 1, "the webhook was called");
    println!(
        "presence alert: ack → webhook received in {} ms",
        hooks[0].at.saturating_duration_since(acked).as_millis()
    );
    let hook = &hooks[0];
    verify_signature(hook, SECRET);
    let n = hook.json();
    assert_eq!(hook.header("X-Trailkeep-Notification-Id"), n["id"].as_str());
    assert_eq!(n["rule"]["id"], rule.as_str());
    assert_eq!(n["view"]["id"], view.as_str());
    assert_eq!(n["account"], "acme");
    assert_eq!(n["count"], 1);
    assert_eq!(n["kind"], "fired");
    assert_eq!(n["condition"]["type"], "presence");
    let events = n["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event"]["id"], "bad-1");
    assert_eq!(events[0]["account"], "acme");

    let slack = rx.wait_for("/slack", 1);
    let s = slack[0].json();
    assert!(
        s["text"]
            .as_str()
            .unwrap()
            .contains("application deleted after a failure"),
        "{s}"
    );
    assert!(
        s["blocks"][0]["text"]["text"]
            .as_str()
            .unwrap()
            .contains("codeengine.application.delete"),
        "{s}"
    );
    let pd = rx.wait_for("/pd", 1);
    let p = pd[0].json();
    assert_eq!(p["routing_key"], "R0UTING-KEY-1");
    assert_eq!(p["event_action"], "trigger");
    assert_eq!(p["dedup_key"], n["id"]);
    assert_eq!(p["payload"]["source"], "trailkeep");
    assert!(["critical", "warning"].contains(&p["payload"]["severity"].as_str().unwrap()));
    assert_eq!(
        p["payload"]["custom_details"]["events"][0]["event"]["id"],
        "bad-1"
    );

    let h = wait_history(&server, &rule, "delivered", 3);
    assert_eq!(
        kinds(&h),
        ["fired", "delivered", "delivered", "delivered"],
        "{h}"
    );
    assert_eq!(h["history"][0]["notificationId"], n["id"]);

    // Test-send to one channel, then all.
    let (status, t) = call(
        &server,
        MANAGER_ACME,
        "POST",
        &format!("/v1/alerts/{rule}/test?channel=0"),
        None,
    );
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["results"].as_array().unwrap().len(), 1);
    assert_eq!(t["results"][0]["ok"], true, "{t}");
    let hooks = rx.wait_for("/hook", 2);
    assert_eq!(hooks[1].json()["kind"], "test");
    verify_signature(&hooks[1], SECRET);
    let (_, t) = call(
        &server,
        MANAGER_ACME,
        "POST",
        &format!("/v1/alerts/{rule}/test"),
        None,
    );
    assert_eq!(t["results"].as_array().unwrap().len(), 3, "{t}");
    let (status, _) = call(
        &server,
        READER_ACME,
        "POST",
        &format!("/v1/alerts/{rule}/test"),
        None,
    );
    assert_eq!(status, 403);

    // The view cannot be deleted while the rule uses it; the rule can.
    let (status, _) = call(
        &server,
        MANAGER_ACME,
        "DELETE",
        &format!("/v1/views/{view}"),
        None,
    );
    assert_eq!(status, 409);
    let (status, _) = call(
        &server,
        MANAGER_ACME,
        "DELETE",
        &format!("/v1/alerts/{rule}"),
        None,
    );
    assert_eq!(status, 204);
    ingest_at(
        &server,
        &[recent(event(
            "acme",
            "bad-2",
            "codeengine.application.delete",
            "failure",
            TARGET,
        ))],
    );
    let (status, _) = call(
        &server,
        ADMIN_KEY,
        "GET",
        &format!("/v1/alerts/{rule}"),
        None,
    );
    assert_eq!(status, 404);
    let metrics = request("GET", &format!("{}/metrics", server.url), None, &[], None).text();
    for line in [
        "trailkeep_alert_notifications_total{result=\"fired\"} 1",
        "trailkeep_alert_notifications_total{result=\"delivered\"} 3",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    assert!(
        metrics.contains("trailkeep_alert_records_total"),
        "{metrics}"
    );
    server.stop();
    // The fire and two test sends; nothing after the rule was deleted.
    assert_eq!(rx.received("/hook").len(), 3);
}

#[test]
fn presence_threshold_in_a_window_renotify_and_mute() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_keys(&data);
    let server = start(&data, &[]);
    let rx = Receiver::start(0);
    let hook = |path: &str| json!([{"type": "webhook", "url": format!("{}{path}", rx.url), "secret": SECRET}]);
    let failures = create_view(&server, "outcome:failure");
    let three = create_rule(
        &server,
        json!({
            "name": "three failures in 30 s", "viewId": failures,
            "condition": {"type": "presence", "threshold": 3, "window": "30s"}, "channels": hook("/three"),
        }),
    );
    let again = create_rule(
        &server,
        json!({
            "name": "failures, re-notified every second", "viewId": failures,
            "condition": {"type": "presence", "threshold": 1, "window": "30s"}, "renotify": "1s",
            "channels": hook("/again"),
        }),
    );
    let muted = create_rule(
        &server,
        json!({
            "name": "muted", "viewId": failures,
            "condition": {"type": "presence", "threshold": 1}, "channels": hook("/muted"),
        }),
    );
    let (status, m) = call(
        &server,
        MANAGER_ACME,
        "PATCH",
        &format!("/v1/alerts/{muted}"),
        Some(&json!({"muteFor": "1h"})),
    );
    assert_eq!(status, 200, "{m}");
    assert!(m["mutedUntil"].is_string());

    let fail = |id: &str| {
        recent(event(
            "acme",
            id,
            "codeengine.application.create",
            "failure",
            TARGET,
        ))
    };
    ingest_at(&server, &[fail("f-1")]);
    ingest_at(&server, &[fail("f-2")]);
    wait_history(&server, &muted, "muted", 2);
    assert!(
        rx.received("/three").is_empty(),
        "two failures are below the threshold"
    );
    ingest_at(&server, &[fail("f-3")]);
    let three_hooks = rx.wait_for("/three", 1);
    let n = three_hooks[0].json();
    assert_eq!(
        (n["count"].as_u64(), n["window"].as_str()),
        (Some(3), Some("30s"))
    );
    let ids: Vec<&str> = n["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["f-3", "f-2", "f-1"], "newest first");
    // The condition persists: a fourth failure does not notify again (no re-notify asked).
    ingest_at(&server, &[fail("f-4")]);

    // Re-notify: the first notification, then another while it still holds.
    let again_hooks = rx.wait_for("/again", 2);
    assert_eq!(again_hooks.len(), 2);
    assert_eq!(again_hooks[0].json()["kind"], "fired");
    assert_eq!(again_hooks[1].json()["kind"], "renotify");
    assert_ne!(again_hooks[0].json()["id"], again_hooks[1].json()["id"]);

    // Muted: recorded, never sent. Unmuting sends the next one.
    let h = history(&server, &muted);
    assert!(kinds(&h).iter().all(|k| k == "muted"), "{h}");
    assert!(
        h["history"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("muted until")
    );
    let (status, _) = call(
        &server,
        MANAGER_ACME,
        "PATCH",
        &format!("/v1/alerts/{muted}"),
        Some(&json!({"mutedUntil": null})),
    );
    assert_eq!(status, 200);
    ingest_at(&server, &[fail("f-5")]);
    let muted_hooks = rx.wait_for("/muted", 1);
    assert_eq!(muted_hooks.len(), 1);
    assert_eq!(muted_hooks[0].json()["events"][0]["event"]["id"], "f-5");

    server.stop();
    assert_eq!(
        rx.received("/three").len(),
        1,
        "one notification while the condition held"
    );
    let _ = three;
    let _ = again;
}

#[test]
fn absence_fires_when_an_active_view_goes_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_keys(&data);
    let server = start(&data, &[]);
    let rx = Receiver::start(0);
    // The view was active (one event) before the rule existed: the rule learns it from the
    // index, and fires once it has watched a whole quiet window.
    ingest_at(
        &server,
        &[recent(event(
            "acme",
            "c-1",
            "codeengine.application.create",
            "success",
            TARGET,
        ))],
    );
    crate::server::wait_for(&server, "id:c-1", 1);
    let view = create_view(&server, "action:codeengine.application.create");
    let rule = create_rule(
        &server,
        json!({
            "name": "code engine stopped sending", "viewId": view,
            "condition": {"type": "absence", "threshold": 1, "window": "30s"},
            "channels": [{"type": "webhook", "url": format!("{}/quiet", rx.url), "secret": SECRET}],
        }),
    );
    // A view that never had events does not fire.
    let idle = create_view(&server, "action:codeengine.nothing.ever");
    let idle_rule = create_rule(
        &server,
        json!({
            "name": "never active", "viewId": idle,
            "condition": {"type": "absence", "threshold": 1, "window": "30s"},
            "channels": [{"type": "webhook", "url": format!("{}/idle", rx.url), "secret": SECRET}],
        }),
    );
    let started = Instant::now();
    let got = loop {
        let got = rx.received("/quiet");
        if !got.is_empty() || started.elapsed() > Duration::from_secs(60) {
            break got;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(got.len(), 1, "absence fired once");
    let n = got[0].json();
    verify_signature(&got[0], SECRET);
    assert_eq!(n["condition"]["type"], "absence");
    assert_eq!(n["count"], 0);
    assert_eq!(n["events"][0]["event"]["id"], "c-1", "the last event seen");
    let h = wait_history(&server, &rule, "delivered", 1);
    assert_eq!(kinds(&h), ["fired", "delivered"]);
    assert!(rx.received("/idle").is_empty());
    assert_eq!(history(&server, &idle_rule)["history"], json!([]));
}

#[test]
fn failed_deliveries_are_retried_with_backoff_then_delivered_or_given_up() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_keys(&data);
    let server = start(&data, &["--alert-give-up-after", "2s"]);
    let flaky = Receiver::start(3);
    // Port 1 (tcpmux): nothing listens there, and no test binds it.
    let dead = 1;
    let view = create_view(&server, "severity:critical");
    let rule = create_rule(
        &server,
        json!({
            "name": "critical", "viewId": view, "condition": {"type": "presence", "threshold": 1},
            "channels": [
                {"type": "webhook", "url": format!("{}/flaky", flaky.url), "secret": SECRET},
                {"type": "slack", "url": format!("http://127.0.0.1:{dead}/nobody")},
            ],
        }),
    );
    let mut e = recent(event(
        "acme",
        "crit-1",
        "codeengine.application.delete",
        "failure",
        TARGET,
    ));
    e["severity"] = json!("critical");
    ingest_at(&server, &[e]);
    let got = flaky.wait_for("/flaky", 1);
    assert_eq!(got.len(), 1, "delivered after three failures");
    verify_signature(&got[0], SECRET);
    let h = wait_history(&server, &rule, "failed", 1);
    let entries = h["history"].as_array().unwrap();
    let webhook: Vec<&Value> = entries
        .iter()
        .filter(|e| e["channel"] == "webhook#0")
        .collect();
    let webhook_kinds: Vec<&str> = webhook
        .iter()
        .rev()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        webhook_kinds,
        ["retrying", "retrying", "retrying", "delivered"],
        "{h}"
    );
    assert!(
        webhook
            .iter()
            .all(|e| e["notificationId"] == got[0].json()["id"]),
        "one id for every attempt"
    );
    assert!(
        webhook[1]["reason"].as_str().unwrap().contains("500"),
        "{h}"
    );
    assert_eq!(webhook[0]["attempts"], 4);
    let failed = entries.iter().find(|e| e["kind"] == "failed").unwrap();
    assert_eq!(failed["channel"], "slack#1");
    assert!(
        failed["reason"].as_str().unwrap().contains("gave up"),
        "{failed}"
    );
    assert!(
        entries
            .iter()
            .filter(|e| e["channel"] == "slack#1" && e["kind"] == "retrying")
            .count()
            >= 2,
        "{h}"
    );
    assert_eq!(history(&server, &rule)["pending"], json!([]));
}

#[test]
fn a_pending_delivery_survives_a_restart_and_a_crash_loses_no_notification() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_keys(&data);
    // The receiver fails every request while the rule fires.
    let rx = Receiver::start(usize::MAX);
    let server = start(&data, &[]);
    let view = create_view(&server, "outcome:failure");
    let rule = create_rule(
        &server,
        json!({
            "name": "failures", "viewId": view, "condition": {"type": "presence", "threshold": 1},
            "channels": [{"type": "webhook", "url": format!("{}/late", rx.url), "secret": SECRET}],
        }),
    );
    ingest_at(
        &server,
        &[recent(event(
            "acme",
            "p-1",
            "codeengine.application.create",
            "failure",
            TARGET,
        ))],
    );
    let h = wait_history(&server, &rule, "retrying", 1);
    let pending = h["pending"].as_array().unwrap().clone();
    assert_eq!(pending.len(), 1, "{h}");
    let id = pending[0]["notificationId"].as_str().unwrap().to_string();
    server.stop();

    // The receiver recovers; the restarted server delivers the pending notification.
    rx.fail_first.store(0, Ordering::SeqCst);
    let server = start(&data, &[]);
    let got = rx.wait_for("/late", 1);
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].json()["id"],
        id.as_str(),
        "the same notification id after the restart"
    );
    assert_eq!(
        got[0].header("X-Trailkeep-Notification-Id"),
        Some(id.as_str())
    );

    // kill -9 right after an acknowledged event: whatever the evaluator had done, the restart
    // replays the ledger from its saved position and the notification arrives.
    ingest_at(
        &server,
        &[recent(event(
            "acme",
            "p-2",
            "codeengine.application.create",
            "failure",
            TARGET,
        ))],
    );
    server.kill9();
    let server = start(&data, &[]);
    let got = rx.wait_for("/late", 2);
    let ids: std::collections::BTreeSet<String> = got
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2, "p-2 notified (at least once)");
    assert!(
        got.iter()
            .any(|r| r.json()["events"][0]["event"]["id"] == "p-2")
    );
    server.stop();

    // Replaying records the evaluator had already seen (its saved position rewound, as after a
    // crash before the state write) queues nothing twice: the fires have the same ids.
    let state_path = data.join("alerts/state.json");
    let mut state: Value = serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    state["positions"]["acme"] = json!(0);
    std::fs::write(&state_path, state.to_string()).unwrap();
    let before = rx.received("/late").len();
    let server = start(&data, &[]);
    ingest_at(
        &server,
        &[recent(event(
            "acme",
            "p-3",
            "codeengine.application.create",
            "failure",
            TARGET,
        ))],
    );
    let got = rx.wait_for("/late", before + 1);
    std::thread::sleep(Duration::from_millis(500));
    let got_now = rx.received("/late");
    assert_eq!(
        got_now.len(),
        before + 1,
        "only p-3 is new: {:?}",
        got.iter()
            .map(|r| r.json()["events"][0]["event"]["id"].clone())
            .collect::<Vec<_>>()
    );
    server.stop();
}

/// Python with aiosmtpd, installed by `scripts/test` (TRAILKEEP_TEST_SMTP_PYTHON).
fn smtp_python() -> PathBuf {
    if let Ok(p) = std::env::var("TRAILKEEP_TEST_SMTP_PYTHON") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let p = PathBuf::from(home).join(".cache/trailkeep-ci/venv-smtp/bin/python");
    assert!(
        p.exists(),
        "the SMTP test server needs Python with aiosmtpd: run ./scripts/test once (it installs it) or set TRAILKEEP_TEST_SMTP_PYTHON"
    );
    p
}

const SMTP_SERVER: &str = r#"
import json, os, ssl, sys
from aiosmtpd.controller import Controller
port, cert, key, outdir = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
class Handler:
    async def handle_DATA(self, server, session, envelope):
        n = len([f for f in os.listdir(outdir) if f.endswith(".json")])
        tmp = os.path.join(outdir, "tmp")
        with open(tmp, "w") as f:
            json.dump({"tls": session.ssl is not None, "from": envelope.mail_from,
                       "to": envelope.rcpt_tos,
                       "data": envelope.content.decode("utf8", "replace")}, f)
        os.rename(tmp, os.path.join(outdir, "%d.json" % n))
        return "250 OK"
ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert, key)
c = Controller(Handler(), hostname="127.0.0.1", port=port, tls_context=ctx, require_starttls=True)
c.start()
print("ready", flush=True)
sys.stdin.read()
c.stop()
"#;

#[test]
fn email_goes_through_a_real_smtp_server_with_starttls() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let cert_path = dir.path().join("smtp.pem");
    let key_path = dir.path().join("smtp.key");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let script = dir.path().join("smtp_server.py");
    std::fs::write(&script, SMTP_SERVER).unwrap();
    let mail = dir.path().join("mail");
    std::fs::create_dir_all(&mail).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut smtp = std::process::Command::new(smtp_python())
        .arg(&script)
        .args([port.to_string().as_str()])
        .arg(&cert_path)
        .arg(&key_path)
        .arg(&mail)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        // The refused handshake at the end logs a traceback; it is expected.
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the SMTP server starts");
    let mut ready = String::new();
    BufReader::new(smtp.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "ready");

    let data = dir.path().join("data");
    write_keys(&data);
    let smtp_url = format!("smtp://127.0.0.1:{port}");
    let server = start(
        &data,
        &[
            "--smtp-url",
            &smtp_url,
            "--smtp-from",
            "trailkeep@example.org",
            "--smtp-ca-cert",
            cert_path.to_str().unwrap(),
        ],
    );
    let view = create_view(&server, "action:codeengine.application.delete");
    let rule = create_rule(
        &server,
        json!({
            "name": "deletes by mail", "viewId": view, "condition": {"type": "presence", "threshold": 1},
            "channels": [{"type": "email", "to": ["secops@example.org", "audit@example.org"]}],
        }),
    );
    ingest_at(
        &server,
        &[recent(event(
            "acme",
            "m-1",
            "codeengine.application.delete",
            "success",
            TARGET,
        ))],
    );
    let h = wait_history(&server, &rule, "delivered", 1);
    assert_eq!(kinds(&h), ["fired", "delivered"], "{h}");
    let first = mail.join("0.json");
    let msg: Value = serde_json::from_slice(&std::fs::read(&first).unwrap()).unwrap();
    assert_eq!(
        msg["tls"], true,
        "STARTTLS was used (the server requires it)"
    );
    assert_eq!(msg["from"], "trailkeep@example.org");
    assert_eq!(
        msg["to"],
        json!(["secops@example.org", "audit@example.org"])
    );
    let text = msg["data"].as_str().unwrap();
    assert!(
        text.contains("Subject: Trailkeep alert \"deletes by mail\""),
        "{text}"
    );
    assert!(text.contains("m-1"), "{text}");

    // The test action reports the outcome per channel.
    let (status, t) = call(
        &server,
        MANAGER_ACME,
        "POST",
        &format!("/v1/alerts/{rule}/test"),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(t["results"][0]["ok"], true, "{t}");
    assert!(mail.join("1.json").exists());
    server.stop();

    // Without a trusted certificate, STARTTLS fails and the history says why.
    let server = start(&data, &["--smtp-url", &smtp_url]);
    let (_, t) = call(
        &server,
        MANAGER_ACME,
        "POST",
        &format!("/v1/alerts/{rule}/test"),
        None,
    );
    assert_eq!(t["results"][0]["ok"], false, "{t}");
    assert!(!t["results"][0]["error"].as_str().unwrap().is_empty());
    server.stop();
    drop(smtp.stdin.take());
    let _ = smtp.wait();
}

#[test]
fn the_alerts_cli_creates_lists_tests_mutes_shows_history_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_keys(&data);
    let server = start(&data, &[]);
    let rx = Receiver::start(0);
    let view = create_view(&server, "outcome:failure");
    let cli = |args: &[&str], stdin: &[u8]| {
        let mut full: Vec<&str> = args.to_vec();
        full.extend(["--url", &server.url, "--key", MANAGER_ACME]);
        let out = crate::trailkeep(&full, stdin);
        (
            out.status.code(),
            crate::text(&out.stdout),
            crate::text(&out.stderr),
        )
    };
    let rule = json!({
        "name": "cli rule", "viewId": view, "condition": {"type": "presence", "threshold": 1},
        "channels": [{"type": "webhook", "url": format!("{}/cli", rx.url), "secret": SECRET}],
    });
    let (code, out, err) = cli(&["alerts", "create", "-"], rule.to_string().as_bytes());
    assert_eq!(code, Some(0), "{err}");
    let id = serde_json::from_str::<Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, out, _) = cli(&["alerts", "list"], b"");
    assert_eq!(code, Some(0));
    assert!(out.contains(&id) && out.contains("presence"), "{out}");
    let (code, out, err) = cli(&["alerts", "test", &id], b"");
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("channel 0 (webhook): sent"), "{out}");
    assert_eq!(rx.wait_for("/cli", 1)[0].json()["kind"], "test");
    let (code, _, err) = cli(&["alerts", "mute", &id, "--for", "1h"], b"");
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("muted until"), "{err}");
    ingest_at(
        &server,
        &[recent(event(
            "acme",
            "cli-1",
            "codeengine.application.create",
            "failure",
            TARGET,
        ))],
    );
    wait_history(&server, &id, "muted", 1);
    let (code, out, _) = cli(&["alerts", "history", &id], b"");
    assert_eq!(code, Some(0));
    assert!(out.contains("muted") && out.contains("test"), "{out}");
    let (code, _, err) = cli(&["alerts", "mute", &id, "--off"], b"");
    assert_eq!(code, Some(0));
    assert!(err.contains("is not muted"), "{err}");
    drop(rx);
    // A channel that cannot be reached (nothing listens on port 1): the test reports it and
    // exits 1.
    let dead = 1;
    let (status, _) = call(
        &server,
        MANAGER_ACME,
        "PATCH",
        &format!("/v1/alerts/{id}"),
        Some(&json!({
            "channels": [{"type": "webhook", "url": format!("http://127.0.0.1:{dead}/x"), "secret": SECRET}],
        })),
    );
    assert_eq!(status, 200);
    let (code, out, _) = cli(&["alerts", "test", &id], b"");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("FAILED"), "{out}");
    let (code, _, _) = cli(&["alerts", "delete", &id], b"");
    assert_eq!(code, Some(0));
    let (code, _, err) = cli(&["alerts", "get", &id], b"");
    assert_ne!(code, Some(0));
    assert!(err.contains("no alert rule with this id"), "{err}");
}

#[test]
fn bench_alerts_runs_end_to_end_and_prints_its_figures() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_trailkeep"))
        .args([
            "bench",
            "alerts",
            "--events",
            "4000",
            "--rate",
            "2000",
            "--rules",
            "40",
            "--connections",
            "2",
            "--batch",
            "200",
        ])
        .current_dir(dir.path())
        .env_remove("TRAILKEEP_KEY")
        .output()
        .unwrap();
    let report = crate::text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{report}{}",
        crate::text(&out.stderr)
    );
    for line in [
        "without rules",
        "with 40    rules",
        "rule evaluation",
        "µs per record",
        "presence alerts",
        "within 2 s",
        "notifications",
    ] {
        assert!(report.contains(line), "{line:?} in {report}");
    }
    // Every probe of the rules run was notified.
    let probes = report
        .lines()
        .find(|l| l.starts_with("presence alerts"))
        .unwrap();
    let words: Vec<&str> = probes.split_whitespace().collect();
    assert_eq!(words[2], words[4], "{probes}");
    assert_ne!(words[2], "0", "{probes}");
}

/// Channel URLs come from managers: by default a notification cannot reach the server's own
/// loopback services or a cloud metadata address, whether named by address or by host name.
#[test]
fn notifications_may_not_reach_loopback_or_link_local_addresses_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_keys(&data);
    let server = Server::start(&data, &["--alert-retry-initial", "100ms"]);
    let rx = Receiver::start(0);
    let view = create_view(&server, "action:codeengine.application.delete");
    let port = rx.url.rsplit(':').next().unwrap().to_string();
    let rule = create_rule(
        &server,
        json!({
            "name": "reaching inside",
            "viewId": view,
            "condition": {"type": "presence", "threshold": 1},
            "channels": [
                {"type": "webhook", "url": format!("{}/hook", rx.url), "secret": SECRET},
                {"type": "slack", "url": format!("http://localhost:{port}/slack")},
                {"type": "pagerduty", "url": "http://169.254.169.254/latest/meta-data", "routingKey": "R0UTING-KEY-1"},
            ],
        }),
    );
    let (status, t) = call(
        &server,
        MANAGER_ACME,
        "POST",
        &format!("/v1/alerts/{rule}/test"),
        None,
    );
    assert_eq!(status, 200, "{t}");
    let results = t["results"].as_array().unwrap();
    assert_eq!(results.len(), 3, "{t}");
    for (r, why) in results.iter().zip(["loopback", "loopback", "link-local"]) {
        assert_eq!(r["ok"], false, "{t}");
        let error = r["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(why) && error.contains("--notify-allow-networks"),
            "{error}"
        );
    }
    // The answer comes after the attempts: nothing reached the receiver.
    assert!(rx.received("/hook").is_empty() && rx.received("/slack").is_empty());
}
