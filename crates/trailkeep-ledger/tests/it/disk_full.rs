//! A full disk: appends fail with a storage-full error, nothing half-written stays behind, the
//! ledger keeps running, and writing succeeds again once space is freed.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use trailkeep_ledger::{Ledger, MemStorage, Storage, verify};

use crate::{event, test_config};

/// Storage with a byte budget for writes. An append larger than what is left writes the part
/// that fits and then fails, as a real file system does.
#[derive(Debug)]
struct Budgeted {
    inner: MemStorage,
    left: Arc<AtomicU64>,
}

impl Budgeted {
    fn spend(&self, want: usize) -> usize {
        let mut fits = 0;
        let _ = self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                fits = (want as u64).min(left) as usize;
                Some(left - fits as u64)
            });
        fits
    }
}

fn full() -> io::Error {
    io::Error::from(io::ErrorKind::StorageFull)
}

impl Storage for Budgeted {
    fn get(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        self.inner.get(name)
    }
    fn get_range(&self, name: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.inner.get_range(name, offset, len)
    }
    fn size(&self, name: &str) -> io::Result<Option<u64>> {
        self.inner.size(name)
    }
    fn list(&self, prefix: &str) -> io::Result<Vec<String>> {
        self.inner.list(prefix)
    }
    fn put(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        if self.spend(bytes.len()) < bytes.len() {
            return Err(full());
        }
        self.inner.put(name, bytes)
    }
    fn append(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let fits = self.spend(bytes.len());
        self.inner.append(name, &bytes[..fits])?;
        if fits < bytes.len() {
            return Err(full());
        }
        Ok(())
    }
    fn sync(&self, name: &str) -> io::Result<()> {
        self.inner.sync(name)
    }
    fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        self.inner.truncate(name, len)
    }
    fn delete(&self, name: &str) -> io::Result<()> {
        self.inner.delete(name)
    }
}

#[test]
fn a_full_disk_refuses_appends_and_recovers_when_space_is_freed() {
    let mem = MemStorage::new();
    let left = Arc::new(AtomicU64::new(u64::MAX));
    let storage = Arc::new(Budgeted {
        inner: mem.clone(),
        left: left.clone(),
    });
    let ledger = Ledger::open(storage as Arc<dyn Storage>, test_config()).unwrap();
    let mut stored = Vec::new();
    let mut n = 0u64;
    let mut append = |ledger: &Ledger, stored: &mut Vec<Vec<u8>>| {
        n += 1;
        let bytes = event(n);
        let r = ledger.append(vec![("acme".to_string(), bytes.clone())]);
        if r.is_ok() {
            stored.push(bytes);
        }
        r
    };
    for _ in 0..20 {
        append(&ledger, &mut stored).unwrap();
    }
    ledger.sign_checkpoints_if_grown().unwrap();

    // Room for a fraction of one more record: it is refused, and so is everything after it,
    // including signing (which writes tree hashes and a note) and segment rotation.
    let mut refused = 0;
    for budget in [300u64, 0, 17, 1000] {
        left.store(budget, Ordering::SeqCst);
        for _ in 0..30 {
            match append(&ledger, &mut stored) {
                Ok(_) => {}
                Err(e) => {
                    assert!(e.is_storage_full(), "{e}");
                    refused += 1;
                }
            }
        }
        if let Err(e) = ledger.sign_checkpoints_if_grown() {
            assert!(e.is_storage_full(), "{e}");
        }
    }
    assert!(refused >= 30, "only {refused} appends were refused");

    // Records are in, but signing runs out of space part-way through the tree hashes, then
    // part-way through the checkpoint history, each time before it is done.
    left.store(u64::MAX, Ordering::SeqCst);
    for _ in 0..5 {
        append(&ledger, &mut stored).unwrap();
    }
    for budget in [40u64, 5 * 32 + 10] {
        left.store(budget, Ordering::SeqCst);
        let e = ledger.sign_checkpoints_if_grown().unwrap_err();
        assert!(e.is_storage_full(), "{e}");
    }

    // Space is freed: the same ledger takes writes again, with no gap in the indexes.
    left.store(u64::MAX, Ordering::SeqCst);
    for _ in 0..200 {
        append(&ledger, &mut stored).unwrap();
    }
    ledger.sign_checkpoints_if_grown().unwrap();
    for (i, bytes) in stored.iter().enumerate() {
        assert_eq!(
            ledger.read("acme", i as u64).unwrap().as_deref(),
            Some(bytes.as_slice()),
            "record {i}"
        );
    }
    assert_eq!(ledger.read("acme", stored.len() as u64).unwrap(), None);
    ledger.close().unwrap();

    // Reopened from what is on "disk": exactly the acknowledged records, and it all verifies.
    let reopened = crate::open_mem(&mem, test_config());
    assert_eq!(reopened.len(), stored.len() as u64);
    for (i, bytes) in stored.iter().enumerate() {
        assert_eq!(
            reopened.read("acme", i as u64).unwrap().as_deref(),
            Some(bytes.as_slice())
        );
    }
    reopened.close().unwrap();
    let report = verify::verify_storage(&mem, &Default::default(), |_| {}).unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.records, stored.len() as u64);
}
