//! The `/v1` HTTP API (DESIGN §5): ingest, search, get, aggregate, live tail and the integrity
//! endpoints. Handlers translate HTTP to [`Core`] calls and back; they hold no logic of their own
//! beyond authorisation and parameter parsing.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use time::OffsetDateTime;
use trailkeep_event::InputFormat;
use trailkeep_index::query::{KnownField, parse_duration, parse_time_expr};
use trailkeep_index::{AggregateRequest, Histogram, Plan, SearchRequest, TermsRequest};

use crate::app::{AppState, Caller};
use crate::audit::{AuditRecord, events_target};
use crate::auth::{AccountScope, Principal};
use crate::body::{BodyKind, BodyLimits, body_kind, decode_body};
use crate::core::{Core, Item};
use crate::error::{ApiError, ErrorDetail};
use crate::limits::Spend;

/// Default and largest page size of a search.
pub const DEFAULT_LIMIT: usize = 50;

/// The `/v1` routes.
pub fn routes(state: AppState) -> Router {
    // The raw body may be at most the decoded limit (compression only shrinks what we accept).
    let body_limit = DefaultBodyLimit::max(state.config.max_body_bytes);
    Router::new()
        .route("/v1/events", post(ingest).get(search))
        .route("/v1/ingest/kubernetes", post(ingest))
        .route("/v1/ingest/openstack", post(ingest))
        .route("/v1/events/stream", get(stream))
        .route("/v1/events/{id}", get(get_event))
        .route("/v1/aggregate", get(aggregate))
        .route("/v1/log", get(list_logs))
        .route("/v1/log/key", get(log_key))
        .route("/v1/log/{account}/checkpoint", get(checkpoint))
        .route("/v1/log/{account}/tile/{*path}", get(tile))
        .route("/v1/log/{account}/proof/inclusion", get(inclusion_proof))
        .route(
            "/v1/log/{account}/proof/consistency",
            get(consistency_proof),
        )
        .layer(body_limit)
        .with_state(state)
}

fn core(state: &AppState) -> &Arc<Core> {
    &state.core
}

// ---------------------------------------------------------------------------------------------
// Ingest

