//! How results look: text on stdout (data) and stderr (messages), or `--json`.
//! Strings that came from a store are printed through `printable`, so a hostile
//! record cannot drive the terminal.

use crate::settings::Settings;
use s3dock::model::text::printable;
use s3dock::registry::cas::ConditionalWrites;
use s3dock::release::access::Malformed;
use s3dock::release::audit::{Event, History, What};
use s3dock::release::env::{Current, Promoted};
use s3dock::release::list::{AppListing, AppSummary, EnvRow};
use s3dock::release::push::PushRecord;
use s3dock::release::records::TargetKind;
use s3dock::release::tag::{short_digest, Tagged};
use s3dock::transfer::pull::PullReport;
use s3dock::transfer::stats::human_bytes;
use serde_json::json;
use std::sync::OnceLock;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// A message on stderr unless `--quiet`.
pub fn say(s: &Settings, msg: impl std::fmt::Display) {
    if !s.quiet {
        eprintln!("{msg}");
    }
}

/// What the conditional-write probe found, for commands that ran it.
static CONDITIONAL_WRITES: OnceLock<ConditionalWrites> = OnceLock::new();

/// Records the probe's answer; the first time it is `Ignored`, says so (always: the
/// user's updates are at risk, whatever `--quiet` asks).
pub fn conditional_writes(c: ConditionalWrites) {
    if CONDITIONAL_WRITES.set(c).is_ok() && c == ConditionalWrites::Ignored {
        eprintln!(
            "s3dock: warning: this S3 server ignores conditional writes: concurrent updates may be lost"
        );
    }
}

/// A `--json` object on stdout, with `conditional_writes` (honoured, ignored or
/// unknown) when the command asked the store.
pub fn json_result(mut v: serde_json::Value) {
    if let (Some(o), Some(c)) = (v.as_object_mut(), CONDITIONAL_WRITES.get()) {
        o.insert("conditional_writes".into(), json!(c));
    }
    println!("{v}");
}

/// A command's `--json` result: on stdout, or as the last line on stderr when stdout
/// carries the archive (`pull` without `-o`).
pub fn summary(s: &Settings, v: &serde_json::Value, stdout_has_data: bool) {
    if !s.json {
        return;
    }
    if stdout_has_data {
        eprintln!("{v}");
    } else {
        println!("{v}");
    }
}

/// `stamp`: TAG or APP:TAG, or `{"app", "tag", "reference"}` with `--json`.
pub fn stamp(s: &Settings, app: Option<&str>, tag: &str) {
    let reference = match app {
        Some(app) => format!("{app}:{tag}"),
        None => tag.to_string(),
    };
    if s.json {
        println!(
            "{}",
            json!({"app": app, "tag": tag, "reference": reference})
        );
    } else {
        println!("{reference}");
    }
}

/// What `pull` wrote. `--json`: for one image the object it always was, for a bundle
/// (several references, or `--env` of every app) `{"images": [...], ...totals}`; a
/// delta archive adds `layers_omitted` and `bytes_omitted`. A delta archive draws one
/// warning line (also with `-q`): it is not for `docker load`.
pub fn pulled(
    s: &Settings,
    r: &PullReport,
    bundle: bool,
    output: Option<&std::path::Path>,
    downloaded: u64,
    secs: f64,
) -> anyhow::Result<()> {
    let delta = r.layers_omitted > 0;
    if delta {
        let file = output.map_or("the archive".to_string(), |p| p.display().to_string());
        eprintln!(
            "s3dock: warning: {file} is a delta archive ({} layer(s), {} left out): docker load cannot read it; s3dock push -i {file} into a store that holds them",
            r.layers_omitted,
            human_bytes(r.bytes_omitted)
        );
    }
    if !s.quiet {
        let omitted = if delta {
            format!(", {} left out", human_bytes(r.bytes_omitted))
        } else {
            String::new()
        };
        if let ([img], false) = (r.images.as_slice(), bundle) {
            eprintln!(
                "pulled {} {} ({} layers, {} written{omitted}, {} downloaded, {secs:.1}s)",
                img.reference,
                img.manifest_digest,
                img.layers,
                human_bytes(r.bytes_written),
                human_bytes(downloaded),
            );
        } else {
            for img in &r.images {
                eprintln!("pulled {} {}", img.reference, img.manifest_digest);
            }
            eprintln!(
                "{} images, {} distinct layers, {} written{omitted}, {} downloaded, {secs:.1}s",
                r.images.len(),
                r.layers_written + r.layers_omitted,
                human_bytes(r.bytes_written),
                human_bytes(downloaded),
            );
        }
    }
    let mut v = match (r.images.as_slice(), bundle) {
        ([img], false) => {
            let mut v = serde_json::to_value(img)?;
            v["bytes_written"] = json!(r.bytes_written);
            v
        }
        _ => serde_json::to_value(r)?,
    };
    if !delta {
        if let Some(o) = v.as_object_mut() {
            o.remove("layers_omitted");
            o.remove("bytes_omitted");
        }
    } else {
        v["layers_omitted"] = json!(r.layers_omitted);
        v["bytes_omitted"] = json!(r.bytes_omitted);
    }
    summary(s, &v, output.is_none());
    Ok(())
}

