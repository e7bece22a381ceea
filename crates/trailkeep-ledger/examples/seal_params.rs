//! Measures sealing parameters on real ledger segments: for each block size, dictionary size and
//! sample size, the time to train the dictionary and to build the sealed segment, the bytes it
//! takes, and the time to decompress one block (what a point lookup pays on a cache miss).
//!
//! Usage: `cargo run --release -p trailkeep-ledger --example seal_params <sealed segment>`
//! (e.g. one of `<data dir>/ledger/seg/*.sealed` after `trailkeep bench ingest --data-dir`).

use std::time::Instant;

use trailkeep_ledger::SealOptions;
use trailkeep_ledger::segment::{self, RECORD_ENTRY_LEN};

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: seal_params <sealed segment>");
    let bytes = std::fs::read(&path).expect("read the segment");
    let idx = segment::parse_sealed(&bytes).expect("a sealed segment");
    let dict = segment::load_dictionary(&idx, &bytes).expect("its dictionary");
    let mut raws = Vec::new();
    for b in &idx.blocks {
        let c = &bytes[b.offset as usize..(b.offset + u64::from(b.compressed_len)) as usize];
        raws.push(segment::open_block_with(b, c, dict.as_ref()).expect("block"));
    }
    let mut records = Vec::new();
    for (b, raw) in idx.blocks.iter().zip(&raws) {
        records.extend(segment::block_records(b, raw).expect("records"));
    }
    let raw_len: usize = raws.iter().map(Vec::len).sum();
    let first = idx.header.first_position;
    println!(
        "{path}: version {}, {} records, {raw_len} bytes of frames, {} bytes on disk ({:.3}x)",
        idx.header.version,
        records.len(),
        bytes.len(),
        raw_len as f64 / bytes.len() as f64
    );
    let tables = records.len() * RECORD_ENTRY_LEN;
    println!("(record table: {tables} bytes, included below)");
    let run = |label: &str, opts: SealOptions| {
        let t = Instant::now();
        let trained = segment::train_dictionary(&records, &opts);
        let train_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let out =
            segment::build_sealed_with(first, &records, opts, trained.as_deref()).expect("build");
        let build_ms = t.elapsed().as_secs_f64() * 1e3;
        let idx = segment::parse_sealed(&out).expect("parse");
        let d = segment::load_dictionary(&idx, &out).expect("dictionary");
        let t = Instant::now();
        let mut n = 0usize;
        for b in idx.blocks.iter().step_by(7) {
            let c = &out[b.offset as usize..(b.offset + u64::from(b.compressed_len)) as usize];
            let _ = segment::open_block_with(b, c, d.as_ref()).expect("block");
            n += 1;
        }
        let block_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        println!(
            "{label:<44} dict {:>6} B  train {train_ms:>6.1} ms  compress {build_ms:>6.1} ms  \
             {:>9} B ({:.3}x, {:.1} B/record)  {block_us:>6.1} us/block",
            trained.as_ref().map_or(0, Vec::len),
            out.len(),
            raw_len as f64 / out.len() as f64,
            out.len() as f64 / records.len() as f64,
        );
    };
    let base = SealOptions::default();
    run(
        "256 KiB blocks, no dictionary (segment v1/v2)",
        SealOptions {
            block_target: 256 * 1024,
            dict_max_bytes: 0,
            ..base
        },
    );
    run(
        "32 KiB blocks, no dictionary",
        SealOptions {
            dict_max_bytes: 0,
            ..base
        },
    );
    for block in [16usize, 32, 64] {
        for (dict, sample) in [
            (32usize, 512usize),
            (64, 512),
            (64, 1024),
            (110, 1024),
            (64, 2048),
            (110, 4096),
        ] {
            run(
                &format!("{block} KiB blocks, {dict} KiB dict from {sample} KiB"),
                SealOptions {
                    block_target: block * 1024,
                    dict_max_bytes: dict * 1024,
                    dict_sample_bytes: sample * 1024,
                    ..base
                },
            );
        }
    }
    for level in [2, 3] {
        run(
            &format!("32 KiB blocks, 64 KiB dict from 1 MiB, level {level}"),
            SealOptions {
                zstd_level: level,
                ..base
            },
        );
    }
}
