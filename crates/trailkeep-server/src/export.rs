//! `GET /v1/export`: the events of a query and time range as NDJSON, CSV, Parquet or an evidence
//! bundle, streamed.
//!
//! Same parameters and authorisation as search (`q`, `from`, `to`, repeated `account`; a reader
//! sees only its accounts) plus `format`. The export is a snapshot: each account's tree size is
//! fixed when the request starts (for a bundle, the size of a checkpoint signed then), and hits
//! past it are left out, so the export and its proofs agree however long it takes.
//!
//! **Constant memory:** a blocking task pages through the index (hits only, newest first, in
//! time windows of about a page each: [`Walk`]; positions alone from fast fields unless the
//! format is NDJSON, whose items carry what was derived, their objects looked up a batch at a
//! time), reads the bodies from the ledger a batch at a time ([`Ledger::read_many`]: each
//! sealed block opened once per batch) and, for a bundle, builds their inclusion proofs and
//! encodes their lines ([`PreparedEvent`]), for Parquet reads the columns out of the events
//! into Arrow arrays ([`ParquetRows`]); a second thread (for a bundle: hashes and) writes them
//! through the format writer of [`trailkeep_export`] into 256 KiB
//! chunks on a bounded channel that the response body drains. Between the two threads at most
//! `BATCHES_AHEAD` batches of `BATCH` records wait, so the two halves overlap while the
//! bodies held stay a few MiB; a slow client slows both, it never makes them buffer. A failure after the first byte
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
use trailkeep_export::bundle::{BundleWriter, HeaderInfo, PreparedEvent};
use trailkeep_export::{ExportError, ExportItem, Format, ParquetBatch, ParquetRows, TabularWriter};
use trailkeep_index::{Plan, SearchPage, SearchRequest, Walk};
use trailkeep_ledger::{
    Checkpoint, Error as LedgerError, Hash, Ledger, NoteVerifier, merkle, tiles,
};

use crate::api::{index_error, parse_plan, read_accounts, read_params, time_bounds};
use crate::app::{AppState, Caller};
use crate::audit::{AuditRecord, events_target};
use crate::core::{Core, format_time};
use crate::error::{ApiError, ErrorDetail};
use crate::objects::ItemDerived;

