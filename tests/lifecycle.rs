//! Store lifecycle (issue 12) end to end with the real binary: `rm`, `prune` (the
//! retention table), `gc` on the directory store, moto and s3s-fs (then registry:2 serves
//! every remaining tag and its own garbage-collect finds nothing more), pushes racing gc,
//! gc killed at many points, and `verify` finding each injected fault.

mod common;
mod interop_support;

use common::iam;
use common::*;
use interop_support::{need_busybox, need_registry, need_skopeo, skopeo_inspect, Registry};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;

// ------------------------------------------------------------------ helpers

/// A generated legacy archive tagged `repo_tag` with layers of (seed, size).
fn archive(dir: &Path, repo_tag: &str, layers: &[(u64, u64)]) -> PathBuf {
    let p = dir.join(format!("{}.tar", repo_tag.replace(['/', ':'], "_")));
    let layers: Vec<GenLayer> = layers
        .iter()
        .map(|&(seed, size)| GenLayer { seed, size })
        .collect();
    generate_archive_file(&p, &layers, repo_tag);
    p
}

/// Pushes and returns the pushed image's JSON (reference, digests, layers).
fn push(store: &TestStore, file: &Path, r: &str) -> Value {
    store.push_json(&["-i", file.to_str().unwrap(), r], None)["images"][0].clone()
}

fn digest(img: &Value) -> String {
    img["manifest_digest"].as_str().unwrap().to_string()
}

fn hex(d: &str) -> &str {
    d.strip_prefix("sha256:").unwrap()
}

fn blob_key(d: &str) -> String {
    let h = hex(d);
    format!("docker/registry/v2/blobs/sha256/{}/{h}/data", &h[..2])
}

/// The `_layers` link of blob `d` in `repo`.
fn layer_link_key(repo: &str, d: &str) -> String {
    format!(
        "docker/registry/v2/repositories/{repo}/_layers/sha256/{}/link",
        hex(d)
    )
}

/// The blobs of a pushed image that have `_layers` links: config and layers.
fn linked_blobs(img: &Value) -> Vec<String> {
    pushed_blobs(img)
        .into_iter()
        .filter(|d| img["manifest_digest"] != d.as_str())
        .collect()
}

fn index_key(layer: &Value) -> String {
    format!(
        "s3dock/index/diffid/{}/{}.json",
        hex(layer["diff_id"].as_str().unwrap()),
        layer["compression"].as_str().unwrap()
    )
}

/// Every `_layers` link of `img` in `app` is still in `keys` (the store after a gc).
fn assert_links_kept(store: &TestStore, keys: &BTreeSet<String>, app: &str, img: &Value) {
    for d in linked_blobs(img) {
        assert!(
            keys.contains(&layer_link_key(app, &d)),
            "[{}] gc deleted the _layers link {app}@{d} of {}",
            store.kind,
            img["reference"]
        );
    }
}

fn keyset(store: &TestStore) -> BTreeSet<String> {
    store.keys().into_iter().collect()
}

fn json(store: &TestStore, args: &[&str]) -> Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let out = store.ok(&a, None);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: bad JSON ({e}): {:?}", out.stdout))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

/// `verify` with `--json`: (exit code, report).
fn verify(store: &TestStore, extra: &[&str]) -> (i32, Value) {
    let mut a = vec!["--json", "verify"];
    a.extend_from_slice(extra);
    let o = store.run(&a, None);
    let code = o.status.code().unwrap();
    assert!(
        code == 0 || code == 1,
        "[{}] verify could not run ({code}): {}",
        store.kind,
        stderr(&o)
    );
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("verify --json ({e}): {}", stderr(&o)));
    (code, v)
}

fn assert_clean(store: &TestStore, extra: &[&str]) {
    let (code, v) = verify(store, extra);
    assert_eq!(
        (code, v["problems"].as_array().unwrap().len()),
        (0, 0),
        "[{}] verify {extra:?} is not clean: {v:#}",
        store.kind
    );
}

fn pull_ok(store: &TestStore, r: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("p.tar");
    store.ok(&["pull", "-q", r, "-o", f.to_str().unwrap()], None);
}

/// Untags `app:tag` and deletes its revision, so gc may collect what only it used.
fn remove_image(store: &TestStore, app: &str, tag: &str, img: &Value) {
    store.ok(&["-q", "rm", &format!("{app}:{tag}")], None);
    store.ok(&["-q", "rm", &format!("{app}@{}", digest(img))], None);
}

// ------------------------------------------------------------------ gc

