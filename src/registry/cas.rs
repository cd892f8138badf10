//! Compare-and-swap updates of small documents: read the value and its etag, decide
//! the new value, write it only if the document is still at that etag, and retry
//! from the read when another writer won. Generic over how the value is read and
//! written, so records and registry links can share it.

use super::Registry;
use anyhow::{bail, Result};
use bytes::Bytes;
use std::future::Future;

/// How often a conditional write is retried after losing to another writer.
pub const ATTEMPTS: u32 = 200;
/// First pause after a lost race (grows exponentially, with jitter).
const BACKOFF: std::time::Duration = std::time::Duration::from_millis(5);

/// What an update did: the value it replaced (None when it created the document) and
/// the value it wrote (None when `decide` kept the current one).
#[derive(Debug)]
pub struct Updated<T> {
    pub previous: Option<T>,
    pub written: Option<T>,
}

/// Updates one document by compare-and-swap. `read` returns the value and its etag;
/// `write(value, etag)` creates (etag None) or replaces (etag Some) it and returns
/// false when another writer won; `decide` sees the current value and returns the
/// value to write, None to keep it, or an error to give up.
pub async fn update<T, R, RF, W, WF, D>(
    what: &str,
    mut read: R,
    mut write: W,
    mut decide: D,
) -> Result<Updated<T>>
where
    T: Clone,
    R: FnMut() -> RF,
    RF: Future<Output = Result<Option<(T, String)>>>,
    W: FnMut(T, Option<String>) -> WF,
    WF: Future<Output = Result<bool>>,
    D: FnMut(Option<&T>) -> Result<Option<T>>,
{
    for attempt in 0..ATTEMPTS {
        let cur = read().await?;
        let Some(new) = decide(cur.as_ref().map(|(v, _)| v))? else {
            return Ok(Updated {
                previous: cur.map(|(v, _)| v),
                written: None,
            });
        };
        let (previous, etag) = match cur {
            Some((v, e)) => (Some(v), Some(e)),
            None => (None, None),
        };
        if write(new.clone(), etag).await? {
            return Ok(Updated {
                previous,
                written: Some(new),
            });
        }
        tracing::debug!("update of {what} lost a race (attempt {attempt}); retrying");
        crate::store::backoff(attempt, BACKOFF).await;
    }
    bail!("cannot update {what}: too many concurrent writers; try again")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A document in memory with a version counter as its etag; `lose` makes the
    /// first writes fail as if another writer had won.
    #[tokio::test]
    async fn retries_lost_writes_and_reports_what_it_replaced() {
        let (doc, lose) = (&Mutex::new(Some((1u32, 0u32))), &Mutex::new(2));
        let read = move || async move { Ok(doc.lock().unwrap().map(|(v, n)| (v, n.to_string()))) };
        let write = move |v: u32, etag: Option<String>| async move {
            let mut l = lose.lock().unwrap();
            if *l > 0 {
                *l -= 1;
                return Ok(false);
            }
            let mut d = doc.lock().unwrap();
            let n = d.map(|(_, n)| n);
            if n.map(|n| n.to_string()) != etag {
                return Ok(false);
            }
            *d = Some((v, n.map_or(0, |n| n + 1)));
            Ok(true)
        };
        let u = update("doc", read, write, |cur| {
            Ok(Some(cur.copied().unwrap_or(0) + 10))
        })
        .await
        .unwrap();
        assert_eq!((u.previous, u.written), (Some(1), Some(11)));
        assert_eq!(*doc.lock().unwrap(), Some((11, 1)));
        let u = update("doc", read, write, |_| Ok(None)).await.unwrap();
        assert_eq!((u.previous, u.written), (Some(11), None));
    }
}

/// Whether a store refuses conditional writes it must refuse. Some S3-compatible
/// servers (Garage 2.5) accept `If-None-Match: *` and `If-Match` and write anyway, so
/// every compare-and-swap above silently becomes last-writer-wins there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConditionalWrites {
    Honoured,
    Ignored,
    /// The probe could not write (read-only credentials, an http store).
    Unknown,
}

/// Asks the server: a create of an existing key and a replace at a wrong etag must
/// both be refused. Four small requests on a fresh key that is deleted after (cheap
/// next to any command that moves a tag); a store that cannot be written to (an http
/// store, read-only credentials) answers `Unknown`.
pub async fn probe(store: &Registry) -> ConditionalWrites {
    let key = store
        .layout()
        .conditional_write_probe(&uuid::Uuid::new_v4().simple().to_string());
    let body = || Bytes::from_static(b"s3dock conditional-write probe\n");
    let wrong = "\"00000000000000000000000000000000\"";
    // (etag, the answer an honest server gives): create, create again, replace at a wrong etag.
    let steps = [(None, true), (None, false), (Some(wrong), false)];
    let mut answer = ConditionalWrites::Honoured;
    for (etag, expected) in steps {
        match store.create_or_replace(&key, body(), etag).await {
            Ok(written) if written == expected => {}
            Ok(_) => {
                answer = ConditionalWrites::Ignored;
                break;
            }
            Err(e) => {
                tracing::debug!("conditional-write probe: {e:#}");
                answer = ConditionalWrites::Unknown;
                break;
            }
        }
    }
    if let Err(e) = store.delete(&key).await {
        tracing::debug!("conditional-write probe: cannot delete {key}: {e:#}");
    }
    answer
}
