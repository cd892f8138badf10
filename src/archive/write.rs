//! Writes image archives. The default (`docker`) form is an OCI image layout plus
//! `manifest.json` and `repositories` pointing at the same blobs, which the classic
//! and containerd Docker stores, podman and skopeo all load; `oci` is the plain
//! OCI layout. Headers are written here rather than by `tar::Builder` so that an
//! aborted write never gets an end-of-archive marker: a consumer sees a truncated
//! archive, never a complete-looking one.

use crate::model::digest::Digest;
use anyhow::Result;
use serde_json::json;
use std::io::Write;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Docker,
    Oci,
}

impl std::str::FromStr for Format {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "docker" => Ok(Format::Docker),
            "oci" => Ok(Format::Oci),
            _ => anyhow::bail!("unknown archive format {s:?}: use docker or oci"),
        }
    }
}

/// An image as it goes into an archive.
pub struct ArchiveEntryImage {
    /// Familiar references for `RepoTags`, e.g. `myapp:v1.0`.
    pub repo_tags: Vec<String>,
    pub manifest: bytes::Bytes,
    pub manifest_digest: Digest,
    pub manifest_media_type: String,
    pub config_digest: Digest,
    pub layer_digests: Vec<Digest>,
    pub top_diff_id: Option<Digest>,
}

/// A layer blob a delta archive leaves out because the far side already holds it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OmittedBlob {
    pub digest: Digest,
    pub size: u64,
    /// The image that holds it (`--exclude REF`), or None for a listed digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// The delta record, the first file of a delta archive (see `delta_record`).
pub(super) const DELTA_RECORD: &str = "s3dock-delta.json";
/// The index.json annotation that marks a delta archive; its value names the record.
pub(super) const DELTA_ANNOTATION: &str = "io.s3dock.delta";
/// An empty directory that only names what the archive is: Docker's loader before 29,
/// finding no manifest.json, opens `<first directory>/json` and fails quoting its path.
const DELTA_SIGN: &str = "S3DOCK-DELTA-ARCHIVE-not-loadable-use-s3dock-push/";

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DeltaRecord {
    pub schema_version: u32,
    pub omitted: Vec<OmittedBlob>,
}

/// Where an archive goes. A regular file can also be written out of order, which lets
/// a file whose size is known only once its bytes are out (a layer being decompressed)
/// stream straight in, its tar header fixed afterwards; a pipe cannot, so such a file
/// has to be spooled first.
pub trait Output: Write + Send + 'static {
    /// The regular file this output writes, if it is one.
    fn regular_file(&self) -> Option<&std::fs::File> {
        None
    }
}

impl Output for std::fs::File {
    fn regular_file(&self) -> Option<&std::fs::File> {
        self.metadata().is_ok_and(|m| m.is_file()).then_some(self)
    }
}

impl Output for tempfile::NamedTempFile {
    fn regular_file(&self) -> Option<&std::fs::File> {
        self.as_file().regular_file()
    }
}

impl<W: Output + std::os::fd::AsRawFd> Output for Writeback<W> {
    fn regular_file(&self) -> Option<&std::fs::File> {
        self.inner.regular_file()
    }
}

impl<W: Output> Output for std::io::BufWriter<W> {
    fn regular_file(&self) -> Option<&std::fs::File> {
        self.get_ref().regular_file()
    }
}

impl Output for std::io::Stdout {}
impl Output for std::process::ChildStdin {}
impl Output for Vec<u8> {}
impl Output for std::io::Sink {}

pub struct ArchiveWriter<W: Write> {
    out: W,
    written: u64,
    delta: bool,
    /// Where the archive starts in `out`'s regular file, when it has one.
    file_start: Option<u64>,
    /// The header offset and path of the file begun with `begin_blob_unsized`.
    pending_header: Option<(u64, String)>,
}

fn header(path: &str, size: u64, dir: bool) -> Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path)?;
    h.set_size(size);
    h.set_mode(if dir { 0o755 } else { 0o644 });
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(if dir {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    });
    h.set_cksum();
    Ok(h)
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

