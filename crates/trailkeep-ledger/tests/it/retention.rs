//! Retention: record bodies removed into tombstones by rewriting sealed segments; trees, proofs,
//! old checkpoints and verification survive; removals without a retention record are reported.

use trailkeep_ledger::verify::{ProblemKind, VerifyReport};
use trailkeep_ledger::{
    Ledger, MemStorage, NoteVerifier, Storage, frame, merkle, note::Checkpoint, retention, segment,
    verifier, verify,
};

use crate::{event, open_mem, test_config, wait_sealed};

fn statement(from: u64, to: u64) -> Vec<u8> {
    format!(
        r#"{{"action":"{}","requestData":{{"retention":{{"from":{from},"to":{to},"days":30}}}}}}"#,
        retention::ACTION
    )
    .into_bytes()
}

fn check(storage: &MemStorage) -> VerifyReport {
    verify::verify_storage(storage, &Default::default(), |_| {}).unwrap()
}

/// 200 records over two accounts, mostly sealed; returns the ledger still open.
fn build(storage: &MemStorage) -> Ledger {
    let ledger = open_mem(storage, test_config());
    for b in 0..10u64 {
        let batch = (0..20u64)
            .map(|k| {
                let n = b * 20 + k;
                let a = if n % 2 == 0 { "acme" } else { "globex" };
                (a.to_string(), event(n))
            })
            .collect();
        ledger.append(batch).unwrap();
        ledger.sign_checkpoints_if_grown().unwrap();
    }
    ledger.rotate().unwrap();
    wait_sealed(&ledger);
    ledger
}

#[test]
fn bodies_are_removed_and_everything_else_still_verifies() {
    let storage = MemStorage::new();
    let ledger = build(&storage);
    let before_root = ledger.tree_head("acme").unwrap();
    let old_checkpoints = ledger.checkpoint_history("acme").unwrap();
    let globex_before: Vec<_> = ledger
        .iter_account("globex", 0)
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(ledger.sealed_len("acme"), 100);

    // The statement comes first and is covered by a signed checkpoint before anything goes.
    let by = ledger
        .append(vec![("acme".into(), statement(0, 60))])
        .unwrap()[0]
        .index;
    let leaf_10 = merkle::leaf_hash(&ledger.read("acme", 10).unwrap().unwrap());
    let removal = ledger.remove_bodies("acme", 60, by).unwrap();
    assert_eq!((removal.from, removal.to), (0, 60));
    assert!(removal.segments >= 1 && removal.bytes > 0);
    assert!(ledger.signed_size("acme") > by);

    assert_eq!(ledger.removed("acme"), 60);
    assert_eq!(ledger.read("acme", 10).unwrap(), None);
    assert!(ledger.is_removed("acme", 59).unwrap());
    assert!(!ledger.is_removed("acme", 60).unwrap());
    assert_eq!(ledger.read("acme", 60).unwrap().unwrap(), event(120));
    let kept: Vec<u64> = ledger
        .iter_account("acme", 0)
        .map(|r| r.unwrap().index)
        .collect();
    assert_eq!(kept, (60..=100).collect::<Vec<_>>());
    // The other account is untouched.
    let globex_after: Vec<_> = ledger
        .iter_account("globex", 0)
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(globex_before, globex_after);

    // The tree: same root at the old size, proofs of removed leaves still check.
    assert_eq!(
        ledger.root_at("acme", before_root.size).unwrap(),
        before_root.root
    );
    let head = ledger.tree_head("acme").unwrap();
    let proof = ledger.inclusion_proof("acme", 10, head.size).unwrap();
    verifier::verify_inclusion(10, head.size, &leaf_10, &proof, &head.root).unwrap();
    let verifier = NoteVerifier::parse(&ledger.verifier_key()).unwrap();
    for (size, note) in &old_checkpoints {
        let cp = Checkpoint::parse(verifier.open(note).unwrap()).unwrap();
        assert_eq!(ledger.root_at("acme", *size).unwrap(), cp.root);
        let c = ledger.consistency_proof("acme", *size, head.size).unwrap();
        verifier::verify_consistency(*size, head.size, &cp.root, &head.root, &c).unwrap();
    }

    // Removing again up to the same place does nothing; a later range continues, and keeps
    // the first retention record (it states the first removal).
    assert_eq!(ledger.remove_bodies("acme", 60, by).unwrap().segments, 0);
    let by2 = ledger
        .append(vec![("acme".into(), statement(60, 101))])
        .unwrap()[0]
        .index;
    ledger.rotate().unwrap();
    wait_sealed(&ledger);
    let second = ledger.remove_bodies("acme", 101, by2).unwrap();
    assert_eq!(second.kept, vec![100]);
    assert_eq!(second.removed_ranges(), vec![(60, 100)]);
    assert_eq!(ledger.removed("acme"), 100);
    let kept: Vec<u64> = ledger
        .iter_account("acme", 0)
        .map(|r| r.unwrap().index)
        .collect();
    assert_eq!(kept, vec![100, 101]);
    let head = ledger.tree_head("acme").unwrap();
    ledger.close().unwrap();

    let report = check(&storage);
    assert!(report.is_ok(), "{report}");
    let acme = report
        .accounts
        .iter()
        .find(|a| a.account == "acme")
        .unwrap();
    assert_eq!(acme.removed, 100);
    // Reopening finds the tombstones.
    let ledger = open_mem(&storage, test_config());
    assert_eq!(ledger.removed("acme"), 100);
    assert_eq!(ledger.removed("globex"), 0);
    assert_eq!(ledger.read("acme", 0).unwrap(), None);
    assert_eq!(ledger.tree_head("acme").unwrap(), head);
    ledger.close().unwrap();
}

