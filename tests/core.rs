//! Core push/pull behaviour on every store: the local directory, s3s-fs and moto.

mod common;
use common::*;
use std::path::Path;

/// Short names keep keys within s3s-fs's limit (see `common::unique`).
const HELLO: &str = "fx/hello:1";

/// Push a fixture, pull it back, and compare with what the fixture's archive holds.
fn round_trip(store: &TestStore, archive: &str, reference: &str) {
    let exp = expected(archive);
    let img = &exp["images"][0];
    let summary = store.push_json(&["-i", fixture(archive).to_str().unwrap(), reference], None);
    assert_eq!(
        summary["images"][0]["reference"], reference,
        "[{}] {archive}",
        store.kind
    );
    let out = store.pull(&[reference]);
    let got = summarize_archive(&out);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].repo_tags, vec![reference.to_string()]);
    assert_eq!(
        got[0].config_digest,
        img["ConfigDigest"].as_str().unwrap(),
        "[{}] {archive}",
        store.kind
    );
    let diff_ids: Vec<String> = img["DiffIDs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().into())
        .collect();
    assert_eq!(got[0].config_diff_ids, diff_ids);
    assert_eq!(
        got[0].layer_diff_ids, diff_ids,
        "[{}] {archive}: layers don't decompress to the diff_ids",
        store.kind
    );
}

#[test]
fn every_input_format_round_trips_on_every_store() {
    let archives = [
        "docker-legacy.tar",
        "docker25.tar",
        "skopeo-docker-archive.tar",
        "oci-archive.tar",
        "oci-archive-zstd.tar",
        "umoci-layout.tar",
        "docker-legacy.tar.gz",
        "docker-legacy.tar.zst",
    ];
    for store in TestStore::all() {
        for (i, a) in archives.iter().enumerate() {
            round_trip(&store, a, &format!("fmt/app{i}:v1"));
        }
    }
}

#[test]
fn stdin_push_and_warm_repush_uploads_nothing() {
    for store in TestStore::all() {
        let first = store.push_json(&[HELLO], Some(&fixture("docker-legacy.tar")));
        assert!(
            first["bytes_uploaded"].as_u64().unwrap() > 1_000_000,
            "[{}] {first}",
            store.kind
        );
        let again = store.push_json(&[HELLO], Some(&fixture("docker-legacy.tar")));
        assert_eq!(
            again["bytes_uploaded"], 0,
            "[{}] re-push uploaded bytes: {again}",
            store.kind
        );
        assert_eq!(again["blobs_skipped"], 2);
        assert_eq!(
            again["images"][0]["manifest_digest"],
            first["images"][0]["manifest_digest"]
        );
        // The same layers from another producer's archive are found by diff_id too.
        let other = store.push_json(
            &["-i", fixture("docker25.tar").to_str().unwrap(), "o/hello:1"],
            None,
        );
        assert_eq!(
            other["bytes_uploaded"], 0,
            "[{}] cross-image dedup failed: {other}",
            store.kind
        );
    }
}

