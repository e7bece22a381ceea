//! C2SP signed-note (Ed25519) and tlog-checkpoint bodies, plus the key formats of
//! `golang.org/x/mod/sumdb/note` (FORMAT.md §7).
//!
//! Pure: keys, notes and checkpoints are values; loading or creating the key file is done by the
//! ledger through the storage seam or a file path.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::merkle::Hash;

/// Signature algorithm byte for Ed25519 in note keys.
pub const ALG_ED25519: u8 = 0x01;
/// Longest note accepted by the parser.
pub const MAX_NOTE_LEN: usize = 64 * 1024;

/// Why a key, note or checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// A key string is malformed.
    #[error("malformed key: {0}")]
    Key(&'static str),
    /// A note or checkpoint is malformed.
    #[error("malformed note: {0}")]
    Format(&'static str),
    /// No signature by the expected key verifies.
    #[error("no valid signature by {0}")]
    Signature(String),
}

fn valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && !name.contains('+')
        && name.chars().all(|c| !c.is_whitespace() && !c.is_control())
}

/// `name`'s key hash: the first 4 bytes (big-endian) of SHA-256(name ‖ "\n" ‖ 0x01 ‖ pubkey).
pub fn key_hash(name: &str, public: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ALG_ED25519]);
    h.update(public);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// An Ed25519 note signer.
#[derive(Clone)]
pub struct NoteSigner {
    name: String,
    key: SigningKey,
    hash: u32,
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .field("hash", &format_args!("{:08x}", self.hash))
            .finish_non_exhaustive()
    }
}

impl NoteSigner {
    /// A signer named `name` from a 32-byte Ed25519 seed.
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<Self, NoteError> {
        if !valid_key_name(name) {
            return Err(NoteError::Key(
                "key name must be non-empty, without '+' or spaces",
            ));
        }
        let key = SigningKey::from_bytes(&seed);
        let hash = key_hash(name, key.verifying_key().as_bytes());
        Ok(Self {
            name: name.to_owned(),
            key,
            hash,
        })
    }

    /// A fresh random key.
    pub fn generate(name: &str) -> Result<Self, NoteError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|_| NoteError::Key("no randomness available"))?;
        Self::from_seed(name, seed)
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The note verifier for this key.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            key: self.key.verifying_key(),
            hash: self.hash,
        }
    }

    /// The private key in Go's note format: `PRIVATE+KEY+<name>+<hash>+<base64(0x01‖seed)>`.
    pub fn to_private_string(&self) -> String {
        let mut k = vec![ALG_ED25519];
        k.extend_from_slice(self.key.as_bytes());
        format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.hash,
            B64.encode(k)
        )
    }

    /// Parse [`NoteSigner::to_private_string`]'s format.
    pub fn from_private_string(s: &str) -> Result<Self, NoteError> {
        let rest = s
            .trim()
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(NoteError::Key("missing PRIVATE+KEY+ prefix"))?;
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(hash), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::Key("expected name+hash+key"));
        };
        let raw = B64.decode(key).map_err(|_| NoteError::Key("bad base64"))?;
        if raw.len() != 33 || raw[0] != ALG_ED25519 {
            return Err(NoteError::Key("not an Ed25519 key"));
        }
        let signer = Self::from_seed(name, raw[1..].try_into().expect("32"))?;
        if format!("{:08x}", signer.hash) != hash {
            return Err(NoteError::Key("key hash does not match"));
        }
        Ok(signer)
    }

    /// Sign `body` (which must end with a newline) into a signed note.
    pub fn sign(&self, body: &str) -> Result<String, NoteError> {
        if !body.ends_with('\n') || body.len() > MAX_NOTE_LEN {
            return Err(NoteError::Format("body must end with a newline"));
        }
        let sig = self.key.sign(body.as_bytes());
        let mut blob = self.hash.to_be_bytes().to_vec();
        blob.extend_from_slice(&sig.to_bytes());
        Ok(format!(
            "{body}\n\u{2014} {} {}\n",
            self.name,
            B64.encode(blob)
        ))
    }
}

/// An Ed25519 note verifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key: VerifyingKey,
    hash: u32,
}

impl NoteVerifier {
    /// Parse a verifier key `name+hexhash+base64(0x01‖pubkey)`.
    pub fn parse(s: &str) -> Result<Self, NoteError> {
        let mut parts = s.trim().splitn(3, '+');
        let (Some(name), Some(hash), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::Key("expected name+hash+key"));
        };
        if !valid_key_name(name) || hash.len() != 8 {
            return Err(NoteError::Key("bad name or hash"));
        }
        let raw = B64.decode(key).map_err(|_| NoteError::Key("bad base64"))?;
        if raw.len() != 33 || raw[0] != ALG_ED25519 {
            return Err(NoteError::Key("not an Ed25519 key"));
        }
        let public: [u8; 32] = raw[1..].try_into().expect("32");
        let key = VerifyingKey::from_bytes(&public).map_err(|_| NoteError::Key("bad point"))?;
        let h = key_hash(name, &public);
        if format!("{h:08x}") != hash {
            return Err(NoteError::Key("key hash does not match"));
        }
        Ok(Self {
            name: name.to_owned(),
            key,
            hash: h,
        })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key hash.
    pub fn key_hash(&self) -> u32 {
        self.hash
    }

