//! Trailkeep's server: the HTTP API (DESIGN §5), authentication, the ingest pipeline, and the
//! operations endpoints.
//!
//! **API Boundary:** this crate knows HTTP and nothing of file formats; it talks to the ledger and
//! the index only through their public APIs.

pub mod access;
pub mod accounts;
pub mod alerts;
pub mod api;
pub mod app;
pub mod archive;
pub mod audit;
pub mod auth;
pub mod body;
pub mod config;
pub mod core;
pub mod demo;
pub mod error;
pub mod export;
pub mod history;
pub mod ids;
pub mod indexer;
pub mod limits;
pub mod listen;
pub mod metrics;
pub mod objects;
pub mod retention;
pub mod routing;
pub mod run;
pub mod web;
