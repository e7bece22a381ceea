//! The persisted outbox and the alert history.
//!
//! A fired rule becomes one [`Delivery`] per channel, written to `outbox.json` (atomically, fsynced)
//! before anything is sent. The delivery worker sends what is due; a success or a final failure
//! removes the delivery and remembers its id (so a replay after a crash does not queue it again),
//! a failed attempt schedules the next one with exponential backoff and jitter, and a delivery
//! still failing after the give-up time is marked failed. A crash between sending and recording
//! the success sends it again on restart: delivery is at least once, and every attempt carries
//! the same notification id for de-duplication.
//!
//! The history (`history.jsonl`) records, per rule, every notification fired, muted, delivered,
//! retried and failed, with reasons. It is appended line by line and compacted at start to the
//! newest [`HISTORY_PER_RULE`] entries of each rule.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use super::store::{StoreError, read_json, write_json};

pub const OUTBOX_VERSION: u32 = 1;
/// History entries kept per rule.
pub const HISTORY_PER_RULE: usize = 200;
/// Ids of finished deliveries remembered for de-duplication. A replay after a crash covers at
/// most the records since the evaluator last wrote its state (about a second), so the newest few
/// thousand are plenty, and the outbox file stays small.
const DONE_KEPT: usize = 5_000;

/// Retry policy of the delivery worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Wait after the first failed attempt; doubled after each further one.
    pub initial: Duration,
    /// Longest wait between two attempts.
    pub max: Duration,
    /// A delivery still failing this long after it was queued is marked failed.
    pub give_up_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            give_up_after: Duration::from_secs(24 * 3600),
        }
    }
}

impl RetryPolicy {
    /// The wait after `attempts` failed attempts: `initial · 2^(attempts−1)`, at most `max`,
    /// times a random factor in [0.5, 1) so that many deliveries failing together spread out.
    pub fn backoff(&self, attempts: u32, random: f64) -> Duration {
        let exp = self
            .initial
            .saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
        exp.min(self.max)
            .mul_f64(0.5 + 0.5 * random.clamp(0.0, 1.0))
    }
}

/// One notification to one channel of a rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// `<notification id>/<channel index>`.
    pub id: String,
    pub notification_id: String,
    pub rule_id: String,
    pub channel: usize,
    pub channel_type: String,
    /// The notification (the webhook body).
    pub payload: Value,
    /// Unix nanoseconds.
    pub created_at: i64,
    pub attempts: u32,
    pub next_attempt_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct OutboxFile {
    version: u32,
    deliveries: Vec<Delivery>,
    /// Ids of delivered or failed deliveries, oldest first.
    done: VecDeque<String>,
}

/// One line of the alert history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub at: String,
    pub rule_id: String,
    /// `fired`, `renotified`, `muted`, `delivered`, `retrying`, `failed` or `test`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl HistoryEntry {
    pub fn new(rule_id: &str, kind: &str) -> HistoryEntry {
        HistoryEntry {
            at: crate::core::format_time(OffsetDateTime::now_utc()),
            rule_id: rule_id.to_string(),
            kind: kind.to_string(),
            notification_id: None,
            channel: None,
            count: None,
            attempts: None,
            reason: None,
        }
    }
}

/// The alert history: the newest entries per rule in memory, every entry appended to a file.
#[derive(Debug)]
pub struct History {
    path: PathBuf,
    per_rule: Mutex<HashMap<String, VecDeque<HistoryEntry>>>,
}

