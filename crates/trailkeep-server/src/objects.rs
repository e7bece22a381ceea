//! The object store: the last known state of every object (issue #11), kept beside the search
//! index. What was derived for each event (class, description) lives in the index itself.
//!
//! **Architecture Invariant:** like the index, this is derived data. It is fed the committed
//! records of each account in log order (by the indexer, by the catch-up at start, by `reindex`),
//! records how far it got per account, and can be deleted at any time: it is rebuilt from the
//! ledger. The ledger's bytes never change.
//!
//! # Format (version [`FORMAT_VERSION`])
//!
//! One redb file, `objects.redb` in the data directory (a B-tree on disk with a bounded page
//! cache, so millions of objects cost disk, not memory), with three tables:
//!
//! | table | key | value |
//! |---|---|---|
//! | `objects` | (account, `target.id`) | JSON [`ObjectState`] without its id |
//! | `positions` | account | the highest log index derived |
//! | `meta` | `"format"` | [`FORMAT_VERSION`] |
//!
//! A file of another version is deleted and rebuilt. A batch of derivations is kept in memory
//! and written in key order in one transaction, without fsync. The index is committed *before*
//! the store, so the store is never ahead of the index: after a crash it may lag, and the
//! catch-up at start derives again (state only) what the index already holds. A store found
//! ahead of the index (the index was deleted or rebuilt) is rebuilt from the ledger.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

use redb::{Database, ReadableTable, TableDefinition};
use serde::Serialize;
use serde_json::Value;
use trailkeep_event::object::{self, Change, Derived, ObjectState};

const OBJECTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("objects");
const POSITIONS: TableDefinition<&str, u64> = TableDefinition::new("positions");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The version of the store's tables and values.
pub const FORMAT_VERSION: u64 = 2;
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
    /// The attributes changed, old → new (sensitive ones without values): in timelines only,
    /// recomputed from the object's events.
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
    /// A 64-bit hash of every (account, object) in the store: a miss means "never seen", so a
    /// new object costs no B-tree lookup. 8 bytes (plus the set's overhead) per object.
    known: Mutex<HashSet<u64>>,
    /// Recently used states (objects that get many events, and parents): bounded, cleared when
    /// full.
    cache: Mutex<HashMap<u64, (String, ObjectState)>>,
}

/// How many states the cache holds at most.
const CACHE_STATES: usize = 100_000;

