//! One ingest request: `POST /v1/events` with an NDJSON body, and what its answer means.
//!
//! Owns: the HTTP client (timeouts, TLS roots), the request shape and the classification of
//! answers into *done* (per-item results), *retry* (connect errors, timeouts, 5xx, 429, 408 and the
//! configuration errors 401/403/404 — which lose nothing by waiting for an operator), *too large*
//! (413: split the batch) and *refused* (any other 4xx: give up on the batch). Must never: retry
//! by itself; the caller decides when.

use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use serde::Deserialize;

use crate::metrics::ItemError;
use crate::spool::Record;

/// The answer for one event of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemResult {
    /// Stored (or already stored: `duplicate`).
    Accepted {
        /// The server already had this (account, id).
        duplicate: bool,
    },
    /// Rejected with these errors.
    Rejected(Vec<ItemError>),
    /// Valid, but the server's routing stored it nowhere: no route took it and no default
    /// target is set (`"status": "dropped"`). Resending it would not help.
    Dropped {
        /// The server's reason.
        reason: String,
    },
}

/// What one request achieved.
#[derive(Debug)]
pub enum SendOutcome {
    /// The server answered for every item.
    Done(Vec<ItemResult>),
    /// Nothing was stored; try again later (after `retry_after` at the earliest).
    Retry {
        /// What went wrong.
        error: String,
        /// The server's `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// 413: the batch is too large for the server; send it in smaller pieces.
    TooLarge,
    /// The server refused the request in a way a retry cannot fix.
    Refused {
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Base URL of the Trailkeep server.
    pub url: reqwest::Url,
    /// API key.
    pub key: String,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout.
    pub request_timeout: Duration,
    /// Extra trusted CA certificates (PEM).
    pub extra_roots: Vec<Vec<u8>>,
    /// Whether the built-in web PKI roots are trusted.
    pub builtin_roots: bool,
}

/// Sends batches to one server.
#[derive(Debug, Clone)]
pub struct Transport {
    http: reqwest::Client,
    endpoint: reqwest::Url,
    auth: http::HeaderValue,
}

/// Errors building the transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The URL cannot be used.
    #[error("invalid server URL {0:?}: {1}")]
    Url(String, String),
    /// The key cannot be sent as a header.
    #[error("the API key contains characters that cannot be sent in a header")]
    Key,
    /// A CA certificate could not be read.
    #[error("invalid CA certificate: {0}")]
    Certificate(String),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

impl Transport {
    /// Builds the HTTP client.
    pub fn new(config: &TransportConfig) -> Result<Self, TransportError> {
        let mut endpoint = config.url.clone();
        if !matches!(endpoint.scheme(), "http" | "https") {
            return Err(TransportError::Url(
                config.url.to_string(),
                "the scheme must be http or https".into(),
            ));
        }
        let path = endpoint.path().trim_end_matches('/').to_string();
        endpoint.set_path(&format!("{path}/v1/events"));
        let mut auth = http::HeaderValue::from_str(&format!("Bearer {}", config.key))
            .map_err(|_| TransportError::Key)?;
        auth.set_sensitive(true);
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .user_agent(concat!("trailkeep-client/", env!("CARGO_PKG_VERSION")))
            .tls_built_in_root_certs(config.builtin_roots)
            .no_proxy();
        for pem in &config.extra_roots {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| TransportError::Certificate(e.to_string()))?;
            if certs.is_empty() {
                return Err(TransportError::Certificate(
                    "no certificate in the PEM data".into(),
                ));
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let http = builder
            .build()
            .map_err(|e| TransportError::Client(e.to_string()))?;
        Ok(Transport {
            http,
            endpoint,
            auth,
        })
    }

    /// Sends `records` as one NDJSON request.
    pub async fn send(&self, records: &[Record]) -> SendOutcome {
        let mut body = Vec::with_capacity(records.iter().map(|r| r.line.len() + 1).sum());
        for r in records {
            body.extend_from_slice(&r.line);
            body.push(b'\n');
        }
        let response = self
            .http
            .post(self.endpoint.clone())
            .header(AUTHORIZATION, self.auth.clone())
            .header(CONTENT_TYPE, "application/x-ndjson")
            .body(Bytes::from(body))
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                return SendOutcome::Retry {
                    error: error_chain(&e),
                    retry_after: None,
                };
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = match response.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return SendOutcome::Retry {
                    error: format!("reading the answer: {}", error_chain(&e)),
                    retry_after,
                };
            }
        };
        classify(status, retry_after, &bytes, records.len())
    }
}

/// Interprets an answer to a batch of `n` events.
pub fn classify(status: u16, retry_after: Option<Duration>, body: &[u8], n: usize) -> SendOutcome {
    match status {
        200 | 422 => match parse_report(body, n) {
            Ok(items) => SendOutcome::Done(items),
            Err(e) => SendOutcome::Retry {
                error: format!("unexpected ingest answer ({status}): {e}"),
                retry_after,
            },
        },
        413 => SendOutcome::TooLarge,
        401 | 403 | 404 | 408 | 429 => SendOutcome::Retry {
            error: format!("HTTP {status}: {}", error_message(body)),
            retry_after,
        },
        s if s >= 500 => SendOutcome::Retry {
            error: format!("HTTP {status}: {}", error_message(body)),
            retry_after,
        },
        s => SendOutcome::Refused {
            status: s,
            message: error_message(body),
        },
    }
}

#[derive(Deserialize)]
struct Report {
    results: Vec<ReportItem>,
}

#[derive(Deserialize)]
struct ReportItem {
    status: String,
    #[serde(default)]
    duplicate: bool,
    #[serde(default)]
    errors: Vec<ReportError>,
    #[serde(default)]
    reason: String,
}

#[derive(Deserialize)]
struct ReportError {
    #[serde(default)]
    path: String,
    #[serde(default)]
    reason: String,
}

fn parse_report(body: &[u8], n: usize) -> Result<Vec<ItemResult>, String> {
    let report: Report = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if report.results.len() != n {
        return Err(format!("{} results for {n} events", report.results.len()));
    }
    Ok(report
        .results
        .into_iter()
        .map(|r| match r.status.as_str() {
            "accepted" => ItemResult::Accepted {
                duplicate: r.duplicate,
            },
            "dropped" => ItemResult::Dropped {
                reason: if r.reason.is_empty() {
                    "the server's routing stored the event nowhere".to_string()
                } else {
                    r.reason
                },
            },
            _ => ItemResult::Rejected(
                r.errors
                    .into_iter()
                    .map(|e| ItemError {
                        path: e.path,
                        reason: e.reason,
                    })
                    .collect(),
            ),
        })
        .collect())
}

/// The `error.message` of an error body, else the body's start.
fn error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Body {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        message: String,
    }
    match serde_json::from_slice::<Body>(body) {
        Ok(b) => b.error.message,
        Err(_) => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified() {
        let ok = br#"{"accepted":1,"rejected":1,"results":[
            {"status":"accepted","account":"a","index":3,"id":"x","duplicate":true},
            {"status":"rejected","errors":[{"path":"action","reason":"bad"}]},
            {"status":"dropped","account":"a","id":"y","reason":"no route handles location \"jp-tok\""}]}"#;
        match classify(200, None, ok, 3) {
            SendOutcome::Done(items) => assert_eq!(
                items,
                vec![
                    ItemResult::Accepted { duplicate: true },
                    ItemResult::Rejected(vec![ItemError {
                        path: "action".into(),
                        reason: "bad".into()
                    }]),
                    ItemResult::Dropped {
                        reason: "no route handles location \"jp-tok\"".into()
                    }
                ]
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(200, None, ok, 2),
            SendOutcome::Retry { .. }
        ));
        let busy = br#"{"error":{"code":"overloaded","message":"busy"}}"#;
        match classify(429, Some(Duration::from_secs(2)), busy, 1) {
            SendOutcome::Retry { error, retry_after } => {
                assert!(error.contains("busy"), "{error}");
                assert_eq!(retry_after, Some(Duration::from_secs(2)));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(503, None, b"", 1),
            SendOutcome::Retry { .. }
        ));
        assert!(matches!(
            classify(401, None, b"", 1),
            SendOutcome::Retry { .. }
        ));
        assert!(matches!(classify(413, None, b"", 1), SendOutcome::TooLarge));
        assert!(matches!(
            classify(400, None, b"{\"error\":{\"message\":\"not JSON\"}}", 1),
            SendOutcome::Refused { status: 400, .. }
        ));
    }
}
