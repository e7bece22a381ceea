//! Decompressed blocks of sealed segments, kept for reads that come back to them.
//!
//! A read of one record from a sealed segment decompresses its whole block (32 KiB by default
//! since segment version 3, with the segment's dictionary; 256 KiB in older segments), which
//! costs far more than picking the record out. Searches return events that sit
//! close together — the newest ones of an account, the events of one request — so they touch
//! the same few blocks again and again. The cache keeps the most recently used blocks up to a
//! byte budget; everything else is dropped, so memory stays bounded whatever is read.
//!
//! Sealed segments change only when retention replaces one with a copy whose removed bodies
//! are tombstones; it then calls [`BlockCache::clear`], so a removed body is never served from
//! memory.

use std::sync::{Arc, Mutex};

use lru::LruCache;

/// Which block: its first global position (positions are global, so a block's first one names
/// it among all segments).
type Key = u64;

/// A byte-bounded LRU of decompressed blocks, shared by all readers of a ledger.
pub(crate) struct BlockCache {
    inner: Mutex<Inner>,
    budget: usize,
}

impl std::fmt::Debug for BlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockCache")
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

struct Inner {
    blocks: LruCache<Key, Arc<Vec<u8>>>,
    bytes: usize,
}

impl BlockCache {
    /// A cache that holds at most `budget` bytes of blocks (0: none; the block being read is
    /// then decompressed for each record).
    pub(crate) fn new(budget: usize) -> Self {
        BlockCache {
            inner: Mutex::new(Inner {
                blocks: LruCache::unbounded(),
                bytes: 0,
            }),
            budget,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The block that starts at global position `first_position`, when cached.
    pub(crate) fn get(&self, first_position: u64) -> Option<Arc<Vec<u8>>> {
        self.lock().blocks.get(&first_position).cloned()
    }

    /// Keeps a block, dropping the least recently used ones beyond the budget.
    pub(crate) fn insert(&self, first_position: u64, block: Arc<Vec<u8>>) {
        if block.len() > self.budget {
            return;
        }
        let mut inner = self.lock();
        let len = block.len();
        if let Some(old) = inner.blocks.put(first_position, block) {
            inner.bytes -= old.len();
        }
        inner.bytes += len;
        while inner.bytes > self.budget {
            match inner.blocks.pop_lru() {
                Some((_, dropped)) => inner.bytes -= dropped.len(),
                None => break,
            }
        }
    }

    /// Forgets every block (after retention replaced a segment).
    pub(crate) fn clear(&self) {
        let mut inner = self.lock();
        inner.blocks.clear();
        inner.bytes = 0;
    }

    /// Bytes held now.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_most_recently_used_blocks_within_the_budget() {
        let cache = BlockCache::new(300);
        for first in 0..3u64 {
            cache.insert(first, Arc::new(vec![first as u8; 100]));
        }
        assert_eq!(cache.bytes(), 300);
        // Using block 0 makes block 1 the least recently used one.
        assert!(cache.get(0).is_some());
        cache.insert(3, Arc::new(vec![3; 100]));
        assert_eq!(cache.bytes(), 300);
        assert!(cache.get(1).is_none());
        for first in [0, 2, 3] {
            assert_eq!(cache.get(first).unwrap()[0], first as u8);
        }
        // A block larger than the whole budget is not kept, and evicts nothing.
        cache.insert(9, Arc::new(vec![0; 301]));
        assert!(cache.get(9).is_none());
        assert_eq!(cache.bytes(), 300);
        cache.clear();
        assert_eq!(cache.bytes(), 0);
        assert!(cache.get(0).is_none());
    }

    #[test]
    fn a_zero_budget_keeps_nothing() {
        let cache = BlockCache::new(0);
        cache.insert(0, Arc::new(vec![1]));
        assert!(cache.get(0).is_none());
    }
}
