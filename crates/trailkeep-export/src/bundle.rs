//! Evidence bundles (format version 1, described in `docs/evidence-bundle.md`).
//!
//! A bundle is UTF-8 text, one JSON object per line (`\n`-terminated), in this order:
//!
//! 1. `{"type":"header","format":"trailkeep-evidence-bundle","version":1,"verifierKey":…,
//!    "createdAt":…,"query":…,"from":…,"to":…}`
//! 2. for each account, before its first event: `{"type":"checkpoint","account":…,
//!    "checkpoint":"<C2SP signed note>"}`
//! 3. `{"type":"event","seq":n,"account":…,"index":…,"receivedAt":…,"bytes":"<base64 of the
//!    canonical stored bytes>","proof":["<base64 hash>",…]}` — `seq` counts from 0 in file
//!    order; `proof` is the RFC 6962 / 9162 inclusion proof of leaf `index` in the tree of the
//!    account's checkpoint.
//! 4. `{"type":"end","events":n,"signature":"<signed note>"}` whose note body is
//!    `trailkeep evidence bundle v1\nevents <n>\nsha256 <hex>\n`, the hex being the SHA-256 of
//!    every byte before this line, signed by the same key as the checkpoints.
//!
//! The proofs show that each event is in its account's log as the signed checkpoint states it;
//! the signed trailer shows that no entry was added, removed, changed or moved after the server
//! wrote the bundle. [`verify`] checks both and reports every problem with its line.

use std::collections::HashMap;
use std::fmt;
use std::io::{BufRead, Read, Write};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use trailkeep_ledger::verifier::{ProofError, verify_inclusion};
use trailkeep_ledger::{Checkpoint, Hash, NoteVerifier, leaf_hash};

use crate::{ExportError, ExportItem, format_time};

/// The media type of a bundle.
pub const CONTENT_TYPE: &str = "application/vnd.trailkeep.evidence-bundle+jsonl";
/// The `format` of the header line.
pub const FORMAT_NAME: &str = "trailkeep-evidence-bundle";
/// The format version this crate writes and reads.
pub const VERSION: u64 = 1;
/// First line of the signed trailer's note body.
pub const TRAILER_TITLE: &str = "trailkeep evidence bundle v1";
/// Longest line a reader accepts (an event line holds at most a few hundred KiB).
pub const MAX_LINE_BYTES: usize = 4 << 20;
/// Most hashes an inclusion proof may hold (a tree of 2^64 leaves needs 64).
pub const MAX_PROOF_HASHES: usize = 64;
/// Most accounts (checkpoints) one bundle may hold.
pub const MAX_ACCOUNTS: usize = 100_000;
/// Problems listed one by one in a report; more are only counted.
pub const MAX_LISTED_PROBLEMS: usize = 200;

/// One line of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Entry {
    /// The first line.
    #[serde(rename_all = "camelCase")]
    Header {
        format: String,
        version: u64,
        verifier_key: String,
        created_at: String,
        query: String,
        from: Option<String>,
        to: Option<String>,
    },
    /// An account's signed checkpoint.
    Checkpoint { account: String, checkpoint: String },
    /// One event with its inclusion proof.
    #[serde(rename_all = "camelCase")]
    Event {
        seq: u64,
        account: String,
        index: u64,
        received_at: String,
        /// Base64 of the canonical stored bytes.
        bytes: String,
        /// Base64 hashes, leaf to root.
        proof: Vec<String>,
    },
    /// The signed trailer.
    End { events: u64, signature: String },
}

/// What the header says besides the key.
#[derive(Debug, Clone, Default)]
pub struct HeaderInfo {
    /// When the bundle was made (RFC 3339).
    pub created_at: String,
    /// The query that selected the events.
    pub query: String,
    /// The time range asked for.
    pub from: Option<String>,
    pub to: Option<String>,
}

/// Writes a bundle line by line, keeping the running digest for the signed trailer.
pub struct BundleWriter<W: Write> {
    out: W,
    digest: Sha256,
    events: u64,
    line: Vec<u8>,
    accounts: std::collections::HashSet<String>,
}

