//! Hostile store content (issue 17): a corpus of crafted stores, each derived from a
//! good one (fixtures/docker-legacy.tar pushed, tagged and promoted by the real binary)
//! and driven through `pull` and the release commands. Every run must end (a timeout
//! fails the case), stay under a memory bound (peak RSS of the child, wait4), never
//! panic, never print a host secret or raw control characters, and fail with one clean
//! error line where the content is bad. Each test runs a table of cases and reports
//! every failing case at the end instead of stopping at the first.
//!
//! The corpus is generated here, not committed: symlinks, FIFOs and 200 MB sparse
//! files cannot live in git. Directory-only cases (symlinks, special files) are marked;
//! the rest also run on moto (objects written with boto3, bypassing s3dock).

mod common;

use common::*;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const APP: &str = "app";
const IMG: &str = "20250720-1045-def5678";
const VERSION: &str = "v1.0.0";
const ENV: &str = "production";
const REG: &str = "docker/registry/v2";
/// Where `-o` goes in a step's arguments: replaced by a fresh path per run.
const OUT: &str = "@OUT";
/// Text a record field smuggles after a raw newline: no output line may start with it.
const INJECTED: &str = "INJECTED";
const MIB: u64 = 1 << 20;

// ------------------------------------------------------------------ store keys

fn hex_of(d: &str) -> &str {
    d.strip_prefix("sha256:").unwrap_or(d)
}

fn blob_key(d: &str) -> String {
    let h = hex_of(d);
    format!("{REG}/blobs/sha256/{}/{h}/data", &h[..2])
}

fn tag_key(repo: &str, tag: &str) -> String {
    format!("{REG}/repositories/{repo}/_manifests/tags/{tag}/current/link")
}

fn revision_key(repo: &str, d: &str) -> String {
    format!(
        "{REG}/repositories/{repo}/_manifests/revisions/sha256/{}/link",
        hex_of(d)
    )
}

fn record_key(kind: &str, name: &str) -> String {
    format!("s3dock/apps/{APP}/_{kind}/{name}.json")
}

/// A pseudo-key resolved when the case is applied: the audit event of that kind
/// (its key holds the time of the push).
fn audit_key(event: &str) -> String {
    format!("audit:{event}")
}

fn sha(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
}

// ------------------------------------------------------------------ cases

type JsonEdit = Box<dyn Fn(&mut serde_json::Value)>;

enum Edit {
    Put(Vec<u8>),
    /// That many zero bytes (a sparse file in a directory store).
    Zeros(u64),
    Symlink(PathBuf),
    Fifo,
    /// Read the JSON document already there, change it, write it back.
    Json(JsonEdit),
    /// Read the JSON document at another key, change it, write it here.
    Derive(String, JsonEdit),
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Expect {
    /// Non-zero exit with exactly one `s3dock: error:` line, no stdout (but a pull's),
    /// and no `-o` file left behind.
    Fail,
    /// A listing: a clean failure, or success with a warning on stderr.
    FailOrWarn,
    Succeed,
    /// Either outcome, as long as the general rules hold.
    Survive,
    /// Success, one warning line on stderr, and `Step::shows` on stdout.
    Warn,
}

struct Step {
    args: Vec<String>,
    expect: Expect,
    rss_mib: u64,
    secs: u64,
    /// The error line must stay under 300 characters.
    short: bool,
    /// On success, exactly one new audit event must exist.
    audited: bool,
    shows: Vec<String>,
}

fn step(args: &[&str], expect: Expect) -> Step {
    Step {
        args: args.iter().map(|s| s.to_string()).collect(),
        expect,
        rss_mib: 200,
        secs: 60,
        short: false,
        audited: false,
        shows: Vec::new(),
    }
}

impl Step {
    fn rss(mut self, mib: u64) -> Step {
        self.rss_mib = mib;
        self
    }
    fn secs(mut self, s: u64) -> Step {
        self.secs = s;
        self
    }
    fn short(mut self) -> Step {
        self.short = true;
        self
    }
    fn audited(mut self) -> Step {
        self.audited = true;
        self
    }
    fn shows(mut self, what: &[&str]) -> Step {
        self.shows = what.iter().map(|s| s.to_string()).collect();
        self
    }
}

struct Case {
    name: String,
    edits: Vec<(String, Edit)>,
    steps: Vec<Step>,
    dir_only: bool,
}

fn case(name: &str, edits: Vec<(String, Edit)>, steps: Vec<Step>) -> Case {
    Case {
        name: name.into(),
        edits,
        steps,
        dir_only: false,
    }
}

fn dir_case(name: &str, edits: Vec<(String, Edit)>, steps: Vec<Step>) -> Case {
    Case {
        dir_only: true,
        ..case(name, edits, steps)
    }
}

/// What the good store holds, read back after the base push.
struct Base {
    manifest: String,
    config: String,
    /// (digest, size) of each layer, in manifest order.
    layers: Vec<(String, u64)>,
}

/// Host files outside the store that hostile symlinks point at, holding a marker
/// that must never reach s3dock's output.
struct Host {
    dir: tempfile::TempDir,
    marker: String,
}

impl Host {
    fn new() -> Host {
        let marker = format!(
            "zzsecret{}",
            &uuid::Uuid::new_v4().simple().to_string()[..10]
        );
        Host {
            dir: tempfile::tempdir().unwrap(),
            marker,
        }
    }

