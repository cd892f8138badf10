//! Memory stays bounded by configuration, not by layer size. A 1.5 GiB layer is
//! generated on the fly into s3dock's stdin; the child's peak RSS must stay far below it.
//! (Alone in its own test binary, so RUSAGE_CHILDREN sees only these children.)

mod common;
use common::*;
use std::process::Stdio;

const LAYER: u64 = 1536 << 20;
const LIMIT_KIB: i64 = 300 << 10;

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
        let writer = std::thread::spawn(move || {
            write_generated_archive(
                &mut stdin,
                &[GenLayer {
                    size: LAYER,
                    seed: 0,
                }],
                "big/app:1",
            )
            .unwrap()
        });
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
