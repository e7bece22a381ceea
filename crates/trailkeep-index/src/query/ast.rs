//! The query AST: what the user wrote, after parsing and before planning.
//!
//! The AST knows nothing of the schema or of tantivy. Field names are kept as written (dotted
//! paths of the stored event); values are kept as text together with how they were written
//! (bare, quoted, with a trailing `*`). Typing them (numbers, dates, booleans) is the planner's job.

use std::fmt;

/// A byte range in the query text, `start..end`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub struct Span {
    /// First byte (inclusive).
    pub start: usize,
    /// Last byte (exclusive).
    pub end: usize,
}

impl Span {
    /// A span from `start` to `end` (byte offsets).
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    /// Matches every event (the empty query, or `*`).
    All,
    /// Every sub-query must match (explicit `AND`, `+`, or terms side by side).
    And(Vec<Query>),
    /// At least one sub-query must match.
    Or(Vec<Query>),
    /// The sub-query must not match (`NOT x`, `-x`).
    Not(Box<Query>),
    /// A bare word or phrase: full-text search over `message`, `reason.reasonForFailure`, the
    /// derived `description` and the
    /// words of `action`.
    Text(Text),
    /// `field:value`, `field:[a TO b]`, `field>=v`, `field:*`.
    Field(FieldQuery),
}

/// Full-text term (no field given).
#[derive(Debug, Clone, PartialEq)]
pub struct Text {
    /// The text as written, unescaped (without quotes or trailing `*`).
    pub value: String,
    /// Word, prefix or phrase.
    pub kind: TextKind,
    /// Where it was written.
    pub span: Span,
}

/// How a full-text term was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    /// `disk` — one word (several words if the text tokenises into several, as a phrase).
    Word,
    /// `disk*` — words starting with this.
    Prefix,
    /// `"disk full"` — the words in this order.
    Phrase,
}

/// A query on one field.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldQuery {
    /// The dotted path as written (`target.id`).
    pub field: String,
    /// The span of the field name.
    pub field_span: Span,
    /// The condition on the field.
    pub predicate: Predicate,
    /// The span of the value part (for type errors in the planner).
    pub value_span: Span,
}

/// A condition on a field's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Predicate {
    /// `field:value` (bare value).
    Term(String),
    /// `field:"some value"` (quoted value: exact value, or a phrase on full-text fields).
    Phrase(String),
    /// `field:val*`.
    Prefix(String),
    /// `field:[a TO b]`, `field:{a TO *]`, `field>=a`, ….
    Range {
        /// The lower bound.
        lower: Bound,
        /// The upper bound.
        upper: Bound,
    },
    /// `field:*` — the field is present.
    Exists,
}

/// One end of a range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    /// The value is included (`[`, `]`, `>=`, `<=`).
    Included(String),
    /// The value is excluded (`{`, `}`, `>`, `<`).
    Excluded(String),
    /// No bound (`*`).
    Unbounded,
}

impl Query {
    /// Builds an `And` of the queries, flattening trivial cases.
    pub(crate) fn and(mut items: Vec<Query>) -> Query {
        items.retain(|q| *q != Query::All);
        match items.len() {
            0 => Query::All,
            1 => items.pop().unwrap_or(Query::All),
            _ => Query::And(items),
        }
    }

    /// Builds an `Or` of the queries, flattening trivial cases.
    pub(crate) fn or(mut items: Vec<Query>) -> Query {
        if items.contains(&Query::All) {
            return Query::All;
        }
        match items.len() {
            0 => Query::All,
            1 => items.pop().unwrap_or(Query::All),
            _ => Query::Or(items),
        }
    }
}

fn write_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bound::Included(v) | Bound::Excluded(v) => write_quoted(f, v),
            Bound::Unbounded => f.write_str("*"),
        }
    }
}

/// A compact S-expression form, used by the golden tests and in debugging output.
impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Query::All => f.write_str("(all)"),
            Query::And(items) | Query::Or(items) => {
                f.write_str(if matches!(self, Query::And(_)) {
                    "(and"
                } else {
                    "(or"
                })?;
                for q in items {
                    write!(f, " {q}")?;
                }
                f.write_str(")")
            }
            Query::Not(q) => write!(f, "(not {q})"),
            Query::Text(t) => {
                f.write_str(match t.kind {
                    TextKind::Word => "(text ",
                    TextKind::Prefix => "(text-prefix ",
                    TextKind::Phrase => "(text-phrase ",
                })?;
                write_quoted(f, &t.value)?;
                f.write_str(")")
            }
            Query::Field(fq) => {
                write!(f, "({} ", fq.field)?;
                match &fq.predicate {
                    Predicate::Term(v) => {
                        f.write_str("= ")?;
                        write_quoted(f, v)?;
                    }
                    Predicate::Phrase(v) => {
                        f.write_str("phrase ")?;
                        write_quoted(f, v)?;
                    }
                    Predicate::Prefix(v) => {
                        f.write_str("prefix ")?;
                        write_quoted(f, v)?;
                    }
                    Predicate::Range { lower, upper } => {
                        let open = if matches!(lower, Bound::Excluded(_)) {
                            '{'
                        } else {
                            '['
                        };
                        let close = if matches!(upper, Bound::Excluded(_)) {
                            '}'
                        } else {
                            ']'
                        };
                        write!(f, "range {open}{lower} TO {upper}{close}")?;
                    }
                    Predicate::Exists => f.write_str("exists")?,
                }
                f.write_str(")")
            }
        }
    }
}
