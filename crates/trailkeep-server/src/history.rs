//! `GET /v1/objects/{targetId}/timeline` (issue #11): every event of one object, oldest first,
//! each with its class, description and changes, plus the object's last known state.
//!
//! Reading is limited to the caller's accounts: an object of an account the caller may not read
//! answers 404 exactly like a missing one.

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use trailkeep_event::ObjectState;
use trailkeep_index::query::KnownField;
use trailkeep_index::{MAX_LIMIT, Plan, SearchRequest};

use crate::app::{AppState, Caller};
use crate::auth::{AccountScope, Principal};
use crate::core::{Core, Item};
use crate::error::{ApiError, ErrorDetail};

/// The most events one timeline returns (the newest; `truncated` says when there are more).
pub const MAX_TIMELINE: usize = MAX_LIMIT;

/// The object-history routes.
pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/v1/objects/{target_id}/timeline", get(timeline))
        .with_state(state)
}

/// The answer of the timeline endpoint.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeline {
    /// The account that holds the object.
    pub account: String,
    /// The object's last known state (sensitive attribute values masked), with `deleted` and
    /// its last known name.
    pub object: ObjectState,
    /// The object's events, oldest first; each item's `derived` holds class, description and
    /// changes.
    pub events: Vec<Item>,
    /// More than [`MAX_TIMELINE`] events: only the newest are listed (and without `changes`,
    /// which are recomputed from the object's whole history).
    pub truncated: bool,
}

fn not_found() -> ApiError {
    ApiError::not_found("no object with this id")
}

/// The accounts to look in: the one asked for (404 when the caller may not read it, like a
/// missing object), else every account the caller may read.
fn accounts(
    core: &Core,
    caller: &Principal,
    asked: Option<String>,
) -> Result<Vec<String>, ApiError> {
    if !caller.role.can_read() {
        return Err(ApiError::forbidden("this key may not read events"));
    }
    match asked {
        Some(a) if caller.accounts.allows(&a) => Ok(vec![a]),
        Some(_) => Err(not_found()),
        None => Ok(match &caller.accounts {
            AccountScope::All => core.ledger.accounts(),
            AccountScope::Only(ids) => ids.clone(),
        }),
    }
}

async fn timeline(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(target_id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let mut asked = None;
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "account" => asked = Some(value.into_owned()),
            other => {
                return Err(
                    ApiError::bad_request(format!("unknown query parameter {other:?}"))
                        .with_details(vec![ErrorDetail {
                            path: other.to_string(),
                            reason: "not a parameter of this endpoint".into(),
                        }]),
                );
            }
        }
    }
    let core = state.core.clone();
    let accounts = accounts(&core, &caller, asked)?;
    if accounts.is_empty() {
        return Err(not_found());
    }
    state.spend(&caller, crate::limits::Spend::Query, 1)?;
    let request = serde_json::json!({ "targetId": target_id });
    let answer = tokio::task::spawn_blocking(move || build(&core, &accounts, &target_id))
        .await
        .map_err(ApiError::internal)??;
    crate::api::record_read(
        &state,
        &caller,
        "object.timeline",
        std::slice::from_ref(&answer.account),
        &[],
        request,
    );
    Ok((StatusCode::OK, Json(answer)).into_response())
}

