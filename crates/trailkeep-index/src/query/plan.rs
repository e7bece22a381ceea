//! Planning: the AST resolved against the fields the index knows, with typed values.
//!
//! Planning is pure. It turns field names into [`KnownField`]s or JSON paths, reads values as the
//! field's type (integers, instants, booleans, lower-cased keywords), turns comparisons and date
//! days into half-open ranges, and reports values that cannot be read with their position.

use std::fmt;

use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime, PrimitiveDateTime, UtcOffset};

use super::ast::{self, Predicate, Query, Span, TextKind};
use super::fields::{FieldKind, KnownField};
use super::parser::{ParseError, parse_lenient};

/// An executable query over the index's fields.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Every event.
    All,
    /// All must match.
    And(Vec<Plan>),
    /// One must match.
    Or(Vec<Plan>),
    /// Must not match.
    Not(Box<Plan>),
    /// Full text over message, reason text, description and action words.
    FullText {
        /// Word, prefix or phrase.
        kind: TextKind,
        /// The text as written.
        value: String,
    },
    /// Full text in one text field (`message:disk`).
    Text {
        /// `Message` or `ReasonForFailure`.
        field: KnownField,
        /// Word, prefix or phrase.
        kind: TextKind,
        /// The text as written.
        value: String,
    },
    /// An exact keyword or a keyword prefix.
    Keyword {
        /// A keyword field.
        field: KnownField,
        /// The value (lower-cased for `outcome`/`severity`).
        value: String,
        /// Match values starting with `value`.
        prefix: bool,
    },
    /// An integer range (an exact value is `[v TO v]`).
    Int {
        /// `ReasonCode` or `Index`.
        field: KnownField,
        /// Inclusive lower bound.
        min: Option<i64>,
        /// Inclusive upper bound.
        max: Option<i64>,
    },
    /// A time range, in unix nanoseconds, `[from, to)`.
    Time {
        /// `EventTime` or `ReceivedAt`.
        field: KnownField,
        /// Inclusive start.
        from: Option<i64>,
        /// Exclusive end.
        to: Option<i64>,
    },
    /// A boolean field.
    Bool {
        /// `DataEvent`.
        field: KnownField,
        /// The value.
        value: bool,
    },
    /// The field is present.
    Exists {
        /// The field.
        field: KnownField,
    },
    /// A value at a dotted path of the catch-all JSON field.
    Json {
        /// The dotted path.
        path: String,
        /// What to match.
        op: JsonOp,
    },
}

/// A condition on a JSON path.
#[derive(Debug, Clone, PartialEq)]
pub enum JsonOp {
    /// The value equals this (as a string, or as a number/boolean when it reads as one).
    Exact(String),
    /// A string value starts with this.
    Prefix(String),
    /// The path has any value.
    Exists,
}

/// Parses and plans a query for the API: the first syntax or type error rejects it.
pub fn plan_strict(input: &str) -> Result<Plan, ParseError> {
    let parsed = parse_lenient(input);
    if let Some(e) = parsed.errors.into_iter().next() {
        return Err(e);
    }
    let mut errors = Vec::new();
    let plan = plan_query(&parsed.query, &mut errors).unwrap_or(Plan::All);
    match errors.into_iter().next() {
        Some(e) => Err(finish(input, e)),
        None => Ok(plan),
    }
}

/// Parses and plans a query for interactive use: terms with errors are left out.
pub fn plan_lenient(input: &str) -> (Plan, Vec<ParseError>) {
    let parsed = parse_lenient(input);
    let mut errors = Vec::new();
    let plan = plan_query(&parsed.query, &mut errors).unwrap_or(Plan::All);
    let mut all = parsed.errors;
    all.extend(errors.into_iter().map(|e| finish(input, e)));
    all.sort_by_key(|e| (e.span.start, e.span.end));
    (plan, all)
}

/// Plans an already parsed query (strict: the first type error).
pub fn plan(query: &Query, input: &str) -> Result<Plan, ParseError> {
    let mut errors = Vec::new();
    let plan = plan_query(query, &mut errors).unwrap_or(Plan::All);
    match errors.into_iter().next() {
        Some(e) => Err(finish(input, e)),
        None => Ok(plan),
    }
}

