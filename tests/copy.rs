//! `s3dock copy`: images between stores (directory, moto, s3s-fs), blob by blob, with
//! digests and tags preserved, server-side on one S3 server, multi-platform indexes
//! whole, tags written last (a killed copy shows none and the next one completes),
//! `--all` and `--with-releases`. Real servers, real binary, boto3 as an independent
//! S3 client.

mod common;
mod interop_support;

use common::*;
use interop_support::{docker_run, need_docker, pull_docker_load_ok, run_id, DockerImages};
use std::process::Stdio;

/// `--to ...` flags naming `t` as the target.
fn to_args(t: &TestStore) -> Vec<String> {
    match &t.s3 {
        Some((endpoint, bucket, prefix)) => vec![
            "--to".into(),
            format!("s3://{bucket}/{prefix}"),
            "--to-endpoint".into(),
            endpoint.clone(),
        ],
        None => vec![
            "--to".into(),
            t.dir.as_ref().unwrap().path().to_string_lossy().into(),
        ],
    }
}

/// `s3dock copy --json -q ARGS --to T` from `from`; the summary.
fn copy(from: &TestStore, to: &TestStore, args: &[&str]) -> serde_json::Value {
    let mut a: Vec<String> = vec!["copy".into(), "--json".into(), "-q".into()];
    a.extend(args.iter().map(|s| s.to_string()));
    a.extend(to_args(to));
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let out = from.ok(&a, None);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad --json output ({e}): {:?}", out.stdout))
}

