//! The indexer: one thread that turns committed ledger records into search-index documents.
//!
//! **Architecture Invariant:** the index is derived from the ledger, never the other way round.
//! Records reach the indexer only after the ledger made them durable; at start the indexer first
//! catches up from the ledger (from the positions recorded in the index's last commit), so a crash
//! between a ledger commit and an index commit loses nothing.
//!
//! Commits happen at most [`COMMIT_INTERVAL`] after the first uncommitted add, or
//! [`LOADED_COMMIT_INTERVAL`] when the previous commit held [`LOADED_COMMIT_DOCS`] or more (see
//! [`commit_interval`]), which keeps an acknowledged event searchable within a second while the
//! indexer keeps up.
//!
//! A failed commit (a full disk) drops what was added since the last commit; the indexer then
//! ignores the records it is sent and, every [`RESYNC_INTERVAL`], tries to catch up from the
//! ledger again, as at start. So the index heals by itself once space is freed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::OwnedSemaphorePermit;
use trailkeep_event::object::{self, Derived};
use trailkeep_index::{Added, DerivedFields, EventIndex, Writer};
use trailkeep_ledger::Ledger;

use crate::metrics::Metrics;
use crate::objects::{Batch, ObjectStore};

/// Longest time an added document waits for its commit under a light load.
pub const COMMIT_INTERVAL: Duration = Duration::from_millis(250);
/// Longest time an added document waits for its commit under load.
pub const LOADED_COMMIT_INTERVAL: Duration = Duration::from_millis(500);
/// A commit of this many documents or more means load (4,000 events/s at [`COMMIT_INTERVAL`]).
pub const LOADED_COMMIT_DOCS: usize = 1_000;
/// Commit early when this many documents are waiting.
const COMMIT_BATCH: usize = 20_000;
/// How often a failed index commit is retried by catching up from the ledger.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(1);

/// How long the first document added after a commit that held `last_commit_docs` may wait for
/// its own commit.
///
/// Every commit writes a segment — term dictionaries, columns, a handful of files synced — whose
/// cost barely depends on its size, and every segment is merged again later. Under load a
/// longer interval means half the commits and segments for the same documents, so the indexer
/// spends its time indexing; under a light load documents are searchable sooner.
pub fn commit_interval(last_commit_docs: usize) -> Duration {
    if last_commit_docs >= LOADED_COMMIT_DOCS {
        LOADED_COMMIT_INTERVAL
    } else {
        COMMIT_INTERVAL
    }
}

/// Where ingest latency goes besides parsing and the ledger: how long requests wait for the index
/// before they are parsed, and how long the index commits take (each commit holds the indexer,
/// so a long one ages the backlog and holds new requests back).
#[derive(Debug, Clone)]
pub struct IndexingMetrics {
    /// Time each ingest request waited for the index before it was parsed (zero when the index
    /// kept up).
    pub held_back: Histogram,
    /// Time each index commit took, by part: `index` (tantivy finishes indexing what was added
    /// and writes the segment), `objects` (the derived object state), `reload` (searchable).
    pub commit: Family<CommitPart, Histogram, fn() -> Histogram>,
}

/// The label of [`IndexingMetrics::commit`].
#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct CommitPart {
    pub part: &'static str,
}

/// 1 ms … ~4 s.
fn latency_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 13,
    ))
}

impl IndexingMetrics {
    pub fn register(registry: &mut prometheus_client::registry::Registry) -> IndexingMetrics {
        let m = IndexingMetrics {
            held_back: latency_histogram(),
            commit: Family::new_with_constructor(latency_histogram),
        };
        registry.register(
            "ingest_held_back_seconds",
            "Time an ingest request waited for the search index to catch up before it was parsed",
            m.held_back.clone(),
        );
        registry.register(
            "index_commit_seconds",
            "Time an index commit took, by part (index, objects: the derived object state, reload)",
            m.commit.clone(),
        );
        m
    }

