//! A full disk (issue #13): ingest answers 507 with a clear message, nothing is corrupted, and the
//! server recovers by itself — ingest and search — once space is freed.
//!
//! The test mounts a small tmpfs, so it needs root (the README test command runs as root in CI).

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::server::{ADMIN_KEY, Server, enc, event, get, request};
use crate::{text, trailkeep};

/// A tmpfs of `size`, unmounted when dropped.
struct SmallDisk(PathBuf);

/// `program` as root: directly when this is root, else through `sudo -n` (no password prompt).
fn as_root(program: &str) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| text(&o.stdout).trim() == "0");
    if root {
        Command::new(program)
    } else {
        let mut c = Command::new("sudo");
        c.args(["-n", program]);
        c
    }
}

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(at).unwrap();
        let out = as_root("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=1777"),
                "trailkeep-test",
            ])
            .arg(at)
            .output()
            .expect("the mount command runs");
        assert!(
            out.status.success(),
            "mounting a {size} tmpfs failed: this test needs root or password-less sudo, as \
             ./scripts/test has in CI: {}",
            text(&out.stderr)
        );
        SmallDisk(at.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = as_root("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros to `path` until the file system is full.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(28), "filling the disk: {e}");
                break;
            }
        }
    }
    written
}

fn post_batch(server: &Server, ids: &[String]) -> crate::server::Reply {
    let batch: Vec<Value> = ids
        .iter()
        .map(|id| event("acct-full", id, "kms.secrets.rotate", "success", "key-1"))
        .collect();
    request(
        "POST",
        &format!("{}/v1/events", server.url),
        Some(ADMIN_KEY),
        &[("Content-Type", "application/json")],
        Some(Value::Array(batch).to_string().as_bytes()),
    )
}

