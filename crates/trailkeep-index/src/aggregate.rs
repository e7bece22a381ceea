//! Aggregations: counts by a field (top N) and/or by time bucket, for a query, a time range and
//! an account set (mandatory, as for searches).
//!
//! Counting reads fast columns only; fields that can be counted are those with
//! [`KnownField::aggregatable`]. Time buckets are aligned to multiples of the interval since the
//! Unix epoch (UTC); empty buckets inside the range are reported with a zero count.

use std::collections::HashMap;

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{Column, StrColumn};
use tantivy::query::Weight;
use tantivy::{DateTime, DocId, DocSet, Score, SegmentOrdinal, SegmentReader, TERMINATED};
use time::OffsetDateTime;

use crate::compile::Compiler;
use crate::error::{IndexError, Result};
use crate::index::EventIndex;
use crate::query::{KnownField, Plan};
use crate::schema::col;
use crate::search::{allowed_ords, micros_range};

/// The most time buckets one aggregation may produce.
pub const MAX_BUCKETS: u64 = 10_000;
/// The most terms one aggregation may return.
pub const MAX_TERMS_SIZE: usize = 1_000;

/// Counts by a field's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TermsRequest {
    /// An aggregatable field.
    pub field: KnownField,
    /// How many of the most frequent values to return.
    pub size: usize,
}

/// Counts by time bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Histogram {
    /// An interval chosen for about 50–100 buckets over the range.
    Auto,
    /// A fixed interval.
    Every(time::Duration),
}

/// An aggregation.
#[derive(Debug, Clone)]
pub struct AggregateRequest<'a> {
    /// The planned query.
    pub plan: &'a Plan,
    /// The accounts the caller may read. Must not be empty.
    pub accounts: &'a [String],
    /// Only events with `eventTime >= from`.
    pub from: Option<OffsetDateTime>,
    /// Only events with `eventTime < to`.
    pub to: Option<OffsetDateTime>,
    /// Counts by field, if wanted.
    pub terms: Option<TermsRequest>,
    /// Counts by time bucket, if wanted.
    pub histogram: Option<Histogram>,
}

/// One value and how many events have it.
#[derive(Debug, Clone, PartialEq)]
pub struct TermCount {
    /// The value (a string, number or boolean).
    pub key: serde_json::Value,
    /// Matching events with this value.
    pub count: u64,
}

/// One time bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    /// Start of the bucket (inclusive).
    pub start: OffsetDateTime,
    /// Matching events in `[start, start + interval)`.
    pub count: u64,
    /// When counts by field were asked for too: the counts in this bucket of the values in
    /// [`AggregateResult::terms`], in that order, values with no event here left out.
    pub terms: Vec<TermCount>,
}

/// The answer to an [`AggregateRequest`].
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateResult {
    /// Matching events in the range.
    pub total: u64,
    /// The most frequent values, most frequent first (ties by value).
    pub terms: Vec<TermCount>,
    /// Matching events with a value not in `terms`.
    pub other: u64,
    /// Matching events without the field.
    pub missing: u64,
    /// The bucket interval used (when a histogram was asked for).
    pub interval: Option<time::Duration>,
    /// The buckets, oldest first.
    pub buckets: Vec<Bucket>,
}

const NICE_INTERVALS_SECS: [i64; 17] = [
    1,
    5,
    10,
    30,
    60,
    300,
    600,
    1800,
    3600,
    3 * 3600,
    6 * 3600,
    12 * 3600,
    86_400,
    2 * 86_400,
    7 * 86_400,
    30 * 86_400,
    365 * 86_400,
];

/// The smallest "nice" interval giving at most 100 buckets over `span_micros`.
fn auto_interval_micros(span_micros: i64) -> i64 {
    for secs in NICE_INTERVALS_SECS {
        let micros = secs * 1_000_000;
        if span_micros / micros <= 100 {
            return micros;
        }
    }
    NICE_INTERVALS_SECS[NICE_INTERVALS_SECS.len() - 1] * 1_000_000
}