impl History {
    /// Loads `history.jsonl`, keeps the newest entries of each rule and rewrites the file with
    /// only those. A torn last line (a crash mid-append) is skipped.
    pub fn open(dir: &Path) -> Result<History, StoreError> {
        let path = dir.join("history.jsonl");
        let mut per_rule: HashMap<String, VecDeque<HistoryEntry>> = HashMap::new();
        let mut order = Vec::new();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                for line in text.lines() {
                    let Ok(entry) = serde_json::from_str::<HistoryEntry>(line) else {
                        continue;
                    };
                    let q = per_rule.entry(entry.rule_id.clone()).or_default();
                    q.push_back(entry);
                    if q.len() > HISTORY_PER_RULE {
                        q.pop_front();
                    }
                }
                let mut compact = Vec::new();
                for q in per_rule.values() {
                    order.extend(q.iter().cloned());
                }
                order.sort_by(|a: &HistoryEntry, b| a.at.cmp(&b.at));
                for e in &order {
                    compact.extend(serde_json::to_vec(e).expect("serialises"));
                    compact.push(b'\n');
                }
                crate::auth::write_atomically(&path, &compact).map_err(|source| {
                    StoreError::Io {
                        path: path.clone(),
                        source,
                    }
                })?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(StoreError::Io { path, source }),
        }
        Ok(History {
            path,
            per_rule: Mutex::new(per_rule),
        })
    }

    pub fn record(&self, entry: HistoryEntry) {
        let mut per_rule = self.per_rule.lock().expect("history lock");
        let line = serde_json::to_vec(&entry).expect("serialises");
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| {
                f.write_all(&line)?;
                f.write_all(b"\n")?;
                f.sync_data()
            });
        if let Err(e) = written {
            tracing::error!(path = %self.path.display(), error = %e, "appending to the alert history failed");
        }
        let q = per_rule.entry(entry.rule_id.clone()).or_default();
        q.push_back(entry);
        if q.len() > HISTORY_PER_RULE {
            q.pop_front();
        }
    }

    /// The entries of a rule, newest first.
    pub fn of_rule(&self, rule_id: &str) -> Vec<HistoryEntry> {
        let per_rule = self.per_rule.lock().expect("history lock");
        per_rule
            .get(rule_id)
            .map(|q| q.iter().rev().cloned().collect())
            .unwrap_or_default()
    }
}

/// The outbox: pending deliveries in memory, mirrored to `outbox.json`.
#[derive(Debug)]
pub struct Outbox {
    path: PathBuf,
    file: Mutex<OutboxFile>,
    /// Woken when something is queued.
    pub wake: Arc<tokio::sync::Notify>,
}

impl Outbox {
    pub fn open(dir: &Path) -> Result<Outbox, StoreError> {
        let path = dir.join("outbox.json");
        let file = read_json::<OutboxFile>(&path, OUTBOX_VERSION)?.unwrap_or(OutboxFile {
            version: OUTBOX_VERSION,
            ..Default::default()
        });
        Ok(Outbox {
            path,
            file: Mutex::new(file),
            wake: Arc::new(tokio::sync::Notify::new()),
        })
    }

    /// Queues deliveries (persisted before this returns); ones already queued or finished are
    /// skipped. Returns the ids of the new ones. The caller wakes the worker ([`Outbox::wake`]).
    pub fn enqueue(&self, deliveries: Vec<Delivery>) -> Result<HashSet<String>, StoreError> {
        let mut file = self.file.lock().expect("outbox lock");
        let known: HashSet<&str> = file
            .deliveries
            .iter()
            .map(|d| d.id.as_str())
            .chain(file.done.iter().map(String::as_str))
            .collect();
        let fresh: Vec<Delivery> = deliveries
            .into_iter()
            .filter(|d| !known.contains(d.id.as_str()))
            .collect();
        if fresh.is_empty() {
            return Ok(HashSet::new());
        }
        let ids: HashSet<String> = fresh.iter().map(|d| d.id.clone()).collect();
        let mut copy = file.clone();
        copy.deliveries.extend(fresh);
        write_json(&self.path, &copy)?;
        *file = copy;
        Ok(ids)
    }

    /// Has this notification already been queued or finished (for any channel)?
    pub fn knows(&self, notification_id: &str) -> bool {
        let file = self.file.lock().expect("outbox lock");
        let prefix = format!("{notification_id}/");
        file.deliveries
            .iter()
            .any(|d| d.notification_id == notification_id)
            || file.done.iter().any(|d| d.starts_with(&prefix))
    }

    /// Deliveries due at `now` that are not in flight.
    pub fn due(&self, now: i64, in_flight: &HashSet<String>) -> Vec<Delivery> {
        let file = self.file.lock().expect("outbox lock");
        file.deliveries
            .iter()
            .filter(|d| d.next_attempt_at <= now && !in_flight.contains(&d.id))
            .cloned()
            .collect()
    }

