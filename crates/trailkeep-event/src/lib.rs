//! The Trailkeep event model: CADF events with the Activity Tracker extensions.
//!
//! Be lenient in what you accept, strict in what you store: this crate turns every
//! shape real emitters send into **one canonical stored form**, rejects only what
//! cannot be understood (with every error, each naming a JSON path and the rule), and
//! gives the RFC 8785 bytes that the ledger hashes. It is pure: no files, no network,
//! no clock, no randomness.
//!
//! # API
//!
//! * [`split_input`]`(bytes, &InputLimits) -> Result<Vec<InputItem>, InputError>` —
//!   outside bytes → items. Recognises one JSON event, a JSON array, NDJSON, a
//!   Kubernetes `Event`/`EventList`, an OpenStack envelope and a legacy `payload`
//!   wrapper. Each [`InputItem`] has a [`Position`] (item index, line, column, byte
//!   offset) and is an [`ItemKind::Event`] ([`RawEvent`]: value + [`Shape`]), an
//!   [`ItemKind::Skipped`] (non-final Kubernetes stage) or an [`ItemKind::Error`].
//!   Only limits on the whole input and an empty input fail the whole call.
//!   [`split_value`] does the same for an already parsed `serde_json::Value`, and
//!   [`split_each`] hands each item to a closure as soon as it is read.
//! * [`normalize`]`(RawEvent, &Context) -> Result<NormalizedEvent, Vec<FieldError>>` —
//!   one event. The [`Context`] carries the [`Policy`] (size limit, redaction rules and
//!   marker, Kubernetes service prefix, input limits), the default account and an
//!   [`HmacKeys`] source of per-account keys (any `Fn(&str) -> Option<Vec<u8>>`).
//! * [`NormalizedEvent`] — [`event`](NormalizedEvent::event) (the stored JSON object),
//!   [`canonical_bytes`](NormalizedEvent::canonical_bytes) (RFC 8785; what the ledger
//!   hashes), [`account`](NormalizedEvent::account),
//!   [`location`](NormalizedEvent::location), [`id`](NormalizedEvent::id),
//!   [`crn`](NormalizedEvent::crn), [`crud`](NormalizedEvent::crud),
//!   [`action_info`](NormalizedEvent::action_info) (service, object type, verb),
//!   [`dropped`](NormalizedEvent::dropped), [`shape`](NormalizedEvent::shape).
//! * [`process_input`]`(bytes, &Context) -> Result<Vec<ProcessedItem>, InputError>` —
//!   split + normalise in one call, one [`ProcessedItem`] per item in input order: the
//!   entry point for `trailkeep event check` and for ingest.
//! * [`canonical`] — RFC 8785 JCS for any `serde_json::Value`:
//!   [`to_canonical_vec`], [`to_canonical_string`], [`write_canonical`].
//!
//! # Normalisation rules
//!
//! The input variant → stored form table, the stored extras (`eventTimeOriginal`,
//! `trailkeepDropped`, `kubernetes`), derivations, redaction, the Kubernetes mapping and
//! the canonical form are described in this crate's `README.md` (included below).
//!

#![doc = include_str!("../README.md")]

pub mod action;
pub mod canonical;
pub mod crn;
mod error;
mod input;
pub mod k8s;
mod normalize;
pub mod object;
pub mod object_codec;
pub mod redact;
mod strict_json;
mod timestamp;

pub use action::{ActionInfo, CrudClass, crud_class};
pub use canonical::{to_canonical_string, to_canonical_vec, write_canonical};
pub use crn::{Crn, CrnError, is_valid_account_id};
pub use error::{FieldError, InputError, ItemError, Position, RuleError};
pub use input::{
    InputFormat, InputItem, InputLimits, ItemKind, RawEvent, Shape, split_each, split_each_as,
    split_input, split_value,
};
pub use normalize::{
    Context, DEFAULT_K8S_SERVICE_PREFIX, DEFAULT_MAX_EVENT_BYTES, DROPPED_FIELD, DroppedField,
    EVENT_TIME_ORIGINAL_FIELD, NormalizedEvent, Policy, SIZE_PLACEHOLDER, normalize,
};
pub use object::{Change, Derivation, Derived, ObjectState, derive};
pub use redact::{DEFAULT_MARKER, HmacKeys, NoKeys, RedactAction, RedactionRule, default_rules};
pub use timestamp::normalize_event_time;

/// What became of one item of an input.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemResult {
    /// Normalised and valid: ready to store.
    Accepted(Box<NormalizedEvent>),
    /// Rejected, with every error (unreadable items give one error with an empty path).
    Rejected(Vec<FieldError>),
    /// Deliberately not stored (a non-final Kubernetes stage).
    Skipped(String),
}

/// One item of [`process_input`].
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessedItem {
    /// Where the item sits in the input.
    pub position: Position,
    /// The shape it came in, when it could be read.
    pub shape: Option<Shape>,
    /// What became of it.
    pub result: ItemResult,
}

/// Split `input` with the policy's limits and normalise every event: one result per
/// item, in input order. Fails as a whole only as [`split_input`] does.
pub fn process_input(input: &[u8], ctx: &Context<'_>) -> Result<Vec<ProcessedItem>, InputError> {
    process_input_as(input, InputFormat::Detect, ctx)
}

/// [`process_input`] for an input whose format may be declared.
pub fn process_input_as(
    input: &[u8],
    format: InputFormat,
    ctx: &Context<'_>,
) -> Result<Vec<ProcessedItem>, InputError> {
    let mut out = Vec::new();
    split_each_as(input, format, &ctx.policy.limits, &mut |item| {
        let (shape, result) = match item.kind {
            ItemKind::Event(raw) => {
                let shape = raw.shape;
                let result = match normalize(raw, ctx) {
                    Ok(ev) => ItemResult::Accepted(Box::new(ev)),
                    Err(errs) => ItemResult::Rejected(errs),
                };
                (Some(shape), result)
            }
            ItemKind::Skipped(why) => (Some(Shape::Kubernetes), ItemResult::Skipped(why)),
            ItemKind::Error(e) => (
                None,
                ItemResult::Rejected(vec![FieldError::new("", e.to_string())]),
            ),
        };
        out.push(ProcessedItem {
            position: item.position,
            shape,
            result,
        });
    })?;
    Ok(out)
}
