//! Current engines (issue 15): Docker Engine 26 with the classic (graph driver) and the containerd
//! image store, beside the machine's Docker 20.10. `scripts/docker26.sh` fetches trixie's packages
//! and starts one daemon per store in a network namespace of its own; `scripts/test.sh` exports
//! where they listen (S3DOCK_DOCKER26_CLI, S3DOCK_DOCKER26_CLASSIC, S3DOCK_DOCKER26_CONTAINERD).
//!
//! What the engines do, asserted here rather than assumed:
//! - Docker 26 `docker save` writes the OCI-layout form (index.json + manifest.json); the classic
//!   store writes uncompressed layers, the containerd store the layers as built (gzip) under an OCI
//!   manifest whose digest is the image ID there.
//! - both 26 stores load zstd layers; 20.10 needs `pull --decompress` for them.
//! - `pull --format oci` (no manifest.json): the containerd store loads it, the classic stores refuse.

mod common;
mod interop_support;

use common::*;
use interop_support::{check, check_pipe, run, run_id, stdout, tool, BuildContext};
use std::process::{Command, Output};

/// One Docker daemon and the CLI that talks to it.
struct Engine {
    label: &'static str,
    cli: String,
    host: Option<String>,
    /// Images this test made on this engine, removed on drop.
    made: std::cell::RefCell<Vec<String>>,
}

impl Engine {
    fn host_engine() -> Option<Engine> {
        let up = Command::new("docker")
            .args(["version", "-f", "{{.Server.Version}}"])
            .output()
            .is_ok_and(|o| o.status.success());
        require("Docker Engine (docker version)", up).then(|| Engine {
            label: "20.10",
            cli: "docker".into(),
            host: None,
            made: Default::default(),
        })
    }

    /// A Docker 26 daemon started by scripts/docker26.sh; `store` is classic or containerd.
    fn docker26(store: &'static str) -> Option<Engine> {
        let var = format!("S3DOCK_DOCKER26_{}", store.to_uppercase());
        let host = std::env::var(&var).ok();
        let cli = std::env::var("S3DOCK_DOCKER26_CLI").ok();
        let e = match (host, cli) {
            (Some(host), Some(cli)) => Some(Engine {
                label: if store == "classic" {
                    "26-classic"
                } else {
                    "26-containerd"
                },
                cli,
                host: Some(host),
                made: Default::default(),
            }),
            _ => None,
        };
        let up = e.as_ref().is_some_and(|e| {
            e.cmd()
                .args(["version", "-f", "{{.Server.Version}}"])
                .output()
                .is_ok_and(|o| o.status.success() && stdout(&o).starts_with("26."))
        });
        require(
            &format!("Docker 26 {store} store ({var}; scripts/docker26.sh start {store})"),
            up,
        )
        .then(|| e.unwrap())
    }

    fn all() -> Vec<Engine> {
        let mut v: Vec<Engine> = Engine::host_engine().into_iter().collect();
        v.extend(Engine::docker26("classic"));
        v.extend(Engine::docker26("containerd"));
        v
    }

    fn cmd(&self) -> Command {
        let mut c = tool(&self.cli);
        match &self.host {
            Some(h) => c.env("DOCKER_HOST", h),
            None => c.env_remove("DOCKER_HOST"),
        };
        c
    }

    fn containerd_store(&self) -> bool {
        self.label == "26-containerd"
    }

    fn loads_zstd(&self) -> bool {
        self.label != "20.10"
    }

    /// Builds `tag` with the classic builder (nothing is pulled); containers get no network.
    fn build(&self, ctx: &BuildContext, tag: &str, dockerfile: &str) {
        std::fs::write(ctx.dir.path().join("Dockerfile"), dockerfile).unwrap();
        self.made.borrow_mut().push(tag.to_string());
        check(
            self.cmd()
                .args(["build", "-q", "--network", "none", "-t", tag])
                .arg(ctx.dir.path())
                .env("DOCKER_BUILDKIT", "0"),
        );
    }

