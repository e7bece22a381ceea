//! Event routing by location (issue #9), on the Activity Tracker event-routing design: targets,
//! routes with ordered rules, default targets, settings.
//!
//! * [`model`] — targets, routes, settings and their validation; [`store`] — `config.json`.
//! * [`decide`] — the pure routing decision, compiled once per change into a [`decide::Table`].
//! * [`outbox`] — the persisted per-target queue; [`send`] — the workers that deliver it to
//!   another Trailkeep, a webhook or a syslog receiver ([`syslog`]).
//! * [`api`] — `/v1/targets`, `/v1/routes`, `/v1/settings` (admin only).
//!
//! **Hook into ingest:** [`Routing::split`] is the one call the ingest path makes, after parsing
//! and authorisation and before the ledger: it decides each event's destinations, appends (and
//! fsyncs) the remote ones to their targets' outboxes, and hands back only the events that go to
//! the local ledger. So an event is durable — in the ledger or in every outbox it goes to —
//! before the request is answered.
//!
//! **Implicit default:** without routes and without default targets (`defaultTargets` never
//! set), every event goes to `local`, exactly as without routing.

pub mod api;
pub mod decide;
pub mod model;
pub mod outbox;
pub mod send;
pub mod store;
pub mod syslog;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde_json::{Value, json};

use crate::alerts::outbox::RetryPolicy;
use crate::alerts::store::StoreError;
use crate::audit::{AuditRecord, Initiator};
use crate::core::{Core, ItemOutcome, Pending};
use crate::error::{ApiError, ErrorDetail};
use decide::{Table, location_of};
use model::{Limits, Target, TargetKind};
use outbox::Outbox;
use store::RoutingStore;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabel {
    /// A target id (never an account or event content).
    pub target: String,
}

/// Routing's Prometheus metrics.
#[derive(Debug, Clone, Default)]
pub struct RoutingMetrics {
    pub backlog: Family<TargetLabel, Gauge>,
    pub lag_seconds: Family<TargetLabel, Gauge<f64, AtomicU64>>,
    pub delivered: Family<TargetLabel, Counter>,
    pub failures: Family<TargetLabel, Counter>,
    pub rejected: Family<TargetLabel, Counter>,
    pub backlog_full: Family<TargetLabel, Gauge>,
    pub dropped: Counter,
    pub decide_seconds: Counter<f64, AtomicU64>,
}

impl RoutingMetrics {
    pub fn register(registry: &mut prometheus_client::registry::Registry) -> RoutingMetrics {
        let m = RoutingMetrics::default();
        registry.register(
            "route_backlog_events",
            "Events in a target's outbox, not yet delivered",
            m.backlog.clone(),
        );
        registry.register(
            "route_lag_seconds",
            "Age of the oldest undelivered event of a target",
            m.lag_seconds.clone(),
        );
        registry.register(
            "route_delivered_events",
            "Events a target acknowledged",
            m.delivered.clone(),
        );
        registry.register(
            "route_failures",
            "Failed delivery attempts (each retried with backoff)",
            m.failures.clone(),
        );
        registry.register(
            "route_rejected_events",
            "Events a receiving Trailkeep refused for good (see the server log)",
            m.rejected.clone(),
        );
        registry.register(
            "route_backlog_full",
            "1 while a target's outbox is at its maximum backlog (ingest of events routed to it answers 503)",
            m.backlog_full.clone(),
        );
        registry.register(
            "route_dropped_events",
            "Events no route handled and no default target took (also reported as trailkeep.event.drop self-audit events)",
            m.dropped.clone(),
        );
        registry.register(
            "route_decide_seconds",
            "Time spent deciding where events go",
            m.decide_seconds.clone(),
        );
        m
    }

    fn label(id: &str) -> TargetLabel {
        TargetLabel { target: id.into() }
    }
}

