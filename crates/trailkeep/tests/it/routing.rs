//! Event routing by location (issue #9) end to end: three real instances on loopback
//! (`us-south`, `jp-tok`, `eu-de`), a webhook receiver and a TLS syslog receiver started by the
//! test, a target down and back (with a restart of the routing instance in between), dropped
//! events reported, and the admin-only configuration API with its validation and self-audit.

use std::collections::BTreeSet;
use std::io::{BufReader, Read};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::alerts::{Receiver, SECRET, verify_signature};
use crate::server::{ADMIN_KEY, Server, enc, event, request};
use crate::views::{MANAGER_ACME, READER_ACME, WRITER_ACME, call, write_keys};
use crate::{text, trailkeep};

// ---------------------------------------------------------------------------------------------
// A syslog receiver: RFC 6587 octet-counted frames over TCP (optionally TLS), RFC 5424 parsed.

/// One parsed RFC 5424 message.
#[derive(Debug, Clone)]
pub struct SyslogMessage {
    pub pri: u16,
    pub version: String,
    pub timestamp: String,
    pub hostname: String,
    pub app: String,
    pub procid: String,
    pub msgid: String,
    pub structured_data: String,
    pub msg: Value,
}

pub struct SyslogReceiver {
    pub address: String,
    pub messages: Arc<Mutex<Vec<SyslogMessage>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for SyslogReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Reads one octet-counted frame: `<digits> <bytes>`; `None` at a clean end of stream.
fn read_frame(r: &mut impl Read) -> Option<Vec<u8>> {
    let mut len = 0usize;
    let mut digits = 0;
    loop {
        let mut b = [0u8; 1];
        if r.read(&mut b).ok()? == 0 {
            assert_eq!(digits, 0, "the stream ended inside a frame length");
            return None;
        }
        match b[0] {
            b'0'..=b'9' if digits < 9 => {
                len = len * 10 + usize::from(b[0] - b'0');
                digits += 1;
            }
            b' ' if digits > 0 => break,
            other => panic!("not an octet-counted frame: byte {other:#x} after {digits} digits"),
        }
    }
    assert!(len <= 1 << 20, "frame of {len} bytes");
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).expect("a whole frame");
    Some(buf)
}

/// Parses `<PRI>VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG` (one SD element).
fn parse_5424(bytes: &[u8]) -> SyslogMessage {
    let text = std::str::from_utf8(bytes).expect("UTF-8");
    let rest = text.strip_prefix('<').expect("<PRI>");
    let (pri, rest) = rest.split_once('>').expect("<PRI>");
    let mut fields = rest.splitn(7, ' ');
    let mut next = || fields.next().expect("a header field").to_string();
    let (version, timestamp, hostname, app, procid, msgid) =
        (next(), next(), next(), next(), next(), next());
    let rest = fields.next().expect("structured data and message");
    assert!(rest.starts_with('['), "one SD element: {rest}");
    let mut end = None;
    let mut escaped = false;
    for (i, c) in rest.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            ']' => {
                end = Some(i);
                break;
            }
            _ => {}
        }
    }
    let end = end.expect("the SD element ends");
    let msg = rest[end + 1..]
        .strip_prefix(' ')
        .expect("a space before MSG");
    SyslogMessage {
        pri: pri.parse().expect("numeric PRI"),
        version,
        timestamp,
        hostname,
        app,
        procid,
        msgid,
        structured_data: rest[..=end].to_string(),
        msg: serde_json::from_str(msg).expect("the message is the event JSON"),
    }
}

fn syslog_receiver(tls: Option<Arc<rustls::ServerConfig>>) -> SyslogReceiver {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    listener.set_nonblocking(true).unwrap();
    let messages = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (messages, stop) = (messages.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                stream.set_nonblocking(false).unwrap();
                let (messages, tls) = (messages.clone(), tls.clone());
                std::thread::spawn(move || {
                    let mut reader: Box<dyn Read> = match tls {
                        Some(config) => Box::new(rustls::StreamOwned::new(
                            rustls::ServerConnection::new(config).unwrap(),
                            stream,
                        )),
                        None => Box::new(BufReader::new(stream)),
                    };
                    while let Some(frame) = read_frame(&mut reader) {
                        messages.lock().unwrap().push(parse_5424(&frame));
                    }
                });
            }
        });
    }
    SyslogReceiver {
        address,
        messages,
        stop,
    }
}

/// A TLS server config with a fresh self-signed certificate for 127.0.0.1; returns its PEM.
fn tls_config() -> (Arc<rustls::ServerConfig>, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let pem = cert.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        cert.signing_key.serialize_der(),
    ));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    (Arc::new(config), pem)
}

// ---------------------------------------------------------------------------------------------
// Helpers

pub(crate) fn admin(
    server: &Server,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    call(server, ADMIN_KEY, method, path, body)
}

