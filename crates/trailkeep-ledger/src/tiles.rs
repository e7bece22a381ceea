//! One account's Merkle tree, persisted as C2SP tlog-tiles (FORMAT.md §6).
//!
//! A tile at level `L`, index `N` holds up to 256 consecutive hashes of tree level `8·L`
//! (entries `256·N …`). Full tiles are immutable; a partial tile of width `W` is the first `W`
//! entries of the same tile. Any complete subtree hash, hence any root and any proof for any past
//! size, is derived from tiles alone, so proofs survive the removal of event bodies.
//!
//! [`TileLog`] keeps the right edge in memory, buffers new entries until [`TileLog::persist`]
//! (called when a checkpoint is signed) and reads older tiles back through the storage seam with a
//! small cache. Tiles are stored as one append-only hash file per tile level; the C2SP paths are
//! a view served by [`TileLog::tile_bytes`]. It never reads or writes segment files.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::merkle::{self, Frontier, Hash, NodeSource};
use crate::storage::Storage;

/// Entries in a full tile.
pub const TILE_WIDTH: u64 = 256;
/// Tree levels per tile level.
pub const TILE_HEIGHT: u8 = 8;
const CACHE_TILES: usize = 2048;

/// Full tiles read back from storage, by (tile level, tile index).
type TileCache = Mutex<HashMap<(u8, u64), Arc<Vec<u8>>>>;

