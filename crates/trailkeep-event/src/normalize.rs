//! Normalisation: one raw event in, one canonical stored event (or every error) out.
//!
//! Owns: the order of the pipeline — shape mapping → field normalisation and
//! validation (all errors collected) → redaction → derived fields → size policy →
//! canonical bytes — and [`NormalizedEvent`]. Must never: do I/O, read the clock, or
//! produce bytes that change when they are parsed and normalised again.

use crate::action::{self, ACTION_RULE, ActionInfo, CrudClass};
use crate::canonical::{canonical_len, to_canonical_vec};
use crate::crn::Crn;
use crate::error::FieldError;
use crate::input::{InputLimits, RawEvent, Shape, kind_name, too_deep};
use crate::k8s;
use crate::redact::{
    DEFAULT_MARKER, HmacKeys, NoKeys, RedactAction, RedactionRule, Redactor, default_rules,
};
use crate::timestamp::normalize_event_time;
use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};
use std::fmt;

/// The text that replaces `responseData` (then `requestData`) of an event over the size limit.
pub const SIZE_PLACEHOLDER: &str =
    "Information about the action is not included for performance and size reasons.";

/// Stored field listing what the size policy dropped: an array of
/// `{"field": "responseData", "sha256": "<hex of the dropped value's canonical bytes>", "bytes": <its length>}`.
pub const DROPPED_FIELD: &str = "trailkeepDropped";

/// Stored field holding the `eventTime` text as sent, when it differs from the stored form.
pub const EVENT_TIME_ORIGINAL_FIELD: &str = "eventTimeOriginal";

/// Default maximum size of a stored event: 16 KiB of canonical JSON.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 16_384;

/// Default service prefix for actions mapped from Kubernetes audit events.
pub const DEFAULT_K8S_SERVICE_PREFIX: &str = "kubernetes";

/// The largest magnitude up to which every integer is exact as an IEEE double.
const MAX_SAFE: u64 = 1 << 53;

/// Server-wide settings that normalisation follows.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Maximum bytes of the canonical stored event (default 16,384).
    pub max_event_bytes: usize,
    /// Input limits; `max_depth` also bounds stringified `requestData`/`responseData`.
    pub limits: InputLimits,
    /// Redaction rules, applied in order (default [`default_rules`]). Credential tokens
    /// (`initiator|target|observer.credential.token`) are always redacted, whatever the rules.
    pub redaction_rules: Vec<RedactionRule>,
    /// The fixed marker for redacted values (default `[redacted]`).
    pub redaction_marker: String,
    /// Service prefix of actions mapped from Kubernetes audit events (default
    /// `kubernetes`; a Code Engine cluster would set `codeengine`).
    pub k8s_service_prefix: String,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            limits: InputLimits::default(),
            redaction_rules: default_rules(),
            redaction_marker: DEFAULT_MARKER.to_owned(),
            k8s_service_prefix: DEFAULT_K8S_SERVICE_PREFIX.to_owned(),
        }
    }
}

/// What one normalisation call needs besides the event.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    /// The settings.
    pub policy: &'a Policy,
    /// Account for events whose `logSourceCRN` names none (the writing key's default
    /// account; `default` for the bootstrap admin key).
    pub default_account: &'a str,
    /// The per-account HMAC keys for redaction (`Sync`, so that a `Context` is `Send`
    /// and `Sync` and can cross threads and `.await` points).
    pub keys: &'a (dyn HmacKeys + Sync),
}

impl<'a> Context<'a> {
    /// A context without HMAC keys (HMAC redaction falls back to the marker).
    pub fn new(policy: &'a Policy, default_account: &'a str) -> Self {
        Self {
            policy,
            default_account,
            keys: &NoKeys,
        }
    }

    /// The same context with `keys` as the HMAC key source.
    pub fn with_keys(self, keys: &'a (dyn HmacKeys + Sync)) -> Self {
        Self { keys, ..self }
    }
}

impl fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("policy", self.policy)
            .field("default_account", &self.default_account)
            .finish_non_exhaustive()
    }
}

