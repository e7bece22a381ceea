//! Splitting outside bytes: single, array, NDJSON, wrappers, limits, positions.

use crate::support::*;
use expect_test::expect;
use serde_json::json;
use trailkeep_event::{InputError, InputLimits, ItemError, ItemKind, Policy, Shape, split_input};

fn shapes(input: &str) -> Vec<String> {
    split_input(input.as_bytes(), &InputLimits::default())
        .unwrap()
        .into_iter()
        .map(|i| match i.kind {
            ItemKind::Event(raw) => raw.shape.as_str().to_owned(),
            ItemKind::Skipped(_) => "skipped".to_owned(),
            ItemKind::Error(e) => format!("error: {e}"),
        })
        .collect()
}

#[test]
fn shapes_are_recognised() {
    assert_eq!(shapes(&text(&kms_rotate())), ["plain"]);
    assert_eq!(shapes(&text(&mlops_legacy_delete())), ["legacy-payload"]);
    assert_eq!(shapes(&text(&keystone_envelope())), ["openstack"]);
    assert_eq!(shapes(&text(&k8s_list_pods())), ["kubernetes"]);
    let array = json!([
        kms_rotate(),
        mlops_legacy_delete(),
        keystone_envelope(),
        k8s_list_pods()
    ]);
    assert_eq!(
        shapes(&text(&array)),
        ["plain", "legacy-payload", "openstack", "kubernetes"]
    );
    let ndjson = [
        line(&kms_rotate()),
        line(&keystone_envelope()),
        line(&k8s_list_pods()),
    ]
    .join("\n");
    assert_eq!(shapes(&ndjson), ["plain", "openstack", "kubernetes"]);
}

#[test]
fn oslo_v2_message_and_stringified_payloads() {
    let inner = keystone_envelope();
    let oslo = json!({"oslo.version": "2.0", "oslo.message": line(&inner)});
    assert_eq!(shapes(&line(&oslo)), ["openstack"]);
    let legacy = json!({"payload": line(&kms_rotate()), "meta": {}});
    assert_eq!(shapes(&line(&legacy)), ["legacy-payload"]);
    let bad = json!({"payload": 42});
    assert_eq!(
        shapes(&line(&bad)),
        ["error: payload must be a JSON object holding the event, found a number"]
    );
}

