//! Views (issue #6): persisted CRUD with per-account authorisation, `view=` on search, the CLI.

use std::path::Path;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::server::{ADMIN_KEY, Server, enc, event, request, wait_for};
use crate::{text, trailkeep};

pub const MANAGER_ACME: &str = "manager-acme-key-0123456789";
pub const READER_ACME: &str = "reader-acme-key-0123456789";
pub const READER_BETA: &str = "reader-beta-key-0123456789";
pub const WRITER_ACME: &str = "writer-acme-key-0123456789";

/// Writes `keys.json` with one key per role before the server first starts (the key API is
/// issue #5's; the stored format is `auth.rs`'s).
pub fn write_keys(data_dir: &Path) {
    std::fs::create_dir_all(data_dir).unwrap();
    let key = |id: &str, role: &str, account: &str, secret: &str| {
        json!({
            "id": id, "name": id, "role": role,
            "accounts": {"kind": "only", "ids": [account]},
            "defaultAccount": account,
            "createdAt": "2026-11-21T00:00:00+00:00",
            "secretSha256": hex::encode(Sha256::digest(secret.as_bytes())),
        })
    };
    let file = json!({"version": 1, "keys": [
        key("manager-acme", "manager", "acme", MANAGER_ACME),
        key("reader-acme", "reader", "acme", READER_ACME),
        key("reader-beta", "reader", "beta", READER_BETA),
        key("writer-acme", "writer", "acme", WRITER_ACME),
    ]});
    std::fs::write(data_dir.join("keys.json"), file.to_string()).unwrap();
}

pub fn call(
    server: &Server,
    key: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let body_bytes = body.map(|b| b.to_string().into_bytes());
    let r = request(
        method,
        &format!("{}{path}", server.url),
        Some(key),
        &[("Content-Type", "application/json")],
        body_bytes.as_deref(),
    );
    let v = if r.body.is_empty() {
        Value::Null
    } else {
        r.json()
    };
    (r.status, v)
}

pub fn ingest(server: &Server, events: &[Value]) {
    let (status, report) = call(
        server,
        ADMIN_KEY,
        "POST",
        "/v1/events",
        Some(&Value::Array(events.to_vec())),
    );
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["accepted"], events.len(), "{report}");
}

