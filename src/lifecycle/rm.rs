//! `rm`: untag an image (or remove a version), or delete a manifest revision by
//! digest. A revision is refused while a tag, version or environment points at it,
//! unless forced. Blobs stay until `gc`. Each removal is an audit event.

use super::graph::refs_of;
use crate::model::digest::Digest;
use crate::model::reference::Reference;
use crate::model::text::excerpt;
use crate::registry::Registry;
use crate::release::access;
use crate::release::audit::{self, Event, RemoveTarget, What};
use crate::release::records::{check_app_name, EnvRecord, Kind, VersionRecord};
use crate::release::Ctx;
use anyhow::{bail, Result};
use serde::Serialize;

/// One removal.
#[derive(Debug, Clone, Serialize)]
pub struct Removed {
    /// `app:tag` or `app@digest`.
    pub reference: String,
    pub digest: Digest,
    /// Tags removed with a forced revision removal (they pointed at it).
    pub untagged: Vec<String>,
    /// The manifest's revision link was deleted (gc can then collect its blobs).
    pub revision_removed: bool,
    pub forced: bool,
    /// Key of the audit event.
    pub event: Option<String>,
}

/// What still points at a manifest of an app.
#[derive(Debug, Default)]
pub struct Pointers {
    /// Registry tags (image tags, versions and environments alike).
    pub tags: Vec<String>,
    pub versions: Vec<String>,
    pub envs: Vec<String>,
    /// Multi-platform indexes (`sha256:...`) that list it, named by a tag, version or
    /// environment: without its revision link the registry cannot serve them.
    pub indexes: Vec<String>,
}

impl Pointers {
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
            && self.versions.is_empty()
            && self.envs.is_empty()
            && self.indexes.is_empty()
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (what, names) in [
            ("tag", &self.tags),
            ("version", &self.versions),
            ("environment", &self.envs),
            ("index", &self.indexes),
        ] {
            if !names.is_empty() {
                parts.push(format!("{what} {}", names.join(", ")));
            }
        }
        parts.join("; ")
    }
}

/// Every tag, version and environment of `app` that names `d`, and every index they
/// name that lists `d` as one of its platforms' manifests.
pub async fn pointers(store: &Registry, app: &str, d: &Digest) -> Result<Pointers> {
    let mut p = Pointers::default();
    // What the tags, versions and environments name besides `d`: indexes among them
    // may list `d`.
    let mut others = std::collections::BTreeSet::new();
    for tag in store.tags(app).await? {
        // A malformed tag link is reported by verify; it names nothing here.
        match store.tag_target(app, &tag).await.ok().flatten() {
            Some(t) if t == *d => p.tags.push(tag),
            Some(t) => {
                others.insert(t);
            }
            None => {}
        }
    }
    for v in access::record_names(store, Kind::Version, app).await?.0 {
        if let Ok(Some((r, _))) = access::get_record::<VersionRecord>(store, app, &v).await {
            if r.digest == *d {
                p.versions.push(v);
            } else {
                others.insert(r.digest);
            }
        }
    }
    for e in access::record_names(store, Kind::Env, app).await?.0 {
        if let Ok(Some((r, _))) = access::get_record::<EnvRecord>(store, app, &e).await {
            if r.digest != *d {
                others.insert(r.digest);
            }
            let via_version = match r.target.kind {
                crate::release::records::TargetKind::Version => {
                    access::get_record::<VersionRecord>(store, app, &r.target.name)
                        .await
                        .ok()
                        .flatten()
                        .is_some_and(|(v, _)| v.digest == *d)
                }
                crate::release::records::TargetKind::Image => false,
            };
            if r.digest == *d || via_version {
                p.envs.push(e);
            }
        }
    }
    for o in others {
        // Only stored, parseable indexes can list `d`; anything else lists nothing.
        if store.blob_size(&o).await?.is_none() {
            continue;
        }
        let Ok(bytes) = store.get_small_blob(&o).await else {
            continue;
        };
        if let Ok(refs) = refs_of(&o, &bytes) {
            if refs.children.iter().any(|(c, _)| c == d) {
                p.indexes.push(o.to_string());
            }
        }
    }
    Ok(p)
}

/// Removes a registry tag: `current` first (it stops resolving at once), then its
/// history links.
pub async fn delete_tag(store: &Registry, app: &str, tag: &str) -> Result<()> {
    let l = store.layout();
    store.delete(&l.tag_current(app, tag)).await?;
    let folder = format!("{}{tag}/", l.tags_prefix(app));
    for o in store.list_objects(&folder).await? {
        store.delete(&o.key).await?;
    }
    Ok(())
}