#[test]
fn ndjson_bad_lines_do_not_lose_good_ones() {
    let input = format!(
        "{}\n{{\"action\": broken}}\n\n{}\r\n42\n{}\n",
        line(&kms_rotate()),
        line(&registry_push_failure()),
        line(&json!({"action": "kms.secrets.read"}))
    );
    let out = render(&input);
    let heads: Vec<&str> = out
        .lines()
        .filter(|l| !l.starts_with([' ', '{', '}']))
        .collect();
    expect![[r#"
        [
            "accepted [item 0, line 1, byte 0] (plain) account=9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b location=jp-tok crud=update service=kms object=secrets verb=rotate",
            "rejected [item 1, line 2, column 12, byte 846] (-)",
            "accepted [item 2, line 4, byte 866] (plain) account=0a1b2c3d4e5f60718293a4b5c6d7e8f9 location=us-south crud=create service=container-registry object=image verb=push",
            "rejected [item 3, line 5, byte 1740] (-)",
            "rejected [item 4, line 6, byte 1743] (plain)",
        ]
    "#]].assert_debug_eq(&heads);
}

#[test]
fn declared_ndjson_keeps_lines_apart_even_when_the_first_is_broken() {
    use trailkeep_event::{InputFormat, split_each_as};
    let input = format!("not json\n\n{}\n", line(&kms_rotate()));
    let split = |format| {
        let mut items = Vec::new();
        split_each_as(
            input.as_bytes(),
            format,
            &InputLimits::default(),
            &mut |i| items.push(i),
        )
        .unwrap();
        items
    };
    // Detected, the body is one broken document; declared NDJSON, it is two lines.
    assert_eq!(split(InputFormat::Detect).len(), 1);
    let items = split(InputFormat::Ndjson);
    assert_eq!(items.len(), 2);
    assert!(matches!(items[0].kind, ItemKind::Error(_)));
    assert_eq!(items[0].position.line, Some(1));
    assert!(matches!(items[1].kind, ItemKind::Event(_)));
    assert_eq!(items[1].position.line, Some(3));
}

#[test]
fn syntax_error_in_a_single_document_has_line_column_and_offset() {
    check(
        "{\n  \"action\": \"kms.secrets.read\",\n  \"outcome\": success\n}",
        expect![[r#"
        rejected [item 0, line 3, column 14, byte 47] (-)
          "": invalid JSON: expected value
    "#]],
    );
}

#[test]
fn utf8_bom_and_surrounding_whitespace_are_fine() {
    let input = format!("\u{feff}\n  {}  \n", line(&kms_rotate()));
    assert_eq!(shapes(&input), ["plain"]);
}

#[test]
fn limits_give_clear_errors() {
    let limits = InputLimits {
        max_input_bytes: 100,
        max_depth: 64,
        max_items: 10,
    };
    let big = line(&kms_rotate());
    assert_eq!(
        split_input(big.as_bytes(), &limits).unwrap_err(),
        InputError::TooLarge {
            limit: 100,
            size: big.len()
        }
    );
    assert_eq!(
        InputError::TooLarge {
            limit: 100,
            size: 2000
        }
        .to_string(),
        "input is 2000 bytes, over the limit of 100 bytes"
    );

    let limits = InputLimits {
        max_items: 2,
        ..InputLimits::default()
    };
    let three = json!([kms_rotate(), kms_rotate(), kms_rotate()]);
    assert_eq!(
        split_input(line(&three).as_bytes(), &limits).unwrap_err(),
        InputError::TooManyItems { limit: 2 }
    );
    let ndjson = [
        line(&kms_rotate()),
        line(&kms_rotate()),
        line(&kms_rotate()),
    ]
    .join("\n");
    assert_eq!(
        split_input(ndjson.as_bytes(), &limits).unwrap_err(),
        InputError::TooManyItems { limit: 2 }
    );
    let list = json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [k8s_list_pods(), k8s_list_pods(), k8s_list_pods()]});
    assert_eq!(
        split_input(line(&list).as_bytes(), &limits).unwrap_err(),
        InputError::TooManyItems { limit: 2 }
    );

    let limits = InputLimits {
        max_depth: 3,
        ..InputLimits::default()
    };
    let items = split_input(
        br#"[{"a": {"b": {"c": 1}}}, {"a": {"b": {"c": {}}}}]"#,
        &limits,
    )
    .unwrap();
    assert!(matches!(items[0].kind, ItemKind::Event(_)));
    assert_eq!(
        items[1].kind,
        ItemKind::Error(ItemError::TooDeep { limit: 3 })
    );

    assert_eq!(
        split_input(b"  \n\t ", &InputLimits::default()).unwrap_err(),
        InputError::Empty
    );
    // serde_json's own recursion limit is a per-item syntax error, not a crash.
    let deep = "[".repeat(10_000);
    assert!(matches!(
        split_input(deep.as_bytes(), &InputLimits::default()).unwrap()[0].kind,
        ItemKind::Error(ItemError::Syntax(_))
    ));
}

#[test]
fn process_input_reports_the_input_refusal() {
    let policy = Policy {
        limits: InputLimits {
            max_input_bytes: 10,
            ..InputLimits::default()
        },
        ..Policy::default()
    };
    check_with(
        "[1,2,3,4,5,6,7]",
        &policy,
        expect![[r#"
        input refused: input is 15 bytes, over the limit of 10 bytes
    "#]],
    );
    let _ = Shape::Plain;
}

#[test]
fn a_stored_event_with_kind_and_api_version_fields_stays_plain() {
    let mut ev = kms_rotate();
    ev["kind"] = json!("Event");
    ev["apiVersion"] = json!("audit.k8s.io/v1");
    ev["payload"] = json!({"not": "a wrapper"});
    ev["event_type"] = json!("x");
    assert_eq!(shapes(&line(&ev)), ["plain"]);
}

#[test]
fn split_value_detects_shapes_of_parsed_values() {
    let list = json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [k8s_list_pods(), 7]});
    let items = trailkeep_event::split_value(list, &InputLimits::default()).unwrap();
    assert_eq!(items.len(), 2);
    assert!(matches!(&items[0].kind, ItemKind::Event(raw) if raw.shape == Shape::Kubernetes));
    assert_eq!(items[1].position.item, 1);
    assert!(matches!(
        &items[1].kind,
        ItemKind::Error(ItemError::Shape(_))
    ));
}

#[test]
fn positions_display_for_error_messages() {
    let p = trailkeep_event::Position {
        item: 3,
        line: Some(4),
        column: Some(12),
        byte_offset: Some(846),
    };
    assert_eq!(p.to_string(), "item 3, line 4, column 12, byte 846");
    let e = trailkeep_event::FieldError::new("reason.reasonCode", "must be a number");
    assert_eq!(e.to_string(), "reason.reasonCode: must be a number");
    assert_eq!(
        serde_json::to_value(&e).unwrap(),
        json!({"path": "reason.reasonCode", "reason": "must be a number"})
    );
}

#[test]
fn a_syntax_error_inside_an_array_keeps_the_other_elements() {
    let input = format!(
        "[\n{},\n{{\"action\": oops}},\n{},\n]",
        line(&kms_rotate()),
        line(&registry_push_failure())
    );
    let out = render(&input);
    let heads: Vec<&str> = out
        .lines()
        .filter(|l| !l.starts_with([' ', '{', '}']))
        .collect();
    expect![[r#"
        [
            "accepted [item 0, line 2, byte 2] (plain) account=9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b location=jp-tok crud=update service=kms object=secrets verb=rotate",
            "rejected [item 1, line 3, byte 849] (-)",
            "accepted [item 2, line 4, byte 867] (plain) account=0a1b2c3d4e5f60718293a4b5c6d7e8f9 location=us-south crud=create service=container-registry object=image verb=push",
            "rejected [item 3, line 5, byte 1741] (-)",
        ]
    "#]].assert_debug_eq(&heads);
    // Broken structure: one error for the whole input.
    assert_eq!(
        shapes("[{\"a\": 1}, {\"b\": 2]"),
        ["error: invalid JSON: expected `,` or `}`"]
    );
    assert_eq!(
        shapes("[{\"a\": \"]\"}, 1] trailing"),
        ["error: invalid JSON: trailing characters"]
    );
}
