//! Reliability (issue 5): faults between s3dock and S3 (a fault-injecting proxy in
//! front of s3s-fs), SIGKILL/SIGINT/SIGTERM in the middle of a push, concurrent
//! pushes, hostile and mutated archives, credentials in output, and a full disk.
//!
//! Every test runs the real binary. Random choices (kill points, mutations) come from
//! a seeded generator; the seed is printed and `S3DOCK_TEST_SEED` replays a run.

mod common;
mod faultproxy;

use common::*;
use faultproxy::{FaultProxy, Faults};
use sha2::{Digest as _, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

/// xorshift64*: small, deterministic, good enough to pick kill points and mutations.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e3779b97f4a7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545f4914f6cdd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo))
    }
}

/// The seed for a test's random choices: `S3DOCK_TEST_SEED`, else the clock (printed).
fn seed(test: &str) -> u64 {
    let s = std::env::var("S3DOCK_TEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("{test}: seed {s} (replay with S3DOCK_TEST_SEED={s})");
    s
}

/// Waits for a child, killing it (and failing) after `limit`.
fn wait_with_timeout(mut child: Child, limit: Duration, what: &str) -> Output {
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let o = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_end(&mut v);
        }
        v
    });
    let e = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(e) = err.as_mut() {
            let _ = e.read_to_end(&mut v);
        }
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {limit:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: o.join().unwrap(),
        stderr: e.join().unwrap(),
    }
}

/// Runs s3dock with `args` on `store`, stdin from `input`, output captured, time-limited.
fn run_limited(store: &TestStore, args: &[&str], input: Option<&Path>, limit: Duration) -> Output {
    let child = store
        .cmd()
        .args(args)
        .stdin(match input {
            Some(p) => Stdio::from(std::fs::File::open(p).unwrap()),
            None => Stdio::null(),
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_with_timeout(child, limit, &format!("[{}] s3dock {args:?}", store.kind))
}

/// The failure contract: exit status 1 (no panic, no signal), and exactly one
/// `s3dock: error:` line, the last one (after any warnings). Returns that line.
fn clean_failure(o: &Output, what: &str) -> Result<String, String> {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    if o.status.success() {
        return Err(format!("{what}: should have failed; stderr: {err}"));
    }
    if err.contains("panicked") {
        return Err(format!("{what}: s3dock panicked: {err}"));
    }
    if o.status.code() != Some(1) {
        return Err(format!(
            "{what}: expected exit status 1, got {:?}; stderr: {err}",
            o.status
        ));
    }
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("s3dock: error: "))
        .collect();
    if lines.len() != 1 || !err.trim_end().ends_with(lines[0]) {
        return Err(format!("{what}: want one error line, last: {err}"));
    }
    Ok(lines[0].to_string())
}

fn expect_clean_failure(o: &Output, what: &str) -> String {
    clean_failure(o, what).unwrap_or_else(|e| panic!("{e}"))
}

/// No tag is visible, and a local directory store has nothing under `repositories/`.
fn store_unchanged(store: &TestStore, what: &str) -> Result<(), String> {
    let tags = store.visible_tags();
    if !tags.is_empty() {
        return Err(format!(
            "[{}] {what}: tags became visible: {tags:?}",
            store.kind
        ));
    }
    if store.dir.is_some() {
        let repo_files: Vec<String> = store
            .keys()
            .into_iter()
            .filter(|k| k.starts_with("docker/registry/v2/repositories/"))
            .collect();
        if !repo_files.is_empty() {
            return Err(format!(
                "[{}] {what}: files under repositories/: {repo_files:?}",
                store.kind
            ));
        }
    }
    Ok(())
}

fn assert_store_unchanged(store: &TestStore, what: &str) {
    store_unchanged(store, what).unwrap_or_else(|e| panic!("{e}"));
}

/// The same S3 store reached through `proxy`: keys() and visible_tags() still go
/// straight to the server.
fn via_proxy(store: &TestStore, proxy: &FaultProxy) -> TestStore {
    let mut args = store.args.clone();
    let i = args.iter().position(|a| a == "--endpoint").unwrap();
    args[i + 1] = proxy.endpoint();
    TestStore {
        kind: "s3s-via-proxy",
        args,
        dir: None,
        s3: store.s3.clone(),
    }
}

/// Reads a pulled archive from disk, streaming: every `blobs/sha256/<hex>` entry must
/// hash to its name. Returns the number of blobs checked.
fn verify_pulled_blobs(path: &Path) -> usize {
    let f = std::fs::File::open(path).unwrap();
    let mut ar = tar::Archive::new(std::io::BufReader::with_capacity(1 << 20, f));
    let mut n = 0;
    let mut buf = vec![0u8; 1 << 20];
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().to_string_lossy().into_owned();
        let Some(hex) = p.strip_prefix("blobs/sha256/") else {
            continue;
        };
        if hex.is_empty() || !e.header().entry_type().is_file() {
            continue;
        }
        let mut h = Sha256::new();
        loop {
            let k = e.read(&mut buf).unwrap();
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
        }
        assert_eq!(hex::encode(h.finalize()), hex, "pulled blob {p} is corrupt");
        n += 1;
    }
    n
}

/// Pulls `reference` to a file (`--json`) and checks the manifest digest and every blob.
fn pull_and_verify(store: &TestStore, reference: &str, manifest_digest: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("pulled.tar");
    let o = store.ok(
        &[
            "pull",
            "-q",
            "--json",
            reference,
            "-o",
            out.to_str().unwrap(),
        ],
        None,
    );
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        report["manifest_digest"], manifest_digest,
        "[{}] {reference}",
        store.kind
    );
    assert!(
        verify_pulled_blobs(&out) >= 3,
        "[{}] {reference}",
        store.kind
    );
}

/// In-progress multipart uploads under the store's prefix (moto; s3s-fs cannot list them).
fn multipart_uploads(store: &TestStore) -> Vec<String> {
    let (endpoint, bucket, prefix) = store.s3.as_ref().unwrap();
    let out = python(&format!(
        "import boto3\nc=boto3.client('s3',endpoint_url='{endpoint}',region_name='us-east-1')\n\
         r=c.list_multipart_uploads(Bucket='{bucket}',Prefix='{prefix}/')\n\
         [print(u['Key'], u['UploadId']) for u in r.get('Uploads',[])]\n"
    ));
    out.lines().map(String::from).collect()
}

/// Waits (one python process, polling) until a multipart upload is in progress under
/// the store's prefix; false on timeout.
fn wait_for_multipart_upload(store: &TestStore, timeout_s: u32) -> bool {
    let (endpoint, bucket, prefix) = store.s3.as_ref().unwrap();
    let out = python(&format!(
        "import boto3,time\nc=boto3.client('s3',endpoint_url='{endpoint}',region_name='us-east-1')\n\
         end=time.time()+{timeout_s}\n\
         while time.time()<end:\n    \
             if c.list_multipart_uploads(Bucket='{bucket}',Prefix='{prefix}/').get('Uploads'):\n        \
                 print('yes'); break\n    \
             time.sleep(0.02)\n"
    ));
    out.trim() == "yes"
}

/// Writes an object straight into an S3 store (bypassing s3dock).
fn s3_put(store: &TestStore, key: &str, body: &str) {
    let (endpoint, bucket, prefix) = store.s3.as_ref().unwrap();
    python(&format!(
        "import boto3\nc=boto3.client('s3',endpoint_url='{endpoint}',region_name='us-east-1')\n\
         c.put_object(Bucket='{bucket}',Key='{prefix}/{key}',Body=b'{body}')\n"
    ));
}

/// Temporary objects of a store: `s3dock/tmp/` keys, and for a local directory also
/// the driver's `.s3dock-tmp/` files (its in-progress "multipart uploads").
fn temp_keys(store: &TestStore) -> Vec<String> {
    store
        .keys()
        .into_iter()
        .filter(|k| k.starts_with("s3dock/tmp/") || k.starts_with(".s3dock-tmp/"))
        .collect()
}

