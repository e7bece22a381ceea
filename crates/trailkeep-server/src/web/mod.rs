//! The web UI (issue #7): hand-written HTML, CSS and JavaScript modules embedded in the binary and
//! served at `/` and `/ui/…`, browser sessions ([`session`]), and the one endpoint the UI needs
//! that the `/v1` API lacked (`GET /v1/query/parse`: every error of the lenient query parser, with
//! positions).
//!
//! The UI is a client of the `/v1` JSON API like any other: it holds no privilege of its own, and
//! what a signed-in key may see is exactly what the same key may see with `Authorization: Bearer`.
//! There is no build step and nothing is fetched from elsewhere: the strict
//! `Content-Security-Policy` allows scripts, styles and connections to this origin only, and no
//! inline script.
//!
//! **Architecture Invariant:** this module never reads or writes the ledger or the index itself;
//! it answers with static assets, sessions and the query parser.

pub mod session;

use std::sync::OnceLock;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::app::{AppState, Caller};
use crate::audit::AuditRecord;
use crate::auth::{AccountScope, AuthFailure, Principal};
use crate::error::ApiError;

pub use session::Sessions;

/// The `/` and `/ui/…` routes, and `/v1/query/parse`.
pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route("/ui/assets/{file}", get(asset))
        .route("/ui/session", get(whoami).post(sign_in).delete(sign_out))
        .route("/ui/{page}", get(page))
        .route("/ui/scopes", get(scopes))
        .route("/v1/query/parse", get(parse_query))
        .with_state(state)
}

// ---------------------------------------------------------------------------------------------
// Authentication of a request (called by `app::authenticate`)

/// How one request is authenticated: by `Authorization: Bearer` when it has that header (exactly
/// as before the UI existed), else by the session cookie. The second value is the refusal of a
/// cookie-authenticated write without the session's CSRF token.
pub fn authenticate_request(
    state: &AppState,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> (Result<Principal, AuthFailure>, Option<ApiError>) {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or(""));
    let now = OffsetDateTime::now_utc();
    let cookie = session::cookie_value(headers);
    let sign_in = *method == Method::POST && path == "/ui/session";
    if sign_in && authorization.is_none() && cookie.is_none() {
        // The key is in the body (checked by the handler); a refused sign-in is recorded as an
        // invalid key, not as a missing header.
        return (Err(AuthFailure::Invalid), None);
    }
    let (Some(id), None) = (cookie, authorization) else {
        return (state.keys.authenticate(authorization, now), None);
    };
    match state.sessions.authenticate(id, &state.keys) {
        Err(failure) => (Err(failure), None),
        Ok(auth) => {
            let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
            // Signing in again over a live session needs no token (it is not a write made with
            // the session's authority; the handler checks the key in the body).
            let presented = headers
                .get(session::CSRF_HEADER)
                .and_then(|v| v.to_str().ok());
            let refusal = (!safe && !sign_in && !session::csrf_matches(&auth.csrf, presented))
                .then(|| {
                    ApiError::forbidden(
                        "a change made with a browser session must carry the session's \
                         X-CSRF-Token header",
                    )
                });
            (Ok(auth.principal), refusal)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Assets

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            bytes: include_bytes!(concat!("../../web/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("search.js", JS),
    asset!("histogram.js", JS),
    asset!("detail.js", JS),
    asset!("views.js", JS),
    asset!("timeline.js", JS),
    asset!("integrity.js", JS),
    asset!("verify.js", JS),
    asset!("favicon.svg", "image/svg+xml"),
];

/// The pages of the single-page app; each answers `index.html` so a shared URL opens its page.
const PAGES: &[&str] = &[
    "search",
    "views",
    "alerts",
    "timeline",
    "integrity",
    "signin",
];

/// What every UI answer carries. Scripts, styles, images and connections come from this origin
/// only; nothing may frame the UI.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; font-src 'self'; form-action 'self'; base-uri 'none'; \
                   frame-ancestors 'none'";

fn etags() -> &'static Vec<String> {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| format!("\"{}\"", &hex::encode(Sha256::digest(a.bytes))[..16]))
            .collect()
    })
}

fn serve_asset(i: usize, headers: &HeaderMap) -> Response {
    let a = &ASSETS[i];
    let etag = &etags()[i];
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        Bytes::from_static(a.bytes).into_response()
    };
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    // Revalidated on every use (cheap with the ETag), so an upgraded server is seen at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    security_headers(h);
    response
}

