//! Browser sessions of the web UI: a signed-in API key, remembered behind a random cookie.
//!
//! `POST /ui/session {"key": …}` checks the key exactly as the `Authorization: Bearer` path does,
//! then draws a random session id (32 bytes) and a random CSRF token (32 bytes). Only the SHA-256
//! of the session id is kept, in memory, with the key's id, the key's rotation stamp and two
//! deadlines: an idle one ([`IDLE`], pushed forward by every request) and an absolute one
//! ([`ABSOLUTE`]). Each request that carries the cookie re-reads the key from the key store, so a
//! key that is revoked, expires, is rotated or removed ends its sessions at the next request.
//! Sessions do not survive a restart (they are in memory): users sign in again.
//!
//! **Architecture Invariant:** the session id and the API key never appear in a log, an audit
//! event or an answer after sign-in; the cookie is `HttpOnly; SameSite=Strict; Path=/` (plus
//! `Secure` over TLS), and a write made with the cookie must carry the session's CSRF token in
//! `X-CSRF-Token` (checked in `app::authenticate`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::auth::{AuthFailure, KeyStore, Principal};

/// The cookie's name.
pub const COOKIE: &str = "trailkeep_session";
/// The header a cookie-authenticated write must carry.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// A session unused for this long ends.
pub const IDLE: Duration = Duration::from_secs(60 * 60);
/// A session ends this long after sign-in whatever its use.
pub const ABSOLUTE: Duration = Duration::from_secs(12 * 60 * 60);
/// The most sessions kept; signing in beyond this drops the least recently used one.
pub const MAX_SESSIONS: usize = 10_000;

#[derive(Debug, Clone)]
struct Session {
    key_id: String,
    /// The key's `rotatedAt` at sign-in: a rotation (new secret) ends the session.
    key_rotated_at: Option<String>,
    csrf: String,
    created: Instant,
    last_used: Instant,
}

/// A session found for a request: who it is, and the CSRF token its writes must carry.
#[derive(Debug, Clone)]
pub struct SessionAuth {
    pub principal: Principal,
    pub csrf: String,
}

/// Every live session, by the SHA-256 of its id.
#[derive(Debug)]
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
    idle: Duration,
    absolute: Duration,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::with_lifetimes(IDLE, ABSOLUTE)
    }
}

/// A new session: the cookie value (shown once, to the browser) and its CSRF token.
#[derive(Debug)]
pub struct NewSession {
    pub id: String,
    pub csrf: String,
}

