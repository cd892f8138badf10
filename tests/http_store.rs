//! Read-only http(s) stores: a directory store served by Debian's nginx on
//! 127.0.0.1, plain and with TLS from a test CA; pulls are verified like any other.

mod common;
use common::nginx::{nginx_binary, test_ca, Nginx};
use common::{fixture, generate_archive_file, require, summarize_archive, GenLayer, TestStore};

const HELLO: &str = "fx/hello:1";

/// A directory store holding the fixture image, and the archive pulled from it.
fn pushed_store() -> (TestStore, Vec<u8>) {
    let store = TestStore::local();
    store.ok(&["push", "-q", HELLO], Some(&fixture("docker-legacy.tar")));
    let archive = store.pull(&[HELLO]);
    (store, archive)
}

/// A 24 MiB uncompressed layer: five ranged GETs of 5 MiB each.
const BIG: &str = "fx/big:1";
fn push_big(store: &TestStore) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.tar");
    let layers = [GenLayer {
        size: 24 << 20,
        seed: 7,
    }];
    generate_archive_file(&path, &layers, BIG);
    store.ok(&["push", "-q", "--compression", "none"], Some(&path));
}

fn http_store(url: &str) -> TestStore {
    TestStore {
        kind: "http",
        args: vec!["--store".into(), url.into()],
        dir: None,
        s3: None,
    }
}

#[test]
fn pull_over_plain_http_with_a_prefix() {
    if !require("nginx", nginx_binary().is_some()) {
        return;
    }
    let (store, want) = pushed_store();
    push_big(&store);
    let root = store.dir.as_ref().unwrap().path().display().to_string();
    let web = Nginx::start("", &format!("location /reg/ {{ alias {root}/; }}")).unwrap();
    let http = http_store(&format!("http://127.0.0.1:{}/reg", web.port));

    let got = http.pull(&[HELLO]);
    assert_eq!(summarize_archive(&got), summarize_archive(&want));
    assert_eq!(got, want, "same store, same archive");
    let big = http.pull(&[BIG, "--part-size", "5MiB"]);
    assert_eq!(big, store.pull(&[BIG, "--part-size", "5MiB"]));

    let err = http.fails(&["pull", "fx/hello:2"], None);
    assert!(err.contains("fx/hello:2"), "{err}");
    let err = http.fails(&["push", "fx/hello:3"], Some(&fixture("docker-legacy.tar")));
    assert!(err.contains("read-only"), "{err}");
    assert!(!store.visible_tags().contains(&"fx/hello:3".to_string()));
}

#[test]
fn pull_over_https_trusting_a_private_ca() {
    if !require("nginx", nginx_binary().is_some())
        || !require("openssl", common::have_command("openssl"))
    {
        return;
    }
    let (store, want) = pushed_store();
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_ca(certs.path());
    let root = store.dir.as_ref().unwrap().path().display();
    let web = Nginx::start(
        "ssl",
        &format!(
            "ssl_certificate {};\n    ssl_certificate_key {};\n    root {root};",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let https = http_store(&format!("https://127.0.0.1:{}/", web.port));

    // Not trusted without the CA: refused, nothing written.
    let out = https.run(&["pull", "-q", HELLO], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && out.stdout.is_empty(), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    let mut c = https.cmd();
    let out = c
        .args(["pull", "-q", HELLO])
        .env("SSL_CERT_FILE", &ca)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, want);
}
