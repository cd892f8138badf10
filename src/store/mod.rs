//! Stores: a tiny driver interface (local directory or S3) under the registry
//! layout. Everything above this module speaks in digests, repos and tags.

pub mod cleanup;
mod fs;
pub mod inflight;
mod s3;
mod upload;

pub use fs::FsDriver;
pub use s3::S3Driver;
pub use upload::{BlobUpload, PendingUpload, UploadOutcome, Uploader};

use crate::digest::Digest;
use crate::layout::{link_body, Layout};
use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
}

#[derive(Debug, Clone)]
pub struct PartTag {
    pub etag: String,
}

/// A multipart upload that was started and neither completed nor aborted.
#[derive(Debug, Clone)]
pub struct OpenUpload {
    pub key: String,
    pub id: String,
    pub initiated: Option<std::time::SystemTime>,
}

/// A part already stored in an open upload.
#[derive(Debug, Clone)]
pub struct StoredPart {
    pub number: i32,
    pub size: u64,
    pub etag: String,
}

/// Completing an upload found it gone: another push continued and finished it.
#[derive(Debug, thiserror::Error)]
#[error("the multipart upload of {0:?} no longer exists (another push completed or aborted it)")]
pub struct UploadGone(pub String);

/// Settings passed through to S3.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub profile: Option<String>,
    pub path_style: bool,
    pub accelerate: bool,
    pub sse: Option<String>,
    pub sse_kms_key_id: Option<String>,
    pub storage_class: Option<String>,
    pub max_attempts: u32,
}

/// Where a store lives, parsed from `s3://bucket/prefix`, `file:///path` or a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    S3 { bucket: String, prefix: String },
    Dir(PathBuf),
}

impl Location {
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let valid = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                });
            if !valid {
                bail!("invalid store URL {s:?}: the bucket name must be 3-63 lowercase letters, digits, '-' or '.'");
            }
            return Ok(Location::S3 {
                bucket: bucket.into(),
                prefix: prefix.trim_matches('/').into(),
            });
        }
        if let Some(path) = s.strip_prefix("file://") {
            if !path.starts_with('/') {
                bail!("invalid store URL {s:?}: file URLs need an absolute path (file:///path)");
            }
            return Ok(Location::Dir(path.into()));
        }
        if s.is_empty() || s.contains("://") {
            bail!("invalid store URL {s:?}: use s3://bucket[/prefix], file:///path or a directory path");
        }
        Ok(Location::Dir(s.into()))
    }
}

#[derive(Debug)]
pub enum Driver {
    Fs(FsDriver),
    S3(S3Driver),
}

/// Dispatches one call to whichever driver is in use.
macro_rules! each {
    ($self:expr, $d:ident => $e:expr) => {
        match $self {
            Driver::Fs($d) => $e,
            Driver::S3($d) => $e,
        }
    };
}

