//! Typed construction of CADF / Activity Tracker events.
//!
//! Owns: [`Event`] (a JSON object ready to send, with a stable `id`) and [`EventBuilder`], which
//! refuses what the server would reject (a malformed action, a missing initiator or target, a
//! malformed `logSourceCRN`). Must never: do I/O or read anything but the clock (for a default
//! `eventTime`) and the random source (for the `id`).

use std::fmt;

use serde_json::{Map, Value};
use time::OffsetDateTime;

/// The `outcome` of an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The action succeeded.
    Success,
    /// The action failed; give a [`Reason`].
    Failure,
    /// The action was accepted and will complete later.
    Pending,
    /// The result is not known.
    Unknown,
}

impl Outcome {
    /// The wire value: `success`, `failure`, `pending` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Pending => "pending",
            Outcome::Unknown => "unknown",
        }
    }

    /// `success` for 1xx–3xx, `failure` for everything else.
    pub fn from_http_status(status: u16) -> Self {
        if status < 400 {
            Outcome::Success
        } else {
            Outcome::Failure
        }
    }
}

/// The `severity` of an event. When absent the server derives it from the outcome and verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    /// Routine.
    Normal,
    /// Worth a look.
    Warning,
    /// Needs attention.
    Critical,
}

impl Severity {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Normal => "normal",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// Who performed the action (`initiator`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Initiator {
    /// A stable identifier of the user or service (e.g. `IBMid-550000ABCD`).
    pub id: String,
    /// A human-readable name (e.g. an e-mail address).
    pub name: Option<String>,
    /// The CADF type, e.g. `service/security/account/user` (the default) or
    /// `service/security/account/serviceid`.
    pub type_uri: Option<String>,
    /// The credential type (`token`, `apikey`, `user`, …). The token itself is never sent.
    pub credential_type: Option<String>,
    /// The authenticated identity's id, when it differs from `id`.
    pub authn_id: Option<String>,
    /// The authenticated identity's name.
    pub authn_name: Option<String>,
    /// The client's IP address.
    pub address: Option<String>,
    /// The client's `User-Agent`.
    pub user_agent: Option<String>,
}

/// The CADF type of a human user.
pub const USER_TYPE_URI: &str = "service/security/account/user";

impl Initiator {
    /// An initiator with this id.
    pub fn new(id: impl Into<String>) -> Self {
        Initiator {
            id: id.into(),
            ..Initiator::default()
        }
    }

    /// The initiator of a request that could not be authenticated: id `unknown`.
    pub fn unknown() -> Self {
        Initiator::new("unknown")
    }

    /// Sets the name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the CADF type URI.
    pub fn type_uri(mut self, type_uri: impl Into<String>) -> Self {
        self.type_uri = Some(type_uri.into());
        self
    }

    /// Sets the credential type.
    pub fn credential_type(mut self, credential_type: impl Into<String>) -> Self {
        self.credential_type = Some(credential_type.into());
        self
    }

    /// Sets the authenticated identity (`authnId`, `authnName`).
    pub fn authn(mut self, id: impl Into<String>, name: impl Into<String>) -> Self {
        self.authn_id = Some(id.into());
        self.authn_name = Some(name.into());
        self
    }

    /// Sets the client address.
    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.address = Some(address.into());
        self
    }

    /// Sets the client's user agent.
    pub fn user_agent(mut self, agent: impl Into<String>) -> Self {
        self.user_agent = Some(agent.into());
        self
    }

    fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), Value::String(self.id.clone()));
        if let Some(n) = &self.name {
            m.insert("name".into(), Value::String(n.clone()));
        }
        m.insert(
            "typeURI".into(),
            Value::String(
                self.type_uri
                    .clone()
                    .unwrap_or_else(|| USER_TYPE_URI.to_string()),
            ),
        );
        if let Some(v) = &self.authn_id {
            m.insert("authnId".into(), Value::String(v.clone()));
        }
        if let Some(v) = &self.authn_name {
            m.insert("authnName".into(), Value::String(v.clone()));
        }
        if let Some(t) = &self.credential_type {
            let mut c = Map::new();
            c.insert("type".into(), Value::String(t.clone()));
            m.insert("credential".into(), Value::Object(c));
        }
        if self.address.is_some() || self.user_agent.is_some() {
            let mut h = Map::new();
            if let Some(a) = &self.address {
                h.insert("address".into(), Value::String(a.clone()));
                let kind = if a.contains(':') { "IPv6" } else { "IPv4" };
                h.insert("addressType".into(), Value::String(kind.into()));
            }
            if let Some(a) = &self.user_agent {
                h.insert("agent".into(), Value::String(a.clone()));
            }
            m.insert("host".into(), Value::Object(h));
        }
        Value::Object(m)
    }
}

