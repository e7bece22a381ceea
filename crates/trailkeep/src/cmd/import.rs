//! `trailkeep import --from-archive`: bring archived events back into the data directory of a
//! stopped (typically new, empty) server, at their original positions, verified against the
//! archived checkpoints (`docs/archive.md`, *Restore*).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use trailkeep_ledger::{Ledger, LedgerConfig};
use trailkeep_server::archive::restore::{RestoreOptions, restore};
use trailkeep_server::archive::s3::{Bucket, S3Target};
use trailkeep_server::config::ServeOptions;

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The archive: `s3://bucket[/prefix]` (with --endpoint, --region and the credentials), or a
    /// `trailkeep.toml` whose archive_* settings name it.
    #[arg(long, value_name = "S3_URL|CONFIG")]
    from_archive: String,

    /// Endpoint of the S3-compatible server (`http(s)://host:port`); unset for AWS S3.
    #[arg(long, env = "TRAILKEEP_ARCHIVE_ENDPOINT", value_name = "URL")]
    endpoint: Option<String>,

    /// Region of the bucket [default: us-east-1].
    #[arg(long, env = "TRAILKEEP_ARCHIVE_REGION", value_name = "REGION")]
    region: Option<String>,

    /// Access key id.
    #[arg(long, env = "TRAILKEEP_ARCHIVE_ACCESS_KEY_ID", value_name = "ID")]
    access_key_id: Option<String>,

    /// Secret access key.
    #[arg(
        long,
        env = "TRAILKEEP_ARCHIVE_SECRET_ACCESS_KEY",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    secret_access_key: Option<String>,

    /// Restore only this account (repeatable) [default: every account in the archive].
    #[arg(long = "account", value_name = "ID")]
    accounts: Vec<String>,

    /// The original server's verifier key (`name+hash+key`, as `GET /v1/log/key` gave it); the
    /// archived checkpoints must be signed by it. Without it, the archive's own copy is trusted.
    #[arg(long, value_name = "KEY")]
    verifier_key: Option<String>,

    /// Data directory of the stopped server to restore into.
    #[arg(
        long,
        env = "TRAILKEEP_DATA_DIR",
        default_value = "./trailkeep-data",
        value_name = "DIR"
    )]
    data_dir: PathBuf,

    /// Checkpoint origin prefix the server uses (`serve --origin`).
    #[arg(
        long,
        env = "TRAILKEEP_ORIGIN",
        default_value = "trailkeep",
        value_name = "NAME"
    )]
    origin: String,

    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn target(args: &ImportArgs) -> anyhow::Result<S3Target> {
    if args.from_archive.starts_with("s3://") {
        let (bucket, prefix) = S3Target::parse_url(&args.from_archive)?;
        let (Some(access_key_id), Some(secret_access_key)) =
            (args.access_key_id.clone(), args.secret_access_key.clone())
        else {
            bail!("an s3:// archive needs --access-key-id and --secret-access-key");
        };
        return Ok(S3Target {
            endpoint: args.endpoint.clone(),
            bucket,
            region: args
                .region
                .clone()
                .unwrap_or_else(|| "us-east-1".to_string()),
            access_key_id,
            secret_access_key,
            prefix,
            retry: std::time::Duration::from_secs(30),
        });
    }
    // Flags and variables given here win over the file, as for `serve`.
    let config = ServeOptions {
        config: Some(PathBuf::from(&args.from_archive)),
        archive_endpoint: args.endpoint.clone(),
        archive_region: args.region.clone(),
        archive_access_key_id: args.access_key_id.clone(),
        archive_secret_access_key: args.secret_access_key.clone(),
        ..Default::default()
    }
    .merge_file()?
    .resolve()?;
    match config.archive {
        Some(a) => Ok(a.target),
        None => bail!(
            "{} configures no archive (archive_bucket)",
            args.from_archive
        ),
    }
}

pub fn run(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let target = target(&args)?;
    let bucket = Bucket::new(&target)?;
    let ledger = Ledger::open_dir(
        args.data_dir.join("ledger"),
        LedgerConfig {
            origin: args.origin.clone(),
            ..LedgerConfig::default()
        },
    )
    .with_context(|| format!("opening the ledger in {}", args.data_dir.display()))?;
    let options = RestoreOptions {
        accounts: args.accounts.clone(),
        verifier_key: args.verifier_key.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime
        .block_on(restore(
            &bucket,
            &ledger,
            &options,
            |account, done, total| {
                eprintln!("{account}: {done}/{total} records");
            },
        ))
        .with_context(|| format!("restoring from {}", bucket.describe()))?;
    ledger.close()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        if report.key_from_archive {
            eprintln!(
                "note: the checkpoints were verified with the archive's own key {}; pass --verifier-key to pin the original server's",
                report.verifier_key
            );
        }
        for a in &report.accounts {
            println!(
                "{}: {} records archived, {} imported, {} objects, {} checkpoints verified",
                a.account, a.records, a.imported, a.objects, a.checkpoints_verified
            );
            if let Some([from, to]) = a.incomplete_pass_skipped {
                eprintln!(
                    "{}: the last pass {from}..{to} is incomplete in the archive and was left out",
                    a.account
                );
            }
            if a.checkpoints_verified == 0 {
                eprintln!(
                    "{}: warning: no archived checkpoint covers the restored records; their proofs cannot be checked against the original server's",
                    a.account
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
