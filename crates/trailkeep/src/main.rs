//! `trailkeep`: the command line of the Trailkeep activity tracker.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Ingest allocates and frees many small JSON nodes on several threads at once; glibc's
/// allocator spent about 40 % of the server's CPU on that under load (perf), mimalloc far less.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cmd;
mod remote;

/// Trailkeep: a self-hostable, tamper-evident activity tracker for CADF audit events.
#[derive(Debug, Parser)]
#[command(name = "trailkeep", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the Trailkeep server.
    Serve(Box<cmd::serve::ServeArgs>),
    /// Work with events offline (no server needed).
    #[command(subcommand)]
    Event(cmd::event::EventCommand),
    /// Send events from a file or standard input to a server, in batches, resuming an
    /// interrupted file. Exit status 1 when the server rejected some events.
    Send(cmd::send::SendArgs),
    /// Search a server's events, newest first.
    Search(cmd::search::SearchArgs),
    /// Export the events of a query and time range to a file: NDJSON, CSV, Parquet, or an
    /// evidence bundle that `verify --bundle` checks offline.
    Export(cmd::export::ExportArgs),
    /// The history of one object (its `target.id`): events oldest first with class and
    /// description, and its last known state, also after deletion.
    History(cmd::history::HistoryArgs),
    /// Follow a query live until interrupted.
    Tail(cmd::tail::TailArgs),
    /// Check a data directory end to end (`--data-dir`), or witness a running server's signed
    /// checkpoints and their consistency over time (`--url`). Exit status 1 when anything does
    /// not hold.
    Verify(cmd::verify::VerifyArgs),
    /// Create, list, rotate and revoke API keys (admin key needed).
    #[command(subcommand)]
    Keys(cmd::keys::KeysCommand),
    /// Register and list accounts (tenants).
    #[command(subcommand)]
    Accounts(cmd::accounts::AccountsCommand),
    /// Load generators that print throughput, latency, disk and memory figures.
    #[command(subcommand)]
    Bench(cmd::bench::BenchCommand),
    /// Alert rules on a server: create, list, get, history, test, mute, delete.
    #[command(subcommand)]
    Alerts(cmd::alerts::AlertsCommand),
    /// Saved queries (views) on a server: create, list, get, delete.
    #[command(subcommand)]
    Views(cmd::views::ViewsCommand),
    /// Routing targets (this instance, another Trailkeep, a webhook, a syslog receiver):
    /// create, list, get, update, delete (admin key).
    #[command(subcommand)]
    Targets(cmd::targets::TargetsCommand),
    /// Routes of events by location to targets: create, list, get, update, delete (admin key).
    #[command(subcommand)]
    Routes(cmd::routes::RoutesCommand),
    /// Routing settings: default targets, location aliases, data-event collection (admin key).
    #[command(subcommand)]
    Settings(cmd::settings::SettingsCommand),
    /// Archive to S3-compatible object storage: run now, status, list objects (admin key).
    #[command(subcommand)]
    Archive(cmd::archive::ArchiveCommand),
    /// Retention per account: show, set (raising at once, lowering after a delay), run now.
    #[command(subcommand)]
    Retention(cmd::retention::RetentionCommand),
    /// Restore archived events into the data directory of a stopped server
    /// (`--from-archive s3://bucket[/prefix]`), verified against the archived checkpoints.
    Import(Box<cmd::import::ImportArgs>),
    /// Rebuild the search index of a stopped server from its ledger, with a progress bar.
    Reindex(cmd::reindex::ReindexArgs),
}

/// Structured logs on stderr; `TRAILKEEP_LOG` sets the filter (default `info`), and
/// `TRAILKEEP_LOG_FORMAT=json` switches to JSON lines.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TRAILKEEP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("TRAILKEEP_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Serve(args) => cmd::serve::run(*args),
        Command::Event(command) => cmd::event::run(command),
        Command::Send(args) => cmd::send::run(args),
        Command::Search(args) => cmd::search::run(args),
        Command::History(args) => cmd::history::run(args),
        Command::Tail(args) => cmd::tail::run(args),
        Command::Export(args) => cmd::export::run(args),
        Command::Verify(args) => cmd::verify::run(args),
        Command::Reindex(args) => cmd::reindex::run(args),
        Command::Archive(command) => cmd::archive::run(command),
        Command::Retention(command) => cmd::retention::run(command),
        Command::Import(args) => cmd::import::run(*args),
        Command::Views(command) => cmd::views::run(command),
        Command::Targets(command) => cmd::targets::run(command),
        Command::Routes(command) => cmd::routes::run(command),
        Command::Settings(command) => cmd::settings::run(command),
        Command::Alerts(command) => cmd::alerts::run(command),
        Command::Bench(command) => cmd::bench::run(command),
        Command::Keys(command) => cmd::keys::run(command),
        Command::Accounts(command) => cmd::accounts::run(command),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
