//! Shared helpers: a small, hand-written corpus in a real on-disk index.

use serde_json::{Value, json};
use tempfile::TempDir;
use time::OffsetDateTime;
use time::macros::datetime;
use trailkeep_index::query::plan_strict;
use trailkeep_index::{EventIndex, SearchRequest, WriterOptions};

pub const T0: OffsetDateTime = datetime!(2026-03-01 12:00:00 UTC);
/// When every corpus item was received.
pub const RECEIVED_AT: OffsetDateTime = datetime!(2026-03-01 13:00:00 UTC);

pub fn accounts(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_string()).collect()
}

/// An event at `T0 + minutes`.
pub fn event(minutes: i64, action: &str, outcome: &str, extra: Value) -> Value {
    let time = T0 + time::Duration::minutes(minutes);
    let mut e = json!({
        "id": format!("evt-{minutes}-{action}"),
        "eventTime": time.format(&time::format_description::well_known::Rfc3339).unwrap().replace('Z', "+00:00"),
        "action": action,
        "outcome": outcome,
        "severity": if outcome == "failure" { "warning" } else { "normal" },
        "message": format!("Code Engine: {action} -{outcome}"),
        "initiator": {"id": "IBMid-100", "name": "Jane Doe", "typeURI": "service/security/account/user"},
        "target": {"id": "crn:v1:bluemix:public:codeengine:us-south:a/acc1:proj1::", "name": "proj1", "typeURI": "codeengine/project"},
        "dataEvent": false,
    });
    if let (Value::Object(base), Value::Object(extra)) = (&mut e, extra) {
        for (k, v) in extra {
            base.insert(k, v);
        }
    }
    e
}

/// The corpus: (account, index, event).
pub fn corpus() -> Vec<(&'static str, u64, Value)> {
    vec![
        (
            "acme",
            0,
            event(
                0,
                "codeengine.application.create",
                "success",
                json!({
                    "correlationId": "corr-1",
                    "requestData": {"name": "web-app", "replicas": 3, "labels": {"app.kubernetes.io/name": "web"}},
                }),
            ),
        ),
        (
            "acme",
            1,
            event(
                1,
                "codeengine.application.update",
                "failure",
                json!({
                    "correlationId": "corr-1",
                    "reason": {"reasonCode": 403, "reasonType": "Forbidden", "reasonForFailure": "The user lacks the Writer role on the project"},
                    "requestData": {"name": "web-api"},
                }),
            ),
        ),
        (
            "acme",
            2,
            event(
                2,
                "codeengine.job.run",
                "failure",
                json!({
                    "severity": "critical",
                    "reason": {"reasonCode": 500, "reasonForFailure": "Disk full on build node"},
                    "requestData": {"name": "nightly-batch", "env": {"MODE": "fast"}, "description": "Nightly batch job that compacts the audit archive"},
                }),
            ),
        ),
        (
            "acme",
            3,
            event(
                3,
                "container-registry.image.push",
                "success",
                json!({
                    "dataEvent": true,
                    "target": {"id": "crn:v1:bluemix:public:container-registry:us-south:a/acc1::image:ns1/app", "name": "ns1/app"},
                    "logSourceCRN": "crn:v1:bluemix:public:container-registry:us-south:a/acc1:::",
                }),
            ),
        ),
        (
            "acme",
            4,
            event(
                4,
                "kms.secrets.rotate",
                "failure",
                json!({
                    "reason": {"reasonCode": "ERR_QUOTA", "reasonForFailure": "quota exceeded for keys"},
                    "message": "Key Protect: rotate key quota exceeded",
                }),
            ),
        ),
        (
            "beta",
            0,
            event(
                0,
                "codeengine.application.create",
                "success",
                json!({
                    "correlationId": "corr-1",
                    "requestData": {"name": "web-app"},
                }),
            ),
        ),
        (
            "beta",
            1,
            event(
                5,
                "codeengine.application.delete",
                "failure",
                json!({
                    "reason": {"reasonCode": 404, "reasonForFailure": "Disk full: application not found"},
                }),
            ),
        ),
    ]
}

/// A real index in a temporary directory holding `items`, committed.
pub fn index_of(items: &[(&str, u64, Value)]) -> (TempDir, EventIndex) {
    let dir = TempDir::new().unwrap();
    let index = EventIndex::open(dir.path()).unwrap();
    let mut w = index.writer(WriterOptions::default()).unwrap();
    for (account, i, e) in items {
        w.add(account, *i, RECEIVED_AT, e).unwrap();
    }
    w.commit().unwrap();
    w.finish().unwrap();
    (dir, index)
}

/// All hits of a strict query (several pages if needed), as `account/index` strings.
pub fn hits(index: &EventIndex, query: &str, accounts: &[String]) -> Vec<String> {
    let plan = plan_strict(query).unwrap_or_else(|e| panic!("{query}: {e}"));
    let req = SearchRequest {
        plan: &plan,
        accounts,
        from: None,
        to: None,
        limit: 1000,
        cursor: None,
    };
    let page = index.search(&req).unwrap();
    assert!(page.next_cursor.is_none());
    page.hits
        .into_iter()
        .map(|h| format!("{}/{}", h.account, h.index))
        .collect()
}
