//! `trailkeep verify`: integrity checks of a ledger, either of a data directory end to end or of
//! a running server as a witness (see [`crate::cmd::witness`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use trailkeep_ledger::{LocalDir, VerifyOptions, verify_storage};

use crate::cmd::progress::Bar;
use crate::remote::RemoteArgs;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Three modes:
  trailkeep verify --bundle FILE [--key-file PUBKEY | --verifier-key KEY]
      checks an evidence bundle (`trailkeep export --format bundle`) offline: signatures,
      inclusion proofs, order and count of events, and the signed trailer;
  trailkeep verify --data-dir DIR [--verifier-key KEY]
      reads every record, leaf, tree level and checkpoint signature of a data directory;
  trailkeep verify --url URL --key API_KEY --key-file PUBKEY [--state FILE]
      acts as a witness of a running server: checks each log's signed checkpoint against the
      pinned verifier key and proves it consistent with the checkpoint seen last time (kept in
      --state), so that a rewritten or rolled-back log is noticed.")]
pub struct VerifyArgs {
    /// Data directory to check end to end: a server's data directory (its `ledger/` is read) or a
    /// ledger directory itself. Nothing is changed. Without it, the server at --url is checked.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Evidence bundle to check offline (see docs/evidence-bundle.md).
    #[arg(long, value_name = "FILE", conflicts_with = "data_dir")]
    bundle: Option<PathBuf>,

    #[command(flatten)]
    remote: RemoteArgs,

    /// Pin the checkpoint verifier key (`name+hash+base64`, as `GET /v1/log/key` prints it)
    /// instead of trusting the key stored with the data.
    #[arg(long, value_name = "VERIFIER_KEY", conflicts_with = "key_file")]
    verifier_key: Option<String>,

    /// Read the pinned verifier key from a file.
    #[arg(long, value_name = "PUBKEY")]
    key_file: Option<PathBuf>,

    /// Witness mode: the file remembering the last checkpoint seen of each log (created if
    /// missing, updated only when everything verified). Default: `trailkeep-witness.json`.
    #[arg(long, value_name = "FILE", default_value = "trailkeep-witness.json")]
    state: PathBuf,

    /// Witness mode: only these accounts' logs (repeatable); default: every log the key may read.
    #[arg(long = "account", value_name = "ACCOUNT")]
    accounts: Vec<String>,

    /// Threads reading segments.
    #[arg(long, default_value_t = 2, value_name = "N")]
    threads: usize,
}

pub fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let verifier_key = match (&args.verifier_key, &args.key_file) {
        (Some(k), _) => Some(k.trim().to_string()),
        (None, Some(f)) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading {}", f.display()))?
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    };
    if let Some(bundle) = &args.bundle {
        return crate::cmd::verify_bundle::run(bundle, verifier_key.as_deref());
    }
    let Some(data_dir) = &args.data_dir else {
        let verifier_key = verifier_key.context(
            "checking a server needs the verifier key you trust: --key-file PUBKEY or --verifier-key KEY \
             (fetch it once with `curl URL/v1/log/key` and keep it)",
        )?;
        return crate::cmd::witness::run(&args.remote, &verifier_key, &args.state, &args.accounts);
    };
    let dir = ledger_dir(data_dir)?;
    let storage = LocalDir::existing(&dir).with_context(|| format!("opening {}", dir.display()))?;
    let options = VerifyOptions {
        verifier_key,
        key_path: None,
        threads: Some(args.threads.max(1)),
    };
    let mut bar = Bar::new();
    let report = verify_storage(&storage, &options, |p| bar.update(p.phase, p.done, p.total))
        .with_context(|| format!("verifying {}", dir.display()))?;
    bar.finish();
    println!("{report}");
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A server data directory keeps its ledger in `ledger/`; a bare ledger directory is used as is.
fn ledger_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    if !dir.is_dir() {
        anyhow::bail!("{} is not a directory", dir.display());
    }
    let nested = dir.join("ledger");
    Ok(if nested.join(trailkeep_ledger::META_NAME).exists() {
        nested
    } else {
        dir.to_path_buf()
    })
}
