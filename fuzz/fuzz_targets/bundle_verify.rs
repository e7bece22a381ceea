#![no_main]
//! Arbitrary bytes as an evidence bundle (`trailkeep verify --bundle`): the line reader with its
//! length limit, entry parsing, checkpoint and trailer signatures, proof decoding and checking.
//! Must never panic; every refusal is a problem with its line. The seed corpus
//! (`corpus-seeds/bundle_verify`) holds a genuine bundle, so mutations reach the deep checks.

use libfuzzer_sys::fuzz_target;
use trailkeep_export::bundle::{parse_entry, verify};
use trailkeep_ledger::NoteSigner;

fuzz_target!(|data: &[u8]| {
    // With the key the bundle names, and with a pinned key that signed nothing here.
    let _ = verify(data, None);
    let pinned = NoteSigner::from_seed("fuzz.example/log", [9; 32]).unwrap().verifier();
    let _ = verify(data, Some(&pinned));
    for line in data.split(|&b| b == b'\n').take(4) {
        let _ = parse_entry(line);
    }
});