#[test]
fn removal_needs_a_following_checkpointed_statement_and_sealed_records() {
    let storage = MemStorage::new();
    let ledger = build(&storage);
    // The statement must follow the range.
    assert!(ledger.remove_bodies("acme", 60, 30).is_err());
    // Records still in the active segment are refused.
    let acks = ledger
        .append(
            (0..5)
                .map(|n| ("acme".to_string(), event(1000 + n)))
                .collect(),
        )
        .unwrap();
    let by = ledger
        .append(vec![("acme".into(), statement(0, 104))])
        .unwrap()[0]
        .index;
    let err = ledger
        .remove_bodies("acme", acks[4].index + 1, by)
        .unwrap_err();
    assert!(err.to_string().contains("not in a sealed segment"), "{err}");
    assert_eq!(ledger.removed("acme"), 0);
    assert!(ledger.remove_bodies("nobody", 1, 2).is_err());
    ledger.close().unwrap();
    assert!(check(&storage).is_ok());
}

/// Rewrites the sealed segment holding `acme`'s record `index` with that record turned into a
/// tombstone naming `by`, as a tamperer with write access could.
fn forge_tombstone(storage: &MemStorage, index: u64, by: u64) -> (String, u64) {
    for name in storage.list("seg/").unwrap() {
        if !name.ends_with(".sealed") {
            continue;
        }
        let bytes = storage.get(&name).unwrap().unwrap();
        let idx = segment::parse_sealed(&bytes).unwrap();
        let dict = segment::load_dictionary(&idx, &bytes).unwrap();
        let raws: Vec<Vec<u8>> = idx
            .blocks
            .iter()
            .map(|b| {
                let c =
                    &bytes[b.offset as usize..(b.offset + u64::from(b.compressed_len)) as usize];
                segment::open_block_with(b, c, dict.as_ref()).unwrap()
            })
            .collect();
        let mut recs = Vec::new();
        for (b, raw) in idx.blocks.iter().zip(&raws) {
            recs.extend(segment::block_records(b, raw).unwrap());
        }
        let Some(k) = recs
            .iter()
            .position(|r| r.account == "acme" && r.index == index)
        else {
            continue;
        };
        let tomb = frame::tombstone_data(&recs[k].leaf(), by);
        recs[k] = frame::RawRecord {
            data: &tomb,
            removed: true,
            ..recs[k]
        };
        let position = recs[k].position;
        let first = idx.header.first_position;
        let sealed = segment::build_sealed(first, &recs, Default::default()).unwrap();
        storage.put(&name, &sealed).unwrap();
        return (name, position);
    }
    panic!("acme/{index} is in no sealed segment");
}

#[test]
fn a_removal_without_a_retention_record_is_reported_with_its_position() {
    let storage = MemStorage::new();
    let ledger = build(&storage);
    ledger.close().unwrap();
    // Tombstone naming an ordinary record as its statement.
    let (name, position) = forge_tombstone(&storage, 7, 40);
    let r = check(&storage);
    let p: Vec<_> = r.of_kind(ProblemKind::UnrecordedRemoval).collect();
    assert_eq!(p.len(), 1, "{r}");
    assert_eq!(
        (p[0].account.as_deref(), p[0].index),
        (Some("acme"), Some(7))
    );
    assert_eq!(p[0].position, Some(position));
    assert!(p[0].location.as_deref().unwrap().starts_with(&name), "{r}");
    assert!(p[0].detail.contains("no retention record"), "{r}");
}

#[test]
fn a_removal_outside_the_stated_range_is_reported() {
    let storage = MemStorage::new();
    let ledger = build(&storage);
    let by = ledger
        .append(vec![("acme".into(), statement(0, 5))])
        .unwrap()[0]
        .index;
    ledger.remove_bodies("acme", 5, by).unwrap();
    // A statement appended after the last checkpoint covers nothing yet.
    let late = ledger
        .append(vec![("acme".into(), statement(0, 50))])
        .unwrap()[0]
        .index;
    ledger.close().unwrap();
    assert!(check(&storage).is_ok());
    forge_tombstone(&storage, 20, by);
    let r = check(&storage);
    let p: Vec<_> = r.of_kind(ProblemKind::UnrecordedRemoval).collect();
    assert_eq!(p.len(), 1, "{r}");
    assert_eq!(p[0].index, Some(20));
    assert!(p[0].detail.contains("states only [0, 5)"), "{r}");
    assert_eq!(r.problems.len(), 1, "{r}");
    // `close` signed the late statement, so a removal it states verifies.
    forge_tombstone(&storage, 30, late);
    let r = check(&storage);
    assert_eq!(r.problems.len(), 1, "{r}");
}