/// gc on one store: only what nothing reaches goes, after the grace period; the dedup
/// index follows; registry:2 then serves every remaining tag and its own collector
/// finds nothing more to delete.
fn gc_on(store: TestStore, registry: Option<fn(&TestStore) -> Registry>) {
    let tmp = tempfile::tempdir().unwrap();
    let app = "lcgc/app";
    let base = (1, 8192);
    let keep = push(
        &store,
        &archive(tmp.path(), "k", &[base, (2, 4096)]),
        &format!("{app}:keep"),
    );
    let drop = push(
        &store,
        &archive(tmp.path(), "d", &[base, (3, 6144)]),
        &format!("{app}:drop"),
    );
    let old = push(
        &store,
        &archive(tmp.path(), "o", &[(4, 4096)]),
        &format!("{app}:moved"),
    );
    let moved = push(
        &store,
        &archive(tmp.path(), "m", &[(5, 4096)]),
        &format!("{app}:moved"),
    );
    assert_eq!(moved["previous"], old["manifest_digest"]);
    remove_image(&store, app, "drop", &drop);
    // The kept image also in a second repository, then removed there: its `_layers`
    // links in that repository go, its blobs stay (the first repository uses them).
    let other = "lcgc/other";
    let copy = push(
        &store,
        &archive(tmp.path(), "k", &[base, (2, 4096)]),
        &format!("{other}:x"),
    );
    assert_eq!(digest(&copy), digest(&keep));
    remove_image(&store, other, "x", &copy);

    let before = keyset(&store);
    let dry = json(&store, &["gc", "--grace", "0s", "--dry-run"]);
    assert_eq!(
        keyset(&store),
        before,
        "[{}] gc --dry-run changed the store",
        store.kind
    );
    let gone: BTreeSet<String> = pushed_blobs(&drop)
        .into_iter()
        .filter(|d| !pushed_blobs(&keep).contains(d))
        .collect();
    assert_eq!(
        strings(&dry["blobs"]),
        gone,
        "[{}] dry run: {dry:#}",
        store.kind
    );
    // `_layers` links nothing needs: the dropped image's own blobs in `app`, and every
    // blob of the image removed from `other`; each was there before gc.
    let links_gone: BTreeSet<(String, String)> = linked_blobs(&drop)
        .into_iter()
        .filter(|d| gone.contains(d))
        .map(|d| (app.to_string(), d))
        .chain(
            linked_blobs(&copy)
                .into_iter()
                .map(|d| (other.to_string(), d)),
        )
        .collect();
    for (repo, d) in &links_gone {
        assert!(
            before.contains(&layer_link_key(repo, d)),
            "[{}] push wrote no _layers link {repo}@{d}",
            store.kind
        );
    }
    let link_names: BTreeSet<String> = links_gone.iter().map(|(r, d)| format!("{r}@{d}")).collect();
    assert_eq!(
        strings(&dry["layer_links"]),
        link_names,
        "[{}] dry run: {dry:#}",
        store.kind
    );

    let young = json(&store, &["gc"]);
    assert_eq!(
        young["blobs"].as_array().unwrap().len(),
        0,
        "default grace keeps new blobs"
    );
    assert!(young["kept_young"].as_u64().unwrap() >= gone.len() as u64);
    assert_eq!(keyset(&store), before);

    let swept = json(&store, &["gc", "--grace", "0s"]);
    assert_eq!(strings(&swept["blobs"]), gone, "[{}] {swept:#}", store.kind);
    assert_eq!(
        strings(&swept["layer_links"]),
        link_names,
        "[{}] {swept:#}",
        store.kind
    );
    assert_eq!(swept["index_entries"], 1, "the dropped layer's index entry");
    let keys = keyset(&store);
    for d in &gone {
        assert!(!keys.contains(&blob_key(d)), "[{}] {d} kept", store.kind);
    }
    for (repo, d) in &links_gone {
        assert!(
            !keys.contains(&layer_link_key(repo, d)),
            "[{}] _layers link {repo}@{d} kept",
            store.kind
        );
    }
    // The removed repository's links went, not the blobs they named.
    for d in linked_blobs(&copy) {
        assert!(keys.contains(&blob_key(&d)), "[{}] {d} swept", store.kind);
    }
    // Kept: the tagged images, the shared base, and the moved tag's earlier revision
    // (untagged revisions are kept, as the registry's own gc keeps them).
    for img in [&keep, &moved, &old] {
        for d in pushed_blobs(img) {
            assert!(
                keys.contains(&blob_key(&d)),
                "[{}] gc deleted {d} of {}",
                store.kind,
                img["reference"]
            );
        }
        assert_links_kept(&store, &keys, app, img);
        for l in img["layers"].as_array().unwrap() {
            assert!(
                keys.contains(&index_key(l)),
                "[{}] index entry of {l} removed",
                store.kind
            );
        }
    }
    assert!(!keys.contains(&index_key(&drop["layers"][1])));
    assert!(
        !keys.iter().any(|k| k.contains("s3dock/gc/")),
        "gc left its marker"
    );
    assert_clean(&store, &["--deep"]);
    pull_ok(&store, &format!("{app}:keep"));
    pull_ok(&store, &format!("{app}@{}", digest(&old)));
    // Nothing more to collect.
    let again = json(&store, &["gc", "--grace", "0s"]);
    assert_eq!(again["blobs"], serde_json::json!([]));
    assert_eq!(again["layer_links"], serde_json::json!([]));

    let Some(start) = registry else {
        return;
    };
    let reg = start(&store);
    for (tag, img) in [("keep", &keep), ("moved", &moved)] {
        let r = format!("{app}:{tag}");
        assert_eq!(
            skopeo_inspect(&reg.docker_ref(&r))["Digest"],
            img["manifest_digest"],
            "registry:2 serves {r}"
        );
    }
    let before = keyset(&store);
    let log = reg.stop_and_garbage_collect(false);
    assert!(
        log.contains("0 blobs and 0 manifests eligible for deletion"),
        "[{}] registry garbage-collect found more to delete:\n{log}",
        store.kind
    );
    assert_eq!(keyset(&store), before, "registry gc deleted something");
}

#[test]
fn gc_dir_store_then_registry_fs_agrees() {
    let reg = need_registry() && need_skopeo();
    fn fs(s: &TestStore) -> Registry {
        Registry::fs(s.dir.as_ref().unwrap().path())
    }
    gc_on(
        TestStore::local(),
        reg.then_some(fs as fn(&TestStore) -> Registry),
    );
}

