//! `trailkeep verify --url`: witness a running server. For each log it fetches the signed
//! checkpoint, checks the signature against the pinned verifier key, and proves the new tree
//! consistent with the checkpoint it saw last time (RFC 9162 §2.1.4). A log that shrank, forked
//! or was rewritten fails; the remembered checkpoint then stays, so the failure repeats until
//! someone looks.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use trailkeep_ledger::verifier::verify_consistency;
use trailkeep_ledger::{Checkpoint, NoteVerifier};

use crate::remote::{Remote, RemoteArgs, RequestError};

/// What the witness remembers between runs.
#[derive(Debug, Default, Serialize, Deserialize)]
struct WitnessState {
    verifier_key: String,
    logs: BTreeMap<String, SeenCheckpoint>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SeenCheckpoint {
    origin: String,
    size: u64,
    /// Base64 root hash.
    root: String,
    /// The signed note as received, so it can be shown to a third party.
    checkpoint: String,
    seen_at: String,
}

pub fn run(
    remote_args: &RemoteArgs,
    verifier_key: &str,
    state_path: &Path,
    only: &[String],
) -> anyhow::Result<ExitCode> {
    let verifier = NoteVerifier::parse(verifier_key)
        .map_err(|e| anyhow::anyhow!("the verifier key is not usable: {e}"))?;
    let remote = Remote::new(remote_args)?;
    let mut state = load(state_path)?;
    if state.logs.is_empty() {
        state.verifier_key = verifier.to_key_string();
    } else if state.verifier_key != verifier.to_key_string() {
        bail!(
            "{} was written while trusting verifier key {}; pass that key, or a new --state file to start witnessing under another key",
            state_path.display(),
            state.verifier_key
        );
    }
    let accounts: Vec<String> = if only.is_empty() {
        let listed = remote.get_json("/v1/log", &[]).map_err(http)?;
        listed["logs"]
            .as_array()
            .map(|logs| {
                logs.iter()
                    .filter_map(|l| l["account"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    } else {
        only.to_vec()
    };

    let mut failures = 0usize;
    for account in &accounts {
        match witness_one(&remote, &verifier, account, state.logs.get(account)) {
            Ok(Some((seen, verdict))) => {
                println!("ok    {account}: size {} — {verdict}", seen.size);
                state.logs.insert(account.clone(), seen);
            }
            Ok(None) => println!("wait  {account}: no signed checkpoint yet (new log)"),
            Err(problem) => {
                failures += 1;
                println!("FAIL  {account}: {problem:#}");
            }
        }
    }
    if only.is_empty() {
        for (account, seen) in &state.logs {
            if !accounts.contains(account) {
                failures += 1;
                println!(
                    "FAIL  {account}: the server no longer lists this log (last seen at size {} on {})",
                    seen.size, seen.seen_at
                );
            }
        }
    }
    save(state_path, &state)?;
    println!(
        "{} logs checked, {failures} problems; state in {}",
        accounts.len(),
        state_path.display()
    );
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn http(e: RequestError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// Checks one log; on success returns the checkpoint to remember and what was proven, or `None`
/// for a log first seen before its first checkpoint was signed.
fn witness_one(
    remote: &Remote,
    verifier: &NoteVerifier,
    account: &str,
    previous: Option<&SeenCheckpoint>,
) -> anyhow::Result<Option<(SeenCheckpoint, String)>> {
    let path_account = percent_encode_segment(account);
    let note = match remote.get_text(&format!("/v1/log/{path_account}/checkpoint")) {
        Ok(note) => note,
        Err(RequestError::Status { status: 404, .. }) if previous.is_none() => return Ok(None),
        Err(e) => return Err(http(e)).context("fetching the checkpoint"),
    };
    let body = verifier
        .open(&note)
        .map_err(|e| anyhow::anyhow!("the checkpoint signature does not verify: {e}"))?;
    let checkpoint =
        Checkpoint::parse(body).map_err(|e| anyhow::anyhow!("the checkpoint is malformed: {e}"))?;
    if !checkpoint.origin.ends_with(&format!("/{account}")) {
        bail!(
            "the checkpoint is for log {:?}, not for account {account:?}",
            checkpoint.origin
        );
    }
    let seen = SeenCheckpoint {
        origin: checkpoint.origin.clone(),
        size: checkpoint.size,
        root: B64.encode(checkpoint.root),
        checkpoint: note.clone(),
        seen_at: now(),
    };
    let Some(previous) = previous else {
        return Ok(Some((seen, "first seen; remembered".into())));
    };
    if previous.origin != checkpoint.origin {
        bail!(
            "the log's origin changed from {:?} to {:?}",
            previous.origin,
            checkpoint.origin
        );
    }
    let old_root: [u8; 32] = B64
        .decode(&previous.root)
        .ok()
        .and_then(|r| r.try_into().ok())
        .context("the state file holds a malformed root hash")?;
    if checkpoint.size < previous.size {
        bail!(
            "the log shrank from {} to {} entries since {} (rolled back or rewritten)",
            previous.size,
            checkpoint.size,
            previous.seen_at
        );
    }
    if checkpoint.size == previous.size {
        if checkpoint.root != old_root {
            bail!(
                "same size {} as on {} but a different root hash: the log was rewritten (fork)",
                checkpoint.size,
                previous.seen_at
            );
        }
        return Ok(Some((seen, "unchanged".into())));
    }
    let proof = if previous.size == 0 {
        Vec::new()
    } else {
        let answer = remote
            .get_json(
                &format!("/v1/log/{path_account}/proof/consistency"),
                &[
                    ("from", &previous.size.to_string()),
                    ("to", &checkpoint.size.to_string()),
                ],
            )
            .map_err(http)
            .context("fetching the consistency proof")?;
        answer["hashes"]
            .as_array()
            .context("the consistency proof has no hashes")?
            .iter()
            .map(|h| {
                h.as_str()
                    .and_then(|s| B64.decode(s).ok())
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .context("the consistency proof holds a malformed hash")
            })
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    if previous.size > 0 {
        verify_consistency(
            previous.size,
            checkpoint.size,
            &old_root,
            &checkpoint.root,
            &proof,
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "the log at size {} is not an extension of the one seen at size {} on {}: {e}",
                checkpoint.size,
                previous.size,
                previous.seen_at
            )
        })?;
    }
    Ok(Some((
        seen,
        format!(
            "grew from {} and is consistent with the checkpoint seen {}",
            previous.size, previous.seen_at
        ),
    )))
}

/// Account ids are path segments; escape the few characters that would change the path.
fn percent_encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn load(path: &Path) -> anyhow::Result<WitnessState> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{} is not a witness state file", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(WitnessState::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn save(path: &Path, state: &WitnessState) -> anyhow::Result<()> {
    crate::cmd::write_json_atomically(path, state)
}
