//! What `bench/compare` relies on (issue #12): a corpus that is the same bytes for the same
//! (N, seed, end), replayed by `bench ingest --corpus`, and `bench query --params`, whose result
//! counts must equal the counts taken from the corpus itself.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::text;

fn run(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_trailkeep"))
        .args(args)
        .current_dir(dir)
        .env_remove("TRAILKEEP_KEY")
        .env_remove("TRAILKEEP_BENCH_URL")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .unwrap()
        .format(&Rfc3339)
        .unwrap()
}

#[test]
fn a_replayed_corpus_answers_given_queries_with_the_corpus_counts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let end = OffsetDateTime::now_utc().unix_timestamp();
    let end_arg = end.to_string();
    let corpus_args = [
        "bench", "corpus", "--events", "1500", "--seed", "3", "--end", &end_arg, "--out",
    ];
    let mut args = corpus_args.to_vec();
    args.push("a.ndjson");
    let out = run(d, &args);
    let summary = text(&out.stderr);
    assert!(
        summary.contains("corpus: 1500 events") && summary.contains("zstd -3 ratio"),
        "{summary}"
    );
    let mut args = corpus_args.to_vec();
    args.push("b.ndjson");
    run(d, &args);
    let corpus = std::fs::read(d.join("a.ndjson")).unwrap();
    assert_eq!(
        corpus,
        std::fs::read(d.join("b.ndjson")).unwrap(),
        "same N, seed and end: same bytes"
    );

    // The values and the counts they must give, from the corpus.
    let events: Vec<Value> = corpus
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    let time_of = |e: &Value| {
        OffsetDateTime::parse(e["eventTime"].as_str().unwrap(), &Rfc3339)
            .unwrap()
            .unix_timestamp()
    };
    let account_of = |e: &Value| {
        e["logSourceCRN"]
            .as_str()
            .unwrap()
            .split(':')
            .nth(6)
            .unwrap()[2..]
            .to_string()
    };
    let failures_from = end - 86_400;
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| e["outcome"] == "failure" && time_of(e) >= failures_from)
    {
        *failures.entry(account_of(e)).or_default() += 1;
    }
    let (account, account_failures) = failures.into_iter().max_by_key(|(_, n)| *n).unwrap();
    let correlations: Vec<String> = events
        .iter()
        .step_by(97)
        .map(|e| e["correlationId"].as_str().unwrap().to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let targets: Vec<String> = events
        .iter()
        .step_by(89)
        .map(|e| e["target"]["id"].as_str().unwrap().to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let words = ["expired", "unavailable"];
    let count = |pred: &dyn Fn(&Value) -> bool| events.iter().filter(|e| pred(e)).count().min(100);
    let expected = [
        correlations
            .iter()
            .map(|c| count(&|e| e["correlationId"] == c.as_str()))
            .sum::<usize>(),
        targets
            .iter()
            .map(|t| count(&|e| e["target"]["id"] == t.as_str()))
            .sum(),
        account_failures.min(100),
        words
            .iter()
            .map(|w| {
                count(&|e| {
                    e["reason"]["reasonForFailure"]
                        .as_str()
                        .unwrap_or("")
                        .to_lowercase()
                        .split(|c: char| !c.is_alphanumeric())
                        .any(|x| x == *w)
                })
            })
            .sum(),
        events.len(),
    ];
    assert!(expected[3] > 0, "the corpus has failures with these words");
    let params = json!({
        "from": rfc3339(end - 8 * 86_400),
        "to": rfc3339(end + 3_600),
        "failures_from": rfc3339(failures_from),
        "counts_from": rfc3339(end - 7 * 86_400),
        "correlation_ids": correlations,
        "target_ids": targets,
        "account": account,
        "words": words,
    });
    std::fs::write(d.join("params.json"), params.to_string()).unwrap();

    run(
        d,
        &[
            "bench",
            "ingest",
            "--corpus",
            "a.ndjson",
            "--connections",
            "2",
            "--data-dir",
            "data",
            "--json",
            "ingest.json",
        ],
    );
    let ingest: Value =
        serde_json::from_slice(&std::fs::read(d.join("ingest.json")).unwrap()).unwrap();
    assert_eq!(ingest["events"], 1500, "{ingest}");
    assert_eq!(ingest["indexed"], true, "{ingest}");
    assert!(ingest["events_per_s"].as_f64().unwrap() > 0.0, "{ingest}");
    assert!(
        ingest["bytes_per_event"].as_f64().unwrap() > 100.0,
        "{ingest}"
    );

    let out = run(
        d,
        &[
            "bench",
            "query",
            "--data-dir",
            "data",
            "--params",
            "params.json",
            "--iterations",
            "3",
            "--json",
            "query.json",
        ],
    );
    let report: Value =
        serde_json::from_slice(&std::fs::read(d.join("query.json")).unwrap()).unwrap();
    let got: Vec<usize> = report["queries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            assert!(q["p99_ms"].as_f64().unwrap() > 0.0, "{q}");
            q["hits"].as_u64().unwrap() as usize
        })
        .collect();
    assert_eq!(got, expected, "{report}\n{}", text(&out.stdout));
}
