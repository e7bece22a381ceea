//! The routing objects (targets, routes, settings), their validation from API input with JSON
//! paths, and their API form (secrets shown only as "set").
//!
//! Pure: no I/O. The stored form is the serde form of these types (`store.rs`); the API form is
//! [`Target::to_api`], [`Route::to_api`], [`Settings::to_api`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::alerts::model::{MAX_TEXT, Problems};

/// The id of the built-in target that stands for this instance's own ledger.
pub const LOCAL_TARGET: &str = "local";
/// Most targets (the built-in `local` one included).
pub const MAX_TARGETS: usize = 64;
/// Most locations in one rule, and most targets in one rule.
pub const MAX_RULE_LOCATIONS: usize = 100;
pub const MAX_RULE_TARGETS: usize = 16;
/// Most location aliases.
pub const MAX_ALIASES: usize = 1_000;
/// Most accounts with their own data-event setting.
pub const MAX_DATA_EVENT_ACCOUNTS: usize = 10_000;

/// Where events can go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    pub id: String,
    pub name: String,
    #[serde(flatten)]
    pub kind: TargetKind,
    pub created_at: String,
    pub updated_at: String,
}

/// The kind of a target and its fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "lowercase",
    rename_all_fields = "camelCase"
)]
pub enum TargetKind {
    /// This instance's ledger.
    Local,
    /// Another Trailkeep instance: `POST <url>/v1/events` with a writer key.
    Trailkeep { url: String, key: String },
    /// JSON batches `POST`ed to a URL, signed with HMAC-SHA256 (`X-Trailkeep-Signature`).
    Webhook { url: String, secret: String },
    /// RFC 5424 messages, octet-counted (RFC 6587) over TCP, optionally TLS.
    Syslog {
        address: String,
        #[serde(default)]
        tls: bool,
        /// PEM certificate(s) to trust instead of the public roots.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ca_cert: Option<String>,
        /// The name the TLS certificate must carry (default: the host of `address`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        server_name: Option<String>,
    },
    /// Objects in an S3-compatible bucket (NDJSON or Parquet, the export formats), partitioned
    /// `<prefix>/<account>/<location>/<yyyy>/<mm>/<dd>/<hh>/<first>-<last>.<ext>` (`send::s3`).
    S3 {
        /// `http(s)://host[:port]` of a self-hosted server; `None` for AWS S3 itself.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
        bucket: String,
        region: String,
        #[serde(default)]
        prefix: String,
        access_key_id: String,
        secret_access_key: String,
        /// `ndjson` or `parquet`.
        format: String,
    },
}

impl TargetKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            TargetKind::Local => "local",
            TargetKind::Trailkeep { .. } => "trailkeep",
            TargetKind::Webhook { .. } => "webhook",
            TargetKind::Syslog { .. } => "syslog",
            TargetKind::S3 { .. } => "s3",
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self, TargetKind::Local)
    }
}

impl Target {
    /// The built-in `local` target.
    pub fn builtin_local() -> Target {
        Target {
            id: LOCAL_TARGET.into(),
            name: "this instance".into(),
            kind: TargetKind::Local,
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    /// The API form: secrets are replaced by `keySet` / `secretSet`.
    pub fn to_api(&self) -> Value {
        let mut v = json!({
            "id": self.id,
            "name": self.name,
            "type": self.kind.type_name(),
        });
        match &self.kind {
            TargetKind::Local => v["builtin"] = json!(self.id == LOCAL_TARGET),
            TargetKind::Trailkeep { url, key } => {
                v["url"] = json!(url);
                v["keySet"] = json!(!key.is_empty());
            }
            TargetKind::Webhook { url, secret } => {
                v["url"] = json!(url);
                v["secretSet"] = json!(!secret.is_empty());
            }
            TargetKind::Syslog {
                address,
                tls,
                ca_cert,
                server_name,
            } => {
                v["address"] = json!(address);
                v["tls"] = json!(tls);
                if let Some(ca) = ca_cert {
                    v["caCert"] = json!(ca);
                }
                if let Some(n) = server_name {
                    v["serverName"] = json!(n);
                }
            }
            TargetKind::S3 {
                endpoint,
                bucket,
                region,
                prefix,
                access_key_id,
                secret_access_key,
                format,
            } => {
                if let Some(e) = endpoint {
                    v["endpoint"] = json!(e);
                }
                v["bucket"] = json!(bucket);
                v["region"] = json!(region);
                v["prefix"] = json!(prefix);
                v["accessKeyId"] = json!(access_key_id);
                v["secretAccessKeySet"] = json!(!secret_access_key.is_empty());
                v["format"] = json!(format);
            }
        }
        if !self.created_at.is_empty() {
            v["createdAt"] = json!(self.created_at);
            v["updatedAt"] = json!(self.updated_at);
        }
        v
    }
}

/// One rule of a route: events whose location matches one of `locations` go to `target_ids`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    pub locations: Vec<String>,
    pub target_ids: Vec<String>,
}

/// An ordered list of rules; the first that matches an event decides where the route sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    pub id: String,
    pub name: String,
    pub rules: Vec<Rule>,
    pub created_at: String,
    pub updated_at: String,
}

