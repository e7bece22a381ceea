//! The rule evaluator: one thread that sees every committed record, in log order per account,
//! matches it against the rules of its account with [`trailkeep_index::matches`] (no index, no
//! polling), moves each rule's [`RuleState`], and turns fires into outbox deliveries.
//!
//! Records arrive from the ingest pipeline right after the ledger made them durable (the same
//! hand-off as the indexer's). Requests finish in any order, so records of one account may arrive
//! out of order: they wait in a small reorder buffer until the gap before them is filled (or, after
//! [`GAP_WAIT`], the evaluator reads the missing records from the ledger).
//!
//! **Derived from the ledger.** `state.json` holds, per account, the next position to evaluate,
//! and every rule's state as of those positions, written together atomically. At start the
//! evaluator replays the ledger from there, so a crash loses nothing; a fire replayed twice has the
//! same notification id and the outbox queues it once. On the very first start (no `state.json`)
//! evaluation begins at the ledger's current end: rules are about what happens from now on.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use trailkeep_index::{MatchItem, Plan, matches};

use super::Alerts;
use super::model::{Rule, View};
use super::outbox::{Delivery, HistoryEntry};
use super::rule_state::{Cond, Fire, FireKind, RuleState};
use super::store::{StoreError, read_json, write_json};
use crate::core::{Core, format_time};

pub const STATE_VERSION: u32 = 1;
/// How often windows slide (absence, re-notify, resolution).
pub const TICK: Duration = Duration::from_millis(500);
/// Most records waiting in the evaluator's channel; beyond it the pipeline stops queueing and the
/// evaluator reads from the ledger instead.
pub const MAX_QUEUED: u64 = 100_000;
/// Most records read from the ledger in one tick while following it.
const LEDGER_BATCH: usize = 20_000;
/// How long an out-of-order record waits for the gap before it to be filled by the pipeline.
pub const GAP_WAIT: Duration = Duration::from_secs(2);
/// How often the state is written. Fires do not wait for it: they are in the outbox first, and a
/// replay of the records since the last write produces the same notification ids.
const PERSIST_EVERY: Duration = Duration::from_secs(2);

/// One committed record.
#[derive(Debug, Clone)]
pub struct Record {
    pub account: String,
    pub index: u64,
    pub received_at_nanos: i64,
    pub event: Arc<Value>,
}

/// What the evaluator thread receives.
#[derive(Debug)]
pub enum Msg {
    Records(Vec<Record>),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Tracked {
    /// What the state was derived under (condition and query); a change starts afresh.
    key: String,
    state: RuleState,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct StateFile {
    version: u32,
    /// Next position to evaluate, per account.
    positions: BTreeMap<String, u64>,
    rules: BTreeMap<String, Tracked>,
}

struct Compiled {
    rule: Rule,
    view: View,
    plan: Plan,
    cond: Cond,
}

/// The evaluator's working state (owned by its thread; the catch-up at start uses it first).
pub struct Evaluator {
    alerts: Weak<Alerts>,
    core: Weak<Core>,
    path: std::path::PathBuf,
    file: StateFile,
    generation: u64,
    by_account: HashMap<String, Vec<Compiled>>,
    reorder: HashMap<String, (Instant, BTreeMap<u64, Record>)>,
    dirty: bool,
    last_persist: Instant,
    /// Fires of the current batch, queued together by [`Evaluator::flush_fires`].
    pending: Vec<(HistoryEntry, Vec<Delivery>)>,
    /// Nanoseconds spent matching, and records matched (for the benchmark and metrics).
    pub match_nanos: u64,
    pub records_seen: u64,
}

impl std::fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluator")
            .field("positions", &self.file.positions)
            .finish_non_exhaustive()
    }
}

fn now_nanos() -> i64 {
    i64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos()).unwrap_or(i64::MAX)
}

fn nanos(d: time::Duration) -> i64 {
    i64::try_from(d.whole_nanoseconds()).unwrap_or(i64::MAX)
}

