//! The audit trail: one immutable JSON event per push, tag, promotion, rollback and
//! host deploy under
//! `s3dock/audit/{app}/{YYYYMM}/{YYYYMMDD-HHMMSS}-{event}-{githash}.json`, written
//! with create-only conditional writes so no event ever overwrites another. Monthly
//! folders keep `history --since` to a few listings.

use super::access::{self, Malformed};
use super::records::{
    check, check_actor, check_env_name, check_git, is_commit, is_text, is_time, parse_version,
    EnvRecord, GitInfo, TargetKind,
};
use crate::model::digest::Digest;
use crate::model::reference::valid_tag;
use crate::model::text::excerpt;
use crate::registry::Registry;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::process::Command;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub const EVENT_SCHEMA: u32 = 1;

/// Who did something: a name, how it was found, and the AWS identity when on S3.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Actor {
    pub name: String,
    /// `S3DOCK_ACTOR`/`--actor`, `profile`, `git` or `os`.
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<String>,
}

/// The git user (`user.email`, else `user.name`), else the OS user @ host.
pub fn local_actor() -> (String, &'static str) {
    let git = |k: &str| {
        Command::new("git")
            .args(["config", "--get", k])
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|s| !s.is_empty())
    };
    if let Some(u) = git("user.email").or_else(|| git("user.name")) {
        return (u, "git user");
    }
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    (format!("{user}@{}", hostname()), "os user@host")
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

impl Actor {
    /// The local actor, without any lookup in the store (for commands that only read).
    pub fn local() -> Actor {
        Actor {
            name: local_actor().0,
            source: "local".into(),
            aws: None,
        }
    }

    /// `explicit` is `--actor`/`S3DOCK_ACTOR` or the profile's `actor`. On S3 the caller
    /// identity (STS GetCallerIdentity) is added; failures are skipped quietly.
    pub async fn resolve(explicit: Option<&str>, explicit_source: &str, store: &Registry) -> Actor {
        let (name, source) = match explicit.filter(|s| !s.is_empty()) {
            Some(a) => (a.to_string(), explicit_source.to_string()),
            None => {
                let (n, how) = local_actor();
                (n, if how == "git user" { "git" } else { "os" }.to_string())
            }
        };
        let aws = access::caller_identity(store).await;
        Actor { name, source, aws }
    }
}

/// A push: what the image tag now holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushTarget {
    pub image: String,
    pub tag: String,
    pub digest: Digest,
    pub config_digest: Digest,
    pub size: u64,
    pub platform: Option<String>,
    pub compression: String,
    pub git: Option<GitInfo>,
}

/// What a push replaced: the tag's earlier content, kept pullable by digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushPrevious {
    pub digest: Digest,
    pub archived: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TagTarget {
    pub version: String,
    pub image: String,
    pub image_tag: String,
    pub digest: Digest,
}

/// The image a version named before `tag --force` moved it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TagPrevious {
    pub image_tag: String,
    pub digest: Digest,
    pub tagged_at: String,
    pub tagged_by: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromoteTarget {
    pub env: String,
    pub kind: TargetKind,
    pub name: String,
    pub image: String,
    pub image_tag: String,
    pub digest: Digest,
    pub generation: u64,
    /// Rollbacks: the host that ran `s3dock rollback` (and switched its traffic back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Rollbacks: seconds from the start of `s3dock rollback` until that host served
    /// the earlier image and had drained the colour it replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<f64>,
}

/// A removal (`rm`, `prune`): a tag, a version, or a manifest revision by digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoveTarget {
    /// `app:tag`, or `app@digest` for a revision.
    pub image: String,
    /// The tag removed; None for a revision.
    pub tag: Option<String>,
    pub digest: Digest,
    /// Removed although a tag, version or environment still pointed at it.
    #[serde(default)]
    pub forced: bool,
}

/// A deploy on a host: what now serves (or failed to), where, and how long it took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployTarget {
    pub env: String,
    pub host: String,
    pub image: String,
    pub image_tag: String,
    pub digest: Digest,
    /// `blue` or `green`.
    pub colour: String,
    pub duration_secs: f64,
}

/// What served before a deploy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployPrevious {
    pub digest: Digest,
    pub colour: String,
}

