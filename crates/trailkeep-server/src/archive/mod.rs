//! Archive to S3-compatible object storage (issue #8, parts 4 and 5), and restore from it.
//!
//! * [`s3`] — a small client of one bucket (reusable by other S3 targets).
//! * [`object`] — the key layout, Parquet objects of stored events and their manifests, and an
//!   idempotent put.
//! * [`cursor`] — the persisted, restartable per-account cursor.
//! * [`Archive`] (here) — the scheduler: passes over records covered by a signed checkpoint, in
//!   log order per account, every `archive_interval` and on demand.
//! * [`http`] — `/v1/archive` (admin only); [`restore`] — `trailkeep import --from-archive`.
//!
//! **Architecture Invariant:** a record counts as archived (`archived_count`) only after the
//! object holding it and that object's manifest were confirmed written, and every archived record
//! is in exactly one object. A failing bucket never blocks ingest: passes run on their own task,
//! read the ledger, and back off.

pub mod cursor;
pub mod http;
pub mod object;
pub mod restore;
pub mod s3;

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;
use time::OffsetDateTime;

use crate::core::Core;
use cursor::{AccountCursor, ArchiveState, Pass};
use object::{ArchiveRecord, PutOutcome};
use s3::{Bucket, S3Error, S3Target};

/// Server options of the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveOptions {
    pub target: S3Target,
    /// Time between two passes of the background task.
    pub interval: Duration,
    /// Most records, and most event bytes, in one pass of one account.
    pub max_pass_records: u64,
    pub max_pass_bytes: u64,
}

/// The archive's Prometheus metrics.
#[derive(Debug, Clone, Default)]
pub struct ArchiveMetrics {
    /// Records covered by a signed checkpoint and not archived yet (all accounts).
    pub lag: Gauge<i64, std::sync::atomic::AtomicI64>,
    /// Runs that failed (the bucket unreachable, refusing, …).
    pub failures: Counter<u64, AtomicU64>,
    /// Records archived.
    pub records: Counter<u64, AtomicU64>,
    /// Objects (Parquet, manifests, checkpoints) by outcome: `written`, `already_there`,
    /// `replaced`.
    pub objects: Family<crate::metrics::ResultLabel, Counter>,
}

impl ArchiveMetrics {
    pub fn register(registry: &mut prometheus_client::registry::Registry) -> ArchiveMetrics {
        let m = ArchiveMetrics::default();
        registry.register(
            "archive_lag_records",
            "Records covered by a signed checkpoint and not yet archived",
            m.lag.clone(),
        );
        registry.register(
            "archive_failures",
            "Archive runs that failed",
            m.failures.clone(),
        );
        registry.register(
            "archive_records",
            "Records archived to object storage",
            m.records.clone(),
        );
        registry.register(
            "archive_objects",
            "Archive objects, by outcome (written, already_there, replaced)",
            m.objects.clone(),
        );
        m
    }

