//! Segment files: the plain active segment and sealed, block-compressed segments
//! (FORMAT.md §2–§4).
//!
//! Parsing is pure (over byte slices) and bounded: every length read from disk is checked against
//! the bytes present and the format's limits before it is used, and every refusal names a byte
//! offset. Sealed segments are written once and never modified.

use crate::frame::{self, FrameError, MAX_ACCOUNT_LEN, RawRecord};

/// Magic at the start of every segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"TRAILKLG";
/// Magic at the very end of a sealed segment.
pub const SEALED_MAGIC: [u8; 8] = *b"TRAILKSL";
/// Newest segment format version this build reads. Plain segments are written as version 1;
/// sealed segments as version 3 (small blocks compressed with the segment's own zstd
/// dictionary, FORMAT.md §5). Versions 1 (sealed, no tombstones) and 2 (sealed, rewritten by
/// retention, with tombstones) are still read.
pub const SEGMENT_VERSION: u16 = 3;
/// Segment version of plain segments (and of sealed segments written before version 3).
pub const SEGMENT_VERSION_PLAIN: u16 = 1;
/// Segment version of sealed segments with tombstones written before version 3.
pub const SEGMENT_VERSION_TOMBSTONES: u16 = 2;
/// Segment version of sealed segments with a dictionary region (possibly empty) and, when
/// retention rewrote them, tombstones.
pub const SEGMENT_VERSION_DICTIONARY: u16 = 3;
/// Flag bit on the account ordinal of a record-table entry (version 2 and later): the record is
/// a tombstone.
pub const TABLE_REMOVED_FLAG: u32 = 0x8000_0000;
/// Largest dictionary a reader accepts (version 3).
pub const MAX_DICT_LEN: usize = 1024 * 1024;
/// Bytes of the dictionary entry at the start of version-3 tables: length (u32), CRC-32 (u32).
pub const DICT_ENTRY_LEN: usize = 8;
/// Magic number at the start of a zstd dictionary (little-endian 0xEC30A437).
pub const ZSTD_DICT_MAGIC: [u8; 4] = [0x37, 0xA4, 0x30, 0xEC];
/// Header length.
pub const HEADER_LEN: usize = 24;
/// Footer length of a sealed segment.
pub const FOOTER_LEN: usize = 48;
/// Bytes per entry in a sealed segment's block table.
pub const BLOCK_ENTRY_LEN: usize = 32;
/// Bytes per entry in a sealed segment's record table.
pub const RECORD_ENTRY_LEN: usize = 12;
/// Largest uncompressed block a reader accepts.
pub const MAX_BLOCK_LEN: usize = 64 * 1024 * 1024;
/// Most records in one segment a reader accepts.
pub const MAX_SEGMENT_RECORDS: u64 = 1 << 28;

/// Kind byte in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentKind {
    /// Appendable, uncompressed frames.
    Plain = 1,
    /// Immutable, zstd blocks plus tables.
    Sealed = 2,
}

/// A decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Format version.
    pub version: u16,
    /// Plain or sealed.
    pub kind: SegmentKind,
    /// Global position of the segment's first record.
    pub first_position: u64,
}

/// A positioned parse failure inside one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentError {
    /// Byte offset in the segment (for sealed blocks: the offset of the block).
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
    /// The version found, when the failure is an unsupported version.
    pub unsupported_version: Option<u16>,
}

impl SegmentError {
    fn at(offset: u64, reason: impl Into<String>) -> Self {
        Self {
            offset,
            reason: reason.into(),
            unsupported_version: None,
        }
    }
}

impl std::fmt::Display for SegmentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "byte {}: {}", self.offset, self.reason)
    }
}

/// Name of a plain segment starting at `first`.
pub fn plain_name(first: u64) -> String {
    format!("seg/{first:020}.log")
}

/// Name of a sealed segment starting at `first`.
pub fn sealed_name(first: u64) -> String {
    format!("seg/{first:020}.sealed")
}

/// Parse a segment object name into (first position, kind).
pub fn parse_name(name: &str) -> Option<(u64, SegmentKind)> {
    let rest = name.strip_prefix("seg/")?;
    let (num, kind) = if let Some(n) = rest.strip_suffix(".log") {
        (n, SegmentKind::Plain)
    } else {
        (rest.strip_suffix(".sealed")?, SegmentKind::Sealed)
    };
    if num.len() != 20 || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((num.parse().ok()?, kind))
}

/// Encode a header (version 1).
pub fn encode_header(kind: SegmentKind, first_position: u64) -> [u8; HEADER_LEN] {
    encode_header_version(kind, first_position, SEGMENT_VERSION_PLAIN)
}

