//! Counts by field and by time bucket.

use serde_json::json;
use time::Duration;
use trailkeep_index::query::{KnownField, plan_strict};
use trailkeep_index::{AggregateRequest, Histogram, IndexError, TermsRequest};

use crate::support::{T0, accounts, corpus, index_of};

#[test]
fn counts_by_field() {
    let (_dir, index) = index_of(&corpus());
    let both = accounts(&["acme", "beta"]);
    let plan = plan_strict("").unwrap();
    let by = |field, size| {
        index
            .aggregate(&AggregateRequest {
                plan: &plan,
                accounts: &both,
                from: None,
                to: None,
                terms: Some(TermsRequest { field, size }),
                histogram: None,
            })
            .unwrap()
    };
    let r = by(KnownField::Outcome, 10);
    assert_eq!(r.total, 7);
    let got: Vec<_> = r.terms.iter().map(|t| (t.key.clone(), t.count)).collect();
    assert_eq!(got, vec![(json!("failure"), 4), (json!("success"), 3)]);

    let r = by(KnownField::Action, 1);
    assert_eq!(r.terms[0].key, json!("codeengine.application.create"));
    assert_eq!(r.terms[0].count, 2);
    assert_eq!(r.other, 5);

    let r = by(KnownField::ReasonCode, 10);
    let got: Vec<_> = r.terms.iter().map(|t| (t.key.clone(), t.count)).collect();
    assert_eq!(got, vec![(json!(403), 1), (json!(404), 1), (json!(500), 1)]);
    assert_eq!(r.missing, 4);

    let r = by(KnownField::DataEvent, 10);
    let got: Vec<_> = r.terms.iter().map(|t| (t.key.clone(), t.count)).collect();
    assert_eq!(got, vec![(json!(false), 6), (json!(true), 1)]);

    let r = by(KnownField::Account, 10);
    let got: Vec<_> = r.terms.iter().map(|t| (t.key.clone(), t.count)).collect();
    assert_eq!(got, vec![(json!("acme"), 5), (json!("beta"), 2)]);

    let err = index.aggregate(&AggregateRequest {
        plan: &plan,
        accounts: &both,
        from: None,
        to: None,
        terms: Some(TermsRequest {
            field: KnownField::Message,
            size: 10,
        }),
        histogram: None,
    });
    assert!(matches!(err, Err(IndexError::InvalidRequest(_))));
}

#[test]
fn counts_by_time_bucket_with_a_query_and_range() {
    let (_dir, index) = index_of(&corpus());
    let both = accounts(&["acme", "beta"]);
    let plan = plan_strict("outcome:failure").unwrap();
    let r = index
        .aggregate(&AggregateRequest {
            plan: &plan,
            accounts: &both,
            from: Some(T0),
            to: Some(T0 + Duration::minutes(6)),
            terms: Some(TermsRequest {
                field: KnownField::Action,
                size: 2,
            }),
            histogram: Some(Histogram::Every(Duration::minutes(2))),
        })
        .unwrap();
    assert_eq!(r.total, 4);
    assert_eq!(r.interval, Some(Duration::minutes(2)));
    let got: Vec<_> = r
        .buckets
        .iter()
        .map(|b| ((b.start - T0).whole_minutes(), b.count))
        .collect();
    // failures at minutes 1, 2, 4, 5
    assert_eq!(got, vec![(0, 1), (2, 1), (4, 2)]);
    // The top 2 actions (ties by value), bucket by bucket.
    let top: Vec<_> = r.terms.iter().map(|t| t.key.clone()).collect();
    assert_eq!(
        top,
        vec![
            json!("codeengine.application.delete"),
            json!("codeengine.application.update")
        ]
    );
    let stacked: Vec<Vec<(String, u64)>> = r
        .buckets
        .iter()
        .map(|b| {
            b.terms
                .iter()
                .map(|t| (t.key.as_str().unwrap().to_string(), t.count))
                .collect()
        })
        .collect();
    assert_eq!(
        stacked,
        vec![
            vec![("codeengine.application.update".to_string(), 1)],
            vec![],
            vec![("codeengine.application.delete".to_string(), 1)],
        ]
    );

    let r = index
        .aggregate(&AggregateRequest {
            plan: &plan,
            accounts: &both,
            from: Some(T0),
            to: Some(T0 + Duration::hours(1)),
            terms: None,
            histogram: Some(Histogram::Auto),
        })
        .unwrap();
    assert_eq!(r.interval, Some(Duration::minutes(1)));
    assert_eq!(r.buckets.len(), 60);
    assert_eq!(r.buckets.iter().map(|b| b.count).sum::<u64>(), 4);

    let err = index.aggregate(&AggregateRequest {
        plan: &plan,
        accounts: &both,
        from: Some(T0),
        to: Some(T0 + Duration::days(365)),
        terms: None,
        histogram: Some(Histogram::Every(Duration::seconds(1))),
    });
    assert!(matches!(err, Err(IndexError::InvalidRequest(_))));
}
