//! The export's lazy field scan (`trailkeep_export::scan::members`) on arbitrary bytes: it never
//! panics, and whatever it finds in a text that serde reads as an object is what serde reads
//! there (an error is fine: callers then parse with serde).
#![no_main]

use libfuzzer_sys::fuzz_target;
use trailkeep_export::scan;

const WANTED: [&str; 3] = ["target", "targetId", "action"];

fuzz_target!(|data: &[u8]| {
    let mut found: [Option<std::ops::Range<usize>>; 3] = Default::default();
    let scanned = scan::members(data, &WANTED, &mut found);
    let Ok(serde_json::Value::Object(object)) = serde_json::from_slice(data) else {
        return;
    };
    if scanned.is_err() {
        return;
    }
    for (name, range) in WANTED.iter().zip(&found) {
        match (object.get(*name), range) {
            (Some(value), Some(range)) => {
                let scanned: serde_json::Value = serde_json::from_slice(&data[range.clone()])
                    .expect("a range the scan found is one JSON value");
                assert_eq!(&scanned, value, "member {name}");
            }
            (None, None) => {}
            (value, range) => panic!("scan and serde disagree on {name}: {value:?}, {range:?}"),
        }
    }
});
