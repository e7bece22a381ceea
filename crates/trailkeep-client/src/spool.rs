//! The disk spool: events that could not be sent yet, kept in append-only files until the server
//! has acknowledged them.
//!
//! Owns: the spool directory's format, appending ([`Spool`], used under the client's state lock),
//! reading in order ([`SpoolReader`], used by the sending thread only), the acknowledged position
//! and the deletion of fully acknowledged files. Must never: rewrite or truncate a record that may
//! still be unacknowledged, or stop at a damaged record without moving past it.
//!
//! # Format (version 1)
//!
//! A spool directory holds segment files `<number>.seg` (20 decimal digits, numbers increase) and
//! one `ack` file. Each segment starts with the 8-byte magic `TKSPOOL1` and is followed by
//! records, all integers little-endian:
//!
//! ```text
//! u32 payload length | u32 CRC-32 (IEEE) of the payload | payload
//! payload = u16 id length | id (UTF-8) | the event as one JSON line (no newline)
//! ```
//!
//! `ack` is 24 bytes: `TKAK`, `u64` segment number, `u64` byte offset, `u32` CRC-32 of the
//! preceding 20 bytes. Everything before that position has been acknowledged by the server (or
//! given up on). It is replaced atomically (write `ack.tmp`, fsync, rename, fsync the directory)
//! only after the server acknowledged the records, so a crash at any point replays at worst
//! records the server already holds — which it recognises by their ids and does not store again.
//!
//! A process always appends to a **new** segment, never after what an earlier process left, so a
//! torn record from a crash can only be the last record of an older segment. The reader treats a
//! short header, an implausible length, a short payload or a CRC mismatch as damage: it reports
//! the record through [`Failure::SpoolCorrupt`](crate::Failure::SpoolCorrupt) and continues with
//! the next segment (lengths cannot be trusted past a damaged record).
//!
//! The CRC catches torn writes and bit rot; it is no protection against someone editing the file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

/// Magic and format version at the start of every segment.
pub const SEGMENT_MAGIC: &[u8; 8] = b"TKSPOOL1";
/// Magic of the ack file.
const ACK_MAGIC: &[u8; 4] = b"TKAK";
/// Largest payload accepted when reading; anything larger is damage.
pub const MAX_RECORD_BYTES: u32 = 16 * 1024 * 1024;
const HEADER: u64 = SEGMENT_MAGIC.len() as u64;

/// One event: its id and its JSON line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The event id.
    pub id: Arc<str>,
    /// The event as one JSON line.
    pub line: Bytes,
}

/// A position in the spool: a segment and a byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    /// Segment number.
    pub segment: u64,
    /// Byte offset in the segment.
    pub offset: u64,
}

/// Errors opening or writing the spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file operation failed.
    #[error("spool {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The spool reached its size limit.
    #[error("the spool is full ({limit} bytes)")]
    Full {
        /// The configured limit.
        limit: u64,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:020}.seg"))
}

/// Segment numbers present in `dir`, ascending, with their sizes.
fn list_segments(dir: &Path) -> Result<Vec<(u64, u64)>, SpoolError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(".seg") else {
            continue;
        };
        let Ok(n) = stem.parse::<u64>() else { continue };
        let len = entry.metadata().map_err(io_err(&entry.path()))?.len();
        out.push((n, len));
    }
    out.sort_unstable();
    Ok(out)
}

