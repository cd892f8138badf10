//! Stores: a small driver interface ([`StorageDriver`]: a local directory or S3)
//! under the registry layout. Drivers know nothing about registry keys; everything
//! above this module speaks in digests, repos and tags.

pub(crate) mod fs;
mod http;
mod s3;

pub use fs::FsDriver;
pub use http::HttpDriver;
pub use s3::S3Driver;

use anyhow::{bail, Result};
use async_trait::async_trait;
use bytes::Bytes;
use std::path::PathBuf;
use std::time::SystemTime;

#[derive(Debug, Clone)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub modified: Option<SystemTime>,
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
    pub initiated: Option<SystemTime>,
}

/// A part already stored in an open upload.
#[derive(Debug, Clone)]
pub struct StoredPart {
    pub number: i32,
    pub size: u64,
    pub etag: String,
}

/// What a write requires of the key's current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    None,
    /// The key must not exist (`If-None-Match: *`).
    IfAbsent,
    /// The key must still be at this version (an etag from [`StorageDriver::get_with_etag`]).
    IfMatch(String),
}

/// Why a store operation failed, for callers that branch on it. Messages are one
/// line and never quote stored content beyond [`crate::model::text::excerpt`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} does not exist in the store")]
    NotFound(String),
    #[error("{0} was changed by another writer (conditional write refused)")]
    PreconditionFailed(String),
    #[error("{key} is {size} bytes, more than the {max} allowed for it: refusing to read it")]
    TooLarge { key: String, size: u64, max: u64 },
    #[error(
        "{key} in the store is {what}, not a regular file: refusing it (remove it from the store)"
    )]
    NotARegularFile { key: String, what: &'static str },
    #[error("{key}: the range {start}+{len} ends past the end of the object")]
    OutOfRange { key: String, start: u64, len: usize },
    #[error("this store does not support {0}")]
    Unsupported(&'static str),
    /// Completing or adding to a multipart upload found it gone: another push
    /// sharing it completed (or aborted) it.
    #[error(
        "the multipart upload of {0:?} no longer exists (another push completed or aborted it)"
    )]
    UploadGone(String),
    /// The AWS credential chain found no credentials.
    #[error("no AWS credentials found")]
    NoCredentials { detail: String },
    /// The server refused the credentials themselves (unknown key, bad signature,
    /// expired token): `code` is its S3 error code.
    #[error("S3 {op} of {resource} refused the credentials ({code})")]
    BadCredentials {
        op: String,
        resource: String,
        code: String,
    },
    /// The credentials may not do `action` (an IAM action, e.g. `s3:PutObject`) on
    /// `resource` (`bucket` or `bucket/key`).
    #[error("access denied: {action} on {resource}")]
    AccessDenied {
        action: &'static str,
        resource: String,
        detail: String,
    },
    #[error("bucket {0:?} does not exist")]
    NoSuchBucket(String),
    /// The bucket lives in another region than the one requests are signed for;
    /// `region` is the bucket's, when the server said (x-amz-bucket-region).
    #[error("bucket {bucket:?} is in region {}, not {configured}", region.as_deref().unwrap_or("another region"))]
    WrongRegion {
        bucket: String,
        region: Option<String>,
        configured: String,
    },
    /// No answer from the endpoint: connection refused, DNS, TLS or timeout.
    #[error("cannot reach bucket {bucket:?} at {endpoint}")]
    Unreachable {
        bucket: String,
        endpoint: String,
        detail: String,
    },
    /// Any other failure: the one-line S3 or I/O message.
    #[error("{0}")]
    Other(String),
}

impl StoreError {
    /// The underlying SDK message, for `-v`.
    pub fn detail(&self) -> Option<&str> {
        match self {
            StoreError::NoCredentials { detail }
            | StoreError::AccessDenied { detail, .. }
            | StoreError::Unreachable { detail, .. } => Some(detail),
            _ => None,
        }
    }

    pub(crate) fn io(what: &str, path: &std::path::Path, e: std::io::Error) -> Self {
        StoreError::Other(format!("cannot {what} {}: {e}", path.display()))
    }
}

/// Whether an error (anywhere in an anyhow chain's head) is this store error kind.
pub fn is_upload_gone(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<StoreError>(),
        Some(StoreError::UploadGone(_))
    )
}

/// `NotFound` as `None`, for the callers to whom a missing key is a normal answer.
pub trait Found<T> {
    fn found(self) -> Result<Option<T>, StoreError>;
}

impl<T> Found<T> for Result<T, StoreError> {
    fn found(self) -> Result<Option<T>, StoreError> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The storage driver: a key-value object store with conditional writes, in the
/// spirit of distribution's storage driver. Multipart uploads and resuming them
/// are optional capabilities: a driver without them answers `Unsupported`.
#[async_trait]
pub trait StorageDriver: std::fmt::Debug + Send + Sync {
    /// The whole object; `TooLarge` (before reading it) when it exceeds `max` bytes.
    async fn get(&self, key: &str, max: u64) -> Result<Bytes, StoreError> {
        Ok(self.get_with_etag(key, max).await?.0)
    }
    /// The object and an opaque version tag for [`Precondition::IfMatch`].
    async fn get_with_etag(&self, key: &str, max: u64) -> Result<(Bytes, String), StoreError>;
    /// Exactly `len` bytes from `start`; `OutOfRange` when the object is shorter.
    async fn get_range(&self, key: &str, start: u64, len: usize) -> Result<Bytes, StoreError>;
    /// The object's size.
    async fn stat(&self, key: &str) -> Result<u64, StoreError>;
    /// Writes the object; `PreconditionFailed` when the precondition does not hold.
    async fn put(&self, key: &str, data: Bytes, cond: Precondition) -> Result<(), StoreError>;
    /// Deletes the object; deleting a missing key succeeds.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Every object under `prefix` (a key prefix ending in `/`), recursively, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError>;
    /// Names directly under `prefix` that have children (S3 common prefixes), sorted.
    async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
    /// Moves an object of `size` bytes (server-side where possible, `jobs` at a time).
    async fn move_object(
        &self,
        from: &str,
        to: &str,
        size: u64,
        jobs: usize,
    ) -> Result<(), StoreError>;

