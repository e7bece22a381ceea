//! Appending, reading, iterating, checkpoints, tiles and sealing through the public API.

use trailkeep_ledger::{
    Checkpoint, Durability, Error, MemStorage, NoteVerifier, leaf_hash, verifier, verify,
};

use crate::{event, first_sealed, open_mem, test_config, wait_sealed};

#[test]
fn append_read_iterate_and_reopen() {
    let storage = MemStorage::new();
    let ledger = open_mem(&storage, test_config());
    assert_eq!(ledger.durability(), Durability::Fsync);
    let mut batch = Vec::new();
    for n in 0..50u64 {
        let account = if n % 3 == 0 { "alpha" } else { "beta" };
        batch.push((account.to_string(), event(n)));
    }
    let acks = ledger.append(batch.clone()).unwrap();
    assert_eq!(acks.len(), 50);
    assert_eq!(acks[0].position, 0);
    assert_eq!((acks[3].account.as_str(), acks[3].index), ("alpha", 1));
    for (ack, (_, bytes)) in acks.iter().zip(&batch) {
        assert_eq!(
            ledger.read(&ack.account, ack.index).unwrap().as_deref(),
            Some(&bytes[..])
        );
        let r = ledger.read_position(ack.position).unwrap().unwrap();
        assert_eq!(
            (r.account.as_str(), r.index),
            (ack.account.as_str(), ack.index)
        );
    }
    assert_eq!(ledger.accounts(), vec!["alpha", "beta"]);
    let alpha: Vec<_> = ledger
        .iter_account("alpha", 5)
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(alpha.len(), 17 - 5);
    assert_eq!(alpha[0].index, 5);
    assert_eq!(ledger.read("alpha", 17).unwrap(), None);
    assert_eq!(ledger.read("nobody", 0).unwrap(), None);

    // Sealing: several segments are rotated and compressed; reads still work.
    wait_sealed(&ledger);
    assert!(ledger.stats().sealed_segments > 0, "{:?}", ledger.stats());
    for (ack, (_, bytes)) in acks.iter().zip(&batch) {
        assert_eq!(
            ledger.read(&ack.account, ack.index).unwrap().as_deref(),
            Some(&bytes[..])
        );
    }

    let signed = ledger.sign_checkpoints_if_grown().unwrap();
    assert_eq!(
        signed,
        vec![("alpha".to_string(), 17), ("beta".to_string(), 33)]
    );
    assert!(ledger.sign_checkpoints_if_grown().unwrap().is_empty());
    let head = ledger.tree_head("beta").unwrap();
    let note = ledger.latest_checkpoint("beta").unwrap();
    let v = NoteVerifier::parse(&ledger.verifier_key()).unwrap();
    let cp = Checkpoint::parse(v.open(&note).unwrap()).unwrap();
    assert_eq!(cp.origin, "trailkeep.test/beta");
    assert_eq!((cp.size, cp.root), (head.size, head.root));

    let proof = ledger.inclusion_proof("beta", 4, head.size).unwrap();
    let leaf = leaf_hash(&ledger.read("beta", 4).unwrap().unwrap());
    verifier::verify_inclusion(4, head.size, &leaf, &proof, &head.root).unwrap();
    ledger.close().unwrap();
    assert!(matches!(
        ledger.append(vec![("alpha".into(), b"x".to_vec())]),
        Err(Error::Closed(_))
    ));

    let again = open_mem(&storage, test_config());
    assert_eq!(again.tree_head("beta"), Some(head));
    assert_eq!(again.len(), 50);
    let more = again.append(vec![("beta".into(), event(99))]).unwrap();
    assert_eq!((more[0].index, more[0].position), (33, 50));
    let old_root = head.root;
    let new = again.tree_head("beta").unwrap();
    let cproof = again.consistency_proof("beta", 33, 34).unwrap();
    verifier::verify_consistency(33, 34, &old_root, &new.root, &cproof).unwrap();
    again.close().unwrap();
    assert_eq!(again.checkpoint_history("beta").unwrap().len(), 2);
    let report = verify::verify_storage(&storage, &Default::default(), |_| {}).unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.records, 51);
}

