//! The checked-in index of each format version still opens and answers the same way.
//!
//! `tests/fixtures/index-v<FORMAT_VERSION>/` holds the corpus of `support::corpus()` indexed by
//! the build that introduced that version. If this test fails, what is indexed changed: bump
//! `FORMAT_VERSION` (old indexes are then rebuilt from the ledger) and write the new fixture with
//! `TRAILKEEP_WRITE_FIXTURE=1 cargo test -p trailkeep-index --test it format`.

use std::path::{Path, PathBuf};

use trailkeep_index::{DerivedFields, EventIndex, FORMAT_VERSION, WriterOptions};

use crate::support::{T0, accounts, corpus, hits};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/fixtures/index-v{FORMAT_VERSION}"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn the_fixture_of_the_current_format_opens_and_answers() {
    let dir = fixture_dir();
    if std::env::var_os("TRAILKEEP_WRITE_FIXTURE").is_some() {
        let _ = std::fs::remove_dir_all(&dir);
        let index = EventIndex::open(&dir).unwrap();
        let mut w = index.writer(WriterOptions::default()).unwrap();
        let scopes = [
            "crn:v1:bluemix:public:codeengine:us-south:a/acc1:proj1:application:web".to_string(),
            "crn:v1:bluemix:public:codeengine:us-south:a/acc1:proj1::".to_string(),
        ];
        let derived = DerivedFields {
            class: "create",
            description: "Created application 'web-app' in project 'proj1'",
            scopes: &scopes,
        };
        for (account, i, e) in corpus() {
            // Since version 2 documents carry derived fields; the first one has them.
            let d = (account == "acme" && i == 0).then_some(&derived);
            w.add_derived(account, i, T0, &e, d).unwrap();
        }
        w.commit().unwrap();
        w.finish().unwrap();
        drop(index);
        for lock in [".tantivy-writer.lock", ".tantivy-meta.lock"] {
            let _ = std::fs::remove_file(dir.join(lock));
        }
    }
    let tmp = tempfile::TempDir::new().unwrap();
    copy_dir(&dir, tmp.path());
    let index = EventIndex::open(tmp.path()).unwrap();
    let both = accounts(&["acme", "beta"]);
    assert_eq!(index.num_events(), 7);
    assert_eq!(index.committed_positions().unwrap().get("acme"), Some(&4));
    assert_eq!(
        hits(&index, "correlationId:corr-1", &both),
        ["acme/1", "beta/0", "acme/0"]
    );
    assert_eq!(hits(&index, "\"disk full\"", &both), ["beta/1", "acme/2"]);
    assert_eq!(
        hits(&index, "reason.reasonCode:[400 TO 499]", &both),
        ["beta/1", "acme/1"]
    );
    assert_eq!(
        hits(&index, "requestData.name:web*", &both),
        ["acme/1", "beta/0", "acme/0"]
    );
    assert_eq!(
        hits(
            &index,
            "requestData.description:\"Nightly batch job that compacts the audit archive\"",
            &both
        ),
        ["acme/2"]
    );
    assert_eq!(
        hits(&index, "eventTime>=2026-03-01T12:03:00Z", &both),
        ["beta/1", "acme/4", "acme/3"]
    );
    assert_eq!(hits(&index, "class:create", &both), ["acme/0"]);
    assert_eq!(
        index.derived("acme", 0).unwrap(),
        Some((
            "create".to_string(),
            "Created application 'web-app' in project 'proj1'".to_string()
        ))
    );
    assert_eq!(index.derived("acme", 1).unwrap(), None);
    assert_eq!(index.derived("beta", 0).unwrap(), None);
    assert_eq!(
        hits(&index, "description:\"application 'web-app'\"", &both),
        ["acme/0"]
    );
    assert_eq!(
        hits(
            &index,
            "scope:\"crn:v1:bluemix:public:codeengine:us-south:a/acc1:proj1::\"",
            &both
        ),
        ["acme/0"]
    );
    assert_eq!(hits(&index, "\"web-app in project\"", &both), ["acme/0"]);
}
