//! `/v1/alerts`: alert rules on views, their history, and a test send per channel.
//!
//! Authorisation follows the rule's view: managers and admins of the view's account create,
//! change, mute and delete; readers of the account list and read rules and their history. A rule
//! of another account answers 404, exactly like a missing one. Channel secrets are write-only.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{Value, json};
use time::OffsetDateTime;
use trailkeep_index::query::parse_duration;

use super::model::{
    MAX_OBJECTS, Problems, Rule, parse_channels, parse_condition, parse_optional_duration,
};
use super::outbox::HistoryEntry;
use super::store::new_id;
use super::views::visible_view;
use super::{Alerts, alerts_of, can_manage, can_see, json_body};
use crate::app::{AppState, Caller};
use crate::auth::Principal;
use crate::core::format_time;
use crate::error::ApiError;

pub fn routes(state: AppState) -> Router {
    use axum::routing::{get, post};
    Router::new()
        .route("/v1/alerts", get(list).post(create))
        .route("/v1/alerts/{id}", get(read).patch(change).delete(remove))
        .route("/v1/alerts/{id}/history", get(history))
        .route("/v1/alerts/{id}/test", post(test_send))
        .with_state(state)
}

fn not_found() -> ApiError {
    ApiError::not_found("no alert rule with this id")
}

fn visible_rule(alerts: &Alerts, caller: &Principal, id: &str) -> Result<Rule, ApiError> {
    alerts
        .config
        .read(|c| c.rules.iter().find(|r| r.id == id).cloned())
        .filter(|r| can_see(caller, &r.account))
        .ok_or_else(not_found)
}

fn manageable_rule(alerts: &Alerts, caller: &Principal, id: &str) -> Result<Rule, ApiError> {
    let rule = visible_rule(alerts, caller, id)?;
    if !can_manage(caller, &rule.account) {
        return Err(ApiError::forbidden(
            "this key may not change alert rules (manager or admin role needed)",
        ));
    }
    Ok(rule)
}

async fn list(State(state): State<AppState>, Caller(caller): Caller) -> Result<Response, ApiError> {
    let alerts = alerts_of(&state)?;
    if !caller.role.can_read() {
        return Err(ApiError::forbidden("this key may not read alert rules"));
    }
    let rules: Vec<Value> = alerts.config.read(|c| {
        c.rules
            .iter()
            .filter(|r| can_see(&caller, &r.account))
            .map(Rule::to_api)
            .collect()
    });
    Ok(Json(json!({ "alerts": rules })).into_response())
}

async fn read(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let alerts = alerts_of(&state)?;
    Ok(Json(visible_rule(&alerts, &caller, &id)?.to_api()).into_response())
}

/// `mutedUntil` (RFC 3339 or null) or `muteFor` (a duration from now).
fn parse_mute(p: &mut Problems, body: &Value) -> Option<Option<String>> {
    if let Some(v) = body.get("muteFor").filter(|v| !v.is_null()) {
        return match v.as_str().map(parse_duration) {
            Some(Ok(d)) if d > time::Duration::ZERO => {
                Some(Some(format_time(OffsetDateTime::now_utc() + d)))
            }
            _ => {
                p.add("muteFor", "must be a duration such as 30m or 2h");
                None
            }
        };
    }
    match body.get("mutedUntil") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(Value::String(s)) => {
            match OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
                Ok(t) => Some(Some(format_time(t))),
                Err(_) => {
                    p.add("mutedUntil", "must be an RFC 3339 time or null");
                    None
                }
            }
        }
        Some(_) => {
            p.add("mutedUntil", "must be an RFC 3339 time or null");
            None
        }
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
    let view_id = p.text(&body, "viewId", "viewId", true);
    let view = match &view_id {
        Some(id) => match visible_view(&alerts, &caller, id) {
            Ok(v) => Some(v),
            Err(_) => {
                p.add("viewId", "no view with this id");
                None
            }
        },
        None => None,
    };
    if let Some(v) = &view
        && !can_manage(&caller, &v.account)
    {
        return Err(ApiError::forbidden(
            "this key may not create alert rules (manager or admin role needed)",
        ));
    }
    let condition = parse_condition(&mut p, body.get("condition"));
    let channels = parse_channels(&mut p, body.get("channels"));
    let renotify = parse_optional_duration(&mut p, "renotify", body.get("renotify"));
    let muted_until = parse_mute(&mut p, &body).flatten();
    p.into_result("alert rule")?;
    let (Some(name), Some(view), Some(condition), Some(channels), Some(renotify)) =
        (name, view, condition, channels, renotify)
    else {
        return Err(ApiError::internal("validated rule lacks a field"));
    };
    let now = format_time(OffsetDateTime::now_utc());
    let rule = Rule {
        id: new_id("alert"),
        name,
        view_id: view.id.clone(),
        account: view.account.clone(),
        condition,
        channels,
        renotify,
        muted_until,
        owner: caller.key_id.clone(),
        created_at: now.clone(),
        updated_at: now,
    };
    let stored = rule.clone();
    alerts.config.update(|c| {
        if c.rules.len() >= MAX_OBJECTS {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "limit",
                format!("at most {MAX_OBJECTS} alert rules"),
            ));
        }
        if !c.views.iter().any(|v| v.id == stored.view_id) {
            return Err(ApiError::unprocessable("the view was deleted"));
        }
        c.rules.push(stored);
        Ok(())
    })?;
    record_rule_change(&state, &caller, "create", &rule, 201).await?;
    Ok((StatusCode::CREATED, Json(rule.to_api())).into_response())
}

