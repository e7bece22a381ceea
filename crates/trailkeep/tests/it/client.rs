//! End-to-end tests of the client subcommands (`send`, `search`, `tail`, `verify --url`) against
//! the real server binary.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::server::{ADMIN_KEY, Server, event, get, wait_for};
use crate::text;

/// Runs a client subcommand against `server` with `stdin`.
fn client(server: &Server, args: &[&str], stdin: &[u8]) -> Output {
    client_at(&server.url, args, stdin)
}

fn client_at(url: &str, args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_trailkeep"))
        .args(args)
        .env("TRAILKEEP_URL", url)
        .env("TRAILKEEP_KEY", ADMIN_KEY)
        .env_remove("XDG_STATE_HOME")
        .env("HOME", std::env::temp_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the trailkeep binary starts");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn ndjson(events: &[Value]) -> String {
    events.iter().map(|e| format!("{e}\n")).collect()
}

fn write(path: &Path, content: &str) {
    std::fs::write(path, content).unwrap();
}

#[test]
fn send_reports_rejects_by_line_resumes_and_round_trips_through_search() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let file = dir.path().join("events.ndjson");
    let state = dir.path().join("send-state.json");
    let state_arg = state.to_str().unwrap();
    let good: Vec<Value> = (0..5)
        .map(|i| {
            event(
                "acct-send",
                &format!("send-{i}"),
                "codeengine.application.create",
                "success",
                &format!("crn:v1:bluemix:public:codeengine:us-south:a/acct-send:proj-1:application:app-{i}"),
            )
        })
        .collect();
    // Line 4 is not JSON and line 6 is not an event; the rest are accepted.
    let content = format!(
        "{}\n{}\n\nnot json at all\n{}\n{{\"action\":\"bad\"}}\n{}",
        good[0],
        good[1],
        good[2],
        ndjson(&good[3..])
    );
    write(&file, &content);
    let f = file.to_str().unwrap();

    let out = client(
        &server,
        &["send", f, "--state", state_arg, "--batch-events", "2"],
        b"",
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "rejects give exit 1: {err}");
    assert!(err.contains("rejected line 4: invalid JSON"), "{err}");
    assert!(err.contains("rejected line 6: "), "{err}");
    assert!(err.contains("action"), "{err}");
    assert!(err.contains("5 accepted"), "{err}");
    let (found, _) = wait_for(&server, "target.name:app*", 5);
    assert_eq!(found.len(), 5);

    // Run again: everything was sent, so nothing is posted.
    let out = client(&server, &["send", f, "--state", state_arg], b"");
    let err = text(&out.stderr);
    assert!(err.contains("resuming"), "{err}");
    assert!(err.contains("sent 0 events in 0 requests"), "{err}");

    // Appended lines are sent on the next run, and only they.
    let extra = event(
        "acct-send",
        "send-extra",
        "codeengine.application.delete",
        "success",
        "crn:v1:bluemix:public:codeengine:us-south:a/acct-send:proj-1:application:app-x",
    );
    write(&file, &format!("{content}{extra}\n"));
    let out = client(&server, &["send", f, "--state", state_arg], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("sent 1 events in 1 requests (1 accepted"),
        "{}",
        text(&out.stderr)
    );

    // A file changed in the middle is sent from the start; what the server holds is not doubled.
    write(&file, &ndjson(&good));
    let out = client(&server, &["send", f, "--state", state_arg], b"");
    let err = text(&out.stderr);
    assert!(err.contains("sending it from the start"), "{err}");
    assert!(err.contains("0 accepted, 5 already stored"), "{err}");

    // search → ndjson → send round-trips: every event is recognised as already stored (the
    // server's own records of these searches are left out: they are new each time).
    let sent = "account:acct-send AND -action:trailkeep.*";
    assert_eq!(wait_for(&server, sent, 6).0.len(), 6);
    let out = client(
        &server,
        &[
            "search",
            sent,
            "--from",
            "2020-01-01T00:00:00Z",
            "--format",
            "ndjson",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let exported = out.stdout;
    assert_eq!(text(&exported).lines().count(), 6);
    let out = client(&server, &["send", "-", "--compress", "gzip"], &exported);
    assert!(
        text(&out.stderr).contains("0 accepted, 6 already stored, 0 rejected"),
        "{}",
        text(&out.stderr)
    );

    // The table names the columns and shows the events newest first.
    let out = client(
        &server,
        &[
            "search",
            "action:codeengine.application.delete",
            "--from",
            "2020-01-01",
        ],
        b"",
    );
    let table = text(&out.stdout);
    let mut lines = table.lines();
    assert!(lines.next().unwrap().starts_with("TIME"), "{table}");
    let row = lines.next().unwrap();
    assert!(row.contains("codeengine.application.delete"), "{table}");
    assert!(row.contains("acct-send"), "{table}");
    assert!(
        text(&out.stderr).contains("1 events"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn send_reads_json_documents_from_stdin_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let events: Vec<Value> = (0..7)
        .map(|i| {
            event(
                "acct-doc",
                &format!("doc-{i}"),
                "containers.image.push",
                if i % 3 == 0 { "failure" } else { "success" },
                &format!(
                    "crn:v1:bluemix:public:container-registry:eu-de:a/acct-doc::image:img-{i}"
                ),
            )
        })
        .collect();
    let pretty = serde_json::to_string_pretty(&Value::Array(events.clone())).unwrap();
    let out = client(
        &server,
        &["send", "--batch-events", "3", "--compress", "none"],
        pretty.as_bytes(),
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("sent 7 events in 3 requests (7 accepted"),
        "{err}"
    );

    // One pretty-printed event (not NDJSON) is one item.
    let single = serde_json::to_string_pretty(&event(
        "acct-doc",
        "doc-single",
        "containers.image.delete",
        "success",
        "crn:v1:bluemix:public:container-registry:eu-de:a/acct-doc::image:img-s",
    ))
    .unwrap();
    let out = client(&server, &["send"], single.as_bytes());
    assert!(
        text(&out.stderr).contains("sent 1 events in 1 requests (1 accepted"),
        "{}",
        text(&out.stderr)
    );

    // A broken document is refused as a whole, before anything is sent.
    let out = client(&server, &["send"], b"[{\"a\": 1},\n  {\"b\": ");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("not valid JSON or NDJSON"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn client_errors_are_clear() {
    // No key.
    let out = Command::new(env!("CARGO_BIN_EXE_trailkeep"))
        .args(["search", "x"])
        .env_remove("TRAILKEEP_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--key"), "{}", text(&out.stderr));

    // Nobody listening: send gives up after its retry budget with a clear message.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let out = client_at(&url, &["send", "--retry-for", "1"], b"{\"a\":1}\n");
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("cannot reach the server"), "{err}");
    assert!(err.contains("retrying"), "{err}");

    // A bad query comes back with the server's position.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let out = client(&server, &["search", "action:(a OR"], b"");
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("400"), "{err}");
    assert!(err.contains("column"), "{err}");
}

#[test]
fn search_pages_past_the_server_limit_and_tail_follows_new_events() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--demo"]);
    // The demo set has thousands of events; 1,500 needs two pages of the server's largest size.
    let started = Instant::now();
    loop {
        let total = get(&server, "/v1/aggregate?from=now-30d").json()["total"]
            .as_u64()
            .unwrap_or(0);
        if total >= 1500 || started.elapsed() > Duration::from_secs(30) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = client(
        &server,
        &[
            "search", "", "--from", "now-30d", "--limit", "1500", "--format", "json",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let items: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(items.len(), 1500);
    let positions: std::collections::HashSet<(String, u64)> = items
        .iter()
        .map(|i| {
            (
                i["account"].as_str().unwrap().to_string(),
                i["index"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(positions.len(), 1500, "no event twice across pages");
    let times: Vec<&str> = items
        .iter()
        .map(|i| i["event"]["eventTime"].as_str().unwrap())
        .collect();
    assert!(!times.is_empty());

    // tail prints a matching event sent after it started, and not a non-matching one.
    let mut tail = Command::new(env!("CARGO_BIN_EXE_trailkeep"))
        .args(["tail", "action:kms.key.*", "--format", "ndjson"])
        .env("TRAILKEEP_URL", &server.url)
        .env("TRAILKEEP_KEY", ADMIN_KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = tail.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let mut other = event(
        "acct-tail",
        "tail-other",
        "codeengine.application.create",
        "success",
        "crn:v1:bluemix:public:codeengine:us-south:a/acct-tail::application:x",
    );
    other["eventTime"] = json!(now);
    let mut wanted = event(
        "acct-tail",
        "tail-wanted",
        "kms.key.delete",
        "success",
        "crn:v1:bluemix:public:kms:us-south:a/acct-tail:inst::key:k1",
    );
    wanted["eventTime"] = json!(now);
    let out = client(&server, &["send"], ndjson(&[other, wanted]).as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let line = rx
        .recv_timeout(Duration::from_secs(15))
        .expect("tail prints the new event");
    let _ = tail.kill();
    let _ = tail.wait();
    let printed: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(printed["action"], "kms.key.delete", "{line}");
    assert!(
        rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "only the matching event"
    );
}

#[test]
fn verify_url_witnesses_growth_and_catches_rollback_fork_and_wrong_key() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let send = |id: &str| {
        let e = event(
            "acct-w",
            id,
            "codeengine.job.run",
            "success",
            "crn:v1:bluemix:public:codeengine:us-south:a/acct-w::job:j",
        );
        let out = client(&server, &["send"], ndjson(&[e]).as_bytes());
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    };
    send("w-1");
    send("w-2");
    let key_file = dir.path().join("verifier.pub");
    std::fs::write(&key_file, get(&server, "/v1/log/key").text()).unwrap();
    let state = dir.path().join("witness.json");
    let verify = |state: &Path, key: &Path| {
        client(
            &server,
            &[
                "verify",
                "--key-file",
                key.to_str().unwrap(),
                "--state",
                state.to_str().unwrap(),
            ],
            b"",
        )
    };
    // The ledger signs checkpoints about once a second: wait until the first covers both events.
    let started = Instant::now();
    loop {
        let out = verify(&state, &key_file);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
        if text(&out.stdout).contains("acct-w: size 2") {
            assert!(text(&out.stdout).contains("first seen") || text(&out.stdout).contains("grew"));
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{}",
            text(&out.stdout)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let remembered = std::fs::read_to_string(&state).unwrap();

    send("w-3");
    let started = Instant::now();
    loop {
        let out = verify(&state, &key_file);
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{stdout}");
        if stdout.contains("acct-w: size 3") {
            assert!(stdout.contains("grew from 2 and is consistent"), "{stdout}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "{stdout}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // A witness that remembers a different tree of size 2 (a fork) refuses the server's log.
    let mut forked: Value = serde_json::from_str(&remembered).unwrap();
    forked["logs"]["acct-w"]["root"] = json!("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    let fork_state = dir.path().join("fork.json");
    std::fs::write(&fork_state, forked.to_string()).unwrap();
    let out = verify(&fork_state, &key_file);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("FAIL  acct-w: the log at size 3 is not an extension"),
        "{}",
        text(&out.stdout)
    );
    // … and keeps remembering what it saw, so the failure repeats.
    let out = verify(&fork_state, &key_file);
    assert_eq!(out.status.code(), Some(1));

    // A witness that saw a longer log notices the rollback.
    let mut longer: Value = serde_json::from_str(&remembered).unwrap();
    longer["logs"]["acct-w"]["size"] = json!(9);
    let long_state = dir.path().join("long.json");
    std::fs::write(&long_state, longer.to_string()).unwrap();
    let out = verify(&long_state, &key_file);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("shrank from 9 to 3"),
        "{}",
        text(&out.stdout)
    );

    // A checkpoint signed by another key is refused.
    let other_key = trailkeep_ledger::NoteSigner::from_seed("trailkeep", [7; 32])
        .unwrap()
        .verifier()
        .to_key_string();
    let other_file = dir.path().join("other.pub");
    std::fs::write(&other_file, other_key).unwrap();
    let out = verify(&dir.path().join("fresh.json"), &other_file);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("signature does not verify"),
        "{}",
        text(&out.stdout)
    );
    // Reusing a state file under another key is an error, not a silent restart.
    let out = verify(&state, &other_file);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("was written while trusting"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn bench_ingest_and_query_run_end_to_end_and_print_their_figures() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("bench-data");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_trailkeep"))
            .args(args)
            .current_dir(dir.path())
            .env_remove("TRAILKEEP_KEY")
            .env_remove("TRAILKEEP_BENCH_URL")
            .output()
            .unwrap()
    };
    let out = run(&[
        "bench",
        "ingest",
        "--events",
        "3000",
        "--connections",
        "2",
        "--batch",
        "500",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{report}{}", text(&out.stderr));
    for line in [
        "throughput",
        "3000 accepted, 0 rejected",
        "ack latency",
        "searchable after",
        "index caught up",
        "server memory",
        "bytes on disk",
    ] {
        assert!(report.contains(line), "missing {line:?} in:\n{report}");
    }
    assert!(!report.contains("NOT within"), "{report}");

    let out = run(&[
        "bench",
        "query",
        "--iterations",
        "5",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{report}{}", text(&out.stderr));
    for line in [
        "one correlationId",
        "one target.id, newest 100",
        "one account's failures in 24 h, newest 100",
        "full-text word, newest 100",
        "counts by action over 7 days",
    ] {
        assert!(report.contains(line), "missing {line:?} in:\n{report}");
    }
}
