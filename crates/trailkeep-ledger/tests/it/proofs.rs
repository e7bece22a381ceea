//! Proofs: the published RFC 6962 vectors (transparency-dev/merkle `testonly` and `proof`
//! tests), and a cross-check of tile-based generation + the RFC 9162 verifier against a
//! recursive reference implementation written here from RFC 6962 §2.1.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use trailkeep_ledger::merkle::{self, Hash};
use trailkeep_ledger::tiles::TileLog;
use trailkeep_ledger::verifier::{verify_consistency, verify_inclusion};
use trailkeep_ledger::{MemStorage, Storage};

fn h(s: &str) -> Hash {
    hex::decode(s).unwrap().try_into().unwrap()
}

/// Reference: MTH over leaf hashes (RFC 6962 §2.1, recursive).
pub fn mth(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
            let mut b = vec![1u8];
            b.extend_from_slice(&mth(&leaves[..k]));
            b.extend_from_slice(&mth(&leaves[k..]));
            Sha256::digest(&b).into()
        }
    }
}

/// Reference: PATH(m, D[n]).
fn ref_path(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    let n = leaves.len();
    if n <= 1 {
        return vec![];
    }
    let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
    if m < k {
        let mut p = ref_path(m, &leaves[..k]);
        p.push(mth(&leaves[k..]));
        p
    } else {
        let mut p = ref_path(m - k, &leaves[k..]);
        p.push(mth(&leaves[..k]));
        p
    }
}

/// Reference: SUBPROOF(m, D[n], b).
fn ref_subproof(m: usize, leaves: &[Hash], b: bool) -> Vec<Hash> {
    let n = leaves.len();
    if m == n {
        return if b { vec![] } else { vec![mth(leaves)] };
    }
    let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
    if m <= k {
        let mut p = ref_subproof(m, &leaves[..k], b);
        p.push(mth(&leaves[k..]));
        p
    } else {
        let mut p = ref_subproof(m - k, &leaves[k..], false);
        p.push(mth(&leaves[..k]));
        p
    }
}

