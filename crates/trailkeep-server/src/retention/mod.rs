//! Retention (issue #8, docs/retention.md): per-account policies in days, and the task that
//! removes the bodies of expired records from the ledger.
//!
//! * **Policy.** Each account keeps its records for the instance default (`retention_days`, none =
//!   forever) or for its own number of days (`PUT /v1/retention/{account}`). Raising a policy
//!   (keeping longer, or forever) applies at once; lowering it is recorded at once (a self-audit
//!   event in the account's log) and takes effect only after `retention_lowering_delay`, so a
//!   stolen admin key cannot wipe history in one call. A lower default in the configuration is
//!   delayed the same way (recorded in the system account at start). Policies live in
//!   `<data>/retention.json` (written atomically).
//! * **Age.** A record's age is counted from when this server received it (the ledger's receive
//!   time, in the order of the log), not from its `eventTime`, which the sender chose.
//! * **Run.** For each account with a policy: find the records received before `now − days`;
//!   keep those not yet archived (when an archive is configured) and those not yet in a sealed
//!   segment (the active segment is rotated first); append a `trailkeep.retention.apply` record
//!   stating the range, the policy, the cut-off and why to the account's own log; then have the
//!   ledger replace the bodies by tombstones (`Ledger::remove_bodies`, which first signs a
//!   checkpoint covering the statement). Retention records themselves are never removed. The
//!   removed records' documents are deleted from the search index (best effort: searches skip
//!   hits whose body is gone anyway).

pub mod http;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

use crate::audit::{AuditRecord, Initiator};
use crate::core::{Core, ItemOutcome, format_time};
use crate::error::ApiError;

/// The file holding the policies.
pub const FILE_NAME: &str = "retention.json";

/// Retention options from the server configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionOptions {
    /// The instance default in days (`None`: keep forever).
    pub default_days: Option<u32>,
    /// How long a lowered policy waits before it applies.
    pub lowering_delay: Duration,
    /// Time between two background runs.
    pub interval: Duration,
    /// The length of a "day" (86,400 s; tests shorten it).
    pub day: Duration,
}

impl Default for RetentionOptions {
    fn default() -> Self {
        Self {
            default_days: None,
            lowering_delay: Duration::from_secs(7 * 86_400),
            interval: Duration::from_secs(3_600),
            day: Duration::from_secs(86_400),
        }
    }
}

/// Retention metrics.
#[derive(Debug, Clone, Default)]
pub struct RetentionMetrics {
    /// Record bodies removed.
    pub removed: Counter<u64, AtomicU64>,
    /// Runs that failed for at least one account.
    pub failures: Counter<u64, AtomicU64>,
    /// When the last run finished (Unix seconds).
    pub last_run: Gauge<i64, std::sync::atomic::AtomicI64>,
}

impl RetentionMetrics {
    pub fn register(registry: &mut prometheus_client::registry::Registry) -> RetentionMetrics {
        let m = RetentionMetrics::default();
        registry.register(
            "retention_removed_records",
            "Record bodies removed by retention",
            m.removed.clone(),
        );
        registry.register(
            "retention_failures",
            "Retention runs that failed for at least one account",
            m.failures.clone(),
        );
        registry.register(
            "retention_last_run_timestamp_seconds",
            "When the last retention run finished (Unix time)",
            m.last_run.clone(),
        );
        m
    }
}

/// A lowering waiting for its delay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingChange {
    /// The policy it sets (`None`: keep forever — never lower, but kept for a change to the
    /// default while `use_default`).
    pub days: Option<u32>,
    /// For an account: go back to the instance default.
    #[serde(default)]
    pub use_default: bool,
    /// Unix seconds when it applies.
    pub effective_at: i64,
    /// Unix seconds when it was asked for.
    pub requested_at: i64,
    /// Who asked (key id, or `configuration`).
    pub requested_by: String,
}

/// One policy: the days in force and a pending lowering.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Setting {
    /// Days in force (`None`: keep forever).
    pub days: Option<u32>,
    /// A lowering that applies later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingChange>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    version: u32,
    /// The instance default as last applied (from the configuration).
    default: Setting,
    /// Whether `default` was ever set (first start).
    #[serde(default)]
    initialised: bool,
    /// Accounts with their own policy; an account whose pending change goes back to the default
    /// keeps its entry until then.
    accounts: BTreeMap<String, Setting>,
}

