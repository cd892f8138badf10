//! Counters for the end-of-command summary, and the progress bar (stderr, TTY only).

use indicatif::{ProgressBar, ProgressStyle};
use std::sync::atomic::AtomicU64;

#[derive(Debug, Default)]
pub struct Stats {
    pub layers: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_uploaded: AtomicU64,
    /// Bytes found already uploaded by an interrupted push.
    pub bytes_resumed: AtomicU64,
    pub bytes_downloaded: AtomicU64,
    pub blobs_skipped: AtomicU64,
    /// Per layer this push compressed with zstd: (lowest, last, highest) level used.
    pub zstd_levels: std::sync::Mutex<Vec<(i32, i32, i32)>>,
}

pub struct Progress(Option<ProgressBar>);

impl Progress {
    pub fn new(show: bool, total: Option<u64>, msg: &'static str) -> Self {
        if !show {
            return Progress(None);
        }
        let bar = match total {
            Some(t) => ProgressBar::new(t).with_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{spinner} {msg} {bytes} {bytes_per_sec}")
                    .expect("valid template"),
            ),
        };
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        bar.set_message(msg);
        Progress(Some(bar))
    }

    pub fn set(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.set_position(n);
        }
    }

    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

/// `1234567` → `1.2 MB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
