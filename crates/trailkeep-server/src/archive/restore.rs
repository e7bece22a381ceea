//! Restore (`trailkeep import --from-archive`): archived events back into a data directory's
//! ledger, at their original positions, so search finds them and their inclusion proofs verify
//! against the archived checkpoints signed by the original server.
//!
//! Per account, everything is checked before anything is written: every manifest (format,
//! account, row counts), that the manifests together hold the indexes `[0, n)` exactly once,
//! every archived checkpoint note's signature (the pinned verifier key, or the archive's own),
//! and, per pass, every object's SHA-256 and every row's leaf hash against its manifest. The
//! records are then appended in index order with their archived receive time; because the leaves
//! are the same bytes in the same order, the rebuilt tree has the original roots, and the restore
//! ends by checking `root_at(size)` against every archived checkpoint.
//!
//! An account whose log already holds records is continued only where those records are the
//! archived ones (an interrupted restore resumes); any other content is refused. The server must
//! be stopped (the data directory's ledger is opened here).

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Serialize;
use sha2::{Digest, Sha256};
use trailkeep_ledger::{Checkpoint, Ledger, NoteVerifier, leaf_hash};

use super::object::{self, MANIFEST_FORMAT, MANIFEST_VERSION, Manifest};
use super::s3::{Bucket, S3Error};

/// Objects listed per restore at most.
const MAX_OBJECTS: usize = 10_000_000;
/// Rows read from one Parquet object at most.
const MAX_ROWS: usize = 10_000_000;
/// Records appended per ledger batch at most.
const APPEND_BATCH: usize = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{0}")]
    Bucket(#[from] S3Error),
    #[error("ledger: {0}")]
    Ledger(#[from] trailkeep_ledger::Error),
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
    #[error("account {account}: {reason}")]
    Account { account: String, reason: String },
}

fn invalid(key: &str, reason: impl Into<String>) -> RestoreError {
    RestoreError::Invalid {
        key: key.to_string(),
        reason: reason.into(),
    }
}

/// What to restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Only these accounts (all accounts in the archive when empty).
    pub accounts: Vec<String>,
    /// The verifier key the checkpoints must be signed with; without it, the archive's own copy
    /// (`.trailkeep/verifier.key`) is trusted.
    pub verifier_key: Option<String>,
}

/// What a restore did for one account.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountRestore {
    pub account: String,
    /// Records the archive holds for it (`[0, records)`).
    pub records: u64,
    /// Records appended now (the rest were already in the log).
    pub imported: u64,
    pub objects: u64,
    /// Archived checkpoints whose signature verified and whose root the restored tree has.
    pub checkpoints_verified: u64,
    /// Archived checkpoints larger than the records restored (not checkable).
    pub checkpoints_beyond: u64,
    /// `[from, to)` of a last pass found incomplete and left out.
    pub incomplete_pass_skipped: Option<[u64; 2]>,
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreReport {
    pub verifier_key: String,
    /// Whether the key came from the archive itself rather than the caller.
    pub key_from_archive: bool,
    pub accounts: Vec<AccountRestore>,
}

#[derive(Debug, Default)]
struct AccountObjects {
    manifests: Vec<String>,
    notes: Vec<(u64, String)>,
}

