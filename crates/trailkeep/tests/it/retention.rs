//! Retention (issue #8, part 3), end to end against the real server: bodies of expired records
//! are removed only past the policy and only in the account concerned, a signed retention record
//! states each removal, proofs and old checkpoints still verify with an independent verifier,
//! `trailkeep verify` passes (and fails on a removal nobody recorded), lowering a policy is
//! delayed and recorded while raising applies at once, nothing unarchived is removed, and a
//! kill -9 in the middle of a run leaves a consistent, verifiable ledger.
//!
//! The servers run with a retention "day" of a few seconds (`--retention-day`, a hidden test
//! option), so that records expire within the test.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::archive::{Garage, start_server as start_archiving_server};
use crate::server::{ADMIN_KEY, Server, enc, get, post_json, request};
use crate::verifier::{open_note, root_from_inclusion};
use crate::{text, trailkeep};

fn events(account: &str, batch: &str, n: u32) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({
                "id": format!("{account}-{batch}-{i:03}"),
                "eventTime": format!("2026-11-20T10:00:{:02}.5+0000", i % 60),
                "action": "codeengine.application.update",
                "outcome": "success",
                "initiator": {"id": format!("IBMid-{i}"), "name": format!("user{i}@example.com"),
                              "typeURI": "service/security/account/user"},
                "target": {"id": format!("crn:v1:bluemix:public:codeengine:us-south:a/{account}:p:application:app-{i}"),
                           "name": format!("app-{i}"), "typeURI": "codeengine/application"},
                "requestData": {"batch": batch, "pad": "x".repeat(200)},
                "logSourceCRN": format!("crn:v1:bluemix:public:codeengine:us-south:a/{account}:p::"),
            })
        })
        .collect()
}

fn ingest(server: &Server, events: &[Value]) {
    let r = post_json(server, "/v1/events", &Value::from(events.to_vec()));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["accepted"].as_u64(), Some(events.len() as u64));
}

fn cli(server: &Server, args: &[&str]) -> Value {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--json", "--url", &server.url, "--key", ADMIN_KEY]);
    let out = trailkeep(&all, b"");
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn run(server: &Server) -> Value {
    cli(server, &["retention", "run"])["run"].clone()
}

fn account_run<'a>(run: &'a Value, account: &str) -> Option<&'a Value> {
    run["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account"] == account)
}

fn get_event(server: &Server, id: &str, account: &str) -> crate::server::Reply {
    get(
        server,
        &format!("/v1/events/{id}?account={account}&proof=true"),
    )
}