    /// A file of `size` bytes (at least the marker) made of the marker repeated.
    fn secret_file(&self, name: &str, size: usize) -> PathBuf {
        let line = format!("{}\n", self.marker);
        let mut body = line
            .repeat(size.max(line.len()) / line.len() + 1)
            .into_bytes();
        body.truncate(size.max(line.len()));
        let p = self.dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    /// A host directory shaped like part of a store, every file holding the marker.
    fn secret_tree(&self, name: &str, files: &[String]) -> PathBuf {
        let root = self.dir.path().join(name);
        for f in files {
            let p = root.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, &self.marker).unwrap();
        }
        root
    }
}

// ------------------------------------------------------------------ running s3dock

fn cmd(store: &TestStore, args: &[String]) -> Command {
    let mut c = store.cmd();
    c.args(args)
        .env(
            "S3DOCK_CONFIG",
            std::env::temp_dir().join("s3dock-hostile-no-config.toml"),
        )
        .env_remove("S3DOCK_PROFILE")
        .env_remove("AWS_PROFILE")
        .env("S3DOCK_ACTOR", "hostile-test")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

struct Ran {
    code: Option<i32>,
    signal: Option<i32>,
    stdout: Vec<u8>,
    stdout_len: u64,
    stderr: Vec<u8>,
    stderr_len: u64,
    rss_mib: u64,
    secs: f64,
    /// Why the test killed it (timeout or runaway memory).
    killed: Option<String>,
}

/// Keeps the first `keep` bytes of a stream and counts the rest.
fn drain(
    mut r: impl Read + Send + 'static,
    keep: usize,
) -> std::thread::JoinHandle<(Vec<u8>, u64)> {
    std::thread::spawn(move || {
        let (mut v, mut n, mut buf) = (Vec::new(), 0u64, vec![0u8; 64 << 10]);
        while let Ok(k) = r.read(&mut buf) {
            if k == 0 {
                break;
            }
            n += k as u64;
            let room = keep.saturating_sub(v.len()).min(k);
            v.extend_from_slice(&buf[..room]);
        }
        (v, n)
    })
}

/// The child's peak resident memory so far (VmHWM). Not wait4's ru_maxrss: that
/// carries over the test process's own peak through the vfork+exec that spawns it.
fn peak_mib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let l = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            l.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib / 1024)
}

