//! Stores: a tiny driver interface (local directory or S3) under the registry
//! layout. Everything above this module speaks in digests, repos and tags.

pub(crate) mod fs;
mod s3;

pub use fs::FsDriver;
pub use s3::S3Driver;

use anyhow::{bail, Result};
use bytes::Bytes;
use std::path::PathBuf;

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
