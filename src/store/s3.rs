//! S3 driver on aws-sdk-s3: the full aws-config credential chain, custom
//! endpoints (S3-compatible servers) and path-style addressing.

use super::{
    backoff, ObjectInfo, OpenUpload, PartTag, Precondition, S3Options, StorageDriver, StoreError,
    StoredPart,
};
use anyhow::{anyhow, Result};
use async_trait::async_trait;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::copy_object::builders::CopyObjectFluentBuilder;
use aws_sdk_s3::operation::create_multipart_upload::builders::CreateMultipartUploadFluentBuilder;
use aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, ServerSideEncryption, StorageClass,
};
use aws_sdk_s3::Client;
use bytes::{Buf, Bytes};
use futures::{StreamExt, TryStreamExt};
use std::time::SystemTime;

/// S3 refuses a single CopyObject above 5 GiB.
const MAX_COPY_OBJECT: u64 = 5 << 30;
const COPY_PART: u64 = 512 << 20;
/// First retry pause of a broken-off download.
const RETRY_BASE: std::time::Duration = std::time::Duration::from_millis(100);

/// Applies `--sse`, `--sse-kms-key-id` and `--storage-class` to a request that creates
/// an object (the SDK's request builders share no trait, hence a macro). Used only by
/// the `*_request` builders of [`S3Driver`], through which every object-creating
/// request goes: PutObject (plain and conditional), CreateMultipartUpload (which
/// UploadPart and UploadPartCopy inherit) and CopyObject.
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

/// `x-amz-copy-source`: `bucket/key`, the key URL-encoded (S3 decodes it; `/` may stay).
fn copy_source(bucket: &str, key: &str) -> String {
    let mut out = format!("{bucket}/");
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Debug)]
pub struct S3Driver {
    client: Client,
    sdk: Box<aws_config::SdkConfig>,
    pub bucket: String,
    /// The region requests are signed for.
    region: String,
    /// Whether PutObject and UploadPart bodies are hashed into the signature.
    sign_payload: bool,
    opts: S3Options,
}

/// [`S3Options::payload_signing`] for requests to `endpoint` (None: AWS, over https).
fn signs_payload(setting: Option<bool>, endpoint: Option<&str>) -> bool {
    setting.unwrap_or_else(|| {
        endpoint.is_some_and(|e| {
            !e.get(..8)
                .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
        })
    })
}

type Res<T> = Result<T, StoreError>;

/// One readable line per failed S3 call: the HTTP status and S3 error code when the
/// server answered, else why no answer came (connection refused, timeout, ...).
fn err<E>(op: &str, key: &str, e: SdkError<E>) -> String
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
    format!("S3 {op} of {key:?} failed: {what}")
}

