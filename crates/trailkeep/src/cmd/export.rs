//! `trailkeep export`: download the events of a query and time range from a server as NDJSON,
//! CSV, Parquet or an evidence bundle, streamed to a file with a progress bar.
//!
//! The file is written under a temporary name beside `--output` and renamed only when the
//! whole transfer arrived, so a cut connection never leaves a plausible-looking short export.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};

use crate::remote::{Remote, RemoteArgs};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// One item `{account, index, receivedAt, event}` per line.
    Ndjson,
    /// CSV with a header row (columns in docs/export.md).
    Csv,
    /// Apache Parquet with typed columns (docs/export.md).
    Parquet,
    /// An evidence bundle: events, inclusion proofs, signed checkpoints and the verifier key,
    /// checked offline by `trailkeep verify --bundle` (docs/evidence-bundle.md).
    Bundle,
}

impl ExportFormat {
    pub(crate) fn name(self) -> &'static str {
        match self {
            ExportFormat::Ndjson => "ndjson",
            ExportFormat::Csv => "csv",
            ExportFormat::Parquet => "parquet",
            ExportFormat::Bundle => "bundle",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    remote: RemoteArgs,

    /// The query (see docs/query.md); empty exports everything in the time range.
    #[arg(value_name = "QUERY", default_value = "")]
    query: String,

    /// Oldest event time: RFC 3339 or relative (`now-7d`). Default: from the beginning.
    #[arg(long)]
    from: Option<String>,

    /// Newest event time (exclusive), in the same forms as --from. Default: up to now.
    #[arg(long)]
    to: Option<String>,

    /// Only these accounts (repeatable); default: every account the key may read.
    #[arg(long = "account", value_name = "ACCOUNT")]
    accounts: Vec<String>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = ExportFormat::Ndjson)]
    format: ExportFormat,

    /// File to write (replaced only when the export is complete); `-` for standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: PathBuf,
}

pub fn run(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let remote = Remote::new(&args.remote)?;
    let mut query: Vec<(&str, &str)> = vec![("q", &args.query)];
    if let Some(from) = &args.from {
        query.push(("from", from));
    }
    if let Some(to) = &args.to {
        query.push(("to", to));
    }
    for a in &args.accounts {
        query.push(("account", a));
    }
    // How many events to expect, for the bar (the export itself is a snapshot taken later).
    let expected = remote
        .get_json("/v1/aggregate", &query)
        .map_err(|e| anyhow::anyhow!("{e}"))?["total"]
        .as_u64()
        .unwrap_or(0);
    query.push(("format", args.format.name()));
    let mut body = remote
        .get_reader("/v1/export", &query)
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    let to_stdout = args.output.as_os_str() == "-";
    let (mut file, tmp): (Box<dyn Write>, Option<tempfile::NamedTempFile>) = if to_stdout {
        (Box::new(std::io::stdout().lock()), None)
    } else {
        let dir = match args.output.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let tmp = tempfile::Builder::new()
            .prefix(".trailkeep-export-")
            .tempfile_in(&dir)
            .with_context(|| format!("creating a file in {}", dir.display()))?;
        let f = tmp.reopen().context("opening the temporary file")?;
        (Box::new(std::io::BufWriter::new(f)), Some(tmp))
    };

    // Lines are events for NDJSON (one per line) and CSV (one per record after the header,
    // unless a field holds a line break); a bundle's event lines are counted by their prefix.
    let bar = progress_bar(args.format, expected);
    let mut counter = LineCounter::new(args.format);
    let mut bytes = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = body
            .read(&mut buf)
            .context("the transfer broke off before the export was complete")?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n]).context("writing the export")?;
        bytes += n as u64;
        counter.feed(&buf[..n]);
        match args.format {
            ExportFormat::Parquet => bar.set_position(bytes),
            _ => bar.set_position(counter.events()),
        }
    }
    file.flush().context("writing the export")?;
    drop(file);
    bar.finish_and_clear();
    if let Some(tmp) = tmp {
        tmp.as_file().sync_all().context("syncing the export")?;
        tmp.persist(&args.output)
            .with_context(|| format!("writing {}", args.output.display()))?;
    }
    let what = match args.format {
        ExportFormat::Parquet => format!("{expected} events expected"),
        _ => format!("{} events", counter.events()),
    };
    let target = if to_stdout {
        "standard output".to_string()
    } else {
        args.output.display().to_string()
    };
    eprintln!(
        "wrote {target}: {bytes} bytes, {what} ({})",
        args.format.name()
    );
    Ok(ExitCode::SUCCESS)
}

fn progress_bar(format: ExportFormat, expected: u64) -> ProgressBar {
    let bar = if format == ExportFormat::Parquet {
        let b = ProgressBar::new_spinner();
        b.set_style(
            ProgressStyle::with_template("{spinner} {bytes} ({bytes_per_sec}) {msg}")
                .expect("valid template"),
        );
        b.set_message(format!("~{expected} events"));
        b
    } else {
        let b = ProgressBar::new(expected);
        b.set_style(
            ProgressStyle::with_template(
                "{msg:>8} [{bar:40}] {pos}/{len} events ({per_sec}, {eta})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        b.set_message("export");
        b
    };
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar
}

/// Counts events in a streamed text export by its lines.
pub(crate) struct LineCounter {
    format: ExportFormat,
    lines: u64,
    events: u64,
    /// Bytes of the current line seen so far (up to the bundle's event prefix).
    start: Vec<u8>,
}

const EVENT_PREFIX: &[u8] = b"{\"type\":\"event\"";

impl LineCounter {
    pub(crate) fn new(format: ExportFormat) -> Self {
        Self {
            format,
            lines: 0,
            events: 0,
            start: Vec::with_capacity(EVENT_PREFIX.len()),
        }
    }

    pub(crate) fn feed(&mut self, chunk: &[u8]) {
        for &b in chunk {
            if self.start.len() < EVENT_PREFIX.len() {
                self.start.push(b);
            }
            if b == b'\n' {
                self.lines += 1;
                if self.format == ExportFormat::Bundle && self.start.starts_with(EVENT_PREFIX) {
                    self.events += 1;
                }
                self.start.clear();
            }
        }
    }

    pub(crate) fn events(&self) -> u64 {
        match self.format {
            ExportFormat::Ndjson => self.lines,
            ExportFormat::Csv => self.lines.saturating_sub(1),
            ExportFormat::Bundle => self.events,
            ExportFormat::Parquet => 0,
        }
    }
}