impl EventIndex {
    /// Counts matching events by field and/or time bucket, limited to `req.accounts`.
    pub fn aggregate(&self, req: &AggregateRequest<'_>) -> Result<AggregateResult> {
        if req.accounts.is_empty() {
            return Err(IndexError::NoAccounts);
        }
        if let Some(t) = req.terms {
            if !t.field.aggregatable() {
                let fields: Vec<&str> = KnownField::ALL
                    .iter()
                    .filter(|f| f.aggregatable())
                    .map(|f| f.path())
                    .collect();
                return Err(IndexError::InvalidRequest(format!(
                    "cannot count by `{}`; countable fields: {}",
                    t.field,
                    fields.join(", ")
                )));
            }
            if t.size == 0 || t.size > MAX_TERMS_SIZE {
                return Err(IndexError::InvalidRequest(format!(
                    "terms size must be between 1 and {MAX_TERMS_SIZE}"
                )));
            }
        }
        let (from, to) = micros_range(req.from, req.to);
        let searcher = self.reader.searcher();

        // The histogram's span: the requested range, narrowed to the data's.
        let histogram = match req.histogram {
            None => None,
            Some(h) => {
                // An open end is taken from the caller's matching events (never from the whole
                // index, whose extent would tell of other accounts' events).
                let (lo, hi) = if req.from.is_some() && req.to.is_some() {
                    (from, to)
                } else {
                    let mut compiler =
                        Compiler::new(&self.index, &self.fields, &self.accounts_held)?;
                    let query = compiler.compile_for_accounts(req.plan, req.accounts, &searcher)?;
                    let extent = Counter {
                        from,
                        to,
                        accounts: sorted_accounts(req.accounts),
                        terms_column: None,
                        histogram: None,
                    };
                    let c = searcher.search(query.as_ref(), &extent)?;
                    (c.min, c.max)
                };
                let lo = if req.from.is_some() { from } else { lo };
                let hi = if req.to.is_some() {
                    to.saturating_sub(1)
                } else {
                    hi
                };
                let interval = match h {
                    Histogram::Every(d) => {
                        let micros = i64::try_from(d.whole_microseconds()).unwrap_or(i64::MAX);
                        if micros <= 0 {
                            return Err(IndexError::InvalidRequest(
                                "interval must be positive".into(),
                            ));
                        }
                        micros
                    }
                    Histogram::Auto => auto_interval_micros(hi.saturating_sub(lo).max(0)),
                };
                if lo > hi {
                    Some((interval, 0, 0))
                } else {
                    let first = lo.div_euclid(interval);
                    let last = hi.div_euclid(interval);
                    let n = u64::try_from(last - first + 1).unwrap_or(u64::MAX);
                    if n > MAX_BUCKETS {
                        return Err(IndexError::InvalidRequest(format!(
                            "{n} buckets asked for; the limit is {MAX_BUCKETS}: use a larger interval"
                        )));
                    }
                    Some((interval, first, n as usize))
                }
            }
        };

        let mut compiler = Compiler::new(&self.index, &self.fields, &self.accounts_held)?;
        let query = compiler.compile_for_accounts(req.plan, req.accounts, &searcher)?;
        let collector = Counter {
            from,
            to,
            accounts: sorted_accounts(req.accounts),
            terms_column: req
                .terms
                .map(|t| (t.field, self.fields.column_name(t.field).to_string())),
            histogram,
        };
        let counts = searcher.search(query.as_ref(), &collector)?;

        let mut terms: Vec<TermCount> = Vec::new();
        let mut other = 0;
        if let Some(t) = req.terms {
            let mut all: Vec<(serde_json::Value, u64)> =
                counts.terms.into_iter().collect::<Vec<_>>();
            all.sort_by(|a, b| {
                b.1.cmp(&a.1)
                    .then_with(|| a.0.to_string().cmp(&b.0.to_string()))
            });
            other = all.iter().skip(t.size).map(|(_, c)| c).sum();
            terms = all
                .into_iter()
                .take(t.size)
                .map(|(key, count)| TermCount { key, count })
                .collect();
        }
        let (interval, buckets) = match histogram {
            None => (None, Vec::new()),
            Some((interval, first, _)) => {
                let bucket_terms = &counts.bucket_terms;
                let buckets = counts
                    .buckets
                    .iter()
                    .enumerate()
                    .map(|(i, &count)| Bucket {
                        start: OffsetDateTime::from_unix_timestamp_nanos(
                            i128::from(first + i as i64) * i128::from(interval) * 1000,
                        )
                        .unwrap_or(OffsetDateTime::UNIX_EPOCH),
                        count,
                        terms: terms
                            .iter()
                            .filter_map(|t| {
                                let c = *bucket_terms.get(&(i, t.key.clone()))?;
                                Some(TermCount {
                                    key: t.key.clone(),
                                    count: c,
                                })
                            })
                            .collect(),
                    })
                    .collect();
                (Some(time::Duration::microseconds(interval)), buckets)
            }
        };
        Ok(AggregateResult {
            total: counts.total,
            terms,
            other,
            missing: counts.missing,
            interval,
            buckets,
        })
    }
}

