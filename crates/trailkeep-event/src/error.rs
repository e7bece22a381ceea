//! Error types of the event model.
//!
//! Owns: [`FieldError`] (one broken rule at one JSON path; an event collects all of
//! them), [`InputError`] (the whole input is refused) and [`ItemError`] (one item of
//! an input could not be read; the other items still count).

use serde::Serialize;
use std::fmt;

/// One rule broken by an event, at one JSON path.
///
/// `path` is dotted from the event's root (`reason.reasonCode`, `tags.2`), and is empty
/// for the event as a whole. For Kubernetes audit events the path names the field of
/// the Kubernetes event (`objectRef.resource`). `reason` says the rule in plain words.
/// The serialised form is the `{"path", "reason"}` object of DESIGN §5.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{}: {reason}", if path.is_empty() { "(event)" } else { path.as_str() })]
pub struct FieldError {
    /// Dotted JSON path, e.g. `reason.reasonCode`; empty for the whole event.
    pub path: String,
    /// The rule that was broken, e.g. `must be one of success, failure, pending, unknown`.
    pub reason: String,
}

impl FieldError {
    /// A new error at `path`.
    pub fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// Where an item sits in the input, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct Position {
    /// 0-based index of the item among all items of the input.
    pub item: usize,
    /// 1-based line in the input, when known (NDJSON lines, syntax errors).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// 1-based column in the line, when known (syntax errors).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// 0-based byte offset in the input, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub byte_offset: Option<usize>,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "item {}", self.item)?;
        if let Some(line) = self.line {
            write!(f, ", line {line}")?;
        }
        if let Some(column) = self.column {
            write!(f, ", column {column}")?;
        }
        if let Some(offset) = self.byte_offset {
            write!(f, ", byte {offset}")?;
        }
        Ok(())
    }
}

/// One item of an input that could not be read as an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ItemError {
    /// Not valid JSON.
    #[error("invalid JSON: {0}")]
    Syntax(String),
    /// Nested deeper than the configured limit.
    #[error("JSON nested deeper than the limit of {limit} levels")]
    TooDeep {
        /// The configured maximum depth.
        limit: usize,
    },
    /// Valid JSON, but not a shape that holds an event (e.g. a number, or an array inside an array).
    #[error("{0}")]
    Shape(String),
}

/// The input as a whole is refused; no item of it is used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// More bytes than allowed.
    #[error("input is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// The configured maximum.
        limit: usize,
        /// The size that was sent.
        size: usize,
    },
    /// More items than allowed.
    #[error("input holds more than {limit} items")]
    TooManyItems {
        /// The configured maximum.
        limit: usize,
    },
    /// Nothing but whitespace.
    #[error("input is empty")]
    Empty,
}

/// A redaction rule that cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid redaction rule {rule:?}: {reason}")]
pub struct RuleError {
    /// The rule's path as written.
    pub rule: String,
    /// What is wrong with it.
    pub reason: String,
}
