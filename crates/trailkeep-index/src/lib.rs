//! Trailkeep's search side: the query language and the tantivy index of stored events.
//!
//! **API Boundary.** This crate knows nothing of HTTP and nothing of the ledger's file format. It
//! is handed items `(account, index, receivedAt, event JSON)` and answers searches with positions
//! `(account, index)`; the caller fetches the events themselves from the ledger. The index is
//! derived data: it can always be deleted and rebuilt from the ledger.
//!
//! * [`query`] — the query language: parser (strict and lenient), AST, plan. Pure.
//! * [`EventIndex`] — opening the index, searching, aggregating.
//! * [`Writer`] — batched adds, commits with the last indexed position per account, rebuild.

pub mod query;

pub use query::{ParseError, Plan, Query};