impl<W: Write> fmt::Debug for BundleWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BundleWriter")
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl<W: Write> BundleWriter<W> {
    /// Starts a bundle: writes the header line.
    pub fn new(out: W, verifier_key: &str, info: &HeaderInfo) -> Result<Self, ExportError> {
        let mut w = Self {
            out,
            digest: Sha256::new(),
            events: 0,
            line: Vec::with_capacity(4096),
            accounts: Default::default(),
        };
        w.entry(&Entry::Header {
            format: FORMAT_NAME.into(),
            version: VERSION,
            verifier_key: verifier_key.into(),
            created_at: info.created_at.clone(),
            query: info.query.clone(),
            from: info.from.clone(),
            to: info.to.clone(),
        })?;
        Ok(w)
    }

    fn entry(&mut self, e: &Entry) -> Result<(), ExportError> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, e).map_err(std::io::Error::from)?;
        self.line.push(b'\n');
        self.digest.update(&self.line);
        self.out.write_all(&self.line)?;
        Ok(())
    }

    /// Whether `account`'s checkpoint was written.
    pub fn has_checkpoint(&self, account: &str) -> bool {
        self.accounts.contains(account)
    }

    /// Writes `account`'s signed checkpoint (once, before its first event).
    pub fn checkpoint(&mut self, account: &str, note: &str) -> Result<(), ExportError> {
        if !self.accounts.insert(account.to_string()) {
            return Err(ExportError::Format(format!(
                "a second checkpoint for account {account}"
            )));
        }
        self.entry(&Entry::Checkpoint {
            account: account.into(),
            checkpoint: note.into(),
        })
    }

    /// Writes one event with its inclusion proof against its account's checkpoint.
    pub fn event(&mut self, item: &ExportItem<'_>, proof: &[Hash]) -> Result<(), ExportError> {
        self.prepared(&PreparedEvent::new(item, proof))
    }

    /// Writes one event made ready by [`PreparedEvent::new`] (perhaps on another thread): the
    /// same line [`BundleWriter::event`] writes.
    pub fn prepared(&mut self, event: &PreparedEvent) -> Result<(), ExportError> {
        if !self.has_checkpoint(&event.account) {
            return Err(ExportError::Format(format!(
                "event {}/{} comes before its account's checkpoint",
                event.account, event.index
            )));
        }
        let seq = self.events;
        self.line.clear();
        self.line.extend_from_slice(EVENT_LINE_START);
        self.line
            .extend_from_slice(itoa_u64(seq, &mut [0u8; 20]).as_bytes());
        self.line.extend_from_slice(&event.rest);
        self.digest.update(&self.line);
        self.out.write_all(&self.line)?;
        self.events += 1;
        Ok(())
    }

    /// Events written so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// The note body the trailer's signature covers (the digest of everything written so far).
    pub fn trailer_body(&self) -> String {
        trailer_body(self.events, &hex::encode(self.digest.clone().finalize()))
    }

    /// Writes the signed trailer; `sign` turns [`BundleWriter::trailer_body`] into a signed note.
    pub fn finish(
        mut self,
        sign: impl FnOnce(&str) -> Result<String, String>,
    ) -> Result<W, ExportError> {
        let note = sign(&self.trailer_body())
            .map_err(|e| ExportError::Format(format!("signing the bundle: {e}")))?;
        self.entry(&Entry::End {
            events: self.events,
            signature: note,
        })?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// What an event line starts with, up to its `seq`.
const EVENT_LINE_START: &[u8] = br#"{"type":"event","seq":"#;

/// `n` in decimal, in `buf`.
fn itoa_u64(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).expect("digits")
}

/// An event line of a bundle but for its `seq`, which the writer gives it: the base64 of the
/// event's bytes and of its proof's hashes, encoded wherever the caller likes (an export
/// prepares them on the thread that reads the events, while another hashes and writes the
/// file). The line is exactly what serializing [`Entry::Event`] makes (a test compares them).
#[derive(Debug, Clone)]
pub struct PreparedEvent {
    account: String,
    index: u64,
    /// Everything after the `seq` value, the newline included.
    rest: Vec<u8>,
}

