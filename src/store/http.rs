//! A read-only store over plain HTTP(S): a static web server, a CDN in front of a
//! bucket or an S3 website endpoint serving the registry layout. Pull needs only
//! whole and ranged GETs of known keys, so no listing and no credentials; every
//! write is refused with [`StoreError::Unsupported`].

use super::{ObjectInfo, Precondition, StorageDriver, StoreError};
use async_trait::async_trait;
use bytes::Bytes;
use reqwest::{header, Client, Response, StatusCode};
use url::Url;

type Res<T> = std::result::Result<T, StoreError>;

const READ_ONLY: &str = "writing (an http(s) store is read-only: push to s3:// or a directory)";
const LISTING: &str = "listing (an http(s) store serves known keys only)";

#[derive(Debug)]
pub struct HttpDriver {
    client: Client,
    /// Always ends in `/`, so keys join below it.
    base: Url,
    attempts: u32,
}

impl HttpDriver {
    /// `base` is the store URL (`https://host/prefix`). TLS trusts the system roots,
    /// and `SSL_CERT_FILE` / `SSL_CERT_DIR` when set (a private CA).
    pub fn new(base: &Url, attempts: u32) -> anyhow::Result<Self> {
        let mut base = base.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let client = Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .user_agent(concat!("s3dock/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(HttpDriver {
            client,
            base,
            attempts: attempts.max(1),
        })
    }

    fn url(&self, key: &str) -> Res<Url> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|_| StoreError::Other(format!("{} cannot hold keys", self.base)))?
            .pop_if_empty()
            .extend(key.split('/'));
        Ok(url)
    }

    /// Sends a request, retrying connection failures and 5xx answers with backoff;
    /// 404/403 (what static servers and S3 websites answer for an absent key) are
    /// `NotFound`, other non-success statuses an error.
    async fn send(&self, key: &str, req: reqwest::RequestBuilder) -> Res<Response> {
        let mut attempt = 0;
        let resp = loop {
            let this = req
                .try_clone()
                .expect("requests without a streamed body clone");
            let failed = match this.send().await {
                Ok(r) if !r.status().is_server_error() => break r,
                Ok(r) => format!("answered HTTP {}", r.status()),
                Err(e) => one_line(&e),
            };
            attempt += 1;
            if attempt >= self.attempts {
                return Err(StoreError::Other(format!(
                    "cannot read {key:?} from {}: {failed}",
                    self.base
                )));
            }
            super::backoff(attempt, std::time::Duration::from_millis(200)).await;
        };
        match resp.status() {
            s if s.is_success() => Ok(resp),
            StatusCode::NOT_FOUND | StatusCode::FORBIDDEN => {
                Err(StoreError::NotFound(key.to_string()))
            }
            StatusCode::RANGE_NOT_SATISFIABLE => Err(StoreError::OutOfRange {
                key: key.to_string(),
                start: 0,
                len: 0,
            }),
            s => Err(StoreError::Other(format!(
                "GET {key:?} from {} answered HTTP {s}",
                self.base
            ))),
        }
    }
}

/// reqwest's error and its causes on one line.
fn one_line(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = c.source();
    }
    parts.join(": ")
}

/// Reads a body of at most `max` bytes, refusing a larger announced length before
/// reading and stopping past `max` should the server send more than it announced.
async fn body_limited(key: &str, mut resp: Response, max: u64) -> Res<Bytes> {
    let too_large = |size| StoreError::TooLarge {
        key: key.to_string(),
        size,
        max,
    };
    let announced = resp.content_length().unwrap_or(0);
    if announced > max {
        return Err(too_large(announced));
    }
    let mut buf = Vec::with_capacity(announced as usize);
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| StoreError::Other(format!("reading {key:?}: {}", one_line(&e))))?
    {
        if (buf.len() + chunk.len()) as u64 > max {
            return Err(too_large((buf.len() + chunk.len()) as u64));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.into())
}

#[async_trait]
impl StorageDriver for HttpDriver {
    async fn get_with_etag(&self, key: &str, max: u64) -> Res<(Bytes, String)> {
        let resp = self.send(key, self.client.get(self.url(key)?)).await?;
        let etag = resp
            .headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        Ok((body_limited(key, resp, max).await?, etag))
    }

    async fn get_range(&self, key: &str, start: u64, len: usize) -> Res<Bytes> {
        let out_of_range = || StoreError::OutOfRange {
            key: key.to_string(),
            start,
            len,
        };
        if len == 0 {
            return Ok(Bytes::new());
        }
        let req = self.client.get(self.url(key)?).header(
            header::RANGE,
            format!("bytes={start}-{}", start + len as u64 - 1),
        );
        let resp = match self.send(key, req).await {
            Err(StoreError::OutOfRange { .. }) => return Err(out_of_range()),
            r => r?,
        };
        // A server that ignores Range answers 200 with the whole object: refuse it
        // rather than read a multi-GiB layer once per chunk.
        if resp.status() != StatusCode::PARTIAL_CONTENT {
            return Err(StoreError::Other(format!(
                "{} ignores HTTP Range requests (answered {} for a range of {key:?}); serve the store with a server that supports them",
                self.base,
                resp.status()
            )));
        }
        let data = body_limited(key, resp, len as u64).await?;
        if data.len() != len {
            return Err(out_of_range());
        }
        Ok(data)
    }

    async fn stat(&self, key: &str) -> Res<u64> {
        let resp = self.send(key, self.client.head(self.url(key)?)).await?;
        resp.headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .ok_or_else(|| {
                StoreError::Other(format!(
                    "HEAD {key:?} from {} gave no Content-Length",
                    self.base
                ))
            })
    }

    async fn put(&self, _key: &str, _data: Bytes, _cond: Precondition) -> Res<()> {
        Err(StoreError::Unsupported(READ_ONLY))
    }

    async fn delete(&self, _key: &str) -> Res<()> {
        Err(StoreError::Unsupported(READ_ONLY))
    }

    async fn list(&self, _prefix: &str) -> Res<Vec<ObjectInfo>> {
        Err(StoreError::Unsupported(LISTING))
    }

    async fn list_dirs(&self, _prefix: &str) -> Res<Vec<String>> {
        Err(StoreError::Unsupported(LISTING))
    }

    async fn move_object(&self, _from: &str, _to: &str, _size: u64, _jobs: usize) -> Res<()> {
        Err(StoreError::Unsupported(READ_ONLY))
    }
}