fn body_err(op: &str, key: &str, e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Other(format!(
        "S3 {op} of {key:?} failed while reading the body: {}",
        DisplayErrorContext(e)
    ))
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

/// The IAM action an S3 operation needs, and whether it acts on the bucket itself
/// (rather than on an object key).
fn iam_action(op: &str) -> (&'static str, bool) {
    match op {
        "HeadBucket" | "ListObjectsV2" => ("s3:ListBucket", true),
        "ListMultipartUploads" => ("s3:ListBucketMultipartUploads", true),
        "GetObject" | "HeadObject" => ("s3:GetObject", false),
        "DeleteObject" => ("s3:DeleteObject", false),
        "AbortMultipartUpload" => ("s3:AbortMultipartUpload", false),
        "ListParts" => ("s3:ListMultipartUploadParts", false),
        // PutObject, CopyObject, CreateMultipartUpload, UploadPart(Copy), CompleteMultipartUpload.
        _ => ("s3:PutObject", false),
    }
}

impl S3Driver {
    /// A failed S3 call as a [`StoreError`]: the kinds callers branch on or users act on,
    /// by S3 error code (or bare HTTP status, which HEAD answers and some servers send
    /// without a code), else [`err`]'s line.
    fn classify<E>(&self, op: &str, key: &str, e: SdkError<E>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = e.raw_response().map(|r| r.status().as_u16());
        let (action, on_bucket) = iam_action(op);
        let resource = if on_bucket {
            self.bucket.clone()
        } else {
            format!("{}/{key}", self.bucket)
        };
        match (e.code(), status) {
            (Some("NoSuchBucket"), _) => StoreError::NoSuchBucket(self.bucket.clone()),
            (Some("NoSuchKey") | Some("NotFound"), _) | (None, Some(404)) => {
                StoreError::NotFound(key.to_string())
            }
            (Some("PreconditionFailed") | Some("ConditionalRequestConflict"), _)
            | (None, Some(412 | 409)) => StoreError::PreconditionFailed(key.to_string()),
            (Some("NoSuchUpload"), _) => StoreError::UploadGone(key.to_string()),
            (Some("AccessDenied" | "AllAccessDisabled"), _) | (None, Some(403)) => {
                StoreError::AccessDenied {
                    action,
                    resource,
                    detail: err(op, key, e),
                }
            }
            (
                Some(
                    code @ ("InvalidAccessKeyId"
                    | "SignatureDoesNotMatch"
                    | "ExpiredToken"
                    | "InvalidToken"
                    | "TokenRefreshRequired"),
                ),
                _,
            ) => StoreError::BadCredentials {
                op: op.to_string(),
                resource,
                code: code.to_string(),
            },
            (Some("PermanentRedirect" | "AuthorizationHeaderMalformed"), _) | (None, Some(301)) => {
                StoreError::WrongRegion {
                    bucket: self.bucket.clone(),
                    region: e
                        .raw_response()
                        .and_then(|r| r.headers().get("x-amz-bucket-region"))
                        .map(str::to_string),
                    configured: self.region.clone(),
                }
            }
            _ if matches!(&e, SdkError::DispatchFailure(d) if d.is_io() || d.is_timeout())
                || matches!(&e, SdkError::TimeoutError(_)) =>
            {
                StoreError::Unreachable {
                    bucket: self.bucket.clone(),
                    endpoint: self.endpoint_name(),
                    detail: err(op, key, e),
                }
            }
            _ => StoreError::Other(err(op, key, e)),
        }
    }

    /// The endpoint requests go to, for messages.
    fn endpoint_name(&self) -> String {
        match &self.opts.endpoint {
            Some(ep) => ep.clone(),
            None => format!("S3 in {}", self.region),
        }
    }

    pub async fn connect(bucket: &str, opts: &S3Options) -> Result<Self> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(p) = &opts.profile {
            loader = loader.profile_name(p);
        }
        if let Some(r) = &opts.region {
            loader = loader.region(Region::new(r.clone()));
        } else if opts.endpoint.is_some() {
            // An S3-compatible server: the region comes from the environment or the
            // profile, else us-east-1, never from EC2 instance metadata (whose probe
            // stalls and warns off EC2).
            use aws_config::meta::region::RegionProviderChain;
            let mut profile = aws_config::profile::ProfileFileRegionProvider::builder();
            if let Some(p) = &opts.profile {
                profile = profile.profile_name(p);
            }
            loader = loader.region(
                RegionProviderChain::first_try(
                    aws_config::environment::EnvironmentVariableRegionProvider::new(),
                )
                .or_else(profile.build())
                .or_else(Region::new("us-east-1")),
            );
        }
        if opts.no_sign_request {
            loader = loader.no_credentials();
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
        // Fail early and clearly rather than on the first request.
        use aws_credential_types::provider::ProvideCredentials;
        match sdk.credentials_provider() {
            None if opts.no_sign_request => {}
            None => {
                return Err(StoreError::NoCredentials {
                    detail: "no AWS credentials provider is configured".into(),
                }
                .into())
            }
            Some(creds) => {
                creds
                    .provide_credentials()
                    .await
                    .map_err(|e| StoreError::NoCredentials {
                        detail: DisplayErrorContext(e).to_string(),
                    })?;
            }
        }
        let mut b = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(opts.path_style)
            .accelerate(opts.accelerate)
            // Content is verified by sha256 end to end; skip the SDK's extra CRC pass.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        let region = sdk.region().map_or("us-east-1", |r| r.as_ref()).to_string();
        if sdk.region().is_none() {
            b = b.region(Region::new(region.clone()));
        }
        if let Some(ep) = &opts.endpoint {
            b = b.endpoint_url(ep);
        }
        let endpoint = opts.endpoint.as_deref().or(sdk.endpoint_url());
        Ok(S3Driver {
            sign_payload: signs_payload(opts.payload_signing, endpoint),
            client: Client::from_conf(b.build()),
            sdk: Box::new(sdk),
            bucket: bucket.to_string(),
            region,
            opts: opts.clone(),
        })
    }

    /// PutObject with the object settings; the only way this driver starts one.
    fn put_request(&self, key: &str, data: Bytes) -> PutObjectFluentBuilder {
        let req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(data));
        object_opts!(req, self.opts)
    }

    /// CreateMultipartUpload with the object settings (parts and part copies inherit them).
    fn create_upload_request(&self, key: &str) -> CreateMultipartUploadFluentBuilder {
        let req = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key);
        object_opts!(req, self.opts)
    }

    /// CopyObject with the object settings (a copy does not keep the source's).
    fn copy_request(&self, source: &str, to: &str) -> CopyObjectFluentBuilder {
        let req = self
            .client
            .copy_object()
            .bucket(&self.bucket)
            .key(to)
            .copy_source(source);
        object_opts!(req, self.opts)
    }

    /// The SDK settings the S3 client was built from (credentials, region), and the
    /// custom endpoint if any: for other AWS calls such as STS GetCallerIdentity.
    pub fn sdk_config(&self) -> (&aws_config::SdkConfig, Option<&str>) {
        (&self.sdk, self.opts.endpoint.as_deref())
    }

    /// The access key requests are signed with (None: unsigned, or no credentials).
    async fn access_key(&self) -> Option<String> {
        use aws_credential_types::provider::ProvideCredentials;
        if self.opts.no_sign_request {
            return None;
        }
        let creds = self.sdk.credentials_provider()?.provide_credentials().await;
        creds.ok().map(|c| c.access_key_id().to_string())
    }

    /// Copies `source` (see [`copy_source`]) to `to`, with our object settings:
    /// CopyObject up to its 5 GiB limit, else parallel UploadPartCopy.
    async fn copy_object(&self, source: &str, to: &str, size: u64, jobs: usize) -> Res<()> {
        if size <= MAX_COPY_OBJECT {
            self.copy_request(source, to)
                .send()
                .await
                .map_err(|e| self.classify("CopyObject", to, e))?;
            Ok(())
        } else {
            self.copy_in_parts(source, to, size, jobs).await
        }
    }

    /// Copies the object at `source` (bucket/key) to `to` in parallel part copies.
    async fn copy_in_parts(&self, source: &str, to: &str, size: u64, jobs: usize) -> Res<()> {
        let id = self.create_upload(to).await?;
        let ranges: Vec<(u64, u64)> = (0..size)
            .step_by(COPY_PART as usize)
            .map(|s| (s, (s + COPY_PART).min(size) - 1))
            .collect();
        let copied: Res<Vec<PartTag>> = futures::stream::iter(ranges.into_iter().enumerate())
            .map(|(i, (a, b))| {
                let id = &id;
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
                        .map_err(|e| self.classify("UploadPartCopy", to, e))?;
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
            Ok(parts) => self.complete_upload(to, &id, &parts).await,
            Err(e) => {
                let _ = self.abort_upload(to, &id).await;
                Err(e)
            }
        }
    }

    /// ListObjectsV2 pages under `prefix` (with `/` as delimiter if `dirs`), each
    /// page's objects and common prefixes handed to `each`.
    async fn list_pages(
        &self,
        prefix: &str,
        dirs: bool,
        mut each: impl FnMut(&aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output),
    ) -> Res<()> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .set_delimiter(dirs.then(|| "/".to_string()))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            each(&page.map_err(|e| self.classify("ListObjectsV2", prefix, e))?);
        }
        Ok(())
    }
    /// Checks the bucket is reachable, and in the region requests are signed for,
    /// before any work starts. Not for unsigned requests: a public bucket may grant
    /// GetObject but not HeadBucket.
    pub async fn check(&self) -> Result<()> {
        if self.opts.no_sign_request {
            return Ok(());
        }
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(out) => {
                // AWS answers a request to the wrong region with a 301 (classified
                // below); a server that serves it anyway still names the bucket's region.
                // Only on AWS is a mismatch an error: S3-compatible servers name regions
                // of their own that they do not check.
                match out.bucket_region() {
                    Some(r) if r != self.region && self.opts.endpoint.is_none() => {
                        Err(StoreError::WrongRegion {
                            bucket: self.bucket.clone(),
                            region: Some(r.to_string()),
                            configured: self.region.clone(),
                        }
                        .into())
                    }
                    _ => Ok(()),
                }
            }
            Err(e) => match self.classify("HeadBucket", &self.bucket, e) {
                StoreError::NotFound(_) => {
                    Err(StoreError::NoSuchBucket(self.bucket.clone()).into())
                }
                StoreError::Other(m) => {
                    Err(anyhow!(m).context(format!("cannot reach bucket {:?}", self.bucket)))
                }
                typed => Err(typed.into()),
            },
        }
    }
}

