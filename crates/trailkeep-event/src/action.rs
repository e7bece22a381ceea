//! Actions: validity, their parts (service, object type, verb) and the CRUD class.
//!
//! Owns: the two accepted action forms of DESIGN §2 and the verb → [`CrudClass`]
//! table. Must never: reject an action that PYCADF accepts or that follows the
//! Activity Tracker `service.objectType.verb` form.
//!
//! * **Activity Tracker form**: three or more non-empty dot-separated parts without
//!   whitespace. The verb is the last part, the object type the one before it, and the
//!   service all parts before that (`is.instance.instance.create` → service
//!   `is.instance`, the two-part VPC service names).
//! * **CADF taxonomy form**: the action starts with an entry of the CADF action
//!   taxonomy (`create`, `read/list`, `update/createImage`, `authenticate/login`, and —
//!   as PYCADF's prefix match allows — Keystone's `created.project`). The verb is the
//!   text before the first `.` (`read/list`, `created`); the object type is the text
//!   after it, else the last segment of `target.typeURI`; the service is taken from
//!   `target.typeURI` and then `observer.typeURI` (`data/security/project` and
//!   `service/security` → `security`; `iam-am/policy` → `iam-am`), else `unknown`.

/// The CADF action taxonomy (PYCADF `cadftaxonomy.ACTION_TAXONOMY`), longest first
/// where one entry is a prefix of another.
pub const CADF_ACTIONS: &[&str] = &[
    "authenticate/login",
    "authenticate",
    "backup",
    "capture",
    "configure",
    "create",
    "read/list",
    "read",
    "update",
    "delete",
    "monitor",
    "start",
    "stop",
    "deploy",
    "undeploy",
    "enable",
    "disable",
    "send",
    "receive",
    "revoke",
    "renew",
    "restore",
    "evaluate",
    "allow",
    "deny",
    "notify",
    "unknown",
];

/// What an action does to its target, for filtering and severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrudClass {
    /// Makes a new resource (create, add, import, provision, push, …).
    Create,
    /// Reads without changing (read, get, list, inspect, pull, …).
    Read,
    /// Changes an existing resource (update, configure, rotate, start, …).
    Update,
    /// Removes a resource (delete, bulkdelete, remove, undeploy, …).
    Delete,
    /// Neither: authentication, notifications, policy decisions, unknown verbs.
    Info,
}

impl CrudClass {
    /// `create`, `read`, `update`, `delete` or `info`.
    pub fn as_str(self) -> &'static str {
        match self {
            CrudClass::Create => "create",
            CrudClass::Read => "read",
            CrudClass::Update => "update",
            CrudClass::Delete => "delete",
            CrudClass::Info => "info",
        }
    }
}

impl std::fmt::Display for CrudClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The CRUD class of a verb (case-insensitive). Covers every verb of the Activity
/// Tracker verb list and the CADF action taxonomy; anything else is [`CrudClass::Info`].
pub fn crud_class(verb: &str) -> CrudClass {
    // CADF paths (`read/list`, `update/createImage`) are classed by their first segment;
    // Keystone's past tenses (`created`, `deleted`, `updated`) by their stem.
    let lower = verb.to_ascii_lowercase();
    let head = lower.split('/').next().unwrap_or("");
    let stem = match head {
        "created" => "create",
        "updated" => "update",
        "deleted" => "delete",
        "disabled" => "disable",
        "enabled" => "enable",
        h => h,
    };
    match stem {
        "create" | "add" | "copy" | "import" | "reimport" | "init" | "provision" | "backup"
        | "build" | "capture" | "push" | "publish" | "write" | "split" | "clone" => {
            CrudClass::Create
        }
        "read" | "get" | "list" | "head" | "inspect" | "pull" | "search" | "export" | "watch"
        | "monitor" => CrudClass::Read,
        "update"
        | "patch"
        | "activate"
        | "apply"
        | "approve"
        | "reapprove"
        | "authorize"
        | "commit"
        | "configure"
        | "deploy"
        | "disable"
        | "enable"
        | "edit"
        | "set"
        | "set-on"
        | "set-off"
        | "setkeyfordeletion"
        | "unsetkeyfordeletion"
        | "start"
        | "stop"
        | "pause"
        | "resume"
        | "refresh"
        | "reset"
        | "rotate"
        | "restore"
        | "renew"
        | "revoke"
        | "rename"
        | "rescue"
        | "reload"
        | "scale"
        | "reboot"
        | "soft-reboot"
        | "hard-reboot"
        | "power-on"
        | "power-off"
        | "failover"
        | "expire"
        | "rewrap"
        | "reject"
        | "end"
        | "clear" => CrudClass::Update,
        "delete" | "bulkdelete" | "remove" | "undeploy" => CrudClass::Delete,
        // authenticate, allow, deny, evaluate, notify, send, receive, wrap, unwrap,
        // ack-* (acknowledgements of lifecycle events), unknown …
        _ => CrudClass::Info,
    }
}

