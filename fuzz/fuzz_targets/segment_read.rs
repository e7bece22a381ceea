#![no_main]
//! Arbitrary bytes as on-disk ledger data: segment headers, frames, sealed segments (footer,
//! tables, dictionary, blocks), metadata, checkpoints and checkpoint chunks, tile paths, and full recovery + verification of a data
//! directory whose segment holds the bytes. Must never panic; every refusal is a positioned error.

use std::sync::Arc;

use trailkeep_ledger::segment::{self, SegmentKind};
use trailkeep_ledger::{
    Checkpoint, KeySource, Ledger, LedgerConfig, MemStorage, NoteSigner, Storage, decode_meta, frame,
    tiles, verify,
};

fn read_sealed(data: &[u8]) {
    let Ok(idx) = segment::parse_sealed(data) else { return };
    // Version 3: the segment's own dictionary (a damaged one is an error, then every block is
    // also tried without it).
    let dict = segment::load_dictionary(&idx, data).ok().flatten();
    for b in &idx.blocks {
        let start = b.offset as usize;
        let Some(compressed) = data.get(start..start + b.compressed_len as usize) else { continue };
        if let Ok(raw) = segment::open_block_with(b, compressed, dict.as_ref()) {
            let _ = segment::block_records(b, &raw);
        }
        if dict.is_some()
            && let Ok(raw) = segment::open_block(b, compressed)
        {
            let _ = segment::block_records(b, &raw);
        }
    }
}

fn recover(data: &[u8], kind: SegmentKind) {
    let storage = MemStorage::new();
    let _ = storage.put(trailkeep_ledger::META_NAME, &trailkeep_ledger::encode_meta(1));
    let name = match kind {
        SegmentKind::Plain => segment::plain_name(0),
        SegmentKind::Sealed => segment::sealed_name(0),
    };
    let _ = storage.append(&name, data);
    let _ = storage.sync(&name);
    let _ = verify::verify_storage(&storage, &Default::default(), |_| {});
    let config = LedgerConfig {
        key: KeySource::Seed([1; 32]),
        checkpoint_interval: None,
        background_sealing: false,
        ..LedgerConfig::default()
    };
    if let Ok(ledger) = Ledger::open(Arc::new(storage.clone()) as Arc<dyn Storage>, config) {
        for account in ledger.accounts() {
            for r in ledger.iter_account(&account, 0).take(64) {
                let _ = r;
            }
        }
        let _ = ledger.read_position(0);
        let _ = ledger.close();
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 6 {
        0 => {
            let _ = segment::scan_plain(rest);
            let mut off = 0;
            while let Ok((_, n)) = frame::decode_frame(&rest[off..]) {
                off += n;
            }
        }
        1 => read_sealed(rest),
        2 => recover(rest, SegmentKind::Plain),
        3 => recover(rest, SegmentKind::Sealed),
        4 => {
            let _ = decode_meta(rest);
            let _ = segment::decode_header(rest);
            let _ = segment::decode_footer(rest, rest.len() as u64);
        }
        _ => {
            let _ = trailkeep_ledger::history::parse(rest);
            let text = String::from_utf8_lossy(rest);
            let _ = Checkpoint::parse(&text);
            let _ = tiles::parse_tile_path(&text);
            let _ = trailkeep_ledger::NoteVerifier::parse(&text);
            let _ = NoteSigner::from_private_string(&text);
            if let Ok(s) = NoteSigner::from_seed("fuzz", [2; 32]) {
                let _ = s.verifier().open(&text);
            }
        }
    }
});
