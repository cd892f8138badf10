//! The one image model shared by archives and stores: a config blob, its layers
//! (as stored) and the manifest that ties them together.

use super::compression::Compression;
use crate::model::digest::Digest;
use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// A layer as stored: the blob's digest and size, how it is compressed, and the
/// digest of its uncompressed tar (the config's diff_id).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Layer {
    pub digest: Digest,
    pub size: u64,
    pub compression: Compression,
    pub diff_id: Digest,
}

/// A parsed image config: raw bytes (their digest is the image ID) and the diff_ids.
#[derive(Clone, Debug)]
pub struct Config {
    pub bytes: Bytes,
    pub digest: Digest,
    pub diff_ids: Vec<Digest>,
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Config {
    pub fn parse(bytes: Bytes) -> Result<Self> {
        let digest = Digest::of(&bytes);
        let cfg = ImageConfiguration::from_reader(&bytes[..])
            .map_err(|e| anyhow!("image config {digest} is not a valid image config: {e}"))?;
        let diff_ids = cfg
            .rootfs()
            .diff_ids()
            .iter()
            .map(|d| d.parse::<Digest>())
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("image config {digest} has an invalid diff_id"))?;
        Ok(Config {
            digest,
            diff_ids,
            os: cfg.os().to_string(),
            architecture: cfg.architecture().to_string(),
            variant: cfg.variant().clone(),
            bytes,
        })
    }

    /// `os/arch[/variant]`, as `--platform` names it.
    pub fn platform(&self) -> String {
        let mut p = format!("{}/{}", self.os, self.architecture);
        if let Some(v) = &self.variant {
            p = format!("{p}/{v}");
        }
        p
    }

    /// An explicit `--platform` must name this single-platform image's platform (a variant
    /// is compared only when both give one); `what` names the image in the error.
    pub fn check_platform(&self, want: &str, what: &str) -> Result<()> {
        let mut w = want.split('/');
        let (os, arch, variant) = (w.next(), w.next(), w.next());
        let same = os == Some(self.os.as_str())
            && arch == Some(self.architecture.as_str())
            && (variant.is_none() || self.variant.is_none() || variant == self.variant.as_deref());
        if !same {
            bail!(
                "{what} is for platform {}, not {want}: drop --platform or name the image's platform",
                self.platform()
            );
        }
        Ok(())
    }
}

pub fn oci_digest(d: &Digest) -> oci_spec::image::Digest {
    d.to_string()
        .parse()
        .expect("a sha256 digest is a valid OCI digest")
}

pub fn our_digest(d: &oci_spec::image::Digest) -> Result<Digest> {
    d.to_string().parse::<Digest>().map_err(Into::into)
}

pub fn layer_media_type(c: Compression, oci: bool) -> &'static str {
    match (c, oci) {
        (Compression::None, false) => DOCKER_LAYER_TAR,
        (Compression::Gzip, false) => DOCKER_LAYER_GZIP,
        (Compression::None, true) => OCI_LAYER_TAR,
        (Compression::Gzip, true) => OCI_LAYER_GZIP,
        (Compression::Zstd, _) => OCI_LAYER_ZSTD,
    }
}

/// Compression of a layer from its media type.
pub fn layer_compression(media_type: &str) -> Result<Compression> {
    if media_type.ends_with("+zstd") || media_type.ends_with(".tar.zstd") {
        Ok(Compression::Zstd)
    } else if media_type.ends_with("+gzip") || media_type.ends_with(".tar.gzip") {
        Ok(Compression::Gzip)
    } else if media_type.ends_with(".tar") || media_type.ends_with(".diff.tar") {
        Ok(Compression::None)
    } else {
        bail!("unsupported layer media type {media_type:?}")
    }
}

/// Builds a manifest for a config and stored layers: Docker schema 2 (what every
/// docker and registry version understands) unless a zstd layer needs OCI types.
pub fn build_manifest(config: &Config, layers: &[Layer]) -> Result<Bytes> {
    build_manifest_as(
        config,
        layers,
        layers.iter().any(|l| l.compression == Compression::Zstd),
    )
}

