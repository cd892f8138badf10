//! The release layer's only contact with the registry's storage: record and audit
//! keys, listings and validated reads. Everything read here is untrusted store
//! content; a document that fails validation comes back as [`Malformed`], naming
//! its key escaped and short, so callers can skip it with one warning.

use super::audit::{Event, EVENT_SCHEMA};
use super::records::{valid_name, Kind, Record, RECORD_SCHEMA};
use crate::model::text::{excerpt, EXCERPT_CHARS};
use crate::registry::Registry;
use anyhow::Result;
use bytes::Bytes;

/// A record or event that cannot be used: where it is and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what} {key} is malformed: {why}")]
pub struct Malformed {
    pub what: &'static str,
    /// The key, escaped and cut short.
    pub key: String,
    pub why: String,
}

impl Malformed {
    pub fn new(what: &'static str, key: &str, why: impl Into<String>) -> Malformed {
        Malformed {
            what,
            key: short_key(key),
            why: why.into(),
        }
    }
}

/// A key for a message: escaped, and when long, its end (the part that names it).
fn short_key(key: &str) -> String {
    let n = key.chars().count();
    if n <= EXCERPT_CHARS {
        return excerpt(key.as_bytes());
    }
    let tail: String = key.chars().skip(n - EXCERPT_CHARS).collect();
    format!("…{}", excerpt(tail.as_bytes()))
}

/// A failed read: the store failed (fatal), or the document is unusable (skippable).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Store(#[from] anyhow::Error),
    #[error(transparent)]
    Malformed(#[from] Malformed),
}

/// A read whose malformed result is noted in `skipped` and treated as absent, so a
/// listing can go on; store failures stay fatal.
pub fn or_skip<T>(
    r: Result<Option<(T, String)>, ReadError>,
    skipped: &mut Vec<Malformed>,
) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(v.map(|(v, _)| v)),
        Err(ReadError::Malformed(m)) => {
            skipped.push(m);
            Ok(None)
        }
        Err(ReadError::Store(e)) => Err(e),
    }
}

/// The store's name as users gave it, for messages.
pub fn store_name(store: &Registry) -> &str {
    &store.display
}

fn records_prefix(store: &Registry, kind: Kind, app: &str) -> String {
    match kind {
        Kind::Image => store.layout().image_records_prefix(app),
        Kind::Version => store.layout().version_records_prefix(app),
        Kind::Env => store.layout().env_records_prefix(app),
    }
}

pub fn record_key(store: &Registry, kind: Kind, app: &str, name: &str) -> String {
    match kind {
        Kind::Image => store.layout().image_record(app, name),
        Kind::Version => store.layout().version_record(app, name),
        Kind::Env => store.layout().env_record(app, name),
    }
}

/// The name of a JSON document directly under `prefix` (`prefix/x.json` → `x`);
/// None for anything else, including documents in deeper folders.
fn doc_name<'a>(key: &'a str, prefix: &str) -> Option<&'a str> {
    key.strip_prefix(prefix)?
        .strip_suffix(".json")
        .filter(|n| !n.contains('/'))
}

/// Names of an app's records of one kind (`x.json` → `x`), sorted; record files whose
/// name is not a valid name of that kind come back as malformed.
pub async fn record_names(
    store: &Registry,
    kind: Kind,
    app: &str,
) -> Result<(Vec<String>, Vec<Malformed>)> {
    let prefix = records_prefix(store, kind, app);
    let (mut names, mut bad) = (Vec::new(), Vec::new());
    for o in store.list_objects(&prefix).await? {
        let Some(name) = doc_name(&o.key, &prefix) else {
            continue;
        };
        if valid_name(kind, name) {
            names.push(name.to_string());
        } else {
            bad.push(Malformed::new("record", &o.key, "not a valid record name"));
        }
    }
    names.sort();
    Ok((names, bad))
}

