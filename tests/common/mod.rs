//! Shared test harness: runs the real `s3dock` binary against real stores — a temp
//! directory, and the S3 servers `scripts/s3-servers.sh` started (s3s-fs, moto).
#![allow(dead_code)]

pub mod iam;
pub mod nginx;

use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(name: &str) -> PathBuf {
    root().join("fixtures").join(name)
}

pub fn expected(archive: &str) -> serde_json::Value {
    let all: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("expected.json")).unwrap()).unwrap();
    all["archives"][archive].clone()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A peer the suite needs: missing is a failure when S3DOCK_REQUIRE_PEERS=1 (CI), else a skip.
pub fn require(what: &str, available: bool) -> bool {
    if !available {
        if std::env::var("S3DOCK_REQUIRE_PEERS").as_deref() == Ok("1") {
            panic!("{what} is required (S3DOCK_REQUIRE_PEERS=1) but not available: run scripts/test.sh");
        }
        eprintln!("SKIP: {what} not available (run the suite with scripts/test.sh)");
    }
    available
}

pub fn have_command(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A store to run s3dock against: its global flags, and where it lives.
pub struct TestStore {
    pub kind: &'static str,
    pub args: Vec<String>,
    /// Local directory for dir stores.
    pub dir: Option<tempfile::TempDir>,
    /// Bucket and prefix for S3 stores.
    pub s3: Option<(String, String, String)>,
}

/// Short on purpose: s3s-fs 0.14 names a sidecar file after the base64 of the whole
/// key, so keys over ~157 characters fail there with ENAMETOOLONG.
fn unique() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

impl TestStore {
    pub fn local() -> TestStore {
        let dir = tempfile::tempdir().unwrap();
        TestStore {
            kind: "dir",
            args: vec!["--store".into(), dir.path().to_string_lossy().into()],
            dir: Some(dir),
            s3: None,
        }
    }

    /// `server` is "s3s", "moto" or "garage"; None (a skip) when the server is not running.
    pub fn s3(server: &'static str) -> Option<TestStore> {
        let var = match server {
            "s3s" => "S3DOCK_TEST_S3S",
            "moto" => "S3DOCK_TEST_MOTO",
            "garage" => "S3DOCK_TEST_GARAGE",
            _ => panic!("unknown test S3 server {server}"),
        };
        let endpoint = std::env::var(var).ok();
        if !require(&format!("S3 server {server} ({var})"), endpoint.is_some()) {
            return None;
        }
        let endpoint = endpoint.unwrap();
        let bucket = std::env::var("S3DOCK_TEST_BUCKET").unwrap_or_else(|_| "s3dock-test".into());
        let prefix = unique();
        Some(TestStore {
            kind: server,
            args: vec![
                "--store".into(),
                format!("s3://{bucket}/{prefix}"),
                "--endpoint".into(),
                endpoint.clone(),
            ],
            dir: None,
            s3: Some((endpoint, bucket, prefix)),
        })
    }

    /// The local store and every S3 server that is up.
    pub fn all() -> Vec<TestStore> {
        let mut v = vec![TestStore::local()];
        v.extend(TestStore::s3("s3s"));
        v.extend(TestStore::s3("moto"));
        v.extend(TestStore::s3("garage"));
        v
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_s3dock"));
        c.args(&self.args)
            .env_remove("S3DOCK_STORE")
            .env("AWS_EC2_METADATA_DISABLED", "true");
        c
    }

    /// Runs s3dock with `args`, stdin from `input` (a file) or empty.
    pub fn run(&self, args: &[&str], input: Option<&Path>) -> Output {
        let mut c = self.cmd();
        c.args(args);
        c.stdin(match input {
            Some(p) => Stdio::from(std::fs::File::open(p).unwrap()),
            None => Stdio::null(),
        });
        c.output().unwrap()
    }

    pub fn ok(&self, args: &[&str], input: Option<&Path>) -> Output {
        let out = self.run(args, input);
        assert!(
            out.status.success(),
            "[{}] s3dock {args:?} failed: {}",
            self.kind,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs and expects failure; returns stderr.
    pub fn fails(&self, args: &[&str], input: Option<&Path>) -> String {
        let out = self.run(args, input);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "[{}] s3dock {args:?} should have failed; stderr: {err}",
            self.kind
        );
        assert!(
            out.stdout.is_empty() || args.contains(&"pull"),
            "[{}] failure wrote to stdout",
            self.kind
        );
        assert!(
            err.contains("s3dock: error: "),
            "[{}] no error line in: {err}",
            self.kind
        );
        assert_eq!(
            err.trim_end()
                .lines()
                .filter(|l| l.starts_with("s3dock: error"))
                .count(),
            1
        );
        err
    }

    /// Pushes with `--json` and returns the summary.
    pub fn push_json(&self, args: &[&str], input: Option<&Path>) -> serde_json::Value {
        let mut a = vec!["push", "--json", "-q"];
        a.extend_from_slice(args);
        let out = self.ok(&a, input);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("bad --json output ({e}): {:?}", out.stdout))
    }

    /// Pulls to bytes.
    pub fn pull(&self, args: &[&str]) -> Vec<u8> {
        let mut a = vec!["pull", "-q"];
        a.extend_from_slice(args);
        self.ok(&a, None).stdout
    }

    /// Every tag visible in the store (`repo:tag`) — what `docker pull` could see.
    pub fn visible_tags(&self) -> Vec<String> {
        let keys = self.keys();
        let mut tags: Vec<String> = keys
            .iter()
            .filter_map(|k| {
                let (_, rest) = k.split_once("docker/registry/v2/repositories/")?;
                let (repo, tail) = rest.split_once("/_manifests/tags/")?;
                let tag = tail.strip_suffix("/current/link")?;
                Some(format!("{repo}:{tag}"))
            })
            .collect();
        tags.sort();
        tags
    }

    /// Every object key in the store, relative to the store root.
    pub fn keys(&self) -> Vec<String> {
        if let Some(d) = &self.dir {
            let mut out = Vec::new();
            let mut stack = vec![d.path().to_path_buf()];
            while let Some(p) = stack.pop() {
                for e in std::fs::read_dir(&p).unwrap() {
                    let e = e.unwrap();
                    if e.file_type().unwrap().is_dir() {
                        stack.push(e.path());
                    } else {
                        out.push(
                            e.path()
                                .strip_prefix(d.path())
                                .unwrap()
                                .to_string_lossy()
                                .into_owned(),
                        );
                    }
                }
            }
            out.sort();
            return out;
        }
        let (endpoint, bucket, prefix) = self.s3.as_ref().unwrap();
        s3_list(endpoint, bucket, prefix)
    }
}

/// Every blob a `push --json` image names: manifest, config and layers.
pub fn pushed_blobs(img: &serde_json::Value) -> Vec<String> {
    let mut v = vec![
        img["manifest_digest"].as_str().unwrap().to_string(),
        img["config_digest"].as_str().unwrap().to_string(),
    ];
    v.extend(
        img["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string()),
    );
    v
}

/// Lists keys under a prefix with the venv's boto3 (an independent S3 client).
pub fn s3_list(endpoint: &str, bucket: &str, prefix: &str) -> Vec<String> {
    let script = format!(
        "import boto3\nc=boto3.client('s3',endpoint_url='{endpoint}',region_name='us-east-1')\n\
         p=c.get_paginator('list_objects_v2')\n\
         for page in p.paginate(Bucket='{bucket}',Prefix='{prefix}/'):\n    [print(o['Key'][len('{prefix}/'):]) for o in page.get('Contents',[])]\n"
    );
    let mut v: Vec<String> = python(&script).lines().map(String::from).collect();
    v.sort();
    v
}

/// Runs a script with the venv's python (boto3 there is an S3 client independent of
/// s3dock's) and returns its stdout; a failing script fails the test.
pub fn python(script: &str) -> String {
    let o = Command::new(venv_python())
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

pub fn venv_python() -> PathBuf {
    let venv = std::env::var("S3DOCK_TEST_VENV")
        .or_else(|_| std::env::var("S3DOCK_VENV"))
        .unwrap_or_else(|_| format!("{}/.cache/s3dock/moto-venv", std::env::var("HOME").unwrap()));
    PathBuf::from(venv).join("bin/python")
}

/// What an archive holds, computed independently of s3dock: per image the tags,
/// the config digest and the diff_ids of its layer files (decompressed and hashed).
#[derive(Debug, PartialEq)]
pub struct ArchiveSummary {
    pub repo_tags: Vec<String>,
    pub config_digest: String,
    pub config_diff_ids: Vec<String>,
    pub layer_diff_ids: Vec<String>,
}

/// Every regular file of a tar, by path.
pub fn tar_files(data: &[u8]) -> HashMap<String, Vec<u8>> {
    let mut files = HashMap::new();
    let mut ar = tar::Archive::new(data);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type().is_file() {
            let p = e.path().unwrap().to_string_lossy().into_owned();
            let mut v = Vec::new();
            e.read_to_end(&mut v).unwrap();
            files.insert(p, v);
        }
    }
    files
}

pub fn summarize_archive(data: &[u8]) -> Vec<ArchiveSummary> {
    let files = tar_files(data);
    let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    manifest
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let cfg = &files[m["Config"].as_str().unwrap()];
            let cfg_json: serde_json::Value = serde_json::from_slice(cfg).unwrap();
            let layer_diff_ids = m["Layers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| {
                    format!(
                        "sha256:{}",
                        sha256_hex(&decompress(&files[l.as_str().unwrap()]))
                    )
                })
                .collect();
            ArchiveSummary {
                repo_tags: m["RepoTags"]
                    .as_array()
                    .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
                    .unwrap_or_default(),
                config_digest: format!("sha256:{}", sha256_hex(cfg)),
                config_diff_ids: cfg_json["rootfs"]["diff_ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_str().unwrap().to_string())
                    .collect(),
                layer_diff_ids,
            }
        })
        .collect()
}

