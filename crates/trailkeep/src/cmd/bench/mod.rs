//! `trailkeep bench`: load generators that print figures (they never assert on time).
//!
//! Each starts its own server on a loopback port (this binary's `serve`, as a child process so its
//! memory can be read apart from the load generator's) unless `--url` points at one.

pub mod alerts;
pub mod corpus;
pub mod export;
pub mod ingest;
pub mod objects;
pub mod query;
pub mod routing;
mod server;
mod stats;

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Write a deterministic corpus of realistic events (NDJSON).
    Corpus(corpus::CorpusArgs),
    /// Post a corpus over HTTP with N connections: throughput, acknowledgement latency,
    /// ingest-to-searchable latency, bytes on disk per event, server memory.
    Ingest(Box<ingest::IngestArgs>),
    /// What deriving object history costs next to normalising and indexing, in-process on the
    /// corpus (issue #11).
    Objects(objects::ObjectsArgs),
    /// Query latency (p50/p99) of the five reference queries against a loaded server.
    Query(Box<query::QueryArgs>),
    /// Export throughput (events/s) and server peak memory of each export format against a
    /// loaded server.
    Export(Box<export::ExportBenchArgs>),
    /// Ingest at a fixed rate without rules, then with N active alert rules: throughput drop,
    /// rule-evaluation cost per event, and ack → webhook latency of presence alerts.
    Alerts(Box<alerts::AlertsArgs>),
    /// What routing by location costs: the routing decision per event at N routes × M rules,
    /// next to the measured in-process ingest CPU per event without and with those routes
    /// (issue #9).
    Routing(routing::RoutingArgs),
}

pub fn run(command: BenchCommand) -> anyhow::Result<std::process::ExitCode> {
    match command {
        BenchCommand::Corpus(args) => corpus::run(args),
        BenchCommand::Ingest(args) => ingest::run(*args),
        BenchCommand::Query(args) => query::run(*args),
        BenchCommand::Export(args) => export::run(*args),
        BenchCommand::Alerts(args) => alerts::run(*args),
        BenchCommand::Objects(args) => objects::run(args),
        BenchCommand::Routing(args) => routing::run(args),
    }
}
