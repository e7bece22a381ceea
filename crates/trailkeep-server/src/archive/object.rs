//! Archive objects: the key layout, Parquet objects of stored events (written by
//! `trailkeep_export::TabularWriter`, the same columns as a Parquet export), their manifests, and
//! an idempotent put that never writes an object twice.
//!
//! Layout (`docs/archive.md`), every key under the target's prefix:
//!
//! ```text
//! <account>/<location>/<yyyy>/<mm>/<dd>/<first-index>-<last-index>.parquet
//! <account>/<location>/<yyyy>/<mm>/<dd>/<first-index>-<last-index>.manifest.json
//! <account>/checkpoints/<size>.note
//! .trailkeep/verifier.key
//! ```
//!
//! No clock, no ledger: the caller hands in records, so the same records always give the same
//! bytes (which is what lets a restarted pass recognise the objects it already wrote).

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use trailkeep_export::{ExportItem, Format, TabularWriter};

use super::s3::{Bucket, S3Error};

/// Key of the verifier key object (no account id starts with a dot).
pub const VERIFIER_KEY: &str = ".trailkeep/verifier.key";
/// `format` of a manifest.
pub const MANIFEST_FORMAT: &str = "trailkeep-archive-manifest";
/// Version of the manifest written by this build.
pub const MANIFEST_VERSION: u32 = 1;
/// Largest manifest or checkpoint note read back.
pub const MAX_SMALL_OBJECT: u64 = 64 << 20;
/// Largest Parquet object read back.
pub const MAX_PARQUET_OBJECT: u64 = 1 << 30;

/// The key of `account`'s checkpoint note of tree size `size`.
pub fn checkpoint_key(account: &str, size: u64) -> String {
    format!("{account}/checkpoints/{size}.note")
}

/// A location as a key segment: `[A-Za-z0-9_-.]` kept, every other byte `%XX`, and a leading
/// dot escaped, so no location can climb out of its account's prefix.
pub fn location_segment(location: &str) -> String {
    let mut out = String::new();
    for (i, b) in location.bytes().enumerate() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => out.push(b as char),
            b'.' if i > 0 => out.push('.'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    if out.is_empty() {
        out.push_str("global");
    }
    out
}

/// The location of a stored event: its `logSourceCRN`'s, `global` when it has none.
pub fn event_location(bytes: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Src<'a> {
        #[serde(borrow, rename = "logSourceCRN", default)]
        crn: Option<std::borrow::Cow<'a, str>>,
    }
    serde_json::from_slice::<Src<'_>>(bytes)
        .ok()
        .and_then(|s| s.crn)
        .and_then(|c| {
            trailkeep_event::Crn::parse(&c)
                .ok()
                .map(|c| c.location_or_global().to_string())
        })
        .unwrap_or_else(|| "global".to_string())
}

/// The partition of one record: its location and the UTC day it was received.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Partition {
    pub location: String,
    pub year: i32,
    pub month: u8,
    pub day: u8,
}

impl Partition {
    pub fn of(bytes: &[u8], received_at_unix_nanos: i64) -> Partition {
        let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(received_at_unix_nanos))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        Partition {
            location: event_location(bytes),
            year: t.year(),
            month: u8::from(t.month()),
            day: t.day(),
        }
    }

    /// `<account>/<location>/<yyyy>/<mm>/<dd>/<first>-<last>` (without extension).
    pub fn stem(&self, account: &str, first: u64, last: u64) -> String {
        format!(
            "{account}/{}/{:04}/{:02}/{:02}/{first}-{last}",
            location_segment(&self.location),
            self.year,
            self.month,
            self.day
        )
    }
}

/// One record to archive.
#[derive(Debug, Clone)]
pub struct ArchiveRecord {
    pub index: u64,
    pub received_at_unix_nanos: i64,
    pub bytes: Vec<u8>,
}

