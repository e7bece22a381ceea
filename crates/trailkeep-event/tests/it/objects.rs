//! Object history (issue #11): classes, old → new values, descriptions, sensitive attributes,
//! scopes and tombstones, over event sequences for the object types of DESIGN §1.

use std::collections::HashMap;

use serde_json::{Value, json};
use trailkeep_event::object::{ancestors, class_of, is_sensitive, scopes};
use trailkeep_event::{Context, Derived, ItemResult, ObjectState, Policy, derive, process_input};

const PROJECT: &str = "crn:v1:bluemix:public:mlops:eu-de:a/acme:proj-1::";

fn crn(rest: &str) -> String {
    format!("crn:v1:bluemix:public:mlops:eu-de:a/acme:proj-1:{rest}")
}

/// Keeps object states like the server's store does, in log order.
#[derive(Default)]
struct Objects {
    states: HashMap<String, ObjectState>,
}

impl Objects {
    fn apply(&mut self, event: &Value) -> Derived {
        let id = trailkeep_event::object::target_id(event).map(str::to_owned);
        let prior = id.as_ref().and_then(|i| self.states.get(i)).cloned();
        let parent = id
            .as_ref()
            .and_then(|i| ancestors(i).into_iter().next())
            .and_then(|p| self.states.get(&p))
            .cloned();
        let d = derive(event, prior.as_ref(), parent.as_ref());
        if let (Some(id), Some(state)) = (id, d.state) {
            self.states.insert(id, state);
        }
        d.derived
    }

    fn state(&self, id: &str) -> &ObjectState {
        &self.states[id]
    }
}

fn ev(action: &str, id: &str, name: &str, request: Value) -> Value {
    let mut e = json!({
        "action": action,
        "eventTime": "2026-11-21T10:00:00+00:00",
        "outcome": "success",
        "initiator": {"id": "IBMid-1", "name": "ada@example.com"},
        "target": {"id": id, "name": name},
        "logSourceCRN": "crn:v1:bluemix:public:mlops:eu-de:a/acme:proj-1::",
    });
    if !request.is_null() {
        e["requestData"] = request;
    }
    e
}

fn failed(mut e: Value) -> Value {
    e["outcome"] = json!("failure");
    e
}

#[test]
fn classes_follow_the_verb() {
    for (action, class) in [
        ("mlops.deployment.create", "create"),
        ("mlops.deployment.update", "update"),
        ("mlops.deployment.delete", "delete"),
        ("mlops.deployment.get", "read"),
        ("mlops.deployment.list", "read"),
        ("mlops.file.upload", "info"),
        ("mlops.file.download", "info"),
        ("mlops.service-user-key.rotate", "update"),
        ("authenticate", "info"),
        ("read/list", "read"),
    ] {
        let e = ev(action, &crn("deployment:d"), "d", Value::Null);
        assert_eq!(class_of(&e).as_str(), class, "{action}");
        assert_eq!(derive(&e, None, None).derived.class, class, "{action}");
    }
}

#[test]
fn scopes_come_from_the_crn_resource_path_and_paths() {
    let version = crn("deployment:dep-1/versions/v1");
    assert_eq!(
        ancestors(&version),
        vec![crn("deployment:dep-1"), PROJECT.to_string()]
    );
    let env = crn("deployment:dep-1/versions/v1/environment-variables/ev-1");
    assert_eq!(
        ancestors(&env),
        vec![
            version.clone(),
            crn("deployment:dep-1"),
            PROJECT.to_string()
        ]
    );
    assert_eq!(ancestors(PROJECT), Vec::<String>::new());
    assert_eq!(
        ancestors(&crn("pipeline:pipe-1")),
        vec![PROJECT.to_string()]
    );
    assert_eq!(
        ancestors("projects/p/deployments/d/versions/v"),
        vec!["projects/p/deployments/d", "projects/p"]
    );
    assert_eq!(ancestors("namespaces/ns/pods/web-1"), vec!["namespaces/ns"]);
    assert_eq!(ancestors("plain-id"), Vec::<String>::new());
    assert_eq!(ancestors("https://example.com/a/b/c"), Vec::<String>::new());
    let e = ev("mlops.version.update", &version, "v1", Value::Null);
    assert_eq!(
        scopes(&e),
        vec![version, crn("deployment:dep-1"), PROJECT.to_string()]
    );
}

