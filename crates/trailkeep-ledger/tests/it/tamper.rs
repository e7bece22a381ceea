//! Byte-level tampering: each kind of damage is reported with the account and index it hits.

use trailkeep_ledger::segment::{self, HEADER_LEN};
use trailkeep_ledger::verify::{ProblemKind, VerifyReport};
use trailkeep_ledger::{Appended, MemStorage, NoteSigner, Storage, frame, verify};

use crate::{event, first_sealed, open_mem, test_config, wait_sealed};

/// 30 records over two accounts; `sealed` puts the first ones in sealed segments.
fn build(sealed: bool) -> (MemStorage, Vec<Appended>) {
    let storage = MemStorage::new();
    let mut cfg = test_config();
    if !sealed {
        cfg.segment_target_bytes = u64::MAX;
    }
    let ledger = open_mem(&storage, cfg);
    let mut acks = Vec::new();
    for b in 0..3u64 {
        let batch = (0..10u64)
            .map(|k| {
                let n = b * 10 + k;
                (
                    if n % 3 == 0 { "acme" } else { "globex" }.to_string(),
                    event(n),
                )
            })
            .collect();
        acks.extend(ledger.append(batch).unwrap());
        ledger.sign_checkpoints_if_grown().unwrap();
    }
    if sealed {
        wait_sealed(&ledger);
    }
    ledger.close().unwrap();
    let clean = check(&storage);
    assert!(clean.is_ok(), "{clean}");
    (storage, acks)
}

fn check(storage: &MemStorage) -> VerifyReport {
    verify::verify_storage(storage, &Default::default(), |_| {}).unwrap()
}

fn plain_segment(storage: &MemStorage) -> String {
    storage
        .list("seg/")
        .unwrap()
        .into_iter()
        .rfind(|n| n.ends_with(".log"))
        .unwrap()
}

/// Byte ranges of every frame of a plain segment.
fn frames(bytes: &[u8]) -> Vec<(usize, usize)> {
    let scan = segment::scan_plain(bytes).unwrap();
    let offs: Vec<usize> = scan.records.iter().map(|(o, _)| *o as usize).collect();
    offs.iter()
        .enumerate()
        .map(|(i, &o)| (o, offs.get(i + 1).copied().unwrap_or(bytes.len())))
        .collect()
}

fn has(report: &VerifyReport, kind: ProblemKind, account: &str, index: u64) -> bool {
    report.problems.iter().any(|p| {
        p.kind == kind
            && p.account.as_deref() == Some(account)
            && p.index.is_some_and(|i| i <= index && index < i + p.count)
    })
}

fn ack(acks: &[Appended], position: u64) -> (String, u64) {
    let a = &acks[position as usize];
    (a.account.clone(), a.index)
}

#[test]
fn flipped_byte_in_active_segment() {
    let (storage, acks) = build(false);
    let seg = plain_segment(&storage);
    let (acct, idx) = ack(&acks, 7);
    storage
        .tamper(&seg, |b| {
            let (s, e) = frames(b)[7];
            b[(s + e) / 2] ^= 0x01;
        })
        .unwrap();
    let r = check(&storage);
    assert!(has(&r, ProblemKind::Damaged, &acct, idx), "{r}");
    assert_eq!(r.problems.len(), 1, "{r}");
    assert!(r.to_string().contains(&format!("{acct}/{idx}")), "{r}");
}

#[test]
fn flipped_byte_in_sealed_segment() {
    let (storage, acks) = build(true);
    let sealed = first_sealed(&storage);
    let bytes = storage.get(&sealed).unwrap().unwrap();
    let idx = segment::parse_sealed(&bytes).unwrap();
    let block = idx.blocks[0];
    storage
        .tamper(&sealed, |b| {
            b[block.offset as usize + block.compressed_len as usize / 2] ^= 0x10
        })
        .unwrap();
    let r = check(&storage);
    eprintln!("{r}");
    for p in block.first_position..block.first_position + u64::from(block.record_count) {
        let (acct, i) = ack(&acks, p);
        assert!(has(&r, ProblemKind::Damaged, &acct, i), "{acct}/{i}: {r}");
    }
    assert_eq!(r.counts().len(), 1, "{r}");
}

