//! `/v1/targets`, `/v1/routes` and `/v1/settings`: the routing configuration of this instance.
//!
//! Instance configuration: **admin keys only**; every other role gets 403. Target keys and
//! webhook secrets are never returned (`keySet`/`secretSet` say one is stored). Every change is
//! recorded (durably, before it is answered) as a self-audit event in the system account:
//! `trailkeep.target.create|update|delete`, `trailkeep.route.…`, `trailkeep.settings.update`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::Routing;
use super::model::{
    LOCAL_TARGET, MAX_TARGETS, Route, Target, apply_settings, parse_kind, parse_rules, parse_target,
};
use crate::alerts::json_body;
use crate::alerts::model::Problems;
use crate::alerts::store::new_id;
use crate::app::{AppState, Caller};
use crate::auth::Principal;
use crate::core::format_time;
use crate::error::ApiError;

pub fn routes(state: AppState) -> Router {
    use axum::routing::get;
    Router::new()
        .route("/v1/targets", get(list_targets).post(create_target))
        .route(
            "/v1/targets/{id}",
            get(read_target).patch(change_target).delete(remove_target),
        )
        .route("/v1/routes", get(list_routes).post(create_route))
        .route(
            "/v1/routes/{id}",
            get(read_route).patch(change_route).delete(remove_route),
        )
        .route(
            "/v1/settings",
            get(read_settings)
                .put(change_settings)
                .patch(change_settings),
        )
        .with_state(state)
}

/// Routing of this server, for an admin caller (403 otherwise; 503 when routing is not running).
fn admin(state: &AppState, caller: &Principal) -> Result<Arc<Routing>, ApiError> {
    if !caller.role.is_admin() {
        return Err(ApiError::forbidden(
            "routing targets, routes and settings are instance configuration: admin key needed",
        ));
    }
    state
        .core
        .routing
        .get()
        .cloned()
        .ok_or_else(|| ApiError::unavailable("routing is not running on this server"))
}

fn now() -> String {
    format_time(OffsetDateTime::now_utc())
}

async fn record(
    state: &AppState,
    caller: &Principal,
    action: &str,
    target: (String, String, String),
    status: u16,
    request: Value,
) -> Result<(), ApiError> {
    crate::audit::record_change(
        &state.core,
        caller,
        &state.core.system_account,
        action,
        target,
        status,
        request,
    )
    .await
}

fn target_api(routing: &Routing, t: &Target) -> Value {
    let mut v = t.to_api();
    if !t.kind.is_local() {
        v["status"] = routing.status(&t.id);
    }
    v
}

// ---------------------------------------------------------------------------------------------
// Targets

async fn list_targets(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Response, ApiError> {
    let routing = admin(&state, &caller)?;
    let targets: Vec<Value> = routing
        .store
        .read(|c| c.all_targets())
        .iter()
        .map(|t| target_api(&routing, t))
        .collect();
    Ok(Json(json!({ "targets": targets })).into_response())
}

fn find_target(routing: &Routing, id: &str) -> Result<Target, ApiError> {
    routing
        .store
        .read(|c| c.all_targets().into_iter().find(|t| t.id == id))
        .ok_or_else(|| ApiError::not_found("no target with this id"))
}

async fn read_target(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let routing = admin(&state, &caller)?;
    let t = find_target(&routing, &id)?;
    Ok(Json(target_api(&routing, &t)).into_response())
}

async fn create_target(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let routing = admin(&state, &caller)?;
    let body = json_body(&body)?;
    let mut p = Problems::default();
    let parsed = parse_target(&mut p, &body);
    p.into_result("target")?;
    let Some((name, kind)) = parsed else {
        return Err(ApiError::internal("validated target lacks a field"));
    };
    let at = now();
    let target = Target {
        id: new_id("tgt"),
        name,
        kind,
        created_at: at.clone(),
        updated_at: at,
    };
    let stored = target.clone();
    routing.store.update(|c| {
        if c.targets.len() + 1 >= MAX_TARGETS {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "limit",
                format!("at most {MAX_TARGETS} targets (the built-in local one included)"),
            ));
        }
        c.targets.push(stored);
        Ok::<_, ApiError>(())
    })?;
    routing.target_changed(&target)?;
    routing.rebuild();
    let api = target_api(&routing, &target);
    record(
        &state,
        &caller,
        "target.create",
        audit_target(&target),
        201,
        target.to_api(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(api)).into_response())
}

