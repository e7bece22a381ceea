//! `trailkeep tail`: follow a query live (server-sent events) until interrupted, reconnecting
//! after a dropped connection without printing an event twice.

use std::collections::{HashSet, VecDeque};
use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use crate::cmd::output::{Format, table_header, table_row};
use crate::remote::{Remote, RemoteArgs};

/// How many recent positions are remembered to drop repeats after a reconnect.
const REMEMBERED: usize = 10_000;

#[derive(Debug, clap::Args)]
pub struct TailArgs {
    #[command(flatten)]
    remote: RemoteArgs,

    /// The query to follow (see docs/query.md); empty follows everything.
    #[arg(value_name = "QUERY", default_value = "")]
    query: String,

    /// Also print events from this time on first (RFC 3339 or `now-5m`); default: only new ones.
    #[arg(long)]
    from: Option<String>,

    /// Only these accounts (repeatable); default: every account the key may read.
    #[arg(long = "account", value_name = "ACCOUNT")]
    accounts: Vec<String>,

    /// Follow a saved view: its query (and QUERY, if given, both must match) and its account.
    #[arg(long, value_name = "VIEW_ID")]
    view: Option<String>,

    /// Output format (`json` prints one item per line).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

pub fn run(args: TailArgs) -> anyhow::Result<ExitCode> {
    let remote = Remote::new(&args.remote)?;
    let stdout = std::io::stdout();
    if args.format == Format::Table {
        table_header(&mut stdout.lock())?;
    }
    let mut seen = Recent::default();
    let mut from = args.from.clone();
    let mut delay = Duration::from_millis(500);
    loop {
        let mut query: Vec<(&str, &str)> = vec![("q", &args.query)];
        if let Some(f) = &from {
            query.push(("from", f));
        }
        for a in &args.accounts {
            query.push(("account", a));
        }
        if let Some(v) = &args.view {
            query.push(("view", v));
        }
        let lines = match remote.get_lines("/v1/events/stream", &query) {
            Ok(lines) => lines,
            Err(e) if e.is_transient() => {
                eprintln!("{e}; reconnecting in {:.1} s", delay.as_secs_f64());
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(10));
                continue;
            }
            // A bad query or a key that may not read: nothing to retry.
            Err(e) => return Err(anyhow::anyhow!("{e}")),
        };
        delay = Duration::from_millis(500);
        for line in lines.lines() {
            let Ok(line) = line else { break };
            let Some(data) = line.strip_prefix("data:") else {
                continue;
            };
            let Ok(item) = serde_json::from_str::<Value>(data.trim_start()) else {
                continue;
            };
            let position = (
                item["account"].as_str().unwrap_or_default().to_string(),
                item["index"].as_u64().unwrap_or_default(),
            );
            if !seen.insert(position) {
                continue;
            }
            // After a reconnect, resume from the newest event time printed.
            if let Some(t) = item["event"]["eventTime"].as_str() {
                from = Some(t.to_string());
            }
            let mut out = stdout.lock();
            match args.format {
                Format::Table => table_row(&mut out, &item)?,
                Format::Json => writeln!(out, "{item}")?,
                Format::Ndjson => writeln!(out, "{}", item["event"])?,
            }
            out.flush()?;
        }
        eprintln!("the stream ended; reconnecting");
        std::thread::sleep(delay);
    }
}

/// A bounded set of recently printed positions.
#[derive(Debug, Default)]
struct Recent {
    set: HashSet<(String, u64)>,
    order: VecDeque<(String, u64)>,
}

impl Recent {
    /// False when `position` was printed recently.
    fn insert(&mut self, position: (String, u64)) -> bool {
        if !self.set.insert(position.clone()) {
            return false;
        }
        self.order.push_back(position);
        if self.order.len() > REMEMBERED
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}