/// Hits fetched from the index per page (the most a search page may hold); the pages are
/// read in time windows of about this many hits each ([`Walk`]).
const PAGE: usize = trailkeep_index::MAX_LIMIT;
/// Records read from the ledger per batch handed from the reading thread to the writing one
/// (with [`BATCHES_AHEAD`], what bounds the bodies held at once: a few MiB).
const BATCH: usize = 512;
/// Rows per Arrow batch of a Parquet export.
const PARQUET_ROWS: usize = BATCH / 2;
/// Batches the reading thread may have ready before the writing one takes them.
const BATCHES_AHEAD: usize = 2;
/// Bytes per chunk sent to the client.
const CHUNK: usize = 256 * 1024;
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
    // proper error responses (the page itself is read again by the walk that streams).
    let job = tokio::task::spawn_blocking(move || {
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
        job.walk()?.next_page()?;
        Ok::<_, ApiError>(job)
    })
    .await
    .map_err(ApiError::internal)??;

    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    let runtime = tokio::runtime::Handle::current();
    let stall_limit = state.config.client_timeout * STALL_TIMEOUTS;
    tokio::task::spawn_blocking(move || {
        let out = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
            runtime,
            stall_limit,
        };
        if let Err(e) = job.run(out) {
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

/// The parts of a stored event that `derived.object` is found by (`target`, `targetId`), as a
/// small event: the rest is stepped over by a lazy scan ([`trailkeep_export::scan`]), not
/// parsed into a tree (an export reads millions of events). What the scan cannot follow is
/// parsed by serde, skipping all but those two members.
fn target_part(bytes: &[u8]) -> serde_json::Result<serde_json::Value> {
    #[derive(serde::Deserialize)]
    struct TargetOnly {
        #[serde(default)]
        target: Option<serde_json::Value>,
        #[serde(rename = "targetId", default)]
        target_id: Option<serde_json::Value>,
    }
    let mut found: [Option<std::ops::Range<usize>>; 2] = Default::default();
    let parts = match trailkeep_export::scan::members(bytes, &["target", "targetId"], &mut found) {
        Ok(()) => {
            let value = |r: &Option<std::ops::Range<usize>>| {
                r.as_ref()
                    .map(|r| serde_json::from_slice::<serde_json::Value>(&bytes[r.clone()]))
                    .transpose()
            };
            TargetOnly {
                target: value(&found[0])?,
                target_id: value(&found[1])?,
            }
        }
        Err(_) => serde_json::from_slice(bytes)?,
    };
    let mut event = serde_json::Map::new();
    // `null` members are what serde's `Option` made of them: absent.
    if let Some(t) = parts.target.filter(|t| !t.is_null()) {
        event.insert("target".into(), t);
    }
    if let Some(t) = parts.target_id.filter(|t| !t.is_null()) {
        event.insert("targetId".into(), t);
    }
    Ok(serde_json::Value::Object(event))
}

impl Job {
    /// Every hit, newest first, a page at a time (in time windows: see [`Walk`]); `None` when
    /// no account is readable.
    fn walk(&self) -> Result<Pages<'_>, ApiError> {
        if self.accounts.is_empty() {
            return Ok(Pages(None));
        }
        let req = SearchRequest {
            plan: &self.plan,
            accounts: &self.accounts,
            from: self.from,
            to: self.to,
            limit: PAGE,
            cursor: None,
        };
        // Only NDJSON items carry what was derived; the other formats need the positions alone.
        let walk = self
            .core
            .index
            .walk(&req, self.format == Format::Ndjson)
            .map_err(index_error)?;
        Ok(Pages(Some(walk)))
    }

    /// Pages through the index and reads the bodies (and, for a bundle, builds the inclusion
    /// proofs) on one thread, and writes the format on this one: the two halves of the work
    /// overlap. Batches of [`BATCH`] records pass through
    /// a channel of [`BATCHES_AHEAD`], so the bodies held at once stay bounded; when the writer
    /// stops (the client went away), the reader finds the channel closed and stops too.
    fn run(self, out: ChannelWriter) -> Result<(), RunError> {
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Ready, RunError>>(BATCHES_AHEAD);
            let job = &self;
            scope.spawn(move || {
                if let Err(e) = job.read_all(&tx) {
                    let _ = tx.send(Err(e));
                }
            });
            self.write_all(rx, out)
        })
    }

    /// The reading half: every hit inside the snapshot with its record, in batches.
    fn read_all(
        &self,
        tx: &std::sync::mpsc::SyncSender<Result<Ready, RunError>>,
    ) -> Result<(), RunError> {
        let ledger = &self.core.ledger;
        // Parquet's columns are read out of the events and built here, so that the writing
        // half, which encodes and compresses the pages, has only that to do.
        let mut parquet = (self.format == Format::Parquet).then(ParquetRows::new);
        let mut proofs: HashMap<String, ProofMemo> = HashMap::new();
        let mut pages = self.walk().map_err(|e| RunError::Other(e.message))?;
        while let Some(mut page) = pages.next_page().map_err(|e| RunError::Other(e.message))? {
            // Hits past the snapshot are newer than the export; the rest are read a batch at a
            // time (each sealed block opened once per batch).
            let hits: Vec<trailkeep_index::Hit> = std::mem::take(&mut page.hits)
                .into_iter()
                .filter(|h| {
                    self.snapshot
                        .get(&h.account)
                        .is_some_and(|s| h.index < s.size)
                })
                .collect();
            let mut hits = hits.into_iter().peekable();
            while hits.peek().is_some() {
                let chunk: Vec<trailkeep_index::Hit> = hits.by_ref().take(BATCH).collect();
                let wanted: Vec<(&str, u64)> = chunk
                    .iter()
                    .map(|h| (h.account.as_str(), h.index))
                    .collect();
                let records = ledger
                    .read_many(&wanted)
                    .map_err(|e| RunError::Other(e.to_string()))?;
                drop(wanted);
                let mut batch = Vec::with_capacity(chunk.len());
                for (hit, record) in chunk.into_iter().zip(records) {
                    let Some(record) = record else {
                        tracing::warn!(account = %hit.account, index = hit.index, "export hit missing from the ledger");
                        continue;
                    };
                    let proof = if self.format == Format::Bundle {
                        if proofs.len() >= MAX_PROOF_MEMOS
                            && !proofs.contains_key(&hit.account)
                            && let Some(evict) = proofs.keys().next().cloned()
                        {
                            proofs.remove(&evict);
                        }
                        let size = self.snapshot[&hit.account].size;
                        let memo = proofs
                            .entry(hit.account.clone())
                            .or_insert_with(|| ProofMemo::new(size));
                        memo.proof(ledger, &hit.account, hit.index)
                            .map_err(|e| RunError::Other(e.to_string()))?
                    } else {
                        Vec::new()
                    };
                    batch.push(Fetched {
                        hit,
                        received_at_unix_nanos: record.received_at_unix_nanos,
                        bytes: record.bytes,
                        proof,
                    });
                }
                if batch.is_empty() {
                    continue;
                }
                let ready = match &mut parquet {
                    Some(rows) => {
                        // In halves: smaller Arrow batches, less held at once.
                        for half in batch.chunks(PARQUET_ROWS) {
                            for f in half {
                                rows.push(&f.item())?;
                            }
                            if tx.send(Ok(Ready::Rows(rows.take()?))).is_err() {
                                return Ok(()); // the writing half stopped; it reports why
                            }
                        }
                        continue;
                    }
                    // A bundle's lines are encoded here too (base64 of the bytes and proofs);
                    // the writing half hashes and writes them.
                    None if self.format == Format::Bundle => Ready::Events(
                        batch
                            .iter()
                            .map(|f| PreparedEvent::new(&f.item(), &f.proof))
                            .collect(),
                    ),
                    None => Ready::Records(batch),
                };
                if tx.send(Ok(ready)).is_err() {
                    return Ok(()); // the writing half stopped; it reports why
                }
            }
        }
        Ok(())
    }

    /// The `derived` member of each item of a batch (NDJSON), as `Core::derived_of` makes it
    /// one at a time: the objects are looked up in one read of the object store.
    fn derived_of(&self, batch: &[Fetched]) -> Result<Vec<Option<Vec<u8>>>, RunError> {
        let mut targets = Vec::with_capacity(batch.len());
        for f in batch {
            targets.push(match f.hit.derived {
                Some(_) => Some(target_part(&f.bytes).map_err(|e| RunError::Other(e.to_string()))?),
                None => None,
            });
        }
        let wanted: Vec<(&str, &serde_json::Value)> = batch
            .iter()
            .zip(&targets)
            .filter_map(|(f, t)| Some((f.hit.account.as_str(), t.as_ref()?)))
            .collect();
        let mut objects = self
            .core
            .objects
            .object_refs(&wanted)
            .map_err(|e| RunError::Other(ApiError::internal(e).message))?
            .into_iter();
        Ok(batch
            .iter()
            .map(|f| {
                let (class, description) = f.hit.derived.clone()?;
                let d = ItemDerived {
                    class,
                    description,
                    changes: Vec::new(),
                    object: objects.next().flatten(),
                };
                Some(serde_json::to_vec(&d).expect("derived fields serialise"))
            })
            .collect())
    }

    /// The writing half: the format writer over the batches the reading half sends.
    fn write_all(
        &self,
        rx: std::sync::mpsc::Receiver<Result<Ready, RunError>>,
        out: ChannelWriter,
    ) -> Result<(), RunError> {
        let ledger = &self.core.ledger;
        let mut sink = match self.format {
            Format::Bundle => Sink::Bundle(BundleWriter::new(
                out,
                &ledger.verifier_key(),
                &self.header,
            )?),
            f => Sink::Table(TabularWriter::new(f, out)?),
        };
        for ready in rx {
            let batch = match (ready?, &mut sink) {
                (Ready::Records(batch), _) => batch,
                (Ready::Rows(rows), Sink::Table(w)) => {
                    w.write_rows(rows)?;
                    continue;
                }
                (Ready::Events(events), Sink::Bundle(b)) => {
                    for e in &events {
                        // Every account with a hit inside the snapshot has a signed note.
                        if !b.has_checkpoint(e.account()) {
                            let snap = &self.snapshot[e.account()];
                            b.checkpoint(e.account(), snap.note.as_deref().unwrap_or_default())?;
                        }
                        b.prepared(e)?;
                    }
                    continue;
                }
                (Ready::Rows(_) | Ready::Events(_), _) => {
                    return Err(RunError::Other("a batch of another format".into()));
                }
            };
            // NDJSON lines are items exactly as search answers them, `derived` included: the
            // objects of a batch are looked up together.
            let derived = if self.format == Format::Ndjson {
                self.derived_of(&batch)?
            } else {
                Vec::new()
            };
            let mut derived = derived.into_iter();
            for f in batch {
                let hit = &f.hit;
                let item = f.item();
                match &mut sink {
                    Sink::Table(w) if self.format == Format::Ndjson => {
                        let derived = derived.next().flatten();
                        w.write_with_derived(&item, derived.as_deref())?
                    }
                    Sink::Table(w) => w.write(&item)?,
                    Sink::Bundle(b) => {
                        // Every account with a hit inside the snapshot has a signed note.
                        let snap = &self.snapshot[&hit.account];
                        if !b.has_checkpoint(&hit.account) {
                            b.checkpoint(&hit.account, snap.note.as_deref().unwrap_or_default())?;
                        }
                        b.event(&item, &f.proof)?;
                    }
                }
            }
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

/// An export's [`Walk`] (`None`: no account to read).
struct Pages<'a>(Option<Walk<'a>>);

impl Pages<'_> {
    fn next_page(&mut self) -> Result<Option<SearchPage>, ApiError> {
        match &mut self.0 {
            None => Ok(None),
            Some(walk) => walk.next_page().map_err(index_error),
        }
    }
}

