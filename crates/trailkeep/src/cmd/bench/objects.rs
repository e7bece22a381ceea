//! `trailkeep bench objects`: what deriving object history (issue #11) costs next to the rest of
//! the ingest work, measured in-process on the bench corpus.
//!
//! Every event of the corpus is normalised (as ingest does), added to a search index, and derived
//! into an object store, each stage timed on its own over the same events (by the CPU time the
//! process spends in it, so that other load on the machine does not distort the figures), with
//! the commits the server makes (every 20,000 events). The figure printed is derive time ÷ (normalise + index
//! time): the ledger's fsync, HTTP and JSON answers are left out of the denominator, so the share
//! of a real server's ingest work is smaller still.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;
use trailkeep_event::{Context, ItemResult, Policy, process_input};
use trailkeep_index::{EventIndex, WriterOptions};
use trailkeep_server::indexer::add_with_derived;
use trailkeep_server::objects::ObjectStore;

use super::corpus::{CorpusSpec, for_each_event};

#[derive(Debug, clap::Args)]
pub struct ObjectsArgs {
    /// How many corpus events.
    #[arg(long, default_value_t = 50_000)]
    pub events: u64,
    /// Seed of the corpus.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// A measured end-to-end ingest rate (events/s, e.g. from `trailkeep bench ingest`) to
    /// express the derive cost against as well.
    #[arg(long, value_name = "EVENTS_PER_SEC")]
    pub ingest_rate: Option<f64>,
    /// The server's CPU per ingested event in µs (the `server CPU` line of `trailkeep bench
    /// ingest`, which includes the derivation) to express the derive cost as a share of it.
    #[arg(long, value_name = "MICROS")]
    pub ingest_cpu: Option<f64>,
}

const COMMIT_EVERY: u64 = 20_000;

/// CPU time of the whole process so far (every thread's on-CPU time from
/// `/proc/self/task/*/schedstat`): the stages are timed by the CPU they use, not by the wall
/// clock, so other work on a shared machine does not count against them.
struct Clock(u64);

impl Clock {
    fn now() -> Clock {
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
        Clock(total)
    }

    fn elapsed(&self) -> Duration {
        Duration::from_nanos(Clock::now().0.saturating_sub(self.0))
    }
}
const CHUNK: usize = 1_000;

#[derive(Default)]
struct Times {
    pure: Duration,
    store_commit: Duration,
    normalize: Duration,
    index: Duration,
    derive: Duration,
}

