//! Integration tests of `trailkeep-event`: one binary, one module per feature.
//!
//! Most tests go through [`support::check`]: outside bytes in, a rendering of every
//! item out (the stored event pretty-printed, or the errors with their paths),
//! compared with an inline snapshot (`UPDATE_EXPECT=1 cargo test` rewrites them).

mod accounts;
mod canonical;
mod derive;
mod input;
mod k8s;
mod objects;
mod redaction;
mod roundtrip;
mod size;
mod support;
mod validation;
mod variants;
