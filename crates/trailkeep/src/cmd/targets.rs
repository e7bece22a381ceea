//! `trailkeep targets`: where routed events can go (`/v1/targets`, admin key).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::{Value, json};

use super::views::path_segment;
use crate::remote::{Remote, RemoteArgs};

/// The fields of a target, for `create` and `update` (each only for the types it belongs to).
#[derive(Debug, clap::Args)]
pub struct TargetFields {
    /// trailkeep, webhook: the URL (a Trailkeep instance's base URL, or the webhook's URL).
    #[arg(long, value_name = "URL")]
    pub target_url: Option<String>,
    /// trailkeep: a writer key of the receiving instance.
    #[arg(
        long,
        env = "TRAILKEEP_TARGET_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub target_key: Option<String>,
    /// webhook: the HMAC secret of X-Trailkeep-Signature (at least 16 characters).
    #[arg(
        long,
        env = "TRAILKEEP_TARGET_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub secret: Option<String>,
    /// syslog: host:port of the receiver (RFC 5424, octet-counted over TCP).
    #[arg(long, value_name = "HOST:PORT")]
    pub address: Option<String>,
    /// syslog: use TLS (true or false).
    #[arg(long, value_name = "BOOL")]
    pub tls: Option<bool>,
    /// syslog with TLS: PEM file of the CA (or certificate) to trust instead of the public roots.
    #[arg(long, value_name = "PEM")]
    pub target_ca_cert: Option<PathBuf>,
    /// syslog with TLS: the name the receiver's certificate must carry (default: its host).
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
    /// s3: `http(s)://host[:port]` of a self-hosted S3-compatible server (Garage, MinIO, Ceph);
    /// left out for AWS S3 itself.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// s3: the bucket. Objects are written as
    /// `<prefix>/<account>/<location>/<yyyy>/<mm>/<dd>/<hh>/<first>-<last>.<ndjson|parquet>`.
    #[arg(long, value_name = "NAME")]
    pub bucket: Option<String>,
    /// s3: the region [server default: us-east-1].
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// s3: a key prefix, e.g. audit/us-south (may be empty).
    #[arg(long, value_name = "PREFIX")]
    pub prefix: Option<String>,
    /// s3: the access key id.
    #[arg(long, value_name = "ID")]
    pub access_key_id: Option<String>,
    /// s3: the secret access key (never shown again: GET answers secretAccessKeySet).
    #[arg(
        long,
        env = "TRAILKEEP_TARGET_SECRET_ACCESS_KEY",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub secret_access_key: Option<String>,
    /// s3: object format, ndjson or parquet [server default: ndjson].
    #[arg(long = "object-format", value_name = "FORMAT")]
    pub object_format: Option<String>,
}

impl TargetFields {
    fn apply(self, body: &mut Value) -> anyhow::Result<()> {
        if let Some(v) = self.target_url {
            body["url"] = json!(v);
        }
        if let Some(v) = self.target_key {
            body["key"] = json!(v);
        }
        if let Some(v) = self.secret {
            body["secret"] = json!(v);
        }
        if let Some(v) = self.address {
            body["address"] = json!(v);
        }
        if let Some(v) = self.tls {
            body["tls"] = json!(v);
        }
        if let Some(path) = self.target_ca_cert {
            let pem = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            body["caCert"] = json!(pem);
        }
        if let Some(v) = self.server_name {
            body["serverName"] = json!(v);
        }
        for (field, v) in [
            ("endpoint", self.endpoint),
            ("bucket", self.bucket),
            ("region", self.region),
            ("prefix", self.prefix),
            ("accessKeyId", self.access_key_id),
            ("secretAccessKey", self.secret_access_key),
            ("format", self.object_format),
        ] {
            if let Some(v) = v {
                body[field] = json!(v);
            }
        }
        Ok(())
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum TargetsCommand {
    /// Create a target. Prints it as JSON (secrets are never shown, only whether one is set).
    Create {
        #[command(flatten)]
        remote: RemoteArgs,
        /// The target's name.
        #[arg(long)]
        name: String,
        /// local, trailkeep (another instance), webhook, syslog, or s3 (objects in an
        /// S3-compatible bucket: --bucket, --access-key-id, --secret-access-key, and optionally
        /// --endpoint, --region, --prefix, --object-format ndjson|parquet).
        #[arg(long = "type", value_name = "TYPE")]
        kind: String,
        #[command(flatten)]
        fields: TargetFields,
    },
    /// List the targets with their delivery status (backlog, failures, last error).
    List {
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Print one target as JSON.
    Get {
        #[command(flatten)]
        remote: RemoteArgs,
        id: String,
    },
    /// Change a target's name or fields (its type stays; secrets left out are kept).
    Update {
        #[command(flatten)]
        remote: RemoteArgs,
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        fields: TargetFields,
    },
    /// Delete a target that no route or default uses (its undelivered events are discarded).
    Delete {
        #[command(flatten)]
        remote: RemoteArgs,
        id: String,
    },
}

pub(crate) fn call(
    remote: &RemoteArgs,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    Remote::new(remote)?
        .send_json(method, path, body.as_ref())
        .map_err(|e| anyhow::anyhow!("{e}"))
}

pub fn run(command: TargetsCommand) -> anyhow::Result<ExitCode> {
    match command {
        TargetsCommand::Create {
            remote,
            name,
            kind,
            fields,
        } => {
            let mut body = json!({"name": name, "type": kind});
            fields.apply(&mut body)?;
            let t = call(&remote, "POST", "/v1/targets", Some(body))?;
            println!("{}", serde_json::to_string_pretty(&t)?);
        }
        TargetsCommand::List { remote } => {
            let list = call(&remote, "GET", "/v1/targets", None)?;
            let targets = list["targets"].as_array().cloned().unwrap_or_default();
            println!(
                "{:<38} {:<10} {:>8} {:>8} {:<24} WHERE",
                "ID", "TYPE", "BACKLOG", "FAILURES", "NAME"
            );
            for t in &targets {
                let bucket = t["bucket"]
                    .as_str()
                    .map(|b| format!("s3://{b}/{}", t["prefix"].as_str().unwrap_or_default()));
                let place = t["url"]
                    .as_str()
                    .or(t["address"].as_str())
                    .or(bucket.as_deref())
                    .unwrap_or("this instance");
                println!(
                    "{:<38} {:<10} {:>8} {:>8} {:<24} {}",
                    t["id"].as_str().unwrap_or_default(),
                    t["type"].as_str().unwrap_or_default(),
                    t["status"]["backlog"].as_u64().unwrap_or(0),
                    t["status"]["failures"].as_u64().unwrap_or(0),
                    t["name"].as_str().unwrap_or_default(),
                    place,
                );
            }
            eprintln!("{} targets", targets.len());
        }
        TargetsCommand::Get { remote, id } => {
            let t = call(
                &remote,
                "GET",
                &format!("/v1/targets/{}", path_segment(&id)),
                None,
            )?;
            println!("{}", serde_json::to_string_pretty(&t)?);
        }
        TargetsCommand::Update {
            remote,
            id,
            name,
            fields,
        } => {
            let mut body = json!({});
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            fields.apply(&mut body)?;
            let t = call(
                &remote,
                "PATCH",
                &format!("/v1/targets/{}", path_segment(&id)),
                Some(body),
            )?;
            println!("{}", serde_json::to_string_pretty(&t)?);
        }
        TargetsCommand::Delete { remote, id } => {
            call(
                &remote,
                "DELETE",
                &format!("/v1/targets/{}", path_segment(&id)),
                None,
            )?;
            eprintln!("deleted {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
