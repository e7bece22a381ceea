//! A property-test model of the log: random appends, checkpoint signing, rotations, reopens
//! (clean and after a crash that keeps only synced bytes) and proofs, checked against a plain
//! in-memory model and the reference Merkle implementation.

use std::collections::BTreeMap;

use proptest::prelude::*;
use trailkeep_ledger::merkle::{Hash, leaf_hash};
use trailkeep_ledger::verifier::{verify_consistency, verify_inclusion};
use trailkeep_ledger::{Ledger, MemStorage, verify};

use crate::proofs::mth;
use crate::{open_mem, test_config};

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<(u8, u16)>),
    Sign,
    Rotate,
    Reopen,
    CrashReopen,
    Prove(u8, u16, u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec((0u8..3, 0u16..600), 1..12).prop_map(Op::Append),
        1 => Just(Op::Sign),
        1 => Just(Op::Rotate),
        1 => Just(Op::Reopen),
        1 => Just(Op::CrashReopen),
        3 => (0u8..3, any::<u16>(), any::<u16>()).prop_map(|(a, x, y)| Op::Prove(a, x, y)),
    ]
}

fn account(a: u8) -> String {
    format!("acct{a}")
}

fn check_against_model(ledger: &Ledger, model: &BTreeMap<String, Vec<Vec<u8>>>) {
    for (acct, records) in model {
        let leaves: Vec<Hash> = records.iter().map(|r| leaf_hash(r)).collect();
        let head = ledger.tree_head(acct).expect("account exists");
        assert_eq!(head.size, records.len() as u64);
        assert_eq!(head.root, mth(&leaves));
        for (i, r) in records.iter().enumerate() {
            assert_eq!(ledger.read(acct, i as u64).unwrap().as_ref(), Some(r));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn log_behaves_like_the_model(ops in prop::collection::vec(op(), 1..25)) {
        let storage = MemStorage::new();
        let mut ledger = open_mem(&storage, test_config());
        let mut model: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
        let mut counter = 0u64;
        for op in ops {
            match op {
                Op::Append(items) => {
                    let batch: Vec<(String, Vec<u8>)> = items
                        .iter()
                        .map(|(a, len)| {
                            counter += 1;
                            let mut b = format!("{{\"n\":{counter}}}").into_bytes();
                            b.resize(b.len() + *len as usize, b'.');
                            (account(*a), b)
                        })
                        .collect();
                    let acks = ledger.append(batch.clone()).unwrap();
                    for (ack, (a, b)) in acks.iter().zip(batch) {
                        let m = model.entry(a.clone()).or_default();
                        prop_assert_eq!(&ack.account, &a);
                        prop_assert_eq!(ack.index, m.len() as u64);
                        m.push(b);
                    }
                }
                Op::Sign => {
                    ledger.sign_checkpoints_if_grown().unwrap();
                }
                Op::Rotate => ledger.rotate().unwrap(),
                Op::Reopen => {
                    ledger.close().unwrap();
                    ledger = open_mem(&storage, test_config());
                    check_against_model(&ledger, &model);
                }
                Op::CrashReopen => {
                    // Every append was acknowledged after fsync, so nothing may be lost.
                    let crashed = storage.crashed_copy(|_, _| 0);
                    drop(ledger);
                    ledger = open_mem(&crashed, test_config());
                    check_against_model(&ledger, &model);
                    ledger.close().unwrap();
                    ledger = open_mem(&storage, test_config());
                }
                Op::Prove(a, x, y) => {
                    let Some(records) = model.get(&account(a)) else { continue };
                    let n = records.len() as u64;
                    let size = 1 + u64::from(x) % n;
                    let index = u64::from(y) % size;
                    let leaves: Vec<Hash> = records.iter().map(|r| leaf_hash(r)).collect();
                    let root = mth(&leaves[..size as usize]);
                    prop_assert_eq!(ledger.root_at(&account(a), size).unwrap(), root);
                    let p = ledger.inclusion_proof(&account(a), index, size).unwrap();
                    prop_assert!(verify_inclusion(index, size, &leaves[index as usize], &p, &root).is_ok());
                    let m = 1 + index.min(size - 1);
                    let c = ledger.consistency_proof(&account(a), m, size).unwrap();
                    prop_assert!(verify_consistency(m, size, &mth(&leaves[..m as usize]), &root, &c).is_ok());
                }
            }
        }
        check_against_model(&ledger, &model);
        ledger.close().unwrap();
        let report = verify::verify_storage(&storage, &Default::default(), |_| {}).unwrap();
        prop_assert!(report.is_ok(), "{}", report);
    }
}