pub fn decompress(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    if data.starts_with(&[0x1f, 0x8b]) {
        flate2::read::MultiGzDecoder::new(data)
            .read_to_end(&mut out)
            .unwrap();
    } else if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        out = zstd::decode_all(data).unwrap();
    } else {
        out = data.to_vec();
    }
    out
}

/// The layer files of the first image in an archive's `manifest.json`, as written.
pub fn archive_layer_files(data: &[u8]) -> Vec<Vec<u8>> {
    let files = tar_files(data);
    let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    manifest[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| files[l.as_str().unwrap()].clone())
        .collect()
}

// --- Generated archives (streamed, never held in memory) ---

/// One generated layer: a layer tar of exactly `size` bytes (a multiple of 512, at
/// least 1536) holding one file whose content comes from `seed`. The same size and
/// seed give the same layer (and v1 ID), so images can share layers.
#[derive(Clone, Copy, Debug)]
pub struct GenLayer {
    pub size: u64,
    pub seed: u64,
}

/// Semi-compressible bytes, cheap to make: text-like runs with pseudo-random words.
pub fn gen_chunk(i: u64, buf: &mut [u8]) {
    let mut x = i.wrapping_mul(0x9e3779b97f4a7c15) | 1;
    for w in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let v = if x.is_multiple_of(4) {
            x.to_le_bytes()
        } else {
            *b"layer.. "
        };
        w.copy_from_slice(&v[..w.len()]);
    }
}

