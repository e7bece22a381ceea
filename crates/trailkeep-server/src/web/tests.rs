//! Sessions, CSRF and assets through the whole router (middleware included).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use tower::ServiceExt;

use crate::accounts::AccountStore;
use crate::app::{AppState, router};
use crate::auth::KeyStore;
use crate::config::ServeOptions;
use crate::core::Core;
use crate::limits::RateLimiter;
use crate::metrics::Metrics;

const ADMIN: &str = "admin-key-for-web-tests-01";

fn state(dir: &std::path::Path) -> AppState {
    let keys = KeyStore::open(dir).unwrap();
    keys.ensure_bootstrap_admin(Some(ADMIN), "2026-11-21T00:00:00+00:00")
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

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

async fn send(
    app: &Router,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = axum::body::to_bytes(res.into_body(), 1 << 22)
        .await
        .unwrap();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Signs in and returns the `Cookie` header value and the CSRF token.
async fn sign_in(app: &Router, key: &str) -> (String, String) {
    let r = send(
        app,
        "POST",
        "/ui/session",
        &[("content-type", "application/json")],
        &serde_json::json!({ "key": key }).to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let set = r.headers[header::SET_COOKIE].to_str().unwrap().to_string();
    assert!(set.contains("HttpOnly"), "{set}");
    assert!(set.contains("SameSite=Strict"), "{set}");
    assert!(set.contains("Path=/"), "{set}");
    assert!(!set.contains("Secure"), "no Secure without TLS: {set}");
    let cookie = set.split(';').next().unwrap().to_string();
    assert!(
        !r.body.contains(cookie.split('=').nth(1).unwrap()),
        "the id is not in the body"
    );
    let csrf = r.json()["csrfToken"].as_str().unwrap().to_string();
    (cookie, csrf)
}

#[tokio::test]
async fn cookie_writes_need_the_csrf_token_and_a_revoked_key_ends_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path());
    let app = router(st.clone());

    // A wrong key is refused and sets no cookie.
    let r = send(
        &app,
        "POST",
        "/ui/session",
        &[("content-type", "application/json")],
        r#"{"key":"not-a-valid-key-000000"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(!r.headers.contains_key(header::SET_COOKIE));
    // A form post (what another site could make a browser send) is refused.
    let r = send(
        &app,
        "POST",
        "/ui/session",
        &[("content-type", "application/x-www-form-urlencoded")],
        &format!("key={ADMIN}"),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let (cookie, csrf) = sign_in(&app, ADMIN).await;
    assert_eq!(st.sessions.len(), 1);

    // Reads work with the cookie alone, as the same principal as the key.
    let r = send(&app, "GET", "/v1/whoami", &[("cookie", &cookie)], "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("bootstrap-admin"), "{}", r.body);
    let r = send(&app, "GET", "/ui/session", &[("cookie", &cookie)], "").await;
    assert_eq!(r.json()["signedIn"], true);
    assert_eq!(r.json()["key"]["role"], "admin");
    assert_eq!(r.json()["csrfToken"], csrf.as_str());

    // A write with the cookie but without the token: 403, and nothing is created.
    let account = r#"{"id":"acme","name":"Acme"}"#;
    let json = ("content-type", "application/json");
    let r = send(
        &app,
        "POST",
        "/v1/accounts",
        &[("cookie", &cookie), json],
        account,
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(r.body.contains("X-CSRF-Token"), "{}", r.body);
    // With a wrong token: 403.
    let wrong = ("x-csrf-token", "0000");
    let r = send(
        &app,
        "POST",
        "/v1/accounts",
        &[("cookie", &cookie), json, wrong],
        account,
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert!(st.accounts.get("acme").is_none());
    // With the token: created.
    let token = ("x-csrf-token", csrf.as_str());
    let r = send(
        &app,
        "POST",
        "/v1/accounts",
        &[("cookie", &cookie), json, token],
        account,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert!(st.accounts.get("acme").is_some());

    // Bearer requests are unaffected: no token needed.
    let bearer = format!("Bearer {ADMIN}");
    let r = send(
        &app,
        "POST",
        "/v1/accounts",
        &[("authorization", &bearer), json],
        r#"{"id":"globex","name":"Globex"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

    // Revoking the key ends the session at its next request.
    st.keys
        .revoke(
            crate::auth::BOOTSTRAP_KEY_ID,
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
    let r = send(&app, "GET", "/v1/whoami", &[("cookie", &cookie)], "").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    assert_eq!(st.sessions.len(), 0, "the session is gone");
    let r = send(&app, "GET", "/ui/session", &[("cookie", &cookie)], "").await;
    assert_eq!(r.json()["signedIn"], false);
}

#[tokio::test]
async fn sign_out_needs_the_token_and_ends_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path());
    let app = router(st.clone());
    let (cookie, csrf) = sign_in(&app, ADMIN).await;
    let r = send(&app, "DELETE", "/ui/session", &[("cookie", &cookie)], "").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = send(
        &app,
        "DELETE",
        "/ui/session",
        &[("cookie", &cookie), ("x-csrf-token", &csrf)],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert!(
        r.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let r = send(&app, "GET", "/v1/whoami", &[("cookie", &cookie)], "").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn assets_have_types_caching_and_a_strict_csp() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(dir.path()));
    for (path, ty) in [
        ("/", "text/html"),
        ("/ui/search", "text/html"),
        ("/ui/assets/app.js", "text/javascript"),
        ("/ui/assets/app.css", "text/css"),
        ("/ui/assets/favicon.svg", "image/svg+xml"),
    ] {
        let r = send(&app, "GET", path, &[], "").await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        let h = |n: header::HeaderName| r.headers[n].to_str().unwrap().to_string();
        assert!(h(header::CONTENT_TYPE).starts_with(ty), "{path}");
        assert_eq!(h(header::CACHE_CONTROL), "no-cache");
        let csp = h(header::CONTENT_SECURITY_POLICY);
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert_eq!(h(header::X_CONTENT_TYPE_OPTIONS), "nosniff");
        // Revalidation answers 304.
        let etag = h(header::ETAG);
        let r = send(&app, "GET", path, &[("if-none-match", &etag)], "").await;
        assert_eq!(r.status, StatusCode::NOT_MODIFIED, "{path}");
    }
    // No inline script in the page.
    let r = send(&app, "GET", "/", &[], "").await;
    assert!(!r.body.contains("<script>"), "no inline script");
    assert_eq!(
        send(&app, "GET", "/ui/assets/nope.js", &[], "")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(&app, "GET", "/ui/nope", &[], "").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_lenient_parser_reports_error_positions() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(dir.path()));
    let bearer = format!("Bearer {ADMIN}");
    let r = send(
        &app,
        "GET",
        "/v1/query/parse?q=outcome%3Afailure",
        &[("authorization", &bearer)],
        "",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["valid"], true);
    // `é` is two bytes but one UTF-16 unit: the UTF-16 offsets are what a browser needs.
    let q = "message:\"é\" AND (outcome:failure";
    let url = format!(
        "/v1/query/parse?q={}",
        form_urlencoded::byte_serialize(q.as_bytes()).collect::<String>()
    );
    let r = send(&app, "GET", &url, &[("authorization", &bearer)], "").await;
    let v = r.json();
    assert_eq!(v["valid"], false, "{v}");
    let e = &v["errors"][0];
    assert!(e["message"].as_str().unwrap().len() > 3, "{v}");
    assert_eq!(
        e["end"].as_u64().unwrap() - e["end16"].as_u64().unwrap(),
        1,
        "{v}"
    );
    // Without a key: 401.
    let r = send(&app, "GET", "/v1/query/parse?q=x", &[], "").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn scopes_are_the_parents_of_an_object() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(dir.path()));
    let bearer = format!("Bearer {ADMIN}");
    let id = "crn:v1:bluemix:public:codeengine:us-south:a/acme:proj-7:application:web";
    let url = format!(
        "/ui/scopes?targetId={}",
        form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
    );
    let r = send(&app, "GET", &url, &[("authorization", &bearer)], "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let parents = r.json()["parents"].clone();
    assert_eq!(
        parents[0], "crn:v1:bluemix:public:codeengine:us-south:a/acme:proj-7::",
        "the project first: {parents}"
    );
    let r = send(&app, "GET", "/ui/scopes", &[("authorization", &bearer)], "").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = send(&app, "GET", &url, &[], "").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}