/// One line per record or event that was skipped (always shown: the output is incomplete).
pub fn skipped(malformed: &[Malformed]) {
    for m in malformed {
        eprintln!("s3dock: warning: {m}; skipped");
    }
}

/// `2025-07-21 21:18` from an RFC 3339 time.
fn short_time(t: &str) -> String {
    match OffsetDateTime::parse(t, &Rfc3339) {
        Ok(t) => {
            let t = t.to_offset(time::UtcOffset::UTC);
            let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]");
            t.format(&f).unwrap_or_else(|_| t.to_string())
        }
        Err(_) => printable(t).into_owned(),
    }
}

/// Tells the user what recording a push did (stderr).
pub fn report_push(s: &Settings, recs: &[PushRecord]) {
    for r in recs {
        if r.unchanged {
            say(
                s,
                format!(
                    "{} already holds this content ({}): nothing changed",
                    r.reference, r.digest
                ),
            );
        } else if let Some(p) = r.previous {
            say(
                s,
                format!(
                    "{} replaced {p}, which stays pullable as {}@{p}",
                    r.reference,
                    r.reference.split(':').next().unwrap_or("")
                ),
            );
        }
    }
}

pub fn tagged(s: &Settings, t: &Tagged) {
    let (app, version, image_tag, digest) = (&t.app, &t.version, &t.image_tag, &t.digest);
    if t.unchanged {
        say(
            s,
            format!("{app}:{version} already names {app}:{image_tag} ({digest}): nothing changed"),
        );
        if s.json {
            json_result(
                json!({"app": app, "version": version, "image_tag": image_tag, "digest": digest, "unchanged": true}),
            );
        }
        return;
    }
    match &t.previous {
        Some(p) => say(
            s,
            format!(
                "moved {app}:{version} from {app}:{} to {app}:{image_tag} ({digest})",
                p.image_tag
            ),
        ),
        None => say(
            s,
            format!("tagged {app}:{image_tag} as {app}:{version} ({digest})"),
        ),
    }
    if s.json {
        json_result(
            json!({"app": app, "version": version, "image_tag": image_tag, "digest": digest,
                "previous": t.previous.as_ref().map(|p| json!({"image_tag": p.image_tag, "digest": p.digest})),
                "event": t.event}),
        );
    }
}

pub fn promoted(s: &Settings, p: &Promoted) {
    let (app, env, target, image_tag, digest) =
        (&p.app, &p.env, &p.target, &p.image_tag, &p.digest);
    if p.unchanged {
        say(
            s,
            format!(
                "{env} of {app} already points to {} ({app}:{image_tag}, {digest}): nothing changed",
                target.name
            ),
        );
        if s.json {
            json_result(
                json!({"app": app, "env": env, "target": target, "image_tag": image_tag, "digest": digest, "generation": p.generation, "unchanged": true}),
            );
        }
        return;
    }
    say(
        s,
        format!(
            "promoted {app}:{} to {env} ({app}:{image_tag}, {digest}){}",
            target.name,
            p.previous
                .as_ref()
                .map(|p| format!(", was {}", p.target.name))
                .unwrap_or_default()
        ),
    );
    if s.json {
        json_result(
            json!({"app": app, "env": env, "target": target, "image_tag": image_tag, "digest": digest,
                "generation": p.generation, "previous": p.previous, "event": p.event}),
        );
    }
}

