//! `trailkeep verify --bundle FILE`: check an evidence bundle offline (no server, no data
//! directory): every checkpoint's signature, every event's inclusion proof, the order and count
//! of events, and the signed trailer over the whole file. Prints each problem with its line.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use trailkeep_export::bundle::{KeyTrust, verify};
use trailkeep_ledger::NoteVerifier;

pub fn run(path: &Path, pinned_key: Option<&str>) -> anyhow::Result<ExitCode> {
    let pinned = pinned_key
        .map(|k| {
            NoteVerifier::parse(k)
                .map_err(|e| anyhow::anyhow!("the pinned verifier key is not usable: {e}"))
        })
        .transpose()?;
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let report = verify(std::io::BufReader::new(file), pinned.as_ref())
        .with_context(|| format!("reading {}", path.display()))?;
    let h = &report.header;
    if !h.created_at.is_empty() {
        let range = match (&h.from, &h.to) {
            (None, None) => "all time".to_string(),
            (f, t) => format!(
                "{} to {}",
                f.as_deref().unwrap_or("the beginning"),
                t.as_deref().unwrap_or("the export")
            ),
        };
        println!(
            "bundle {}: made {}, query {:?}, {range}",
            path.display(),
            h.created_at,
            h.query
        );
    }
    println!("{report}");
    if report.is_ok() && report.key_trust == KeyTrust::FromBundle {
        eprintln!(
            "note: the checkpoints were checked against the key the bundle carries; pin the server's key (--key-file PUBKEY) to know that the server signed them"
        );
    }
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
