//! Process-wide record of multipart uploads and temporary objects in flight, so
//! that SIGINT/SIGTERM can abort or delete them before exiting instead of leaving
//! stray parts and temp objects behind.

use crate::store::StorageDriver;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

struct Entry {
    driver: Arc<dyn StorageDriver>,
    key: String,
    /// A multipart upload to abort; None for a temporary object to delete.
    upload_id: Option<String>,
}

fn registry() -> &'static Mutex<HashMap<u64, Entry>> {
    static R: OnceLock<Mutex<HashMap<u64, Entry>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// Removes its entry when dropped: the work it guarded finished or was cleaned up.
pub struct Guard(u64);

impl Drop for Guard {
    fn drop(&mut self) {
        registry().lock().unwrap().remove(&self.0);
    }
}

pub fn track(driver: &Arc<dyn StorageDriver>, key: &str, upload_id: Option<&str>) -> Guard {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let e = Entry {
        driver: driver.clone(),
        key: key.to_string(),
        upload_id: upload_id.map(str::to_string),
    };
    registry().lock().unwrap().insert(id, e);
    Guard(id)
}

/// Aborts every tracked upload and deletes every tracked temp object. Returns how many.
pub async fn abort_all() -> usize {
    let entries: Vec<Entry> = registry().lock().unwrap().drain().map(|(_, e)| e).collect();
    let n = entries.len();
    let work = entries.into_iter().map(|e| async move {
        let r = match &e.upload_id {
            Some(id) => e.driver.abort_upload(&e.key, id).await,
            None => e.driver.delete(&e.key).await,
        };
        if let Err(err) = r {
            let err = anyhow::Error::from(err);
            tracing::warn!("could not clean up {}: {err:#}", e.key);
        }
    });
    futures::future::join_all(work).await;
    n
}
