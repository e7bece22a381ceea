//! Integration tests of trailkeep-ledger (one binary, modules per feature).

// `x % n == 0` reads the same under every supported toolchain (`is_multiple_of` needs 1.87).
#![allow(clippy::manual_is_multiple_of)]

mod basics;
mod crash;
mod disk_full;
mod fixture;
mod kill;
mod model;
mod mutate;
mod proofs;
mod retention;
mod tamper;

use std::sync::Arc;
use std::time::Duration;

use trailkeep_ledger::{KeySource, Ledger, LedgerConfig, MemStorage, SealOptions, Storage};

/// The fixed signing seed used by tests and the checked-in fixture.
pub const TEST_SEED: [u8; 32] = [42; 32];

/// A config with a fixed key, small segments and blocks, and no timer-driven signing (tests
/// sign explicitly so they are deterministic).
pub fn test_config() -> LedgerConfig {
    LedgerConfig {
        origin: "trailkeep.test".into(),
        key: KeySource::Seed(TEST_SEED),
        segment_target_bytes: 8 * 1024,
        seal: SealOptions {
            block_target: 2 * 1024,
            zstd_level: 3,
            // Small enough that 8 KiB segments get a dictionary.
            dict_max_bytes: 512,
            dict_sample_bytes: 8 * 1024,
        },
        checkpoint_interval: None,
        ..LedgerConfig::default()
    }
}

/// Open a ledger over shared in-memory storage.
pub fn open_mem(storage: &MemStorage, config: LedgerConfig) -> Ledger {
    Ledger::open(Arc::new(storage.clone()) as Arc<dyn Storage>, config).expect("open")
}

/// A realistic, varied CADF-like event (deterministic in `n`).
pub fn event(n: u64) -> Vec<u8> {
    let services = [
        "codeengine",
        "container-registry",
        "kms",
        "iam-identity",
        "cloud-object-storage",
    ];
    let verbs = ["create", "update", "delete", "read", "list", "rotate"];
    let objects = ["application", "image", "secrets", "apikey", "bucket", "job"];
    let s = services[(n % 5) as usize];
    let v = verbs[(n / 5 % 6) as usize];
    let o = objects[(n / 7 % 6) as usize];
    let outcome = if n % 11 == 0 { "failure" } else { "success" };
    format!(
        r#"{{"action":"{s}.{o}.{v}","correlationId":"{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}","eventTime":"2026-11-{:02}T{:02}:{:02}:{:02}.{:03}+00:00","id":"{:016x}","initiator":{{"authnId":"iam-ServiceId-{:08x}","credential":{{"type":"apikey"}},"host":{{"address":"10.{}.{}.{}","addressType":"IPv4","agent":"trailkeep-test/1.0"}},"id":"IBMid-{:010}","name":"user{}@example.com","typeURI":"service/security/account/user"}},"logSourceCRN":"crn:v1:bluemix:public:{s}:eu-de:a/acct{}::","message":"{s}: {v} {o} item-{}","outcome":"{outcome}","requestData":{{"name":"item-{}","size":{}}},"severity":"normal","target":{{"id":"crn:v1:bluemix:public:{s}:eu-de:a/acct{}:{:08x}:{o}:item-{}","name":"item-{}","typeURI":"{s}/{o}"}}}}"#,
        n.wrapping_mul(2654435761) as u32,
        n % 65536,
        n % 4096,
        (n * 7) % 4096,
        n.wrapping_mul(0x9E3779B97F4A7C15) & 0xffff_ffff_ffff,
        1 + n % 28,
        n % 24,
        n % 60,
        (n / 60) % 60,
        n % 1000,
        n.wrapping_mul(0x2545F4914F6CDD1D),
        n % 9973,
        n % 256,
        (n / 256) % 256,
        n % 200,
        n % 10_000_000,
        n % 97,
        n % 13,
        n,
        n,
        n * 31 % 100000,
        n % 13,
        n as u32,
        n,
        n
    )
    .into_bytes()
}

/// Wait until at least one segment was sealed and no rotated one is left plain (bounded).
/// The name of the first sealed segment in `storage`.
pub fn first_sealed(storage: &MemStorage) -> String {
    storage
        .list("seg/")
        .unwrap()
        .into_iter()
        .find(|n| n.ends_with(".sealed"))
        .expect("a sealed segment")
}

pub fn wait_sealed(ledger: &Ledger) {
    for _ in 0..1000 {
        let s = ledger.stats();
        if s.sealed_segments > 0 && s.segments == s.sealed_segments + 1 {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
