//! `list` and `history`: reading everything an app has. Store content is untrusted:
//! a malformed record or event is skipped and reported, and the rest still shows.

use super::access::{self, or_skip, Malformed};
use super::audit::{self, EventKind, History, Since};
use super::env::{env_names, resolve_record, Resolved};
use super::records::{
    app_name, parse_version, stamp_commit, EnvRecord, ImageRecord, Kind, VersionRecord,
};
use super::require_app;
use crate::model::digest::Digest;
use crate::model::reference::valid_tag;
use crate::model::text::excerpt;
use crate::registry::Registry;
use anyhow::Result;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Serialize)]
pub struct ImageRow {
    pub tag: String,
    pub digest: Digest,
    pub pushed_at: Option<String>,
    pub size: Option<u64>,
    pub commit: Option<String>,
    pub platform: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VersionRow {
    pub version: String,
    pub image_tag: String,
    pub digest: Digest,
    pub tagged_at: String,
}

/// An environment as listed: resolved, or why it cannot be.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum EnvRow {
    Resolved(Resolved),
    Error { env: String, error: String },
}

/// One app's images, versions and environments.
#[derive(Debug, Clone)]
pub struct AppListing {
    pub app: String,
    /// Newest push first.
    pub images: Vec<ImageRow>,
    /// Highest version first.
    pub versions: Vec<VersionRow>,
    pub environments: Vec<EnvRow>,
    /// What was skipped.
    pub malformed: Vec<Malformed>,
}

pub async fn list_app(store: &Registry, app: &str) -> Result<AppListing> {
    let app = &app_name(app)?;
    require_app(store, app).await?;
    let (version_names, mut malformed) = access::record_names(store, Kind::Version, app).await?;
    let (env_list, bad) = env_names(store, app).await?;
    malformed.extend(bad);
    let (recorded, bad) = access::record_names(store, Kind::Image, app).await?;
    malformed.extend(bad);
    let recorded: BTreeSet<String> = recorded.into_iter().collect();
    let mut images = Vec::new();
    let tags = store.tags(app).await?;
    // Records whose tag is gone are not listed, but a malformed one is still reported.
    for orphan in recorded.iter().filter(|r| !tags.contains(r)) {
        or_skip(
            access::get_record::<ImageRecord>(store, app, orphan).await,
            &mut malformed,
        )?;
    }
    for tag in tags {
        if !valid_tag(&tag) {
            malformed.push(Malformed::new("tag", &tag, "not a valid tag name"));
            continue;
        }
        if version_names.contains(&tag) || env_list.contains(&tag) {
            continue;
        }
        let digest = match store.tag_target(app, &tag).await {
            Ok(Some(d)) => d,
            Ok(None) => continue,
            Err(e) => {
                let why = excerpt(format!("{e:#}").as_bytes());
                malformed.push(Malformed::new("tag", &tag, why));
                continue;
            }
        };
        let rec = if recorded.contains(&tag) {
            or_skip(
                access::get_record::<ImageRecord>(store, app, &tag).await,
                &mut malformed,
            )?
        } else {
            None
        };
        images.push(ImageRow {
            digest,
            pushed_at: rec.as_ref().map(|r| r.pushed_at.clone()),
            size: rec.as_ref().map(|r| r.size),
            commit: rec
                .as_ref()
                .and_then(|r| r.git.as_ref().map(|g| g.commit.clone()))
                .or_else(|| stamp_commit(&tag).map(str::to_string)),
            platform: rec.and_then(|r| r.platform),
            tag,
        });
    }
    images.sort_by(|a, b| b.pushed_at.cmp(&a.pushed_at).then(b.tag.cmp(&a.tag)));
    let mut versions = Vec::new();
    for v in &version_names {
        let r = access::get_record::<VersionRecord>(store, app, v).await;
        if let Some(r) = or_skip(r, &mut malformed)? {
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
    let mut environments = Vec::new();
    for e in &env_list {
        let r = access::get_record::<EnvRecord>(store, app, e).await;
        let Some(rec) = or_skip(r, &mut malformed)? else {
            continue;
        };
        environments.push(match resolve_record(store, rec).await {
            Ok(r) => EnvRow::Resolved(r),
            Err(err) => EnvRow::Error {
                env: e.clone(),
                error: format!("{err:#}"),
            },
        });
    }
    Ok(AppListing {
        app: app.to_string(),
        images,
        versions,
        environments,
        malformed,
    })
}

/// One app in the list of all apps.
#[derive(Debug, Clone, Default)]
pub struct AppSummary {
    pub app: String,
    pub images: usize,
    pub versions: usize,
    pub environments: Vec<String>,
}

/// Every app with release records, by name, and the record files that were skipped.
pub async fn list_apps(store: &Registry) -> Result<(Vec<AppSummary>, Vec<Malformed>)> {
    let (records, malformed) = access::all_records(store).await?;
    let mut apps: BTreeMap<String, AppSummary> = BTreeMap::new();
    for (app, kind, name) in records {
        let entry = apps.entry(app.clone()).or_insert_with(|| AppSummary {
            app,
            ..Default::default()
        });
        match kind {
            Kind::Image => entry.images += 1,
            Kind::Version => entry.versions += 1,
            Kind::Env => entry.environments.push(name),
        }
    }
    Ok((apps.into_values().collect(), malformed))
}

/// The audit trail of `app`, newest first, at most `limit` events.
pub async fn history(
    store: &Registry,
    app: &str,
    since: Option<&Since>,
    event: Option<EventKind>,
    limit: Option<usize>,
) -> Result<History> {
    let app = &app_name(app)?;
    require_app(store, app).await?;
    let mut h = audit::history(store, app, since, event).await?;
    if let Some(n) = limit {
        h.events.truncate(n);
    }
    Ok(h)
}
