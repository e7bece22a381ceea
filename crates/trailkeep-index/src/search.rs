//! Searching: hits newest first, paged with an opaque cursor.
//!
//! Order: `eventTime` descending, then account descending, then index descending — a total
//! order, so paging has no gaps and no duplicates even among events of the same instant.
//!
//! **Architecture Invariant.** Every search is limited to the caller's account set by the
//! collector, which checks each hit's account, and also in the tantivy query unless that filter
//! would exclude nothing in the snapshot searched. The cursor only encodes a position in the
//! order; it carries no accounts, query or range, so it cannot widen what a caller sees.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{Column, StrColumn};
use tantivy::query::Weight;
use tantivy::{
    DateTime, DocAddress, DocId, DocSet, Score, SegmentOrdinal, SegmentReader, TERMINATED,
};
use time::OffsetDateTime;

use crate::compile::Compiler;
use crate::error::{IndexError, Result};
use crate::index::EventIndex;
use crate::query::Plan;
use crate::schema::{col, unix_nanos};

/// The most hits one page may ask for.
pub const MAX_LIMIT: usize = 10_000;

/// A search.
#[derive(Debug, Clone)]
pub struct SearchRequest<'a> {
    /// The planned query ([`crate::query::plan_strict`]).
    pub plan: &'a Plan,
    /// The accounts the caller may read (and asked for). Must not be empty.
    pub accounts: &'a [String],
    /// Only events with `eventTime >= from`.
    pub from: Option<OffsetDateTime>,
    /// Only events with `eventTime < to`.
    pub to: Option<OffsetDateTime>,
    /// Hits per page, `1..=MAX_LIMIT`.
    pub limit: usize,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<&'a str>,
}

/// One hit: a position in the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// The account (tenant).
    pub account: String,
    /// The position in the account's log.
    pub index: u64,
    /// The event's time as indexed (microsecond precision).
    pub event_time: OffsetDateTime,
    /// What was derived for the event (class, description), read from the same index snapshot
    /// as the hit (see [`EventIndex::derived`]).
    pub derived: Option<(String, String)>,
}

/// A page of hits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchPage {
    /// Newest first.
    pub hits: Vec<Hit>,
    /// Where the next page starts; `None` when this is the last page.
    pub next_cursor: Option<String>,
}

/// A position in the result order: (event time µs, account, index).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SortKey {
    micros: i64,
    account: String,
    index: u64,
}

const CURSOR_VERSION: u8 = 1;

