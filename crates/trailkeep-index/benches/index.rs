//! `cargo bench -p trailkeep-index`: index throughput, bytes per event on disk, and latency of the
//! five reference queries over a synthetic but realistic data set.
//!
//! Environment:
//! * `TRAILKEEP_BENCH_EVENTS` — number of events (default 200000; the targets are for 1000000).
//! * `TRAILKEEP_BENCH_THREADS` — indexing threads (default 1).
//! * `TRAILKEEP_BENCH_DIR` — where to build the index (default: a temporary directory).
//!
//! Prints numbers only; nothing is asserted about time.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use trailkeep_index::query::{KnownField, plan_strict};
use trailkeep_index::{
    AggregateRequest, EventIndex, Histogram, SearchRequest, TermsRequest, WriterOptions,
};

/// A small deterministic generator (xorshift64*), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
    /// Skewed towards small values (a few big tenants, many small ones).
    fn skewed(&mut self, n: u64) -> u64 {
        let a = self.below(n);
        let b = self.below(n);
        a.min(b).min(self.below(n))
    }
    fn hex(&mut self, len: usize) -> String {
        let mut s = String::with_capacity(len);
        while s.len() < len {
            s.push_str(&format!("{:016x}", self.next()));
        }
        s.truncate(len);
        s
    }
    fn uuid(&mut self) -> String {
        let h = self.hex(32);
        format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    }
}

const ACCOUNTS: u64 = 50;
const SPAN_DAYS: i64 = 30;
const END: OffsetDateTime = time::macros::datetime!(2026-03-01 00:00:00 UTC);

const SERVICES: &[(&str, &str, &[&str], &[&str])] = &[
    (
        "codeengine",
        "Code Engine",
        &[
            "application",
            "job",
            "build",
            "secret",
            "project",
            "pod",
            "configmap",
        ],
        &["create", "update", "delete", "read", "list", "run"],
    ),
    (
        "container-registry",
        "Container Registry",
        &["image", "namespace", "quota"],
        &["push", "pull", "delete", "list", "create"],
    ),
    (
        "kms",
        "Key Protect",
        &["secrets", "keys", "policies"],
        &["create", "rotate", "wrap", "unwrap", "delete", "read"],
    ),
    (
        "mlops",
        "ML Ops",
        &["deployment", "pipeline", "model", "experiment"],
        &["create", "update", "delete", "run", "read"],
    ),
];
const REGIONS: &[&str] = &["us-south", "us-east", "eu-de", "eu-gb", "jp-tok", "au-syd"];
const FAILURES: &[(i64, &str)] = &[
    (
        400,
        "The request body is invalid: field spec.template.containers[0].image is required",
    ),
    (401, "The access token has expired"),
    (403, "The user lacks the Writer role on the project"),
    (404, "The requested resource was not found"),
    (
        409,
        "A resource with this name already exists in the project",
    ),
    (429, "Rate limit exceeded, retry later"),
    (
        500,
        "Internal error while scheduling the workload: disk full on build node",
    ),
    (
        503,
        "The service is temporarily unavailable: quota service did not answer",
    ),
];

