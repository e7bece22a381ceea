//! Commit, reopen, catch-up position, idempotent re-add, rebuild.

use serde_json::json;
use tempfile::TempDir;
use trailkeep_index::query::plan_strict;
use trailkeep_index::{Added, EventIndex, SearchRequest, WriterOptions};

use crate::support::{T0, accounts, event, hits};

fn ev(i: u64) -> serde_json::Value {
    event(
        i64::try_from(i).unwrap(),
        "codeengine.job.run",
        "success",
        json!({"correlationId": format!("c{i}")}),
    )
}

#[test]
fn commit_reopen_and_catch_up_from_the_recorded_position() {
    let dir = TempDir::new().unwrap();
    {
        let index = EventIndex::open(dir.path()).unwrap();
        assert!(index.committed_positions().unwrap().is_empty());
        let mut w = index.writer(WriterOptions::default()).unwrap();
        for i in 0..5 {
            w.add("a", i, T0, &ev(i)).unwrap();
        }
        w.add("b", 0, T0, &ev(0)).unwrap();
        let info = w.commit().unwrap();
        assert_eq!(info.positions.get("a"), Some(&4));
        // Added but never committed: lost in the "crash" below.
        for i in 5..8 {
            w.add("a", i, T0, &ev(i)).unwrap();
        }
        assert_eq!(w.positions().get("a"), Some(&7));
        assert_eq!(
            hits(&index, "", &accounts(&["a"])).len(),
            5,
            "uncommitted adds are not visible"
        );
        drop(w);
    }
    let index = EventIndex::open(dir.path()).unwrap();
    let positions = index.committed_positions().unwrap();
    assert_eq!(positions.get("a"), Some(&4));
    assert_eq!(positions.get("b"), Some(&0));
    assert_eq!(hits(&index, "", &accounts(&["a", "b"])).len(), 6);
    // Catch up from position + 1, as the server does from the ledger.
    let mut w = index.writer(WriterOptions::default()).unwrap();
    for i in positions["a"] + 1..8 {
        assert_eq!(w.add("a", i, T0, &ev(i)).unwrap(), Added::New);
    }
    w.commit().unwrap();
    assert_eq!(hits(&index, "", &accounts(&["a"])).len(), 8);
    assert_eq!(index.committed_positions().unwrap().get("a"), Some(&7));
}

#[test]
fn re_adding_a_position_never_duplicates_it() {
    let dir = TempDir::new().unwrap();
    let index = EventIndex::open(dir.path()).unwrap();
    let mut w = index.writer(WriterOptions::default()).unwrap();
    for i in 0..3 {
        w.add("a", i, T0, &ev(i)).unwrap();
    }
    // Re-add before the commit, and after it, and the whole batch again (a replayed feed).
    assert_eq!(w.add("a", 1, T0, &ev(1)).unwrap(), Added::Replaced);
    w.commit().unwrap();
    let items: Vec<_> = (0..3).map(ev).collect();
    let new = w
        .add_batch(
            items
                .iter()
                .enumerate()
                .map(|(i, e)| ("a", i as u64, T0, e)),
        )
        .unwrap();
    assert_eq!(new, 0);
    w.commit().unwrap();
    assert_eq!(
        hits(&index, "", &accounts(&["a"])),
        vec!["a/2", "a/1", "a/0"]
    );
    assert_eq!(
        hits(&index, "correlationId:c1", &accounts(&["a"])),
        vec!["a/1"]
    );
    // The same index in another account is another position.
    w.add("b", 1, T0, &ev(1)).unwrap();
    w.commit().unwrap();
    assert_eq!(
        hits(&index, "correlationId:c1", &accounts(&["a", "b"])),
        vec!["b/1", "a/1"]
    );
    // Reopened, the positions still protect against duplicates.
    w.finish().unwrap();
    let mut w = index.writer(WriterOptions::default()).unwrap();
    assert_eq!(w.add("a", 2, T0, &ev(2)).unwrap(), Added::Duplicate);
    // A gap below the highest position is filled, once.
    w.add("a", 10, T0, &ev(10)).unwrap();
    w.commit().unwrap();
    assert_eq!(w.add("a", 5, T0, &ev(5)).unwrap(), Added::Replaced);
    assert_eq!(w.add("a", 5, T0, &ev(5)).unwrap(), Added::Replaced);
    w.commit().unwrap();
    assert_eq!(w.add("a", 5, T0, &ev(5)).unwrap(), Added::Duplicate);
    w.commit().unwrap();
    assert_eq!(
        hits(&index, "", &accounts(&["a"])),
        vec!["a/10", "a/5", "a/2", "a/1", "a/0"]
    );
}

