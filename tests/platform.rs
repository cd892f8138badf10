//! Multi-platform images: pull picks the manifest for `--platform` (default: this host's).

mod common;
use common::*;

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
