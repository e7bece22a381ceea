//! The routing decision: pure, compiled once per configuration change, evaluated once per event.
//!
//! For an event of location `l` (the location segment of its `logSourceCRN`, `global` when
//! empty) and, when `l` has an alias, its alias `a`:
//! * every route is evaluated on its own; within a route the first rule with a location that
//!   matches `l` or `a` wins and adds its targets;
//! * a rule location matches exactly, as a location family (`eu-de` matches `eu-de-1`, not
//!   `eu-des`), `global` matches events without a location, and `*` matches every event;
//! * an event that no route handled goes to the default targets; with none, it is dropped (and
//!   reported by the caller).
//!
//! Targets are numbered: `local` is a flag, remote targets are bits of a `u64` (at most
//! [`super::model::MAX_TARGETS`] targets exist).

use std::collections::HashMap;

use super::model::{Route, Settings, Target};

/// Where one event goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Decision {
    /// To this instance's ledger.
    pub local: bool,
    /// Bit `i`: to remote target `i` of [`Table::remote_ids`].
    pub remote: u64,
    /// Whether a route (not the default) handled it.
    pub routed: bool,
}

impl Decision {
    /// Goes nowhere: dropped.
    pub fn is_dropped(&self) -> bool {
        !self.local && self.remote == 0
    }
}

#[derive(Debug, Clone)]
enum Matcher {
    Any,
    /// Exact or family prefix (also how `global` is matched: nothing starts with `global-`).
    Location(String),
}

impl Matcher {
    fn matches(&self, location: &str) -> bool {
        match self {
            Matcher::Any => true,
            Matcher::Location(p) => {
                location == p
                    || (location.len() > p.len()
                        && location.starts_with(p.as_str())
                        && location.as_bytes()[p.len()] == b'-')
            }
        }
    }
}

#[derive(Debug, Clone)]
struct CompiledRule {
    matchers: Vec<Matcher>,
    local: bool,
    remote: u64,
}

/// The compiled routing configuration.
#[derive(Debug, Clone, Default)]
pub struct Table {
    routes: Vec<Vec<CompiledRule>>,
    default_local: bool,
    default_remote: u64,
    aliases: HashMap<String, String>,
    /// Remote target ids, by bit.
    remote_ids: Vec<String>,
    /// Whether any configuration exists at all: without, everything is local.
    configured: bool,
}

impl Table {
    /// Compiles targets, routes and settings. Unknown target ids (which validation refuses) are
    /// ignored.
    pub fn compile(targets: &[Target], routes: &[Route], settings: &Settings) -> Table {
        let mut remote_ids = Vec::new();
        let mut bits: HashMap<&str, Option<u32>> = HashMap::new();
        for t in targets {
            if t.kind.is_local() {
                bits.insert(&t.id, None);
            } else if remote_ids.len() < 64 {
                bits.insert(&t.id, Some(remote_ids.len() as u32));
                remote_ids.push(t.id.clone());
            }
        }
        let dest = |ids: &[String]| -> (bool, u64) {
            let mut local = false;
            let mut remote = 0u64;
            for id in ids {
                match bits.get(id.as_str()) {
                    Some(None) => local = true,
                    Some(Some(bit)) => remote |= 1 << bit,
                    None => {}
                }
            }
            (local, remote)
        };
        let compiled = routes
            .iter()
            .map(|r| {
                r.rules
                    .iter()
                    .map(|rule| {
                        let (local, remote) = dest(&rule.target_ids);
                        CompiledRule {
                            matchers: rule
                                .locations
                                .iter()
                                .map(|l| {
                                    if l == "*" {
                                        Matcher::Any
                                    } else {
                                        Matcher::Location(l.clone())
                                    }
                                })
                                .collect(),
                            local,
                            remote,
                        }
                    })
                    .collect()
            })
            .collect();
        let (default_local, default_remote) = dest(&settings.effective_default_targets());
        Table {
            routes: compiled,
            default_local,
            default_remote,
            aliases: settings
                .location_aliases
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            remote_ids,
            configured: !routes.is_empty() || settings.default_targets.is_some(),
        }
    }

    /// The ids of the remote targets, in bit order.
    pub fn remote_ids(&self) -> &[String] {
        &self.remote_ids
    }

    /// Whether this table sends anything anywhere but `local` (without routes and default
    /// targets, every event is local, exactly as before routing existed).
    pub fn is_trivial(&self) -> bool {
        !self.configured
    }

