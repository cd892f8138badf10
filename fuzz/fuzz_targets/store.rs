//! A whole small directory store as input (issue 17): link files, manifests, configs,
//! release records and audit events written to a temp dir, then pulled (to a
//! discarding writer), resolved, listed, shown and promoted through the library.
//!
//! Text form (seeds: fuzz/make_seeds.py from a store the real binary pushed):
//! entries `>KEY\nBODY`, each starting the input or after a newline; BODY runs to the
//! next `\n>`. KEY `blob` stores BODY as a content-addressed blob (its key computed
//! from its sha256), so mutated blobs stay reachable. In keys and bodies `%NN` is the
//! hex digest and `#NN` the size of the NN-th blob (decimal, defined earlier for a
//! blob body, anywhere for other entries), so links and descriptors keep matching.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const APP: &str = "app";
const MAX_ENTRIES: usize = 256;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        // The release commands print their results: keep libFuzzer's output readable.
        // SAFETY: replaces fd 1 with /dev/null once, before any thread writes to it.
        unsafe {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
            if null >= 0 {
                libc::dup2(null, 1);
            }
        }
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

/// Splits the input into (key, body) entries.
fn entries(data: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut out = Vec::new();
    let mut rest = match data.strip_prefix(b">") {
        Some(r) => r,
        None => return out,
    };
    while out.len() < MAX_ENTRIES {
        let end = rest
            .windows(2)
            .position(|w| w == b"\n>")
            .unwrap_or(rest.len());
        let (entry, next) = rest.split_at(end);
        let (key, body) = match entry.iter().position(|&b| b == b'\n') {
            Some(i) => (&entry[..i], &entry[i + 1..]),
            None => (entry, &b""[..]),
        };
        out.push((key, body));
        if next.len() < 2 {
            break;
        }
        rest = &next[2..];
    }
    out
}

/// Replaces `%NN` / `#NN` tokens naming one of `blobs` (hex digest, size).
fn expand(s: &[u8], blobs: &[(String, usize)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if (c == b'%' || c == b'#') && i + 2 < s.len() {
            let n = std::str::from_utf8(&s[i + 1..i + 3])
                .ok()
                .filter(|t| t.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|t| t.parse::<usize>().ok());
            if let Some((hex, size)) = n.and_then(|n| blobs.get(n)) {
                if c == b'%' {
                    out.extend_from_slice(hex.as_bytes());
                } else {
                    out.extend_from_slice(size.to_string().as_bytes());
                }
                i += 3;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

/// A relative key of plain components, or None.
fn safe_key(key: &[u8]) -> Option<&str> {
    let k = std::str::from_utf8(key).ok()?;
    let ok = !k.is_empty()
        && k.len() <= 240
        && k.split('/').count() <= 16
        && k.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
        && !k.contains('\0');
    ok.then_some(k)
}

/// Writes the store; returns how many entries landed.
fn write_store(root: &Path, data: &[u8]) -> usize {
    let mut blobs: Vec<(String, usize)> = Vec::new();
    let mut written = 0;
    for (key, body) in entries(data) {
        let body = expand(body, &blobs);
        let key = if key == b"blob" {
            let hex = s3dock::model::digest::Digest::of(&body).hex();
            blobs.push((hex.clone(), body.len()));
            format!("docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2])
        } else {
            let key = expand(key, &blobs);
            match safe_key(&key) {
                Some(k) => k.to_string(),
                None => continue,
            }
        };
        let p = root.join(&key);
        let fits = p
            .parent()
            .is_some_and(|d| std::fs::create_dir_all(d).is_ok());
        if fits && std::fs::write(&p, &body).is_ok() {
            written += 1;
        }
    }
    written
}

/// Every library operation that reads a store, with the names the seeds use. The one
/// place that knows the library's API (adapt it here when the API moves).
async fn drive(root: &Path) {
    use s3dock::release::{self, Ctx};
    let cfg = s3dock::store::StoreConfig {
        location: s3dock::store::Location::Dir(root.to_path_buf()),
        root_dir: None,
        s3: Default::default(),
        jobs: 2,
        part_size: 8 << 20,
    };
    let Ok(store) = s3dock::registry::Registry::open(&cfg).await else {
        return;
    };
    let pull = |r: s3dock::model::reference::Reference| {
        let store = &store;
        async move {
            let opts = s3dock::transfer::pull::PullOptions {
                format: s3dock::archive::Format::Docker,
                tag: None,
                platform: Some("linux/amd64".into()),
                cache: None,
                decompress: false,
                exclude: Default::default(),
                loadable: false,
                all_platforms: false,
            };
            let stats = Arc::new(s3dock::transfer::stats::Stats::default());
            let r = s3dock::transfer::pull::pull(
                store,
                std::slice::from_ref(&r),
                std::io::sink(),
                &opts,
                stats,
                false,
            )
            .await;
            if std::env::var_os("S3DOCK_FUZZ_DEBUG").is_some() {
                // Seed checks: a seed's pulls should succeed (else mutations stay shallow).
                eprintln!(
                    "store: pull {:?}",
                    r.map(|_| ()).map_err(|e| format!("{e:#}"))
                );
            }
        }
    };
    for name in ["t", "v1.0.0", "production"] {
        if let Ok(r) = release::env::resolve_for_pull(&store, APP, name).await {
            pull(r).await;
        }
    }
    pull(s3dock::model::reference::Reference::with_tag(APP, "t")).await;
    let _ = release::env::resolve_env(&store, APP, "production").await;
    let _ = release::list::list_apps(&store).await;
    let _ = release::list::list_app(&store, APP).await;
    let _ = release::list::history(&store, APP, None, None, None).await;
    let _ = release::env::current(&store, APP, "production").await;
    // Writers read the records they replace: a bad record must not panic them.
    let ctx = Ctx {
        store,
        actor: release::audit::Actor {
            name: "fuzz".into(),
            source: "configured".into(),
            aws: None,
        },
    };
    let _ = release::tag::tag(&ctx, &format!("{APP}:t"), "v2.0.0", true).await;
    let _ = release::env::promote(&ctx, APP, "t", "staging").await;
}

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("temp dir");
    if write_store(dir.path(), data) == 0 {
        return;
    }
    let done = runtime()
        .block_on(async { tokio::time::timeout(Duration::from_secs(20), drive(dir.path())).await });
    assert!(done.is_ok(), "the store operations took over 20 s");
});
