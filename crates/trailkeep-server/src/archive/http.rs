//! `/v1/archive` (admin keys only; every other role gets 403):
//!
//! * `GET /v1/archive` — the target (never its secret), the last run, and per account how far
//!   it is archived (`archivedCount`, `archivedThroughIndex`), the signed size and the lag;
//! * `POST /v1/archive/run` — archive now and answer what the run did (502 when the bucket
//!   failed; the cursor is kept and the background task retries);
//! * `GET /v1/archive/objects?account=` — the objects in the bucket, keys relative to the
//!   target's prefix.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::{Archive, ArchiveStatus};
use crate::app::{AppState, Caller};
use crate::auth::Principal;
use crate::error::ApiError;

/// Objects a listing returns at most.
const MAX_LISTED: usize = 100_000;

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/v1/archive", get(status))
        .route("/v1/archive/run", post(run))
        .route("/v1/archive/objects", get(objects))
        .with_state(state)
}

fn admin(caller: &Principal) -> Result<(), ApiError> {
    if caller.role.is_admin() {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "only admin keys may manage the archive",
        ))
    }
}

fn archive(state: &AppState) -> Result<&std::sync::Arc<Archive>, ApiError> {
    state.core.archive.get().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "archive_not_configured",
            "no archive target is configured (archive_bucket and friends, see docs/archive.md)",
        )
    })
}

async fn status(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<ArchiveStatus>, ApiError> {
    admin(&caller)?;
    Ok(Json(match state.core.archive.get() {
        Some(a) => a.status(),
        None => ArchiveStatus {
            enabled: false,
            target: None,
            interval_seconds: None,
            last_success: None,
            last_error: None,
            last_error_at: None,
            consecutive_failures: 0,
            accounts: Vec::new(),
        },
    }))
}

async fn run(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    admin(&caller)?;
    let archive = archive(&state)?.clone();
    let result = archive.run().await;
    let status = if result.is_ok() { 200 } else { 502 };
    crate::audit::record_change(
        &state.core,
        &caller,
        &state.core.system_account,
        "archive.run",
        (
            format!(
                "crn:v1:trailkeep:public:trailkeep::a/{}::archive:",
                state.core.system_account
            ),
            archive.bucket().describe().to_string(),
            "trailkeep/archive".to_string(),
        ),
        status,
        json!({}),
    )
    .await?;
    match result {
        Ok(report) => Ok(Json(json!({"run": report, "status": archive.status()}))),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "archive_failed",
            format!("archiving failed (the cursor is kept; the run is retried): {e}"),
        )),
    }
}

#[derive(Debug, Deserialize)]
struct ObjectsQuery {
    account: Option<String>,
}

async fn objects(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Query(q): Query<ObjectsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    admin(&caller)?;
    let archive = archive(&state)?;
    let dir = match &q.account {
        Some(a) if trailkeep_event::is_valid_account_id(a) => a.clone(),
        Some(_) => return Err(ApiError::bad_request("account is not a valid account id")),
        None => String::new(),
    };
    let list = archive
        .bucket()
        .list(&dir, MAX_LISTED)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "archive_failed", e.to_string()))?;
    let objects: Vec<_> = list
        .into_iter()
        .map(|o| json!({"key": o.key, "size": o.size}))
        .collect();
    Ok(Json(json!({ "objects": objects })))
}
