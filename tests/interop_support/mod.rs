//! Helpers for `tests/interop.rs`: the real peers (Docker Engine, Debian's docker-registry,
//! skopeo, podman) driven as child processes, with guards that clean up after a test even
//! when it panics. Every external command runs under coreutils `timeout` so a wedged peer
//! fails the test instead of hanging CI.
#![allow(dead_code)]

use crate::common::*;
use std::cell::RefCell;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// Seconds any single peer command may take.
const TIMEOUT_SECS: u32 = 300;

/// 4 hex chars, unique per `cargo test` run: every Docker image name and repository made
/// here contains it, so parallel runs (and other test files) never touch each other's images.
/// Kept short because of s3s-fs's key-length limit (see [`assert_fits_s3s`]).
pub fn run_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| uuid::Uuid::new_v4().simple().to_string()[..4].to_string())
}

/// `prog` under `timeout -k 10 300`.
pub fn tool(prog: &str) -> Command {
    let mut c = Command::new("timeout");
    c.args(["-k", "10", &TIMEOUT_SECS.to_string(), prog]);
    c.stdin(Stdio::null());
    c
}

pub fn describe(c: &Command) -> String {
    let wrapped = c.get_program() == "timeout";
    let mut s: Vec<String> = c
        .get_args()
        .skip(if wrapped { 3 } else { 0 }) // "-k" "10" "300"
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if !wrapped {
        s.insert(0, c.get_program().to_string_lossy().into_owned());
    }
    s.join(" ")
}

pub fn run(c: &mut Command) -> Output {
    c.output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", describe(c)))
}