/// The manifest digest each visible tag points at, read from the link files.
fn tag_digests(store: &TestStore) -> Vec<(String, String)> {
    store
        .visible_tags()
        .into_iter()
        .map(|t| {
            let (repo, tag) = t.rsplit_once(':').unwrap();
            let out = store.ok(
                &[
                    "pull",
                    "-q",
                    "--json",
                    &format!("{repo}:{tag}"),
                    "-o",
                    "/dev/null",
                ],
                None,
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            (
                t.clone(),
                v["manifest_digest"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn s3(server: &'static str) -> Option<TestStore> {
    TestStore::s3(server)
}

/// dir → moto → dir → s3s-fs: every hop keeps tags and digests, a second copy moves
/// nothing, and the image pulled from the last store verifies and loads into docker.
#[test]
fn copy_across_stores_keeps_digests_and_tags() {
    if !interop_support::need_busybox() {
        return;
    }
    let (Some(moto), Some(s3s)) = (s3("moto"), s3("s3s")) else {
        return;
    };
    let (a, c) = (TestStore::local(), TestStore::local());
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("multi.tar");
    multi_platform_archive(&archive, "1", &format!("hops {}", run_id()));
    // Short names: s3s-fs refuses keys over ~150 characters.
    let bb = format!("c{}:1", run_id());
    a.push_json(
        &[
            "-i",
            archive.to_str().unwrap(),
            "--platform",
            "linux/amd64",
            &bb,
        ],
        None,
    );
    a.push_json(
        &[
            "-i",
            fixture("docker-legacy.tar").to_str().unwrap(),
            "cp/hello:1",
        ],
        None,
    );
    // The same archive's arm64 image: a third distinct image.
    a.push_json(
        &[
            "-i",
            archive.to_str().unwrap(),
            "--platform",
            "linux/arm64",
            "cp/hello:2",
        ],
        None,
    );
    let want = tag_digests(&a);
    assert_eq!(want.len(), 3);

    let hops: [(&TestStore, &TestStore, Vec<&str>); 3] = [
        (&a, &moto, vec![bb.as_str(), "cp/hello:1", "cp/hello:2"]),
        (&moto, &c, vec![bb.as_str(), "cp/hello"]),
        (&c, &s3s, vec!["--all"]),
    ];
    for (from, to, args) in hops {
        let first = copy(from, to, &args);
        assert_eq!(first["images"].as_array().unwrap().len(), 3, "{first}");
        assert!(first["bytes_copied"].as_u64().unwrap() > 0, "{first}");
        assert_eq!(first["blobs_skipped"], 0, "{first}");
        assert_eq!(tag_digests(to), want, "{} -> {}", from.kind, to.kind);
        for img in first["images"].as_array().unwrap() {
            let w = want
                .iter()
                .find(|(t, _)| *t == img["reference"].as_str().unwrap())
                .unwrap();
            assert_eq!(img["digest"], w.1.as_str());
        }
        let again = copy(from, to, &args);
        assert_eq!(again["bytes_copied"], 0, "second copy moved bytes: {again}");
        assert_eq!(again["blobs_copied"], 0, "{again}");
        assert_eq!(again["blobs_skipped"], first["blobs_copied"], "{again}");
    }
    // The last store's image verifies on pull and runs.
    let files = summarize_archive(&s3s.pull(&["cp/hello:2"]));
    assert_eq!(files, summarize_archive(&a.pull(&["cp/hello:2"])));
    if need_docker() {
        let images = DockerImages::new();
        images.add(&bb);
        pull_docker_load_ok(&s3s, &[&bb], &bb);
        assert_eq!(docker_run(&bb, &[]), format!("amd64 hops {}\n", run_id()));
    }
}

/// A second bucket on the moto server (idempotent).
fn second_bucket(endpoint: &str) -> String {
    let bucket = "s3dock-copy-2";
    python(&format!(
        "import boto3\nc=boto3.client('s3',endpoint_url='{endpoint}',region_name='us-east-1')\n\
         try:\n    c.create_bucket(Bucket='{bucket}')\nexcept c.exceptions.BucketAlreadyOwnedByYou:\n    pass\n"
    ));
    bucket.to_string()
}

/// Every object under `prefix/` of `bucket`: key (below the prefix), sha256 of the
/// content, server-side encryption and storage class, as boto3 reports them.
fn objects(endpoint: &str, bucket: &str, prefix: &str) -> Vec<(String, String, String)> {
    let script = format!(
        "import boto3,hashlib\n\
         c=boto3.client('s3',endpoint_url='{endpoint}',region_name='us-east-1')\n\
         for page in c.get_paginator('list_objects_v2').paginate(Bucket='{bucket}',Prefix='{prefix}/'):\n\
         \x20   for o in page.get('Contents',[]):\n\
         \x20       g=c.get_object(Bucket='{bucket}',Key=o['Key'])\n\
         \x20       h=hashlib.sha256(g['Body'].read()).hexdigest()\n\
         \x20       print(o['Key'][len('{prefix}/'):], h, g.get('ServerSideEncryption','-')+'/'+g.get('StorageClass','-'))\n"
    );
    let mut v: Vec<(String, String, String)> = python(&script)
        .lines()
        .map(|l| {
            let mut p = l.split(' ');
            (
                p.next().unwrap().into(),
                p.next().unwrap().into(),
                p.next().unwrap().into(),
            )
        })
        .collect();
    v.sort();
    v
}

/// moto → moto (two buckets, one endpoint, one set of credentials): every blob is copied
/// server-side, byte-identical, and every object written carries the target's --sse and
/// --storage-class; the streamed path (directory → moto) applies them too.
#[test]
fn copy_between_buckets_of_one_server_is_server_side() {
    let Some(src) = s3("moto") else {
        return;
    };
    let (endpoint, bucket, prefix) = src.s3.clone().unwrap();
    let dst = TestStore {
        kind: "moto-2",
        args: Vec::new(),
        dir: None,
        s3: Some((
            endpoint.clone(),
            second_bucket(&endpoint),
            format!("{prefix}x"),
        )),
    };
    src.push_json(
        &["-i", fixture("docker25.tar").to_str().unwrap(), "ss/app:1"],
        None,
    );
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("multi.tar");
    multi_platform_archive(&archive, "1", "server-side");
    src.push_json(
        &[
            "-i",
            archive.to_str().unwrap(),
            "--platform",
            "linux/arm64",
            "ss/app:2",
        ],
        None,
    );
    let sse = ["--sse", "AES256", "--storage-class", "STANDARD_IA"];
    let out = copy(&src, &dst, &[&["ss/app"][..], &sse].concat());
    for img in out["images"].as_array().unwrap() {
        assert_eq!(img["method"], "server-side", "{out}");
    }
    assert_eq!(out["bytes_streamed"], 0, "{out}");
    assert!(
        out["bytes_server_side"].as_u64().unwrap() > 1_000_000,
        "{out}"
    );

    let (s, d) = (
        objects(&endpoint, &bucket, &prefix),
        objects(
            &endpoint,
            &dst.s3.as_ref().unwrap().1,
            &dst.s3.as_ref().unwrap().2,
        ),
    );
    let blobs = |v: &[(String, String, String)]| -> Vec<(String, String)> {
        v.iter()
            .filter(|(k, _, _)| k.contains("/blobs/"))
            .map(|(k, h, _)| (k.clone(), h.clone()))
            .collect()
    };
    // The source also holds the amd64 layer its arm64 push streamed past, unreferenced.
    let (s, dblobs) = (blobs(&s), blobs(&d));
    assert_eq!(
        dblobs.len(),
        7,
        "two configs, three layers, two manifests: {dblobs:?}"
    );
    for (k, h) in &dblobs {
        assert!(
            k.contains(&format!("/{h}/data")),
            "{k} does not hash to its name"
        );
        assert!(
            s.contains(&(k.clone(), h.clone())),
            "{k} is not the source's"
        );
    }
    let plain: Vec<_> = d
        .iter()
        .filter(|(_, _, e)| e != "AES256/STANDARD_IA")
        .collect();
    assert!(
        plain.is_empty(),
        "objects without --sse/--storage-class: {plain:?}"
    );
    assert!(d.iter().any(|(k, _, _)| k.ends_with("/current/link")));

    // Streamed (directory → moto) honours them too.
    let dir = TestStore::local();
    dir.push_json(
        &["-i", fixture("docker25.tar").to_str().unwrap(), "ss/app:1"],
        None,
    );
    let Some(dst2) = s3("moto") else { return };
    let out = copy(&dir, &dst2, &[&["ss/app:1"][..], &sse].concat());
    assert_eq!(out["images"][0]["method"], "streamed", "{out}");
    let (_, b2, p2) = dst2.s3.as_ref().unwrap();
    let d2 = objects(&endpoint, b2, p2);
    assert!(d2.iter().any(|(k, _, _)| k.contains("/blobs/")));
    let plain: Vec<_> = d2
        .iter()
        .filter(|(_, _, e)| e != "AES256/STANDARD_IA")
        .collect();
    assert!(
        plain.is_empty(),
        "objects without --sse/--storage-class: {plain:?}"
    );
}

/// A multi-platform index is copied whole (index, both images, their blobs), keeps its
/// digest, and `pull --platform` picks each image from the target, after a streamed
/// hop (directory → moto) and a server-side one (moto → moto).
#[test]
fn copy_keeps_a_multi_platform_index_whole() {
    if !interop_support::need_busybox() {
        return;
    }
    let (Some(m1), Some(m2)) = (s3("moto"), s3("moto")) else {
        return;
    };
    let dir = TestStore::local();
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("multi.tar");
    let (index, images) = multi_platform_archive(&archive, "1", "copy-index");
    dir.push_json(
        &[
            "-i",
            archive.to_str().unwrap(),
            "--all-platforms",
            "mp/app:1",
        ],
        None,
    );
    for (from, to, method) in [(&dir, &m1, "streamed"), (&m1, &m2, "server-side")] {
        let out = copy(from, to, &["mp/app:1"]);
        let img = &out["images"][0];
        assert_eq!(img["digest"], index.as_str(), "{out}");
        assert_eq!(img["manifests"], 3, "{out}");
        assert_eq!(img["blobs_copied"], 4, "two configs and two layers: {out}");
        assert_eq!(img["method"], method, "{out}");
        for i in &images {
            let got = summarize_archive(&to.pull(&[
                "mp/app:1",
                "--platform",
                &format!("linux/{}", i.arch),
            ]));
            assert_eq!(
                got[0].config_digest, i.config_digest,
                "{} {}",
                to.kind, i.arch
            );
        }
    }
}

/// `kill -9` in the middle of a big blob's streamed upload leaves no tag in the target;
/// copying again continues the open multipart upload (the parts already there are not
/// sent again), completes, leaves no upload open, and the image verifies on pull.
#[test]
fn killed_copy_leaves_no_tag_and_the_next_one_completes() {
    let Some(dst) = s3("moto") else {
        return;
    };
    let src = TestStore::local();
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("big.tar");
    generate_archive_file(
        &archive,
        &[GenLayer {
            size: 220 << 20,
            seed: 13,
        }],
        "big/app:1",
    );
    src.push_json(
        &["-i", archive.to_str().unwrap(), "--compression", "none"],
        None,
    );

    let (endpoint, bucket, prefix) = dst.s3.clone().unwrap();
    let mut cmd = src.cmd();
    cmd.args([
        "copy",
        "-q",
        "big/app:1",
        "--part-size",
        "5MiB",
        "--jobs",
        "2",
    ])
    .args(to_args(&dst))
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    // Waits (at most 2 minutes) until the blob's multipart upload holds 3 parts.
    let waited = python(&format!(
        "import boto3,time\nc=boto3.client('s3',endpoint_url='{endpoint}',region_name='us-east-1')\n\
         end=time.time()+120\n\
         while time.time()<end:\n\
         \x20   ups=c.list_multipart_uploads(Bucket='{bucket}',Prefix='{prefix}/').get('Uploads',[])\n\
         \x20   if any(len(c.list_parts(Bucket='{bucket}',Key=u['Key'],UploadId=u['UploadId']).get('Parts',[]))>=3 for u in ups):\n\
         \x20       print('ready'); break\n\
         \x20   time.sleep(0.02)\n"
    ));
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        waited.trim(),
        "ready",
        "the copy never had 3 parts uploaded"
    );
    assert!(!status.success(), "the copy finished before it was killed");
    assert!(
        dst.visible_tags().is_empty(),
        "a killed copy left a tag: {:?}",
        dst.visible_tags()
    );

    let out = copy(
        &src,
        &dst,
        &["big/app:1", "--part-size", "5MiB", "--jobs", "2"],
    );
    assert!(out["bytes_resumed"].as_u64().unwrap() >= 15 << 20, "{out}");
    assert_eq!(dst.visible_tags(), vec!["big/app:1"]);
    let cleanup = dst.ok(
        &["cleanup", "--dry-run", "--older-than", "0s", "--json"],
        None,
    );
    let c: serde_json::Value = serde_json::from_slice(&cleanup.stdout).unwrap();
    assert_eq!(c["incomplete_uploads"], 0, "{c}");
    dst.ok(&["pull", "-q", "big/app:1", "-o", "/dev/null"], None);
}

/// `--all` copies every repository and tag; `--with-releases` also the apps' image
/// records, versions and environments, so `current` answers in the target as in the
/// source. Without it, the registry tags come along but no records.
#[test]
fn copy_all_with_releases() {
    // moto: moto-fs refuses keys as long as a build tag's index link.
    let Some(moto) = s3("moto") else {
        return;
    };
    let src = TestStore::local();
    let image = "rel/app:20231114-2213-abcdef0";
    src.ok(
        &[
            "-q",
            "push",
            "-i",
            fixture("docker25.tar").to_str().unwrap(),
            image,
        ],
        None,
    );
    src.ok(
        &[
            "-q",
            "push",
            "-i",
            fixture("docker-legacy.tar").to_str().unwrap(),
            "other/x:1",
        ],
        None,
    );
    src.ok(
        &[
            "-q",
            "push",
            "-i",
            fixture("oci-archive.tar").to_str().unwrap(),
            "other/x:2",
        ],
        None,
    );
    src.ok(&["tag", image, "v1.0.0"], None);
    src.ok(&["promote", "rel/app:v1.0.0", "staging"], None);

    let plain = TestStore::local();
    let out = copy(&src, &plain, &["--all"]);
    assert_eq!(plain.visible_tags(), src.visible_tags(), "{out}");
    assert!(out.get("records").is_none());
    assert!(!plain.keys().iter().any(|k| k.contains("s3dock/apps/")));

    let out = copy(&src, &moto, &["--all", "--with-releases"]);
    assert_eq!(moto.visible_tags(), src.visible_tags(), "{out}");
    let rec = out["records"].as_array().unwrap();
    let app = rec.iter().find(|r| r["app"] == "rel/app").unwrap();
    assert_eq!(
        (
            app["images"].as_u64(),
            app["versions"].as_u64(),
            app["environments"].as_u64()
        ),
        (Some(1), Some(1), Some(1)),
        "{out}"
    );
    let current = |s: &TestStore| {
        String::from_utf8(
            s.ok(&["current", "rel/app", "staging", "--digest"], None)
                .stdout,
        )
        .unwrap()
    };
    assert_eq!(current(&moto), current(&src));
    let list = |s: &TestStore| {
        let v: serde_json::Value =
            serde_json::from_slice(&s.ok(&["list", "rel/app", "--json"], None).stdout).unwrap();
        (v["versions"].clone(), v["environments"].clone())
    };
    assert_eq!(list(&moto), list(&src));
    // Now the target has an environment and a version: a copy without their records
    // would move them behind promote's back, so it is refused and nothing changes.
    let before = moto.keys();
    let to = to_args(&moto);
    let err = src.fails(&["copy", "--all", &to[0], &to[1], &to[2], &to[3]], None);
    assert!(
        err.contains("rel/app:") && err.contains("--with-releases"),
        "{err}"
    );
    assert_eq!(moto.keys(), before);
}

/// Bad input changes nothing in the target: an http(s) store is never a target, and a
/// missing reference fails before anything is written.
#[test]
fn copy_refuses_bad_targets_and_missing_images() {
    let src = TestStore::local();
    src.push_json(
        &["-i", fixture("docker25.tar").to_str().unwrap(), "bad/app:1"],
        None,
    );
    let err = src.fails(
        &["copy", "bad/app:1", "--to", "https://cdn.example.com/store"],
        None,
    );
    assert!(err.contains("read-only"), "{err}");
    let dst = TestStore::local();
    let to = to_args(&dst);
    let err = src.fails(&["copy", "bad/app:1", "bad/app:2", &to[0], &to[1]], None);
    assert!(
        err.contains("bad/app:2") && err.contains("not found"),
        "{err}"
    );
    assert!(
        dst.keys().is_empty(),
        "a failed copy wrote {:?}",
        dst.keys()
    );
    let err = src.fails(&["copy", "bad/app:1", "--to", &src.args[1]], None);
    assert!(err.contains("source store"), "{err}");
}

/// `--to NAME` names a profile of the config file: its store (and settings) are the target.
#[test]
fn copy_to_a_config_profile() {
    let src = TestStore::local();
    src.push_json(
        &[
            "-i",
            fixture("docker25.tar").to_str().unwrap(),
            "prof/app:1",
        ],
        None,
    );
    let dst = TestStore::local();
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        cfg.path(),
        format!(
            "[profiles.dr]\nstore = {:?}\nroot_dir = \"reg\"\n",
            dst.dir.as_ref().unwrap().path()
        ),
    )
    .unwrap();
    let out = src.ok(
        &[
            "copy",
            "--json",
            "-q",
            "--config",
            cfg.path().to_str().unwrap(),
            "prof/app:1",
            "--to",
            "dr",
        ],
        None,
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["images"][0]["reference"], "prof/app:1", "{v}");
    assert!(
        dst.keys().iter().any(|k| k.starts_with(
            "reg/docker/registry/v2/repositories/prof/app/_manifests/tags/1/current/link"
        )),
        "{:?}",
        dst.keys()
    );
}