/// An event's kind with its typed payload: `event` names the kind, `target` is what
/// the event did, `previous` the state it replaced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum What {
    Push {
        target: PushTarget,
        previous: Option<PushPrevious>,
    },
    Tag {
        target: TagTarget,
        previous: Option<TagPrevious>,
    },
    Promote {
        target: PromoteTarget,
        previous: Option<Box<EnvRecord>>,
    },
    /// The environment pointer moved back to its previous generation's target.
    Rollback {
        target: PromoteTarget,
        previous: Option<Box<EnvRecord>>,
    },
    Deploy {
        target: DeployTarget,
        previous: Option<DeployPrevious>,
    },
    /// The new colour never became healthy (or the switch failed): traffic stayed.
    #[serde(rename = "deploy-failed")]
    DeployFailed {
        target: DeployTarget,
        previous: Option<DeployPrevious>,
        /// The health check's last answer or the failure, at most [`MAX_ERROR`] bytes.
        error: String,
    },
    Remove {
        target: RemoveTarget,
    },
}

/// The longest `error` a deploy-failed event keeps.
pub const MAX_ERROR: usize = 480;

/// The kinds of event s3dock writes, for `history --event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Push,
    Tag,
    Promote,
    Rollback,
    Deploy,
    DeployFailed,
    Remove,
}

impl EventKind {
    pub const ALL: [EventKind; 7] = [
        EventKind::Push,
        EventKind::Tag,
        EventKind::Promote,
        EventKind::Rollback,
        EventKind::Deploy,
        EventKind::DeployFailed,
        EventKind::Remove,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EventKind::Push => "push",
            EventKind::Tag => "tag",
            EventKind::Promote => "promote",
            EventKind::Remove => "remove",
            EventKind::Rollback => "rollback",
            EventKind::Deploy => "deploy",
            EventKind::DeployFailed => "deploy-failed",
        }
    }
}

impl std::str::FromStr for EventKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match EventKind::ALL.into_iter().find(|k| k.name() == s) {
            Some(k) => Ok(k),
            None => bail!(
                "unknown event {}: use one of {}",
                excerpt(s.as_bytes()),
                EventKind::ALL.map(EventKind::name).join(", ")
            ),
        }
    }
}

impl What {
    pub fn kind(&self) -> EventKind {
        match self {
            What::Push { .. } => EventKind::Push,
            What::Tag { .. } => EventKind::Tag,
            What::Promote { .. } => EventKind::Promote,
            What::Remove { .. } => EventKind::Remove,
            What::Rollback { .. } => EventKind::Rollback,
            What::Deploy { .. } => EventKind::Deploy,
            What::DeployFailed { .. } => EventKind::DeployFailed,
        }
    }
}

/// One event document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    /// Always `event`.
    pub kind: String,
    #[serde(flatten)]
    pub what: What,
    pub app: String,
    /// RFC 3339, UTC, with sub-second precision.
    pub time: String,
    pub actor: Actor,
    /// Full commit hash of the image involved, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_commit: Option<String>,
}

pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).expect("UTC times format as RFC 3339")
}

impl Event {
    pub fn new(app: &str, actor: &Actor, what: What, git_commit: Option<String>) -> Event {
        Event {
            schema_version: EVENT_SCHEMA,
            kind: "event".into(),
            what,
            app: app.into(),
            time: rfc3339(now()),
            actor: actor.clone(),
            // Only a well-formed hash names the event's file.
            git_commit: git_commit.filter(|c| is_commit(c)),
        }
    }

