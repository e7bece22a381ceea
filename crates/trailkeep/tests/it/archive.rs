//! Archive to S3-compatible object storage and restore (issue #8, parts 4 and 5), against a real
//! Garage server (installed by `scripts/test` from crates.io; `TRAILKEEP_GARAGE` or
//! `~/.cache/trailkeep-ci/tools/garage/bin/garage`): objects under the documented keys, read back
//! by pyarrow through its own S3 client, a crash between the objects and the cursor update, an
//! unavailable bucket, and a restore into a fresh server whose proofs verify against the
//! original server's archived checkpoints.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::export::python;
use crate::server::{ADMIN_KEY, Server, enc, get, post_json, request};
use crate::verifier::{open_note, root_from_inclusion};
use crate::{text, trailkeep};

pub(crate) const BUCKET: &str = "tk-archive";

/// A single-node Garage on loopback ports, its data in a directory of the test.
pub(crate) struct Garage {
    bin: PathBuf,
    config: PathBuf,
    pub(crate) s3_port: u16,
    child: Option<Child>,
    pub(crate) key_id: String,
    pub(crate) secret: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn garage_binary() -> PathBuf {
    let bin = std::env::var_os("TRAILKEEP_GARAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME is set");
            Path::new(&home).join(".cache/trailkeep-ci/tools/garage/bin/garage")
        });
    assert!(
        bin.exists(),
        "Garage is missing at {}: run scripts/test (it installs it with `cargo install garage --locked \
         --root ~/.cache/trailkeep-ci/tools/garage`) or set TRAILKEEP_GARAGE",
        bin.display()
    );
    bin
}

impl Garage {
    /// Starts Garage in `dir` and brings up a layout, the bucket and a key.
    pub(crate) fn start(dir: &Path) -> Garage {
        std::fs::create_dir_all(dir).unwrap();
        let rpc = free_port();
        let s3_port = free_port();
        let admin = free_port();
        let secret: String = (0..32)
            .map(|i| format!("{:02x}", (i * 37 + 11) % 256))
            .collect();
        let config = dir.join("garage.toml");
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{meta}\"\ndata_dir = \"{data}\"\ndb_engine = \"sqlite\"\n\
                 replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\n\
                 [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3_port}\"\n\
                 root_domain = \".s3.garage.localhost\"\n\n\
                 [admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\nadmin_token = \"test-admin-token\"\n",
                meta = dir.join("meta").display(),
                data = dir.join("data").display(),
            ),
        )
        .unwrap();
        let mut g = Garage {
            bin: garage_binary(),
            config,
            s3_port,
            child: None,
            key_id: String::new(),
            secret: String::new(),
        };
        g.run_server();
        let node = g.cli(&["node", "id", "-q"]);
        let node = node.trim().split('@').next().unwrap().to_string();
        g.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
        g.cli(&["layout", "apply", "--version", "1"]);
        g.cli(&["bucket", "create", BUCKET]);
        let key = g.cli(&["key", "create", "tk-key"]);
        let field = |name: &str| {
            key.lines()
                .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_string()))
                .unwrap_or_else(|| panic!("no {name} in {key}"))
        };
        g.key_id = field("Key ID:");
        g.secret = field("Secret key:");
        g.cli(&[
            "bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", "tk-key",
        ]);
        g
    }

    pub(crate) fn run_server(&mut self) {
        let child = Command::new(&self.bin)
            .args(["-c"])
            .arg(&self.config)
            .arg("server")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("garage starts");
        self.child = Some(child);
        // Ready when the CLI reaches it over RPC and the S3 port accepts connections.
        let started = Instant::now();
        loop {
            let ok = Command::new(&self.bin)
                .arg("-c")
                .arg(&self.config)
                .args(["node", "id", "-q"])
                .output()
                .is_ok_and(|o| o.status.success())
                && std::net::TcpStream::connect(("127.0.0.1", self.s3_port)).is_ok();
            if ok {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "garage did not come up"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "garage {args:?}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    pub(crate) fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// The flags that make `serve` archive to this Garage.
    fn serve_flags(&self, interval: &str) -> Vec<String> {
        vec![
            "--archive-bucket".into(),
            BUCKET.into(),
            "--archive-endpoint".into(),
            self.endpoint(),
            "--archive-region".into(),
            "garage".into(),
            "--archive-access-key-id".into(),
            self.key_id.clone(),
            "--archive-interval".into(),
            interval.into(),
        ]
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `trailkeep serve` archiving to `garage`, the secret passed by environment as an operator
/// would, plus `env` (like `Server::start`, which sets no extra variables).
pub fn start_server(data: &Path, garage: &Garage, interval: &str, env: &[(&str, &str)]) -> Server {
    use std::io::BufRead as _;
    std::fs::create_dir_all(data).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_trailkeep"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(garage.serve_flags(interval))
        .env("TRAILKEEP_ADMIN_KEY", ADMIN_KEY)
        .env("TRAILKEEP_ARCHIVE_SECRET_ACCESS_KEY", &garage.secret)
        .env("TRAILKEEP_LOG", "warn")
        .env_remove("TRAILKEEP_CONFIG")
        .envs(env.iter().copied())
        .current_dir(data.parent().unwrap())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the server starts");
    let stderr = child.stderr.take().unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let _ = tx.send(
                        rest.split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_string(),
                    );
                }
                lines.lock().unwrap().push(line);
            }
        });
    }
    let Ok(url) = rx.recv_timeout(Duration::from_secs(60)) else {
        let _ = child.kill();
        panic!("the server did not start: {:?}", lines.lock().unwrap());
    };
    Server {
        child,
        url,
        stderr_lines: lines,
    }
}

