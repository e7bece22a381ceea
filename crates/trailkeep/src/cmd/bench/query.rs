//! `trailkeep bench query`: latency of the five reference queries over HTTP (full events read
//! from the ledger, as a user gets them), against a loaded server.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::Value;

use super::server::{Target, TargetArgs};
use super::stats::{Samples, ms};
use crate::remote::Remote;

#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// The server to query: `--url` for a running one, or `--data-dir` of a loaded data
    /// directory (e.g. from `bench ingest --data-dir`) to start one on it.
    #[command(flatten)]
    target: TargetArgs,

    /// Timed runs of each query (after a warm-up of a tenth as many).
    #[arg(long, default_value_t = 300)]
    iterations: usize,

    /// Query these values (JSON, written by `bench/compare`) instead of values sampled from
    /// the newest events, with absolute time bounds; before timing, each query is run once
    /// per value and the results are counted, so other systems can be checked against them.
    #[arg(long, value_name = "FILE")]
    params: Option<std::path::PathBuf>,

    /// Also write the figures as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<std::path::PathBuf>,
}

/// The values of the five queries, chosen from the corpus by `bench/compare`; times RFC 3339.
#[derive(Debug, serde::Deserialize)]
pub struct QueryParams {
    /// The window of the correlation id, target and full-text queries: `[from, to)`.
    pub from: String,
    pub to: String,
    /// Start of the failures query's window (24 h before `to`).
    pub failures_from: String,
    /// Start of the counts query's window (7 days before `to`).
    pub counts_from: String,
    pub correlation_ids: Vec<String>,
    pub target_ids: Vec<String>,
    /// The account of the failures query.
    pub account: String,
    pub words: Vec<String>,
}

impl QueryParams {
    fn read(path: &std::path::Path) -> anyhow::Result<QueryParams> {
        use anyhow::Context as _;
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let p: QueryParams =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if p.correlation_ids.is_empty() || p.target_ids.is_empty() || p.words.is_empty() {
            bail!(
                "{}: correlation_ids, target_ids and words need a value each",
                path.display()
            );
        }
        Ok(p)
    }
}

/// Runs the `i`-th repetition of a query and returns how many results it gave.
type RunQuery = Box<dyn Fn(&Remote, usize) -> Result<usize, String>>;

/// One reference query: a name, the target p99, and how to run it with sample values.
struct Reference {
    name: &'static str,
    target: Duration,
    /// How many distinct values it is run with (each is run once to count the results).
    values: usize,
    run: RunQuery,
}

pub fn run(args: QueryArgs) -> anyhow::Result<ExitCode> {
    if args.target.url.is_none() && args.target.data_dir.is_none() {
        bail!("bench query needs a loaded server: --url URL --key KEY, or --data-dir DIR");
    }
    let target = Target::start(&args.target, &[])?;
    let remote = Remote::new(&target.remote)?;
    let refs = match &args.params {
        Some(path) => with_params(QueryParams::read(path)?),
        None => sampled(&remote)?,
    };
    println!(
        "== trailkeep bench query ({} runs each) ==",
        args.iterations
    );
    println!(
        "{:<46} {:>10} {:>10} {:>10} {:>8} {:>12}",
        "query", "p50", "p99", "target", "hits", "server CPU"
    );
    let mut figures = Vec::new();
    for q in &refs {
        let warmup = (args.iterations / 10).max(1);
        let mut hits = 0;
        for i in 0..warmup {
            hits = (q.run)(&remote, i).map_err(|e| anyhow::anyhow!("{}: {e}", q.name))?;
        }
        if q.values > 0 {
            // With given values: the results of every value, added up (what other systems
            // must also find).
            hits = 0;
            for i in 0..q.values {
                hits += (q.run)(&remote, i).map_err(|e| anyhow::anyhow!("{}: {e}", q.name))?;
            }
        }
        let mut lat = Samples::default();
        let cpu_before = target.cpu();
        for i in 0..args.iterations {
            let t = Instant::now();
            (q.run)(&remote, warmup + i).map_err(|e| anyhow::anyhow!("{}: {e}", q.name))?;
            lat.push(t.elapsed());
        }
        // Server CPU per query (the search, the self-audit record of the read, the commits it
        // causes): unlike latency, hardly moved by other work on the machine.
        let cpu_per_query = match (cpu_before, target.cpu()) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a) / args.iterations.max(1) as u32),
            _ => None,
        };
        let p99 = lat.percentile(99.0);
        println!(
            "{:<46} {:>10} {:>10} {:>10} {:>8} {:>12}  {}",
            q.name,
            ms(lat.percentile(50.0)),
            ms(p99),
            format!("≤ {}", ms(q.target)),
            hits,
            cpu_per_query.map_or("-".to_string(), |c| format!("{} µs", c.as_micros())),
            if p99 <= q.target { "met" } else { "MISSED" }
        );
        figures.push(serde_json::json!({
            "name": q.name,
            "p50_ms": lat.percentile(50.0).as_secs_f64() * 1e3,
            "p99_ms": p99.as_secs_f64() * 1e3,
            "server_cpu_us": cpu_per_query.map(|c| c.as_micros() as u64),
            "hits": hits,
            "runs": args.iterations,
        }));
    }
    if let Some(path) = &args.json {
        let doc = serde_json::json!({ "system": "trailkeep", "queries": figures });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)?;
    }
    if let Some((peak, _)) = target.memory() {
        println!("server peak RSS {} MiB", peak >> 20);
    }
    target.stop()?;
    Ok(ExitCode::SUCCESS)
}

