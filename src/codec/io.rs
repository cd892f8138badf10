//! Read/copy helpers with large buffers.

use super::GZIP_BLOCK;
use std::io::{Read, Write};

/// `std::io::copy` with 1 MiB reads: its 8 KiB default costs a lot through the stacked
/// readers of an archive stream (decompressor, tar entry, size check).
pub fn copy_large<R: Read + ?Sized, W: Write + ?Sized>(
    r: &mut R,
    w: &mut W,
) -> std::io::Result<u64> {
    let mut buf = vec![0u8; GZIP_BLOCK];
    let mut total = 0;
    loop {
        let n = read_full(r, &mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        w.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// Reads until `buf` is full or the input ends.
pub fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
