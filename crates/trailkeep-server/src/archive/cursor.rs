//! The archive's restartable cursor: `<data-dir>/archive/state.json`, replaced atomically
//! (temporary file, fsync, rename, fsync of the directory) like `keys.json`.
//!
//! Per account: `archived` — records `[0, archived)` are in the bucket, each in exactly one
//! object — and the `pending` pass, saved *before* its first object is written and cleared (with
//! `archived` moved to its end) only *after* its last object and manifest were confirmed written.
//! A crash in between leaves the pending pass, which the next run repeats exactly (same records,
//! same bytes, same keys), recognising what is already there instead of writing it twice.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Version of `state.json` written by this build.
pub const STATE_VERSION: u32 = 1;

/// One pass `[from, to)` of an account, covered by the signed checkpoint `checkpoint_note` of
/// tree size `checkpoint_size`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pass {
    pub from: u64,
    pub to: u64,
    pub checkpoint_size: u64,
    pub checkpoint_note: String,
}

/// Where one account's archive stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountCursor {
    /// Records `[0, archived)` are archived.
    pub archived: u64,
    /// Objects (Parquet files) written for this account.
    pub objects: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pass>,
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveState {
    pub version: u32,
    /// The target this cursor is about (`s3://bucket/prefix at endpoint`): a cursor of another
    /// target says nothing about this one.
    pub target: String,
    pub accounts: BTreeMap<String, AccountCursor>,
}

#[derive(Debug, thiserror::Error)]
pub enum CursorError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// The cursor file of a data directory.
pub fn state_path(data_dir: &Path) -> PathBuf {
    data_dir.join("archive").join("state.json")
}

/// Reads the cursor for `target` (a fresh one when there is no file, or when the file is about
/// another target: then the old file is kept beside it as `state.<n>.json`).
pub fn load(path: &Path, target: &str) -> Result<ArchiveState, CursorError> {
    let fresh = || ArchiveState {
        version: STATE_VERSION,
        target: target.to_string(),
        accounts: BTreeMap::new(),
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(fresh()),
        Err(source) => {
            return Err(CursorError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let state: ArchiveState = serde_json::from_slice(&bytes).map_err(|e| CursorError::Invalid {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if state.version != STATE_VERSION {
        return Err(CursorError::Invalid {
            path: path.to_path_buf(),
            reason: format!(
                "version {} (this build reads {STATE_VERSION})",
                state.version
            ),
        });
    }
    if state.target != target {
        let mut n = 1;
        let kept = loop {
            let candidate = path.with_file_name(format!("state.{n}.json"));
            if !candidate.exists() {
                break candidate;
            }
            n += 1;
        };
        std::fs::rename(path, &kept).map_err(|source| CursorError::Io {
            path: kept.clone(),
            source,
        })?;
        tracing::warn!(
            old = %state.target,
            new = target,
            kept = %kept.display(),
            "the archive target changed: archiving starts from the beginning of every log"
        );
        return Ok(fresh());
    }
    Ok(state)
}

/// Saves the cursor atomically.
pub fn save(path: &Path, state: &ArchiveState) -> Result<(), CursorError> {
    let mut bytes = serde_json::to_vec_pretty(state).expect("the state serialises");
    bytes.push(b'\n');
    crate::auth::write_atomically(path, &bytes).map_err(|source| CursorError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_state_reads_back_and_another_target_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = state_path(dir.path());
        let mut state = load(&path, "s3://a").unwrap();
        assert!(state.accounts.is_empty());
        state.accounts.insert(
            "acme".into(),
            AccountCursor {
                archived: 7,
                objects: 2,
                pending: Some(Pass {
                    from: 7,
                    to: 9,
                    checkpoint_size: 9,
                    checkpoint_note: "note".into(),
                }),
            },
        );
        save(&path, &state).unwrap();
        assert_eq!(load(&path, "s3://a").unwrap(), state);
        let other = load(&path, "s3://b").unwrap();
        assert!(other.accounts.is_empty());
        assert!(path.with_file_name("state.1.json").exists());
    }
}
