//! One module per subcommand. Each `run` returns the process exit code: 0 when everything held,
//! 1 when the command found problems in its input (rejected events, integrity failures); errors
//! that stop the command (unreadable file, bad flag) become exit code 2 in `main`.

pub mod accounts;
pub mod alerts;
pub mod archive;
pub mod bench;
pub mod event;
pub mod export;
pub mod history;
pub mod import;
pub mod keys;
pub mod output;
pub mod progress;
pub mod reindex;
pub mod retention;
pub mod routes;
pub mod search;
pub mod send;
pub mod serve;
pub mod settings;
pub mod tail;
pub mod targets;
pub mod verify;
pub mod verify_bundle;
pub mod views;
pub mod witness;

/// Writes `value` as JSON to a temporary file and renames it over `path` (creating the directory),
/// so a crash leaves either the old or the new content, never a torn file.
pub fn write_json_atomically(
    path: &std::path::Path,
    value: &impl serde::Serialize,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(value)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
