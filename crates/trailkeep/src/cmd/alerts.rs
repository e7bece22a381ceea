//! `trailkeep alerts`: alert rules on a server (`/v1/alerts`).

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::cmd::views::path_segment;
use crate::remote::{Remote, RemoteArgs};

#[derive(Debug, clap::Subcommand)]
pub enum AlertsCommand {
    /// Create a rule from a JSON document (a file, or `-` for standard input) in the shape of
    /// `POST /v1/alerts`. Prints the rule as JSON.
    Create {
        #[command(flatten)]
        remote: RemoteArgs,
        #[arg(value_name = "FILE")]
        file: String,
    },
    /// List the rules of the accounts the key may read.
    List {
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Print one rule as JSON (channel secrets masked).
    Get {
        #[command(flatten)]
        remote: RemoteArgs,
        id: String,
    },
    /// The rule's history, newest first: fired, muted, delivered, retrying, failed, test.
    History {
        #[command(flatten)]
        remote: RemoteArgs,
        id: String,
    },
    /// Send a test notification to every channel (or one) now; exit status 1 if one failed.
    Test {
        #[command(flatten)]
        remote: RemoteArgs,
        id: String,
        /// Only this channel (numbered from 0).
        #[arg(long)]
        channel: Option<usize>,
    },
    /// Mute a rule for a while (`--for 2h`), or unmute it (`--off`).
    Mute {
        #[command(flatten)]
        remote: RemoteArgs,
        id: String,
        #[arg(long = "for", value_name = "DURATION", conflicts_with = "off")]
        duration: Option<String>,
        #[arg(long)]
        off: bool,
    },
    /// Delete a rule.
    Delete {
        #[command(flatten)]
        remote: RemoteArgs,
        id: String,
    },
}

pub fn run(command: AlertsCommand) -> anyhow::Result<ExitCode> {
    let call = |remote: &RemoteArgs, method: &str, path: &str, body: Option<Value>| {
        Remote::new(remote)?
            .send_json(method, path, body.as_ref())
            .map_err(|e| anyhow::anyhow!("{e}"))
    };
    let rule_path = |id: &str| format!("/v1/alerts/{}", path_segment(id));
    match command {
        AlertsCommand::Create { remote, file } => {
            let mut text = String::new();
            if file == "-" {
                std::io::stdin().read_to_string(&mut text)?;
            } else {
                text = std::fs::read_to_string(&file).with_context(|| format!("reading {file}"))?;
            }
            let body: Value =
                serde_json::from_str(&text).with_context(|| format!("{file} is not JSON"))?;
            let rule = call(&remote, "POST", "/v1/alerts", Some(body))?;
            println!("{}", serde_json::to_string_pretty(&rule)?);
        }
        AlertsCommand::List { remote } => {
            let list = call(&remote, "GET", "/v1/alerts", None)?;
            let rules = list["alerts"].as_array().cloned().unwrap_or_default();
            println!(
                "{:<39} {:<16} {:<10} {:<9} {:<7} {:<8} NAME",
                "ID", "ACCOUNT", "TYPE", "THRESHOLD", "WINDOW", "CHANNELS"
            );
            for r in &rules {
                println!(
                    "{:<39} {:<16} {:<10} {:<9} {:<7} {:<8} {}{}",
                    r["id"].as_str().unwrap_or_default(),
                    r["account"].as_str().unwrap_or_default(),
                    r["condition"]["type"].as_str().unwrap_or_default(),
                    r["condition"]["threshold"],
                    r["condition"]["window"].as_str().unwrap_or("-"),
                    r["channels"].as_array().map_or(0, Vec::len),
                    r["name"].as_str().unwrap_or_default(),
                    if r["mutedUntil"].is_string() {
                        " (muted)"
                    } else {
                        ""
                    },
                );
            }
            eprintln!("{} rules", rules.len());
        }
        AlertsCommand::Get { remote, id } => {
            let rule = call(&remote, "GET", &rule_path(&id), None)?;
            println!("{}", serde_json::to_string_pretty(&rule)?);
        }
        AlertsCommand::History { remote, id } => {
            let h = call(&remote, "GET", &format!("{}/history", rule_path(&id)), None)?;
            for e in h["history"].as_array().into_iter().flatten() {
                println!(
                    "{}  {:<10} {:<12} {:<38} {}",
                    e["at"].as_str().unwrap_or_default(),
                    e["kind"].as_str().unwrap_or_default(),
                    e["channel"].as_str().unwrap_or("-"),
                    e["notificationId"].as_str().unwrap_or("-"),
                    e["reason"].as_str().unwrap_or_default(),
                );
            }
            for p in h["pending"].as_array().into_iter().flatten() {
                eprintln!(
                    "pending: {} to {} after {} attempts: {}",
                    p["notificationId"].as_str().unwrap_or_default(),
                    p["channel"].as_str().unwrap_or_default(),
                    p["attempts"],
                    p["lastError"].as_str().unwrap_or_default()
                );
            }
        }
        AlertsCommand::Test {
            remote,
            id,
            channel,
        } => {
            let mut path = format!("{}/test", rule_path(&id));
            if let Some(n) = channel {
                path.push_str(&format!("?channel={n}"));
            }
            let answer = call(&remote, "POST", &path, None)?;
            let mut failed = false;
            for r in answer["results"].as_array().into_iter().flatten() {
                let ok = r["ok"].as_bool().unwrap_or(false);
                failed |= !ok;
                println!(
                    "channel {} ({}): {}",
                    r["channel"],
                    r["type"].as_str().unwrap_or_default(),
                    if ok {
                        "sent".to_string()
                    } else {
                        format!("FAILED: {}", r["error"].as_str().unwrap_or_default())
                    }
                );
            }
            return Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            });
        }
        AlertsCommand::Mute {
            remote,
            id,
            duration,
            off,
        } => {
            let body = match (duration, off) {
                (Some(d), false) => json!({"muteFor": d}),
                (None, true) => json!({"mutedUntil": null}),
                _ => anyhow::bail!("give --for DURATION or --off"),
            };
            let rule = call(&remote, "PATCH", &rule_path(&id), Some(body))?;
            match rule["mutedUntil"].as_str() {
                Some(t) => eprintln!("{id} muted until {t}"),
                None => eprintln!("{id} is not muted"),
            }
        }
        AlertsCommand::Delete { remote, id } => {
            call(&remote, "DELETE", &rule_path(&id), None)?;
            eprintln!("deleted {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
