//! End-to-end verification of a ledger's stored data (`trailkeep verify --data-dir`).
//!
//! Reads everything without changing anything: every frame of every segment (CRC, structure,
//! positions, account indexes), every record's leaf against the stored tree, every stored tree
//! level against a recomputation, and every kept checkpoint (signature, origin, root at its size).
//! Each problem is reported with the account and index it concerns. Two layers are kept apart:
//! CRCs catch torn writes and bit rot ([`ProblemKind::Damaged`], [`ProblemKind::Truncated`]); the
//! hash chain and signatures catch deliberate edits with recomputed CRCs
//! ([`ProblemKind::Altered`], [`ProblemKind::TreeMismatch`], [`ProblemKind::CheckpointMismatch`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use crate::error::{Error, Result};
use crate::frame::{self, BODY_FIXED_LEN, FRAME_HEADER_LEN};
use crate::history;
use crate::ledger::{KEY_NAME, META_NAME, PUBKEY_NAME, decode_meta};
use crate::merkle::{Frontier, Hash};
use crate::note::{Checkpoint, NoteSigner, NoteVerifier};
use crate::segment::{self, SegmentKind};
use crate::storage::{LocalDir, Storage};
use crate::tiles::{TILE_HEIGHT, TILE_LEVELS, level_file};

/// What kind of problem was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProblemKind {
    /// Bytes fail their CRC or do not decode (a flipped byte, bit rot).
    Damaged,
    /// A record decodes but its leaf hash differs from the tree's (content edited, CRC redone).
    Altered,
    /// A record the tree or a checkpoint covers is not in the log (deleted).
    Missing,
    /// A record that should not be there: a second record for an index or position.
    Inserted,
    /// A record stored out of position order (reordered).
    OutOfOrder,
    /// A segment ends early (cut off, or a torn tail not yet repaired by opening the ledger).
    Truncated,
    /// Stored tree hashes disagree with the recomputation from the leaves.
    TreeMismatch,
    /// A checkpoint whose signature, origin or form is invalid (replaced or forged).
    CheckpointInvalid,
    /// A validly signed checkpoint whose root differs from the stored tree at its size.
    CheckpointMismatch,
    /// A record body removed (a tombstone) that no retention record in the account's log,
    /// covered by a signed checkpoint, states.
    UnrecordedRemoval,
    /// Anything else structural (metadata, names, missing key).
    Format,
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProblemKind::Damaged => "damaged",
            ProblemKind::Altered => "altered",
            ProblemKind::Missing => "missing",
            ProblemKind::Inserted => "inserted",
            ProblemKind::OutOfOrder => "out-of-order",
            ProblemKind::Truncated => "truncated",
            ProblemKind::TreeMismatch => "tree-mismatch",
            ProblemKind::CheckpointInvalid => "checkpoint-invalid",
            ProblemKind::CheckpointMismatch => "checkpoint-mismatch",
            ProblemKind::UnrecordedRemoval => "unrecorded-removal",
            ProblemKind::Format => "format",
        })
    }
}

/// One problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What kind.
    pub kind: ProblemKind,
    /// The account concerned, when known.
    pub account: Option<String>,
    /// The record index (first of a run) concerned, when known.
    pub index: Option<u64>,
    /// Number of consecutive indexes concerned (1 for a single record).
    pub count: u64,
    /// The global position, when known.
    pub position: Option<u64>,
    /// The stored object and byte offset (`seg/…log@1234`), when known.
    pub location: Option<String>,
    /// Human-readable explanation.
    pub detail: String,
}

impl Problem {
    fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            account: None,
            index: None,
            count: 1,
            position: None,
            location: None,
            detail: detail.into(),
        }
    }

    fn account(mut self, a: &str) -> Self {
        self.account = Some(a.to_owned());
        self
    }

    fn index(mut self, i: u64) -> Self {
        self.index = Some(i);
        self
    }

    fn at(mut self, loc: impl Into<String>) -> Self {
        self.location = Some(loc.into());
        self
    }

    fn position(mut self, p: u64) -> Self {
        self.position = Some(p);
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<19}", self.kind.to_string())?;
        match (&self.account, self.index) {
            (Some(a), Some(i)) if self.count > 1 => write!(f, " {a}/{i}..={}", i + self.count - 1)?,
            (Some(a), Some(i)) => write!(f, " {a}/{i}")?,
            (Some(a), None) => write!(f, " {a}")?,
            _ => {}
        }
        if let Some(p) = self.position {
            write!(f, " (position {p})")?;
        }
        if let Some(l) = &self.location {
            write!(f, " [{l}]")?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// Per-account results.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccountReport {
    /// The account.
    pub account: String,
    /// Records found in segments.
    pub records: u64,
    /// Leaves in the stored tree.
    pub tree_size: u64,
    /// Checkpoints checked.
    pub checkpoints: u64,
    /// Size of the latest valid checkpoint.
    pub latest_checkpoint: Option<u64>,
    /// Records whose bodies retention removed (tombstones), each covered by a retention record.
    pub removed: u64,
}

