//! The HTTP application: shared state, the router, authentication (with self-audit of failed
//! authentications and denials), per-key rate limits, and the operations endpoints.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, FromRef, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use time::OffsetDateTime;

use crate::accounts::AccountStore;
use crate::audit::{AuditRecord, Initiator};
use crate::auth::{AuthFailure, KeyStore, Principal};
use crate::config::ServerConfig;
use crate::core::Core;
use crate::error::ApiError;
use crate::limits::{RateLimiter, Spend};
use crate::metrics::{Metrics, ResultLabel};

/// State shared by every handler.
#[derive(Debug, Clone)]
pub struct AppState {
    pub config: Arc<ServerConfig>,
    pub keys: Arc<KeyStore>,
    pub accounts: Arc<AccountStore>,
    pub limiter: Arc<RateLimiter>,
    pub metrics: Arc<Metrics>,
    pub core: Arc<Core>,
    /// Browser sessions of the web UI (in memory).
    pub sessions: Arc<crate::web::Sessions>,
}

impl FromRef<AppState> for Arc<KeyStore> {
    fn from_ref(state: &AppState) -> Self {
        state.keys.clone()
    }
}

/// Failed authentications recorded per second at most (the rest are only counted), so that a
/// flood of bad keys cannot flood the system account's log.
const RECORDED_AUTH_FAILURES_PER_SECOND: u32 = 20;

impl AppState {
    /// Charges `cost` to the caller's rate limit of this kind, or answers 429 with `Retry-After`.
    pub fn spend(&self, caller: &Principal, spend: Spend, cost: u64) -> Result<(), ApiError> {
        let (rate, kind) = match spend {
            Spend::Ingest => (
                caller
                    .limits
                    .ingest_events_per_second
                    .unwrap_or(self.config.key_ingest_rate),
                "ingest",
            ),
            Spend::Query => (
                caller
                    .limits
                    .queries_per_second
                    .unwrap_or(self.config.key_query_rate),
                "query",
            ),
            Spend::RecordedAuthFailure => (RECORDED_AUTH_FAILURES_PER_SECOND, "auth_failure"),
        };
        self.limiter
            .take(&caller.key_id, spend, rate, cost, Instant::now())
            .map_err(|wait| {
                self.metrics
                    .rate_limited
                    .get_or_create(&ResultLabel { result: kind })
                    .inc();
                ApiError::rate_limited(
                    wait.as_secs_f64().ceil().max(1.0) as u64,
                    format!("this key's {kind} rate limit ({rate}/s) is exhausted; retry later"),
                )
            })
    }

    /// Charges a cost learnt after the request was admitted by [`AppState::spend`].
    pub fn charge(&self, caller: &Principal, spend: Spend, cost: u64) {
        self.limiter.charge(&caller.key_id, spend, cost);
    }

    /// Whether an account exists: registered, or with a log.
    pub fn account_exists(&self, id: &str) -> bool {
        self.accounts.get(id).is_some() || self.core.ledger.tree_head(id).is_some()
    }
}

/// The result of authenticating one request, left in its extensions by [`authenticate`].
#[derive(Debug, Clone)]
struct Authenticated(Result<Principal, AuthFailure>);

/// Middleware around every route: authenticates the `Authorization` header (or, without one, the
/// web UI's session cookie, whose writes must carry the session's CSRF token) once (routes that
/// need a key read the result through [`Caller`]), and records in the system account's log each
/// request that was refused for want of a valid key (401) or for lack of permission (403).
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let (result, csrf_refusal) =
        crate::web::authenticate_request(&state, req.method(), req.uri().path(), req.headers());
    let result = result.map(|mut p| {
        p.client = client;
        p
    });
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    req.extensions_mut().insert(Authenticated(result.clone()));
    let response = match csrf_refusal {
        Some(refusal) => refusal.into_response(),
        None => next.run(req).await,
    };
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        let system = &state.core.system_account;
        let target = (
            format!("crn:v1:trailkeep:public:trailkeep::a/{system}::api:"),
            format!("{method} {path}"),
            "trailkeep/api".to_string(),
        );
        let request = json!({"method": method, "path": path});
        let record = match &result {
            Err(failure) => {
                state.metrics.auth_failures.inc();
                let anonymous = Principal::anonymous();
                if state
                    .spend(&anonymous, Spend::RecordedAuthFailure, 1)
                    .is_err()
                {
                    state.metrics.unrecorded_auth_failures.inc();
                    return response;
                }
                AuditRecord::new(
                    system,
                    "apikey.authenticate",
                    Initiator::Unauthenticated,
                    target,
                )
                .failed(401, failure.message())
            }
            Ok(p) => AuditRecord::new(system, "api.access", p, target).failed(
                status.as_u16(),
                "the key's role or accounts do not allow this request",
            ),
        };
        state
            .core
            .record_in_background(vec![record.request(request).client(client)]);
    }
    response
}