/// Parses a document: its schema version first (newer ones are refused whole), then
/// the typed fields.
fn parse<T: serde::de::DeserializeOwned>(
    what: &'static str,
    key: &str,
    data: &[u8],
    newest: u32,
) -> Result<T, ReadError> {
    let v: serde_json::Value = serde_json::from_slice(data)
        .map_err(|e| Malformed::new(what, key, format!("not JSON ({})", e.classify_name())))?;
    let schema = v.get("schemaVersion").and_then(|s| s.as_u64()).unwrap_or(0);
    if schema > u64::from(newest) {
        return Err(Malformed::new(
            what,
            key,
            format!("schema version {schema} is newer than this s3dock understands ({newest}): upgrade s3dock"),
        )
        .into());
    }
    serde_json::from_value(v).map_err(|e| {
        Malformed::new(
            what,
            key,
            format!("fields do not fit: {}", excerpt(e.to_string().as_bytes())),
        )
        .into()
    })
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "read error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "wrong types",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

/// A record and its etag, validated against the name its key gives it.
pub async fn get_record<T: Record>(
    store: &Registry,
    app: &str,
    name: &str,
) -> Result<Option<(T, String)>, ReadError> {
    let key = record_key(store, T::KIND, app, name);
    let Some((data, etag)) = store.get_document_with_etag(&key).await? else {
        return Ok(None);
    };
    let rec: T = parse(T::WHAT, &key, &data, RECORD_SCHEMA)?;
    rec.validate(app, name)
        .map_err(|why| Malformed::new(T::WHAT, &key, why))?;
    Ok(Some((rec, etag)))
}

/// Conditional write: create when `etag` is None, else replace only if the record is
/// still at `etag`. False when another writer won.
pub async fn put_record_if<T: Record>(
    store: &Registry,
    app: &str,
    name: &str,
    rec: &T,
    etag: Option<&str>,
) -> Result<bool> {
    store
        .put_json_if(&record_key(store, T::KIND, app, name), rec, etag)
        .await
}

/// Whether the store has anything of `app`: registry tags or release records.
pub async fn app_exists(store: &Registry, app: &str) -> Result<bool> {
    Ok(!store.tags(app).await?.is_empty()
        || !store
            .list_names(&store.layout().app_prefix(app))
            .await?
            .is_empty())
}

/// Every record file under the apps folder as (app, kind, name); names not valid for
/// their kind, and apps whose name is not a valid repository name, come back malformed.
pub async fn all_records(
    store: &Registry,
) -> Result<(Vec<(String, Kind, String)>, Vec<Malformed>)> {
    let (mut out, mut bad) = (Vec::new(), Vec::new());
    for o in store.list_objects(&store.layout().apps_prefix()).await? {
        let Some(app) = store.layout().app_of_record_key(&o.key) else {
            continue;
        };
        if super::records::check_app_name(&app).is_err() {
            bad.push(Malformed::new("app", &o.key, "not a valid app name"));
            continue;
        }
        let Some(rest) = o.key.strip_prefix(&store.layout().app_prefix(&app)) else {
            continue;
        };
        let kind = [
            ("_images/", Kind::Image),
            ("_versions/", Kind::Version),
            ("_envs/", Kind::Env),
        ]
        .into_iter()
        .find_map(|(p, k)| Some((rest.strip_prefix(p)?, k)));
        let Some((file, kind)) = kind else {
            continue;
        };
        let Some(name) = doc_name(file, "") else {
            continue;
        };
        if valid_name(kind, name) {
            out.push((app, kind, name.to_string()));
        } else {
            bad.push(Malformed::new("record", &o.key, "not a valid record name"));
        }
    }
    Ok((out, bad))
}

/// Creates an audit event document; the key when written, None when the stem is taken.
pub async fn put_event(
    store: &Registry,
    app: &str,
    stem: &str,
    data: Bytes,
) -> Result<Option<String>> {
    let key = store.layout().audit_event(app, stem);
    Ok(store
        .create_or_replace(&key, data, None)
        .await?
        .then_some(key))
}

/// The months (`YYYYMM`) that hold events of `app`.
pub async fn event_months(store: &Registry, app: &str) -> Result<Vec<String>> {
    let mut months = store.list_names(&store.layout().audit_prefix(app)).await?;
    months.retain(|m| m.len() == 6 && m.bytes().all(|b| b.is_ascii_digit()));
    Ok(months)
}

/// The event keys of one month, with their file stems.
pub async fn event_keys(store: &Registry, app: &str, month: &str) -> Result<Vec<(String, String)>> {
    let prefix = store.layout().audit_month_prefix(app, month);
    let mut out = Vec::new();
    for o in store.list_objects(&prefix).await? {
        // Only this app's events (a nested app `app/202507` would list here too).
        let stem = doc_name(&o.key, &prefix).map(str::to_string);
        if let Some(stem) = stem {
            out.push((o.key, stem));
        }
    }
    Ok(out)
}

/// One event document of `app`, validated.
pub async fn get_event(store: &Registry, app: &str, key: &str) -> Result<Option<Event>, ReadError> {
    let Some(data) = store.get_document(key).await? else {
        return Ok(None);
    };
    let ev: Event = parse("audit event", key, &data, EVENT_SCHEMA)?;
    ev.validate(app)
        .map_err(|why| Malformed::new("audit event", key, why))?;
    Ok(Some(ev))
}

/// The AWS caller identity (STS GetCallerIdentity) on S3 stores; None elsewhere or
/// when it cannot be had within a few seconds.
pub async fn caller_identity(store: &Registry) -> Option<String> {
    let d = store.s3()?;
    let (sdk, endpoint) = d.sdk_config();
    let mut b = aws_sdk_sts::config::Builder::from(sdk)
        .retry_config(aws_sdk_sts::config::retry::RetryConfig::standard().with_max_attempts(1));
    if sdk.region().is_none() {
        b = b.region(aws_sdk_sts::config::Region::new("us-east-1"));
    }
    if let Some(ep) = endpoint {
        b = b.endpoint_url(ep);
    }
    let client = aws_sdk_sts::Client::from_conf(b.build());
    let call = client.get_caller_identity().send();
    match tokio::time::timeout(std::time::Duration::from_secs(5), call).await {
        Ok(Ok(out)) => out.arn().map(str::to_string),
        Ok(Err(e)) => {
            tracing::debug!(
                "no AWS caller identity for the audit trail: {}",
                aws_sdk_sts::error::DisplayErrorContext(e)
            );
            None
        }
        Err(_) => {
            tracing::debug!("no AWS caller identity for the audit trail: timed out");
            None
        }
    }
}