    /// The verifier key string `name+hexhash+base64(0x01‖pubkey)`.
    pub fn to_key_string(&self) -> String {
        let mut k = vec![ALG_ED25519];
        k.extend_from_slice(self.key.as_bytes());
        format!("{}+{:08x}+{}", self.name, self.hash, B64.encode(k))
    }

    /// Check a signed note and return its body (including the final newline).
    pub fn open<'a>(&self, note: &'a str) -> Result<&'a str, NoteError> {
        if note.len() > MAX_NOTE_LEN {
            return Err(NoteError::Format("note too long"));
        }
        let split = note
            .rfind("\n\n")
            .ok_or(NoteError::Format("no blank line before signatures"))?;
        let body = &note[..split + 1];
        let sigs = &note[split + 2..];
        if !sigs.ends_with('\n') {
            return Err(NoteError::Format("signature block must end with a newline"));
        }
        for line in sigs.lines() {
            let Some(rest) = line.strip_prefix("\u{2014} ") else {
                return Err(NoteError::Format(
                    "signature line must start with an em dash",
                ));
            };
            let Some((name, b64)) = rest.split_once(' ') else {
                return Err(NoteError::Format("signature line needs name and signature"));
            };
            if name != self.name {
                continue;
            }
            let Ok(blob) = B64.decode(b64) else {
                return Err(NoteError::Format("signature is not base64"));
            };
            if blob.len() != 68 || u32::from_be_bytes(blob[..4].try_into().expect("4")) != self.hash
            {
                continue;
            }
            let sig = ed25519_dalek::Signature::from_bytes(blob[4..].try_into().expect("64"));
            if self.key.verify(body.as_bytes(), &sig).is_ok() {
                return Ok(body);
            }
        }
        Err(NoteError::Signature(self.name.clone()))
    }
}

/// A tlog-checkpoint body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin line (`<configured origin>/<account>`).
    pub origin: String,
    /// Tree size.
    pub size: u64,
    /// Root hash.
    pub root: Hash,
}

impl Checkpoint {
    /// The body text: origin, decimal size and base64 root, one per line.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        )
    }

    /// Parse a checkpoint body (extension lines after the root are ignored).
    pub fn parse(body: &str) -> Result<Self, NoteError> {
        let mut lines = body.split('\n');
        let origin = lines.next().filter(|o| !o.is_empty());
        let size = lines.next();
        let root = lines.next();
        let (Some(origin), Some(size), Some(root)) = (origin, size, root) else {
            return Err(NoteError::Format(
                "checkpoint needs origin, size and root lines",
            ));
        };
        if size.is_empty()
            || size.len() > 20
            || !size.bytes().all(|b| b.is_ascii_digit())
            || (size.len() > 1 && size.starts_with('0'))
        {
            return Err(NoteError::Format("bad tree size"));
        }
        let size = size
            .parse()
            .map_err(|_| NoteError::Format("bad tree size"))?;
        let root = B64
            .decode(root)
            .ok()
            .and_then(|r| <[u8; 32]>::try_from(r).ok())
            .ok_or(NoteError::Format("bad root hash"))?;
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_open_roundtrip_and_key_strings() {
        let s = NoteSigner::from_seed("example.com/log", [7; 32]).unwrap();
        let v = NoteVerifier::parse(&s.verifier().to_key_string()).unwrap();
        assert_eq!(v, s.verifier());
        let again = NoteSigner::from_private_string(&s.to_private_string()).unwrap();
        assert_eq!(again.verifier(), s.verifier());
        let cp = Checkpoint {
            origin: "example.com/log/acme".into(),
            size: 5,
            root: [9; 32],
        };
        let note = s.sign(&cp.body()).unwrap();
        let body = v.open(&note).unwrap();
        assert_eq!(Checkpoint::parse(body).unwrap(), cp);
        let tampered = note.replacen("\n5\n", "\n6\n", 1);
        assert!(v.open(&tampered).is_err());
    }

    /// The example key from golang.org/x/mod/sumdb/note's documentation.
    #[test]
    fn go_note_example_key_hash() {
        let v = NoteVerifier::parse(
            "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        )
        .unwrap();
        assert_eq!(v.key_hash(), 0xc74f20a3);
        let signer = NoteSigner::from_private_string(
            "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
        )
        .unwrap();
        assert_eq!(signer.verifier(), v);
        let note = signer
            .sign("If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n")
            .unwrap();
        assert_eq!(
            note,
            "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
        );
    }
}