/// One field the size policy replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedField {
    /// `responseData` or `requestData`.
    pub field: String,
    /// Lower-case hex SHA-256 of the dropped value's canonical bytes.
    pub sha256: String,
    /// Length of the dropped value's canonical bytes.
    pub bytes: usize,
}

/// A normalised, validated event ready to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NormalizedEvent {
    event: Value,
    canonical: Vec<u8>,
    account: String,
    location: String,
    id: String,
    crn: Option<Crn>,
    action: ActionInfo,
    dropped: Vec<DroppedField>,
    shape: Shape,
}

impl NormalizedEvent {
    /// The stored event (a JSON object; unknown fields kept).
    pub fn event(&self) -> &Value {
        &self.event
    }
    /// Take the stored event.
    pub fn into_event(self) -> Value {
        self.event
    }
    /// RFC 8785 canonical bytes of [`Self::event`]: what the ledger hashes.
    pub fn canonical_bytes(&self) -> &[u8] {
        &self.canonical
    }
    /// Take the canonical bytes.
    pub fn into_canonical_bytes(self) -> Vec<u8> {
        self.canonical
    }
    /// Take the stored event and its canonical bytes (without copying either).
    pub fn into_event_and_bytes(self) -> (Value, Vec<u8>) {
        (self.event, self.canonical)
    }
    /// The canonical bytes as text (they are UTF-8).
    pub fn canonical_str(&self) -> &str {
        std::str::from_utf8(&self.canonical).unwrap_or_default()
    }
    /// The account: the `a/<id>` of `logSourceCRN`, else the context's default account.
    pub fn account(&self) -> &str {
        &self.account
    }
    /// The location: the CRN's location, `global` when empty or without a CRN.
    pub fn location(&self) -> &str {
        &self.location
    }
    /// The event `id` (as sent, or derived).
    pub fn id(&self) -> &str {
        &self.id
    }
    /// The parsed `logSourceCRN`, when there is one.
    pub fn crn(&self) -> Option<&Crn> {
        self.crn.as_ref()
    }
    /// The CRUD class of the action's verb.
    pub fn crud(&self) -> CrudClass {
        self.action.crud
    }
    /// Service, object type, verb and CRUD class of the action.
    pub fn action_info(&self) -> &ActionInfo {
        &self.action
    }
    /// The fields the size policy dropped (also stored under [`DROPPED_FIELD`]).
    pub fn dropped(&self) -> &[DroppedField] {
        &self.dropped
    }
    /// The shape the event arrived in.
    pub fn shape(&self) -> Shape {
        self.shape
    }
}

