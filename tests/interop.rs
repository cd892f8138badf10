//! Interoperability with the real peers (issue 3): Docker Engine, Debian's docker-registry
//! (distribution 2.8) on the filesystem and S3 drivers, skopeo, podman and umoci output.
//!
//! Every test fails if a peer rejects what s3dock wrote, or if s3dock cannot read what a
//! peer wrote. A missing peer is a skip locally and a failure under `scripts/test.sh`
//! (`S3DOCK_REQUIRE_PEERS=1`, see `common::require`).
//!
//! Docker images are built `FROM scratch` with Debian's busybox-static (no registry access)
//! and with a unique file in their first layer, so that after `docker rmi` no layer of theirs
//! is left in the daemon and `docker load` / `docker pull` really has to read every layer.
//! Names contain `run_id()`; a `DockerImages` guard removes them even when a test panics.
//!
//! Known peer limits these tests assert rather than hide (Docker 20.10 here):
//! - `docker load` < 23 cannot decompress zstd layers: zstd images need `pull --decompress`.
//! - `docker load` (classic store, ≤ 28) needs `manifest.json`, so `pull --format oci` does not
//!   load into it; podman, skopeo, and `skopeo copy oci-archive: docker-daemon:` read it.
//! - s3s-fs cannot take registry *pushes* (no ListMultipartUploads), so reverse tests on S3
//!   use moto; s3s-fs is used for serving and for the big image.

mod common;
mod interop_support;

use common::*;
use interop_support::*;
use std::path::Path;

fn name(what: &str) -> String {
    format!("ix{}/{what}", run_id())
}

/// The fully qualified form Docker/containerd write in `io.containerd.image.name`.
fn normalized(r: &str) -> String {
    let first = r.split('/').next().unwrap();
    if r.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost") {
        r.to_string()
    } else if r.contains('/') {
        format!("docker.io/{r}")
    } else {
        format!("docker.io/library/{r}")
    }
}

fn peers_for_docker() -> bool {
    need_docker() && need_busybox()
}

// ====================================================================== test images

/// Several layers: the busybox root (plus a unique id file), two files, a RUN that deletes
/// one of them (a whiteout layer), WORKDIR of a new dir; ENV and CMD are empty layers.
const MULTI_DOCKERFILE: &str = r#"FROM scratch
COPY rootfs/ /
ENV PATH=/bin
COPY a.txt /a.txt
COPY b.txt /b.txt
RUN ["/bin/busybox", "rm", "/b.txt"]
WORKDIR /w
CMD ["/bin/busybox", "sh", "-c", "cat /a.txt; if [ -e /b.txt ]; then echo b-present; else echo b-deleted; fi; pwd"]
"#;

/// Builds the multi-layer image as `r`; returns it and what `docker run` prints.
fn build_multi(images: &DockerImages, r: &str) -> (ImageInfo, String) {
    let ctx = BuildContext::new();
    let a = format!("a of {r}\n");
    ctx.file("rootfs/id.txt", format!("{r} multi\n").as_bytes())
        .file("a.txt", a.as_bytes())
        .file("b.txt", b"deleted by the RUN layer\n");
    let info = ctx.build(images, r, MULTI_DOCKERFILE);
    assert_eq!(
        info.layers.len(),
        5,
        "rootfs, a, b, whiteout, workdir: {info:?}"
    );
    let want = format!("{a}b-deleted\n/w\n");
    assert_eq!(docker_run(r, &[]), want, "freshly built {r}");
    (info, want)
}

/// Only ENV/WORKDIR/LABEL/CMD after the root: one real layer, four empty ones in history.
const EMPTY_DOCKERFILE: &str = r#"FROM scratch
COPY rootfs/ /
ENV GREETING=hello-from-env
WORKDIR /
LABEL org.opencontainers.image.title=s3dock-interop
CMD ["/bin/busybox", "sh", "-c", "echo $GREETING in $(/bin/busybox pwd); /bin/busybox cat /id.txt"]
"#;