fn encode_cursor(key: &SortKey) -> String {
    let mut bytes = Vec::with_capacity(17 + key.account.len());
    bytes.push(CURSOR_VERSION);
    bytes.extend_from_slice(&key.micros.to_be_bytes());
    bytes.extend_from_slice(&key.index.to_be_bytes());
    bytes.extend_from_slice(key.account.as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

fn decode_cursor(text: &str) -> Result<SortKey> {
    let bytes = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| IndexError::InvalidCursor)?;
    if bytes.len() < 17 || bytes[0] != CURSOR_VERSION {
        return Err(IndexError::InvalidCursor);
    }
    let micros = i64::from_be_bytes(
        bytes[1..9]
            .try_into()
            .map_err(|_| IndexError::InvalidCursor)?,
    );
    let index = u64::from_be_bytes(
        bytes[9..17]
            .try_into()
            .map_err(|_| IndexError::InvalidCursor)?,
    );
    let account = String::from_utf8(bytes[17..].to_vec()).map_err(|_| IndexError::InvalidCursor)?;
    Ok(SortKey {
        micros,
        account,
        index,
    })
}

/// `[from, to)` in microseconds, as stored in the `eventTime` column.
pub(crate) fn micros_range(from: Option<OffsetDateTime>, to: Option<OffsetDateTime>) -> (i64, i64) {
    // A bound is compared with µs-truncated times: `from` rounds up, `to` rounds up too
    // (t < to  ⇔  trunc(t) < ceil(to) for t ≥ 0 at µs precision).
    let ceil = |n: i64| n.div_euclid(1000) + i64::from(n.rem_euclid(1000) != 0);
    let lo = from.map_or(i64::MIN, |t| ceil(unix_nanos(t)));
    let hi = to.map_or(i64::MAX, |t| ceil(unix_nanos(t)));
    (lo, hi)
}

impl EventIndex {
    /// Finds events newest first, limited to `req.accounts`.
    pub fn search(&self, req: &SearchRequest<'_>) -> Result<SearchPage> {
        self.search_page(req, true)
    }

    /// [`EventIndex::search`] without reading what was derived for each hit (every
    /// [`Hit::derived`] is `None`): the hits are found from fast fields alone, no stored
    /// document is opened. For readers that need only the positions (CSV, Parquet and bundle
    /// exports).
    pub fn search_positions(&self, req: &SearchRequest<'_>) -> Result<SearchPage> {
        self.search_page(req, false)
    }

    fn search_page(&self, req: &SearchRequest<'_>, with_derived: bool) -> Result<SearchPage> {
        if req.accounts.is_empty() {
            return Err(IndexError::NoAccounts);
        }
        if req.limit == 0 || req.limit > MAX_LIMIT {
            return Err(IndexError::InvalidRequest(format!(
                "limit must be between 1 and {MAX_LIMIT}"
            )));
        }
        let cursor = req.cursor.map(decode_cursor).transpose()?;
        let (from, to) = micros_range(req.from, req.to);
        let searcher = self.reader.searcher();
        let mut compiler = Compiler::new(&self.index, &self.fields, &self.accounts_held)?;
        let query = compiler.compile_for_accounts(req.plan, req.accounts, &searcher)?;
        let mut accounts: Vec<String> = req.accounts.to_vec();
        accounts.sort();
        accounts.dedup();
        let collector = Newest {
            k: req.limit + 1,
            from,
            to,
            cursor,
            accounts,
        };
        let mut keys = searcher.search(query.as_ref(), &collector)?;
        let more = keys.len() > req.limit;
        keys.truncate(req.limit);
        let next_cursor = if more {
            keys.last().map(|(k, _)| encode_cursor(k))
        } else {
            None
        };
        let mut hits = Vec::with_capacity(keys.len());
        for (k, address) in keys {
            // Read by address from this very snapshot: far cheaper than looking the position
            // up again in every segment.
            let derived = if with_derived {
                self.fields.stored_derived(&searcher.doc(address)?)
            } else {
                None
            };
            hits.push(Hit {
                event_time: OffsetDateTime::from_unix_timestamp_nanos(i128::from(k.micros) * 1000)
                    .unwrap_or(OffsetDateTime::UNIX_EPOCH),
                account: k.account,
                index: k.index,
                derived,
            });
        }
        Ok(SearchPage { hits, next_cursor })
    }
}

/// The span of the indexed event times, for readers that walk the whole order in time windows
/// (exports): each window is a search whose `from` and `to` are the window's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeSpan {
    /// The oldest `eventTime` indexed, in µs since the Unix epoch.
    pub oldest_micros: i64,
    /// The newest `eventTime` indexed, in µs since the Unix epoch.
    pub newest_micros: i64,
    /// Documents in the index (all accounts): with the span, the mean density of events in time.
    pub docs: u64,
}

impl EventIndex {
    /// The span of the `eventTime` column over every segment of the current snapshot, from the
    /// columns' bounds (no document is read); `None` when nothing is indexed. An index that
    /// later receives older or newer events has a wider span: a reader that walks windows
    /// asks again before it stops.
    pub fn time_span(&self) -> Result<Option<TimeSpan>> {
        let searcher = self.reader.searcher();
        let mut span: Option<TimeSpan> = None;
        for segment in searcher.segment_readers() {
            if segment.num_docs() == 0 {
                continue;
            }
            let time = segment.fast_fields().date(col::EVENT_TIME)?;
            if time.values.num_vals() == 0 {
                continue;
            }
            let (lo, hi) = (
                time.min_value().into_timestamp_micros(),
                time.max_value().into_timestamp_micros(),
            );
            let docs = u64::from(segment.num_docs());
            span = Some(match span {
                None => TimeSpan {
                    oldest_micros: lo,
                    newest_micros: hi,
                    docs,
                },
                Some(s) => TimeSpan {
                    oldest_micros: s.oldest_micros.min(lo),
                    newest_micros: s.newest_micros.max(hi),
                    docs: s.docs + docs,
                },
            });
        }
        Ok(span)
    }
}

