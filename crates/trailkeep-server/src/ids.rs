//! Which `(account, id)` pairs are stored, for idempotent retries (DESIGN §2: a second event with
//! the same account and id is not stored twice; the original position is answered).
//!
//! Keeping every id ever stored in memory would grow without bound, so the registry keeps exact
//! entries only for ids being written and ids committed to the ledger but not yet searchable;
//! once the search index has committed them they move to a growable Bloom filter of their
//! [`hash64`] (the hash the index keeps of every id, so the server's start fills the filter from
//! the index's term dictionaries instead of reading every event back from the ledger). An id not
//! in the exact map and not in the filter is certainly new; on a filter hit (a real retry, the
//! same id in another account, or about one new id in a hundred thousand) the caller asks the
//! index and reads the event back from the ledger to be sure.

use std::collections::{HashMap, VecDeque};

use growable_bloom_filter::GrowableBloom;
use tokio::sync::watch;
use trailkeep_index::{Positions, hash64};

/// An id being written by another request: resolves to its index, or `None` if that write failed.
pub type Pending = watch::Receiver<Option<Option<u64>>>;

/// What the registry knows of one `(account, id)`.
#[derive(Debug)]
pub enum Known {
    /// Stored at this index of the account's log.
    Committed(u64),
    /// Being written by another request.
    Pending(Pending),
    /// Certainly not stored.
    New,
    /// Perhaps stored and already searchable: look it up in the index.
    Maybe,
}

#[derive(Debug)]
enum Slot {
    Committed(u64),
    Pending(Pending),
}

/// See the module documentation.
pub struct IdRegistry {
    recent: HashMap<(String, String), Slot>,
    /// The committed entries of `recent`, in commit order, to move to `older` once indexed.
    unindexed: VecDeque<(String, String, u64)>,
    older: GrowableBloom,
    /// The index's committed positions, published by the indexer after each commit.
    indexed: Option<watch::Receiver<Positions>>,
}

impl std::fmt::Debug for IdRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdRegistry")
            .field("recent", &self.recent.len())
            .field("older", &self.older.len())
            .finish()
    }
}

impl Default for IdRegistry {
    fn default() -> Self {
        Self {
            recent: HashMap::new(),
            unindexed: VecDeque::new(),
            // One false positive (an index lookup) per 100,000 new ids; grows as needed.
            older: GrowableBloom::new(1e-5, 1 << 20),
            indexed: None,
        }
    }
}

impl IdRegistry {
    /// Follows the index's commits (see [`IdRegistry::refresh`]).
    pub fn follow(&mut self, indexed: watch::Receiver<Positions>) {
        self.indexed = Some(indexed);
    }

    /// Moves what the index committed since the last call out of the exact map.
    pub fn refresh(&mut self) {
        let positions = match self.indexed.as_mut() {
            Some(rx) if rx.has_changed().unwrap_or(false) => rx.borrow_and_update().clone(),
            _ => return,
        };
        self.indexed_through(&positions);
    }

    /// Records the [`hash64`] of an id that is already stored and searchable (the server's
    /// start, from [`trailkeep_index::EventIndex::for_each_id_hash`]).
    pub fn insert_indexed_hash(&mut self, id_hash: u64) {
        self.older.insert(id_hash);
    }

    pub fn get(&self, account: &str, id: &str) -> Known {
        match self.recent.get(&(account.to_string(), id.to_string())) {
            Some(Slot::Committed(index)) => Known::Committed(*index),
            Some(Slot::Pending(rx)) => Known::Pending(rx.clone()),
            None if self.older.contains(hash64(id)) => Known::Maybe,
            None => Known::New,
        }
    }

    /// Marks an id as being written by the caller.
    pub fn reserve(&mut self, account: &str, id: &str, rx: Pending) {
        self.recent
            .insert((account.to_string(), id.to_string()), Slot::Pending(rx));
    }

    /// Forgets a reservation whose write failed.
    pub fn release(&mut self, account: &str, id: &str) {
        self.recent.remove(&(account.to_string(), id.to_string()));
    }

    /// Records that an id was committed to the ledger at `index`.
    pub fn committed(&mut self, account: &str, id: &str, index: u64) {
        self.recent.insert(
            (account.to_string(), id.to_string()),
            Slot::Committed(index),
        );
        self.unindexed
            .push_back((account.to_string(), id.to_string(), index));
    }

    /// Moves the entries the index has committed (`positions`: the highest committed index per
    /// account) from the exact map to the filter.
    pub fn indexed_through(&mut self, positions: &Positions) {
        while let Some((account, _, index)) = self.unindexed.front() {
            if positions.get(account).is_none_or(|end| index > end) {
                break;
            }
            let (account, id, _) = self.unindexed.pop_front().expect("a front entry");
            self.older.insert(hash64(&id));
            self.recent.remove(&(account, id));
        }
    }

    /// Exact entries held (for tests and metrics).
    pub fn recent_len(&self) -> usize {
        self.recent.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_move_to_the_filter_once_indexed() {
        let mut ids = IdRegistry::default();
        ids.insert_indexed_hash(hash64("old-1"));
        assert!(matches!(ids.get("acme", "old-1"), Known::Maybe));
        assert!(matches!(ids.get("acme", "new-1"), Known::New));
        // The filter holds ids, not accounts: the same id elsewhere is looked up in the index.
        assert!(matches!(ids.get("beta", "old-1"), Known::Maybe));
        let (_tx, rx) = watch::channel(None);
        ids.reserve("acme", "a", rx);
        assert!(matches!(ids.get("acme", "a"), Known::Pending(_)));
        ids.committed("acme", "a", 7);
        ids.committed("beta", "b", 3);
        assert!(matches!(ids.get("acme", "a"), Known::Committed(7)));
        let mut positions = Positions::new();
        positions.insert("acme".into(), 6);
        ids.indexed_through(&positions);
        assert_eq!(ids.recent_len(), 2, "index 7 is not indexed yet");
        positions.insert("acme".into(), 7);
        ids.indexed_through(&positions);
        assert!(matches!(ids.get("acme", "a"), Known::Maybe));
        assert!(matches!(ids.get("beta", "b"), Known::Committed(3)));
        positions.insert("beta".into(), 3);
        ids.indexed_through(&positions);
        assert_eq!(ids.recent_len(), 0);
        ids.reserve("acme", "c", watch::channel(None).1);
        ids.release("acme", "c");
        assert!(matches!(ids.get("acme", "c"), Known::New));
    }
}