fn audit_target(t: &Target) -> (String, String, String) {
    (
        t.id.clone(),
        t.name.clone(),
        "trailkeep/routing/target".into(),
    )
}

async fn change_target(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let routing = admin(&state, &caller)?;
    let body = json_body(&body)?;
    let mut target = find_target(&routing, &id)?;
    if id == LOCAL_TARGET {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "builtin",
            "the built-in local target cannot be changed",
        ));
    }
    let mut p = Problems::default();
    let type_name = target.kind.type_name();
    if let Some(t) = body.get("type")
        && t.as_str() != Some(type_name)
    {
        p.add("type", "cannot be changed: create another target");
    }
    if let Some(name) = p.text(&body, "name", "name", false) {
        if name.trim().is_empty() {
            p.add("name", "must not be empty");
        }
        target.name = name;
    }
    let kind = parse_kind(&mut p, type_name, &body, Some(&target.kind));
    p.into_result("target")?;
    if let Some(kind) = kind {
        target.kind = kind;
    }
    target.updated_at = now();
    let stored = target.clone();
    routing.store.update(|c| {
        match c.targets.iter_mut().find(|t| t.id == id) {
            Some(t) => *t = stored,
            None => return Err(ApiError::not_found("no target with this id")),
        }
        Ok(())
    })?;
    routing.target_changed(&target)?;
    routing.rebuild();
    record(
        &state,
        &caller,
        "target.update",
        audit_target(&target),
        200,
        target.to_api(),
    )
    .await?;
    Ok(Json(target_api(&routing, &target)).into_response())
}

async fn remove_target(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let routing = admin(&state, &caller)?;
    let target = find_target(&routing, &id)?;
    if id == LOCAL_TARGET {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "builtin",
            "the built-in local target cannot be deleted",
        ));
    }
    routing.store.update(|c| {
        let users: Vec<String> = c
            .routes
            .iter()
            .filter(|r| r.rules.iter().any(|rule| rule.target_ids.contains(&id)))
            .map(|r| r.id.clone())
            .collect();
        let is_default = c
            .settings
            .default_targets
            .as_ref()
            .is_some_and(|d| d.contains(&id));
        if !users.is_empty() || is_default {
            let mut used_by = users;
            if is_default {
                used_by.push("settings.defaultTargets".into());
            }
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "in_use",
                format!(
                    "the target is in use; change these first: {}",
                    used_by.join(", ")
                ),
            ));
        }
        c.targets.retain(|t| t.id != id);
        Ok(())
    })?;
    routing.rebuild();
    let discarded = routing.target_removed(&id);
    let mut request = target.to_api();
    request["discardedBacklog"] = json!(discarded);
    record(
        &state,
        &caller,
        "target.delete",
        audit_target(&target),
        204,
        request,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---------------------------------------------------------------------------------------------
// Routes

fn audit_route(r: &Route) -> (String, String, String) {
    (
        r.id.clone(),
        r.name.clone(),
        "trailkeep/routing/route".into(),
    )
}

async fn list_routes(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Response, ApiError> {
    let routing = admin(&state, &caller)?;
    let routes: Vec<Value> = routing
        .store
        .read(|c| c.routes.iter().map(Route::to_api).collect());
    Ok(Json(json!({ "routes": routes })).into_response())
}

fn find_route(routing: &Routing, id: &str) -> Result<Route, ApiError> {
    routing
        .store
        .read(|c| c.routes.iter().find(|r| r.id == id).cloned())
        .ok_or_else(|| ApiError::not_found("no route with this id"))
}

async fn read_route(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let routing = admin(&state, &caller)?;
    Ok(Json(find_route(&routing, &id)?.to_api()).into_response())
}

fn check_fields(p: &mut Problems, body: &Value, allowed: &[&str]) {
    if let Some(obj) = body.as_object() {
        for key in obj.keys() {
            if !allowed.contains(&key.as_str()) {
                p.add(key, format!("is not a field here ({})", allowed.join(", ")));
            }
        }
    }
}

async fn create_route(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let routing = admin(&state, &caller)?;
    let body = json_body(&body)?;
    let limits = routing.options.limits;
    let mut p = Problems::default();
    check_fields(&mut p, &body, &["name", "rules"]);
    let name = p.text(&body, "name", "name", true);
    let targets = routing.store.read(|c| c.all_targets());
    let rules = parse_rules(&mut p, body.get("rules"), &targets, &limits);
    p.into_result("route")?;
    let at = now();
    let route = Route {
        id: new_id("route"),
        name: name.unwrap_or_default(),
        rules,
        created_at: at.clone(),
        updated_at: at,
    };
    let stored = route.clone();
    routing.store.update(|c| {
        if c.routes.len() >= limits.max_routes {
            return Err(ApiError::unprocessable(format!(
                "at most {} routes (--routing-max-routes)",
                limits.max_routes
            ))
            .with_details(vec![crate::error::ErrorDetail {
                path: "".into(),
                reason: format!("{} routes exist already", c.routes.len()),
            }]));
        }
        // A target may have been deleted since the check above.
        check_targets_exist(c, &stored)?;
        c.routes.push(stored);
        Ok::<_, ApiError>(())
    })?;
    routing.rebuild();
    record(
        &state,
        &caller,
        "route.create",
        audit_route(&route),
        201,
        route.to_api(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(route.to_api())).into_response())
}

fn check_targets_exist(c: &super::store::ConfigFile, route: &Route) -> Result<(), ApiError> {
    let all = c.all_targets();
    for rule in &route.rules {
        for t in &rule.target_ids {
            if !all.iter().any(|x| &x.id == t) {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    format!("target {t:?} was deleted meanwhile; retry"),
                ));
            }
        }
    }
    Ok(())
}