pub fn run(args: ObjectsArgs) -> anyhow::Result<ExitCode> {
    let dir = tempfile::tempdir()?;
    let index = EventIndex::open(&dir.path().join("index"))?;
    let mut writer = index.writer(WriterOptions::default())?;
    let (store, _) = ObjectStore::open(&dir.path().join("objects.redb"))?;
    let policy = Policy::default();
    let ctx = Context::new(&policy, "default");
    let spec = CorpusSpec {
        seed: args.seed,
        events: args.events,
        end_unix: time::OffsetDateTime::now_utc().unix_timestamp(),
        span_secs: 7 * 86_400,
    };
    let mut t = Times::default();
    let mut positions: std::collections::HashMap<String, u64> = Default::default();
    let mut done = 0u64;
    let mut chunk: Vec<u8> = Vec::new();
    let mut in_chunk = 0usize;
    let mut batch = Some(store.begin()?);
    let mut objects = std::collections::HashSet::new();
    let mut flush = |chunk: &mut Vec<u8>, t: &mut Times| -> anyhow::Result<()> {
        let started = Clock::now();
        let items = process_input(chunk, &ctx)?;
        let stored: Vec<(String, Value)> = items
            .into_iter()
            .filter_map(|i| match i.result {
                ItemResult::Accepted(e) => Some((e.account().to_string(), e.into_event())),
                _ => None,
            })
            .collect();
        t.normalize += started.elapsed();
        chunk.clear();
        let received = time::OffsetDateTime::now_utc();
        let started = Clock::now();
        for (_, event) in &stored {
            std::hint::black_box(trailkeep_event::object::derive(event, None, None));
        }
        t.pure += started.elapsed();
        let started = Clock::now();
        let mut items = Vec::with_capacity(stored.len());
        for (account, event) in &stored {
            let next = positions.entry(account.clone()).or_insert(0);
            items.push((account.as_str(), *next, event));
            if let Some(id) = trailkeep_event::object::target_id(event) {
                objects.insert((account.clone(), id.to_string()));
            }
            *next += 1;
        }
        let b = match &mut batch {
            Some(b) => b,
            None => batch.insert(store.begin()?),
        };
        let derived: Vec<(u64, trailkeep_event::Derived)> = items
            .iter()
            .map(|(_, i, _)| *i)
            .zip(b.apply_all(items.iter().copied())?)
            .collect();
        let before = done;
        done += stored.len() as u64;
        if before / COMMIT_EVERY != done / COMMIT_EVERY
            && let Some(b) = batch.take()
        {
            let c = Clock::now();
            b.commit()?;
            t.store_commit += c.elapsed();
        }
        t.derive += started.elapsed();
        let started = Clock::now();
        for ((account, event), (i, d)) in stored.iter().zip(&derived) {
            add_with_derived(&mut writer, account, *i, received, event, Some(d))?;
        }
        if done % COMMIT_EVERY < stored.len() as u64 {
            writer.commit()?;
        }
        t.index += started.elapsed();
        Ok(())
    };
    let mut failure = None;
    for_each_event(spec, |event| {
        if failure.is_some() {
            return Ok(());
        }
        serde_json::to_writer(&mut chunk, &event)?;
        chunk.push(b'\n');
        in_chunk += 1;
        if in_chunk == CHUNK {
            in_chunk = 0;
            if let Err(e) = flush(&mut chunk, &mut t) {
                failure = Some(e);
            }
        }
        Ok(())
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    if !chunk.is_empty() {
        flush(&mut chunk, &mut t)?;
    }
    let started = Clock::now();
    if let Some(b) = batch.take() {
        b.commit()?;
    }
    t.derive += started.elapsed();
    t.store_commit += started.elapsed();
    let started = Clock::now();
    writer.commit()?;
    writer.finish()?;
    t.index += started.elapsed();

    let n = done.max(1) as f64;
    let us = |d: Duration| d.as_secs_f64() * 1e6 / n;
    let store_bytes = std::fs::metadata(dir.path().join("objects.redb"))?.len();
    println!("events:      {done}  ({} objects)", objects.len());
    println!(
        "normalise:   {:>7.1} µs CPU/event  ({:>8.0} events per CPU-s)",
        us(t.normalize),
        n / t.normalize.as_secs_f64()
    );
    println!(
        "index:       {:>7.1} µs CPU/event  ({:>8.0} events per CPU-s)",
        us(t.index),
        n / t.index.as_secs_f64()
    );
    println!(
        "derive:      {:>7.1} µs CPU/event  ({:>8.0} events per CPU-s)  object store {:.0} bytes/event",
        us(t.derive),
        n / t.derive.as_secs_f64(),
        store_bytes as f64 / n
    );
    println!(
        "  of which:  {:>7.1} µs/event  the pure derivation (no store), {:.1} µs/event writing and syncing the store's commits",
        us(t.pure),
        us(t.store_commit)
    );
    let share = t.derive.as_secs_f64() / (t.normalize + t.index).as_secs_f64();
    println!(
        "derive cost: {:.1} % of normalise + index (in-process ingest work)",
        share * 100.0
    );
    if let Some(cpu) = args.ingest_cpu {
        println!(
            "derive cost: {:.1} % of the server's {cpu:.0} µs CPU per ingested event",
            us(t.derive) / cpu * 100.0
        );
    }
    if let Some(rate) = args.ingest_rate {
        println!(
            "derive cost: {:.1} % of one core at {rate:.0} events/s (end-to-end ingest rate)",
            us(t.derive) * rate / 1e6 * 100.0
        );
    }
    Ok(ExitCode::SUCCESS)
}
