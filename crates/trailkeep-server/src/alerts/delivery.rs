//! The delivery worker: a task that sends due outbox deliveries concurrently and records the
//! outcome (see [`super::outbox`] for the guarantees).

use std::collections::HashSet;
use std::sync::Weak;
use std::time::Duration;

use time::OffsetDateTime;

use super::Alerts;
use super::outbox::{Delivery, HistoryEntry};

fn now_nanos() -> i64 {
    i64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos()).unwrap_or(i64::MAX)
}

fn random_unit() -> f64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// Sends one delivery; `Err((reason, permanent))`.
async fn attempt(alerts: &Alerts, d: &Delivery) -> Result<(), (String, bool)> {
    let channel = alerts.config.read(|c| {
        c.rules
            .iter()
            .find(|r| r.id == d.rule_id)
            .and_then(|r| r.channels.get(d.channel).cloned())
    });
    let Some(channel) = channel else {
        return Err(("the rule or its channel was deleted".into(), true));
    };
    alerts
        .sender
        .send(&channel, &d.payload)
        .await
        .map_err(|e| (e, false))
}

/// Runs until `stop` is notified (or the alerts are dropped).
pub async fn run(alerts: Weak<Alerts>, stop: std::sync::Arc<tokio::sync::Notify>) {
    let Some(wake) = alerts.upgrade().map(|a| a.outbox.wake.clone()) else {
        return;
    };
    let mut in_flight: HashSet<String> = HashSet::new();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let Some(a) = alerts.upgrade() else { return };
        for d in a.outbox.due(now_nanos(), &in_flight) {
            in_flight.insert(d.id.clone());
            let alerts = alerts.clone();
            tasks.spawn(async move {
                let result = match alerts.upgrade() {
                    Some(a) => attempt(&a, &d).await,
                    None => Err(("the server is stopping".into(), false)),
                };
                (d, result)
            });
        }
        let next = a.outbox.next_due(&in_flight);
        drop(a);
        let sleep = match next {
            Some(t) => Duration::from_nanos(u64::try_from(t - now_nanos()).unwrap_or(0))
                .clamp(Duration::from_millis(10), Duration::from_secs(1)),
            None => Duration::from_secs(1),
        };
        tokio::select! {
            Some(Ok((d, result))) = tasks.join_next(), if !tasks.is_empty() => {
                in_flight.remove(&d.id);
                if let Some(a) = alerts.upgrade() {
                    // Outbox and history writes fsync: off the async workers.
                    let _ = tokio::task::spawn_blocking(move || record(&a, &d, result)).await;
                }
            }
            () = wake.notified() => {}
            () = tokio::time::sleep(sleep) => {}
            () = stop.notified() => return,
        }
    }
}

fn record(alerts: &Alerts, d: &Delivery, result: Result<(), (String, bool)>) {
    let mut entry = HistoryEntry::new(&d.rule_id, "delivered");
    entry.notification_id = Some(d.notification_id.clone());
    entry.channel = Some(format!("{}#{}", d.channel_type, d.channel));
    entry.attempts = Some(d.attempts + 1);
    let outcome = match result {
        Ok(()) => alerts.outbox.finish(&d.id),
        Err((reason, permanent)) => {
            let attempts = d.attempts + 1;
            let now = now_nanos();
            let waited = Duration::from_nanos(u64::try_from(now - d.created_at).unwrap_or(0));
            let policy = alerts.retry;
            entry.reason = Some(reason.clone());
            if permanent || waited >= policy.give_up_after {
                entry.kind = "failed".into();
                if !permanent {
                    entry.reason = Some(format!(
                        "{reason} (gave up after {attempts} attempts in {}s)",
                        waited.as_secs()
                    ));
                }
                alerts.outbox.finish(&d.id)
            } else {
                entry.kind = "retrying".into();
                let wait = policy.backoff(attempts, random_unit());
                let next = now.saturating_add(i64::try_from(wait.as_nanos()).unwrap_or(i64::MAX));
                alerts.outbox.reschedule(&d.id, attempts, next, &reason)
            }
        }
    };
    if let Err(e) = outcome {
        tracing::error!(delivery = %d.id, error = %e, "recording a delivery outcome failed");
    }
    alerts.metrics.count(match entry.kind.as_str() {
        "delivered" => "delivered",
        "retrying" => "retrying",
        _ => "failed",
    });
    alerts.history.record(entry);
}
