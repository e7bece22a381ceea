//! The `check` helper and realistic events shared by the tests.

use expect_test::Expect;
use serde_json::{Value, json};
use trailkeep_event::{Context, ItemResult, Policy, process_input};

/// The HMAC key every test account gets: `key-for-<account>`.
pub fn test_key(account: &str) -> Option<Vec<u8>> {
    Some(format!("key-for-{account}").into_bytes())
}

/// Render what the default policy (default account `acme`) makes of `input`.
pub fn render(input: &str) -> String {
    render_with(input, &Policy::default())
}

/// Render what `policy` (default account `acme`) makes of `input`.
pub fn render_with(input: &str, policy: &Policy) -> String {
    let keys = test_key;
    let ctx = Context::new(policy, "acme").with_keys(&keys);
    let items = match process_input(input.as_bytes(), &ctx) {
        Ok(items) => items,
        Err(e) => return format!("input refused: {e}\n"),
    };
    let mut out = String::new();
    for item in items {
        let shape = item.shape.map_or("-", |s| s.as_str());
        match item.result {
            ItemResult::Accepted(ev) => {
                let info = ev.action_info();
                out.push_str(&format!(
                    "accepted [{}] ({shape}) account={} location={} crud={} service={} object={} verb={}\n",
                    item.position,
                    ev.account(),
                    ev.location(),
                    ev.crud(),
                    info.service,
                    info.object_type,
                    info.verb
                ));
                out.push_str(&serde_json::to_string_pretty(ev.event()).unwrap());
                out.push('\n');
            }
            ItemResult::Rejected(errs) => {
                out.push_str(&format!("rejected [{}] ({shape})\n", item.position));
                for e in errs {
                    out.push_str(&format!("  {:?}: {}\n", e.path, e.reason));
                }
            }
            ItemResult::Skipped(why) => {
                out.push_str(&format!("skipped [{}] ({shape}): {why}\n", item.position))
            }
        }
    }
    out
}

/// Compare what becomes of `input` with the snapshot `expect`.
#[track_caller]
pub fn check(input: &str, expect: Expect) {
    expect.assert_eq(&render(input));
}

/// Like [`check`] with a policy.
#[track_caller]
pub fn check_with(input: &str, policy: &Policy, expect: Expect) {
    expect.assert_eq(&render_with(input, policy));
}

/// Normalise one value with the default policy; panics on rejection.
pub fn stored(value: &Value) -> trailkeep_event::NormalizedEvent {
    let policy = Policy::default();
    stored_with(value, &policy)
}

/// Normalise one value with `policy`; panics on rejection.
pub fn stored_with(value: &Value, policy: &Policy) -> trailkeep_event::NormalizedEvent {
    let keys = test_key;
    let ctx = Context::new(policy, "acme").with_keys(&keys);
    let raw = trailkeep_event::RawEvent::plain(value.clone());
    trailkeep_event::normalize(raw, &ctx).unwrap_or_else(|e| panic!("rejected: {e:?}"))
}

/// The errors for one value with the default policy, as `path: reason` lines.
pub fn errors(value: &Value) -> Vec<(String, String)> {
    let policy = Policy::default();
    let ctx = Context::new(&policy, "acme");
    match trailkeep_event::normalize(trailkeep_event::RawEvent::plain(value.clone()), &ctx) {
        Ok(ev) => panic!("accepted: {}", ev.canonical_str()),
        Err(errs) => errs.into_iter().map(|e| (e.path, e.reason)).collect(),
    }
}

