//! Views, alert rules and channels: the stored objects, their validation, and their API form.
//!
//! The disk form is these types serialised in `alerts/config.json` (see [`super::store`]); the API
//! form is built by the `to_api` functions, which hide channel secrets. Validation of API input
//! happens here, with the JSON path of each problem.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::Duration;
use trailkeep_index::query::parse_duration;

use crate::error::{ApiError, ErrorDetail};

/// Windows a rule's condition may use (issue #6).
pub const CONDITION_WINDOWS: [&str; 9] =
    ["30s", "1m", "5m", "15m", "30m", "1h", "6h", "12h", "24h"];
/// How far back a view must have had a match for an absence rule to be evaluated.
pub const ACTIVE_WITHIN: Duration = Duration::hours(24);
/// Largest threshold of a condition (the evaluator keeps this many match times per rule).
pub const MAX_THRESHOLD: u64 = 10_000;
/// Most channels on one rule, recipients of one email channel, and views/rules in all.
pub const MAX_CHANNELS: usize = 10;
pub const MAX_RECIPIENTS: usize = 50;
pub const MAX_OBJECTS: usize = 10_000;
/// Longest name, query, URL or secret accepted.
pub const MAX_TEXT: usize = 4_096;

/// A saved query.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct View {
    pub id: String,
    pub name: String,
    pub account: String,
    pub query: String,
    /// The default time window of the view (`24h`): searches through the view start there.
    pub window: String,
    /// The key that created the view.
    pub owner: String,
    pub created_at: String,
    pub updated_at: String,
}

impl View {
    pub fn to_api(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    pub fn window_duration(&self) -> Duration {
        parse_duration(&self.window).unwrap_or(Duration::hours(24))
    }
}

/// Presence or absence.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ConditionType {
    Presence,
    Absence,
}

/// When a rule fires.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: ConditionType,
    pub threshold: u64,
    /// One of [`CONDITION_WINDOWS`]; `None` (presence only) fires on every matching event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
}

impl Condition {
    pub fn window_duration(&self) -> Option<Duration> {
        self.window.as_deref().and_then(|w| parse_duration(w).ok())
    }
}

/// Where a rule's notifications go.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Channel {
    Webhook {
        url: String,
        secret: String,
    },
    Slack {
        url: String,
    },
    #[serde(rename_all = "camelCase")]
    Pagerduty {
        url: String,
        routing_key: String,
    },
    Email {
        to: Vec<String>,
    },
}

impl Channel {
    pub fn kind(&self) -> &'static str {
        match self {
            Channel::Webhook { .. } => "webhook",
            Channel::Slack { .. } => "slack",
            Channel::Pagerduty { .. } => "pagerduty",
            Channel::Email { .. } => "email",
        }
    }

    /// The API form: secrets are never shown again after creation.
    pub fn to_api(&self) -> Value {
        match self {
            Channel::Webhook { url, .. } => {
                json!({"type": "webhook", "url": url, "secret": "********"})
            }
            Channel::Slack { .. } => json!({"type": "slack", "url": "********"}),
            Channel::Pagerduty { url, .. } => {
                json!({"type": "pagerduty", "url": url, "routingKey": "********"})
            }
            Channel::Email { to } => json!({"type": "email", "to": to}),
        }
    }
}

/// An alert rule on a view.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    pub id: String,
    pub name: String,
    pub view_id: String,
    /// The view's account (copied so authorisation needs no lookup).
    pub account: String,
    pub condition: Condition,
    pub channels: Vec<Channel>,
    /// Re-send while the condition persists, at most this often; `None`: once per firing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renotify: Option<String>,
    /// Notifications are recorded but not sent before this instant (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub muted_until: Option<String>,
    pub owner: String,
    pub created_at: String,
    pub updated_at: String,
}

impl Rule {
    pub fn to_api(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        v["channels"] = Value::Array(self.channels.iter().map(Channel::to_api).collect());
        v
    }

    pub fn renotify_duration(&self) -> Option<Duration> {
        self.renotify
            .as_deref()
            .and_then(|w| parse_duration(w).ok())
    }

    pub fn muted_until_unix_nanos(&self) -> Option<i128> {
        let t = self.muted_until.as_deref()?;
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .ok()
            .map(|t| t.unix_timestamp_nanos())
    }
}

/// Collects validation problems with their JSON path.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<ErrorDetail>);

impl Problems {
    pub fn add(&mut self, path: &str, reason: impl Into<String>) {
        self.0.push(ErrorDetail {
            path: path.to_string(),
            reason: reason.into(),
        });
    }

    pub fn into_result(self, what: &str) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::unprocessable(format!("the {what} is not valid")).with_details(self.0))
        }
    }

    /// A required string field of at most [`MAX_TEXT`] bytes.
    pub fn text(&mut self, body: &Value, key: &str, path: &str, required: bool) -> Option<String> {
        match body.get(key) {
            None | Some(Value::Null) if !required => None,
            None | Some(Value::Null) => {
                self.add(path, "is required");
                None
            }
            Some(Value::String(s)) if s.trim().is_empty() && required => {
                self.add(path, "must not be empty");
                None
            }
            Some(Value::String(s)) if s.len() > MAX_TEXT => {
                self.add(path, format!("is longer than {MAX_TEXT} bytes"));
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                self.add(path, "must be a string");
                None
            }
        }
    }
}

