//! A search or aggregation limited to {A} never sees B's events, whatever the query or cursor.

use trailkeep_index::query::plan_strict;
use trailkeep_index::{AggregateRequest, EventIndex, IndexError, SearchRequest, TermsRequest};

use crate::support::{accounts, corpus, hits, index_of};

const QUERIES: &[&str] = &[
    "",
    "*",
    "account:beta",
    "account:beta OR account:acme",
    "NOT account:acme",
    "-account:acme",
    "correlationId:corr-1",
    "disk",
    "account:*",
    "index:[0 TO *]",
    "requestData.name:web-app",
];

#[test]
fn a_tenant_never_sees_another_whatever_the_query() {
    let (_dir, index) = index_of(&corpus());
    let only_acme = accounts(&["acme"]);
    for q in QUERIES {
        for hit in hits(&index, q, &only_acme) {
            assert!(hit.starts_with("acme/"), "{q} leaked {hit}");
        }
    }
    assert!(hits(&index, "account:beta", &only_acme).is_empty());
    assert!(hits(&index, "NOT account:acme", &only_acme).is_empty());
}

#[test]
fn a_cursor_from_another_tenant_does_not_widen_the_filter() {
    let (_dir, index) = index_of(&corpus());
    let plan = plan_strict("").unwrap();
    let both = accounts(&["acme", "beta"]);
    // A cursor made while paging both accounts, then used by a caller who may read only acme.
    let page = index
        .search(&SearchRequest {
            plan: &plan,
            accounts: &both,
            from: None,
            to: None,
            limit: 1,
            cursor: None,
        })
        .unwrap();
    assert_eq!(page.hits[0].account, "beta");
    let cursor = page.next_cursor.unwrap();
    let only_acme = accounts(&["acme"]);
    let mut cursor = Some(cursor);
    let mut seen = Vec::new();
    while let Some(c) = cursor {
        let page = index
            .search(&SearchRequest {
                plan: &plan,
                accounts: &only_acme,
                from: None,
                to: None,
                limit: 2,
                cursor: Some(&c),
            })
            .unwrap();
        seen.extend(page.hits.iter().map(|h| h.account.clone()));
        cursor = page.next_cursor;
    }
    assert!(!seen.is_empty());
    assert!(seen.iter().all(|a| a == "acme"), "{seen:?}");
}

#[test]
fn an_empty_account_set_is_an_error_not_everything() {
    let (_dir, index) = index_of(&corpus());
    let plan = plan_strict("").unwrap();
    let none: Vec<String> = Vec::new();
    let err = index.search(&SearchRequest {
        plan: &plan,
        accounts: &none,
        from: None,
        to: None,
        limit: 10,
        cursor: None,
    });
    assert!(matches!(err, Err(IndexError::NoAccounts)));
    let err = index.aggregate(&AggregateRequest {
        plan: &plan,
        accounts: &none,
        from: None,
        to: None,
        terms: None,
        histogram: None,
    });
    assert!(matches!(err, Err(IndexError::NoAccounts)));
}

#[test]
fn aggregations_count_only_the_callers_accounts() {
    let (_dir, index) = index_of(&corpus());
    let only_beta = accounts(&["beta"]);
    for q in QUERIES {
        let plan = plan_strict(q).unwrap();
        let r = index
            .aggregate(&AggregateRequest {
                plan: &plan,
                accounts: &only_beta,
                from: None,
                to: None,
                terms: Some(TermsRequest {
                    field: trailkeep_index::query::KnownField::Account,
                    size: 10,
                }),
                histogram: None,
            })
            .unwrap();
        for t in &r.terms {
            assert_eq!(t.key, "beta", "{q}");
        }
        assert!(r.total <= 2, "{q}: {}", r.total);
    }
}

#[test]
fn unknown_accounts_see_nothing() {
    let (_dir, index): (_, EventIndex) = index_of(&corpus());
    assert!(hits(&index, "", &accounts(&["gamma"])).is_empty());
    assert!(hits(&index, "", &accounts(&["acm"])).is_empty());
    assert!(hits(&index, "", &accounts(&["acme*"])).is_empty());
}

#[test]
fn an_open_histogram_range_does_not_reveal_other_tenants_time_extent() {
    use serde_json::json;
    use trailkeep_index::Histogram;

    let mut items = corpus();
    items.push((
        "acme",
        5,
        json!({"action": "x.y.z", "eventTime": "2020-01-01T00:00:00+00:00"}),
    ));
    let (_dir, index) = index_of(&items);
    let plan = plan_strict("").unwrap();
    let only_beta = accounts(&["beta"]);
    let r = index
        .aggregate(&AggregateRequest {
            plan: &plan,
            accounts: &only_beta,
            from: None,
            to: None,
            terms: None,
            histogram: Some(Histogram::Auto),
        })
        .unwrap();
    assert_eq!(r.total, 2);
    let first = r.buckets.first().unwrap().start;
    assert!(first.year() == 2026, "buckets start at {first}");
    assert!(first >= crate::support::T0, "buckets start at {first}");
    assert_eq!(r.buckets.iter().map(|b| b.count).sum::<u64>(), 2);
}

/// The account filter is left out of the tantivy query when it would exclude nothing, and kept
/// (as terms, or as a term set beyond 16 accounts) otherwise: every shape sees exactly its
/// accounts.
#[test]
fn every_shape_of_account_set_sees_exactly_its_accounts() {
    let (_dir, index) = index_of(&corpus());
    let everyone = accounts(&["acme", "beta"]);
    let all_hits = hits(&index, "", &everyone);
    assert!(all_hits.iter().any(|h| h.starts_with("acme/")));
    assert!(all_hits.iter().any(|h| h.starts_with("beta/")));
    // Many names, beta not among them: the term-set filter.
    let mut many: Vec<String> = (0..20).map(|i| format!("other-{i}")).collect();
    many.push("acme".into());
    for q in QUERIES {
        let seen = hits(&index, q, &many);
        assert!(
            seen.iter().all(|h| h.starts_with("acme/")),
            "{q} leaked {seen:?}"
        );
        assert_eq!(seen, hits(&index, q, &accounts(&["acme"])), "{q}");
        // Every account and more: no filter in the query, the same hits as the union.
        let mut all_and_more = many.clone();
        all_and_more.push("beta".into());
        let mut union = hits(&index, q, &accounts(&["acme"]));
        union.extend(hits(&index, q, &accounts(&["beta"])));
        let mut seen = hits(&index, q, &all_and_more);
        union.sort();
        seen.sort();
        assert_eq!(seen, union, "{q}");
    }
}