fn sync_dir(dir: &Path) -> Result<(), SpoolError> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Appends `record` in the framed format to `out`.
pub fn encode_record(record: &Record, out: &mut Vec<u8>) {
    let id = record.id.as_bytes();
    let id_len = u16::try_from(id.len()).unwrap_or(u16::MAX);
    let id = &id[..usize::from(id_len)];
    let payload_len = 2 + id.len() + record.line.len();
    let start = out.len();
    out.extend_from_slice(&(payload_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&id_len.to_le_bytes());
    out.extend_from_slice(id);
    out.extend_from_slice(&record.line);
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn decode_payload(payload: &[u8]) -> Result<Record, String> {
    if payload.len() < 2 {
        return Err("payload shorter than its id length".into());
    }
    let id_len = usize::from(u16::from_le_bytes([payload[0], payload[1]]));
    let Some(id) = payload.get(2..2 + id_len) else {
        return Err("id longer than the payload".into());
    };
    let id = std::str::from_utf8(id).map_err(|_| "id is not UTF-8".to_string())?;
    Ok(Record {
        id: Arc::from(id),
        line: Bytes::copy_from_slice(&payload[2 + id_len..]),
    })
}

fn read_ack(dir: &Path) -> Option<Pos> {
    let bytes = fs::read(dir.join("ack")).ok()?;
    if bytes.len() != 24 || &bytes[..4] != ACK_MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(bytes[20..24].try_into().ok()?);
    if crc32fast::hash(&bytes[..20]) != crc {
        return None;
    }
    Some(Pos {
        segment: u64::from_le_bytes(bytes[4..12].try_into().ok()?),
        offset: u64::from_le_bytes(bytes[12..20].try_into().ok()?),
    })
}

fn write_ack(dir: &Path, pos: Pos) -> Result<(), SpoolError> {
    let mut bytes = Vec::with_capacity(24);
    bytes.extend_from_slice(ACK_MAGIC);
    bytes.extend_from_slice(&pos.segment.to_le_bytes());
    bytes.extend_from_slice(&pos.offset.to_le_bytes());
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let tmp = dir.join("ack.tmp");
    {
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(&bytes).map_err(io_err(&tmp))?;
        f.sync_data().map_err(io_err(&tmp))?;
    }
    let path = dir.join("ack");
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(dir)
}

/// Limits of a spool.
#[derive(Debug, Clone, Copy)]
pub struct SpoolLimits {
    /// A segment is closed and a new one started past this size.
    pub segment_bytes: u64,
    /// Appends fail with [`SpoolError::Full`] once the segments together reach this size.
    pub max_bytes: u64,
}

struct Active {
    number: u64,
    file: Arc<File>,
    len: u64,
}

/// The writing side of a spool.
pub struct Spool {
    dir: PathBuf,
    limits: SpoolLimits,
    active: Active,
    /// Bytes of all segment files, the active one included.
    total_bytes: u64,
    /// Closed segments whose data is not yet fsynced.
    unsynced: Vec<Arc<File>>,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("dir", &self.dir)
            .field("active", &self.active.number)
            .field("active_len", &self.active.len)
            .field("total_bytes", &self.total_bytes)
            .finish()
    }
}

/// What [`Spool::open`] found.
#[derive(Debug)]
pub struct Opened {
    /// The writer.
    pub spool: Spool,
    /// The reader, at the acknowledged position.
    pub reader: SpoolReader,
    /// Whether unacknowledged records may be waiting (the previous process left data).
    pub has_backlog: bool,
}

impl Spool {
    /// Opens (creating if needed) the spool in `dir`: drops fully acknowledged segments and starts a
    /// new segment for this process's appends.
    pub fn open(dir: &Path, limits: SpoolLimits) -> Result<Opened, SpoolError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let ack = read_ack(dir);
        let mut segments = list_segments(dir)?;
        if let Some(ack) = ack {
            for &(n, _) in segments.iter().filter(|(n, _)| *n < ack.segment) {
                let p = segment_path(dir, n);
                fs::remove_file(&p).map_err(io_err(&p))?;
            }
            segments.retain(|(n, _)| *n >= ack.segment);
        }
        let start = match (ack, segments.first()) {
            (Some(a), Some(&(first, _))) if a.segment == first => a,
            (_, Some(&(first, _))) => Pos {
                segment: first,
                offset: HEADER,
            },
            (_, None) => Pos {
                segment: 0,
                offset: HEADER,
            },
        };
        let has_backlog = segments.iter().any(|&(n, len)| {
            if n == start.segment {
                len > start.offset
            } else {
                len > HEADER
            }
        });
        let next = segments.last().map_or(1, |&(n, _)| n + 1);
        let total_bytes = segments.iter().map(|&(_, len)| len).sum::<u64>();
        let active = create_segment(dir, next)?;
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            limits,
            total_bytes: total_bytes + active.len,
            active,
            unsynced: Vec::new(),
        };
        let mut reader = SpoolReader {
            dir: dir.to_path_buf(),
            pos: start,
            acked: start,
            file: None,
        };
        if !has_backlog {
            // Nothing older is unacknowledged: start from this process's segment and drop the rest.
            let fresh = Pos {
                segment: next,
                offset: HEADER,
            };
            reader.pos = fresh;
            if segments.is_empty() {
                reader.acked = fresh;
            } else {
                let freed = reader.ack(fresh)?;
                spool.forget_bytes(freed);
            }
        }
        Ok(Opened {
            spool,
            reader,
            has_backlog,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The end of what has been written: the reader may read up to here.
    pub fn end(&self) -> Pos {
        Pos {
            segment: self.active.number,
            offset: self.active.len,
        }
    }

    /// Bytes of all segment files.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Appends records in order, all or a prefix: returns how many were written. Fails only when
    /// not even the first record could be written.
    pub fn append(&mut self, records: &[Record]) -> Result<usize, SpoolError> {
        let mut buf = Vec::new();
        let mut count = 0;
        for r in records {
            let before = buf.len();
            encode_record(r, &mut buf);
            if self.total_bytes + buf.len() as u64 > self.limits.max_bytes {
                buf.truncate(before);
                break;
            }
            count += 1;
        }
        if count == 0 {
            return if records.is_empty() {
                Ok(0)
            } else {
                Err(SpoolError::Full {
                    limit: self.limits.max_bytes,
                })
            };
        }
        if self.active.len > HEADER
            && self.active.len + buf.len() as u64 > self.limits.segment_bytes
        {
            self.roll()?;
        }
        let old_len = self.active.len;
        if let Err(e) = (&*self.active.file).write_all(&buf) {
            // Never leave a partial record where the next append would follow it.
            if self.active.file.set_len(old_len).is_err() {
                let _ = self.roll();
            }
            return Err(io_err(&segment_path(&self.dir, self.active.number))(e));
        }
        self.active.len += buf.len() as u64;
        self.total_bytes += buf.len() as u64;
        Ok(count)
    }

    /// Closes the active segment and starts the next one.
    pub fn roll(&mut self) -> Result<(), SpoolError> {
        let next = create_segment(&self.dir, self.active.number + 1)?;
        self.total_bytes += next.len;
        let old = std::mem::replace(&mut self.active, next);
        self.unsynced.push(old.file);
        Ok(())
    }

    /// The files to fsync so that everything appended so far is durable.
    pub fn files_to_sync(&mut self) -> Vec<Arc<File>> {
        let mut files = std::mem::take(&mut self.unsynced);
        files.push(self.active.file.clone());
        files
    }

    /// Records that segment files of `bytes` were deleted.
    pub fn forget_bytes(&mut self, bytes: u64) {
        self.total_bytes = self.total_bytes.saturating_sub(bytes);
    }
}

fn create_segment(dir: &Path, number: u64) -> Result<Active, SpoolError> {
    let path = segment_path(dir, number);
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(io_err(&path))?;
    file.write_all(SEGMENT_MAGIC).map_err(io_err(&path))?;
    file.sync_data().map_err(io_err(&path))?;
    sync_dir(dir)?;
    Ok(Active {
        number,
        file: Arc::new(file),
        len: HEADER,
    })
}

/// A damaged record the reader skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Segment number.
    pub segment: u64,
    /// Offset of the damaged record.
    pub offset: u64,
    /// What was wrong.
    pub reason: String,
}

/// The reading side of a spool: reads records in order and records acknowledgements.
pub struct SpoolReader {
    dir: PathBuf,
    /// The next record to read.
    pos: Pos,
    /// Everything before this has been acknowledged.
    acked: Pos,
    file: Option<(u64, BufReader<File>)>,
}

impl std::fmt::Debug for SpoolReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpoolReader")
            .field("dir", &self.dir)
            .field("pos", &self.pos)
            .field("acked", &self.acked)
            .finish()
    }
}