/// The manifest beside each Parquet object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub account: String,
    pub location: String,
    /// `yyyy-mm-dd` (UTC) of the records' receive time.
    pub day: String,
    /// The Parquet object's key (relative to the target's prefix).
    pub object: String,
    /// SHA-256 (hex) and size of the Parquet object.
    pub sha256: String,
    pub bytes: u64,
    pub rows: u64,
    pub first_index: u64,
    pub last_index: u64,
    /// The indexes of the rows, in row order (ascending; other partitions of the same pass
    /// hold the indexes in between).
    pub indexes: Vec<u64>,
    /// RFC 6962 leaf hash (base64) of each row's `event` text, in row order.
    pub leaf_hashes: Vec<String>,
    /// The pass `[from, to)` this object is part of: every index of it is in exactly one
    /// object of the pass.
    pub pass_from: u64,
    pub pass_to: u64,
    /// The signed checkpoint that covers the pass (tree size and note key).
    pub checkpoint_size: u64,
    pub checkpoint: String,
}

/// A Parquet object ready to be written, with its manifest.
#[derive(Debug)]
pub struct Built {
    pub key: String,
    pub parquet: Vec<u8>,
    pub manifest_key: String,
    pub manifest: Manifest,
}

impl Built {
    pub fn manifest_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(&self.manifest).expect("a manifest serialises");
        v.push(b'\n');
        v
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Export(#[from] trailkeep_export::ExportError),
}

/// Builds one object per partition from the records of one pass `[from, to)` of `account`,
/// covered by the checkpoint of `checkpoint_size`. `records` must be exactly the pass, in order.
pub fn build_pass(
    account: &str,
    from: u64,
    to: u64,
    checkpoint_size: u64,
    records: &[ArchiveRecord],
) -> Result<Vec<Built>, BuildError> {
    let mut groups: BTreeMap<Partition, Vec<&ArchiveRecord>> = BTreeMap::new();
    for r in records {
        groups
            .entry(Partition::of(&r.bytes, r.received_at_unix_nanos))
            .or_default()
            .push(r);
    }
    let mut out = Vec::new();
    for (partition, rows) in groups {
        let first = rows.first().map_or(0, |r| r.index);
        let last = rows.last().map_or(0, |r| r.index);
        let stem = partition.stem(account, first, last);
        let mut writer = TabularWriter::new(Format::Parquet, Vec::new())?;
        let mut indexes = Vec::with_capacity(rows.len());
        let mut leaf_hashes = Vec::with_capacity(rows.len());
        for r in &rows {
            writer.write(&ExportItem {
                account,
                index: r.index,
                received_at_unix_nanos: r.received_at_unix_nanos,
                bytes: &r.bytes,
            })?;
            indexes.push(r.index);
            leaf_hashes.push(B64.encode(trailkeep_ledger::leaf_hash(&r.bytes)));
        }
        let parquet = writer.finish()?;
        let key = format!("{stem}.parquet");
        let manifest = Manifest {
            format: MANIFEST_FORMAT.into(),
            version: MANIFEST_VERSION,
            account: account.into(),
            location: partition.location.clone(),
            day: format!(
                "{:04}-{:02}-{:02}",
                partition.year, partition.month, partition.day
            ),
            object: key.clone(),
            sha256: hex::encode(Sha256::digest(&parquet)),
            bytes: parquet.len() as u64,
            rows: rows.len() as u64,
            first_index: first,
            last_index: last,
            indexes,
            leaf_hashes,
            pass_from: from,
            pass_to: to,
            checkpoint_size,
            checkpoint: checkpoint_key(account, checkpoint_size),
        };
        out.push(Built {
            key,
            parquet,
            manifest_key: format!("{stem}.manifest.json"),
            manifest,
        });
    }
    Ok(out)
}

/// What [`put_once`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object was not there and was written.
    Written,
    /// The same bytes (same size and SHA-256) were already there: nothing was written.
    AlreadyThere,
    /// Other bytes were at the key (an interrupted earlier write): they were replaced.
    Replaced,
}