fn search(server: &Server, q: &str, account: &str) -> Vec<Value> {
    let r = get(
        server,
        &format!("/v1/events?q={}&limit=1000&account={account}", enc(q)),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["events"].as_array().unwrap().clone()
}

fn wait_searchable(server: &Server, q: &str, account: &str, want: usize) {
    let started = Instant::now();
    while search(server, q, account).len() < want {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{q} in {account}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn leaf(bytes: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(bytes);
    h.finalize().into()
}

/// The latest checkpoint of `account`, checked with the verifier key: (note, size, root).
fn checkpoint(server: &Server, account: &str, key: &str) -> (String, u64, [u8; 32]) {
    let r = get(server, &format!("/v1/log/{account}/checkpoint"));
    assert_eq!(r.status, 200, "{}", r.text());
    let note = r.text();
    let body = open_note(&note, key).to_string();
    let lines: Vec<&str> = body.lines().collect();
    let size = lines[1].parse().unwrap();
    let root = B64.decode(lines[2]).unwrap().try_into().unwrap();
    (note, size, root)
}

/// Waits until `account`'s latest checkpoint covers its whole log.
fn wait_checkpointed(server: &Server, account: &str, key: &str) -> (String, u64, [u8; 32]) {
    let started = Instant::now();
    loop {
        let logs = get(server, "/v1/log").json();
        let size = logs["logs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["account"] == account)
            .and_then(|l| l["size"].as_u64());
        let cp = checkpoint(server, account, key);
        if Some(cp.1) == size {
            return cp;
        }
        assert!(started.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Checks with the independent verifier that `bytes` is leaf `index` of `account`'s current
/// signed tree, from a proof the server computes now.
fn check_inclusion(server: &Server, account: &str, key: &str, index: u64, bytes: &[u8]) {
    let (_, size, root) = checkpoint(server, account, key);
    let r = get(
        server,
        &format!("/v1/log/{account}/proof/inclusion?index={index}&size={size}"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let hashes: Vec<[u8; 32]> = r.json()["hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| B64.decode(h.as_str().unwrap()).unwrap().try_into().unwrap())
        .collect();
    assert_eq!(
        root_from_inclusion(index, size, leaf(bytes), &hashes),
        Some(root),
        "{account}/{index} is still provably in the signed tree"
    );
}

fn verify_dir(data: &Path) -> (bool, String) {
    let out = trailkeep(
        &[
            "verify",
            "--data-dir",
            data.join("ledger").to_str().unwrap(),
        ],
        b"",
    );
    (
        out.status.success(),
        format!("{}{}", text(&out.stdout), text(&out.stderr)),
    )
}

#[test]
fn retention_removes_expired_bodies_with_a_signed_record_and_everything_still_verifies_issue_8() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let server = Server::start(
        &data,
        &["--retention-day", "4s", "--retention-lowering-delay", "5s"],
    );
    let key = get(&server, "/v1/log/key").text().trim().to_string();
    ingest(&server, &events("acme", "old", 40));
    ingest(&server, &events("globex", "old", 40));
    wait_searchable(&server, "requestData.batch:old", "acme", 40);
    wait_searchable(&server, "requestData.batch:old", "globex", 40);
    let old_item = get_event(&server, "acme-old-005", "acme").json();
    let old_bytes = trailkeep_event::to_canonical_vec(&old_item["event"]);
    let old_index = old_item["index"].as_u64().unwrap();
    let (old_note, old_size, old_root) = wait_checkpointed(&server, "acme", &key);
    // A witness (`trailkeep verify --url`) remembers the checkpoints it saw before retention.
    let state = dir.path().join("witness.json");
    let witness = |server: &Server| {
        let out = trailkeep(
            &[
                "verify",
                "--url",
                &server.url,
                "--key",
                ADMIN_KEY,
                "--verifier-key",
                &key,
                "--state",
                state.to_str().unwrap(),
            ],
            b"",
        );
        assert!(
            out.status.success(),
            "{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    };
    witness(&server);

    // The old records are more than one (four-second) day old from here on.
    std::thread::sleep(Duration::from_millis(4100));

    // Lowering (from "forever" to one day) is recorded now and waits for the delay.
    let set = cli(&server, &["retention", "set", "acme", "--days", "1"]);
    assert_eq!(set["result"], "pending", "{set}");
    // Before the delay: nothing is removed although the records are old enough for one day.
    let early = run(&server);
    assert!(account_run(&early, "acme").is_none(), "{early}");
    assert_eq!(get_event(&server, "acme-old-005", "acme").status, 200);
    assert_eq!(set["policy"]["days"], Value::Null);
    assert_eq!(set["policy"]["pending"]["days"], 1);
    let shown = cli(&server, &["retention", "show", "--account", "acme"]);
    assert!(shown["pending"]["effectiveAt"].is_string(), "{shown}");
    let table = trailkeep(
        &[
            "retention",
            "show",
            "--url",
            &server.url,
            "--key",
            ADMIN_KEY,
        ],
        b"",
    );
    let table = text(&table.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("acme") && l.contains("lowering to 1 days pending until")),
        "{table}"
    );
    wait_searchable(&server, "action:trailkeep.retention.update", "acme", 1);
    let recorded = search(&server, "action:trailkeep.retention.update", "acme");
    assert_eq!(recorded[0]["event"]["requestData"]["result"], "pending");
    // Only admins change policies.
    let reader = post_json(
        &server,
        "/v1/keys",
        &json!({"name": "reader", "role": "reader", "accounts": ["acme"]}),
    );
    assert_eq!(reader.status, 201, "{}", reader.text());
    let reader_key = reader.json()["secret"].as_str().unwrap().to_string();
    let denied = request(
        "PUT",
        &format!("{}/v1/retention/acme", server.url),
        Some(&reader_key),
        &[("Content-Type", "application/json")],
        Some(br#"{"days": 1}"#),
    );
    assert_eq!(denied.status, 403, "{}", denied.text());
    let own = request(
        "GET",
        &format!("{}/v1/retention/acme", server.url),
        Some(&reader_key),
        &[],
        None,
    );
    assert_eq!(own.status, 200, "{}", own.text());
    let other = request(
        "GET",
        &format!("{}/v1/retention/globex", server.url),
        Some(&reader_key),
        &[],
        None,
    );
    assert_eq!(
        other.status, 404,
        "another account's policy is as missing as a missing one"
    );

    // After the delay the policy applies.
    let started = Instant::now();
    loop {
        let p = get(&server, "/v1/retention/acme").json();
        if p["pending"].is_null() {
            assert_eq!(p["days"], 1);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{p}");
        std::thread::sleep(Duration::from_millis(200));
    }
    ingest(&server, &events("acme", "new", 10));
    wait_searchable(&server, "requestData.batch:new", "acme", 10);
    let r = run(&server);
    let acme = account_run(&r, "acme").unwrap_or_else(|| panic!("{r}"));
    assert!(acme["error"].is_null(), "{r}");
    assert_eq!(acme["from"], 0);
    let to = acme["to"].as_u64().unwrap();
    let new_first = get_event(&server, "acme-new-000", "acme").json()["index"]
        .as_u64()
        .unwrap();
    assert!(
        to > 40 && to <= new_first,
        "removed [0, {to}), new from {new_first}: {r}"
    );
    assert!(acme["segments"].as_u64().unwrap() >= 1 && acme["bytes"].as_u64().unwrap() > 0);
    assert!(
        account_run(&r, "globex").is_none(),
        "globex keeps everything: {r}"
    );

    // Removed: not found, not searchable; the new ones and every globex event stay.
    assert_eq!(get_event(&server, "acme-old-005", "acme").status, 404);
    assert!(search(&server, "requestData.batch:old", "acme").is_empty());
    assert_eq!(search(&server, "requestData.batch:new", "acme").len(), 10);
    assert_eq!(search(&server, "requestData.batch:old", "globex").len(), 40);
    // The index forgets them too: aggregations stop counting them once the indexer committed.
    let count = |account: &str| {
        let r = get(
            &server,
            &format!(
                "/v1/aggregate?from=2000-01-01T00:00:00Z&account={account}&q={}",
                enc("requestData.batch:old")
            ),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["total"].as_u64().unwrap()
    };
    let started = Instant::now();
    while count("acme") > 0 {
        assert!(started.elapsed() < Duration::from_secs(20), "still counted");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(count("globex"), 40);
    let policy = get(&server, "/v1/retention/acme").json();
    assert_eq!(policy["removedThrough"].as_u64(), Some(to), "{policy}");
    let metrics = get(&server, "/metrics").text();
    let removed_metric = metrics
        .lines()
        .find(|l| l.starts_with("trailkeep_retention_removed_records_total "))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert_eq!(
        removed_metric.rsplit(' ').next(),
        Some(to.to_string().as_str())
    );

    // The retention record states the range, the policy and the cut-off.
    wait_searchable(&server, "action:trailkeep.retention.apply", "acme", 1);
    let stated = search(&server, "action:trailkeep.retention.apply", "acme");
    let s = &stated[0]["event"]["requestData"]["retention"];
    assert_eq!(
        (s["from"].as_u64(), s["to"].as_u64()),
        (Some(0), Some(to)),
        "{s}"
    );
    assert_eq!(s["days"], 1);
    assert_eq!(s["basis"], "receivedAt");
    assert!(s["cutoff"].is_string() && s["reason"].is_string(), "{s}");
    assert_eq!(
        stated[0]["index"].as_u64(),
        acme["retentionRecord"].as_u64()
    );

    // Proofs: the removed event is still provably in the current signed tree, and the old
    // checkpoint is still consistent with the tree.
    check_inclusion(&server, "acme", &key, old_index, &old_bytes);
    let (_, now_size, now_root) = checkpoint(&server, "acme", &key);
    let r = get(
        &server,
        &format!("/v1/log/acme/proof/consistency?from={old_size}&to={now_size}"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let hashes: Vec<[u8; 32]> = r.json()["hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| B64.decode(h.as_str().unwrap()).unwrap().try_into().unwrap())
        .collect();
    trailkeep_ledger::verifier::verify_consistency(
        old_size, now_size, &old_root, &now_root, &hashes,
    )
    .expect("the checkpoint signed before retention is consistent with the one after");
    assert!(old_note.contains(&format!("\n{old_size}\n")));

    // The witness checks that the log after retention extends the checkpoints it saw before.
    let seen = witness(&server);
    assert!(
        seen.lines()
            .any(|l| l.contains("acme") && l.contains("grew")),
        "{seen}"
    );

    // Raising applies at once.
    let raised = cli(&server, &["retention", "set", "acme", "--forever"]);
    assert_eq!(raised["result"], "applied", "{raised}");
    assert_eq!(raised["policy"]["days"], Value::Null);
    server.stop();

    let (ok, out) = verify_dir(&data);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("{to} bodies removed by recorded retention: OK")),
        "{out}"
    );

    // Tamper: a body removed without a retention record (a globex record turned into a
    // tombstone, CRCs recomputed) fails verification with its account, index and position.
    let (segment, position) = forge_tombstone(&data.join("ledger"), "globex", 3);
    let (ok, out) = verify_dir(&data);
    assert!(!ok, "{out}");
    assert!(out.contains("unrecorded-removal"), "{out}");
    assert!(out.contains("globex/3"), "{out}");
    assert!(out.contains(&format!("position {position}")), "{out}");
    assert!(out.contains(&segment), "{out}");
}

/// Rewrites the sealed segment holding `account`'s record `index` with that record replaced by a
/// tombstone naming the record after it as its "retention record", as someone with write access
/// to the data directory could. Returns the segment's name and the record's position.
fn forge_tombstone(ledger_dir: &Path, account: &str, index: u64) -> (String, u64) {
    use trailkeep_ledger::{frame, segment};
    for entry in std::fs::read_dir(ledger_dir.join("seg")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("sealed") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let idx = segment::parse_sealed(&bytes).unwrap();
        let dict = segment::load_dictionary(&idx, &bytes).unwrap();
        let raws: Vec<Vec<u8>> = idx
            .blocks
            .iter()
            .map(|b| {
                let c =
                    &bytes[b.offset as usize..(b.offset + u64::from(b.compressed_len)) as usize];
                segment::open_block_with(b, c, dict.as_ref()).unwrap()
            })
            .collect();
        let mut recs = Vec::new();
        for (b, raw) in idx.blocks.iter().zip(&raws) {
            recs.extend(segment::block_records(b, raw).unwrap());
        }
        let Some(k) = recs
            .iter()
            .position(|r| r.account == account && r.index == index)
        else {
            continue;
        };
        let tomb = frame::tombstone_data(&recs[k].leaf(), index + 1);
        recs[k] = frame::RawRecord {
            data: &tomb,
            removed: true,
            ..recs[k]
        };
        let sealed =
            segment::build_sealed(idx.header.first_position, &recs, Default::default()).unwrap();
        std::fs::write(&path, sealed).unwrap();
        let name = format!("seg/{}", path.file_name().unwrap().to_str().unwrap());
        return (name, recs[k].position);
    }
    panic!("{account}/{index} is in no sealed segment");
}

#[test]
fn nothing_unarchived_is_removed_when_an_archive_is_configured_issue_8() {
    let dir = tempfile::tempdir().unwrap();
    let garage = Garage::start(&dir.path().join("garage"));
    let data = dir.path().join("data");
    // The default policy from the configuration applies at once on a new server.
    let server = start_archiving_server(
        &data,
        &garage,
        "1h",
        &[
            ("TRAILKEEP_RETENTION_DAYS", "1"),
            ("TRAILKEEP_RETENTION_DAY", "1s"),
        ],
    );
    let status = get(&server, "/v1/retention").json();
    assert_eq!(status["default"]["days"], 1, "{status}");
    assert_eq!(status["archiveConfigured"], true);
    ingest(&server, &events("acme", "a", 30));
    wait_searchable(&server, "requestData.batch:a", "acme", 30);
    std::thread::sleep(Duration::from_millis(1200));

    // Due, but not archived: kept, and the run says why.
    let r = run(&server);
    let acme = account_run(&r, "acme").unwrap_or_else(|| panic!("{r}"));
    assert_eq!(acme["to"], acme["from"], "{r}");
    assert!(
        acme["heldBack"].as_str().unwrap().contains("not archived"),
        "{r}"
    );
    assert_eq!(get_event(&server, "acme-a-007", "acme").status, 200);

    // Archive what is checkpointed, then retention removes exactly what the archive holds.
    let key = get(&server, "/v1/log/key").text().trim().to_string();
    wait_checkpointed(&server, "acme", &key);
    let archived = cli(&server, &["archive", "run"]);
    let archived_count = archived["status"]["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account"] == "acme")
        .and_then(|a| a["archivedCount"].as_u64())
        .unwrap();
    assert!(archived_count >= 30, "{archived}");
    let r = run(&server);
    let acme = account_run(&r, "acme").unwrap_or_else(|| panic!("{r}"));
    let to = acme["to"].as_u64().unwrap();
    assert!(
        to > 0 && to <= archived_count,
        "removed up to {to}, archived {archived_count}: {r}"
    );
    assert_eq!(get_event(&server, "acme-a-007", "acme").status, 404);
    server.stop();
    let (ok, out) = verify_dir(&data);
    assert!(ok, "{out}");
}

#[test]
fn a_kill_9_during_a_retention_run_leaves_a_consistent_verifiable_ledger_issue_8() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let flags = ["--retention-days", "1", "--retention-day", "1s"];
    let server = Server::start(&data, &flags);
    for account in ["acme", "globex", "initech"] {
        ingest(&server, &events(account, "old", 30));
    }
    wait_searchable(&server, "requestData.batch:old", "initech", 30);
    drop(server);

    // The process dies (as by kill -9) at each step of a segment swap in turn: before the new
    // segment is written, and after it replaced the old one but before the run went on.
    for point in ["retention-before-swap", "retention-after-swap"] {
        let mut cmd_flags: Vec<&str> = flags.to_vec();
        cmd_flags.extend(["--retention-interval", "1h"]);
        let server =
            Server::start_with_env(&data, &cmd_flags, &[("TRAILKEEP_LEDGER_FAILPOINT", point)]);
        std::thread::sleep(Duration::from_millis(1100));
        // The connection breaks when the process dies.
        let answer = crate::server::agent()
            .post(&format!("{}/v1/retention/run", server.url))
            .set("Authorization", &format!("Bearer {ADMIN_KEY}"))
            .call();
        assert!(answer.is_err(), "the run did not reach {point}");
        let mut server = server;
        let status = server.child.wait().unwrap();
        assert!(!status.success(), "the server died at {point}");
        let (ok, out) = verify_dir(&data);
        assert!(ok, "after a crash at {point}: {out}");
    }

    // A normal run finishes the job; the new events stay.
    let server = Server::start(&data, &flags);
    ingest(&server, &events("globex", "new", 5));
    let r = run(&server);
    for a in ["acme", "globex", "initech"] {
        assert!(
            account_run(&r, a).is_none_or(|x| x["error"].is_null()),
            "{r}"
        );
        assert_eq!(
            get_event(&server, &format!("{a}-old-010"), a).status,
            404,
            "{a}: {r}"
        );
    }
    wait_searchable(&server, "requestData.batch:new", "globex", 5);
    for i in 0..5 {
        assert_eq!(
            get_event(&server, &format!("globex-new-{i:03}"), "globex").status,
            200
        );
    }
    server.stop();
    let (ok, out) = verify_dir(&data);
    assert!(ok, "{out}");
}

#[test]
fn a_lower_configured_default_is_delayed_and_recorded_in_the_system_account_issue_8() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let server = Server::start(&data, &[]);
    ingest(&server, &events("acme", "kept", 3));
    let status = get(&server, "/v1/retention").json();
    assert_eq!(status["default"]["days"], Value::Null, "{status}");
    server.stop();

    // Restarted with a default of 30 days: events that were kept forever would now expire, so
    // the change waits for the lowering delay and is recorded.
    let server = Server::start(&data, &["--retention-days", "30"]);
    let status = get(&server, "/v1/retention").json();
    assert_eq!(status["default"]["days"], Value::Null, "{status}");
    assert_eq!(status["default"]["pending"]["days"], 30, "{status}");
    assert_eq!(status["default"]["pending"]["requestedBy"], "configuration");
    assert_eq!(status["loweringDelaySeconds"], 7 * 86_400);
    let acme = get(&server, "/v1/retention/acme").json();
    assert_eq!(
        (acme["source"].as_str(), acme["days"].clone()),
        (Some("default"), Value::Null)
    );
    assert_eq!(acme["pending"]["days"], 30, "{acme}");
    wait_searchable(
        &server,
        "action:trailkeep.retention.default.update",
        "trailkeep",
        1,
    );
    let recorded = search(
        &server,
        "action:trailkeep.retention.default.update",
        "trailkeep",
    );
    assert_eq!(recorded[0]["event"]["requestData"]["days"], 30);
    assert_eq!(recorded[0]["event"]["responseData"]["result"], "pending");
    server.stop();

    // The same configuration again: nothing new is recorded, the pending change stays.
    let server = Server::start(&data, &["--retention-days", "30"]);
    let status = get(&server, "/v1/retention").json();
    assert_eq!(status["default"]["pending"]["days"], 30, "{status}");
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        search(
            &server,
            "action:trailkeep.retention.default.update",
            "trailkeep"
        )
        .len(),
        1
    );
    server.stop();
}
