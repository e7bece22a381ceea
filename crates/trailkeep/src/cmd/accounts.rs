//! `trailkeep accounts`: register and list accounts (tenants) on a server.

use std::process::ExitCode;

use serde_json::json;

use crate::remote::{Remote, RemoteArgs};

#[derive(Debug, clap::Subcommand)]
pub enum AccountsCommand {
    /// Register an account (admin key needed), so keys can be limited to it.
    Create(CreateArgs),
    /// List the accounts the key may see, with their event counts.
    List(ListArgs),
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    /// The account id as it appears in logSourceCRN (`a/<id>`).
    id: String,
    /// A display name [default: the id].
    #[arg(long)]
    name: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(command: AccountsCommand) -> anyhow::Result<ExitCode> {
    match command {
        AccountsCommand::Create(args) => {
            let remote = Remote::new(&args.remote)?;
            let answer = remote
                .send_json(
                    "POST",
                    "/v1/accounts",
                    Some(&json!({"id": args.id, "name": args.name})),
                )
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{}", serde_json::to_string_pretty(&answer)?);
        }
        AccountsCommand::List(args) => {
            let remote = Remote::new(&args.remote)?;
            let answer = remote
                .send_json("GET", "/v1/accounts", None)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let accounts = answer["accounts"].as_array().cloned().unwrap_or_default();
            if args.json {
                println!("{}", serde_json::to_string_pretty(&accounts)?);
            } else {
                println!("{:<24} {:<32} {:>10} REGISTERED", "ID", "NAME", "EVENTS");
                for a in &accounts {
                    println!(
                        "{:<24} {:<32} {:>10} {}",
                        a["id"].as_str().unwrap_or("-"),
                        a["name"].as_str().unwrap_or("-"),
                        a["events"].as_u64().unwrap_or(0),
                        if a["registered"].as_bool() == Some(true) {
                            "yes"
                        } else {
                            "no"
                        },
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