async fn ingest(
    State(state): State<AppState>,
    Caller(caller): Caller,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let result = async {
        let body = read_body(&state, body).await?;
        // Declared NDJSON is split by lines even when a line is broken; anything else is
        // recognised from the bytes.
        let format = match body_kind(&headers)? {
            BodyKind::Ndjson => InputFormat::Ndjson,
            BodyKind::Json | BodyKind::Unspecified => InputFormat::Detect,
        };
        let limits = BodyLimits {
            max_decoded_bytes: state.config.max_body_bytes,
        };
        let decoded = decode_body(&headers, &body, limits)?;
        // The request passes if the key's bucket has room; its events are charged after parsing
        // (a bucket may go into debt by one request).
        state.spend(&caller, Spend::Ingest, 1)?;
        // Batches forwarded by another instance's routing (issue #9) are not forwarded again.
        // Only forwarder keys may say so: otherwise any writer could bypass this instance's
        // residency routes.
        let forwarded = headers.contains_key("x-trailkeep-forwarded-from");
        if forwarded && !state.keys.is_forwarder(&caller.key_id) {
            let mut e = ApiError::forbidden(
                "X-Trailkeep-Forwarded-From is accepted only from forwarder keys (writer keys created with \"forwarder\": true, for another instance's routing); send without it",
            );
            e.code = "not_a_forwarder";
            return Err(e);
        }
        let report = core(&state)
            .ingest_routed(&caller, decoded, format, forwarded)
            .await?;
        state.charge(
            &caller,
            Spend::Ingest,
            report.accepted.saturating_sub(1) as u64,
        );
        Ok::<_, ApiError>(report)
    }
    .await;
    match result {
        Ok(report) => {
            let status = if report.accepted > 0 || report.dropped > 0 {
                StatusCode::OK
            } else if report.forbidden > 0 && report.forbidden == report.rejected {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            (status, Json(report)).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// Reads a whole request body within the client timeout (a client trickling bytes would otherwise
/// hold its connection and its buffer forever) and the body-size limit.
async fn read_body(state: &AppState, body: axum::body::Body) -> Result<Bytes, ApiError> {
    let limit = state.config.max_body_bytes;
    let deadline = state.config.client_timeout;
    match tokio::time::timeout(deadline, axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request body did not arrive within {} s; nothing was stored",
                deadline.as_secs()
            ),
        )),
        Ok(Err(e)) => {
            if std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            {
                Err(ApiError::payload_too_large(format!(
                    "the request body is larger than {limit} bytes"
                )))
            } else {
                Err(ApiError::bad_request(format!(
                    "the request body could not be read: {e}; nothing was stored"
                )))
            }
        }
        Ok(Ok(bytes)) => Ok(bytes),
    }
}

// ---------------------------------------------------------------------------------------------
// Reading

/// Query parameters shared by search, aggregate and stream. `account` may repeat, so the raw query
/// string is parsed by hand.
#[derive(Debug, Default)]
pub(crate) struct ReadParams {
    pub(crate) q: String,
    pub(crate) from: Option<String>,
    pub(crate) to: Option<String>,
    pub(crate) limit: Option<String>,
    pub(crate) cursor: Option<String>,
    pub(crate) accounts: Vec<String>,
    pub(crate) by: Option<String>,
    pub(crate) interval: Option<String>,
    pub(crate) size: Option<String>,
    pub(crate) proof: Option<String>,
    pub(crate) view: Option<String>,
}

pub(crate) fn read_params(raw: Option<String>) -> Result<ReadParams, ApiError> {
    let mut p = ReadParams::default();
    let raw = raw.unwrap_or_default();
    for (key, value) in form_urlencoded_pairs(&raw)? {
        match key.as_str() {
            "q" => p.q = value,
            "from" => p.from = Some(value),
            "to" => p.to = Some(value),
            "limit" => p.limit = Some(value),
            "cursor" => p.cursor = Some(value),
            "account" => p.accounts.push(value),
            "by" => p.by = Some(value),
            "interval" => p.interval = Some(value),
            "size" => p.size = Some(value),
            "proof" => p.proof = Some(value),
            "view" => p.view = Some(value),
            other => {
                return Err(
                    ApiError::bad_request(format!("unknown query parameter {other:?}"))
                        .with_details(vec![ErrorDetail {
                            path: other.to_string(),
                            reason: "not a parameter of this endpoint".into(),
                        }]),
                );
            }
        }
    }
    Ok(p)
}

/// `view=<id>`: the view's query (and `q`, if given), its account and (with `window_from`) its
/// window as the default `from` replace the request's (issue #6). A view the caller may not read
/// answers 404.
fn apply_view(
    state: &AppState,
    caller: &Principal,
    p: &mut ReadParams,
    window_from: bool,
) -> Result<(), ApiError> {
    let Some(id) = p.view.take() else {
        return Ok(());
    };
    let scope = crate::alerts::views::resolve_view(state, caller, &id, &p.q)?;
    if p.accounts.iter().any(|a| *a != scope.account) {
        return Err(ApiError::bad_request(
            "a view covers one account: leave account= out or name the view's account",
        ));
    }
    p.q = scope.query;
    p.accounts = vec![scope.account];
    if window_from && p.from.is_none() {
        p.from = Some(crate::core::format_time(scope.from));
    }
    Ok(())
}

fn form_urlencoded_pairs(raw: &str) -> Result<Vec<(String, String)>, ApiError> {
    Ok(form_urlencoded::parse(raw.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect())
}

/// The accounts a read covers: the ones asked for (each must be readable), else every account the
/// key may read.
pub(crate) fn read_accounts(
    core: &Core,
    caller: &Principal,
    asked: &[String],
) -> Result<Vec<String>, ApiError> {
    if !caller.role.can_read() {
        return Err(ApiError::forbidden("this key may not read events"));
    }
    if !asked.is_empty() {
        for a in asked {
            if !caller.accounts.allows(a) {
                return Err(ApiError::forbidden(format!(
                    "this key may not read account {a:?}"
                )));
            }
        }
        let set: BTreeSet<String> = asked.iter().cloned().collect();
        return Ok(set.into_iter().collect());
    }
    Ok(match &caller.accounts {
        AccountScope::All => core.ledger.accounts(),
        AccountScope::Only(ids) => ids.clone(),
    })
}

pub(crate) fn parse_plan(q: &str) -> Result<Plan, ApiError> {
    trailkeep_index::query::plan_strict(q).map_err(|e| parse_plan_error(&e))
}

fn parse_plan_error(e: &trailkeep_index::ParseError) -> ApiError {
    ApiError::bad_request(format!("the query is not valid: {e}")).with_details(vec![ErrorDetail {
        path: format!("q[{}..{}]", e.span.start, e.span.end),
        reason: format!("line {}, column {}: {}", e.line, e.column, e.message),
    }])
}

pub(crate) fn time_bounds(
    p: &ReadParams,
) -> Result<(Option<OffsetDateTime>, Option<OffsetDateTime>), ApiError> {
    let now = OffsetDateTime::now_utc();
    let parse = |name: &str, v: &Option<String>| -> Result<Option<OffsetDateTime>, ApiError> {
        v.as_deref()
            .map(|t| parse_time_expr(t, now))
            .transpose()
            .map_err(|e| {
                let reason = e.to_string();
                ApiError::bad_request(format!("{name}: {reason}")).with_details(vec![ErrorDetail {
                    path: name.into(),
                    reason,
                }])
            })
    };
    let from = parse("from", &p.from)?;
    let to = parse("to", &p.to)?;
    if let (Some(f), Some(t)) = (from, to)
        && f > t
    {
        return Err(ApiError::bad_request("from is after to"));
    }
    Ok((from, to))
}

fn parse_usize(
    name: &str,
    v: &Option<String>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match v {
        None => Ok(default),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "{name} must be a number from 1 to {max}"
            ))),
        },
    }
}

