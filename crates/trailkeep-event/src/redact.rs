//! Sensitive values: redaction rules and the credential-token rule.
//!
//! Owns: the rule language (service glob + JSON path with wildcards), the two
//! replacement kinds (fixed marker, `hmac-sha256:<hex>` under the account's key) and
//! the default rules. Must never: store `*.credential.token` in clear, or redact a
//! value twice (a value that already is the marker or an `hmac-sha256:` digest is left
//! alone, so normalising a stored event again changes nothing).
//!
//! ## Path patterns
//! A path is dot-separated segments matched against object keys from the event's
//! root. A segment is one or more `|`-separated globs; a glob matches a key
//! case-insensitively and `*` in it stands for any run of characters. The segment `**`
//! matches any number (zero or more) of keys. Arrays are transparent: a pattern walks
//! into every element of an array without using up a segment.
//!
//! Examples: `requestData.env.*.value`, `requestData|responseData.**.*password`,
//! `target.name`.
//!
//! ## What is replaced
//! The whole value at a matching path. [`RedactAction::Marker`] puts the policy's
//! marker string there (default [`DEFAULT_MARKER`]); [`RedactAction::Hmac`] puts
//! `hmac-sha256:` + the lower-case hex HMAC-SHA-256 of the value under the account's
//! key — of the UTF-8 bytes when the value is a string, else of its RFC 8785 canonical
//! bytes. An auditor holding the key can test a candidate value; the value itself is
//! not stored. When no key is available for the account, the marker is used instead.

use crate::canonical::to_canonical_vec;
use crate::error::RuleError;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

/// The default marker that replaces a redacted value.
pub const DEFAULT_MARKER: &str = "[redacted]";

/// The prefix of a keyed digest.
pub const HMAC_PREFIX: &str = "hmac-sha256:";

/// How a matched value is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedactAction {
    /// Replace by the policy's fixed marker.
    Marker,
    /// Replace by `hmac-sha256:<hex>` under the account's key.
    Hmac,
}

/// Gives the per-account HMAC key for [`RedactAction::Hmac`] and credential tokens.
///
/// The server owns key storage; this crate only asks. Closures
/// `Fn(&str) -> Option<Vec<u8>>` implement it, and [`NoKeys`] answers `None`
/// (every HMAC rule then falls back to the marker).
pub trait HmacKeys {
    /// The key for `account`, or `None` when the account has none.
    fn hmac_key(&self, account: &str) -> Option<Vec<u8>>;
}

impl<F: Fn(&str) -> Option<Vec<u8>>> HmacKeys for F {
    fn hmac_key(&self, account: &str) -> Option<Vec<u8>> {
        self(account)
    }
}

/// No account has a key: HMAC redaction falls back to the marker.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoKeys;

impl HmacKeys for NoKeys {
    fn hmac_key(&self, _account: &str) -> Option<Vec<u8>> {
        None
    }
}

/// One redaction rule: for events of matching services, replace the values at `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedactionRule {
    service: Option<Glob>,
    path: Vec<Segment>,
    action: RedactAction,
    source: String,
}

impl RedactionRule {
    /// Compile a rule. `service` is a glob on the event's service (the first part of a
    /// `service.objectType.verb` action, or the service taken from the target type for
    /// pure CADF events); `None` means every service.
    pub fn new(service: Option<&str>, path: &str, action: RedactAction) -> Result<Self, RuleError> {
        let bad = |reason: &str| RuleError {
            rule: path.to_owned(),
            reason: reason.to_owned(),
        };
        if path.is_empty() {
            return Err(bad("the path must not be empty"));
        }
        let mut segments = Vec::new();
        for seg in path.split('.') {
            if seg.is_empty() {
                return Err(bad("a path segment is empty"));
            }
            if seg == "**" {
                segments.push(Segment::AnyDepth);
            } else {
                let globs: Vec<Glob> = seg.split('|').map(Glob::new).collect();
                if globs.iter().any(|g| g.pattern.is_empty()) {
                    return Err(bad("an alternative in a segment is empty"));
                }
                segments.push(Segment::Key(KeySet::new(globs)));
            }
        }
        if matches!(segments.last(), Some(Segment::AnyDepth)) {
            return Err(bad("the path must not end with `**`"));
        }
        Ok(Self {
            service: service.map(Glob::new),
            path: segments,
            action,
            source: path.to_owned(),
        })
    }