impl Route {
    pub fn to_api(&self) -> Value {
        serde_json::to_value(self).expect("a route serialises")
    }
}

/// Whether data events (`dataEvent: true`) are collected: a default and per-account exceptions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataEvents {
    pub collect: bool,
    #[serde(default)]
    pub accounts: BTreeMap<String, bool>,
}

impl Default for DataEvents {
    fn default() -> Self {
        DataEvents {
            collect: true,
            accounts: BTreeMap::new(),
        }
    }
}

impl DataEvents {
    pub fn collects(&self, account: &str) -> bool {
        self.accounts.get(account).copied().unwrap_or(self.collect)
    }
}

/// Instance-wide routing settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    /// Where events that no route handles go. `None` (never set): the implicit default, `local`.
    /// `Some([])`: nowhere — such events are dropped and reported.
    #[serde(default)]
    pub default_targets: Option<Vec<String>>,
    /// `ap-south → jp-tok`: events of the key's location are also matched as the value's.
    #[serde(default)]
    pub location_aliases: BTreeMap<String, String>,
    #[serde(default)]
    pub data_events: DataEvents,
    #[serde(default)]
    pub updated_at: String,
}

impl Settings {
    /// The default targets in effect.
    pub fn effective_default_targets(&self) -> Vec<String> {
        self.default_targets
            .clone()
            .unwrap_or_else(|| vec![LOCAL_TARGET.to_string()])
    }

    pub fn to_api(&self, location: &str, limits: &Limits) -> Value {
        json!({
            "location": location,
            "defaultTargets": self.effective_default_targets(),
            "defaultTargetsImplicit": self.default_targets.is_none(),
            "locationAliases": self.location_aliases,
            "dataEvents": self.data_events,
            "maxRoutes": limits.max_routes,
            "maxRulesPerRoute": limits.max_rules,
            "updatedAt": self.updated_at,
        })
    }
}

/// Configured limits (server options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_routes: usize,
    pub max_rules: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_routes: 30,
            max_rules: 10,
        }
    }
}

/// A location as written in rules, aliases and `--location`: lower-case letters, digits and `-`,
/// 1 to 64 bytes, starting with a letter (`us-south`, `eu-de-1`, `global`).
pub fn is_valid_location(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 64
        && l.as_bytes()[0].is_ascii_lowercase()
        && l.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !l.ends_with('-')
}

/// Reads a target from a create request (`POST /v1/targets`).
pub fn parse_target(p: &mut Problems, body: &Value) -> Option<(String, TargetKind)> {
    let name = p.text(body, "name", "name", true);
    let kind = match body.get("type").and_then(Value::as_str) {
        Some(t) => parse_kind(p, t, body, None),
        None => {
            p.add(
                "type",
                "is required: local, trailkeep, webhook, s3 or syslog",
            );
            None
        }
    };
    Some((name?, kind?))
}

