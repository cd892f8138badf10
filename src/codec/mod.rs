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

/// Computes a diff_id (sha256 of the decompressed stream) while the caller streams
/// compressed bytes elsewhere; optionally also spools the decompressed bytes to a file.
///
/// Two pipelined threads, so that on two cores decompression and hashing overlap: one
/// decompresses the fed chunks in place (no copy of the compressed bytes) into a small
/// pool of buffers, the other hashes (and spools) the full buffers and hands them back.
/// gzip is decoded as raw deflate behind our own header/trailer parser: the CRC-32 that
/// a gzip decoder computes would be a second pass over every plain byte, and sha256
/// already checks them; the trailer's length (ISIZE) is still checked.
pub struct DiffIdHasher {
    tx: Option<std::sync::mpsc::SyncSender<bytes::Bytes>>,
    decode: Option<std::thread::JoinHandle<Result<()>>>,
    hash: Option<std::thread::JoinHandle<Result<Decompressed>>>,
}

pub struct Decompressed {
    pub diff_id: crate::model::digest::Digest,
    pub size: u64,
    pub spool: Option<std::fs::File>,
}

/// Decompressed output may exceed the compressed input by this factor (past
/// MIN_BOMB_CHECK) before the stream is refused as a decompression bomb. Real
/// layers rarely pass 20:1; gzip's own ceiling is about 1032:1.
pub const MAX_RATIO: u64 = 200;
const MIN_BOMB_CHECK: u64 = 256 << 20;

/// Plain-output buffers between the decoding and the hashing thread: their number and
/// size bound the memory of one layer's check (plus the fed chunks in flight).
const PLAIN_BUFS: usize = 4;
const PLAIN_BUF: usize = 1 << 20;

impl DiffIdHasher {
    pub fn new(c: Compression) -> Self {
        Self::with_spool(c, None)
    }

    pub fn with_spool(c: Compression, mut spool: Option<std::fs::File>) -> Self {
        use std::sync::mpsc::sync_channel;
        let (tx, rx) = sync_channel::<bytes::Bytes>(2);
        let (full_tx, full_rx) = sync_channel::<(Vec<u8>, usize)>(PLAIN_BUFS);
        let (free_tx, free_rx) = sync_channel::<Vec<u8>>(PLAIN_BUFS);
        for _ in 0..PLAIN_BUFS {
            free_tx
                .send(vec![0u8; PLAIN_BUF])
                .expect("room for every buffer");
        }
        let decode = std::thread::Builder::new()
            .name("diffid-decode".into())
            .spawn(move || decode_layer(c, rx, full_tx, free_rx))
            .expect("spawn decoding thread");
        let hash = std::thread::Builder::new()
            .name("diffid-hash".into())
            .spawn(move || -> Result<Decompressed> {
                let mut h = crate::model::digest::Hasher::new();
                for (buf, n) in full_rx.iter() {
                    h.update(&buf[..n]);
                    if let Some(f) = &mut spool {
                        f.write_all(&buf[..n])?;
                    }
                    let _ = free_tx.send(buf);
                }
                Ok(Decompressed {
                    size: h.len(),
                    diff_id: h.finish(),
                    spool,
                })
            })
            .expect("spawn hashing thread");
        DiffIdHasher {
            tx: Some(tx),
            decode: Some(decode),
            hash: Some(hash),
        }
    }

    /// Passes compressed bytes on. A decoder that stopped early reports why in `finish`.
    pub fn feed(&self, data: bytes::Bytes) {
        let _ = self.tx.as_ref().expect("not finished").send(data);
    }

    pub fn finish(self) -> Result<crate::model::digest::Digest> {
        Ok(self.finish_spooled()?.diff_id)
    }

    pub fn finish_spooled(mut self) -> Result<Decompressed> {
        self.tx.take();
        let decoded = self
            .decode
            .take()
            .expect("thread")
            .join()
            .map_err(|_| anyhow::anyhow!("decompression thread panicked"))?;
        let hashed = self
            .hash
            .take()
            .expect("thread")
            .join()
            .map_err(|_| anyhow::anyhow!("hashing thread panicked"))?;
        decoded?;
        hashed
    }
}