/// Whether `new` keeps records for less time than `old`.
pub fn is_lower(new: Option<u32>, old: Option<u32>) -> bool {
    match (new, old) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(n), Some(o)) => n < o,
    }
}

/// What one account's part of a run did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountRun {
    pub account: String,
    pub days: u32,
    /// Records received before this were due.
    pub cutoff: String,
    /// First index removed.
    pub from: u64,
    /// End of the removed range (exclusive).
    pub to: u64,
    /// Index of the retention record stating the removal.
    pub retention_record: Option<u64>,
    /// Record bodies removed (the range less the retention records in it, which are kept).
    pub removed: u64,
    /// Sealed segments rewritten.
    pub segments: u64,
    /// Bytes of event data removed.
    pub bytes: u64,
    /// Due records kept for now, and why (not archived yet, not sealed yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_back: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunReport {
    pub started_at: String,
    pub finished_at: String,
    /// Record bodies removed, over all accounts.
    pub removed: u64,
    /// Accounts where something was due.
    pub accounts: Vec<AccountRun>,
}

/// Retention of a running server.
#[derive(Debug)]
pub struct Retention {
    pub options: RetentionOptions,
    core: Arc<Core>,
    path: PathBuf,
    stored: Mutex<Stored>,
    running: tokio::sync::Mutex<()>,
    last_run: Mutex<Option<RunReport>>,
    pub metrics: RetentionMetrics,
    stop: tokio::sync::Notify,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unix(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

fn from_unix(s: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(s).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn load(path: &Path) -> std::io::Result<Stored> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Stored {
            version: 1,
            ..Stored::default()
        }),
        Err(e) => Err(e),
    }
}

fn save(path: &Path, stored: &Stored) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(stored).map_err(std::io::Error::other)?;
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Applies a pending change whose time has come. Returns whether anything changed.
fn settle(setting: &mut Setting, default_days: Option<u32>, now: i64) -> bool {
    match &setting.pending {
        Some(p) if p.effective_at <= now => {
            setting.days = if p.use_default { default_days } else { p.days };
            setting.pending = None;
            true
        }
        _ => false,
    }
}

fn system_initiator() -> Initiator {
    Initiator::Key {
        id: "trailkeep-retention".into(),
        name: "retention".into(),
    }
}

fn target(account: &str) -> (String, String, String) {
    (
        format!("crn:v1:trailkeep:public:trailkeep::a/{account}::retention:"),
        format!("retention of account {account}"),
        "trailkeep/retention".to_string(),
    )
}

/// The policy of one account, as shown by the API.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountPolicy {
    pub account: String,
    /// Days in force (`null`: kept forever).
    pub days: Option<u32>,
    /// `account` (its own policy) or `default`.
    pub source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingView>,
    /// One past the last record whose body retention removed.
    pub removed_through: u64,
    /// Records in the account's log.
    pub records: u64,
}

/// A pending lowering, as shown by the API.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingView {
    pub days: Option<u32>,
    pub use_default: bool,
    pub effective_at: String,
    pub requested_at: String,
    pub requested_by: String,
}

impl From<&PendingChange> for PendingView {
    fn from(p: &PendingChange) -> Self {
        PendingView {
            days: p.days,
            use_default: p.use_default,
            effective_at: format_time(from_unix(p.effective_at)),
            requested_at: format_time(from_unix(p.requested_at)),
            requested_by: p.requested_by.clone(),
        }
    }
}

/// How an account's policy is to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Keep records this many days (`None`: forever).
    Days(Option<u32>),
    /// Follow the instance default.
    UseDefault,
}

/// What a change did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeOutcome {
    /// `applied` (raising, or equal) or `pending` (lowering, after the delay).
    pub result: &'static str,
    pub previous_days: Option<u32>,
    pub policy: AccountPolicy,
}

