//! API keys and the principal behind a request.
//!
//! Keys are stored only as SHA-256 hashes of their secrets in `keys.json` in the data directory
//! (written atomically: temporary file, fsync, rename, fsync of the directory). A secret is 32 random
//! bytes, so a plain hash is enough; the lookup compares hashes in constant time.
//!
//! This module is the seam for roles and tenancy: every request is turned into a [`Principal`] with a
//! [`Role`] and an [`AccountScope`], and handlers ask the principal, never the raw key.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// What a key may do. Ordered: each role includes the ones before it, except that `Writer` only
/// ingests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Writer,
    Reader,
    Manager,
    Admin,
}

impl Role {
    pub fn can_ingest(self) -> bool {
        matches!(self, Role::Writer | Role::Admin)
    }

    pub fn can_read(self) -> bool {
        matches!(self, Role::Reader | Role::Manager | Role::Admin)
    }

    pub fn is_admin(self) -> bool {
        self == Role::Admin
    }
}

/// The accounts a key may act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "ids")]
pub enum AccountScope {
    All,
    Only(Vec<String>),
}

impl AccountScope {
    pub fn allows(&self, account: &str) -> bool {
        match self {
            AccountScope::All => true,
            AccountScope::Only(ids) => ids.iter().any(|a| a == account),
        }
    }
}

/// Per-key rate limits; absent values fall back to the server's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest_events_per_second: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queries_per_second: Option<u32>,
}

/// One stored key. `secret_sha256` is the only trace of the secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredKey {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub accounts: AccountScope,
    /// Account for events whose `logSourceCRN` names none.
    pub default_account: String,
    /// For writers: the actions the key may write (`codeengine.*`, or exact actions); empty = any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub action_prefixes: Vec<String>,
    /// RFC 3339; the key stops working at this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    pub created_at: String,
    /// The id of the key that created this one (`server` for the bootstrap key).
    #[serde(default)]
    pub created_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    #[serde(default)]
    pub limits: KeyLimits,
    /// A writer key another Trailkeep instance's routing uses: only such keys may send
    /// `X-Trailkeep-Forwarded-From` (issue #9).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forwarder: bool,
    pub secret_sha256: String,
    #[serde(default)]
    pub revoked: bool,
}

/// A key as the API shows it: everything but the secret's hash.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyInfo {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub accounts: AccountScope,
    pub default_account: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub action_prefixes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    pub created_at: String,
    pub created_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotated_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    pub limits: KeyLimits,
    /// Whether the key may send `X-Trailkeep-Forwarded-From` (another instance's routing).
    pub forwarder: bool,
    /// `active`, `revoked` or `expired`.
    pub status: &'static str,
}

impl StoredKey {
    fn expired_at(&self, now: OffsetDateTime) -> bool {
        self.expires_at
            .as_deref()
            .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
            .is_some_and(|t| t <= now)
    }

    fn info(&self, now: OffsetDateTime) -> KeyInfo {
        KeyInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            role: self.role,
            accounts: self.accounts.clone(),
            default_account: self.default_account.clone(),
            action_prefixes: self.action_prefixes.clone(),
            expires_at: self.expires_at.clone(),
            created_at: self.created_at.clone(),
            created_by: self.created_by.clone(),
            rotated_at: self.rotated_at.clone(),
            revoked_at: self.revoked_at.clone(),
            limits: self.limits,
            forwarder: self.forwarder,
            status: if self.revoked {
                "revoked"
            } else if self.expired_at(now) {
                "expired"
            } else {
                "active"
            },
        }
    }
}

/// What a new key should be (`POST /v1/keys`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewKey {
    pub name: String,
    pub role: Role,
    /// Account ids, or `["*"]` for every account (admin keys only).
    pub accounts: Vec<String>,
    #[serde(default)]
    pub default_account: Option<String>,
    #[serde(default)]
    pub action_prefixes: Vec<String>,
    /// RFC 3339 instant.
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub limits: KeyLimits,
    /// A forwarder key (writer keys only): see [`StoredKey::forwarder`].
    #[serde(default)]
    pub forwarder: bool,
}

/// The authenticated caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: String,
    pub key_name: String,
    pub role: Role,
    pub accounts: AccountScope,
    pub default_account: String,
    pub action_prefixes: Vec<String>,
    pub limits: KeyLimits,
    /// The client's address, when the connection has one (for self-audit).
    pub client: Option<std::net::SocketAddr>,
}