pub fn current(s: &Settings, c: &Current, with_digest: bool) -> anyhow::Result<()> {
    let r = &c.resolved;
    if s.json {
        println!("{}", serde_json::to_string(r)?);
    } else if with_digest {
        println!("{}@{}", r.reference, r.digest);
    } else {
        println!("{}", r.reference);
    }
    if c.repushed.is_some() {
        tracing::warn!(
            "{} has been pushed again since it was promoted; {} runs {}",
            r.reference,
            r.env,
            r.digest
        );
    }
    Ok(())
}

pub fn listing(s: &Settings, l: &AppListing) {
    skipped(&l.malformed);
    let app = &l.app;
    if s.json {
        println!(
            "{}",
            json!({"app": app, "images": l.images, "versions": l.versions, "environments": l.environments})
        );
        return;
    }
    println!("{app}");
    println!("  images:");
    if l.images.is_empty() {
        println!("    (none)");
    }
    for i in &l.images {
        println!(
            "    {:<24} {:<16} {:>9}  {:<7}  {}",
            printable(&i.tag),
            i.pushed_at
                .as_deref()
                .map(short_time)
                .unwrap_or_else(|| "-".into()),
            i.size.map(human_bytes).unwrap_or_else(|| "-".into()),
            i.commit
                .as_deref()
                .map(|c| printable(c.get(..7).unwrap_or(c)))
                .unwrap_or("-".into()),
            short_digest(&i.digest)
        );
    }
    println!("  versions:");
    if l.versions.is_empty() {
        println!("    (none)");
    }
    for v in &l.versions {
        println!(
            "    {:<24} {app}:{}  {}",
            printable(&v.version),
            printable(&v.image_tag),
            short_digest(&v.digest)
        );
    }
    println!("  environments:");
    if l.environments.is_empty() {
        println!("    (none)");
    }
    for e in &l.environments {
        match e {
            EnvRow::Error { env, error } => {
                println!("    {:<24} error: {}", printable(env), printable(error))
            }
            EnvRow::Resolved(r) => {
                let via = if r.target.kind == TargetKind::Version {
                    format!("{} → ", printable(&r.target.name))
                } else {
                    String::new()
                };
                println!(
                    "    {:<24} {via}{}  {}",
                    printable(&r.env),
                    printable(&r.reference),
                    short_time(&r.promoted_at)
                );
            }
        }
    }
}

pub fn apps(s: &Settings, apps: &[AppSummary], malformed: &[Malformed], store: &str) {
    skipped(malformed);
    if s.json {
        let v: Vec<_> = apps
            .iter()
            .map(|a| json!({"app": a.app, "images": a.images, "versions": a.versions, "environments": a.environments}))
            .collect();
        println!("{}", json!({"apps": v}));
        return;
    }
    if apps.is_empty() {
        say(s, format!("no apps in store {store}"));
    }
    for a in apps {
        println!(
            "{:<32} {:>4} images {:>4} versions  {}",
            printable(&a.app),
            a.images,
            a.versions,
            if a.environments.is_empty() {
                "-".to_string()
            } else {
                printable(&a.environments.join(", ")).into_owned()
            }
        );
    }
}

pub fn history(s: &Settings, h: &History) -> anyhow::Result<()> {
    skipped(&h.malformed);
    if s.json {
        println!("{}", serde_json::to_string(&h.events)?);
        return Ok(());
    }
    for e in &h.events {
        println!("{}", describe(e));
    }
    Ok(())
}