impl Retention {
    /// Loads the policies, reconciles the configured default (a lower one is delayed and
    /// recorded), attaches itself to `core` and starts the background task.
    pub async fn start(
        core: &Arc<Core>,
        data_dir: &Path,
        options: RetentionOptions,
        metrics: RetentionMetrics,
    ) -> std::io::Result<Arc<Retention>> {
        let path = data_dir.join(FILE_NAME);
        let mut stored = load(&path)?;
        let loaded = serde_json::to_vec(&stored).unwrap_or_default();
        let now = unix(OffsetDateTime::now_utc());
        let configured = options.default_days;
        let previous = stored.default.days;
        let mut note = None;
        let fresh = !stored.initialised && core.ledger.is_empty();
        if fresh || !is_lower(configured, previous) {
            if stored.default.days != configured || stored.default.pending.is_some() {
                note = Some(("applied", previous));
            }
            stored.default = Setting {
                days: configured,
                pending: None,
            };
        } else if stored.default.pending.as_ref().map(|p| p.days) != Some(configured) {
            stored.default.pending = Some(PendingChange {
                days: configured,
                use_default: false,
                effective_at: now.saturating_add(options.lowering_delay.as_secs() as i64),
                requested_at: now,
                requested_by: "configuration".into(),
            });
            note = Some(("pending", previous));
        }
        stored.initialised = true;
        // Written only when something changed (a start on a full disk must not fail here).
        if !path.exists() || serde_json::to_vec(&stored).unwrap_or_default() != loaded {
            save(&path, &stored)?;
        }
        let retention = Arc::new(Retention {
            options,
            core: core.clone(),
            path,
            stored: Mutex::new(stored),
            running: tokio::sync::Mutex::new(()),
            last_run: Mutex::new(None),
            metrics,
            stop: tokio::sync::Notify::new(),
        });
        if let Some((result, previous)) = note
            && !fresh
        {
            let system = core.system_account.clone();
            let pending = lock(&retention.stored).default.pending.clone();
            let record = AuditRecord::new(
                &system,
                "retention.default.update",
                system_initiator(),
                target(&system),
            )
            .request(
                json!({"days": configured, "previousDays": previous, "source": "configuration"}),
            )
            .response(
                json!({"result": result, "pending": pending.as_ref().map(PendingView::from)}),
            );
            if let Err(e) = core.record(vec![record]).await {
                tracing::warn!(error = %e.message, "the retention default change could not be recorded");
            }
        }
        let _ = core.retention.set(retention.clone());
        let task = retention.clone();
        tokio::spawn(async move { task.run_forever().await });
        Ok(retention)
    }

    /// Stops the background task.
    pub fn stop(&self) {
        self.stop.notify_one();
    }