#[test]
fn flipped_byte_in_a_sealed_segments_dictionary() {
    let (storage, acks) = build(true);
    let sealed = first_sealed(&storage);
    let bytes = storage.get(&sealed).unwrap().unwrap();
    let idx = segment::parse_sealed(&bytes).unwrap();
    let dict = idx.dictionary.expect("the test config trains dictionaries");
    storage
        .tamper(&sealed, |b| {
            b[dict.offset as usize + dict.len as usize / 2] ^= 0x10
        })
        .unwrap();
    // Verification: every record of the segment is damaged, and the reason names the segment's
    // dictionary.
    let r = check(&storage);
    let first = idx.header.first_position;
    for p in first..first + idx.records.len() as u64 {
        let (acct, i) = ack(&acks, p);
        assert!(has(&r, ProblemKind::Damaged, &acct, i), "{acct}/{i}: {r}");
    }
    assert_eq!(r.counts().len(), 1, "{r}");
    assert!(
        r.to_string().contains(&format!(
            "{sealed}@{}: the segment's dictionary",
            dict.offset
        )),
        "{r}"
    );
    // Reading: the ledger opens (the tables are intact), and a read of the segment is a clear
    // error naming it; never a panic or wrong bytes. Records elsewhere still read.
    let ledger = open_mem(&storage, test_config());
    let (acct, i) = ack(&acks, first);
    let e = ledger.read(&acct, i).unwrap_err().to_string();
    assert!(
        e.contains(&format!("{sealed}@{}", dict.offset)) && e.contains("dictionary CRC mismatch"),
        "{e}"
    );
    let (acct, i) = ack(&acks, 29);
    assert_eq!(ledger.read(&acct, i).unwrap(), Some(event(29)));
    ledger.close().unwrap();
}

#[test]
fn deleted_record() {
    let (storage, acks) = build(false);
    let seg = plain_segment(&storage);
    let (acct, idx) = ack(&acks, 12);
    storage
        .tamper(&seg, |b| {
            let (s, e) = frames(b)[12];
            b.drain(s..e);
        })
        .unwrap();
    let r = check(&storage);
    assert!(has(&r, ProblemKind::Missing, &acct, idx), "{r}");
    assert_eq!(r.problems.len(), 1, "{r}");
}

#[test]
fn inserted_record() {
    let (storage, acks) = build(false);
    let seg = plain_segment(&storage);
    let (acct, idx) = ack(&acks, 20);
    storage
        .tamper(&seg, |b| {
            let (_, e) = frames(b)[20];
            let mut forged = Vec::new();
            frame::encode_frame(&mut forged, 20, idx, 0, &acct, b"{\"forged\":true}");
            b.splice(e..e, forged);
        })
        .unwrap();
    let r = check(&storage);
    assert!(has(&r, ProblemKind::Inserted, &acct, idx), "{r}");
    assert_eq!(r.problems.len(), 1, "{r}");
}

#[test]
fn reordered_records() {
    let (storage, acks) = build(false);
    let seg = plain_segment(&storage);
    let (acct, idx) = ack(&acks, 4);
    storage
        .tamper(&seg, |b| {
            let f = frames(b);
            let (s4, e4) = f[4];
            let (s5, e5) = f[5];
            let mut swapped = b[s5..e5].to_vec();
            swapped.extend_from_slice(&b[s4..e4]);
            b.splice(s4..e5, swapped);
        })
        .unwrap();
    let r = check(&storage);
    assert!(has(&r, ProblemKind::OutOfOrder, &acct, idx), "{r}");
    assert_eq!(r.problems.len(), 1, "{r}");
}

#[test]
fn truncated_active_segment() {
    let (storage, acks) = build(false);
    let seg = plain_segment(&storage);
    let (acct, idx) = ack(&acks, 25);
    storage
        .tamper(&seg, |b| {
            let (s, e) = frames(b)[25];
            b.truncate((s + e) / 2);
        })
        .unwrap();
    let r = check(&storage);
    eprintln!("{r}");
    assert!(has(&r, ProblemKind::Truncated, &acct, idx), "{r}");
    for p in 26..30 {
        let (a, i) = ack(&acks, p);
        assert!(has(&r, ProblemKind::Missing, &a, i), "{a}/{i}: {r}");
    }
}

#[test]
fn truncated_sealed_segment() {
    let (storage, acks) = build(true);
    let sealed = first_sealed(&storage);
    let bytes = storage.get(&sealed).unwrap().unwrap();
    let n = segment::parse_sealed(&bytes).unwrap().records.len() as u64;
    storage
        .tamper(&sealed, |b| b.truncate(b.len() - 100))
        .unwrap();
    let r = check(&storage);
    assert!(
        r.of_kind(ProblemKind::Truncated)
            .any(|p| p.location.as_deref().unwrap().contains(&sealed)),
        "{r}"
    );
    for p in 0..n {
        let (a, i) = ack(&acks, p);
        assert!(has(&r, ProblemKind::Missing, &a, i), "{a}/{i}: {r}");
    }
}

