//! Sensitive values: credential tokens, default rules, custom rules, HMAC per account.

use crate::support::*;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use trailkeep_event::{Context, NoKeys, Policy, RawEvent, RedactAction, RedactionRule, normalize};

fn hmac_hex(key: &str, value: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(value.as_bytes());
    format!("hmac-sha256:{}", hex::encode(mac.finalize().into_bytes()))
}

#[test]
fn credential_token_is_never_stored_in_clear() {
    let ev = kms_rotate();
    let token = ev["initiator"]["credential"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let n = stored(&ev);
    let stored_token = n.event()["initiator"]["credential"]["token"]
        .as_str()
        .unwrap();
    assert_eq!(
        stored_token,
        hmac_hex("key-for-9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b", &token)
    );
    assert!(!n.canonical_str().contains(&token));
    assert_eq!(n.event()["initiator"]["credential"]["type"], json!("token"));
}

#[test]
fn without_a_key_the_marker_is_used() {
    let policy = Policy::default();
    let ctx = Context::new(&policy, "acme").with_keys(&NoKeys);
    let n = normalize(RawEvent::plain(kms_rotate()), &ctx).unwrap();
    assert_eq!(
        n.event()["initiator"]["credential"]["token"],
        json!("[redacted]")
    );
}

#[test]
fn pycadf_masked_tokens_are_replaced_too() {
    // Keystone's masked token still leaks its ends: it is replaced like any other.
    let n = stored(&keystone_envelope()["payload"]);
    let t = n.event()["initiator"]["credential"]["token"]
        .as_str()
        .unwrap();
    assert!(t.starts_with("hmac-sha256:") && t.len() == 12 + 64, "{t}");
}

#[test]
fn default_rules_cover_password_secret_token_api_key_private_key() {
    let mut ev = codeengine_app_create();
    ev["requestData"] = json!({
        "dbPassword": "hunter2",
        "client_secret": "cs-1",
        "accessToken": "at-1",
        "apiKey": "ak-1",
        "API-KEY": "ak-2",
        "privateKey": "-----BEGIN PRIVATE KEY-----",
        "nested": [{"auth": {"refresh_token": "rt-1", "tokenType": "bearer"}}],
        "secretName": "db-credentials",
        "passwordHint": "pet name"
    });
    ev["responseData"] = json!({"serviceUser": {"password": "generated-pw"}});
    let n = stored(&ev);
    let account = n.account().to_owned();
    let key = format!("key-for-{account}");
    let r = &n.event()["requestData"];
    assert_eq!(r["dbPassword"], json!(hmac_hex(&key, "hunter2")));
    assert_eq!(r["client_secret"], json!(hmac_hex(&key, "cs-1")));
    assert_eq!(r["accessToken"], json!(hmac_hex(&key, "at-1")));
    assert_eq!(r["apiKey"], json!(hmac_hex(&key, "ak-1")));
    assert_eq!(r["API-KEY"], json!(hmac_hex(&key, "ak-2")));
    assert_eq!(
        r["privateKey"],
        json!(hmac_hex(&key, "-----BEGIN PRIVATE KEY-----"))
    );
    assert_eq!(
        r["nested"][0]["auth"]["refresh_token"],
        json!(hmac_hex(&key, "rt-1"))
    );
    assert_eq!(r["nested"][0]["auth"]["tokenType"], json!("bearer"));
    assert_eq!(r["secretName"], json!("db-credentials"));
    assert_eq!(r["passwordHint"], json!("pet name"));
    assert_eq!(
        n.event()["responseData"]["serviceUser"]["password"],
        json!(hmac_hex(&key, "generated-pw"))
    );
}

#[test]
fn hmac_keys_are_per_account() {
    let mut a = kms_rotate();
    a["requestData"]["password"] = json!("same");
    let mut b = a.clone();
    b["logSourceCRN"] = json!("crn:v1:bluemix:public:kms:jp-tok:a/other-account:::");
    let ha = stored(&a).event()["requestData"]["password"].clone();
    let hb = stored(&b).event()["requestData"]["password"].clone();
    assert_ne!(ha, hb);
    assert_eq!(hb, json!(hmac_hex("key-for-other-account", "same")));
}

#[test]
fn custom_rules_by_service_and_path() {
    let mut rules = trailkeep_event::default_rules();
    rules.push(
        RedactionRule::new(
            Some("codeengine"),
            "requestData.env.value",
            RedactAction::Hmac,
        )
        .unwrap(),
    );
    rules.push(
        RedactionRule::new(
            Some("code*"),
            "target.resourceGroupId",
            RedactAction::Marker,
        )
        .unwrap(),
    );
    rules.push(RedactionRule::new(Some("kms"), "requestData.image", RedactAction::Marker).unwrap());
    let policy = Policy {
        redaction_rules: rules,
        redaction_marker: "[hidden]".into(),
        ..Policy::default()
    };
    let n = stored_with(&codeengine_app_create(), &policy);
    let key = format!("key-for-{}", n.account());
    assert_eq!(
        n.event()["requestData"]["env"],
        json!([
            {"name": "LOG_LEVEL", "value": hmac_hex(&key, "info")},
            {"name": "DB_PASSWORD", "value": hmac_hex(&key, "s3cr3t!")}
        ])
    );
    assert_eq!(n.event()["target"]["resourceGroupId"], json!("[hidden]"));
    // The kms rule does not apply to a codeengine event.
    assert_eq!(
        n.event()["requestData"]["image"],
        json!("icr.io/storefront/web:1.8.2")
    );
}

#[test]
fn objects_are_hashed_by_their_canonical_bytes() {
    let rules = vec![RedactionRule::new(None, "requestData.labels", RedactAction::Hmac).unwrap()];
    let policy = Policy {
        redaction_rules: rules,
        ..Policy::default()
    };
    let mut ev = kms_rotate();
    ev["requestData"]["labels"] = json!({"team": "payments", "env": "prod"});
    let n = stored_with(&ev, &policy);
    let key = format!("key-for-{}", n.account());
    assert_eq!(
        n.event()["requestData"]["labels"],
        json!(hmac_hex(&key, r#"{"env":"prod","team":"payments"}"#))
    );
}

#[test]
fn double_star_and_alternatives() {
    let rules = vec![
        RedactionRule::new(
            None,
            "requestData|responseData.**.description",
            RedactAction::Marker,
        )
        .unwrap(),
    ];
    let policy = Policy {
        redaction_rules: rules,
        ..Policy::default()
    };
    let mut ev = kms_rotate();
    ev["requestData"] = json!({"description": "a", "x": {"y": [{"Description": "b"}]}});
    ev["responseData"] = json!({"description": {"long": "c"}});
    let n = stored_with(&ev, &policy);
    assert_eq!(
        n.event()["requestData"],
        json!({"description": "[redacted]", "x": {"y": [{"Description": "[redacted]"}]}})
    );
    assert_eq!(
        n.event()["responseData"],
        json!({"description": "[redacted]"})
    );
}

#[test]
fn redaction_happens_before_the_message_is_derived() {
    let rules = vec![RedactionRule::new(None, "target.name", RedactAction::Marker).unwrap()];
    let policy = Policy {
        redaction_rules: rules,
        ..Policy::default()
    };
    let mut ev = kms_rotate();
    ev.as_object_mut().unwrap().remove("message");
    let n = stored_with(&ev, &policy);
    assert_eq!(
        n.event()["message"],
        json!("kms: rotate secrets [redacted]")
    );
}

#[test]
fn bad_rules_are_refused() {
    for path in ["", "a..b", "requestData.**", "a.|b"] {
        assert!(
            RedactionRule::new(None, path, RedactAction::Marker).is_err(),
            "{path}"
        );
    }
}
