//! Views, alert rules, their evaluation against committed records, and notifications.
//!
//! * [`model`] — the stored objects and their validation; [`store`] — how they persist.
//! * [`views`] — `/v1/views`, and `view=<id>` on reads; [`rules`] — `/v1/alerts`.
//! * [`rule_state`] — the pure state machine of one rule (presence, absence, re-notify).
//! * [`evaluator`] — the thread that matches committed records against rules.
//! * [`outbox`] — persisted deliveries and the alert history; [`delivery`] — the sending task;
//!   [`notify`] — the channel formats (webhook with signature, Slack, PagerDuty, email).
//!
//! **Architecture Invariant:** rule state is derived from the ledger. The evaluator sees each
//! committed record once, in log order per account, and persists how far it got together with the
//! state it derived; after a restart it replays the ledger from there.

pub mod delivery;
pub mod evaluator;
pub mod model;
pub mod network;
pub mod notify;
pub mod outbox;
pub mod rule_state;
pub mod rules;
pub mod store;
pub mod views;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;

use crate::app::AppState;
use crate::auth::{Principal, Role};
use crate::core::Core;
use crate::error::ApiError;
use evaluator::{Evaluator, Msg, Record};
use notify::{Sender, SmtpSettings};
use outbox::{History, Outbox, RetryPolicy};
use store::{ConfigStore, StoreError};

/// The alerting side's Prometheus metrics (no account names, no event content).
#[derive(Debug, Clone, Default)]
pub struct AlertMetrics {
    /// Committed records the evaluator matched against rules.
    pub records: prometheus_client::metrics::counter::Counter,
    /// Time spent matching records against rules.
    pub match_seconds: prometheus_client::metrics::counter::Counter<f64, AtomicU64>,
    /// Records handed to the evaluator and not yet evaluated.
    pub lag: prometheus_client::metrics::gauge::Gauge,
    /// Notifications and deliveries, by outcome (`fired`, `muted`, `delivered`, `retrying`,
    /// `failed`).
    pub notifications: prometheus_client::metrics::family::Family<
        crate::metrics::ResultLabel,
        prometheus_client::metrics::counter::Counter,
    >,
}

impl AlertMetrics {
    pub fn register(registry: &mut prometheus_client::registry::Registry) -> AlertMetrics {
        let m = AlertMetrics::default();
        registry.register(
            "alert_records",
            "Committed records matched against alert rules",
            m.records.clone(),
        );
        registry.register(
            "alert_match_seconds",
            "Time spent matching committed records against alert rules",
            m.match_seconds.clone(),
        );
        registry.register(
            "alert_evaluator_lag_records",
            "Committed records waiting for the alert evaluator",
            m.lag.clone(),
        );
        registry.register(
            "alert_notifications",
            "Alert notifications fired and deliveries made, by outcome",
            m.notifications.clone(),
        );
        m
    }

    pub fn count(&self, outcome: &'static str) {
        self.notifications
            .get_or_create(&crate::metrics::ResultLabel { result: outcome })
            .inc();
    }
}

/// Server options of the alerting side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertOptions {
    pub smtp: SmtpSettings,
    /// Where webhook, Slack and PagerDuty notifications may go.
    pub network: notify::NetworkPolicy,
    pub retry: RetryPolicy,
}

/// The alerting side of a server: views, rules, evaluator, outbox.
#[derive(Debug)]
pub struct Alerts {
    pub config: ConfigStore,
    pub dir: PathBuf,
    pub outbox: Outbox,
    pub history: History,
    pub sender: Sender,
    pub retry: RetryPolicy,
    evaluator: Mutex<Option<std::sync::mpsc::Sender<Msg>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    pub metrics: AlertMetrics,
    /// Records in the evaluator's channel.
    queued: Arc<AtomicU64>,
    stop: Arc<tokio::sync::Notify>,
}

