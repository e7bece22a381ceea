//! Cloud Resource Names: `crn:v1:<cname>:<ctype>:<service>:<location>:<scope>:<instance>:<resourceType>:<resource>`.
//!
//! Owns: parsing a `logSourceCRN` (with or without the `crn:` prefix) and the account
//! and location rules of DESIGN §2. Must never: guess an account from anything but an
//! `a/<id>` scope.

use std::fmt;

/// A parsed CRN: the text (always with the `crn:` prefix) and where its parts are.
/// Parts are returned as sent (possibly empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crn {
    text: String,
    /// Byte offset where each of the 10 parts starts, plus the end of the text.
    bounds: [usize; 11],
}

/// Why a CRN could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrnError {
    /// Not 10 colon-separated parts.
    #[error(
        "must have 10 colon-separated parts: crn:v1:<cname>:<ctype>:<service>:<location>:<scope>:<instance>:<resource-type>:<resource> (found {0})"
    )]
    Parts(usize),
    /// Does not start with `crn:` (or a version such as `v1:`).
    #[error("must start with `crn:` (or the version, e.g. `v1:`)")]
    Prefix,
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
        let full = normalize_prefix(text).into_owned();
        let mut bounds = [full.len() + 1; 11];
        bounds[0] = 0;
        let mut n = 1;
        for (i, b) in full.bytes().enumerate() {
            if b == b':' && n < 10 {
                bounds[n] = i + 1;
                n += 1;
            }
        }
        if !full.starts_with("crn:") {
            return Err(CrnError::Prefix);
        }
        if n != 10 {
            return Err(CrnError::Parts(n));
        }
        bounds[10] = full.len() + 1;
        let crn = Crn { text: full, bounds };
        if crn.service_name().is_empty() {
            return Err(CrnError::NoService);
        }
        if let Some(account) = crn.account()
            && !is_valid_account_id(account)
        {
            return Err(CrnError::BadAccount(crn.scope().to_owned()));
        }
        Ok(crn)
    }

    fn part(&self, i: usize) -> &str {
        &self.text[self.bounds[i]..self.bounds[i + 1] - 1]
    }

    /// The whole CRN, with the `crn:` prefix.
    pub fn as_str(&self) -> &str {
        &self.text
    }
    /// `v1`.
    pub fn version(&self) -> &str {
        self.part(1)
    }
    /// Cloud name, e.g. `bluemix` (may be empty).
    pub fn cname(&self) -> &str {
        self.part(2)
    }
    /// Cloud type, e.g. `public`.
    pub fn ctype(&self) -> &str {
        self.part(3)
    }
    /// Service name, e.g. `codeengine`.
    pub fn service_name(&self) -> &str {
        self.part(4)
    }
    /// Region or data centre, e.g. `eu-de`; empty means global.
    pub fn location(&self) -> &str {
        self.part(5)
    }
    /// Scope, e.g. `a/0123abcd`; empty when the resource is not scoped.
    pub fn scope(&self) -> &str {
        self.part(6)
    }
    /// Service instance, e.g. a GUID.
    pub fn service_instance(&self) -> &str {
        self.part(7)
    }
    /// Resource type.
    pub fn resource_type(&self) -> &str {
        self.part(8)
    }
    /// Resource; may itself contain `:`.
    pub fn resource(&self) -> &str {
        self.part(9)
    }

    /// The account id of an `a/<id>` scope, if the scope is one.
    pub fn account(&self) -> Option<&str> {
        self.scope().strip_prefix("a/")
    }

    /// The location, `global` when the CRN leaves it empty.
    pub fn location_or_global(&self) -> &str {
        let l = self.location();
        if l.is_empty() { "global" } else { l }
    }
}

impl fmt::Display for Crn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
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