    fn observe_commit(&self, part: &'static str, started: Instant) -> Instant {
        let now = Instant::now();
        self.commit
            .get_or_create(&CommitPart { part })
            .observe((now - started).as_secs_f64());
        now
    }
}

/// One committed record to index.
#[derive(Debug)]
pub struct IndexJob {
    pub account: String,
    pub index: u64,
    pub received_at: OffsetDateTime,
    /// Shared with the alert evaluator.
    pub event: Arc<Value>,
}

/// When each batch of records still waiting for the indexer was sent, oldest first: the age of
/// the oldest is how far behind the index runs, in time. Ingest holds new requests back while it
/// is over [`INDEX_BACKLOG_TARGET`](crate::core::INDEX_BACKLOG_TARGET), so that an acknowledged
/// event stays searchable within about a second even when clients send faster than the index
/// can follow.
#[derive(Debug, Default)]
pub struct Backlog(Mutex<std::collections::VecDeque<Instant>>);

impl Backlog {
    fn push(&self, sent: Instant) {
        self.0.lock().expect("backlog lock").push_back(sent);
    }

    fn pop(&self) {
        self.0.lock().expect("backlog lock").pop_front();
    }

    /// How long the oldest batch not yet added to the index has waited (zero when none).
    pub fn age(&self) -> Duration {
        self.0
            .lock()
            .expect("backlog lock")
            .front()
            .map_or(Duration::ZERO, Instant::elapsed)
    }
}

enum Message {
    /// Records to add, with the ingest-queue room they hold: released once they are added, so
    /// the bounded queue also bounds the indexer's backlog (and its memory).
    Jobs(Vec<IndexJob>, Option<OwnedSemaphorePermit>),
    /// Reply once everything sent before is committed and searchable.
    Flush(Sender<()>),
    /// Retention removed these index ranges `[from, to)` of the account from the ledger.
    Delete(String, Vec<(u64, u64)>),
}

/// Handle to the indexer thread.
#[derive(Debug)]
pub struct Indexer {
    tx: Mutex<Option<Sender<Message>>>,
    /// The positions of the index's last commit (searchable from then on).
    committed: tokio::sync::watch::Receiver<trailkeep_index::Positions>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Jobs sent but not yet committed.
    pending: Arc<AtomicU64>,
    /// Batches sent but not yet added, with when they were sent.
    backlog: Arc<Backlog>,
}

impl Indexer {
    /// Starts the thread with `writer` and `objects` (both already caught up by the caller);
    /// `ledger` is read only to recover from a failed commit.
    pub fn start(
        ledger: Ledger,
        index: Arc<EventIndex>,
        writer: Writer,
        objects: Arc<ObjectStore>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        let pending = Arc::new(AtomicU64::new(0));
        let backlog = Arc::new(Backlog::default());
        let (committed_tx, committed) = tokio::sync::watch::channel(writer.positions().clone());
        let thread = {
            let pending = pending.clone();
            let link = Link {
                rx,
                pending,
                backlog: backlog.clone(),
                metrics,
                committed: committed_tx,
            };
            std::thread::Builder::new()
                .name("trailkeep-indexer".into())
                .spawn(move || run(ledger, index, writer, objects, link))
                .expect("spawn the indexer thread")
        };
        Indexer {
            tx: Mutex::new(Some(tx)),
            committed,
            thread: Mutex::new(Some(thread)),
            pending,
            backlog,
        }
    }

    /// Queues committed records for indexing; `room` (ingest-queue permits) is given back when
    /// they have been added to the index writer.
    pub fn send(&self, jobs: Vec<IndexJob>, room: Option<OwnedSemaphorePermit>) {
        if jobs.is_empty() {
            return;
        }
        self.pending.fetch_add(jobs.len() as u64, Ordering::Relaxed);
        if let Some(tx) = self.tx.lock().expect("indexer lock").as_ref() {
            // Pushed under the sender's lock, so the backlog's order is the channel's.
            self.backlog.push(Instant::now());
            if tx.send(Message::Jobs(jobs, room)).is_err() {
                self.backlog.0.lock().expect("backlog lock").pop_back();
            }
        }
    }