/// The caller of a request, authenticated by `Authorization: Bearer <key>`. Using this extractor is
/// what makes a route require a key.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    Arc<KeyStore>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let result = match parts.extensions.get::<Authenticated>() {
            Some(Authenticated(result)) => result.clone(),
            // A router used without the middleware (tests of single routes).
            None => {
                let keys = Arc::<KeyStore>::from_ref(state);
                let header = parts
                    .headers
                    .get(header::AUTHORIZATION)
                    .map(|v| v.to_str().unwrap_or(""));
                keys.authenticate(header, OffsetDateTime::now_utc())
            }
        };
        result
            .map(Caller)
            .map_err(|failure| ApiError::unauthorized(failure.message()))
    }
}

/// The OpenAPI document of every route (kept in step with the router by a test).
pub const OPENAPI: &str = include_str!("../openapi.json");

/// The whole application: the `/v1` API and the operations endpoints.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .with_state(state.clone())
        .merge(crate::api::routes(state.clone()))
        .merge(crate::access::routes(state.clone()))
        .merge(crate::history::routes(state.clone()))
        .merge(crate::alerts::routes(state.clone()))
        .merge(crate::export::routes(state.clone()))
        .merge(crate::routing::routes(state.clone()))
        .merge(crate::web::routes(state.clone()))
        .merge(crate::archive::http::routes(state.clone()))
        .merge(crate::retention::http::routes(state.clone()))
        .layer(axum::middleware::from_fn_with_state(state, authenticate))
}

async fn openapi() -> Response {
    let mut response = OPENAPI.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    Json(serde_json::json!({
        "status": "ready",
        "durability": state.config.durability.as_str(),
    }))
}

async fn metrics(State(state): State<AppState>) -> Response {
    state.metrics.index_lag.set(state.core.indexer.lag() as i64);
    if let Some(archive) = state.core.archive.get() {
        archive.update_lag();
    }
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;
    use crate::config::ServeOptions;

    fn state(dir: &std::path::Path) -> AppState {
        let keys = KeyStore::open(dir).unwrap();
        keys.ensure_bootstrap_admin(
            Some("admin-key-for-tests-0001"),
            "2026-11-21T00:00:00+00:00",
        )
        .unwrap();
        let config = ServeOptions {
            data_dir: Some(dir.to_path_buf()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        let metrics = Arc::new(Metrics::new());
        let core = Core::open(&config, metrics.clone()).unwrap();
        AppState {
            config: Arc::new(config),
            keys: Arc::new(keys),
            accounts: Arc::new(AccountStore::open(dir).unwrap()),
            limiter: Arc::new(RateLimiter::default()),
            metrics,
            core,
            sessions: Default::default(),
        }
    }

    async fn whoami(Caller(p): Caller) -> String {
        p.key_id
    }

    async fn send(app: Router, auth: Option<&str>, path: &str) -> (StatusCode, String) {
        let mut req = Request::builder().uri(path);
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let res = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn protected_routes_need_a_valid_key() {
        let dir = tempfile::tempdir().unwrap();
        let st = state(dir.path());
        let app = Router::new()
            .route("/who", get(whoami))
            .with_state(st.clone())
            .merge(router(st));
        let (status, body) = send(app.clone(), None, "/who").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body.contains("\"code\":\"unauthorized\""), "{body}");
        let (status, _) = send(app.clone(), Some("Bearer wrong-key-000000000000"), "/who").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, body) = send(app, Some("Bearer admin-key-for-tests-0001"), "/who").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "bootstrap-admin"));
    }

    #[tokio::test]
    async fn operations_endpoints_answer_without_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let app = router(state(dir.path()));
        assert_eq!(send(app.clone(), None, "/healthz").await.0, StatusCode::OK);
        let (status, body) = send(app.clone(), None, "/readyz").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("\"durability\":\"fsync\""));
        let (status, body) = send(app.clone(), None, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("trailkeep_ingest_queue_depth"));
        let (status, body) = send(app, None, "/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("\"error\""));
    }
}