#[test]
fn project_application_deployment_version_lifecycle() {
    let mut o = Objects::default();
    let d = o.apply(&ev(
        "mlops.project.create",
        PROJECT,
        "project-1",
        json!({"accountId": "acme"}),
    ));
    assert_eq!(d.description, "Created project 'project-1'");
    let app = crn("application:app-1");
    let d = o.apply(&ev(
        "mlops.application.create",
        &app,
        "web",
        json!({"image": "web:1", "port": 8080}),
    ));
    assert_eq!(
        d.description,
        "Created application 'web' in project 'project-1'"
    );
    // A create's initial attributes are its requestData; changes list what later events change.
    assert!(d.changes.is_empty());
    assert_eq!(o.state(&app).attributes["port"], json!(8080));

    // Only the new value is sent: the old one comes from the last known state.
    let d = o.apply(&ev(
        "mlops.application.update",
        &app,
        "web",
        json!({"port": 9090, "requestId": "r-1"}),
    ));
    assert_eq!(
        d.description,
        "Updated application 'web' in project 'project-1': port changed from '8080' to '9090'"
    );
    assert_eq!(d.changes[0].old, Some(json!(8080)));
    assert_eq!(d.changes[0].new, Some(json!(9090)));

    let dep = crn("deployment:dep-1");
    o.apply(&ev(
        "mlops.deployment.create",
        &dep,
        "deployment-1",
        json!({"memory": "256Mi"}),
    ));
    let version = crn("deployment:dep-1/versions/v1");
    let d = o.apply(&ev(
        "mlops.version.create",
        &version,
        "v1",
        json!({"language": "python3.12"}),
    ));
    assert_eq!(
        d.description,
        "Created version 'v1' for deployment 'deployment-1'"
    );
    // initialValue/newValue with updateType.
    let d = o.apply(&ev(
        "mlops.version.update",
        &version,
        "v1",
        json!({"updateType": "language", "initialValue": "python3.12", "newValue": "python3.13"}),
    ));
    assert_eq!(
        d.description,
        "Updated version 'v1' for deployment 'deployment-1': language changed from 'python3.12' to 'python3.13'"
    );
    // An update list, with an unchanged value left out.
    let d = o.apply(&ev(
        "mlops.deployment.update",
        &dep,
        "deployment-1",
        json!({"update": [
            {"updateType": "memory", "initialValue": "256Mi", "newValue": "512Mi"},
            {"updateType": "replicas", "newValue": 3},
            {"updateType": "memory2", "initialValue": "x", "newValue": "x"}
        ]}),
    ));
    assert_eq!(
        d.description,
        "Updated deployment 'deployment-1' in project 'project-1': memory changed from '256Mi' to '512Mi', replicas changed to '3'"
    );
    assert_eq!(o.state(&dep).attributes["replicas"], json!(3));
    assert_eq!(o.state(&dep).masked().parent.as_deref(), Some(PROJECT));
    // Reads are described, change nothing.
    let d = o.apply(&ev(
        "mlops.deployment.get",
        &dep,
        "deployment-1",
        Value::Null,
    ));
    assert_eq!(
        (d.class.as_str(), d.description.as_str()),
        (
            "read",
            "Read deployment 'deployment-1' in project 'project-1'"
        )
    );
    assert!(d.changes.is_empty());
}

#[test]
fn pipeline_objects_are_described_like_ubiops() {
    let mut o = Objects::default();
    let pipe = crn("pipeline:pipe-1");
    o.apply(&ev("mlops.pipeline.create", &pipe, "pipeline-1", json!({})));
    let obj = crn("pipeline:pipe-1/objects/obj-1");
    o.apply(&ev(
        "mlops.pipeline-object.create",
        &obj,
        "deployment-1",
        json!({"reference": "dep-1"}),
    ));
    // A rename sent only through target.name and requestData.name.
    let d = o.apply(&ev(
        "mlops.pipeline-object.update",
        &obj,
        "deployment-object",
        json!({"name": "deployment-object"}),
    ));
    assert_eq!(
        d.description,
        "Updated pipeline object 'deployment-object' for pipeline 'pipeline-1': name changed from 'deployment-1' to 'deployment-object'"
    );
    assert_eq!(o.state(&obj).name.as_deref(), Some("deployment-object"));
    // A rename sent through target.name alone.
    let d = o.apply(&ev(
        "mlops.pipeline-object.update",
        &obj,
        "object-2",
        Value::Null,
    ));
    assert_eq!(
        d.description,
        "Updated pipeline object 'object-2' for pipeline 'pipeline-1': name changed from 'deployment-object' to 'object-2'"
    );
}

