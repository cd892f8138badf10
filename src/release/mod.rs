//! The release workflow on top of push/pull: git-stable builds (`build`, `stamp`),
//! push metadata, semantic versions (`tag`), environments (`promote`, `current`),
//! `list` and `history`.
//!
//! s3dock's records are JSON documents beside the registry layout (keys in
//! [`crate::registry::layout`]): image metadata, version records and environment pointers under
//! `s3dock/apps/{app}/`, the audit trail under `s3dock/audit/{app}/`. Versions and
//! environments are also real registry tags, so `registry:2` serves `myapp:v1.2.0`
//! and `myapp:production`; the records are the source of truth, the tags follow them.
//! Records that can change (image metadata, versions, environments) are only ever
//! replaced with conditional writes, retried on conflict, so concurrent writers never
//! silently lose an update.

pub mod audit;

use crate::cli::Global;
use crate::codec::Compression;
use crate::model::digest::Digest;
use crate::model::image::{host_platform, Config, Layer};
use crate::model::reference::{validate_name, Reference};
use crate::registry::Registry;
use crate::transfer::push::{push, PushOptions, PushedImage};
use crate::transfer::stats::{human_bytes, Stats};
use anyhow::{anyhow, bail, Context, Result};
use audit::{Actor, Event};
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Schema version of every record this module writes; readers refuse newer ones.
pub const RECORD_SCHEMA: u32 = 1;
/// How often a conditional write is retried after losing to another writer.
const CAS_ATTEMPTS: u32 = 200;

// ---------------------------------------------------------------- records

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GitInfo {
    /// Full commit hash.
    pub commit: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Committer time, RFC 3339 UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
}

/// An older content of an image tag, replaced by a later push of the same tag. The
/// manifest stays in the repository (revisions link), so `app@digest` still pulls it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Archived {
    pub digest: Digest,
    pub pushed_at: String,
    pub pushed_by: String,
    pub archived_at: String,
}

/// `s3dock/apps/{app}/_images/{tag}.json`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    pub kind: String,
    pub app: String,
    pub tag: String,
    /// Manifest digest.
    pub digest: Digest,
    pub config_digest: Digest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// Config plus layers, as stored.
    pub size: u64,
    pub compression: String,
    pub layers: Vec<Layer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitInfo>,
    pub pushed_at: String,
    pub pushed_by: Actor,
    #[serde(default)]
    pub archived: Vec<Archived>,
}

/// A version's earlier target, kept when it is moved with `tag --force`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionMove {
    pub image_tag: String,
    pub digest: Digest,
    pub tagged_at: String,
    pub tagged_by: String,
    pub moved_at: String,
}

/// `s3dock/apps/{app}/_versions/{version}.json`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    pub kind: String,
    pub app: String,
    pub version: String,
    pub image_tag: String,
    pub digest: Digest,
    pub tagged_at: String,
    pub tagged_by: String,
    #[serde(default)]
    pub moves: Vec<VersionMove>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// An image tag: the digest it had when promoted.
    Image,
    /// A version: followed when read.
    Version,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub kind: TargetKind,
    pub name: String,
}

/// `s3dock/apps/{app}/_envs/{env}.json`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvRecord {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    pub kind: String,
    pub app: String,
    pub env: String,
    pub target: Target,
    /// What the target resolved to when promoted.
    pub image_tag: String,
    pub digest: Digest,
    /// 1 for the first promotion, +1 for each one after: the order of promotions.
    pub generation: u64,
    pub promoted_at: String,
    pub promoted_by: String,
}

fn check_schema(v: u32, what: &str) -> Result<()> {
    if v > RECORD_SCHEMA {
        bail!("{what} has schema version {v}, newer than this s3dock understands ({RECORD_SCHEMA}): upgrade s3dock");
    }
    Ok(())
}

async fn read_image(store: &Registry, app: &str, tag: &str) -> Result<Option<ImageRecord>> {
    let r: Option<ImageRecord> = store
        .get_json(&store.layout().image_record(app, tag))
        .await?;
    if let Some(r) = &r {
        check_schema(r.schema_version, &format!("image record {app}:{tag}"))?;
    }
    Ok(r)
}

async fn read_version(store: &Registry, app: &str, v: &str) -> Result<Option<VersionRecord>> {
    let r: Option<VersionRecord> = store
        .get_json(&store.layout().version_record(app, v))
        .await?;
    if let Some(r) = &r {
        check_schema(r.schema_version, &format!("version record {app}:{v}"))?;
    }
    Ok(r)
}

async fn read_env(store: &Registry, app: &str, env: &str) -> Result<Option<(EnvRecord, String)>> {
    let r: Option<(EnvRecord, String)> = store
        .get_json_with_etag(&store.layout().env_record(app, env))
        .await?;
    if let Some((r, _)) = &r {
        check_schema(r.schema_version, &format!("environment {env} of {app}"))?;
    }
    Ok(r)
}

/// Names of the JSON records under a prefix (`x.json` → `x`), sorted.
async fn record_names(store: &Registry, prefix: &str) -> Result<Vec<String>> {
    let mut v: Vec<String> = store
        .list_objects(prefix)
        .await?
        .into_iter()
        .filter_map(|o| {
            o.key
                .strip_prefix(prefix)?
                .strip_suffix(".json")
                .filter(|n| !n.contains('/'))
                .map(str::to_string)
        })
        .collect();
    v.sort();
    Ok(v)
}

/// Retries a lost conditional write after a short random pause.
async fn backoff(attempt: u32) {
    let jitter = (uuid::Uuid::new_v4().as_u128() % 50) as u64;
    let ms = (5 * u64::from(attempt.min(20))) + jitter;
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
}

// ---------------------------------------------------------------- context

/// What every release command needs: the store, who is acting, and output flags.
pub struct Ctx {
    pub store: Registry,
    pub actor: Actor,
    pub quiet: bool,
    pub json: bool,
}

impl Ctx {
    pub async fn open(g: &Global) -> Result<Ctx> {
        let store = Registry::open(&g.store_config(None)?).await?;
        Ok(Ctx::for_store(g, store).await)
    }

    /// For commands that only read: no AWS caller-identity lookup.
    pub async fn open_read(g: &Global) -> Result<Ctx> {
        let store = Registry::open(&g.store_config(None)?).await?;
        let (name, _) = audit::local_actor();
        Ok(Ctx {
            store,
            actor: Actor {
                name,
                source: "local".into(),
                aws: None,
            },
            quiet: g.quiet,
            json: g.json,
        })
    }

    pub async fn for_store(g: &Global, store: Registry) -> Ctx {
        let actor = Actor::resolve(g.actor.as_deref(), "configured", &store).await;
        Ctx {
            store,
            actor,
            quiet: g.quiet,
            json: g.json,
        }
    }