    /// `{{.Id}} {{json .RootFS.Layers}}`, or None when the engine has no such image.
    fn inspect(&self, r: &str) -> Option<(String, Vec<String>)> {
        let out = run(self.cmd().args([
            "image",
            "inspect",
            "-f",
            "{{.Id}} {{json .RootFS.Layers}}",
            r,
        ]));
        let s = stdout(&out);
        let (id, layers) = s.trim().split_once(' ')?;
        out.status
            .success()
            .then(|| (id.to_string(), serde_json::from_str(layers).unwrap()))
    }

    fn rmi(&self, r: &str) {
        check(self.cmd().args(["rmi", r]));
        assert!(
            self.inspect(r).is_none(),
            "[{}] {r} still present",
            self.label
        );
    }

    fn save(&self, refs: &[&str]) -> Command {
        let mut c = self.cmd();
        c.arg("save").args(refs);
        c
    }

    /// `s3dock pull -q ARGS | docker load`, both outputs unchecked.
    fn pull_load(&self, store: &TestStore, args: &[&str]) -> (Output, Output) {
        let mut pull = store.cmd();
        pull.args(["pull", "-q"]).args(args);
        let mut load = self.cmd();
        load.arg("load");
        interop_support::pipe(&mut pull, &mut load)
    }

    fn pull_load_ok(&self, store: &TestStore, args: &[&str], r: &str) {
        self.made.borrow_mut().push(r.to_string());
        let (p, l) = self.pull_load(store, args);
        assert!(
            p.status.success() && l.status.success(),
            "[{}] pull {args:?} | docker load failed: {}{}",
            self.label,
            String::from_utf8_lossy(&p.stderr),
            String::from_utf8_lossy(&l.stderr)
        );
    }

    fn run_image(&self, r: &str) -> String {
        stdout(&check(self.cmd().args([
            "run",
            "--rm",
            "--network",
            "none",
            r,
        ])))
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        for r in self.made.borrow().iter() {
            let _ = run(self.cmd().args(["rmi", "-f", r.as_str()]));
        }
    }
}

/// Several layers with a whiteout; prints a line naming `who`.
fn image_dockerfile(who: &str) -> String {
    format!(
        "FROM scratch\nCOPY rootfs/ /\nCOPY id.txt /id.txt\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo {who} > /who && rm /id.txt\"]\nCMD [\"/bin/busybox\", \"cat\", \"/who\"]\n"
    )
}

/// A build context whose first layer is unique, so a loaded image shares no layer with what
/// the engine already has.
fn context(unique: &str) -> BuildContext {
    let ctx = BuildContext::new();
    ctx.file(
        "id.txt",
        format!("{unique} {}\n", uuid::Uuid::new_v4()).as_bytes(),
    );
    ctx
}

fn peers() -> bool {
    require(
        "busybox-static (/bin/busybox)",
        std::path::Path::new("/bin/busybox").exists(),
    )
}

/// `docker save | s3dock push | s3dock pull | docker load | docker run` on each Docker 26 store,
/// gzip and zstd: same image ID, same RootFS, zstd loads without --decompress.
#[test]
fn docker26_round_trip_both_stores() {
    if !peers() {
        return;
    }
    for e in [Engine::docker26("classic"), Engine::docker26("containerd")]
        .into_iter()
        .flatten()
    {
        for (store, compression) in [(TestStore::local(), "gzip"), (TestStore::local(), "zstd")]
            .into_iter()
            .chain(TestStore::s3("moto").map(|s| (s, "gzip")))
        {
            let r = format!("e{}/rt-{}:{compression}", run_id(), e.label);
            let ctx = context(&r);
            e.build(&ctx, &r, &image_dockerfile(&r));
            let before = e.inspect(&r).unwrap();
            check_pipe(
                &mut e.save(&[&r]),
                store
                    .cmd()
                    .args(["push", "-q", "--compression", compression]),
            );
            e.rmi(&r);
            e.pull_load_ok(&store, &[&r], &r);
            let after = e.inspect(&r).unwrap();
            assert_eq!(after.1, before.1, "[{} {compression}] RootFS", e.label);
            if compression == "gzip" || !e.containerd_store() {
                // The containerd store's ID is the manifest digest: zstd layers make a new one.
                assert_eq!(after.0, before.0, "[{} {compression}] image ID", e.label);
            }
            assert_eq!(e.run_image(&r).trim(), r, "[{}] docker run", e.label);
        }
    }
}

