//! The registry v2 layout on top of a store driver: blobs, links, tags and JSON
//! documents. With [`layout`], the only place that knows keys.

pub mod cas;
pub mod cleanup;
pub mod gclock;
pub mod inflight;
pub mod layout;
mod upload;

pub use upload::{BlobUpload, PendingUpload, UploadOutcome, Uploader};

use crate::model::digest::Digest;
use crate::model::text::excerpt;
use crate::store::{
    Found, FsDriver, HttpDriver, Location, ObjectInfo, Precondition, S3Driver, StorageDriver,
    StoreConfig, StoreError,
};
use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use layout::{link_body, Layout};
use std::sync::Arc;

/// A driver plus the layout: registry-level operations on blobs, links and tags.
#[derive(Debug, Clone)]
pub struct Registry {
    driver: Arc<dyn StorageDriver>,
    layout: Layout,
    pub jobs: usize,
    pub part_size: u64,
    /// Human-readable location for messages.
    pub display: String,
}

// Size limits of what is read whole from the store, checked before reading (the
// store is untrusted input: a planted 200 MB "link" must not be buffered).

/// Configs and manifests are small; anything larger is refused rather than buffered.
pub const MAX_METADATA_BLOB: u64 = 32 << 20;
/// A link file: a digest string, 71 bytes; the rest is slack for other writers' newlines.
pub const MAX_LINK: u64 = 1 << 10;
/// JSON documents: release records, audit events, the diff-id and v1-id indexes.
pub const MAX_JSON_DOC: u64 = 1 << 20;

impl Registry {
    pub async fn open(cfg: &StoreConfig) -> Result<Self> {
        let (driver, prefix, display): (Arc<dyn StorageDriver>, _, _) = match &cfg.location {
            Location::Dir(p) => {
                std::fs::create_dir_all(p)
                    .with_context(|| format!("cannot create store directory {}", p.display()))?;
                (
                    Arc::new(FsDriver::new(p.clone())),
                    String::new(),
                    p.display().to_string(),
                )
            }
            Location::S3 { bucket, prefix } => {
                let d = S3Driver::connect(bucket, &cfg.s3).await?;
                d.check().await?;
                (
                    Arc::new(d),
                    prefix.clone(),
                    format!("s3://{bucket}/{prefix}"),
                )
            }
            // The URL's path is the store's root; keys join below it.
            Location::Http(url) => (
                Arc::new(HttpDriver::new(url, cfg.s3.max_attempts)?),
                String::new(),
                url.to_string(),
            ),
        };
        let root = [prefix.as_str(), cfg.root_dir.as_deref().unwrap_or("")]
            .iter()
            .map(|s| s.trim_matches('/'))
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("/");
        Ok(Registry {
            driver,
            layout: Layout::new(&root),
            jobs: cfg.jobs.max(1),
            part_size: cfg.part_size,
            display,
        })
    }

    /// The keys of this store.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The S3 driver when the store is in S3 (for AWS calls beyond storage).
    pub fn s3(&self) -> Option<&S3Driver> {
        self.driver.as_s3()
    }

    pub fn uploader(&self) -> Uploader {
        Uploader::new(
            self.driver.clone(),
            self.layout.clone(),
            self.jobs,
            self.part_size,
        )
    }

    /// Size of the object at `key`; None when it does not exist.
    pub async fn object_size(&self, key: &str) -> Result<Option<u64>> {
        Ok(self.driver.stat(key).await.found()?)
    }

    /// Exactly `len` bytes of `key` from `start`.
    pub async fn read_range(&self, key: &str, start: u64, len: usize) -> Result<Bytes> {
        Ok(self.driver.get_range(key, start, len).await?)
    }

    /// Every object under `prefix`, recursively.
    pub async fn list_objects(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        Ok(self.driver.list(prefix).await?)
    }

