//! `trailkeep routes`: routes of events by location (`/v1/routes`, admin key).

use std::process::ExitCode;

use serde_json::{Value, json};

use super::targets::call;
use super::views::path_segment;
use crate::remote::RemoteArgs;

#[derive(Debug, clap::Subcommand)]
pub enum RoutesCommand {
    /// Create a route: rules in order, the first whose locations match an event decides where
    /// this route sends it. Prints the route as JSON.
    Create {
        #[command(flatten)]
        remote: RemoteArgs,
        #[arg(long)]
        name: String,
        /// A rule `LOCATIONS=TARGET_IDS`, both comma-separated, e.g.
        /// `--rule jp-tok,ap-south=tgt_1` or `--rule '*=local'`. Repeat in order.
        #[arg(long = "rule", value_name = "LOCATIONS=TARGETS", required = true)]
        rules: Vec<String>,
    },
    /// List the routes and their rules.
    List {
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Print one route as JSON.
    Get {
        #[command(flatten)]
        remote: RemoteArgs,
        id: String,
    },
    /// Rename a route or replace its rules.
    Update {
        #[command(flatten)]
        remote: RemoteArgs,
        id: String,
        #[arg(long)]
        name: Option<String>,
        /// The new rules (all of them, in order), as for `create`.
        #[arg(long = "rule", value_name = "LOCATIONS=TARGETS")]
        rules: Vec<String>,
    },
    /// Delete a route.
    Delete {
        #[command(flatten)]
        remote: RemoteArgs,
        id: String,
    },
}

fn parse_rule(text: &str) -> anyhow::Result<Value> {
    let Some((locations, targets)) = text.split_once('=') else {
        anyhow::bail!("--rule {text:?}: expected LOCATIONS=TARGETS, e.g. jp-tok,ap-south=tgt_1");
    };
    let list = |s: &str| -> Vec<String> {
        s.split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .collect()
    };
    Ok(json!({"locations": list(locations), "targetIds": list(targets)}))
}

fn rules(texts: &[String]) -> anyhow::Result<Value> {
    Ok(Value::Array(
        texts
            .iter()
            .map(|t| parse_rule(t))
            .collect::<anyhow::Result<_>>()?,
    ))
}

fn rule_text(rule: &Value) -> String {
    let join = |v: &Value| {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default()
    };
    format!("{}={}", join(&rule["locations"]), join(&rule["targetIds"]))
}

pub fn run(command: RoutesCommand) -> anyhow::Result<ExitCode> {
    match command {
        RoutesCommand::Create {
            remote,
            name,
            rules: texts,
        } => {
            let body = json!({"name": name, "rules": rules(&texts)?});
            let r = call(&remote, "POST", "/v1/routes", Some(body))?;
            println!("{}", serde_json::to_string_pretty(&r)?);
        }
        RoutesCommand::List { remote } => {
            let list = call(&remote, "GET", "/v1/routes", None)?;
            let routes = list["routes"].as_array().cloned().unwrap_or_default();
            println!("{:<40} {:<24} RULES (in order)", "ID", "NAME");
            for r in &routes {
                let rules: Vec<String> = r["rules"]
                    .as_array()
                    .map(|a| a.iter().map(rule_text).collect())
                    .unwrap_or_default();
                println!(
                    "{:<40} {:<24} {}",
                    r["id"].as_str().unwrap_or_default(),
                    r["name"].as_str().unwrap_or_default(),
                    rules.join("  "),
                );
            }
            eprintln!("{} routes", routes.len());
        }
        RoutesCommand::Get { remote, id } => {
            let r = call(
                &remote,
                "GET",
                &format!("/v1/routes/{}", path_segment(&id)),
                None,
            )?;
            println!("{}", serde_json::to_string_pretty(&r)?);
        }
        RoutesCommand::Update {
            remote,
            id,
            name,
            rules: texts,
        } => {
            let mut body = json!({});
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            if !texts.is_empty() {
                body["rules"] = rules(&texts)?;
            }
            let r = call(
                &remote,
                "PATCH",
                &format!("/v1/routes/{}", path_segment(&id)),
                Some(body),
            )?;
            println!("{}", serde_json::to_string_pretty(&r)?);
        }
        RoutesCommand::Delete { remote, id } => {
            call(
                &remote,
                "DELETE",
                &format!("/v1/routes/{}", path_segment(&id)),
                None,
            )?;
            eprintln!("deleted {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
