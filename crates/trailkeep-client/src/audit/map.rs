//! The audit map: route template + method → object type and verb.
//!
//! Owns: parsing route templates (`/projects/{id}/actions`, `{*rest}` for the remainder),
//! matching a request path to the most specific template, and the verb rules (fixed, or the first
//! key of a JSON request body). Must never: allocate on a path that no rule maps and that is
//! skipped, or accept a rule whose action the server would reject.

use http::Method;

use crate::event::check_action;

/// How the verb of an action is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verb {
    Fixed(String),
    /// The first key of the JSON object in the request body (`{"restart": {…}}` → `restart`), else
    /// the fallback.
    BodyKey {
        fallback: String,
    },
}

/// What a mapped route means: the object type acted on, the verb, and where the target id is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    object_type: String,
    verb: Verb,
    target_param: Option<String>,
    data_event: bool,
}

impl Rule {
    /// `service.<object_type>.<verb>`, e.g. `Rule::new("project", "read")`.
    pub fn new(object_type: impl Into<String>, verb: impl Into<String>) -> Self {
        Rule {
            object_type: object_type.into(),
            verb: Verb::Fixed(verb.into()),
            target_param: None,
            data_event: false,
        }
    }

    /// The verb is the first key of the request's JSON object body, as in
    /// `POST /projects/{id}/actions` with `{"restart": {}}` → `service.project.restart`. When the
    /// body is empty, not a JSON object, or its first key is not a plain word, the verb is
    /// `update`.
    pub fn body_key(object_type: impl Into<String>) -> Self {
        Rule {
            object_type: object_type.into(),
            verb: Verb::BodyKey {
                fallback: "update".into(),
            },
            target_param: None,
            data_event: false,
        }
    }

    /// For [`body_key`](Self::body_key) rules: the verb when the body names none.
    pub fn fallback_verb(mut self, verb: impl Into<String>) -> Self {
        if let Verb::BodyKey { fallback } = &mut self.verb {
            *fallback = verb.into();
        }
        self
    }

    /// Takes the target id from this path parameter (default: the last parameter of the template;
    /// without one, the target is the request path).
    pub fn target_param(mut self, name: impl Into<String>) -> Self {
        self.target_param = Some(name.into());
        self
    }

    /// Marks events of this route as data events (`dataEvent: true`).
    pub fn data_event(mut self) -> Self {
        self.data_event = true;
        self
    }
}

/// One segment of a route template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    Rest(String),
}

#[derive(Debug, Clone)]
struct Route {
    method: Method,
    template: String,
    segments: Vec<Segment>,
    rule: Rule,
    /// Index of the segment holding the target id.
    target_segment: Option<usize>,
    /// Precomputed `service.objectType.verb` for fixed verbs.
    action: Option<String>,
    /// `service.objectType.` for body-key verbs.
    action_prefix: String,
    type_uri: String,
}

/// What to do with requests no route matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unmapped {
    /// No event.
    Skip,
    /// An event with this object type and a verb from the method (`GET`/`HEAD` → `read`, `POST` →
    /// `create`, `PUT`/`PATCH` → `update`, `DELETE` → `delete`, others → the method in lower
    /// case), targeting the request path.
    Generic(String),
}

/// Maps requests to actions: `<service>.<objectType>.<verb>`, in the spirit of OpenStack's
/// audit map files.
///
/// ```
/// use http::Method;
/// use trailkeep_client::audit::{AuditMap, Rule};
///
/// let map = AuditMap::new("myservice")
///     .route(Method::GET, "/projects", Rule::new("project", "list"))
///     .route(Method::GET, "/projects/{id}", Rule::new("project", "read"))
///     .route(Method::POST, "/projects/{id}/actions", Rule::body_key("project"));
/// let m = map.resolve(&Method::GET, "/projects/p-1").unwrap();
/// assert_eq!(m.action(None), "myservice.project.read");
/// assert_eq!(m.target_id(), Some("p-1"));
/// let m = map.resolve(&Method::POST, "/projects/p-1/actions").unwrap();
/// assert_eq!(m.action(Some(br#"{"restart": {"force": true}}"#)), "myservice.project.restart");
/// ```
#[derive(Debug, Clone)]
pub struct AuditMap {
    service: String,
    routes: Vec<Route>,
    unmapped: Unmapped,
    crn_base: Option<String>,
}

