//! Layer compression: pigz-style parallel gzip (independently deflated blocks
//! joined by sync flushes, one gzip member), multithreaded zstd, and detection of
//! compressed input by magic bytes.

mod detect;
mod diffid;
mod gunzip;
mod gzip;
mod io;
mod zstd;

pub use self::zstd::{zstd_stream, Gauge, Level, SinkGauge, ZstdRun, ADAPT_MAX, ADAPT_MIN};
pub use detect::{decompressing_reader, detect, Compression, Detected, PushCompression};
pub use diffid::{Decompressed, DiffIdHasher, Plain, PlainSink, MAX_RATIO};
pub use gzip::{gzip_parallel, GZIP_BLOCK};
pub use io::{copy_large, read_full};

/// Deterministic, partly compressible test data shared by the codec tests.
#[cfg(test)]
pub(crate) mod testdata {
    pub(crate) fn sample(len: usize) -> Vec<u8> {
        let mut x: u32 = 1;
        (0..len)
            .map(|i| {
                x = x.wrapping_mul(1664525).wrapping_add(1013904223);
                if i % 3 == 0 {
                    (x >> 24) as u8
                } else {
                    b'a' + (i % 7) as u8
                }
            })
            .collect()
    }
}