fn key_hash(account: &str, id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in account.bytes().chain([0]).chain(id.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
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
            txn.open_table(POSITIONS).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        let mut known = HashSet::new();
        {
            let txn = db.begin_read().map_err(db_err)?;
            let objects = txn.open_table(OBJECTS).map_err(db_err)?;
            for entry in objects.iter().map_err(db_err)? {
                let (k, _) = entry.map_err(db_err)?;
                let (account, id) = k.value();
                known.insert(key_hash(account, id));
            }
        }
        Ok((
            ObjectStore {
                db,
                known: Mutex::new(known),
                cache: Mutex::new(HashMap::new()),
            },
            recreated,
        ))
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
        let state: Option<ObjectState> = read_json(
            table
                .get((account, id))
                .map_err(db_err)?
                .map(|g| g.value().to_vec()),
        )?;
        Ok(state.map(|mut s| {
            s.id = id.to_string();
            s
        }))
    }

    /// The object of a stored event as it stands now, for the item's `derived.object`.
    pub fn object_ref(
        &self,
        account: &str,
        event: &Value,
    ) -> Result<Option<ObjectRef>, StoreError> {
        let Some(id) = object::target_id(event) else {
            return Ok(None);
        };
        let state = self.object(account, id)?;
        let deleted = state.as_ref().is_some_and(|s| s.deleted);
        // An object with no state (seen only through reads) goes by the event's name.
        let name = match state {
            _ if deleted => String::new(),
            Some(s) => s.name.unwrap_or_default(),
            None => event
                .get("target")
                .and_then(|t| t.get("name"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        };
        Ok(Some(ObjectRef {
            id: id.to_string(),
            name,
            deleted,
        }))
    }

    /// Starts a batch of derivations. Only one batch may be open at a time (the indexer's, or
    /// the catch-up's, or `reindex`'s).
    pub fn begin(&self) -> Result<Batch<'_>, StoreError> {
        Ok(Batch {
            store: self,
            objects: Dirty::default(),
            positions: BTreeMap::new(),
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

/// Derivations not yet committed, kept in memory (bounded by the caller's commit interval) and
/// written in key order at [`Batch::commit`]: sorted inserts cost redb far less than scattered
/// ones. Reads see the batch's own writes first.
pub struct Batch<'s> {
    store: &'s ObjectStore,
    objects: Dirty,
    positions: BTreeMap<String, u64>,
}

impl std::fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("objects", &self.objects.len())
            .finish_non_exhaustive()
    }
}

impl Batch<'_> {
    /// Derives the event at `(account, index)` from the states so far and records the object's
    /// new state. The caller feeds each account's records once, in log order, past
    /// [`ObjectStore::positions`].
    pub fn apply(
        &mut self,
        account: &str,
        index: u64,
        event: &Value,
    ) -> Result<Derived, StoreError> {
        let mut out = self.apply_all([(account, index, event)])?;
        Ok(out.pop().expect("one result per record"))
    }

    /// [`Batch::apply`] for several records in log order (one read transaction).
    pub fn apply_all<'e>(
        &mut self,
        records: impl IntoIterator<Item = (&'e str, u64, &'e Value)>,
    ) -> Result<Vec<Derived>, StoreError> {
        let txn = self.store.db.begin_read().map_err(db_err)?;
        let objects = txn.open_table(OBJECTS).map_err(db_err)?;
        // Only the batch's owner touches these two: locked once per call.
        let mut cache = self.store.cache.lock().expect("cache lock");
        let known = self.store.known.lock().expect("known lock");
        let mut out = Vec::new();
        for (account, index, event) in records {
            let id = object::target_id(event);
            let mut get = |mine: &Dirty, id: &str| -> Result<Option<ObjectState>, StoreError> {
                let h = key_hash(account, id);
                if let Some(s) = mine.get(h, account, id) {
                    return Ok(Some(s.clone()));
                }
                if let Some((a, s)) = cache.get(&h)
                    && a == account
                    && s.id == id
                {
                    return Ok(Some(s.clone()));
                }
                if !known.contains(&h) {
                    return Ok(None);
                }
                let state = read_json::<ObjectState>(
                    objects
                        .get((account, id))
                        .map_err(db_err)?
                        .map(|g| g.value().to_vec()),
                )?
                .map(|mut s| {
                    s.id = id.to_string();
                    s
                });
                if let Some(s) = &state {
                    if cache.len() >= CACHE_STATES {
                        cache.clear();
                    }
                    cache.insert(h, (account.to_string(), s.clone()));
                }
                Ok(state)
            };
            let (prior, parent) = match id {
                Some(id) => {
                    let prior = get(&self.objects, id)?;
                    let parent = match object::parent(id) {
                        Some(p) => get(&self.objects, &p)?,
                        None => None,
                    };
                    (prior, parent)
                }
                None => (None, None),
            };
            let d = object::derive(event, prior.as_ref(), parent.as_ref());
            if let (Some(id), Some(state)) = (id, d.state) {
                self.objects
                    .insert(key_hash(account, id), account, id, state);
            }
            let record = d.derived;
            match self.positions.get_mut(account) {
                Some(done) => *done = (*done).max(index),
                None => {
                    self.positions.insert(account.to_string(), index);
                }
            }
            out.push(record);
        }
        Ok(out)
    }

    /// Writes the batch in one transaction, in key order, and makes it durable.
    pub fn commit(mut self) -> Result<(), StoreError> {
        if self.objects.is_empty() && self.positions.is_empty() {
            return Ok(());
        }
        let mut txn = self.store.db.begin_write().map_err(db_err)?;
        // No fsync: the store is derived and committed after the index; one that lost its newest
        // commits in a crash lags the index and is caught up from the ledger at the next start.
        txn.set_durability(redb::Durability::Eventual);
        {
            let mut objects = txn.open_table(OBJECTS).map_err(db_err)?;
            for ((account, id), state) in self.objects.sorted_mut() {
                // The id is the key: not stored again in the value.
                let kept = std::mem::take(&mut state.id);
                let bytes = serde_json::to_vec(&*state).map_err(db_err)?;
                state.id = kept;
                objects
                    .insert((account, id), bytes.as_slice())
                    .map_err(db_err)?;
            }
            let mut positions = txn.open_table(POSITIONS).map_err(db_err)?;
            for (account, index) in &self.positions {
                positions.insert(account.as_str(), *index).map_err(db_err)?;
            }
        }
        txn.commit().map_err(db_err)?;
        let mut known = self.store.known.lock().expect("known lock");
        let mut cache = self.store.cache.lock().expect("cache lock");
        if cache.len() + self.objects.len() > CACHE_STATES {
            cache.clear();
        }
        for (h, (account, _, state)) in self.objects.into_entries() {
            known.insert(h);
            if cache.len() < CACHE_STATES {
                cache.insert(h, (account, state));
            }
        }
        Ok(())
    }
}

/// The states a batch changed, found by the hash of (account, id) without allocating; keys that
/// share a hash (unlikely at 64 bits) go to a second, exact map.
#[derive(Default)]
struct Dirty {
    by_hash: HashMap<u64, (String, String, ObjectState)>,
    collided: BTreeMap<(String, String), ObjectState>,
}

impl Dirty {
    fn get(&self, h: u64, account: &str, id: &str) -> Option<&ObjectState> {
        match self.by_hash.get(&h) {
            Some((a, i, s)) if a == account && i == id => Some(s),
            Some(_) => self.collided.get(&(account.to_string(), id.to_string())),
            None => None,
        }
    }

    fn insert(&mut self, h: u64, account: &str, id: &str, state: ObjectState) {
        match self.by_hash.get_mut(&h) {
            Some((a, i, s)) if a == account && i == id => *s = state,
            Some(_) => {
                self.collided
                    .insert((account.to_string(), id.to_string()), state);
            }
            None => {
                self.by_hash
                    .insert(h, (account.to_string(), id.to_string(), state));
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.by_hash.is_empty() && self.collided.is_empty()
    }

    fn len(&self) -> usize {
        self.by_hash.len() + self.collided.len()
    }

    /// Every entry in key order (redb takes sorted inserts far more cheaply).
    fn sorted_mut(&mut self) -> Vec<((&str, &str), &mut ObjectState)> {
        let mut all: Vec<((&str, &str), &mut ObjectState)> = self
            .by_hash
            .values_mut()
            .map(|(a, i, s)| ((a.as_str(), i.as_str()), s))
            .chain(
                self.collided
                    .iter_mut()
                    .map(|((a, i), s)| ((a.as_str(), i.as_str()), s)),
            )
            .collect();
        all.sort_unstable_by(|x, y| x.0.cmp(&y.0));
        all
    }

    /// Every entry with the hash of its key.
    fn into_entries(self) -> impl Iterator<Item = (u64, (String, String, ObjectState))> {
        self.by_hash.into_iter().chain(
            self.collided
                .into_iter()
                .map(|((a, i), s)| (key_hash(&a, &i), (a, i, s))),
        )
    }
}
