//! S3 driver on aws-sdk-s3: the full aws-config credential chain, custom
//! endpoints (S3-compatible servers) and path-style addressing.

use super::{ObjectInfo, OpenUpload, PartTag, S3Options, StoredPart, UploadGone};
use anyhow::{anyhow, bail, Result};
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, ServerSideEncryption, StorageClass,
};
use aws_sdk_s3::Client;
use bytes::{Buf, Bytes};
use futures::{StreamExt, TryStreamExt};

/// S3 refuses a single CopyObject above 5 GiB.
const MAX_COPY_OBJECT: u64 = 5 << 30;
const COPY_PART: u64 = 512 << 20;

/// Applies `--sse`, `--sse-kms-key-id` and `--storage-class` to a request that creates
/// an object (the SDK's request builders share no trait, hence a macro).
macro_rules! object_opts {
    ($req:expr, $opts:expr) => {{
        let mut r = $req;
        if let Some(s) = &$opts.sse {
            r = r.server_side_encryption(ServerSideEncryption::from(s.as_str()));
        }
        if let Some(k) = &$opts.sse_kms_key_id {
            r = r.ssekms_key_id(k);
        }
        if let Some(c) = &$opts.storage_class {
            r = r.storage_class(StorageClass::from(c.as_str()));
        }
        r
    }};
}

#[derive(Debug)]
pub struct S3Driver {
    client: Client,
    sdk: Box<aws_config::SdkConfig>,
    pub bucket: String,
    opts: S3Options,
}

/// One readable line per failed S3 call: the HTTP status and S3 error code when the
/// server answered, else why no answer came (connection refused, timeout, ...).
fn err<E>(op: &str, key: &str, e: SdkError<E>) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let what = match &e {
        SdkError::ServiceError(se) => {
            let status = e
                .raw_response()
                .map(|r| r.status().as_u16().to_string())
                .unwrap_or_default();
            let code = se.err().code().unwrap_or("error");
            let msg = se
                .err()
                .message()
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            format!("HTTP {status} {code}{msg}")
        }
        SdkError::DispatchFailure(d) if d.is_io() || d.is_timeout() => {
            format!("cannot connect: {}", source_chain(&e))
        }
        SdkError::TimeoutError(_) => "timed out".to_string(),
        _ => source_chain(&e),
    };
    anyhow!("S3 {op} of {key:?} failed: {what}")
}

/// NoSuchUpload means another push sharing this upload completed (or aborted) it.
fn gone_or<E>(e: SdkError<E>, op: &str, key: &str) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match e.code() {
        Some("NoSuchUpload") => UploadGone(key.to_string()).into(),
        _ => err(op, key, e),
    }
}

/// Exponential backoff with full jitter, as the SDK's standard retry strategy does.
async fn backoff(attempt: u32) {
    let cap_ms = 100u64 << attempt.min(6);
    let jitter = uuid::Uuid::new_v4().as_u128() as u64 % cap_ms.max(1);
    tokio::time::sleep(std::time::Duration::from_millis(jitter)).await;
}

fn body_err(
    op: &str,
    key: &str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> anyhow::Error {
    anyhow!(
        "S3 {op} of {key:?} failed while reading the body: {}",
        DisplayErrorContext(e)
    )
}

/// The innermost causes, which say what actually went wrong.
fn source_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut cur = e.source();
    while let Some(c) = cur {
        parts.push(c.to_string());
        cur = c.source();
    }
    if parts.is_empty() {
        return e.to_string();
    }
    parts.join(": ")
}