impl Alerts {
    /// Opens the management data under `<data-dir>/alerts`, replays the ledger past the
    /// evaluator's saved position, starts the evaluator thread and the delivery task (on the
    /// current tokio runtime), and attaches itself to `core`, which from then on hands it every
    /// committed record.
    pub fn start(
        core: &Arc<Core>,
        data_dir: &std::path::Path,
        options: &AlertOptions,
    ) -> Result<Arc<Alerts>, StoreError> {
        let dir = data_dir.join("alerts");
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
            path: dir.clone(),
            source,
        })?;
        let alerts = Arc::new(Alerts {
            config: ConfigStore::open(&dir)?,
            outbox: Outbox::open(&dir)?,
            history: History::open(&dir)?,
            sender: Sender::new(options.smtp.clone(), options.network.clone()),
            retry: options.retry,
            dir,
            evaluator: Mutex::new(None),
            thread: Mutex::new(None),
            metrics: core.metrics.alerts.clone(),
            queued: Arc::new(AtomicU64::new(0)),
            stop: Arc::new(tokio::sync::Notify::new()),
        });
        let mut evaluator = Evaluator::open(&alerts, core)?;
        evaluator
            .catch_up()
            .map_err(|e| StoreError::Ledger(e.to_string()))?;
        let (tx, rx) = std::sync::mpsc::channel();
        let (metrics, queued) = (alerts.metrics.clone(), alerts.queued.clone());
        let thread = std::thread::Builder::new()
            .name("trailkeep-alerts".into())
            .spawn(move || evaluator.run(rx, metrics, queued))
            .map_err(|source| StoreError::Io {
                path: alerts.dir.clone(),
                source,
            })?;
        *alerts.evaluator.lock().expect("alerts lock") = Some(tx);
        *alerts.thread.lock().expect("alerts lock") = Some(thread);
        tokio::spawn(delivery::run(Arc::downgrade(&alerts), alerts.stop.clone()));
        let _ = core.alerts.set(alerts.clone());
        Ok(alerts)
    }

    /// Hands committed records to the evaluator (called by the ingest pipeline).
    ///
    /// At most [`evaluator::MAX_QUEUED`] records wait in memory: beyond that a batch is not
    /// queued, and the evaluator reads it from the ledger once it has caught up. A lagging
    /// evaluator therefore costs no memory and never blocks ingest.
    pub fn observe(&self, records: Vec<Record>) {
        let n = records.len() as u64;
        if n == 0 {
            return;
        }
        let queued = self.queued.fetch_add(n, Ordering::SeqCst);
        if queued + n > evaluator::MAX_QUEUED {
            self.queued.fetch_sub(n, Ordering::SeqCst);
            return;
        }
        self.metrics.lag.inc_by(n as i64);
        if let Some(tx) = self.evaluator.lock().expect("alerts lock").as_ref() {
            let _ = tx.send(Msg::Records(records));
        }
    }

    /// Stops the evaluator (writing its state) and the delivery task; pending deliveries stay in
    /// the outbox for the next start.
    pub fn close(&self) {
        self.evaluator.lock().expect("alerts lock").take();
        if let Some(t) = self.thread.lock().expect("alerts lock").take() {
            let _ = t.join();
        }
        self.stop.notify_waiters();
        self.stop.notify_one();
    }
}

/// The routes of views and alerts.
pub fn routes(state: AppState) -> Router {
    Router::new()
        .merge(views::routes(state.clone()))
        .merge(rules::routes(state))
}

/// The alerting side of the server (503 when this server runs without it).
pub fn alerts_of(state: &AppState) -> Result<Arc<Alerts>, ApiError> {
    state
        .core
        .alerts
        .get()
        .cloned()
        .ok_or_else(|| ApiError::unavailable("alerting is not running on this server"))
}

/// Largest management request body.
pub const MAX_BODY: usize = 256 * 1024;

/// A management request body: one JSON object of at most [`MAX_BODY`] bytes, or a 400/413 in
/// the API's error shape.
pub fn json_body(bytes: &[u8]) -> Result<serde_json::Value, ApiError> {
    if bytes.len() > MAX_BODY {
        return Err(ApiError::payload_too_large(format!(
            "the body is {} bytes; the limit is {MAX_BODY}",
            bytes.len()
        )));
    }
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(v @ serde_json::Value::Object(_)) => Ok(v),
        Ok(_) => Err(ApiError::bad_request("the body must be a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!("the body is not JSON: {e}"))),
    }
}

/// May the caller read objects (views, rules, history) of `account`?
pub fn can_see(caller: &Principal, account: &str) -> bool {
    caller.role.can_read() && caller.accounts.allows(account)
}

/// May the caller create and change views and rules of `account`?
pub fn can_manage(caller: &Principal, account: &str) -> bool {
    matches!(caller.role, Role::Manager | Role::Admin) && caller.accounts.allows(account)
}