struct PlanError {
    span: Span,
    expected: &'static str,
    message: String,
}

fn finish(input: &str, e: PlanError) -> ParseError {
    let before = &input[..e.span.start.min(input.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    ParseError {
        span: e.span,
        line,
        column: before[line_start..].chars().count() + 1,
        expected: if e.expected.is_empty() {
            Vec::new()
        } else {
            vec![e.expected.to_string()]
        },
        message: e.message,
    }
}

/// `None` means "left out" (a term with an error).
fn plan_query(q: &Query, errors: &mut Vec<PlanError>) -> Option<Plan> {
    match q {
        Query::All => Some(Plan::All),
        Query::And(items) => {
            let items: Vec<Plan> = items.iter().filter_map(|q| plan_query(q, errors)).collect();
            match items.len() {
                0 => None,
                1 => items.into_iter().next(),
                _ => Some(Plan::And(items)),
            }
        }
        Query::Or(items) => {
            let items: Vec<Plan> = items.iter().filter_map(|q| plan_query(q, errors)).collect();
            match items.len() {
                0 => None,
                1 => items.into_iter().next(),
                _ => Some(Plan::Or(items)),
            }
        }
        Query::Not(inner) => plan_query(inner, errors).map(|p| Plan::Not(Box::new(p))),
        Query::Text(t) => Some(Plan::FullText {
            kind: t.kind,
            value: t.value.clone(),
        }),
        Query::Field(fq) => match plan_field(fq) {
            Ok(p) => Some(p),
            Err(e) => {
                errors.push(e);
                None
            }
        },
    }
}

fn plan_field(fq: &ast::FieldQuery) -> Result<Plan, PlanError> {
    let span = fq.value_span;
    let Some(field) = KnownField::from_path(&fq.field) else {
        return plan_json(fq);
    };
    let kind = field.kind();
    match (&fq.predicate, kind) {
        (Predicate::Exists, _) => Ok(Plan::Exists { field }),
        (Predicate::Term(v), FieldKind::Text) => Ok(Plan::Text {
            field,
            kind: TextKind::Word,
            value: v.clone(),
        }),
        (Predicate::Phrase(v), FieldKind::Text) => Ok(Plan::Text {
            field,
            kind: TextKind::Phrase,
            value: v.clone(),
        }),
        (Predicate::Prefix(v), FieldKind::Text) => Ok(Plan::Text {
            field,
            kind: TextKind::Prefix,
            value: v.clone(),
        }),
        (
            Predicate::Term(v) | Predicate::Phrase(v),
            FieldKind::Keyword | FieldKind::HashedKeyword,
        ) => Ok(Plan::Keyword {
            field,
            value: v.clone(),
            prefix: false,
        }),
        (Predicate::Prefix(v), FieldKind::Keyword) => Ok(Plan::Keyword {
            field,
            value: v.clone(),
            prefix: true,
        }),
        (Predicate::Term(v) | Predicate::Phrase(v), FieldKind::LowerKeyword) => Ok(Plan::Keyword {
            field,
            value: v.to_lowercase(),
            prefix: false,
        }),
        (Predicate::Prefix(v), FieldKind::LowerKeyword) => Ok(Plan::Keyword {
            field,
            value: v.to_lowercase(),
            prefix: true,
        }),
        (Predicate::Term(v) | Predicate::Phrase(v), FieldKind::Int | FieldKind::Uint) => {
            match v.trim().parse::<i64>() {
                Ok(n) => Ok(Plan::Int {
                    field,
                    min: Some(n),
                    max: Some(n),
                }),
                // Codes that are not integers are kept as sent and indexed as strings.
                Err(_) if field == KnownField::ReasonCode => Ok(Plan::Json {
                    path: fq.field.clone(),
                    op: JsonOp::Exact(v.clone()),
                }),
                Err(_) => Err(type_error(span, "an integer", &fq.field, v)),
            }
        }
        (Predicate::Prefix(v), FieldKind::Int | FieldKind::Uint)
            if field == KnownField::ReasonCode =>
        {
            Ok(Plan::Json {
                path: fq.field.clone(),
                op: JsonOp::Prefix(v.clone()),
            })
        }
        (Predicate::Range { lower, upper }, FieldKind::Int | FieldKind::Uint) => {
            let min = match lower {
                ast::Bound::Unbounded => None,
                ast::Bound::Included(v) => Some(read_int(v, span, &fq.field)?),
                ast::Bound::Excluded(v) => Some(read_int(v, span, &fq.field)?.saturating_add(1)),
            };
            let max = match upper {
                ast::Bound::Unbounded => None,
                ast::Bound::Included(v) => Some(read_int(v, span, &fq.field)?),
                ast::Bound::Excluded(v) => Some(read_int(v, span, &fq.field)?.saturating_sub(1)),
            };
            Ok(Plan::Int { field, min, max })
        }
        (Predicate::Term(v) | Predicate::Phrase(v), FieldKind::Date) => {
            let t = read_time(v, span, &fq.field)?;
            Ok(Plan::Time {
                field,
                from: Some(t.start),
                to: Some(t.end),
            })
        }
        (Predicate::Range { lower, upper }, FieldKind::Date) => {
            let from = match lower {
                ast::Bound::Unbounded => None,
                ast::Bound::Included(v) => Some(read_time(v, span, &fq.field)?.start),
                ast::Bound::Excluded(v) => Some(read_time(v, span, &fq.field)?.after()),
            };
            let to = match upper {
                ast::Bound::Unbounded => None,
                ast::Bound::Included(v) => Some(read_time(v, span, &fq.field)?.end),
                ast::Bound::Excluded(v) => Some(read_time(v, span, &fq.field)?.start),
            };
            Ok(Plan::Time { field, from, to })
        }
        (Predicate::Term(v) | Predicate::Phrase(v), FieldKind::Bool) => {
            match v.to_ascii_lowercase().as_str() {
                "true" => Ok(Plan::Bool { field, value: true }),
                "false" => Ok(Plan::Bool {
                    field,
                    value: false,
                }),
                _ => Err(type_error(span, "`true` or `false`", &fq.field, v)),
            }
        }
        (Predicate::Prefix(_), FieldKind::HashedKeyword) => Err(PlanError {
            span,
            expected: "a whole value without `*`",
            message: format!(
                "`{}` supports exact values only, not prefix search",
                fq.field
            ),
        }),
        (Predicate::Prefix(_), _) => Err(PlanError {
            span,
            expected: "a value without `*`",
            message: format!("`{}` does not support prefix search", fq.field),
        }),
        (Predicate::Range { .. }, _) => Err(PlanError {
            span,
            expected: "",
            message: format!(
                "`{}` does not support ranges (ranges work on reason.reasonCode, index, eventTime and receivedAt)",
                fq.field
            ),
        }),
    }
}

fn plan_json(fq: &ast::FieldQuery) -> Result<Plan, PlanError> {
    let path = fq.field.clone();
    if path.starts_with('.') || path.ends_with('.') || path.contains("..") {
        return Err(PlanError {
            span: fq.field_span,
            expected: "a dotted field path",
            message: format!("`{path}` is not a valid field path"),
        });
    }
    let op = match &fq.predicate {
        Predicate::Term(v) | Predicate::Phrase(v) => JsonOp::Exact(v.clone()),
        Predicate::Prefix(v) => JsonOp::Prefix(v.clone()),
        Predicate::Exists => JsonOp::Exists,
        Predicate::Range { .. } => {
            return Err(PlanError {
                span: fq.value_span,
                expected: "",
                message: format!(
                    "`{path}` does not support ranges (ranges work on reason.reasonCode, index, eventTime and receivedAt)"
                ),
            });
        }
    };
    Ok(Plan::Json { path, op })
}

fn type_error(span: Span, expected: &'static str, field: &str, value: &str) -> PlanError {
    PlanError {
        span,
        expected,
        message: format!("`{field}` needs {expected}, not `{value}`"),
    }
}

fn read_int(v: &str, span: Span, field: &str) -> Result<i64, PlanError> {
    v.trim()
        .parse::<i64>()
        .map_err(|_| type_error(span, "an integer", field, v))
}

/// A written time: an instant, or a whole day `[start, end)`.
struct WrittenTime {
    start: i64,
    end: i64,
}

impl WrittenTime {
    /// The first instant after the written time (exclusive lower bound).
    fn after(&self) -> i64 {
        if self.end - self.start > 1 {
            self.end
        } else {
            self.start.saturating_add(1)
        }
    }
}

const NANOS_PER_DAY: i64 = 86_400 * 1_000_000_000;

fn read_time(v: &str, span: Span, field: &str) -> Result<WrittenTime, PlanError> {
    parse_time(v).ok_or_else(|| {
        type_error(
            span,
            "a time (RFC 3339 such as 2026-01-31T12:00:00Z, or a date such as 2026-01-31)",
            field,
            v,
        )
    })
}

fn parse_time(v: &str) -> Option<WrittenTime> {
    if let Ok(t) = OffsetDateTime::parse(v, &Rfc3339) {
        let n = i64::try_from(t.unix_timestamp_nanos()).ok()?;
        return Some(WrittenTime {
            start: n,
            end: n.saturating_add(1),
        });
    }
    let date_fmt = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = Date::parse(v, &date_fmt) {
        let n = i64::try_from(d.midnight().assume_utc().unix_timestamp_nanos()).ok()?;
        return Some(WrittenTime {
            start: n,
            end: n.saturating_add(NANOS_PER_DAY),
        });
    }
    // Without an offset: UTC.
    for fmt in [
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"),
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]"),
    ] {
        if let Ok(t) = PrimitiveDateTime::parse(v, &fmt) {
            let n = i64::try_from(t.assume_offset(UtcOffset::UTC).unix_timestamp_nanos()).ok()?;
            return Some(WrittenTime {
                start: n,
                end: n.saturating_add(1),
            });
        }
    }
    None
}

fn fmt_nanos(f: &mut fmt::Formatter<'_>, n: i64) -> fmt::Result {
    match OffsetDateTime::from_unix_timestamp_nanos(i128::from(n))
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
    {
        Some(s) => f.write_str(&s),
        None => write!(f, "{n}ns"),
    }
}

/// A compact S-expression form, used by the golden tests.
impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Plan::All => f.write_str("all"),
            Plan::And(items) | Plan::Or(items) => {
                f.write_str(if matches!(self, Plan::And(_)) {
                    "(and"
                } else {
                    "(or"
                })?;
                for p in items {
                    write!(f, " {p}")?;
                }
                f.write_str(")")
            }
            Plan::Not(p) => write!(f, "(not {p})"),
            Plan::FullText { kind, value } => write!(f, "(fulltext {kind:?} {value:?})"),
            Plan::Text { field, kind, value } => write!(f, "(text {field} {kind:?} {value:?})"),
            Plan::Keyword {
                field,
                value,
                prefix,
            } => {
                write!(
                    f,
                    "(keyword {field} {} {value:?})",
                    if *prefix { "prefix" } else { "=" }
                )
            }
            Plan::Int { field, min, max } => {
                write!(f, "(int {field} ")?;
                match min {
                    Some(n) => write!(f, "[{n}")?,
                    None => f.write_str("[*")?,
                }
                f.write_str(" TO ")?;
                match max {
                    Some(n) => write!(f, "{n}])"),
                    None => f.write_str("*])"),
                }
            }
            Plan::Time { field, from, to } => {
                write!(f, "(time {field} ")?;
                match from {
                    Some(n) => {
                        f.write_str("[")?;
                        fmt_nanos(f, *n)?;
                    }
                    None => f.write_str("[*")?,
                }
                f.write_str(" TO ")?;
                match to {
                    Some(n) => {
                        fmt_nanos(f, *n)?;
                        f.write_str("))")
                    }
                    None => f.write_str("*))"),
                }
            }
            Plan::Bool { field, value } => write!(f, "(bool {field} {value})"),
            Plan::Exists { field } => write!(f, "(exists {field})"),
            Plan::Json { path, op } => match op {
                JsonOp::Exact(v) => write!(f, "(json {path} = {v:?})"),
                JsonOp::Prefix(v) => write!(f, "(json {path} prefix {v:?})"),
                JsonOp::Exists => write!(f, "(json {path} exists)"),
            },
        }
    }
}