impl PreparedEvent {
    /// Encodes `item` and its inclusion `proof` against its account's checkpoint.
    pub fn new(item: &ExportItem<'_>, proof: &[Hash]) -> Self {
        let received = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(
            item.received_at_unix_nanos,
        ))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let b64_len = |n: usize| n.div_ceil(3) * 4;
        let mut rest = Vec::with_capacity(
            item.account.len() + b64_len(item.bytes.len()) + proof.len() * 47 + 128,
        );
        rest.extend_from_slice(br#","account":"#);
        serde_json::to_writer(&mut rest, item.account).expect("a string serializes");
        rest.extend_from_slice(br#","index":"#);
        rest.extend_from_slice(itoa_u64(item.index, &mut [0u8; 20]).as_bytes());
        rest.extend_from_slice(br#","receivedAt":""#);
        // RFC 3339 digits and punctuation: nothing to escape.
        rest.extend_from_slice(format_time(received).as_bytes());
        rest.extend_from_slice(br#"","bytes":""#);
        // The base64 alphabet has nothing JSON escapes either.
        append_base64(&mut rest, item.bytes);
        rest.extend_from_slice(br#"","proof":["#);
        for (i, h) in proof.iter().enumerate() {
            if i > 0 {
                rest.push(b',');
            }
            rest.push(b'"');
            append_base64(&mut rest, h);
            rest.push(b'"');
        }
        rest.extend_from_slice(b"]}\n");
        Self {
            account: item.account.to_string(),
            index: item.index,
            rest,
        }
    }

    /// The event's account.
    pub fn account(&self) -> &str {
        &self.account
    }
}

/// Appends the standard base64 of `data` (with padding).
fn append_base64(out: &mut Vec<u8>, data: &[u8]) {
    let start = out.len();
    out.resize(start + data.len().div_ceil(3) * 4, 0);
    let n = B64
        .encode_slice(data, &mut out[start..])
        .expect("room for the base64 was made");
    out.truncate(start + n);
}

fn trailer_body(events: u64, digest_hex: &str) -> String {
    format!("{TRAILER_TITLE}\nevents {events}\nsha256 {digest_hex}\n")
}

/// One thing that does not hold, at a line of the bundle (0: the bundle as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: u64,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.message)
        } else {
            write!(f, "line {}: {}", self.line, self.message)
        }
    }
}

/// Where the key the checkpoints were checked against came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyTrust {
    /// The caller pinned it.
    Pinned,
    /// Taken from the bundle itself: proves integrity, not who made it.
    FromBundle,
    /// No usable key.
    None,
}

/// The outcome of [`verify`].
#[derive(Debug, Clone)]
pub struct Report {
    /// Event lines read.
    pub events: u64,
    /// Events whose inclusion proof held.
    pub proven: u64,
    /// Verified checkpoints: account, tree size.
    pub checkpoints: Vec<(String, u64)>,
    /// The key used.
    pub key: Option<String>,
    pub key_trust: KeyTrust,
    /// What the header says.
    pub header: HeaderInfo,
    /// Whether the signed trailer held.
    pub trailer_ok: bool,
    /// The first [`MAX_LISTED_PROBLEMS`] problems.
    pub problems: Vec<Problem>,
    /// Problems beyond those listed.
    pub unlisted_problems: u64,
}

impl Report {
    /// Everything held.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty() && self.unlisted_problems == 0
    }

    fn problem(&mut self, line: u64, message: impl Into<String>) {
        if self.problems.len() < MAX_LISTED_PROBLEMS {
            self.problems.push(Problem {
                line,
                message: message.into(),
            });
        } else {
            self.unlisted_problems += 1;
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.problems {
            writeln!(f, "FAIL  {p}")?;
        }
        if self.unlisted_problems > 0 {
            writeln!(f, "FAIL  … and {} more problems", self.unlisted_problems)?;
        }
        let logs: Vec<String> = self
            .checkpoints
            .iter()
            .map(|(a, s)| format!("{a}@{s}"))
            .collect();
        let key = self.key.as_deref().unwrap_or("(none)");
        let trust = match self.key_trust {
            KeyTrust::Pinned => "pinned",
            KeyTrust::FromBundle => {
                "taken from the bundle — pin the server's key with --key-file to know who signed"
            }
            KeyTrust::None => "none",
        };
        if self.is_ok() {
            writeln!(
                f,
                "ok    {} events proven in {} logs ({}) against signed checkpoints; the signed trailer covers the whole bundle",
                self.proven,
                self.checkpoints.len(),
                logs.join(", ")
            )?;
        } else {
            let n = self.problems.len() as u64 + self.unlisted_problems;
            writeln!(
                f,
                "{n} problems; {} of {} events proven; the bundle does NOT verify",
                self.proven, self.events
            )?;
        }
        write!(f, "key   {key} ({trust})")
    }
}

