//! `pull`: store → archive, of one image or a bundle of several (each blob once),
//! whole or as a delta that leaves out what the far side holds. Every blob is
//! verified against its digest and every layer against its diff_id on the way out.
//! Layers are written first and the metadata last, so an archive only becomes
//! loadable once everything checked out; on any failure the output ends without an
//! end-of-archive marker.

use crate::archive::{ArchiveEntryImage, ArchiveWriter, Format, OmittedBlob, Output};
use crate::codec::{Compression, DiffIdHasher, Plain, PlainSink};
use crate::model::digest::{Digest, Hasher};
use crate::model::image::{
    self, build_manifest_as, host_platform, layer_compression, our_digest, parse_document,
    select_platform, Config, Document, Layer,
};
use crate::model::reference::{familiar, Reference};
use crate::registry::Registry;
use crate::transfer::delta::Exclusions;
use crate::transfer::stats::{Progress, Stats};
use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use std::io::{Seek, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct PullOptions {
    pub format: Format,
    /// `RepoTags` for the output instead of the pulled reference.
    pub tag: Option<Reference>,
    /// `--platform`: picks from a multi-platform image (None: this host's) and must match
    /// a single-platform one.
    pub platform: Option<String>,
    /// Content-addressed cache of blobs already on this host.
    pub cache: Option<PathBuf>,
    /// Write layers as plain tars (needed for docker < 23 with zstd layers).
    pub decompress: bool,
    /// Layer blobs the far side holds: left out of the archive (a delta archive that
    /// only `s3dock push` reads), or with `loadable` taken from `cache`, never the store.
    pub exclude: Exclusions,
    pub loadable: bool,
    /// Keep a multi-platform index whole: the index, every platform's manifest, config
    /// and layers; `manifest.json` (docker format) names this host's image.
    pub all_platforms: bool,
}

/// A manifest resolved from the store, with its config and layers verified.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    pub manifest_digest: Digest,
    pub manifest: Bytes,
    pub media_type: String,
    pub config: Config,
    pub layers: Vec<Layer>,
}

/// Resolves a tag or digest to a verified manifest, config and layer list.
/// `platform` picks from an index (None: this host's) and must match a single image.
pub async fn resolve(
    store: &Registry,
    r: &Reference,
    platform: Option<&str>,
) -> Result<ResolvedImage> {
    let (digest, bytes) = target(store, r).await?;
    let doc = parse_document(&bytes).with_context(|| format!("manifest {digest}"))?;
    if let Document::Index(index) = &doc {
        let child = select_platform(index, platform.unwrap_or(&host_platform()))?;
        return resolve_child(store, r, &child).await;
    }
    let img = resolve_manifest(store, digest, bytes, doc).await?;
    if let Some(p) = platform {
        img.config.check_platform(p, &format!("image {r}"))?;
    }
    Ok(img)
}

/// A multi-platform index kept whole: its bytes, and every platform's image.
#[derive(Debug, Clone)]
pub struct ResolvedIndex {
    pub digest: Digest,
    pub bytes: Bytes,
    pub media_type: String,
    /// In the index's order; attestation manifests (`unknown/unknown`) left out.
    pub images: Vec<ResolvedImage>,
    /// Which of `images` a loader that takes one platform gets (this host's, else the first).
    pub default: usize,
}

/// What a reference names, with every platform.
#[derive(Debug, Clone)]
pub enum ResolvedTarget {
    Image(ResolvedImage),
    Index(ResolvedIndex),
}

impl ResolvedTarget {
    /// The image, or every platform's image of the index.
    pub fn images(&self) -> Vec<&ResolvedImage> {
        match self {
            ResolvedTarget::Image(img) => vec![img],
            ResolvedTarget::Index(idx) => idx.images.iter().collect(),
        }
    }
}

/// What a tag or digest names, with every platform: an index is resolved whole, a
/// single image as it is.
pub async fn resolve_all(store: &Registry, r: &Reference) -> Result<ResolvedTarget> {
    let (digest, bytes) = target(store, r).await?;
    let doc = parse_document(&bytes).with_context(|| format!("manifest {digest}"))?;
    let Document::Index(index) = doc else {
        return Ok(ResolvedTarget::Image(
            resolve_manifest(store, digest, bytes, doc).await?,
        ));
    };
    // The host's entry as a pull without --all-platforms would pick it.
    let host = select_platform(&index, &host_platform())
        .ok()
        .map(|d| our_digest(d.digest()))
        .transpose()?;
    let mut images = Vec::new();
    let mut default = None;
    for child in index.manifests() {
        if image::is_attestation(child) {
            continue;
        }
        let img = resolve_child(store, r, child).await?;
        if default.is_none() && host == Some(img.manifest_digest) {
            default = Some(images.len());
        }
        images.push(img);
    }
    if images.is_empty() {
        bail!("index {digest} of {r} lists no image");
    }
    let media_type = index
        .media_type()
        .as_ref()
        .map(|t| t.to_string())
        .unwrap_or_else(|| image::OCI_INDEX.to_string());
    Ok(ResolvedTarget::Index(ResolvedIndex {
        digest,
        bytes,
        media_type,
        images,
        default: default.unwrap_or(0),
    }))
}

