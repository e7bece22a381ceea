//! [`AuditLayer`]: a tower layer that emits one audit event per HTTP request.
//!
//! Owns: turning a request and its response into an event — the action from the [`AuditMap`],
//! the initiator from the request, the outcome and reason from the status, the correlation id
//! (taken from `X-Correlation-Id` or generated, and returned), optional request and response
//! bodies (bounded, redacted) — and handing it to [`Client::emit`]. Must never: wait on the
//! network or the disk on the request path (emitting is a queue push), or emit twice for one
//! request.
//!
//! # Where the initiator comes from
//!
//! The service knows who called; the layer does not authenticate. Either
//! * an authentication layer **outside** the audit layer inserts an [`Initiator`] into the request
//!   extensions, or
//! * code **inside** (a middleware or the handler) fills the [`AuditHandle`] found in the request
//!   extensions: [`AuditHandle::set_initiator`]. This also audits requests that authentication
//!   turned away (the initiator is then `unknown`, or whatever the code set).
//!
//! The handle also lets the handler name the target when the route cannot (a `create` learns the
//! new id only when it is made) and explain a failure (`reason.reasonForFailure`).

mod body;
mod map;
mod redact;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response};
use serde_json::{Map, Value};
use tower_layer::Layer;
use tower_service::Service;

pub use body::{RequestBody, ResponseBody};
pub use map::{AuditMap, Match, Rule, Unmapped};
pub use redact::{DEFAULT_KEYS as DEFAULT_REDACTED_KEYS, MARKER as REDACTION_MARKER, redact};

use crate::client::Client;
use crate::event::{Event, Initiator, Outcome, Reason, Target, new_id};

/// The correlation header, read from requests and set on responses.
pub static CORRELATION_HEADER: HeaderName = HeaderName::from_static("x-correlation-id");

/// The request's correlation id, in the request extensions for handlers that call other services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrelationId(pub String);

#[derive(Debug, Default)]
struct Notes {
    initiator: Option<Initiator>,
    target_id: Option<String>,
    target_name: Option<String>,
    failure: Option<String>,
    outcome: Option<Outcome>,
    skip: bool,
}

/// Lets code inside the audited service add to the request's event. Found in the request
/// extensions (`axum::Extension<AuditHandle>`).
#[derive(Debug, Clone, Default)]
pub struct AuditHandle(Arc<Mutex<Notes>>);

impl AuditHandle {
    fn with<R>(&self, f: impl FnOnce(&mut Notes) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Who made the request.
    pub fn set_initiator(&self, initiator: Initiator) {
        self.with(|n| n.initiator = Some(initiator));
    }

    /// The target's id (the resource part; with a CRN base the layer builds the CRN), e.g. the id
    /// of a project a `create` just made.
    pub fn set_target_id(&self, id: impl Into<String>) {
        let id = id.into();
        self.with(|n| n.target_id = Some(id));
    }

    /// The target's name.
    pub fn set_target_name(&self, name: impl Into<String>) {
        let name = name.into();
        self.with(|n| n.target_name = Some(name));
    }

    /// `reason.reasonForFailure`, used when the response is a failure.
    pub fn set_failure_reason(&self, text: impl Into<String>) {
        let text = text.into();
        self.with(|n| n.failure = Some(text));
    }

    /// Overrides the outcome derived from the status (e.g. [`Outcome::Pending`] for a 202).
    pub fn set_outcome(&self, outcome: Outcome) {
        self.with(|n| n.outcome = Some(outcome));
    }

    /// Emits no event for this request.
    pub fn skip(&self) {
        self.with(|n| n.skip = true);
    }
}

#[derive(Debug)]
struct Config {
    map: AuditMap,
    client: Client,
    skip_paths: Vec<String>,
    skip_methods: Vec<Method>,
    request_limit: Option<usize>,
    response_limit: Option<usize>,
    body_key_limit: usize,
    redact: Vec<String>,
}

/// A tower [`Layer`] that audits every request through an [`AuditMap`]; see the
/// [module docs](self) and the [crate docs](crate) for a complete example.
#[derive(Debug, Clone)]
pub struct AuditLayer {
    config: Arc<Config>,
}

impl AuditLayer {
    /// Audits requests as `map` says and emits through `client`.
    pub fn new(map: AuditMap, client: Client) -> Self {
        AuditLayer {
            config: Arc::new(Config {
                map,
                client,
                skip_paths: Vec::new(),
                skip_methods: Vec::new(),
                request_limit: None,
                response_limit: None,
                body_key_limit: 64 * 1024,
                redact: redact::DEFAULT_KEYS.iter().map(|s| s.to_string()).collect(),
            }),
        }
    }

