//! `cargo bench -p trailkeep-ledger`: plain std::time figures, no assertions on time.
//!
//! * durable append throughput (batches of 1,000 CADF-like events of ~2 KB, fsync on),
//! * storage after sealing (segments + tiles + checkpoints) relative to the raw bytes,
//! * full verification throughput of that data directory,
//! * inclusion-proof latency in a 10-million-leaf tree (built from synthetic leaf hashes).
//!
//! Sizes can be scaled with `TRAILKEEP_BENCH_RECORDS` (default 200,000) and
//! `TRAILKEEP_BENCH_LEAVES` (default 10,000,000).

// `x % n == 0` reads the same under every supported toolchain (`is_multiple_of` needs 1.87).
#![allow(clippy::manual_is_multiple_of)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use trailkeep_ledger::merkle::leaf_hash;
use trailkeep_ledger::tiles::TileLog;
use trailkeep_ledger::verifier::verify_inclusion;
use trailkeep_ledger::{Durability, Ledger, LedgerConfig, LocalDir, Storage, verify};

/// One appender's batch: (account, bytes) pairs.
type Batch = Vec<(String, Vec<u8>)>;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
    fn hex(&mut self, n: usize) -> String {
        let mut s = String::new();
        while s.len() < n {
            s.push_str(&format!("{:016x}", self.next()));
        }
        s.truncate(n);
        s
    }
    fn uuid(&mut self) -> String {
        let h = self.hex(32);
        format!(
            "{}-{}-4{}-a{}-{}",
            &h[..8],
            &h[8..12],
            &h[13..16],
            &h[17..20],
            &h[20..]
        )
    }
}

/// A realistic, varied CADF event with Activity Tracker extensions, about 2 KB of JSON.
fn cadf_event(rng: &mut Rng, n: u64) -> Vec<u8> {
    let services = [
        ("codeengine", "application"),
        ("container-registry", "image"),
        ("kms", "secrets"),
        ("iam-identity", "apikey"),
        ("cloud-object-storage", "bucket"),
        ("databases-for-postgresql", "deployment"),
    ];
    let verbs = [
        "create", "update", "delete", "read", "list", "rotate", "push", "pull",
    ];
    let regions = ["eu-de", "us-south", "jp-tok", "eu-gb", "au-syd"];
    let (svc, obj) = services[(rng.next() % services.len() as u64) as usize];
    let verb = rng.pick(&verbs);
    let region = rng.pick(&regions);
    let account = format!("{:032x}", 0xabcdef_u64 + rng.next() % 7);
    let failure = rng.next() % 10 == 0;
    let user = rng.pick(&[
        "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
    ]);
    let name = format!(
        "{}-{}",
        rng.pick(&["web", "api", "worker", "batch", "frontend"]),
        rng.hex(5)
    );
    let secs = 1_763_700_000 + n / 3;
    let t = format!(
        "2026-11-21T{:02}:{:02}:{:02}.{:03}+00:00",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60,
        rng.next() % 1000
    );
    let reason = if failure {
        format!(
            r#"{{"reasonCode":{},"reasonType":"{}","reasonForFailure":"The {obj} '{name}' could not be {verb}d because the request was denied by policy {}."}}"#,
            rng.pick(&["400", "403", "404", "409", "500"]),
            rng.pick(&[
                "Bad Request",
                "Forbidden",
                "Not Found",
                "Conflict",
                "Internal Server Error"
            ]),
            rng.hex(8)
        )
    } else {
        format!(
            r#"{{"reasonCode":{},"reasonType":"OK"}}"#,
            rng.pick(&["200", "201", "204"])
        )
    };
    let envs: Vec<String> = (0..3 + rng.next() % 4)
        .map(|i| {
            format!(
                r#"{{"name":"{}_{i}","value":"[redacted]","type":"{}"}}"#,
                rng.pick(&[
                    "DATABASE_URL",
                    "LOG_LEVEL",
                    "FEATURE_FLAG",
                    "REGION",
                    "CACHE_TTL"
                ]),
                rng.pick(&["literal", "secret_key_ref", "config_map_key_ref"])
            )
        })
        .collect();
    format!(
        concat!(
            r#"{{"action":"{svc}.{obj}.{verb}","correlationId":"{corr}","dataEvent":{data},"eventTime":"{t}","id":"{id}","#,
            r#""initiator":{{"authnId":"iam-ServiceId-{sid}","authnName":"{user}@example.com","credential":{{"type":"user"}},"host":{{"address":"{ip}","addressType":"IPv4","agent":"{agent}"}},"id":"IBMid-{ibmid}","name":"{user}@example.com","typeURI":"service/security/account/user"}},"#,
            r#""logSourceCRN":"crn:v1:bluemix:public:{svc}:{region}:a/{account}:{inst}::","message":"{Svc}: {verb} {obj} {name}{fail}","observer":{{"name":"ActivityTracker"}},"outcome":"{outcome}","#,
            r#""reason":{reason},"requestData":{{"{obj}Name":"{name}","region":"{region}","resourceGroupId":"{rg}","spec":{{"image":"icr.io/{ns}/{name}:{tag}","scale":{{"min":{min},"max":{max},"cpu":"{cpu}","memory":"{mem}G"}},"env":[{envs}]}},"requestURI":"/v2/projects/{proj}/{obj}s/{name}"}},"#,
            r#""responseData":{{"status":"{status}","generation":{gen},"url":"https://{name}.{proj8}.{region}.codeengine.appdomain.cloud","latestReadyRevisionName":"{name}-{rev:05}"}},"saveServiceCopy":true,"severity":"{sev}","#,
            r#""target":{{"id":"crn:v1:bluemix:public:{svc}:{region}:a/{account}:{proj}:{obj}:{name}","name":"{name}","resourceGroupId":"crn:v1:bluemix:public:resource-controller::a/{account}::resource-group:{rg}","typeURI":"{svc}/{obj}"}}}}"#,
        ),
        svc = svc,
        obj = obj,
        verb = verb,
        corr = rng.uuid(),
        data = rng.next() % 4 == 0,
        t = t,
        id = rng.uuid(),
        sid = rng.uuid(),
        user = user,
        ip = format!("10.{}.{}.{}", rng.next() % 256, rng.next() % 256, rng.next() % 256),
        agent = rng.pick(&["ibmcloud-cli/2.20.0", "terraform/1.6.4", "Mozilla/5.0 (X11; Linux x86_64)", "ce-sdk-go/0.4.1"]),
        ibmid = rng.hex(10),
        region = region,
        account = account,
        inst = rng.uuid(),
        Svc = svc.to_uppercase(),
        name = name,
        fail = if failure { " -failure" } else { "" },
        outcome = if failure { "failure" } else { "success" },
        reason = reason,
        rg = rng.hex(32),
        ns = rng.pick(&["prod", "staging", "team-a", "ml"]),
        tag = format!("v{}.{}.{}", rng.next() % 5, rng.next() % 20, rng.next() % 100),
        min = rng.next() % 2,
        max = 1 + rng.next() % 10,
        cpu = rng.pick(&["0.25", "0.5", "1", "2"]),
        mem = rng.pick(&["0.5", "1", "2", "4"]),
        envs = envs.join(","),
        proj = rng.uuid(),
        proj8 = rng.hex(8),
        status = rng.pick(&["ready", "deploying", "failed"]),
        gen = rng.next() % 50,
        rev = rng.next() % 100,
        sev = if failure { "warning" } else { "normal" },
    )
    .into_bytes()
}

