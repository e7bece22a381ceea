//! RFC 6962 Merkle tree hashing and proof *generation*.
//!
//! Pure: proofs are computed from a [`NodeSource`] that hands out the hashes of complete subtrees
//! (the tile store implements it). Proof *checking* lives in [`crate::verifier`], written
//! independently from the RFC 9162 algorithms so that the two cross-check each other.

use sha2::{Digest, Sha256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// The root of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Leaf hash: SHA-256(0x00 ‖ bytes).
pub fn leaf_hash(bytes: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(bytes);
    h.finalize().into()
}

/// Interior node hash: SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut buf = [0u8; 65];
    buf[0] = 1;
    buf[1..33].copy_from_slice(left);
    buf[33..].copy_from_slice(right);
    Sha256::digest(buf).into()
}

/// Largest power of two strictly smaller than `n` (`n >= 2`).
pub fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// Hands out hashes of complete subtrees: `node(level, index)` is the root of the subtree over
/// leaves `[index << level, (index + 1) << level)`.
pub trait NodeSource {
    /// The error a lookup can fail with.
    type Error;
    /// Hash of a complete subtree that lies within the tree.
    fn node(&self, level: u8, index: u64) -> Result<Hash, Self::Error>;
}

/// `MTH(D[start:end])` for `start < end`, from complete subtrees.
pub fn range_hash<S: NodeSource>(src: &S, start: u64, end: u64) -> Result<Hash, S::Error> {
    let n = end - start;
    if n.is_power_of_two() && start & (n - 1) == 0 {
        return src.node(n.trailing_zeros() as u8, start >> n.trailing_zeros());
    }
    let k = split_point(n);
    let l = range_hash(src, start, start + k)?;
    let r = range_hash(src, start + k, end)?;
    Ok(node_hash(&l, &r))
}

/// Root of the tree of `size` leaves.
pub fn root<S: NodeSource>(src: &S, size: u64) -> Result<Hash, S::Error> {
    if size == 0 {
        Ok(empty_root())
    } else {
        range_hash(src, 0, size)
    }
}

/// RFC 6962 §2.1.1 audit path of leaf `index` in the tree of `size` leaves, leaf-side first.
/// The caller ensures `index < size`.
pub fn inclusion_proof<S: NodeSource>(
    src: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, S::Error> {
    let mut out = Vec::new();
    path(src, index, 0, size, &mut out)?;
    Ok(out)
}

fn path<S: NodeSource>(
    src: &S,
    m: u64,
    start: u64,
    end: u64,
    out: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    let n = end - start;
    if n <= 1 {
        return Ok(());
    }
    let k = split_point(n);
    if m < start + k {
        path(src, m, start, start + k, out)?;
        out.push(range_hash(src, start + k, end)?);
    } else {
        path(src, m, start + k, end, out)?;
        out.push(range_hash(src, start, start + k)?);
    }
    Ok(())
}

/// RFC 6962 §2.1.2 consistency proof between sizes `m <= n`. Empty when `m == 0` or `m == n`.
pub fn consistency_proof<S: NodeSource>(src: &S, m: u64, n: u64) -> Result<Vec<Hash>, S::Error> {
    let mut out = Vec::new();
    if m > 0 && m < n {
        subproof(src, m, 0, n, true, &mut out)?;
    }
    Ok(out)
}

fn subproof<S: NodeSource>(
    src: &S,
    m: u64,
    start: u64,
    end: u64,
    whole: bool,
    out: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    let n = end - start;
    if m == n {
        if !whole {
            out.push(range_hash(src, start, end)?);
        }
        return Ok(());
    }
    let k = split_point(n);
    if m <= k {
        subproof(src, m, start, start + k, whole, out)?;
        out.push(range_hash(src, start + k, end)?);
    } else {
        subproof(src, m - k, start + k, end, false, out)?;
        out.push(range_hash(src, start, start + k)?);
    }
    Ok(())
}

/// The right edge of a growing tree: the roots of its maximal complete subtrees, largest first.
/// Appending a leaf is amortised O(1); the root is O(log n).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// (level, hash), levels strictly decreasing.
    nodes: Vec<(u8, Hash)>,
}

impl Frontier {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Append a leaf hash. Calls `completed(level, index, hash)` for every complete subtree that
    /// the leaf finishes (level 0 first).
    pub fn push(&mut self, leaf: Hash, mut completed: impl FnMut(u8, u64, &Hash)) {
        let mut level = 0u8;
        let mut hash = leaf;
        let mut index = self.size;
        completed(0, index, &hash);
        while let Some(&(l, left)) = self.nodes.last() {
            if l != level {
                break;
            }
            self.nodes.pop();
            hash = node_hash(&left, &hash);
            level += 1;
            index >>= 1;
            completed(level, index, &hash);
        }
        self.nodes.push((level, hash));
        self.size += 1;
    }

    /// The tree's root.
    pub fn root(&self) -> Hash {
        let mut it = self.nodes.iter().rev();
        match it.next() {
            None => empty_root(),
            Some(&(_, first)) => it.fold(first, |acc, (_, left)| node_hash(left, &acc)),
        }
    }

    /// Rebuild from complete-subtree hashes: `node(level, index)` for each maximal subtree of a
    /// tree of `size` leaves.
    pub fn from_source<S: NodeSource>(src: &S, size: u64) -> Result<Self, S::Error> {
        let mut nodes = Vec::new();
        let mut start = 0u64;
        for level in (0..64u8).rev() {
            if size & (1u64 << level) != 0 {
                nodes.push((level, src.node(level, start >> level)?));
                start += 1u64 << level;
            }
        }
        Ok(Self { size, nodes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_points() {
        assert_eq!(split_point(2), 1);
        assert_eq!(split_point(3), 2);
        assert_eq!(split_point(4), 2);
        assert_eq!(split_point(5), 4);
        assert_eq!(split_point(1 << 40), 1 << 39);
    }

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
