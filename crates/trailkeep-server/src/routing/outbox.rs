//! The persisted outbox of one remote target: an append-only queue of events on disk.
//!
//! # Format
//!
//! A directory `<data-dir>/routing/outbox/<target-id>/` holds segment files `<seq>.log` (`seq` as
//! 16 lower-case hex digits) and a `cursor` file. A segment is a sequence of records
//! `[u32 LE length][u32 LE CRC-32 of the payload][payload]`; a payload is the JSON
//! `{"account", "queuedAt" (unix ns), "event"}`. A segment grows to [`SEGMENT_BYTES`], then the
//! next one starts. `cursor` is `{"version": 1, "segment": n, "offset": n, "seq": n}`:
//! everything before it was delivered, `seq` events in all (the sequence number of the next
//! event; absent in cursors of older builds, read as 0); it is replaced atomically (fsync,
//! rename, fsync of the directory).
//!
//! `batch` (optional) pins the next batch: `{"version": 1, "segment", "offset", "seq",
//! "count"}` — the batch that starts at that cursor holds exactly `count` events. A target whose
//! receiver names what it writes after the batch (the `s3` target: object keys carry the
//! events' sequence numbers) pins each batch before sending it ([`Outbox::pin`]), so a batch
//! sent again after a crash is the very same batch, whatever arrived meanwhile.
//!
//! # Protocol
//!
//! * **Append** (ingest): frames are written to the newest segment and `fdatasync`ed before
//!   [`Outbox::append`] returns; only then does the ingest request go on to the ledger and, later,
//!   answer. Readers see only what was synced. Appends of concurrent requests are **grouped**:
//!   each queues its frames; whichever caller holds the commit lock writes everything queued in
//!   one write and one `fdatasync`, and hands every queued caller its result — so N requests
//!   arriving while a sync runs cost one more sync, not N.
//! * **Deliver**: the target's worker reads a batch from the cursor, sends it, and after the
//!   receiver acknowledged it moves the cursor past it and deletes segments wholly behind it.
//! * **Crash points**: a torn record at the end of the newest segment (a crash mid-append, never
//!   acknowledged) is cut off at open. A crash after sending and before the cursor moved sends the
//!   batch again: delivery is at least once, with the events' stable ids for de-duplication.
//!   A record whose CRC fails elsewhere (bit rot) is reported and the rest of its segment skipped.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// A segment is closed once it is this large.
pub const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;
/// Largest record accepted when reading (a stored event is at most a few hundred KiB).
const MAX_RECORD: u32 = 8 * 1024 * 1024;
const CURSOR_VERSION: u32 = 1;

/// A place in the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct CursorFile {
    version: u32,
    segment: u64,
    offset: u64,
    #[serde(default)]
    seq: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct BatchFile {
    version: u32,
    segment: u64,
    offset: u64,
    seq: u64,
    count: usize,
}

/// One queued event.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub account: String,
    pub queued_at: i64,
    pub event: Box<serde_json::value::RawValue>,
}

#[derive(Debug)]
struct Inner {
    /// The newest segment and its synced length.
    head: Position,
    file: Option<File>,
    cursor: Position,
    /// Events delivered before the cursor (the sequence number of the next one).
    seq: u64,
    /// Events between the cursor and the head.
    backlog: u64,
}

/// The outbox of one target.
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    inner: Mutex<Inner>,
    /// Appends waiting for the next group commit.
    queue: Mutex<Vec<Queued>>,
    /// Held by the caller that writes and syncs a group.
    commit: Mutex<()>,
}

/// The result of a queued append, filled in by the caller that committed its group.
type Slot = std::sync::Arc<Mutex<Option<Result<(), (std::io::ErrorKind, Option<i32>, String)>>>>;

#[derive(Debug)]
struct Queued {
    frames: Vec<u8>,
    events: u64,
    slot: Slot,
}

fn take_result(slot: &Slot) -> Option<std::io::Result<()>> {
    slot.lock().expect("slot lock").take().map(|r| {
        r.map_err(|(kind, os, message)| match os {
            Some(code) => std::io::Error::from_raw_os_error(code),
            None => std::io::Error::new(kind, message),
        })
    })
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}.log"))
}

