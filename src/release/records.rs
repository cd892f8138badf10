//! The release records (image metadata, versions, environments), the grammar of
//! the names in them, and their validation. Records come from the store, so every
//! field is checked with the same grammar as user input before anything uses it.

use crate::model::digest::Digest;
use crate::model::image::Layer;
use crate::model::reference::{valid_tag, Reference, ReferenceError};
use crate::model::text::excerpt;
use anyhow::{anyhow, bail, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::audit::Actor;

/// Schema version of every record this module writes; readers refuse newer ones.
pub const RECORD_SCHEMA: u32 = 1;

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

/// The three kinds of record, each in its own folder of an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Image,
    Version,
    Env,
}

/// A record document: what it is called in messages and how it is checked.
pub trait Record: Serialize + DeserializeOwned + Clone {
    const KIND: Kind;
    const WHAT: &'static str;
    /// Checks every field against the grammar of user input; `app` and `name` are
    /// what the record's key says it is.
    fn validate(&self, app: &str, name: &str) -> Result<(), String>;
}

/// Why a field read from the store is refused: the field and a short escaped excerpt.
fn bad(field: &str, value: &str) -> String {
    format!("{field} {} is invalid", excerpt(value.as_bytes()))
}

pub(crate) fn check(ok: bool, field: &str, value: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(bad(field, value))
    }
}

pub(crate) fn is_time(s: &str) -> bool {
    OffsetDateTime::parse(s, &Rfc3339).is_ok()
}