async fn change(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let alerts = alerts_of(&state)?;
    let body = json_body(&body)?;
    let mut rule = manageable_rule(&alerts, &caller, &id)?;
    let mut p = Problems::default();
    let Some(obj) = body.as_object() else {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    };
    for key in obj.keys() {
        if ![
            "name",
            "condition",
            "channels",
            "renotify",
            "mutedUntil",
            "muteFor",
        ]
        .contains(&key.as_str())
        {
            p.add(
                key,
                "cannot be changed (name, condition, channels, renotify, mutedUntil, muteFor can)",
            );
        }
    }
    if let Some(name) = p.text(&body, "name", "name", false) {
        rule.name = name;
    }
    if obj.contains_key("condition")
        && let Some(c) = parse_condition(&mut p, body.get("condition"))
    {
        rule.condition = c;
    }
    if obj.contains_key("channels")
        && let Some(c) = parse_channels(&mut p, body.get("channels"))
    {
        rule.channels = c;
    }
    if obj.contains_key("renotify")
        && let Some(r) = parse_optional_duration(&mut p, "renotify", body.get("renotify"))
    {
        rule.renotify = r;
    }
    if let Some(m) = parse_mute(&mut p, &body) {
        rule.muted_until = m;
    }
    p.into_result("alert rule")?;
    rule.updated_at = format_time(OffsetDateTime::now_utc());
    let stored = rule.clone();
    alerts.config.update(|c| {
        match c.rules.iter_mut().find(|r| r.id == id) {
            Some(r) => *r = stored,
            None => return Err(not_found()),
        }
        Ok(())
    })?;
    record_rule_change(&state, &caller, "update", &rule, 200).await?;
    Ok(Json(rule.to_api()).into_response())
}

async fn remove(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let alerts = alerts_of(&state)?;
    let rule = manageable_rule(&alerts, &caller, &id)?;
    alerts.config.update(|c| {
        c.rules.retain(|r| r.id != id);
        Ok::<_, ApiError>(())
    })?;
    record_rule_change(&state, &caller, "delete", &rule, 204).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Self-audit: a rule change is recorded in the rule's account before it is answered (channel
/// secrets are masked, as in every answer).
async fn record_rule_change(
    state: &AppState,
    caller: &Principal,
    verb: &str,
    rule: &Rule,
    status: u16,
) -> Result<(), ApiError> {
    crate::audit::record_change(
        &state.core,
        caller,
        &rule.account,
        &format!("alert.{verb}"),
        (rule.id.clone(), rule.name.clone(), "trailkeep/alert".into()),
        status,
        rule.to_api(),
    )
    .await
}

async fn history(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let alerts = alerts_of(&state)?;
    let rule = visible_rule(&alerts, &caller, &id)?;
    let pending: Vec<Value> = alerts
        .outbox
        .pending()
        .into_iter()
        .filter(|d| d.rule_id == rule.id)
        .map(|d| {
            json!({
                "notificationId": d.notification_id,
                "channel": format!("{}#{}", d.channel_type, d.channel),
                "attempts": d.attempts,
                "lastError": d.last_error,
            })
        })
        .collect();
    Ok(Json(json!({
        "history": alerts.history.of_rule(&rule.id),
        "pending": pending,
    }))
    .into_response())
}

/// Sends a test notification to every channel of the rule now (or `?channel=N` only), without
/// the outbox, and answers how each went.
async fn test_send(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let alerts = alerts_of(&state)?;
    let rule = manageable_rule(&alerts, &caller, &id)?;
    let mut only = None;
    for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match (k.as_ref(), v.parse::<usize>()) {
            ("channel", Ok(n)) if n < rule.channels.len() => only = Some(n),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter or channel {k}={v}; channels are numbered from 0 to {}",
                    rule.channels.len().saturating_sub(1)
                )));
            }
        }
    }
    let view = alerts
        .config
        .read(|c| c.views.iter().find(|v| v.id == rule.view_id).cloned())
        .ok_or_else(not_found)?;
    let test_id = new_id("test");
    let fire = super::rule_state::Fire {
        kind: super::rule_state::FireKind::Fired,
        at: 0,
        count: 0,
        trigger: None,
    };
    let mut payload = super::evaluator::payload(
        &test_id,
        &rule,
        &view,
        &fire,
        OffsetDateTime::now_utc(),
        Vec::new(),
    );
    payload["kind"] = json!("test");
    let mut results = Vec::new();
    for (n, channel) in rule.channels.iter().enumerate() {
        if only.is_some_and(|o| o != n) {
            continue;
        }
        let outcome = alerts.sender.send(channel, &payload).await;
        let mut entry = HistoryEntry::new(&rule.id, "test");
        entry.notification_id = Some(test_id.clone());
        entry.channel = Some(format!("{}#{n}", channel.kind()));
        entry.reason = outcome.as_ref().err().cloned();
        alerts.history.record(entry);
        results.push(json!({
            "channel": n,
            "type": channel.kind(),
            "ok": outcome.is_ok(),
            "error": outcome.err(),
        }));
    }
    Ok(Json(json!({ "notificationId": test_id, "results": results })).into_response())
}