#[async_trait]
impl StorageDriver for S3Driver {
    /// Refuses an object above `max` by its Content-Length before reading the body,
    /// and stops reading past `max` should the body be longer than announced.
    async fn get_with_etag(&self, key: &str, max: u64) -> Res<(Bytes, String)> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.classify("GetObject", key, e))?;
        let too_large = |size| StoreError::TooLarge {
            key: key.to_string(),
            size,
            max,
        };
        let announced = out.content_length().unwrap_or(0).max(0) as u64;
        if announced > max {
            return Err(too_large(announced));
        }
        let etag = out.e_tag.clone().ok_or_else(|| {
            StoreError::Other(format!(
                "S3 GetObject of {key:?} returned no ETag, needed for conditional writes"
            ))
        })?;
        let mut body = out.body;
        let mut buf = Vec::with_capacity(announced as usize);
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| body_err("GetObject", key, e))?
        {
            if (buf.len() + chunk.len()) as u64 > max {
                return Err(too_large((buf.len() + chunk.len()) as u64));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok((buf.into(), etag))
    }

    /// A byte range. The SDK retries failed requests, but not a body that breaks off
    /// after the headers arrived, so that is retried here with the same backoff budget.
    async fn get_range(&self, key: &str, start: u64, len: usize) -> Res<Bytes> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let out_of_range = || StoreError::OutOfRange {
            key: key.to_string(),
            start,
            len,
        };
        let range = format!("bytes={start}-{}", start + len as u64 - 1);
        let mut attempt = 1;
        loop {
            let out = match self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .range(&range)
                .send()
                .await
            {
                Ok(out) => out,
                Err(e) if e.code() == Some("InvalidRange") => return Err(out_of_range()),
                Err(e) => return Err(self.classify("GetObject", key, e)),
            };
            // Content-Range "bytes a-b/total": a range past the end is not transient.
            let total = out
                .content_range()
                .and_then(|r| r.rsplit_once('/'))
                .and_then(|(_, t)| t.parse::<u64>().ok());
            if total.is_some_and(|t| start + len as u64 > t) {
                return Err(out_of_range());
            }
            let failure = match out.body.collect().await {
                Ok(data) if data.remaining() == len => return Ok(data.into_bytes()),
                Ok(data) => format!("returned {} bytes for a {len}-byte range", data.remaining()),
                Err(e) => format!("failed while reading the body: {}", source_chain(&e)),
            };
            if attempt >= self.opts.max_attempts.max(1) {
                return Err(StoreError::Other(format!(
                    "S3 GetObject of {key:?} {failure} (after {attempt} attempts)"
                )));
            }
            tracing::info!("retrying GetObject of {key:?}: {failure}");
            backoff(attempt, RETRY_BASE).await;
            attempt += 1;
        }
    }

    async fn stat(&self, key: &str) -> Res<u64> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.classify("HeadObject", key, e))?;
        Ok(out.content_length().unwrap_or(0) as u64)
    }

    /// `IfAbsent` is `If-None-Match: *`, `IfMatch` is `If-Match`; a conflict is 412,
    /// or 409 for a concurrent conditional write, or 404 when the key went away.
    async fn put(&self, key: &str, data: Bytes, cond: Precondition) -> Res<()> {
        let req = self.put_request(key, data);
        let req = match &cond {
            Precondition::None => req,
            Precondition::IfAbsent => req.if_none_match("*"),
            Precondition::IfMatch(etag) => req.if_match(etag),
        };
        let req = req.customize();
        let req = if self.sign_payload {
            req
        } else {
            req.disable_payload_signing()
        };
        match req
            .send()
            .await
            .map_err(|e| self.classify("PutObject", key, e))
        {
            Ok(_) => Ok(()),
            Err(StoreError::NotFound(k)) if cond != Precondition::None => {
                Err(StoreError::PreconditionFailed(k))
            }
            Err(e) => Err(e),
        }
    }

    async fn delete(&self, key: &str) -> Res<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.classify("DeleteObject", key, e))?;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Res<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        self.list_pages(prefix, false, |page| {
            out.extend(page.contents().iter().filter_map(|o| {
                Some(ObjectInfo {
                    key: o.key()?.to_string(),
                    size: o.size().unwrap_or(0) as u64,
                    modified: o
                        .last_modified()
                        .and_then(|t| SystemTime::try_from(*t).ok()),
                })
            }))
        })
        .await?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn list_dirs(&self, prefix: &str) -> Res<Vec<String>> {
        let mut out = Vec::new();
        self.list_pages(prefix, true, |page| {
            out.extend(page.common_prefixes().iter().filter_map(|p| {
                let name = p.prefix()?.strip_prefix(prefix)?;
                Some(name.trim_end_matches('/').to_string())
            }))
        })
        .await?;
        out.sort();
        Ok(out)
    }

    /// Server-side move: CopyObject up to 5 GiB, else parallel UploadPartCopy; then delete.
    async fn move_object(&self, from: &str, to: &str, size: u64, jobs: usize) -> Res<()> {
        self.copy_object(&copy_source(&self.bucket, from), to, size, jobs)
            .await?;
        self.delete(from).await
    }

    /// Server-side, when one endpoint and one set of credentials reach both buckets
    /// (the request is signed with ours and S3 reads the source with them).
    async fn copy_from(
        &self,
        src: &dyn StorageDriver,
        from: &str,
        to: &str,
        size: u64,
        jobs: usize,
    ) -> Res<()> {
        let unsupported = StoreError::Unsupported("server-side copies from that store");
        let Some(s) = src.as_s3() else {
            return Err(unsupported);
        };
        if s.opts.endpoint != self.opts.endpoint
            || self.opts.no_sign_request
            || s.access_key().await.is_none()
            || s.access_key().await != self.access_key().await
        {
            return Err(unsupported);
        }
        self.copy_object(&copy_source(&s.bucket, from), to, size, jobs)
            .await
    }

    async fn create_upload(&self, key: &str) -> Res<String> {
        let out = self
            .create_upload_request(key)
            .send()
            .await
            .map_err(|e| self.classify("CreateMultipartUpload", key, e))?;
        out.upload_id.ok_or_else(|| {
            StoreError::Other(format!(
                "S3 CreateMultipartUpload of {key:?} returned no upload id"
            ))
        })
    }

    async fn upload_part(
        &self,
        key: &str,
        id: &str,
        number: i32,
        _part_size: u64,
        data: Bytes,
    ) -> Res<PartTag> {
        let req = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(id)
            .part_number(number)
            .body(ByteStream::from(data))
            .customize();
        let req = if self.sign_payload {
            req
        } else {
            req.disable_payload_signing()
        };
        let out = req
            .send()
            .await
            .map_err(|e| self.classify("UploadPart", key, e))?;
        Ok(PartTag {
            etag: out.e_tag.unwrap_or_default(),
        })
    }

    async fn complete_upload(&self, key: &str, id: &str, parts: &[PartTag]) -> Res<()> {
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
            .map_err(|e| self.classify("CompleteMultipartUpload", key, e))?;
        Ok(())
    }

    async fn abort_upload(&self, key: &str, id: &str) -> Res<()> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(id)
            .send()
            .await
            .map_err(|e| self.classify("AbortMultipartUpload", key, e))?;
        Ok(())
    }

    /// Resuming relies on a part's ETag being its MD5: not so under SSE-KMS.
    fn resumable_uploads(&self) -> bool {
        !self.opts.sse.as_deref().is_some_and(|s| s.contains("kms"))
    }

    /// Incomplete multipart uploads whose key starts with `prefix`; `Unsupported`
    /// when the server cannot list them. (The SDK has no paginator for this call.)
    async fn list_uploads(&self, prefix: &str) -> Res<Vec<OpenUpload>> {
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
                Err(e) if matches!(e.code(), Some("NotImplemented")) => {
                    return Err(StoreError::Unsupported("listing open uploads"))
                }
                Err(e) => return Err(self.classify("ListMultipartUploads", prefix, e)),
            };
            for u in page.uploads() {
                if let (Some(key), Some(id)) = (u.key(), u.upload_id()) {
                    found.push(OpenUpload {
                        key: key.to_string(),
                        id: id.to_string(),
                        initiated: u.initiated().and_then(|t| SystemTime::try_from(*t).ok()),
                    });
                }
            }
            if page.is_truncated() != Some(true) {
                return Ok(found);
            }
            key_marker = page.next_key_marker().map(str::to_string);
            id_marker = page.next_upload_id_marker().map(str::to_string);
        }
    }

    async fn upload_exists(&self, key: &str, id: &str) -> Res<bool> {
        match self
            .client
            .list_parts()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(id)
            .max_parts(1)
            .send()
            .await
            .map_err(|e| self.classify("ListParts", key, e))
        {
            Ok(_) => Ok(true),
            Err(StoreError::UploadGone(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn list_parts(&self, key: &str, id: &str) -> Res<Vec<StoredPart>> {
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
                .map_err(|e| self.classify("ListParts", key, e))?;
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

    fn as_s3(&self) -> Option<&S3Driver> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::signs_payload;

    #[test]
    fn payload_signing_follows_the_aws_cli() {
        assert!(!signs_payload(None, None), "AWS itself is https");
        assert!(!signs_payload(None, Some("HTTPS://s3.example")));
        assert!(signs_payload(None, Some("http://127.0.0.1:9000")));
        assert!(signs_payload(Some(true), Some("https://s3.example")));
        assert!(!signs_payload(Some(false), Some("http://127.0.0.1:9000")));
    }
}
