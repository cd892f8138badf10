//! Streaming blob uploads with bounded memory. A producer thread writes bytes;
//! full parts go to concurrent multipart uploads that share one pool of `jobs`
//! permits, so memory is about (jobs + 2) × part size however big the blob is.
//! A blob goes straight to its final key when its digest is known up front, and
//! is completed only after the digest matches; otherwise it lands under a temp key
//! and is moved once the digest is known. Blobs of one part are a single PUT.
//!
//! Resume: a killed push leaves its multipart upload open. Uploads are keyed so the
//! next push of the same content finds it (the final key, or a temp key named after
//! the input and settings) and skips every part whose size and MD5 (the part's ETag)
//! match what it is about to send. Sharing an upload with a push still running is
//! safe: a part is re-sent only if its bytes differ, CompleteMultipartUpload checks
//! every part's ETag (so mixed content fails instead of being stored), and whoever
//! completes second finds the upload gone and waits for the blob instead.

use super::inflight;
use crate::model::digest::Digest;
use crate::registry::layout::Layout;
use crate::store::{
    is_upload_gone, Found, PartTag, Precondition, StorageDriver, StoreError, StoredPart,
};
use anyhow::{bail, Context, Result};
use bytes::{Bytes, BytesMut};
use md5::{Digest as _, Md5};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

/// S3 allows 10,000 parts; keep a margin for compression overhead on incompressible data.
const MAX_PARTS: u64 = 9_000;
const MIB: u64 = 1 << 20;

#[derive(Clone)]
pub struct Uploader {
    driver: Arc<dyn StorageDriver>,
    layout: Layout,
    permits: Arc<Semaphore>,
    jobs: usize,
    part_size: u64,
    /// The largest part any upload has used (grown above `part_size` for huge blobs).
    largest_part: Arc<AtomicU64>,
    /// Bytes of parts handed to uploads and not yet stored, over every upload.
    backlog: Arc<AtomicU64>,
    /// Nanoseconds producers spent blocked handing parts over (the buffer was full).
    waited: Arc<AtomicU64>,
    /// Part buffers back from the store, for the next parts.
    spare: Spare,
    resume: bool,
    rt: tokio::runtime::Handle,
}

#[derive(Debug, Clone)]
pub struct UploadOutcome {
    pub digest: Digest,
    pub size: u64,
    /// Bytes sent to the store (0 when another writer stored the blob first).
    pub uploaded: u64,
    /// Bytes an interrupted push had already uploaded, reused instead of sent again.
    pub resumed: u64,
}

enum Msg {
    Part(Bytes, Queued),
    Finish(Digest, u64),
}

/// A part's bytes, counted in the uploader's backlog until the part is stored or dropped.
struct Queued {
    backlog: Arc<AtomicU64>,
    bytes: u64,
}