/// Server options of routing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingOptions {
    /// This instance's location (`--location`).
    pub location: String,
    pub limits: Limits,
    /// Most undelivered events per target.
    pub max_backlog: u64,
    pub retry: RetryPolicy,
    /// Events per delivery batch.
    pub batch_events: usize,
    /// How often dropped events are reported as self-audit events.
    pub report_interval: Duration,
}

impl Default for RoutingOptions {
    fn default() -> Self {
        RoutingOptions {
            location: "global".into(),
            limits: Limits::default(),
            max_backlog: 1_000_000,
            retry: RetryPolicy {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(60),
                give_up_after: Duration::MAX,
            },
            batch_events: 500,
            report_interval: Duration::from_secs(60),
        }
    }
}

/// One remote target's outbox and worker.
#[derive(Debug)]
pub struct Worker {
    pub target: RwLock<Target>,
    pub outbox: Outbox,
    dir: PathBuf,
    wake: tokio::sync::Notify,
    /// Wakes a worker waiting out a backoff (the target was changed).
    changed: tokio::sync::Notify,
    stopped: AtomicBool,
    pub failures: AtomicU64,
    pub delivered: AtomicU64,
    pub last_error: Mutex<Option<String>>,
    /// Unix ns of the oldest undelivered event, 0 when none.
    pub oldest: AtomicU64,
}

/// The routing side of a server.
#[derive(Debug)]
pub struct Routing {
    pub options: RoutingOptions,
    pub store: RoutingStore,
    dir: PathBuf,
    table: RwLock<Arc<Table>>,
    workers: Mutex<HashMap<String, Arc<Worker>>>,
    pub metrics: RoutingMetrics,
    /// Dropped events not yet reported: account → location → count.
    dropped: Mutex<BTreeMap<String, BTreeMap<String, u64>>>,
    http: reqwest::Client,
    core: Weak<Core>,
}

fn now_nanos() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos()).unwrap_or(i64::MAX)
}