impl Principal {
    /// Stands for callers without a valid key where a principal is needed (the server-wide
    /// bucket of recorded authentication failures). It may do nothing.
    pub fn anonymous() -> Self {
        Principal {
            key_id: String::new(),
            key_name: String::new(),
            role: Role::Writer,
            accounts: AccountScope::Only(Vec::new()),
            default_account: String::new(),
            action_prefixes: vec![String::new()],
            limits: KeyLimits::default(),
            client: None,
        }
    }

    /// Whether this key may write an event with `action` (its action-prefix limits).
    pub fn may_write_action(&self, action: &str) -> bool {
        self.action_prefixes.is_empty()
            || self
                .action_prefixes
                .iter()
                .any(|p| action_matches(p, action))
    }

    /// Whether this key may read `account`.
    pub fn may_read(&self, account: &str) -> bool {
        self.role.can_read() && self.accounts.allows(account)
    }
}

/// `codeengine.*` matches every action under `codeengine.`; `*` matches all; anything else is exact.
pub fn action_matches(pattern: &str, action: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => action.starts_with(prefix),
        None => pattern == action,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    #[error("cannot read or write the key file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the key file {path} is not valid: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot draw random bytes for a new key: {0}")]
    Random(String),
    #[error("the admin key must be at least 16 characters long")]
    WeakAdminKey,
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("no key with this id")]
    NotFound,
}

/// Why a request was not authenticated. The message never says whether an unknown key exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    Invalid,
    Revoked,
    Expired,
}