impl AuditMap {
    /// A map for `service` (the first part of every action, e.g. `codeengine`). Requests that no
    /// route matches get [`Unmapped::Generic`]`("request")` events.
    ///
    /// # Panics
    ///
    /// When `service` is empty or contains whitespace.
    pub fn new(service: impl Into<String>) -> Self {
        let service = service.into();
        assert!(
            !service.is_empty() && !service.contains(char::is_whitespace),
            "an audit map's service name must be a non-empty word: {service:?}"
        );
        AuditMap {
            service,
            routes: Vec::new(),
            unmapped: Unmapped::Generic("request".into()),
            crn_base: None,
        }
    }

    /// The service name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Maps `method` + `template` (`/projects/{id}`; `{*rest}` matches the remainder).
    ///
    /// # Panics
    ///
    /// When the template is malformed (an empty parameter name, `{*rest}` not last), names an
    /// unknown `target_param`, or the action would not be `service.objectType.verb` (empty parts,
    /// a dot or whitespace in the object type or verb).
    pub fn route(mut self, method: Method, template: &str, rule: Rule) -> Self {
        let segments = parse_template(template)
            .unwrap_or_else(|e| panic!("audit map route {template:?}: {e}"));
        let target_segment = match &rule.target_param {
            Some(name) => Some(
                segments
                    .iter()
                    .position(|s| matches!(s, Segment::Param(p) | Segment::Rest(p) if p == name))
                    .unwrap_or_else(|| {
                        panic!("audit map route {template:?}: no parameter named {name:?}")
                    }),
            ),
            None => segments
                .iter()
                .rposition(|s| matches!(s, Segment::Param(_) | Segment::Rest(_))),
        };
        check_word(&rule.object_type, "object type", template);
        let action_prefix = format!("{}.{}.", self.service, rule.object_type);
        let action = match &rule.verb {
            Verb::Fixed(v) => {
                check_word(v, "verb", template);
                Some(format!("{action_prefix}{v}"))
            }
            Verb::BodyKey { fallback } => {
                check_word(fallback, "fallback verb", template);
                None
            }
        };
        let probe = action
            .clone()
            .unwrap_or_else(|| format!("{action_prefix}x"));
        if let Err(e) = check_action(&probe) {
            panic!("audit map route {template:?}: {e}");
        }
        let type_uri = format!("{}/{}", self.service, rule.object_type);
        self.routes.push(Route {
            method,
            template: template.to_string(),
            segments,
            rule,
            target_segment,
            action,
            action_prefix,
            type_uri,
        });
        // Most specific first: more literal segments, then more segments, then no `{*rest}`.
        self.routes.sort_by_key(|r| {
            let literals = r
                .segments
                .iter()
                .filter(|s| matches!(s, Segment::Literal(_)))
                .count();
            let rest = r.segments.iter().any(|s| matches!(s, Segment::Rest(_)));
            (
                std::cmp::Reverse(literals),
                std::cmp::Reverse(r.segments.len()),
                rest,
            )
        });
        self
    }

    /// What to do with requests no route matches (default `Unmapped::Generic("request")`).
    pub fn unmapped(mut self, unmapped: Unmapped) -> Self {
        if let Unmapped::Generic(object) = &unmapped {
            check_word(object, "object type", "(unmapped)");
        }
        self.unmapped = unmapped;
        self
    }