    fn config_mut(&mut self) -> &mut Config {
        Arc::get_mut(&mut self.config).expect("configure the layer before cloning it")
    }

    /// Emits nothing for this path and everything below it (`/healthz`, `/metrics`).
    ///
    /// # Panics
    ///
    /// After the layer was cloned (configure it first).
    pub fn skip_path(mut self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into().trim_end_matches('/').to_string();
        self.config_mut().skip_paths.push(prefix);
        self
    }

    /// Emits nothing for this method (e.g. `OPTIONS`).
    ///
    /// # Panics
    ///
    /// After the layer was cloned.
    pub fn skip_method(mut self, method: Method) -> Self {
        self.config_mut().skip_methods.push(method);
        self
    }

    /// Records JSON request bodies of at most `limit` bytes as `requestData` (redacted). Larger
    /// or non-JSON bodies are passed on untouched and not recorded.
    ///
    /// # Panics
    ///
    /// After the layer was cloned.
    pub fn capture_request_body(mut self, limit: usize) -> Self {
        self.config_mut().request_limit = Some(limit);
        self
    }

    /// Records JSON response bodies of at most `limit` bytes as `responseData` (redacted). The
    /// event is then emitted when the response body has been sent (or dropped), not before.
    ///
    /// # Panics
    ///
    /// After the layer was cloned.
    pub fn capture_response_body(mut self, limit: usize) -> Self {
        self.config_mut().response_limit = Some(limit);
        self
    }

    /// How much of a request body is read to find the verb of a [`Rule::body_key`] route
    /// (default 64 KiB).
    ///
    /// # Panics
    ///
    /// After the layer was cloned.
    pub fn body_key_limit(mut self, limit: usize) -> Self {
        self.config_mut().body_key_limit = limit;
        self
    }

    /// Also redacts values whose key ends with `ending` (case-insensitive), besides
    /// [`DEFAULT_REDACTED_KEYS`].
    ///
    /// # Panics
    ///
    /// After the layer was cloned.
    pub fn redact_key(mut self, ending: impl Into<String>) -> Self {
        let ending = ending.into().to_ascii_lowercase();
        self.config_mut().redact.push(ending);
        self
    }
}

impl<S> Layer<S> for AuditLayer {
    type Service = AuditService<S>;