fn published_leaves() -> Vec<Hash> {
    [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
    .iter()
    .map(|x| merkle::leaf_hash(&hex::decode(x).unwrap()))
    .collect()
}

const ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

fn tree_of(leaves: &[Hash]) -> TileLog {
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
    let mut t = TileLog::new(storage, "log/t/");
    for l in leaves {
        t.push(*l);
    }
    t
}

#[test]
fn published_roots_and_proofs() {
    let leaves = published_leaves();
    let t = tree_of(&leaves);
    for (i, r) in ROOTS.iter().enumerate() {
        assert_eq!(
            t.root_at(i as u64 + 1).unwrap(),
            h(r),
            "root of size {}",
            i + 1
        );
        assert_eq!(mth(&leaves[..=i]), h(r));
    }
    assert_eq!(
        hex::encode(t.root_at(0).unwrap()),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    // (1-based leaf, size, proof) from proof/verify_test.go.
    let inclusion: [(u64, u64, Vec<&str>); 4] = [
        (
            1,
            8,
            vec![
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            vec![
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            3,
            3,
            vec!["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
        ),
        (
            2,
            5,
            vec![
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    for (leaf, size, proof) in inclusion {
        let proof: Vec<Hash> = proof.into_iter().map(h).collect();
        assert_eq!(
            t.inclusion_proof(leaf - 1, size).unwrap(),
            proof,
            "inclusion {leaf} {size}"
        );
        let root = h(ROOTS[size as usize - 1]);
        verify_inclusion(leaf - 1, size, &leaves[leaf as usize - 1], &proof, &root).unwrap();
        // Corruptions must fail.
        assert!(verify_inclusion(leaf, size, &leaves[leaf as usize - 1], &proof, &root).is_err());
        assert!(
            verify_inclusion(
                leaf - 1,
                size * 2,
                &leaves[leaf as usize - 1],
                &proof,
                &root
            )
            .is_err()
        );
        assert!(
            verify_inclusion(
                leaf - 1,
                size,
                &leaves[leaf as usize - 1],
                &proof[1..],
                &root
            )
            .is_err()
        );
        let mut bad = proof.clone();
        bad[0][0] ^= 8;
        assert!(verify_inclusion(leaf - 1, size, &leaves[leaf as usize - 1], &bad, &root).is_err());
    }
    let consistency: [(u64, u64, Vec<&str>); 4] = [
        (
            1,
            8,
            vec![
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            vec![
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            vec![
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
        (
            6,
            7,
            vec![
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];
    for (m, n, proof) in consistency {
        let proof: Vec<Hash> = proof.into_iter().map(h).collect();
        assert_eq!(
            t.consistency_proof(m, n).unwrap(),
            proof,
            "consistency {m} {n}"
        );
        let (r1, r2) = (h(ROOTS[m as usize - 1]), h(ROOTS[n as usize - 1]));
        verify_consistency(m, n, &r1, &r2, &proof).unwrap();
        assert!(verify_consistency(m, n, &r2, &r1, &proof).is_err());
        assert!(verify_consistency(m, n, &r1, &r2, &proof[..proof.len() - 1]).is_err());
        assert!(verify_consistency(m + 1, n, &r1, &r2, &proof).is_err());
        assert!(verify_consistency(m, n, &r1, &r2, &[]).is_err());
    }
    // Trivial cases from the same file.
    let e = h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert!(verify_consistency(0, 1, &e, &h(ROOTS[0]), &[]).is_ok());
    assert!(verify_consistency(1, 0, &e, &e, &[]).is_err());
    assert!(verify_consistency(1, 1, &e, &e, &[e]).is_err());
    assert!(verify_inclusion(0, 0, &e, &[], &e).is_err());
}

fn synthetic_leaves(n: usize) -> Vec<Hash> {
    (0..n as u64)
        .map(|i| merkle::leaf_hash(&i.to_be_bytes()))
        .collect()
}

#[test]
fn exhaustive_small_trees_match_the_reference() {
    let leaves = synthetic_leaves(40);
    let t = tree_of(&leaves);
    for n in 1..=40usize {
        let root = mth(&leaves[..n]);
        assert_eq!(t.root_at(n as u64).unwrap(), root);
        for m in 0..n {
            let p = t.inclusion_proof(m as u64, n as u64).unwrap();
            assert_eq!(p, ref_path(m, &leaves[..n]));
            verify_inclusion(m as u64, n as u64, &leaves[m], &p, &root).unwrap();
        }
        for m in 1..=n {
            let p = t.consistency_proof(m as u64, n as u64).unwrap();
            let want = if m == n {
                vec![]
            } else {
                ref_subproof(m, &leaves[..n], true)
            };
            assert_eq!(p, want, "consistency {m} {n}");
            verify_consistency(m as u64, n as u64, &mth(&leaves[..m]), &root, &p).unwrap();
        }
    }
}

/// Trees that span tile boundaries and several tile levels, with hashes read back from
/// persisted tiles after a reload.
#[test]
fn tile_backed_proofs_across_levels_and_reload() {
    const N: usize = 256 * 256 + 300;
    let leaves = synthetic_leaves(N);
    let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
    let mut t = TileLog::new(storage.clone(), "log/t/");
    for (i, l) in leaves.iter().enumerate() {
        t.push(*l);
        if i == 1000 || i == 70_000 {
            t.persist().unwrap();
        }
    }
    t.persist().unwrap();
    let reloaded = TileLog::load(storage.clone(), "log/t/", N as u64, false).unwrap();
    let root_n = mth(&leaves);
    assert_eq!(reloaded.root(), t.root());
    assert_eq!(reloaded.root(), root_n);
    // A reload at an older size gives that size's root.
    let older = 256 * 256 - 1;
    let old = TileLog::load(storage, "log/t/", older as u64, false).unwrap();
    let root_older = mth(&leaves[..older]);
    assert_eq!(old.root(), root_older);
    assert_eq!(reloaded.root_at(older as u64).unwrap(), root_older);
    // Against the reference (expensive in debug builds, so a few), then the verifier for more.
    for (m, n) in [(65_535usize, N), (N - 1, N)] {
        let p = reloaded.inclusion_proof(m as u64, n as u64).unwrap();
        assert_eq!(p, ref_path(m, &leaves[..n]), "inclusion {m} {n}");
    }
    for m in [0usize, 255, 256, 65_536, 65_537, 40_000, N - 2] {
        let p = reloaded.inclusion_proof(m as u64, N as u64).unwrap();
        verify_inclusion(m as u64, N as u64, &leaves[m], &p, &root_n).unwrap();
        let p = reloaded
            .inclusion_proof(m.min(older - 1) as u64, older as u64)
            .unwrap();
        verify_inclusion(
            m.min(older - 1) as u64,
            older as u64,
            &leaves[m.min(older - 1)],
            &p,
            &root_older,
        )
        .unwrap();
    }
    let p = reloaded.consistency_proof(older as u64, N as u64).unwrap();
    assert_eq!(p, ref_subproof(older, &leaves, true));
    verify_consistency(older as u64, N as u64, &root_older, &root_n, &p).unwrap();
    for m in [1usize, 256, 1000, 65_536, 65_537] {
        let p = reloaded.consistency_proof(m as u64, N as u64).unwrap();
        let rm = reloaded.root_at(m as u64).unwrap();
        verify_consistency(m as u64, N as u64, &rm, &root_n, &p).unwrap();
    }
    // Tiles: a level-1 tile entry is the root of a level-0 tile.
    let t1 = reloaded.tile_bytes("tile/1/000").unwrap().unwrap();
    assert_eq!(&t1[32..64], &mth(&leaves[256..512]));
    let t2 = reloaded.tile_bytes("tile/2/000.p/1").unwrap().unwrap();
    assert_eq!(&t2[..], &mth(&leaves[..65_536]));
}