/// The result of a verification.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerifyReport {
    /// Per account, sorted by name.
    pub accounts: Vec<AccountReport>,
    /// Records read.
    pub records: u64,
    /// Segments read.
    pub segments: u64,
    /// Checkpoints checked.
    pub checkpoints: u64,
    /// Segment bytes read.
    pub bytes: u64,
    /// Every problem found, sorted by account and index.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// True when no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Problems per kind.
    pub fn counts(&self) -> BTreeMap<ProblemKind, u64> {
        let mut m = BTreeMap::new();
        for p in &self.problems {
            *m.entry(p.kind).or_default() += 1;
        }
        m
    }

    /// Problems of one kind.
    pub fn of_kind(&self, kind: ProblemKind) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(move |p| p.kind == kind)
    }

    /// The one-line summary.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} records in {} segments, {} accounts, {} checkpoints: ",
            self.records,
            self.segments,
            self.accounts.len(),
            self.checkpoints
        );
        let removed: u64 = self.accounts.iter().map(|a| a.removed).sum();
        if removed > 0 {
            s = format!(
                "{}, {removed} bodies removed by recorded retention: ",
                s.trim_end_matches(": ")
            );
        }
        if self.is_ok() {
            s.push_str("OK");
        } else {
            let parts: Vec<String> = self
                .counts()
                .iter()
                .map(|(k, n)| format!("{n} {k}"))
                .collect();
            s.push_str(&format!(
                "{} problems ({})",
                self.problems.len(),
                parts.join(", ")
            ));
        }
        s
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.problems {
            writeln!(f, "{p}")?;
        }
        write!(f, "{}", self.summary())
    }
}

/// Progress of a verification, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// `"segments"` (units: bytes) or `"trees"` (units: accounts).
    pub phase: &'static str,
    /// Units done.
    pub done: u64,
    /// Units in total.
    pub total: u64,
}

/// Options for [`verify_storage`].
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// A pinned verifier key (`name+hash+base64`); by default the key stored with the data.
    pub verifier_key: Option<String>,
    /// A signing-key file to derive the verifier from (when the key is kept outside the data).
    pub key_path: Option<PathBuf>,
    /// Worker threads for reading segments (default 2).
    pub threads: Option<usize>,
}

/// Verify the ledger stored in directory `path` with default options.
pub fn verify_data_dir(path: &Path, progress: impl FnMut(&Progress)) -> Result<VerifyReport> {
    let storage = LocalDir::existing(path)?;
    verify_storage(&storage, &VerifyOptions::default(), progress)
}

struct Obs {
    position: u64,
    account: Arc<str>,
    index: u64,
    leaf: Hash,
    /// Byte offset of the frame in the segment, or of its block (then `in_block` is the offset
    /// inside the uncompressed block). Formatted only when a problem is reported.
    offset: u64,
    in_block: Option<u32>,
    /// For a tombstone: the index of the retention record that states the removal.
    removed_by: Option<u64>,
}

impl Obs {
    fn location(&self, segment: &str) -> String {
        match self.in_block {
            Some(k) => format!("{segment}@{}+{k}", self.offset),
            None => format!("{segment}@{}", self.offset),
        }
    }
}

#[derive(Default)]
struct SegOut {
    obs: Vec<Obs>,
    problems: Vec<Problem>,
    /// (account, index) of records whose bytes are damaged.
    damaged: Vec<(String, u64)>,
    records: u64,
    /// Retention statements found: (account, index of the statement, range stated).
    statements: Vec<(Arc<str>, u64, crate::retention::Statement)>,
}

impl SegOut {
    fn observe(
        &mut self,
        names: &mut HashMap<String, Arc<str>>,
        r: &frame::RawRecord<'_>,
        offset: u64,
        in_block: Option<u32>,
    ) {
        let account = intern(names, r.account);
        if !r.removed
            && let Some(s) = crate::retention::parse_statement(r.data)
        {
            self.statements.push((account.clone(), r.index, s));
        }
        self.records += 1;
        self.obs.push(Obs {
            position: r.position,
            account,
            index: r.index,
            leaf: r.leaf(),
            offset,
            in_block,
            removed_by: r.tombstone().map(|(_, by)| by),
        });
    }
}