fn build_empty_layers(images: &DockerImages, r: &str) -> (ImageInfo, String) {
    let ctx = BuildContext::new();
    let id = format!("{r} empty-layers\n");
    ctx.file("rootfs/id.txt", id.as_bytes());
    let info = ctx.build(images, r, EMPTY_DOCKERFILE);
    assert_eq!(info.layers.len(), 1, "{info:?}");
    let cfg = docker_config(r);
    let empty: Vec<String> = cfg["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["empty_layer"] == true)
        .map(|h| h["created_by"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        empty.iter().any(|c| c.contains("ENV")) && empty.iter().any(|c| c.contains("WORKDIR")),
        "expected empty ENV and WORKDIR history entries: {empty:?}"
    );
    let want = format!("hello-from-env in /\n{id}");
    assert_eq!(docker_run(r, &[]), want);
    (info, want)
}

/// Small runnable image printing its own message.
fn build_small(images: &DockerImages, r: &str, msg: &str) -> ImageInfo {
    let ctx = BuildContext::new();
    ctx.file("rootfs/id.txt", format!("{r} small\n").as_bytes())
        .file("msg.txt", msg.as_bytes());
    let info = ctx.build(
        images,
        r,
        "FROM scratch\nCOPY rootfs/ /\nCOPY msg.txt /msg.txt\nCMD [\"/bin/busybox\", \"cat\", \"/msg.txt\"]\n",
    );
    assert_eq!(docker_run(r, &[]), msg);
    info
}

// ====================================================================== 1. Docker Engine

/// `docker save R | s3dock push ARGS` (R's own RepoTags), `docker rmi R`, `s3dock pull R
/// PULL_ARGS | docker load`, then the same ID and layers and the same `docker run` output.
fn docker_round_trip(
    store: &TestStore,
    r: &str,
    before: &ImageInfo,
    run_output: &str,
    push_args: &[&str],
    pull_args: &[&str],
) -> serde_json::Value {
    let pushed = docker_save_push(store, &[r], push_args);
    let img = &pushed["images"][0];
    assert_eq!(img["reference"], r, "[{}] {pushed}", store.kind);
    assert_eq!(img["config_digest"], before.id.as_str());
    let diff_ids: Vec<&str> = img["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["diff_id"].as_str().unwrap())
        .collect();
    assert_eq!(diff_ids, before.layers);
    docker_rmi(r);
    let mut args = vec![r];
    args.extend_from_slice(pull_args);
    pull_docker_load_ok(store, &args, r);
    assert_eq!(
        docker_inspect(r).as_ref(),
        Some(before),
        "[{}] after load",
        store.kind
    );
    assert_eq!(
        docker_run(r, &[]),
        run_output,
        "[{}] docker run {r}",
        store.kind
    );
    pushed
}

#[test]
fn docker_multilayer_dir_gzip_docker_format() {
    if !peers_for_docker() {
        return;
    }
    let images = DockerImages::new();
    let store = TestStore::local();
    let r = format!("{}:1", name("multi"));
    let (before, out) = build_multi(&images, &r);
    let pushed = docker_round_trip(&store, &r, &before, &out, &[], &["--format", "docker"]);
    for l in pushed["images"][0]["layers"].as_array().unwrap() {
        assert_eq!(l["compression"], "gzip", "default compression");
    }
}

/// `--compression auto`: zstd layers whatever level the adaptation picked, verified by pull
/// (every digest and diff_id) and loaded by Docker (20.10 needs them decompressed).
#[test]
fn docker_multilayer_dir_auto_compression() {
    if !peers_for_docker() {
        return;
    }
    let images = DockerImages::new();
    let store = TestStore::local();
    let r = format!("{}:auto", name("amulti"));
    let (before, out) = build_multi(&images, &r);
    let pushed = docker_round_trip(
        &store,
        &r,
        &before,
        &out,
        &["--compression", "auto"],
        &["--decompress"],
    );
    let layers = pushed["images"][0]["layers"].as_array().unwrap();
    for l in layers {
        assert_eq!(l["compression"], "zstd", "{pushed}");
    }
    assert_eq!(pushed["compression"], "auto");
    assert_eq!(
        pushed["zstd_levels"].as_array().unwrap().len(),
        layers.len(),
        "{pushed}"
    );
    // The blobs as stored are zstd streams that pull verifies and hands out as they are.
    let stored = store.pull(&[&r]);
    assert!(archive_layer_files(&stored)
        .iter()
        .all(|l| l.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])));
    let sum = summarize_archive(&store.pull(&[&r, "--decompress"]));
    assert_eq!(sum[0].layer_diff_ids, sum[0].config_diff_ids);
}

#[test]
fn docker_multilayer_moto_zstd_decompress() {
    if !peers_for_docker() || !need_podman() || !need_skopeo() {
        return;
    }
    let Some(store) = TestStore::s3("moto") else {
        return;
    };
    let images = DockerImages::new();
    let r = format!("{}:z", name("zmulti"));
    let (before, out) = build_multi(&images, &r);

    let pushed = docker_save_push(&store, &[&r], &["--compression", "zstd"]);
    for l in pushed["images"][0]["layers"].as_array().unwrap() {
        assert_eq!(l["compression"], "zstd");
    }
    docker_rmi(&r);

    // zstd layers as stored: Docker >= 23 loads them, 20.10 refuses ("invalid tar header").
    let (_, load) = pull_docker_load(&store, &[&r]);
    if docker_loads_zstd() {
        assert!(
            load.status.success(),
            "docker {} refused zstd: {}",
            docker_version().unwrap(),
            stderr(&load)
        );
        docker_rmi(&r);
    } else {
        assert!(
            !load.status.success(),
            "docker {} unexpectedly loaded zstd layers",
            docker_version().unwrap()
        );
        assert!(docker_inspect(&r).is_none());
    }

    // --decompress: what this docker needs.
    pull_docker_load_ok(&store, &[&r, "--decompress"], &r);
    assert_eq!(docker_inspect(&r).as_ref(), Some(&before));
    assert_eq!(docker_run(&r, &[]), out);
    // Its OCI view (what the containerd image store reads) is decompressed too.
    let tmp = tempfile::tempdir().unwrap();
    let dec = tmp.path().join("dec.tar");
    store.ok(
        &[
            "pull",
            "-q",
            &r,
            "--decompress",
            "-o",
            dec.to_str().unwrap(),
        ],
        None,
    );
    let data = std::fs::read(&dec).unwrap();
    check_docker_archive(&data, &r, &Want::from(&before));
    let o = summarize_oci(&data);
    assert!(
        o[0].layer_media_types.iter().all(|t| t.ends_with(".tar")),
        "--decompress left compressed media types: {o:?}"
    );

    // The zstd OCI archive itself is fine for podman and skopeo.
    let oci = tmp.path().join("oci.tar");
    store.ok(
        &[
            "pull",
            "-q",
            &r,
            "--format",
            "oci",
            "-o",
            oci.to_str().unwrap(),
        ],
        None,
    );
    let o = check_oci_archive(&std::fs::read(&oci).unwrap(), &Want::from(&before));
    assert!(
        o.layer_media_types
            .iter()
            .all(|t| t == "application/vnd.oci.image.layer.v1.tar+zstd"),
        "{o:?}"
    );
    assert_eq!(
        skopeo_config_digest(&format!("oci-archive:{}", oci.display())),
        before.id
    );
    let podman = Podman::new();
    let loaded = podman.load(&oci);
    assert!(loaded.iter().any(|n| n.ends_with(&r)), "{loaded:?}");
    assert_eq!(podman.inspect(&r), before);
}

#[test]
fn docker_empty_layers_dir_uncompressed_docker_and_oci_format() {
    if !peers_for_docker() || !need_podman() || !need_skopeo() {
        return;
    }
    let images = DockerImages::new();
    let store = TestStore::local();
    let r = format!("{}:e", name("empty"));
    let (before, out) = build_empty_layers(&images, &r);
    let want = Want::from(&before);

    let pushed = docker_save_push(&store, &[&r], &["--compression", "none"]);
    assert_eq!(pushed["images"][0]["layers"][0]["compression"], "none");
    docker_rmi(&r);

    // --format oci: no manifest.json. The classic store (20.10 .. 28) cannot load that.
    let tmp = tempfile::tempdir().unwrap();
    let oci = tmp.path().join("oci.tar");
    store.ok(
        &[
            "pull",
            "-q",
            &r,
            "--format",
            "oci",
            "-o",
            oci.to_str().unwrap(),
        ],
        None,
    );
    check_oci_archive(&std::fs::read(&oci).unwrap(), &want);
    let load = run(tool("docker").args(["load", "-i", oci.to_str().unwrap()]));
    if docker_major() < 23 {
        assert!(
            !load.status.success(),
            "docker {} loaded an OCI-only archive: note it in the README table",
            docker_version().unwrap()
        );
    }
    assert!(docker_inspect(&r).is_none() || load.status.success());
    // ... podman loads it, skopeo reads it, and skopeo can hand it to this docker.
    let podman = Podman::new();
    podman.load(&oci);
    assert_eq!(podman.inspect(&r), before);
    let oci_ref = format!("oci-archive:{}", oci.display());
    assert_eq!(skopeo_config_digest(&oci_ref), before.id);
    skopeo_copy(&oci_ref, &format!("docker-daemon:{r}"));
    assert_eq!(
        docker_inspect(&r).as_ref(),
        Some(&before),
        "via skopeo copy docker-daemon:"
    );
    assert_eq!(docker_run(&r, &[]), out);
    docker_rmi(&r);

    // --format docker: docker load directly.
    pull_docker_load_ok(&store, &[&r, "--format", "docker"], &r);
    assert_eq!(docker_inspect(&r).as_ref(), Some(&before));
    assert_eq!(docker_run(&r, &[]), out);
}

/// The same layer three times (add, whiteout, add again...): Docker's legacy save writes
/// the repeats as `layer.tar` symlinks (formats.md §1.3); s3dock stores the blob once and
/// the manifest lists it three times, which docker load and podman load must accept.
#[test]
fn docker_duplicate_layers_symlinked_layer_tar_dir_zstd() {
    if !peers_for_docker() || !need_podman() {
        return;
    }
    let images = DockerImages::new();
    let store = TestStore::local();
    let r = format!("{}:1", name("dup"));
    let ctx = BuildContext::new();
    ctx.file("rootfs/id.txt", format!("{r} dup\n").as_bytes())
        .file("x.txt", b"same layer, three times\n");
    let before = ctx.build(
        &images,
        &r,
        r#"FROM scratch
COPY rootfs/ /
COPY x.txt /x.txt
RUN ["/bin/busybox", "rm", "/x.txt"]
COPY x.txt /x.txt
RUN ["/bin/busybox", "rm", "/x.txt"]
COPY x.txt /x.txt
CMD ["/bin/busybox", "cat", "/x.txt"]
"#,
    );
    assert_eq!(before.layers.len(), 6);
    assert_eq!(before.layers[1], before.layers[3]);
    assert_eq!(before.layers[1], before.layers[5]);
    let saved = check(tool("docker").args(["save", &r])).stdout;
    let symlinks = tar::Archive::new(&saved[..])
        .entries()
        .unwrap()
        .filter(|e| e.as_ref().unwrap().header().entry_type().is_symlink())
        .count();
    if docker_major() < 25 {
        assert_eq!(
            symlinks, 2,
            "legacy docker save should symlink repeated layer.tar"
        );
    }

    let pushed = docker_round_trip(
        &store,
        &r,
        &before,
        "same layer, three times\n",
        &["--compression", "zstd"],
        &["--decompress"],
    );
    let digests: Vec<&str> = pushed["images"][0]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    assert_eq!(digests[1], digests[3]);
    assert_eq!(digests[1], digests[5]);

    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("dup.tar");
    store.ok(&["pull", "-q", &r, "-o", f.to_str().unwrap()], None);
    check_docker_archive(&std::fs::read(&f).unwrap(), &r, &Want::from(&before));
    let podman = Podman::new();
    podman.load(&f);
    assert_eq!(podman.inspect(&r), before);
}

#[test]
fn docker_big_layer_s3s_gzip() {
    if !peers_for_docker() {
        return;
    }
    let Some(store) = TestStore::s3("s3s") else {
        return;
    };
    let images = DockerImages::new();
    let r = format!("{}:1", name("big"));
    assert_fits_s3s(&store, &name("big"), "1");
    let (before, big_sha) = {
        let ctx = BuildContext::new();
        ctx.file("rootfs/id.txt", format!("{r} big\n").as_bytes());
        let sha = ctx.random_file("big.bin", 200 << 20);
        let info = ctx.build(
            &images,
            &r,
            "FROM scratch\nCOPY rootfs/ /\nCOPY big.bin /big.bin\nCMD [\"/bin/busybox\", \"sha256sum\", \"/big.bin\"]\n",
        );
        (info, sha) // the context (and its 200 MiB file) is deleted here
    };
    let out = format!("{big_sha}  /big.bin\n");
    let pushed = docker_round_trip(&store, &r, &before, &out, &[], &[]);
    let layers = pushed["images"][0]["layers"].as_array().unwrap();
    assert!(
        layers
            .iter()
            .any(|l| l["size"].as_u64().unwrap() > 200 << 20),
        "{pushed}"
    );

    // The same multipart-uploaded blob, served by registry:2's S3 driver to docker pull.
    if need_registry() {
        let reg = Registry::s3(&store);
        docker_rmi(&r);
        let pulled = format!("{}/{r}", reg.addr);
        images.add(&pulled);
        docker_pull_same(&pulled, &before, &out);
    }
}

#[test]
fn docker_multitag_moto_gzip_docker_and_oci_format() {
    if !peers_for_docker() || !need_podman() {
        return;
    }
    let Some(store) = TestStore::s3("moto") else {
        return;
    };
    let images = DockerImages::new();
    let n = name("tags");
    let (r1, r2) = (format!("{n}:1"), format!("{n}:two"));
    let before = build_small(&images, &r1, "multi-tag image\n");
    images.add(&r2);
    check(tool("docker").args(["tag", &r1, &r2]));

    // One image, two RepoTags in manifest.json: both tags land in the store.
    let pushed = docker_save_push(&store, &[&r1, &r2], &[]);
    let mut refs: Vec<&str> = pushed["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            assert_eq!(i["config_digest"], before.id.as_str());
            i["reference"].as_str().unwrap()
        })
        .collect();
    refs.sort();
    assert_eq!(refs, vec![r1.as_str(), r2.as_str()]);
    assert_eq!(s3dock_tags(&store, &n), vec!["1", "two"]);
    assert_eq!(
        pushed["images"][0]["manifest_digest"], pushed["images"][1]["manifest_digest"],
        "same image, same manifest"
    );
    docker_rmi(&r1);
    docker_rmi(&r2);

    for r in [&r1, &r2] {
        pull_docker_load_ok(&store, &[r], r);
        assert_eq!(docker_inspect(r).as_ref(), Some(&before));
        assert_eq!(docker_run(r, &[]), "multi-tag image\n");
    }

    let podman = Podman::new();
    let tmp = tempfile::tempdir().unwrap();
    for r in [&r1, &r2] {
        let f = tmp.path().join("oci.tar");
        store.ok(
            &[
                "pull",
                "-q",
                r,
                "--format",
                "oci",
                "-o",
                f.to_str().unwrap(),
            ],
            None,
        );
        check_oci_archive(&std::fs::read(&f).unwrap(), &Want::from(&before));
        podman.load(&f);
        assert_eq!(podman.inspect(r), before);
    }
}

