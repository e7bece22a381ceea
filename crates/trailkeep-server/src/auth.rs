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
    pub created_at: String,
    pub secret_sha256: String,
    #[serde(default)]
    pub revoked: bool,
}

/// The authenticated caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: String,
    pub key_name: String,
    pub role: Role,
    pub accounts: AccountScope,
    pub default_account: String,
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
}

/// Why a request was not authenticated. The message never says whether a key exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    Invalid,
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
            }
            None => keys.push(StoredKey {
                id: BOOTSTRAP_KEY_ID.to_string(),
                name: "bootstrap admin".to_string(),
                role: Role::Admin,
                accounts: AccountScope::All,
                default_account: "default".to_string(),
                created_at: now.to_string(),
                secret_sha256: hash,
                revoked: false,
            }),
        }
        self.persist(&keys)?;
        Ok(generated.then_some(secret))
    }

    /// Turns an `Authorization` header value into a principal.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthFailure> {
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
            if bool::from(stored.as_slice().ct_eq(presented.as_slice())) && !key.revoked {
                found = Some(key);
            }
        }
        let key = found.ok_or(AuthFailure::Invalid)?;
        Ok(Principal {
            key_id: key.id.clone(),
            key_name: key.name.clone(),
            role: key.role,
            accounts: key.accounts.clone(),
            default_account: key.default_account.clone(),
        })
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
            .authenticate(Some(&format!("Bearer {secret}")))
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
            .authenticate(Some(&format!("Bearer {first}")))
            .unwrap();
        store.ensure_bootstrap_admin(Some(second), NOW).unwrap();
        assert_eq!(
            store.authenticate(Some(&format!("Bearer {first}"))),
            Err(AuthFailure::Invalid)
        );
        store
            .authenticate(Some(&format!("Bearer {second}")))
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
        assert_eq!(store.authenticate(None), Err(AuthFailure::Missing));
        assert_eq!(
            store.authenticate(Some("Bearer ")),
            Err(AuthFailure::Missing)
        );
        assert_eq!(
            store.authenticate(Some("Basic abc")),
            Err(AuthFailure::Invalid)
        );
        assert_eq!(
            store.authenticate(Some("Bearer the-admin-key-012345678")),
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
