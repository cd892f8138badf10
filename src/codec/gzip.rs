//! pigz-style parallel gzip: independently deflated blocks joined by sync flushes,
//! one gzip member.

use super::read_full;
use anyhow::Result;
use flate2::{Compress, FlushCompress, Status};
use std::collections::BTreeMap;
use std::io::Read;

/// Block size for parallel gzip: large enough that the per-block sync flush and the
/// lost cross-block window cost well under 0.1 % in ratio.
pub const GZIP_BLOCK: usize = 1 << 20;

/// A layer's first bytes go in pigz's 128 KiB blocks, so a small layer (most of an app
/// image's) still spreads over every thread; past this many bytes, blocks are GZIP_BLOCK.
const SMALL_BLOCKS_UNTIL: u64 = 8 << 20;
const SMALL_BLOCK: usize = 128 << 10;

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
        let size = match total < SMALL_BLOCKS_UNTIL {
            true => SMALL_BLOCK,
            false => GZIP_BLOCK,
        };
        let mut block = vec![0u8; size];
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

#[cfg(test)]
mod tests {
    use super::super::{detect, testdata::sample, Detected};
    use super::*;

    #[test]
    fn parallel_gzip_round_trips() {
        let past_small = SMALL_BLOCKS_UNTIL as usize + GZIP_BLOCK + 5;
        for len in [
            0,
            1,
            SMALL_BLOCK + 1,
            GZIP_BLOCK,
            3 * GZIP_BLOCK + 12345,
            past_small,
        ] {
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
}
