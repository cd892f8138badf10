//! The audit trail: one immutable JSON event per push, tag and promotion under
//! `s3dock/audit/{app}/{YYYYMM}/{YYYYMMDD-HHMMSS}-{event}-{githash}.json`, written
//! with create-only conditional writes so no event ever overwrites another. Monthly
//! folders keep `history --since` to a few listings.

use crate::registry::Registry;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::process::Command;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub const EVENT_SCHEMA: u32 = 1;
/// Event names `history --event` accepts (cleanup and deploy are reserved for later).
pub const EVENTS: &[&str] = &["push", "tag", "promote", "cleanup", "deploy"];

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

fn hostname() -> String {
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
        let aws = match store.s3() {
            Some(d) => caller_identity(d).await,
            None => None,
        };
        Actor { name, source, aws }
    }
}

async fn caller_identity(d: &crate::store::S3Driver) -> Option<String> {
    let (sdk, endpoint) = d.sdk_config();
    let mut b = aws_sdk_sts::config::Builder::from(sdk)
        .retry_config(aws_sdk_sts::config::retry::RetryConfig::standard().with_max_attempts(1));
    if sdk.region().is_none() {
        b = b.region(aws_sdk_sts::config::Region::new("us-east-1"));
    }
    if let Some(ep) = endpoint {
        b = b.endpoint_url(ep);
    }
    let client = aws_sdk_sts::Client::from_conf(b.build());
    let call = client.get_caller_identity().send();
    match tokio::time::timeout(std::time::Duration::from_secs(5), call).await {
        Ok(Ok(out)) => out.arn().map(str::to_string),
        Ok(Err(e)) => {
            tracing::debug!(
                "no AWS caller identity for the audit trail: {}",
                aws_sdk_sts::error::DisplayErrorContext(e)
            );
            None
        }
        Err(_) => {
            tracing::debug!("no AWS caller identity for the audit trail: timed out");
            None
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
    pub event: String,
    pub app: String,
    /// RFC 3339, UTC, with sub-second precision.
    pub time: String,
    pub actor: Actor,
    /// What the event did (event-specific fields).
    pub target: serde_json::Value,
    /// The state it replaced, if any.
    pub previous: Option<serde_json::Value>,
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
    pub fn new(
        event: &str,
        app: &str,
        actor: &Actor,
        target: serde_json::Value,
        previous: Option<serde_json::Value>,
        git_commit: Option<String>,
    ) -> Event {
        Event {
            schema_version: EVENT_SCHEMA,
            kind: "event".into(),
            event: event.into(),
            app: app.into(),
            time: rfc3339(now()),
            actor: actor.clone(),
            target,
            previous,
            git_commit,
        }
    }
}

/// `{YYYYMMDD-HHMMSS}-{event}-{githash}`: 7 hex of the commit, `0000000` when unknown.
fn stem(ev: &Event) -> Result<String> {
    let t = OffsetDateTime::parse(&ev.time, &Rfc3339)?;
    let fmt = time::macros::format_description!("[year][month][day]-[hour][minute][second]");
    let hash = ev
        .git_commit
        .as_deref()
        .filter(|c| c.len() >= 7)
        .map(|c| c[..7].to_string())
        .unwrap_or_else(|| "0000000".into());
    Ok(format!("{}-{}-{hash}", t.format(&fmt)?, ev.event))
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
        let key = store.layout().audit_event(&ev.app, &s);
        if store.create_or_replace(&key, data.clone(), None).await? {
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
    let bad =
        || anyhow::anyhow!("invalid --since {s:?}: use a month (2025-07) or a day (2025-07-21)");
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

/// Events of `app`, newest first, optionally since a month/day and of one kind.
pub async fn history(
    store: &Registry,
    app: &str,
    since: Option<&Since>,
    event: Option<&str>,
) -> Result<Vec<Event>> {
    let months = store.list_names(&store.layout().audit_prefix(app)).await?;
    let mut keys = Vec::new();
    for m in months
        .iter()
        .filter(|m| m.len() == 6 && m.bytes().all(|b| b.is_ascii_digit()))
    {
        if since.is_some_and(|s| m.as_str() < s.month.as_str()) {
            continue;
        }
        let prefix = store.layout().audit_month_prefix(app, m);
        for o in store.list_objects(&prefix).await? {
            let Some(name) = o.key.strip_prefix(&prefix) else {
                continue;
            };
            // Only this app's events (a nested app `app/202507` would list here too).
            let Some(stem) = name.strip_suffix(".json").filter(|n| !n.contains('/')) else {
                continue;
            };
            let mut parts = stem.splitn(4, '-');
            let (day, _, ev) = (parts.next(), parts.next(), parts.next());
            if let Some(want) = event {
                if ev != Some(want) {
                    continue;
                }
            }
            if let (Some(s), Some(d)) = (since.and_then(|s| s.day.as_deref()), day) {
                if d < s {
                    continue;
                }
            }
            keys.push(o.key);
        }
    }
    let mut out = Vec::new();
    let fetched = futures::future::join_all(keys.iter().map(|k| store.get_json::<Event>(k))).await;
    for (k, e) in keys.iter().zip(fetched) {
        match e? {
            Some(e) if e.schema_version <= EVENT_SCHEMA => out.push((e.time.clone(), k.clone(), e)),
            Some(e) => tracing::warn!(
                "skipping {k}: schema version {} is newer than this s3dock understands",
                e.schema_version
            ),
            None => {}
        }
    }
    // Times are fixed-width UTC RFC 3339 only up to the fraction; parse to compare.
    out.sort_by(|a, b| {
        let ta = OffsetDateTime::parse(&a.0, &Rfc3339).ok();
        let tb = OffsetDateTime::parse(&b.0, &Rfc3339).ok();
        tb.cmp(&ta).then_with(|| b.1.cmp(&a.1))
    });
    Ok(out.into_iter().map(|(_, _, e)| e).collect())
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

    #[test]
    fn stems() {
        let a = Actor {
            name: "a".into(),
            source: "git".into(),
            aws: None,
        };
        let mut e = Event::new("promote", "x", &a, serde_json::json!({}), None, None);
        e.time = "2025-07-21T21:18:05.123Z".into();
        assert_eq!(stem(&e).unwrap(), "20250721-211805-promote-0000000");
        e.git_commit = Some("f7a5a27aaaa".into());
        assert_eq!(stem(&e).unwrap(), "20250721-211805-promote-f7a5a27");
    }
}
