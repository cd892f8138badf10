//! Release workflow end to end (issue 6): build from a scratch git repo with the
//! machine's Docker Engine → push → tag → promote → current → pull → docker load →
//! run, on the directory store and moto; versions out of order; concurrent
//! promotions against moto (whose conditional writes are atomic); dirty-tree
//! refusal; config profiles; every error path.

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

// ------------------------------------------------------------------ helpers

/// A config path that does not exist, so the user's own config never leaks into a test.
fn no_config() -> PathBuf {
    std::env::temp_dir().join(format!("s3dock-no-config-{}.toml", uuid::Uuid::new_v4()))
}

/// `store.cmd()` isolated from any config file, with a fixed actor.
fn rcmd(store: &TestStore, args: &[&str]) -> Command {
    let mut c = store.cmd();
    c.args(args)
        .env("S3DOCK_CONFIG", no_config())
        .env_remove("S3DOCK_PROFILE")
        .env_remove("AWS_PROFILE")
        .env("S3DOCK_ACTOR", "release-test")
        .stdin(Stdio::null());
    c
}

fn run(store: &TestStore, args: &[&str]) -> Output {
    rcmd(store, args).output().unwrap()
}

/// Runs, expects success, returns stdout.
fn ok(store: &TestStore, args: &[&str]) -> String {
    let o = run(store, args);
    assert!(
        o.status.success(),
        "[{}] s3dock {args:?} failed: {}",
        store.kind,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn ok_json(store: &TestStore, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["--json"];
    a.extend_from_slice(args);
    let out = ok(store, &a);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: bad JSON ({e}): {out}"))
}

/// Asserts a failure with exactly one `s3dock: error:` line containing `msg` and no stdout.
fn check_failure(o: &Output, what: &str, msg: &str) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "{what} should have failed: {err}");
    assert!(o.stdout.is_empty(), "{what}: a failure wrote to stdout");
    let lines: Vec<&str> = err.trim_end().lines().collect();
    assert_eq!(lines.len(), 1, "{what}: the error must be one line: {err}");
    assert!(
        lines[0].starts_with("s3dock: error: ") && lines[0].contains(msg),
        "{what}: expected {msg:?} in: {err}"
    );
    err
}

fn fails(store: &TestStore, args: &[&str], msg: &str) -> String {
    check_failure(&run(store, args), &format!("{args:?}"), msg)
}