/// A stable notification id: the same fire always gets the same id.
fn notification_id(rule_id: &str, fire: &Fire, account: &str) -> String {
    let mut h = Sha256::new();
    h.update(rule_id.as_bytes());
    h.update([0]);
    h.update(account.as_bytes());
    h.update([0]);
    match fire.trigger {
        Some(index) => h.update(format!("{:?}/match/{index}", fire.kind).as_bytes()),
        None => h.update(format!("{:?}/tick/{}", fire.kind, fire.at).as_bytes()),
    }
    format!("ntf_{}", hex::encode(&h.finalize()[..16]))
}

impl Evaluator {
    /// Loads `state.json` (or starts at the ledger's end).
    pub fn open(alerts: &Arc<Alerts>, core: &Arc<Core>) -> Result<Evaluator, StoreError> {
        let path = alerts.dir.join("state.json");
        let file = match read_json::<StateFile>(&path, STATE_VERSION)? {
            Some(f) => f,
            None => {
                let positions = core
                    .ledger
                    .accounts()
                    .into_iter()
                    .filter_map(|a| core.ledger.tree_head(&a).map(|h| (a, h.size)))
                    .collect();
                let f = StateFile {
                    version: STATE_VERSION,
                    positions,
                    rules: BTreeMap::new(),
                };
                write_json(&path, &f)?;
                f
            }
        };
        Ok(Evaluator {
            alerts: Arc::downgrade(alerts),
            core: Arc::downgrade(core),
            path,
            file,
            generation: 0,
            by_account: HashMap::new(),
            reorder: HashMap::new(),
            dirty: false,
            last_persist: Instant::now(),
            pending: Vec::new(),
            match_nanos: 0,
            records_seen: 0,
        })
    }

    /// Replays every ledger record past the saved positions. Returns how many were evaluated.
    pub fn catch_up(&mut self) -> Result<u64, trailkeep_ledger::Error> {
        let Some(core) = self.core.upgrade() else {
            return Ok(0);
        };
        self.recompile();
        let mut replayed = 0;
        for account in core.ledger.accounts() {
            let from = self.file.positions.get(&account).copied().unwrap_or(0);
            for record in core.ledger.iter_account(&account, from) {
                let record = record?;
                let event: Value = serde_json::from_slice(&record.bytes).map_err(|e| {
                    trailkeep_ledger::Error::Corrupted {
                        position: format!("{account}/{}", record.index),
                        reason: format!("stored event is not JSON: {e}"),
                    }
                })?;
                self.evaluate(&Record {
                    account: account.clone(),
                    index: record.index,
                    received_at_nanos: record.received_at_unix_nanos,
                    event: Arc::new(event),
                });
                replayed += 1;
            }
        }
        self.flush_fires();
        self.tick(now_nanos());
        self.persist();
        if replayed > 0 {
            tracing::info!(
                records = replayed,
                "alert evaluator caught up with the ledger"
            );
        }
        Ok(replayed)
    }

    /// Rebuilds the compiled rules when views or rules changed.
    fn recompile(&mut self) {
        let Some(alerts) = self.alerts.upgrade() else {
            return;
        };
        let generation = alerts.config.generation();
        if generation == self.generation {
            return;
        }
        self.generation = generation;
        let now = now_nanos();
        let mut by_account: HashMap<String, Vec<Compiled>> = HashMap::new();
        let (rules, views) = alerts.config.read(|c| (c.rules.clone(), c.views.clone()));
        let mut live = std::collections::HashSet::new();
        for rule in rules {
            let Some(view) = views.iter().find(|v| v.id == rule.view_id).cloned() else {
                continue;
            };
            let Ok(plan) = trailkeep_index::query::plan_strict(&view.query) else {
                continue;
            };
            let cond = Cond {
                kind: rule.condition.kind,
                threshold: rule.condition.threshold,
                window: rule.condition.window_duration().map(nanos),
                renotify: rule.renotify_duration().map(nanos),
            };
            let key = format!("{cond:?}|{}", view.query);
            let fresh = self.file.rules.get(&rule.id).is_none_or(|t| t.key != key);
            if fresh {
                let state = self.seed(&view, &plan, now);
                self.file
                    .rules
                    .insert(rule.id.clone(), Tracked { key, state });
                self.dirty = true;
            }
            live.insert(rule.id.clone());
            by_account
                .entry(view.account.clone())
                .or_default()
                .push(Compiled {
                    rule,
                    view,
                    plan,
                    cond,
                });
        }
        let before = self.file.rules.len();
        self.file.rules.retain(|id, _| live.contains(id));
        self.dirty |= before != self.file.rules.len();
        self.by_account = by_account;
    }

