//! Sending one notification to one channel: the wire formats and the signature.
//!
//! Every notification is first a generic JSON document (the *payload*, the webhook body), built
//! once when the rule fires and kept in the outbox; Slack, PagerDuty and email forms are derived
//! from it at send time.
//!
//! # Webhook signature
//!
//! A webhook request carries
//! * `X-Trailkeep-Notification-Id`: the stable id of the notification (the same on every retry:
//!   receivers de-duplicate on it);
//! * `X-Trailkeep-Timestamp`: unix seconds when this attempt was sent;
//! * `X-Trailkeep-Signature: v1=<hex>` where `<hex>` is the lower-case hex HMAC-SHA256, keyed with
//!   the channel's secret (its UTF-8 bytes), of `<timestamp>` `.` `<raw body bytes>`.
//!
//! A receiver recomputes the HMAC over the timestamp header, a dot and the body exactly as
//! received, compares in constant time, and rejects timestamps more than 5 minutes from its clock
//! (a replayed request carries an old timestamp, and changing it breaks the signature).

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::model::Channel;

pub use super::network::NetworkPolicy;

/// Server-wide SMTP settings for email channels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SmtpSettings {
    /// `smtp://host[:port]` (STARTTLS when the server offers it) or `smtps://host[:port]`
    /// (TLS from the first byte).
    pub url: Option<String>,
    pub from: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// PEM file of an extra CA to trust for the SMTP server's certificate.
    pub ca_cert: Option<std::path::PathBuf>,
}

/// Sends notifications; cheap to clone.
#[derive(Debug, Clone)]
pub struct Sender {
    http: reqwest::Client,
    smtp: SmtpSettings,
    network: NetworkPolicy,
}

/// The webhook signature header value of `body` sent at `timestamp` (unix seconds).
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// One line that says what happened.
pub fn summary(payload: &Value) -> String {
    let rule = payload["rule"]["name"].as_str().unwrap_or("rule");
    let view = payload["view"]["name"].as_str().unwrap_or("view");
    let account = payload["account"].as_str().unwrap_or_default();
    let count = payload["count"].as_u64().unwrap_or(0);
    let window = payload["window"].as_str();
    let kind = payload["condition"]["type"].as_str().unwrap_or("presence");
    let what = match (kind, window) {
        (_, None) => format!("{count} matching event"),
        ("absence", Some(w)) => format!("only {count} matching events in the last {w}"),
        (_, Some(w)) => format!("{count} matching events in the last {w}"),
    };
    let test = if payload["kind"] == "test" {
        "[test] "
    } else {
        ""
    };
    format!("{test}Trailkeep alert \"{rule}\" on view \"{view}\" ({account}): {what}")
}

impl Sender {
    pub fn new(smtp: SmtpSettings, network: NetworkPolicy) -> Sender {
        let http = reqwest::Client::builder()
            .dns_resolver(super::network::resolver(&network))
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("trailkeep/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client builds");
        Sender {
            http,
            smtp,
            network,
        }
    }

    /// Sends `payload` through `channel`; `Err` holds a reason fit for the alert history.
    pub async fn send(&self, channel: &Channel, payload: &Value) -> Result<(), String> {
        let id = payload["id"].as_str().unwrap_or_default().to_string();
        if let Channel::Webhook { url, .. }
        | Channel::Slack { url }
        | Channel::Pagerduty { url, .. } = channel
        {
            self.network.check_url(url)?;
        }
        match channel {
            Channel::Webhook { url, secret } => {
                let body = serde_json::to_vec(payload).map_err(|e| e.to_string())?;
                let ts = time::OffsetDateTime::now_utc().unix_timestamp();
                let req = self
                    .http
                    .post(url)
                    .header("Content-Type", "application/json")
                    .header("X-Trailkeep-Notification-Id", &id)
                    .header("X-Trailkeep-Timestamp", ts.to_string())
                    .header("X-Trailkeep-Signature", signature(secret, ts, &body))
                    .body(body);
                self.post(req).await
            }
            Channel::Slack { url } => {
                let req = self
                    .http
                    .post(url)
                    .header("Content-Type", "application/json")
                    .body(slack_body(payload).to_string());
                self.post(req).await
            }
            Channel::Pagerduty { url, routing_key } => {
                let req = self
                    .http
                    .post(url)
                    .header("Content-Type", "application/json")
                    .body(pagerduty_body(payload, routing_key).to_string());
                self.post(req).await
            }
            Channel::Email { to } => {
                let smtp = self.smtp.clone();
                let to = to.clone();
                let payload = payload.clone();
                tokio::task::spawn_blocking(move || send_email(&smtp, &to, &payload))
                    .await
                    .map_err(|e| e.to_string())?
            }
        }
    }

    async fn post(&self, req: reqwest::RequestBuilder) -> Result<(), String> {
        let res = req.send().await.map_err(|e| {
            let mut reason = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                reason.push_str(&format!(": {s}"));
                source = s.source();
            }
            reason
        })?;
        let status = res.status();
        if status.is_success() {
            return Ok(());
        }
        let body = res.text().await.unwrap_or_default();
        let body: String = body.chars().take(200).collect();
        Err(format!("HTTP {status}: {body}"))
    }
}