/// The decoding thread: compressed chunks from `rx`, plain buffers to `full` (taken from
/// `free`). Returns Ok early if the hashing thread is gone: its own error is reported.
fn decode_layer(
    c: Compression,
    rx: std::sync::mpsc::Receiver<bytes::Bytes>,
    full: std::sync::mpsc::SyncSender<(Vec<u8>, usize)>,
    free: std::sync::mpsc::Receiver<Vec<u8>>,
) -> Result<()> {
    let mut dec = LayerDecoder::new(c)?;
    let (mut total_in, mut total_out) = (0u64, 0u64);
    let Ok(mut buf) = free.recv() else {
        return Ok(());
    };
    let mut filled = 0;
    // Hands the full buffer to the hasher and takes an empty one back.
    macro_rules! rotate {
        () => {{
            if full.send((buf, filled)).is_err() {
                return Ok(());
            }
            buf = match free.recv() {
                Ok(b) => b,
                Err(_) => return Ok(()),
            };
            filled = 0;
        }};
    }
    for chunk in rx.iter() {
        let mut pos = 0;
        while pos < chunk.len() {
            if filled == buf.len() {
                rotate!();
            }
            let (c, p) = dec.run(&chunk[pos..], &mut buf[filled..])?;
            if c == 0 && p == 0 {
                bail!("the {} decoder made no progress", c_name(&dec));
            }
            pos += c;
            filled += p;
            total_in += c as u64;
            total_out += p as u64;
            if total_out > MIN_BOMB_CHECK && total_out > total_in.saturating_mul(MAX_RATIO) {
                bail!(
                    "layer expands more than {MAX_RATIO}:1 when decompressed ({total_out} bytes from {total_in}): refusing it as a decompression bomb"
                );
            }
        }
    }
    loop {
        if filled == buf.len() {
            rotate!();
        }
        let p = dec.finish(&mut buf[filled..])?;
        if p == 0 {
            break;
        }
        filled += p;
    }
    if filled > 0 {
        let _ = full.send((buf, filled));
    }
    Ok(())
}

fn c_name(d: &LayerDecoder) -> &'static str {
    match d {
        LayerDecoder::Plain => "plain",
        LayerDecoder::Gzip(_) => "gzip",
        LayerDecoder::Zstd { .. } => "zstd",
    }
}

/// A streaming decoder fed arbitrary slices of one layer's compressed bytes.
enum LayerDecoder {
    Plain,
    Gzip(Box<GzipDecoder>),
    Zstd {
        dec: zstd::stream::raw::Decoder<'static>,
        /// The last call ended a frame (and flushed it).
        at_frame_end: bool,
    },
}

impl LayerDecoder {
    fn new(c: Compression) -> Result<Self> {
        Ok(match c {
            Compression::None => LayerDecoder::Plain,
            Compression::Gzip => LayerDecoder::Gzip(Box::new(GzipDecoder::new())),
            Compression::Zstd => LayerDecoder::Zstd {
                dec: zstd::stream::raw::Decoder::new()?,
                at_frame_end: false,
            },
        })
    }

    /// Decodes from `input` into `out`: (bytes consumed, bytes produced).
    fn run(&mut self, input: &[u8], out: &mut [u8]) -> Result<(usize, usize)> {
        match self {
            LayerDecoder::Plain => {
                let n = input.len().min(out.len());
                out[..n].copy_from_slice(&input[..n]);
                Ok((n, n))
            }
            LayerDecoder::Gzip(g) => g.run(input, out),
            LayerDecoder::Zstd { dec, at_frame_end } => {
                use zstd::stream::raw::Operation;
                let st = dec.run_on_buffers(input, out)?;
                if st.bytes_read > 0 || st.bytes_written > 0 {
                    *at_frame_end = st.remaining == 0;
                }
                Ok((st.bytes_read, st.bytes_written))
            }
        }
    }

