//! The ledger handle: open + crash recovery, the single writer with group commit, sealing, reads,
//! proofs and checkpoint signing (FORMAT.md §8–§9).
//!
//! One writer thread owns every write to the active segment, the hash files and checkpoints. An
//! appender hands it a batch and is answered only after the batch's bytes are durable (or, in
//! [`Durability::Relaxed`], written to the OS). Whatever arrives while the writer is busy with one
//! fsync is committed by the next one: batches grow with load, and nobody sleeps. A sealer thread
//! compresses full segments in the background. Readers share an `RwLock` with the writer, which
//! holds it for writing only to publish a committed group.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::block_cache::BlockCache;
use crate::error::{Error, Result};
use crate::frame::{self, MAX_DATA_LEN};
use crate::history;
use crate::merkle::{self, Hash};
use crate::note::{Checkpoint, NoteSigner, NoteVerifier};
use crate::segment::{self, BlockMeta, SealOptions, SegmentKind};
use crate::storage::{LocalDir, Storage};
use crate::tiles::TileLog;

const SYNCER_THREAD: &str = "trailkeep-ledger-syncer";
const WRITER_THREAD: &str = "trailkeep-ledger-writer";

/// Magic of the `ledger.meta` object.
pub const META_MAGIC: [u8; 8] = *b"TRAILKMT";
/// Data-directory format version written and read by this build.
pub const FORMAT_VERSION: u32 = 1;
/// Name of the metadata object.
pub const META_NAME: &str = "ledger.meta";
/// Default object holding the signing key (when [`KeySource::Storage`] is used).
pub const KEY_NAME: &str = "keys/checkpoint.key";
/// Object holding the public verifier key, written at open.
pub const PUBKEY_NAME: &str = "keys/checkpoint.pub";

/// Whether an append is acknowledged after fsync or after the write to the OS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Acknowledge only after the data is fsynced (the default).
    #[default]
    Fsync,
    /// Acknowledge after the write; data is fsynced at least before each checkpoint is signed
    /// (about once a second), so a crash can lose the last second of acknowledged records.
    Relaxed,
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Durability::Fsync => "fsync",
            Durability::Relaxed => "relaxed",
        })
    }
}

/// Where the checkpoint signing key comes from.
#[derive(Debug, Clone, Default)]
pub enum KeySource {
    /// The object [`KEY_NAME`] in the ledger's storage; generated on first open.
    #[default]
    Storage,
    /// A file on the local file system; generated on first open (mode 0600 on Unix).
    File(PathBuf),
    /// A fixed Ed25519 seed (tests and fixtures).
    Seed([u8; 32]),
}

/// How to open a ledger.
#[derive(Debug, Clone)]
pub struct LedgerConfig {
    /// The checkpoint origin prefix; an account's log has origin `<origin>/<account>`.
    pub origin: String,
    /// Name of the signing key (defaults to `origin`).
    pub key_name: Option<String>,
    /// The signing key.
    pub key: KeySource,
    /// Acknowledge after fsync or after write.
    pub durability: Durability,
    /// Rotate (and then seal) the active segment once it reaches this many bytes.
    pub segment_target_bytes: u64,
    /// Block size, compression level and dictionary training of sealed segments.
    pub seal: SealOptions,
    /// Sign checkpoints of grown trees this often from the writer thread (`None`: only on
    /// [`Ledger::sign_checkpoints_if_grown`] and at close).
    pub checkpoint_interval: Option<Duration>,
    /// Most bytes committed by one group (one fsync).
    pub max_group_bytes: usize,
    /// Seal rotated segments on a background thread (otherwise inline, in the writer).
    pub background_sealing: bool,
    /// Memory for decompressed blocks of sealed segments that reads may come back to.
    pub block_cache_bytes: usize,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            origin: "trailkeep".into(),
            key_name: None,
            key: KeySource::Storage,
            durability: Durability::Fsync,
            segment_target_bytes: 64 * 1024 * 1024,
            seal: SealOptions::default(),
            checkpoint_interval: Some(Duration::from_secs(1)),
            max_group_bytes: 32 * 1024 * 1024,
            background_sealing: true,
            block_cache_bytes: 32 * 1024 * 1024,
        }
    }
}

/// Where an appended record landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The account.
    pub account: String,
    /// Index in the account's log (its Merkle leaf index).
    pub index: u64,
    /// Global position across all accounts.
    pub position: u64,
}

/// A stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The account.
    pub account: String,
    /// Index in the account's log.
    pub index: u64,
    /// Global position.
    pub position: u64,
    /// When the ledger received it: nanoseconds since the Unix epoch (UTC). Stored beside the
    /// bytes, not part of the leaf hash.
    pub received_at_unix_nanos: i64,
    /// The stored bytes.
    pub bytes: Vec<u8>,
}

/// A record as read, which may be a tombstone.
#[derive(Debug)]
struct Slot {
    record: Record,
    removed: bool,
}

/// What one call of [`Ledger::remove_bodies`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Removal {
    /// First index removed (records below it had been removed before).
    pub from: u64,
    /// End of the removed range: records `[from, to)` are now tombstones.
    pub to: u64,
    /// Sealed segments rewritten.
    pub segments: u64,
    /// Bytes of record data no longer stored.
    pub bytes: u64,
    /// Retention records inside `[from, to)`, which are kept.
    pub kept: Vec<u64>,
}

impl Removal {
    /// The index ranges `[a, b)` whose bodies are gone: `[from, to)` without the kept records.
    pub fn removed_ranges(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut start = self.from;
        for &k in &self.kept {
            if k > start {
                out.push((start, k));
            }
            start = start.max(k + 1);
        }
        if self.to > start {
            out.push((start, self.to));
        }
        out
    }
}

/// An account's current tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeHead {
    /// Number of leaves.
    pub size: u64,
    /// Root hash.
    pub root: Hash,
}

/// Counters about the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LedgerStats {
    /// Records stored.
    pub records: u64,
    /// Accounts with at least one record.
    pub accounts: u64,
    /// Segments (plain and sealed).
    pub segments: u64,
    /// Sealed segments.
    pub sealed_segments: u64,
}

type Reply = Box<dyn FnOnce(Result<Vec<Appended>>) + Send + 'static>;
/// One record on its way to the writer: account, bytes, leaf hash, received-at (Unix ns).
type Prepared = (String, Vec<u8>, Hash, i64);
/// One appender's batch and how to answer it.
type Batch = (Vec<Prepared>, Reply);
type SignReply = mpsc::SyncSender<Result<Vec<(String, u64)>>>;

enum Command {
    Append {
        records: Vec<Prepared>,
        reply: Reply,
    },
    Sign(SignReply),
    Rotate(mpsc::SyncSender<Result<()>>),
    Close(mpsc::SyncSender<Result<()>>),
}

#[derive(Debug)]
enum SegData {
    Plain {
        offsets: Vec<u64>,
        len: u64,
    },
    Sealed {
        blocks: Vec<BlockMeta>,
        dict: SegDict,
    },
}

/// Where a sealed segment's zstd dictionary is (segment version 3; `None`: blocks without one).
/// The prepared dictionary is kept by the block cache for the most recently read segments and
/// read and checked again when it was dropped.
#[derive(Debug)]
struct SegDict {
    meta: Option<segment::DictMeta>,
    /// The segment's first position, which names its dictionary in the cache.
    segment_first: u64,
}

impl SegDict {
    /// The prepared dictionary of segment `name`, or `None` when the segment has none.
    fn get(
        &self,
        storage: &dyn Storage,
        cache: &BlockCache,
        name: &str,
    ) -> Result<Option<Arc<segment::Dictionary>>> {
        let Some(meta) = &self.meta else {
            return Ok(None);
        };
        if let Some(d) = cache.dictionary(self.segment_first) {
            return Ok(Some(d));
        }
        let bytes = storage.get_range(name, meta.offset, meta.len as usize)?;
        let d = Arc::new(segment::open_dictionary(meta, &bytes).map_err(|e| seg_err(name, e))?);
        cache.insert_dictionary(self.segment_first, d.clone());
        Ok(Some(d))
    }
}

/// How a block read uses the block cache besides looking the block up in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeepBlock {
    /// Keep the block for later reads (a search's hits cluster in a few blocks).
    Yes,
    /// Do not: a reader of a long run of records (an export) reads each block once, and would
    /// only push the blocks searches come back to out of the cache.
    No,
}

/// Reads, checks and decompresses a sealed block, or takes it from the cache.
fn load_block(
    storage: &dyn Storage,
    cache: &BlockCache,
    name: &str,
    block: &BlockMeta,
    dict: &SegDict,
    keep: KeepBlock,
) -> Result<Arc<Vec<u8>>> {
    if let Some(raw) = cache.get(block.first_position) {
        return Ok(raw);
    }
    let dictionary = dict.get(storage, cache, name)?;
    let compressed = storage.get_range(name, block.offset, block.compressed_len as usize)?;
    let raw = Arc::new(
        segment::open_block_with(block, &compressed, dictionary.as_deref())
            .map_err(|e| Error::corrupted(format!("{name}@{}", e.offset), e.reason))?,
    );
    if keep == KeepBlock::Yes {
        cache.insert(block.first_position, raw.clone());
    }
    Ok(raw)
}

#[derive(Debug)]
struct Segment {
    name: String,
    first: u64,
    count: u64,
    data: SegData,
}

#[derive(Debug)]
struct AccountState {
    positions: Vec<u64>,
    tree: TileLog,
    signed_size: u64,
    checkpoint: Option<String>,
    /// The checkpoint chunk being appended to and the notes it holds.
    history: Option<(String, usize)>,
    /// Records `[0, removed)` had their bodies removed by retention (tombstones).
    removed: u64,
}

