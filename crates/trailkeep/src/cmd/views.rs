//! `trailkeep views`: saved queries on a server (`/v1/views`).

use std::process::ExitCode;

use serde_json::{Value, json};

use crate::remote::{Remote, RemoteArgs};

#[derive(Debug, clap::Subcommand)]
pub enum ViewsCommand {
    /// Save a query as a view (manager or admin key). Prints the view as JSON.
    Create {
        #[command(flatten)]
        remote: RemoteArgs,
        /// The view's name.
        #[arg(long)]
        name: String,
        /// The account it covers (may be left out by a key limited to one account).
        #[arg(long)]
        account: Option<String>,
        /// The query (see docs/query.md); empty matches everything.
        #[arg(long, default_value = "")]
        query: String,
        /// Default time window of searches through the view.
        #[arg(long, default_value = "24h")]
        window: String,
    },
    /// List the views of the accounts the key may read.
    List {
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Print one view as JSON.
    Get {
        #[command(flatten)]
        remote: RemoteArgs,
        id: String,
    },
    /// Delete a view (refused while alert rules use it).
    Delete {
        #[command(flatten)]
        remote: RemoteArgs,
        id: String,
    },
}

pub fn run(command: ViewsCommand) -> anyhow::Result<ExitCode> {
    let call = |remote: &RemoteArgs, method: &str, path: &str, body: Option<Value>| {
        Remote::new(remote)?
            .send_json(method, path, body.as_ref())
            .map_err(|e| anyhow::anyhow!("{e}"))
    };
    match command {
        ViewsCommand::Create {
            remote,
            name,
            account,
            query,
            window,
        } => {
            let mut body = json!({"name": name, "query": query, "window": window});
            if let Some(a) = account {
                body["account"] = json!(a);
            }
            let view = call(&remote, "POST", "/v1/views", Some(body))?;
            println!("{}", serde_json::to_string_pretty(&view)?);
        }
        ViewsCommand::List { remote } => {
            let list = call(&remote, "GET", "/v1/views", None)?;
            let views = list["views"].as_array().cloned().unwrap_or_default();
            println!(
                "{:<38} {:<16} {:<7} {:<24} QUERY",
                "ID", "ACCOUNT", "WINDOW", "NAME"
            );
            for v in &views {
                println!(
                    "{:<38} {:<16} {:<7} {:<24} {}",
                    v["id"].as_str().unwrap_or_default(),
                    v["account"].as_str().unwrap_or_default(),
                    v["window"].as_str().unwrap_or_default(),
                    v["name"].as_str().unwrap_or_default(),
                    v["query"].as_str().unwrap_or_default(),
                );
            }
            eprintln!("{} views", views.len());
        }
        ViewsCommand::Get { remote, id } => {
            let view = call(
                &remote,
                "GET",
                &format!("/v1/views/{}", path_segment(&id)),
                None,
            )?;
            println!("{}", serde_json::to_string_pretty(&view)?);
        }
        ViewsCommand::Delete { remote, id } => {
            call(
                &remote,
                "DELETE",
                &format!("/v1/views/{}", path_segment(&id)),
                None,
            )?;
            eprintln!("deleted {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Percent-encodes an id for use as one path segment.
pub fn path_segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