/// One batch read from the spool.
#[derive(Debug, Default)]
pub struct Batch {
    /// The records, in spool order.
    pub records: Vec<Record>,
    /// The position after each record.
    pub ends: Vec<Pos>,
    /// The position after the last record read (acknowledge it once they are handled).
    pub end: Option<Pos>,
    /// Damaged records skipped on the way.
    pub damage: Vec<Damage>,
}

impl SpoolReader {
    /// The next position to read.
    pub fn pos(&self) -> Pos {
        self.pos
    }

    /// Reads up to `max_records` records (and about `max_bytes` of JSON) written before `end`.
    pub fn read(&mut self, end: Pos, max_records: usize, max_bytes: usize) -> Batch {
        let mut batch = Batch::default();
        let mut bytes = 0;
        while batch.records.len() < max_records && bytes < max_bytes && self.pos < end {
            let limit = if self.pos.segment == end.segment {
                end.offset
            } else {
                u64::MAX
            };
            match self.next_record(limit) {
                Step::Record(r) => {
                    bytes += r.line.len();
                    batch.records.push(r);
                    batch.ends.push(self.pos);
                    batch.end = Some(self.pos);
                }
                Step::EndOfSegment => {
                    if self.pos.segment >= end.segment {
                        // The active segment ended before what was written to it: only an outside
                        // hand can do that. Move on rather than wait forever.
                        if self.pos < end {
                            batch.damage.push(Damage {
                                segment: self.pos.segment,
                                offset: self.pos.offset,
                                reason: "segment shorter than what was written".into(),
                            });
                            self.pos = end;
                            batch.end = Some(self.pos);
                        }
                        break;
                    }
                    self.next_segment(end.segment);
                    batch.end = Some(self.pos);
                }
                Step::Damaged(reason) => {
                    batch.damage.push(Damage {
                        segment: self.pos.segment,
                        offset: self.pos.offset,
                        reason,
                    });
                    if self.pos.segment >= end.segment {
                        // Cannot happen for the active segment of this process; stop rather than
                        // loop.
                        self.pos = end;
                    } else {
                        self.next_segment(end.segment);
                    }
                    batch.end = Some(self.pos);
                }
            }
        }
        batch
    }

