//! Multi-platform images: pull picks the manifest for `--platform` (default: this host's).

mod common;
mod interop_support;
use common::*;
use interop_support::{check, need_busybox, need_registry, need_skopeo, skopeo, tool};

fn link(dir: &std::path::Path, rel: &str, digest: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, digest).unwrap();
}

#[test]
fn pull_selects_the_platform_from_an_index() {
    let store = TestStore::local();
    let dir = store.dir.as_ref().unwrap().path().to_path_buf();
    let amd = store.push_json(&["mp/app:amd64"], Some(&fixture("docker-legacy.tar")));
    let arm = store.push_json(
        &[
            "-i",
            fixture("docker25-tiny.tar").to_str().unwrap(),
            "mp/app:arm64",
        ],
        None,
    );
    let desc = |s: &serde_json::Value, arch: &str| {
        let d = s["images"][0]["manifest_digest"].as_str().unwrap();
        let hex = d.trim_start_matches("sha256:");
        let size = std::fs::metadata(dir.join(format!(
            "docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        )))
        .unwrap()
        .len();
        serde_json::json!({"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "digest": d, "size": size,
                           "platform": {"os": "linux", "architecture": arch}})
    };
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [desc(&arm, "arm64"), desc(&amd, "amd64")],
    }))
    .unwrap();
    let hex = sha256_hex(&index);
    let d = format!("sha256:{hex}");
    let blob = dir.join(format!(
        "docker/registry/v2/blobs/sha256/{}/{hex}/data",
        &hex[..2]
    ));
    std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
    std::fs::write(blob, &index).unwrap();
    link(
        &dir,
        &format!("docker/registry/v2/repositories/mp/app/_manifests/revisions/sha256/{hex}/link"),
        &d,
    );
    link(
        &dir,
        "docker/registry/v2/repositories/mp/app/_manifests/tags/multi/current/link",
        &d,
    );

    let want = |s: &serde_json::Value| {
        s["images"][0]["config_digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let arm_out = summarize_archive(&store.pull(&["mp/app:multi", "--platform", "linux/arm64"]));
    assert_eq!(arm_out[0].config_digest, want(&arm));
    let amd_out = summarize_archive(&store.pull(&["mp/app:multi", "--platform", "linux/amd64"]));
    assert_eq!(amd_out[0].config_digest, want(&amd));
    if std::env::consts::ARCH == "x86_64" {
        assert_eq!(
            summarize_archive(&store.pull(&["mp/app:multi"]))[0].config_digest,
            want(&amd)
        );
    }
    let err = store.fails(&["pull", "mp/app:multi", "--platform", "linux/s390x"], None);
    assert!(
        err.contains("no manifest for platform linux/s390x") && err.contains("linux/arm64"),
        "{err}"
    );
}

/// A `--platform` that does not match a single-platform image is an error on push (nothing
/// tagged) and on pull (nothing written), naming the image's platform.
#[test]
fn platform_mismatch_of_a_single_image_is_an_error() {
    for store in TestStore::all() {
        let fx = fixture("docker-legacy.tar");
        let err = store.fails(
            &[
                "push",
                "-i",
                fx.to_str().unwrap(),
                "--platform",
                "linux/arm64",
                "one/app:1",
            ],
            None,
        );
        assert!(
            err.contains("linux/amd64") && err.contains("not linux/arm64"),
            "[{}] {err}",
            store.kind
        );
        assert!(store.visible_tags().is_empty(), "[{}]", store.kind);
        // Without a reference too (the archive's own names).
        let err = store.fails(
            &[
                "push",
                "-i",
                fx.to_str().unwrap(),
                "--platform",
                "linux/arm64/v8",
            ],
            None,
        );
        assert!(err.contains("linux/amd64"), "[{}] {err}", store.kind);
        assert!(store.visible_tags().is_empty(), "[{}]", store.kind);

        store.push_json(
            &[
                "-i",
                fx.to_str().unwrap(),
                "--platform",
                "linux/amd64",
                "one/app:1",
            ],
            None,
        );
        let out = store.run(
            &["pull", "-q", "one/app:1", "--platform", "linux/arm64"],
            None,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "[{}]", store.kind);
        assert!(
            err.contains("image one/app:1 is for platform linux/amd64, not linux/arm64"),
            "[{}] {err}",
            store.kind
        );
        assert!(
            out.stdout.is_empty(),
            "[{}] pull wrote an archive",
            store.kind
        );
        let ok = summarize_archive(&store.pull(&["one/app:1", "--platform", "linux/amd64"]));
        assert_eq!(ok[0].repo_tags, vec!["one/app:1"]);
    }
}

/// An OCI archive whose image is a one-platform index (linux/amd64): pushing another
/// platform lists the ones present; the present one pushes.
#[test]
fn push_from_an_index_with_an_absent_platform_lists_the_present_ones() {
    let files = tar_files(&std::fs::read(fixture("oci-archive.tar")).unwrap());
    let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
    let mut child = index["manifests"][0].clone();
    child["platform"] = serde_json::json!({"os": "linux", "architecture": "amd64"});
    child.as_object_mut().unwrap().remove("annotations");
    let nested = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [child],
    }))
    .unwrap();
    let hex = sha256_hex(&nested);
    let top = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json",
                       "digest": format!("sha256:{hex}"), "size": nested.len(),
                       "annotations": {"org.opencontainers.image.ref.name": "1"}}],
    }))
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("index.tar");
    let mut ar = tar::Builder::new(std::fs::File::create(&path).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        ar.append_data(&mut h, name, data).unwrap();
    };
    for (name, data) in &files {
        if name != "index.json" {
            add(name, data);
        }
    }
    add(&format!("blobs/sha256/{hex}"), &nested);
    add("index.json", &top);
    ar.into_inner().unwrap();

    let store = TestStore::local();
    let err = store.fails(
        &[
            "push",
            "-i",
            path.to_str().unwrap(),
            "--platform",
            "linux/arm64",
            "idx/app:1",
        ],
        None,
    );
    assert!(
        err.contains("no manifest for platform linux/arm64") && err.contains("linux/amd64"),
        "{err}"
    );
    assert!(store.visible_tags().is_empty());
    store.push_json(
        &[
            "-i",
            path.to_str().unwrap(),
            "--platform",
            "linux/amd64",
            "idx/app:1",
        ],
        None,
    );
    assert_eq!(store.visible_tags(), vec!["idx/app:1"]);
}