/// The five queries with values sampled from the newest events the server holds.
fn sampled(remote: &Remote) -> anyhow::Result<Vec<Reference>> {
    let samples = QueryValues::collect(remote)?;
    eprintln!(
        "sample values: {} correlation ids, {} targets, busiest account {} ({} of the newest 1000 failures of the last 24 h)",
        samples.correlations.len(),
        samples.targets.len(),
        samples.busiest.0,
        samples.busiest.1
    );
    let s = std::sync::Arc::new(samples);
    let pick = |v: &[String], i: usize| v[i % v.len()].clone();
    Ok(vec![
        {
            let s = s.clone();
            Reference {
                name: "one correlationId",
                target: Duration::from_millis(2),
                values: 0,
                run: Box::new(move |r, i| {
                    search(
                        r,
                        &format!("correlationId:\"{}\"", pick(&s.correlations, i)),
                        "now-30d",
                        None,
                    )
                }),
            }
        },
        {
            let s = s.clone();
            Reference {
                name: "one target.id, newest 100",
                target: Duration::from_millis(20),
                values: 0,
                run: Box::new(move |r, i| {
                    search(
                        r,
                        &format!("target.id:\"{}\"", pick(&s.targets, i)),
                        "now-30d",
                        None,
                    )
                }),
            }
        },
        {
            let s = s.clone();
            Reference {
                name: "one account's failures in 24 h, newest 100",
                target: Duration::from_millis(20),
                values: 0,
                run: Box::new(move |r, _| {
                    search(r, "outcome:failure", "now-24h", Some(&s.busiest.0))
                }),
            }
        },
        Reference {
            name: "full-text word, newest 100",
            target: Duration::from_millis(50),
            values: 0,
            run: Box::new(|r, i| {
                let word = ["unavailable", "expired", "conflict", "reconciling"][i % 4];
                search(r, word, "now-7d", None)
            }),
        },
        Reference {
            name: "counts by action over 7 days",
            target: Duration::from_millis(50),
            values: 0,
            run: Box::new(|r, _| {
                let v = r
                    .get_json(
                        "/v1/aggregate",
                        &[("by", "action"), ("from", "now-7d"), ("size", "100")],
                    )
                    .map_err(|e| e.to_string())?;
                Ok(v["terms"].as_array().map_or(0, Vec::len))
            }),
        },
    ])
}

/// The five queries with the values and absolute time bounds of `p`: the same queries
/// `bench/compare` runs against the other systems.
fn with_params(p: QueryParams) -> Vec<Reference> {
    let p = std::sync::Arc::new(p);
    let pick = |v: &[String], i: usize| v[i % v.len()].clone();
    vec![
        {
            let p = p.clone();
            Reference {
                name: "one correlationId",
                target: Duration::from_millis(2),
                values: p.correlation_ids.len(),
                run: Box::new(move |r, i| {
                    let q = format!("correlationId:\"{}\"", pick(&p.correlation_ids, i));
                    search_between(r, &q, &p.from, &p.to, None)
                }),
            }
        },
        {
            let p = p.clone();
            Reference {
                name: "one target.id, newest 100",
                target: Duration::from_millis(20),
                values: p.target_ids.len(),
                run: Box::new(move |r, i| {
                    let q = format!("target.id:\"{}\"", pick(&p.target_ids, i));
                    search_between(r, &q, &p.from, &p.to, None)
                }),
            }
        },
        {
            let p = p.clone();
            Reference {
                name: "one account's failures in 24 h, newest 100",
                target: Duration::from_millis(20),
                values: 1,
                run: Box::new(move |r, _| {
                    search_between(
                        r,
                        "outcome:failure",
                        &p.failures_from,
                        &p.to,
                        Some(&p.account),
                    )
                }),
            }
        },
        {
            let p = p.clone();
            Reference {
                name: "full-text word, newest 100",
                target: Duration::from_millis(50),
                values: p.words.len(),
                run: Box::new(move |r, i| {
                    search_between(r, &pick(&p.words, i), &p.from, &p.to, None)
                }),
            }
        },
        Reference {
            name: "counts by action over 7 days",
            target: Duration::from_millis(50),
            values: 1,
            run: Box::new(move |r, _| {
                let v = r
                    .get_json(
                        "/v1/aggregate",
                        &[
                            ("by", "action"),
                            ("from", &p.counts_from),
                            ("to", &p.to),
                            ("size", "1000"),
                        ],
                    )
                    .map_err(|e| e.to_string())?;
                // The events counted, less the server's own records of the benchmark's reads
                // (other systems hold only the corpus).
                Ok(v["terms"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|t| !t["key"].as_str().unwrap_or("").starts_with("trailkeep."))
                    .map(|t| t["count"].as_u64().unwrap_or(0) as usize)
                    .sum())
            }),
        },
    ]
}