#[test]
fn multi_image_archive_pushes_every_tag() {
    // The archive's own long tags exceed s3s-fs's key-length limit: directory and moto.
    for store in [Some(TestStore::local()), TestStore::s3("moto")]
        .into_iter()
        .flatten()
    {
        let s = store.push_json(&["-i", fixture("docker-multi.tar").to_str().unwrap()], None);
        let mut refs: Vec<String> = s["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["reference"].as_str().unwrap().into())
            .collect();
        refs.sort();
        assert_eq!(
            refs,
            [
                "s3dock-fixture/hello:1",
                "s3dock-fixture/tiny:1",
                "s3dock-fixture/tiny:latest-test"
            ]
        );
        assert_eq!(store.visible_tags(), refs);
        // One image of several, picked by its tag.
        let one = store.push_json(
            &[
                "-i",
                fixture("docker-multi.tar").to_str().unwrap(),
                "s3dock-fixture/tiny:1",
            ],
            None,
        );
        assert_eq!(one["images"].as_array().unwrap().len(), 1);
        let err = store.fails(
            &[
                "push",
                "-i",
                fixture("docker-multi.tar").to_str().unwrap(),
                "nope:1",
            ],
            None,
        );
        assert!(err.contains("none is tagged nope:1"), "{err}");
    }
}

#[test]
fn layout_matches_the_registry_exactly() {
    let store = TestStore::local();
    let s = store.push_json(
        &[
            "-i",
            fixture("docker25.tar").to_str().unwrap(),
            "--compression",
            "none",
            "myapp:v1.0",
        ],
        None,
    );
    let md = s["images"][0]["manifest_digest"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = store.dir.as_ref().unwrap().path();
    let link = std::fs::read(
        dir.join("docker/registry/v2/repositories/myapp/_manifests/tags/v1.0/current/link"),
    )
    .unwrap();
    assert_eq!(
        link,
        md.as_bytes(),
        "link must be the bare digest, 71 bytes, no newline"
    );
    assert_eq!(link.len(), 71);
    let keys: Vec<String> = store
        .keys()
        .into_iter()
        .filter(|k| k.starts_with("docker/"))
        .collect();
    let exp = expected("docker25.tar");
    let img = &exp["images"][0];
    let mut want = vec![];
    let hex = |d: &str| d.trim_start_matches("sha256:").to_string();
    for d in img["DiffIDs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| hex(d.as_str().unwrap()))
        .chain([hex(img["ConfigDigest"].as_str().unwrap())])
    {
        want.push(format!(
            "docker/registry/v2/blobs/sha256/{}/{d}/data",
            &d[..2]
        ));
        want.push(format!(
            "docker/registry/v2/repositories/myapp/_layers/sha256/{d}/link"
        ));
    }
    let m = hex(&md);
    want.push(format!(
        "docker/registry/v2/blobs/sha256/{}/{m}/data",
        &m[..2]
    ));
    want.push(format!(
        "docker/registry/v2/repositories/myapp/_manifests/revisions/sha256/{m}/link"
    ));
    want.push(format!(
        "docker/registry/v2/repositories/myapp/_manifests/tags/v1.0/index/sha256/{m}/link"
    ));
    want.push("docker/registry/v2/repositories/myapp/_manifests/tags/v1.0/current/link".into());
    want.sort();
    assert_eq!(keys, want);
    // Nothing temporary is left behind.
    assert!(
        !store.keys().iter().any(|k| k.contains("tmp")),
        "{:?}",
        store.keys()
    );
}

#[test]
fn zstd_layers_round_trip_and_decompress_on_pull() {
    for store in TestStore::all() {
        let s = store.push_json(
            &["--compression", "zstd", HELLO],
            Some(&fixture("docker-legacy.tar")),
        );
        assert!(s["images"][0]["layers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["compression"] == "zstd"));
        let out = store.pull(&[HELLO]);
        assert!(archive_layer_files(&out)
            .iter()
            .all(|l| l.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])));
        let plain = store.pull(&[HELLO, "--decompress"]);
        let layers = archive_layer_files(&plain);
        assert!(layers
            .iter()
            .all(|l| l.len() % 512 == 0 && !l.starts_with(&[0x28, 0xb5])));
        let sum = summarize_archive(&plain);
        assert_eq!(sum[0].layer_diff_ids, sum[0].config_diff_ids);
    }
}

/// `pull --decompress -o FILE` streams each plain layer straight into the file and
/// fixes its tar header afterwards; to a pipe it goes through a spool. Both must give
/// the same bytes, for layers of many sizes (an empty file, a block, many parts): a
/// layer of many 5 MiB parts fills every buffer between the download and the writer
/// while the next layer waits for its turn.
#[test]
fn decompressed_pull_to_a_file_equals_the_spooled_pull() {
    let store = TestStore::local();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.tar");
    // Layer tar sizes (a multiple of 512, at least 1536: one file and the end blocks).
    let sizes = [1536u64, 48 << 20, 2048, 3 << 20, 1536, 9 << 20, 4096];
    let layers: Vec<GenLayer> = sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| GenLayer {
            size,
            seed: i as u64 + 40,
        })
        .collect();
    for c in ["none", "gzip", "zstd"] {
        let r = format!("fx/plain:{c}");
        generate_archive_file(&input, &layers, &r);
        store.push_json(&["--compression", c, &r], Some(&input));
        let pull = ["--part-size", "5MiB", &r, "--decompress"];
        let piped = store.pull(&pull);
        let file = tmp.path().join(format!("{c}.tar"));
        let mut to_file = pull.to_vec();
        to_file.extend(["-o", file.to_str().unwrap()]);
        store.pull(&to_file);
        let written = std::fs::read(&file).unwrap();
        assert!(written == piped, "{c}: -o FILE and stdout archives differ");
        let sum = summarize_archive(&written);
        assert_eq!(sum[0].layer_diff_ids, sum[0].config_diff_ids, "{c}");
    }
}

/// `--compression auto` stores zstd layers (whatever level it settled on) that pull verifies.
#[test]
fn auto_compression_stores_zstd_layers_that_pull_verifies() {
    let store = TestStore::local();
    let s = store.push_json(
        &["--compression", "auto", HELLO],
        Some(&fixture("docker-legacy.tar")),
    );
    assert_eq!(s["compression"], "auto");
    let layers = s["images"][0]["layers"].as_array().unwrap();
    assert!(layers.iter().all(|l| l["compression"] == "zstd"), "{s}");
    assert_eq!(s["zstd_levels"].as_array().unwrap().len(), layers.len());
    let out = store.pull(&[HELLO]);
    assert!(archive_layer_files(&out)
        .iter()
        .all(|l| l.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])));
    let sum = summarize_archive(&store.pull(&[HELLO, "--decompress"]));
    assert_eq!(sum[0].layer_diff_ids, sum[0].config_diff_ids);
}