    /// The "directory" names directly under `prefix`.
    pub async fn list_names(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self.driver.list_dirs(prefix).await?)
    }

    /// Deletes `key`; a key that is already gone is not an error.
    pub async fn delete(&self, key: &str) -> Result<()> {
        match self.driver.delete(key).await {
            Ok(()) | Err(StoreError::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes a small object as it is (lease and sweep marker bodies).
    pub async fn put_bytes(&self, key: &str, data: Bytes) -> Result<()> {
        Ok(self.driver.put(key, data, Precondition::None).await?)
    }

    pub async fn blob_size(&self, d: &Digest) -> Result<Option<u64>> {
        self.object_size(&self.layout.blob_data(d)).await
    }

    /// Copies blob `d` of `size` bytes from the store `src` into this one server-side
    /// where the two drivers can (S3 to S3 with one set of credentials); false when
    /// they cannot, and the bytes have to be streamed.
    pub async fn copy_blob_from(&self, src: &Registry, d: &Digest, size: u64) -> Result<bool> {
        let (from, to) = (src.layout.blob_data(d), self.layout.blob_data(d));
        match self
            .driver
            .copy_from(src.driver.as_ref(), &from, &to, size, self.jobs)
            .await
        {
            Ok(()) => Ok(true),
            Err(StoreError::Unsupported(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads a small blob (config, manifest) and verifies its digest.
    pub async fn get_small_blob(&self, d: &Digest) -> Result<Bytes> {
        let data = match self
            .driver
            .get(&self.layout.blob_data(d), MAX_METADATA_BLOB)
            .await
        {
            Ok(data) => data,
            Err(StoreError::NotFound(_)) => bail!("blob {d} is missing from the store"),
            Err(StoreError::TooLarge { size, .. }) => {
                bail!("blob {d} is {size} bytes, too large for a config or manifest")
            }
            Err(e) => return Err(e.into()),
        };
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
        if self.object_size(&key).await?.is_some() {
            return Ok(false);
        }
        self.driver.put(&key, data, Precondition::None).await?;
        Ok(true)
    }

    async fn write_link(&self, key: &str, d: &Digest) -> Result<()> {
        // Links are immutable for a given path, except tags' `current`; skip rewriting identical ones.
        let current = self.driver.get(key, MAX_LINK).await.found();
        if matches!(&current, Ok(Some(b)) if b[..] == link_body(d)[..]) {
            return Ok(());
        }
        Ok(self
            .driver
            .put(key, link_body(d).into(), Precondition::None)
            .await?)
    }

    /// Reads a link file; a malformed one is an error naming the key and quoting an excerpt.
    pub async fn read_link(&self, key: &str) -> Result<Option<Digest>> {
        match self.driver.get(key, MAX_LINK).await.found()? {
            None => Ok(None),
            Some(b) => parse_link(key, &b).map(Some),
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
        let key = current.as_str();
        let updated = cas::update(
            &format!("tag {repo}:{tag}"),
            || async move { Ok(self.driver.get_with_etag(key, MAX_LINK).await.found()?) },
            |v: Bytes, etag: Option<String>| async move {
                self.create_or_replace(key, v, etag.as_deref()).await
            },
            |old| {
                let prev = old.map(|b| parse_link(key, b)).transpose()?;
                Ok((prev != Some(*d)).then(|| Bytes::from(link_body(d))))
            },
        )
        .await?;
        updated.previous.map(|b| parse_link(key, &b)).transpose()
    }

    pub async fn tag_target(&self, repo: &str, tag: &str) -> Result<Option<Digest>> {
        self.read_link(&self.layout.tag_current(repo, tag)).await
    }

    pub async fn has_revision(&self, repo: &str, d: &Digest) -> Result<bool> {
        Ok(self.read_link(&self.layout.revision_link(repo, d)).await? == Some(*d))
    }

    pub async fn tags(&self, repo: &str) -> Result<Vec<String>> {
        self.list_names(&self.layout.tags_prefix(repo)).await
    }

    /// Every repository with tags (`ghcr.io/acme/web`, `busybox`), sorted, at most
    /// `limit`: a walk down the folders of the layout, one listing per folder.
    pub async fn repositories(&self, limit: usize) -> Result<Vec<String>> {
        let (mut out, mut todo) = (Vec::new(), vec![String::new()]);
        while let Some(repo) = todo.pop() {
            for name in self
                .list_names(&self.layout.repository_prefix(&repo))
                .await?
            {
                if name.starts_with('_') {
                    if name == "_manifests" && !self.tags(&repo).await?.is_empty() {
                        out.push(repo.clone());
                    }
                } else if repo.matches('/').count() < 16 && out.len() + todo.len() < limit {
                    todo.push(if repo.is_empty() {
                        name
                    } else {
                        format!("{repo}/{name}")
                    });
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// A JSON document's bytes (at most [`MAX_JSON_DOC`]), for callers that validate it.
    pub async fn get_document(&self, key: &str) -> Result<Option<Bytes>> {
        Ok(self.driver.get(key, MAX_JSON_DOC).await.found()?)
    }

    /// A JSON document's bytes and etag, for a compare-and-swap.
    pub async fn get_document_with_etag(&self, key: &str) -> Result<Option<(Bytes, String)>> {
        Ok(self.driver.get_with_etag(key, MAX_JSON_DOC).await.found()?)
    }

    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.get_document(key).await? {
            None => Ok(None),
            Some(b) => parse_json(key, &b).map(Some),
        }
    }

    pub async fn put_json<T: serde::Serialize>(&self, key: &str, v: &T) -> Result<()> {
        Ok(self
            .driver
            .put(
                key,
                serde_json::to_vec_pretty(v)?.into(),
                Precondition::None,
            )
            .await?)
    }

    /// Conditional write: create when `etag` is None (the key must not exist), else
    /// replace only if the key is still at `etag`. False when another writer won.
    pub async fn put_json_if<T: serde::Serialize>(
        &self,
        key: &str,
        v: &T,
        etag: Option<&str>,
    ) -> Result<bool> {
        self.create_or_replace(key, serde_json::to_vec_pretty(v)?.into(), etag)
            .await
    }

    /// Writes `data` only if `key` is absent (`etag` None) or still at `etag`;
    /// false when another writer won.
    pub async fn create_or_replace(
        &self,
        key: &str,
        data: Bytes,
        etag: Option<&str>,
    ) -> Result<bool> {
        let cond = etag.map_or(Precondition::IfAbsent, |e| {
            Precondition::IfMatch(e.to_string())
        });
        match self.driver.put(key, data, cond).await {
            Ok(()) => Ok(true),
            Err(StoreError::PreconditionFailed(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// A link's digest; the error quotes only an excerpt of what the store held.
fn parse_link(key: &str, b: &[u8]) -> Result<Digest> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("link {key} is malformed: {}", excerpt(b)))
}

/// A JSON document; the error gives the position and only an excerpt of the content
/// (serde's own message may quote an arbitrarily long string from it).
fn parse_json<T: serde::de::DeserializeOwned>(key: &str, b: &[u8]) -> Result<T> {
    serde_json::from_slice(b).map_err(|e| {
        anyhow!(
            "{key} is not valid JSON (line {}, column {}): {}",
            e.line(),
            e.column(),
            excerpt(b)
        )
    })
}
