//! `trailkeep event check`: the linter service teams run on their events before they ship.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use trailkeep_event::{Context, InputLimits, ItemResult, Policy, process_input};

#[derive(Debug, clap::Subcommand)]
pub enum EventCommand {
    /// Normalise events exactly as the server would and print the canonical stored JSON (one line
    /// per event on stdout) or each rejection with its JSON paths (on stderr).
    ///
    /// Reads one event, a JSON array, NDJSON, a Kubernetes Event/EventList, a legacy `payload`
    /// wrapper or an OpenStack notification envelope, recognised by shape. Exit status: 0 when every
    /// event is accepted, 1 when any is rejected, 2 when the input cannot be read at all.
    Check(CheckArgs),
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// File to read; `-` or nothing reads standard input.
    #[arg(value_name = "FILE|-")]
    file: Option<PathBuf>,

    /// Output: `canonical` prints each stored event; `json` prints one result object per item
    /// (`{"item", "line", "status", "account", "location", "id", "event" | "errors"}`).
    #[arg(long, value_enum, default_value_t = Format::Canonical)]
    format: Format,

    /// Largest canonical stored event in bytes (the size policy).
    #[arg(long, default_value_t = trailkeep_event::DEFAULT_MAX_EVENT_BYTES, value_name = "BYTES")]
    max_event_bytes: usize,

    /// Account for events whose logSourceCRN names none.
    #[arg(long, default_value = "default", value_name = "ACCOUNT")]
    default_account: String,

    /// Service prefix for actions mapped from Kubernetes audit events.
    #[arg(long, default_value = trailkeep_event::DEFAULT_K8S_SERVICE_PREFIX, value_name = "NAME")]
    kubernetes_service: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Canonical,
    Json,
}

/// The linter reads whole files; bounded well above any real batch.
const MAX_INPUT_BYTES: usize = 1 << 30;

pub fn run(command: EventCommand) -> anyhow::Result<ExitCode> {
    match command {
        EventCommand::Check(args) => check(args),
    }
}

fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let input = read_input(args.file.as_ref())?;
    let policy = Policy {
        max_event_bytes: args.max_event_bytes,
        limits: InputLimits {
            max_input_bytes: MAX_INPUT_BYTES,
            max_items: usize::MAX,
            ..InputLimits::default()
        },
        k8s_service_prefix: args.kubernetes_service.clone(),
        ..Policy::default()
    };
    let ctx = Context::new(&policy, &args.default_account);
    let items = process_input(&input, &ctx).context("the input cannot be read")?;

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut stderr = std::io::stderr().lock();
    let (mut accepted, mut rejected, mut skipped) = (0usize, 0usize, 0usize);
    for item in &items {
        match &item.result {
            ItemResult::Accepted(event) => {
                accepted += 1;
                match args.format {
                    Format::Canonical => {
                        out.write_all(event.canonical_bytes())?;
                        out.write_all(b"\n")?;
                    }
                    Format::Json => {
                        let event_json: serde_json::Value =
                            serde_json::from_slice(event.canonical_bytes())?;
                        let line = serde_json::json!({
                            "item": item.position.item,
                            "line": item.position.line,
                            "status": "accepted",
                            "account": event.account(),
                            "location": event.location(),
                            "id": event.id(),
                            "event": event_json,
                        });
                        writeln!(out, "{line}")?;
                    }
                }
            }
            ItemResult::Rejected(errors) => {
                rejected += 1;
                writeln!(stderr, "rejected: {}", item.position)?;
                for e in errors {
                    let path = if e.path.is_empty() {
                        "(event)"
                    } else {
                        &e.path
                    };
                    writeln!(stderr, "  {path}: {}", e.reason)?;
                }
                if args.format == Format::Json {
                    let line = serde_json::json!({
                        "item": item.position.item,
                        "line": item.position.line,
                        "status": "rejected",
                        "errors": errors,
                    });
                    writeln!(out, "{line}")?;
                }
            }
            ItemResult::Skipped(why) => {
                skipped += 1;
                writeln!(stderr, "skipped: {}: {why}", item.position)?;
            }
        }
    }
    out.flush()?;
    writeln!(
        stderr,
        "{} item(s): {accepted} accepted, {rejected} rejected, {skipped} skipped",
        items.len()
    )?;
    Ok(if rejected > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn read_input(file: Option<&PathBuf>) -> anyhow::Result<Vec<u8>> {
    let mut input = Vec::new();
    let limit = MAX_INPUT_BYTES as u64 + 1;
    match file {
        None => {
            std::io::stdin()
                .lock()
                .take(limit)
                .read_to_end(&mut input)
                .context("reading standard input")?;
        }
        Some(path) if path.as_os_str() == "-" => {
            std::io::stdin()
                .lock()
                .take(limit)
                .read_to_end(&mut input)
                .context("reading standard input")?;
        }
        Some(path) => {
            let file =
                std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            file.take(limit)
                .read_to_end(&mut input)
                .with_context(|| format!("reading {}", path.display()))?;
        }
    }
    if input.len() > MAX_INPUT_BYTES {
        bail!("the input is larger than {MAX_INPUT_BYTES} bytes; split it into smaller files");
    }
    Ok(input)
}