/// Best-effort (account, index, position) of a frame whose CRC failed.
fn peek_frame(buf: &[u8]) -> Option<(String, u64, u64)> {
    let body = buf.get(FRAME_HEADER_LEN..)?;
    if body.len() < BODY_FIXED_LEN {
        return None;
    }
    let position = u64::from_le_bytes(body[0..8].try_into().ok()?);
    let index = u64::from_le_bytes(body[8..16].try_into().ok()?);
    let alen = body[frame::ACCOUNT_LEN_AT] as usize;
    let a = std::str::from_utf8(body.get(BODY_FIXED_LEN..BODY_FIXED_LEN + alen)?).ok()?;
    frame::valid_account(a).then(|| (a.to_owned(), index, position))
}

fn intern(map: &mut HashMap<String, Arc<str>>, a: &str) -> Arc<str> {
    if let Some(x) = map.get(a) {
        return x.clone();
    }
    let x: Arc<str> = Arc::from(a);
    map.insert(a.to_owned(), x.clone());
    x
}

fn check_plain(name: &str, buf: &[u8], tick: &dyn Fn(u64)) -> SegOut {
    let mut out = SegOut::default();
    let mut names = HashMap::new();
    let header = match segment::decode_header(buf) {
        Ok(h) => h,
        Err(e) => {
            out.problems.push(
                Problem::new(
                    ProblemKind::Damaged,
                    format!("segment header: {}", e.reason),
                )
                .at(format!("{name}@{}", e.offset)),
            );
            return out;
        }
    };
    if header.kind != SegmentKind::Plain {
        out.problems.push(
            Problem::new(ProblemKind::Format, "a .log segment with a sealed header").at(name),
        );
        return out;
    }
    let mut off = segment::HEADER_LEN;
    let mut ticked = 0usize;
    while off < buf.len() {
        let rest = &buf[off..];
        match frame::decode_frame(rest) {
            Ok((r, n)) => {
                if r.removed {
                    out.problems.push(
                        Problem::new(ProblemKind::Damaged, "a tombstone in a plain segment")
                            .account(r.account)
                            .index(r.index)
                            .position(r.position)
                            .at(format!("{name}@{off}")),
                    );
                }
                out.observe(&mut names, &r, off as u64, None);
                off += n;
            }
            Err(frame::FrameError::Truncated { needed, available }) => {
                let mut p = Problem::new(
                    ProblemKind::Truncated,
                    format!("segment ends inside a frame ({available} of {needed} bytes)"),
                )
                .at(format!("{name}@{off}"));
                if let Some((a, i, pos)) = peek_frame(rest) {
                    p = p.account(&a).index(i).position(pos);
                    out.damaged.push((a, i));
                }
                out.problems.push(p);
                break;
            }
            Err(e) => {
                let body_len = u32::from_le_bytes(rest[0..4].try_into().expect("4")) as usize;
                let mut p =
                    Problem::new(ProblemKind::Damaged, e.to_string()).at(format!("{name}@{off}"));
                if let Some((a, i, pos)) = peek_frame(rest) {
                    p = p.account(&a).index(i).position(pos);
                    out.damaged.push((a, i));
                }
                out.problems.push(p);
                let n = FRAME_HEADER_LEN + body_len;
                if matches!(e, frame::FrameError::Crc { .. }) && n <= rest.len() {
                    off += n;
                } else {
                    out.problems.push(
                        Problem::new(
                            ProblemKind::Damaged,
                            format!("{} bytes after an undecodable frame skipped", rest.len()),
                        )
                        .at(format!("{name}@{off}")),
                    );
                    break;
                }
            }
        }
        if off - ticked > 1 << 20 {
            tick((off - ticked) as u64);
            ticked = off;
        }
    }
    tick((buf.len() - ticked) as u64);
    out
}

