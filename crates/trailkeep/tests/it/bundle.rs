//! Evidence bundles (issue #8): `trailkeep export --format bundle` from a real server and
//! `trailkeep verify --bundle` offline, with tamper tests — change, drop, add and reorder an
//! event, swap a checkpoint, a wrong key — each failing with a precise message.

use std::path::{Path, PathBuf};
use std::process::Output;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use crate::export::{READER_KEY, sample_events, wait_for_total, write_reader_key};
use crate::server::{ADMIN_KEY, Server, get, post_json, request};
use crate::{text, trailkeep};

fn verify(bundle: &Path, key_file: Option<&Path>) -> (Output, String) {
    let mut args = vec!["verify", "--bundle", bundle.to_str().unwrap()];
    if let Some(k) = key_file {
        args.extend(["--key-file", k.to_str().unwrap()]);
    }
    let out = trailkeep(&args, b"");
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    (out, all)
}

/// Verification fails (exit 1) and says each of `expected`.
fn fails_with(bundle: &Path, key: &Path, expected: &[&str]) {
    let (out, all) = verify(bundle, Some(key));
    assert_eq!(out.status.code(), Some(1), "{all}");
    for e in expected {
        assert!(all.contains(e), "expected {e:?} in:\n{all}");
    }
    assert!(all.contains("the bundle does NOT verify"), "{all}");
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| format!("{l}\n"))
        .collect()
}

fn write_lines(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, lines.concat()).unwrap();
    p
}

fn entry(line: &str) -> Value {
    serde_json::from_str(line).unwrap()
}

fn to_line(v: &Value) -> String {
    format!("{}\n", serde_json::to_string(v).unwrap())
}

/// Index of the line holding event `seq`.
fn event_line(lines: &[String], seq: u64) -> usize {
    lines
        .iter()
        .position(|l| {
            let e = entry(l);
            e["type"] == "event" && e["seq"] == seq
        })
        .unwrap()
}

