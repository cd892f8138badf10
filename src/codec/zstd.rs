//! zstd compression with the library's own worker threads, at a fixed level or at one
//! adapted to how fast the output is taken away.

use super::{read_full, GZIP_BLOCK};
use anyhow::Result;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// Levels `--compression auto` moves between. The window stays that of the starting level
/// (libzstd keeps it for the frame), but each level's match tables grow with it: a push
/// that reached 13 peaked at 338 MiB RSS (80 MiB above level 3), one that reached 9 at
/// 310 MiB; level 9's match tables are twice level 8's (12 vs 6 MiB per worker).
pub const ADAPT_MIN: i32 = 1;
pub const ADAPT_MAX: i32 = 8;
/// Input between two level decisions: several MT jobs, so each decision sees a steady rate.
const ADAPT_EVERY: u64 = 8 << 20;

/// A compression level, or (zstd only) a starting level to adapt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Fixed(i32),
    /// Start at this level, then raise it while the sink makes the compressor wait (the
    /// link is the bottleneck: spend the idle CPU on ratio) and lower it while the sink
    /// never waits (the compressor is the bottleneck). Like `zstd --adapt`.
    Adaptive(i32),
}

impl Level {
    /// The level to start at (the only one for codecs that do not adapt).
    pub fn start(self) -> i32 {
        match self {
            Level::Fixed(l) | Level::Adaptive(l) => l,
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

/// Counts the time spent in the sink's writes (blocked on the upload's back-pressure).
struct Timed<W> {
    inner: W,
    blocked: Duration,
}

impl<W: Write> Write for Timed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let t = Instant::now();
        let r = self.inner.write(buf);
        self.blocked += t.elapsed();
        r
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The next level from the share of the last period spent waiting on the sink.
fn next_level(level: i32, waited: f64) -> i32 {
    if waited > 0.25 {
        (level + 1).min(ADAPT_MAX)
    } else if waited < 0.02 {
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
    let (mut lvl, adaptive) = match level {
        Level::Fixed(l) => (l, false),
        Level::Adaptive(l) => (l.clamp(ADAPT_MIN, ADAPT_MAX), true),
    };
    let sink = Timed {
        inner: out,
        blocked: Duration::ZERO,
    };
    let mut enc = ::zstd::stream::write::Encoder::new(sink, lvl)?;
    if threads > 1 {
        enc.multithread(threads)?;
    }
    let mut run = ZstdRun {
        input_bytes: 0,
        levels: (lvl, lvl, lvl),
    };
    let mut buf = vec![0u8; GZIP_BLOCK];
    let (mut mark, mut mark_blocked, mut mark_bytes) = (Instant::now(), Duration::ZERO, 0u64);
    loop {
        let n = read_full(&mut input, &mut buf)?;
        if n == 0 {
            break;
        }
        on_input(&buf[..n]);
        enc.write_all(&buf[..n])?;
        run.input_bytes += n as u64;
        if adaptive && run.input_bytes - mark_bytes >= ADAPT_EVERY {
            let blocked = enc.get_ref().blocked;
            let waited = (blocked - mark_blocked).as_secs_f64() / mark.elapsed().as_secs_f64();
            let next = next_level(lvl, waited);
            if next != lvl {
                // libzstd applies a new level to the next MT jobs of the same frame.
                enc.set_parameter(::zstd::stream::raw::CParameter::CompressionLevel(next))?;
                lvl = next;
                run.levels.0 = run.levels.0.min(lvl);
                run.levels.2 = run.levels.2.max(lvl);
            }
            (mark, mark_blocked, mark_bytes) = (Instant::now(), blocked, run.input_bytes);
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

    /// A sink that makes the compressor wait drives the level up; the output is still one
    /// valid zstd stream of the input.
    #[test]
    fn adaptive_level_rises_on_a_slow_sink_and_stays_valid() {
        struct Slow(Vec<u8>);
        impl Write for Slow {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                std::thread::sleep(Duration::from_millis(20));
                self.0.extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let data = sample(40 << 20);
        let mut out = Slow(Vec::new());
        let run = zstd_stream(&data[..], Level::Adaptive(3), 2, |_| {}, &mut out).unwrap();
        assert_eq!(run.input_bytes, data.len() as u64);
        assert!(run.levels.2 > 3, "levels {:?}", run.levels);
        assert_eq!(::zstd::decode_all(&out.0[..]).unwrap(), data);
    }

    #[test]
    fn level_steps() {
        assert_eq!(next_level(3, 0.5), 4);
        assert_eq!(next_level(ADAPT_MAX, 0.9), ADAPT_MAX);
        assert_eq!(next_level(3, 0.0), 2);
        assert_eq!(next_level(ADAPT_MIN, 0.0), ADAPT_MIN);
        assert_eq!(next_level(5, 0.1), 5);
    }
}