/// Encode a header of a given segment version.
pub fn encode_header_version(
    kind: SegmentKind,
    first_position: u64,
    version: u16,
) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..10].copy_from_slice(&version.to_le_bytes());
    h[10] = kind as u8;
    h[12..20].copy_from_slice(&first_position.to_le_bytes());
    let crc = crc32fast::hash(&h[..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Decode a header from the start of `buf`.
pub fn decode_header(buf: &[u8]) -> Result<Header, SegmentError> {
    if buf.len() < HEADER_LEN {
        return Err(SegmentError::at(
            0,
            format!("header truncated ({} of {HEADER_LEN} bytes)", buf.len()),
        ));
    }
    if buf[..8] != SEGMENT_MAGIC {
        return Err(SegmentError::at(0, "bad segment magic"));
    }
    let crc = u32::from_le_bytes(buf[20..24].try_into().expect("4"));
    if crc != crc32fast::hash(&buf[..20]) {
        return Err(SegmentError::at(20, "header CRC mismatch"));
    }
    let version = u16::from_le_bytes([buf[8], buf[9]]);
    if version == 0 || version > SEGMENT_VERSION {
        return Err(SegmentError {
            offset: 8,
            reason: format!("unsupported segment version {version}"),
            unsupported_version: Some(version),
        });
    }
    let kind = match buf[10] {
        1 => SegmentKind::Plain,
        2 => SegmentKind::Sealed,
        k => return Err(SegmentError::at(10, format!("unknown segment kind {k}"))),
    };
    Ok(Header {
        version,
        kind,
        first_position: u64::from_le_bytes(buf[12..20].try_into().expect("8")),
    })
}

/// Result of scanning a plain segment.
#[derive(Debug)]
pub struct PlainScan<'a> {
    /// The header.
    pub header: Header,
    /// Every valid record in order, with the byte offset of its frame.
    pub records: Vec<(u64, RawRecord<'a>)>,
    /// Length of the valid prefix (header + whole valid frames).
    pub valid_len: u64,
    /// Why scanning stopped before the end, if it did.
    pub tail: Option<SegmentError>,
}

/// Scan a plain segment, stopping at the first frame that does not decode or whose position is
/// not the next one. A bad header is an error; a bad frame ends the scan (`tail`).
pub fn scan_plain(buf: &[u8]) -> Result<PlainScan<'_>, SegmentError> {
    let header = decode_header(buf)?;
    if header.kind != SegmentKind::Plain {
        return Err(SegmentError::at(10, "expected a plain segment"));
    }
    let mut records = Vec::new();
    let mut off = HEADER_LEN;
    let mut tail = None;
    let mut next = header.first_position;
    while off < buf.len() {
        match frame::decode_frame(&buf[off..]) {
            Ok((rec, _)) if rec.removed => {
                tail = Some(SegmentError::at(
                    off as u64,
                    "a tombstone in a plain segment",
                ));
                break;
            }
            Ok((rec, n)) => {
                if rec.position != next {
                    tail = Some(SegmentError::at(
                        off as u64,
                        format!(
                            "record at position {} where {next} was expected",
                            rec.position
                        ),
                    ));
                    break;
                }
                records.push((off as u64, rec));
                next += 1;
                off += n;
            }
            Err(e) => {
                tail = Some(SegmentError::at(off as u64, e.to_string()));
                break;
            }
        }
    }
    Ok(PlainScan {
        header,
        records,
        valid_len: off as u64,
        tail,
    })
}

/// One block of a sealed segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockMeta {
    /// Byte offset of the compressed block in the segment.
    pub offset: u64,
    /// Compressed length.
    pub compressed_len: u32,
    /// Uncompressed length.
    pub uncompressed_len: u32,
    /// Global position of the block's first record.
    pub first_position: u64,
    /// Records in the block.
    pub record_count: u32,
    /// CRC-32 of the compressed bytes.
    pub crc: u32,
}

/// The tables of a sealed segment (everything but the blocks themselves).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedIndex {
    /// The header.
    pub header: Header,
    /// Account names; records refer to them by ordinal.
    pub accounts: Vec<String>,
    /// Per record (in position order): (account ordinal, index in the account).
    pub records: Vec<(u32, u64)>,
    /// Per record (in position order): whether it is a tombstone (version 2 tables; all false
    /// in version 1).
    pub removed: Vec<bool>,
    /// The blocks, in position order.
    pub blocks: Vec<BlockMeta>,
    /// Where the segment's zstd dictionary is (version 3 with a non-empty dictionary region;
    /// `None` otherwise: blocks are then plain zstd frames).
    pub dictionary: Option<DictMeta>,
}

/// Where a version-3 sealed segment keeps its zstd dictionary: right after the last block, right
/// before the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DictMeta {
    /// Byte offset of the dictionary in the segment.
    pub offset: u64,
    /// Length in bytes (1..=[`MAX_DICT_LEN`]).
    pub len: u32,
    /// CRC-32 of the dictionary bytes.
    pub crc: u32,
}

/// A segment's zstd dictionary, checked and prepared for decompression (parsed once; shared by
/// every reader of the segment's blocks).
pub struct Dictionary {
    ddict: zstd::zstd_safe::DDict<'static>,
    len: usize,
}

impl std::fmt::Debug for Dictionary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dictionary")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl Dictionary {
    /// Length of the stored dictionary in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the dictionary is empty (never: an empty dictionary region means none).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Memory held by the prepared dictionary.
    pub fn memory(&self) -> usize {
        self.ddict.sizeof()
    }
}

/// Check a dictionary's bytes against its table entry and prepare it for decompression.
pub fn open_dictionary(meta: &DictMeta, bytes: &[u8]) -> Result<Dictionary, SegmentError> {
    if bytes.len() != meta.len as usize {
        return Err(SegmentError::at(meta.offset, "dictionary truncated"));
    }
    if crc32fast::hash(bytes) != meta.crc {
        return Err(SegmentError::at(meta.offset, "dictionary CRC mismatch"));
    }
    if bytes.len() < 8 || bytes[..4] != ZSTD_DICT_MAGIC {
        return Err(SegmentError::at(
            meta.offset,
            "dictionary is not a zstd dictionary",
        ));
    }
    let ddict = zstd::zstd_safe::DDict::try_create(bytes)
        .ok_or_else(|| SegmentError::at(meta.offset, "dictionary does not parse"))?;
    Ok(Dictionary {
        ddict,
        len: bytes.len(),
    })
}