/// Index errors a client caused are 400s; the rest are internal.
pub(crate) fn index_error(e: trailkeep_index::IndexError) -> ApiError {
    use trailkeep_index::IndexError;
    match e {
        IndexError::InvalidCursor => {
            ApiError::bad_request("the cursor is not valid; start again without it")
        }
        IndexError::InvalidRequest(m) => ApiError::bad_request(m),
        IndexError::Query(q) => parse_plan_error(&q),
        other => ApiError::internal(other),
    }
}

fn fetch_items(core: &Core, hits: &[trailkeep_index::Hit]) -> Result<Vec<Item>, ApiError> {
    let mut items = Vec::with_capacity(hits.len());
    for hit in hits {
        match core.item_of_hit(hit)? {
            Some(item) => items.push(item),
            // The index is derived: a hit the ledger no longer has (retention) is skipped.
            None => {
                tracing::warn!(account = %hit.account, index = hit.index, "search hit missing from the ledger")
            }
        }
    }
    Ok(items)
}

async fn search(
    State(state): State<AppState>,
    Caller(caller): Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let mut p = read_params(raw)?;
    apply_view(&state, &caller, &mut p, true)?;
    let core = core(&state).clone();
    let accounts = read_accounts(&core, &caller, &p.accounts)?;
    let plan = parse_plan(&p.q)?;
    let (from, to) = time_bounds(&p)?;
    let limit = parse_usize("limit", &p.limit, DEFAULT_LIMIT, trailkeep_index::MAX_LIMIT)?;
    state.spend(&caller, Spend::Query, 1)?;
    let cursor = p.cursor.clone();
    let request = serde_json::json!({
        "q": p.q, "from": p.from, "to": p.to, "limit": limit, "cursor": p.cursor,
    });
    if accounts.is_empty() {
        record_read(&state, &caller, "event.search", &p.accounts, &[], request);
        return Ok(Json(serde_json::json!({ "events": [], "next_cursor": null })).into_response());
    }
    let (items, next_cursor) = bounded(&state, move || {
        let page = core
            .index
            .search(&SearchRequest {
                plan: &plan,
                accounts: &accounts,
                from,
                to,
                limit,
                cursor: cursor.as_deref(),
            })
            .map_err(index_error)?;
        let items = fetch_items(&core, &page.hits)?;
        Ok::<_, ApiError>((items, page.next_cursor))
    })
    .await?;
    record_read(
        &state,
        &caller,
        "event.search",
        &p.accounts,
        &items,
        request,
    );
    Ok(Json(serde_json::json!({ "events": items, "next_cursor": next_cursor })).into_response())
}

