//! The object store: the last known state of every object and what was derived for every event
//! (issue #11), kept beside the search index.
//!
//! **Architecture Invariant:** like the index, this is derived data. It is fed the committed
//! records of each account in log order (by the indexer, by the catch-up at start, by `reindex`),
//! records how far it got per account, and can be deleted at any time: it is rebuilt from the
//! ledger. The ledger's bytes never change; class and description live here and in the index.
//!
//! # Format (version [`FORMAT_VERSION`])
//!
//! One redb file, `objects.redb` in the data directory (a B-tree on disk with a bounded page
//! cache, so millions of objects cost disk, not memory), with four tables:
//!
//! | table | key | value |
//! |---|---|---|
//! | `objects` | (account, `target.id`) | JSON [`ObjectState`] |
//! | `derived` | (account, log index) | JSON [`Derived`] (class, description, object, changes) |
//! | `positions` | account | the highest log index derived |
//! | `meta` | `"format"` | [`FORMAT_VERSION`] |
//!
//! A file of another version is deleted and rebuilt. Each commit writes states, derived records
//! and positions in one transaction. The indexer commits this store *before* the index, so the
//! store is never behind what the index has made searchable; the catch-up at start derives what
//! the store lacks and reads back what the index lacks.

use std::collections::BTreeMap;
use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition, WriteTransaction};
use serde::Serialize;
use serde_json::Value;
use trailkeep_event::object::{self, Change, Derived, ObjectState};

const OBJECTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("objects");
const DERIVED: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("derived");
const POSITIONS: TableDefinition<&str, u64> = TableDefinition::new("positions");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The version of the store's tables and values.
pub const FORMAT_VERSION: u64 = 1;
/// The store's file in the data directory.
pub const FILE_NAME: &str = "objects.redb";
/// Page cache of the store.
const CACHE_BYTES: usize = 32 << 20;

/// A failure of the object store.
#[derive(Debug, thiserror::Error)]
#[error("object store: {0}")]
pub struct StoreError(String);

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

/// What the API returns with an item (`"derived"`): derived data, not part of the ledger leaf.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemDerived {
    /// `create`, `update`, `delete`, `read` or `info`.
    pub class: String,
    /// The human-readable description.
    pub description: String,
    /// The attributes changed, old → new (sensitive ones without values).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<Change>,
    /// The object, as it stands now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectRef>,
}

/// The object of an item as it stands now.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// The `target.id`.
    pub id: String,
    /// The object's name now: empty once the object is deleted (its last known name stays in
    /// the timeline).
    pub name: String,
    /// Whether the object has been deleted since.
    pub deleted: bool,
}

/// The object store (see the module docs).
pub struct ObjectStore {
    db: Database,
}

impl std::fmt::Debug for ObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStore").finish_non_exhaustive()
    }
}

impl ObjectStore {
    /// Opens (or creates) the store at `path`; a store of another format is deleted and started
    /// empty (the second value is then `true`).
    pub fn open(path: &Path) -> Result<(ObjectStore, bool), StoreError> {
        let mut recreated = false;
        let db = match Self::open_db(path) {
            Ok(db) if Self::format(&db)? == Some(FORMAT_VERSION) => db,
            Ok(db) if Self::format(&db)?.is_none() && Self::is_empty(&db)? => db,
            other => {
                drop(other);
                recreated = path.exists();
                let _ = std::fs::remove_file(path);
                Self::open_db(path)?
            }
        };
        let txn = db.begin_write().map_err(db_err)?;
        {
            let mut meta = txn.open_table(META).map_err(db_err)?;
            meta.insert("format", FORMAT_VERSION).map_err(db_err)?;
            txn.open_table(OBJECTS).map_err(db_err)?;
            txn.open_table(DERIVED).map_err(db_err)?;
            txn.open_table(POSITIONS).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        Ok((ObjectStore { db }, recreated))
    }

    /// Deletes the store at `path` (for `reindex`).
    pub fn remove(path: &Path) -> Result<(), StoreError> {
        match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(db_err(e)),
        }
    }

    fn open_db(path: &Path) -> Result<Database, StoreError> {
        Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(db_err)
    }

    fn format(db: &Database) -> Result<Option<u64>, StoreError> {
        let txn = db.begin_read().map_err(db_err)?;
        match txn.open_table(META) {
            Ok(meta) => Ok(meta.get("format").map_err(db_err)?.map(|g| g.value())),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(db_err(e)),
        }
    }

    fn is_empty(db: &Database) -> Result<bool, StoreError> {
        let txn = db.begin_read().map_err(db_err)?;
        Ok(txn.list_tables().map_err(db_err)?.next().is_none())
    }

    /// The highest log index derived, per account.
    pub fn positions(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(POSITIONS).map_err(db_err)?;
        let mut out = BTreeMap::new();
        for entry in table.iter().map_err(db_err)? {
            let (k, v) = entry.map_err(db_err)?;
            out.insert(k.value().to_string(), v.value());
        }
        Ok(out)
    }

