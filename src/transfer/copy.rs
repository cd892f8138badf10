//! `copy`: images from one store to another, blob by blob, in the registry layout.
//!
//! Per image (a tag or a digest; a multi-platform index with every image it lists):
//! every manifest is read from the source and verified first, then each blob the
//! target lacks (by digest and size) is copied — server-side where both stores are
//! S3 buckets one set of credentials reaches (CopyObject, UploadPartCopy above 5 GiB),
//! else streamed through this host with ranged GETs and multipart uploads (memory
//! bounded by `--jobs` × part size) and verified by sha256 before the upload completes.
//! A server-side copy moves exactly the source's bytes, checked by size before and
//! after; the source's content is verified where it came in (push) and by `verify
//! --deep`. Then manifests, layer and revision links, and the tag last, after a final
//! check that every blob it needs is in the target. A killed copy leaves no tag; the
//! next one skips what was copied and continues open multipart uploads.

use crate::model::digest::{Digest, Hasher};
use crate::model::image::{our_digest, parse_document, Document};
use crate::model::reference::Reference;
use crate::registry::gclock::Lease;
use crate::registry::{Registry, UploadOutcome, Uploader};
use crate::transfer::pull::{check_size, manifest_blob, not_found};
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

/// What `copy` should take: references, or the whole store.
#[derive(Debug, Clone)]
pub enum Selection {
    /// `name:tag`, `name@digest`, or a bare name for every tag of the repository.
    Refs(Vec<Reference>),
    /// Every tag of every repository.
    All,
}

/// How one image (`reference`) was copied.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CopiedImage {
    pub reference: String,
    pub digest: Option<Digest>,
    /// Manifests stored: 1, or the index and each image it lists.
    pub manifests: usize,
    pub blobs_copied: usize,
    /// Blobs the target already had (same digest and size).
    pub blobs_skipped: usize,
    /// Bytes written into the target, server-side or streamed.
    pub bytes_copied: u64,
    pub bytes_server_side: u64,
    pub bytes_streamed: u64,
    /// Bytes an interrupted copy had already uploaded, reused instead of sent again.
    pub bytes_resumed: u64,
    /// `server-side`, `streamed`, `mixed`, or `none` (nothing to copy).
    pub method: &'static str,
    /// What the tag held in the target before, when it moved.
    pub previous: Option<Digest>,
}

/// An image read from the source and verified: its manifests, index last.
struct SourceImage {
    reference: Reference,
    digest: Digest,
    /// (digest, bytes) of each manifest; the top one (index or single manifest) last.
    manifests: Vec<(Digest, Bytes)>,
    /// Per manifest, the blobs it names (config and layers) with their sizes.
    blobs: Vec<Vec<(Digest, u64)>>,
}

/// Manifests an index may list here; more is refused rather than walked.
const MAX_CHILDREN: usize = 256;

/// The references `sel` names in `src`, each with a tag or a digest.
pub async fn expand(src: &Registry, sel: &Selection) -> Result<Vec<Reference>> {
    let mut out = Vec::new();
    let repos: Vec<(String, Option<Reference>)> = match sel {
        Selection::All => src
            .repositories(usize::MAX)
            .await?
            .into_iter()
            .map(|r| (r, None))
            .collect(),
        Selection::Refs(refs) => refs
            .iter()
            .map(|r| (r.name.clone(), Some(r.clone())))
            .collect(),
    };
    for (repo, r) in repos {
        match r {
            Some(r) if r.tag.is_some() || r.digest.is_some() => out.push(r),
            _ => {
                let tags = src.tags(&repo).await?;
                if tags.is_empty() {
                    bail!(
                        "repository {} has no tags in store {}",
                        crate::model::reference::familiar(&repo),
                        src.display
                    );
                }
                out.extend(tags.iter().map(|t| Reference::with_tag(&repo, t)));
            }
        }
    }
    Ok(out)
}