fn ids(search: &Value) -> Vec<String> {
    search["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["event"]["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn views_crud_with_account_scoped_roles_search_through_a_view_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_keys(&data);
    let server = Server::start(&data, &[]);
    let target = "crn:v1:bluemix:public:codeengine:us-south:a/acme:p1:application:web";
    // Recent event times, so the view's 24 h window covers them.
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let mut events = vec![
        event(
            "acme",
            "a-1",
            "codeengine.application.create",
            "failure",
            target,
        ),
        event(
            "acme",
            "a-2",
            "codeengine.application.delete",
            "failure",
            target,
        ),
        event(
            "acme",
            "a-3",
            "codeengine.application.create",
            "success",
            target,
        ),
        event(
            "beta",
            "b-1",
            "codeengine.application.create",
            "failure",
            target,
        ),
    ];
    for e in &mut events {
        e["eventTime"] = json!(now);
    }
    ingest(&server, &events);
    wait_for(&server, "", 4);

    let body =
        json!({"name": "failures", "account": "acme", "query": "outcome:failure", "window": "24h"});
    // Who may write: managers and admins of the account.
    for key in [READER_ACME, WRITER_ACME] {
        let (status, answer) = call(&server, key, "POST", "/v1/views", Some(&body));
        assert_eq!(status, 403, "{answer}");
    }
    let (status, answer) = call(
        &server,
        MANAGER_ACME,
        "POST",
        "/v1/views",
        Some(&json!({"name": "x", "account": "beta", "query": ""})),
    );
    assert_eq!(
        status, 403,
        "a manager of acme cannot create a view of beta: {answer}"
    );
    let (status, answer) = call(
        &server,
        MANAGER_ACME,
        "POST",
        "/v1/views",
        Some(&json!({"name": "x", "account": "acme", "query": "outcome:(", "window": "soon"})),
    );
    assert_eq!(status, 422, "{answer}");
    let paths: Vec<&str> = answer["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["query", "window"], "{answer}");

    // A body that is not a JSON object answers in the API's error shape.
    for bad in [&b"{not json"[..], b"[1, 2]"] {
        let r = request(
            "POST",
            &format!("{}/v1/views", server.url),
            Some(MANAGER_ACME),
            &[],
            Some(bad),
        );
        assert_eq!(r.status, 400, "{}", r.text());
        assert_eq!(r.json()["error"]["code"], "bad_request");
    }

    let (status, view) = call(&server, MANAGER_ACME, "POST", "/v1/views", Some(&body));
    assert_eq!(status, 201, "{view}");
    let id = view["id"].as_str().unwrap().to_string();
    assert_eq!(view["owner"], "manager-acme");
    assert_eq!(view["account"], "acme");

    // Readers of the account list and read it; another account's reader sees nothing, and a
    // get answers exactly like a missing view.
    let (status, list) = call(&server, READER_ACME, "GET", "/v1/views", None);
    assert_eq!(status, 200);
    assert_eq!(list["views"].as_array().unwrap().len(), 1);
    let (_, list) = call(&server, READER_BETA, "GET", "/v1/views", None);
    assert_eq!(list["views"], json!([]));
    let (status_other, other) = call(
        &server,
        READER_BETA,
        "GET",
        &format!("/v1/views/{id}"),
        None,
    );
    let (status_missing, missing) =
        call(&server, READER_BETA, "GET", "/v1/views/view_nosuch", None);
    assert_eq!((status_other, &other), (status_missing, &missing));
    assert_eq!(status_other, 404);

    // Search through the view: its query and account; `q` narrows it further.
    let (status, found) = call(
        &server,
        READER_ACME,
        "GET",
        &format!("/v1/events?view={id}"),
        None,
    );
    assert_eq!(status, 200, "{found}");
    assert_eq!(ids(&found), ["a-2", "a-1"]);
    let q = enc("action:codeengine.application.delete");
    let (_, found) = call(
        &server,
        READER_ACME,
        "GET",
        &format!("/v1/events?view={id}&q={q}"),
        None,
    );
    assert_eq!(ids(&found), ["a-2"]);
    let (status, _) = call(
        &server,
        READER_BETA,
        "GET",
        &format!("/v1/events?view={id}"),
        None,
    );
    assert_eq!(status, 404, "another account's view cannot be searched");
    let (status, agg) = call(
        &server,
        READER_ACME,
        "GET",
        &format!("/v1/aggregate?view={id}&by=action"),
        None,
    );
    assert_eq!(status, 200, "{agg}");
    assert_eq!(agg["total"], 2);

    // Change it; a reader may not.
    // (The server's own audit records of this account succeed too: leave them out.)
    let change = json!({"query": "outcome:success AND NOT action:trailkeep.*"});
    let (status, _) = call(
        &server,
        READER_ACME,
        "PATCH",
        &format!("/v1/views/{id}"),
        Some(&change),
    );
    assert_eq!(status, 403);
    let (status, changed) = call(
        &server,
        MANAGER_ACME,
        "PATCH",
        &format!("/v1/views/{id}"),
        Some(&change),
    );
    assert_eq!(status, 200, "{changed}");
    let (_, found) = call(
        &server,
        READER_ACME,
        "GET",
        &format!("/v1/events?view={id}"),
        None,
    );
    assert_eq!(ids(&found), ["a-3"]);

    // The CLI: create, list, get, search --view, delete.
    let cli = |key: &str, args: &[&str]| {
        let mut all = vec![args[0]];
        if args.len() > 1 {
            all.push(args[1]);
        }
        let url = server.url.clone();
        let mut full: Vec<&str> = args.to_vec();
        full.extend(["--url", &url, "--key", key]);
        let out = trailkeep(&full, b"");
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    let (code, out, err) = cli(
        MANAGER_ACME,
        &[
            "views",
            "create",
            "--name",
            "deletes",
            "--account",
            "acme",
            "--query",
            "action:codeengine.application.delete",
            "--window",
            "7d",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    let cli_id = created["id"].as_str().unwrap().to_string();
    let (code, out, err) = cli(READER_ACME, &["views", "list"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&cli_id) && out.contains(&id), "{out}");
    let (code, out, _) = cli(READER_ACME, &["views", "get", &cli_id]);
    assert_eq!(code, Some(0));
    assert!(out.contains("\"window\": \"7d\""), "{out}");
    let (code, out, err) = cli(
        READER_ACME,
        &["search", "--view", &cli_id, "--format", "ndjson"],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("\"id\":\"a-2\""), "{out}");
    let (code, _, err) = cli(READER_BETA, &["views", "get", &cli_id]);
    assert_ne!(code, Some(0));
    assert!(err.contains("no view with this id"), "{err}");
    let (code, _, err) = cli(MANAGER_ACME, &["views", "delete", &cli_id]);
    assert_eq!(code, Some(0), "{err}");
    let (status, _) = call(
        &server,
        READER_ACME,
        "GET",
        &format!("/v1/views/{cli_id}"),
        None,
    );
    assert_eq!(status, 404);

    // tail --view follows new events of the view only (not the window's old ones).
    let mut tail = std::process::Command::new(env!("CARGO_BIN_EXE_trailkeep"))
        .args(["tail", "--view", &id, "--format", "ndjson"])
        .env("TRAILKEEP_URL", &server.url)
        .env("TRAILKEEP_KEY", READER_ACME)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = tail.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut fresh = vec![
        event(
            "beta",
            "b-2",
            "codeengine.application.create",
            "success",
            target,
        ),
        event(
            "acme",
            "a-5",
            "codeengine.application.create",
            "failure",
            target,
        ),
        event(
            "acme",
            "a-4",
            "codeengine.application.create",
            "success",
            target,
        ),
    ];
    let later = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    for e in &mut fresh {
        e["eventTime"] = json!(later);
    }
    ingest(&server, &fresh);
    let line = rx
        .recv_timeout(std::time::Duration::from_secs(15))
        .expect("tail prints the new event");
    let _ = tail.kill();
    let _ = tail.wait();
    let printed: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(printed["id"], "a-4", "{line}");

    // Views are durable.
    server.stop();
    let server = Server::start(&data, &[]);
    let (status, again) = call(
        &server,
        READER_ACME,
        "GET",
        &format!("/v1/views/{id}"),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(again["query"], "outcome:success AND NOT action:trailkeep.*");
    let (status, _) = call(
        &server,
        MANAGER_ACME,
        "DELETE",
        &format!("/v1/views/{id}"),
        None,
    );
    assert_eq!(status, 204);
    let (_, list) = call(&server, ADMIN_KEY, "GET", "/v1/views", None);
    assert_eq!(list["views"], json!([]));
}