#[test]
fn sensitive_values_are_never_shown() {
    let mut o = Objects::default();
    let dep = crn("deployment:dep-1");
    o.apply(&ev(
        "mlops.deployment.create",
        &dep,
        "deployment-1",
        json!({}),
    ));
    let env = crn("deployment:dep-1/environment-variables/ev-1");
    let d = o.apply(&ev(
        "mlops.environment-variable.create",
        &env,
        "DB_URL",
        json!({"value": "postgres://u:p@db/x", "secret": false}),
    ));
    assert!(!d.description.contains("postgres"), "{}", d.description);
    let d = o.apply(&ev(
        "mlops.environment-variable.update",
        &env,
        "DB_URL",
        json!({"value": "postgres://u:q@db/y"}),
    ));
    assert_eq!(
        d.description,
        "Updated environment variable 'DB_URL' for deployment 'deployment-1': value changed"
    );
    assert!(d.changes[0].sensitive && d.changes[0].old.is_none() && d.changes[0].new.is_none());
    let text = serde_json::to_string(&d).unwrap();
    assert!(!text.contains("postgres"), "{text}");
    // The state keeps only a digest of the value, enough for the next diff; the masked view
    // says it is sensitive.
    assert!(
        !serde_json::to_string(o.state(&env))
            .unwrap()
            .contains("postgres")
    );
    assert_eq!(
        o.state(&env).masked().attributes["value"],
        json!(trailkeep_event::object::SENSITIVE_VALUE)
    );

    // Labels and descriptions of any object; request-schedule data; service-user tokens.
    let dep_d = o.apply(&ev(
        "mlops.deployment.update",
        &dep,
        "deployment-1",
        json!({"labels": {"team": "a"}, "description": "secret plans", "memory": "1Gi"}),
    ));
    assert_eq!(
        dep_d.description,
        "Updated deployment 'deployment-1' in instance 'proj-1': description changed, labels changed, memory changed to '1Gi'"
    );
    let sched = crn("request-schedule:sched-1");
    o.apply(&ev(
        "mlops.request-schedule.create",
        &sched,
        "nightly",
        json!({"requestData": {"input": 1}, "schedule": "0 2 * * *"}),
    ));
    let d = o.apply(&ev(
        "mlops.request-schedule.update",
        &sched,
        "nightly",
        json!({"requestData": {"input": 2}, "schedule": "0 3 * * *"}),
    ));
    assert_eq!(
        d.description,
        "Updated request schedule 'nightly' in instance 'proj-1': requestData changed, schedule changed from '0 2 * * *' to '0 3 * * *'"
    );
    let su = crn("service-user:su-1");
    o.apply(&ev(
        "mlops.service-user.create",
        &su,
        "ci-bot",
        json!({"token": "abc"}),
    ));
    let key = crn("service-user:su-1/keys/key-1");
    o.apply(&ev(
        "mlops.key.create",
        &key,
        "key-1",
        json!({"expiry": "2027-01-01"}),
    ));
    let d = o.apply(&ev(
        "mlops.key.update",
        &key,
        "key-1",
        json!({"update": [{"updateType": "apiKey", "initialValue": "k1", "newValue": "k2"}]}),
    ));
    assert_eq!(
        d.description,
        "Updated key 'key-1' for service user 'ci-bot': apiKey changed"
    );
    assert!(!serde_json::to_string(&d).unwrap().contains("k2"));
    assert!(is_sensitive("service-user", "token", [None]));
    assert!(!is_sensitive("deployment", "memory", [Some(&json!("1Gi"))]));
}

#[test]
fn values_redacted_at_ingest_are_sensitive() {
    // A value the redaction rules replaced is never shown, whatever its name.
    let policy = Policy {
        redaction_rules: vec![
            trailkeep_event::RedactionRule::new(
                None,
                "requestData.motto",
                trailkeep_event::RedactAction::Marker,
            )
            .unwrap(),
        ],
        ..Policy::default()
    };
    let ctx = Context::new(&policy, "acme");
    let dep = crn("deployment:dep-1");
    let raw = ev(
        "mlops.deployment.update",
        &dep,
        "d",
        json!({"motto": "carpe diem"}),
    );
    let items = process_input(raw.to_string().as_bytes(), &ctx).unwrap();
    let ItemResult::Accepted(stored) = &items[0].result else {
        panic!("{:?}", items[0].result)
    };
    let mut o = Objects::default();
    let d = o.apply(stored.event());
    assert!(
        d.description.ends_with(": motto changed"),
        "{}",
        d.description
    );
    assert!(d.changes[0].sensitive);
}

