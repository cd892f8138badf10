//! What a push means for the release workflow: guarding the tags that only `tag` and
//! `promote` may move, and recording image metadata and a push event.

use super::audit::{self, Event, PushPrevious, PushTarget, What};
use super::git::git_for;
use super::records::{Archived, EnvRecord, GitInfo, ImageRecord, VersionRecord, RECORD_SCHEMA};
use super::{now, read, update_record, Ctx};
use crate::model::digest::Digest;
use crate::model::image::Config;
use crate::model::reference::Reference;
use crate::registry::Registry;
use crate::transfer::push::PushedImage;
use anyhow::{bail, Result};
use serde::Serialize;

/// What `r`'s tag is in `store` if only `promote` or `tag` may move it: the command
/// that does, as "is an environment: move it with s3dock promote".
pub async fn release_pointer(store: &Registry, r: &Reference) -> Result<Option<String>> {
    let Some(tag) = r.tag_or_latest() else {
        return Ok(None);
    };
    let app = &r.name;
    Ok(if read::<EnvRecord>(store, app, tag).await?.is_some() {
        Some(format!(
            "{app}:{tag} is an environment: move it with s3dock promote"
        ))
    } else if read::<VersionRecord>(store, app, tag).await?.is_some() {
        Some(format!(
            "{app}:{tag} is a version: move it with s3dock tag --force"
        ))
    } else {
        None
    })
}

/// Checks before a push to `r`: the tag must not be an environment or a version (those
/// move only with promote/tag), and with `no_clobber` it must not exist yet.
pub async fn check_push_target(store: &Registry, r: &Reference, no_clobber: bool) -> Result<()> {
    if let Some(why) = release_pointer(store, r).await? {
        bail!("{why}, not push");
    }
    let Some(tag) = r.tag_or_latest() else {
        return Ok(());
    };
    let app = &r.name;
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
        let platform = if p.platforms.is_empty() {
            Config::parse(cfg.clone())
                .ok()
                .map(|c| format!("{}/{}", c.os, c.architecture))
        } else {
            // A multi-platform index: every platform it holds.
            let all: Vec<String> = p
                .platforms
                .iter()
                .filter_map(|c| c.platform.clone())
                .collect();
            Some(all.join(","))
        };
        let git = git.clone().or_else(|| git_for(&tag, &cfg));
        let size = cfg.len() as u64 + p.layers.iter().map(|l| l.size).sum::<u64>();
        let mut compressions: Vec<&str> = p.layers.iter().map(|l| l.compression.name()).collect();
        compressions.sort();
        compressions.dedup();
        let compression = compressions.join(",");
        let pushed_at = now();
        let record = |archived| ImageRecord {
            schema_version: RECORD_SCHEMA,
            kind: "image".into(),
            app: app.clone(),
            tag: tag.clone(),
            digest: p.manifest_digest,
            config_digest: p.config_digest,
            platform: platform.clone(),
            size,
            compression: compression.clone(),
            layers: p.layers.clone(),
            git: git.clone(),
            pushed_at: pushed_at.clone(),
            pushed_by: ctx.actor.clone(),
            archived,
        };
        let u = update_record::<ImageRecord>(store, &app, &tag, |cur| match cur {
            Some(c) if c.digest == p.manifest_digest => Ok(None),
            Some(c) => {
                let mut archived = c.archived.clone();
                archived.push(Archived {
                    digest: c.digest,
                    pushed_at: c.pushed_at.clone(),
                    pushed_by: c.pushed_by.name.clone(),
                    archived_at: pushed_at.clone(),
                });
                Ok(Some(record(archived)))
            }
            None => Ok(Some(record(Vec::new()))),
        })
        .await?;
        let unchanged = u.written.is_none();
        let previous = match (&u.written, &u.previous) {
            (Some(_), Some(c)) => Some(c.digest),
            _ => p.previous,
        };
        let event = if unchanged {
            None
        } else {
            let what = What::Push {
                target: PushTarget {
                    image: format!("{app}:{tag}"),
                    tag: tag.clone(),
                    digest: p.manifest_digest,
                    config_digest: p.config_digest,
                    size,
                    platform,
                    compression,
                    git: git.clone(),
                },
                previous: previous.map(|digest| PushPrevious {
                    digest,
                    archived: true,
                }),
            };
            let ev = Event::new(&app, &ctx.actor, what, git.map(|g| g.commit));
            Some(audit::record(store, &ev).await?)
        };
        out.push(PushRecord {
            reference: Reference::with_tag(&app, &tag).to_string(),
            digest: p.manifest_digest,
            unchanged,
            previous,
            event,
        });
    }
    Ok(out)
}
