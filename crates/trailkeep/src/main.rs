//! `trailkeep`: the command line of the Trailkeep activity tracker.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

/// Trailkeep: a self-hostable, tamper-evident activity tracker for CADF audit events.
#[derive(Debug, Parser)]
#[command(name = "trailkeep", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Work with events offline (no server needed).
    #[command(subcommand)]
    Event(cmd::event::EventCommand),
    /// Check a ledger data directory end to end: every record, leaf, tree level and checkpoint
    /// signature. Exit status 1 when anything does not hold.
    Verify(cmd::verify::VerifyArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Event(command) => cmd::event::run(command),
        Command::Verify(args) => cmd::verify::run(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