// ====================================================================== 2. registry:2 serves s3dock's store

/// Pushes a docker-built image (gzip and zstd tags) and two fixtures with s3dock, starts
/// registry:2 on the same storage, and checks skopeo, `GET tags/list` and `docker pull`.
fn registry_serves(store: TestStore, start: impl FnOnce(&TestStore) -> Registry, short: &str) {
    let images = DockerImages::new();
    let app = name(&format!("a{short}"));
    let fx = name(&format!("f{short}"));
    for (n, t) in [
        (&app, "gz"),
        (&app, "zs"),
        (&app, "nc"),
        (&fx, "1"),
        (&fx, "oz"),
    ] {
        assert_fits_s3s(&store, n, t);
    }
    let gz = format!("{app}:gz");
    let msg = format!("served by registry:2 from {}\n", store.kind);
    let before = build_small(&images, &gz, &msg);

    let mut cases: Vec<(String, String, Want, bool)> = Vec::new(); // (ref, manifest digest, want, zstd)
                                                                   // The same docker-saved image, pushed with each compression.
    for (tag, compression) in [("gz", "gzip"), ("zs", "zstd"), ("nc", "none")] {
        let r = format!("{app}:{tag}");
        let p = docker_save_push(&store, &[&gz], &["--compression", compression, &r]);
        cases.push((
            r,
            p["images"][0]["manifest_digest"].as_str().unwrap().into(),
            Want::from(&before),
            compression == "zstd",
        ));
    }
    for (file, tag) in [("docker25.tar", "1"), ("oci-archive-zstd.tar", "oz")] {
        let r = format!("{fx}:{tag}");
        let p = store.push_json(&["-i", fixture(file).to_str().unwrap(), &r], None);
        let want = Want::from_expected(&expected(file)["images"][0]);
        assert_eq!(p["images"][0]["config_digest"], want.config.as_str());
        cases.push((
            r,
            p["images"][0]["manifest_digest"].as_str().unwrap().into(),
            want,
            tag == "oz",
        ));
    }

    let reg = start(&store);
    let tmp = tempfile::tempdir().unwrap();
    for (r, digest, want, zstd) in &cases {
        let d = reg.docker_ref(r);
        let ins = skopeo_inspect(&d);
        assert_eq!(ins["Digest"], digest.as_str(), "skopeo inspect {d}: {ins}");
        assert_eq!(
            skopeo_raw_manifest_digest(&d),
            *digest,
            "served manifest bytes"
        );
        assert_eq!(skopeo_config_digest(&d), want.config, "served config");
        // skopeo 1.9.3 refuses to write zstd layers into docker-archive: ("zstd compression
        // is not supported for docker images"), so zstd images are copied to oci-archive: only.
        if !*zstd {
            let out = tmp.path().join("copy.tar");
            let _ = std::fs::remove_file(&out);
            skopeo_copy(&d, &format!("docker-archive:{}:{r}", out.display()));
            let s = summarize_archive(&std::fs::read(&out).unwrap());
            assert_eq!(s.len(), 1);
            assert_eq!(s[0].config_digest, want.config, "skopeo copy {d}");
            assert_eq!(s[0].layer_diff_ids, want.diff_ids, "skopeo copy {d}");
        }
        let out = tmp.path().join("copy-oci.tar");
        let _ = std::fs::remove_file(&out);
        skopeo_copy(
            &d,
            &format!(
                "oci-archive:{}:{}",
                out.display(),
                r.rsplit(':').next().unwrap()
            ),
        );
        let o = summarize_oci(&std::fs::read(&out).unwrap());
        assert_eq!(o.len(), 1);
        // (skopeo rewrites a Docker config as an OCI config here, so only the diff_ids stay.)
        assert_eq!(
            o[0].config_diff_ids, want.diff_ids,
            "skopeo copy {d} oci-archive:"
        );
        assert_eq!(
            o[0].layer_diff_ids, want.diff_ids,
            "skopeo copy {d} oci-archive:"
        );
    }

    let catalog = reg.catalog();
    for n in [&app, &fx] {
        assert!(catalog.contains(n), "{n} not in /v2/_catalog: {catalog:?}");
        assert_eq!(
            reg.tags(n),
            s3dock_tags(&store, n),
            "GET /v2/{n}/tags/list vs s3dock tags"
        );
    }
    assert_eq!(reg.tags(&app), vec!["gz", "nc", "zs"]);
    assert_eq!(reg.tags(&fx), vec!["1", "oz"]);

    // docker pull from the registry (127.0.0.0/8 is an insecure registry by default).
    // First the zstd tag, while none of the image's layers is in the daemon: Docker < 23
    // cannot decompress zstd layers, so that pull must fail there.
    docker_rmi(&gz);
    let pulled_zs = format!("{}/{app}:zs", reg.addr);
    images.add(&pulled_zs);
    let o = run(tool("docker").args(["pull", "-q", &pulled_zs]));
    if docker_loads_zstd() {
        assert!(
            o.status.success(),
            "docker pull {pulled_zs}: {}",
            stderr(&o)
        );
        assert_eq!(docker_run(&pulled_zs, &[]), msg);
        docker_rmi(&pulled_zs);
    } else {
        assert!(
            !o.status.success(),
            "docker {} pulled zstd layers",
            docker_version().unwrap()
        );
    }
    // Uncompressed layers (`…rootfs.diff.tar`), again with no layer of the image present.
    let pulled_nc = format!("{}/{app}:nc", reg.addr);
    images.add(&pulled_nc);
    docker_pull_same(&pulled_nc, &before, &msg);
    docker_rmi(&pulled_nc);
    let pulled = format!("{}/{gz}", reg.addr);
    images.add(&pulled);
    docker_pull_same(&pulled, &before, &msg);
}