pub fn tar_header(path: &str, size: u64) -> [u8; 512] {
    let mut h = tar::Header::new_ustar();
    h.set_path(path).unwrap();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_cksum();
    *h.as_bytes()
}

/// Streams a legacy docker-save archive (`<v1id>/layer.tar` per layer, then the config
/// and `manifest.json`) tagged `repo_tag` into `out`. The config names the tag, so two
/// images with the same layers still differ. Write errors (a killed reader) are returned.
pub fn write_generated_archive(
    out: &mut dyn std::io::Write,
    layers: &[GenLayer],
    repo_tag: &str,
) -> std::io::Result<()> {
    let mut diff_ids = Vec::new();
    let mut paths = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    for l in layers {
        assert!(
            l.size % 512 == 0 && l.size >= 1536,
            "bad generated layer size"
        );
        let v1 = sha256_hex(format!("v1:{}:{}", l.seed, l.size).as_bytes());
        let path = format!("{v1}/layer.tar");
        out.write_all(&tar_header(&path, l.size))?;
        let inner_size = l.size - 1536; // one file in the layer tar, then the two end blocks
        let mut h = Sha256::new();
        let head = tar_header("big.bin", inner_size);
        h.update(head);
        out.write_all(&head)?;
        let mut left = inner_size;
        let mut i = 0;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            gen_chunk(
                l.seed.wrapping_mul(1_000_003).wrapping_add(i),
                &mut buf[..n],
            );
            h.update(&buf[..n]);
            out.write_all(&buf[..n])?;
            left -= n as u64;
            i += 1;
        }
        h.update([0u8; 1024]);
        out.write_all(&[0u8; 1024])?;
        diff_ids.push(format!("sha256:{}", hex::encode(h.finalize())));
        paths.push(path);
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Labels": {"generated-for": repo_tag}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let cfg_hex = sha256_hex(&config);
    let mut file = |name: &str, data: &[u8]| -> std::io::Result<()> {
        out.write_all(&tar_header(name, data.len() as u64))?;
        out.write_all(data)?;
        out.write_all(&vec![0u8; (512 - data.len() % 512) % 512])
    };
    file(&format!("{cfg_hex}.json"), &config)?;
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": format!("{cfg_hex}.json"), "RepoTags": [repo_tag], "Layers": paths,
    }]))
    .unwrap();
    file("manifest.json", &manifest)?;
    out.write_all(&[0u8; 1024])
}