/// Runs s3dock, killing it after `secs` or above `cap_mib` of resident memory (so a
/// store that makes it read /dev/zero cannot take the machine down with it). Memory
/// is sampled every 10 ms, so a spike in the last few milliseconds may be missed.
// The child is reaped with wait4 (std's wait cannot poll memory while it waits).
#[allow(clippy::zombie_processes)]
fn run(store: &TestStore, args: &[String], secs: u64, cap_mib: u64) -> Ran {
    let start = Instant::now();
    let mut child = cmd(store, args).spawn().unwrap();
    let pid = child.id() as i32;
    let out = drain(child.stdout.take().unwrap(), 64 << 20);
    let err = drain(child.stderr.take().unwrap(), 1 << 20);
    let (mut killed, mut peak) = (None, 0);
    let (mut status, mut ru) = (0i32, unsafe { std::mem::zeroed::<libc::rusage>() });
    loop {
        // SAFETY: wait4 on our own child, with valid out-pointers.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid {
            break;
        }
        assert!(r == 0, "wait4: {}", std::io::Error::last_os_error());
        peak = peak.max(peak_mib(pid));
        let why = if start.elapsed() > Duration::from_secs(secs) {
            Some(format!("still running after {secs} s (hang)"))
        } else if peak > cap_mib {
            Some(format!("resident memory {peak} MiB above {cap_mib} MiB"))
        } else {
            None
        };
        if let Some(why) = why {
            killed = Some(why);
            let _ = child.kill();
            // SAFETY: as above; blocks until the killed child is reaped.
            unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let (stdout, stdout_len) = out.join().unwrap();
    let (stderr, stderr_len) = err.join().unwrap();
    Ran {
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        signal: libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
        stdout,
        stdout_len,
        stderr,
        stderr_len,
        rss_mib: peak,
        secs: start.elapsed().as_secs_f64(),
        killed,
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The first raw control character (other than newline and tab) in `b`.
fn control_char(b: &[u8]) -> Option<u8> {
    b.iter()
        .copied()
        .find(|&c| (c < 0x20 && c != b'\n' && c != b'\t') || c == 0x7f)
}

/// The RepoTags of a pulled archive that hold a control character.
fn bad_repo_tags(path: &Path) -> Vec<String> {
    let Ok(data) = std::fs::read(path) else {
        return vec![format!("cannot read {}", path.display())];
    };
    let files = tar_files(&data);
    let Some(m) = files.get("manifest.json") else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_slice(m).unwrap_or_default();
    v.as_array()
        .into_iter()
        .flatten()
        .flat_map(|i| i["RepoTags"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t.as_str().map(String::from))
        .filter(|t| t.chars().any(char::is_control))
        .collect()
}

/// Every way one run breaks the contract, as short sentences.
fn judge(s: &Step, r: &Ran, out: &Path, host: &Host, audit_grew: Option<i64>) -> Vec<String> {
    let mut bad = Vec::new();
    let err = String::from_utf8_lossy(&r.stderr);
    if let Some(k) = &r.killed {
        bad.push(format!("killed: {k}"));
    } else if let Some(sig) = r.signal {
        bad.push(format!("died of signal {sig}"));
    }
    if r.code == Some(101) || err.contains("panicked") {
        bad.push(format!("panicked: {}", first_line(&err, "panicked")));
    }
    for (name, stream) in [("stdout", &r.stdout), ("stderr", &r.stderr)] {
        if contains(stream, &host.marker) {
            bad.push(format!("host secret printed on {name}"));
        }
        let text = String::from_utf8_lossy(stream);
        if text.lines().any(|l| l.starts_with(INJECTED)) {
            bad.push(format!("raw newline from a record field on {name}"));
        }
    }
    if out.exists() && r.code != Some(0) && contains(&std::fs::read(out).unwrap(), &host.marker) {
        bad.push("host secret written to the -o file".into());
    }
    let is_pull = s.args.iter().any(|a| a == "pull");
    if let Some(c) = control_char(&r.stderr) {
        bad.push(format!("raw control character 0x{c:02x} on stderr"));
    }
    if !is_pull {
        if let Some(c) = control_char(&r.stdout) {
            bad.push(format!("raw control character 0x{c:02x} on stdout"));
        }
    }
    if r.rss_mib > s.rss_mib {
        bad.push(format!("peak RSS {} MiB > {} MiB", r.rss_mib, s.rss_mib));
    }
    if r.stderr_len > 64 << 10 {
        bad.push(format!(
            "stderr is {} bytes (a document echoed?)",
            r.stderr_len
        ));
    }
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("s3dock: error"))
        .collect();
    if s.short {
        if let Some(l) = errors.iter().find(|l| l.chars().count() >= 300) {
            bad.push(format!("error line of {} characters", l.chars().count()));
        }
    }
    if r.killed.is_some() {
        return bad;
    }
    let ok = r.code == Some(0);
    let clean_failure = |bad: &mut Vec<String>| {
        if errors.len() != 1 {
            bad.push(format!(
                "{} `s3dock: error` lines: {}",
                errors.len(),
                excerpt(&err)
            ));
        }
        if !is_pull && r.stdout_len > 0 {
            bad.push(format!("a failure wrote {} bytes to stdout", r.stdout_len));
        }
        if out.exists() {
            bad.push("a failed pull left its -o file".into());
        }
    };
    let warnings = err.lines().filter(|l| !l.trim().is_empty()).count();
    match (s.expect, ok) {
        (Expect::Fail, true) => bad.push("succeeded; should have failed".into()),
        (Expect::Succeed | Expect::Warn, false) => bad.push(format!("failed: {}", excerpt(&err))),
        (Expect::FailOrWarn, true) if warnings == 0 => {
            bad.push("succeeded without a warning".into())
        }
        (Expect::Warn, true) if warnings != 1 => bad.push(format!(
            "want one warning line, got {warnings}: {}",
            excerpt(&err)
        )),
        (_, false) => clean_failure(&mut bad),
        _ => {}
    }
    if s.expect == Expect::Warn && ok {
        let text = String::from_utf8_lossy(&r.stdout);
        for want in &s.shows {
            if !text.contains(want.as_str()) {
                bad.push(format!("{want:?} missing from the output"));
            }
        }
    }
    if ok && is_pull && out.exists() {
        let tags = bad_repo_tags(out);
        if !tags.is_empty() {
            bad.push(format!("RepoTags with control characters: {tags:?}"));
        }
    }
    if let (true, Some(n)) = (ok, audit_grew) {
        if n != 1 {
            bad.push(format!("succeeded with {n} new audit events (want 1)"));
        }
    }
    bad
}

fn first_line<'a>(text: &'a str, with: &str) -> &'a str {
    text.lines().find(|l| l.contains(with)).unwrap_or("")
}

/// At most 200 characters of untrusted output, for the report.
fn excerpt(s: &str) -> String {
    let t: String = s.trim_end().chars().take(200).collect();
    format!("{t:?}")
}

// ------------------------------------------------------------------ stores

fn s3_python(store: &TestStore, body: &str) -> String {
    let (endpoint, bucket, prefix) = store.s3.as_ref().unwrap();
    let script = format!(
        "import boto3,sys,json,base64\n\
         c=boto3.client('s3',endpoint_url='{endpoint}',region_name='us-east-1')\n\
         B='{bucket}'\nP='{prefix}/'\n{body}"
    );
    python(&script)
}

fn get(store: &TestStore, key: &str) -> Vec<u8> {
    if let Some(d) = &store.dir {
        return std::fs::read(d.path().join(key)).unwrap();
    }
    let b64 = s3_python(
        store,
        &format!(
            "print(base64.b64encode(c.get_object(Bucket=B,Key=P+'{key}')['Body'].read()).decode())"
        ),
    );
    let out = Command::new("base64")
        .arg("-d")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(b64.trim().as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    out.stdout
}

fn new_store(kind: &str) -> Option<TestStore> {
    if kind == "dir" {
        Some(TestStore::local())
    } else {
        TestStore::s3("moto")
    }
}

/// Pushes the fixture as APP:IMG, tags it VERSION and promotes it to ENV.
fn push_base(store: &TestStore) -> Base {
    let archive = fixture("docker-legacy.tar");
    let reference = format!("{APP}:{IMG}");
    for args in [
        vec!["push", "-q", "-i", archive.to_str().unwrap(), &reference],
        vec!["tag", &reference, VERSION],
        vec!["promote", &reference, ENV],
    ] {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let r = run(store, &args, 120, 2048);
        assert_eq!(
            r.code,
            Some(0),
            "[{}] base store: s3dock {args:?}: {}",
            store.kind,
            String::from_utf8_lossy(&r.stderr)
        );
    }
    let rec: serde_json::Value =
        serde_json::from_slice(&get(store, &record_key("images", IMG))).unwrap();
    Base {
        manifest: rec["digest"].as_str().unwrap().into(),
        config: rec["config_digest"].as_str().unwrap().into(),
        layers: rec["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["digest"].as_str().unwrap().into(),
                    l["size"].as_u64().unwrap(),
                )
            })
            .collect(),
    }
}

