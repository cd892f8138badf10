//! Single-pass archive reader. Docker 25+ and OCI archives put every blob before
//! the metadata that says what it is, so the reader cannot wait: small JSON
//! files are kept in memory, and every other file is handed to a [`LayerSink`]
//! as it streams past (the push pipeline compresses and uploads it there).
//! Once the stream ends, `manifest.json` or `index.json` says which files form
//! which image, and every digest and diff_id is checked.

use super::write::{DeltaRecord, OmittedBlob, DELTA_ANNOTATION, DELTA_RECORD};
use crate::codec::{decompressing_reader, detect, Detected, MAX_RATIO};
use crate::model::digest::Digest;
use crate::model::image::{
    self, layer_compression, our_digest, parse_document, select_platform, Config, Document, Layer,
};
use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};

/// Failures of the archive as a whole that callers may branch on (found in the
/// `anyhow` chain with `downcast_ref`).
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The compressed input stream itself is broken (the tar inside was not reached intact).
    #[error("the {0:?}-compressed input is damaged")]
    Damaged(Detected),
}

/// A file that may be a layer, as found in the archive.
#[derive(Debug)]
pub struct LayerEntry<'a> {
    pub path: &'a str,
    pub size: u64,
    /// Digest of the file's bytes when its name says it (`blobs/sha256/<hex>`, `<hex>.tar`).
    pub name_digest: Option<Digest>,
    /// Legacy `<v1id>/layer.tar`: the v1 ID, a hash over the layer's chain ID.
    pub v1_id: Option<&'a str>,
}

/// What a sink reports for a layer file it consumed.
#[derive(Clone, Debug)]
pub struct SunkLayer<T> {
    /// sha256 of the file's bytes as they were in the archive.
    pub file_digest: Digest,
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    pub out: T,
}

pub trait LayerSink {
    type Out: Clone;
    /// Consumes one file completely.
    fn layer(&mut self, entry: &LayerEntry, data: &mut dyn Read) -> Result<SunkLayer<Self::Out>>;
    /// Bytes of archive read so far are reported here, for progress.
    fn progress(&mut self, _archive_bytes: u64) {}
    /// The archive is a delta archive leaving out these layer blobs (called as soon as
    /// its record is read, before the layers, when it comes first as s3dock writes it).
    fn delta(&mut self, _omitted: &[OmittedBlob]) -> Result<()> {
        bail!("{NOT_HERE}")
    }
    /// A layer a delta archive leaves out, in place of one read from the archive.
    fn omitted(&mut self, _layer: &Layer) -> Result<Self::Out> {
        bail!("{NOT_HERE}")
    }
}

const NOT_HERE: &str = "this is an s3dock delta archive (layers the far side holds are left out): only s3dock push reads it";

/// One image found in an archive.
#[derive(Debug)]
pub struct ArchiveImage<T> {
    /// Full references (`myapp:v1.0`, `docker.io/library/x:1`) the archive names it by.
    pub names: Vec<String>,
    /// OCI `org.opencontainers.image.ref.name` values, which may be a bare tag.
    pub ref_names: Vec<String>,
    pub config: Config,
    pub layers: Vec<SunkLayer<T>>,
    /// The producer's own manifest for this image, when the archive has one; a push
    /// reuses its exact bytes (and so its digest) when it stores the same layers.
    pub manifest: Option<Bytes>,
    /// Set when the image is one platform of a multi-platform index read with
    /// [`Platforms::All`]: the images of one index share it (and their names).
    pub from_index: Option<FromIndex>,
}

/// The multi-platform index an image came from, and the image's entry in it.
#[derive(Debug, Clone)]
pub struct FromIndex {
    pub digest: Digest,
    /// The producer's index, verbatim (a push keeps it when every child keeps its manifest).
    pub bytes: Bytes,
    pub descriptor: oci_spec::image::Descriptor,
}

/// Which images of a multi-platform index to read.
#[derive(Debug, Clone, Copy)]
pub enum Platforms<'a> {
    /// The one for this `os/arch[/variant]`.
    One(&'a str),
    /// Every platform (attestation manifests, platform `unknown/unknown`, are left out).
    All,
}

/// Metadata files are small; this caps what a hostile archive can make us buffer.
const MAX_JSON_FILE: u64 = 32 << 20;
const MAX_METADATA_TOTAL: u64 = 256 << 20;

struct Contents<T> {
    files: HashMap<String, Bytes>,
    links: HashMap<String, String>,
    layers: HashMap<String, SunkLayer<T>>,
    metadata_bytes: u64,
}

