//! Turning a [`Plan`] into a tantivy query over the schema in [`crate::schema`].

use std::collections::HashSet;
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use tantivy::json_utils::convert_to_fast_value_and_append_to_json_term;
use tantivy::query::{
    AllQuery, BooleanQuery, EmptyQuery, ExistsQuery, InvertedIndexRangeQuery, Occur, PhraseQuery,
    Query, RangeQuery, TermQuery, TermSetQuery,
};
use tantivy::schema::{Field, IndexRecordOption, Term};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{DateTime, Index, Searcher};

use crate::query::{FieldKind, JsonOp, KnownField, Plan, TextKind};
use crate::schema::{Fields, WORDS, hash64, json_token};

type BoxQuery = Box<dyn Query>;

pub(crate) struct Compiler<'a> {
    pub fields: &'a Fields,
    pub words: TextAnalyzer,
    held: &'a AccountsHeld,
}

/// The accounts with documents in the latest searcher, worked out once per searcher generation
/// rather than for every query (listing them reads every segment's account dictionary, a
/// zstd-compressed block in each).
#[derive(Default)]
pub(crate) struct AccountsHeld {
    /// The searcher generation and its accounts.
    latest: Mutex<Option<(u64, Accounts)>>,
}

type Accounts = Arc<HashSet<Vec<u8>>>;

impl AccountsHeld {
    fn of(&self, searcher: &Searcher, field: Field) -> tantivy::Result<Accounts> {
        let generation = searcher.generation().generation_id();
        if let Some((g, held)) = &*self.latest.lock().expect("accounts lock")
            && *g == generation
        {
            return Ok(held.clone());
        }
        let mut held = HashSet::new();
        for segment in searcher.segment_readers() {
            let inverted = segment.inverted_index(field)?;
            let mut terms = inverted.terms().stream()?;
            while terms.advance() {
                held.insert(terms.key().to_vec());
            }
        }
        let held = Arc::new(held);
        *self.latest.lock().expect("accounts lock") = Some((generation, held.clone()));
        Ok(held)
    }
}