/// The containerd store saves layers compressed as built under an OCI manifest whose digest is
/// the image ID: a push keeps those blobs and that manifest, so `name@sha256:` resolves after the
/// round trip and the loaded image has the same ID.
#[test]
fn docker26_containerd_store_keeps_manifest_digest() {
    let Some(e) = Engine::docker26("containerd").filter(|_| peers()) else {
        return;
    };
    let store = TestStore::local();
    let r = format!("e{}/keep:1", run_id());
    let ctx = context(&r);
    e.build(&ctx, &r, &image_dockerfile("keep"));
    let (id, _) = e.inspect(&r).unwrap();
    let out = check_pipe(
        &mut e.save(&[&r]),
        store.cmd().args(["push", "--json", "-q"]),
    );
    let pushed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let digest = pushed["images"][0]["manifest_digest"].as_str().unwrap();
    assert_eq!(
        digest, id,
        "the stored manifest is the one the engine built"
    );
    e.rmi(&r);
    let (repo, _) = r.rsplit_once(':').unwrap();
    let by_digest = format!("{repo}@{digest}");
    e.pull_load_ok(&store, &[&by_digest, "--tag", &r], &r);
    assert_eq!(e.inspect(&r).unwrap().0, id);
    assert_eq!(e.run_image(&r).trim(), "keep");
    // The engine itself resolves `name@sha256:<digest>` for the loaded image: the containerd
    // store finds an image by digest through its target (the manifest s3dock kept), restricted
    // to images of that repository, so no registry and no RepoDigests record is involved.
    assert_eq!(
        e.inspect(&by_digest).map(|(i, _)| i),
        Some(id.clone()),
        "[{}] docker image inspect {by_digest}",
        e.label
    );
    assert_eq!(
        e.run_image(&by_digest).trim(),
        "keep",
        "docker run {by_digest}"
    );
    let repo_digests = stdout(&check(e.cmd().args([
        "image",
        "inspect",
        "-f",
        "{{json .RepoDigests}}",
        &r,
    ])));
    let repo_digests: Vec<String> = serde_json::from_str(repo_digests.trim()).unwrap();
    assert!(
        repo_digests.iter().any(|d| d.ends_with(&by_digest)),
        "RepoDigests {repo_digests:?} lack {by_digest}"
    );
    // Another repository with the same digest is not this image.
    let other = format!("e{}/not-keep@{digest}", run_id());
    assert!(e.inspect(&other).is_none(), "{other} resolved");
}

/// Images move between the 20.10, 26-classic and 26-containerd engines through the store, in
/// every direction, and run with the same layers.
#[test]
fn images_move_between_engines_in_every_direction() {
    if !peers() {
        return;
    }
    let engines = Engine::all();
    let store = TestStore::local();
    for src in &engines {
        let r = format!("e{}/from-{}:1", run_id(), src.label);
        let ctx = context(&r);
        src.build(&ctx, &r, &image_dockerfile(&r));
        let (_, layers) = src.inspect(&r).unwrap();
        check_pipe(&mut src.save(&[&r]), store.cmd().args(["push", "-q"]));
        src.rmi(&r);
        for dst in &engines {
            dst.pull_load_ok(&store, &[&r], &r);
            assert_eq!(
                dst.inspect(&r).unwrap().1,
                layers,
                "{} -> {}: RootFS",
                src.label,
                dst.label
            );
            assert_eq!(
                dst.run_image(&r).trim(),
                r,
                "{} -> {}",
                src.label,
                dst.label
            );
            dst.rmi(&r);
        }
    }
}

