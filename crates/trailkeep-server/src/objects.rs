//! The object store: the last known state of every object (issue #11), kept beside the search
//! index. What was derived for each event (class, description) lives in the index itself.
//!
//! **Architecture Invariant:** like the index, this is derived data. It is fed the committed
//! records of each account in log order (by the indexer, by the catch-up at start, by `reindex`),
//! records how far it got per account, and can be deleted at any time: it is rebuilt from the
//! ledger. The ledger's bytes never change. A value that cannot be read is never guessed at: the
//! store is marked corrupt, and the next catch-up empties it and derives it again from the ledger.
//!
//! # Format (version [`FORMAT_VERSION`])
//!
//! One redb file, `objects.redb` in the data directory (a B-tree on disk with a bounded page
//! cache, so millions of objects cost disk, not memory), with four tables:
//!
//! | table | key | value |
//! |---|---|---|
//! | `objects` | `u128`: the first 16 bytes of SHA-256(len(account) as u64 LE ‖ account ‖ `target.id`) | the state without its id (below) |
//! | `positions` | account | the highest log index derived |
//! | `strings` | `u32`, numbered from 0 | a string many states share (types, attribute names, values) |
//! | `meta` | `"format"` | [`FORMAT_VERSION`] |
//!
//! The key is a cryptographic digest of (account, id), not the strings themselves (which were
//! about 150 bytes a key): 16 bytes, and no two (account, id) pairs share one in practice —
//! not even on purpose, so a tenant cannot make its object read as another tenant's. Nothing
//! lists the objects of an account; every read knows the (account, id) it looks for.
//!
//! A state is written by [`trailkeep_event::object_codec`] (which has a fuzz target) as
//! (integers `varint` = unsigned LEB128; strings `str` = varint length then UTF-8 bytes; `text` =
//! varint `id << 1 | 1` for a string of the `strings` table, else varint `length << 1` then
//! UTF-8 bytes):
//!
//! | field | bytes |
//! |---|---|
//! | tag | `0xB3` (a value of this layout) |
//! | flags | bit 0 deleted, bit 1 has a name, bit 2 the name is the id's last segment (not stored), bit 3 has a parent |
//! | type | `text` |
//! | name | `str`, when bit 1 is set and bit 2 is not |
//! | parent | `str`, when bit 3 is set (never in practice: it follows from the id) |
//! | attributes | varint count, then per attribute (in key order) `text` key and a value |
//!
//! An attribute value is a kind byte and its payload: `0` null, `1` false, `2` true, `3` a
//! string (`text`), `4` a long value's digest and `5` a sensitive value's digest (8 bytes, little
//! endian; see [`object::parse_digest`]), `6` an integer (zigzag varint), `7` anything else as
//! JSON text (`text`). A value with trailing bytes, a length past its end, an unknown tag or kind,
//! a string id not in the table, bad UTF-8 or bad JSON is corrupt ([`StoreError::Corrupt`]).
//!
//! The `strings` table is held in memory (both ways) and bounded (1,048,576 strings, 32 MiB of
//! text; strings over 256 bytes are never in it): past that, new strings are written inline.
//! A string is added in the transaction that first writes a state using it, and never removed
//! (until a rebuild). A table not numbered 0, 1, 2, … makes the store be rebuilt at open.
//!
//! A file of another version is deleted and rebuilt. A batch of derivations is kept in memory;
//! committed batches (after the index's commit) stay in memory, where every read sees them, and
//! are written to the file in key order in one transaction, without fsync, once 25,000 states
//! wait or the oldest is 10 s old, and when the store is closed; a state an event left as it
//! was is not written again. The index is committed *before* the store, so the store is never
//! ahead of the index: after a crash it may lag (by what was not yet written), and the catch-up
//! at start derives again (state only) what the index already holds. A store found ahead of the
//! index (the index was deleted or rebuilt) is rebuilt from the ledger.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redb::{Database, ReadableTable, TableDefinition};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use trailkeep_event::object::{self, Change, Derived, ObjectState};
use trailkeep_event::object_codec as codec;

const OBJECTS: TableDefinition<u128, &[u8]> = TableDefinition::new("objects");
const POSITIONS: TableDefinition<&str, u64> = TableDefinition::new("positions");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const STRINGS: TableDefinition<u32, &str> = TableDefinition::new("strings");

/// The version of the store's tables and values.
pub const FORMAT_VERSION: u64 = 3;
/// The store's file in the data directory.
pub const FILE_NAME: &str = "objects.redb";
/// Page cache of the store.
const CACHE_BYTES: usize = 32 << 20;

