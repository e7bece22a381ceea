//! The client handle: configuration, `emit`, `flush`, `shutdown`.
//!
//! Owns: the state shared between the callers and the sending thread ([`Shared`]): the bounded
//! in-memory queue, the spool writer and the switch between the two. Must never: block a caller of
//! [`Client::emit`] on the network, on a lock held across I/O other than one spool append, or on
//! a full queue.
//!
//! **Ordering.** Events are sent in the order they were emitted. While the spool holds unsent
//! events ("spooling"), every new event is appended behind them, so the spool replays in emit
//! order; the client returns to the in-memory queue only once the spool is drained. When the queue
//! overflows, or a send fails, the whole queue — including a batch in flight — moves to the spool
//! in order. (A batch in flight that the server then does acknowledge is skipped on replay by id.)

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{Notify, oneshot, watch};

use crate::event::Event;
use crate::metrics::{Failure, Metrics, NoMetrics};
use crate::spool::{Opened, Record, Spool, SpoolError, SpoolLimits};
use crate::transport::{Transport, TransportConfig, TransportError};
use crate::worker::Worker;

/// Why [`Client::emit`] did not take an event. The event is lost; the metrics hook saw it too.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmitError {
    /// The queue is full and the event could not be spooled.
    #[error("the audit queue is full and the event could not be spooled")]
    QueueFull,
    /// The spool is full or failed.
    #[error("the audit spool cannot take the event: {0}")]
    Spool(String),
    /// The client was shut down.
    #[error("the audit client is shut down")]
    Closed,
}

/// Errors from [`ClientBuilder::build`].
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The URL, key or TLS settings are unusable.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The spool could not be opened.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The sending thread could not start.
    #[error("cannot start the sending thread: {0}")]
    Thread(std::io::Error),
    /// A setting is out of range.
    #[error("{0}")]
    Invalid(&'static str),
}

/// [`Client::flush`] or [`Client::shutdown`] could not complete because the sending thread is gone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the audit client's sending thread has stopped")]
pub struct Stopped;

/// What [`Client::shutdown`] left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Events remain in the spool; the next client opened on the same spool directory sends them.
    pub spool_backlog: bool,
}

/// Sizes and times of the sending pipeline.
#[derive(Debug, Clone)]
pub(crate) struct Tuning {
    pub queue_capacity: usize,
    pub batch_size: usize,
    pub batch_bytes: usize,
    pub linger: Duration,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub shutdown_timeout: Duration,
}

/// An event waiting in memory, with its emit sequence number.
#[derive(Debug)]
pub(crate) struct Queued {
    pub seq: u64,
    pub record: Record,
}

/// State shared by callers and the sending thread, under one lock.
#[derive(Debug)]
pub(crate) struct State {
    pub queue: VecDeque<Queued>,
    pub next_seq: u64,
    /// The spool holds unsent events: new events go behind them.
    pub spooling: bool,
    pub spool: Option<Spool>,
    /// Ids of events that were spilled while in flight and then acknowledged.
    pub skip: HashSet<Arc<str>>,
    /// Flush requests: (first sequence number not covered, completion).
    pub flushes: Vec<(u64, oneshot::Sender<()>)>,
    pub closing: Option<Instant>,
    /// The sending thread has finished: nothing will answer a flush any more.
    pub stopped: bool,
}

impl State {
    /// The lowest sequence number not yet handed off (sent, given up on, or spooled).
    pub fn low_water(&self) -> u64 {
        self.queue.front().map_or(self.next_seq, |q| q.seq)
    }

    /// Moves the whole queue, in order, behind what the spool holds, and switches to spooling.
    /// Events the spool cannot take are reported and dropped.
    pub fn spill(&mut self, metrics: &dyn Metrics) {
        let Some(spool) = self.spool.as_mut() else {
            return;
        };
        self.spooling = true;
        if self.queue.is_empty() {
            return;
        }
        let records: Vec<Record> = self.queue.iter().map(|q| q.record.clone()).collect();
        self.queue.clear();
        let mut done = 0;
        while done < records.len() {
            match spool.append(&records[done..]) {
                Ok(n) => done += n,
                Err(e) => {
                    let failure = spool_failure(&e);
                    tracing::error!(error = %e, dropped = records.len() - done, "trailkeep-client: the spool cannot take events; they are lost");
                    for _ in done..records.len() {
                        metrics.failed(&failure);
                    }
                    break;
                }
            }
        }
        if done > 0 {
            metrics.spooled(done as u64);
        }
    }
}