impl AuthFailure {
    pub fn message(self) -> &'static str {
        match self {
            AuthFailure::Missing => "an API key is required: Authorization: Bearer <key>",
            AuthFailure::Invalid => "the API key is not valid",
            AuthFailure::Revoked => "the API key has been revoked",
            AuthFailure::Expired => "the API key has expired",
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct KeyFile {
    version: u32,
    keys: Vec<StoredKey>,
}

/// The key store: in memory, mirrored to `keys.json`.
#[derive(Debug)]
pub struct KeyStore {
    path: PathBuf,
    keys: RwLock<Vec<StoredKey>>,
}

pub const BOOTSTRAP_KEY_ID: &str = "bootstrap-admin";
const KEY_FILE_VERSION: u32 = 1;

impl KeyStore {
    /// Opens (or starts empty) the key store in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, KeyStoreError> {
        let path = data_dir.join("keys.json");
        let keys = match std::fs::read(&path) {
            Ok(bytes) => {
                let file: KeyFile =
                    serde_json::from_slice(&bytes).map_err(|source| KeyStoreError::Corrupt {
                        path: path.clone(),
                        source,
                    })?;
                file.keys
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(KeyStoreError::Io { path, source }),
        };
        Ok(KeyStore {
            path,
            keys: RwLock::new(keys),
        })
    }

    /// Makes sure a bootstrap admin key exists. With `given`, that secret becomes the bootstrap key
    /// (replacing an earlier bootstrap secret). Without it, a key is generated only if none exists yet,
    /// and its secret is returned so the caller can print it once.
    pub fn ensure_bootstrap_admin(
        &self,
        given: Option<&str>,
        now: &str,
    ) -> Result<Option<String>, KeyStoreError> {
        let mut keys = self.keys.write().expect("key store lock poisoned");
        let existing = keys.iter().position(|k| k.id == BOOTSTRAP_KEY_ID);
        let (secret, generated) = match (given, existing) {
            (Some(secret), _) => {
                if secret.len() < 16 {
                    return Err(KeyStoreError::WeakAdminKey);
                }
                (secret.to_string(), false)
            }
            (None, Some(_)) => return Ok(None),
            (None, None) => (generate_secret()?, true),
        };
        let hash = hash_secret(&secret);
        match existing {
            Some(i) if keys[i].secret_sha256 == hash && !keys[i].revoked => return Ok(None),
            Some(i) => {
                keys[i].secret_sha256 = hash;
                keys[i].revoked = false;
                keys[i].revoked_at = None;
                keys[i].rotated_at = Some(now.to_string());
            }
            None => keys.push(StoredKey {
                id: BOOTSTRAP_KEY_ID.to_string(),
                name: "bootstrap admin".to_string(),
                role: Role::Admin,
                accounts: AccountScope::All,
                default_account: "default".to_string(),
                action_prefixes: Vec::new(),
                expires_at: None,
                created_at: now.to_string(),
                created_by: "server".to_string(),
                rotated_at: None,
                revoked_at: None,
                limits: KeyLimits::default(),
                forwarder: false,
                secret_sha256: hash,
                revoked: false,
            }),
        }
        self.persist(&keys)?;
        Ok(generated.then_some(secret))
    }

    /// Turns an `Authorization` header value into a principal.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Principal, AuthFailure> {
        let value = authorization.ok_or(AuthFailure::Missing)?;
        let secret = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or(AuthFailure::Invalid)?
            .trim();
        if secret.is_empty() {
            return Err(AuthFailure::Missing);
        }
        let presented = Sha256::digest(secret.as_bytes());
        let keys = self.keys.read().expect("key store lock poisoned");
        // Scan every key so the time taken does not depend on where (or whether) a match is.
        let mut found: Option<&StoredKey> = None;
        for key in keys.iter() {
            let Ok(stored) = hex::decode(&key.secret_sha256) else {
                continue;
            };
            if bool::from(stored.as_slice().ct_eq(presented.as_slice())) {
                found = Some(key);
            }
        }
        let key = found.ok_or(AuthFailure::Invalid)?;
        if key.revoked {
            return Err(AuthFailure::Revoked);
        }
        if key.expired_at(now) {
            return Err(AuthFailure::Expired);
        }
        Ok(Principal {
            key_id: key.id.clone(),
            key_name: key.name.clone(),
            role: key.role,
            accounts: key.accounts.clone(),
            default_account: key.default_account.clone(),
            action_prefixes: key.action_prefixes.clone(),
            limits: key.limits,
            client: None,
        })
    }

    /// Creates a key and returns it with its secret (shown once). `known_account` says whether an
    /// account exists, so that a typo is an error rather than a key that can never see anything.
    pub fn create(
        &self,
        spec: NewKey,
        created_by: &str,
        now: OffsetDateTime,
        known_account: impl Fn(&str) -> bool,
    ) -> Result<(KeyInfo, String), KeyStoreError> {
        let invalid =
            |field: &'static str, reason: String| KeyStoreError::Invalid { field, reason };
        let name = spec.name.trim().to_string();
        if name.is_empty() || name.len() > 200 {
            return Err(invalid("name", "must be 1–200 characters".into()));
        }
        let accounts = if spec.accounts.iter().any(|a| a == "*") {
            if spec.accounts.len() != 1 {
                return Err(invalid(
                    "accounts",
                    "\"*\" cannot be combined with account ids".into(),
                ));
            }
            if spec.role != Role::Admin {
                return Err(invalid(
                    "accounts",
                    "only admin keys cover every account; list the accounts".into(),
                ));
            }
            AccountScope::All
        } else {
            if spec.accounts.is_empty() {
                return Err(invalid(
                    "accounts",
                    "name at least one account, or \"*\"".into(),
                ));
            }
            let mut ids = Vec::new();
            for a in &spec.accounts {
                if !trailkeep_event::is_valid_account_id(a) {
                    return Err(invalid(
                        "accounts",
                        format!("{a:?} is not a valid account id"),
                    ));
                }
                if !known_account(a) {
                    return Err(invalid(
                        "accounts",
                        format!("no account {a:?}; create it first (POST /v1/accounts)"),
                    ));
                }
                if !ids.contains(a) {
                    ids.push(a.clone());
                }
            }
            AccountScope::Only(ids)
        };
        let default_account = match (&spec.default_account, &accounts) {
            (Some(d), scope) => {
                if !scope.allows(d) {
                    return Err(invalid(
                        "defaultAccount",
                        format!("{d:?} is not one of the key's accounts"),
                    ));
                }
                d.clone()
            }
            (None, AccountScope::Only(ids)) => ids[0].clone(),
            (None, AccountScope::All) => "default".to_string(),
        };
        if spec.forwarder && spec.role != Role::Writer {
            return Err(invalid(
                "forwarder",
                "only writer keys can be forwarders (the key another instance's routing uses)"
                    .into(),
            ));
        }
        if !spec.action_prefixes.is_empty() && spec.role != Role::Writer {
            return Err(invalid(
                "actionPrefixes",
                "only writer keys are limited to actions".into(),
            ));
        }
        for p in &spec.action_prefixes {
            let body = p.strip_suffix('*').unwrap_or(p);
            if p.is_empty() || body.contains('*') || body.len() > 200 {
                return Err(invalid(
                    "actionPrefixes",
                    format!("{p:?} must be an action or a prefix ending in \"*\" (codeengine.*)"),
                ));
            }
        }
        if let Some(t) = &spec.expires_at {
            let at = OffsetDateTime::parse(t, &Rfc3339)
                .map_err(|e| invalid("expiresAt", format!("{t:?} is not an RFC 3339 time: {e}")))?;
            if at <= now {
                return Err(invalid("expiresAt", "must be in the future".into()));
            }
        }
        for (field, v) in [
            (
                "limits.ingestEventsPerSecond",
                spec.limits.ingest_events_per_second,
            ),
            ("limits.queriesPerSecond", spec.limits.queries_per_second),
        ] {
            if v == Some(0) {
                return Err(invalid(field, "must be at least 1".into()));
            }
        }
        let secret = generate_secret()?;
        let key = StoredKey {
            id: generate_key_id()?,
            name,
            role: spec.role,
            accounts,
            default_account,
            action_prefixes: spec.action_prefixes,
            expires_at: spec.expires_at,
            created_at: rfc3339(now),
            created_by: created_by.to_string(),
            rotated_at: None,
            revoked_at: None,
            limits: spec.limits,
            forwarder: spec.forwarder,
            secret_sha256: hash_secret(&secret),
            revoked: false,
        };
        let info = key.info(now);
        let mut keys = self.keys.write().expect("key store lock poisoned");
        keys.push(key);
        if let Err(e) = self.persist(&keys) {
            keys.pop();
            return Err(e);
        }
        Ok((info, secret))
    }

    /// Whether the key is a forwarder key ([`StoredKey::forwarder`]).
    pub fn is_forwarder(&self, id: &str) -> bool {
        let keys = self.keys.read().expect("key store lock poisoned");
        keys.iter().any(|k| k.id == id && k.forwarder)
    }

    /// Whether the key still works (not revoked, not expired, not removed).
    pub fn is_active(&self, id: &str, now: OffsetDateTime) -> bool {
        let keys = self.keys.read().expect("key store lock poisoned");
        keys.iter()
            .any(|k| k.id == id && !k.revoked && !k.expired_at(now))
    }

    /// Every key, without secrets, oldest first.
    pub fn list(&self, now: OffsetDateTime) -> Vec<KeyInfo> {
        let keys = self.keys.read().expect("key store lock poisoned");
        keys.iter().map(|k| k.info(now)).collect()
    }

    pub fn get(&self, id: &str, now: OffsetDateTime) -> Option<KeyInfo> {
        let keys = self.keys.read().expect("key store lock poisoned");
        keys.iter().find(|k| k.id == id).map(|k| k.info(now))
    }

    /// Gives a key a new secret; the old one stops working at once.
    pub fn rotate(
        &self,
        id: &str,
        now: OffsetDateTime,
    ) -> Result<(KeyInfo, String), KeyStoreError> {
        let secret = generate_secret()?;
        self.change(id, |k| {
            if k.revoked {
                return Err(KeyStoreError::Invalid {
                    field: "id",
                    reason: "a revoked key cannot be rotated".into(),
                });
            }
            k.secret_sha256 = hash_secret(&secret);
            k.rotated_at = Some(rfc3339(now));
            Ok(())
        })
        .map(|k| (k.info(now), secret))
    }

    /// Revokes a key; it stops working at once. Revoking twice is not an error.
    pub fn revoke(&self, id: &str, now: OffsetDateTime) -> Result<KeyInfo, KeyStoreError> {
        self.change(id, |k| {
            if !k.revoked {
                k.revoked = true;
                k.revoked_at = Some(rfc3339(now));
            }
            Ok(())
        })
        .map(|k| k.info(now))
    }

    fn change(
        &self,
        id: &str,
        edit: impl FnOnce(&mut StoredKey) -> Result<(), KeyStoreError>,
    ) -> Result<StoredKey, KeyStoreError> {
        let mut keys = self.keys.write().expect("key store lock poisoned");
        let i = keys
            .iter()
            .position(|k| k.id == id)
            .ok_or(KeyStoreError::NotFound)?;
        let before = keys[i].clone();
        edit(&mut keys[i])?;
        if let Err(e) = self.persist(&keys) {
            keys[i] = before;
            return Err(e);
        }
        Ok(keys[i].clone())
    }

    fn persist(&self, keys: &[StoredKey]) -> Result<(), KeyStoreError> {
        let file = KeyFile {
            version: KEY_FILE_VERSION,
            keys: keys.to_vec(),
        };
        let bytes = serde_json::to_vec_pretty(&file).expect("key file serialises");
        write_atomically(&self.path, &bytes).map_err(|source| KeyStoreError::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// The hashes of every key, for tests that check no secret is stored in clear.
    pub fn stored_keys(&self) -> Vec<StoredKey> {
        self.keys.read().expect("key store lock poisoned").clone()
    }
}

/// A new random secret: `tk_` and 32 random bytes in hex.
pub fn generate_secret() -> Result<String, KeyStoreError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| KeyStoreError::Random(e.to_string()))?;
    Ok(format!("tk_{}", hex::encode(bytes)))
}

/// A key id: `k_` and 8 random bytes in hex. Ids appear in audit events; secrets never do.
fn generate_key_id() -> Result<String, KeyStoreError> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| KeyStoreError::Random(e.to_string()))?;
    Ok(format!("k_{}", hex::encode(bytes)))
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).expect("a UTC time formats as RFC 3339")
}

fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new file, never a mix.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-11-21T00:00:00+00:00";

    fn now() -> OffsetDateTime {
        OffsetDateTime::parse(NOW, &Rfc3339).unwrap()
    }

    fn spec(role: Role, accounts: &[&str]) -> NewKey {
        NewKey {
            name: "a key".into(),
            role,
            accounts: accounts.iter().map(|a| a.to_string()).collect(),
            default_account: None,
            action_prefixes: Vec::new(),
            expires_at: None,
            limits: KeyLimits::default(),
            forwarder: false,
        }
    }

    #[test]
    fn created_keys_work_until_rotated_revoked_or_expired() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        let known = |a: &str| a == "acme" || a == "globex";
        let (info, secret) = store
            .create(spec(Role::Reader, &["acme"]), "k_admin", now(), known)
            .unwrap();
        assert_eq!(info.status, "active");
        assert_eq!(info.created_by, "k_admin");
        let bearer = format!("Bearer {secret}");
        let p = store.authenticate(Some(&bearer), now()).unwrap();
        assert_eq!(p.accounts, AccountScope::Only(vec!["acme".into()]));
        assert_eq!(p.default_account, "acme");
        let on_disk = std::fs::read_to_string(dir.path().join("keys.json")).unwrap();
        assert!(!on_disk.contains(&secret));

        // Rotation: the old secret stops working at once, the new one works.
        let (_, rotated) = store.rotate(&info.id, now()).unwrap();
        assert_eq!(
            store.authenticate(Some(&bearer), now()),
            Err(AuthFailure::Invalid)
        );
        let bearer = format!("Bearer {rotated}");
        store.authenticate(Some(&bearer), now()).unwrap();
        // Revocation survives a restart.
        assert_eq!(store.revoke(&info.id, now()).unwrap().status, "revoked");
        let reopened = KeyStore::open(dir.path()).unwrap();
        assert_eq!(
            reopened.authenticate(Some(&bearer), now()),
            Err(AuthFailure::Revoked)
        );
        assert!(!reopened.is_active(&info.id, now()));

        // Expiry.
        let mut expiring = spec(Role::Writer, &["globex"]);
        expiring.expires_at = Some("2026-11-21T01:00:00Z".into());
        let (info, secret) = store.create(expiring, "k_admin", now(), known).unwrap();
        let bearer = format!("Bearer {secret}");
        store.authenticate(Some(&bearer), now()).unwrap();
        let later = now() + time::Duration::hours(2);
        assert_eq!(
            store.authenticate(Some(&bearer), later),
            Err(AuthFailure::Expired)
        );
        assert_eq!(store.get(&info.id, later).unwrap().status, "expired");
    }

    #[test]
    fn key_specs_are_checked_field_by_field() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        let known = |a: &str| a == "acme";
        let field_of = |spec: NewKey| match store.create(spec, "k", now(), known) {
            Err(KeyStoreError::Invalid { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        };
        assert_eq!(field_of(spec(Role::Reader, &["*"])), "accounts");
        assert_eq!(field_of(spec(Role::Reader, &[])), "accounts");
        assert_eq!(field_of(spec(Role::Reader, &["nobody"])), "accounts");
        let mut s = spec(Role::Reader, &["acme"]);
        s.action_prefixes = vec!["codeengine.*".into()];
        assert_eq!(field_of(s), "actionPrefixes");
        let mut s = spec(Role::Writer, &["acme"]);
        s.action_prefixes = vec!["code*engine".into()];
        assert_eq!(field_of(s), "actionPrefixes");
        let mut s = spec(Role::Writer, &["acme"]);
        s.expires_at = Some("2020-01-01T00:00:00Z".into());
        assert_eq!(field_of(s), "expiresAt");
        let mut s = spec(Role::Writer, &["acme"]);
        s.default_account = Some("other".into());
        assert_eq!(field_of(s), "defaultAccount");
        store
            .create(spec(Role::Admin, &["*"]), "k", now(), known)
            .unwrap();
    }

    #[test]
    fn action_patterns_match_prefixes_or_exact_actions() {
        assert!(action_matches("codeengine.*", "codeengine.app.create"));
        assert!(!action_matches("codeengine.*", "codeengines.app.create"));
        assert!(action_matches("*", "anything.at.all"));
        assert!(action_matches("kms.key.delete", "kms.key.delete"));
        assert!(!action_matches("kms.key.delete", "kms.key.deleted"));
    }

    #[test]
    fn a_generated_bootstrap_key_is_shown_once_and_stored_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        let secret = store
            .ensure_bootstrap_admin(None, NOW)
            .unwrap()
            .expect("generated");
        assert!(secret.starts_with("tk_"));
        let on_disk = std::fs::read_to_string(dir.path().join("keys.json")).unwrap();
        assert!(!on_disk.contains(&secret));
        assert!(on_disk.contains(&hash_secret(&secret)));

        // A restart does not print (or change) it again, and it still works.
        let reopened = KeyStore::open(dir.path()).unwrap();
        assert_eq!(reopened.ensure_bootstrap_admin(None, NOW).unwrap(), None);
        let principal = reopened
            .authenticate(Some(&format!("Bearer {secret}")), now())
            .unwrap();
        assert_eq!(principal.role, Role::Admin);
        assert_eq!(principal.accounts, AccountScope::All);
    }

    #[test]
    fn a_given_admin_key_replaces_the_previous_bootstrap_secret() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        let first = "first-admin-key-0123456789";
        let second = "second-admin-key-0123456789";
        assert_eq!(
            store.ensure_bootstrap_admin(Some(first), NOW).unwrap(),
            None
        );
        store
            .authenticate(Some(&format!("Bearer {first}")), now())
            .unwrap();
        store.ensure_bootstrap_admin(Some(second), NOW).unwrap();
        assert_eq!(
            store.authenticate(Some(&format!("Bearer {first}")), now()),
            Err(AuthFailure::Invalid)
        );
        store
            .authenticate(Some(&format!("Bearer {second}")), now())
            .unwrap();
        assert!(matches!(
            store.ensure_bootstrap_admin(Some("short"), NOW),
            Err(KeyStoreError::WeakAdminKey)
        ));
    }

    #[test]
    fn missing_malformed_and_wrong_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open(dir.path()).unwrap();
        store
            .ensure_bootstrap_admin(Some("the-admin-key-0123456789"), NOW)
            .unwrap();
        assert_eq!(store.authenticate(None, now()), Err(AuthFailure::Missing));
        assert_eq!(
            store.authenticate(Some("Bearer "), now()),
            Err(AuthFailure::Missing)
        );
        assert_eq!(
            store.authenticate(Some("Basic abc"), now()),
            Err(AuthFailure::Invalid)
        );
        assert_eq!(
            store.authenticate(Some("Bearer the-admin-key-012345678"), now()),
            Err(AuthFailure::Invalid)
        );
    }

    #[test]
    fn a_corrupt_key_file_is_an_error_not_an_empty_store() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keys.json"), b"{not json").unwrap();
        assert!(matches!(
            KeyStore::open(dir.path()),
            Err(KeyStoreError::Corrupt { .. })
        ));
    }
}