fn audit_count(store: &TestStore) -> i64 {
    let prefix = format!("s3dock/audit/{APP}/");
    store
        .keys()
        .iter()
        .filter(|k| k.starts_with(&prefix))
        .count() as i64
}

fn resolve_key(store: &TestStore, key: &str) -> String {
    let Some(event) = key.strip_prefix("audit:") else {
        return key.to_string();
    };
    let prefix = format!("s3dock/audit/{APP}/");
    store
        .keys()
        .into_iter()
        .find(|k| k.starts_with(&prefix) && k.contains(&format!("-{event}-")))
        .unwrap_or_else(|| panic!("no {event} audit event in the base store"))
}

fn apply(store: &TestStore, edits: &[(String, Edit)]) {
    let resolved: Vec<(String, &Edit)> = edits
        .iter()
        .map(|(k, e)| (resolve_key(store, k), e))
        .collect();
    if let Some(d) = &store.dir {
        for (key, edit) in resolved {
            apply_dir(&d.path().join(&key), store, &key, edit);
        }
        return;
    }
    // S3: one boto3 process writes every object of the case; JSON edits see the
    // case's earlier edits of the same key.
    let tmp = tempfile::tempdir().unwrap();
    let mut ops = Vec::new();
    let mut pending: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (i, (key, edit)) in resolved.iter().enumerate() {
        let path = tmp.path().join(i.to_string());
        let body = match edit {
            Edit::Put(b) => b.clone(),
            Edit::Json(f) => edited_json(store, &pending, key, f),
            Edit::Derive(src, f) => edited_json(store, &pending, src, f),
            Edit::Zeros(n) => {
                ops.push(serde_json::json!(["zeros", key, n]));
                continue;
            }
            Edit::Symlink(_) | Edit::Fifo => panic!("{key}: symlinks and FIFOs are directory-only"),
        };
        std::fs::write(&path, &body).unwrap();
        pending.insert(key.clone(), body);
        ops.push(serde_json::json!(["put", key, path]));
    }
    let list = tmp.path().join("ops.json");
    std::fs::write(&list, serde_json::to_vec(&ops).unwrap()).unwrap();
    s3_python(
        store,
        &format!(
            "for op,k,v in json.load(open('{}')):\n    \
                 body=b'\\0'*v if op=='zeros' else open(v,'rb').read()\n    \
                 c.put_object(Bucket=B,Key=P+k,Body=body)\n",
            list.display()
        ),
    );
}

fn edited_json(
    store: &TestStore,
    pending: &BTreeMap<String, Vec<u8>>,
    key: &str,
    f: &JsonEdit,
) -> Vec<u8> {
    let body = pending.get(key).cloned().unwrap_or_else(|| get(store, key));
    let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    f(&mut v);
    serde_json::to_vec_pretty(&v).unwrap()
}

