//! Environments: `promote` points one at an image tag or a version, `current` and
//! `pull APP ENV` resolve it.

use super::access::{self, Malformed};
use super::audit::{self, Event, PromoteTarget, What};
use super::records::{
    app_name, check_env_name, looks_like_version, EnvRecord, Kind, Target, TargetKind,
    VersionRecord, RECORD_SCHEMA,
};
use super::tag::short_digest;
use super::{commit_of, lookup, now, read, require_app, update_record, Ctx, Named};
use crate::model::digest::Digest;
use crate::model::reference::{familiar, Reference};
use crate::registry::Registry;
use anyhow::{anyhow, bail, Result};
use serde::Serialize;

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

/// Names of an app's environments, and the environment files that are not.
pub(super) async fn env_names(
    store: &Registry,
    app: &str,
) -> Result<(Vec<String>, Vec<Malformed>)> {
    access::record_names(store, Kind::Env, app).await
}

/// Resolves `env` of `app` to an image: the version it names (as the version is now),
/// or the image tag and the digest it had when promoted.
pub async fn resolve_env(store: &Registry, app: &str, env: &str) -> Result<Resolved> {
    let app = &app_name(app)?;
    let Some(rec) = read::<EnvRecord>(store, app, env).await? else {
        require_app(store, app).await?;
        let (envs, _) = env_names(store, app).await?;
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

pub(super) async fn resolve_record(store: &Registry, rec: EnvRecord) -> Result<Resolved> {
    let (image_tag, digest) = match rec.target.kind {
        TargetKind::Image => (rec.image_tag.clone(), rec.digest),
        TargetKind::Version => {
            match read::<VersionRecord>(store, &rec.app, &rec.target.name).await? {
                Some(v) => (v.image_tag, v.digest),
                None => bail!(
                    "environment {} of {} points to version {}, which is missing from the store",
                    rec.env,
                    rec.app,
                    rec.target.name
                ),
            }
        }
    };
    Ok(Resolved {
        reference: Reference::with_tag(&rec.app, &image_tag).to_string(),
        app: familiar(&rec.app),
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
pub(super) async fn materialise_env(store: &Registry, app: &str, env: &str) -> Result<Digest> {
    let mut last = None;
    for _ in 0..20 {
        let Some(rec) = read::<EnvRecord>(store, app, env).await? else {
            bail!("environment {env} of {app} disappeared");
        };
        let gen = rec.generation;
        let r = resolve_record(store, rec).await?;
        if store.tag_target(app, env).await? != Some(r.digest) {
            store.set_tag(app, env, &r.digest).await?;
        }
        last = Some(r.digest);
        match read::<EnvRecord>(store, app, env).await? {
            Some(again) if again.generation == gen => break,
            _ => continue,
        }
    }
    last.ok_or_else(|| anyhow!("environment {env} of {app} did not settle"))
}

/// What `promote` did.
#[derive(Debug, Clone)]
pub struct Promoted {
    pub app: String,
    pub env: String,
    pub target: Target,
    pub image_tag: String,
    pub digest: Digest,
    pub generation: u64,
    /// The environment already pointed there: nothing was written.
    pub unchanged: bool,
    pub previous: Option<EnvRecord>,
    /// Key of the audit event.
    pub event: Option<String>,
}

/// Points `env` of `app` at `name`: an image tag, a version, or another environment
/// (whose current target is taken: staging → production).
pub async fn promote(ctx: &Ctx, app: &str, name: &str, env: &str) -> Result<Promoted> {
    let store = &ctx.store;
    let app = &app_name(app)?;
    check_env_name(env)?;
    require_app(store, app).await?;
    let (target, image_tag, digest) = match lookup(store, app, name).await? {
        Some(Named::Version(v)) => (
            Target {
                kind: TargetKind::Version,
                name: name.to_string(),
            },
            v.image_tag,
            v.digest,
        ),
        Some(Named::Image(d)) => (
            Target {
                kind: TargetKind::Image,
                name: name.to_string(),
            },
            name.to_string(),
            d,
        ),
        Some(Named::Env(e)) => {
            let r = resolve_record(store, *e).await?;
            (r.target, r.image_tag, r.digest)
        }
        None if looks_like_version(name) => {
            let (versions, _) = access::record_names(store, Kind::Version, app).await?;
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
            access::store_name(store)
        ),
    };
    if read::<VersionRecord>(store, app, env).await?.is_some() {
        bail!("{app}:{env} is a version, not an environment");
    }
    let image_tag_there = store.tag_target(app, env).await?;
    let u = update_record::<EnvRecord>(store, app, env, |cur| {
        if let Some(c) = cur {
            if c.target == target && c.digest == digest {
                return Ok(None);
            }
        } else if let Some(d) = image_tag_there {
            bail!(
                "{app}:{env} is already an image tag ({}), not an environment: pick another name",
                short_digest(&d)
            );
        }
        Ok(Some(EnvRecord {
            schema_version: RECORD_SCHEMA,
            kind: "environment".into(),
            app: app.to_string(),
            env: env.to_string(),
            target: target.clone(),
            image_tag: image_tag.clone(),
            digest,
            generation: cur.map_or(1, |c| c.generation + 1),
            promoted_at: now(),
            promoted_by: ctx.actor.name.clone(),
        }))
    })
    .await?;
    let mut out = Promoted {
        app: familiar(app),
        env: env.to_string(),
        target: target.clone(),
        image_tag: image_tag.clone(),
        digest,
        generation: 0,
        unchanged: u.written.is_none(),
        previous: None,
        event: None,
    };
    let Some(new) = u.written else {
        out.generation = u.previous.map_or(0, |c| c.generation);
        return Ok(out);
    };
    out.generation = new.generation;
    // The event right after the record it describes, before the registry tag follows.
    let what = What::Promote {
        target: PromoteTarget {
            env: env.to_string(),
            kind: target.kind,
            name: target.name.clone(),
            image: format!("{app}:{image_tag}"),
            image_tag: image_tag.clone(),
            digest,
            generation: new.generation,
            host: None,
            duration_secs: None,
        },
        previous: u.previous.clone().map(Box::new),
    };
    let ev = Event::new(
        app,
        &ctx.actor,
        what,
        commit_of(store, app, &image_tag).await,
    );
    out.event = Some(audit::record(store, &ev).await?);
    materialise_env(store, app, env).await?;
    out.previous = u.previous;
    Ok(out)
}

/// What an environment runs, and what its image tag holds now if it was pushed
/// again since the promotion (the environment keeps the promoted digest).
#[derive(Debug, Clone)]
pub struct Current {
    pub resolved: Resolved,
    pub repushed: Option<Digest>,
}

pub async fn current(store: &Registry, app: &str, env: &str) -> Result<Current> {
    let app = &app_name(app)?;
    let resolved = resolve_env(store, app, env).await?;
    let mut repushed = None;
    if resolved.target.kind == TargetKind::Image {
        if let Ok(Some(now)) = store.tag_target(app, &resolved.image_tag).await {
            repushed = (now != resolved.digest).then_some(now);
        }
    }
    Ok(Current { resolved, repushed })
}

/// For `pull APP NAME`: an environment or version resolves to `app:image_tag@digest`,
/// anything else is taken as a tag.
pub async fn resolve_for_pull(store: &Registry, app: &str, name: &str) -> Result<Reference> {
    let app = &app_name(app)?;
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
                "{app} has no environment, version or image tag {} in store {}",
                crate::model::text::excerpt(name.as_bytes()),
                access::store_name(store)
            )
        }
    }
}

/// `app`'s environment `env` as a reference to pull: `app:image_tag@digest`.
pub async fn env_reference(store: &Registry, app: &str, env: &str) -> Result<Reference> {
    let r = resolve_env(store, app, env).await?;
    Ok(Reference {
        name: app_name(app)?,
        tag: Some(r.image_tag),
        digest: Some(r.digest),
    })
}

/// For `pull --env ENV`: every app that has environment `env`, by name, each as
/// [`env_reference`] gives it; and the record files that were skipped.
pub async fn env_everywhere(
    store: &Registry,
    env: &str,
) -> Result<(Vec<Reference>, Vec<Malformed>)> {
    check_env_name(env)?;
    let (records, malformed) = access::all_records(store).await?;
    let mut apps: Vec<String> = records
        .into_iter()
        .filter(|(_, kind, name)| *kind == Kind::Env && name == env)
        .map(|(app, _, _)| app)
        .collect();
    apps.sort();
    apps.dedup();
    if apps.is_empty() {
        bail!(
            "no app has an environment {env} in store {} (s3dock list shows the apps)",
            access::store_name(store)
        );
    }
    let mut out = Vec::with_capacity(apps.len());
    for app in apps {
        out.push(env_reference(store, &app, env).await?);
    }
    Ok((out, malformed))
}

/// What `rollback` did to the environment pointer.
#[derive(Debug, Clone)]
pub struct RolledBack {
    /// The record now in place (a new generation holding the previous target).
    pub now: EnvRecord,
    /// The record it replaced.
    pub from: EnvRecord,
    pub event: String,
}

/// Moves `env` of `app` back to what it pointed at before its current generation, as
/// a new generation (so generations stay in order) with a `rollback` event that names
/// `host` (the host rolling back, if any) and how long the move took. The earlier
/// target comes from the audit event that wrote the current generation.
pub async fn rollback(ctx: &Ctx, app: &str, env: &str, host: Option<String>) -> Result<RolledBack> {
    let start = std::time::Instant::now();
    let store = &ctx.store;
    let app = &app_name(app)?;
    check_env_name(env)?;
    let Some(cur) = read::<EnvRecord>(store, app, env).await? else {
        resolve_env(store, app, env).await?; // the helpful "not found" error
        bail!("environment {env} of {app} not found");
    };
    let h = audit::history(store, app, None, None).await?;
    let before = h.events.iter().find_map(|e| match &e.what {
        What::Promote { target, previous } | What::Rollback { target, previous }
            if target.env == env && target.generation == cur.generation =>
        {
            Some(previous.clone())
        }
        _ => None,
    });
    let prev = match before {
        Some(Some(p)) => *p,
        Some(None) => bail!(
            "environment {env} of {app} has no previous generation: generation {} was its first promotion",
            cur.generation
        ),
        None => bail!(
            "cannot roll back {app} {env}: the audit event of its generation {} is missing from the store (promote the earlier image again instead)",
            cur.generation
        ),
    };
    let gen = cur.generation;
    let u = update_record::<EnvRecord>(store, app, env, |c| {
        match c {
            Some(c) if c.generation == gen => {}
            _ => bail!("environment {env} of {app} changed while rolling back: run rollback again"),
        }
        Ok(Some(EnvRecord {
            generation: gen + 1,
            promoted_at: now(),
            promoted_by: ctx.actor.name.clone(),
            ..prev.clone()
        }))
    })
    .await?;
    let new = u
        .written
        .ok_or_else(|| anyhow!("environment {env} of {app} was not written"))?;
    let what = What::Rollback {
        target: PromoteTarget {
            env: env.to_string(),
            kind: new.target.kind,
            name: new.target.name.clone(),
            image: format!("{app}:{}", new.image_tag),
            image_tag: new.image_tag.clone(),
            digest: new.digest,
            generation: new.generation,
            host,
            duration_secs: Some(start.elapsed().as_secs_f64()),
        },
        previous: Some(Box::new(cur.clone())),
    };
    let ev = Event::new(
        app,
        &ctx.actor,
        what,
        commit_of(store, app, &new.image_tag).await,
    );
    let event = audit::record(store, &ev).await?;
    materialise_env(store, app, env).await?;
    Ok(RolledBack {
        now: new,
        from: cur,
        event,
    })
}