fn check_sealed(name: &str, buf: &[u8], tick: &dyn Fn(u64)) -> SegOut {
    let mut out = SegOut::default();
    let mut names = HashMap::new();
    let idx = match segment::parse_sealed(buf) {
        Ok(i) => i,
        Err(e) => {
            let kind = if e.reason.contains("truncated") || e.reason.contains("too short") {
                ProblemKind::Truncated
            } else {
                ProblemKind::Damaged
            };
            out.problems.push(
                Problem::new(kind, format!("sealed segment unreadable: {}", e.reason))
                    .at(format!("{name}@{}", e.offset)),
            );
            tick(buf.len() as u64);
            return out;
        }
    };
    // A damaged dictionary makes every block of the segment unreadable; each record is then
    // reported damaged with the dictionary's fault.
    let dictionary = segment::load_dictionary(&idx, buf).map_err(|e| {
        format!(
            "{name}@{}: the segment's dictionary is unusable: {}",
            e.offset, e.reason
        )
    });
    for b in &idx.blocks {
        let start = b.offset as usize;
        let compressed = &buf[start..start + b.compressed_len as usize];
        let first_rec = (b.first_position - idx.header.first_position) as usize;
        let table = &idx.records[first_rec..first_rec + b.record_count as usize];
        let damaged_block = |out: &mut SegOut, reason: String| {
            for (k, (ord, index)) in table.iter().enumerate() {
                let a = &idx.accounts[*ord as usize];
                out.problems.push(
                    Problem::new(ProblemKind::Damaged, reason.clone())
                        .account(a)
                        .index(*index)
                        .position(b.first_position + k as u64)
                        .at(format!("{name}@{}", b.offset)),
                );
                out.damaged.push((a.clone(), *index));
            }
        };
        let dict = match &dictionary {
            Ok(d) => d.as_ref(),
            Err(reason) => {
                damaged_block(&mut out, reason.clone());
                continue;
            }
        };
        let raw = match segment::open_block_with(b, compressed, dict) {
            Ok(r) => r,
            Err(e) => {
                damaged_block(&mut out, e.reason);
                continue;
            }
        };
        let mut off = 0usize;
        let mut k = 0usize;
        while off < raw.len() {
            match frame::decode_frame(&raw[off..]) {
                Ok((r, n)) => {
                    let table_removed = idx.removed.get(first_rec + k).copied().unwrap_or(false);
                    if let Some((ord, index)) = table.get(k)
                        && (idx.accounts[*ord as usize] != r.account
                            || *index != r.index
                            || table_removed != r.removed)
                    {
                        out.problems.push(
                            Problem::new(
                                ProblemKind::Damaged,
                                format!(
                                    "record table says {}/{index}{}, record says {}/{}{}",
                                    idx.accounts[*ord as usize],
                                    if table_removed { " (removed)" } else { "" },
                                    r.account,
                                    r.index,
                                    if r.removed { " (removed)" } else { "" },
                                ),
                            )
                            .account(r.account)
                            .index(r.index)
                            .position(r.position)
                            .at(format!("{name}@{}", b.offset)),
                        );
                    }
                    out.observe(&mut names, &r, b.offset, Some(off as u32));
                    off += n;
                    k += 1;
                }
                Err(e) => {
                    damaged_block(&mut out, format!("block byte {off}: {e}"));
                    break;
                }
            }
        }
        tick(u64::from(b.compressed_len));
    }
    tick(
        (buf.len() as u64)
            .saturating_sub(idx.blocks.iter().map(|b| u64::from(b.compressed_len)).sum()),
    );
    out
}

fn load_verifier(
    storage: &dyn Storage,
    opts: &VerifyOptions,
    problems: &mut Vec<Problem>,
) -> Result<Option<NoteVerifier>> {
    if let Some(k) = &opts.verifier_key {
        return NoteVerifier::parse(k)
            .map(Some)
            .map_err(|e| Error::Invalid(format!("verifier key: {e}")));
    }
    if let Some(p) = &opts.key_path {
        let text = std::fs::read_to_string(p)?;
        return NoteSigner::from_private_string(&text)
            .map(|s| Some(s.verifier()))
            .map_err(|e| Error::Key(e.to_string()));
    }
    let from_private = storage
        .get(KEY_NAME)?
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|t| NoteSigner::from_private_string(&t).ok())
        .map(|s| s.verifier());
    let from_public = storage
        .get(PUBKEY_NAME)?
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|t| NoteVerifier::parse(&t).ok());
    match (from_private, from_public) {
        (Some(a), Some(b)) if a != b => {
            problems.push(
                Problem::new(
                    ProblemKind::Format,
                    "public key does not match the signing key",
                )
                .at(PUBKEY_NAME),
            );
            Ok(Some(a))
        }
        (Some(a), _) => Ok(Some(a)),
        (None, Some(b)) => Ok(Some(b)),
        (None, None) => {
            problems.push(Problem::new(
                ProblemKind::Format,
                "no verifier key found: checkpoint signatures cannot be checked (pass one)",
            ));
            Ok(None)
        }
    }
}