#[test]
fn deleted_objects_keep_their_history_and_last_name() {
    let mut o = Objects::default();
    let dep = crn("deployment:dep-1");
    o.apply(&ev(
        "mlops.deployment.create",
        &dep,
        "deployment-1",
        json!({"memory": "1Gi"}),
    ));
    let d = o.apply(&ev("mlops.deployment.delete", &dep, "", Value::Null));
    assert_eq!(d.class, "delete");
    assert_eq!(
        d.description,
        "Deleted deployment 'deployment-1' in instance 'proj-1'"
    );
    let s = o.state(&dep);
    assert!(s.deleted);
    assert_eq!(s.name.as_deref(), Some("deployment-1"));
    assert_eq!(s.attributes["memory"], json!("1Gi"));
    // A failed event changes nothing.
    let d = o.apply(&failed(ev(
        "mlops.deployment.update",
        &dep,
        "deployment-1",
        json!({"memory": "2Gi"}),
    )));
    assert_eq!(
        d.description,
        "Failed to update deployment 'deployment-1' in instance 'proj-1'"
    );
    assert!(d.changes.is_empty());
    assert_eq!(o.state(&dep).attributes["memory"], json!("1Gi"));
    // Created again under the same id: a fresh object.
    let d = o.apply(&ev(
        "mlops.deployment.create",
        &dep,
        "deployment-1b",
        json!({"cpu": 1}),
    ));
    assert_eq!(
        d.description,
        "Created deployment 'deployment-1b' in instance 'proj-1'"
    );
    let s = o.state(&dep);
    assert!(!s.deleted);
    assert!(!s.attributes.contains_key("memory"));
}

#[test]
fn long_values_are_kept_as_digests_and_shown_cut() {
    let mut o = Objects::default();
    let app = crn("application:app-1");
    let long1 = "a".repeat(300);
    let long2 = format!("{}b", "a".repeat(299));
    o.apply(&ev(
        "mlops.application.create",
        &app,
        "web",
        json!({"notes": long1}),
    ));
    assert_eq!(
        o.state(&app).masked().attributes["notes"],
        json!(trailkeep_event::object::LONG_VALUE)
    );
    // The same long value again is no change; another one is, shown cut.
    let d = o.apply(&ev(
        "mlops.application.update",
        &app,
        "web",
        json!({"notes": long1}),
    ));
    assert!(d.changes.is_empty(), "{d:?}");
    let d = o.apply(&ev(
        "mlops.application.update",
        &app,
        "web",
        json!({"notes": long2}),
    ));
    assert_eq!(d.changes.len(), 1);
    assert_eq!(d.changes[0].old, None);
    let shown = d.changes[0].new.as_ref().unwrap().as_str().unwrap();
    assert_eq!(shown.chars().count(), 81);
    assert!(shown.ends_with('…'));
    assert!(
        d.description.contains("notes changed to 'aaaa"),
        "{}",
        d.description
    );
}

#[test]
fn verbs_read_as_sentences() {
    for (action, start) in [
        ("mlops.deployment.deploy", "Deployed deployment 'd'"),
        ("mlops.key.copy", "Copied key 'd'"),
        ("mlops.instance.power-on", "Powered on instance 'd'"),
        ("mlops.instance.soft-reboot", "Soft-rebooted instance 'd'"),
        ("mlops.key.ack-delete", "Acknowledged delete key 'd'"),
        ("mlops.job.stop", "Stopped job 'd'"),
        ("mlops.job.commit", "Committed job 'd'"),
        ("mlops.secret.rotate", "Rotated secret 'd'"),
        ("mlops.deployment.list", "Listed deployment 'd'"),
    ] {
        let e = ev(action, &crn("thing:d"), "d", Value::Null);
        let d = derive(&e, None, None).derived.description;
        assert!(d.starts_with(start), "{action}: {d}");
    }
}

#[test]
fn other_actions_are_info_with_a_sentence() {
    let mut o = Objects::default();
    let file = crn("bucket:b1/files/report.csv");
    let d = o.apply(&ev("mlops.file.download", &file, "report.csv", Value::Null));
    assert_eq!(d.class, "info");
    assert_eq!(
        d.description,
        "Downloaded file 'report.csv' for bucket 'b1'"
    );
    let d = o.apply(&ev("mlops.file.upload", &file, "report.csv", Value::Null));
    assert_eq!(d.description, "Uploaded file 'report.csv' for bucket 'b1'");
}