/// Counts bytes read from the (possibly compressed) archive stream.
struct Counting<R> {
    inner: R,
    count: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

/// A gzip- or zstd-wrapped archive may expand this much (past MIN_BOMB_CHECK bytes),
/// like a compressed layer (`compress::MAX_RATIO`): a few kilobytes of zstd can
/// otherwise become terabytes of tar for the push to hash, compress and upload.
const MIN_BOMB_CHECK: u64 = 256 << 20;

/// Counts decompressed bytes and refuses a decompression bomb.
struct Expansion<R> {
    inner: R,
    out: u64,
    /// Set when the decompressor itself failed, so the error can say the input is damaged.
    failed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Compressed bytes read so far.
    input: std::sync::Arc<std::sync::atomic::AtomicU64>,
    bounded: bool,
}

impl<R: Read> Read for Expansion<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf).inspect_err(|_| {
            self.failed
                .store(true, std::sync::atomic::Ordering::Relaxed)
        })?;
        self.out += n as u64;
        if self.bounded && self.out > MIN_BOMB_CHECK {
            let used = self.input.load(std::sync::atomic::Ordering::Relaxed);
            if self.out > used.saturating_mul(MAX_RATIO) {
                return Err(std::io::Error::other(format!(
                    "the compressed archive expands more than {MAX_RATIO}:1 ({} bytes from {used}): refusing it as a decompression bomb",
                    self.out
                )));
            }
        }
        Ok(n)
    }
}