fn security_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

async fn index(headers: HeaderMap) -> Response {
    serve_asset(0, &headers)
}

async fn page(Path(page): Path<String>, headers: HeaderMap) -> Response {
    if PAGES.contains(&page.as_str()) {
        serve_asset(0, &headers)
    } else {
        ApiError::not_found("no such page").into_response()
    }
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().position(|a| a.name == file) {
        Some(i) => serve_asset(i, &headers),
        None => ApiError::not_found("no such asset").into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// Sessions

/// The longest sign-in body accepted.
const MAX_SIGN_IN_BYTES: usize = 4096;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    key: String,
}

fn session_target(state: &AppState) -> (String, String, String) {
    let system = &state.core.system_account;
    (
        format!("crn:v1:trailkeep:public:trailkeep::a/{system}::ui:session"),
        "web UI session".to_string(),
        "trailkeep/session".to_string(),
    )
}

/// What the UI shows about the signed-in key: its role, its accounts and what it may do.
fn describe(state: &AppState, p: &Principal, csrf: Option<&str>) -> serde_json::Value {
    let accounts: Vec<String> = match &p.accounts {
        AccountScope::All => {
            let mut all = state.core.ledger.accounts();
            for a in state.accounts.list() {
                if !all.contains(&a.id) {
                    all.push(a.id);
                }
            }
            all.sort();
            all
        }
        AccountScope::Only(ids) => ids.clone(),
    };
    json!({
        "signedIn": true,
        "key": {"id": p.key_id, "name": p.key_name, "role": p.role},
        "allAccounts": matches!(p.accounts, AccountScope::All),
        "accounts": accounts,
        "defaultAccount": p.default_account,
        "can": {
            "read": p.role.can_read(),
            "manage": matches!(p.role, crate::auth::Role::Manager | crate::auth::Role::Admin),
            "admin": p.role.is_admin(),
        },
        "csrfToken": csrf,
    })
}

/// `GET /ui/session`: who is signed in with this browser (never a 401, so that opening the UI
/// signed out is not recorded as a failed authentication).
async fn whoami(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let found = session::cookie_value(&headers)
        .and_then(|id| state.sessions.authenticate(id, &state.keys).ok());
    let mut response = match found {
        Some(auth) => Json(describe(&state, &auth.principal, Some(&auth.csrf))).into_response(),
        None => Json(json!({"signedIn": false})).into_response(),
    };
    no_store(response.headers_mut());
    response
}

fn no_store(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// `POST /ui/session {"key": "tk_…"}`: checks the key like the Bearer path, starts a session,
/// sets the cookie and answers the CSRF token.
async fn sign_in(
    State(state): State<AppState>,
    connect: Option<axum::Extension<ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    // A JSON body cannot be sent cross-site without a CORS preflight, which this server never
    // grants: no other site can sign a browser in with a key of its choosing.
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json_body {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "sign in with Content-Type: application/json and {\"key\": \"…\"}",
        ));
    }
    if body.len() > MAX_SIGN_IN_BYTES {
        return Err(ApiError::payload_too_large(format!(
            "the sign-in body is larger than {MAX_SIGN_IN_BYTES} bytes"
        )));
    }
    let SignIn { key } = serde_json::from_slice(&body)
        .map_err(|_| ApiError::bad_request("the sign-in body must be {\"key\": \"<API key>\"}"))?;
    let mut principal = state
        .keys
        .authenticate(
            Some(&format!("Bearer {}", key.trim())),
            OffsetDateTime::now_utc(),
        )
        .map_err(|f| ApiError::unauthorized(f.message()))?;
    principal.client = connect.map(|c| c.0.0);
    let new = state
        .sessions
        .create(&principal, &state.keys)
        .map_err(ApiError::internal)?;
    state.core.record_in_background(vec![
        AuditRecord::new(
            &state.core.system_account,
            "session.create",
            &principal,
            session_target(&state),
        )
        .client(principal.client)
        .status(201),
    ]);
    let secure = state.config.tls.is_some();
    let mut response = (
        StatusCode::CREATED,
        Json(describe(&state, &principal, Some(&new.csrf))),
    )
        .into_response();
    let h = response.headers_mut();
    h.insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&session::set_cookie(&new.id, secure)).map_err(ApiError::internal)?,
    );
    no_store(h);
    Ok(response)
}