    /// The last known state of an object of `account`.
    pub fn object(&self, account: &str, id: &str) -> Result<Option<ObjectState>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(OBJECTS).map_err(db_err)?;
        read_json(
            table
                .get((account, id))
                .map_err(db_err)?
                .map(|g| g.value().to_vec()),
        )
    }

    /// What was derived for the event at `(account, index)`.
    pub fn derived(&self, account: &str, index: u64) -> Result<Option<Derived>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(DERIVED).map_err(db_err)?;
        read_json(
            table
                .get((account, index))
                .map_err(db_err)?
                .map(|g| g.value().to_vec()),
        )
    }

    /// The derived data returned with the item at `(account, index)`.
    pub fn item_derived(
        &self,
        account: &str,
        index: u64,
    ) -> Result<Option<ItemDerived>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let derived = txn.open_table(DERIVED).map_err(db_err)?;
        let Some(d): Option<Derived> = read_json(
            derived
                .get((account, index))
                .map_err(db_err)?
                .map(|g| g.value().to_vec()),
        )?
        else {
            return Ok(None);
        };
        let object = match &d.object {
            Some(id) => {
                let objects = txn.open_table(OBJECTS).map_err(db_err)?;
                let state: Option<ObjectState> = read_json(
                    objects
                        .get((account, id.as_str()))
                        .map_err(db_err)?
                        .map(|g| g.value().to_vec()),
                )?;
                let deleted = state.as_ref().is_some_and(|s| s.deleted);
                Some(ObjectRef {
                    id: id.clone(),
                    name: if deleted {
                        String::new()
                    } else {
                        state.and_then(|s| s.name).unwrap_or_default()
                    },
                    deleted,
                })
            }
            None => None,
        };
        Ok(Some(ItemDerived {
            class: d.class,
            description: d.description,
            changes: d.changes,
            object,
        }))
    }

    /// Starts a batch of derivations (one write transaction; only one at a time).
    pub fn begin(&self) -> Result<Batch, StoreError> {
        Ok(Batch {
            txn: self.db.begin_write().map_err(db_err)?,
        })
    }
}

fn read_json<T: serde::de::DeserializeOwned>(
    bytes: Option<Vec<u8>>,
) -> Result<Option<T>, StoreError> {
    bytes
        .map(|b| serde_json::from_slice(&b).map_err(db_err))
        .transpose()
}

/// Derivations not yet committed; reads inside the batch see its own writes.
pub struct Batch {
    txn: WriteTransaction,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").finish_non_exhaustive()
    }
}

impl Batch {
    /// Derives the event at `(account, index)` from the states so far and records the result
    /// and the object's new state. A position the store already derived is not derived again:
    /// its record is returned.
    pub fn apply(
        &mut self,
        account: &str,
        index: u64,
        event: &Value,
    ) -> Result<Derived, StoreError> {
        let mut positions = self.txn.open_table(POSITIONS).map_err(db_err)?;
        let mut derived = self.txn.open_table(DERIVED).map_err(db_err)?;
        let done = positions.get(account).map_err(db_err)?.map(|g| g.value());
        if done.is_some_and(|p| index <= p) {
            let old: Option<Derived> = read_json(
                derived
                    .get((account, index))
                    .map_err(db_err)?
                    .map(|g| g.value().to_vec()),
            )?;
            if let Some(old) = old {
                return Ok(old);
            }
        }
        let mut objects = self.txn.open_table(OBJECTS).map_err(db_err)?;
        let id = object::target_id(event);
        let get = |objects: &redb::Table<(&str, &str), &[u8]>, id: &str| {
            read_json::<ObjectState>(
                objects
                    .get((account, id))
                    .map_err(db_err)?
                    .map(|g| g.value().to_vec()),
            )
        };
        let (prior, parent) = match id {
            Some(id) => {
                let prior = get(&objects, id)?;
                let parent = match object::ancestors(id).first() {
                    Some(p) => get(&objects, p)?,
                    None => None,
                };
                (prior, parent)
            }
            None => (None, None),
        };
        let d = object::derive(event, prior.as_ref(), parent.as_ref());
        if let (Some(id), Some(state)) = (id, &d.state) {
            let bytes = serde_json::to_vec(state).map_err(db_err)?;
            objects
                .insert((account, id), bytes.as_slice())
                .map_err(db_err)?;
        }
        let bytes = serde_json::to_vec(&d.derived).map_err(db_err)?;
        derived
            .insert((account, index), bytes.as_slice())
            .map_err(db_err)?;
        if done.is_none_or(|p| index > p) {
            positions.insert(account, index).map_err(db_err)?;
        }
        Ok(d.derived)
    }

    /// Makes the batch durable.
    pub fn commit(self) -> Result<(), StoreError> {
        self.txn.commit().map_err(db_err)
    }
}