/// A failure of the object store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed (I/O, a full disk).
    #[error("object store: {0}")]
    Db(String),
    /// A stored state cannot be read: the store is derived data and is rebuilt from the ledger,
    /// never trusted.
    #[error("object store: a stored state is corrupt ({0}); the store is rebuilt from the ledger")]
    Corrupt(String),
}

impl From<codec::Corrupt> for StoreError {
    fn from(e: codec::Corrupt) -> Self {
        StoreError::Corrupt(e.0)
    }
}

impl StoreError {
    /// Whether the store holds a value it cannot read (it must be rebuilt).
    pub fn is_corrupt(&self) -> bool {
        matches!(self, StoreError::Corrupt(_))
    }
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(e.to_string())
}

/// The key of an object: the first 16 bytes of SHA-256 over the account (length-prefixed, so
/// that no two pairs run together) and the id.
pub fn object_key(account: &str, id: &str) -> u128 {
    let mut h = Sha256::new();
    h.update((account.len() as u64).to_le_bytes());
    h.update(account.as_bytes());
    h.update(id.as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(first)
}

/// A hasher for keys that are already uniformly distributed digests: their low 64 bits.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

type KeyMap<V> = HashMap<u128, V, BuildHasherDefault<KeyHasher>>;
type KeySet = HashSet<u64, BuildHasherDefault<KeyHasher>>;

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
    /// The low 64 bits of the key of every object in the store: a miss means "never seen", so a
    /// new object costs no B-tree lookup. 8 bytes (plus the set's overhead) per object.
    known: Mutex<KeySet>,
    /// Recently used states (objects that get many events, and parents): bounded, cleared when
    /// full.
    cache: Mutex<KeyMap<ObjectState>>,
    /// A stored value could not be read: the next catch-up empties the store and derives it
    /// again ([`ObjectStore::reset`]).
    corrupt: AtomicBool,
    /// Committed batches not yet written to the file (see [`ObjectStore::flush`]).
    unflushed: Mutex<Unflushed>,
    /// The `strings` table.
    dict: std::sync::RwLock<codec::Dictionary>,
}

/// Batches committed to the store but not yet to its file: every read sees them. They are
/// written in one transaction once they hold [`FLUSH_STATES`] states or the oldest is
/// [`FLUSH_AFTER`] old, and when the store is dropped; lost in a crash, they are derived again
/// by the catch-up (the file's positions say how far it got).
#[derive(Default)]
struct Unflushed {
    states: KeyMap<ObjectState>,
    /// Being written: still read from here until the write is committed.
    flushing: Option<std::sync::Arc<KeyMap<ObjectState>>>,
    positions: BTreeMap<String, u64>,
    since: Option<Instant>,
}

impl Unflushed {
    fn get(&self, key: u128) -> Option<&ObjectState> {
        self.states
            .get(&key)
            .or_else(|| self.flushing.as_ref().and_then(|f| f.get(&key)))
    }
}

/// Write the committed batches to the file once they hold this many states...
const FLUSH_STATES: usize = 25_000;
/// ...or the oldest was committed this long ago.
const FLUSH_AFTER: Duration = Duration::from_secs(10);