#[test]
fn registry_fs_serves_dir_store() {
    if !peers_for_docker() || !need_registry() || !need_skopeo() {
        return;
    }
    let store = TestStore::local();
    registry_serves(
        store,
        |s| Registry::fs(s.dir.as_ref().unwrap().path()),
        "fs",
    );
}

/// registry:2 with its S3 driver on s3dock's store in one of the test S3 servers.
fn registry_s3_serves(server: &'static str, short: &str) {
    if !peers_for_docker() || !need_registry() || !need_skopeo() {
        return;
    }
    if let Some(store) = TestStore::s3(server) {
        registry_serves(store, Registry::s3, short);
    }
}

#[test]
fn registry_s3_serves_moto_store() {
    registry_s3_serves("moto", "mo");
}

#[test]
fn registry_s3_serves_s3s_store() {
    registry_s3_serves("s3s", "ss");
}

#[test]
fn registry_s3_serves_garage_store() {
    registry_s3_serves("garage", "ga");
}

/// The registry's own maintenance on a store s3dock wrote: `DELETE` by digest through the
/// API, then `garbage-collect --delete-untagged`. GC must keep every blob of what s3dock
/// tagged (so s3dock's links are complete), drop what is untagged, and s3dock must then
/// neither list deleted tags nor reuse blobs GC removed (its diff_id index is only a hint).
fn registry_gc(store: TestStore, start: impl Fn(&TestStore) -> Registry, short: &str) {
    let gc = name(&format!("g{short}"));
    let gd = name(&format!("h{short}"));
    for (n, t) in [(&gc, "keep"), (&gc, "moved"), (&gd, "del"), (&gd, "again")] {
        assert_fits_s3s(&store, n, t);
    }
    let hello = Want::from_expected(&expected("docker-legacy.tar")["images"][0]);
    let tiny = Want::from_expected(&expected("docker25-tiny.tar")["images"][0]);
    let push = |file: &str, r: &str, extra: &[&str]| -> serde_json::Value {
        let f = fixture(file);
        let mut a = vec!["-i", f.to_str().unwrap(), r];
        a.extend_from_slice(extra);
        store.push_json(&a, None)["images"][0].clone()
    };
    let blob_key = |d: &str| {
        let h = d.strip_prefix("sha256:").unwrap();
        format!("docker/registry/v2/blobs/sha256/{}/{h}/data", &h[..2])
    };

    let keep = push("docker-legacy.tar", &format!("{gc}:keep"), &[]);
    let tiny_old = push(
        "docker25-tiny.tar",
        &format!("{gc}:moved"),
        &["--compression", "zstd"],
    );
    let moved = push(
        "docker-legacy.tar",
        &format!("{gc}:moved"),
        &["--compression", "zstd"],
    );
    assert_eq!(
        moved["previous"], tiny_old["manifest_digest"],
        "the tag moved"
    );
    let del = push("docker25-tiny.tar", &format!("{gd}:del"), &[]);

    let reg = start(&store);
    assert_eq!(
        reg.delete_manifest(&gd, del["manifest_digest"].as_str().unwrap()),
        202
    );
    assert_eq!(reg.tags(&gd), Vec::<String>::new());
    assert_eq!(
        s3dock_tags(&store, &gd),
        Vec::<String>::new(),
        "s3dock tags after the registry deleted it"
    );
    store.fails(&["pull", "-q", &format!("{gd}:del")], None);

    let log = reg.stop_and_garbage_collect(true);
    let keys = store.keys();
    for img in [&keep, &moved] {
        for d in pushed_blobs(img) {
            assert!(
                keys.contains(&blob_key(&d)),
                "GC deleted {d}, still used by {}:\n{log}",
                img["reference"]
            );
        }
    }
    for img in [&tiny_old, &del] {
        for d in pushed_blobs(img) {
            assert!(
                !keys.contains(&blob_key(&d)),
                "GC kept {d} of untagged/deleted {}",
                img["reference"]
            );
        }
    }

    let tmp = tempfile::tempdir().unwrap();
    let reg = start(&store);
    for img in [&keep, &moved] {
        let r = img["reference"].as_str().unwrap();
        assert_eq!(
            skopeo_inspect(&reg.docker_ref(r))["Digest"],
            img["manifest_digest"]
        );
        let f = tmp.path().join("p.tar");
        store.ok(&["pull", "-q", r, "-o", f.to_str().unwrap()], None);
        check_docker_archive(&std::fs::read(&f).unwrap(), r, &hello);
    }
    // Pushing tiny again: its blobs are gone, the diff_id index still names them.
    let again = push("docker25-tiny.tar", &format!("{gd}:again"), &[]);
    let keys = store.keys();
    for d in pushed_blobs(&again) {
        assert!(
            keys.contains(&blob_key(&d)),
            "re-push after GC did not store {d}"
        );
    }
    let r = format!("{gd}:again");
    let out = tmp.path().join("again.tar");
    skopeo_copy(
        &reg.docker_ref(&r),
        &format!("docker-archive:{}:{r}", out.display()),
    );
    let s = summarize_archive(&std::fs::read(&out).unwrap());
    assert_eq!(
        (s[0].config_digest.clone(), s[0].layer_diff_ids.clone()),
        (tiny.config.clone(), tiny.diff_ids.clone())
    );
    let f = tmp.path().join("again-s3dock.tar");
    store.ok(&["pull", "-q", &r, "-o", f.to_str().unwrap()], None);
    check_docker_archive(&std::fs::read(&f).unwrap(), &r, &tiny);
}