/// What the reading half hands the writing one.
enum Ready {
    /// Records to write.
    Records(Vec<Fetched>),
    /// A Parquet export's rows, already in columns.
    Rows(ParquetBatch),
    /// A bundle's event lines, but for their sequence numbers.
    Events(Vec<PreparedEvent>),
}

/// A hit with its record, read ahead of the writer.
struct Fetched {
    hit: trailkeep_index::Hit,
    received_at_unix_nanos: i64,
    bytes: Vec<u8>,
    /// Its inclusion proof against the snapshot's checkpoint (bundles only).
    proof: Vec<Hash>,
}

impl Fetched {
    fn item(&self) -> ExportItem<'_> {
        ExportItem {
            account: &self.hit.account,
            index: self.hit.index,
            received_at_unix_nanos: self.received_at_unix_nanos,
            bytes: &self.bytes,
        }
    }
}

/// Accounts whose proof memos are kept at once (each at most [`MEMO_NODES`] hashes and
/// [`MEMO_TILES`] tiles: about 16 MiB in all).
const MAX_PROOF_MEMOS: usize = 64;
/// Node hashes one memo keeps before it starts again (about 200 KiB): the nodes near the
/// leaves being proven, which neighbouring leaves share.
const MEMO_NODES: usize = 4 * 1024;
/// Tiles one memo keeps (8 KiB each).
const MEMO_TILES: usize = 8;

