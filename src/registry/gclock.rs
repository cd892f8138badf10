//! The protocol that lets `gc` run while pushes run (ARCHITECTURE.md has the proof).
//!
//! A push writes a lease, then reads the sweep marker and waits while a fresh one
//! exists; only then does it look at blobs (existence checks, dedup reuse). `gc`
//! writes the sweep marker, then lists leases and sweeps only if none is fresh. Each
//! side writes its own object before reading the other's, so with read-after-write
//! consistency at least one of them sees the other: either gc sees the lease and
//! sweeps nothing, or the push sees the marker and waits until the sweep is over.
//!
//! Both objects hold the time they were written; freshness is judged against the
//! reader's clock, so clocks must agree within [`LEASE_REFRESH`]'s slack. A lease is
//! rewritten every [`LEASE_REFRESH`] while its push runs, so one left by a crashed
//! push stops blocking gc after [`LEASE_TTL`]. A sweep marker left by a killed gc
//! delays pushes for at most [`SWEEP_STALE`]. Each gc run has a marker of its own, so
//! one run ending never uncovers another that is still sweeping.

use super::{inflight, Registry};
use anyhow::Result;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A lease older than this belongs to a push that is gone.
pub const LEASE_TTL: Duration = Duration::from_secs(300);
/// How often a running push rewrites its lease.
pub const LEASE_REFRESH: Duration = Duration::from_secs(60);
/// A sweep marker older than this belongs to a gc that is gone: pushes stop waiting.
pub const SWEEP_STALE: Duration = Duration::from_secs(600);
/// gc stops sweeping after this long, well before its marker goes stale.
pub const SWEEP_BUDGET: Duration = Duration::from_secs(300);

#[derive(serde::Serialize, serde::Deserialize)]
struct Stamp {
    /// Seconds since the Unix epoch when written.
    time: u64,
    host: String,
    pid: u32,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

fn stamp() -> Result<bytes::Bytes> {
    Ok(serde_json::to_vec(&Stamp {
        time: unix_now(),
        host: hostname(),
        pid: std::process::id(),
    })?
    .into())
}

/// Whether a lease or marker is still held: younger than `ttl`, and, when written on
/// this host, by a process that is still alive (so a killed gc or push stops blocking
/// at once). An unreadable body counts as held: being blocked is safe, sweeping under
/// a push is not.
fn fresh(body: &[u8], ttl: Duration) -> bool {
    match serde_json::from_slice::<Stamp>(body) {
        Ok(s) => {
            let dead = !s.host.is_empty()
                && s.host == hostname()
                && !std::path::Path::new(&format!("/proc/{}", s.pid)).exists();
            !dead && unix_now().saturating_sub(s.time) < ttl.as_secs()
        }
        Err(_) => true,
    }
}

/// A running push's claim: while it is held (and refreshed), gc sweeps nothing.
pub struct Lease {
    store: Registry,
    key: String,
    refresher: tokio::task::JoinHandle<()>,
    _tracked: inflight::Guard,
}

impl Lease {
    /// Writes the lease, then waits while a fresh sweep marker exists. Only after this
    /// returns may the push check or reuse any blob.
    pub async fn acquire(store: &Registry) -> Result<Lease> {
        let key = store
            .layout()
            .gc_lease(&uuid::Uuid::new_v4().simple().to_string());
        store.put_bytes(&key, stamp()?).await?;
        let tracked = inflight::track(&store.driver, &key, None);
        let refresher = {
            let (store, key) = (store.clone(), key.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(LEASE_REFRESH).await;
                    match stamp() {
                        Ok(b) => {
                            if let Err(e) = store.put_bytes(&key, b).await {
                                tracing::warn!("could not refresh gc lease {key}: {e:#}");
                            }
                        }
                        Err(e) => tracing::warn!("{e:#}"),
                    }
                }
            })
        };
        let lease = Lease {
            store: store.clone(),
            key,
            refresher,
            _tracked: tracked,
        };
        lease.wait_for_sweep().await?;
        Ok(lease)
    }

    async fn wait_for_sweep(&self) -> Result<()> {
        let mut attempt = 0;
        while fresh_count(
            &self.store,
            &self.store.layout().gc_sweeps_prefix(),
            SWEEP_STALE,
        )
        .await?
            > 0
        {
            if attempt == 0 {
                tracing::info!("gc is sweeping the store; waiting for it to finish");
            }
            crate::store::backoff(attempt.min(4), Duration::from_millis(100)).await;
            attempt += 1;
        }
        Ok(())
    }

    /// Gives the lease up (the push is done, or failed).
    pub async fn release(self) {
        self.refresher.abort();
        if let Err(e) = self.store.delete(&self.key).await {
            tracing::warn!("could not remove gc lease {}: {e:#}", self.key);
        }
    }
}

/// A sweep in progress: its marker is in the store until [`Sweep::end`].
pub struct Sweep {
    store: Registry,
    key: String,
    started: std::time::Instant,
    _tracked: inflight::Guard,
}

pub enum SweepStart {
    Started(Sweep),
    /// These many fresh leases: pushes are running, nothing may be swept now.
    Busy(usize),
}

impl Sweep {
    /// Writes the sweep marker, then looks for leases. With a fresh lease the marker
    /// is removed again at once and nothing may be swept.
    pub async fn begin(store: &Registry) -> Result<SweepStart> {
        let key = store
            .layout()
            .gc_sweep(&uuid::Uuid::new_v4().simple().to_string());
        store.put_bytes(&key, stamp()?).await?;
        let tracked = inflight::track(&store.driver, &key, None);
        let sweep = Sweep {
            store: store.clone(),
            key,
            started: std::time::Instant::now(),
            _tracked: tracked,
        };
        let busy = fresh_count(store, &store.layout().gc_leases_prefix(), LEASE_TTL).await?;
        if busy > 0 {
            sweep.end().await?;
            return Ok(SweepStart::Busy(busy));
        }
        Ok(SweepStart::Started(sweep))
    }

    /// Whether the sweep must stop now so its marker never goes stale while it runs.
    pub fn out_of_time(&self) -> bool {
        self.started.elapsed() > SWEEP_BUDGET
    }

    pub async fn end(self) -> Result<()> {
        self.store.delete(&self.key).await
    }
}

/// How many objects under `prefix` are younger than `ttl`.
async fn fresh_count(store: &Registry, prefix: &str, ttl: Duration) -> Result<usize> {
    let mut n = 0;
    for o in store.list_objects(prefix).await? {
        if let Some(b) = store.get_document(&o.key).await? {
            n += usize::from(fresh(&b, ttl));
        }
    }
    Ok(n)
}

/// Stale leases (crashed pushes) and sweep markers (killed gc runs) are deleted by gc
/// so they stop blocking and the folders do not grow. Returns how many.
pub async fn remove_stale(store: &Registry) -> Result<usize> {
    let l = store.layout();
    let mut n = 0;
    for (prefix, ttl) in [
        (l.gc_leases_prefix(), LEASE_TTL),
        (l.gc_sweeps_prefix(), SWEEP_STALE),
    ] {
        for o in store.list_objects(&prefix).await? {
            if let Some(b) = store.get_document(&o.key).await? {
                if !fresh(&b, ttl) {
                    store.delete(&o.key).await?;
                    n += 1;
                }
            }
        }
    }
    Ok(n)
}