/// Runs a query on a blocking thread, answering 503 when it outlasts the server's query timeout.
/// (The search itself cannot be interrupted; it finishes in the background and is dropped.)
async fn bounded<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let limit = state.config.query_timeout;
    match tokio::time::timeout(limit, tokio::task::spawn_blocking(work)).await {
        Ok(joined) => joined.map_err(ApiError::internal)?,
        Err(_) => Err(ApiError::unavailable(format!(
            "the query ran longer than {} s; narrow the time range or the query",
            limit.as_secs()
        ))),
    }
}

/// Self-audit of a read: one event in every account the request named or whose events it
/// returned (with how many), or in the system account when it named none and returned nothing.
pub(crate) fn record_read(
    state: &AppState,
    caller: &Principal,
    action: &str,
    asked: &[String],
    returned: &[Item],
    request: serde_json::Value,
) {
    let mut per_account: std::collections::BTreeMap<&str, usize> =
        asked.iter().map(|a| (a.as_str(), 0)).collect();
    for item in returned {
        *per_account.entry(item.account.as_str()).or_default() += 1;
    }
    if per_account.is_empty() {
        per_account.insert(state.core.system_account.as_str(), 0);
    }
    let records = per_account
        .into_iter()
        .map(|(account, n)| {
            AuditRecord::new(account, action, caller, events_target(account))
                .client(caller.client)
                .request(request.clone())
                .response(serde_json::json!({ "events": n }))
        })
        .collect();
    state.core.record_in_background(records);
}

async fn get_event(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let p = read_params(raw)?;
    let core = core(&state).clone();
    let accounts = read_accounts(&core, &caller, &p.accounts)?;
    let want_proof = matches!(p.proof.as_deref(), Some("true" | "1" | "yes"));
    state.spend(&caller, Spend::Query, 1)?;
    if accounts.is_empty() {
        return Err(ApiError::not_found("no event with this id"));
    }
    let request = serde_json::json!({ "id": id, "proof": want_proof });
    let (item, value) = bounded(&state, move || {
        let quoted = format!("id:\"{}\"", id.replace('\\', "\\\\").replace('"', "\\\""));
        let plan = parse_plan(&quoted)?;
        let page = core
            .index
            .search(&SearchRequest {
                plan: &plan,
                accounts: &accounts,
                from: None,
                to: None,
                limit: 2,
                cursor: None,
            })
            .map_err(ApiError::internal)?;
        let hit = match page.hits.as_slice() {
            [] => return Err(ApiError::not_found("no event with this id")),
            [one] => one.clone(),
            _ => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "ambiguous",
                    "several of your accounts hold an event with this id; add ?account=",
                ));
            }
        };
        let item = core
            .item_of_hit(&hit)?
            .ok_or_else(|| ApiError::not_found("no event with this id"))?;
        let mut value = serde_json::to_value(&item).map_err(ApiError::internal)?;
        if want_proof {
            value["proof"] = proof_for(&core, &hit.account, hit.index)?;
        }
        Ok((item, value))
    })
    .await?;
    record_read(&state, &caller, "event.read", &[], &[item], request);
    Ok(Json(value).into_response())
}

