//! Server options: one definition serves the command line (`trailkeep serve --help`), the
//! environment (`TRAILKEEP_*`) and the config file (`trailkeep.toml`, same names in snake_case).
//!
//! Precedence: command-line flag, then environment variable, then config file, then default.
//! (Clap folds the first two together; [`ServeOptions::merge_file`] fills what both left unset.)

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// How hard an acknowledgement promises durability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityMode {
    /// Acknowledge only after the data is fsynced (the default).
    Fsync,
    /// Acknowledge once written to the OS; a power loss may lose the last acknowledged events.
    Relaxed,
}

impl DurabilityMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DurabilityMode::Fsync => "fsync",
            DurabilityMode::Relaxed => "relaxed",
        }
    }
}

/// Options of `trailkeep serve`. Every field is optional here so that the file can fill what the
/// command line and environment left out; [`ServeOptions::resolve`] applies the defaults.
#[derive(Debug, Clone, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct ServeOptions {
    /// Config file [default: ./trailkeep.toml when it exists].
    #[arg(long, env = "TRAILKEEP_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Data directory (ledger, index, keys) [default: ./trailkeep-data].
    #[arg(long, env = "TRAILKEEP_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Address to listen on [default: 127.0.0.1:7700].
    #[arg(long, env = "TRAILKEEP_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Bootstrap admin API key (at least 16 characters). Without it, one is generated on first
    /// start, printed once, and stored hashed.
    #[arg(
        long,
        env = "TRAILKEEP_ADMIN_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub admin_key: Option<String>,

    /// PEM certificate chain; with --tls-key, serve HTTPS.
    #[arg(
        long,
        env = "TRAILKEEP_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(
        long,
        env = "TRAILKEEP_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// fsync: acknowledge after fsync; relaxed: acknowledge after write [default: fsync].
    #[arg(long, env = "TRAILKEEP_DURABILITY", value_enum)]
    pub durability: Option<DurabilityMode>,

    /// Largest canonical stored event, in bytes [default: 16384].
    #[arg(long, env = "TRAILKEEP_MAX_EVENT_BYTES", value_name = "BYTES")]
    pub max_event_bytes: Option<usize>,

    /// Largest request body after decompression, in bytes [default: 16777216].
    #[arg(long, env = "TRAILKEEP_MAX_BODY_BYTES", value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,

    /// Most events in one ingest request [default: 10000].
    #[arg(long, env = "TRAILKEEP_MAX_BATCH_EVENTS", value_name = "N")]
    pub max_batch_events: Option<usize>,

    /// Events accepted but not yet added to the search index (being normalised, written to the
    /// ledger or waiting for the indexer); beyond it ingest answers 429. Bounds memory
    /// [default: 20000].
    #[arg(long, env = "TRAILKEEP_INGEST_QUEUE", value_name = "N")]
    pub ingest_queue: Option<usize>,

    /// Checkpoint origin prefix; each account's log is `<origin>/<account>` [default: trailkeep].
    #[arg(long, env = "TRAILKEEP_ORIGIN", value_name = "NAME")]
    pub origin: Option<String>,

    /// Service prefix for actions mapped from Kubernetes audit events [default: kubernetes].
    #[arg(long, env = "TRAILKEEP_KUBERNETES_SERVICE", value_name = "NAME")]
    pub kubernetes_service: Option<String>,

    /// Account whose log records what concerns no single account: failed authentications,
    /// authorisation denials, reads across every account [default: trailkeep].
    #[arg(long, env = "TRAILKEEP_SYSTEM_ACCOUNT", value_name = "ID")]
    pub system_account: Option<String>,

    /// Default per-key ingest limit, in events per second (bursts of two seconds' worth); a key
    /// may carry its own [default: 100000].
    #[arg(long, env = "TRAILKEEP_KEY_INGEST_RATE", value_name = "EVENTS")]
    pub key_ingest_rate: Option<u32>,

    /// Default per-key limit of read requests (search, get, aggregate, export, proofs) per second
    /// (bursts of two seconds' worth); a key may carry its own [default: 200].
    #[arg(long, env = "TRAILKEEP_KEY_QUERY_RATE", value_name = "REQUESTS")]
    pub key_query_rate: Option<u32>,

    /// Longest a search or aggregation may run before it is answered with 503 [default: 30].
    #[arg(long, env = "TRAILKEEP_QUERY_TIMEOUT", value_name = "SECONDS")]
    pub query_timeout: Option<u64>,

    /// Longest a client may take to send a request's headers, and an ingest request's whole
    /// body; slower clients are disconnected or answered 408 [default: 30].
    #[arg(long, env = "TRAILKEEP_CLIENT_TIMEOUT", value_name = "SECONDS")]
    pub client_timeout: Option<u64>,
    /// SMTP server for email alert channels: `smtp://host[:port]` (STARTTLS whenever the server
    /// offers it; port 587 by default) or `smtps://host[:port]` (TLS from the start; 465).
    #[arg(long, env = "TRAILKEEP_SMTP_URL", value_name = "URL")]
    pub smtp_url: Option<String>,

    /// Sender address of alert emails (default: trailkeep@localhost).
    #[arg(long, env = "TRAILKEEP_SMTP_FROM", value_name = "ADDRESS")]
    pub smtp_from: Option<String>,

    /// SMTP user name (with --smtp-password).
    #[arg(long, env = "TRAILKEEP_SMTP_USERNAME", value_name = "NAME")]
    pub smtp_username: Option<String>,

    /// SMTP password.
    #[arg(
        long,
        env = "TRAILKEEP_SMTP_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub smtp_password: Option<String>,

    /// PEM file of a CA to trust for the SMTP server's certificate, besides the usual roots.
    #[arg(long, env = "TRAILKEEP_SMTP_CA_CERT", value_name = "FILE")]
    pub smtp_ca_cert: Option<PathBuf>,

    /// Wait after the first failed alert delivery; doubled (with jitter) after each further
    /// failure [default: 1s].
    #[arg(long, env = "TRAILKEEP_ALERT_RETRY_INITIAL", value_name = "DURATION")]
    pub alert_retry_initial: Option<String>,

    /// Longest wait between two delivery attempts [default: 5m].
    #[arg(long, env = "TRAILKEEP_ALERT_RETRY_MAX", value_name = "DURATION")]
    pub alert_retry_max: Option<String>,

    /// Networks webhook, Slack and PagerDuty notifications may reach although they are refused by
    /// default (loopback, link-local such as cloud metadata services): comma-separated CIDRs or
    /// addresses, e.g. `127.0.0.1/32` for a receiver on this host.
    #[arg(long, env = "TRAILKEEP_NOTIFY_ALLOW_NETWORKS", value_name = "CIDRS")]
    pub notify_allow_networks: Option<String>,

    /// Also refuse notifications to private networks (RFC 1918, IPv6 unique local, 100.64/10),
    /// for servers whose managers must not reach the internal network [default: false].
    #[arg(long, env = "TRAILKEEP_NOTIFY_BLOCK_PRIVATE_NETWORKS", value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub notify_block_private_networks: Option<bool>,

    /// A notification still undelivered this long after it fired is marked failed [default: 24h].
    #[arg(long, env = "TRAILKEEP_ALERT_GIVE_UP_AFTER", value_name = "DURATION")]
    pub alert_give_up_after: Option<String>,

    /// This instance's location (region), e.g. us-south; routes match events' locations (the
    /// location segment of their logSourceCRN) [default: global].
    #[arg(long, env = "TRAILKEEP_LOCATION", value_name = "LOCATION")]
    pub location: Option<String>,

    /// Most routes [default: 30].
    #[arg(long, env = "TRAILKEEP_ROUTING_MAX_ROUTES", value_name = "N")]
    pub routing_max_routes: Option<usize>,

    /// Most rules in one route [default: 10].
    #[arg(long, env = "TRAILKEEP_ROUTING_MAX_RULES", value_name = "N")]
    pub routing_max_rules: Option<usize>,

    /// Most undelivered events in one remote target's outbox; beyond it, ingest of events routed
    /// to that target answers 503 (an alarm: metric trailkeep_route_backlog_full, error log)
    /// [default: 1000000].
    #[arg(long, env = "TRAILKEEP_ROUTING_MAX_BACKLOG", value_name = "EVENTS")]
    pub routing_max_backlog: Option<u64>,

    /// Wait after the first failed delivery to a routing target; doubled (with jitter) after
    /// each further failure. Deliveries are retried until they succeed [default: 1s].
    #[arg(long, env = "TRAILKEEP_ROUTING_RETRY_INITIAL", value_name = "DURATION")]
    pub routing_retry_initial: Option<String>,

    /// Longest wait between two delivery attempts to a routing target [default: 1m].
    #[arg(long, env = "TRAILKEEP_ROUTING_RETRY_MAX", value_name = "DURATION")]
    pub routing_retry_max: Option<String>,

    /// How often events dropped by routing (no route, no default target) are reported as
    /// trailkeep.event.drop self-audit events [default: 1m].
    #[arg(
        long,
        env = "TRAILKEEP_ROUTING_REPORT_INTERVAL",
        value_name = "DURATION"
    )]
    pub routing_report_interval: Option<String>,
    /// Bucket of the S3-compatible archive target; archiving is on when it is set
    /// (docs/archive.md).
    #[arg(long, env = "TRAILKEEP_ARCHIVE_BUCKET", value_name = "NAME")]
    pub archive_bucket: Option<String>,

    /// Endpoint of the archive's S3-compatible server, `http(s)://host[:port]` (path-style
    /// requests); leave unset for AWS S3.
    #[arg(long, env = "TRAILKEEP_ARCHIVE_ENDPOINT", value_name = "URL")]
    pub archive_endpoint: Option<String>,

    /// Region of the archive bucket [default: us-east-1].
    #[arg(long, env = "TRAILKEEP_ARCHIVE_REGION", value_name = "REGION")]
    pub archive_region: Option<String>,

    /// Key prefix inside the archive bucket [default: none].
    #[arg(long, env = "TRAILKEEP_ARCHIVE_PREFIX", value_name = "PREFIX")]
    pub archive_prefix: Option<String>,

    /// Access key id for the archive bucket.
    #[arg(long, env = "TRAILKEEP_ARCHIVE_ACCESS_KEY_ID", value_name = "ID")]
    pub archive_access_key_id: Option<String>,

    /// Secret access key for the archive bucket (never logged nor shown by the API).
    #[arg(
        long,
        env = "TRAILKEEP_ARCHIVE_SECRET_ACCESS_KEY",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub archive_secret_access_key: Option<String>,

    /// Time between two background archive runs [default: 5m].
    #[arg(long, env = "TRAILKEEP_ARCHIVE_INTERVAL", value_name = "DURATION")]
    pub archive_interval: Option<String>,

    /// Default retention in days for accounts without their own policy; 0 keeps records
    /// forever (docs/retention.md) [default: 0].
    #[arg(long, env = "TRAILKEEP_RETENTION_DAYS", value_name = "DAYS")]
    pub retention_days: Option<u32>,

    /// How long a lowered retention policy waits before it applies [default: 7d].
    #[arg(
        long,
        env = "TRAILKEEP_RETENTION_LOWERING_DELAY",
        value_name = "DURATION"
    )]
    pub retention_lowering_delay: Option<String>,

    /// Time between two background retention runs [default: 1h].
    #[arg(long, env = "TRAILKEEP_RETENTION_INTERVAL", value_name = "DURATION")]
    pub retention_interval: Option<String>,

    /// Length of a retention "day" (tests only) [default: 1d].
    #[arg(
        long,
        env = "TRAILKEEP_RETENTION_DAY",
        value_name = "DURATION",
        hide = true
    )]
    pub retention_day: Option<String>,
}

