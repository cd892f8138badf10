//! Detection of compressed input by its magic bytes.

pub use crate::model::compression::{Compression, PushCompression};
use anyhow::{bail, Result};
use std::io::Read;

/// What a stream's first bytes say it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detected {
    Plain,
    Gzip,
    Zstd,
    Bzip2,
    Xz,
}

pub fn detect(head: &[u8]) -> Detected {
    if head.starts_with(&[0x1f, 0x8b, 0x08]) {
        Detected::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        // zstd skippable frames: 0x184D2A50..0x184D2A5F little-endian.
        || (head.len() >= 4 && head[1..4] == [0x2a, 0x4d, 0x18] && head[0] & 0xf0 == 0x50)
    {
        Detected::Zstd
    } else if head.starts_with(b"BZh") {
        Detected::Bzip2
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Detected::Xz
    } else {
        Detected::Plain
    }
}

/// A reader that decompresses gzip or zstd input and passes plain input through.
pub fn decompressing_reader<'a, R: Read + 'a>(kind: Detected, r: R) -> Result<Box<dyn Read + 'a>> {
    Ok(match kind {
        Detected::Plain => Box::new(r),
        Detected::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Detected::Zstd => Box::new(zstd::stream::read::Decoder::new(r)?),
        Detected::Bzip2 | Detected::Xz => {
            bail!("{kind:?} compression is not supported: decompress the input first (for example with bzip2 -d or xz -d)")
        }
    })
}
