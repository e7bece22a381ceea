//! `trailkeep send`: post events from a file or standard input to a server in batches.
//!
//! NDJSON is streamed line by line in constant memory; a JSON document (an array, a single
//! pretty-printed event, a Kubernetes `EventList`) is read whole and its items are sent in array
//! batches. After each acknowledged batch the position reached is saved, so an interrupted send
//! of a file resumes where it stopped; resending is harmless anyway, because the server returns
//! the original position of an event it already holds.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::remote::{Remote, RemoteArgs, with_retries};

/// Largest JSON document (non-NDJSON input) read into memory.
const MAX_DOCUMENT_BYTES: u64 = 1 << 30;

#[derive(Debug, clap::Args)]
pub struct SendArgs {
    #[command(flatten)]
    remote: RemoteArgs,

    /// File of events: NDJSON (one event per line), a JSON array, or one event; `-` or nothing
    /// reads standard input.
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,

    /// Events per request.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    batch_events: usize,

    /// Largest request body before compression, in bytes (keep it under the server's limit).
    #[arg(long, default_value_t = 4 * 1024 * 1024, value_name = "BYTES")]
    batch_bytes: usize,

    /// Compression of request bodies.
    #[arg(long, value_enum, default_value_t = Compression::Zstd)]
    compress: Compression,

    /// Where progress is saved so that an interrupted send of a file resumes (default: under
    /// `$XDG_STATE_HOME/trailkeep/send/`, or `~/.local/state/…`).
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,

    /// Send the file from its beginning, ignoring saved progress.
    #[arg(long)]
    restart: bool,

    /// Keep retrying an unreachable or overloaded server for this many seconds per batch.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    retry_for: u64,

    /// Print nothing but errors and the final summary.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Saved progress of one file. The hash of the bytes already covered makes sure a changed file
/// is sent again from the start instead of being skipped.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct SendState {
    path: PathBuf,
    /// The first `hashed_len` bytes of the file hash to `sha256`.
    hashed_len: u64,
    sha256: String,
    /// Byte offset to continue reading at (NDJSON) …
    resume_offset: u64,
    /// … and items to skip from there (documents, which are read whole).
    skip_items: u64,
    /// Events acknowledged so far, for the summary.
    acknowledged: u64,
}

/// What the server said about the events sent so far.
#[derive(Debug, Default)]
struct Tally {
    accepted: u64,
    duplicates: u64,
    rejected: u64,
    /// Valid, but routing stored them nowhere (no route, no default target).
    dropped: u64,
    requests: u64,
}

/// One item waiting to go, with where it came from for error messages.
#[derive(Debug)]
struct Pending {
    text: String,
    origin: String,
}