/// The resource acted upon (`target`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Target {
    /// Its identifier, ideally a CRN (`crn:v1:…:<resourceType>:<resource>`).
    pub id: String,
    /// Its name.
    pub name: Option<String>,
    /// Its type, `<service>/<objectType>` (e.g. `codeengine/application`).
    pub type_uri: Option<String>,
    /// The resource group it belongs to.
    pub resource_group_id: Option<String>,
}

impl Target {
    /// A target with this id.
    pub fn new(id: impl Into<String>) -> Self {
        Target {
            id: id.into(),
            ..Target::default()
        }
    }

    /// Sets the name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the type URI.
    pub fn type_uri(mut self, type_uri: impl Into<String>) -> Self {
        self.type_uri = Some(type_uri.into());
        self
    }

    /// Sets the resource group.
    pub fn resource_group_id(mut self, id: impl Into<String>) -> Self {
        self.resource_group_id = Some(id.into());
        self
    }

    fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), Value::String(self.id.clone()));
        if let Some(n) = &self.name {
            m.insert("name".into(), Value::String(n.clone()));
        }
        if let Some(t) = &self.type_uri {
            m.insert("typeURI".into(), Value::String(t.clone()));
        }
        if let Some(g) = &self.resource_group_id {
            m.insert("resourceGroupId".into(), Value::String(g.clone()));
        }
        Value::Object(m)
    }
}

/// Why the action ended as it did (`reason`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reason {
    /// Usually the HTTP status code.
    pub code: Option<u16>,
    /// Usually the HTTP reason phrase (`Forbidden`).
    pub reason_type: Option<String>,
    /// For failures: what went wrong, in words.
    pub reason_for_failure: Option<String>,
}

impl Reason {
    /// The reason for an HTTP status: its code and canonical phrase.
    pub fn http(status: u16) -> Self {
        let phrase = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("HTTP");
        Reason {
            code: Some(status),
            reason_type: Some(phrase.to_string()),
            reason_for_failure: None,
        }
    }

    /// Sets `reasonForFailure`.
    pub fn failure(mut self, text: impl Into<String>) -> Self {
        self.reason_for_failure = Some(text.into());
        self
    }

    fn to_value(&self) -> Value {
        let mut m = Map::new();
        if let Some(c) = self.code {
            m.insert("reasonCode".into(), Value::from(c));
        }
        if let Some(t) = &self.reason_type {
            m.insert("reasonType".into(), Value::String(t.clone()));
        }
        if let Some(f) = &self.reason_for_failure {
            m.insert("reasonForFailure".into(), Value::String(f.clone()));
        }
        Value::Object(m)
    }
}

/// Why [`EventBuilder::build`] refused an event. Each names the field and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// `action` is not `service.objectType.verb`.
    #[error(
        "action {0:?} must be service.objectType.verb: three or more non-empty dot-separated parts without whitespace"
    )]
    Action(String),
    /// No initiator was given.
    #[error("initiator is required")]
    MissingInitiator,
    /// No target was given.
    #[error("target is required")]
    MissingTarget,
    /// An initiator or target id is empty.
    #[error("{0}.id must not be empty")]
    EmptyId(&'static str),
    /// `logSourceCRN` is malformed.
    #[error(
        "logSourceCRN {0:?} must be a CRN with 10 colon-separated parts (crn:v1:<cname>:<ctype>:<service>:<location>:<scope>:<instance>:<type>:<resource>)"
    )]
    Crn(String),
    /// An extra field would overwrite a field the builder owns, or is not allowed at the top level.
    #[error("field {0:?} is set by the builder; use its method")]
    ReservedField(String),
    /// `requestData`/`responseData` must be a JSON object.
    #[error("{0} must be a JSON object")]
    NotAnObject(&'static str),
}

/// Checks an action of the Activity Tracker form `service.objectType.verb`.
pub fn check_action(action: &str) -> Result<(), EventError> {
    let ok = action.split('.').count() >= 3
        && action.split('.').all(|p| !p.is_empty())
        && !action.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(EventError::Action(action.to_string()))
    }
}

