//! `GET /v1/export`: the events of a query and time range as NDJSON, CSV, Parquet or an evidence
//! bundle, streamed.
//!
//! Same parameters and authorisation as search (`q`, `from`, `to`, repeated `account`; a reader
//! sees only its accounts) plus `format`. The export is a snapshot: each account's tree size is
//! fixed when the request starts (for a bundle, the size of a checkpoint signed then), and hits
//! past it are left out, so the export and its proofs agree however long it takes.
//!
//! **Constant memory:** a blocking task pages through the index (hits only, newest first),
//! reads each body from the ledger and writes it through the format writer of
//! [`trailkeep_export`] into 64 KiB chunks on a bounded channel that the response body drains;
//! a slow client slows the task, it never makes it buffer. A failure after the first byte
//! aborts the chunked response, so the client sees a cut transfer rather than a short file.
//! The file formats live in `trailkeep-export`; this module knows only HTTP and the core.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use trailkeep_export::bundle::{BundleWriter, HeaderInfo};
use trailkeep_export::{ExportError, ExportItem, Format, TabularWriter};
use trailkeep_index::{Plan, SearchPage, SearchRequest};
use trailkeep_ledger::{Checkpoint, NoteVerifier};

use crate::api::{index_error, parse_plan, read_accounts, read_params, time_bounds};
use crate::app::{AppState, Caller};
use crate::audit::{AuditRecord, events_target};
use crate::core::{Core, format_time};
use crate::error::{ApiError, ErrorDetail};

/// Hits fetched from the index per page.
const PAGE: usize = 5_000;
/// Bytes per chunk sent to the client.
const CHUNK: usize = 64 * 1024;
/// Chunks waiting for the client at most (with `CHUNK`, the memory an export may hold).
const CHANNEL_CHUNKS: usize = 8;

/// The export routes.
pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/v1/export", get(export))
        .with_state(state)
}

/// What the snapshot fixed for one account.
#[derive(Debug, Clone)]
struct Snapshot {
    size: u64,
    /// The signed checkpoint of that size (bundles only).
    note: Option<String>,
}

/// Everything the producing task needs.
struct Job {
    core: Arc<Core>,
    format: Format,
    plan: Plan,
    accounts: Vec<String>,
    from: Option<OffsetDateTime>,
    to: Option<OffsetDateTime>,
    snapshot: HashMap<String, Snapshot>,
    header: HeaderInfo,
}