fn push_tiny(store: &TestStore, reference: &str, archive: &str, compression: &str) -> String {
    let out = ok(
        store,
        &[
            "--json",
            "-q",
            "push",
            "-i",
            fixture(archive).to_str().unwrap(),
            "--compression",
            compression,
            reference,
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["images"][0]["manifest_digest"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Six images with distinct manifest digests, from two fixtures in three compressions.
const VARIANTS: &[(&str, &str)] = &[
    ("docker25-tiny.tar", "gzip"),
    ("docker25-tiny.tar", "none"),
    ("docker25-tiny.tar", "zstd"),
    ("docker25.tar", "gzip"),
    ("docker25.tar", "none"),
    ("docker25.tar", "zstd"),
];

fn app_name() -> String {
    format!("rel{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// The digest an environment's or version's registry tag points to, read from the store.
fn registry_tag(store: &TestStore, app: &str, tag: &str) -> Option<String> {
    let want = format!("docker/registry/v2/repositories/{app}/_manifests/tags/{tag}/current/link");
    if let Some(d) = &store.dir {
        return std::fs::read_to_string(d.path().join(want)).ok();
    }
    // S3: pull by the tag and read the digest from the report.
    pull_digest(store, &format!("{app}:{tag}"))
}

/// Pulls `reference` to a temp file; the manifest digest, or None if the pull failed.
fn pull_digest(store: &TestStore, reference: &str) -> Option<String> {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("image.tar");
    let o = run(
        store,
        &[
            "--json",
            "-q",
            "pull",
            reference,
            "-o",
            out.to_str().unwrap(),
        ],
    );
    if !o.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
    v["manifest_digest"].as_str().map(str::to_string)
}

fn history(store: &TestStore, app: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut a = vec!["history", app];
    a.extend_from_slice(extra);
    ok_json(store, &a).as_array().unwrap().clone()
}

fn audit_keys(store: &TestStore, app: &str) -> Vec<String> {
    store
        .keys()
        .into_iter()
        .filter(|k| k.starts_with(&format!("s3dock/audit/{app}/")))
        .collect()
}

// ------------------------------------------------------------------ git + docker

fn git(dir: &Path, args: &[&str]) -> String {
    let o = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Release Test")
        .env("GIT_AUTHOR_EMAIL", "release@test.example")
        .env("GIT_COMMITTER_NAME", "Release Test")
        .env("GIT_COMMITTER_EMAIL", "release@test.example")
        .env("GIT_AUTHOR_DATE", "2025-07-21T21:18:30Z")
        .env("GIT_COMMITTER_DATE", "2025-07-21T21:18:30Z")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// A git repo with a `FROM scratch` Dockerfile that runs busybox, committed at
/// 2025-07-21T21:18:30Z; returns the dir and the full commit hash.
fn scratch_repo(message: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(
        p.join("Dockerfile"),
        // The label makes this repo's build-cache chain its own, so a rebuild hits
        // exactly its own cache even while other tests build in parallel.
        format!(
            "FROM scratch\nLABEL test.repo=\"{}\"\nCOPY busybox /bin/busybox\nCOPY message.txt /message.txt\nCMD [\"/bin/busybox\", \"cat\", \"/message.txt\"]\n",
            uuid::Uuid::new_v4()
        ),
    )
    .unwrap();
    std::fs::copy("/bin/busybox", p.join("busybox")).unwrap();
    std::fs::write(p.join("message.txt"), format!("{message}\n")).unwrap();
    std::fs::write(p.join(".gitignore"), "*.log\n").unwrap();
    git(p, &["init", "-q", "-b", "main"]);
    git(p, &["add", "."]);
    git(p, &["commit", "-q", "-m", "initial"]);
    let hash = git(p, &["rev-parse", "HEAD"]).trim().to_string();
    (dir, hash)
}

fn have_docker() -> bool {
    have_command("docker")
        && Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Removes the images (by reference) it was given when dropped.
struct DockerCleanup(Vec<String>);

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        for r in &self.0 {
            let _ = docker(&["rmi", "-f", r]);
        }
    }
}

// ------------------------------------------------------------------ end to end

fn build_to_run(store: &TestStore) {
    let app = app_name();
    let message = format!("hello from {app}");
    let (repo, hash) = scratch_repo(&message);
    let stamp_tag = format!("20250721-2118-{}", &hash[..7]);
    let image = format!("{app}:{stamp_tag}");
    let mut cleanup = DockerCleanup(vec![image.clone()]);

    // stamp: the same tag for the same commit, from anywhere in the repo.
    let mut c = rcmd(store, &["stamp", &app]);
    c.current_dir(repo.path());
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), image);
    assert_eq!(
        ok(store, &["stamp", "-C", repo.path().to_str().unwrap()]).trim(),
        stamp_tag
    );

    // build --push: the builder's save output streams into push.
    let mut c = rcmd(store, &["build", &app, "--push"]);
    c.current_dir(repo.path()).env("DOCKER_BUILDKIT", "0");
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "build failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), image);
    // No `latest` anywhere: not in Docker, not in the store.
    assert!(!docker(&["image", "inspect", &format!("{app}:latest")])
        .status
        .success());
    assert!(!store.visible_tags().contains(&format!("{app}:latest")));

    // The metadata record has the git commit and who pushed.
    let list = ok_json(store, &["list", &app]);
    let imgs = list["images"].as_array().unwrap();
    assert_eq!(imgs.len(), 1, "{list}");
    assert_eq!(imgs[0]["tag"], stamp_tag.as_str());
    assert_eq!(imgs[0]["commit"], hash.as_str());
    assert!(imgs[0]["size"].as_u64().unwrap() > 500_000, "{list}");

    // Same commit, same content: building and pushing again changes nothing.
    let mut c = rcmd(store, &["build", &app, "--push"]);
    c.current_dir(repo.path()).env("DOCKER_BUILDKIT", "0");
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("nothing changed"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    ok(store, &["tag", &image, "v1.2.0"]);
    ok(store, &["promote", &app, "v1.2.0", "production"]);
    assert_eq!(
        ok(store, &["current", &app, "production"]),
        format!("{image}\n")
    );
    let cur = ok_json(store, &["current", &app, "production"]);
    let digest = cur["digest"].as_str().unwrap().to_string();
    assert_eq!(
        ok(store, &["current", &app, "production", "--digest"]).trim(),
        format!("{image}@{digest}")
    );
    assert_eq!(cur["target"]["kind"], "version");
    assert_eq!(cur["target"]["name"], "v1.2.0");
    // Versions and environments are real registry tags.
    let tags = store.visible_tags();
    for t in [
        &image,
        &format!("{app}:v1.2.0"),
        &format!("{app}:production"),
    ] {
        assert!(tags.contains(t), "{t} not in {tags:?}");
    }
    assert_eq!(
        registry_tag(store, &app, "production").as_deref(),
        Some(digest.as_str())
    );

    // pull APP ENV | docker load, into a Docker that no longer has the image; then run it.
    assert!(docker(&["rmi", "-f", &image]).status.success());
    let archive = tempfile::NamedTempFile::new().unwrap();
    let mut c = rcmd(store, &["pull", "-q", &app, "production"]);
    c.stdout(Stdio::from(archive.reopen().unwrap()));
    let st = c.status().unwrap();
    assert!(st.success());
    let o = docker(&["load", "-i", archive.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&image),
        "docker load: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let o = docker(&["run", "--rm", &image]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout), format!("{message}\n"));
    cleanup.0.push(image.clone());

    // The audit trail: push, tag, promote; keys carry the month, the event and the commit.
    let events = history(store, &app, &[]);
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["promote", "tag", "push"],
        "newest first: {events:?}"
    );
    for e in &events {
        assert_eq!(e["actor"]["name"], "release-test");
        assert_eq!(e["git_commit"], hash.as_str());
        if store.kind == "moto" {
            assert!(
                e["actor"]["aws"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("arn:aws:")),
                "caller identity on S3: {e}"
            );
        }
    }
    assert_eq!(
        events[2]["target"]["git"]["author"],
        "Release Test <release@test.example>"
    );
    let keys = audit_keys(store, &app);
    assert_eq!(keys.len(), 3, "{keys:?}");
    for k in &keys {
        let rest = k.strip_prefix(&format!("s3dock/audit/{app}/")).unwrap();
        let (month, file) = rest.split_once('/').unwrap();
        assert_eq!(month.len(), 6);
        let stem = file.strip_suffix(".json").unwrap();
        let parts: Vec<&str> = stem.split('-').collect();
        assert_eq!(parts.len(), 4, "{k}");
        assert!(parts[0].starts_with(month) && parts[1].len() == 6, "{k}");
        assert!(["push", "tag", "promote"].contains(&parts[2]), "{k}");
        assert_eq!(parts[3], &hash[..7], "{k}");
    }
}

#[test]
fn build_push_tag_promote_pull_run_on_dir_store() {
    if !require("Docker Engine", have_docker()) {
        return;
    }
    build_to_run(&TestStore::local());
}

#[test]
fn build_push_tag_promote_pull_run_on_moto() {
    if !require("Docker Engine", have_docker()) {
        return;
    }
    if let Some(s) = TestStore::s3("moto") {
        build_to_run(&s);
    }
}

/// registry:2 (Debian's docker-registry) on the same directory serves the version and
/// environment tags, and Docker pulls and runs them.
#[test]
fn registry_serves_versions_and_environments() {
    if !require("Docker Engine", have_docker())
        || !require("docker-registry", have_command("docker-registry"))
    {
        return;
    }
    let store = TestStore::local();
    let app = app_name();
    ok(
        &store,
        &[
            "-q",
            "push",
            "-i",
            fixture("docker25.tar").to_str().unwrap(),
            &format!("{app}:20231114-2213-abcdef0"),
        ],
    );
    ok(
        &store,
        &["tag", &format!("{app}:20231114-2213-abcdef0"), "v1.0.0"],
    );
    ok(&store, &["promote", &format!("{app}:v1.0.0"), "production"]);
    let out = Command::new("bash")
        .arg(root().join("scripts/registry.sh"))
        .args([
            "start",
            "fs",
            store.dir.as_ref().unwrap().path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let addr = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("REGISTRY=").map(|s| s.trim().to_string()))
        .unwrap();
    struct Stop(String);
    impl Drop for Stop {
        fn drop(&mut self) {
            let port = self.0.rsplit(':').next().unwrap().to_string();
            let _ = Command::new("bash")
                .arg(root().join("scripts/registry.sh"))
                .args(["stop", &port])
                .output();
        }
    }
    let _stop = Stop(addr.clone());
    let mut cleanup = DockerCleanup(vec![]);
    for tag in ["v1.0.0", "production"] {
        let r = format!("{addr}/{app}:{tag}");
        cleanup.0.push(r.clone());
        let o = docker(&["pull", "-q", &r]);
        assert!(
            o.status.success(),
            "docker pull {r}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let o = docker(&["run", "--rm", &r]);
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "hello from s3dock fixture\n"
        );
    }
}

/// `--builder podman`: the same git-stable tag, and `podman save` streamed into push.
#[test]
fn build_with_podman() {
    if !require("podman", have_command("podman")) {
        return;
    }
    let store = TestStore::local();
    let app = app_name();
    let (repo, hash) = scratch_repo("from podman");
    let image = format!("{app}:20250721-2118-{}", &hash[..7]);
    struct PodmanCleanup(String);
    impl Drop for PodmanCleanup {
        fn drop(&mut self) {
            let _ = Command::new("podman")
                .args(["rmi", "-f", &format!("localhost/{}", self.0)])
                .output();
        }
    }
    let _cleanup = PodmanCleanup(image.clone());
    let mut c = rcmd(&store, &["build", &app, "--builder", "podman", "--push"]);
    c.current_dir(repo.path());
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), image);
    let list = ok_json(&store, &["list", &app]);
    assert_eq!(list["images"][0]["commit"], hash.as_str(), "{list}");
    // The pulled image carries the commit as its revision label.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("i.tar");
    ok(&store, &["-q", "pull", &image, "-o", out.to_str().unwrap()]);
    let data = std::fs::read(&out).unwrap();
    let s = summarize_archive(&data);
    assert_eq!(s[0].repo_tags, std::slice::from_ref(&image));
    let mut files = BTreeMap::new();
    for e in tar::Archive::new(&data[..]).entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().to_string_lossy().into_owned();
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut v).unwrap();
        files.insert(p, v);
    }
    let m: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let cfg: serde_json::Value =
        serde_json::from_slice(&files[m[0]["Config"].as_str().unwrap()]).unwrap();
    assert_eq!(
        cfg["config"]["Labels"]["org.opencontainers.image.revision"],
        hash.as_str()
    );
}

// ------------------------------------------------------------------ versions

fn versions_out_of_order(store: &TestStore) {
    let app = app_name();
    let tags = [
        "20250720-1045-def5678",
        "20250721-2118-f7a5a27",
        "20250722-0900-0123abc",
    ];
    let mut digests = Vec::new();
    for (t, (archive, comp)) in tags.iter().zip(VARIANTS) {
        digests.push(push_tiny(store, &format!("{app}:{t}"), archive, comp));
    }
    ok(store, &["tag", &format!("{app}:{}", tags[1]), "v1.2.0"]);
    ok(store, &["tag", &format!("{app}:{}", tags[0]), "v1.1.5"]);
    ok(store, &["tag", &format!("{app}:{}", tags[0]), "v1.1.5"]); // same: a no-op
    ok(store, &["tag", &format!("{app}:v1.2.0"), "v1.2.0-rc.1"]); // alias of a version
    let list = ok_json(store, &["list", &app]);
    let vs: Vec<&str> = list["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(
        vs,
        ["v1.2.0", "v1.2.0-rc.1", "v1.1.5"],
        "semver order: {list}"
    );
    assert_eq!(list["images"].as_array().unwrap().len(), 3, "{list}");
    // One v-style per app.
    fails(
        store,
        &["tag", &format!("{app}:{}", tags[2]), "1.3.0"],
        "use v1.3.0",
    );

    ok(store, &["promote", &app, "v1.2.0", "production"]);
    ok(
        store,
        &["promote", &format!("{app}:{}", tags[0]), "staging"],
    );
    assert_eq!(
        ok(store, &["current", &app, "production"]).trim(),
        format!("{app}:{}", tags[1])
    );
    // Moving a version needs --force; environments following it move with it.
    fails(
        store,
        &["tag", &format!("{app}:{}", tags[2]), "v1.2.0"],
        "use --force to move it",
    );
    ok(
        store,
        &["tag", "--force", &format!("{app}:{}", tags[2]), "v1.2.0"],
    );
    assert_eq!(
        ok(store, &["current", &app, "production"]).trim(),
        format!("{app}:{}", tags[2])
    );
    assert_eq!(
        registry_tag(store, &app, "production").as_deref(),
        Some(digests[2].as_str())
    );
    assert_eq!(
        registry_tag(store, &app, "v1.2.0").as_deref(),
        Some(digests[2].as_str())
    );
    assert_eq!(
        registry_tag(store, &app, "staging").as_deref(),
        Some(digests[0].as_str())
    );
    // The old target stays pullable by digest.
    assert_eq!(
        pull_digest(store, &format!("{app}@{}", digests[1])).as_deref(),
        Some(digests[1].as_str())
    );
    // staging → production copies what staging runs.
    ok(store, &["promote", &app, "staging", "production"]);
    let cur = ok_json(store, &["current", &app, "production"]);
    assert_eq!(cur["image_tag"], tags[0]);
    assert_eq!(cur["generation"], 2);

    let moved = history(store, &app, &["--event", "tag"]);
    assert_eq!(moved.len(), 4, "{moved:?}"); // v1.2.0, v1.1.5, v1.2.0-rc.1, the move
    assert_eq!(moved[0]["target"]["version"], "v1.2.0");
    assert_eq!(moved[0]["previous"]["image_tag"], tags[1]);
    assert_eq!(moved[0]["previous"]["digest"], digests[1].as_str());
    let promos = history(store, &app, &["--event", "promote"]);
    assert_eq!(promos.len(), 3);
    assert_eq!(promos[0]["previous"]["target"]["name"], "v1.2.0");
    // Filters: a future month has nothing; this month has everything.
    assert!(history(store, &app, &["--since", "2999-01"]).is_empty());
    let all = history(store, &app, &["--since", "2000-01"]);
    assert_eq!(all.len(), 3 + 4 + 3, "{all:?}");
    assert_eq!(history(store, &app, &["-n", "2"]).len(), 2);
    let text = ok(store, &["history", &app]);
    assert_eq!(text.lines().count(), 10, "{text}");
    assert!(text.lines().next().unwrap().contains("promote"), "{text}");
}

#[test]
fn versions_out_of_order_on_dir_store() {
    versions_out_of_order(&TestStore::local());
}

#[test]
fn versions_out_of_order_on_moto() {
    if let Some(s) = TestStore::s3("moto") {
        versions_out_of_order(&s);
    }
}

// ------------------------------------------------------------------ concurrency

/// N promote processes at once: every promotion is in the audit trail, their
/// generations are 1..=N with each event's previous state being the one before it,
/// and the pointer (and its registry tag) ends at the last one. On a server that
/// ignores conditional writes (`atomic` false) nothing of that holds: every process
/// must say so instead, and the pointer still names one of the images.
fn concurrent_promotions(store: &TestStore, atomic: bool) {
    let app = app_name();
    let mut digests = BTreeMap::new();
    for (i, (archive, comp)) in VARIANTS.iter().enumerate() {
        let tag = format!("img{i}");
        digests.insert(
            tag.clone(),
            push_tiny(store, &format!("{app}:{tag}"), archive, comp),
        );
    }
    let children: Vec<_> = digests
        .keys()
        .map(|tag| {
            rcmd(
                store,
                &["-q", "promote", &format!("{app}:{tag}"), "production"],
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{err}");
        let warned = err.contains("this S3 server ignores conditional writes");
        assert_eq!(warned, !atomic, "[{}] {err}", store.kind);
    }
    if !atomic {
        let cur = ok_json(store, &["current", &app, "production"]);
        assert!(
            digests.values().any(|d| cur["digest"] == d.as_str()),
            "{cur}"
        );
        return;
    }
    let n = digests.len() as u64;
    let events = history(store, &app, &["--event", "promote"]);
    assert_eq!(
        events.len() as u64,
        n,
        "one event per promotion: {events:#?}"
    );
    let by_gen: BTreeMap<u64, &serde_json::Value> = events
        .iter()
        .map(|e| (e["target"]["generation"].as_u64().unwrap(), e))
        .collect();
    assert_eq!(
        by_gen.keys().copied().collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>(),
        "generations must be 1..=N, none lost or repeated"
    );
    let names: BTreeSet<&str> = events
        .iter()
        .map(|e| e["target"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len() as u64, n, "every promotion recorded once");
    for g in 2..=n {
        let prev = &by_gen[&g]["previous"];
        assert_eq!(prev["generation"], g - 1);
        assert_eq!(
            prev["target"],
            by_gen[&(g - 1)]["target"]["name"]
                .as_str()
                .map(|s| serde_json::json!({"kind": "image", "name": s}))
                .unwrap()
        );
    }
    assert!(by_gen[&1]["previous"].is_null());
    let cur = ok_json(store, &["current", &app, "production"]);
    let last = by_gen[&n];
    assert_eq!(cur["generation"], n);
    assert_eq!(cur["image_tag"], last["target"]["name"]);
    let want = &digests[last["target"]["name"].as_str().unwrap()];
    assert_eq!(cur["digest"], want.as_str());
    assert_eq!(
        registry_tag(store, &app, "production").as_deref(),
        Some(want.as_str())
    );
}

#[test]
fn concurrent_promotions_on_moto_lose_nothing() {
    if let Some(s) = TestStore::s3("moto") {
        concurrent_promotions(&s, true);
    }
}

#[test]
fn concurrent_promotions_on_dir_store_lose_nothing() {
    concurrent_promotions(&TestStore::local(), true);
}

#[test]
fn concurrent_promotions_on_garage_warn() {
    if let Some(s) = TestStore::s3("garage") {
        concurrent_promotions(&s, false);
    }
}

// ------------------------------------------------------------------ push metadata

#[test]
fn push_records_metadata_and_guards_tags() {
    let store = TestStore::local();
    let app = app_name();
    let r = format!("{app}:20250720-1045-def5678");
    let d1 = push_tiny(&store, &r, "docker25-tiny.tar", "gzip");
    // Same content again: a no-op that says so, and no second event.
    let o = run(
        &store,
        &[
            "push",
            "-i",
            fixture("docker25-tiny.tar").to_str().unwrap(),
            &r,
        ],
    );
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("nothing changed"));
    assert_eq!(history(&store, &app, &[]).len(), 1);
    let dir = store.dir.as_ref().unwrap().path();
    let rec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join(format!(
            "s3dock/apps/{app}/_images/20250720-1045-def5678.json"
        )))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(rec["schemaVersion"], 1);
    assert_eq!(rec["kind"], "image");
    assert_eq!(rec["digest"], d1.as_str());
    assert_eq!(rec["compression"], "gzip");
    assert_eq!(rec["platform"], "linux/amd64");
    assert_eq!(rec["pushed_by"]["name"], "release-test");
    assert_eq!(
        rec["git"]["commit"], "def5678",
        "commit from the git-stable tag"
    );
    assert_eq!(rec["layers"].as_array().unwrap().len(), 2);

    // --no-clobber refuses before pushing anything.
    fails(
        &store,
        &[
            "push",
            "--no-clobber",
            "-i",
            fixture("docker25.tar").to_str().unwrap(),
            &r,
        ],
        "--no-clobber refuses",
    );
    assert_eq!(
        registry_tag(&store, &app, "20250720-1045-def5678").as_deref(),
        Some(d1.as_str())
    );
    // Different content: the old manifest is archived and stays pullable by digest.
    let d2 = push_tiny(&store, &r, "docker25-tiny.tar", "none");
    assert_ne!(d1, d2);
    let events = history(&store, &app, &["--event", "push"]);
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["previous"]["digest"], d1.as_str());
    assert_eq!(events[0]["previous"]["archived"], true);
    let rec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join(format!(
            "s3dock/apps/{app}/_images/20250720-1045-def5678.json"
        )))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(rec["archived"][0]["digest"], d1.as_str());
    assert_eq!(
        pull_digest(&store, &format!("{app}@{d1}")).as_deref(),
        Some(d1.as_str())
    );

    // Environments and versions move only with promote and tag.
    ok(&store, &["tag", &r, "v2.0.0"]);
    ok(&store, &["promote", &r, "production"]);
    for (tag, msg) in [
        ("production", "s3dock promote"),
        ("v2.0.0", "s3dock tag --force"),
    ] {
        fails(
            &store,
            &[
                "push",
                "-i",
                fixture("docker25.tar").to_str().unwrap(),
                &format!("{app}:{tag}"),
            ],
            msg,
        );
    }
    // list: apps, and one app.
    let apps = ok_json(&store, &["list"]);
    assert_eq!(apps["apps"][0]["app"], app.as_str());
    assert_eq!(apps["apps"][0]["images"], 1);
    assert_eq!(apps["apps"][0]["versions"], 1);
    assert_eq!(apps["apps"][0]["environments"][0], "production");
    let text = ok(&store, &["list", &app]);
    assert!(
        text.contains("20250720-1045-def5678") && text.contains("def5678"),
        "{text}"
    );
    assert!(
        text.contains("v2.0.0") && text.contains("production"),
        "{text}"
    );
}

// ------------------------------------------------------------------ dirty trees

#[test]
fn dirty_tree_is_refused_with_the_files_listed() {
    let store = TestStore::local();
    let (repo, _) = scratch_repo("dirty");
    let p = repo.path();
    let build = |extra: &[&str]| {
        let mut a = vec!["build", "dirtyapp", "--push"];
        a.extend_from_slice(extra);
        let mut c = rcmd(&store, &a);
        c.current_dir(p);
        c.output().unwrap()
    };
    // Ignored files do not count; this would proceed to docker (so check with stamp).
    std::fs::write(p.join("build.log"), "x").unwrap();
    let mut c = rcmd(&store, &["stamp"]);
    c.current_dir(p);
    assert!(c.output().unwrap().status.success());

    std::fs::write(p.join("message.txt"), "changed\n").unwrap();
    std::fs::write(p.join("untracked.txt"), "new\n").unwrap();
    std::fs::write(p.join("staged.txt"), "staged\n").unwrap();
    git(p, &["add", "staged.txt"]);
    let err = check_failure(&build(&[]), "dirty build", "dirty git tree");
    for f in ["M message.txt", "?? untracked.txt", "A  staged.txt"] {
        assert!(err.contains(f), "{f:?} not listed: {err}");
    }
    assert!(!err.contains("build.log"), "{err}");
    let mut c = rcmd(&store, &["stamp"]);
    c.current_dir(p);
    check_failure(&c.output().unwrap(), "dirty stamp", "dirty git tree");
    let mut c = rcmd(&store, &["stamp", "--allow-dirty"]);
    c.current_dir(p);
    assert!(c.output().unwrap().status.success());
    // Nothing reached the store.
    assert!(store.keys().is_empty(), "{:?}", store.keys());

    let not_git = tempfile::tempdir().unwrap();
    let mut c = rcmd(
        &store,
        &["build", "x", "--context", not_git.path().to_str().unwrap()],
    );
    check_failure(
        &c.output().unwrap(),
        "no repo",
        "is not in a git repository",
    );
}

// ------------------------------------------------------------------ errors

#[test]
fn every_error_path_is_one_clear_line() {
    let store = TestStore::local();
    let app = app_name();
    let r = format!("{app}:20250720-1045-def5678");
    push_tiny(&store, &r, "docker25-tiny.tar", "gzip");
    ok(&store, &["tag", &r, "v1.0.0"]);
    ok(&store, &["promote", &r, "production"]);
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["current".into(), "nosuchapp".into(), "production".into()],
            "app nosuchapp not found",
        ),
        (
            vec!["current".into(), app.clone(), "qa".into()],
            "environment qa of",
        ),
        (
            vec!["current".into(), app.clone(), "qa".into()],
            "(environments: production)",
        ),
        (
            vec!["promote".into(), app.clone(), "v9.9.9".into(), "qa".into()],
            "version v9.9.9 of",
        ),
        (
            vec!["promote".into(), format!("{app}:nosuchtag"), "qa".into()],
            "image tag nosuchtag of",
        ),
        (
            vec!["promote".into(), "nosuchapp:v1.0.0".into(), "qa".into()],
            "app nosuchapp not found",
        ),
        (
            vec!["promote".into(), r.clone(), "Prod".into()],
            "invalid environment name",
        ),
        (
            vec!["promote".into(), r.clone(), "v1.0.0".into()],
            "invalid environment name",
        ),
        (
            vec!["promote".into(), app.clone(), "qa".into()],
            "must be APP:TAG",
        ),
        (
            vec!["tag".into(), r.clone(), "1.2".into()],
            "not a semantic version",
        ),
        (
            vec!["tag".into(), r.clone(), "v1.2.0+build.5".into()],
            "build metadata",
        ),
        (
            vec!["tag".into(), r.clone(), "latest".into()],
            "invalid version",
        ),
        (
            vec!["tag".into(), format!("{app}:production"), "v2.0.0".into()],
            "is an environment",
        ),
        (
            vec!["tag".into(), format!("{app}:nosuchtag"), "v2.0.0".into()],
            "image tag nosuchtag of",
        ),
        (
            vec!["tag".into(), "nosuchapp:x".into(), "v2.0.0".into()],
            "app nosuchapp not found",
        ),
        (
            vec!["tag".into(), r.clone(), "20250720-1045-def5678".into()],
            "invalid version",
        ),
        (
            vec!["list".into(), "nosuchapp".into()],
            "app nosuchapp not found",
        ),
        (
            vec!["history".into(), "nosuchapp".into()],
            "app nosuchapp not found",
        ),
        (
            vec![
                "history".into(),
                app.clone(),
                "--since".into(),
                "July".into(),
            ],
            "invalid --since",
        ),
        (
            vec![
                "history".into(),
                app.clone(),
                "--event".into(),
                "deploys".into(),
            ],
            "unknown event",
        ),
        (
            vec![
                "pull".into(),
                app.clone(),
                "nowhere".into(),
                "-o".into(),
                "/tmp/s3dock-never-written.tar".into(),
            ],
            "no environment, version or image tag",
        ),
        (
            vec!["current".into(), "Bad:x".into(), "production".into()],
            "invalid app name",
        ),
    ];
    for (args, msg) in &cases {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        fails(&store, &a, msg);
    }
    // Config errors.
    let cfgdir = tempfile::tempdir().unwrap();
    let cfg = cfgdir.path().join("config.toml");
    let with_cfg = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = rcmd(&store, args);
        c.env("S3DOCK_CONFIG", &cfg);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    check_failure(
        &with_cfg(&["list"], &[("S3DOCK_PROFILE", "prod")]),
        "missing config",
        "S3DOCK_PROFILE=prod but there is no config file",
    );
    // No config file is not an error for `config list`: it says so and exits 0.
    let o = with_cfg(&["config", "list"], &[]);
    assert!(o.status.success(), "config list without a file must exit 0");
    assert!(o.stdout.is_empty());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no config file at"));
    std::fs::write(&cfg, "[profiles.ci]\nstore = \"/tmp/x\"\n").unwrap();
    check_failure(
        &with_cfg(&["--profile", "prod", "list"], &[]),
        "unknown profile",
        "no s3dock profile \"prod\"",
    );
    std::fs::write(&cfg, "[profiles.ci]\naws_secret_access_key = \"hunter2\"\n").unwrap();
    let err = check_failure(
        &with_cfg(&["list"], &[]),
        "secret in config",
        "invalid config file",
    );
    assert!(!err.contains("hunter2"), "{err}");
    std::fs::write(&cfg, "[profiles.ci]\ncompression = \"lz4\"\n").unwrap();
    check_failure(
        &with_cfg(&["list"], &[]),
        "bad value",
        "unknown compression",
    );
}