    fn say(&self, msg: impl std::fmt::Display) {
        if !self.quiet {
            eprintln!("{msg}");
        }
    }
}

fn now() -> String {
    audit::rfc3339(audit::now())
}

/// `2025-07-21 21:18` from an RFC 3339 time.
fn short_time(t: &str) -> String {
    match OffsetDateTime::parse(t, &Rfc3339) {
        Ok(t) => {
            let t = t.to_offset(time::UtcOffset::UTC);
            let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]");
            t.format(&f).unwrap_or_else(|_| t.to_string())
        }
        Err(_) => t.to_string(),
    }
}

fn short_digest(d: &Digest) -> String {
    format!("sha256:{}", &d.hex()[..12])
}

// ---------------------------------------------------------------- names

fn check_app_name(app: &str) -> Result<()> {
    if app.contains(':') || app.contains('@') {
        bail!("invalid app name {app:?}: name the app without a tag or digest (e.g. myapp)");
    }
    validate_name(app)?;
    Ok(())
}

async fn app_exists(store: &Registry, app: &str) -> Result<bool> {
    Ok(!store.tags(app).await?.is_empty()
        || !store
            .list_names(&store.layout().app_prefix(app))
            .await?
            .is_empty())
}

async fn require_app(store: &Registry, app: &str) -> Result<()> {
    if !app_exists(store, app).await? {
        bail!("app {app} not found in store {}", store.display);
    }
    Ok(())
}

/// A semantic version as a tag: `1.2.0` or `v1.2.0` (pre-releases allowed; build
/// metadata is not, as `+` cannot appear in a registry tag).
pub fn parse_version(s: &str) -> Result<(semver::Version, bool)> {
    let (bare, v) = match s.strip_prefix('v') {
        Some(rest) => (rest, true),
        None => (s, false),
    };
    if s.contains('+') {
        bail!("invalid version {s:?}: build metadata (+...) cannot be part of a registry tag");
    }
    let ver = semver::Version::parse(bare).map_err(|e| {
        anyhow!("invalid version {s:?}: not a semantic version MAJOR.MINOR.PATCH[-PRERELEASE], optionally with a v prefix ({e})")
    })?;
    if !crate::model::reference::valid_tag(s) {
        bail!("invalid version {s:?}: not a valid registry tag");
    }
    Ok((ver, v))
}

fn looks_like_version(s: &str) -> bool {
    parse_version(s).is_ok()
}

/// Environment names: lowercase letters, digits, `-` and `_`, starting with a letter
/// (so never a version or a git-stable image tag).
pub fn check_env_name(env: &str) -> Result<()> {
    let b = env.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'_'));
    if !ok || looks_like_version(env) {
        bail!("invalid environment name {env:?}: use lowercase letters, digits, '-' and '_', starting with a letter (e.g. production)");
    }
    Ok(())
}

/// What a name means within an app: environments, versions and image tags share the
/// registry's tag namespace, and s3dock keeps them apart.
enum Named {
    Env(Box<EnvRecord>),
    Version(VersionRecord),
    Image(Digest),
}

async fn lookup(store: &Registry, app: &str, name: &str) -> Result<Option<Named>> {
    if let Some((e, _)) = read_env(store, app, name).await? {
        return Ok(Some(Named::Env(Box::new(e))));
    }
    if let Some(v) = read_version(store, app, name).await? {
        return Ok(Some(Named::Version(v)));
    }
    if !crate::model::reference::valid_tag(name) {
        return Ok(None);
    }
    Ok(store.tag_target(app, name).await?.map(Named::Image))
}

/// The git-stable tag's commit prefix: `20250721-2118-f7a5a27` → `f7a5a27`.
pub fn stamp_commit(tag: &str) -> Option<&str> {
    let b = tag.as_bytes();
    let ok = b.len() == 21
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'-'
        && b[9..13].iter().all(u8::is_ascii_digit)
        && b[13] == b'-'
        && b[14..]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c));
    ok.then(|| &tag[14..])
}

async fn commit_of(store: &Registry, app: &str, image_tag: &str) -> Option<String> {
    if let Ok(Some(r)) = read_image(store, app, image_tag).await {
        if let Some(g) = r.git {
            return Some(g.commit);
        }
    }
    stamp_commit(image_tag).map(str::to_string)
}

// ---------------------------------------------------------------- git

fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run git (is it installed?)")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!(
            "git {} failed in {}: {}",
            args.join(" "),
            dir.display(),
            err.lines().next().unwrap_or("").trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[derive(Debug, Clone)]
pub struct Commit {
    pub hash: String,
    pub committer_time: i64,
    pub author: String,
}

impl Commit {
    /// `{YYYYMMDD-HHMM}-{7 hex}` from the committer time in UTC.
    pub fn stamp(&self) -> Result<String> {
        let t = OffsetDateTime::from_unix_timestamp(self.committer_time)?;
        let f = time::macros::format_description!("[year][month][day]-[hour][minute]");
        Ok(format!("{}-{}", t.format(&f)?, &self.hash[..7]))
    }

    pub fn info(&self) -> GitInfo {
        GitInfo {
            commit: self.hash.clone(),
            author: Some(self.author.clone()),
            time: OffsetDateTime::from_unix_timestamp(self.committer_time)
                .ok()
                .and_then(|t| t.format(&Rfc3339).ok()),
        }
    }
}

