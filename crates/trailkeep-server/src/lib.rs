//! Trailkeep's server: the HTTP API (DESIGN §5), authentication, the ingest pipeline, and the
//! operations endpoints.
//!
//! **API Boundary:** this crate knows HTTP and nothing of file formats; it talks to the ledger and
//! the index only through their public APIs.

pub mod api;
pub mod app;
pub mod auth;
pub mod body;
pub mod config;
pub mod core;
pub mod demo;
pub mod error;
pub mod export;
pub mod indexer;
pub mod listen;
pub mod metrics;
pub mod run;