#[test]
fn tiles_are_served_by_c2sp_path() {
    let storage = MemStorage::new();
    let ledger = open_mem(&storage, test_config());
    let batch: Vec<_> = (0..300u64)
        .map(|n| ("acme".to_string(), n.to_le_bytes().to_vec()))
        .collect();
    ledger.append(batch).unwrap();
    let t0 = ledger.tile("acme", "tile/0/000").unwrap().unwrap();
    assert_eq!(t0.len(), 256 * 32);
    assert_eq!(&t0[..32], &leaf_hash(&0u64.to_le_bytes()));
    let p = ledger.tile("acme", "tile/0/001.p/44").unwrap().unwrap();
    assert_eq!(p.len(), 44 * 32);
    assert_eq!(&p[..32], &leaf_hash(&256u64.to_le_bytes()));
    assert!(ledger.tile("acme", "tile/0/001.p/45").unwrap().is_none());
    assert!(ledger.tile("acme", "tile/0/001").unwrap().is_none());
    assert_eq!(
        ledger
            .tile("acme", "tile/1/000.p/1")
            .unwrap()
            .unwrap()
            .len(),
        32
    );
    ledger.sign_checkpoints_if_grown().unwrap();
    // After persisting, the same bytes come back from storage.
    assert_eq!(ledger.tile("acme", "tile/0/000").unwrap().unwrap(), t0);
    assert!(ledger.tile("acme", "tile/0/x000/000").unwrap().is_none());
    assert!(ledger.tile("nobody", "tile/0/000").unwrap().is_none());
}

#[test]
fn bad_input_is_refused() {
    let storage = MemStorage::new();
    let ledger = open_mem(&storage, test_config());
    assert!(matches!(
        ledger.append(vec![("a/b".into(), b"x".to_vec())]),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        ledger.append(vec![(
            "a".into(),
            vec![0; trailkeep_ledger::frame::MAX_DATA_LEN + 1]
        )]),
        Err(Error::Invalid(_))
    ));
    assert!(ledger.append(vec![]).unwrap().is_empty());
}

#[test]
fn relaxed_mode_is_reported_and_works() {
    let storage = MemStorage::new();
    let mut cfg = test_config();
    cfg.durability = Durability::Relaxed;
    let ledger = open_mem(&storage, cfg);
    assert_eq!(ledger.durability(), Durability::Relaxed);
    assert_eq!(ledger.durability().to_string(), "relaxed");
    ledger.append(vec![("a".into(), b"1".to_vec())]).unwrap();
    ledger.close().unwrap();
    let again = open_mem(&storage, test_config());
    assert_eq!(again.read("a", 0).unwrap().as_deref(), Some(&b"1"[..]));
}

#[test]
fn timer_signs_checkpoints_while_growing() {
    let storage = MemStorage::new();
    let mut cfg = test_config();
    cfg.checkpoint_interval = Some(std::time::Duration::from_millis(20));
    let ledger = open_mem(&storage, cfg);
    ledger.append(vec![("a".into(), b"1".to_vec())]).unwrap();
    let mut seen = None;
    for _ in 0..300 {
        seen = ledger.latest_checkpoint("a");
        if seen.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(seen.is_some(), "the writer signs on its own");
}

#[test]
fn concurrent_appenders_get_dense_indexes() {
    let storage = MemStorage::new();
    let ledger = open_mem(&storage, test_config());
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let l = ledger.clone();
            std::thread::spawn(move || {
                let mut acks = Vec::new();
                for b in 0..20u64 {
                    let batch = (0..5u64)
                        .map(|k| ("shared".to_string(), event(t * 1000 + b * 5 + k)))
                        .collect();
                    acks.extend(l.append(batch).unwrap());
                }
                acks
            })
        })
        .collect();
    let mut all: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .map(|a| a.index)
        .collect();
    all.sort();
    assert_eq!(all, (0..400).collect::<Vec<_>>());
}

#[test]
fn newer_formats_need_an_upgrade() {
    use trailkeep_ledger::{Ledger, META_NAME, Storage, encode_meta};
    let storage = MemStorage::new();
    open_mem(&storage, test_config()).close().unwrap();
    storage.put(META_NAME, &encode_meta(2)).unwrap();
    let err = Ledger::open(std::sync::Arc::new(storage.clone()), test_config()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::UpgradeRequired {
                found: 2,
                supported: 1
            }
        ),
        "{err}"
    );

    // A segment written by a newer version.
    let storage = MemStorage::new();
    let l = open_mem(&storage, test_config());
    l.append(vec![("a".into(), b"x".to_vec())]).unwrap();
    l.close().unwrap();
    let seg = storage.list("seg/").unwrap()[0].clone();
    storage
        .tamper(&seg, |b| {
            b[8] = 4;
            let crc = crc32fast_hash(&b[..20]);
            b[20..24].copy_from_slice(&crc.to_le_bytes());
        })
        .unwrap();
    let err = Ledger::open(std::sync::Arc::new(storage.clone()), test_config()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::UpgradeRequired {
                found: 4,
                supported: 3
            }
        ),
        "{err}"
    );
}

#[test]
fn corruption_in_a_sealed_segment_is_an_error_not_a_skip() {
    let storage = MemStorage::new();
    let l = open_mem(&storage, test_config());
    let acks = l
        .append((0..30u64).map(|n| ("a".to_string(), event(n))).collect())
        .unwrap();
    l.rotate().unwrap();
    wait_sealed(&l);
    l.close().unwrap();
    let sealed = first_sealed(&storage);
    storage.tamper(&sealed, |b| b[40] ^= 0xff).unwrap();
    let l = open_mem(&storage, test_config());
    let err = l.read("a", acks[0].index).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupted { position, .. } if position.contains(&sealed)),
        "{err}"
    );
}

