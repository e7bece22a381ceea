//! `trailkeep bench routing`: what routing by location (issue #9) adds to the cost of ingest,
//! in-process on the bench corpus (8 regions, 50 accounts).
//!
//! Three figures, all by the CPU time the process spends (every thread's, from
//! `/proc/self/task/*/schedstat`, so other load on a shared machine does not count):
//! * the routing decision alone: location from the CRN, alias, every route's rules in order,
//!   for every corpus event, with `--routes` routes of `--rules` rules (most rules miss, so each
//!   event walks nearly every rule — the expensive case);
//! * the server's whole ingest path (`Core::ingest`: parse, normalise, ledger, index, routing
//!   hook) per event, without routes and with them (every route ends at `local`, so both store
//!   the same events), alternating runs;
//! * the time the ingest hook itself spent (`trailkeep_route_decide_seconds`), per event.
//!
//! The share printed is decision ÷ ingest CPU per event; ingest runs with relaxed durability
//! (fsync waits cost no CPU anyway).
//!
//! A fourth figure is about waiting, not CPU: with fsync durability, `--concurrency` tasks send
//! `--fsync-requests` single-event requests in all, once with every event stored locally and once
//! with every event also routed to a remote (webhook) target, whose outbox append is fsynced
//! before each request is answered. It prints requests per second (wall clock) of both.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use trailkeep_server::auth::{AccountScope, Principal, Role};
use trailkeep_server::config::{DurabilityMode, ServeOptions};
use trailkeep_server::core::Core;
use trailkeep_server::metrics::Metrics;
use trailkeep_server::routing::decide::{Table, location_of};
use trailkeep_server::routing::model::{Route, Rule, Settings, Target};
use trailkeep_server::routing::{Routing, RoutingOptions};

use super::corpus::{CorpusSpec, for_each_event};

#[derive(Debug, clap::Args)]
pub struct RoutingArgs {
    /// Corpus events per ingest run (two runs without routes, two with; at most 25,000 keeps the
    /// whole bench within 100k events).
    #[arg(long, default_value_t = 20_000)]
    pub events: u64,
    /// Routes configured.
    #[arg(long, default_value_t = 10)]
    pub routes: usize,
    /// Rules per route.
    #[arg(long, default_value_t = 10)]
    pub rules: usize,
    /// Seed of the corpus.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Single-event requests of the fsync figure, per run (two runs; 0 skips it).
    #[arg(long, default_value_t = 2_000)]
    pub fsync_requests: u64,
    /// Requests in flight at once in the fsync figure.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
}

const REGIONS: [&str; 8] = [
    "us-south", "us-east", "eu-de", "eu-gb", "jp-tok", "au-syd", "ca-tor", "br-sao",
];

/// Process CPU time so far (see the module docs).
fn cpu() -> Duration {
    let mut total = 0u64;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) {
                total += text
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    Duration::from_nanos(total)
}

/// `routes` routes of `rules` rules: every rule but the last names two locations no corpus
/// event has; the last names one corpus region (route i: region i mod 8) and sends it `local`.
fn configuration(routes: usize, rules: usize) -> (Vec<Target>, Vec<Route>, Settings) {
    let routes = (0..routes)
        .map(|i| Route {
            id: format!("route_{i}"),
            name: format!("route {i}"),
            rules: (0..rules)
                .map(|j| Rule {
                    locations: if j + 1 == rules {
                        vec![REGIONS[i % REGIONS.len()].to_string()]
                    } else {
                        vec![format!("xx-{i}-{j}"), format!("zz-{j}")]
                    },
                    target_ids: vec!["local".into()],
                })
                .collect(),
            created_at: String::new(),
            updated_at: String::new(),
        })
        .collect();
    let mut settings = Settings::default();
    settings
        .location_aliases
        .insert("ap-south".into(), "jp-tok".into());
    (vec![Target::builtin_local()], routes, settings)
}

fn corpus(args: &RoutingArgs, seed_offset: u64) -> anyhow::Result<Vec<Vec<u8>>> {
    let spec = CorpusSpec {
        seed: args.seed + seed_offset,
        events: args.events,
        end_unix: time::OffsetDateTime::now_utc().unix_timestamp(),
        span_secs: 7 * 86_400,
    };
    let mut chunks = Vec::new();
    let mut chunk = Vec::new();
    let mut n = 0;
    for_each_event(spec, |e: Value| {
        serde_json::to_writer(&mut chunk, &e)?;
        chunk.push(b'\n');
        n += 1;
        if n % 1_000 == 0 {
            chunks.push(std::mem::take(&mut chunk));
        }
        Ok(())
    })?;
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    Ok(chunks)
}