#[test]
fn registry_fs_delete_and_garbage_collect_dir_store() {
    if !need_registry() || !need_skopeo() {
        return;
    }
    registry_gc(
        TestStore::local(),
        |s| Registry::fs(s.dir.as_ref().unwrap().path()),
        "fs",
    );
}

#[test]
fn registry_s3_delete_and_garbage_collect_moto_store() {
    if !need_registry() || !need_skopeo() {
        return;
    }
    let Some(store) = TestStore::s3("moto") else {
        return;
    };
    registry_gc(store, Registry::s3, "mo");
}

// ====================================================================== 3. registry:2 writes, s3dock reads

/// skopeo pushes fixtures and a docker-built image into registry:2; s3dock pulls them from
/// the same storage and Docker (and podman, for zstd) load them.
fn reverse(store: &TestStore, reg: Registry, short: &str) {
    let images = DockerImages::new();
    let tmp = tempfile::tempdir().unwrap();

    // A fresh image, saved and removed, so docker load must read all of its layers.
    let fresh = format!("{}:1", name(&format!("v{short}")));
    let msg = format!("pushed by skopeo into registry:2 ({short})\n");
    let fresh_info = build_small(&images, &fresh, &msg);
    let saved = tmp.path().join("fresh.tar");
    check(tool("docker").args(["save", "-o", saved.to_str().unwrap(), &fresh]));
    docker_rmi(&fresh);

    let repo = name(&format!("w{short}"));
    let hello_out = "hello from s3dock fixture\n";
    // (source, registry ref, want, docker run output, zstd)
    let cases: Vec<(String, String, Want, String, bool)> = vec![
        (
            format!("docker-archive:{}", fixture("docker-legacy.tar").display()),
            format!("{repo}:legacy"),
            Want::from_expected(&expected("docker-legacy.tar")["images"][0]),
            hello_out.into(),
            false,
        ),
        (
            format!("oci-archive:{}:1", fixture("oci-archive.tar").display()),
            format!("{repo}:oci"),
            Want::from_expected(&expected("oci-archive.tar")["images"][0]),
            hello_out.into(),
            false,
        ),
        (
            format!(
                "oci-archive:{}:1",
                fixture("oci-archive-zstd.tar").display()
            ),
            format!("{repo}:zst"),
            Want::from_expected(&expected("oci-archive-zstd.tar")["images"][0]),
            hello_out.into(),
            true,
        ),
        (
            format!("docker-archive:{}", saved.display()),
            fresh.clone(),
            Want::from(&fresh_info),
            msg.clone(),
            false,
        ),
    ];
    for (src, r, _, _, _) in &cases {
        skopeo_copy(src, &reg.docker_ref(r));
    }
    assert_eq!(
        s3dock_tags(store, &repo),
        reg.tags(&repo),
        "s3dock tags vs GET tags/list"
    );
    assert_eq!(s3dock_tags(store, &repo), vec!["legacy", "oci", "zst"]);

    for (i, (_, r, want, run_out, zstd)) in cases.iter().enumerate() {
        let digest = skopeo_inspect(&reg.docker_ref(r))["Digest"]
            .as_str()
            .unwrap()
            .to_string();
        // Loaded under a unique local name (the fresh image keeps its own).
        let local = if *r == fresh {
            fresh.clone()
        } else {
            format!("{}:{i}", name(&format!("l{short}")))
        };
        images.add(&local);
        let f = tmp.path().join(format!("pull{i}.tar"));
        let mut args = vec![
            "pull",
            "-q",
            "--json",
            r.as_str(),
            "--tag",
            local.as_str(),
            "-o",
            f.to_str().unwrap(),
        ];
        if *zstd && !docker_loads_zstd() {
            args.push("--decompress");
        }
        let report: serde_json::Value =
            serde_json::from_slice(&store.ok(&args, None).stdout).unwrap();
        assert_eq!(
            report["manifest_digest"],
            digest.as_str(),
            "s3dock pull {r} vs registry"
        );
        assert_eq!(report["config_digest"], want.config.as_str());
        check_docker_archive(&std::fs::read(&f).unwrap(), &local, want);
        let out = check(tool("docker").args(["load", "-i", f.to_str().unwrap()]));
        assert!(
            stdout(&out).contains(&format!("Loaded image: {local}")),
            "{}",
            stdout(&out)
        );
        let info = docker_inspect(&local).unwrap();
        assert_eq!(info.id, want.config, "docker load of s3dock pull {r}");
        assert_eq!(info.layers, want.diff_ids);
        assert_eq!(docker_run(&local, &[]), *run_out, "docker run {local}");
        if *zstd {
            // As stored (zstd), podman loads it.
            let z = tmp.path().join("zstd.tar");
            store.ok(&["pull", "-q", r, "-o", z.to_str().unwrap()], None);
            let podman = Podman::new();
            podman.load(&z);
            assert_eq!(podman.inspect(r).id, want.config);
        }
    }
}