pub(crate) fn created(server: &Server, path: &str, body: Value) -> Value {
    let (status, v) = admin(server, "POST", path, Some(&body));
    assert_eq!(status, 201, "{path}: {v}");
    v
}

/// An event of account acme in `location` (`global`: a CRN without location).
pub(crate) fn ev(location: &str, id: &str) -> Value {
    let mut e = event(
        "acme",
        id,
        "codeengine.application.create",
        "success",
        &format!("crn:v1:bluemix:public:codeengine:{location}:a/acme:proj-1:application:web"),
    );
    let loc = if location == "global" { "" } else { location };
    e["logSourceCRN"] = json!(format!(
        "crn:v1:bluemix:public:codeengine:{loc}:a/acme:proj-1::"
    ));
    e
}

pub(crate) fn ingest(server: &Server, events: &[Value]) -> Value {
    let (status, report) = admin(
        server,
        "POST",
        "/v1/events",
        Some(&Value::Array(events.to_vec())),
    );
    assert_eq!(status, 200, "{report}");
    report
}

/// The test's events stored on `server`, by id.
fn stored_events(server: &Server) -> std::collections::BTreeMap<String, Value> {
    let (status, page) = admin(
        server,
        "GET",
        &format!(
            "/v1/events?account=acme&limit=1000&q={}",
            enc("action:codeengine.*")
        ),
        None,
    );
    assert_eq!(status, 200, "{page}");
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["event"]["id"].as_str().unwrap().to_string(),
                i["event"].clone(),
            )
        })
        .collect()
}