/// Reads `\n`-terminated lines of at most [`MAX_LINE_BYTES`].
struct Lines<R> {
    inner: R,
}

enum Line {
    /// A whole line including its `\n` (or the last bytes of the file without one).
    Text {
        terminated: bool,
    },
    TooLong,
    Eof,
}

impl<R: BufRead> Lines<R> {
    fn next(&mut self, buf: &mut Vec<u8>) -> std::io::Result<Line> {
        buf.clear();
        let n = (&mut self.inner)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', buf)?;
        if n == 0 {
            return Ok(Line::Eof);
        }
        let terminated = buf.last() == Some(&b'\n');
        if !terminated && buf.len() > MAX_LINE_BYTES {
            return Ok(Line::TooLong);
        }
        Ok(Line::Text { terminated })
    }
}

/// Parses one line (without its `\n`) as a bundle entry.
pub fn parse_entry(line: &[u8]) -> Result<Entry, String> {
    if line.len() > MAX_LINE_BYTES {
        return Err(format!("longer than {MAX_LINE_BYTES} bytes"));
    }
    serde_json::from_slice(line).map_err(|e| format!("not a bundle entry: {e}"))
}

fn decode_hash(s: &str) -> Option<Hash> {
    B64.decode(s).ok().and_then(|v| Hash::try_from(v).ok())
}

