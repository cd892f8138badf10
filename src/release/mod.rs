//! The release workflow on top of push/pull: git-stable builds, push metadata,
//! semantic versions (`tag`), environments (`promote`, `current`), `list` and
//! `history`. Operations return typed results; the binary renders them.
//!
//! s3dock's records are JSON documents beside the registry layout (keys in
//! [`crate::registry::layout`], reached only through [`access`]): image metadata,
//! version records and environment pointers under `s3dock/apps/{app}/`, the audit
//! trail under `s3dock/audit/{app}/`. Versions and environments are also real
//! registry tags, so `registry:2` serves `myapp:v1.2.0` and `myapp:production`; the
//! records are the source of truth, the tags follow them. Records that can change are
//! only ever replaced by compare-and-swap ([`cas`]), so concurrent writers never
//! silently lose an update. Everything read back is validated ([`records`]).

pub mod access;
pub mod audit;
pub mod builder;
pub mod copy;
pub mod env;
pub mod git;
pub mod list;
pub mod push;
pub mod records;
pub mod tag;

use crate::model::digest::Digest;
use crate::model::reference::valid_tag;
use crate::registry::Registry;
use anyhow::{bail, Result};
use audit::Actor;
use records::{stamp_commit, EnvRecord, ImageRecord, Record, VersionRecord};

/// What every release operation needs: the store and who is acting.
pub struct Ctx {
    pub store: Registry,
    pub actor: Actor,
}

impl Ctx {
    /// For operations that write: `actor` is the configured name (`--actor`,
    /// `S3DOCK_ACTOR` or the profile's), else the git or OS user; on S3 the AWS caller
    /// identity is looked up too.
    pub async fn new(store: Registry, actor: Option<&str>) -> Ctx {
        let actor = Actor::resolve(actor, "configured", &store).await;
        Ctx { store, actor }
    }

    /// For operations that only read: no AWS caller-identity lookup.
    pub fn read_only(store: Registry) -> Ctx {
        Ctx {
            store,
            actor: Actor::local(),
        }
    }
}

fn now() -> String {
    audit::rfc3339(audit::now())
}

/// A validated record without its etag; a malformed one is an error.
async fn read<T: Record>(store: &Registry, app: &str, name: &str) -> Result<Option<T>> {
    Ok(access::get_record::<T>(store, app, name)
        .await?
        .map(|(r, _)| r))
}

/// Updates one record by compare-and-swap (see [`crate::registry::cas::update`]).
async fn update_record<T: Record>(
    store: &Registry,
    app: &str,
    name: &str,
    decide: impl FnMut(Option<&T>) -> Result<Option<T>>,
) -> Result<crate::registry::cas::Updated<T>> {
    crate::registry::cas::update(
        &format!("{} {app}:{name}", T::WHAT),
        move || async move { Ok(access::get_record::<T>(store, app, name).await?) },
        move |v: T, etag: Option<String>| async move {
            access::put_record_if(store, app, name, &v, etag.as_deref()).await
        },
        decide,
    )
    .await
}

async fn require_app(store: &Registry, app: &str) -> Result<()> {
    if !access::app_exists(store, app).await? {
        bail!("app {app} not found in store {}", access::store_name(store));
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
    // Every environment, version and image tag is a valid tag; anything else names
    // nothing (and never reaches a key).
    if !valid_tag(name) {
        return Ok(None);
    }
    if let Some(e) = read::<EnvRecord>(store, app, name).await? {
        return Ok(Some(Named::Env(Box::new(e))));
    }
    if let Some(v) = read::<VersionRecord>(store, app, name).await? {
        return Ok(Some(Named::Version(v)));
    }
    Ok(store.tag_target(app, name).await?.map(Named::Image))
}

/// The full commit of an image tag, from its record, else its git-stable tag.
async fn commit_of(store: &Registry, app: &str, image_tag: &str) -> Option<String> {
    if let Ok(Some(r)) = read::<ImageRecord>(store, app, image_tag).await {
        if let Some(g) = r.git {
            return Some(g.commit);
        }
    }
    stamp_commit(image_tag).map(str::to_string)
}