pub fn run(args: SendArgs) -> anyhow::Result<ExitCode> {
    let remote = Remote::new(&args.remote)?;
    if args.batch_events == 0 {
        bail!("--batch-events must be at least 1");
    }
    let started = Instant::now();
    let mut sender = Sender {
        remote,
        args: &args,
        tally: Tally::default(),
        bar: None,
    };
    match args.file.as_deref().filter(|p| *p != Path::new("-")) {
        None => {
            let stdin = std::io::stdin().lock();
            sender.send_stream(BufReader::new(stdin))?;
        }
        Some(path) => sender.send_file(path)?,
    }
    if let Some(bar) = &sender.bar {
        bar.finish_and_clear();
    }
    let t = &sender.tally;
    let secs = started.elapsed().as_secs_f64();
    let dropped = if t.dropped > 0 {
        format!(", {} dropped by routing", t.dropped)
    } else {
        String::new()
    };
    eprintln!(
        "sent {} events in {} requests ({} accepted, {} already stored, {} rejected{dropped}) in {:.1} s",
        t.accepted + t.duplicates + t.rejected + t.dropped,
        t.requests,
        t.accepted,
        t.duplicates,
        t.rejected,
        secs
    );
    // A dropped event is lost to this server as surely as a rejected one: both fail the run.
    Ok(if t.rejected == 0 && t.dropped == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

struct Sender<'a> {
    remote: Remote,
    args: &'a SendArgs,
    tally: Tally,
    bar: Option<ProgressBar>,
}

impl Sender<'_> {
    fn send_file(&mut self, path: &Path) -> anyhow::Result<()> {
        let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let len = file.metadata()?.len();
        let state_path = match &self.args.state {
            Some(p) => Some(p.clone()),
            None => default_state_path(path),
        };
        let saved = match (&state_path, self.args.restart) {
            (Some(sp), false) => load_state(sp, path, &mut file)?,
            _ => None,
        };
        let bar = ProgressBar::new(len);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta}) {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        if self.args.quiet {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        self.bar = Some(bar);
        if let Some(s) = &saved
            && !self.args.quiet
        {
            eprintln!(
                "resuming {}: {} events were already sent (--restart sends everything again)",
                path.display(),
                s.acknowledged
            );
        }
        let mut resume = saved.unwrap_or(SendState {
            path: path.to_path_buf(),
            hashed_len: 0,
            sha256: hex::encode(Sha256::digest(b"")),
            resume_offset: 0,
            skip_items: 0,
            acknowledged: 0,
        });
        file.seek(SeekFrom::Start(resume.resume_offset))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        if is_document(&mut reader)? {
            if len > MAX_DOCUMENT_BYTES {
                bail!(
                    "{} is a JSON document of {len} bytes; documents are read whole and may be at most {MAX_DOCUMENT_BYTES} bytes — convert it to NDJSON (one event per line), which is streamed",
                    path.display()
                );
            }
            let mut bytes = Vec::with_capacity(len as usize);
            reader.read_to_end(&mut bytes)?;
            let hash = hex::encode(Sha256::digest(&bytes));
            let state = state_path.map(|sp| (sp, path.to_path_buf(), len, hash));
            self.send_document(&bytes, resume.skip_items, resume.acknowledged, state)
        } else {
            let state = state_path.map(|sp| (sp, &mut resume));
            self.send_lines(reader, path, state)
        }
    }

    /// Standard input: no resume (it cannot be read again).
    fn send_stream(&mut self, mut reader: impl BufRead) -> anyhow::Result<()> {
        if is_document(&mut reader)? {
            let mut bytes = Vec::new();
            reader
                .take(MAX_DOCUMENT_BYTES + 1)
                .read_to_end(&mut bytes)?;
            if bytes.len() as u64 > MAX_DOCUMENT_BYTES {
                bail!(
                    "the JSON document on standard input exceeds {MAX_DOCUMENT_BYTES} bytes; send NDJSON, which is streamed"
                );
            }
            self.send_document(&bytes, 0, 0, None)
        } else {
            let spinner = ProgressBar::new_spinner();
            spinner.set_style(
                ProgressStyle::with_template("{spinner} {bytes} read ({bytes_per_sec}) {msg}")
                    .expect("valid template"),
            );
            if self.args.quiet {
                spinner.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            }
            self.bar = Some(spinner);
            self.send_lines(reader, Path::new("-"), None)
        }
    }

    /// NDJSON: one item per non-blank line, streamed.
    fn send_lines(
        &mut self,
        mut reader: impl BufRead,
        path: &Path,
        mut state: Option<(PathBuf, &mut SendState)>,
    ) -> anyhow::Result<()> {
        let mut offset = state.as_ref().map_or(0, |(_, s)| s.resume_offset);
        if let Some(bar) = &self.bar {
            bar.set_position(offset);
        }
        // Line numbers are only known when reading from the start.
        let numbered = offset == 0;
        let mut line_no = 0u64;
        let mut hasher = Sha256::new();
        if let Some((_, s)) = &state
            && s.hashed_len > 0
        {
            // Re-hash the covered prefix so the saved state keeps describing the whole prefix.
            let mut f = File::open(path)?;
            let mut prefix = (&mut f).take(s.hashed_len);
            std::io::copy(&mut prefix, &mut HashWriter(&mut hasher))?;
        }
        let mut batch: Vec<Pending> = Vec::new();
        let mut batch_bytes = 0usize;
        // Every byte read since the last acknowledged batch, blank lines included, for the hash.
        let mut batch_raw = Vec::new();
        let mut line = Vec::new();
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            line_no += 1;
            let text = String::from_utf8_lossy(trim_line(&line)).into_owned();
            if !text.is_empty()
                && !batch.is_empty()
                && batch_bytes + text.len() + 1 > self.args.batch_bytes
            {
                let end = offset + batch_raw.len() as u64;
                self.flush_lines(&mut batch, &batch_raw, &mut hasher, end, &mut state)?;
                offset = end;
                batch_bytes = 0;
                batch_raw.clear();
            }
            batch_raw.extend_from_slice(&line);
            if !text.is_empty() {
                batch_bytes += text.len() + 1;
                let origin = if numbered {
                    format!("line {line_no}")
                } else {
                    format!("line {line_no} after the resume point")
                };
                batch.push(Pending { text, origin });
            }
            if batch.len() >= self.args.batch_events {
                let end = offset + batch_raw.len() as u64;
                self.flush_lines(&mut batch, &batch_raw, &mut hasher, end, &mut state)?;
                offset = end;
                batch_bytes = 0;
                batch_raw.clear();
            }
        }
        let end = offset + batch_raw.len() as u64;
        self.flush_lines(&mut batch, &batch_raw, &mut hasher, end, &mut state)?;
        Ok(())
    }

    fn flush_lines(
        &mut self,
        batch: &mut Vec<Pending>,
        raw: &[u8],
        hasher: &mut Sha256,
        end: u64,
        state: &mut Option<(PathBuf, &mut SendState)>,
    ) -> anyhow::Result<()> {
        if !batch.is_empty() {
            let mut body = String::new();
            for p in batch.iter() {
                body.push_str(&p.text);
                body.push('\n');
            }
            self.post_batch(body.into_bytes(), "application/x-ndjson", batch)?;
        }
        hasher.update(raw);
        if let Some(bar) = &self.bar {
            bar.set_position(end);
        }
        if let Some((sp, s)) = state {
            s.hashed_len = end;
            s.sha256 = hex::encode(hasher.clone().finalize());
            s.resume_offset = end;
            s.skip_items = 0;
            s.acknowledged += batch.len() as u64;
            save_state(sp, s)?;
        }
        batch.clear();
        Ok(())
    }

    /// A whole JSON document: top-level arrays are split into their items; each other top-level
    /// value is one item.
    fn send_document(
        &mut self,
        bytes: &[u8],
        skip: u64,
        already: u64,
        state: Option<(PathBuf, PathBuf, u64, String)>,
    ) -> anyhow::Result<()> {
        let mut items: Vec<Pending> = Vec::new();
        let stream =
            serde_json::Deserializer::from_slice(bytes).into_iter::<&serde_json::value::RawValue>();
        let mut n = 0u64;
        for (value_no, value) in stream.enumerate() {
            let value = value.map_err(|e| {
                anyhow::anyhow!("the input is not valid JSON or NDJSON: {e} — nothing was sent")
            })?;
            let text = value.get();
            if text.starts_with('[') {
                let elements: Vec<&serde_json::value::RawValue> = serde_json::from_str(text)
                    .with_context(|| format!("reading array {}", value_no + 1))?;
                for (i, e) in elements.into_iter().enumerate() {
                    n += 1;
                    if n > skip {
                        items.push(Pending {
                            text: e.get().to_string(),
                            origin: format!("item {i} of array {}", value_no + 1),
                        });
                    }
                }
            } else {
                n += 1;
                if n > skip {
                    items.push(Pending {
                        text: text.to_string(),
                        origin: format!("value {}", value_no + 1),
                    });
                }
            }
        }
        if let Some(bar) = &self.bar {
            bar.set_length(n);
            bar.set_position(skip);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{bar:40}] {pos}/{len} events ({eta}) {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
        }
        let mut acknowledged = already;
        let mut sent_items = skip;
        let mut start = 0;
        while start < items.len() {
            let mut end = start;
            let mut size = 2;
            while end < items.len()
                && end - start < self.args.batch_events
                && (end == start || size + items[end].text.len() < self.args.batch_bytes)
            {
                size += items[end].text.len() + 1;
                end += 1;
            }
            let chunk = &items[start..end];
            let mut body = String::with_capacity(size);
            body.push('[');
            for (i, p) in chunk.iter().enumerate() {
                if i > 0 {
                    body.push(',');
                }
                body.push_str(&p.text);
            }
            body.push(']');
            self.post_batch(body.into_bytes(), "application/json", chunk)?;
            sent_items += chunk.len() as u64;
            acknowledged += chunk.len() as u64;
            if let Some(bar) = &self.bar {
                bar.set_position(sent_items);
            }
            if let Some((sp, path, len, hash)) = &state {
                save_state(
                    sp,
                    &SendState {
                        path: path.clone(),
                        hashed_len: *len,
                        sha256: hash.clone(),
                        resume_offset: 0,
                        skip_items: sent_items,
                        acknowledged,
                    },
                )?;
            }
            start = end;
        }
        Ok(())
    }

    /// Post one batch (retrying transient failures) and report each rejected item.
    fn post_batch(
        &mut self,
        body: Vec<u8>,
        content_type: &str,
        items: &[Pending],
    ) -> anyhow::Result<()> {
        let (body, encoding) = match self.args.compress {
            Compression::None => (body, None),
            Compression::Zstd => (zstd::encode_all(&body[..], 3)?, Some("zstd")),
            Compression::Gzip => {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(&body)?;
                (enc.finish()?, Some("gzip"))
            }
        };
        let bar = self.bar.clone();
        let report = with_retries(
            Duration::from_secs(self.args.retry_for),
            || {
                self.remote
                    .post("/v1/events", content_type, encoding, &body)
            },
            |e, wait| {
                let msg = format!("{e}; retrying in {:.1} s", wait.as_secs_f64());
                match &bar {
                    Some(b) if !b.is_hidden() => b.set_message(msg),
                    _ => eprintln!("{msg}"),
                }
            },
        )
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("sending a batch (events acknowledged before it are saved; run the same command again to resume)")?;
        if let Some(b) = &bar {
            b.set_message("");
        }
        self.tally.requests += 1;
        let results = report["results"].as_array().cloned().unwrap_or_default();
        for (i, r) in results.iter().enumerate() {
            match r["status"].as_str() {
                Some("accepted") if r["duplicate"].as_bool() == Some(true) => {
                    self.tally.duplicates += 1
                }
                Some("accepted") => self.tally.accepted += 1,
                status => {
                    if status == Some("dropped") {
                        self.tally.dropped += 1;
                    } else {
                        self.tally.rejected += 1;
                    }
                    let origin = if results.len() == items.len() {
                        items[i].origin.clone()
                    } else {
                        format!("result {i} of a batch")
                    };
                    let mut reasons: Vec<String> = r["errors"]
                        .as_array()
                        .map(|errs| {
                            errs.iter()
                                .map(|e| {
                                    let path = e["path"].as_str().unwrap_or_default();
                                    let reason = e["reason"].as_str().unwrap_or_default();
                                    if path.is_empty() {
                                        reason.to_string()
                                    } else {
                                        format!("{path}: {reason}")
                                    }
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    // Routing may drop an event (no route, no default target): it says why.
                    reasons.extend(r["reason"].as_str().map(str::to_string));
                    let what = r["status"].as_str().unwrap_or("rejected");
                    let line = format!("{what} {origin}: {}", reasons.join("; "));
                    match &bar {
                        Some(b) => b.suspend(|| eprintln!("{line}")),
                        None => eprintln!("{line}"),
                    }
                }
            }
        }
        Ok(())
    }
}

/// A document starts with `[`, or is a JSON value spread over several lines; NDJSON has one
/// complete value on its first non-blank line.
fn is_document(reader: &mut impl BufRead) -> anyhow::Result<bool> {
    let buf = reader.fill_buf()?;
    let buf = buf.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(buf);
    let Some(start) = buf.iter().position(|b| !b.is_ascii_whitespace()) else {
        return Ok(false);
    };
    if buf[start] == b'[' {
        return Ok(true);
    }
    let rest = &buf[start..];
    let first_line = match rest.iter().position(|&b| b == b'\n') {
        Some(end) => &rest[..end],
        // The whole buffer is one line: NDJSON of a single (possibly long) line.
        None => return Ok(false),
    };
    Ok(serde_json::from_slice::<serde::de::IgnoredAny>(first_line).is_err())
}

fn trim_line(line: &[u8]) -> &[u8] {
    let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
    let end = line
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    let start = line
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(end);
    &line[start..end]
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn default_state_path(file: &Path) -> Option<PathBuf> {
    let absolute = std::fs::canonicalize(file).ok()?;
    let base = match std::env::var_os("XDG_STATE_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(std::env::var_os("HOME")?).join(".local/state"),
    };
    let name = hex::encode(&Sha256::digest(absolute.as_os_str().as_encoded_bytes())[..12]);
    Some(base.join("trailkeep/send").join(format!("{name}.json")))
}

/// The saved progress for `path`, if it still describes the file's current content.
fn load_state(
    state_path: &Path,
    path: &Path,
    file: &mut File,
) -> anyhow::Result<Option<SendState>> {
    let text = match std::fs::read_to_string(state_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", state_path.display())),
    };
    let Ok(state) = serde_json::from_str::<SendState>(&text) else {
        eprintln!(
            "ignoring unreadable progress file {}; sending from the start",
            state_path.display()
        );
        return Ok(None);
    };
    let len = file.metadata()?.len();
    if state.hashed_len > len {
        eprintln!(
            "{} is shorter than when it was last sent; sending it from the start",
            path.display()
        );
        return Ok(None);
    }
    let mut hasher = Sha256::new();
    file.seek(SeekFrom::Start(0))?;
    std::io::copy(
        &mut (&mut *file).take(state.hashed_len),
        &mut HashWriter(&mut hasher),
    )?;
    file.seek(SeekFrom::Start(0))?;
    if hex::encode(hasher.finalize()) != state.sha256 {
        eprintln!(
            "{} changed since it was last sent; sending it from the start",
            path.display()
        );
        return Ok(None);
    }
    Ok(Some(state))
}

fn save_state(state_path: &Path, state: &SendState) -> anyhow::Result<()> {
    crate::cmd::write_json_atomically(state_path, state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_and_ndjson_are_told_apart() {
        let doc = |s: &str| is_document(&mut std::io::Cursor::new(s.as_bytes())).unwrap();
        assert!(doc("  [ {\"a\":1} ]"));
        assert!(doc("{\n  \"a\": 1\n}\n"));
        assert!(!doc("{\"a\":1}\n{\"a\":2}\n"));
        assert!(!doc("{\"a\":1}"));
        assert!(!doc(""));
        // A broken first line is NDJSON's problem to report per line, unless it looks pretty-printed.
        assert!(doc("{\"a\":\n1}\n"));
    }

    #[test]
    fn lines_are_trimmed_of_whitespace_and_bom() {
        assert_eq!(trim_line(b"\xEF\xBB\xBF {\"a\":1}\r\n"), b"{\"a\":1}");
        assert_eq!(trim_line(b"   \n"), b"");
    }
}