impl S3Driver {
    pub async fn connect(bucket: &str, opts: &S3Options) -> Result<Self> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(p) = &opts.profile {
            loader = loader.profile_name(p);
        }
        if let Some(r) = &opts.region {
            loader = loader.region(Region::new(r.clone()));
        }
        let retry =
            aws_config::retry::RetryConfig::standard().with_max_attempts(opts.max_attempts.max(1));
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build();
        let sdk = loader
            .retry_config(retry)
            .timeout_config(timeouts)
            .load()
            .await;
        if sdk.credentials_provider().is_none() {
            bail!("no AWS credentials provider is configured");
        }
        // Fail early and clearly rather than on the first request.
        use aws_credential_types::provider::ProvideCredentials;
        sdk.credentials_provider()
            .unwrap()
            .provide_credentials()
            .await
            .map_err(|e| {
                anyhow!(
                    "no AWS credentials found ({}): set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, use --profile, or run where an IAM role is available",
                    DisplayErrorContext(e)
                )
            })?;
        let mut b = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(opts.path_style)
            .accelerate(opts.accelerate)
            // Content is verified by sha256 end to end; skip the SDK's extra CRC pass.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if sdk.region().is_none() {
            b = b.region(Region::new("us-east-1"));
        }
        if let Some(ep) = &opts.endpoint {
            b = b.endpoint_url(ep);
        }
        Ok(S3Driver {
            client: Client::from_conf(b.build()),
            sdk: Box::new(sdk),
            bucket: bucket.to_string(),
            opts: opts.clone(),
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        Ok(self.get_object(key).await?.map(|(body, _)| body))
    }

    /// The whole object and its ETag; None when it does not exist.
    async fn get_object(&self, key: &str) -> Result<Option<(Bytes, Option<String>)>> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => {
                let etag = out.e_tag.clone();
                let body = out
                    .body
                    .collect()
                    .await
                    .map_err(|e| body_err("GetObject", key, e))?;
                Ok(Some((body.into_bytes(), etag)))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(None),
            Err(e) => Err(err("GetObject", key, e)),
        }
    }

    /// A byte range. The SDK retries failed requests, but not a body that breaks off
    /// after the headers arrived, so that is retried here with the same backoff budget.
    pub async fn get_range(&self, key: &str, start: u64, len: usize) -> Result<Bytes> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let range = format!("bytes={start}-{}", start + len as u64 - 1);
        let mut attempt = 1;
        loop {
            let out = self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .range(&range)
                .send()
                .await
                .map_err(|e| err("GetObject", key, e))?;
            let failure = match out.body.collect().await {
                Ok(data) if data.remaining() == len => return Ok(data.into_bytes()),
                Ok(data) => format!("returned {} bytes for a {len}-byte range", data.remaining()),
                Err(e) => format!("failed while reading the body: {}", source_chain(&e)),
            };
            if attempt >= self.opts.max_attempts.max(1) {
                bail!("S3 GetObject of {key:?} {failure} (after {attempt} attempts)");
            }
            tracing::info!("retrying GetObject of {key:?}: {failure}");
            backoff(attempt).await;
            attempt += 1;
        }
    }

    pub async fn stat(&self, key: &str) -> Result<Option<u64>> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.content_length().unwrap_or(0) as u64)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(None),
            Err(e) => Err(err("HeadObject", key, e)),
        }
    }

    pub async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(data));
        req = object_opts!(req, self.opts);
        req.send().await.map_err(|e| err("PutObject", key, e))?;
        Ok(())
    }

    /// Conditional create (`If-None-Match: *`); false when the key already exists.
    pub async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool> {
        match self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .if_none_match("*")
            .body(ByteStream::from(data))
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e)
                if matches!(
                    e.code(),
                    Some("PreconditionFailed") | Some("ConditionalRequestConflict")
                ) =>
            {
                Ok(false)
            }
            Err(e)
                if e.raw_response()
                    .is_some_and(|r| matches!(r.status().as_u16(), 412 | 409)) =>
            {
                Ok(false)
            }
            Err(e) => Err(err("PutObject", key, e)),
        }
    }

    /// The object and its ETag, for a later [`S3Driver::put_if_match`].
    pub async fn get_with_etag(&self, key: &str) -> Result<Option<(Bytes, String)>> {
        match self.get_object(key).await? {
            None => Ok(None),
            Some((body, Some(etag))) => Ok(Some((body, etag))),
            Some((_, None)) => {
                bail!("S3 GetObject of {key:?} returned no ETag, needed for conditional writes")
            }
        }
    }

    /// Conditional replace (`If-Match: etag`); false when the object changed since it
    /// was read (412, or 409 for a concurrent conditional write) or is gone (404).
    pub async fn put_if_match(&self, key: &str, data: Bytes, etag: &str) -> Result<bool> {
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .if_match(etag)
            .body(ByteStream::from(data));
        if let Some(s) = &self.opts.sse {
            req = req.server_side_encryption(ServerSideEncryption::from(s.as_str()));
        }
        if let Some(k) = &self.opts.sse_kms_key_id {
            req = req.ssekms_key_id(k);
        }
        match req.send().await {
            Ok(_) => Ok(true),
            Err(e)
                if matches!(
                    e.code(),
                    Some("PreconditionFailed")
                        | Some("ConditionalRequestConflict")
                        | Some("NoSuchKey")
                ) =>
            {
                Ok(false)
            }
            Err(e)
                if e.raw_response()
                    .is_some_and(|r| matches!(r.status().as_u16(), 412 | 409 | 404)) =>
            {
                Ok(false)
            }
            Err(e) => Err(err("PutObject", key, e)),
        }
    }

    /// The SDK settings the S3 client was built from (credentials, region), and the
    /// custom endpoint if any: for other AWS calls such as STS GetCallerIdentity.
    pub fn sdk_config(&self) -> (&aws_config::SdkConfig, Option<&str>) {
        (&self.sdk, self.opts.endpoint.as_deref())
    }

    /// Whether a part's ETag is its MD5, which resuming uploads relies on: not under SSE-KMS.
    pub fn part_etag_is_md5(&self) -> bool {
        !self.opts.sse.as_deref().is_some_and(|s| s.contains("kms"))
    }

    pub async fn create_upload(&self, key: &str) -> Result<String> {
        let mut req = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key);
        req = object_opts!(req, self.opts);
        let out = req
            .send()
            .await
            .map_err(|e| err("CreateMultipartUpload", key, e))?;
        out.upload_id
            .ok_or_else(|| anyhow!("S3 CreateMultipartUpload of {key:?} returned no upload id"))
    }

    pub async fn upload_part(
        &self,
        key: &str,
        id: &str,
        number: i32,
        data: Bytes,
    ) -> Result<PartTag> {
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(id)
            .part_number(number)
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| gone_or(e, "UploadPart", key))?;
        Ok(PartTag {
            etag: out.e_tag.unwrap_or_default(),
        })
    }

    pub async fn complete_upload(&self, key: &str, id: &str, parts: &[PartTag]) -> Result<()> {
        let parts = parts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                CompletedPart::builder()
                    .part_number(i as i32 + 1)
                    .e_tag(&p.etag)
                    .build()
            })
            .collect();
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| gone_or(e, "CompleteMultipartUpload", key))?;
        Ok(())
    }

    /// Incomplete multipart uploads whose key starts with `prefix`; None when the server
    /// cannot list them. (The SDK has no paginator for this call: follow the markers.)
    pub async fn list_uploads(&self, prefix: &str) -> Result<Option<Vec<OpenUpload>>> {
        let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
        let mut found = Vec::new();
        loop {
            let page = match self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
            {
                Ok(p) => p,
                Err(e) if matches!(e.code(), Some("NotImplemented")) => return Ok(None),
                Err(e) => return Err(err("ListMultipartUploads", prefix, e)),
            };
            for u in page.uploads() {
                if let (Some(key), Some(id)) = (u.key(), u.upload_id()) {
                    found.push(OpenUpload {
                        key: key.to_string(),
                        id: id.to_string(),
                        initiated: u
                            .initiated()
                            .and_then(|t| std::time::SystemTime::try_from(*t).ok()),
                    });
                }
            }
            if page.is_truncated() != Some(true) {
                return Ok(Some(found));
            }
            key_marker = page.next_key_marker().map(str::to_string);
            id_marker = page.next_upload_id_marker().map(str::to_string);
        }
    }

    /// Whether an upload is still open (not completed or aborted).
    pub async fn upload_exists(&self, key: &str, id: &str) -> Result<bool> {
        match self
            .client
            .list_parts()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(id)
            .max_parts(1)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Some("NoSuchUpload") => Ok(false),
            Err(e) => Err(err("ListParts", key, e)),
        }
    }

    /// The parts an incomplete upload holds so far.
    pub async fn list_parts(&self, key: &str, id: &str) -> Result<Vec<StoredPart>> {
        let mut parts = Vec::new();
        let mut marker = None::<String>;
        loop {
            let page = self
                .client
                .list_parts()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(id)
                .set_part_number_marker(marker.take())
                .send()
                .await
                .map_err(|e| err("ListParts", key, e))?;
            for p in page.parts() {
                if let (Some(number), Some(size), Some(etag)) =
                    (p.part_number(), p.size(), p.e_tag())
                {
                    parts.push(StoredPart {
                        number,
                        size: size as u64,
                        etag: etag.to_string(),
                    });
                }
            }
            // Follow IsTruncated, not just the marker: moto always sends one.
            match page.next_part_number_marker() {
                Some(m) if page.is_truncated() == Some(true) => marker = Some(m.to_string()),
                _ => break,
            }
        }
        Ok(parts)
    }

    pub async fn abort_upload(&self, key: &str, id: &str) -> Result<()> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(id)
            .send()
            .await
            .map_err(|e| err("AbortMultipartUpload", key, e))?;
        Ok(())
    }

    /// Server-side move: CopyObject up to 5 GiB, else parallel UploadPartCopy; then delete.
    pub async fn move_object(&self, from: &str, to: &str, size: u64, jobs: usize) -> Result<()> {
        let source = format!("{}/{}", self.bucket, from);
        if size <= MAX_COPY_OBJECT {
            let mut req = self
                .client
                .copy_object()
                .bucket(&self.bucket)
                .key(to)
                .copy_source(&source);
            req = object_opts!(req, self.opts);
            req.send().await.map_err(|e| err("CopyObject", to, e))?;
        } else {
            let id = self.create_upload(to).await?;
            let ranges: Vec<(u64, u64)> = (0..size)
                .step_by(COPY_PART as usize)
                .map(|s| (s, (s + COPY_PART).min(size) - 1))
                .collect();
            let copied: Result<Vec<PartTag>> =
                futures::stream::iter(ranges.into_iter().enumerate())
                    .map(|(i, (a, b))| {
                        let (source, id) = (&source, &id);
                        async move {
                            let out = self
                                .client
                                .upload_part_copy()
                                .bucket(&self.bucket)
                                .key(to)
                                .upload_id(id)
                                .part_number(i as i32 + 1)
                                .copy_source(source)
                                .copy_source_range(format!("bytes={a}-{b}"))
                                .send()
                                .await
                                .map_err(|e| err("UploadPartCopy", to, e))?;
                            let etag = out
                                .copy_part_result
                                .and_then(|r| r.e_tag)
                                .unwrap_or_default();
                            Ok(PartTag { etag })
                        }
                    })
                    .buffered(jobs.max(1))
                    .try_collect()
                    .await;
            match copied {
                Ok(parts) => self.complete_upload(to, &id, &parts).await?,
                Err(e) => {
                    let _ = self.abort_upload(to, &id).await;
                    return Err(e);
                }
            }
        }
        self.delete(from).await
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| err("DeleteObject", key, e))?;
        Ok(())
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| err("ListObjectsV2", prefix, e))?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    out.push(ObjectInfo {
                        key: k.to_string(),
                        size: o.size().unwrap_or(0) as u64,
                    });
                }
            }
        }
        Ok(out)
    }

    pub async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .delimiter("/")
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| err("ListObjectsV2", prefix, e))?;
            for p in page.common_prefixes() {
                if let Some(name) = p.prefix().and_then(|s| s.strip_prefix(prefix)) {
                    out.push(name.trim_end_matches('/').to_string());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Checks the bucket is reachable before any work starts.
    pub async fn check(&self) -> Result<()> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {
                bail!(
                    "bucket {:?} does not exist (create it first, e.g. aws s3 mb s3://{})",
                    self.bucket,
                    self.bucket
                )
            }
            Err(e) => Err(err("HeadBucket", &self.bucket, e)
                .context(format!("cannot reach bucket {:?}", self.bucket))),
        }
    }
}