async fn change_route(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let routing = admin(&state, &caller)?;
    let body = json_body(&body)?;
    let mut route = find_route(&routing, &id)?;
    let mut p = Problems::default();
    check_fields(&mut p, &body, &["name", "rules"]);
    if let Some(name) = p.text(&body, "name", "name", false) {
        if name.trim().is_empty() {
            p.add("name", "must not be empty");
        }
        route.name = name;
    }
    if body.get("rules").is_some() {
        let targets = routing.store.read(|c| c.all_targets());
        route.rules = parse_rules(&mut p, body.get("rules"), &targets, &routing.options.limits);
    }
    p.into_result("route")?;
    route.updated_at = now();
    let stored = route.clone();
    routing.store.update(|c| {
        check_targets_exist(c, &stored)?;
        match c.routes.iter_mut().find(|r| r.id == id) {
            Some(r) => *r = stored,
            None => return Err(ApiError::not_found("no route with this id")),
        }
        Ok(())
    })?;
    routing.rebuild();
    record(
        &state,
        &caller,
        "route.update",
        audit_route(&route),
        200,
        route.to_api(),
    )
    .await?;
    Ok(Json(route.to_api()).into_response())
}

async fn remove_route(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let routing = admin(&state, &caller)?;
    let route = find_route(&routing, &id)?;
    routing.store.update(|c| {
        c.routes.retain(|r| r.id != id);
        Ok::<_, ApiError>(())
    })?;
    routing.rebuild();
    record(
        &state,
        &caller,
        "route.delete",
        audit_route(&route),
        204,
        route.to_api(),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---------------------------------------------------------------------------------------------
// Settings

async fn read_settings(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Response, ApiError> {
    let routing = admin(&state, &caller)?;
    let v = routing.store.read(|c| {
        c.settings
            .to_api(&routing.options.location, &routing.options.limits)
    });
    Ok(Json(v).into_response())
}

async fn change_settings(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let routing = admin(&state, &caller)?;
    let body = json_body(&body)?;
    let at = now();
    let settings = routing.store.update(|c| {
        let mut p = Problems::default();
        let targets = c.all_targets();
        let mut settings = c.settings.clone();
        apply_settings(&mut p, &body, &mut settings, &targets);
        p.into_result("settings")?;
        settings.updated_at = at;
        c.settings = settings.clone();
        Ok::<_, ApiError>(settings)
    })?;
    routing.rebuild();
    let api = settings.to_api(&routing.options.location, &routing.options.limits);
    record(
        &state,
        &caller,
        "settings.update",
        (
            "settings".into(),
            format!("routing settings of instance {}", routing.options.location),
            "trailkeep/routing/settings".into(),
        ),
        200,
        api.clone(),
    )
    .await?;
    Ok(Json(api).into_response())
}
