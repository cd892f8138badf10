//! `pull`: store → archive. Every blob is verified against its digest and every
//! layer against its diff_id on the way out. Layers are written first and the
//! metadata last, so an archive only becomes loadable once everything checked
//! out; on any failure the output ends without an end-of-archive marker.

use crate::archive::{ArchiveEntryImage, ArchiveWriter, Format};
use crate::compress::{Compression, DiffIdHasher};
use crate::digest::{Digest, Hasher};
use crate::image::{
    self, build_manifest_as, layer_compression, our_digest, parse_document, select_platform,
    Config, Document, Layer,
};
use crate::reference::Reference;
use crate::stats::{Progress, Stats};
use crate::store::Store;
use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use futures::StreamExt;
use std::io::{Seek, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct PullOptions {
    pub format: Format,
    /// `RepoTags` for the output instead of the pulled reference.
    pub tag: Option<Reference>,
    pub platform: String,
    /// Content-addressed cache of blobs already on this host.
    pub cache: Option<PathBuf>,
    /// Write layers as plain tars (needed for docker < 23 with zstd layers).
    pub decompress: bool,
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
pub async fn resolve(store: &Store, r: &Reference, platform: &str) -> Result<ResolvedImage> {
    let repo = &r.name;
    let digest = match (&r.digest, r.tag_or_latest()) {
        (Some(d), _) => *d,
        (None, Some(tag)) => match store.tag_target(repo, tag).await? {
            Some(d) => d,
            None => {
                let tags = store.tags(repo).await?;
                if tags.is_empty() {
                    bail!("image {repo} not found in store {}", store.display);
                }
                bail!(
                    "tag {tag} of {repo} not found in store {} (tags: {})",
                    store.display,
                    tags.join(", ")
                );
            }
        },
        (None, None) => unreachable!("a reference has a tag or a digest"),
    };
    let (mut digest, mut bytes) = (digest, manifest_blob(store, repo, &digest).await?);
    let mut doc = parse_document(&bytes).with_context(|| format!("manifest {digest}"))?;
    if let Document::Index(index) = &doc {
        let child = select_platform(index, platform)?;
        digest = our_digest(child.digest())?;
        bytes = manifest_blob(store, repo, &digest).await?;
        doc = parse_document(&bytes).with_context(|| format!("manifest {digest}"))?;
    }
    let Document::Manifest(m) = doc else {
        bail!("manifest {digest} is a nested index, which is not supported")
    };
    let media_type = m
        .media_type()
        .as_ref()
        .map(|t| t.to_string())
        .unwrap_or_else(|| image::OCI_MANIFEST.to_string());
    let config = Config::parse(
        store
            .get_small_blob(&our_digest(m.config().digest())?)
            .await?,
    )?;
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
    Ok(ResolvedImage {
        manifest_digest: digest,
        manifest: bytes,
        media_type,
        config,
        layers,
    })
}

async fn manifest_blob(store: &Store, repo: &str, d: &Digest) -> Result<Bytes> {
    if !store.has_revision(repo, d).await? {
        bail!(
            "manifest {d} is not in repository {repo} of store {}",
            store.display
        );
    }
    store.get_small_blob(d).await
}

enum Cmd {
    Begin(Digest, u64),
    Data(Bytes),
    End(u64),
    Metadata(Box<ArchiveEntryImage>, Vec<(Digest, Bytes)>, Format),
}

#[derive(Debug, serde::Serialize)]
pub struct PullReport {
    pub reference: String,
    pub manifest_digest: Digest,
    pub config_digest: Digest,
    pub layers: usize,
    pub bytes_written: u64,
}

/// Streams the blob's bytes: from the cache when it holds it, else ranged GETs with
/// `jobs` in flight. Each chunk goes to `each`; the digest and size are checked at the end.
async fn fetch_blob(
    store: &Store,
    cache: Option<&PathBuf>,
    layer: &Layer,
    stats: &Stats,
    mut each: impl FnMut(Bytes) -> Result<()>,
) -> Result<()> {
    let mut hasher = Hasher::new();
    let cached = cache.map(|c| c.join("blobs/sha256").join(layer.digest.hex()));
    if let Some(path) = cached.as_ref().filter(|p| p.is_file()) {
        let mut f = std::fs::File::open(path)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = crate::compress::read_full(&mut f, &mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            each(Bytes::copy_from_slice(&buf[..n]))?;
        }
        return check(layer, hasher, "in the cache");
    }
    let key = store.layout.blob_data(&layer.digest);
    let size = store
        .driver
        .stat(&key)
        .await?
        .ok_or_else(|| anyhow!("blob {} is missing from the store", layer.digest))?;
    if size != layer.size {
        bail!(
            "blob {} is {size} bytes in the store but the manifest says {}",
            layer.digest,
            layer.size
        );
    }
    let mut tmp = match &cached {
        Some(p) => {
            let dir = p.parent().expect("cache path has a parent");
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create cache dir {}", dir.display()))?;
            Some(tempfile::NamedTempFile::new_in(dir)?)
        }
        None => None,
    };
    let chunk = store.part_size;
    let ranges = (0..size)
        .step_by(chunk as usize)
        .map(|s| (s, (size - s).min(chunk) as usize));
    let driver = store.driver.clone();
    let mut chunks = futures::stream::iter(ranges)
        .map(|(s, n)| {
            let (driver, key) = (driver.clone(), key.clone());
            async move { driver.get_range(&key, s, n).await }
        })
        .buffered(store.jobs);
    while let Some(data) = chunks.next().await {
        let data = data?;
        stats
            .bytes_downloaded
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        hasher.update(&data);
        if let Some(t) = &mut tmp {
            t.write_all(&data)?;
        }
        each(data)?;
    }
    check(layer, hasher, "in the store")?;
    if let (Some(t), Some(p)) = (tmp, cached) {
        t.persist(&p)
            .with_context(|| format!("cannot write cache file {}", p.display()))?;
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

/// Pulls `r` and writes an archive to `out`.
pub async fn pull<W: Write + Send + 'static>(
    store: &Store,
    r: &Reference,
    out: W,
    opts: &PullOptions,
    stats: Arc<Stats>,
    show_progress: bool,
) -> Result<(PullReport, W)> {
    let img = resolve(store, r, &opts.platform).await?;
    let total: u64 = img.layers.iter().map(|l| l.size).sum();
    let progress = Progress::new(show_progress, Some(total), "pulling");
    let (tx, rx) = std::sync::mpsc::sync_channel::<Cmd>(store.jobs + 2);
    let writer = tokio::task::spawn_blocking(move || -> Result<(W, u64, bool)> {
        let mut w = ArchiveWriter::new(out);
        while let Ok(cmd) = rx.recv() {
            match cmd {
                Cmd::Begin(d, size) => w.begin_blob(&d, size)?,
                Cmd::Data(b) => w.write(&b)?,
                Cmd::End(size) => w.end_file(size)?,
                Cmd::Metadata(img, configs, format) => {
                    w.metadata(format, std::slice::from_ref(&img), &configs)?;
                    let n = w.written() + 1024;
                    return Ok((w.finish()?, n, true));
                }
            }
        }
        // Ended without metadata: something failed; leave the archive unterminated.
        Ok((w.abandon(), 0, false))
    });
    let result = write_layers(store, &img, opts, &tx, &stats, &progress).await;
    progress.finish();
    let out_layers = match result {
        Ok(l) => l,
        Err(e) => {
            drop(tx);
            let _ = writer.await;
            return Err(e);
        }
    };
    let oci = opts.format == Format::Oci;
    let keep_stored = !opts.decompress && (!oci || img.media_type == image::OCI_MANIFEST);
    let (manifest, media_type) = if keep_stored {
        (img.manifest.clone(), img.media_type.clone())
    } else {
        let oci_types = oci
            || out_layers
                .iter()
                .any(|l| l.compression == Compression::Zstd);
        let m = build_manifest_as(&img.config, &out_layers, oci_types)?;
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
    let repo_tags = match (&opts.tag, r.tag_or_latest()) {
        (Some(t), _) => vec![format!(
            "{}:{}",
            t.name,
            t.tag_or_latest().unwrap_or("latest")
        )],
        (None, Some(tag)) => vec![format!("{}:{tag}", r.name)],
        (None, None) => vec![],
    };
    let entry = ArchiveEntryImage {
        repo_tags,
        manifest_digest: Digest::of(&manifest),
        manifest,
        manifest_media_type: media_type,
        config_digest: img.config.digest,
        layer_digests: out_layers.iter().map(|l| l.digest).collect(),
        top_diff_id: img.config.diff_ids.last().copied(),
    };
    let configs = vec![(img.config.digest, img.config.bytes.clone())];
    tx.send(Cmd::Metadata(Box::new(entry), configs, opts.format))
        .map_err(|_| anyhow!("archive writer stopped"))?;
    drop(tx);
    let (w, written, finished) = writer.await??;
    if !finished {
        bail!("archive writer stopped early");
    }
    let report = PullReport {
        reference: r.to_string(),
        manifest_digest: img.manifest_digest,
        config_digest: img.config.digest,
        layers: img.layers.len(),
        bytes_written: written,
    };
    Ok((report, w))
}

/// Sends every layer to the writer; returns the layers as written (decompressed or not).
async fn write_layers(
    store: &Store,
    img: &ResolvedImage,
    opts: &PullOptions,
    tx: &std::sync::mpsc::SyncSender<Cmd>,
    stats: &Stats,
    progress: &Progress,
) -> Result<Vec<Layer>> {
    // The writer applies back-pressure; let the runtime know this thread may block.
    let send = |cmd: Cmd| {
        tokio::task::block_in_place(|| tx.send(cmd))
            .map_err(|_| anyhow!("archive writer stopped (output closed?)"))
    };
    let mut written = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for layer in &img.layers {
        if opts.decompress {
            // A plain tar's size is known only once decompressed: spool it, then write it.
            let diff = DiffIdHasher::with_spool(layer.compression, Some(tempfile::tempfile()?));
            fetch_blob(store, opts.cache.as_ref(), layer, stats, |b| {
                progress.inc(b.len() as u64);
                diff.feed(b);
                Ok(())
            })
            .await?;
            let plain = diff.finish_spooled()?;
            verify_diff_id(layer, &plain.diff_id)?;
            let out = Layer {
                digest: plain.diff_id,
                size: plain.size,
                compression: Compression::None,
                diff_id: plain.diff_id,
            };
            if seen.insert(out.digest) {
                let mut spool = plain.spool.expect("spool file");
                spool.rewind()?;
                send(Cmd::Begin(out.digest, out.size))?;
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = crate::compress::read_full(&mut spool, &mut buf)?;
                    if n == 0 {
                        break;
                    }
                    send(Cmd::Data(Bytes::copy_from_slice(&buf[..n])))?;
                }
                send(Cmd::End(out.size))?;
            }
            written.push(out);
            continue;
        }
        // An uncompressed layer's diff_id is its digest, which fetch_blob verifies.
        let diff =
            (layer.compression != Compression::None).then(|| DiffIdHasher::new(layer.compression));
        let first = seen.insert(layer.digest);
        if first {
            send(Cmd::Begin(layer.digest, layer.size))?;
        }
        fetch_blob(store, opts.cache.as_ref(), layer, stats, |b| {
            progress.inc(b.len() as u64);
            if let Some(d) = &diff {
                d.feed(b.clone());
            }
            if first {
                send(Cmd::Data(b))?;
            }
            Ok(())
        })
        .await?;
        let diff_id = match diff {
            Some(d) => d.finish()?,
            None => layer.digest,
        };
        verify_diff_id(layer, &diff_id)?;
        if first {
            send(Cmd::End(layer.size))?;
        }
        written.push(layer.clone());
    }
    Ok(written)
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