/// Normalizes an in-archive path: strips `./`, rejects absolute paths and `..` escapes.
fn clean_path(raw: &str) -> Result<String> {
    if raw.starts_with('/') {
        bail!("archive entry {raw:?} has an absolute path: refusing a possibly malicious archive");
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    bail!("archive entry {raw:?} points outside the archive: refusing a possibly malicious archive");
                }
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

fn is_metadata_name(path: &str) -> bool {
    let base = path.rsplit('/').next().unwrap_or(path);
    matches!(
        base,
        "manifest.json" | "index.json" | "oci-layout" | "repositories" | "json" | "VERSION"
    ) || base.ends_with(".json")
}

/// The digest a file name carries: `blobs/sha256/<hex>` or `<hex>.tar`.
fn name_digest(path: &str) -> Option<Digest> {
    if let Some(hex) = path.strip_prefix("blobs/sha256/") {
        return Digest::from_hex(hex).ok();
    }
    if !path.contains('/') {
        return path
            .strip_suffix(".tar")
            .and_then(|h| Digest::from_hex(h).ok());
    }
    None
}

/// Reads a whole archive (optionally gzip or zstd compressed) from `input`, taking
/// `platform` from multi-platform indexes.
pub fn read_archive<R: Read, S: LayerSink>(
    input: R,
    sink: &mut S,
    platform: &str,
) -> Result<Vec<ArchiveImage<S::Out>>> {
    read_archive_for(input, sink, Platforms::One(platform))
}

/// [`read_archive`], choosing which platforms of multi-platform indexes to read.
pub fn read_archive_for<R: Read, S: LayerSink>(
    input: R,
    sink: &mut S,
    platforms: Platforms,
) -> Result<Vec<ArchiveImage<S::Out>>> {
    let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut buffered = BufReader::with_capacity(
        1 << 20,
        Counting {
            inner: input,
            count: count.clone(),
        },
    );
    let head = buffered.fill_buf().context("cannot read the input")?;
    if head.is_empty() {
        bail!("the input is empty: expected a docker save or OCI archive (did the command before the pipe fail?)");
    }
    let kind = detect(head);
    let failed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let plain = Expansion {
        inner: decompressing_reader(kind, buffered)?,
        out: 0,
        failed: failed.clone(),
        input: count.clone(),
        bounded: kind != Detected::Plain,
    };
    let mut contents = Contents {
        files: HashMap::new(),
        links: HashMap::new(),
        layers: HashMap::new(),
        metadata_bytes: 0,
    };
    stream_entries(plain, sink, &mut contents, &count).map_err(|e| {
        if failed.load(std::sync::atomic::Ordering::Relaxed) && kind != Detected::Plain {
            e.context(ArchiveError::Damaged(kind))
        } else {
            e
        }
    })?;
    sink.progress(count.load(std::sync::atomic::Ordering::Relaxed));
    resolve(&mut contents, sink, platforms)
}

fn stream_entries<S: LayerSink>(
    plain: impl Read,
    sink: &mut S,
    c: &mut Contents<S::Out>,
    count: &std::sync::atomic::AtomicU64,
) -> Result<()> {
    let mut archive = tar::Archive::new(plain);
    let entries = archive
        .entries()
        .context("the input is not a tar archive")?;
    let mut seen_any = false;
    for entry in entries {
        // The tar crate's message quotes the header's raw bytes: keep it out of the
        // error line (debug log only, escaped and bounded).
        let mut entry = entry.map_err(|e| {
            tracing::debug!(
                "tar header error: {}",
                crate::model::text::excerpt(e.to_string().as_bytes())
            );
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                anyhow!("the input is truncated: the tar archive ends inside a header or entry")
            } else if seen_any {
                anyhow!("the input is not a valid tar archive: a header after the first entry is damaged")
            } else {
                anyhow!("the input is not a tar archive (docker save, podman save or an OCI archive)")
            }
        })?;
        seen_any = true;
        let raw = String::from_utf8(entry.path_bytes().into_owned())
            .map_err(|_| anyhow!("archive entry name is not valid UTF-8: refusing the archive"))?;
        let path = clean_path(&raw)?;
        let kind = entry.header().entry_type();
        if kind.is_dir() || path.is_empty() || kind.is_pax_global_extensions() {
            continue;
        }
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name_bytes()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .ok_or_else(|| anyhow!("link {path:?} in the archive has no target"))?;
            let resolved = if kind.is_symlink() {
                let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                if target.starts_with('/') {
                    bail!("symlink {path:?} points to an absolute path {target:?}: refusing the archive");
                }
                clean_path(&format!("{dir}/{target}")).map_err(|_| {
                    anyhow!("symlink {path:?} -> {target:?} escapes the archive: refusing it")
                })?
            } else {
                clean_path(&target)?
            };
            if c.links.insert(path.clone(), resolved).is_some()
                || c.files.contains_key(&path)
                || c.layers.contains_key(&path)
            {
                bail!("archive has a duplicate entry {path:?}");
            }
            continue;
        }
        if !kind.is_file() {
            bail!("archive entry {path:?} is not a regular file, directory or link");
        }
        if c.files.contains_key(&path)
            || c.layers.contains_key(&path)
            || c.links.contains_key(&path)
        {
            bail!("archive has a duplicate entry {path:?}");
        }
        let size = entry.size();
        let truncated =
            |e: std::io::Error| anyhow!("the archive is truncated or unreadable in {path:?}: {e}");
        // Peek at the start: JSON documents begin with '{' or '['; layers never do.
        let mut head = vec![0u8; size.min(64) as usize];
        entry.read_exact(&mut head).map_err(truncated)?;
        let looks_json = head
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b'{' || *b == b'[');
        let metadata_name = is_metadata_name(&path);
        if metadata_name && size > MAX_JSON_FILE {
            bail!("archive file {path:?} is {size} bytes, too large for metadata: refusing the archive");
        }
        if metadata_name || (looks_json && size <= MAX_JSON_FILE) {
            c.metadata_bytes += size;
            if c.metadata_bytes > MAX_METADATA_TOTAL {
                bail!(
                    "archive holds more than {MAX_METADATA_TOTAL} bytes of metadata: refusing it"
                );
            }
            let mut data = head;
            entry.read_to_end(&mut data).map_err(truncated)?;
            if path == DELTA_RECORD {
                sink.delta(&parse_delta_record(&data)?)?;
            }
            c.files.insert(path, data.into());
            continue;
        }
        let v1_id = path
            .strip_suffix("/layer.tar")
            .filter(|d| Digest::from_hex(d).is_ok());
        let le = LayerEntry {
            path: &path,
            size,
            name_digest: name_digest(&path),
            v1_id,
        };
        let mut reader = (&head[..]).chain(&mut entry);
        let mut exact = ExactSize {
            inner: &mut reader,
            left: size,
            path: &path,
        };
        let sunk = sink.layer(&le, &mut exact)?;
        if exact.left != 0 {
            bail!("layer {path:?} was not read to the end");
        }
        check_name(&le, &sunk.file_digest)?;
        c.layers.insert(path, sunk);
        sink.progress(count.load(std::sync::atomic::Ordering::Relaxed));
    }
    if !seen_any {
        bail!("the input is not a tar archive (no entries found)");
    }
    Ok(())
}