struct Counter {
    from: i64,
    to: i64,
    accounts: Vec<String>,
    terms_column: Option<(KnownField, String)>,
    /// (interval µs, first bucket number, bucket count)
    histogram: Option<(i64, i64, usize)>,
}

struct Counts {
    total: u64,
    /// Earliest matching event time (µs), `i64::MAX` when none.
    min: i64,
    /// Latest matching event time (µs), `i64::MIN` when none.
    max: i64,
    missing: u64,
    terms: HashMap<serde_json::Value, u64>,
    buckets: Vec<u64>,
    bucket_terms: HashMap<(usize, serde_json::Value), u64>,
}

impl Default for Counts {
    fn default() -> Self {
        Counts {
            total: 0,
            min: i64::MAX,
            max: i64::MIN,
            missing: 0,
            terms: HashMap::new(),
            buckets: Vec::new(),
            bucket_terms: HashMap::new(),
        }
    }
}

fn sorted_accounts(accounts: &[String]) -> Vec<String> {
    let mut accounts = accounts.to_vec();
    accounts.sort();
    accounts.dedup();
    accounts
}

enum TermsColumn {
    None,
    Str {
        column: StrColumn,
        ords: Column<u64>,
        counts: Vec<u64>,
    },
    Int {
        column: Column<i64>,
        counts: HashMap<i64, u64>,
    },
    Bool {
        column: Column<bool>,
        counts: [u64; 2],
    },
}

struct CounterSegment {
    from: i64,
    to: i64,
    time: Column<DateTime>,
    account_ords: Column<u64>,
    allowed: Vec<u64>,
    terms: TermsColumn,
    histogram: Option<(i64, i64)>,
    counts: Counts,
    /// (bucket, raw value) → count, when both terms and a histogram are asked for.
    bucket_terms: HashMap<(usize, u64), u64>,
    /// The same, dense (`bucket * stride + raw`) when the value set is small; `stride` 0 if not.
    dense: Vec<u32>,
    stride: usize,
}

/// The most cells of a dense (bucket × value) count table per segment.
const MAX_DENSE_CELLS: usize = 1 << 22;

impl Collector for Counter {
    type Fruit = Counts;
    type Child = MaybeCounterSegment;

