//! `rm`, `prune`, `gc` and `verify`: run the library's lifecycle operations and
//! render their results (data on stdout, messages on stderr, or `--json`).

use crate::cli::{PruneArgs, VerifyArgs};
use crate::render::say;
use crate::settings::Settings;
use anyhow::{bail, Result};
use s3dock::lifecycle::gc::{gc, GcOptions};
use s3dock::lifecycle::prune::{prune, prune_all, PruneOptions, PruneReport};
use s3dock::lifecycle::rm::rm;
use s3dock::lifecycle::verify::{verify, VerifyOptions};
use s3dock::model::text::printable;
use s3dock::registry::Registry;
use s3dock::release::tag::short_digest;
use s3dock::transfer::stats::human_bytes;

/// `verify` could not check the store (as opposed to finding problems): exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("verify could not run")]
pub struct CouldNotRun;

/// The exit status for an error of these commands.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<CouldNotRun>().is_some() {
        2
    } else {
        1
    }
}

async fn open(s: &Settings) -> Result<Registry> {
    Registry::open(&s.store_config(None)?).await
}

pub async fn run_rm(s: &Settings, refs: &[String], force: bool) -> Result<()> {
    let ctx = crate::commands::writer(s).await?;
    let mut done = Vec::new();
    // One after the other, stopping at the first refusal: what is done is reported.
    let mut failure = None;
    for r in refs {
        match rm(&ctx, r, force).await {
            Ok(x) => done.push(x),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    if s.json && failure.is_none() {
        println!("{}", serde_json::to_string(&done)?);
    }
    for x in &done {
        let also = if x.untagged.is_empty() {
            String::new()
        } else {
            format!(" and its tags {}", x.untagged.join(", "))
        };
        say(
            s,
            format!(
                "removed {} {}{}",
                printable(&x.reference),
                short_digest(&x.digest),
                printable(&also)
            ),
        );
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

pub async fn run_prune(s: &Settings, a: PruneArgs) -> Result<()> {
    let opts = PruneOptions {
        keep_last: a.keep_last,
        older_than: a.older_than,
        dry_run: a.dry_run,
        versions: a.versions,
    };
    let ctx = crate::commands::writer(s).await?;
    let report: PruneReport = match (a.app.as_deref(), a.all_apps) {
        (Some(app), false) => prune(&ctx, app, &opts).await?,
        (None, true) => prune_all(&ctx, &opts).await?,
        (Some(_), true) => bail!("prune takes an APP or --all-apps, not both"),
        (None, false) => bail!("prune needs an APP (or --all-apps for every app)"),
    };
    if s.json {
        crate::render::json_result(serde_json::to_value(&report)?);
    } else {
        for p in &report.removed {
            println!(
                "{}:{} {} {}",
                p.app,
                p.tag,
                short_digest(&p.digest),
                p.pushed_at.as_deref().unwrap_or("-")
            );
        }
    }
    let verb = if report.dry_run {
        "would remove"
    } else {
        "removed"
    };
    say(
        s,
        format!(
            "{verb} {} image tag(s), kept {}",
            report.removed.len(),
            report.kept.len()
        ),
    );
    Ok(())
}

pub async fn run_gc(s: &Settings, opts: GcOptions) -> Result<()> {
    let store = open(s).await?;
    let r = gc(&store, &opts).await?;
    if s.json {
        println!("{}", serde_json::to_string(&r)?);
    }
    if r.pushes_in_progress > 0 {
        say(
            s,
            format!(
                "{} push(es) in progress: nothing swept; run s3dock gc again later",
                r.pushes_in_progress
            ),
        );
        return Ok(());
    }
    let verb = if r.dry_run { "would remove" } else { "removed" };
    say(
        s,
        format!(
            "{verb} {} blob(s) ({}), {} layer link(s), {} index entr(ies); {} unreferenced object(s) kept, younger than --grace{}",
            r.blobs.len(),
            human_bytes(r.blob_bytes),
            r.layer_links.len(),
            r.index_entries,
            r.kept_young,
            if r.incomplete {
                "; stopped at the time limit: run s3dock gc again"
            } else {
                ""
            }
        ),
    );
    Ok(())
}

pub async fn run_verify(s: &Settings, a: VerifyArgs) -> Result<()> {
    let opts = VerifyOptions {
        refs: a.refs,
        deep: a.deep,
        repair: a.repair,
    };
    let report = async {
        let store = open(s).await?;
        verify(&store, &opts).await
    }
    .await
    .map_err(|e| e.context(CouldNotRun))?;
    if s.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        for p in &report.problems {
            let fixed = if p.repaired { " (repaired)" } else { "" };
            println!("{}: {}{fixed}", p.kind, p.message);
        }
    }
    let open = report.problems.iter().filter(|p| !p.repaired).count();
    say(
        s,
        format!(
            "checked {} tag(s), {} manifest(s), {} blob(s), {} record(s), {} index entr(ies): {} problem(s), {} repaired",
            report.tags,
            report.manifests,
            report.blobs,
            report.records,
            report.index_entries,
            report.problems.len(),
            report.problems.len() - open
        ),
    );
    if open > 0 {
        bail!("verify found {open} problem(s) in the store (listed above)");
    }
    Ok(())
}