/// Walks every hit of a search in the search order (newest first), a page at a time, for
/// readers of the whole result (exports). Cursor paging alone scans the index up to the cursor
/// for every page and keeps a page's worth of hits in a heap while doing so; the walk instead
/// cuts the range into time windows of about one page of hits each (from the density of the
/// index, then of the windows already read) and pages within a window only when it holds
/// more. A window is a search bounded by `from` and `to`, so the hits outside it are rejected
/// on their time alone and the segments outside it are not visited. The windows partition the
/// range (each is `[lo, hi)` and the next one ends at `lo`), so the pages together hold every
/// hit exactly once, in the same order as [`EventIndex::search`]'s pages.
#[derive(Debug)]
pub struct Walk<'a> {
    index: &'a EventIndex,
    plan: &'a Plan,
    accounts: &'a [String],
    limit: usize,
    with_derived: bool,
    /// The request's bounds as given, and in µs (`i64::MIN`/`i64::MAX` when absent).
    from: Option<OffsetDateTime>,
    to: Option<OffsetDateTime>,
    from_micros: i64,
    /// The current window `[lo, hi)` in µs; `hi == None` is the request's `to`.
    lo: i64,
    hi: Option<i64>,
    width: i64,
    /// Where the next page of the current window starts.
    cursor: Option<String>,
    /// Hits read from the current window so far.
    in_window: usize,
    done: bool,
}

/// How much a window may grow or shrink from one to the next.
const WINDOW_STEP: i128 = 8;

impl EventIndex {
    /// A [`Walk`] over the hits of `req` (whose `cursor` must be `None`), `req.limit` hits a
    /// page at most; `with_derived` as [`EventIndex::search`] (else as
    /// [`EventIndex::search_positions`]).
    pub fn walk<'a>(&'a self, req: &SearchRequest<'a>, with_derived: bool) -> Result<Walk<'a>> {
        if req.cursor.is_some() {
            return Err(IndexError::InvalidRequest(
                "a walk starts at the beginning".into(),
            ));
        }
        if req.limit == 0 || req.limit > MAX_LIMIT {
            return Err(IndexError::InvalidRequest(format!(
                "limit must be between 1 and {MAX_LIMIT}"
            )));
        }
        let (from_micros, to_micros) = micros_range(req.from, req.to);
        let mut walk = Walk {
            index: self,
            plan: req.plan,
            accounts: req.accounts,
            limit: req.limit,
            with_derived,
            from: req.from,
            to: req.to,
            from_micros,
            lo: from_micros,
            hi: None,
            width: 1,
            cursor: None,
            in_window: 0,
            done: false,
        };
        // The first window: the newest events, as wide as one page at the index's mean density.
        if let Some(span) = self.time_span()? {
            let top = to_micros.min(span.newest_micros.saturating_add(1));
            let spread = i128::from(top) - i128::from(span.oldest_micros);
            let width = (spread * req.limit as i128 / i128::from(span.docs.max(1))).max(1);
            walk.width = i64::try_from(width).unwrap_or(i64::MAX);
            walk.lo = walk.lower_bound(top, span.oldest_micros);
        }
        Ok(walk)
    }
}

