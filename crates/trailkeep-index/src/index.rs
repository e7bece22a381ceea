//! Opening the index and reading its commit metadata.
//!
//! The commit payload (tantivy's `meta.json` payload) records, per account, the highest log
//! index that is in the committed index, and the [`FORMAT_VERSION`]. After a restart or a crash
//! the server re-feeds each account from `position + 1` out of the ledger.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tantivy::directory::MmapDirectory;
use tantivy::{Index, IndexReader, ReloadPolicy};

use crate::error::{IndexError, Result};
use crate::schema::{FORMAT_VERSION, Fields, register_tokenizers};
use crate::writer::{Writer, WriterOptions};

/// The highest indexed log index per account.
pub type Positions = BTreeMap<String, u64>;

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct CommitPayload {
    pub format: u32,
    pub positions: Positions,
}

/// Settings of a new index: the stored fields (the derived `class` and `description`, see
/// [`crate::schema`]) are compressed with zstd, which packs these repetitive sentences about a
/// third smaller than tantivy's default lz4; a hit reads one 16 KiB block, a few microseconds
/// more to decompress.
fn settings() -> tantivy::IndexSettings {
    tantivy::IndexSettings {
        docstore_compression: tantivy::store::Compressor::Zstd(
            tantivy::store::ZstdCompressor::default(),
        ),
        ..Default::default()
    }
}

/// A search index of stored events, in a directory or in memory.
///
/// Cheap to share between threads (`&EventIndex` is enough to search); at most one [`Writer`]
/// exists at a time.
pub struct EventIndex {
    pub(crate) index: Index,
    pub(crate) reader: IndexReader,
    pub(crate) fields: Fields,
    pub(crate) accounts_held: crate::compile::AccountsHeld,
}

impl std::fmt::Debug for EventIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventIndex")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl EventIndex {
    /// Opens the index in `dir`, creating it (and the directory) when absent.
    ///
    /// An index written by another [`FORMAT_VERSION`] or with another schema is refused with
    /// [`IndexError::UpgradeRequired`]; the caller deletes it and rebuilds from the ledger.
    pub fn open(dir: &Path) -> Result<EventIndex> {
        std::fs::create_dir_all(dir)?;
        let fields = Fields::new();
        let directory =
            MmapDirectory::open(dir).map_err(|e| IndexError::Io(std::io::Error::other(e)))?;
        let index =
            if Index::exists(&directory).map_err(|e| IndexError::Io(std::io::Error::other(e)))? {
                let index = Index::open(directory)?;
                let found = read_payload(&index)?.map_or(FORMAT_VERSION, |p| p.format);
                if found != FORMAT_VERSION || index.schema() != fields.schema {
                    return Err(IndexError::UpgradeRequired {
                        found,
                        supported: FORMAT_VERSION,
                    });
                }
                index
            } else {
                Index::create(directory, fields.schema.clone(), settings())?
            };
        EventIndex::from_index(index, fields)
    }

    /// Opens the index in `dir`; when it cannot be used (another format version or schema, or
    /// unreadable metadata) deletes it and creates an empty one. Returns the index and whether it
    /// was recreated — then every account must be fed again from the start of its log.
    ///
    /// Safe because the index is derived data: the ledger is the source of truth.
    pub fn open_or_recreate(dir: &Path) -> Result<(EventIndex, bool)> {
        match EventIndex::open(dir) {
            Ok(index) => Ok((index, false)),
            Err(IndexError::UpgradeRequired { .. } | IndexError::Corrupted { .. }) => {
                std::fs::remove_dir_all(dir)?;
                Ok((EventIndex::open(dir)?, true))
            }
            Err(e) => Err(e),
        }
    }

    /// A fresh index in memory (tests, tools).
    pub fn in_memory() -> Result<EventIndex> {
        let fields = Fields::new();
        let index = Index::builder()
            .schema(fields.schema.clone())
            .settings(settings())
            .create_in_ram()?;
        EventIndex::from_index(index, fields)
    }

    fn from_index(index: Index, fields: Fields) -> Result<EventIndex> {
        register_tokenizers(&index);
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(EventIndex {
            index,
            reader,
            fields,
            accounts_held: Default::default(),
        })
    }

    /// The writer (only one may exist at a time, across processes too).
    pub fn writer(&self, options: WriterOptions) -> Result<Writer> {
        Writer::new(self, options)
    }

    /// The highest committed log index per account: where to resume feeding from the ledger.
    pub fn committed_positions(&self) -> Result<Positions> {
        Ok(read_payload(&self.index)?
            .map(|p| p.positions)
            .unwrap_or_default())
    }

    /// Makes the latest commit visible to searches (the writer does this after each commit;
    /// needed only when another process wrote the index).
    pub fn reload(&self) -> Result<()> {
        Ok(self.reader.reload()?)
    }

    /// Number of indexed events visible to searches (deleted ones excluded).
    pub fn num_events(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Number of segments visible to searches.
    pub fn num_segments(&self) -> usize {
        self.reader.searcher().segment_readers().len()
    }

    /// The log indexes of `account`'s committed documents whose event `id` hashes like `id`
    /// (normally one or none; the caller reads the events to tell a hash collision).
    pub fn indexes_with_id(&self, account: &str, id: &str) -> Result<Vec<u64>> {
        use tantivy::schema::Term;
        let query = self.fields.in_account(
            account,
            Term::from_field_u64(self.fields.id, crate::schema::hash64(id)),
        );
        let searcher = self.reader.searcher();
        let found = searcher.search(&query, &tantivy::collector::DocSetCollector)?;
        let mut indexes = Vec::with_capacity(found.len());
        for address in found {
            let column = searcher
                .segment_reader(address.segment_ord)
                .fast_fields()
                .u64(crate::schema::col::IDX)?;
            indexes.extend(column.first(address.doc_id));
        }
        indexes.sort_unstable();
        Ok(indexes)
    }

    /// Calls `each` with the [`hash64`](crate::hash64) of every event id visible to searches
    /// (of every account; a hash may come more than once). Reads only the id field's term
    /// dictionaries, so it costs a small fraction of reading the events back from the ledger.
    pub fn for_each_id_hash(&self, mut each: impl FnMut(u64)) -> Result<()> {
        let searcher = self.reader.searcher();
        for segment in searcher.segment_readers() {
            let inverted = segment.inverted_index(self.fields.id)?;
            let mut terms = inverted.terms().stream()?;
            while terms.advance() {
                // A u64 term's value is its big-endian bytes.
                if let Ok(bytes) = <[u8; 8]>::try_from(terms.key()) {
                    each(u64::from_be_bytes(bytes));
                }
            }
        }
        Ok(())
    }

    /// The class and description derived for the event at `(account, index)` (issue #11), as
    /// stored with its document; `None` when it is not indexed or was added without them.
    pub fn derived(&self, account: &str, index: u64) -> Result<Option<(String, String)>> {
        use tantivy::schema::Term;
        let query = self
            .fields
            .in_account(account, Term::from_field_u64(self.fields.idx, index));
        let searcher = self.reader.searcher();
        let found = searcher.search(&query, &tantivy::collector::DocSetCollector)?;
        let Some(address) = found.into_iter().next() else {
            return Ok(None);
        };
        Ok(self.fields.stored_derived(&searcher.doc(address)?))
    }

    /// Bytes the index's live files take on disk (or in memory).
    pub fn size_bytes(&self) -> Result<u64> {
        let searcher = self.reader.searcher();
        let usage = searcher.space_usage()?;
        Ok(usage.total().get_bytes())
    }
}