    fn next_segment(&mut self, last: u64) {
        let next = list_segments(&self.dir)
            .ok()
            .and_then(|s| {
                s.into_iter()
                    .map(|(n, _)| n)
                    .find(|&n| n > self.pos.segment)
            })
            .unwrap_or(last)
            .min(last);
        self.pos = Pos {
            segment: next,
            offset: HEADER,
        };
        self.file = None;
    }

    fn next_record(&mut self, limit: u64) -> Step {
        let pos = self.pos;
        if pos.offset >= limit {
            return Step::EndOfSegment;
        }
        let file = match &mut self.file {
            Some((n, f)) if *n == pos.segment => f,
            _ => {
                let path = segment_path(&self.dir, pos.segment);
                let mut f = match File::open(&path) {
                    Ok(f) => f,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Step::EndOfSegment,
                    Err(e) => return Step::Damaged(format!("cannot open: {e}")),
                };
                let mut magic = [0u8; 8];
                if f.read_exact(&mut magic).is_err() || &magic != SEGMENT_MAGIC {
                    return Step::Damaged("not a spool segment (bad magic)".into());
                }
                if f.seek(SeekFrom::Start(pos.offset)).is_err() {
                    return Step::Damaged("cannot seek".into());
                }
                self.file = Some((pos.segment, BufReader::new(f)));
                &mut self.file.as_mut().expect("just set").1
            }
        };
        let mut header = [0u8; 8];
        match read_full(file, &mut header) {
            Ok(0) => return Step::EndOfSegment,
            Ok(8) => {}
            Ok(n) => {
                self.file = None;
                return Step::Damaged(format!("torn record: {n} of 8 header bytes"));
            }
            Err(e) => {
                self.file = None;
                return Step::Damaged(format!("read error: {e}"));
            }
        }
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        if len > MAX_RECORD_BYTES || pos.offset + 8 + u64::from(len) > limit {
            self.file = None;
            return Step::Damaged(format!("implausible record length {len}"));
        }
        let mut payload = vec![0u8; len as usize];
        match read_full(file, &mut payload) {
            Ok(n) if n == payload.len() => {}
            Ok(n) => {
                self.file = None;
                return Step::Damaged(format!("torn record: {n} of {len} payload bytes"));
            }
            Err(e) => {
                self.file = None;
                return Step::Damaged(format!("read error: {e}"));
            }
        }
        if crc32fast::hash(&payload) != crc {
            self.file = None;
            return Step::Damaged("checksum mismatch".into());
        }
        match decode_payload(&payload) {
            Ok(r) => {
                self.pos.offset += 8 + u64::from(len);
                Step::Record(r)
            }
            Err(reason) => {
                self.file = None;
                Step::Damaged(reason)
            }
        }
    }

