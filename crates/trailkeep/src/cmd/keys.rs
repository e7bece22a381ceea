//! `trailkeep keys`: create, list, show, rotate and revoke API keys on a server (admin key needed).

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::remote::{Remote, RemoteArgs};

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its secret (shown this once; the server keeps only a hash).
    Create(CreateArgs),
    /// List every key (never their secrets).
    List(ListArgs),
    /// Show one key.
    Show(IdArgs),
    /// Give a key a new secret; the old secret stops working at once.
    Rotate(IdArgs),
    /// Revoke a key; it stops working at once (the record stays, for the audit trail).
    Revoke(IdArgs),
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    /// A name that says who or what uses the key (it appears in the audit trail).
    #[arg(long)]
    name: String,
    /// writer (ingest only), reader (search, read, export, proofs), manager (reader + views and
    /// alerts), admin (everything).
    #[arg(long, value_parser = ["writer", "reader", "manager", "admin"])]
    role: String,
    /// An account the key may act on (repeatable); `*` for every account (admin keys only).
    #[arg(long = "account", value_name = "ACCOUNT", required = true)]
    accounts: Vec<String>,
    /// Account for events whose logSourceCRN names none [default: the first --account].
    #[arg(long, value_name = "ACCOUNT")]
    default_account: Option<String>,
    /// For writers: only actions matching this (repeatable): `codeengine.*` or an exact action.
    #[arg(long = "action", value_name = "PATTERN")]
    actions: Vec<String>,
    /// The key stops working after this long: `90d`, `12h`, `2w`.
    #[arg(long, value_name = "DURATION", conflicts_with = "expires_at")]
    expires_in: Option<String>,
    /// The key stops working at this RFC 3339 time.
    #[arg(long, value_name = "TIME")]
    expires_at: Option<String>,
    /// This key's ingest limit in events per second [default: the server's].
    #[arg(long, value_name = "EVENTS")]
    ingest_rate: Option<u32>,
    /// This key's limit of read requests per second [default: the server's].
    #[arg(long, value_name = "REQUESTS")]
    query_rate: Option<u32>,
    /// A forwarder key (writers only): the key another Trailkeep instance's `trailkeep` routing
    /// target uses. Only forwarder keys may send X-Trailkeep-Forwarded-From (their events are
    /// stored here and not routed on to another Trailkeep); other keys sending it get 403.
    #[arg(long)]
    forwarder: bool,
    /// Print the whole answer as JSON instead of the secret alone.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct IdArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    /// The key id (`k_…`, from `keys list`).
    id: String,
}

pub fn run(command: KeysCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::Create(args) => create(args),
        KeysCommand::List(args) => {
            let remote = Remote::new(&args.remote)?;
            let answer = remote
                .send_json("GET", "/v1/keys", None)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&answer["keys"])?);
            } else {
                print_table(answer["keys"].as_array().map(Vec::as_slice).unwrap_or(&[]));
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Show(args) => by_id(args, "GET", ""),
        KeysCommand::Rotate(args) => by_id(args, "POST", "/rotate"),
        KeysCommand::Revoke(args) => by_id(args, "DELETE", ""),
    }
}

fn create(args: CreateArgs) -> anyhow::Result<ExitCode> {
    let expires_at = match (&args.expires_in, &args.expires_at) {
        (Some(d), _) => {
            let d = trailkeep_index::query::parse_duration(d)
                .map_err(|e| anyhow::anyhow!("--expires-in {d:?}: {e}"))?;
            Some((OffsetDateTime::now_utc() + d).format(&Rfc3339)?)
        }
        (None, Some(t)) => Some(t.clone()),
        (None, None) => None,
    };
    let mut limits = json!({});
    if let Some(r) = args.ingest_rate {
        limits["ingestEventsPerSecond"] = json!(r);
    }
    if let Some(r) = args.query_rate {
        limits["queriesPerSecond"] = json!(r);
    }
    let body = json!({
        "name": args.name,
        "role": args.role,
        "accounts": args.accounts,
        "defaultAccount": args.default_account,
        "actionPrefixes": args.actions,
        "expiresAt": expires_at,
        "limits": limits,
        "forwarder": args.forwarder,
    });
    let remote = Remote::new(&args.remote)?;
    let answer = remote
        .send_json("POST", "/v1/keys", Some(&body))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let secret = answer["secret"]
        .as_str()
        .context("the server's answer holds no secret")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        eprintln!(
            "created key {} ({}, {}); its secret is shown only now:",
            answer["id"].as_str().unwrap_or("?"),
            answer["name"].as_str().unwrap_or("?"),
            answer["role"].as_str().unwrap_or("?"),
        );
        println!("{secret}");
    }
    Ok(ExitCode::SUCCESS)
}

fn by_id(args: IdArgs, method: &str, suffix: &str) -> anyhow::Result<ExitCode> {
    if args.id.is_empty() || args.id.contains('/') {
        bail!("{:?} is not a key id", args.id);
    }
    let remote = Remote::new(&args.remote)?;
    let answer = remote
        .send_json(method, &format!("/v1/keys/{}{suffix}", args.id), None)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(secret) = answer["secret"].as_str() {
        eprintln!(
            "rotated key {}; the old secret no longer works. The new secret is shown only now:",
            args.id
        );
        println!("{secret}");
    } else {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(keys: &[Value]) {
    println!(
        "{:<20} {:<24} {:<10} {:<8} {:<28} EXPIRES",
        "ID", "NAME", "ROLE", "STATUS", "ACCOUNTS"
    );
    for k in keys {
        let accounts = match k["accounts"]["kind"].as_str() {
            Some("all") => "*".to_string(),
            _ => k["accounts"]["ids"]
                .as_array()
                .map(|ids| {
                    ids.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default(),
        };
        // A forwarder key shows as `writer+fwd`.
        let role = format!(
            "{}{}",
            k["role"].as_str().unwrap_or("-"),
            if k["forwarder"] == true { "+fwd" } else { "" }
        );
        println!(
            "{:<20} {:<24} {:<10} {:<8} {:<28} {}",
            k["id"].as_str().unwrap_or("-"),
            k["name"].as_str().unwrap_or("-"),
            role,
            k["status"].as_str().unwrap_or("-"),
            accounts,
            k["expiresAt"].as_str().unwrap_or("never"),
        );
    }
}