/// Restores `bucket` into `ledger`; `progress(account, done, total)` is called as records go in.
pub async fn restore(
    bucket: &Bucket,
    ledger: &Ledger,
    options: &RestoreOptions,
    mut progress: impl FnMut(&str, u64, u64),
) -> Result<RestoreReport, RestoreError> {
    let (key_text, key_from_archive) = match &options.verifier_key {
        Some(k) => (k.trim().to_string(), false),
        None => {
            let bytes = bucket
                .get(object::VERIFIER_KEY, 64 * 1024)
                .await?
                .ok_or_else(|| invalid(object::VERIFIER_KEY, "missing (pass a verifier key)"))?;
            (String::from_utf8_lossy(&bytes).trim().to_string(), true)
        }
    };
    let verifier = NoteVerifier::parse(&key_text)
        .map_err(|e| invalid(object::VERIFIER_KEY, format!("not a verifier key: {e}")))?;

    let mut by_account: BTreeMap<String, AccountObjects> = BTreeMap::new();
    for o in bucket.list("", MAX_OBJECTS).await? {
        let Some((account, rest)) = o.key.split_once('/') else {
            continue;
        };
        if account.starts_with('.') {
            continue;
        }
        if !options.accounts.is_empty() && !options.accounts.iter().any(|a| a == account) {
            continue;
        }
        let entry = by_account.entry(account.to_string()).or_default();
        if let Some(size) = rest
            .strip_prefix("checkpoints/")
            .and_then(|n| n.strip_suffix(".note"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            entry.notes.push((size, o.key));
        } else if o.key.ends_with(".manifest.json") {
            entry.manifests.push(o.key);
        }
    }
    for wanted in &options.accounts {
        if !by_account.contains_key(wanted) {
            return Err(RestoreError::Account {
                account: wanted.clone(),
                reason: "the archive holds nothing of it".into(),
            });
        }
    }
    let mut report = RestoreReport {
        verifier_key: key_text,
        key_from_archive,
        accounts: Vec::new(),
    };
    for (account, objects) in by_account {
        let r =
            restore_account(bucket, ledger, &verifier, &account, objects, &mut progress).await?;
        report.accounts.push(r);
    }
    Ok(report)
}

async fn restore_account(
    bucket: &Bucket,
    ledger: &Ledger,
    verifier: &NoteVerifier,
    account: &str,
    objects: AccountObjects,
    progress: &mut impl FnMut(&str, u64, u64),
) -> Result<AccountRestore, RestoreError> {
    let fail = |reason: String| RestoreError::Account {
        account: account.to_string(),
        reason,
    };
    // Checkpoints: signed by the key, of this account's log, of the size their key says.
    let mut checkpoints: BTreeMap<u64, Checkpoint> = BTreeMap::new();
    for (size, key) in &objects.notes {
        let bytes = bucket
            .get(key, object::MAX_SMALL_OBJECT)
            .await?
            .ok_or_else(|| invalid(key, "listed but gone"))?;
        let note = String::from_utf8(bytes).map_err(|_| invalid(key, "not UTF-8"))?;
        let body = verifier
            .open(&note)
            .map_err(|e| invalid(key, format!("signature: {e}")))?;
        let cp = Checkpoint::parse(body).map_err(|e| invalid(key, e.to_string()))?;
        if cp.size != *size || !cp.origin.ends_with(&format!("/{account}")) {
            return Err(invalid(
                key,
                format!("a checkpoint of {} at size {}", cp.origin, cp.size),
            ));
        }
        checkpoints.insert(cp.size, cp);
    }
    // Manifests, grouped by pass, and the indexes they cover.
    let mut passes: BTreeMap<(u64, u64), Vec<Manifest>> = BTreeMap::new();
    let mut leaves: BTreeMap<u64, [u8; 32]> = BTreeMap::new();
    for key in &objects.manifests {
        let bytes = bucket
            .get(key, object::MAX_SMALL_OBJECT)
            .await?
            .ok_or_else(|| invalid(key, "listed but gone"))?;
        let m: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| invalid(key, e.to_string()))?;
        if m.format != MANIFEST_FORMAT || m.version != MANIFEST_VERSION {
            return Err(invalid(key, format!("{} version {}", m.format, m.version)));
        }
        if m.account != account
            || m.indexes.len() as u64 != m.rows
            || m.leaf_hashes.len() as u64 != m.rows
            || !checkpoints.contains_key(&m.checkpoint_size)
            || m.pass_to > m.checkpoint_size
        {
            return Err(invalid(
                key,
                "inconsistent (account, row counts, or a checkpoint that is not archived)",
            ));
        }
        for (i, h) in m.indexes.iter().zip(&m.leaf_hashes) {
            let hash = B64
                .decode(h)
                .ok()
                .and_then(|v| <[u8; 32]>::try_from(v).ok())
                .ok_or_else(|| invalid(key, "bad leaf hash"))?;
            if *i < m.pass_from || *i >= m.pass_to {
                return Err(invalid(key, format!("index {i} outside its pass")));
            }
            if leaves.insert(*i, hash).is_some() {
                return Err(fail(format!("index {i} is archived twice")));
            }
        }
        passes.entry((m.pass_from, m.pass_to)).or_default().push(m);
    }
    // The last pass may be incomplete: the original server stopped between its objects and its
    // cursor update, and never repeated it. Its records are left out (they were never counted
    // as archived); an incomplete pass anywhere else is an error below.
    let mut skipped = None;
    if let Some((&(from, to), _)) = passes.last_key_value()
        && leaves.range(from..to).count() as u64 != to - from
    {
        passes.pop_last();
        leaves.retain(|i, _| *i < from);
        skipped = Some((from, to));
    }
    let total = leaves.len() as u64;
    if let Some((last, _)) = leaves.last_key_value()
        && *last + 1 != total
    {
        let missing = (0..).zip(leaves.keys()).find(|(want, got)| want != *got);
        return Err(fail(format!(
            "the archive lacks index {}",
            missing.map_or(*last, |(w, _)| w)
        )));
    }

    // What the log holds already must be the archived records.
    let have = ledger.tree_head(account).map_or(0, |h| h.size);
    if have > total {
        return Err(fail(format!(
            "the log already holds {have} records, more than the {total} archived"
        )));
    }
    for index in 0..have {
        let bytes = ledger.read(account, index)?.unwrap_or_default();
        if leaf_hash(&bytes) != leaves[&index] {
            return Err(fail(format!(
                "the log already holds other events (index {index} differs): restore into an empty data directory"
            )));
        }
    }

    let mut imported = 0u64;
    let mut object_count = 0u64;
    for ((from, to), manifests) in passes {
        object_count += manifests.len() as u64;
        if to <= have {
            continue;
        }
        let mut rows: BTreeMap<u64, (i64, String)> = BTreeMap::new();
        for m in &manifests {
            let bytes = bucket
                .get(&m.object, object::MAX_PARQUET_OBJECT)
                .await?
                .ok_or_else(|| invalid(&m.object, "missing"))?;
            if hex::encode(Sha256::digest(&bytes)) != m.sha256 {
                return Err(invalid(&m.object, "SHA-256 differs from its manifest"));
            }
            let parsed = trailkeep_export::read_parquet(bytes, MAX_ROWS)
                .map_err(|e| invalid(&m.object, e.to_string()))?;
            if parsed.len() as u64 != m.rows {
                return Err(invalid(&m.object, "row count differs from its manifest"));
            }
            for (row, (index, hash)) in parsed.into_iter().zip(m.indexes.iter().zip(&m.leaf_hashes))
            {
                if row.index != *index
                    || row.account != account
                    || B64.encode(leaf_hash(row.event.as_bytes())) != *hash
                {
                    return Err(invalid(
                        &m.object,
                        format!("row of index {} differs from its manifest", row.index),
                    ));
                }
                rows.insert(row.index, (row.received_at_micros, row.event));
            }
        }
        if rows.len() as u64 != to - from {
            return Err(fail(format!("pass {from}..{to} is incomplete")));
        }
        imported += append_in_order(ledger, account, rows.range(have..))?;
        progress(account, imported + have, total);
    }

    // The rebuilt tree has the archived roots (checkpoints beyond the archived records, of a
    // pass cut short, cannot be checked and are counted apart).
    let size_now = ledger.tree_head(account).map_or(0, |h| h.size);
    let mut verified = 0;
    let mut beyond = 0;
    for (size, cp) in &checkpoints {
        if *size > size_now {
            beyond += 1;
            continue;
        }
        if *size > 0 && ledger.root_at(account, *size)? != cp.root {
            return Err(fail(format!(
                "the restored tree's root at size {size} differs from the archived checkpoint"
            )));
        }
        verified += 1;
    }
    Ok(AccountRestore {
        account: account.to_string(),
        records: total,
        imported,
        objects: object_count,
        checkpoints_verified: verified,
        checkpoints_beyond: beyond,
        incomplete_pass_skipped: skipped.map(|(from, to)| [from, to]),
    })
}

