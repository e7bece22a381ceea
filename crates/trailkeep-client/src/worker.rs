//! The sending thread: batches the queue, replays the spool, retries with backoff, answers flushes
//! and shuts down.
//!
//! Owns: everything that waits — on timers, the network and the disk (spool reads, fsyncs, the
//! ack file). It runs on its own thread with a single-threaded tokio runtime, so it never competes
//! with the application's runtime and needs none. Must never: hold the state lock across a network
//! call or an fsync.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::client::{Queued, Shared, ShutdownReport};
use crate::metrics::Failure;
use crate::spool::{Pos, Record, SpoolReader};
use crate::transport::{ItemResult, SendOutcome, Transport};

/// Exponential backoff with jitter: the n-th pause is uniformly random in
/// `[d/2, d]` where `d = min(initial · 2ⁿ, max)`; a server's `Retry-After` is a minimum.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

impl Backoff {
    /// A fresh backoff.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            attempt: 0,
        }
    }

    /// The pause before the next attempt.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Duration {
        let factor = 1u32 << self.attempt.min(20);
        let d = self.initial.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = d / 2;
        let jitter = Duration::from_nanos(fastrand::u64(0..=half.as_nanos() as u64));
        let delay = half + jitter;
        match retry_after {
            Some(r) => delay.max(r.min(MAX_RETRY_AFTER)),
            None => delay,
        }
    }

    /// Retries so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// After a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// The result of sending one event.
#[derive(Debug, Clone)]
enum Outcome {
    Item(ItemResult),
    Refused { status: u16, message: String },
}

/// A retryable failure part-way through a batch: the first `done` events have outcomes.
#[derive(Debug)]
struct Retry {
    outcomes: Vec<Outcome>,
    error: String,
    retry_after: Option<Duration>,
}

pub(crate) struct Worker {
    shared: Arc<Shared>,
    transport: Transport,
    reader: Option<SpoolReader>,
    done: watch::Sender<Option<ShutdownReport>>,
    backoff: Backoff,
    /// Largest batch, lowered when the server answers 413.
    batch_limit: usize,
}

enum Replay {
    Progress,
    Failed(Duration),
}

impl Worker {
    pub fn new(
        shared: Arc<Shared>,
        transport: Transport,
        reader: Option<SpoolReader>,
        done: watch::Sender<Option<ShutdownReport>>,
    ) -> Self {
        let t = &shared.tuning;
        Worker {
            backoff: Backoff::new(t.initial_backoff, t.max_backoff),
            batch_limit: t.batch_size,
            shared,
            transport,
            reader,
            done,
        }
    }