    /// The path as written.
    pub fn path(&self) -> &str {
        &self.source
    }

    /// The replacement kind.
    pub fn action(&self) -> RedactAction {
        self.action
    }

    fn applies_to(&self, service: &str) -> bool {
        self.service.as_ref().is_none_or(|g| g.matches(service))
    }
}

/// The rules shipped by default: values of keys named like a password, secret, token,
/// API key or private key anywhere inside `requestData` or `responseData` are replaced
/// by an HMAC (a key *ending* in one of these words, any case, e.g. `clientSecret`,
/// `access_token`, `apiKey`; `secretName` or `tokenType` are left alone).
pub fn default_rules() -> Vec<RedactionRule> {
    const NAMES: &str = "*password|*passwd|*secret|*token|*apikey|*api_key|*api-key|*privatekey|*private_key|*private-key";
    let path = format!("requestData|responseData.**.{NAMES}");
    vec![RedactionRule::new(None, &path, RedactAction::Hmac).expect("default rule compiles")]
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    AnyDepth,
    Key(KeySet),
}

/// The alternatives of one path segment, with a quick filter on a key's last byte:
/// when every alternative ends in a literal ASCII byte, a key ending in any other
/// byte cannot match (most keys are rejected without running a glob).
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeySet {
    globs: Vec<Glob>,
    /// Lower-case ASCII last bytes that can match; `None` when any alternative can end anywhere.
    last: Option<u128>,
}

impl KeySet {
    fn new(globs: Vec<Glob>) -> Self {
        let mut last = Some(0u128);
        for g in &globs {
            match g.pattern.as_bytes().last() {
                Some(&b) if b != b'*' && b.is_ascii() => last = last.map(|m| m | (1u128 << b)),
                _ => last = None,
            }
        }
        Self { globs, last }
    }

    fn matches(&self, key: &str) -> bool {
        if let Some(mask) = self.last {
            match key.as_bytes().last() {
                Some(&b) if b.is_ascii() && mask & (1u128 << b.to_ascii_lowercase()) != 0 => {}
                _ => return false,
            }
        }
        self.globs.iter().any(|g| g.matches(key))
    }
}

/// A case-insensitive glob with `*` wildcards, stored lower-cased, with fast paths
/// for the common forms `name`, `*suffix`, `prefix*` and `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Glob {
    pattern: String,
    kind: GlobKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GlobKind {
    Any,
    Exact,
    Suffix,
    Prefix,
    General,
}

impl Glob {
    fn new(p: &str) -> Self {
        let pattern = p.to_lowercase();
        let stars = pattern.bytes().filter(|&b| b == b'*').count();
        let kind = match stars {
            0 => GlobKind::Exact,
            _ if pattern.bytes().all(|b| b == b'*') => GlobKind::Any,
            1 if pattern.starts_with('*') => GlobKind::Suffix,
            1 if pattern.ends_with('*') => GlobKind::Prefix,
            _ => GlobKind::General,
        };
        Self { pattern, kind }
    }

    fn matches(&self, text: &str) -> bool {
        let (p, t) = (self.pattern.as_bytes(), text.as_bytes());
        match self.kind {
            GlobKind::Any => true,
            GlobKind::Exact => t.eq_ignore_ascii_case(p),
            GlobKind::Suffix => {
                t.len() >= p.len() - 1 && t[t.len() - (p.len() - 1)..].eq_ignore_ascii_case(&p[1..])
            }
            GlobKind::Prefix => {
                t.len() >= p.len() - 1 && t[..p.len() - 1].eq_ignore_ascii_case(&p[..p.len() - 1])
            }
            GlobKind::General => glob_match(p, t),
        }
    }
}

