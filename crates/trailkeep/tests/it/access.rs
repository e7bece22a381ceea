//! Tenancy, roles and keys end to end: the isolation matrix (every role × endpoint × own account,
//! other account, no key, bad key, revoked key, expired key), self-audit, and per-key rate limits.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::server::{ADMIN_KEY, Reply, Server, enc, event, get, post_json, request, wait_for};
use crate::{text, trailkeep};

const A: &str = "acct-a";
const B: &str = "acct-b";
/// Values that exist only in account B's data: no response to a key of account A may hold them.
const B_MARKERS: [&str; 3] = ["MARKER-B-93de", "trailkeep/acct-b", "evt-b-"];

fn cli(server: &Server, args: &[&str]) -> std::process::Output {
    let mut all = args.to_vec();
    all.extend(["--url", &server.url, "--key", ADMIN_KEY]);
    trailkeep(&all, b"")
}

/// Creates a key through `trailkeep keys create --json` and returns (id, secret).
fn create_key(server: &Server, name: &str, role: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec!["keys", "create", "--json", "--name", name, "--role", role];
    args.extend(extra);
    let out = cli(server, &args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        answer["id"].as_str().unwrap().to_string(),
        answer["secret"].as_str().unwrap().to_string(),
    )
}

fn marked_event(account: &str, n: usize) -> Value {
    let marker = if account == A {
        "MARKER-A-4c1d"
    } else {
        "MARKER-B-93de"
    };
    let short = &account[5..];
    let mut e = event(
        account,
        &format!("evt-{short}-{n}"),
        "codeengine.application.update",
        "success",
        &format!("crn:v1:bluemix:public:codeengine:us-south:a/{account}:p::application:{marker}"),
    );
    e["requestData"] = json!({"note": marker});
    e
}

