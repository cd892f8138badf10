//! Bugs the cargo-fuzz targets (fuzz/, scripts/fuzz.sh) found, one test each. The
//! inputs themselves are in fuzz/regressions/<target>/ and replayed by scripts/fuzz.sh.

use s3dock::archive::{read_archive, LayerEntry, LayerSink, SunkLayer};
use s3dock::model::reference::Reference;
use s3dock::model::units::{parse_duration, parse_size};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// `documents`: a repository whose first component looks like a host (`team.x/app`)
/// was printed as is, and read back as repository `app` on host `team.x`. `release`
/// reads the pushed reference back to name the app, so it recorded the wrong one.
#[test]
fn printed_reference_names_the_same_repository() {
    for s in [
        "docker.io/s3docker.io/s3docky:1",
        "localhost:5000/team.x/app:1",
        "reg.example.com/localhost/app@sha256:0000000000000000000000000000000000000000000000000000000000000000",
    ] {
        let r = Reference::parse(s).unwrap();
        let printed = r.to_string();
        let back = Reference::parse(&printed).unwrap();
        assert_eq!(back, r, "{s:?} printed as {printed:?}");
    }
    // A host with an empty port is no reference at all (docker: invalid reference format).
    assert!(Reference::parse("https:/s.example.com/b").is_err());
    // Ordinary names print as docker shows them (`library/` dropped).
    for (s, shown) in [
        ("team/app:1", "team/app:1"),
        ("app", "app"),
        ("library/x:2", "x:2"),
        ("a.b:1", "a.b:1"),
    ] {
        assert_eq!(Reference::parse(s).unwrap().to_string(), shown);
    }
}

/// `documents` (overflow checks): `--older-than` and `--part-size` multiplied without
/// a check, so a huge value wrapped around to a small one in a release build.
#[test]
fn huge_durations_and_sizes_are_refused() {
    let max_days = u64::MAX / 86400;
    assert!(parse_duration(&format!("{max_days}d")).is_ok());
    let e = parse_duration(&format!("{}d", max_days + 1))
        .unwrap_err()
        .to_string();
    assert!(e.contains("too large"), "{e}");
    assert!(parse_duration("99999999999999999999").is_err());
    assert_eq!(parse_size("16MiB").unwrap(), 16 << 20);
    let e = parse_size("17179869184GiB").unwrap_err().to_string();
    assert!(e.contains("too large"), "{e}");
}

/// Hashes every layer, as `push` does before compressing it.
struct HashSink;

impl LayerSink for HashSink {
    type Out = ();
    fn layer(&mut self, _: &LayerEntry, data: &mut dyn Read) -> anyhow::Result<SunkLayer<()>> {
        let mut h = s3dock::model::digest::Hasher::new();
        std::io::copy(data, &mut h)?;
        let d = h.finish();
        Ok(SunkLayer {
            file_digest: d,
            diff_id: d,
            out: (),
        })
    }
}

/// A tar whose one file is `size` zero bytes, written through `w` as it is produced.
fn zero_tar(w: &mut dyn Write, size: u64) {
    let mut h = tar::Header::new_ustar();
    h.set_path("x/layer.tar").unwrap();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_cksum();
    w.write_all(h.as_bytes()).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..size >> 20 {
        w.write_all(&zeros).unwrap();
    }
    w.write_all(&[0u8; 1024]).unwrap();
}

/// Found while fuzzing `archive` (the zstd-wrapped case): the bomb bound applied to
/// compressed layers only, so a 66 KB `.tar.zst` became a 2 GiB layer to hash,
/// compress and upload (and a 1 MB one, 32 GiB). Now the whole-archive stream is
/// bounded the same way, and refused soon after 256 MiB.
#[test]
fn compressed_archive_bomb_is_refused() {
    const SIZE: u64 = 1 << 30;
    let mut zst = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    zero_tar(&mut zst, SIZE);
    let zst = zst.finish().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    zero_tar(&mut gz, SIZE);
    let gz = gz.finish().unwrap();
    for (what, bytes) in [("zstd", zst), ("gzip", gz)] {
        let start = Instant::now();
        let e = read_archive(&bytes[..], &mut HashSink, "linux/amd64").unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("decompression bomb"), "{what}: {msg}");
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what}: {:?}",
            start.elapsed()
        );
    }
    // Compressed archives of ordinary ratios still read.
    let legacy = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/docker-legacy.tar.zst"),
    )
    .unwrap();
    let images = read_archive(&legacy[..], &mut HashSink, "linux/amd64").unwrap();
    assert_eq!(images.len(), 1);
}