/// Reads the fields of a target of type `t`; with `old`, fields left out keep their old values
/// (a PATCH), so a secret need not be sent again.
pub fn parse_kind(
    p: &mut Problems,
    t: &str,
    body: &Value,
    old: Option<&TargetKind>,
) -> Option<TargetKind> {
    let allowed: &[&str] = match t {
        "local" => &[],
        "trailkeep" => &["url", "key"],
        "webhook" => &["url", "secret"],
        "syslog" => &["address", "tls", "caCert", "serverName"],
        "s3" => &[
            "endpoint",
            "bucket",
            "region",
            "prefix",
            "accessKeyId",
            "secretAccessKey",
            "format",
        ],
        _ => {
            p.add(
                "type",
                "must be one of local, trailkeep, webhook, s3, syslog",
            );
            return None;
        }
    };
    if let Some(obj) = body.as_object() {
        for key in obj.keys() {
            if !["name", "type"].contains(&key.as_str()) && !allowed.contains(&key.as_str()) {
                p.add(key, format!("is not a field of a {t} target"));
            }
        }
    }
    let old_str = |f: &str| -> Option<String> {
        match (old, f) {
            (Some(TargetKind::Trailkeep { url, .. } | TargetKind::Webhook { url, .. }), "url") => {
                Some(url.clone())
            }
            (Some(TargetKind::Trailkeep { key, .. }), "key") => Some(key.clone()),
            (Some(TargetKind::Webhook { secret, .. }), "secret") => Some(secret.clone()),
            (Some(TargetKind::Syslog { address, .. }), "address") => Some(address.clone()),
            _ => None,
        }
    };
    let required = |p: &mut Problems, f: &str| -> Option<String> {
        match p.text(body, f, f, old_str(f).is_none()) {
            Some(v) => Some(v),
            None => old_str(f),
        }
    };
    match t {
        "local" => Some(TargetKind::Local),
        "s3" => parse_s3(p, body, old),
        "trailkeep" | "webhook" => {
            let url = required(p, "url");
            if let Some(u) = &url {
                check_url(p, u);
            }
            let secret_field = if t == "trailkeep" { "key" } else { "secret" };
            let secret = required(p, secret_field);
            if let Some(s) = &secret
                && s.len() < 16
            {
                p.add(secret_field, "must be at least 16 characters");
            }
            let (url, secret) = (url?, secret?);
            Some(if t == "trailkeep" {
                TargetKind::Trailkeep { url, key: secret }
            } else {
                TargetKind::Webhook { url, secret }
            })
        }
        _ => {
            let address = required(p, "address");
            if let Some(a) = &address {
                check_address(p, a);
            }
            let (old_tls, old_ca, old_name) = match old {
                Some(TargetKind::Syslog {
                    tls,
                    ca_cert,
                    server_name,
                    ..
                }) => (*tls, ca_cert.clone(), server_name.clone()),
                _ => (false, None, None),
            };
            let tls = match body.get("tls") {
                None | Some(Value::Null) => old_tls,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    p.add("tls", "must be true or false");
                    false
                }
            };
            let ca_cert = match body.get("caCert") {
                None => old_ca,
                Some(Value::Null) => None,
                Some(Value::String(pem)) => {
                    if pem.len() > 64 * 1024 {
                        p.add("caCert", "is longer than 65536 bytes");
                    } else if let Err(e) = crate::routing::syslog::parse_ca(pem) {
                        p.add("caCert", e);
                    }
                    Some(pem.clone())
                }
                Some(_) => {
                    p.add("caCert", "must be PEM text");
                    None
                }
            };
            let server_name = match body.get("serverName") {
                None => old_name,
                Some(Value::Null) => None,
                Some(_) => p.text(body, "serverName", "serverName", false),
            };
            if ca_cert.is_some() && !tls {
                p.add("caCert", "needs \"tls\": true");
            }
            Some(TargetKind::Syslog {
                address: address?,
                tls,
                ca_cert,
                server_name,
            })
        }
    }
}

