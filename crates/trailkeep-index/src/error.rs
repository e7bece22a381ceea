//! The crate's error type.

use crate::query::ParseError;

/// Errors of the index and of requests to it.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The query text is not valid (syntax or type), with its position.
    #[error("invalid query: {0}")]
    Query(#[from] ParseError),
    /// The cursor was not produced by this index version, or was altered.
    #[error("invalid cursor")]
    InvalidCursor,
    /// A search or aggregation named no account: every request is limited to the accounts the
    /// caller may read, so an empty set is a caller bug, not "everything".
    #[error("no accounts given: a search must be limited to at least one account")]
    NoAccounts,
    /// A request parameter is out of range.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The index on disk was written by another format version; rebuild it (`trailkeep reindex`).
    #[error(
        "index format {found} is not supported (this build reads {supported}); rebuild the index"
    )]
    UpgradeRequired {
        /// The version found on disk.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },
    /// The index metadata cannot be read.
    #[error("index metadata is corrupted: {reason}")]
    Corrupted {
        /// What is wrong.
        reason: String,
    },
    /// An error from tantivy (I/O, locking, corruption).
    #[error("index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    /// An I/O error outside tantivy.
    #[error("index I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// The crate's result type.
pub type Result<T, E = IndexError> = std::result::Result<T, E>;