/// Checks a bundle offline: the header and key, each checkpoint's signature, each event's
/// inclusion proof against its account's checkpoint, the order of events, and the signed
/// trailer over every byte before it. With `pinned`, checkpoints and trailer must be signed by
/// that key; otherwise by the key the bundle names. Only I/O errors of `input` are errors; every
/// finding is a [`Problem`] in the report.
pub fn verify(input: impl BufRead, pinned: Option<&NoteVerifier>) -> std::io::Result<Report> {
    let mut report = Report {
        events: 0,
        proven: 0,
        checkpoints: Vec::new(),
        key: pinned.map(NoteVerifier::to_key_string),
        key_trust: if pinned.is_some() {
            KeyTrust::Pinned
        } else {
            KeyTrust::None
        },
        header: HeaderInfo::default(),
        trailer_ok: false,
        problems: Vec::new(),
        unlisted_problems: 0,
    };
    let mut verifier: Option<NoteVerifier> = pinned.cloned();
    let mut lines = Lines { inner: input };
    let mut buf = Vec::new();
    let mut digest = Sha256::new();
    let mut line_no = 0u64;
    let mut ended_at: Option<u64> = None;
    let mut next_seq = 0u64;
    let mut checkpoints: Checkpoints = HashMap::new();
    // Events whose account's checkpoint failed, per account (reported once each, at the end).
    let mut unprovable: std::collections::BTreeMap<String, u64> = Default::default();
    loop {
        let terminated = match lines.next(&mut buf)? {
            Line::Eof => break,
            Line::TooLong => {
                report.problem(
                    line_no + 1,
                    format!("longer than {MAX_LINE_BYTES} bytes; reading stops here"),
                );
                return Ok(report);
            }
            Line::Text { terminated } => terminated,
        };
        line_no += 1;
        if let Some(end) = ended_at {
            report.problem(
                line_no,
                format!("content after the signed trailer on line {end}"),
            );
            break;
        }
        let text = if terminated {
            &buf[..buf.len() - 1]
        } else {
            &buf[..]
        };
        if !terminated {
            report.problem(
                line_no,
                "the last line has no newline: the file was cut short",
            );
        }
        let entry = match parse_entry(text) {
            Ok(e) => e,
            Err(e) => {
                report.problem(line_no, e);
                digest.update(&buf);
                continue;
            }
        };
        if line_no == 1 && !matches!(entry, Entry::Header { .. }) {
            report.problem(1, "the first line is not a bundle header");
        }
        match entry {
            Entry::Header {
                format,
                version,
                verifier_key,
                created_at,
                query,
                from,
                to,
            } => {
                if line_no != 1 {
                    report.problem(line_no, "a second header");
                } else if format != FORMAT_NAME || version != VERSION {
                    report.problem(
                        line_no,
                        format!(
                            "format {format:?} version {version} is not {FORMAT_NAME:?} version {VERSION}, the one this verifier reads"
                        ),
                    );
                } else {
                    report.header = HeaderInfo {
                        created_at,
                        query,
                        from,
                        to,
                    };
                    match NoteVerifier::parse(&verifier_key) {
                        Err(e) => report.problem(
                            line_no,
                            format!("the bundle's verifier key is not usable: {e}"),
                        ),
                        Ok(named) => match pinned {
                            Some(p) if p.to_key_string() != named.to_key_string() => {
                                report.problem(
                                    line_no,
                                    format!(
                                        "the bundle names verifier key {}, not the pinned key {}",
                                        named.to_key_string(),
                                        p.to_key_string()
                                    ),
                                );
                            }
                            Some(_) => {}
                            None => {
                                report.key = Some(named.to_key_string());
                                report.key_trust = KeyTrust::FromBundle;
                                verifier = Some(named);
                            }
                        },
                    }
                }
            }
            Entry::Checkpoint {
                account,
                checkpoint,
            } => {
                if let Some((first, _)) = checkpoints.get(&account) {
                    report.problem(
                        line_no,
                        format!("a second checkpoint of account {account} (the first is on line {first})"),
                    );
                } else if checkpoints.len() >= MAX_ACCOUNTS {
                    report.problem(line_no, format!("more than {MAX_ACCOUNTS} checkpoints"));
                } else {
                    let checked = check_checkpoint(verifier.as_ref(), &account, &checkpoint);
                    let state = match checked {
                        Ok(cp) => {
                            report.checkpoints.push((account.clone(), cp.size));
                            Some((cp.size, cp.root))
                        }
                        Err(m) => {
                            report.problem(line_no, m);
                            None
                        }
                    };
                    checkpoints.insert(account, (line_no, state));
                }
            }
            Entry::Event {
                seq,
                account,
                index,
                bytes,
                proof,
                ..
            } => {
                report.events += 1;
                if seq > next_seq {
                    let missing = if seq == next_seq + 1 {
                        format!("#{next_seq} is")
                    } else {
                        format!("#{next_seq} to #{} are", seq - 1)
                    };
                    report.problem(
                        line_no,
                        format!("event #{seq} where #{next_seq} was expected: event {missing} missing here (dropped or moved)"),
                    );
                } else if seq < next_seq {
                    report.problem(
                        line_no,
                        format!("event #{seq} where #{next_seq} was expected: this event is repeated or out of order"),
                    );
                }
                next_seq = seq.saturating_add(1);
                let what = format!("event #{seq} ({account}/{index})");
                match check_event(&checkpoints, &account, index, &bytes, &proof) {
                    Ok(()) => report.proven += 1,
                    Err(EventProblem::CheckpointFailed) => {
                        *unprovable.entry(account).or_insert(0) += 1;
                    }
                    Err(EventProblem::Other(m)) => report.problem(line_no, format!("{what}: {m}")),
                }
            }
            Entry::End { events, signature } => {
                ended_at = Some(line_no);
                let counted = report.events;
                if events != counted {
                    report.problem(
                        line_no,
                        format!("the trailer says {events} events, the bundle holds {counted}"),
                    );
                }
                let digest_hex = hex::encode(digest.clone().finalize());
                match check_trailer(verifier.as_ref(), &signature, counted, &digest_hex) {
                    Ok(()) => report.trailer_ok = true,
                    Err(m) => report.problem(line_no, m),
                }
                continue;
            }
        }
        digest.update(&buf);
    }
    for (account, n) in unprovable {
        let line = checkpoints.get(&account).map_or(0, |(l, _)| *l);
        report.problem(
            line,
            format!(
                "{n} events of account {account} cannot be proven: its checkpoint did not verify"
            ),
        );
    }
    if line_no == 0 {
        report.problem(0, "the file is empty");
    } else if ended_at.is_none() {
        report.problem(
            0,
            "the bundle has no signed trailer: it was cut short or its last line was removed",
        );
    }
    Ok(report)
}