    /// The first eight parts of the service instance's CRN,
    /// `crn:v1:<cname>:<ctype>:<service>:<location>:a/<account>:<instance>`. Targets become
    /// `<crn_base>:<objectType>:<id>` and events carry `logSourceCRN = <crn_base>::`, which selects
    /// the account and location in Trailkeep.
    ///
    /// # Panics
    ///
    /// When `crn_base` does not start with `crn:` or does not have eight parts.
    pub fn crn_base(mut self, crn_base: impl Into<String>) -> Self {
        let crn_base = crn_base.into();
        assert!(
            crn_base.starts_with("crn:") && crn_base.split(':').count() == 8,
            "crn_base must be crn:v1:<cname>:<ctype>:<service>:<location>:<scope>:<instance>: {crn_base:?}"
        );
        self.crn_base = Some(crn_base);
        self
    }

    /// The CRN base, if set.
    pub fn crn(&self) -> Option<&str> {
        self.crn_base.as_deref()
    }

    /// The rule for a request, or `None` when no route matches and unmapped requests are skipped.
    pub fn resolve<'a>(&'a self, method: &Method, path: &'a str) -> Option<Match<'a>> {
        for route in &self.routes {
            if route.method != *method {
                continue;
            }
            if let Some(target) = match_path(&route.segments, route.target_segment, path) {
                return Some(Match {
                    kind: MatchKind::Route(route),
                    target: target.filter(|t| !t.is_empty()),
                    path,
                });
            }
        }
        match &self.unmapped {
            Unmapped::Skip => None,
            Unmapped::Generic(object) => Some(Match {
                kind: MatchKind::Generic {
                    service: &self.service,
                    object,
                    verb: generic_verb(method),
                },
                target: None,
                path,
            }),
        }
    }
}

fn check_word(word: &str, what: &str, template: &str) {
    assert!(
        is_word(word),
        "audit map route {template:?}: the {what} {word:?} must be non-empty, without dots or whitespace"
    );
}

/// A verb or object type: non-empty, at most 64 characters, letters, digits, `-`, `_`, `/`.
pub(crate) fn is_word(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '/'))
}

fn generic_verb(method: &Method) -> &'static str {
    match *method {
        Method::GET | Method::HEAD => "read",
        Method::POST => "create",
        Method::PUT | Method::PATCH => "update",
        Method::DELETE => "delete",
        Method::OPTIONS => "options",
        Method::TRACE => "trace",
        Method::CONNECT => "connect",
        _ => "unknown",
    }
}

#[derive(Debug, Clone, Copy)]
enum MatchKind<'a> {
    Route(&'a Route),
    Generic {
        service: &'a str,
        object: &'a str,
        verb: &'static str,
    },
}

/// A request matched to a rule.
#[derive(Debug, Clone, Copy)]
pub struct Match<'a> {
    kind: MatchKind<'a>,
    target: Option<&'a str>,
    path: &'a str,
}

impl Match<'_> {
    /// The action, given the request body when the verb comes from it.
    pub fn action(&self, body: Option<&[u8]>) -> String {
        match self.kind {
            MatchKind::Route(r) => match (&r.action, &r.rule.verb) {
                (Some(a), _) => a.clone(),
                (None, Verb::BodyKey { fallback }) => {
                    let verb = body
                        .and_then(first_key)
                        .filter(|k| is_word(k))
                        .unwrap_or_else(|| fallback.clone());
                    format!("{}{verb}", r.action_prefix)
                }
                (None, Verb::Fixed(v)) => format!("{}{v}", r.action_prefix),
            },
            MatchKind::Generic {
                service,
                object,
                verb,
            } => format!("{service}.{object}.{verb}"),
        }
    }

    /// Whether the action needs the request body.
    pub fn needs_body(&self) -> bool {
        matches!(self.kind, MatchKind::Route(r) if matches!(r.rule.verb, Verb::BodyKey { .. }))
    }

    /// The object type.
    pub fn object_type(&self) -> &str {
        match self.kind {
            MatchKind::Route(r) => &r.rule.object_type,
            MatchKind::Generic { object, .. } => object,
        }
    }

    /// `<service>/<objectType>`.
    pub fn type_uri(&self) -> String {
        match self.kind {
            MatchKind::Route(r) => r.type_uri.clone(),
            MatchKind::Generic {
                service, object, ..
            } => format!("{service}/{object}"),
        }
    }

    /// The value of the target parameter, if the template has one.
    pub fn target_id(&self) -> Option<&str> {
        self.target
    }

    /// The request path.
    pub fn path(&self) -> &str {
        self.path
    }

    /// The matched template (`None` for unmapped requests).
    pub fn template(&self) -> Option<&str> {
        match self.kind {
            MatchKind::Route(r) => Some(&r.template),
            MatchKind::Generic { .. } => None,
        }
    }

    /// Whether events of this route are data events.
    pub fn data_event(&self) -> bool {
        matches!(self.kind, MatchKind::Route(r) if r.rule.data_event)
    }
}

