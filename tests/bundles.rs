//! Bundles (issue 13): `pull A B C` writes one archive holding every image, each blob
//! once, that docker, podman and skopeo load and that `push` turns back into the same
//! tags; `pull --env ENV` bundles every app's environment; delta archives (`--exclude`,
//! `--exclude-from`) leave out the layers the far side holds, and `push` takes one only
//! into a store that holds them, else fails with the store unchanged; `--loadable`
//! takes those layers from the cache instead; `--all-platforms` keeps a stored index
//! whole in a bundle.
//!
//! Docker images are built `FROM scratch` with busybox-static (see tests/interop.rs),
//! with names containing `run_id()` and removed by a `DockerImages` guard.

mod common;
mod interop_support;

use common::*;
use interop_support::*;
use std::collections::HashMap;
use std::path::Path;

fn name(what: &str) -> String {
    format!("bx{}/{what}", run_id())
}

fn peers_for_docker() -> bool {
    need_docker() && need_busybox()
}

/// Every file entry of a tar, in order, with its size: a blob written twice shows twice.
fn tar_entries(data: &[u8]) -> Vec<(String, u64)> {
    let mut ar = tar::Archive::new(data);
    ar.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.path().unwrap().to_string_lossy().into_owned(),
                e.header().size().unwrap(),
            )
        })
        .filter(|(p, _)| !p.ends_with('/'))
        .collect()
}

