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