/// CRC-32 (IEEE), bitwise, so the test does not need the crc crate.
fn crc32fast_hash(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn dropping_the_last_handle_in_a_callback_does_not_hang() {
    let storage = MemStorage::new();
    let ledger = open_mem(&storage, test_config());
    let (tx, rx) = std::sync::mpsc::channel();
    let in_callback = ledger.clone();
    ledger.append_with(vec![("a".into(), b"1".to_vec())], move |r| {
        drop(in_callback);
        tx.send(r.is_ok()).unwrap();
    });
    drop(ledger);
    assert!(rx.recv_timeout(std::time::Duration::from_secs(20)).unwrap());
}

#[test]
fn signing_key_is_created_once_and_kept() {
    use trailkeep_ledger::{KeySource, Ledger, LedgerConfig};
    let dir = tempfile::tempdir().unwrap();
    let cfg = LedgerConfig {
        origin: "example.com/trailkeep".into(),
        checkpoint_interval: None,
        ..LedgerConfig::default()
    };
    let first = Ledger::open_dir(dir.path().join("data"), cfg.clone()).unwrap();
    let key = first.verifier_key();
    first.close().unwrap();
    assert!(dir.path().join("data/keys/checkpoint.key").is_file());
    let again = Ledger::open_dir(dir.path().join("data"), cfg.clone()).unwrap();
    assert_eq!(again.verifier_key(), key);
    assert!(key.starts_with("example.com/trailkeep+"), "{key}");
    NoteVerifier::parse(&key).unwrap();
    again.close().unwrap();

    // A key kept outside the data directory.
    let path = dir.path().join("secrets/ledger.key");
    let cfg = LedgerConfig {
        key: KeySource::File(path.clone()),
        ..cfg
    };
    let other = Ledger::open_dir(dir.path().join("data2"), cfg.clone()).unwrap();
    let k2 = other.verifier_key();
    other.close().unwrap();
    assert_ne!(k2, key);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "key file is private");
    }
    assert_eq!(
        Ledger::open_dir(dir.path().join("data2"), cfg)
            .unwrap()
            .verifier_key(),
        k2
    );
}

#[test]
fn the_handle_is_shareable() {
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    shareable::<trailkeep_ledger::Ledger>();
}

#[test]
fn evidence_for_one_record_checks_offline() {
    let storage = MemStorage::new();
    let ledger = open_mem(&storage, test_config());
    let acks = ledger
        .append((0..9u64).map(|n| ("acme".to_string(), event(n))).collect())
        .unwrap();
    // Not yet checkpointed: one is signed on demand.
    let (note, size, proof) = ledger
        .checkpointed_inclusion_proof("acme", acks[7].index)
        .unwrap();
    assert_eq!(size, 9);
    let v = NoteVerifier::parse(&ledger.verifier_key()).unwrap();
    let cp = Checkpoint::parse(v.open(&note).unwrap()).unwrap();
    let bytes = ledger.read("acme", 7).unwrap().unwrap();
    verifier::verify_inclusion(7, cp.size, &leaf_hash(&bytes), &proof, &cp.root).unwrap();
    assert!(ledger.checkpointed_inclusion_proof("acme", 9).is_err());
    assert!(ledger.checkpointed_inclusion_proof("nobody", 0).is_err());
}

#[test]
fn receive_time_is_stored_beside_the_bytes() {
    use std::time::{Duration, UNIX_EPOCH};
    let storage = MemStorage::new();
    let ledger = open_mem(&storage, test_config());
    let at = UNIX_EPOCH + Duration::from_nanos(1_763_700_000_123_456_789);
    let (tx, rx) = std::sync::mpsc::channel();
    let batch: Vec<_> = (0..30u64).map(|n| ("acme".to_string(), event(n))).collect();
    ledger.append_with_time(batch, at, move |r| tx.send(r).unwrap());
    let acks = rx.recv().unwrap().unwrap();
    let r = ledger.read_record("acme", 3).unwrap().unwrap();
    assert_eq!(
        (r.index, r.position, r.received_at_unix_nanos),
        (3, 3, 1_763_700_000_123_456_789)
    );
    assert_eq!(r.bytes, event(3));
    wait_sealed(&ledger);
    ledger.close().unwrap();
    let again = open_mem(&storage, test_config());
    for rec in again.iter_account("acme", 0) {
        let rec = rec.unwrap();
        assert_eq!(rec.received_at_unix_nanos, 1_763_700_000_123_456_789);
        assert_eq!(rec.position, acks[rec.index as usize].position);
    }
    assert!(again.stats().sealed_segments > 0);
}
