//! The registry v2 layout on top of a store driver: blobs, links, tags and JSON
//! documents. With [`layout`], the only place that knows keys.

pub mod cleanup;
pub mod inflight;
pub mod layout;
mod upload;

pub use upload::{BlobUpload, PendingUpload, UploadOutcome, Uploader};

use crate::model::digest::Digest;
use crate::store::{Driver, FsDriver, Location, S3Driver, StoreConfig};
use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use layout::{link_body, Layout};
use std::sync::Arc;

/// A driver plus the layout: registry-level operations on blobs, links and tags.
#[derive(Debug, Clone)]
pub struct Registry {
    pub driver: Arc<Driver>,
    pub layout: Layout,
    pub jobs: usize,
    pub part_size: u64,
    /// Human-readable location for messages.
    pub display: String,
}

/// Configs and manifests are small; anything larger is refused rather than buffered.
pub const MAX_METADATA_BLOB: u64 = 32 << 20;

impl Registry {
    pub async fn open(cfg: &StoreConfig) -> Result<Self> {
        let (driver, prefix, display) = match &cfg.location {
            Location::Dir(p) => {
                std::fs::create_dir_all(p)
                    .with_context(|| format!("cannot create store directory {}", p.display()))?;
                (
                    Driver::Fs(FsDriver::new(p.clone())),
                    String::new(),
                    p.display().to_string(),
                )
            }
            Location::S3 { bucket, prefix } => {
                let d = S3Driver::connect(bucket, &cfg.s3).await?;
                d.check().await?;
                (
                    Driver::S3(d),
                    prefix.clone(),
                    format!("s3://{bucket}/{prefix}"),
                )
            }
        };
        let root = [prefix.as_str(), cfg.root_dir.as_deref().unwrap_or("")]
            .iter()
            .map(|s| s.trim_matches('/'))
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("/");
        Ok(Registry {
            driver: Arc::new(driver),
            layout: Layout::new(&root),
            jobs: cfg.jobs.max(1),
            part_size: cfg.part_size,
            display,
        })
    }

    pub fn uploader(&self) -> Uploader {
        Uploader::new(
            self.driver.clone(),
            self.layout.clone(),
            self.jobs,
            self.part_size,
        )
    }

    pub async fn blob_size(&self, d: &Digest) -> Result<Option<u64>> {
        self.driver.stat(&self.layout.blob_data(d)).await
    }

    /// Reads a small blob (config, manifest) and verifies its digest.
    pub async fn get_small_blob(&self, d: &Digest) -> Result<Bytes> {
        let key = self.layout.blob_data(d);
        if let Some(size) = self.driver.stat(&key).await? {
            if size > MAX_METADATA_BLOB {
                bail!("blob {d} is {size} bytes, too large for a config or manifest");
            }
        }
        let data = self
            .driver
            .get(&key)
            .await?
            .ok_or_else(|| anyhow!("blob {d} is missing from the store"))?;
        let actual = Digest::of(&data);
        if actual != *d {
            bail!("blob {d} is corrupt in the store: its content hashes to {actual}");
        }
        Ok(data)
    }

    /// Stores a small blob unless already present; the digest is checked first.
    pub async fn put_small_blob(&self, d: &Digest, data: Bytes) -> Result<bool> {
        if Digest::of(&data) != *d {
            bail!("content does not match its digest {d}");
        }
        let key = self.layout.blob_data(d);
        if self.driver.stat(&key).await?.is_some() {
            return Ok(false);
        }
        self.driver.put(&key, data).await?;
        Ok(true)
    }

    async fn write_link(&self, key: &str, d: &Digest) -> Result<()> {
        // Links are immutable for a given path, except tags' `current`; skip rewriting identical ones.
        if self.driver.get(key).await?.as_deref() == Some(&link_body(d)[..]) {
            return Ok(());
        }
        self.driver.put(key, link_body(d).into()).await
    }