/// A file named by its digest must hash to it.
fn check_name(le: &LayerEntry, actual: &Digest) -> Result<()> {
    match le.name_digest {
        Some(d) if d != *actual => {
            bail!(
                "archive file {:?} is corrupt: its content hashes to {actual}, not {d}",
                le.path
            )
        }
        _ => Ok(()),
    }
}

/// Reads exactly `left` bytes and turns a short read into a clear truncation error.
struct ExactSize<'a, R> {
    inner: R,
    left: u64,
    path: &'a str,
}

impl<R: Read> Read for ExactSize<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let max = buf.len().min(self.left as usize);
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the archive is truncated in {:?}", self.path),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// The omitted blobs a delta archive's record lists, by digest.
fn parse_delta_record(data: &[u8]) -> Result<Vec<OmittedBlob>> {
    let r: DeltaRecord = serde_json::from_slice(data)
        .map_err(|e| anyhow!("the archive's {DELTA_RECORD} is not valid: {e}"))?;
    if r.schema_version != 1 {
        bail!(
            "the archive's {DELTA_RECORD} has schema version {}, which this s3dock does not read: update s3dock",
            r.schema_version
        );
    }
    Ok(r.omitted)
}

impl<T: Clone> Contents<T> {
    /// Whether the archive holds a file (or a link to one) at `path`.
    fn has(&self, path: &str) -> bool {
        self.resolve_path(path)
            .is_ok_and(|p| self.layers.contains_key(&p) || self.files.contains_key(&p))
    }

    fn resolve_path(&self, path: &str) -> Result<String> {
        let mut p = clean_path(path)?;
        for _ in 0..8 {
            match self.links.get(&p) {
                Some(t) => p = t.clone(),
                None => return Ok(p),
            }
        }
        bail!("archive link {path:?} loops")
    }

    fn file(&self, path: &str, what: &str) -> Result<&Bytes> {
        let p = self.resolve_path(path)?;
        self.files
            .get(&p)
            .ok_or_else(|| anyhow!("the archive's {what} {path:?} is missing from the archive"))
    }

    /// The layer at `path`; a small file that was buffered as metadata goes through the sink now.
    fn layer<S: LayerSink<Out = T>>(&mut self, path: &str, sink: &mut S) -> Result<SunkLayer<T>> {
        let p = self.resolve_path(path)?;
        if let Some(l) = self.layers.get(&p) {
            return Ok(l.clone());
        }
        let data = self
            .files
            .get(&p)
            .cloned()
            .ok_or_else(|| anyhow!("layer {path:?} is missing from the archive"))?;
        let le = LayerEntry {
            path: &p,
            size: data.len() as u64,
            name_digest: name_digest(&p),
            v1_id: None,
        };
        let sunk = sink.layer(&le, &mut &data[..])?;
        check_name(&le, &sunk.file_digest)?;
        self.layers.insert(p, sunk.clone());
        Ok(sunk)
    }
}

fn check_layers<T>(config: &Config, layers: &[SunkLayer<T>], what: &str) -> Result<()> {
    if config.diff_ids.len() != layers.len() {
        bail!(
            "{what} lists {} layers but its config {} has {} diff_ids",
            layers.len(),
            config.digest,
            config.diff_ids.len()
        );
    }
    for (i, (l, d)) in layers.iter().zip(&config.diff_ids).enumerate() {
        if l.diff_id != *d {
            bail!("layer {} of {what} does not match the config: its content has diff_id {}, the config says {d}", i + 1, l.diff_id);
        }
    }
    Ok(())
}