/// Account → (line of its checkpoint, (tree size, root) when the checkpoint verified).
type Checkpoints = HashMap<String, (u64, Option<(u64, Hash)>)>;

fn check_checkpoint(
    verifier: Option<&NoteVerifier>,
    account: &str,
    note: &str,
) -> Result<Checkpoint, String> {
    let v = verifier.ok_or_else(|| {
        format!("the checkpoint of account {account} cannot be checked: no usable verifier key")
    })?;
    let body = v.open(note).map_err(|e| {
        format!(
            "the checkpoint of account {account} is not validly signed by key {}: {e}",
            v.to_key_string()
        )
    })?;
    let cp = Checkpoint::parse(body)
        .map_err(|e| format!("the checkpoint of account {account} is not a checkpoint: {e}"))?;
    if !cp.origin.ends_with(&format!("/{account}")) {
        return Err(format!(
            "the checkpoint given for account {account} is of another log ({})",
            cp.origin
        ));
    }
    Ok(cp)
}

enum EventProblem {
    /// Its account's checkpoint failed (already reported).
    CheckpointFailed,
    Other(String),
}

impl From<String> for EventProblem {
    fn from(s: String) -> Self {
        EventProblem::Other(s)
    }
}

fn check_event(
    checkpoints: &Checkpoints,
    account: &str,
    index: u64,
    bytes: &str,
    proof: &[String],
) -> Result<(), EventProblem> {
    let (size, root) = match checkpoints.get(account) {
        None => {
            return Err(format!("no checkpoint of account {account} comes before it").into());
        }
        Some((_, None)) => return Err(EventProblem::CheckpointFailed),
        Some((_, Some(cp))) => *cp,
    };
    let bytes = B64
        .decode(bytes)
        .map_err(|e| format!("its bytes are not base64: {e}"))?;
    if proof.len() > MAX_PROOF_HASHES {
        return Err(format!(
            "its proof has {} hashes, more than {MAX_PROOF_HASHES}",
            proof.len()
        )
        .into());
    }
    let mut hashes = Vec::with_capacity(proof.len());
    for (i, h) in proof.iter().enumerate() {
        hashes.push(
            decode_hash(h)
                .ok_or_else(|| format!("proof hash {i} is not the base64 of 32 bytes"))?,
        );
    }
    verify_inclusion(index, size, &leaf_hash(&bytes), &hashes, &root).map_err(|e| match e {
        ProofError::Parameters(_) => format!(
            "index {index} is beyond the tree size {size} of its account's checkpoint"
        ),
        ProofError::Length => format!(
            "its proof has the wrong length for leaf {index} of a tree of {size}: the proof was changed or belongs to another checkpoint"
        ),
        ProofError::RootMismatch => format!(
            "its bytes and proof do not lead to the root of checkpoint {account}@{size}: the event was changed (or its proof, or the checkpoint was swapped)"
        ),
    })?;
    serde_json::from_slice::<serde::de::IgnoredAny>(&bytes)
        .map_err(|e| format!("its bytes are in the log but are not JSON: {e}"))?;
    Ok(())
}