fn spool_failure(e: &SpoolError) -> Failure {
    match e {
        SpoolError::Full { .. } => Failure::SpoolFull,
        other => Failure::SpoolWrite(other.to_string()),
    }
}

/// What callers and the sending thread share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub state: Mutex<State>,
    /// Wakes the sending thread: events are waiting, a flush was asked for, or shutdown began.
    pub wake: Notify,
    /// Cuts a retry pause short: shutdown or a flush.
    pub interrupt: Notify,
    pub closing: AtomicBool,
    pub metrics: Arc<dyn Metrics>,
    pub tuning: Tuning,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the queue consistent (every change is one step),
        // so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Sends audit events to a Trailkeep server without ever blocking the caller on the network.
///
/// Cheap to clone; all clones share one queue, spool and sending thread. The sending thread stops
/// after [`Client::shutdown`], or when the last clone is dropped (then it tries, for the shutdown
/// timeout, to send or spool what is queued).
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Handle>,
}

#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
    done: watch::Receiver<Option<ShutdownReport>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        begin_close(&self.shared);
    }
}

fn begin_close(shared: &Shared) {
    {
        let mut st = shared.lock();
        if st.closing.is_none() {
            st.closing = Some(Instant::now() + shared.tuning.shutdown_timeout);
        }
    }
    shared.closing.store(true, Ordering::Release);
    shared.wake.notify_one();
    shared.interrupt.notify_one();
}

impl Client {
    /// Starts configuring a client for the server at `url` (e.g. `https://audit.example.com:7700`)
    /// with an API key allowed to write events.
    pub fn builder(url: impl AsRef<str>, key: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(url.as_ref(), key.into())
    }

    /// Hands an event to the sending thread and returns at once.
    ///
    /// The event goes into the in-memory queue; when the queue is full, or while the spool holds
    /// unsent events, it is appended to the spool instead (one buffered file write). Without a
    /// spool, a full queue drops the event and says so.
    pub fn emit(&self, event: Event) -> Result<(), EmitError> {
        let record = Record {
            id: Arc::from(event.id()),
            line: Bytes::from(event.to_json_line()),
        };
        self.emit_record(record)
    }