/// Normalise and validate one raw event. On failure, every error found is returned.
pub fn normalize(raw: RawEvent, ctx: &Context<'_>) -> Result<NormalizedEvent, Vec<FieldError>> {
    let RawEvent { value, shape } = raw;
    let value = if shape == Shape::Kubernetes {
        k8s::to_cadf(value, &ctx.policy.k8s_service_prefix)?
    } else {
        value
    };
    let Value::Object(mut ev) = value else {
        return Err(vec![FieldError::new(
            "",
            format!(
                "the event must be a JSON object, found {}",
                kind_name(&value)
            ),
        )]);
    };
    let max_depth = ctx.policy.limits.max_depth;
    let mut errs = Vec::new();

    // Numbers first, so that every later rule sees the stored number forms.
    if !ev
        .values_mut()
        .all(|v| normalize_numbers(v, max_depth.saturating_sub(1)))
    {
        return Err(vec![FieldError::new(
            "",
            format!("JSON nested deeper than the limit of {max_depth} levels"),
        )]);
    }

    let id = normalize_id(&mut ev, &mut errs);
    normalize_time(&mut ev, &mut errs);
    let outcome = normalize_outcome(&mut ev, &mut errs);
    for (res, res_id, required) in [
        ("initiator", "initiatorId", true),
        ("target", "targetId", true),
        ("observer", "observerId", false),
    ] {
        check_resource(&mut ev, res, res_id, required, &mut errs);
    }
    normalize_reason(&mut ev, &mut errs);
    for key in ["requestData", "responseData"] {
        normalize_data(&mut ev, key, max_depth, &mut errs);
    }
    copy_reason_for_failure(&mut ev);
    normalize_bool(&mut ev, "dataEvent", Some(false), &mut errs);
    normalize_bool(&mut ev, "saveServiceCopy", None, &mut errs);
    let crn = normalize_crn(&mut ev, &mut errs);
    for key in ["message", "severity", "correlationId"] {
        check_string(&mut ev, key, key == "correlationId", &mut errs);
    }
    if let Some(Value::String(s)) = ev.get_mut("severity") {
        let lower = s.trim().to_ascii_lowercase();
        if matches!(lower.as_str(), "normal" | "warning" | "critical") && *s != lower {
            *s = lower;
        }
    }
    let info = analyse_action(&ev, &mut errs);
    if !errs.is_empty() {
        return Err(errs);
    }
    let (Some(info), Some(outcome)) = (info, outcome) else {
        return Err(vec![FieldError::new(
            "",
            "internal: action or outcome missing without error",
        )]);
    };

    let account = crn
        .as_ref()
        .and_then(Crn::account)
        .unwrap_or(ctx.default_account)
        .to_owned();
    let location = crn
        .as_ref()
        .map_or("global", Crn::location_or_global)
        .to_owned();

    // Redaction: credential tokens always, then the rules.
    let mut event = Value::Object(ev);
    let mut redactor = Redactor::new(&ctx.policy.redaction_marker, ctx.keys, &account);
    for res in ["initiator", "target", "observer"] {
        if let Some(token) = event
            .get_mut(res)
            .and_then(|r| r.get_mut("credential"))
            .and_then(|c| c.get_mut("token"))
        {
            redactor.replace(token, RedactAction::Hmac);
        }
    }
    redactor.apply_rules(&mut event, &ctx.policy.redaction_rules, &info.service);
    let Value::Object(ev) = &mut event else {
        unreachable!("built as an object above")
    };

    // Derived fields.
    if !ev.contains_key("message") {
        let target_name = ev
            .get("target")
            .and_then(|t| t.get("name"))
            .and_then(Value::as_str);
        let message = action::derive_message(&info, target_name, outcome == "failure");
        ev.insert("message".into(), Value::String(message));
    }
    if !ev.contains_key("severity") {
        let code = ev
            .get("reason")
            .and_then(|r| r.get("reasonCode"))
            .and_then(Value::as_i64);
        let severity = action::derive_severity(&outcome, info.crud, code);
        ev.insert("severity".into(), Value::String(severity.to_owned()));
    }
    let id = match id {
        Some(id) => id,
        None => {
            let id = derive_id(&account, &event);
            if let Value::Object(ev) = &mut event {
                ev.insert("id".into(), Value::String(id.clone()));
            }
            id
        }
    };

    // Size policy.
    let mut canonical = to_canonical_vec(&event);
    let mut dropped = Vec::new();
    let limit = ctx.policy.max_event_bytes;
    if canonical.len() > limit {
        for field in ["responseData", "requestData"] {
            let Value::Object(ev) = &mut event else { break };
            let Some(old) = ev.get(field) else { continue };
            if old.as_str() == Some(SIZE_PLACEHOLDER) {
                continue;
            }
            let bytes = to_canonical_vec(old);
            let record = DroppedField {
                field: field.to_owned(),
                sha256: hex::encode(Sha256::digest(&bytes)),
                bytes: bytes.len(),
            };
            ev.insert(field.to_owned(), Value::String(SIZE_PLACEHOLDER.to_owned()));
            let mut entry = Map::new();
            entry.insert("field".into(), Value::String(record.field.clone()));
            entry.insert("sha256".into(), Value::String(record.sha256.clone()));
            entry.insert("bytes".into(), Value::from(record.bytes));
            match ev.get_mut(DROPPED_FIELD) {
                Some(Value::Array(list)) => list.push(Value::Object(entry)),
                _ => {
                    ev.insert(
                        DROPPED_FIELD.into(),
                        Value::Array(vec![Value::Object(entry)]),
                    );
                }
            }
            dropped.push(record);
            canonical = to_canonical_vec(&event);
            if canonical.len() <= limit {
                break;
            }
        }
        if canonical.len() > limit {
            return Err(vec![FieldError::new(
                "",
                oversize_reason(&event, canonical.len(), limit),
            )]);
        }
    }

    Ok(NormalizedEvent {
        event,
        canonical,
        account,
        location,
        id,
        crn,
        action: info,
        dropped,
        shape,
    })
}

