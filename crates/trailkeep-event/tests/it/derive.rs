//! Derived fields: id, severity, message, CRUD class.

use crate::support::*;
use serde_json::{Value, json};
use trailkeep_event::{CrudClass, crud_class};

fn bare(action: &str, outcome: &str, code: Option<Value>) -> Value {
    let mut ev = kms_rotate();
    let obj = ev.as_object_mut().unwrap();
    obj.remove("severity");
    obj.remove("message");
    obj.remove("reason");
    ev["action"] = json!(action);
    ev["outcome"] = json!(outcome);
    if let Some(code) = code {
        ev["reason"] = json!({"reasonCode": code});
    }
    ev
}

#[test]
fn severity_from_outcome_verb_and_reason_code() {
    let cases = [
        ("codeengine.application.create", "success", None, "normal"),
        ("codeengine.application.read", "success", None, "normal"),
        ("codeengine.application.update", "success", None, "warning"),
        ("codeengine.application.delete", "success", None, "critical"),
        ("kms.secrets.rotate", "success", None, "warning"),
        ("iam-identity.user.authenticate", "success", None, "normal"),
        (
            "codeengine.application.create",
            "failure",
            Some(json!(400)),
            "warning",
        ),
        (
            "codeengine.application.create",
            "failure",
            Some(json!(409)),
            "warning",
        ),
        (
            "codeengine.application.create",
            "failure",
            Some(json!(500)),
            "warning",
        ),
        (
            "codeengine.application.delete",
            "failure",
            Some(json!(404)),
            "warning",
        ),
        (
            "codeengine.application.create",
            "failure",
            Some(json!(401)),
            "critical",
        ),
        (
            "codeengine.application.read",
            "failure",
            Some(json!("403")),
            "critical",
        ),
        (
            "codeengine.application.create",
            "failure",
            Some(json!(503)),
            "critical",
        ),
        (
            "codeengine.application.create",
            "failure",
            Some(json!(507)),
            "critical",
        ),
        ("codeengine.application.create", "failure", None, "warning"),
        ("codeengine.application.create", "pending", None, "normal"),
    ];
    for (action, outcome, code, want) in cases {
        let n = stored(&bare(action, outcome, code.clone()));
        assert_eq!(
            n.event()["severity"],
            json!(want),
            "{action} {outcome} {code:?}"
        );
    }
}

#[test]
fn a_sent_severity_is_kept() {
    let mut ev = bare("codeengine.application.delete", "success", None);
    ev["severity"] = json!("normal");
    assert_eq!(stored(&ev).event()["severity"], json!("normal"));
}

#[test]
fn message_format() {
    let n = stored(&bare("kms.secrets.rotate", "success", None));
    assert_eq!(
        n.event()["message"],
        json!("kms: rotate secrets payments-root-key")
    );
    let n = stored(&bare("kms.secrets.delete", "failure", Some(json!(404))));
    assert_eq!(
        n.event()["message"],
        json!("kms: delete secrets payments-root-key -failure")
    );
    let n = stored(&bare("is.instance.instance.create", "success", None));
    assert_eq!(
        n.event()["message"],
        json!("is.instance: create instance payments-root-key")
    );
    let mut ev = bare("kms.secrets.list", "success", None);
    ev["target"].as_object_mut().unwrap().remove("name");
    assert_eq!(stored(&ev).event()["message"], json!("kms: list secrets"));
}

#[test]
fn pure_cadf_service_comes_from_the_target_or_observer_type() {
    let n = stored(&keystone_envelope()["payload"]);
    let info = n.action_info();
    assert_eq!(
        (
            info.service.as_str(),
            info.object_type.as_str(),
            info.verb.as_str()
        ),
        ("security", "user", "authenticate")
    );
    assert_eq!(n.crud(), CrudClass::Info);

    let n = stored(&nova_reboot());
    let info = n.action_info();
    assert_eq!(
        (
            info.service.as_str(),
            info.object_type.as_str(),
            info.verb.as_str()
        ),
        ("compute", "server", "start/reboot")
    );
    assert_eq!(n.crud(), CrudClass::Update);
    assert_eq!(
        n.event()["message"],
        json!("compute: start/reboot server nova")
    );

    let mut ks = keystone_envelope()["payload"].clone();
    ks["action"] = json!("created.project");
    ks["outcome"] = json!("success");
    ks["target"] = json!({"typeURI": "data/security/project", "id": "p-1", "name": "storefront"});
    let n = stored(&ks);
    assert_eq!(n.crud(), CrudClass::Create);
    assert_eq!(
        n.event()["message"],
        json!("security: created project storefront")
    );

    // Only the observer has a type.
    let mut ev = nova_reboot();
    ev["target"] = json!({"id": "x"});
    ev["observer"] = json!({"id": "o", "typeURI": "service/storage/object"});
    ev["action"] = json!("read/list");
    let n = stored(&ev);
    assert_eq!(n.action_info().service, "storage");
    assert_eq!(n.crud(), CrudClass::Read);
}