#[test]
fn gc_moto_then_registry_s3_agrees() {
    let reg = need_registry() && need_skopeo();
    if let Some(s) = TestStore::s3("moto") {
        gc_on(s, reg.then_some(Registry::s3 as fn(&TestStore) -> Registry));
    }
}

#[test]
fn gc_s3s_then_registry_s3_agrees() {
    let reg = need_registry() && need_skopeo();
    if let Some(s) = TestStore::s3("s3s") {
        gc_on(s, reg.then_some(Registry::s3 as fn(&TestStore) -> Registry));
    }
}

/// gc marks through a multi-platform index and from version and environment records.
/// The roots are made the only ones: the index's platform manifests lose their own
/// revision links (`rm` refuses that while a tagged index lists them; `--force` does
/// it), and two images keep only a version or an environment record (`rm --force` of
/// their revisions takes every registry tag on them; the records stay). gc then sweeps
/// exactly the one image nothing reaches, with its `_layers` links.
fn gc_marks_through_indexes_and_records_on(store: TestStore) {
    let tmp = tempfile::tempdir().unwrap();
    let app = "lcroot/app";
    let multi_file = tmp.path().join("multi.tar");
    let (index, platforms) = multi_platform_archive(&multi_file, "multi", store.kind);
    let multi = store.push_json(
        &[
            "-i",
            multi_file.to_str().unwrap(),
            "--all-platforms",
            &format!("{app}:multi"),
        ],
        None,
    )["images"][0]
        .clone();
    assert_eq!(multi["manifest_digest"], index.as_str(), "{multi:#}");
    // The index's image record (platforms "linux/amd64,linux/arm64") is well-formed.
    assert_clean(&store, &[]);
    let rel = push(
        &store,
        &archive(tmp.path(), "rel", &[(110, 8192)]),
        &format!("{app}:rel"),
    );
    store.ok(&["-q", "tag", &format!("{app}:rel"), "v1.0.0"], None);
    let live = push(
        &store,
        &archive(tmp.path(), "live", &[(111, 8192)]),
        &format!("{app}:live"),
    );
    store.ok(&["-q", "promote", &format!("{app}:live"), "staging"], None);
    let drop = push(
        &store,
        &archive(tmp.path(), "drop", &[(112, 8192)]),
        &format!("{app}:drop"),
    );
    remove_image(&store, app, "drop", &drop);

    // A platform manifest of a tagged index is in use.
    for p in &platforms {
        let r = format!("{app}@{}", p.manifest_digest);
        let err = store.fails(&["rm", &r], None);
        assert!(
            err.contains("still in use") && err.contains(&format!("index {index}")),
            "[{}] {err}",
            store.kind
        );
        store.ok(&["-q", "rm", "--force", &r], None);
    }
    for img in [&rel, &live] {
        store.ok(
            &["-q", "rm", "--force", &format!("{app}@{}", digest(img))],
            None,
        );
    }
    let keys = keyset(&store);
    let names = |d: &str| {
        keys.iter()
            .filter(|k| k.contains("/_manifests/") && k.contains(hex(d)))
            .cloned()
            .collect::<Vec<_>>()
    };
    for d in platforms
        .iter()
        .map(|p| p.manifest_digest.clone())
        .chain([digest(&rel), digest(&live)])
    {
        assert_eq!(names(&d), Vec::<String>::new(), "[{}] {d}", store.kind);
    }
    let tags = stdout(&store.ok(&["tags", app], None));
    assert_eq!(tags.trim(), "multi", "[{}]", store.kind);

    let swept = json(&store, &["gc", "--grace", "0s"]);
    let drop_blobs: BTreeSet<String> = pushed_blobs(&drop).into_iter().collect();
    assert_eq!(
        strings(&swept["blobs"]),
        drop_blobs,
        "[{}] {swept:#}",
        store.kind
    );
    let drop_links: BTreeSet<String> = linked_blobs(&drop)
        .into_iter()
        .map(|d| format!("{app}@{d}"))
        .collect();
    assert_eq!(
        strings(&swept["layer_links"]),
        drop_links,
        "[{}] {swept:#}",
        store.kind
    );
    let keys = keyset(&store);
    let mut kept: Vec<String> = vec![index.clone()];
    for p in &platforms {
        kept.push(p.manifest_digest.clone());
        kept.push(p.config_digest.clone());
        assert!(
            keys.contains(&layer_link_key(app, &p.config_digest)),
            "[{}] _layers link of the {} config swept",
            store.kind,
            p.arch
        );
    }
    for img in [&rel, &live] {
        kept.extend(pushed_blobs(img));
        assert_links_kept(&store, &keys, app, img);
    }
    for d in &kept {
        assert!(keys.contains(&blob_key(d)), "[{}] gc swept {d}", store.kind);
    }
    // Why rm refuses without --force: a platform without its revision link is not
    // served (by s3dock, as by the registry), though gc keeps its blobs.
    let err = store.fails(
        &[
            "pull",
            "-q",
            &format!("{app}:multi"),
            "--platform",
            "linux/arm64",
            "-o",
            tmp.path().join("arm64.tar").to_str().unwrap(),
        ],
        None,
    );
    assert!(
        err.contains(&platforms[1].manifest_digest),
        "[{}] {err}",
        store.kind
    );
    // What verify reports is what the forced removals left, and nothing is missing.
    let (_, v) = verify(&store, &["--deep"]);
    for p in v["problems"].as_array().unwrap() {
        assert!(
            p["kind"] == "dangling-revision" || p["kind"] == "dangling-record",
            "[{}] {v:#}",
            store.kind
        );
    }
}