/// A Code Engine application create, in today's Activity Tracker form.
pub fn codeengine_app_create() -> Value {
    json!({
        "id": "7f1b3c2e-5d0a-4c8e-9b1f-2a6d4e8c0b13",
        "eventTime": "2024-05-14T09:28:35.15+0000",
        "action": "codeengine.application.create",
        "outcome": "success",
        "severity": "normal",
        "message": "Code Engine: create application web-frontend",
        "logSourceCRN": "crn:v1:bluemix:public:codeengine:eu-de:a/4f2a9c1e7b3d4e5f8a6b0c2d1e3f5a7b:d3b0c442-98fc-4c1e-b3a4-6e2f1c9d8a7b::",
        "correlationId": "c9e4a0d2-7b6f-4e3a-9c1d-5f8b2a4e6c0d",
        "dataEvent": false,
        "saveServiceCopy": true,
        "initiator": {
            "id": "IBMid-270001ABCD",
            "name": "dana.ops@example.com",
            "typeURI": "service/security/account/user",
            "authnId": "IBMid-270001ABCD",
            "authnName": "dana.ops@example.com",
            "credential": {"type": "token"},
            "host": {"address": "198.51.100.23", "addressType": "IPv4", "agent": "ibmcloud-cli/2.24.0"}
        },
        "target": {
            "id": "crn:v1:bluemix:public:codeengine:eu-de:a/4f2a9c1e7b3d4e5f8a6b0c2d1e3f5a7b:d3b0c442-98fc-4c1e-b3a4-6e2f1c9d8a7b:application:web-frontend",
            "name": "web-frontend",
            "typeURI": "codeengine/application",
            "resourceGroupId": "crn:v1:bluemix:public:resource-controller::a/4f2a9c1e7b3d4e5f8a6b0c2d1e3f5a7b::resource-group:9a8b7c6d5e4f"
        },
        "observer": {"name": "ActivityTracker"},
        "reason": {"reasonCode": 201, "reasonType": "Created"},
        "requestData": {
            "projectName": "storefront",
            "applicationName": "web-frontend",
            "image": "icr.io/storefront/web:1.8.2",
            "scaleMinInstances": 1,
            "scaleMaxInstances": 10,
            "env": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "DB_PASSWORD", "value": "s3cr3t!"}]
        },
        "responseData": {"applicationStatus": "deploying", "revision": "web-frontend-00001"}
    })
}

/// A container registry image push that failed, in the older, looser style.
pub fn registry_push_failure() -> Value {
    json!({
        "eventTime": "2024-05-14T11:02:07.4Z",
        "action": "container-registry.image.push",
        "outcome": "failure",
        "logSourceCRN": "v1:bluemix:public:container-registry:us-south:a/0a1b2c3d4e5f60718293a4b5c6d7e8f9::image:",
        "initiator": {
            "id": "iam-ServiceId-12ab34cd-56ef-78ab-90cd-ef1234567890",
            "name": "ci-pipeline",
            "typeURI": "service/security/account/service-id",
            "credential": {"type": "apikey"},
            "host": {"address": "203.0.113.7", "agent": "docker/24.0.7"}
        },
        "target": {
            "id": "crn:v1:bluemix:public:container-registry:us-south:a/0a1b2c3d4e5f60718293a4b5c6d7e8f9::image:us.icr.io/shop/cart:2.1",
            "name": "us.icr.io/shop/cart:2.1",
            "typeURI": "container-registry/image"
        },
        "reason": {"reasonCode": "403", "reasonType": "Forbidden"},
        "dataEvent": "true",
        "requestData": "{\"namespace\":\"shop\",\"repository\":\"cart\",\"tag\":\"2.1\",\"reasonForFailure\":\"quota exceeded for namespace shop\"}",
        "responseData": null
    })
}

/// A key-management key rotation with no `crn:` prefix and a `+00:00` time.
pub fn kms_rotate() -> Value {
    json!({
        "id": "kms-rot-0001",
        "eventTime": "2024-05-14T12:22:01+00:00",
        "action": "kms.secrets.rotate",
        "outcome": "success",
        "logSourceCRN": "v1:bluemix:public:kms:jp-tok:a/9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b:8f2e4a6c-1b3d-4e5f-a7b9-c0d2e4f6a8b0::",
        "initiator": {
            "id": "IBMid-550002WXYZ",
            "name": "sec-admin@example.com",
            "typeURI": "service/security/account/user",
            "credential": {"type": "token", "token": "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJJQk1pZC01NTAwMDIifQ.c2lnbmF0dXJl"},
            "host": {"address": "192.0.2.44", "addressType": "IPv4"}
        },
        "target": {
            "id": "crn:v1:bluemix:public:kms:jp-tok:a/9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b:8f2e4a6c-1b3d-4e5f-a7b9-c0d2e4f6a8b0:key:3c1e5a7b",
            "name": "payments-root-key",
            "typeURI": "kms/secrets"
        },
        "reason": {"reasonCode": 200, "reasonType": "OK"},
        "requestData": {"keyId": "3c1e5a7b", "rotateWithNewMaterial": false},
        "responseData": {"keyVersion": {"id": "0c4e-2f"}}
    })
}