/// The ids of the test's events stored (and searchable) on `server`.
fn stored(server: &Server) -> Vec<String> {
    let (status, page) = admin(
        server,
        "GET",
        &format!(
            "/v1/events?account=acme&limit=1000&q={}",
            enc("action:codeengine.*")
        ),
        None,
    );
    assert_eq!(status, 200, "{page}");
    let mut ids: Vec<String> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["event"]["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// Polls until `server` stores `want` of the test's events (at most 30 s); returns their ids.
fn wait_stored(server: &Server, want: usize) -> Vec<String> {
    let started = Instant::now();
    loop {
        let ids = stored(server);
        if ids.len() >= want || started.elapsed() > Duration::from_secs(30) {
            return ids;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls a search of one account until it returns `want` events (at most 30 s).
fn wait_search(server: &Server, account: &str, q: &str, want: usize) -> (Vec<Value>, Duration) {
    let started = Instant::now();
    loop {
        let (status, page) = admin(
            server,
            "GET",
            &format!("/v1/events?account={account}&limit=1000&q={}", enc(q)),
            None,
        );
        assert_eq!(status, 200, "{page}");
        let events = page["events"].as_array().unwrap().clone();
        if events.len() >= want || started.elapsed() > Duration::from_secs(30) {
            return (events, started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sorted(ids: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = ids.into_iter().collect();
    v.sort();
    v
}

/// The value of one metric line (`name{labels}`), 0 when absent.
pub(crate) fn metric(server: &Server, line_start: &str) -> f64 {
    let r = request("GET", &format!("{}/metrics", server.url), None, &[], None);
    r.text()
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0.0, |v| v.parse().unwrap())
}

/// A writer key of account acme on a receiving instance (the key a `trailkeep` target uses).
fn writer_key(server: &Server) -> String {
    created(
        server,
        "/v1/accounts",
        json!({"id": "acme", "name": "Acme"}),
    );
    let key = created(
        server,
        "/v1/keys",
        json!({"name": "routed from us-south", "role": "writer", "accounts": ["acme"], "forwarder": true}),
    );
    key["secret"].as_str().unwrap().to_string()
}

fn routing_instance(data: &Path) -> Server {
    Server::start(
        data,
        &[
            "--location",
            "us-south",
            "--routing-retry-initial",
            "100ms",
            "--routing-retry-max",
            "300ms",
            "--routing-report-interval",
            "300ms",
        ],
    )
}

#[test]
fn events_are_stored_where_routes_say_across_three_instances_issue_9() {
    let dir = tempfile::tempdir().unwrap();
    let jp_data = dir.path().join("jp");
    let jp = Server::start(&jp_data, &["--location", "jp-tok"]);
    let jp_listen = jp.url.trim_start_matches("http://").to_string();
    let eu = Server::start(&dir.path().join("eu"), &["--location", "eu-de"]);
    let (jp_key, eu_key) = (writer_key(&jp), writer_key(&eu));
    let (tls, ca_pem) = tls_config();
    let siem = syslog_receiver(Some(tls));
    let plain = syslog_receiver(None);
    // The webhook fails its first request: the batch is retried.
    let hook = Receiver::start(1);
    let us_data = dir.path().join("us");
    let us = routing_instance(&us_data);

    // Without configuration every event is local, whatever its location (as before routing).
    let report = ingest(&us, &[ev("jp-tok", "pre-jp")]);
    assert_eq!(report["results"][0]["index"], 0, "{report}");
    assert_eq!(wait_stored(&us, 1), ["pre-jp"]);
    let (_, settings) = admin(&us, "GET", "/v1/settings", None);
    assert_eq!(settings["location"], "us-south");
    assert_eq!(settings["defaultTargets"], json!(["local"]));
    assert_eq!(settings["defaultTargetsImplicit"], true);

    let tk_jp = created(
        &us,
        "/v1/targets",
        json!({"name": "jp-tok instance", "type": "trailkeep", "url": jp.url, "key": jp_key}),
    );
    assert_eq!(tk_jp["keySet"], true);
    assert!(
        !tk_jp.to_string().contains(&jp_key),
        "the key is never shown"
    );
    let tk_eu = created(
        &us,
        "/v1/targets",
        json!({"name": "eu-de instance", "type": "trailkeep", "url": eu.url, "key": eu_key}),
    );
    let webhook = created(
        &us,
        "/v1/targets",
        json!({"name": "jp archive", "type": "webhook", "url": format!("{}/batches", hook.url), "secret": SECRET}),
    );
    let syslog = created(
        &us,
        "/v1/targets",
        json!({"name": "SIEM", "type": "syslog", "address": siem.address, "tls": true, "caCert": ca_pem}),
    );
    let plain_syslog = created(
        &us,
        "/v1/targets",
        json!({"name": "plain syslog", "type": "syslog", "address": plain.address}),
    );
    let id = |t: &Value| t["id"].as_str().unwrap().to_string();
    let (tk_jp, tk_eu, webhook, syslog) = (id(&tk_jp), id(&tk_eu), id(&webhook), id(&syslog));
    let (status, got) = admin(&us, "GET", &format!("/v1/targets/{webhook}"), None);
    assert_eq!(status, 200);
    assert_eq!(got["secretSet"], true);
    assert!(
        !got.to_string().contains(SECRET),
        "the secret is never shown: {got}"
    );

    let (status, s) = admin(
        &us,
        "PUT",
        "/v1/settings",
        Some(&json!({"defaultTargets": [], "locationAliases": {"ap-south": "jp-tok"}})),
    );
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["defaultTargetsImplicit"], false);
    created(
        &us,
        "/v1/routes",
        json!({"name": "residency", "rules": [
            {"locations": ["us-south", "us-east", "global"], "targetIds": ["local"]},
            {"locations": ["jp-tok"], "targetIds": [tk_jp]},
            {"locations": ["eu-de"], "targetIds": [tk_eu]},
        ]}),
    );
    created(
        &us,
        "/v1/routes",
        json!({"name": "siem", "rules": [{"locations": ["us", "eu"], "targetIds": [syslog]}]}),
    );
    created(
        &us,
        "/v1/routes",
        json!({"name": "jp archive", "rules": [{"locations": ["jp-tok"], "targetIds": [webhook]}]}),
    );
    created(
        &us,
        "/v1/routes",
        json!({"name": "global events", "rules": [{"locations": ["global"], "targetIds": [id(&plain_syslog)]}]}),
    );

    // Events of many locations: (location, count, stored locally, jp, eu, webhook, syslog).
    let plan: [(&str, usize, bool, bool, bool, bool, bool); 8] = [
        ("us-south", 4, true, false, false, false, true),
        ("us-east-1", 2, true, false, false, false, true),
        ("global", 2, true, false, false, false, false),
        ("jp-tok", 3, false, true, false, true, false),
        ("ap-south", 2, false, true, false, true, false),
        ("eu-de", 3, false, false, true, false, true),
        ("eu-de-1", 1, false, false, true, false, true),
        ("br-sao", 2, false, false, false, false, false),
    ];
    let mut events = Vec::new();
    let mut expect: [Vec<String>; 5] = Default::default();
    for (loc, n, local, to_jp, to_eu, to_hook, to_siem) in plan {
        for i in 0..n {
            let id = format!("{loc}-{i}");
            events.push(ev(loc, &id));
            for (yes, list) in [local, to_jp, to_eu, to_hook, to_siem]
                .into_iter()
                .zip(expect.iter_mut())
            {
                if yes {
                    list.push(id.clone());
                }
            }
        }
    }
    let [mut local, jp_ids, eu_ids, hook_ids, siem_ids] = expect.map(sorted);
    local.push("pre-jp".into());
    let local = sorted(local);
    let report = ingest(&us, &events);
    assert_eq!(report["accepted"], 17, "{report}");
    assert_eq!(report["dropped"], 2, "{report}");
    assert_eq!(report["rejected"], 0, "{report}");
    for (e, r) in events.iter().zip(report["results"].as_array().unwrap()) {
        let id = e["id"].as_str().unwrap().to_string();
        if id.starts_with("br-sao") {
            assert_eq!(r["status"], "dropped", "{r}");
            assert!(r["reason"].as_str().unwrap().contains("br-sao"), "{r}");
        } else if local.contains(&id) {
            assert!(r["index"].is_u64(), "stored here: {r}");
        } else {
            assert!(r.get("index").is_none(), "not stored here: {r}");
            assert_eq!(r["status"], "accepted");
            assert!(!r["targets"].as_array().unwrap().is_empty(), "{r}");
        }
    }

    assert_eq!(
        wait_stored(&jp, jp_ids.len()),
        jp_ids,
        "jp-tok stores jp-tok and ap-south"
    );
    assert_eq!(
        wait_stored(&eu, eu_ids.len()),
        eu_ids,
        "eu-de stores the eu-de family"
    );
    assert_eq!(
        wait_stored(&us, local.len()),
        local,
        "us-south keeps its own"
    );

    let batches = hook.wait_for("/batches", 1);
    let mut got_hook = Vec::new();
    wait_until("the webhook batches", || {
        let batches = hook.received("/batches");
        got_hook = batches
            .iter()
            .flat_map(|b| {
                b.json()["events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["event"]["id"].as_str().unwrap().to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        got_hook.len() >= hook_ids.len()
    });
    assert_eq!(sorted(got_hook), hook_ids, "the webhook got jp events once");
    // The receiving instance stores exactly the event as normalised here (the same bytes, so
    // the same leaf hash): what the webhook got from the same outbox records.
    let at_jp = stored_events(&jp);
    for b in hook.received("/batches") {
        for e in b.json()["events"].as_array().unwrap() {
            let id = e["event"]["id"].as_str().unwrap();
            assert_eq!(at_jp[id], e["event"], "{id} stored at jp-tok as sent");
        }
        verify_signature(&b, SECRET);
        assert!(b.header("X-Trailkeep-Batch-Id").is_some());
        let body = b.json();
        assert_eq!(body["source"]["location"], "us-south");
        assert_eq!(body["events"][0]["account"], "acme");
    }
    assert!(!batches.is_empty());

    wait_until("the syslog messages", || {
        siem.messages.lock().unwrap().len() >= siem_ids.len()
    });
    let messages = siem.messages.lock().unwrap().clone();
    assert_eq!(
        sorted(
            messages
                .iter()
                .map(|m| m.msg["id"].as_str().unwrap().to_string())
        ),
        siem_ids,
        "the SIEM got the us and eu families once"
    );
    let m = messages
        .iter()
        .find(|m| m.msg["id"] == "eu-de-1-0")
        .unwrap();
    assert_eq!(
        (
            m.pri,
            m.version.as_str(),
            m.hostname.as_str(),
            m.app.as_str()
        ),
        (13 * 8 + 6, "1", "trailkeep-us-south", "trailkeep")
    );
    assert_eq!((m.procid.as_str(), m.msgid.as_str()), ("-", "cadf"));
    assert!(m.timestamp.starts_with("2026-11-20T10:00:00.123"), "{m:?}");
    assert!(
        m.structured_data.contains("account=\"acme\"")
            && m.structured_data.contains("location=\"eu-de-1\"")
            && m.structured_data.contains("id=\"eu-de-1-0\""),
        "{m:?}"
    );

    // Plain TCP syslog: events without a location.
    wait_until("the plain syslog messages", || {
        plain.messages.lock().unwrap().len() >= 2
    });
    assert_eq!(
        sorted(
            plain
                .messages
                .lock()
                .unwrap()
                .iter()
                .map(|m| m.msg["id"].as_str().unwrap().to_string())
        ),
        ["global-0", "global-1"]
    );
    assert!(
        plain.messages.lock().unwrap()[0]
            .structured_data
            .contains("location=\"global\"")
    );

    // Unmatched events are counted and reported in their account's log.
    assert_eq!(metric(&us, "trailkeep_route_dropped_events_total"), 2.0);
    let (drops, _) = wait_search(&us, "acme", "action:trailkeep.event.drop", 1);
    let drop = &drops[0]["event"];
    assert_eq!(drop["requestData"]["dropped"], 2, "{drop}");
    assert_eq!(drop["requestData"]["locations"], json!({"br-sao": 2}));
    assert_eq!(drop["outcome"], "failure");

    // The CLI counts a dropped event apart from a rejected one, and fails the run for it.
    let file = dir.path().join("br-sao.ndjson");
    std::fs::write(&file, format!("{}\n", ev("br-sao", "br-sao-cli"))).unwrap();
    let (code, _, err) = cli(&us, &["send", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("0 rejected, 1 dropped by routing"),
        "dropped is its own count: {err}"
    );
    assert!(err.contains("dropped "), "and each is reported: {err}");

    // jp-tok goes down; events for it wait in the outbox (also sent twice by a retrying client).
    jp.stop();
    let outage: Vec<Value> = (0..4)
        .map(|i| ev("jp-tok", &format!("outage-{i}")))
        .collect();
    for _ in 0..2 {
        let report = ingest(&us, &outage);
        assert_eq!(report["accepted"], 4, "{report}");
    }
    let status = |us: &Server| admin(us, "GET", &format!("/v1/targets/{tk_jp}"), None).1;
    wait_until("failed deliveries to jp-tok", || {
        status(&us)["status"]["failures"].as_u64().unwrap() > 0
    });
    let s = status(&us);
    assert_eq!(s["status"]["backlog"], 8, "{s}");
    assert!(
        s["status"]["lastError"]
            .as_str()
            .unwrap()
            .contains("/v1/events"),
        "{s}"
    );
    assert!(
        metric(
            &us,
            &format!("trailkeep_route_failures_total{{target=\"{tk_jp}\"}}")
        ) > 0.0
    );
    assert_eq!(
        metric(
            &us,
            &format!("trailkeep_route_backlog_events{{target=\"{tk_jp}\"}}")
        ),
        8.0
    );
    assert!(
        metric(
            &us,
            &format!("trailkeep_route_lag_seconds{{target=\"{tk_jp}\"}}")
        ) > 0.0
    );
    assert!(s["status"]["lagSeconds"].as_f64().unwrap() > 0.0, "{s}");
    // The routing instance is killed meanwhile (no shutdown): what it acknowledged is on disk.
    us.kill9();
    let us = routing_instance(&us_data);
    assert_eq!(status(&us)["status"]["backlog"], 8);

    // jp-tok comes back on its address: everything arrives, nothing twice.
    let jp = Server::start(&jp_data, &["--location", "jp-tok", "--listen", &jp_listen]);
    let mut want = jp_ids.clone();
    want.extend((0..4).map(|i| format!("outage-{i}")));
    let want = sorted(want);
    assert_eq!(wait_stored(&jp, want.len()), want);
    wait_until("the jp-tok backlog to drain", || {
        status(&us)["status"]["backlog"] == 0
    });
    assert_eq!(
        metric(
            &us,
            &format!("trailkeep_route_backlog_events{{target=\"{tk_jp}\"}}")
        ),
        0.0
    );
    assert!(
        metric(
            &us,
            &format!("trailkeep_route_delivered_events_total{{target=\"{tk_jp}\"}}")
        ) >= 8.0
    );
    // Nothing else went to the other instances or the receivers.
    assert_eq!(stored(&jp), want, "no duplicates stored");
    assert_eq!(stored(&eu), eu_ids);
    assert_eq!(siem.messages.lock().unwrap().len(), siem_ids.len());
    jp.stop();
    eu.stop();
    us.stop();
}

pub(crate) fn cli(server: &Server, args: &[&str]) -> (i32, String, String) {
    let mut all = args.to_vec();
    all.extend(["--url", &server.url, "--key", ADMIN_KEY]);
    let out = trailkeep(&all, b"");
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

/// `X-Trailkeep-Forwarded-From` keeps events here (never routed on to another Trailkeep, and
/// stored locally whatever the routes say), so only forwarder keys may send it: a plain writer
/// key would bypass residency routing with it.
#[test]
fn forwarded_from_is_accepted_only_from_forwarder_keys_issue_9() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--location", "us-south", "--routing-retry-initial", "1h"],
    );
    created(
        &server,
        "/v1/accounts",
        json!({"id": "acme", "name": "Acme"}),
    );
    let hook = created(
        &server,
        "/v1/targets",
        json!({"name": "elsewhere", "type": "webhook", "url": "http://127.0.0.1:9/x", "secret": "s-0123456789abcdef"}),
    );
    created(
        &server,
        "/v1/routes",
        json!({"name": "all away", "rules": [{"locations": ["*"], "targetIds": [hook["id"]]}]}),
    );
    let plain = created(
        &server,
        "/v1/keys",
        json!({"name": "app", "role": "writer", "accounts": ["acme"]}),
    );
    assert_eq!(plain["forwarder"], false, "{plain}");
    let (code, out, err) = cli(
        &server,
        &[
            "keys",
            "create",
            "--name",
            "from jp-tok",
            "--role",
            "writer",
            "--account",
            "acme",
            "--forwarder",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let fwd: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(fwd["forwarder"], true, "{fwd}");
    let (status, e) = admin(
        &server,
        "POST",
        "/v1/keys",
        Some(&json!({"name": "r", "role": "reader", "accounts": ["acme"], "forwarder": true})),
    );
    assert_eq!(status, 422, "{e}");
    assert!(
        e.to_string().contains("only writer keys can be forwarders"),
        "{e}"
    );
    let (_, keys) = admin(&server, "GET", "/v1/keys", None);
    let flag = |id: &Value| {
        keys["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == *id)
            .unwrap()["forwarder"]
            .clone()
    };
    assert_eq!(
        (flag(&plain["id"]), flag(&fwd["id"])),
        (json!(false), json!(true))
    );
    let (code, table, _) = cli(&server, &["keys", "list"]);
    assert_eq!(code, 0);
    assert!(
        table
            .lines()
            .any(|l| l.contains("from jp-tok") && l.contains("writer+fwd")),
        "{table}"
    );

    let send = |key: &str, forwarded: bool, id: &str| {
        let mut headers = vec![("Content-Type", "application/json")];
        if forwarded {
            headers.push(("X-Trailkeep-Forwarded-From", "jp-tok"));
        }
        let r = request(
            "POST",
            &format!("{}/v1/events", server.url),
            Some(key),
            &headers,
            Some(json!([ev("jp-tok", id)]).to_string().as_bytes()),
        );
        (r.status, r.json())
    };
    // A plain writer key with the header: refused, nothing stored or queued.
    let (status, e) = send(plain["secret"].as_str().unwrap(), true, "plain-fwd");
    assert_eq!(status, 403, "{e}");
    assert_eq!(e["error"]["code"], "not_a_forwarder", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("X-Trailkeep-Forwarded-From"),
        "{e}"
    );
    // Without it, its events go where the routes say (away).
    let (status, r) = send(plain["secret"].as_str().unwrap(), false, "plain");
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["results"][0]["targets"], json!([hook["id"]]), "{r}");
    assert!(r["results"][0]["index"].is_null(), "not stored here: {r}");
    // A forwarder key with the header: stored here.
    let (status, r) = send(fwd["secret"].as_str().unwrap(), true, "forwarded");
    assert_eq!(status, 200, "{r}");
    assert_eq!(wait_stored(&server, 1), ["forwarded"]);
    let (_, t) = admin(
        &server,
        "GET",
        &format!("/v1/targets/{}", hook["id"].as_str().unwrap()),
        None,
    );
    assert_eq!(
        t["status"]["backlog"], 2,
        "the plain event and the forwarded one wait for the webhook: {t}"
    );
}

#[test]
fn routing_configuration_is_admin_only_validated_audited_and_has_a_cli_issue_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_keys(&data);
    let server = Server::start(
        &data,
        &[
            "--location",
            "us-south",
            "--routing-max-routes",
            "2",
            "--routing-max-rules",
            "2",
            "--routing-max-backlog",
            "3",
            "--routing-retry-initial",
            "1h",
        ],
    );
    let hook = created(
        &server,
        "/v1/targets",
        json!({"name": "hook", "type": "webhook", "url": "http://127.0.0.1:9/x", "secret": "s-0123456789abcdef"}),
    );
    let hook_id = hook["id"].as_str().unwrap().to_string();
    let route = created(
        &server,
        "/v1/routes",
        json!({"name": "r", "rules": [{"locations": ["*"], "targetIds": ["local"]}]}),
    );
    let route_id = route["id"].as_str().unwrap().to_string();

    // Role matrix: only admin keys read or change routing configuration.
    let cases: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", "/v1/targets".into(), None),
        ("GET", format!("/v1/targets/{hook_id}"), None),
        (
            "POST",
            "/v1/targets".into(),
            Some(json!({"name": "l2", "type": "local"})),
        ),
        (
            "PATCH",
            format!("/v1/targets/{hook_id}"),
            Some(json!({"name": "hook 2"})),
        ),
        ("GET", "/v1/routes".into(), None),
        ("GET", format!("/v1/routes/{route_id}"), None),
        (
            "PATCH",
            format!("/v1/routes/{route_id}"),
            Some(json!({"name": "r2"})),
        ),
        ("GET", "/v1/settings".into(), None),
        (
            "PUT",
            "/v1/settings".into(),
            Some(json!({"locationAliases": {"ap-south": "jp-tok"}})),
        ),
        ("DELETE", format!("/v1/routes/{route_id}"), None),
    ];
    for (method, path, body) in &cases {
        for key in [READER_ACME, MANAGER_ACME, WRITER_ACME] {
            let (status, answer) = call(&server, key, method, path, body.as_ref());
            assert_eq!(status, 403, "{key} {method} {path}: {answer}");
            assert_eq!(answer["error"]["code"], "forbidden");
        }
        let r = request(method, &format!("{}{path}", server.url), None, &[], None);
        assert_eq!(r.status, 401, "{method} {path} without a key");
        let (status, answer) = admin(&server, method, path, body.as_ref());
        assert!(
            [200, 201, 204].contains(&status),
            "admin {method} {path}: {status} {answer}"
        );
    }
    let (status, _) = admin(&server, "GET", "/v1/routes/route_nope", None);
    assert_eq!(status, 404);

    // Validation: every problem with its path; limits from the flags.
    let problems = |body: Value, path: &str| -> Vec<String> {
        let (status, answer) = admin(&server, "POST", path, Some(&body));
        assert_eq!(status, 422, "{answer}");
        answer["error"]["details"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                format!(
                    "{}: {}",
                    d["path"].as_str().unwrap(),
                    d["reason"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(
        problems(
            json!({"name": "bad", "rules": [
                {"locations": [], "targetIds": ["tgt_unknown"]},
                {"locations": ["jp-tok"], "targetIds": []}
            ]}),
            "/v1/routes"
        ),
        [
            "rules[0].locations: must not be empty",
            "rules[0].targetIds[0]: no target \"tgt_unknown\"",
            "rules[1].targetIds: must not be empty"
        ]
    );
    let three = json!({"locations": ["*"], "targetIds": ["local"]});
    assert_eq!(
        problems(
            json!({"name": "long", "rules": [three, three, three]}),
            "/v1/routes"
        ),
        ["rules: holds 3 rules; a route holds at most 2 (--routing-max-rules)"]
    );
    created(
        &server,
        "/v1/routes",
        json!({"name": "one", "rules": [three]}),
    );
    created(
        &server,
        "/v1/routes",
        json!({"name": "two", "rules": [three]}),
    );
    let (status, answer) = admin(
        &server,
        "POST",
        "/v1/routes",
        Some(&json!({"name": "three", "rules": [three]})),
    );
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 2 routes")
    );
    assert_eq!(
        problems(
            json!({"name": "x", "type": "syslog", "address": "nohost", "caCert": "not pem"}),
            "/v1/targets"
        )[0],
        "address: must be host:port (e.g. siem.example.com:6514)"
    );
    let (status, answer) = admin(
        &server,
        "PUT",
        "/v1/settings",
        Some(&json!({"defaultTargets": ["tgt_gone"]})),
    );
    assert_eq!(status, 422, "{answer}");
    // A target in use cannot be deleted; the built-in local target never.
    let (status, _) = admin(
        &server,
        "PUT",
        "/v1/settings",
        Some(&json!({"defaultTargets": [hook_id]})),
    );
    assert_eq!(status, 200);
    let (status, answer) = admin(&server, "DELETE", &format!("/v1/targets/{hook_id}"), None);
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("defaultTargets")
    );
    let (status, _) = admin(&server, "DELETE", "/v1/targets/local", None);
    assert_eq!(status, 409);

    // Data events: collected by default, not for an account whose setting says so.
    let (status, _) = admin(
        &server,
        "PATCH",
        "/v1/settings",
        Some(
            &json!({"defaultTargets": null, "dataEvents": {"collect": true, "accounts": {"acme": false}}}),
        ),
    );
    assert_eq!(status, 200);
    let mut data_event = ev("us-south", "data-1");
    data_event["dataEvent"] = json!(true);
    let mut beta = data_event.clone();
    beta["id"] = json!("data-2");
    beta["logSourceCRN"] = json!("crn:v1:bluemix:public:codeengine:us-south:a/beta:proj-1::");
    let report = ingest(&server, &[data_event, beta]);
    assert_eq!(report["accepted"], 1, "{report}");
    assert_eq!(
        report["results"][0]["errors"][0]["path"], "dataEvent",
        "{report}"
    );
    assert!(report["results"][1]["index"].is_u64(), "{report}");
    assert_eq!(
        metric(
            &server,
            "trailkeep_rejected_events_total{reason=\"data_event_not_collected\"}"
        ),
        1.0
    );

    // Every change is a self-audit event in the system account, without the secret.
    let (changes, _) = wait_search(&server, "trailkeep", "action:trailkeep.target.*", 3);
    let actions: BTreeSet<String> = changes
        .iter()
        .map(|i| i["event"]["action"].as_str().unwrap().to_string())
        .collect();
    assert!(
        actions.contains("trailkeep.target.create") && actions.contains("trailkeep.target.update"),
        "{actions:?}"
    );
    for c in &changes {
        assert!(
            !c["event"].to_string().contains("s-0123456789abcdef"),
            "{c}"
        );
    }
    let (routes, _) = wait_search(&server, "trailkeep", "action:trailkeep.route.*", 5);
    assert!(
        routes.len() >= 5,
        "create ×3, update, delete: {}",
        routes.len()
    );
    // The matrix's PUT, the default target, the data events (the refused PUT is not a change).
    let (settings, _) = wait_search(&server, "trailkeep", "action:trailkeep.settings.update", 3);
    assert_eq!(settings.len(), 3);

    // The CLI: targets, routes and settings.
    let (code, out, err) = cli(
        &server,
        &[
            "targets",
            "create",
            "--name",
            "siem",
            "--type",
            "syslog",
            "--address",
            "127.0.0.1:6514",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let siem: Value = serde_json::from_str(&out).unwrap();
    let siem_id = siem["id"].as_str().unwrap();
    assert_eq!(siem["tls"], false);
    let (code, out, err) = cli(&server, &["targets", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(siem_id) && out.contains("127.0.0.1:6514") && out.contains("local"),
        "{out}"
    );
    let (code, out, err) = cli(
        &server,
        &[
            "targets", "update", siem_id, "--name", "SIEM", "--tls", "true",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("\"tls\": true") && out.contains("\"SIEM\""),
        "{out}"
    );
    let (code, _, err) = cli(
        &server,
        &[
            "routes",
            "create",
            "--name",
            "siem",
            "--rule",
            "eu,us-south=local",
        ],
    );
    assert_ne!(code, 0, "a third route is over the limit");
    assert!(err.contains("at most 2 routes"), "{err}");
    let (code, out, err) = cli(
        &server,
        &[
            "routes",
            "update",
            &route_id_of(&server, "one"),
            "--rule",
            &format!("eu,us-south={siem_id}"),
            "--rule",
            "*=local",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(siem_id), "{out}");
    let (code, out, _) = cli(&server, &["routes", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!("eu,us-south={siem_id}  *=local")),
        "{out}"
    );
    let (code, out, err) = cli(
        &server,
        &[
            "settings",
            "set",
            "--no-default-targets",
            "--alias",
            "ap-south=jp-tok",
            "--data-events",
            "off",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let s: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["defaultTargets"], json!([]));
    assert_eq!(s["locationAliases"], json!({"ap-south": "jp-tok"}));
    assert_eq!(s["dataEvents"]["collect"], false);
    let (code, out, _) = cli(&server, &["settings", "get"]);
    assert_eq!(code, 0);
    assert!(out.contains("\"location\": \"us-south\""), "{out}");
    let (code, _, err) = cli(&server, &["targets", "delete", siem_id]);
    assert_ne!(code, 0);
    assert!(err.contains("in use"), "{err}");
    let out = trailkeep(&["routes", "create", "--help"], b"");
    assert!(text(&out.stdout).contains("LOCATIONS=TARGETS"));

    // The maximum backlog: a target that cannot be reached fills its outbox, then ingest of
    // events routed to it is refused (nothing stored anywhere) with a clear alarm.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dead = created(
        &server,
        "/v1/targets",
        json!({"name": "unreachable", "type": "trailkeep", "url": format!("http://{closed}"), "key": "k-0123456789abcdef"}),
    );
    let dead_id = dead["id"].as_str().unwrap().to_string();
    let (status, answer) = admin(
        &server,
        "PATCH",
        &format!("/v1/routes/{}", route_id_of(&server, "two")),
        Some(&json!({"rules": [{"locations": ["br-sao"], "targetIds": [dead_id, "local"]}]})),
    );
    assert_eq!(status, 200, "{answer}");
    let fill: Vec<Value> = (0..3).map(|i| ev("br-sao", &format!("fill-{i}"))).collect();
    assert_eq!(ingest(&server, &fill)["accepted"], 3);
    let (status, answer) = admin(
        &server,
        "POST",
        "/v1/events",
        Some(&json!([ev("br-sao", "one-too-many")])),
    );
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"]["code"], "routing_backlog_full");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&dead_id),
        "{answer}"
    );
    assert_eq!(
        metric(
            &server,
            &format!("trailkeep_route_backlog_full{{target=\"{dead_id}\"}}")
        ),
        1.0
    );
    let (_, t) = admin(&server, "GET", &format!("/v1/targets/{dead_id}"), None);
    assert_eq!(t["status"]["backlog"], 3, "{t}");
    assert_eq!(t["status"]["backlogFull"], true, "{t}");
    let local = wait_stored(&server, 3);
    assert!(
        local.contains(&"fill-2".to_string()) && !local.contains(&"one-too-many".to_string()),
        "{local:?}"
    );
}

fn route_id_of(server: &Server, name: &str) -> String {
    let (_, list) = admin(server, "GET", "/v1/routes", None);
    list["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn bench_routing_prints_its_figures() {
    let out = trailkeep(
        &[
            "bench",
            "routing",
            "--events",
            "1500",
            "--fsync-requests",
            "200",
            "--concurrency",
            "8",
        ],
        b"",
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    for line in [
        "routing table        10 routes × 10 rules, 1500 corpus events",
        "routing decision",
        "ingest hook",
        "ingest CPU",
        "routing share",
        "fsync durability     200 single-event requests, 8 in flight: ",
    ] {
        assert!(stdout.contains(line), "{line}: {stdout}");
    }
}