// ------------------------------------------------------------------ config

fn s3dock_bare(cfg: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_s3dock"));
    c.args(args)
        .env("S3DOCK_CONFIG", cfg)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null());
    for v in [
        "S3DOCK_STORE",
        "S3DOCK_PROFILE",
        "S3DOCK_JOBS",
        "S3DOCK_ENDPOINT",
        "S3DOCK_REGION",
        "S3DOCK_ROOT_DIR",
        "S3DOCK_ACTOR",
        "S3DOCK_COMPRESSION",
        "S3DOCK_BUILDER",
        "AWS_PROFILE",
    ] {
        c.env_remove(v);
    }
    c
}

fn bare_ok(mut c: impl std::borrow::BorrowMut<Command>) -> String {
    let c = c.borrow_mut();
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn config_profiles_and_precedence() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("s3dock/config.toml");
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    // init from flags: a commented file; a second profile is added beside the first.
    bare_ok(s3dock_bare(
        &cfg,
        &[
            "--profile",
            "ci",
            "--store",
            a.to_str().unwrap(),
            "--jobs",
            "7",
            "--actor",
            "ci-bot",
            "config",
            "init",
            "--compression",
            "zstd",
            "--builder",
            "podman",
        ],
    ));
    bare_ok(s3dock_bare(
        &cfg,
        &[
            "--store",
            b.to_str().unwrap(),
            "--endpoint",
            "https://user:s3cr3t@objects.example/",
            "config",
            "init",
        ],
    ));
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(
        text.contains("[profiles.ci]") && text.contains("[profiles.default]"),
        "{text}"
    );
    assert!(
        text.contains("# region = "),
        "unset keys are shown commented: {text}"
    );
    let o = s3dock_bare(&cfg, &["--profile", "ci", "config", "init"])
        .output()
        .unwrap();
    check_failure(&o, "init twice", "already exists");

    let list = bare_ok(s3dock_bare(&cfg, &["config", "list"]));
    assert!(
        list.contains("* default") && list.contains("  ci"),
        "{list}"
    );

    // show: every setting with its source; secrets never printed.
    let show = |args: &[&str], env: &[(&str, &str)]| -> serde_json::Value {
        let mut cmd = s3dock_bare(&cfg, &[]);
        cmd.args(args).args(["--json", "config", "show"]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        serde_json::from_str(&bare_ok(&mut cmd)).unwrap()
    };
    let s = show(&["--profile", "ci"], &[]);
    assert_eq!(s["profile"], "ci");
    assert_eq!(s["profile_chosen_by"], "flag --profile");
    assert_eq!(s["settings"]["store"]["value"], a.to_str().unwrap());
    assert_eq!(s["settings"]["store"]["source"], "profile ci");
    assert_eq!(s["settings"]["jobs"]["value"], "7");
    assert_eq!(s["settings"]["compression"]["value"], "zstd");
    assert_eq!(s["settings"]["builder"]["value"], "podman");
    assert_eq!(s["settings"]["actor"]["value"], "ci-bot");
    assert_eq!(s["settings"]["region"]["source"], "default");
    // env beats profile, flag beats env.
    let s = show(&[], &[("S3DOCK_PROFILE", "ci"), ("S3DOCK_JOBS", "3")]);
    assert_eq!(s["profile_chosen_by"], "env S3DOCK_PROFILE");
    assert_eq!(s["settings"]["jobs"]["value"], "3");
    assert_eq!(s["settings"]["jobs"]["source"], "env S3DOCK_JOBS");
    let s = show(
        &["--jobs", "9"],
        &[("S3DOCK_PROFILE", "ci"), ("S3DOCK_JOBS", "3")],
    );
    assert_eq!(s["settings"]["jobs"]["value"], "9");
    assert_eq!(s["settings"]["jobs"]["source"], "flag --jobs");
    // No profile selected: the default profile.
    let s = show(&[], &[]);
    assert_eq!(s["profile"], "default");
    assert_eq!(s["settings"]["store"]["value"], b.to_str().unwrap());
    let text = bare_ok(s3dock_bare(&cfg, &["config", "show"]));
    assert!(
        !text.contains("s3cr3t") && text.contains("objects.example"),
        "{text}"
    );
    assert!(!show(&[], &[]).to_string().contains("s3cr3t"));

    // The profile's store and compression are really used; flags and env override them.
    let push = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = s3dock_bare(&cfg, args);
        cmd.args([
            "-q",
            "push",
            "-i",
            fixture("docker25-tiny.tar").to_str().unwrap(),
            "app:1",
        ]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        bare_ok(&mut cmd);
    };
    push(&["--profile", "ci"], &[]);
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.join("s3dock/apps/app/_images/1.json")).unwrap())
            .unwrap();
    assert_eq!(rec["compression"], "zstd");
    assert_eq!(rec["pushed_by"]["name"], "ci-bot");
    push(
        &["--profile", "ci"],
        &[("S3DOCK_STORE", c.to_str().unwrap())],
    );
    assert!(c.join("s3dock/apps/app/_images/1.json").exists());
    let d = tmp.path().join("d");
    push(
        &["--profile", "ci", "--store", d.to_str().unwrap()],
        &[("S3DOCK_STORE", c.to_str().unwrap())],
    );
    assert!(d.join("s3dock/apps/app/_images/1.json").exists());

    // XDG_CONFIG_HOME is where the file lives without S3DOCK_CONFIG.
    let mut cmd = s3dock_bare(&cfg, &["--json", "config", "show"]);
    cmd.env_remove("S3DOCK_CONFIG")
        .env("XDG_CONFIG_HOME", tmp.path());
    let s: serde_json::Value = serde_json::from_str(&bare_ok(&mut cmd)).unwrap();
    assert_eq!(s["config_file"], cfg.to_str().unwrap());
    assert_eq!(s["profile"], "default");

    // No config file: --profile NAME is the AWS profile (compatibility).
    let none = tmp.path().join("none.toml");
    let out = bare_ok(s3dock_bare(
        &none,
        &["--profile", "legacy-aws", "--json", "config", "show"],
    ));
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["profile"], serde_json::Value::Null);
    assert_eq!(s["settings"]["aws_profile"]["value"], "legacy-aws");
}

