//! `/v1/retention`:
//!
//! * `GET /v1/retention` (admin) — the default, the lowering delay, the last run and every
//!   account's policy (days in force, its source, a pending lowering and when it applies, how far
//!   bodies were removed);
//! * `GET /v1/retention/{account}` — one account's policy, for any key that may read the account
//!   (404 otherwise, as for a missing account);
//! * `PUT /v1/retention/{account}` (admin) — `{"days": N}`, `{"days": null}` (keep forever) or
//!   `{"useDefault": true}`; raising applies at once, lowering after the delay; recorded in the
//!   account's log either way (`trailkeep.retention.update`);
//! * `POST /v1/retention/run` (admin) — apply retention now and answer what was removed.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Change, Retention};
use crate::app::{AppState, Caller};
use crate::auth::Principal;
use crate::error::ApiError;

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/v1/retention", get(status))
        .route("/v1/retention/run", post(run))
        .route("/v1/retention/{account}", get(show).put(set))
        .with_state(state)
}

fn admin(caller: &Principal) -> Result<(), ApiError> {
    if caller.role.is_admin() {
        Ok(())
    } else {
        Err(ApiError::forbidden("only admin keys may manage retention"))
    }
}

fn retention(state: &AppState) -> Result<&std::sync::Arc<Retention>, ApiError> {
    state
        .core
        .retention
        .get()
        .ok_or_else(|| ApiError::internal("retention is not started"))
}

fn check_account(account: &str) -> Result<(), ApiError> {
    if trailkeep_event::is_valid_account_id(account) {
        Ok(())
    } else {
        Err(ApiError::bad_request("not a valid account id"))
    }
}

async fn status(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Value>, ApiError> {
    admin(&caller)?;
    Ok(Json(retention(&state)?.status()))
}

async fn show(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(account): Path<String>,
) -> Result<Json<super::AccountPolicy>, ApiError> {
    check_account(&account)?;
    if !(caller.role.is_admin() || caller.role.can_read() && caller.accounts.allows(&account)) {
        return Err(ApiError::not_found(format!("no account {account}")));
    }
    Ok(Json(retention(&state)?.policy(&account)))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SetBody {
    /// Present (a number or null) to set days.
    #[serde(default, deserialize_with = "some_value")]
    days: Option<Option<u64>>,
    #[serde(default)]
    use_default: bool,
}

/// Tells `"days": null` (keep forever) from a missing `days`.
fn some_value<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(d).map(Some)
}

async fn set(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(account): Path<String>,
    body: Result<Json<SetBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<super::ChangeOutcome>, ApiError> {
    admin(&caller)?;
    check_account(&account)?;
    let Json(body) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let change = match (body.days, body.use_default) {
        (Some(_), true) => {
            return Err(ApiError::bad_request(
                "give either days or useDefault, not both",
            ));
        }
        (Some(None), false) => Change::Days(None),
        (Some(Some(d)), false) => Change::Days(Some(super::check_days(d)?)),
        (None, true) => Change::UseDefault,
        (None, false) => {
            return Err(ApiError::bad_request(
                "give days (a number, or null to keep forever) or useDefault: true",
            ));
        }
    };
    let retention = retention(&state)?.clone();
    let outcome = retention
        .change(&account, change, &caller.key_id)
        .map_err(ApiError::store)?;
    let request = match change {
        Change::Days(d) => json!({"days": d}),
        Change::UseDefault => json!({"useDefault": true}),
    };
    crate::audit::record_change(
        &state.core,
        &caller,
        &account,
        "retention.update",
        super::target(&account),
        200,
        json!({
            "change": request,
            "previousDays": outcome.previous_days,
            "result": outcome.result,
            "effectiveAt": outcome.policy.pending.as_ref().map(|p| p.effective_at.clone()),
        }),
    )
    .await?;
    Ok(Json(outcome))
}

async fn run(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Value>, ApiError> {
    admin(&caller)?;
    let retention = retention(&state)?.clone();
    let report = retention.run().await;
    crate::audit::record_change(
        &state.core,
        &caller,
        &state.core.system_account,
        "retention.run",
        super::target(&state.core.system_account),
        200,
        json!({}),
    )
    .await?;
    Ok(Json(json!({"run": report})))
}