/// `docker save a b c` on Docker 26 (both stores): one push stores every tag, each pulls and runs.
#[test]
fn docker26_multi_image_save() {
    if !peers() {
        return;
    }
    for e in [Engine::docker26("classic"), Engine::docker26("containerd")]
        .into_iter()
        .flatten()
    {
        let store = TestStore::local();
        let base = format!("e{}/multi-{}", run_id(), e.label);
        let (a, b, c) = (
            format!("{base}-a:1"),
            format!("{base}-a:2"),
            format!("{base}-b:1"),
        );
        let ctx = context(&base);
        e.build(&ctx, &a, &image_dockerfile("a"));
        check(e.cmd().args(["tag", a.as_str(), b.as_str()]));
        e.made.borrow_mut().push(b.clone());
        e.build(&ctx, &c, &image_dockerfile("b"));
        check_pipe(&mut e.save(&[&a, &b, &c]), store.cmd().args(["push", "-q"]));
        for r in [&a, &b, &c] {
            e.rmi(r);
        }
        for (r, who) in [(&a, "a"), (&b, "a"), (&c, "b")] {
            e.pull_load_ok(&store, &[r], r);
            assert_eq!(e.run_image(r).trim(), who, "[{}] {r}", e.label);
        }
    }
}

/// `pull --format oci` writes an OCI layout without manifest.json: asserted per engine.
#[test]
fn format_oci_per_engine() {
    if !peers() {
        return;
    }
    let store = TestStore::local();
    let r = format!("e{}/oci:1", run_id());
    let hello = fixture("docker-legacy.tar");
    store.ok(&["push", "-q", &r], Some(&hello));
    for e in Engine::all() {
        let (_, load) = e.pull_load(&store, &[&r, "--format", "oci"]);
        if e.containerd_store() {
            assert!(
                load.status.success(),
                "[{}] {}",
                e.label,
                String::from_utf8_lossy(&load.stderr)
            );
            // An OCI layout with an image-name annotation loads under that name.
            e.made.borrow_mut().push(r.clone());
            assert!(
                e.inspect(&r).is_some(),
                "[{}] loaded but not as {r}",
                e.label
            );
        } else {
            assert!(
                !load.status.success(),
                "[{}] classic store loaded an OCI-only archive",
                e.label
            );
        }
        // --format docker loads everywhere.
        e.pull_load_ok(&store, &[&r], &r);
        assert_eq!(e.run_image(&r).trim(), "hello from s3dock fixture");
        e.rmi(&r);
    }
}

/// zstd layers: the 26 engines load them as stored; 20.10 needs --decompress and says why without it.
#[test]
fn zstd_layers_per_engine() {
    if !peers() {
        return;
    }
    let store = TestStore::local();
    let r = format!("e{}/zst:1", run_id());
    store.ok(
        &["push", "-q", "--compression", "zstd", &r],
        Some(&fixture("docker-legacy.tar")),
    );
    for e in Engine::all() {
        if e.loads_zstd() {
            e.pull_load_ok(&store, &[&r], &r);
        } else {
            let (_, load) = e.pull_load(&store, &[&r]);
            assert!(!load.status.success(), "[{}] loaded zstd layers", e.label);
            e.pull_load_ok(&store, &[&r, "--decompress"], &r);
        }
        assert_eq!(
            e.run_image(&r).trim(),
            "hello from s3dock fixture",
            "[{}]",
            e.label
        );
        e.rmi(&r);
    }
}

