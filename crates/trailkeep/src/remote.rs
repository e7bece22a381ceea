//! The HTTP client every server-facing subcommand shares: where the server is, which key to send,
//! retries of transient failures, and turning the server's error bodies into readable messages.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::Value;

/// Where the server is and how to authenticate; flattened into each client subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct RemoteArgs {
    /// Base URL of the Trailkeep server.
    #[arg(long, env = "TRAILKEEP_URL", default_value = "http://127.0.0.1:7700")]
    pub url: String,

    /// API key sent as `Authorization: Bearer <key>`.
    #[arg(long, env = "TRAILKEEP_KEY", hide_env_values = true)]
    pub key: Option<String>,

    /// Extra PEM certificate(s) to trust for `https://` URLs (for a self-signed server).
    #[arg(long, env = "TRAILKEEP_CA_CERT", value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,

    /// Give up on one request after this many seconds.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub timeout: u64,
}

/// A connection to one server.
#[derive(Debug, Clone)]
pub struct Remote {
    agent: ureq::Agent,
    /// For long downloads: no overall deadline, only one per read.
    streaming: ureq::Agent,
    base: String,
    auth: String,
}

/// A failure of one request, kept apart so callers can decide what to retry.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The server answered with an error status.
    #[error("{}", describe_status(*.status, .body))]
    Status {
        status: u16,
        body: Value,
        retry_after: Option<Duration>,
    },
    /// No answer: connection refused, reset, timed out.
    #[error("cannot reach the server: {0}")]
    Transport(String),
}

impl RequestError {
    /// Worth trying again: the server was unreachable, overloaded or failed internally.
    pub fn is_transient(&self) -> bool {
        match self {
            RequestError::Transport(_) => true,
            RequestError::Status { status, .. } => *status == 429 || *status >= 500,
        }
    }

    /// How long the server asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RequestError::Status { retry_after, .. } => *retry_after,
            RequestError::Transport(_) => None,
        }
    }
}

/// `400 bad_request: the query is not valid … (q[3..5]: line 1, column 4: …)`.
fn describe_status(status: u16, body: &Value) -> String {
    let error = &body["error"];
    let Some(message) = error["message"].as_str() else {
        return format!("the server answered {status}");
    };
    let mut out = format!("the server answered {status}: {message}");
    if let Some(details) = error["details"].as_array() {
        for d in details {
            let path = d["path"].as_str().unwrap_or_default();
            let reason = d["reason"].as_str().unwrap_or_default();
            out.push_str(&format!("\n  {path}: {reason}"));
        }
    }
    out
}

impl Remote {
    pub fn new(args: &RemoteArgs) -> anyhow::Result<Remote> {
        let key = args.key.as_deref().filter(|k| !k.is_empty()).context(
            "no API key: pass --key or set TRAILKEEP_KEY (the server printed its admin key on first start)",
        )?;
        let base = args.url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!(
                "--url must start with http:// or https://, got {:?}",
                args.url
            );
        }
        let mut builder = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout(Duration::from_secs(args.timeout.max(1)))
            .user_agent(concat!("trailkeep/", env!("CARGO_PKG_VERSION")));
        let mut streaming = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout_read(Duration::from_secs(args.timeout.max(1)))
            .user_agent(concat!("trailkeep/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &args.ca_cert {
            let tls = Arc::new(tls_config_with(path)?);
            builder = builder.tls_config(tls.clone());
            streaming = streaming.tls_config(tls);
        }
        Ok(Remote {
            agent: builder.build(),
            streaming: streaming.build(),
            base,
            auth: format!("Bearer {key}"),
        })
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        self.agent
            .request(method, &format!("{}{}", self.base, path))
            .set("Authorization", &self.auth)
    }

    fn finish(result: Result<ureq::Response, ureq::Error>) -> Result<ureq::Response, RequestError> {
        match result {
            Ok(r) => Ok(r),
            Err(ureq::Error::Status(status, response)) => {
                let retry_after = response
                    .header("Retry-After")
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let mut text = String::new();
                let _ = response
                    .into_reader()
                    .take(1024 * 1024)
                    .read_to_string(&mut text);
                let body = serde_json::from_str(&text).unwrap_or(Value::Null);
                Err(RequestError::Status {
                    status,
                    body,
                    retry_after,
                })
            }
            Err(ureq::Error::Transport(t)) => Err(RequestError::Transport(t.to_string())),
        }
    }