#[test]
fn gc_marks_through_indexes_and_records_dir() {
    if need_busybox() {
        gc_marks_through_indexes_and_records_on(TestStore::local());
    }
}

#[test]
fn gc_marks_through_indexes_and_records_moto() {
    if !need_busybox() {
        return;
    }
    if let Some(s) = TestStore::s3("moto") {
        gc_marks_through_indexes_and_records_on(s);
    }
}

// ------------------------------------------------------------------ verify

/// The lines of a text-mode `verify` (stdout) and its exit code.
fn verify_lines(store: &TestStore, extra: &[&str]) -> (i32, Vec<String>) {
    let mut a = vec!["verify"];
    a.extend_from_slice(extra);
    let o = store.run(&a, None);
    (
        o.status.code().unwrap(),
        stdout(&o).lines().map(String::from).collect(),
    )
}

fn has_line(lines: &[String], kind: &str, naming: &str) -> bool {
    lines
        .iter()
        .any(|l| l.starts_with(&format!("{kind}: ")) && l.contains(naming))
}

#[test]
fn verify_finds_each_injected_fault_and_repairs_the_safe_ones() {
    let store = TestStore::local();
    let root = store.dir.as_ref().unwrap().path().to_path_buf();
    let tmp = tempfile::tempdir().unwrap();
    let app = "lcv/app";
    let mut imgs = std::collections::BTreeMap::new();
    for (i, t) in ["a", "b", "c", "d", "e", "f"].into_iter().enumerate() {
        let f = archive(tmp.path(), t, &[(20 + i as u64, 64 * 1024)]);
        imgs.insert(t, push(&store, &f, &format!("{app}:{t}")));
    }
    store.ok(&["-q", "tag", &format!("{app}:f"), "v1.0.0"], None);
    store.ok(
        &["-q", "promote", &format!("{app}:v1.0.0"), "production"],
        None,
    );
    assert_clean(&store, &["--deep"]);
    assert_eq!(verify_lines(&store, &["--deep"]), (0, Vec::new()));

    let layer = |t: &str| imgs[t]["layers"][0]["digest"].as_str().unwrap().to_string();
    let path = |key: &str| root.join(key);
    // a: a deleted blob; b: a truncated one; c: a flipped byte (same size).
    std::fs::remove_file(path(&blob_key(&layer("a")))).unwrap();
    let b = path(&blob_key(&layer("b")));
    let n = std::fs::metadata(&b).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&b)
        .unwrap()
        .set_len(n / 2)
        .unwrap();
    let c = path(&blob_key(&layer("c")));
    let mut bytes = std::fs::read(&c).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&c, bytes).unwrap();
    // d: a revision link that is not a digest.
    let d_rev = format!(
        "docker/registry/v2/repositories/{app}/_manifests/revisions/sha256/{}/link",
        hex(&digest(&imgs["d"]))
    );
    std::fs::write(path(&d_rev), "not a digest\n").unwrap();
    // A tag whose manifest does not exist.
    let ghost = format!("sha256:{}", sha256_hex(b"ghost"));
    let ghost_tag = path(&format!(
        "docker/registry/v2/repositories/{app}/_manifests/tags/ghost/current/link"
    ));
    std::fs::create_dir_all(ghost_tag.parent().unwrap()).unwrap();
    std::fs::write(&ghost_tag, &ghost).unwrap();
    // A dedup-index entry naming a blob that is not there.
    let dangling_entry = format!("s3dock/index/diffid/{}/gzip.json", sha256_hex(b"entry"));
    std::fs::create_dir_all(path(&dangling_entry).parent().unwrap()).unwrap();
    std::fs::write(
        path(&dangling_entry),
        serde_json::json!({"digest": ghost, "size": 10}).to_string(),
    )
    .unwrap();
    // e: its layer's `_layers` link is gone (the blob is still there).
    let e_link = format!(
        "docker/registry/v2/repositories/{app}/_layers/sha256/{}/link",
        hex(&layer("e"))
    );
    std::fs::remove_file(path(&e_link)).unwrap();

    let (code, lines) = verify_lines(&store, &[]);
    assert_eq!(code, 1, "{lines:#?}");
    let expected = [
        ("missing-blob", layer("a")),
        ("size-mismatch", layer("b")),
        ("bad-link", d_rev.clone()),
        ("dangling-tag", format!("{app}:ghost")),
        ("dangling-index-entry", dangling_entry.clone()),
        ("missing-layer-link", layer("e")),
    ];
    for (kind, naming) in &expected {
        assert!(
            has_line(&lines, kind, naming),
            "no {kind} line naming {naming}: {lines:#?}"
        );
    }
    assert!(
        !has_line(&lines, "corrupt-blob", &layer("c")),
        "flipped byte seen without --deep"
    );
    let (code, deep) = verify_lines(&store, &["--deep"]);
    assert_eq!(code, 1);
    assert!(has_line(&deep, "corrupt-blob", &layer("c")), "{deep:#?}");
    for (kind, naming) in &expected {
        assert!(
            has_line(&deep, kind, naming),
            "--deep: no {kind} line naming {naming}"
        );
    }
    // Only the two safe faults are repaired.
    let (code, rep) = verify_lines(&store, &["--repair"]);
    assert_eq!(code, 1);
    for l in &rep {
        let repaired = l.ends_with("(repaired)");
        let safe = l.starts_with("dangling-index-entry: ") || l.starts_with("missing-layer-link: ");
        assert_eq!(repaired, safe, "{l}");
    }
    assert!(path(&e_link).exists() && !path(&dangling_entry).exists());
    let (_, after) = verify_lines(&store, &[]);
    assert_eq!(after.len(), expected.len() - 2, "{after:#?}");
    // Scoped to references.
    assert_eq!(
        verify_lines(&store, &[&format!("{app}:e")]),
        (0, Vec::new())
    );
    assert_eq!(
        verify_lines(
            &store,
            &["--deep", &format!("{app}:production"), &format!("{app}:f")]
        )
        .0,
        0
    );
    let (code, a) = verify_lines(&store, &[&format!("{app}:a")]);
    assert_eq!(code, 1);
    assert!(has_line(&a, "missing-blob", &layer("a")), "{a:#?}");
    // A store that cannot be read: exit 2, one error line.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_s3dock"))
        .args([
            "--store",
            "s3://nowhere",
            "--endpoint",
            "http://127.0.0.1:9",
            "--retries",
            "1",
            "verify",
        ])
        .env("AWS_ACCESS_KEY_ID", "x")
        .env("AWS_SECRET_ACCESS_KEY", "y")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // Exit 2 says verify could not run; the line says why.
    assert!(
        stderr(&o).starts_with("s3dock: error: cannot reach bucket"),
        "{}",
        stderr(&o)
    );
}

