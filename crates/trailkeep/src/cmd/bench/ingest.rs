//! `trailkeep bench ingest`: post a corpus over HTTP with N connections and report throughput,
//! acknowledgement latency, ingest-to-searchable latency, bytes on disk per event and server
//! memory.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;

use super::corpus::{CorpusSpec, write_file};
use super::server::{Target, TargetArgs, dir_size, process_memory};
use super::stats::{Samples, ms};
use crate::remote::{Remote, RequestError, with_retries};

#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    #[command(flatten)]
    target: TargetArgs,

    /// Events to send (ignored with --corpus, which is sent whole).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,

    /// Corpus seed (see `trailkeep bench corpus`).
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// Send this NDJSON file instead of generating a corpus first.
    #[arg(long, value_name = "FILE")]
    corpus: Option<PathBuf>,

    /// Concurrent HTTP connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,

    /// Events per request.
    #[arg(long, default_value_t = 1000)]
    batch: usize,

    /// Offered load in events per second (0: as fast as the server acknowledges).
    #[arg(long, default_value_t = 0)]
    rate: u64,

    /// Send a probe event this often and time how long it takes to become searchable.
    #[arg(long, default_value_t = 250, value_name = "MS")]
    probe_every: u64,

    /// Leave the started server running (prints its URL and key) for `trailkeep bench query`.
    #[arg(long)]
    keep: bool,

    /// Also write the figures as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// What the sending threads found.
#[derive(Debug, Default)]
pub(super) struct Sent {
    pub acks: Samples,
    pub accepted: u64,
    pub rejected: u64,
    pub retries: u64,
}

