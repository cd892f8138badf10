//! Pull against hostile store content (issue 17): images whose every digest is right but
//! that `docker load` would refuse, and images with very many layers. Each store is forged
//! in a directory store: a good image is pushed, then manifest, config or blobs are
//! rewritten with correct digests and the defect, and re-linked under a tag.

mod common;
use common::*;
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;

const REPO: &str = "forge/app";

/// A directory store and the registry-v2 keys a pull reads.
struct Forge {
    store: TestStore,
}

impl Forge {
    fn new() -> Forge {
        Forge {
            store: TestStore::local(),
        }
    }

    fn v2(&self, rest: &str) -> PathBuf {
        self.store
            .dir
            .as_ref()
            .unwrap()
            .path()
            .join("docker/registry/v2")
            .join(rest)
    }

    fn link(&self, rest: &str, hex: &str) {
        let p = self.v2(rest);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, format!("sha256:{hex}")).unwrap();
    }

    /// Stores a blob (and links it as a layer of REPO); returns its hex digest.
    fn put(&self, data: &[u8]) -> String {
        let hex = sha256_hex(data);
        let p = self.v2(&format!("blobs/sha256/{}/{hex}/data", &hex[..2]));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
        self.link(
            &format!("repositories/{REPO}/_layers/sha256/{hex}/link"),
            &hex,
        );
        hex
    }

    fn get(&self, hex: &str) -> Vec<u8> {
        std::fs::read(self.v2(&format!("blobs/sha256/{}/{hex}/data", &hex[..2]))).unwrap()
    }

    /// Stores `doc` as a manifest of REPO tagged `tag`.
    fn tag(&self, tag: &str, doc: &Value) {
        let hex = self.put(&serde_json::to_vec(doc).unwrap());
        self.link(
            &format!("repositories/{REPO}/_manifests/revisions/sha256/{hex}/link"),
            &hex,
        );
        self.link(
            &format!("repositories/{REPO}/_manifests/tags/{tag}/current/link"),
            &hex,
        );
        self.link(
            &format!("repositories/{REPO}/_manifests/tags/{tag}/index/sha256/{hex}/link"),
            &hex,
        );
    }

    /// The manifest and config `tag` points at.
    fn image(&self, tag: &str) -> (Value, Value) {
        let link = std::fs::read_to_string(self.v2(&format!(
            "repositories/{REPO}/_manifests/tags/{tag}/current/link"
        )))
        .unwrap();
        let m: Value = serde_json::from_slice(&self.get(&link[7..])).unwrap();
        let cfg_hex = &m["config"]["digest"].as_str().unwrap()[7..];
        let c = serde_json::from_slice(&self.get(cfg_hex)).unwrap();
        (m, c)
    }

    /// Stores `config` and points `manifest` at it (right digest and size).
    fn with_config(&self, manifest: &mut Value, config: &Value) {
        let bytes = serde_json::to_vec(config).unwrap();
        let hex = self.put(&bytes);
        manifest["config"]["digest"] = json!(format!("sha256:{hex}"));
        manifest["config"]["size"] = json!(bytes.len());
    }

    /// Pushes a generated two-layer image as `REPO:good` with `compression`.
    fn push_good(&self, compression: &str) {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("in.tar");
        let layers = [
            GenLayer {
                size: 4096,
                seed: 1,
            },
            GenLayer {
                size: 8192,
                seed: 2,
            },
        ];
        generate_archive_file(&path, &layers, &format!("{REPO}:good"));
        self.store.push_json(
            &["--compression", compression, &format!("{REPO}:good")],
            Some(&path),
        );
    }

    /// `pull` of `tag` must fail with one error line containing `want`, and leave no file;
    /// also with `--decompress` (to a file: layers streamed in; to stdout: spooled).
    fn refused(&self, tag: &str, want: &str) {
        let r = format!("{REPO}:{tag}");
        for extra in [&[][..], &["--decompress"][..]] {
            let tmp = tempfile::tempdir().unwrap();
            let out = tmp.path().join("x.tar");
            let mut args = vec!["pull", &r, "-o", out.to_str().unwrap()];
            args.extend_from_slice(extra);
            let err = self.store.fails(&args, None);
            assert!(err.contains(want), "{tag} {extra:?}: {err}");
            assert!(!err.contains("panicked"), "{tag} {extra:?}: {err}");
            assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "{tag}");
            // To stdout: the archive is never terminated with its metadata.
            let mut args = vec!["pull", "-q", &r];
            args.extend_from_slice(extra);
            let o = self.store.run(&args, None);
            assert!(!o.status.success(), "{tag} {extra:?}");
            assert!(!String::from_utf8_lossy(&o.stdout).contains("manifest.json"));
        }
    }
}

#[test]
fn uncompressed_layer_must_equal_its_diff_id() {
    let f = Forge::new();
    f.push_good("none");
    f.store.pull(&[&format!("{REPO}:good")]);
    let (mut m, mut c) = f.image("good");
    // Both layers are real blobs; the config swaps the first diff_id for the second's.
    c["rootfs"]["diff_ids"][0] = c["rootfs"]["diff_ids"][1].clone();
    f.with_config(&mut m, &c);
    f.tag("swapped", &m);
    f.refused("swapped", "diff_id");
}

