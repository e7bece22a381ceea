//! Rejection rules: every error is reported, each with its JSON path.

use crate::support::*;
use expect_test::expect;
use serde_json::{Value, json};

fn without(mut v: Value, keys: &[&str]) -> Value {
    for k in keys {
        v.as_object_mut().unwrap().remove(*k);
    }
    v
}

fn paths(v: &Value) -> Vec<String> {
    errors(v).into_iter().map(|(p, _)| p).collect()
}

#[test]
fn missing_required_fields_are_all_reported() {
    let ev = without(
        codeengine_app_create(),
        &["action", "eventTime", "outcome", "initiator", "target"],
    );
    assert_eq!(
        paths(&ev),
        ["eventTime", "outcome", "initiator", "target", "action"]
    );
}

#[test]
fn every_error_of_a_bad_event_in_one_answer() {
    let ev = json!({
        "id": {"not": "a string"},
        "eventTime": "last tuesday",
        "action": "codeengine.application",
        "outcome": "succeeded",
        "initiator": "dana",
        "targetId": "",
        "reason": 403,
        "dataEvent": "maybe",
        "saveServiceCopy": [],
        "logSourceCRN": "crn:v1:bluemix",
        "message": 17,
        "observer": ["ActivityTracker"]
    });
    check(
        &line(&ev),
        expect![[r#"
        rejected [item 0, byte 0] (plain)
          "id": must be a string, found an object
          "eventTime": must be a timestamp like 2024-05-01T12:30:00.25+00:00 (offset Z, +hh:mm or +hhmm; 0-9 fraction digits)
          "outcome": must be one of success, failure, pending, unknown, found "succeeded"
          "initiator": must be an object, found a string
          "targetId": must be a non-empty string, found an empty string
          "observer": must be an object, found an array
          "reason": must be an object, found a number
          "dataEvent": must be a boolean (true/false or "true"/"false")
          "saveServiceCopy": must be a boolean (true/false or "true"/"false")
          "logSourceCRN": must have 10 colon-separated parts: crn:v1:<cname>:<ctype>:<service>:<location>:<scope>:<instance>:<resource-type>:<resource> (found 3)
          "message": must be a string, found a number
          "action": must be `service.objectType.verb` (three or more non-empty dot-separated parts) or a CADF taxonomy action such as `create`, `read/list`, `authenticate` or `update/createImage`, found "codeengine.application"
    "#]],
    );
}

#[test]
fn outcome_outside_the_taxonomy() {
    let mut ev = kms_rotate();
    ev["outcome"] = json!("partial");
    let errs = errors(&ev);
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].0, "outcome");
    assert!(
        errs[0].1.contains("success, failure, pending, unknown"),
        "{}",
        errs[0].1
    );
}

#[test]
fn action_forms() {
    let valid = [
        "codeengine.application.create",
        "is.instance.instance.create",
        "container-registry.image.push",
        "create",
        "read/list",
        "update/createImage",
        "authenticate",
        "authenticate/login",
        "start/reboot",
        "created.project",
        "unknown",
    ];
    for action in valid {
        let mut ev = kms_rotate();
        ev["action"] = json!(action);
        let n = stored(&ev);
        assert_eq!(n.event()["action"], json!(action));
    }
    let invalid = [
        "",
        "codeengine.application",
        "codeengine..create",
        "codeengine.app.create ",
        "info",
        "list",
        "push",
        ".a.b",
        "a.b.",
    ];
    for action in invalid {
        let mut ev = kms_rotate();
        ev["action"] = json!(action);
        let errs = errors(&ev);
        assert_eq!(errs.len(), 1, "{action}: {errs:?}");
        assert_eq!(errs[0].0, "action", "{action}");
        assert!(
            errs[0].1.contains("service.objectType.verb"),
            "{action}: {}",
            errs[0].1
        );
    }
}

#[test]
fn initiator_and_target_may_be_objects_or_references() {
    let ev = without(nova_reboot(), &["target"]);
    assert_eq!(paths(&ev), ["target"]);
    let mut ev = without(nova_reboot(), &["target"]);
    ev["targetId"] = json!("a1b2c3d4");
    ev["initiator"] = json!({"id": "b4c5", "typeURI": "service/security/account/user"});
    stored(&ev);
    let ev = without(nova_reboot(), &["initiatorId"]);
    let errs = errors(&ev);
    assert_eq!(
        errs,
        [(
            "initiator".to_owned(),
            "is required: an `initiator` object or an `initiatorId` reference".to_owned()
        )]
    );
}

#[test]
fn observer_is_optional_but_must_be_an_object() {
    stored(&without(registry_push_failure(), &["observer"]));
    let mut ev = kms_rotate();
    ev["observer"] = json!("ActivityTracker");
    assert_eq!(paths(&ev), ["observer"]);
}

#[test]
fn event_time_rules() {
    for bad in [
        json!("2024-02-30T10:00:00Z"),
        json!("2024-05-14T25:00:00Z"),
        json!("2024-05-14"),
        json!(1715680000),
        json!("2024-05-14T10:00:00.1234567890Z"),
    ] {
        let mut ev = kms_rotate();
        ev["eventTime"] = bad.clone();
        assert_eq!(paths(&ev), ["eventTime"], "{bad}");
    }
}

#[test]
fn non_object_event_is_rejected_as_a_whole() {
    check(
        "[1, \"two\", null, {\"action\": \"x\"}]",
        expect![[r#"
        rejected [item 0] (-)
          "": an array element must be a JSON object holding an event, found a number
        rejected [item 1] (-)
          "": an array element must be a JSON object holding an event, found a string
        rejected [item 2] (-)
          "": an array element must be a JSON object holding an event, found null
        rejected [item 3] (plain)
          "eventTime": is required
          "outcome": is required; it must be one of success, failure, pending, unknown
          "initiator": is required: an `initiator` object or an `initiatorId` reference
          "target": is required: a `target` object or a `targetId` reference
          "action": must be `service.objectType.verb` (three or more non-empty dot-separated parts) or a CADF taxonomy action such as `create`, `read/list`, `authenticate` or `update/createImage`, found "x"
    "#]],
    );
}

#[test]
fn nesting_beyond_the_depth_limit_is_rejected() {
    let mut deep = json!("leaf");
    for _ in 0..70 {
        deep = json!({ "d": deep });
    }
    let mut ev = kms_rotate();
    ev["requestData"] = deep.clone();
    let out = render(&line(&ev));
    assert!(
        out.starts_with(
            "rejected [item 0, byte 0] (-)\n  \"\": JSON nested deeper than the limit of 64 levels"
        ),
        "{out}"
    );

    // The same depth inside stringified JSON.
    let mut ev = kms_rotate();
    ev["requestData"] = json!(line(&deep));
    let errs = errors(&ev);
    assert_eq!(errs[0].0, "requestData");
    assert!(errs[0].1.contains("deeper than the limit"), "{errs:?}");
}
