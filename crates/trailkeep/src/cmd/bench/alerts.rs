//! `trailkeep bench alerts`: the cost of alert rules on ingest.
//!
//! Two runs over the same corpus at the same offered rate, each on a fresh server: first without
//! rules, then with `--rules` active rules (views with realistic queries over the corpus accounts,
//! presence and absence conditions, webhook channels to a receiver in this process). During the
//! second run a probe sends a marked event every 200 ms; a presence rule on it notifies the
//! receiver, and the time from the probe's acknowledgement to the webhook's arrival is the alert
//! latency. Rule-evaluation cost is read from the server's `/metrics`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};

use super::corpus::{CorpusSpec, account_id, write_file};
use super::ingest::{Sent, send_batches};
use super::server::{Target, TargetArgs};
use super::stats::{Samples, ms};
use crate::remote::Remote;

#[derive(Debug, clap::Args)]
pub struct AlertsArgs {
    /// Events per run.
    #[arg(long, default_value_t = 100_000)]
    events: u64,

    /// Offered load in events per second (0: as fast as acknowledged).
    #[arg(long, default_value_t = 10_000)]
    rate: u64,

    /// Active alert rules in the second run.
    #[arg(long, default_value_t = 1_000)]
    rules: usize,

    /// Concurrent HTTP connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,

    /// Events per request.
    #[arg(long, default_value_t = 1000)]
    batch: usize,