fn git_toplevel(dir: &Path) -> Result<PathBuf> {
    if !dir.is_dir() {
        bail!("build context {} is not a directory", dir.display());
    }
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "--show-toplevel"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .context("cannot run git (is it installed?)")?;
    if !out.status.success() {
        bail!(
            "{} is not in a git repository: git-stable tags need a commit",
            dir.display()
        );
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn commit_at(dir: &Path, rev: &str) -> Result<Commit> {
    let out = git(
        dir,
        &[
            "log",
            "-1",
            "--no-show-signature",
            "--format=%H%x00%ct%x00%an <%ae>",
            rev,
        ],
    )?;
    let mut parts = out.trim_end_matches('\n').split('\0');
    let (Some(hash), Some(ct), Some(author)) = (parts.next(), parts.next(), parts.next()) else {
        bail!("unexpected git log output in {}", dir.display());
    };
    Ok(Commit {
        hash: hash.to_string(),
        committer_time: ct
            .parse()
            .with_context(|| format!("unexpected committer time {ct:?} from git"))?,
        author: author.to_string(),
    })
}

/// Modified, staged and untracked (not ignored) files, as `git status --porcelain` shows them.
fn dirty_files(top: &Path) -> Result<Vec<String>> {
    Ok(
        git(top, &["status", "--porcelain=v1", "--untracked-files=all"])?
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.trim().to_string())
            .collect(),
    )
}

fn refuse_dirty(top: &Path) -> Result<()> {
    let dirty = dirty_files(top)?;
    if dirty.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = dirty.iter().take(20).map(String::as_str).collect();
    let more = if dirty.len() > shown.len() {
        format!(" and {} more", dirty.len() - shown.len())
    } else {
        String::new()
    };
    bail!(
        "refusing to build from a dirty git tree at {} (commit or stash first; the tag must name a commit): {}{more}",
        top.display(),
        shown.join(", ")
    )
}

// ---------------------------------------------------------------- stamp, build

#[derive(Args, Debug)]
pub struct StampArgs {
    /// App name: prints APP:TAG instead of TAG
    pub app: Option<String>,
    /// Directory inside the git repository
    #[arg(long, short = 'C', default_value = ".")]
    pub context: PathBuf,
    /// Print the tag even if the tree has uncommitted changes
    #[arg(long)]
    pub allow_dirty: bool,
}

pub fn stamp(a: StampArgs) -> Result<()> {
    if let Some(app) = &a.app {
        check_app_name(app)?;
    }
    let top = git_toplevel(&a.context)?;
    if !a.allow_dirty {
        refuse_dirty(&top)?;
    }
    let tag = commit_at(&top, "HEAD")?.stamp()?;
    match &a.app {
        Some(app) => println!("{app}:{tag}"),
        None => println!("{tag}"),
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Builder {
    Docker,
    Podman,
    Buildah,
}

impl Builder {
    fn bin(self) -> &'static str {
        match self {
            Builder::Docker => "docker",
            Builder::Podman => "podman",
            Builder::Buildah => "buildah",
        }
    }
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// App (repository) name; the tag is {YYYYMMDD-HHMM}-{7-hex commit}
    pub app: String,
    /// Dockerfile [default: CONTEXT/Dockerfile]
    #[arg(long, short = 'f')]
    pub dockerfile: Option<PathBuf>,
    /// Build context, inside the git repository
    #[arg(long, default_value = ".")]
    pub context: PathBuf,
    /// Target platform, e.g. linux/arm64
    #[arg(long)]
    pub platform: Option<String>,
    /// Builder CLI to run [default: docker, or the profile's builder]
    #[arg(long, value_enum, env = "S3DOCK_BUILDER")]
    pub builder: Option<Builder>,
    /// --build-arg KEY=VALUE, passed to the builder
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// Stream the builder's save output straight into a push
    #[arg(long)]
    pub push: bool,
    /// Layer compression for --push [default: gzip, or the profile's]
    #[arg(long, env = "S3DOCK_COMPRESSION")]
    pub compression: Option<Compression>,
    /// Compression level [default: gzip 1, zstd 3]
    #[arg(long)]
    pub level: Option<i32>,
}

/// The builder's output goes to our stderr: stdout carries only data.
fn to_stderr() -> Result<Stdio> {
    Ok(Stdio::from(std::io::stderr().as_fd().try_clone_to_owned()?))
}

pub async fn build(g: &Global, a: BuildArgs) -> Result<()> {
    check_app_name(&a.app)?;
    let builder = match (a.builder, g.profile_builder.as_deref()) {
        (Some(b), _) => b,
        (None, Some(p)) => Builder::from_str(p, true).map_err(|e| anyhow!(e))?,
        (None, None) => Builder::Docker,
    };
    let top = git_toplevel(&a.context)?;
    refuse_dirty(&top)?;
    let commit = commit_at(&top, "HEAD")?;
    let tag = commit.stamp()?;
    let reference = format!("{}:{tag}", a.app);
    // Open the store first, so a bad store fails before a long build.
    let ctx = if a.push {
        let ctx = Ctx::open(g).await?;
        check_push_target(&ctx.store, &Reference::with_tag(&a.app, &tag), false).await?;
        Some(ctx)
    } else {
        None
    };
    let dockerfile = a
        .dockerfile
        .clone()
        .unwrap_or_else(|| a.context.join("Dockerfile"));
    // `docker build`, `podman build` and `buildah build` take the same flags here.
    let mut cmd = Command::new(builder.bin());
    cmd.arg("build")
        .arg("-t")
        .arg(&reference)
        .arg("-f")
        .arg(&dockerfile);
    if let Some(p) = &a.platform {
        cmd.arg("--platform").arg(p);
    }
    for b in &a.build_args {
        cmd.arg("--build-arg").arg(b);
    }
    cmd.arg("--label")
        .arg(format!("org.opencontainers.image.revision={}", commit.hash))
        .arg(&a.context)
        .stdin(Stdio::null())
        .stdout(to_stderr()?);
    if !g.quiet {
        eprintln!("building {reference} with {}", builder.bin());
    }
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {} (is it installed?)", builder.bin()))?;
    if !status.success() {
        bail!("{} build of {reference} failed ({status})", builder.bin());
    }
    let mut summary = serde_json::json!({"reference": reference, "commit": commit.hash});
    if let Some(ctx) = ctx {
        let mut save = Command::new(builder.bin());
        match builder {
            Builder::Docker => save.arg("save").arg(&reference),
            Builder::Podman => save
                .args(["save", "--format", "docker-archive"])
                .arg(&reference),
            Builder::Buildah => save
                .arg("push")
                .arg(&reference)
                .arg(format!("docker-archive:/dev/stdout:{reference}")),
        };
        let mut child = save
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {} save", builder.bin()))?;
        let out = child.stdout.take().expect("piped stdout");
        let opts = PushOptions {
            compression: a
                .compression
                .or(g.profile_compression)
                .unwrap_or(Compression::Gzip),
            level: a.level,
            platform: a.platform.clone().unwrap_or_else(host_platform),
            use_index: true,
            resume: true,
        };
        let stats = Arc::new(Stats::default());
        let pushed = push(
            &ctx.store,
            out,
            None,
            Some(Reference::with_tag(&a.app, &tag)),
            opts,
            stats,
            g.show_progress(),
        )
        .await;
        if pushed.is_err() {
            let _ = child.kill();
        }
        let status = tokio::task::spawn_blocking(move || child.wait()).await??;
        let pushed = pushed?;
        if !status.success() {
            bail!("{} save of {reference} failed ({status})", builder.bin());
        }
        let recorded = record_push(&ctx, &pushed, Some(commit.info())).await?;
        report_push(&ctx, &recorded);
        summary["pushed"] = serde_json::to_value(&recorded)?;
        summary["store"] = ctx.store.display.clone().into();
    }
    if g.json {
        println!("{summary}");
    } else {
        println!("{reference}");
    }
    Ok(())
}

// ---------------------------------------------------------------- push metadata

/// Checks before a push to `r`: the tag must not be an environment or a version (those
/// move only with promote/tag), and with `no_clobber` it must not exist yet.
pub async fn check_push_target(store: &Registry, r: &Reference, no_clobber: bool) -> Result<()> {
    let Some(tag) = r.tag_or_latest() else {
        return Ok(());
    };
    let app = &r.name;
    if read_env(store, app, tag).await?.is_some() {
        bail!("{app}:{tag} is an environment: move it with s3dock promote, not push");
    }
    if read_version(store, app, tag).await?.is_some() {
        bail!("{app}:{tag} is a version: move it with s3dock tag --force, not push");
    }
    if no_clobber {
        if let Some(d) = store.tag_target(app, tag).await? {
            bail!("{app}:{tag} already exists ({d}); --no-clobber refuses to replace it");
        }
    }
    Ok(())
}

/// What recording one pushed image did.
#[derive(Debug, Clone, Serialize)]
pub struct PushRecord {
    pub reference: String,
    pub digest: Digest,
    /// Same content as the tag already had: nothing was recorded.
    pub unchanged: bool,
    /// The content the tag had before (kept reachable by digest, archived in the record).
    pub previous: Option<Digest>,
    pub event: Option<String>,
}

/// Labels in an image config (`config.Labels`).
fn config_label(cfg: &[u8], label: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(cfg).ok()?;
    v.get("config")?
        .get("Labels")?
        .get(label)?
        .as_str()
        .map(str::to_string)
}

/// Git details for an image pushed without `build`: the commit from the image's
/// revision label or its git-stable tag, completed from the local repository if it
/// has that commit.
fn git_for(tag: &str, cfg: &[u8]) -> Option<GitInfo> {
    let rev = config_label(cfg, "org.opencontainers.image.revision")
        .filter(|r| r.len() >= 7 && r.bytes().all(|b| b.is_ascii_hexdigit()))
        .or_else(|| stamp_commit(tag).map(str::to_string))?;
    match commit_at(Path::new("."), &format!("{rev}^{{commit}}")) {
        Ok(c) if c.hash.starts_with(&rev) => Some(c.info()),
        _ => Some(GitInfo {
            commit: rev,
            author: None,
            time: None,
        }),
    }
}

/// Records metadata and a push event for each image `push::push` committed. A tag
/// that already held the same content is reported unchanged and nothing is written.
pub async fn record_push(
    ctx: &Ctx,
    pushed: &[PushedImage],
    git: Option<GitInfo>,
) -> Result<Vec<PushRecord>> {
    let store = &ctx.store;
    let mut out = Vec::new();
    for p in pushed {
        let r = Reference::parse(&p.reference)?;
        let (app, tag) = (
            r.name.clone(),
            r.tag_or_latest().unwrap_or("latest").to_string(),
        );
        let cfg = store.get_small_blob(&p.config_digest).await?;
        let platform = Config::parse(cfg.clone())
            .ok()
            .map(|c| format!("{}/{}", c.os, c.architecture));
        let git = git.clone().or_else(|| git_for(&tag, &cfg));
        let size = cfg.len() as u64 + p.layers.iter().map(|l| l.size).sum::<u64>();
        let mut compressions: Vec<&str> = p.layers.iter().map(|l| l.compression.name()).collect();
        compressions.sort();
        compressions.dedup();
        let key = store.layout().image_record(&app, &tag);
        let pushed_at = now();
        let mut previous = None;
        let mut unchanged = false;
        for attempt in 0.. {
            if attempt >= CAS_ATTEMPTS {
                bail!("cannot record {app}:{tag}: too many concurrent writers");
            }
            let cur: Option<(ImageRecord, String)> = store.get_json_with_etag(&key).await?;
            let mut archived = Vec::new();
            previous = p.previous;
            if let Some((c, _)) = &cur {
                check_schema(c.schema_version, &format!("image record {app}:{tag}"))?;
                if c.digest == p.manifest_digest {
                    unchanged = true;
                    break;
                }
                archived = c.archived.clone();
                archived.push(Archived {
                    digest: c.digest,
                    pushed_at: c.pushed_at.clone(),
                    pushed_by: c.pushed_by.name.clone(),
                    archived_at: pushed_at.clone(),
                });
                previous = Some(c.digest);
            }
            let rec = ImageRecord {
                schema_version: RECORD_SCHEMA,
                kind: "image".into(),
                app: app.clone(),
                tag: tag.clone(),
                digest: p.manifest_digest,
                config_digest: p.config_digest,
                platform: platform.clone(),
                size,
                compression: compressions.join(","),
                layers: p.layers.clone(),
                git: git.clone(),
                pushed_at: pushed_at.clone(),
                pushed_by: ctx.actor.clone(),
                archived,
            };
            if store
                .put_json_if(&key, &rec, cur.as_ref().map(|(_, e)| e.as_str()))
                .await?
            {
                break;
            }
            backoff(attempt).await;
        }
        let event = if unchanged {
            None
        } else {
            let ev = Event::new(
                "push",
                &app,
                &ctx.actor,
                serde_json::json!({
                    "image": format!("{app}:{tag}"),
                    "tag": tag,
                    "digest": p.manifest_digest,
                    "config_digest": p.config_digest,
                    "size": size,
                    "platform": platform,
                    "compression": compressions.join(","),
                    "git": git,
                }),
                previous.map(|d| serde_json::json!({"digest": d, "archived": true})),
                git.as_ref().map(|g| g.commit.clone()),
            );
            Some(audit::record(store, &ev).await?)
        };
        out.push(PushRecord {
            reference: format!("{app}:{tag}"),
            digest: p.manifest_digest,
            unchanged,
            previous,
            event,
        });
    }
    Ok(out)
}

/// Tells the user what recording did (stderr).
pub fn report_push(ctx: &Ctx, recs: &[PushRecord]) {
    for r in recs {
        if r.unchanged {
            ctx.say(format!(
                "{} already holds this content ({}): nothing changed",
                r.reference, r.digest
            ));
        } else if let Some(p) = r.previous {
            ctx.say(format!(
                "{} replaced {p}, which stays pullable as {}@{p}",
                r.reference,
                r.reference.split(':').next().unwrap_or("")
            ));
        }
    }
}

// ---------------------------------------------------------------- tag

#[derive(Args, Debug)]
pub struct TagArgs {
    /// The image: APP:IMAGE_TAG (or APP:VERSION to alias a version)
    pub image: String,
    /// Semantic version, e.g. v1.2.0 or 1.2.0 (one style per app)
    pub version: String,
    /// Move the version if it already names another image (recorded)
    #[arg(long)]
    pub force: bool,
}

fn app_and_tag(s: &str, what: &str) -> Result<(String, String)> {
    let r = Reference::parse(s)?;
    match (r.tag, r.digest) {
        (Some(t), None) => Ok((r.name, t)),
        _ => bail!("{what} must be APP:TAG, e.g. myapp:20250721-2118-f7a5a27 (got {s:?})"),
    }
}

/// Points the version's registry tag at its record's digest, until the record is stable
/// (a concurrent `tag --force` may have moved it meanwhile).
async fn materialise_version(store: &Registry, app: &str, version: &str) -> Result<()> {
    for _ in 0..20 {
        let Some(v) = read_version(store, app, version).await? else {
            bail!("version {version} of {app} disappeared");
        };
        if store.tag_target(app, version).await? != Some(v.digest) {
            store.set_tag(app, version, &v.digest).await?;
        }
        if read_version(store, app, version).await?.as_ref() == Some(&v) {
            return Ok(());
        }
    }
    bail!("version {version} of {app} kept moving; run s3dock tag again")
}

pub async fn tag(ctx: &Ctx, a: TagArgs) -> Result<()> {
    let store = &ctx.store;
    let (app, source) = app_and_tag(&a.image, "the image")?;
    let (_, has_v) = parse_version(&a.version)?;
    let version = a.version.clone();
    require_app(store, &app).await?;
    let (image_tag, digest) = match lookup(store, &app, &source).await? {
        Some(Named::Image(d)) => (source.clone(), d),
        Some(Named::Version(v)) => (v.image_tag, v.digest),
        Some(Named::Env(_)) => bail!(
            "{app}:{source} is an environment; tag an image tag or a version (s3dock current {app} {source} shows its image)"
        ),
        None => bail!(
            "{} {source} of {app} not found in store {}",
            if looks_like_version(&source) { "version" } else { "image tag" },
            store.display
        ),
    };
    // One prefix style per app.
    let versions = record_names(store, &store.layout().version_records_prefix(&app)).await?;
    if let Some(other) = versions
        .iter()
        .find(|v| v.starts_with('v') != has_v && **v != version)
    {
        let fixed = if has_v {
            version.trim_start_matches('v').to_string()
        } else {
            format!("v{version}")
        };
        bail!(
            "{app}'s versions are written {} a v prefix (e.g. {other}): use {fixed}",
            if other.starts_with('v') {
                "with"
            } else {
                "without"
            }
        );
    }
    if read_env(store, &app, &version).await?.is_some() {
        bail!("{app}:{version} is an environment, not a version");
    }
    let key = store.layout().version_record(&app, &version);
    let mut previous: Option<VersionRecord> = None;
    for attempt in 0.. {
        if attempt >= CAS_ATTEMPTS {
            bail!("cannot tag {app}:{version}: too many concurrent writers");
        }
        let cur: Option<(VersionRecord, String)> = store.get_json_with_etag(&key).await?;
        let now = now();
        let rec = match &cur {
            Some((c, _)) => {
                check_schema(c.schema_version, &format!("version record {app}:{version}"))?;
                if c.digest == digest && c.image_tag == image_tag {
                    ctx.say(format!(
                        "{app}:{version} already names {app}:{image_tag} ({digest}): nothing changed"
                    ));
                    if ctx.json {
                        println!(
                            "{}",
                            serde_json::json!({"app": app, "version": version, "image_tag": image_tag, "digest": digest, "unchanged": true})
                        );
                    }
                    return Ok(());
                }
                if !a.force {
                    bail!(
                        "version {version} of {app} already names {app}:{} ({}): use --force to move it",
                        c.image_tag,
                        short_digest(&c.digest)
                    );
                }
                let mut moves = c.moves.clone();
                moves.push(VersionMove {
                    image_tag: c.image_tag.clone(),
                    digest: c.digest,
                    tagged_at: c.tagged_at.clone(),
                    tagged_by: c.tagged_by.clone(),
                    moved_at: now.clone(),
                });
                VersionRecord {
                    image_tag: image_tag.clone(),
                    digest,
                    tagged_at: now,
                    tagged_by: ctx.actor.name.clone(),
                    moves,
                    ..c.clone()
                }
            }
            None => {
                if let Some(d) = store.tag_target(&app, &version).await? {
                    bail!(
                        "{app}:{version} is already an image tag ({}), not a version: pick another version",
                        short_digest(&d)
                    );
                }
                VersionRecord {
                    schema_version: RECORD_SCHEMA,
                    kind: "version".into(),
                    app: app.clone(),
                    version: version.clone(),
                    image_tag: image_tag.clone(),
                    digest,
                    tagged_at: now,
                    tagged_by: ctx.actor.name.clone(),
                    moves: Vec::new(),
                }
            }
        };
        if store
            .put_json_if(&key, &rec, cur.as_ref().map(|(_, e)| e.as_str()))
            .await?
        {
            previous = cur.map(|(c, _)| c);
            break;
        }
        backoff(attempt).await;
    }
    materialise_version(store, &app, &version).await?;
    // Environments that follow this version now point at its new image.
    if previous.is_some() {
        for env in record_names(store, &store.layout().env_records_prefix(&app)).await? {
            if let Some((e, _)) = read_env(store, &app, &env).await? {
                if e.target.kind == TargetKind::Version && e.target.name == version {
                    materialise_env(store, &app, &env).await?;
                }
            }
        }
    }
    let ev = Event::new(
        "tag",
        &app,
        &ctx.actor,
        serde_json::json!({
            "version": version,
            "image": format!("{app}:{image_tag}"),
            "image_tag": image_tag,
            "digest": digest,
        }),
        previous.as_ref().map(|p| {
            serde_json::json!({"image_tag": p.image_tag, "digest": p.digest, "tagged_at": p.tagged_at, "tagged_by": p.tagged_by})
        }),
        commit_of(store, &app, &image_tag).await,
    );
    let event = audit::record(store, &ev).await?;
    match &previous {
        Some(p) => ctx.say(format!(
            "moved {app}:{version} from {app}:{} to {app}:{image_tag} ({digest})",
            p.image_tag
        )),
        None => ctx.say(format!(
            "tagged {app}:{image_tag} as {app}:{version} ({digest})"
        )),
    }
    if ctx.json {
        println!(
            "{}",
            serde_json::json!({"app": app, "version": version, "image_tag": image_tag, "digest": digest,
                "previous": previous.map(|p| serde_json::json!({"image_tag": p.image_tag, "digest": p.digest})),
                "event": event})
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- promote, current

#[derive(Args, Debug)]
pub struct PromoteArgs {
    /// APP:TAG ENV, or APP TAG ENV (TAG: an image tag, a version, or another environment)
    #[arg(num_args = 2..=3, required = true, value_names = ["APP[:TAG]", "TAG|ENV"])]
    pub args: Vec<String>,
}

/// An environment resolved for reading: a version target is followed.
#[derive(Debug, Clone, Serialize)]
pub struct Resolved {
    pub app: String,
    pub env: String,
    pub reference: String,
    pub image_tag: String,
    pub digest: Digest,
    pub target: Target,
    pub generation: u64,
    pub promoted_at: String,
    pub promoted_by: String,
}

async fn env_names(store: &Registry, app: &str) -> Result<Vec<String>> {
    record_names(store, &store.layout().env_records_prefix(app)).await
}

/// Resolves `env` of `app` to an image: the version it names (as the version is now),
/// or the image tag and the digest it had when promoted.
pub async fn resolve_env(store: &Registry, app: &str, env: &str) -> Result<Resolved> {
    check_app_name(app)?;
    let Some((rec, _)) = read_env(store, app, env).await? else {
        require_app(store, app).await?;
        let envs = env_names(store, app).await?;
        if envs.is_empty() {
            bail!("environment {env} of {app} not found: {app} has no environments yet (s3dock promote {app}:TAG {env})");
        }
        bail!(
            "environment {env} of {app} not found (environments: {})",
            envs.join(", ")
        );
    };
    resolve_record(store, rec).await
}

async fn resolve_record(store: &Registry, rec: EnvRecord) -> Result<Resolved> {
    let (image_tag, digest) = match rec.target.kind {
        TargetKind::Image => (rec.image_tag.clone(), rec.digest),
        TargetKind::Version => match read_version(store, &rec.app, &rec.target.name).await? {
            Some(v) => (v.image_tag, v.digest),
            None => bail!(
                "environment {} of {} points to version {}, which is missing from the store",
                rec.env,
                rec.app,
                rec.target.name
            ),
        },
    };
    Ok(Resolved {
        reference: format!("{}:{image_tag}", rec.app),
        app: rec.app,
        env: rec.env,
        image_tag,
        digest,
        target: rec.target,
        generation: rec.generation,
        promoted_at: rec.promoted_at,
        promoted_by: rec.promoted_by,
    })
}

/// Points the environment's registry tag at what its record resolves to now; repeated
/// until the record is stable, so a slower concurrent promoter cannot leave the tag
/// behind the record.
async fn materialise_env(store: &Registry, app: &str, env: &str) -> Result<Digest> {
    let mut last = None;
    for _ in 0..20 {
        let Some((rec, _)) = read_env(store, app, env).await? else {
            bail!("environment {env} of {app} disappeared");
        };
        let gen = rec.generation;
        let r = resolve_record(store, rec).await?;
        if store.tag_target(app, env).await? != Some(r.digest) {
            store.set_tag(app, env, &r.digest).await?;
        }
        last = Some(r.digest);
        match read_env(store, app, env).await? {
            Some((again, _)) if again.generation == gen => break,
            _ => continue,
        }
    }
    last.ok_or_else(|| anyhow!("environment {env} of {app} did not settle"))
}

pub async fn promote(ctx: &Ctx, a: PromoteArgs) -> Result<()> {
    let store = &ctx.store;
    let (app, name, env) = match a.args.as_slice() {
        [image, env] => {
            let (app, tag) = app_and_tag(image, "with two arguments, the first")?;
            (app, tag, env.clone())
        }
        [app, name, env] => {
            check_app_name(app)?;
            (app.clone(), name.clone(), env.clone())
        }
        _ => bail!("usage: s3dock promote APP:TAG ENV, or s3dock promote APP TAG ENV"),
    };
    check_env_name(&env)?;
    require_app(store, &app).await?;
    let (target, image_tag, digest) = match lookup(store, &app, &name).await? {
        Some(Named::Version(v)) => (
            Target {
                kind: TargetKind::Version,
                name: name.clone(),
            },
            v.image_tag,
            v.digest,
        ),
        Some(Named::Image(d)) => (
            Target {
                kind: TargetKind::Image,
                name: name.clone(),
            },
            name.clone(),
            d,
        ),
        Some(Named::Env(e)) => {
            // Promote what that environment runs now (staging → production).
            let r = resolve_record(store, *e).await?;
            (r.target, r.image_tag, r.digest)
        }
        None if looks_like_version(&name) => {
            let versions =
                record_names(store, &store.layout().version_records_prefix(&app)).await?;
            bail!(
                "version {name} of {app} not found ({})",
                if versions.is_empty() {
                    "it has no versions yet: s3dock tag APP:TAG VERSION".to_string()
                } else {
                    format!("versions: {}", versions.join(", "))
                }
            );
        }
        None => bail!(
            "image tag {name} of {app} not found in store {}",
            store.display
        ),
    };
    if read_version(store, &app, &env).await?.is_some() {
        bail!("{app}:{env} is a version, not an environment");
    }
    let key = store.layout().env_record(&app, &env);
    let mut previous = None;
    let mut new = None;
    for attempt in 0.. {
        if attempt >= CAS_ATTEMPTS {
            bail!("cannot promote to {env} of {app}: too many concurrent promotions");
        }
        let cur = read_env(store, &app, &env).await?;
        match &cur {
            Some((c, _)) if c.target == target && c.digest == digest => {
                ctx.say(format!(
                    "{env} of {app} already points to {} ({app}:{image_tag}, {digest}): nothing changed",
                    target.name
                ));
                if ctx.json {
                    println!(
                        "{}",
                        serde_json::json!({"app": app, "env": env, "target": target, "image_tag": image_tag, "digest": digest, "generation": c.generation, "unchanged": true})
                    );
                }
                return Ok(());
            }
            None => {
                if let Some(d) = store.tag_target(&app, &env).await? {
                    bail!(
                        "{app}:{env} is already an image tag ({}), not an environment: pick another name",
                        short_digest(&d)
                    );
                }
            }
            _ => {}
        }
        let rec = EnvRecord {
            schema_version: RECORD_SCHEMA,
            kind: "environment".into(),
            app: app.clone(),
            env: env.clone(),
            target: target.clone(),
            image_tag: image_tag.clone(),
            digest,
            generation: cur.as_ref().map_or(1, |(c, _)| c.generation + 1),
            promoted_at: now(),
            promoted_by: ctx.actor.name.clone(),
        };
        if store
            .put_json_if(&key, &rec, cur.as_ref().map(|(_, e)| e.as_str()))
            .await?
        {
            previous = cur.map(|(c, _)| c);
            new = Some(rec);
            break;
        }
        tracing::debug!("promotion of {env} lost a race (attempt {attempt}); retrying");
        backoff(attempt).await;
    }
    let new = new.expect("the loop ends with a write");
    materialise_env(store, &app, &env).await?;
    let ev = Event::new(
        "promote",
        &app,
        &ctx.actor,
        serde_json::json!({
            "env": env,
            "kind": target.kind,
            "name": target.name,
            "image": format!("{app}:{image_tag}"),
            "image_tag": image_tag,
            "digest": digest,
            "generation": new.generation,
        }),
        previous
            .as_ref()
            .map(|p| serde_json::to_value(p).expect("records serialize")),
        commit_of(store, &app, &image_tag).await,
    );
    let event = audit::record(store, &ev).await?;
    ctx.say(format!(
        "promoted {app}:{} to {env} ({app}:{image_tag}, {digest}){}",
        target.name,
        previous
            .as_ref()
            .map(|p| format!(", was {}", p.target.name))
            .unwrap_or_default()
    ));
    if ctx.json {
        println!(
            "{}",
            serde_json::json!({"app": app, "env": env, "target": target, "image_tag": image_tag, "digest": digest,
                "generation": new.generation, "previous": previous, "event": event})
        );
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct CurrentArgs {
    pub app: String,
    pub env: String,
    /// Print APP:TAG@sha256:... (pullable by digest)
    #[arg(long)]
    pub digest: bool,
}

pub async fn current(ctx: &Ctx, a: CurrentArgs) -> Result<()> {
    check_app_name(&a.app)?;
    let r = resolve_env(&ctx.store, &a.app, &a.env).await?;
    if ctx.json {
        println!("{}", serde_json::to_string(&r)?);
    } else if a.digest {
        println!("{}@{}", r.reference, r.digest);
    } else {
        println!("{}", r.reference);
    }
    if r.target.kind == TargetKind::Image {
        if let Ok(Some(now)) = ctx.store.tag_target(&a.app, &r.image_tag).await {
            if now != r.digest {
                tracing::warn!(
                    "{} has been pushed again since it was promoted; {} runs {}",
                    r.reference,
                    a.env,
                    r.digest
                );
            }
        }
    }
    Ok(())
}

/// For `pull APP NAME`: an environment or version resolves to `app:image_tag@digest`,
/// anything else is taken as a tag.
pub async fn resolve_for_pull(store: &Registry, app: &str, name: &str) -> Result<Reference> {
    check_app_name(app)?;
    match lookup(store, app, name).await? {
        Some(Named::Env(e)) => {
            let r = resolve_record(store, *e).await?;
            Ok(Reference {
                name: app.to_string(),
                tag: Some(r.image_tag),
                digest: Some(r.digest),
            })
        }
        Some(Named::Version(v)) => Ok(Reference {
            name: app.to_string(),
            tag: Some(v.image_tag),
            digest: Some(v.digest),
        }),
        Some(Named::Image(_)) => Ok(Reference::with_tag(app, name)),
        None => {
            require_app(store, app).await?;
            bail!(
                "{app} has no environment, version or image tag {name:?} in store {}",
                store.display
            )
        }
    }
}

// ---------------------------------------------------------------- list

#[derive(Args, Debug)]
pub struct ListArgs {
    /// App to show; all apps when absent
    pub app: Option<String>,
}

#[derive(Debug, Serialize)]
struct ImageRow {
    tag: String,
    digest: Digest,
    pushed_at: Option<String>,
    size: Option<u64>,
    commit: Option<String>,
    platform: Option<String>,
}

#[derive(Debug, Serialize)]
struct VersionRow {
    version: String,
    image_tag: String,
    digest: Digest,
    tagged_at: String,
}

pub async fn list(ctx: &Ctx, a: ListArgs) -> Result<()> {
    let store = &ctx.store;
    let Some(app) = a.app else {
        return list_apps(ctx).await;
    };
    check_app_name(&app)?;
    require_app(store, &app).await?;
    let version_names = record_names(store, &store.layout().version_records_prefix(&app)).await?;
    let env_list = env_names(store, &app).await?;
    let recorded: BTreeSet<String> =
        record_names(store, &store.layout().image_records_prefix(&app))
            .await?
            .into_iter()
            .collect();
    let mut images = Vec::new();
    for tag in store.tags(&app).await? {
        if version_names.contains(&tag) || env_list.contains(&tag) {
            continue;
        }
        let Some(digest) = store.tag_target(&app, &tag).await? else {
            continue;
        };
        let rec = if recorded.contains(&tag) {
            read_image(store, &app, &tag).await?
        } else {
            None
        };
        images.push(ImageRow {
            tag: tag.clone(),
            digest,
            pushed_at: rec.as_ref().map(|r| r.pushed_at.clone()),
            size: rec.as_ref().map(|r| r.size),
            commit: rec
                .as_ref()
                .and_then(|r| r.git.as_ref().map(|g| g.commit.clone()))
                .or_else(|| stamp_commit(&tag).map(str::to_string)),
            platform: rec.and_then(|r| r.platform),
        });
    }
    images.sort_by(|a, b| b.pushed_at.cmp(&a.pushed_at).then(b.tag.cmp(&a.tag)));
    let mut versions = Vec::new();
    for v in &version_names {
        if let Some(r) = read_version(store, &app, v).await? {
            versions.push(VersionRow {
                version: r.version,
                image_tag: r.image_tag,
                digest: r.digest,
                tagged_at: r.tagged_at,
            });
        }
    }
    versions.sort_by(|a, b| {
        let pa = parse_version(&a.version).ok().map(|p| p.0);
        let pb = parse_version(&b.version).ok().map(|p| p.0);
        pb.cmp(&pa)
    });
    let mut envs = Vec::new();
    for e in &env_list {
        match resolve_env(store, &app, e).await {
            Ok(r) => envs.push(serde_json::to_value(&r)?),
            Err(err) => envs.push(serde_json::json!({"env": e, "error": format!("{err:#}")})),
        }
    }
    if ctx.json {
        println!(
            "{}",
            serde_json::json!({"app": app, "images": images, "versions": versions, "environments": envs})
        );
        return Ok(());
    }
    println!("{app}");
    println!("  images:");
    if images.is_empty() {
        println!("    (none)");
    }
    for i in &images {
        println!(
            "    {:<24} {:<16} {:>9}  {:<7}  {}",
            i.tag,
            i.pushed_at
                .as_deref()
                .map(short_time)
                .unwrap_or_else(|| "-".into()),
            i.size.map(human_bytes).unwrap_or_else(|| "-".into()),
            i.commit
                .as_deref()
                .map(|c| &c[..c.len().min(7)])
                .unwrap_or("-"),
            short_digest(&i.digest)
        );
    }
    println!("  versions:");
    if versions.is_empty() {
        println!("    (none)");
    }
    for v in &versions {
        println!(
            "    {:<24} {app}:{}  {}",
            v.version,
            v.image_tag,
            short_digest(&v.digest)
        );
    }
    println!("  environments:");
    if envs.is_empty() {
        println!("    (none)");
    }
    for e in &envs {
        match e.get("error") {
            Some(err) => println!(
                "    {:<24} error: {}",
                e["env"].as_str().unwrap_or(""),
                err.as_str().unwrap_or("")
            ),
            None => {
                let via = if e["target"]["kind"] == "version" {
                    format!("{} → ", e["target"]["name"].as_str().unwrap_or(""))
                } else {
                    String::new()
                };
                println!(
                    "    {:<24} {via}{}  {}",
                    e["env"].as_str().unwrap_or(""),
                    e["reference"].as_str().unwrap_or(""),
                    e["promoted_at"]
                        .as_str()
                        .map(short_time)
                        .unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}

async fn list_apps(ctx: &Ctx) -> Result<()> {
    let store = &ctx.store;
    let mut apps: BTreeMap<String, (usize, usize, Vec<String>)> = BTreeMap::new();
    for o in store.list_objects(&store.layout().apps_prefix()).await? {
        let Some(app) = store.layout().app_of_record_key(&o.key) else {
            continue;
        };
        let rest = &o.key[store.layout().app_prefix(&app).len()..];
        let entry = apps.entry(app).or_default();
        if let Some(name) = rest.strip_prefix("_images/") {
            if !name.contains('/') {
                entry.0 += 1;
            }
        } else if let Some(name) = rest.strip_prefix("_versions/") {
            if !name.contains('/') {
                entry.1 += 1;
            }
        } else if let Some(name) = rest
            .strip_prefix("_envs/")
            .and_then(|n| n.strip_suffix(".json"))
        {
            if !name.contains('/') {
                entry.2.push(name.to_string());
            }
        }
    }
    if ctx.json {
        let v: Vec<_> = apps
            .iter()
            .map(|(a, (i, v, e))| serde_json::json!({"app": a, "images": i, "versions": v, "environments": e}))
            .collect();
        println!("{}", serde_json::json!({"apps": v}));
        return Ok(());
    }
    if apps.is_empty() {
        ctx.say(format!("no apps in store {}", store.display));
    }
    for (a, (i, v, e)) in &apps {
        println!(
            "{a:<32} {i:>4} images {v:>4} versions  {}",
            if e.is_empty() {
                "-".to_string()
            } else {
                e.join(", ")
            }
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- history

#[derive(Args, Debug)]
pub struct HistoryArgs {
    pub app: String,
    /// Only events since this month (2025-07) or day (2025-07-21), UTC
    #[arg(long)]
    pub since: Option<String>,
    /// Only this kind of event: push, tag or promote
    #[arg(long)]
    pub event: Option<String>,
    /// At most N events
    #[arg(long, short = 'n')]
    pub limit: Option<usize>,
}

pub async fn history(ctx: &Ctx, a: HistoryArgs) -> Result<()> {
    check_app_name(&a.app)?;
    let since = a.since.as_deref().map(audit::parse_since).transpose()?;
    if let Some(e) = &a.event {
        if !audit::EVENTS.contains(&e.as_str()) {
            bail!(
                "unknown event {e:?}: use one of {}",
                audit::EVENTS.join(", ")
            );
        }
    }
    require_app(&ctx.store, &a.app).await?;
    let mut events = audit::history(&ctx.store, &a.app, since.as_ref(), a.event.as_deref()).await?;
    if let Some(n) = a.limit {
        events.truncate(n);
    }
    if ctx.json {
        println!("{}", serde_json::to_string(&events)?);
        return Ok(());
    }
    for e in &events {
        println!("{}", describe(e));
    }
    Ok(())
}

fn describe(e: &Event) -> String {
    let t = &e.target;
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    let dig = |v: &serde_json::Value| {
        v.as_str()
            .and_then(|d| d.parse::<Digest>().ok())
            .map(|d| short_digest(&d))
            .unwrap_or_default()
    };
    let what = match e.event.as_str() {
        "push" => format!(
            "{} {}{}",
            s(&t["image"]),
            dig(&t["digest"]),
            e.previous
                .as_ref()
                .map(|p| format!(" (replaced {}, archived)", dig(&p["digest"])))
                .unwrap_or_default()
        ),
        "tag" => format!(
            "{}:{} = {} {}{}",
            e.app,
            s(&t["version"]),
            s(&t["image"]),
            dig(&t["digest"]),
            e.previous
                .as_ref()
                .map(|p| format!(" (moved from {}:{})", e.app, s(&p["image_tag"])))
                .unwrap_or_default()
        ),
        "promote" => format!(
            "{} → {}{} {}{}",
            s(&t["env"]),
            if t["kind"] == "version" {
                format!("{} = ", s(&t["name"]))
            } else {
                String::new()
            },
            s(&t["image"]),
            dig(&t["digest"]),
            e.previous
                .as_ref()
                .map(|p| format!(" (was {})", s(&p["target"]["name"])))
                .unwrap_or_default()
        ),
        _ => t.to_string(),
    };
    let by = match &e.actor.aws {
        Some(arn) => format!("{} [{arn}]", e.actor.name),
        None => e.actor.name.clone(),
    };
    format!("{}  {:<8} {what}  by {by}", short_time(&e.time), e.event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_env_names() {
        assert!(parse_version("v1.2.0").unwrap().1);
        assert!(!parse_version("1.2.0-rc.1").unwrap().1);
        for bad in ["1.2", "v1", "1.2.0+build", "latest", "V1.2.0", "01.2.3"] {
            assert!(parse_version(bad).is_err(), "{bad}");
        }
        check_env_name("production").unwrap();
        check_env_name("eu-west_2").unwrap();
        for bad in ["Prod", "1prod", "", "v1.2.0", "a.b"] {
            assert!(check_env_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stamps() {
        let c = Commit {
            hash: "f7a5a27d0c0ffee0000000000000000000000000".into(),
            committer_time: 1753132710, // 2025-07-21T21:18:30Z
            author: "a <a@x>".into(),
        };
        assert_eq!(c.stamp().unwrap(), "20250721-2118-f7a5a27");
        assert_eq!(stamp_commit("20250721-2118-f7a5a27"), Some("f7a5a27"));
        assert_eq!(stamp_commit("v1.2.0"), None);
        assert_eq!(stamp_commit("20250721-2118-F7A5A27"), None);
    }
}
