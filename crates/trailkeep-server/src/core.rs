//! The server's core: the ledger, the search index and the ingest pipeline between them, with no
//! HTTP in sight (handlers in [`crate::api`] translate).
//!
//! **Durable before acknowledged:** [`Core::ingest`] answers only after the ledger reports the batch
//! durable (fsynced, unless the operator chose `--durability=relaxed`).
//! **The ledger is the truth:** search hits are positions; bodies are always read from the ledger.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::{Semaphore, watch};
use trailkeep_event::{Context, InputFormat, ItemResult, Policy, process_input_as};
use trailkeep_index::{EventIndex, WriterOptions};
use trailkeep_ledger::{Durability, Ledger, LedgerConfig};

use crate::audit::AuditRecord;
use crate::auth::{Principal, write_atomically};
use crate::config::{DurabilityMode, ServerConfig};
use crate::error::{ApiError, ErrorDetail};
use crate::ids::{IdRegistry, Known};
use crate::indexer::{IndexJob, Indexer, add_with_derived};
use crate::metrics::{Metrics, ReasonLabel, ResultLabel};
use crate::objects::{ItemDerived, ObjectStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("ledger: {0}")]
    Ledger(#[from] trailkeep_ledger::Error),
    #[error("index: {0}")]
    Index(#[from] trailkeep_index::IndexError),
    #[error("{0}")]
    Objects(#[from] StoreError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// An event as the API returns it anywhere (DESIGN §5).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    pub account: String,
    pub index: u64,
    pub received_at: String,
    pub event: Value,
    /// Derived data (class, description, changes, the object now): not part of the ledger leaf.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub derived: Option<ItemDerived>,
}

/// One item's result in an ingest answer.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum ItemOutcome {
    Accepted {
        account: String,
        index: u64,
        id: String,
        duplicate: bool,
    },
    Rejected {
        errors: Vec<ErrorDetail>,
    },
    /// Accepted and queued (durably) for remote targets only (routing, issue #9): no position
    /// here.
    #[serde(rename = "accepted")]
    Routed {
        account: String,
        id: String,
        targets: Vec<String>,
    },
    /// Valid, but no route handled it and no default target is set: not stored (counted and
    /// reported, issue #9).
    Dropped {
        account: String,
        id: String,
        reason: String,
    },
}

/// The ingest answer: `{"accepted", "rejected", "results"}`.
#[derive(Debug, Clone, Serialize)]
pub struct IngestReport {
    pub accepted: usize,
    pub rejected: usize,
    /// Items routing dropped (no route, no default target); absent when none.
    #[serde(skip_serializing_if = "is_zero")]
    pub dropped: usize,
    pub results: Vec<ItemOutcome>,
    /// Items rejected because the key may not write them (their account or action).
    #[serde(skip)]
    pub forbidden: usize,
}

/// The running core.
#[derive(Debug)]
pub struct Core {
    pub ledger: Ledger,
    pub index: Arc<EventIndex>,
    pub indexer: Indexer,
    /// Object states and per-event derivations (issue #11).
    pub objects: Arc<ObjectStore>,
    pub policy: Policy,
    pub metrics: Arc<Metrics>,
    redaction_secret: [u8; 32],
    ids: Mutex<IdRegistry>,
    queue: Arc<Semaphore>,
    queue_capacity: usize,
    max_batch_events: usize,
    /// Self-audit records of reads gathered for one append (see [`Core::record_in_background`]).
    background_records: Mutex<Vec<AuditRecord>>,
    /// Where self-audit events that concern no single account go.
    pub system_account: String,
    /// Views, alert rules and notifications, attached by `Alerts::start` after opening; every
    /// committed record is handed to it as it is handed to the indexer.
    pub alerts: OnceLock<Arc<crate::alerts::Alerts>>,
    /// Event routing by location (issue #9), attached by `Routing::start`.
    pub routing: OnceLock<Arc<crate::routing::Routing>>,
    /// The archive to object storage, attached by `Archive::start` when a target is configured;
    /// retention asks it how far each account is archived (`Archive::archived_count`).
    pub archive: OnceLock<Arc<crate::archive::Archive>>,
    /// Retention (issue #8), attached by `Retention::start`.
    pub retention: OnceLock<Arc<crate::retention::Retention>>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The action prefix of self-audit events.
pub const SELF_AUDIT_PREFIX: &str = "trailkeep.";

/// How far the index may run behind the ledger, in time, before ingest holds new requests back
/// (with the index's commit interval under load, an acknowledged event is then searchable
/// within about a second).
pub const INDEX_BACKLOG_TARGET: Duration = Duration::from_millis(250);
/// Longest an ingest request is held back for the index before it is answered 429.
pub const INDEX_BACKLOG_WAIT: Duration = Duration::from_secs(2);
/// How long the self-audit records of reads are gathered before they are appended together: one
/// ledger append (and fsync) per gathering instead of one per read (in a profile of one-event
/// lookups, the ledger's fsyncs of those records were a third of the server's CPU).
pub const BACKGROUND_RECORD_GATHER: Duration = Duration::from_millis(50);
/// Gathered records that are appended at once without waiting for the rest of the gathering, so
/// memory stays bounded under a burst of reads.
const BACKGROUND_RECORD_BATCH: usize = 2_000;
/// Records per input of a gathered append: far inside the input limits, in bytes and in items.
const BACKGROUND_RECORD_INPUT: usize = 100;

/// An accepted item on its way to the ledger: (result slot, account, id, canonical bytes, event).
pub(crate) type Pending = (usize, String, String, Vec<u8>, Value);

impl Core {
    /// Opens (or creates) the ledger and index under the data directory, catches the index up with
    /// the ledger, and loads the event ids already stored.
    pub fn open(config: &ServerConfig, metrics: Arc<Metrics>) -> Result<Arc<Core>, OpenError> {
        let data = &config.data_dir;
        std::fs::create_dir_all(data).map_err(|source| OpenError::Io {
            path: data.clone(),
            source,
        })?;
        let ledger = Ledger::open_dir(
            data.join("ledger"),
            LedgerConfig {
                origin: config.origin.clone(),
                durability: match config.durability {
                    DurabilityMode::Fsync => Durability::Fsync,
                    DurabilityMode::Relaxed => Durability::Relaxed,
                },
                ..LedgerConfig::default()
            },
        )?;
        let index_dir = data.join("index");
        std::fs::create_dir_all(&index_dir).map_err(|source| OpenError::Io {
            path: index_dir.clone(),
            source,
        })?;
        // An index of another format is rebuilt from the ledger (it is derived data).
        let (index, recreated) = EventIndex::open_or_recreate(&index_dir)?;
        if recreated {
            tracing::warn!("the search index had another format; rebuilding it from the ledger");
        }
        let index = Arc::new(index);
        let mut writer = index.writer(WriterOptions::default())?;
        let store_path = data.join(crate::objects::FILE_NAME);
        let (mut objects, objects_recreated) = ObjectStore::open(&store_path)?;
        if objects_recreated {
            tracing::warn!("the object store had another format; rebuilding it from the ledger");
        }
        let committed = index.committed_positions()?;
        // The store is committed after the index, so it is never ahead of it — unless the index
        // was deleted or rebuilt: then the store is rebuilt too, in step with it.
        if objects
            .positions()?
            .iter()
            .any(|(a, p)| committed.get(a).is_none_or(|c| p > c))
        {
            tracing::warn!("the object store is ahead of the search index; rebuilding it");
            drop(objects);
            ObjectStore::remove(&store_path)?;
            objects = ObjectStore::open(&store_path)?.0;
        }
        let objects = Arc::new(objects);

        let caught = catch_up(&ledger, &index, &mut writer, &objects)?;
        // Every stored event is searchable now: the ids for idempotent retries come from the
        // index's id terms (reading every event back from the ledger took minutes at 1M).
        let mut ids = IdRegistry::default();
        index.for_each_id_hash(|h| ids.insert_indexed_hash(h))?;
        if caught.indexed > 0 {
            tracing::info!(
                events = caught.indexed,
                "search index caught up with the ledger"
            );
        }
        if caught.derived > 0 {
            tracing::info!(
                events = caught.derived,
                "object store caught up with the ledger"
            );
        }
        let indexer = Indexer::start(
            ledger.clone(),
            index.clone(),
            writer,
            objects.clone(),
            metrics.clone(),
        );
        ids.follow(indexer.committed());
        let redaction_secret = load_or_create_secret(&data.join("redaction.key"))?;
        let policy = Policy {
            max_event_bytes: config.max_event_bytes,
            limits: trailkeep_event::InputLimits {
                max_input_bytes: config.max_body_bytes,
                max_items: config.max_batch_events,
                ..Default::default()
            },
            k8s_service_prefix: config.kubernetes_service.clone(),
            ..Policy::default()
        };
        Ok(Arc::new(Core {
            ledger,
            index,
            indexer,
            objects,
            policy,
            metrics,
            redaction_secret,
            ids: Mutex::new(ids),
            queue: Arc::new(Semaphore::new(config.ingest_queue)),
            queue_capacity: config.ingest_queue,
            max_batch_events: config.max_batch_events,
            background_records: Mutex::new(Vec::new()),
            system_account: config.system_account.clone(),
            alerts: OnceLock::new(),
            routing: OnceLock::new(),
            archive: OnceLock::new(),
            retention: OnceLock::new(),
        }))
    }

    /// The per-account HMAC key for redaction: derived from the server's secret, so it is stable
    /// across restarts and distinct per account.
    fn hmac_key(&self, account: &str) -> Vec<u8> {
        use hmac::{Hmac, Mac};
        let mut mac =
            Hmac::<sha2::Sha256>::new_from_slice(&self.redaction_secret).expect("any key length");
        mac.update(b"trailkeep redaction key\0");
        mac.update(account.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// Parses, normalises, authorises and durably appends the events of one request body.
    ///
    /// The work runs on its own task, so a client that disconnects mid-request cannot leave an
    /// appended batch unindexed or its ids reserved forever.
    pub async fn ingest(
        self: &Arc<Self>,
        caller: &Principal,
        body: Vec<u8>,
        format: InputFormat,
    ) -> Result<IngestReport, ApiError> {
        self.ingest_routed(caller, body, format, false).await
    }

    /// [`Core::ingest`]; `forwarded`: the batch came from another Trailkeep instance's routing
    /// (it is stored here and not forwarded to another Trailkeep again).
    pub async fn ingest_routed(
        self: &Arc<Self>,
        caller: &Principal,
        body: Vec<u8>,
        format: InputFormat,
        forwarded: bool,
    ) -> Result<IngestReport, ApiError> {
        let core = self.clone();
        let caller = caller.clone();
        tokio::spawn(async move {
            core.ingest_to_completion(&caller, body, format, forwarded)
                .await
        })
        .await
        .map_err(ApiError::internal)?
    }

    /// Holds a request back while the index runs more than [`INDEX_BACKLOG_TARGET`] behind
    /// the ledger, then answers 429 after [`INDEX_BACKLOG_WAIT`]. The count-bounded queue alone
    /// would let 20,000 acknowledged events wait for the index (seconds at full load); this
    /// bounds the wait in time, so acknowledged events stay searchable within about a second.
    async fn wait_for_index(&self) -> Result<(), ApiError> {
        let started = std::time::Instant::now();
        let deadline = started + INDEX_BACKLOG_WAIT;
        let mut outcome = Ok(());
        while self.indexer.backlog_age() > INDEX_BACKLOG_TARGET {
            if std::time::Instant::now() >= deadline {
                self.metrics.overloaded.inc();
                outcome = Err(ApiError::overloaded(1));
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.metrics
            .indexing
            .held_back
            .observe(started.elapsed().as_secs_f64());
        outcome
    }

    async fn ingest_to_completion(
        self: &Arc<Self>,
        caller: &Principal,
        body: Vec<u8>,
        format: InputFormat,
        forwarded: bool,
    ) -> Result<IngestReport, ApiError> {
        if !caller.role.can_ingest() {
            return Err(ApiError::forbidden("this key may not ingest events"));
        }
        // Before any parsing: a request held back or refused here costs no CPU.
        self.wait_for_index().await?;
        let core = self.clone();
        let default_account = caller.default_account.clone();
        let items = tokio::task::spawn_blocking(move || {
            let keys = |account: &str| Some(core.hmac_key(account));
            let ctx = Context::new(&core.policy, &default_account).with_keys(&keys);
            process_input_as(&body, format, &ctx)
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| match e {
            trailkeep_event::InputError::TooLarge { .. }
            | trailkeep_event::InputError::TooManyItems { .. } => {
                ApiError::payload_too_large(e.to_string())
            }
            trailkeep_event::InputError::Empty => ApiError::bad_request(e.to_string()),
        })?;
        if items.len() > self.max_batch_events {
            return Err(ApiError::payload_too_large(format!(
                "the request holds {} events; the limit is {}",
                items.len(),
                self.max_batch_events
            )));
        }

        let mut results: Vec<Option<ItemOutcome>> = vec![None; items.len()];
        let mut to_write: Vec<Pending> = Vec::new();
        let mut forbidden = 0;
        for (slot, item) in items.into_iter().enumerate() {
            match item.result {
                ItemResult::Accepted(event) => {
                    let account = event.account().to_string();
                    if !caller.accounts.allows(&account) {
                        results[slot] = Some(reject(
                            "logSourceCRN",
                            format!("this key may not write to account {account:?}"),
                        ));
                        forbidden += 1;
                        self.count_rejected("forbidden_account");
                        continue;
                    }
                    let id = event.id().to_string();
                    let (value, bytes) = event.into_event_and_bytes();
                    let action = value.get("action").and_then(Value::as_str).unwrap_or("");
                    // Only the server (and an admin restoring data) writes its own audit trail.
                    if action.starts_with(SELF_AUDIT_PREFIX) && !caller.role.is_admin() {
                        results[slot] = Some(reject(
                            "action",
                            format!(
                                "actions starting with {SELF_AUDIT_PREFIX:?} are Trailkeep's own audit events"
                            ),
                        ));
                        forbidden += 1;
                        self.count_rejected("forbidden_action");
                        continue;
                    }
                    if !caller.may_write_action(action) {
                        results[slot] = Some(reject(
                            "action",
                            format!(
                                "this key may only write actions matching {}",
                                caller.action_prefixes.join(", ")
                            ),
                        ));
                        forbidden += 1;
                        self.count_rejected("forbidden_action");
                        continue;
                    }
                    to_write.push((slot, account, id, bytes, value));
                }
                ItemResult::Rejected(errors) => {
                    self.count_rejected(rejection_reason(&errors));
                    results[slot] = Some(ItemOutcome::Rejected {
                        errors: errors
                            .into_iter()
                            .map(|e| ErrorDetail {
                                path: e.path,
                                reason: e.reason,
                            })
                            .collect(),
                    });
                }
                ItemResult::Skipped(why) => {
                    results[slot] = Some(reject("", format!("not stored: {why}")));
                    self.count_rejected("skipped_stage");
                }
            }
        }

        // Bounded queue: take room for every event of this request, or answer 429.
        let permits = if to_write.is_empty() {
            None
        } else {
            if to_write.len() > self.queue_capacity {
                return Err(ApiError::payload_too_large(format!(
                    "the request holds {} events; the ingest queue holds at most {}: send smaller batches",
                    to_write.len(),
                    self.queue_capacity
                )));
            }
            let n = u32::try_from(to_write.len()).unwrap_or(u32::MAX);
            match self.queue.clone().try_acquire_many_owned(n) {
                Ok(p) => Some(p),
                Err(_) => {
                    self.metrics.overloaded.inc();
                    return Err(ApiError::overloaded(1));
                }
            }
        };
        self.metrics
            .ingest_queue_depth
            .set((self.queue_capacity - self.queue.available_permits()) as i64);
        // Routing (issue #9): events for remote targets are queued durably here, before the
        // ledger; only those for the local ledger go on.
        let to_write = match self.routing.get() {
            Some(routing) => routing.split(to_write, &mut results, forwarded).await?,
            None => to_write,
        };
        let mut report = self.commit(to_write, permits, results).await?;
        report.forbidden = forbidden;
        Ok(report)
    }

    /// Self-audit: appends these records as events of their accounts and waits until they are
    /// durable. They bypass the ingest queue (their volume follows the API calls, which are rate
    /// limited per key) so that an overloaded ingest path cannot suppress them.
    pub async fn record(self: &Arc<Self>, records: Vec<AuditRecord>) -> Result<(), ApiError> {
        if records.is_empty() {
            return Ok(());
        }
        self.record_report(records).await.map(|_| ())
    }

    /// [`Core::record`], answering where each record was stored (retention needs the index of
    /// its statement).
    pub async fn record_report(
        self: &Arc<Self>,
        records: Vec<AuditRecord>,
    ) -> Result<IngestReport, ApiError> {
        let now = OffsetDateTime::now_utc();
        let mut body = Vec::new();
        for r in &records {
            serde_json::to_writer(&mut body, &r.to_event(now)).map_err(ApiError::internal)?;
            body.push(b'\n');
        }
        let core = self.clone();
        let items = tokio::task::spawn_blocking(move || {
            let keys = |account: &str| Some(core.hmac_key(account));
            let ctx = Context::new(&core.policy, &core.system_account).with_keys(&keys);
            process_input_as(&body, InputFormat::Ndjson, &ctx)
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
        let mut to_write: Vec<Pending> = Vec::new();
        let mut results = vec![None; items.len()];
        for (slot, item) in items.into_iter().enumerate() {
            match item.result {
                ItemResult::Accepted(event) => {
                    let account = event.account().to_string();
                    let id = event.id().to_string();
                    let (value, bytes) = event.into_event_and_bytes();
                    to_write.push((slot, account, id, bytes, value));
                }
                other => {
                    // A self-audit event is built by this server; a rejection is a bug.
                    tracing::error!(result = ?other, "a self-audit event was not valid");
                    results[slot] = Some(reject("", "invalid self-audit event".into()));
                }
            }
        }
        self.commit(to_write, None, results).await
    }

    /// Records in the background: for reads, whose answer should not wait for an fsync. Records
    /// are gathered for [`BACKGROUND_RECORD_GATHER`] and appended together. A crash in that time
    /// may lose the record of a read (never of a change: those use [`Core::record`] before
    /// answering); a graceful shutdown appends what is gathered
    /// ([`Core::flush_background_records`]).
    pub fn record_in_background(self: &Arc<Self>, records: Vec<AuditRecord>) {
        if records.is_empty() {
            return;
        }
        let (first, full) = {
            let mut gathered = self.background_records.lock().expect("records lock");
            let first = gathered.is_empty();
            gathered.extend(records);
            let full =
                (gathered.len() >= BACKGROUND_RECORD_BATCH).then(|| std::mem::take(&mut *gathered));
            (first, full)
        };
        if let Some(records) = full {
            let core = self.clone();
            tokio::spawn(async move { core.record_gathered(records).await });
        } else if first {
            // The first record of a gathering starts the timer that appends it.
            let core = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(BACKGROUND_RECORD_GATHER).await;
                let records =
                    std::mem::take(&mut *core.background_records.lock().expect("records lock"));
                core.record_gathered(records).await;
            });
        }
    }

    /// Appends the records gathered for the background and not appended yet (at shutdown).
    pub async fn flush_background_records(self: &Arc<Self>) {
        let records = std::mem::take(&mut *self.background_records.lock().expect("records lock"));
        self.record_gathered(records).await;
    }

    /// Appends gathered records in inputs of at most [`BACKGROUND_RECORD_INPUT`] (and the
    /// configured batch length), each a size the input limits take; they run at once, so the
    /// ledger's group commit still makes them one fsync.
    async fn record_gathered(self: &Arc<Self>, mut records: Vec<AuditRecord>) {
        let per_input = BACKGROUND_RECORD_INPUT.min(self.max_batch_events).max(1);
        let mut appends = Vec::new();
        while !records.is_empty() {
            let rest = records.split_off(per_input.min(records.len()));
            let core = self.clone();
            let input = std::mem::replace(&mut records, rest);
            appends.push(tokio::spawn(async move { core.record(input).await }));
        }
        for append in appends {
            match append.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e.message, "self-audit records could not be stored")
                }
                Err(e) => tracing::warn!(error = %e, "appending self-audit records failed"),
            }
        }
    }

    /// Reserves ids, appends the new events durably, hands them to the indexer and builds the
    /// answer. `results` already holds the outcome of every item not in `to_write`.
    async fn commit(
        self: &Arc<Self>,
        to_write: Vec<Pending>,
        permits: Option<tokio::sync::OwnedSemaphorePermit>,
        mut results: Vec<Option<ItemOutcome>>,
    ) -> Result<IngestReport, ApiError> {
        // Idempotency: reserve each (account, id); duplicates of committed or in-flight events are
        // answered with the original position.
        let mut waits = Vec::new(); // (result slot, account, id, receiver)
        let mut batch = Vec::new(); // (result slot, account, id, bytes, event)
        let mut first_in_request: HashMap<(String, String), usize> = HashMap::new();
        let mut same_request = Vec::new(); // (result slot, index into batch)
        let sender;
        {
            let (tx, rx) = watch::channel(None);
            sender = tx;
            let mut ids = self.ids.lock().expect("ids lock");
            ids.refresh();
            for (slot, account, id, bytes, event) in to_write {
                let key = (account.clone(), id.clone());
                if let Some(&b) = first_in_request.get(&key) {
                    same_request.push((slot, b));
                    continue;
                }
                let known = match ids.get(&account, &id) {
                    // Rare (a retry of an indexed event, or a filter false positive); the lock
                    // is held so that no other request can store the id meanwhile.
                    Known::Maybe => match self.stored_index(&account, &id)? {
                        Some(index) => Known::Committed(index),
                        None => Known::New,
                    },
                    known => known,
                };
                match known {
                    Known::Committed(index) => {
                        results[slot] = Some(ItemOutcome::Accepted {
                            account,
                            index,
                            id,
                            duplicate: true,
                        });
                    }
                    Known::Pending(other) => waits.push((slot, account, id, other)),
                    Known::New | Known::Maybe => {
                        ids.reserve(&account, &id, rx.clone());
                        first_in_request.insert(key, batch.len());
                        batch.push((slot, account, id, bytes, event));
                    }
                }
            }
        }

        let received_at = OffsetDateTime::now_utc();
        let appended = if batch.is_empty() {
            Ok(Vec::new())
        } else {
            let records: Vec<(String, Vec<u8>)> = batch
                .iter_mut()
                .map(|(_, a, _, b, _)| (a.clone(), std::mem::take(b)))
                .collect();
            let events: Vec<(String, Arc<Value>)> = batch
                .iter_mut()
                .map(|(_, a, _, _, e)| (a.clone(), Arc::new(e.take())))
                .collect();
            let (tx, rx) = tokio::sync::oneshot::channel();
            let started = std::time::Instant::now();
            let core = self.clone();
            self.ledger
                .append_with_time(records, received_at, move |r| {
                    // Called by the ledger in log order: the indexer and the alert evaluator get
                    // each account's records in order, whatever order the requests resume in.
                    if let Ok(done) = &r {
                        core.hand_off(events, done, received_at, permits);
                    }
                    let _ = tx.send(r);
                });
            let result = rx.await.unwrap_or_else(|_| {
                Err(trailkeep_ledger::Error::Invalid(
                    "ledger writer stopped".into(),
                ))
            });
            self.metrics
                .commit_latency
                .observe(started.elapsed().as_secs_f64());
            result
        };

        let appended = match appended {
            Ok(a) => a,
            Err(e) => {
                let mut ids = self.ids.lock().expect("ids lock");
                for (_, account, id, _, _) in &batch {
                    ids.release(account, id);
                }
                drop(ids);
                let _ = sender.send(Some(None));
                return Err(match e {
                    e if e.is_storage_full() => ApiError::new(
                        axum::http::StatusCode::INSUFFICIENT_STORAGE,
                        "insufficient_storage",
                        "the data directory's disk is full: nothing from this request was stored; \
                         retry once space is freed (the server goes on by itself)",
                    ),
                    other => ApiError::unavailable(format!(
                        "the ledger could not store the events: {other}"
                    )),
                });
            }
        };

        let batch_slots: Vec<usize> = batch.iter().map(|entry| entry.0).collect();
        {
            let mut ids = self.ids.lock().expect("ids lock");
            for ((slot, account, id, _, _), done) in batch.into_iter().zip(&appended) {
                ids.committed(&account, &id, done.index);
                results[slot] = Some(ItemOutcome::Accepted {
                    account,
                    index: done.index,
                    id,
                    duplicate: false,
                });
            }
        }
        // Wake requests that were waiting on one of these ids (they read `seen` for the index).
        let _ = sender.send(Some(Some(0)));
        self.metrics.index_lag.set(self.indexer.lag() as i64);
        self.metrics
            .ingest_queue_depth
            .set((self.queue_capacity - self.queue.available_permits()) as i64);

        for (slot, b) in same_request {
            if let Some(ItemOutcome::Accepted {
                account, index, id, ..
            }) = results[batch_slots[b]].clone()
            {
                results[slot] = Some(ItemOutcome::Accepted {
                    account,
                    index,
                    id,
                    duplicate: true,
                });
            }
        }
        for (slot, account, id, mut rx) in waits {
            let _ = rx.wait_for(Option::is_some).await;
            let known = self.ids.lock().expect("ids lock").get(&account, &id);
            let stored = match known {
                Known::Committed(index) => Some(index),
                // Already moved on to the filter: the index has it.
                Known::Maybe => self.stored_index(&account, &id)?,
                Known::Pending(_) | Known::New => None,
            };
            results[slot] = Some(match stored {
                Some(index) => ItemOutcome::Accepted {
                    account,
                    index,
                    id,
                    duplicate: true,
                },
                None => reject(
                    "id",
                    "an earlier request with the same id failed; retry".to_string(),
                ),
            });
        }

        let results: Vec<ItemOutcome> = results
            .into_iter()
            .map(|r| r.expect("every item has a result"))
            .collect();
        let accepted = results
            .iter()
            .filter(|r| matches!(r, ItemOutcome::Accepted { .. } | ItemOutcome::Routed { .. }))
            .count();
        let dropped = results
            .iter()
            .filter(|r| matches!(r, ItemOutcome::Dropped { .. }))
            .count();
        let duplicates = results
            .iter()
            .filter(|r| {
                matches!(
                    r,
                    ItemOutcome::Accepted {
                        duplicate: true,
                        ..
                    }
                )
            })
            .count();
        let rejected = results.len() - accepted - dropped;
        self.metrics
            .ingest_events
            .get_or_create(&ResultLabel { result: "accepted" })
            .inc_by((accepted - duplicates) as u64);
        self.metrics
            .ingest_events
            .get_or_create(&ResultLabel {
                result: "duplicate",
            })
            .inc_by(duplicates as u64);
        self.metrics
            .ingest_events
            .get_or_create(&ResultLabel { result: "rejected" })
            .inc_by(rejected as u64);
        self.metrics
            .ingest_events
            .get_or_create(&ResultLabel { result: "dropped" })
            .inc_by(dropped as u64);
        Ok(IngestReport {
            accepted,
            rejected,
            dropped,
            results,
            forbidden: 0,
        })
    }

    /// Where `(account, id)` is stored, asking the search index (which holds every committed
    /// event the id registry no longer holds exactly) and reading the event back to rule out a
    /// hash collision.
    fn stored_index(&self, account: &str, id: &str) -> Result<Option<u64>, ApiError> {
        self.metrics.id_lookups.inc();
        for index in self
            .index
            .indexes_with_id(account, id)
            .map_err(ApiError::internal)?
        {
            let Some(record) = self
                .ledger
                .read_record(account, index)
                .map_err(ApiError::internal)?
            else {
                continue;
            };
            let event = stored_event(&record).map_err(ApiError::internal)?;
            if event.get("id").and_then(Value::as_str) == Some(id) {
                return Ok(Some(index));
            }
        }
        Ok(None)
    }

    /// Hands committed records to the indexer and the alert evaluator. The queue room travels
    /// with the records to the indexer: a lagging index fills the queue and turns into 429s
    /// instead of unbounded memory.
    fn hand_off(
        &self,
        events: Vec<(String, Arc<Value>)>,
        appended: &[trailkeep_ledger::Appended],
        received_at: OffsetDateTime,
        room: Option<tokio::sync::OwnedSemaphorePermit>,
    ) {
        // The alert evaluator sees every committed record, like the indexer (issue #6).
        if let Some(alerts) = self.alerts.get() {
            let received_at_nanos =
                i64::try_from(received_at.unix_timestamp_nanos()).unwrap_or(i64::MAX);
            alerts.observe(
                events
                    .iter()
                    .zip(appended)
                    .map(
                        |((account, event), done)| crate::alerts::evaluator::Record {
                            account: account.clone(),
                            index: done.index,
                            received_at_nanos,
                            event: event.clone(),
                        },
                    )
                    .collect(),
            );
        }
        let jobs = events
            .into_iter()
            .zip(appended)
            .map(|((account, event), done)| IndexJob {
                account,
                index: done.index,
                received_at,
                event,
            })
            .collect();
        self.indexer.send(jobs, room);
    }

    fn count_rejected(&self, reason: &str) {
        self.metrics
            .rejected_events
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// An item's derived fields from the class and description the index stored for it (a
    /// search [`trailkeep_index::Hit`] carries them).
    pub fn derived_of(
        &self,
        account: &str,
        stored: Option<(String, String)>,
        event: &Value,
    ) -> Result<Option<ItemDerived>, ApiError> {
        Ok(match stored {
            Some((class, description)) => Some(ItemDerived {
                class,
                description,
                changes: Vec::new(),
                object: self
                    .objects
                    .object_ref(account, event)
                    .map_err(ApiError::internal)?,
            }),
            None => None,
        })
    }

    /// Reads one stored event as an API item.
    pub fn item(&self, account: &str, index: u64) -> Result<Option<Item>, ApiError> {
        let derived = self
            .index
            .derived(account, index)
            .map_err(ApiError::internal)?;
        self.item_with_derived(account, index, derived)
    }

    /// [`Core::item`] for a search hit, which carries what was derived for it.
    pub fn item_of_hit(&self, hit: &trailkeep_index::Hit) -> Result<Option<Item>, ApiError> {
        self.item_with_derived(&hit.account, hit.index, hit.derived.clone())
    }

    fn item_with_derived(
        &self,
        account: &str,
        index: u64,
        derived: Option<(String, String)>,
    ) -> Result<Option<Item>, ApiError> {
        let Some(record) = self
            .ledger
            .read_record(account, index)
            .map_err(ApiError::internal)?
        else {
            return Ok(None);
        };
        let event: Value = serde_json::from_slice(&record.bytes).map_err(ApiError::internal)?;
        let derived = self.derived_of(account, derived, &event)?;
        Ok(Some(Item {
            account: account.to_string(),
            index,
            received_at: format_time(received_at_of(&record)),
            event,
            derived,
        }))
    }

    /// Closes the pipeline: commits the index and signs final checkpoints.
    pub fn close(&self) {
        if let Some(alerts) = self.alerts.get() {
            alerts.close();
        }
        self.indexer.shutdown();
        if let Err(e) = self.ledger.close() {
            tracing::error!(error = %e, "closing the ledger failed");
        }
    }
}

/// Rebuilds the search index and the object store of a data directory from its ledger
/// (`trailkeep reindex`); the server must be stopped. Commits every 50,000 events, so an interrupted rebuild is finished by the next
/// start's catch-up. `progress(done, total)` is called as it goes. Returns the events indexed.
pub fn reindex(
    data_dir: &Path,
    origin: &str,
    mut progress: impl FnMut(u64, u64),
) -> Result<u64, OpenError> {
    let ledger = Ledger::open_dir(
        data_dir.join("ledger"),
        LedgerConfig {
            origin: origin.to_string(),
            ..LedgerConfig::default()
        },
    )?;
    let index_dir = data_dir.join("index");
    std::fs::create_dir_all(&index_dir).map_err(|source| OpenError::Io {
        path: index_dir.clone(),
        source,
    })?;
    let (index, _) = EventIndex::open_or_recreate(&index_dir)?;
    let mut writer = index.writer(WriterOptions::default())?;
    writer.delete_all()?;
    // The index is emptied before the object store, and each commit writes the index before the
    // store: an interrupted rebuild never leaves the store ahead of the index.
    writer.commit()?;
    let store_path = data_dir.join(crate::objects::FILE_NAME);
    ObjectStore::remove(&store_path)?;
    let (objects, _) = ObjectStore::open(&store_path)?;
    let mut batch = objects.begin()?;
    let total = ledger.len();
    let mut done = 0u64;
    progress(0, total);
    for account in ledger.accounts() {
        for record in ledger.iter_account(&account, 0) {
            let record = record?;
            let event = stored_event(&record)?;
            let derived = batch.apply(&account, record.index, &event)?;
            add_with_derived(
                &mut writer,
                &account,
                record.index,
                received_at_of(&record),
                &event,
                Some(&derived),
            )?;
            done += 1;
            if done.is_multiple_of(50_000) {
                // The index first, so the store never leads it.
                writer.commit()?;
                batch.commit()?;
                batch = objects.begin()?;
            }
            if done.is_multiple_of(1_000) {
                progress(done, total);
            }
        }
    }
    writer.commit()?;
    batch.commit()?;
    writer.finish()?;
    progress(done, total);
    ledger.close()?;
    Ok(done)
}

fn reject(path: &str, reason: String) -> ItemOutcome {
    ItemOutcome::Rejected {
        errors: vec![ErrorDetail {
            path: path.to_string(),
            reason,
        }],
    }
}

fn rejection_reason(errors: &[trailkeep_event::FieldError]) -> &'static str {
    match errors.first() {
        Some(e) if e.path.is_empty() => "unreadable",
        Some(e) if e.reason.contains("is required") => "missing_field",
        Some(e) if e.reason.contains("too large") || e.reason.contains("limit") => "too_large",
        _ => "invalid_field",
    }
}

/// What [`catch_up`] did.
#[derive(Debug, Default)]
pub struct CaughtUp {
    /// Records added to the search index.
    pub indexed: u64,
    /// Records whose object state was derived.
    pub derived: u64,
}

/// Brings the search index and the object store up to the end of the ledger: derives object state
/// for every record past the store's last commit, and indexes every record past the index's last
/// commit (`writer` must hold nothing uncommitted) with what was derived for it. The store is
/// never ahead of the index, so every record to index is derived here. Commits every 50,000
/// records, the index before the store, and logs its progress.
///
/// An object store found corrupt (a value it cannot read, here or before) is emptied and
/// derived again from the start of the ledger: it is never trusted.
pub fn catch_up(
    ledger: &Ledger,
    index: &EventIndex,
    writer: &mut trailkeep_index::Writer,
    objects: &ObjectStore,
) -> Result<CaughtUp, OpenError> {
    if objects.is_corrupt() {
        tracing::warn!("the object store is corrupt; rebuilding it from the ledger");
        objects.reset()?;
    }
    match catch_up_once(ledger, index, writer, objects) {
        Err(OpenError::Objects(e)) if e.is_corrupt() => {
            tracing::warn!(error = %e, "rebuilding the object store from the ledger");
            writer.rollback()?;
            objects.reset()?;
            catch_up_once(ledger, index, writer, objects)
        }
        other => other,
    }
}

fn catch_up_once(
    ledger: &Ledger,
    index: &EventIndex,
    writer: &mut trailkeep_index::Writer,
    objects: &ObjectStore,
) -> Result<CaughtUp, OpenError> {
    let committed = writer.positions().clone();
    let derived_upto = objects.positions()?;
    let mut done = CaughtUp::default();
    let mut batch = objects.begin()?;
    for account in ledger.accounts() {
        let next_unindexed = committed.get(&account).map_or(0, |i| i + 1);
        let next_underived = derived_upto.get(&account).map_or(0, |i| i + 1);
        for record in ledger.iter_account(&account, next_underived) {
            let record = record?;
            let event = stored_event(&record)?;
            let derived = batch.apply(&account, record.index, &event)?;
            done.derived += 1;
            if record.index >= next_unindexed {
                add_with_derived(
                    writer,
                    &account,
                    record.index,
                    received_at_of(&record),
                    &event,
                    Some(&derived),
                )?;
                done.indexed += 1;
            }
            if done.derived.is_multiple_of(50_000) {
                tracing::info!(
                    derived = done.derived,
                    indexed = done.indexed,
                    "catching up with the ledger"
                );
                writer.commit_hidden()?;
                batch.commit()?;
                index.reload()?;
                batch = objects.begin()?;
            }
        }
    }
    // Durable index, then the store, then visible to searches (as in the indexer).
    if done.indexed > 0 {
        writer.commit_hidden()?;
    }
    batch.commit()?;
    index.reload()?;
    Ok(done)
}

/// The stored event of a ledger record (always canonical JSON; anything else is corruption).
fn stored_event(record: &trailkeep_ledger::Record) -> Result<Value, trailkeep_ledger::Error> {
    serde_json::from_slice(&record.bytes).map_err(|e| trailkeep_ledger::Error::Corrupted {
        position: format!("{}/{}", record.account, record.index),
        reason: format!("stored event is not JSON: {e}"),
    })
}

fn received_at_of(record: &trailkeep_ledger::Record) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(record.received_at_unix_nanos))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// RFC 3339 UTC with a `+00:00` offset and microseconds, like stored `eventTime` values.
pub fn format_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}+00:00",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

fn load_or_create_secret(path: &Path) -> Result<[u8; 32], OpenError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let bytes = hex::decode(text.trim()).map_err(|e| OpenError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })?;
            bytes.try_into().map_err(|_| OpenError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "expected 32 bytes of hex",
                ),
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut secret = [0u8; 32];
            getrandom::fill(&mut secret).map_err(|e| OpenError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other(e.to_string()),
            })?;
            write_atomically(path, hex::encode(secret).as_bytes()).map_err(|source| {
                OpenError::Io {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
            Ok(secret)
        }
        Err(source) => Err(OpenError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::audit::Initiator;
    use crate::config::ServeOptions;

    /// A core with the default options over `dir`, for unit tests.
    pub(crate) fn open(dir: &Path) -> Arc<Core> {
        let config = ServeOptions {
            data_dir: Some(dir.to_path_buf()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        Core::open(&config, Arc::new(Metrics::new())).unwrap()
    }

    fn read_record(n: usize) -> AuditRecord {
        AuditRecord::new(
            "acct-a",
            "event.search",
            Initiator::Unauthenticated,
            (format!("read-{n}"), "events".into(), "data/events".into()),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_of_reads_gathered_for_the_background_are_all_appended_by_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        let core = open(dir.path());
        let before = core.ledger.len();
        // More than one input's worth, fewer than an early append's.
        let n = BACKGROUND_RECORD_INPUT * 2 + 50;
        for i in 0..n {
            core.record_in_background(vec![read_record(i)]);
        }
        // The gathering's timer has not run yet: only the flush can have appended them.
        core.flush_background_records().await;
        assert_eq!(core.ledger.len() - before, n as u64);
        let stored = (0..core.ledger.len())
            .filter_map(|i| core.ledger.read("acct-a", i).unwrap())
            .count();
        assert_eq!(stored, n);
        core.close();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_gathering_is_appended_without_a_flush_and_a_burst_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let core = open(dir.path());
        let before = core.ledger.len();
        core.record_in_background(vec![read_record(0)]);
        let appended = |want: u64| {
            let core = core.clone();
            async move {
                for _ in 0..500 {
                    if core.ledger.len() - before >= want {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                false
            }
        };
        assert!(appended(1).await, "the gathering's timer appended nothing");
        // A burst of a full batch is appended without waiting for a timer.
        let burst: Vec<_> = (0..BACKGROUND_RECORD_BATCH).map(read_record).collect();
        core.record_in_background(burst);
        assert!(core.background_records.lock().unwrap().is_empty());
        assert!(appended(1 + BACKGROUND_RECORD_BATCH as u64).await);
        core.close();
    }
}
