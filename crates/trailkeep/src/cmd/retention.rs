//! `trailkeep retention`: show and set per-account retention, and apply it now (admin key for
//! everything but `show --account` of an account the key may read). See docs/retention.md.

use std::process::ExitCode;

use serde_json::{Value, json};

use crate::remote::{Remote, RemoteArgs};

#[derive(Debug, clap::Subcommand)]
pub enum RetentionCommand {
    /// The default, the lowering delay and every account's policy (or one account's).
    Show(ShowArgs),
    /// Set an account's retention: raising (longer, or forever) applies at once; lowering is
    /// recorded now and applies after the server's lowering delay.
    Set(SetArgs),
    /// Apply retention now and print what was removed.
    Run(JsonArgs),
}

#[derive(Debug, clap::Args)]
pub struct JsonArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    /// Print the server's JSON answer.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    /// Only this account.
    #[arg(long)]
    account: Option<String>,
    /// Print the server's JSON answer.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("policy").required(true).args(["days", "forever", "use_default"])))]
pub struct SetArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    /// The account.
    account: String,
    /// Keep the account's records this many days (counted from when the server received them).
    #[arg(long)]
    days: Option<u64>,
    /// Keep the account's records forever.
    #[arg(long)]
    forever: bool,
    /// Follow the instance default.
    #[arg(long)]
    use_default: bool,
    /// Print the server's JSON answer.
    #[arg(long)]
    json: bool,
}

fn days(v: &Value) -> String {
    match v.as_u64() {
        Some(d) => format!("{d} days"),
        None => "forever".to_string(),
    }
}

fn pending(p: &Value) -> String {
    if p.is_null() {
        return String::new();
    }
    let to = if p["useDefault"].as_bool() == Some(true) {
        "the default".to_string()
    } else {
        days(&p["days"])
    };
    format!(
        "lowering to {to} pending until {}",
        p["effectiveAt"].as_str().unwrap_or("-")
    )
}

fn print_policy(a: &Value) {
    println!(
        "{:<24} {:>14} {:<8} {:>10} {:>10}  {}",
        a["account"].as_str().unwrap_or("-"),
        days(&a["days"]),
        a["source"].as_str().unwrap_or("-"),
        a["records"],
        a["removedThrough"],
        pending(&a["pending"])
    );
}

fn header() {
    println!(
        "{:<24} {:>14} {:<8} {:>10} {:>10}  PENDING",
        "ACCOUNT", "KEPT", "SOURCE", "RECORDS", "REMOVED<"
    );
}

fn print(json_out: bool, v: &Value) -> anyhow::Result<()> {
    if json_out {
        println!("{}", serde_json::to_string_pretty(v)?);
    }
    Ok(())
}

pub fn run(command: RetentionCommand) -> anyhow::Result<ExitCode> {
    let err = |e: crate::remote::RequestError| anyhow::anyhow!("{e}");
    match command {
        RetentionCommand::Show(args) => {
            let remote = Remote::new(&args.remote)?;
            match &args.account {
                Some(account) => {
                    let a = remote
                        .get_json(&format!("/v1/retention/{account}"), &[])
                        .map_err(err)?;
                    print(args.json, &a)?;
                    if !args.json {
                        header();
                        print_policy(&a);
                    }
                }
                None => {
                    let s = remote.get_json("/v1/retention", &[]).map_err(err)?;
                    print(args.json, &s)?;
                    if !args.json {
                        println!(
                            "default: {}{}   lowering delay: {} s   age from: when received",
                            days(&s["default"]["days"]),
                            match pending(&s["default"]["pending"]) {
                                p if p.is_empty() => String::new(),
                                p => format!(" ({p})"),
                            },
                            s["loweringDelaySeconds"]
                        );
                        header();
                        for a in s["accounts"].as_array().into_iter().flatten() {
                            print_policy(a);
                        }
                    }
                }
            }
        }
        RetentionCommand::Set(args) => {
            let remote = Remote::new(&args.remote)?;
            let body = if args.use_default {
                json!({"useDefault": true})
            } else if args.forever {
                json!({"days": null})
            } else {
                json!({"days": args.days})
            };
            let answer = remote
                .send_json(
                    "PUT",
                    &format!("/v1/retention/{}", args.account),
                    Some(&body),
                )
                .map_err(err)?;
            print(args.json, &answer)?;
            if !args.json {
                let p = &answer["policy"];
                match answer["result"].as_str() {
                    Some("pending") => println!(
                        "{}: kept {} for now; {}",
                        args.account,
                        days(&p["days"]),
                        pending(&p["pending"])
                    ),
                    _ => println!(
                        "{}: records kept {} from now on",
                        args.account,
                        days(&p["days"])
                    ),
                }
            }
        }
        RetentionCommand::Run(args) => {
            let remote = Remote::new(&args.remote)?;
            eprintln!("applying retention…");
            let answer = remote
                .send_json("POST", "/v1/retention/run", None)
                .map_err(err)?;
            print(args.json, &answer)?;
            if !args.json {
                let run = &answer["run"];
                for a in run["accounts"].as_array().into_iter().flatten() {
                    let account = a["account"].as_str().unwrap_or("-");
                    if let Some(e) = a["error"].as_str() {
                        println!("{account}: failed: {e}");
                        continue;
                    }
                    let (from, to) = (
                        a["from"].as_u64().unwrap_or(0),
                        a["to"].as_u64().unwrap_or(0),
                    );
                    if to > from {
                        println!(
                            "{account}: removed records {from}..{} ({} bytes, {} segments rewritten; retention record {})",
                            to - 1,
                            a["bytes"],
                            a["segments"],
                            a["retentionRecord"]
                        );
                    }
                    if let Some(h) = a["heldBack"].as_str() {
                        println!("{account}: kept for now: {h}");
                    }
                }
                println!("{} record bodies removed", run["removed"]);
                if run["accounts"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x["error"].is_string()))
                {
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
