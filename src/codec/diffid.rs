//! diff_id computation: a layer's compressed bytes in, the sha256 of its plain
//! stream out, decoded on two pipelined threads with bounded buffers.

use super::gunzip::GzipDecoder;
use super::Compression;
use anyhow::{bail, Result};
use std::io::Write;

/// Computes a diff_id (sha256 of the decompressed stream) while the caller streams
/// compressed bytes elsewhere; optionally also passes the decompressed bytes on.
///
/// Two pipelined threads, so that on two cores decompression and hashing overlap: one
/// decompresses the fed chunks in place (no copy of the compressed bytes) into a small
/// pool of buffers, the other hashes (and spools) the full buffers and hands them back.
/// gzip is decoded as raw deflate behind our own header/trailer parser, which checks
/// each member's CRC-32 and length (ISIZE) as docker does.
pub struct DiffIdHasher {
    tx: Option<std::sync::mpsc::SyncSender<bytes::Bytes>>,
    decode: Option<std::thread::JoinHandle<Result<()>>>,
    hash: Option<std::thread::JoinHandle<Result<Decompressed>>>,
}

pub struct Decompressed {
    pub diff_id: crate::model::digest::Digest,
    pub size: u64,
    /// The spool file, when the plain bytes went to one.
    pub spool: Option<std::fs::File>,
}

/// Where a layer's decompressed bytes go besides the hash.
pub enum Plain {
    /// A file, handed back by `finish_spooled`.
    Spool(std::fs::File),
    /// A consumer on the hashing thread: `write` each piece, then `end` with the size.
    Stream(Box<dyn PlainSink>),
}

pub trait PlainSink: Send {
    fn write(&mut self, data: &[u8]) -> Result<()>;
    /// Every byte was written: `size` in all.
    fn end(&mut self, size: u64) -> Result<()>;
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
        Self::with_output(c, None)
    }

    pub fn with_output(c: Compression, mut plain: Option<Plain>) -> Self {
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
                    match &mut plain {
                        Some(Plain::Spool(f)) => f.write_all(&buf[..n])?,
                        Some(Plain::Stream(s)) => s.write(&buf[..n])?,
                        None => {}
                    }
                    let _ = free_tx.send(buf);
                }
                let size = h.len();
                let spool = match plain {
                    Some(Plain::Spool(f)) => Some(f),
                    Some(Plain::Stream(mut s)) => {
                        s.end(size)?;
                        None
                    }
                    None => None,
                };
                Ok(Decompressed {
                    size,
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

    /// No more input: the threads finish on their own, without waiting for `finish`
    /// (a streamed output must end before the next layer's may begin).
    pub fn close(&mut self) {
        self.tx.take();
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

#[cfg(test)]
mod tests {
    use super::super::{gzip_parallel, testdata::sample};
    use super::*;
    use std::io::Read;

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
        // docker refuses a wrong CRC-32 even though sha256 covers the content: so do we.
        let mut bad_crc = gz.clone();
        bad_crc[n - 8] ^= 1;
        let e = diff_of(Compression::Gzip, &bad_crc, 4096).unwrap_err();
        assert!(e.to_string().contains("CRC-32"), "{e}");
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
        let d = DiffIdHasher::with_output(Compression::None, Some(Plain::Spool(spool)));
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

    /// A streamed output sees every plain byte in order, then `end` with their count.
    #[test]
    fn plain_stream_sees_every_byte_then_the_end() {
        struct Collect(std::sync::Arc<std::sync::Mutex<(Vec<u8>, Option<u64>)>>);
        impl PlainSink for Collect {
            fn write(&mut self, data: &[u8]) -> Result<()> {
                self.0.lock().unwrap().0.extend_from_slice(data);
                Ok(())
            }
            fn end(&mut self, size: u64) -> Result<()> {
                self.0.lock().unwrap().1 = Some(size);
                Ok(())
            }
        }
        let data = sample(3 * PLAIN_BUF + 11);
        let z = ::zstd::encode_all(&data[..], 3).unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new((Vec::new(), None)));
        let d = DiffIdHasher::with_output(
            Compression::Zstd,
            Some(Plain::Stream(Box::new(Collect(seen.clone())))),
        );
        for piece in z.chunks(7777) {
            d.feed(bytes::Bytes::copy_from_slice(piece));
        }
        let out = d.finish_spooled().unwrap();
        assert!(out.spool.is_none());
        let seen = seen.lock().unwrap();
        assert_eq!(seen.1, Some(data.len() as u64));
        assert!(seen.0 == data);
        assert_eq!(out.diff_id, crate::model::digest::Digest::of(&data));
    }
}
