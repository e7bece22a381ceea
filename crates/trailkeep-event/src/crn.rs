//! Cloud Resource Names: `crn:v1:<cname>:<ctype>:<service>:<location>:<scope>:<instance>:<resourceType>:<resource>`.
//!
//! Owns: parsing a `logSourceCRN` (with or without the `crn:` prefix) and the account
//! and location rules of DESIGN §2. Must never: guess an account from anything but an
//! `a/<id>` scope.

use std::fmt;

/// A parsed CRN. All parts are kept as sent (possibly empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crn {
    /// `v1`.
    pub version: String,
    /// Cloud name, e.g. `bluemix` (may be empty).
    pub cname: String,
    /// Cloud type, e.g. `public`.
    pub ctype: String,
    /// Service name, e.g. `codeengine`.
    pub service_name: String,
    /// Region or data centre, e.g. `eu-de`; empty means global.
    pub location: String,
    /// Scope, e.g. `a/0123abcd`; empty when the resource is not scoped.
    pub scope: String,
    /// Service instance, e.g. a GUID.
    pub service_instance: String,
    /// Resource type.
    pub resource_type: String,
    /// Resource; may itself contain `:`.
    pub resource: String,
}

/// Why a CRN could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrnError {
    /// Not 10 colon-separated parts.
    #[error(
        "must have 10 colon-separated parts: crn:v1:<cname>:<ctype>:<service>:<location>:<scope>:<instance>:<resource-type>:<resource> (found {0})"
    )]
    Parts(usize),
    /// The service part is empty.
    #[error("the service part (5th) must not be empty")]
    NoService,
    /// The account in `a/<id>` is not a usable account id.
    #[error(
        "the account in scope {0:?} must be 1-128 characters of A-Z a-z 0-9 . _ - and not start with '.'"
    )]
    BadAccount(String),
}

impl Crn {
    /// Parse `text`, adding the `crn:` prefix when it is missing (`v1:bluemix:…`).
    pub fn parse(text: &str) -> Result<Crn, CrnError> {
        let full = normalize_prefix(text);
        let parts: Vec<&str> = full.splitn(10, ':').collect();
        if parts.len() != 10 || parts[0] != "crn" {
            return Err(CrnError::Parts(parts.len()));
        }
        if parts[4].is_empty() {
            return Err(CrnError::NoService);
        }
        let crn = Crn {
            version: parts[1].to_owned(),
            cname: parts[2].to_owned(),
            ctype: parts[3].to_owned(),
            service_name: parts[4].to_owned(),
            location: parts[5].to_owned(),
            scope: parts[6].to_owned(),
            service_instance: parts[7].to_owned(),
            resource_type: parts[8].to_owned(),
            resource: parts[9].to_owned(),
        };
        if let Some(account) = crn.scope.strip_prefix("a/") {
            if !is_valid_account_id(account) {
                return Err(CrnError::BadAccount(crn.scope.clone()));
            }
        }
        Ok(crn)
    }

    /// The account id of an `a/<id>` scope, if the scope is one.
    pub fn account(&self) -> Option<&str> {
        self.scope.strip_prefix("a/")
    }

    /// The location, `global` when the CRN leaves it empty.
    pub fn location_or_global(&self) -> &str {
        if self.location.is_empty() {
            "global"
        } else {
            &self.location
        }
    }
}

impl fmt::Display for Crn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "crn:{}:{}:{}:{}:{}:{}:{}:{}:{}",
            self.version,
            self.cname,
            self.ctype,
            self.service_name,
            self.location,
            self.scope,
            self.service_instance,
            self.resource_type,
            self.resource
        )
    }
}

/// `text` with the `crn:` prefix, added when it starts with a version such as `v1:`.
pub(crate) fn normalize_prefix(text: &str) -> std::borrow::Cow<'_, str> {
    if text.starts_with("crn:") || !text.starts_with('v') || !text.contains(':') {
        std::borrow::Cow::Borrowed(text)
    } else {
        std::borrow::Cow::Owned(format!("crn:{text}"))
    }
}

/// Whether `id` can name an account: 1–128 characters of `A-Z a-z 0-9 . _ -`, not
/// starting with `.` (account ids end up in file names and URLs).
pub fn is_valid_account_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}
