//! Crash simulation: the in-memory storage loses every unsynced write (keeping a random torn
//! prefix) at a random moment while several appenders run. After reopening, every acknowledged
//! record is present with its bytes, nothing else is half-present, and the data verifies.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use trailkeep_ledger::{MemStorage, verify};

use crate::{event, open_mem, test_config};

/// (account, index, bytes) of an acknowledged record.
type Acked = (String, u64, Vec<u8>);

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[test]
fn acknowledged_records_survive_random_crashes() {
    for round in 0..12u64 {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((round + 1) * 0x1234_5678));
        let storage = MemStorage::new();
        let mut cfg = test_config();
        cfg.checkpoint_interval = Some(Duration::from_millis(3));
        let ledger = open_mem(&storage, cfg);
        let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
        let submitted: Arc<Mutex<HashMap<Vec<u8>, String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..3u64)
            .map(|t| {
                let (ledger, acked, submitted, stop) = (
                    ledger.clone(),
                    acked.clone(),
                    submitted.clone(),
                    stop.clone(),
                );
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let batch: Vec<(String, Vec<u8>)> = (0..1 + (n * 7 + t) % 9)
                            .map(|k| {
                                let mut e = event(n * 10 + k);
                                e.extend_from_slice(format!(" t{t} n{n} k{k}").as_bytes());
                                (format!("acct{}", (n + k + t) % 3), e)
                            })
                            .collect();
                        {
                            let mut s = submitted.lock().unwrap();
                            for (a, e) in &batch {
                                s.insert(e.clone(), a.clone());
                            }
                        }
                        let Ok(acks) = ledger.append(batch.clone()) else {
                            break;
                        };
                        let mut a = acked.lock().unwrap();
                        for (ack, (_, e)) in acks.into_iter().zip(batch) {
                            a.push((ack.account, ack.index, e));
                        }
                        n += 1;
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(5 + rng.below(40)));
        let before: Vec<_> = acked.lock().unwrap().clone();
        let crashed = storage.crashed_copy(|_, unsynced| rng.below(unsynced as u64 + 1) as usize);
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        drop(ledger);

        let reopened = open_mem(&crashed, test_config());
        for (account, index, bytes) in &before {
            let got = reopened.read(account, *index).unwrap();
            assert_eq!(
                got.as_deref(),
                Some(&bytes[..]),
                "round {round}: {account}/{index} lost"
            );
        }
        let submitted = submitted.lock().unwrap();
        for account in reopened.accounts() {
            for r in reopened.iter_account(&account, 0) {
                let r = r.unwrap();
                assert_eq!(
                    submitted.get(&r.bytes),
                    Some(&account),
                    "round {round}: {account}/{} holds bytes nobody submitted",
                    r.index
                );
            }
            // The tree covers exactly the records present.
            let head = reopened.tree_head(&account).unwrap();
            assert_eq!(reopened.read(&account, head.size).unwrap(), None);
        }
        eprintln!(
            "round {round}: {} acked before the crash, {} records after, {:?}",
            before.len(),
            reopened.len(),
            reopened.stats()
        );
        reopened.close().unwrap();
        let report = verify::verify_storage(&crashed, &Default::default(), |_| {}).unwrap();
        assert!(report.is_ok(), "round {round}: {report}");
        assert!(!before.is_empty() || round > 0 || report.records == 0);
    }
}

/// In relaxed mode a crash may lose acknowledged records, but never anything a signed
/// checkpoint covers, and what remains is a consistent prefix.
#[test]
fn relaxed_mode_keeps_everything_checkpointed() {
    use trailkeep_ledger::Durability;
    let storage = MemStorage::new();
    let mut cfg = test_config();
    cfg.durability = Durability::Relaxed;
    let ledger = open_mem(&storage, cfg);
    let first: Vec<_> = (0..25u64).map(|n| ("acme".to_string(), event(n))).collect();
    ledger.append(first.clone()).unwrap();
    ledger.sign_checkpoints_if_grown().unwrap();
    let later = ledger
        .append(
            (25..40u64)
                .map(|n| ("acme".to_string(), event(n)))
                .collect(),
        )
        .unwrap();
    assert_eq!(later.len(), 15);
    let crashed = storage.crashed_copy(|_, unsynced| unsynced / 3);
    drop(ledger);
    let reopened = open_mem(&crashed, test_config());
    for (i, (_, bytes)) in first.iter().enumerate() {
        assert_eq!(
            reopened.read("acme", i as u64).unwrap().as_ref(),
            Some(bytes)
        );
    }
    let n = reopened.tree_head("acme").unwrap().size;
    assert!((25..=40).contains(&n), "{n}");
    for i in 25..n {
        assert_eq!(reopened.read("acme", i).unwrap(), Some(event(i)));
    }
    reopened.close().unwrap();
    let report = verify::verify_storage(&crashed, &Default::default(), |_| {}).unwrap();
    assert!(report.is_ok(), "{report}");
}