fn oversize_reason(event: &Value, size: usize, limit: usize) -> String {
    let mut fields: Vec<(&String, usize)> = event
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k, canonical_len(v))).collect())
        .unwrap_or_default();
    fields.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let largest: Vec<String> = fields
        .iter()
        .take(3)
        .map(|(k, n)| format!("{k} ({n} bytes)"))
        .collect();
    format!(
        "the event is {size} bytes of canonical JSON, over the limit of {limit} bytes even without responseData and requestData; largest fields: {}",
        largest.join(", ")
    )
}

/// Normalise numbers in place (see the crate docs); `false` when nested deeper than `depth_left`.
fn normalize_numbers(v: &mut Value, depth_left: usize) -> bool {
    match v {
        Value::Number(n) => {
            if let Some(new) = normalize_number(n) {
                *v = new;
            }
            true
        }
        Value::Array(items) => {
            depth_left > 0
                && items
                    .iter_mut()
                    .all(|x| normalize_numbers(x, depth_left - 1))
        }
        Value::Object(map) => {
            depth_left > 0
                && map
                    .values_mut()
                    .all(|x| normalize_numbers(x, depth_left - 1))
        }
        _ => true,
    }
}

fn normalize_number(n: &Number) -> Option<Value> {
    if let Some(u) = n.as_u64() {
        return (u > MAX_SAFE).then(|| Value::String(u.to_string()));
    }
    if let Some(i) = n.as_i64() {
        return (i.unsigned_abs() > MAX_SAFE).then(|| Value::String(i.to_string()));
    }
    let f = n.as_f64()?;
    if f.fract() != 0.0 {
        return None;
    }
    if f.abs() <= MAX_SAFE as f64 {
        return Some(Value::from(f as i64));
    }
    if f.abs() < 1e21 {
        // JCS would print these as plain digits, which parse back as integers.
        return Some(Value::String(
            ryu_js::Buffer::new().format_finite(f).to_owned(),
        ));
    }
    None
}

fn normalize_id(ev: &mut Map<String, Value>, errs: &mut Vec<FieldError>) -> Option<String> {
    match ev.get("id") {
        None => None,
        Some(Value::Null) => {
            ev.remove("id");
            None
        }
        Some(Value::String(s)) if s.is_empty() => {
            ev.remove("id");
            None
        }
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => {
            let s = n.to_string();
            ev.insert("id".into(), Value::String(s.clone()));
            Some(s)
        }
        Some(other) => {
            errs.push(FieldError::new(
                "id",
                format!("must be a string, found {}", kind_name(other)),
            ));
            None
        }
    }
}

fn normalize_time(ev: &mut Map<String, Value>, errs: &mut Vec<FieldError>) {
    match ev.get("eventTime") {
        None | Some(Value::Null) => errs.push(FieldError::new("eventTime", "is required")),
        Some(Value::String(s)) => match normalize_event_time(s) {
            Ok(stored) => {
                if stored != *s {
                    let original = s.clone();
                    ev.insert(EVENT_TIME_ORIGINAL_FIELD.into(), Value::String(original));
                    ev.insert("eventTime".into(), Value::String(stored));
                }
            }
            Err(rule) => errs.push(FieldError::new("eventTime", rule)),
        },
        Some(other) => errs.push(FieldError::new(
            "eventTime",
            format!(
                "must be a timestamp string like 2024-05-01T12:30:00.25+00:00, found {}",
                kind_name(other)
            ),
        )),
    }
}

