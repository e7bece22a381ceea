//! Trailkeep's search side: the query language and the tantivy index of stored events.
//!
//! **API Boundary.** This crate knows nothing of HTTP and nothing of the ledger's file format. It
//! is handed items `(account, index, receivedAt, event JSON)` and answers searches with positions
//! `(account, index)`; the caller fetches the events themselves from the ledger. The index is
//! derived data: it can always be deleted and rebuilt from the ledger.
//!
//! * [`query`] — the query language: parser (strict and lenient), AST, plan. Pure.
//! * [`EventIndex`] — opening the index, [`EventIndex::search`], [`EventIndex::aggregate`].
//! * [`matches()`] — one event against a plan in memory, with the index's semantics (alerts).
//! * [`Writer`] — batched adds, commits with the last indexed position per account, rebuild.

//!
//! # Index format (version [`FORMAT_VERSION`])
//!
//! A tantivy 0.27 index (sstable term dictionary, the `quickwit` feature) in one directory. What
//! each field holds is listed in `schema.rs`; in short: no stored documents (only the derived
//! `class` and `description` are stored), fast columns for
//! `account`, `idx`, `eventTime` (µs), `receivedAt` (s), `action`, `outcome`, `severity`,
//! `target.id`, `initiator.id`, `reasonCode`, `dataEvent`; `id` and `correlationId` as the FNV-1a
//! 64-bit hash ([`hash64`]) of the value; every other leaf of the event in one JSON field by dotted
//! path, string values over [`MAX_PLAIN_VALUE_BYTES`] as a [`hashed_token`].
//!
//! Every commit carries a payload, JSON `{"format": 1, "positions": {"<account>": <highest
//! index>}}`, written atomically with the documents by tantivy's `meta.json` swap. A crash loses
//! at most the adds since the last commit, and the payload says where to resume.
//!
//! An index of another version is not migrated: [`EventIndex::open`] refuses it
//! ([`IndexError::UpgradeRequired`]) and [`EventIndex::open_or_recreate`] starts an empty one,
//! to be fed again from the ledger. `tests/fixtures/index-v<N>/` keeps one index per version.
//!
//! Changes: **1** — first version. **2** — the derived fields `class`, `description` and `scope`
//! (issue #11).

pub mod query;

mod aggregate;
mod compile;
mod error;
mod index;
mod matcher;
mod schema;
mod search;
mod writer;

pub use aggregate::{
    AggregateRequest, AggregateResult, Bucket, Histogram, MAX_BUCKETS, MAX_TERMS_SIZE, TermCount,
    TermsRequest,
};
pub use error::{IndexError, Result};
pub use index::{EventIndex, Positions, SpaceUsage};
pub use matcher::{MatchItem, matches};
pub use query::{ParseError, Plan, Query};
pub use schema::{DerivedFields, FORMAT_VERSION, MAX_PLAIN_VALUE_BYTES, hash64, hashed_token};
pub use search::{Hit, MAX_LIMIT, SearchPage, SearchRequest, TimeSpan, Walk};
pub use writer::{Added, CommitInfo, Writer, WriterOptions};