async fn export(
    State(state): State<AppState>,
    Caller(caller): Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (format, rest) = split_format(raw.unwrap_or_default())?;
    let p = read_params(Some(rest))?;
    for (name, given) in [
        ("limit", &p.limit),
        ("cursor", &p.cursor),
        ("by", &p.by),
        ("interval", &p.interval),
        ("size", &p.size),
        ("proof", &p.proof),
    ] {
        if given.is_some() {
            return Err(
                ApiError::bad_request(format!("unknown query parameter {name:?}")).with_details(
                    vec![ErrorDetail {
                        path: name.into(),
                        reason: "not a parameter of this endpoint".into(),
                    }],
                ),
            );
        }
    }
    let core = state.core.clone();
    let accounts = read_accounts(&core, &caller, &p.accounts)?;
    let plan = parse_plan(&p.q)?;
    let (from, to) = time_bounds(&p)?;
    state.spend(&caller, crate::limits::Spend::Query, 1)?;
    // An export is recorded in every account it covers, durably, before anything is sent: "who
    // exported account A's events" must have an answer even if the server dies mid-stream.
    let request = serde_json::json!({
        "q": p.q, "from": p.from, "to": p.to, "format": format.name(),
    });
    let records = accounts
        .iter()
        .map(|account| {
            AuditRecord::new(account, "event.export", &caller, events_target(account))
                .client(caller.client)
                .request(request.clone())
        })
        .collect();
    state.core.record(records).await?;
    let header = HeaderInfo {
        created_at: format_time(OffsetDateTime::now_utc()),
        query: p.q.clone(),
        from: p.from.clone(),
        to: p.to.clone(),
    };
    // The snapshot and the first page are taken before answering, so their failures are
    // proper error responses.
    let (job, first) = tokio::task::spawn_blocking(move || {
        let snapshot = take_snapshot(&core, &accounts, format == Format::Bundle)?;
        let job = Job {
            core,
            format,
            plan,
            accounts,
            from,
            to,
            snapshot,
            header,
        };
        let first = job.page(None)?;
        Ok::<_, ApiError>((job, first))
    })
    .await
    .map_err(ApiError::internal)??;

    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    tokio::task::spawn_blocking(move || {
        let out = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        if let Err(e) = job.run(first, out) {
            tracing::warn!(error = %e, "export stopped");
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let stamp = OffsetDateTime::now_utc().unix_timestamp();
    let mut response = Body::from_stream(ChunkStream(rx)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"trailkeep-export-{stamp}.{}\"",
        format.extension()
    )) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

/// Takes `format` out of the query string; the rest is read like search's parameters.
fn split_format(raw: String) -> Result<(Format, String), ApiError> {
    let mut format = Format::Ndjson;
    let mut rest = form_urlencoded::Serializer::new(String::new());
    for (key, value) in form_urlencoded::parse(raw.as_bytes()) {
        if key == "format" {
            format = Format::parse(&value).ok_or_else(|| {
                let names: Vec<&str> = Format::ALL.iter().map(|f| f.name()).collect();
                ApiError::bad_request(format!(
                    "format {value:?} is not one of {}",
                    names.join(", ")
                ))
                .with_details(vec![ErrorDetail {
                    path: "format".into(),
                    reason: format!("use one of {}", names.join(", ")),
                }])
            })?;
        } else {
            rest.append_pair(&key, &value);
        }
    }
    Ok((format, rest.finish()))
}

/// Each account's tree size now; for a bundle, the newest signed checkpoint (signed first if
/// the log grew since the last one).
fn take_snapshot(
    core: &Core,
    accounts: &[String],
    signed: bool,
) -> Result<HashMap<String, Snapshot>, ApiError> {
    let ledger = &core.ledger;
    let mut out = HashMap::new();
    if signed {
        ledger
            .sign_checkpoints_if_grown()
            .map_err(ApiError::internal)?;
        let verifier = NoteVerifier::parse(&ledger.verifier_key()).map_err(ApiError::internal)?;
        for a in accounts {
            let Some(note) = ledger.latest_checkpoint(a) else {
                continue;
            };
            let body = verifier.open(&note).map_err(ApiError::internal)?;
            let cp = Checkpoint::parse(body).map_err(ApiError::internal)?;
            out.insert(
                a.clone(),
                Snapshot {
                    size: cp.size,
                    note: Some(note),
                },
            );
        }
    } else {
        for a in accounts {
            if let Some(head) = ledger.tree_head(a) {
                out.insert(
                    a.clone(),
                    Snapshot {
                        size: head.size,
                        note: None,
                    },
                );
            }
        }
    }
    Ok(out)
}

enum Sink {
    Table(TabularWriter<ChannelWriter>),
    Bundle(BundleWriter<ChannelWriter>),
}

#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error("{0}")]
    Other(String),
}

impl Job {
    fn page(&self, cursor: Option<&str>) -> Result<SearchPage, ApiError> {
        if self.accounts.is_empty() {
            return Ok(SearchPage {
                hits: Vec::new(),
                next_cursor: None,
            });
        }
        self.core
            .index
            .search(&SearchRequest {
                plan: &self.plan,
                accounts: &self.accounts,
                from: self.from,
                to: self.to,
                limit: PAGE,
                cursor,
            })
            .map_err(index_error)
    }

    fn run(self, first: SearchPage, out: ChannelWriter) -> Result<(), RunError> {
        let ledger = &self.core.ledger;
        let mut sink = match self.format {
            Format::Bundle => Sink::Bundle(BundleWriter::new(
                out,
                &ledger.verifier_key(),
                &self.header,
            )?),
            f => Sink::Table(TabularWriter::new(f, out)?),
        };
        let mut page = first;
        loop {
            for hit in &page.hits {
                let Some(snap) = self.snapshot.get(&hit.account) else {
                    continue;
                };
                if hit.index >= snap.size {
                    continue; // newer than the snapshot
                }
                let Some(record) = ledger
                    .read_record(&hit.account, hit.index)
                    .map_err(|e| RunError::Other(e.to_string()))?
                else {
                    tracing::warn!(account = %hit.account, index = hit.index, "export hit missing from the ledger");
                    continue;
                };
                let item = ExportItem {
                    account: &hit.account,
                    index: hit.index,
                    received_at_unix_nanos: record.received_at_unix_nanos,
                    bytes: &record.bytes,
                };
                match &mut sink {
                    Sink::Table(w) => w.write(&item)?,
                    Sink::Bundle(b) => {
                        if !b.has_checkpoint(&hit.account) {
                            b.checkpoint(&hit.account, snap.note.as_deref().unwrap_or_default())?;
                        }
                        let proof = ledger
                            .inclusion_proof(&hit.account, hit.index, snap.size)
                            .map_err(|e| RunError::Other(e.to_string()))?;
                        b.event(&item, &proof)?;
                    }
                }
            }
            let Some(cursor) = page.next_cursor.take() else {
                break;
            };
            page = self
                .page(Some(&cursor))
                .map_err(|e| RunError::Other(e.message))?;
        }
        let mut out = match sink {
            Sink::Table(w) => w.finish()?,
            Sink::Bundle(b) => {
                b.finish(|body| ledger.sign_note(body).map_err(|e| e.to_string()))?
            }
        };
        out.flush().map_err(ExportError::Io)?;
        Ok(())
    }
}

/// A `Write` that hands 64 KiB chunks to the response body, waiting while the client is slow.
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// The receiving end as a body stream.
struct ChunkStream(mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl futures_core::Stream for ChunkStream {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}