    /// How long the oldest records not yet added to the index have waited.
    pub fn backlog_age(&self) -> Duration {
        self.backlog.age()
    }

    /// Deletes the documents of records whose bodies retention removed (committed with the
    /// next commit). Best effort: searches skip hits the ledger no longer has anyway.
    pub fn delete(&self, account: &str, ranges: Vec<(u64, u64)>) {
        if ranges.is_empty() {
            return;
        }
        self.pending.fetch_add(1, Ordering::Relaxed);
        if let Some(tx) = self.tx.lock().expect("indexer lock").as_ref() {
            let _ = tx.send(Message::Delete(account.to_string(), ranges));
        }
    }

    /// Follows the positions of the index's commits.
    pub fn committed(&self) -> tokio::sync::watch::Receiver<trailkeep_index::Positions> {
        self.committed.clone()
    }

    /// Records sent but not yet searchable.
    pub fn lag(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Waits until everything sent so far is committed and searchable (tests, shutdown, reindex).
    pub fn flush(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        if let Some(sender) = self.tx.lock().expect("indexer lock").as_ref()
            && sender.send(Message::Flush(tx)).is_ok()
        {
            let _ = rx.recv();
        }
    }

    /// Commits what is pending and stops the thread.
    pub fn shutdown(&self) {
        self.tx.lock().expect("indexer lock").take();
        if let Some(thread) = self.thread.lock().expect("indexer lock").take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Indexer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Adds one record to the index with what was derived for it (class, description, scopes).
pub fn add_with_derived(
    writer: &mut Writer,
    account: &str,
    index: u64,
    received_at: OffsetDateTime,
    event: &Value,
    derived: Option<&Derived>,
) -> trailkeep_index::Result<Added> {
    let scopes = object::scopes(event);
    let fields = derived.map(|d| DerivedFields {
        class: &d.class,
        description: &d.description,
        scopes: &scopes,
    });
    writer.add_derived(account, index, received_at, event, fields.as_ref())
}

/// What connects the indexer thread to the rest of the server.
struct Link {
    rx: Receiver<Message>,
    /// Jobs sent but not yet committed.
    pending: Arc<AtomicU64>,
    backlog: Arc<Backlog>,
    metrics: Arc<Metrics>,
    committed: tokio::sync::watch::Sender<trailkeep_index::Positions>,
}

fn run(
    ledger: Ledger,
    index: Arc<EventIndex>,
    mut writer: Writer,
    objects: Arc<ObjectStore>,
    link: Link,
) {
    let Link {
        rx,
        pending,
        backlog,
        metrics,
        committed: committed_positions,
    } = link;
    let mut uncommitted = 0usize;
    // Documents of the last commit: they choose the interval of the next one.
    let mut last_commit_docs = 0usize;
    let mut oldest: Option<Instant> = None;
    let mut flush_waiters: Vec<Sender<()>> = Vec::new();
    // Derivations since the last commit: committed just after the index, so the object store
    // never leads it (after a crash it lags, and the catch-up derives again what it lacks).
    let mut batch: Option<Batch> = None;
    // Set when a commit failed: until a catch-up from the ledger succeeds, records sent here are
    // not added (the catch-up reads them from the ledger, in order).
    let mut resync_due: Option<Instant> = None;
    // Where the last such catch-up ended, per account.
    let mut caught_up_to: Option<trailkeep_index::Positions> = None;
    loop {
        let interval = commit_interval(last_commit_docs);
        let timeout = match (oldest, resync_due) {
            (_, Some(due)) => due.saturating_duration_since(Instant::now()),
            (Some(t), None) => interval.saturating_sub(t.elapsed()),
            (None, None) => Duration::from_secs(3600),
        };
        let mut disconnected = false;
        match rx.recv_timeout(timeout) {
            Ok(Message::Jobs(jobs, room)) if resync_due.is_some() => {
                uncommitted += jobs.len();
                drop(room);
                backlog.pop();
            }
            Ok(Message::Jobs(mut jobs, room)) => {
                // Records sent while a catch-up was due are in the index already. (Jobs arrive
                // out of log order — each request sends its own after its append — so only
                // the catch-up's end positions tell what is in.)
                let sent = jobs.len();
                if let Some(caught_up) = &caught_up_to {
                    jobs.retain(|j| caught_up.get(&j.account).is_none_or(|&end| j.index > end));
                }
                uncommitted += sent;
                if batch.is_none() && !jobs.is_empty() {
                    match objects.begin() {
                        Ok(b) => batch = Some(b),
                        Err(e) => {
                            tracing::error!(error = %e, "object store unavailable; catching up from the ledger when it can");
                            resync_due = Some(Instant::now() + RESYNC_INTERVAL);
                        }
                    }
                }
                let derived = match batch.as_mut().map(|b| {
                    b.apply_all(
                        jobs.iter()
                            .map(|j| (j.account.as_str(), j.index, j.event.as_ref())),
                    )
                }) {
                    Some(Ok(derived)) => Some(derived),
                    Some(Err(e)) => {
                        tracing::error!(error = %e, "deriving object state failed; catching up from the ledger when it can");
                        resync_due = Some(Instant::now() + RESYNC_INTERVAL);
                        None
                    }
                    None => None,
                };
                // Without derivations the documents would lack their class and description:
                // the catch-up adds them whole instead.
                if let Some(derived) = derived {
                    for (job, derived) in jobs.iter().zip(&derived) {
                        if let Err(e) = add_with_derived(
                            &mut writer,
                            &job.account,
                            job.index,
                            job.received_at,
                            &job.event,
                            Some(derived),
                        ) {
                            tracing::error!(account = %job.account, index = job.index, error = %e, "indexing failed");
                        }
                    }
                }
                drop(jobs);
                drop(room);
                backlog.pop();
                oldest.get_or_insert_with(Instant::now);
            }
            Ok(Message::Delete(account, ranges)) => {
                // During a pending catch-up the entries stay (they are skipped when read).
                if resync_due.is_none() {
                    for (from, to) in ranges {
                        if let Err(e) = writer.delete_range(&account, from, to) {
                            tracing::warn!(%account, from, to, error = %e, "deleting removed records from the index failed");
                        }
                    }
                }
                uncommitted += 1;
                oldest.get_or_insert_with(Instant::now);
            }
            Ok(Message::Flush(reply)) => {
                flush_waiters.push(reply);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => disconnected = true,
        }
        // A read found a stored state it cannot read: the catch-up rebuilds the store.
        if resync_due.is_none() && objects.is_corrupt() {
            resync_due = Some(Instant::now());
        }
        if let Some(due) = resync_due {
            // What was derived since the last commit is derived again by the catch-up.
            batch = None;
            if Instant::now() >= due || disconnected {
                match resync(&ledger, &index, &mut writer, &objects) {
                    Ok(n) => {
                        tracing::info!(events = n, "search index caught up with the ledger again");
                        caught_up_to = Some(writer.positions().clone());
                        committed_positions.send_replace(writer.positions().clone());
                        resync_due = None;
                        pending.fetch_sub(uncommitted as u64, Ordering::Relaxed);
                        uncommitted = 0;
                        oldest = None;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "search index still cannot catch up with the ledger");
                        resync_due = Some(Instant::now() + RESYNC_INTERVAL);
                    }
                }
            }
        } else {
            let due = oldest.is_some_and(|t| t.elapsed() >= interval);
            if uncommitted > 0
                && (due || uncommitted >= COMMIT_BATCH || disconnected || !flush_waiters.is_empty())
            {
                // The index first, then the object store: the store never leads the index. The
                // new documents become searchable only after both, so that a search never shows
                // an event with object state that is not stored yet.
                let timing = &metrics.indexing;
                let started = Instant::now();
                let committed = writer.commit_hidden().map(|_| ());
                let started = timing.observe_commit("index", started);
                // The store must not get ahead: when the index commit failed, the store's batch
                // is dropped and derived again by the catch-up.
                let stored = committed.is_ok().then(|| batch.take().map(Batch::commit));
                batch = None;
                let started = timing.observe_commit("objects", started);
                let committed = committed.and_then(|()| index.reload());
                timing.observe_commit("reload", started);
                if committed.is_ok() {
                    committed_positions.send_replace(writer.positions().clone());
                }
                match (committed, stored) {
                    (Ok(()), None | Some(None) | Some(Some(Ok(())))) => {
                        pending.fetch_sub(uncommitted as u64, Ordering::Relaxed);
                        last_commit_docs = uncommitted;
                        uncommitted = 0;
                    }
                    (Err(e), _) => {
                        tracing::error!(error = %e, "index commit failed; catching up from the ledger when it can");
                        resync_due = Some(Instant::now() + RESYNC_INTERVAL);
                    }
                    (Ok(()), Some(Some(Err(e)))) => {
                        tracing::error!(error = %e, "object store commit failed; catching up from the ledger when it can");
                        resync_due = Some(Instant::now() + RESYNC_INTERVAL);
                    }
                }
                oldest = None;
            }
        }
        metrics
            .index_lag
            .set(pending.load(Ordering::Relaxed) as i64);
        for waiter in flush_waiters.drain(..) {
            let _ = waiter.send(());
        }
        if disconnected {
            if let Err(e) = writer.finish() {
                tracing::error!(error = %e, "closing the index writer failed");
            }
            return;
        }
    }
}

/// Drops what the writer holds uncommitted and catches the index and the object store up from
/// the ledger (see [`crate::core::catch_up`]). Returns the records indexed.
fn resync(
    ledger: &Ledger,
    index: &EventIndex,
    writer: &mut Writer,
    objects: &ObjectStore,
) -> Result<u64, crate::core::OpenError> {
    writer.rollback()?;
    Ok(crate::core::catch_up(ledger, index, writer, objects)?.indexed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backlog_ages_from_its_oldest_batch_and_empties_as_batches_are_added() {
        let backlog = Backlog::default();
        assert_eq!(backlog.age(), Duration::ZERO, "nothing waits");
        let old = Instant::now() - Duration::from_secs(3);
        backlog.push(old);
        backlog.push(Instant::now());
        assert!(
            backlog.age() >= Duration::from_secs(3),
            "the oldest batch counts"
        );
        backlog.pop();
        assert!(backlog.age() < Duration::from_secs(3), "then the next one");
        backlog.pop();
        assert_eq!(backlog.age(), Duration::ZERO);
        backlog.pop(); // popping an empty backlog is harmless
        assert_eq!(backlog.age(), Duration::ZERO);
    }

    #[test]
    fn commits_wait_longer_only_after_a_commit_that_showed_load() {
        assert_eq!(commit_interval(0), COMMIT_INTERVAL);
        assert_eq!(commit_interval(LOADED_COMMIT_DOCS - 1), COMMIT_INTERVAL);
        assert_eq!(commit_interval(LOADED_COMMIT_DOCS), LOADED_COMMIT_INTERVAL);
        assert_eq!(commit_interval(COMMIT_BATCH), LOADED_COMMIT_INTERVAL);
        // Either way a document waits less than the searchable target of one second.
        assert!(LOADED_COMMIT_INTERVAL < Duration::from_secs(1));
    }
}
