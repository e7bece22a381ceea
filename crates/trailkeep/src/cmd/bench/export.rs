//! `trailkeep bench export`: throughput and server memory of `GET /v1/export` over a loaded
//! server, for each format. The client reads the stream and counts events without keeping it;
//! the server's peak resident memory is reset before each export (`/proc/PID/clear_refs`) so
//! the figure is the export's own.

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
    let target = Target::start(&args.target, &[])?;
    let remote = Remote::new(&target.remote)?;
    let total = remote
        .get_json("/v1/aggregate", &[("q", &args.query)])
        .map_err(|e| anyhow::anyhow!("{e}"))?["total"]
        .as_u64()
        .unwrap_or(0);
    println!("export of {total} matching events (query {:?})", args.query);
    if let Some((_, rss)) = target.memory() {
        println!("server memory before: {} MiB resident", rss >> 20);
    }
    for &format in &formats {
        let name = format.name();
        let reset = target.pid().is_some_and(reset_peak_memory);
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
        // Parquet is binary: its rows are the matching events counted before.
        let events = match format {
            ExportFormat::Parquet => total,
            _ => counter.events(),
        };
        let memory = match (reset, target.memory()) {
            (true, Some((peak, _))) => {
                format!("server peak RSS during the export {} MiB", peak >> 20)
            }
            (false, Some((peak, _))) => {
                format!(
                    "server peak RSS since start {} MiB (could not reset)",
                    peak >> 20
                )
            }
            _ => "server memory not measured (--url)".to_string(),
        };
        println!(
            "{name:>8}: {events} events, {:.1} MiB in {secs:.2} s = {:.0} events/s, {:.1} MiB/s; {memory}",
            bytes as f64 / 1048576.0,
            events as f64 / secs,
            bytes as f64 / 1048576.0 / secs
        );
    }
    target.stop()?;
    Ok(ExitCode::SUCCESS)
}

/// Resets a process's peak resident memory (`VmHWM`) to its current size (Linux, own children).
fn reset_peak_memory(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}
