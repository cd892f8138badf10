//! zstd compression with the library's own worker threads, at a fixed level or at one
//! adapted to how fast the output is taken away.

use super::{read_full, GZIP_BLOCK};
use anyhow::Result;
use std::io::{Read, Write};
use std::sync::Arc;

/// Levels `--compression auto` moves between. The window stays that of the starting level
/// (libzstd keeps it for the frame), but each level's match tables grow with it: a push
/// that reached 13 peaked at 338 MiB RSS (80 MiB above level 3), one that reached 9 at
/// 310 MiB; level 9's match tables are twice level 8's (12 vs 6 MiB per worker).
pub const ADAPT_MIN: i32 = 1;
pub const ADAPT_MAX: i32 = 8;
/// Input between two level decisions: several MT jobs, so a change shows in the sink's fill
/// before the next decision reads it (every 8 MiB swung between levels 1 and 8 at 200 Mbit/s
/// and uploaded 664 MB against zstd -3's 656 MB; every 32 MiB, 657 MB).
const ADAPT_EVERY: u64 = 32 << 20;

/// How full the sink's buffer is: 0.0 when it holds nothing (the link waits for the
/// compressor) up to 1.0 when the compressor must wait for the link.
pub type Fill = Arc<dyn Fn() -> f64 + Send + Sync>;

/// A compression level, or (zstd only) a starting level to adapt.
#[derive(Clone)]
pub enum Level {
    Fixed(i32),
    /// Start at this level, then raise it while the sink's buffer stays nearly full (the
    /// link is the bottleneck: spend the idle CPU on ratio) and lower it while the buffer
    /// runs nearly empty (the link is about to wait for the compressor). Like `zstd --adapt`,
    /// which steers by its output buffer too.
    Adaptive(i32, Fill),
}

impl Level {
    /// The level to start at (the only one for codecs that do not adapt).
    pub fn start(&self) -> i32 {
        match self {
            Level::Fixed(l) | Level::Adaptive(l, _) => *l,
        }
    }
}

/// What a `zstd_stream` did.
#[derive(Clone, Copy, Debug, Default)]
pub struct ZstdRun {
    pub input_bytes: u64,
    /// Lowest, last and highest level used.
    pub levels: (i32, i32, i32),
}

/// The next level from the sink's fill now and at the last decision. A level moves only
/// while the fill is out of the band and still heading out: once it heads back, the last
/// change is taking effect.
fn next_level(level: i32, fill: f64, last: f64) -> i32 {
    if fill > 0.8 && fill >= last {
        (level + 1).min(ADAPT_MAX)
    } else if fill < 0.3 && fill <= last {
        (level - 1).max(ADAPT_MIN)
    } else {
        level
    }
}

/// zstd with the library's own worker threads: one frame, whatever the level changes.
pub fn zstd_stream<R: Read, W: Write>(
    mut input: R,
    level: Level,
    threads: u32,
    mut on_input: impl FnMut(&[u8]),
    out: W,
) -> Result<ZstdRun> {
    let (mut lvl, fill) = match level {
        Level::Fixed(l) => (l, None),
        Level::Adaptive(l, fill) => (l.clamp(ADAPT_MIN, ADAPT_MAX), Some(fill)),
    };
    let mut enc = ::zstd::stream::write::Encoder::new(out, lvl)?;
    if threads > 1 {
        enc.multithread(threads)?;
    }
    let mut run = ZstdRun {
        input_bytes: 0,
        levels: (lvl, lvl, lvl),
    };
    let mut buf = vec![0u8; GZIP_BLOCK];
    let (mut mark_bytes, mut last_fill) = (0u64, 0.5);
    loop {
        let n = read_full(&mut input, &mut buf)?;
        if n == 0 {
            break;
        }
        on_input(&buf[..n]);
        enc.write_all(&buf[..n])?;
        run.input_bytes += n as u64;
        let Some(fill) = fill.as_ref() else { continue };
        if run.input_bytes - mark_bytes >= ADAPT_EVERY {
            let now = fill();
            let next = next_level(lvl, now, last_fill);
            last_fill = now;
            if next != lvl {
                // libzstd applies a new level to the next MT jobs of the same frame.
                enc.set_parameter(::zstd::stream::raw::CParameter::CompressionLevel(next))?;
                lvl = next;
                run.levels.0 = run.levels.0.min(lvl);
                run.levels.2 = run.levels.2.max(lvl);
            }
            mark_bytes = run.input_bytes;
        }
    }
    run.levels.1 = lvl;
    enc.finish()?;
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::super::{detect, testdata::sample, Detected};
    use super::*;

    #[test]
    fn zstd_round_trips() {
        let data = sample(2 * GZIP_BLOCK + 7);
        let mut out = Vec::new();
        zstd_stream(&data[..], Level::Fixed(3), 2, |_| {}, &mut out).unwrap();
        assert_eq!(detect(&out), Detected::Zstd);
        assert_eq!(::zstd::decode_all(&out[..]).unwrap(), data);
    }

    /// A full sink drives the level up, an empty one down; the output is still one valid
    /// zstd stream of the input.
    #[test]
    fn adaptive_level_follows_the_sink_fill_and_stays_valid() {
        let data = sample(40 << 20);
        for (fill, moved) in [(1.0, 4..=ADAPT_MAX), (0.0, ADAPT_MIN..=2)] {
            let mut out = Vec::new();
            let level = Level::Adaptive(3, Arc::new(move || fill));
            let run = zstd_stream(&data[..], level, 2, |_| {}, &mut out).unwrap();
            assert_eq!(run.input_bytes, data.len() as u64);
            assert!(
                moved.contains(&run.levels.1),
                "fill {fill}: levels {:?}",
                run.levels
            );
            assert_eq!(::zstd::decode_all(&out[..]).unwrap(), data);
        }
    }

    #[test]
    fn level_steps() {
        assert_eq!(next_level(3, 1.0, 1.0), 4);
        assert_eq!(next_level(ADAPT_MAX, 1.0, 0.9), ADAPT_MAX);
        assert_eq!(next_level(3, 0.0, 0.0), 2);
        assert_eq!(next_level(ADAPT_MIN, 0.0, 0.1), ADAPT_MIN);
        assert_eq!(next_level(5, 0.5, 0.5), 5);
        // Out of the band but already heading back: hold.
        assert_eq!(next_level(5, 0.9, 1.0), 5);
        assert_eq!(next_level(5, 0.2, 0.1), 5);
    }
}
