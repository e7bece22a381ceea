//! Measures point reads of sealed records: opens a copy of a ledger directory (e.g.
//! `<data dir>/ledger` after `trailkeep bench ingest --data-dir`), reads records at random
//! (account, index) pairs spread over its sealed segments through the ledger's 32 MiB block
//! cache, and prints the time per read and the cache's effect. Segments of every version are
//! read, so the same run on directories written by different builds compares their formats.
//!
//! Usage: `cargo run --release -p trailkeep-ledger --example read_bench <ledger dir> [reads]`
//! (default 20,000 reads). The directory is copied first (opening may repair it).

use std::time::Instant;

use trailkeep_ledger::{Ledger, LedgerConfig};

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let p = e.expect("entry").path();
        let t = to.join(p.file_name().expect("name"));
        if p.is_dir() {
            copy_dir(&p, &t);
        } else {
            std::fs::copy(&p, &t).expect("copy");
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: read_bench <ledger dir> [reads]");
    let reads: usize = args.next().map_or(20_000, |n| n.parse().expect("reads"));
    let tmp = tempfile::tempdir().expect("temp dir");
    copy_dir(std::path::Path::new(&dir), tmp.path());
    let ledger = Ledger::open_dir(
        tmp.path(),
        LedgerConfig {
            checkpoint_interval: None,
            ..LedgerConfig::default()
        },
    )
    .expect("open");
    let accounts: Vec<(String, u64)> = ledger
        .accounts()
        .into_iter()
        .map(|a| {
            let n = ledger.sealed_len(&a);
            (a, n)
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    let total: u64 = accounts.iter().map(|(_, n)| n).sum();
    println!(
        "{dir}: {} accounts, {total} sealed records, {} sealed segments",
        accounts.len(),
        ledger.stats().sealed_segments
    );
    // A fixed pseudo-random sequence, so that runs over different directories read the same
    // (account, index) pairs when they hold the same records.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let picks: Vec<(usize, u64)> = (0..reads)
        .map(|_| {
            let mut k = next() % total;
            let mut a = 0;
            while k >= accounts[a].1 {
                k -= accounts[a].1;
                a += 1;
            }
            (a, k)
        })
        .collect();
    for round in ["cold", "again"] {
        let t = Instant::now();
        let mut bytes = 0usize;
        for &(a, i) in &picks {
            let r = ledger
                .read_record(&accounts[a].0, i)
                .expect("read")
                .expect("present");
            bytes += r.bytes.len();
        }
        let el = t.elapsed();
        println!(
            "{round:>5}: {reads} random reads in {:.2} s = {:.1} us/read ({bytes} bytes)",
            el.as_secs_f64(),
            el.as_secs_f64() * 1e6 / reads as f64
        );
    }
    ledger.close().expect("close");
}
