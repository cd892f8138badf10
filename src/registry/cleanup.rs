//! `cleanup`: removes what interrupted pushes leave behind — temporary objects
//! under `s3dock/tmp/` and incomplete multipart uploads under the store root —
//! when older than a threshold, so pushes still running are not disturbed.

use super::Registry;
use crate::store::StoreError;
use anyhow::Result;
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
    let temp_prefix = store.layout().temp_prefix();
    // Completed-but-unmoved temp objects ...
    for o in store.list_objects(&temp_prefix).await? {
        if old(o.modified, cutoff) {
            report.temp_objects += 1;
            report.temp_bytes += o.size;
            if !dry_run {
                store.driver.delete(&o.key).await?;
            }
        }
    }
    // ... the driver's own scratch files (the directory store's part files) ...
    let (n, bytes) = store.driver.sweep_scratch(cutoff, dry_run).await?;
    report.temp_objects += n;
    report.temp_bytes += bytes;
    // ... and multipart uploads left open.
    match store
        .driver
        .list_uploads(&store.layout().root_prefix())
        .await
    {
        Err(StoreError::Unsupported(_)) if store.s3().is_some() => tracing::warn!(
            "this S3 server cannot list multipart uploads; incomplete uploads were not checked"
        ),
        // The directory store's uploads are its scratch files, swept above.
        Err(StoreError::Unsupported(_)) => {}
        Err(e) => return Err(e.into()),
        Ok(uploads) => {
            for u in uploads.into_iter().filter(|u| old(u.initiated, cutoff)) {
                report.incomplete_uploads += 1;
                if !dry_run {
                    store.driver.abort_upload(&u.key, &u.id).await?;
                }
            }
        }
    }
    Ok(report)
}
