//! The access-management API: accounts (`/v1/accounts`), API keys (`/v1/keys`) and `/v1/whoami`.
//! Admins manage; every other key sees only itself and its own accounts. Every change is recorded
//! (self-audit) before it is answered.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::accounts::{AccountError, NewAccount};
use crate::app::{AppState, Caller};
use crate::audit::AuditRecord;
use crate::auth::{AccountScope, KeyInfo, KeyStoreError, NewKey, Principal};
use crate::core::format_time;
use crate::error::{ApiError, ErrorDetail};

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/v1/whoami", get(whoami))
        .route("/v1/accounts", post(create_account).get(list_accounts))
        .route("/v1/accounts/{id}", get(get_account))
        .route("/v1/keys", post(create_key).get(list_keys))
        .route("/v1/keys/{id}", get(get_key).delete(revoke_key))
        .route("/v1/keys/{id}/rotate", post(rotate_key))
        .with_state(state)
}

fn require_admin(caller: &Principal) -> Result<(), ApiError> {
    if caller.role.is_admin() {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "only admin keys manage keys and accounts",
        ))
    }
}

/// Parses a JSON body into `T`, answering 400/422 with the position of the problem.
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::unprocessable(format!("the body is not a valid request: {e}")).with_details(vec![
            ErrorDetail {
                path: format!("line {} column {}", e.line(), e.column()),
                reason: e.to_string(),
            },
        ])
    })
}

/// What the key itself is: its id, name, role, accounts and limits (never its secret).
async fn whoami(State(state): State<AppState>, Caller(caller): Caller) -> Response {
    let now = OffsetDateTime::now_utc();
    let info = state.keys.get(&caller.key_id, now);
    Json(json!({
        "id": caller.key_id,
        "name": caller.key_name,
        "role": caller.role,
        "accounts": caller.accounts,
        "defaultAccount": caller.default_account,
        "actionPrefixes": caller.action_prefixes,
        "expiresAt": info.and_then(|i| i.expires_at),
    }))
    .into_response()
}

// ---------------------------------------------------------------------------------------------
// Accounts

fn account_json(state: &AppState, id: &str) -> Value {
    let registered = state.accounts.get(id);
    let size = state.core.ledger.tree_head(id).map_or(0, |t| t.size);
    json!({
        "id": id,
        "name": registered.as_ref().map_or(id, |a| a.name.as_str()),
        "registered": registered.is_some(),
        "createdAt": registered.as_ref().map(|a| a.created_at.clone()),
        "createdBy": registered.as_ref().map(|a| a.created_by.clone()),
        "events": size,
    })
}

/// Every account id the caller may see that exists (registered, or with a log), sorted.
fn visible_accounts(state: &AppState, caller: &Principal) -> Vec<String> {
    let mut ids: Vec<String> = state
        .accounts
        .list()
        .into_iter()
        .map(|a| a.id)
        .chain(state.core.ledger.accounts())
        .filter(|id| caller.accounts.allows(id))
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

async fn create_account(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let spec: NewAccount = parse_body(&body)?;
    let now = format_time(OffsetDateTime::now_utc());
    let account = state
        .accounts
        .create(spec, &caller.key_id, &now)
        .map_err(|e| match e {
            AccountError::Invalid { field, reason } => {
                ApiError::unprocessable(format!("{field}: {reason}")).with_details(vec![
                    ErrorDetail {
                        path: field.to_string(),
                        reason,
                    },
                ])
            }
            AccountError::Exists(id) => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("the account {id:?} already exists"),
            ),
            other => ApiError::store(other),
        })?;
    crate::audit::record_change(
        &state.core,
        &caller,
        &account.id,
        "account.create",
        (
            format!("crn:v1:trailkeep:public:trailkeep::a/{}:::", account.id),
            account.name.clone(),
            "trailkeep/account".to_string(),
        ),
        201,
        json!({"id": account.id, "name": account.name}),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(account_json(&state, &account.id))).into_response())
}

async fn list_accounts(State(state): State<AppState>, Caller(caller): Caller) -> Response {
    let accounts: Vec<Value> = visible_accounts(&state, &caller)
        .iter()
        .map(|id| account_json(&state, id))
        .collect();
    Json(json!({ "accounts": accounts })).into_response()
}

async fn get_account(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    // Another account answers exactly like a missing one.
    if !caller.accounts.allows(&id) || !state.account_exists(&id) {
        return Err(ApiError::not_found("no such account"));
    }
    Ok(Json(account_json(&state, &id)).into_response())
}

// ---------------------------------------------------------------------------------------------
// Keys

fn key_error(e: KeyStoreError) -> ApiError {
    match e {
        KeyStoreError::Invalid { field, reason } => {
            ApiError::unprocessable(format!("{field}: {reason}")).with_details(vec![ErrorDetail {
                path: field.to_string(),
                reason,
            }])
        }
        KeyStoreError::NotFound => ApiError::not_found("no key with this id"),
        other => ApiError::store(other),
    }
}

/// Records a key change in every account the key covers (the system account for keys that cover
/// all), before the change is answered.
async fn record_key_change(
    state: &AppState,
    caller: &Principal,
    verb: &str,
    key: &KeyInfo,
    status: u16,
) -> Result<(), ApiError> {
    let accounts = match &key.accounts {
        AccountScope::All => vec![state.core.system_account.clone()],
        AccountScope::Only(ids) => ids.clone(),
    };
    let request = json!({
        "id": key.id,
        "name": key.name,
        "role": key.role,
        "accounts": key.accounts,
        "actionPrefixes": key.action_prefixes,
        "expiresAt": key.expires_at,
    });
    let records = accounts
        .iter()
        .map(|account| {
            AuditRecord::new(
                account,
                &format!("apikey.{verb}"),
                caller,
                (key.id.clone(), key.name.clone(), "trailkeep/apikey".into()),
            )
            .status(status)
            .client(caller.client)
            .request(request.clone())
        })
        .collect();
    state.core.record(records).await
}

fn key_with_secret(key: &KeyInfo, secret: &str) -> Value {
    let mut v = serde_json::to_value(key).expect("a key serialises");
    v["secret"] = json!(secret);
    v
}

async fn create_key(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let spec: NewKey = parse_body(&body)?;
    let (key, secret) = state
        .keys
        .create(spec, &caller.key_id, OffsetDateTime::now_utc(), |a| {
            state.account_exists(a)
        })
        .map_err(key_error)?;
    record_key_change(&state, &caller, "create", &key, 201).await?;
    Ok((StatusCode::CREATED, Json(key_with_secret(&key, &secret))).into_response())
}

async fn list_keys(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let keys = state.keys.list(OffsetDateTime::now_utc());
    Ok(Json(json!({ "keys": keys })).into_response())
}

async fn get_key(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let key = state
        .keys
        .get(&id, OffsetDateTime::now_utc())
        .ok_or_else(|| ApiError::not_found("no key with this id"))?;
    Ok(Json(key).into_response())
}

async fn rotate_key(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let (key, secret) = state
        .keys
        .rotate(&id, OffsetDateTime::now_utc())
        .map_err(key_error)?;
    record_key_change(&state, &caller, "rotate", &key, 200).await?;
    Ok(Json(key_with_secret(&key, &secret)).into_response())
}

async fn revoke_key(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    require_admin(&caller)?;
    let key = state
        .keys
        .revoke(&id, OffsetDateTime::now_utc())
        .map_err(key_error)?;
    record_key_change(&state, &caller, "revoke", &key, 200).await?;
    Ok(Json(key).into_response())
}