fn normalize_outcome(ev: &mut Map<String, Value>, errs: &mut Vec<FieldError>) -> Option<String> {
    const RULE: &str = "must be one of success, failure, pending, unknown";
    match ev.get_mut("outcome") {
        None | Some(Value::Null) => {
            errs.push(FieldError::new(
                "outcome",
                format!("is required; it {RULE}"),
            ));
            None
        }
        Some(Value::String(s)) => {
            let lower = s.trim().to_ascii_lowercase();
            if matches!(
                lower.as_str(),
                "success" | "failure" | "pending" | "unknown"
            ) {
                if *s != lower {
                    *s = lower.clone();
                }
                Some(lower)
            } else {
                errs.push(FieldError::new("outcome", format!("{RULE}, found {s:?}")));
                None
            }
        }
        Some(other) => {
            errs.push(FieldError::new(
                "outcome",
                format!("{RULE}, found {}", kind_name(other)),
            ));
            None
        }
    }
}

fn check_resource(
    ev: &mut Map<String, Value>,
    res: &str,
    res_id: &str,
    required: bool,
    errs: &mut Vec<FieldError>,
) {
    let has_object = match ev.get(res) {
        None => false,
        Some(Value::Null) => {
            ev.remove(res);
            false
        }
        Some(Value::Object(_)) => true,
        Some(other) => {
            errs.push(FieldError::new(
                res,
                format!("must be an object, found {}", kind_name(other)),
            ));
            true
        }
    };
    let has_ref = match ev.get(res_id) {
        None => false,
        Some(Value::Null) => {
            ev.remove(res_id);
            false
        }
        Some(Value::String(s)) if !s.is_empty() => true,
        Some(other) => {
            errs.push(FieldError::new(
                res_id,
                format!("must be a non-empty string, found {}", describe(other)),
            ));
            true
        }
    };
    if required && !has_object && !has_ref {
        let article = if res.starts_with(['i', 'o']) {
            "an"
        } else {
            "a"
        };
        errs.push(FieldError::new(
            res,
            format!("is required: {article} `{res}` object or {article} `{res_id}` reference"),
        ));
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) if s.is_empty() => "an empty string".into(),
        other => kind_name(other).into(),
    }
}

fn normalize_reason(ev: &mut Map<String, Value>, errs: &mut Vec<FieldError>) {
    match ev.get_mut("reason") {
        None => {}
        Some(Value::Null) => {
            ev.remove("reason");
        }
        Some(Value::Object(reason)) => {
            if let Some(code) = reason.get_mut("reasonCode")
                && let Value::String(s) = code
                && let Some(n) = integer_string(s)
            {
                *code = Value::from(n);
            }
        }
        Some(other) => errs.push(FieldError::new(
            "reason",
            format!("must be an object, found {}", kind_name(other)),
        )),
    }
}

/// The integer in `s` (surrounding spaces and a `+` allowed) when it is exact as a double.
fn integer_string(s: &str) -> Option<i64> {
    let t = s.trim();
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = t.parse().ok()?;
    (n.unsigned_abs() <= MAX_SAFE).then_some(n)
}

fn normalize_data(
    ev: &mut Map<String, Value>,
    key: &str,
    max_depth: usize,
    errs: &mut Vec<FieldError>,
) {
    match ev.get(key) {
        Some(Value::Null) => {
            ev.remove(key);
        }
        Some(Value::String(s)) if s.trim_start().starts_with('{') => {
            if let Ok(parsed @ Value::Object(_)) = serde_json::from_str::<Value>(s) {
                let mut parsed = parsed;
                if !normalize_numbers(&mut parsed, max_depth.saturating_sub(1))
                    || too_deep(&parsed, max_depth.saturating_sub(1)).is_some()
                {
                    errs.push(FieldError::new(
                        key,
                        format!(
                            "stringified JSON nested deeper than the limit of {max_depth} levels"
                        ),
                    ));
                } else {
                    ev.insert(key.to_owned(), parsed);
                }
            }
        }
        _ => {}
    }
}

fn copy_reason_for_failure(ev: &mut Map<String, Value>) {
    let Some(rff) = ev
        .get("requestData")
        .and_then(|d| d.get("reasonForFailure"))
        .filter(|v| !v.is_null())
        .cloned()
    else {
        return;
    };
    let reason = ev
        .entry("reason")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(reason) = reason {
        reason.entry("reasonForFailure").or_insert(rff);
    }
}