    /// `GET path?query` answered with JSON.
    pub fn get_json(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, RequestError> {
        let mut req = self.request("GET", path);
        for (k, v) in query {
            req = req.query(k, v);
        }
        let response = Self::finish(req.call())?;
        response
            .into_json()
            .map_err(|e| RequestError::Transport(format!("reading the answer: {e}")))
    }

    /// `GET path?query` whose (possibly long) body is read as it arrives: no overall deadline,
    /// `--timeout` applies to each read. A transfer the server cut short fails the read.
    pub fn get_reader(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Box<dyn Read + Send>, RequestError> {
        let mut req = self
            .streaming
            .get(&format!("{}{}", self.base, path))
            .set("Authorization", &self.auth);
        for (k, v) in query {
            req = req.query(k, v);
        }
        Ok(Box::new(Self::finish(req.call())?.into_reader()))
    }

    /// `GET path` answered with text (keys and checkpoints).
    pub fn get_text(&self, path: &str) -> Result<String, RequestError> {
        let response = Self::finish(self.request("GET", path).call())?;
        response
            .into_string()
            .map_err(|e| RequestError::Transport(format!("reading the answer: {e}")))
    }

    /// `POST path` with a body (compressed with `encoding` if given). A 422 whose body is an
    /// ingest report (every item rejected) is an answer, not an error, so it is returned as `Ok`.
    pub fn post(
        &self,
        path: &str,
        content_type: &str,
        encoding: Option<&str>,
        body: &[u8],
    ) -> Result<Value, RequestError> {
        let mut request = self.request("POST", path).set("Content-Type", content_type);
        if let Some(encoding) = encoding {
            request = request.set("Content-Encoding", encoding);
        }
        let result = request.send_bytes(body);
        match Self::finish(result) {
            Ok(response) => response
                .into_json()
                .map_err(|e| RequestError::Transport(format!("reading the answer: {e}"))),
            Err(RequestError::Status {
                status: 422, body, ..
            }) if body.get("results").is_some() => Ok(body),
            Err(e) => Err(e),
        }
    }

    /// `method path` with an optional JSON body, answered with JSON (`null` for an empty answer,
    /// such as a 204 after a delete). For the management commands.
    pub fn send_json(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, RequestError> {
        let request = self.request(method, path);
        let result = match body {
            Some(b) => request
                .set("Content-Type", "application/json")
                .send_string(&b.to_string()),
            None => request.call(),
        };
        let response = Self::finish(result)?;
        let mut text = String::new();
        response
            .into_reader()
            .take(16 * 1024 * 1024)
            .read_to_string(&mut text)
            .map_err(|e| RequestError::Transport(format!("reading the answer: {e}")))?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text)
            .map_err(|e| RequestError::Transport(format!("reading the answer: {e}")))
    }

    /// `GET path?query` as a long-lived stream of lines (server-sent events). No overall timeout:
    /// a quiet tail is not a failure.
    pub fn get_lines(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<impl std::io::BufRead + use<>, RequestError> {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .build();
        let mut req = agent
            .get(&format!("{}{}", self.base, path))
            .set("Authorization", &self.auth)
            .set("Accept", "text/event-stream");
        for (k, v) in query {
            req = req.query(k, v);
        }
        let response = Self::finish(req.call())?;
        Ok(std::io::BufReader::new(response.into_reader()))
    }
}

/// Retry `op` while it fails transiently, with exponential backoff (honouring `Retry-After`) for at
/// most `budget`; `on_retry` hears about each wait.
pub fn with_retries<T>(
    budget: Duration,
    mut op: impl FnMut() -> Result<T, RequestError>,
    mut on_retry: impl FnMut(&RequestError, Duration),
) -> Result<T, RequestError> {
    let started = std::time::Instant::now();
    let mut delay = Duration::from_millis(200);
    loop {
        match op() {
            Ok(v) => return Ok(v),
            Err(e) if e.is_transient() && started.elapsed() < budget => {
                let wait = e
                    .retry_after()
                    .unwrap_or(delay)
                    .min(Duration::from_secs(30));
                on_retry(&e, wait);
                std::thread::sleep(wait);
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The platform's web roots plus the certificates in `path`.
fn tls_config_with(path: &std::path::Path) -> anyhow::Result<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let mut added = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.with_context(|| format!("{} is not a PEM certificate", path.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("{} holds an unusable certificate", path.display()))?;
        added += 1;
    }
    if added == 0 {
        bail!("{} holds no PEM certificate", path.display());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS setup")?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