/// The manifest `r` names (by tag or digest), from its repository.
async fn target(store: &Registry, r: &Reference) -> Result<(Digest, Bytes)> {
    let repo = &r.name;
    let digest = match (&r.digest, r.tag_or_latest()) {
        (Some(d), _) => *d,
        (None, Some(tag)) => match store.tag_target(repo, tag).await? {
            Some(d) => d,
            None => bail!("{}", not_found(store, r, tag).await?),
        },
        (None, None) => unreachable!("a reference has a tag or a digest"),
    };
    Ok((digest, manifest_blob(store, repo, &digest).await?))
}

/// The image an index entry of `r` names; its platform, when the entry gives one, must
/// be its config's.
async fn resolve_child(
    store: &Registry,
    r: &Reference,
    child: &oci_spec::image::Descriptor,
) -> Result<ResolvedImage> {
    let digest = our_digest(child.digest())?;
    let bytes = manifest_blob(store, &r.name, &digest).await?;
    check_size("manifest", &digest, child.size(), bytes.len())?;
    let doc = parse_document(&bytes).with_context(|| format!("manifest {digest}"))?;
    resolve_manifest(store, digest, bytes, doc).await
}

/// A manifest's config and layers, verified against it.
async fn resolve_manifest(
    store: &Registry,
    digest: Digest,
    bytes: Bytes,
    doc: Document,
) -> Result<ResolvedImage> {
    let Document::Manifest(m) = doc else {
        bail!("manifest {digest} is a nested index, which is not supported")
    };
    let media_type = m
        .media_type()
        .as_ref()
        .map(|t| t.to_string())
        .unwrap_or_else(|| image::OCI_MANIFEST.to_string());
    if m.layers().len() > MAX_LAYERS {
        bail!(
            "manifest {digest} lists {} layers, more than the {MAX_LAYERS} s3dock accepts (docker's overlay driver stops at 128)",
            m.layers().len()
        );
    }
    let config_digest = our_digest(m.config().digest())?;
    let config_bytes = store.get_small_blob(&config_digest).await?;
    check_size(
        "config",
        &config_digest,
        m.config().size(),
        config_bytes.len(),
    )?;
    let config = Config::parse(config_bytes)?;
    if config.diff_ids.len() != m.layers().len() {
        bail!(
            "manifest {digest} has {} layers but its config lists {} diff_ids",
            m.layers().len(),
            config.diff_ids.len()
        );
    }
    let layers = m
        .layers()
        .iter()
        .zip(&config.diff_ids)
        .map(|(l, diff_id)| {
            Ok(Layer {
                digest: our_digest(l.digest())?,
                size: l.size(),
                compression: layer_compression(l.media_type().as_ref())?,
                diff_id: *diff_id,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    check_layers(&digest, &layers)?;
    Ok(ResolvedImage {
        manifest_digest: digest,
        manifest: bytes,
        media_type,
        config,
        layers,
    })
}

/// Repositories looked at for a `did you mean`; more are not listed.
const NEARBY_REPOSITORIES: usize = 10_000;

/// Why `r` (tag `tag`) is not in the store, naming the nearest tag or repository it holds:
/// `image ghcr.io/acme/web:1.3 not found in store s3://b; did you mean ghcr.io/acme/web:1.2?`
pub(crate) async fn not_found(store: &Registry, r: &Reference, tag: &str) -> Result<String> {
    let closest = |want: &str, have: &[String]| -> Option<String> {
        have.iter()
            .map(|h| (strsim::normalized_levenshtein(want, h), h))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, h)| h.clone())
    };
    let head = format!(
        "image {} not found in store {}",
        Reference::with_tag(&r.name, tag),
        store.display
    );
    // A store that cannot list (http) knows only that this tag is absent.
    let Ok(tags) = store.tags(&r.name).await else {
        return Ok(head);
    };
    if let Some(best) = closest(tag, &tags) {
        let shown: Vec<&str> = tags.iter().take(20).map(String::as_str).collect();
        let more = if tags.len() > shown.len() {
            ", ..."
        } else {
            ""
        };
        return Ok(format!(
            "{head}; did you mean {}? (its tags: {}{more})",
            Reference::with_tag(&r.name, &best),
            shown.join(", ")
        ));
    }
    // Another repository: the same name under another host or path comes first, then the
    // closest spelling, if it is at least half right.
    let want = familiar(&r.name);
    let last = |n: &str| n.rsplit('/').next().unwrap_or_default().to_string();
    let repos = store.repositories(NEARBY_REPOSITORIES).await?;
    let best = repos
        .iter()
        .map(|repo| {
            let name = familiar(repo);
            let score = strsim::normalized_levenshtein(&want, &name);
            ((last(&name) == last(&want), score), repo)
        })
        .filter(|((same_last, score), _)| *same_last || *score >= 0.5)
        .max_by(|a, b| a.0 .0.cmp(&b.0 .0).then(a.0 .1.total_cmp(&b.0 .1)))
        .map(|(_, repo)| repo.clone());
    let Some(repo) = best else {
        return Ok(if repos.is_empty() {
            format!("{head}: the store holds no images")
        } else {
            format!("{head}, nor anything named like it (s3dock list shows what is there)")
        });
    };
    let tags = store.tags(&repo).await?;
    let tag = if tags.iter().any(|t| t == tag) {
        tag.to_string()
    } else {
        closest(tag, &tags).unwrap_or_else(|| tag.to_string())
    };
    Ok(format!(
        "{head}; did you mean {}?",
        Reference::with_tag(&repo, &tag)
    ))
}

/// Layers per manifest a pull accepts. Each layer costs a store request and a tar entry;
/// docker's overlay driver refuses more than 128, but manifests may legally list more.
pub const MAX_LAYERS: usize = 1000;

/// A descriptor's size must be the blob's: docker and registries refuse the mismatch.
pub(crate) fn check_size(what: &str, d: &Digest, declared: u64, actual: usize) -> Result<()> {
    if declared != actual as u64 {
        bail!("{what} {d} is {actual} bytes but its descriptor says {declared}");
    }
    Ok(())
}

/// What the layer stream cannot show: an uncompressed layer's diff_id is its digest, and a
/// layer listed twice must have the same diff_id at both positions (it is fetched once).
fn check_layers(manifest: &Digest, layers: &[Layer]) -> Result<()> {
    let mut seen = std::collections::HashMap::new();
    for (i, l) in layers.iter().enumerate() {
        if l.compression == Compression::None && l.diff_id != l.digest {
            bail!(
                "manifest {manifest}: uncompressed layer {} has diff_id {} in the config (must be equal)",
                l.digest,
                l.diff_id
            );
        }
        if let Some((j, diff_id)) = seen.insert(l.digest, (i, l.diff_id)) {
            if diff_id != l.diff_id {
                bail!(
                    "manifest {manifest}: layer {} appears at positions {j} and {i} with different diff_ids in the config",
                    l.digest
                );
            }
        }
    }
    Ok(())
}

pub(crate) async fn manifest_blob(store: &Registry, repo: &str, d: &Digest) -> Result<Bytes> {
    if !store.has_revision(repo, d).await? {
        bail!(
            "manifest {d} is not in repository {repo} of store {}",
            store.display
        );
    }
    store.get_small_blob(d).await
}

enum Cmd {
    Delta(Vec<OmittedBlob>),
    Begin(Digest, u64),
    /// A blob whose size `EndUnsized` gives (the output takes unsized blobs).
    BeginUnsized(Digest),
    Data(Bytes),
    End(u64),
    EndUnsized(u64),
    Metadata(Vec<ArchiveEntryImage>, Vec<(Digest, Bytes)>, Format),
}

/// One image of a pulled archive.
#[derive(Debug, serde::Serialize)]
pub struct PulledImage {
    pub reference: String,
    /// The index's digest when `platforms` is set.
    pub manifest_digest: Digest,
    /// Of the image a one-platform loader takes, for an index.
    pub config_digest: Digest,
    pub layers: usize,
    /// `--all-platforms` of a multi-platform image: how many platforms the index holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platforms: Option<usize>,
}

/// What a pull wrote.
#[derive(Debug, serde::Serialize)]
pub struct PullReport {
    /// One per reference pulled, in order.
    pub images: Vec<PulledImage>,
    /// Distinct layer blobs written: a blob several images share counts once.
    pub layers_written: usize,
    pub bytes_written: u64,
    /// Layer blobs a delta archive leaves out, and their bytes (0 for a full archive).
    pub layers_omitted: usize,
    pub bytes_omitted: u64,
}

/// Where a layer's bytes come from, and where they go in the cache.
struct Plan<'a> {
    layer: &'a Layer,
    /// A verified copy in the cache, or the store's key.
    source: Source,
    /// Cache file to fill while downloading (kept only once the digest checks out).
    fill: Option<PathBuf>,
}

enum Source {
    Cache(PathBuf),
    Store(String),
}

/// Where layers may come from: the cache, and which must come from it (`--loadable`).
struct Sources<'a> {
    cache: Option<&'a PathBuf>,
    cache_only: Option<&'a Exclusions>,
}