/// Fully resolved server options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub admin_key: Option<String>,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub durability: DurabilityMode,
    pub max_event_bytes: usize,
    pub max_body_bytes: usize,
    pub max_batch_events: usize,
    pub ingest_queue: usize,
    pub origin: String,
    pub kubernetes_service: String,
    pub system_account: String,
    pub key_ingest_rate: u32,
    pub key_query_rate: u32,
    pub query_timeout: std::time::Duration,
    pub client_timeout: std::time::Duration,
    pub alerts: crate::alerts::AlertOptions,
    pub routing: crate::routing::RoutingOptions,
    /// The archive target, when one is configured.
    pub archive: Option<crate::archive::ArchiveOptions>,
    pub retention: crate::retention::RetentionOptions,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("{0}")]
    Invalid(String),
}

pub const DEFAULT_CONFIG_FILE: &str = "trailkeep.toml";

/// A positive duration written as a number and a unit: `250ms`, `30s`, `5m`, `1h`, `1d`.
pub fn parse_std_duration(text: &str) -> Option<std::time::Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().ok().filter(|n| *n > 0)?;
    let millis = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    Some(std::time::Duration::from_millis(n.checked_mul(millis)?))
}

impl ServeOptions {
    /// Fills every option left unset by flags and environment from the config file: the one named by
    /// `--config`, else `./trailkeep.toml` if present.
    pub fn merge_file(mut self) -> Result<Self, ConfigError> {
        let (path, required) = match &self.config {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => return Ok(self),
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        let file = Self::parse_file(&text, &path)?;
        macro_rules! fill {
            ($($f:ident),*) => { $( if self.$f.is_none() { self.$f = file.$f; } )* };
        }
        fill!(
            data_dir,
            listen,
            admin_key,
            tls_cert,
            tls_key,
            durability,
            max_event_bytes,
            max_body_bytes,
            max_batch_events,
            ingest_queue,
            origin,
            kubernetes_service,
            system_account,
            key_ingest_rate,
            key_query_rate,
            query_timeout,
            client_timeout,
            smtp_url,
            smtp_from,
            smtp_username,
            smtp_password,
            smtp_ca_cert,
            alert_retry_initial,
            alert_retry_max,
            alert_give_up_after,
            notify_allow_networks,
            notify_block_private_networks,
            location,
            routing_max_routes,
            routing_max_rules,
            routing_max_backlog,
            routing_retry_initial,
            routing_retry_max,
            routing_report_interval,
            archive_bucket,
            archive_endpoint,
            archive_region,
            archive_prefix,
            archive_access_key_id,
            archive_secret_access_key,
            archive_interval,
            retention_days,
            retention_lowering_delay,
            retention_interval,
            retention_day
        );
        Ok(self)
    }

    /// The archive target, when `archive_bucket` is set.
    fn archive_options(&self) -> Result<Option<crate::archive::ArchiveOptions>, ConfigError> {
        let Some(bucket) = self.archive_bucket.clone() else {
            return Ok(None);
        };
        let (Some(access_key_id), Some(secret_access_key)) = (
            self.archive_access_key_id.clone(),
            self.archive_secret_access_key.clone(),
        ) else {
            return Err(ConfigError::Invalid(
                "archive_bucket needs archive_access_key_id and archive_secret_access_key".into(),
            ));
        };
        if let Some(e) = &self.archive_endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(ConfigError::Invalid(format!(
                "archive_endpoint must be an http:// or https:// URL, not {e:?}"
            )));
        }
        Ok(Some(crate::archive::ArchiveOptions {
            target: crate::archive::s3::S3Target {
                endpoint: self.archive_endpoint.clone(),
                bucket,
                region: self
                    .archive_region
                    .clone()
                    .unwrap_or_else(|| "us-east-1".to_string()),
                access_key_id,
                secret_access_key,
                prefix: self
                    .archive_prefix
                    .clone()
                    .unwrap_or_default()
                    .trim_matches('/')
                    .to_string(),
                // Set below: a request is not retried for longer than the interval (or 30 s).
                retry: std::time::Duration::from_secs(30),
            },
            interval: match &self.archive_interval {
                None => std::time::Duration::from_secs(300),
                Some(text) => parse_std_duration(text).ok_or_else(|| {
                    ConfigError::Invalid(format!(
                        "archive_interval must be a positive duration such as 30s or 5m, not {text:?}"
                    ))
                })?,
            },
            max_pass_records: 50_000,
            max_pass_bytes: 32 << 20,
        })
        .map(|mut a| {
            a.target.retry = a
                .interval
                .clamp(std::time::Duration::from_secs(1), std::time::Duration::from_secs(30));
            a
        }))
    }