fn parse_template(t: &str) -> Result<Vec<Segment>, String> {
    if !t.starts_with('/') {
        return Err("must start with '/'".into());
    }
    let parts: Vec<&str> = t.split('/').filter(|s| !s.is_empty()).collect();
    let mut out = Vec::with_capacity(parts.len());
    for (i, p) in parts.iter().enumerate() {
        if let Some(inner) = p.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            if let Some(name) = inner.strip_prefix('*') {
                if name.is_empty() {
                    return Err("an empty parameter name".into());
                }
                if i + 1 != parts.len() {
                    return Err(format!("{{*{name}}} must be the last segment"));
                }
                out.push(Segment::Rest(name.to_string()));
            } else {
                if inner.is_empty() {
                    return Err("an empty parameter name".into());
                }
                out.push(Segment::Param(inner.to_string()));
            }
        } else if p.contains(['{', '}']) {
            return Err(format!("segment {p:?} mixes text and a parameter"));
        } else {
            out.push(Segment::Literal((*p).to_string()));
        }
    }
    Ok(out)
}

/// Matches `path` against a template; on a match returns the target segment's text (if any).
fn match_path<'p>(
    segments: &[Segment],
    target: Option<usize>,
    path: &'p str,
) -> Option<Option<&'p str>> {
    let mut found = None;
    let mut rest_of = path;
    let mut parts = path.split('/').filter(|s| !s.is_empty());
    for (i, seg) in segments.iter().enumerate() {
        match seg {
            Segment::Rest(_) => {
                // The remainder after the segments matched so far.
                let consumed: usize = path.len() - rest_of.len();
                let remainder = path[consumed..].trim_start_matches('/');
                if target == Some(i) {
                    found = Some(remainder);
                }
                return Some(found);
            }
            Segment::Literal(l) => {
                let p = parts.next()?;
                if p != l {
                    return None;
                }
                rest_of = after(rest_of, p);
            }
            Segment::Param(_) => {
                let p = parts.next()?;
                if target == Some(i) {
                    found = Some(p);
                }
                rest_of = after(rest_of, p);
            }
        }
    }
    if parts.next().is_some() {
        return None;
    }
    Some(found)
}

/// The text of `s` after the first occurrence of segment `seg`.
fn after<'a>(s: &'a str, seg: &str) -> &'a str {
    let trimmed = s.trim_start_matches('/');
    &trimmed[seg.len()..]
}