/// The parts of a valid action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionInfo {
    /// The emitting service, e.g. `codeengine`.
    pub service: String,
    /// The kind of resource acted on, e.g. `application`.
    pub object_type: String,
    /// The verb, e.g. `create` (for CADF actions the taxonomy path, e.g. `read/list`).
    pub verb: String,
    /// The CRUD class of the verb.
    pub crud: CrudClass,
    /// Whether the action is in the CADF taxonomy form rather than `service.objectType.verb`.
    pub cadf_form: bool,
}

/// Why an action is not valid.
pub(crate) const ACTION_RULE: &str = "must be `service.objectType.verb` (three or more non-empty dot-separated parts) or a CADF taxonomy action such as `create`, `read/list`, `authenticate` or `update/createImage`";

/// Analyse `action`; `None` when it is neither form. `target_type`/`observer_type` are
/// the `typeURI`s used to find the service of CADF-form actions.
pub fn analyse(
    action: &str,
    target_type: Option<&str>,
    observer_type: Option<&str>,
) -> Option<ActionInfo> {
    if action.is_empty() || action.bytes().any(|b| b.is_ascii_whitespace()) {
        return None;
    }
    let parts: Vec<&str> = action.split('.').collect();
    if parts.len() >= 3 && parts.iter().all(|p| !p.is_empty()) {
        let n = parts.len();
        let verb = parts[n - 1];
        return Some(ActionInfo {
            service: parts[..n - 2].join("."),
            object_type: parts[n - 2].to_owned(),
            verb: verb.to_owned(),
            crud: crud_class(verb),
            cadf_form: false,
        });
    }
    let matched = CADF_ACTIONS.iter().find(|t| action.starts_with(*t))?;
    let (verb, object) = match action.split_once('.') {
        Some((v, o)) if !o.is_empty() => (v, Some(o)),
        _ => (action, None),
    };
    let object_type = object
        .map(str::to_owned)
        .or_else(|| {
            target_type
                .and_then(|t| t.rsplit('/').next())
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "resource".to_owned());
    let service = [target_type, observer_type]
        .into_iter()
        .flatten()
        .find_map(service_from_type)
        .unwrap_or("unknown")
        .to_owned();
    let crud = match crud_class(verb) {
        CrudClass::Info => crud_class(matched),
        c => c,
    };
    Some(ActionInfo {
        service,
        object_type,
        verb: verb.to_owned(),
        crud,
        cadf_form: true,
    })
}

/// The service named by a resource `typeURI`: the second segment of CADF taxonomy types
/// (`service/compute/servers` → `compute`, `data/security/project` → `security`), the
/// first segment of Activity Tracker types (`iam-am/policy` → `iam-am`).
fn service_from_type(t: &str) -> Option<&str> {
    if t.contains(':') {
        return None; // a URL such as http://schemas.dmtf.org/…
    }
    let mut segs = t.split('/').filter(|s| !s.is_empty());
    let first = segs.next()?;
    if matches!(
        first,
        "service" | "data" | "storage" | "compute" | "network"
    ) {
        segs.next().or(Some(first))
    } else if first == "unknown" {
        None
    } else {
        Some(first)
    }
}

/// Severity derived when the event has none (DESIGN §2, issue #2):
/// reasonCode 401/403/503/507 → `critical`; other failures → `warning`; else by CRUD
/// class: delete → `critical`, update → `warning`, create/read/info → `normal`.
pub fn derive_severity(outcome: &str, crud: CrudClass, reason_code: Option<i64>) -> &'static str {
    if matches!(reason_code, Some(401 | 403 | 503 | 507)) {
        return "critical";
    }
    if outcome == "failure" {
        return "warning";
    }
    match crud {
        CrudClass::Delete => "critical",
        CrudClass::Update => "warning",
        CrudClass::Create | CrudClass::Read | CrudClass::Info => "normal",
    }
}

/// Message derived when the event has none: `<service>: <verb> <objectType> <target.name>`
/// with ` -failure` appended on failure (target name left out when unknown).
pub fn derive_message(info: &ActionInfo, target_name: Option<&str>, failure: bool) -> String {
    let mut m = format!("{}: {} {}", info.service, info.verb, info.object_type);
    if let Some(name) = target_name.filter(|n| !n.is_empty()) {
        m.push(' ');
        m.push_str(name);
    }
    if failure {
        m.push_str(" -failure");
    }
    m
}