    /// The thread's body.
    pub fn run(mut self) {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => {
                let run = std::panic::AssertUnwindSafe(|| rt.block_on(self.main_loop()));
                if std::panic::catch_unwind(run).is_err() {
                    tracing::error!(
                        "trailkeep-client: the sending thread panicked; spooling what is left"
                    );
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "trailkeep-client: cannot start the sending runtime; spooling everything")
            }
        }
        self.finish();
    }

    async fn main_loop(&mut self) {
        loop {
            self.service_flushes();
            let (spooling, closing, queued) = {
                let st = self.shared.lock();
                (st.spooling, st.closing, st.queue.len())
            };
            if closing.is_some_and(|d| Instant::now() >= d) {
                return;
            }
            if spooling {
                match self.replay_step().await {
                    Replay::Progress => {}
                    Replay::Failed(_) if closing.is_some() => return,
                    Replay::Failed(delay) => self.pause(delay).await,
                }
                continue;
            }
            if closing.is_some() && queued == 0 {
                return;
            }
            let Some(batch) = self.wait_for_batch().await else {
                continue;
            };
            let records: Vec<Record> = batch.iter().map(|(_, r)| r.clone()).collect();
            let first_seq = batch[0].0;
            match self.send_records(&records).await {
                Ok(outcomes) => {
                    self.report(&records, &outcomes);
                    self.complete(first_seq, &records);
                    self.backoff.reset();
                }
                Err(retry) => {
                    let done = retry.outcomes.len();
                    self.report(&records[..done], &retry.outcomes);
                    self.complete(first_seq, &records[..done]);
                    let delay = self.retry_delay(&retry);
                    let has_spool = {
                        let mut st = self.shared.lock();
                        if st.spool.is_some() {
                            st.spill(&*self.shared.metrics);
                            true
                        } else {
                            false
                        }
                    };
                    if has_spool {
                        tracing::warn!(error = %retry.error, "trailkeep-client: cannot reach Trailkeep; spooling audit events to disk");
                        if closing.is_some() {
                            return;
                        }
                    }
                    self.pause(delay).await;
                }
            }
        }
    }

    fn retry_delay(&mut self, retry: &Retry) -> Duration {
        let delay = self.backoff.next_delay(retry.retry_after);
        self.shared
            .metrics
            .retrying(self.backoff.attempts(), delay, &retry.error);
        tracing::debug!(error = %retry.error, ?delay, "trailkeep-client: send failed; retrying");
        delay
    }

    /// Waits until a batch is due and returns it (still at the front of the queue); `None` when the
    /// mode changed, a flush needs answering, or shutdown began with nothing queued.
    async fn wait_for_batch(&self) -> Option<Vec<(u64, Record)>> {
        let tuning = &self.shared.tuning;
        let mut deadline: Option<Instant> = None;
        loop {
            {
                let st = self.shared.lock();
                if st.spooling {
                    return None;
                }
                let n = st.queue.len();
                if n == 0 {
                    if st.closing.is_some() || !st.flushes.is_empty() {
                        return None;
                    }
                    deadline = None;
                } else {
                    let due = n >= tuning.batch_size
                        || !st.flushes.is_empty()
                        || st.closing.is_some()
                        || deadline.is_some_and(|d| Instant::now() >= d);
                    if due {
                        let mut bytes = 0;
                        let mut out = Vec::new();
                        for q in st.queue.iter() {
                            if out.len() >= self.batch_limit
                                || (!out.is_empty()
                                    && bytes + q.record.line.len() > tuning.batch_bytes)
                            {
                                break;
                            }
                            bytes += q.record.line.len();
                            out.push((q.seq, q.record.clone()));
                        }
                        return Some(out);
                    }
                    if deadline.is_none() {
                        deadline = Some(Instant::now() + tuning.linger);
                    }
                }
            }
            match deadline {
                Some(d) => {
                    tokio::select! {
                        () = self.shared.wake.notified() => {}
                        () = tokio::time::sleep_until(d.into()) => {}
                    }
                }
                None => self.shared.wake.notified().await,
            }
        }
    }

    /// Removes sent events from the front of the queue; events spilled to the spool while in
    /// flight are remembered so the replay skips them.
    fn complete(&self, first_seq: u64, records: &[Record]) {
        if records.is_empty() {
            return;
        }
        let end_seq = first_seq + records.len() as u64;
        let mut st = self.shared.lock();
        let mut popped = 0;
        while st
            .queue
            .front()
            .is_some_and(|q| q.seq >= first_seq && q.seq < end_seq)
        {
            st.queue.pop_front();
            popped += 1;
        }
        if popped < records.len() {
            for r in &records[popped..] {
                st.skip.insert(r.id.clone());
            }
        }
    }

    /// One batch from the spool.
    async fn replay_step(&mut self) -> Replay {
        let end = {
            let st = self.shared.lock();
            st.spool.as_ref().expect("spooling implies a spool").end()
        };
        let batch = {
            let reader = self.reader.as_mut().expect("spooling implies a reader");
            reader.read(end, self.batch_limit, self.shared.tuning.batch_bytes)
        };
        for d in &batch.damage {
            tracing::error!(segment = d.segment, offset = d.offset, reason = %d.reason,
                "trailkeep-client: skipped a damaged spool record; its audit event is lost");
            self.shared.metrics.failed(&Failure::SpoolCorrupt {
                segment: d.segment,
                offset: d.offset,
                reason: d.reason.clone(),
            });
        }
        let mut records = Vec::with_capacity(batch.records.len());
        let mut ends = Vec::with_capacity(batch.records.len());
        {
            let mut st = self.shared.lock();
            for (r, e) in batch.records.into_iter().zip(batch.ends) {
                if !st.skip.remove(&r.id) {
                    records.push(r);
                    ends.push(e);
                }
            }
        }
        if records.is_empty() {
            if let Some(e) = batch.end {
                self.ack(e);
            }
            let mut st = self.shared.lock();
            let reader_pos = self.reader.as_ref().expect("reader").pos();
            let spool_end = st.spool.as_ref().expect("spool").end();
            if reader_pos >= spool_end {
                st.spooling = false;
                st.skip.clear();
                drop(st);
                tracing::info!("trailkeep-client: spool drained; back to the in-memory queue");
            }
            return Replay::Progress;
        }
        match self.send_records(&records).await {
            Ok(outcomes) => {
                self.report(&records, &outcomes);
                if let Some(e) = batch.end {
                    self.ack(e);
                }
                self.backoff.reset();
                Replay::Progress
            }
            Err(retry) => {
                let done = retry.outcomes.len();
                self.report(&records[..done], &retry.outcomes);
                if done > 0 {
                    self.ack(ends[done - 1]);
                }
                self.reader.as_mut().expect("reader").rewind();
                Replay::Failed(self.retry_delay(&retry))
            }
        }
    }

    fn ack(&mut self, pos: Pos) {
        let reader = self.reader.as_mut().expect("reader");
        match reader.ack(pos) {
            Ok(0) => {}
            Ok(freed) => {
                if let Some(spool) = self.shared.lock().spool.as_mut() {
                    spool.forget_bytes(freed);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "trailkeep-client: cannot record spool progress; events may be resent (the server ignores duplicates)");
            }
        }
    }

    /// Sends `records` in order, in pieces no larger than the server accepts.
    async fn send_records(&mut self, records: &[Record]) -> Result<Vec<Outcome>, Retry> {
        let mut outcomes = Vec::with_capacity(records.len());
        let mut i = 0;
        while i < records.len() {
            let size = self.batch_limit.min(records.len() - i);
            let chunk = &records[i..i + size];
            match self.transport.send(chunk).await {
                SendOutcome::Done(items) => {
                    outcomes.extend(items.into_iter().map(Outcome::Item));
                    i += size;
                }
                SendOutcome::TooLarge if size > 1 => {
                    self.batch_limit = (size / 2).max(1);
                    tracing::warn!(
                        batch = self.batch_limit,
                        "trailkeep-client: the server refused a batch as too large; sending smaller batches"
                    );
                }
                SendOutcome::TooLarge => {
                    outcomes.push(Outcome::Refused {
                        status: 413,
                        message: "the event is larger than the server accepts".into(),
                    });
                    i += 1;
                }
                SendOutcome::Refused { status, message } => {
                    for _ in 0..size {
                        outcomes.push(Outcome::Refused {
                            status,
                            message: message.clone(),
                        });
                    }
                    i += size;
                }
                SendOutcome::Retry { error, retry_after } => {
                    return Err(Retry {
                        outcomes,
                        error,
                        retry_after,
                    });
                }
            }
        }
        Ok(outcomes)
    }

    fn report(&self, records: &[Record], outcomes: &[Outcome]) {
        let metrics = &*self.shared.metrics;
        let mut sent = 0;
        for (r, o) in records.iter().zip(outcomes) {
            match o {
                Outcome::Item(ItemResult::Accepted { .. }) => sent += 1,
                Outcome::Item(ItemResult::Rejected(errors)) => {
                    tracing::warn!(id = %r.id, ?errors, "trailkeep-client: the server rejected an audit event");
                    metrics.failed(&Failure::Rejected {
                        id: r.id.to_string(),
                        errors: errors.clone(),
                    });
                }
                Outcome::Item(ItemResult::Dropped { reason }) => {
                    tracing::warn!(id = %r.id, %reason, "trailkeep-client: the server's routing dropped an audit event (stored nowhere)");
                    metrics.failed(&Failure::Dropped {
                        id: r.id.to_string(),
                        reason: reason.clone(),
                    });
                }
                Outcome::Refused { status, message } => {
                    tracing::error!(id = %r.id, status, %message, "trailkeep-client: the server refused an audit event");
                    metrics.failed(&Failure::Refused {
                        id: r.id.to_string(),
                        status: *status,
                        message: message.clone(),
                    });
                }
            }
        }
        if sent > 0 {
            metrics.sent(sent);
        }
    }

    /// Sleeps `delay` (cut short by the shutdown deadline), answering flushes meanwhile.
    async fn pause(&self, delay: Duration) {
        let until = Instant::now() + delay;
        loop {
            let closing = self.shared.lock().closing;
            let until = match closing {
                Some(d) => until.min(d),
                None => until,
            };
            if Instant::now() >= until {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep_until(until.into()) => return,
                () = self.shared.interrupt.notified() => self.service_flushes(),
            }
        }
    }

    /// Answers the flushes whose events have all been handed off, after an fsync of the spool.
    fn service_flushes(&self) {
        let (ready, files) = {
            let mut st = self.shared.lock();
            if st.flushes.is_empty() {
                return;
            }
            let low = st.low_water();
            let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut st.flushes)
                .into_iter()
                .partition(|(t, _)| *t <= low);
            st.flushes = waiting;
            let files = match (&mut st.spool, ready.is_empty()) {
                (Some(spool), false) => spool.files_to_sync(),
                _ => Vec::new(),
            };
            (ready, files)
        };
        for f in files {
            if let Err(e) = f.sync_data() {
                tracing::error!(error = %e, "trailkeep-client: cannot fsync the spool");
            }
        }
        for (_, tx) in ready {
            let _ = tx.send(());
        }
    }

    /// After the loop: spool or give up on what is left, fsync, report.
    fn finish(&mut self) {
        let metrics = self.shared.metrics.clone();
        let (lost, files, flushes, backlog) = {
            let mut st = self.shared.lock();
            st.closing.get_or_insert_with(Instant::now);
            let lost: Vec<Queued> = if st.spool.is_some() {
                if !st.queue.is_empty() {
                    st.spill(&*metrics);
                }
                Vec::new()
            } else {
                st.queue.drain(..).collect()
            };
            let files = st
                .spool
                .as_mut()
                .map(|s| s.files_to_sync())
                .unwrap_or_default();
            let flushes = std::mem::take(&mut st.flushes);
            st.stopped = true;
            (lost, files, flushes, st.spooling)
        };
        self.shared.closing.store(true, Ordering::Release);
        if !lost.is_empty() {
            tracing::error!(
                lost = lost.len(),
                "trailkeep-client: shut down with unsent audit events and no spool; they are lost"
            );
            for _ in &lost {
                metrics.failed(&Failure::Shutdown);
            }
        }
        for f in files {
            if let Err(e) = f.sync_data() {
                tracing::error!(error = %e, "trailkeep-client: cannot fsync the spool");
            }
        }
        for (_, tx) in flushes {
            let _ = tx.send(());
        }
        let _ = self.done.send(Some(ShutdownReport {
            spool_backlog: backlog,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_maximum_and_honours_retry_after() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let bounds = [
            (50, 100),
            (100, 200),
            (200, 400),
            (400, 800),
            (500, 1000),
            (500, 1000),
        ];
        for (lo, hi) in bounds {
            let d = b.next_delay(None);
            assert!(
                d >= Duration::from_millis(lo) && d <= Duration::from_millis(hi),
                "{d:?} not in {lo}..={hi} ms"
            );
        }
        assert_eq!(
            b.next_delay(Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        b.reset();
        assert!(b.next_delay(None) <= Duration::from_millis(100));
    }
}