fn build(core: &Core, accounts: &[String], target_id: &str) -> Result<Timeline, ApiError> {
    let plan = Plan::Keyword {
        field: KnownField::TargetId,
        value: target_id.to_string(),
        prefix: false,
    };
    let page = core
        .index
        .search(&SearchRequest {
            plan: &plan,
            accounts,
            from: None,
            to: None,
            limit: MAX_TIMELINE,
            cursor: None,
        })
        .map_err(ApiError::internal)?;
    let mut by_account: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for hit in &page.hits {
        by_account.entry(&hit.account).or_default().push(hit.index);
    }
    let (account, mut indexes) = match by_account.len() {
        0 => return Err(not_found()),
        1 => by_account.into_iter().next().ok_or_else(not_found)?,
        _ => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "ambiguous",
                "several of your accounts hold an object with this id; add ?account=",
            ));
        }
    };
    let account = account.to_string();
    indexes.sort_unstable();
    let mut events = Vec::with_capacity(indexes.len());
    // The changes each event made, recomputed from the object's own events in log order (they
    // depend on nothing else); the stored description and class are what was indexed.
    let mut state: Option<ObjectState> = None;
    let complete = page.next_cursor.is_none();
    for index in indexes {
        if let Some(mut item) = core.item(&account, index)? {
            let d = trailkeep_event::derive(&item.event, state.as_ref(), None);
            if let Some(s) = d.state {
                state = Some(s);
            }
            if let Some(derived) = item.derived.as_mut()
                && complete
            {
                derived.changes = d.derived.changes;
            }
            events.push(item);
        }
    }
    // The last known state: the store's; else (an object seen only through reads or failed
    // events, which keep no state) what its events tell.
    let object = match core
        .objects
        .object(&account, target_id)
        .map_err(ApiError::internal)?
    {
        Some(s) => s,
        None => {
            let last = events.last().ok_or_else(not_found)?;
            let name = last.event["target"]["name"].as_str().map(str::to_string);
            ObjectState {
                id: target_id.to_string(),
                object_type: trailkeep_event::object::object_type_of(&last.event),
                name,
                ..ObjectState::default()
            }
        }
    }
    .masked();
    Ok(Timeline {
        account,
        object,
        events,
        truncated: page.next_cursor.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{Value, json};
    use trailkeep_event::InputFormat;
    use trailkeep_index::query::plan_strict;

    use super::*;
    use crate::auth::Role;
    use crate::core::tests::open;

    fn crn(account: &str, rest: &str) -> String {
        format!("crn:v1:bluemix:public:mlops:eu-de:a/{account}:proj-1:{rest}")
    }

    fn ev(account: &str, n: u32, action: &str, id: &str, name: &str, request: Value) -> Value {
        json!({
            "id": format!("{account}-{n}"),
            "action": action,
            "eventTime": format!("2026-11-21T10:{:02}:00+00:00", n),
            "outcome": "success",
            "initiator": {"id": "IBMid-1", "name": "ada@example.com"},
            "target": {"id": id, "name": name},
            "logSourceCRN": crn(account, ":"),
            "requestData": request,
        })
    }

    /// A project with a deployment, a version and an environment variable, updated and deleted.
    fn sequence(account: &str) -> Vec<Value> {
        let project = crn(account, ":");
        let dep = crn(account, "deployment:dep-1");
        let version = crn(account, "deployment:dep-1/versions/v1");
        let env = crn(
            account,
            "deployment:dep-1/versions/v1/environment-variables/ev-1",
        );
        vec![
            ev(
                account,
                0,
                "mlops.project.create",
                &project,
                "project-1",
                json!({}),
            ),
            ev(
                account,
                1,
                "mlops.deployment.create",
                &dep,
                "deployment-1",
                json!({"memory": "256Mi"}),
            ),
            ev(
                account,
                2,
                "mlops.version.create",
                &version,
                "v1",
                json!({"language": "python3.12"}),
            ),
            ev(
                account,
                3,
                "mlops.environment-variable.create",
                &env,
                "DB_URL",
                json!({"value": "postgres://one"}),
            ),
            ev(
                account,
                4,
                "mlops.deployment.update",
                &dep,
                "deployment-2",
                json!({"memory": "512Mi", "name": "deployment-2"}),
            ),
            ev(
                account,
                5,
                "mlops.environment-variable.update",
                &env,
                "DB_URL",
                json!({"value": "postgres://two"}),
            ),
            ev(
                account,
                6,
                "mlops.deployment.get",
                &dep,
                "deployment-2",
                json!({}),
            ),
            ev(account, 7, "mlops.deployment.delete", &dep, "", json!({})),
        ]
    }

    fn principal(role: Role, accounts: AccountScope) -> Principal {
        Principal {
            key_id: "k".into(),
            key_name: "k".into(),
            role,
            accounts,
            default_account: "default".into(),
            action_prefixes: Vec::new(),
            limits: Default::default(),
            client: None,
        }
    }

    async fn ingest(core: &Arc<Core>, events: &[Value]) {
        let body: String = events.iter().map(|e| format!("{e}\n")).collect();
        let admin = principal(Role::Admin, AccountScope::All);
        let report = core
            .ingest(&admin, body.into_bytes(), InputFormat::Ndjson)
            .await
            .unwrap();
        assert_eq!(report.rejected, 0, "{:?}", report.results);
        core.indexer.flush();
    }

    fn search(core: &Core, q: &str, account: &str) -> Vec<u64> {
        let plan = plan_strict(q).unwrap();
        let mut hits: Vec<u64> = core
            .index
            .search(&SearchRequest {
                plan: &plan,
                accounts: &[account.to_string()],
                from: None,
                to: None,
                limit: 100,
                cursor: None,
            })
            .unwrap()
            .hits
            .into_iter()
            .map(|h| h.index)
            .collect();
        hits.sort_unstable();
        hits
    }

    /// Everything derived for an account, as text: states and per-event records.
    fn snapshot(core: &Core, account: &str) -> String {
        let mut out = String::new();
        for i in 0..8 {
            out.push_str(&serde_json::to_string(&core.index.derived(account, i).unwrap()).unwrap());
            out.push('\n');
        }
        for rest in [
            ":",
            "deployment:dep-1",
            "deployment:dep-1/versions/v1/environment-variables/ev-1",
        ] {
            out.push_str(
                &serde_json::to_string(&core.objects.object(account, &crn(account, rest)).unwrap())
                    .unwrap(),
            );
            out.push('\n');
        }
        out
    }

    #[tokio::test]
    async fn classes_descriptions_scopes_and_timeline_from_ingest_issue_11() {
        let dir = tempfile::tempdir().unwrap();
        let core = open(dir.path());
        ingest(&core, &sequence("acme")).await;
        ingest(&core, &sequence("beta")).await;

        assert_eq!(search(&core, "class:update", "acme"), [4, 5]);
        assert_eq!(search(&core, "class:delete", "acme"), [7]);
        assert_eq!(search(&core, "class:read", "acme"), [6]);
        assert_eq!(
            search(&core, "description:\"memory changed from\"", "acme"),
            [4]
        );
        assert_eq!(search(&core, "\"name changed\"", "acme"), [4]);
        // The sensitive value is in no description.
        assert_eq!(
            search(&core, "description:postgres", "acme"),
            Vec::<u64>::new()
        );
        let dep = crn("acme", "deployment:dep-1");
        assert_eq!(
            search(&core, &format!("scope:\"{dep}\""), "acme"),
            [1, 2, 3, 4, 5, 6, 7]
        );
        assert_eq!(
            search(&core, &format!("scope:\"{}\"", crn("acme", ":")), "acme"),
            [0, 1, 2, 3, 4, 5, 6, 7]
        );

        // Items carry what was derived; the object column is empty once the object is deleted.
        let item = core.item("acme", 4).unwrap().unwrap();
        let v = serde_json::to_value(&item).unwrap();
        assert_eq!(v["derived"]["class"], "update");
        assert_eq!(
            v["derived"]["description"],
            "Updated deployment 'deployment-2' in project 'project-1': memory changed from '256Mi' to '512Mi', name changed from 'deployment-1' to 'deployment-2'"
        );
        assert_eq!(
            v["derived"]["object"],
            json!({"id": dep, "name": "", "deleted": true})
        );
        // The ledger's bytes are the event as received and normalised: nothing derived in them.
        assert!(item.event.get("class").is_none() && item.event.get("description").is_none());

        let t = build(&core, &["acme".to_string()], &dep).unwrap();
        let classes: Vec<&str> = t
            .events
            .iter()
            .map(|i| i.derived.as_ref().unwrap().class.as_str())
            .collect();
        assert_eq!(classes, ["create", "update", "read", "delete"]);
        assert_eq!(
            serde_json::to_value(&t.events[1].derived.as_ref().unwrap().changes).unwrap(),
            json!([
                {"attribute": "memory", "old": "256Mi", "new": "512Mi"},
                {"attribute": "name", "old": "deployment-1", "new": "deployment-2"}
            ])
        );
        assert!(t.object.deleted);
        assert_eq!(t.object.name.as_deref(), Some("deployment-2"));
        assert_eq!(t.object.attributes["memory"], json!("512Mi"));
        assert_eq!(t.object.parent.as_deref(), Some(crn("acme", ":").as_str()));
        assert_eq!(t.object.name.as_deref(), Some("deployment-2"));

        let env = crn(
            "acme",
            "deployment:dep-1/versions/v1/environment-variables/ev-1",
        );
        let t = build(&core, &["acme".to_string()], &env).unwrap();
        let text = serde_json::to_string(&t.events.iter().map(|i| &i.derived).collect::<Vec<_>>())
            .unwrap();
        assert!(!text.contains("postgres"), "{text}");
        assert_eq!(t.object.attributes["value"], json!("[sensitive]"));
        assert_eq!(
            t.events[1].derived.as_ref().unwrap().description,
            "Updated environment variable 'DB_URL' for version 'v1': value changed"
        );

        // Tenancy: an account the caller may not read answers like a missing object.
        let beta_reader = principal(Role::Reader, AccountScope::Only(vec!["beta".into()]));
        let err = accounts(&core, &beta_reader, Some("acme".into())).unwrap_err();
        assert_eq!(err.status, StatusCode::NOT_FOUND);
        let mine = accounts(&core, &beta_reader, None).unwrap();
        assert_eq!(
            build(&core, &mine, &dep).unwrap_err().status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            build(&core, &mine, &crn("beta", "deployment:dep-1"))
                .unwrap()
                .account,
            "beta"
        );
        assert_eq!(
            build(&core, &mine, "no-such-object").unwrap_err().status,
            StatusCode::NOT_FOUND
        );
        core.close();
    }

    #[tokio::test]
    async fn reindex_and_catch_up_rebuild_the_same_state_issue_11() {
        let dir = tempfile::tempdir().unwrap();
        let core = open(dir.path());
        let events = sequence("acme");
        ingest(&core, &events[..5]).await;
        ingest(&core, &events[5..]).await;
        let before = snapshot(&core, "acme");
        assert!(before.contains("memory changed from"), "{before}");
        core.close();
        drop(core);

        // reindex: both derived stores from scratch.
        crate::core::reindex(dir.path(), "trailkeep", |_, _| {}).unwrap();
        let core = open(dir.path());
        assert_eq!(snapshot(&core, "acme"), before);
        assert_eq!(search(&core, "class:update", "acme"), [4, 5]);
        core.close();
        drop(core);

        // A lost object store (a crash before its first commit) is caught up at start.
        std::fs::remove_file(dir.path().join(crate::objects::FILE_NAME)).unwrap();
        let core = open(dir.path());
        assert_eq!(snapshot(&core, "acme"), before);
        core.close();
        drop(core);

        // A lost index: the store, now ahead of it, is rebuilt with it.
        std::fs::remove_dir_all(dir.path().join("index")).unwrap();
        let core = open(dir.path());
        assert_eq!(search(&core, "description:\"memory changed\"", "acme"), [4]);
        assert_eq!(snapshot(&core, "acme"), before);
        // After a restart the old value comes from the store on disk.
        let dep = crn("acme", "deployment:dep-1");
        ingest(
            &core,
            &[ev(
                "acme",
                8,
                "mlops.deployment.update",
                &dep,
                "deployment-2",
                json!({"memory": "1Gi"}),
            )],
        )
        .await;
        assert_eq!(
            core.item("acme", 8)
                .unwrap()
                .unwrap()
                .derived
                .unwrap()
                .description,
            "Updated deployment 'deployment-2' in project 'project-1': memory changed from '512Mi' to '1Gi'"
        );
        core.close();
    }

    #[tokio::test]
    async fn a_corrupt_object_store_is_rebuilt_from_the_ledger_issue_12() {
        let dir = tempfile::tempdir().unwrap();
        let core = open(dir.path());
        ingest(&core, &sequence("acme")).await;
        let before = snapshot(&core, "acme");
        core.close();
        drop(core);
        let dep = crn("acme", "deployment:dep-1");
        {
            let (store, _) =
                crate::objects::ObjectStore::open(&dir.path().join(crate::objects::FILE_NAME))
                    .unwrap();
            store.put_raw("acme", &dep, b"\xb3\x01garbage");
        }

        let core = open(dir.path());
        // Read: a clear error, never a made-up state; the timeline answers 500, not a guess.
        let err = core.objects.object("acme", &dep).unwrap_err();
        assert!(err.is_corrupt(), "{err}");
        assert!(core.objects.is_corrupt());
        assert_eq!(
            build(&core, &["acme".to_string()], &dep)
                .unwrap_err()
                .status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        // The indexer sees the mark and rebuilds the store from the ledger.
        core.indexer.flush();
        assert!(!core.objects.is_corrupt());
        assert_eq!(snapshot(&core, "acme"), before);
        // And derives on top of the rebuilt state.
        ingest(
            &core,
            &[ev(
                "acme",
                8,
                "mlops.environment-variable.update",
                &crn(
                    "acme",
                    "deployment:dep-1/versions/v1/environment-variables/ev-1",
                ),
                "DB_URL",
                json!({"value": "postgres://three"}),
            )],
        )
        .await;
        assert_eq!(
            core.item("acme", 8)
                .unwrap()
                .unwrap()
                .derived
                .unwrap()
                .description,
            "Updated environment variable 'DB_URL' for version 'v1': value changed"
        );
        core.close();
    }
}
