//! Properties of the parser over arbitrary input: it never panics, strict and lenient agree,
//! and every error points inside the query at character boundaries.

use proptest::prelude::*;
use trailkeep_index::query::{
    MAX_QUERY_BYTES, parse_lenient, parse_strict, plan_lenient, plan_strict,
};

fn query_text() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("AND".to_string()),
        Just("OR".to_string()),
        Just("NOT".to_string()),
        Just("(".to_string()),
        Just(")".to_string()),
        Just("\"".to_string()),
        Just("-".to_string()),
        Just("+".to_string()),
        Just("*".to_string()),
        Just(":".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just("TO".to_string()),
        Just(">=".to_string()),
        Just("<".to_string()),
        Just("\\".to_string()),
        Just(" ".to_string()),
        Just("reason.reasonCode".to_string()),
        Just("eventTime".to_string()),
        Just("2026-01-01".to_string()),
        Just("500".to_string()),
        "[a-zA-Zé.ü_-]{1,6}",
        any::<char>().prop_map(|c| c.to_string()),
    ];
    prop::collection::vec(token, 0..24).prop_map(|t| t.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn strict_and_lenient_agree_and_errors_are_in_bounds(input in query_text()) {
        let lenient = parse_lenient(&input);
        let strict = parse_strict(&input);
        match &strict {
            Ok(q) => {
                prop_assert!(lenient.errors.is_empty());
                prop_assert_eq!(q, &lenient.query);
            }
            Err(e) => prop_assert_eq!(Some(e), lenient.errors.first()),
        }
        for e in &lenient.errors {
            prop_assert!(e.span.start <= e.span.end && e.span.end <= input.len(), "{:?}", e);
            prop_assert!(input.is_char_boundary(e.span.start) && input.is_char_boundary(e.span.end));
            prop_assert!(e.column >= 1 && e.line >= 1);
            prop_assert!(!e.message.is_empty());
        }
        let (_, plan_errors) = plan_lenient(&input);
        prop_assert_eq!(plan_strict(&input).is_ok(), plan_errors.is_empty());
    }

    #[test]
    fn the_printed_ast_of_a_valid_query_is_stable(input in query_text()) {
        // Printing never panics, whatever was parsed.
        let printed = parse_lenient(&input).query.to_string();
        prop_assert!(!printed.is_empty());
    }
}

#[test]
fn limits_are_reported_not_overflowed() {
    let deep = "(".repeat(1_000) + "a" + &")".repeat(1_000);
    let e = parse_strict(&deep).unwrap_err();
    assert!(e.message.contains("nested too deeply"), "{e}");
    let nots = "NOT ".repeat(1_000) + "a";
    assert!(
        parse_strict(&nots)
            .unwrap_err()
            .message
            .contains("nested too deeply")
    );
    let dashes = "-".repeat(5_000) + "a";
    assert!(parse_lenient(&dashes).errors.len() == 1);
    assert!(
        parse_strict(&dashes)
            .unwrap_err()
            .message
            .contains("nested too deeply")
    );
    let long = "a ".repeat(MAX_QUERY_BYTES);
    let e = parse_strict(&long).unwrap_err();
    assert!(e.message.contains("too long"), "{e}");
    assert_eq!(e.span.start, MAX_QUERY_BYTES);
    let many = "a ".repeat(600);
    assert!(
        parse_strict(&many)
            .unwrap_err()
            .message
            .contains("too many terms")
    );
    // Lenient parsing still returns what it could read.
    assert_ne!(
        parse_lenient(&many).query,
        trailkeep_index::query::Query::All
    );
}