fn check_trailer(
    verifier: Option<&NoteVerifier>,
    note: &str,
    counted: u64,
    digest_hex: &str,
) -> Result<(), String> {
    let v = verifier.ok_or("the trailer cannot be checked: no usable verifier key".to_string())?;
    let body = v.open(note).map_err(|e| {
        format!(
            "the trailer is not validly signed by key {}: {e}",
            v.to_key_string()
        )
    })?;
    let mut lines = body.lines();
    let title = lines.next().unwrap_or_default();
    let events = lines.next().and_then(|l| l.strip_prefix("events "));
    let sha = lines.next().and_then(|l| l.strip_prefix("sha256 "));
    let (Some(events), Some(sha)) = (events, sha) else {
        return Err("the signed trailer is not a bundle trailer".into());
    };
    if title != TRAILER_TITLE {
        return Err(format!("the signed trailer is of another kind ({title:?})"));
    }
    if events != counted.to_string() {
        return Err(format!(
            "the signed trailer covers {events} events, the bundle holds {counted}: events were added or removed"
        ));
    }
    if sha != digest_hex {
        return Err(
            "the bytes before the trailer do not match its signed SHA-256: an entry was changed, added, removed or moved after the server wrote the bundle"
                .into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use trailkeep_ledger::{KeySource, Ledger, LedgerConfig, MemStorage, Storage};

    use super::*;

    /// A small bundle of a real in-memory ledger: 3 events of `acme`, 2 of `beta`.
    fn small_bundle() -> (Vec<u8>, NoteVerifier) {
        let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
        let ledger = Ledger::open(
            storage,
            LedgerConfig {
                key: KeySource::Seed([3; 32]),
                checkpoint_interval: None,
                ..Default::default()
            },
        )
        .unwrap();
        let mut batch = Vec::new();
        for n in 0..5u32 {
            let account = if n % 2 == 0 { "acme" } else { "beta" };
            batch.push((account.to_string(), format!("{{\"n\":{n}}}").into_bytes()));
        }
        let acks = ledger.append(batch).unwrap();
        ledger.sign_checkpoints_if_grown().unwrap();
        let verifier = NoteVerifier::parse(&ledger.verifier_key()).unwrap();
        let mut w =
            BundleWriter::new(Vec::new(), &ledger.verifier_key(), &HeaderInfo::default()).unwrap();
        for a in acks.iter().rev() {
            let note = ledger.latest_checkpoint(&a.account).unwrap();
            let size = Checkpoint::parse(verifier.open(&note).unwrap())
                .unwrap()
                .size;
            if !w.has_checkpoint(&a.account) {
                w.checkpoint(&a.account, &note).unwrap();
            }
            let record = ledger.read_record(&a.account, a.index).unwrap().unwrap();
            let proof = ledger.inclusion_proof(&a.account, a.index, size).unwrap();
            let item = ExportItem {
                account: &a.account,
                index: a.index,
                received_at_unix_nanos: record.received_at_unix_nanos,
                bytes: &record.bytes,
            };
            w.event(&item, &proof).unwrap();
        }
        let out = w
            .finish(|body| ledger.sign_note(body).map_err(|e| e.to_string()))
            .unwrap();
        (out, verifier)
    }

    /// A prepared event line is byte for byte what serializing [`Entry::Event`] makes, for
    /// odd accounts, big numbers, empty and long bodies and proofs of every length.
    #[test]
    fn prepared_event_lines_are_serdes() {
        let body: Vec<u8> = (0..=255u8).cycle().take(3_001).collect();
        let cases: [(&str, u64, i64, &[u8], usize); 5] = [
            ("acme", 0, 0, b"{}", 0),
            ("a\"b\\c\u{1}é", u64::MAX, -1_500, b"", 1),
            ("beta", 12_345, 1_700_000_000_123_456_789, b"{\"n\":1}", 2),
            ("x", 1 << 40, i64::MAX, &body[..1], 20),
            ("y", 7, 1_000, &body, 64),
        ];
        for (seq, (account, index, nanos, bytes, proof_len)) in cases.into_iter().enumerate() {
            let proof: Vec<Hash> = (0..proof_len).map(|i| [i as u8 ^ 0xa5; 32]).collect();
            let item = ExportItem {
                account,
                index,
                received_at_unix_nanos: nanos,
                bytes,
            };
            let mut w = BundleWriter::new(Vec::new(), "key", &HeaderInfo::default()).unwrap();
            for _ in 0..seq {
                // Earlier events, so that `seq` counts up.
                w.checkpoint(&format!("other{}", w.events()), "note")
                    .unwrap();
                let other = format!("other{}", w.events());
                w.event(
                    &ExportItem {
                        account: &other,
                        ..item
                    },
                    &[],
                )
                .unwrap();
            }
            let start = w.out.len();
            w.checkpoint(account, "note").unwrap();
            let after_checkpoint = w.out.len();
            w.prepared(&PreparedEvent::new(&item, &proof)).unwrap();
            let line = &w.out[after_checkpoint..];
            assert!(start < after_checkpoint);
            let received = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos))
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            let mut expected = serde_json::to_vec(&Entry::Event {
                seq: seq as u64,
                account: account.into(),
                index,
                received_at: format_time(received),
                bytes: B64.encode(bytes),
                proof: proof.iter().map(|h| B64.encode(h)).collect(),
            })
            .unwrap();
            expected.push(b'\n');
            assert_eq!(
                String::from_utf8_lossy(line),
                String::from_utf8_lossy(&expected)
            );
        }
    }

    /// An event prepared for an account without a checkpoint is refused, like `event`.
    #[test]
    fn prepared_event_before_its_checkpoint_is_refused() {
        let mut w = BundleWriter::new(Vec::new(), "key", &HeaderInfo::default()).unwrap();
        let item = ExportItem {
            account: "acme",
            index: 0,
            received_at_unix_nanos: 0,
            bytes: b"{}",
        };
        assert!(w.prepared(&PreparedEvent::new(&item, &[])).is_err());
        assert_eq!(w.events(), 0);
    }

    #[test]
    fn a_written_bundle_verifies_with_the_pinned_and_with_its_own_key() {
        let (bundle, key) = small_bundle();
        let r = verify(&bundle[..], Some(&key)).unwrap();
        assert!(r.is_ok(), "{r}");
        assert_eq!((r.events, r.proven, r.key_trust), (5, 5, KeyTrust::Pinned));
        assert_eq!(r.checkpoints, vec![("acme".into(), 3), ("beta".into(), 2)]);
        let r = verify(&bundle[..], None).unwrap();
        assert!(r.is_ok() && r.key_trust == KeyTrust::FromBundle, "{r}");
    }

    /// Every byte of a bundle is covered by a proof, a signature or the signed digest: flipping
    /// one makes verification fail (and never panic). Every 23rd byte (each line and field gets
    /// several), as each verification checks signatures and debug builds are slow at that.
    #[test]
    fn flipping_a_single_byte_fails_verification() {
        let (bundle, key) = small_bundle();
        for (k, i) in (0..bundle.len()).step_by(23).enumerate() {
            {
                let flip = if k % 2 == 0 { 0x01u8 } else { 0x20 };
                let mut b = bundle.clone();
                b[i] ^= flip;
                let r = verify(&b[..], Some(&key)).unwrap();
                assert!(
                    !r.is_ok(),
                    "byte {i} ^ {flip:#x} went unnoticed: {:?}",
                    String::from_utf8_lossy(&b)
                );
            }
        }
    }

    #[test]
    fn malformed_input_is_reported_not_fatal() {
        let (_, key) = small_bundle();
        let r = verify(&b""[..], Some(&key)).unwrap();
        assert_eq!(r.problems[0].message, "the file is empty");
        let r = verify(&b"\xff\xfe garbage\n{}\n"[..], None).unwrap();
        assert!(
            r.problems[0].message.starts_with("not a bundle entry"),
            "{r}"
        );
        assert!(r.to_string().contains("no signed trailer"), "{r}");
        let mut long = vec![b'{'; MAX_LINE_BYTES + 10];
        long.push(b'\n');
        let r = verify(&long[..], None).unwrap();
        assert!(r.problems[0].message.contains("longer than"), "{r}");
        // A proof longer than any tree needs is refused before it is used.
        let proof: Vec<String> = (0..65).map(|_| B64.encode([0u8; 32])).collect();
        let line = serde_json::to_string(&Entry::Event {
            seq: 0,
            account: "a".into(),
            index: 0,
            received_at: String::new(),
            bytes: String::new(),
            proof,
        })
        .unwrap();
        let (bundle, _) = small_bundle();
        let mut text = String::from_utf8(bundle).unwrap();
        let first_event = text.find("{\"type\":\"event\"").unwrap();
        text.insert_str(first_event, &format!("{line}\n"));
        let r = verify(text.as_bytes(), Some(&key)).unwrap();
        assert!(r.to_string().contains("no checkpoint of account a"), "{r}");
    }

    #[test]
    fn the_ledger_refuses_to_sign_a_note_that_could_pass_for_a_checkpoint() {
        let storage: Arc<dyn Storage> = Arc::new(MemStorage::new());
        let ledger = Ledger::open(storage, LedgerConfig::default()).unwrap();
        assert!(ledger.sign_note("trailkeep/acme\n12\nAAAA\n").is_err());
        assert!(ledger.sign_note(&trailer_body(12, "ab")).is_ok());
    }
}