    fn for_segment(
        &self,
        _ord: SegmentOrdinal,
        segment: &SegmentReader,
    ) -> tantivy::Result<Self::Child> {
        let ff = segment.fast_fields();
        let Some(account) = ff.str(col::ACCOUNT)? else {
            return Ok(MaybeCounterSegment(None));
        };
        let allowed = allowed_ords(&account, &self.accounts)?;
        if allowed.is_empty() {
            return Ok(MaybeCounterSegment(None));
        }
        let terms = match &self.terms_column {
            None => TermsColumn::None,
            Some((KnownField::ReasonCode, name)) => TermsColumn::Int {
                column: ff.i64(name)?,
                counts: HashMap::new(),
            },
            Some((KnownField::DataEvent, name)) => TermsColumn::Bool {
                column: ff.bool(name)?,
                counts: [0; 2],
            },
            Some((_, name)) => match ff.str(name)? {
                Some(column) => {
                    let counts = vec![0; column.num_terms()];
                    TermsColumn::Str {
                        ords: column.ords().clone(),
                        column,
                        counts,
                    }
                }
                None => TermsColumn::Str {
                    column: StrColumn::wrap(tantivy::columnar::BytesColumn::empty(
                        segment.max_doc(),
                    )),
                    ords: Column::build_empty_column(segment.max_doc()),
                    counts: Vec::new(),
                },
            },
        };
        let buckets = self.histogram.map_or(0, |(_, _, n)| n);
        let stride = match &terms {
            _ if buckets == 0 => 0,
            TermsColumn::Str { counts, .. } => counts.len(),
            TermsColumn::Bool { .. } => 2,
            TermsColumn::Int { .. } | TermsColumn::None => 0,
        };
        let stride = if buckets.saturating_mul(stride) <= MAX_DENSE_CELLS {
            stride
        } else {
            0
        };
        Ok(MaybeCounterSegment(Some(CounterSegment {
            from: self.from,
            to: self.to,
            time: ff.date(col::EVENT_TIME)?,
            account_ords: account.ords().clone(),
            allowed,
            terms,
            histogram: self.histogram.map(|(i, first, _)| (i, first)),
            counts: Counts {
                buckets: vec![0; buckets],
                ..Counts::default()
            },
            bucket_terms: HashMap::new(),
            dense: vec![0; buckets * stride],
            stride,
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
    ) -> tantivy::Result<Counts> {
        let scorer = weight.scorer(reader, 1.0)?;
        if scorer.doc() == TERMINATED {
            return Ok(Default::default());
        }
        drop(scorer);
        let mut child = self.for_segment(segment_ord, reader)?;
        let alive = reader.alive_bitset();
        // Block-wise: counting may visit most of the segment.
        weight.for_each_no_score(reader, &mut |docs| {
            for &doc in docs {
                if alive.is_none_or(|a| a.is_alive(doc)) {
                    child.collect(doc, 0.0);
                }
            }
        })?;
        Ok(child.harvest())
    }

    fn merge_fruits(&self, fruits: Vec<Counts>) -> tantivy::Result<Counts> {
        let buckets = self.histogram.map_or(0, |(_, _, n)| n);
        let mut out = Counts {
            buckets: vec![0; buckets],
            ..Counts::default()
        };
        for f in fruits {
            out.total += f.total;
            out.min = out.min.min(f.min);
            out.max = out.max.max(f.max);
            out.missing += f.missing;
            for (k, c) in f.terms {
                *out.terms.entry(k).or_default() += c;
            }
            for (o, c) in out.buckets.iter_mut().zip(f.buckets) {
                *o += c;
            }
            for (k, c) in f.bucket_terms {
                *out.bucket_terms.entry(k).or_default() += c;
            }
        }
        Ok(out)
    }
}

/// A segment without any of the accounts is skipped.
struct MaybeCounterSegment(Option<CounterSegment>);

impl SegmentCollector for MaybeCounterSegment {
    type Fruit = Counts;

    fn collect(&mut self, doc: DocId, _score: Score) {
        if let Some(s) = &mut self.0 {
            s.collect(doc);
        }
    }

    fn harvest(self) -> Counts {
        match self.0 {
            None => Counts::default(),
            Some(s) => s.harvest(),
        }
    }
}

impl CounterSegment {
    #[inline]
    fn collect(&mut self, doc: DocId) {
        let Some(t) = self.time.first(doc) else {
            return;
        };
        let micros = t.into_timestamp_micros();
        if micros < self.from || micros >= self.to {
            return;
        }
        match self.account_ords.first(doc) {
            Some(ord) if self.allowed.binary_search(&ord).is_ok() => {}
            _ => return,
        }
        self.counts.total += 1;
        self.counts.min = self.counts.min.min(micros);
        self.counts.max = self.counts.max.max(micros);
        // The value as a raw key (ordinal, integer bits, or 0/1), `None` when absent.
        let (present, raw) = match &mut self.terms {
            TermsColumn::None => (true, None),
            TermsColumn::Str { ords, counts, .. } => match ords.first(doc) {
                Some(o) => {
                    if let Some(c) = counts.get_mut(o as usize) {
                        *c += 1;
                    }
                    (true, Some(o))
                }
                None => (false, None),
            },
            TermsColumn::Int { column, counts } => match column.first(doc) {
                Some(v) => {
                    *counts.entry(v).or_default() += 1;
                    (true, Some(v as u64))
                }
                None => (false, None),
            },
            TermsColumn::Bool { column, counts } => match column.first(doc) {
                Some(v) => {
                    counts[usize::from(v)] += 1;
                    (true, Some(u64::from(v)))
                }
                None => (false, None),
            },
        };
        if !present {
            self.counts.missing += 1;
        }
        if let Some((interval, first)) = self.histogram {
            let b = micros.div_euclid(interval) - first;
            if let Some(b) = usize::try_from(b)
                .ok()
                .filter(|b| *b < self.counts.buckets.len())
            {
                self.counts.buckets[b] += 1;
                if let Some(raw) = raw {
                    if self.stride > 0 {
                        if let Some(c) = self.dense.get_mut(b * self.stride + raw as usize) {
                            *c += 1;
                        }
                    } else {
                        *self.bucket_terms.entry((b, raw)).or_default() += 1;
                    }
                }
            }
        }
    }

    fn harvest(mut self) -> Counts {
        if let Some(stride) = std::num::NonZeroUsize::new(self.stride) {
            for (cell, &c) in self.dense.iter().enumerate() {
                if c > 0 {
                    let key = (cell / stride, (cell % stride) as u64);
                    self.bucket_terms.insert(key, u64::from(c));
                }
            }
        }
        let mut names: HashMap<u64, String> = HashMap::new();
        for ((b, raw), c) in std::mem::take(&mut self.bucket_terms) {
            let key = match &self.terms {
                TermsColumn::None => continue,
                TermsColumn::Str { column, .. } => {
                    if let std::collections::hash_map::Entry::Vacant(e) = names.entry(raw) {
                        let mut buf = String::new();
                        if !column.ord_to_str(raw, &mut buf).unwrap_or(false) {
                            continue;
                        }
                        e.insert(buf);
                    }
                    serde_json::Value::String(names[&raw].clone())
                }
                TermsColumn::Int { .. } => serde_json::Value::from(raw as i64),
                TermsColumn::Bool { .. } => serde_json::Value::Bool(raw == 1),
            };
            *self.counts.bucket_terms.entry((b, key)).or_default() += c;
        }
        match self.terms {
            TermsColumn::None => {}
            TermsColumn::Str { column, counts, .. } => {
                let mut buf = String::new();
                for (ord, c) in counts.into_iter().enumerate() {
                    if c > 0 {
                        buf.clear();
                        if column.ord_to_str(ord as u64, &mut buf).unwrap_or(false) {
                            self.counts
                                .terms
                                .insert(serde_json::Value::String(buf.clone()), c);
                        }
                    }
                }
            }
            TermsColumn::Int { counts, .. } => {
                for (v, c) in counts {
                    self.counts.terms.insert(serde_json::Value::from(v), c);
                }
            }
            TermsColumn::Bool { counts, .. } => {
                for (v, c) in [(false, counts[0]), (true, counts[1])] {
                    if c > 0 {
                        self.counts.terms.insert(serde_json::Value::Bool(v), c);
                    }
                }
            }
        }
        self.counts
    }
}