/// Hashes `(level, index)` keys with one multiplication (Fibonacci hashing); the keys are not
/// chosen by anyone, so SipHash's protection buys nothing here.
#[derive(Default, Clone, Copy)]
struct NodeKeyHasher(u64);

impl std::hash::Hasher for NodeKeyHasher {
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8)) ^ u64::from(b);
        }
    }
    fn write_u8(&mut self, n: u8) {
        self.0 = self.0.rotate_left(8) ^ u64::from(n);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = self.0.rotate_left(8) ^ n;
    }
}

type NodeMap<V> = HashMap<(u8, u64), V, std::hash::BuildHasherDefault<NodeKeyHasher>>;

/// Inclusion proofs of many leaves of one account against one tree size, sharing the work: a
/// bundle's events are mostly neighbours, so their proofs share most nodes. Node hashes are
/// memoised and the tiles they come from fetched once (through the ledger's C2SP tile API, so
/// the proofs are built from exactly what outside verifiers read); both caches are bounded.
struct ProofMemo {
    size: u64,
    nodes: std::cell::RefCell<NodeMap<Hash>>,
    tiles: std::cell::RefCell<NodeMap<Arc<Vec<u8>>>>,
}

/// A [`ProofMemo`] bound to a ledger and account for one proof.
struct MemoSource<'a> {
    memo: &'a ProofMemo,
    ledger: &'a Ledger,
    account: &'a str,
}

impl ProofMemo {
    fn new(size: u64) -> Self {
        Self {
            size,
            nodes: Default::default(),
            tiles: Default::default(),
        }
    }

    fn proof(&self, ledger: &Ledger, account: &str, index: u64) -> Result<Vec<Hash>, LedgerError> {
        if index >= self.size {
            return Err(LedgerError::Invalid(format!(
                "index {index} not below size {}",
                self.size
            )));
        }
        let src = MemoSource {
            memo: self,
            ledger,
            account,
        };
        merkle::inclusion_proof(&src, index, self.size)
    }
}

