//! `prune`: retention of an app's build tags. A tag is removed when it is beyond the
//! newest `keep_last` and older than `older_than`, unless an environment runs its
//! image (directly or through a version) or a version names it (without `versions`).
//! A removed tag's manifest revision goes too once nothing else names it, so `gc`
//! can collect its blobs.

use super::rm::{delete_revision, pointers, untag};
use crate::model::digest::Digest;
use crate::release::access;
use crate::release::list::{list_app, list_apps, EnvRow};
use crate::release::records::{EnvRecord, Kind};
use crate::release::Ctx;
use anyhow::Result;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

#[derive(Debug, Clone)]
pub struct PruneOptions {
    pub keep_last: usize,
    pub older_than: Duration,
    pub dry_run: bool,
    /// Also remove images a version names (and those versions).
    pub versions: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Pruned {
    pub app: String,
    pub tag: String,
    pub digest: Digest,
    /// When it was pushed (RFC 3339), from its record or else its tag link.
    pub pushed_at: Option<String>,
    /// Versions removed with it (`--versions`).
    pub versions: Vec<String>,
    /// Its manifest revision was removed too (nothing else named it).
    pub revision_removed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Kept {
    pub app: String,
    pub tag: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub removed: Vec<Pruned>,
    pub kept: Vec<Kept>,
}

fn rfc3339(t: SystemTime) -> String {
    OffsetDateTime::from(t).format(&Rfc3339).unwrap_or_default()
}

pub async fn prune(ctx: &Ctx, app: &str, opts: &PruneOptions) -> Result<PruneReport> {
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let app = &crate::release::records::app_name(app)?;
    prune_app(ctx, app, opts, &mut report).await?;
    Ok(report)
}

/// Every app of the store, one after the other.
pub async fn prune_all(ctx: &Ctx, opts: &PruneOptions) -> Result<PruneReport> {
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let (apps, _) = list_apps(&ctx.store).await?;
    for a in apps {
        prune_app(ctx, &a.app, opts, &mut report).await?;
    }
    Ok(report)
}

async fn prune_app(
    ctx: &Ctx,
    app: &str,
    opts: &PruneOptions,
    report: &mut PruneReport,
) -> Result<()> {
    let store = &ctx.store;
    let listing = list_app(store, app).await?;
    // What environments run: the digest each resolves to now, and the one it was
    // promoted with (they differ when a version moved since).
    let mut deployed: BTreeMap<Digest, BTreeSet<String>> = BTreeMap::new();
    for e in &listing.environments {
        if let EnvRow::Resolved(r) = e {
            deployed.entry(r.digest).or_default().insert(r.env.clone());
        }
    }
    for e in access::record_names(store, Kind::Env, app).await?.0 {
        if let Ok(Some((r, _))) = access::get_record::<EnvRecord>(store, app, &e).await {
            deployed.entry(r.digest).or_default().insert(e);
        }
    }
    let mut versioned: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
    for v in &listing.versions {
        versioned
            .entry(v.digest)
            .or_default()
            .push(v.version.clone());
    }
    // Age of each image: its record's push time, else when its tag link was written.
    let written: BTreeMap<String, SystemTime> = store
        .list_objects(&store.layout().tags_prefix(app))
        .await?
        .into_iter()
        .filter_map(|o| {
            let l = store.layout();
            match l.repo_key(&o.key) {
                Some(crate::registry::layout::RepoKey::TagCurrent(_, t)) => Some((t, o.modified?)),
                _ => None,
            }
        })
        .collect();
    let mut images: Vec<(SystemTime, _)> = listing
        .images
        .into_iter()
        .filter_map(|i| {
            let t = i
                .pushed_at
                .as_deref()
                .and_then(|p| OffsetDateTime::parse(p, &Rfc3339).ok())
                .map(SystemTime::from)
                .or_else(|| written.get(&i.tag).copied())?;
            Some((t, i))
        })
        .collect();
    images.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.tag.cmp(&a.1.tag)));
    let cutoff = SystemTime::now() - opts.older_than;
    for (n, (t, img)) in images.into_iter().enumerate() {
        let keep = |reason: String| Kept {
            app: app.to_string(),
            tag: img.tag.clone(),
            reason,
        };
        let versions = versioned.get(&img.digest).cloned().unwrap_or_default();
        let reason = if n < opts.keep_last {
            Some(format!("among the newest {}", opts.keep_last))
        } else if t > cutoff {
            Some("younger than --older-than".to_string())
        } else if let Some(envs) = deployed.get(&img.digest) {
            Some(format!(
                "environment {} runs it",
                envs.iter().cloned().collect::<Vec<_>>().join(", ")
            ))
        } else if !versions.is_empty() && !opts.versions {
            Some(format!("version {} (use --versions)", versions.join(", ")))
        } else {
            None
        };
        if let Some(r) = reason {
            report.kept.push(keep(r));
            continue;
        }
        let mut revision_removed = false;
        if !opts.dry_run {
            for v in &versions {
                untag(ctx, app, v, false).await?;
            }
            untag(ctx, app, &img.tag, false).await?;
            if pointers(store, app, &img.digest).await?.is_empty() {
                delete_revision(store, app, &img.digest).await?;
                revision_removed = true;
            }
        }
        report.removed.push(Pruned {
            app: app.to_string(),
            tag: img.tag,
            digest: img.digest,
            pushed_at: Some(img.pushed_at.unwrap_or_else(|| rfc3339(t))),
            versions: if opts.versions { versions } else { Vec::new() },
            revision_removed,
        });
    }
    Ok(())
}