/// The dictionary of a sealed segment held whole in memory (`idx` parsed from `buf`), or `None`
/// when it has none.
pub fn load_dictionary(idx: &SealedIndex, buf: &[u8]) -> Result<Option<Dictionary>, SegmentError> {
    let Some(meta) = &idx.dictionary else {
        return Ok(None);
    };
    let start = meta.offset as usize;
    let bytes = buf
        .get(start..start + meta.len as usize)
        .ok_or_else(|| SegmentError::at(meta.offset, "dictionary truncated"))?;
    open_dictionary(meta, bytes).map(Some)
}

/// Options for sealing.
#[derive(Debug, Clone, Copy)]
pub struct SealOptions {
    /// Target uncompressed bytes per block (a block closes after the record that crosses it).
    pub block_target: usize,
    /// zstd level.
    pub zstd_level: i32,
    /// Largest zstd dictionary trained per segment (0: never train; blocks are then plain zstd
    /// frames). Capped at [`MAX_DICT_LEN`].
    pub dict_max_bytes: usize,
    /// Bytes of record data sampled (records spread evenly over the segment) to train the
    /// dictionary. A segment with less than 8 × `dict_max_bytes` of record data, or fewer than
    /// 8 records to sample, gets no dictionary, as does one whose training fails.
    pub dict_sample_bytes: usize,
}

impl Default for SealOptions {
    /// 32 KiB blocks at zstd level 1 with a 64 KiB dictionary trained on 1 MiB of the segment's
    /// records (chosen by measurement: docs/performance.md, "small blocks with a trained
    /// dictionary").
    fn default() -> Self {
        Self {
            block_target: 32 * 1024,
            zstd_level: 1,
            dict_max_bytes: 64 * 1024,
            dict_sample_bytes: 1024 * 1024,
        }
    }
}

/// Fewest sampled records a dictionary is trained on.
const MIN_DICT_SAMPLES: usize = 8;