fn apply_dir(p: &Path, store: &TestStore, key: &str, edit: &Edit) {
    let none = BTreeMap::new();
    match edit {
        Edit::Json(f) => return std::fs::write(p, edited_json(store, &none, key, f)).unwrap(),
        Edit::Derive(src, f) => {
            let body = edited_json(store, &none, src, f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            return std::fs::write(p, body).unwrap();
        }
        _ => {}
    }
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p).unwrap(),
        Ok(_) => std::fs::remove_file(p).unwrap(),
        Err(_) => {}
    }
    match edit {
        Edit::Put(b) => std::fs::write(p, b).unwrap(),
        Edit::Zeros(n) => std::fs::File::create(p).unwrap().set_len(*n).unwrap(),
        Edit::Symlink(t) => std::os::unix::fs::symlink(t, p).unwrap(),
        Edit::Fifo => {
            let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        }
        Edit::Json(_) | Edit::Derive(..) => unreachable!(),
    }
}

/// Runs every case of a class on a fresh store of `kind` and fails with the list of
/// every case that broke the contract.
fn run_class(kind: &str, class: &str, gen: fn(&Base, &Host) -> Vec<Case>) {
    let Some(first) = new_store(kind) else {
        return;
    };
    let host = Host::new();
    let base = push_base(&first);
    let cases: Vec<Case> = gen(&base, &host)
        .into_iter()
        .filter(|c| kind == "dir" || !c.dir_only)
        .collect();
    let mut first = Some(first);
    let (mut failed, mut report) = (Vec::new(), Vec::new());
    for c in &cases {
        let store = first.take().unwrap_or_else(|| {
            let s = new_store(kind).unwrap();
            let again = push_base(&s);
            assert_eq!(
                again.manifest, base.manifest,
                "the base push is deterministic"
            );
            s
        });
        apply(&store, &c.edits);
        let mut problems = Vec::new();
        let mut worst = (0u64, 0f64);
        for s in &c.steps {
            let out_dir = tempfile::tempdir().unwrap();
            let out = out_dir.path().join("image.tar");
            let args: Vec<String> = s
                .args
                .iter()
                .map(|a| {
                    if a == OUT {
                        out.to_string_lossy().into_owned()
                    } else {
                        a.clone()
                    }
                })
                .collect();
            let before = s.audited.then(|| audit_count(&store));
            let r = run(&store, &args, s.secs, (s.rss_mib * 4).max(1024));
            let grew = before.map(|b| audit_count(&store) - b);
            worst = (worst.0.max(r.rss_mib), worst.1.max(r.secs));
            for p in judge(s, &r, &out, &host, grew) {
                problems.push(format!("s3dock {}: {p}", s.args.join(" ")));
            }
        }
        let verdict = if problems.is_empty() { "ok  " } else { "FAIL" };
        report.push(format!(
            "{verdict} [{kind}] {class}/{} (peak {} MiB, slowest {:.1} s)",
            c.name, worst.0, worst.1
        ));
        for p in &problems {
            report.push(format!("       {}", p.escape_debug()));
        }
        if !problems.is_empty() {
            failed.push(c.name.clone());
        }
    }
    eprintln!("{}", report.join("\n"));
    assert!(
        failed.is_empty(),
        "[{kind}] {class}: {} of {} cases failed: {failed:?} (details above)",
        failed.len(),
        cases.len()
    );
}

// ------------------------------------------------------------------ synthetic images

/// A layer as stored: its blob, media type and the diff_id its config claims.
struct SynLayer {
    blob: Vec<u8>,
    media: &'static str,
    diff_id: String,
}

const LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
const LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

fn tar_of(name: &str, content: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    b.append_data(&mut h, name, content).unwrap();
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn plain_layer(name: &str) -> SynLayer {
    let t = tar_of(name, name.as_bytes());
    SynLayer {
        diff_id: sha(&t),
        blob: t,
        media: LAYER_TAR,
    }
}

fn gzip_layer(name: &str) -> SynLayer {
    let t = tar_of(name, name.as_bytes());
    SynLayer {
        diff_id: sha(&t),
        blob: gzip(&t),
        media: LAYER_GZIP,
    }
}

/// The objects of image `repo:tag` (blobs, config, manifest, links); the manifest's
/// config size is off by `config_size_delta`.
fn image(
    repo: &str,
    tag: &str,
    layers: &[SynLayer],
    config_size_delta: i64,
) -> Vec<(String, Edit)> {
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": config.len() as i64 + config_size_delta,
            "digest": sha(&config),
        },
        "layers": layers.iter().map(|l| serde_json::json!({
            "mediaType": l.media, "size": l.blob.len(), "digest": sha(&l.blob),
        })).collect::<Vec<_>>(),
    }))
    .unwrap();
    let md = sha(&manifest);
    let mut objects: BTreeMap<String, Vec<u8>> = layers
        .iter()
        .map(|l| (blob_key(&sha(&l.blob)), l.blob.clone()))
        .collect();
    objects.insert(blob_key(&sha(&config)), config);
    objects.insert(revision_key(repo, &md), md.clone().into_bytes());
    objects.insert(tag_key(repo, tag), md.clone().into_bytes());
    objects.insert(
        format!(
            "{REG}/repositories/{repo}/_manifests/tags/{tag}/index/sha256/{}/link",
            hex_of(&md)
        ),
        md.into_bytes(),
    );
    objects.insert(blob_key(&sha(&manifest)), manifest);
    objects
        .into_iter()
        .map(|(k, v)| (k, Edit::Put(v)))
        .collect()
}