fn dir_size(path: &std::path::Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(path).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        total += if m.is_dir() {
            dir_size(&e.path())
        } else {
            m.len()
        };
    }
    total
}

/// CPU seconds (user + system) used by this process so far (Linux; 0 elsewhere).
fn cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|u| u.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let records = env_u64("TRAILKEEP_BENCH_RECORDS", 200_000);
    let leaves = env_u64("TRAILKEEP_BENCH_LEAVES", 10_000_000);
    let tmp = tempfile::Builder::new()
        .prefix("trailkeep-bench")
        .tempdir_in(
            std::env::var("TRAILKEEP_BENCH_DIR")
                .unwrap_or_else(|_| std::env::temp_dir().display().to_string()),
        )
        .unwrap();
    let dir = tmp.path().join("ledger");

    // Workload: batches of 1,000 events over a handful of accounts.
    let mut rng = Rng(7);
    let mut raw_bytes = 0u64;
    let batches: Vec<Batch> = (0..records / 1000)
        .map(|b| {
            (0..1000u64)
                .map(|k| {
                    let n = b * 1000 + k;
                    let e = cadf_event(&mut rng, n);
                    raw_bytes += e.len() as u64;
                    (format!("acct{}", rng.next() % 8), e)
                })
                .collect()
        })
        .collect();
    let n_records = batches.len() as u64 * 1000;
    println!(
        "workload: {n_records} records, {:.1} MB raw, mean {:.0} bytes/event, batches of 1,000",
        raw_bytes as f64 / 1e6,
        raw_bytes as f64 / n_records as f64
    );

    if std::env::var_os("TRAILKEEP_BENCH_ZSTD_SWEEP").is_some() {
        let sample: Vec<u8> = batches
            .iter()
            .take(30)
            .flatten()
            .flat_map(|(_, e)| e.clone())
            .collect();
        for level in [-5, -1, 1, 2, 3] {
            let t = Instant::now();
            let mut out = 0;
            for chunk in sample.chunks(256 * 1024) {
                out += zstd::bulk::compress(chunk, level).unwrap().len();
            }
            let s = t.elapsed().as_secs_f64();
            println!(
                "zstd level {level}: {:.0} MB/s, {:.1}% of raw",
                sample.len() as f64 / 1e6 / s,
                100.0 * out as f64 / sample.len() as f64
            );
        }
    }

    // 1. Durable appends from 4 concurrent appenders (group commit).
    let mut config = LedgerConfig {
        durability: Durability::Fsync,
        ..LedgerConfig::default()
    };
    config.segment_target_bytes = env_u64("TRAILKEEP_BENCH_SEGMENT_MB", 64) << 20;
    config.seal.zstd_level = std::env::var("TRAILKEEP_BENCH_ZSTD_LEVEL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(config.seal.zstd_level);
    config.seal.block_target = env_u64("TRAILKEEP_BENCH_BLOCK_KB", 256) as usize * 1024;
    let ledger = Ledger::open_dir(&dir, config).unwrap();
    let appenders = env_u64("TRAILKEEP_BENCH_APPENDERS", 4) as usize;
    let mut per_thread: Vec<Vec<Batch>> = (0..appenders).map(|_| Vec::new()).collect();
    for (i, b) in batches.into_iter().enumerate() {
        per_thread[i % appenders].push(b);
    }
    let start = Instant::now();
    let cpu0 = cpu_secs();
    let handles: Vec<_> = per_thread
        .into_iter()
        .map(|bs| {
            let l = ledger.clone();
            std::thread::spawn(move || {
                for b in bs {
                    l.append(b).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let append_secs = start.elapsed().as_secs_f64();
    let append_cpu = cpu_secs() - cpu0;
    println!(
        "append (fsync, {appenders} appenders): {:.0} records/s, {:.0} MB/s ({n_records} records in {append_secs:.2} s, {append_cpu:.2} CPU-s incl. background sealing)",
        n_records as f64 / append_secs,
        raw_bytes as f64 / 1e6 / append_secs
    );
    let t = Instant::now();
    let cpu0 = cpu_secs();
    ledger.rotate().unwrap();
    ledger.close().unwrap();
    let seal_secs = t.elapsed().as_secs_f64();
    println!(
        "seal remaining + close: {seal_secs:.2} s ({:.2} CPU-s); append incl. sealing everything: {:.0} records/s",
        cpu_secs() - cpu0,
        n_records as f64 / (append_secs + seal_secs)
    );

    // 2. Storage after sealing.
    let seg = dir_size(&dir.join("seg"));
    let log = dir_size(&dir.join("log"));
    println!(
        "storage after sealing: segments {:.1} MB + tiles/checkpoints {:.1} MB = {:.1}% of raw ({:.1} MB)",
        seg as f64 / 1e6,
        log as f64 / 1e6,
        100.0 * (seg + log) as f64 / raw_bytes as f64,
        raw_bytes as f64 / 1e6
    );

    // 3. Full verification.
    let start = Instant::now();
    let cpu0 = cpu_secs();
    let report = verify::verify_data_dir(&dir, |_| {}).unwrap();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "verify: {:.0} records/s ({} records in {secs:.2} s, {:.2} CPU-s): {}",
        report.records as f64 / secs,
        report.records,
        cpu_secs() - cpu0,
        report.summary()
    );

    // 4. Inclusion proofs in a big tree, hashes on disk as tiles.
    let storage: Arc<dyn Storage> = Arc::new(LocalDir::open(tmp.path().join("tree")).unwrap());
    let start = Instant::now();
    let mut tree = TileLog::new(storage.clone(), "log/big/");
    for i in 0..leaves {
        tree.push(leaf_hash(&i.to_le_bytes()));
        if i % 1_000_000 == 999_999 {
            tree.persist().unwrap();
        }
    }
    tree.persist().unwrap();
    let build = start.elapsed().as_secs_f64();
    let root = tree.root();
    drop(tree);
    let tree = TileLog::load(storage, "log/big/", leaves, false).unwrap();
    assert_eq!(tree.root(), root);
    let mut rng = Rng(99);
    let samples = 2000;
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let i = rng.next() % leaves;
        let t = Instant::now();
        let proof = tree.inclusion_proof(i, leaves).unwrap();
        times.push(t.elapsed());
        verify_inclusion(i, leaves, &leaf_hash(&i.to_le_bytes()), &proof, &root).unwrap();
    }
    times.sort();
    let mean = times.iter().sum::<Duration>() / samples as u32;
    println!(
        "inclusion proof at {leaves} leaves (tree built in {build:.1} s): mean {:.1} µs, p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
        mean.as_secs_f64() * 1e6,
        times[samples / 2].as_secs_f64() * 1e6,
        times[samples * 99 / 100].as_secs_f64() * 1e6,
        times[samples - 1].as_secs_f64() * 1e6
    );
}