#[derive(Debug, Default)]
struct State {
    segments: Vec<Segment>,
    next_position: u64,
    accounts: BTreeMap<String, AccountState>,
}

impl State {
    fn segment_of(&self, position: u64) -> Option<&Segment> {
        let i = self.segments.partition_point(|s| s.first <= position);
        let s = self.segments.get(i.checked_sub(1)?)?;
        (position < s.first + s.count).then_some(s)
    }

    /// The position of record `index` of `account` and the segment holding it; `None` when the
    /// account has no such record.
    fn locate(&self, account: &str, index: u64) -> Result<Option<(u64, &Segment)>> {
        let Some(pos) = self
            .accounts
            .get(account)
            .and_then(|a| a.positions.get(index as usize))
            .copied()
        else {
            return Ok(None);
        };
        let seg = self
            .segment_of(pos)
            .ok_or_else(|| Error::corrupted(format!("position {pos}"), "no segment holds it"))?;
        Ok(Some((pos, seg)))
    }
}

/// Refuses a record read at `pos` that is not record `index` of `account`.
fn expect_record(r: &Record, account: &str, index: u64, pos: u64) -> Result<()> {
    if r.account != account || r.index != index {
        return Err(Error::corrupted(
            format!("{}/{}", r.account, r.index),
            format!("position {pos} should hold {account}/{index}"),
        ));
    }
    Ok(())
}

#[derive(Debug)]
struct Shared {
    storage: Arc<dyn Storage>,
    config: LedgerConfig,
    signer: NoteSigner,
    state: RwLock<State>,
    block_cache: BlockCache,
    failed: Mutex<Option<String>>,
    seal_error: Mutex<Option<String>>,
    /// Held by a retention run (one at a time).
    retention: Mutex<()>,
}

#[derive(Debug)]
struct Handle {
    shared: Arc<Shared>,
    tx: Mutex<Option<Sender<Command>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = close_handle(self);
    }
}

fn close_handle(h: &Handle) -> Result<()> {
    let tx = h.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
    // The last handle dropped inside an `append_with` callback (run by the ledger's threads): ask
    // the writer to stop but do not wait for it, which would wait for this very thread.
    let here = std::thread::current();
    if matches!(here.name(), Some(SYNCER_THREAD | WRITER_THREAD)) {
        if let Some(tx) = tx {
            let (rtx, _) = mpsc::sync_channel(1);
            let _ = tx.send(Command::Close(rtx));
        }
        return Ok(());
    }
    let mut result = Ok(());
    if let Some(tx) = tx {
        let (rtx, rrx) = mpsc::sync_channel(1);
        if tx.send(Command::Close(rtx)).is_ok() {
            result = rrx
                .recv()
                .unwrap_or_else(|_| Err(Error::Closed(Some("writer stopped".into()))));
        }
    }
    if let Some(j) = h.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
        let _ = j.join();
    }
    result
}

/// A handle to an open ledger. Cheap to clone, `Send + Sync`; the last clone to go away closes
/// the ledger (signing final checkpoints).
#[derive(Debug, Clone)]
pub struct Ledger {
    handle: Arc<Handle>,
}

fn read_lock(l: &RwLock<State>) -> RwLockReadGuard<'_, State> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn account_prefix(account: &str) -> String {
    format!("log/{account}/")
}

fn checkpoint_name(account: &str) -> String {
    format!("log/{account}/checkpoint")
}

fn unix_nanos(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_nanos()).map_or(i64::MIN, |n| -n),
    }
}

/// Encode the metadata object.
pub fn encode_meta(version: u32) -> Vec<u8> {
    let mut m = META_MAGIC.to_vec();
    m.extend_from_slice(&version.to_le_bytes());
    m.extend_from_slice(&[0; 4]);
    let crc = crc32fast::hash(&m);
    m.extend_from_slice(&crc.to_le_bytes());
    m
}