#[test]
fn delete_all_empties_the_index_for_a_rebuild() {
    let dir = TempDir::new().unwrap();
    let index = EventIndex::open(dir.path()).unwrap();
    let mut w = index.writer(WriterOptions::default()).unwrap();
    for i in 0..3 {
        w.add("a", i, T0, &ev(i)).unwrap();
    }
    w.commit().unwrap();
    w.delete_all().unwrap();
    w.commit().unwrap();
    assert_eq!(index.num_events(), 0);
    assert!(index.committed_positions().unwrap().is_empty());
    for i in 0..3 {
        assert_eq!(w.add("a", i, T0, &ev(i)).unwrap(), Added::New);
    }
    w.commit().unwrap();
    assert_eq!(index.num_events(), 3);
    let plan = plan_strict("").unwrap();
    let a = accounts(&["a"]);
    let page = index
        .search(&SearchRequest {
            plan: &plan,
            accounts: &a,
            from: None,
            to: None,
            limit: 10,
            cursor: None,
        })
        .unwrap();
    assert_eq!(page.hits.len(), 3);
}

#[test]
fn rollback_forgets_uncommitted_adds_and_their_positions() {
    let index = EventIndex::in_memory().unwrap();
    let mut w = index.writer(WriterOptions::default()).unwrap();
    w.add("a", 0, T0, &ev(0)).unwrap();
    w.commit().unwrap();
    w.add("a", 1, T0, &ev(1)).unwrap();
    w.rollback().unwrap();
    assert_eq!(w.positions().get("a"), Some(&0));
    assert_eq!(w.add("a", 1, T0, &ev(1)).unwrap(), Added::New);
    w.commit().unwrap();
    assert_eq!(index.num_events(), 2);
}

#[test]
fn an_index_of_another_format_is_refused_then_recreated_empty() {
    let dir = TempDir::new().unwrap();
    {
        let index = EventIndex::open(dir.path()).unwrap();
        let mut w = index.writer(WriterOptions::default()).unwrap();
        w.add("a", 0, T0, &ev(0)).unwrap();
        w.commit().unwrap();
        w.finish().unwrap();
    }
    // Pretend a future build wrote it.
    let meta = dir.path().join("meta.json");
    let text = std::fs::read_to_string(&meta).unwrap();
    let current = format!("\\\"format\\\":{}", trailkeep_index::FORMAT_VERSION);
    assert!(text.contains(&current), "{text}");
    std::fs::write(&meta, text.replace(&current, "\\\"format\\\":999")).unwrap();
    match EventIndex::open(dir.path()) {
        Err(trailkeep_index::IndexError::UpgradeRequired {
            found: 999,
            supported: trailkeep_index::FORMAT_VERSION,
        }) => {}
        other => panic!("{other:?}"),
    }
    let (index, recreated) = EventIndex::open_or_recreate(dir.path()).unwrap();
    assert!(recreated);
    assert_eq!(index.num_events(), 0);
    assert!(index.committed_positions().unwrap().is_empty());
    let (_, recreated) = EventIndex::open_or_recreate(dir.path()).unwrap();
    assert!(!recreated);
}

#[test]
fn the_index_and_its_writer_can_be_shared_and_moved_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<EventIndex>();
    send_sync::<trailkeep_index::Writer>();
    let index = std::sync::Arc::new(EventIndex::in_memory().unwrap());
    let mut w = index.writer(WriterOptions::default()).unwrap();
    let writer_thread = std::thread::spawn(move || {
        w.add("a", 0, T0, &ev(0)).unwrap();
        w.commit().unwrap();
    });
    writer_thread.join().unwrap();
    let reader = std::sync::Arc::clone(&index);
    let n = std::thread::spawn(move || hits(&reader, "", &accounts(&["a"])).len())
        .join()
        .unwrap();
    assert_eq!(n, 1);
}

#[test]
fn a_rebuild_without_an_intermediate_commit_adds_everything_again() {
    let index = EventIndex::in_memory().unwrap();
    let mut w = index.writer(WriterOptions::default()).unwrap();
    for i in 0..3 {
        w.add("a", i, T0, &ev(i)).unwrap();
    }
    w.commit().unwrap();
    w.delete_all().unwrap();
    for i in 0..3 {
        assert_eq!(w.add("a", i, T0, &ev(i)).unwrap(), Added::New);
    }
    w.commit().unwrap();
    assert_eq!(index.num_events(), 3);
    assert_eq!(index.committed_positions().unwrap().get("a"), Some(&2));
}