/// One realistic ~2 KB event and its account.
fn make_event(rng: &mut Rng, n: u64, total: u64) -> (String, Value) {
    let account = format!("acct{:02}", rng.skewed(ACCOUNTS));
    let (svc, svc_name, objects, verbs) = SERVICES[rng.skewed(SERVICES.len() as u64) as usize];
    let object = rng.pick(objects);
    let verb = rng.pick(verbs);
    let region = rng.pick(REGIONS);
    let failure = rng.below(100) < 12;
    let outcome = if failure {
        "failure"
    } else if rng.below(100) < 3 {
        "pending"
    } else {
        "success"
    };
    // Events arrive roughly in time order over SPAN_DAYS, with a little jitter.
    let span = SPAN_DAYS * 86_400_000;
    let millis = (i128::from(span) * i128::from(n) / i128::from(total.max(1))) as i64
        + rng.below(2000) as i64;
    let time = END - time::Duration::milliseconds(span) + time::Duration::milliseconds(millis);
    let project = format!("proj{}", rng.skewed(40));
    let name = format!(
        "{}-{}",
        rng.pick(&["web", "api", "worker", "batch", "ingest", "report"]),
        rng.below(300)
    );
    // Half the actions are on a project (many events per target), half on one resource in it.
    let target_id = if rng.below(2) == 0 {
        format!("crn:v1:bluemix:public:codeengine:us-south:a/{account}:{project}::")
    } else {
        format!("crn:v1:bluemix:public:{svc}:{region}:a/{account}:{project}:{object}:{name}")
    };
    let user = rng.skewed(500);
    let mut event = json!({
        "id": rng.uuid(),
        "eventTime": time.format(&Rfc3339).unwrap().replace('Z', "+00:00"),
        "action": format!("{svc}.{object}.{verb}"),
        "outcome": outcome,
        "severity": if failure { if rng.below(4) == 0 { "critical" } else { "warning" } } else { "normal" },
        "message": format!("{svc_name}: {verb} {object} {name}{}", if failure { " -failure" } else { "" }),
        "correlationId": format!("{}", rng.uuid()),
        "dataEvent": verb == "read" || verb == "list" || verb == "pull",
        "logSourceCRN": format!("crn:v1:bluemix:public:{svc}:{region}:a/{account}:{project}::"),
        "saveServiceCopy": true,
        "initiator": {
            "id": format!("IBMid-{user:06}"),
            "name": format!("user{user}@example.com"),
            "typeURI": "service/security/account/user",
            "authnId": format!("IBMid-{user:06}"),
            "authnName": format!("user{user}@example.com"),
            "credential": {"type": "token"},
            "host": {"address": format!("10.{}.{}.{}", rng.below(256), rng.below(256), rng.below(256)), "addressType": "IPv4", "agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"}
        },
        "target": {
            "id": target_id,
            "name": name,
            "typeURI": format!("{svc}/{object}"),
            "resourceGroupId": format!("crn:v1:bluemix:public:resource-controller::a/{account}::resource-group:{:032x}", hash(&account)),
            "host": {"address": format!("{svc}.{region}.example.cloud")}
        },
        "observer": {"name": "ActivityTracker"},
        "requestData": {
            "name": name,
            "project": project,
            "region": region,
            "image": format!("icr.io/{project}/{name}:v{}.{}.{}", rng.below(5), rng.below(20), rng.below(100)),
            "scale": {"min": rng.below(2), "max": 1 + rng.below(10), "cpu": "0.5", "memory": "1G", "concurrency": 100},
            "env": (0..8).map(|i| json!({"name": format!("VAR_{i}"), "value": "[redacted]"})).collect::<Vec<_>>(),
            "labels": {"app.kubernetes.io/name": name, "team": format!("team{}", rng.below(20)), "tier": rng.pick(&["frontend", "backend", "data"])},
            "requestId": rng.uuid(),
            "userAgent": "trailkeep-bench/1.0",
            "description": "Deployed by the continuous delivery pipeline after all checks passed on the main branch",
        },
        "responseData": {
            "status": if failure { "failed" } else { "ready" },
            "generation": rng.below(50),
            "resourceVersion": format!("{}", rng.next() % 100_000_000),
            "uid": rng.uuid(),
            "conditions": [
                {"type": "Ready", "status": if failure { "False" } else { "True" }, "lastTransitionTime": time.format(&Rfc3339).unwrap()},
                {"type": "ConfigurationsReady", "status": "True"}
            ],
            "url": format!("https://{name}.{project}.{region}.codeengine.example.cloud"),
        },
    });
    if failure {
        let (code, text) = FAILURES[rng.below(FAILURES.len() as u64) as usize];
        event["reason"] =
            json!({"reasonCode": code, "reasonType": "ClientError", "reasonForFailure": text});
    } else {
        event["reason"] =
            json!({"reasonCode": if verb == "create" { 201 } else { 200 }, "reasonType": "OK"});
    }
    (account, event)
}

