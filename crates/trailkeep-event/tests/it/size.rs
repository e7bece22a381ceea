//! The size policy: 16 KiB of canonical JSON by default.

use crate::support::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use trailkeep_event::{
    Context, DEFAULT_MAX_EVENT_BYTES, Policy, RawEvent, SIZE_PLACEHOLDER, normalize,
    to_canonical_vec,
};

/// A key-management event whose canonical size is exactly `size` bytes when it is not
/// redacted and not dropped (the padding sits in `responseData.blob`).
fn event_of_size(size: usize) -> Value {
    let mut ev = kms_rotate();
    ev["responseData"] = json!({"blob": ""});
    let base = stored(&ev).canonical_bytes().len();
    assert!(size >= base, "base event is {base} bytes");
    ev["responseData"]["blob"] = json!("x".repeat(size - base));
    ev
}

#[test]
fn default_limit_is_16_kib() {
    assert_eq!(DEFAULT_MAX_EVENT_BYTES, 16_384);
    assert_eq!(Policy::default().max_event_bytes, 16_384);
}

#[test]
fn at_the_limit_nothing_is_dropped() {
    let ev = event_of_size(16_384);
    let n = stored(&ev);
    assert_eq!(n.canonical_bytes().len(), 16_384);
    assert!(n.dropped().is_empty());
    assert!(n.event().get("trailkeepDropped").is_none());
}

#[test]
fn one_byte_over_drops_response_data_with_its_digest() {
    let ev = event_of_size(16_385);
    let dropped_bytes = to_canonical_vec(&ev["responseData"]);
    let n = stored(&ev);
    assert!(n.canonical_bytes().len() <= 16_384);
    assert_eq!(n.event()["responseData"], json!(SIZE_PLACEHOLDER));
    assert_eq!(
        n.event()["requestData"],
        ev["requestData"],
        "requestData stays"
    );
    let digest = hex::encode(Sha256::digest(&dropped_bytes));
    assert_eq!(
        n.event()["trailkeepDropped"],
        json!([{"field": "responseData", "sha256": digest, "bytes": dropped_bytes.len()}])
    );
    assert_eq!(n.dropped().len(), 1);
    assert_eq!(n.dropped()[0].field, "responseData");
    assert_eq!(n.dropped()[0].sha256, digest);
}

#[test]
fn request_data_goes_next_when_response_data_is_not_enough() {
    let mut ev = kms_rotate();
    ev["responseData"] = json!({"note": "small"});
    ev["requestData"] = json!({"manifest": "y".repeat(20_000)});
    let n = stored(&ev);
    let fields: Vec<&str> = n.dropped().iter().map(|d| d.field.as_str()).collect();
    assert_eq!(fields, ["responseData", "requestData"]);
    assert_eq!(n.event()["requestData"], json!(SIZE_PLACEHOLDER));
    assert_eq!(n.event()["trailkeepDropped"].as_array().unwrap().len(), 2);
}

#[test]
fn still_too_large_is_rejected_with_limit_size_and_largest_fields() {
    let mut ev = kms_rotate();
    ev["requestData"] = json!({"manifest": "y".repeat(20_000)});
    ev["target"]["description"] = json!("z".repeat(17_000));
    let errs = errors(&ev);
    assert_eq!(errs.len(), 1);
    let (path, reason) = &errs[0];
    assert_eq!(path, "");
    assert!(reason.contains("over the limit of 16384 bytes"), "{reason}");
    assert!(reason.contains("largest fields: target (17"), "{reason}");
}

#[test]
fn limit_is_configurable() {
    let mut ev = codeengine_app_create();
    ev["responseData"]["buildLog"] = json!("step ".repeat(400));
    let policy = Policy {
        max_event_bytes: 2_000,
        ..Policy::default()
    };
    let n = stored_with(&ev, &policy);
    assert!(
        n.canonical_bytes().len() <= 2_000,
        "{}",
        n.canonical_bytes().len()
    );
    assert_eq!(n.dropped()[0].field, "responseData");

    let tiny = Policy {
        max_event_bytes: 500,
        ..Policy::default()
    };
    let ctx = Context::new(&tiny, "acme");
    let errs = normalize(RawEvent::plain(ev), &ctx).unwrap_err();
    assert!(
        errs[0].reason.contains("over the limit of 500 bytes"),
        "{errs:?}"
    );
}

#[test]
fn a_dropped_event_normalises_to_the_same_bytes_again() {
    let n = stored(&event_of_size(20_000));
    let again: Value = serde_json::from_slice(n.canonical_bytes()).unwrap();
    assert_eq!(stored(&again).canonical_bytes(), n.canonical_bytes());
}
