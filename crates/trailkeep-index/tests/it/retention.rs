//! Retention deletes a range of one account's documents, and nothing else.

use trailkeep_index::{EventIndex, WriterOptions};

use crate::support::{accounts, event, hits};

#[test]
fn a_deleted_range_is_gone_and_nothing_else_is() {
    let dir = tempfile::TempDir::new().unwrap();
    let index = EventIndex::open(dir.path()).unwrap();
    let mut w = index.writer(WriterOptions::default()).unwrap();
    let received = time::OffsetDateTime::UNIX_EPOCH;
    for i in 0..10u64 {
        for account in ["acme", "beta"] {
            let e = event(
                i as i64,
                "kms.secrets.read",
                "success",
                serde_json::json!({}),
            );
            w.add(account, i, received, &e).unwrap();
        }
    }
    w.commit().unwrap();
    w.delete_range("acme", 2, 7).unwrap();
    w.delete_range("acme", 9, 9).unwrap();
    w.commit().unwrap();
    index.reload().unwrap();
    let left = hits(&index, "", &accounts(&["acme", "beta"]));
    let acme: Vec<&String> = left.iter().filter(|h| h.starts_with("acme/")).collect();
    let mut acme: Vec<u64> = acme
        .iter()
        .map(|h| h["acme/".len()..].parse().unwrap())
        .collect();
    acme.sort();
    assert_eq!(acme, vec![0, 1, 7, 8, 9]);
    assert_eq!(left.iter().filter(|h| h.starts_with("beta/")).count(), 10);
    // The positions are unchanged: a retry of a removed index is not indexed again as new.
    assert_eq!(w.positions().get("acme"), Some(&9));
    w.finish().unwrap();
}
