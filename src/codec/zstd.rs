//! zstd compression with the library's own worker threads, at a fixed level or at one
//! adapted to how fast the output is taken away.

use super::{read_full, GZIP_BLOCK};
use ::zstd::stream::raw::CParameter;
use ::zstd::zstd_safe::CCtx;
use anyhow::Result;
use std::cell::RefCell;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Levels `--compression auto` moves between. The window stays that of the starting level
/// (libzstd keeps it for the frame), but each level's match tables grow with it: a push
/// that reached 13 peaked at 338 MiB RSS (80 MiB above level 3), one that reached 9 at
/// 310 MiB; level 9's match tables are twice level 8's (12 vs 6 MiB per worker).
pub const ADAPT_MIN: i32 = 1;
pub const ADAPT_MAX: i32 = 8;
/// Input between two level decisions: several MT jobs, so a change shows in the sink's fill
/// before the next decision reads it (with an earlier, fill-only rule, every 8 MiB swung
/// between levels 1 and 8 at 200 Mbit/s).
const ADAPT_EVERY: u64 = 32 << 20;

/// What the sink tells `--compression auto`: how full its buffer is, 0.0 when it holds
/// nothing (the link waits for the compressor) up to 1.0 when the compressor must wait for
/// the link, and how long the compressor has waited for room in it, in all.
#[derive(Clone, Copy, Debug, Default)]
pub struct SinkGauge {
    pub fill: f64,
    pub waited: Duration,
}

pub type Gauge = Arc<dyn Fn() -> SinkGauge + Send + Sync>;

