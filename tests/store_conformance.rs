//! One conformance suite for every storage driver (in the spirit of distribution's
//! driver testsuites): the same tests against the directory store and each S3
//! server `scripts/s3-servers.sh` runs. Another S3 server is one more row in
//! [`S3_SERVERS`]. A final section tests what only the directory store can meet:
//! hostile files planted in it (symlinks, FIFOs, oversized documents).

mod common;

use bytes::Bytes;
use common::require;
use futures::future::join_all;
use futures::StreamExt;
use s3dock::store::{FsDriver, Precondition, S3Driver, S3Options, StorageDriver, StoreError};
use std::sync::Arc;
use std::time::Duration;

/// An S3 server under test: its name, the env var with its endpoint, and what it is
/// known not to do (see /work/shared/docs/test-servers.md).
struct S3Server {
    name: &'static str,
    env: &'static str,
    /// `If-None-Match: *` and `If-Match` are checked at all.
    conditional_writes: bool,
    /// Conditional writes are atomic (exactly one winner of a race).
    atomic_conditional_writes: bool,
    /// ListMultipartUploads / ListParts work, so uploads can be resumed.
    lists_uploads: bool,
    /// Longest key the server accepts, if limited.
    max_key_len: Option<usize>,
}

const S3_SERVERS: &[S3Server] = &[
    S3Server {
        name: "s3s",
        env: "S3DOCK_TEST_S3S",
        conditional_writes: true,
        // s3s-fs checks the condition and writes in two steps: racing writers all win.
        atomic_conditional_writes: false,
        lists_uploads: false,
        // It names a sidecar file after the base64 of the whole key (ENAMETOOLONG).
        max_key_len: Some(150),
    },
    S3Server {
        name: "moto",
        env: "S3DOCK_TEST_MOTO",
        conditional_writes: true,
        atomic_conditional_writes: true,
        lists_uploads: true,
        max_key_len: None,
    },
    S3Server {
        name: "garage",
        env: "S3DOCK_TEST_GARAGE",
        // Garage 2.5 accepts both preconditions and writes anyway (s3dock warns there).
        conditional_writes: false,
        atomic_conditional_writes: false,
        lists_uploads: true,
        max_key_len: None,
    },
];

/// One store under test, with all its keys under a fresh prefix.
struct Store {
    name: &'static str,
    driver: Arc<dyn StorageDriver>,
    prefix: String,
    conditional_writes: bool,
    atomic_conditional_writes: bool,
    lists_uploads: bool,
    max_key_len: Option<usize>,
    _dir: Option<tempfile::TempDir>,
}

impl Store {
    fn key(&self, k: &str) -> String {
        format!("{}{k}", self.prefix)
    }
}

