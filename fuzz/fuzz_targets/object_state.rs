#![no_main]
//! Arbitrary bytes as a stored object state (the object store's value layout). Decoding must
//! never panic and never allocate past what the bytes can hold; every refusal is an error that
//! names the byte. A state that decodes encodes again and decodes to the same state.

use trailkeep_event::object_codec::{self, Dictionary, Interner};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut dict = Dictionary::load(
        ["codeengine/application", "name", "us-south", "true", ""]
            .iter()
            .enumerate()
            .map(|(i, s)| (i as u32, s.to_string())),
    )
    .expect("a dictionary numbered from 0");
    let id = "crn:v1:bluemix:public:codeengine:us-south:a/acc:proj::application:app-1";
    let _ = object_codec::decode_head(data, id, &dict);
    if let Ok(state) = object_codec::decode(data, id, &dict) {
        let mut again = Vec::new();
        let mut interner = Interner::new(&dict);
        object_codec::encode(&state, &mut again, &mut interner);
        // The strings the encoding added, as the store writes them to its table.
        let fresh = interner.fresh();
        dict.extend(fresh);
        assert_eq!(
            object_codec::decode(&again, id, &dict).expect("an encoded state decodes"),
            state
        );
    }
});