/// `push --all-platforms` stores a multi-platform OCI archive whole: both images, the
/// index (byte for byte: gzip layers keep every manifest) under the tag, written last.
/// registry:2 on the store serves the tag as an OCI index (skopeo and curl with the OCI
/// Accept header), and `pull --platform` picks each image from it. Without the flag one
/// platform is pushed, as before; with `--platform` too it is an error.
#[test]
fn push_all_platforms_stores_the_index_whole() {
    if !need_busybox() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("multi.tar");
    let (index, images) = multi_platform_archive(&archive, "1", "push-all");
    let fx = archive.to_str().unwrap();
    let mut stores = TestStore::all();
    if !require("an S3 server for registry:2's S3 driver", stores.len() > 1) {
        return;
    }
    for store in &stores {
        let err = store.fails(
            &[
                "push",
                "-i",
                fx,
                "--all-platforms",
                "--platform",
                "linux/amd64",
                "mp/all:1",
            ],
            None,
        );
        assert!(
            err.contains("--all-platforms") && err.contains("--platform"),
            "{err}"
        );
        assert!(store.visible_tags().is_empty(), "[{}]", store.kind);

        let out = store.push_json(&["-i", fx, "--all-platforms", "mp/all:1"], None);
        let img = &out["images"][0];
        assert_eq!(
            img["manifest_digest"],
            index.as_str(),
            "[{}] {out}",
            store.kind
        );
        let children = img["platforms"].as_array().unwrap();
        assert_eq!(children.len(), 2, "[{}] {out}", store.kind);
        for (c, want) in children.iter().zip(&images) {
            assert_eq!(c["manifest_digest"], want.manifest_digest.as_str());
            assert_eq!(c["platform"], format!("linux/{}", want.arch));
        }
        let keys = store.keys();
        for d in images
            .iter()
            .flat_map(|i| [&i.manifest_digest, &i.config_digest])
            .chain([&index])
        {
            let hex = d.trim_start_matches("sha256:");
            assert!(
                keys.iter()
                    .any(|k| k.ends_with(&format!("blobs/sha256/{}/{hex}/data", &hex[..2]))),
                "[{}] blob {d} missing",
                store.kind
            );
        }
        for i in &images {
            let hex = i.manifest_digest.trim_start_matches("sha256:");
            assert!(
                keys.iter().any(|k| k.ends_with(&format!("mp/all/_manifests/revisions/sha256/{hex}/link"))),
                "[{}] no revision link for {}",
                store.kind,
                i.arch
            );
        }
        for i in &images {
            let got = summarize_archive(&store.pull(&[
                "mp/all:1",
                "--platform",
                &format!("linux/{}", i.arch),
            ]));
            assert_eq!(
                got[0].config_digest, i.config_digest,
                "[{}] {}",
                store.kind, i.arch
            );
        }
        // Without the flag: one platform, as before.
        let one = store.push_json(&["-i", fx, "--platform", "linux/arm64", "mp/one:1"], None);
        assert_eq!(
            one["images"][0]["manifest_digest"],
            images[1].manifest_digest.as_str()
        );
        assert!(one["images"][0].get("platforms").is_none());
    }

    if !need_registry() || !need_skopeo() {
        return;
    }
    // registry:2 serves the tag as an index, on the directory store and on S3.
    let s3 = stores.pop().unwrap();
    let dir = &stores[0];
    for reg in [
        interop_support::Registry::fs(dir.dir.as_ref().unwrap().path()),
        interop_support::Registry::s3(&s3),
    ] {
        assert_eq!(
            interop_support::skopeo_raw_manifest_digest(&reg.docker_ref("mp/all:1")),
            index
        );
        let out = check(tool("curl").args([
            "-sS",
            "-f",
            "-D",
            "/dev/stderr",
            "-H",
            "Accept: application/vnd.oci.image.index.v1+json",
            &format!("http://{}/v2/mp/all/manifests/1", reg.addr),
        ]));
        let headers = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(
            headers.contains("content-type: application/vnd.oci.image.index.v1+json"),
            "{headers}"
        );
        assert!(
            headers.contains(&format!("docker-content-digest: {index}")),
            "{headers}"
        );
        let served: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(served["manifests"].as_array().unwrap().len(), 2);
        // skopeo picks the arm64 child through the registry.
        let mut c = skopeo();
        c.args([
            "inspect",
            "--tls-verify=false",
            "--override-arch",
            "arm64",
            "--config",
            "--raw",
        ])
        .arg(reg.docker_ref("mp/all:1"));
        let cfg = check(&mut c).stdout;
        assert_eq!(
            format!("sha256:{}", sha256_hex(&cfg)),
            images[1].config_digest
        );
    }
}