fn export_bundle(server: &Server, file: &Path, extra: &[&str]) {
    let mut args = vec![
        "export",
        "--url",
        &server.url,
        "--key",
        ADMIN_KEY,
        "--format",
        "bundle",
        "--output",
        file.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = trailkeep(&args, b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn evidence_bundle_verifies_offline_and_every_tampering_fails_precisely() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = d.join("data");
    write_reader_key(&data);
    let server = Server::start(&data, &[]);
    let r = post_json(&server, "/v1/events", &Value::Array(sample_events()));
    assert_eq!(r.json()["accepted"], 25, "{}", r.text());
    wait_for_total(&server, 25);
    let key = d.join("server.pub");
    std::fs::write(&key, get(&server, "/v1/log/key").text()).unwrap();

    let bundle = d.join("all.tkbundle");
    // The services' events, without the server's own records of the tests' reads.
    export_bundle(&server, &bundle, &["NOT action:trailkeep.*"]);
    let (out, all) = verify(&bundle, Some(&key));
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains("ok    25 events proven in 2 logs (") && all.contains("(pinned)"),
        "{all}"
    );
    // Without a pinned key the bundle's own key is used, and the output says so.
    let (out, all) = verify(&bundle, None);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("taken from the bundle"), "{all}");

    // The bundle holds the exact stored bytes: each event's leaf hash is what the server proves.
    let original = lines(&bundle);
    let first = entry(&original[event_line(&original, 0)]);
    let bytes = B64.decode(first["bytes"].as_str().unwrap()).unwrap();
    let searched = get(
        &server,
        &format!(
            "/v1/events/{}?account={}",
            entry(&original[event_line(&original, 0)])["bytes"]
                .as_str()
                .map(|_| serde_json::from_slice::<Value>(&bytes).unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_string())
                .unwrap(),
            first["account"].as_str().unwrap()
        ),
    )
    .json();
    assert_eq!(
        serde_json::from_slice::<Value>(&bytes).unwrap(),
        searched["event"]
    );
    assert_eq!(searched["index"], first["index"]);

    // Change one event (its message).
    let mut changed = original.clone();
    let at = event_line(&changed, 3);
    let mut e = entry(&changed[at]);
    let mut ev: Value =
        serde_json::from_slice(&B64.decode(e["bytes"].as_str().unwrap()).unwrap()).unwrap();
    ev["outcome"] = json!("success");
    ev["message"] = json!("nothing to see here");
    e["bytes"] = json!(B64.encode(serde_json::to_vec(&ev).unwrap()));
    let what = format!(
        "event #3 ({}/{})",
        e["account"].as_str().unwrap(),
        e["index"]
    );
    changed[at] = to_line(&e);
    fails_with(
        &write_lines(d, "changed", &changed),
        &key,
        &[
            &format!(
                "line {}: {what}: its bytes and proof do not lead to the root of checkpoint",
                at + 1
            ),
            "the bytes before the trailer do not match its signed SHA-256",
        ],
    );

    // Drop one event.
    let mut dropped = original.clone();
    let at = event_line(&dropped, 4);
    dropped.remove(at);
    fails_with(
        &write_lines(d, "dropped", &dropped),
        &key,
        &[
            &format!(
                "line {}: event #5 where #4 was expected: event #4 is missing here",
                at + 1
            ),
            "the trailer says 25 events, the bundle holds 24",
            "the signed trailer covers 25 events, the bundle holds 24",
        ],
    );

    // Add an event: a copy of one, first as is, then renumbered so the sequence looks whole.
    let mut added = original.clone();
    let at = event_line(&added, 6);
    added.insert(at + 1, added[at].clone());
    fails_with(
        &write_lines(d, "added", &added),
        &key,
        &[&format!(
            "line {}: event #6 where #7 was expected: this event is repeated or out of order",
            at + 2
        )],
    );
    for line in added.iter_mut().skip(at + 1) {
        let mut e = entry(line);
        if e["type"] == "event" {
            e["seq"] = json!(e["seq"].as_u64().unwrap() + 1);
        } else if e["type"] == "end" {
            e["events"] = json!(26);
        }
        *line = to_line(&e);
    }
    fails_with(
        &write_lines(d, "added-renumbered", &added),
        &key,
        &["the signed trailer covers 25 events, the bundle holds 26"],
    );

    // Reorder two events.
    let mut reordered = original.clone();
    let (a, b) = (event_line(&reordered, 10), event_line(&reordered, 11));
    reordered.swap(a, b);
    fails_with(
        &write_lines(d, "reordered", &reordered),
        &key,
        &[
            &format!(
                "line {}: event #11 where #10 was expected: event #10 is missing here",
                a + 1
            ),
            &format!(
                "line {}: event #10 where #12 was expected: this event is repeated or out of order",
                b + 1
            ),
            "the bytes before the trailer do not match its signed SHA-256",
        ],
    );

    // Swap in another genuine checkpoint of the same log (taken after the log grew).
    let more: Vec<Value> = (0..3)
        .map(|i| {
            let mut e = sample_events()[0].clone();
            e["id"] = json!(format!("later-{i}"));
            e
        })
        .collect();
    assert_eq!(
        post_json(&server, "/v1/events", &Value::Array(more)).json()["accepted"],
        3
    );
    wait_for_total(&server, 28);
    let later = d.join("later.tkbundle");
    export_bundle(&server, &later, &["--account", "acme"]);
    let later_cp = lines(&later)
        .into_iter()
        .find(|l| entry(l)["type"] == "checkpoint")
        .unwrap();
    let mut swapped = original.clone();
    let at = swapped
        .iter()
        .position(|l| entry(l)["type"] == "checkpoint" && entry(l)["account"] == "acme")
        .unwrap();
    assert_ne!(swapped[at], later_cp);
    swapped[at] = later_cp;
    fails_with(
        &write_lines(d, "swapped", &swapped),
        &key,
        &[
            "(acme/",
            // Which check fails first depends on the two tree sizes (the server's own audit
            // records grow the log too): the proof's length or its root.
            "checkpoint",
            "the bytes before the trailer do not match its signed SHA-256",
        ],
    );

    // A checkpoint of another account's log put in place of acme's.
    let mut foreign = original.clone();
    let globex = foreign
        .iter()
        .position(|l| entry(l)["type"] == "checkpoint" && entry(l)["account"] == "globex")
        .unwrap();
    let mut e = entry(&foreign[at]);
    e["checkpoint"] = entry(&foreign[globex])["checkpoint"].clone();
    foreign[at] = to_line(&e);
    fails_with(
        &write_lines(d, "foreign", &foreign),
        &key,
        &[
            &format!(
                "line {}: the checkpoint given for account acme is of another log (",
                at + 1
            ),
            &format!(
                "line {}: 20 events of account acme cannot be proven: its checkpoint did not verify",
                at + 1
            ),
        ],
    );

    // The wrong key: another signer's key pinned.
    let other = trailkeep_ledger::NoteSigner::generate("impostor.example/log").unwrap();
    let other_key = d.join("other.pub");
    std::fs::write(&other_key, other.verifier().to_key_string()).unwrap();
    fails_with(
        &bundle,
        &other_key,
        &[
            "line 1: the bundle names verifier key",
            "not the pinned key impostor.example/log+",
            "the checkpoint of account acme is not validly signed by key impostor.example/log+",
            "the trailer is not validly signed by key impostor.example/log+",
        ],
    );

    // Cut short: the trailer is gone.
    let mut cut = original.clone();
    cut.pop();
    fails_with(
        &write_lines(d, "cut", &cut),
        &key,
        &["the bundle has no signed trailer"],
    );

    // Over HTTP, a reader's bundle holds only its account, and verifies.
    let r = request(
        "GET",
        &format!(
            "{}/v1/export?format=bundle&q={}",
            server.url,
            crate::server::enc("NOT action:trailkeep.*")
        ),
        Some(READER_KEY),
        &[],
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.content_type,
        "application/vnd.trailkeep.evidence-bundle+jsonl"
    );
    let reader_bundle = write_lines(d, "reader", &[r.text()]);
    let (out, all) = verify(&reader_bundle, Some(&key));
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains("ok    23 events proven in 1 logs (acme@"),
        "{all}"
    );
    assert!(!r.text().contains("\"globex\""));
}