    fn count(&self, outcome: PutOutcome) {
        let result = match outcome {
            PutOutcome::Written => "written",
            PutOutcome::AlreadyThere => "already_there",
            PutOutcome::Replaced => "replaced",
        };
        self.objects
            .get_or_create(&crate::metrics::ResultLabel { result })
            .inc();
    }
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{0}")]
    Bucket(#[from] S3Error),
    #[error("archive cursor: {0}")]
    Cursor(#[from] cursor::CursorError),
    #[error("reading the ledger: {0}")]
    Ledger(#[from] trailkeep_ledger::Error),
    #[error("building an archive object: {0}")]
    Build(#[from] object::BuildError),
    #[error("{0}")]
    Internal(String),
}

/// What one run did.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunReport {
    pub passes: u64,
    pub records: u64,
    pub objects_written: u64,
    pub objects_already_there: u64,
    pub objects_replaced: u64,
}

impl RunReport {
    fn count(&mut self, outcome: PutOutcome) {
        match outcome {
            PutOutcome::Written => self.objects_written += 1,
            PutOutcome::AlreadyThere => self.objects_already_there += 1,
            PutOutcome::Replaced => self.objects_replaced += 1,
        }
    }
}

#[derive(Debug, Default)]
struct Health {
    last_success: Option<OffsetDateTime>,
    last_error: Option<(OffsetDateTime, String)>,
    consecutive_failures: u64,
}

/// The archive of a running server.
#[derive(Debug)]
pub struct Archive {
    pub options: ArchiveOptions,
    bucket: Bucket,
    core: Arc<Core>,
    state_path: PathBuf,
    state: Mutex<ArchiveState>,
    /// One run at a time (the background task and `POST /v1/archive/run`).
    running: tokio::sync::Mutex<()>,
    health: Mutex<Health>,
    pub metrics: ArchiveMetrics,
    stop: tokio::sync::Notify,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The tree size of a signed checkpoint note (its second line).
fn note_size(note: &str) -> Option<u64> {
    note.split('\n').nth(1)?.parse().ok()
}

impl Archive {
    /// Opens the cursor, attaches itself to `core` and starts the background task on the current
    /// tokio runtime.
    pub fn start(
        core: &Arc<Core>,
        data_dir: &std::path::Path,
        options: ArchiveOptions,
        metrics: ArchiveMetrics,
    ) -> Result<Arc<Archive>, ArchiveError> {
        let bucket = Bucket::new(&options.target)?;
        let state_path = cursor::state_path(data_dir);
        let state = cursor::load(&state_path, bucket.describe())?;
        let archive = Arc::new(Archive {
            options,
            bucket,
            core: core.clone(),
            state_path,
            state: Mutex::new(state),
            running: tokio::sync::Mutex::new(()),
            health: Mutex::new(Health::default()),
            metrics,
            stop: tokio::sync::Notify::new(),
        });
        let _ = core.archive.set(archive.clone());
        archive.update_lag();
        let task = archive.clone();
        tokio::spawn(async move { task.run_forever().await });
        tracing::info!(target = archive.bucket.describe(), "archive started");
        Ok(archive)
    }

    /// Stops the background task (a run in progress finishes its current put).
    pub fn stop(&self) {
        self.stop.notify_one();
    }

    /// The bucket archived to.
    pub fn bucket(&self) -> &Bucket {
        &self.bucket
    }

    /// Records `[0, n)` of `account` are archived: retention may remove only those.
    pub fn archived_count(&self, account: &str) -> u64 {
        lock(&self.state)
            .accounts
            .get(account)
            .map_or(0, |c| c.archived)
    }

    /// Recomputes the lag gauge: checkpointed records not yet archived.
    pub fn update_lag(&self) {
        let state = lock(&self.state);
        let mut lag = 0u64;
        for account in self.core.ledger.accounts() {
            let signed = self
                .core
                .ledger
                .latest_checkpoint(&account)
                .and_then(|n| note_size(&n))
                .unwrap_or(0);
            let archived = state.accounts.get(&account).map_or(0, |c| c.archived);
            lag += signed.saturating_sub(archived);
        }
        self.metrics.lag.set(i64::try_from(lag).unwrap_or(i64::MAX));
    }

    async fn run_forever(self: Arc<Self>) {
        let mut backoff = Duration::ZERO;
        loop {
            let wait = if backoff.is_zero() {
                self.options.interval
            } else {
                backoff
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.stop.notified() => return,
            }
            match self.run().await {
                Ok(_) => backoff = Duration::ZERO,
                Err(_) => {
                    // Exponential backoff from 1 s, at most the interval (and 5 minutes).
                    let cap = self.options.interval.min(Duration::from_secs(300));
                    backoff = (backoff * 2)
                        .clamp(Duration::from_secs(1), cap.max(Duration::from_secs(1)));
                }
            }
        }
    }

    /// Archives everything covered by a signed checkpoint now, account by account.
    pub async fn run(&self) -> Result<RunReport, ArchiveError> {
        let _one = self.running.lock().await;
        let result = self.run_locked().await;
        let now = OffsetDateTime::now_utc();
        {
            let mut h = lock(&self.health);
            match &result {
                Ok(_) => {
                    h.last_success = Some(now);
                    h.consecutive_failures = 0;
                }
                Err(e) => {
                    h.last_error = Some((now, e.to_string()));
                    h.consecutive_failures += 1;
                }
            }
        }
        if let Err(e) = &result {
            self.metrics.failures.inc();
            tracing::warn!(error = %e, "archive run failed; it is retried with backoff");
        }
        self.update_lag();
        result
    }

    async fn run_locked(&self) -> Result<RunReport, ArchiveError> {
        let mut report = RunReport::default();
        let key = format!("{}\n", self.core.ledger.verifier_key());
        let outcome =
            object::put_immutable(&self.bucket, object::VERIFIER_KEY, key.into_bytes()).await?;
        self.metrics.count(outcome);
        for account in self.core.ledger.accounts() {
            while let Some(pass) = self.next_pass(&account).await? {
                self.write_pass(&account, &pass, &mut report).await?;
            }
        }
        Ok(report)
    }

    /// The pending pass of `account`, or a new one (saved as pending before it is returned), or
    /// `None` when everything checkpointed is archived.
    async fn next_pass(&self, account: &str) -> Result<Option<Pass>, ArchiveError> {
        let cursor = lock(&self.state)
            .accounts
            .get(account)
            .cloned()
            .unwrap_or_default();
        if let Some(pass) = cursor.pending {
            return Ok(Some(pass));
        }
        let Some(note) = self.core.ledger.latest_checkpoint(account) else {
            return Ok(None);
        };
        let Some(size) = note_size(&note) else {
            return Err(ArchiveError::Internal(format!(
                "the checkpoint of {account} has no tree size"
            )));
        };
        if size <= cursor.archived {
            return Ok(None);
        }
        // The pass ends at the checkpoint, or earlier to bound its size.
        let from = cursor.archived;
        let ledger = self.core.ledger.clone();
        let (max_records, max_bytes) = (self.options.max_pass_records, self.options.max_pass_bytes);
        let acct = account.to_string();
        let to = tokio::task::spawn_blocking(move || {
            let mut bytes = 0u64;
            let mut to = from;
            for record in ledger.iter_account(&acct, from) {
                let record = record?;
                if record.index >= size
                    || to - from >= max_records
                    || (bytes >= max_bytes && to > from)
                {
                    break;
                }
                bytes += record.bytes.len() as u64;
                to = record.index + 1;
            }
            Ok::<u64, trailkeep_ledger::Error>(to)
        })
        .await
        .map_err(|e| ArchiveError::Internal(e.to_string()))??;
        if to <= from {
            return Ok(None);
        }
        let pass = Pass {
            from,
            to,
            checkpoint_size: size,
            checkpoint_note: note,
        };
        self.update_cursor(account, |c| c.pending = Some(pass.clone()))?;
        Ok(Some(pass))
    }

    fn update_cursor(
        &self,
        account: &str,
        change: impl FnOnce(&mut AccountCursor),
    ) -> Result<(), ArchiveError> {
        let mut state = lock(&self.state);
        let mut next = state.clone();
        change(next.accounts.entry(account.to_string()).or_default());
        cursor::save(&self.state_path, &next)?;
        *state = next;
        Ok(())
    }

    async fn write_pass(
        &self,
        account: &str,
        pass: &Pass,
        report: &mut RunReport,
    ) -> Result<(), ArchiveError> {
        // The checkpoint first: a manifest never names a note that is not in the bucket.
        let outcome = object::put_immutable(
            &self.bucket,
            &object::checkpoint_key(account, pass.checkpoint_size),
            pass.checkpoint_note.clone().into_bytes(),
        )
        .await?;
        self.metrics.count(outcome);
        let ledger = self.core.ledger.clone();
        let (acct, p) = (account.to_string(), pass.clone());
        let built = tokio::task::spawn_blocking(move || {
            let mut records = Vec::with_capacity((p.to - p.from) as usize);
            for record in ledger
                .iter_account(&acct, p.from)
                .take((p.to - p.from) as usize)
            {
                let r = record?;
                records.push(ArchiveRecord {
                    index: r.index,
                    received_at_unix_nanos: r.received_at_unix_nanos,
                    bytes: r.bytes,
                });
            }
            if records.len() as u64 != p.to - p.from {
                return Err(ArchiveError::Internal(format!(
                    "the ledger of {acct} holds fewer records than the pass {}..{}",
                    p.from, p.to
                )));
            }
            Ok(object::build_pass(
                &acct,
                p.from,
                p.to,
                p.checkpoint_size,
                &records,
            )?)
        })
        .await
        .map_err(|e| ArchiveError::Internal(e.to_string()))??;
        let objects = built.len() as u64;
        for b in built {
            let manifest = b.manifest_bytes();
            // The Parquet object before its manifest: a manifest in the bucket means its object
            // is there too.
            let outcome = object::put_once(&self.bucket, &b.key, b.parquet).await?;
            self.metrics.count(outcome);
            report.count(outcome);
            let outcome = object::put_once(&self.bucket, &b.manifest_key, manifest).await?;
            self.metrics.count(outcome);
        }
        test_fault("exit-after-objects");
        let to = pass.to;
        self.update_cursor(account, |c| {
            c.archived = to;
            c.objects += objects;
            c.pending = None;
        })?;
        self.metrics.records.inc_by(pass.to - pass.from);
        report.passes += 1;
        report.records += pass.to - pass.from;
        tracing::debug!(
            account,
            from = pass.from,
            to = pass.to,
            objects,
            "archived a pass"
        );
        Ok(())
    }

    /// Where the archive stands, for `GET /v1/archive`.
    pub fn status(&self) -> ArchiveStatus {
        let state = lock(&self.state).clone();
        let health = lock(&self.health);
        let t = &self.options.target;
        let mut accounts = Vec::new();
        for account in self.core.ledger.accounts() {
            let signed = self
                .core
                .ledger
                .latest_checkpoint(&account)
                .and_then(|n| note_size(&n))
                .unwrap_or(0);
            let c = state.accounts.get(&account).cloned().unwrap_or_default();
            accounts.push(AccountStatus {
                archived_through_index: c.archived.checked_sub(1),
                archived_count: c.archived,
                checkpoint_size: signed,
                lag: signed.saturating_sub(c.archived),
                objects: c.objects,
                pending: c.pending.map(|p| PendingStatus {
                    from: p.from,
                    to: p.to,
                    checkpoint_size: p.checkpoint_size,
                }),
                account,
            });
        }
        ArchiveStatus {
            enabled: true,
            target: Some(TargetStatus {
                endpoint: t.endpoint.clone(),
                bucket: t.bucket.clone(),
                region: t.region.clone(),
                prefix: t.prefix.clone(),
                access_key_id: t.access_key_id.clone(),
            }),
            interval_seconds: Some(self.options.interval.as_secs_f64()),
            last_success: health.last_success.map(crate::core::format_time),
            last_error: health.last_error.as_ref().map(|(_, e)| e.clone()),
            last_error_at: health
                .last_error
                .as_ref()
                .map(|(t, _)| crate::core::format_time(*t)),
            consecutive_failures: health.consecutive_failures,
            accounts,
        }
    }
}

/// A test hook: in debug builds, `TRAILKEEP_TEST_ARCHIVE_FAULT=<point>` aborts the process at
/// that point, to test what a crash there leaves behind (`exit-after-objects`: every object
/// of a pass written, its cursor update not).
fn test_fault(point: &str) {
    if cfg!(debug_assertions)
        && std::env::var("TRAILKEEP_TEST_ARCHIVE_FAULT").is_ok_and(|p| p == point)
    {
        eprintln!("archive test fault {point}: aborting");
        std::process::abort();
    }
}

/// `GET /v1/archive`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveStatus {
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_seconds: Option<f64>,
    pub last_success: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    pub consecutive_failures: u64,
    pub accounts: Vec<AccountStatus>,
}

/// The target as `GET /v1/archive` shows it: never the secret.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetStatus {
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: String,
    pub prefix: String,
    pub access_key_id: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountStatus {
    pub account: String,
    /// Records `[0, archivedCount)` are archived.
    pub archived_count: u64,
    /// The last archived index (`archivedCount - 1`), `null` when nothing is.
    pub archived_through_index: Option<u64>,
    /// Size of the latest signed checkpoint.
    pub checkpoint_size: u64,
    /// Checkpointed records not yet archived.
    pub lag: u64,
    pub objects: u64,
    pub pending: Option<PendingStatus>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingStatus {
    pub from: u64,
    pub to: u64,
    pub checkpoint_size: u64,
}
