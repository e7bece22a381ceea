//! Canonical round trips: parse(canonical) → normalise → the same bytes.

use crate::support::*;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use trailkeep_event::{Context, Policy, RawEvent, normalize, to_canonical_vec};

fn assert_round_trip(v: &Value, policy: &Policy) {
    let keys = test_key;
    let ctx = Context::new(policy, "acme").with_keys(&keys);
    let Ok(first) = normalize(RawEvent::plain(v.clone()), &ctx) else {
        return;
    };
    let parsed: Value =
        serde_json::from_slice(first.canonical_bytes()).expect("canonical bytes parse");
    assert_eq!(
        &parsed,
        first.event(),
        "the stored event is what the bytes say"
    );
    let second = normalize(RawEvent::plain(parsed), &ctx).expect("a stored event normalises again");
    assert_eq!(
        String::from_utf8_lossy(second.canonical_bytes()),
        String::from_utf8_lossy(first.canonical_bytes())
    );
    assert_eq!(
        (second.account(), second.location(), second.id()),
        (first.account(), first.location(), first.id())
    );
}

#[test]
fn realistic_events_round_trip() {
    let policy = Policy::default();
    for ev in [
        codeengine_app_create(),
        registry_push_failure(),
        kms_rotate(),
        mlops_legacy_delete()["payload"].clone(),
        keystone_envelope()["payload"].clone(),
        nova_reboot(),
    ] {
        assert_round_trip(&ev, &policy);
    }
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        "[a-z]{0,4}(password|token|Secret)?".prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(
                "[a-zA-Z_\\-é😀]{0,8}|apiKey|password|reasonForFailure",
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

fn event_time() -> impl Strategy<Value = String> {
    (
        2000i32..2100,
        1u32..13,
        1u32..29,
        0u32..24,
        0u32..60,
        0u32..60,
        "[0-9]{0,9}",
        prop_oneof![
            Just("Z".to_owned()),
            Just("+00:00".to_owned()),
            Just("+0000".to_owned()),
            Just("-05:30".to_owned()),
            Just("+1400".to_owned())
        ],
    )
        .prop_map(|(y, mo, d, h, mi, s, frac, off)| {
            let frac = if frac.is_empty() {
                String::new()
            } else {
                format!(".{frac}")
            };
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}{off}")
        })
}

prop_compose! {
    fn event()(
        time in event_time(),
        verb in "create|update|delete|list|rotate|push|authenticate",
        outcome in "success|failure|pending|unknown|Failure",
        code in prop_oneof![Just(json!(200)), Just(json!("403")), Just(json!("E1")), Just(json!(503.0)), Just(Value::Null)],
        data_event in prop_oneof![Just(json!(true)), Just(json!("false")), Just(Value::Null)],
        request in prop_oneof![json_value(), json_value().prop_map(|v| Value::String(v.to_string()))],
        response in json_value(),
        extra in json_value(),
        with_id in any::<bool>(),
        crn_prefix in any::<bool>(),
        token in ".{0,20}",
    ) -> Value {
        let crn = format!("{}v1:bluemix:public:svc:eu-de:a/acct-{}:inst::", if crn_prefix { "crn:" } else { "" }, verb.len());
        let mut ev = json!({
            "eventTime": time,
            "action": format!("svc.thing.{verb}"),
            "outcome": outcome,
            "logSourceCRN": crn,
            "initiator": {"id": "IBMid-1", "name": "x", "credential": {"type": "token", "token": token}},
            "target": {"id": "t-1", "name": "thing-1", "typeURI": "svc/thing"},
            "reason": {"reasonCode": code},
            "dataEvent": data_event,
            "requestData": request,
            "responseData": response,
            "extra": extra,
        });
        if with_id {
            ev["id"] = json!("fixed-id");
        }
        ev
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn normalised_events_round_trip(ev in event()) {
        assert_round_trip(&ev, &Policy::default());
        // And with a small size limit, so the size policy takes part.
        assert_round_trip(&ev, &Policy { max_event_bytes: 700, ..Policy::default() });
    }

    #[test]
    fn canonical_json_is_stable(v in json_value()) {
        let bytes = to_canonical_vec(&v);
        let parsed: Value = serde_json::from_slice(&bytes).unwrap();
        prop_assert_eq!(to_canonical_vec(&parsed), bytes);
    }
}