impl<'a> Compiler<'a> {
    pub fn new(
        index: &Index,
        fields: &'a Fields,
        held: &'a AccountsHeld,
    ) -> tantivy::Result<Compiler<'a>> {
        let words = index.tokenizers().get(WORDS).ok_or_else(|| {
            tantivy::TantivyError::InvalidArgument(format!("tokenizer {WORDS} is not registered"))
        })?;
        Ok(Compiler {
            fields,
            words,
            held,
        })
    }

    /// The query for `plan`, restricted to `accounts` (which must not be empty), to be run on
    /// `searcher`.
    ///
    /// A restriction that excludes nothing in `searcher` (the caller may read every account it
    /// holds, as an admin usually may) is left out: over dozens of accounts it would read every
    /// posting of every account into a bitset, which made a one-event lookup cost as much as a
    /// scan. The collectors check every hit's account against `accounts` either way.
    pub fn compile_for_accounts(
        &mut self,
        plan: &Plan,
        accounts: &[String],
        searcher: &Searcher,
    ) -> tantivy::Result<BoxQuery> {
        let user = self.compile(plan);
        if self.holds_only(searcher, accounts)? {
            return Ok(user);
        }
        let term = |a: &String| Term::from_field_text(self.fields.account, a);
        // Term queries stay lazy (skip lists), so a selective query over a large account costs
        // little; a term set reads every posting into a bitset first, which pays off only for
        // many accounts.
        let accounts: BoxQuery = match accounts {
            [one] => Box::new(TermQuery::new(term(one), IndexRecordOption::Basic)),
            few if few.len() <= 16 => Box::new(BooleanQuery::new(
                few.iter()
                    .map(|a| {
                        let q: BoxQuery =
                            Box::new(TermQuery::new(term(a), IndexRecordOption::Basic));
                        (Occur::Should, q)
                    })
                    .collect(),
            )),
            many => Box::new(TermSetQuery::new(many.iter().map(term))),
        };
        Ok(Box::new(BooleanQuery::new(vec![
            (Occur::Must, accounts),
            (Occur::Must, user),
        ])))
    }

    /// Whether every account with documents in `searcher` is one of `accounts`.
    fn holds_only(&self, searcher: &Searcher, accounts: &[String]) -> tantivy::Result<bool> {
        let allowed: HashSet<&[u8]> = accounts.iter().map(|a| a.as_bytes()).collect();
        let held = self.held.of(searcher, self.fields.account)?;
        Ok(held.iter().all(|a| allowed.contains(a.as_slice())))
    }

    pub fn compile(&mut self, plan: &Plan) -> BoxQuery {
        match plan {
            Plan::All => Box::new(AllQuery),
            Plan::And(items) => {
                let mut clauses = Vec::with_capacity(items.len() + 1);
                let mut positive = false;
                for item in items {
                    match item {
                        Plan::Not(inner) => clauses.push((Occur::MustNot, self.compile(inner))),
                        other => {
                            positive = true;
                            clauses.push((Occur::Must, self.compile(other)));
                        }
                    }
                }
                if !positive {
                    clauses.push((Occur::Must, Box::new(AllQuery)));
                }
                Box::new(BooleanQuery::new(clauses))
            }
            Plan::Or(items) => {
                let clauses = items
                    .iter()
                    .map(|p| (Occur::Should, self.compile(p)))
                    .collect();
                Box::new(BooleanQuery::new(clauses))
            }
            Plan::Not(inner) => Box::new(BooleanQuery::new(vec![
                (Occur::Must, Box::new(AllQuery) as BoxQuery),
                (Occur::MustNot, self.compile(inner)),
            ])),
            Plan::FullText { kind, value } => {
                let f = self.fields;
                let mut clauses = vec![
                    (Occur::Should, self.text(f.message, *kind, value)),
                    (Occur::Should, self.text(f.reason_for_failure, *kind, value)),
                    (Occur::Should, self.text(f.description, *kind, value)),
                ];
                // Action words have no positions: words and prefixes only.
                if *kind != TextKind::Phrase || self.tokens(value).len() == 1 {
                    let kind = if *kind == TextKind::Phrase {
                        TextKind::Word
                    } else {
                        *kind
                    };
                    clauses.push((Occur::Should, self.text(f.action_words, kind, value)));
                }
                Box::new(BooleanQuery::new(clauses))
            }
            Plan::Text { field, kind, value } => self.text(self.fields.field(*field), *kind, value),
            Plan::Keyword { field, value, .. } if field.kind() == FieldKind::HashedKeyword => {
                let t = Term::from_field_u64(self.fields.field(*field), hash64(value));
                Box::new(TermQuery::new(t, IndexRecordOption::Basic))
            }
            Plan::Keyword {
                field,
                value,
                prefix,
            } => {
                let f = self.fields.field(*field);
                if *prefix {
                    prefix_query(Term::from_field_text(f, value))
                } else {
                    Box::new(TermQuery::new(
                        Term::from_field_text(f, value),
                        IndexRecordOption::Basic,
                    ))
                }
            }
            Plan::Int { field, min, max } => {
                let f = self.fields.field(*field);
                if *field == KnownField::Index {
                    let min = min.map(|n| u64::try_from(n.max(0)).unwrap_or(0));
                    let max = match max {
                        Some(n) if *n < 0 => return Box::new(EmptyQuery),
                        Some(n) => Some(u64::try_from(*n).unwrap_or(0)),
                        None => None,
                    };
                    if let (Some(a), Some(b)) = (min, max)
                        && a == b
                    {
                        let t = Term::from_field_u64(f, a);
                        return Box::new(TermQuery::new(t, IndexRecordOption::Basic));
                    }
                    let lo = min.map_or(Bound::Unbounded, |n| {
                        Bound::Included(Term::from_field_u64(f, n))
                    });
                    let hi = max.map_or(Bound::Unbounded, |n| {
                        Bound::Included(Term::from_field_u64(f, n))
                    });
                    return range(lo, hi);
                }
                if let (Some(a), Some(b)) = (min, max)
                    && a == b
                {
                    let t = Term::from_field_i64(f, *a);
                    return Box::new(TermQuery::new(t, IndexRecordOption::Basic));
                }
                let lo = min.map_or(Bound::Unbounded, |n| {
                    Bound::Included(Term::from_field_i64(f, n))
                });
                let hi = max.map_or(Bound::Unbounded, |n| {
                    Bound::Included(Term::from_field_i64(f, n))
                });
                range(lo, hi)
            }
            Plan::Time { field, from, to } => {
                let f = self.fields.field(*field);
                let term = |n: i64| Term::from_field_date(f, DateTime::from_timestamp_nanos(n));
                let lo = from.map_or(Bound::Unbounded, |n| Bound::Included(term(n)));
                let hi = to.map_or(Bound::Unbounded, |n| Bound::Excluded(term(n)));
                range(lo, hi)
            }
            Plan::Bool { field, value } => {
                let t = Term::from_field_bool(self.fields.field(*field), *value);
                Box::new(TermQuery::new(t, IndexRecordOption::Basic))
            }
            Plan::Exists { field } => self.exists(*field),
            Plan::Json { path, op } => self.json(path, op),
        }
    }

    fn tokens(&mut self, text: &str) -> Vec<String> {
        let mut stream = self.words.token_stream(text);
        let mut out = Vec::new();
        while stream.advance() {
            out.push(stream.token().text.clone());
        }
        out
    }

    /// Words, a word prefix or a phrase in one text field.
    fn text(&mut self, field: Field, kind: TextKind, value: &str) -> BoxQuery {
        let tokens = self.tokens(value);
        let has_positions = field != self.fields.action_words;
        match (kind, tokens.len()) {
            (_, 0) => Box::new(EmptyQuery),
            (TextKind::Prefix, _) => {
                // `disk fu*`: the earlier words must be there too, the last is a prefix.
                let mut clauses: Vec<(Occur, BoxQuery)> = tokens[..tokens.len() - 1]
                    .iter()
                    .map(|t| {
                        let q: BoxQuery = Box::new(TermQuery::new(
                            Term::from_field_text(field, t),
                            IndexRecordOption::Basic,
                        ));
                        (Occur::Must, q)
                    })
                    .collect();
                let last = tokens.last().map(String::as_str).unwrap_or_default();
                clauses.push((
                    Occur::Must,
                    prefix_query(Term::from_field_text(field, last)),
                ));
                Box::new(BooleanQuery::new(clauses))
            }
            (_, 1) => Box::new(TermQuery::new(
                Term::from_field_text(field, &tokens[0]),
                IndexRecordOption::Basic,
            )),
            _ if has_positions => {
                let terms = tokens
                    .iter()
                    .map(|t| Term::from_field_text(field, t))
                    .collect();
                Box::new(PhraseQuery::new(terms))
            }
            _ => {
                let clauses = tokens
                    .iter()
                    .map(|t| {
                        let q: BoxQuery = Box::new(TermQuery::new(
                            Term::from_field_text(field, t),
                            IndexRecordOption::Basic,
                        ));
                        (Occur::Must, q)
                    })
                    .collect();
                Box::new(BooleanQuery::new(clauses))
            }
        }
    }

    fn exists(&self, field: KnownField) -> BoxQuery {
        let f = self.fields.field(field);
        let entry = self.fields.schema.get_field_entry(f);
        if entry.is_fast() {
            return Box::new(ExistsQuery::new(entry.name().to_string(), false));
        }
        if field.kind() == FieldKind::HashedKeyword {
            let lo = Term::from_field_u64(f, 0);
            return Box::new(InvertedIndexRangeQuery::new(
                Bound::Included(lo),
                Bound::Unbounded,
            ));
        }
        // Every term of an inverted field: `[""..)`.
        Box::new(InvertedIndexRangeQuery::new(
            Bound::Included(Term::from_field_text(f, "")),
            Bound::Unbounded,
        ))
    }

    fn json(&self, path: &str, op: &JsonOp) -> BoxQuery {
        let f = self.fields.attrs;
        let path_term = Term::from_field_json_path(f, path, true);
        match op {
            JsonOp::Exact(value) => {
                let mut string_term = path_term.clone();
                string_term.append_type_and_str(&json_token(value));
                let mut clauses: Vec<(Occur, BoxQuery)> = vec![(
                    Occur::Should,
                    Box::new(TermQuery::new(string_term, IndexRecordOption::Basic)),
                )];
                if let Some(typed) =
                    convert_to_fast_value_and_append_to_json_term(&path_term, value, false)
                {
                    clauses.push((
                        Occur::Should,
                        Box::new(TermQuery::new(typed, IndexRecordOption::Basic)),
                    ));
                }
                if clauses.len() == 1 {
                    clauses
                        .pop()
                        .map(|(_, q)| q)
                        .unwrap_or_else(|| Box::new(EmptyQuery))
                } else {
                    Box::new(BooleanQuery::new(clauses))
                }
            }
            JsonOp::Prefix(value) => {
                let mut t = path_term;
                t.append_type_and_str(value);
                prefix_query(t)
            }
            JsonOp::Exists => {
                // The path itself (`…\0<type><value>`) and any sub-path (`…\1…`): [`…\0`, `…\2`).
                let path_bytes = path_term.serialized_value_bytes().to_vec();
                let mut lo = path_term.clone();
                lo.truncate_value_bytes(0);
                lo.append_bytes(&path_bytes);
                let mut hi = path_term;
                hi.truncate_value_bytes(0);
                let mut end = path_bytes;
                if let Some(last) = end.last_mut() {
                    *last = 2;
                }
                hi.append_bytes(&end);
                Box::new(InvertedIndexRangeQuery::new(
                    Bound::Included(lo),
                    Bound::Excluded(hi),
                ))
            }
        }
    }
}

fn range(lo: Bound<Term>, hi: Bound<Term>) -> BoxQuery {
    if matches!((&lo, &hi), (Bound::Unbounded, Bound::Unbounded)) {
        return Box::new(AllQuery);
    }
    Box::new(RangeQuery::new(lo, hi))
}

/// Terms starting with the value bytes of `lower`: `[value, successor(value))`.
fn prefix_query(lower: Term) -> BoxQuery {
    let value = lower.serialized_value_bytes().to_vec();
    let mut end = value;
    while let Some(last) = end.last_mut() {
        if *last == u8::MAX {
            end.pop();
        } else {
            *last += 1;
            break;
        }
    }
    let upper = if end.is_empty() {
        Bound::Unbounded
    } else {
        let mut hi = lower.clone();
        hi.truncate_value_bytes(0);
        hi.append_bytes(&end);
        Bound::Excluded(hi)
    };
    Box::new(InvertedIndexRangeQuery::new(Bound::Included(lower), upper))
}