fn pull_to_file(reference: &str) -> Vec<&str> {
    vec!["pull", reference, "-o", OUT]
}

// ------------------------------------------------------------------ class 1: symlinks, special files

fn symlink_cases(b: &Base, h: &Host) -> Vec<Case> {
    let secret = h.secret_file("secret.txt", 100);
    let (big_layer, big_size) = &b.layers[0];
    let layer_secret = h.secret_file("layer.bin", *big_size as usize);
    let image = format!("{APP}:{IMG}");
    let by_digest = format!("{APP}@{}", b.manifest);
    let fail_pull = |r: &str| step(&pull_to_file(r), Expect::Fail).secs(30);
    let link = |key: String, to: &Path| vec![(key, Edit::Symlink(to.to_path_buf()))];
    let mut cases = vec![
        dir_case(
            "tag-link-to-secret",
            link(tag_key(APP, IMG), &secret),
            vec![fail_pull(&image)],
        ),
        dir_case(
            "revision-link-to-secret",
            link(revision_key(APP, &b.manifest), &secret),
            vec![fail_pull(&by_digest)],
        ),
        dir_case(
            "manifest-to-secret",
            link(blob_key(&b.manifest), &secret),
            vec![fail_pull(&image)],
        ),
        dir_case(
            "config-to-secret",
            link(blob_key(&b.config), &secret),
            vec![fail_pull(&image)],
        ),
        dir_case(
            "layer-to-secret-of-right-size",
            link(blob_key(big_layer), &layer_secret),
            vec![
                fail_pull(&image),
                step(&["pull", &image], Expect::Fail).secs(30),
            ],
        ),
        dir_case(
            "tag-link-to-dev-zero",
            link(tag_key(APP, IMG), Path::new("/dev/zero")),
            vec![fail_pull(&image).rss(100).short()],
        ),
        dir_case(
            "tag-link-fifo",
            vec![(tag_key(APP, IMG), Edit::Fifo)],
            vec![fail_pull(&image).secs(20)],
        ),
        dir_case(
            "layer-fifo",
            vec![(blob_key(big_layer), Edit::Fifo)],
            vec![fail_pull(&image).secs(20)],
        ),
        dir_case(
            "config-fifo",
            vec![(blob_key(&b.config), Edit::Fifo)],
            vec![fail_pull(&image).secs(20)],
        ),
    ];
    for (kind, name, steps) in [
        (
            "images",
            IMG,
            // The tag link is intact: pulling the tag may work without the record.
            vec![
                step(&["list", APP], Expect::FailOrWarn),
                step(&["pull", APP, IMG, "-o", OUT], Expect::Survive),
            ],
        ),
        (
            "versions",
            VERSION,
            vec![
                step(&["list", APP], Expect::FailOrWarn),
                step(&["pull", APP, VERSION, "-o", OUT], Expect::Fail),
            ],
        ),
        (
            "envs",
            ENV,
            vec![
                step(&["current", APP, ENV], Expect::Fail),
                step(&["pull", APP, ENV, "-o", OUT], Expect::Fail),
            ],
        ),
    ] {
        cases.push(dir_case(
            &format!("{kind}-record-to-secret"),
            link(record_key(kind, name), &secret),
            steps,
        ));
    }
    // Symlinked directories: a host tree shaped like the store, names and contents
    // carrying the marker. Listing must not walk it; pulling through it must fail.
    let m = &h.marker;
    let apps = h.secret_tree(
        "apps",
        &[
            format!("{m}/_images/{IMG}.json"),
            format!("{m}/_envs/{ENV}.json"),
        ],
    );
    cases.push(dir_case(
        "symlinked-apps-dir",
        link("s3dock/apps".into(), &apps),
        vec![step(&["list"], Expect::FailOrWarn)],
    ));
    let tags = h.secret_tree("tags", &[format!("{m}/current/link")]);
    std::fs::create_dir_all(tags.join("hosttag/current")).unwrap();
    std::fs::write(tags.join("hosttag/current/link"), &b.manifest).unwrap();
    cases.push(dir_case(
        "symlinked-tags-dir",
        link(format!("{REG}/repositories/{APP}/_manifests/tags"), &tags),
        vec![
            step(&["tags", APP], Expect::FailOrWarn),
            fail_pull(&format!("{APP}:hosttag")),
        ],
    ));
    cases
}