/// The fields of an `s3` target; with `old` (a PATCH), fields left out keep their old values.
fn parse_s3(p: &mut Problems, body: &Value, old: Option<&TargetKind>) -> Option<TargetKind> {
    let old = match old {
        Some(TargetKind::S3 {
            endpoint,
            bucket,
            region,
            prefix,
            access_key_id,
            secret_access_key,
            format,
        }) => Some((
            endpoint.clone(),
            bucket.clone(),
            region.clone(),
            prefix.clone(),
            access_key_id.clone(),
            secret_access_key.clone(),
            format.clone(),
        )),
        _ => None,
    };
    let endpoint = match body.get("endpoint") {
        None => old.as_ref().and_then(|o| o.0.clone()),
        Some(Value::Null) => None,
        Some(_) => {
            let e = p.text(body, "endpoint", "endpoint", false);
            if let Some(u) = &e {
                match reqwest::Url::parse(u) {
                    Ok(url)
                        if matches!(url.scheme(), "http" | "https")
                            && url.host().is_some()
                            && url.query().is_none() => {}
                    Ok(_) => p.add(
                        "endpoint",
                        "must be an http:// or https:// URL with a host (e.g. http://127.0.0.1:3900)",
                    ),
                    Err(e) => p.add("endpoint", format!("is not a URL: {e}")),
                }
            }
            e
        }
    };
    let field = |p: &mut Problems, f: &str, old: Option<String>, default: Option<&str>| {
        let required = old.is_none() && default.is_none();
        match p.text(body, f, f, required) {
            Some(v) => Some(v),
            // A wrong value (already reported).
            None if body.get(f).is_some_and(|v| !v.is_null()) => None,
            None => old.or(default.map(str::to_string)),
        }
    };
    let bucket = field(p, "bucket", old.as_ref().map(|o| o.1.clone()), None);
    if let Some(b) = &bucket
        && !is_valid_bucket(b)
    {
        p.add(
            "bucket",
            "must be a bucket name: 3 to 63 lower-case letters, digits, '.' or '-', starting and ending with a letter or digit",
        );
    }
    let region = field(
        p,
        "region",
        old.as_ref().map(|o| o.2.clone()),
        Some("us-east-1"),
    );
    if let Some(r) = &region
        && (r.len() > 64
            || !r
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    {
        p.add(
            "region",
            "must be letters, digits, '-' or '_' (e.g. us-east-1, garage)",
        );
    }
    let prefix = match body.get("prefix") {
        None => old.as_ref().map(|o| o.3.clone()).unwrap_or_default(),
        Some(Value::String(s)) => {
            let trimmed = s.trim_matches('/').to_string();
            if let Err(why) = check_prefix(&trimmed) {
                p.add("prefix", why);
            }
            trimmed
        }
        Some(_) => {
            p.add(
                "prefix",
                "must be text (a key prefix such as audit/us-south)",
            );
            String::new()
        }
    };
    let access_key_id = field(p, "accessKeyId", old.as_ref().map(|o| o.4.clone()), None);
    let secret_access_key = field(
        p,
        "secretAccessKey",
        old.as_ref().map(|o| o.5.clone()),
        None,
    );
    let format = field(
        p,
        "format",
        old.as_ref().map(|o| o.6.clone()),
        Some("ndjson"),
    );
    if let Some(f) = &format
        && f != "ndjson"
        && f != "parquet"
    {
        p.add("format", "must be ndjson or parquet");
    }
    for (f, v) in [
        ("accessKeyId", &access_key_id),
        ("secretAccessKey", &secret_access_key),
    ] {
        if v.as_ref().is_some_and(|v| v.trim().is_empty()) {
            p.add(f, "must not be empty");
        }
    }
    Some(TargetKind::S3 {
        endpoint,
        bucket: bucket?,
        region: region?,
        prefix,
        access_key_id: access_key_id?,
        secret_access_key: secret_access_key?,
        format: format?,
    })
}

/// An S3 bucket name (the common rules of AWS S3, Garage and MinIO).
fn is_valid_bucket(b: &str) -> bool {
    let bytes = b.as_bytes();
    (3..=63).contains(&b.len())
        && bytes
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[b.len() - 1].is_ascii_alphanumeric()
        && !b.contains("..")
}

/// A key prefix: at most 512 bytes of `[A-Za-z0-9._-]` segments separated by `/`, no empty,
/// `.` or `..` segment.
fn check_prefix(prefix: &str) -> Result<(), &'static str> {
    if prefix.is_empty() {
        return Ok(());
    }
    if prefix.len() > 512 {
        return Err("is longer than 512 bytes");
    }
    for seg in prefix.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err("must be segments separated by single '/' (no empty, '.' or '..' segment)");
        }
        if !seg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err("may hold only letters, digits, '-', '_', '.' and '/'");
        }
    }
    Ok(())
}

fn check_url(p: &mut Problems, u: &str) {
    match reqwest::Url::parse(u) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
        Ok(_) => p.add("url", "must be an http:// or https:// URL with a host"),
        Err(e) => p.add("url", format!("is not a URL: {e}")),
    }
}

fn check_address(p: &mut Problems, a: &str) {
    match a.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|n| n > 0) => {}
        _ => p.add("address", "must be host:port (e.g. siem.example.com:6514)"),
    }
}

