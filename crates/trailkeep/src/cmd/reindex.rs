//! `trailkeep reindex`: rebuild the search index from the ledger.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::cmd::progress::Bar;

#[derive(Debug, clap::Args)]
pub struct ReindexArgs {
    /// Data directory of a stopped server.
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
}

pub fn run(args: ReindexArgs) -> anyhow::Result<ExitCode> {
    let mut bar = Bar::new();
    let indexed = trailkeep_server::core::reindex(&args.data_dir, &args.origin, |done, total| {
        bar.update("events", done, total)
    })
    .with_context(|| {
        format!(
            "rebuilding the index in {} (is the server stopped?)",
            args.data_dir.display()
        )
    })?;
    bar.finish();
    println!("reindexed {indexed} events from the ledger");
    Ok(ExitCode::SUCCESS)
}
