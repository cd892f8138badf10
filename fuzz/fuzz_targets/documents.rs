//! Manifest, index and config parsing, image references, digests, media types and
//! the command-line value parsers, on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    s3dock_fuzz::check_documents(data);
});
