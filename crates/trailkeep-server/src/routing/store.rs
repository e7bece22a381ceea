//! Persistence of the routing configuration: `<data-dir>/routing/config.json`
//! (`{"version": 1, "targets": [...], "routes": [...], "settings": {...}}`), replaced atomically
//! on every change like the alerts' `config.json` (temporary file, fsync, rename, fsync of the
//! directory). Target keys and webhook secrets are stored in clear here (the server must send
//! them); the file is created readable by its owner only.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use super::model::{Route, Settings, Target};
use crate::alerts::store::{StoreError, read_json, write_json};

pub const CONFIG_VERSION: u32 = 1;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConfigFile {
    pub version: u32,
    /// Created targets (the built-in `local` target is not stored).
    pub targets: Vec<Target>,
    pub routes: Vec<Route>,
    #[serde(default)]
    pub settings: Settings,
}

impl ConfigFile {
    /// Every target, the built-in `local` one first.
    pub fn all_targets(&self) -> Vec<Target> {
        let mut all = vec![Target::builtin_local()];
        all.extend(self.targets.iter().cloned());
        all
    }
}

/// The routing configuration in memory, mirrored to `config.json`.
#[derive(Debug)]
pub struct RoutingStore {
    path: PathBuf,
    data: RwLock<ConfigFile>,
}

impl RoutingStore {
    pub fn open(dir: &Path) -> Result<RoutingStore, StoreError> {
        let path = dir.join("config.json");
        let data = read_json::<ConfigFile>(&path, CONFIG_VERSION)?.unwrap_or(ConfigFile {
            version: CONFIG_VERSION,
            ..Default::default()
        });
        Ok(RoutingStore {
            path,
            data: RwLock::new(data),
        })
    }

    pub fn read<T>(&self, f: impl FnOnce(&ConfigFile) -> T) -> T {
        f(&self.data.read().expect("routing config lock"))
    }

    /// Applies `f` to a copy, persists the copy, then makes it current. `f` may refuse.
    pub fn update<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&mut ConfigFile) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut guard = self.data.write().expect("routing config lock");
        let mut copy = guard.clone();
        let out = f(&mut copy)?;
        write_json(&self.path, &copy)?;
        restrict_permissions(&self.path);
        *guard = copy;
        Ok(out)
    }
}

#[cfg(unix)]
fn restrict_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

#[cfg(not(unix))]
fn restrict_permissions(_: &Path) {}