    /// The state of a new rule: it watches from `now`, and knows the view's newest match of the
    /// past 24 h from the search index (so an absence rule on a view that went quiet just before
    /// the rule was created still fires).
    fn seed(&self, view: &View, plan: &Plan, now: i64) -> RuleState {
        let mut state = RuleState::new(now);
        let Some(core) = self.core.upgrade() else {
            return state;
        };
        let day = nanos(super::model::ACTIVE_WITHIN);
        let from = OffsetDateTime::from_unix_timestamp_nanos(i128::from(now - day)).ok();
        let accounts = [view.account.clone()];
        let newest = core.index.search(&trailkeep_index::SearchRequest {
            plan,
            accounts: &accounts,
            from,
            to: None,
            limit: 1,
            cursor: None,
        });
        if let Ok(page) = newest
            && let Some(hit) = page.hits.first()
            && let Ok(Some(record)) = core.ledger.read_record(&hit.account, hit.index)
            && record.received_at_unix_nanos > now - day
        {
            state.last_match = Some(record.received_at_unix_nanos);
            state.newest.push_back(hit.index);
        }
        state
    }

    /// Takes committed records (any order), evaluates what is next in each account's log.
    pub fn receive(&mut self, records: Vec<Record>) {
        self.recompile();
        let mut touched = Vec::new();
        for r in records {
            let next = self.file.positions.get(&r.account).copied().unwrap_or(0);
            if r.index < next {
                continue; // seen already (catch-up overlap)
            }
            if !touched.contains(&r.account) {
                touched.push(r.account.clone());
            }
            let (_, buf) = self
                .reorder
                .entry(r.account.clone())
                .or_insert_with(|| (Instant::now(), BTreeMap::new()));
            buf.insert(r.index, r);
        }
        for account in touched {
            self.drain(&account);
        }
        self.flush_fires();
        if self.dirty && self.last_persist.elapsed() >= PERSIST_EVERY {
            self.persist();
        }
    }

    /// Evaluates the contiguous run of buffered records of `account`.
    fn drain(&mut self, account: &str) {
        loop {
            let next = self.file.positions.get(account).copied().unwrap_or(0);
            let Some((_, buf)) = self.reorder.get_mut(account) else {
                return;
            };
            let record = buf.remove(&next);
            if buf.is_empty() {
                self.reorder.remove(account);
            }
            let Some(record) = record else {
                return;
            };
            self.evaluate(&record);
        }
    }

    /// Reads records still missing after [`GAP_WAIT`] from the ledger.
    fn fill_gaps(&mut self) {
        let Some(core) = self.core.upgrade() else {
            return;
        };
        let stale: Vec<String> = self
            .reorder
            .iter()
            .filter(|(_, (since, _))| since.elapsed() >= GAP_WAIT)
            .map(|(a, _)| a.clone())
            .collect();
        for account in stale {
            let next = self.file.positions.get(&account).copied().unwrap_or(0);
            let first = self
                .reorder
                .get(&account)
                .and_then(|(_, b)| b.keys().next().copied())
                .unwrap_or(next);
            for index in next..first {
                match core.ledger.read_record(&account, index) {
                    Ok(Some(rec)) => {
                        let Ok(event) = serde_json::from_slice::<Value>(&rec.bytes) else {
                            continue;
                        };
                        self.evaluate(&Record {
                            account: account.clone(),
                            index,
                            received_at_nanos: rec.received_at_unix_nanos,
                            event: Arc::new(event),
                        });
                    }
                    _ => break,
                }
            }
            if let Some((since, _)) = self.reorder.get_mut(&account) {
                *since = Instant::now();
            }
            self.drain(&account);
        }
        self.flush_fires();
    }

