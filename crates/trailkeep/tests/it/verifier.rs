//! An independent verifier for what the server returns: RFC 6962 inclusion proofs (the algorithm
//! of RFC 9162 §2.1.3.2, written here from the RFC, not shared with the ledger crate) and C2SP
//! signed-note checkpoints checked with ed25519-dalek directly.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn leaf(bytes: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(bytes);
    h.finalize().into()
}

fn node(l: &[u8; 32], r: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(l);
    h.update(r);
    h.finalize().into()
}

/// RFC 9162 §2.1.3.2: the root implied by `proof` for leaf `index` of a tree of `size`.
pub fn root_from_inclusion(
    index: u64,
    size: u64,
    leaf_hash: [u8; 32],
    proof: &[[u8; 32]],
) -> Option<[u8; 32]> {
    if index >= size {
        return None;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = leaf_hash;
    for p in proof {
        if s == 0 {
            return None;
        }
        if f & 1 == 1 || f == s {
            r = node(p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    (s == 0).then_some(r)
}

/// Checks a signed note against a verifier key `name+hexhash+base64(0x01‖pubkey)`; returns the body.
pub fn open_note<'a>(note: &'a str, verifier_key: &str) -> &'a str {
    let mut parts = verifier_key.splitn(3, '+');
    let (name, hash_hex, key_b64) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let key_bytes = B64.decode(key_b64).unwrap();
    assert_eq!(key_bytes[0], 0x01, "Ed25519 algorithm byte");
    let public: [u8; 32] = key_bytes[1..].try_into().unwrap();
    // The key hash is the first 4 bytes of SHA-256(name ‖ "\n" ‖ 0x01 ‖ pubkey).
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update(&key_bytes);
    let digest = h.finalize();
    assert_eq!(
        hex_lower(&digest[..4]),
        hash_hex,
        "key hash in the verifier key"
    );

    let split = note.find("\n\n").expect("a blank line ends the note body") + 1;
    let (body, sigs) = note.split_at(split);
    let prefix = format!("\u{2014} {name} ");
    let line = sigs
        .lines()
        .find(|l| l.starts_with(&prefix))
        .expect("a signature by the key's name");
    let sig = B64.decode(&line[prefix.len()..]).unwrap();
    assert_eq!(&sig[..4], &digest[..4], "signature carries the key hash");
    let signature = Signature::from_slice(&sig[4..]).unwrap();
    VerifyingKey::from_bytes(&public)
        .unwrap()
        .verify(body.as_bytes(), &signature)
        .expect("checkpoint signature verifies");
    body
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Verifies `GET /v1/events/{id}?proof=true` end to end: the event's JCS bytes are a leaf of the
/// signed checkpoint's tree.
pub fn check_item_proof(item: &Value, verifier_key: &str) {
    let proof = &item["proof"];
    let note = proof["checkpoint"].as_str().unwrap();
    let body = open_note(note, verifier_key);
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(
        lines[0],
        format!("trailkeep/{}", item["account"].as_str().unwrap())
    );
    let size: u64 = lines[1].parse().unwrap();
    let root: [u8; 32] = B64.decode(lines[2]).unwrap().try_into().unwrap();
    assert_eq!(proof["size"].as_u64(), Some(size));
    let hashes: Vec<[u8; 32]> = proof["hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| B64.decode(h.as_str().unwrap()).unwrap().try_into().unwrap())
        .collect();
    let bytes = trailkeep_event::to_canonical_vec(&item["event"]);
    let index = item["index"].as_u64().unwrap();
    assert_eq!(
        root_from_inclusion(index, size, leaf(&bytes), &hashes),
        Some(root),
        "inclusion proof verifies"
    );

    // A flipped byte in the event no longer verifies.
    let mut tampered = item["event"].clone();
    tampered["outcome"] = Value::from("failure-edited");
    let bad = trailkeep_event::to_canonical_vec(&tampered);
    assert_ne!(
        root_from_inclusion(index, size, leaf(&bad), &hashes),
        Some(root)
    );
}