    /// The earliest next attempt of a pending delivery that is not in flight.
    pub fn next_due(&self, in_flight: &HashSet<String>) -> Option<i64> {
        let file = self.file.lock().expect("outbox lock");
        file.deliveries
            .iter()
            .filter(|d| !in_flight.contains(&d.id))
            .map(|d| d.next_attempt_at)
            .min()
    }

    pub fn pending(&self) -> Vec<Delivery> {
        self.file.lock().expect("outbox lock").deliveries.clone()
    }

    /// Removes a delivery for good (delivered or failed).
    pub fn finish(&self, id: &str) -> Result<(), StoreError> {
        let mut file = self.file.lock().expect("outbox lock");
        let mut copy = file.clone();
        copy.deliveries.retain(|d| d.id != id);
        copy.done.push_back(id.to_string());
        while copy.done.len() > DONE_KEPT {
            copy.done.pop_front();
        }
        write_json(&self.path, &copy)?;
        *file = copy;
        Ok(())
    }

    /// Records a failed attempt and when to try again.
    pub fn reschedule(
        &self,
        id: &str,
        attempts: u32,
        next_attempt_at: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        let mut file = self.file.lock().expect("outbox lock");
        let mut copy = file.clone();
        if let Some(d) = copy.deliveries.iter_mut().find(|d| d.id == id) {
            d.attempts = attempts;
            d.next_attempt_at = next_attempt_at;
            d.last_error = Some(error.to_string());
        }
        write_json(&self.path, &copy)?;
        *file = copy;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(id: &str) -> Delivery {
        Delivery {
            id: format!("{id}/0"),
            notification_id: id.to_string(),
            rule_id: "alert_1".into(),
            channel: 0,
            channel_type: "webhook".into(),
            payload: serde_json::json!({"id": id}),
            created_at: 0,
            attempts: 0,
            next_attempt_at: 0,
            last_error: None,
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum_with_jitter_below_it() {
        let p = RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            give_up_after: Duration::from_secs(10),
        };
        assert_eq!(p.backoff(1, 1.0), Duration::from_millis(100));
        assert_eq!(p.backoff(2, 1.0), Duration::from_millis(200));
        assert_eq!(p.backoff(4, 1.0), Duration::from_millis(800));
        assert_eq!(p.backoff(5, 1.0), Duration::from_secs(1));
        assert_eq!(p.backoff(60, 1.0), Duration::from_secs(1));
        assert_eq!(p.backoff(2, 0.0), Duration::from_millis(100));
    }

    #[test]
    fn the_outbox_survives_a_reopen_and_never_queues_a_finished_delivery_again() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        assert_eq!(
            outbox
                .enqueue(vec![delivery("n1"), delivery("n2")])
                .unwrap()
                .len(),
            2
        );
        assert!(
            outbox.enqueue(vec![delivery("n1")]).unwrap().is_empty(),
            "already queued"
        );
        outbox.reschedule("n2/0", 1, 42, "HTTP 500").unwrap();
        outbox.finish("n1/0").unwrap();

        let reopened = Outbox::open(dir.path()).unwrap();
        let pending = reopened.pending();
        assert_eq!(pending.len(), 1);
        assert_eq!((pending[0].attempts, pending[0].next_attempt_at), (1, 42));
        assert!(reopened.knows("n1"));
        assert!(
            reopened.enqueue(vec![delivery("n1")]).unwrap().is_empty(),
            "already delivered"
        );
        assert!(reopened.due(41, &HashSet::new()).is_empty());
        assert_eq!(reopened.due(42, &HashSet::new()).len(), 1);
    }

    #[test]
    fn history_keeps_the_newest_entries_per_rule_and_skips_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(dir.path()).unwrap();
        for i in 0..(HISTORY_PER_RULE + 5) {
            let mut e = HistoryEntry::new("r1", "fired");
            e.count = Some(i as u64);
            h.record(e);
        }
        h.record(HistoryEntry::new("r2", "failed"));
        drop(h);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("history.jsonl"))
            .unwrap();
        f.write_all(b"{\"at\":\"2026").unwrap();
        let h = History::open(dir.path()).unwrap();
        let r1 = h.of_rule("r1");
        assert_eq!(r1.len(), HISTORY_PER_RULE);
        assert_eq!(
            r1[0].count,
            Some((HISTORY_PER_RULE + 4) as u64),
            "newest first"
        );
        assert_eq!(h.of_rule("r2").len(), 1);
    }
}
