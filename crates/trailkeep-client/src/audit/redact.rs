//! Redaction of captured bodies before they leave the service.
//!
//! Owns: the rule "a value whose key ends with a sensitive word is replaced by `[redacted]`", at
//! any depth, in objects and arrays. The default words follow the server's default rule
//! (password, passwd, secret, token, apiKey, api_key, api-key, privateKey, private_key,
//! private-key), compared without regard to case.

use serde_json::Value;

/// The replacement for a redacted value (the server recognises it and leaves it alone).
pub const MARKER: &str = "[redacted]";

/// The default sensitive key endings (lower case).
pub const DEFAULT_KEYS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "apikey",
    "api_key",
    "api-key",
    "privatekey",
    "private_key",
    "private-key",
];

/// Replaces, in place, every value whose key ends (case-insensitively) with one of `endings`
/// (lower case).
pub fn redact(value: &mut Value, endings: &[String]) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if is_sensitive(k, endings) {
                    *v = Value::String(MARKER.into());
                } else {
                    redact(v, endings);
                }
            }
        }
        Value::Array(items) => {
            for v in items {
                redact(v, endings);
            }
        }
        _ => {}
    }
}

fn is_sensitive(key: &str, endings: &[String]) -> bool {
    let k = key.as_bytes();
    endings.iter().any(|e| {
        let e = e.as_bytes();
        k.len() >= e.len() && k[k.len() - e.len()..].eq_ignore_ascii_case(e)
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn sensitive_keys_are_redacted_at_any_depth() {
        let endings: Vec<String> = DEFAULT_KEYS.iter().map(|s| s.to_string()).collect();
        let mut v = json!({
            "name": "web",
            "password": "hunter2",
            "env": [{"name": "DB_PASSWORD", "value": "x"}, {"dbPassword": "y"}],
            "auth": {"apiKey": "k", "API_KEY": "k2", "privateKey": {"pem": "..."}, "refresh_token": "t"},
            "tokens": 3,
            "secretary": "not a secret",
        });
        redact(&mut v, &endings);
        assert_eq!(
            v,
            json!({
                "name": "web",
                "password": MARKER,
                "env": [{"name": "DB_PASSWORD", "value": "x"}, {"dbPassword": MARKER}],
                "auth": {"apiKey": MARKER, "API_KEY": MARKER, "privateKey": MARKER, "refresh_token": MARKER},
                "tokens": 3,
                "secretary": "not a secret",
            })
        );
    }
}