/// Checks a `logSourceCRN`: `crn:` (optional on the wire, required here) and 10 parts.
pub fn check_crn(crn: &str) -> Result<(), EventError> {
    if crn.starts_with("crn:") && crn.split(':').count() == 10 {
        Ok(())
    } else {
        Err(EventError::Crn(crn.to_string()))
    }
}

/// A complete event, ready for [`Client::emit`](crate::Client::emit).
///
/// Its `id` is fixed when the event is built, so every retry and every replay from the spool sends
/// the same id and the server stores it once.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    id: String,
    fields: Map<String, Value>,
}

impl Event {
    /// Starts an event for `action` (`service.objectType.verb`, checked by
    /// [`EventBuilder::build`]).
    pub fn builder(action: impl Into<String>) -> EventBuilder {
        EventBuilder::new(action)
    }

    /// The stable event id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The event as a JSON object (including `id`).
    pub fn as_json(&self) -> &Map<String, Value> {
        &self.fields
    }

    /// The event as one JSON line (no trailing newline).
    pub fn to_json_line(&self) -> Vec<u8> {
        serde_json::to_vec(&self.fields).expect("a JSON map always serialises")
    }
}

impl serde::Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.fields.serialize(s)
    }
}

/// Builds an [`Event`]; see [`Event::builder`].
#[derive(Debug, Clone)]
pub struct EventBuilder {
    action: String,
    outcome: Outcome,
    initiator: Option<Initiator>,
    target: Option<Target>,
    reason: Option<Reason>,
    event_time: Option<OffsetDateTime>,
    id: Option<String>,
    correlation_id: Option<String>,
    log_source_crn: Option<String>,
    severity: Option<Severity>,
    message: Option<String>,
    data_event: Option<bool>,
    observer: Option<String>,
    request_data: Option<Map<String, Value>>,
    response_data: Option<Map<String, Value>>,
    extra: Map<String, Value>,
    bad_extra: Option<EventError>,
}

/// Fields the builder owns; [`EventBuilder::field`] may not set them.
const RESERVED: &[&str] = &[
    "id",
    "action",
    "outcome",
    "eventTime",
    "initiator",
    "target",
    "reason",
    "correlationId",
    "logSourceCRN",
    "severity",
    "message",
    "dataEvent",
    "observer",
    "requestData",
    "responseData",
];

impl EventBuilder {
    /// See [`Event::builder`]. The outcome defaults to [`Outcome::Success`].
    pub fn new(action: impl Into<String>) -> Self {
        EventBuilder {
            action: action.into(),
            outcome: Outcome::Success,
            initiator: None,
            target: None,
            reason: None,
            event_time: None,
            id: None,
            correlation_id: None,
            log_source_crn: None,
            severity: None,
            message: None,
            data_event: None,
            observer: None,
            request_data: None,
            response_data: None,
            extra: Map::new(),
            bad_extra: None,
        }
    }

    /// Sets the outcome.
    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    /// Sets the initiator (required).
    pub fn initiator(mut self, initiator: Initiator) -> Self {
        self.initiator = Some(initiator);
        self
    }

    /// Sets the target (required).
    pub fn target(mut self, target: Target) -> Self {
        self.target = Some(target);
        self
    }

    /// Sets the reason.
    pub fn reason(mut self, reason: Reason) -> Self {
        self.reason = Some(reason);
        self
    }

    /// Sets `eventTime` (default: now). Sent as RFC 3339 UTC with microseconds and `+00:00`.
    pub fn event_time(mut self, time: OffsetDateTime) -> Self {
        self.event_time = Some(time);
        self
    }