#[test]
fn id_is_derived_deterministically_when_absent() {
    let mut ev = registry_push_failure();
    ev.as_object_mut().unwrap().remove("id");
    let a = stored(&ev);
    let b = stored(&ev);
    assert_eq!(a.id(), b.id());
    assert_eq!(a.event()["id"], json!(a.id()));
    let id = a.id();
    assert_eq!(id.len(), 36);
    assert_eq!(&id[14..15], "8", "version 8 UUID: {id}");
    assert!(
        matches!(&id[19..20], "8" | "9" | "a" | "b"),
        "RFC 9562 variant: {id}"
    );
    let mut other = ev.clone();
    other["eventTime"] = json!("2024-05-14T11:02:07.5Z");
    assert_ne!(stored(&other).id(), id);
    // Empty and null ids count as absent.
    ev["id"] = json!("");
    assert_eq!(stored(&ev).id(), id);
    ev["id"] = json!(null);
    assert_eq!(stored(&ev).id(), id);
}

/// The Activity Tracker verb list (event-model-facts §2.1).
const AT_VERBS: &str = "activate add apply approve authorize bulkdelete create copy read update delete backup build \
    capture clear commit configure deploy disable enable end get import init inspect list monitor notify pull push \
    provision restore start stop undeploy receive reimport remove send set setkeyfordeletion unsetkeyfordeletion set-on \
    set-off authenticate renew revoke allow deny evaluate reset rotate ack-delete ack-restore ack-disable ack-enable \
    ack-expire ack-restore-over ack-rotate ack-sync edit publish write pause refresh resume failover split expire unwrap \
    wrap rewrap head reapprove export power-off reboot soft-reboot hard-reboot power-on rename rescue reload scale search \
    reject";

#[test]
fn crud_class_of_every_activity_tracker_verb() {
    use CrudClass::*;
    let table = [
        (
            Create,
            "create add copy import reimport init provision backup build capture push publish write split",
        ),
        (
            Read,
            "read get list head inspect pull search export monitor",
        ),
        (
            Update,
            "update activate apply approve reapprove authorize commit configure deploy disable enable edit set set-on set-off \
             setkeyfordeletion unsetkeyfordeletion start stop pause resume refresh reset rotate restore renew revoke rename \
             rescue reload scale reboot soft-reboot hard-reboot power-on power-off failover expire rewrap reject end clear",
        ),
        (Delete, "delete bulkdelete remove undeploy"),
        (
            Info,
            "authenticate allow deny evaluate notify send receive wrap unwrap ack-delete ack-restore ack-disable ack-enable \
             ack-expire ack-restore-over ack-rotate ack-sync unknown info",
        ),
    ];
    let mut seen = 0;
    for (class, verbs) in table {
        for verb in verbs.split_whitespace() {
            assert_eq!(crud_class(verb), class, "{verb}");
            seen += 1;
        }
    }
    assert!(seen >= AT_VERBS.split_whitespace().count(), "{seen}");
    // Every verb of the Activity Tracker verb list has a deliberate row in the table above.
    let all: Vec<&str> = table
        .iter()
        .flat_map(|(_, v)| v.split_whitespace())
        .collect();
    for verb in AT_VERBS.split_whitespace() {
        assert!(all.contains(&verb), "{verb} has no row");
    }
    assert_eq!(crud_class("READ/list"), Read);
    assert_eq!(crud_class("update/createImage"), Update);
    assert_eq!(crud_class("deleted"), Delete);
}