/// A search of newest 100; the number of events returned.
fn search(remote: &Remote, q: &str, from: &str, account: Option<&str>) -> Result<usize, String> {
    let mut query = vec![("q", q), ("from", from), ("limit", "100")];
    if let Some(a) = account {
        query.push(("account", a));
    }
    let page = remote
        .get_json("/v1/events", &query)
        .map_err(|e| e.to_string())?;
    Ok(page["events"].as_array().map_or(0, Vec::len))
}

/// A search of newest 100 in `[from, to)`; the number of events returned.
fn search_between(
    remote: &Remote,
    q: &str,
    from: &str,
    to: &str,
    account: Option<&str>,
) -> Result<usize, String> {
    let mut query = vec![("q", q), ("from", from), ("to", to), ("limit", "100")];
    if let Some(a) = account {
        query.push(("account", a));
    }
    let page = remote
        .get_json("/v1/events", &query)
        .map_err(|e| e.to_string())?;
    Ok(page["events"].as_array().map_or(0, Vec::len))
}

/// Real values to query for, taken from the newest events.
struct QueryValues {
    correlations: Vec<String>,
    targets: Vec<String>,
    busiest: (String, usize),
}

impl QueryValues {
    fn collect(remote: &Remote) -> anyhow::Result<QueryValues> {
        let page = remote
            .get_json(
                "/v1/events",
                // Not the server's own records of earlier reads (they are newest of all).
                &[
                    ("q", "NOT action:trailkeep.*"),
                    ("from", "now-7d"),
                    ("limit", "1000"),
                ],
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let events = page["events"].as_array().cloned().unwrap_or_default();
        if events.is_empty() {
            bail!(
                "the server holds no events from the last 7 days; load it first (bench ingest --keep or --data-dir)"
            );
        }
        let field = |e: &Value, path: &[&str]| {
            let mut v = &e["event"];
            for p in path {
                v = &v[*p];
            }
            v.as_str().map(str::to_string)
        };
        let mut correlations: Vec<String> = events
            .iter()
            .filter_map(|e| field(e, &["correlationId"]))
            .collect();
        correlations.dedup();
        let mut targets: Vec<String> = events
            .iter()
            .filter_map(|e| field(e, &["target", "id"]))
            .collect();
        targets.sort();
        targets.dedup();
        // The account with the most recent failures, so that its failures-in-24-h query has
        // something to find (the newest events overall can all belong to one quiet account).
        let failures = remote
            .get_json(
                "/v1/events",
                &[
                    ("q", "outcome:failure AND NOT action:trailkeep.*"),
                    ("from", "now-24h"),
                    ("limit", "1000"),
                ],
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut per_account: BTreeMap<String, usize> = BTreeMap::new();
        for e in failures["events"].as_array().into_iter().flatten() {
            if let Some(a) = e["account"].as_str() {
                *per_account.entry(a.to_string()).or_default() += 1;
            }
        }
        if correlations.is_empty() || targets.is_empty() || per_account.is_empty() {
            bail!(
                "the newest events of the last 7 days lack correlation ids, targets or failures in \
                 the last 24 h; load the bench corpus first (bench ingest --keep or --data-dir)"
            );
        }
        let busiest = per_account
            .into_iter()
            .max_by_key(|(_, n)| *n)
            .unwrap_or_default();
        Ok(QueryValues {
            correlations,
            targets,
            busiest,
        })
    }
}