/// Verify the ledger held in `storage`. Fails only when the data cannot be examined at all (I/O
/// errors, a newer format); everything else is a [`Problem`] in the report.
pub fn verify_storage(
    storage: &dyn Storage,
    opts: &VerifyOptions,
    mut progress: impl FnMut(&Progress),
) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let mut problems = Vec::new();
    match storage.get(META_NAME)? {
        None => problems
            .push(Problem::new(ProblemKind::Format, "metadata object missing").at(META_NAME)),
        Some(m) => match decode_meta(&m) {
            Ok(_) => {}
            Err(e @ Error::UpgradeRequired { .. }) => return Err(e),
            Err(e) => problems.push(Problem::new(ProblemKind::Format, e.to_string()).at(META_NAME)),
        },
    }
    let verifier = load_verifier(storage, opts, &mut problems)?;

    // Segments, read in parallel, merged in order.
    let mut segs: Vec<(u64, SegmentKind, String)> = Vec::new();
    for name in storage.list("seg/")? {
        match segment::parse_name(&name) {
            Some((first, kind)) => segs.push((first, kind, name)),
            None => problems.push(Problem::new(ProblemKind::Format, "unexpected object").at(&name)),
        }
    }
    segs.sort_by_key(|s| (s.0, s.1 == SegmentKind::Plain));
    // A plain segment superseded by its sealed copy (crash between seal and delete) is skipped.
    let sealed_starts: HashSet<u64> = segs
        .iter()
        .filter(|s| s.1 == SegmentKind::Sealed)
        .map(|s| s.0)
        .collect();
    segs.retain(|s| s.1 == SegmentKind::Sealed || !sealed_starts.contains(&s.0));
    let mut total = 0u64;
    for s in &segs {
        total += storage.size(&s.2)?.unwrap_or(0);
    }
    report.segments = segs.len() as u64;
    report.bytes = total;
    let threads = opts.threads.unwrap_or(2).clamp(1, 16);
    let next = AtomicUsize::new(0);
    let mut outs: Vec<Option<SegOut>> = (0..segs.len()).map(|_| None).collect();
    let (tx, rx) = mpsc::channel::<(Option<(usize, SegOut)>, u64, Option<Error>)>();
    std::thread::scope(|scope| {
        for _ in 0..threads.min(segs.len().max(1)) {
            let tx = tx.clone();
            let segs = &segs;
            let next = &next;
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((_, kind, name)) = segs.get(i) else {
                        break;
                    };
                    let bytes = match storage.get(name) {
                        Ok(b) => b.unwrap_or_default(),
                        Err(e) => {
                            let _ = tx.send((None, 0, Some(e.into())));
                            break;
                        }
                    };
                    let tick = |n: u64| {
                        let _ = tx.send((None, n, None));
                    };
                    let out = match kind {
                        SegmentKind::Plain => check_plain(name, &bytes, &tick),
                        SegmentKind::Sealed => check_sealed(name, &bytes, &tick),
                    };
                    let _ = tx.send((Some((i, out)), 0, None));
                }
            });
        }
        drop(tx);
    });
    let mut done = 0u64;
    let mut first_err = None;
    progress(&Progress {
        phase: "segments",
        done,
        total,
    });
    for (out, n, err) in rx {
        if let Some((i, o)) = out {
            outs[i] = Some(o);
        }
        if n > 0 {
            done += n;
            progress(&Progress {
                phase: "segments",
                done: done.min(total),
                total,
            });
        }
        if let Some(e) = err {
            first_err.get_or_insert(e);
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }

    // Merge: positions, account indexes.
    #[derive(Default)]
    struct Acct {
        leaves: Vec<Option<Hash>>,
        records: u64,
        /// Tombstones: (index, retention record index, position, location).
        tombstones: Vec<(u64, u64, u64, String)>,
        /// Retention statements: index → range.
        statements: HashMap<u64, crate::retention::Statement>,
    }
    let mut accts: BTreeMap<String, Acct> = BTreeMap::new();
    let mut damaged: HashSet<(String, u64)> = HashSet::new();
    let mut expected = 0u64;
    let mut gaps: BTreeSet<u64> = BTreeSet::new();
    // A forged position far ahead would make the per-account tables huge; such records are
    // reported instead of tracked.
    const MAX_JUMP: u64 = 1 << 20;
    for ((first, _, name), out) in segs.iter().zip(outs) {
        let out = out.unwrap_or_default();
        report.records += out.records;
        problems.extend(out.problems);
        damaged.extend(out.damaged);
        for (a, i, st) in out.statements {
            accts
                .entry(a.to_string())
                .or_default()
                .statements
                .insert(i, st);
        }
        if *first > expected && *first - expected < MAX_JUMP {
            gaps.extend(expected..*first);
            expected = *first;
        } else if *first != expected {
            problems.push(
                Problem::new(
                    ProblemKind::Format,
                    format!("segment starts at position {first}, expected {expected}"),
                )
                .at(name),
            );
        }
        for o in out.obs {
            let prob = |kind, detail: String| {
                Problem::new(kind, detail)
                    .account(&o.account)
                    .index(o.index)
                    .position(o.position)
                    .at(o.location(name))
            };
            if o.position == expected {
                expected += 1;
            } else if o.position > expected {
                if o.position - expected >= MAX_JUMP {
                    problems.push(prob(
                        ProblemKind::Inserted,
                        format!("position {} is far beyond {expected}", o.position),
                    ));
                    continue;
                }
                gaps.extend(expected..o.position);
                expected = o.position + 1;
            } else if gaps.remove(&o.position) {
                problems.push(prob(
                    ProblemKind::OutOfOrder,
                    format!(
                        "position {} stored after position {}",
                        o.position,
                        expected - 1
                    ),
                ));
            } else {
                problems.push(prob(
                    ProblemKind::Inserted,
                    format!("a second record claims position {}", o.position),
                ));
                continue;
            }
            let a = accts.entry(o.account.to_string()).or_default();
            if o.index > o.position {
                problems.push(prob(ProblemKind::Damaged, "index exceeds position".into()));
                continue;
            }
            let i = o.index as usize;
            if i < a.leaves.len() && a.leaves[i].is_some() {
                problems.push(prob(
                    ProblemKind::Inserted,
                    format!("a second record claims {}/{}", o.account, o.index),
                ));
                continue;
            }
            if a.leaves.len() <= i {
                a.leaves.resize(i + 1, None);
            }
            a.leaves[i] = Some(o.leaf);
            a.records += 1;
            if let Some(by) = o.removed_by {
                a.tombstones
                    .push((o.index, by, o.position, o.location(name)));
            }
        }
    }

    // Accounts with stored trees or checkpoints but no records.
    for a in storage.list_children("log/")? {
        if frame::valid_account(&a) && !accts.contains_key(&a) {
            accts.insert(a.clone(), Acct::default());
        }
    }

    let n_accts = accts.len() as u64;
    for (k, (account, acct)) in accts.into_iter().enumerate() {
        progress(&Progress {
            phase: "trees",
            done: k as u64,
            total: n_accts,
        });
        let mut ar = AccountReport {
            account: account.clone(),
            records: acct.records,
            ..Default::default()
        };
        check_account(
            storage,
            verifier.as_ref(),
            &account,
            &acct.leaves,
            &damaged,
            &mut ar,
            &mut problems,
        )?;
        check_removals(
            &account,
            &acct.tombstones,
            &acct.statements,
            &mut ar,
            &mut problems,
        );
        report.checkpoints += ar.checkpoints;
        report.accounts.push(ar);
    }
    progress(&Progress {
        phase: "trees",
        done: n_accts,
        total: n_accts,
    });
    problems.sort_by(|a, b| {
        (&a.account, a.index, a.kind, &a.location).cmp(&(&b.account, b.index, b.kind, &b.location))
    });
    report.problems = problems;
    Ok(report)
}