fn hash(s: &str) -> u128 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325_u128, |h, b| {
        (h ^ u128::from(b)).wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b)
    })
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|it| {
            it.filter_map(|e| e.ok())
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(name: &str, mut samples: Vec<Duration>, note: &str) {
    samples.sort();
    println!(
        "{name:<44} p50 {:>8.3} ms   p99 {:>8.3} ms   ({} runs{note})",
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.len()
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: then run tiny.
    let benching = std::env::args().any(|a| a == "--bench");
    let total = env_u64(
        "TRAILKEEP_BENCH_EVENTS",
        if benching { 200_000 } else { 2_000 },
    );
    let threads = env_u64("TRAILKEEP_BENCH_THREADS", 1) as usize;
    let tmp = tempfile::TempDir::new().unwrap();
    let dir = std::env::var("TRAILKEEP_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| tmp.path().to_path_buf());
    if dir.exists() && dir != tmp.path() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    println!(
        "trailkeep-index bench: {total} events, {threads} indexing thread(s), index in {}",
        dir.display()
    );

    let index = EventIndex::open(&dir).unwrap();
    let mut writer = index
        .writer(WriterOptions {
            threads,
            memory_budget: 128 << 20,
        })
        .unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut next_index = vec![0u64; ACCOUNTS as usize];
    let mut samples = Vec::new(); // (account, correlationId, target.id) of a few events
    let mut json_bytes = 0u64;
    let mut add_time = Duration::ZERO;
    let mut commit_time = Duration::ZERO;
    let mut commits = 0;
    let chunk = 25_000u64;
    let wall = Instant::now();
    let mut n = 0;
    while n < total {
        let batch: Vec<(String, u64, Value)> = (n..(n + chunk).min(total))
            .map(|i| {
                let (account, event) = make_event(&mut rng, i, total);
                let a: usize = account[4..].parse().unwrap();
                let idx = next_index[a];
                next_index[a] += 1;
                (account, idx, event)
            })
            .collect();
        for (account, _, event) in batch.iter().step_by(997) {
            samples.push((
                account.clone(),
                event["correlationId"].as_str().unwrap().to_string(),
                event["target"]["id"].as_str().unwrap().to_string(),
            ));
        }
        json_bytes += batch
            .iter()
            .map(|(_, _, e)| serde_json::to_vec(e).unwrap().len() as u64)
            .sum::<u64>();
        let received = OffsetDateTime::now_utc();
        let t = Instant::now();
        for (account, idx, event) in &batch {
            writer.add(account, *idx, received, event).unwrap();
        }
        add_time += t.elapsed();
        // The server commits about every second; at ~25-50k events/s that is one commit per chunk.
        let t = Instant::now();
        writer.commit().unwrap();
        commit_time += t.elapsed();
        commits += 1;
        n += batch.len() as u64;
    }
    let t = Instant::now();
    writer.finish().unwrap();
    let merge_time = t.elapsed();
    index.reload().unwrap();
    let indexing = add_time + commit_time;
    println!(
        "indexed {total} events (avg JSON {} B) in {:.1} s of add+commit ({commits} commits): {:.0} events/s; final merge wait {:.1} s; wall with generation {:.1} s",
        json_bytes / total.max(1),
        indexing.as_secs_f64(),
        total as f64 / indexing.as_secs_f64(),
        merge_time.as_secs_f64(),
        wall.elapsed().as_secs_f64()
    );
    let on_disk = dir_bytes(&dir);
    let live = index.size_bytes().unwrap();
    println!(
        "index on disk: {on_disk} B = {:.1} B/event (live segments {:.1} B/event, {} segments)",
        on_disk as f64 / total as f64,
        live as f64 / total as f64,
        index.num_segments()
    );
    println!("largest parts (B/event):");
    for part in index.space_usage().unwrap().into_iter().take(12) {
        println!(
            "  {:<32} {:>7.1}",
            part.part,
            part.bytes as f64 / total as f64
        );
    }

    // --- queries (after one unmeasured pass over each, as on a warm server)
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average before queries: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let now = END;
    let runs = samples.len().clamp(50, 400);
    let pick = |i: usize| &samples[(i * 7919) % samples.len()];

    let mut lat = Vec::new();
    let mut found = 0;
    for i in (0..runs).chain(0..runs) {
        let (account, corr, _) = pick(i);
        let plan = plan_strict(&format!("correlationId:{corr}")).unwrap();
        let accounts = [account.clone()];
        let t = Instant::now();
        let page = index
            .search(&SearchRequest {
                plan: &plan,
                accounts: &accounts,
                from: None,
                to: None,
                limit: 100,
                cursor: None,
            })
            .unwrap();
        lat.push(t.elapsed());
        found += page.hits.len();
    }
    let (lat, found) = (lat.split_off(runs), found / 2);
    report(
        "one correlationId",
        lat,
        &format!(", {:.1} hits avg", found as f64 / runs as f64),
    );

    let mut lat = Vec::new();
    let mut found = 0;
    for i in (0..runs).chain(0..runs) {
        let (account, _, target) = pick(i);
        let plan = plan_strict(&format!("target.id:\"{target}\"")).unwrap();
        let accounts = [account.clone()];
        let t = Instant::now();
        let page = index
            .search(&SearchRequest {
                plan: &plan,
                accounts: &accounts,
                from: None,
                to: None,
                limit: 100,
                cursor: None,
            })
            .unwrap();
        lat.push(t.elapsed());
        found += page.hits.len();
    }
    let (lat, found) = (lat.split_off(runs), found / 2);
    report(
        "target.id, newest 100",
        lat,
        &format!(", {:.1} hits avg", found as f64 / runs as f64),
    );

    let mut lat = Vec::new();
    let mut found = 0;
    let plan = plan_strict("outcome:failure").unwrap();
    for i in (0..runs).chain(0..runs) {
        let accounts = [format!("acct{:02}", i as u64 % 10)];
        let t = Instant::now();
        let page = index
            .search(&SearchRequest {
                plan: &plan,
                accounts: &accounts,
                from: Some(now - time::Duration::hours(24)),
                to: Some(now),
                limit: 100,
                cursor: None,
            })
            .unwrap();
        lat.push(t.elapsed());
        found += page.hits.len();
    }
    let (lat, found) = (lat.split_off(runs), found / 2);
    report(
        "one account's failures in 24 h, newest 100",
        lat,
        &format!(", {:.1} hits avg", found as f64 / runs as f64),
    );

    let mut lat = Vec::new();
    let mut found = 0;
    let words = [
        "quota",
        "disk",
        "expired",
        "writer",
        "rotate",
        "unavailable",
    ];
    for i in (0..runs).chain(0..runs) {
        let plan = plan_strict(words[i % words.len()]).unwrap();
        let accounts = [format!("acct{:02}", i as u64 % 10)];
        let t = Instant::now();
        let page = index
            .search(&SearchRequest {
                plan: &plan,
                accounts: &accounts,
                from: None,
                to: None,
                limit: 100,
                cursor: None,
            })
            .unwrap();
        lat.push(t.elapsed());
        found += page.hits.len();
    }
    let (lat, found) = (lat.split_off(runs), found / 2);
    report(
        "full-text word, newest 100",
        lat,
        &format!(", {:.1} hits avg", found as f64 / runs as f64),
    );

    let mut lat = Vec::new();
    let mut counted = 0;
    let plan = plan_strict("").unwrap();
    let all: Vec<String> = (0..ACCOUNTS).map(|a| format!("acct{a:02}")).collect();
    for i in (0..runs.min(100)).chain(0..runs.min(100)) {
        let accounts = if i % 2 == 0 {
            all.clone()
        } else {
            vec![format!("acct{:02}", i as u64 % 10)]
        };
        let t = Instant::now();
        let r = index
            .aggregate(&AggregateRequest {
                plan: &plan,
                accounts: &accounts,
                from: Some(now - time::Duration::days(7)),
                to: Some(now),
                terms: Some(TermsRequest {
                    field: KnownField::Action,
                    size: 10,
                }),
                histogram: Some(Histogram::Auto),
            })
            .unwrap();
        lat.push(t.elapsed());
        counted += r.total;
    }
    let (lat, counted) = (lat.split_off(runs.min(100)), counted / 2);
    report(
        "counts by action + histogram over 7 days",
        lat,
        &format!(
            ", {:.0} events counted avg; half all accounts",
            counted as f64 / runs.min(100) as f64
        ),
    );
}