/// Sends one request as `key` and returns the reply (an SSE stream answers with its status only).
fn call(
    server: &Server,
    key: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Reply {
    let url = format!("{}{path}", server.url);
    if path.starts_with("/v1/events/stream") {
        let mut req = ureq::AgentBuilder::new()
            .timeout_read(Duration::from_secs(5))
            .build()
            .get(&url);
        if let Some(k) = key {
            req = req.set("Authorization", &format!("Bearer {k}"));
        }
        return match req.call() {
            Ok(r) => Reply {
                status: r.status(),
                retry_after: None,
                content_type: r.content_type().to_string(),
                body: Vec::new(),
            },
            Err(ureq::Error::Status(status, r)) => Reply {
                status,
                retry_after: None,
                content_type: String::new(),
                body: r.into_string().unwrap_or_default().into_bytes(),
            },
            Err(e) => panic!("{path}: {e}"),
        };
    }
    let bytes = body.map(|b| b.to_string().into_bytes());
    request(
        method,
        &url,
        key,
        &[("Content-Type", "application/json")],
        bytes.as_deref(),
    )
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Writer,
    Reader,
    Manager,
    Admin,
}

/// One endpoint aimed at an account: method, path and body, and the status each role gets for
/// its own account and for the other one.
struct Case {
    name: &'static str,
    method: &'static str,
    path: String,
    body: Option<Value>,
    /// (writer, reader/manager, admin) status.
    expect: (u16, u16, u16),
}

fn cases(account: &str, own: bool, n: usize) -> Vec<Case> {
    let short = &account[5..];
    let id = format!("evt-{short}-0");
    // (writer, reader/manager, admin) for this account.
    let read = |other: u16| {
        if own {
            (403, 200, 200)
        } else {
            (403, other, 200)
        }
    };
    let log = if own {
        (404, 200, 200)
    } else {
        (404, 404, 200)
    };
    vec![
        Case {
            name: "ingest",
            method: "POST",
            path: "/v1/events".into(),
            body: Some(marked_event(account, 100 + n)),
            expect: if own {
                (200, 403, 200)
            } else {
                (403, 403, 200)
            },
        },
        Case {
            name: "search",
            method: "GET",
            path: format!("/v1/events?q=MARKER*&from=2020-01-01T00:00:00Z&account={account}"),
            body: None,
            expect: read(403),
        },
        Case {
            name: "get",
            method: "GET",
            path: format!("/v1/events/{id}"),
            body: None,
            expect: read(404),
        },
        Case {
            name: "get with proof",
            method: "GET",
            path: format!("/v1/events/{id}?account={account}&proof=true"),
            body: None,
            expect: read(403),
        },
        Case {
            name: "aggregate",
            method: "GET",
            path: format!("/v1/aggregate?q=&from=2020-01-01T00:00:00Z&by=action&account={account}"),
            body: None,
            expect: read(403),
        },
        Case {
            name: "stream",
            method: "GET",
            path: format!("/v1/events/stream?q=MARKER*&account={account}"),
            body: None,
            expect: read(403),
        },
        Case {
            name: "export",
            method: "GET",
            path: format!(
                "/v1/export?q=&from=2020-01-01T00:00:00Z&account={account}&format=ndjson"
            ),
            body: None,
            expect: read(403),
        },
        Case {
            name: "object timeline",
            method: "GET",
            path: format!(
                "/v1/objects/{}/timeline",
                enc(&format!(
                    "crn:v1:bluemix:public:codeengine:us-south:a/{account}:p::application:{}",
                    if own {
                        "MARKER-A-4c1d"
                    } else {
                        "MARKER-B-93de"
                    }
                ))
            ),
            body: None,
            expect: read(404),
        },
        Case {
            name: "checkpoint",
            method: "GET",
            path: format!("/v1/log/{account}/checkpoint"),
            body: None,
            expect: log,
        },
        Case {
            name: "tile",
            method: "GET",
            path: format!("/v1/log/{account}/tile/0/000.p/2"),
            body: None,
            expect: log,
        },
        Case {
            name: "inclusion proof",
            method: "GET",
            path: format!("/v1/log/{account}/proof/inclusion?index=0&size=2"),
            body: None,
            expect: log,
        },
        Case {
            name: "consistency proof",
            method: "GET",
            path: format!("/v1/log/{account}/proof/consistency?from=1&to=2"),
            body: None,
            expect: log,
        },
        Case {
            name: "create view",
            method: "POST",
            path: "/v1/views".into(),
            body: Some(
                json!({"name": format!("failures {n}"), "account": account, "query": "outcome:failure"}),
            ),
            // Writers and readers may not manage views (403); managers may in their own accounts
            // (see `expected`); another account is the same 403, which says nothing about it.
            expect: (403, 403, 201),
        },
        Case {
            name: "account",
            method: "GET",
            path: format!("/v1/accounts/{account}"),
            body: None,
            expect: if own {
                (200, 200, 200)
            } else {
                (404, 404, 200)
            },
        },
    ]
}

/// Endpoints that concern no single account: (name, method, path, body, writer, reader/manager,
/// admin).
fn global_cases() -> Vec<Case> {
    vec![
        Case {
            name: "list keys",
            method: "GET",
            path: "/v1/keys".into(),
            body: None,
            expect: (403, 403, 200),
        },
        Case {
            name: "create key",
            method: "POST",
            path: "/v1/keys".into(),
            body: Some(json!({"name": "x", "role": "reader", "accounts": [A]})),
            expect: (403, 403, 201),
        },
        Case {
            name: "create account",
            method: "POST",
            path: "/v1/accounts".into(),
            body: Some(json!({"id": "acct-new", "name": "New"})),
            expect: (403, 403, 201),
        },
        Case {
            name: "list accounts",
            method: "GET",
            path: "/v1/accounts".into(),
            body: None,
            expect: (200, 200, 200),
        },
        Case {
            name: "list logs",
            method: "GET",
            path: "/v1/log".into(),
            body: None,
            expect: (200, 200, 200),
        },
        Case {
            name: "search everything",
            method: "GET",
            path: "/v1/events?q=&from=2020-01-01T00:00:00Z&limit=1000".into(),
            body: None,
            expect: (403, 200, 200),
        },
        Case {
            name: "whoami",
            method: "GET",
            path: "/v1/whoami".into(),
            body: None,
            expect: (200, 200, 200),
        },
    ]
}

fn expected(role: Role, case: &Case, own: bool) -> u16 {
    let expect = case.expect;
    match role {
        Role::Manager if case.name == "create view" => {
            if own {
                201
            } else {
                403
            }
        }
        Role::Writer => expect.0,
        Role::Reader | Role::Manager => expect.1,
        Role::Admin => expect.2,
    }
}

fn assert_no_markers(what: &str, reply: &Reply) {
    let body = reply.text();
    for marker in B_MARKERS {
        assert!(
            !body.contains(marker) && !reply.content_type.contains(marker),
            "{what}: the answer reveals account B ({marker}): {body}"
        );
    }
}

#[test]
fn every_role_sees_exactly_its_accounts_on_every_endpoint_and_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);

    for (id, name) in [(A, "Account A"), (B, "Account B")] {
        let out = cli(&server, &["accounts", "create", id, "--name", name]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    let out = cli(&server, &["accounts", "create", A]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "an account id is registered once"
    );
    assert!(text(&out.stderr).contains("409"), "{}", text(&out.stderr));

    // Two events in each account (so consistency proofs between sizes 1 and 2 exist).
    for account in [A, B] {
        for n in 0..2 {
            let r = post_json(&server, "/v1/events", &marked_event(account, n));
            assert_eq!(r.status, 200, "{}", r.text());
        }
    }
    wait_for(&server, "MARKER*", 4);

    let (writer_id, writer) = create_key(&server, "writer A", "writer", &["--account", A]);
    let (reader_id, reader) = create_key(&server, "reader A", "reader", &["--account", A]);
    let (_, manager) = create_key(&server, "manager A", "manager", &["--account", A]);
    let (revoked_id, revoked) = create_key(&server, "revoked", "reader", &["--account", A]);
    let soon = (OffsetDateTime::now_utc() + time::Duration::seconds(2))
        .format(&Rfc3339)
        .unwrap();
    let (_, expired) = create_key(
        &server,
        "expiring",
        "reader",
        &["--account", A, "--expires-at", &soon],
    );
    // A key for an account nobody created is refused (a typo must not make a blind key).
    let out = cli(
        &server,
        &[
            "keys",
            "create",
            "--name",
            "typo",
            "--role",
            "reader",
            "--account",
            "acct-typo",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("create it first"),
        "{}",
        text(&out.stderr)
    );

    // Revocation works at once.
    let r = call(&server, Some(&revoked), "GET", "/v1/whoami", None);
    assert_eq!(r.status, 200);
    let out = cli(&server, &["keys", "revoke", &revoked_id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let r = call(&server, Some(&revoked), "GET", "/v1/whoami", None);
    assert_eq!(r.status, 401);
    assert!(r.text().contains("revoked"), "{}", r.text());
    // Wait for the expiring key to expire.
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(&server, Some(&expired), "GET", "/v1/whoami", None).status != 401 {
        assert!(Instant::now() < deadline, "the key never expired");
        std::thread::sleep(Duration::from_millis(200));
    }

    let keys = [
        (Role::Writer, writer.as_str()),
        (Role::Reader, reader.as_str()),
        (Role::Manager, manager.as_str()),
        (Role::Admin, ADMIN_KEY),
    ];
    let mut checked = 0;
    let mut n = 0;
    for (role, key) in keys {
        for (account, own) in [(A, true), (B, false)] {
            n += 1;
            for case in cases(account, own, n) {
                let r = call(
                    &server,
                    Some(key),
                    case.method,
                    &case.path,
                    case.body.as_ref(),
                );
                let want = expected(role, &case, own);
                assert_eq!(
                    r.status,
                    want,
                    "{role:?} {} on {account}: {} {}",
                    case.name,
                    case.path,
                    r.text()
                );
                if role != Role::Admin {
                    assert_no_markers(&format!("{role:?} {} on {account}", case.name), &r);
                }
                checked += 1;
            }
        }
        for case in global_cases() {
            let body = case.body.clone().map(|mut b| {
                // Each admin creation needs a fresh id.
                if b.get("id").is_some() {
                    b["id"] = json!(format!("acct-new-{role:?}").to_lowercase());
                }
                b
            });
            let r = call(&server, Some(key), case.method, &case.path, body.as_ref());
            assert_eq!(
                r.status,
                expected(role, &case, true),
                "{role:?} {}: {}",
                case.name,
                r.text()
            );
            if role != Role::Admin {
                assert_no_markers(&format!("{role:?} {}", case.name), &r);
            }
            checked += 1;
        }
    }
    // Whoever has no valid key gets 401 everywhere, with the same body for missing and unknown.
    let bad = format!("tk_{}", "0".repeat(64));
    for key in [
        None,
        Some(bad.as_str()),
        Some(revoked.as_str()),
        Some(expired.as_str()),
    ] {
        let all_cases = cases(A, true, 0)
            .into_iter()
            .chain(cases(B, false, 0))
            .chain(global_cases());
        for case in all_cases {
            let r = call(&server, key, case.method, &case.path, case.body.as_ref());
            assert_eq!(r.status, 401, "{key:?} {}: {}", case.name, r.text());
            assert_no_markers(case.name, &r);
            assert!(!r.text().contains("MARKER-A"), "{}", r.text());
            checked += 1;
        }
    }
    assert!(checked > 150, "{checked} requests checked");

    // A reader's search over everything it may read returns only account A.
    let r = call(
        &server,
        Some(&reader),
        "GET",
        "/v1/events?q=&from=2020-01-01T00:00:00Z&limit=1000",
        None,
    );
    let accounts: BTreeMap<String, usize> =
        r.json()["events"]
            .as_array()
            .unwrap()
            .iter()
            .fold(BTreeMap::new(), |mut m, e| {
                *m.entry(e["account"].as_str().unwrap().to_string())
                    .or_default() += 1;
                m
            });
    assert_eq!(accounts.keys().collect::<Vec<_>>(), vec![A], "{accounts:?}");

    // Writers limited to an action prefix.
    let (_, ce_writer) = create_key(
        &server,
        "codeengine writer",
        "writer",
        &["--account", A, "--action", "codeengine.*"],
    );
    let mut kms = marked_event(A, 900);
    kms["action"] = json!("kms.secrets.delete");
    let both = json!([marked_event(A, 901), kms]);
    let r = call(&server, Some(&ce_writer), "POST", "/v1/events", Some(&both));
    assert_eq!(r.status, 200, "{}", r.text());
    let results = &r.json()["results"];
    assert_eq!(results[0]["status"], "accepted");
    assert_eq!(results[1]["status"], "rejected");
    assert!(
        results[1]["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("codeengine.*")
    );
    // Nobody but the server (and admins) writes Trailkeep's own audit events.
    let mut forged = marked_event(A, 902);
    forged["action"] = json!("trailkeep.event.search");
    let r = call(&server, Some(&writer), "POST", "/v1/events", Some(&forged));
    assert_eq!(r.status, 403, "{}", r.text());

    // Self-audit: the reader's searches are in account A's own log, with the reader as initiator.
    let q = format!("action:trailkeep.event.search AND initiator.id:{reader_id}");
    let (found, _) = wait_for(&server, &q, 1);
    assert!(!found.is_empty(), "the reader's searches were not recorded");
    assert!(found.iter().all(|e| e["account"] == A), "{found:?}");
    assert_eq!(found[0]["event"]["initiator"]["name"], "reader A");
    // "Who exported account A's events?" is one query.
    let q = format!("account:{A} AND action:trailkeep.event.export AND initiator.id:{reader_id}");
    let (found, _) = wait_for(&server, &q, 1);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["event"]["requestData"]["format"], "ndjson");
    // View changes are recorded in the view's account.
    let (found, _) = wait_for(
        &server,
        &format!("account:{A} AND action:trailkeep.view.create"),
        2,
    );
    assert_eq!(
        found.len(),
        2,
        "the manager's and the admin's views: {found:?}"
    );
    // Key changes are recorded in the key's accounts.
    let (found, _) = wait_for(&server, "action:trailkeep.apikey.revoke", 1);
    assert_eq!(found[0]["event"]["target"]["id"], revoked_id);
    // Failed authentications and denials are in the system account.
    let (found, _) = wait_for(
        &server,
        "account:trailkeep AND action:trailkeep.apikey.authenticate",
        4,
    );
    assert!(found.len() >= 4);
    assert_eq!(found[0]["event"]["outcome"], "failure");
    let q =
        format!("account:trailkeep AND action:trailkeep.api.access AND initiator.id:{writer_id}");
    let (found, _) = wait_for(&server, &q, 1);
    assert!(!found.is_empty(), "the writer's denials were not recorded");

    // No secret was ever written to the ledger or the server's log.
    let everything = get(
        &server,
        &format!(
            "/v1/events?q={}&from=2020-01-01T00:00:00Z&limit=1000",
            enc("")
        ),
    )
    .text();
    let log = server.stderr_lines.lock().unwrap().join("\n");
    for secret in [&writer, &reader, &manager, &revoked, &expired, &ce_writer] {
        assert!(
            !everything.contains(secret.as_str()),
            "a secret is in an event"
        );
        assert!(
            !log.contains(secret.as_str()),
            "a secret is in the server log"
        );
    }
    assert!(!log.contains(ADMIN_KEY));
}

#[test]
fn rate_limits_hold_per_key_without_starving_other_keys() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let out = cli(&server, &["accounts", "create", A]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let (_, slow) = create_key(
        &server,
        "slow",
        "reader",
        &["--account", A, "--query-rate", "5"],
    );
    let (_, other) = create_key(&server, "other", "reader", &["--account", A]);
    let (_, writer) = create_key(
        &server,
        "slow writer",
        "writer",
        &["--account", A, "--ingest-rate", "50"],
    );

    let url = server.url.clone();
    let started = Instant::now();
    let run_for = Duration::from_secs(2);
    let hammer: Vec<_> = (0..4)
        .map(|_| {
            let (url, slow) = (url.clone(), slow.clone());
            std::thread::spawn(move || {
                let (mut ok, mut limited, mut retry_after_given) = (0u32, 0u32, true);
                while started.elapsed() < run_for {
                    let r = request(
                        "GET",
                        &format!("{url}/v1/events?q="),
                        Some(&slow),
                        &[],
                        None,
                    );
                    match r.status {
                        200 => ok += 1,
                        429 => {
                            limited += 1;
                            retry_after_given &= r.retry_after.is_some();
                        }
                        s => panic!("unexpected {s}: {}", r.text()),
                    }
                }
                (ok, limited, retry_after_given)
            })
        })
        .collect();
    // Meanwhile another key of the same account is served normally.
    let mut other_statuses = BTreeMap::new();
    while started.elapsed() < run_for {
        let r = request(
            "GET",
            &format!("{url}/v1/events?q="),
            Some(&other),
            &[],
            None,
        );
        *other_statuses.entry(r.status).or_insert(0) += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let (mut ok, mut limited) = (0, 0);
    for h in hammer {
        let (o, l, retry_after_given) = h.join().unwrap();
        assert!(retry_after_given, "every 429 carries Retry-After");
        ok += o;
        limited += l;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "slow key: {ok} served, {limited} limited in {elapsed:.1} s; other key: {other_statuses:?}"
    );
    // 5 per second plus a burst of 10 (two seconds' worth), whatever the machine's speed.
    assert!(
        f64::from(ok) <= 5.0 * elapsed + 10.0 + 1.0,
        "{ok} served in {elapsed:.1} s"
    );
    assert!(limited > 0);
    assert_eq!(
        other_statuses.keys().collect::<Vec<_>>(),
        vec![&200],
        "{other_statuses:?}"
    );

    // Ingest: 50 events per second; batches of 20 sent back to back are slowed down with 429.
    let started = Instant::now();
    let (mut accepted, mut limited) = (0u64, 0);
    for batch in 0..15 {
        let events: Vec<Value> = (0..20)
            .map(|i| marked_event(A, 1000 + batch * 20 + i))
            .collect();
        let r = request(
            "POST",
            &format!("{url}/v1/events"),
            Some(&writer),
            &[("Content-Type", "application/json")],
            Some(Value::Array(events).to_string().as_bytes()),
        );
        match r.status {
            200 => accepted += r.json()["accepted"].as_u64().unwrap(),
            429 => {
                limited += 1;
                assert!(r.retry_after.is_some());
                assert!(r.text().contains("rate limit"), "{}", r.text());
            }
            s => panic!("unexpected {s}: {}", r.text()),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert!(limited > 0, "a writer over its rate was never limited");
    assert!(
        accepted as f64 <= 50.0 * elapsed + 100.0 + 20.0,
        "{accepted} events in {elapsed:.1} s"
    );
}

/// A flood of bad keys is answered and counted, but only a bounded number of failures is written
/// to the system account's log (20 per second, with a two-second burst), so an attacker cannot
/// flood the ledger.
#[test]
fn a_flood_of_bad_keys_is_counted_but_recorded_at_a_bounded_rate() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    const PER_THREAD: usize = 400;
    let started = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let url = server.url.clone();
            std::thread::spawn(move || {
                for n in 0..PER_THREAD {
                    let r = request(
                        "GET",
                        &format!("{url}/v1/events"),
                        Some(&format!("tk_bad_{t}_{n}")),
                        &[],
                        None,
                    );
                    assert_eq!(r.status, 401, "{}", r.text());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let metric = |name: &str| -> u64 {
        let text = request("GET", &format!("{}/metrics", server.url), None, &[], None).text();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing from /metrics"))
            .trim()
            .parse()
            .unwrap()
    };
    let total = metric("trailkeep_auth_failures_total");
    let unrecorded = metric("trailkeep_auth_failures_unrecorded_total");
    assert_eq!(total, 4 * PER_THREAD as u64);
    let recorded = total - unrecorded;
    let bound = (20.0 * (elapsed + 2.0)).ceil() as u64 + 1;
    assert!(
        (1..=bound).contains(&recorded),
        "{recorded} of {total} failures recorded in {elapsed:.1} s (at most {bound} allowed)"
    );
    // What was recorded is in the system account's log, and nothing more.
    let (found, _) = wait_for(
        &server,
        "account:trailkeep AND action:trailkeep.apikey.authenticate",
        recorded as usize,
    );
    let logs = get(&server, "/v1/log").json();
    assert_eq!(
        found.len() as u64,
        recorded,
        "{logs} {:?}",
        server.stderr_lines.lock().unwrap()
    );
    println!(
        "auth flood: {total} bad-key requests in {elapsed:.1} s, {recorded} recorded, \
         {unrecorded} only counted"
    );
}
