//! How a layer is compressed: part of its media type, so it belongs to the model;
//! the codecs themselves are in `codec`.

use anyhow::{bail, Result};
use std::str::FromStr;

/// A layer's compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    pub fn default_level(self) -> i32 {
        match self {
            Compression::None => 0,
            // Level 1 keeps a push close to the speed of the network and disk on 2 cores;
            // `--level` trades speed for size.
            Compression::Gzip => 1,
            Compression::Zstd => 3,
        }
    }
}

impl FromStr for Compression {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            _ => bail!("unknown compression {s:?}: use gzip, zstd or none"),
        }
    }
}

/// What a push is asked for: one compression, or `auto` (zstd, its level chosen while the
/// layer streams from how fast the store takes the output, see `codec::Level::Adaptive`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushCompression {
    Fixed(Compression),
    Auto,
}

impl PushCompression {
    pub fn name(self) -> &'static str {
        match self {
            PushCompression::Fixed(c) => c.name(),
            PushCompression::Auto => "auto",
        }
    }

    /// The compression the layers are stored in.
    pub fn codec(self) -> Compression {
        match self {
            PushCompression::Fixed(c) => c,
            PushCompression::Auto => Compression::Zstd,
        }
    }
}

impl From<Compression> for PushCompression {
    fn from(c: Compression) -> Self {
        PushCompression::Fixed(c)
    }
}

impl FromStr for PushCompression {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(PushCompression::Auto),
            _ => s.parse().map(PushCompression::Fixed).map_err(|_| {
                anyhow::anyhow!("unknown compression {s:?}: use gzip, zstd, auto or none")
            }),
        }
    }
}
