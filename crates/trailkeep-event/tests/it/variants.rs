//! Every input variant real emitters send, normalised to the one stored form.

use crate::support::*;
use expect_test::expect;
use serde_json::json;

#[test]
fn codeengine_event_in_current_form() {
    check(
        &text(&codeengine_app_create()),
        expect![[r#"
        accepted [item 0, byte 0] (plain) account=4f2a9c1e7b3d4e5f8a6b0c2d1e3f5a7b location=eu-de crud=create service=codeengine object=application verb=create
        {
          "action": "codeengine.application.create",
          "correlationId": "c9e4a0d2-7b6f-4e3a-9c1d-5f8b2a4e6c0d",
          "dataEvent": false,
          "eventTime": "2024-05-14T09:28:35.15+00:00",
          "eventTimeOriginal": "2024-05-14T09:28:35.15+0000",
          "id": "7f1b3c2e-5d0a-4c8e-9b1f-2a6d4e8c0b13",
          "initiator": {
            "authnId": "IBMid-270001ABCD",
            "authnName": "dana.ops@example.com",
            "credential": {
              "type": "token"
            },
            "host": {
              "address": "198.51.100.23",
              "addressType": "IPv4",
              "agent": "ibmcloud-cli/2.24.0"
            },
            "id": "IBMid-270001ABCD",
            "name": "dana.ops@example.com",
            "typeURI": "service/security/account/user"
          },
          "logSourceCRN": "crn:v1:bluemix:public:codeengine:eu-de:a/4f2a9c1e7b3d4e5f8a6b0c2d1e3f5a7b:d3b0c442-98fc-4c1e-b3a4-6e2f1c9d8a7b::",
          "message": "Code Engine: create application web-frontend",
          "observer": {
            "name": "ActivityTracker"
          },
          "outcome": "success",
          "reason": {
            "reasonCode": 201,
            "reasonType": "Created"
          },
          "requestData": {
            "applicationName": "web-frontend",
            "env": [
              {
                "name": "LOG_LEVEL",
                "value": "info"
              },
              {
                "name": "DB_PASSWORD",
                "value": "s3cr3t!"
              }
            ],
            "image": "icr.io/storefront/web:1.8.2",
            "projectName": "storefront",
            "scaleMaxInstances": 10,
            "scaleMinInstances": 1
          },
          "responseData": {
            "applicationStatus": "deploying",
            "revision": "web-frontend-00001"
          },
          "saveServiceCopy": true,
          "severity": "normal",
          "target": {
            "id": "crn:v1:bluemix:public:codeengine:eu-de:a/4f2a9c1e7b3d4e5f8a6b0c2d1e3f5a7b:d3b0c442-98fc-4c1e-b3a4-6e2f1c9d8a7b:application:web-frontend",
            "name": "web-frontend",
            "resourceGroupId": "crn:v1:bluemix:public:resource-controller::a/4f2a9c1e7b3d4e5f8a6b0c2d1e3f5a7b::resource-group:9a8b7c6d5e4f",
            "typeURI": "codeengine/application"
          }
        }
    "#]],
    );
}

#[test]
fn registry_event_with_string_code_string_bool_stringified_data_and_null() {
    check(
        &text(&registry_push_failure()),
        expect![[r#"
        accepted [item 0, byte 0] (plain) account=0a1b2c3d4e5f60718293a4b5c6d7e8f9 location=us-south crud=create service=container-registry object=image verb=push
        {
          "action": "container-registry.image.push",
          "dataEvent": true,
          "eventTime": "2024-05-14T11:02:07.4+00:00",
          "eventTimeOriginal": "2024-05-14T11:02:07.4Z",
          "id": "b09adb00-62b0-8a39-bcc6-bddec280f180",
          "initiator": {
            "credential": {
              "type": "apikey"
            },
            "host": {
              "address": "203.0.113.7",
              "agent": "docker/24.0.7"
            },
            "id": "iam-ServiceId-12ab34cd-56ef-78ab-90cd-ef1234567890",
            "name": "ci-pipeline",
            "typeURI": "service/security/account/service-id"
          },
          "logSourceCRN": "crn:v1:bluemix:public:container-registry:us-south:a/0a1b2c3d4e5f60718293a4b5c6d7e8f9::image:",
          "message": "container-registry: push image us.icr.io/shop/cart:2.1 -failure",
          "outcome": "failure",
          "reason": {
            "reasonCode": 403,
            "reasonForFailure": "quota exceeded for namespace shop",
            "reasonType": "Forbidden"
          },
          "requestData": {
            "namespace": "shop",
            "reasonForFailure": "quota exceeded for namespace shop",
            "repository": "cart",
            "tag": "2.1"
          },
          "severity": "critical",
          "target": {
            "id": "crn:v1:bluemix:public:container-registry:us-south:a/0a1b2c3d4e5f60718293a4b5c6d7e8f9::image:us.icr.io/shop/cart:2.1",
            "name": "us.icr.io/shop/cart:2.1",
            "typeURI": "container-registry/image"
          }
        }
    "#]],
    );
}

#[test]
fn kms_event_without_crn_prefix_and_with_colon_offset() {
    check(
        &text(&kms_rotate()),
        expect![[r#"
        accepted [item 0, byte 0] (plain) account=9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b location=jp-tok crud=update service=kms object=secrets verb=rotate
        {
          "action": "kms.secrets.rotate",
          "dataEvent": false,
          "eventTime": "2024-05-14T12:22:01+00:00",
          "id": "kms-rot-0001",
          "initiator": {
            "credential": {
              "token": "hmac-sha256:1abba51b71c82615addf3dd0b59331b02339cb73a71c1b6e17135368590832e1",
              "type": "token"
            },
            "host": {
              "address": "192.0.2.44",
              "addressType": "IPv4"
            },
            "id": "IBMid-550002WXYZ",
            "name": "sec-admin@example.com",
            "typeURI": "service/security/account/user"
          },
          "logSourceCRN": "crn:v1:bluemix:public:kms:jp-tok:a/9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b:8f2e4a6c-1b3d-4e5f-a7b9-c0d2e4f6a8b0::",
          "message": "kms: rotate secrets payments-root-key",
          "outcome": "success",
          "reason": {
            "reasonCode": 200,
            "reasonType": "OK"
          },
          "requestData": {
            "keyId": "3c1e5a7b",
            "rotateWithNewMaterial": false
          },
          "responseData": {
            "keyVersion": {
              "id": "0c4e-2f"
            }
          },
          "severity": "warning",
          "target": {
            "id": "crn:v1:bluemix:public:kms:jp-tok:a/9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b:8f2e4a6c-1b3d-4e5f-a7b9-c0d2e4f6a8b0:key:3c1e5a7b",
            "name": "payments-root-key",
            "typeURI": "kms/secrets"
          }
        }
    "#]],
    );
}

#[test]
fn legacy_payload_wrapper_with_meta_and_non_utc_offset() {
    check(
        &text(&mlops_legacy_delete()),
        expect![[r#"
        accepted [item 0, byte 0] (legacy-payload) account=31415926535897932384626433832795 location=eu-gb crud=delete service=mlops object=training-run verb=delete
        {
          "action": "mlops.training-run.delete",
          "dataEvent": false,
          "eventTime": "2024-05-14T13:45:00.123456789+00:00",
          "eventTimeOriginal": "2024-05-14T15:45:00.123456789+0200",
          "id": "e621471c-f3f7-8c85-975f-8825384807c8",
          "initiator": {
            "id": "IBMid-660003MLOP",
            "name": "ana.ml@example.com",
            "typeURI": "service/security/account/user"
          },
          "logSourceCRN": "crn:v1:bluemix:public:mlops:eu-gb:a/31415926535897932384626433832795:a1b2c3d4::",
          "message": "mlops: delete training-run run-2024-05-14-01",
          "outcome": "success",
          "reason": {
            "reasonCode": 204
          },
          "requestData": {
            "keepArtifacts": false,
            "runId": "run-2024-05-14-01"
          },
          "responseData": {},
          "severity": "critical",
          "target": {
            "id": "crn:v1:bluemix:public:mlops:eu-gb:a/31415926535897932384626433832795:a1b2c3d4:training-run:run-2024-05-14-01",
            "name": "run-2024-05-14-01",
            "typeURI": "mlops/training-run"
          }
        }
    "#]],
    );
}

#[test]
fn openstack_envelope_with_pure_cadf_keystone_event() {
    check(
        &text(&keystone_envelope()),
        expect![[r#"
        accepted [item 0, byte 0] (openstack) account=acme location=global crud=info service=security object=user verb=authenticate
        {
          "action": "authenticate",
          "dataEvent": false,
          "eventTime": "2024-05-14T16:00:01.812540+00:00",
          "eventTimeOriginal": "2024-05-14T16:00:01.812540+0000",
          "eventType": "activity",
          "id": "f1e2d3c4-b5a6-4978-8695-a4b3c2d1e0f9",
          "initiator": {
            "credential": {
              "token": "hmac-sha256:164cc4fc3b6c59d40263ff3359e5a2bbd88ac78ce7b383c57b977933b35f414b",
              "type": "password"
            },
            "host": {
              "address": "10.0.12.7",
              "agent": "python-keystoneclient"
            },
            "id": "7d6c5b4a39281706f5e4d3c2b1a09f8e",
            "name": "deploy-bot",
            "typeURI": "service/security/account/user"
          },
          "message": "security: authenticate user -failure",
          "observer": {
            "id": "8e7d6c5b-4a39-4281-a7f6-e5d4c3b2a190",
            "typeURI": "service/security"
          },
          "outcome": "failure",
          "reason": {
            "reasonCode": 401,
            "reasonType": "HTTP"
          },
          "severity": "critical",
          "tags": [
            "correlation_id?value=0b9c8d7e-6f5a-4b3c-9d2e-1f0a9b8c7d6e"
          ],
          "target": {
            "id": "4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d",
            "typeURI": "service/security/account/user"
          },
          "typeURI": "http://schemas.dmtf.org/cloud/audit/1.0/event"
        }
    "#]],
    );
}

#[test]
fn pure_cadf_with_id_references_and_short_form() {
    check(
        &text(&nova_reboot()),
        expect![[r#"
        accepted [item 0, byte 0] (plain) account=acme location=global crud=update service=compute object=server verb=start/reboot
        {
          "action": "start/reboot",
          "dataEvent": false,
          "eventTime": "2024-05-14T17:10:11.000001+00:00",
          "eventTimeOriginal": "2024-05-14T17:10:11.000001+0000",
          "eventType": "activity",
          "id": "openstack:3d5f7a9b-1c3e-4f5a-8b7c-9d1e3f5a7b9c",
          "initiatorId": "b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9",
          "message": "compute: start/reboot server nova",
          "observer": {
            "id": "target"
          },
          "outcome": "pending",
          "requestPath": "/v2.1/servers/9f8e7d6c/action",
          "severity": "warning",
          "tags": [
            "correlation_id?value=5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9"
          ],
          "target": {
            "addresses": [
              {
                "name": "public",
                "url": "https://compute.example.net:8774/v2.1"
              }
            ],
            "id": "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6",
            "name": "nova",
            "typeURI": "service/compute/servers/server"
          },
          "typeURI": "http://schemas.dmtf.org/cloud/audit/1.0/event"
        }
    "#]],
    );
}

#[test]
fn event_time_forms_all_store_as_utc_with_colon_offset() {
    let cases = [
        (
            "2024-05-14T09:28:35.15+0000",
            "2024-05-14T09:28:35.15+00:00",
            true,
        ),
        (
            "2024-05-14T09:28:35.15+00:00",
            "2024-05-14T09:28:35.15+00:00",
            false,
        ),
        (
            "2024-05-14T09:28:35.15Z",
            "2024-05-14T09:28:35.15+00:00",
            true,
        ),
        ("2024-05-14T09:28:35Z", "2024-05-14T09:28:35+00:00", true),
        (
            "2024-05-14T09:28:35.123456789Z",
            "2024-05-14T09:28:35.123456789+00:00",
            true,
        ),
        (
            "2024-05-14T09:28:35.1+05:30",
            "2024-05-14T03:58:35.1+00:00",
            true,
        ),
        (
            "2024-05-14t09:28:35.100-0100",
            "2024-05-14T10:28:35.100+00:00",
            true,
        ),
        (
            "2024-01-01T00:30:00+01:00",
            "2023-12-31T23:30:00+00:00",
            true,
        ),
    ];
    for (sent, want, keeps_original) in cases {
        let mut ev = kms_rotate();
        ev["eventTime"] = json!(sent);
        let n = stored(&ev);
        assert_eq!(n.event()["eventTime"], json!(want), "{sent}");
        let original = n.event().get("eventTimeOriginal");
        assert_eq!(original.is_some(), keeps_original, "{sent}");
        if keeps_original {
            assert_eq!(original.unwrap(), &json!(sent));
        }
    }
}

#[test]
fn reason_code_forms() {
    let cases = [
        (json!(403), json!(403)),
        (json!("403"), json!(403)),
        (json!(" 409 "), json!(409)),
        (json!(500.0), json!(500)),
        (json!("E_TIMEOUT"), json!("E_TIMEOUT")),
        (json!("4.5"), json!("4.5")),
        (json!("99999999999999999999"), json!("99999999999999999999")),
    ];
    for (sent, want) in cases {
        let mut ev = kms_rotate();
        ev["reason"]["reasonCode"] = sent.clone();
        assert_eq!(stored(&ev).event()["reason"]["reasonCode"], want, "{sent}");
    }
}

#[test]
fn data_event_forms() {
    let cases = [
        (Some(json!(true)), true),
        (Some(json!("true")), true),
        (Some(json!("FALSE")), false),
        (Some(json!(" True ")), true),
        (Some(json!(1)), true),
        (Some(json!(0)), false),
        (Some(json!(null)), false),
        (None, false),
    ];
    for (sent, want) in cases {
        let mut ev = kms_rotate();
        match &sent {
            Some(v) => ev["dataEvent"] = v.clone(),
            None => {
                ev.as_object_mut().unwrap().remove("dataEvent");
            }
        }
        assert_eq!(stored(&ev).event()["dataEvent"], json!(want), "{sent:?}");
    }
}

#[test]
fn request_and_response_data_forms() {
    let cases = [
        (json!({"a": 1}), Some(json!({"a": 1}))),
        (
            json!("{\"a\": 1, \"b\": {\"c\": [1, 2]}}"),
            Some(json!({"a": 1, "b": {"c": [1, 2]}})),
        ),
        (json!("  {\"a\": 1}"), Some(json!({"a": 1}))),
        (json!(null), None),
        (json!("not json at all"), Some(json!("not json at all"))),
        (json!("{broken"), Some(json!("{broken"))),
        (json!("[1,2]"), Some(json!("[1,2]"))),
        (json!([1, 2]), Some(json!([1, 2]))),
    ];
    for (sent, want) in cases {
        for field in ["requestData", "responseData"] {
            let mut ev = kms_rotate();
            ev[field] = sent.clone();
            assert_eq!(
                stored(&ev).event().get(field),
                want.as_ref(),
                "{field} {sent}"
            );
        }
    }
}

#[test]
fn reason_for_failure_under_request_data_is_copied_to_reason() {
    let n = stored(&registry_push_failure());
    assert_eq!(
        n.event()["reason"]["reasonForFailure"],
        json!("quota exceeded for namespace shop")
    );
    assert_eq!(
        n.event()["requestData"]["reasonForFailure"],
        json!("quota exceeded for namespace shop")
    );

    // An explicit reason.reasonForFailure wins.
    let mut ev = registry_push_failure();
    ev["reason"]["reasonForFailure"] = json!("namespace quota");
    assert_eq!(
        stored(&ev).event()["reason"]["reasonForFailure"],
        json!("namespace quota")
    );

    // No reason object at all: one is made.
    let mut ev = kms_rotate();
    ev.as_object_mut().unwrap().remove("reason");
    ev["requestData"]["reasonForFailure"] = json!("disk full");
    assert_eq!(
        stored(&ev).event()["reason"],
        json!({"reasonForFailure": "disk full"})
    );
}

#[test]
fn outcome_and_severity_case_is_normalised() {
    let mut ev = kms_rotate();
    ev["outcome"] = json!("Success");
    ev["severity"] = json!("WARNING");
    let n = stored(&ev);
    assert_eq!(n.event()["outcome"], json!("success"));
    assert_eq!(n.event()["severity"], json!("warning"));

    // A non-normative CADF severity is kept as sent.
    ev["severity"] = json!("high");
    assert_eq!(stored(&ev).event()["severity"], json!("high"));
}

#[test]
fn unknown_fields_are_kept() {
    let mut ev = codeengine_app_create();
    ev["compliance"] = json!({"isCompliant": true, "complianceTraceId": "ct-1"});
    ev["target"]["alias"] = json!("frontend");
    ev["x-custom"] = json!([1, "two", null]);
    let n = stored(&ev);
    assert_eq!(n.event()["compliance"], ev["compliance"]);
    assert_eq!(n.event()["target"]["alias"], json!("frontend"));
    assert_eq!(n.event()["x-custom"], json!([1, "two", null]));
}

#[test]
fn numbers_are_stored_exactly() {
    let mut ev = kms_rotate();
    ev["requestData"] = json!({
        "small": 42, "negative": -7, "float": 0.5, "integral_float": 3.0, "neg_zero": -0.0,
        "big": 12345678901234567890u64, "big_negative": -9007199254740993i64, "huge": 1e300
    });
    let n = stored(&ev);
    assert_eq!(
        n.event()["requestData"],
        json!({
            "small": 42, "negative": -7, "float": 0.5, "integral_float": 3, "neg_zero": 0,
            "big": "12345678901234567890", "big_negative": "-9007199254740993", "huge": 1e300
        })
    );
}

#[test]
fn id_number_and_correlation_id_number_become_strings() {
    let mut ev = kms_rotate();
    ev["id"] = json!(12345);
    ev["correlationId"] = json!(777);
    let n = stored(&ev);
    assert_eq!(n.id(), "12345");
    assert_eq!(n.event()["id"], json!("12345"));
    assert_eq!(n.event()["correlationId"], json!("777"));
}
