//! A realistic, deterministic stream of audit events: the data set behind `serve --demo` and the load
//! that `trailkeep bench ingest` sends.
//!
//! The events imitate what real emitters send (DESIGN §1): Code Engine projects, applications, jobs,
//! builds, secrets and pods; container-registry images and namespaces; key-management keys; an ML-ops
//! platform's deployments and pipelines; IAM logins. Several accounts and regions, mostly successes,
//! failures with HTTP reason codes and a reason, and multi-service requests that share one
//! `correlationId` (an application create that triggers a build and an image push).
//!
//! Pure: the caller passes the clock (`end_unix`) and a seed; the same inputs give the same events.

use serde_json::{Value, json};

/// A small deterministic generator (SplitMix64): reproducible demo data without a dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn uuid(&mut self) -> String {
        let a = self.next_u64();
        let b = self.next_u64();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | (b >> 48) & 0x3fff,
            b & 0xffff_ffff_ffff
        )
    }
}

struct Account {
    id: &'static str,
    users: &'static [(&'static str, &'static str)],
    regions: &'static [&'static str],
}

const ACCOUNTS: &[Account] = &[
    Account {
        id: "a1b2c3d4e5f60718293a4b5c6d7e8f90",
        users: &[
            ("IBMid-6640012ABC", "ada.lovelace@acme.example"),
            ("IBMid-6640034DEF", "grace.hopper@acme.example"),
            (
                "iam-ServiceId-5a1e2f3b-9c8d-4e7f-a6b5-c4d3e2f1a0b9",
                "ci-pipeline",
            ),
        ],
        regions: &["us-south", "us-east", "eu-de"],
    },
    Account {
        id: "f0e1d2c3b4a5968778695a4b3c2d1e0f",
        users: &[
            ("IBMid-2700098XYZ", "linus.t@globex.example"),
            ("IBMid-2700076UVW", "margaret.h@globex.example"),
        ],
        regions: &["eu-de", "eu-gb"],
    },
    Account {
        id: "0123456789abcdef0123456789abcdef",
        users: &[
            ("IBMid-3100055KLM", "kenji.sato@initech.example"),
            (
                "iam-ServiceId-0f9e8d7c-6b5a-4c3d-2e1f-0a9b8c7d6e5f",
                "nightly-retrain",
            ),
        ],
        regions: &["jp-tok", "ap-south", "au-syd"],
    },
];

const AGENTS: &[&str] = &[
    "ibmcloud-cli/2.30.0 (darwin; arm64)",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/537.36 Chrome/126.0 Safari/537.36",
    "kubectl/v1.30.2 (linux/amd64) kubernetes/39683505",
    "terraform-provider-ibm/1.67.0",
    "Go-http-client/2.0",
];

const FAILURES: &[(u64, &str, &str)] = &[
    (
        400,
        "Bad Request",
        "The request body is not valid: field 'image' must be a container image reference",
    ),
    (401, "Unauthorized", "The provided IAM token is expired"),
    (
        403,
        "Forbidden",
        "The user does not have the required IAM role 'Writer' on the resource",
    ),
    (
        404,
        "Not Found",
        "The resource does not exist or was already deleted",
    ),
    (
        409,
        "Conflict",
        "A resource with the same name already exists in this project",
    ),
    (
        429,
        "Too Many Requests",
        "The request rate limit for this account was exceeded",
    ),
    (
        500,
        "Internal Server Error",
        "An unexpected error occurred while reconciling the resource",
    ),
    (
        503,
        "Service Unavailable",
        "The regional control plane is temporarily unavailable",
    ),
];

/// One kind of action a service emits, with its target type and whether it is a data event.
struct Kind {
    service: &'static str,
    object: &'static str,
    verb: &'static str,
    type_uri: &'static str,
    data_event: bool,
    weight: u64,
}

