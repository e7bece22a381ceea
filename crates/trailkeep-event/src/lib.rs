//! placeholder; replaced by the crate's real content.