    /// Uses this id instead of a generated UUID (e.g. to make an event idempotent across
    /// processes). An empty id is ignored.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        let id = id.into();
        if !id.is_empty() {
            self.id = Some(id);
        }
        self
    }

    /// Sets `correlationId` (the id of the request across services).
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// Sets `logSourceCRN`; its `a/<account>` scope selects the account.
    pub fn log_source_crn(mut self, crn: impl Into<String>) -> Self {
        self.log_source_crn = Some(crn.into());
        self
    }

    /// Sets the severity (default: derived by the server).
    pub fn severity(mut self, severity: Severity) -> Self {
        self.severity = Some(severity);
        self
    }

    /// Sets the message (default: derived by the server).
    pub fn message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// Marks a data event (`dataEvent: true`), e.g. reading an object's content.
    pub fn data_event(mut self, data_event: bool) -> Self {
        self.data_event = Some(data_event);
        self
    }

    /// Sets `observer.name`.
    pub fn observer(mut self, name: impl Into<String>) -> Self {
        self.observer = Some(name.into());
        self
    }

    /// Sets `requestData`.
    pub fn request_data(mut self, data: Map<String, Value>) -> Self {
        self.request_data = Some(data);
        self
    }

    /// Sets `responseData`.
    pub fn response_data(mut self, data: Map<String, Value>) -> Self {
        self.response_data = Some(data);
        self
    }

    /// Sets `requestData` from any JSON value; it must be an object.
    pub fn request_json(mut self, data: Value) -> Self {
        match data {
            Value::Object(m) => self.request_data = Some(m),
            _ => self.bad_extra = Some(EventError::NotAnObject("requestData")),
        }
        self
    }

    /// Sets `responseData` from any JSON value; it must be an object.
    pub fn response_json(mut self, data: Value) -> Self {
        match data {
            Value::Object(m) => self.response_data = Some(m),
            _ => self.bad_extra = Some(EventError::NotAnObject("responseData")),
        }
        self
    }

    /// Adds another top-level field (e.g. `saveServiceCopy`, `tags`). Fields the builder owns are
    /// refused by [`build`](Self::build).
    pub fn field(mut self, name: impl Into<String>, value: Value) -> Self {
        let name = name.into();
        if RESERVED.contains(&name.as_str()) {
            self.bad_extra = Some(EventError::ReservedField(name));
        } else {
            self.extra.insert(name, value);
        }
        self
    }

    /// Checks the event and fixes its `id`.
    pub fn build(self) -> Result<Event, EventError> {
        if let Some(e) = self.bad_extra {
            return Err(e);
        }
        check_action(&self.action)?;
        let initiator = self.initiator.ok_or(EventError::MissingInitiator)?;
        let target = self.target.ok_or(EventError::MissingTarget)?;
        if initiator.id.is_empty() {
            return Err(EventError::EmptyId("initiator"));
        }
        if target.id.is_empty() {
            return Err(EventError::EmptyId("target"));
        }
        if let Some(crn) = &self.log_source_crn {
            check_crn(crn)?;
        }
        let id = self.id.unwrap_or_else(new_id);
        let mut m = self.extra;
        m.insert("id".into(), Value::String(id.clone()));
        let time = self.event_time.unwrap_or_else(OffsetDateTime::now_utc);
        m.insert("eventTime".into(), Value::String(format_event_time(time)));
        m.insert("action".into(), Value::String(self.action));
        m.insert(
            "outcome".into(),
            Value::String(self.outcome.as_str().into()),
        );
        m.insert("initiator".into(), initiator.to_value());
        m.insert("target".into(), target.to_value());
        if let Some(r) = &self.reason {
            m.insert("reason".into(), r.to_value());
        }
        if let Some(c) = self.correlation_id {
            m.insert("correlationId".into(), Value::String(c));
        }
        if let Some(c) = self.log_source_crn {
            m.insert("logSourceCRN".into(), Value::String(c));
        }
        if let Some(s) = self.severity {
            m.insert("severity".into(), Value::String(s.as_str().into()));
        }
        if let Some(s) = self.message {
            m.insert("message".into(), Value::String(s));
        }
        if let Some(d) = self.data_event {
            m.insert("dataEvent".into(), Value::Bool(d));
        }
        if let Some(o) = self.observer {
            let mut obs = Map::new();
            obs.insert("name".into(), Value::String(o));
            m.insert("observer".into(), Value::Object(obs));
        }
        if let Some(d) = self.request_data {
            m.insert("requestData".into(), Value::Object(d));
        }
        if let Some(d) = self.response_data {
            m.insert("responseData".into(), Value::Object(d));
        }
        Ok(Event { id, fields: m })
    }
}

