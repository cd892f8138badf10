//! Ingest: one layer file of an archive → its diff_id, and the bytes to store (as they are
//! when already gzip/zstd-compressed, else compressed with the push's settings) written
//! to any `Write` sink, with their digest and size. It knows nothing of stores: `push`
//! hands it an upload, the fuzz crate a discarding writer, so both run the same code.

use crate::codec::{
    copy_large, detect, gzip_parallel, read_full, zstd_stream, Compression, Detected, DiffIdHasher,
    Level,
};
use crate::model::digest::{Digest, Hasher};
use crate::model::image::Layer;
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use std::io::{Read, Write};

/// One ingested layer file.
#[derive(Clone, Debug)]
pub struct Ingested {
    /// The blob as written to the sink.
    pub layer: Layer,
    /// sha256 and size of the file's bytes as they were in the archive.
    pub file_digest: Digest,
    pub file_size: u64,
    /// zstd levels used (lowest, last, highest) when this push compressed the layer with zstd.
    pub zstd_levels: Option<(i32, i32, i32)>,
}

/// Reads a layer file's first bytes: what it is, and the whole stream again.
pub fn sniff<'a>(size: u64, data: &'a mut dyn Read) -> Result<(Detected, impl Read + 'a)> {
    let mut head = vec![0u8; size.min(16) as usize];
    let n = read_full(data, &mut head)?;
    head.truncate(n);
    Ok((detect(&head), std::io::Cursor::new(head).chain(data)))
}

/// The compression a file of this kind is stored in as it is; None for a plain tar.
pub fn stored_as(path: &str, kind: Detected) -> Result<Option<Compression>> {
    Ok(match kind {
        Detected::Plain => None,
        Detected::Gzip => Some(Compression::Gzip),
        Detected::Zstd => Some(Compression::Zstd),
        other => bail!(
            "layer {path:?} is {other:?}-compressed, which registries and docker pull do not support: recompress it with gzip or zstd"
        ),
    })
}

/// Hashes what passes through to the sink.
struct Hashing<'a> {
    hasher: Hasher,
    out: &'a mut dyn Write,
}

impl Hashing<'_> {
    fn into_layer(self, compression: Compression, diff_id: Digest) -> Layer {
        Layer {
            size: self.hasher.len(),
            digest: self.hasher.finish(),
            compression,
            diff_id,
        }
    }
}

impl Write for Hashing<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.write_all(buf)?;
        self.hasher.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Ingests the layer file `data` (of the `kind` [`sniff`] found) into `out`: stored as it
/// is when compressed (its diff_id computed by decompressing on other threads, with the
/// bomb bound and every gzip/zstd check), else compressed to `target` at `level`.
pub fn ingest(
    path: &str,
    kind: Detected,
    data: impl Read,
    target: Compression,
    level: i32,
    out: &mut dyn Write,
) -> Result<Ingested> {
    ingest_at(path, kind, data, target, Level::Fixed(level), out)
}

/// [`ingest`] with a level that zstd may adapt to the sink's pace (`--compression auto`).
pub fn ingest_at(
    path: &str,
    kind: Detected,
    mut data: impl Read,
    target: Compression,
    level: Level,
    out: &mut dyn Write,
) -> Result<Ingested> {
    let mut out = Hashing {
        hasher: Hasher::new(),
        out,
    };
    if let Some(compression) = stored_as(path, kind)? {
        let diff = DiffIdHasher::new(compression);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = read_full(&mut data, &mut buf)?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])?;
            diff.feed(Bytes::copy_from_slice(&buf[..n]));
        }
        let diff_id = diff.finish().with_context(|| {
            format!(
                "layer {path:?} is not a valid {} stream",
                compression.name()
            )
        })?;
        let layer = out.into_layer(compression, diff_id);
        return Ok(Ingested {
            file_digest: layer.digest,
            file_size: layer.size,
            layer,
            zstd_levels: None,
        });
    }
    let mut diff = Hasher::new();
    let threads = rayon::current_num_threads();
    let mut zstd_levels = None;
    match target {
        Compression::None => {
            copy_large(&mut data, &mut out)?;
            diff = out.hasher.clone();
        }
        Compression::Gzip => {
            gzip_parallel(
                &mut data,
                level.start().clamp(0, 9) as u32,
                4 * threads,
                |b| diff.update(b),
                |b| out.write_all(b).map_err(anyhow::Error::from),
            )?;
        }
        Compression::Zstd => {
            let run = zstd_stream(
                &mut data,
                level,
                threads as u32,
                |b| diff.update(b),
                &mut out,
            )?;
            zstd_levels = Some(run.levels);
        }
    }
    let file_size = diff.len();
    let diff_id = diff.finish();
    Ok(Ingested {
        layer: out.into_layer(target, diff_id),
        file_digest: diff_id,
        file_size,
        zstd_levels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        let data = b"hello layer\n".repeat(1000);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "f", &data[..]).unwrap();
        b.into_inner().unwrap()
    }

    /// Each target compression, then the compressed blob fed back in as a stored layer:
    /// the same diff_id both ways, and the sink got exactly the blob.
    #[test]
    fn compresses_and_stores_with_matching_diff_ids() {
        let plain = tar();
        for target in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let mut input = &plain[..];
            let (kind, data) = sniff(plain.len() as u64, &mut input).unwrap();
            assert_eq!(kind, Detected::Plain);
            let mut blob = Vec::new();
            let a = ingest("l", kind, data, target, target.default_level(), &mut blob).unwrap();
            assert_eq!(a.layer.diff_id, Digest::of(&plain));
            assert_eq!(a.layer.digest, Digest::of(&blob));
            assert_eq!(a.layer.size, blob.len() as u64);
            assert_eq!(a.file_size, plain.len() as u64);
            if target == Compression::None {
                continue;
            }
            let mut input = &blob[..];
            let (kind, data) = sniff(blob.len() as u64, &mut input).unwrap();
            let mut again = Vec::new();
            let b = ingest("l", kind, data, Compression::None, 0, &mut again).unwrap();
            assert_eq!(b.layer.compression, target);
            assert_eq!(b.layer.diff_id, a.layer.diff_id);
            assert_eq!(b.file_digest, a.layer.digest);
            assert_eq!(again, blob);
        }
    }
}