    /// Checks every field read from the store with the grammar of user input.
    pub fn validate(&self, app: &str) -> Result<(), String> {
        check(self.kind == "event", "kind", &self.kind)?;
        check(self.app == app, "app", &self.app)?;
        check(is_time(&self.time), "time", &self.time)?;
        check_actor(&self.actor)?;
        if let Some(c) = &self.git_commit {
            check(is_commit(c), "git_commit", c)?;
        }
        let image = |image: &str, tag: &str| {
            check(
                valid_tag(tag) && image.strip_suffix(tag) == Some(&format!("{app}:")),
                "image",
                image,
            )
        };
        match &self.what {
            What::Push { target: t, .. } => {
                image(&t.image, &t.tag)?;
                if let Some(p) = &t.platform {
                    check(is_text(p) && !p.contains(char::is_control), "platform", p)?;
                }
                check(
                    t.compression
                        .split(',')
                        .all(|c| c.parse::<crate::codec::Compression>().is_ok()),
                    "compression",
                    &t.compression,
                )?;
                if let Some(g) = &t.git {
                    check_git(g)?;
                }
            }
            What::Tag {
                target: t,
                previous,
            } => {
                image(&t.image, &t.image_tag)?;
                check(parse_version(&t.version).is_ok(), "version", &t.version)?;
                if let Some(p) = previous {
                    check(valid_tag(&p.image_tag), "previous image_tag", &p.image_tag)?;
                    check(is_text(&p.tagged_by), "previous tagged_by", &p.tagged_by)?;
                }
            }
            What::Promote {
                target: t,
                previous,
            }
            | What::Rollback {
                target: t,
                previous,
            } => {
                image(&t.image, &t.image_tag)?;
                check(check_env_name(&t.env).is_ok(), "env", &t.env)?;
                check(valid_tag(&t.name), "target", &t.name)?;
                if let Some(h) = &t.host {
                    check(is_text(h), "host", h)?;
                }
                if let Some(d) = t.duration_secs {
                    check(d.is_finite() && d >= 0.0, "duration_secs", &d.to_string())?;
                }
                if let Some(p) = previous {
                    use super::records::Record;
                    p.validate(app, &t.env)?;
                }
            }
            What::Remove { target: t } => match &t.tag {
                Some(tag) => image(&t.image, tag)?,
                None => check(t.image == format!("{app}@{}", t.digest), "image", &t.image)?,
            },
            What::Deploy {
                target: t,
                previous,
            }
            | What::DeployFailed {
                target: t,
                previous,
                ..
            } => {
                image(&t.image, &t.image_tag)?;
                check(check_env_name(&t.env).is_ok(), "env", &t.env)?;
                check(is_text(&t.host), "host", &t.host)?;
                let colour = |c: &str| check(matches!(c, "blue" | "green"), "colour", c);
                colour(&t.colour)?;
                if let Some(p) = previous {
                    colour(&p.colour)?;
                }
                check(
                    t.duration_secs.is_finite() && t.duration_secs >= 0.0,
                    "duration_secs",
                    &t.duration_secs.to_string(),
                )?;
                if let What::DeployFailed { error, .. } = &self.what {
                    check(error.len() <= MAX_ERROR, "error", error)?;
                }
            }
        }
        Ok(())
    }
}

/// `{YYYYMMDD-HHMMSS}-{event}-{githash}`: 7 hex of the commit, `0000000` when unknown.
fn stem(ev: &Event) -> Result<String> {
    let t = OffsetDateTime::parse(&ev.time, &Rfc3339)?;
    let fmt = time::macros::format_description!("[year][month][day]-[hour][minute][second]");
    // `get` rather than slicing: a commit that is not ASCII hex must not panic here.
    let hash = ev
        .git_commit
        .as_deref()
        .filter(|c| is_commit(c))
        .and_then(|c| c.get(..7))
        .unwrap_or("0000000");
    Ok(format!(
        "{}-{}-{hash}",
        t.format(&fmt)?,
        ev.what.kind().name()
    ))
}

/// Writes the event; never overwrites one (a `-N` suffix is added when the second is taken).
pub async fn record(store: &Registry, ev: &Event) -> Result<String> {
    let base = stem(ev)?;
    let data: bytes::Bytes = serde_json::to_vec_pretty(ev)?.into();
    for n in 0..1000 {
        let s = if n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        if let Some(key) = access::put_event(store, &ev.app, &s, data.clone()).await? {
            return Ok(key);
        }
    }
    bail!("cannot write audit event {base}: too many events in one second")
}

/// A `--since` bound: `2025-07`, `202507`, or a day `2025-07-21`.
#[derive(Debug, Clone, PartialEq)]
pub struct Since {
    pub month: String,
    pub day: Option<String>,
}

pub fn parse_since(s: &str) -> Result<Since> {
    let digits: String = s.chars().filter(|c| *c != '-').collect();
    let ok = digits.bytes().all(|b| b.is_ascii_digit());
    let bad = || {
        anyhow::anyhow!(
            "invalid --since {}: use a month (2025-07) or a day (2025-07-21)",
            excerpt(s.as_bytes())
        )
    };
    if !ok {
        return Err(bad());
    }
    let check_month = |m: &str| -> Result<()> {
        let mm: u32 = m[4..6].parse()?;
        if !(1..=12).contains(&mm) {
            return Err(bad());
        }
        Ok(())
    };
    match digits.len() {
        6 => {
            check_month(&digits)?;
            Ok(Since {
                month: digits,
                day: None,
            })
        }
        8 => {
            check_month(&digits)?;
            let dd: u32 = digits[6..8].parse()?;
            if !(1..=31).contains(&dd) {
                return Err(bad());
            }
            Ok(Since {
                month: digits[..6].to_string(),
                day: Some(digits),
            })
        }
        _ => Err(bad()),
    }
}

