//! Self-audit: what callers do through the API becomes CADF events in the affected account's own
//! log (action prefix `trailkeep.`), so an auditor can search who looked at or changed what.
//!
//! What is recorded, and where:
//! * reads that return event content (search, get, aggregate, live tail, export) — in every account
//!   named by the request and every account whose events were returned; a read that names no
//!   account and returns nothing is recorded in the system account;
//! * key, account, view, alert and settings changes — in each account the object concerns, and for
//!   objects that cover every account, in the system account;
//! * failed authentications and authorisation denials — in the system account (the account a
//!   denied caller named may not even exist, and must not be created by asking).
//!
//! Integrity endpoints that reveal no event content (checkpoints, tiles, proofs, the verifier key)
//! are not recorded: witnesses poll them, and they would bury the log in noise.
//! Secrets never appear in these events: a key is named by its id and name only.

use std::net::SocketAddr;

use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::auth::Principal;
use crate::core::format_time;

/// Who acted.
#[derive(Debug, Clone)]
pub enum Initiator {
    /// An authenticated key.
    Key { id: String, name: String },
    /// A caller that presented no valid key.
    Unauthenticated,
}

impl From<&Principal> for Initiator {
    fn from(p: &Principal) -> Self {
        Initiator::Key {
            id: p.key_id.clone(),
            name: p.key_name.clone(),
        }
    }
}

/// One self-audit record, before it is an event.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub account: String,
    /// `<object>.<verb>`; the `trailkeep.` prefix is added.
    pub action: String,
    pub initiator: Initiator,
    pub client: Option<SocketAddr>,
    pub success: bool,
    /// An HTTP status: 200, 201, 401, 403…
    pub status: u16,
    pub failure_reason: Option<String>,
    /// What was acted on: `(id, name, typeURI)`.
    pub target: (String, String, String),
    pub request_data: Value,
    pub response_data: Value,
}

impl AuditRecord {
    pub fn new(
        account: &str,
        action: &str,
        initiator: impl Into<Initiator>,
        target: (String, String, String),
    ) -> Self {
        AuditRecord {
            account: account.to_string(),
            action: action.to_string(),
            initiator: initiator.into(),
            client: None,
            success: true,
            status: 200,
            failure_reason: None,
            target,
            request_data: json!({}),
            response_data: json!({}),
        }
    }

    pub fn request(mut self, data: Value) -> Self {
        self.request_data = data;
        self
    }

    pub fn response(mut self, data: Value) -> Self {
        self.response_data = data;
        self
    }

    pub fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    pub fn failed(mut self, status: u16, reason: impl Into<String>) -> Self {
        self.success = false;
        self.status = status;
        self.failure_reason = Some(reason.into());
        self
    }

    pub fn client(mut self, client: Option<SocketAddr>) -> Self {
        self.client = client;
        self
    }

    /// The CADF event, as an emitter would send it.
    pub fn to_event(&self, now: OffsetDateTime) -> Value {
        let (initiator_id, initiator_name, type_uri) = match &self.initiator {
            Initiator::Key { id, name } => (
                id.as_str(),
                name.as_str(),
                "service/security/account/apikey",
            ),
            Initiator::Unauthenticated => (
                "unauthenticated",
                "caller without a valid key",
                "service/security/account/unknown",
            ),
        };
        let mut initiator = json!({
            "id": initiator_id,
            "name": initiator_name,
            "typeURI": type_uri,
            "credential": {"type": "apikey"},
        });
        if let Some(client) = self.client {
            initiator["host"] = json!({"address": client.ip().to_string()});
        }
        let mut reason = json!({
            "reasonCode": self.status,
            "reasonType": reason_type(self.status),
        });
        if let Some(why) = &self.failure_reason {
            reason["reasonForFailure"] = json!(why);
        }
        json!({
            // Each record is its own occurrence: two alike in the same instant (a flood of bad
            // keys) must not be taken for one retried event, as an id derived from content would.
            "id": uuid::Uuid::new_v4().to_string(),
            "eventTime": format_time(now),
            "action": format!("trailkeep.{}", self.action),
            "outcome": if self.success { "success" } else { "failure" },
            "severity": if self.success { "normal" } else { "warning" },
            "logSourceCRN": format!("crn:v1:trailkeep:public:trailkeep::a/{}:::", self.account),
            "initiator": initiator,
            "target": {
                "id": self.target.0,
                "name": self.target.1,
                "typeURI": self.target.2,
            },
            "observer": {"name": "ActivityTracker"},
            "reason": reason,
            "requestData": self.request_data,
            "responseData": self.response_data,
            "dataEvent": false,
        })
    }
}

fn reason_type(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        _ => "HTTP",
    }
}

/// Records one change `caller` made through the API in `account`'s log, durably: call it before
/// answering the change.
pub async fn record_change(
    core: &std::sync::Arc<crate::core::Core>,
    caller: &Principal,
    account: &str,
    action: &str,
    target: (String, String, String),
    status: u16,
    request: Value,
) -> Result<(), crate::error::ApiError> {
    let record = AuditRecord::new(account, action, caller, target)
        .status(status)
        .client(caller.client)
        .request(request);
    core.record(vec![record]).await
}

/// The target of reads of an account's events.
pub fn events_target(account: &str) -> (String, String, String) {
    (
        format!("crn:v1:trailkeep:public:trailkeep::a/{account}::log:events"),
        format!("events of account {account}"),
        "trailkeep/events".to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_audit_record_is_a_valid_event_of_its_account() {
        let record = AuditRecord::new(
            "acme",
            "event.search",
            Initiator::Key {
                id: "k_1".into(),
                name: "auditor".into(),
            },
            events_target("acme"),
        )
        .request(json!({"q": "outcome:failure"}))
        .client(Some("127.0.0.1:5000".parse().unwrap()));
        let event = record.to_event(OffsetDateTime::UNIX_EPOCH);
        let policy = trailkeep_event::Policy::default();
        let ctx = trailkeep_event::Context::new(&policy, "other");
        let bytes = serde_json::to_vec(&event).unwrap();
        let items = trailkeep_event::process_input(&bytes, &ctx).unwrap();
        let trailkeep_event::ItemResult::Accepted(stored) = &items[0].result else {
            panic!("rejected: {:?}", items[0].result);
        };
        assert_eq!(stored.account(), "acme");
        assert_eq!(event["action"], "trailkeep.event.search");
        assert_eq!(event["initiator"]["host"]["address"], "127.0.0.1");
    }
}