// ------------------------------------------------------------------ hostile records

/// Reads an object of the store (relative to its root); None when absent.
fn get_object(store: &TestStore, key: &str) -> Option<Vec<u8>> {
    if let Some(d) = &store.dir {
        return std::fs::read(d.path().join(key)).ok();
    }
    let (endpoint, bucket, prefix) = store.s3.as_ref().unwrap();
    let out = Command::new(venv_python())
        .arg("-c")
        .arg(format!(
            "import boto3,sys\nc=boto3.client('s3',endpoint_url='{endpoint}',region_name='us-east-1')\n\
             sys.stdout.buffer.write(c.get_object(Bucket='{bucket}',Key='{prefix}/'+sys.argv[1])['Body'].read())\n"
        ))
        .arg(key)
        .output()
        .unwrap();
    out.status.success().then_some(out.stdout)
}

/// Writes an object into the store behind s3dock's back (an independent client on S3).
fn put_object(store: &TestStore, key: &str, data: &[u8]) {
    if let Some(d) = &store.dir {
        let p = d.path().join(key);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
        return;
    }
    let (endpoint, bucket, prefix) = store.s3.as_ref().unwrap();
    let mut child = Command::new(venv_python())
        .arg("-c")
        .arg(format!(
            "import boto3,sys\nc=boto3.client('s3',endpoint_url='{endpoint}',region_name='us-east-1')\n\
             c.put_object(Bucket='{bucket}',Key='{prefix}/'+sys.argv[1],Body=sys.stdin.buffer.read())\n"
        ))
        .arg(key)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(data).unwrap();
    assert!(child.wait().unwrap().success(), "boto3 put of {key} failed");
}

