//! Kubernetes audit.k8s.io/v1 → CADF.

use crate::support::*;
use expect_test::expect;
use serde_json::{Value, json};
use trailkeep_event::Policy;

fn codeengine() -> Policy {
    Policy {
        k8s_service_prefix: "codeengine".into(),
        ..Policy::default()
    }
}

fn get_pod() -> Value {
    json!({
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "RequestResponse",
        "auditID": "8d3e1f5a-2b4c-4d6e-8f0a-1b3c5d7e9f21",
        "stage": "ResponseComplete",
        "requestURI": "/api/v1/namespaces/storefront/pods/web-frontend-00001-deployment-7c9d",
        "verb": "get",
        "user": {"username": "system:serviceaccount:storefront:deployer", "uid": "0b1c2d3e-4f5a-6b7c-8d9e-0f1a2b3c4d5e", "groups": ["system:serviceaccounts"]},
        "sourceIPs": ["2001:db8::17", "10.1.2.3"],
        "userAgent": "kubectl/v1.30.1",
        "objectRef": {"resource": "pods", "namespace": "storefront", "name": "web-frontend-00001-deployment-7c9d", "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "status": "Failure", "reason": "Forbidden", "code": 403,
            "message": "pods \"web-frontend-00001-deployment-7c9d\" is forbidden: User cannot get resource"},
        "requestReceivedTimestamp": "2024-05-14T18:05:00.000100Z",
        "stageTimestamp": "2024-05-14T18:05:00.002200Z"
    })
}