/// Reads and verifies `r`'s manifests in the source (every digest and descriptor size).
async fn read_source(src: &Registry, r: &Reference) -> Result<SourceImage> {
    let repo = &r.name;
    let digest = match (&r.digest, r.tag_or_latest()) {
        (Some(d), _) => *d,
        (None, Some(tag)) => match src.tag_target(repo, tag).await? {
            Some(d) => d,
            None => bail!("{}", not_found(src, r, tag).await?),
        },
        (None, None) => unreachable!("a reference has a tag or a digest"),
    };
    let top = manifest_blob(src, repo, &digest).await?;
    let mut manifests = Vec::new();
    let mut blobs = Vec::new();
    let doc = parse_document(&top).with_context(|| format!("manifest {digest}"))?;
    if let Document::Index(index) = &doc {
        if index.manifests().len() > MAX_CHILDREN {
            bail!(
                "index {digest} lists {} manifests, more than the {MAX_CHILDREN} s3dock copies",
                index.manifests().len()
            );
        }
        for child in index.manifests() {
            let d = our_digest(child.digest())?;
            let bytes = src.get_small_blob(&d).await?;
            check_size("manifest", &d, child.size(), bytes.len())?;
            let Document::Manifest(m) =
                parse_document(&bytes).with_context(|| format!("manifest {d}"))?
            else {
                bail!("index {digest} lists another index {d}: nested indexes are not supported");
            };
            blobs.push(manifest_blobs(&m)?);
            manifests.push((d, bytes));
        }
        blobs.push(Vec::new());
    } else if let Document::Manifest(m) = &doc {
        blobs.push(manifest_blobs(m)?);
    }
    manifests.push((digest, top));
    Ok(SourceImage {
        reference: r.clone(),
        digest,
        manifests,
        blobs,
    })
}

fn manifest_blobs(m: &oci_spec::image::ImageManifest) -> Result<Vec<(Digest, u64)>> {
    std::iter::once(m.config())
        .chain(m.layers())
        .map(|d| Ok((our_digest(d.digest())?, d.size())))
        .collect()
}