pub fn run(args: IngestArgs) -> anyhow::Result<ExitCode> {
    let target = Target::start(&args.target, &[])?;
    let remote = Remote::new(&target.remote)?;

    // The corpus is written before the clock starts, so generating it costs the server nothing.
    let (corpus_path, _corpus_dir) = match &args.corpus {
        Some(p) => (p.clone(), None),
        None => {
            let dir = tempfile::Builder::new()
                .prefix("trailkeep-corpus-")
                .tempdir_in(std::env::current_dir()?)?;
            let path = dir.path().join("corpus.ndjson");
            let spec = CorpusSpec {
                seed: args.seed,
                events: args.events,
                end_unix: time::OffsetDateTime::now_utc().unix_timestamp(),
                span_secs: 7 * 86_400,
            };
            eprintln!("{}", write_file(spec, &path)?.summary());
            (path, Some(dir))
        }
    };
    let corpus_bytes = std::fs::metadata(&corpus_path)?.len();
    let reader = Arc::new(Mutex::new((
        BufReader::with_capacity(
            4 << 20,
            File::open(&corpus_path).context("opening the corpus")?,
        ),
        0u64,
    )));

    let started = Instant::now();
    let cpu_before = target.cpu();
    let sent_events = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let peak_rss = Arc::new(AtomicU64::new(0));

    // Searchability probes and a progress line every few seconds.
    let probe = {
        let remote = remote.clone();
        let done = done.clone();
        let every = Duration::from_millis(args.probe_every.max(10));
        std::thread::spawn(move || probe_searchable(&remote, every, &done))
    };
    let progress = {
        let sent = sent_events.clone();
        let done = done.clone();
        let peak = peak_rss.clone();
        let pid = target.pid();
        let memory = move || pid.and_then(process_memory);
        std::thread::spawn(move || {
            let mut last = 0;
            while !done.load(Ordering::Relaxed) {
                for _ in 0..50 {
                    std::thread::sleep(Duration::from_millis(100));
                    if let Some((_, rss)) = memory() {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                    if done.load(Ordering::Relaxed) {
                        return;
                    }
                }
                let now = sent.load(Ordering::Relaxed);
                let rss = memory().map(|(_, r)| format!(", server RSS {} MiB", r >> 20));
                eprintln!(
                    "{:>6.1} s: {now} events acknowledged ({:.0}/s over the last 5 s{})",
                    started.elapsed().as_secs_f64(),
                    (now - last) as f64 / 5.0,
                    rss.unwrap_or_default()
                );
                last = now;
            }
        })
    };

    let workers: Vec<_> = (0..args.connections.max(1))
        .map(|_| {
            let remote = remote.clone();
            let reader = reader.clone();
            let sent = sent_events.clone();
            let (batch, rate) = (args.batch.max(1), args.rate);
            std::thread::spawn(move || send_batches(&remote, &reader, batch, rate, started, &sent))
        })
        .collect();
    let mut sent = Sent::default();
    for w in workers {
        let s = w.join().expect("sender thread")?;
        sent.acks.extend(s.acks);
        sent.accepted += s.accepted;
        sent.rejected += s.rejected;
        sent.retries += s.retries;
    }
    let elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let searchable = probe.join().expect("probe thread");
    let _ = progress.join();

    // Wait for the index to hold everything acknowledged.
    let caught_up = wait_for_index(&remote, sent.accepted);
    let memory = target.memory();
    let cpu_used = target
        .cpu()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    let data_dir = target.data_dir.clone();

    let total = sent.accepted + sent.rejected;
    let events_per_s = sent.accepted as f64 / elapsed.as_secs_f64();
    let mut figures = json!({
        "system": "trailkeep",
        "events": sent.accepted,
        "rejected": sent.rejected,
        "seconds": elapsed.as_secs_f64(),
        "events_per_s": events_per_s,
        "connections": args.connections,
        "batch": args.batch,
        "indexed": caught_up.is_some(),
    });
    let write_json = |figures: &serde_json::Value| -> anyhow::Result<()> {
        if let Some(path) = &args.json {
            std::fs::write(path, serde_json::to_vec_pretty(figures)?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    };
    println!("== trailkeep bench ingest ==");
    println!(
        "corpus              {} events, {:.0} bytes/event ({})",
        total,
        corpus_bytes as f64 / total.max(1) as f64,
        corpus_path.display()
    );
    println!(
        "load                {} connections, {} events/request, offered {}",
        args.connections,
        args.batch,
        if args.rate == 0 {
            "as fast as acknowledged".to_string()
        } else {
            format!("{} events/s", args.rate)
        }
    );
    println!(
        "throughput          {:.0} events/s durable ({} accepted, {} rejected, {} retries after 429/5xx, {:.1} s)",
        events_per_s,
        sent.accepted,
        sent.rejected,
        sent.retries,
        elapsed.as_secs_f64()
    );
    println!("ack latency         {}", sent.acks.summary());
    println!("searchable after    {}", searchable.summary());
    match caught_up {
        Some(d) => println!(
            "index caught up     {} after the last acknowledgement",
            ms(d)
        ),
        None => println!("index caught up     NOT within 10 minutes"),
    }
    if let Some(cpu) = cpu_used {
        println!(
            "server CPU          {:.0} µs/event ({:.1} s user + system for {} events, until indexed)",
            cpu.as_secs_f64() * 1e6 / sent.accepted.max(1) as f64,
            cpu.as_secs_f64(),
            sent.accepted
        );
    }
    if let Some((peak, _)) = memory {
        println!(
            "server memory       peak RSS {} MiB (sampled max {} MiB)",
            peak >> 20,
            peak_rss.load(Ordering::Relaxed) >> 20
        );
    }
    if args.keep {
        println!(
            "server kept         {} (key {})",
            target.remote.url,
            target.remote.key.as_deref().unwrap_or("")
        );
        write_json(&figures)?;
        // Leak the child on purpose: the caller stops it.
        std::mem::forget(target);
        return Ok(ExitCode::SUCCESS);
    }
    target.stop()?;
    if let Some(dir) = data_dir {
        let all = dir_size(&dir);
        let ledger = dir_size(&dir.join("ledger"));
        let index = dir_size(&dir.join("index"));
        let events = sent.accepted.max(1) as f64;
        println!(
            "bytes on disk       {:.0} bytes/event all-in (ledger {:.0}, index {:.0}; {:.1} % of the corpus)",
            all as f64 / events,
            ledger as f64 / events,
            index as f64 / events,
            100.0 * all as f64 / corpus_bytes.max(1) as f64
        );
        figures["disk_bytes"] = json!(all);
        figures["bytes_per_event"] = json!(all as f64 / events);
    }
    write_json(&figures)?;
    Ok(ExitCode::SUCCESS)
}

/// One connection: take the next `batch` lines of the corpus, post them, repeat.
pub(super) fn send_batches(
    remote: &Remote,
    reader: &Mutex<(BufReader<File>, u64)>,
    batch: usize,
    rate: u64,
    started: Instant,
    sent: &AtomicU64,
) -> anyhow::Result<Sent> {
    let mut out = Sent::default();
    let mut body = Vec::with_capacity(batch * 2200);
    loop {
        body.clear();
        let (lines, number) = {
            let mut guard = reader.lock().expect("reader lock");
            let (r, counter) = &mut *guard;
            let mut lines = 0;
            while lines < batch {
                let before = body.len();
                if r.read_until(b'\n', &mut body)? == 0 {
                    break;
                }
                if body[before..].iter().all(u8::is_ascii_whitespace) {
                    body.truncate(before);
                    continue;
                }
                lines += 1;
            }
            *counter += 1;
            (lines, *counter - 1)
        };
        if lines == 0 {
            return Ok(out);
        }
        if rate > 0 {
            let due =
                started + Duration::from_secs_f64((number * batch as u64) as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let t = Instant::now();
        let mut retries = 0;
        let report = with_retries(
            Duration::from_secs(120),
            || remote.post("/v1/events", "application/x-ndjson", None, &body),
            |_, _| retries += 1,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        out.acks.push(t.elapsed());
        out.retries += retries;
        let accepted = report["accepted"].as_u64().unwrap_or(0);
        out.accepted += accepted;
        out.rejected += report["rejected"].as_u64().unwrap_or(0);
        sent.fetch_add(accepted, Ordering::Relaxed);
    }
}

/// Every `every`, sends one uniquely marked event and polls until a search finds it.
fn probe_searchable(remote: &Remote, every: Duration, done: &AtomicBool) -> Samples {
    let account = super::corpus::account_id(999);
    let mut samples = Samples::default();
    let mut n = 0u64;
    while !done.load(Ordering::Relaxed) {
        let round = Instant::now();
        n += 1;
        let marker = format!("probe-{}-{n}", std::process::id());
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let event = json!({
            "eventTime": now,
            "action": "trailkeep.probe.send",
            "outcome": "success",
            "correlationId": marker,
            "initiator": {"id": "bench", "typeURI": "service/security/account/serviceid"},
            "target": {"id": format!("crn:v1:bluemix:public:trailkeep:us-south:a/{account}::probe:{n}")},
            "logSourceCRN": format!("crn:v1:bluemix:public:trailkeep:us-south:a/{account}:::"),
        });
        let sent = remote.post(
            "/v1/events",
            "application/json",
            None,
            event.to_string().as_bytes(),
        );
        if sent.is_ok() {
            let acked = Instant::now();
            let q = format!("correlationId:\"{marker}\"");
            while acked.elapsed() < Duration::from_secs(30) {
                let found = remote
                    .get_json(
                        "/v1/events",
                        &[
                            ("q", &q),
                            ("from", "now-1h"),
                            ("limit", "1"),
                            ("account", &account),
                        ],
                    )
                    .map(|page| page["events"].as_array().is_some_and(|e| !e.is_empty()));
                if let Ok(true) = found {
                    samples.push(acked.elapsed());
                    break;
                }
                // Each poll is a search the server serves during the load: keep them light.
                std::thread::sleep(Duration::from_millis(25));
            }
        }
        if let Some(rest) = every.checked_sub(round.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    samples
}

/// Polls the event count until the index holds `want` corpus events; the time it took.
fn wait_for_index(remote: &Remote, want: u64) -> Option<Duration> {
    let started = Instant::now();
    let probe_account = super::corpus::account_id(999);
    while started.elapsed() < Duration::from_secs(600) {
        let total = remote
            .get_json(
                "/v1/aggregate",
                &[
                    ("q", &format!("NOT account:{probe_account}")),
                    ("from", "now-30d"),
                ],
            )
            .map(|r| r["total"].as_u64().unwrap_or(0));
        match total {
            Ok(t) if t >= want => return Some(started.elapsed()),
            Ok(_) | Err(RequestError::Transport(_)) | Err(RequestError::Status { .. }) => {}
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}