    fn emit_record(&self, record: Record) -> Result<(), EmitError> {
        let shared = &self.inner.shared;
        let tuning = &shared.tuning;
        let metrics = &*shared.metrics;
        let mut st = shared.lock();
        if st.closing.is_some() {
            drop(st);
            metrics.failed(&Failure::Shutdown);
            return Err(EmitError::Closed);
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        if st.spooling {
            let spool = st.spool.as_mut().expect("spooling implies a spool");
            let result = spool.append(std::slice::from_ref(&record));
            drop(st);
            return match result {
                Ok(_) => {
                    metrics.spooled(1);
                    shared.wake.notify_one();
                    Ok(())
                }
                Err(e) => {
                    let failure = spool_failure(&e);
                    tracing::error!(error = %e, id = %record.id, "trailkeep-client: audit event lost: the spool cannot take it");
                    metrics.failed(&failure);
                    Err(EmitError::Spool(e.to_string()))
                }
            };
        }
        if st.queue.len() < tuning.queue_capacity {
            st.queue.push_back(Queued { seq, record });
            let len = st.queue.len();
            drop(st);
            metrics.queued(1);
            if len == 1 || len == tuning.batch_size {
                shared.wake.notify_one();
            }
            return Ok(());
        }
        if st.spool.is_some() {
            st.queue.push_back(Queued { seq, record });
            st.spill(metrics);
            drop(st);
            tracing::warn!("trailkeep-client: the audit queue is full; spooling to disk");
            shared.wake.notify_one();
            return Ok(());
        }
        drop(st);
        tracing::error!(id = %record.id, "trailkeep-client: audit event lost: the queue is full and no spool is configured");
        metrics.failed(&Failure::QueueFull);
        Err(EmitError::QueueFull)
    }

    /// Completes when every event emitted before the call has been acknowledged by the server,
    /// given up on (see the metrics hooks), or written to the spool and fsynced.
    ///
    /// Without a spool and with the server unreachable, this waits until the server is back:
    /// bound it with `tokio::time::timeout` if needed.
    pub async fn flush(&self) -> Result<(), Stopped> {
        let shared = &self.inner.shared;
        let (tx, rx) = oneshot::channel();
        {
            let mut st = shared.lock();
            if st.stopped {
                // Everything was sent, spooled or reported when the thread stopped.
                return Ok(());
            }
            let target = st.next_seq;
            st.flushes.push((target, tx));
        }
        shared.wake.notify_one();
        shared.interrupt.notify_one();
        rx.await.map_err(|_| Stopped)
    }

    /// Stops taking events, sends what is queued (for at most the shutdown timeout), spools what
    /// could not be sent, fsyncs the spool and stops the sending thread. Later [`emit`](Self::emit)
    /// calls fail with [`EmitError::Closed`]. Safe to call more than once.
    pub async fn shutdown(&self) -> Result<ShutdownReport, Stopped> {
        begin_close(&self.inner.shared);
        let mut done = self.inner.done.clone();
        let result = done.wait_for(Option::is_some).await;
        match result {
            Ok(report) => Ok((*report).expect("waited for Some")),
            Err(_) => Err(Stopped),
        }
    }

    /// Events waiting in memory, and whether the spool holds unsent events.
    pub fn backlog(&self) -> (usize, bool) {
        let st = self.inner.shared.lock();
        (st.queue.len(), st.spooling)
    }
}

/// Configures a [`Client`]; see [`Client::builder`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    url: String,
    key: String,
    connect_timeout: Duration,
    request_timeout: Duration,
    extra_roots: Vec<Vec<u8>>,
    builtin_roots: bool,
    tuning: Tuning,
    spool_dir: Option<PathBuf>,
    spool_limits: SpoolLimits,
    metrics: Option<Arc<dyn Metrics>>,
}

impl ClientBuilder {
    fn new(url: &str, key: String) -> Self {
        ClientBuilder {
            url: url.to_string(),
            key,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            extra_roots: Vec::new(),
            builtin_roots: true,
            tuning: Tuning {
                queue_capacity: 10_000,
                batch_size: 500,
                batch_bytes: 4 * 1024 * 1024,
                linger: Duration::from_millis(100),
                initial_backoff: Duration::from_millis(200),
                max_backoff: Duration::from_secs(10),
                shutdown_timeout: Duration::from_secs(10),
            },
            spool_dir: None,
            spool_limits: SpoolLimits {
                segment_bytes: 8 * 1024 * 1024,
                max_bytes: 1024 * 1024 * 1024,
            },
            metrics: None,
        }
    }