/// A git commit hash: 7 to 64 hex digits (abbreviated, SHA-1 or SHA-256).
pub fn is_commit(s: &str) -> bool {
    (7..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Free text (actor names, authors): any characters, printed escaped, but bounded.
pub(crate) fn is_text(s: &str) -> bool {
    s.len() <= 512
}

/// `os/arch[/variant]`, or for a multi-platform index (`push --all-platforms`) its
/// platforms joined by commas, as the push records them.
fn is_platform(s: &str) -> bool {
    s.len() <= 1024
        && s.split(',').all(|p| {
            (3..=64).contains(&p.len())
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-'))
        })
}

pub(crate) fn check_git(g: &GitInfo) -> Result<(), String> {
    check(is_commit(&g.commit), "git commit", &g.commit)?;
    if let Some(a) = &g.author {
        check(is_text(a), "git author", a)?;
    }
    if let Some(t) = &g.time {
        check(is_time(t), "git time", t)?;
    }
    Ok(())
}

pub(crate) fn check_actor(a: &Actor) -> Result<(), String> {
    check(is_text(&a.name), "actor", &a.name)?;
    check(is_text(&a.source), "actor source", &a.source)?;
    if let Some(arn) = &a.aws {
        check(is_text(arn), "actor AWS identity", arn)?;
    }
    Ok(())
}

fn check_header(kind: &str, want_kind: &str, app: &str, want_app: &str) -> Result<(), String> {
    check(kind == want_kind, "kind", kind)?;
    check(app == want_app, "app", app)
}

impl Record for ImageRecord {
    const KIND: Kind = Kind::Image;
    const WHAT: &'static str = "image record";
    fn validate(&self, app: &str, name: &str) -> Result<(), String> {
        check_header(&self.kind, "image", &self.app, app)?;
        check(valid_tag(&self.tag) && self.tag == name, "tag", &self.tag)?;
        if let Some(p) = &self.platform {
            check(is_platform(p), "platform", p)?;
        }
        check(
            self.compression
                .split(',')
                .all(|c| c.parse::<crate::codec::Compression>().is_ok()),
            "compression",
            &self.compression,
        )?;
        if let Some(g) = &self.git {
            check_git(g)?;
        }
        check(is_time(&self.pushed_at), "pushed_at", &self.pushed_at)?;
        check_actor(&self.pushed_by)?;
        for a in &self.archived {
            check(is_text(&a.pushed_by), "archived pushed_by", &a.pushed_by)?;
            check(is_time(&a.pushed_at), "archived pushed_at", &a.pushed_at)?;
            check(is_time(&a.archived_at), "archived_at", &a.archived_at)?;
        }
        Ok(())
    }
}

impl Record for VersionRecord {
    const KIND: Kind = Kind::Version;
    const WHAT: &'static str = "version record";
    fn validate(&self, app: &str, name: &str) -> Result<(), String> {
        check_header(&self.kind, "version", &self.app, app)?;
        check(
            parse_version(&self.version).is_ok() && self.version == name,
            "version",
            &self.version,
        )?;
        check(valid_tag(&self.image_tag), "image_tag", &self.image_tag)?;
        check(is_time(&self.tagged_at), "tagged_at", &self.tagged_at)?;
        check(is_text(&self.tagged_by), "tagged_by", &self.tagged_by)?;
        for m in &self.moves {
            check(valid_tag(&m.image_tag), "moved image_tag", &m.image_tag)?;
            check(is_time(&m.tagged_at), "moved tagged_at", &m.tagged_at)?;
            check(is_time(&m.moved_at), "moved_at", &m.moved_at)?;
            check(is_text(&m.tagged_by), "moved tagged_by", &m.tagged_by)?;
        }
        Ok(())
    }
}

impl Record for EnvRecord {
    const KIND: Kind = Kind::Env;
    const WHAT: &'static str = "environment";
    fn validate(&self, app: &str, name: &str) -> Result<(), String> {
        check_header(&self.kind, "environment", &self.app, app)?;
        check(
            check_env_name(&self.env).is_ok() && self.env == name,
            "env",
            &self.env,
        )?;
        let target_ok = match self.target.kind {
            TargetKind::Version => parse_version(&self.target.name).is_ok(),
            TargetKind::Image => valid_tag(&self.target.name),
        };
        check(target_ok, "target", &self.target.name)?;
        check(valid_tag(&self.image_tag), "image_tag", &self.image_tag)?;
        check(is_time(&self.promoted_at), "promoted_at", &self.promoted_at)?;
        check(is_text(&self.promoted_by), "promoted_by", &self.promoted_by)
    }
}

// ---------------------------------------------------------------- names

/// An app name as typed (`web`, `ghcr.io/acme/web`, `localhost:5000/team/api`) or as
/// stored → the store repository its images and records live under (see
/// `model::reference`; a repository name maps to itself).
pub fn app_name(app: &str) -> Result<String> {
    let r = Reference::parse(app).map_err(|ReferenceError::Invalid(_, why)| {
        anyhow!("invalid app name {}: {why}", excerpt(app.as_bytes()))
    })?;
    if r.tag.is_some() || r.digest.is_some() {
        bail!(
            "invalid app name {}: name the app without a tag or digest (e.g. myapp or ghcr.io/acme/web)",
            excerpt(app.as_bytes())
        );
    }
    Ok(r.name)
}

/// Whether `app` is a store repository an app's records can live under: one that
/// [`app_name`] maps to itself.
pub fn check_app_name(app: &str) -> Result<()> {
    if app_name(app)? != app {
        bail!(
            "invalid app name {}: not a repository name",
            excerpt(app.as_bytes())
        );
    }
    Ok(())
}

/// `APP:TAG` (no digest), as `tag` and `promote` take it.
pub fn app_and_tag(s: &str, what: &str) -> Result<(String, String)> {
    let r = Reference::parse(s)?;
    match (r.tag, r.digest) {
        (Some(t), None) => Ok((r.name, t)),
        _ => bail!(
            "{what} must be APP:TAG, e.g. myapp:20250721-2118-f7a5a27 (got {})",
            excerpt(s.as_bytes())
        ),
    }
}

/// A semantic version as a tag: `1.2.0` or `v1.2.0` (pre-releases allowed; build
/// metadata is not, as `+` cannot appear in a registry tag).
pub fn parse_version(s: &str) -> Result<(semver::Version, bool)> {
    let (bare, v) = match s.strip_prefix('v') {
        Some(rest) => (rest, true),
        None => (s, false),
    };
    let shown = excerpt(s.as_bytes());
    if s.contains('+') {
        bail!("invalid version {shown}: build metadata (+...) cannot be part of a registry tag");
    }
    let ver = semver::Version::parse(bare).map_err(|e| {
        anyhow!("invalid version {shown}: not a semantic version MAJOR.MINOR.PATCH[-PRERELEASE], optionally with a v prefix ({e})")
    })?;
    if !valid_tag(s) {
        bail!("invalid version {shown}: not a valid registry tag");
    }
    Ok((ver, v))
}

pub fn looks_like_version(s: &str) -> bool {
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
        bail!("invalid environment name {}: use lowercase letters, digits, '-' and '_', starting with a letter (e.g. production)", excerpt(env.as_bytes()));
    }
    Ok(())
}

/// Whether a record file name is a valid name of its kind.
pub fn valid_name(kind: Kind, name: &str) -> bool {
    match kind {
        Kind::Image => valid_tag(name),
        Kind::Version => looks_like_version(name),
        Kind::Env => check_env_name(name).is_ok(),
    }
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
    // All ASCII, so byte 14 is a character boundary.
    ok.then(|| &tag[14..])
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
        assert_eq!(stamp_commit("20250721-2118-f7a5a27"), Some("f7a5a27"));
        assert_eq!(stamp_commit("v1.2.0"), None);
        assert_eq!(stamp_commit("20250721-2118-F7A5A27"), None);
    }

    #[test]
    fn hostile_fields_are_refused() {
        let rec = VersionRecord {
            schema_version: 1,
            kind: "version".into(),
            app: "app".into(),
            version: "v1.0.0".into(),
            image_tag: "20250721-2118-f7a5a27".into(),
            digest: Digest::of(b"x"),
            tagged_at: "2025-07-21T21:18:30Z".into(),
            tagged_by: "ci\u{1b}[2J".into(),
            moves: Vec::new(),
        };
        rec.validate("app", "v1.0.0").unwrap();
        assert!(rec.validate("other", "v1.0.0").is_err());
        assert!(rec.validate("app", "v1.0.1").is_err());
        let mut evil = rec.clone();
        evil.image_tag = "x\ny".into();
        let why = evil.validate("app", "v1.0.0").unwrap_err();
        assert!(why.contains("\\n") && !why.contains('\n'), "{why}");
        assert!(!is_commit("f7a5a2é7"));
    }
}
