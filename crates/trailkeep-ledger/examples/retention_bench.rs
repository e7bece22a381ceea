//! Measures retention: the time to remove the bodies of one account's records from sealed
//! segments that interleave two accounts, and what it frees; then verifies the directory.
//!
//! Usage: `cargo run --release -p trailkeep-ledger --example retention_bench [records]`
//! (default 100,000 records of about 700 bytes, half of them removed).

use std::time::Instant;

use trailkeep_ledger::{Ledger, LedgerConfig, retention, verify};

/// About 700 bytes, compressing about as well as real audit events (ids and hashes do not
/// compress, field names and repeated values do).
fn payload(n: u64) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let h = |k: u64| -> String {
        Sha256::digest((n * 31 + k).to_le_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    format!(
        "{{\"action\":\"kms.secrets.rotate\",\"id\":\"{}\",\"correlationId\":\"{}\",\
         \"eventTime\":\"2026-11-20T10:{:02}:{:02}.5+00:00\",\"initiator\":{{\"id\":\"IBMid-{}\",\
         \"name\":\"user{}@example.com\",\"typeURI\":\"service/security/account/user\",\
         \"host\":{{\"address\":\"10.0.{}.{}\"}}}},\"target\":{{\"id\":\"crn:v1:bluemix:public:kms:\
         us-south:a/acct:{}:key:{}\",\"name\":\"key-{n}\",\"typeURI\":\"kms/secrets\"}},\
         \"outcome\":\"success\",\"severity\":\"normal\",\"requestData\":{{\"keyVersion\":\"{}\",\
         \"rotation\":{}}},\"message\":\"Key Protect: rotate secrets key-{n}\"}}",
        &h(1)[..32],
        &h(2)[..36],
        n / 60 % 60,
        n % 60,
        n % 9973,
        n % 977,
        n % 256,
        n / 256 % 256,
        &h(3)[..16],
        &h(4)[..32],
        &h(5)[..40],
        n % 17
    )
    .into_bytes()
}

fn dir_size(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        total += if m.is_dir() {
            dir_size(&e.path())
        } else {
            m.len()
        };
    }
    total
}

fn main() {
    let records: u64 = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("a number of records"))
        .unwrap_or(100_000);
    let tmp = tempfile::tempdir().unwrap();
    let config = || LedgerConfig {
        origin: "trailkeep.bench".into(),
        segment_target_bytes: 16 * 1024 * 1024,
        ..LedgerConfig::default()
    };
    let ledger = Ledger::open_dir(tmp.path(), config()).unwrap();
    let started = Instant::now();
    for chunk in (0..records).collect::<Vec<_>>().chunks(1000) {
        let batch = chunk
            .iter()
            .map(|&n| {
                (
                    if n % 2 == 0 { "acme" } else { "globex" }.to_string(),
                    payload(n),
                )
            })
            .collect();
        ledger.append(batch).unwrap();
    }
    ledger.rotate().unwrap();
    let half = records / 2;
    while ledger.sealed_len("acme") < half {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    println!(
        "appended {records} records in {:.2} s; segments {} (sealed {})",
        started.elapsed().as_secs_f64(),
        ledger.stats().segments,
        ledger.stats().sealed_segments
    );
    let before = dir_size(&tmp.path().join("seg"));
    let statement = format!(
        r#"{{"action":"{}","requestData":{{"retention":{{"from":0,"to":{half}}}}}}}"#,
        retention::ACTION
    );
    let by = ledger
        .append(vec![("acme".into(), statement.into_bytes())])
        .unwrap()[0]
        .index;
    let started = Instant::now();
    let removal = ledger.remove_bodies("acme", half, by).unwrap();
    let took = started.elapsed().as_secs_f64();
    let after = dir_size(&tmp.path().join("seg"));
    println!(
        "removed {} bodies ({:.1} MB of data) in {:.2} s: {:.0} records/s, {} segments rewritten; \
         segments {:.1} MB -> {:.1} MB",
        removal.to - removal.from,
        removal.bytes as f64 / 1e6,
        took,
        (removal.to - removal.from) as f64 / took,
        removal.segments,
        before as f64 / 1e6,
        after as f64 / 1e6
    );
    ledger.close().unwrap();
    let started = Instant::now();
    let report = verify::verify_data_dir(tmp.path(), |_| {}).unwrap();
    println!(
        "verify: {} in {:.2} s",
        report.summary(),
        started.elapsed().as_secs_f64()
    );
    assert!(report.is_ok(), "{report}");
}