/// An ML-ops platform training-run deletion, sent with the legacy `payload` wrapper.
pub fn mlops_legacy_delete() -> Value {
    json!({
        "payload": {
            "eventTime": "2024-05-14T15:45:00.123456789+0200",
            "action": "mlops.training-run.delete",
            "outcome": "success",
            "logSourceCRN": "crn:v1:bluemix:public:mlops:eu-gb:a/31415926535897932384626433832795:a1b2c3d4::",
            "initiator": {"id": "IBMid-660003MLOP", "name": "ana.ml@example.com", "typeURI": "service/security/account/user"},
            "target": {"id": "crn:v1:bluemix:public:mlops:eu-gb:a/31415926535897932384626433832795:a1b2c3d4:training-run:run-2024-05-14-01", "name": "run-2024-05-14-01", "typeURI": "mlops/training-run"},
            "reason": {"reasonCode": 204},
            "requestData": {"runId": "run-2024-05-14-01", "keepArtifacts": false},
            "responseData": "{}"
        },
        "meta": {"shipper": "legacy-forwarder", "version": "1.2"}
    })
}

/// A Keystone authentication failure inside an oslo notification envelope (pure CADF).
pub fn keystone_envelope() -> Value {
    json!({
        "event_type": "identity.authenticate",
        "message_id": "1f8c3a5e-7b9d-4e1f-a3c5-e7b9d1f3a5c7",
        "priority": "INFO",
        "publisher_id": "identity.keystone-1",
        "timestamp": "2024-05-14 16:00:01.812745",
        "payload": {
            "typeURI": "http://schemas.dmtf.org/cloud/audit/1.0/event",
            "id": "f1e2d3c4-b5a6-4978-8695-a4b3c2d1e0f9",
            "eventType": "activity",
            "eventTime": "2024-05-14T16:00:01.812540+0000",
            "action": "authenticate",
            "outcome": "failure",
            "initiator": {
                "typeURI": "service/security/account/user",
                "id": "7d6c5b4a39281706f5e4d3c2b1a09f8e",
                "name": "deploy-bot",
                "host": {"address": "10.0.12.7", "agent": "python-keystoneclient"},
                "credential": {"type": "password", "token": "gAAAAABm xxxxxxxx Qk9O"}
            },
            "target": {"typeURI": "service/security/account/user", "id": "4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d"},
            "observer": {"typeURI": "service/security", "id": "8e7d6c5b-4a39-4281-a7f6-e5d4c3b2a190"},
            "reason": {"reasonType": "HTTP", "reasonCode": "401"},
            "tags": ["correlation_id?value=0b9c8d7e-6f5a-4b3c-9d2e-1f0a9b8c7d6e"]
        }
    })
}

/// A Nova server reboot from keystonemiddleware: `*Id` style references and the short form.
pub fn nova_reboot() -> Value {
    json!({
        "typeURI": "http://schemas.dmtf.org/cloud/audit/1.0/event",
        "id": "openstack:3d5f7a9b-1c3e-4f5a-8b7c-9d1e3f5a7b9c",
        "eventType": "activity",
        "eventTime": "2024-05-14T17:10:11.000001+0000",
        "action": "start/reboot",
        "outcome": "pending",
        "initiatorId": "b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9",
        "target": {
            "typeURI": "service/compute/servers/server",
            "id": "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6",
            "name": "nova",
            "addresses": [{"name": "public", "url": "https://compute.example.net:8774/v2.1"}]
        },
        "observer": {"id": "target"},
        "requestPath": "/v2.1/servers/9f8e7d6c/action",
        "tags": ["correlation_id?value=5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9"]
    })
}

/// A Kubernetes audit event for `kubectl get pods -n storefront` (final stage).
pub fn k8s_list_pods() -> Value {
    json!({
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": "2b7c4f0e-9a1d-4e3b-8c5f-6d2a0e9b7c41",
        "stage": "ResponseComplete",
        "requestURI": "/api/v1/namespaces/storefront/pods?limit=500",
        "verb": "list",
        "user": {"username": "dana.ops@example.com", "uid": "IBMid-270001ABCD", "groups": ["system:authenticated"]},
        "sourceIPs": ["198.51.100.23"],
        "userAgent": "kubectl/v1.30.1 (linux/amd64) kubernetes/7b9b5a4",
        "objectRef": {"resource": "pods", "namespace": "storefront", "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "code": 200},
        "requestReceivedTimestamp": "2024-05-14T18:00:00.101234Z",
        "stageTimestamp": "2024-05-14T18:00:00.118765Z",
        "annotations": {"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": "RBAC: allowed by RoleBinding \"dev\""}
    })
}

/// Pretty JSON of a value (for building inputs).
pub fn text(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap()
}

/// One-line JSON of a value (for NDJSON inputs).
pub fn line(v: &Value) -> String {
    serde_json::to_string(v).unwrap()
}