#[test]
fn replaced_checkpoint() {
    let (storage, _) = build(false);
    let name = "log/acme/checkpoint";
    let note = String::from_utf8(storage.get(name).unwrap().unwrap()).unwrap();
    // Re-signed by another key under the same name.
    let other = NoteSigner::from_seed("trailkeep.test", [7; 32]).unwrap();
    let body = &note[..note.find("\n\n").unwrap() + 1];
    storage
        .put(name, other.sign(body).unwrap().as_bytes())
        .unwrap();
    let r = check(&storage);
    assert!(
        r.of_kind(ProblemKind::CheckpointInvalid)
            .any(|p| p.account.as_deref() == Some("acme")),
        "{r}"
    );
    // A kept checkpoint whose body was edited (signature no longer matches), re-framed with a
    // valid CRC as a hostile writer would.
    let chunk = storage.list("log/globex/checkpoints/").unwrap()[0].clone();
    storage
        .tamper(&chunk, |b| {
            let notes = trailkeep_ledger::history::parse(b).notes;
            let mut out = Vec::new();
            for (k, (_, note)) in notes.iter().enumerate() {
                let mut lines: Vec<&str> = note.split('\n').collect();
                if k == 1 {
                    lines[2] = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
                }
                out.extend(trailkeep_ledger::history::encode(&lines.join("\n")));
            }
            *b = out;
        })
        .unwrap();
    let r = check(&storage);
    assert!(
        r.of_kind(ProblemKind::CheckpointInvalid)
            .any(|p| p.account.as_deref() == Some("globex")),
        "{r}"
    );
}

#[test]
fn torn_checkpoint_chunk() {
    let (storage, _) = build(false);
    let chunk = storage.list("log/acme/checkpoints/").unwrap()[0].clone();
    storage.tamper(&chunk, |b| b.truncate(b.len() - 5)).unwrap();
    let r = check(&storage);
    assert!(
        r.of_kind(ProblemKind::Truncated)
            .any(|p| p.account.as_deref() == Some("acme")),
        "{r}"
    );
    // Opening cuts the torn note and appends after it.
    let l = open_mem(&storage, test_config());
    l.append(vec![("acme".into(), b"more".to_vec())]).unwrap();
    l.close().unwrap();
    assert!(l.checkpoint_history("acme").unwrap().len() >= 3);
    assert!(check(&storage).is_ok());
}

#[test]
fn rolled_back_checkpoint() {
    let (storage, _) = build(false);
    let chunk = storage.list("log/acme/checkpoints/").unwrap()[0].clone();
    let notes = trailkeep_ledger::history::parse(&storage.get(&chunk).unwrap().unwrap()).notes;
    storage
        .put("log/acme/checkpoint", notes[0].1.as_bytes())
        .unwrap();
    let r = check(&storage);
    assert!(
        r.of_kind(ProblemKind::CheckpointInvalid)
            .any(|p| p.account.as_deref() == Some("acme")),
        "{r}"
    );
}

/// A hostile writer edits a record and recomputes its CRC: the CRC layer cannot see it, the
/// hash chain does.
#[test]
fn altered_record_with_recomputed_crc() {
    let (storage, acks) = build(false);
    let seg = plain_segment(&storage);
    let (acct, idx) = ack(&acks, 9);
    storage
        .tamper(&seg, |b| {
            let (s, e) = frames(b)[9];
            let mut forged = Vec::new();
            frame::encode_frame(&mut forged, 9, idx, 0, &acct, b"{\"outcome\":\"success\"}");
            b.splice(s..e, forged);
        })
        .unwrap();
    let r = check(&storage);
    assert!(has(&r, ProblemKind::Altered, &acct, idx), "{r}");
    assert_eq!(r.problems.len(), 1, "{r}");
    // ...and rewriting the stored leaf hash too is caught by the signed checkpoints.
    let leaf = trailkeep_ledger::leaf_hash(b"{\"outcome\":\"success\"}");
    storage
        .tamper(&format!("log/{acct}/hashes/0"), |b| {
            b[idx as usize * 32..idx as usize * 32 + 32].copy_from_slice(&leaf)
        })
        .unwrap();
    let r = check(&storage);
    assert!(
        r.of_kind(ProblemKind::CheckpointMismatch)
            .any(|p| p.account.as_deref() == Some(&acct)),
        "{r}"
    );
    assert!(r.of_kind(ProblemKind::Altered).next().is_none(), "{r}");
}

#[test]
fn header_damage_and_summary() {
    let (storage, _) = build(false);
    let seg = plain_segment(&storage);
    storage.tamper(&seg, |b| b[HEADER_LEN - 1] ^= 1).unwrap();
    let r = check(&storage);
    assert!(!r.is_ok());
    assert!(r.summary().contains("problems"), "{}", r.summary());
}

#[test]
fn verify_data_dir_on_disk_reports_progress() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = trailkeep_ledger::Ledger::open_dir(dir.path(), test_config()).unwrap();
    ledger
        .append((0..40u64).map(|n| ("acme".to_string(), event(n))).collect())
        .unwrap();
    ledger.close().unwrap();
    let mut last = None;
    let r = verify::verify_data_dir(dir.path(), |p| last = Some(*p)).unwrap();
    assert!(r.is_ok(), "{r}");
    assert_eq!(r.records, 40);
    let last = last.unwrap();
    assert_eq!((last.phase, last.done), ("trees", last.total));
}
