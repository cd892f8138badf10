//! The archive reader on raw bytes: plain tar, or gzip/zstd-wrapped (as `push` reads
//! stdin). Seeds: the fixtures rendered small by `fuzz/make_seeds.py`, and fixtures/bad.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let r = s3dock_fuzz::read_and_check(data, s3dock_fuzz::PLATFORMS[0]);
    s3dock_fuzz::debug("archive", &r);
});