/// Every tombstone must be stated by a retention record of the same log that is itself present,
/// follows the removed range, is covered by a valid signed checkpoint and names the index.
fn check_removals(
    account: &str,
    tombstones: &[(u64, u64, u64, String)],
    statements: &HashMap<u64, crate::retention::Statement>,
    ar: &mut AccountReport,
    problems: &mut Vec<Problem>,
) {
    let signed = ar.latest_checkpoint.unwrap_or(0);
    for (index, by, position, location) in tombstones {
        let why = match statements.get(by) {
            _ if by <= index => Some(format!(
                "the tombstone names record {by} as its retention record, which does not follow it"
            )),
            None => Some(format!(
                "body removed, but record {account}/{by} is no retention record (or is missing)"
            )),
            Some(s) if !(s.from..s.to).contains(index) => Some(format!(
                "body removed, but the retention record {account}/{by} states only [{}, {})",
                s.from, s.to
            )),
            Some(_) if *by >= signed => Some(format!(
                "body removed, but the retention record {account}/{by} is not covered by a signed checkpoint (latest size {signed})"
            )),
            Some(_) => None,
        };
        match why {
            Some(why) => problems.push(
                Problem::new(ProblemKind::UnrecordedRemoval, why)
                    .account(account)
                    .index(*index)
                    .position(*position)
                    .at(location.clone()),
            ),
            None => ar.removed += 1,
        }
    }
}