// ------------------------------------------------------------------ rm and prune

/// Sets an image record's push time to `days` ago (the store is a directory).
fn age(store: &TestStore, app: &str, tag: &str, days: i64) {
    let p = store
        .dir
        .as_ref()
        .unwrap()
        .path()
        .join(format!("s3dock/apps/{app}/_images/{tag}.json"));
    let mut rec: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    let t = time::OffsetDateTime::now_utc() - time::Duration::days(days);
    rec["pushed_at"] = Value::String(
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap(),
    );
    std::fs::write(&p, serde_json::to_vec_pretty(&rec).unwrap()).unwrap();
}

fn removed_tags(report: &Value) -> BTreeSet<String> {
    report["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["tag"].as_str().unwrap().to_string())
        .collect()
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn prune_retention_table() {
    let store = TestStore::local();
    let tmp = tempfile::tempdir().unwrap();
    let app = "lcp/app";
    // t1 oldest … t6 newest; t1 runs in production, t3 in staging through version
    // v2.0.0, t2 has version v1.0.0, t4..t6 have neither.
    let mut imgs = std::collections::BTreeMap::new();
    for (i, days) in [60, 50, 40, 30, 2, 1].into_iter().enumerate() {
        let t = format!("t{}", i + 1);
        let f = archive(tmp.path(), &t, &[(40 + i as u64, 4096)]);
        imgs.insert(t.clone(), push(&store, &f, &format!("{app}:{t}")));
        age(&store, app, &t, days);
    }
    store.ok(&["-q", "tag", &format!("{app}:t2"), "v1.0.0"], None);
    store.ok(&["-q", "tag", &format!("{app}:t3"), "v2.0.0"], None);
    store.ok(&["-q", "promote", &format!("{app}:t1"), "production"], None);
    store.ok(
        &["-q", "promote", &format!("{app}:v2.0.0"), "staging"],
        None,
    );

    // (keep-last, older-than, --versions) → the tags removed.
    let table: [(&str, &str, bool, &[&str]); 7] = [
        ("1", "7d", false, &["t4"]),
        ("1", "7d", true, &["t2", "t4"]),
        ("5", "7d", true, &[]),
        ("0", "3d", false, &["t4"]),
        ("0", "0s", false, &["t4", "t5", "t6"]),
        ("0", "0s", true, &["t2", "t4", "t5", "t6"]),
        ("0", "100d", true, &[]),
    ];
    let before = keyset(&store);
    for (keep, older, versions, want) in table {
        let mut a = vec![
            "prune",
            app,
            "--keep-last",
            keep,
            "--older-than",
            older,
            "--dry-run",
        ];
        if versions {
            a.push("--versions");
        }
        let r = json(&store, &a);
        assert_eq!(removed_tags(&r), set(want), "prune {a:?}: {r:#}");
        assert_eq!(
            keyset(&store),
            before,
            "prune {a:?} --dry-run changed the store"
        );
        // Text mode prints one line per image it would remove.
        let out = stdout(&store.ok(&a, None));
        assert_eq!(out.lines().count(), want.len(), "{out}");
    }
    // For real: row 2.
    let r = json(
        &store,
        &[
            "prune",
            app,
            "--keep-last",
            "1",
            "--older-than",
            "7d",
            "--versions",
        ],
    );
    assert_eq!(removed_tags(&r), set(&["t2", "t4"]));
    let tags: BTreeSet<String> = stdout(&store.ok(&["tags", app], None))
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(
        tags,
        set(&["production", "staging", "t1", "t3", "t5", "t6", "v2.0.0"])
    );
    for r in ["t1", "t3", "t5", "t6", "production", "staging", "v2.0.0"] {
        pull_ok(&store, &format!("{app}:{r}"));
    }
    store.fails(&["pull", "-q", &format!("{app}:v1.0.0")], None);
    assert_clean(&store, &[]);
    let history = stdout(&store.ok(&["history", app], None));
    assert_eq!(
        history.lines().filter(|l| l.contains("remove")).count(),
        3,
        "{history}"
    );
    // Their blobs are now collectable.
    let swept = json(&store, &["gc", "--grace", "0s"]);
    let mut gone = BTreeSet::new();
    for t in ["t2", "t4"] {
        gone.extend(pushed_blobs(&imgs[t]));
    }
    assert_eq!(strings(&swept["blobs"]), gone);
    assert_clean(&store, &["--deep"]);
    // --all-apps covers this app too; nothing protected is touched.
    let r = json(
        &store,
        &[
            "prune",
            "--all-apps",
            "--keep-last",
            "0",
            "--older-than",
            "0s",
        ],
    );
    assert_eq!(removed_tags(&r), set(&["t5", "t6"]));
    assert_clean(&store, &[]);
}

#[test]
fn rm_untags_and_guards_revisions() {
    let store = TestStore::local();
    let tmp = tempfile::tempdir().unwrap();
    let app = "lcr/app";
    let one = push(
        &store,
        &archive(tmp.path(), "one", &[(60, 4096)]),
        &format!("{app}:one"),
    );
    push(
        &store,
        &archive(tmp.path(), "one", &[(60, 4096)]),
        &format!("{app}:alias"),
    );
    let two = push(
        &store,
        &archive(tmp.path(), "two", &[(61, 4096)]),
        &format!("{app}:two"),
    );
    store.ok(
        &["-q", "promote", &format!("{app}:two"), "production"],
        None,
    );
    let d1 = format!("{app}@{}", digest(&one));
    let d2 = format!("{app}@{}", digest(&two));

    let err = store.fails(&["rm", &d1], None);
    assert!(
        err.contains("still in use") && err.contains("alias") && err.contains("one"),
        "{err}"
    );
    let err = store.fails(&["rm", &format!("{app}:production")], None);
    assert!(err.contains("is an environment"), "{err}");
    store.fails(&["rm", &format!("{app}:nope")], None);
    store.fails(&["rm", "NOT A REF"], None);

    let r = json(&store, &["rm", &format!("{app}:one")]);
    assert_eq!(r[0]["reference"], format!("{app}:one"));
    store.fails(&["pull", "-q", &format!("{app}:one")], None);
    pull_ok(&store, &format!("{app}:alias"));
    // Untagging the environment's image tag leaves the environment running it.
    store.ok(&["-q", "rm", &format!("{app}:two")], None);
    pull_ok(&store, &format!("{app}:production"));
    let err = store.fails(&["rm", &d2], None);
    assert!(err.contains("environment production"), "{err}");
    // --force removes the revision and the tags on it.
    let r = json(&store, &["rm", "--force", &d1]);
    assert_eq!(strings(&r[0]["untagged"]), set(&["alias"]));
    assert_eq!(r[0]["forced"], true);
    store.fails(&["pull", "-q", &format!("{app}:alias")], None);
    store.fails(&["pull", "-q", &d1], None);
    let history = stdout(&store.ok(&["history", app, "--event", "remove"], None));
    assert_eq!(history.lines().count(), 3, "{history}");
    assert!(history.contains("(forced)"), "{history}");
    assert_clean(&store, &[]);
}

// ------------------------------------------------------------------ gc against pushes

/// 20 rounds on moto: each round first makes the shared base layer unreferenced (the
/// previous image is removed), then pushes an image reusing it through the dedup index
/// while `gc --grace 0s` runs, gc or the push starting first by a varying delay.
/// Whatever the interleaving, the push succeeds and its tag has every blob; gc sweeps
/// only the previous image's blobs. And the protocol is exercised both ways: some
/// rounds gc backs off from a running push, and in some gc sweeps while a push waits
/// for it (the push says so with `-v`), so gc's passing is not just its backing off.
#[test]
fn push_while_gc_20_rounds_moto() {
    let Some(store) = TestStore::s3("moto") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let app = "lcrace/app";
    let base = (70, 256 * 1024);
    let files: Vec<PathBuf> = (0..=20)
        .map(|i| archive(tmp.path(), &format!("r{i}"), &[base, (100 + i, 16 * 1024)]))
        .collect();
    let mut prev = push(&store, &files[0], &format!("{app}:r0"));
    let (mut swept_rounds, mut busy_rounds, mut swept_under_push) = (0, 0, 0);
    // Every blob of a removed image (a round where gc backs off leaves them for later).
    let mut removed = BTreeSet::new();
    for (i, file) in files.iter().enumerate().skip(1) {
        remove_image(&store, app, &format!("r{}", i - 1), &prev);
        removed.extend(pushed_blobs(&prev));
        let r = format!("{app}:r{i}");
        let delay = std::time::Duration::from_millis([0, 40, 100, 200, 350][i % 5]);
        let push_first = i % 4 == 3;
        let (gc_out, pushed) = std::thread::scope(|s| {
            let gc = || store.run(&["--json", "gc", "--grace", "0s"], None);
            let push = || {
                store.run(
                    &["push", "--json", "-v", "-i", file.to_str().unwrap(), &r],
                    None,
                )
            };
            if push_first {
                let p = s.spawn(push);
                std::thread::sleep(delay);
                let g = s.spawn(gc);
                (g.join().unwrap(), p.join().unwrap())
            } else {
                let g = s.spawn(gc);
                std::thread::sleep(delay);
                let p = s.spawn(push);
                (g.join().unwrap(), p.join().unwrap())
            }
        });
        assert!(
            pushed.status.success(),
            "round {i}: push failed: {}",
            stderr(&pushed)
        );
        assert!(
            gc_out.status.success(),
            "round {i}: gc failed: {}",
            stderr(&gc_out)
        );
        let g: Value = serde_json::from_slice(&gc_out.stdout).unwrap();
        let swept = strings(&g["blobs"]);
        let waited = stderr(&pushed).contains("gc is sweeping the store; waiting");
        if g["pushes_in_progress"].as_u64().unwrap() > 0 {
            busy_rounds += 1;
            assert!(swept.is_empty(), "round {i}: swept while busy: {g:#}");
        } else if !swept.is_empty() {
            swept_rounds += 1;
            swept_under_push += usize::from(waited);
        }
        // Only what removed images used (their own blobs and the base layer, which
        // nothing references until the new tag is written).
        assert!(
            swept.is_subset(&removed),
            "round {i}: gc swept more than the removed image: {g:#}"
        );
        prev = serde_json::from_slice::<Value>(&pushed.stdout).unwrap()["images"][0].clone();
        assert_clean(&store, &[&r]);
        pull_ok(&store, &r);
    }
    eprintln!(
        "push-while-gc: {swept_rounds} rounds swept ({swept_under_push} while a push waited), \
         {busy_rounds} saw a push in progress"
    );
    assert!(
        swept_under_push > 0 && busy_rounds > 0,
        "the race was not exercised both ways: {swept_rounds} rounds swept \
         ({swept_under_push} while a push waited), {busy_rounds} backed off"
    );
    json(&store, &["gc", "--grace", "0s"]);
    assert_clean(&store, &["--deep"]);
    assert!(
        !store.keys().iter().any(|k| k.contains("s3dock/gc/")),
        "locks left behind"
    );
}

/// gc killed (SIGKILL) at many points of its sweep: afterwards `verify` reports at most
/// dangling index entries (what gc was removing), a push is not held up by the dead
/// gc's marker, and the next gc leaves the store clean.
fn kill_gc_on(store: TestStore) {
    let tmp = tempfile::tempdir().unwrap();
    let app = "lckill/app";
    let keep = push(
        &store,
        &archive(tmp.path(), "keep", &[(80, 8192)]),
        &format!("{app}:keep"),
    );
    for (round, delay_ms) in [0u64, 5, 15, 30, 60, 120, 250, 500].into_iter().enumerate() {
        for j in 0..4u64 {
            let t = format!("g{round}x{j}");
            let seed = 1000 + round as u64 * 10 + j;
            let img = push(
                &store,
                &archive(tmp.path(), &t, &[(80, 8192), (seed, 4096)]),
                &format!("{app}:{t}"),
            );
            remove_image(&store, app, &t, &img);
        }
        let mut child = store.cmd();
        child
            .args(["-q", "gc", "--grace", "0s"])
            .stdout(std::process::Stdio::null());
        let mut child = child.spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        child.wait().unwrap();
        let (code, v) = verify(&store, &[]);
        for p in v["problems"].as_array().unwrap() {
            assert_eq!(
                p["kind"], "dangling-index-entry",
                "[{}] after kill at {delay_ms} ms: {v:#}",
                store.kind
            );
        }
        assert_eq!(code == 0, v["problems"].as_array().unwrap().is_empty());
        pull_ok(&store, &format!("{app}:keep"));
        // The killed gc's marker does not hold pushes up (its process is gone).
        let t = format!("after{round}");
        push(
            &store,
            &archive(tmp.path(), &t, &[(80, 8192), (2000 + round as u64, 4096)]),
            &format!("{app}:{t}"),
        );
        store.ok(&["-q", "gc", "--grace", "0s"], None);
        assert_clean(&store, &[]);
    }
    assert_clean(&store, &["--deep"]);
    let _ = keep;
}

#[test]
fn gc_killed_at_many_points_dir() {
    kill_gc_on(TestStore::local());
}

#[test]
fn gc_killed_at_many_points_moto() {
    if let Some(s) = TestStore::s3("moto") {
        kill_gc_on(s);
    }
}

// ------------------------------------------------------------------ least-privilege IAM

/// The README's policies for bucket `b`, prefix `p` (kept in step with the README).
fn policy(role: &str, b: &str, p: &str) -> Value {
    let obj = |rest: &str| format!("arn:aws:s3:::{b}/{p}/{rest}");
    let mut st = vec![
        serde_json::json!({"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": format!("arn:aws:s3:::{b}")}),
        serde_json::json!({"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": obj("*")}),
    ];
    match role {
        "pull" => {}
        "push" => {
            st.push(serde_json::json!({"Effect": "Allow", "Action": ["s3:ListBucketMultipartUploads"], "Resource": format!("arn:aws:s3:::{b}")}));
            st.push(serde_json::json!({"Effect": "Allow",
                "Action": ["s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
                "Resource": obj("*")}));
            st.push(
                serde_json::json!({"Effect": "Allow", "Action": ["s3:DeleteObject"],
                "Resource": [obj("s3dock/tmp/*"), obj("s3dock/gc/leases/*")]}),
            );
        }
        "promote" => st.push(
            serde_json::json!({"Effect": "Allow", "Action": ["s3:PutObject"],
            "Resource": [obj("s3dock/apps/*"), obj("s3dock/audit/*"),
                         obj("docker/registry/v2/repositories/*/_manifests/tags/*")]}),
        ),
        "maintain" => {
            st.push(
                serde_json::json!({"Effect": "Allow", "Action": ["s3:PutObject"],
                "Resource": [obj("s3dock/gc/sweeps/*"), obj("s3dock/audit/*"),
                             obj("docker/registry/v2/repositories/*/_layers/*")]}),
            );
            st.push(serde_json::json!({"Effect": "Allow", "Action": ["s3:DeleteObject"], "Resource": obj("*")}));
        }
        _ => unreachable!(),
    }
    serde_json::json!({"Version": "2012-10-17", "Statement": st})
}

/// Each role's command succeeds with exactly its policy; one outside it is refused
/// with the access-denied error and changes nothing.
#[test]
fn iam_roles_pull_push_promote_maintain_moto() {
    let Some(iam) = iam::IamMoto::start() else {
        return;
    };
    let (bucket, prefix) = ("lciam", "p");
    iam.create_bucket(bucket);
    let keys: std::collections::BTreeMap<&str, iam::Keys> = ["pull", "push", "promote", "maintain"]
        .into_iter()
        .map(|r| (r, iam.user(r, &policy(r, bucket, prefix))))
        .collect();
    let store_url = format!("s3://{bucket}/{prefix}");
    let run = |role: &str, args: &[&str]| -> Output {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_s3dock"));
        c.args(args)
            .args([
                "--store",
                &store_url,
                "--endpoint",
                &iam.endpoint,
                "--retries",
                "1",
            ])
            .env_remove("S3DOCK_STORE")
            .env("S3DOCK_ACTOR", "iam-test")
            .stdin(std::process::Stdio::null());
        iam.env(&mut c, &keys[role]);
        c.output().unwrap()
    };
    let ok = |role: &str, args: &[&str]| -> Output {
        let o = run(role, args);
        assert!(
            o.status.success(),
            "{role}: s3dock {args:?} failed: {}",
            stderr(&o)
        );
        o
    };
    let denied = |role: &str, args: &[&str]| {
        let o = run(role, args);
        let err = stderr(&o);
        assert!(
            !o.status.success(),
            "{role}: s3dock {args:?} should be denied"
        );
        let line = err
            .lines()
            .find(|l| l.starts_with("s3dock: error: "))
            .unwrap_or_else(|| panic!("{err}"));
        assert!(
            line.to_lowercase().contains("access denied") || line.contains("AccessDenied"),
            "{role}: s3dock {args:?}: not an access-denied error: {err}"
        );
    };
    let tmp = tempfile::tempdir().unwrap();
    let app = "iam/app";
    let a1 = archive(tmp.path(), "i1", &[(90, 8192)]);
    let a2 = archive(tmp.path(), "i2", &[(91, 8192)]);
    let a3 = archive(tmp.path(), "i3", &[(92, 8192)]);
    let (a1, a2, a3) = (
        a1.to_str().unwrap(),
        a2.to_str().unwrap(),
        a3.to_str().unwrap(),
    );
    let out = tmp.path().join("o.tar");
    let out = out.to_str().unwrap();

    // push: pushes, and re-pushes (dedup, leases); cannot remove anything.
    ok("push", &["push", "-q", "-i", a1, &format!("{app}:one")]);
    ok("push", &["push", "-q", "-i", a2, &format!("{app}:two")]);
    ok("push", &["push", "-q", "-i", a1, &format!("{app}:one")]);
    denied("push", &["rm", &format!("{app}:two")]);
    // pull (read-only): pulls, lists and verifies; cannot push, tag or collect.
    ok("pull", &["pull", "-q", &format!("{app}:one"), "-o", out]);
    ok("pull", &["tags", app]);
    ok("pull", &["verify", "--deep"]);
    denied("pull", &["push", "-q", "-i", a3, &format!("{app}:three")]);
    denied("pull", &["tag", &format!("{app}:one"), "v1.0.0"]);
    denied("pull", &["gc", "--grace", "0s"]);
    // promote: versions and environments; cannot push blobs or delete.
    ok("promote", &["tag", &format!("{app}:one"), "v1.0.0"]);
    ok(
        "promote",
        &["promote", &format!("{app}:v1.0.0"), "production"],
    );
    ok(
        "pull",
        &["pull", "-q", &format!("{app}:production"), "-o", out],
    );
    denied(
        "promote",
        &["push", "-q", "-i", a3, &format!("{app}:three")],
    );
    denied("promote", &["rm", &format!("{app}:two")]);
    // maintain: rm, prune, gc, verify --repair; cannot push.
    ok("maintain", &["rm", &format!("{app}:two")]);
    ok(
        "maintain",
        &["prune", app, "--keep-last", "0", "--older-than", "0s"],
    );
    ok("maintain", &["gc", "--grace", "0s"]);
    ok("maintain", &["verify", "--repair"]);
    denied(
        "maintain",
        &["push", "-q", "-i", a3, &format!("{app}:three")],
    );
    ok(
        "pull",
        &["pull", "-q", &format!("{app}:production"), "-o", out],
    );
    ok("pull", &["verify", "--deep"]);
    let tags = stdout(&ok("pull", &["tags", app]));
    assert_eq!(
        tags.lines().collect::<BTreeSet<_>>(),
        ["one", "production", "v1.0.0"].into_iter().collect()
    );
}