/// Events of `acme` in us-south and eu-de, and of `globex` without a location (global) and in
/// jp-tok, tagged `batch` so each batch can be counted.
fn events(batch: &str, n: u32) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let (account, location) = match i % 4 {
                0 => ("acme", "us-south"),
                1 => ("acme", "eu-de"),
                2 => ("globex", ""),
                _ => ("globex", "jp-tok"),
            };
            json!({
                "id": format!("{batch}-{i:04}"),
                "eventTime": format!("2026-11-20T10:{:02}:{:02}.5+0000", i / 60 % 60, i % 60),
                "action": "codeengine.application.create",
                "outcome": if i % 5 == 0 { "failure" } else { "success" },
                "initiator": {"id": format!("IBMid-{i}"), "name": format!("user{i}@example.com"),
                              "typeURI": "service/security/account/user"},
                "target": {"id": format!("crn:v1:bluemix:public:codeengine:{location}:a/{account}:p:application:app-{i}"),
                           "name": format!("app-{i}"), "typeURI": "codeengine/application"},
                "correlationId": format!("{batch}-corr-{i}"),
                "logSourceCRN": format!("crn:v1:bluemix:public:codeengine:{location}:a/{account}:p::"),
            })
        })
        .collect()
}

fn ingest(server: &Server, events: &[Value]) {
    let r = post_json(server, "/v1/events", &Value::from(events.to_vec()));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["accepted"].as_u64(), Some(events.len() as u64));
}

fn status(server: &Server) -> Value {
    let r = get(server, "/v1/archive");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn account_status(status: &Value, account: &str) -> Value {
    status["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account"] == account)
        .cloned()
        .unwrap_or_else(|| panic!("no {account} in {status}"))
}

