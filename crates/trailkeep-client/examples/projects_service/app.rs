//! The example service: a small projects/applications API whose every request is audited by
//! `AuditLayer`. The tests of `trailkeep-client` run this same code against a real Trailkeep.
//!
//! Users authenticate with a bearer token (a fixed table here); the authentication middleware runs
//! *inside* the audit layer and fills the request's `AuditHandle`, so refused requests are audited
//! too.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::{Value, json};
use trailkeep_client::Client;
use trailkeep_client::Initiator;
use trailkeep_client::audit::{AuditHandle, AuditLayer, AuditMap, Rule};

/// The service's part of its CRN; events go to account `acme` in region `us-south`.
pub const CRN_BASE: &str = "crn:v1:bluemix:public:projects:us-south:a/acme:instance-1";

/// The demo users: bearer token → (id, name).
pub const USERS: &[(&str, &str, &str)] = &[
    ("alice-token", "IBMid-alice", "alice@example.com"),
    ("bob-token", "IBMid-bob", "bob@example.com"),
];

/// How requests become actions.
pub fn audit_map() -> AuditMap {
    AuditMap::new("projects")
        .crn_base(CRN_BASE)
        .route(Method::GET, "/projects", Rule::new("project", "list"))
        .route(Method::POST, "/projects", Rule::new("project", "create"))
        .route(Method::GET, "/projects/{id}", Rule::new("project", "read"))
        .route(
            Method::PATCH,
            "/projects/{id}",
            Rule::new("project", "update"),
        )
        .route(
            Method::DELETE,
            "/projects/{id}",
            Rule::new("project", "delete"),
        )
        .route(
            Method::POST,
            "/projects/{id}/actions",
            Rule::body_key("project"),
        )
        .route(
            Method::GET,
            "/projects/{id}/applications",
            Rule::new("application", "list").target_param("id"),
        )
        .route(
            Method::POST,
            "/projects/{id}/applications",
            Rule::new("application", "create").target_param("id"),
        )
        .route(
            Method::GET,
            "/projects/{id}/applications/{app}",
            Rule::new("application", "read"),
        )
        .route(
            Method::DELETE,
            "/projects/{id}/applications/{app}",
            Rule::new("application", "delete"),
        )
}

#[derive(Debug, Default)]
struct Project {
    name: String,
    applications: BTreeMap<String, Value>,
}

type Store = Arc<Mutex<BTreeMap<String, Project>>>;

/// The whole service: routes, authentication, audit.
pub fn router(client: Client) -> Router {
    let store: Store = Arc::default();
    Router::new()
        .route("/projects", get(list_projects).post(create_project))
        .route(
            "/projects/{id}",
            get(read_project)
                .patch(update_project)
                .delete(delete_project),
        )
        .route("/projects/{id}/actions", post(project_action))
        .route(
            "/projects/{id}/applications",
            get(list_applications).post(create_application),
        )
        .route(
            "/projects/{id}/applications/{app}",
            get(read_application).delete(delete_application),
        )
        .layer(middleware::from_fn(authenticate))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(store)
        .layer(
            AuditLayer::new(audit_map(), client)
                .skip_path("/healthz")
                .capture_request_body(16 * 1024),
        )
}