/// Train a dictionary on records spread over the segment (FORMAT.md §5), or `None` when the
/// segment is too small or training fails. Tombstones are not sampled.
pub fn train_dictionary(records: &[RawRecord<'_>], opts: &SealOptions) -> Option<Vec<u8>> {
    let max = opts.dict_max_bytes.min(MAX_DICT_LEN);
    if max < 256 {
        return None;
    }
    let live: Vec<&[u8]> = records
        .iter()
        .filter(|r| !r.removed && !r.data.is_empty())
        .map(|r| r.data)
        .collect();
    let total: usize = live.iter().map(|d| d.len()).sum();
    if live.len() < MIN_DICT_SAMPLES || total < max.saturating_mul(8) {
        return None;
    }
    let budget = opts.dict_sample_bytes.min(total).max(1);
    let avg = (total / live.len()).max(1);
    let want = (budget / avg).clamp(1, live.len());
    let step = live.len() as f64 / want as f64;
    let mut buf = Vec::with_capacity(budget);
    let mut sizes = Vec::with_capacity(want);
    for k in 0..want {
        if buf.len() >= budget {
            break;
        }
        let d = live[((k as f64 * step) as usize).min(live.len() - 1)];
        let take = d.len().min(budget - buf.len());
        buf.extend_from_slice(&d[..take]);
        sizes.push(take);
    }
    if sizes.len() < MIN_DICT_SAMPLES {
        return None;
    }
    let dict = zstd::dict::from_continuous(&buf, &sizes, max).ok()?;
    (dict.len() >= 8 && dict[..4] == ZSTD_DICT_MAGIC).then_some(dict)
}

/// Build a sealed segment (version 3) from the records of a plain segment (all must be valid and
/// consecutive from `first_position`), or of a sealed one being rewritten by retention (then some
/// may be tombstones). A dictionary is trained on the segment's own records
/// ([`train_dictionary`]); without one the blocks are plain zstd frames.
pub fn build_sealed(
    first_position: u64,
    records: &[RawRecord<'_>],
    opts: SealOptions,
) -> std::io::Result<Vec<u8>> {
    let dict = train_dictionary(records, &opts);
    build_sealed_with(first_position, records, opts, dict.as_deref())
}

/// [`build_sealed`] with a given dictionary (`None` or empty: none), e.g. one trained elsewhere.
pub fn build_sealed_with(
    first_position: u64,
    records: &[RawRecord<'_>],
    opts: SealOptions,
    dict: Option<&[u8]>,
) -> std::io::Result<Vec<u8>> {
    let version = SEGMENT_VERSION_DICTIONARY;
    let dict = dict.filter(|d| !d.is_empty());
    if dict.is_some_and(|d| d.len() > MAX_DICT_LEN) {
        return Err(std::io::Error::other(
            "dictionary larger than the format allows",
        ));
    }
    let mut out = Vec::new();
    out.extend_from_slice(&encode_header_version(
        SegmentKind::Sealed,
        first_position,
        version,
    ));
    let mut accounts: Vec<String> = Vec::new();
    let mut ordinals: std::collections::HashMap<&str, u32> = Default::default();
    let mut table = Vec::with_capacity(records.len() * RECORD_ENTRY_LEN);
    let mut blocks = Vec::new();
    let mut compressor = match dict {
        Some(d) => zstd::bulk::Compressor::with_dictionary(opts.zstd_level, d)?,
        None => zstd::bulk::Compressor::new(opts.zstd_level)?,
    };
    let mut raw = Vec::with_capacity(opts.block_target + 64 * 1024);
    let mut block_first = first_position;
    let mut block_count = 0u32;
    let mut flush = |raw: &mut Vec<u8>,
                     out: &mut Vec<u8>,
                     block_first: u64,
                     count: u32|
     -> std::io::Result<()> {
        let compressed = compressor.compress(raw)?;
        blocks.push(BlockMeta {
            offset: out.len() as u64,
            compressed_len: compressed.len() as u32,
            uncompressed_len: raw.len() as u32,
            first_position: block_first,
            record_count: count,
            crc: crc32fast::hash(&compressed),
        });
        out.extend_from_slice(&compressed);
        raw.clear();
        Ok(())
    };
    for (i, r) in records.iter().enumerate() {
        debug_assert_eq!(r.position, first_position + i as u64);
        let ord = *ordinals.entry(r.account).or_insert_with(|| {
            accounts.push(r.account.to_owned());
            (accounts.len() - 1) as u32
        });
        let flag = if r.removed { TABLE_REMOVED_FLAG } else { 0 };
        table.extend_from_slice(&(ord | flag).to_le_bytes());
        table.extend_from_slice(&r.index.to_le_bytes());
        frame::encode_frame_kind(
            &mut raw,
            r.position,
            r.index,
            r.received_at,
            r.account,
            r.data,
            r.removed,
        );
        block_count += 1;
        if raw.len() >= opts.block_target {
            flush(&mut raw, &mut out, block_first, block_count)?;
            block_first = r.position + 1;
            block_count = 0;
        }
    }
    if block_count > 0 {
        flush(&mut raw, &mut out, block_first, block_count)?;
    }
    let dict = dict.unwrap_or_default();
    out.extend_from_slice(dict);
    let tables_offset = out.len() as u64;
    out.extend_from_slice(&(dict.len() as u32).to_le_bytes());
    let dict_crc = if dict.is_empty() {
        0
    } else {
        crc32fast::hash(dict)
    };
    out.extend_from_slice(&dict_crc.to_le_bytes());
    out.extend_from_slice(&(accounts.len() as u32).to_le_bytes());
    for a in &accounts {
        out.push(a.len() as u8);
        out.extend_from_slice(a.as_bytes());
    }
    out.extend_from_slice(&table);
    for b in &blocks {
        out.extend_from_slice(&b.offset.to_le_bytes());
        out.extend_from_slice(&b.compressed_len.to_le_bytes());
        out.extend_from_slice(&b.uncompressed_len.to_le_bytes());
        out.extend_from_slice(&b.first_position.to_le_bytes());
        out.extend_from_slice(&b.record_count.to_le_bytes());
        out.extend_from_slice(&b.crc.to_le_bytes());
    }
    let tables_len = out.len() as u64 - tables_offset;
    let tables_crc = crc32fast::hash(&out[tables_offset as usize..]);
    let footer_start = out.len();
    out.extend_from_slice(&tables_offset.to_le_bytes());
    out.extend_from_slice(&tables_len.to_le_bytes());
    out.extend_from_slice(&(records.len() as u64).to_le_bytes());
    out.extend_from_slice(&(blocks.len() as u32).to_le_bytes());
    out.extend_from_slice(&tables_crc.to_le_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    let fcrc = crc32fast::hash(&out[footer_start..]);
    out.extend_from_slice(&fcrc.to_le_bytes());
    out.extend_from_slice(&SEALED_MAGIC);
    Ok(out)
}

/// Where a sealed segment's tables live, from its footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    /// Offset of the tables.
    pub tables_offset: u64,
    /// Length of the tables.
    pub tables_len: u64,
    /// Records in the segment.
    pub record_count: u64,
    /// Blocks in the segment.
    pub block_count: u32,
    /// CRC-32 of the tables.
    pub tables_crc: u32,
    /// Segment version (must equal the header's).
    pub version: u16,
}

/// Decode the footer (the last [`FOOTER_LEN`] bytes of a segment of `file_len` bytes).
pub fn decode_footer(buf: &[u8], file_len: u64) -> Result<Footer, SegmentError> {
    let at = file_len.saturating_sub(FOOTER_LEN as u64);
    if buf.len() != FOOTER_LEN || file_len < (HEADER_LEN + FOOTER_LEN) as u64 {
        return Err(SegmentError::at(
            at,
            "sealed segment too short for a footer",
        ));
    }
    if buf[40..48] != SEALED_MAGIC {
        return Err(SegmentError::at(
            at + 40,
            "sealed segment footer magic missing (truncated?)",
        ));
    }
    let crc = u32::from_le_bytes(buf[36..40].try_into().expect("4"));
    if crc != crc32fast::hash(&buf[..36]) {
        return Err(SegmentError::at(at, "footer CRC mismatch"));
    }
    let u64_at = |i: usize| u64::from_le_bytes(buf[i..i + 8].try_into().expect("8"));
    let version = u16::from_le_bytes([buf[32], buf[33]]);
    if version == 0 || version > SEGMENT_VERSION {
        return Err(SegmentError {
            offset: at + 32,
            reason: format!("unsupported segment version {version}"),
            unsupported_version: Some(version),
        });
    }
    let f = Footer {
        tables_offset: u64_at(0),
        tables_len: u64_at(8),
        record_count: u64_at(16),
        block_count: u32::from_le_bytes(buf[24..28].try_into().expect("4")),
        tables_crc: u32::from_le_bytes(buf[28..32].try_into().expect("4")),
        version,
    };
    let end = f.tables_offset.checked_add(f.tables_len);
    if f.tables_offset < HEADER_LEN as u64 || end != Some(at) {
        return Err(SegmentError::at(
            at,
            "footer table bounds do not fit the file",
        ));
    }
    if f.record_count > MAX_SEGMENT_RECORDS || u64::from(f.block_count) > f.record_count {
        return Err(SegmentError::at(at, "footer counts out of range"));
    }
    Ok(f)
}

/// Decode the tables of a sealed segment, given its header bytes, footer and table bytes.
pub fn decode_tables(
    header: Header,
    footer: &Footer,
    tables: &[u8],
) -> Result<SealedIndex, SegmentError> {
    let base = footer.tables_offset;
    if footer.version != header.version {
        return Err(SegmentError::at(
            base + footer.tables_len + 32,
            "footer and header versions differ",
        ));
    }
    if tables.len() as u64 != footer.tables_len {
        return Err(SegmentError::at(base, "tables truncated"));
    }
    if crc32fast::hash(tables) != footer.tables_crc {
        return Err(SegmentError::at(base, "tables CRC mismatch"));
    }
    let mut at = 0usize;
    let need = |at: usize, n: usize| -> Result<(), SegmentError> {
        if at.checked_add(n).is_some_and(|e| e <= tables.len()) {
            Ok(())
        } else {
            Err(SegmentError::at(base + at as u64, "tables end early"))
        }
    };
    let mut dictionary = None;
    if header.version >= SEGMENT_VERSION_DICTIONARY {
        need(at, DICT_ENTRY_LEN)?;
        let len = u32::from_le_bytes(tables[0..4].try_into().expect("4"));
        let crc = u32::from_le_bytes(tables[4..8].try_into().expect("4"));
        let room = base - HEADER_LEN as u64;
        if len as usize > MAX_DICT_LEN || u64::from(len) > room {
            return Err(SegmentError::at(base, "dictionary length out of range"));
        }
        if len == 0 && crc != 0 {
            return Err(SegmentError::at(base + 4, "empty dictionary with a CRC"));
        }
        if len > 0 {
            dictionary = Some(DictMeta {
                offset: base - u64::from(len),
                len,
                crc,
            });
        }
        at += DICT_ENTRY_LEN;
    }
    // Blocks end where the dictionary (or, without one, the tables) start.
    let blocks_end = dictionary.map_or(base, |d| d.offset);
    need(at, 4)?;
    let n_accounts = u32::from_le_bytes(tables[at..at + 4].try_into().expect("4")) as usize;
    at += 4;
    if n_accounts as u64 > footer.record_count {
        return Err(SegmentError::at(base, "more accounts than records"));
    }
    let mut accounts = Vec::with_capacity(n_accounts.min(4096));
    for _ in 0..n_accounts {
        need(at, 1)?;
        let len = tables[at] as usize;
        need(at + 1, len)?;
        let name = std::str::from_utf8(&tables[at + 1..at + 1 + len])
            .ok()
            .filter(|a| len <= MAX_ACCOUNT_LEN && frame::valid_account(a))
            .ok_or_else(|| SegmentError::at(base + at as u64, "invalid account name"))?;
        accounts.push(name.to_owned());
        at += 1 + len;
    }
    let n_records = footer.record_count as usize;
    need(at, n_records * RECORD_ENTRY_LEN)?;
    let mut records = Vec::with_capacity(n_records);
    let mut removed = Vec::with_capacity(n_records);
    for i in 0..n_records {
        let e = &tables[at + i * RECORD_ENTRY_LEN..at + (i + 1) * RECORD_ENTRY_LEN];
        let mut ord = u32::from_le_bytes(e[0..4].try_into().expect("4"));
        let gone = header.version >= SEGMENT_VERSION_TOMBSTONES && ord & TABLE_REMOVED_FLAG != 0;
        if gone {
            ord &= !TABLE_REMOVED_FLAG;
        }
        removed.push(gone);
        if ord as usize >= accounts.len() {
            return Err(SegmentError::at(
                base + (at + i * RECORD_ENTRY_LEN) as u64,
                "record table names an unknown account",
            ));
        }
        records.push((ord, u64::from_le_bytes(e[4..12].try_into().expect("8"))));
    }
    at += n_records * RECORD_ENTRY_LEN;
    let n_blocks = footer.block_count as usize;
    need(at, n_blocks * BLOCK_ENTRY_LEN)?;
    let mut blocks = Vec::with_capacity(n_blocks);
    let mut next_pos = header.first_position;
    let mut next_off = HEADER_LEN as u64;
    for i in 0..n_blocks {
        let e = &tables[at + i * BLOCK_ENTRY_LEN..at + (i + 1) * BLOCK_ENTRY_LEN];
        let b = BlockMeta {
            offset: u64::from_le_bytes(e[0..8].try_into().expect("8")),
            compressed_len: u32::from_le_bytes(e[8..12].try_into().expect("4")),
            uncompressed_len: u32::from_le_bytes(e[12..16].try_into().expect("4")),
            first_position: u64::from_le_bytes(e[16..24].try_into().expect("8")),
            record_count: u32::from_le_bytes(e[24..28].try_into().expect("4")),
            crc: u32::from_le_bytes(e[28..32].try_into().expect("4")),
        };
        if b.offset != next_off
            || b.first_position != next_pos
            || b.record_count == 0
            || b.uncompressed_len as usize > MAX_BLOCK_LEN
        {
            return Err(SegmentError::at(
                base + (at + i * BLOCK_ENTRY_LEN) as u64,
                format!("block table entry {i} is inconsistent"),
            ));
        }
        next_off = b.offset + u64::from(b.compressed_len);
        next_pos = b.first_position + u64::from(b.record_count);
        blocks.push(b);
    }
    at += n_blocks * BLOCK_ENTRY_LEN;
    if at != tables.len() {
        return Err(SegmentError::at(
            base + at as u64,
            "trailing bytes in tables",
        ));
    }
    if next_off != blocks_end || next_pos != header.first_position + footer.record_count {
        return Err(SegmentError::at(base, "blocks do not cover the segment"));
    }
    Ok(SealedIndex {
        header,
        accounts,
        records,
        removed,
        blocks,
        dictionary,
    })
}

/// Parse a whole sealed segment held in memory (verification, fuzzing). Blocks are not opened.
pub fn parse_sealed(buf: &[u8]) -> Result<SealedIndex, SegmentError> {
    let header = decode_header(buf)?;
    if header.kind != SegmentKind::Sealed {
        return Err(SegmentError::at(10, "expected a sealed segment"));
    }
    let len = buf.len() as u64;
    let footer = decode_footer(&buf[buf.len().saturating_sub(FOOTER_LEN)..], len)?;
    let tables =
        &buf[footer.tables_offset as usize..(footer.tables_offset + footer.tables_len) as usize];
    decode_tables(header, &footer, tables)
}

/// Check and decompress one block's bytes (of a segment without a dictionary).
pub fn open_block(block: &BlockMeta, compressed: &[u8]) -> Result<Vec<u8>, SegmentError> {
    open_block_with(block, compressed, None)
}

/// Check and decompress one block's bytes with the segment's dictionary, if it has one.
pub fn open_block_with(
    block: &BlockMeta,
    compressed: &[u8],
    dict: Option<&Dictionary>,
) -> Result<Vec<u8>, SegmentError> {
    if compressed.len() != block.compressed_len as usize {
        return Err(SegmentError::at(block.offset, "block truncated"));
    }
    if crc32fast::hash(compressed) != block.crc {
        return Err(SegmentError::at(block.offset, "block CRC mismatch"));
    }
    if let Some(dict) = dict {
        thread_local! {
            static DCTX: std::cell::RefCell<Option<zstd::zstd_safe::DCtx<'static>>> =
                const { std::cell::RefCell::new(None) };
        }
        let mut raw = Vec::with_capacity(block.uncompressed_len as usize);
        DCTX.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                *slot = zstd::zstd_safe::DCtx::try_create();
            }
            let Some(d) = slot.as_mut() else {
                return Err("no memory for a decompression context".to_string());
            };
            d.decompress_using_ddict(&mut raw, compressed, &dict.ddict)
                .map_err(|code| zstd::zstd_safe::get_error_name(code).to_string())
        })
        .map_err(|e| {
            SegmentError::at(
                block.offset,
                format!("block does not decompress with the segment's dictionary: {e}"),
            )
        })?;
        if raw.len() != block.uncompressed_len as usize {
            return Err(SegmentError::at(
                block.offset,
                "block decompressed to the wrong length",
            ));
        }
        return Ok(raw);
    }
    // A decompression context is costly to set up (it showed in profiles of reads that open
    // one block per event), so each thread keeps one.
    thread_local! {
        static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    let raw = DECOMPRESSOR
        .with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                *slot = Some(zstd::bulk::Decompressor::new()?);
            }
            let d = slot.as_mut().expect("just set");
            d.decompress(compressed, block.uncompressed_len as usize)
        })
        .map_err(|e| SegmentError::at(block.offset, format!("block does not decompress: {e}")))?;
    if raw.len() != block.uncompressed_len as usize {
        return Err(SegmentError::at(
            block.offset,
            "block decompressed to the wrong length",
        ));
    }
    Ok(raw)
}

