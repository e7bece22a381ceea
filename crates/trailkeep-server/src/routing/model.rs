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
}

impl TargetKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            TargetKind::Local => "local",
            TargetKind::Trailkeep { .. } => "trailkeep",
            TargetKind::Webhook { .. } => "webhook",
            TargetKind::Syslog { .. } => "syslog",
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
        "s3" => {
            p.add(
                "type",
                "s3 targets are not supported by this version yet (local, trailkeep, webhook, syslog are)",
            );
            return None;
        }
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
            parse_target(p, &json!({"name": "x", "type": "s3", "bucket": "b"}));
        });
        assert!(
            got[0].starts_with("type: s3 targets are not supported"),
            "{got:?}"
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