/// Slack incoming-webhook message: `text` (the fallback and notification line) and blocks.
pub fn slack_body(payload: &Value) -> Value {
    let mut lines = vec![format!("*{}*", summary(payload))];
    lines.push(format!(
        "Query: `{}`",
        payload["view"]["query"].as_str().unwrap_or_default()
    ));
    for item in payload["events"].as_array().into_iter().flatten().take(5) {
        let e = &item["event"];
        lines.push(format!(
            "• {} {} {} — {}",
            e["eventTime"].as_str().unwrap_or_default(),
            e["action"].as_str().unwrap_or_default(),
            e["outcome"].as_str().unwrap_or_default(),
            e["initiator"]["name"]
                .as_str()
                .or(e["initiator"]["id"].as_str())
                .unwrap_or_default(),
        ));
    }
    json!({
        "text": summary(payload),
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": lines.join("\n")}}],
    })
}

/// PagerDuty Events API v2 `trigger` event. The notification id is the dedup key, so a retried
/// delivery does not open a second incident.
pub fn pagerduty_body(payload: &Value, routing_key: &str) -> Value {
    let severity = if payload["events"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|i| i["event"]["severity"] == "critical")
    {
        "critical"
    } else {
        "warning"
    };
    json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": payload["id"],
        "payload": {
            "summary": summary(payload).chars().take(1024).collect::<String>(),
            "source": "trailkeep",
            "severity": severity,
            "timestamp": payload["firedAt"],
            "component": payload["account"],
            "group": payload["view"]["name"],
            "class": payload["condition"]["type"],
            "custom_details": {
                "rule": payload["rule"],
                "view": payload["view"],
                "count": payload["count"],
                "window": payload["window"],
                "events": payload["events"],
            },
        },
    })
}

fn send_email(smtp: &SmtpSettings, to: &[String], payload: &Value) -> Result<(), String> {
    use lettre::message::{Mailbox, header::ContentType};
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    use lettre::{Message, SmtpTransport, Transport};

    let url = smtp
        .url
        .as_deref()
        .ok_or("no SMTP server configured (--smtp-url)")?;
    let (implicit_tls, rest) = if let Some(r) = url.strip_prefix("smtps://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("smtp://") {
        (false, r)
    } else {
        return Err(format!(
            "the SMTP URL must start with smtp:// or smtps://: {url}"
        ));
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("bad SMTP port in {url}"))?,
        ),
        None => (rest, if implicit_tls { 465 } else { 587 }),
    };
    let mut tls = TlsParameters::builder(host.to_string());
    if let Some(path) = &smtp.ca_cert {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let cert = Certificate::from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))?;
        tls = tls.add_root_certificate(cert);
    }
    let tls = tls.build().map_err(|e| e.to_string())?;
    let mut builder = SmtpTransport::builder_dangerous(host)
        .port(port)
        .timeout(Some(Duration::from_secs(15)))
        .tls(if implicit_tls {
            Tls::Wrapper(tls)
        } else {
            Tls::Opportunistic(tls)
        });
    if let (Some(user), Some(pass)) = (&smtp.username, &smtp.password) {
        builder = builder.credentials(lettre::transport::smtp::authentication::Credentials::new(
            user.clone(),
            pass.clone(),
        ));
    }
    let transport = builder.build();
    let from: Mailbox = smtp
        .from
        .parse()
        .map_err(|e| format!("the sender address {:?}: {e}", smtp.from))?;
    let mut message = Message::builder()
        .from(from)
        .subject(summary(payload))
        .header(ContentType::TEXT_PLAIN)
        .message_id(Some(format!(
            "<{}@trailkeep>",
            payload["id"].as_str().unwrap_or("notification")
        )));
    for addr in to {
        message = message.to(addr
            .parse::<Mailbox>()
            .map_err(|e| format!("recipient {addr:?}: {e}"))?);
    }
    let message = message
        .body(email_text(payload))
        .map_err(|e| e.to_string())?;
    transport.send(&message).map(|_| ()).map_err(|e| {
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            reason.push_str(&format!(": {s}"));
            source = s.source();
        }
        reason
    })
}

/// The plain-text email body.
pub fn email_text(payload: &Value) -> String {
    let mut out = format!(
        "{}\n\nRule: {} ({})\nView: {} — query: {}\nCondition: {}\nNotification id: {}\nFired at: {}\n\nNewest matching events:\n",
        summary(payload),
        payload["rule"]["name"].as_str().unwrap_or_default(),
        payload["rule"]["id"].as_str().unwrap_or_default(),
        payload["view"]["name"].as_str().unwrap_or_default(),
        payload["view"]["query"].as_str().unwrap_or_default(),
        payload["condition"],
        payload["id"].as_str().unwrap_or_default(),
        payload["firedAt"].as_str().unwrap_or_default(),
    );
    for item in payload["events"].as_array().into_iter().flatten() {
        out.push_str(&format!("{}\n", item["event"]));
    }
    out
}