/// `*`-glob matching, ASCII case-insensitive on `text` (the pattern is lower-case).
fn glob_match(pat: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while t < text.len() {
        if p < pat.len() && pat[p] == b'*' {
            star = Some(p);
            mark = t;
            p += 1;
        } else if p < pat.len() && pat[p] == text[t].to_ascii_lowercase() {
            p += 1;
            t += 1;
        } else if let Some(s) = star {
            p = s + 1;
            mark += 1;
            t = mark;
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

/// Whether `s` already is a redaction result (so it must not be redacted again).
pub(crate) fn is_redacted(s: &str, marker: &str) -> bool {
    s == marker
        || s.strip_prefix(HMAC_PREFIX).is_some_and(|h| {
            h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
}

/// Applies rules to one event; fetches the account's key at most once.
pub(crate) struct Redactor<'a> {
    pub marker: &'a str,
    pub keys: &'a (dyn HmacKeys + Sync),
    pub account: &'a str,
    key: Option<Option<Vec<u8>>>,
}

impl<'a> Redactor<'a> {
    pub fn new(marker: &'a str, keys: &'a (dyn HmacKeys + Sync), account: &'a str) -> Self {
        Self {
            marker,
            keys,
            account,
            key: None,
        }
    }

    /// Replace `value` per `action` unless it already is redacted (or is null).
    pub fn replace(&mut self, value: &mut Value, action: RedactAction) {
        match value {
            Value::Null => return,
            Value::String(s) if is_redacted(s, self.marker) => return,
            _ => {}
        }
        let replacement = match action {
            RedactAction::Marker => self.marker.to_owned(),
            RedactAction::Hmac => {
                let key = self
                    .key
                    .get_or_insert_with(|| self.keys.hmac_key(self.account));
                match key {
                    Some(key) => {
                        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
                            .expect("HMAC takes any key length");
                        match &*value {
                            Value::String(s) => mac.update(s.as_bytes()),
                            other => mac.update(&to_canonical_vec(other)),
                        }
                        let mut out = String::with_capacity(HMAC_PREFIX.len() + 64);
                        out.push_str(HMAC_PREFIX);
                        out.push_str(&hex::encode(mac.finalize().into_bytes()));
                        out
                    }
                    None => self.marker.to_owned(),
                }
            }
        };
        *value = Value::String(replacement);
    }

    /// Apply every rule that concerns `service` to `event`.
    pub fn apply_rules(&mut self, event: &mut Value, rules: &[RedactionRule], service: &str) {
        for rule in rules.iter().filter(|r| r.applies_to(service)) {
            self.walk(event, &rule.path, rule.action);
        }
    }

    fn walk(&mut self, value: &mut Value, segs: &[Segment], action: RedactAction) {
        let Some((first, rest)) = segs.split_first() else {
            self.replace(value, action);
            return;
        };
        match value {
            Value::Array(items) => {
                for item in items {
                    self.walk(item, segs, action);
                }
            }
            Value::Object(map) => match first {
                Segment::AnyDepth => {
                    self.walk(value, rest, action);
                    if let Value::Object(map) = value {
                        for child in map.values_mut() {
                            self.walk(child, segs, action);
                        }
                    }
                }
                Segment::Key(keys) => {
                    for (key, child) in map.iter_mut() {
                        if keys.matches(key) {
                            self.walk(child, rest, action);
                        }
                    }
                }
            },
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_fast_paths_agree_with_the_general_matcher() {
        for pat in ["*", "**", "password", "*password", "pass*", "*pass*", "a*c"] {
            let g = Glob::new(pat);
            for text in [
                "",
                "password",
                "dbPassword",
                "PASSWORD",
                "passwordHint",
                "pass",
                "abc",
                "ac",
                "xpassword",
            ] {
                assert_eq!(
                    g.matches(text),
                    glob_match(pat.as_bytes(), text.as_bytes()),
                    "{pat} {text}"
                );
            }
        }
    }

    #[test]
    fn last_byte_filter_agrees_with_the_globs() {
        let set = KeySet::new(
            ["*password", "*Token", "apikey"]
                .iter()
                .map(|p| Glob::new(p))
                .collect(),
        );
        assert!(set.last.is_some());
        for key in [
            "password",
            "dbPASSWORD",
            "accessToken",
            "APIKEY",
            "apiKeys",
            "name",
            "",
            "é",
            "tokenType",
        ] {
            assert_eq!(
                set.matches(key),
                set.globs.iter().any(|g| g.matches(key)),
                "{key}"
            );
        }
        let open = KeySet::new(vec![Glob::new("pass*")]);
        assert!(open.last.is_none());
        assert!(open.matches("passwordHint"));
    }

    #[test]
    fn globs() {
        assert!(glob_match(b"*password", b"dbPassword"));
        assert!(glob_match(b"*password", b"PASSWORD"));
        assert!(!glob_match(b"*password", b"passwordHint"));
        assert!(glob_match(b"a*c*e", b"abcde"));
        assert!(glob_match(b"*", b""));
        assert!(!glob_match(b"ab", b"abc"));
    }
}
