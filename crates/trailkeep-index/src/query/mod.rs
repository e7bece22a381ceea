//! The query language (DESIGN §6): parsing with error positions, the AST, and planning.
//!
//! Everything here is pure: no I/O, no tantivy, no clock. `docs/query.md` is the user
//! documentation; `tests/golden/query.txt` pins the behaviour input by input.

pub mod ast;
pub mod fields;
pub mod parser;
pub mod plan;
pub mod time;

pub use self::time::{TimeExprError, parse_duration, parse_time_expr};
pub use ast::{Bound, FieldQuery, Predicate, Query, Span, Text, TextKind};
pub use fields::{FieldKind, KnownField};
pub use parser::{
    LenientParse, MAX_DEPTH, MAX_QUERY_BYTES, MAX_TERMS, ParseError, parse_lenient, parse_strict,
};
pub use plan::{JsonOp, Plan, plan, plan_lenient, plan_strict};
