//! Views, alert rules, their evaluation against committed records, and notifications.
//!
//! * [`model`] — the stored objects and their validation; [`store`] — how they persist.
//! * [`views`] — `/v1/views`, and `view=<id>` on reads.
//!
//! **Architecture Invariant:** rule state is derived from the ledger. The evaluator sees each
//! committed record once, in log order per account, and persists how far it got together with the
//! state it derived; after a restart it replays the ledger from there.

pub mod model;
pub mod store;
pub mod views;

use std::path::PathBuf;
use std::sync::{Arc, Weak};

use axum::Router;

use crate::app::AppState;
use crate::auth::{Principal, Role};
use crate::core::Core;
use crate::error::ApiError;
use store::{ConfigStore, StoreError};

/// The alerting side of a server: views, rules, evaluator, outbox.
#[derive(Debug)]
pub struct Alerts {
    pub config: ConfigStore,
    pub dir: PathBuf,
    #[allow(dead_code)]
    core: Weak<Core>,
}

impl Alerts {
    /// Opens the management data under `<data-dir>/alerts` and attaches it to `core`.
    pub fn start(core: &Arc<Core>, data_dir: &std::path::Path) -> Result<Arc<Alerts>, StoreError> {
        let dir = data_dir.join("alerts");
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
            path: dir.clone(),
            source,
        })?;
        let alerts = Arc::new(Alerts {
            config: ConfigStore::open(&dir)?,
            dir,
            core: Arc::downgrade(core),
        });
        let _ = core.alerts.set(alerts.clone());
        Ok(alerts)
    }
}

/// The routes of views and alerts.
pub fn routes(state: AppState) -> Router {
    Router::new().merge(views::routes(state))
}

/// The alerting side of the server (503 when this server runs without it).
pub fn alerts_of(state: &AppState) -> Result<Arc<Alerts>, ApiError> {
    state
        .core
        .alerts
        .get()
        .cloned()
        .ok_or_else(|| ApiError::unavailable("alerting is not running on this server"))
}

/// May the caller read objects (views, rules, history) of `account`?
pub fn can_see(caller: &Principal, account: &str) -> bool {
    caller.role.can_read() && caller.accounts.allows(account)
}

/// May the caller create and change views and rules of `account`?
pub fn can_manage(caller: &Principal, account: &str) -> bool {
    matches!(caller.role, Role::Manager | Role::Admin) && caller.accounts.allows(account)
}