    /// Where an event of `location` goes.
    pub fn decide(&self, location: &str) -> Decision {
        if !self.configured {
            return Decision {
                local: true,
                remote: 0,
                routed: false,
            };
        }
        let alias = self.aliases.get(location).map(String::as_str);
        let mut d = Decision::default();
        for route in &self.routes {
            for rule in route {
                let hit = rule
                    .matchers
                    .iter()
                    .any(|m| m.matches(location) || alias.is_some_and(|a| m.matches(a)));
                if hit {
                    d.local |= rule.local;
                    d.remote |= rule.remote;
                    d.routed = true;
                    break;
                }
            }
        }
        if !d.routed {
            d.local = self.default_local;
            d.remote = self.default_remote;
        }
        d
    }
}

/// The location segment of a stored `logSourceCRN` (`crn:v1:<cname>:<ctype>:<service>:<location>:…`),
/// `global` when empty or absent. Stored CRNs are normalised, so this only splits.
pub fn location_of(crn: Option<&str>) -> &str {
    crn.and_then(|c| c.split(':').nth(5))
        .filter(|l| !l.is_empty())
        .unwrap_or("global")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::model::{Rule, TargetKind};

    fn target(id: &str, local: bool) -> Target {
        Target {
            id: id.into(),
            name: id.into(),
            kind: if local {
                TargetKind::Local
            } else {
                TargetKind::Webhook {
                    url: "http://h".into(),
                    secret: "s".repeat(16),
                }
            },
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    fn route(rules: &[(&[&str], &[&str])]) -> Route {
        Route {
            id: "r".into(),
            name: "r".into(),
            rules: rules
                .iter()
                .map(|(l, t)| Rule {
                    locations: l.iter().map(|s| s.to_string()).collect(),
                    target_ids: t.iter().map(|s| s.to_string()).collect(),
                })
                .collect(),
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    /// `check(table, location, expected)`: expected is a list of target ids, or `dropped`.
    fn check(table: &Table, location: &str, expected: &str) {
        let d = table.decide(location);
        let mut got: Vec<&str> = Vec::new();
        if d.local {
            got.push("local");
        }
        for (i, id) in table.remote_ids().iter().enumerate() {
            if d.remote & (1 << i) != 0 {
                got.push(id);
            }
        }
        let got = if got.is_empty() {
            "dropped".to_string()
        } else {
            got.join(",")
        };
        assert_eq!(got, expected, "location {location}");
    }

    #[test]
    fn without_configuration_everything_is_local() {
        let t = Table::compile(&[target("local", true)], &[], &Settings::default());
        assert!(t.is_trivial());
        check(&t, "us-south", "local");
        check(&t, "global", "local");
    }

    #[test]
    fn first_rule_wins_within_a_route_and_routes_add_up() {
        let targets = [
            target("local", true),
            target("jp", false),
            target("eu", false),
            target("siem", false),
        ];
        let residency = route(&[
            (&["us-south", "global"], &["local"]),
            (&["jp-tok"], &["jp"]),
            (&["eu-de"], &["eu"]),
            (&["*"], &["local"]),
        ]);
        let siem = route(&[(&["eu-de-2"], &[]), (&["us", "eu"], &["siem"])]);
        let mut settings = Settings {
            default_targets: Some(vec![]),
            ..Default::default()
        };
        settings
            .location_aliases
            .insert("ap-south".into(), "jp-tok".into());
        let t = Table::compile(&targets, &[residency, siem.clone()], &settings);
        check(&t, "us-south", "local,siem");
        check(&t, "global", "local");
        check(&t, "jp-tok", "jp");
        check(&t, "ap-south", "jp");
        check(&t, "eu-de-1", "eu,siem");
        check(&t, "eu-des", "local,siem"); // not eu-de, but of the eu family
        // eu-de-2 is stopped by the first rule of the SIEM route (which names no target).
        check(&t, "eu-de-2", "eu");
        check(&t, "br-sao", "local");
        // Only the SIEM route: what it does not handle has no default target.
        let t = Table::compile(&targets, &[siem], &settings);
        check(&t, "br-sao", "dropped");
        check(&t, "us-east", "siem");
        settings.default_targets = None;
        let t = Table::compile(&targets, &[route(&[(&["jp-tok"], &["jp"])])], &settings);
        check(&t, "br-sao", "local");
        check(&t, "ap-south", "jp");
    }

    #[test]
    fn the_location_comes_from_the_crn() {
        assert_eq!(
            location_of(Some("crn:v1:bluemix:public:codeengine:eu-de:a/acme:p::")),
            "eu-de"
        );
        assert_eq!(
            location_of(Some("crn:v1:trailkeep:public:trailkeep::a/acme:::")),
            "global"
        );
        assert_eq!(location_of(None), "global");
    }
}