/// Deletes a revision link and every tag-history link to it (as the registry's
/// manifest DELETE does).
pub async fn delete_revision(store: &Registry, app: &str, d: &Digest) -> Result<()> {
    let l = store.layout();
    store.delete(&l.revision_link(app, d)).await?;
    for tag in store.tags(app).await? {
        store.delete(&l.tag_index(app, &tag, d)).await?;
    }
    Ok(())
}

async fn event(ctx: &Ctx, app: &str, target: RemoveTarget) -> Result<String> {
    let ev = Event::new(app, &ctx.actor, What::Remove { target }, None);
    audit::record(&ctx.store, &ev).await
}

/// Untags an image tag or removes a version (record and registry tag), with its event.
/// Environments are never removed here.
pub async fn untag(ctx: &Ctx, app: &str, tag: &str, force: bool) -> Result<Removed> {
    let store = &ctx.store;
    let l = store.layout();
    if access::get_record::<EnvRecord>(store, app, tag)
        .await?
        .is_some()
    {
        bail!("{app}:{tag} is an environment; environments are not removed by rm (promote another image to it instead)");
    }
    let version = access::get_record::<VersionRecord>(store, app, tag)
        .await?
        .map(|(v, _)| v);
    let digest = match (&version, store.tag_target(app, tag).await?) {
        (Some(v), _) => v.digest,
        (None, Some(d)) => d,
        (None, None) => bail!("tag {app}:{tag} not found in store {}", store.display),
    };
    if version.is_some() {
        let p = pointers(store, app, &digest).await?;
        let mut envs = Vec::new();
        for e in p.envs {
            if let Ok(Some((r, _))) = access::get_record::<EnvRecord>(store, app, &e).await {
                if r.target.name == tag {
                    envs.push(e);
                }
            }
        }
        if !envs.is_empty() && !force {
            bail!(
                "version {app}:{tag} is what environment {} runs; promote another image first, or use --force",
                envs.join(", ")
            );
        }
    }
    delete_tag(store, app, tag).await?;
    let kind = if version.is_some() {
        Kind::Version
    } else {
        Kind::Image
    };
    store
        .delete(&access::record_key(store, kind, app, tag))
        .await?;
    let _ = l;
    let ev = event(
        ctx,
        app,
        RemoveTarget {
            image: format!("{app}:{tag}"),
            tag: Some(tag.to_string()),
            digest,
            forced: false,
        },
    )
    .await?;
    Ok(Removed {
        reference: format!("{app}:{tag}"),
        digest,
        untagged: Vec::new(),
        revision_removed: false,
        forced: false,
        event: Some(ev),
    })
}

/// Deletes the revision `d` of `app`; refused while anything points at it unless
/// `force` (then the tags pointing at it are removed too).
pub async fn remove_revision(ctx: &Ctx, app: &str, d: &Digest, force: bool) -> Result<Removed> {
    let store = &ctx.store;
    if !store.has_revision(app, d).await? {
        bail!("{app}@{d} not found in store {}", store.display);
    }
    let p = pointers(store, app, d).await?;
    let forced = !p.is_empty();
    if forced && !force {
        bail!(
            "{app}@{d} is still in use ({}); remove those first, or use --force",
            p.describe()
        );
    }
    for t in &p.tags {
        delete_tag(store, app, t).await?;
    }
    delete_revision(store, app, d).await?;
    let ev = event(
        ctx,
        app,
        RemoveTarget {
            image: format!("{app}@{d}"),
            tag: None,
            digest: *d,
            forced,
        },
    )
    .await?;
    Ok(Removed {
        reference: format!("{app}@{d}"),
        digest: *d,
        untagged: p.tags,
        revision_removed: true,
        forced,
        event: Some(ev),
    })
}

/// `rm REF`: `app:tag` untags, `app@digest` deletes the revision.
pub async fn rm(ctx: &Ctx, reference: &str, force: bool) -> Result<Removed> {
    let r = Reference::parse(reference)?;
    check_app_name(&r.name)?;
    match (&r.tag, &r.digest) {
        (_, Some(d)) => remove_revision(ctx, &r.name, d, force).await,
        (Some(t), None) => untag(ctx, &r.name, t, force).await,
        (None, None) => bail!(
            "rm takes APP:TAG or APP@sha256:DIGEST (got {})",
            excerpt(reference.as_bytes())
        ),
    }
}
