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

/// Pages over several segments whose time ranges are disjoint or overlap (a later page skips
/// the segments wholly after its cursor): `search_positions` gives the hits of `search`, without
/// what was derived, page after page, also within a time range.
#[test]
fn positions_page_like_search_over_many_segments() {
    use trailkeep_index::WriterOptions;

    let dir = tempfile::TempDir::new().unwrap();
    let index = trailkeep_index::EventIndex::open(dir.path()).unwrap();
    let mut w = index.writer(WriterOptions::default()).unwrap();
    let mut next = [0u64; 2];
    // One commit (segment) per range of minutes: two disjoint, one overlapping both.
    for minutes in [0..10i64, 20..30, 5..25, 40..41] {
        for m in minutes {
            for (k, account) in ["a", "b"].into_iter().enumerate() {
                let outcome = if m % 4 == 0 { "failure" } else { "success" };
                let e = event(m, "codeengine.job.run", outcome, json!({}));
                w.add(account, next[k], crate::support::RECEIVED_AT, &e)
                    .unwrap();
                next[k] += 1;
            }
        }
        w.commit().unwrap();
    }
    w.finish().unwrap();
    index.reload().unwrap();
    let all = accounts(&["a", "b"]);
    let from = Some(crate::support::T0 + time::Duration::minutes(7));
    let to = Some(crate::support::T0 + time::Duration::minutes(23));
    for (query, from, to) in [
        ("", None, None),
        ("outcome:failure", None, None),
        ("", from, to),
    ] {
        let plan = plan_strict(query).unwrap();
        let full = index
            .search(&SearchRequest {
                plan: &plan,
                accounts: &all,
                from,
                to,
                limit: 1000,
                cursor: None,
            })
            .unwrap();
        assert!(full.next_cursor.is_none());
        assert!(full.hits.len() > 10, "{query:?}");
        let expected: Vec<_> = full
            .hits
            .iter()
            .map(|h| (h.account.clone(), h.index, h.event_time))
            .collect();
        for page_size in [1, 3, 16, 17, 1000] {
            let mut cursor: Option<String> = None;
            let mut paged = Vec::new();
            loop {
                let page = index
                    .search_positions(&SearchRequest {
                        plan: &plan,
                        accounts: &all,
                        from,
                        to,
                        limit: page_size,
                        cursor: cursor.as_deref(),
                    })
                    .unwrap();
                assert!(page.hits.iter().all(|h| h.derived.is_none()));
                paged.extend(
                    page.hits
                        .into_iter()
                        .map(|h| (h.account, h.index, h.event_time)),
                );
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            assert_eq!(paged, expected, "query {query:?}, page size {page_size}");
        }
    }
}

/// Every hit of `plan` in `[from, to)` through a walk of `limit`-hit pages.
fn walked(
    index: &trailkeep_index::EventIndex,
    plan: &trailkeep_index::Plan,
    accounts: &[String],
    from: Option<time::OffsetDateTime>,
    to: Option<time::OffsetDateTime>,
    limit: usize,
    with_derived: bool,
) -> Vec<trailkeep_index::Hit> {
    let mut walk = index
        .walk(
            &SearchRequest {
                plan,
                accounts,
                from,
                to,
                limit,
                cursor: None,
            },
            with_derived,
        )
        .unwrap();
    let mut out = Vec::new();
    while let Some(page) = walk.next_page().unwrap() {
        assert!(!page.hits.is_empty() && page.hits.len() <= limit);
        assert!(page.next_cursor.is_none());
        out.extend(page.hits);
    }
    out
}

#[test]
fn a_walk_in_time_windows_returns_what_cursor_paging_does() {
    // Uneven density: a burst of 60 events in one minute (ties), a long quiet stretch with
    // one event a day, and a second burst; three accounts, one of them not readable.
    let mut items = Vec::new();
    let mut next = std::collections::HashMap::new();
    let mut push = |account: &'static str, minutes: i64, outcome: &str| {
        let i = next.entry(account).or_insert(0u64);
        items.push((
            account,
            *i,
            event(minutes, "codeengine.job.run", outcome, json!({})),
        ));
        *i += 1;
    };
    for n in 0..60 {
        push(
            ["a", "b", "c"][n % 3],
            0,
            if n % 4 == 0 { "failure" } else { "success" },
        );
    }
    for day in 1..30 {
        push(["a", "b"][day as usize % 2], day * 24 * 60, "success");
    }
    for n in 0..45 {
        push(["a", "c"][n % 2], 40 * 24 * 60 + (n as i64 % 5), "failure");
    }
    let (_dir, index) = index_of(&items);
    let readable = accounts(&["a", "b"]);
    let t = |minutes: i64| crate::support::T0 + time::Duration::minutes(minutes);
    let ranges = [
        (None, None),
        (Some(t(0)), None),
        (None, Some(t(20 * 24 * 60))),
        (Some(t(1)), Some(t(40 * 24 * 60 + 3))),
        (Some(t(-5)), Some(t(-1))),
        (
            Some(t(0) + time::Duration::nanoseconds(1)),
            Some(t(24 * 60) + time::Duration::nanoseconds(1)),
        ),
    ];
    for query in ["", "outcome:failure", "outcome:success"] {
        let plan = plan_strict(query).unwrap();
        for (from, to) in ranges {
            let full = index
                .search(&SearchRequest {
                    plan: &plan,
                    accounts: &readable,
                    from,
                    to,
                    limit: 1000,
                    cursor: None,
                })
                .unwrap();
            assert!(full.next_cursor.is_none());
            for limit in [1, 2, 7, 30, 1000] {
                let got = walked(&index, &plan, &readable, from, to, limit, true);
                assert_eq!(
                    got, full.hits,
                    "query {query:?}, {from:?}..{to:?}, limit {limit}"
                );
                let positions = walked(&index, &plan, &readable, from, to, limit, false);
                let strip = |h: &trailkeep_index::Hit| (h.account.clone(), h.index, h.event_time);
                assert_eq!(
                    positions.iter().map(strip).collect::<Vec<_>>(),
                    full.hits.iter().map(strip).collect::<Vec<_>>()
                );
                assert!(positions.iter().all(|h| h.derived.is_none()));
            }
        }
    }
    // Nothing of account c ever shows; a walk takes no cursor.
    let plan = plan_strict("").unwrap();
    assert!(
        walked(&index, &plan, &readable, None, None, 5, false)
            .iter()
            .all(|h| h.account != "c")
    );
    let err = index.walk(
        &SearchRequest {
            plan: &plan,
            accounts: &readable,
            from: None,
            to: None,
            limit: 5,
            cursor: Some("x"),
        },
        false,
    );
    assert!(err.is_err());
}

#[test]
fn a_walk_over_an_empty_index_has_no_pages() {
    let (_dir, index) = index_of(&[]);
    let plan = plan_strict("").unwrap();
    assert!(walked(&index, &plan, &accounts(&["a"]), None, None, 10, false).is_empty());
}