    /// Evaluates committed records the pipeline did not hand over (its queue was full, or a
    /// request task ended between the ledger's acknowledgement and the hand-off), reading them from
    /// the ledger. Called only when nothing is queued, so it does not race the channel; a record
    /// that arrives later anyway is skipped by position.
    fn follow_ledger(&mut self) {
        let Some(core) = self.core.upgrade() else {
            return;
        };
        let mut budget = LEDGER_BATCH;
        for account in core.ledger.accounts() {
            if budget == 0 {
                break;
            }
            if self.reorder.contains_key(&account) {
                continue;
            }
            let from = self.file.positions.get(&account).copied().unwrap_or(0);
            if core
                .ledger
                .tree_head(&account)
                .is_none_or(|h| h.size <= from)
            {
                continue;
            }
            for record in core.ledger.iter_account(&account, from).take(budget) {
                let Ok(record) = record else { break };
                budget -= 1;
                let Ok(event) = serde_json::from_slice::<Value>(&record.bytes) else {
                    // Not an event (cannot happen for records the pipeline wrote): skip it.
                    self.file
                        .positions
                        .insert(account.clone(), record.index + 1);
                    continue;
                };
                self.evaluate(&Record {
                    account: account.clone(),
                    index: record.index,
                    received_at_nanos: record.received_at_unix_nanos,
                    event: Arc::new(event),
                });
            }
        }
        self.flush_fires();
    }

    /// One record, in log order: match it against its account's rules.
    fn evaluate(&mut self, record: &Record) {
        self.file
            .positions
            .insert(record.account.clone(), record.index + 1);
        self.dirty = true;
        self.records_seen += 1;
        let Some(rules) = self.by_account.get(&record.account) else {
            return;
        };
        let item = MatchItem {
            account: &record.account,
            index: record.index,
            received_at_nanos: record.received_at_nanos,
            event: &record.event,
        };
        let started = Instant::now();
        let mut fires = Vec::new();
        for (i, c) in rules.iter().enumerate() {
            if !matches(&c.plan, &item) {
                continue;
            }
            let Some(tracked) = self.file.rules.get_mut(&c.rule.id) else {
                continue;
            };
            if let Some(fire) =
                tracked
                    .state
                    .on_match(&c.cond, record.received_at_nanos, record.index)
            {
                fires.push((i, fire, tracked.state.newest.clone()));
            }
        }
        self.match_nanos += started.elapsed().as_nanos() as u64;
        let account = record.account.clone();
        for (i, fire, newest) in fires {
            self.emit(&account, i, &fire, &newest.into_iter().collect::<Vec<_>>());
        }
    }

    /// Queues the fires of the batch (one outbox write) and records them in the history. The
    /// state that says they happened is written later: a crash in between replays the records
    /// into the same notification ids, which the outbox does not queue twice.
    fn flush_fires(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let Some(alerts) = self.alerts.upgrade() else {
            return;
        };
        let pending = std::mem::take(&mut self.pending);
        let deliveries: Vec<Delivery> = pending.iter().flat_map(|(_, d)| d.clone()).collect();
        let fresh = match alerts.outbox.enqueue(deliveries) {
            Ok(fresh) => fresh,
            Err(e) => {
                tracing::error!(error = %e, "queueing notifications failed");
                return;
            }
        };
        for (entry, deliveries) in pending {
            let new = deliveries.is_empty() || deliveries.iter().any(|d| fresh.contains(&d.id));
            if new {
                alerts.metrics.count(if entry.kind == "muted" {
                    "muted"
                } else {
                    "fired"
                });
                alerts.history.record(entry);
            }
        }
        alerts.outbox.wake.notify_one();
    }