/// `DELETE /ui/session`: signs out (the CSRF token is checked by the middleware like for any
/// write made with the cookie).
async fn sign_out(
    State(state): State<AppState>,
    Caller(caller): Caller,
    headers: HeaderMap,
) -> Response {
    if let Some(id) = session::cookie_value(&headers) {
        state.sessions.remove(id);
        state.core.record_in_background(vec![
            AuditRecord::new(
                &state.core.system_account,
                "session.delete",
                &caller,
                session_target(&state),
            )
            .client(caller.client),
        ]);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&session::clear_cookie(state.config.tls.is_some())) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

// ---------------------------------------------------------------------------------------------
// The lenient query parser

/// `GET /v1/query/parse?q=…`: every syntax and type error of `q` with its position, for marking
/// errors in place while the user types. Offsets are given in bytes and in UTF-16 code units
/// (what a browser's string indices count).
async fn parse_query(Caller(_): Caller, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let raw = raw.unwrap_or_default();
    let mut q = String::new();
    for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
        match k.as_ref() {
            "q" => q = v.into_owned(),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}"
                )));
            }
        }
    }
    if q.len() > 2 * trailkeep_index::query::MAX_QUERY_BYTES {
        return Err(ApiError::payload_too_large(
            "the query is too long to check",
        ));
    }
    let (_, errors) = trailkeep_index::query::plan_lenient(&q);
    let utf16 = |byte: usize| -> usize {
        let byte = byte.min(q.len());
        let mut b = byte;
        while !q.is_char_boundary(b) {
            b -= 1;
        }
        q[..b].encode_utf16().count()
    };
    let errors: Vec<_> = errors
        .iter()
        .map(|e| {
            json!({
                "start": e.span.start,
                "end": e.span.end,
                "start16": utf16(e.span.start),
                "end16": utf16(e.span.end),
                "line": e.line,
                "column": e.column,
                "expected": e.expected,
                "message": e.message,
            })
        })
        .collect();
    Ok(Json(json!({"valid": errors.is_empty(), "errors": errors})).into_response())
}

/// `GET /ui/scopes?targetId=…`: the parents of an object, nearest first, as the index derives
/// them for the `scope` field (so the UI can offer "everything in this project" as a filter).
/// Pure: it reads no data, only the id's structure.
async fn scopes(Caller(_): Caller, RawQuery(raw): RawQuery) -> Result<Response, ApiError> {
    let raw = raw.unwrap_or_default();
    let mut id = None;
    for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
        match k.as_ref() {
            "targetId" => id = Some(v.into_owned()),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}"
                )));
            }
        }
    }
    let id = id.ok_or_else(|| ApiError::bad_request("targetId is required"))?;
    if id.len() > 4096 {
        return Err(ApiError::bad_request("targetId is longer than 4096 bytes"));
    }
    let parents = trailkeep_event::object::ancestors(&id);
    Ok(Json(json!({ "targetId": id, "parents": parents })).into_response())
}

#[cfg(test)]
mod tests;