/// The JSON object at `key`, changed by `f`, written back.
fn edit_json(store: &TestStore, key: &str, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_slice(&get_object(store, key).unwrap_or_else(|| panic!("no {key}")))
            .unwrap();
    f(&mut v);
    put_object(store, key, &serde_json::to_vec(&v).unwrap());
}

/// No terminal control sequences or raw control characters in what s3dock printed.
fn assert_no_controls(what: &str, bytes: &[u8]) {
    let s = String::from_utf8_lossy(bytes);
    assert!(
        !s.chars().any(|c| c.is_control() && c != '\n'),
        "{what} printed control characters: {s:?}"
    );
}

/// The `s3dock: warning:` lines of a run's stderr.
fn warnings(o: &Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| l.starts_with("s3dock: warning:"))
        .map(String::from)
        .collect()
}

/// Records and events written by someone else: a newline in a version's image tag,
/// escape sequences in an environment and an actor, a non-ASCII commit, a truncated
/// audit event. `list` and `history` show the good ones, print one escaped warning
/// line per bad one, and never a control character; `tag`/`promote` of the image with
/// the hostile commit succeed and are audited (the old code panicked on all three).
fn hostile_records(store: &TestStore) {
    let app = app_name();
    let r = format!("{app}:20250720-1045-def5678");
    push_tiny(store, &r, "docker25-tiny.tar", "gzip");
    ok(store, &["tag", &r, "v1.0.0"]);
    ok(store, &["tag", &r, "v1.1.0"]);
    ok(store, &["promote", &r, "staging"]);
    ok(store, &["promote", &r, "production"]);
    let base = format!("s3dock/apps/{app}");
    // A newline in a version's image tag.
    edit_json(store, &format!("{base}/_versions/v1.1.0.json"), |v| {
        v["image_tag"] = "20250720-1045-def5678\nPWNED".into();
    });
    // An escape sequence in an environment's name.
    edit_json(store, &format!("{base}/_envs/staging.json"), |v| {
        v["env"] = "staging\u{1b}]0;owned\u{7}".into();
    });
    // A non-ASCII commit in the image record.
    edit_json(
        store,
        &format!("{base}/_images/20250720-1045-def5678.json"),
        |v| v["git"]["commit"] = "ééééééééé".into(),
    );
    // An escape sequence in an event's actor (free text: shown escaped, not refused),
    // and a truncated event.
    let events = audit_keys(store, &app);
    assert_eq!(events.len(), 5, "{events:?}");
    let tag_event = events.iter().find(|k| k.contains("-tag-")).unwrap();
    edit_json(store, tag_event, |v| {
        v["actor"]["name"] = "mallory\u{1b}[2J\u{1b}[31m".into();
    });
    let month = tag_event.rsplit('/').nth(1).unwrap();
    let bad_event = format!("s3dock/audit/{app}/{month}/20200101-000000-push-0000000.json");
    put_object(store, &bad_event, b"{\"schemaVersion\": 1, \"kind\": \"ev");

    // list: the good records, one warning per bad one, nothing raw.
    for json in [false, true] {
        let mut args = vec!["list", app.as_str()];
        if json {
            args.insert(0, "--json");
        }
        let o = run(store, &args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "[{}] list {json}: {err}", store.kind);
        assert_no_controls("list", &o.stdout);
        assert_no_controls("list", &o.stderr);
        let w = warnings(&o);
        assert_eq!(
            w.len(),
            3,
            "[{}] one line per bad record: {err}",
            store.kind
        );
        for key in ["_versions/v1.1.0.json", "_envs/staging.json", "_images/"] {
            assert!(w.iter().any(|l| l.contains(key)), "{key} not named: {w:?}");
        }
        assert!(w.iter().any(|l| l.contains("\\n")), "{w:?}");
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.contains("v1.0.0") && out.contains("production"),
            "{out}"
        );
        assert!(!out.contains("v1.1.0") && !out.contains("PWNED"), "{out}");
        if json {
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(v["versions"].as_array().unwrap().len(), 1);
            assert_eq!(v["environments"].as_array().unwrap().len(), 1);
            // The image is still listed; its commit comes from the git-stable tag.
            assert_eq!(v["images"][0]["commit"], "def5678");
        }
    }
    // All apps: still listed.
    let o = run(store, &["list"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&app));

    // history: the good events, the hostile actor escaped, one warning for the bad one.
    for json in [false, true] {
        let mut args = vec!["history", app.as_str()];
        if json {
            args.insert(0, "--json");
        }
        let o = run(store, &args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "[{}] history: {err}", store.kind);
        let w = warnings(&o);
        assert_eq!(w.len(), 1, "{err}");
        assert!(w[0].contains("20200101-000000-push-0000000"), "{w:?}");
        assert_no_controls("history", &o.stderr);
        let out = String::from_utf8_lossy(&o.stdout);
        if json {
            assert_eq!(
                serde_json::from_str::<serde_json::Value>(&out)
                    .unwrap()
                    .as_array()
                    .unwrap()
                    .len(),
                5
            );
        } else {
            assert_no_controls("history", &o.stdout);
            assert_eq!(out.lines().count(), 5, "{out}");
            assert!(out.contains("mallory\\u{1b}[2J"), "{out}");
        }
    }

    // tag and promote of the image whose record has the hostile commit: they succeed,
    // and each is in the audit trail.
    ok(store, &["tag", &r, "v2.0.0"]);
    ok(store, &["promote", &format!("{app}:v2.0.0"), "qa"]);
    assert_eq!(audit_keys(store, &app).len(), 8);
    let h = history(store, &app, &["-n", "2"]);
    assert_eq!(h[0]["event"], "promote");
    assert_eq!(h[1]["event"], "tag");
    // The record's commit is refused; the git-stable tag's is used.
    assert_eq!(h[1]["git_commit"], "def5678", "{h:?}");
}

