//! The query-language parser: text → [`Query`] with positioned errors.
//!
//! One recursive-descent parser with error recovery serves both modes: [`parse_strict`] returns
//! the first error (for the API), [`parse_lenient`] returns the best-effort query and every error
//! (for interactive use). Both are pure and bounded: the query length, the nesting depth and the
//! number of terms are limited, so no input can make the parser use unbounded time, memory or
//! stack.
//!
//! Grammar (informal; `AND` binds tighter than `OR`, terms side by side mean `AND`):
//!
//! ```text
//! query   = or EOF
//! or      = and ("OR" and)*
//! and     = unary (["AND"] unary)*
//! unary   = ("NOT" | "-" | "+") unary | primary
//! primary = "(" or ")" | field | phrase | word
//! field   = path (":" value | ("<" | "<=" | ">" | ">=") word)
//! value   = "*" | word | phrase | range | ("<" | "<=" | ">" | ">=") word | "(" values ")"
//! range   = ("[" | "{") bound "TO" bound ("]" | "}")      bound = "*" | word | phrase
//! ```

use super::ast::{Bound, FieldQuery, Predicate, Query, Span, Text, TextKind};

/// The longest query accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 8192;
/// The deepest nesting of parentheses and `NOT`/`-` accepted.
pub const MAX_DEPTH: usize = 32;
/// The most terms (leaves) a query may have.
pub const MAX_TERMS: usize = 512;

/// A syntax error at a position in the query text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, thiserror::Error)]
#[error("{message} at column {column}{}", expected_suffix(.expected))]
#[serde(rename_all = "camelCase")]
pub struct ParseError {
    /// Byte range of the offending text (`start == end` at the end of the query).
    pub span: Span,
    /// 1-based line of `span.start`.
    pub line: usize,
    /// 1-based column (in characters) of `span.start` within its line.
    pub column: usize,
    /// What the parser expected there (may be empty).
    pub expected: Vec<String>,
    /// A short human-readable description.
    pub message: String,
}

fn expected_suffix(expected: &[String]) -> String {
    match expected {
        [] => String::new(),
        [one] => format!(" (expected {one})"),
        [init @ .., last] => format!(" (expected {} or {last})", init.join(", ")),
    }
}

/// The result of [`parse_lenient`]: the best-effort query and every error found.
#[derive(Debug, Clone, PartialEq)]
pub struct LenientParse {
    /// What could be understood. Parts with errors are dropped or read literally.
    pub query: Query,
    /// Every error, in order of position.
    pub errors: Vec<ParseError>,
}

/// Parses a query for the API: any error rejects the query.
pub fn parse_strict(input: &str) -> Result<Query, ParseError> {
    if input.len() > MAX_QUERY_BYTES {
        // Reported before anything found in the part that would be read.
        let mut errors = parse_lenient(input).errors;
        if let Some(i) = errors
            .iter()
            .position(|e| e.span.end == input.len() && e.message.contains("too long"))
        {
            return Err(errors.swap_remove(i));
        }
    }
    let parsed = parse_lenient(input);
    match parsed.errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(parsed.query),
    }
}

/// Parses a query for interactive use: never fails, reports every error with its position.
pub fn parse_lenient(input: &str) -> LenientParse {
    let mut p = Parser::new(input);
    let query = p.parse_top();
    let mut errors = p.errors;
    errors.sort_by_key(|e| (e.span.start, e.span.end));
    let errors = errors
        .into_iter()
        .map(|raw| {
            let (line, column) = line_column(input, raw.span.start);
            ParseError {
                span: raw.span,
                line,
                column,
                expected: raw.expected.iter().map(|s| (*s).to_string()).collect(),
                message: raw.message,
            }
        })
        .collect();
    LenientParse { query, errors }
}

