//! Memory stays bounded by configuration, not by layer size. A 1.5 GiB layer is
//! generated on the fly into s3dock's stdin; the child's peak RSS must stay far below it.
//! (Alone in its own test binary, so RUSAGE_CHILDREN sees only these children.)

mod common;
use common::*;
use sha2::{Digest as _, Sha256};
use std::io::Write;
use std::process::Stdio;

const LAYER: u64 = 1536 << 20;
const LIMIT_KIB: i64 = 300 << 10;

/// Semi-compressible bytes, cheap to make: text-like runs with pseudo-random words.
fn chunk(i: u64, buf: &mut [u8]) {
    let mut x = i.wrapping_mul(0x9e3779b97f4a7c15) | 1;
    for w in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let v = if x % 4 == 0 {
            x.to_le_bytes()
        } else {
            *b"layer.. "
        };
        w.copy_from_slice(&v[..w.len()]);
    }
}

fn tar_header(path: &str, size: u64) -> [u8; 512] {
    let mut h = tar::Header::new_ustar();
    h.set_path(path).unwrap();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_cksum();
    *h.as_bytes()
}

/// Streams a legacy docker-save archive with one big layer into `out`.
fn write_archive(out: &mut impl Write) {
    let inner_size = LAYER - 1536; // one file in the layer tar, then the two end blocks
    let mut layer_hash = Sha256::new();
    let v1 = "ab".repeat(32);
    out.write_all(&tar_header(&format!("{v1}/layer.tar"), LAYER))
        .unwrap();
    let mut emit = |data: &[u8], out: &mut dyn Write| {
        layer_hash.update(data);
        out.write_all(data).unwrap();
    };
    emit(&tar_header("big.bin", inner_size), out);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = inner_size;
    let mut i = 0;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        chunk(i, &mut buf[..n]);
        emit(&buf[..n], out);
        left -= n as u64;
        i += 1;
    }
    emit(&[0u8; 1024], out);
    let diff_id = hex::encode(layer_hash.finalize());
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
    }))
    .unwrap();
    let cfg_hex = sha256_hex(&config);
    let file = |name: &str, data: &[u8], out: &mut dyn Write| {
        out.write_all(&tar_header(name, data.len() as u64)).unwrap();
        out.write_all(data).unwrap();
        out.write_all(&vec![0u8; (512 - data.len() % 512) % 512])
            .unwrap();
    };
    file(&format!("{cfg_hex}.json"), &config, out);
    let manifest = format!(
        r#"[{{"Config":"{cfg_hex}.json","RepoTags":["big/app:1"],"Layers":["{v1}/layer.tar"]}}]"#
    );
    file("manifest.json", manifest.as_bytes(), out);
    out.write_all(&[0u8; 1024]).unwrap();
}

fn max_child_rss_kib() -> i64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    ru.ru_maxrss
}

#[test]
fn big_layer_streams_with_bounded_memory() {
    let stores: Vec<(TestStore, &str)> = [
        Some((TestStore::local(), "gzip")),
        TestStore::s3("s3s").map(|s| (s, "none")),
    ]
    .into_iter()
    .flatten()
    .collect();
    for (store, compression) in stores {
        let mut child = store
            .cmd()
            .args([
                "push",
                "-q",
                "--json",
                "--compression",
                compression,
                "big/app:1",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || write_archive(&mut stdin));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        assert!(
            out.status.success(),
            "[{}] {}",
            store.kind,
            String::from_utf8_lossy(&out.stderr)
        );
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            s["bytes_read"].as_u64().unwrap() > LAYER,
            "[{}] {s}",
            store.kind
        );
        let rss = max_child_rss_kib();
        eprintln!(
            "[{}] {compression}: peak RSS {} MiB for a {} MiB layer",
            store.kind,
            rss >> 10,
            LAYER >> 20
        );
        assert!(
            rss < LIMIT_KIB,
            "[{}] peak RSS {rss} KiB exceeds {LIMIT_KIB} KiB",
            store.kind
        );
        // And it comes back out intact: pull verifies every digest and the diff_id.
        let devnull = std::fs::File::create("/dev/null").unwrap();
        let o = store
            .cmd()
            .args(["pull", "-q", "big/app:1"])
            .stdout(devnull)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "[{}] {}",
            store.kind,
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            max_child_rss_kib() < LIMIT_KIB,
            "[{}] pull exceeded the memory limit",
            store.kind
        );
    }
}