#[test]
fn pull_by_digest_to_file_with_cache_and_rename() {
    let store = TestStore::local();
    let s = store.push_json(&[HELLO], Some(&fixture("docker-legacy.tar")));
    let md = s["images"][0]["manifest_digest"].as_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("img.tar");
    let cache = tmp.path().join("cache");
    let r = format!("fx/hello@{md}");
    store.ok(
        &[
            "pull",
            "-q",
            &r,
            "-o",
            out.to_str().unwrap(),
            "--cache",
            cache.to_str().unwrap(),
            "--tag",
            "renamed/app:2",
        ],
        None,
    );
    let sum = summarize_archive(&std::fs::read(&out).unwrap());
    assert_eq!(sum[0].repo_tags, ["renamed/app:2"]);
    assert_eq!(
        std::fs::read_dir(cache.join("blobs/sha256"))
            .unwrap()
            .count(),
        2,
        "layers cached"
    );
    // A second pull is served from the cache, so it works even with the blobs gone from the store.
    let blobs = store
        .dir
        .as_ref()
        .unwrap()
        .path()
        .join("docker/registry/v2/blobs/sha256");
    for l in &s["images"][0]["layers"].as_array().unwrap().clone() {
        let h = l["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
            .to_string();
        std::fs::remove_file(blobs.join(&h[..2]).join(&h).join("data")).unwrap();
    }
    let again = store.pull(&[&r, "--cache", cache.to_str().unwrap()]);
    assert_eq!(
        summarize_archive(&again)[0].config_digest,
        sum[0].config_digest
    );
    assert!(again.len() > 1_000_000);
}

#[test]
fn corrupt_blob_in_store_fails_pull_and_leaves_no_file() {
    let store = TestStore::local();
    let s = store.push_json(
        &["--compression", "none", HELLO],
        Some(&fixture("docker-legacy.tar")),
    );
    let layer = s["images"][0]["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let path = store.dir.as_ref().unwrap().path().join(format!(
        "docker/registry/v2/blobs/sha256/{}/{layer}/data",
        &layer[..2]
    ));
    let mut data = std::fs::read(&path).unwrap();
    data[600] ^= 0xff;
    std::fs::write(&path, data).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x.tar");
    let err = store.fails(&["pull", HELLO, "-o", out.to_str().unwrap()], None);
    assert!(err.contains(&layer) && err.contains("corrupt"), "{err}");
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "no file may be left behind"
    );
    // To stdout: non-zero, and the archive is not terminated (no manifest.json written).
    let o = store.run(&["pull", HELLO], None);
    assert!(!o.status.success());
    assert!(!String::from_utf8_lossy(&o.stdout).contains("manifest.json"));
}

/// Every bad input gives a one-line error, a non-zero exit and no visible tag.
#[test]
fn bad_input_is_refused_and_leaves_no_tag() {
    let cases: &[(&str, &str)] = &[
        ("bad/empty.tar", "input is empty"),
        ("bad/not-a-tar.bin", "not a"),
        ("bad/truncated.tar", "truncated"),
        ("bad/bad-digest.tar", "corrupt"),
        ("bad/missing-blob.tar", "missing from the archive"),
        ("bad/traversal.tar", "outside the archive"),
    ];
    for store in TestStore::all() {
        for (file, msg) in cases {
            let err = store.fails(&["push", "bad/app:1"], Some(&fixture(file)));
            assert!(
                err.contains(msg),
                "[{}] {file}: expected {msg:?} in {err}",
                store.kind
            );
            assert!(
                store.visible_tags().is_empty(),
                "[{}] {file} left a tag",
                store.kind
            );
        }
        let err = store.fails(&["pull", "bad/app:1"], None);
        assert!(err.contains("not found"), "{err}");
    }
}