/// Ids of the test's events the server has, with how often each is stored (from an export).
fn stored_ids(server: &Server) -> HashMap<String, usize> {
    let r = get(
        server,
        &format!(
            "/v1/export?format=ndjson&from=2000-01-01T00:00:00Z&q={}",
            enc("account:acct-full AND NOT action:trailkeep.*")
        ),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let mut ids = HashMap::new();
    for line in r.text().lines() {
        let item: Value = serde_json::from_str(line).unwrap();
        *ids.entry(item["event"]["id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    ids
}

fn searchable(server: &Server) -> u64 {
    let r = get(
        server,
        &format!(
            "/v1/aggregate?from=2000-01-01T00:00:00Z&q={}",
            enc("account:acct-full AND NOT action:trailkeep.*")
        ),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["total"].as_u64().unwrap()
}

#[test]
fn a_full_disk_answers_507_corrupts_nothing_and_recovers_when_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(&dir.path().join("small"), "48m");
    let data = disk.0.join("data");
    let ballast = disk.0.join("ballast");
    let server = Server::start(&data, &[]);
    let mut acked: HashSet<String> = HashSet::new();
    let mut refused: HashSet<String> = HashSet::new();
    let mut batch_no = 0;
    let mut next_batch = || {
        batch_no += 1;
        (0..40)
            .map(|i| format!("full-{batch_no}-{i}"))
            .collect::<Vec<_>>()
    };
    for _ in 0..5 {
        let ids = next_batch();
        let r = post_batch(&server, &ids);
        assert_eq!(r.status, 200, "{}", r.text());
        acked.extend(ids);
    }

    // The disk fills up (with something else): ingest is refused with 507, whole requests at a
    // time, with a message that says what happened.
    let filled = fill(&ballast);
    let (mut full_answers, mut tries) = (0, 0);
    while full_answers < 5 {
        tries += 1;
        assert!(tries < 500, "the server never answered 507");
        let ids = next_batch();
        let r = post_batch(&server, &ids);
        match r.status {
            // A partly used page of a file can still take a few records.
            200 => acked.extend(ids),
            507 => {
                let body = r.json();
                assert_eq!(body["error"]["code"], "insufficient_storage", "{body}");
                let message = body["error"]["message"].as_str().unwrap();
                assert!(message.contains("disk is full"), "{message}");
                refused.extend(ids);
                full_answers += 1;
            }
            s => panic!("a full disk answered {s}: {}", r.text()),
        }
    }
    // The other stores say the same: a saved view cannot be written, and nothing is changed.
    let view =
        serde_json::json!({"name": "full", "account": "acct-full", "query": "outcome:failure"});
    let r = crate::server::post_json(&server, "/v1/views", &view);
    assert_eq!(r.status, 507, "{}", r.text());
    assert_eq!(
        r.json()["error"]["code"],
        "insufficient_storage",
        "{}",
        r.text()
    );
    let views = get(&server, "/v1/views?account=acct-full").json();
    assert!(
        !views.to_string().contains("\"full\""),
        "a view refused for a full disk is not listed: {views}"
    );
    // A little space comes back and is taken by the ledger at once, so the index's next commit
    // finds none: the index falls behind the ledger.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&ballast)
        .unwrap();
    f.set_len(filled - 1024 * 1024).unwrap();
    drop(f);
    loop {
        tries += 1;
        assert!(tries < 1000, "the ledger never filled the freed space");
        let ids = next_batch();
        let r = post_batch(&server, &ids);
        match r.status {
            200 => acked.extend(ids),
            507 => {
                refused.extend(ids);
                break;
            }
            s => panic!("a full disk answered {s}: {}", r.text()),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server
        .stderr_lines
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("catching up from the ledger when it can"))
    {
        assert!(
            Instant::now() < deadline,
            "the index never ran out of space: {:?}",
            server.stderr_lines.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Health checks and searches are still answered while the disk is full.
    assert_eq!(
        request("GET", &format!("{}/healthz", server.url), None, &[], None).status,
        200
    );
    let r = get(&server, "/v1/events?q=action:kms.secrets.rotate&limit=5");
    assert_eq!(r.status, 200, "{}", r.text());

    // Space is freed: the server takes events again by itself, without a restart.
    std::fs::remove_file(&ballast).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ids = next_batch();
        let r = post_batch(&server, &ids);
        if r.status == 200 {
            acked.extend(ids);
            break;
        }
        assert_eq!(r.status, 507, "{}", r.text());
        refused.extend(ids);
        assert!(Instant::now() < deadline, "ingest never recovered");
        std::thread::sleep(Duration::from_millis(200));
    }
    for _ in 0..5 {
        let ids = next_batch();
        let r = post_batch(&server, &ids);
        assert_eq!(r.status, 200, "{}", r.text());
        acked.extend(ids);
    }
    // The search index catches up with everything acknowledged, also by itself.
    let deadline = Instant::now() + Duration::from_secs(60);
    while searchable(&server) != acked.len() as u64 {
        assert!(
            Instant::now() < deadline,
            "the index holds {} of {} acknowledged events",
            searchable(&server),
            acked.len()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let check = |server: &Server| {
        let stored = stored_ids(server);
        for id in &acked {
            assert_eq!(stored.get(id), Some(&1), "acknowledged {id} stored once");
        }
        for id in &refused {
            assert!(!stored.contains_key(id), "refused {id} was stored");
        }
        let unknown: Vec<_> = stored.keys().filter(|id| !acked.contains(*id)).collect();
        assert!(
            unknown.is_empty(),
            "stored but never acknowledged: {unknown:?}"
        );
    };
    check(&server);
    server.stop();

    // Nothing is corrupted: the ledger verifies, and a restart finds exactly the same.
    let out = trailkeep(&["verify", "--data-dir", data.to_str().unwrap()], b"");
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let server = Server::start(&data, &[]);
    check(&server);
    assert_eq!(searchable(&server), acked.len() as u64);
    server.stop();
    println!(
        "disk full: {filled} bytes of ballast; {} events acknowledged, {} refused with 507 \
         ({full_answers} answers while full), all acknowledged present once after recovery and restart",
        acked.len(),
        refused.len()
    );
    drop(disk);
}
