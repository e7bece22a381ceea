//! Rust SDK for [Trailkeep](https://example.invalid/trailkeep), the self-hostable, tamper-evident
//! audit-event tracker: emit correct CADF / Activity Tracker events without ever slowing a request
//! down, and without losing them when Trailkeep is briefly unreachable.
//!
//! * [`Event::builder`] makes events the server accepts: an action of the form
//!   `service.objectType.verb`, an outcome, an initiator, a target, a reason, request and response
//!   data, a correlation id, a `logSourceCRN`, and an `id` fixed once so that every retry is the
//!   same event (the server stores an `(account, id)` once).
//! * [`Client::emit`] puts the event in a bounded in-memory queue and returns. A background
//!   thread sends batches (by size and time) as NDJSON to `POST /v1/events`, retries connection
//!   errors, 5xx and 429 with exponential backoff and jitter (honouring `Retry-After`), and reports
//!   events the server rejects through the [`Metrics`] hooks and `tracing` instead of retrying
//!   them forever.
//! * With a [spool directory](ClientBuilder::spool_dir), events that cannot be sent — the server is
//!   down, or the queue is full — go to append-only, checksummed files and are replayed in order
//!   when the server is back, also after the process restarts. A record is forgotten only after
//!   the server acknowledged it as durable. See [`spool`] for the format.
//! * [`AuditLayer`](audit::AuditLayer) is a tower layer (for axum or any tower HTTP service) that
//!   emits one event per request from an [`AuditMap`](audit::AuditMap).
//!
//! # Emitting an event
//!
//! ```no_run
//! use trailkeep_client::{Client, Event, Initiator, Outcome, Reason, Target};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::builder("http://127.0.0.1:7700", std::env::var("TRAILKEEP_KEY")?)
//!     .spool_dir("/var/lib/myservice/audit-spool")
//!     .build()?;
//!
//! let event = Event::builder("codeengine.application.create")
//!     .outcome(Outcome::Failure)
//!     .initiator(Initiator::new("IBMid-550000ABCD").name("ada@example.com").credential_type("token"))
//!     .target(
//!         Target::new("crn:v1:bluemix:public:codeengine:us-south:a/acme:proj-7:application:web")
//!             .name("web")
//!             .type_uri("codeengine/application"),
//!     )
//!     .reason(Reason::http(403).failure("The user does not have the Writer role on the project"))
//!     .log_source_crn("crn:v1:bluemix:public:codeengine:us-south:a/acme:proj-7::")
//!     .build()?;
//! client.emit(event)?; // returns at once
//!
//! client.shutdown().await?; // sends what is queued; spools what cannot be sent
//! # Ok(())
//! # }
//! ```
//!
//! # Auditing an axum service
//!
//! ```
//! use axum::{Router, routing::{get, post}};
//! use http::Method;
//! use trailkeep_client::Client;
//! use trailkeep_client::audit::{AuditLayer, AuditMap, Rule};
//!
//! # fn build() -> Result<Router, Box<dyn std::error::Error>> {
//! let client = Client::builder("http://127.0.0.1:7700", "tk_writer_key").build()?;
//! let map = AuditMap::new("myservice")
//!     .crn_base("crn:v1:bluemix:public:myservice:us-south:a/acme:instance-1")
//!     .route(Method::GET, "/projects", Rule::new("project", "list"))
//!     .route(Method::GET, "/projects/{id}", Rule::new("project", "read"))
//!     .route(Method::POST, "/projects/{id}/actions", Rule::body_key("project"));
//! let app: Router = Router::new()
//!     .route("/projects", get(|| async { "[]" }))
//!     .route("/projects/{id}", get(|| async { "{}" }))
//!     .route("/projects/{id}/actions", post(|| async { "{}" }))
//!     .route("/healthz", get(|| async { "ok" }))
//!     .layer(
//!         AuditLayer::new(map, client)
//!             .skip_path("/healthz")
//!             .capture_request_body(16 * 1024),
//!     );
//! # Ok(app)
//! # }
//! # build().unwrap();
//! ```
//!
//! `GET /projects/p-1` then emits `myservice.project.read` with target
//! `crn:v1:…:instance-1:project:p-1`, outcome and `reason.reasonCode` from the status, and the
//! request's `X-Correlation-Id` (generated and returned when absent). The example service in
//! `examples/projects_service.rs` shows the whole setup, including where the initiator comes from.
//!
//! # Guarantees and limits
//!
//! * **Order:** events are sent in emit order, also through the spool.
//! * **No loss** while the process runs and the spool has room; after a crash, events still in
//!   the in-memory queue (at most the queue capacity, usually far less) are lost, while spooled
//!   ones are kept. [`Client::flush`] makes everything emitted so far either acknowledged or
//!   fsynced to the spool.
//! * **No duplicates stored:** resends (after a timeout, a crash between send and acknowledgement,
//!   or a replay) carry the same id, and the server answers them with the original position.
//! * **One spool directory per client** at a time.

pub mod audit;
mod client;
pub mod event;
pub mod metrics;
pub mod spool;
mod transport;
mod worker;

pub use client::{BuildError, Client, ClientBuilder, EmitError, ShutdownReport, Stopped};
pub use event::{Event, EventBuilder, EventError, Initiator, Outcome, Reason, Severity, Target};
pub use metrics::{CounterSnapshot, Counters, Failure, ItemError, Metrics, NoMetrics};
pub use transport::TransportError;

/// The README's examples, compiled as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