#[test]
fn symlinks_and_special_files_dir() {
    run_class("dir", "symlinks", symlink_cases);
}

// ------------------------------------------------------------------ class 2: oversized documents

fn oversized_cases(b: &Base, size: u64) -> Vec<Case> {
    let image = format!("{APP}:{IMG}");
    let fail = |args: &[&str]| step(args, Expect::Fail).rss(100).short().secs(30);
    let list = step(&["list", APP], Expect::FailOrWarn)
        .rss(100)
        .short()
        .secs(30);
    let big = |key: String| vec![(key, Edit::Zeros(size))];
    vec![
        case(
            "tag-link",
            big(tag_key(APP, IMG)),
            vec![fail(&pull_to_file(&image))],
        ),
        case(
            "manifest",
            big(blob_key(&b.manifest)),
            vec![fail(&pull_to_file(&image))],
        ),
        case(
            "config",
            big(blob_key(&b.config)),
            vec![fail(&pull_to_file(&image))],
        ),
        case(
            "image-record",
            big(record_key("images", IMG)),
            // The tag link is intact: pulling it may work, within the same bounds.
            vec![
                list,
                step(&["pull", APP, IMG, "-o", OUT], Expect::Survive)
                    .rss(100)
                    .short(),
            ],
        ),
        case(
            "env-record",
            big(record_key("envs", ENV)),
            vec![fail(&["current", APP, ENV])],
        ),
    ]
}

#[test]
fn oversized_documents_dir() {
    run_class("dir", "oversized", |b, _| oversized_cases(b, 200 * MIB));
}

/// moto holds every object in memory: 120 MiB is still far above any document bound
/// and above the 100 MiB RSS limit a whole read would need.
#[test]
fn oversized_documents_moto() {
    run_class("moto", "oversized", |b, _| {
        oversized_cases(b, 120 * MIB)
            .into_iter()
            .filter(|c| ["tag-link", "manifest", "image-record"].contains(&c.name.as_str()))
            .collect()
    });
}

// ------------------------------------------------------------------ class 3: many layers

fn many_layers(n: usize) -> Case {
    let layers: Vec<SynLayer> = (0..n).map(|i| gzip_layer(&format!("f{i}"))).collect();
    let tag = format!("n{n}");
    let reference = format!("many:{tag}");
    // Up to pull's layer limit (1,000) the pull succeeds with memory bounded whatever the
    // count; past it, one clear error (never a panic or memory growth).
    let expect = if n <= 1000 {
        Expect::Succeed
    } else {
        Expect::Fail
    };
    let s = step(&pull_to_file(&reference), expect).rss(300);
    case(&tag, image("many", &tag, &layers, 0), vec![s.secs(150)])
}

#[test]
fn many_layers_dir() {
    run_class("dir", "layers", |_, _| {
        vec![many_layers(1000), many_layers(3000), many_layers(10_000)]
    });
}

#[test]
fn many_layers_moto() {
    run_class("moto", "layers", |_, _| {
        vec![many_layers(1000), many_layers(3000)]
    });
}

// ------------------------------------------------------------------ class 4: verification gaps

fn verification_cases(_: &Base, _: &Host) -> Vec<Case> {
    let one = |tag: &str, layers: Vec<SynLayer>, delta: i64, expect: Expect| {
        case(
            tag,
            image("verify", tag, &layers, delta),
            vec![step(&pull_to_file(&format!("verify:{tag}")), expect)],
        )
    };
    let wrong = sha(b"not this layer");
    // A gzip layer whose trailer lies; the blob is re-digested, so only the trailer
    // check can catch it (offset 8 from the end: CRC-32, offset 4: ISIZE).
    let broken_trailer = |from_end: usize| {
        let mut l = gzip_layer("trailer");
        let at = l.blob.len() - from_end;
        l.blob[at] ^= 0xff;
        l
    };
    let repeated = |second_ok: bool| {
        let (a, mut b) = (gzip_layer("twice"), gzip_layer("twice"));
        if !second_ok {
            b.diff_id = wrong.clone();
        }
        vec![a, b]
    };
    vec![
        // The generator itself: a correct image must pull (else the rest proves nothing).
        one(
            "good",
            vec![gzip_layer("a"), plain_layer("b"), gzip_layer("c")],
            0,
            Expect::Succeed,
        ),
        one("good-repeated", repeated(true), 0, Expect::Succeed),
        one(
            "plain-diffid",
            vec![SynLayer {
                diff_id: wrong.clone(),
                ..plain_layer("p")
            }],
            0,
            Expect::Fail,
        ),
        one("repeated-diffid", repeated(false), 0, Expect::Fail),
        one("gzip-crc", vec![broken_trailer(8)], 0, Expect::Fail),
        one("gzip-isize", vec![broken_trailer(4)], 0, Expect::Fail),
        one("config-size", vec![gzip_layer("s")], 1, Expect::Fail),
    ]
}

