//! The server's Prometheus metrics (`GET /metrics`, text exposition format).
//!
//! Metrics carry no account names or event content, so they can be scraped without an account-scoped
//! key.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `accepted`, `duplicate` or `rejected`.
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// The rule that rejected the event (a short, fixed vocabulary; never event content).
    pub reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabel {
    pub method: String,
    pub status: u16,
}

/// Every metric the server exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub ingest_events: Family<ResultLabel, Counter>,
    pub rejected_events: Family<ReasonLabel, Counter>,
    pub ingest_queue_depth: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub commit_latency: Histogram,
    pub index_lag: Gauge<i64, std::sync::atomic::AtomicI64>,
    pub http_requests: Family<HttpLabel, Counter>,
    pub overloaded: Counter<u64, AtomicU64>,
    pub rate_limited: Family<ResultLabel, Counter>,
    pub auth_failures: Counter<u64, AtomicU64>,
    pub unrecorded_auth_failures: Counter<u64, AtomicU64>,
    pub id_lookups: Counter<u64, AtomicU64>,
    pub alerts: crate::alerts::AlertMetrics,
    pub routing: crate::routing::RoutingMetrics,
    pub archive: crate::archive::ArchiveMetrics,
    pub retention: crate::retention::RetentionMetrics,
    pub indexing: crate::indexer::IndexingMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("trailkeep");
        let ingest_events = Family::<ResultLabel, Counter>::default();
        registry.register(
            "ingest_events",
            "Events received, by result",
            ingest_events.clone(),
        );
        let rejected_events = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "rejected_events",
            "Events rejected, by rule",
            rejected_events.clone(),
        );
        let ingest_queue_depth = Gauge::default();
        registry.register(
            "ingest_queue_depth",
            "Events accepted by HTTP and waiting for the ledger",
            ingest_queue_depth.clone(),
        );
        // 100 µs … ~3.3 s.
        let commit_latency = Histogram::new(exponential_buckets(0.000_1, 2.0, 16));
        registry.register(
            "commit_latency_seconds",
            "Time from handing a batch to the ledger until it is durable",
            commit_latency.clone(),
        );
        let index_lag = Gauge::default();
        registry.register(
            "index_lag_events",
            "Committed events not yet searchable",
            index_lag.clone(),
        );
        let http_requests = Family::<HttpLabel, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests, by method and status",
            http_requests.clone(),
        );
        let overloaded = Counter::default();
        registry.register(
            "ingest_overloaded",
            "Ingest requests answered 429 because the queue was full",
            overloaded.clone(),
        );
        let rate_limited = Family::<ResultLabel, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests answered 429 because their key exceeded its rate limit, by kind",
            rate_limited.clone(),
        );
        let auth_failures = Counter::default();
        registry.register(
            "auth_failures",
            "Requests refused because they had no valid API key",
            auth_failures.clone(),
        );
        let unrecorded_auth_failures = Counter::default();
        registry.register(
            "auth_failures_unrecorded",
            "Failed authentications beyond the self-audit cap (counted here only)",
            unrecorded_auth_failures.clone(),
        );
        let id_lookups = Counter::default();
        registry.register(
            "ingest_id_lookups",
            "Incoming event ids looked up in the search index to tell a retry of an older event \
             (ids not in flight nor just committed are kept in a compact filter)",
            id_lookups.clone(),
        );
        let alerts = crate::alerts::AlertMetrics::register(&mut registry);
        let routing = crate::routing::RoutingMetrics::register(&mut registry);
        let archive = crate::archive::ArchiveMetrics::register(&mut registry);
        let retention = crate::retention::RetentionMetrics::register(&mut registry);
        let indexing = crate::indexer::IndexingMetrics::register(&mut registry);
        Metrics {
            indexing,
            retention,
            archive,
            alerts,
            routing,
            registry,
            rate_limited,
            auth_failures,
            unrecorded_auth_failures,
            id_lookups,
            ingest_events,
            rejected_events,
            ingest_queue_depth,
            commit_latency,
            index_lag,
            http_requests,
            overloaded,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_names_every_metric() {
        let m = Metrics::new();
        m.ingest_events
            .get_or_create(&ResultLabel { result: "accepted" })
            .inc_by(3);
        m.rejected_events
            .get_or_create(&ReasonLabel {
                reason: "missing_field".into(),
            })
            .inc();
        m.commit_latency.observe(0.002);
        let text = m.render();
        assert!(
            text.contains("trailkeep_ingest_events_total{result=\"accepted\"} 3"),
            "{text}"
        );
        assert!(text.contains("trailkeep_rejected_events_total{reason=\"missing_field\"} 1"));
        assert!(text.contains("trailkeep_commit_latency_seconds_bucket"));
        assert!(text.contains("trailkeep_ingest_queue_depth 0"));
        assert!(text.contains("trailkeep_index_lag_events 0"));
    }
}