/// Events of an app, newest first, and the event documents that were skipped.
#[derive(Debug, Default)]
pub struct History {
    pub events: Vec<Event>,
    pub malformed: Vec<Malformed>,
}

/// Events of `app`, newest first, optionally since a month/day and of one kind. A
/// malformed event is skipped and reported, never fatal.
pub async fn history(
    store: &Registry,
    app: &str,
    since: Option<&Since>,
    event: Option<EventKind>,
) -> Result<History> {
    let mut keys = Vec::new();
    for m in access::event_months(store, app).await? {
        if since.is_some_and(|s| m.as_str() < s.month.as_str()) {
            continue;
        }
        for (key, stem) in access::event_keys(store, app, &m).await? {
            // `{day}-{time}-{event}-{hash}[-N]`; an event name may itself hold a '-'
            // (`deploy-failed`), so it is matched against the known names, longest first.
            let mut parts = stem.splitn(3, '-');
            let (day, _, rest) = (parts.next(), parts.next(), parts.next());
            let ev = rest.and_then(|r| {
                EventKind::ALL
                    .into_iter()
                    .filter(|k| r.strip_prefix(k.name()).is_some_and(|t| t.starts_with('-')))
                    .max_by_key(|k| k.name().len())
            });
            if event.is_some_and(|want| ev != Some(want)) {
                continue;
            }
            if let (Some(s), Some(d)) = (since.and_then(|s| s.day.as_deref()), day) {
                if d < s {
                    continue;
                }
            }
            keys.push(key);
        }
    }
    let mut out = History::default();
    let mut found = Vec::new();
    let fetched =
        futures::future::join_all(keys.iter().map(|k| access::get_event(store, app, k))).await;
    for (k, e) in keys.iter().zip(fetched) {
        match e {
            Ok(Some(e)) => {
                let t = OffsetDateTime::parse(&e.time, &Rfc3339).ok();
                found.push((t, k.clone(), e));
            }
            Ok(None) => {}
            Err(access::ReadError::Malformed(m)) => out.malformed.push(m),
            Err(access::ReadError::Store(e)) => return Err(e),
        }
    }
    // Times are fixed-width UTC RFC 3339 only up to the fraction; compare them parsed.
    found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
    out.events = found.into_iter().map(|(_, _, e)| e).collect();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_forms() {
        assert_eq!(parse_since("2025-07").unwrap().month, "202507");
        assert_eq!(
            parse_since("2025-07-21").unwrap().day.as_deref(),
            Some("20250721")
        );
        for bad in ["2025", "2025-13", "july", "2025-07-32"] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
    }

    fn tag_event() -> Event {
        let a = Actor {
            name: "a".into(),
            source: "git".into(),
            aws: None,
        };
        let what = What::Tag {
            target: TagTarget {
                version: "v1.0.0".into(),
                image: "x:t1".into(),
                image_tag: "t1".into(),
                digest: Digest::of(b"m"),
            },
            previous: None,
        };
        Event::new("x", &a, what, None)
    }

    #[test]
    fn stems() {
        let mut e = tag_event();
        e.time = "2025-07-21T21:18:05.123Z".into();
        assert_eq!(stem(&e).unwrap(), "20250721-211805-tag-0000000");
        e.git_commit = Some("f7a5a27aaaa".into());
        assert_eq!(stem(&e).unwrap(), "20250721-211805-tag-f7a5a27");
        // Not hex (and not ASCII): no panic, no hash.
        e.git_commit = Some("f7a5a2éaaaa".into());
        assert_eq!(stem(&e).unwrap(), "20250721-211805-tag-0000000");
    }

    #[test]
    fn events_keep_their_json_shape() {
        let e = tag_event();
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["event"], "tag");
        assert_eq!(v["target"]["image_tag"], "t1");
        assert!(v["previous"].is_null() && v.get("previous").is_some());
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back.what, e.what);
        back.validate("x").unwrap();
        assert!(back.validate("y").is_err());
        assert!("deploy-done".parse::<EventKind>().is_err());
    }
}
