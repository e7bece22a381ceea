//! Kubernetes `audit.k8s.io/v1` events → CADF events.
//!
//! Owns: the mapping table below. Must never: keep a non-final stage (the input
//! splitter already skips `RequestReceived` and `ResponseStarted`), or invent an
//! account (the event goes to the writing key's default account).
//!
//! | Kubernetes | CADF / Activity Tracker |
//! |---|---|
//! | `auditID` | `id` and `correlationId` (a webhook retry is then a duplicate) |
//! | `stageTimestamp` (else `requestReceivedTimestamp`) | `eventTime` |
//! | `verb` + `objectRef.resource[/subresource]` | `action` = `<prefix>.<resource>[-<subresource>].<verb>`; verbs: `get`→`read`, `list`→`list`, `watch`→`watch`, `create`→`create`, `update`/`patch`→`update`, `delete`→`delete`, `deletecollection`→`bulkdelete`; non-resource requests use the resource `nonresource` and the lower-case HTTP method mapped the same way (`post`→`create`, `put`→`update`) |
//! | `user.username`, `user.uid`, `user.groups` | `initiator.name`, `initiator.id` (uid, else username), `initiator.groups`; `typeURI` `service/security/account/serviceid` for `system:serviceaccount:…`, else `service/security/account/user` |
//! | `impersonatedUser` | `initiator.impersonatedUser` |
//! | `sourceIPs[0]`, `userAgent` | `initiator.host.address` (+ `addressType` IPv4/IPv6), `initiator.host.agent` |
//! | `objectRef` | `target`: `id` = `[<apiGroup>/][namespaces/<ns>/]<resource>[/<name>][/<subresource>]`, `name` = name, else namespace, else resource; `typeURI` = `<prefix>/<resource>`; `namespace`, `apiGroup`, `apiVersion`, `uid` kept |
//! | `responseStatus.code` | `outcome` (`success` for 1xx–3xx, else `failure`; no code: `failure` for stage `Panic`, else `unknown`) and `reason.reasonCode`; `responseStatus.reason` (else the HTTP reason phrase) → `reason.reasonType`; `responseStatus.message` → `reason.reasonForFailure` on failure |
//! | `requestObject`, `responseObject` | `requestData`, `responseData` |
//! | `level`, `stage`, `verb`, `requestURI`, `sourceIPs`, `annotations` | kept under `kubernetes` |
//! | — | `observer` = `{"name": "kube-apiserver"}` |

use crate::error::FieldError;
use crate::input::kind_name;
use serde_json::{Map, Value, json};