    /// After the last input: flushes what is still buffered (call until it returns 0),
    /// then fails if the stream is incomplete.
    fn finish(&mut self, out: &mut [u8]) -> Result<usize> {
        let (_, p) = self.run(&[], out)?;
        if p > 0 {
            return Ok(p);
        }
        match self {
            LayerDecoder::Plain => {}
            LayerDecoder::Gzip(g) => g.check_end()?,
            LayerDecoder::Zstd { at_frame_end, .. } => {
                if !*at_frame_end {
                    bail!("truncated zstd stream (incomplete frame)");
                }
            }
        }
        Ok(0)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum GzState {
    /// Before a member's header: the start, or after a member's trailer.
    Header,
    Body,
    Trailer,
}

/// Multi-member gzip (RFC 1952) as raw deflate behind our own header/trailer parser.
struct GzipDecoder {
    state: GzState,
    /// A header split across fed chunks.
    pending: Vec<u8>,
    trailer: [u8; 8],
    trailer_len: usize,
    inflate: flate2::Decompress,
    member_out: u64,
    members: u64,
}

/// Longer headers (a huge FEXTRA, file name or comment) are refused.
const MAX_GZIP_HEADER: usize = 1 << 20;

/// The length of the gzip member header at the start of `b`, or None if `b` ends first.
fn gzip_header_len(b: &[u8]) -> Result<Option<usize>> {
    if b.len() < 10 {
        if !b.is_empty() && b[0] != 0x1f || b.len() > 1 && b[1] != 0x8b {
            bail!("not a gzip stream (bad magic bytes)");
        }
        return Ok(None);
    }
    if b[0] != 0x1f || b[1] != 0x8b {
        bail!("not a gzip stream (bad magic bytes)");
    }
    if b[2] != 8 {
        bail!("gzip compression method {} is not deflate", b[2]);
    }
    let flags = b[3];
    if flags & 0xe0 != 0 {
        bail!("gzip header has reserved flags set ({flags:#04x})");
    }
    let mut n = 10;
    if flags & 0x04 != 0 {
        // FEXTRA: XLEN then XLEN bytes.
        let Some(x) = b.get(n..n + 2) else {
            return Ok(None);
        };
        n += 2 + u16::from_le_bytes([x[0], x[1]]) as usize;
    }
    for flag in [0x08, 0x10] {
        // FNAME, FCOMMENT: zero-terminated.
        if flags & flag != 0 {
            match b.get(n..).and_then(|s| s.iter().position(|&c| c == 0)) {
                Some(z) => n += z + 1,
                None => return Ok(None),
            }
        }
    }
    if flags & 0x02 != 0 {
        n += 2; // FHCRC
    }
    Ok((n <= b.len()).then_some(n))
}

impl GzipDecoder {
    fn new() -> Self {
        GzipDecoder {
            state: GzState::Header,
            pending: Vec::new(),
            trailer: [0; 8],
            trailer_len: 0,
            inflate: flate2::Decompress::new(false),
            member_out: 0,
            members: 0,
        }
    }

    /// Parses a header from `pending` + `avail`: Some(bytes of `avail` it used),
    /// or None once all of `avail` is kept in `pending` for the next call.
    fn parse_split(
        &mut self,
        avail: &[u8],
        parse: impl Fn(&[u8]) -> Result<Option<usize>>,
    ) -> Result<Option<usize>> {
        let before = self.pending.len();
        let parsed = if before == 0 {
            parse(avail)?
        } else {
            let take = avail.len().min(MAX_GZIP_HEADER + 1 - before);
            self.pending.extend_from_slice(&avail[..take]);
            parse(&self.pending)?
        };
        match parsed {
            Some(n) => {
                self.pending.clear();
                Ok(Some(n - before))
            }
            None => {
                if before == 0 {
                    self.pending
                        .extend_from_slice(&avail[..avail.len().min(MAX_GZIP_HEADER + 1)]);
                }
                if self.pending.len() > MAX_GZIP_HEADER {
                    bail!("gzip header longer than {MAX_GZIP_HEADER} bytes");
                }
                Ok(None)
            }
        }
    }

    fn run(&mut self, input: &[u8], out: &mut [u8]) -> Result<(usize, usize)> {
        let mut used = 0;
        loop {
            let avail = &input[used..];
            match self.state {
                GzState::Header | GzState::Trailer if avail.is_empty() => return Ok((used, 0)),
                GzState::Header => match self.parse_split(avail, gzip_header_len)? {
                    Some(n) => {
                        used += n;
                        self.state = GzState::Body;
                    }
                    None => return Ok((input.len(), 0)),
                },
                GzState::Trailer => {
                    let take = (8 - self.trailer_len).min(avail.len());
                    self.trailer[self.trailer_len..self.trailer_len + take]
                        .copy_from_slice(&avail[..take]);
                    self.trailer_len += take;
                    used += take;
                    if self.trailer_len < 8 {
                        return Ok((used, 0));
                    }
                    self.trailer_len = 0;
                    // CRC-32 (bytes 0..4) is not checked: sha256 covers every byte.
                    let t = &self.trailer;
                    let isize = u32::from_le_bytes([t[4], t[5], t[6], t[7]]);
                    if isize != self.member_out as u32 {
                        bail!(
                            "gzip trailer says {isize} bytes (mod 2^32) but the member decompressed to {}",
                            self.member_out
                        );
                    }
                    self.members += 1;
                    self.member_out = 0;
                    self.state = GzState::Header;
                }
                GzState::Body => {
                    let (in0, out0) = (self.inflate.total_in(), self.inflate.total_out());
                    let st = self
                        .inflate
                        .decompress(avail, out, flate2::FlushDecompress::None)
                        .map_err(|e| anyhow::anyhow!("invalid deflate data in gzip stream: {e}"))?;
                    let c = (self.inflate.total_in() - in0) as usize;
                    let p = (self.inflate.total_out() - out0) as usize;
                    used += c;
                    self.member_out += p as u64;
                    if st == Status::StreamEnd {
                        self.state = GzState::Trailer;
                        self.inflate.reset(false);
                    }
                    if p > 0 || self.state == GzState::Body {
                        return Ok((used, p));
                    }
                }
            }
        }
    }

    fn check_end(&self) -> Result<()> {
        match self.state {
            GzState::Header if self.pending.is_empty() && self.members > 0 => Ok(()),
            GzState::Header if self.pending.is_empty() => bail!("empty gzip stream"),
            _ => bail!("truncated gzip stream"),
        }
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

    /// diff_id and size through `DiffIdHasher`, fed in `chunk`-byte pieces.
    fn diff_of(
        c: Compression,
        data: &[u8],
        chunk: usize,
    ) -> Result<(crate::model::digest::Digest, u64)> {
        let d = DiffIdHasher::new(c);
        for piece in data.chunks(chunk.max(1)) {
            d.feed(bytes::Bytes::copy_from_slice(piece));
        }
        let out = d.finish_spooled()?;
        Ok((out.diff_id, out.size))
    }

    fn gzip_with(data: &[u8], b: flate2::GzBuilder) -> Vec<u8> {
        let mut e = b.write(Vec::new(), flate2::Compression::new(6));
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzip_members_and_header_fields_split_anywhere() {
        let a = sample(3 * PLAIN_BUF + 777);
        let b = sample(5000);
        let mut gz = gzip_with(&a, flate2::GzBuilder::new());
        let fancy = flate2::GzBuilder::new()
            .filename("layer.tar")
            .comment("a comment")
            .extra(vec![7u8; 300]);
        gz.extend(gzip_with(&b, fancy));
        // Our own parallel output: sync-flushed blocks, empty final block.
        gzip_parallel(
            &b[..],
            1,
            2,
            |_| {},
            |o| {
                gz.extend_from_slice(o);
                Ok(())
            },
        )
        .unwrap();
        let plain = [&a[..], &b, &b].concat();
        let want = (crate::model::digest::Digest::of(&plain), plain.len() as u64);
        for chunk in [1, 2, 9, 10, 11, 4096, 1 << 20, gz.len()] {
            assert_eq!(
                diff_of(Compression::Gzip, &gz, chunk).unwrap(),
                want,
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn broken_gzip_is_refused() {
        let data = sample(100_000);
        let gz = gzip_with(&data, flate2::GzBuilder::new());
        let n = gz.len();
        let mut bad_len = gz.clone();
        bad_len[n - 1] ^= 1; // ISIZE
        let mut garbage = gz.clone();
        garbage.extend_from_slice(b"junk after the member");
        let mut bad_flags = gz.clone();
        bad_flags[3] = 0x80;
        for (what, bytes) in [
            ("truncated trailer", &gz[..n - 3]),
            ("truncated body", &gz[..n / 2]),
            ("header only", &gz[..10]),
            ("half a header", &gz[..5]),
            ("empty", &gz[..0]),
            ("wrong length", &bad_len[..]),
            ("trailing garbage", &garbage[..]),
            ("reserved flags", &bad_flags[..]),
            ("not gzip", &data[..1000]),
        ] {
            for chunk in [1, 7, 1 << 20] {
                assert!(
                    diff_of(Compression::Gzip, bytes, chunk).is_err(),
                    "{what} (chunk {chunk}) was accepted"
                );
            }
        }
        // The CRC-32 is not what protects the content (sha256 does): a wrong one passes.
        let mut bad_crc = gz.clone();
        bad_crc[n - 8] ^= 1;
        assert!(diff_of(Compression::Gzip, &bad_crc, 4096).is_ok());
    }

    #[test]
    fn zstd_frames_split_anywhere_and_truncation_refused() {
        let a = sample(2 * PLAIN_BUF + 3);
        let b = sample(999);
        let mut z = zstd::encode_all(&a[..], 3).unwrap();
        z.extend(zstd::encode_all(&b[..], 1).unwrap());
        let plain = [&a[..], &b].concat();
        let want = (crate::model::digest::Digest::of(&plain), plain.len() as u64);
        for chunk in [1, 5, 4096, z.len()] {
            assert_eq!(
                diff_of(Compression::Zstd, &z, chunk).unwrap(),
                want,
                "chunk {chunk}"
            );
        }
        for cut in [z.len() - 1, z.len() / 2, 3] {
            assert!(
                diff_of(Compression::Zstd, &z[..cut], 4096).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn plain_spool_passes_through() {
        let data = sample(PLAIN_BUF + 5);
        let spool = tempfile::tempfile().unwrap();
        let d = DiffIdHasher::with_spool(Compression::None, Some(spool));
        for piece in data.chunks(333_333) {
            d.feed(bytes::Bytes::copy_from_slice(piece));
        }
        let out = d.finish_spooled().unwrap();
        assert_eq!(out.diff_id, crate::model::digest::Digest::of(&data));
        let mut back = Vec::new();
        let mut f = out.spool.unwrap();
        std::io::Seek::rewind(&mut f).unwrap();
        f.read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
    }
}