    /// The clock moved: windows slide, absence and re-notify come due.
    pub fn tick(&mut self, now: i64) {
        self.recompile();
        let mut fires = Vec::new();
        for (account, rules) in &self.by_account {
            // An account with records waiting in the reorder buffer is not up to date.
            if self.reorder.contains_key(account) {
                continue;
            }
            for (i, c) in rules.iter().enumerate() {
                let Some(tracked) = self.file.rules.get_mut(&c.rule.id) else {
                    continue;
                };
                let before = (tracked.state.buckets.len(), tracked.state.firing);
                if let Some(fire) = tracked.state.tick(&c.cond, now) {
                    fires.push((account.clone(), i, fire, tracked.state.newest.clone()));
                    self.dirty = true;
                }
                self.dirty |= before != (tracked.state.buckets.len(), tracked.state.firing);
            }
        }
        for (account, i, fire, newest) in fires {
            self.emit(&account, i, &fire, &newest.into_iter().collect::<Vec<_>>());
        }
        self.flush_fires();
        if self.dirty && self.last_persist.elapsed() >= PERSIST_EVERY {
            self.persist();
        }
    }

    /// Turns a fire into a history entry and outbox deliveries (none when muted), queued in
    /// `pending` until the end of the batch.
    fn emit(&mut self, account: &str, rule_index: usize, fire: &Fire, newest: &[u64]) {
        let Some(core) = self.core.upgrade() else {
            return;
        };
        let Some(c) = self.by_account.get(account).and_then(|r| r.get(rule_index)) else {
            return;
        };
        let id = notification_id(&c.rule.id, fire, account);
        let fired_at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(fire.at))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let mut entry = HistoryEntry::new(
            &c.rule.id,
            match fire.kind {
                FireKind::Fired => "fired",
                FireKind::Renotify => "renotified",
            },
        );
        entry.notification_id = Some(id.clone());
        entry.count = Some(fire.count);
        let muted = c
            .rule
            .muted_until_unix_nanos()
            .is_some_and(|m| m > OffsetDateTime::now_utc().unix_timestamp_nanos());
        if muted {
            entry.kind = "muted".into();
            entry.reason = Some(format!(
                "muted until {}",
                c.rule.muted_until.as_deref().unwrap_or_default()
            ));
            self.pending.push((entry, Vec::new()));
            return;
        }
        // The newest matching events, newest first, read from the ledger.
        let events: Vec<Value> = newest
            .iter()
            .rev()
            .filter_map(|&i| core.item(account, i).ok().flatten())
            .filter_map(|item| serde_json::to_value(item).ok())
            .collect();
        let payload = payload(&id, &c.rule, &c.view, fire, fired_at, events);
        let now = now_nanos();
        let deliveries = c
            .rule
            .channels
            .iter()
            .enumerate()
            .map(|(n, ch)| Delivery {
                id: format!("{id}/{n}"),
                notification_id: id.clone(),
                rule_id: c.rule.id.clone(),
                channel: n,
                channel_type: ch.kind().to_string(),
                payload: payload.clone(),
                created_at: now,
                attempts: 0,
                next_attempt_at: now,
                last_error: None,
            })
            .collect();
        self.pending.push((entry, deliveries));
    }

    fn persist(&mut self) {
        match write_json(&self.path, &self.file) {
            Ok(()) => {
                self.dirty = false;
                self.last_persist = Instant::now();
            }
            Err(e) => tracing::error!(error = %e, "writing the alert state failed"),
        }
    }

    /// The thread's loop: records as they come, a tick every [`TICK`].
    pub fn run(
        mut self,
        rx: Receiver<Msg>,
        metrics: super::AlertMetrics,
        queued: Arc<std::sync::atomic::AtomicU64>,
    ) {
        let mut last_tick = Instant::now();
        let mut published = (self.records_seen, self.match_nanos);
        loop {
            let wait = TICK.saturating_sub(last_tick.elapsed());
            match rx.recv_timeout(wait) {
                Ok(Msg::Records(records)) => {
                    let n = records.len();
                    self.receive(records);
                    metrics.lag.dec_by(n as i64);
                    queued.fetch_sub(n as u64, std::sync::atomic::Ordering::SeqCst);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.persist();
                    return;
                }
            }
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                self.fill_gaps();
                if queued.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                    self.follow_ledger();
                }
                self.tick(now_nanos());
            }
            // Whatever path the records came by (hand-off, gap, ledger).
            if self.records_seen != published.0 {
                metrics.records.inc_by(self.records_seen - published.0);
                metrics
                    .match_seconds
                    .inc_by((self.match_nanos - published.1) as f64 / 1e9);
                published = (self.records_seen, self.match_nanos);
            }
        }
    }
}

