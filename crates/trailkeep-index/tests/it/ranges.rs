//! The separate time range (`from`, `to`) of searches.

use serde_json::json;
use time::Duration;
use trailkeep_index::SearchRequest;
use trailkeep_index::query::plan_strict;

use crate::support::{T0, accounts, event, index_of};

#[test]
fn from_is_inclusive_and_to_exclusive() {
    let items: Vec<_> = (0..10u64)
        .map(|i| {
            (
                "a",
                i,
                event(
                    i64::try_from(i).unwrap() * 10,
                    "x.y.z",
                    "success",
                    json!({}),
                ),
            )
        })
        .collect();
    let (_dir, index) = index_of(&items);
    let plan = plan_strict("").unwrap();
    let a = accounts(&["a"]);
    let search = |from, to| {
        let page = index
            .search(&SearchRequest {
                plan: &plan,
                accounts: &a,
                from,
                to,
                limit: 100,
                cursor: None,
            })
            .unwrap();
        page.hits.iter().map(|h| h.index).collect::<Vec<_>>()
    };
    assert_eq!(
        search(
            Some(T0 + Duration::minutes(30)),
            Some(T0 + Duration::minutes(60))
        ),
        vec![5, 4, 3]
    );
    assert_eq!(
        search(Some(T0 + Duration::minutes(31)), None),
        vec![9, 8, 7, 6, 5, 4]
    );
    assert_eq!(search(None, Some(T0 + Duration::minutes(10))), vec![0]);
    assert_eq!(
        search(
            None,
            Some(T0 + Duration::minutes(10) + Duration::nanoseconds(1))
        ),
        vec![1, 0]
    );
    assert_eq!(
        search(Some(T0 + Duration::hours(5)), None),
        Vec::<u64>::new()
    );
    assert_eq!(
        search(
            Some(T0 + Duration::minutes(60)),
            Some(T0 + Duration::minutes(30))
        ),
        Vec::<u64>::new()
    );
}

#[test]
fn events_without_a_readable_event_time_use_received_at() {
    let items = vec![(
        "a",
        0,
        json!({"action": "x.y.z", "eventTime": "not a time"}),
    )];
    let (_dir, index) = index_of(&items);
    let plan = plan_strict("").unwrap();
    let a = accounts(&["a"]);
    let page = index
        .search(&SearchRequest {
            plan: &plan,
            accounts: &a,
            from: None,
            to: None,
            limit: 1,
            cursor: None,
        })
        .unwrap();
    // index_of receives every item at T0 + 1h.
    assert_eq!(page.hits[0].event_time, T0 + Duration::hours(1));
}