impl MemoSource<'_> {
    /// Entry `index` of tile level `level` (the node at tree level `8 * level`).
    fn tile_entry(&self, level: u8, index: u64) -> Result<Hash, LedgerError> {
        let tile = index / tiles::TILE_WIDTH;
        let cached = self.memo.tiles.borrow().get(&(level, tile)).cloned();
        let bytes = match cached {
            Some(b) => b,
            None => {
                let level_len =
                    self.memo.size >> (u32::from(level) * u32::from(tiles::TILE_HEIGHT));
                let width = (level_len - tile * tiles::TILE_WIDTH).min(tiles::TILE_WIDTH);
                let partial = (width < tiles::TILE_WIDTH).then_some(width as u16);
                let path = tiles::tile_path(level, tile, partial);
                let bytes =
                    Arc::new(self.ledger.tile(self.account, &path)?.ok_or_else(|| {
                        LedgerError::NotFound(format!("{}/{path}", self.account))
                    })?);
                let mut cache = self.memo.tiles.borrow_mut();
                if cache.len() >= MEMO_TILES {
                    cache.clear();
                }
                cache.insert((level, tile), bytes.clone());
                bytes
            }
        };
        let at = ((index % tiles::TILE_WIDTH) * 32) as usize;
        bytes
            .get(at..at + 32)
            .and_then(|h| Hash::try_from(h).ok())
            .ok_or_else(|| {
                LedgerError::corrupted(format!("{}/tile/{level}", self.account), "short tile")
            })
    }
}

impl merkle::NodeSource for MemoSource<'_> {
    type Error = LedgerError;

    fn node(&self, level: u8, index: u64) -> Result<Hash, LedgerError> {
        if let Some(h) = self.memo.nodes.borrow().get(&(level, index)) {
            return Ok(*h);
        }
        let h = if level.is_multiple_of(tiles::TILE_HEIGHT)
            && level / tiles::TILE_HEIGHT < tiles::TILE_LEVELS
        {
            self.tile_entry(level / tiles::TILE_HEIGHT, index)?
        } else {
            let left = self.node(level - 1, index * 2)?;
            let right = self.node(level - 1, index * 2 + 1)?;
            merkle::node_hash(&left, &right)
        };
        let mut nodes = self.memo.nodes.borrow_mut();
        if nodes.len() >= MEMO_NODES {
            nodes.clear();
        }
        nodes.insert((level, index), h);
        Ok(h)
    }
}

/// How many client timeouts an export waits for a client that reads nothing before giving up.
const STALL_TIMEOUTS: u32 = 5;

/// A `Write` that hands 256 KiB chunks to the response body, waiting while the client is slow —
/// but not forever: a client that takes nothing for `stall_limit` is given up on, so a reader
/// that stopped reading cannot hold a blocking thread and a ledger snapshot indefinitely.
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
    runtime: tokio::runtime::Handle,
    stall_limit: std::time::Duration,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        // This runs on a blocking thread, where waiting on the runtime is allowed.
        match self
            .runtime
            .block_on(self.tx.send_timeout(Ok(chunk), self.stall_limit))
        {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "the client read nothing for {} s",
                    self.stall_limit.as_secs()
                ),
            )),
            Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the client went away",
            )),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The lazy scan finds what serde finds: `target` and `targetId` of any kind, `null`
    /// ones left out, and what it cannot follow read by serde.
    #[test]
    fn target_part_takes_target_and_target_id_only() {
        let t = |s: &str| target_part(s.as_bytes()).unwrap();
        assert_eq!(
            t(
                r#"{"action":"a","requestData":{"x":["}",{"target":1}]},"target":{"id":"o/1","name":"n \"q\""},"targetId":"o/1"}"#
            ),
            serde_json::json!({"target": {"id": "o/1", "name": "n \"q\""}, "targetId": "o/1"})
        );
        assert_eq!(
            t(r#"{"target":null,"targetId":7}"#),
            serde_json::json!({"targetId": 7})
        );
        assert_eq!(t(r#"{"action":"a"}"#), serde_json::json!({}));
        let deep = format!(
            r#"{{"attrs":{}1{},"target":{{"id":"deep"}}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert_eq!(t(&deep), serde_json::json!({"target": {"id": "deep"}}));
        assert!(target_part(br#"{"target":{"id":"x"}"#).is_err());
        assert!(target_part(b"not json").is_err());
    }
}