#[test]
fn hostile_records_on_dir_store() {
    hostile_records(&TestStore::local());
}

#[test]
fn hostile_records_on_moto() {
    if let Some(s) = TestStore::s3("moto") {
        hostile_records(&s);
    }
}

/// Release commands take registry-qualified app names (`localhost:5000/team/api`) as docker
/// writes them, keep their records under the store's repository name, and print them back
/// as typed.
fn qualified_app_names(store: &TestStore) {
    let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let app = format!("localhost:5000/team{id}/api");
    let repo = format!("localhost__5000/team{id}/api");
    let tag = "20250721-2118-f7a5a27";
    let image = format!("{app}:{tag}");
    let digest = push_tiny(store, &image, "docker25-tiny.tar", "gzip");
    ok(store, &["tag", &image, "v1.0.0"]);
    ok(store, &["promote", &app, "v1.0.0", "production"]);
    ok(store, &["promote", &image, "staging"]);
    assert_eq!(ok(store, &["current", &app, "production"]).trim(), image);
    assert_eq!(ok(store, &["current", &app, "staging"]).trim(), image);
    // The stored name is accepted as well, and names the same app.
    assert_eq!(ok(store, &["current", &repo, "staging"]).trim(), image);
    let list = ok_json(store, &["list", &app]);
    assert_eq!(list["app"], app.as_str(), "{list}");
    assert_eq!(list["versions"][0]["version"], "v1.0.0", "{list}");
    let all = ok_json(store, &["list"]);
    assert!(
        all["apps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["app"] == app.as_str()),
        "{all}"
    );
    let events: Vec<String> = history(store, &app, &[])
        .iter()
        .map(|e| e["event"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(events.len(), 4, "push, tag, two promotions: {events:?}");
    assert_eq!(
        pull_digest(store, &format!("{app}:production")),
        Some(digest.clone())
    );
    assert_eq!(registry_tag(store, &repo, "v1.0.0"), Some(digest));
    assert!(
        store
            .keys()
            .iter()
            .any(|k| k.starts_with(&format!("s3dock/apps/{repo}/_envs/production"))),
        "records under the repository name"
    );
    fails(
        store,
        &[
            "current",
            &format!("Localhost:5000/team{id}/api"),
            "production",
        ],
        "invalid app name",
    );
}

#[test]
fn qualified_app_names_on_dir_store() {
    qualified_app_names(&TestStore::local());
}

#[test]
fn qualified_app_names_on_moto() {
    if let Some(store) = TestStore::s3("moto") {
        qualified_app_names(&store);
    }
}

// ------------------------------------------------------------------ conditional writes

/// Commands that move tags or records ask the store whether it honours conditional
/// writes: on Garage (which ignores them) push, tag and promote warn once each and say
/// `"conditional_writes": "ignored"` in --json; moto and the directory store honour
/// them, with no warning. The probe leaves no object behind.
#[test]
fn conditional_writes_are_probed_and_a_server_that_ignores_them_is_named() {
    let mut stores = vec![(TestStore::local(), "honoured")];
    stores.extend(TestStore::s3("moto").map(|s| (s, "honoured")));
    stores.extend(TestStore::s3("garage").map(|s| (s, "ignored")));
    const WARNING: &str = "this S3 server ignores conditional writes";
    for (store, want) in &stores {
        let app = app_name();
        let archive = fixture("docker25-tiny.tar");
        let steps: [&[&str]; 3] = [
            &[
                "push",
                "-i",
                archive.to_str().unwrap(),
                &format!("{app}:b1"),
            ],
            &["tag", &format!("{app}:b1"), "v1.0.0"],
            &["promote", &format!("{app}:v1.0.0"), "production"],
        ];
        for args in steps {
            let mut a = vec!["--json"];
            a.extend_from_slice(args);
            let o = run(store, &a);
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(o.status.success(), "[{}] {args:?}: {err}", store.kind);
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(v["conditional_writes"], *want, "[{}] {args:?}", store.kind);
            let warnings = err.matches(WARNING).count();
            let expected = usize::from(*want == "ignored");
            assert_eq!(warnings, expected, "[{}] {args:?}: {err}", store.kind);
        }
        assert!(
            !store.keys().iter().any(|k| k.contains("s3dock/probe/")),
            "[{}] a probe object was left behind",
            store.kind
        );
    }
}
