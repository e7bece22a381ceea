//! `trailkeep verify`: integrity checks of a ledger.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use trailkeep_ledger::{LocalDir, VerifyOptions, verify_storage};

use crate::cmd::progress::Bar;

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Data directory to check end to end: a server's data directory (its `ledger/` is read) or a
    /// ledger directory itself. Nothing is changed.
    #[arg(long, env = "TRAILKEEP_DATA_DIR", value_name = "DIR")]
    data_dir: PathBuf,

    /// Pin the checkpoint verifier key (`name+hash+base64`, as `GET /v1/log/key` prints it)
    /// instead of trusting the key stored with the data.
    #[arg(long, value_name = "VERIFIER_KEY", conflicts_with = "key_file")]
    key: Option<String>,

    /// Read the pinned verifier key from a file.
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,

    /// Threads reading segments.
    #[arg(long, default_value_t = 2, value_name = "N")]
    threads: usize,
}

pub fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let dir = ledger_dir(&args.data_dir)?;
    let storage = LocalDir::existing(&dir).with_context(|| format!("opening {}", dir.display()))?;
    let verifier_key = match (&args.key, &args.key_file) {
        (Some(k), _) => Some(k.trim().to_string()),
        (None, Some(f)) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading {}", f.display()))?
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    };
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