/// A new random event id (UUID v4).
pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `YYYY-MM-DDTHH:MM:SS.ffffff+00:00` in UTC.
pub fn format_event_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    struct Stamp(OffsetDateTime);
    impl fmt::Display for Stamp {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let t = self.0;
            write!(
                f,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}+00:00",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                t.microsecond()
            )
        }
    }
    Stamp(t).to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn minimal(action: &str) -> EventBuilder {
        Event::builder(action)
            .initiator(Initiator::new("IBMid-1"))
            .target(Target::new("proj-1"))
    }

    #[test]
    fn actions_need_three_non_empty_parts_without_whitespace() {
        for ok in [
            "codeengine.application.create",
            "is.instance.instance.create",
            "myservice.project.restart",
        ] {
            assert!(check_action(ok).is_ok(), "{ok}");
        }
        for bad in [
            "create",
            "read/list",
            "a.b",
            "a..c",
            ".a.b",
            "a.b.",
            "a.b c.d",
            "",
        ] {
            assert!(
                matches!(check_action(bad), Err(EventError::Action(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_event_needs_an_initiator_a_target_and_a_valid_crn() {
        let no_init = Event::builder("a.b.c").target(Target::new("t")).build();
        assert_eq!(no_init.unwrap_err(), EventError::MissingInitiator);
        let no_target = Event::builder("a.b.c")
            .initiator(Initiator::new("u"))
            .build();
        assert_eq!(no_target.unwrap_err(), EventError::MissingTarget);
        let bad_crn = minimal("a.b.c")
            .log_source_crn("crn:v1:bluemix:public")
            .build();
        assert!(matches!(bad_crn, Err(EventError::Crn(_))));
        let reserved = minimal("a.b.c").field("action", json!("x")).build();
        assert!(matches!(reserved, Err(EventError::ReservedField(_))));
        let not_obj = minimal("a.b.c").request_json(json!("text")).build();
        assert_eq!(not_obj.unwrap_err(), EventError::NotAnObject("requestData"));
    }

    #[test]
    fn the_id_is_fixed_when_built_and_kept_in_the_json() {
        let a = minimal("a.b.c").build().unwrap();
        let b = minimal("a.b.c").build().unwrap();
        assert_ne!(a.id(), b.id());
        assert_eq!(a.as_json()["id"], json!(a.id()));
        let line: Value = serde_json::from_slice(&a.to_json_line()).unwrap();
        assert_eq!(line["id"], json!(a.id()));
        let chosen = minimal("a.b.c").id("evt-42").build().unwrap();
        assert_eq!(chosen.id(), "evt-42");
    }

    #[test]
    fn the_full_shape_uses_the_activity_tracker_field_names() {
        let t = time::macros::datetime!(2026-03-01 10:11:12.345678 +02:00);
        let e = Event::builder("codeengine.application.create")
            .outcome(Outcome::Failure)
            .event_time(t)
            .id("e1")
            .initiator(
                Initiator::new("IBMid-1")
                    .name("ada@example.com")
                    .credential_type("token")
                    .address("192.0.2.7")
                    .user_agent("curl/8"),
            )
            .target(
                Target::new("crn:v1:bluemix:public:codeengine:us-south:a/acme:p1:application:web")
                    .name("web")
                    .type_uri("codeengine/application"),
            )
            .reason(Reason::http(403).failure("no Writer role"))
            .correlation_id("c-1")
            .log_source_crn("crn:v1:bluemix:public:codeengine:us-south:a/acme:p1::")
            .request_json(json!({"name": "web"}))
            .data_event(false)
            .build()
            .unwrap();
        assert_eq!(
            Value::Object(e.as_json().clone()),
            json!({
                "id": "e1",
                "eventTime": "2026-03-01T08:11:12.345678+00:00",
                "action": "codeengine.application.create",
                "outcome": "failure",
                "initiator": {"id": "IBMid-1", "name": "ada@example.com",
                    "typeURI": "service/security/account/user",
                    "credential": {"type": "token"},
                    "host": {"address": "192.0.2.7", "addressType": "IPv4", "agent": "curl/8"}},
                "target": {"id": "crn:v1:bluemix:public:codeengine:us-south:a/acme:p1:application:web",
                    "name": "web", "typeURI": "codeengine/application"},
                "reason": {"reasonCode": 403, "reasonType": "Forbidden", "reasonForFailure": "no Writer role"},
                "correlationId": "c-1",
                "logSourceCRN": "crn:v1:bluemix:public:codeengine:us-south:a/acme:p1::",
                "requestData": {"name": "web"},
                "dataEvent": false,
            })
        );
    }
}
