//! Golden input → AST/plan (or error) pairs for the query language, in `tests/golden/query.txt`.
//!
//! Each case is a `> query` line followed by the expected output lines; `#` lines are comments.
//! Run with `UPDATE_GOLDEN=1` to rewrite the expectations after a deliberate change, then review
//! the diff.

use std::fmt::Write as _;
use std::path::PathBuf;

use trailkeep_index::query::{parse_lenient, parse_strict, plan};

/// The outcome of one query, as lines.
fn render(input: &str) -> String {
    let mut out = String::new();
    match parse_strict(input) {
        Ok(ast) => {
            writeln!(out, "ast: {ast}").unwrap();
            match plan(&ast, input) {
                Ok(p) => writeln!(out, "plan: {p}").unwrap(),
                Err(e) => writeln!(out, "error: {e} [{}..{}]", e.span.start, e.span.end).unwrap(),
            }
        }
        Err(e) => {
            writeln!(out, "error: {e} [{}..{}]", e.span.start, e.span.end).unwrap();
            let lenient = parse_lenient(input);
            writeln!(out, "lenient: {}", lenient.query).unwrap();
            for e in lenient.errors.iter().skip(1) {
                writeln!(out, "also: {e} [{}..{}]", e.span.start, e.span.end).unwrap();
            }
        }
    }
    out
}

/// Checks every case of a golden file; rewrites it when `UPDATE_GOLDEN` is set.
fn check(file: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut expected_out = String::new();
    let mut actual_out = String::new();
    let mut failures = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(query) = line.strip_prefix("> ") {
            let mut expected = String::new();
            while let Some(next) = lines.peek() {
                if next.starts_with("> ") || next.starts_with('#') || next.is_empty() {
                    break;
                }
                expected.push_str(next);
                expected.push('\n');
                lines.next();
            }
            let actual = render(query);
            if actual != expected {
                failures.push(format!(
                    "> {query}\n--- expected\n{expected}--- actual\n{actual}"
                ));
            }
            for out in [&mut expected_out, &mut actual_out] {
                out.push_str(line);
                out.push('\n');
            }
            expected_out.push_str(&expected);
            actual_out.push_str(&actual);
        } else {
            for out in [&mut expected_out, &mut actual_out] {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    if failures.is_empty() {
        return;
    }
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual_out).unwrap();
        return;
    }
    panic!(
        "{} golden case(s) differ (rerun with UPDATE_GOLDEN=1 to accept):\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn query_language_golden() {
    check("query.txt");
}