/// Writes `bytes` at `key` unless the very same bytes are already there; other bytes there are
/// replaced (an interrupted earlier write of a pass being repeated).
pub async fn put_once(bucket: &Bucket, key: &str, bytes: Vec<u8>) -> Result<PutOutcome, S3Error> {
    put(bucket, key, bytes, true).await
}

/// Like [`put_once`], but other bytes at `key` are an error, not replaced: for the verifier key
/// and the signed checkpoints, which differ only if another server (another signing key, or a
/// log restored elsewhere) archives to the same bucket and prefix — its archive is not
/// overwritten.
pub async fn put_immutable(
    bucket: &Bucket,
    key: &str,
    bytes: Vec<u8>,
) -> Result<PutOutcome, S3Error> {
    put(bucket, key, bytes, false).await
}

async fn put(
    bucket: &Bucket,
    key: &str,
    bytes: Vec<u8>,
    replace: bool,
) -> Result<PutOutcome, S3Error> {
    let outcome = match bucket.head(key).await? {
        None => PutOutcome::Written,
        Some(size) => {
            let same = size == bytes.len() as u64
                && bucket
                    .get(key, size)
                    .await?
                    .is_some_and(|t| Sha256::digest(&t) == Sha256::digest(&bytes));
            if same {
                return Ok(PutOutcome::AlreadyThere);
            }
            if !replace {
                return Err(S3Error::Request {
                    key: key.to_string(),
                    message: "holds other content (another server's archive in the same bucket \
                              and prefix?); refusing to overwrite it"
                        .into(),
                });
            }
            PutOutcome::Replaced
        }
    };
    bucket.put(key, bytes).await?;
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(location: &str, n: u32) -> Vec<u8> {
        format!(
            r#"{{"action":"svc.thing.create","id":"e{n}","logSourceCRN":"crn:v1:bluemix:public:svc:{location}:a/acme:::"}}"#
        )
        .into_bytes()
    }

    #[test]
    fn a_pass_is_split_by_location_and_day_and_every_index_lands_once() {
        let day = 1_763_769_600_000_000_000i64; // 2025-11-22T00:00:00Z
        let records: Vec<ArchiveRecord> = (0..6)
            .map(|i| ArchiveRecord {
                index: 10 + i,
                received_at_unix_nanos: if i < 4 { day } else { day + 86_400_000_000_000 },
                bytes: event(if i % 2 == 0 { "eu-de" } else { "" }, i as u32),
            })
            .collect();
        let built = build_pass("acme", 10, 16, 20, &records).unwrap();
        let keys: Vec<&str> = built.iter().map(|b| b.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "acme/eu-de/2025/11/22/10-12.parquet",
                "acme/eu-de/2025/11/23/14-14.parquet",
                "acme/global/2025/11/22/11-13.parquet",
                "acme/global/2025/11/23/15-15.parquet",
            ]
        );
        let mut all: Vec<u64> = built
            .iter()
            .flat_map(|b| b.manifest.indexes.clone())
            .collect();
        all.sort();
        assert_eq!(all, (10..16).collect::<Vec<_>>());
        assert_eq!(built[0].manifest.checkpoint, "acme/checkpoints/20.note");
        // The same records give the same bytes.
        let again = build_pass("acme", 10, 16, 20, &records).unwrap();
        assert_eq!(again[0].parquet, built[0].parquet);
        assert_eq!(again[0].manifest_bytes(), built[0].manifest_bytes());
    }

    #[test]
    fn locations_cannot_escape_their_prefix() {
        assert_eq!(location_segment("eu-de"), "eu-de");
        assert_eq!(location_segment("../x"), "%2E.%2Fx");
        assert_eq!(location_segment(""), "global");
        assert_eq!(location_segment("a b"), "a%20b");
    }
}
