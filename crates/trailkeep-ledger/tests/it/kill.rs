//! A real `kill -9` of a process in the middle of appends (examples/crash_writer.rs), then
//! reopen, check every acknowledged record, and verify the directory.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use trailkeep_ledger::{Ledger, LedgerConfig, verify};

/// Same as the example's.
fn payload(n: u64) -> Vec<u8> {
    format!(
        "{{\"action\":\"kms.secrets.rotate\",\"n\":{n},\"pad\":\"{}\"}}",
        "x".repeat((n % 700) as usize)
    )
    .into_bytes()
}

fn newest_source() -> std::time::SystemTime {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![
        root.join("Cargo.toml"),
        root.join("examples/crash_writer.rs"),
    ];
    for e in std::fs::read_dir(root.join("src")).unwrap() {
        files.push(e.unwrap().path());
    }
    files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().modified().unwrap())
        .max()
        .unwrap()
}

/// A `cargo test` of the whole crate builds the example next to the test binary's `deps/`
/// directory. When it is missing or older than the sources (e.g. `cargo test --test it`), build
/// it into a separate target directory (the running `cargo test` holds the lock on its own).
fn crash_writer() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let name = format!("crash_writer{}", std::env::consts::EXE_SUFFIX);
    let path = profile_dir.join("examples").join(&name);
    let fresh = |p: &PathBuf| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= newest_source())
    };
    if fresh(&path) {
        return path;
    }
    let target = profile_dir.parent().unwrap().join("crash-writer-build");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "--example",
            "crash_writer",
            "--manifest-path",
        ])
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .status()
        .unwrap();
    assert!(status.success(), "building the crash_writer example failed");
    let built = target.join("debug").join("examples").join(&name);
    assert!(built.exists(), "{} not built", built.display());
    built
}

#[test]
fn kill_9_mid_append_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..2 {
        let mut child = Command::new(crash_writer())
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut acked = Vec::new();
        let mut line = String::new();
        let start = Instant::now();
        while acked.len() < 3000 && start.elapsed() < Duration::from_secs(30) {
            line.clear();
            if reader.read_line(&mut line).unwrap() == 0 {
                break;
            }
            acked.push(line.trim().to_string());
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Lines already written before the kill were acknowledged too.
        for l in reader.lines() {
            let l = l.unwrap();
            if l.split(' ').count() == 3 {
                acked.push(l);
            }
        }
        assert!(
            acked.len() >= 100,
            "round {round}: the writer made too little progress"
        );

        let ledger = Ledger::open_dir(
            dir.path(),
            LedgerConfig {
                origin: "trailkeep.test".into(),
                checkpoint_interval: None,
                ..LedgerConfig::default()
            },
        )
        .unwrap();
        for l in &acked {
            let mut it = l.split(' ');
            let (acct, index, n) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
            let got = ledger.read(acct, index.parse().unwrap()).unwrap();
            assert_eq!(got, Some(payload(n.parse().unwrap())), "round {round}: {l}");
        }
        ledger.close().unwrap();
        let report = verify::verify_data_dir(dir.path(), |_| {}).unwrap();
        assert!(report.is_ok(), "round {round}: {report}");
    }
}