#[test]
fn repeated_layer_is_checked_at_every_position() {
    let f = Forge::new();
    f.push_good("gzip");
    let (mut m, mut c) = f.image("good");
    let first = m["layers"][0].clone();
    m["layers"].as_array_mut().unwrap().push(first);
    // The third position repeats layer 0 but claims layer 1's diff_id.
    let second = c["rootfs"]["diff_ids"][1].clone();
    c["rootfs"]["diff_ids"].as_array_mut().unwrap().push(second);
    f.with_config(&mut m, &c);
    f.tag("repeated", &m);
    f.refused("repeated", "different diff_ids");
}

#[test]
fn gzip_crc_mismatch_is_refused() {
    let f = Forge::new();
    f.push_good("gzip");
    let (mut m, _) = f.image("good");
    let hex = &m["layers"][0]["digest"].as_str().unwrap()[7..];
    let mut blob = f.get(hex);
    let n = blob.len();
    blob[n - 8] ^= 1; // CRC-32: the content, its sha256 and the diff_id are all unchanged
    let bad = f.put(&blob);
    m["layers"][0]["digest"] = json!(format!("sha256:{bad}"));
    f.tag("crc", &m);
    f.refused("crc", "CRC-32");
}

#[test]
fn descriptor_sizes_must_match_the_blobs() {
    let f = Forge::new();
    f.push_good("gzip");
    let (mut m, _) = f.image("good");
    let good = serde_json::to_vec(&m).unwrap();
    // An index whose child descriptor has the wrong manifest size.
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": m["mediaType"].clone(),
            "digest": format!("sha256:{}", sha256_hex(&good)),
            "size": good.len() + 1,
            "platform": {"architecture": "amd64", "os": "linux"},
        }],
    });
    f.tag("good2", &m); // the child must be a revision of the repository
    f.tag("index", &index);
    f.refused("index", "descriptor says");
    let size = m["config"]["size"].as_u64().unwrap();
    m["config"]["size"] = json!(size - 1);
    f.tag("config", &m);
    f.refused("config", "descriptor says");
}

/// Peak thread count and VmHWM (KiB) of a running child, sampled until it exits.
fn watch(mut child: std::process::Child) -> (std::process::Output, usize, u64) {
    let status = format!("/proc/{}/status", child.id());
    let (mut threads, mut hwm) = (0, 0);
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut { stdout }, &mut v).unwrap();
        v
    });
    while child.try_wait().unwrap().is_none() {
        if let Ok(s) = std::fs::read_to_string(&status) {
            for l in s.lines() {
                let num = |l: &str| l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap();
                if l.starts_with("Threads:") {
                    threads = threads.max(num(l) as usize);
                } else if l.starts_with("VmHWM:") {
                    hwm = hwm.max(num(l));
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let mut out = child.wait_with_output().unwrap();
    out.stdout = reader.join().unwrap();
    (out, threads, hwm)
}

#[test]
fn many_layers_pull_with_bounded_threads_and_memory() {
    let f = Forge::new();
    f.push_good("gzip");
    let (mut m, mut c) = f.image("good");
    // 1,000 distinct tiny gzip layers (the most a pull accepts).
    let n = 1000;
    let (mut layers, mut diff_ids) = (Vec::new(), Vec::new());
    for i in 0..n {
        let mut tar = tar_header(&format!("f{i}"), 0).to_vec();
        tar.extend_from_slice(&[0u8; 1024]);
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&tar).unwrap();
        let gz = e.finish().unwrap();
        let hex = f.put(&gz);
        layers.push(json!({
            "mediaType": m["layers"][0]["mediaType"].clone(),
            "digest": format!("sha256:{hex}"),
            "size": gz.len(),
        }));
        diff_ids.push(json!(format!("sha256:{}", sha256_hex(&tar))));
    }
    m["layers"] = json!(layers);
    c["rootfs"]["diff_ids"] = json!(diff_ids);
    f.with_config(&mut m, &c);
    f.tag("many", &m);
    let child = f
        .store
        .cmd()
        .args(["pull", "-q", &format!("{REPO}:many")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (out, threads, hwm) = watch(child);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(summarize_archive(&out.stdout)[0].layer_diff_ids.len(), n);
    eprintln!(
        "{n} layers: peak {threads} threads, peak RSS {} MiB",
        hwm >> 10
    );
    assert!(threads < 64, "{threads} threads for {n} layers");
    assert!(hwm < 300 << 10, "peak RSS {hwm} KiB for {n} layers");

    // Past the limit: a clear error, never a panic or a thread-spawn failure.
    for count in [1001, 3000, 10_000] {
        let one = m["layers"][0].clone();
        let d = c["rootfs"]["diff_ids"][0].clone();
        let (mut m2, mut c2) = (m.clone(), c.clone());
        m2["layers"] = json!(vec![one; count]);
        c2["rootfs"]["diff_ids"] = json!(vec![d; count]);
        f.with_config(&mut m2, &c2);
        let tag = format!("n{count}");
        f.tag(&tag, &m2);
        f.refused(&tag, "more than the 1000");
    }
}