/// Waits until every account's latest checkpoint covers its whole log (checkpoints are signed
/// about once a second), so a run archives all of it.
fn wait_checkpointed(server: &Server, accounts: &[&str]) {
    let started = Instant::now();
    loop {
        let s = status(server);
        let logs = get(server, "/v1/log").json();
        let done = accounts.iter().all(|a| {
            let st = s["accounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["account"] == *a)
                .cloned()
                .unwrap_or(Value::Null);
            let size = logs["logs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["account"] == *a)
                .map(|l| l["size"].clone());
            size.is_some_and(|size| st["checkpointSize"] == size)
        });
        if done {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn archive_run(server: &Server) -> Value {
    let out = trailkeep(
        &[
            "archive",
            "run",
            "--json",
            "--url",
            &server.url,
            "--key",
            ADMIN_KEY,
        ],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn list_objects(server: &Server) -> Vec<(String, u64)> {
    let out = trailkeep(
        &[
            "archive",
            "list",
            "--json",
            "--url",
            &server.url,
            "--key",
            ADMIN_KEY,
        ],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["key"].as_str().unwrap().to_string(),
                o["size"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// pyarrow, through its own S3 client, reads every archived Parquet object and manifest.
const READ_ARCHIVE: &str = r#"
import json, sys
import pyarrow.fs as pafs, pyarrow.parquet as pq
endpoint, key, secret, bucket = sys.argv[1:5]
fs = pafs.S3FileSystem(access_key=key, secret_key=secret, endpoint_override=endpoint,
                       scheme="http", region="garage")
out = {}
for info in fs.get_file_info(pafs.FileSelector(bucket, recursive=True)):
    if info.type != pafs.FileType.File:
        continue
    rel = info.path[len(bucket) + 1:]
    if rel.endswith(".parquet"):
        t = pq.read_table(info.path, filesystem=fs)
        out[rel] = {"num_rows": t.num_rows, "account": t.column("account").to_pylist(),
                    "index": t.column("index").to_pylist(), "event": t.column("event").to_pylist(),
                    "mtime_ns": info.mtime_ns}
    elif rel.endswith(".manifest.json"):
        with fs.open_input_stream(info.path) as f:
            out[rel] = {"manifest": json.loads(f.read()), "mtime_ns": info.mtime_ns}
print(json.dumps(out))
"#;

fn read_archive_with_pyarrow(garage: &Garage) -> BTreeMap<String, Value> {
    let out = Command::new(python())
        .args(["-c", READ_ARCHIVE])
        .args([
            format!("127.0.0.1:{}", garage.s3_port),
            garage.key_id.clone(),
            garage.secret.clone(),
            BUCKET.to_string(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "pyarrow: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn leaf_b64(bytes: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(bytes);
    B64.encode(h.finalize())
}

/// What pyarrow found, per account: index → event text; and checks every index is archived once
/// and every row matches its manifest.
fn archived_rows(objects: &BTreeMap<String, Value>) -> BTreeMap<String, BTreeMap<u64, String>> {
    let mut rows: BTreeMap<String, BTreeMap<u64, String>> = BTreeMap::new();
    for (key, o) in objects {
        let Some(n) = o["num_rows"].as_u64() else {
            continue;
        };
        let manifest = &objects[&key.replace(".parquet", ".manifest.json")]["manifest"];
        assert_eq!(manifest["rows"].as_u64(), Some(n), "{key}");
        assert_eq!(manifest["object"], key.as_str());
        for i in 0..n as usize {
            let account = o["account"][i].as_str().unwrap().to_string();
            let index = o["index"][i].as_u64().unwrap();
            let event = o["event"][i].as_str().unwrap().to_string();
            assert_eq!(manifest["indexes"][i].as_u64(), Some(index), "{key}");
            assert_eq!(
                manifest["leafHashes"][i].as_str(),
                Some(leaf_b64(event.as_bytes()).as_str()),
                "{key} row {i}"
            );
            // The partition in the key is the event's location.
            let crn = serde_json::from_str::<Value>(&event).unwrap()["logSourceCRN"]
                .as_str()
                .unwrap()
                .to_string();
            let location = crn
                .split(':')
                .nth(5)
                .filter(|l| !l.is_empty())
                .unwrap_or("global");
            assert!(
                key.starts_with(&format!("{account}/{location}/")),
                "{key} holds an event of {account}/{location}"
            );
            let before = rows.entry(account).or_default().insert(index, event);
            assert!(before.is_none(), "index {index} is archived twice ({key})");
        }
    }
    rows
}

/// Every index `[0, count)` of each account is archived exactly once (no gap, no repeat).
fn assert_complete(rows: &BTreeMap<String, BTreeMap<u64, String>>, status: &Value) {
    for a in status["accounts"].as_array().unwrap() {
        let account = a["account"].as_str().unwrap();
        let count = a["archivedCount"].as_u64().unwrap();
        let got: Vec<u64> = rows
            .get(account)
            .map(|r| r.keys().copied().collect())
            .unwrap_or_default();
        assert_eq!(
            got,
            (0..count).collect::<Vec<_>>(),
            "{account}: archived indexes are exactly 0..{count}"
        );
    }
}

#[test]
fn archive_to_garage_reads_back_with_pyarrow_and_restores_with_original_proofs_issue_8() {
    let tmp = tempfile::tempdir().unwrap();
    let garage = Garage::start(&tmp.path().join("garage"));
    let data = tmp.path().join("data");
    let server = start_server(&data, &garage, "1h", &[]);
    let original_key = get(&server, "/v1/log/key").text().trim().to_string();

    // The secret is never shown; other roles are refused.
    let s = status(&server);
    assert_eq!(s["enabled"], true);
    assert_eq!(s["target"]["bucket"], BUCKET);
    assert!(
        !s.to_string().contains(&garage.secret),
        "the secret leaks: {s}"
    );
    let acme = post_json(&server, "/v1/accounts", &json!({"id": "acme"}));
    assert_eq!(acme.status, 201, "{}", acme.text());
    let reader = post_json(
        &server,
        "/v1/keys",
        &json!({"name": "r", "role": "reader", "accounts": ["acme"]}),
    );
    assert_eq!(reader.status, 201, "{}", reader.text());
    let reader_key = reader.json()["secret"].as_str().unwrap().to_string();
    for (method, path) in [
        ("GET", "/v1/archive"),
        ("POST", "/v1/archive/run"),
        ("GET", "/v1/archive/objects"),
    ] {
        let r = request(
            method,
            &format!("{}{path}", server.url),
            Some(&reader_key),
            &[],
            None,
        );
        assert_eq!(r.status, 403, "{method} {path}: {}", r.text());
    }

    let sent = events("first", 80);
    ingest(&server, &sent);
    wait_checkpointed(&server, &["acme", "globex"]);
    let run = archive_run(&server);
    assert!(run["run"]["objectsWritten"].as_u64().unwrap() >= 4, "{run}");
    let st = &run["status"];
    for a in ["acme", "globex"] {
        let s = account_status(st, a);
        assert_eq!(s["archivedCount"], s["checkpointSize"], "{s}");
        assert_eq!(s["lag"], 0);
        assert!(s["archivedCount"].as_u64().unwrap() >= 40);
    }

    // The documented keys.
    let keys = list_objects(&server);
    let names: BTreeSet<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
    assert!(names.contains(".trailkeep/verifier.key"), "{names:?}");
    for (account, location) in [
        ("acme", "us-south"),
        ("acme", "eu-de"),
        ("globex", "global"),
        ("globex", "jp-tok"),
    ] {
        let prefix = format!("{account}/{location}/");
        let objects: Vec<&&str> = names
            .iter()
            .filter(|k| k.starts_with(&prefix) && k.ends_with(".parquet"))
            .collect();
        assert!(!objects.is_empty(), "no object under {prefix}: {names:?}");
        for k in objects {
            let rest: Vec<&str> = k[prefix.len()..].split('/').collect();
            assert_eq!(rest.len(), 4, "{k}");
            assert!(
                rest[0].len() == 4 && rest[1].len() == 2 && rest[2].len() == 2,
                "{k}"
            );
            let (first, last) = rest[3]
                .trim_end_matches(".parquet")
                .split_once('-')
                .unwrap();
            assert!(first.parse::<u64>().unwrap() <= last.parse::<u64>().unwrap());
            assert!(names.contains(k.replace(".parquet", ".manifest.json").as_str()));
        }
        let size = account_status(st, account)["archivedCount"]
            .as_u64()
            .unwrap();
        assert!(
            names.contains(format!("{account}/checkpoints/{size}.note").as_str()),
            "{names:?}"
        );
    }

    // pyarrow reads the same rows: every event sent, byte for byte what the server returns.
    let objects = read_archive_with_pyarrow(&garage);
    let rows = archived_rows(&objects);
    assert_complete(&rows, st);
    for a in ["acme", "globex"] {
        let r = get(
            &server,
            &format!(
                "/v1/events?q={}&limit=1000&account={a}",
                enc("action:codeengine.application.create")
            ),
        );
        let items = r.json()["events"].as_array().unwrap().clone();
        assert_eq!(items.len(), 40, "{a}");
        for item in items {
            let index = item["index"].as_u64().unwrap();
            let archived: Value = serde_json::from_str(&rows[a][&index]).unwrap();
            assert_eq!(archived, item["event"], "{a}/{index}");
        }
    }

    // A second run archives only what came since (at most the server's own records of the
    // searches above, once a checkpoint covers them): nothing is written again.
    let again = archive_run(&server);
    for a in ["acme", "globex"] {
        let (first, second) = (account_status(st, a), account_status(&again["status"], a));
        let (n1, n2) = (
            first["archivedCount"].as_u64().unwrap(),
            second["archivedCount"].as_u64().unwrap(),
        );
        assert!(n2 >= n1, "{a}: {first} then {second}");
        if n2 == n1 {
            assert_eq!(first["objects"], second["objects"], "{a}");
        }
    }
    let archived: BTreeMap<String, u64> = ["acme", "globex"]
        .iter()
        .map(|a| {
            (
                a.to_string(),
                account_status(&again["status"], a)["archivedCount"]
                    .as_u64()
                    .unwrap(),
            )
        })
        .collect();
    server.stop();

    let objects_note_before = objects_note(&garage, "acme", archived["acme"]);

    // Restore into a fresh, empty data directory, pinning the original verifier key.
    let fresh = tmp.path().join("fresh");
    let out = Command::new(env!("CARGO_BIN_EXE_trailkeep"))
        .args([
            "import",
            "--from-archive",
            &format!("s3://{BUCKET}"),
            "--endpoint",
        ])
        .arg(garage.endpoint())
        .args(["--region", "garage", "--access-key-id", &garage.key_id])
        .args([
            "--account",
            "acme",
            "--account",
            "globex",
            "--verifier-key",
            &original_key,
            "--json",
        ])
        .arg("--data-dir")
        .arg(&fresh)
        .env("TRAILKEEP_ARCHIVE_SECRET_ACCESS_KEY", &garage.secret)
        .output()
        .unwrap();
    assert!(out.status.success(), "import: {}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    for a in report["accounts"].as_array().unwrap() {
        let account = a["account"].as_str().unwrap();
        assert_eq!(a["records"].as_u64(), Some(archived[account]), "{report}");
        assert_eq!(a["imported"].as_u64(), Some(archived[account]));
        assert!(a["checkpointsVerified"].as_u64().unwrap() >= 1);
    }

    // Run again, the restore finds everything in place and imports nothing twice.
    let again = Command::new(env!("CARGO_BIN_EXE_trailkeep"))
        .args([
            "import",
            "--from-archive",
            &format!("s3://{BUCKET}"),
            "--endpoint",
        ])
        .arg(garage.endpoint())
        .args(["--region", "garage", "--access-key-id", &garage.key_id])
        .args([
            "--account",
            "acme",
            "--verifier-key",
            &original_key,
            "--json",
        ])
        .arg("--data-dir")
        .arg(&fresh)
        .env("TRAILKEEP_ARCHIVE_SECRET_ACCESS_KEY", &garage.secret)
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "import again: {}",
        text(&again.stderr)
    );
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["accounts"][0]["imported"], 0, "{again}");
    assert_eq!(
        again["accounts"][0]["records"].as_u64(),
        Some(archived["acme"])
    );

    // The archive named by a trailkeep.toml, one account, the archive's own key.
    // (Not `trailkeep.toml` beside the data directories: the restored server would read it.)
    let config = tmp.path().join("archive.toml");
    std::fs::write(
        &config,
        format!(
            "archive_bucket = \"{BUCKET}\"\narchive_endpoint = \"{}\"\narchive_region = \"garage\"\n\
             archive_access_key_id = \"{}\"\n",
            garage.endpoint(),
            garage.key_id
        ),
    )
    .unwrap();
    let by_config = Command::new(env!("CARGO_BIN_EXE_trailkeep"))
        .arg("import")
        .arg("--from-archive")
        .arg(&config)
        .args(["--account", "globex"])
        .arg("--data-dir")
        .arg(tmp.path().join("by-config"))
        .env("TRAILKEEP_ARCHIVE_SECRET_ACCESS_KEY", &garage.secret)
        .output()
        .unwrap();
    assert!(
        by_config.status.success(),
        "import by config: {}",
        text(&by_config.stderr)
    );
    assert!(
        text(&by_config.stdout).contains(&format!(
            "globex: {} records archived, {} imported",
            archived["globex"], archived["globex"]
        )),
        "{}",
        text(&by_config.stdout)
    );
    assert!(text(&by_config.stderr).contains("archive's own key"));

    // A wrong verifier key is refused.
    let other_key = "other+00000000+AQ2pT0VAhjLY5e09AfDHtlBMK8GyG7ec1JzpdZ6Vx2Nh";
    let refused = Command::new(env!("CARGO_BIN_EXE_trailkeep"))
        .args([
            "import",
            "--from-archive",
            &format!("s3://{BUCKET}"),
            "--endpoint",
        ])
        .arg(garage.endpoint())
        .args([
            "--region",
            "garage",
            "--access-key-id",
            &garage.key_id,
            "--verifier-key",
            other_key,
        ])
        .arg("--data-dir")
        .arg(tmp.path().join("refused"))
        .env("TRAILKEEP_ARCHIVE_SECRET_ACCESS_KEY", &garage.secret)
        .output()
        .unwrap();
    assert!(!refused.status.success(), "a foreign key must not verify");

    // The fresh server searches the restored events, and their proofs at the archived
    // checkpoint sizes verify against the original notes with the original key.
    let restored = Server::start(&fresh, &[]);
    for a in ["acme", "globex"] {
        let r = get(
            &restored,
            &format!(
                "/v1/events?q={}&limit=1000&account={a}",
                enc("action:codeengine.application.create")
            ),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let items = r.json()["events"].as_array().unwrap().clone();
        assert_eq!(items.len(), 40, "{a} after restore");
        let size = archived[a];
        let note = objects_note(&garage, a, size);
        let body = open_note(&note, &original_key).to_string();
        let root: [u8; 32] = B64
            .decode(body.lines().nth(2).unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        for item in items.iter().filter(|i| i["index"].as_u64().unwrap() < size) {
            let index = item["index"].as_u64().unwrap();
            let p = get(
                &restored,
                &format!("/v1/log/{a}/proof/inclusion?index={index}&size={size}"),
            )
            .json();
            let hashes: Vec<[u8; 32]> = p["hashes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| B64.decode(h.as_str().unwrap()).unwrap().try_into().unwrap())
                .collect();
            let bytes = trailkeep_event::to_canonical_vec(&item["event"]);
            let mut h = Sha256::new();
            h.update([0u8]);
            h.update(&bytes);
            assert_eq!(
                root_from_inclusion(index, size, h.finalize().into(), &hashes),
                Some(root),
                "{a}/{index} verifies against the original checkpoint"
            );
        }
    }
    restored.stop();

    // The restored server (another signing key) pointed at the same bucket refuses to overwrite
    // the original server's verifier key and checkpoints.
    let restored = start_server(&fresh, &garage, "1h", &[]);
    let r = request(
        "POST",
        &format!("{}/v1/archive/run", restored.url),
        Some(ADMIN_KEY),
        &[],
        None,
    );
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("refusing to overwrite"), "{}", r.text());
    assert_eq!(
        objects_note(&garage, "acme", archived["acme"]),
        objects_note_before,
        "the original checkpoint is intact"
    );
}

/// The archived checkpoint note of `account` at `size`, fetched through pyarrow's S3 client.
fn objects_note(garage: &Garage, account: &str, size: u64) -> String {
    let script = r#"
import sys
import pyarrow.fs as pafs
endpoint, key, secret, path = sys.argv[1:5]
fs = pafs.S3FileSystem(access_key=key, secret_key=secret, endpoint_override=endpoint, scheme="http", region="garage")
with fs.open_input_stream(path) as f:
    sys.stdout.write(f.read().decode())
"#;
    let out = Command::new(python())
        .args(["-c", script])
        .args([
            format!("127.0.0.1:{}", garage.s3_port),
            garage.key_id.clone(),
            garage.secret.clone(),
            format!("{BUCKET}/{account}/checkpoints/{size}.note"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn continuous_archive_survives_an_unavailable_bucket_and_a_crash_before_the_cursor_update_issue_8()
{
    let tmp = tempfile::tempdir().unwrap();
    let mut garage = Garage::start(&tmp.path().join("garage"));
    let data = tmp.path().join("data");

    // A crash after a pass's objects were written and before its cursor update.
    let server = start_server(&data, &garage, "1h", &[]);
    ingest(&server, &events("a", 40));
    wait_checkpointed(&server, &["acme", "globex"]);
    server.stop();
    let mut crashing = start_server(
        &data,
        &garage,
        "1h",
        &[("TRAILKEEP_TEST_ARCHIVE_FAULT", "exit-after-objects")],
    );
    // The server dies before it answers.
    let answer = crate::server::agent()
        .post(&format!("{}/v1/archive/run", crashing.url))
        .set("Authorization", &format!("Bearer {ADMIN_KEY}"))
        .call();
    assert!(answer.is_err(), "the run did not answer");
    let exit = crashing.child.wait().unwrap();
    assert!(!exit.success(), "the fault hook aborted the server");
    let state: Value =
        serde_json::from_slice(&std::fs::read(data.join("archive/state.json")).unwrap()).unwrap();
    let pending: Vec<&String> = state["accounts"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, c)| !c["pending"].is_null())
        .map(|(a, _)| a)
        .collect();
    assert_eq!(pending.len(), 1, "one pass was left pending: {state}");
    let mut written_before = read_archive_with_pyarrow(&garage);
    assert!(written_before.keys().any(|k| k.ends_with(".parquet")));

    // Make it a crash in the middle of the pass: one manifest never got written. A restore now
    // leaves the incomplete pass out rather than restoring a log with a hole.
    let lost = written_before
        .keys()
        .find(|k| k.starts_with("acme/") && k.ends_with(".manifest.json"))
        .unwrap()
        .clone();
    written_before.remove(&lost);
    let delete = Command::new(python())
        .args([
            "-c",
            "import sys, pyarrow.fs as f; f.S3FileSystem(access_key=sys.argv[2], secret_key=sys.argv[3], \
             endpoint_override=sys.argv[1], scheme='http', region='garage').delete_file(sys.argv[4])",
        ])
        .args([
            format!("127.0.0.1:{}", garage.s3_port),
            garage.key_id.clone(),
            garage.secret.clone(),
            format!("{BUCKET}/{lost}"),
        ])
        .output()
        .unwrap();
    assert!(delete.status.success(), "{}", text(&delete.stderr));
    let mid = Command::new(env!("CARGO_BIN_EXE_trailkeep"))
        .args([
            "import",
            "--from-archive",
            &format!("s3://{BUCKET}"),
            "--endpoint",
        ])
        .arg(garage.endpoint())
        .args(["--region", "garage", "--access-key-id", &garage.key_id])
        .args(["--account", "acme", "--json", "--data-dir"])
        .arg(tmp.path().join("mid"))
        .env("TRAILKEEP_ARCHIVE_SECRET_ACCESS_KEY", &garage.secret)
        .output()
        .unwrap();
    assert!(mid.status.success(), "{}", text(&mid.stderr));
    let mid: Value = serde_json::from_slice(&mid.stdout).unwrap();
    let acme = &mid["accounts"][0];
    assert!(acme["incompletePassSkipped"].is_array(), "{mid}");
    assert_eq!(acme["records"], 0, "{mid}");
    // Object times have a resolution of a second or a millisecond: a rewrite shows.
    std::thread::sleep(Duration::from_millis(1100));

    // Continuous mode: after the restart the pending pass is finished (its lost manifest
    // written) without writing its other objects again, and the rest follows.
    let server = start_server(&data, &garage, "1s", &[]);
    let wait_archived = |server: &Server, want: &dyn Fn(&Value) -> bool| {
        let started = Instant::now();
        loop {
            let s = status(server);
            if want(&s) {
                return s;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "archive stuck: {s}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    let caught_up = |s: &Value| {
        ["acme", "globex"].iter().all(|a| {
            let st = account_status(s, a);
            st["lag"] == 0 && st["pending"].is_null() && st["archivedCount"].as_u64() >= Some(20)
        }) && s["lastSuccess"].is_string()
    };
    wait_archived(&server, &caught_up);
    let metrics = get(&server, "/metrics").text();
    assert!(
        metrics.contains("trailkeep_archive_objects_total{result=\"already_there\"}"),
        "the repeated pass found its objects: {metrics}"
    );
    // What the crashed run wrote is there unchanged, not written a second time.
    let now = read_archive_with_pyarrow(&garage);
    for (key, before) in &written_before {
        assert_eq!(&now[key], before, "{key} was written again");
    }

    // The bucket goes away: ingest goes on, runs fail and are counted, the cursor stays.
    garage.stop();
    ingest(&server, &events("b", 40));
    let failing = wait_archived(&server, &|s: &Value| {
        s["consecutiveFailures"].as_u64() >= Some(1) && s["lastError"].is_string()
    });
    let r = request(
        "POST",
        &format!("{}/v1/archive/run", server.url),
        Some(ADMIN_KEY),
        &[],
        None,
    );
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(
        get(&server, "/metrics")
            .text()
            .contains("trailkeep_archive_failures_total")
    );
    let lag: u64 = ["acme", "globex"]
        .iter()
        .map(|a| account_status(&failing, a)["lag"].as_u64().unwrap())
        .sum();
    assert!(lag >= 1, "{failing}");
    let metrics = get(&server, "/metrics").text();
    let lag_metric: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("trailkeep_archive_lag_records "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        lag_metric >= 1,
        "checkpointed but unarchived records show as lag"
    );
    // Killed while the bucket is away.
    server.kill9();

    garage.run_server();
    let server = start_server(&data, &garage, "1s", &[]);
    let s = wait_archived(&server, &|s: &Value| {
        caught_up(s)
            && ["acme", "globex"]
                .iter()
                .all(|a| account_status(s, a)["archivedCount"].as_u64() >= Some(40))
    });
    let rows = archived_rows(&read_archive_with_pyarrow(&garage));
    assert_complete(&rows, &s);
    let ids: BTreeSet<String> = rows
        .values()
        .flat_map(|r| r.values())
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|e| e["id"].as_str().map(str::to_string))
        .filter(|id| id.starts_with("a-") || id.starts_with("b-"))
        .collect();
    assert_eq!(
        ids.len(),
        80,
        "every event of both batches is archived once"
    );
    server.stop();
}

#[test]
fn without_a_target_the_archive_reports_itself_off_and_refuses_to_run_issue_8() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let s = status(&server);
    assert_eq!(s["enabled"], false, "{s}");
    let r = request(
        "POST",
        &format!("{}/v1/archive/run", server.url),
        Some(ADMIN_KEY),
        &[],
        None,
    );
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "archive_not_configured");
    let out = trailkeep(
        &[
            "archive",
            "status",
            "--url",
            &server.url,
            "--key",
            ADMIN_KEY,
        ],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("no archive target is configured"));
}
