//! `trailkeep archive`: archive a server's checkpointed events to its S3-compatible target now,
//! show how far each account is archived, and list the archive's objects (admin key needed).

use std::process::ExitCode;

use crate::remote::{Remote, RemoteArgs};

#[derive(Debug, clap::Subcommand)]
pub enum ArchiveCommand {
    /// Archive everything covered by a signed checkpoint now, and print what the run did.
    Run(JsonArgs),
    /// The archive target, the last run, and per account how far it is archived.
    Status(JsonArgs),
    /// The objects in the archive bucket (keys relative to the target's prefix).
    List(ListArgs),
}

#[derive(Debug, clap::Args)]
pub struct JsonArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    /// Print the server's JSON answer instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    /// Only this account's objects.
    #[arg(long)]
    account: Option<String>,
    /// Print JSON instead of one key per line.
    #[arg(long)]
    json: bool,
}

fn print_status(status: &serde_json::Value) {
    if status["enabled"].as_bool() != Some(true) {
        println!("no archive target is configured");
        return;
    }
    let t = &status["target"];
    println!(
        "target: s3://{}/{} at {} (region {})",
        t["bucket"].as_str().unwrap_or("-"),
        t["prefix"].as_str().unwrap_or(""),
        t["endpoint"].as_str().unwrap_or("AWS"),
        t["region"].as_str().unwrap_or("-")
    );
    println!(
        "last success: {}   last error: {}   consecutive failures: {}",
        status["lastSuccess"].as_str().unwrap_or("never"),
        status["lastError"].as_str().unwrap_or("none"),
        status["consecutiveFailures"]
    );
    println!(
        "{:<24} {:>12} {:>12} {:>8} {:>8}",
        "ACCOUNT", "ARCHIVED", "CHECKPOINT", "LAG", "OBJECTS"
    );
    for a in status["accounts"].as_array().into_iter().flatten() {
        println!(
            "{:<24} {:>12} {:>12} {:>8} {:>8}",
            a["account"].as_str().unwrap_or("-"),
            a["archivedCount"],
            a["checkpointSize"],
            a["lag"],
            a["objects"]
        );
    }
}

pub fn run(command: ArchiveCommand) -> anyhow::Result<ExitCode> {
    match command {
        ArchiveCommand::Run(args) => {
            let remote = Remote::new(&args.remote)?;
            let answer = remote
                .send_json("POST", "/v1/archive/run", None)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                let r = &answer["run"];
                println!(
                    "archived {} records in {} passes: {} objects written, {} already there, {} replaced",
                    r["records"],
                    r["passes"],
                    r["objectsWritten"],
                    r["objectsAlreadyThere"],
                    r["objectsReplaced"]
                );
                print_status(&answer["status"]);
            }
        }
        ArchiveCommand::Status(args) => {
            let remote = Remote::new(&args.remote)?;
            let answer = remote
                .send_json("GET", "/v1/archive", None)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                print_status(&answer);
            }
        }
        ArchiveCommand::List(args) => {
            let remote = Remote::new(&args.remote)?;
            let mut query = Vec::new();
            if let Some(a) = &args.account {
                query.push(("account", a.as_str()));
            }
            let answer = remote
                .get_json("/v1/archive/objects", &query)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                for o in answer["objects"].as_array().into_iter().flatten() {
                    println!("{:>12} {}", o["size"], o["key"].as_str().unwrap_or("-"));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