fn unique() -> String {
    format!("conf-{}/", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// The directory store and every S3 server that is up (a missing one fails under
/// S3DOCK_REQUIRE_PEERS=1).
async fn stores() -> Vec<Store> {
    stores_signing(None).await
}

/// [`stores`] with the S3 drivers' payload signing set (None: by the endpoint's scheme).
async fn stores_signing(payload_signing: Option<bool>) -> Vec<Store> {
    let dir = tempfile::tempdir().unwrap();
    let mut v = vec![Store {
        name: "dir",
        driver: Arc::new(FsDriver::new(dir.path().to_path_buf())),
        prefix: unique(),
        conditional_writes: true,
        atomic_conditional_writes: true,
        lists_uploads: false,
        max_key_len: None,
        _dir: Some(dir),
    }];
    for s in S3_SERVERS {
        let endpoint = std::env::var(s.env).ok();
        if !require(
            &format!("S3 server {} ({})", s.name, s.env),
            endpoint.is_some(),
        ) {
            continue;
        }
        let bucket = std::env::var("S3DOCK_TEST_BUCKET").unwrap_or_else(|_| "s3dock-test".into());
        let opts = S3Options {
            endpoint,
            path_style: true,
            max_attempts: 3,
            payload_signing,
            ..Default::default()
        };
        let driver = S3Driver::connect(&bucket, &opts).await.unwrap();
        v.push(Store {
            name: s.name,
            driver: Arc::new(driver),
            prefix: unique(),
            conditional_writes: s.conditional_writes,
            atomic_conditional_writes: s.atomic_conditional_writes,
            lists_uploads: s.lists_uploads,
            max_key_len: s.max_key_len,
            _dir: None,
        });
    }
    v
}

fn data(n: usize, seed: u8) -> Bytes {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_keys_are_not_found() {
    for s in stores().await {
        let k = s.key("no/such/key");
        let d = &s.driver;
        let n = s.name;
        assert!(
            matches!(d.get(&k, 1 << 20).await, Err(StoreError::NotFound(_))),
            "{n}"
        );
        assert!(
            matches!(
                d.get_with_etag(&k, 1 << 20).await,
                Err(StoreError::NotFound(_))
            ),
            "{n}"
        );
        assert!(
            matches!(d.stat(&k).await, Err(StoreError::NotFound(_))),
            "{n}"
        );
        assert!(
            matches!(d.get_range(&k, 0, 10).await, Err(StoreError::NotFound(_))),
            "{n}"
        );
        d.delete(&k).await.unwrap_or_else(|e| panic!("{n}: {e}"));
        assert!(d.list(&s.key("no/")).await.unwrap().is_empty(), "{n}");
        assert!(d.list_dirs(&s.key("no/")).await.unwrap().is_empty(), "{n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_create_and_replace() {
    for s in stores().await {
        let (d, n, k) = (&s.driver, s.name, s.key("cas/doc"));
        if !s.conditional_writes {
            // Assert what the server does, so a release that starts checking shows up here.
            d.put(&k, data(10, 1), Precondition::IfAbsent)
                .await
                .unwrap();
            d.put(&k, data(10, 2), Precondition::IfAbsent)
                .await
                .unwrap_or_else(|e| {
                    panic!("{n} now refuses a second create ({e}): update S3_SERVERS")
                });
            continue;
        }
        d.put(&k, data(10, 1), Precondition::IfAbsent)
            .await
            .unwrap();
        assert!(
            matches!(
                d.put(&k, data(10, 2), Precondition::IfAbsent).await,
                Err(StoreError::PreconditionFailed(_))
            ),
            "{n}: a second create must fail"
        );
        let (b, etag1) = d.get_with_etag(&k, 1 << 20).await.unwrap();
        assert_eq!(b, data(10, 1), "{n}");
        d.put(&k, data(10, 3), Precondition::IfMatch(etag1.clone()))
            .await
            .unwrap_or_else(|e| panic!("{n}: {e}"));
        assert_eq!(d.get(&k, 1 << 20).await.unwrap(), data(10, 3), "{n}");
        assert!(
            matches!(
                d.put(&k, data(10, 4), Precondition::IfMatch(etag1)).await,
                Err(StoreError::PreconditionFailed(_))
            ),
            "{n}: a replace at a stale version must fail"
        );
        assert_eq!(d.get(&k, 1 << 20).await.unwrap(), data(10, 3), "{n}");
        let (_, etag3) = d.get_with_etag(&k, 1 << 20).await.unwrap();
        d.delete(&k).await.unwrap();
        assert!(
            matches!(
                d.put(&k, data(10, 5), Precondition::IfMatch(etag3)).await,
                Err(StoreError::PreconditionFailed(_))
            ),
            "{n}: a replace of a deleted key must fail"
        );
        // An unconditional write replaces whatever is there.
        d.put(&k, data(10, 6), Precondition::None).await.unwrap();
        d.put(&k, data(12, 7), Precondition::None).await.unwrap();
        assert_eq!(d.get(&k, 1 << 20).await.unwrap(), data(12, 7), "{n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_conditional_writers_have_one_winner() {
    for s in stores().await {
        if !s.atomic_conditional_writes {
            eprintln!(
                "{}: conditional writes are not atomic there; race not tested",
                s.name
            );
            continue;
        }
        let (d, n) = (&s.driver, s.name);
        for round in 0..3u8 {
            let k = s.key(&format!("race/{round}"));
            let creates = (0..12u8).map(|i| d.put(&k, data(20, i), Precondition::IfAbsent));
            let won = join_all(creates).await;
            let winners = won.iter().filter(|r| r.is_ok()).count();
            assert!(
                won.iter()
                    .all(|r| matches!(r, Ok(()) | Err(StoreError::PreconditionFailed(_)))),
                "{n}: {won:?}"
            );
            assert_eq!(winners, 1, "{n}: racing creates");
            let (_, etag) = d.get_with_etag(&k, 1 << 20).await.unwrap();
            let replaces =
                (0..12u8).map(|i| d.put(&k, data(30, i), Precondition::IfMatch(etag.clone())));
            let won = join_all(replaces).await;
            let winners = won.iter().filter(|r| r.is_ok()).count();
            assert_eq!(winners, 1, "{n}: racing replaces: {won:?}");
        }
    }
}

/// `copy_from`: S3 copies server-side from a store the same endpoint and credentials
/// reach (here: its own bucket), with the exact bytes; from another kind of store, and
/// on the directory store, it is `Unsupported` (copy then streams).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_copies() {
    let all = stores().await;
    let dir = &all[0].driver;
    for s in &all {
        let (d, n) = (&s.driver, s.name);
        let (from, to) = (s.key("copy/from data"), s.key("copy/to"));
        let body = data(300_000, 4);
        d.put(&from, body.clone(), Precondition::None)
            .await
            .unwrap();
        let r = d.copy_from(d.as_ref(), &from, &to, 300_000, 2).await;
        if n == "dir" {
            assert!(matches!(r, Err(StoreError::Unsupported(_))), "{n}: {r:?}");
            continue;
        }
        r.unwrap_or_else(|e| panic!("{n}: {e}"));
        assert_eq!(d.get(&to, 1 << 20).await.unwrap(), body, "{n}");
        let r = d.copy_from(dir.as_ref(), &from, &to, 300_000, 2).await;
        assert!(matches!(r, Err(StoreError::Unsupported(_))), "{n}: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranged_reads() {
    for s in stores().await {
        let (d, n, k) = (&s.driver, s.name, s.key("range/obj"));
        let body = data(1000, 9);
        d.put(&k, body.clone(), Precondition::None).await.unwrap();
        assert_eq!(d.stat(&k).await.unwrap(), 1000, "{n}");
        assert_eq!(
            d.get_range(&k, 10, 100).await.unwrap(),
            body.slice(10..110),
            "{n}"
        );
        assert_eq!(
            d.get_range(&k, 990, 10).await.unwrap(),
            body.slice(990..),
            "{n}"
        );
        assert!(d.get_range(&k, 0, 0).await.unwrap().is_empty(), "{n}");
        for (start, len) in [(995, 10), (1000, 1), (5000, 3)] {
            let r = d.get_range(&k, start, len).await;
            assert!(
                matches!(r, Err(StoreError::OutOfRange { .. })),
                "{n}: range {start}+{len} of 1000 bytes: {r:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_whole_reads_are_refused() {
    for s in stores().await {
        let (d, n, k) = (&s.driver, s.name, s.key("big/doc"));
        d.put(&k, data(5000, 1), Precondition::None).await.unwrap();
        match d.get(&k, 4096).await {
            Err(StoreError::TooLarge { size, max, .. }) => {
                assert_eq!((size, max), (5000, 4096), "{n}")
            }
            r => panic!("{n}: a 5000-byte object read with a 4096 limit: {r:?}"),
        }
        assert!(
            matches!(
                d.get_with_etag(&k, 4999).await,
                Err(StoreError::TooLarge { .. })
            ),
            "{n}"
        );
        assert_eq!(d.get(&k, 5000).await.unwrap().len(), 5000, "{n}");
    }
}

/// More than one page (1,000 keys) of objects and of common prefixes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_paginates_past_a_thousand_keys() {
    const N: usize = 1100;
    for s in stores().await {
        let (d, n) = (&s.driver, s.name);
        let keys: Vec<String> = (0..N).map(|i| s.key(&format!("many/{i:05}/x"))).collect();
        futures::stream::iter(&keys)
            .map(|k| d.put(k, Bytes::from_static(b"1"), Precondition::None))
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        d.put(
            &s.key("many/top"),
            Bytes::from_static(b"22"),
            Precondition::None,
        )
        .await
        .unwrap();
        let listed = d.list(&s.key("many/")).await.unwrap();
        assert_eq!(listed.len(), N + 1, "{n}");
        assert!(
            listed.windows(2).all(|w| w[0].key < w[1].key),
            "{n}: sorted"
        );
        assert_eq!(listed[0].key, keys[0], "{n}");
        assert!(listed.iter().all(|o| o.size == 1 || o.size == 2), "{n}");
        let dirs = d.list_dirs(&s.key("many/")).await.unwrap();
        let expected: Vec<String> = (0..N).map(|i| format!("{i:05}")).collect();
        assert_eq!(dirs, expected, "{n}: the object `top` is no directory");
        assert_eq!(d.list(&s.key("many/00007/")).await.unwrap().len(), 1, "{n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_complete_abort_and_resume() {
    const PART: u64 = 5 << 20;
    for s in stores().await {
        let (d, n) = (&s.driver, s.name);
        // Complete, with parts sent out of order.
        let k = s.key("mp/done");
        let (p1, p2) = (data(PART as usize, 1), data(1000, 2));
        let id = d.create_upload(&k).await.unwrap();
        let t2 = d.upload_part(&k, &id, 2, PART, p2.clone()).await.unwrap();
        let t1 = d.upload_part(&k, &id, 1, PART, p1.clone()).await.unwrap();
        d.complete_upload(&k, &id, &[t1, t2]).await.unwrap();
        let got = d.get(&k, 1 << 30).await.unwrap();
        assert_eq!(got.len() as u64, PART + 1000, "{n}");
        assert!(
            got[..PART as usize] == p1[..] && got[PART as usize..] == p2[..],
            "{n}"
        );

        // Abort: nothing is stored and the upload is gone.
        let k = s.key("mp/aborted");
        let id = d.create_upload(&k).await.unwrap();
        d.upload_part(&k, &id, 1, PART, data(100, 3)).await.unwrap();
        d.abort_upload(&k, &id).await.unwrap();
        assert!(
            matches!(d.stat(&k).await, Err(StoreError::NotFound(_))),
            "{n}"
        );
        let late = d.upload_part(&k, &id, 2, PART, data(100, 3)).await;
        // s3s-fs answers 403 AccessDenied and moto at times 500 instead of NoSuchUpload
        // (the uploader then asks `upload_exists`); the directory store names the condition.
        assert!(
            matches!(late, Err(StoreError::UploadGone(_)))
                || (n != "dir"
                    && matches!(
                        late,
                        Err(StoreError::Other(_) | StoreError::AccessDenied { .. })
                    )),
            "{n}: a part for an aborted upload: {late:?}"
        );

        // Resume: find the open upload and its parts, then finish it.
        let k = s.key("mp/resumed");
        let id = d.create_upload(&k).await.unwrap();
        d.upload_part(&k, &id, 1, PART, p1.clone()).await.unwrap();
        let listed = d.list_uploads(&s.prefix).await;
        if !s.lists_uploads {
            assert!(
                matches!(listed, Err(StoreError::Unsupported(_))),
                "{n}: a store that cannot list uploads must say so: {listed:?}"
            );
            // An S3 driver can only learn from the server's answer above that it cannot
            // resume there; the directory store declares it up front.
            if n == "dir" {
                assert!(!d.resumable_uploads(), "{n}");
            }
            d.abort_upload(&k, &id).await.unwrap();
            continue;
        }
        assert!(d.resumable_uploads(), "{n}");
        let open = listed.unwrap();
        assert!(
            open.iter().any(|u| u.key == k && u.id == id),
            "{n}: {open:?}"
        );
        assert!(d.upload_exists(&k, &id).await.unwrap(), "{n}");
        let parts = d.list_parts(&k, &id).await.unwrap();
        assert_eq!(parts.len(), 1, "{n}");
        assert_eq!((parts[0].number, parts[0].size), (1, PART), "{n}");
        let md5 = hex::encode(<md5::Md5 as md5::Digest>::digest(&p1));
        assert_eq!(
            parts[0].etag.trim_matches('"'),
            md5,
            "{n}: part ETag is its MD5"
        );
        let t1 = s3dock::store::PartTag {
            etag: parts[0].etag.clone(),
        };
        let t2 = d.upload_part(&k, &id, 2, PART, p2.clone()).await.unwrap();
        d.complete_upload(&k, &id, &[t1, t2]).await.unwrap();
        assert_eq!(d.stat(&k).await.unwrap(), PART + 1000, "{n}");
        assert!(!d.upload_exists(&k, &id).await.unwrap(), "{n}");
    }
}

/// Every server stores `UNSIGNED-PAYLOAD` bodies (the default over https) as they were sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_bodies_are_stored() {
    const PART: u64 = 5 << 20;
    for s in stores_signing(Some(false)).await {
        let (d, n) = (&s.driver, s.name);
        let k = s.key("unsigned/put");
        d.put(&k, data(1000, 4), Precondition::None).await.unwrap();
        assert_eq!(d.get(&k, 1 << 20).await.unwrap(), data(1000, 4), "{n}");
        let k = s.key("unsigned/mp");
        let id = d.create_upload(&k).await.unwrap();
        let t1 = d
            .upload_part(&k, &id, 1, PART, data(PART as usize, 5))
            .await
            .unwrap();
        let t2 = d.upload_part(&k, &id, 2, PART, data(10, 6)).await.unwrap();
        d.complete_upload(&k, &id, &[t1, t2]).await.unwrap();
        let got = d.get(&k, 1 << 30).await.unwrap();
        assert!(got[..PART as usize] == data(PART as usize, 5)[..], "{n}");
        assert_eq!(got[PART as usize..], data(10, 6)[..], "{n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_keys() {
    for s in stores().await {
        let (d, n) = (&s.driver, s.name);
        let long = s.key(&format!("long/{}/link", "r".repeat(200)));
        let r = d.put(&long, data(71, 1), Precondition::None).await;
        match s.max_key_len {
            // Known server limit: the write fails, loudly, rather than storing something else.
            Some(max) if long.len() > max => {
                assert!(r.is_err(), "{n}: a {}-character key", long.len());
                continue;
            }
            _ => r.unwrap_or_else(|e| panic!("{n}: {e}")),
        }
        assert_eq!(d.get(&long, 1024).await.unwrap(), data(71, 1), "{n}");
        let listed = d.list(&s.key("long/")).await.unwrap();
        assert_eq!(listed.len(), 1, "{n}");
        assert_eq!(listed[0].key, long, "{n}");
    }
}

// --- The directory store holds untrusted files (issue 17). ---

fn dir_store() -> (tempfile::TempDir, FsDriver) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    std::fs::create_dir(&root).unwrap();
    (tmp, FsDriver::new(root))
}

fn not_a_file<T: std::fmt::Debug>(r: Result<T, StoreError>) -> String {
    match r {
        Err(e @ StoreError::NotARegularFile { .. }) => e.to_string(),
        r => panic!("expected a NotARegularFile refusal, got {r:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dir_refuses_symlinked_objects() {
    let (tmp, d) = dir_store();
    let secret = tmp.path().join("secret");
    std::fs::write(&secret, b"host file").unwrap();
    std::fs::create_dir_all(d.root().join("a")).unwrap();
    std::os::unix::fs::symlink(&secret, d.root().join("a/link")).unwrap();
    let msg = not_a_file(d.get("a/link", 1 << 20).await);
    assert!(msg.contains("symlink"), "{msg}");
    not_a_file(d.get_range("a/link", 0, 4).await);
    not_a_file(d.stat("a/link").await);
    not_a_file(d.list("a/").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dir_refuses_fifos_and_directories_without_blocking() {
    let (_tmp, d) = dir_store();
    std::fs::create_dir_all(d.root().join("a/dir")).unwrap();
    let fifo = std::ffi::CString::new(d.root().join("a/fifo").to_str().unwrap()).unwrap();
    // SAFETY: mkfifo on a NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let read = tokio::time::timeout(Duration::from_secs(10), d.get("a/fifo", 1 << 20)).await;
    let msg = not_a_file(read.expect("reading a FIFO must not block"));
    assert!(msg.contains("FIFO"), "{msg}");
    let ranged = tokio::time::timeout(Duration::from_secs(10), d.get_range("a/fifo", 0, 1)).await;
    not_a_file(ranged.expect("a ranged read of a FIFO must not block"));
    let msg = not_a_file(d.get("a/dir", 1 << 20).await);
    assert!(msg.contains("directory"), "{msg}");
    not_a_file(d.list("a/").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dir_refuses_symlinked_directories_below_the_root() {
    let (tmp, d) = dir_store();
    // A symlinked `tags/` pointing into the host filesystem.
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(outside.join("etc/current")).unwrap();
    std::fs::write(outside.join("etc/current/link"), b"x").unwrap();
    std::fs::create_dir_all(d.root().join("repo")).unwrap();
    std::os::unix::fs::symlink(&outside, d.root().join("repo/tags")).unwrap();
    not_a_file(d.list_dirs("repo/tags/").await);
    not_a_file(d.list("repo/tags/").await);
    not_a_file(d.list("repo/").await);
    not_a_file(d.list_dirs("repo/").await);
    not_a_file(d.get("repo/tags/etc/current/link", 1024).await);
    not_a_file(d.stat("repo/tags/etc/current/link").await);
    // Writing through it would land outside the store.
    not_a_file(
        d.put("repo/tags/etc/new", data(3, 1), Precondition::None)
            .await,
    );
    assert!(!outside.join("etc/new").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dir_store_root_may_be_a_symlink() {
    let (tmp, real) = dir_store();
    let link = tmp.path().join("via-link");
    std::os::unix::fs::symlink(real.root(), &link).unwrap();
    let d = FsDriver::new(link);
    d.put("a/b", data(5, 1), Precondition::None).await.unwrap();
    assert_eq!(d.get("a/b", 10).await.unwrap(), data(5, 1));
    assert_eq!(d.list("a/").await.unwrap().len(), 1);
    assert!(d.list_dirs("").await.unwrap().contains(&"a".to_string()));
}

/// Oversized or malformed documents planted in the store: refused by size before
/// reading, and errors quote a short excerpt, never the content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_documents_give_short_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = s3dock::store::StoreConfig {
        location: s3dock::store::Location::Dir(tmp.path().to_path_buf()),
        root_dir: None,
        s3: S3Options::default(),
        jobs: 1,
        part_size: 5 << 20,
    };
    let reg = s3dock::registry::Registry::open(&cfg).await.unwrap();
    let big_link = tmp.path().join(reg.layout().tag_current("app", "big"));
    std::fs::create_dir_all(big_link.parent().unwrap()).unwrap();
    std::fs::write(&big_link, vec![b'A'; 50 << 20]).unwrap();
    let msg = format!("{:#}", reg.tag_target("app", "big").await.unwrap_err());
    assert!(msg.len() < 400 && msg.contains("52428800 bytes"), "{msg}");

    let bad_link = tmp.path().join(reg.layout().tag_current("app", "bad"));
    std::fs::create_dir_all(bad_link.parent().unwrap()).unwrap();
    std::fs::write(&bad_link, vec![b'B'; 1000]).unwrap();
    let msg = format!("{:#}", reg.tag_target("app", "bad").await.unwrap_err());
    assert!(
        msg.len() < 400 && msg.contains("BBBB") && msg.contains("malformed"),
        "{msg}"
    );

    let doc = reg.layout().env_record("app", "prod");
    let path = tmp.path().join(&doc);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, vec![b'{'; 2 << 20]).unwrap();
    let r: anyhow::Result<Option<serde_json::Value>> = reg.get_json(&doc).await;
    let msg = format!("{:#}", r.unwrap_err());
    assert!(msg.len() < 400 && msg.contains("more than"), "{msg}");
    let mut junk = b"\"".to_vec();
    junk.extend(vec![b'C'; 500_000]);
    std::fs::write(&path, &junk).unwrap();
    let r: anyhow::Result<Option<serde_json::Value>> = reg.get_json(&doc).await;
    let msg = format!("{:#}", r.unwrap_err());
    assert!(msg.len() < 400 && msg.contains("not valid JSON"), "{msg}");
}
