//! `tag`: semantic versions naming image tags, moved only with `--force` (recorded).

use super::access::{self, ReadError};
use super::audit::{self, Event, TagPrevious, TagTarget, What};
use super::env::materialise_env;
use super::records::{
    app_and_tag, looks_like_version, parse_version, EnvRecord, Kind, TargetKind, VersionMove,
    VersionRecord, RECORD_SCHEMA,
};
use super::{commit_of, lookup, now, read, require_app, update_record, Ctx, Named};
use crate::model::digest::Digest;
use crate::model::reference::familiar;
use crate::registry::Registry;
use anyhow::{bail, Result};

/// What `tag` did.
#[derive(Debug, Clone)]
pub struct Tagged {
    pub app: String,
    pub version: String,
    pub image_tag: String,
    pub digest: Digest,
    /// The version already named this image: nothing was written.
    pub unchanged: bool,
    /// The version's record before a `--force` move.
    pub previous: Option<VersionRecord>,
    /// Key of the audit event.
    pub event: Option<String>,
}

/// `sha256:` and 12 hex digits, for messages.
pub fn short_digest(d: &Digest) -> String {
    let hex = d.hex();
    format!("sha256:{}", hex.get(..12).unwrap_or(&hex))
}

/// Points the version's registry tag at its record's digest, until the record is stable
/// (a concurrent `tag --force` may have moved it meanwhile).
async fn materialise_version(store: &Registry, app: &str, version: &str) -> Result<()> {
    for _ in 0..20 {
        let Some(v) = read::<VersionRecord>(store, app, version).await? else {
            bail!("version {version} of {app} disappeared");
        };
        if store.tag_target(app, version).await? != Some(v.digest) {
            store.set_tag(app, version, &v.digest).await?;
        }
        if read::<VersionRecord>(store, app, version).await?.as_ref() == Some(&v) {
            return Ok(());
        }
    }
    bail!("version {version} of {app} kept moving; run s3dock tag again")
}

/// Names the image `image` (APP:TAG, or APP:VERSION to alias a version) `version`.
pub async fn tag(ctx: &Ctx, image: &str, version: &str, force: bool) -> Result<Tagged> {
    let store = &ctx.store;
    let (app, source) = app_and_tag(image, "the image")?;
    let (_, has_v) = parse_version(version)?;
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
            access::store_name(store)
        ),
    };
    // One prefix style per app.
    let (versions, _) = access::record_names(store, Kind::Version, &app).await?;
    if let Some(other) = versions
        .iter()
        .find(|v| v.starts_with('v') != has_v && *v != version)
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
    if read::<EnvRecord>(store, &app, version).await?.is_some() {
        bail!("{app}:{version} is an environment, not a version");
    }
    let image_tag_there = store.tag_target(&app, version).await?;
    let now = now();
    let u = update_record::<VersionRecord>(store, &app, version, |cur| match cur {
        Some(c) if c.digest == digest && c.image_tag == image_tag => Ok(None),
        Some(c) if !force => bail!(
            "version {version} of {app} already names {app}:{} ({}): use --force to move it",
            c.image_tag,
            short_digest(&c.digest)
        ),
        Some(c) => {
            let mut moves = c.moves.clone();
            moves.push(VersionMove {
                image_tag: c.image_tag.clone(),
                digest: c.digest,
                tagged_at: c.tagged_at.clone(),
                tagged_by: c.tagged_by.clone(),
                moved_at: now.clone(),
            });
            Ok(Some(VersionRecord {
                image_tag: image_tag.clone(),
                digest,
                tagged_at: now.clone(),
                tagged_by: ctx.actor.name.clone(),
                moves,
                ..c.clone()
            }))
        }
        None => {
            if let Some(d) = image_tag_there {
                bail!(
                    "{app}:{version} is already an image tag ({}), not a version: pick another version",
                    short_digest(&d)
                );
            }
            Ok(Some(VersionRecord {
                schema_version: RECORD_SCHEMA,
                kind: "version".into(),
                app: app.clone(),
                version: version.to_string(),
                image_tag: image_tag.clone(),
                digest,
                tagged_at: now.clone(),
                tagged_by: ctx.actor.name.clone(),
                moves: Vec::new(),
            }))
        }
    })
    .await?;
    let mut out = Tagged {
        app: familiar(&app),
        version: version.to_string(),
        image_tag: image_tag.clone(),
        digest,
        unchanged: u.written.is_none(),
        previous: None,
        event: None,
    };
    if out.unchanged {
        return Ok(out);
    }
    let previous = u.previous;
    // The event right after the record it describes, before the registry tags follow:
    // a failure past this point leaves tags to repair, never an unrecorded change.
    let what = What::Tag {
        target: TagTarget {
            version: version.to_string(),
            image: format!("{app}:{image_tag}"),
            image_tag: image_tag.clone(),
            digest,
        },
        previous: previous.as_ref().map(|p| TagPrevious {
            image_tag: p.image_tag.clone(),
            digest: p.digest,
            tagged_at: p.tagged_at.clone(),
            tagged_by: p.tagged_by.clone(),
        }),
    };
    let ev = Event::new(
        &app,
        &ctx.actor,
        what,
        commit_of(store, &app, &image_tag).await,
    );
    out.event = Some(audit::record(store, &ev).await?);
    materialise_version(store, &app, version).await?;
    // Environments that follow this version now point at its new image.
    if previous.is_some() {
        let (envs, _) = access::record_names(store, Kind::Env, &app).await?;
        for env in envs {
            match access::get_record::<EnvRecord>(store, &app, &env).await {
                Ok(Some((e, _)))
                    if e.target.kind == TargetKind::Version && e.target.name == version =>
                {
                    materialise_env(store, &app, &env).await?;
                }
                Ok(_) => {}
                Err(ReadError::Malformed(m)) => tracing::warn!("{m}"),
                Err(ReadError::Store(e)) => return Err(e),
            }
        }
    }
    out.previous = previous;
    Ok(out)
}
