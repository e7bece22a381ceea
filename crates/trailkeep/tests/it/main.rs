//! End-to-end tests of the `trailkeep` binary: each test runs the real executable.

mod access;
mod alerts;
mod archive;
mod bundle;
mod client;
mod compare;
mod disk_full;
mod event_check;
mod export;
mod history;
mod reliability;
mod retention;
mod routing;
mod routing_s3;
mod server;
mod ui;
mod verifier;
mod verify;
mod views;

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// Runs `trailkeep args…` with `stdin` and returns its output.
pub fn trailkeep(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_trailkeep"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the trailkeep binary starts");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