/// Encode a tile index with the C2SP path encoding: `1234067` → `x001/x234/067`.
pub fn encode_tile_index(n: u64) -> String {
    let digits = n.to_string();
    let pad = (3 - digits.len() % 3) % 3;
    let digits = format!("{}{digits}", "0".repeat(pad));
    let groups: Vec<&str> = digits
        .as_bytes()
        .chunks(3)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect();
    let last = groups.len() - 1;
    groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            if i < last {
                format!("x{g}")
            } else {
                (*g).to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The path of a tile: `tile/<L>/<N>` or `tile/<L>/<N>.p/<W>` for a partial tile.
pub fn tile_path(level: u8, index: u64, width: Option<u16>) -> String {
    let mut p = format!("tile/{level}/{}", encode_tile_index(index));
    if let Some(w) = width {
        p.push_str(&format!(".p/{w}"));
    }
    p
}

/// A parsed tile path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileAddr {
    /// Tile level (0..=63).
    pub level: u8,
    /// Tile index within the level.
    pub index: u64,
    /// `Some(W)` for a partial tile of width `W` (1..=255).
    pub width: Option<u16>,
}

fn decimal_no_leading_zero(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if s.len() > 1 && s.starts_with('0') {
        return None;
    }
    s.parse().ok()
}

/// Parse `tile/<L>/<N>[.p/<W>]` (hash tiles only; entry bundles are not served).
pub fn parse_tile_path(path: &str) -> Option<TileAddr> {
    let rest = path.strip_prefix("tile/")?;
    let (level, rest) = rest.split_once('/')?;
    let level = decimal_no_leading_zero(level).filter(|l| *l <= 63)? as u8;
    let (index_part, width) = match rest.split_once(".p/") {
        Some((i, w)) => {
            let w = decimal_no_leading_zero(w).filter(|w| (1..=255).contains(w))? as u16;
            (i, Some(w))
        }
        None => (rest, None),
    };
    let groups: Vec<&str> = index_part.split('/').collect();
    if groups.len() > 7 {
        return None;
    }
    let mut index: u64 = 0;
    for (i, g) in groups.iter().enumerate() {
        let digits = if i + 1 < groups.len() {
            g.strip_prefix('x')?
        } else {
            g
        };
        if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        index = index
            .checked_mul(1000)?
            .checked_add(digits.parse::<u64>().ok()?)?;
    }
    // Reject non-canonical encodings (leading `x000/` groups).
    if groups.len() > 1 && groups[0] == "x000" {
        return None;
    }
    Some(TileAddr {
        level,
        index,
        width,
    })
}

fn hashes_to_bytes(hashes: &[Hash]) -> Vec<u8> {
    hashes.iter().flat_map(|h| h.iter().copied()).collect()
}

fn bytes_to_hashes(bytes: &[u8]) -> Vec<Hash> {
    bytes
        .chunks_exact(32)
        .map(|c| c.try_into().expect("32"))
        .collect()
}

/// Hash `entries` (a power-of-two count) up to a single root.
fn reduce(mut layer: Vec<Hash>) -> Hash {
    while layer.len() > 1 {
        layer = layer
            .chunks_exact(2)
            .map(|p| merkle::node_hash(&p[0], &p[1]))
            .collect();
    }
    layer[0]
}

/// Tile levels kept (8 levels of 8 tree levels cover 2^64 leaves).
pub const TILE_LEVELS: u8 = 8;

/// Name of the hash file of tile level `level` under an account prefix.
pub fn level_file(prefix: &str, level: u8) -> String {
    format!("{prefix}hashes/{level}")
}

/// Tree hashes on their way to the hash files; see [`TileLog::unpersisted`].
#[derive(Debug)]
pub struct Unpersisted {
    storage: Arc<dyn Storage>,
    /// (hash file, entries, bytes, byte length of the file's persisted part)
    levels: Vec<(String, usize, Vec<u8>, u64)>,
}

impl Unpersisted {
    /// Append the entries to their hash files and make them durable.
    ///
    /// Safe to retry after a failure (a full disk): whatever an earlier attempt left past the
    /// persisted part is cut off first, so no entry is ever written twice.
    pub fn write(&self) -> Result<()> {
        for (name, _, bytes, persisted_len) in &self.levels {
            if self.storage.size(name)?.unwrap_or(0) > *persisted_len {
                self.storage.truncate(name, *persisted_len)?;
            }
            self.storage.append(name, bytes)?;
            self.storage.sync(name)?;
        }
        Ok(())
    }
}

/// One account's tree over tiles.
///
/// Tile level `L`'s entries are stored back to back (32 bytes each, in index order) in one
/// append-only object per level ([`level_file`]); tile `N` of level `L` is bytes
/// `[N·256·32, (N+1)·256·32)` of it. Entries not yet persisted are buffered in memory.
#[derive(Debug)]
pub struct TileLog {
    storage: Arc<dyn Storage>,
    prefix: String,
    frontier: Frontier,
    size: u64,
    /// Per tile level: entries already in the level file.
    persisted: Vec<u64>,
    /// Per tile level: entries after `persisted`, not yet written.
    pending: Vec<Vec<Hash>>,
    cache: TileCache,
}

impl TileLog {
    /// An empty tree whose hash files live under `prefix` (e.g. `log/acme/`).
    pub fn new(storage: Arc<dyn Storage>, prefix: impl Into<String>) -> Self {
        Self {
            storage,
            prefix: prefix.into(),
            frontier: Frontier::new(),
            size: 0,
            persisted: vec![0; TILE_LEVELS as usize],
            pending: vec![Vec::new(); TILE_LEVELS as usize],
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Entries tile level `level` has in a tree of `size` leaves.
    pub fn level_len(size: u64, level: u8) -> u64 {
        size.checked_shr(8 * u32::from(level)).unwrap_or(0)
    }

    /// Reload the tree of `size` leaves from the persisted hash files. Entries beyond `size`
    /// (written before a crash, never covered by a checkpoint) are cut off when `repair` is set.
    pub fn load(
        storage: Arc<dyn Storage>,
        prefix: impl Into<String>,
        size: u64,
        repair: bool,
    ) -> Result<Self> {
        let mut t = Self::new(storage, prefix);
        t.size = size;
        for level in 0..TILE_LEVELS {
            let want = Self::level_len(size, level);
            let name = level_file(&t.prefix, level);
            let have = t.storage.size(&name)?.unwrap_or(0) / 32;
            if have < want {
                return Err(Error::corrupted(
                    format!("{name}@{}", have * 32),
                    format!("hash file has {have} entries, tree size {size} needs {want}"),
                ));
            }
            if have > want && repair {
                t.storage.truncate(&name, want * 32)?;
                t.storage.sync(&name)?;
            }
            t.persisted[level as usize] = want;
        }
        t.frontier = Frontier::from_source(&t, size)?;
        Ok(t)
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Current root.
    pub fn root(&self) -> Hash {
        self.frontier.root()
    }

    /// Root at a past (or the current) size.
    pub fn root_at(&self, size: u64) -> Result<Hash> {
        self.check_size(size)?;
        if size == self.size() {
            return Ok(self.root());
        }
        merkle::root(self, size)
    }

    /// Append one leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let pending = &mut self.pending;
        self.frontier.push(leaf, |level, _index, hash| {
            if level % TILE_HEIGHT == 0 {
                pending[(level / TILE_HEIGHT) as usize].push(*hash);
            }
        });
        self.size += 1;
    }

    /// Entries buffered in memory, not yet persisted.
    pub fn pending_entries(&self) -> usize {
        self.pending.iter().map(Vec::len).sum()
    }

    /// Append buffered entries to the hash files and make them durable. Called before a
    /// checkpoint of the current size is written.
    pub fn persist(&mut self) -> Result<()> {
        let batch = self.unpersisted();
        batch.write()?;
        self.mark_persisted(&batch);
        Ok(())
    }

    /// A copy of the entries not yet persisted, to be written without holding any lock on this
    /// tree ([`Unpersisted::write`]) and then confirmed with [`TileLog::mark_persisted`]. Only
    /// the thread that pushes may do this.
    pub fn unpersisted(&self) -> Unpersisted {
        Unpersisted {
            storage: self.storage.clone(),
            levels: (0..TILE_LEVELS)
                .filter(|l| !self.pending[*l as usize].is_empty())
                .map(|l| {
                    let entries = &self.pending[l as usize];
                    (
                        level_file(&self.prefix, l),
                        entries.len(),
                        hashes_to_bytes(entries),
                        self.persisted[l as usize] * 32,
                    )
                })
                .collect(),
        }
    }

    /// Record that `batch` (taken by [`TileLog::unpersisted`], no push since) was written.
    pub fn mark_persisted(&mut self, batch: &Unpersisted) {
        for (name, n, _, _) in &batch.levels {
            let level = (0..TILE_LEVELS)
                .find(|l| level_file(&self.prefix, *l) == *name)
                .expect("a level of this tree") as usize;
            self.pending[level].drain(..*n);
            self.persisted[level] += *n as u64;
        }
    }

    fn full_tile(&self, level: u8, index: u64) -> Result<Arc<Vec<u8>>> {
        if let Some(t) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(level, index))
        {
            return Ok(t.clone());
        }
        let name = level_file(&self.prefix, level);
        let len = (TILE_WIDTH * 32) as usize;
        let bytes = self
            .storage
            .get_range(&name, index * TILE_WIDTH * 32, len)?;
        if bytes.len() != len {
            return Err(Error::corrupted(
                format!("{name}@{}", index * TILE_WIDTH * 32),
                "hash file shorter than the tree",
            ));
        }
        let bytes = Arc::new(bytes);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_TILES {
            cache.clear();
        }
        cache.insert((level, index), bytes.clone());
        Ok(bytes)
    }

    /// Entries `[from, from + count)` of tile level `level` (all within one tile).
    fn entries(&self, level: u8, from: u64, count: u64) -> Result<Vec<Hash>> {
        let end = from + count;
        if end > Self::level_len(self.size, level) {
            return Err(Error::NotFound(format!(
                "tile entries {level}/{from}..{end} beyond the tree"
            )));
        }
        let persisted = self.persisted[level as usize];
        let mut out = Vec::with_capacity(count as usize);
        if from < persisted {
            let tile = from / TILE_WIDTH;
            let stop = end.min(persisted);
            if (tile + 1) * TILE_WIDTH <= persisted {
                let t = self.full_tile(level, tile)?;
                let off = (from % TILE_WIDTH) as usize;
                out.extend(bytes_to_hashes(
                    &t[off * 32..(off + (stop - from) as usize) * 32],
                ));
            } else {
                let name = level_file(&self.prefix, level);
                let bytes =
                    self.storage
                        .get_range(&name, from * 32, ((stop - from) * 32) as usize)?;
                if bytes.len() as u64 != (stop - from) * 32 {
                    return Err(Error::corrupted(name, "hash file shorter than the tree"));
                }
                out.extend(bytes_to_hashes(&bytes));
            }
        }
        let pending = &self.pending[level as usize];
        for i in from.max(persisted)..end {
            out.push(pending[(i - persisted) as usize]);
        }
        Ok(out)
    }

    fn check_size(&self, size: u64) -> Result<()> {
        if size > self.size() {
            Err(Error::NotFound(format!(
                "tree size {size} (current size is {})",
                self.size()
            )))
        } else {
            Ok(())
        }
    }

    /// Inclusion proof of leaf `index` in the tree of `size` leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>> {
        self.check_size(size)?;
        if index >= size {
            return Err(Error::Invalid(format!(
                "index {index} not below size {size}"
            )));
        }
        merkle::inclusion_proof(self, index, size)
    }

    /// Consistency proof between sizes `m <= n`.
    pub fn consistency_proof(&self, m: u64, n: u64) -> Result<Vec<Hash>> {
        self.check_size(n)?;
        if m > n {
            return Err(Error::Invalid(format!("size {m} exceeds {n}")));
        }
        merkle::consistency_proof(self, m, n)
    }

    /// Leaf hash at `index`.
    pub fn leaf(&self, index: u64) -> Result<Hash> {
        self.check_size(index + 1)?;
        self.node(0, index)
    }

    /// The bytes of a tile by its C2SP path (`tile/0/x001/234`, `tile/1/000.p/17`), or `None` if
    /// the path is not a hash tile of the current tree.
    pub fn tile_bytes(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let Some(addr) = parse_tile_path(path) else {
            return Ok(None);
        };
        if addr.level >= TILE_LEVELS {
            return Ok(None);
        }
        let want = u64::from(addr.width.unwrap_or(TILE_WIDTH as u16));
        let Some(end) = addr
            .index
            .checked_mul(TILE_WIDTH)
            .and_then(|s| s.checked_add(want))
        else {
            return Ok(None);
        };
        if end > Self::level_len(self.size, addr.level) {
            return Ok(None);
        }
        let entries = self.entries(addr.level, addr.index * TILE_WIDTH, want)?;
        Ok(Some(hashes_to_bytes(&entries)))
    }
}

impl NodeSource for TileLog {
    type Error = Error;

    fn node(&self, level: u8, index: u64) -> Result<Hash> {
        let tl = level / TILE_HEIGHT;
        let r = u32::from(level % TILE_HEIGHT);
        let entries = self.entries(tl, index << r, 1u64 << r)?;
        Ok(reduce(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_index_encoding() {
        assert_eq!(encode_tile_index(0), "000");
        assert_eq!(encode_tile_index(67), "067");
        assert_eq!(encode_tile_index(1234067), "x001/x234/067");
        assert_eq!(tile_path(1, 1234067, Some(7)), "tile/1/x001/x234/067.p/7");
        for n in [0u64, 5, 999, 1000, 1234067, u64::MAX] {
            let p = tile_path(3, n, None);
            assert_eq!(
                parse_tile_path(&p),
                Some(TileAddr {
                    level: 3,
                    index: n,
                    width: None
                }),
                "{p}"
            );
        }
        assert_eq!(parse_tile_path("tile/0/001.p/0"), None);
        assert_eq!(parse_tile_path("tile/00/001"), None);
        assert_eq!(parse_tile_path("tile/0/1"), None);
        assert_eq!(parse_tile_path("tile/0/x000/001"), None);
        assert_eq!(
            parse_tile_path("tile/0/x001/002.p/255").map(|a| (a.index, a.width)),
            Some((1002, Some(255)))
        );
    }
}