fn random_hex() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(hex::encode(bytes))
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    /// Sessions that end after `idle` without use or `absolute` after sign-in.
    pub fn with_lifetimes(idle: Duration, absolute: Duration) -> Self {
        Sessions {
            map: Mutex::default(),
            idle,
            absolute,
        }
    }

    fn alive(&self, s: &Session, now: Instant) -> bool {
        now.duration_since(s.last_used) < self.idle && now.duration_since(s.created) < self.absolute
    }

    /// Starts a session for an authenticated key.
    pub fn create(&self, principal: &Principal, keys: &KeyStore) -> Result<NewSession, String> {
        let id = random_hex().map_err(|e| e.to_string())?;
        let csrf = random_hex().map_err(|e| e.to_string())?;
        let now = Instant::now();
        let rotated = keys
            .get(&principal.key_id, OffsetDateTime::now_utc())
            .and_then(|k| k.rotated_at);
        let mut map = self.map.lock().expect("session lock poisoned");
        map.retain(|_, s| self.alive(s, now));
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.last_used).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.insert(
            digest(&id),
            Session {
                key_id: principal.key_id.clone(),
                key_rotated_at: rotated,
                csrf: csrf.clone(),
                created: now,
                last_used: now,
            },
        );
        Ok(NewSession { id, csrf })
    }

    /// The principal of the session `id`, re-read from the key store (so it has the key's
    /// current role and accounts). A session whose key no longer works is ended.
    pub fn authenticate(&self, id: &str, keys: &KeyStore) -> Result<SessionAuth, AuthFailure> {
        let now = Instant::now();
        let d = digest(id);
        let mut map = self.map.lock().expect("session lock poisoned");
        let Some(session) = map.get_mut(&d) else {
            return Err(AuthFailure::Invalid);
        };
        if !self.alive(session, now) {
            map.remove(&d);
            return Err(AuthFailure::Expired);
        }
        let info = keys.get(&session.key_id, OffsetDateTime::now_utc());
        let failure = match &info {
            None => Some(AuthFailure::Revoked),
            Some(k) if k.status == "revoked" => Some(AuthFailure::Revoked),
            Some(k) if k.status == "expired" => Some(AuthFailure::Expired),
            Some(k) if k.rotated_at != session.key_rotated_at => Some(AuthFailure::Revoked),
            Some(_) => None,
        };
        if let Some(f) = failure {
            map.remove(&d);
            return Err(f);
        }
        let info = info.expect("checked above");
        session.last_used = now;
        Ok(SessionAuth {
            principal: Principal {
                key_id: info.id,
                key_name: info.name,
                role: info.role,
                accounts: info.accounts,
                default_account: info.default_account,
                action_prefixes: info.action_prefixes,
                limits: info.limits,
                client: None,
            },
            csrf: session.csrf.clone(),
        })
    }

    /// Ends the session `id` (sign-out). Unknown ids are ignored.
    pub fn remove(&self, id: &str) {
        self.map
            .lock()
            .expect("session lock poisoned")
            .remove(&digest(id));
    }

    /// How many sessions are live (for tests and metrics).
    pub fn len(&self) -> usize {
        self.map.lock().expect("session lock poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The session cookie's value in a request's `Cookie` headers, if any.
pub fn cookie_value(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// Whether `presented` (the `X-CSRF-Token` header) is the session's token, compared in constant
/// time.
pub fn csrf_matches(expected: &str, presented: Option<&str>) -> bool {
    match presented {
        Some(p) => bool::from(p.as_bytes().ct_eq(expected.as_bytes())),
        None => false,
    }
}

/// The `Set-Cookie` value that stores `id`.
pub fn set_cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
        ABSOLUTE.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that removes the cookie.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> (tempfile::TempDir, KeyStore, Principal) {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyStore::open(dir.path()).unwrap();
        keys.ensure_bootstrap_admin(Some("session-test-admin-key-01"), "2026-11-21T00:00:00Z")
            .unwrap();
        let p = keys
            .authenticate(
                Some("Bearer session-test-admin-key-01"),
                OffsetDateTime::now_utc(),
            )
            .unwrap();
        (dir, keys, p)
    }

    #[test]
    fn an_idle_session_ends_and_use_keeps_it_alive() {
        let (_dir, keys, p) = keys();
        // Generous margins: a loaded machine oversleeps, it never undersleeps.
        let sessions = Sessions::with_lifetimes(Duration::from_secs(2), ABSOLUTE);
        let s = sessions.create(&p, &keys).unwrap();
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(500));
            assert!(
                sessions.authenticate(&s.id, &keys).is_ok(),
                "used within the idle time"
            );
        }
        std::thread::sleep(Duration::from_millis(2100));
        assert_eq!(
            sessions.authenticate(&s.id, &keys).unwrap_err(),
            AuthFailure::Expired
        );
        assert!(sessions.is_empty(), "an ended session is forgotten");
    }

    #[test]
    fn a_session_ends_at_its_absolute_deadline_even_in_use() {
        let (_dir, keys, p) = keys();
        let sessions = Sessions::with_lifetimes(IDLE, Duration::from_secs(1));
        let s = sessions.create(&p, &keys).unwrap();
        assert!(sessions.authenticate(&s.id, &keys).is_ok());
        std::thread::sleep(Duration::from_millis(1100));
        assert!(sessions.authenticate(&s.id, &keys).is_err());
    }

    #[test]
    fn rotating_the_key_ends_its_sessions_and_ids_are_unguessable() {
        let (_dir, keys, p) = keys();
        let sessions = Sessions::default();
        let a = sessions.create(&p, &keys).unwrap();
        let b = sessions.create(&p, &keys).unwrap();
        assert_ne!(a.id, b.id);
        assert_ne!(a.csrf, b.csrf);
        assert_eq!(a.id.len(), 64, "256 random bits");
        assert_eq!(
            sessions
                .authenticate("0".repeat(64).as_str(), &keys)
                .unwrap_err(),
            AuthFailure::Invalid
        );
        keys.rotate(&p.key_id, OffsetDateTime::now_utc()).unwrap();
        assert!(sessions.authenticate(&a.id, &keys).is_err());
        assert!(sessions.authenticate(&b.id, &keys).is_err());
        assert!(sessions.is_empty());
    }

    #[test]
    fn cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::COOKIE,
            "a=b; trailkeep_session=abc123; c=d".parse().unwrap(),
        );
        assert_eq!(cookie_value(&h), Some("abc123"));
        let mut h = HeaderMap::new();
        h.insert(axum::http::header::COOKIE, "a=b".parse().unwrap());
        assert_eq!(cookie_value(&h), None);
    }

    #[test]
    fn csrf_must_match_exactly() {
        assert!(csrf_matches("abc", Some("abc")));
        assert!(!csrf_matches("abc", Some("abd")));
        assert!(!csrf_matches("abc", Some("ab")));
        assert!(!csrf_matches("abc", None));
    }

    #[test]
    fn set_cookie_is_strict_and_http_only() {
        let c = set_cookie("x", true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Secure"));
        assert!(!set_cookie("x", false).contains("Secure"));
    }
}
