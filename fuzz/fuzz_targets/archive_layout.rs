//! The archive reader on archives built from a text form whose digests always match
//! (see `s3dock_fuzz::build_layout`), so mutations of manifest.json, index.json,
//! OCI manifests, configs, names and links get past the digest checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let tar = s3dock_fuzz::build_layout(data);
    if let Some(dir) = std::env::var_os("S3DOCK_FUZZ_RENDER") {
        // Seed generation: keep the rendered archive for the `archive` target.
        let name = s3dock::model::digest::Digest::of(&tar).hex();
        std::fs::write(std::path::Path::new(&dir).join(name), &tar).expect("write rendered seed");
    }
    let r = s3dock_fuzz::read_and_check(&tar, s3dock_fuzz::PLATFORMS[0]);
    s3dock_fuzz::debug("archive_layout", &r);
});
