//! `/v1/views`: saved queries (name, account, query, default window), and how a request names one
//! instead of a query (`view=<id>` on search, aggregate and stream).
//!
//! Authorisation: a manager or admin may create, change and delete views of its accounts; any
//! reader lists and reads the views of its accounts. A view of another account answers 404,
//! exactly like a missing one.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::model::{MAX_OBJECTS, Problems, View, check_view_window};
use super::store::new_id;
use super::{Alerts, alerts_of, can_manage, can_see, json_body};
use crate::app::{AppState, Caller};
use crate::auth::Principal;
use crate::core::format_time;
use crate::error::ApiError;

pub fn routes(state: AppState) -> Router {
    use axum::routing::get;
    Router::new()
        .route("/v1/views", get(list).post(create))
        .route("/v1/views/{id}", get(read).patch(change).delete(remove))
        .with_state(state)
}

fn not_found() -> ApiError {
    ApiError::not_found("no view with this id")
}

/// The view `id` if the caller may read it (else 404, whether or not it exists).
pub fn visible_view(alerts: &Alerts, caller: &Principal, id: &str) -> Result<View, ApiError> {
    alerts
        .config
        .read(|c| c.views.iter().find(|v| v.id == id).cloned())
        .filter(|v| can_see(caller, &v.account))
        .ok_or_else(not_found)
}

async fn list(State(state): State<AppState>, Caller(caller): Caller) -> Result<Response, ApiError> {
    let alerts = alerts_of(&state)?;
    if !caller.role.can_read() {
        return Err(ApiError::forbidden("this key may not read views"));
    }
    let views: Vec<Value> = alerts.config.read(|c| {
        c.views
            .iter()
            .filter(|v| can_see(&caller, &v.account))
            .map(View::to_api)
            .collect()
    });
    Ok(Json(json!({ "views": views })).into_response())
}

async fn read(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let alerts = alerts_of(&state)?;
    Ok(Json(visible_view(&alerts, &caller, &id)?.to_api()).into_response())
}

fn check_query(p: &mut Problems, query: &str) {
    if let Err(e) = trailkeep_index::query::plan_strict(query) {
        p.add(
            "query",
            format!("line {}, column {}: {}", e.line, e.column, e.message),
        );
    }
}

async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let alerts = alerts_of(&state)?;
    let body = json_body(&body)?;
    let mut p = Problems::default();
    let name = p.text(&body, "name", "name", true);
    let account = p.text(&body, "account", "account", false).or_else(|| {
        // A key limited to one account may leave it out.
        match &caller.accounts {
            crate::auth::AccountScope::Only(ids) if ids.len() == 1 => Some(ids[0].clone()),
            _ => {
                p.add("account", "is required");
                None
            }
        }
    });
    let query = p.text(&body, "query", "query", false).unwrap_or_default();
    check_query(&mut p, &query);
    let window = p
        .text(&body, "window", "window", false)
        .unwrap_or_else(|| "24h".to_string());
    check_view_window(&mut p, &window);
    if let Some(a) = &account
        && !can_manage(&caller, a)
    {
        return Err(ApiError::forbidden(format!(
            "this key may not manage views of account {a:?} (manager or admin role needed)"
        )));
    }
    p.into_result("view")?;
    let (Some(name), Some(account)) = (name, account) else {
        return Err(ApiError::internal("validated view lacks a field"));
    };
    let now = format_time(OffsetDateTime::now_utc());
    let view = View {
        id: new_id("view"),
        name,
        account,
        query,
        window,
        owner: caller.key_id.clone(),
        created_at: now.clone(),
        updated_at: now,
    };
    let stored = view.clone();
    alerts.config.update(|c| {
        if c.views.len() >= MAX_OBJECTS {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "limit",
                format!("at most {MAX_OBJECTS} views"),
            ));
        }
        c.views.push(stored);
        Ok::<_, ApiError>(())
    })?;
    record_view_change(&state, &caller, "create", &view, 201).await?;
    Ok((StatusCode::CREATED, Json(view.to_api())).into_response())
}

async fn change(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let alerts = alerts_of(&state)?;
    let body = json_body(&body)?;
    let mut view = visible_view(&alerts, &caller, &id)?;
    if !can_manage(&caller, &view.account) {
        return Err(ApiError::forbidden(
            "this key may not change views (manager or admin role needed)",
        ));
    }
    let mut p = Problems::default();
    if let Some(obj) = body.as_object() {
        for key in obj.keys() {
            if !["name", "query", "window"].contains(&key.as_str()) {
                p.add(key, "cannot be changed (name, query and window can)");
            }
        }
    } else {
        p.add("", "the body must be a JSON object");
    }
    if let Some(name) = p.text(&body, "name", "name", false) {
        view.name = name;
    }
    if let Some(query) = p.text(&body, "query", "query", false) {
        check_query(&mut p, &query);
        view.query = query;
    }
    if let Some(window) = p.text(&body, "window", "window", false) {
        check_view_window(&mut p, &window);
        view.window = window;
    }
    p.into_result("view")?;
    view.updated_at = format_time(OffsetDateTime::now_utc());
    let stored = view.clone();
    alerts.config.update(|c| {
        match c.views.iter_mut().find(|v| v.id == id) {
            Some(v) => *v = stored,
            None => return Err(not_found()),
        }
        Ok(())
    })?;
    record_view_change(&state, &caller, "update", &view, 200).await?;
    Ok(Json(view.to_api()).into_response())
}

async fn remove(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let alerts = alerts_of(&state)?;
    let view = visible_view(&alerts, &caller, &id)?;
    if !can_manage(&caller, &view.account) {
        return Err(ApiError::forbidden(
            "this key may not delete views (manager or admin role needed)",
        ));
    }
    alerts.config.update(|c| {
        let rules: Vec<&str> = c
            .rules
            .iter()
            .filter(|r| r.view_id == id)
            .map(|r| r.id.as_str())
            .collect();
        if !rules.is_empty() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "in_use",
                format!(
                    "alert rules use this view; delete them first: {}",
                    rules.join(", ")
                ),
            ));
        }
        c.views.retain(|v| v.id != id);
        Ok(())
    })?;
    record_view_change(&state, &caller, "delete", &view, 204).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Self-audit: a view change is recorded in the view's account before it is answered.
async fn record_view_change(
    state: &AppState,
    caller: &Principal,
    verb: &str,
    view: &View,
    status: u16,
) -> Result<(), ApiError> {
    crate::audit::record_change(
        &state.core,
        caller,
        &view.account,
        &format!("view.{verb}"),
        (view.id.clone(), view.name.clone(), "trailkeep/view".into()),
        status,
        view.to_api(),
    )
    .await
}

/// What a read request (search, aggregate, stream) becomes when it names a view: the view's
/// query (and the request's `q`, if any, both must match), the view's account, and the view's
/// window as the default `from`.
#[derive(Debug, Clone)]
pub struct ViewScope {
    pub query: String,
    pub account: String,
    pub from: OffsetDateTime,
}

pub fn resolve_view(
    state: &AppState,
    caller: &Principal,
    id: &str,
    q: &str,
) -> Result<ViewScope, ApiError> {
    let alerts = alerts_of(state)?;
    let view = visible_view(&alerts, caller, id)?;
    let query = match (view.query.trim(), q.trim()) {
        ("", q) => q.to_string(),
        (v, "") => v.to_string(),
        (v, q) => format!("({v}) AND ({q})"),
    };
    Ok(ViewScope {
        query,
        account: view.account.clone(),
        from: OffsetDateTime::now_utc() - view.window_duration(),
    })
}