fn normalize_bool(
    ev: &mut Map<String, Value>,
    key: &str,
    default: Option<bool>,
    errs: &mut Vec<FieldError>,
) {
    let new = match ev.get(key) {
        None | Some(Value::Null) => match default {
            Some(d) => Some(d),
            None => {
                ev.remove(key);
                return;
            }
        },
        Some(Value::Bool(_)) => return,
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        },
        Some(Value::Number(n)) => match n.as_u64() {
            Some(0) => Some(false),
            Some(1) => Some(true),
            _ => None,
        },
        Some(_) => None,
    };
    match new {
        Some(b) => {
            ev.insert(key.to_owned(), Value::Bool(b));
        }
        None => errs.push(FieldError::new(
            key,
            "must be a boolean (true/false or \"true\"/\"false\")",
        )),
    }
}

fn normalize_crn(ev: &mut Map<String, Value>, errs: &mut Vec<FieldError>) -> Option<Crn> {
    match ev.get("logSourceCRN") {
        None => None,
        Some(Value::Null) => {
            ev.remove("logSourceCRN");
            None
        }
        Some(Value::String(s)) if s.is_empty() => {
            ev.remove("logSourceCRN");
            None
        }
        Some(Value::String(s)) => match Crn::parse(s) {
            Ok(crn) => {
                if crn.as_str() != s {
                    ev.insert(
                        "logSourceCRN".into(),
                        Value::String(crn.as_str().to_owned()),
                    );
                }
                Some(crn)
            }
            Err(e) => {
                errs.push(FieldError::new("logSourceCRN", e.to_string()));
                None
            }
        },
        Some(other) => {
            errs.push(FieldError::new(
                "logSourceCRN",
                format!("must be a CRN string, found {}", kind_name(other)),
            ));
            None
        }
    }
}

fn check_string(
    ev: &mut Map<String, Value>,
    key: &str,
    number_ok: bool,
    errs: &mut Vec<FieldError>,
) {
    match ev.get(key) {
        None | Some(Value::String(_)) => {}
        Some(Value::Null) => {
            ev.remove(key);
        }
        Some(Value::Number(n)) if number_ok => {
            let s = n.to_string();
            ev.insert(key.to_owned(), Value::String(s));
        }
        Some(other) => errs.push(FieldError::new(
            key,
            format!("must be a string, found {}", kind_name(other)),
        )),
    }
}

fn analyse_action(ev: &Map<String, Value>, errs: &mut Vec<FieldError>) -> Option<ActionInfo> {
    let type_of = |res: &str| {
        ev.get(res)
            .and_then(|r| r.get("typeURI"))
            .and_then(Value::as_str)
    };
    match ev.get("action") {
        None | Some(Value::Null) => {
            errs.push(FieldError::new(
                "action",
                format!("is required; it {ACTION_RULE}"),
            ));
            None
        }
        Some(Value::String(a)) => {
            let info = action::analyse(a, type_of("target"), type_of("observer"));
            if info.is_none() {
                errs.push(FieldError::new(
                    "action",
                    format!("{ACTION_RULE}, found {a:?}"),
                ));
            }
            info
        }
        Some(other) => {
            errs.push(FieldError::new(
                "action",
                format!("must be a string, found {}", kind_name(other)),
            ));
            None
        }
    }
}

/// A UUID (RFC 9562 version 8 layout) from SHA-256 of the account and the canonical
/// bytes of the event without `id`: the same event sent twice gets the same id, so the
/// ledger's (account, id) idempotency also covers emitters that send no id.
fn derive_id(account: &str, event: &Value) -> String {
    let mut h = Sha256::new();
    h.update(b"trailkeep-event-id-v1\0");
    h.update(account.as_bytes());
    h.update(b"\0");
    h.update(to_canonical_vec(event));
    let digest = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0F) | 0x80;
    b[8] = (b[8] & 0x3F) | 0x80;
    let x = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &x[0..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn context_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<super::Context<'static>>();
        assert_send_sync::<super::NormalizedEvent>();
    }
}