/// One checkpoint found in storage.
struct KeptNote {
    location: String,
    bytes: Vec<u8>,
    is_latest: bool,
    /// For the first note of a chunk: the size its chunk's name gives.
    named: Option<Option<u64>>,
}

fn read_hashes(
    storage: &dyn Storage,
    name: &str,
    problems: &mut Vec<Problem>,
    account: &str,
) -> Result<Vec<Hash>> {
    let bytes = storage.get(name)?.unwrap_or_default();
    if bytes.len() % 32 != 0 {
        problems.push(
            Problem::new(
                ProblemKind::Truncated,
                "hash file length is not a multiple of 32",
            )
            .account(account)
            .at(name),
        );
    }
    Ok(bytes
        .chunks_exact(32)
        .map(|c| c.try_into().expect("32"))
        .collect())
}

#[allow(clippy::too_many_arguments)]
fn check_account(
    storage: &dyn Storage,
    verifier: Option<&NoteVerifier>,
    account: &str,
    leaves: &[Option<Hash>],
    damaged: &HashSet<(String, u64)>,
    ar: &mut AccountReport,
    problems: &mut Vec<Problem>,
) -> Result<()> {
    let prefix = format!("log/{account}/");
    let mut levels = Vec::new();
    for l in 0..TILE_LEVELS {
        levels.push(read_hashes(
            storage,
            &level_file(&prefix, l),
            problems,
            account,
        )?);
    }
    ar.tree_size = levels[0].len() as u64;

    // Checkpoints: history and latest.
    let mut checkpoints: BTreeMap<u64, Hash> = BTreeMap::new();
    let mut history_text: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut notes: Vec<KeptNote> = Vec::new();
    for name in storage.list(&history::chunk_prefix(account))? {
        let bytes = storage.get(&name)?.unwrap_or_default();
        let chunk = history::parse(&bytes);
        if let Some((off, reason)) = &chunk.tail {
            problems.push(
                Problem::new(
                    ProblemKind::Truncated,
                    format!("kept checkpoints: {reason}"),
                )
                .account(account)
                .at(format!("{name}@{off}")),
            );
        }
        let named = name.rsplit('/').next().and_then(|s| s.parse::<u64>().ok());
        for (k, (off, text)) in chunk.notes.into_iter().enumerate() {
            notes.push(KeptNote {
                location: format!("{name}@{off}"),
                bytes: text.into_bytes(),
                is_latest: false,
                named: (k == 0).then_some(named),
            });
        }
    }
    let latest_name = format!("{prefix}checkpoint");
    if let Some(bytes) = storage.get(&latest_name)? {
        notes.push(KeptNote {
            location: latest_name.clone(),
            bytes,
            is_latest: true,
            named: None,
        });
    }
    for KeptNote {
        location,
        bytes,
        is_latest,
        named,
    } in &notes
    {
        let is_latest = *is_latest;
        ar.checkpoints += 1;
        let bad = |detail: String| {
            Problem::new(ProblemKind::CheckpointInvalid, detail)
                .account(account)
                .at(location.clone())
        };
        let Some(verifier) = verifier else { continue };
        let Ok(text) = std::str::from_utf8(bytes) else {
            problems.push(bad("not UTF-8".into()));
            continue;
        };
        let body = match verifier.open(text) {
            Ok(b) => b,
            Err(e) => {
                problems.push(bad(format!("signature check failed: {e}")));
                continue;
            }
        };
        let cp = match Checkpoint::parse(body) {
            Ok(c) => c,
            Err(e) => {
                problems.push(bad(e.to_string()));
                continue;
            }
        };
        if !cp.origin.ends_with(&format!("/{account}")) {
            problems.push(bad(format!("origin {:?} is not this account's", cp.origin)));
            continue;
        }
        if is_latest {
            if let Some(h) = history_text.get(&cp.size)
                && h != bytes
            {
                problems.push(bad(format!(
                    "latest checkpoint differs from the kept checkpoint of size {}",
                    cp.size
                )));
            }
            ar.latest_checkpoint = Some(cp.size);
        } else {
            if let Some(named) = named
                && *named != Some(cp.size)
            {
                problems.push(bad(format!(
                    "chunk name does not match its first checkpoint's size {}",
                    cp.size
                )));
            }
            history_text.insert(cp.size, bytes.clone());
        }
        if let Some(prev) = checkpoints.insert(cp.size, cp.root)
            && prev != cp.root
        {
            problems.push(
                Problem::new(
                    ProblemKind::CheckpointInvalid,
                    format!(
                        "two validly signed checkpoints of size {} disagree (fork)",
                        cp.size
                    ),
                )
                .account(account),
            );
        }
    }
    let newest_kept = history_text.keys().max().copied();
    if let (Some(latest), Some(kept)) = (ar.latest_checkpoint, newest_kept)
        && latest < kept
    {
        problems.push(
            Problem::new(
                ProblemKind::CheckpointInvalid,
                format!("latest checkpoint (size {latest}) is older than a kept one (size {kept}): rolled back"),
            )
            .account(account)
            .at(latest_name),
        );
    }
    if ar.latest_checkpoint.is_none() {
        ar.latest_checkpoint = checkpoints.keys().next_back().copied();
    }

    let max_cp = checkpoints.keys().next_back().copied().unwrap_or(0);
    let expected = (levels[0].len() as u64)
        .max(max_cp)
        .max(leaves.len() as u64);

    // Missing records (runs), and records whose leaf differs from the tree's.
    let mut run: Option<(u64, u64)> = None;
    let flush = |run: &mut Option<(u64, u64)>, problems: &mut Vec<Problem>| {
        if let Some((s, n)) = run.take() {
            let mut p = Problem::new(
                ProblemKind::Missing,
                if n == 1 {
                    "record covered by the tree or a checkpoint is not in the log".to_string()
                } else {
                    format!("{n} records covered by the tree or a checkpoint are not in the log")
                },
            )
            .account(account)
            .index(s);
            p.count = n;
            problems.push(p);
        }
    };
    for i in 0..expected {
        let present = leaves.get(i as usize).copied().flatten();
        match present {
            None if damaged.contains(&(account.to_owned(), i)) => flush(&mut run, problems),
            None => match &mut run {
                Some((_, n)) => *n += 1,
                None => run = Some((i, 1)),
            },
            Some(h) => {
                flush(&mut run, problems);
                if let Some(stored) = levels[0].get(i as usize)
                    && *stored != h
                {
                    problems.push(
                        Problem::new(
                            ProblemKind::Altered,
                            "record bytes do not match the tree's leaf hash",
                        )
                        .account(account)
                        .index(i),
                    );
                }
            }
        }
    }
    flush(&mut run, problems);

    // Recompute the tree from the stored leaves (then record leaves past them), compare the
    // stored upper levels and every checkpoint root.
    let mut frontier = Frontier::new();
    let mut cps = checkpoints.iter().peekable();
    while let Some(&(&size, _)) = cps.peek() {
        if size == 0 {
            cps.next();
        } else {
            break;
        }
    }
    let mut mismatched_levels: HashSet<u8> = HashSet::new();
    let n_leaves = expected;
    for i in 0..n_leaves {
        let leaf = match levels[0].get(i as usize) {
            Some(h) => *h,
            None => match leaves.get(i as usize).copied().flatten() {
                Some(h) => h,
                None => break,
            },
        };
        let mut mism = Vec::new();
        frontier.push(leaf, |level, index, hash| {
            if level > 0 && level % TILE_HEIGHT == 0 {
                let l = level / TILE_HEIGHT;
                if let Some(stored) = levels[l as usize].get(index as usize)
                    && stored != hash
                {
                    mism.push((l, index));
                }
            }
        });
        for (l, index) in mism {
            if mismatched_levels.insert(l) {
                let span = 1u64 << (u32::from(l) * 8);
                let mut p = Problem::new(
                    ProblemKind::TreeMismatch,
                    format!("stored tree level {l} entry {index} differs from the recomputed hash"),
                )
                .account(account)
                .index(index * span)
                .at(level_file(&prefix, l));
                p.count = span;
                problems.push(p);
            }
        }
        while let Some(&(&size, root)) = cps.peek() {
            if size != frontier.size() {
                break;
            }
            if frontier.root() != *root {
                problems.push(
                    Problem::new(
                        ProblemKind::CheckpointMismatch,
                        format!("signed root at size {size} differs from the stored tree"),
                    )
                    .account(account)
                    .index(size - 1),
                );
            }
            cps.next();
        }
    }
    for (&size, _) in cps {
        problems.push(
            Problem::new(
                ProblemKind::CheckpointMismatch,
                format!(
                    "signed checkpoint of size {size} but only {} leaves are stored",
                    frontier.size()
                ),
            )
            .account(account)
            .index(frontier.size()),
        );
    }
    Ok(())
}
