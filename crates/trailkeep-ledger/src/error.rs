//! The ledger's typed errors.

use std::io;

/// Everything that can go wrong in the ledger.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The storage seam failed.
    #[error("storage: {0}")]
    Io(#[from] io::Error),
    /// Stored bytes are damaged or inconsistent. `position` names the place: an object name and a
    /// byte offset, or an account and index.
    #[error("corrupted at {position}: {reason}")]
    Corrupted {
        /// Where (object and byte offset, or account/index).
        position: String,
        /// What is wrong.
        reason: String,
    },
    /// The data directory was written by a newer format version than this build understands.
    #[error("data format version {found} needs an upgrade (this build supports up to {supported})")]
    UpgradeRequired {
        /// The version found on disk.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// A caller-supplied value was refused (bad account name, oversized record, bad size…).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The requested record, tree size or tile does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The signing key could not be loaded or created.
    #[error("signing key: {0}")]
    Key(String),
    /// The ledger's writer has stopped (closed, or failed earlier).
    #[error("ledger is closed{}", .0.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Closed(Option<String>),
}

impl Error {
    /// Whether this is the storage running out of space (`ENOSPC`, or a quota). The ledger stays
    /// open after such a failure, having cut off whatever it had partly written, so the same
    /// append can succeed once space is freed.
    pub fn is_storage_full(&self) -> bool {
        matches!(self, Error::Io(e) if is_storage_full(e))
    }

    /// Shorthand for [`Error::Corrupted`].
    pub fn corrupted(position: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Corrupted {
            position: position.into(),
            reason: reason.into(),
        }
    }
}

/// Whether an I/O error means that the storage ran out of space.
pub fn is_storage_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// The ledger's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