/// The engine's `docker save` output is exactly the Docker 25+ form the fixture holds: the
/// fixture `docker25.tar` is made by Docker 26 (fixtures/make.sh), so s3dock reads what the
/// engine writes. Re-saving the fixture's image on the 26 classic engine gives the same files.
#[test]
fn docker25_fixture_is_what_docker26_writes() {
    let Some(e) = Engine::docker26("classic") else {
        return;
    };
    let fixture_bytes = std::fs::read(fixture("docker25.tar")).unwrap();
    let mut load = e.cmd();
    load.args(["load", "-i"]).arg(fixture("docker25.tar"));
    check(&mut load);
    let r = expected("docker25.tar")["images"][0]["RepoTags"][0]
        .as_str()
        .unwrap()
        .to_string();
    e.made.borrow_mut().push(r.clone());
    let out = check(&mut e.save(&[&r]));
    let (want, got) = (tar_files(&fixture_bytes), tar_files(&out.stdout));
    let names = |m: &std::collections::HashMap<String, Vec<u8>>| {
        let mut v: Vec<String> = m.keys().cloned().collect();
        v.sort();
        v
    };
    assert_eq!(names(&got), names(&want));
    for (name, bytes) in &want {
        assert!(
            got[name] == *bytes,
            "{name} differs from what Docker 26 saves"
        );
    }
}

// ------------------------------------------------- skopeo 1.18 and podman 5.4 (trixie chroot)

/// `PROG ARGS` inside the trixie root of scripts/trixie.sh (host /tmp is /tmp there).
fn trixie(prog: &str) -> Command {
    let mut c = tool("bash");
    c.arg(root().join("scripts/trixie.sh")).args(["run", prog]);
    c
}

/// skopeo 1.18.x and podman 5.x from the trixie root: `skopeo version 1.18.0`,
/// `podman version 5.4.2`. Another release there (a newer trixie point release, a root made
/// from another suite) is not what the README's table claims, so it counts as missing.
fn need_trixie() -> bool {
    let version = |prog: &str| {
        let out = run(trixie(prog).arg("--version"));
        if out.status.success() {
            stdout(&out).trim().to_string()
        } else {
            String::new()
        }
    };
    let (skopeo, podman) = (version("skopeo"), version("podman"));
    let ok = skopeo.starts_with("skopeo version 1.18.") && podman.starts_with("podman version 5.");
    require(
        &format!(
            "skopeo 1.18 and podman 5 (scripts/trixie.sh setup; found {skopeo:?}, {podman:?})"
        ),
        ok,
    )
}

/// podman 5 with a private vfs store under /tmp.
struct Podman5 {
    dir: tempfile::TempDir,
}

impl Podman5 {
    fn new() -> Podman5 {
        Podman5 {
            dir: tempfile::tempdir_in("/tmp").unwrap(),
        }
    }

    fn cmd(&self) -> Command {
        let d = self.dir.path();
        let mut c = trixie("podman");
        c.args(["--storage-driver", "vfs", "--events-backend", "none"])
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("run"))
            .arg("--tmpdir")
            .arg(d.join("tmp"));
        c
    }

    fn id(&self, r: &str) -> String {
        let out = check(self.cmd().args(["image", "inspect", "-f", "{{.Id}}", r]));
        format!("sha256:{}", stdout(&out).trim())
    }
}