/// Feeds a file into a child's stdin from a thread, counting bytes; stops quietly when
/// the child goes away. With `pause_at`, stops feeding there until dropped; with
/// `rate` (bytes/s), feeds no faster, like a slow `docker save` upstream.
struct Feeder {
    fed: Arc<AtomicU64>,
    release: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Feeder {
    fn start(child: &mut Child, path: &Path, pause_at: Option<u64>) -> Feeder {
        Feeder::start_at_rate(child, path, pause_at, None)
    }

    fn start_at_rate(
        child: &mut Child,
        path: &Path,
        pause_at: Option<u64>,
        rate: Option<u64>,
    ) -> Feeder {
        Feeder::spawn(child, path, pause_at, rate, false)
    }

    /// Feeds up to `hold_at`, then waits for [`Feeder::release`] and feeds the rest.
    fn start_held(child: &mut Child, path: &Path, hold_at: u64) -> Feeder {
        Feeder::spawn(child, path, Some(hold_at), None, true)
    }

    fn release(&self) {
        self.release.store(true, Ordering::SeqCst);
    }

    fn spawn(
        child: &mut Child,
        path: &Path,
        mut pause_at: Option<u64>,
        rate: Option<u64>,
        then_continue: bool,
    ) -> Feeder {
        let mut stdin = child.stdin.take().unwrap();
        let mut f = std::fs::File::open(path).unwrap();
        let fed = Arc::new(AtomicU64::new(0));
        let release = Arc::new(AtomicBool::new(false));
        let (fd, rel) = (fed.clone(), release.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 256 << 10];
            let start = Instant::now();
            loop {
                let done = fd.load(Ordering::SeqCst);
                let mut want = buf.len() as u64;
                if let Some(p) = pause_at {
                    if done >= p {
                        while !rel.load(Ordering::SeqCst) {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        if then_continue {
                            pause_at = None;
                            continue;
                        }
                        // Released: stop feeding and close stdin.
                        return;
                    }
                    want = want.min(p - done);
                }
                let n = f.read(&mut buf[..want as usize]).unwrap();
                if n == 0 || stdin.write_all(&buf[..n]).is_err() {
                    return;
                }
                let total = fd.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
                if let Some(r) = rate {
                    let due = Duration::from_secs_f64(total as f64 / r as f64);
                    if let Some(wait) = due.checked_sub(start.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
            }
        });
        Feeder {
            fed,
            release,
            thread: Some(thread),
        }
    }

    fn fed(&self) -> u64 {
        self.fed.load(Ordering::SeqCst)
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.release.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: sending a signal to a child we spawned and have not reaped yet.
    let r = unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    assert_eq!(r, 0, "kill({}, {sig}) failed", child.id());
}

fn mib_layers(sizes_mib: &[u64], seed: u64) -> Vec<GenLayer> {
    sizes_mib
        .iter()
        .enumerate()
        .map(|(i, s)| GenLayer {
            size: s * MIB,
            seed: seed * 1000 + i as u64,
        })
        .collect()
}

// ---------------------------------------------------------------------------------
// 1. Faults between s3dock and S3: a proxy in front of s3s-fs
// ---------------------------------------------------------------------------------

/// A ~20 MiB single-layer image, pushed uncompressed in 5 MiB parts: several
/// UploadParts, so part-level faults hit the middle of a multipart upload.
fn fault_image(dir: &Path, seed: u64) -> PathBuf {
    let p = dir.join(format!("fault{seed}.tar"));
    generate_archive_file(&p, &mib_layers(&[20], seed), "r/a:1");
    p
}

const FAULT_PUSH: &[&str] = &["--compression", "none", "--part-size", "5MiB", "r/a:1"];

/// Pushes through a proxy with `push_faults`, then pulls through it with `pull_faults`.
fn push_and_pull_through(
    what: &str,
    seed: u64,
    push_faults: Faults,
    pull_faults: Faults,
) -> Option<(u64, u64)> {
    let store = TestStore::s3("s3s")?;
    let tmp = tempfile::tempdir().unwrap();
    let archive = fault_image(tmp.path(), seed);
    let proxy = FaultProxy::start(&store.s3.as_ref().unwrap().0, push_faults);
    let px = via_proxy(&store, &proxy);
    let start = Instant::now();
    let mut args = vec!["-i", archive.to_str().unwrap()];
    args.extend_from_slice(FAULT_PUSH);
    let s = px.push_json(&args, None);
    let push_faults_seen = proxy.count(|s| &s.slowdowns)
        + proxy.count(|s| &s.request_resets)
        + proxy.count(|s| &s.response_resets);
    eprintln!(
        "{what}: push {:.1}s, {} requests, {} faults injected",
        start.elapsed().as_secs_f64(),
        proxy.count(|s| &s.requests),
        push_faults_seen
    );
    assert_eq!(store.visible_tags(), ["r/a:1"], "{what}");
    let md = s["images"][0]["manifest_digest"]
        .as_str()
        .unwrap()
        .to_string();
    proxy.set_faults(pull_faults);
    let before = push_faults_seen;
    let start = Instant::now();
    pull_and_verify(&px, "r/a:1", &md);
    let pull_faults_seen = proxy.count(|s| &s.slowdowns)
        + proxy.count(|s| &s.request_resets)
        + proxy.count(|s| &s.response_resets)
        - before;
    eprintln!(
        "{what}: pull {:.1}s, {pull_faults_seen} faults injected",
        start.elapsed().as_secs_f64()
    );
    Some((push_faults_seen, pull_faults_seen))
}

#[test]
fn slowdown_503_is_retried_on_push_and_pull() {
    let f = Faults {
        slowdown_every: 3,
        ..Default::default()
    };
    let Some((push, pull)) = push_and_pull_through("503 SlowDown", 11, f.clone(), f) else {
        return;
    };
    assert!(push > 0 && pull > 0, "no 503 was injected");
}

#[test]
fn connection_reset_mid_part_is_retried() {
    let push = Faults {
        reset_request_every: 2,
        ..Default::default()
    };
    let pull = Faults {
        slowdown_every: 2,
        ..Default::default()
    };
    let Some((p, _)) = push_and_pull_through("reset mid-part", 12, push, pull) else {
        return;
    };
    assert!(p > 0, "no connection was reset");
}

#[test]
fn slow_responses_still_succeed() {
    let f = Faults {
        delay: Duration::from_millis(250),
        ..Default::default()
    };
    push_and_pull_through("slow responses", 13, f.clone(), f);
}

/// A ranged GET whose connection drops halfway through the body: the pull must retry
/// the range (the SDK does not retry a body that fails after the headers arrived).
#[test]
fn pull_survives_connection_reset_mid_body() {
    let pull = Faults {
        reset_response_every: 2,
        ..Default::default()
    };
    let Some((_, p)) = push_and_pull_through("reset mid-body", 14, Faults::default(), pull) else {
        return;
    };
    assert!(p > 0, "no response was cut");
}

/// Over plain http every uploaded body is hashed into its SigV4 signature, as the aws CLI
/// does; `--payload-signing=false` (the default over https) sends `UNSIGNED-PAYLOAD`,
/// which the server takes, and the image still pulls back verified.
#[test]
fn payload_signing_follows_the_flag() {
    let Some(store) = TestStore::s3("s3s") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    for (seed, flag) in [(16, None), (17, Some("--payload-signing=false"))] {
        // A new image each time, so its parts are uploaded, not skipped.
        let archive = fault_image(tmp.path(), seed);
        let proxy = FaultProxy::start(&store.s3.as_ref().unwrap().0, Faults::default());
        let mut px = via_proxy(&store, &proxy);
        px.args.extend(flag.map(String::from));
        let mut args = vec!["-i", archive.to_str().unwrap()];
        args.extend_from_slice(FAULT_PUSH);
        let s = px.push_json(&args, None);
        let hashes = proxy.stats().put_payload_hashes.lock().unwrap().clone();
        // Four 5 MiB parts of the 20 MiB layer, the config, the manifest, the tag.
        assert!(hashes.len() >= 7, "{flag:?}: {hashes:?}");
        for h in &hashes {
            let signed = h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit());
            assert!(
                signed == flag.is_none() && (signed || h == "UNSIGNED-PAYLOAD"),
                "{flag:?}: x-amz-content-sha256 {h:?}"
            );
        }
        let md = s["images"][0]["manifest_digest"].as_str().unwrap();
        pull_and_verify(&px, "r/a:1", md);
    }
}

#[test]
fn exhausted_retries_fail_cleanly_without_a_tag() {
    let Some(store) = TestStore::s3("s3s") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let archive = fault_image(tmp.path(), 15);
    let mut args = vec!["--retries", "2", "push", "-i", archive.to_str().unwrap()];
    args.extend_from_slice(FAULT_PUSH);

    // Every request fails: the first request is tried exactly twice.
    let proxy = FaultProxy::start(
        &store.s3.as_ref().unwrap().0,
        Faults {
            fail_after: Some(0),
            ..Default::default()
        },
    );
    let px = via_proxy(&store, &proxy);
    let start = Instant::now();
    let o = run_limited(&px, &args, None, Duration::from_secs(60));
    let line = expect_clean_failure(&o, "all requests failing");
    eprintln!(
        "all failing: {:.1}s, {} requests: {line}",
        start.elapsed().as_secs_f64(),
        proxy.count(|s| &s.requests)
    );
    assert!(line.contains("503") || line.contains("SlowDown"), "{line}");
    assert_eq!(
        proxy.count(|s| &s.requests),
        2,
        "--retries 2 means two attempts: {:?}",
        proxy.stats().log.lock().unwrap()
    );
    assert_store_unchanged(&store, "all requests failing");
    drop(proxy);

    // Failing from the middle of the multipart upload on.
    let proxy = FaultProxy::start(
        &store.s3.as_ref().unwrap().0,
        Faults {
            fail_after: Some(6),
            ..Default::default()
        },
    );
    let px = via_proxy(&store, &proxy);
    let start = Instant::now();
    let o = run_limited(&px, &args, None, Duration::from_secs(90));
    let line = expect_clean_failure(&o, "failing mid-upload");
    eprintln!(
        "failing mid-upload: {:.1}s, {} requests: {line}",
        start.elapsed().as_secs_f64(),
        proxy.count(|s| &s.requests)
    );
    assert!(line.contains("503") || line.contains("SlowDown"), "{line}");
    assert_store_unchanged(&store, "failing mid-upload");
}

// ---------------------------------------------------------------------------------
// 2. SIGKILL at random points of a large push, then push again; cleanup
// ---------------------------------------------------------------------------------

/// The kill tests feed the archive at this rate, so a push lasts a few seconds on any
/// store and a random point in the byte stream is a random point of the push.
const KILL_FEED_RATE: u64 = 80 * MIB;

/// Kills pushes of `archive` at random points after they started writing to the
/// store. Round `r` pushes the tag `k/a:r{r}`; after each kill that tag must be absent,
/// or — when the kill landed after the commit — point at an image that pulls back
/// complete. Returns how many pushes were killed before their tag appeared.
fn kill_rounds(store: &TestStore, archive: &Path, rounds: usize, rng: &mut Rng) -> usize {
    let total = std::fs::metadata(archive).unwrap().len();
    let mut killed_before_commit = 0;
    for round in 0..rounds {
        let reference = format!("k/a:r{round}");
        // Somewhere between 10 % and 95 % of the archive read, once objects exist.
        let threshold = rng.range(total / 10, total * 95 / 100);
        let jitter = Duration::from_millis(rng.below(300));
        let mut child = store
            .cmd()
            .args(KILL_PUSH)
            .arg(&reference)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let feeder = Feeder::start_at_rate(&mut child, archive, None, Some(KILL_FEED_RATE));
        let start = Instant::now();
        loop {
            if child.try_wait().unwrap().is_some()
                || (feeder.fed() >= threshold && !store.keys().is_empty())
            {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "[{}] push made no progress",
                store.kind
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(jitter);
        let fed = feeder.fed();
        let was_running = child.try_wait().unwrap().is_none();
        if was_running {
            child.kill().unwrap();
        }
        let status = child.wait().unwrap();
        drop(feeder);
        let tags = store.visible_tags();
        let committed = tags.contains(&reference);
        eprintln!(
            "[{}] round {round}: {} after {:.2}s, {} of {} MiB fed ({:?}), tag {}",
            store.kind,
            if was_running { "SIGKILL" } else { "finished" },
            start.elapsed().as_secs_f64(),
            fed >> 20,
            total >> 20,
            status,
            if committed { "visible" } else { "absent" }
        );
        assert!(
            was_running || status.success(),
            "[{}] push failed on its own",
            store.kind
        );
        if committed {
            // Killed (or finished) after the commit point: the image must be whole.
            pull_and_verify(
                store,
                &reference,
                &tag_link(store, "k/a", &format!("r{round}")),
            );
        } else {
            assert!(was_running, "[{}] push succeeded without a tag", store.kind);
            killed_before_commit += 1;
        }
        assert!(
            tags.iter().all(|t| t.starts_with("k/a:r")),
            "[{}] unexpected tags: {tags:?}",
            store.kind
        );
    }
    killed_before_commit
}

const KILL_PUSH: &[&str] = &[
    "push",
    "-q",
    "--json",
    "--compression",
    "none",
    "--part-size",
    "5MiB",
];

fn sigkill_then_repush(store: TestStore, test: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("big.tar");
    // 4 × 64 MiB layers: objects appear layer by layer while the push runs.
    generate_archive_file(&archive, &mib_layers(&[64, 64, 64, 64], 21), "k/a:1");
    let mut rng = Rng::new(seed(test));
    let start = Instant::now();
    let killed = kill_rounds(&store, &archive, 3, &mut rng);
    assert!(
        killed >= 1,
        "[{}] no push was killed before its commit",
        store.kind
    );
    // Layers the killed pushes finished are indexed (legacy archive: by v1 ID) the
    // moment they are stored, so the re-push must skip at least those.
    let finished = store
        .keys()
        .iter()
        .filter(|k| k.contains("s3dock/index/v1id/"))
        .count() as u64;
    // Push again: succeeds, and the image pulls back intact.
    let mut args = KILL_PUSH[3..].to_vec();
    args.extend(["-i", archive.to_str().unwrap(), "k/a:1"]);
    let s = store.push_json(&args, None);
    eprintln!(
        "[{}] re-push after {killed} kills: uploaded {} MiB, {} blobs skipped",
        store.kind,
        s["bytes_uploaded"].as_u64().unwrap() >> 20,
        s["blobs_skipped"]
    );
    assert!(
        s["blobs_skipped"].as_u64().unwrap() >= finished,
        "[{}] {finished} layers were stored before the kills but the re-push skipped only {}",
        store.kind,
        s["blobs_skipped"]
    );
    assert!(store.visible_tags().contains(&"k/a:1".to_string()));
    pull_and_verify(
        &store,
        "k/a:1",
        s["images"][0]["manifest_digest"].as_str().unwrap(),
    );
    // What the killed pushes left behind goes with `cleanup`, and the image stays.
    let o = run_limited(
        &store,
        &["cleanup", "--older-than", "0s"],
        None,
        Duration::from_secs(60),
    );
    assert!(
        o.status.success(),
        "[{}] cleanup: {}",
        store.kind,
        String::from_utf8_lossy(&o.stderr)
    );
    let temps = temp_keys(&store);
    assert!(
        temps.is_empty(),
        "[{}] left after cleanup: {temps:?}",
        store.kind
    );
    store.ok(&["pull", "-q", "k/a:1", "-o", "/dev/null"], None);
    eprintln!(
        "[{}] kill/re-push/pull: {:.1}s",
        store.kind,
        start.elapsed().as_secs_f64()
    );
}

#[test]
fn sigkill_mid_push_then_repush_dir() {
    sigkill_then_repush(TestStore::local(), "sigkill_mid_push_then_repush_dir");
}

#[test]
fn sigkill_mid_push_then_repush_s3s() {
    if let Some(s) = TestStore::s3("s3s") {
        sigkill_then_repush(s, "sigkill_mid_push_then_repush_s3s");
    }
}

/// After a push was killed, `s3dock cleanup --older-than 0s` removes every temporary
/// object (and on moto, which can list them, every incomplete multipart upload); plain
/// `cleanup` (default: older than 1h) leaves these fresh ones alone. A stray temp
/// object is planted too, as a kill between "complete" and "move" would leave one.
#[test]
fn cleanup_removes_temporary_objects_after_kills() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("mid.tar");
    generate_archive_file(&archive, &mib_layers(&[24, 24], 22), "c/a:1");
    let total = std::fs::metadata(&archive).unwrap().len();
    let stores: Vec<TestStore> = [
        Some(TestStore::local()),
        TestStore::s3("s3s"),
        TestStore::s3("moto"),
    ]
    .into_iter()
    .flatten()
    .collect();
    for store in stores {
        // A push stopped for good in the middle of its second layer's upload.
        let mut child = store
            .cmd()
            .args([
                "push",
                "-q",
                "--compression",
                "none",
                "--part-size",
                "5MiB",
                "c/a:1",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let feeder = Feeder::start(&mut child, &archive, Some(total * 3 / 4));
        let start = Instant::now();
        while feeder.fed() < total * 3 / 4 {
            assert!(start.elapsed() < Duration::from_secs(60), "feeding stalled");
            std::thread::sleep(Duration::from_millis(10));
        }
        if store.kind == "moto" {
            assert!(
                wait_for_multipart_upload(&store, 30),
                "no multipart upload started"
            );
        } else {
            std::thread::sleep(Duration::from_millis(500));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        drop(feeder);
        if let Some(dir) = &store.dir {
            let p = dir.path().join("s3dock/tmp/planted-by-test");
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, b"partial").unwrap();
        } else {
            s3_put(&store, "s3dock/tmp/planted-by-test", "partial");
        }
        let before = temp_keys(&store);
        let mpu_before = if store.kind == "moto" {
            multipart_uploads(&store).len()
        } else {
            0
        };
        eprintln!(
            "[{}] before cleanup: temp objects {before:?}, {mpu_before} multipart uploads",
            store.kind
        );
        assert!(store.visible_tags().is_empty());
        // By default only old leftovers go, so pushes still running are left alone.
        let o = run_limited(&store, &["cleanup"], None, Duration::from_secs(60));
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(
            o.status.success(),
            "[{}] s3dock cleanup failed: {err}",
            store.kind
        );
        assert_eq!(
            temp_keys(&store),
            before,
            "[{}] cleanup removed fresh temporary objects",
            store.kind
        );
        // (Not checked for multipart uploads: moto reports every upload as initiated
        // on 2010-11-10, so on moto they all look old.)
        let o = run_limited(
            &store,
            &["cleanup", "--older-than", "0s"],
            None,
            Duration::from_secs(60),
        );
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        eprintln!("[{}] cleanup --older-than 0s: {}", store.kind, err.trim());
        assert!(
            o.status.success(),
            "[{}] s3dock cleanup --older-than 0s failed: {err}",
            store.kind
        );
        let after = temp_keys(&store);
        assert!(
            after.is_empty(),
            "[{}] temporary objects left after cleanup: {after:?}",
            store.kind
        );
        if store.kind == "moto" {
            let m = multipart_uploads(&store);
            assert!(
                m.is_empty(),
                "[moto] multipart uploads left after cleanup: {m:?}"
            );
        }
        // And the store still works.
        let s = store.push_json(
            &[
                "-i",
                archive.to_str().unwrap(),
                "--compression",
                "none",
                "c/a:1",
            ],
            None,
        );
        assert!(s["images"][0]["manifest_digest"].is_string());
    }
}

/// Parts stored so far in each open multipart upload under the store's prefix (moto).
fn open_upload_parts(store: &TestStore) -> Vec<usize> {
    let (endpoint, bucket, prefix) = store.s3.as_ref().unwrap();
    let out = python(&format!(
        "import boto3\nc=boto3.client('s3',endpoint_url='{endpoint}',region_name='us-east-1')\n\
         for u in c.list_multipart_uploads(Bucket='{bucket}',Prefix='{prefix}/').get('Uploads',[]):\n    \
             print(len(c.list_parts(Bucket='{bucket}',Key=u['Key'],UploadId=u['UploadId']).get('Parts',[])))\n"
    ));
    out.lines().map(|l| l.parse().unwrap()).collect()
}

/// Waits until some open upload holds at least `n` parts; panics after a minute.
fn wait_for_stored_parts(store: &TestStore, n: usize) -> usize {
    let start = Instant::now();
    loop {
        if let Some(&m) = open_upload_parts(store).iter().max() {
            if m >= n {
                return m;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no upload reached {n} parts"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

const RESUME_PUSH: &[&str] = &["--compression", "gzip", "--part-size", "5MiB"];

/// Starts a push of `archive` to `reference` fed from stdin up to `hold_at` bytes.
fn held_push(
    store: &TestStore,
    archive: &Path,
    hold_at: u64,
    reference: &str,
    extra: &[&str],
) -> (Child, Feeder) {
    let mut child = store
        .cmd()
        .args(["push", "-q", "--json"])
        .args(RESUME_PUSH)
        .args(extra)
        .arg(reference)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let feeder = Feeder::start_held(&mut child, archive, hold_at);
    (child, feeder)
}

/// A push killed in the middle of a layer leaves its multipart upload open; the next
/// push of the same archive continues it, sending only the parts not stored yet (same
/// size and MD5 as its own), and leaves no upload open. `--no-resume` sends them all.
#[test]
fn sigkill_mid_layer_then_repush_continues_the_upload() {
    let Some(store) = TestStore::s3("moto") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    for (i, resume) in [true, false].into_iter().enumerate() {
        // One 128 MiB layer (a quarter random): about 8 gzip parts of 5 MiB.
        let archive = tmp.path().join(format!("resume{i}.tar"));
        let reference = format!("m/r{i}:1");
        generate_archive_file(&archive, &mib_layers(&[128], 40 + i as u64), &reference);
        let total = std::fs::metadata(&archive).unwrap().len();
        let (mut child, feeder) = held_push(&store, &archive, total * 7 / 10, &reference, &[]);
        let parts = wait_for_stored_parts(&store, 4);
        child.kill().unwrap();
        child.wait().unwrap();
        drop(feeder);
        assert!(!store.visible_tags().contains(&reference));
        let stored = *open_upload_parts(&store).iter().max().unwrap() as u64;
        assert!(stored >= parts as u64);

        let mut args = RESUME_PUSH.to_vec();
        if !resume {
            args.push("--no-resume");
        }
        args.extend(["-i", archive.to_str().unwrap(), &reference]);
        let s = store.push_json(&args, None);
        let (uploaded, resumed) = (
            s["bytes_uploaded"].as_u64().unwrap(),
            s["bytes_resumed"].as_u64().unwrap(),
        );
        let layer = s["images"][0]["layers"][0]["size"].as_u64().unwrap();
        eprintln!(
            "resume={resume}: {stored} parts stored before the kill; re-push uploaded {} MiB, resumed {} MiB of a {} MiB layer",
            uploaded >> 20,
            resumed >> 20,
            layer >> 20
        );
        if resume {
            assert_eq!(resumed, stored * 5 * MIB, "every stored part is reused");
            assert_eq!(uploaded + resumed, layer);
            assert!(open_upload_parts(&store).is_empty(), "upload left open");
        } else {
            assert_eq!(resumed, 0);
            assert_eq!(uploaded, layer);
            // The killed push's upload stays for `cleanup`.
            assert_eq!(open_upload_parts(&store).len(), 1);
            store.ok(&["cleanup", "--older-than", "0s"], None);
            assert!(open_upload_parts(&store).is_empty());
        }
        assert!(temp_keys(&store).is_empty(), "{:?}", temp_keys(&store));
        pull_and_verify(
            &store,
            &reference,
            s["images"][0]["manifest_digest"].as_str().unwrap(),
        );
    }
}

/// A push that starts while another is in the middle of the same layer continues the
/// other's upload. Whichever completes it stores the blob; the other finds the upload
/// gone, waits for the blob, and succeeds too. Nothing is left open.
#[test]
fn concurrent_pushes_sharing_one_upload_both_succeed() {
    let Some(store) = TestStore::s3("moto") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("shared.tar");
    generate_archive_file(&archive, &mib_layers(&[128], 50), "m/s:1");
    let total = std::fs::metadata(&archive).unwrap().len();
    // Push A stops reading at 60 % (its upload open, some parts stored) ...
    let (child, feeder) = held_push(
        &store,
        &archive,
        total * 6 / 10,
        "m/s:a",
        &["--retries", "2"],
    );
    wait_for_stored_parts(&store, 3);
    // ... push B continues A's upload and completes it ...
    let mut args = RESUME_PUSH.to_vec();
    args.extend(["-i", archive.to_str().unwrap(), "m/s:b"]);
    let b = store.push_json(&args, None);
    assert!(b["bytes_resumed"].as_u64().unwrap() >= 3 * 5 * MIB, "{b}");
    // ... then A reads on: its next part finds the upload gone, and it waits for B's blob.
    feeder.release();
    let out = wait_with_timeout(child, Duration::from_secs(120), "push A");
    drop(feeder);
    assert!(
        out.status.success(),
        "push A: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let a: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        a["images"][0]["manifest_digest"],
        b["images"][0]["manifest_digest"]
    );
    assert!(open_upload_parts(&store).is_empty(), "upload left open");
    assert!(temp_keys(&store).is_empty(), "{:?}", temp_keys(&store));
    for r in ["m/s:a", "m/s:b"] {
        pull_and_verify(
            &store,
            r,
            a["images"][0]["manifest_digest"].as_str().unwrap(),
        );
    }
}

// ---------------------------------------------------------------------------------
// 3. SIGINT / SIGTERM during a push
// ---------------------------------------------------------------------------------

/// A push held in the middle of a multipart upload (stdin stops at 60 % of the
/// archive), then signalled: it must exit non-zero, promptly, with no tag visible,
/// no temporary object left and (moto) no multipart upload left in progress.
fn signal_mid_push(store: &TestStore, sig: libc::c_int, name: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("sig.tar");
    generate_archive_file(&archive, &mib_layers(&[40], 31 + sig as u64), "s/a:1");
    let total = std::fs::metadata(&archive).unwrap().len();
    let mut child = store
        .cmd()
        .args([
            "push",
            "--compression",
            "none",
            "--part-size",
            "5MiB",
            "s/a:1",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let feeder = Feeder::start(&mut child, &archive, Some(total * 6 / 10));
    let start = Instant::now();
    while feeder.fed() < total * 6 / 10 {
        assert!(start.elapsed() < Duration::from_secs(60), "feeding stalled");
        std::thread::sleep(Duration::from_millis(10));
    }
    if store.kind == "moto" {
        assert!(
            wait_for_multipart_upload(store, 30),
            "[moto] no multipart upload in progress"
        );
    } else {
        let t = Instant::now();
        while !store.keys().iter().any(|k| k.contains("tmp")) {
            assert!(t.elapsed() < Duration::from_secs(30), "no upload started");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // Let the parts already read reach the store.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the push ended before the signal"
    );
    signal(&child, sig);
    let t = Instant::now();
    let o = wait_with_timeout(
        child,
        Duration::from_secs(30),
        &format!("[{}] push after {name}", store.kind),
    );
    drop(feeder);
    let err = String::from_utf8_lossy(&o.stderr);
    eprintln!(
        "[{}] {name}: exited {:?} after {:.2}s; stderr: {}",
        store.kind,
        o.status,
        t.elapsed().as_secs_f64(),
        err.trim()
    );
    assert!(
        !o.status.success(),
        "[{}] {name}: exit status 0",
        store.kind
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        store.visible_tags().is_empty(),
        "[{}] {name}: tag visible",
        store.kind
    );
    let temps = temp_keys(store);
    assert!(
        temps.is_empty(),
        "[{}] {name}: temporary objects left: {temps:?}",
        store.kind
    );
    if store.kind == "moto" {
        let m = multipart_uploads(store);
        assert!(
            m.is_empty(),
            "[moto] {name}: multipart uploads left in progress: {m:?}"
        );
    }
}

#[test]
fn sigint_and_sigterm_abort_in_flight_uploads() {
    let mut stores = vec![TestStore::local()];
    stores.extend(TestStore::s3("moto"));
    for store in &stores {
        signal_mid_push(store, libc::SIGINT, "SIGINT");
        signal_mid_push(store, libc::SIGTERM, "SIGTERM");
    }
}

// ---------------------------------------------------------------------------------
// 4. Concurrent pushes
// ---------------------------------------------------------------------------------

fn spawn_push(store: &TestStore, archive: &Path, reference: &str) -> Child {
    store
        .cmd()
        .args([
            "push",
            "-q",
            "--json",
            "-i",
            archive.to_str().unwrap(),
            reference,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish_push(store: &TestStore, child: Child, what: &str) -> serde_json::Value {
    let o = wait_with_timeout(child, Duration::from_secs(120), what);
    assert!(
        o.status.success(),
        "[{}] {what}: {}",
        store.kind,
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

fn digest_of(s: &serde_json::Value) -> String {
    s["images"][0]["manifest_digest"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn concurrent_pushes_share_layers_and_race_for_one_tag() {
    let tmp = tempfile::tempdir().unwrap();
    // A and B share their first layer.
    let shared = GenLayer {
        size: 6 * MIB,
        seed: 4100,
    };
    let a = tmp.path().join("a.tar");
    let b = tmp.path().join("b.tar");
    generate_archive_file(
        &a,
        &[
            shared,
            GenLayer {
                size: 3 * MIB,
                seed: 4101,
            },
        ],
        "cc/a:1",
    );
    generate_archive_file(
        &b,
        &[
            shared,
            GenLayer {
                size: 3 * MIB,
                seed: 4102,
            },
        ],
        "cc/b:1",
    );
    let mut stores = vec![TestStore::local()];
    stores.extend(TestStore::s3("moto"));
    for store in &stores {
        let t = Instant::now();
        // Different images sharing a layer, at the same time.
        let ca = spawn_push(store, &a, "cc/a:1");
        let cb = spawn_push(store, &b, "cc/b:1");
        let sa = finish_push(store, ca, "push A");
        let sb = finish_push(store, cb, "push B");
        assert_eq!(store.visible_tags(), ["cc/a:1", "cc/b:1"]);
        pull_and_verify(store, "cc/a:1", &digest_of(&sa));
        pull_and_verify(store, "cc/b:1", &digest_of(&sb));
        assert_eq!(
            sa["images"][0]["layers"][0]["digest"], sb["images"][0]["layers"][0]["digest"],
            "the shared layer is one blob"
        );

        // Both to the same tag at the same time, a few rounds.
        let mut seen = Vec::new();
        for round in 0..3 {
            let ca = spawn_push(store, &a, "cc/same:1");
            let cb = spawn_push(store, &b, "cc/same:1");
            let sa = finish_push(store, ca, "same-tag A");
            let sb = finish_push(store, cb, "same-tag B");
            let (da, db) = (digest_of(&sa), digest_of(&sb));
            assert_ne!(da, db);
            // The tag is on one of the two, complete.
            let link = tag_link(store, "cc/same", "1");
            assert!(
                link == da || link == db,
                "[{}] round {round}: tag points to {link}, neither {da} nor {db}",
                store.kind
            );
            pull_and_verify(store, "cc/same:1", &link);
            // The other is not lost: reachable by digest, and in the tag's history.
            for d in [&da, &db] {
                pull_and_verify(store, &format!("cc/same@{d}"), d);
                let hex = d.trim_start_matches("sha256:");
                let idx = format!(
                    "docker/registry/v2/repositories/cc/same/_manifests/tags/1/index/sha256/{hex}/link"
                );
                assert!(
                    store.keys().contains(&idx),
                    "[{}] {d} is missing from the tag's history",
                    store.kind
                );
            }
            seen.push((
                link.clone(),
                sa["images"][0]["previous"].clone(),
                sb["images"][0]["previous"].clone(),
            ));
        }
        eprintln!(
            "[{}] concurrency: {:.1}s; same-tag rounds (winner, A.previous, B.previous): {seen:?}",
            store.kind,
            t.elapsed().as_secs_f64()
        );
    }
}

/// Racing tag updates are never silent: with conditional writes (If-None-Match /
/// If-Match on S3, a lock on a local directory) the push that ends up owning the tag
/// always reports the other push's manifest as `previous`. Without them, both pushes
/// can read "no tag" (or the same old tag), and the first write vanishes unrecorded.
/// Dir and moto only: s3s-fs's conditional writes are not atomic.
#[test]
fn racing_tag_updates_are_never_silently_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a.tar");
    let b = tmp.path().join("b.tar");
    generate_archive_file(&a, &mib_layers(&[1], 51), "lu/a:1");
    generate_archive_file(&b, &mib_layers(&[1], 52), "lu/b:1");
    let mut stores = vec![(TestStore::local(), 8)];
    stores.extend(TestStore::s3("moto").map(|s| (s, 5)));
    for (store, rounds) in &stores {
        // Blobs first, so the racing pushes are mostly their commits.
        let da = digest_of(&store.push_json(&["-i", a.to_str().unwrap(), "lu/a:1"], None));
        let db = digest_of(&store.push_json(&["-i", b.to_str().unwrap(), "lu/b:1"], None));
        let mut lost = Vec::new();
        for round in 0..*rounds {
            let ca = spawn_push(store, &a, "lu/x:1");
            let cb = spawn_push(store, &b, "lu/x:1");
            let sa = finish_push(store, ca, "race A");
            let sb = finish_push(store, cb, "race B");
            let winner = tag_link(store, "lu/x", "1");
            let (w, loser) = if winner == da { (&sa, &db) } else { (&sb, &da) };
            let previous = &w["images"][0]["previous"];
            if previous.as_str() != Some(loser.as_str()) {
                lost.push(format!(
                    "round {round}: tag ended on {winner} reporting previous {previous}, not {loser}"
                ));
            }
        }
        assert!(
            lost.is_empty(),
            "[{}] tag updates replaced silently: {lost:#?}",
            store.kind
        );
    }
}

/// The digest a tag's `current/link` holds, read straight from the store.
fn tag_link(store: &TestStore, repo: &str, tag: &str) -> String {
    let key = format!("docker/registry/v2/repositories/{repo}/_manifests/tags/{tag}/current/link");
    if let Some(d) = &store.dir {
        return std::fs::read_to_string(d.path().join(key)).unwrap();
    }
    let (endpoint, bucket, prefix) = store.s3.as_ref().unwrap();
    python(&format!(
        "import boto3,sys\nc=boto3.client('s3',endpoint_url='{endpoint}',region_name='us-east-1')\n\
         sys.stdout.write(c.get_object(Bucket='{bucket}',Key='{prefix}/{key}')['Body'].read().decode())\n"
    ))
}

// ---------------------------------------------------------------------------------
// 5. Hostile and broken archives
// ---------------------------------------------------------------------------------

/// One archive entry, with a raw name so that anything (`..`, absolute, non-UTF-8)
/// can be written.
#[derive(Clone)]
struct Ent {
    name: Vec<u8>,
    kind: tar::EntryType,
    data: Vec<u8>,
    link: Vec<u8>,
}

fn file(name: &str, data: &[u8]) -> Ent {
    Ent {
        name: name.as_bytes().to_vec(),
        kind: tar::EntryType::Regular,
        data: data.to_vec(),
        link: Vec::new(),
    }
}

fn link(kind: tar::EntryType, name: &str, target: &str) -> Ent {
    Ent {
        name: name.as_bytes().to_vec(),
        kind,
        data: Vec::new(),
        link: target.as_bytes().to_vec(),
    }
}

/// Builds a tar with the tar crate; names and link targets go into the ustar header
/// fields byte for byte (`Builder::append` does not validate them).
fn build_tar(entries: &[Ent]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_ustar();
        {
            let u = h.as_ustar_mut().unwrap();
            assert!(e.name.len() <= 100 && e.link.len() <= 100);
            u.name = [0; 100];
            u.name[..e.name.len()].copy_from_slice(&e.name);
            u.linkname = [0; 100];
            u.linkname[..e.link.len()].copy_from_slice(&e.link);
        }
        h.set_entry_type(e.kind);
        h.set_size(e.data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append(&h, &e.data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

/// The entries of fixtures/docker25-tiny.tar (directories included).
fn tiny_entries() -> Vec<Ent> {
    let data = std::fs::read(fixture("docker25-tiny.tar")).unwrap();
    let mut ar = tar::Archive::new(&data[..]);
    ar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let mut d = Vec::new();
            e.read_to_end(&mut d).unwrap();
            Ent {
                name: e.path_bytes().into_owned(),
                kind: e.header().entry_type(),
                data: d,
                link: e
                    .link_name_bytes()
                    .map(|l| l.into_owned())
                    .unwrap_or_default(),
            }
        })
        .collect()
}

const TINY_L1: &str =
    "blobs/sha256/0ef7687923faac0ee7b37b5f55712a07dba46c00c75946585a78e2adc0a7f4a0";
const TINY_L2: &str =
    "blobs/sha256/b8b209bb126a163ebb62ec8482d75d0f596f7d6b64f363df403b4e7462bc31b7";
const TINY_CFG: &str =
    "blobs/sha256/38da4580ae7f5397d04ab04944d5415579b212a0731c61c708628037df729ce0";

fn name_of(e: &Ent) -> String {
    String::from_utf8_lossy(&e.name).into_owned()
}

fn get<'a>(es: &'a [Ent], name: &str) -> &'a Ent {
    es.iter().find(|e| name_of(e) == name).unwrap()
}

fn replace(es: &[Ent], name: &str, new: Ent) -> Vec<Ent> {
    es.iter()
        .map(|e| {
            if name_of(e) == name {
                new.clone()
            } else {
                e.clone()
            }
        })
        .collect()
}

fn without(es: &[Ent], names: &[&str]) -> Vec<Ent> {
    es.iter()
        .filter(|e| !names.contains(&name_of(e).as_str()))
        .cloned()
        .collect()
}

fn with_manifest(es: &[Ent], manifest: serde_json::Value) -> Vec<Ent> {
    replace(
        es,
        "manifest.json",
        file("manifest.json", manifest.to_string().as_bytes()),
    )
}

fn tiny_manifest(config: &str, layers: &[&str]) -> serde_json::Value {
    serde_json::json!([{"Config": config, "RepoTags": ["h/a:1"], "Layers": layers}])
}

/// Every hostile case: (name, archive bytes, what the error must mention — any of).
fn hostile_corpus() -> Vec<(String, Vec<u8>, Vec<&'static str>)> {
    use tar::EntryType as T;
    let t = tiny_entries();
    let mut c: Vec<(String, Vec<Ent>, Vec<&'static str>)> = Vec::new();
    let mut add =
        |n: &str, es: Vec<Ent>, msg: &[&'static str]| c.push((n.into(), es, msg.to_vec()));

    // Wrong digests.
    let mut l2 = get(&t, TINY_L2).clone();
    l2.data[700] ^= 0x20;
    add(
        "layer bytes changed",
        replace(&t, TINY_L2, l2),
        &["corrupt"],
    );
    // Still valid JSON (a digit of a date changed), so only the digest can tell.
    let mut cfg = get(&t, TINY_CFG).clone();
    let pos = cfg.data.windows(4).position(|w| w == b"2023").unwrap();
    cfg.data[pos + 3] = b'4';
    add(
        "config bytes changed",
        replace(&t, TINY_CFG, cfg),
        &["corrupt"],
    );
    let mut cfg = get(&t, TINY_CFG).clone();
    cfg.data.truncate(cfg.data.len() - 2);
    add(
        "config not valid JSON",
        replace(&t, TINY_CFG, cfg),
        &["config"],
    );
    {
        // A config whose diff_ids do not match the layers, stored under its true digest.
        let mut v: serde_json::Value = serde_json::from_slice(&get(&t, TINY_CFG).data).unwrap();
        v["rootfs"]["diff_ids"][0] = format!("sha256:{}", "ab".repeat(32)).into();
        let bytes = serde_json::to_vec(&v).unwrap();
        let path = format!("blobs/sha256/{}", sha256_hex(&bytes));
        let mut es = without(&t, &[TINY_CFG]);
        es.insert(2, file(&path, &bytes));
        add(
            "config diff_id wrong",
            with_manifest(&es, tiny_manifest(&path, &[TINY_L1, TINY_L2])),
            &["does not match", "diff_id"],
        );
    }
    {
        // OCI path only (no manifest.json): the OCI manifest blob is changed.
        let index: serde_json::Value = serde_json::from_slice(&get(&t, "index.json").data).unwrap();
        let md = index["manifests"][0]["digest"].as_str().unwrap();
        let mp = format!("blobs/sha256/{}", md.trim_start_matches("sha256:"));
        let mut m = get(&t, &mp).clone();
        let pos = m.data.iter().position(|b| *b == b'7').unwrap();
        m.data[pos] = b'8';
        let es = without(&replace(&t, &mp, m), &["manifest.json"]);
        add("OCI manifest blob changed", es, &["corrupt"]);
        let es = without(&t, &["manifest.json", TINY_L1]);
        add("OCI layout missing a layer", es, &["missing"]);
    }
    add(
        "layer listed twice",
        with_manifest(&t, tiny_manifest(TINY_CFG, &[TINY_L1, TINY_L1])),
        &["does not match", "diff_id"],
    );

    // Duplicate entries.
    let mut es = t.clone();
    es.push(get(&t, "manifest.json").clone());
    add("manifest.json twice", es, &["duplicate"]);
    let mut es = t.clone();
    let mut l1 = get(&t, TINY_L1).clone();
    l1.data[600] ^= 1;
    es.push(l1);
    add("layer twice, different bytes", es, &["duplicate"]);
    let mut es = t.clone();
    es.insert(0, file("./manifest.json", b"[]"));
    add("./manifest.json and manifest.json", es, &["duplicate"]);
    let mut es = t.clone();
    es.push(link(T::Symlink, TINY_L1, "../../etc/passwd"));
    add("symlink over an existing layer", es, &["duplicate"]);
    let mut es = t.clone();
    es.push(link(T::Link, TINY_L2, TINY_L1));
    add("hardlink over an existing layer", es, &["duplicate"]);

    // Paths outside the archive.
    for (n, p) in [
        ("../x entry", "../x"),
        ("/abs entry", "/etc/x"),
        ("blobs/../../x entry", "blobs/../../x"),
        ("./../x entry", "./../x"),
    ] {
        let mut es = t.clone();
        es.insert(0, file(p, b"evil"));
        add(n, es, &["outside", "absolute"]);
    }
    let mut es = t.clone();
    es.insert(0, file("../evil.tar", &get(&t, TINY_L1).data));
    add(
        "manifest names ../evil.tar",
        with_manifest(&es, tiny_manifest(TINY_CFG, &["../evil.tar", TINY_L2])),
        &["outside", "absolute"],
    );

    // Symlinks and hardlinks.
    let mut es = t.clone();
    es.insert(0, link(T::Symlink, "evil", "../../etc/passwd"));
    add("symlink to ../../etc/passwd", es, &["escapes", "outside"]);
    let mut es = t.clone();
    es.insert(0, link(T::Symlink, "evil", "/etc/passwd"));
    add("symlink to /etc/passwd", es, &["absolute", "outside"]);
    let mut es = without(&t, &[TINY_L1]);
    es.insert(0, link(T::Symlink, "l/layer.tar", "../../etc/passwd"));
    add(
        "layer is a symlink outside",
        with_manifest(&es, tiny_manifest(TINY_CFG, &["l/layer.tar", TINY_L2])),
        &["escapes", "outside"],
    );
    add(
        "manifest.json is a symlink outside",
        replace(
            &t,
            "manifest.json",
            link(T::Symlink, "manifest.json", "../../etc/passwd"),
        ),
        &["escapes", "outside"],
    );
    add(
        "manifest.json is a symlink to /etc/passwd",
        replace(
            &t,
            "manifest.json",
            link(T::Symlink, "manifest.json", "/etc/passwd"),
        ),
        &["absolute", "outside"],
    );
    add(
        "manifest.json is a hardlink to /etc/passwd",
        replace(
            &t,
            "manifest.json",
            link(T::Link, "manifest.json", "/etc/passwd"),
        ),
        &["absolute", "outside"],
    );
    add(
        "manifest.json is a hardlink to ../x",
        replace(&t, "manifest.json", link(T::Link, "manifest.json", "../x")),
        &["outside"],
    );
    let mut es = without(&t, &[TINY_L1]);
    es.insert(0, link(T::Link, "l/layer.tar", "nowhere/layer.tar"));
    add(
        "layer is a hardlink to a missing file",
        with_manifest(&es, tiny_manifest(TINY_CFG, &["l/layer.tar", TINY_L2])),
        &["missing"],
    );
    let mut es = without(&t, &[TINY_L1]);
    es.insert(0, link(T::Link, "a/layer.tar", "b/layer.tar"));
    es.insert(0, link(T::Link, "b/layer.tar", "a/layer.tar"));
    add(
        "hardlink loop as a layer",
        with_manifest(&es, tiny_manifest(TINY_CFG, &["a/layer.tar", TINY_L2])),
        &["loop"],
    );
    let mut es = without(&t, &[TINY_L1]);
    es.insert(0, link(T::Symlink, "a/layer.tar", "../b/layer.tar"));
    es.insert(0, link(T::Symlink, "b/layer.tar", "../a/layer.tar"));
    add(
        "symlink loop as a layer",
        with_manifest(&es, tiny_manifest(TINY_CFG, &["a/layer.tar", TINY_L2])),
        &["loop"],
    );
    // Without index.json, so that manifest.json is the only way in.
    add(
        "manifest.json is a hardlink to itself",
        without(
            &replace(
                &t,
                "manifest.json",
                link(T::Link, "manifest.json", "manifest.json"),
            ),
            &["index.json"],
        ),
        &["loop", "itself", "manifest.json"],
    );
    let mut es = t.clone();
    es.insert(
        0,
        Ent {
            name: b"fifo".to_vec(),
            kind: T::Fifo,
            data: Vec::new(),
            link: Vec::new(),
        },
    );
    add("a fifo entry", es, &["not a regular file"]);

    // Names that are not UTF-8.
    let mut es = t.clone();
    es.insert(
        0,
        Ent {
            name: b"blobs/\xff\xfe".to_vec(),
            kind: T::Regular,
            data: b"x".to_vec(),
            link: Vec::new(),
        },
    );
    add("invalid UTF-8 name", es, &["UTF-8"]);
    let mut es = without(&t, &[TINY_L1]);
    es.insert(
        0,
        Ent {
            name: b"l\xc3\x28/layer.tar".to_vec(),
            kind: T::Regular,
            data: get(&t, TINY_L1).data.clone(),
            link: Vec::new(),
        },
    );
    add("invalid UTF-8 layer name", es, &["UTF-8"]);

    // Manifests that point at nothing, or are not manifests.
    add(
        "manifest names a missing config",
        with_manifest(&t, tiny_manifest("blobs/sha256/nope", &[TINY_L1, TINY_L2])),
        &["missing"],
    );
    add(
        "manifest names a missing layer",
        with_manifest(&t, tiny_manifest(TINY_CFG, &[TINY_L1, "blobs/sha256/nope"])),
        &["missing"],
    );
    add(
        "manifest.json lists no images",
        with_manifest(&t, serde_json::json!([])),
        &["no images"],
    );
    add(
        "manifest.json deeply nested",
        replace(
            &t,
            "manifest.json",
            file("manifest.json", "[".repeat(100_000).as_bytes()),
        ),
        &["manifest.json"],
    );
    add(
        "manifest.json is not JSON",
        replace(
            &t,
            "manifest.json",
            file("manifest.json", b"[{\"Config\": \xff"),
        ),
        &["manifest.json"],
    );

    let mut out: Vec<(String, Vec<u8>, Vec<&'static str>)> = c
        .into_iter()
        .map(|(n, es, m)| (n, build_tar(&es), m))
        .collect();

    // Entries a tar writer's path checks would refuse, written as raw headers: a GNU
    // long name (`././@LongLink`) and a pax `path` that climb out of the archive, each
    // followed by the whole tiny archive; and a header whose size runs past the end.
    let tail = std::fs::read(fixture("docker25-tiny.tar")).unwrap();
    let long = format!("{}/../../../x\0", "d".repeat(120));
    let mut gnu = tar::Builder::new(Vec::new());
    let mut ll = tar::Header::new_gnu();
    ll.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
    ll.set_entry_type(tar::EntryType::GNULongName);
    ll.set_size(long.len() as u64);
    ll.set_mode(0o644);
    ll.set_cksum();
    gnu.append(&ll, long.as_bytes()).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_path("placeholder").unwrap();
    h.set_size(4);
    h.set_mode(0o644);
    h.set_cksum();
    gnu.append(&h, &b"evil"[..]).unwrap();
    let mut bytes = gnu.into_inner().unwrap();
    bytes.truncate(bytes.len() - 1024); // drop the end-of-archive blocks
    bytes.extend_from_slice(&tail);
    out.push(("GNU long name ../".into(), bytes, vec!["outside"]));

    let mut pax = tar::Builder::new(Vec::new());
    pax.append_pax_extensions([("path", &b"../pax-evil"[..])])
        .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_size(4);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    pax.append_data(&mut h, "innocent", &b"evil"[..]).unwrap();
    let mut bytes = pax.into_inner().unwrap();
    bytes.truncate(bytes.len() - 1024); // drop the end-of-archive blocks
    bytes.extend_from_slice(&tail);
    out.push(("pax path ../".into(), bytes, vec!["outside"]));

    let mut bytes = build_tar(&[file("big/layer.tar", b"0123456789")]);
    bytes.truncate(512 + 512);
    let mut h = tar::Header::from_byte_slice(&bytes[..512]).clone();
    h.set_size(8 << 30);
    h.set_cksum();
    bytes[..512].copy_from_slice(h.as_bytes());
    out.push(("size field says 8 GiB".into(), bytes, vec!["truncated"]));
    out
}

#[test]
fn hostile_archives_are_refused_and_leave_the_store_unchanged() {
    let start = Instant::now();
    let corpus = hostile_corpus();
    let mut failures = Vec::new();
    for (name, bytes, msgs) in &corpus {
        // A fresh store each time, so one wrongly accepted archive does not mask others.
        let store = TestStore::local();
        let tmp = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(tmp.path(), bytes).unwrap();
        let o = run_limited(
            &store,
            &["push", "h/a:1"],
            Some(tmp.path()),
            Duration::from_secs(30),
        );
        let outcome = clean_failure(&o, name)
            .and_then(|line| {
                if msgs.iter().any(|m| line.contains(m)) {
                    Ok(line)
                } else {
                    Err(format!("{name}: expected one of {msgs:?} in: {line}"))
                }
            })
            .and_then(|line| store_unchanged(&store, name).map(|_| line));
        match outcome {
            Ok(line) => eprintln!("ok    {name}: {line}"),
            Err(e) => {
                eprintln!("FAIL  {e}");
                failures.push(name.clone());
            }
        }
    }
    eprintln!(
        "{} hostile archives in {:.1}s",
        corpus.len(),
        start.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "cases that failed: {failures:?}");
}

/// Cuts fixtures/docker25-tiny.tar inside every header, right after every header,
/// in the middle of every file's data and right after it (before the padding).
/// Every cut before the end of `manifest.json` must fail; later cuts must fail too
/// unless they fall exactly on an entry boundary (an archive missing only trailing
/// entries it does not need, or its end-of-archive blocks).
#[test]
fn truncation_at_every_structural_point() {
    let data = std::fs::read(fixture("docker25-tiny.tar")).unwrap();
    let mut ar = tar::Archive::new(&data[..]);
    let mut bounds = Vec::new(); // (header position, data position, size, name)
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        bounds.push((
            e.raw_header_position(),
            e.raw_file_position(),
            e.size(),
            e.path().unwrap().to_string_lossy().into_owned(),
        ));
    }
    let manifest = bounds.iter().find(|b| b.3 == "manifest.json").unwrap();
    let manifest_end = manifest.1 + manifest.2.div_ceil(512) * 512;
    let boundaries: Vec<u64> = bounds
        .iter()
        .map(|b| b.0)
        .chain(std::iter::once({
            let last = bounds.last().unwrap();
            last.1 + last.2.div_ceil(512) * 512
        }))
        .collect();
    let mut cuts = vec![0u64, 1, 511];
    for (h, d, size, _) in &bounds {
        cuts.extend([h + 1, h + 100, h + 257, h + 511, *d]);
        if *size > 1 {
            cuts.push(d + size / 2);
        }
        if *size > 0 && size % 512 != 0 {
            cuts.push(d + size);
            cuts.push(d + size + 1);
        }
    }
    let end = *boundaries.last().unwrap();
    cuts.extend([end, end + 512, end + 1000]);
    cuts.sort();
    cuts.dedup();
    let strict = TestStore::local();
    let lenient = TestStore::local();
    let tmp = tempfile::tempdir().unwrap();
    let (mut failed, mut allowed_ok) = (0, 0);
    for cut in cuts {
        let may_succeed = cut >= manifest_end && boundaries.contains(&cut) || cut >= end;
        let path = tmp.path().join(format!("cut{cut}.tar"));
        std::fs::write(&path, &data[..cut as usize]).unwrap();
        let store = if may_succeed { &lenient } else { &strict };
        let reference = format!("t/a:{cut}");
        let o = run_limited(
            store,
            &["push", &reference],
            Some(&path),
            Duration::from_secs(30),
        );
        if may_succeed && o.status.success() {
            allowed_ok += 1;
            continue;
        }
        let line = expect_clean_failure(&o, &format!("cut at {cut}"));
        assert!(
            !store.visible_tags().contains(&reference),
            "cut at {cut}: tag visible"
        );
        failed += 1;
        eprintln!("cut {cut:>5}: {line}");
    }
    assert_store_unchanged(&strict, "truncated archives");
    eprintln!("{failed} truncations refused, {allowed_ok} boundary cuts accepted");
}

/// A 40 MiB manifest.json: refused as too large, without buffering it first.
#[test]
fn huge_manifest_json_is_refused() {
    let store = TestStore::local();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("huge.tar");
    let mut es = without(&tiny_entries(), &["manifest.json"]);
    let mut m = b"[{\"Config\":\"x\",\"RepoTags\":[\"h/a:1\"],\"Layers\":[\"".to_vec();
    m.resize(40 << 20, b'a');
    m.extend_from_slice(b"\"]}]");
    es.push(file("manifest.json", &m));
    std::fs::write(&path, build_tar(&es)).unwrap();
    let start = Instant::now();
    let o = run_limited(
        &store,
        &["push", "h/a:1"],
        Some(&path),
        Duration::from_secs(30),
    );
    let line = expect_clean_failure(&o, "40 MiB manifest.json");
    eprintln!("{line} ({:.2}s)", start.elapsed().as_secs_f64());
    assert!(
        line.contains("too large") && line.contains("manifest.json"),
        "{line}"
    );
    assert_store_unchanged(&store, "40 MiB manifest.json");
}

/// sha256 of 4 GiB of zeros: the diff_id of the bomb layers below (so the only thing
/// wrong with them is their expansion ratio).
const ZEROS_4GIB_SHA256: &str = "8479e43911dc45e89f934fe48d01297e16f51d17aa561d4d1c216b1ae0fcddca";
const BOMB_SIZE: u64 = 4 << 30;

/// A gzip stream of 4 GiB of zeros (~4 MiB), written without ever holding it: deflate
/// 1 MiB of zeros ending in a full flush (which resets the compressor, so every such
/// block compresses to the same bytes), repeat that block, close the stream, and end
/// with the CRC-32 and length of 4 GiB of zeros.
fn write_gzip_bomb(out: &mut impl Write) {
    use flate2::{Compress, Compression, FlushCompress};
    let zeros = vec![0u8; MIB as usize];
    let mut c = Compress::new(Compression::best(), false);
    let deflate = |c: &mut Compress, input: &[u8], flush: FlushCompress| -> Vec<u8> {
        let mut out = Vec::with_capacity(64 << 10);
        let start_in = c.total_in();
        loop {
            let done = (c.total_in() - start_in) as usize;
            c.compress_vec(&input[done..], &mut out, flush).unwrap();
            if (c.total_in() - start_in) as usize == input.len() && out.len() < out.capacity() {
                return out;
            }
            out.reserve(64 << 10);
        }
    };
    let first = deflate(&mut c, &zeros, FlushCompress::Full);
    let block = deflate(&mut c, &zeros, FlushCompress::Full);
    assert_eq!(
        first, block,
        "full-flushed blocks of zeros must repeat exactly"
    );
    let last = deflate(&mut c, &[], FlushCompress::Finish);
    let mut crc = crc32fast::Hasher::new();
    out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 255])
        .unwrap();
    for _ in 0..BOMB_SIZE / MIB {
        out.write_all(&block).unwrap();
        crc.update(&zeros);
    }
    out.write_all(&last).unwrap();
    out.write_all(&crc.finalize().to_le_bytes()).unwrap();
    out.write_all(&(BOMB_SIZE as u32).to_le_bytes()).unwrap();
}

/// zstd: one frame of 64 MiB of zeros repeated (concatenated frames are one stream).
fn write_zstd_bomb(out: &mut impl Write) {
    let frame = zstd::encode_all(&vec![0u8; 64 << 20][..], 19).unwrap();
    for _ in 0..BOMB_SIZE / (64 << 20) {
        out.write_all(&frame).unwrap();
    }
}

/// A docker25-form archive (manifest.json + blobs) whose one layer is `bomb`.
fn bomb_archive(path: &Path, bomb: &dyn Fn(&mut dyn Write)) -> u64 {
    let blob = tempfile::NamedTempFile::new().unwrap();
    {
        let mut w = std::io::BufWriter::new(blob.reopen().unwrap());
        bomb(&mut w);
        w.flush().unwrap();
    }
    let bytes = std::fs::read(blob.path()).unwrap();
    let layer = format!("blobs/sha256/{}", sha256_hex(&bytes));
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{ZEROS_4GIB_SHA256}")]},
    }))
    .unwrap();
    let cfg = format!("blobs/sha256/{}", sha256_hex(&config));
    let manifest = tiny_manifest(&cfg, &[&layer]).to_string();
    let tar = build_tar(&[
        file(&layer, &bytes),
        file(&cfg, &config),
        file("manifest.json", manifest.as_bytes()),
    ]);
    std::fs::write(path, tar).unwrap();
    bytes.len() as u64
}

fn bomb_is_bounded(kind: &str, bomb: &dyn Fn(&mut dyn Write)) {
    let store = TestStore::local();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("bomb.tar");
    let t = Instant::now();
    let size = bomb_archive(&path, bomb);
    eprintln!(
        "{kind} bomb: {size} bytes for {BOMB_SIZE} (made in {:.1}s)",
        t.elapsed().as_secs_f64()
    );
    let start = Instant::now();
    let o = run_limited(
        &store,
        &["push", "h/a:1"],
        Some(&path),
        Duration::from_secs(60),
    );
    let secs = start.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    eprintln!(
        "{kind} bomb: {:?} after {secs:.1}s: {}",
        o.status,
        err.trim()
    );
    let line = expect_clean_failure(&o, &format!("{kind} bomb"));
    let l = line.to_lowercase();
    assert!(
        l.contains("decompress")
            && ["limit", "ratio", "bomb", "expands"]
                .iter()
                .any(|w| l.contains(w)),
        "{kind} bomb: the error must name the decompression limit: {line}"
    );
    assert!(secs < 10.0, "{kind} bomb: took {secs:.1}s: not bounded");
    assert_store_unchanged(&store, &format!("{kind} bomb"));
}

#[test]
fn gzip_bomb_layer_is_bounded() {
    bomb_is_bounded("gzip", &|w| write_gzip_bomb(&mut &mut *w));
}

#[test]
fn zstd_bomb_layer_is_bounded() {
    bomb_is_bounded("zstd", &|w| write_zstd_bomb(&mut &mut *w));
}

// ---------------------------------------------------------------------------------
// 6. Mutation fuzzing (stable, deterministic). A cargo-fuzz target needs nightly,
//    which this project does not use; this test is the bounded, repeatable stand-in.
// ---------------------------------------------------------------------------------

fn mutate(base: &[u8], rng: &mut Rng) -> (String, Vec<u8>) {
    let mut d = base.to_vec();
    let len = d.len() as u64;
    let blocks = (len / 512).max(1);
    match rng.below(7) {
        0 => {
            let n = rng.range(1, 5);
            for _ in 0..n {
                let i = rng.below(len) as usize;
                d[i] ^= 1 << rng.below(8);
            }
            ("bit flips".into(), d)
        }
        1 => {
            let i = rng.below(len) as usize;
            let n = (rng.range(1, 17) as usize).min(d.len() - i);
            for b in &mut d[i..i + n] {
                *b = rng.next() as u8;
            }
            (format!("{n} random bytes at {i}"), d)
        }
        2 => {
            let i = rng.below(len) as usize;
            d.truncate(i);
            (format!("truncated at {i}"), d)
        }
        3 => {
            let i = rng.below(len + 1) as usize;
            let n = rng.range(1, 65) as usize;
            let junk: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            d.splice(i..i, junk);
            (format!("{n} bytes inserted at {i}"), d)
        }
        4 => {
            let i = rng.below(len) as usize;
            let n = (rng.range(1, 1025) as usize).min(d.len() - i);
            d.drain(i..i + n);
            (format!("{n} bytes removed at {i}"), d)
        }
        5 => {
            // A header field of some block: name, mode, size, checksum, type, link, magic.
            let b = (rng.below(blocks) * 512) as usize;
            let (lo, hi) = [
                (0, 100),
                (100, 108),
                (124, 136),
                (148, 156),
                (156, 157),
                (157, 257),
                (257, 265),
            ][rng.below(7) as usize];
            if b + hi <= d.len() {
                let i = b + rng.range(lo as u64, hi as u64) as usize;
                d[i] = [b'7', b'0', 0, b'/', b'.', 0xff, b' '][rng.below(7) as usize];
            }
            (format!("header field byte in block {}", b / 512), d)
        }
        _ => {
            // Duplicate or drop a whole 512-byte block.
            let b = (rng.below(blocks) * 512) as usize;
            let end = (b + 512).min(d.len());
            if rng.below(2) == 0 {
                let blk = d[b..end].to_vec();
                d.splice(b..b, blk);
                (format!("block {} duplicated", b / 512), d)
            } else {
                d.drain(b..end);
                (format!("block {} dropped", b / 512), d)
            }
        }
    }
}

#[test]
fn mutation_fuzz_never_panics_and_never_half_commits() {
    const RUNS: usize = 300;
    let seed = std::env::var("S3DOCK_TEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_f022);
    eprintln!("mutation fuzz: seed {seed} (set S3DOCK_TEST_SEED to change)");
    let mut rng = Rng::new(seed);
    let tiny = std::fs::read(fixture("docker25-tiny.tar")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tiny).unwrap();
    let bases = [
        ("docker25-tiny.tar", tiny.clone()),
        (
            "umoci-layout.tar",
            std::fs::read(fixture("umoci-layout.tar")).unwrap(),
        ),
        ("docker25-tiny.tar.gz", gz.finish().unwrap()),
    ];
    let store = TestStore::local();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("m.tar");
    let start = Instant::now();
    let (mut ok, mut refused) = (0, 0);
    for i in 0..RUNS {
        let (base_name, base) = &bases[i % bases.len()];
        let (what, data) = mutate(base, &mut rng);
        std::fs::write(&path, &data).unwrap();
        let reference = format!("m/a:{i}");
        let o = run_limited(
            &store,
            &["push", "-q", &reference],
            Some(&path),
            Duration::from_secs(30),
        );
        let err = String::from_utf8_lossy(&o.stderr);
        let case = format!("run {i} ({base_name}, {what})");
        assert!(!err.contains("panicked"), "{case}: panic: {err}");
        match o.status.code() {
            Some(0) => ok += 1,
            Some(1) => {
                refused += 1;
                expect_clean_failure(&o, &case);
                assert!(
                    !store.visible_tags().contains(&reference),
                    "{case}: failed but left the tag"
                );
            }
            other => panic!("{case}: exit status {other:?}: {err}"),
        }
    }
    eprintln!(
        "mutation fuzz: {RUNS} runs in {:.1}s: {ok} accepted, {refused} refused",
        start.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------
// 7. Credentials never printed; plain http off loopback warns
// ---------------------------------------------------------------------------------

fn assert_no_secret(o: &Output, secrets: &[&str], what: &str) {
    for s in secrets {
        for (name, stream) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
            assert!(
                !String::from_utf8_lossy(stream).contains(s),
                "{what}: {s:?} appears on {name}"
            );
        }
    }
}

#[test]
fn credentials_never_appear_in_output() {
    let secret = format!(
        "SecretMarker{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let tiny = fixture("docker25-tiny.tar");
    let token = format!(
        "TokenMarker{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    if let Some(store) = TestStore::s3("moto") {
        // moto accepts any key pair and session token: successful runs at debug level
        // (-vv), and at the most verbose level there is (S3DOCK_LOG=trace).
        let run = |args: &[&str], trace: bool| {
            let mut c = store.cmd();
            c.args(args)
                .env("AWS_SECRET_ACCESS_KEY", &secret)
                .env("AWS_SESSION_TOKEN", &token)
                .stdin(Stdio::from(std::fs::File::open(&tiny).unwrap()));
            if trace {
                c.env("S3DOCK_LOG", "trace");
            }
            c.output().unwrap()
        };
        let o = run(&["-vv", "push", "--json", "cr/a:1"], false);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(o.stderr.len() > 1000, "-vv should log a lot");
        assert_no_secret(&o, &[&secret, &token], "moto push -vv --json");
        let o = run(&["push", "--json", "cr/a:2"], true);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_no_secret(&o, &[&secret, &token], "moto push, trace log");
        let o = run(&["-vv", "pull", "cr/a:1"], false);
        assert!(o.status.success());
        assert_no_secret(&o, &[&secret, &token], "moto pull -vv");
        let o = run(&["-vv", "tags", "--json", "cr/a"], false);
        assert_no_secret(&o, &[&secret, &token], "moto tags -vv --json");
    }
    if let Some(store) = TestStore::s3("s3s") {
        // s3s-fs checks signatures: a wrong secret is refused.
        for verbose in [&[][..], &["-vv"][..], &["--json"][..]] {
            let mut args = verbose.to_vec();
            args.extend(["push", "cr/a:1"]);
            let o = store
                .cmd()
                .args(&args)
                .env("AWS_SECRET_ACCESS_KEY", &secret)
                .stdin(Stdio::from(std::fs::File::open(&tiny).unwrap()))
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success(), "wrong secret accepted");
            let line = err
                .lines()
                .find(|l| l.starts_with("s3dock: error: "))
                .unwrap_or_else(|| panic!("no error line: {err}"));
            eprintln!("wrong secret {verbose:?}: {line}");
            assert!(
                line.contains("Signature") || line.contains("403") || line.contains("denied"),
                "{line}"
            );
            assert_no_secret(&o, &[&secret], &format!("s3s wrong secret {verbose:?}"));
        }
        assert!(store.visible_tags().is_empty());
    }
}

#[test]
fn plain_http_endpoint_warns_only_off_loopback() {
    // A local directory store: the endpoint is never contacted.
    let tiny = fixture("docker25-tiny.tar");
    for (endpoint, warns) in [
        ("http://10.9.8.7", true),
        ("http://10.9.8.7:9000/", true),
        ("http://s3.example.invalid", true),
        ("http://127.0.0.1:1", false),
        ("http://localhost:1", false),
        ("http://[::1]:1", false),
        ("https://10.9.8.7", false),
    ] {
        let store = TestStore::local();
        let o = store
            .cmd()
            .args(["--endpoint", endpoint, "push", "w/a:1"])
            .stdin(Stdio::from(std::fs::File::open(&tiny).unwrap()))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{endpoint}: {err}");
        assert_eq!(
            err.to_lowercase().contains("unencrypted"),
            warns,
            "{endpoint}: warning expected: {warns}; stderr: {err}"
        );
        if warns {
            assert!(err.contains(endpoint.trim_end_matches('/')), "{err}");
        }
    }
}

// ---------------------------------------------------------------------------------
// 8. Disk full on the local-directory store
// ---------------------------------------------------------------------------------

/// A tmpfs mounted for the test; unmounted on drop (also when the test fails).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output();
        let mounted = o.as_ref().is_ok_and(|o| o.status.success());
        if !mounted {
            let why = match &o {
                Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                Err(e) => e.to_string(),
            };
            eprintln!("cannot mount a tmpfs here: {why}");
        }
        // Fails the test under S3DOCK_REQUIRE_PEERS=1 rather than passing untested.
        if !require("a tmpfs mount (root) for the disk-full test", mounted) {
            return None;
        }
        Some(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let o = Command::new("umount").arg(&self.0).output();
        if !o.is_ok_and(|o| o.status.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).output();
        }
    }
}

fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&p) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

fn disk_full_case(size: &str, archive: &Path, extra: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let Some(_guard) = Tmpfs::mount(&mnt, size) else {
        return;
    };
    let root = mnt.join("store");
    let store = TestStore {
        kind: "dir-on-small-tmpfs",
        args: vec!["--store".into(), root.to_string_lossy().into_owned()],
        dir: None,
        s3: None,
    };
    let mut args = vec!["push", "--compression", "none"];
    args.extend_from_slice(extra);
    args.extend(["-i", archive.to_str().unwrap(), "f/a:1"]);
    let o = run_limited(&store, &args, None, Duration::from_secs(60));
    let line = expect_clean_failure(&o, &format!("push into a {size} tmpfs"));
    eprintln!("{size} tmpfs: {line}");
    assert!(
        line.to_lowercase().contains("no space"),
        "the error must say the disk is full: {line}"
    );
    let files = files_under(&root);
    let mut blobs = 0;
    for f in &files {
        let rel = f
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            !rel.starts_with("docker/registry/v2/repositories/")
                || rel.contains("/_layers/")
                || rel.contains("/_manifests/revisions/"),
            "{size} tmpfs: {rel} written although the push failed"
        );
        if let Some(rest) = rel.strip_prefix("docker/registry/v2/blobs/sha256/") {
            let hex = rest.split('/').nth(1).unwrap();
            assert_eq!(
                sha256_hex(&std::fs::read(f).unwrap()),
                hex,
                "{size} tmpfs: partial blob at a final path: {rel}"
            );
            blobs += 1;
        }
    }
    let leftovers: Vec<&PathBuf> = files
        .iter()
        .filter(|f| f.to_string_lossy().contains("tmp"))
        .collect();
    eprintln!(
        "{size} tmpfs: {blobs} complete blobs; temp files left: {}",
        leftovers.len()
    );
}

#[test]
fn disk_full_gives_a_clear_error_and_no_partial_blob() {
    // The ~2 MB busybox layer does not fit in 1 MiB (single-part write) ...
    disk_full_case("1m", &fixture("docker-legacy.tar"), &[]);
    // ... and a 20 MiB layer in 5 MiB parts runs out of room in the middle.
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("full.tar");
    generate_archive_file(&archive, &mib_layers(&[20], 81), "f/a:1");
    disk_full_case("8m", &archive, &["--part-size", "5MiB"]);
}