    fn layer(&self, inner: S) -> AuditService<S> {
        AuditService {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The service made by [`AuditLayer`].
#[derive(Debug, Clone)]
pub struct AuditService<S> {
    inner: S,
    config: Arc<Config>,
}

impl Config {
    fn skipped(&self, method: &Method, path: &str) -> bool {
        self.skip_methods.contains(method)
            || self.skip_paths.iter().any(|p| {
                path.strip_prefix(p.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
    }

    /// Parses a captured body: JSON, redacted, as an object (`{"body": value}` for other JSON).
    fn captured_json(&self, data: &[u8]) -> Option<Map<String, Value>> {
        if data.is_empty() {
            return None;
        }
        let mut v: Value = serde_json::from_slice(data).ok()?;
        redact::redact(&mut v, &self.redact);
        Some(match v {
            Value::Object(m) => m,
            other => {
                let mut m = Map::new();
                m.insert("body".into(), other);
                m
            }
        })
    }
}

/// Everything known about the request when it arrives.
struct Pending {
    config: Arc<Config>,
    action: String,
    type_uri: String,
    target_id: Option<String>,
    data_event: bool,
    path: String,
    correlation_id: String,
    initiator: Option<Initiator>,
    user_agent: Option<String>,
    handle: AuditHandle,
    request_data: Option<Map<String, Value>>,
}

impl Pending {
    /// Builds the event and hands it to the client.
    fn emit(self, status: Option<u16>, response_data: Option<Map<String, Value>>) {
        let notes = std::mem::take(&mut *self.handle.0.lock().unwrap_or_else(|p| p.into_inner()));
        if notes.skip {
            return;
        }
        let config = &self.config;
        let outcome = notes.outcome.unwrap_or(match status {
            Some(s) => Outcome::from_http_status(s),
            None => Outcome::Unknown,
        });
        let mut initiator = notes
            .initiator
            .or(self.initiator)
            .unwrap_or_else(Initiator::unknown);
        if initiator.user_agent.is_none() {
            initiator.user_agent = self.user_agent;
        }
        let resource = notes.target_id.or(self.target_id);
        let target_id = match (config.map.crn(), &resource) {
            (Some(base), Some(r)) => format!("{base}:{}:{r}", object_of(&self.type_uri)),
            (Some(base), None) => format!("{base}:{}:", object_of(&self.type_uri)),
            (None, Some(r)) => r.clone(),
            (None, None) => self.path,
        };
        let mut target = Target::new(target_id).type_uri(self.type_uri);
        if let Some(name) = notes.target_name.or(resource) {
            target = target.name(name);
        }
        let mut b = Event::builder(self.action)
            .outcome(outcome)
            .initiator(initiator)
            .target(target)
            .correlation_id(self.correlation_id)
            .data_event(self.data_event);
        if let Some(s) = status {
            let mut reason = Reason::http(s);
            if s >= 400
                && let Some(f) = notes.failure
            {
                reason = reason.failure(f);
            }
            b = b.reason(reason);
        }
        if let Some(base) = config.map.crn() {
            b = b.log_source_crn(format!("{base}::"));
        }
        if let Some(d) = self.request_data {
            b = b.request_data(d);
        }
        if let Some(d) = response_data {
            b = b.response_data(d);
        }
        match b.build() {
            Ok(event) => {
                // Failures are reported by the client's metrics hook and log.
                let _ = config.client.emit(event);
            }
            Err(e) => {
                tracing::error!(error = %e, "trailkeep-client: the audit layer built an invalid event");
            }
        }
    }
}

/// Emits with outcome `unknown` when the request future is dropped before the service answered
/// (the caller went away, or the service panicked): the action may have happened.
struct EmitOnDrop(Option<Pending>);

impl Drop for EmitOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            p.emit(None, None);
        }
    }
}

fn object_of(type_uri: &str) -> &str {
    type_uri.rsplit('/').next().unwrap_or(type_uri)
}

/// A plausible correlation id: 1–128 characters of `A–Z a–z 0–9 . _ : -`.
fn valid_correlation(v: &HeaderValue) -> Option<&str> {
    let s = v.to_str().ok()?;
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    ok.then_some(s)
}

/// A boxed future, as returned by [`AuditService`].
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, ReqB, ResB> Service<Request<ReqB>> for AuditService<S>
where
    S: Service<Request<RequestBody<ReqB>>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: http_body::Body<Data = Bytes> + Send + 'static,
    ReqB::Error: Send + 'static,
    ResB: http_body::Body<Data = Bytes> + Send + 'static,
{
    type Response = Response<ResponseBody<ResB>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        // The service that was polled ready goes into the future; a clone stays for next time.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let config = self.config.clone();
        let path = req.uri().path();
        let matched = if config.skipped(req.method(), path) {
            None
        } else {
            config.map.resolve(req.method(), path)
        };
        let Some(m) = matched else {
            let fut = inner.call(req.map(RequestBody::passthrough));
            return Box::pin(async move { Ok(fut.await?.map(ResponseBody::passthrough)) });
        };

        let needs_body = m.needs_body();
        let json_body = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|t| t.contains("json"));
        let read_limit = match (needs_body, config.request_limit) {
            (false, Some(l)) if json_body => Some(l),
            (false, _) => None,
            (true, l) => Some(l.unwrap_or(0).max(config.body_key_limit)),
        };
        let action = (!needs_body).then(|| m.action(None));
        let type_uri = m.type_uri();
        let target_id = m.target_id().map(str::to_string);
        let data_event = m.data_event();
        let path = path.to_string();

        let correlation_id = match req
            .headers()
            .get(&CORRELATION_HEADER)
            .and_then(valid_correlation)
        {
            Some(c) => c.to_string(),
            None => {
                let c = new_id();
                req.headers_mut().insert(
                    CORRELATION_HEADER.clone(),
                    HeaderValue::from_str(&c).expect("a UUID is a valid header value"),
                );
                c
            }
        };
        let handle = AuditHandle::default();
        req.extensions_mut().insert(handle.clone());
        req.extensions_mut()
            .insert(CorrelationId(correlation_id.clone()));
        let initiator = req.extensions().get::<Initiator>().cloned();
        let user_agent = req
            .headers()
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let has_body = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
            && req
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .is_none_or(|v| v.as_bytes() != b"0");

        Box::pin(async move {
            let mut request_data = None;
            let mut action = action;
            let req = match read_limit {
                Some(limit) if has_body && declared_len(&req).is_none_or(|n| n <= limit as u64) => {
                    let (parts, body) = req.into_parts();
                    let mut body = Box::pin(body);
                    let ahead = body::read_ahead(&mut body, limit).await;
                    let whole =
                        ahead.complete && ahead.error.is_none() && ahead.data.len() <= limit;
                    if whole {
                        if needs_body {
                            action = Some(
                                config
                                    .map
                                    .resolve(&parts.method, parts.uri.path())
                                    .map(|m| m.action(Some(&ahead.data)))
                                    .unwrap_or_default(),
                            );
                        }
                        if let Some(l) = config.request_limit
                            && ahead.data.len() <= l
                        {
                            request_data = config.captured_json(&ahead.data);
                        }
                    }
                    Request::from_parts(parts, RequestBody::read_ahead(ahead, body))
                }
                _ => req.map(RequestBody::passthrough),
            };
            let action = match action {
                Some(a) if !a.is_empty() => a,
                _ => config
                    .map
                    .resolve(req.method(), req.uri().path())
                    .map(|m| m.action(None))
                    .unwrap_or_default(),
            };
            let mut guard = EmitOnDrop(Some(Pending {
                config: config.clone(),
                action,
                type_uri,
                target_id,
                data_event,
                path,
                correlation_id,
                initiator,
                user_agent,
                handle,
                request_data,
            }));
            let result = inner.call(req).await;
            let pending = guard.0.take().expect("taken once");
            let response = match result {
                Ok(r) => r,
                Err(e) => {
                    pending.emit(None, None);
                    return Err(e);
                }
            };
            let (mut parts, body) = response.into_parts();
            if let Ok(v) = HeaderValue::from_str(&pending.correlation_id) {
                parts.headers.insert(CORRELATION_HEADER.clone(), v);
            }
            let status = parts.status.as_u16();
            let body = match config.response_limit {
                Some(limit)
                    if declared_response_len(&parts.headers).is_none_or(|n| n <= limit as u64) =>
                {
                    let cfg = config.clone();
                    let finish = Box::new(move |data: Option<Bytes>| {
                        let response_data = data.and_then(|d| cfg.captured_json(&d));
                        pending.emit(Some(status), response_data);
                    });
                    ResponseBody::capturing(body, body::Capture::new(limit, finish))
                }
                _ => {
                    pending.emit(Some(status), None);
                    ResponseBody::passthrough(body)
                }
            };
            Ok(Response::from_parts(parts, body))
        })
    }
}

fn declared_len<B>(req: &Request<B>) -> Option<u64> {
    declared_response_len(req.headers())
}

fn declared_response_len(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
