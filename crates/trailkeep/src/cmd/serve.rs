//! `trailkeep serve`: run the server.

use std::process::ExitCode;

use anyhow::Context as _;
use trailkeep_server::config::ServeOptions;
use trailkeep_server::run::{DEMO_EVENTS, shutdown_signal, start};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    options: ServeOptions,

    /// Load a realistic demo data set (thousands of events over the last 7 days, several accounts,
    /// services and regions) when the data directory is empty.
    #[arg(long, env = "TRAILKEEP_DEMO")]
    demo: bool,
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = args.options.merge_file()?.resolve()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("trailkeep")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let data_dir = config.data_dir.clone();
        let durability = config.durability;
        let started = start(config, args.demo)
            .await
            .with_context(|| format!("starting the server on data directory {}", data_dir.display()))?;
        let scheme = if started.tls { "https" } else { "http" };
        if let Some(secret) = &started.generated_admin_key {
            eprintln!(
                "\nA bootstrap admin API key was generated. It is shown only now and stored hashed:\n\n    {secret}\n\n\
                 Use it as `Authorization: Bearer <key>` (or TRAILKEEP_KEY for the CLI). Set TRAILKEEP_ADMIN_KEY to choose your own.\n"
            );
        }
        if args.demo {
            eprintln!("demo data: {} events in {} accounts", started.core.ledger.len(), started.core.ledger.accounts().len());
            if started.core.ledger.len() as usize != DEMO_EVENTS {
                eprintln!("(the data directory was not empty, so no demo data was added)");
            }
        }
        // Before saying so: from then on SIGTERM must shut down gracefully.
        let shutdown = shutdown_signal();
        eprintln!(
            "trailkeep listening on {scheme}://{} (data: {}, durability: {})",
            started.addr,
            data_dir.display(),
            durability.as_str()
        );
        started.serve(shutdown).await.context("serving")?;
        eprintln!("trailkeep stopped: index committed, checkpoints signed");
        Ok(ExitCode::SUCCESS)
    })
}