#[test]
fn verification_gaps_dir() {
    run_class("dir", "verify", verification_cases);
}

#[test]
fn verification_gaps_moto() {
    run_class("moto", "verify", verification_cases);
}

// ------------------------------------------------------------------ class 5: records

fn set(path: &'static [&'static str], value: &str) -> Edit {
    let value = value.to_string();
    Edit::Json(Box::new(move |v: &mut serde_json::Value| {
        let mut at = v;
        for p in path {
            at = &mut at[*p];
        }
        *at = serde_json::Value::String(value.clone());
    }))
}

fn record_cases(b: &Base, _: &Host) -> Vec<Case> {
    let image = format!("{APP}:{IMG}");
    let evil = format!("{IMG}\n{INJECTED}\x1b[31mred");
    let readers = || {
        vec![
            step(&["list"], Expect::Survive),
            step(&["list", APP], Expect::Survive),
            step(&["history", APP], Expect::Survive),
            step(&["current", APP, ENV], Expect::Survive),
            step(&["pull", APP, ENV, "-o", OUT], Expect::Survive),
            step(&["promote", &image, "staging"], Expect::Survive).audited(),
            step(&["tag", &image, "v2.0.0"], Expect::Survive).audited(),
        ]
    };
    // Multi-byte characters across byte 7, where a 7-character short hash is cut.
    let non_ascii = "ééééééé";
    let bad_json = || Edit::Put(b"{\"schemaVersion\": 1, \"kind\": \"ima".to_vec());
    let good_copy = Edit::Derive(
        record_key("images", IMG),
        Box::new(|v: &mut serde_json::Value| v["tag"] = "20250101-0000-aaa1111".into()),
    );
    vec![
        case(
            "newline-and-ansi-in-tags",
            vec![
                (record_key("images", IMG), set(&["tag"], &evil)),
                (record_key("versions", VERSION), set(&["image_tag"], &evil)),
                (record_key("envs", ENV), set(&["image_tag"], &evil)),
                (audit_key("push"), set(&["target", "image"], &evil)),
            ],
            readers(),
        ),
        case(
            "ansi-in-names-and-times",
            vec![
                (
                    record_key("envs", ENV),
                    set(&["promoted_at"], "2026-01-01T00:00:00Z\x1b[2J"),
                ),
                (
                    record_key("envs", ENV),
                    set(&["promoted_by"], "\x1b]0;pwned\x07eve"),
                ),
                (
                    record_key("versions", VERSION),
                    set(&["tagged_by"], "\x1b[8mhidden"),
                ),
                (
                    audit_key("promote"),
                    set(&["actor", "name"], "\x1b[2Kmallory"),
                ),
                (
                    audit_key("tag"),
                    set(&["time"], "2026-01-01T00:00:00Z\x1b[1A"),
                ),
            ],
            readers(),
        ),
        case(
            "non-ascii-commit",
            vec![
                (
                    record_key("images", IMG),
                    set(&["git", "commit"], non_ascii),
                ),
                (audit_key("push"), set(&["git_commit"], non_ascii)),
                (
                    audit_key("push"),
                    set(&["target", "git", "commit"], non_ascii),
                ),
            ],
            vec![
                step(&["list"], Expect::Succeed),
                step(&["list", APP], Expect::Succeed),
                step(&["history", APP], Expect::Succeed),
                step(&["promote", &image, "staging"], Expect::Survive).audited(),
                step(&["tag", &image, "v2.0.0"], Expect::Survive).audited(),
            ],
        ),
        case(
            "one-malformed-image-record",
            vec![
                (record_key("images", "20250101-0000-aaa1111"), good_copy),
                (
                    tag_key(APP, "20250101-0000-aaa1111"),
                    Edit::Put(b.manifest.clone().into_bytes()),
                ),
                (record_key("images", "20250102-0000-bad0bad"), bad_json()),
            ],
            vec![
                step(&["list", APP], Expect::Warn).shows(&[IMG, "20250101-0000-aaa1111"]),
                step(&["list"], Expect::Succeed),
            ],
        ),
        case(
            "one-malformed-env-record",
            vec![(record_key("envs", "staging"), bad_json())],
            vec![
                step(&["list", APP], Expect::Warn).shows(&[IMG, ENV]),
                step(&["current", APP, ENV], Expect::Succeed),
            ],
        ),
        case(
            "one-malformed-audit-event",
            vec![(
                format!("s3dock/audit/{APP}/202601/20260101-000000-push-bad0bad.json"),
                bad_json(),
            )],
            vec![step(&["history", APP], Expect::Warn).shows(&["promote", "tag", "push"])],
        ),
    ]
}

#[test]
fn hostile_records_dir() {
    run_class("dir", "records", record_cases);
}

#[test]
fn hostile_records_moto() {
    run_class("moto", "records", record_cases);
}
