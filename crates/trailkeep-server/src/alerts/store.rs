//! Persistence of the management data under `<data-dir>/alerts/`.
//!
//! | file | holds | written |
//! |---|---|---|
//! | `config.json` | views and rules (`{"version": 1, "views": [...], "rules": [...]}`) | on every change |
//! | `state.json` | evaluator positions and rule states (`super::evaluator`) | at most every second, and whenever a rule fires |
//! | `outbox.json` | pending deliveries (`super::outbox`) | on every change |
//! | `history.jsonl` | alert history, one JSON object per line | appended, compacted at start |
//!
//! The JSON documents are small and replaced atomically like `keys.json`: write a temporary file,
//! fsync it, rename it over the old one, fsync the directory (`auth::write_atomically`). A crash
//! leaves the old or the new document, never a mix. Each starts with a `version`; a file of
//! another version is refused with a clear error rather than misread.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::model::{Rule, View};
use crate::auth::write_atomically;

pub const CONFIG_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("replaying the ledger: {0}")]
    Ledger(String),
}

/// Reads a versioned JSON document, or `None` when the file does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path, version: u32) -> Result<Option<T>, StoreError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let corrupt = |reason: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let found = value.get("version").and_then(serde_json::Value::as_u64);
    if found != Some(u64::from(version)) {
        return Err(corrupt(format!(
            "format version {found:?}; this build reads version {version}"
        )));
    }
    serde_json::from_value(value)
        .map(Some)
        .map_err(|e| corrupt(e.to_string()))
}

/// Replaces a JSON document atomically (see the module docs).
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(value).expect("management data serialises");
    write_atomically(path, &bytes).map_err(|source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConfigFile {
    pub version: u32,
    pub views: Vec<View>,
    pub rules: Vec<Rule>,
}

/// Views and rules: in memory, mirrored to `config.json`. Changes are made through
/// [`ConfigStore::update`], which persists before the change becomes visible.
#[derive(Debug)]
pub struct ConfigStore {
    path: PathBuf,
    data: RwLock<ConfigFile>,
    /// Bumped on every change, so the evaluator knows to recompile its rules.
    generation: std::sync::atomic::AtomicU64,
}

impl ConfigStore {
    pub fn open(dir: &Path) -> Result<ConfigStore, StoreError> {
        let path = dir.join("config.json");
        let data = read_json::<ConfigFile>(&path, CONFIG_VERSION)?.unwrap_or(ConfigFile {
            version: CONFIG_VERSION,
            ..Default::default()
        });
        Ok(ConfigStore {
            path,
            data: RwLock::new(data),
            generation: std::sync::atomic::AtomicU64::new(1),
        })
    }

    pub fn read<T>(&self, f: impl FnOnce(&ConfigFile) -> T) -> T {
        f(&self.data.read().expect("config lock"))
    }

    /// Applies `f` to a copy, persists the copy, then makes it current. `f` may refuse.
    pub fn update<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&mut ConfigFile) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut guard = self.data.write().expect("config lock");
        let mut copy = guard.clone();
        let out = f(&mut copy)?;
        write_json(&self.path, &copy)?;
        *guard = copy;
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(out)
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A new object id: a prefix and 16 random bytes in hex.
pub fn new_id(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the OS has random bytes");
    format!("{prefix}_{}", hex::encode(bytes))
}

impl From<StoreError> for crate::error::ApiError {
    fn from(e: StoreError) -> Self {
        crate::error::ApiError::store(e)
    }
}
