//! The HTTP application: shared state, the router, authentication, and the operations endpoints.
//!
//! Handlers for ingest, search and integrity join this router as the pipeline behind them lands
//! (issue #4); the pieces here are the ones every route relies on.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::auth::{AuthFailure, KeyStore, Principal};
use crate::config::ServerConfig;
use crate::core::Core;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// State shared by every handler.
#[derive(Debug, Clone)]
pub struct AppState {
    pub config: Arc<ServerConfig>,
    pub keys: Arc<KeyStore>,
    pub metrics: Arc<Metrics>,
    pub core: Arc<Core>,
}

impl FromRef<AppState> for Arc<KeyStore> {
    fn from_ref(state: &AppState) -> Self {
        state.keys.clone()
    }
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
        let keys = Arc::<KeyStore>::from_ref(state);
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or(""));
        match keys.authenticate(header) {
            Ok(principal) => Ok(Caller(principal)),
            Err(AuthFailure::Missing) => Err(ApiError::unauthorized(
                "an API key is required: Authorization: Bearer <key>",
            )),
            Err(AuthFailure::Invalid) => Err(ApiError::unauthorized("the API key is not valid")),
        }
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
        .merge(crate::export::routes(state))
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
            metrics,
            core,
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