/// Reads the rules of a route, checking them against the known target ids and the limits.
pub fn parse_rules(
    p: &mut Problems,
    v: Option<&Value>,
    targets: &[Target],
    limits: &Limits,
) -> Vec<Rule> {
    let Some(Value::Array(items)) = v else {
        p.add("rules", "is required: a list of {locations, targetIds}");
        return Vec::new();
    };
    if items.is_empty() {
        p.add("rules", "must hold at least one rule");
    }
    if items.len() > limits.max_rules {
        p.add(
            "rules",
            format!(
                "holds {} rules; a route holds at most {} (--routing-max-rules)",
                items.len(),
                limits.max_rules
            ),
        );
        return Vec::new();
    }
    let mut rules = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let base = format!("rules[{i}]");
        if let Some(obj) = item.as_object() {
            for key in obj.keys() {
                if key != "locations" && key != "targetIds" {
                    p.add(&format!("{base}.{key}"), "is not a field of a rule");
                }
            }
        } else {
            p.add(&base, "must be an object {locations, targetIds}");
            continue;
        }
        let locations = string_list(p, item.get("locations"), &format!("{base}.locations"));
        if locations.len() > MAX_RULE_LOCATIONS {
            p.add(
                &format!("{base}.locations"),
                format!("at most {MAX_RULE_LOCATIONS} locations"),
            );
        }
        for (j, l) in locations.iter().enumerate() {
            if l != "*" && !is_valid_location(l) {
                p.add(
                    &format!("{base}.locations[{j}]"),
                    "must be a location (lower-case letters, digits, '-': us-south, eu-de), global or *",
                );
            }
        }
        let target_ids = string_list(p, item.get("targetIds"), &format!("{base}.targetIds"));
        if target_ids.len() > MAX_RULE_TARGETS {
            p.add(
                &format!("{base}.targetIds"),
                format!("at most {MAX_RULE_TARGETS} targets"),
            );
        }
        for (j, t) in target_ids.iter().enumerate() {
            if !targets.iter().any(|x| &x.id == t) {
                p.add(
                    &format!("{base}.targetIds[{j}]"),
                    format!("no target {t:?}"),
                );
            }
        }
        rules.push(Rule {
            locations,
            target_ids,
        });
    }
    rules
}

/// A non-empty list of distinct non-empty strings.
fn string_list(p: &mut Problems, v: Option<&Value>, path: &str) -> Vec<String> {
    let Some(Value::Array(items)) = v else {
        p.add(path, "is required: a non-empty list of strings");
        return Vec::new();
    };
    if items.is_empty() {
        p.add(path, "must not be empty");
    }
    let mut out: Vec<String> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item.as_str() {
            Some(s) if !s.is_empty() && s.len() <= MAX_TEXT => {
                if !out.iter().any(|o| o == s) {
                    out.push(s.to_string());
                }
            }
            _ => p.add(&format!("{path}[{i}]"), "must be a non-empty string"),
        }
    }
    out
}