impl Queued {
    fn new(backlog: &Arc<AtomicU64>, bytes: usize) -> Self {
        backlog.fetch_add(bytes as u64, Ordering::Relaxed);
        Queued {
            backlog: backlog.clone(),
            bytes: bytes as u64,
        }
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.backlog.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl Uploader {
    pub(crate) fn new(
        driver: Arc<dyn StorageDriver>,
        layout: Layout,
        jobs: usize,
        part_size: u64,
    ) -> Self {
        Uploader {
            driver,
            layout,
            permits: Arc::new(Semaphore::new(jobs.max(1))),
            jobs: jobs.max(1),
            part_size: part_size.max(5 * MIB),
            largest_part: Arc::new(AtomicU64::new(part_size.max(5 * MIB))),
            backlog: Default::default(),
            waited: Default::default(),
            spare: Spare::new(jobs.max(1) + 2),
            resume: false,
            rt: tokio::runtime::Handle::current(),
        }
    }

    /// Part size for a blob of at most `size_hint` bytes: grows so no upload needs more
    /// than MAX_PARTS parts, rounded to whole MiB so all non-final parts are equal.
    pub fn part_size_for(&self, size_hint: u64) -> usize {
        let needed = size_hint.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
        self.part_size.max(needed) as usize
    }

    /// How full the upload buffer is, 0.0 to 1.0: parts not yet stored over the most the
    /// producer can hand over before it must wait (`jobs` sending, one waiting for a permit,
    /// one in the channel). Near 1 the store is the bottleneck; near 0 it waits for input.
    pub fn fill(&self) -> f64 {
        let most = (self.jobs as u64 + 2) * self.largest_part.load(Ordering::Relaxed);
        (self.backlog.load(Ordering::Relaxed) as f64 / most as f64).min(1.0)
    }

    /// How long producers have waited, in all, for room in the upload buffer.
    pub fn waited(&self) -> Duration {
        Duration::from_nanos(self.waited.load(Ordering::Relaxed))
    }

    /// Whether to continue uploads that interrupted pushes left open (default: no).
    pub fn resume(mut self, on: bool) -> Self {
        self.resume = on && self.driver.resumable_uploads();
        self
    }

    /// Starts an upload. `known` is the digest the content must have, if known up front;
    /// otherwise `group` names the content (input digest and settings) for resuming.
    pub fn begin(
        &self,
        known: Option<Digest>,
        group: Option<String>,
        size_hint: u64,
    ) -> BlobUpload {
        let (tx, rx) = mpsc::channel(1);
        let part_size = self.part_size_for(size_hint);
        self.largest_part
            .fetch_max(part_size as u64, Ordering::Relaxed);
        let task = Task {
            up: self.clone(),
            known,
            group,
            part_size: part_size as u64,
            resumed: Arc::new(AtomicU64::new(0)),
        };
        let join = self.rt.spawn(task.run(rx));
        BlobUpload {
            tx: Some(tx),
            backlog: self.backlog.clone(),
            waited: self.waited.clone(),
            buf: self.spare.take(part_size),
            spare: self.spare.clone(),
            part_size,
            join: Some(join),
        }
    }
}

/// A few part buffers kept for reuse: a fresh 16 MiB buffer per part costs a page fault
/// and a zeroed page per 4 KiB (20 % of a cold zstd push's page faults before; with the
/// reused zstd context, 103k -> 62k faults for the 1.46 GB bench archive to S3).
#[derive(Clone)]
struct Spare {
    bufs: Arc<std::sync::Mutex<Vec<BytesMut>>>,
    most: usize,
}

impl Spare {
    fn new(most: usize) -> Self {
        Spare {
            bufs: Default::default(),
            most,
        }
    }

    /// An empty buffer of at least `size` bytes.
    fn take(&self, size: usize) -> BytesMut {
        let kept = self.bufs.lock().expect("spare buffers").pop();
        match kept {
            Some(b) if b.capacity() >= size => b,
            _ => BytesMut::with_capacity(size),
        }
    }

    /// Keeps a part's buffer once nothing else holds it (the store may still, e.g. the
    /// SDK for a retry).
    fn put(&self, part: Bytes) {
        if let Ok(mut b) = part.try_into_mut() {
            b.clear();
            let mut bufs = self.bufs.lock().expect("spare buffers");
            if bufs.len() < self.most {
                bufs.push(b);
            }
        }
    }
}

/// The producer's side; used from a blocking thread.
pub struct BlobUpload {
    tx: Option<mpsc::Sender<Msg>>,
    backlog: Arc<AtomicU64>,
    waited: Arc<AtomicU64>,
    buf: BytesMut,
    spare: Spare,
    part_size: usize,
    join: Option<JoinHandle<Result<UploadOutcome>>>,
}

/// An upload whose bytes are all sent; wait on it to learn the outcome.
pub type PendingUpload = JoinHandle<Result<UploadOutcome>>;

impl BlobUpload {
    fn send(&mut self, msg: Msg) -> Result<()> {
        let tx = self.tx.as_ref().expect("upload already finished");
        if tx.blocking_send(msg).is_err() {
            // The task ended early: surface its error.
            let join = self.join.take().expect("upload task");
            return match futures::executor::block_on(join) {
                Ok(Err(e)) => Err(e),
                Ok(Ok(_)) => bail!("upload ended before all data was sent"),
                Err(e) => Err(e.into()),
            };
        }
        Ok(())
    }

    /// Hands a part over, counted in the backlog until it is stored.
    fn send_part(&mut self, part: Bytes) -> Result<()> {
        let queued = Queued::new(&self.backlog, part.len());
        let t = std::time::Instant::now();
        let sent = self.send(Msg::Part(part, queued));
        self.waited
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        sent
    }

    pub fn write(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            let n = (self.part_size - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == self.part_size {
                let next = self.spare.take(self.part_size);
                let part = std::mem::replace(&mut self.buf, next).freeze();
                self.send_part(part)?;
            }
        }
        Ok(())
    }

    /// Sends the rest and the content's digest; the upload completes in the background.
    pub fn finish(mut self, digest: Digest, size: u64) -> Result<PendingUpload> {
        if !self.buf.is_empty() {
            let part = std::mem::take(&mut self.buf).freeze();
            self.send_part(part)?;
        }
        self.send(Msg::Finish(digest, size))?;
        self.tx.take();
        Ok(self.join.take().expect("upload task"))
    }
}

impl Drop for BlobUpload {
    fn drop(&mut self) {
        // Dropping the sender without Finish makes the task abort the upload.
        self.tx.take();
    }
}

struct Task {
    up: Uploader,
    known: Option<Digest>,
    group: Option<String>,
    part_size: u64,
    /// Bytes of parts found already stored.
    resumed: Arc<AtomicU64>,
}

struct Multipart {
    key: String,
    id: String,
    /// Parts an interrupted push stored in this upload, by number.
    stored: HashMap<i32, StoredPart>,
    parts: Vec<JoinHandle<Result<PartTag>>>,
    /// Set once a part found the upload gone: the rest are not sent.
    gone: Arc<AtomicBool>,
    /// Started by this push (not continued): aborted if this push fails or is stopped.
    /// A continued upload stays open for the next push, or for a push still using it.
    owned: bool,
    _tracked: Option<inflight::Guard>,
}

/// How long a push whose upload another push completed waits for that push to store the blob.
const WAIT_FOR_OTHER: Duration = Duration::from_secs(600);

impl Task {
    async fn run(self, mut rx: mpsc::Receiver<Msg>) -> Result<UploadOutcome> {
        let driver = self.up.driver.clone();
        let mut first: Option<(Bytes, Queued)> = None;
        let mut mp: Option<Multipart> = None;
        let result = async {
            loop {
                match rx.recv().await {
                    Some(Msg::Part(p, q)) => {
                        if mp.is_none() && first.is_none() {
                            first = Some((p, q));
                            continue;
                        }
                        if mp.is_none() {
                            mp = Some(self.open().await?);
                            let (f, fq) = first.take().expect("first part");
                            self.spawn_part(mp.as_mut().unwrap(), f, fq).await;
                        }
                        self.spawn_part(mp.as_mut().unwrap(), p, q).await;
                    }
                    Some(Msg::Finish(digest, size)) => {
                        return self.complete(digest, size, first.take(), &mut mp).await
                    }
                    None => bail!("upload abandoned before completion"),
                }
            }
        }
        .await;
        if result.is_err() {
            if let Some(m) = mp {
                for h in &m.parts {
                    h.abort();
                }
                if m.owned {
                    let _ = driver.abort_upload(&m.key, &m.id).await;
                }
            }
        }
        result
    }

    /// Continues an upload an interrupted push left open, or starts a new one.
    async fn open(&self) -> Result<Multipart> {
        let driver = &self.up.driver;
        let layout = &self.up.layout;
        let (key, prefix) = match (&self.known, &self.group) {
            (Some(d), _) => (layout.blob_data(d), Some(layout.blob_data(d))),
            (None, g) => (
                layout.temp(
                    g.as_deref().unwrap_or("any"),
                    &uuid::Uuid::new_v4().simple().to_string(),
                ),
                g.as_deref().map(|g| layout.temp_group(g)),
            ),
        };
        if let (true, Some(prefix)) = (self.up.resume, prefix) {
            match self.find_open(&prefix).await {
                Ok(Some((key, id, stored))) => {
                    let bytes: u64 = stored.values().map(|p| p.size).sum();
                    tracing::info!(
                        "continuing an interrupted upload of {key}: {} parts ({bytes} bytes) already stored",
                        stored.len()
                    );
                    return Ok(Multipart {
                        key,
                        id,
                        stored,
                        parts: Vec::new(),
                        gone: Default::default(),
                        owned: false,
                        _tracked: None,
                    });
                }
                Ok(None) => {}
                Err(e) => tracing::debug!("not resuming: {e:#}"),
            }
        }
        let id = driver.create_upload(&key).await?;
        let _tracked = Some(inflight::track(driver, &key, Some(&id)));
        Ok(Multipart {
            key,
            id,
            stored: HashMap::new(),
            parts: Vec::new(),
            gone: Default::default(),
            owned: true,
            _tracked,
        })
    }

    /// The open upload under `prefix` with the most stored parts, if any has one.
    async fn find_open(
        &self,
        prefix: &str,
    ) -> Result<Option<(String, String, HashMap<i32, StoredPart>)>> {
        let driver = &self.up.driver;
        let mut open = match driver.list_uploads(prefix).await {
            Err(StoreError::Unsupported(_)) => return Ok(None),
            r => r?,
        };
        // Newest first; a few candidates are plenty (older ones are for `cleanup`).
        open.sort_by_key(|u| std::cmp::Reverse(u.initiated));
        let mut best: Option<(String, String, HashMap<i32, StoredPart>)> = None;
        for u in open.into_iter().take(3) {
            let parts: HashMap<i32, StoredPart> = driver
                .list_parts(&u.key, &u.id)
                .await?
                .into_iter()
                .filter(|p| !p.etag.is_empty())
                .map(|p| (p.number, p))
                .collect();
            if !parts.is_empty() && best.as_ref().is_none_or(|b| parts.len() > b.2.len()) {
                best = Some((u.key, u.id, parts));
            }
        }
        Ok(best)
    }

    async fn spawn_part(&self, mp: &mut Multipart, data: Bytes, queued: Queued) {
        let permit = self
            .up
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore open");
        let (driver, key, id) = (self.up.driver.clone(), mp.key.clone(), mp.id.clone());
        let number = mp.parts.len() as i32 + 1;
        let part_size = self.part_size;
        let stored = mp
            .stored
            .remove(&number)
            .filter(|p| p.size == data.len() as u64);
        let resumed = self.resumed.clone();
        let gone = mp.gone.clone();
        let spare = self.up.spare.clone();
        mp.parts.push(tokio::spawn(async move {
            if gone.load(Ordering::Relaxed) {
                return Err(StoreError::UploadGone(key).into());
            }
            let data = match stored {
                Some(p) => {
                    // ETags of plain and SSE-S3 parts are their MD5; others never match.
                    let (md5, data) = tokio::task::spawn_blocking(move || {
                        (hex::encode(Md5::digest(&data)), data)
                    })
                    .await?;
                    let same = p.etag.trim_matches('"').eq_ignore_ascii_case(&md5);
                    if same {
                        resumed.fetch_add(p.size, Ordering::Relaxed);
                        return Ok(PartTag { etag: p.etag });
                    }
                    data
                }
                None => data,
            };
            let r = match driver
                .upload_part(&key, &id, number, part_size, data.clone())
                .await
            {
                // Some servers answer a part for a completed upload with a 500 (moto) or a 403
                // (s3s-fs), not NoSuchUpload.
                Err(e @ (StoreError::Other(_) | StoreError::AccessDenied { .. })) => {
                    match driver.upload_exists(&key, &id).await {
                        Ok(false) => Err(StoreError::UploadGone(key)),
                        _ => Err(e),
                    }
                }
                r => r,
            };
            spare.put(data);
            let r = r.map_err(anyhow::Error::from);
            if r.as_ref().is_err_and(is_upload_gone) {
                gone.store(true, Ordering::Relaxed);
            }
            drop((permit, queued));
            r
        }));
    }

    async fn complete(
        &self,
        digest: Digest,
        size: u64,
        first: Option<(Bytes, Queued)>,
        mp: &mut Option<Multipart>,
    ) -> Result<UploadOutcome> {
        if let Some(k) = self.known {
            if k != digest {
                bail!("content does not match its digest: expected {k}, got {digest}");
            }
        }
        let resumed = self.resumed.load(Ordering::Relaxed);
        let outcome = |uploaded| UploadOutcome {
            digest,
            size,
            uploaded,
            resumed,
        };
        let driver = &self.up.driver;
        let final_key = self.up.layout.blob_data(&digest);
        let Some(m) = mp.take() else {
            // Single part: one PUT at the final key, unless it is already there.
            if driver.stat(&final_key).await.found()?.is_some() {
                return Ok(outcome(0));
            }
            let (data, _queued) = first.unzip();
            driver
                .put(&final_key, data.unwrap_or_default(), Precondition::None)
                .await?;
            return Ok(outcome(size));
        };
        let mut tags = Vec::with_capacity(m.parts.len());
        let mut failure = None;
        for h in m.parts {
            match h.await.context("part upload task failed")? {
                Ok(t) => tags.push(t),
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        let done = match failure {
            Some(e) => Err(e),
            None => driver
                .complete_upload(&m.key, &m.id, &tags)
                .await
                .map_err(anyhow::Error::from),
        };
        if let Err(e) = done {
            if is_upload_gone(&e) {
                self.wait_for_other(&m.key, &final_key, &e).await?;
                return Ok(outcome(0));
            }
            if m.owned {
                let _ = driver.abort_upload(&m.key, &m.id).await;
            }
            return Err(e);
        }
        // From here the upload is a temp object (if not at its final key): delete it on a signal.
        drop(m._tracked);
        if m.key != final_key {
            let _temp = inflight::track(driver, &m.key, None);
            if driver.stat(&final_key).await.found()?.is_none() {
                driver
                    .move_object(&m.key, &final_key, size, self.up.jobs)
                    .await?;
            } else {
                driver.delete(&m.key).await?;
            }
        }
        Ok(outcome(size - resumed))
    }

    /// A concurrent push continued the same upload and completed it first (it verifies
    /// and moves the blob, so wait for that), or aborted it (then fail).
    async fn wait_for_other(&self, key: &str, final_key: &str, gone: &anyhow::Error) -> Result<()> {
        let driver = &self.up.driver;
        let start = std::time::Instant::now();
        tracing::info!("{gone}; waiting for it to store {final_key}");
        loop {
            // The temp object is checked first: it is moved by copy-then-delete, so if it is
            // absent now and the blob is absent after, the upload was aborted, not completed.
            let completed = key != final_key && driver.stat(key).await.found()?.is_some();
            if driver.stat(final_key).await.found()?.is_some() {
                return Ok(());
            }
            if !completed {
                bail!("{gone} before it was stored: push again");
            }
            if start.elapsed() > WAIT_FOR_OTHER {
                bail!(
                    "{gone} but did not store it within {} s: push again",
                    WAIT_FOR_OTHER.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FsDriver;

    /// The backlog `--compression auto` steers by counts a part from the moment it is
    /// handed over until it is stored, and nothing once uploads end, stored or abandoned.
    #[test]
    fn backlog_counts_parts_until_stored_or_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let _in_rt = rt.enter();
        let driver = Arc::new(FsDriver::new(dir.path().into()));
        let up = Uploader::new(driver, Layout::new(""), 2, 5 * MIB);
        let part = 5 * MIB as usize;
        let data = vec![7u8; 2 * part + 3];
        let up2 = up.clone();
        let pending = rt.block_on(tokio::task::spawn_blocking(move || {
            let mut b = up2.begin(None, None, data.len() as u64);
            b.write(&data[..part + 1]).unwrap();
            // The first part waits in the upload until it is known not to be the only one.
            assert_eq!(up2.fill(), 0.25);
            b.write(&data[part + 1..]).unwrap();
            b.finish(Digest::of(&data), data.len() as u64).unwrap()
        }));
        let outcome = rt.block_on(pending.unwrap()).unwrap().unwrap();
        assert_eq!(outcome.uploaded, 2 * part as u64 + 3);
        assert_eq!(up.fill(), 0.0);

        let up2 = up.clone();
        rt.block_on(tokio::task::spawn_blocking(move || {
            let mut b = up2.begin(None, None, 3 * part as u64);
            b.write(&vec![1u8; 2 * part]).unwrap();
        }))
        .unwrap();
        let start = std::time::Instant::now();
        while up.fill() > 0.0 && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(up.fill(), 0.0);

        // A blob big enough to need larger parts: fill counts in those parts.
        let up2 = up.clone();
        rt.block_on(tokio::task::spawn_blocking(move || {
            let mut b = up2.begin(None, None, MAX_PARTS * 6 * MIB);
            assert_eq!(b.part_size, 6 * MIB as usize);
            b.write(&vec![2u8; b.part_size + 1]).unwrap();
            assert_eq!(up2.fill(), 0.25);
        }))
        .unwrap();
    }
}