fn resolve<S: LayerSink>(
    c: &mut Contents<S::Out>,
    sink: &mut S,
    platforms: Platforms,
) -> Result<Vec<ArchiveImage<S::Out>>> {
    // A delta archive is read through index.json only (it has no manifest.json).
    let omitted: Option<HashMap<Digest, OmittedBlob>> = match c.files.get(DELTA_RECORD) {
        Some(r) => Some(
            parse_delta_record(r)?
                .into_iter()
                .map(|o| (o.digest, o))
                .collect(),
        ),
        None => None,
    };
    // manifest.json names one platform per image; reading every platform goes through
    // index.json when it lists a multi-platform image (containerd-store docker save, pull
    // --all-platforms).
    let whole_index = matches!(platforms, Platforms::All) && lists_an_index(c);
    if let Some(m) = c
        .files
        .get("manifest.json")
        .filter(|_| omitted.is_none() && !whole_index)
        .cloned()
    {
        let entries: Vec<DockerManifestEntry> =
            serde_json::from_slice(&m).context("the archive's manifest.json is not valid")?;
        if entries.is_empty() {
            bail!("the archive's manifest.json lists no images");
        }
        let mut out = Vec::new();
        for e in entries {
            let cfg_bytes = c.file(&e.config, "config")?.clone();
            let config = Config::parse(cfg_bytes)?;
            let name = c.resolve_path(&e.config)?;
            let stem = name
                .strip_prefix("blobs/sha256/")
                .or_else(|| name.strip_suffix(".json"));
            if let Some(Ok(d)) = stem.map(Digest::from_hex) {
                if d != config.digest {
                    bail!(
                        "archive config {:?} is corrupt: its content hashes to {}",
                        e.config,
                        config.digest
                    );
                }
            }
            let layers = e
                .layers
                .iter()
                .map(|p| c.layer(p, sink))
                .collect::<Result<Vec<_>>>()?;
            let tags = e.repo_tags.unwrap_or_default();
            check_layers(
                &config,
                &layers,
                &format!(
                    "image {}",
                    tags.first()
                        .map_or(config.digest.to_string(), |t| t.clone())
                ),
            )?;
            let manifest = docker25_manifest(c, &config.digest);
            out.push(ArchiveImage {
                names: tags,
                ref_names: Vec::new(),
                config,
                layers,
                manifest,
                from_index: None,
            });
        }
        return Ok(out);
    }
    let index_json = c.files.get("index.json").cloned().ok_or_else(|| {
        if c.files.keys().any(|k| k.ends_with("/json")) {
            anyhow!("this is a pre-Docker-1.10 archive without manifest.json, which is not supported")
        } else {
            anyhow!("the input is not a docker save or OCI archive: it has neither manifest.json nor index.json")
        }
    })?;
    if omitted.is_none() {
        let layout = c
            .files
            .get("oci-layout")
            .ok_or_else(|| anyhow!("OCI archive without an oci-layout file"))?;
        let lv: serde_json::Value =
            serde_json::from_slice(layout).context("the archive's oci-layout is not valid JSON")?;
        if lv.get("imageLayoutVersion").and_then(|v| v.as_str()) != Some("1.0.0") {
            bail!("unsupported OCI layout version in oci-layout (need 1.0.0)");
        }
    }
    let Document::Index(index) =
        parse_document(&index_json).context("the archive's index.json is not valid")?
    else {
        bail!("the archive's index.json is not an image index");
    };
    let marked = index
        .annotations()
        .as_ref()
        .is_some_and(|a| a.contains_key(DELTA_ANNOTATION));
    if marked && omitted.is_none() {
        bail!("the archive's index.json marks a delta archive but its {DELTA_RECORD} is missing: the archive is damaged");
    }
    let top_level_platforms = matches!(platforms, Platforms::All)
        && index.manifests().len() > 1
        && index
            .manifests()
            .iter()
            .all(|m| m.platform().is_some() && m.media_type().to_string() != image::OCI_INDEX);
    let index_bytes = index_json;
    let mut out = Vec::new();
    for desc in index.manifests() {
        let ann = desc.annotations().clone().unwrap_or_default();
        let d = our_digest(desc.digest())?;
        let bytes = blob(c, &d)?.clone();
        // A nested index is a multi-platform image: one child, or all of them.
        let children = match (parse_document(&bytes)?, platforms) {
            (Document::Index(child), Platforms::One(platform)) => {
                vec![(
                    our_digest(select_platform(&child, platform)?.digest())?,
                    None,
                )]
            }
            (Document::Index(child), Platforms::All) => {
                let mut v = Vec::new();
                for m in child.manifests() {
                    if image::is_attestation(m) {
                        continue;
                    }
                    let from = FromIndex {
                        digest: d,
                        bytes: bytes.clone(),
                        descriptor: m.clone(),
                    };
                    v.push((our_digest(m.digest())?, Some(from)));
                }
                v
            }
            (Document::Manifest(_), _) => vec![(d, None)],
        };
        for (d, mut from_index) in children {
            // index.json itself listing one manifest per platform is one multi-platform image.
            if from_index.is_none() && top_level_platforms {
                from_index = Some(FromIndex {
                    digest: Digest::of(&index_bytes),
                    bytes: index_bytes.clone(),
                    descriptor: desc.clone(),
                });
            }
            let mut img = oci_image(c, sink, &d, omitted.as_ref())?;
            img.names = ann
                .get("io.containerd.image.name")
                .cloned()
                .into_iter()
                .collect();
            img.ref_names = ann
                .get("org.opencontainers.image.ref.name")
                .cloned()
                .into_iter()
                .collect();
            img.from_index = from_index;
            out.push(img);
        }
    }
    if out.is_empty() {
        bail!("the archive's index.json lists no images");
    }
    Ok(out)
}