    /// Copies `from` of the store `src` (`size` bytes) to `to` in this one without the
    /// bytes passing through this host (S3 CopyObject between buckets one set of
    /// credentials reaches); `Unsupported` where these two stores cannot.
    async fn copy_from(
        &self,
        _src: &dyn StorageDriver,
        _from: &str,
        _to: &str,
        _size: u64,
        _jobs: usize,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unsupported(
            "server-side copies from that store",
        ))
    }

    /// Starts a multipart upload; its parts may arrive in any order and concurrently.
    async fn create_upload(&self, _key: &str) -> Result<String, StoreError> {
        Err(StoreError::Unsupported("multipart uploads"))
    }
    /// Parts are numbered from 1 and all but the last are `part_size` long.
    async fn upload_part(
        &self,
        _key: &str,
        _id: &str,
        _number: i32,
        _part_size: u64,
        _data: Bytes,
    ) -> Result<PartTag, StoreError> {
        Err(StoreError::Unsupported("multipart uploads"))
    }
    async fn complete_upload(
        &self,
        _key: &str,
        _id: &str,
        _parts: &[PartTag],
    ) -> Result<(), StoreError> {
        Err(StoreError::Unsupported("multipart uploads"))
    }
    async fn abort_upload(&self, _key: &str, _id: &str) -> Result<(), StoreError> {
        Err(StoreError::Unsupported("multipart uploads"))
    }

    /// Whether interrupted uploads can be found and continued: open uploads can be
    /// listed and a stored part's etag is its MD5.
    fn resumable_uploads(&self) -> bool {
        false
    }
    /// Open multipart uploads whose key starts with `prefix`.
    async fn list_uploads(&self, _prefix: &str) -> Result<Vec<OpenUpload>, StoreError> {
        Err(StoreError::Unsupported("listing open uploads"))
    }
    /// Whether an upload is still open (not completed or aborted).
    async fn upload_exists(&self, _key: &str, _id: &str) -> Result<bool, StoreError> {
        Err(StoreError::Unsupported("listing open uploads"))
    }
    /// The parts an open upload holds so far.
    async fn list_parts(&self, _key: &str, _id: &str) -> Result<Vec<StoredPart>, StoreError> {
        Err(StoreError::Unsupported("listing open uploads"))
    }

    /// Deletes the driver's own scratch files (outside the key space) older than
    /// `cutoff`; returns how many and their bytes. Drivers without any have none.
    async fn sweep_scratch(
        &self,
        _cutoff: SystemTime,
        _dry_run: bool,
    ) -> Result<(usize, u64), StoreError> {
        Ok((0, 0))
    }

    /// The S3 driver, for AWS calls beyond storage (the audit trail's caller identity).
    fn as_s3(&self) -> Option<&S3Driver> {
        None
    }
}

/// The one retry pause of the crate: exponential backoff with full jitter (as the
/// AWS SDK's standard strategy does), from `base` on the first retry, capped at 64×.
pub async fn backoff(attempt: u32, base: std::time::Duration) {
    let cap = base.as_micros() as u64 * (1u64 << attempt.min(6));
    let jitter = uuid::Uuid::new_v4().as_u128() as u64 % cap.max(1);
    tokio::time::sleep(std::time::Duration::from_micros(jitter)).await;
}

/// Settings passed through to S3.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub profile: Option<String>,
    pub path_style: bool,
    pub accelerate: bool,
    /// Anonymous requests (public buckets), like the aws CLI's `--no-sign-request`.
    pub no_sign_request: bool,
    /// Whether object bodies are hashed into the SigV4 signature. None: as the aws CLI
    /// does, over plain http only; https protects the bytes already, and an unsigned
    /// body saves a sha256 pass over everything uploaded.
    pub payload_signing: Option<bool>,
    pub sse: Option<String>,
    pub sse_kms_key_id: Option<String>,
    pub storage_class: Option<String>,
    pub max_attempts: u32,
}

/// Where a store lives, parsed from `s3://bucket/prefix`, `file:///path`,
/// `http(s)://host/prefix` (read-only) or a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    S3 { bucket: String, prefix: String },
    Dir(PathBuf),
    Http(url::Url),
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
        if s.starts_with("http://") || s.starts_with("https://") {
            let url =
                url::Url::parse(s).map_err(|e| anyhow::anyhow!("invalid store URL {s:?}: {e}"))?;
            if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
                bail!("invalid store URL {s:?}: an http(s) store is a plain URL without query, fragment or user");
            }
            return Ok(Location::Http(url));
        }
        if s.is_empty() || s.contains("://") {
            bail!("invalid store URL {s:?}: use s3://bucket[/prefix], file:///path, https://host/prefix or a directory path");
        }
        Ok(Location::Dir(s.into()))
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
        assert_eq!(
            Location::parse("https://cdn.example.com/reg").unwrap(),
            Location::Http("https://cdn.example.com/reg".parse().unwrap())
        );
        for bad in [
            "s3://",
            "s3://UPPER",
            "ftp://x",
            "file://rel",
            "",
            "http://",
            "https://h/p?x=1",
            "https://u:p@h/",
        ] {
            assert!(Location::parse(bad).is_err(), "{bad}");
        }
    }
}