/// An inclusion proof of `index` against the newest signed checkpoint (the ledger signs one first
/// if the newest does not cover the event yet).
fn proof_for(core: &Core, account: &str, index: u64) -> Result<serde_json::Value, ApiError> {
    let (note, size, hashes) = core
        .ledger
        .checkpointed_inclusion_proof(account, index)
        .map_err(ApiError::internal)?;
    Ok(serde_json::json!({
        "checkpoint": note,
        "size": size,
        "index": index,
        "hashes": base64_hashes(&hashes),
    }))
}

async fn aggregate(
    State(state): State<AppState>,
    Caller(caller): Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let mut p = read_params(raw)?;
    apply_view(&state, &caller, &mut p, true)?;
    let core = core(&state).clone();
    let accounts = read_accounts(&core, &caller, &p.accounts)?;
    let plan = parse_plan(&p.q)?;
    let (from, to) = time_bounds(&p)?;
    let terms = match &p.by {
        None => None,
        Some(path) => {
            let field = KnownField::from_path(path)
                .filter(|f| f.aggregatable())
                .ok_or_else(|| {
                    let names: Vec<&str> = KnownField::ALL
                        .iter()
                        .filter(|f| f.aggregatable())
                        .map(|f| f.path())
                        .collect();
                    ApiError::bad_request(format!(
                        "cannot count by {path:?}; use one of {}",
                        names.join(", ")
                    ))
                })?;
            Some(TermsRequest {
                field,
                size: parse_usize("size", &p.size, 10, 1000)?,
            })
        }
    };
    let histogram = match p.interval.as_deref() {
        None => None,
        Some("auto") => Some(Histogram::Auto),
        Some(d) => {
            let d =
                parse_duration(d).map_err(|e| ApiError::bad_request(format!("interval: {e}")))?;
            if d < time::Duration::seconds(1) {
                return Err(ApiError::bad_request("interval must be at least 1s"));
            }
            Some(Histogram::Every(d))
        }
    };
    state.spend(&caller, Spend::Query, 1)?;
    // Counts reveal every covered account's events: recorded in each account the key is limited
    // to (or named), and for keys that cover every account in the system account.
    let covered: Vec<String> = match (&caller.accounts, p.accounts.is_empty()) {
        (AccountScope::All, true) => Vec::new(),
        _ => accounts.clone(),
    };
    record_read(
        &state,
        &caller,
        "event.aggregate",
        &covered,
        &[],
        serde_json::json!({
            "q": p.q, "from": p.from, "to": p.to, "by": p.by, "interval": p.interval,
        }),
    );
    if accounts.is_empty() {
        return Ok(Json(serde_json::json!({
            "total": 0, "terms": [], "other": 0, "missing": 0, "interval": null, "buckets": []
        }))
        .into_response());
    }
    let result = bounded(&state, move || {
        core.index
            .aggregate(&AggregateRequest {
                plan: &plan,
                accounts: &accounts,
                from,
                to,
                terms,
                histogram,
            })
            .map_err(index_error)
    })
    .await?;
    Ok(Json(serde_json::json!({
        "total": result.total,
        "terms": result.terms.iter().map(|t| serde_json::json!({"key": t.key, "count": t.count})).collect::<Vec<_>>(),
        "other": result.other,
        "missing": result.missing,
        "interval": result.interval.map(|d| format!("{}s", d.whole_seconds())),
        "buckets": result.buckets.iter().map(|b| serde_json::json!({
            "start": crate::core::format_time(b.start),
            "count": b.count,
        })).collect::<Vec<_>>(),
    }))
    .into_response())
}