/// Ingests the chunks into a fresh in-process server core; returns (CPU per event, hook seconds).
fn ingest_run(
    runtime: &tokio::runtime::Runtime,
    chunks: &[Vec<u8>],
    configured: Option<(usize, usize)>,
) -> anyhow::Result<(Duration, f64, u64)> {
    let dir = tempfile::tempdir()?;
    let config = ServeOptions {
        data_dir: Some(dir.path().to_path_buf()),
        durability: Some(DurabilityMode::Relaxed),
        location: Some("us-south".into()),
        ..Default::default()
    }
    .resolve()?;
    let metrics = Arc::new(Metrics::new());
    let core = Core::open(&config, metrics.clone())?;
    let routing =
        runtime.block_on(async { Routing::start(&core, dir.path(), RoutingOptions::default()) })?;
    if let Some((routes, rules)) = configured {
        let (_, r, s) = configuration(routes, rules);
        routing.store.update(|c| {
            c.routes = r;
            c.settings = s;
            Ok::<_, trailkeep_server::alerts::store::StoreError>(())
        })?;
        routing.rebuild();
    }
    let admin = Principal {
        key_id: "bench".into(),
        key_name: "bench routing".into(),
        role: Role::Admin,
        accounts: AccountScope::All,
        default_account: "default".into(),
        action_prefixes: Vec::new(),
        limits: Default::default(),
        client: None,
    };
    let started = cpu();
    let mut accepted = 0u64;
    for chunk in chunks {
        let report = runtime
            .block_on(core.ingest(&admin, chunk.clone(), trailkeep_event::InputFormat::Ndjson))
            .map_err(|e| anyhow::anyhow!("ingest: {}", e.message))?;
        accepted += report.accepted as u64;
    }
    core.indexer.flush();
    let used = cpu().saturating_sub(started);
    let hook = metrics.routing.decide_seconds.get();
    core.close();
    Ok((used / accepted.max(1) as u32, hook, accepted))
}

/// With fsync durability: `requests` single-event requests, `concurrency` at a time, into a fresh
/// core; with `remote`, every event also goes to a webhook target (which never answers: its
/// worker waits, the outbox only grows). Returns requests per second (wall clock).
fn fsync_run(
    runtime: &tokio::runtime::Runtime,
    chunks: &[Vec<u8>],
    requests: u64,
    concurrency: usize,
    remote: bool,
) -> anyhow::Result<f64> {
    use trailkeep_server::routing::model::TargetKind;
    let dir = tempfile::tempdir()?;
    let config = ServeOptions {
        data_dir: Some(dir.path().to_path_buf()),
        durability: Some(DurabilityMode::Fsync),
        location: Some("us-south".into()),
        ..Default::default()
    }
    .resolve()?;
    let metrics = Arc::new(Metrics::new());
    let core = Core::open(&config, metrics)?;
    let mut options = RoutingOptions::default();
    options.retry.initial = Duration::from_secs(3600);
    options.retry.max = Duration::from_secs(3600);
    let routing = runtime.block_on(async { Routing::start(&core, dir.path(), options) })?;
    if remote {
        let target = Target {
            id: "tgt_bench".into(),
            name: "bench webhook".into(),
            kind: TargetKind::Webhook {
                url: "http://127.0.0.1:9/never".into(),
                secret: "bench-secret-0123456789".into(),
            },
            created_at: "t".into(),
            updated_at: "t".into(),
        };
        let route = Route {
            id: "route_all".into(),
            name: "all".into(),
            rules: vec![Rule {
                locations: vec!["*".into()],
                target_ids: vec!["local".into(), "tgt_bench".into()],
            }],
            created_at: String::new(),
            updated_at: String::new(),
        };
        let stored = target.clone();
        routing.store.update(|c| {
            c.targets.push(stored);
            c.routes = vec![route];
            Ok::<_, trailkeep_server::alerts::store::StoreError>(())
        })?;
        runtime.block_on(async { routing.target_changed(&target) })?;
        routing.rebuild();
    }
    let admin = Principal {
        key_id: "bench".into(),
        key_name: "bench routing".into(),
        role: Role::Admin,
        accounts: AccountScope::All,
        default_account: "default".into(),
        action_prefixes: Vec::new(),
        limits: Default::default(),
        client: None,
    };
    let lines: Vec<Vec<u8>> = chunks
        .iter()
        .flat_map(|c| c.split(|b| *b == b'\n').filter(|l| !l.is_empty()))
        .take(requests as usize)
        .map(<[u8]>::to_vec)
        .collect();
    let lines = Arc::new(lines);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = std::time::Instant::now();
    let done: u64 = runtime
        .block_on(async {
            let mut tasks = Vec::new();
            for _ in 0..concurrency {
                let (core, admin, lines, next) =
                    (core.clone(), admin.clone(), lines.clone(), next.clone());
                tasks.push(tokio::spawn(async move {
                    let mut n = 0u64;
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(line) = lines.get(i) else {
                            return Ok::<u64, String>(n);
                        };
                        let report = core
                            .ingest(&admin, line.clone(), trailkeep_event::InputFormat::Ndjson)
                            .await
                            .map_err(|e| e.message)?;
                        n += report.accepted as u64;
                    }
                }));
            }
            let mut total = 0;
            for t in tasks {
                total += t.await.map_err(|e| e.to_string())??;
            }
            Ok::<u64, String>(total)
        })
        .map_err(|e| anyhow::anyhow!("ingest: {e}"))?;
    let elapsed = started.elapsed();
    if remote {
        let backlog = routing
            .worker("tgt_bench")
            .map_or(0, |w| w.outbox.backlog());
        anyhow::ensure!(
            backlog == done,
            "the outbox holds {backlog} of {done} events"
        );
    }
    core.close();
    Ok(done as f64 / elapsed.as_secs_f64())
}

