//! `trailkeep bench export`: throughput and server memory of `GET /v1/export` over a loaded
//! server, for each format. The client reads the stream and counts events without keeping it.
//! Each format gets a freshly started server (unless `--url`) whose peak resident memory is
//! reset (`/proc/PID/clear_refs`) just before the export, so the figure is that export's own and
//! not what an earlier one left allocated.

use std::io::Read;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, bail};

use super::server::{Target, TargetArgs};
use crate::cmd::export::{ExportFormat, LineCounter};
use crate::remote::Remote;

#[derive(Debug, clap::Args)]
pub struct ExportBenchArgs {
    /// The server to export from: `--url` for a running one, or `--data-dir` of a loaded data
    /// directory (e.g. from `bench ingest --data-dir`) to start one on it.
    #[command(flatten)]
    target: TargetArgs,

    /// Formats to measure (repeatable; default: all four).
    #[arg(long = "format", value_name = "FORMAT", value_enum)]
    formats: Vec<ExportFormat>,

    /// The query to export (default: everything).
    #[arg(long, default_value = "")]
    query: String,
}

const FORMATS: [ExportFormat; 4] = [
    ExportFormat::Ndjson,
    ExportFormat::Csv,
    ExportFormat::Parquet,
    ExportFormat::Bundle,
];

pub fn run(args: ExportBenchArgs) -> anyhow::Result<ExitCode> {
    if args.target.url.is_none() && args.target.data_dir.is_none() {
        bail!("bench export needs a loaded server: --url URL --key KEY, or --data-dir DIR");
    }
    let formats: Vec<ExportFormat> = if args.formats.is_empty() {
        FORMATS.to_vec()
    } else {
        args.formats.clone()
    };
    let mut total_line_printed = false;
    for &format in &formats {
        let name = format.name();
        let target = Target::start(&args.target, &[])?;
        let remote = Remote::new(&target.remote)?;
        let total = remote
            .get_json("/v1/aggregate", &[("q", &args.query)])
            .map_err(|e| anyhow::anyhow!("{e}"))?["total"]
            .as_u64()
            .unwrap_or(0);
        if !total_line_printed {
            println!("export of {total} matching events (query {:?})", args.query);
            total_line_printed = true;
        }
        let before = target.memory().map(|(_, rss)| rss);
        let reset = target.pid().is_some_and(reset_peak_memory);
        // Anonymous memory (the heap, not the mapped index and segment files) sampled meanwhile.
        let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let sampler = target.pid().map(|pid| {
            let on = sampling.clone();
            std::thread::spawn(move || {
                let mut max = 0u64;
                while on.load(std::sync::atomic::Ordering::Relaxed) {
                    max = max.max(anon_rss(pid).unwrap_or(0));
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                max.max(anon_rss(pid).unwrap_or(0))
            })
        });
        let cpu_before = target.pid().and_then(cpu_ticks);
        let started = Instant::now();
        let mut body = remote
            .get_reader("/v1/export", &[("q", &args.query), ("format", name)])
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut bytes = 0u64;
        let mut counter = LineCounter::new(format);
        loop {
            let n = body.read(&mut buf).context("reading the export")?;
            if n == 0 {
                break;
            }
            bytes += n as u64;
            counter.feed(&buf[..n]);
        }
        let secs = started.elapsed().as_secs_f64();
        let cpu = match (cpu_before, target.pid().and_then(cpu_ticks)) {
            (Some(a), Some(b)) => Some((b - a) as f64 / clock_ticks_per_second()),
            _ => None,
        };
        sampling.store(false, std::sync::atomic::Ordering::Relaxed);
        let anon_peak = sampler.and_then(|t| t.join().ok());
        // Parquet is binary: its rows are the matching events counted before.
        let events = match format {
            ExportFormat::Parquet => total,
            _ => counter.events(),
        };
        let memory = match (reset, target.memory()) {
            (true, Some((peak, _))) => format!(
                "server peak RSS during the export {} MiB ({} MiB just before it; heap, sampled: {} MiB)",
                peak >> 20,
                before.unwrap_or(0) >> 20,
                anon_peak.unwrap_or(0) >> 20
            ),
            (false, Some((peak, _))) => {
                format!(
                    "server peak RSS since start {} MiB (could not reset)",
                    peak >> 20
                )
            }
            _ => "server memory not measured (--url)".to_string(),
        };
        // Server CPU per event: robust where wall time is not (a machine shared with others).
        let cpu = match cpu {
            Some(c) if events > 0 => format!(
                "; server CPU {c:.1} s = {:.1} µs/event",
                c * 1e6 / events as f64
            ),
            _ => String::new(),
        };
        println!(
            "{name:>8}: {events} events, {:.1} MiB in {secs:.2} s = {:.0} events/s, {:.1} MiB/s; {memory}{cpu}",
            bytes as f64 / 1048576.0,
            events as f64 / secs,
            bytes as f64 / 1048576.0 / secs
        );
        target.stop()?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Resets a process's peak resident memory (`VmHWM`) to its current size (Linux, own children).
fn reset_peak_memory(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Resident anonymous memory (`RssAnon`) of a process, in bytes (Linux only).
fn anon_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix("RssAnon:")?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse::<u64>()
            .ok()
            .map(|kb| kb * 1024)
    })
}

/// User and system CPU time a process has used, in clock ticks (Linux only).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after its closing ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Clock ticks per second of `/proc/PID/stat` times (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}
