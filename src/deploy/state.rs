//! The host's own record of an environment: which colour serves, which one is kept
//! stopped for rollback, a switch in progress, and the last deploy's result. One JSON
//! file per environment (`STATE_DIR/APP-ENV.json`), replaced atomically; a lock file
//! beside it keeps two deploys of one environment from interleaving. The engine's
//! container labels are the ground truth it is reconciled against.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

pub const STATE_SCHEMA: u32 = 1;

/// Default state directory.
pub const STATE_DIR: &str = "/var/lib/s3dock";

/// One colour: a container running (or kept stopped) one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slot {
    pub colour: String,
    pub container: String,
    pub digest: String,
    pub image_tag: String,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// When it started serving (RFC 3339).
    pub since: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastDeploy {
    /// `deployed`, `unchanged`, `failed` or `rolled-back`.
    pub result: String,
    pub digest: String,
    pub at: String,
    pub duration_secs: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostState {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    pub app: String,
    pub env: String,
    pub live: Option<Slot>,
    /// The colour traffic left last, kept stopped for rollback.
    pub previous: Option<Slot>,
    /// Written just before traffic moves to it: after a crash, the next deploy
    /// finishes or undoes that switch before anything else.
    pub switching: Option<Slot>,
    pub last: Option<LastDeploy>,
}

impl HostState {
    pub fn new(app: &str, env: &str) -> HostState {
        HostState {
            schema_version: STATE_SCHEMA,
            app: app.into(),
            env: env.into(),
            live: None,
            previous: None,
            switching: None,
            last: None,
        }
    }
}

/// `DIR/APP-ENV.json`, `/` in the app name spelled `%2F` so one file name holds it.
pub fn path(dir: &Path, app: &str, env: &str) -> PathBuf {
    dir.join(format!("{}-{env}.json", app.replace('/', "%2F")))
}

pub fn load(path: &Path, app: &str, env: &str) -> Result<HostState> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HostState::new(app, env)),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let s: HostState = serde_json::from_slice(&data).with_context(|| {
        format!(
            "{} is not a deploy state file: move it away and deploy again (the state is rebuilt from the running containers)",
            path.display()
        )
    })?;
    if s.schema_version > STATE_SCHEMA || s.app != app || s.env != env {
        bail!(
            "{} belongs to another s3dock version or environment: move it away and deploy again",
            path.display()
        );
    }
    Ok(s)
}

pub fn save(path: &Path, s: &HostState) -> Result<()> {
    write_atomic(path, &serde_json::to_vec_pretty(s)?)
}

/// An exclusive lock on the environment, released when dropped (or when the
/// process dies, so a killed deploy never blocks the next one).
pub struct Lock(#[allow(dead_code)] File);

pub fn lock(state_path: &Path) -> Result<Lock> {
    let p = state_path.with_extension("lock");
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).with_context(|| {
            format!(
                "cannot create the state directory {}: run as a user who may, or pass --state-dir",
                d.display()
            )
        })?;
    }
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .with_context(|| format!("cannot open {}", p.display()))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!(
            "another deploy of this environment is running on this host (lock {}): wait for it",
            p.display()
        );
    }
    Ok(Lock(f))
}

/// Writes `path` so readers see the old or the new content, never a part.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".s3dock-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    // Readable by the nginx workers, like a file written by hand.
    use std::os::unix::fs::PermissionsExt;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
