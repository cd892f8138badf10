//! Layer compression: pigz-style parallel gzip (independently deflated blocks
//! joined by sync flushes, one gzip member), multithreaded zstd, and detection of
//! compressed input by magic bytes.

use anyhow::{bail, Result};
use flate2::{Compress, FlushCompress, Status};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::str::FromStr;

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

/// Block size for parallel gzip: large enough that the per-block sync flush and the
/// lost cross-block window cost well under 0.1 % in ratio.
pub const GZIP_BLOCK: usize = 1 << 20;

fn deflate_block(level: u32, data: &[u8]) -> Vec<u8> {
    let stored_len = data.len() + data.len().div_ceil(65535) * 5;
    let mut c = Compress::new(flate2::Compression::new(level), false);
    let mut out = Vec::with_capacity(data.len() + data.len() / 64 + 64);
    loop {
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&data[consumed..], &mut out, FlushCompress::Sync)
            .expect("deflate cannot fail on in-memory buffers");
        // Done once all input is in and the flush left spare room (nothing pending).
        if c.total_in() as usize == data.len() && out.len() < out.capacity() {
            break;
        }
        if status == Status::BufError || out.len() == out.capacity() {
            out.reserve(out.capacity() / 2 + 64);
        }
    }
    // Incompressible data (random bytes, already-compressed files): store it, as pigz does,
    // rather than let the fast levels expand it.
    if out.len() > stored_len {
        return stored_blocks(data);
    }
    out
}

/// Deflate stored blocks (BTYPE 00), byte-aligned like every block here.
fn stored_blocks(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len().div_ceil(65535) * 5);
    for chunk in data.chunks(65535) {
        let n = chunk.len() as u16;
        out.push(0); // BFINAL 0, BTYPE 00, padding to the byte boundary
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&(!n).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// Gzip-compresses `input` using the rayon pool. `on_input` sees every input byte in
/// order (for hashing), `on_output` every output byte in order. At most `window`
/// blocks are in flight, which bounds memory to about 2 × window × GZIP_BLOCK.
pub fn gzip_parallel<R: Read>(
    mut input: R,
    level: u32,
    window: usize,
    mut on_input: impl FnMut(&[u8]),
    mut on_output: impl FnMut(&[u8]) -> Result<()>,
) -> Result<u64> {
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Vec<u8>)>();
    let mut crc = crc32fast::Hasher::new();
    let mut total: u64 = 0;
    let (mut sent, mut next_out) = (0usize, 0usize);
    let mut ready: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
    on_output(&[0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0xff])?;
    let mut drain =
        |ready: &mut BTreeMap<usize, Vec<u8>>, next_out: &mut usize, wait: bool| -> Result<()> {
            if wait {
                let (i, v) = rx.recv().expect("compression worker alive");
                ready.insert(i, v);
            }
            while let Ok((i, v)) = rx.try_recv() {
                ready.insert(i, v);
            }
            while let Some(v) = ready.remove(next_out) {
                on_output(&v)?;
                *next_out += 1;
            }
            Ok(())
        };
    loop {
        let mut block = vec![0u8; GZIP_BLOCK];
        let n = read_full(&mut input, &mut block)?;
        if n == 0 {
            break;
        }
        block.truncate(n);
        on_input(&block);
        crc.update(&block);
        total += n as u64;
        let tx = tx.clone();
        let idx = sent;
        rayon::spawn(move || {
            let _ = tx.send((idx, deflate_block(level, &block)));
        });
        sent += 1;
        while sent - next_out >= window {
            drain(&mut ready, &mut next_out, true)?;
        }
        drain(&mut ready, &mut next_out, false)?;
    }
    while next_out < sent {
        drain(&mut ready, &mut next_out, true)?;
    }
    // A final empty fixed-Huffman block ends the deflate stream, then the gzip trailer.
    let mut tail = vec![0x03, 0x00];
    tail.extend_from_slice(&crc.finalize().to_le_bytes());
    tail.extend_from_slice(&(total as u32).to_le_bytes());
    on_output(&tail)?;
    Ok(total)
}

