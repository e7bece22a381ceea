//! Adding items, committing with positions, rebuilding.
//!
//! Adds are buffered by tantivy and become visible to searches at [`Writer::commit`]; the server
//! commits at least every second. A commit records the highest added log index per account in
//! the commit payload, atomically with the documents, so after a crash the index says exactly
//! what it contains.
//!
//! Re-adding an `(account, index)` never duplicates it: an add at or below the account's highest
//! added index first deletes any earlier document for that position. In the normal in-order feed
//! that check costs nothing.

use std::collections::BTreeMap;

use serde_json::Value;
use tantivy::query::Query;
use tantivy::schema::Term;
use tantivy::{IndexReader, IndexWriter};
use time::OffsetDateTime;

use crate::error::Result;
use crate::index::{CommitPayload, EventIndex, Positions, read_payload};
use crate::schema::{DerivedFields, FORMAT_VERSION, Fields, build_document, unix_nanos};

/// Resources for the writer.
#[derive(Debug, Clone, Copy)]
pub struct WriterOptions {
    /// Indexing threads (each needs at least 15 MB of the budget).
    pub threads: usize,
    /// Memory for buffered documents, in bytes, for all threads together.
    pub memory_budget: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            threads: 1,
            memory_budget: 64 << 20,
        }
    }
}

/// What [`Writer::add`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// A new position for its account.
    New,
    /// The position was already in the committed index: nothing to do (a committed ledger
    /// record never changes).
    Duplicate,
    /// The position was added since the last commit (or is a gap below the account's highest):
    /// any earlier copy is replaced.
    Replaced,
}

/// What a commit made durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    /// tantivy's operation stamp of the commit.
    pub opstamp: u64,
    /// The highest committed log index per account.
    pub positions: Positions,
}

/// Segments merged at once (tantivy's default is 8).
///
/// The server commits every quarter second under load, so each commit leaves a small segment
/// (a few thousand documents) and merges rewrite every document once per level it climbs. Merging
/// twelve segments of a level instead of eight lowers the levels a document climbs from about
/// three to about two at a million events, which is a third less merge work, for a few more
/// segments per search (at most eleven per level).
pub const MERGE_SEGMENTS: usize = 12;

/// The merge policy of the writer: tantivy's log merge policy, merging [`MERGE_SEGMENTS`] at a
/// time.
fn merge_policy() -> tantivy::indexer::LogMergePolicy {
    let mut policy = tantivy::indexer::LogMergePolicy::default();
    policy.set_min_num_segments(MERGE_SEGMENTS);
    policy
}

/// The single writer of an [`EventIndex`].
pub struct Writer {
    writer: IndexWriter,
    reader: IndexReader,
    fields: Fields,
    positions: Positions,
    /// The positions of the last commit.
    committed: Positions,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("positions", &self.positions.len())
            .finish_non_exhaustive()
    }
}

impl Writer {
    pub(crate) fn new(index: &EventIndex, options: WriterOptions) -> Result<Writer> {
        let threads = options.threads.max(1);
        let budget = options.memory_budget.max(threads * (16 << 20));
        let writer: IndexWriter = index.index.writer_with_num_threads(threads, budget)?;
        writer.set_merge_policy(Box::new(merge_policy()));
        let positions = read_payload(&index.index)?
            .map(|p| p.positions)
            .unwrap_or_default();
        Ok(Writer {
            writer,
            reader: index.reader.clone(),
            fields: index.fields.clone(),
            committed: positions.clone(),
            positions,
        })
    }

    /// Adds one item: the event stored at `(account, index)`, received at `received_at`.
    ///
    /// `event` is the stored CADF event object. Visible to searches after the next commit.
    pub fn add(
        &mut self,
        account: &str,
        index: u64,
        received_at: OffsetDateTime,
        event: &Value,
    ) -> Result<Added> {
        self.add_derived(account, index, received_at, event, None)
    }

    /// [`Writer::add`] with the fields derived for the event (class, description, scopes).
    pub fn add_derived(
        &mut self,
        account: &str,
        index: u64,
        received_at: OffsetDateTime,
        event: &Value,
        derived: Option<&DerivedFields<'_>>,
    ) -> Result<Added> {
        let committed = self.committed.get(account).copied();
        if committed.is_some_and(|c| index <= c) && self.is_committed(account, index)? {
            return Ok(Added::Duplicate);
        }
        let received = unix_nanos(received_at);
        let doc = build_document(&self.fields, account, index, received, event, derived);
        let outcome = match self.positions.get_mut(account) {
            Some(highest) if index <= *highest => {
                let query: Box<dyn Query> = Box::new(
                    self.fields
                        .in_account(account, Term::from_field_u64(self.fields.idx, index)),
                );
                self.writer.delete_query(query)?;
                Added::Replaced
            }
            Some(highest) => {
                *highest = index;
                Added::New
            }
            None => {
                self.positions.insert(account.to_string(), index);
                Added::New
            }
        };
        self.writer.add_document(doc)?;
        Ok(outcome)
    }