#[rustfmt::skip]
const KINDS: &[Kind] = &[
    Kind { service: "codeengine", object: "application", verb: "create", type_uri: "codeengine/application", data_event: false, weight: 6 },
    Kind { service: "codeengine", object: "application", verb: "update", type_uri: "codeengine/application", data_event: false, weight: 10 },
    Kind { service: "codeengine", object: "application", verb: "delete", type_uri: "codeengine/application", data_event: false, weight: 2 },
    Kind { service: "codeengine", object: "application", verb: "read", type_uri: "codeengine/application", data_event: false, weight: 12 },
    Kind { service: "codeengine", object: "project", verb: "create", type_uri: "codeengine/project", data_event: false, weight: 1 },
    Kind { service: "codeengine", object: "project", verb: "list", type_uri: "codeengine/project", data_event: false, weight: 6 },
    Kind { service: "codeengine", object: "job", verb: "create", type_uri: "codeengine/job", data_event: false, weight: 3 },
    Kind { service: "codeengine", object: "jobrun", verb: "create", type_uri: "codeengine/jobrun", data_event: false, weight: 8 },
    Kind { service: "codeengine", object: "build", verb: "create", type_uri: "codeengine/build", data_event: false, weight: 3 },
    Kind { service: "codeengine", object: "buildrun", verb: "create", type_uri: "codeengine/buildrun", data_event: false, weight: 4 },
    Kind { service: "codeengine", object: "secret", verb: "create", type_uri: "codeengine/secret", data_event: false, weight: 2 },
    Kind { service: "codeengine", object: "secret", verb: "update", type_uri: "codeengine/secret", data_event: false, weight: 2 },
    Kind { service: "codeengine", object: "pods", verb: "list", type_uri: "codeengine/pod", data_event: true, weight: 8 },
    Kind { service: "codeengine", object: "pods", verb: "read", type_uri: "codeengine/pod", data_event: true, weight: 4 },
    Kind { service: "container-registry", object: "image", verb: "push", type_uri: "container-registry/image", data_event: true, weight: 6 },
    Kind { service: "container-registry", object: "image", verb: "pull", type_uri: "container-registry/image", data_event: true, weight: 10 },
    Kind { service: "container-registry", object: "image", verb: "delete", type_uri: "container-registry/image", data_event: false, weight: 1 },
    Kind { service: "container-registry", object: "namespace", verb: "create", type_uri: "container-registry/namespace", data_event: false, weight: 1 },
    Kind { service: "kms", object: "secrets", verb: "rotate", type_uri: "kms/secrets", data_event: false, weight: 2 },
    Kind { service: "kms", object: "secrets", verb: "wrap", type_uri: "kms/secrets", data_event: true, weight: 6 },
    Kind { service: "kms", object: "secrets", verb: "unwrap", type_uri: "kms/secrets", data_event: true, weight: 6 },
    Kind { service: "kms", object: "secrets", verb: "delete", type_uri: "kms/secrets", data_event: false, weight: 1 },
    Kind { service: "kms", object: "policies", verb: "update", type_uri: "kms/policies", data_event: false, weight: 1 },
    Kind { service: "mlops", object: "deployment", verb: "create", type_uri: "mlops/deployment", data_event: false, weight: 2 },
    Kind { service: "mlops", object: "deployment", verb: "update", type_uri: "mlops/deployment", data_event: false, weight: 3 },
    Kind { service: "mlops", object: "pipeline", verb: "create", type_uri: "mlops/pipeline", data_event: false, weight: 1 },
    Kind { service: "mlops", object: "pipeline-run", verb: "start", type_uri: "mlops/pipeline-run", data_event: false, weight: 4 },
    Kind { service: "mlops", object: "deployment-version", verb: "delete", type_uri: "mlops/deployment-version", data_event: false, weight: 1 },
    Kind { service: "iam-identity", object: "user-apikey", verb: "login", type_uri: "iam-identity/user-apikey", data_event: false, weight: 5 },
    Kind { service: "iam-identity", object: "apikey", verb: "create", type_uri: "iam-identity/apikey", data_event: false, weight: 1 },
];

const NAMES: &[&str] = &[
    "web",
    "checkout",
    "api-gateway",
    "billing-worker",
    "image-resizer",
    "nightly-report",
    "fraud-model",
    "search-frontend",
    "ledger-sync",
    "payments",
    "churn-predictor",
    "recommendations",
];

/// Options for [`generate`].
#[derive(Debug, Clone, Copy)]
pub struct DemoOptions {
    pub seed: u64,
    pub count: usize,
    /// The newest event's time, in Unix seconds; events spread back over `span_secs`.
    pub end_unix: i64,
    pub span_secs: i64,
}