    /// TCP and TLS connect timeout (default 5 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Timeout of one ingest request, answer included (default 30 s).
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }

    /// Also trusts the CA certificate(s) in this PEM data (e.g. a private CA of a self-hosted
    /// Trailkeep).
    pub fn add_root_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.extra_roots.push(pem.into());
        self
    }

    /// Whether the built-in web PKI roots are trusted (default true). Turn off to trust only the
    /// certificates added with [`add_root_certificate_pem`](Self::add_root_certificate_pem).
    pub fn tls_built_in_roots(mut self, on: bool) -> Self {
        self.builtin_roots = on;
        self
    }

    /// Events the in-memory queue holds (default 10,000). Past it, events go to the spool.
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.tuning.queue_capacity = n;
        self
    }

    /// Most events in one request (default 500).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.tuning.batch_size = n;
        self
    }

    /// About the most JSON bytes in one request (default 4 MiB; the server's default limit is
    /// 16 MiB).
    pub fn batch_bytes(mut self, n: usize) -> Self {
        self.tuning.batch_bytes = n;
        self
    }

    /// How long the first queued event may wait for others to fill a batch (default 100 ms).
    pub fn linger(mut self, d: Duration) -> Self {
        self.tuning.linger = d;
        self
    }

    /// The first retry pause (default 200 ms); each further retry doubles it, up to
    /// [`max_backoff`](Self::max_backoff), with random jitter. A server's `Retry-After` is a
    /// minimum.
    pub fn initial_backoff(mut self, d: Duration) -> Self {
        self.tuning.initial_backoff = d;
        self
    }

    /// The longest retry pause (default 10 s): how late, at worst, sending resumes after an outage.
    pub fn max_backoff(mut self, d: Duration) -> Self {
        self.tuning.max_backoff = d;
        self
    }

    /// How long [`Client::shutdown`] keeps trying to send queued events before spooling them
    /// (default 10 s).
    pub fn shutdown_timeout(mut self, d: Duration) -> Self {
        self.tuning.shutdown_timeout = d;
        self
    }

    /// Keeps events that cannot be sent in this directory and sends them, in order, when the
    /// server is back — also after a restart. One client per directory at a time.
    pub fn spool_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spool_dir = Some(dir.into());
        self
    }

    /// Largest total size of the spool files (default 1 GiB). Past it, events are dropped and
    /// reported as [`Failure::SpoolFull`].
    pub fn spool_max_bytes(mut self, n: u64) -> Self {
        self.spool_limits.max_bytes = n;
        self
    }

    /// Size at which a spool file is closed and the next one started (default 8 MiB).
    pub fn spool_segment_bytes(mut self, n: u64) -> Self {
        self.spool_limits.segment_bytes = n;
        self
    }

    /// Where to report what happens to events (default: nowhere; failures are also logged with
    /// `tracing`).
    pub fn metrics(mut self, metrics: Arc<dyn Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Opens the spool (if any), starts the sending thread and returns the client. Needs no async
    /// runtime.
    pub fn build(self) -> Result<Client, BuildError> {
        let t = &self.tuning;
        if t.queue_capacity == 0 || t.batch_size == 0 || t.batch_bytes == 0 {
            return Err(BuildError::Invalid(
                "queue_capacity, batch_size and batch_bytes must be positive",
            ));
        }
        if t.initial_backoff.is_zero() || t.max_backoff < t.initial_backoff {
            return Err(BuildError::Invalid(
                "initial_backoff must be positive and at most max_backoff",
            ));
        }
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| TransportError::Url(self.url.clone(), e.to_string()))?;
        let transport = Transport::new(&TransportConfig {
            url,
            key: self.key,
            connect_timeout: self.connect_timeout,
            request_timeout: self.request_timeout,
            extra_roots: self.extra_roots,
            builtin_roots: self.builtin_roots,
        })?;
        let (spool, reader, backlog) = match &self.spool_dir {
            Some(dir) => {
                let Opened {
                    spool,
                    reader,
                    has_backlog,
                } = Spool::open(dir, self.spool_limits)?;
                (Some(spool), Some(reader), has_backlog)
            }
            None => (None, None, false),
        };
        let metrics = self.metrics.unwrap_or_else(|| Arc::new(NoMetrics));
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                next_seq: 0,
                spooling: backlog,
                spool,
                skip: HashSet::new(),
                flushes: Vec::new(),
                closing: None,
                stopped: false,
            }),
            wake: Notify::new(),
            interrupt: Notify::new(),
            closing: AtomicBool::new(false),
            metrics,
            tuning: self.tuning,
        });
        let (done_tx, done) = watch::channel(None);
        let worker = Worker::new(shared.clone(), transport, reader, done_tx);
        std::thread::Builder::new()
            .name("trailkeep-client".into())
            .spawn(move || worker.run())
            .map_err(BuildError::Thread)?;
        Ok(Client {
            inner: Arc::new(Handle { shared, done }),
        })
    }
}
