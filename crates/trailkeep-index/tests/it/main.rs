//! The one integration-test binary of trailkeep-index.

mod golden;
mod search;
mod support;
