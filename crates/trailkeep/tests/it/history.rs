//! Object history end to end (issue #11): classes, descriptions and scopes searchable through the
//! real server, `GET /v1/objects/{targetId}/timeline`, `trailkeep history`, and `reindex`
//! rebuilding the same history.

use std::process::Command;

use serde_json::{Value, json};

use crate::server::{ADMIN_KEY, Server, enc, get, post_json, wait_for};
use crate::text;

fn crn(rest: &str) -> String {
    format!("crn:v1:bluemix:public:mlops:eu-de:a/acme:proj-1:{rest}")
}

fn ev(n: u32, action: &str, id: &str, name: &str, request: Value) -> Value {
    json!({
        "id": format!("h-{n}"),
        "action": action,
        "eventTime": format!("2026-11-21T10:{n:02}:00.000+0000"),
        "outcome": "success",
        "initiator": {"id": "IBMid-1", "name": "ada@acme.example"},
        "target": {"id": id, "name": name},
        "logSourceCRN": crn(":"),
        "requestData": request,
    })
}

fn sequence() -> Vec<Value> {
    let project = crn(":");
    let pipe = crn("pipeline:pipe-1");
    let obj = crn("pipeline:pipe-1/objects/obj-1");
    let env = crn("environment-variable:ev-1");
    vec![
        ev(0, "mlops.project.create", &project, "project-1", json!({})),
        ev(
            1,
            "mlops.pipeline.create",
            &pipe,
            "pipeline-1",
            json!({"inputType": "structured"}),
        ),
        ev(
            2,
            "mlops.pipeline-object.create",
            &obj,
            "deployment-1",
            json!({"reference": "dep-1"}),
        ),
        ev(
            3,
            "mlops.pipeline-object.update",
            &obj,
            "deployment-object",
            json!({"updateType": "name", "initialValue": "deployment-1", "newValue": "deployment-object"}),
        ),
        ev(
            4,
            "mlops.environment-variable.create",
            &env,
            "API_URL",
            json!({"value": "https://one.example"}),
        ),
        ev(
            5,
            "mlops.environment-variable.update",
            &env,
            "API_URL",
            json!({"value": "https://two.example"}),
        ),
        ev(6, "mlops.pipeline-object.delete", &obj, "", json!({})),
        ev(
            7,
            "mlops.file.download",
            &crn("bucket:b1/files/report.csv"),
            "report.csv",
            json!({}),
        ),
    ]
}

fn history_cli(server: &Server, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_trailkeep"))
        .arg("history")
        .args(args)
        .env("TRAILKEEP_URL", &server.url)
        .env("TRAILKEEP_KEY", ADMIN_KEY)
        .output()
        .unwrap()
}