impl Walk<'_> {
    /// The next window's lower bound below `hi`: the request's own bound once the window
    /// reaches it or the oldest event indexed.
    fn lower_bound(&self, hi: i64, oldest: i64) -> i64 {
        let lo = hi.saturating_sub(self.width);
        if lo <= self.from_micros || lo <= oldest {
            self.from_micros
        } else {
            lo
        }
    }

    /// The next page; `None` once every hit was returned. Pages may hold fewer than `limit`
    /// hits (a window's last), never none.
    #[allow(clippy::should_implement_trait)]
    pub fn next_page(&mut self) -> Result<Option<SearchPage>> {
        loop {
            if self.done {
                return Ok(None);
            }
            let micros = |m: i64| {
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(m) * 1000)
                    .map_err(|_| IndexError::InvalidRequest(format!("time {m} µs is out of range")))
            };
            let from = if self.lo <= self.from_micros {
                self.from
            } else {
                Some(micros(self.lo)?)
            };
            let to = match self.hi {
                None => self.to,
                Some(hi) => Some(micros(hi)?),
            };
            let req = SearchRequest {
                plan: self.plan,
                accounts: self.accounts,
                from,
                to,
                limit: self.limit,
                cursor: self.cursor.as_deref(),
            };
            let mut page = self.index.search_page(&req, self.with_derived)?;
            self.in_window += page.hits.len();
            if let Some(next) = page.next_cursor.take() {
                // More in this window; the caller's pages carry no cursor of their own.
                self.cursor = Some(next);
                return Ok(Some(page));
            }
            self.cursor = None;
            self.next_window()?;
            if !page.hits.is_empty() {
                return Ok(Some(page));
            }
        }
    }

    /// Moves below the window just read, sized from its hits; done when it reached the
    /// request's `from` or nothing older is indexed.
    fn next_window(&mut self) -> Result<()> {
        let n = std::mem::take(&mut self.in_window);
        if self.lo <= self.from_micros {
            self.done = true;
            return Ok(());
        }
        let Some(span) = self.index.time_span()? else {
            self.done = true;
            return Ok(());
        };
        let hi = self.lo;
        if span.oldest_micros >= hi {
            self.done = true;
            return Ok(());
        }
        let width = i128::from(self.width);
        let next = if n == 0 {
            width * WINDOW_STEP
        } else {
            (width * self.limit as i128 / n as i128).clamp(width / WINDOW_STEP, width * WINDOW_STEP)
        };
        self.width = i64::try_from(next.max(1)).unwrap_or(i64::MAX);
        self.hi = Some(hi);
        self.lo = self.lower_bound(hi, span.oldest_micros);
        Ok(())
    }
}

/// Top-k newest collector.
struct Newest {
    k: usize,
    from: i64,
    to: i64,
    cursor: Option<SortKey>,
    /// Sorted.
    accounts: Vec<String>,
}

/// Per-segment state: account ordinals are comparable within a segment (sorted dictionary).
struct NewestSegment {
    segment_ord: SegmentOrdinal,
    k: usize,
    from: i64,
    to: i64,
    cursor: Option<SortKey>,
    time: Column<DateTime>,
    idx: Column<u64>,
    account: StrColumn,
    ords: Column<u64>,
    allowed: Vec<u64>,
    /// (event time µs, account ordinal, index, doc).
    heap: BinaryHeap<Reverse<(i64, u64, u64, DocId)>>,
    buf: String,
}

/// The account ordinals of `accounts` in a segment's dictionary (sorted).
pub(crate) fn allowed_ords(column: &StrColumn, accounts: &[String]) -> tantivy::Result<Vec<u64>> {
    let mut ords = Vec::with_capacity(accounts.len());
    for a in accounts {
        if let Some(ord) = column.dictionary().term_ord(a.as_bytes())? {
            ords.push(ord);
        }
    }
    ords.sort_unstable();
    Ok(ords)
}

impl Collector for Newest {
    type Fruit = Vec<(SortKey, DocAddress)>;
    type Child = MaybeNewestSegment;

