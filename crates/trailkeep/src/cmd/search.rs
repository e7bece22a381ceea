//! `trailkeep search`: run a query on a server and print the matching events, newest first.

use std::io::Write;
use std::process::ExitCode;

use anyhow::bail;
use serde_json::Value;

use crate::cmd::output::{Format, table_header, table_row};
use crate::remote::{Remote, RemoteArgs};

/// Largest page the server hands out; longer results are fetched page by page.
const PAGE: usize = 1000;

#[derive(Debug, clap::Args)]
pub struct SearchArgs {
    #[command(flatten)]
    remote: RemoteArgs,

    /// The query (see docs/query.md); empty matches everything. Example:
    /// `action:codeengine.app* AND outcome:failure`.
    #[arg(value_name = "QUERY", default_value = "")]
    query: String,

    /// Oldest event time: RFC 3339 (`2026-11-20T00:00:00Z`) or relative (`now-24h`, `now-7d`)
    /// [default: now-24h, or the view's window with --view].
    #[arg(long)]
    from: Option<String>,

    /// Newest event time, in the same forms as --from.
    #[arg(long)]
    to: Option<String>,

    /// How many events to print at most.
    #[arg(long, default_value_t = 50, value_name = "N")]
    limit: usize,

    /// Only these accounts (repeatable); default: every account the key may read.
    #[arg(long = "account", value_name = "ACCOUNT")]
    accounts: Vec<String>,

    /// Search through a saved view: its query (and QUERY, if given, both must match), its
    /// account, and its window unless --from is given.
    #[arg(long, value_name = "VIEW_ID")]
    view: Option<String>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

pub fn run(args: SearchArgs) -> anyhow::Result<ExitCode> {
    if args.limit == 0 {
        bail!("--limit must be at least 1");
    }
    let remote = Remote::new(&args.remote)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut printed = 0usize;
    let mut cursor: Option<String> = None;
    loop {
        let page_size = (args.limit - printed).min(PAGE).to_string();
        let mut query: Vec<(&str, &str)> = vec![("q", &args.query), ("limit", &page_size)];
        match (&args.from, &args.view) {
            (Some(from), _) => query.push(("from", from)),
            (None, None) => query.push(("from", "now-24h")),
            (None, Some(_)) => {}
        }
        if let Some(view) = &args.view {
            query.push(("view", view));
        }
        if let Some(to) = &args.to {
            query.push(("to", to));
        }
        for a in &args.accounts {
            query.push(("account", a));
        }
        if let Some(c) = &cursor {
            query.push(("cursor", c));
        }
        let page = remote
            .get_json("/v1/events", &query)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let events = page["events"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        // The header only once the server accepted the query, so an error prints nothing here.
        if cursor.is_none() {
            match args.format {
                Format::Table => table_header(&mut out)?,
                Format::Json => write!(out, "[")?,
                Format::Ndjson => {}
            }
        }
        for item in events {
            print_item(&mut out, args.format, item, printed == 0)?;
            printed += 1;
        }
        cursor = page["next_cursor"].as_str().map(str::to_string);
        if cursor.is_none() || printed >= args.limit || events.is_empty() {
            break;
        }
    }
    if args.format == Format::Json {
        writeln!(out, "]")?;
    }
    out.flush()?;
    if args.format == Format::Table {
        let more = if cursor.is_some() {
            " (more match: raise --limit or narrow the query)"
        } else {
            ""
        };
        eprintln!("{printed} events{more}");
    }
    Ok(ExitCode::SUCCESS)
}

fn print_item(
    out: &mut impl Write,
    format: Format,
    item: &Value,
    first: bool,
) -> std::io::Result<()> {
    match format {
        Format::Table => table_row(out, item),
        Format::Ndjson => writeln!(out, "{}", item["event"]),
        Format::Json => {
            if !first {
                write!(out, ",")?;
            }
            write!(out, "\n  {item}")
        }
    }
}
