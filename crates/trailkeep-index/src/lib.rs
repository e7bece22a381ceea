//! Trailkeep's search side: the query language and the tantivy index of stored events.
//!
//! **API Boundary.** This crate knows nothing of HTTP and nothing of the ledger's file format. It
//! is handed items `(account, index, receivedAt, event JSON)` and answers searches with positions
//! `(account, index)`; the caller fetches the events themselves from the ledger. The index is
//! derived data: it can always be deleted and rebuilt from the ledger.
//!
//! * [`query`] — the query language: parser (strict and lenient), AST, plan. Pure.
//! * [`EventIndex`] — opening the index, [`EventIndex::search`], [`EventIndex::aggregate`].
//! * [`Writer`] — batched adds, commits with the last indexed position per account, rebuild.

pub mod query;

mod aggregate;
mod compile;
mod error;
mod index;
mod schema;
mod search;
mod writer;

pub use aggregate::{
    AggregateRequest, AggregateResult, Bucket, Histogram, TermCount, TermsRequest,
};
pub use error::{IndexError, Result};
pub use index::{EventIndex, Positions, SpaceUsage};
pub use query::{ParseError, Plan, Query};
pub use schema::{FORMAT_VERSION, MAX_PLAIN_VALUE_BYTES, hash64, hashed_token};
pub use search::{Hit, MAX_LIMIT, SearchPage, SearchRequest};
pub use writer::{Added, CommitInfo, Writer, WriterOptions};