/// podman 5.4 loads what s3dock pulls (docker and OCI format, gzip and zstd layers) with the same
/// image ID, and s3dock pushes what podman 5.4 saves (docker-archive and oci-archive).
#[test]
fn podman5_loads_pulls_and_saves_pushes() {
    if !need_trixie() {
        return;
    }
    let want = expected("docker25.tar")["images"][0].clone();
    let config = want["ConfigDigest"].as_str().unwrap();
    let store = TestStore::local();
    let r = format!("e{}/pm5:1", run_id());
    store.ok(&["push", "-q", &r], Some(&fixture("docker25.tar")));
    let zr = format!("e{}/pm5:zstd", run_id());
    store.ok(
        &["push", "-q", "--compression", "zstd", &zr],
        Some(&fixture("docker25.tar")),
    );
    let pm = Podman5::new();
    for (src, format) in [(&r, "docker"), (&r, "oci"), (&zr, "docker")] {
        let file = pm.dir.path().join("pulled.tar");
        store.ok(
            &[
                "pull",
                "-q",
                src,
                "--format",
                format,
                "-o",
                file.to_str().unwrap(),
            ],
            None,
        );
        let out = check(pm.cmd().args(["load", "-i"]).arg(&file));
        let loaded = stdout(&out);
        let name = loaded
            .lines()
            .find_map(|l| l.strip_prefix("Loaded image: "))
            .unwrap_or_else(|| panic!("podman 5 load of {src} ({format}) said: {loaded}"));
        assert!(
            name.ends_with(src.as_str()),
            "podman 5 named {src} ({format}) {name}"
        );
        assert_eq!(
            pm.id(name.trim()),
            config,
            "podman 5 load of {src} ({format})"
        );
    }
    for (fmt, tag) in [("docker-archive", "pd"), ("oci-archive", "po")] {
        let file = pm.dir.path().join(format!("{tag}.tar"));
        check(
            pm.cmd()
                .args(["save", "--format", fmt, "-o"])
                .arg(&file)
                .arg(&r),
        );
        let back = format!("e{}/pm5:{tag}", run_id());
        store.ok(&["push", "-q", &back], Some(&file));
        let pulled = store.pull(&[&back]);
        let s = summarize_archive(&pulled);
        assert_eq!(s[0].config_digest, config, "podman 5 {fmt} round trip");
    }
}

/// skopeo 1.18 reads what s3dock pulls, writes what s3dock pushes, and reads the store through
/// registry:2.
#[test]
fn skopeo118_reads_and_writes() {
    if !need_trixie() || !interop_support::need_registry() {
        return;
    }
    let want = expected("docker25.tar")["images"][0].clone();
    let config = want["ConfigDigest"].as_str().unwrap().to_string();
    let store = TestStore::local();
    let r = format!("e{}/sk:1", run_id());
    store.ok(&["push", "-q", &r], Some(&fixture("docker25.tar")));
    let tmp = tempfile::tempdir_in("/tmp").unwrap();
    let skopeo = |args: &[&str]| {
        let mut c = trixie("skopeo");
        c.arg("--insecure-policy").args(args);
        check(&mut c)
    };
    let config_of = |src: &str, extra: &[&str]| {
        let mut a = vec!["inspect", "--config", "--raw"];
        a.extend_from_slice(extra);
        a.push(src);
        format!("sha256:{}", sha256_hex(&skopeo(&a).stdout))
    };
    for (format, transport) in [("docker", "docker-archive"), ("oci", "oci-archive")] {
        let file = tmp.path().join(format!("{format}.tar"));
        store.ok(
            &[
                "pull",
                "-q",
                &r,
                "--format",
                format,
                "-o",
                file.to_str().unwrap(),
            ],
            None,
        );
        assert_eq!(
            config_of(&format!("{transport}:{}", file.display()), &[]),
            config
        );
    }
    // The chroot sees the host's /tmp only.
    let src = tmp.path().join("docker25.tar");
    std::fs::copy(fixture("docker25.tar"), &src).unwrap();
    for (transport, tag) in [("docker-archive", "sd"), ("oci-archive", "so")] {
        let file = tmp.path().join(format!("{tag}.tar"));
        let dst = if transport == "docker-archive" {
            format!("{transport}:{}:{r}", file.display())
        } else {
            format!("{transport}:{}", file.display())
        };
        skopeo(&[
            "copy",
            "-q",
            &format!("docker-archive:{}", src.display()),
            &dst,
        ]);
        // skopeo may rewrite the config converting to OCI: s3dock keeps whatever it wrote.
        let written = config_of(&format!("{transport}:{}", file.display()), &[]);
        let back = format!("e{}/sk:{tag}", run_id());
        store.ok(&["push", "-q", &back], Some(&file));
        assert_eq!(
            summarize_archive(&store.pull(&[&back]))[0].config_digest,
            written,
            "skopeo 1.18 {transport} round trip"
        );
    }
    let reg = interop_support::Registry::fs(store.dir.as_ref().unwrap().path());
    assert_eq!(
        config_of(&reg.docker_ref(&r), &["--tls-verify=false"]),
        config
    );
}