/// Map one Kubernetes audit event to a CADF event value (not yet normalised).
pub(crate) fn to_cadf(value: Value, prefix: &str) -> Result<Value, Vec<FieldError>> {
    let Value::Object(k) = value else {
        return Err(vec![FieldError::new(
            "",
            format!(
                "a Kubernetes audit event must be an object, found {}",
                kind_name(&value)
            ),
        )]);
    };
    let mut errs = Vec::new();
    let s = |key: &str| k.get(key).and_then(Value::as_str).filter(|s| !s.is_empty());
    let audit_id = s("auditID");
    if audit_id.is_none() {
        errs.push(FieldError::new(
            "auditID",
            "is required (a non-empty string)",
        ));
    }
    let verb = s("verb");
    if verb.is_none() {
        errs.push(FieldError::new("verb", "is required (a non-empty string)"));
    }
    let time = s("stageTimestamp").or_else(|| s("requestReceivedTimestamp"));
    if time.is_none() {
        errs.push(FieldError::new(
            "stageTimestamp",
            "is required (or requestReceivedTimestamp)",
        ));
    }
    let user = k.get("user").and_then(Value::as_object);
    let username = user
        .and_then(|u| u.get("username"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    if username.is_none() {
        errs.push(FieldError::new(
            "user.username",
            "is required (a non-empty string)",
        ));
    }
    let object_ref = match k.get("objectRef") {
        None | Some(Value::Null) => None,
        Some(Value::Object(o)) => Some(o),
        Some(other) => {
            errs.push(FieldError::new(
                "objectRef",
                format!("must be an object, found {}", kind_name(other)),
            ));
            None
        }
    };
    let status = match k.get("responseStatus") {
        None | Some(Value::Null) => None,
        Some(Value::Object(o)) => Some(o),
        Some(other) => {
            errs.push(FieldError::new(
                "responseStatus",
                format!("must be an object, found {}", kind_name(other)),
            ));
            None
        }
    };
    let (Some(audit_id), Some(verb), Some(time), Some(username)) = (audit_id, verb, time, username)
    else {
        return Err(errs);
    };
    if !errs.is_empty() {
        return Err(errs);
    }

    let o = |key: &str| {
        object_ref
            .and_then(|o| o.get(key))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let request_uri = s("requestURI").unwrap_or("");
    // objectRef is documented as absent for list requests: fall back to the URI.
    let from_uri = if object_ref.is_none() {
        parse_resource_uri(request_uri)
    } else {
        UriRef::default()
    };
    let resource = o("resource").or(from_uri.resource).map(sanitize);
    let subresource = o("subresource").or(from_uri.subresource).map(sanitize);
    let name = o("name").or(from_uri.name);
    let namespace = o("namespace").or(from_uri.namespace);
    let api_group = o("apiGroup").or(from_uri.group);

    let mapped_verb = map_verb(verb);
    let prefix = if prefix.is_empty() {
        super::normalize::DEFAULT_K8S_SERVICE_PREFIX
    } else {
        prefix
    };
    let object_type = match (&resource, &subresource) {
        (Some(r), Some(sub)) => format!("{r}-{sub}"),
        (Some(r), None) => r.clone(),
        (None, _) => "nonresource".to_owned(),
    };
    let action = format!("{prefix}.{object_type}.{mapped_verb}");

    // initiator
    let mut initiator = Map::new();
    let uid = user
        .and_then(|u| u.get("uid"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    initiator.insert(
        "id".into(),
        Value::String(uid.unwrap_or(username).to_owned()),
    );
    initiator.insert("name".into(), Value::String(username.to_owned()));
    let type_uri = if username.starts_with("system:serviceaccount:") {
        "service/security/account/serviceid"
    } else {
        "service/security/account/user"
    };
    initiator.insert("typeURI".into(), Value::String(type_uri.into()));
    if let Some(groups) = user.and_then(|u| u.get("groups")).filter(|g| g.is_array()) {
        initiator.insert("groups".into(), groups.clone());
    }
    if let Some(imp) = k.get("impersonatedUser").filter(|v| v.is_object()) {
        initiator.insert("impersonatedUser".into(), imp.clone());
    }
    let source_ips = k.get("sourceIPs").and_then(Value::as_array);
    let mut host = Map::new();
    if let Some(ip) = source_ips
        .and_then(|ips| ips.first())
        .and_then(Value::as_str)
    {
        host.insert("address".into(), Value::String(ip.to_owned()));
        let kind = if ip.contains(':') { "IPv6" } else { "IPv4" };
        host.insert("addressType".into(), Value::String(kind.into()));
    }
    if let Some(agent) = s("userAgent") {
        host.insert("agent".into(), Value::String(agent.to_owned()));
    }
    if !host.is_empty() {
        initiator.insert("host".into(), Value::Object(host));
    }

    // target
    let mut target = Map::new();
    let target_id = match &resource {
        Some(r) => {
            let mut id = String::new();
            if let Some(g) = api_group {
                id.push_str(g);
                id.push('/');
            }
            if let Some(ns) = namespace {
                id.push_str("namespaces/");
                id.push_str(ns);
                id.push('/');
            }
            id.push_str(r);
            if let Some(n) = name {
                id.push('/');
                id.push_str(n);
            }
            if let Some(sub) = &subresource {
                id.push('/');
                id.push_str(sub);
            }
            id
        }
        None => request_uri.split('?').next().unwrap_or("").to_owned(),
    };
    let target_id = if target_id.is_empty() {
        "unknown".to_owned()
    } else {
        target_id
    };
    let target_name = name
        .or(namespace)
        .map(str::to_owned)
        .or_else(|| resource.clone())
        .unwrap_or_else(|| target_id.clone());
    target.insert("id".into(), Value::String(target_id));
    target.insert("name".into(), Value::String(target_name));
    target.insert(
        "typeURI".into(),
        Value::String(format!("{prefix}/{object_type}")),
    );
    for (from, to) in [
        ("namespace", "namespace"),
        ("apiGroup", "apiGroup"),
        ("apiVersion", "apiVersion"),
        ("uid", "uid"),
    ] {
        if let Some(v) = o(from) {
            target.insert(to.into(), Value::String(v.to_owned()));
        }
    }

    // outcome and reason
    let code = status.and_then(|st| st.get("code")).and_then(Value::as_i64);
    let stage = s("stage").unwrap_or("");
    let outcome = match code {
        Some(c) if (100..400).contains(&c) => "success",
        Some(_) => "failure",
        None if stage == "Panic" => "failure",
        None => "unknown",
    };
    let mut event = Map::new();
    if code.is_some() || outcome == "failure" {
        let code = code.unwrap_or(500);
        let mut reason = Map::new();
        reason.insert("reasonCode".into(), Value::from(code));
        let status_reason = status
            .and_then(|st| st.get("reason"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        reason.insert(
            "reasonType".into(),
            Value::String(status_reason.unwrap_or(reason_phrase(code)).to_owned()),
        );
        if outcome == "failure"
            && let Some(msg) = status
                .and_then(|st| st.get("message"))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        {
            reason.insert("reasonForFailure".into(), Value::String(msg.to_owned()));
        }
        event.insert("reason".into(), Value::Object(reason));
    }

    let mut kube = Map::new();
    for key in [
        "level",
        "stage",
        "verb",
        "requestURI",
        "sourceIPs",
        "annotations",
    ] {
        if let Some(v) = k.get(key).filter(|v| !v.is_null()) {
            kube.insert(key.into(), v.clone());
        }
    }

    event.insert("id".into(), Value::String(audit_id.to_owned()));
    event.insert("correlationId".into(), Value::String(audit_id.to_owned()));
    event.insert("eventTime".into(), Value::String(time.to_owned()));
    event.insert("action".into(), Value::String(action));
    event.insert("outcome".into(), Value::String(outcome.into()));
    event.insert("initiator".into(), Value::Object(initiator));
    event.insert("target".into(), Value::Object(target));
    event.insert("observer".into(), json!({"name": "kube-apiserver"}));
    if let Some(req) = k.get("requestObject").filter(|v| !v.is_null()) {
        event.insert("requestData".into(), req.clone());
    }
    if let Some(resp) = k.get("responseObject").filter(|v| !v.is_null()) {
        event.insert("responseData".into(), resp.clone());
    }
    event.insert("kubernetes".into(), Value::Object(kube));
    Ok(Value::Object(event))
}

/// Kubernetes (and HTTP) verb → Activity Tracker verb.
fn map_verb(verb: &str) -> String {
    let lower = verb.to_ascii_lowercase();
    match lower.as_str() {
        "get" => "read".into(),
        "update" | "patch" | "put" => "update".into(),
        "post" => "create".into(),
        "deletecollection" => "bulkdelete".into(),
        _ => sanitize(&lower),
    }
}

/// Keep an action part free of dots and odd characters.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn reason_phrase(code: i64) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        c if (200..300).contains(&c) => "Success",
        c if (400..500).contains(&c) => "Client Error",
        _ => "Server Error",
    }
}

/// The resource parts of a Kubernetes API path.
#[derive(Debug, Default)]
struct UriRef<'a> {
    group: Option<&'a str>,
    namespace: Option<&'a str>,
    resource: Option<&'a str>,
    name: Option<&'a str>,
    subresource: Option<&'a str>,
}

/// Parse `/api/v1/[namespaces/<ns>/]<resource>[/<name>[/<sub>]]` and the `/apis/<group>/<version>/…` form.
fn parse_resource_uri(uri: &str) -> UriRef<'_> {
    let path = uri.split('?').next().unwrap_or("");
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, rest) = match segs.as_slice() {
        ["api", _version, rest @ ..] => (None, rest),
        ["apis", group, _version, rest @ ..] => (Some(*group), rest),
        _ => return UriRef::default(),
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(*ns), rest),
        _ => (None, rest),
    };
    UriRef {
        group,
        namespace,
        resource: rest.first().copied(),
        name: rest.get(1).copied(),
        subresource: rest.get(2).copied(),
    }
}