/// Copies the images `refs` names from `src` to `dst`, holding a gc lease on the target
/// throughout (see `registry::gclock`). Every reference is read and verified in the
/// source before anything is written.
pub async fn copy(
    src: &Registry,
    dst: &Registry,
    refs: &[Reference],
    resume: bool,
) -> Result<Vec<CopiedImage>> {
    let mut images = Vec::new();
    for r in refs {
        images.push(read_source(src, r).await?);
    }
    let lease = Lease::acquire(dst).await?;
    let mut out = Vec::new();
    let mut result = Ok(());
    let uploader = dst.uploader().resume(resume);
    for img in &images {
        match copy_image(src, dst, &uploader, img).await {
            Ok(c) => out.push(c),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    lease.release().await;
    result.map(|()| out)
}

enum BlobCopy {
    Skipped,
    ServerSide(u64),
    Streamed(UploadOutcome),
}

async fn copy_image(
    src: &Registry,
    dst: &Registry,
    uploader: &Uploader,
    img: &SourceImage,
) -> Result<CopiedImage> {
    let mut all: Vec<(Digest, u64)> = img.blobs.iter().flatten().copied().collect();
    all.sort();
    all.dedup();
    if let Some(w) = all.windows(2).find(|w| w[0].0 == w[1].0) {
        bail!(
            "{}: blob {} is listed with two sizes ({} and {})",
            img.reference,
            w[0].0,
            w[0].1,
            w[1].1
        );
    }
    let outcomes: Vec<BlobCopy> = futures::stream::iter(all.iter())
        .map(|(d, size)| copy_blob(src, dst, uploader, d, *size))
        // One blob at a time: its `jobs` reads and part uploads keep the link busy (blobs
        // at once, sharing a read limit, hung `copy --all`; cause not yet found).
        .buffered(1)
        .try_collect()
        .await?;
    let mut c = CopiedImage {
        reference: img.reference.to_string(),
        digest: Some(img.digest),
        manifests: img.manifests.len(),
        ..Default::default()
    };
    for o in &outcomes {
        match o {
            BlobCopy::Skipped => c.blobs_skipped += 1,
            BlobCopy::ServerSide(n) => {
                c.blobs_copied += 1;
                c.bytes_server_side += n;
            }
            BlobCopy::Streamed(u) => {
                c.blobs_copied += 1;
                c.bytes_streamed += u.uploaded;
                c.bytes_resumed += u.resumed;
            }
        }
    }
    c.bytes_copied = c.bytes_server_side + c.bytes_streamed;
    let server_side = outcomes
        .iter()
        .any(|o| matches!(o, BlobCopy::ServerSide(_)));
    let streamed = outcomes.iter().any(|o| matches!(o, BlobCopy::Streamed(_)));
    c.method = match (server_side, streamed) {
        (true, true) => "mixed",
        (true, false) => "server-side",
        (false, true) => "streamed",
        (false, false) => "none",
    };
    // Manifests (children before the index), then links: nothing is visible by tag yet.
    let repo = &img.reference.name;
    for ((d, bytes), blobs) in img.manifests.iter().zip(&img.blobs) {
        dst.put_small_blob(d, bytes.clone()).await?;
        for (b, _) in blobs {
            dst.link_layer(repo, b).await?;
        }
        dst.link_revision(repo, d).await?;
    }
    // The commit point: every blob and manifest is in the target with its size.
    for (d, size) in all
        .iter()
        .copied()
        .chain(img.manifests.iter().map(|(d, b)| (*d, b.len() as u64)))
    {
        match dst.blob_size(&d).await? {
            Some(n) if n == size => {}
            Some(n) => bail!(
                "blob {d} is {n} bytes in store {} after the copy, not {size}: copy again",
                dst.display
            ),
            None => bail!(
                "blob {d} vanished from store {} before {} was tagged (was gc run with a clock far off?): copy again",
                dst.display,
                img.reference
            ),
        }
    }
    if let Some(tag) = img
        .reference
        .tag
        .as_deref()
        .filter(|_| img.reference.digest.is_none())
    {
        c.previous = dst
            .set_tag(repo, tag, &img.digest)
            .await?
            .filter(|p| *p != img.digest);
    }
    Ok(c)
}

/// Copies one blob unless the target has it with this size: server-side if the stores
/// allow, else streamed and verified.
async fn copy_blob(
    src: &Registry,
    dst: &Registry,
    uploader: &Uploader,
    d: &Digest,
    size: u64,
) -> Result<BlobCopy> {
    match dst.blob_size(d).await? {
        Some(n) if n == size => return Ok(BlobCopy::Skipped),
        // Content-addressed: a blob of another size is damaged, and uploads skip existing keys.
        Some(n) => bail!(
            "blob {d} in store {} is {n} bytes, not {size}: it is damaged; delete {} there and copy again",
            dst.display,
            dst.layout().blob_data(d)
        ),
        None => {}
    }
    match src.blob_size(d).await? {
        Some(n) if n == size => {}
        Some(n) => bail!(
            "blob {d} is {n} bytes in store {} but its manifest says {size}",
            src.display
        ),
        None => bail!("blob {d} is missing from store {}", src.display),
    }
    if dst.copy_blob_from(src, d, size).await? {
        // S3 copied the bytes it holds; the size confirms it copied all of them.
        let n = dst.blob_size(d).await?;
        if n != Some(size) {
            bail!(
                "blob {d} is {n:?} bytes in store {} after a server-side copy, not {size}",
                dst.display
            );
        }
        return Ok(BlobCopy::ServerSide(size));
    }
    stream_blob(src, uploader, d, size)
        .await
        .map(BlobCopy::Streamed)
}

/// Streams a blob with ranged GETs (one part each, `jobs` in flight over all blobs) into
/// a multipart upload at its final key, which completes only once the sha256 of every
/// byte read matched `d`.
async fn stream_blob(
    src: &Registry,
    uploader: &Uploader,
    d: &Digest,
    size: u64,
) -> Result<UploadOutcome> {
    let key = src.layout().blob_data(d);
    let chunk = uploader.part_size_for(size) as u64;
    let mut upload = uploader.begin(Some(*d), None, size);
    let ranges = (0..size)
        .step_by(chunk as usize)
        .map(|s| (s, (size - s).min(chunk) as usize));
    let key = &key;
    // At most `jobs` chunks read and not yet handed to the upload.
    let mut chunks = futures::stream::iter(ranges)
        .map(|(off, len)| src.read_range(key, off, len))
        .buffered(src.jobs.max(1));
    let mut hasher = Hasher::new();
    while let Some(item) = chunks.next().await {
        let data = item?;
        tokio::task::block_in_place(|| {
            hasher.update(&data);
            upload.write(&data)
        })?;
    }
    let n = hasher.len();
    let actual = hasher.finish();
    if actual != *d || n != size {
        // Dropping the upload aborts it: nothing of this blob is stored.
        bail!(
            "blob {d} is corrupt in store {}: its {n} bytes hash to {actual}",
            src.display
        );
    }
    tokio::task::block_in_place(|| upload.finish(*d, size))?.await?
}
