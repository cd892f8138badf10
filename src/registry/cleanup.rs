//! `cleanup`: removes what interrupted pushes leave behind — temporary objects
//! under `s3dock/tmp/` and incomplete multipart uploads under the store root —
//! when older than a threshold, so pushes still running are not disturbed.

use super::Registry;
use crate::store::Driver;
use anyhow::{Context, Result};
use std::time::{Duration, SystemTime};

#[derive(Debug, Default, serde::Serialize)]
pub struct CleanupReport {
    pub temp_objects: usize,
    pub temp_bytes: u64,
    pub incomplete_uploads: usize,
    pub dry_run: bool,
}

fn old(t: Option<SystemTime>, cutoff: SystemTime) -> bool {
    t.is_some_and(|t| t <= cutoff)
}

pub async fn cleanup(
    store: &Registry,
    older_than: Duration,
    dry_run: bool,
) -> Result<CleanupReport> {
    let cutoff = SystemTime::now() - older_than;
    let mut report = CleanupReport {
        dry_run,
        ..Default::default()
    };
    let temp_prefix = store.layout.temp_prefix();
    match store.driver.as_ref() {
        Driver::Fs(d) => {
            // Completed-but-unmoved temp objects, and the driver's own part files.
            let dirs = [
                d.root().join(&temp_prefix),
                d.root().join(crate::store::fs::TMP_DIR),
            ];
            for dir in dirs {
                let Ok(rd) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for e in rd.flatten() {
                    let m = e.metadata()?;
                    if m.is_file() && old(m.modified().ok(), cutoff) {
                        report.temp_objects += 1;
                        report.temp_bytes += m.len();
                        if !dry_run {
                            std::fs::remove_file(e.path())
                                .with_context(|| format!("cannot delete {}", e.path().display()))?;
                        }
                    }
                }
            }
        }
        Driver::S3(d) => {
            let c = d.client();
            let mut pages = c
                .list_objects_v2()
                .bucket(&d.bucket)
                .prefix(&temp_prefix)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.with_context(|| format!("cannot list {temp_prefix}"))?;
                for o in page.contents() {
                    let modified = o
                        .last_modified()
                        .and_then(|t| SystemTime::try_from(*t).ok());
                    if let (Some(k), true) = (o.key(), old(modified, cutoff)) {
                        report.temp_objects += 1;
                        report.temp_bytes += o.size().unwrap_or(0) as u64;
                        if !dry_run {
                            store.driver.delete(k).await?;
                        }
                    }
                }
            }
            match store.driver.list_uploads(&store.layout.root_prefix()).await? {
                None => tracing::warn!(
                    "this S3 server cannot list multipart uploads; incomplete uploads were not checked"
                ),
                Some(uploads) => {
                    for u in uploads.into_iter().filter(|u| old(u.initiated, cutoff)) {
                        report.incomplete_uploads += 1;
                        if !dry_run {
                            store.driver.abort_upload(&u.key, &u.id).await?;
                        }
                    }
                }
            }
        }
    }
    Ok(report)
}
