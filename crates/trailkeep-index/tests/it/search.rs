//! Every query-language construct, end to end against a real index.

use crate::support::{RECEIVED_AT, accounts, corpus, hits, index_of};

/// Runs each query over the corpus (both accounts) and compares the hits, newest first. The
/// in-memory matcher (used by alerts) must agree with the index on every item.
fn check(cases: &[(&str, &[&str])]) {
    let items = corpus();
    let (_dir, index) = index_of(&items);
    let all = accounts(&["acme", "beta"]);
    let mut failures = Vec::new();
    for (query, expected) in cases {
        let got = hits(&index, query, &all);
        if got != *expected {
            failures.push(format!(
                "{query}\n  expected {expected:?}\n  got      {got:?}"
            ));
        }
        let plan = trailkeep_index::query::plan_strict(query).unwrap();
        for (account, i, event) in &items {
            let item = trailkeep_index::MatchItem {
                account,
                index: *i,
                received_at_nanos: i64::try_from(RECEIVED_AT.unix_timestamp_nanos()).unwrap(),
                event,
            };
            let in_memory = trailkeep_index::matches(&plan, &item);
            let indexed = got.contains(&format!("{account}/{i}"));
            if in_memory != indexed {
                failures.push(format!(
                    "{query}: the matcher says {in_memory} for {account}/{i}, the index {indexed}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn match_all_and_full_text() {
    check(&[
        (
            "",
            &[
                "beta/1", "acme/4", "acme/3", "acme/2", "acme/1", "beta/0", "acme/0",
            ],
        ),
        (
            "*",
            &[
                "beta/1", "acme/4", "acme/3", "acme/2", "acme/1", "beta/0", "acme/0",
            ],
        ),
        // Bare words: message, reason text, action words; case-insensitive.
        ("disk", &["beta/1", "acme/2"]),
        ("DISK", &["beta/1", "acme/2"]),
        ("\"disk full\"", &["beta/1", "acme/2"]),
        ("\"full disk\"", &[]),
        ("writer", &["acme/1"]),
        ("rotate", &["acme/4"]),
        ("quot*", &["acme/4"]),
        ("disk node", &["acme/2"]),
        ("nosuchword", &[]),
    ]);
}

#[test]
fn keyword_fields_exact_and_prefix() {
    check(&[
        ("outcome:failure", &["beta/1", "acme/4", "acme/2", "acme/1"]),
        ("outcome:FAILURE", &["beta/1", "acme/4", "acme/2", "acme/1"]),
        ("severity:critical", &["acme/2"]),
        ("correlationId:corr-1", &["acme/1", "beta/0", "acme/0"]),
        ("id:\"evt-2-codeengine.job.run\"", &["acme/2"]),
        (
            "action:codeengine.application.create",
            &["beta/0", "acme/0"],
        ),
        (
            "action:codeengine.app*",
            &["beta/1", "acme/1", "beta/0", "acme/0"],
        ),
        (
            "action:codeengine.*",
            &["beta/1", "acme/2", "acme/1", "beta/0", "acme/0"],
        ),
        (
            "target.id:\"crn:v1:bluemix:public:container-registry:us-south:a/acc1::image:ns1/app\"",
            &["acme/3"],
        ),
        (
            "target.id:crn:v1:bluemix:public:container-registry*",
            &["acme/3"],
        ),
        (
            "initiator.id:IBMid-100",
            &[
                "beta/1", "acme/4", "acme/3", "acme/2", "acme/1", "beta/0", "acme/0",
            ],
        ),
        ("logSourceCRN:*", &["acme/3"]),
        ("account:beta", &["beta/1", "beta/0"]),
        ("dataEvent:true", &["acme/3"]),
        ("message:rotate", &["acme/4"]),
        ("message:\"key quota\"", &["acme/4"]),
        ("reason.reasonForFailure:disk", &["beta/1", "acme/2"]),
        (
            "reason.reasonForFailure:*",
            &["beta/1", "acme/4", "acme/2", "acme/1"],
        ),
        ("correlationId:*", &["acme/1", "beta/0", "acme/0"]),
    ]);
}

#[test]
fn dotted_paths_of_other_fields() {
    check(&[
        ("requestData.name:web-app", &["beta/0", "acme/0"]),
        ("requestData.name:\"web-api\"", &["acme/1"]),
        ("requestData.name:web*", &["acme/1", "beta/0", "acme/0"]),
        ("requestData.replicas:3", &["acme/0"]),
        ("requestData.labels.app.kubernetes.io/name:web", &["acme/0"]),
        ("requestData.env.MODE:fast", &["acme/2"]),
        ("requestData.env:*", &["acme/2"]),
        ("requestData:*", &["acme/2", "acme/1", "beta/0", "acme/0"]),
        (
            "initiator.name:\"Jane Doe\"",
            &[
                "beta/1", "acme/4", "acme/3", "acme/2", "acme/1", "beta/0", "acme/0",
            ],
        ),
        ("target.name:ns1/app", &["acme/3"]),
        ("reason.reasonType:Forbidden", &["acme/1"]),
        ("reason.reasonCode:ERR_QUOTA", &["acme/4"]),
        ("reason.reasonCode:ERR*", &["acme/4"]),
        ("requestData.nosuch:x", &[]),
        // Long values are indexed by hash: exact matches only.
        (
            "requestData.description:\"Nightly batch job that compacts the audit archive\"",
            &["acme/2"],
        ),
        (
            "requestData.description:\"Nightly batch job that compacts the audit\"",
            &[],
        ),
        ("requestData.description:Nightly*", &[]),
        ("requestData.description:*", &["acme/2"]),
    ]);
}

#[test]
fn ranges_and_comparisons() {
    check(&[
        ("reason.reasonCode:403", &["acme/1"]),
        ("reason.reasonCode:[400 TO 499]", &["beta/1", "acme/1"]),
        ("reason.reasonCode:{403 TO 499]", &["beta/1"]),
        ("reason.reasonCode:[400 TO 404}", &["acme/1"]),
        ("reason.reasonCode:[500 TO *]", &["acme/2"]),
        ("reason.reasonCode>=500", &["acme/2"]),
        ("reason.reasonCode>403", &["beta/1", "acme/2"]),
        ("reason.reasonCode<404", &["acme/1"]),
        ("reason.reasonCode<=404", &["beta/1", "acme/1"]),
        ("reason.reasonCode:*", &["beta/1", "acme/2", "acme/1"]),
        ("index:1", &["beta/1", "acme/1"]),
        ("index:[2 TO 3]", &["acme/3", "acme/2"]),
        ("index>=3", &["acme/4", "acme/3"]),
        (
            "eventTime>=2026-03-01T12:03:00Z",
            &["beta/1", "acme/4", "acme/3"],
        ),
        ("eventTime>2026-03-01T12:03:00Z", &["beta/1", "acme/4"]),
        ("eventTime<2026-03-01T12:01:00+00:00", &["beta/0", "acme/0"]),
        (
            "eventTime:[2026-03-01T12:01:00Z TO 2026-03-01T12:02:00Z]",
            &["acme/2", "acme/1"],
        ),
        (
            "eventTime:2026-03-01",
            &[
                "beta/1", "acme/4", "acme/3", "acme/2", "acme/1", "beta/0", "acme/0",
            ],
        ),
        ("eventTime:2026-03-02", &[]),
        ("eventTime>2026-03-01", &[]),
        (
            "receivedAt>=2026-03-01T13:00:00Z",
            &[
                "beta/1", "acme/4", "acme/3", "acme/2", "acme/1", "beta/0", "acme/0",
            ],
        ),
        ("receivedAt<2026-03-01T13:00:00Z", &[]),
    ]);
}

#[test]
fn boolean_operators() {
    check(&[
        (
            "outcome:failure AND action:codeengine.app*",
            &["beta/1", "acme/1"],
        ),
        (
            "outcome:failure action:codeengine.app*",
            &["beta/1", "acme/1"],
        ),
        (
            "+outcome:failure +action:codeengine.app*",
            &["beta/1", "acme/1"],
        ),
        ("severity:critical OR dataEvent:true", &["acme/3", "acme/2"]),
        (
            "-severity:normal",
            &["beta/1", "acme/4", "acme/2", "acme/1"],
        ),
        (
            "NOT severity:normal",
            &["beta/1", "acme/4", "acme/2", "acme/1"],
        ),
        (
            "outcome:failure AND NOT account:beta",
            &["acme/4", "acme/2", "acme/1"],
        ),
        ("(disk OR writer) AND account:acme", &["acme/2", "acme/1"]),
        ("disk OR writer AND account:beta", &["beta/1", "acme/2"]),
        (
            "NOT (outcome:success OR severity:critical)",
            &["beta/1", "acme/4", "acme/1"],
        ),
        (
            "-outcome:success -severity:critical",
            &["beta/1", "acme/4", "acme/1"],
        ),
        ("action:(codeengine.job* OR kms*)", &["acme/4", "acme/2"]),
        (
            "reason.reasonCode:([400 TO 403] OR >=500)",
            &["acme/2", "acme/1"],
        ),
        ("NOT NOT dataEvent:true", &["acme/3"]),
    ]);
}
