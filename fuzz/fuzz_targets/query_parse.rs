#![no_main]
//! The query parser and planner over arbitrary bytes: they must never panic, and the strict and
//! lenient parsers must agree.

use trailkeep_index::query::{parse_lenient, parse_strict, plan_lenient, plan_strict};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else { return };
    let lenient = parse_lenient(input);
    for e in &lenient.errors {
        assert!(e.span.start <= e.span.end && e.span.end <= input.len());
        assert!(input.is_char_boundary(e.span.start) && input.is_char_boundary(e.span.end));
    }
    let _ = lenient.query.to_string();
    match parse_strict(input) {
        Ok(q) => assert!(lenient.errors.is_empty() && q == lenient.query),
        Err(e) => assert!(lenient.errors.contains(&e)),
    }
    let (plan, plan_errors) = plan_lenient(input);
    let _ = plan.to_string();
    assert_eq!(plan_strict(input).is_ok(), plan_errors.is_empty());
});