    /// Is `(account, index)` in the committed index?
    fn is_committed(&self, account: &str, index: u64) -> Result<bool> {
        let query = self
            .fields
            .in_account(account, Term::from_field_u64(self.fields.idx, index));
        Ok(query.count(&self.reader.searcher())? > 0)
    }

    /// Adds a batch of items `(account, index, received_at, event)`; returns how many were new.
    pub fn add_batch<'e, I>(&mut self, items: I) -> Result<usize>
    where
        I: IntoIterator<Item = (&'e str, u64, OffsetDateTime, &'e Value)>,
    {
        let mut new = 0;
        for (account, index, received_at, event) in items {
            if self.add(account, index, received_at, event)? == Added::New {
                new += 1;
            }
        }
        Ok(new)
    }

    /// The highest added log index per account, committed or not.
    pub fn positions(&self) -> &Positions {
        &self.positions
    }

    /// Makes every add so far durable and searchable, with the positions in the payload.
    pub fn commit(&mut self) -> Result<CommitInfo> {
        let info = self.commit_hidden()?;
        self.reader.reload()?;
        Ok(info)
    }

    /// Makes every add so far durable but not yet searchable: [`crate::EventIndex::reload`]
    /// shows it. The caller can commit what it keeps beside the index (derived object state) in
    /// between, so that no search finds a document before that. Add nothing before the reload:
    /// until then a re-added committed document is not recognised as a duplicate.
    pub fn commit_hidden(&mut self) -> Result<CommitInfo> {
        let payload = CommitPayload {
            format: FORMAT_VERSION,
            positions: self.positions.clone(),
        };
        let text =
            serde_json::to_string(&payload).map_err(|e| std::io::Error::other(e.to_string()))?;
        let mut prepared = self.writer.prepare_commit()?;
        prepared.set_payload(&text);
        let opstamp = prepared.commit()?;
        self.committed = self.positions.clone();
        Ok(CommitInfo {
            opstamp,
            positions: self.positions.clone(),
        })
    }

    /// Drops every uncommitted add, back to the last commit (positions too).
    pub fn rollback(&mut self) -> Result<()> {
        self.writer.rollback()?;
        self.positions = self.committed_positions_from_reader()?;
        self.committed = self.positions.clone();
        Ok(())
    }

    fn committed_positions_from_reader(&self) -> Result<Positions> {
        let index = self.reader.searcher().index().clone();
        Ok(read_payload(&index)?
            .map(|p| p.positions)
            .unwrap_or_default())
    }

    /// Deletes `account`'s documents with indexes in `[from, to)` (retention removed their
    /// events from the ledger). Positions are unchanged: the indexes stay taken. Visible after
    /// the next commit.
    pub fn delete_range(&mut self, account: &str, from: u64, to: u64) -> Result<()> {
        use std::ops::Bound;
        use tantivy::query::{BooleanQuery, InvertedIndexRangeQuery, Occur, TermQuery};
        use tantivy::schema::IndexRecordOption;
        if from >= to {
            return Ok(());
        }
        let query: Box<dyn Query> = Box::new(BooleanQuery::new(vec![
            (
                Occur::Must,
                Box::new(TermQuery::new(
                    Term::from_field_text(self.fields.account, account),
                    IndexRecordOption::Basic,
                )) as Box<dyn Query>,
            ),
            (
                Occur::Must,
                Box::new(InvertedIndexRangeQuery::new(
                    Bound::Included(Term::from_field_u64(self.fields.idx, from)),
                    Bound::Excluded(Term::from_field_u64(self.fields.idx, to)),
                )),
            ),
        ]));
        self.writer.delete_query(query)?;
        Ok(())
    }

    /// Deletes everything (for `trailkeep reindex`): the next commit makes the index empty, with
    /// no positions, so the feed restarts from the start of every account's log.
    pub fn delete_all(&mut self) -> Result<()> {
        self.writer.delete_all_documents()?;
        self.positions = BTreeMap::new();
        // Until the next commit the reader still sees the old documents: nothing counts as
        // already indexed.
        self.committed = BTreeMap::new();
        Ok(())
    }

    /// Waits for background merges to finish and releases the writer lock.
    pub fn finish(self) -> Result<()> {
        self.writer.wait_merging_threads()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_merges_twelve_segments_at_a_time() {
        let index = EventIndex::in_memory().unwrap();
        let writer = index.writer(WriterOptions::default()).unwrap();
        let policy = format!("{:?}", writer.writer.get_merge_policy());
        assert!(
            policy.contains(&format!("min_num_segments: {MERGE_SEGMENTS}")),
            "{policy}"
        );
    }
}