/// Applies a settings change (`PUT`/`PATCH /v1/settings`: the fields given replace the current
/// ones; `"defaultTargets": null` restores the implicit default).
pub fn apply_settings(p: &mut Problems, body: &Value, settings: &mut Settings, targets: &[Target]) {
    if let Some(obj) = body.as_object() {
        for key in obj.keys() {
            if !["defaultTargets", "locationAliases", "dataEvents"].contains(&key.as_str()) {
                p.add(
                    key,
                    "is not a setting (defaultTargets, locationAliases, dataEvents)",
                );
            }
        }
    }
    match body.get("defaultTargets") {
        None => {}
        Some(Value::Null) => settings.default_targets = None,
        Some(Value::Array(items)) => {
            let mut ids = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some(t) if targets.iter().any(|x| x.id == t) => {
                        if !ids.iter().any(|x| x == t) {
                            ids.push(t.to_string());
                        }
                    }
                    Some(t) => p.add(&format!("defaultTargets[{i}]"), format!("no target {t:?}")),
                    None => p.add(&format!("defaultTargets[{i}]"), "must be a target id"),
                }
            }
            if ids.len() > MAX_RULE_TARGETS {
                p.add(
                    "defaultTargets",
                    format!("at most {MAX_RULE_TARGETS} targets"),
                );
            }
            settings.default_targets = Some(ids);
        }
        Some(_) => p.add("defaultTargets", "must be a list of target ids, or null"),
    }
    match body.get("locationAliases") {
        None => {}
        Some(Value::Object(map)) => {
            let mut aliases = BTreeMap::new();
            if map.len() > MAX_ALIASES {
                p.add("locationAliases", format!("at most {MAX_ALIASES} aliases"));
            }
            for (from, to) in map {
                let path = format!("locationAliases.{from}");
                if !is_valid_location(from) || from == "global" {
                    p.add(&path, "the key must be a location such as ap-south");
                }
                match to.as_str() {
                    Some(t) if is_valid_location(t) && t != from => {
                        aliases.insert(from.clone(), t.to_string());
                    }
                    _ => p.add(&path, "must be another location such as jp-tok"),
                }
            }
            for (from, to) in &aliases {
                if aliases.contains_key(to) {
                    p.add(
                        &format!("locationAliases.{from}"),
                        format!("{to:?} is itself an alias: aliases do not chain"),
                    );
                }
            }
            settings.location_aliases = aliases;
        }
        Some(_) => p.add("locationAliases", "must be an object {location: location}"),
    }
    match body.get("dataEvents") {
        None => {}
        Some(v @ Value::Object(obj)) => {
            for key in obj.keys() {
                if key != "collect" && key != "accounts" {
                    p.add(
                        &format!("dataEvents.{key}"),
                        "is not a field (collect, accounts)",
                    );
                }
            }
            match v.get("collect") {
                None => {}
                Some(Value::Bool(b)) => settings.data_events.collect = *b,
                Some(_) => p.add("dataEvents.collect", "must be true or false"),
            }
            match v.get("accounts") {
                None => {}
                Some(Value::Object(accounts)) => {
                    if accounts.len() > MAX_DATA_EVENT_ACCOUNTS {
                        p.add(
                            "dataEvents.accounts",
                            format!("at most {MAX_DATA_EVENT_ACCOUNTS} accounts"),
                        );
                    }
                    let mut map = BTreeMap::new();
                    for (a, b) in accounts {
                        let path = format!("dataEvents.accounts.{a}");
                        if !trailkeep_event::is_valid_account_id(a) {
                            p.add(&path, "is not a valid account id");
                        }
                        match b.as_bool() {
                            Some(b) => {
                                map.insert(a.clone(), b);
                            }
                            None => p.add(&path, "must be true or false"),
                        }
                    }
                    settings.data_events.accounts = map;
                }
                Some(_) => p.add(
                    "dataEvents.accounts",
                    "must be an object {account: true | false}",
                ),
            }
        }
        Some(_) => p.add(
            "dataEvents",
            "must be an object {collect: bool, accounts: {account: bool}}",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets() -> Vec<Target> {
        let mut t = Target::builtin_local();
        t.id = "tgt_jp".into();
        vec![Target::builtin_local(), t]
    }

    fn problems(f: impl FnOnce(&mut Problems)) -> Vec<String> {
        let mut p = Problems::default();
        f(&mut p);
        p.0.into_iter()
            .map(|d| format!("{}: {}", d.path, d.reason))
            .collect()
    }

    #[test]
    fn rules_name_every_problem_with_its_path() {
        let limits = Limits {
            max_routes: 30,
            max_rules: 2,
        };
        let got = problems(|p| {
            parse_rules(
                p,
                Some(&json!([
                    {"locations": [], "targetIds": ["nope"]},
                    {"locations": ["US South"], "targetIds": ["tgt_jp"], "x": 1}
                ])),
                &targets(),
                &limits,
            );
        });
        assert_eq!(
            got,
            vec![
                "rules[0].locations: must not be empty",
                "rules[0].targetIds[0]: no target \"nope\"",
                "rules[1].x: is not a field of a rule",
                "rules[1].locations[0]: must be a location (lower-case letters, digits, '-': us-south, eu-de), global or *",
            ]
        );
        let too_many = problems(|p| {
            parse_rules(
                p,
                Some(&Value::Array(vec![
                    json!({"locations": ["*"], "targetIds": ["local"]});
                    3
                ])),
                &targets(),
                &limits,
            );
        });
        assert_eq!(
            too_many,
            vec!["rules: holds 3 rules; a route holds at most 2 (--routing-max-rules)"]
        );
    }

    #[test]
    fn targets_validate_their_type_fields_and_hide_secrets() {
        let got = problems(|p| {
            parse_target(
                p,
                &json!({"name": "x", "type": "webhook", "url": "ftp://h", "secret": "short"}),
            );
        });
        assert_eq!(
            got,
            vec![
                "url: must be an http:// or https:// URL with a host",
                "secret: must be at least 16 characters"
            ]
        );
        let got = problems(|p| {
            parse_target(
                p,
                &json!({"name": "x", "type": "s3", "bucket": "B", "prefix": "a/../b", "format": "csv", "endpoint": "ftp://h", "secretAccessKey": 1}),
            );
        });
        assert_eq!(
            got,
            vec![
                "endpoint: must be an http:// or https:// URL with a host (e.g. http://127.0.0.1:3900)",
                "bucket: must be a bucket name: 3 to 63 lower-case letters, digits, '.' or '-', starting and ending with a letter or digit",
                "prefix: must be segments separated by single '/' (no empty, '.' or '..' segment)",
                "accessKeyId: is required",
                "secretAccessKey: must be a string",
                "format: must be ndjson or parquet",
            ]
        );
        let mut p = Problems::default();
        let (_, s3) = parse_target(
            &mut p,
            &json!({"name": "b", "type": "s3", "bucket": "audit-1", "prefix": "/tk/us/",
                    "accessKeyId": "GK1", "secretAccessKey": "s3-very-secret"}),
        )
        .unwrap();
        assert!(p.0.is_empty(), "{:?}", p.0);
        let t = Target {
            id: "tgt_s3".into(),
            name: "b".into(),
            kind: s3,
            created_at: "t".into(),
            updated_at: "t".into(),
        };
        let api = t.to_api();
        assert_eq!(api["prefix"], "tk/us");
        assert_eq!(api["region"], "us-east-1");
        assert_eq!(api["format"], "ndjson");
        assert_eq!(api["secretAccessKeySet"], true);
        assert!(!api.to_string().contains("s3-very-secret"), "{api}");
        // A PATCH keeps the secret and the fields it leaves out.
        let mut p = Problems::default();
        let kind = parse_kind(&mut p, "s3", &json!({"format": "parquet"}), Some(&t.kind)).unwrap();
        assert!(p.0.is_empty(), "{:?}", p.0);
        let TargetKind::S3 {
            secret_access_key,
            format,
            bucket,
            ..
        } = kind
        else {
            panic!("an s3 target")
        };
        assert_eq!(
            (secret_access_key.as_str(), format.as_str(), bucket.as_str()),
            ("s3-very-secret", "parquet", "audit-1")
        );
        let mut p = Problems::default();
        let (name, kind) = parse_target(
            &mut p,
            &json!({"name": "jp", "type": "trailkeep", "url": "http://127.0.0.1:1", "key": "k-0123456789abcdef"}),
        )
        .unwrap();
        assert!(p.0.is_empty());
        let t = Target {
            id: "tgt_1".into(),
            name,
            kind,
            created_at: "t".into(),
            updated_at: "t".into(),
        };
        let api = t.to_api().to_string();
        assert!(
            api.contains("\"keySet\":true") && !api.contains("k-0123456789abcdef"),
            "{api}"
        );
        // A PATCH may leave the key out and keeps it.
        let mut p = Problems::default();
        let kind = parse_kind(
            &mut p,
            "trailkeep",
            &json!({"url": "https://jp.example"}),
            Some(&t.kind),
        );
        assert!(p.0.is_empty(), "{:?}", p.0);
        assert_eq!(
            kind,
            Some(TargetKind::Trailkeep {
                url: "https://jp.example".into(),
                key: "k-0123456789abcdef".into()
            })
        );
    }

    #[test]
    fn settings_check_aliases_targets_and_data_events() {
        let mut s = Settings::default();
        let got = problems(|p| {
            apply_settings(
                p,
                &json!({"defaultTargets": ["local", "gone"], "locationAliases": {"ap-south": "jp-tok", "jp-osa": "ap-south"},
                        "dataEvents": {"collect": false, "accounts": {"acme": true}}}),
                &mut s,
                &targets(),
            );
        });
        assert_eq!(
            got,
            vec![
                "defaultTargets[1]: no target \"gone\"",
                "locationAliases.jp-osa: \"ap-south\" is itself an alias: aliases do not chain"
            ]
        );
        assert!(s.data_events.collects("acme") && !s.data_events.collects("beta"));
        assert_eq!(
            Settings::default().effective_default_targets(),
            vec!["local"]
        );
    }
}