    fn parse_file(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })
    }

    /// Applies defaults and checks the values.
    pub fn resolve(self) -> Result<ServerConfig, ConfigError> {
        let archive = self.archive_options()?;
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid(
                    "tls_cert and tls_key must be given together".into(),
                ));
            }
        };
        let duration = |name: &str, v: &Option<String>, default: u64| match v {
            None => Ok(std::time::Duration::from_secs(default)),
            Some(text) => parse_std_duration(text).ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "{name} must be a positive duration such as 500ms, 30s or 1h, not {text:?}"
                ))
            }),
        };
        let retry = crate::alerts::outbox::RetryPolicy {
            initial: duration("alert_retry_initial", &self.alert_retry_initial, 1)?,
            max: duration("alert_retry_max", &self.alert_retry_max, 300)?,
            give_up_after: duration("alert_give_up_after", &self.alert_give_up_after, 86_400)?,
        };
        let alerts = crate::alerts::AlertOptions {
            smtp: crate::alerts::notify::SmtpSettings {
                url: self.smtp_url,
                from: self
                    .smtp_from
                    .unwrap_or_else(|| "trailkeep@localhost".to_string()),
                username: self.smtp_username,
                password: self.smtp_password,
                ca_cert: self.smtp_ca_cert,
            },
            network: crate::alerts::notify::NetworkPolicy {
                allowed: crate::alerts::notify::NetworkPolicy::parse_allowed(
                    self.notify_allow_networks.as_deref().unwrap_or_default(),
                )
                .map_err(|e| ConfigError::Invalid(format!("notify_allow_networks: {e}")))?,
                block_private: self.notify_block_private_networks.unwrap_or(false),
            },
            retry,
        };
        let routing = crate::routing::RoutingOptions {
            location: self.location.unwrap_or_else(|| "global".to_string()),
            limits: crate::routing::model::Limits {
                max_routes: self.routing_max_routes.unwrap_or(30),
                max_rules: self.routing_max_rules.unwrap_or(10),
            },
            max_backlog: self.routing_max_backlog.unwrap_or(1_000_000),
            retry: crate::alerts::outbox::RetryPolicy {
                initial: duration("routing_retry_initial", &self.routing_retry_initial, 1)?,
                max: duration("routing_retry_max", &self.routing_retry_max, 60)?,
                give_up_after: std::time::Duration::MAX,
            },
            batch_events: 500,
            report_interval: duration(
                "routing_report_interval",
                &self.routing_report_interval,
                60,
            )?,
        };
        if !crate::routing::model::is_valid_location(&routing.location) {
            return Err(ConfigError::Invalid(format!(
                "location must be lower-case letters, digits and '-' (e.g. us-south), not {:?}",
                routing.location
            )));
        }
        if routing.limits.max_routes == 0
            || routing.limits.max_rules == 0
            || routing.max_backlog == 0
        {
            return Err(ConfigError::Invalid(
                "routing_max_routes, routing_max_rules and routing_max_backlog must be positive"
                    .into(),
            ));
        }
        if self.retention_days.is_some_and(|d| d > 36_500) {
            return Err(ConfigError::Invalid(
                "retention_days must be at most 36500 (0 keeps records forever)".into(),
            ));
        }
        let retention = crate::retention::RetentionOptions {
            default_days: self.retention_days.filter(|d| *d > 0),
            lowering_delay: duration(
                "retention_lowering_delay",
                &self.retention_lowering_delay,
                7 * 86_400,
            )?,
            interval: duration("retention_interval", &self.retention_interval, 3_600)?,
            day: duration("retention_day", &self.retention_day, 86_400)?,
        };
        let config = ServerConfig {
            retention,
            archive,
            data_dir: self
                .data_dir
                .unwrap_or_else(|| PathBuf::from("./trailkeep-data")),
            listen: self
                .listen
                .unwrap_or_else(|| "127.0.0.1:7700".parse().expect("valid default")),
            admin_key: self.admin_key,
            tls,
            durability: self.durability.unwrap_or(DurabilityMode::Fsync),
            max_event_bytes: self.max_event_bytes.unwrap_or(16 * 1024),
            max_body_bytes: self.max_body_bytes.unwrap_or(16 * 1024 * 1024),
            max_batch_events: self.max_batch_events.unwrap_or(10_000),
            ingest_queue: self.ingest_queue.unwrap_or(20_000),
            origin: self.origin.unwrap_or_else(|| "trailkeep".to_string()),
            kubernetes_service: self
                .kubernetes_service
                .unwrap_or_else(|| "kubernetes".to_string()),
            system_account: self
                .system_account
                .unwrap_or_else(|| "trailkeep".to_string()),
            key_ingest_rate: self.key_ingest_rate.unwrap_or(100_000),
            key_query_rate: self.key_query_rate.unwrap_or(200),
            query_timeout: std::time::Duration::from_secs(self.query_timeout.unwrap_or(30)),
            client_timeout: std::time::Duration::from_secs(self.client_timeout.unwrap_or(30)),
            alerts,
            routing,
        };
        if !trailkeep_event::is_valid_account_id(&config.system_account) {
            return Err(ConfigError::Invalid(
                "system_account must be a valid account id".into(),
            ));
        }
        if config.key_ingest_rate == 0
            || config.key_query_rate == 0
            || config.query_timeout.is_zero()
        {
            return Err(ConfigError::Invalid(
                "key_ingest_rate, key_query_rate, query_timeout and client_timeout must be positive"
                    .into(),
            ));
        }
        if config.max_event_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "max_event_bytes must be at least 1024".into(),
            ));
        }
        if config.max_batch_events == 0 || config.ingest_queue == 0 {
            return Err(ConfigError::Invalid(
                "max_batch_events and ingest_queue must be positive".into(),
            ));
        }
        if config.max_body_bytes < config.max_event_bytes {
            return Err(ConfigError::Invalid(
                "max_body_bytes must be at least max_event_bytes".into(),
            ));
        }
        if let Some(key) = &config.admin_key
            && key.len() < 16
        {
            return Err(ConfigError::Invalid(
                "admin_key must be at least 16 characters".into(),
            ));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_fills_only_what_flags_left_unset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trailkeep.toml");
        std::fs::write(
            &path,
            "data_dir = \"/srv/tk\"\nlisten = \"127.0.0.1:9000\"\ndurability = \"relaxed\"\n",
        )
        .unwrap();
        let flags = ServeOptions {
            config: Some(path),
            listen: Some("127.0.0.1:8000".parse().unwrap()),
            ..Default::default()
        };
        let config = flags.merge_file().unwrap().resolve().unwrap();
        assert_eq!(config.listen.port(), 8000, "the flag wins over the file");
        assert_eq!(config.data_dir, PathBuf::from("/srv/tk"));
        assert_eq!(config.durability, DurabilityMode::Relaxed);
        assert_eq!(config.max_event_bytes, 16_384);
    }

    #[test]
    fn unknown_keys_and_a_missing_named_file_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "lsiten = \"127.0.0.1:1\"\n").unwrap();
        let err = ServeOptions {
            config: Some(path),
            ..Default::default()
        }
        .merge_file()
        .unwrap_err();
        assert!(err.to_string().contains("lsiten"), "{err}");
        let missing = ServeOptions {
            config: Some(dir.path().join("nope.toml")),
            ..Default::default()
        };
        assert!(matches!(
            missing.merge_file(),
            Err(ConfigError::Read { .. })
        ));
    }

    #[test]
    fn an_archive_target_comes_from_the_file_and_its_secret_is_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trailkeep.toml");
        std::fs::write(
            &path,
            "archive_bucket = \"audit\"\narchive_endpoint = \"http://127.0.0.1:3900\"\n\
             archive_region = \"garage\"\narchive_access_key_id = \"GK1\"\n\
             archive_prefix = \"/tk/\"\narchive_interval = \"1m\"\n",
        )
        .unwrap();
        let flags = ServeOptions {
            config: Some(path.clone()),
            archive_secret_access_key: Some("s3cr3t-value".into()),
            ..Default::default()
        };
        let config = flags.merge_file().unwrap().resolve().unwrap();
        let archive = config.archive.clone().expect("archiving is on");
        assert_eq!(archive.target.bucket, "audit");
        assert_eq!(archive.target.prefix, "tk");
        assert_eq!(archive.target.secret_access_key, "s3cr3t-value");
        assert_eq!(archive.interval, std::time::Duration::from_secs(60));
        assert!(!format!("{config:?}").contains("s3cr3t-value"));
        // Without the secret, or with a bad endpoint, the configuration is refused.
        let missing = ServeOptions {
            config: Some(path),
            ..Default::default()
        };
        assert!(missing.merge_file().unwrap().resolve().is_err());
        let bad = ServeOptions {
            archive_bucket: Some("b".into()),
            archive_access_key_id: Some("k".into()),
            archive_secret_access_key: Some("s".into()),
            archive_endpoint: Some("ftp://x".into()),
            ..Default::default()
        };
        assert!(bad.resolve().is_err());
        assert!(ServeOptions::default().resolve().unwrap().archive.is_none());
    }

    #[test]
    fn defaults_match_the_design() {
        let config = ServeOptions::default().resolve().unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:7700");
        assert_eq!(config.data_dir, PathBuf::from("./trailkeep-data"));
        assert_eq!(config.durability, DurabilityMode::Fsync);
    }
}