/// Live tail: server-sent events, one `event` message per matching item (its JSON), oldest first,
/// starting with events newer than the connection (or `from`). Polls the index, so a tailed event
/// appears within a second of being acknowledged.
async fn stream(
    State(state): State<AppState>,
    Caller(caller): Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let mut p = read_params(raw)?;
    apply_view(&state, &caller, &mut p, false)?;
    let core = core(&state).clone();
    read_accounts(&core, &caller, &p.accounts)?;
    let plan = Arc::new(parse_plan(&p.q)?);
    let (from, _) = time_bounds(&p)?;
    state.spend(&caller, Spend::Query, 1)?;
    let start = from.unwrap_or_else(OffsetDateTime::now_utc);
    // Everything already searchable and older than the start is not sent.
    let stream = async_stream(state.clone(), plan, caller, p, start);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

fn async_stream(
    state: AppState,
    plan: Arc<Plan>,
    caller: Principal,
    params: ReadParams,
    start: OffsetDateTime,
) -> impl futures_core::Stream<Item = Result<SseEvent, Infallible>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<SseEvent>(256);
    let core = state.core.clone();
    let asked = params.accounts.clone();
    let request = serde_json::json!({ "q": params.q, "from": params.from });
    tokio::spawn(async move {
        let mut seen: std::collections::HashSet<(String, u64)> = std::collections::HashSet::new();
        // Accounts whose events this stream has shown, each recorded once (recording every
        // delivery would tail its own audit events forever).
        let mut recorded: BTreeSet<String> = BTreeSet::new();
        record_read(&state, &caller, "event.tail", &asked, &[], request.clone());
        recorded.extend(asked.iter().cloned());
        let mut since = start;
        loop {
            // A key revoked (or expired) while it tails is cut off at once.
            if !state
                .keys
                .is_active(&caller.key_id, OffsetDateTime::now_utc())
            {
                return;
            }
            // Re-resolved each round: a key that reads every account also tails new ones.
            let Ok(accounts) = read_accounts(&core, &caller, &asked) else {
                return;
            };
            let (c, p) = (core.clone(), plan.clone());
            let from = since;
            let page = tokio::task::spawn_blocking(move || {
                if accounts.is_empty() {
                    return Ok(trailkeep_index::SearchPage {
                        hits: Vec::new(),
                        next_cursor: None,
                    });
                }
                c.index.search(&SearchRequest {
                    plan: &p,
                    accounts: &accounts,
                    from: Some(from),
                    to: None,
                    limit: 500,
                    cursor: None,
                })
            })
            .await;
            let Ok(Ok(page)) = page else { break };
            let mut fresh: Vec<_> = page
                .hits
                .into_iter()
                .filter(|h| !seen.contains(&(h.account.clone(), h.index)))
                .collect();
            fresh.reverse(); // oldest first
            for hit in fresh {
                seen.insert((hit.account.clone(), hit.index));
                if hit.event_time > since {
                    since = hit.event_time;
                }
                let Ok(Some(item)) = core.item_of_hit(&hit) else {
                    continue;
                };
                if recorded.insert(item.account.clone()) {
                    record_read(
                        &state,
                        &caller,
                        "event.tail",
                        std::slice::from_ref(&item.account),
                        &[],
                        request.clone(),
                    );
                }
                let data = serde_json::to_string(&item).unwrap_or_default();
                if tx
                    .send(SseEvent::default().event("event").data(data))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            // Forget entries well behind the window so memory stays bounded on long tails.
            if seen.len() > 100_000 {
                seen.clear();
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    ReceiverStream(rx)
}

/// Adapts a tokio receiver to a `Stream` of SSE events.
struct ReceiverStream(tokio::sync::mpsc::Receiver<SseEvent>);

impl futures_core::Stream for ReceiverStream {
    type Item = Result<SseEvent, Infallible>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|o| o.map(Ok))
    }
}

// ---------------------------------------------------------------------------------------------
// Integrity

fn text(body: String) -> Response {
    let mut r = body.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn readable_account(state: &AppState, caller: &Principal, account: &str) -> Result<(), ApiError> {
    // Same answer for "exists but not yours" and "does not exist": no existence leak.
    if caller.may_read(account) {
        state.spend(caller, Spend::Query, 1)
    } else {
        Err(ApiError::not_found("no such log"))
    }
}

/// The logs (one per account) this key may read, with their current size and checkpoint origin.
async fn list_logs(State(state): State<AppState>, Caller(caller): Caller) -> Response {
    let core = core(&state);
    let accounts = if caller.role.can_read() {
        match &caller.accounts {
            AccountScope::All => core.ledger.accounts(),
            AccountScope::Only(ids) => ids.clone(),
        }
    } else {
        Vec::new()
    };
    let logs: Vec<serde_json::Value> = accounts
        .iter()
        .filter_map(|a| {
            let head = core.ledger.tree_head(a)?;
            Some(serde_json::json!({
                "account": a,
                "origin": core.ledger.origin(a),
                "size": head.size,
            }))
        })
        .collect();
    Json(serde_json::json!({ "logs": logs })).into_response()
}

async fn log_key(State(state): State<AppState>, Caller(_caller): Caller) -> Response {
    text(format!("{}\n", core(&state).ledger.verifier_key()))
}

async fn checkpoint(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(account): Path<String>,
) -> Result<Response, ApiError> {
    readable_account(&state, &caller, &account)?;
    let note = core(&state)
        .ledger
        .latest_checkpoint(&account)
        .ok_or_else(|| ApiError::not_found("no such log"))?;
    Ok(text(note))
}

async fn tile(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((account, path)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    readable_account(&state, &caller, &account)?;
    let bytes = core(&state)
        .ledger
        .tile(&account, &format!("tile/{path}"))
        .map_err(|e| match e {
            trailkeep_ledger::Error::Invalid(m) | trailkeep_ledger::Error::NotFound(m) => {
                ApiError::not_found(m)
            }
            other => ApiError::internal(other),
        })?
        .ok_or_else(|| ApiError::not_found("no such tile"))?;
    let mut r = bytes.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(r)
}

#[derive(Debug, Deserialize)]
struct InclusionParams {
    index: u64,
    size: Option<u64>,
}

async fn inclusion_proof(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(account): Path<String>,
    Query(q): Query<InclusionParams>,
) -> Result<Response, ApiError> {
    readable_account(&state, &caller, &account)?;
    let core = core(&state);
    let size = size_or_current(core, &account, q.size)?;
    let hashes = core
        .ledger
        .inclusion_proof(&account, q.index, size)
        .map_err(proof_error)?;
    Ok(Json(serde_json::json!({
        "index": q.index,
        "size": size,
        "hashes": base64_hashes(&hashes),
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
struct ConsistencyParams {
    from: u64,
    to: Option<u64>,
}

async fn consistency_proof(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(account): Path<String>,
    Query(q): Query<ConsistencyParams>,
) -> Result<Response, ApiError> {
    readable_account(&state, &caller, &account)?;
    let core = core(&state);
    let to = size_or_current(core, &account, q.to)?;
    let hashes = core
        .ledger
        .consistency_proof(&account, q.from, to)
        .map_err(proof_error)?;
    Ok(Json(serde_json::json!({
        "from": q.from,
        "to": to,
        "hashes": base64_hashes(&hashes),
    }))
    .into_response())
}

/// The tree size asked for, or the account's current size.
fn size_or_current(core: &Core, account: &str, asked: Option<u64>) -> Result<u64, ApiError> {
    match asked {
        Some(size) => Ok(size),
        None => core
            .ledger
            .tree_head(account)
            .map(|h| h.size)
            .ok_or_else(|| ApiError::not_found("no such log")),
    }
}

fn base64_hashes(hashes: &[trailkeep_ledger::Hash]) -> Vec<String> {
    hashes.iter().map(|h| BASE64.encode(h)).collect()
}

fn proof_error(e: trailkeep_ledger::Error) -> ApiError {
    match e {
        trailkeep_ledger::Error::Invalid(m) | trailkeep_ledger::Error::NotFound(m) => {
            ApiError::bad_request(m)
        }
        other => ApiError::internal(other),
    }
}
