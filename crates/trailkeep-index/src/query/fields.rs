//! The fields a query can name, and how each is indexed: the contract between the planner and
//! the index schema. Pure data, no tantivy.
//!
//! Names are the event's dotted paths (DESIGN §2), plus three item fields that are not part of the
//! event: `account`, `index` and `receivedAt`, and three fields derived for it (issue #11):
//! `class`, `description` and `scope`. Any other dotted path is looked up in the catch-all
//! JSON field.

use std::fmt;

/// How a dedicated field is indexed, which decides how values are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// Exact string (case-sensitive), prefix-searchable.
    Keyword,
    /// Exact string stored in lower case (`outcome`, `severity`): query values are lower-cased.
    LowerKeyword,
    /// An exact string, indexed as a 64-bit hash to keep the index small (unique ids such as
    /// `id` and `correlationId`): exact match only, no prefix search.
    HashedKeyword,
    /// Full text (words, phrases, word prefixes).
    Text,
    /// A signed integer.
    Int,
    /// An unsigned integer.
    Uint,
    /// An instant (RFC 3339, or a date for a whole UTC day).
    Date,
    /// `true` / `false`.
    Bool,
}

/// A field with its own place in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KnownField {
    /// The item's account (tenant).
    Account,
    /// The item's position in its account's log.
    Index,
    /// The event's time.
    EventTime,
    /// When Trailkeep received the event.
    ReceivedAt,
    /// `action`.
    Action,
    /// `outcome`.
    Outcome,
    /// `severity`.
    Severity,
    /// `id`.
    Id,
    /// `correlationId`.
    CorrelationId,
    /// `target.id`.
    TargetId,
    /// `initiator.id`.
    InitiatorId,
    /// `logSourceCRN`.
    LogSourceCrn,
    /// `reason.reasonCode` (when an integer; other codes are in the JSON field).
    ReasonCode,
    /// `dataEvent`.
    DataEvent,
    /// `message`.
    Message,
    /// `reason.reasonForFailure`.
    ReasonForFailure,
    /// The action class (`create`, `update`, `delete`, `read`, `info`), derived from the verb.
    Class,
    /// The human-readable description derived for the event (issue #11).
    Description,
    /// The event's object and every parent of it: `scope:<target.id>` finds the events of an
    /// object and of everything under it.
    Scope,
}

impl KnownField {
    /// Every known field.
    pub const ALL: [KnownField; 19] = [
        KnownField::Account,
        KnownField::Index,
        KnownField::EventTime,
        KnownField::ReceivedAt,
        KnownField::Action,
        KnownField::Outcome,
        KnownField::Severity,
        KnownField::Id,
        KnownField::CorrelationId,
        KnownField::TargetId,
        KnownField::InitiatorId,
        KnownField::LogSourceCrn,
        KnownField::ReasonCode,
        KnownField::DataEvent,
        KnownField::Message,
        KnownField::ReasonForFailure,
        KnownField::Class,
        KnownField::Description,
        KnownField::Scope,
    ];

    /// The name used in queries (the event's dotted path).
    pub fn path(self) -> &'static str {
        match self {
            KnownField::Account => "account",
            KnownField::Index => "index",
            KnownField::EventTime => "eventTime",
            KnownField::ReceivedAt => "receivedAt",
            KnownField::Action => "action",
            KnownField::Outcome => "outcome",
            KnownField::Severity => "severity",
            KnownField::Id => "id",
            KnownField::CorrelationId => "correlationId",
            KnownField::TargetId => "target.id",
            KnownField::InitiatorId => "initiator.id",
            KnownField::LogSourceCrn => "logSourceCRN",
            KnownField::ReasonCode => "reason.reasonCode",
            KnownField::DataEvent => "dataEvent",
            KnownField::Message => "message",
            KnownField::ReasonForFailure => "reason.reasonForFailure",
            KnownField::Class => "class",
            KnownField::Description => "description",
            KnownField::Scope => "scope",
        }
    }

    /// Looks a query field name up.
    pub fn from_path(path: &str) -> Option<KnownField> {
        KnownField::ALL.into_iter().find(|f| f.path() == path)
    }

    /// How the field is indexed.
    pub fn kind(self) -> FieldKind {
        match self {
            KnownField::Index => FieldKind::Uint,
            KnownField::EventTime | KnownField::ReceivedAt => FieldKind::Date,
            KnownField::ReasonCode => FieldKind::Int,
            KnownField::DataEvent => FieldKind::Bool,
            KnownField::Message | KnownField::ReasonForFailure | KnownField::Description => {
                FieldKind::Text
            }
            KnownField::Outcome | KnownField::Severity | KnownField::Class => {
                FieldKind::LowerKeyword
            }
            KnownField::Id | KnownField::CorrelationId => FieldKind::HashedKeyword,
            KnownField::Account
            | KnownField::Action
            | KnownField::TargetId
            | KnownField::InitiatorId
            | KnownField::LogSourceCrn
            | KnownField::Scope => FieldKind::Keyword,
        }
    }

    /// Can results be counted by this field (`terms` aggregation)?
    pub fn aggregatable(self) -> bool {
        matches!(
            self,
            KnownField::Account
                | KnownField::Action
                | KnownField::Outcome
                | KnownField::Severity
                | KnownField::Class
                | KnownField::TargetId
                | KnownField::InitiatorId
                | KnownField::ReasonCode
                | KnownField::DataEvent
        )
    }
}

impl fmt::Display for KnownField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.path())
    }
}