#[test]
fn kubectl_get_pods_becomes_codeengine_pods_list() {
    check_with(
        &line(&k8s_list_pods()),
        &codeengine(),
        expect![[r#"
        accepted [item 0, byte 0] (kubernetes) account=acme location=global crud=read service=codeengine object=pods verb=list
        {
          "action": "codeengine.pods.list",
          "correlationId": "2b7c4f0e-9a1d-4e3b-8c5f-6d2a0e9b7c41",
          "dataEvent": false,
          "eventTime": "2024-05-14T18:00:00.118765+00:00",
          "eventTimeOriginal": "2024-05-14T18:00:00.118765Z",
          "id": "2b7c4f0e-9a1d-4e3b-8c5f-6d2a0e9b7c41",
          "initiator": {
            "groups": [
              "system:authenticated"
            ],
            "host": {
              "address": "198.51.100.23",
              "addressType": "IPv4",
              "agent": "kubectl/v1.30.1 (linux/amd64) kubernetes/7b9b5a4"
            },
            "id": "IBMid-270001ABCD",
            "name": "dana.ops@example.com",
            "typeURI": "service/security/account/user"
          },
          "kubernetes": {
            "annotations": {
              "authorization.k8s.io/decision": "allow",
              "authorization.k8s.io/reason": "RBAC: allowed by RoleBinding \"dev\""
            },
            "level": "Metadata",
            "requestURI": "/api/v1/namespaces/storefront/pods?limit=500",
            "sourceIPs": [
              "198.51.100.23"
            ],
            "stage": "ResponseComplete",
            "verb": "list"
          },
          "message": "codeengine: list pods storefront",
          "observer": {
            "name": "kube-apiserver"
          },
          "outcome": "success",
          "reason": {
            "reasonCode": 200,
            "reasonType": "OK"
          },
          "severity": "normal",
          "target": {
            "apiVersion": "v1",
            "id": "namespaces/storefront/pods",
            "name": "storefront",
            "namespace": "storefront",
            "typeURI": "codeengine/pods"
          }
        }
    "#]],
    );
}

#[test]
fn kubectl_get_pod_forbidden_becomes_codeengine_pods_read_failure() {
    check_with(
        &line(&get_pod()),
        &codeengine(),
        expect![[r#"
        accepted [item 0, byte 0] (kubernetes) account=acme location=global crud=read service=codeengine object=pods verb=read
        {
          "action": "codeengine.pods.read",
          "correlationId": "8d3e1f5a-2b4c-4d6e-8f0a-1b3c5d7e9f21",
          "dataEvent": false,
          "eventTime": "2024-05-14T18:05:00.002200+00:00",
          "eventTimeOriginal": "2024-05-14T18:05:00.002200Z",
          "id": "8d3e1f5a-2b4c-4d6e-8f0a-1b3c5d7e9f21",
          "initiator": {
            "groups": [
              "system:serviceaccounts"
            ],
            "host": {
              "address": "2001:db8::17",
              "addressType": "IPv6",
              "agent": "kubectl/v1.30.1"
            },
            "id": "0b1c2d3e-4f5a-6b7c-8d9e-0f1a2b3c4d5e",
            "name": "system:serviceaccount:storefront:deployer",
            "typeURI": "service/security/account/serviceid"
          },
          "kubernetes": {
            "level": "RequestResponse",
            "requestURI": "/api/v1/namespaces/storefront/pods/web-frontend-00001-deployment-7c9d",
            "sourceIPs": [
              "2001:db8::17",
              "10.1.2.3"
            ],
            "stage": "ResponseComplete",
            "verb": "get"
          },
          "message": "codeengine: read pods web-frontend-00001-deployment-7c9d -failure",
          "observer": {
            "name": "kube-apiserver"
          },
          "outcome": "failure",
          "reason": {
            "reasonCode": 403,
            "reasonForFailure": "pods \"web-frontend-00001-deployment-7c9d\" is forbidden: User cannot get resource",
            "reasonType": "Forbidden"
          },
          "severity": "critical",
          "target": {
            "apiVersion": "v1",
            "id": "namespaces/storefront/pods/web-frontend-00001-deployment-7c9d",
            "name": "web-frontend-00001-deployment-7c9d",
            "namespace": "storefront",
            "typeURI": "codeengine/pods"
          }
        }
    "#]],
    );
}

#[test]
fn event_list_from_the_webhook_keeps_only_final_stages() {
    let mut received = get_pod();
    received["stage"] = json!("RequestReceived");
    received.as_object_mut().unwrap().remove("responseStatus");
    let mut create = json!({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Request",
        "auditID": "5f7a9b1c-3d5e-4f7a-9b1c-3d5e7f9a1b3c", "stage": "ResponseComplete",
        "requestURI": "/apis/apps/v1/namespaces/storefront/deployments", "verb": "create",
        "user": {"username": "dana.ops@example.com"},
        "sourceIPs": ["198.51.100.23"],
        "objectRef": {"resource": "deployments", "namespace": "storefront", "name": "cart", "apiGroup": "apps", "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "code": 201},
        "requestObject": {"kind": "Deployment", "apiVersion": "apps/v1", "metadata": {"name": "cart"}, "spec": {"replicas": 2}},
        "requestReceivedTimestamp": "2024-05-14T18:06:00.000100Z",
        "stageTimestamp": "2024-05-14T18:06:00.052200Z"
    });
    create["annotations"] = json!({"authorization.k8s.io/decision": "allow"});
    let list = json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}, "items": [received, get_pod(), create]});
    let out = render_with(&text(&list), &codeengine());
    let heads: Vec<&str> = out
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.starts_with('{') && !l.starts_with('}'))
        .collect();
    assert_eq!(
        heads,
        [
            "skipped [item 0, byte 0] (kubernetes): Kubernetes stage RequestReceived of request 8d3e1f5a-2b4c-4d6e-8f0a-1b3c5d7e9f21: only the final stage is stored",
            "accepted [item 1, byte 0] (kubernetes) account=acme location=global crud=read service=codeengine object=pods verb=read",
            "accepted [item 2, byte 0] (kubernetes) account=acme location=global crud=create service=codeengine object=deployments verb=create",
        ]
    );
    assert!(
        out.contains("\"id\": \"apps/namespaces/storefront/deployments/cart\""),
        "{out}"
    );
    assert!(out.contains("\"replicas\": 2"), "{out}");
}

#[test]
fn verbs_subresources_and_non_resource_requests() {
    let cases = [
        ("create", Some("exec"), "kubernetes.pods-exec.create"),
        ("patch", None, "kubernetes.pods.update"),
        ("update", None, "kubernetes.pods.update"),
        ("delete", None, "kubernetes.pods.delete"),
        ("deletecollection", None, "kubernetes.pods.bulkdelete"),
        ("watch", None, "kubernetes.pods.watch"),
    ];
    for (verb, sub, want) in cases {
        let mut ev = get_pod();
        ev["verb"] = json!(verb);
        if let Some(sub) = sub {
            ev["objectRef"]["subresource"] = json!(sub);
        }
        let n = stored_k8s(&ev, &Policy::default());
        assert_eq!(n.event()["action"], json!(want));
    }
    let healthz = json!({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": "a1", "stage": "ResponseComplete",
        "requestURI": "/healthz?verbose", "verb": "get", "user": {"username": "system:anonymous"},
        "responseStatus": {"code": 200}, "stageTimestamp": "2024-05-14T18:07:00Z"
    });
    let n = stored_k8s(&healthz, &Policy::default());
    assert_eq!(n.event()["action"], json!("kubernetes.nonresource.read"));
    assert_eq!(n.event()["target"]["id"], json!("/healthz"));

    // No objectRef on a list: the resource comes from the request URI.
    let mut list = k8s_list_pods();
    list.as_object_mut().unwrap().remove("objectRef");
    let n = stored_k8s(&list, &Policy::default());
    assert_eq!(n.event()["action"], json!("kubernetes.pods.list"));
    assert_eq!(
        n.event()["target"]["id"],
        json!("namespaces/storefront/pods")
    );
}

#[test]
fn panic_stage_without_status_is_a_failure() {
    let mut ev = get_pod();
    ev["stage"] = json!("Panic");
    ev.as_object_mut().unwrap().remove("responseStatus");
    let n = stored_k8s(&ev, &Policy::default());
    assert_eq!(n.event()["outcome"], json!("failure"));
    assert_eq!(n.event()["reason"]["reasonCode"], json!(500));
}

#[test]
fn broken_kubernetes_events_name_kubernetes_paths() {
    let ev = json!({"kind": "Event", "apiVersion": "audit.k8s.io/v1", "stage": "ResponseComplete", "objectRef": "pods"});
    check(
        &line(&ev),
        expect![[r#"
        rejected [item 0, byte 0] (kubernetes)
          "auditID": is required (a non-empty string)
          "verb": is required (a non-empty string)
          "stageTimestamp": is required (or requestReceivedTimestamp)
          "user.username": is required (a non-empty string)
          "objectRef": must be an object, found a string
    "#]],
    );
}

#[test]
fn mapped_events_round_trip_as_plain_events() {
    let n = stored_k8s(&get_pod(), &codeengine());
    let again: Value = serde_json::from_slice(n.canonical_bytes()).unwrap();
    assert_eq!(
        stored_with(&again, &codeengine()).canonical_bytes(),
        n.canonical_bytes()
    );
}

fn stored_k8s(v: &Value, policy: &Policy) -> trailkeep_event::NormalizedEvent {
    let keys = test_key;
    let ctx = trailkeep_event::Context::new(policy, "acme").with_keys(&keys);
    let raw = trailkeep_event::RawEvent {
        value: v.clone(),
        shape: trailkeep_event::Shape::Kubernetes,
    };
    trailkeep_event::normalize(raw, &ctx).unwrap_or_else(|e| panic!("{e:?}"))
}
