//! `trailkeep settings`: this instance's routing settings (`/v1/settings`, admin key).

use std::process::ExitCode;

use serde_json::{Map, Value, json};

use super::targets::call;
use crate::remote::RemoteArgs;

#[derive(Debug, clap::Subcommand)]
pub enum SettingsCommand {
    /// Print the settings as JSON: location, default targets, location aliases, data events,
    /// limits.
    Get {
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Change settings; what is not given stays as it is.
    Set {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Where events no route handles go (repeat; replaces the list).
        #[arg(long = "default-target", value_name = "TARGET_ID")]
        default_targets: Vec<String>,
        /// No default target: events no route handles are dropped (and reported).
        #[arg(long, conflicts_with_all = ["default_targets", "implicit_default"])]
        no_default_targets: bool,
        /// Back to the implicit default (local).
        #[arg(long, conflicts_with = "default_targets")]
        implicit_default: bool,
        /// A location alias `FROM=TO` (events of FROM also match rules for TO); repeat; replaces
        /// the aliases.
        #[arg(long = "alias", value_name = "FROM=TO")]
        aliases: Vec<String>,
        /// Remove every location alias.
        #[arg(long, conflicts_with = "aliases")]
        no_aliases: bool,
        /// Collect data events (dataEvent: true) by default: on or off.
        #[arg(long, value_name = "on|off")]
        data_events: Option<String>,
        /// Per-account data-event collection `ACCOUNT=on|off`; repeat; replaces the exceptions.
        #[arg(long = "account-data-events", value_name = "ACCOUNT=on|off")]
        account_data_events: Vec<String>,
    },
}

fn on_off(text: &str) -> anyhow::Result<bool> {
    match text {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        other => anyhow::bail!("expected on or off, not {other:?}"),
    }
}

fn pairs(texts: &[String], what: &str) -> anyhow::Result<Vec<(String, String)>> {
    texts
        .iter()
        .map(|t| {
            t.split_once('=')
                .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))
                .ok_or_else(|| anyhow::anyhow!("{what} {t:?}: expected A=B"))
        })
        .collect()
}

pub fn run(command: SettingsCommand) -> anyhow::Result<ExitCode> {
    match command {
        SettingsCommand::Get { remote } => {
            let s = call(&remote, "GET", "/v1/settings", None)?;
            println!("{}", serde_json::to_string_pretty(&s)?);
        }
        SettingsCommand::Set {
            remote,
            default_targets,
            no_default_targets,
            implicit_default,
            aliases,
            no_aliases,
            data_events,
            account_data_events,
        } => {
            let mut body = Map::new();
            if !default_targets.is_empty() {
                body.insert("defaultTargets".into(), json!(default_targets));
            } else if no_default_targets {
                body.insert("defaultTargets".into(), json!([]));
            } else if implicit_default {
                body.insert("defaultTargets".into(), Value::Null);
            }
            if !aliases.is_empty() || no_aliases {
                let map: Map<String, Value> = pairs(&aliases, "--alias")?
                    .into_iter()
                    .map(|(a, b)| (a, json!(b)))
                    .collect();
                body.insert("locationAliases".into(), Value::Object(map));
            }
            if data_events.is_some() || !account_data_events.is_empty() {
                let mut d = Map::new();
                if let Some(v) = data_events {
                    d.insert("collect".into(), json!(on_off(&v)?));
                }
                if !account_data_events.is_empty() {
                    let mut accounts = Map::new();
                    for (a, v) in pairs(&account_data_events, "--account-data-events")? {
                        accounts.insert(a, json!(on_off(&v)?));
                    }
                    d.insert("accounts".into(), Value::Object(accounts));
                }
                body.insert("dataEvents".into(), Value::Object(d));
            }
            if body.is_empty() {
                anyhow::bail!("nothing to change: see trailkeep settings set --help");
            }
            let s = call(&remote, "PATCH", "/v1/settings", Some(Value::Object(body)))?;
            println!("{}", serde_json::to_string_pretty(&s)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