impl Routing {
    /// Opens `<data-dir>/routing`, starts a worker per remote target and the dropped-event
    /// reporter (on the current tokio runtime), and attaches itself to `core`.
    pub fn start(
        core: &Arc<Core>,
        data_dir: &Path,
        options: RoutingOptions,
    ) -> Result<Arc<Routing>, StoreError> {
        let dir = data_dir.join("routing");
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
            path: dir.clone(),
            source,
        })?;
        let store = RoutingStore::open(&dir)?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("trailkeep/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| StoreError::Ledger(e.to_string()))?;
        let routing = Arc::new(Routing {
            options,
            store,
            dir,
            table: RwLock::new(Arc::new(Table::default())),
            workers: Mutex::new(HashMap::new()),
            metrics: core.metrics.routing.clone(),
            dropped: Mutex::new(BTreeMap::new()),
            http,
            core: Arc::downgrade(core),
        });
        routing.rebuild();
        for target in routing.store.read(|c| c.targets.clone()) {
            if !target.kind.is_local() {
                routing.start_worker(target)?;
            }
        }
        tokio::spawn(report_dropped(Arc::downgrade(&routing)));
        let _ = core.routing.set(routing.clone());
        Ok(routing)
    }

    /// Recompiles the routing table from the stored configuration.
    pub fn rebuild(&self) {
        let table = self
            .store
            .read(|c| Table::compile(&c.all_targets(), &c.routes, &c.settings));
        *self.table.write().expect("table lock") = Arc::new(table);
    }

    pub fn table(&self) -> Arc<Table> {
        self.table.read().expect("table lock").clone()
    }

    fn start_worker(self: &Arc<Self>, target: Target) -> Result<Arc<Worker>, StoreError> {
        let dir = self.dir.join("outbox").join(&target.id);
        let outbox = Outbox::open(&dir).map_err(|source| StoreError::Io {
            path: dir.clone(),
            source,
        })?;
        let worker = Arc::new(Worker {
            target: RwLock::new(target.clone()),
            outbox,
            dir,
            wake: tokio::sync::Notify::new(),
            changed: tokio::sync::Notify::new(),
            stopped: AtomicBool::new(false),
            failures: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            last_error: Mutex::new(None),
            oldest: AtomicU64::new(0),
        });
        self.metrics
            .backlog
            .get_or_create(&RoutingMetrics::label(&target.id))
            .set(worker.outbox.backlog() as i64);
        self.workers
            .lock()
            .expect("workers lock")
            .insert(target.id.clone(), worker.clone());
        tokio::spawn(send::run(Arc::downgrade(self), worker.clone()));
        Ok(worker)
    }

    pub fn worker(&self, id: &str) -> Option<Arc<Worker>> {
        self.workers.lock().expect("workers lock").get(id).cloned()
    }

    /// A target was created (start its worker) or changed (its worker uses the new settings).
    pub fn target_changed(self: &Arc<Self>, target: &Target) -> Result<(), StoreError> {
        if target.kind.is_local() {
            return Ok(());
        }
        match self.worker(&target.id) {
            Some(w) => {
                *w.target.write().expect("target lock") = target.clone();
                w.changed.notify_one();
            }
            None => {
                self.start_worker(target.clone())?;
            }
        }
        Ok(())
    }

    /// A target was deleted: its worker stops and its outbox is removed. Returns the events that
    /// were still undelivered (the caller records them in the self-audit event).
    pub fn target_removed(&self, id: &str) -> u64 {
        let Some(w) = self.workers.lock().expect("workers lock").remove(id) else {
            return 0;
        };
        w.stopped.store(true, Ordering::SeqCst);
        w.wake.notify_one();
        w.changed.notify_one();
        let backlog = w.outbox.backlog();
        if let Err(e) = std::fs::remove_dir_all(&w.dir) {
            tracing::warn!(dir = %w.dir.display(), error = %e, "removing a deleted target's outbox failed");
        }
        let label = RoutingMetrics::label(id);
        self.metrics.backlog.remove(&label);
        self.metrics.lag_seconds.remove(&label);
        self.metrics.backlog_full.remove(&label);
        backlog
    }

    /// The ingest hook (see the module docs): decides where each event goes, queues (durably)
    /// the ones for remote targets, answers the ones that go nowhere or only elsewhere, and
    /// returns those for the local ledger. `forwarded`: the batch came from another Trailkeep
    /// instance's `trailkeep` target — it is stored here and never forwarded to another
    /// Trailkeep (no loops), though webhook and syslog targets still get it.
    pub async fn split(
        &self,
        to_write: Vec<Pending>,
        results: &mut [Option<ItemOutcome>],
        forwarded: bool,
    ) -> Result<Vec<Pending>, ApiError> {
        let table = self.table();
        // Data-event settings matter only when some account does not collect them.
        let data_events = self.store.read(|c| {
            let d = &c.settings.data_events;
            if d.collect && d.accounts.values().all(|b| *b) {
                None
            } else {
                Some(d.clone())
            }
        });
        if table.is_trivial() && data_events.is_none() {
            return Ok(to_write);
        }
        let started = std::time::Instant::now();
        let ids = table.remote_ids();
        let workers: Vec<Option<Arc<Worker>>> = ids.iter().map(|id| self.worker(id)).collect();
        let no_forward: u64 = workers
            .iter()
            .enumerate()
            .filter(|(_, w)| {
                w.as_ref().is_some_and(|w| {
                    matches!(
                        w.target.read().expect("target lock").kind,
                        TargetKind::Trailkeep { .. }
                    )
                })
            })
            .fold(0, |m, (i, _)| m | (1 << i));
        let mut keep = Vec::with_capacity(to_write.len());
        let mut queued: Vec<Vec<Vec<u8>>> = vec![Vec::new(); ids.len()];
        let queued_at = now_nanos();
        let mut dropped: Vec<(String, String)> = Vec::new();
        for pending in to_write {
            let (slot, account, id, bytes, event) = &pending;
            if let Some(d) = &data_events
                && event.get("dataEvent").and_then(Value::as_bool) == Some(true)
                && !d.collects(account)
            {
                results[*slot] = Some(ItemOutcome::Rejected {
                    errors: vec![ErrorDetail {
                        path: "dataEvent".into(),
                        reason: format!(
                            "data events of account {account:?} are not collected (settings: dataEvents)"
                        ),
                    }],
                });
                if let Some(core) = self.core.upgrade() {
                    core.metrics
                        .rejected_events
                        .get_or_create(&crate::metrics::ReasonLabel {
                            reason: "data_event_not_collected".into(),
                        })
                        .inc();
                }
                continue;
            }
            let location = location_of(event.get("logSourceCRN").and_then(Value::as_str));
            let mut d = table.decide(location);
            if forwarded {
                d.local = true;
                d.remote &= !no_forward;
            }
            if d.is_dropped() {
                dropped.push((account.clone(), location.to_string()));
                results[*slot] = Some(ItemOutcome::Dropped {
                    account: account.clone(),
                    id: id.clone(),
                    reason: format!(
                        "no route handles location {location:?} and no default target is set; the event was not stored"
                    ),
                });
                continue;
            }
            let mut targets = Vec::new();
            if d.remote != 0 {
                let mut payload = Vec::with_capacity(bytes.len() + account.len() + 48);
                payload.extend_from_slice(b"{\"account\":");
                serde_json::to_writer(&mut payload, account).expect("a string serialises");
                payload
                    .extend_from_slice(format!(",\"queuedAt\":{queued_at},\"event\":").as_bytes());
                payload.extend_from_slice(bytes);
                payload.push(b'}');
                for (i, q) in queued.iter_mut().enumerate() {
                    if d.remote & (1 << i) != 0 {
                        q.push(payload.clone());
                        targets.push(ids[i].clone());
                    }
                }
            }
            if d.local {
                keep.push(pending);
            } else {
                results[*slot] = Some(ItemOutcome::Routed {
                    account: account.clone(),
                    id: id.clone(),
                    targets,
                });
            }
        }
        self.metrics
            .decide_seconds
            .inc_by(started.elapsed().as_secs_f64());
        if !dropped.is_empty() {
            self.metrics.dropped.inc_by(dropped.len() as u64);
            let mut map = self.dropped.lock().expect("dropped lock");
            for (account, location) in dropped {
                *map.entry(account).or_default().entry(location).or_default() += 1;
            }
        }
        // Room first, in every outbox, so a full one refuses the request before anything is
        // queued anywhere.
        let mut appends = Vec::new();
        for (i, payloads) in queued.into_iter().enumerate() {
            if payloads.is_empty() {
                continue;
            }
            let Some(worker) = workers[i].clone() else {
                return Err(ApiError::unavailable(format!(
                    "target {} has no outbox; retry",
                    ids[i]
                )));
            };
            let backlog = worker.outbox.backlog();
            if backlog + payloads.len() as u64 > self.options.max_backlog {
                self.metrics
                    .backlog_full
                    .get_or_create(&RoutingMetrics::label(&ids[i]))
                    .set(1);
                tracing::error!(
                    target_id = %ids[i],
                    backlog,
                    max = self.options.max_backlog,
                    "ALARM: a routing target's outbox is full; ingest of events routed to it is refused"
                );
                let mut e = ApiError::unavailable(format!(
                    "the outbox of routing target {} is full ({backlog} undelivered events, at most {}); nothing from this request was stored — retry later",
                    ids[i], self.options.max_backlog
                ));
                e.code = "routing_backlog_full";
                e.retry_after = Some(5);
                return Err(e);
            }
            appends.push((worker, payloads));
        }
        if !appends.is_empty() {
            let done = tokio::task::spawn_blocking(move || {
                for (worker, payloads) in &appends {
                    worker.outbox.append(payloads).map_err(|e| {
                        let id = worker.target.read().expect("target lock").id.clone();
                        (id, e)
                    })?;
                    worker.wake.notify_one();
                }
                Ok::<_, (String, std::io::Error)>(appends)
            })
            .await
            .map_err(ApiError::internal)?;
            match done {
                Ok(appends) => {
                    for (worker, _) in appends {
                        let id = worker.target.read().expect("target lock").id.clone();
                        let _ = worker.oldest.compare_exchange(
                            0,
                            queued_at as u64,
                            Ordering::SeqCst,
                            Ordering::SeqCst,
                        );
                        self.metrics
                            .backlog
                            .get_or_create(&RoutingMetrics::label(&id))
                            .set(worker.outbox.backlog() as i64);
                    }
                }
                Err((id, e)) => {
                    tracing::error!(target_id = %id, error = %e, "appending to a routing outbox failed");
                    return Err(if e.raw_os_error() == Some(28) {
                        ApiError::new(
                            axum::http::StatusCode::INSUFFICIENT_STORAGE,
                            "insufficient_storage",
                            "the disk is full; nothing from this request was stored",
                        )
                    } else {
                        ApiError::unavailable(
                            "a routing outbox could not store the events; nothing from this request was stored",
                        )
                    });
                }
            }
        }
        Ok(keep)
    }

    /// The status of a remote target (backlog, lag, failures, last error).
    pub fn status(&self, id: &str) -> Value {
        let Some(w) = self.worker(id) else {
            return json!(null);
        };
        let oldest = w.oldest.load(Ordering::SeqCst) as i64;
        let lag = if oldest == 0 {
            0.0
        } else {
            (now_nanos() - oldest).max(0) as f64 / 1e9
        };
        let backlog = w.outbox.backlog();
        json!({
            "backlog": backlog,
            "backlogFull": backlog >= self.options.max_backlog,
            "lagSeconds": lag,
            "delivered": w.delivered.load(Ordering::SeqCst),
            "failures": w.failures.load(Ordering::SeqCst),
            "lastError": *w.last_error.lock().expect("error lock"),
        })
    }
}