/// Finds the user of the bearer token and tells the audit layer; refuses unknown tokens.
async fn authenticate(
    Extension(audit): Extension<AuditHandle>,
    mut req: Request,
    next: Next,
) -> Response {
    let address = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let token = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let user = token.and_then(|t| USERS.iter().find(|(tok, _, _)| *tok == t));
    let mut initiator = match user {
        Some((_, id, name)) => Initiator::new(*id).name(*name).credential_type("token"),
        None => Initiator::unknown(),
    };
    if let Some(a) = address {
        initiator = initiator.address(a);
    }
    audit.set_initiator(initiator.clone());
    if user.is_none() {
        audit.set_failure_reason("missing or unknown bearer token");
        return error(StatusCode::UNAUTHORIZED, "missing or unknown bearer token");
    }
    req.extensions_mut().insert(initiator);
    next.run(req).await
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn not_found(audit: &AuditHandle, what: &str) -> Response {
    let text = format!("{what} not found");
    audit.set_failure_reason(text.clone());
    error(StatusCode::NOT_FOUND, &text)
}

async fn list_projects(State(store): State<Store>) -> Json<Value> {
    let store = store.lock().unwrap();
    Json(json!(
        store
            .iter()
            .map(|(id, p)| json!({"id": id, "name": p.name}))
            .collect::<Vec<_>>()
    ))
}

async fn create_project(
    State(store): State<Store>,
    Extension(audit): Extension<AuditHandle>,
    Json(body): Json<Value>,
) -> Response {
    let Some(name) = body
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    else {
        audit.set_failure_reason("name is required");
        return error(StatusCode::BAD_REQUEST, "name is required");
    };
    let id = format!("p-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    audit.set_target_id(id.clone());
    audit.set_target_name(name);
    store.lock().unwrap().insert(
        id.clone(),
        Project {
            name: name.to_string(),
            ..Project::default()
        },
    );
    (StatusCode::CREATED, Json(json!({"id": id, "name": name}))).into_response()
}

async fn read_project(
    State(store): State<Store>,
    Extension(audit): Extension<AuditHandle>,
    Path(id): Path<String>,
) -> Response {
    match store.lock().unwrap().get(&id) {
        Some(p) => {
            audit.set_target_name(p.name.clone());
            Json(json!({"id": id, "name": p.name, "applications": p.applications.len()}))
                .into_response()
        }
        None => not_found(&audit, &format!("project {id}")),
    }
}

async fn update_project(
    State(store): State<Store>,
    Extension(audit): Extension<AuditHandle>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let mut store = store.lock().unwrap();
    let Some(p) = store.get_mut(&id) else {
        return not_found(&audit, &format!("project {id}"));
    };
    if let Some(name) = body.get("name").and_then(Value::as_str) {
        p.name = name.to_string();
    }
    audit.set_target_name(p.name.clone());
    Json(json!({"id": id, "name": p.name})).into_response()
}

async fn delete_project(
    State(store): State<Store>,
    Extension(audit): Extension<AuditHandle>,
    Path(id): Path<String>,
) -> Response {
    match store.lock().unwrap().remove(&id) {
        Some(p) => {
            audit.set_target_name(p.name);
            StatusCode::NO_CONTENT.into_response()
        }
        None => not_found(&audit, &format!("project {id}")),
    }
}

/// `{"restart": {…}}` or `{"archive": {…}}`; the audit map takes the verb from the body.
async fn project_action(
    State(store): State<Store>,
    Extension(audit): Extension<AuditHandle>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let store = store.lock().unwrap();
    let Some(p) = store.get(&id) else {
        return not_found(&audit, &format!("project {id}"));
    };
    audit.set_target_name(p.name.clone());
    let action = body
        .as_object()
        .and_then(|m| m.keys().next())
        .map(String::as_str);
    match action {
        Some("restart") => Json(json!({"id": id, "status": "restarting"})).into_response(),
        Some("archive") => Json(json!({"id": id, "status": "archived"})).into_response(),
        _ => {
            audit.set_failure_reason("unknown action");
            error(StatusCode::BAD_REQUEST, "unknown action")
        }
    }
}

async fn list_applications(
    State(store): State<Store>,
    Extension(audit): Extension<AuditHandle>,
    Path(id): Path<String>,
) -> Response {
    match store.lock().unwrap().get(&id) {
        Some(p) => Json(json!(p.applications.keys().collect::<Vec<_>>())).into_response(),
        None => not_found(&audit, &format!("project {id}")),
    }
}

async fn create_application(
    State(store): State<Store>,
    Extension(audit): Extension<AuditHandle>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let mut store = store.lock().unwrap();
    let Some(p) = store.get_mut(&id) else {
        return not_found(&audit, &format!("project {id}"));
    };
    let Some(name) = body.get("name").and_then(Value::as_str).map(str::to_string) else {
        audit.set_failure_reason("name is required");
        return error(StatusCode::BAD_REQUEST, "name is required");
    };
    audit.set_target_id(format!("{id}/{name}"));
    audit.set_target_name(name.clone());
    p.applications.insert(name.clone(), body);
    (
        StatusCode::CREATED,
        Json(json!({"project": id, "name": name})),
    )
        .into_response()
}

async fn read_application(
    State(store): State<Store>,
    Extension(audit): Extension<AuditHandle>,
    Path((id, app)): Path<(String, String)>,
) -> Response {
    let store = store.lock().unwrap();
    match store.get(&id).and_then(|p| p.applications.get(&app)) {
        Some(a) => {
            audit.set_target_id(format!("{id}/{app}"));
            Json(json!({"project": id, "name": app, "image": a.get("image")})).into_response()
        }
        None => not_found(&audit, &format!("application {app}")),
    }
}

async fn delete_application(
    State(store): State<Store>,
    Extension(audit): Extension<AuditHandle>,
    Path((id, app)): Path<(String, String)>,
) -> Response {
    audit.set_target_id(format!("{id}/{app}"));
    let mut store = store.lock().unwrap();
    match store.get_mut(&id).and_then(|p| p.applications.remove(&app)) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => not_found(&audit, &format!("application {app}")),
    }
}