impl<'a> Plan<'a> {
    async fn new(store: &Registry, sources: &Sources<'_>, layer: &'a Layer) -> Result<Plan<'a>> {
        let cached = sources
            .cache
            .map(|c| c.join("blobs/sha256").join(layer.digest.hex()));
        if let Some(path) = cached.as_ref().filter(|p| p.is_file()) {
            return Ok(Plan {
                layer,
                source: Source::Cache(path.clone()),
                fill: None,
            });
        }
        if let Some(ex) = sources.cache_only.filter(|e| e.contains(&layer.digest)) {
            let (of, image) = match ex.source(&layer.digest) {
                Some(r) => (format!(" (a layer of {r})"), r.to_string()),
                None => (String::new(), "the image that has it".to_string()),
            };
            match sources.cache {
                Some(c) => bail!(
                    "blob {}{of} is not in the cache {}: pull {image} with this --cache first, or leave out --loadable",
                    layer.digest,
                    c.display()
                ),
                None => bail!("--loadable takes the excluded layers from the cache: name it with --cache DIR"),
            }
        }
        let key = store.layout().blob_data(&layer.digest);
        let size = store
            .object_size(&key)
            .await?
            .ok_or_else(|| anyhow!("blob {} is missing from the store", layer.digest))?;
        if size != layer.size {
            bail!(
                "blob {} is {size} bytes in the store but the manifest says {}",
                layer.digest,
                layer.size
            );
        }
        Ok(Plan {
            layer,
            source: Source::Store(key),
            fill: cached,
        })
    }

    /// (offset, length) of each chunk; one empty chunk for an empty blob.
    fn chunks(&self, chunk: u64) -> Vec<(u64, usize)> {
        let size = self.layer.size;
        if size == 0 {
            return vec![(0, 0)];
        }
        (0..size)
            .step_by(chunk as usize)
            .map(|s| (s, (size - s).min(chunk) as usize))
            .collect()
    }

    async fn read(&self, store: &Registry, offset: u64, len: usize) -> Result<Bytes> {
        match &self.source {
            Source::Store(key) => store.read_range(key, offset, len).await,
            Source::Cache(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || -> Result<Bytes> {
                    use std::os::unix::fs::FileExt;
                    let mut buf = vec![0u8; len];
                    std::fs::File::open(&path)?.read_exact_at(&mut buf, offset)?;
                    Ok(buf.into())
                })
                .await?
            }
        }
    }
}

