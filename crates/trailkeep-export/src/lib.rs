//! Export formats of stored events and the evidence bundle.
//!
//! * [`TabularWriter`] writes items as NDJSON (one API item per line), CSV or Apache Parquet, one
//!   item at a time into any [`std::io::Write`]: memory stays bounded whatever the size of the
//!   export (Parquet buffers at most one row group, flushed at [`PARQUET_ROW_GROUP_BYTES`]).
//!   The columns of CSV and Parquet are [`COLUMNS`], documented in `docs/export.md`, read out
//!   of each event by a lazy scan ([`scan`]). [`ParquetRows`] builds Parquet's columns apart
//!   from the writer (on another thread) for [`TabularWriter::write_rows`].
//! * [`bundle`] writes, parses (with limits) and verifies evidence bundles: events with their
//!   exact canonical bytes, an inclusion proof of each against one signed checkpoint per account,
//!   the checkpoints, the verifier key and a signed trailer over the whole file
//!   (`docs/evidence-bundle.md`); [`bundle::PreparedEvent`] encodes an event line apart from
//!   the writer.
//!
//! No I/O of its own and no HTTP: callers hand in writers and readers.

pub mod bundle;
mod fields;
#[cfg(feature = "parquet")]
mod parquet_in;
pub mod scan;
mod tabular;

pub use fields::{COLUMNS, Fields, format_time};
#[cfg(feature = "parquet")]
pub use parquet_in::{ParquetRow, read_parquet};
pub use tabular::TabularWriter;
#[cfg(feature = "parquet")]
pub use tabular::{PARQUET_ROW_GROUP_BYTES, ParquetBatch, ParquetRows};

/// Why an export could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The destination failed (the client went away, the disk is full).
    #[error("writing the export: {0}")]
    Io(#[from] std::io::Error),
    /// A stored event is not the JSON object it should be.
    #[error("event {account}/{index} cannot be exported: {reason}")]
    Event {
        account: String,
        index: u64,
        reason: String,
    },
    /// The format was asked for something it cannot do.
    #[error("{0}")]
    Format(String),
}

/// An export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One API item (`{"account","index","receivedAt","event"}`) per line.
    Ndjson,
    /// RFC 4180 CSV with a header row of [`COLUMNS`].
    Csv,
    /// Apache Parquet with typed [`COLUMNS`].
    Parquet,
    /// An evidence bundle ([`bundle`]).
    Bundle,
}

impl Format {
    /// Every format, in documentation order.
    pub const ALL: [Format; 4] = [Format::Ndjson, Format::Csv, Format::Parquet, Format::Bundle];

    /// The format called `name` (`ndjson`, `csv`, `parquet`, `bundle`; `jsonl` is `ndjson`).
    pub fn parse(name: &str) -> Option<Format> {
        Some(match name {
            "ndjson" | "jsonl" => Format::Ndjson,
            "csv" => Format::Csv,
            "parquet" => Format::Parquet,
            "bundle" => Format::Bundle,
            _ => return None,
        })
    }

    /// Its name as [`Format::parse`] takes it.
    pub fn name(self) -> &'static str {
        match self {
            Format::Ndjson => "ndjson",
            Format::Csv => "csv",
            Format::Parquet => "parquet",
            Format::Bundle => "bundle",
        }
    }

    /// The media type of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Ndjson => "application/x-ndjson",
            Format::Csv => "text/csv; charset=utf-8; header=present",
            Format::Parquet => "application/vnd.apache.parquet",
            Format::Bundle => bundle::CONTENT_TYPE,
        }
    }

    /// The usual file name extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Ndjson => "ndjson",
            Format::Csv => "csv",
            Format::Parquet => "parquet",
            Format::Bundle => "tkbundle",
        }
    }
}

/// One stored event to export.
#[derive(Debug, Clone, Copy)]
pub struct ExportItem<'a> {
    /// Its account.
    pub account: &'a str,
    /// Its index in the account's log.
    pub index: u64,
    /// When the ledger received it (ns since the Unix epoch).
    pub received_at_unix_nanos: i64,
    /// The canonical stored bytes (RFC 8785 JSON; what the leaf hash covers).
    pub bytes: &'a [u8],
}