/// Runs `c`, panics with its output unless it succeeds.
pub fn check(c: &mut Command) -> Output {
    let out = run(c);
    assert!(
        out.status.success(),
        "`{}` failed ({}):\nstdout: {}\nstderr: {}",
        describe(c),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `a | b`: returns both outputs (a's stdout is consumed by b).
pub fn pipe(a: &mut Command, b: &mut Command) -> (Output, Output) {
    a.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut ca = a
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", describe(a)));
    b.stdin(Stdio::from(ca.stdout.take().unwrap()));
    let ob = b
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", describe(b)));
    let oa = ca.wait_with_output().unwrap();
    (oa, ob)
}

pub fn check_pipe(a: &mut Command, b: &mut Command) -> Output {
    let (oa, ob) = pipe(a, b);
    assert!(
        oa.status.success() && ob.status.success(),
        "`{} | {}` failed ({} | {}):\nleft stderr: {}\nright stdout: {}\nright stderr: {}",
        describe(a),
        describe(b),
        oa.status,
        ob.status,
        stderr(&oa),
        stdout(&ob),
        stderr(&ob)
    );
    ob
}

pub fn sha256_file(p: &Path) -> String {
    use sha2::{Digest as _, Sha256};
    let mut f = std::fs::File::open(p).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

// ------------------------------------------------------------------ s3s-fs key limit

/// s3s-fs 0.14 stores a side file named after the base64 of the whole key, so keys over
/// 157 characters fail there (ENAMETOOLONG). The longest key s3dock writes for `name:tag`
/// is the tag's index link; fail early, with the reason, instead of with an opaque 500.
pub fn assert_fits_s3s(store: &TestStore, name: &str, tag: &str) {
    if store.kind != "s3s" {
        return;
    }
    let prefix = &store.s3.as_ref().unwrap().2;
    let key = format!(
        "{prefix}/docker/registry/v2/repositories/{name}/_manifests/tags/{tag}/index/sha256/{}/link",
        "0".repeat(64)
    );
    assert!(
        key.len() <= 157,
        "test bug: {name}:{tag} gives {}-char keys, over s3s-fs's 157-char limit",
        key.len()
    );
}

// ------------------------------------------------------------------ Docker Engine

pub fn docker_version() -> Option<String> {
    static V: OnceLock<Option<String>> = OnceLock::new();
    V.get_or_init(|| {
        let out = Command::new("docker")
            .args(["version", "--format", "{{.Server.Version}}"])
            .stdin(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| stdout(&out).trim().to_string())
    })
    .clone()
}

/// True when the Docker daemon answers; a missing daemon fails CI (see `require`).
pub fn need_docker() -> bool {
    require("Docker Engine (docker version)", docker_version().is_some())
}

pub fn docker_major() -> u32 {
    docker_version()
        .and_then(|v| v.split('.').next().and_then(|m| m.parse().ok()))
        .unwrap_or(0)
}

/// `docker load` decompresses zstd layers only from Docker 23.0 (formats.md §1.5).
pub fn docker_loads_zstd() -> bool {
    docker_major() >= 23
}

/// Image references this test created; `docker rmi -f` on each when dropped (also on panic).
/// Only names are removed, never IDs, so images of other tests or users are left alone.
#[derive(Default)]
pub struct DockerImages {
    refs: RefCell<Vec<String>>,
}

impl DockerImages {
    pub fn new() -> DockerImages {
        DockerImages::default()
    }
    pub fn add(&self, r: &str) {
        if !self.refs.borrow().iter().any(|x| x == r) {
            self.refs.borrow_mut().push(r.to_string());
        }
    }
}

impl Drop for DockerImages {
    fn drop(&mut self) {
        for r in self.refs.borrow().iter().rev() {
            let _ = tool("docker")
                .args(["rmi", "-f", r])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ImageInfo {
    /// `sha256:<config digest>`
    pub id: String,
    /// RootFS.Layers: the diff_ids.
    pub layers: Vec<String>,
}

pub fn docker_inspect(r: &str) -> Option<ImageInfo> {
    let out = run(tool("docker").args([
        "image",
        "inspect",
        "--format",
        "{{.Id}} {{json .RootFS.Layers}}",
        r,
    ]));
    if !out.status.success() {
        return None;
    }
    let s = stdout(&out);
    let (id, layers) = s.trim().split_once(' ').unwrap();
    Some(ImageInfo {
        id: id.to_string(),
        layers: serde_json::from_str(layers).unwrap(),
    })
}

pub fn docker_rmi(r: &str) {
    check(tool("docker").args(["rmi", r]));
    assert!(docker_inspect(r).is_none(), "{r} still present after rmi");
}

/// `docker run --rm --network none IMG ARGS...`, stdout.
/// `docker pull` from a registry, then the pulled image must have the same ID and
/// layers as `before` and print `output` when run.
pub fn docker_pull_same(pulled: &str, before: &ImageInfo, output: &str) {
    check(tool("docker").args(["pull", "-q", pulled]));
    assert_eq!(
        docker_inspect(pulled).as_ref(),
        Some(before),
        "docker pull {pulled}"
    );
    assert_eq!(docker_run(pulled, &[]), output);
}

pub fn docker_run(r: &str, args: &[&str]) -> String {
    stdout(&check(
        tool("docker")
            .args(["run", "--rm", "--network", "none", r])
            .args(args),
    ))
}

/// `docker save REFS... | s3dock push --json -q ARGS...`
pub fn docker_save_push(store: &TestStore, refs: &[&str], args: &[&str]) -> serde_json::Value {
    let mut save = tool("docker");
    save.arg("save").args(refs);
    let mut push = store.cmd();
    push.args(["push", "--json", "-q"]).args(args);
    let out = check_pipe(&mut save, &mut push);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `s3dock pull -q ARGS... | docker load`: both outputs, unchecked.
pub fn pull_docker_load(store: &TestStore, args: &[&str]) -> (Output, Output) {
    let mut pull = store.cmd();
    pull.args(["pull", "-q"]).args(args);
    pipe(&mut pull, tool("docker").arg("load"))
}

/// Same, asserting success and that docker reports loading `expect_ref`.
pub fn pull_docker_load_ok(store: &TestStore, args: &[&str], expect_ref: &str) {
    let mut pull = store.cmd();
    pull.args(["pull", "-q"]).args(args);
    let out = check_pipe(&mut pull, tool("docker").arg("load"));
    let s = stdout(&out);
    assert!(
        s.contains(&format!("Loaded image: {expect_ref}")),
        "docker load did not load {expect_ref}: {s}"
    );
}

/// A build context: a temp dir holding `rootfs/bin/busybox` (Debian's busybox-static) and
/// whatever else the test adds; `build` runs the classic builder, so nothing is pulled.
pub struct BuildContext {
    pub dir: tempfile::TempDir,
}

pub fn need_busybox() -> bool {
    require(
        "busybox-static (/bin/busybox)",
        Path::new("/bin/busybox").exists(),
    )
}

impl BuildContext {
    pub fn new() -> BuildContext {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("rootfs/bin")).unwrap();
        std::fs::copy("/bin/busybox", dir.path().join("rootfs/bin/busybox")).unwrap();
        BuildContext { dir }
    }

    pub fn file(&self, rel: &str, content: &[u8]) -> &Self {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
        self
    }

    /// `head -c SIZE /dev/urandom > rel`; returns the file's sha256 hex.
    pub fn random_file(&self, rel: &str, size: u64) -> String {
        let p = self.dir.path().join(rel);
        let f = std::fs::File::create(&p).unwrap();
        check(
            Command::new("head")
                .args(["-c", &size.to_string(), "/dev/urandom"])
                .stdout(Stdio::from(f)),
        );
        sha256_file(&p)
    }

    /// `docker build -t TAG` with the classic builder; registers TAG for cleanup first.
    pub fn build(&self, images: &DockerImages, tag: &str, dockerfile: &str) -> ImageInfo {
        std::fs::write(self.dir.path().join("Dockerfile"), dockerfile).unwrap();
        images.add(tag);
        check(
            tool("docker")
                .args(["build", "-q", "--rm", "-t", tag])
                .arg(self.dir.path())
                .env("DOCKER_BUILDKIT", "0"),
        );
        docker_inspect(tag).unwrap()
    }
}

/// Reads the config of a local Docker image (from `docker save`, so byte-exact).
pub fn docker_config(r: &str) -> serde_json::Value {
    let out = check(tool("docker").args(["save", r]));
    let s = summarize_archive(&out.stdout);
    let files = tar_files(&out.stdout);
    let m: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let cfg = &files[m[0]["Config"].as_str().unwrap()];
    assert_eq!(s.len(), 1);
    serde_json::from_slice(cfg).unwrap()
}

// ------------------------------------------------------------------ registry:2

pub fn need_registry() -> bool {
    require(
        "docker-registry (Debian's distribution 2.8)",
        have_command("docker-registry"),
    ) && require("curl", have_command("curl"))
}

/// A registry started with scripts/registry.sh; stopped (by its port) when dropped.
pub struct Registry {
    /// `127.0.0.1:PORT`
    pub addr: String,
}

impl Registry {
    fn start(args: &[&str]) -> Registry {
        let out = check(
            tool("bash")
                .arg(root().join("scripts/registry.sh"))
                .arg("start")
                .args(args),
        );
        let s = stdout(&out);
        let addr = s
            .lines()
            .find_map(|l| l.strip_prefix("REGISTRY="))
            .unwrap_or_else(|| panic!("registry.sh printed no REGISTRY= line: {s}"))
            .trim()
            .to_string();
        Registry { addr }
    }

    /// Filesystem driver, `rootdirectory: DIR`.
    pub fn fs(dir: &Path) -> Registry {
        Registry::start(&["fs", dir.to_str().unwrap()])
    }

    /// S3 driver on the same bucket and prefix as an S3 `TestStore`.
    pub fn s3(store: &TestStore) -> Registry {
        let (endpoint, bucket, prefix) = store.s3.as_ref().unwrap();
        Registry::start(&["s3", endpoint, bucket, &format!("/{prefix}")])
    }

    pub fn get(&self, path: &str) -> serde_json::Value {
        let out = check(tool("curl").args(["-sS", "-f", &format!("http://{}{path}", self.addr)]));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("GET {path}: bad JSON ({e}): {}", stdout(&out)))
    }

    /// `GET /v2/<name>/tags/list`, sorted. A 404 NAME_UNKNOWN (a repository with no tag
    /// left: on S3 there are no empty directories) counts as no tags.
    pub fn tags(&self, name: &str) -> Vec<String> {
        let out = check(tool("curl").args([
            "-sS",
            "-w",
            "\n%{http_code}",
            &format!("http://{}/v2/{name}/tags/list", self.addr),
        ]));
        let s = stdout(&out);
        let (body, code) = s.trim_end().rsplit_once('\n').unwrap();
        if code == "404" && body.contains("NAME_UNKNOWN") {
            return Vec::new();
        }
        assert_eq!(code, "200", "GET /v2/{name}/tags/list: {body}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["name"], name);
        let mut t: Vec<String> = v["tags"]
            .as_array()
            .map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        t.sort();
        t
    }

    pub fn catalog(&self) -> Vec<String> {
        let v = self.get("/v2/_catalog");
        v["repositories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect()
    }

    pub fn docker_ref(&self, r: &str) -> String {
        format!("docker://{}/{r}", self.addr)
    }

    /// `DELETE /v2/<name>/manifests/<digest>`: the HTTP status.
    pub fn delete_manifest(&self, name: &str, digest: &str) -> u16 {
        let out = check(tool("curl").args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "DELETE",
            &format!("http://{}/v2/{name}/manifests/{digest}", self.addr),
        ]));
        stdout(&out).trim().parse().unwrap()
    }

    /// Stops the registry, then runs `docker-registry garbage-collect [--delete-untagged]`
    /// with its configuration (as the distribution docs say: never while it serves).
    pub fn stop_and_garbage_collect(self, delete_untagged: bool) -> String {
        let test_dir =
            std::env::var("S3DOCK_TEST_DIR").unwrap_or_else(|_| "/tmp/s3dock-test".into());
        let port = self.addr.rsplit(':').next().unwrap().to_string();
        let cfg = std::fs::read_to_string(
            Path::new(&test_dir)
                .join("registry")
                .join(&port)
                .join("config.yml"),
        )
        .expect("registry.sh config.yml");
        drop(self);
        let tmp = tempfile::tempdir().unwrap();
        let cfg_path = tmp.path().join("config.yml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let mut c = tool("env");
        c.args(["-u", "AWS_CA_BUNDLE", "docker-registry", "garbage-collect"]);
        if delete_untagged {
            c.arg("--delete-untagged");
        }
        c.arg(&cfg_path);
        let out = check(&mut c);
        format!("{}{}", stdout(&out), stderr(&out))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let port = self.addr.rsplit(':').next().unwrap().to_string();
        let _ = tool("bash")
            .arg(root().join("scripts/registry.sh"))
            .args(["stop", &port])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `s3dock tags NAME`, sorted.
pub fn s3dock_tags(store: &TestStore, name: &str) -> Vec<String> {
    let out = store.ok(&["tags", name], None);
    let mut t: Vec<String> = stdout(&out).lines().map(String::from).collect();
    t.sort();
    t
}

// ------------------------------------------------------------------ skopeo

pub fn need_skopeo() -> bool {
    require("skopeo", have_command("skopeo"))
}

pub fn skopeo() -> Command {
    let mut c = tool("skopeo");
    c.arg("--insecure-policy");
    c
}

/// `skopeo inspect [--tls-verify=false] REF` as JSON.
pub fn skopeo_inspect(r: &str) -> serde_json::Value {
    let mut c = skopeo();
    c.arg("inspect");
    if r.starts_with("docker://") {
        c.arg("--tls-verify=false");
    }
    c.arg(r);
    serde_json::from_slice(&check(&mut c).stdout).unwrap()
}

/// sha256 of `skopeo inspect --raw REF` (the manifest bytes as served/stored).
pub fn skopeo_raw_manifest_digest(r: &str) -> String {
    let mut c = skopeo();
    c.args(["inspect", "--raw"]);
    if r.starts_with("docker://") {
        c.arg("--tls-verify=false");
    }
    c.arg(r);
    format!("sha256:{}", sha256_hex(&check(&mut c).stdout))
}

/// sha256 of `skopeo inspect --config --raw REF` (the config bytes: the image ID).
pub fn skopeo_config_digest(r: &str) -> String {
    let mut c = skopeo();
    c.args(["inspect", "--config", "--raw"]);
    if r.starts_with("docker://") {
        c.arg("--tls-verify=false");
    }
    c.arg(r);
    format!("sha256:{}", sha256_hex(&check(&mut c).stdout))
}

pub fn skopeo_copy(src: &str, dst: &str) {
    let mut c = skopeo();
    c.args(["copy", "-q"]);
    if src.starts_with("docker://") {
        c.arg("--src-tls-verify=false");
    }
    if dst.starts_with("docker://") {
        c.arg("--dest-tls-verify=false");
    }
    c.args([src, dst]);
    check(&mut c);
}

// ------------------------------------------------------------------ podman

pub fn need_podman() -> bool {
    require("podman", have_command("podman"))
}

/// A private podman store (vfs driver) in a temp dir: nothing touches the host's images.
pub struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    pub fn new() -> Podman {
        Podman {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn cmd(&self) -> Command {
        let mut c = tool("podman");
        c.args(["--storage-driver", "vfs", "--events-backend", "none"])
            .arg("--root")
            .arg(self.dir.path().join("root"))
            .arg("--runroot")
            .arg(self.dir.path().join("run"))
            .arg("--tmpdir")
            .arg(self.dir.path().join("tmp"));
        c
    }

    /// `podman load -i FILE`; returns the names it reports.
    pub fn load(&self, file: &Path) -> Vec<String> {
        let out = check(self.cmd().arg("load").arg("-i").arg(file));
        let s = stdout(&out);
        let names: Vec<String> = s
            .lines()
            .filter_map(|l| {
                l.strip_prefix("Loaded image: ")
                    .or_else(|| l.strip_prefix("Loaded image(s): "))
            })
            .flat_map(|l| l.split(',').map(|x| x.trim().to_string()))
            .collect();
        assert!(!names.is_empty(), "podman load reported no image: {s}");
        names
    }

    pub fn inspect(&self, r: &str) -> ImageInfo {
        let out = check(self.cmd().args([
            "image",
            "inspect",
            "--format",
            "{{.Id}} {{json .RootFS.Layers}}",
            r,
        ]));
        let s = stdout(&out);
        let (id, layers) = s.trim().split_once(' ').unwrap();
        ImageInfo {
            id: format!("sha256:{}", id.trim_start_matches("sha256:")),
            layers: serde_json::from_str(layers).unwrap(),
        }
    }
}

// ------------------------------------------------------------------ archives

/// One image of an OCI image layout, read through `index.json` (not `manifest.json`).
#[derive(Debug, Clone, PartialEq)]
pub struct OciImage {
    pub ref_name: Option<String>,
    pub image_name: Option<String>,
    pub manifest_digest: String,
    pub manifest_media_type: Option<String>,
    pub config_digest: String,
    pub config_diff_ids: Vec<String>,
    /// sha256 of each layer blob, decompressed.
    pub layer_diff_ids: Vec<String>,
    pub layer_media_types: Vec<String>,
}

/// Reads an OCI layout tar independently of s3dock: checks `oci-layout`, that every blob
/// it reaches hashes to its name and size, and returns each `index.json` entry.
pub fn summarize_oci(data: &[u8]) -> Vec<OciImage> {
    let files = tar_files(data);
    let layout: serde_json::Value = serde_json::from_slice(
        files
            .get("oci-layout")
            .expect("no oci-layout in the archive"),
    )
    .unwrap();
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    let blob = |d: &serde_json::Value| -> Vec<u8> {
        let digest = d["digest"].as_str().unwrap();
        let hexd = digest.strip_prefix("sha256:").unwrap();
        let b = files
            .get(&format!("blobs/sha256/{hexd}"))
            .unwrap_or_else(|| panic!("blob {digest} missing from the OCI layout"))
            .clone();
        assert_eq!(
            sha256_hex(&b),
            hexd,
            "blob {digest} does not match its name"
        );
        assert_eq!(
            b.len() as u64,
            d["size"].as_u64().unwrap(),
            "blob {digest} size"
        );
        b
    };
    let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|desc| {
            let m: serde_json::Value = serde_json::from_slice(&blob(desc)).unwrap();
            let cfg = blob(&m["config"]);
            let cfg_json: serde_json::Value = serde_json::from_slice(&cfg).unwrap();
            let layers = m["layers"].as_array().unwrap();
            OciImage {
                ref_name: desc["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .map(String::from),
                image_name: desc["annotations"]["io.containerd.image.name"]
                    .as_str()
                    .map(String::from),
                manifest_digest: desc["digest"].as_str().unwrap().to_string(),
                manifest_media_type: m["mediaType"].as_str().map(String::from),
                config_digest: m["config"]["digest"].as_str().unwrap().to_string(),
                config_diff_ids: cfg_json["rootfs"]["diff_ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_str().unwrap().to_string())
                    .collect(),
                layer_diff_ids: layers
                    .iter()
                    .map(|l| format!("sha256:{}", sha256_hex(&decompress(&blob(l)))))
                    .collect(),
                layer_media_types: layers
                    .iter()
                    .map(|l| l["mediaType"].as_str().unwrap().to_string())
                    .collect(),
            }
        })
        .collect()
}

/// Expected (config digest, diff_ids) of an image.
#[derive(Debug, Clone)]
pub struct Want {
    pub config: String,
    pub diff_ids: Vec<String>,
}

impl From<&ImageInfo> for Want {
    fn from(i: &ImageInfo) -> Want {
        Want {
            config: i.id.clone(),
            diff_ids: i.layers.clone(),
        }
    }
}

impl Want {
    pub fn from_expected(img: &serde_json::Value) -> Want {
        Want {
            config: img["ConfigDigest"].as_str().unwrap().to_string(),
            diff_ids: img["DiffIDs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_str().unwrap().to_string())
                .collect(),
        }
    }
}

/// A `pull --format docker` archive: manifest.json with one image tagged `tag`, whose
/// config and decompressed layers match `want`; its OCI view (index.json) agrees.
pub fn check_docker_archive(data: &[u8], tag: &str, want: &Want) {
    let s = summarize_archive(data);
    assert_eq!(s.len(), 1, "one image in manifest.json");
    assert_eq!(s[0].repo_tags, vec![tag.to_string()]);
    assert_eq!(s[0].config_digest, want.config, "config digest");
    assert_eq!(s[0].config_diff_ids, want.diff_ids, "config diff_ids");
    assert_eq!(
        s[0].layer_diff_ids, want.diff_ids,
        "layer files vs diff_ids"
    );
    let o = summarize_oci(data);
    assert_eq!(o.len(), 1, "one index.json entry");
    assert_eq!(o[0].config_digest, want.config);
    assert_eq!(o[0].layer_diff_ids, want.diff_ids);
}

/// A `pull --format oci` archive: no manifest.json, one index entry matching `want`.
pub fn check_oci_archive(data: &[u8], want: &Want) -> OciImage {
    let files = tar_files(data);
    assert!(
        !files.contains_key("manifest.json"),
        "--format oci wrote a manifest.json"
    );
    let o = summarize_oci(data);
    assert_eq!(o.len(), 1, "one index.json entry");
    assert_eq!(o[0].config_digest, want.config, "config digest");
    assert_eq!(o[0].config_diff_ids, want.diff_ids, "config diff_ids");
    assert_eq!(
        o[0].layer_diff_ids, want.diff_ids,
        "layer blobs vs diff_ids"
    );
    o[0].clone()
}

pub fn tmp_path(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}