/// A layer being received: its digest check and cache copy (on one thread), its
/// diff_id check (on two more, see `DiffIdHasher`), all off the downloading thread.
struct Receiving {
    tx: Option<std::sync::mpsc::SyncSender<Bytes>>,
    blob: std::thread::JoinHandle<Result<(Hasher, Option<tempfile::NamedTempFile>)>>,
    diff: Option<DiffIdHasher>,
}

/// A received layer whose checks are still running.
struct Received {
    blob: std::thread::JoinHandle<Result<(Hasher, Option<tempfile::NamedTempFile>)>>,
    diff: Option<DiffIdHasher>,
}

impl Receiving {
    fn new(plan: &Plan, decompress_to: Option<Plain>) -> Result<Self> {
        let c = plan.layer.compression;
        // An uncompressed layer's diff_id is its digest, checked anyway.
        let diff = (c != Compression::None || decompress_to.is_some())
            .then(|| DiffIdHasher::with_output(c, decompress_to));
        let mut fill = match &plan.fill {
            Some(p) => {
                let dir = p.parent().expect("cache path has a parent");
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create cache dir {}", dir.display()))?;
                Some(tempfile::NamedTempFile::new_in(dir)?)
            }
            None => None,
        };
        let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(2);
        let blob = std::thread::Builder::new()
            .name("blob-hash".into())
            .spawn(move || {
                let mut hasher = Hasher::new();
                for data in rx.iter() {
                    hasher.update(&data);
                    if let Some(f) = &mut fill {
                        f.write_all(&data)?;
                    }
                }
                Ok((hasher, fill))
            })?;
        Ok(Receiving {
            tx: Some(tx),
            blob,
            diff,
        })
    }

    fn feed(&mut self, data: &Bytes) {
        // A hashing thread that stopped (cache write failed) reports why in `check`.
        let _ = self.tx.as_ref().expect("not finished").send(data.clone());
        if let Some(d) = &self.diff {
            d.feed(data.clone());
        }
    }

    /// Every byte is in; the checks finish on their threads.
    fn done(mut self) -> Received {
        self.tx.take();
        if let Some(d) = &mut self.diff {
            d.close();
        }
        Received {
            blob: self.blob,
            diff: self.diff,
        }
    }
}

impl Received {
    /// Checks the digest and keeps the cache copy; returns the diff_id check to finish.
    fn check(self, plan: &Plan) -> Result<Option<DiffIdHasher>> {
        let where_ = if matches!(plan.source, Source::Cache(_)) {
            "in the cache"
        } else {
            "in the store"
        };
        let (hasher, fill) = self
            .blob
            .join()
            .map_err(|_| anyhow!("blob hashing thread panicked"))??;
        check(plan.layer, hasher, where_)?;
        if let (Some(f), Some(p)) = (fill, &plan.fill) {
            f.persist(p)
                .with_context(|| format!("cannot write cache file {}", p.display()))?;
        }
        Ok(self.diff)
    }
}

