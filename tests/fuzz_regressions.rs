//! Bugs the cargo-fuzz targets (fuzz/, scripts/fuzz.sh) found, one test each. The
//! inputs themselves are in fuzz/regressions/<target>/ and replayed by scripts/fuzz.sh.

use s3dock::cli::{parse_duration, parse_size};
use s3dock::reference::Reference;

/// `documents`: a repository whose first component looks like a host (`team.x/app`)
/// was printed as is, and read back as repository `app` on host `team.x`. `release`
/// reads the pushed reference back to name the app, so it recorded the wrong one.
#[test]
fn printed_reference_names_the_same_repository() {
    for s in [
        "docker.io/s3docker.io/s3docky:1",
        "https:/s.example.com/b",
        "localhost:5000/team.x/app:1",
        "reg.example.com/localhost/app@sha256:0000000000000000000000000000000000000000000000000000000000000000",
    ] {
        let r = Reference::parse(s).unwrap();
        let printed = r.to_string();
        let back = Reference::parse(&printed).unwrap();
        assert_eq!(back, r, "{s:?} printed as {printed:?}");
    }
    // Ordinary names print exactly as before.
    for s in ["team/app:1", "app", "library/x:2", "a.b:1"] {
        assert_eq!(Reference::parse(s).unwrap().to_string(), s);
    }
}

/// `documents` (overflow checks): `--older-than` and `--part-size` multiplied without
/// a check, so a huge value wrapped around to a small one in a release build.
#[test]
fn huge_durations_and_sizes_are_refused() {
    let max_days = u64::MAX / 86400;
    assert!(parse_duration(&format!("{max_days}d")).is_ok());
    let e = parse_duration(&format!("{}d", max_days + 1)).unwrap_err();
    assert!(e.contains("too large"), "{e}");
    assert!(parse_duration("99999999999999999999").is_err());
    assert_eq!(parse_size("16MiB").unwrap(), 16 << 20);
    let e = parse_size("17179869184GiB").unwrap_err();
    assert!(e.contains("too large"), "{e}");
}