/// Appends `rows` (index → (receivedAt µs, event)) in order, in batches of one receive time,
/// handed to the ledger without waiting so that its group commit takes many at once.
fn append_in_order<'a>(
    ledger: &Ledger,
    account: &str,
    rows: impl Iterator<Item = (&'a u64, &'a (i64, String))>,
) -> Result<u64, RestoreError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut sent = 0usize;
    let mut expected: Vec<(u64, usize)> = Vec::new();
    let mut batch: Vec<(String, Vec<u8>)> = Vec::new();
    let mut batch_first = 0u64;
    let mut batch_time = None;
    let mut count = 0u64;
    let mut flush = |batch: &mut Vec<(String, Vec<u8>)>, first: u64, micros: i64| {
        if batch.is_empty() {
            return;
        }
        let when = if micros >= 0 {
            UNIX_EPOCH + Duration::from_micros(micros as u64)
        } else {
            UNIX_EPOCH - Duration::from_micros(micros.unsigned_abs())
        };
        let tx = tx.clone();
        expected.push((first, batch.len()));
        let seq = sent;
        sent += 1;
        ledger.append_with_time(std::mem::take(batch), when, move |r| {
            let _ = tx.send((seq, r));
        });
    };
    for (index, (micros, event)) in rows {
        if batch_time != Some(*micros) || batch.len() >= APPEND_BATCH {
            if let Some(t) = batch_time {
                flush(&mut batch, batch_first, t);
            }
            batch_first = *index;
            batch_time = Some(*micros);
        }
        batch.push((account.to_string(), event.clone().into_bytes()));
        count += 1;
    }
    if let Some(t) = batch_time {
        flush(&mut batch, batch_first, t);
    }
    drop(tx);
    let mut results: Vec<Option<_>> = (0..expected.len()).map(|_| None).collect();
    for (seq, r) in rx {
        results[seq] = Some(r);
    }
    for ((first, len), r) in expected.into_iter().zip(results) {
        let appended = r.ok_or_else(|| RestoreError::Account {
            account: account.to_string(),
            reason: "the ledger did not answer an append".into(),
        })??;
        if appended.len() != len || appended.first().map(|a| a.index) != Some(first) {
            return Err(RestoreError::Account {
                account: account.to_string(),
                reason: format!(
                    "records landed at index {:?} instead of {first}: is a server running on this data directory?",
                    appended.first().map(|a| a.index)
                ),
            });
        }
    }
    Ok(count)
}
