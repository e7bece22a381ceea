#![no_main]
//! Outside bytes → split → normalise → canonical bytes. Must never panic, and every
//! accepted event must round-trip: parse(canonical) → normalise → the same bytes.

use trailkeep_event::{
    Context, ItemKind, ItemResult, Policy, normalize, process_input, split_input,
};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // A small size limit as well, so the size policy and its rejection run too.
    for max_event_bytes in [16_384, 600] {
        let policy = Policy {
            k8s_service_prefix: "codeengine".into(),
            max_event_bytes,
            ..Policy::default()
        };
        let keys = |account: &str| (account.len() % 2 == 0).then(|| account.as_bytes().to_vec());
        let ctx = Context::new(&policy, "default").with_keys(&keys);
        let Ok(items) = process_input(data, &ctx) else {
            return;
        };
        for item in items {
            if let ItemResult::Accepted(ev) = item.result {
                let mut split = split_input(ev.canonical_bytes(), &policy.limits)
                    .expect("canonical bytes split");
                assert_eq!(split.len(), 1, "one stored event is one item");
                let ItemKind::Event(raw) = split.remove(0).kind else {
                    panic!("a stored event is an event")
                };
                assert_eq!(
                    raw.shape,
                    trailkeep_event::Shape::Plain,
                    "a stored event is a plain event"
                );
                let again = normalize(raw, &ctx).expect("a stored event is valid");
                assert_eq!(
                    again.canonical_bytes(),
                    ev.canonical_bytes(),
                    "canonical round trip"
                );
            }
        }
    }
});