/// Bytes used by one part of the index (see [`EventIndex::space_usage`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpaceUsage {
    /// `<field>/<component>` (component: terms, postings, positions, fast, norms) or a whole
    /// component (`store`, `deletes`).
    pub part: String,
    /// Bytes.
    pub bytes: u64,
}

impl EventIndex {
    /// Where the index's bytes go, largest first (for tuning and the benchmark).
    pub fn space_usage(&self) -> Result<Vec<SpaceUsage>> {
        let usage = self.reader.searcher().space_usage()?;
        let mut parts: BTreeMap<String, u64> = BTreeMap::new();
        for seg in usage.segments() {
            for (component, per_field) in [
                ("terms", seg.termdict()),
                ("postings", seg.postings()),
                ("positions", seg.positions()),
                ("fast", seg.fast_fields()),
                ("norms", seg.fieldnorms()),
            ] {
                for f in per_field.fields() {
                    *parts
                        .entry(format!("{}/{component}", f.field_name()))
                        .or_default() += f.total().get_bytes();
                }
            }
            *parts.entry("store".to_string()).or_default() += seg.store().total().get_bytes();
            *parts.entry("deletes".to_string()).or_default() += seg.deletes().get_bytes();
        }
        let mut out: Vec<SpaceUsage> = parts
            .into_iter()
            .filter(|(_, b)| *b > 0)
            .map(|(part, bytes)| SpaceUsage { part, bytes })
            .collect();
        out.sort_by_key(|p| std::cmp::Reverse(p.bytes));
        Ok(out)
    }
}

pub(crate) fn read_payload(index: &Index) -> Result<Option<CommitPayload>> {
    let metas = index.load_metas()?;
    match metas.payload {
        None => Ok(None),
        Some(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| IndexError::Corrupted {
                reason: format!("commit payload: {e}"),
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_indexes_compress_stored_fields_with_zstd() {
        let dir = tempfile::TempDir::new().unwrap();
        for index in [
            EventIndex::in_memory().unwrap(),
            EventIndex::open(dir.path()).unwrap(),
        ] {
            assert!(matches!(
                index.index.settings().docstore_compression,
                tantivy::store::Compressor::Zstd(_)
            ));
        }
    }
}
