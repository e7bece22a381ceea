//! RFC 8785 canonical JSON: the RFC's own examples and the tricky corners.

use serde_json::{Value, json};
use trailkeep_event::{to_canonical_string, to_canonical_vec};

fn jcs(text: &str) -> String {
    let v: Value = serde_json::from_str(text).unwrap();
    to_canonical_string(&v)
}

#[test]
fn rfc8785_section_3_2_2_example() {
    let input = r#"{
  "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}"#;
    assert_eq!(
        jcs(input),
        r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#
    );
}

#[test]
fn rfc8785_section_3_2_3_sorting_example() {
    let input = r#"{
  "\u20ac": "Euro Sign",
  "\r": "Carriage Return",
  "\ufb33": "Hebrew Letter Dalet With Dagesh",
  "1": "One",
  "\ud83d\ude00": "Emoji: Grinning Face",
  "\u0080": "Control",
  "\u00f6": "Latin Small Letter O With Diaeresis"
}"#;
    assert_eq!(
        jcs(input),
        "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\"\u{f6}\":\"Latin Small Letter O With Diaeresis\",\
         \"\u{20ac}\":\"Euro Sign\",\"\u{1f600}\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}"
    );
}

#[test]
fn rfc8785_appendix_b_numbers() {
    // (IEEE-754 bits, expected text) from RFC 8785 Appendix B.
    let cases: [(u64, &str); 20] = [
        (0x0000000000000000, "0"),
        (0x8000000000000000, "0"),
        (0x0000000000000001, "5e-324"),
        (0x8000000000000001, "-5e-324"),
        (0x7fefffffffffffff, "1.7976931348623157e+308"),
        (0xffefffffffffffff, "-1.7976931348623157e+308"),
        (0x4340000000000000, "9007199254740992"),
        (0xc340000000000000, "-9007199254740992"),
        (0x4430000000000000, "295147905179352830000"),
        (0x44b52d02c7e14af5, "9.999999999999997e+22"),
        (0x44b52d02c7e14af6, "1e+23"),
        (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
        (0x444b1ae4d6e2ef4e, "999999999999999700000"),
        (0x444b1ae4d6e2ef4f, "999999999999999900000"),
        (0x444b1ae4d6e2ef50, "1e+21"),
        (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
        (0x3eb0c6f7a0b5ed8d, "0.000001"),
        (0x41b3de4355555553, "333333333.3333332"),
        (0x41b3de4355555554, "333333333.33333325"),
        (0x41b3de4355555555, "333333333.3333333"),
    ];
    for (bits, want) in cases {
        let f = f64::from_bits(bits);
        let v = Value::from(f);
        assert_eq!(to_canonical_string(&v), want, "{bits:#x}");
    }
    let more: [(u64, &str); 6] = [
        (0x41b3de4355555556, "333333333.3333334"),
        (0x41b3de4355555557, "333333333.33333343"),
        (0xbecbf647612f3696, "-0.0000033333333333333333"),
        (0x43143ff3c1cb0959, "1424953923781206.2"),
        (0x3ff0000000000000, "1"),
        (0x4024000000000000, "10"),
    ];
    for (bits, want) in more {
        assert_eq!(
            to_canonical_string(&Value::from(f64::from_bits(bits))),
            want,
            "{bits:#x}"
        );
    }
}

#[test]
fn integers_beyond_two_to_the_53_are_printed_as_doubles() {
    assert_eq!(
        to_canonical_string(&json!(9007199254740993u64)),
        "9007199254740992"
    );
    assert_eq!(to_canonical_string(&json!(-42)), "-42");
    assert_eq!(
        to_canonical_string(&json!(u64::MAX)),
        "18446744073709552000"
    );
}

#[test]
fn strings_escape_only_what_they_must() {
    let v = json!(
        "tab\t nl\n cr\r bs\u{8} ff\u{c} nul\u{0} us\u{1f} del\u{7f} quote\" backslash\\ slash/ é 😀 \u{2028}"
    );
    assert_eq!(
        to_canonical_string(&v),
        "\"tab\\t nl\\n cr\\r bs\\b ff\\f nul\\u0000 us\\u001f del\u{7f} quote\\\" backslash\\\\ slash/ é 😀 \u{2028}\""
    );
}

#[test]
fn nested_objects_are_sorted_at_every_level() {
    let v = json!({"b": [{"z": 1, "a": 2}], "a": {"y": null, "x": true}});
    assert_eq!(
        to_canonical_vec(&v),
        br#"{"a":{"x":true,"y":null},"b":[{"a":2,"z":1}]}"#.to_vec()
    );
}
