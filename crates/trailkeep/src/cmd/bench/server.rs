//! A server under test: this binary's `serve` as a child process on a loopback port, or a server
//! someone else runs (`--url`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::remote::RemoteArgs;

/// Where the benchmark's server is.
#[derive(Debug, clap::Args)]
pub struct TargetArgs {
    /// Benchmark a running server instead of starting one (then `--key` is needed and memory and
    /// disk figures are not reported).
    #[arg(long, env = "TRAILKEEP_BENCH_URL")]
    pub url: Option<String>,

    /// API key for `--url`.
    #[arg(long, env = "TRAILKEEP_KEY", hide_env_values = true)]
    pub key: Option<String>,

    /// Data directory of the server the benchmark starts (default: a temporary directory,
    /// removed afterwards).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// The server being measured.
#[derive(Debug)]
pub struct Target {
    pub remote: RemoteArgs,
    child: Option<Child>,
    pub data_dir: Option<PathBuf>,
    _temp: Option<tempfile::TempDir>,
}

impl Target {
    pub fn start(args: &TargetArgs, extra: &[&str]) -> anyhow::Result<Target> {
        if let Some(url) = &args.url {
            return Ok(Target {
                remote: remote_args(url.clone(), args.key.clone()),
                child: None,
                data_dir: None,
                _temp: None,
            });
        }
        let (data_dir, temp) = match &args.data_dir {
            Some(d) => (d.clone(), None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("trailkeep-bench-")
                    .tempdir_in(std::env::current_dir()?)
                    .context("creating a temporary data directory")?;
                (t.path().join("data"), Some(t))
            }
        };
        let key = format!("bench-{:016x}", rand_u64());
        let mut child = Command::new(std::env::current_exe()?)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            // A benchmark measures the server's capacity, not the per-key limits it enforces.
            .args([
                "--key-ingest-rate",
                "4000000000",
                "--key-query-rate",
                "4000000000",
            ])
            .args(extra)
            .env("TRAILKEEP_ADMIN_KEY", &key)
            .env("TRAILKEEP_LOG", "warn,trailkeep_server::run=info")
            .env_remove("TRAILKEEP_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the server")?;
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && let Some(rest) = line.split("listening on ").nth(1) {
                    let url = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    let _ = tx.send(url);
                    sent = true;
                } else if line.contains("WARN") || line.contains("ERROR") {
                    eprintln!("server: {line}");
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(300)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                bail!("the server did not start");
            }
        };
        Ok(Target {
            remote: remote_args(url, Some(key)),
            child: Some(child),
            data_dir: Some(data_dir),
            _temp: temp,
        })
    }

    /// The started server's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's peak and current resident memory, in bytes.
    pub fn memory(&self) -> Option<(u64, u64)> {
        self.pid().and_then(process_memory)
    }

    /// CPU time (user + system, all threads, also those that ended) the server used so far.
    pub fn cpu(&self) -> Option<Duration> {
        self.pid().and_then(process_cpu)
    }

    /// Stops a started server gracefully (index committed, checkpoints signed).
    pub fn stop(mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            let pid = child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let status = child.wait()?;
            if !status.success() {
                bail!("the server exited with {status}");
            }
        }
        Ok(())
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// User + system CPU time of a process from `/proc/<pid>/stat` (in USER_HZ ticks, 100 per
/// second on Linux), Linux only.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after `) state`.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// Peak (`VmHWM`) and current (`VmRSS`) resident memory of a process, in bytes (Linux only).
pub fn process_memory(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status.lines().find_map(|l| {
            l.strip_prefix(name)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse::<u64>()
                .ok()
                .map(|kb| kb * 1024)
        })
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

fn remote_args(url: String, key: Option<String>) -> RemoteArgs {
    RemoteArgs {
        url,
        key,
        ca_cert: None,
        timeout: 120,
    }
}

pub fn dir_size(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            // Allocated blocks, not apparent length: what the disk really holds.
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// A per-run random number for the bench key (no need for a cryptographic source here).
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish()
}