/// One line per event: time, kind, what it did, who did it.
fn describe(e: &Event) -> String {
    let what = match &e.what {
        What::Push { target, previous } => format!(
            "{} {}{}",
            target.image,
            short_digest(&target.digest),
            previous
                .as_ref()
                .map(|p| format!(" (replaced {}, archived)", short_digest(&p.digest)))
                .unwrap_or_default()
        ),
        What::Tag { target, previous } => format!(
            "{}:{} = {} {}{}",
            e.app,
            target.version,
            target.image,
            short_digest(&target.digest),
            previous
                .as_ref()
                .map(|p| format!(" (moved from {}:{})", e.app, p.image_tag))
                .unwrap_or_default()
        ),
        What::Promote { target, previous } | What::Rollback { target, previous } => format!(
            "{} → {}{} {}{}{}",
            target.env,
            if target.kind == TargetKind::Version {
                format!("{} = ", target.name)
            } else {
                String::new()
            },
            target.image,
            short_digest(&target.digest),
            previous
                .as_ref()
                .map(|p| format!(" (was {})", p.target.name))
                .unwrap_or_default(),
            // A rollback: the host that ran it and how long it took there.
            match (&target.host, target.duration_secs) {
                (Some(h), Some(d)) => format!(" on {h} ({d:.1}s)"),
                (Some(h), None) => format!(" on {h}"),
                (None, Some(d)) => format!(" ({d:.1}s)"),
                (None, None) => String::new(),
            }
        ),
        What::Remove { target } => format!(
            "{} {}{}",
            target.image,
            short_digest(&target.digest),
            if target.forced { " (forced)" } else { "" }
        ),
        What::Deploy { target, previous }
        | What::DeployFailed {
            target, previous, ..
        } => {
            format!(
                "{} on {}: {} {} as {} ({:.1}s){}{}",
                target.env,
                target.host,
                target.image,
                short_digest(&target.digest),
                target.colour,
                target.duration_secs,
                previous
                    .as_ref()
                    .map(|p| format!(" (was {})", short_digest(&p.digest)))
                    .unwrap_or_default(),
                match &e.what {
                    What::DeployFailed { error, .. } => format!(": {error}"),
                    _ => String::new(),
                }
            )
        }
    };
    let by = match &e.actor.aws {
        Some(arn) => format!("{} [{arn}]", e.actor.name),
        None => e.actor.name.clone(),
    };
    // Validated events hold only valid names, but actors are free text.
    format!(
        "{}  {:<8} {}  by {}",
        short_time(&e.time),
        e.what.kind().name(),
        printable(&what),
        printable(&by)
    )
}

/// `copy`: one line per image on stderr, the whole result with `--json`.
pub fn copied(
    s: &Settings,
    images: &[s3dock::transfer::copy::CopiedImage],
    records: &[s3dock::release::copy::RecordsCopied],
    from: &s3dock::registry::Registry,
    to: &s3dock::registry::Registry,
    seconds: f64,
) {
    let sum =
        |f: fn(&s3dock::transfer::copy::CopiedImage) -> u64| -> u64 { images.iter().map(f).sum() };
    if s.json {
        let mut v = serde_json::json!({
            "images": images,
            "blobs_copied": sum(|c| c.blobs_copied as u64),
            "blobs_skipped": sum(|c| c.blobs_skipped as u64),
            "bytes_copied": sum(|c| c.bytes_copied),
            "bytes_server_side": sum(|c| c.bytes_server_side),
            "bytes_streamed": sum(|c| c.bytes_streamed),
            "bytes_resumed": sum(|c| c.bytes_resumed),
            "seconds": seconds,
            "from": from.display,
            "to": to.display,
        });
        if !records.is_empty() {
            v["records"] = serde_json::to_value(records).unwrap_or_default();
        }
        println!("{v}");
    }
    if s.quiet {
        return;
    }
    for c in images {
        let digest = c.digest.map(|d| d.to_string()).unwrap_or_default();
        eprintln!(
            "copied {} {digest}: {} blobs copied ({}, {}), {} already there",
            printable(&c.reference),
            c.blobs_copied,
            human_bytes(c.bytes_copied),
            c.method,
            c.blobs_skipped
        );
    }
    for r in records {
        eprintln!(
            "copied the records of {}: {} images, {} versions, {} environments{}",
            printable(&r.app),
            r.images,
            r.versions,
            r.environments,
            if r.not_copied.is_empty() {
                String::new()
            } else {
                format!(
                    " ({} naming images not in the target left out)",
                    r.not_copied.len()
                )
            }
        );
    }
    eprintln!(
        "{} images, {} copied to {} in {seconds:.1}s",
        images.len(),
        human_bytes(sum(|c| c.bytes_copied)),
        to.display
    );
}
