//! Accounts (tenants): the registry of accounts an admin created, kept in `accounts.json` in the
//! data directory (written atomically, like the key store).
//!
//! An account also exists once its log has events: an admin key (which covers every account) may
//! write to an account nobody registered, and such an account is listed with `registered: false`.
//! Keys limited to accounts may only name registered or existing accounts, so a typo in a key's
//! scope is an error instead of a key that silently sees nothing.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use crate::auth::write_atomically;

/// One registered account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    pub id: String,
    pub name: String,
    pub created_at: String,
    /// The key id that created it.
    pub created_by: String,
}

/// What `POST /v1/accounts` takes.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewAccount {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("cannot read or write the account file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the account file {path} is not valid: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("the account {0:?} already exists")]
    Exists(String),
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct AccountFile {
    version: u32,
    accounts: Vec<Account>,
}

/// The account registry: in memory, mirrored to `accounts.json`.
#[derive(Debug)]
pub struct AccountStore {
    path: PathBuf,
    accounts: RwLock<Vec<Account>>,
}

impl AccountStore {
    pub fn open(data_dir: &Path) -> Result<Self, AccountError> {
        let path = data_dir.join("accounts.json");
        let accounts = match std::fs::read(&path) {
            Ok(bytes) => {
                let file: AccountFile =
                    serde_json::from_slice(&bytes).map_err(|source| AccountError::Corrupt {
                        path: path.clone(),
                        source,
                    })?;
                file.accounts
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(AccountError::Io { path, source }),
        };
        Ok(AccountStore {
            path,
            accounts: RwLock::new(accounts),
        })
    }

    /// Registers an account. An id that already has a log may be registered (it gains a name).
    pub fn create(
        &self,
        spec: NewAccount,
        created_by: &str,
        now: &str,
    ) -> Result<Account, AccountError> {
        if !trailkeep_event::is_valid_account_id(&spec.id) {
            return Err(AccountError::Invalid {
                field: "id",
                reason: "1–128 characters of A-Z a-z 0-9 . _ -, not starting with \".\"".into(),
            });
        }
        let name = spec.name.unwrap_or_else(|| spec.id.clone());
        if name.trim().is_empty() || name.len() > 200 {
            return Err(AccountError::Invalid {
                field: "name",
                reason: "must be 1–200 characters".into(),
            });
        }
        let mut accounts = self.accounts.write().expect("account lock poisoned");
        if accounts.iter().any(|a| a.id == spec.id) {
            return Err(AccountError::Exists(spec.id));
        }
        let account = Account {
            id: spec.id,
            name,
            created_at: now.to_string(),
            created_by: created_by.to_string(),
        };
        accounts.push(account.clone());
        let file = AccountFile {
            version: 1,
            accounts: accounts.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&file).expect("account file serialises");
        if let Err(source) = write_atomically(&self.path, &bytes) {
            accounts.pop();
            return Err(AccountError::Io {
                path: self.path.clone(),
                source,
            });
        }
        Ok(account)
    }

    pub fn get(&self, id: &str) -> Option<Account> {
        let accounts = self.accounts.read().expect("account lock poisoned");
        accounts.iter().find(|a| a.id == id).cloned()
    }

    pub fn list(&self) -> Vec<Account> {
        self.accounts.read().expect("account lock poisoned").clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_survive_a_restart_and_ids_are_unique_and_valid() {
        let dir = tempfile::tempdir().unwrap();
        let store = AccountStore::open(dir.path()).unwrap();
        let spec = |id: &str| NewAccount {
            id: id.into(),
            name: Some(format!("Account {id}")),
        };
        store
            .create(spec("acme"), "k_1", "2026-11-22T00:00:00Z")
            .unwrap();
        assert!(matches!(
            store.create(spec("acme"), "k_1", "now"),
            Err(AccountError::Exists(_))
        ));
        assert!(matches!(
            store.create(spec("../etc"), "k_1", "now"),
            Err(AccountError::Invalid { field: "id", .. })
        ));
        let reopened = AccountStore::open(dir.path()).unwrap();
        assert_eq!(reopened.list().len(), 1);
        assert_eq!(reopened.get("acme").unwrap().name, "Account acme");
        assert_eq!(reopened.get("acme").unwrap().created_by, "k_1");
    }
}
