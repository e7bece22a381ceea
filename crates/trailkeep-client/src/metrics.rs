//! Metrics hooks: what happened to each event, for the service's own metrics system.
//!
//! Owns: the [`Metrics`] trait (every method has a no-op default) and [`Counters`], a ready-made
//! implementation with atomic counters. Must never: block — hooks are called on the caller's
//! request path ([`Metrics::queued`], [`Metrics::spooled`]) and on the sending thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// One error the server reported for a rejected event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemError {
    /// The JSON path of the offending field (`""` for the whole event).
    pub path: String,
    /// The rule it broke.
    pub reason: String,
}

/// Why an event was given up on. Each is also logged with `tracing`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The server rejected the event; resending it would not help.
    Rejected {
        /// The event id.
        id: String,
        /// The server's errors, each with its JSON path.
        errors: Vec<ItemError>,
    },
    /// The server refused the whole request with a status that retrying cannot fix (a 4xx other
    /// than 401, 403, 404, 408, 413 and 429).
    Refused {
        /// The event id.
        id: String,
        /// The HTTP status.
        status: u16,
        /// The server's error message.
        message: String,
    },
    /// The server accepted the event as valid but its routing stored it nowhere (no route took
    /// it and no default target is set); resending it would not help.
    Dropped {
        /// The event id.
        id: String,
        /// The server's reason.
        reason: String,
    },
    /// The in-memory queue was full and there is no spool (or the spool is full or failed).
    QueueFull,
    /// The spool reached its size limit.
    SpoolFull,
    /// Writing to the spool failed.
    SpoolWrite(String),
    /// A damaged spool record (torn write or bit rot) was skipped; its event is lost.
    SpoolCorrupt {
        /// The spool segment file.
        segment: u64,
        /// The byte offset of the damaged record.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// The client was shut down before the event could be sent or spooled.
    Shutdown,
}

/// Hooks called as events move through the client. Implement the ones you need.
pub trait Metrics: Send + Sync + std::fmt::Debug + 'static {
    /// `n` events entered the in-memory queue.
    fn queued(&self, n: u64) {
        let _ = n;
    }
    /// `n` events were written to the disk spool.
    fn spooled(&self, n: u64) {
        let _ = n;
    }
    /// The server acknowledged `n` events as durable (including resent duplicates).
    fn sent(&self, n: u64) {
        let _ = n;
    }
    /// An event was given up on.
    fn failed(&self, failure: &Failure) {
        let _ = failure;
    }
    /// A request failed with a retryable error; the next attempt follows after `delay`.
    fn retrying(&self, attempt: u32, delay: Duration, error: &str) {
        let _ = (attempt, delay, error);
    }
}

/// The default hooks: do nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoMetrics;

impl Metrics for NoMetrics {}

/// Atomic counters of every hook; share one through an `Arc` and read it with
/// [`Counters::snapshot`].
#[derive(Debug, Default)]
pub struct Counters {
    queued: AtomicU64,
    spooled: AtomicU64,
    sent: AtomicU64,
    failed: AtomicU64,
    rejected: AtomicU64,
    dropped: AtomicU64,
    retries: AtomicU64,
}

/// The values of [`Counters`] at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Events that entered the in-memory queue.
    pub queued: u64,
    /// Events written to the spool.
    pub spooled: u64,
    /// Events the server acknowledged.
    pub sent: u64,
    /// Events given up on (all causes).
    pub failed: u64,
    /// Of `failed`, events the server rejected.
    pub rejected: u64,
    /// Of `failed`, events the server's routing dropped (stored nowhere).
    pub dropped: u64,
    /// Requests that were retried.
    pub retries: u64,
}

impl Counters {
    /// New counters at zero.
    pub fn new() -> Self {
        Counters::default()
    }

    /// The current values.
    pub fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            queued: self.queued.load(Ordering::Relaxed),
            spooled: self.spooled.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }
}

impl Metrics for Counters {
    fn queued(&self, n: u64) {
        self.queued.fetch_add(n, Ordering::Relaxed);
    }
    fn spooled(&self, n: u64) {
        self.spooled.fetch_add(n, Ordering::Relaxed);
    }
    fn sent(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::Relaxed);
    }
    fn failed(&self, failure: &Failure) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        match failure {
            Failure::Rejected { .. } => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
            }
            Failure::Dropped { .. } => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
    fn retrying(&self, _attempt: u32, _delay: Duration, _error: &str) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }
}

impl<M: Metrics> Metrics for std::sync::Arc<M> {
    fn queued(&self, n: u64) {
        (**self).queued(n);
    }
    fn spooled(&self, n: u64) {
        (**self).spooled(n);
    }
    fn sent(&self, n: u64) {
        (**self).sent(n);
    }
    fn failed(&self, failure: &Failure) {
        (**self).failed(failure);
    }
    fn retrying(&self, attempt: u32, delay: Duration, error: &str) {
        (**self).retrying(attempt, delay, error);
    }
}