impl<W: Output> ArchiveWriter<W> {
    /// `out` must have nothing buffered yet.
    pub fn new(out: W) -> Self {
        let file_start = out.regular_file().and_then(|mut f| {
            use std::io::Seek;
            f.stream_position().ok()
        });
        ArchiveWriter {
            out,
            written: 0,
            delta: false,
            file_start,
            pending_header: None,
        }
    }

    /// Whether `begin_blob_unsized` works: the output is a regular file.
    pub fn takes_unsized(&self) -> bool {
        self.file_start.is_some()
    }

    /// Starts a blob whose size is not known yet; its bytes follow through `write`,
    /// then `end_blob_unsized` writes its header in place.
    pub fn begin_blob_unsized(&mut self, d: &Digest) -> Result<()> {
        anyhow::ensure!(self.takes_unsized(), "this output cannot be rewritten");
        let path = blob_path(d);
        self.pending_header = Some((self.written, path.clone()));
        self.header(&path, 0, false)
    }

    pub fn end_blob_unsized(&mut self, size: u64) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let (at, path) = self
            .pending_header
            .take()
            .expect("begin_blob_unsized first");
        self.end_file(size)?;
        self.out.flush()?;
        let h = header(&path, size, false)?;
        let (Some(start), Some(f)) = (self.file_start, self.out.regular_file()) else {
            unreachable!("takes_unsized checked when the blob began");
        };
        f.write_all_at(h.as_bytes(), start + at)?;
        Ok(())
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    fn header(&mut self, path: &str, size: u64, dir: bool) -> Result<()> {
        self.raw(header(path, size, dir)?.as_bytes())
    }

    fn raw(&mut self, data: &[u8]) -> Result<()> {
        self.out.write_all(data)?;
        self.written += data.len() as u64;
        Ok(())
    }

    pub fn dir(&mut self, path: &str) -> Result<()> {
        self.header(path, 0, true)
    }

    pub fn file(&mut self, path: &str, data: &[u8]) -> Result<()> {
        self.begin_file(path, data.len() as u64)?;
        self.raw(data)?;
        self.end_file(data.len() as u64)
    }