/// How many states the cache holds at most.
const CACHE_STATES: usize = 100_000;

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
            txn.open_table(STRINGS).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        let dict = {
            let txn = db.begin_read().map_err(db_err)?;
            let strings = txn.open_table(STRINGS).map_err(db_err)?;
            let mut rows = Vec::new();
            for entry in strings.iter().map_err(db_err)? {
                let (k, v) = entry.map_err(db_err)?;
                rows.push((k.value(), v.value().to_string()));
            }
            codec::Dictionary::load(rows)
        };
        let dict = match dict {
            Ok(d) => d,
            // Derived data: a damaged dictionary means a store rebuilt from the ledger.
            Err(e) => {
                tracing::warn!(error = %e, "the object store's dictionary is damaged; rebuilding the store");
                drop(db);
                ObjectStore::remove(path)?;
                let (store, _) = ObjectStore::open(path)?;
                return Ok((store, true));
            }
        };
        let mut known = KeySet::default();
        {
            let txn = db.begin_read().map_err(db_err)?;
            let objects = txn.open_table(OBJECTS).map_err(db_err)?;
            for entry in objects.iter().map_err(db_err)? {
                let (k, _) = entry.map_err(db_err)?;
                known.insert(k.value() as u64);
            }
        }
        Ok((
            ObjectStore {
                db,
                known: Mutex::new(known),
                cache: Mutex::new(KeyMap::default()),
                corrupt: AtomicBool::new(false),
                unflushed: Mutex::new(Unflushed::default()),
                dict: std::sync::RwLock::new(dict),
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

    /// Whether a stored value was found unreadable since the last [`ObjectStore::reset`].
    pub fn is_corrupt(&self) -> bool {
        self.corrupt.load(Ordering::Relaxed)
    }

    /// Empties the store (states and positions), so that the next catch-up derives every
    /// account again from the ledger. No batch may be open.
    pub fn reset(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        txn.delete_table(OBJECTS).map_err(db_err)?;
        txn.delete_table(POSITIONS).map_err(db_err)?;
        txn.delete_table(STRINGS).map_err(db_err)?;
        txn.open_table(OBJECTS).map_err(db_err)?;
        txn.open_table(POSITIONS).map_err(db_err)?;
        txn.open_table(STRINGS).map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        *self.dict.write().expect("dictionary lock") = codec::Dictionary::default();
        self.known.lock().expect("known lock").clear();
        self.cache.lock().expect("cache lock").clear();
        *self.unflushed.lock().expect("unflushed lock") = Unflushed::default();
        self.corrupt.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Marks the store corrupt when `e` says a value could not be read.
    fn checked<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(e) = &r
            && e.is_corrupt()
        {
            tracing::error!(error = %e, "the object store holds an unreadable state; it is rebuilt at the next catch-up");
            self.corrupt.store(true, Ordering::Relaxed);
        }
        r
    }

    /// The highest log index derived, per account (committed batches included).
    pub fn positions(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(POSITIONS).map_err(db_err)?;
        let mut out = BTreeMap::new();
        for entry in table.iter().map_err(db_err)? {
            let (k, v) = entry.map_err(db_err)?;
            out.insert(k.value().to_string(), v.value());
        }
        for (account, index) in &self.unflushed.lock().expect("unflushed lock").positions {
            let p = out.entry(account.clone()).or_insert(*index);
            *p = (*p).max(*index);
        }
        Ok(out)
    }

    /// The state of `key`: from the committed batches not yet written, else from the file.
    fn stored(&self, key: u128) -> Result<Stored, StoreError> {
        if let Some(s) = self.unflushed.lock().expect("unflushed lock").get(key) {
            return Ok(Stored::State(s.clone()));
        }
        // Read after the batches: a batch being written is read from memory until committed.
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(OBJECTS).map_err(db_err)?;
        Ok(match table.get(key).map_err(db_err)? {
            Some(bytes) => Stored::Bytes(bytes),
            None => Stored::None,
        })
    }

    /// The last known state of an object of `account`.
    pub fn object(&self, account: &str, id: &str) -> Result<Option<ObjectState>, StoreError> {
        match self.stored(object_key(account, id))? {
            Stored::State(s) => Ok(Some(s)),
            Stored::Bytes(bytes) => {
                let dict = self.dict.read().expect("dictionary lock");
                self.checked(codec::decode(bytes.value(), id, &dict).map_err(StoreError::from))
                    .map(Some)
            }
            Stored::None => Ok(None),
        }
    }

    /// Writes the committed batches to the file, in key order, in one transaction (without
    /// fsync: see the module docs).
    pub fn flush(&self) -> Result<(), StoreError> {
        let (states, positions) = {
            let mut u = self.unflushed.lock().expect("unflushed lock");
            if u.states.is_empty() && u.positions.is_empty() {
                return Ok(());
            }
            let states = std::sync::Arc::new(std::mem::take(&mut u.states));
            u.flushing = Some(states.clone());
            u.since = None;
            (states, std::mem::take(&mut u.positions))
        };
        let written = self.write(&states, &positions).map(|fresh| {
            // Before the states leave memory: a read from the file may need the new strings.
            self.dict.write().expect("dictionary lock").extend(fresh);
        });
        let mut u = self.unflushed.lock().expect("unflushed lock");
        u.flushing = None;
        let states = std::sync::Arc::try_unwrap(states).unwrap_or_else(|s| (*s).clone());
        match written {
            Ok(()) => {
                drop(u);
                // Now in the file: the cache may keep them.
                let mut cache = self.cache.lock().expect("cache lock");
                if cache.len() + states.len() > CACHE_STATES {
                    cache.clear();
                }
                for (key, state) in states {
                    if cache.len() < CACHE_STATES {
                        cache.insert(key, state);
                    }
                }
                Ok(())
            }
            Err(e) => {
                // Kept for the next try (no batch was committed meanwhile: one owner at a time).
                for (key, state) in states {
                    u.states.entry(key).or_insert(state);
                }
                for (account, index) in positions {
                    let p = u.positions.entry(account).or_insert(index);
                    *p = (*p).max(index);
                }
                u.since.get_or_insert_with(Instant::now);
                Err(e)
            }
        }
    }

    fn write(
        &self,
        states: &KeyMap<ObjectState>,
        positions: &BTreeMap<String, u64>,
    ) -> Result<Vec<std::sync::Arc<str>>, StoreError> {
        let dict = self.dict.read().expect("dictionary lock");
        let mut interner = codec::Interner::new(&dict);
        let mut txn = self.db.begin_write().map_err(db_err)?;
        // No fsync: the store is derived and committed after the index; one that lost its newest
        // commits in a crash lags the index and is caught up from the ledger at the next start.
        txn.set_durability(redb::Durability::Eventual);
        {
            let mut table = txn.open_table(OBJECTS).map_err(db_err)?;
            let mut sorted: Vec<(&u128, &ObjectState)> = states.iter().collect();
            sorted.sort_unstable_by_key(|(k, _)| **k);
            let mut buf = Vec::with_capacity(256);
            for (key, state) in sorted {
                buf.clear();
                codec::encode(state, &mut buf, &mut interner);
                table.insert(*key, buf.as_slice()).map_err(db_err)?;
            }
            let mut table = txn.open_table(POSITIONS).map_err(db_err)?;
            for (account, index) in positions {
                table.insert(account.as_str(), *index).map_err(db_err)?;
            }
        }
        let first = dict.len();
        let fresh = interner.fresh();
        {
            let mut table = txn.open_table(STRINGS).map_err(db_err)?;
            for (i, text) in fresh.iter().enumerate() {
                table.insert((first + i) as u32, &**text).map_err(db_err)?;
            }
        }
        txn.commit().map_err(db_err)?;
        Ok(fresh)
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
        // Only the head of the state (flags, type, name) is read.
        let head = match self.stored(object_key(account, id))? {
            Stored::State(s) => Some(s),
            Stored::Bytes(bytes) => {
                let dict = self.dict.read().expect("dictionary lock");
                Some(self.checked(
                    codec::decode_head(bytes.value(), id, &dict).map_err(StoreError::from),
                )?)
            }
            Stored::None => None,
        };
        let deleted = head.as_ref().is_some_and(|h| h.deleted);
        // An object with no state (seen only through reads) goes by the event's name.
        let name = match head {
            _ if deleted => String::new(),
            Some(h) => h.name.unwrap_or_default(),
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

    /// [`ObjectStore::object_ref`] of many stored events at once (an export's batch), in the
    /// same order: one read transaction for them all, the keys looked up in key order, and each
    /// (account, `target.id`) read once however many of the events name it. Read only.
    pub fn object_refs(
        &self,
        events: &[(&str, &Value)],
    ) -> Result<Vec<Option<ObjectRef>>, StoreError> {
        /// What `derived.object` takes from a state: deleted, and the name.
        type Head = Option<(bool, Option<String>)>;
        let keys: Vec<Option<(u128, &str)>> = events
            .iter()
            .map(|(account, event)| {
                object::target_id(event).map(|id| (object_key(account, id), id))
            })
            .collect();
        let mut heads: BTreeMap<u128, Head> = BTreeMap::new();
        let mut unread: Vec<(u128, &str)> = Vec::new();
        {
            // Committed batches not yet in the file are read from memory, as `stored` does.
            let unflushed = self.unflushed.lock().expect("unflushed lock");
            for &(key, id) in keys.iter().flatten() {
                if heads.contains_key(&key) {
                    continue;
                }
                match unflushed.get(key) {
                    Some(s) => {
                        heads.insert(key, Some((s.deleted, s.name.clone())));
                    }
                    None => {
                        heads.insert(key, None);
                        unread.push((key, id));
                    }
                }
            }
        }
        if !unread.is_empty() {
            unread.sort_unstable_by_key(|&(key, _)| key);
            let txn = self.db.begin_read().map_err(db_err)?;
            let table = txn.open_table(OBJECTS).map_err(db_err)?;
            let dict = self.dict.read().expect("dictionary lock");
            for (key, id) in unread {
                if let Some(bytes) = table.get(key).map_err(db_err)? {
                    let h = self.checked(
                        codec::decode_head(bytes.value(), id, &dict).map_err(StoreError::from),
                    )?;
                    heads.insert(key, Some((h.deleted, h.name)));
                }
            }
        }
        Ok(events
            .iter()
            .zip(keys)
            .map(|((_, event), key)| {
                let (key, id) = key?;
                let head = heads.get(&key).cloned().flatten();
                let deleted = head.as_ref().is_some_and(|(deleted, _)| *deleted);
                // As in `object_ref`: an object with no state goes by the event's name.
                let name = match head {
                    _ if deleted => String::new(),
                    Some((_, name)) => name.unwrap_or_default(),
                    None => event
                        .get("target")
                        .and_then(|t| t.get("name"))
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                };
                Some(ObjectRef {
                    id: id.to_string(),
                    name,
                    deleted,
                })
            })
            .collect())
    }

    /// Starts a batch of derivations. Only one batch may be open at a time (the indexer's, or
    /// the catch-up's, or `reindex`'s).
    pub fn begin(&self) -> Result<Batch<'_>, StoreError> {
        Ok(Batch {
            store: self,
            objects: KeyMap::default(),
            positions: BTreeMap::new(),
        })
    }
}

/// A state as found by [`ObjectStore::stored`].
enum Stored {
    State(ObjectState),
    Bytes(redb::AccessGuard<'static, &'static [u8]>),
    None,
}

impl Drop for ObjectStore {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::warn!(error = %e, "writing the object store at close failed; it is caught up from the ledger at the next start");
        }
    }
}

/// Derivations not yet committed, kept in memory (bounded by the caller's commit interval) and
/// written in key order at [`Batch::commit`]: sorted inserts cost redb far less than scattered
/// ones. Reads see the batch's own writes first.
pub struct Batch<'s> {
    store: &'s ObjectStore,
    /// The states the batch changed, by key.
    objects: KeyMap<ObjectState>,
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
        let store = self.store;
        let r = self.apply_inner(records);
        store.checked(r)
    }

    fn apply_inner<'e>(
        &mut self,
        records: impl IntoIterator<Item = (&'e str, u64, &'e Value)>,
    ) -> Result<Vec<Derived>, StoreError> {
        let txn = self.store.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(OBJECTS).map_err(db_err)?;
        // Only the batch's owner touches these two: locked once per call.
        let mut cache = self.store.cache.lock().expect("cache lock");
        let known = self.store.known.lock().expect("known lock");
        // Only the batch's owner writes the dictionary (in `flush`), never while it derives.
        let dict = self.store.dict.read().expect("dictionary lock");
        let mine = &mut self.objects;
        let unflushed = &self.store.unflushed;
        // Brings a state the batch and the cache lack into the cache, when the store has it.
        let load = |mine: &KeyMap<ObjectState>,
                    cache: &mut KeyMap<ObjectState>,
                    key: u128,
                    id: &str|
         -> Result<(), StoreError> {
            if mine.contains_key(&key) || cache.contains_key(&key) {
                return Ok(());
            }
            if let Some(s) = unflushed.lock().expect("unflushed lock").get(key) {
                cache.insert(key, s.clone());
                return Ok(());
            }
            if !known.contains(&(key as u64)) {
                return Ok(());
            }
            if let Some(bytes) = table.get(key).map_err(db_err)? {
                let state = codec::decode(bytes.value(), id, &dict)?;
                cache.insert(key, state);
            }
            Ok(())
        };
        let mut out = Vec::new();
        for (account, index, event) in records {
            let d = match object::target_id(event) {
                Some(id) => {
                    let key = object_key(account, id);
                    let parent = object::parent(id).map(|p| (object_key(account, &p), p));
                    // Room for the two states this event may load.
                    if cache.len() + 2 > CACHE_STATES {
                        cache.clear();
                    }
                    load(mine, &mut cache, key, id)?;
                    if let Some((pk, p)) = &parent {
                        load(mine, &mut cache, *pk, p)?;
                    }
                    let find = |k: &u128| mine.get(k).or_else(|| cache.get(k));
                    let prior = find(&key);
                    let d = object::derive(event, prior, parent.and_then(|(pk, _)| find(&pk)));
                    // A state the event left as it was is not written again.
                    let changed = d.state.as_ref().filter(|s| Some(*s) != prior).is_some();
                    match d.state {
                        Some(state) if changed => {
                            mine.insert(key, state);
                        }
                        _ => {}
                    }
                    d.derived
                }
                None => object::derive(event, None, None).derived,
            };
            match self.positions.get_mut(account) {
                Some(done) => *done = (*done).max(index),
                None => {
                    self.positions.insert(account.to_string(), index);
                }
            }
            out.push(d);
        }
        Ok(out)
    }

    /// Commits the batch: every read sees it from now on. It reaches the file with the next
    /// [`ObjectStore::flush`], made here when enough is waiting (see `Unflushed`).
    pub fn commit(self) -> Result<(), StoreError> {
        if self.objects.is_empty() && self.positions.is_empty() {
            return Ok(());
        }
        let due = {
            let mut known = self.store.known.lock().expect("known lock");
            let mut cache = self.store.cache.lock().expect("cache lock");
            let mut u = self.store.unflushed.lock().expect("unflushed lock");
            for (key, state) in self.objects {
                known.insert(key as u64);
                // The cache holds only what the file holds: this state is read from `u`.
                cache.remove(&key);
                u.states.insert(key, state);
            }
            for (account, index) in self.positions {
                let p = u.positions.entry(account).or_insert(index);
                *p = (*p).max(index);
            }
            let since = *u.since.get_or_insert_with(Instant::now);
            u.states.len() >= FLUSH_STATES || since.elapsed() >= FLUSH_AFTER
        };
        if due {
            self.store.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
impl ObjectStore {
    /// Stores `bytes` as the state of (account, id), as a damaged file would hold them.
    pub(crate) fn put_raw(&self, account: &str, id: &str, bytes: &[u8]) {
        let txn = self.db.begin_write().unwrap();
        txn.open_table(OBJECTS)
            .unwrap()
            .insert(object_key(account, id), bytes)
            .unwrap();
        txn.commit().unwrap();
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use trailkeep_event::object::{DigestKind, digest_value};

    use super::*;

    fn state(id: &str, name: Option<&str>, attributes: Value, deleted: bool) -> ObjectState {
        ObjectState {
            id: id.to_string(),
            object_type: "deployment".to_string(),
            name: name.map(str::to_string),
            parent: None,
            attributes: attributes.as_object().unwrap().clone(),
            deleted,
        }
    }

    /// Encodes `s` against `dict` (adding its new strings), decodes it back.
    fn round_trip_with(s: &ObjectState, dict: &mut codec::Dictionary) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut interner = codec::Interner::new(dict);
        codec::encode(s, &mut bytes, &mut interner);
        let fresh = interner.fresh();
        dict.extend(fresh);
        assert_eq!(&codec::decode(&bytes, &s.id, dict).unwrap(), s);
        let head = codec::decode_head(&bytes, &s.id, dict).unwrap();
        assert_eq!(
            (head.name.as_ref(), head.deleted, &head.object_type),
            (s.name.as_ref(), s.deleted, &s.object_type)
        );
        bytes
    }

    fn round_trip(s: &ObjectState) -> Vec<u8> {
        round_trip_with(s, &mut codec::Dictionary::default())
    }

    #[test]
    fn states_round_trip_through_the_compact_layout_issue_12() {
        let id = "crn:v1:bluemix:public:mlops:eu-de:a/acme:proj-1:deployment:dep-1";
        let attributes = json!({
            "memory": "512Mi",
            "empty": "",
            "unicode": "größe ✓",
            "replicas": 3,
            "negative": -17,
            "big": u64::MAX,
            "min": i64::MIN,
            "ratio": 0.25,
            "on": true,
            "off": false,
            "none": null,
            "env": [{"name": "LOG_LEVEL", "value": "info"}],
            "nested": {"a": {"b": [1, "two"]}},
            "spec": digest_value(DigestKind::Long, 0x0123_4567_89ab_cdef),
            "labels": digest_value(DigestKind::Sensitive, u64::MAX),
            // Looks like a digest but is not one exactly: kept as the string it is.
            "fake": "\u{1}sha256:not-hex-at-all!",
            "short": "\u{1}sensitive:abc",
            "long": "x".repeat(300),
        });
        // The name is the id's last segment (not stored), another name, or none.
        let named_like_id = round_trip(&state(id, Some("dep-1"), attributes.clone(), false));
        let renamed = round_trip(&state(id, Some("deployment-2"), attributes.clone(), true));
        assert!(named_like_id.len() < renamed.len());
        round_trip(&state(id, None, json!({}), true));
        round_trip(&state(
            "plain-id",
            Some("plain-id"),
            json!({"k": "v"}),
            false,
        ));
        let mut with_parent = state(id, Some(""), json!({}), false);
        with_parent.parent = Some("crn:v1:bluemix:public:mlops:eu-de:a/acme:proj-1::".into());
        round_trip(&with_parent);

        // Digests take 9 bytes, not their 28-character text; the type and attribute names one
        // byte each (from the dictionary).
        let s = state(
            id,
            Some("dep-1"),
            json!({"labels": digest_value(DigestKind::Sensitive, 7)}),
            false,
        );
        // Tag and flags, type, count, name of the attribute, kind and digest.
        assert_eq!(round_trip(&s).len(), 2 + 1 + 1 + 1 + 9);

        // Strings are stored once: the second state refers to the first one's.
        let mut dict = codec::Dictionary::default();
        let env =
            json!({"env": [{"name": "LOG_LEVEL", "value": "info"}], "image": "us.icr.io/p/web:v7"});
        let first = round_trip_with(&state(id, Some("a"), env.clone(), false), &mut dict);
        let strings = dict.len();
        let second = round_trip_with(&state(id, Some("a"), env, false), &mut dict);
        assert_eq!((first.len(), dict.len()), (second.len(), strings));
        assert!(second.len() < 16, "{second:?}");
        // A string the dictionary lacks is corruption, not a guess.
        let err = codec::decode(&second, id, &codec::Dictionary::default()).unwrap_err();
        assert!(err.to_string().contains("not in the dictionary"), "{err}");
    }

    fn corrupt_reason(bytes: &[u8]) -> String {
        match codec::decode(bytes, "dep-1", &codec::Dictionary::default()).map_err(StoreError::from)
        {
            Err(e @ StoreError::Corrupt(_)) => e.to_string(),
            other => panic!("{bytes:?} read as {other:?}"),
        }
    }

    #[test]
    fn a_corrupt_value_is_a_clear_error_never_a_state_issue_12() {
        let s = state(
            "dep-1",
            Some("x"),
            json!({"memory": "512Mi", "n": 5, "j": [1]}),
            false,
        );
        // Inline strings only (a full dictionary takes none).
        let mut full = codec::Dictionary::default();
        full.extend(
            (0..codec::MAX_STRINGS)
                .map(|i| std::sync::Arc::from(i.to_string()))
                .collect(),
        );
        let mut good = Vec::new();
        codec::encode(&s, &mut good, &mut codec::Interner::new(&full));
        assert_eq!(codec::decode(&good, "dep-1", &full).unwrap(), s);
        // Every truncation fails, none reads as a state.
        for end in 0..good.len() {
            let reason = corrupt_reason(&good[..end]);
            assert!(reason.contains("rebuilt from the ledger"), "{reason}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(corrupt_reason(&trailing).contains("1 bytes after the state"));
        let mut tag = good.clone();
        tag[0] = b'{';
        assert!(corrupt_reason(&tag).contains("tag 0x7b"));
        // The old JSON values are not misread either.
        assert!(
            corrupt_reason(br#"{"type":"deployment","attributes":{},"deleted":false}"#)
                .contains("tag")
        );
        let mut flags = good.clone();
        flags[1] = 0x40;
        assert!(corrupt_reason(&flags).contains("flags 0x40"));
        // A length far past the end (inline lengths are shifted left by one bit).
        let huge = [codec::TAG, 0, 0xfe, 0xff, 0xff, 0xff, 0x0f];
        assert!(corrupt_reason(&huge).contains("at most"));
        let long = [codec::TAG, 0, 0x0a, b'a'];
        assert!(corrupt_reason(&long).contains("runs past"));
        // Bad UTF-8, an unknown kind, bad JSON, an endless varint.
        assert!(corrupt_reason(&[codec::TAG, 0, 2, 0xff, 0]).contains("not UTF-8"));
        assert!(
            corrupt_reason(&[codec::TAG, 0, 2, b't', 1, 2, b'k', 9])
                .contains("unknown value kind 9")
        );
        assert!(
            corrupt_reason(&[codec::TAG, 0, 2, b't', 1, 2, b'k', 7, 4, b'[', b'x'])
                .contains("JSON")
        );
        let mut endless = vec![codec::TAG, 0];
        endless.extend([0x80; 10]);
        endless.push(1);
        assert!(corrupt_reason(&endless).contains("varint"));
        // More attributes than bytes to hold them, and one key twice.
        assert!(corrupt_reason(&[codec::TAG, 0, 2, b't', 0x7f]).contains("127 attributes"));
        assert!(
            corrupt_reason(&[codec::TAG, 0, 2, b't', 2, 2, b'k', 0, 2, b'k', 0]).contains("twice")
        );
    }

    /// The batched lookup answers exactly what one `object_ref` per event does: for states in
    /// memory and in the file, deleted objects, objects with no state, events without a
    /// target, another account's object of the same id, and repeated ids.
    #[test]
    fn object_refs_answer_what_object_ref_does_one_event_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = ObjectStore::open(&dir.path().join(FILE_NAME)).unwrap();
        let ev = |action: &str, id: &str, name: &str| {
            json!({"action": action, "outcome": "success", "target": {"id": id, "name": name},
                "requestData": {"memory": "256Mi"}})
        };
        let mut batch = store.begin().unwrap();
        batch
            .apply("acme", 0, &ev("mlops.deployment.create", "p/d/one", "one"))
            .unwrap();
        batch
            .apply(
                "acme",
                1,
                &ev("mlops.deployment.create", "p/d/gone", "gone"),
            )
            .unwrap();
        batch
            .apply(
                "acme",
                2,
                &ev("mlops.deployment.delete", "p/d/gone", "gone"),
            )
            .unwrap();
        batch.commit().unwrap();
        store.flush().unwrap();
        // One more state only in memory (committed, not yet flushed).
        let mut batch = store.begin().unwrap();
        batch
            .apply(
                "acme",
                3,
                &ev("mlops.deployment.create", "p/d/fresh", "fresh"),
            )
            .unwrap();
        batch.commit().unwrap();
        let events = [
            ("acme", ev("mlops.deployment.read", "p/d/one", "old name")),
            ("acme", ev("mlops.deployment.read", "p/d/gone", "gone")),
            ("acme", ev("mlops.deployment.read", "p/d/fresh", "x")),
            (
                "acme",
                ev("mlops.deployment.read", "p/d/never", "seen only"),
            ),
            (
                "acme",
                json!({"action": "mlops.login", "targetId": "p/d/one"}),
            ),
            ("acme", json!({"action": "mlops.login"})),
            ("beta", ev("mlops.deployment.read", "p/d/one", "beta's")),
            ("acme", ev("mlops.deployment.read", "p/d/one", "again")),
        ];
        let wanted: Vec<(&str, &Value)> = events.iter().map(|(a, e)| (*a, e)).collect();
        let batched = store.object_refs(&wanted).unwrap();
        let single: Vec<Option<ObjectRef>> = events
            .iter()
            .map(|(a, e)| store.object_ref(a, e).unwrap())
            .collect();
        assert_eq!(batched, single);
        let names: Vec<Option<(&str, bool)>> = batched
            .iter()
            .map(|r| r.as_ref().map(|r| (r.name.as_str(), r.deleted)))
            .collect();
        assert_eq!(
            names,
            [
                Some(("one", false)),
                Some(("", true)),
                Some(("fresh", false)),
                Some(("seen only", false)),
                Some(("one", false)),
                None,
                Some(("beta's", false)),
                Some(("one", false)),
            ]
        );
        assert!(store.object_refs(&[]).unwrap().is_empty());
    }

    #[test]
    fn the_store_flags_a_corrupt_value_and_reset_empties_it_issue_12() {
        let dir = tempfile::tempdir().unwrap();
        let (store, recreated) = ObjectStore::open(&dir.path().join(FILE_NAME)).unwrap();
        assert!(!recreated);
        let id = "projects/p/deployments/d";
        let create = json!({"action": "mlops.deployment.create", "outcome": "success",
            "target": {"id": id, "name": "d"}, "requestData": {"memory": "256Mi"}});
        let update = json!({"action": "mlops.deployment.update", "outcome": "success",
            "target": {"id": id, "name": "d"}, "requestData": {"memory": "512Mi"}});
        let mut batch = store.begin().unwrap();
        batch.apply("acme", 0, &create).unwrap();
        batch.commit().unwrap();
        // Committed: read from memory, then from the file once flushed.
        let s = store.object("acme", id).unwrap().unwrap();
        assert_eq!(store.positions().unwrap()["acme"], 0);
        store.flush().unwrap();
        assert_eq!(store.object("acme", id).unwrap().unwrap(), s);
        assert_eq!(store.positions().unwrap()["acme"], 0);
        assert_eq!(
            (s.id.as_str(), s.attributes["memory"].clone()),
            (id, json!("256Mi"))
        );
        // Another account's object of the same id is another key.
        assert!(store.object("beta", id).unwrap().is_none());

        store.put_raw("acme", id, &[codec::TAG, 0x40]);
        assert!(store.object("acme", id).unwrap_err().is_corrupt());
        assert!(store.is_corrupt());
        // Deriving over it fails too (and does not guess a state); after a reset the store is
        // empty, to be derived again from the ledger.
        let mut batch = store.begin().unwrap();
        store.cache.lock().unwrap().clear();
        assert!(batch.apply("acme", 1, &update).unwrap_err().is_corrupt());
        drop(batch);
        store.reset().unwrap();
        assert!(!store.is_corrupt());
        assert!(store.positions().unwrap().is_empty());
        assert!(store.object("acme", id).unwrap().is_none());
    }
}
