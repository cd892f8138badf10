//! zstd compression with the library's own worker threads.

use super::{read_full, GZIP_BLOCK};
use anyhow::Result;
use std::io::{Read, Write};

/// zstd with the library's own worker threads. Returns the number of input bytes.
pub fn zstd_stream<R: Read, W: Write>(
    mut input: R,
    level: i32,
    threads: u32,
    mut on_input: impl FnMut(&[u8]),
    out: W,
) -> Result<u64> {
    let mut enc = ::zstd::stream::write::Encoder::new(out, level)?;
    if threads > 1 {
        enc.multithread(threads)?;
    }
    let mut buf = vec![0u8; GZIP_BLOCK];
    let mut total = 0u64;
    loop {
        let n = read_full(&mut input, &mut buf)?;
        if n == 0 {
            break;
        }
        on_input(&buf[..n]);
        enc.write_all(&buf[..n])?;
        total += n as u64;
    }
    enc.finish()?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::super::{detect, testdata::sample, Detected};
    use super::*;

    #[test]
    fn zstd_round_trips() {
        let data = sample(2 * GZIP_BLOCK + 7);
        let mut out = Vec::new();
        zstd_stream(&data[..], 3, 2, |_| {}, &mut out).unwrap();
        assert_eq!(detect(&out), Detected::Zstd);
        assert_eq!(::zstd::decode_all(&out[..]).unwrap(), data);
    }
}