/// A window such as `24h` or `7d` (for views).
pub fn check_view_window(p: &mut Problems, window: &str) {
    match parse_duration(window) {
        Ok(d) if d > Duration::ZERO && d <= Duration::days(3660) => {}
        Ok(_) => p.add("window", "must be more than zero and at most 3660d"),
        Err(e) => p.add("window", format!("{e} (examples: 15m, 24h, 7d)")),
    }
}

/// Reads a condition from API input.
pub fn parse_condition(p: &mut Problems, v: Option<&Value>) -> Option<Condition> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        p.add("condition", "is required");
        return None;
    };
    let kind = match v.get("type").and_then(Value::as_str) {
        Some("presence") => ConditionType::Presence,
        Some("absence") => ConditionType::Absence,
        _ => {
            p.add("condition.type", "must be \"presence\" or \"absence\"");
            return None;
        }
    };
    let threshold = match v.get("threshold") {
        None | Some(Value::Null) => 1,
        Some(t) => match t.as_u64() {
            Some(n) if (1..=MAX_THRESHOLD).contains(&n) => n,
            _ => {
                p.add(
                    "condition.threshold",
                    format!("must be an integer from 1 to {MAX_THRESHOLD}"),
                );
                return None;
            }
        },
    };
    let window = match v.get("window") {
        None | Some(Value::Null) => None,
        Some(Value::String(w)) if w == "immediate" => None,
        Some(Value::String(w)) if CONDITION_WINDOWS.contains(&w.as_str()) => Some(w.clone()),
        Some(_) => {
            p.add(
                "condition.window",
                format!(
                    "must be one of {} (or absent: fire on every matching event)",
                    CONDITION_WINDOWS.join(", ")
                ),
            );
            return None;
        }
    };
    if window.is_none() {
        if kind == ConditionType::Absence {
            p.add("condition.window", "an absence rule needs a window");
            return None;
        }
        if threshold != 1 {
            p.add(
                "condition.threshold",
                "without a window a presence rule fires on every match: the threshold must be 1",
            );
            return None;
        }
    }
    Some(Condition {
        kind,
        threshold,
        window,
    })
}

/// Reads the channel list from API input.
pub fn parse_channels(p: &mut Problems, v: Option<&Value>) -> Option<Vec<Channel>> {
    let Some(Value::Array(items)) = v else {
        p.add("channels", "must be a list of channels");
        return None;
    };
    if items.is_empty() || items.len() > MAX_CHANNELS {
        p.add(
            "channels",
            format!("must hold 1 to {MAX_CHANNELS} channels"),
        );
        return None;
    }
    let mut out = Vec::new();
    for (i, c) in items.iter().enumerate() {
        let path = |k: &str| format!("channels[{i}].{k}");
        let before = p.0.len();
        let url = |p: &mut Problems| {
            let u = p.text(c, "url", &path("url"), true)?;
            if !(u.starts_with("http://") || u.starts_with("https://"))
                || reqwest::Url::parse(&u).is_err()
            {
                p.add(&path("url"), "must be an http:// or https:// URL");
                return None;
            }
            Some(u)
        };
        let channel = match c.get("type").and_then(Value::as_str) {
            Some("webhook") => {
                let url = url(p);
                let secret = p.text(c, "secret", &path("secret"), true);
                if secret.as_ref().is_some_and(|s| s.len() < 16) {
                    p.add(&path("secret"), "must be at least 16 characters");
                }
                url.zip(secret)
                    .map(|(url, secret)| Channel::Webhook { url, secret })
            }
            Some("slack") => url(p).map(|url| Channel::Slack { url }),
            Some("pagerduty") => {
                let url = match c.get("url") {
                    None | Some(Value::Null) => {
                        Some("https://events.pagerduty.com/v2/enqueue".to_string())
                    }
                    Some(_) => url(p),
                };
                let key = p.text(c, "routingKey", &path("routingKey"), true);
                url.zip(key)
                    .map(|(url, routing_key)| Channel::Pagerduty { url, routing_key })
            }
            Some("email") => match c.get("to") {
                Some(Value::Array(to)) if !to.is_empty() && to.len() <= MAX_RECIPIENTS => {
                    let mut list = Vec::new();
                    for (j, a) in to.iter().enumerate() {
                        match a.as_str() {
                            Some(s) if s.parse::<lettre::Address>().is_ok() => {
                                list.push(s.to_string())
                            }
                            _ => {
                                p.add(&format!("channels[{i}].to[{j}]"), "is not an email address")
                            }
                        }
                    }
                    Some(Channel::Email { to: list })
                }
                _ => {
                    p.add(
                        &path("to"),
                        format!("must list 1 to {MAX_RECIPIENTS} email addresses"),
                    );
                    None
                }
            },
            _ => {
                p.add(
                    &path("type"),
                    "must be \"webhook\", \"slack\", \"pagerduty\" or \"email\"",
                );
                None
            }
        };
        if p.0.len() == before
            && let Some(ch) = channel
        {
            out.push(ch);
        }
    }
    Some(out)
}

/// Reads an optional duration field (`renotify`).
pub fn parse_optional_duration(
    p: &mut Problems,
    key: &str,
    v: Option<&Value>,
) -> Option<Option<String>> {
    match v {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(s)) => match parse_duration(s) {
            Ok(d) if d >= Duration::seconds(1) => Some(Some(s.clone())),
            Ok(_) => {
                p.add(key, "must be at least 1s");
                None
            }
            Err(e) => {
                p.add(key, e.to_string());
                None
            }
        },
        Some(_) => {
            p.add(key, "must be a duration such as 1h");
            None
        }
    }
}
