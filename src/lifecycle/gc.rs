//! `gc`: sweeps blobs, `_layers` links and dedup-index entries that nothing reaches
//! and that are older than a grace period, under the protocol of
//! [`crate::registry::gclock`] so that pushes running meanwhile are never broken.

use super::graph::{mark, Scan};
use crate::model::digest::Digest;
use crate::registry::gclock::{remove_stale, Sweep, SweepStart};
use crate::registry::Registry;
use anyhow::Result;
use serde::Serialize;
use std::collections::HashSet;
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Only what was last written longer ago than this is swept.
    pub grace: Duration,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    /// Pushes were running (this many fresh leases): nothing was swept.
    pub pushes_in_progress: usize,
    pub blobs: Vec<Digest>,
    pub blob_bytes: u64,
    /// `repo@digest` of each `_layers` link removed.
    pub layer_links: Vec<String>,
    pub index_entries: usize,
    /// Unreferenced but younger than the grace period: kept for now.
    pub kept_young: usize,
    /// Leases of crashed pushes and markers of killed gc runs, removed.
    pub stale_locks: usize,
    /// The sweep stopped at its time budget; run gc again for the rest.
    pub incomplete: bool,
}

fn old(t: Option<SystemTime>, cutoff: SystemTime) -> bool {
    // Without a modification time, age is unknown: kept.
    t.is_some_and(|t| t <= cutoff)
}

#[derive(serde::Deserialize)]
struct IndexRecord {
    digest: Digest,
}

pub async fn gc(store: &Registry, opts: &GcOptions) -> Result<GcReport> {
    let mut report = GcReport {
        dry_run: opts.dry_run,
        ..Default::default()
    };
    // A dry run deletes nothing, so it needs no marker (and blocks no push).
    let sweep = if opts.dry_run {
        None
    } else {
        match Sweep::begin(store).await? {
            SweepStart::Busy(n) => {
                report.pushes_in_progress = n;
                return Ok(report);
            }
            SweepStart::Started(s) => Some(s),
        }
    };
    let r = collect(store, opts, sweep.as_ref(), &mut report).await;
    if let Some(s) = sweep {
        s.end().await?;
    }
    r?;
    Ok(report)
}

async fn collect(
    store: &Registry,
    opts: &GcOptions,
    sweep: Option<&Sweep>,
    report: &mut GcReport,
) -> Result<()> {
    // The cutoff is taken after the marker is written: anything written later is young.
    let cutoff = SystemTime::now() - opts.grace;
    let scan = Scan::read(store).await?;
    let marked = mark(store, &scan).await?;
    let out_of_time = |report: &mut GcReport| {
        let stop = sweep.is_some_and(Sweep::out_of_time);
        report.incomplete |= stop;
        stop
    };
    // Links first, so a registry serving the store never offers a blob being removed.
    for ((repo, d), o) in &scan.layers {
        if marked.layer_links.contains(&(repo.clone(), *d)) {
            continue;
        }
        if !old(o.modified, cutoff) {
            report.kept_young += 1;
            continue;
        }
        if out_of_time(report) {
            return Ok(());
        }
        if !opts.dry_run {
            store.delete(&o.key).await?;
        }
        report.layer_links.push(format!("{repo}@{d}"));
    }
    let layout = store.layout();
    let mut swept = HashSet::new();
    for o in store.list_objects(&layout.blobs_prefix()).await? {
        let Some(d) = layout.blob_digest_of_key(&o.key) else {
            continue;
        };
        if marked.blobs.contains(&d) {
            continue;
        }
        if !old(o.modified, cutoff) {
            report.kept_young += 1;
            continue;
        }
        if out_of_time(report) {
            return Ok(());
        }
        if !opts.dry_run {
            store.delete(&o.key).await?;
        }
        swept.insert(d);
        report.blobs.push(d);
        report.blob_bytes += o.size;
    }
    // Dedup-index entries whose blob is gone (swept now, or missing before).
    for o in store.list_objects(&layout.diffid_index_prefix()).await? {
        if layout.diffid_of_index_key(&o.key).is_none() || !old(o.modified, cutoff) {
            continue;
        }
        let target = store
            .get_json::<IndexRecord>(&o.key)
            .await
            .ok()
            .flatten()
            .map(|r| r.digest);
        let gone = match target {
            Some(d) if marked.blobs.contains(&d) => false,
            Some(d) if swept.contains(&d) => true,
            Some(d) => store.blob_size(&d).await?.is_none(),
            // Unreadable: verify reports it; gc leaves what it does not understand.
            None => false,
        };
        if gone {
            if out_of_time(report) {
                return Ok(());
            }
            if !opts.dry_run {
                store.delete(&o.key).await?;
            }
            report.index_entries += 1;
        }
    }
    if !opts.dry_run {
        report.stale_locks = remove_stale(store).await?;
    }
    Ok(())
}