/// Every `report_interval`, records the events dropped since the last report as one
/// `trailkeep.event.drop` self-audit event per account (in that account's log).
async fn report_dropped(routing: Weak<Routing>) {
    loop {
        let Some(interval) = routing.upgrade().map(|r| r.options.report_interval) else {
            return;
        };
        tokio::time::sleep(interval).await;
        let Some(r) = routing.upgrade() else { return };
        let Some(core) = r.core.upgrade() else { return };
        let taken = std::mem::take(&mut *r.dropped.lock().expect("dropped lock"));
        if taken.is_empty() {
            continue;
        }
        let location = r.options.location.clone();
        let records: Vec<AuditRecord> = taken
            .into_iter()
            .map(|(account, locations)| {
                let total: u64 = locations.values().sum();
                tracing::warn!(%account, dropped = total, "events dropped: no route and no default target");
                AuditRecord::new(
                    &account,
                    "event.drop",
                    Initiator::Key {
                        id: "trailkeep-routing".into(),
                        name: "event routing".into(),
                    },
                    (
                        format!("crn:v1:trailkeep:public:trailkeep:{location}:a/{account}::routing:"),
                        format!("event routing of instance {location}"),
                        "trailkeep/routing".into(),
                    ),
                )
                .failed(422, "no route handled these events and no default target is set")
                .request(json!({
                    "dropped": total,
                    "locations": locations,
                    "instanceLocation": location,
                }))
            })
            .collect();
        drop(r);
        if let Err(e) = core.record(records.clone()).await {
            tracing::error!(error = %e.message, "recording dropped events failed; will retry");
            if let Some(r) = routing.upgrade() {
                let mut map = r.dropped.lock().expect("dropped lock");
                for rec in records {
                    if let Some(locs) = rec.request_data["locations"].as_object() {
                        for (l, n) in locs {
                            *map.entry(rec.account.clone())
                                .or_default()
                                .entry(l.clone())
                                .or_default() += n.as_u64().unwrap_or(0);
                        }
                    }
                }
            }
        }
    }
}

/// The routes of `/v1/targets`, `/v1/routes` and `/v1/settings`.
pub fn routes(state: crate::app::AppState) -> axum::Router {
    api::routes(state)
}