/// Downloads `layers` in order with `jobs` ranged GETs always in flight — across layer
/// boundaries, so the pipe never drains between layers. `each(i, chunk, last)` sees every
/// chunk of layer `i` in order, `last` on its last. Digests are checked on other threads
/// while the download goes on; `checked(i, diff)` gets each layer, in order, once its digest
/// checked out, with its diff_id check still running. At most `jobs` received layers wait
/// for their checks (each holds threads and buffers), so memory and threads stay bounded
/// whatever the number of layers.
async fn fetch_layers(
    store: &Registry,
    sources: &Sources<'_>,
    layers: &[&Layer],
    stats: &Stats,
    mut plain: impl FnMut(usize) -> Result<Option<Plain>>,
    mut each: impl FnMut(usize, Bytes, bool) -> Result<()>,
    mut checked: impl FnMut(usize, Option<DiffIdHasher>) -> Result<()>,
) -> Result<()> {
    // One HEAD per layer, several at once: many small layers do not wait on each in turn.
    let plans: Vec<Plan> = futures::stream::iter(layers)
        .map(|l| Plan::new(store, sources, l))
        .buffered(super::SMALL_REQUESTS)
        .try_collect()
        .await?;
    let work: Vec<(usize, u64, usize, bool)> = plans
        .iter()
        .enumerate()
        .flat_map(|(i, p)| {
            let chunks = p.chunks(store.part_size);
            let last = chunks.len() - 1;
            chunks
                .into_iter()
                .enumerate()
                .map(move |(k, (off, len))| (i, off, len, k == last))
        })
        .collect();
    let plans_ref = &plans;
    let mut stream = futures::stream::iter(work)
        .map(|(i, off, len, last)| async move {
            Ok::<_, anyhow::Error>((i, last, plans_ref[i].read(store, off, len).await?))
        })
        .buffered(store.jobs);
    let mut current: Option<(usize, Receiving)> = None;
    let mut received = std::collections::VecDeque::new();
    let window = store.jobs.max(1);
    while let Some(item) = stream.next().await {
        let (i, last, data) = item?;
        if current.as_ref().is_none_or(|(c, _)| *c != i) {
            current = Some((i, Receiving::new(&plans[i], plain(i)?)?));
        }
        let (_, rx) = current.as_mut().expect("set above");
        if matches!(plans[i].source, Source::Store(_)) {
            stats
                .bytes_downloaded
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        rx.feed(&data);
        each(i, data, last)?;
        if last {
            let (_, rx) = current.take().expect("set above");
            received.push_back((i, rx.done()));
            while received.len() > window {
                let (i, r) = received.pop_front().expect("non-empty");
                let diff = tokio::task::block_in_place(|| r.check(&plans[i]))?;
                checked(i, diff)?;
            }
        }
    }
    for (i, r) in received {
        let diff = tokio::task::block_in_place(|| r.check(&plans[i]))?;
        checked(i, diff)?;
    }
    Ok(())
}

fn check(layer: &Layer, h: Hasher, where_: &str) -> Result<()> {
    let size = h.len();
    let actual = h.finish();
    if actual != layer.digest || size != layer.size {
        bail!(
            "blob {} is corrupt {where_}: its {size} bytes hash to {actual}",
            layer.digest
        );
    }
    Ok(())
}

/// Pulls the images `refs` name into one archive written to `out`: each blob once, an
/// entry and its tags per image (what `docker save A B` writes). Layers the far side
/// holds (`opts.exclude`) are left out, which makes a delta archive, or with
/// `opts.loadable` come from the cache. Memory is bounded as for one image: the
/// layers of every image stream through one window of `--jobs` GETs.
pub async fn pull<W: Output>(
    store: &Registry,
    refs: &[Reference],
    out: W,
    opts: &PullOptions,
    stats: Arc<Stats>,
    show_progress: bool,
) -> Result<(PullReport, W)> {
    if refs.is_empty() {
        bail!("nothing to pull: name at least one image");
    }
    if opts.tag.is_some() && refs.len() > 1 {
        bail!("--tag renames the one image of an archive; a bundle of {} images keeps each image's own tag", refs.len());
    }
    let delta = !opts.exclude.is_empty() && !opts.loadable;
    if delta && opts.decompress {
        bail!("a delta archive keeps layers as stored: drop --decompress, or add --loadable (with --cache) for a full archive");
    }
    if opts.all_platforms && opts.platform.is_some() {
        bail!("--all-platforms keeps every platform of an image: drop --platform");
    }
    if opts.all_platforms && opts.decompress {
        bail!("--all-platforms keeps the stored index and its manifests, so layers as stored: drop --decompress");
    }
    let mut items = Vec::with_capacity(refs.len());
    for r in refs {
        items.push(if opts.all_platforms {
            resolve_all(store, r).await?
        } else {
            ResolvedTarget::Image(resolve(store, r, opts.platform.as_deref()).await?)
        });
    }
    // A layer several images list is fetched, checked and written once; its diff_id
    // is checked against the first config that lists it, so all must agree.
    let mut diff_ids = std::collections::HashMap::new();
    let mut distinct: Vec<&Layer> = Vec::new();
    for (r, item) in refs.iter().zip(&items) {
        for l in item.images().into_iter().flat_map(|img| &img.layers) {
            match diff_ids.insert(l.digest, l.diff_id) {
                None => distinct.push(l),
                Some(d) if d != l.diff_id => bail!(
                    "layer {} has diff_id {d} in one image's config and {} in {r}'s: the store is inconsistent",
                    l.digest,
                    l.diff_id
                ),
                Some(_) => {}
            }
        }
    }
    let (omitted, fetched): (Vec<&Layer>, Vec<&Layer>) = distinct
        .into_iter()
        .partition(|l| delta && opts.exclude.contains(&l.digest));
    let omitted: Vec<OmittedBlob> = omitted
        .iter()
        .map(|l| OmittedBlob {
            digest: l.digest,
            size: l.size,
            from: opts.exclude.source(&l.digest).map(str::to_string),
        })
        .collect();
    let total: u64 = fetched.iter().map(|l| l.size).sum();
    let progress = Progress::new(show_progress, Some(total), "pulling");
    // Small bounds: memory is the GETs in flight plus a few chunks, whatever the image size.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Cmd>(2);
    let w = ArchiveWriter::new(out);
    let takes_unsized = w.takes_unsized();
    let writer = tokio::task::spawn_blocking(move || -> Result<(W, u64, bool)> {
        let mut w = w;
        while let Ok(cmd) = rx.recv() {
            match cmd {
                Cmd::Delta(omitted) => w.delta_record(&omitted)?,
                Cmd::Begin(d, size) => w.begin_blob(&d, size)?,
                Cmd::BeginUnsized(d) => w.begin_blob_unsized(&d)?,
                Cmd::Data(b) => w.write(&b)?,
                Cmd::End(size) => w.end_file(size)?,
                Cmd::EndUnsized(size) => w.end_blob_unsized(size)?,
                Cmd::Metadata(images, configs, format) => {
                    w.metadata(format, &images, &configs)?;
                    let n = w.written() + 1024;
                    return Ok((w.finish()?, n, true));
                }
            }
        }
        // Ended without metadata: something failed; leave the archive unterminated.
        Ok((w.abandon(), 0, false))
    });
    let mut result = Ok(Default::default());
    if !omitted.is_empty() {
        result = send(&tx, Cmd::Delta(omitted.clone())).map(|_| Default::default());
    }
    if result.is_ok() {
        result = write_layers(store, &fetched, opts, &tx, takes_unsized, &stats, &progress).await;
    }
    progress.finish();
    let written = match result {
        Ok(l) => l,
        Err(e) => {
            drop(tx);
            let _ = writer.await;
            return Err(e);
        }
    };
    let mut entries: Vec<ArchiveEntryImage> = Vec::new();
    // Configs, and the manifests of an index's images: small blobs, each written once.
    let mut small: Vec<(Digest, Bytes)> = Vec::new();
    let mut add_small = |d: Digest, b: &Bytes| {
        if !small.iter().any(|(x, _)| *x == d) {
            small.push((d, b.clone()));
        }
    };
    let mut pulled = Vec::new();
    for (r, item) in refs.iter().zip(&items) {
        // The report names the image by its stored digest, whatever the archive rewrote.
        let (entry, img, platforms, stored) = match item {
            ResolvedTarget::Image(img) => {
                // Layers as written (decompressed or not); a left-out layer as stored.
                let out_layers: Vec<Layer> = img
                    .layers
                    .iter()
                    .map(|l| written.get(&l.digest).unwrap_or(l).clone())
                    .collect();
                let entry = archive_entry(img, &out_layers, opts, r)?;
                (entry, img, None, img.manifest_digest)
            }
            ResolvedTarget::Index(idx) => {
                for child in &idx.images {
                    add_small(child.manifest_digest, &child.manifest);
                    add_small(child.config.digest, &child.config.bytes);
                }
                (
                    index_entry(idx, opts, r),
                    &idx.images[idx.default],
                    Some(idx.images.len()),
                    idx.digest,
                )
            }
        };
        pulled.push(PulledImage {
            reference: r.to_string(),
            manifest_digest: stored,
            config_digest: img.config.digest,
            layers: img.layers.len(),
            platforms,
        });
        add_small(img.config.digest, &img.config.bytes);
        match entries
            .iter_mut()
            .find(|e| e.manifest_digest == entry.manifest_digest)
        {
            // The same image by two references: one entry with both tags.
            Some(e) => {
                for t in entry.repo_tags {
                    if !e.repo_tags.contains(&t) {
                        e.repo_tags.push(t);
                    }
                }
            }
            None => entries.push(entry),
        }
    }
    let configs = small;
    send(&tx, Cmd::Metadata(entries, configs, opts.format))?;
    drop(tx);
    let (w, bytes_written, finished) = writer.await??;
    if !finished {
        bail!("archive writer stopped early");
    }
    let report = PullReport {
        images: pulled,
        layers_written: fetched.len(),
        bytes_written,
        layers_omitted: omitted.len(),
        bytes_omitted: omitted.iter().map(|o| o.size).sum(),
    };
    Ok((report, w))
}

/// Hands a command to the archive writer, which applies back-pressure: the runtime is
/// told this thread may block (off the runtime, on a layer's hashing thread, it just sends).
fn send(tx: &std::sync::mpsc::SyncSender<Cmd>, cmd: Cmd) -> Result<()> {
    tokio::task::block_in_place(|| tx.send(cmd))
        .map_err(|_| anyhow!("archive writer stopped (output closed?)"))
}

/// How `img` (pulled as `r`, its layers written as `out_layers`) goes into the archive:
/// its stored manifest when the archive keeps it, else one built for what was written.
fn archive_entry(
    img: &ResolvedImage,
    out_layers: &[Layer],
    opts: &PullOptions,
    r: &Reference,
) -> Result<ArchiveEntryImage> {
    let oci = opts.format == Format::Oci;
    let keep_stored = !opts.decompress && (!oci || img.media_type == image::OCI_MANIFEST);
    let (manifest, media_type) = if keep_stored {
        (img.manifest.clone(), img.media_type.clone())
    } else {
        let oci_types = oci
            || out_layers
                .iter()
                .any(|l| l.compression == Compression::Zstd);
        let m = build_manifest_as(&img.config, out_layers, oci_types)?;
        (
            m,
            if oci_types {
                image::OCI_MANIFEST
            } else {
                image::DOCKER_MANIFEST
            }
            .to_string(),
        )
    };
    Ok(ArchiveEntryImage {
        repo_tags: repo_tags(opts, r),
        manifest_digest: Digest::of(&manifest),
        manifest,
        manifest_media_type: media_type,
        config_digest: img.config.digest,
        layer_digests: out_layers.iter().map(|l| l.digest).collect(),
        top_diff_id: img.config.diff_ids.last().copied(),
    })
}

/// A multi-platform index as it goes into the archive: stored bytes, listed in
/// `index.json`; `manifest.json` names its default image.
fn index_entry(idx: &ResolvedIndex, opts: &PullOptions, r: &Reference) -> ArchiveEntryImage {
    let img = &idx.images[idx.default];
    ArchiveEntryImage {
        repo_tags: repo_tags(opts, r),
        manifest: idx.bytes.clone(),
        manifest_digest: idx.digest,
        manifest_media_type: idx.media_type.clone(),
        config_digest: img.config.digest,
        layer_digests: img.layers.iter().map(|l| l.digest).collect(),
        top_diff_id: img.config.diff_ids.last().copied(),
    }
}

/// `RepoTags` as docker names them (`localhost:5000/team/api:1`), so `docker load` tags
/// the image exactly as it was saved or as --tag says.
fn repo_tags(opts: &PullOptions, r: &Reference) -> Vec<String> {
    match (&opts.tag, r.tag_or_latest()) {
        (Some(t), _) => {
            vec![Reference::with_tag(&t.name, t.tag_or_latest().unwrap_or("latest")).to_string()]
        }
        (None, Some(tag)) => vec![Reference::with_tag(&r.name, tag).to_string()],
        (None, None) => vec![],
    }
}

/// Sends `layers` (distinct) to the writer; returns, by stored digest, each layer that
/// was written otherwise than stored (decompressed).
async fn write_layers(
    store: &Registry,
    layers: &[&Layer],
    opts: &PullOptions,
    tx: &std::sync::mpsc::SyncSender<Cmd>,
    takes_unsized: bool,
    stats: &Stats,
    progress: &Progress,
) -> Result<std::collections::HashMap<Digest, Layer>> {
    let sources = Sources {
        cache: opts.cache.as_ref(),
        cache_only: opts.loadable.then_some(&opts.exclude),
    };
    let mut plain: std::collections::HashMap<Digest, Layer> = std::collections::HashMap::new();
    if opts.decompress {
        // A plain layer's size is known only once it is decompressed: a regular file
        // takes it straight in (header fixed afterwards), a pipe gets it from a spool.
        let turns = Arc::new(Turns::default());
        fetch_layers(
            store,
            &sources,
            layers,
            stats,
            |i| {
                Ok(Some(if takes_unsized {
                    Plain::Stream(Box::new(InOrder {
                        i,
                        diff_id: layers[i].diff_id,
                        tx: tx.clone(),
                        turns: turns.clone(),
                        begun: false,
                        ended: false,
                    }))
                } else {
                    Plain::Spool(tempfile::tempfile()?)
                }))
            },
            |_, b, _| {
                progress.inc(b.len() as u64);
                Ok(())
            },
            |i, diff| {
                let layer = layers[i];
                let out = tokio::task::block_in_place(|| {
                    diff.expect("a decompressing check").finish_spooled()
                })?;
                verify_diff_id(layer, &out.diff_id)?;
                if let Some(mut spool) = out.spool {
                    spool.rewind()?;
                    send(tx, Cmd::Begin(out.diff_id, out.size))?;
                    let mut buf = vec![0u8; 1 << 20];
                    loop {
                        let n = crate::codec::read_full(&mut spool, &mut buf)?;
                        if n == 0 {
                            break;
                        }
                        send(tx, Cmd::Data(Bytes::copy_from_slice(&buf[..n])))?;
                    }
                    send(tx, Cmd::End(out.size))?;
                }
                let l = Layer {
                    digest: out.diff_id,
                    size: out.size,
                    compression: Compression::None,
                    diff_id: out.diff_id,
                };
                plain.insert(layer.digest, l);
                Ok(())
            },
        )
        .await?;
        return Ok(plain);
    }
    let mut started = None;
    // diff_ids are checked before the metadata goes out, so the archive never becomes
    // loadable with a layer that does not match its config.
    fetch_layers(
        store,
        &sources,
        layers,
        stats,
        |_| Ok(None),
        |i, b, last| {
            if started != Some(i) {
                send(tx, Cmd::Begin(layers[i].digest, layers[i].size))?;
                started = Some(i);
            }
            progress.inc(b.len() as u64);
            send(tx, Cmd::Data(b))?;
            if last {
                send(tx, Cmd::End(layers[i].size))?;
            }
            Ok(())
        },
        |i, diff| match diff {
            Some(d) => verify_diff_id(layers[i], &tokio::task::block_in_place(|| d.finish())?),
            None => Ok(()),
        },
    )
    .await?;
    Ok(plain)
}

/// Layer `i`'s decompressed bytes on their way into the archive, from its hashing
/// thread: layers are decompressed concurrently but written one after another, so each
/// waits for its turn (every earlier layer ended) before its first byte. It is named by
/// the config's diff_id, which the pull checks before the archive gets its metadata.
struct InOrder {
    i: usize,
    diff_id: Digest,
    tx: std::sync::mpsc::SyncSender<Cmd>,
    turns: Arc<Turns>,
    begun: bool,
    ended: bool,
}

impl InOrder {
    fn begin(&mut self) -> Result<()> {
        if !self.begun {
            self.turns.wait(self.i)?;
            self.begun = true;
            send(&self.tx, Cmd::BeginUnsized(self.diff_id))?;
        }
        Ok(())
    }
}

impl PlainSink for InOrder {
    fn write(&mut self, data: &[u8]) -> Result<()> {
        self.begin()?;
        send(&self.tx, Cmd::Data(Bytes::copy_from_slice(data)))
    }

    fn end(&mut self, size: u64) -> Result<()> {
        self.begin()?;
        send(&self.tx, Cmd::EndUnsized(size))?;
        self.ended = true;
        self.turns.pass(self.i, true);
        Ok(())
    }
}

impl Drop for InOrder {
    /// A layer that failed half-way still passes the turn on, marked failed, so that
    /// no later layer waits for it forever.
    fn drop(&mut self) {
        if !self.ended {
            self.turns.pass(self.i, false);
        }
    }
}

/// Whose turn it is to write, and whether an earlier layer failed.
#[derive(Default)]
struct Turns {
    state: std::sync::Mutex<(usize, bool)>,
    changed: std::sync::Condvar,
}

impl Turns {
    fn wait(&self, i: usize) -> Result<()> {
        let mut st = self.state.lock().expect("turns lock");
        while st.0 < i && !st.1 {
            st = self.changed.wait(st).expect("turns lock");
        }
        if st.1 {
            bail!("an earlier layer failed");
        }
        Ok(())
    }

    fn pass(&self, i: usize, ok: bool) {
        let mut st = self.state.lock().expect("turns lock");
        st.0 = st.0.max(i + 1);
        st.1 |= !ok;
        self.changed.notify_all();
    }
}

fn verify_diff_id(layer: &Layer, actual: &Digest) -> Result<()> {
    if *actual != layer.diff_id {
        bail!(
            "layer {} decompresses to diff_id {actual}, but the image config says {}",
            layer.digest,
            layer.diff_id
        );
    }
    Ok(())
}