/// The first key of a JSON object, without building the object.
fn first_key(body: &[u8]) -> Option<String> {
    use serde::de::{Deserializer as _, IgnoredAny, MapAccess, Visitor};
    struct First;
    impl<'de> Visitor<'de> for First {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let first = map.next_key::<String>()?;
            if first.is_some() {
                map.next_value::<IgnoredAny>()?;
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            }
            Ok(first)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    de.deserialize_map(First).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> AuditMap {
        AuditMap::new("myservice")
            .route(Method::GET, "/projects", Rule::new("project", "list"))
            .route(Method::POST, "/projects", Rule::new("project", "create"))
            .route(Method::GET, "/projects/{id}", Rule::new("project", "read"))
            .route(
                Method::GET,
                "/projects/search",
                Rule::new("project", "search"),
            )
            .route(
                Method::POST,
                "/projects/{id}/actions",
                Rule::body_key("project"),
            )
            .route(
                Method::GET,
                "/projects/{id}/applications/{app}",
                Rule::new("application", "read"),
            )
            .route(
                Method::GET,
                "/projects/{id}/applications/{app}/logs",
                Rule::new("application", "read")
                    .target_param("app")
                    .data_event(),
            )
            .route(Method::GET, "/files/{*path}", Rule::new("file", "read"))
    }

    fn check(
        method: Method,
        path: &str,
        body: Option<&[u8]>,
        expect: Option<(&str, Option<&str>)>,
    ) {
        let m = map();
        let got = m
            .resolve(&method, path)
            .filter(|m| m.template().is_some())
            .map(|m| (m.action(body), m.target_id().map(str::to_string)));
        let expect = expect.map(|(a, t)| (a.to_string(), t.map(str::to_string)));
        assert_eq!(got, expect, "{method} {path}");
    }

    #[test]
    fn routes_map_to_actions_and_targets() {
        check(
            Method::GET,
            "/projects",
            None,
            Some(("myservice.project.list", None)),
        );
        check(
            Method::GET,
            "/projects/",
            None,
            Some(("myservice.project.list", None)),
        );
        check(
            Method::POST,
            "/projects",
            None,
            Some(("myservice.project.create", None)),
        );
        check(
            Method::GET,
            "/projects/p1",
            None,
            Some(("myservice.project.read", Some("p1"))),
        );
        check(
            Method::GET,
            "/projects/search",
            None,
            Some(("myservice.project.search", None)),
        );
        check(
            Method::GET,
            "/projects/p1/applications/web",
            None,
            Some(("myservice.application.read", Some("web"))),
        );
        check(
            Method::GET,
            "/projects/p1/applications/web/logs",
            None,
            Some(("myservice.application.read", Some("web"))),
        );
        check(
            Method::GET,
            "/files/a/b/c.txt",
            None,
            Some(("myservice.file.read", Some("a/b/c.txt"))),
        );
        check(Method::DELETE, "/projects/p1", None, None);
        check(Method::GET, "/projects/p1/other", None, None);
    }

    #[test]
    fn the_verb_of_an_action_route_is_the_first_body_key() {
        let restart = br#"{"restart": {"force": true}, "a": 1}"#;
        check(
            Method::POST,
            "/projects/p1/actions",
            Some(restart),
            Some(("myservice.project.restart", Some("p1"))),
        );
        for fallback in [&b""[..], b"[1]", b"{}", b"{\"has space\": 1}", b"not json"] {
            check(
                Method::POST,
                "/projects/p1/actions",
                Some(fallback),
                Some(("myservice.project.update", Some("p1"))),
            );
        }
    }

    #[test]
    fn unmapped_requests_get_a_generic_action_or_none() {
        let m = map();
        let g = m.resolve(&Method::DELETE, "/nowhere/x").unwrap();
        assert_eq!(g.action(None), "myservice.request.delete");
        assert_eq!(g.target_id(), None);
        let m = map().unmapped(Unmapped::Skip);
        assert!(m.resolve(&Method::DELETE, "/nowhere/x").is_none());
    }

    #[test]
    #[should_panic(expected = "without dots")]
    fn a_dotted_verb_is_refused() {
        let _ = AuditMap::new("s").route(Method::GET, "/x", Rule::new("a", "b.c"));
    }

    #[test]
    #[should_panic(expected = "no parameter named")]
    fn an_unknown_target_param_is_refused() {
        let _ = AuditMap::new("s").route(
            Method::GET,
            "/x/{id}",
            Rule::new("a", "b").target_param("nope"),
        );
    }
}