/// Whether the archive's index.json lists a multi-platform index.
fn lists_an_index<T: Clone>(c: &Contents<T>) -> bool {
    let Some(Ok(Document::Index(index))) = c.files.get("index.json").map(|b| parse_document(b))
    else {
        return false;
    };
    index.manifests().iter().any(|d| {
        let t = d.media_type().to_string();
        t == image::OCI_INDEX || t == image::DOCKER_LIST
    })
}

/// The image whose manifest is blob `d` of an OCI layout, unnamed.
fn oci_image<S: LayerSink>(
    c: &mut Contents<S::Out>,
    sink: &mut S,
    d: &Digest,
    omitted: Option<&HashMap<Digest, OmittedBlob>>,
) -> Result<ArchiveImage<S::Out>> {
    let manifest = blob(c, d)?.clone();
    let Document::Manifest(m) = parse_document(&manifest)? else {
        bail!("nested image index {d} is not supported")
    };
    let cd = our_digest(m.config().digest())?;
    let config = Config::parse(blob(c, &cd)?.clone())?;
    if m.layers().len() != config.diff_ids.len() {
        bail!(
            "manifest {d} lists {} layers but its config {cd} has {} diff_ids",
            m.layers().len(),
            config.diff_ids.len()
        );
    }
    let mut layers = Vec::new();
    for (l, diff_id) in m.layers().iter().zip(&config.diff_ids) {
        let ld = our_digest(l.digest())?;
        let path = format!("blobs/sha256/{}", ld.hex());
        // A delta archive leaves out what the far store already has: the sink checks it there.
        if let Some(o) = omitted.and_then(|o| o.get(&ld)).filter(|_| !c.has(&path)) {
            if o.size != l.size() {
                bail!(
                    "layer {ld} is {} bytes in manifest {d} but {} in the archive's {DELTA_RECORD}: the archive is damaged",
                    l.size(),
                    o.size
                );
            }
            let layer = Layer {
                digest: ld,
                size: o.size,
                compression: layer_compression(l.media_type().as_ref())?,
                diff_id: *diff_id,
            };
            layers.push(SunkLayer {
                file_digest: ld,
                diff_id: *diff_id,
                out: sink.omitted(&layer)?,
            });
            continue;
        }
        let sunk = c.layer(&path, sink)?;
        if sunk.file_digest != ld {
            bail!(
                "OCI blob {ld} is corrupt: its content hashes to {}",
                sunk.file_digest
            );
        }
        layers.push(sunk);
    }
    check_layers(&config, &layers, &format!("manifest {d}"))?;
    Ok(ArchiveImage {
        names: Vec::new(),
        ref_names: Vec::new(),
        config,
        layers,
        manifest: Some(manifest),
        from_index: None,
    })
}

/// Docker 25+ archives also carry an OCI manifest per image in `index.json`: the
/// one whose config is `config`, if any.
fn docker25_manifest<T: Clone>(c: &Contents<T>, config: &Digest) -> Option<Bytes> {
    let index = c.files.get("index.json")?;
    let Ok(Document::Index(index)) = parse_document(index) else {
        return None;
    };
    index.manifests().iter().find_map(|desc| {
        let bytes = blob(c, &our_digest(desc.digest()).ok()?).ok()?;
        match parse_document(bytes).ok()? {
            Document::Manifest(m) if our_digest(m.config().digest()).ok()? == *config => {
                Some(bytes.clone())
            }
            _ => None,
        }
    })
}

/// A small blob from an OCI layout, verified against its digest.
fn blob<'a, T: Clone>(c: &'a Contents<T>, d: &Digest) -> Result<&'a Bytes> {
    let data = c.file(&format!("blobs/sha256/{}", d.hex()), "blob")?;
    if Digest::of(data) != *d {
        bail!("OCI blob {d} is corrupt: its content does not match its digest");
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_paths() {
        assert_eq!(clean_path("./blobs/sha256/x").unwrap(), "blobs/sha256/x");
        assert_eq!(clean_path("a/../b").unwrap(), "b");
        assert!(clean_path("../x").is_err());
        assert!(clean_path("/etc/x").is_err());
        assert!(clean_path("a/../../x").is_err());
    }
}
