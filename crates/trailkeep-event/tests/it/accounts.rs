//! Accounts and locations from `logSourceCRN`.

use crate::support::*;
use serde_json::json;

#[test]
fn account_and_location_come_from_the_crn() {
    let n = stored(&codeengine_app_create());
    assert_eq!(n.account(), "4f2a9c1e7b3d4e5f8a6b0c2d1e3f5a7b");
    assert_eq!(n.location(), "eu-de");
    let crn = n.crn().expect("parsed CRN");
    assert_eq!(crn.service_name(), "codeengine");
    assert_eq!(crn.cname(), "bluemix");
    assert_eq!(crn.ctype(), "public");
    assert_eq!(crn.scope(), "a/4f2a9c1e7b3d4e5f8a6b0c2d1e3f5a7b");
    assert_eq!(
        crn.service_instance(),
        "d3b0c442-98fc-4c1e-b3a4-6e2f1c9d8a7b"
    );
    assert_eq!(
        crn.to_string(),
        codeengine_app_create()["logSourceCRN"].as_str().unwrap()
    );
}

#[test]
fn crn_without_prefix_is_stored_with_it() {
    let n = stored(&kms_rotate());
    assert_eq!(
        n.event()["logSourceCRN"],
        json!(
            "crn:v1:bluemix:public:kms:jp-tok:a/9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b:8f2e4a6c-1b3d-4e5f-a7b9-c0d2e4f6a8b0::"
        )
    );
    assert_eq!(n.account(), "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b");
    assert_eq!(n.location(), "jp-tok");
}

#[test]
fn empty_location_is_global_and_empty_cname_is_fine() {
    let mut ev = kms_rotate();
    ev["logSourceCRN"] =
        json!("crn:v1::public:iam-identity::a/0123456789abcdef0123456789abcdef::apikey:ApiKey-1");
    let n = stored(&ev);
    assert_eq!(n.location(), "global");
    assert_eq!(n.account(), "0123456789abcdef0123456789abcdef");
    assert_eq!(n.crn().unwrap().resource(), "ApiKey-1");
}

#[test]
fn no_crn_or_no_account_scope_uses_the_default_account() {
    let mut ev = kms_rotate();
    ev.as_object_mut().unwrap().remove("logSourceCRN");
    let n = stored(&ev);
    assert_eq!((n.account(), n.location()), ("acme", "global"));
    assert!(n.crn().is_none());

    ev["logSourceCRN"] = json!("crn:v1:bluemix:public:kms:us-east:o/org-1:::");
    let n = stored(&ev);
    assert_eq!((n.account(), n.location()), ("acme", "us-east"));
}

#[test]
fn resource_part_may_contain_colons() {
    let mut ev = kms_rotate();
    ev["logSourceCRN"] = json!("crn:v1:bluemix:public:kms:jp-tok:a/abc:inst:key:part1:part2");
    assert_eq!(stored(&ev).crn().unwrap().resource(), "part1:part2");
}

#[test]
fn malformed_crns_are_rejected_with_the_path() {
    for (crn, needle) in [
        ("crn:v1:bluemix:public:kms", "10 colon-separated parts"),
        (
            "urn:v1:bluemix:public:kms:jp-tok:a/abc:::",
            "must start with `crn:`",
        ),
        ("crn:v1:bluemix:public::jp-tok:a/abc:::", "service part"),
        ("crn:v1:bluemix:public:kms:jp-tok:a/../../etc:::", "account"),
        ("crn:v1:bluemix:public:kms:jp-tok:a/:::", "account"),
    ] {
        let mut ev = kms_rotate();
        ev["logSourceCRN"] = json!(crn);
        let errs = errors(&ev);
        assert_eq!(errs.len(), 1, "{crn}: {errs:?}");
        assert_eq!(errs[0].0, "logSourceCRN");
        assert!(errs[0].1.contains(needle), "{crn}: {}", errs[0].1);
    }
}