    fn for_segment(
        &self,
        segment_ord: SegmentOrdinal,
        segment: &SegmentReader,
    ) -> tantivy::Result<Self::Child> {
        let ff = segment.fast_fields();
        let time = ff.date(col::EVENT_TIME)?;
        // A segment whose events all lie outside the range, or are all at or after the cursor
        // (a later page of an export skips the segments of the pages already read), is not
        // visited. The column's bounds hold every value, so nothing is skipped wrongly.
        let (lo, hi) = (
            time.min_value().into_timestamp_micros(),
            time.max_value().into_timestamp_micros(),
        );
        if hi < self.from || lo >= self.to || self.cursor.as_ref().is_some_and(|c| lo > c.micros) {
            return Ok(MaybeNewestSegment(None));
        }
        let Some(account) = ff.str(col::ACCOUNT)? else {
            return Ok(MaybeNewestSegment(None));
        };
        let allowed = allowed_ords(&account, &self.accounts)?;
        if allowed.is_empty() {
            return Ok(MaybeNewestSegment(None));
        }
        Ok(MaybeNewestSegment(Some(NewestSegment {
            segment_ord,
            k: self.k,
            from: self.from,
            to: self.to,
            cursor: self.cursor.clone(),
            time,
            idx: ff.u64(col::IDX)?,
            ords: account.ords().clone(),
            account,
            allowed,
            heap: BinaryHeap::with_capacity(self.k + 1),
            buf: String::new(),
        })))
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    /// Opens the segment's columns only when the query matches something in it (a selective
    /// query usually matches in few segments).
    fn collect_segment(
        &self,
        weight: &dyn Weight,
        segment_ord: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<Vec<(SortKey, DocAddress)>> {
        let mut scorer = weight.scorer(reader, 1.0)?;
        if scorer.doc() == TERMINATED {
            return Ok(Default::default());
        }
        let mut child = self.for_segment(segment_ord, reader)?;
        if child.0.is_none() {
            return Ok(Default::default());
        }
        let alive = reader.alive_bitset();
        let mut doc = scorer.doc();
        while doc != TERMINATED {
            if alive.is_none_or(|a| a.is_alive(doc)) {
                child.collect(doc, 0.0);
            }
            doc = scorer.advance();
        }
        Ok(child.harvest())
    }

    fn merge_fruits(
        &self,
        fruits: Vec<Vec<(SortKey, DocAddress)>>,
    ) -> tantivy::Result<Vec<(SortKey, DocAddress)>> {
        let mut all: Vec<(SortKey, DocAddress)> = fruits.into_iter().flatten().collect();
        all.sort_unstable_by(|a, b| b.0.cmp(&a.0));
        all.truncate(self.k);
        Ok(all)
    }
}

/// A segment without any of the accounts is skipped.
struct MaybeNewestSegment(Option<NewestSegment>);

impl SegmentCollector for MaybeNewestSegment {
    type Fruit = Vec<(SortKey, DocAddress)>;

    fn collect(&mut self, doc: DocId, _score: Score) {
        if let Some(s) = &mut self.0 {
            s.collect(doc);
        }
    }

    fn harvest(self) -> Vec<(SortKey, DocAddress)> {
        match self.0 {
            None => Vec::new(),
            Some(s) => s.harvest(),
        }
    }
}

impl NewestSegment {
    #[inline]
    fn collect(&mut self, doc: DocId) {
        let Some(t) = self.time.first(doc) else {
            return;
        };
        let micros = t.into_timestamp_micros();
        if micros < self.from || micros >= self.to {
            return;
        }
        // Cheap rejections on the time alone before the other columns are read: newer than the
        // cursor (an earlier page), or older than every kept hit once the heap is full.
        if self.cursor.as_ref().is_some_and(|c| micros > c.micros) {
            return;
        }
        if self.heap.len() >= self.k
            && let Some(Reverse(min)) = self.heap.peek()
            && micros < min.0
        {
            return;
        }
        let Some(ord) = self.ords.first(doc) else {
            return;
        };
        if self.allowed.binary_search(&ord).is_err() {
            return;
        }
        let index = self.idx.first(doc).unwrap_or(0);
        if let Some(c) = &self.cursor {
            if micros > c.micros {
                return;
            }
            if micros == c.micros {
                self.buf.clear();
                if self.account.ord_to_str(ord, &mut self.buf).is_err() {
                    return;
                }
                if (self.buf.as_str(), index) >= (c.account.as_str(), c.index) {
                    return;
                }
            }
        }
        let key = (micros, ord, index, doc);
        if self.heap.len() < self.k {
            self.heap.push(Reverse(key));
        } else if let Some(Reverse(min)) = self.heap.peek()
            && key > *min
        {
            self.heap.pop();
            self.heap.push(Reverse(key));
        }
    }

    fn harvest(self) -> Vec<(SortKey, DocAddress)> {
        let mut out = Vec::with_capacity(self.heap.len());
        // Each account's name is looked up in the dictionary once, not once per hit (a page
        // holds thousands of hits of a few accounts). `None`: the ordinal has no term.
        let mut names: HashMap<u64, Option<String>> = HashMap::new();
        for Reverse((micros, ord, index, doc)) in self.heap {
            let name = names.entry(ord).or_insert_with(|| {
                let mut buf = String::new();
                self.account
                    .ord_to_str(ord, &mut buf)
                    .unwrap_or(false)
                    .then_some(buf)
            });
            if let Some(account) = name {
                out.push((
                    SortKey {
                        micros,
                        account: account.clone(),
                        index,
                    },
                    DocAddress::new(self.segment_ord, doc),
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let key = SortKey {
            micros: -5,
            account: "acme".into(),
            index: 42,
        };
        assert_eq!(decode_cursor(&encode_cursor(&key)).unwrap(), key);
        assert!(decode_cursor("not a cursor!").is_err());
        assert!(decode_cursor("AA").is_err());
    }
}
