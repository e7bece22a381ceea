//! Trailkeep's ledger: the source of truth (DESIGN §3–4, FORMAT.md beside this crate).
//!
//! Opaque record bytes are appended per account into segment files through a small storage seam
//! ([`storage::Storage`]); one writer commits batches in groups and acknowledges them only once
//! durable; each account's records form an RFC 6962 Merkle tree persisted as C2SP tlog-tiles, with
//! C2SP signed-note checkpoints; proofs and full data-directory verification are provided.
//!
//! This crate never parses events (it stores canonical bytes it does not interpret), never opens
//! a socket and never depends on an async runtime: async callers bridge with
//! [`Ledger::append_with`].
//!
//! ```no_run
//! use trailkeep_ledger::{Ledger, LedgerConfig};
//! let ledger = Ledger::open_dir("trailkeep-data/ledger", LedgerConfig::default())?;
//! let acks = ledger.append(vec![("acme".into(), br#"{"action":"a.b.c"}"#.to_vec())])?;
//! let head = ledger.tree_head("acme").unwrap();
//! let proof = ledger.inclusion_proof("acme", acks[0].index, head.size)?;
//! # Ok::<(), trailkeep_ledger::Error>(())
//! ```

// `x % n == 0` reads the same under every supported toolchain (`is_multiple_of` needs 1.87).
#![allow(clippy::manual_is_multiple_of)]

mod block_cache;
pub mod error;
pub mod frame;
pub mod history;
mod ledger;
pub mod merkle;
pub mod note;
pub mod retention;
pub mod segment;
pub mod storage;
pub mod tiles;
pub mod verifier;
pub mod verify;

pub use error::{Error, Result};
pub use ledger::{
    AccountIter, Appended, Durability, FORMAT_VERSION, KEY_NAME, KeySource, Ledger, LedgerConfig,
    LedgerStats, META_NAME, PUBKEY_NAME, Record, Removal, TreeHead, decode_meta, encode_meta,
};
pub use merkle::{Hash, leaf_hash};
pub use note::{Checkpoint, NoteSigner, NoteVerifier};
pub use segment::SealOptions;
pub use storage::{LocalDir, MemStorage, Storage};
pub use verify::{
    Problem, ProblemKind, Progress, VerifyOptions, VerifyReport, verify_data_dir, verify_storage,
};