    async fn run_forever(self: Arc<Self>) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.options.interval) => {}
                () = self.stop.notified() => return,
            }
            let report = self.run().await;
            if let Some(e) = report.accounts.iter().find_map(|a| a.error.as_ref()) {
                tracing::warn!(error = %e, "retention run failed for an account");
            }
        }
    }

    /// Settles due pending changes (persisting them). Returns the default in force.
    fn settle_all(&self) -> Option<u32> {
        let now = unix(OffsetDateTime::now_utc());
        let mut stored = lock(&self.stored);
        let mut changed = settle(&mut stored.default, None, now);
        let default = stored.default.days;
        // An account whose due change goes back to the default follows it from now on.
        let back_to_default: Vec<String> = stored
            .accounts
            .iter()
            .filter(|(_, s)| {
                s.pending
                    .as_ref()
                    .is_some_and(|p| p.use_default && p.effective_at <= now)
            })
            .map(|(a, _)| a.clone())
            .collect();
        for a in back_to_default {
            stored.accounts.remove(&a);
            changed = true;
        }
        for s in stored.accounts.values_mut() {
            changed |= settle(s, default, now);
        }
        if changed && let Err(e) = save(&self.path, &stored) {
            tracing::warn!(error = %e, "saving retention policies failed");
        }
        default
    }

    /// The policy of `account`.
    pub fn policy(&self, account: &str) -> AccountPolicy {
        let default = self.settle_all();
        let stored = lock(&self.stored);
        let (days, source, pending) = match stored.accounts.get(account) {
            Some(s) => (s.days, "account", s.pending.as_ref()),
            None => (default, "default", stored.default.pending.as_ref()),
        };
        AccountPolicy {
            account: account.to_string(),
            days,
            source,
            pending: pending.map(PendingView::from),
            removed_through: self.core.ledger.removed(account),
            records: self.core.ledger.tree_head(account).map_or(0, |h| h.size),
        }
    }

    /// Everything, for `GET /v1/retention`.
    pub fn status(&self) -> serde_json::Value {
        let _ = self.settle_all();
        let (default, overridden): (Setting, Vec<String>) = {
            let stored = lock(&self.stored);
            (
                stored.default.clone(),
                stored.accounts.keys().cloned().collect(),
            )
        };
        let mut accounts: Vec<String> = self.core.ledger.accounts();
        accounts.extend(overridden);
        accounts.sort();
        accounts.dedup();
        let policies: Vec<AccountPolicy> = accounts.iter().map(|a| self.policy(a)).collect();
        json!({
            "default": {
                "days": default.days,
                "pending": default.pending.as_ref().map(PendingView::from),
            },
            "loweringDelaySeconds": self.options.lowering_delay.as_secs(),
            "intervalSeconds": self.options.interval.as_secs(),
            "daySeconds": self.options.day.as_secs(),
            "basis": "receivedAt",
            "archiveConfigured": self.core.archive.get().is_some(),
            "lastRun": *lock(&self.last_run),
            "accounts": policies,
        })
    }

    /// Changes `account`'s policy: at once when it keeps records as long or longer, after the
    /// lowering delay otherwise. The caller records the change (self-audit).
    pub fn change(
        &self,
        account: &str,
        change: Change,
        by: &str,
    ) -> std::io::Result<ChangeOutcome> {
        let default = self.settle_all();
        let now = unix(OffsetDateTime::now_utc());
        let result;
        let previous;
        {
            let mut stored = lock(&self.stored);
            previous = stored.accounts.get(account).map_or(default, |s| s.days);
            let (new_days, use_default) = match change {
                Change::Days(d) => (d, false),
                Change::UseDefault => (default, true),
            };
            if is_lower(new_days, previous) {
                let entry = stored
                    .accounts
                    .entry(account.to_string())
                    .or_insert(Setting {
                        days: previous,
                        pending: None,
                    });
                entry.pending = Some(PendingChange {
                    days: new_days,
                    use_default,
                    effective_at: now.saturating_add(self.options.lowering_delay.as_secs() as i64),
                    requested_at: now,
                    requested_by: by.to_string(),
                });
                result = "pending";
            } else {
                if use_default {
                    stored.accounts.remove(account);
                } else {
                    stored.accounts.insert(
                        account.to_string(),
                        Setting {
                            days: new_days,
                            pending: None,
                        },
                    );
                }
                result = "applied";
            }
            save(&self.path, &stored)?;
        }
        Ok(ChangeOutcome {
            result,
            previous_days: previous,
            policy: self.policy(account),
        })
    }

    /// The last run's report.
    pub fn last_run(&self) -> Option<RunReport> {
        lock(&self.last_run).clone()
    }

    /// Applies retention to every account now (one run at a time).
    pub async fn run(&self) -> RunReport {
        let _one = self.running.lock().await;
        let started = OffsetDateTime::now_utc();
        let _ = self.settle_all();
        let mut report = RunReport {
            started_at: format_time(started),
            finished_at: String::new(),
            removed: 0,
            accounts: Vec::new(),
        };
        let mut failed = false;
        for account in self.core.ledger.accounts() {
            let Some(days) = self.policy(&account).days else {
                continue;
            };
            match self.run_account(&account, days, started).await {
                Ok(None) => {}
                Ok(Some(r)) => {
                    report.removed += r.removed;
                    report.accounts.push(r);
                }
                Err(e) => {
                    failed = true;
                    report.accounts.push(AccountRun {
                        account: account.clone(),
                        days,
                        cutoff: String::new(),
                        from: 0,
                        to: 0,
                        retention_record: None,
                        removed: 0,
                        segments: 0,
                        bytes: 0,
                        held_back: None,
                        error: Some(e),
                    });
                }
            }
        }
        let finished = OffsetDateTime::now_utc();
        report.finished_at = format_time(finished);
        if failed {
            self.metrics.failures.inc();
        }
        self.metrics.last_run.set(finished.unix_timestamp());
        *lock(&self.last_run) = Some(report.clone());
        report
    }

    async fn run_account(
        &self,
        account: &str,
        days: u32,
        now: OffsetDateTime,
    ) -> Result<Option<AccountRun>, String> {
        let age = self.options.day.saturating_mul(days);
        let cutoff = now - age;
        let cutoff_nanos = i64::try_from(cutoff.unix_timestamp_nanos()).unwrap_or(i64::MIN);
        let ledger = self.core.ledger.clone();
        let acct = account.to_string();
        // The records received before the cut-off: a prefix of the log (receive order).
        let (from, due) = tokio::task::spawn_blocking(move || {
            let from = ledger.removed(&acct);
            let mut due = from;
            for record in ledger.iter_account(&acct, from) {
                let record = record.map_err(|e| e.to_string())?;
                if record.received_at_unix_nanos >= cutoff_nanos {
                    break;
                }
                due = record.index + 1;
            }
            Ok::<_, String>((from, due))
        })
        .await
        .map_err(|e| e.to_string())??;
        if due <= from {
            return Ok(None);
        }
        let mut cut = due;
        let mut held_back = Vec::new();
        if let Some(archive) = self.core.archive.get() {
            let archived = archive.archived_count(account);
            if archived < cut {
                held_back.push(format!("{} not archived yet", cut - archived.max(from)));
                cut = archived.max(from);
            }
        }
        if self.core.ledger.sealed_len(account) < cut {
            // Close the active segment so that it gets sealed (in the background).
            let ledger = self.core.ledger.clone();
            let acct = account.to_string();
            let want = cut;
            tokio::task::spawn_blocking(move || {
                ledger.rotate()?;
                for _ in 0..200 {
                    if ledger.sealed_len(&acct) >= want {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok::<_, trailkeep_ledger::Error>(())
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
            let sealed = self.core.ledger.sealed_len(account);
            if sealed < cut {
                held_back.push(format!("{} not sealed yet", cut - sealed.max(from)));
                cut = sealed.max(from);
            }
        }
        let mut run = AccountRun {
            account: account.to_string(),
            days,
            cutoff: format_time(cutoff),
            from,
            to: from,
            retention_record: None,
            removed: 0,
            segments: 0,
            bytes: 0,
            held_back: (!held_back.is_empty()).then(|| held_back.join(", ")),
            error: None,
        };
        if cut <= from {
            return Ok(Some(run));
        }
        // The statement first, in the account's own log.
        let record = AuditRecord::new(account, "retention.apply", system_initiator(), target(account))
            .request(json!({
                "retention": {
                    "from": from,
                    "to": cut,
                    "days": days,
                    "cutoff": format_time(cutoff),
                    "basis": "receivedAt",
                    "reason": format!(
                        "records {from}..{} of account {account} were received before {} and are past its retention of {days} days",
                        cut - 1,
                        format_time(cutoff)
                    ),
                }
            }));
        let outcome = self
            .core
            .record_report(vec![record])
            .await
            .map_err(|e| format!("recording the retention record: {}", e.message))?;
        let by = outcome
            .results
            .iter()
            .find_map(|r| match r {
                ItemOutcome::Accepted { index, .. } => Some(*index),
                _ => None,
            })
            .ok_or("the retention record was not stored")?;
        run.retention_record = Some(by);
        let ledger = self.core.ledger.clone();
        let acct = account.to_string();
        let removal = tokio::task::spawn_blocking(move || ledger.remove_bodies(&acct, cut, by))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("removing bodies: {e}"))?;
        self.core.indexer.delete(account, removal.removed_ranges());
        run.to = removal.to;
        run.segments = removal.segments;
        run.bytes = removal.bytes;
        let ranges = removal.removed_ranges();
        run.removed = ranges.iter().map(|(a, b)| b - a).sum();
        self.metrics.removed.inc_by(run.removed);
        tracing::info!(
            account,
            from = removal.from,
            to = removal.to,
            segments = removal.segments,
            "retention removed record bodies"
        );
        Ok(Some(run))
    }
}

/// Checks a `days` value from outside.
pub fn check_days(days: u64) -> Result<u32, ApiError> {
    if (1..=36_500).contains(&days) {
        Ok(days as u32)
    } else {
        Err(ApiError::bad_request(
            "days must be between 1 and 36500 (or null to keep forever)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowering_is_told_apart_from_raising() {
        assert!(is_lower(Some(5), None));
        assert!(is_lower(Some(5), Some(6)));
        assert!(!is_lower(Some(6), Some(6)));
        assert!(!is_lower(Some(7), Some(6)));
        assert!(!is_lower(None, Some(6)));
        assert!(!is_lower(None, None));
    }

    #[test]
    fn a_pending_change_applies_at_its_time() {
        let mut s = Setting {
            days: Some(30),
            pending: Some(PendingChange {
                days: Some(10),
                use_default: false,
                effective_at: 100,
                requested_at: 0,
                requested_by: "k".into(),
            }),
        };
        assert!(!settle(&mut s, None, 99));
        assert_eq!(s.days, Some(30));
        assert!(settle(&mut s, None, 100));
        assert_eq!((s.days, s.pending.is_none()), (Some(10), true));
    }
}