#[test]
fn reverse_skopeo_to_registry_fs_then_s3dock_pull() {
    if !peers_for_docker() || !need_registry() || !need_skopeo() || !need_podman() {
        return;
    }
    // The registry's rootdirectory is a subdirectory: s3dock reaches it with --root-dir.
    let mut store = TestStore::local();
    let sub = store.dir.as_ref().unwrap().path().join("registry");
    store
        .args
        .extend(["--root-dir".to_string(), "registry".to_string()]);
    let reg = Registry::fs(&sub);
    reverse(&store, reg, "fs");
    assert!(sub.join("docker/registry/v2/repositories").is_dir());
}

#[test]
fn reverse_skopeo_to_registry_s3_moto_then_s3dock_pull() {
    if !peers_for_docker() || !need_registry() || !need_skopeo() || !need_podman() {
        return;
    }
    let Some(store) = TestStore::s3("moto") else {
        return;
    };
    let reg = Registry::s3(&store);
    reverse(&store, reg, "mo");
}

// ====================================================================== multi-platform

/// An OCI layout (dir) holding hello for linux/amd64 (skopeo's OCI conversion of the
/// fixture) and linux/arm64 (the same image re-configured by `umoci config --architecture`),
/// plus an image index tagged `multi` listing both. Returns (layout, amd64 manifest, arm64
/// manifest, amd64 config, arm64 config).
fn multiplatform_layout(tmp: &Path) -> (std::path::PathBuf, String, String, String, String) {
    let layout = tmp.join("layout");
    skopeo_copy(
        &format!("oci-archive:{}:1", fixture("oci-archive.tar").display()),
        &format!("oci:{}:amd64", layout.display()),
    );
    check(tool("umoci").args([
        "config",
        "--image",
        &format!("{}:amd64", layout.display()),
        "--tag",
        "arm64",
        "--architecture",
        "arm64",
    ]));
    let index_path = layout.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let by_ref = |r: &str| -> serde_json::Value {
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == r)
            .unwrap()
            .clone()
    };
    let (amd, arm) = (by_ref("amd64"), by_ref("arm64"));
    let config_of = |d: &serde_json::Value| -> String {
        let h = d["digest"]
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap();
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(h)).unwrap())
                .unwrap();
        m["config"]["digest"].as_str().unwrap().to_string()
    };
    let plat = |d: &serde_json::Value, arch: &str| {
        serde_json::json!({"mediaType": d["mediaType"], "digest": d["digest"], "size": d["size"],
                           "platform": {"os": "linux", "architecture": arch}})
    };
    let body = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [plat(&amd, "amd64"), plat(&arm, "arm64")],
    }))
    .unwrap();
    let h = sha256_hex(&body);
    std::fs::write(layout.join("blobs/sha256").join(&h), &body).unwrap();
    index["manifests"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": format!("sha256:{h}"),
        "size": body.len(), "annotations": {"org.opencontainers.image.ref.name": "multi"}}));
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
    let (ca, cr) = (config_of(&amd), config_of(&arm));
    (
        layout,
        amd["digest"].as_str().unwrap().to_string(),
        arm["digest"].as_str().unwrap().to_string(),
        ca,
        cr,
    )
}