/// Decode all frames of an opened block, checking positions.
pub fn block_records<'a>(
    block: &BlockMeta,
    raw: &'a [u8],
) -> Result<Vec<RawRecord<'a>>, SegmentError> {
    let mut out = Vec::with_capacity(block.record_count as usize);
    let mut off = 0usize;
    while off < raw.len() {
        let (r, n) = frame::decode_frame(&raw[off..]).map_err(|e: FrameError| {
            SegmentError::at(block.offset, format!("record at block byte {off}: {e}"))
        })?;
        if r.position != block.first_position + out.len() as u64 {
            return Err(SegmentError::at(
                block.offset,
                format!("record at block byte {off} has position {}", r.position),
            ));
        }
        out.push(r);
        off += n;
    }
    if out.len() != block.record_count as usize {
        return Err(SegmentError::at(
            block.offset,
            "block record count mismatch",
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_roundtrip() {
        let datas: Vec<Vec<u8>> = (0..100)
            .map(|i| format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(i)).into_bytes())
            .collect();
        let recs: Vec<RawRecord<'_>> = datas
            .iter()
            .enumerate()
            .map(|(i, d)| RawRecord {
                position: 10 + i as u64,
                received_at: i as i64,
                index: i as u64 / 2,
                account: if i % 2 == 0 { "a" } else { "b" },
                data: d,
                removed: false,
            })
            .collect();
        let opts = SealOptions {
            block_target: 500,
            zstd_level: 3,
            ..SealOptions::default()
        };
        let bytes = build_sealed(10, &recs, opts).unwrap();
        let idx = parse_sealed(&bytes).unwrap();
        assert_eq!(idx.accounts, vec!["a", "b"]);
        assert_eq!(idx.records.len(), 100);
        assert!(idx.blocks.len() > 3);
        let mut all = Vec::new();
        for b in &idx.blocks {
            let c = &bytes[b.offset as usize..(b.offset + u64::from(b.compressed_len)) as usize];
            let raw = open_block(b, c).unwrap();
            for r in block_records(b, &raw).unwrap() {
                all.push(r.data.to_vec());
            }
        }
        assert_eq!(all, datas);
        for cut in [1, 10, 47, 48, 100] {
            assert!(parse_sealed(&bytes[..bytes.len() - cut]).is_err());
        }
    }

    /// Event-like records (JSON of a few shapes with varying ids), `n` of them; record `big`
    /// (if any) is padded past 100 KiB.
    fn event_datas(n: usize, big: Option<usize>) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                let mut e = format!(
                    r#"{{"action":"svc{}.thing.{}","correlationId":"{:016x}","outcome":"{}","initiator":{{"id":"IBMid-{:06}","host":{{"address":"10.0.{}.{}"}}}},"target":{{"id":"crn:v1:bluemix:public:svc{}:eu-de:a/acct{}::thing:{:08x}","typeURI":"svc/thing"}},"severity":"normal"}}"#,
                    i % 5,
                    ["create", "update", "delete", "read"][i % 4],
                    (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                    if i % 7 == 0 { "failure" } else { "success" },
                    i % 997,
                    i % 256,
                    i / 256 % 256,
                    i % 5,
                    i % 13,
                    (i as u32).wrapping_mul(2_654_435_761),
                );
                if Some(i) == big {
                    e.push_str(&"0".repeat(120_000));
                }
                e.into_bytes()
            })
            .collect()
    }

    fn raw_records<'a>(first: u64, datas: &'a [Vec<u8>]) -> Vec<RawRecord<'a>> {
        datas
            .iter()
            .enumerate()
            .map(|(i, d)| RawRecord {
                position: first + i as u64,
                received_at: 1_000 + i as i64,
                index: i as u64 / 3,
                account: ["acme", "globex", "initech"][i % 3],
                data: d,
                removed: false,
            })
            .collect()
    }

    /// Every record of a whole sealed segment, opened with its dictionary.
    /// (position, account, index, data) of a record.
    type Owned = (u64, String, u64, Vec<u8>);

    fn all_records(bytes: &[u8]) -> Result<Vec<Owned>, SegmentError> {
        let idx = parse_sealed(bytes)?;
        let dict = load_dictionary(&idx, bytes)?;
        let mut out = Vec::new();
        for b in &idx.blocks {
            let c = &bytes[b.offset as usize..(b.offset + u64::from(b.compressed_len)) as usize];
            let raw = open_block_with(b, c, dict.as_ref())?;
            for r in block_records(b, &raw)? {
                out.push((r.position, r.account.to_owned(), r.index, r.data.to_vec()));
            }
        }
        Ok(out)
    }

    fn small_dict_options() -> SealOptions {
        SealOptions {
            block_target: 4 * 1024,
            zstd_level: 1,
            dict_max_bytes: 2 * 1024,
            dict_sample_bytes: 32 * 1024,
        }
    }

    #[test]
    fn version_3_with_a_dictionary_round_trips_every_record_across_blocks() {
        // One record larger than many blocks sits in the middle.
        let datas = event_datas(600, Some(300));
        let recs = raw_records(77, &datas);
        let bytes = build_sealed(77, &recs, small_dict_options()).unwrap();
        let idx = parse_sealed(&bytes).unwrap();
        assert_eq!(idx.header.version, SEGMENT_VERSION_DICTIONARY);
        let meta = idx.dictionary.expect("a dictionary was trained");
        assert!(meta.len > 256 && meta.len as usize <= 2 * 1024, "{meta:?}");
        let last = idx.blocks.last().unwrap();
        assert_eq!(meta.offset, last.offset + u64::from(last.compressed_len));
        assert!(idx.blocks.len() > 20, "{} blocks", idx.blocks.len());
        // The big record closes its block alone-ish: some block is far larger than the target.
        assert!(idx.blocks.iter().any(|b| b.uncompressed_len > 100_000));
        let all = all_records(&bytes).unwrap();
        assert_eq!(all.len(), datas.len());
        for (i, (pos, account, index, data)) in all.iter().enumerate() {
            assert_eq!(*pos, 77 + i as u64);
            assert_eq!(account, ["acme", "globex", "initech"][i % 3]);
            assert_eq!(*index, i as u64 / 3);
            assert_eq!(data, &datas[i]);
        }
        // Blocks need the dictionary: without it they do not decompress (an error, not bytes).
        let b = &idx.blocks[0];
        let c = &bytes[b.offset as usize..(b.offset + u64::from(b.compressed_len)) as usize];
        let e = open_block(b, c).unwrap_err();
        assert!(e.reason.contains("does not decompress"), "{e}");
    }

    #[test]
    fn the_dictionary_makes_small_blocks_smaller() {
        let datas = event_datas(2000, None);
        let recs = raw_records(0, &datas);
        let with = build_sealed(0, &recs, small_dict_options()).unwrap();
        let without = build_sealed(
            0,
            &recs,
            SealOptions {
                dict_max_bytes: 0,
                ..small_dict_options()
            },
        )
        .unwrap();
        assert!(parse_sealed(&with).unwrap().dictionary.is_some());
        assert!(parse_sealed(&without).unwrap().dictionary.is_none());
        assert!(
            with.len() < without.len(),
            "with {} without {}",
            with.len(),
            without.len()
        );
        assert_eq!(all_records(&with).unwrap(), all_records(&without).unwrap());
    }

    #[test]
    fn a_segment_too_small_to_train_is_written_without_a_dictionary() {
        let datas = event_datas(5, None);
        let recs = raw_records(3, &datas);
        let bytes = build_sealed(3, &recs, SealOptions::default()).unwrap();
        let idx = parse_sealed(&bytes).unwrap();
        assert_eq!(idx.header.version, SEGMENT_VERSION_DICTIONARY);
        assert!(idx.dictionary.is_none());
        assert!(load_dictionary(&idx, &bytes).unwrap().is_none());
        assert_eq!(all_records(&bytes).unwrap().len(), 5);
    }

    #[test]
    fn a_damaged_dictionary_is_a_positioned_error_never_wrong_bytes() {
        let datas = event_datas(600, None);
        let recs = raw_records(0, &datas);
        let bytes = build_sealed(0, &recs, small_dict_options()).unwrap();
        let meta = parse_sealed(&bytes).unwrap().dictionary.unwrap();
        for at in [0usize, 4, 100, meta.len as usize - 1] {
            let mut bad = bytes.clone();
            bad[meta.offset as usize + at] ^= 0x10;
            // The tables still parse (they do not cover the dictionary bytes)...
            let idx = parse_sealed(&bad).unwrap();
            // ...but the dictionary is refused by its own CRC, at its offset.
            let e = load_dictionary(&idx, &bad).unwrap_err();
            assert_eq!(e.offset, meta.offset);
            assert!(e.reason.contains("dictionary CRC mismatch"), "{e}");
            assert!(all_records(&bad).is_err());
        }
        // A dictionary whose CRC was recomputed over garbage is refused too (no panic).
        let mut forged = bytes.clone();
        let start = meta.offset as usize;
        forged[start..start + meta.len as usize].fill(0xAB);
        let m = DictMeta {
            crc: crc32fast::hash(&forged[start..start + meta.len as usize]),
            ..meta
        };
        let e = open_dictionary(&m, &forged[start..start + meta.len as usize]).unwrap_err();
        assert!(e.reason.contains("not a zstd dictionary"), "{e}");
        // Garbage after a genuine magic number.
        forged[start..start + 4].copy_from_slice(&ZSTD_DICT_MAGIC);
        let m = DictMeta {
            crc: crc32fast::hash(&forged[start..start + meta.len as usize]),
            ..meta
        };
        if let Ok(d) = open_dictionary(&m, &forged[start..start + meta.len as usize]) {
            let idx = parse_sealed(&bytes).unwrap();
            let b = &idx.blocks[1];
            let c = &bytes[b.offset as usize..(b.offset + u64::from(b.compressed_len)) as usize];
            match open_block_with(b, c, Some(&d)) {
                Err(e) => assert!(e.reason.contains("does not decompress"), "{e}"),
                Ok(raw) => panic!("a forged dictionary gave {} bytes", raw.len()),
            }
        }
    }

    #[test]
    fn damaged_dictionary_entries_in_the_tables_are_refused() {
        let datas = event_datas(600, None);
        let recs = raw_records(0, &datas);
        let bytes = build_sealed(0, &recs, small_dict_options()).unwrap();
        let len = bytes.len();
        let footer = decode_footer(&bytes[len - FOOTER_LEN..], len as u64).unwrap();
        let header = decode_header(&bytes).unwrap();
        let t0 = footer.tables_offset as usize;
        let tables = bytes[t0..t0 + footer.tables_len as usize].to_vec();
        for (field, value) in [
            (0usize, u32::MAX),
            (0, (MAX_DICT_LEN + 1) as u32),
            (0, 0),
            (0, 1),
            (0, t0 as u32),
        ] {
            let mut t = tables.clone();
            t[field..field + 4].copy_from_slice(&value.to_le_bytes());
            let f = Footer {
                tables_crc: crc32fast::hash(&t),
                ..footer
            };
            let e = decode_tables(header, &f, &t).unwrap_err();
            assert!(
                e.reason.contains("dictionary") || e.reason.contains("blocks do not cover"),
                "{value}: {e}"
            );
        }
    }

    #[test]
    fn tombstones_in_version_3() {
        let datas = event_datas(600, None);
        let recs = raw_records(0, &datas);
        let tomb = crate::frame::tombstone_data(&[7; 32], 9);
        let rewritten: Vec<RawRecord<'_>> = recs
            .iter()
            .map(|r| {
                if r.position < 300 {
                    RawRecord {
                        data: &tomb,
                        removed: true,
                        ..*r
                    }
                } else {
                    *r
                }
            })
            .collect();
        let bytes = build_sealed(0, &rewritten, small_dict_options()).unwrap();
        let idx = parse_sealed(&bytes).unwrap();
        assert_eq!(idx.header.version, SEGMENT_VERSION_DICTIONARY);
        assert_eq!(idx.removed.iter().filter(|r| **r).count(), 300);
        let all = all_records(&bytes).unwrap();
        assert_eq!(all[0].3, tomb.to_vec());
        assert_eq!(all[599].3, datas[599]);
    }
}