fn io_err(what: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

/// Counts the whole records of `bytes` from `offset`; stops at the first torn or corrupt record
/// and returns how many, where it stopped, and why.
fn scan(bytes: &[u8], mut offset: usize) -> (u64, usize, Option<String>) {
    let mut out = 0u64;
    loop {
        if offset == bytes.len() {
            return (out, offset, None);
        }
        if bytes.len() - offset < 8 {
            return (out, offset, Some("torn record header".into()));
        }
        let len = u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(bytes[offset + 4..offset + 8].try_into().expect("4 bytes"));
        if len > MAX_RECORD {
            return (out, offset, Some(format!("record length {len} too large")));
        }
        let end = offset + 8 + len as usize;
        if end > bytes.len() {
            return (out, offset, Some("torn record".into()));
        }
        let payload = &bytes[offset + 8..end];
        if crc32fast::hash(payload) != crc {
            return (out, offset, Some("CRC mismatch".into()));
        }
        out += 1;
        offset = end;
    }
}

impl Outbox {
    /// Opens (or creates) the outbox in `dir`, cutting a torn tail and counting the backlog.
    pub fn open(dir: &Path) -> std::io::Result<Outbox> {
        std::fs::create_dir_all(dir)?;
        let mut segments: Vec<u64> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                u64::from_str_radix(name.strip_suffix(".log")?, 16).ok()
            })
            .collect();
        segments.sort_unstable();
        let mut seq = 0u64;
        let cursor = match std::fs::read(dir.join("cursor")) {
            Ok(b) => {
                let c: CursorFile = serde_json::from_slice(&b)
                    .map_err(|e| io_err(format!("{}/cursor: {e}", dir.display())))?;
                if c.version != CURSOR_VERSION {
                    return Err(io_err(format!(
                        "{}/cursor has format version {}; this build reads {CURSOR_VERSION}",
                        dir.display(),
                        c.version
                    )));
                }
                seq = c.seq;
                Position {
                    segment: c.segment,
                    offset: c.offset,
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Position {
                segment: segments.first().copied().unwrap_or(0),
                offset: 0,
            },
            Err(e) => return Err(e),
        };
        let mut backlog = 0u64;
        let last = segments.last().copied();
        for &seq in &segments {
            if seq < cursor.segment {
                // Wholly delivered; a crash came before its deletion.
                let _ = std::fs::remove_file(segment_path(dir, seq));
                continue;
            }
            let path = segment_path(dir, seq);
            let bytes = std::fs::read(&path)?;
            let from = if seq == cursor.segment {
                (cursor.offset as usize).min(bytes.len())
            } else {
                0
            };
            let (records, stop, problem) = scan(&bytes, from);
            backlog += records;
            if let Some(why) = problem {
                if Some(seq) == last {
                    tracing::warn!(path = %path.display(), offset = stop, %why, "cutting a torn outbox tail (never acknowledged)");
                    let f = OpenOptions::new().write(true).open(&path)?;
                    f.set_len(stop as u64)?;
                    f.sync_all()?;
                } else {
                    tracing::error!(path = %path.display(), offset = stop, %why, "corrupt outbox record; the rest of this segment is skipped");
                }
            }
        }
        let head_seq = last.unwrap_or(cursor.segment).max(cursor.segment);
        let head_path = segment_path(dir, head_seq);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&head_path)?;
        let head = Position {
            segment: head_seq,
            offset: file.metadata()?.len(),
        };
        File::open(dir)?.sync_all()?;
        Ok(Outbox {
            dir: dir.to_path_buf(),
            inner: Mutex::new(Inner {
                head,
                file: Some(file),
                cursor,
                seq,
                backlog,
            }),
            queue: Mutex::new(Vec::new()),
            commit: Mutex::new(()),
        })
    }

    /// Events queued and not yet delivered.
    pub fn backlog(&self) -> u64 {
        self.inner.lock().expect("outbox lock").backlog
    }

    /// The sequence number of the next event to deliver (events delivered so far).
    pub fn seq(&self) -> u64 {
        self.inner.lock().expect("outbox lock").seq
    }

    /// The pinned size of the batch at the cursor, if one was pinned there ([`Outbox::pin`]).
    pub fn pinned(&self) -> std::io::Result<Option<usize>> {
        let (cursor, seq) = {
            let inner = self.inner.lock().expect("outbox lock");
            (inner.cursor, inner.seq)
        };
        let b: BatchFile = match std::fs::read(self.dir.join("batch")) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| io_err(format!("{}/batch: {e}", self.dir.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok((b.version == CURSOR_VERSION
            && b.segment == cursor.segment
            && b.offset == cursor.offset
            && b.seq == seq
            && b.count > 0)
            .then_some(b.count))
    }

    /// Pins the batch at the cursor to `count` events, durably, before it is sent.
    pub fn pin(&self, count: usize) -> std::io::Result<()> {
        let (cursor, seq) = {
            let inner = self.inner.lock().expect("outbox lock");
            (inner.cursor, inner.seq)
        };
        let b = BatchFile {
            version: CURSOR_VERSION,
            segment: cursor.segment,
            offset: cursor.offset,
            seq,
            count,
        };
        crate::auth::write_atomically(
            &self.dir.join("batch"),
            &serde_json::to_vec(&b).expect("serialises"),
        )
    }

    /// Appends payloads and syncs them to disk before returning (grouped with the appends of
    /// concurrent callers: see the module docs).
    pub fn append(&self, payloads: &[Vec<u8>]) -> std::io::Result<()> {
        if payloads.is_empty() {
            return Ok(());
        }
        let mut frames = Vec::with_capacity(payloads.iter().map(|p| p.len() + 8).sum());
        for p in payloads {
            frames.extend_from_slice(&(p.len() as u32).to_le_bytes());
            frames.extend_from_slice(&crc32fast::hash(p).to_le_bytes());
            frames.extend_from_slice(p);
        }
        let slot: Slot = std::sync::Arc::new(Mutex::new(None));
        self.queue.lock().expect("queue lock").push(Queued {
            frames,
            events: payloads.len() as u64,
            slot: slot.clone(),
        });
        let _commit = self.commit.lock().expect("commit lock");
        // A caller that committed meanwhile may have taken this append into its group.
        if let Some(result) = take_result(&slot) {
            return result;
        }
        let mut group = std::mem::take(&mut *self.queue.lock().expect("queue lock"));
        let (buf, events) = if group.len() == 1 {
            (std::mem::take(&mut group[0].frames), group[0].events)
        } else {
            let mut buf = Vec::with_capacity(group.iter().map(|q| q.frames.len()).sum());
            for q in &group {
                buf.extend_from_slice(&q.frames);
            }
            (buf, group.iter().map(|q| q.events).sum())
        };
        let result = self
            .write_synced(&buf, events)
            .map_err(|e| (e.kind(), e.raw_os_error(), e.to_string()));
        for q in &group {
            *q.slot.lock().expect("slot lock") = Some(result.clone());
        }
        take_result(&slot).expect("this append was in the group it committed")
    }

    /// Writes whole frames of `events` events at the head and syncs them.
    fn write_synced(&self, buf: &[u8], events: u64) -> std::io::Result<()> {
        let mut inner = self.inner.lock().expect("outbox lock");
        let file = inner.file.as_mut().expect("the head segment is open");
        let written = file.write_all(buf).and_then(|()| file.sync_data());
        if let Err(e) = written {
            // Cut whatever part was written, so the segment stays a sequence of whole records.
            let keep = inner.head.offset;
            if let Some(f) = inner.file.as_ref() {
                let _ = f.set_len(keep);
            }
            return Err(e);
        }
        inner.head.offset += buf.len() as u64;
        inner.backlog += events;
        if inner.head.offset >= SEGMENT_BYTES {
            let next = inner.head.segment + 1;
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(segment_path(&self.dir, next))?;
            File::open(&self.dir)?.sync_all()?;
            inner.file = Some(f);
            inner.head = Position {
                segment: next,
                offset: 0,
            };
        }
        Ok(())
    }

    /// Reads up to `max_events` entries (and about `max_bytes`) from the cursor. Returns the
    /// entries and the position after them (pass it to [`Outbox::ack`]).
    pub fn peek(
        &self,
        max_events: usize,
        max_bytes: usize,
    ) -> std::io::Result<(Vec<Entry>, Position)> {
        let (mut pos, head) = {
            let inner = self.inner.lock().expect("outbox lock");
            (inner.cursor, inner.head)
        };
        let mut entries = Vec::new();
        let mut taken = 0usize;
        'segments: while entries.len() < max_events && taken < max_bytes {
            let path = segment_path(&self.dir, pos.segment);
            let end = if pos.segment == head.segment {
                head.offset
            } else {
                match std::fs::metadata(&path) {
                    Ok(m) => m.len(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
                    Err(e) => return Err(e),
                }
            };
            if pos.offset < end {
                let mut f = std::io::BufReader::new(File::open(&path)?);
                f.seek(SeekFrom::Start(pos.offset))?;
                while pos.offset < end && entries.len() < max_events && taken < max_bytes {
                    let mut header = [0u8; 8];
                    let problem = if end - pos.offset < 8 {
                        Some("torn record header".to_string())
                    } else {
                        f.read_exact(&mut header)?;
                        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
                        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
                        if len > MAX_RECORD || pos.offset + 8 + u64::from(len) > end {
                            Some(format!("record length {len} runs past the segment"))
                        } else {
                            let mut payload = vec![0u8; len as usize];
                            f.read_exact(&mut payload)?;
                            if crc32fast::hash(&payload) != crc {
                                Some("CRC mismatch".to_string())
                            } else {
                                pos.offset += 8 + u64::from(len);
                                taken += payload.len();
                                match serde_json::from_slice::<Entry>(&payload) {
                                    Ok(e) => entries.push(e),
                                    Err(e) => {
                                        tracing::error!(path = %path.display(), error = %e, "unreadable outbox entry skipped")
                                    }
                                }
                                None
                            }
                        }
                    };
                    if let Some(why) = problem {
                        if pos.segment == head.segment {
                            return Err(io_err(format!(
                                "{} at offset {}: {why}",
                                path.display(),
                                pos.offset
                            )));
                        }
                        tracing::error!(path = %path.display(), offset = pos.offset, %why, "corrupt outbox record; the rest of this segment is skipped");
                        pos = Position {
                            segment: pos.segment + 1,
                            offset: 0,
                        };
                        continue 'segments;
                    }
                }
            }
            if pos.offset >= end && pos.segment < head.segment {
                pos = Position {
                    segment: pos.segment + 1,
                    offset: 0,
                };
            } else {
                break;
            }
        }
        Ok((entries, pos))
    }

    /// Marks everything before `to` delivered (`n` events): persists the cursor, then deletes
    /// segments wholly behind it.
    pub fn ack(&self, to: Position, n: u64) -> std::io::Result<()> {
        let mut inner = self.inner.lock().expect("outbox lock");
        if to <= inner.cursor {
            return Ok(());
        }
        let old = inner.cursor;
        let file = CursorFile {
            version: CURSOR_VERSION,
            segment: to.segment,
            offset: to.offset,
            seq: inner.seq + n,
        };
        crate::auth::write_atomically(
            &self.dir.join("cursor"),
            &serde_json::to_vec(&file).expect("serialises"),
        )?;
        inner.cursor = to;
        inner.seq += n;
        inner.backlog = inner.backlog.saturating_sub(n);
        drop(inner);
        for seq in old.segment..to.segment {
            let _ = std::fs::remove_file(segment_path(&self.dir, seq));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(i: usize) -> Vec<u8> {
        format!("{{\"account\":\"acme\",\"queuedAt\":{i},\"event\":{{\"id\":\"e{i}\"}}}}")
            .into_bytes()
    }

    fn ids(entries: &[Entry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| {
                let v: serde_json::Value = serde_json::from_str(e.event.get()).unwrap();
                v["id"].as_str().unwrap().to_string()
            })
            .collect()
    }

    #[test]
    fn appended_entries_come_out_in_order_across_reopen_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        outbox
            .append(&(0..5).map(payload).collect::<Vec<_>>())
            .unwrap();
        let (first, pos) = outbox.peek(2, 1 << 20).unwrap();
        assert_eq!(ids(&first), ["e0", "e1"]);
        outbox.ack(pos, 2).unwrap();
        assert_eq!(outbox.backlog(), 3);
        drop(outbox);
        // A crash mid-append leaves half a record.
        let seg = segment_path(dir.path(), 0);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[40, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let outbox = Outbox::open(dir.path()).unwrap();
        assert_eq!(outbox.backlog(), 3);
        outbox.append(&[payload(5)]).unwrap();
        let (rest, pos) = outbox.peek(100, 1 << 20).unwrap();
        assert_eq!(ids(&rest), ["e2", "e3", "e4", "e5"]);
        outbox.ack(pos, 4).unwrap();
        assert_eq!(outbox.backlog(), 0);
        assert!(outbox.peek(100, 1 << 20).unwrap().0.is_empty());
    }

    #[test]
    fn a_pinned_batch_is_the_same_batch_after_a_reopen_and_sequence_numbers_persist() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        outbox
            .append(&(0..3).map(payload).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(outbox.pinned().unwrap(), None);
        let (batch, _) = outbox.peek(100, 1 << 20).unwrap();
        outbox.pin(batch.len()).unwrap();
        drop(outbox);
        // A crash before the acknowledgement; more events arrive after the restart.
        let outbox = Outbox::open(dir.path()).unwrap();
        outbox
            .append(&(3..6).map(payload).collect::<Vec<_>>())
            .unwrap();
        let n = outbox.pinned().unwrap().expect("the batch stays pinned");
        let (again, pos) = outbox.peek(n, usize::MAX).unwrap();
        assert_eq!(ids(&again), ["e0", "e1", "e2"]);
        outbox.ack(pos, 3).unwrap();
        assert_eq!(
            outbox.pinned().unwrap(),
            None,
            "the pin is behind the cursor"
        );
        assert_eq!(outbox.seq(), 3);
        drop(outbox);
        let outbox = Outbox::open(dir.path()).unwrap();
        assert_eq!(outbox.seq(), 3);
        assert_eq!(outbox.backlog(), 3);
    }

    #[test]
    fn concurrent_appends_are_grouped_and_each_lands_once_in_its_callers_order() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = std::sync::Arc::new(Outbox::open(dir.path()).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let outbox = outbox.clone();
                std::thread::spawn(move || {
                    for i in 0..25 {
                        let p = format!(
                            "{{\"account\":\"acme\",\"queuedAt\":1,\"event\":{{\"id\":\"t{t}-{i:02}\"}}}}"
                        );
                        outbox.append(&[p.into_bytes()]).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(outbox.backlog(), 200);
        drop(outbox);
        let outbox = Outbox::open(dir.path()).unwrap();
        assert_eq!(
            outbox.backlog(),
            200,
            "every grouped append was synced whole"
        );
        let (all, _) = outbox.peek(1000, usize::MAX).unwrap();
        let ids = ids(&all);
        for t in 0..8 {
            let mine: Vec<&String> = ids
                .iter()
                .filter(|i| i.starts_with(&format!("t{t}-")))
                .collect();
            let want: Vec<String> = (0..25).map(|i| format!("t{t}-{i:02}")).collect();
            assert_eq!(mine, want.iter().collect::<Vec<_>>());
        }
    }

    #[test]
    fn segments_roll_over_and_delivered_ones_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        let big = vec![b'x'; 1024 * 1024];
        let mut p = Vec::new();
        p.extend_from_slice(b"{\"account\":\"a\",\"queuedAt\":1,\"event\":\"");
        p.extend_from_slice(&big);
        p.extend_from_slice(b"\"}");
        for _ in 0..20 {
            outbox.append(std::slice::from_ref(&p)).unwrap();
        }
        assert!(segment_path(dir.path(), 1).exists(), "a second segment");
        let mut delivered = 0;
        loop {
            let (entries, pos) = outbox.peek(3, 4 << 20).unwrap();
            if entries.is_empty() {
                break;
            }
            delivered += entries.len();
            outbox.ack(pos, entries.len() as u64).unwrap();
        }
        assert_eq!(delivered, 20);
        assert!(
            !segment_path(dir.path(), 0).exists(),
            "delivered segment deleted"
        );
        let reopened = Outbox::open(dir.path()).unwrap();
        assert_eq!(reopened.backlog(), 0);
    }
}
