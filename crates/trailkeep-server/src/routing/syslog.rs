//! Syslog targets: RFC 5424 messages with octet-counting framing (RFC 6587 §3.4.1) over TCP,
//! optionally TLS (RFC 5425) through rustls.
//!
//! One message per event:
//! `<PRI>1 <eventTime> <hostname> trailkeep - cadf [trailkeep@32473 account="…" id="…" location="…" action="…"] <event JSON>`
//! where PRI = facility 13 (log audit) × 8 + severity (`critical` → 2, `warning` → 4, else 6),
//! `hostname` is `trailkeep-<instance location>`, and the message is the stored event (JSON, no
//! BOM). The structured-data id uses the documentation enterprise number 32473 (RFC 5612).
//! Syslog over TCP has no acknowledgement: an event counts as delivered once it was written and
//! flushed to the connection.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::outbox::Entry;

/// Facility 13: log audit.
const FACILITY: u8 = 13;

/// Parses PEM certificates to trust (a target's `caCert`).
pub fn parse_ca(pem: &str) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("is not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    Ok(certs)
}

/// The value of an SD-PARAM, escaped (RFC 5424 §6.3.3: `"`, `\` and `]`).
fn sd_escape(s: &str, out: &mut String) {
    for c in s.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
}

/// One RFC 5424 message (without framing).
pub fn format_message(entry: &Entry, event: &Value, location: &str) -> String {
    let severity = match event.get("severity").and_then(Value::as_str) {
        Some("critical") => 2,
        Some("warning") => 4,
        _ => 6,
    };
    let timestamp = event
        .get("eventTime")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty() && t.len() <= 64 && !t.contains(' '))
        .unwrap_or("-");
    let mut msg = format!(
        "<{}>1 {timestamp} trailkeep-{location} trailkeep - cadf [trailkeep@32473 account=\"",
        u16::from(FACILITY) * 8 + severity
    );
    sd_escape(&entry.account, &mut msg);
    msg.push_str("\" id=\"");
    sd_escape(
        event.get("id").and_then(Value::as_str).unwrap_or(""),
        &mut msg,
    );
    msg.push_str("\" location=\"");
    sd_escape(
        super::decide::location_of(event.get("logSourceCRN").and_then(Value::as_str)),
        &mut msg,
    );
    msg.push_str("\" action=\"");
    sd_escape(
        event.get("action").and_then(Value::as_str).unwrap_or(""),
        &mut msg,
    );
    msg.push_str("\"] ");
    msg.push_str(entry.event.get());
    msg
}

trait Stream: AsyncWrite + Unpin + Send {}
impl<T: AsyncWrite + Unpin + Send> Stream for T {}

/// A connection to a syslog receiver, opened on first use and again after a failure.
pub struct Connection {
    address: String,
    tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
    stream: Option<Box<dyn Stream>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("address", &self.address)
            .field("tls", &self.tls.is_some())
            .field("connected", &self.stream.is_some())
            .finish()
    }
}

impl Connection {
    pub fn new(
        address: &str,
        tls: bool,
        ca_cert: Option<&str>,
        server_name: Option<&str>,
    ) -> Result<Connection, String> {
        let tls = if tls {
            let mut roots = rustls::RootCertStore::empty();
            match ca_cert {
                Some(pem) => {
                    for cert in parse_ca(pem)? {
                        roots.add(cert).map_err(|e| format!("caCert: {e}"))?;
                    }
                }
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            }
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
            let host = server_name.map(str::to_string).unwrap_or_else(|| {
                address
                    .rsplit_once(':')
                    .map_or(address, |(h, _)| h)
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string()
            });
            let name = rustls::pki_types::ServerName::try_from(host)
                .map_err(|e| format!("serverName: {e}"))?;
            Some((Arc::new(config), name))
        } else {
            None
        };
        Ok(Connection {
            address: address.to_string(),
            tls,
            stream: None,
        })
    }

    async fn connect(&mut self) -> Result<(), String> {
        let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&self.address))
            .await
            .map_err(|_| format!("connecting to {}: timed out", self.address))?
            .map_err(|e| format!("connecting to {}: {e}", self.address))?;
        let _ = tcp.set_nodelay(true);
        self.stream = Some(match &self.tls {
            None => Box::new(tcp),
            Some((config, name)) => {
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                let tls = tokio::time::timeout(
                    Duration::from_secs(5),
                    connector.connect(name.clone(), tcp),
                )
                .await
                .map_err(|_| "TLS handshake: timed out".to_string())?
                .map_err(|e| format!("TLS handshake with {}: {e}", self.address))?;
                Box::new(tls)
            }
        });
        Ok(())
    }

    /// Writes the events as octet-counted messages and flushes.
    pub async fn send(&mut self, entries: &[Entry], location: &str) -> Result<(), String> {
        let mut buf = Vec::new();
        for e in entries {
            let event: Value = serde_json::from_str(e.event.get()).unwrap_or(Value::Null);
            let msg = format_message(e, &event, location);
            buf.extend_from_slice(format!("{} ", msg.len()).as_bytes());
            buf.extend_from_slice(msg.as_bytes());
        }
        if self.stream.is_none() {
            self.connect().await?;
        }
        let stream = self.stream.as_mut().expect("connected");
        let written = tokio::time::timeout(Duration::from_secs(10), async {
            stream.write_all(&buf).await?;
            stream.flush().await
        })
        .await;
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                self.stream = None;
                Err(format!("writing to {}: {e}", self.address))
            }
            Err(_) => {
                self.stream = None;
                Err(format!("writing to {}: timed out", self.address))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_rfc5424_with_escaped_structured_data() {
        let event = serde_json::json!({
            "id": "e\"1]", "eventTime": "2026-11-20T10:00:00.123+00:00", "severity": "warning",
            "action": "kms.secrets.rotate",
            "logSourceCRN": "crn:v1:bluemix:public:kms:eu-de:a/acme:i::"
        });
        let entry = Entry {
            account: "acme".into(),
            queued_at: 0,
            event: serde_json::value::to_raw_value(&event).unwrap(),
        };
        let msg = format_message(&entry, &event, "us-south");
        assert!(
            msg.starts_with(
                "<108>1 2026-11-20T10:00:00.123+00:00 trailkeep-us-south trailkeep - cadf \
                 [trailkeep@32473 account=\"acme\" id=\"e\\\"1\\]\" location=\"eu-de\" action=\"kms.secrets.rotate\"] {"
            ),
            "{msg}"
        );
    }
}