    /// Starts a file whose `size` bytes the caller then passes to `write`.
    pub fn begin_file(&mut self, path: &str, size: u64) -> Result<()> {
        self.header(path, size, false)
    }

    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        self.raw(data)
    }

    pub fn end_file(&mut self, size: u64) -> Result<()> {
        let pad = (512 - size % 512) % 512;
        self.raw(&vec![0u8; pad as usize])
    }

    /// Makes this a delta archive, which leaves out the layer blobs in `omitted`:
    /// writes the record first, so that a push can check the far store holds them
    /// before it uploads anything. A delta archive is an OCI layout without `oci-layout`
    /// and `manifest.json`, so no loader takes it for an image archive: docker (classic
    /// store) finds no manifest.json, containerd neither file ("unrecognized image
    /// format"), and none of them half-loads an image whose layers are missing. Docker's
    /// error then names `DELTA_SIGN`.
    pub fn delta_record(&mut self, omitted: &[OmittedBlob]) -> Result<()> {
        let record = DeltaRecord {
            schema_version: 1,
            omitted: omitted.to_vec(),
        };
        self.file(DELTA_RECORD, &serde_json::to_vec(&record)?)?;
        self.dir(DELTA_SIGN)?;
        self.delta = true;
        Ok(())
    }

    /// Writes every metadata file and small blob; layers follow with `begin_file`.
    pub fn metadata(
        &mut self,
        format: Format,
        images: &[ArchiveEntryImage],
        configs: &[(Digest, bytes::Bytes)],
    ) -> Result<()> {
        if !self.delta {
            self.file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let manifests: Vec<_> = images
            .iter()
            .flat_map(|img| {
                let tags: Vec<Option<&String>> = if img.repo_tags.is_empty() {
                    vec![None]
                } else {
                    img.repo_tags.iter().map(Some).collect()
                };
                tags.into_iter().map(move |t| {
                    let mut d = json!({
                        "mediaType": img.manifest_media_type,
                        "digest": img.manifest_digest.to_string(),
                        "size": img.manifest.len(),
                    });
                    if let Some(t) = t {
                        let tag = t.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
                        d["annotations"] = json!({
                            "io.containerd.image.name": full_name(t),
                            "org.opencontainers.image.ref.name": tag,
                        });
                    }
                    d
                })
            })
            .collect();
        let mut index = json!({"schemaVersion": 2, "mediaType": crate::model::image::OCI_INDEX, "manifests": manifests});
        if self.delta {
            index["annotations"] = json!({ DELTA_ANNOTATION: DELTA_RECORD });
        }
        self.file("index.json", &serde_json::to_vec(&index)?)?;
        if format == Format::Docker && !self.delta {
            let entries: Vec<_> = images
                .iter()
                .map(|img| {
                    json!({
                        "Config": blob_path(&img.config_digest),
                        "RepoTags": img.repo_tags,
                        "Layers": img.layer_digests.iter().map(blob_path).collect::<Vec<_>>(),
                    })
                })
                .collect();
            let mut m = serde_json::to_vec(&entries)?;
            m.push(b'\n');
            self.file("manifest.json", &m)?;
            let mut repos = serde_json::Map::new();
            for img in images {
                for t in &img.repo_tags {
                    if let (Some((name, tag)), Some(top)) = (t.rsplit_once(':'), img.top_diff_id) {
                        let e = repos.entry(name.to_string()).or_insert_with(|| json!({}));
                        e[tag] = json!(top.hex());
                    }
                }
            }
            if !repos.is_empty() {
                let mut r = serde_json::to_vec(&repos)?;
                r.push(b'\n');
                self.file("repositories", &r)?;
            }
        }
        self.dir("blobs/")?;
        self.dir("blobs/sha256/")?;
        let mut done = std::collections::HashSet::new();
        for img in images {
            if done.insert(img.manifest_digest) {
                self.file(&blob_path(&img.manifest_digest), &img.manifest)?;
            }
        }
        for (d, bytes) in configs {
            if done.insert(*d) {
                self.file(&blob_path(d), bytes)?;
            }
        }
        Ok(())
    }

    pub fn begin_blob(&mut self, d: &Digest, size: u64) -> Result<()> {
        self.begin_file(&blob_path(d), size)
    }

    /// Gives up on the archive: no end marker, so no reader takes it as complete.
    pub fn abandon(mut self) -> W {
        let _ = self.out.flush();
        self.out
    }

    /// Ends the archive (two zero blocks) and flushes.
    pub fn finish(mut self) -> Result<W> {
        self.raw(&[0u8; 1024])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// `myapp:v1` → `docker.io/library/myapp:v1`, as containerd names images.
fn full_name(familiar: &str) -> String {
    let first = familiar.split('/').next().unwrap_or("");
    let has_host = familiar.contains('/')
        && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_host {
        familiar.to_string()
    } else if familiar.contains('/') {
        format!("docker.io/{familiar}")
    } else {
        format!("docker.io/library/{familiar}")
    }
}

/// A file written front to back that starts the writeback of its dirty pages every
/// `WRITEBACK_STEP` bytes (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which does not wait),
/// so the disk works while the rest is still arriving and the `fsync` that makes the
/// file durable at the end has little left to write.
pub struct Writeback<W: Write + std::os::fd::AsRawFd> {
    inner: W,
    written: u64,
    submitted: u64,
}

pub const WRITEBACK_STEP: u64 = 32 << 20;

impl<W: Write + std::os::fd::AsRawFd> Writeback<W> {
    /// `inner` must be an empty file, written from its start.
    pub fn new(inner: W) -> Self {
        Writeback {
            inner,
            written: 0,
            submitted: 0,
        }
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write + std::os::fd::AsRawFd> Write for Writeback<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        if self.written - self.submitted >= WRITEBACK_STEP {
            // Best effort: the final fsync is what guarantees durability.
            #[cfg(target_os = "linux")]
            unsafe {
                libc::sync_file_range(
                    self.inner.as_raw_fd(),
                    self.submitted as libc::off64_t,
                    (self.written - self.submitted) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
            self.submitted = self.written;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
