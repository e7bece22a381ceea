//! Cursor paging: no gaps, no duplicates, newest first, also among equal timestamps.

use serde_json::json;
use trailkeep_index::query::plan_strict;
use trailkeep_index::{IndexError, SearchRequest};

use crate::support::{accounts, event, index_of};

#[test]
fn pages_cover_every_hit_exactly_once_in_order() {
    // 3 accounts × 40 events, many sharing one eventTime (ties broken by account, then index).
    let mut items = Vec::new();
    for account in ["a", "b", "c"] {
        for i in 0..40u64 {
            let minutes = i64::try_from(i / 7).unwrap();
            items.push((
                account,
                i,
                event(
                    minutes,
                    "codeengine.job.run",
                    if i % 3 == 0 { "failure" } else { "success" },
                    json!({}),
                ),
            ));
        }
    }
    let (_dir, index) = index_of(&items);
    let all = accounts(&["a", "b", "c"]);
    for (query, expected_count) in [("", 120), ("outcome:failure", 42)] {
        let plan = plan_strict(query).unwrap();
        let full = index
            .search(&SearchRequest {
                plan: &plan,
                accounts: &all,
                from: None,
                to: None,
                limit: 1000,
                cursor: None,
            })
            .unwrap();
        assert_eq!(full.hits.len(), expected_count);
        for page_size in [1, 7, 40, 119, 120, 121] {
            let mut cursor: Option<String> = None;
            let mut paged = Vec::new();
            loop {
                let page = index
                    .search(&SearchRequest {
                        plan: &plan,
                        accounts: &all,
                        from: None,
                        to: None,
                        limit: page_size,
                        cursor: cursor.as_deref(),
                    })
                    .unwrap();
                assert!(page.hits.len() <= page_size);
                paged.extend(page.hits);
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            assert_eq!(paged, full.hits, "query {query:?}, page size {page_size}");
        }
        // Newest first, ties by account then index, descending.
        let keys: Vec<_> = full
            .hits
            .iter()
            .map(|h| (h.event_time, h.account.clone(), h.index))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        assert_eq!(keys, sorted);
    }
}

#[test]
fn the_last_page_has_no_cursor_and_bad_cursors_are_rejected() {
    let items = vec![
        ("a", 0, event(0, "x.y.z", "success", json!({}))),
        ("a", 1, event(1, "x.y.z", "success", json!({}))),
    ];
    let (_dir, index) = index_of(&items);
    let plan = plan_strict("").unwrap();
    let a = accounts(&["a"]);
    let page = index
        .search(&SearchRequest {
            plan: &plan,
            accounts: &a,
            from: None,
            to: None,
            limit: 2,
            cursor: None,
        })
        .unwrap();
    assert_eq!(page.hits.len(), 2);
    assert_eq!(page.next_cursor, None);
    for bad in ["", "!!!", "AQID", "eyJ4IjoxfQ"] {
        let r = index.search(&SearchRequest {
            plan: &plan,
            accounts: &a,
            from: None,
            to: None,
            limit: 2,
            cursor: Some(bad),
        });
        assert!(matches!(r, Err(IndexError::InvalidCursor)), "{bad}");
    }
    let r = index.search(&SearchRequest {
        plan: &plan,
        accounts: &a,
        from: None,
        to: None,
        limit: 0,
        cursor: None,
    });
    assert!(matches!(r, Err(IndexError::InvalidRequest(_))));
}