/// The notification document (the webhook body).
pub fn payload(
    id: &str,
    rule: &Rule,
    view: &View,
    fire: &Fire,
    fired_at: OffsetDateTime,
    events: Vec<Value>,
) -> Value {
    json!({
        "id": id,
        "type": "trailkeep.alert",
        "kind": match fire.kind { FireKind::Fired => "fired", FireKind::Renotify => "renotify" },
        "firedAt": format_time(fired_at),
        "account": view.account,
        "rule": {"id": rule.id, "name": rule.name},
        "view": {"id": view.id, "name": view.name, "query": view.query},
        "condition": rule.condition,
        "count": fire.count,
        "window": rule.condition.window,
        "events": events,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicU64;

    use super::*;
    use crate::alerts::model::{Channel, Condition, ConditionType};
    use crate::alerts::notify::{Sender, SmtpSettings};
    use crate::alerts::outbox::{History, Outbox, RetryPolicy};
    use crate::alerts::store::ConfigStore;
    use crate::auth::{AccountScope, Principal, Role};
    use crate::config::ServeOptions;
    use crate::metrics::Metrics;

    fn event(id: &str, outcome: &str) -> String {
        serde_json::json!({
            "id": id, "eventTime": "2026-11-20T10:00:00+00:00",
            "action": "codeengine.application.create", "outcome": outcome,
            "initiator": {"id": "u1"}, "target": {"id": "t1"},
            "logSourceCRN": "crn:v1:bluemix:public:codeengine:us-south:a/acme:p1::",
        })
        .to_string()
    }

    /// Alerts without the evaluator thread, the delivery task or the hand-off from ingest: the
    /// test drives an `Evaluator` by hand.
    fn detached(dir: &std::path::Path, core: &Arc<Core>) -> Arc<Alerts> {
        let adir = dir.join("alerts");
        std::fs::create_dir_all(&adir).unwrap();
        let alerts = Arc::new(Alerts {
            config: ConfigStore::open(&adir).unwrap(),
            outbox: Outbox::open(&adir).unwrap(),
            history: History::open(&adir).unwrap(),
            sender: Sender::new(SmtpSettings::default(), Default::default()),
            retry: RetryPolicy::default(),
            dir: adir,
            evaluator: Mutex::new(None),
            thread: Mutex::new(None),
            metrics: core.metrics.alerts.clone(),
            queued: Arc::new(AtomicU64::new(0)),
            stop: Arc::new(tokio::sync::Notify::new()),
        });
        let view = View {
            id: "view_1".into(),
            name: "failures".into(),
            account: "acme".into(),
            query: "outcome:failure".into(),
            window: "24h".into(),
            owner: "k".into(),
            created_at: String::new(),
            updated_at: String::new(),
        };
        let rule = Rule {
            id: "alert_1".into(),
            name: "every failure".into(),
            view_id: "view_1".into(),
            account: "acme".into(),
            condition: Condition {
                kind: ConditionType::Presence,
                threshold: 1,
                window: None,
            },
            channels: vec![Channel::Slack {
                url: "http://127.0.0.1:1/".into(),
            }],
            renotify: None,
            muted_until: None,
            owner: "k".into(),
            created_at: String::new(),
            updated_at: String::new(),
        };
        alerts
            .config
            .update(|c| {
                c.views.push(view);
                c.rules.push(rule);
                Ok::<_, StoreError>(())
            })
            .unwrap();
        alerts
    }

    async fn ingest(core: &Arc<Core>, lines: &[String]) {
        let admin = Principal {
            key_id: "admin".into(),
            key_name: "admin".into(),
            role: Role::Admin,
            accounts: AccountScope::All,
            default_account: "default".into(),
            action_prefixes: Vec::new(),
            limits: Default::default(),
            client: None,
        };
        let report = core
            .ingest(
                &admin,
                lines.join("\n").into_bytes(),
                trailkeep_event::InputFormat::Ndjson,
            )
            .await
            .unwrap();
        assert_eq!(report.accepted, lines.len());
    }

    fn record(core: &Core, index: u64) -> Record {
        let r = core.ledger.read_record("acme", index).unwrap().unwrap();
        Record {
            account: "acme".into(),
            index,
            received_at_nanos: r.received_at_unix_nanos,
            event: Arc::new(serde_json::from_slice(&r.bytes).unwrap()),
        }
    }

    fn notified(alerts: &Alerts) -> Vec<String> {
        let mut ids: Vec<String> = alerts
            .outbox
            .pending()
            .iter()
            .map(|d| {
                d.payload["events"][0]["event"]["id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        ids.sort();
        ids
    }

    #[tokio::test]
    async fn every_committed_record_is_evaluated_once_in_order_whatever_reaches_the_evaluator() {
        let dir = tempfile::tempdir().unwrap();
        let config = ServeOptions {
            data_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        let core = Core::open(&config, Arc::new(Metrics::new())).unwrap();
        let alerts = detached(dir.path(), &core);
        let mut ev = Evaluator::open(&alerts, &core).unwrap();
        ev.tick(now_nanos());

        // Records the evaluator was never handed are read from the ledger.
        ingest(
            &core,
            &[
                event("e0", "failure"),
                event("e1", "success"),
                event("e2", "failure"),
            ],
        )
        .await;
        ev.follow_ledger();
        assert_eq!(ev.file.positions["acme"], 3);
        assert_eq!(notified(&alerts), ["e0", "e2"]);

        // Handed over again: skipped by position, nothing queued twice.
        ev.receive(vec![record(&core, 0), record(&core, 2)]);
        assert_eq!(notified(&alerts).len(), 2);

        // Out of order: a later record waits for the earlier one.
        ingest(
            &core,
            &[
                event("e3", "failure"),
                event("e4", "failure"),
                event("e5", "failure"),
            ],
        )
        .await;
        ev.receive(vec![record(&core, 5), record(&core, 4)]);
        assert_eq!(ev.file.positions["acme"], 3, "index 3 is missing");
        assert_eq!(notified(&alerts).len(), 2);
        ev.receive(vec![record(&core, 3)]);
        assert_eq!(ev.file.positions["acme"], 6);
        assert_eq!(notified(&alerts), ["e0", "e2", "e3", "e4", "e5"]);

        // A gap that the pipeline never fills is read from the ledger after GAP_WAIT.
        ingest(&core, &[event("e6", "failure"), event("e7", "failure")]).await;
        ev.receive(vec![record(&core, 7)]);
        assert_eq!(ev.file.positions["acme"], 6);
        ev.fill_gaps();
        assert_eq!(ev.file.positions["acme"], 6, "not before GAP_WAIT");
        ev.reorder.get_mut("acme").unwrap().0 = Instant::now() - GAP_WAIT;
        ev.fill_gaps();
        assert_eq!(ev.file.positions["acme"], 8);
        assert_eq!(notified(&alerts).len(), 7);

        // The state written with the positions is what a restart resumes from: replaying from an
        // older position queues nothing twice.
        ev.persist();
        let mut replay = Evaluator::open(&alerts, &core).unwrap();
        assert_eq!(replay.file.positions["acme"], 8);
        replay.file.positions.insert("acme".into(), 0);
        replay.catch_up().unwrap();
        assert_eq!(replay.file.positions["acme"], 8);
        assert_eq!(notified(&alerts).len(), 7);
        core.close();
    }
}
