//! Appends to a ledger directory forever, printing one line per acknowledged record
//! (`<account> <index> <n>`), so that a test can `kill -9` it mid-append and check that every
//! printed record survived. Record `n` holds [`payload`]`(n)`.
//!
//! Usage: `crash_writer <data-dir>`

use std::io::Write;
use std::time::Duration;

use trailkeep_ledger::{Ledger, LedgerConfig, SealOptions};

/// The bytes of record `n` (the test rebuilds them the same way).
fn payload(n: u64) -> Vec<u8> {
    format!(
        "{{\"action\":\"kms.secrets.rotate\",\"n\":{n},\"pad\":\"{}\"}}",
        "x".repeat((n % 700) as usize)
    )
    .into_bytes()
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .expect("usage: crash_writer <data-dir>");
    let ledger = Ledger::open_dir(
        &dir,
        LedgerConfig {
            origin: "trailkeep.test".into(),
            segment_target_bytes: 256 * 1024,
            seal: SealOptions {
                block_target: 16 * 1024,
                zstd_level: 3,
                // Small enough that these small segments get a dictionary.
                dict_max_bytes: 4096,
                dict_sample_bytes: 64 * 1024,
            },
            checkpoint_interval: Some(Duration::from_millis(20)),
            ..LedgerConfig::default()
        },
    )
    .expect("open ledger");
    let stdout = std::io::stdout();
    let mut n = 0u64;
    loop {
        let batch: Vec<(String, Vec<u8>)> = (0..50)
            .map(|k| {
                let m = n + k;
                (
                    if m % 3 == 1 { "globex" } else { "acme" }.to_string(),
                    payload(m),
                )
            })
            .collect();
        let acks = ledger.append(batch).expect("append");
        let mut out = stdout.lock();
        for (k, a) in acks.iter().enumerate() {
            writeln!(out, "{} {} {}", a.account, a.index, n + k as u64).expect("stdout");
        }
        out.flush().expect("flush");
        n += 50;
    }
}