#[test]
fn an_altered_body_is_not_laundered_into_a_tombstone() {
    let storage = MemStorage::new();
    let ledger = build(&storage);
    let by = ledger
        .append(vec![("acme".into(), statement(0, 10))])
        .unwrap()[0]
        .index;
    ledger.close().unwrap();
    // Alter acme/3's bytes (CRC recomputed) by rewriting its segment.
    for name in storage.list("seg/").unwrap() {
        if !name.ends_with(".sealed") {
            continue;
        }
        let bytes = storage.get(&name).unwrap().unwrap();
        let idx = segment::parse_sealed(&bytes).unwrap();
        let dict = segment::load_dictionary(&idx, &bytes).unwrap();
        let raws: Vec<Vec<u8>> = idx
            .blocks
            .iter()
            .map(|b| {
                let c =
                    &bytes[b.offset as usize..(b.offset + u64::from(b.compressed_len)) as usize];
                segment::open_block_with(b, c, dict.as_ref()).unwrap()
            })
            .collect();
        let mut recs = Vec::new();
        for (b, raw) in idx.blocks.iter().zip(&raws) {
            recs.extend(segment::block_records(b, raw).unwrap());
        }
        if let Some(k) = recs
            .iter()
            .position(|r| r.account == "acme" && r.index == 3)
        {
            let altered = b"{\"action\":\"x.y.z\"}".to_vec();
            let rs: Vec<frame::RawRecord<'_>> = recs
                .iter()
                .enumerate()
                .map(|(j, r)| {
                    if j == k {
                        frame::RawRecord {
                            data: &altered,
                            ..*r
                        }
                    } else {
                        *r
                    }
                })
                .collect();
            let sealed =
                segment::build_sealed(idx.header.first_position, &rs, Default::default()).unwrap();
            storage.put(&name, &sealed).unwrap();
        }
    }
    let ledger = open_mem(&storage, test_config());
    let err = ledger.remove_bodies("acme", 10, by).unwrap_err();
    assert!(
        err.to_string().contains("does not match its leaf hash"),
        "{err}"
    );
    ledger.close().unwrap();
    let r = check(&storage);
    assert!(
        r.of_kind(ProblemKind::Altered).any(|p| p.index == Some(3)),
        "{r}"
    );
}

/// `read_many` answers exactly what `read_record` answers, one by one: over sealed blocks and
/// the active segment, both accounts interleaved, in any order, with removed bodies and
/// unknown positions as `None`.
#[test]
fn read_many_agrees_with_read_record() {
    let storage = MemStorage::new();
    let ledger = build(&storage);
    // Some records after the rotation stay in the active (plain) segment.
    ledger
        .append(
            (0..6u64)
                .map(|n| ("acme".to_string(), event(500 + n)))
                .collect(),
        )
        .unwrap();
    let by = ledger
        .append(vec![("acme".into(), statement(0, 30))])
        .unwrap()[0]
        .index;
    ledger.remove_bodies("acme", 30, by).unwrap();
    let sizes = [
        ("acme", ledger.tree_head("acme").unwrap().size),
        ("globex", ledger.tree_head("globex").unwrap().size),
    ];
    assert!(
        ledger.sealed_len("acme") < sizes[0].1,
        "some records unsealed"
    );
    // Newest first and interleaved (as an export reads), then oldest first, then scattered,
    // each with positions that do not exist.
    let mut wanted: Vec<(&str, u64)> = Vec::new();
    for i in (0..sizes[0].1.max(sizes[1].1)).rev() {
        for (account, size) in sizes {
            if i < size {
                wanted.push((account, i));
            }
        }
    }
    wanted.push(("acme", sizes[0].1));
    wanted.push(("nobody", 0));
    let mut forward = wanted.clone();
    forward.reverse();
    let scattered: Vec<(&str, u64)> = (0..wanted.len())
        .map(|k| wanted[(k * 37) % wanted.len()])
        .collect();
    for order in [wanted, forward, scattered] {
        let got = ledger.read_many(&order).unwrap();
        assert_eq!(got.len(), order.len());
        let mut removed = 0;
        for (&(account, index), record) in order.iter().zip(got) {
            let one = ledger.read_record(account, index).unwrap();
            removed += usize::from(account == "acme" && index < 30 && one.is_none());
            assert_eq!(record, one, "{account}/{index}");
        }
        assert_eq!(removed, 30, "removed bodies read as None");
    }
}
