use trailkeep_ledger::{KeySource, Ledger, LedgerConfig};

use crate::{text, trailkeep};

fn write_ledger(dir: &std::path::Path, records: usize) {
    let ledger = Ledger::open_dir(
        dir,
        LedgerConfig {
            key: KeySource::Seed([7; 32]),
            ..LedgerConfig::default()
        },
    )
    .unwrap();
    let batch: Vec<(String, Vec<u8>)> = (0..records)
        .map(|i| {
            let account = if i % 3 == 0 { "acme" } else { "globex" };
            let event = format!(
                r#"{{"action":"kms.secrets.rotate","id":"ev-{i:05}","outcome":"success","message":"rotated key number {i}"}}"#
            );
            (account.to_string(), event.into_bytes())
        })
        .collect();
    ledger.append(batch).unwrap();
    ledger.close().unwrap();
}

/// The largest file under `dir` (the active segment holding the records).
fn largest_file(dir: &std::path::Path) -> std::path::PathBuf {
    let mut best = (0u64, dir.to_path_buf());
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.len() > best.0 {
                best = (meta.len(), entry.path());
            }
        }
    }
    best.1
}

#[test]
fn an_intact_server_data_dir_verifies_and_a_flipped_byte_is_reported() {
    let data = tempfile::tempdir().unwrap();
    write_ledger(&data.path().join("ledger"), 300);
    let dir = data.path().to_str().unwrap();

    let out = trailkeep(&["verify", "--data-dir", dir], b"");
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    assert!(stdout.contains("300 records"), "{stdout}");
    assert!(stdout.trim_end().ends_with("OK"), "{stdout}");

    let segment = largest_file(&data.path().join("ledger"));
    let mut bytes = std::fs::read(&segment).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&segment, bytes).unwrap();

    let out = trailkeep(&["verify", "--data-dir", dir], b"");
    assert_eq!(out.status.code(), Some(1), "stdout: {}", text(&out.stdout));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("problems"), "{stdout}");
    assert!(
        stdout.contains("acme/") || stdout.contains("globex/"),
        "names the account: {stdout}"
    );
}

#[test]
fn a_wrong_pinned_key_fails_every_checkpoint() {
    let data = tempfile::tempdir().unwrap();
    write_ledger(data.path(), 10);
    let other = trailkeep_ledger::NoteSigner::from_seed("trailkeep", [9; 32])
        .unwrap()
        .verifier()
        .to_key_string();
    let out = trailkeep(
        &[
            "verify",
            "--data-dir",
            data.path().to_str().unwrap(),
            "--verifier-key",
            &other,
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(1), "stdout: {}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("checkpoint"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn a_missing_directory_is_exit_2() {
    let out = trailkeep(
        &["verify", "--data-dir", "/nonexistent/trailkeep-data"],
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/nonexistent/trailkeep-data"));
}