/// `skopeo copy --all` of a two-platform index into registry:2 (fs); s3dock pulls each
/// platform; docker pulls the index from the registry and s3dock's pull of it loads too.
#[test]
fn reverse_multiplatform_index_skopeo_all_to_registry_fs_then_s3dock_pull() {
    if !peers_for_docker()
        || !need_registry()
        || !need_skopeo()
        || !require("umoci", have_command("umoci"))
    {
        return;
    }
    let images = DockerImages::new();
    let tmp = tempfile::tempdir().unwrap();
    let (layout, amd, arm, amd_cfg, arm_cfg) = multiplatform_layout(tmp.path());
    let store = TestStore::local();
    let reg = Registry::fs(store.dir.as_ref().unwrap().path());
    let repo = name("mp");
    let r = format!("{repo}:multi");
    let mut c = skopeo();
    c.args(["copy", "-q", "--all", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:multi", layout.display()))
        .arg(reg.docker_ref(&r));
    check(&mut c);
    // The same as a Docker manifest list (skopeo converts the index and children to v2s2).
    let list = format!("{repo}:list");
    let mut c = skopeo();
    c.args([
        "copy",
        "-q",
        "--all",
        "--format",
        "v2s2",
        "--dest-tls-verify=false",
    ])
    .arg(format!("oci:{}:multi", layout.display()))
    .arg(reg.docker_ref(&list));
    check(&mut c);
    assert_eq!(s3dock_tags(&store, &repo), vec!["list", "multi"]);
    assert_eq!(reg.tags(&repo), vec!["list", "multi"]);
    let list_raw: serde_json::Value = {
        let mut c = skopeo();
        c.args(["inspect", "--raw", "--tls-verify=false"])
            .arg(reg.docker_ref(&list));
        serde_json::from_slice(&check(&mut c).stdout).unwrap()
    };
    assert_eq!(
        list_raw["mediaType"],
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );
    let list_child = |arch: &str| -> String {
        list_raw["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["platform"]["architecture"] == arch)
            .unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let hello_diff_ids = Want::from_expected(&expected("oci-archive.tar")["images"][0]).diff_ids;
    for (plat, arch, manifest, cfg) in [
        ("linux/amd64", "amd64", &amd, &amd_cfg),
        ("linux/arm64", "arm64", &arm, &arm_cfg),
    ] {
        for (rr, want_manifest) in [(&r, manifest.clone()), (&list, list_child(arch))] {
            let f = tmp.path().join("p.tar");
            let out = store.ok(
                &[
                    "pull",
                    "-q",
                    "--json",
                    rr,
                    "--platform",
                    plat,
                    "-o",
                    f.to_str().unwrap(),
                ],
                None,
            );
            let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(
                report["manifest_digest"],
                want_manifest.as_str(),
                "{rr} {plat}"
            );
            if rr == &r {
                // (v2s2 conversion rewrites the config, so only the OCI index keeps it.)
                assert_eq!(report["config_digest"], cfg.as_str(), "{rr} {plat}");
            }
            let data = std::fs::read(&f).unwrap();
            let got = summarize_archive(&data);
            assert_eq!(got[0].repo_tags, vec![rr.to_string()]);
            assert_eq!(
                got[0].config_digest,
                report["config_digest"].as_str().unwrap()
            );
            assert_eq!(got[0].layer_diff_ids, hello_diff_ids, "{rr} {plat}");
            let files = tar_files(&data);
            let m: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
            let cfg_json: serde_json::Value =
                serde_json::from_slice(&files[m[0]["Config"].as_str().unwrap()]).unwrap();
            assert_eq!(cfg_json["architecture"], arch, "{rr} {plat}");
        }
    }
    // Docker (amd64 host) pulls the index from the registry and runs its platform's image.
    if std::env::consts::ARCH == "x86_64" {
        let pulled = format!("{}/{r}", reg.addr);
        images.add(&pulled);
        check(tool("docker").args(["pull", "-q", &pulled]));
        assert_eq!(docker_inspect(&pulled).unwrap().id, amd_cfg);
        assert_eq!(docker_run(&pulled, &[]), "hello from s3dock fixture\n");
        let local = format!("{}:host", name("mpl"));
        images.add(&local);
        pull_docker_load_ok(&store, &[&r, "--tag", &local], &local);
        assert_eq!(docker_inspect(&local).unwrap().id, amd_cfg);
        assert_eq!(docker_run(&local, &[]), "hello from s3dock fixture\n");
    }
}

/// An oci-archive holding an index (`skopeo copy --all ... oci-archive:`): s3dock pushes the
/// platform asked for, and registry:2 serves it with the child manifest's digest; with
/// `--all-platforms` the whole index, which registry:2 serves and skopeo picks from.
#[test]
fn producer_skopeo_oci_archive_multiplatform_index() {
    if !need_registry() || !need_skopeo() || !require("umoci", have_command("umoci")) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (layout, _amd, _arm, amd_cfg, arm_cfg) = multiplatform_layout(tmp.path());
    let archive = tmp.path().join("multi.tar");
    let mut c = skopeo();
    c.args(["copy", "-q", "--all"])
        .arg(format!("oci:{}:multi", layout.display()))
        .arg(format!("oci-archive:{}:multi", archive.display()));
    check(&mut c);
    let store = TestStore::local();
    let repo = name("pm");
    let mut pushed = Vec::new();
    for (plat, tag, cfg) in [
        ("linux/amd64", "amd", &amd_cfg),
        ("linux/arm64", "arm", &arm_cfg),
    ] {
        let p = store.push_json(
            &[
                "-i",
                archive.to_str().unwrap(),
                "--platform",
                plat,
                &format!("{repo}:{tag}"),
            ],
            None,
        );
        assert_eq!(p["images"][0]["config_digest"], cfg.as_str(), "{plat}");
        pushed.push((
            format!("{repo}:{tag}"),
            p["images"][0]["manifest_digest"]
                .as_str()
                .unwrap()
                .to_string(),
            cfg.clone(),
        ));
    }
    // --all-platforms: the whole index under one tag, served as an index.
    let all = format!("{repo}:all");
    let p = store.push_json(
        &["-i", archive.to_str().unwrap(), "--all-platforms", &all],
        None,
    );
    let index = p["images"][0]["manifest_digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        p["images"][0]["platforms"].as_array().unwrap().len(),
        2,
        "{p}"
    );
    let reg = Registry::fs(store.dir.as_ref().unwrap().path());
    for (r, digest, cfg) in &pushed {
        let d = reg.docker_ref(r);
        assert_eq!(skopeo_inspect(&d)["Digest"], digest.as_str());
        assert_eq!(skopeo_config_digest(&d), *cfg);
    }
    assert_eq!(skopeo_raw_manifest_digest(&reg.docker_ref(&all)), index);
    for (arch, cfg) in [("amd64", &amd_cfg), ("arm64", &arm_cfg)] {
        let mut c = skopeo();
        c.args([
            "inspect",
            "--tls-verify=false",
            "--override-arch",
            arch,
            "--config",
            "--raw",
        ])
        .arg(reg.docker_ref(&all));
        assert_eq!(
            format!("sha256:{}", sha256_hex(&check(&mut c).stdout)),
            *cfg,
            "{arch}"
        );
    }
}

// ====================================================================== 4. other producers

/// Pushes a fixture made by another producer; pulls every image back in both formats and
/// checks config digest and diff_ids against `fixtures/expected.json`; then (dir store only)
/// skopeo, podman (both formats) and docker read the pulled archives.
fn producer(file: &str, slug: &str) {
    let exp = expected(file);
    let exp_images = exp["images"].as_array().unwrap();
    let tagged = exp_images
        .iter()
        .any(|i| !i["RepoTags"].as_array().unwrap().is_empty());
    let mut stores = vec![TestStore::local()];
    stores.extend(TestStore::s3("moto"));
    let full_checks = need_skopeo() && need_podman() && need_docker();
    let images = DockerImages::new();
    let tmp = tempfile::tempdir().unwrap();
    for (si, store) in stores.iter().enumerate() {
        let own_ref = format!("{}:{slug}", name("p"));
        let input = fixture(file);
        let mut args = vec!["-i", input.to_str().unwrap()];
        if !tagged {
            args.push(&own_ref);
        }
        let pushed = store.push_json(&args, None);
        let pushed = pushed["images"].as_array().unwrap();
        let n_tags: usize = exp_images
            .iter()
            .map(|i| i["RepoTags"].as_array().unwrap().len().max(1))
            .sum();
        assert_eq!(pushed.len(), n_tags, "[{}] {file}: {pushed:?}", store.kind);
        for (pi, p) in pushed.iter().enumerate() {
            let r = p["reference"].as_str().unwrap();
            let img = exp_images
                .iter()
                .find(|i| i["ConfigDigest"] == p["config_digest"])
                .unwrap_or_else(|| panic!("[{}] {file}: pushed unknown config {p}", store.kind));
            let want = Want::from_expected(img);
            let tags: Vec<String> = img["RepoTags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    t.as_str()
                        .unwrap()
                        .trim_start_matches("docker.io/")
                        .to_string()
                })
                .collect();
            if tagged {
                assert!(
                    tags.iter().any(|t| t == r),
                    "[{}] {file}: pushed {r}, archive tags {tags:?}",
                    store.kind
                );
            } else {
                assert_eq!(r, own_ref);
            }

            let d = tmp.path().join(format!("{si}-{pi}-docker.tar"));
            let o = tmp.path().join(format!("{si}-{pi}-oci.tar"));
            store.ok(
                &[
                    "pull",
                    "-q",
                    r,
                    "--format",
                    "docker",
                    "-o",
                    d.to_str().unwrap(),
                ],
                None,
            );
            store.ok(
                &[
                    "pull",
                    "-q",
                    r,
                    "--format",
                    "oci",
                    "-o",
                    o.to_str().unwrap(),
                ],
                None,
            );
            check_docker_archive(&std::fs::read(&d).unwrap(), r, &want);
            let oci = check_oci_archive(&std::fs::read(&o).unwrap(), &want);
            assert_eq!(
                oci.image_name.as_deref(),
                Some(normalized(r).as_str()),
                "io.containerd.image.name"
            );
            if si > 0 || !full_checks {
                continue;
            }

            // skopeo reads both.
            let dref = format!("docker-archive:{}", d.display());
            assert_eq!(skopeo_config_digest(&dref), want.config, "skopeo {dref}");
            assert_eq!(
                skopeo_inspect(&dref)["Layers"].as_array().unwrap().len(),
                want.diff_ids.len()
            );
            let oref = format!("oci-archive:{}", o.display());
            assert_eq!(skopeo_config_digest(&oref), want.config, "skopeo {oref}");

            // podman loads both (separate stores, so the second load is not a no-op).
            for f in [&d, &o] {
                let podman = Podman::new();
                let names = podman.load(f);
                assert!(
                    names.iter().any(|n| n.ends_with(r)),
                    "podman load {}: {names:?}",
                    f.display()
                );
                let got = podman.inspect(r);
                assert_eq!(got.id, want.config, "podman load {}", f.display());
                assert_eq!(got.layers, want.diff_ids, "podman load {}", f.display());
            }

            // docker loads the docker format (zstd only with --decompress before Docker 23).
            let local = format!("{}:{slug}{pi}", name("d"));
            images.add(&local);
            let zstd = oci.layer_media_types.iter().any(|t| t.ends_with("zstd"));
            let mut args = vec![r, "--tag", local.as_str()];
            if zstd && !docker_loads_zstd() {
                args.push("--decompress");
            }
            pull_docker_load_ok(store, &args, &local);
            let info = docker_inspect(&local).unwrap();
            assert_eq!(info.id, want.config, "docker load of {file} via s3dock");
            assert_eq!(info.layers, want.diff_ids);
            if let Some(out) = img["RunOutput"].as_str() {
                assert_eq!(docker_run(&local, &[]), out);
            }
        }
    }
}

#[test]
fn producer_docker_legacy_save() {
    producer("docker-legacy.tar", "legacy");
}

#[test]
fn producer_docker_legacy_save_multi_image() {
    producer("docker-multi.tar", "multi");
}

#[test]
fn producer_docker_legacy_save_gzip_stream() {
    producer("docker-legacy.tar.gz", "gz");
}

#[test]
fn producer_docker_legacy_save_zstd_stream() {
    producer("docker-legacy.tar.zst", "zst");
}

#[test]
fn producer_docker25_save() {
    producer("docker25.tar", "d25");
}

#[test]
fn producer_docker25_save_multi_tag() {
    producer("docker25-tiny.tar", "d25t");
}

#[test]
fn producer_skopeo_docker_archive() {
    producer("skopeo-docker-archive.tar", "skd");
}

#[test]
fn producer_skopeo_oci_archive() {
    producer("oci-archive.tar", "sko");
}

#[test]
fn producer_skopeo_oci_archive_zstd() {
    producer("oci-archive-zstd.tar", "skz");
}

#[test]
fn producer_umoci_layout() {
    producer("umoci-layout.tar", "umoci");
}

/// Sanity check of the helpers against a file of known content, so a broken helper
/// cannot make the peer tests pass vacuously.
#[test]
fn helpers_read_fixtures_like_skopeo() {
    let data = std::fs::read(fixture("oci-archive-zstd.tar")).unwrap();
    let exp = expected("oci-archive-zstd.tar");
    let want = Want::from_expected(&exp["images"][0]);
    let o = check_oci_archive(&data, &want);
    assert_eq!(
        o.manifest_digest,
        exp["images"][0]["Manifest"]["digest"].as_str().unwrap()
    );
    assert!(Path::new(&fixture("docker25.tar")).exists());
    check_docker_archive(
        &std::fs::read(fixture("docker25.tar")).unwrap(),
        "s3dock-fixture/hello:1",
        &Want::from_expected(&expected("docker25.tar")["images"][0]),
    );
}
