//! Streaming blob uploads with bounded memory. A producer thread writes bytes;
//! full parts go to concurrent multipart uploads that share one pool of `jobs`
//! permits, so memory is about (jobs + 2) × part size however big the blob is.
//! A blob goes straight to its final key when its digest is known up front, and
//! is completed only after the digest matches; otherwise it lands under a temp key
//! and is moved once the digest is known. Blobs of one part are a single PUT.

use super::{inflight, Driver, PartTag};
use crate::digest::Digest;
use crate::layout::Layout;
use anyhow::{bail, Context, Result};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

/// S3 allows 10,000 parts; keep a margin for compression overhead on incompressible data.
const MAX_PARTS: u64 = 9_000;
const MIB: u64 = 1 << 20;

#[derive(Clone)]
pub struct Uploader {
    driver: Arc<Driver>,
    layout: Layout,
    permits: Arc<Semaphore>,
    jobs: usize,
    part_size: u64,
    rt: tokio::runtime::Handle,
}

#[derive(Debug, Clone)]
pub struct UploadOutcome {
    pub digest: Digest,
    pub size: u64,
    /// Bytes sent to the store (0 when another writer stored the blob first).
    pub uploaded: u64,
}

enum Msg {
    Part(Bytes),
    Finish(Digest, u64),
}

impl Uploader {
    pub fn new(driver: Arc<Driver>, layout: Layout, jobs: usize, part_size: u64) -> Self {
        Uploader {
            driver,
            layout,
            permits: Arc::new(Semaphore::new(jobs.max(1))),
            jobs: jobs.max(1),
            part_size: part_size.max(5 * MIB),
            rt: tokio::runtime::Handle::current(),
        }
    }

    /// Part size for a blob of at most `size_hint` bytes: grows so no upload needs more
    /// than MAX_PARTS parts, rounded to whole MiB so all non-final parts are equal.
    pub fn part_size_for(&self, size_hint: u64) -> usize {
        let needed = size_hint.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
        self.part_size.max(needed) as usize
    }

    /// Starts an upload. `known` is the digest the content must have, if known up front.
    pub fn begin(&self, known: Option<Digest>, size_hint: u64) -> BlobUpload {
        let (tx, rx) = mpsc::channel(1);
        let part_size = self.part_size_for(size_hint);
        let task = Task {
            up: self.clone(),
            known,
            part_size: part_size as u64,
        };
        let join = self.rt.spawn(task.run(rx));
        BlobUpload {
            tx: Some(tx),
            buf: BytesMut::with_capacity(part_size),
            part_size,
            join: Some(join),
        }
    }
}

/// The producer's side; used from a blocking thread.
pub struct BlobUpload {
    tx: Option<mpsc::Sender<Msg>>,
    buf: BytesMut,
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

    pub fn write(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            let n = (self.part_size - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == self.part_size {
                let part =
                    std::mem::replace(&mut self.buf, BytesMut::with_capacity(self.part_size))
                        .freeze();
                self.send(Msg::Part(part))?;
            }
        }
        Ok(())
    }

    /// Sends the rest and the content's digest; the upload completes in the background.
    pub fn finish(mut self, digest: Digest, size: u64) -> Result<PendingUpload> {
        if !self.buf.is_empty() {
            let part = std::mem::take(&mut self.buf).freeze();
            self.send(Msg::Part(part))?;
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
    part_size: u64,
}

struct Multipart {
    key: String,
    id: String,
    parts: Vec<JoinHandle<Result<PartTag>>>,
    _tracked: inflight::Guard,
}

impl Task {
    async fn run(self, mut rx: mpsc::Receiver<Msg>) -> Result<UploadOutcome> {
        let driver = self.up.driver.clone();
        let key = match &self.known {
            Some(d) => self.up.layout.blob_data(d),
            None => self.up.layout.temp(&uuid::Uuid::new_v4().to_string()),
        };
        let mut first: Option<Bytes> = None;
        let mut mp: Option<Multipart> = None;
        let result = async {
            loop {
                match rx.recv().await {
                    Some(Msg::Part(p)) => {
                        if mp.is_none() && first.is_none() {
                            first = Some(p);
                            continue;
                        }
                        if mp.is_none() {
                            let id = driver.create_upload(&key).await?;
                            let _tracked = inflight::track(&driver, &key, Some(&id));
                            mp = Some(Multipart {
                                key: key.clone(),
                                id,
                                parts: Vec::new(),
                                _tracked,
                            });
                            let f = first.take().expect("first part");
                            self.spawn_part(mp.as_mut().unwrap(), f).await;
                        }
                        self.spawn_part(mp.as_mut().unwrap(), p).await;
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
                let _ = driver.abort_upload(&m.key, &m.id).await;
            }
        }
        result
    }

    async fn spawn_part(&self, mp: &mut Multipart, data: Bytes) {
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
        mp.parts.push(tokio::spawn(async move {
            let r = driver.upload_part(&key, &id, number, part_size, data).await;
            drop(permit);
            r
        }));
    }

    async fn complete(
        &self,
        digest: Digest,
        size: u64,
        first: Option<Bytes>,
        mp: &mut Option<Multipart>,
    ) -> Result<UploadOutcome> {
        if let Some(k) = self.known {
            if k != digest {
                bail!("content does not match its digest: expected {k}, got {digest}");
            }
        }
        let driver = &self.up.driver;
        let final_key = self.up.layout.blob_data(&digest);
        let Some(m) = mp.take() else {
            // Single part: one PUT at the final key, unless it is already there.
            if driver.stat(&final_key).await?.is_some() {
                return Ok(UploadOutcome {
                    digest,
                    size,
                    uploaded: 0,
                });
            }
            driver.put(&final_key, first.unwrap_or_default()).await?;
            return Ok(UploadOutcome {
                digest,
                size,
                uploaded: size,
            });
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
        if let Some(e) = failure {
            let _ = driver.abort_upload(&m.key, &m.id).await;
            return Err(e);
        }
        driver.complete_upload(&m.key, &m.id, &tags).await?;
        // From here the upload is a temp object (if not at its final key): delete it on a signal.
        drop(m._tracked);
        let _temp = (m.key != final_key).then(|| inflight::track(driver, &m.key, None));
        if m.key != final_key {
            if driver.stat(&final_key).await?.is_some() {
                driver.delete(&m.key).await?;
                return Ok(UploadOutcome {
                    digest,
                    size,
                    uploaded: size,
                });
            }
            driver
                .move_object(&m.key, &final_key, size, self.up.jobs)
                .await?;
        }
        Ok(UploadOutcome {
            digest,
            size,
            uploaded: size,
        })
    }
}
