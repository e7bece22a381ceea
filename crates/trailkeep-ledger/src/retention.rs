//! The retention statement: the record retention appends to an account's own log before it
//! removes record bodies (FORMAT.md §4.1). The ledger never interprets record bytes except here,
//! where verification needs to know that a tombstone is covered by a statement in the log.
//!
//! A statement is a JSON event whose `action` is [`ACTION`] and whose `requestData.retention`
//! object holds `from` and `to` (the index range `[from, to)` removed); the server adds the
//! policy, the cut-off time and the reason beside them.

use serde_json::Value;

/// The action of a retention record.
pub const ACTION: &str = "trailkeep.retention.apply";

/// The range a retention record states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statement {
    /// First index removed.
    pub from: u64,
    /// End of the removed range (exclusive).
    pub to: u64,
}

/// Reads a retention statement from a record's bytes; `None` for any other record.
pub fn parse_statement(bytes: &[u8]) -> Option<Statement> {
    // Cheap filter first: nearly every record is something else.
    let needle = ACTION.as_bytes();
    if bytes.len() < needle.len() || !bytes.windows(needle.len()).any(|w| w == needle) {
        return None;
    }
    let v: Value = serde_json::from_slice(bytes).ok()?;
    if v.get("action")?.as_str()? != ACTION {
        return None;
    }
    let r = v.get("requestData")?.get("retention")?;
    let from = r.get("from")?.as_u64()?;
    let to = r.get("to")?.as_u64()?;
    (from <= to).then_some(Statement { from, to })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_recognised_and_nothing_else() {
        let s = br#"{"action":"trailkeep.retention.apply","requestData":{"retention":{"from":3,"to":9}}}"#;
        assert_eq!(parse_statement(s), Some(Statement { from: 3, to: 9 }));
        let other = br#"{"action":"x.y.z","requestData":{"retention":{"from":3,"to":9}},"m":"trailkeep.retention.apply"}"#;
        assert_eq!(parse_statement(other), None);
        let backwards = br#"{"action":"trailkeep.retention.apply","requestData":{"retention":{"from":9,"to":3}}}"#;
        assert_eq!(parse_statement(backwards), None);
        assert_eq!(parse_statement(b"trailkeep.retention.apply"), None);
    }
}