pub fn run(args: RoutingArgs) -> anyhow::Result<ExitCode> {
    if args.events > 25_000 {
        anyhow::bail!("--events is at most 25000 (four ingest runs)");
    }
    if args.fsync_requests > 10_000 || args.concurrency == 0 || args.concurrency > 256 {
        anyhow::bail!("--fsync-requests is at most 10000 and --concurrency 1 to 256");
    }
    // The decision alone, over the locations of the corpus.
    let (targets, routes, settings) = configuration(args.routes, args.rules);
    let table = Table::compile(&targets, &routes, &settings);
    let chunks = corpus(&args, 0)?;
    let mut crns: Vec<String> = Vec::new();
    for chunk in &chunks {
        for line in chunk.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let v: Value = serde_json::from_slice(line)?;
            crns.push(
                v.get("logSourceCRN")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            );
        }
    }
    let rounds = 20;
    let started = cpu();
    let mut local = 0u64;
    for _ in 0..rounds {
        for crn in &crns {
            let d = table.decide(location_of(Some(std::hint::black_box(crn))));
            local += u64::from(d.local);
        }
    }
    let decide_ns = cpu().saturating_sub(started).as_nanos() as f64 / (rounds * crns.len()) as f64;
    std::hint::black_box(local);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut without = Vec::new();
    let mut with = Vec::new();
    let mut hook_ns = Vec::new();
    for round in 0..2 {
        let chunks = corpus(&args, round + 1)?;
        let (a, _, n) = ingest_run(&runtime, &chunks, None)?;
        without.push(a);
        let (b, hook, m) = ingest_run(&runtime, &chunks, Some((args.routes, args.rules)))?;
        with.push(b);
        hook_ns.push(hook * 1e9 / m.max(1) as f64);
        eprintln!(
            "run {}: {n} events without routes {:.1} µs CPU/event, with {:.1} µs",
            round + 1,
            a.as_secs_f64() * 1e6,
            b.as_secs_f64() * 1e6
        );
    }
    let mean = |v: &[Duration]| v.iter().map(Duration::as_secs_f64).sum::<f64>() / v.len() as f64;
    let (base, routed) = (mean(&without) * 1e9, mean(&with) * 1e9);
    let hook = hook_ns.iter().sum::<f64>() / hook_ns.len() as f64;
    println!(
        "routing table        {} routes × {} rules, {} corpus events, 8 regions",
        args.routes,
        args.rules,
        crns.len()
    );
    println!("routing decision     {decide_ns:.0} ns/event (location from the CRN + every route)");
    println!(
        "ingest hook          {hook:.0} ns/event (Routing::split inside ingest: decision, data-event check, answers)"
    );
    println!(
        "ingest CPU           {:.1} µs/event without routes, {:.1} µs/event with them (in-process Core::ingest, relaxed durability, until indexed)",
        base / 1e3,
        routed / 1e3
    );
    println!(
        "routing share        {:.2} % (decision ÷ ingest CPU), {:.2} % (ingest hook ÷ ingest CPU)",
        decide_ns / base * 100.0,
        hook / base * 100.0
    );
    if args.fsync_requests > 0 {
        let chunks = corpus(&args, 9)?;
        let (mut local, mut remote) = (Vec::new(), Vec::new());
        for _ in 0..2 {
            local.push(fsync_run(
                &runtime,
                &chunks,
                args.fsync_requests,
                args.concurrency,
                false,
            )?);
            remote.push(fsync_run(
                &runtime,
                &chunks,
                args.fsync_requests,
                args.concurrency,
                true,
            )?);
        }
        let avg = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (l, r) = (avg(&local), avg(&remote));
        println!(
            "fsync durability     {} single-event requests, {} in flight: {l:.0} req/s stored locally, {r:.0} req/s also routed to a remote target ({:+.1} %)",
            args.fsync_requests.min(args.events),
            args.concurrency,
            (r / l - 1.0) * 100.0
        );
    }
    Ok(ExitCode::SUCCESS)
}