/// zstd with the library's own worker threads. Returns the number of input bytes.
pub fn zstd_stream<R: Read, W: Write>(
    mut input: R,
    level: i32,
    threads: u32,
    mut on_input: impl FnMut(&[u8]),
    out: W,
) -> Result<u64> {
    let mut enc = zstd::stream::write::Encoder::new(out, level)?;
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

/// Computes a diff_id (sha256 of the decompressed stream) on its own thread while
/// the caller streams compressed bytes elsewhere; optionally also spools the
/// decompressed bytes to a file.
pub struct DiffIdHasher {
    tx: Option<std::sync::mpsc::SyncSender<bytes::Bytes>>,
    join: Option<std::thread::JoinHandle<Result<Decompressed>>>,
}

pub struct Decompressed {
    pub diff_id: crate::digest::Digest,
    pub size: u64,
    pub spool: Option<std::fs::File>,
}

struct ChannelReader {
    rx: std::sync::mpsc::Receiver<bytes::Bytes>,
    cur: bytes::Bytes,
    /// Compressed bytes handed to the decoder so far.
    consumed: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Decompressed output may exceed the compressed input by this factor (past
/// MIN_BOMB_CHECK) before the stream is refused as a decompression bomb. Real
/// layers rarely pass 20:1; gzip's own ceiling is about 1032:1.
pub const MAX_RATIO: u64 = 200;
const MIN_BOMB_CHECK: u64 = 256 << 20;

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.recv() {
                Ok(b) => self.cur = b,
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        bytes::Buf::advance(&mut self.cur, n);
        self.consumed
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

impl DiffIdHasher {
    pub fn new(c: Compression) -> Self {
        Self::with_spool(c, None)
    }

    pub fn with_spool(c: Compression, mut spool: Option<std::fs::File>) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel(2);
        let kind = match c {
            Compression::None => Detected::Plain,
            Compression::Gzip => Detected::Gzip,
            Compression::Zstd => Detected::Zstd,
        };
        let join = std::thread::spawn(move || -> Result<Decompressed> {
            let consumed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
            let input = ChannelReader {
                rx,
                cur: bytes::Bytes::new(),
                consumed: consumed.clone(),
            };
            let mut r = decompressing_reader(kind, input)?;
            let mut h = crate::digest::Hasher::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = read_full(&mut r, &mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                let used = consumed.load(std::sync::atomic::Ordering::Relaxed);
                if h.len() > MIN_BOMB_CHECK && h.len() > used.saturating_mul(MAX_RATIO) {
                    bail!(
                        "layer expands more than {MAX_RATIO}:1 when decompressed ({} bytes from {used}): refusing it as a decompression bomb",
                        h.len()
                    );
                }
                if let Some(f) = &mut spool {
                    f.write_all(&buf[..n])?;
                }
            }
            // Drain anything after the compressed stream so the sender never blocks.
            std::io::copy(&mut r, &mut std::io::sink())?;
            Ok(Decompressed {
                size: h.len(),
                diff_id: h.finish(),
                spool,
            })
        });
        DiffIdHasher {
            tx: Some(tx),
            join: Some(join),
        }
    }

    /// Passes compressed bytes on. A decoder that stopped early reports why in `finish`.
    pub fn feed(&self, data: bytes::Bytes) {
        let _ = self.tx.as_ref().expect("not finished").send(data);
    }

    pub fn finish(self) -> Result<crate::digest::Digest> {
        Ok(self.finish_spooled()?.diff_id)
    }

    pub fn finish_spooled(mut self) -> Result<Decompressed> {
        self.tx.take();
        self.join
            .take()
            .expect("thread")
            .join()
            .map_err(|_| anyhow::anyhow!("decompression thread panicked"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: usize) -> Vec<u8> {
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

    #[test]
    fn parallel_gzip_round_trips() {
        for len in [0, 1, GZIP_BLOCK - 1, GZIP_BLOCK, 3 * GZIP_BLOCK + 12345] {
            let data = sample(len);
            let mut out = Vec::new();
            let mut seen = 0usize;
            gzip_parallel(
                &data[..],
                1,
                4,
                |b| seen += b.len(),
                |b| {
                    out.extend_from_slice(b);
                    Ok(())
                },
            )
            .unwrap();
            assert_eq!(seen, len);
            assert_eq!(detect(&out), Detected::Gzip);
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&out[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "len {len}");
        }
    }

    #[test]
    fn incompressible_data_is_stored_not_expanded() {
        let mut x: u64 = 7;
        let data: Vec<u8> = (0..3 * GZIP_BLOCK + 5)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut out = Vec::new();
        gzip_parallel(
            &data[..],
            1,
            4,
            |_| {},
            |b| {
                out.extend_from_slice(b);
                Ok(())
            },
        )
        .unwrap();
        assert!(
            out.len() < data.len() + data.len() / 1000 + 64,
            "{} for {}",
            out.len(),
            data.len()
        );
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&out[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn zstd_round_trips() {
        let data = sample(2 * GZIP_BLOCK + 7);
        let mut out = Vec::new();
        zstd_stream(&data[..], 3, 2, |_| {}, &mut out).unwrap();
        assert_eq!(detect(&out), Detected::Zstd);
        assert_eq!(zstd::decode_all(&out[..]).unwrap(), data);
    }
}