    /// Goes back to the acknowledged position (to read a batch again after a failure).
    pub fn rewind(&mut self) {
        self.pos = self.acked;
        self.file = None;
    }

    /// Records that everything before `pos` is handled: persists it and deletes segment files
    /// wholly before it. Returns the bytes freed.
    pub fn ack(&mut self, pos: Pos) -> Result<u64, SpoolError> {
        if pos <= self.acked {
            return Ok(0);
        }
        write_ack(&self.dir, pos)?;
        self.acked = pos;
        let mut freed = 0;
        for (n, len) in list_segments(&self.dir)? {
            if n >= pos.segment {
                break;
            }
            let p = segment_path(&self.dir, n);
            fs::remove_file(&p).map_err(io_err(&p))?;
            freed += len;
        }
        Ok(freed)
    }

    /// The acknowledged position.
    pub fn acked(&self) -> Pos {
        self.acked
    }
}

enum Step {
    Record(Record),
    EndOfSegment,
    Damaged(String),
}

/// Reads until `buf` is full or end of file; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: SpoolLimits = SpoolLimits {
        segment_bytes: 1024,
        max_bytes: 1 << 20,
    };

    fn rec(i: usize) -> Record {
        Record {
            id: Arc::from(format!("id-{i}")),
            line: Bytes::from(format!("{{\"id\":\"id-{i}\",\"n\":{i}}}")),
        }
    }

    fn ids(b: &Batch) -> Vec<String> {
        b.records.iter().map(|r| r.id.to_string()).collect()
    }

    fn all(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|i| format!("id-{i}")).collect()
    }

    #[test]
    fn records_come_back_in_order_across_segments_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let Opened {
            mut spool,
            mut reader,
            has_backlog,
        } = Spool::open(dir.path(), LIMITS).unwrap();
        assert!(!has_backlog);
        let records: Vec<Record> = (0..40).map(rec).collect();
        assert_eq!(spool.append(&records[..25]).unwrap(), 25);
        assert_eq!(spool.append(&records[25..]).unwrap(), 15);
        assert!(list_segments(dir.path()).unwrap().len() >= 2);

        let b = reader.read(spool.end(), 10, usize::MAX);
        assert_eq!(ids(&b), all(0..10));
        reader.ack(b.end.unwrap()).unwrap();
        drop((spool, reader));

        // A new process resumes after the acknowledged records.
        let Opened {
            spool,
            mut reader,
            has_backlog,
        } = Spool::open(dir.path(), LIMITS).unwrap();
        assert!(has_backlog);
        let b = reader.read(spool.end(), 100, usize::MAX);
        assert_eq!(ids(&b), all(10..40));
        assert!(b.damage.is_empty());
        let freed = reader.ack(b.end.unwrap()).unwrap();
        assert!(freed > 0, "wholly acknowledged segments are deleted");
        drop((spool, reader));

        let Opened { has_backlog, .. } = Spool::open(dir.path(), LIMITS).unwrap();
        assert!(!has_backlog);
    }

    #[test]
    fn rewind_reads_the_unacknowledged_batch_again() {
        let dir = tempfile::tempdir().unwrap();
        let Opened {
            mut spool,
            mut reader,
            ..
        } = Spool::open(dir.path(), LIMITS).unwrap();
        spool.append(&(0..5).map(rec).collect::<Vec<_>>()).unwrap();
        let first = reader.read(spool.end(), 3, usize::MAX);
        reader.rewind();
        let again = reader.read(spool.end(), 3, usize::MAX);
        assert_eq!(ids(&first), ids(&again));
    }

    #[test]
    fn a_torn_tail_is_reported_and_skipped_and_later_segments_are_read() {
        let dir = tempfile::tempdir().unwrap();
        {
            let Opened { mut spool, .. } = Spool::open(dir.path(), LIMITS).unwrap();
            spool.append(&(0..3).map(rec).collect::<Vec<_>>()).unwrap();
        }
        // Tear the last record of the first segment, as a crash in the middle of a write would.
        let (first, len) = list_segments(dir.path()).unwrap()[0];
        let path = segment_path(dir.path(), first);
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 5)
            .unwrap();
        let Opened {
            mut spool,
            mut reader,
            has_backlog,
        } = Spool::open(dir.path(), LIMITS).unwrap();
        assert!(has_backlog);
        spool.append(&[rec(3)]).unwrap();
        let b = reader.read(spool.end(), 100, usize::MAX);
        assert_eq!(ids(&b), vec!["id-0", "id-1", "id-3"]);
        assert_eq!(b.damage.len(), 1, "{:?}", b.damage);
        assert!(b.damage[0].reason.contains("torn"), "{:?}", b.damage);
    }

    #[test]
    fn a_flipped_byte_is_a_checksum_mismatch_and_garbage_lengths_do_not_allocate() {
        let dir = tempfile::tempdir().unwrap();
        {
            let Opened { mut spool, .. } = Spool::open(dir.path(), LIMITS).unwrap();
            spool.append(&(0..2).map(rec).collect::<Vec<_>>()).unwrap();
        }
        let (first, _) = list_segments(dir.path()).unwrap()[0];
        let path = segment_path(dir.path(), first);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0x40;
        // A second damaged segment: a header claiming 4 GiB.
        fs::write(&path, &bytes).unwrap();
        let mut junk = SEGMENT_MAGIC.to_vec();
        junk.extend_from_slice(&[0xff; 12]);
        fs::write(segment_path(dir.path(), first + 1), junk).unwrap();
        let Opened {
            spool, mut reader, ..
        } = Spool::open(dir.path(), LIMITS).unwrap();
        let b = reader.read(spool.end(), 100, usize::MAX);
        assert_eq!(ids(&b), vec!["id-0"]);
        let reasons: Vec<&str> = b.damage.iter().map(|d| d.reason.as_str()).collect();
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(reasons[0].contains("checksum"), "{reasons:?}");
        assert!(reasons[1].contains("implausible"), "{reasons:?}");
    }

    #[test]
    fn appends_stop_at_the_size_limit() {
        let dir = tempfile::tempdir().unwrap();
        let limits = SpoolLimits {
            segment_bytes: 1 << 20,
            max_bytes: 200,
        };
        let Opened { mut spool, .. } = Spool::open(dir.path(), limits).unwrap();
        let records: Vec<Record> = (0..10).map(rec).collect();
        let n = spool.append(&records).unwrap();
        assert!(n > 0 && n < 10, "{n}");
        assert!(matches!(
            spool.append(&records[n..]),
            Err(SpoolError::Full { .. })
        ));
    }

    #[test]
    fn a_damaged_ack_file_replays_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        {
            let Opened {
                mut spool,
                mut reader,
                ..
            } = Spool::open(dir.path(), LIMITS).unwrap();
            spool.append(&(0..4).map(rec).collect::<Vec<_>>()).unwrap();
            let b = reader.read(spool.end(), 2, usize::MAX);
            reader.ack(b.end.unwrap()).unwrap();
        }
        fs::write(dir.path().join("ack"), b"nonsense").unwrap();
        let Opened {
            spool, mut reader, ..
        } = Spool::open(dir.path(), LIMITS).unwrap();
        let b = reader.read(spool.end(), 100, usize::MAX);
        assert_eq!(ids(&b), all(0..4), "at worst duplicates, never a loss");
    }
}
