//! Decompressed blocks of sealed segments, kept for reads that come back to them.
//!
//! A read of one record from a sealed segment decompresses its whole block (32 KiB by default
//! since segment version 3, with the segment's dictionary; 256 KiB in older segments), which
//! costs far more than picking the record out. Searches return events that sit
//! close together — the newest ones of an account, the events of one request — so they touch
//! the same few blocks again and again. The cache keeps the most recently used blocks up to a
//! byte budget; everything else is dropped, so memory stays bounded whatever is read.
//!
//! Segments of version 3 compress their blocks with a zstd dictionary of their own, prepared
//! once for decompression (about 100 KB in memory each). The cache keeps the prepared
//! dictionaries of the [`DICTIONARIES_KEPT`] most recently read segments, so a server that has
//! read every segment of a large ledger does not hold all of them.
//!
//! Sealed segments change only when retention replaces one with a copy whose removed bodies
//! are tombstones; it then calls [`BlockCache::clear`], so a removed body is never served from
//! memory.

use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::segment::Dictionary;

/// Prepared dictionaries kept (of the most recently read segments): a search or an export reads
/// a few segments at a time, and a dictionary not kept costs one small read and parse again.
pub const DICTIONARIES_KEPT: usize = 64;

/// Which block: its first global position (positions are global, so a block's first one names
/// it among all segments).
type Key = u64;

/// A byte-bounded LRU of decompressed blocks, shared by all readers of a ledger.
pub(crate) struct BlockCache {
    inner: Mutex<Inner>,
    budget: usize,
    /// Prepared dictionaries by their segment's first position.
    dictionaries: Mutex<LruCache<u64, Arc<Dictionary>>>,
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
            dictionaries: Mutex::new(LruCache::new(
                std::num::NonZeroUsize::new(DICTIONARIES_KEPT).expect("not zero"),
            )),
        }
    }

    fn lock_dictionaries(&self) -> std::sync::MutexGuard<'_, LruCache<u64, Arc<Dictionary>>> {
        self.dictionaries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The prepared dictionary of the segment that starts at `segment_first`, when kept.
    pub(crate) fn dictionary(&self, segment_first: u64) -> Option<Arc<Dictionary>> {
        self.lock_dictionaries().get(&segment_first).cloned()
    }

    /// Keeps a segment's prepared dictionary, dropping the least recently used one beyond
    /// [`DICTIONARIES_KEPT`].
    pub(crate) fn insert_dictionary(&self, segment_first: u64, dictionary: Arc<Dictionary>) {
        self.lock_dictionaries().put(segment_first, dictionary);
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

    /// Forgets every block and dictionary (after retention replaced a segment).
    pub(crate) fn clear(&self) {
        let mut inner = self.lock();
        inner.blocks.clear();
        inner.bytes = 0;
        self.lock_dictionaries().clear();
    }

    /// Dictionaries held now.
    #[cfg(test)]
    fn dictionaries(&self) -> usize {
        self.lock_dictionaries().len()
    }

    /// Bytes held now.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
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

    fn dictionary() -> Arc<Dictionary> {
        let events: Vec<Vec<u8>> = (0..2_000)
            .map(|i| format!("{{\"id\":\"event-{i}\",\"action\":\"svc.thing.read\"}}").into_bytes())
            .collect();
        let sizes: Vec<usize> = events.iter().map(Vec::len).collect();
        let samples = events.concat();
        let bytes = zstd::dict::from_continuous(&samples, &sizes, 4096).unwrap();
        let meta = crate::segment::DictMeta {
            offset: 0,
            len: bytes.len() as u32,
            crc: crc32fast::hash(&bytes),
        };
        Arc::new(crate::segment::open_dictionary(&meta, &bytes).unwrap())
    }

    #[test]
    fn keeps_the_dictionaries_of_the_most_recently_read_segments_only() {
        let cache = BlockCache::new(300);
        let d = dictionary();
        for segment_first in 0..(DICTIONARIES_KEPT as u64 + 10) {
            cache.insert_dictionary(segment_first * 1_000, d.clone());
        }
        assert_eq!(cache.dictionaries(), DICTIONARIES_KEPT);
        assert!(cache.dictionary(0).is_none(), "the oldest was dropped");
        assert!(
            cache
                .dictionary((DICTIONARIES_KEPT as u64 + 9) * 1_000)
                .is_some()
        );
        cache.clear();
        assert_eq!(cache.dictionaries(), 0);
    }

    #[test]
    fn a_zero_budget_keeps_nothing() {
        let cache = BlockCache::new(0);
        cache.insert(0, Arc::new(vec![1]));
        assert!(cache.get(0).is_none());
    }
}