#[test]
fn object_history_through_the_real_server_issue_11() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    let r = post_json(&server, "/v1/events", &Value::Array(sequence()));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["accepted"], 8);
    let (all, _) = wait_for(&server, "account:acme", 8);
    assert_eq!(all.len(), 8);

    // Classes, descriptions and scopes are searchable; items carry what was derived.
    let (updates, _) = wait_for(&server, "class:update", 2);
    let descriptions: Vec<&str> = updates
        .iter()
        .map(|i| i["derived"]["description"].as_str().unwrap())
        .collect();
    assert_eq!(
        descriptions,
        [
            "Updated environment variable 'API_URL' in project 'project-1': value changed",
            "Updated pipeline object 'deployment-object' for pipeline 'pipeline-1': name changed from 'deployment-1' to 'deployment-object'",
        ]
    );
    let (renames, _) = wait_for(&server, "description:\"name changed\"", 1);
    assert_eq!(renames.len(), 1);
    assert_eq!(wait_for(&server, "class:info", 1).0.len(), 1);
    let (in_pipeline, _) = wait_for(&server, &format!("scope:\"{}\"", crn("pipeline:pipe-1")), 4);
    assert_eq!(in_pipeline.len(), 4);
    assert_eq!(
        wait_for(&server, &format!("scope:\"{}\"", crn(":")), 8)
            .0
            .len(),
        8
    );
    // Sensitive values appear in no description.
    for item in &all {
        let d = item["derived"].to_string();
        assert!(
            !d.contains("two.example") && !d.contains("one.example"),
            "{d}"
        );
    }
    // The object column of an event whose object is gone is empty.
    let create = all.iter().find(|i| i["event"]["id"] == "h-2").unwrap();
    assert_eq!(create["derived"]["object"]["name"], "");
    assert_eq!(create["derived"]["object"]["deleted"], true);

    // The timeline: oldest first, old → new values, last known name after deletion.
    let obj = crn("pipeline:pipe-1/objects/obj-1");
    let r = get(&server, &format!("/v1/objects/{}/timeline", enc(&obj)));
    assert_eq!(r.status, 200, "{}", r.text());
    let t = r.json();
    assert_eq!(t["account"], "acme");
    assert_eq!(t["object"]["deleted"], true);
    assert_eq!(t["object"]["name"], "deployment-object");
    assert_eq!(t["object"]["type"], "pipeline-object");
    assert_eq!(t["object"]["parent"], crn("pipeline:pipe-1"));
    let classes: Vec<&str> = t["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["derived"]["class"].as_str().unwrap())
        .collect();
    assert_eq!(classes, ["create", "update", "delete"]);
    assert_eq!(
        t["events"][1]["derived"]["changes"],
        json!([{"attribute": "name", "old": "deployment-1", "new": "deployment-object"}])
    );
    let env = crn("environment-variable:ev-1");
    let t = get(&server, &format!("/v1/objects/{}/timeline", enc(&env))).json();
    assert_eq!(t["object"]["attributes"]["value"], "[sensitive]");
    assert_eq!(
        t["events"][1]["derived"]["changes"],
        json!([{"attribute": "value", "sensitive": true}])
    );
    // An object seen only through an info event keeps no state; its timeline still answers.
    let file = crn("bucket:b1/files/report.csv");
    let t = get(&server, &format!("/v1/objects/{}/timeline", enc(&file))).json();
    assert_eq!(t["object"]["name"], "report.csv");
    assert_eq!(t["object"]["type"], "file");
    assert_eq!(t["object"]["parent"], crn("bucket:b1"));
    assert_eq!(
        t["events"][0]["derived"]["description"],
        "Downloaded file 'report.csv' for bucket 'b1'"
    );
    // Missing objects and accounts the key does not have answer 404.
    let r = get(
        &server,
        &format!("/v1/objects/{}/timeline", enc(&crn("deployment:none"))),
    );
    assert_eq!(r.status, 404, "{}", r.text());
    let r = get(
        &server,
        &format!("/v1/objects/{}/timeline?account=other", enc(&obj)),
    );
    assert_eq!(r.status, 404, "{}", r.text());
    let r = get(
        &server,
        &format!("/v1/objects/{}/timeline?nope=1", enc(&obj)),
    );
    assert_eq!(r.status, 400, "{}", r.text());

    // The CLI: a table for people, JSON for programs.
    let out = history_cli(&server, &[&obj]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(
        table.starts_with("pipeline-object 'deployment-object' (deleted) in account acme"),
        "{table}"
    );
    assert!(
        table.contains("name changed from 'deployment-1' to 'deployment-object'"),
        "{table}"
    );
    let lines: Vec<&str> = table.lines().filter(|l| l.starts_with("2026-")).collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[0].contains("create") && lines[2].contains("delete"),
        "{table}"
    );
    let out = history_cli(&server, &[&obj, "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json_answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json_answer["object"], t_object(&server, &obj));
    let out = history_cli(&server, &[&crn("deployment:none")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no object with this id"),
        "{}",
        text(&out.stderr)
    );

    // reindex rebuilds the same history from the ledger.
    let before = get(&server, &format!("/v1/objects/{}/timeline", enc(&obj))).json();
    server.stop();
    std::fs::remove_file(data.join("objects.redb")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_trailkeep"))
        .args(["reindex", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let server = Server::start(&data, &[]);
    let after = get(&server, &format!("/v1/objects/{}/timeline", enc(&obj))).json();
    assert_eq!(after, before);
    assert_eq!(wait_for(&server, "class:update", 2).0.len(), 2);
}

fn t_object(server: &Server, id: &str) -> Value {
    get(server, &format!("/v1/objects/{}/timeline", enc(id))).json()["object"].clone()
}

#[test]
fn bench_objects_prints_its_figures() {
    let out = Command::new(env!("CARGO_BIN_EXE_trailkeep"))
        .args([
            "bench",
            "objects",
            "--events",
            "400",
            "--ingest-rate",
            "5000",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for line in [
        "events:      400",
        "normalise:",
        "index:",
        "derive:",
        "derive cost:",
    ] {
        assert!(stdout.contains(line), "{line} in {stdout}");
    }
    assert!(
        stdout.contains("% of one core at 5000 events/s"),
        "{stdout}"
    );
}

/// Updates of one object sent by many clients at once: each one's old value is the new value of
/// the update before it in the log, so derivation follows log order whatever order the requests
/// finish in.
#[test]
fn concurrent_updates_of_one_object_derive_in_log_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    let app = crn("application:app-race");
    let update = move |id: String, replicas: u64| {
        json!({
            "id": id,
            "action": "mlops.application.update",
            "eventTime": "2026-11-21T11:00:00.000+0000",
            "outcome": "success",
            "initiator": {"id": "IBMid-1", "name": "ada@acme.example"},
            "target": {"id": crn("application:app-race"), "name": "app-race"},
            "logSourceCRN": crn(":"),
            "requestData": {"replicas": replicas},
        })
    };
    let mut create = update("race-create".into(), 0);
    create["action"] = json!("mlops.application.create");
    assert_eq!(post_json(&server, "/v1/events", &create).status, 200);
    const THREADS: u64 = 6;
    const EACH: u64 = 25;
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let url = server.url.clone();
            std::thread::spawn(move || {
                for n in 0..EACH {
                    let replicas = 1 + t * EACH + n;
                    let r = crate::server::request(
                        "POST",
                        &format!("{url}/v1/events"),
                        Some(crate::server::ADMIN_KEY),
                        &[("Content-Type", "application/json")],
                        Some(
                            update(format!("race-{replicas}"), replicas)
                                .to_string()
                                .as_bytes(),
                        ),
                    );
                    assert_eq!(r.status, 200, "{}", r.text());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let total = 1 + (THREADS * EACH) as usize;
    wait_for(&server, "action:mlops.application.*", total);
    let t = get(&server, &format!("/v1/objects/{}/timeline", enc(&app))).json();
    let events = t["events"].as_array().unwrap();
    assert_eq!(events.len(), total, "{t}");
    let mut previous = 0;
    let mut last_index = None;
    for item in &events[1..] {
        let index = item["index"].as_u64().unwrap_or_else(|| panic!("{item}"));
        assert!(last_index < Some(index), "timeline not in log order");
        last_index = Some(index);
        let now = item["event"]["requestData"]["replicas"].as_u64().unwrap();
        assert_eq!(
            item["derived"]["changes"],
            json!([{"attribute": "replicas", "old": previous, "new": now}]),
            "update at index {index}"
        );
        previous = now;
    }
    assert_eq!(t["object"]["attributes"]["replicas"], json!(previous));
}