    /// Corpus seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Query templates over the corpus (the demo generator's services, outcomes and reasons).
const QUERIES: [&str; 10] = [
    "outcome:failure AND action:codeengine.*",
    "severity:critical",
    "reason.reasonCode>=500",
    "action:kms.secrets.delete",
    "action:iam-identity.* AND outcome:failure",
    "action:container-registry.image.delete OR action:codeengine.secret.*",
    "dataEvent:false AND outcome:failure AND NOT action:codeengine.pods.*",
    "quota",
    "reason.reasonCode:[400 TO 403]",
    "action:mlops.deployment.* AND -outcome:success",
];

const PROBE_ACTION: &str = "trailkeep.probe.alert";

struct Run {
    sent: Sent,
    elapsed: Duration,
    alert_latency: Samples,
    probes: u64,
    metrics: HashMap<String, f64>,
}

pub fn run(args: AlertsArgs) -> anyhow::Result<ExitCode> {
    let dir = tempfile::Builder::new()
        .prefix("trailkeep-bench-alerts-")
        .tempdir_in(std::env::current_dir()?)?;
    let corpus = dir.path().join("corpus.ndjson");
    let written = write_file(
        CorpusSpec {
            seed: args.seed,
            events: args.events,
            end_unix: time::OffsetDateTime::now_utc().unix_timestamp(),
            span_secs: 3_600,
        },
        &corpus,
    )?;
    eprintln!("{}", written.summary());
    eprintln!("run 1: no rules");
    let base = one_run(&args, &corpus, 0)?;
    eprintln!("run 2: {} rules", args.rules);
    let with = one_run(&args, &corpus, args.rules)?;

    let tput = |r: &Run| r.sent.accepted as f64 / r.elapsed.as_secs_f64();
    println!("== trailkeep bench alerts ==");
    println!(
        "load                {} events per run, offered {}, {} connections × {} events/request",
        args.events,
        if args.rate == 0 {
            "as fast as acknowledged".to_string()
        } else {
            format!("{} events/s", args.rate)
        },
        args.connections,
        args.batch
    );
    println!(
        "without rules       {:.0} events/s durable; ack {}",
        tput(&base),
        base.sent.acks.summary()
    );
    println!(
        "with {:<5} rules    {:.0} events/s durable ({:+.1} %); ack {}",
        args.rules,
        tput(&with),
        100.0 * (tput(&with) / tput(&base) - 1.0),
        with.sent.acks.summary()
    );
    let m = |k: &str| with.metrics.get(k).copied().unwrap_or(0.0);
    let records = m("trailkeep_alert_records_total");
    let seconds = m("trailkeep_alert_match_seconds_total");
    if records > 0.0 {
        println!(
            "rule evaluation     {:.0} records, {:.2} s matching in all: {:.1} µs per record against the ~{} rules of its account (one evaluator thread: {:.0} records/s at most)",
            records,
            seconds,
            seconds / records * 1e6,
            args.rules / 50,
            records / seconds.max(1e-9)
        );
    }
    println!(
        "presence alerts     {} of {} probes notified; ack → webhook {}; {} within 2 s",
        with.alert_latency.len(),
        with.probes,
        with.alert_latency.summary(),
        with.alert_latency.count_at_most(Duration::from_secs(2))
    );
    println!(
        "notifications       {:.0} fired, {:.0} delivered, {:.0} retried, {:.0} failed (server counters)",
        m("trailkeep_alert_notifications_total{result=\"fired\"}"),
        m("trailkeep_alert_notifications_total{result=\"delivered\"}"),
        m("trailkeep_alert_notifications_total{result=\"retrying\"}"),
        m("trailkeep_alert_notifications_total{result=\"failed\"}"),
    );
    Ok(ExitCode::SUCCESS)
}

fn one_run(args: &AlertsArgs, corpus: &std::path::Path, rules: usize) -> anyhow::Result<Run> {
    let target = Target::start(
        &TargetArgs {
            url: None,
            key: None,
            data_dir: None,
        },
        // The receiver listens on loopback, which notifications may not reach by default.
        &["--notify-allow-networks", "127.0.0.1/32"],
    )?;
    let remote = Remote::new(&target.remote)?;
    let receiver = Receiver::start()?;
    let probe_account = account_id(999);
    if rules > 0 {
        let started = Instant::now();
        create_rules(&remote, rules, &receiver.url, &probe_account)?;
        eprintln!(
            "  {rules} views and rules created in {}",
            ms(started.elapsed())
        );
    }
    let reader = Arc::new(Mutex::new((
        BufReader::with_capacity(4 << 20, File::open(corpus).context("opening the corpus")?),
        0u64,
    )));
    let done = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let probes = Arc::new(AtomicU64::new(0));
    let probe = (rules > 0).then(|| {
        let (remote, done, acked, probes) =
            (remote.clone(), done.clone(), acked.clone(), probes.clone());
        let account = probe_account.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !done.load(Ordering::Relaxed) {
                n += 1;
                let id = format!("probe-{}-{n}", std::process::id());
                let event = json!({
                    "id": id,
                    "eventTime": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
                    "action": PROBE_ACTION,
                    "outcome": "success",
                    "initiator": {"id": "bench", "typeURI": "service/security/account/serviceid"},
                    "target": {"id": format!("crn:v1:bluemix:public:trailkeep:us-south:a/{account}::probe:{n}")},
                    "logSourceCRN": format!("crn:v1:bluemix:public:trailkeep:us-south:a/{account}:::"),
                });
                if remote
                    .post("/v1/events", "application/json", None, event.to_string().as_bytes())
                    .is_ok()
                {
                    acked.lock().expect("lock").insert(id, Instant::now());
                    probes.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    });
    let started = Instant::now();
    let workers: Vec<_> = (0..args.connections.max(1))
        .map(|_| {
            let (remote, reader) = (remote.clone(), reader.clone());
            let sent = Arc::new(AtomicU64::new(0));
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
    if let Some(p) = probe {
        let _ = p.join();
    }
    // Give the last probes time to arrive.
    let wait = Instant::now();
    while wait.elapsed() < Duration::from_secs(10) {
        let want = acked.lock().expect("lock").len();
        let got = receiver.arrived.lock().expect("lock").len();
        if got >= want {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut alert_latency = Samples::default();
    {
        let acked = acked.lock().expect("lock");
        let arrived = receiver.arrived.lock().expect("lock");
        for (id, at) in acked.iter() {
            if let Some(t) = arrived.get(id) {
                alert_latency.push(t.saturating_duration_since(*at));
            }
        }
    }
    let metrics = read_metrics(&remote);
    target.stop()?;
    Ok(Run {
        sent,
        elapsed,
        alert_latency,
        probes: probes.load(Ordering::Relaxed),
        metrics,
    })
}

fn create_rules(
    remote: &Remote,
    n: usize,
    receiver: &str,
    probe_account: &str,
) -> anyhow::Result<()> {
    let post = |path: &str, body: Value| -> anyhow::Result<Value> {
        remote
            .send_json("POST", path, Some(&body))
            .map_err(|e| anyhow::anyhow!("POST {path}: {e}"))
    };
    let channel = |path: &str| json!([{"type": "webhook", "url": format!("{receiver}{path}"), "secret": "bench-secret-0123456789"}]);
    // The probe rule: fires on every probe event.
    let view = post(
        "/v1/views",
        json!({"name": "probe", "account": probe_account, "query": format!("action:{PROBE_ACTION}")}),
    )?;
    post(
        "/v1/alerts",
        json!({"name": "probe", "viewId": view["id"], "condition": {"type": "presence", "threshold": 1},
               "channels": channel("/probe")}),
    )?;
    for i in 1..n {
        let account = account_id(i % 50);
        let query = QUERIES[i % QUERIES.len()];
        let view = post(
            "/v1/views",
            json!({"name": format!("view {i}"), "account": account, "query": query}),
        )?;
        let condition = match i % 4 {
            0 => json!({"type": "absence", "threshold": 1, "window": "1h"}),
            1 => json!({"type": "presence", "threshold": 1000, "window": "5m"}),
            2 => json!({"type": "presence", "threshold": 200, "window": "1m"}),
            _ => json!({"type": "presence", "threshold": 5000, "window": "15m"}),
        };
        post(
            "/v1/alerts",
            json!({"name": format!("rule {i}"), "viewId": view["id"], "condition": condition,
                   "channels": channel("/bulk")}),
        )?;
    }
    Ok(())
}

fn read_metrics(remote: &Remote) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    if let Ok(text) = remote.get_text("/metrics") {
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            if let Some((k, v)) = line.rsplit_once(' ')
                && let Ok(v) = v.parse::<f64>()
            {
                out.insert(k.to_string(), v);
            }
        }
    }
    out
}

/// A loopback webhook receiver that notes when each probe's notification arrived.
struct Receiver {
    url: String,
    arrived: Arc<Mutex<HashMap<String, Instant>>>,
}

impl Receiver {
    fn start() -> anyhow::Result<Receiver> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://{}", listener.local_addr()?);
        let arrived: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let a = arrived.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let a = a.clone();
                std::thread::spawn(move || {
                    let _ = handle(stream, &a);
                });
            }
        });
        Ok(Receiver { url, arrived })
    }
}

fn handle(
    stream: std::net::TcpStream,
    arrived: &Mutex<HashMap<String, Instant>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        if h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length.min(64 << 20)];
    reader.read_exact(&mut body)?;
    let now = Instant::now();
    if line.contains("/probe")
        && let Ok(v) = serde_json::from_slice::<Value>(&body)
        && let Some(id) = v["events"][0]["event"]["id"].as_str()
    {
        arrived.lock().expect("lock").insert(id.to_string(), now);
    }
    let mut stream = stream;
    stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
}
