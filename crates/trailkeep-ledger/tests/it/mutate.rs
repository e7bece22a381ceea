//! A deterministic stand-in for the `segment_read` fuzz target that runs with every `cargo test`:
//! mutated copies of real segments (bit flips, cuts, splices, overwritten lengths) go through the
//! parsers, recovery and verification. Nothing may panic; refusals must be errors.

use std::sync::Arc;

use trailkeep_ledger::segment::{self, SegmentKind};
use trailkeep_ledger::{KeySource, Ledger, LedgerConfig, MemStorage, Storage, frame, verify};

use crate::{event, open_mem, test_config, wait_sealed};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, bytes: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for _ in 0..1 + rng.below(3) {
        match rng.below(5) {
            0 => {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
            1 => b.truncate(rng.below(b.len() + 1)),
            2 => {
                let i = rng.below(b.len());
                let j = rng.below(b.len());
                let chunk = b[i.min(j)..i.max(j)].to_vec();
                let at = rng.below(b.len());
                b.splice(at..at, chunk);
            }
            3 => {
                // A length or count field set to something large.
                let i = rng.below(b.len().saturating_sub(4));
                let v = [u32::MAX, 1 << 30, 0, 17][rng.below(4)];
                if i + 4 <= b.len() {
                    b[i..i + 4].copy_from_slice(&v.to_le_bytes());
                }
            }
            _ => {
                let i = rng.below(b.len());
                b[i] = rng.next() as u8;
            }
        }
        if b.is_empty() {
            break;
        }
    }
    b
}

fn crc(b: &[u8]) -> [u8; 4] {
    let mut c = !0u32;
    for &x in b {
        c ^= u32::from(x);
        for _ in 0..8 {
            c = if c & 1 == 1 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    (!c).to_le_bytes()
}

/// Recompute the CRCs a mutation broke, so that the structural checks behind them get exercised.
fn fix_crcs(b: &mut [u8]) {
    if b.len() >= 24 {
        let c = crc(&b[..20]);
        b[20..24].copy_from_slice(&c);
    }
    if b.len() >= 72 && b[b.len() - 8..] == *b"TRAILKSL" {
        let f = b.len() - 48;
        let off = u64::from_le_bytes(b[f..f + 8].try_into().unwrap()) as usize;
        let len = u64::from_le_bytes(b[f + 8..f + 16].try_into().unwrap()) as usize;
        if off.checked_add(len) == Some(f) {
            // Version 3: the dictionary's own CRC, in the tables' first 8 bytes.
            if b[8] == 3 && len >= 8 {
                let dlen = u32::from_le_bytes(b[off..off + 4].try_into().unwrap()) as usize;
                if dlen > 0 && dlen <= off - 24 {
                    let c = crc(&b[off - dlen..off]);
                    b[off + 4..off + 8].copy_from_slice(&c);
                }
            }
            let c = crc(&b[off..f]);
            b[f + 28..f + 32].copy_from_slice(&c);
        }
        let c = crc(&b[f..f + 36]);
        b[f + 36..f + 40].copy_from_slice(&c);
    } else {
        // Plain: re-CRC each frame as its length field says.
        let mut off = 24;
        while off + 8 <= b.len() {
            let n = u32::from_le_bytes(b[off..off + 4].try_into().unwrap()) as usize;
            let Some(end) = (off + 8).checked_add(n).filter(|e| *e <= b.len()) else {
                break;
            };
            let c = crc(&b[off + 8..end]);
            b[off + 4..off + 8].copy_from_slice(&c);
            off = end;
        }
    }
}

fn recover(bytes: &[u8], kind: SegmentKind) {
    let storage = MemStorage::new();
    storage
        .put(
            trailkeep_ledger::META_NAME,
            &trailkeep_ledger::encode_meta(1),
        )
        .unwrap();
    let name = match kind {
        SegmentKind::Plain => segment::plain_name(0),
        SegmentKind::Sealed => segment::sealed_name(0),
    };
    storage.put(&name, bytes).unwrap();
    let _ = verify::verify_storage(&storage, &Default::default(), |_| {});
    let cfg = LedgerConfig {
        key: KeySource::Seed([1; 32]),
        checkpoint_interval: None,
        background_sealing: false,
        ..LedgerConfig::default()
    };
    if let Ok(l) = Ledger::open(Arc::new(storage) as Arc<dyn Storage>, cfg) {
        for a in l.accounts() {
            for r in l.iter_account(&a, 0) {
                let _ = r;
            }
        }
        let _ = l.close();
    }
}

#[test]
fn mutated_segments_never_panic() {
    let storage = MemStorage::new();
    let l = open_mem(&storage, test_config());
    l.append(
        (0..20u64)
            .map(|n| (format!("a{}", n % 3), event(n)))
            .collect(),
    )
    .unwrap();
    wait_sealed(&l);
    l.close().unwrap();
    let names = storage.list("seg/").unwrap();
    let sealed = storage
        .get(names.iter().find(|n| n.ends_with(".sealed")).unwrap())
        .unwrap()
        .unwrap();
    // Mutations reach the dictionary of a version-3 segment too.
    let idx = segment::parse_sealed(&sealed).unwrap();
    assert_eq!(idx.header.version, segment::SEGMENT_VERSION_DICTIONARY);
    assert!(idx.dictionary.is_some());
    let plain = storage
        .get(names.iter().rfind(|n| n.ends_with(".log")).unwrap())
        .unwrap()
        .unwrap();
    let mut rng = Rng(0xDEAD_BEEF);
    for round in 0..3000 {
        let mut m = mutate(&mut rng, if round % 2 == 0 { &sealed } else { &plain });
        if round % 4 < 2 {
            fix_crcs(&mut m);
        }
        let _ = segment::scan_plain(&m);
        let _ = frame::decode_frame(&m);
        if let Ok(idx) = segment::parse_sealed(&m) {
            let dict = segment::load_dictionary(&idx, &m).ok().flatten();
            for b in &idx.blocks {
                let c = &m[b.offset as usize..(b.offset + u64::from(b.compressed_len)) as usize];
                if let Ok(raw) = segment::open_block_with(b, c, dict.as_ref()) {
                    let _ = segment::block_records(b, &raw);
                }
            }
        }
        if round % 25 == 0 {
            recover(
                &m,
                if round % 2 == 0 {
                    SegmentKind::Sealed
                } else {
                    SegmentKind::Plain
                },
            );
        }
    }
}