/// A compression level, or (zstd only) a starting level to adapt.
#[derive(Clone)]
pub enum Level {
    Fixed(i32),
    /// Start at this level, then raise it while the compressor waits for the sink (the link
    /// is the bottleneck: spend the idle CPU on ratio) and lower it while the sink's buffer
    /// runs nearly empty (the link is about to wait for the compressor). Like `zstd --adapt`,
    /// which steers by its output buffer too; see `next_level`.
    Adaptive(i32, Gauge),
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

/// Share of a window the compressor may spend waiting for the sink before it takes a higher
/// level: its output is then at least 1 / (1 - 0.35) = 1.5 times what the sink takes, which
/// covers the next level's slow-down (10-40 % per step up to level 8).
const RAISE_IDLE: f64 = 0.35;

/// The next level from the last window of input: `idle`, the share of its time the
/// compressor waited for room in the sink, and the sink's fill now and at the last decision
/// (none at the first: an empty buffer at the start says nothing about the link).
/// Waiting means the link is the bottleneck with CPU to spare: raise. A buffer running low
/// and not refilling means the link is about to wait for the compressor: lower. Anything
/// between is a level that keeps the link busy. (Steering by the fill alone climbed to
/// level 8 whenever the buffer was full, however little CPU was left, and at 200 Mbit/s
/// was no faster than level 3; steering by waiting alone read the buffer filling at the
/// start of a layer as a slow compressor and dropped to level 1.)
fn next_level(level: i32, idle: f64, fill: f64, last: Option<f64>) -> i32 {
    if idle > RAISE_IDLE {
        (level + 1).min(ADAPT_MAX)
    } else if fill < 0.3 && last.is_some_and(|l| fill <= l) {
        (level - 1).max(ADAPT_MIN)
    } else {
        level
    }
}

thread_local! {
    /// The compression context of this thread's last layer, for its next: a new
    /// multi-threaded context allocates its job buffers again, and first touching them
    /// made up 70 % of a cold zstd push's page faults (two layers, level 3, 2 workers).
    static CONTEXT: RefCell<Option<CCtx<'static>>> = const { RefCell::new(None) };
}

/// zstd with the library's own worker threads: one frame, whatever the level changes.
pub fn zstd_stream<R: Read, W: Write>(
    input: R,
    level: Level,
    threads: u32,
    on_input: impl FnMut(&[u8]),
    out: W,
) -> Result<ZstdRun> {
    CONTEXT.with(|slot| {
        let mut slot = slot.borrow_mut();
        let cctx = slot.get_or_insert_with(CCtx::create);
        compress(cctx, input, level, threads, on_input, out)
    })
}

fn compress<R: Read, W: Write>(
    cctx: &mut CCtx<'static>,
    mut input: R,
    level: Level,
    threads: u32,
    mut on_input: impl FnMut(&[u8]),
    out: W,
) -> Result<ZstdRun> {
    let (mut lvl, gauge) = match level {
        Level::Fixed(l) => (l, None),
        Level::Adaptive(l, gauge) => (l.clamp(ADAPT_MIN, ADAPT_MAX), Some(gauge)),
    };
    // A reused context keeps its parameters: set every one this frame depends on.
    let raw = ::zstd::stream::raw::Encoder::with_context(cctx);
    let mut enc = ::zstd::stream::write::Encoder::with_encoder(out, raw);
    enc.set_parameter(CParameter::CompressionLevel(lvl))?;
    enc.set_parameter(CParameter::NbWorkers(if threads > 1 { threads } else { 0 }))?;
    let mut run = ZstdRun {
        input_bytes: 0,
        levels: (lvl, lvl, lvl),
    };
    let mut buf = vec![0u8; GZIP_BLOCK];
    let mut last_fill = None;
    let (mut mark_bytes, mut mark_at) = (0u64, Instant::now());
    let mut mark_waited = gauge.as_ref().map(|g| g().waited).unwrap_or_default();
    loop {
        let n = read_full(&mut input, &mut buf)?;
        if n == 0 {
            break;
        }
        on_input(&buf[..n]);
        enc.write_all(&buf[..n])?;
        run.input_bytes += n as u64;
        let Some(gauge) = gauge.as_ref() else {
            continue;
        };
        if run.input_bytes - mark_bytes >= ADAPT_EVERY {
            let now = gauge();
            let idle = now.waited.saturating_sub(mark_waited).as_secs_f64()
                / mark_at.elapsed().as_secs_f64();
            let next = next_level(lvl, idle, now.fill, last_fill);
            tracing::debug!(
                "zstd auto: at {} MiB level {lvl} -> {next}: waited {:.0} % of the window, sink fill {:.2}",
                run.input_bytes >> 20,
                idle * 100.0,
                now.fill
            );
            if next != lvl {
                // libzstd applies a new level to the next MT jobs of the same frame.
                enc.set_parameter(CParameter::CompressionLevel(next))?;
                lvl = next;
                run.levels.0 = run.levels.0.min(lvl);
                run.levels.2 = run.levels.2.max(lvl);
            }
            (mark_bytes, mark_at, mark_waited, last_fill) =
                (run.input_bytes, Instant::now(), now.waited, Some(now.fill));
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

    /// A sink that takes 20 MB/s, like a slow link, and reports the time writers waited.
    struct Slow(Vec<u8>, Arc<std::sync::Mutex<Duration>>);

    impl Write for Slow {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let wait = Duration::from_secs_f64(buf.len() as f64 / 20e6);
            std::thread::sleep(wait);
            *self.1.lock().unwrap() += wait;
            self.0.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A compressor that waits for a slow sink raises the level; one whose sink stays
    /// empty lowers it. The output is one valid zstd stream either way.
    #[test]
    fn adaptive_level_follows_the_sink() {
        let data = sample(100 << 20);
        let waited = Arc::new(std::sync::Mutex::new(Duration::ZERO));
        let w = waited.clone();
        let full = move || SinkGauge {
            fill: 1.0,
            waited: *w.lock().unwrap(),
        };
        let mut slow = Slow(Vec::new(), waited);
        let level = Level::Adaptive(3, Arc::new(full));
        let run = zstd_stream(&data[..], level, 2, |_| {}, &mut slow).unwrap();
        assert!(run.levels.1 > 3, "slow sink: levels {:?}", run.levels);
        assert_eq!(::zstd::decode_all(&slow.0[..]).unwrap(), data);

        let mut fast = Vec::new();
        let level = Level::Adaptive(3, Arc::new(SinkGauge::default));
        let run = zstd_stream(&data[..], level, 2, |_| {}, &mut fast).unwrap();
        assert_eq!(run.input_bytes, data.len() as u64);
        assert!(run.levels.1 < 3, "fast sink: levels {:?}", run.levels);
        assert_eq!(::zstd::decode_all(&fast[..]).unwrap(), data);
    }

    #[test]
    fn level_steps() {
        // Waiting for the sink a third of the time or more: raise, up to the cap.
        assert_eq!(next_level(3, 0.5, 1.0, Some(1.0)), 4);
        assert_eq!(next_level(ADAPT_MAX, 0.9, 1.0, Some(1.0)), ADAPT_MAX);
        // Output just keeps the sink full: hold.
        assert_eq!(next_level(5, 0.1, 1.0, Some(1.0)), 5);
        // The buffer low and not refilling: lower, down to the floor.
        assert_eq!(next_level(3, 0.1, 0.1, Some(0.2)), 2);
        assert_eq!(next_level(3, 0.0, 0.0, Some(0.0)), 2);
        assert_eq!(next_level(ADAPT_MIN, 0.0, 0.0, Some(0.0)), ADAPT_MIN);
        // Low but refilling, or the first decision: hold.
        assert_eq!(next_level(3, 0.0, 0.2, Some(0.1)), 3);
        assert_eq!(next_level(3, 0.0, 0.0, None), 3);
    }
}