impl Driver {
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        each!(self, d => d.get(key).await)
    }
    pub async fn get_range(&self, key: &str, start: u64, len: usize) -> Result<Bytes> {
        each!(self, d => d.get_range(key, start, len).await)
    }
    pub async fn stat(&self, key: &str) -> Result<Option<u64>> {
        each!(self, d => d.stat(key).await)
    }
    pub async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        each!(self, d => d.put(key, data).await)
    }
    pub async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool> {
        each!(self, d => d.put_if_absent(key, data).await)
    }
    pub async fn delete(&self, key: &str) -> Result<()> {
        each!(self, d => d.delete(key).await)
    }
    /// The object and an opaque version tag for [`Driver::put_if_match`].
    pub async fn get_with_etag(&self, key: &str) -> Result<Option<(Bytes, String)>> {
        each!(self, d => d.get_with_etag(key).await)
    }
    /// Replaces `key` only if it is still at version `etag`; false on a conflict.
    pub async fn put_if_match(&self, key: &str, data: Bytes, etag: &str) -> Result<bool> {
        each!(self, d => d.put_if_match(key, data, etag).await)
    }
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        each!(self, d => d.list(prefix).await)
    }
    pub async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>> {
        each!(self, d => d.list_dirs(prefix).await)
    }
    pub async fn create_upload(&self, key: &str) -> Result<String> {
        each!(self, d => d.create_upload(key).await)
    }
    /// Parts are numbered from 1 and all but the last are `part_size` long.
    pub async fn upload_part(
        &self,
        key: &str,
        id: &str,
        number: i32,
        part_size: u64,
        data: Bytes,
    ) -> Result<PartTag> {
        match self {
            Driver::Fs(d) => {
                d.upload_part(id, (number as u64 - 1) * part_size, data)
                    .await
            }
            Driver::S3(d) => d.upload_part(key, id, number, data).await,
        }
    }
    pub async fn complete_upload(&self, key: &str, id: &str, parts: &[PartTag]) -> Result<()> {
        match self {
            Driver::Fs(d) => d.complete_upload(key, id).await,
            Driver::S3(d) => d.complete_upload(key, id, parts).await,
        }
    }
    pub async fn abort_upload(&self, key: &str, id: &str) -> Result<()> {
        match self {
            Driver::Fs(d) => d.abort_upload(id).await,
            Driver::S3(d) => d.abort_upload(key, id).await,
        }
    }
    /// Open multipart uploads under `prefix`; None when the store cannot list them
    /// (a directory store, whose uploads are private temp files, or some S3 servers).
    pub async fn list_uploads(&self, prefix: &str) -> Result<Option<Vec<OpenUpload>>> {
        match self {
            Driver::Fs(_) => Ok(None),
            Driver::S3(d) => d.list_uploads(prefix).await,
        }
    }
    pub async fn upload_exists(&self, key: &str, id: &str) -> Result<bool> {
        match self {
            Driver::Fs(_) => Ok(true),
            Driver::S3(d) => d.upload_exists(key, id).await,
        }
    }
    pub async fn list_parts(&self, key: &str, id: &str) -> Result<Vec<StoredPart>> {
        match self {
            Driver::Fs(_) => Ok(Vec::new()),
            Driver::S3(d) => d.list_parts(key, id).await,
        }
    }
    pub async fn move_object(&self, from: &str, to: &str, size: u64, jobs: usize) -> Result<()> {
        match self {
            Driver::Fs(d) => d.move_object(from, to).await,
            Driver::S3(d) => d.move_object(from, to, size, jobs).await,
        }
    }
}

/// Store-wide settings.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub location: Location,
    pub root_dir: Option<String>,
    pub s3: S3Options,
    pub jobs: usize,
    pub part_size: u64,
}

/// A driver plus the layout: registry-level operations on blobs, links and tags.
#[derive(Debug, Clone)]
pub struct Store {
    pub driver: Arc<Driver>,
    pub layout: Layout,
    pub jobs: usize,
    pub part_size: u64,
    /// Human-readable location for messages.
    pub display: String,
}

/// Configs and manifests are small; anything larger is refused rather than buffered.
pub const MAX_METADATA_BLOB: u64 = 32 << 20;

impl Store {
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
        Ok(Store {
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

    /// A JSON document and its etag, for a compare-and-swap with [`Store::put_json_if`].
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_store_urls() {
        assert_eq!(
            Location::parse("s3://my-bucket/reg/").unwrap(),
            Location::S3 {
                bucket: "my-bucket".into(),
                prefix: "reg".into()
            }
        );
        assert_eq!(
            Location::parse("file:///tmp/x").unwrap(),
            Location::Dir("/tmp/x".into())
        );
        assert_eq!(
            Location::parse("./store").unwrap(),
            Location::Dir("./store".into())
        );
        for bad in ["s3://", "s3://UPPER", "http://x", "file://rel", ""] {
            assert!(Location::parse(bad).is_err(), "{bad}");
        }
    }
}