fn line_column(input: &str, offset: usize) -> (usize, usize) {
    let before = &input[..offset.min(input.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

struct RawError {
    span: Span,
    expected: &'static [&'static str],
    message: String,
}

/// The field a group of values belongs to (`field:(a OR b)`).
#[derive(Clone, Copy)]
struct FieldCtx<'a> {
    name: &'a str,
    span: Span,
}

/// A scanned word: its unescaped text and how stars were used.
struct Word {
    text: String,
    span: Span,
    /// An unescaped `*` ends the word (and it is longer than the star).
    prefix: bool,
    /// The word is a lone unescaped `*`.
    star: bool,
}

const MAX_ERRORS: usize = 64;

struct Parser<'a> {
    src: &'a str,
    pos: usize,
    depth: usize,
    terms: usize,
    fatal: bool,
    errors: Vec<RawError>,
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '.' | '-' | '/' | '@' | '$')
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Parser<'a> {
        let mut p = Parser {
            src: input,
            pos: 0,
            depth: 0,
            terms: 0,
            fatal: false,
            errors: Vec::new(),
        };
        if input.len() > MAX_QUERY_BYTES {
            let mut cut = MAX_QUERY_BYTES;
            while !input.is_char_boundary(cut) {
                cut -= 1;
            }
            p.src = &input[..cut];
            p.error(
                Span::new(cut, input.len()),
                &[],
                format!(
                    "query is too long ({} bytes; the limit is {MAX_QUERY_BYTES})",
                    input.len()
                ),
            );
        }
        p
    }

    fn error(&mut self, span: Span, expected: &'static [&'static str], message: impl Into<String>) {
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(RawError {
                span,
                expected,
                message: message.into(),
            });
        } else {
            self.fatal = true;
        }
    }

    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn peek2(&self) -> Option<char> {
        self.rest().chars().nth(1)
    }

    fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn skip_ws(&mut self) {
        while let Some(c) = self.peek() {
            if c.is_whitespace() {
                self.pos += c.len_utf8();
            } else {
                break;
            }
        }
    }

    /// Is the keyword `kw` (upper case) at the cursor, followed by a separator?
    fn at_keyword(&self, kw: &str) -> bool {
        let rest = self.rest();
        if !rest.starts_with(kw) {
            return false;
        }
        match rest[kw.len()..].chars().next() {
            None => true,
            Some(c) => c.is_whitespace() || c == '(' || c == ')' || c == '"',
        }
    }

    fn here(&self) -> Span {
        Span::new(self.pos, self.pos)
    }

    fn describe_here(&self) -> String {
        match self.peek() {
            None => "end of query".to_string(),
            Some(c) if c.is_whitespace() => "a space".to_string(),
            Some(_) => {
                let token: String = self
                    .rest()
                    .chars()
                    .take_while(|c| !c.is_whitespace())
                    .take(24)
                    .collect();
                format!("`{token}`")
            }
        }
    }

    fn count_term(&mut self, span: Span) -> bool {
        self.terms += 1;
        if self.terms > MAX_TERMS {
            self.error(
                span,
                &[],
                format!("query has too many terms (the limit is {MAX_TERMS})"),
            );
            self.fatal = true;
            return false;
        }
        true
    }

    fn enter(&mut self, span: Span) -> bool {
        if self.depth >= MAX_DEPTH {
            self.error(
                span,
                &[],
                format!("query is nested too deeply (the limit is {MAX_DEPTH} levels)"),
            );
            self.fatal = true;
            return false;
        }
        self.depth += 1;
        true
    }

    fn parse_top(&mut self) -> Query {
        let mut parts = Vec::new();
        loop {
            if let Some(q) = self.parse_or(None) {
                parts.push(q);
            }
            self.skip_ws();
            if self.fatal || self.at_end() {
                break;
            }
            // Only an unmatched `)` stops `parse_or` before the end.
            let span = Span::new(self.pos, self.pos + 1);
            self.error(span, &[], "unmatched `)`");
            self.pos += 1;
        }
        Query::and(parts)
    }

    fn parse_or(&mut self, ctx: Option<FieldCtx<'_>>) -> Option<Query> {
        let mut alts = Vec::new();
        let mut after_or: Option<Span> = None;
        loop {
            let item = self.parse_and(ctx);
            let present = item.is_some();
            match item {
                Some(q) => alts.push(q),
                None => {
                    if after_or.is_some() && !self.fatal {
                        self.error(
                            self.here(),
                            &["a term"],
                            format!("`OR` has nothing after it, found {}", self.describe_here()),
                        );
                    }
                }
            }
            self.skip_ws();
            if self.fatal || !self.at_keyword("OR") {
                break;
            }
            let span = Span::new(self.pos, self.pos + 2);
            if !present && after_or.is_none() {
                self.error(span, &["a term"], "`OR` needs a term before it");
            }
            self.pos += 2;
            after_or = Some(span);
        }
        match alts.len() {
            0 => None,
            _ => Some(Query::or(alts)),
        }
    }

    fn parse_and(&mut self, ctx: Option<FieldCtx<'_>>) -> Option<Query> {
        let mut items = Vec::new();
        let mut pending_and: Option<Span> = None;
        loop {
            self.skip_ws();
            if self.fatal || self.at_end() || self.peek() == Some(')') || self.at_keyword("OR") {
                break;
            }
            if self.at_keyword("AND") {
                let span = Span::new(self.pos, self.pos + 3);
                if items.is_empty() && pending_and.is_none() {
                    self.error(span, &["a term"], "`AND` needs a term before it");
                }
                self.pos += 3;
                pending_and = Some(span);
                continue;
            }
            if let Some(q) = self.parse_unary(ctx) {
                items.push(q);
            }
            pending_and = None;
        }
        if pending_and.is_some() && !self.fatal {
            self.error(
                self.here(),
                &["a term"],
                format!("`AND` has nothing after it, found {}", self.describe_here()),
            );
        }
        if items.is_empty() {
            None
        } else {
            Some(Query::and(items))
        }
    }

    fn parse_unary(&mut self, ctx: Option<FieldCtx<'_>>) -> Option<Query> {
        let start = self.pos;
        let (negate, len) = if self.at_keyword("NOT") {
            (true, 3)
        } else {
            match (self.peek(), self.peek2()) {
                (Some('-'), _) => (true, 1),
                (Some('+'), _) => (false, 1),
                _ => return self.parse_primary(ctx),
            }
        };
        let op_span = Span::new(start, start + len);
        self.pos += len;
        if len == 1 {
            // `-` and `+` must be attached to their term.
            match self.peek() {
                Some(c) if !c.is_whitespace() && c != ')' => {}
                _ => {
                    self.error(
                        op_span,
                        &["a term right after it"],
                        format!(
                            "`{}` must be followed directly by a term",
                            &self.src[start..start + 1]
                        ),
                    );
                    return None;
                }
            }
        } else {
            self.skip_ws();
            if self.at_end()
                || self.peek() == Some(')')
                || self.at_keyword("AND")
                || self.at_keyword("OR")
            {
                self.error(
                    self.here(),
                    &["a term"],
                    format!("`NOT` has nothing after it, found {}", self.describe_here()),
                );
                return None;
            }
        }
        if !self.enter(op_span) {
            return None;
        }
        let inner = self.parse_unary(ctx);
        self.depth -= 1;
        let inner = inner?;
        Some(if negate {
            Query::Not(Box::new(inner))
        } else {
            inner
        })
    }

    fn parse_primary(&mut self, ctx: Option<FieldCtx<'_>>) -> Option<Query> {
        match self.peek()? {
            '(' => self.parse_group(ctx),
            '"' if ctx.is_none() => {
                let (text, span) = self.scan_quoted();
                if !self.count_term(span) {
                    return None;
                }
                Some(Query::Text(Text {
                    value: text,
                    kind: TextKind::Phrase,
                    span,
                }))
            }
            _ => match ctx {
                Some(ctx) => self.parse_value(ctx),
                None => self.parse_field_or_word(),
            },
        }
    }

    fn parse_group(&mut self, ctx: Option<FieldCtx<'_>>) -> Option<Query> {
        let open = Span::new(self.pos, self.pos + 1);
        if !self.enter(open) {
            return None;
        }
        self.pos += 1;
        let inner = self.parse_or(ctx);
        self.depth -= 1;
        self.skip_ws();
        if self.peek() == Some(')') {
            self.pos += 1;
        } else if !self.fatal {
            let (_, col) = line_column(self.src, open.start);
            self.error(
                self.here(),
                &["`)`"],
                format!(
                    "the group opened at column {col} is not closed, found {}",
                    self.describe_here()
                ),
            );
        }
        if inner.is_none() && !self.fatal {
            self.error(
                Span::new(open.start, self.pos),
                &["a term"],
                "empty group `()`",
            );
        }
        inner
    }

    fn parse_field_or_word(&mut self) -> Option<Query> {
        // A field is an identifier followed directly by `:` or a comparison operator.
        let start = self.pos;
        let ident_len: usize = self
            .rest()
            .chars()
            .take_while(|&c| is_ident_char(c))
            .map(char::len_utf8)
            .sum();
        if ident_len > 0 {
            let after = self.rest()[ident_len..].chars().next();
            if matches!(after, Some(':' | '<' | '>')) {
                let name = &self.src[start..start + ident_len];
                let field_span = Span::new(start, start + ident_len);
                self.pos += ident_len;
                let ctx = FieldCtx {
                    name,
                    span: field_span,
                };
                if after == Some(':') {
                    self.pos += 1;
                    return self.parse_value(ctx);
                }
                return self.parse_comparison(ctx);
            }
        }
        let word = self.scan_word(&[]);
        if !self.count_term(word.span) {
            return None;
        }
        if word.star {
            return Some(Query::All);
        }
        let kind = if word.prefix {
            TextKind::Prefix
        } else {
            TextKind::Word
        };
        Some(Query::Text(Text {
            value: word.text,
            kind,
            span: word.span,
        }))
    }

    /// The value after `field:`, or one value inside `field:( … )`.
    fn parse_value(&mut self, ctx: FieldCtx<'_>) -> Option<Query> {
        let value_start = self.pos;
        let field = |predicate, end| {
            Query::Field(FieldQuery {
                field: ctx.name.to_string(),
                field_span: ctx.span,
                predicate,
                value_span: Span::new(value_start, end),
            })
        };
        match self.peek() {
            None => {
                self.error(
                    self.here(),
                    &["a value"],
                    format!("`{}:` has no value, found end of query", ctx.name),
                );
                None
            }
            Some(c) if c.is_whitespace() || c == ')' => {
                self.error(
                    self.here(),
                    &["a value"],
                    format!(
                        "`{}:` has no value, found {}",
                        ctx.name,
                        if c == ')' {
                            "`)`".to_string()
                        } else {
                            "a space".to_string()
                        }
                    ),
                );
                None
            }
            Some('(') => self.parse_group(Some(ctx)),
            Some('"') => {
                let (text, span) = self.scan_quoted();
                if !self.count_term(span) {
                    return None;
                }
                Some(field(Predicate::Phrase(text), span.end))
            }
            Some('[' | '{') => self.parse_range(ctx),
            Some('<' | '>') => self.parse_comparison(ctx),
            Some(_) => {
                let word = self.scan_word(&[]);
                if !self.count_term(word.span) {
                    return None;
                }
                let predicate = if word.star {
                    Predicate::Exists
                } else if word.prefix {
                    Predicate::Prefix(word.text)
                } else {
                    Predicate::Term(word.text)
                };
                Some(field(predicate, word.span.end))
            }
        }
    }

    /// `field>=value` (the cursor is on the operator).
    fn parse_comparison(&mut self, ctx: FieldCtx<'_>) -> Option<Query> {
        let value_start = self.pos;
        let op_start = self.pos;
        let op = match (self.peek(), self.peek2()) {
            (Some('>'), Some('=')) => ">=",
            (Some('<'), Some('=')) => "<=",
            (Some('>'), _) => ">",
            _ => "<",
        };
        self.pos += op.len();
        match self.peek() {
            Some(c) if !c.is_whitespace() && c != ')' && c != '(' => {}
            _ => {
                self.error(
                    self.here(),
                    &["a value"],
                    format!(
                        "`{}` has no value, found {}",
                        &self.src[ctx.span.start..self.pos],
                        self.describe_here()
                    ),
                );
                return None;
            }
        }
        let value = if self.peek() == Some('"') {
            let (text, span) = self.scan_quoted();
            Word {
                text,
                span,
                prefix: false,
                star: false,
            }
        } else {
            self.scan_word(&[])
        };
        if !self.count_term(Span::new(op_start, value.span.end)) {
            return None;
        }
        if value.star || value.prefix {
            self.error(
                value.span,
                &["a number or a date"],
                format!("`{op}` needs a value, not a wildcard"),
            );
            return None;
        }
        let (lower, upper) = match op {
            ">=" => (Bound::Included(value.text), Bound::Unbounded),
            ">" => (Bound::Excluded(value.text), Bound::Unbounded),
            "<=" => (Bound::Unbounded, Bound::Included(value.text)),
            _ => (Bound::Unbounded, Bound::Excluded(value.text)),
        };
        Some(Query::Field(FieldQuery {
            field: ctx.name.to_string(),
            field_span: ctx.span,
            predicate: Predicate::Range { lower, upper },
            value_span: Span::new(value_start, value.span.end),
        }))
    }

    /// `[a TO b]`, `{a TO b}`, mixed brackets, `*` for an open end.
    fn parse_range(&mut self, ctx: FieldCtx<'_>) -> Option<Query> {
        let start = self.pos;
        let inclusive_low = self.bump() == Some('[');
        self.skip_ws();
        let lower = self.parse_bound(true);
        let Some(lower) = lower else {
            self.skip_range_rest();
            return None;
        };
        self.skip_ws();
        if self.at_keyword("TO") {
            self.pos += 2;
        } else {
            self.error(
                self.here(),
                &["`TO`"],
                format!(
                    "range needs `TO` between its bounds, found {}",
                    self.describe_here()
                ),
            );
            self.skip_range_rest();
            return None;
        }
        self.skip_ws();
        let upper = self.parse_bound(false);
        let Some(upper) = upper else {
            self.skip_range_rest();
            return None;
        };
        self.skip_ws();
        let inclusive_high = match self.peek() {
            Some(']') => true,
            Some('}') => false,
            _ => {
                let (_, col) = line_column(self.src, start);
                self.error(
                    self.here(),
                    &["`]`", "`}`"],
                    format!(
                        "the range opened at column {col} is not closed, found {}",
                        self.describe_here()
                    ),
                );
                self.skip_range_rest();
                return None;
            }
        };
        self.pos += 1;
        if !self.count_term(Span::new(start, self.pos)) {
            return None;
        }
        let lower = match lower {
            Some(v) if inclusive_low => Bound::Included(v),
            Some(v) => Bound::Excluded(v),
            None => Bound::Unbounded,
        };
        let upper = match upper {
            Some(v) if inclusive_high => Bound::Included(v),
            Some(v) => Bound::Excluded(v),
            None => Bound::Unbounded,
        };
        Some(Query::Field(FieldQuery {
            field: ctx.name.to_string(),
            field_span: ctx.span,
            predicate: Predicate::Range { lower, upper },
            value_span: Span::new(start, self.pos),
        }))
    }

    /// One end of a range: `Some(None)` for `*`, `Some(Some(v))` for a value, `None` on error.
    fn parse_bound(&mut self, lower: bool) -> Option<Option<String>> {
        let (what, expected): (&str, &'static [&'static str]) = if lower {
            ("lower bound", &["a lower bound or `*`"])
        } else {
            ("upper bound", &["an upper bound or `*`"])
        };
        match self.peek() {
            None | Some(']' | '}') => {
                self.error(
                    self.here(),
                    expected,
                    format!("range has no {what}, found {}", self.describe_here()),
                );
                None
            }
            Some('"') => Some(Some(self.scan_quoted().0)),
            Some(_) => {
                let word = self.scan_word(&[']', '}']);
                if word.star {
                    return Some(None);
                }
                if word.text == "TO" {
                    self.error(word.span, expected, format!("range has no {what}"));
                    return None;
                }
                if word.prefix {
                    self.error(
                        word.span,
                        &["a value or `*`"],
                        "a range bound cannot be a prefix",
                    );
                    return None;
                }
                Some(Some(word.text))
            }
        }
    }

    /// Error recovery inside a broken range: skip to its closing bracket (or a separator).
    fn skip_range_rest(&mut self) {
        while let Some(c) = self.peek() {
            if c == ']' || c == '}' {
                self.pos += 1;
                return;
            }
            if c == ')' {
                return;
            }
            self.pos += c.len_utf8();
        }
    }

    /// `"…"` with `\"` and `\\` escapes. The cursor is on the opening quote.
    fn scan_quoted(&mut self) -> (String, Span) {
        let start = self.pos;
        self.pos += 1;
        let mut text = String::new();
        loop {
            match self.bump() {
                None => {
                    self.error(
                        Span::new(start, self.pos),
                        &["`\"`"],
                        "quoted text is not closed",
                    );
                    break;
                }
                Some('"') => break,
                Some('\\') => match self.bump() {
                    Some(c) => text.push(c),
                    None => {
                        self.error(
                            Span::new(start, self.pos),
                            &["`\"`"],
                            "quoted text is not closed",
                        );
                        break;
                    }
                },
                Some(c) => text.push(c),
            }
        }
        (text, Span::new(start, self.pos))
    }

    /// A bare word: up to whitespace, `(`, `)`, `"` or one of `extra_stops`; `\` escapes.
    fn scan_word(&mut self, extra_stops: &[char]) -> Word {
        let start = self.pos;
        let mut text = String::new();
        let mut last_star = false;
        let mut star_positions = Vec::new();
        while let Some(c) = self.peek() {
            if c.is_whitespace() || c == '(' || c == ')' || c == '"' || extra_stops.contains(&c) {
                break;
            }
            self.pos += c.len_utf8();
            last_star = false;
            match c {
                '\\' => match self.bump() {
                    Some(e) => text.push(e),
                    None => {
                        self.error(
                            Span::new(self.pos - 1, self.pos),
                            &["a character after `\\`"],
                            "`\\` at the end of the query escapes nothing",
                        );
                        text.push('\\');
                    }
                },
                '*' => {
                    star_positions.push((self.pos - 1, text.len()));
                    last_star = true;
                    text.push('*');
                }
                c => text.push(c),
            }
        }
        let span = Span::new(start, self.pos);
        let star = text == "*" && last_star;
        let prefix = last_star && !star;
        let inner_stars = star_positions.len() - usize::from(last_star);
        if inner_stars > 0 {
            let (at, _) = star_positions[0];
            self.error(Span::new(at, at + 1), &[], "`*` is only supported at the end of a value (prefix search); write `\\*` for a literal star");
        }
        if prefix {
            text.pop();
        }
        Word {
            text,
            span,
            prefix,
            star,
        }
    }
}