/// Generates `count` events, oldest first. A share of them come in correlated groups.
pub fn generate(options: DemoOptions) -> Vec<Value> {
    let mut rng = Rng::new(options.seed);
    let total_weight: u64 = KINDS.iter().map(|k| k.weight).sum();
    let mut out = Vec::with_capacity(options.count);
    let step = (options.span_secs.max(1) as f64) / (options.count.max(1) as f64);
    let start = options.end_unix - options.span_secs;
    let mut i = 0usize;
    while out.len() < options.count {
        let t = start as f64 + step * i as f64;
        let account = rng.pick(ACCOUNTS);
        let region = *rng.pick(account.regions);
        let user = *rng.pick(account.users);
        let agent = *rng.pick(AGENTS);
        let ip = format!("203.0.113.{}", 1 + rng.below(250));
        let project = format!(
            "proj-{:04x}",
            rng.below(6) + (account.id.as_bytes()[0] as u64) * 16
        );
        let correlation = rng.uuid();
        let ctx = Ctx {
            account,
            region,
            user,
            agent,
            ip: &ip,
            project: &project,
            correlation: &correlation,
        };
        if rng.chance(8) && out.len() + 3 <= options.count {
            // One user request fanned out over three services.
            let name = *rng.pick(NAMES);
            for (k, (service, object, verb, uri)) in [
                (
                    "codeengine",
                    "application",
                    "create",
                    "codeengine/application",
                ),
                ("codeengine", "buildrun", "create", "codeengine/buildrun"),
                (
                    "container-registry",
                    "image",
                    "push",
                    "container-registry/image",
                ),
            ]
            .into_iter()
            .enumerate()
            {
                let kind = Kind {
                    service,
                    object,
                    verb,
                    type_uri: uri,
                    data_event: object == "image",
                    weight: 0,
                };
                out.push(event(
                    &mut rng,
                    &ctx,
                    &kind,
                    name,
                    t + k as f64 * 0.35,
                    Some((201, "Created")),
                ));
            }
        } else {
            let mut roll = rng.below(total_weight);
            let kind = KINDS
                .iter()
                .find(|k| {
                    if roll < k.weight {
                        true
                    } else {
                        roll -= k.weight;
                        false
                    }
                })
                .expect("weights cover the roll");
            let name = *rng.pick(NAMES);
            out.push(event(&mut rng, &ctx, kind, name, t, None));
        }
        // Time advances by event, not by round (a round may add three), so that the newest
        // event is near `end_unix`: "the last hour" of the demo data is never empty.
        i = out.len();
    }
    out.truncate(options.count);
    out
}

struct Ctx<'a> {
    account: &'a Account,
    region: &'a str,
    user: (&'a str, &'a str),
    agent: &'a str,
    ip: &'a str,
    project: &'a str,
    correlation: &'a str,
}

fn event(
    rng: &mut Rng,
    ctx: &Ctx<'_>,
    kind: &Kind,
    name: &str,
    t: f64,
    forced: Option<(u64, &str)>,
) -> Value {
    let failure = forced.is_none() && rng.chance(7);
    let (code, reason_type, reason_for_failure) = if failure {
        let (c, ty, why) = *rng.pick(FAILURES);
        (c, ty, Some(why))
    } else if let Some((c, ty)) = forced {
        (c, ty, None)
    } else {
        match kind.verb {
            "create" => (201, "Created", None),
            "delete" => (204, "No Content", None),
            _ => (200, "OK", None),
        }
    };
    let global = kind.service == "iam-identity";
    let location = if global { "" } else { ctx.region };
    let instance = format!(
        "{:08x}-{:04x}-4000-8000-{:012x}",
        ctx.account.id.len() * 7919,
        kind.service.len(),
        ctx.project.len()
    );
    let source_crn = format!(
        "crn:v1:bluemix:public:{}:{}:a/{}:{}::",
        kind.service, location, ctx.account.id, instance
    );
    let target_crn = format!(
        "crn:v1:bluemix:public:{}:{}:a/{}:{}:{}:{}",
        kind.service, location, ctx.account.id, ctx.project, kind.object, name
    );
    let is_service_id = ctx.user.0.starts_with("iam-ServiceId");
    let mut request = json!({
        "requestId": rng.uuid(),
        "resourceGroupId": format!("rg-{}", &ctx.account.id[..8]),
    });
    let mut response = json!({});
    match (kind.service, kind.verb) {
        ("codeengine", "create" | "update") => {
            request["name"] = json!(name);
            request["image"] = json!(format!(
                "us.icr.io/{}/{}:v{}",
                &ctx.project,
                name,
                1 + rng.below(40)
            ));
            request["scaleMinInstances"] = json!(rng.below(2));
            request["scaleMaxInstances"] = json!(1 + rng.below(10));
            request["env"] = json!([{"name": "LOG_LEVEL", "value": "info"}, {"name": "DB_PASSWORD", "value": "hunter2-not-really"}]);
            response["revision"] = json!(format!("{name}-{:05}", 1 + rng.below(300)));
            response["status"] = json!(if failure { "failed" } else { "ready" });
        }
        ("container-registry", _) => {
            request["repository"] = json!(format!("{}/{}", ctx.project, name));
            request["tag"] = json!(format!("v1.{}.{}", rng.below(20), rng.below(10)));
            response["digest"] = json!(format!(
                "sha256:{:016x}{:016x}{:016x}{:016x}",
                rng.next_u64(),
                rng.next_u64(),
                rng.next_u64(),
                rng.next_u64()
            ));
            response["sizeBytes"] = json!(10_000_000 + rng.below(400_000_000));
        }
        ("kms", _) => {
            request["keyId"] = json!(rng.uuid());
            request["keyVersion"] =
                json!({"id": rng.uuid(), "creationDate": "2026-10-02T08:12:44Z"});
            response["keysRotated"] = json!(u64::from(kind.verb == "rotate"));
        }
        ("mlops", _) => {
            request["deployment"] = json!(name);
            request["version"] = json!(format!("v{}", 1 + rng.below(12)));
            request["instanceType"] = json!(*rng.pick(&["2048mb", "4096mb", "16384mb_t4"]));
            response["status"] = json!(if failure { "error" } else { "available" });
        }
        _ => {}
    }
    let mut event = json!({
        "id": rng.uuid(),
        "eventTime": format_time(t),
        "action": format!("{}.{}.{}", kind.service, kind.object, kind.verb),
        "outcome": if failure { "failure" } else { "success" },
        "correlationId": ctx.correlation,
        "dataEvent": kind.data_event,
        "logSourceCRN": source_crn,
        "saveServiceCopy": true,
        "initiator": {
            "id": ctx.user.0,
            "name": ctx.user.1,
            "typeURI": if is_service_id { "service/security/account/serviceid" } else { "service/security/account/user" },
            "authnId": ctx.user.0,
            "authnName": ctx.user.1,
            "credential": {"type": if is_service_id { "apikey" } else { "token" }},
            "host": {"address": ctx.ip, "addressType": "IPv4", "agent": ctx.agent}
        },
        "target": {
            "id": target_crn,
            "name": name,
            "typeURI": kind.type_uri,
            "resourceGroupId": format!("crn:v1:bluemix:public:resource-controller::a/{}::resource-group:rg-{}", ctx.account.id, &ctx.account.id[..8])
        },
        "observer": {"name": "ActivityTracker"},
        "reason": {"reasonCode": code, "reasonType": reason_type},
        "requestData": request,
        "responseData": response
    });
    if let Some(why) = reason_for_failure {
        event["reason"]["reasonForFailure"] = json!(why);
    }
    event
}

