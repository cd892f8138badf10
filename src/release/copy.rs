//! An app's release records beside its copied images (`copy --with-releases`).

use super::access::{get_record, or_skip, record_key, record_names, Malformed};
use super::records::{EnvRecord, ImageRecord, Record, VersionRecord};
use crate::model::digest::Digest;
use crate::registry::Registry;
use anyhow::Result;

/// What copying one app's records did.
#[derive(Debug, Default, serde::Serialize)]
pub struct RecordsCopied {
    pub app: String,
    pub images: usize,
    pub versions: usize,
    pub environments: usize,
    /// Records not copied because the target lacks the image they name (`what app:name`).
    pub not_copied: Vec<String>,
    /// Records in the source that failed validation (one line each).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub malformed: Vec<String>,
}

/// Copies `app`'s image, version and environment records from `src` to `dst` as they
/// are (validated on the way), each only if the target holds the manifest it names, so
/// no record there points at a missing image. The audit trail stays in the source.
pub async fn copy_records(src: &Registry, dst: &Registry, app: &str) -> Result<RecordsCopied> {
    let mut out = RecordsCopied {
        app: app.to_string(),
        ..Default::default()
    };
    let mut bad = Vec::new();
    out.images =
        copy_kind::<ImageRecord>(src, dst, app, |r| r.digest, &mut out.not_copied, &mut bad)
            .await?;
    out.versions =
        copy_kind::<VersionRecord>(src, dst, app, |r| r.digest, &mut out.not_copied, &mut bad)
            .await?;
    out.environments =
        copy_kind::<EnvRecord>(src, dst, app, |r| r.digest, &mut out.not_copied, &mut bad).await?;
    out.malformed = bad.iter().map(ToString::to_string).collect();
    Ok(out)
}

async fn copy_kind<T: Record>(
    src: &Registry,
    dst: &Registry,
    app: &str,
    digest: impl Fn(&T) -> Digest,
    not_copied: &mut Vec<String>,
    bad: &mut Vec<Malformed>,
) -> Result<usize> {
    let (names, malformed) = record_names(src, T::KIND, app).await?;
    bad.extend(malformed);
    let mut n = 0;
    for name in names {
        let Some(rec) = or_skip(get_record::<T>(src, app, &name).await, bad)? else {
            continue;
        };
        if !dst.has_revision(app, &digest(&rec)).await? {
            not_copied.push(format!("{} {app}:{name}", T::WHAT));
            continue;
        }
        dst.put_json(&record_key(dst, T::KIND, app, &name), &rec)
            .await?;
        n += 1;
    }
    Ok(n)
}
