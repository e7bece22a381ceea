use serde_json::Value;

use crate::{text, trailkeep};

const REGISTRY_PUSH: &str = r#"{"eventTime":"2026-11-20T14:02:11.482913+0000","action":"container-registry.image.push","outcome":"success","initiator":{"id":"iam-ServiceId-5a1e2f3b","name":"ci-pipeline","typeURI":"service/security/account/serviceid","credential":{"type":"apikey"},"host":{"address":"198.51.100.23"}},"target":{"id":"crn:v1:bluemix:public:container-registry:us-south:a/acme123::image:shop/web:v1.4.2","name":"shop/web:v1.4.2","typeURI":"container-registry/image"},"reason":{"reasonCode":"200","reasonType":"OK"},"dataEvent":"true","logSourceCRN":"v1:bluemix:public:container-registry:us-south:a/acme123:::","correlationId":"7f1c2a9e-0b4d-4e8f-9a61-3c5d7e9f1b2a"}"#;

const KMS_FAILURE: &str = r#"{"eventTime":"2026-11-20T14:05:00Z","action":"kms.secrets.unwrap","outcome":"failure","initiator":{"id":"IBMid-1","name":"ada@acme.example"},"target":{"id":"crn:v1:bluemix:public:kms:eu-de:a/acme123:inst-1:key:k-77","name":"payroll-root-key"},"requestData":"{\"reasonForFailure\":\"The key is disabled\"}","reason":{"reasonCode":409},"logSourceCRN":"crn:v1:bluemix:public:kms:eu-de:a/acme123:inst-1::"}"#;

#[test]
fn ndjson_events_come_out_canonical_one_per_line() {
    let input = format!("{REGISTRY_PUSH}\n{KMS_FAILURE}\n");
    let out = trailkeep(&["event", "check"], input.as_bytes());
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(lines.len(), 2);
    let push: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(push["eventTime"], "2026-11-20T14:02:11.482913+00:00");
    assert_eq!(push["reason"]["reasonCode"], 200);
    assert_eq!(push["dataEvent"], true);
    assert_eq!(
        push["logSourceCRN"],
        "crn:v1:bluemix:public:container-registry:us-south:a/acme123:::"
    );
    let kms: Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(kms["reason"]["reasonForFailure"], "The key is disabled");
    assert_eq!(kms["severity"], "warning");
    assert!(text(&out.stderr).contains("2 item(s): 2 accepted, 0 rejected"));

    // Canonical output is a fixed point: checking it again gives the same bytes.
    let again = trailkeep(&["event", "check", "-"], &out.stdout);
    assert!(again.status.success());
    assert_eq!(again.stdout, out.stdout);
}

#[test]
fn rejected_events_name_every_path_and_exit_1_without_losing_good_ones() {
    let input = format!("{REGISTRY_PUSH}\n{{\"action\":\"kms\",\"outcome\":\"maybe\"}}\n");
    let out = trailkeep(&["event", "check", "--format", "json"], input.as_bytes());
    assert_eq!(out.status.code(), Some(1));
    let results: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results[0]["status"], "accepted");
    assert_eq!(results[0]["account"], "acme123");
    assert_eq!(results[0]["location"], "us-south");
    assert_eq!(results[1]["status"], "rejected");
    let paths: Vec<&str> = results[1]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    for p in ["action", "outcome", "eventTime", "initiator", "target"] {
        assert!(paths.contains(&p), "{p} missing from {paths:?}");
    }
    let stderr = text(&out.stderr);
    assert!(stderr.contains("rejected: item 1, line 2"), "{stderr}");
}

#[test]
fn a_kubernetes_event_list_is_recognised_by_shape() {
    let list = r#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[
      {"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"4d2f-aa","stage":"ResponseComplete",
       "requestURI":"/api/v1/namespaces/proj-7/pods","verb":"list","user":{"username":"ada@acme.example","uid":"IBMid-1"},
       "sourceIPs":["203.0.113.7"],"userAgent":"kubectl/v1.30.2","objectRef":{"resource":"pods","namespace":"proj-7","apiVersion":"v1"},
       "responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":"2026-11-20T10:00:00.000001Z","stageTimestamp":"2026-11-20T10:00:00.004021Z"}]}"#;
    let out = trailkeep(
        &["event", "check", "--kubernetes-service", "codeengine"],
        list.as_bytes(),
    );
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let event: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(event["action"], "codeengine.pods.list");
    assert_eq!(event["correlationId"], "4d2f-aa");
}

#[test]
fn unreadable_input_is_exit_2_with_a_message() {
    let out = trailkeep(&["event", "check", "/nonexistent/events.json"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/nonexistent/events.json"));
    let out = trailkeep(&["event", "check"], b"");
    assert_eq!(out.status.code(), Some(2), "an empty input is an error");
}