    /// Reads a link file; a malformed one is an error naming the key.
    pub async fn read_link(&self, key: &str) -> Result<Option<Digest>> {
        match self.driver.get(key).await? {
            None => Ok(None),
            Some(b) => {
                let s = std::str::from_utf8(&b).map_err(|_| anyhow!("link {key} is not text"))?;
                Ok(Some(
                    s.parse()
                        .with_context(|| format!("link {key} is malformed"))?,
                ))
            }
        }
    }

    pub async fn link_layer(&self, repo: &str, d: &Digest) -> Result<()> {
        self.write_link(&self.layout.layer_link(repo, d), d).await
    }

    pub async fn link_revision(&self, repo: &str, d: &Digest) -> Result<()> {
        self.write_link(&self.layout.revision_link(repo, d), d)
            .await
    }

    /// Points a tag at a manifest: the history `index` link first, `current` last (the
    /// commit point). `current` is replaced by compare-and-swap, so with concurrent
    /// writers each learns the value it really replaced; returns that previous digest.
    pub async fn set_tag(&self, repo: &str, tag: &str, d: &Digest) -> Result<Option<Digest>> {
        let current = self.layout.tag_current(repo, tag);
        self.write_link(&self.layout.tag_index(repo, tag, d), d)
            .await?;
        let body = Bytes::from(link_body(d));
        for attempt in 0..16u32 {
            let swapped = match self.driver.get_with_etag(&current).await? {
                None => (
                    None,
                    self.driver.put_if_absent(&current, body.clone()).await?,
                ),
                Some((old, etag)) => {
                    let prev = std::str::from_utf8(&old)
                        .ok()
                        .and_then(|s| s.parse::<Digest>().ok())
                        .with_context(|| format!("link {current} is malformed"))?;
                    if prev == *d {
                        return Ok(Some(prev));
                    }
                    (
                        Some(prev),
                        self.driver
                            .put_if_match(&current, body.clone(), &etag)
                            .await?,
                    )
                }
            };
            if let (previous, true) = swapped {
                return Ok(previous);
            }
            // Another writer moved the tag between our read and write: read again.
            let jitter = u64::from(uuid::Uuid::new_v4().as_u128() as u8);
            tokio::time::sleep(std::time::Duration::from_millis(
                10 * u64::from(attempt + 1) + jitter,
            ))
            .await;
        }
        bail!("tag {repo}:{tag} kept changing under concurrent updates; try again")
    }

    pub async fn tag_target(&self, repo: &str, tag: &str) -> Result<Option<Digest>> {
        self.read_link(&self.layout.tag_current(repo, tag)).await
    }

    pub async fn has_revision(&self, repo: &str, d: &Digest) -> Result<bool> {
        Ok(self.read_link(&self.layout.revision_link(repo, d)).await? == Some(*d))
    }

    pub async fn tags(&self, repo: &str) -> Result<Vec<String>> {
        self.driver.list_dirs(&self.layout.tags_prefix(repo)).await
    }

    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.driver.get(key).await? {
            None => Ok(None),
            Some(b) => Ok(Some(
                serde_json::from_slice(&b).with_context(|| format!("{key} is not valid JSON"))?,
            )),
        }
    }

    pub async fn put_json<T: serde::Serialize>(&self, key: &str, v: &T) -> Result<()> {
        self.driver
            .put(key, serde_json::to_vec_pretty(v)?.into())
            .await
    }

    /// A JSON document and its etag, for a compare-and-swap with [`Registry::put_json_if`].
    pub async fn get_json_with_etag<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<(T, String)>> {
        match self.driver.get_with_etag(key).await? {
            None => Ok(None),
            Some((b, etag)) => Ok(Some((
                serde_json::from_slice(&b).with_context(|| format!("{key} is not valid JSON"))?,
                etag,
            ))),
        }
    }

    /// Conditional write: create when `etag` is None (the key must not exist), else
    /// replace only if the key is still at `etag`. False when another writer won.
    pub async fn put_json_if<T: serde::Serialize>(
        &self,
        key: &str,
        v: &T,
        etag: Option<&str>,
    ) -> Result<bool> {
        let data: Bytes = serde_json::to_vec_pretty(v)?.into();
        match etag {
            None => self.driver.put_if_absent(key, data).await,
            Some(e) => self.driver.put_if_match(key, data, e).await,
        }
    }
}