/// Writes a generated archive (see [`write_generated_archive`]) to `path`.
pub fn generate_archive_file(path: &Path, layers: &[GenLayer], repo_tag: &str) {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    write_generated_archive(&mut f, layers, repo_tag).unwrap();
    std::io::Write::flush(&mut f).unwrap();
}

// --- Multi-platform archives ---

/// A gzip-compressed layer tar holding `files` (path, content): (blob bytes, diff_id).
fn gz_layer(files: &[(&str, &[u8], u32)]) -> (Vec<u8>, String) {
    let mut ar = tar::Builder::new(Vec::new());
    for (path, data, mode) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(*mode);
        h.set_mtime(0);
        h.set_cksum();
        ar.append_data(&mut h, path, *data).unwrap();
    }
    let plain = ar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &plain).unwrap();
    (
        gz.finish().unwrap(),
        format!("sha256:{}", sha256_hex(&plain)),
    )
}

/// One platform of a multi-platform test image.
pub struct PlatformImage {
    pub arch: &'static str,
    pub manifest_digest: String,
    pub config_digest: String,
}

/// A multi-platform OCI archive as `skopeo copy --all oci-archive:` and buildx write
/// it: `index.json` names a nested image index (ref name `tag`) over two images,
/// linux/amd64 with Debian's busybox-static (`/bin/busybox`, runnable here) and
/// linux/arm64 with other content (`seed` makes both unique). gzip layers, so a push
/// keeps every manifest and the index byte for byte. Returns the index digest and the
/// images.
pub fn multi_platform_archive(path: &Path, tag: &str, seed: &str) -> (String, Vec<PlatformImage>) {
    let busybox = std::fs::read("/bin/busybox").expect("/bin/busybox (busybox-static)");
    let mut blobs: Vec<Vec<u8>> = Vec::new();
    let mut descs = Vec::new();
    let mut images = Vec::new();
    for arch in ["amd64", "arm64"] {
        let note = format!("{arch} {seed}\n");
        let files: Vec<(&str, &[u8], u32)> = if arch == "amd64" {
            vec![
                ("bin/busybox", &busybox[..], 0o755),
                ("etc/note", note.as_bytes(), 0o644),
            ]
        } else {
            vec![
                ("etc/note", note.as_bytes(), 0o644),
                ("etc/arm", &[7u8; 4096][..], 0o644),
            ]
        };
        let (layer, diff_id) = gz_layer(&files);
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": arch, "os": "linux",
            "config": {"Cmd": ["/bin/busybox", "cat", "/etc/note"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }))
        .unwrap();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": format!("sha256:{}", sha256_hex(&config)), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": format!("sha256:{}", sha256_hex(&layer)), "size": layer.len()}],
        }))
        .unwrap();
        let md = format!("sha256:{}", sha256_hex(&manifest));
        descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md, "size": manifest.len(),
            "platform": {"architecture": arch, "os": "linux"},
        }));
        images.push(PlatformImage {
            arch,
            manifest_digest: md,
            config_digest: format!("sha256:{}", sha256_hex(&config)),
        });
        blobs.extend([layer, config, manifest]);
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": descs,
    }))
    .unwrap();
    let index_digest = format!("sha256:{}", sha256_hex(&index));
    let top = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json",
                       "digest": index_digest, "size": index.len(),
                       "annotations": {"org.opencontainers.image.ref.name": tag}}],
    }))
    .unwrap();
    blobs.push(index);
    let mut ar = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        ar.append_data(&mut h, name, data).unwrap();
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    for b in &blobs {
        add(&format!("blobs/sha256/{}", sha256_hex(b)), b);
    }
    add("index.json", &top);
    ar.into_inner().unwrap();
    (index_digest, images)
}