/// RFC 3339 in UTC with milliseconds and a `+00:00` offset (the way many emitters send it).
pub fn format_time(unix: f64) -> String {
    let secs = unix.floor() as i64;
    let millis = ((unix - secs as f64) * 1000.0).round().min(999.0) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}+00:00",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(count: usize) -> DemoOptions {
        DemoOptions {
            seed: 7,
            count,
            end_unix: 1_795_000_000,
            span_secs: 7 * 86_400,
        }
    }

    #[test]
    fn generation_is_deterministic_and_sized() {
        let a = generate(opts(500));
        let b = generate(opts(500));
        assert_eq!(a.len(), 500);
        assert_eq!(a, b);
        let avg = a.iter().map(|e| e.to_string().len()).sum::<usize>() / a.len();
        assert!(
            (1_000..3_000).contains(&avg),
            "average event size {avg} bytes"
        );
    }

    #[test]
    fn the_data_set_has_failures_correlations_accounts_and_regions() {
        let events = generate(opts(2_000));
        let failures = events.iter().filter(|e| e["outcome"] == "failure").count();
        assert!(failures > 50, "{failures} failures");
        assert!(
            events
                .iter()
                .any(|e| e["reason"]["reasonForFailure"].is_string())
        );
        let mut by_correlation = std::collections::HashMap::<&str, usize>::new();
        for e in &events {
            *by_correlation
                .entry(e["correlationId"].as_str().unwrap())
                .or_default() += 1;
        }
        assert!(by_correlation.values().any(|&n| n >= 3));
        for account in ACCOUNTS {
            assert!(
                events
                    .iter()
                    .any(|e| e["logSourceCRN"].as_str().unwrap().contains(account.id))
            );
        }
        assert!(events.iter().any(|e| {
            e["logSourceCRN"]
                .as_str()
                .unwrap()
                .contains(":public:iam-identity::a/")
        }));
        assert!(events.iter().any(|e| e["action"] == "codeengine.pods.list"));
    }

    #[test]
    fn times_are_rfc3339_utc_and_ordered() {
        assert_eq!(format_time(0.0), "1970-01-01T00:00:00.000+00:00");
        assert_eq!(
            format_time(1_795_000_000.25),
            "2026-11-18T11:06:40.250+00:00"
        );
        let events = generate(opts(100));
        let times: Vec<&str> = events
            .iter()
            .map(|e| e["eventTime"].as_str().unwrap())
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
    }
}
