//! The one integration-test binary of trailkeep-index.

mod aggregate;
mod docs;
mod format;
mod golden;
mod isolation;
mod paging;
mod persistence;
mod properties;
mod ranges;
mod retention;
mod search;
mod support;