/// Builds a Docker schema 2 (`oci` false) or OCI manifest.
pub fn build_manifest_as(config: &Config, layers: &[Layer], oci: bool) -> Result<Bytes> {
    let (mt, cfg_mt) = if oci {
        (OCI_MANIFEST, OCI_CONFIG)
    } else {
        (DOCKER_MANIFEST, DOCKER_CONFIG)
    };
    let descs = layers
        .iter()
        .map(|l| {
            Descriptor::new(
                MediaType::from(layer_media_type(l.compression, oci)),
                l.size,
                oci_digest(&l.digest),
            )
        })
        .collect::<Vec<_>>();
    let m = oci_spec::image::ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::from(mt))
        .config(Descriptor::new(
            MediaType::from(cfg_mt),
            config.bytes.len() as u64,
            oci_digest(&config.digest),
        ))
        .layers(descs)
        .build()?;
    Ok(serde_json::to_vec(&m)?.into())
}

/// An OCI image index over `manifests` (descriptors with their platforms).
pub fn build_index(manifests: Vec<Descriptor>) -> Result<Bytes> {
    let i = oci_spec::image::ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()?;
    Ok(serde_json::to_vec(&i)?.into())
}

/// Whether an index entry is an attestation manifest (platform `unknown/unknown`, as
/// buildx writes them), not an image.
pub fn is_attestation(d: &Descriptor) -> bool {
    d.platform().as_ref().is_some_and(|p| {
        p.os().to_string() == "unknown" && p.architecture().to_string() == "unknown"
    })
}

/// What a stored manifest or index document is.
pub enum Document {
    Manifest(Box<ImageManifest>),
    Index(Box<ImageIndex>),
}

/// Parses a manifest or index the way the registry does: by `mediaType`, or when
/// absent, an index if it has `manifests`.
pub fn parse_document(bytes: &[u8]) -> Result<Document> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).context("manifest is not valid JSON")?;
    if v.get("schemaVersion").and_then(|s| s.as_u64()) != Some(2) {
        bail!("unsupported manifest: schemaVersion must be 2 (schema 1 images are not supported)");
    }
    let mt = v.get("mediaType").and_then(|m| m.as_str());
    let is_index = match mt {
        Some(DOCKER_LIST) | Some(OCI_INDEX) => true,
        Some(DOCKER_MANIFEST) | Some(OCI_MANIFEST) => false,
        Some(other) => bail!("unsupported manifest media type {other:?}"),
        None => v.get("manifests").is_some(),
    };
    if is_index {
        Ok(Document::Index(Box::new(
            ImageIndex::from_reader(bytes).map_err(|e| anyhow!("invalid image index: {e}"))?,
        )))
    } else {
        Ok(Document::Manifest(Box::new(
            ImageManifest::from_reader(bytes)
                .map_err(|e| anyhow!("invalid image manifest: {e}"))?,
        )))
    }
}

/// The `os/arch[/variant]` of the machine we run on, in Go's names.
pub fn host_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    format!("linux/{arch}")
}

/// Picks the manifest for `platform` (`os/arch[/variant]`) from an index.
pub fn select_platform(index: &ImageIndex, platform: &str) -> Result<Descriptor> {
    let mut want = platform.split('/');
    let (os, arch, variant) = (
        want.next().unwrap_or(""),
        want.next().unwrap_or(""),
        want.next(),
    );
    let mut available = Vec::new();
    for d in index.manifests() {
        let Some(p) = d.platform() else { continue };
        let (pos, parch) = (p.os().to_string(), p.architecture().to_string());
        let pvar = p.variant().clone();
        available.push(format!(
            "{pos}/{parch}{}",
            pvar.as_deref().map(|v| format!("/{v}")).unwrap_or_default()
        ));
        if pos == os && parch == arch && (variant.is_none() || pvar.as_deref() == variant) {
            return Ok(d.clone());
        }
    }
    if index.manifests().len() == 1 && index.manifests()[0].platform().is_none() {
        return Ok(index.manifests()[0].clone());
    }
    bail!(
        "no manifest for platform {platform} in the index (available: {})",
        available.join(", ")
    )
}