/// Layer digest → size of an image as `push --json` reports it.
fn layer_sizes(img: &serde_json::Value) -> HashMap<String, u64> {
    img["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["digest"].as_str().unwrap().to_string(),
                l["size"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The pushed image named `r` in a `push --json` summary.
fn pushed<'a>(summary: &'a serde_json::Value, r: &str) -> &'a serde_json::Value {
    summary["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["reference"] == r)
        .unwrap_or_else(|| panic!("{r} not pushed: {summary}"))
}

fn pull_json(store: &TestStore, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["pull", "-q", "--json"];
    a.extend_from_slice(args);
    let out = store.ok(&a, None);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `docker load -i FILE`: the names it reports loading.
fn docker_load(file: &Path) -> Vec<String> {
    let out = check(tool("docker").arg("load").arg("-i").arg(file));
    stdout(&out)
        .lines()
        .filter_map(|l| l.strip_prefix("Loaded image: "))
        .map(String::from)
        .collect()
}

// ====================================================================== bundles

#[test]
fn bundle_of_three_images_sharing_a_base_loads_everywhere_and_pushes_back() {
    if !peers_for_docker() || !need_podman() || !need_skopeo() {
        return;
    }
    let images = DockerImages::new();
    let ctx = BuildContext::new();
    ctx.file(
        "rootfs/id.txt",
        format!("{} base\n", name("base")).as_bytes(),
    );
    let base = name("base:1");
    let base_info = ctx.build(
        &images,
        &base,
        "FROM scratch\nCOPY rootfs/ /\nCMD [\"/bin/busybox\", \"true\"]\n",
    );
    // Three images on the same base, with distinct tags so that each has its own
    // `org.opencontainers.image.ref.name` in index.json (skopeo picks by it).
    let refs = [name("web:1"), name("worker:2"), name("cron:3")];
    let mut infos = Vec::new();
    for r in &refs {
        ctx.file("msg.txt", format!("this is {r}\n").as_bytes());
        let info = ctx.build(
            &images,
            r,
            &format!("FROM {base}\nCOPY msg.txt /msg.txt\nCMD [\"/bin/busybox\", \"cat\", \"/msg.txt\"]\n"),
        );
        assert_eq!(info.layers[0], base_info.layers[0], "{r} is on the base");
        infos.push(info);
    }
    let store = TestStore::local();
    let r: Vec<&str> = refs.iter().map(String::as_str).collect();
    let first = docker_save_push(&store, &r, &[]);

    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle.tar");
    let b = bundle.to_str().unwrap();
    let report = pull_json(&store, &[r[0], r[1], r[2], "-o", b]);
    // Several references: an object with one entry per image, and the totals.
    let listed: Vec<&str> = report["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["reference"].as_str().unwrap())
        .collect();
    assert_eq!(listed, r, "{report}");
    for i in report["images"].as_array().unwrap() {
        let p = pushed(&first, i["reference"].as_str().unwrap());
        assert_eq!(i["manifest_digest"], p["manifest_digest"]);
        assert_eq!(i["layers"], 2);
    }
    assert_eq!(
        report["layers_written"], 4,
        "the base once, three own layers"
    );
    assert!(report.get("layers_omitted").is_none(), "{report}");

    let data = std::fs::read(&bundle).unwrap();
    let entries = tar_entries(&data);
    let mut names: Vec<&str> = entries.iter().map(|(p, _)| p.as_str()).collect();
    let n = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), n, "an entry written twice: {names:?}");
    let base_blob = pushed(&first, r[0])["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    for img in r.iter().map(|x| pushed(&first, x)) {
        assert_eq!(
            img["layers"][0]["digest"],
            base_blob.as_str(),
            "shared base"
        );
        for d in pushed_blobs(img) {
            let path = format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
            assert!(names.contains(&path.as_str()), "{path} missing");
        }
    }
    // manifest.json as `docker save A B C` writes it: one entry per image, its tags.
    let s = summarize_archive(&data);
    assert_eq!(s.len(), 3);
    for (x, info) in r.iter().zip(&infos) {
        let e = s
            .iter()
            .find(|e| e.repo_tags == vec![x.to_string()])
            .unwrap();
        assert_eq!(e.config_digest, info.id);
        assert_eq!(e.layer_diff_ids, info.layers);
    }

    // docker load reads every image from the one file, and each runs.
    for x in r.iter().chain([base.as_str()].iter()) {
        docker_rmi(x);
    }
    let mut loaded = docker_load(&bundle);
    loaded.sort();
    let mut want: Vec<String> = r.iter().map(|x| x.to_string()).collect();
    want.sort();
    assert_eq!(loaded, want);
    for (x, info) in r.iter().zip(&infos) {
        assert_eq!(docker_inspect(x).as_ref(), Some(info));
        assert_eq!(docker_run(x, &[]), format!("this is {x}\n"));
    }

    // podman loads all three; skopeo reads each by name (docker-archive) and by ref
    // name from the OCI form.
    let podman = Podman::new();
    let mut loaded = podman.load(&bundle);
    loaded.sort();
    assert_eq!(loaded.len(), 3, "{loaded:?}");
    for (x, info) in r.iter().zip(&infos) {
        assert_eq!(&podman.inspect(x), info);
        let ins = skopeo_inspect(&format!("docker-archive:{b}:{x}"));
        assert_eq!(ins["Layers"].as_array().unwrap().len(), 2);
        assert_eq!(
            skopeo_config_digest(&format!("docker-archive:{b}:{x}")),
            info.id
        );
    }
    let oci = tmp.path().join("bundle-oci.tar");
    store.ok(
        &[
            "pull",
            "-q",
            r[0],
            r[1],
            r[2],
            "--format",
            "oci",
            "-o",
            oci.to_str().unwrap(),
        ],
        None,
    );
    for (x, info) in r.iter().zip(&infos) {
        let tag = x.rsplit(':').next().unwrap();
        let src = format!("oci-archive:{}:{tag}", oci.display());
        assert_eq!(skopeo_config_digest(&src), info.id, "{src}");
    }

    // push of the bundle into an empty store: the three tags, the same manifests.
    let far = TestStore::s3("moto").unwrap_or_else(TestStore::local);
    let back = far.push_json(&["-i", b], None);
    assert_eq!(back["images"].as_array().unwrap().len(), 3, "{back}");
    for x in &r {
        assert_eq!(
            pushed(&back, x)["manifest_digest"],
            pushed(&first, x)["manifest_digest"],
            "[{}] {x}",
            far.kind
        );
    }
    let mut tags = far.visible_tags();
    tags.sort();
    let mut want: Vec<String> = r.iter().map(|x| x.to_string()).collect();
    want.sort();
    assert_eq!(tags, want);
}

#[test]
fn pull_env_bundles_every_app_with_that_environment() {
    let store = TestStore::local();
    store.ok(&["push", "-q"], Some(&fixture("docker25.tar")));
    store.ok(&["push", "-q"], Some(&fixture("docker-multi.tar")));
    let (hello, tiny) = ("s3dock-fixture/hello", "s3dock-fixture/tiny");
    store.ok(
        &["promote", "-q", &format!("{hello}:1"), "production"],
        None,
    );
    store.ok(&["promote", "-q", &format!("{tiny}:1"), "production"], None);
    store.ok(
        &["promote", "-q", &format!("{tiny}:latest-test"), "staging"],
        None,
    );

    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("production.tar");
    let v = pull_json(&store, &["--env", "production", "-o", f.to_str().unwrap()]);
    let got: Vec<&str> = v["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["reference"].as_str().unwrap())
        .collect();
    assert_eq!(got.len(), 2, "{v}");
    assert!(got[0].starts_with(&format!("{hello}:1@sha256:")), "{v}");
    assert!(got[1].starts_with(&format!("{tiny}:1@sha256:")), "{v}");
    let s = summarize_archive(&std::fs::read(&f).unwrap());
    let mut tags: Vec<String> = s.iter().flat_map(|e| e.repo_tags.clone()).collect();
    tags.sort();
    assert_eq!(tags, vec![format!("{hello}:1"), format!("{tiny}:1")]);
    // The archive pushes back into an empty store with both tags.
    let far = TestStore::local();
    far.push_json(&["-i", f.to_str().unwrap()], None);
    assert_eq!(
        far.visible_tags(),
        vec![format!("{hello}:1"), format!("{tiny}:1")]
    );

    // One app named: the one-image form of `pull APP ENV`, JSON object included.
    let one = pull_json(
        &store,
        &["--env", "staging", tiny, "-o", f.to_str().unwrap()],
    );
    assert!(one["reference"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{tiny}:latest-test@")));
    let old = pull_json(&store, &[tiny, "staging", "-o", f.to_str().unwrap()]);
    assert_eq!(old["manifest_digest"], one["manifest_digest"]);
    // No app has it: one line saying so, and no file.
    let g = tmp.path().join("none.tar");
    let err = store.fails(&["pull", "--env", "qa", "-o", g.to_str().unwrap()], None);
    assert!(err.contains("no app has an environment qa"), "{err}");
    assert!(!g.exists());
    let err = store.fails(
        &[
            "pull",
            &format!("{tiny}:1"),
            &format!("{hello}:1"),
            "--tag",
            "x:1",
        ],
        None,
    );
    assert!(err.contains("--tag renames the one image"), "{err}");
}

// ====================================================================== delta bundles

/// v1 = base (busybox) + a 1 MiB library layer; v2 = v1 + a new 256 KiB layer.
struct TwoVersions {
    v1: String,
    v2: String,
    v2_info: ImageInfo,
    near: TestStore,
    /// `push --json` of v1 and v2 into `near`.
    pushed: serde_json::Value,
}

fn two_versions(images: &DockerImages, app: &str) -> TwoVersions {
    let ctx = BuildContext::new();
    ctx.file("rootfs/id.txt", format!("{app}\n").as_bytes());
    ctx.random_file("lib.bin", 1 << 20);
    let v1 = format!("{app}:v1");
    ctx.build(
        images,
        &v1,
        "FROM scratch\nCOPY rootfs/ /\nCOPY lib.bin /lib.bin\nCMD [\"/bin/busybox\", \"echo\", \"v1\"]\n",
    );
    ctx.random_file("new.bin", 256 << 10);
    let v2 = format!("{app}:v2");
    let v2_info = ctx.build(
        images,
        &v2,
        &format!("FROM {v1}\nCOPY new.bin /new.bin\nCMD [\"/bin/busybox\", \"sh\", \"-c\", \"test -s /new.bin && echo v2\"]\n"),
    );
    assert_eq!(v2_info.layers.len(), 3);
    let near = TestStore::local();
    let pushed = docker_save_push(&near, &[&v1, &v2], &[]);
    TwoVersions {
        v1,
        v2,
        v2_info,
        near,
        pushed,
    }
}

#[test]
fn delta_bundle_is_smaller_pushes_only_where_the_base_is_and_loads_after() {
    if !peers_for_docker() {
        return;
    }
    let images = DockerImages::new();
    let t = two_versions(&images, &name("app"));
    let (v1, v2) = (t.v1.as_str(), t.v2.as_str());
    let tmp = tempfile::tempdir().unwrap();
    let full = tmp.path().join("full.tar");
    let delta = tmp.path().join("delta.tar");
    t.near
        .ok(&["pull", "-q", v2, "-o", full.to_str().unwrap()], None);
    let out = t.near.ok(
        &[
            "pull",
            "--json",
            v2,
            "--exclude",
            v1,
            "-o",
            delta.to_str().unwrap(),
        ],
        None,
    );
    let err = stderr(&out);
    let warnings: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("s3dock: warning:"))
        .collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(warnings[0].contains("docker load cannot read it"), "{err}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["layers_omitted"], 2, "{report}");

    // Smaller by at least the layers v1 holds.
    let excluded: u64 = layer_sizes(pushed(&t.pushed, v1)).values().sum();
    assert_eq!(report["bytes_omitted"], excluded);
    let (full_len, delta_len) = (
        std::fs::metadata(&full).unwrap().len(),
        std::fs::metadata(&delta).unwrap().len(),
    );
    assert!(
        full_len >= delta_len + excluded,
        "full {full_len}, delta {delta_len}, excluded layers {excluded}"
    );
    eprintln!(
        "delta bundle: full {full_len} bytes, delta {delta_len} bytes, saved {} bytes",
        full_len - delta_len
    );
    let entries = tar_entries(&std::fs::read(&delta).unwrap());
    for (d, _) in layer_sizes(pushed(&t.pushed, v1)) {
        let p = format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
        assert!(!entries.iter().any(|(e, _)| *e == p), "{p} in the delta");
    }
    let names: Vec<&str> = entries.iter().map(|(p, _)| p.as_str()).collect();
    assert!(
        !names.contains(&"manifest.json") && !names.contains(&"oci-layout"),
        "{names:?}"
    );

    // docker load refuses it and loads nothing.
    docker_rmi(v2);
    let o = run(tool("docker").arg("load").arg("-i").arg(&delta));
    assert!(
        !o.status.success(),
        "docker load took a delta: {}",
        stdout(&o)
    );
    // Before Docker 29 its error quotes the sign directory; 29 says manifest.json is missing.
    let why = stderr(&o);
    assert!(
        why.contains("S3DOCK-DELTA-ARCHIVE") || why.contains("manifest.json"),
        "{why}"
    );
    assert!(docker_inspect(v2).is_none());

    // Into an empty store: one line naming the blobs and v1; nothing written.
    let far = TestStore::s3("moto").unwrap_or_else(TestStore::local);
    let err = far.fails(&["push", "-i", delta.to_str().unwrap()], None);
    assert!(
        err.contains("lacks 2 blob(s)") && err.contains(&format!("push {v1} there first")),
        "{err}"
    );
    let v1_layers: Vec<String> = layer_sizes(pushed(&t.pushed, v1)).into_keys().collect();
    assert!(v1_layers.iter().any(|d| err.contains(&d[..19])), "{err}");
    assert_eq!(
        far.keys(),
        Vec::<String>::new(),
        "[{}] the failed push wrote",
        far.kind
    );

    // Into a store that holds v1: v2 with the same manifest, pulled verified, loads, runs.
    let v1_tar = tmp.path().join("v1.tar");
    t.near
        .ok(&["pull", "-q", v1, "-o", v1_tar.to_str().unwrap()], None);
    far.push_json(&["-i", v1_tar.to_str().unwrap()], None);
    let back = far.push_json(&["-i", delta.to_str().unwrap()], None);
    assert_eq!(
        pushed(&back, v2)["manifest_digest"],
        pushed(&t.pushed, v2)["manifest_digest"]
    );
    assert_eq!(far.visible_tags().len(), 2);
    pull_docker_load_ok(&far, &[v2], v2);
    assert_eq!(docker_inspect(v2).as_ref(), Some(&t.v2_info));
    assert_eq!(docker_run(v2, &[]), "v2\n");

    // --exclude-from: the same layers by digest, comments allowed.
    let list = tmp.path().join("have.txt");
    let mut text = format!("# layers of {v1}\n\n");
    for d in &v1_layers {
        text.push_str(&format!("{d}  # a v1 layer\n"));
    }
    std::fs::write(&list, text).unwrap();
    let listed = tmp.path().join("listed.tar");
    let r = pull_json(
        &t.near,
        &[
            v2,
            "--exclude-from",
            list.to_str().unwrap(),
            "-o",
            listed.to_str().unwrap(),
        ],
    );
    assert_eq!(r["layers_omitted"], 2);
    let mut a: Vec<String> = tar_entries(&std::fs::read(&listed).unwrap())
        .into_iter()
        .map(|e| e.0)
        .collect();
    let mut b: Vec<String> = entries.into_iter().map(|e| e.0).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "the same files as with --exclude");
    let empty = TestStore::local();
    let err = empty.fails(&["push", "-i", listed.to_str().unwrap()], None);
    assert!(
        err.contains("the --exclude-from list was made from"),
        "{err}"
    );
    assert_eq!(empty.keys(), Vec::<String>::new());
    far.push_json(&["-i", listed.to_str().unwrap()], None);
    std::fs::write(&list, "sha256:not-a-digest\n").unwrap();
    let err = t.near.fails(
        &[
            "pull",
            v2,
            "--exclude-from",
            list.to_str().unwrap(),
            "-o",
            listed.to_str().unwrap(),
        ],
        None,
    );
    assert!(err.contains("line 1: expected a digest"), "{err}");
}

#[test]
fn loadable_delta_takes_the_excluded_layers_from_the_cache_verified() {
    if !peers_for_docker() {
        return;
    }
    let images = DockerImages::new();
    let t = two_versions(&images, &name("cached"));
    let (v1, v2) = (t.v1.as_str(), t.v2.as_str());
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let c = cache.to_str().unwrap();
    let out = tmp.path().join("v2.tar");
    let o = out.to_str().unwrap();

    // An empty cache lacks v1's layers: one line naming a blob of v1, no file.
    let err = t.near.fails(
        &[
            "pull",
            v2,
            "--exclude",
            v1,
            "--loadable",
            "--cache",
            c,
            "-o",
            o,
        ],
        None,
    );
    assert!(
        err.contains("is not in the cache") && err.contains(v1),
        "{err}"
    );
    assert!(!out.exists());
    let err = t
        .near
        .fails(&["pull", v2, "--exclude", v1, "--loadable", "-o", o], None);
    assert!(err.contains("--cache"), "{err}");

    // Filled by pulling v1 with the cache: a full archive docker loads.
    t.near
        .ok(&["pull", "-q", v1, "--cache", c, "-o", "/dev/null"], None);
    let r = pull_json(
        &t.near,
        &[v2, "--exclude", v1, "--loadable", "--cache", c, "-o", o],
    );
    assert!(r.get("layers_omitted").is_none(), "{r}");
    check_docker_archive(&std::fs::read(&out).unwrap(), v2, &Want::from(&t.v2_info));
    docker_rmi(v2);
    docker_rmi(v1);
    assert_eq!(docker_load(&out), vec![v2.to_string()]);
    assert_eq!(docker_run(v2, &[]), "v2\n");

    // A cached blob that does not match its digest fails the pull: never written as good.
    let v1_layer = pushed(&t.pushed, v1)["layers"][1]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let cached = cache
        .join("blobs/sha256")
        .join(v1_layer.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&cached).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&cached, bytes).unwrap();
    let bad = tmp.path().join("bad.tar");
    let err = t.near.fails(
        &[
            "pull",
            v2,
            "--exclude",
            v1,
            "--loadable",
            "--cache",
            c,
            "-o",
            bad.to_str().unwrap(),
        ],
        None,
    );
    assert!(err.contains("corrupt in the cache"), "{err}");
    assert!(!bad.exists());
}

// ====================================================================== --all-platforms

#[test]
fn pull_all_platforms_keeps_the_index_whole_in_a_bundle() {
    if !need_busybox() || !need_skopeo() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let multi = tmp.path().join("multi.tar");
    let (index, images) = multi_platform_archive(&multi, "1", &format!("bundle {}", run_id()));
    let store = TestStore::local();
    // Tags differ, so skopeo can pick each by its ref name.
    let (m, hello) = (name("multi:all"), "s3dock-fixture/hello:1");
    store.push_json(
        &["-i", multi.to_str().unwrap(), "--all-platforms", &m],
        None,
    );
    store.ok(&["push", "-q"], Some(&fixture("docker25.tar")));

    let err = store.fails(
        &["pull", &m, "--all-platforms", "--platform", "linux/arm64"],
        None,
    );
    assert!(err.contains("drop --platform"), "{err}");

    // Both forms: the index (by its stored digest) with every platform's blobs, once.
    for format in ["oci", "docker"] {
        let f = tmp.path().join(format!("all-{format}.tar"));
        let v = pull_json(
            &store,
            &[
                &m,
                hello,
                "--all-platforms",
                "--format",
                format,
                "-o",
                f.to_str().unwrap(),
            ],
        );
        assert_eq!(v["images"][0]["manifest_digest"], index.as_str(), "{v}");
        assert_eq!(v["images"][0]["platforms"], 2, "{v}");
        assert!(v["images"][1].get("platforms").is_none(), "{v}");
        let data = std::fs::read(&f).unwrap();
        let entries = tar_entries(&data);
        let files = tar_files(&data);
        let mut names: Vec<&str> = entries.iter().map(|(p, _)| p.as_str()).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n, "an entry written twice: {names:?}");
        let idx: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
        let top = &idx["manifests"][0];
        assert_eq!(top["digest"], index.as_str());
        assert_eq!(top["mediaType"], "application/vnd.oci.image.index.v1+json");
        let stored: serde_json::Value = serde_json::from_slice(
            &files[&format!("blobs/sha256/{}", index.trim_start_matches("sha256:"))],
        )
        .unwrap();
        for desc in stored["manifests"].as_array().unwrap() {
            let md = desc["digest"].as_str().unwrap();
            let mf: serde_json::Value = serde_json::from_slice(
                &files[&format!("blobs/sha256/{}", md.trim_start_matches("sha256:"))],
            )
            .unwrap();
            for d in std::iter::once(&mf["config"]).chain(mf["layers"].as_array().unwrap()) {
                let hex = d["digest"].as_str().unwrap().trim_start_matches("sha256:");
                let blob = &files[&format!("blobs/sha256/{hex}")];
                assert_eq!(sha256_hex(blob), hex);
            }
        }
        let src = format!("oci-archive:{}:all", f.display());
        for i in &images {
            let mut c = skopeo();
            c.args([
                "inspect",
                "--override-arch",
                i.arch,
                "--config",
                "--raw",
                &src,
            ]);
            let cfg = check(&mut c).stdout;
            assert_eq!(
                format!("sha256:{}", sha256_hex(&cfg)),
                i.config_digest,
                "{format} {}",
                i.arch
            );
        }
        if format == "docker" {
            // manifest.json names this host's image, for loaders that take one platform.
            let s = summarize_archive(&data);
            let host = images
                .iter()
                .find(|i| std::env::consts::ARCH == "x86_64" && i.arch == "amd64");
            if let Some(h) = host {
                let e = s.iter().find(|e| e.repo_tags == vec![m.clone()]).unwrap();
                assert_eq!(e.config_digest, h.config_digest);
            }
        }
        // skopeo copies the whole index out of the archive.
        let dir = tmp.path().join(format!("copy-{format}"));
        skopeo_copy(
            &format!("oci-archive:{}:all", f.display()),
            &format!("oci:{}:x", dir.display()),
        );
        // push --all-platforms of the bundle recreates the index under the tag, and the image.
        let far = TestStore::local();
        let back = far.push_json(&["-i", f.to_str().unwrap(), "--all-platforms"], None);
        assert_eq!(
            pushed(&back, &m)["manifest_digest"],
            index.as_str(),
            "{format}: {back}"
        );
        assert!(
            back["images"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["reference"] == hello),
            "{back}"
        );
    }

    // docker load takes manifest.json's image (this host's) from the docker form, and it runs.
    if std::env::consts::ARCH == "x86_64" && peers_for_docker() {
        let images_guard = DockerImages::new();
        images_guard.add(&m);
        let f = tmp.path().join("one.tar");
        store.ok(
            &[
                "pull",
                "-q",
                &m,
                "--all-platforms",
                "-o",
                f.to_str().unwrap(),
            ],
            None,
        );
        assert_eq!(docker_load(&f), vec![m.clone()]);
        assert_eq!(docker_inspect(&m).unwrap().id, images[0].config_digest);
        assert_eq!(docker_run(&m, &[]), format!("amd64 bundle {}\n", run_id()));
    }

    // A delta of the bundle against the index leaves out every platform's layers.
    let d = tmp.path().join("delta.tar");
    let v = pull_json(
        &store,
        &[
            &m,
            hello,
            "--all-platforms",
            "--exclude",
            &m,
            "-o",
            d.to_str().unwrap(),
        ],
    );
    assert_eq!(v["layers_omitted"], 2, "{v}");
}