/// Decode the metadata object, returning the format version.
pub fn decode_meta(bytes: &[u8]) -> Result<u32> {
    if bytes.len() != 20 || bytes[..8] != META_MAGIC {
        return Err(Error::corrupted(
            format!("{META_NAME}@0"),
            "bad magic or length",
        ));
    }
    if crc32fast::hash(&bytes[..16]) != u32::from_le_bytes(bytes[16..20].try_into().expect("4")) {
        return Err(Error::corrupted(format!("{META_NAME}@16"), "CRC mismatch"));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4"));
    if version > FORMAT_VERSION {
        return Err(Error::UpgradeRequired {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    if version == 0 {
        return Err(Error::corrupted(format!("{META_NAME}@8"), "version 0"));
    }
    Ok(version)
}

fn seg_err(name: &str, e: segment::SegmentError) -> Error {
    if let Some(v) = e.unsupported_version {
        return Error::UpgradeRequired {
            found: u32::from(v),
            supported: u32::from(segment::SEGMENT_VERSION),
        };
    }
    Error::corrupted(format!("{name}@{}", e.offset), e.reason)
}

fn load_signer(storage: &dyn Storage, config: &LedgerConfig) -> Result<NoteSigner> {
    let name = config
        .key_name
        .clone()
        .unwrap_or_else(|| config.origin.clone());
    let key_err = |e: crate::note::NoteError| Error::Key(e.to_string());
    let signer = match &config.key {
        KeySource::Seed(seed) => NoteSigner::from_seed(&name, *seed).map_err(key_err)?,
        KeySource::Storage => match storage.get(KEY_NAME)? {
            Some(b) => {
                let text =
                    String::from_utf8(b).map_err(|_| Error::Key("key is not UTF-8".into()))?;
                NoteSigner::from_private_string(&text).map_err(key_err)?
            }
            None => {
                let s = NoteSigner::generate(&name).map_err(key_err)?;
                storage.put(KEY_NAME, format!("{}\n", s.to_private_string()).as_bytes())?;
                s
            }
        },
        KeySource::File(path) => match std::fs::read_to_string(path) {
            Ok(text) => NoteSigner::from_private_string(&text).map_err(key_err)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let s = NoteSigner::generate(&name).map_err(key_err)?;
                write_key_file(path, &s.to_private_string())?;
                s
            }
            Err(e) => return Err(Error::Key(format!("{}: {e}", path.display()))),
        },
    };
    Ok(signer)
}

fn write_key_file(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(format!("{text}\n").as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// Read every segment's index. Returns the segments in order and, per record in position order,
/// (account, index, is a tombstone). Repairs (truncates the torn tail, removes superseded plain segments) when
/// `repair` is set.
#[allow(clippy::type_complexity)]
fn load_segments(
    storage: &dyn Storage,
    repair: bool,
) -> Result<(Vec<Segment>, Vec<(Arc<str>, u64, bool)>)> {
    let mut names: BTreeMap<u64, (Option<String>, Option<String>)> = BTreeMap::new();
    for name in storage.list("seg/")? {
        match segment::parse_name(&name) {
            Some((first, SegmentKind::Plain)) => names.entry(first).or_default().0 = Some(name),
            Some((first, SegmentKind::Sealed)) => names.entry(first).or_default().1 = Some(name),
            None => {}
        }
    }
    let mut segments = Vec::new();
    let mut records: Vec<(Arc<str>, u64, bool)> = Vec::new();
    let mut interned: HashMap<String, Arc<str>> = HashMap::new();
    let mut intern = |a: &str| -> Arc<str> {
        interned
            .entry(a.to_owned())
            .or_insert_with(|| Arc::from(a))
            .clone()
    };
    let last_first = names.keys().next_back().copied();
    let mut next = 0u64;
    for (first, (plain, sealed)) in names {
        if first != next {
            let name = sealed.or(plain).unwrap_or_default();
            return Err(Error::corrupted(
                format!("{name}@0"),
                format!("segment starts at position {first}, expected {next}"),
            ));
        }
        if let Some(sname) = sealed {
            let size = storage
                .size(&sname)?
                .ok_or_else(|| Error::corrupted(&sname, "vanished"))?;
            let header = storage.get_range(&sname, 0, segment::HEADER_LEN)?;
            let header = segment::decode_header(&header).map_err(|e| seg_err(&sname, e))?;
            let fbytes = storage.get_range(
                &sname,
                size.saturating_sub(segment::FOOTER_LEN as u64),
                segment::FOOTER_LEN,
            )?;
            let footer = segment::decode_footer(&fbytes, size).map_err(|e| seg_err(&sname, e))?;
            let tables =
                storage.get_range(&sname, footer.tables_offset, footer.tables_len as usize)?;
            let idx =
                segment::decode_tables(header, &footer, &tables).map_err(|e| seg_err(&sname, e))?;
            if header.first_position != first {
                return Err(Error::corrupted(
                    format!("{sname}@12"),
                    "header position differs from name",
                ));
            }
            let accts: Vec<Arc<str>> = idx.accounts.iter().map(|a| intern(a)).collect();
            for ((ord, index), removed) in idx.records.iter().zip(&idx.removed) {
                records.push((accts[*ord as usize].clone(), *index, *removed));
            }
            let count = idx.records.len() as u64;
            segments.push(Segment {
                name: sname,
                first,
                count,
                data: SegData::Sealed {
                    blocks: idx.blocks,
                    dict: SegDict {
                        meta: idx.dictionary,
                        segment_first: first,
                    },
                },
            });
            next = first + count;
            if let Some(p) = plain
                && repair
            {
                // Sealing finished but the plain original was not yet removed.
                storage.delete(&p)?;
            }
            continue;
        }
        let pname = plain.expect("plain or sealed");
        let bytes = storage.get(&pname)?.unwrap_or_default();
        let is_last = Some(first) == last_first;
        let header = segment::decode_header(&bytes);
        let needs_upgrade = matches!(&header, Err(e) if e.unsupported_version.is_some());
        let header_torn = !needs_upgrade
            && (bytes.len() < segment::HEADER_LEN
                || (header.is_err()
                    && frame::decode_frame(&bytes[segment::HEADER_LEN..]).is_err()));
        if header_torn && is_last {
            // Created but its header never became durable (and no record follows it): start it
            // afresh.
            if repair {
                storage.delete(&pname)?;
            }
            continue;
        }
        let scan = segment::scan_plain(&bytes).map_err(|e| seg_err(&pname, e))?;
        if scan.header.first_position != first {
            return Err(Error::corrupted(
                format!("{pname}@12"),
                "header position differs from name",
            ));
        }
        if let Some(tail) = &scan.tail {
            if !is_last {
                return Err(seg_err(&pname, tail.clone()));
            }
            if repair {
                storage.truncate(&pname, scan.valid_len)?;
                storage.sync(&pname)?;
            }
        }
        let mut offsets = Vec::with_capacity(scan.records.len());
        for (off, r) in &scan.records {
            offsets.push(*off);
            records.push((intern(r.account), r.index, false));
        }
        let count = offsets.len() as u64;
        segments.push(Segment {
            name: pname,
            first,
            count,
            data: SegData::Plain {
                offsets,
                len: scan.valid_len,
            },
        });
        next = first + count;
    }
    Ok((segments, records))
}

/// Reads the record at `position` of `seg`. The flag says whether it is a tombstone (then the
/// record's bytes are the tombstone's data, [`frame::tombstone_data`]).
fn read_from(
    storage: &dyn Storage,
    cache: &BlockCache,
    seg: &Segment,
    position: u64,
) -> Result<(Record, bool)> {
    let i = position - seg.first;
    let here = |off: u64| format!("{}@{off}", seg.name);
    match &seg.data {
        SegData::Plain { offsets, len } => {
            let off = offsets[i as usize];
            let end = offsets.get(i as usize + 1).copied().unwrap_or(*len);
            let bytes = storage.get_range(&seg.name, off, (end - off) as usize)?;
            let (r, _) = frame::decode_frame(&bytes)
                .map_err(|e| Error::corrupted(here(off), e.to_string()))?;
            if r.position != position {
                return Err(Error::corrupted(here(off), "record has the wrong position"));
            }
            Ok((
                Record {
                    account: r.account.to_owned(),
                    index: r.index,
                    position,
                    received_at_unix_nanos: r.received_at,
                    bytes: r.data.to_vec(),
                },
                r.removed,
            ))
        }
        SegData::Sealed { blocks, dict } => {
            let b = blocks.partition_point(|b| b.first_position <= position) - 1;
            let block = &blocks[b];
            let raw = load_block(storage, cache, &seg.name, block, dict, KeepBlock::Yes)?;
            // The frames before the record are skipped by their lengths: the block's CRC was
            // checked when it was opened, and the record's own frame is checked below.
            let mut off = 0usize;
            for _ in block.first_position..position {
                off += frame::stored_frame_len(&raw[off..])
                    .map_err(|e| Error::corrupted(here(block.offset), e.to_string()))?;
            }
            let (r, _) = frame::decode_frame(&raw[off..])
                .map_err(|e| Error::corrupted(here(block.offset), e.to_string()))?;
            if r.position != position {
                return Err(Error::corrupted(
                    here(block.offset),
                    "record has the wrong position",
                ));
            }
            Ok((
                Record {
                    account: r.account.to_owned(),
                    index: r.index,
                    position,
                    received_at_unix_nanos: r.received_at,
                    bytes: r.data.to_vec(),
                },
                r.removed,
            ))
        }
    }
}

/// A decompressed sealed block with the offset of each of its frames, for [`Ledger::read_many`].
struct OpenBlock {
    name: String,
    first: u64,
    raw: Arc<Vec<u8>>,
    offsets: Vec<usize>,
}

impl OpenBlock {
    fn open(
        storage: &dyn Storage,
        cache: &BlockCache,
        name: &str,
        block: &segment::BlockMeta,
        dict: &SegDict,
    ) -> Result<Self> {
        let here = |off: u64| format!("{name}@{off}");
        let raw = load_block(storage, cache, name, block, dict, KeepBlock::No)?;
        // The block's CRC was checked when it was opened; each record's own frame is checked
        // when it is read.
        let mut offsets = Vec::with_capacity(block.record_count as usize);
        let mut off = 0usize;
        while off < raw.len() && offsets.len() < block.record_count as usize {
            offsets.push(off);
            off += frame::stored_frame_len(&raw[off..])
                .map_err(|e| Error::corrupted(here(block.offset), e.to_string()))?;
        }
        Ok(OpenBlock {
            name: name.to_string(),
            first: block.first_position,
            raw,
            offsets,
        })
    }
}

impl Ledger {
    /// Open (creating if empty) the ledger in a local directory.
    pub fn open_dir(path: impl AsRef<Path>, config: LedgerConfig) -> Result<Self> {
        Self::open(Arc::new(LocalDir::open(path.as_ref())?), config)
    }

    /// Open (creating if empty) the ledger in `storage`, recovering from any crash: the torn
    /// tail of the active segment is cut off, and each account's tree is reloaded from its last
    /// checkpoint and extended with the records written after it.
    pub fn open(storage: Arc<dyn Storage>, config: LedgerConfig) -> Result<Self> {
        if config.origin.is_empty() || config.origin.contains(char::is_whitespace) {
            return Err(Error::Invalid(
                "origin must be non-empty without spaces".into(),
            ));
        }
        match storage.get(META_NAME)? {
            Some(m) => {
                decode_meta(&m)?;
            }
            None => {
                if !storage.list("seg/")?.is_empty() {
                    return Err(Error::corrupted(
                        META_NAME,
                        "metadata missing but segments exist",
                    ));
                }
                storage.put(META_NAME, &encode_meta(FORMAT_VERSION))?;
            }
        }
        let signer = load_signer(storage.as_ref(), &config)?;
        let verifier = signer.verifier();
        let pub_text = format!("{}\n", verifier.to_key_string());
        if storage.get(PUBKEY_NAME)?.as_deref() != Some(pub_text.as_bytes()) {
            storage.put(PUBKEY_NAME, pub_text.as_bytes())?;
        }

        let (mut segments, records) = load_segments(storage.as_ref(), true)?;
        let next_position = records.len() as u64;
        // Per-account positions, checking indexes are dense.
        let mut positions: BTreeMap<Arc<str>, Vec<u64>> = BTreeMap::new();
        // Per account: one past the last tombstone (retention removes prefixes).
        let mut removed: HashMap<Arc<str>, u64> = HashMap::new();
        for (pos, (acct, index, gone)) in records.iter().enumerate() {
            let v = positions.entry(acct.clone()).or_default();
            if *gone {
                removed.insert(acct.clone(), index + 1);
            }
            if *index != v.len() as u64 {
                return Err(Error::corrupted(
                    format!("{acct}/{index}"),
                    format!(
                        "record at position {pos} has index {index}, expected {}",
                        v.len()
                    ),
                ));
            }
            v.push(pos as u64);
        }
        drop(records);
        // Accounts that have checkpoints but no records left would mean lost records.
        for acct in storage.list_children("log/")? {
            if !positions.contains_key(acct.as_str())
                && frame::valid_account(&acct)
                && storage.size(&checkpoint_name(&acct))?.is_some()
            {
                positions.insert(Arc::from(acct.as_str()), Vec::new());
            }
        }

        let mut state = State {
            segments: Vec::new(),
            next_position,
            accounts: BTreeMap::new(),
        };
        for (acct, pos) in positions {
            let mut account_state = recover_account(
                storage.as_ref(),
                &storage,
                &verifier,
                &config,
                &acct,
                pos,
                &segments,
            )?;
            account_state.removed = removed.get(&acct).copied().unwrap_or(0);
            state.accounts.insert(acct.to_string(), account_state);
        }

        // Make sure the last segment is an appendable plain segment.
        let need_new = !matches!(
            segments.last(),
            Some(Segment {
                data: SegData::Plain { .. },
                ..
            })
        );
        if need_new {
            let name = segment::plain_name(next_position);
            storage.append(
                &name,
                &segment::encode_header(SegmentKind::Plain, next_position),
            )?;
            storage.sync(&name)?;
            segments.push(Segment {
                name,
                first: next_position,
                count: 0,
                data: SegData::Plain {
                    offsets: Vec::new(),
                    len: segment::HEADER_LEN as u64,
                },
            });
        }
        // Plain segments other than the last were rotated but not sealed yet.
        let to_seal: Vec<String> = segments[..segments.len() - 1]
            .iter()
            .filter(|s| matches!(s.data, SegData::Plain { .. }))
            .map(|s| s.name.clone())
            .collect();
        state.segments = segments;

        let shared = Arc::new(Shared {
            storage,
            block_cache: BlockCache::new(config.block_cache_bytes),
            config,
            signer,
            state: RwLock::new(state),
            failed: Mutex::new(None),
            seal_error: Mutex::new(None),
            retention: Mutex::new(()),
        });
        for name in &to_seal {
            seal_segment(&shared, name)?;
        }
        let (tx, rx) = mpsc::channel();
        let writer_shared = shared.clone();
        let writer = std::thread::Builder::new()
            .name(WRITER_THREAD.into())
            .spawn(move || Writer::new(writer_shared).run(rx))
            .map_err(Error::Io)?;
        Ok(Self {
            handle: Arc::new(Handle {
                shared,
                tx: Mutex::new(Some(tx)),
                writer: Mutex::new(Some(writer)),
            }),
        })
    }

    fn shared(&self) -> &Shared {
        &self.handle.shared
    }

    fn send(&self, cmd: Command) -> std::result::Result<(), Command> {
        let tx = self.handle.tx.lock().unwrap_or_else(|e| e.into_inner());
        match tx.as_ref() {
            Some(tx) => tx.send(cmd).map_err(|e| e.0),
            None => Err(cmd),
        }
    }

    fn closed_error(&self) -> Error {
        Error::Closed(
            self.shared()
                .failed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }

    /// The durability mode in force.
    pub fn durability(&self) -> Durability {
        self.shared().config.durability
    }

    /// Append a batch; `done` is called with one [`Appended`] per record, in order, once the
    /// batch is durable, or with the error that prevented it. Use it to bridge to async code
    /// (e.g. complete a oneshot channel). `done` runs on one of the ledger's threads (or the
    /// caller's, for refused input) and must not block.
    pub fn append_with(
        &self,
        batch: Vec<(String, Vec<u8>)>,
        done: impl FnOnce(Result<Vec<Appended>>) + Send + 'static,
    ) {
        self.append_with_time(batch, SystemTime::now(), done)
    }

    /// [`Ledger::append_with`], recording `received_at` (e.g. a `time::OffsetDateTime`, which
    /// converts into `SystemTime`) as every record's receive time.
    pub fn append_with_time(
        &self,
        batch: Vec<(String, Vec<u8>)>,
        received_at: impl Into<SystemTime>,
        done: impl FnOnce(Result<Vec<Appended>>) + Send + 'static,
    ) {
        let received_at = unix_nanos(received_at.into());
        let mut records = Vec::with_capacity(batch.len());
        for (account, bytes) in batch {
            if !frame::valid_account(&account) {
                return done(Err(Error::Invalid(format!(
                    "account {account:?}: use 1-128 characters of A-Z a-z 0-9 . _ - (not starting with .)"
                ))));
            }
            if bytes.len() > MAX_DATA_LEN {
                return done(Err(Error::Invalid(format!(
                    "record of {} bytes exceeds the limit of {MAX_DATA_LEN}",
                    bytes.len()
                ))));
            }
            let leaf = merkle::leaf_hash(&bytes);
            records.push((account, bytes, leaf, received_at));
        }
        if records.is_empty() {
            return done(Ok(Vec::new()));
        }
        if let Err(Command::Append { reply, .. }) = self.send(Command::Append {
            records,
            reply: Box::new(done),
        }) {
            reply(Err(self.closed_error()));
        }
    }

    /// Append a batch and wait until it is durable.
    pub fn append(&self, batch: Vec<(String, Vec<u8>)>) -> Result<Vec<Appended>> {
        self.append_at(batch, SystemTime::now())
    }

    /// [`Ledger::append`] with an explicit receive time.
    pub fn append_at(
        &self,
        batch: Vec<(String, Vec<u8>)>,
        received_at: impl Into<SystemTime>,
    ) -> Result<Vec<Appended>> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.append_with_time(batch, received_at, move |r| {
            let _ = tx.send(r);
        });
        rx.recv().unwrap_or_else(|_| Err(self.closed_error()))
    }

    fn request<T>(&self, make: impl FnOnce(mpsc::SyncSender<Result<T>>) -> Command) -> Result<T> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(make(tx)).map_err(|_| self.closed_error())?;
        rx.recv().unwrap_or_else(|_| Err(self.closed_error()))
    }

    /// Sign a checkpoint for every account whose tree grew since its last checkpoint. Returns
    /// (account, size) for each checkpoint signed. The writer also does this on its own every
    /// [`LedgerConfig::checkpoint_interval`] and at close.
    pub fn sign_checkpoints_if_grown(&self) -> Result<Vec<(String, u64)>> {
        self.request(Command::Sign)
    }

    /// Close the active segment now (it is sealed in the background) and start a new one.
    pub fn rotate(&self) -> Result<()> {
        self.request(Command::Rotate)
    }

    /// Sign final checkpoints, finish sealing and stop the writer. Other clones get
    /// [`Error::Closed`] afterwards.
    pub fn close(&self) -> Result<()> {
        close_handle(&self.handle)
    }

    /// The bytes of the record at `index` of `account`'s log.
    pub fn read(&self, account: &str, index: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.read_record(account, index)?.map(|r| r.bytes))
    }

    fn read_slot(&self, account: &str, index: u64) -> Result<Option<Slot>> {
        let state = read_lock(&self.shared().state);
        let Some((pos, seg)) = state.locate(account, index)? else {
            return Ok(None);
        };
        let (r, removed) = read_from(
            self.shared().storage.as_ref(),
            &self.shared().block_cache,
            seg,
            pos,
        )?;
        expect_record(&r, account, index, pos)?;
        Ok(Some(Slot { record: r, removed }))
    }

    /// The record at `index` of `account`'s log, with its position and receive time. `None`
    /// when there is no such record, or when retention removed its bytes (see
    /// [`Ledger::is_removed`]).
    pub fn read_record(&self, account: &str, index: u64) -> Result<Option<Record>> {
        Ok(self
            .read_slot(account, index)?
            .filter(|s| !s.removed)
            .map(|s| s.record))
    }

    /// The records at `wanted` (account, index) pairs, in order: each like
    /// [`Ledger::read_record`] (`None` when there is no such record or retention removed its
    /// bytes). For reading many records that sit close together (an export): a sealed block is
    /// opened once for a run of reads from it and its frames located once, instead of looking it
    /// up in the block cache and stepping over the frames before each record. A block found in
    /// the cache is used; a block opened here is not kept in it (it would only push out the
    /// blocks that searches come back to).
    pub fn read_many(&self, wanted: &[(&str, u64)]) -> Result<Vec<Option<Record>>> {
        let shared = self.shared();
        let mut out = Vec::with_capacity(wanted.len());
        let mut open: Option<OpenBlock> = None;
        for &(account, index) in wanted {
            let state = read_lock(&shared.state);
            let Some((pos, seg)) = state.locate(account, index)? else {
                out.push(None);
                continue;
            };
            let (r, removed) = match &seg.data {
                SegData::Sealed { blocks, dict } => {
                    let block = &blocks[blocks.partition_point(|b| b.first_position <= pos) - 1];
                    let here = || format!("{}@{}", seg.name, block.offset);
                    let current = open
                        .as_ref()
                        .is_some_and(|o| o.name == seg.name && o.first == block.first_position);
                    if !current {
                        open = Some(OpenBlock::open(
                            shared.storage.as_ref(),
                            &shared.block_cache,
                            &seg.name,
                            block,
                            dict,
                        )?);
                    }
                    let o = open.as_ref().expect("opened above");
                    let off = o
                        .offsets
                        .get((pos - block.first_position) as usize)
                        .copied()
                        .ok_or_else(|| Error::corrupted(here(), "record past the block's end"))?;
                    let (r, _) = frame::decode_frame(&o.raw[off..])
                        .map_err(|e| Error::corrupted(here(), e.to_string()))?;
                    if r.position != pos {
                        return Err(Error::corrupted(here(), "record has the wrong position"));
                    }
                    (
                        Record {
                            account: r.account.to_owned(),
                            index: r.index,
                            position: pos,
                            received_at_unix_nanos: r.received_at,
                            bytes: r.data.to_vec(),
                        },
                        r.removed,
                    )
                }
                SegData::Plain { .. } => {
                    read_from(shared.storage.as_ref(), &shared.block_cache, seg, pos)?
                }
            };
            expect_record(&r, account, index, pos)?;
            out.push((!removed).then_some(r));
        }
        Ok(out)
    }

    /// One past the last record of `account` whose body retention removed: records `[0, n)` are
    /// removed, except retention records, which are never removed (they state the removals).
    pub fn removed(&self, account: &str) -> u64 {
        read_lock(&self.shared().state)
            .accounts
            .get(account)
            .map_or(0, |a| a.removed)
    }

    /// Whether retention removed the body of record `index` of `account` (its position, index,
    /// receive time and leaf hash stay).
    pub fn is_removed(&self, account: &str, index: u64) -> Result<bool> {
        Ok(self.read_slot(account, index)?.is_some_and(|s| s.removed))
    }

    /// How many of `account`'s first records lie in sealed segments (only those can have their
    /// bodies removed; [`Ledger::rotate`] closes the active segment so that it gets sealed).
    pub fn sealed_len(&self, account: &str) -> u64 {
        let state = read_lock(&self.shared().state);
        let first_plain = state
            .segments
            .iter()
            .find(|s| matches!(s.data, SegData::Plain { .. }))
            .map_or(u64::MAX, |s| s.first);
        state.accounts.get(account).map_or(0, |a| {
            a.positions.partition_point(|p| *p < first_plain) as u64
        })
    }

    /// The latest signed tree size of `account` (0 if none).
    pub fn signed_size(&self, account: &str) -> u64 {
        read_lock(&self.shared().state)
            .accounts
            .get(account)
            .map_or(0, |a| a.signed_size)
    }

    /// Retention: removes the bodies of `account`'s records `[removed, up_to)` (FORMAT.md §4.1),
    /// except retention records ([`crate::retention`]), which are kept.
    /// `by` is the index of the retention record, already appended to the same log, that states
    /// the removal; it must lie at or after `up_to` and is first covered by a signed checkpoint
    /// (signed here if needed). Each sealed segment holding such records is rewritten whole into
    /// a new sealed segment in which those frames are tombstones keeping position, index, receive
    /// time and leaf hash; the new file replaces the old one atomically (`put`), so a crash at any
    /// point leaves either the old or the new segment. Records not yet in a sealed segment are
    /// refused ([`Ledger::sealed_len`]). A body whose hash does not match its leaf is never
    /// removed (that would hide tampering): the run stops with [`Error::Corrupted`].
    pub fn remove_bodies(&self, account: &str, up_to: u64, by: u64) -> Result<Removal> {
        let shared = self.shared();
        let _one_at_a_time = shared.retention.lock().unwrap_or_else(|e| e.into_inner());
        if by >= self.signed_size(account) {
            self.sign_checkpoints_if_grown()?;
        }
        let (from, positions, leaves) = {
            let state = read_lock(&shared.state);
            let a = state
                .accounts
                .get(account)
                .ok_or_else(|| Error::NotFound(format!("account {account}")))?;
            if up_to > by || by >= a.positions.len() as u64 {
                return Err(Error::Invalid(format!(
                    "the retention record {account}/{by} must exist and follow the removed range (up to {up_to})"
                )));
            }
            if by >= a.signed_size {
                return Err(Error::Invalid(format!(
                    "the retention record {account}/{by} is not covered by a signed checkpoint"
                )));
            }
            let from = a.removed;
            if up_to <= from {
                return Ok(Removal {
                    from,
                    to: from,
                    ..Removal::default()
                });
            }
            let positions = a.positions[from as usize..up_to as usize].to_vec();
            for (k, p) in positions.iter().enumerate() {
                if !matches!(
                    state.segment_of(*p).map(|s| &s.data),
                    Some(SegData::Sealed { .. })
                ) {
                    return Err(Error::Invalid(format!(
                        "record {account}/{} is not in a sealed segment yet",
                        from + k as u64
                    )));
                }
            }
            let mut leaves = Vec::with_capacity(positions.len());
            for i in from..up_to {
                leaves.push(a.tree.leaf(i)?);
            }
            (from, positions, leaves)
        };
        let mut removal = Removal {
            from,
            to: up_to,
            ..Removal::default()
        };
        // Segment by segment, in position order.
        let mut k = 0usize;
        let mut last_removed = None;
        while k < positions.len() {
            let (name, first, end) = {
                let state = read_lock(&shared.state);
                let seg = state.segment_of(positions[k]).ok_or_else(|| {
                    Error::corrupted(format!("position {}", positions[k]), "no segment holds it")
                })?;
                (seg.name.clone(), seg.first, seg.first + seg.count)
            };
            let n = positions[k..].partition_point(|p| *p < end);
            let targets: HashMap<u64, usize> = (k..k + n).map(|j| (positions[j], j)).collect();
            let (bytes, last) = rewrite_segment(
                shared,
                &name,
                first,
                account,
                by,
                &targets,
                &leaves,
                from,
                &mut removal.kept,
            )?;
            removal.bytes += bytes;
            last_removed = last_removed.max(last);
            removal.segments += 1;
            k += n;
        }
        let mut state = shared.state.write().unwrap_or_else(|e| e.into_inner());
        if let Some(a) = state.accounts.get_mut(account)
            && let Some(last) = last_removed
        {
            a.removed = a.removed.max(last + 1);
        }
        Ok(removal)
    }

    /// The record at global `position` (`None` past the end, or when retention removed it).
    pub fn read_position(&self, position: u64) -> Result<Option<Record>> {
        let state = read_lock(&self.shared().state);
        let Some(seg) = state.segment_of(position) else {
            return Ok(None);
        };
        let (r, removed) = read_from(
            self.shared().storage.as_ref(),
            &self.shared().block_cache,
            seg,
            position,
        )?;
        Ok((!removed).then_some(r))
    }

    /// Iterate `account`'s records from index `from` (as of each step; new records appear). Records
    /// whose bodies retention removed are skipped.
    pub fn iter_account(&self, account: &str, from: u64) -> AccountIter {
        AccountIter {
            ledger: self.clone(),
            account: account.to_owned(),
            next: from,
        }
    }

    /// Accounts with a log.
    pub fn accounts(&self) -> Vec<String> {
        read_lock(&self.shared().state)
            .accounts
            .keys()
            .cloned()
            .collect()
    }

    /// Number of records (= next global position).
    pub fn len(&self) -> u64 {
        read_lock(&self.shared().state).next_position
    }

    /// Whether no record was ever appended.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counters.
    pub fn stats(&self) -> LedgerStats {
        let s = read_lock(&self.shared().state);
        LedgerStats {
            records: s.next_position,
            accounts: s.accounts.len() as u64,
            segments: s.segments.len() as u64,
            sealed_segments: s
                .segments
                .iter()
                .filter(|s| matches!(s.data, SegData::Sealed { .. }))
                .count() as u64,
        }
    }

    /// The last background sealing failure, if any (the segment stays plain and readable and is
    /// sealed again at the next open).
    pub fn seal_error(&self) -> Option<String> {
        self.shared()
            .seal_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The current tree of `account`.
    pub fn tree_head(&self, account: &str) -> Option<TreeHead> {
        read_lock(&self.shared().state)
            .accounts
            .get(account)
            .map(|a| TreeHead {
                size: a.tree.size(),
                root: a.tree.root(),
            })
    }

    /// The root of `account`'s tree at a past (or the current) `size`.
    pub fn root_at(&self, account: &str, size: u64) -> Result<Hash> {
        self.with_tree(account, |t| t.root_at(size))
    }

    fn with_tree<T>(&self, account: &str, f: impl FnOnce(&TileLog) -> Result<T>) -> Result<T> {
        let state = read_lock(&self.shared().state);
        let a = state
            .accounts
            .get(account)
            .ok_or_else(|| Error::NotFound(format!("account {account}")))?;
        f(&a.tree)
    }

    /// The latest signed checkpoint (a signed note) of `account`.
    pub fn latest_checkpoint(&self, account: &str) -> Option<String> {
        read_lock(&self.shared().state)
            .accounts
            .get(account)
            .and_then(|a| a.checkpoint.clone())
    }

    /// Inclusion proof of `account`'s leaf `index` in its tree of `size` leaves.
    pub fn inclusion_proof(&self, account: &str, index: u64, size: u64) -> Result<Vec<Hash>> {
        self.with_tree(account, |t| t.inclusion_proof(index, size))
    }

    /// Evidence for one record: the latest signed checkpoint (signing one first if the record is
    /// newer than it), that checkpoint's tree size, and the inclusion proof of `index` in it —
    /// what an outside party needs, with the record's bytes and the verifier key, to check it
    /// offline.
    pub fn checkpointed_inclusion_proof(
        &self,
        account: &str,
        index: u64,
    ) -> Result<(String, u64, Vec<Hash>)> {
        let signed = |l: &Self| {
            read_lock(&l.shared().state)
                .accounts
                .get(account)
                .and_then(|a| a.checkpoint.clone().map(|c| (c, a.signed_size)))
        };
        let mut cp = signed(self);
        if cp.as_ref().is_none_or(|(_, size)| index >= *size) {
            self.sign_checkpoints_if_grown()?;
            cp = signed(self);
        }
        let (note, size) = cp.ok_or_else(|| Error::NotFound(format!("account {account}")))?;
        if index >= size {
            return Err(Error::NotFound(format!("{account}/{index}")));
        }
        let proof = self.inclusion_proof(account, index, size)?;
        Ok((note, size, proof))
    }

    /// Consistency proof of `account`'s tree between sizes `m <= n`.
    pub fn consistency_proof(&self, account: &str, m: u64, n: u64) -> Result<Vec<Hash>> {
        self.with_tree(account, |t| t.consistency_proof(m, n))
    }

    /// A tile of `account`'s tree by its C2SP path (`tile/<L>/<N>[.p/<W>]`), or `None` if no such
    /// tile exists (yet).
    pub fn tile(&self, account: &str, path: &str) -> Result<Option<Vec<u8>>> {
        match self.with_tree(account, |t| t.tile_bytes(path)) {
            Err(Error::NotFound(_)) => Ok(None),
            r => r,
        }
    }

    /// The note verifier key (`name+hexhash+base64(0x01‖pubkey)`).
    pub fn verifier_key(&self) -> String {
        self.shared().signer.verifier().to_key_string()
    }

    /// Signs an arbitrary note body with the log key (used for the signed trailer of evidence
    /// bundles). The body must end with a newline and must not parse as a checkpoint: a
    /// second line that is a tree size is refused, so a note signed here can never pass for a
    /// checkpoint of any log.
    pub fn sign_note(&self, body: &str) -> Result<String> {
        if body
            .split('\n')
            .nth(1)
            .is_some_and(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(Error::Invalid(
                "a note whose second line is a number could pass for a checkpoint".into(),
            ));
        }
        self.shared()
            .signer
            .sign(body)
            .map_err(|e| Error::Invalid(format!("signing a note: {e}")))
    }

    /// The checkpoint origin of `account`'s log.
    pub fn origin(&self, account: &str) -> String {
        format!("{}/{account}", self.shared().config.origin)
    }

    /// Signed checkpoints of `account` that are kept, oldest first: (size, note).
    pub fn checkpoint_history(&self, account: &str) -> Result<Vec<(u64, String)>> {
        if !frame::valid_account(account) {
            return Ok(Vec::new());
        }
        let storage = &self.shared().storage;
        let mut out = Vec::new();
        for name in storage.list(&history::chunk_prefix(account))? {
            let bytes = storage.get(&name)?.unwrap_or_default();
            for (_, note) in history::parse(&bytes).notes {
                let size = note
                    .split('\n')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                out.push((size, note));
            }
        }
        Ok(out)
    }
}

/// Iterator over one account's records; see [`Ledger::iter_account`].
#[derive(Debug)]
pub struct AccountIter {
    ledger: Ledger,
    account: String,
    next: u64,
}

impl Iterator for AccountIter {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let index = self.next;
            match self.ledger.read_slot(&self.account, index) {
                Ok(Some(s)) if s.removed => self.next += 1,
                other => break self.step(other),
            }
        }
    }
}

impl AccountIter {
    fn step(&mut self, read: Result<Option<Slot>>) -> Option<Result<Record>> {
        match read {
            Ok(Some(s)) => {
                self.next += 1;
                Some(Ok(s.record))
            }
            Ok(None) => None,
            Err(e) => {
                self.next = u64::MAX;
                Some(Err(e))
            }
        }
    }
}

fn recover_account(
    storage: &dyn Storage,
    storage_arc: &Arc<dyn Storage>,
    verifier: &NoteVerifier,
    config: &LedgerConfig,
    account: &str,
    positions: Vec<u64>,
    segments: &[Segment],
) -> Result<AccountState> {
    let prefix = account_prefix(account);
    let cp_name = checkpoint_name(account);
    let origin = format!("{}/{account}", config.origin);
    let mut checkpoint = None;
    let mut cp_size = 0;
    let mut cp_root = None;
    if let Some(bytes) = storage.get(&cp_name)? {
        let text = String::from_utf8(bytes).map_err(|_| Error::corrupted(&cp_name, "not UTF-8"))?;
        let body = verifier
            .open(&text)
            .map_err(|e| Error::corrupted(&cp_name, e.to_string()))?;
        let cp = Checkpoint::parse(body).map_err(|e| Error::corrupted(&cp_name, e.to_string()))?;
        if cp.origin != origin {
            return Err(Error::corrupted(
                &cp_name,
                format!("origin {:?} is not {origin:?}", cp.origin),
            ));
        }
        cp_size = cp.size;
        cp_root = Some(cp.root);
        checkpoint = Some(text);
    }
    if cp_size > positions.len() as u64 {
        return Err(Error::corrupted(
            format!("{account}/{}", positions.len()),
            format!(
                "signed checkpoint covers {cp_size} records but the log holds {}",
                positions.len()
            ),
        ));
    }
    let mut tree = TileLog::load(storage_arc.clone(), prefix, cp_size, true)?;
    if let Some(root) = cp_root
        && tree.root() != root
    {
        return Err(Error::corrupted(
            format!("{account}/{cp_size}"),
            "tree hashes do not match the signed checkpoint",
        ));
    }
    // Records are read in order: a few blocks cover the current one.
    let cache = BlockCache::new(1024 * 1024);
    let mut seg_i = 0usize;
    for (index, &pos) in positions.iter().enumerate().skip(cp_size as usize) {
        while segments[seg_i].first + segments[seg_i].count <= pos {
            seg_i += 1;
        }
        let (r, removed) = read_from(storage, &cache, &segments[seg_i], pos)?;
        if r.account != account || r.index != index as u64 {
            return Err(Error::corrupted(
                format!("{account}/{index}"),
                "record mismatch",
            ));
        }
        let leaf = if removed {
            r.bytes[..32].try_into().expect("tombstone data")
        } else {
            merkle::leaf_hash(&r.bytes)
        };
        tree.push(leaf);
    }
    // The last checkpoint chunk may end in a torn frame: cut it before appending again.
    let mut history = None;
    if let Some(last) = storage.list(&history::chunk_prefix(account))?.pop() {
        let bytes = storage.get(&last)?.unwrap_or_default();
        let chunk = history::parse(&bytes);
        if chunk.tail.is_some() {
            storage.truncate(&last, chunk.valid_len)?;
            storage.sync(&last)?;
        }
        history = Some((last, chunk.notes.len()));
    }
    Ok(AccountState {
        positions,
        tree,
        signed_size: cp_size,
        checkpoint,
        history,
        removed: 0,
    })
}

/// Rewrites sealed segment `name` (first position `first`) with the records at the positions in
/// `targets` (position → offset into `leaves`, whose first entry is index `from`) replaced by
/// tombstones, and swaps it in. Returns the data bytes removed and the last index that is a
/// tombstone now.
#[allow(clippy::too_many_arguments)]
fn rewrite_segment(
    shared: &Shared,
    name: &str,
    first: u64,
    account: &str,
    by: u64,
    targets: &HashMap<u64, usize>,
    leaves: &[Hash],
    from: u64,
    kept: &mut Vec<u64>,
) -> Result<(u64, Option<u64>)> {
    let storage = shared.storage.as_ref();
    let bytes = storage
        .get(name)?
        .ok_or_else(|| Error::corrupted(name, "segment vanished"))?;
    let idx = segment::parse_sealed(&bytes).map_err(|e| seg_err(name, e))?;
    let dictionary = segment::load_dictionary(&idx, &bytes).map_err(|e| seg_err(name, e))?;
    let mut raws = Vec::with_capacity(idx.blocks.len());
    for b in &idx.blocks {
        let start = b.offset as usize;
        let compressed = bytes
            .get(start..start + b.compressed_len as usize)
            .ok_or_else(|| Error::corrupted(format!("{name}@{start}"), "block beyond the end"))?;
        raws.push(
            segment::open_block_with(b, compressed, dictionary.as_ref())
                .map_err(|e| seg_err(name, e))?,
        );
    }
    let mut records = Vec::with_capacity(idx.records.len());
    for (b, raw) in idx.blocks.iter().zip(&raws) {
        records.extend(segment::block_records(b, raw).map_err(|e| seg_err(name, e))?);
    }
    let mut tombs: Vec<[u8; frame::TOMBSTONE_DATA_LEN]> = Vec::new();
    let mut which = vec![None; records.len()];
    let mut removed_bytes = 0u64;
    let mut last = None;
    for (k, r) in records.iter().enumerate() {
        let Some(&j) = targets.get(&r.position) else {
            continue;
        };
        let expected_index = from + j as u64;
        if r.account != account || r.index != expected_index {
            return Err(Error::corrupted(
                format!("{name}@position {}", r.position),
                format!(
                    "holds {}/{}, expected {account}/{expected_index}",
                    r.account, r.index
                ),
            ));
        }
        // Retention records state the removals: they are kept, so that every tombstone's
        // statement can always be read.
        if r.removed {
            last = Some(r.index);
            continue;
        }
        if crate::retention::parse_statement(r.data).is_some() {
            kept.push(r.index);
            continue;
        }
        if merkle::leaf_hash(r.data) != leaves[j] {
            return Err(Error::corrupted(
                format!("{account}/{}", r.index),
                "the stored body does not match its leaf hash; it is not removed (run verify)",
            ));
        }
        removed_bytes += r.data.len() as u64;
        last = Some(r.index);
        which[k] = Some(tombs.len());
        tombs.push(frame::tombstone_data(&leaves[j], by));
    }
    if tombs.is_empty() {
        return Ok((0, last));
    }
    let rewritten: Vec<frame::RawRecord<'_>> = records
        .iter()
        .zip(&which)
        .map(|(r, w)| match w {
            Some(t) => frame::RawRecord {
                data: &tombs[*t],
                removed: true,
                ..*r
            },
            None => *r,
        })
        .collect();
    // The rewrite is a version-3 segment with a dictionary trained afresh on the bodies that
    // remain (none when retention removed them all, as it usually does: it removes by age).
    let sealed = segment::build_sealed(first, &rewritten, shared.config.seal)?;
    let new_idx = segment::parse_sealed(&sealed).map_err(|e| seg_err(name, e))?;
    fail_point("retention-before-swap");
    {
        // Readers hold the read lock while they read a segment, so none sees the swap halfway.
        let mut state = shared.state.write().unwrap_or_else(|e| e.into_inner());
        storage.put(name, &sealed)?;
        if let Some(seg) = state.segments.iter_mut().find(|s| s.name == name) {
            seg.data = SegData::Sealed {
                blocks: new_idx.blocks,
                dict: SegDict {
                    meta: new_idx.dictionary,
                    segment_first: first,
                },
            };
        }
        // The old blocks hold the removed bodies: none may be served from memory (and the old
        // dictionary does not fit the new blocks).
        shared.block_cache.clear();
    }
    fail_point("retention-after-swap");
    Ok((removed_bytes, last))
}

/// Test hook: `TRAILKEEP_LEDGER_FAILPOINT=<name>` makes the process abort (as a kill -9 would
/// stop it) when it reaches the named point.
fn fail_point(name: &str) {
    if std::env::var_os("TRAILKEEP_LEDGER_FAILPOINT").is_some_and(|v| v == name) {
        std::process::abort();
    }
}

/// Seal a rotated plain segment: build the sealed file, publish it, remove the plain one.
fn seal_segment(shared: &Shared, name: &str) -> Result<()> {
    let storage = shared.storage.as_ref();
    let bytes = storage
        .get(name)?
        .ok_or_else(|| Error::corrupted(name, "segment to seal vanished"))?;
    let scan = segment::scan_plain(&bytes).map_err(|e| seg_err(name, e))?;
    if let Some(t) = scan.tail {
        return Err(seg_err(name, t));
    }
    let first = scan.header.first_position;
    let recs: Vec<_> = scan.records.iter().map(|(_, r)| *r).collect();
    let sealed = segment::build_sealed(first, &recs, shared.config.seal)?;
    let idx = segment::parse_sealed(&sealed).map_err(|e| seg_err(name, e))?;
    // Parsed once here, the dictionary serves every read of the segment from now on.
    let dict = segment::load_dictionary(&idx, &sealed).map_err(|e| seg_err(name, e))?;
    let sname = segment::sealed_name(first);
    storage.put(&sname, &sealed)?;
    {
        let mut state = shared.state.write().unwrap_or_else(|e| e.into_inner());
        if let Some(seg) = state.segments.iter_mut().find(|s| s.name == name) {
            seg.name = sname;
            seg.data = SegData::Sealed {
                blocks: idx.blocks,
                dict: SegDict {
                    meta: idx.dictionary,
                    segment_first: first,
                },
            };
        }
        // Under the lock, so that a retention rewrite of the segment cannot come in between and
        // find this dictionary kept for its new blocks.
        if let Some(dict) = dict {
            shared.block_cache.insert_dictionary(first, Arc::new(dict));
        }
    }
    Ok(storage.delete(name)?)
}

/// One committed-but-not-yet-acknowledged unit of work, handed from the writer to the syncer in
/// order.
enum Pending {
    /// Frames written to `segment`; to be made durable, published, then acknowledged.
    Group {
        segment: String,
        offsets: Vec<u64>,
        new_len: u64,
        next_position: u64,
        appends: Vec<Batch>,
        results: Vec<Vec<Appended>>,
    },
    /// `old` is complete: make it durable, create and publish the new active segment starting at
    /// `first`, hand `old` to sealing. The writer waits for the reply, so only the last plain
    /// segment can ever hold unsynced bytes.
    Rotate {
        old: String,
        first: u64,
        reply: mpsc::SyncSender<Result<()>>,
    },
    /// Sign checkpoints of grown trees (after everything before it is published).
    Sign(Option<SignReply>),
    /// Final signing and shutdown.
    Close,
}

/// The writer thread: takes appends off the channel in groups, assigns positions and indexes,
/// encodes and writes the frames, and passes each group on to the syncer. It never waits for an
/// fsync, so the next group is written while the previous one is being synced.
struct Writer {
    shared: Arc<Shared>,
    next_index: HashMap<String, u64>,
    next_position: u64,
    active: String,
    active_len: u64,
    last_sign: Instant,
    buf: Vec<u8>,
}

fn is_failed(shared: &Shared) -> Option<String> {
    shared
        .failed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

fn set_failed(shared: &Shared, e: &Error) {
    let mut f = shared.failed.lock().unwrap_or_else(|e| e.into_inner());
    f.get_or_insert_with(|| e.to_string());
}

fn io_copy(e: &std::io::Error) -> Error {
    Error::Io(std::io::Error::new(e.kind(), e.to_string()))
}

impl Writer {
    fn new(shared: Arc<Shared>) -> Self {
        let (next_index, next_position, active, active_len) = {
            let s = read_lock(&shared.state);
            let last = s.segments.last().expect("an active segment");
            let len = match &last.data {
                SegData::Plain { len, .. } => *len,
                SegData::Sealed { .. } => 0,
            };
            (
                s.accounts
                    .iter()
                    .map(|(a, st)| (a.clone(), st.positions.len() as u64))
                    .collect(),
                s.next_position,
                last.name.clone(),
                len,
            )
        };
        Self {
            shared,
            next_index,
            next_position,
            active,
            active_len,
            last_sign: Instant::now(),
            buf: Vec::new(),
        }
    }

    fn run(mut self, rx: Receiver<Command>) {
        let (ptx, prx) = mpsc::sync_channel::<Pending>(256);
        let syncer = Syncer::new(self.shared.clone(), self.active.clone());
        let syncer = std::thread::Builder::new()
            .name(SYNCER_THREAD.into())
            .spawn(move || syncer.run(prx))
            .expect("spawn syncer");
        let mut close_reply = None;
        'outer: loop {
            let first = match self.shared.config.checkpoint_interval {
                Some(iv) => {
                    let wait = iv.saturating_sub(self.last_sign.elapsed());
                    match rx.recv_timeout(wait) {
                        Ok(c) => Some(c),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                None => match rx.recv() {
                    Ok(c) => Some(c),
                    Err(_) => break,
                },
            };
            let mut appends = Vec::new();
            let mut others = Vec::new();
            let mut bytes = 0usize;
            let take = |c: Command, appends: &mut Vec<_>, others: &mut Vec<_>| match c {
                Command::Append { records, reply } => {
                    let n = records.iter().map(|r| r.1.len()).sum::<usize>();
                    appends.push((records, reply));
                    n
                }
                other => {
                    others.push(other);
                    0
                }
            };
            if let Some(c) = first {
                bytes += take(c, &mut appends, &mut others);
                // Group commit: everything that queued up meanwhile.
                while bytes < self.shared.config.max_group_bytes && others.is_empty() {
                    match rx.try_recv() {
                        Ok(c) => bytes += take(c, &mut appends, &mut others),
                        Err(_) => break,
                    }
                }
            }
            if let Some(f) = is_failed(&self.shared) {
                for (_, reply) in appends {
                    reply(Err(Error::Closed(Some(f.clone()))));
                }
                break 'outer;
            }
            if !appends.is_empty() {
                match self.write_group(appends) {
                    Ok(Some(p)) => {
                        if ptx.send(p).is_err() {
                            break 'outer;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        set_failed(&self.shared, &e);
                        break 'outer;
                    }
                }
            }
            for c in others {
                match c {
                    Command::Append { .. } => unreachable!("appends are grouped"),
                    Command::Sign(reply) => {
                        self.last_sign = Instant::now();
                        let _ = ptx.send(Pending::Sign(Some(reply)));
                    }
                    Command::Rotate(reply) => {
                        let r = self.rotate(&ptx);
                        let fatal = matches!(&r, Err(e) if !e.is_storage_full());
                        let _ = reply.send(r);
                        if fatal {
                            break 'outer;
                        }
                    }
                    Command::Close(reply) => {
                        close_reply = Some(reply);
                        break 'outer;
                    }
                }
            }
            if let Some(iv) = self.shared.config.checkpoint_interval
                && self.last_sign.elapsed() >= iv
            {
                self.last_sign = Instant::now();
                let _ = ptx.send(Pending::Sign(None));
            }
            // On a full disk the segment just grows past its target; rotation is tried again
            // after the next group.
            if self.active_len >= self.shared.config.segment_target_bytes
                && let Err(e) = self.rotate(&ptx)
                && !e.is_storage_full()
            {
                set_failed(&self.shared, &e);
                break 'outer;
            }
        }
        // Shutdown: answer what is still queued, let the syncer sign and finish sealing.
        let why = is_failed(&self.shared);
        while let Ok(c) = rx.try_recv() {
            match c {
                Command::Append { reply, .. } => reply(Err(Error::Closed(why.clone()))),
                Command::Sign(r) => {
                    let _ = r.send(Err(Error::Closed(why.clone())));
                }
                Command::Rotate(r) | Command::Close(r) => {
                    let _ = r.send(Err(Error::Closed(why.clone())));
                }
            }
        }
        drop(rx);
        let _ = ptx.send(Pending::Close);
        drop(ptx);
        let _ = syncer.join();
        let result = match is_failed(&self.shared) {
            None => Ok(()),
            Some(f) => Err(Error::Closed(Some(f))),
        };
        if let Some(reply) = close_reply {
            let _ = reply.send(result);
        }
    }

    /// Writes one group. `Ok(None)` when the disk was full: the group's appends have been answered
    /// with the error and the segment cut back to where the group began, so the ledger goes on.
    fn write_group(&mut self, appends: Vec<Batch>) -> Result<Option<Pending>> {
        self.buf.clear();
        let start_len = self.active_len;
        let mut offsets = Vec::new();
        let mut results = Vec::with_capacity(appends.len());
        let mut next_index = HashMap::new();
        let mut pos = self.next_position;
        for (records, _) in &appends {
            let mut res = Vec::with_capacity(records.len());
            for (account, data, _, received_at) in records {
                let idx = match next_index.get_mut(account) {
                    Some(i) => i,
                    None => next_index
                        .entry(account.clone())
                        .or_insert_with(|| self.next_index.get(account).copied().unwrap_or(0)),
                };
                offsets.push(start_len + self.buf.len() as u64);
                frame::encode_frame(&mut self.buf, pos, *idx, *received_at, account, data);
                res.push(Appended {
                    account: account.clone(),
                    index: *idx,
                    position: pos,
                });
                *idx += 1;
                pos += 1;
            }
            results.push(res);
        }
        if let Err(e) = self.shared.storage.append(&self.active, &self.buf) {
            // Out of space: cut off the part of the group that did reach the file (positions
            // and indexes were not taken yet), and keep taking writes. Anything else leaves the
            // file's state unknown: stop taking writes; the next open recovers.
            let recovered = crate::error::is_storage_full(&e)
                && self
                    .shared
                    .storage
                    .truncate(&self.active, start_len)
                    .is_ok();
            for (_, reply) in appends {
                reply(Err(io_copy(&e)));
            }
            return if recovered {
                Ok(None)
            } else {
                Err(Error::Io(e))
            };
        }
        self.active_len += self.buf.len() as u64;
        self.next_index.extend(next_index);
        self.next_position = pos;
        Ok(Some(Pending::Group {
            segment: self.active.clone(),
            offsets,
            new_len: self.active_len,
            next_position: pos,
            appends,
            results,
        }))
    }

    fn rotate(&mut self, ptx: &mpsc::SyncSender<Pending>) -> Result<()> {
        if self.active_len <= segment::HEADER_LEN as u64 {
            return Ok(());
        }
        let (tx, rx) = mpsc::sync_channel(1);
        ptx.send(Pending::Rotate {
            old: self.active.clone(),
            first: self.next_position,
            reply: tx,
        })
        .map_err(|_| Error::Closed(None))?;
        rx.recv().unwrap_or(Err(Error::Closed(None)))?;
        self.active = segment::plain_name(self.next_position);
        self.active_len = segment::HEADER_LEN as u64;
        Ok(())
    }
}

/// The syncer thread: makes written groups durable (one fsync for everything written since the
/// last one), publishes them to readers, acknowledges them, and signs checkpoints.
struct Syncer {
    shared: Arc<Shared>,
    active: String,
    unsynced: bool,
    sealer: Option<(Sender<String>, JoinHandle<()>)>,
}

impl Syncer {
    fn new(shared: Arc<Shared>, active: String) -> Self {
        let sealer = shared.config.background_sealing.then(|| {
            let (tx, rx) = mpsc::channel::<String>();
            let sh = shared.clone();
            let j = std::thread::Builder::new()
                .name("trailkeep-ledger-sealer".into())
                .spawn(move || {
                    for name in rx {
                        if let Err(e) = seal_segment(&sh, &name) {
                            // Left plain and readable; sealing is retried at the next open.
                            *sh.seal_error.lock().unwrap_or_else(|e| e.into_inner()) =
                                Some(format!("sealing {name}: {e}"));
                        }
                    }
                })
                .expect("spawn sealer");
            (tx, j)
        });
        Self {
            shared,
            active,
            unsynced: false,
            sealer,
        }
    }

    fn run(mut self, rx: Receiver<Pending>) {
        let mut closing = false;
        while let Ok(first) = rx.recv() {
            let mut items = vec![first];
            while let Ok(p) = rx.try_recv() {
                items.push(p);
            }
            let mut groups = Vec::new();
            for item in items {
                match item {
                    Pending::Group { .. } => groups.push(item),
                    other => {
                        self.finish_groups(std::mem::take(&mut groups));
                        match other {
                            Pending::Rotate { old, first, reply } => {
                                let r = self.rotate(old, first);
                                if let Err(e) = &r
                                    && !e.is_storage_full()
                                {
                                    set_failed(&self.shared, e);
                                }
                                let _ = reply.send(r);
                            }
                            Pending::Sign(reply) => {
                                let r = self.sign();
                                match reply {
                                    Some(reply) => {
                                        let _ = reply.send(r);
                                    }
                                    // A full disk only delays the checkpoint: signing is
                                    // retried at the next interval.
                                    None => {
                                        if let Err(e) = r
                                            && !e.is_storage_full()
                                        {
                                            set_failed(&self.shared, &e);
                                        }
                                    }
                                }
                            }
                            Pending::Close => closing = true,
                            Pending::Group { .. } => unreachable!(),
                        }
                    }
                }
            }
            self.finish_groups(groups);
            if closing {
                break;
            }
        }
        // Final checkpoints, then let sealing finish.
        if is_failed(&self.shared).is_none()
            && let Err(e) = self.sign()
        {
            set_failed(&self.shared, &e);
        }
        if let Some((tx, j)) = self.sealer.take() {
            drop(tx);
            let _ = j.join();
        }
    }

    fn finish_groups(&mut self, groups: Vec<Pending>) {
        if groups.is_empty() {
            return;
        }
        let failed = is_failed(&self.shared);
        let synced = match (&failed, self.shared.config.durability) {
            (Some(f), _) => Err(Error::Closed(Some(f.clone()))),
            (None, Durability::Fsync) => self.shared.storage.sync(&self.active).map_err(Error::Io),
            (None, Durability::Relaxed) => {
                self.unsynced = true;
                Ok(())
            }
        };
        if let Err(e) = &synced {
            set_failed(&self.shared, e);
            for g in groups {
                if let Pending::Group { appends, .. } = g {
                    for (_, reply) in appends {
                        reply(Err(match e {
                            Error::Io(io) => io_copy(io),
                            other => Error::Closed(Some(other.to_string())),
                        }));
                    }
                }
            }
            return;
        }
        let mut replies = Vec::with_capacity(groups.len());
        {
            let mut state = self.shared.state.write().unwrap_or_else(|e| e.into_inner());
            let state = &mut *state;
            for g in groups {
                let Pending::Group {
                    segment: seg_name,
                    offsets,
                    new_len,
                    next_position,
                    appends,
                    results,
                } = g
                else {
                    continue;
                };
                let seg = state.segments.last_mut().expect("active segment");
                debug_assert_eq!(seg.name, seg_name);
                if let SegData::Plain { offsets: o, len } = &mut seg.data {
                    o.extend_from_slice(&offsets);
                    *len = new_len;
                }
                seg.count += offsets.len() as u64;
                state.next_position = next_position;
                for ((records, _), res) in appends.iter().zip(&results) {
                    for ((account, _, leaf, _), r) in records.iter().zip(res) {
                        let a = match state.accounts.get_mut(account) {
                            Some(a) => a,
                            None => state
                                .accounts
                                .entry(account.clone())
                                .or_insert(AccountState {
                                    positions: Vec::new(),
                                    tree: TileLog::new(
                                        self.shared.storage.clone(),
                                        account_prefix(account),
                                    ),
                                    signed_size: 0,
                                    checkpoint: None,
                                    history: None,
                                    removed: 0,
                                }),
                        };
                        a.positions.push(r.position);
                        a.tree.push(*leaf);
                    }
                }
                replies.push((appends, results));
            }
        }
        for (appends, results) in replies {
            for ((_, reply), res) in appends.into_iter().zip(results) {
                reply(Ok(res));
            }
        }
    }

    fn rotate(&mut self, old: String, first: u64) -> Result<()> {
        let storage = &self.shared.storage;
        storage.sync(&old)?;
        self.unsynced = false;
        let name = segment::plain_name(first);
        let created = storage
            .append(&name, &segment::encode_header(SegmentKind::Plain, first))
            .and_then(|()| storage.sync(&name));
        if let Err(e) = created {
            // Writing goes on in `old`; a half-written next segment must not be found at open.
            let _ = storage.delete(&name);
            return Err(e.into());
        }
        let new_segment = Segment {
            name: name.clone(),
            first,
            count: 0,
            data: SegData::Plain {
                offsets: Vec::new(),
                len: segment::HEADER_LEN as u64,
            },
        };
        self.active = name;
        self.shared
            .state
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .segments
            .push(new_segment);
        match &self.sealer {
            Some((tx, _)) => {
                if tx.send(old.clone()).is_err() {
                    seal_segment(&self.shared, &old)?;
                }
            }
            None => seal_segment(&self.shared, &old)?,
        }
        Ok(())
    }

    fn sign(&mut self) -> Result<Vec<(String, u64)>> {
        let storage = self.shared.storage.clone();
        if self.unsynced {
            storage.sync(&self.active)?;
            self.unsynced = false;
        }
        let mut signed = Vec::new();
        let grown: Vec<String> = read_lock(&self.shared.state)
            .accounts
            .iter()
            .filter(|(_, a)| {
                a.tree.size() > a.signed_size || a.checkpoint.is_none() && a.tree.size() > 0
            })
            .map(|(n, _)| n.clone())
            .collect();
        for account in grown {
            // Snapshot under the read lock; write and fsync without any lock; publish.
            let Some((batch, cp, chunk)) = read_lock(&self.shared.state)
                .accounts
                .get(&account)
                .map(|a| {
                    (
                        a.tree.unpersisted(),
                        Checkpoint {
                            origin: format!("{}/{account}", self.shared.config.origin),
                            size: a.tree.size(),
                            root: a.tree.root(),
                        },
                        a.history.clone(),
                    )
                })
            else {
                continue;
            };
            batch.write()?;
            let note = self
                .shared
                .signer
                .sign(&cp.body())
                .map_err(|e| Error::Key(e.to_string()))?;
            let (chunk_name, notes) = match chunk {
                Some((name, n)) if n < history::NOTES_PER_CHUNK => (name, n),
                _ => (history::chunk_name(&account, cp.size), 0),
            };
            let chunk_len = storage.size(&chunk_name)?;
            let written = storage
                .append(&chunk_name, &history::encode(&note))
                .and_then(|()| storage.sync(&chunk_name))
                .and_then(|()| storage.put(&checkpoint_name(&account), note.as_bytes()));
            if let Err(e) = written {
                // Take the note back out so that a retry (after space is freed) does not record
                // it twice; the tree's hashes are rewritten from the same place by a retry.
                let _ = match chunk_len {
                    Some(len) => storage.truncate(&chunk_name, len),
                    None => storage.delete(&chunk_name),
                };
                return Err(e.into());
            }
            let mut state = self.shared.state.write().unwrap_or_else(|e| e.into_inner());
            if let Some(a) = state.accounts.get_mut(&account) {
                a.tree.mark_persisted(&batch);
                a.signed_size = cp.size;
                a.checkpoint = Some(note);
                a.history = Some((chunk_name, notes + 1));
            }
            signed.push((account, cp.size));
        }
        Ok(signed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    #[test]
    fn a_run_of_reads_uses_the_block_cache_but_leaves_it_as_it_was() {
        let config = LedgerConfig {
            segment_target_bytes: 16 * 1024,
            seal: SealOptions {
                block_target: 2 * 1024,
                dict_max_bytes: 512,
                dict_sample_bytes: 8 * 1024,
                ..SealOptions::default()
            },
            checkpoint_interval: None,
            ..LedgerConfig::default()
        };
        let ledger = Ledger::open(Arc::new(MemStorage::new()), config).unwrap();
        let body =
            |n: u64| format!(r#"{{"id":"event-{n}","action":"svc.thing.read"}}"#).into_bytes();
        ledger
            .append((0..400).map(|n| ("acct".to_string(), body(n))).collect())
            .unwrap();
        ledger.rotate().unwrap();
        for _ in 0..1000 {
            let s = ledger.stats();
            if s.sealed_segments > 0 && s.segments == s.sealed_segments + 1 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(ledger.stats().sealed_segments > 0);
        let wanted: Vec<(&str, u64)> = (0..400).map(|i| ("acct", i)).collect();
        let read = ledger.read_many(&wanted).unwrap();
        assert!(
            read.iter()
                .enumerate()
                .all(|(n, r)| r.as_ref().unwrap().bytes == body(n as u64))
        );
        assert_eq!(
            ledger.shared().block_cache.bytes(),
            0,
            "read_many kept its blocks"
        );
        // A single read keeps its block, and a run of reads then takes it from the cache.
        assert_eq!(ledger.read("acct", 0).unwrap().unwrap(), body(0));
        let kept = ledger.shared().block_cache.bytes();
        assert!(kept > 0);
        assert_eq!(ledger.read_many(&wanted).unwrap(), read);
        assert_eq!(ledger.shared().block_cache.bytes(), kept);
        ledger.close().unwrap();
    }
}