#[test]
fn bad_arguments_and_unreachable_stores_fail_clearly() {
    let store = TestStore::local();
    let input = Some(fixture("docker-legacy.tar"));
    let input = input.as_deref();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--store", "s3://UPPER", "push", "a:1"],
            "invalid store URL",
        ),
        (
            &["--store", "ftp://x/y", "push", "a:1"],
            "invalid store URL",
        ),
        (&["push", "Bad:1"], "invalid image reference"),
        (
            &[
                "push",
                "a@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            ],
            "takes a tag",
        ),
        (
            &[
                "--store",
                "s3://s3dock-test/p",
                "--endpoint",
                "http://127.0.0.1:9",
                "--retries",
                "2",
                "push",
                "a:1",
            ],
            "cannot reach bucket",
        ),
    ];
    for (args, msg) in cases {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_s3dock"));
        if !args.contains(&"--store") {
            c.args(&store.args);
        }
        c.args(*args)
            .env("AWS_ACCESS_KEY_ID", "x")
            .env("AWS_SECRET_ACCESS_KEY", "y");
        c.stdin(std::fs::File::open(input.unwrap()).unwrap());
        let o = c.output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(msg), "{args:?}: {err}");
        assert_eq!(
            err.lines().count(),
            1,
            "{args:?}: error must be one line: {err}"
        );
    }
    // No credentials anywhere: a clear error before any work.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_s3dock"))
        .args([
            "--store",
            "s3://s3dock-test/p",
            "--endpoint",
            "http://127.0.0.1:9",
            "push",
            "a:1",
        ])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("no AWS credentials"),
        "{err}"
    );
    assert!(Path::new(&fixture("docker-legacy.tar")).exists());
}

#[test]
fn bucket_in_reference_and_root_dir() {
    let Some(store) = TestStore::s3("moto") else {
        return;
    };
    let (endpoint, bucket, prefix) = store.s3.clone().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_s3dock"))
        .args([
            "--endpoint",
            &endpoint,
            "--root-dir",
            &format!("{prefix}/registry"),
            "push",
            "-q",
        ])
        .arg(format!("s3://{bucket}/myapp:v1.0"))
        .env_remove("S3DOCK_STORE")
        .stdin(std::fs::File::open(fixture("docker-legacy.tar")).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keys = s3_list(&endpoint, &bucket, &prefix);
    assert!(
        keys.contains(
            &"registry/docker/registry/v2/repositories/myapp/_manifests/tags/v1.0/current/link"
                .to_string()
        ),
        "{keys:?}"
    );
}

#[test]
fn sse_and_storage_class_reach_s3() {
    let Some(store) = TestStore::s3("moto") else {
        return;
    };
    let (endpoint, bucket, prefix) = store.s3.clone().unwrap();
    let mut c = store.cmd();
    c.args([
        "--sse",
        "AES256",
        "--storage-class",
        "STANDARD_IA",
        "--part-size",
        "5MiB",
        "push",
        "-q",
        "--compression",
        "none",
        HELLO,
    ]);
    c.stdin(std::fs::File::open(fixture("docker-legacy.tar")).unwrap());
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let blob = s3_list(&endpoint, &bucket, &prefix)
        .into_iter()
        .find(|k| k.ends_with("/data"))
        .unwrap();
    let script = format!(
        "import boto3\nc=boto3.client('s3',endpoint_url='{endpoint}',region_name='us-east-1')\n\
         h=c.head_object(Bucket='{bucket}',Key='{prefix}/{blob}')\nprint(h.get('ServerSideEncryption'), h.get('StorageClass'))"
    );
    assert_eq!(python(&script).trim(), "AES256 STANDARD_IA");
}

/// When the stored layers are exactly the producer's, its manifest bytes are kept, so
/// `name@sha256:<M>` means the same image before and after the push.
#[test]
fn producer_manifest_digest_is_kept_when_layers_are_stored_as_is() {
    for store in TestStore::all() {
        for (archive, args) in [
            ("docker25.tar", vec!["--compression", "none"]),
            ("oci-archive.tar", vec![]),
        ] {
            let want = expected(archive)["images"][0]["Manifest"]["digest"]
                .as_str()
                .unwrap()
                .to_string();
            let path = fixture(archive);
            let mut a = vec!["-i", path.to_str().unwrap(), "keep/app:1"];
            a.extend(args);
            let s = store.push_json(&a, None);
            assert_eq!(
                s["images"][0]["manifest_digest"],
                want.as_str(),
                "[{}] {archive}",
                store.kind
            );
            let by_digest = summarize_archive(&store.pull(&[&format!("keep/app@{want}")]));
            assert_eq!(by_digest[0].layer_diff_ids, by_digest[0].config_diff_ids);
        }
    }
}

/// `-o` on a device or FIFO writes into it instead of renaming a file over it.
#[test]
fn pull_to_a_fifo_writes_in_place() {
    let store = TestStore::local();
    store.push_json(&[HELLO], Some(&fixture("docker-legacy.tar")));
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    store.ok(&["pull", "-q", HELLO, "-o", fifo.to_str().unwrap()], None);
    let data = reader.join().unwrap();
    assert_eq!(summarize_archive(&data)[0].repo_tags, [HELLO]);
    let ft = std::fs::symlink_metadata(&fifo).unwrap().file_type();
    assert!(
        std::os::unix::fs::FileTypeExt::is_fifo(&ft),
        "the FIFO was replaced"
    );
}
