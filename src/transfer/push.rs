//! `push`: archive → store. Layers are hashed, compressed and uploaded while the
//! archive streams in (see `archive::read`); the tag is written only after every
//! blob and the manifest are stored and verified.

use crate::archive::{
    read_archive_for, ArchiveImage, LayerEntry, LayerSink, OmittedBlob, Platforms, SunkLayer,
};
use crate::codec::{copy_large, Compression, Level, PushCompression, SinkGauge};
use crate::model::digest::{Digest, Hasher};
use crate::model::image::{
    build_index, build_manifest, host_platform, oci_digest, our_digest, parse_document, Config,
    Document, Layer,
};
use crate::model::reference::Reference;
use crate::registry::gclock::Lease;
use crate::registry::{BlobUpload, PendingUpload, Registry, UploadOutcome, Uploader};
use crate::transfer::ingest;
use crate::transfer::stats::{Progress, Stats};
use anyhow::{anyhow, bail, Result};
use bytes::Bytes;
use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub struct PushOptions {
    pub compression: PushCompression,
    /// The level, or with `auto` the level to start from.
    pub level: Option<i32>,
    /// `--platform`: picks from an archive's multi-platform index (None: this host's) and
    /// must match every image pushed.
    pub platform: Option<String>,
    /// Use the store's diff_id index to skip compressing layers it already holds.
    pub use_index: bool,
    /// Continue multipart uploads that interrupted pushes left open.
    pub resume: bool,
    /// Push a multi-platform index whole (every platform's image, then the index under
    /// the tag) instead of picking one platform.
    pub all_platforms: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PushedImage {
    pub reference: String,
    pub manifest_digest: Digest,
    pub config_digest: Digest,
    pub layers: Vec<Layer>,
    /// What the tag pointed to before, when it moved.
    pub previous: Option<Digest>,
    /// `os/arch[/variant]` of the image (None for a multi-platform index).
    pub platform: Option<String>,
    /// For a multi-platform index (`manifest_digest`): each platform's image; `config_digest`
    /// is then the first one's and `layers` all of theirs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<PushedImage>,
}

/// Index record: the stored blob for a (diff_id, compression) pair.
#[derive(serde::Serialize, serde::Deserialize)]
struct IndexRecord {
    digest: Digest,
    size: u64,
}

struct PushSink {
    store: Registry,
    uploader: Uploader,
    rt: tokio::runtime::Handle,
    opts: PushOptions,
    stats: Arc<Stats>,
    progress: Progress,
    /// Each new layer's upload, followed by its index entries.
    pending: Vec<JoinHandle<Result<Option<UploadOutcome>>>>,
    /// Where `--compression auto` left the level: the next layer starts there, as the link
    /// and the CPU are the same ones.
    auto_level: Option<i32>,
}

/// Where a layer's output bytes go: uploaded, unless the blob exists (then dropped).
struct Output(Option<BlobUpload>);

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(u) = &mut self.0 {
            u.write(buf).map_err(std::io::Error::other)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl PushSink {
    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// A stored blob for this diff_id and compression, per the index and confirmed by the store.
    fn indexed(&self, diff_id: &Digest, c: Compression) -> Result<Option<Layer>> {
        if !self.opts.use_index {
            return Ok(None);
        }
        if c == Compression::None {
            return Ok(self
                .block_on(self.store.blob_size(diff_id))?
                .map(|size| Layer {
                    digest: *diff_id,
                    size,
                    compression: c,
                    diff_id: *diff_id,
                }));
        }
        let key = self.store.layout().diffid_index(diff_id, c.name());
        let Some(rec) = self
            .block_on(self.store.get_json::<IndexRecord>(&key))
            .ok()
            .flatten()
        else {
            return Ok(None);
        };
        match self.block_on(self.store.blob_size(&rec.digest))? {
            Some(size) if size == rec.size => Ok(Some(Layer {
                digest: rec.digest,
                size,
                compression: c,
                diff_id: *diff_id,
            })),
            _ => Ok(None),
        }
    }

    fn v1_hint(&self, v1_id: &str) -> Option<Digest> {
        if !self.opts.use_index {
            return None;
        }
        self.block_on(
            self.store
                .get_json::<Digest>(&self.store.layout().v1id_index(v1_id)),
        )
        .ok()
        .flatten()
    }

    /// `group` names the output when its digest is not known up front (see `Layout::temp`).
    fn begin(
        &self,
        known: Option<Digest>,
        group: Option<String>,
        size_hint: u64,
    ) -> Result<Option<BlobUpload>> {
        if let Some(d) = known {
            if self.block_on(self.store.blob_size(&d))?.is_some() {
                return Ok(None);
            }
        }
        Ok(Some(self.uploader.begin(known, group, size_hint)))
    }

    /// Ends a layer's output; the upload, if any, completes in the background.
    fn finish(&mut self, out: Output, layer: &Layer) -> Result<Option<PendingUpload>> {
        Ok(match out.0 {
            Some(u) => Some(u.finish(layer.digest, layer.size)?),
            None => {
                self.stats.blobs_skipped.fetch_add(1, Ordering::Relaxed);
                None
            }
        })
    }

    /// Once the layer is stored, records it in the index at once, so that even a push
    /// killed later lets the next one skip this layer.
    fn remember(&mut self, layer: &Layer, v1_id: Option<&str>, upload: Option<PendingUpload>) {
        let (store, layer, v1_id) = (self.store.clone(), layer.clone(), v1_id.map(str::to_string));
        self.pending.push(self.rt.spawn(async move {
            let outcome = match upload {
                Some(h) => Some(h.await??),
                None => None,
            };
            record_index(&store, &layer, v1_id.as_deref()).await?;
            Ok(outcome)
        }));
    }
}

impl LayerSink for PushSink {
    type Out = Layer;

    fn progress(&mut self, archive_bytes: u64) {
        self.stats
            .bytes_read
            .store(archive_bytes, Ordering::Relaxed);
        self.progress.set(archive_bytes);
    }

    /// A delta archive: before any layer is uploaded, the store must hold every blob it
    /// leaves out (digest and size), or the push fails with the store unchanged.
    fn delta(&mut self, omitted: &[OmittedBlob]) -> Result<()> {
        self.block_on(crate::transfer::delta::check_store_holds(
            &self.store,
            omitted,
        ))?;
        self.stats
            .blobs_skipped
            .fetch_add(omitted.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Checked to be in the store by `delta`, which the archive reader calls first.
    fn omitted(&mut self, layer: &Layer) -> Result<Layer> {
        Ok(layer.clone())
    }

    fn layer(&mut self, entry: &LayerEntry, data: &mut dyn Read) -> Result<SunkLayer<Layer>> {
        self.stats.layers.fetch_add(1, Ordering::Relaxed);
        let (kind, mut data) = ingest::sniff(entry.size, data)?;
        let target = self.opts.compression.codec();
        let level = self.opts.level.unwrap_or(target.default_level());
        let adaptive = self.opts.compression == PushCompression::Auto;
        let stored = ingest::stored_as(entry.path, kind)?.is_some();
        let upload = if stored {
            // Already compressed (OCI archives, containerd-store saves): stored as it is.
            self.begin(entry.name_digest, None, entry.size)?
        } else {
            // Plain tar. If the name tells the diff_id and the store has the layer in the
            // target compression, only hash the bytes to verify them.
            let hint = entry
                .name_digest
                .or_else(|| entry.v1_id.and_then(|v| self.v1_hint(v)));
            if let Some(d) = hint {
                if let Some(layer) = self.indexed(&d, target)? {
                    let mut h = Hasher::new();
                    copy_large(&mut data, &mut h)?;
                    let actual = h.finish();
                    if actual != d {
                        if entry.name_digest.is_some() {
                            // Reported as a corrupt file by the archive reader.
                            return Ok(SunkLayer {
                                file_digest: actual,
                                diff_id: actual,
                                out: layer,
                            });
                        }
                        bail!(
                            "layer {:?} does not match the store's index entry for its v1 ID (expected {d}, got {actual}); push again with --no-index",
                            entry.path
                        );
                    }
                    self.stats.blobs_skipped.fetch_add(1, Ordering::Relaxed);
                    return Ok(SunkLayer {
                        file_digest: d,
                        diff_id: d,
                        out: layer,
                    });
                }
            }
            // The layer's identity in the archive (its digest, or its v1 ID) and the
            // settings name what this push compresses, so a later push can continue its upload.
            let group = entry
                .name_digest
                .map(|d| d.hex())
                .or(entry.v1_id.map(str::to_string))
                .map(|id| {
                    let settings = match adaptive {
                        true => "auto".to_string(),
                        false => format!("{}{level}", target.name()),
                    };
                    format!("{}-{settings}", &id[..id.len().min(32)])
                });
            let known = entry.name_digest.filter(|_| target == Compression::None);
            self.begin(known, group, entry.size)?
        };
        let mut out = Output(upload);
        let level = match adaptive {
            true => {
                let up = self.uploader.clone();
                Level::Adaptive(
                    self.auto_level.unwrap_or(level),
                    Arc::new(move || SinkGauge {
                        fill: up.fill(),
                        waited: up.waited(),
                    }),
                )
            }
            false => Level::Fixed(level),
        };
        let got = ingest::ingest_at(entry.path, kind, data, target, level, &mut out)?;
        if let Some(l) = got.zstd_levels {
            self.auto_level = Some(l.1);
            self.stats.zstd_levels.lock().expect("stats lock").push(l);
        }
        let upload = self.finish(out, &got.layer)?;
        self.remember(&got.layer, entry.v1_id.filter(|_| !stored), upload);
        Ok(SunkLayer {
            file_digest: got.file_digest,
            diff_id: got.layer.diff_id,
            out: got.layer,
        })
    }
}

/// The archive's images as pushed: one image, or the images of one multi-platform
/// index (read with all platforms), which share a tag.
fn groups<T>(images: &[ArchiveImage<T>]) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    for (i, img) in images.iter().enumerate() {
        let index = img.from_index.as_ref().map(|f| f.digest);
        match out.iter_mut().find(|g| {
            index.is_some() && images[g[0]].from_index.as_ref().map(|f| f.digest) == index
        }) {
            Some(g) => g.push(i),
            None => out.push(vec![i]),
        }
    }
    out
}

/// Which references each group of images (see [`groups`]) is pushed as.
fn targets(
    images: &[ArchiveImage<Layer>],
    groups: &[Vec<usize>],
    reference: Option<&Reference>,
) -> Result<Vec<(usize, Reference)>> {
    let parsed = |img: &ArchiveImage<Layer>| -> Vec<Reference> {
        img.names
            .iter()
            .chain(img.ref_names.iter().filter(|r| r.contains(':')))
            .filter_map(|n| Reference::parse(n).ok())
            .collect()
    };
    match reference {
        Some(r) => {
            if r.digest.is_some() {
                bail!("push takes a tag, not a digest: {r}");
            }
            if groups.len() == 1 {
                return Ok(vec![(0, r.clone())]);
            }
            let tag = r.tag_or_latest().unwrap_or("latest");
            for (g, group) in groups.iter().enumerate() {
                let img = &images[group[0]];
                let named = parsed(img)
                    .iter()
                    .any(|p| p.name == r.name && p.tag_or_latest() == Some(tag));
                if named || img.ref_names.iter().any(|t| t == tag) {
                    return Ok(vec![(g, r.clone())]);
                }
            }
            let all: Vec<String> = images.iter().flat_map(|i| i.names.clone()).collect();
            bail!(
                "the archive holds {} images and none is tagged {r} (it has: {})",
                groups.len(),
                all.join(", ")
            )
        }
        None => {
            let mut out = Vec::new();
            for (g, group) in groups.iter().enumerate() {
                let img = &images[group[0]];
                let refs = parsed(img);
                if refs.is_empty() {
                    bail!("image {} in the archive has no tag: name the target, e.g. s3dock push myapp:1.0", img.config.digest);
                }
                out.extend(refs.into_iter().map(|mut r| {
                    if r.tag.is_none() {
                        r.tag = Some("latest".into());
                    }
                    (g, r)
                }));
            }
            Ok(out)
        }
    }
}

/// What is read of the input after the archive's end marker, at most.
const TRAILER_MAX: u64 = 1 << 20;

/// Pushes every image of the archive read from `input` (or the one `reference` names),
/// holding a gc lease throughout (see `registry::gclock`): it is taken before any blob
/// is looked at and given up on success and on failure.
pub async fn push<R: Read + Send + 'static>(
    store: &Registry,
    input: R,
    input_size: Option<u64>,
    reference: Option<Reference>,
    opts: PushOptions,
    stats: Arc<Stats>,
    show_progress: bool,
) -> Result<Vec<PushedImage>> {
    if opts.all_platforms && opts.platform.is_some() {
        bail!("--all-platforms pushes every platform: drop --platform (or --all-platforms)");
    }
    let lease = Lease::acquire(store).await?;
    let r = push_leased(
        store,
        input,
        input_size,
        reference,
        opts,
        stats,
        show_progress,
    )
    .await;
    lease.release().await;
    r
}

async fn push_leased<R: Read + Send + 'static>(
    store: &Registry,
    input: R,
    input_size: Option<u64>,
    reference: Option<Reference>,
    opts: PushOptions,
    stats: Arc<Stats>,
    show_progress: bool,
) -> Result<Vec<PushedImage>> {
    let mut sink = PushSink {
        store: store.clone(),
        uploader: store.uploader().resume(opts.resume),
        rt: tokio::runtime::Handle::current(),
        opts: opts.clone(),
        stats: stats.clone(),
        progress: Progress::new(show_progress, input_size, "reading archive"),
        pending: Vec::new(),
        auto_level: None,
    };
    let platform = opts.platform.clone().unwrap_or_else(host_platform);
    let all = opts.all_platforms;
    let (images, mut sink) = tokio::task::spawn_blocking(move || {
        let mut input = input;
        let which = if all {
            Platforms::All
        } else {
            Platforms::One(&platform)
        };
        let r = read_archive_for(&mut input, &mut sink, which);
        // Producers (podman save, tar) may still be writing padding after the end
        // marker: read it rather than let them die of SIGPIPE and fail the pipeline.
        if r.is_ok() {
            let _ = std::io::copy(&mut (&mut input).take(TRAILER_MAX), &mut std::io::sink());
        }
        (r, sink)
    })
    .await?;
    sink.progress.finish();
    // Wait for every upload even on failure, so none is left running.
    let mut failure = images.as_ref().err().map(|e| anyhow!("{e:#}"));
    for h in sink.pending.drain(..) {
        match h.await? {
            Ok(o) => {
                if let Some(o) = o {
                    stats
                        .bytes_uploaded
                        .fetch_add(o.uploaded, Ordering::Relaxed);
                    stats.bytes_resumed.fetch_add(o.resumed, Ordering::Relaxed);
                }
            }
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let images = images?;
    let groups = groups(&images);
    let targets = targets(&images, &groups, reference.as_ref())?;
    if let Some(p) = &opts.platform {
        for (g, r) in &targets {
            images[groups[*g][0]]
                .config
                .check_platform(p, &format!("image {r} in the archive"))?;
        }
    }
    let mut pushed = Vec::new();
    for (g, r) in targets {
        let group: Vec<&ArchiveImage<Layer>> = groups[g].iter().map(|i| &images[*i]).collect();
        pushed.push(match group.as_slice() {
            [img] if img.from_index.is_none() => {
                commit_image(store, &img.config, &img.layers, img.manifest.as_ref(), &r).await?
            }
            _ => commit_index(store, &group, &r).await?,
        });
    }
    Ok(pushed)
}

/// Remembers which blob holds each new layer, so a re-push can skip compressing it.
async fn record_index(store: &Registry, l: &Layer, v1_id: Option<&str>) -> Result<()> {
    if l.compression != Compression::None {
        let rec = IndexRecord {
            digest: l.digest,
            size: l.size,
        };
        store
            .put_json(
                &store
                    .layout()
                    .diffid_index(&l.diff_id, l.compression.name()),
                &rec,
            )
            .await?;
    }
    if let Some(v1) = v1_id {
        store
            .put_json(&store.layout().v1id_index(v1), &l.diff_id)
            .await?;
    }
    Ok(())
}

/// Whether a producer's manifest describes exactly this config and these stored layers.
fn describes(manifest: &[u8], config: &Config, layers: &[Layer]) -> bool {
    let Ok(crate::model::image::Document::Manifest(m)) =
        crate::model::image::parse_document(manifest)
    else {
        return false;
    };
    let same = |d: &oci_spec::image::Descriptor, digest: &Digest, size: u64| {
        crate::model::image::our_digest(d.digest()).ok() == Some(*digest) && d.size() == size
    };
    same(m.config(), &config.digest, config.bytes.len() as u64)
        && m.layers().len() == layers.len()
        && m.layers().iter().zip(layers).all(|(d, l)| {
            same(d, &l.digest, l.size)
                && crate::model::image::layer_compression(d.media_type().as_ref()).ok()
                    == Some(l.compression)
        })
}

/// Runs `f` on every item, `SMALL_REQUESTS` at a time (a commit's HEADs and link writes);
/// the first error wins.
async fn each_small_request<'a, T, F, Fut>(items: &'a [T], f: F) -> Result<()>
where
    F: Fn(&'a T) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    use futures::{StreamExt, TryStreamExt};
    futures::stream::iter(items.iter().map(&f))
        .buffer_unordered(super::SMALL_REQUESTS)
        .try_collect::<()>()
        .await
}

/// Stores config and manifest and links everything into `repo`, without tagging:
/// returns the manifest's digest and bytes.
async fn store_image(
    store: &Registry,
    config: &Config,
    layers: &[Layer],
    source_manifest: Option<&Bytes>,
    repo: &str,
) -> Result<(Digest, Bytes)> {
    // Each layer blob was verified as it streamed; confirm it is really in the store.
    each_small_request(layers, |l| async move {
        if store.blob_size(&l.digest).await?.is_none() {
            bail!("layer {} is missing from the store after upload", l.digest);
        }
        Ok(())
    })
    .await?;
    store
        .put_small_blob(&config.digest, config.bytes.clone())
        .await?;
    let manifest = match source_manifest.filter(|m| describes(m, config, layers)) {
        Some(m) => m.clone(),
        None => build_manifest(config, layers)?,
    };
    let md = Digest::of(&manifest);
    store.put_small_blob(&md, manifest.clone()).await?;
    let linked: Vec<&Digest> = layers
        .iter()
        .map(|l| &l.digest)
        .chain([&config.digest])
        .collect();
    each_small_request(&linked, |d| async move { store.link_layer(repo, d).await }).await?;
    store.link_revision(repo, &md).await?;
    Ok((md, manifest))
}

/// The commit point: checks that every blob the tag will need is still there (gc cannot
/// remove one while our lease is held; this catches a lease that lapsed), then moves
/// the tag to `md`. Returns what the tag held before, when it moved.
pub async fn tag_checked(
    store: &Registry,
    r: &Reference,
    blobs: &[Digest],
    md: &Digest,
) -> Result<Option<Digest>> {
    let all: Vec<&Digest> = blobs.iter().chain([md]).collect();
    each_small_request(&all, |d| async move {
        if store.blob_size(d).await?.is_none() {
            bail!("blob {d} vanished from the store before {r} was tagged (was gc run with a clock far off?); push again");
        }
        Ok(())
    })
    .await?;
    let tag = r.tag_or_latest().expect("push references carry a tag");
    Ok(store.set_tag(&r.name, tag, md).await?.filter(|p| p != md))
}

/// Stores config and manifest, links everything into the repository, then moves the tag.
pub async fn commit_image(
    store: &Registry,
    config: &Config,
    layers: &[SunkLayer<Layer>],
    source_manifest: Option<&Bytes>,
    r: &Reference,
) -> Result<PushedImage> {
    let layers: Vec<Layer> = layers.iter().map(|l| l.out.clone()).collect();
    let (md, _) = store_image(store, config, &layers, source_manifest, &r.name).await?;
    let blobs: Vec<Digest> = layers
        .iter()
        .map(|l| l.digest)
        .chain([config.digest])
        .collect();
    let previous = tag_checked(store, r, &blobs, &md).await?;
    let tag = r.tag_or_latest().expect("push references carry a tag");
    Ok(PushedImage {
        reference: Reference::with_tag(&r.name, tag).to_string(),
        manifest_digest: md,
        config_digest: config.digest,
        layers,
        previous,
        platform: Some(config.platform()),
        platforms: Vec::new(),
    })
}

/// Stores every platform's image of a multi-platform index, then the index, then moves
/// the tag to the index. The producer's index is kept byte for byte when every image
/// kept its manifest; otherwise (layers recompressed, attestations left out) an OCI
/// index over the stored manifests takes its place, with the same platform entries.
async fn commit_index(
    store: &Registry,
    images: &[&ArchiveImage<Layer>],
    r: &Reference,
) -> Result<PushedImage> {
    let from = images[0]
        .from_index
        .as_ref()
        .expect("a group of images comes from an index");
    let (mut children, mut descriptors, mut blobs) = (Vec::new(), Vec::new(), Vec::new());
    let mut kept = true;
    for img in images {
        let layers: Vec<Layer> = img.layers.iter().map(|l| l.out.clone()).collect();
        let (md, manifest) =
            store_image(store, &img.config, &layers, img.manifest.as_ref(), &r.name).await?;
        let mut desc = img
            .from_index
            .as_ref()
            .expect("every image of the group")
            .descriptor
            .clone();
        kept &= our_digest(desc.digest())? == md;
        let Document::Manifest(m) = parse_document(&manifest)? else {
            bail!("manifest {md} is not an image manifest");
        };
        if let Some(mt) = m.media_type() {
            desc.set_media_type(mt.clone());
        }
        desc.set_digest(oci_digest(&md));
        desc.set_size(manifest.len() as u64);
        descriptors.push(desc);
        blobs.extend(layers.iter().map(|l| l.digest));
        blobs.extend([img.config.digest, md]);
        children.push(PushedImage {
            reference: r.to_string(),
            manifest_digest: md,
            config_digest: img.config.digest,
            layers,
            previous: None,
            platform: Some(img.config.platform()),
            platforms: Vec::new(),
        });
    }
    let original = match parse_document(&from.bytes)? {
        Document::Index(i) => i,
        Document::Manifest(_) => bail!("index {} is not an image index", from.digest),
    };
    let same_entries = original.media_type().is_some()
        && original.manifests().len() == descriptors.len()
        && original
            .manifests()
            .iter()
            .zip(&descriptors)
            .all(|(a, b)| a.digest() == b.digest());
    let index = if kept && same_entries {
        from.bytes.clone()
    } else {
        build_index(descriptors)?
    };
    let idx = Digest::of(&index);
    store.put_small_blob(&idx, index).await?;
    store.link_revision(&r.name, &idx).await?;
    let previous = tag_checked(store, r, &blobs, &idx).await?;
    let tag = r.tag_or_latest().expect("push references carry a tag");
    Ok(PushedImage {
        reference: Reference::with_tag(&r.name, tag).to_string(),
        manifest_digest: idx,
        config_digest: children[0].config_digest,
        layers: children.iter().flat_map(|c| c.layers.clone()).collect(),
        previous,
        platform: None,
        platforms: children,
    })
}
