//! The command line as a user meets it: each command's help lists only what it uses
//! and has text for every option; `--json` on every command that prints a result;
//! config files; shell completions and man pages.

mod common;
mod interop_support;

use common::{fixture, TestStore};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn s3dock(cfg: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_s3dock"));
    c.env("S3DOCK_CONFIG", cfg)
        .env_remove("S3DOCK_STORE")
        .env_remove("S3DOCK_PROFILE")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null());
    c
}

fn ok(mut c: Command) -> Output {
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "{c:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn help(path: &[&str]) -> String {
    let mut c = s3dock(Path::new("/nonexistent"));
    c.args(path).arg("--help");
    String::from_utf8(ok(c).stdout).unwrap()
}

/// The names listed under `Commands:` in a help text (without `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        // A description too long for the terminal wraps onto deeper-indented lines.
        .filter(|l| !l[2..].starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| *n != "help")
        .map(String::from)
        .collect()
}

/// Option and argument entries of a help text that have no text: an entry is a line
/// starting with `-`/`[`/`<` after clap's entry indentation (2, or 6 for a long-only
/// option); its text is on the same line after two spaces, or on the next, more
/// indented line.
fn entries_without_help(help: &str) -> Vec<String> {
    let lines: Vec<&str> = help.lines().collect();
    let mut bad = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        let indent = l.len() - t.len();
        if !(indent == 2 || indent == 6)
            || !(t.starts_with('-') || t.starts_with('[') || t.starts_with('<'))
        {
            continue;
        }
        let same_line = t.contains("  ") && !t.trim_end().ends_with('>');
        let next_line = lines.get(i + 1).is_some_and(|n| {
            let nt = n.trim_start();
            n.len() - nt.len() > indent && !nt.is_empty() && !nt.starts_with('-')
        });
        if !same_line && !next_line {
            bad.push(l.to_string());
        }
    }
    bad
}

#[test]
fn help_shows_own_options_and_text_for_every_one() {
    let top = help(&[]);
    let mut commands: Vec<Vec<String>> = subcommands(&top).into_iter().map(|c| vec![c]).collect();
    assert!(commands.len() >= 12, "{top}");
    let config = help(&["config"]);
    commands.extend(
        subcommands(&config)
            .into_iter()
            .map(|c| vec!["config".into(), c]),
    );
    for path in &commands {
        let p: Vec<&str> = path.iter().map(String::as_str).collect();
        let h = help(&p);
        let bad = entries_without_help(&h);
        assert!(bad.is_empty(), "{p:?}: entries without text: {bad:?}\n{h}");
        let store_flags = h.contains("--sse");
        let transfer_flags = h.contains("--part-size");
        match p.as_slice() {
            ["stamp"] | ["completions"] | ["man"] | ["config", "list"] => {
                assert!(
                    !store_flags && !transfer_flags && !h.contains("--store"),
                    "{p:?}:\n{h}"
                )
            }
            ["push"] | ["pull"] | ["build"] => {
                assert!(store_flags && transfer_flags, "{p:?}:\n{h}");
                assert!(h.contains("Store options:") && h.contains("Transfer options:"));
            }
            _ => {}
        }
        // Own options come first; shared ones under their own heading.
        if let (Some(own), Some(store)) = (h.find("\nOptions:"), h.find("Store options:")) {
            assert!(own < store, "{p:?}:\n{h}");
        }
    }
    for p in [
        "push", "pull", "promote", "copy", "deploy", "rollback", "agent",
    ] {
        let h = help(&[p]);
        let ex = h
            .find("Examples:")
            .unwrap_or_else(|| panic!("{p}: no examples:\n{h}"));
        assert!(
            h[ex..].matches("s3dock ").count() >= 2,
            "{p}: examples:\n{h}"
        );
    }
    // Old command lines: store flags before the subcommand still work.
    let dir = tempfile::tempdir().unwrap();
    let mut c = s3dock(Path::new("/nonexistent"));
    c.args([
        "--store",
        dir.path().to_str().unwrap(),
        "--jobs",
        "2",
        "--json",
    ])
    .args(["config", "show"]);
    let v: serde_json::Value = serde_json::from_slice(&ok(c).stdout).unwrap();
    assert_eq!(v["settings"]["jobs"]["value"], "2");
    assert_eq!(v["settings"]["store"]["source"], "flag --store");
}

/// The README's table of `--json` output: command → (shape, always-present fields,
/// sometimes-present fields). Rows sit between the `json-fields` comments; a field
/// written `` `name?` `` is present only sometimes.
fn documented_json() -> BTreeMap<String, (String, BTreeSet<String>, BTreeSet<String>)> {
    let readme = std::fs::read_to_string(common::root().join("README.md")).unwrap();
    let (_, rest) = readme
        .split_once("<!-- json-fields:begin")
        .expect("README: json-fields table");
    let (table, _) = rest.split_once("<!-- json-fields:end -->").unwrap();
    let mut out = BTreeMap::new();
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let command = cells[1].trim_matches('`').to_string();
        let (mut always, mut sometimes) = (BTreeSet::new(), BTreeSet::new());
        for (i, f) in cells[3].split('`').enumerate() {
            if i % 2 == 0 {
                continue;
            }
            match f.strip_suffix('?') {
                Some(f) => sometimes.insert(f.to_string()),
                None => always.insert(f.to_string()),
            };
        }
        assert!(
            out.insert(command.clone(), (cells[2].to_string(), always, sometimes))
                .is_none(),
            "README: {command} twice"
        );
    }
    out
}

/// A result against its README row: the shape, and top-level fields (of each element,
/// for an array) all documented, the always-present ones all there.
fn check_documented(
    doc: &BTreeMap<String, (String, BTreeSet<String>, BTreeSet<String>)>,
    command: &str,
    v: &serde_json::Value,
) {
    let (shape, always, sometimes) = doc
        .get(command)
        .unwrap_or_else(|| panic!("README documents no --json output of {command}"));
    let objects: Vec<&serde_json::Map<String, serde_json::Value>> = match shape.as_str() {
        "object" => vec![v.as_object().unwrap_or_else(|| panic!("{command}: {v}"))],
        "array" => v
            .as_array()
            .unwrap_or_else(|| panic!("{command}: not an array: {v}"))
            .iter()
            .map(|e| e.as_object().unwrap())
            .collect(),
        other => panic!("README: {command}: unknown shape {other}"),
    };
    assert!(
        !objects.is_empty(),
        "{command}: an empty array proves nothing"
    );
    for o in objects {
        let keys: BTreeSet<String> = o.keys().cloned().collect();
        let missing: Vec<_> = always.difference(&keys).collect();
        let undocumented: Vec<_> = keys
            .iter()
            .filter(|k| !always.contains(*k) && !sometimes.contains(*k))
            .collect();
        assert!(
            missing.is_empty() && undocumented.is_empty(),
            "{command} --json: documented but absent {missing:?}, present but undocumented {undocumented:?}: {v}"
        );
    }
}

/// Every command that prints a result prints JSON with --json, with the fields the
/// README documents for it.
#[test]
fn json_on_every_command() {
    let doc = documented_json();
    let mut checked = BTreeSet::new();
    let mut check = |command: &str, v: &serde_json::Value| {
        check_documented(&doc, command, v);
        checked.insert(command.to_string());
    };
    let store = TestStore::local();
    let cfg = tempfile::tempdir().unwrap();
    let cfg = cfg.path().join("config.toml");
    let tiny = fixture("docker25-tiny.tar");
    let run = |args: &[&str]| -> Output {
        let mut c = s3dock(&cfg);
        c.args(&store.args).args(args);
        c.env("S3DOCK_ACTOR", "tester");
        ok(c)
    };
    let json = |args: &[&str]| -> serde_json::Value {
        let o = run(args);
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?}: not JSON ({e}): {}",
                String::from_utf8_lossy(&o.stdout)
            )
        })
    };
    let v = json(&["push", "--json", "-i", tiny.to_str().unwrap(), "app:1"]);
    assert_eq!(v["images"][0]["reference"], "app:1", "{v}");
    check("push", &v);
    json(&["push", "--json", "-i", tiny.to_str().unwrap(), "app:2"]);
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("a.tar");
    let v = json(&["pull", "--json", "app:1", "-o", file.to_str().unwrap()]);
    assert!(v["manifest_digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    check("pull", &v);
    // FILE gets the mode any new file gets here (0666 less the umask), not a temp file's 0600.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let probe = out.path().join("probe");
    std::fs::File::create(&probe).unwrap();
    assert_eq!(mode(&file), mode(&probe));
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    // Archive on stdout: the summary is the last stderr line.
    let o = run(&["pull", "--json", "app:1"]);
    assert!(o.stdout.len() > 1024);
    let err = String::from_utf8_lossy(&o.stderr);
    let last: serde_json::Value = serde_json::from_str(err.trim_end().lines().last().unwrap())
        .unwrap_or_else(|e| panic!("last stderr line is not JSON ({e}): {err}"));
    assert_eq!(last["manifest_digest"], v["manifest_digest"]);
    check("pull", &last);
    let v = json(&[
        "pull",
        "--json",
        "app:1",
        "app:2",
        "-o",
        file.to_str().unwrap(),
    ]);
    check("pull (bundle)", &v);
    assert_eq!(mode(&file), 0o640, "an existing FILE keeps its mode");
    let to = tempfile::tempdir().unwrap();
    let v = json(&[
        "copy",
        "--json",
        "app:1",
        "--to",
        to.path().to_str().unwrap(),
    ]);
    check("copy", &v);
    let v = json(&["tags", "--json", "app"]);
    assert_eq!(v["tags"][0], "1");
    check("tags", &v);
    check("cleanup", &json(&["cleanup", "--json"]));
    let v = json(&["tag", "--json", "app:1", "v1.0.0"]);
    assert_eq!(v["version"], "v1.0.0");
    check("tag", &v);
    check("promote", &json(&["promote", "--json", "app:1", "staging"]));
    check("current", &json(&["current", "--json", "app", "staging"]));
    check("list", &json(&["list", "--json"]));
    check("list APP", &json(&["list", "--json", "app"]));
    check("history", &json(&["history", "--json", "app"]));
    let v = json(&["rm", "--json", "app:2"]);
    assert_eq!(v[0]["reference"], "app:2");
    check("rm", &v);
    check(
        "prune",
        &json(&[
            "prune",
            "--json",
            "app",
            "--keep-last",
            "0",
            "--older-than",
            "0s",
            "--dry-run",
        ]),
    );
    check("gc", &json(&["gc", "--json", "--grace", "0s"]));
    check("verify", &json(&["verify", "--json", "--deep"]));
    let state = tempfile::tempdir().unwrap();
    check(
        "status",
        &json(&[
            "status",
            "--json",
            "app",
            "staging",
            "--state-dir",
            state.path().to_str().unwrap(),
        ]),
    );
    check("config show", &json(&["config", "show", "--json"]));
    // config list with no file: exit 0, an empty list.
    let v = json(&["config", "list", "--json"]);
    assert_eq!(v["profiles"], serde_json::json!([]));
    check("config list", &v);
    let v = json(&["config", "init", "--json", "--no-input"]);
    assert_eq!(v["profile"], "default");
    check("config init", &v);
    assert_eq!(
        json(&["config", "list", "--json"])["profiles"][0]["name"],
        "default"
    );
    // stamp: in a git repository of its own.
    let repo = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let o = Command::new("git")
            .current_dir(repo.path())
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    git(&["init", "-q"]);
    std::fs::write(repo.path().join("f"), "x").unwrap();
    std::fs::write(repo.path().join("Dockerfile"), "FROM scratch\nCOPY f /f\n").unwrap();
    git(&["add", "f", "Dockerfile"]);
    git(&["commit", "-qm", "c"]);
    let repo_dir = repo.path().to_str().unwrap();
    let v = json(&["stamp", "--json", "app", "-C", repo_dir]);
    assert_eq!(v["app"], "app");
    assert!(v["reference"].as_str().unwrap().starts_with("app:"), "{v}");
    check("stamp", &v);
    // build --push, with Docker: a FROM scratch image of one file.
    if interop_support::need_docker() {
        let app = format!("cliux{}", interop_support::run_id());
        let v = json(&[
            "build",
            "--json",
            &app,
            "--context",
            repo_dir,
            "--dockerfile",
            &format!("{repo_dir}/Dockerfile"),
            "--builder",
            "docker",
            "--push",
        ]);
        let built = v["reference"].as_str().unwrap().to_string();
        let _ = Command::new("docker").args(["rmi", &built]).output();
        check("build", &v);
    }
    // Every command that prints a result has its row, and every row was checked here
    // but deploy's and rollback's (their output is one struct, `Outcome`; they need a
    // container engine and a traffic switch: tests/deploy.rs).
    let no_result = ["agent", "completions", "man", "config"];
    for c in subcommands(&help(&[])) {
        assert!(
            no_result.contains(&c.as_str()) || doc.contains_key(&c),
            "README documents no --json output of {c}"
        );
    }
    let unchecked: Vec<_> = doc
        .keys()
        .filter(|c| !checked.contains(*c))
        .filter(|c| !["deploy", "rollback"].contains(&c.as_str()))
        .filter(|c| *c != "build" || interop_support::docker_version().is_none())
        .collect();
    assert!(
        unchecked.is_empty(),
        "README rows not checked: {unchecked:?}"
    );
}

#[test]
fn config_file_flag_and_profiles_hold_every_setting() {
    let tmp = tempfile::tempdir().unwrap();
    let by_flag = tmp.path().join("flag.toml");
    let by_env = tmp.path().join("env.toml");
    // No file: config list says so on stderr and exits 0.
    let mut c = s3dock(&by_env);
    c.args(["config", "list"]);
    let o = ok(c);
    assert!(o.stdout.is_empty());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no config file"));
    // --config beats S3DOCK_CONFIG; a profile takes every store and transfer setting.
    let mut c = s3dock(&by_env);
    c.args([
        "--config",
        by_flag.to_str().unwrap(),
        "config",
        "init",
        "--no-input",
    ])
    .args([
        "--store",
        "s3://bkt/p",
        "--sse",
        "aws:kms",
        "--sse-kms-key-id",
        "k1",
    ])
    .args([
        "--storage-class",
        "STANDARD_IA",
        "--accelerate",
        "--retries",
        "3",
    ])
    .args([
        "--jobs",
        "2",
        "--part-size",
        "8MiB",
        "--cache",
        "/var/cache/x",
    ]);
    ok(c);
    assert!(by_flag.exists() && !by_env.exists());
    let mut c = s3dock(&by_env);
    c.args([
        "--config",
        by_flag.to_str().unwrap(),
        "--json",
        "config",
        "show",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&ok(c).stdout).unwrap();
    assert_eq!(v["config_file"], by_flag.to_str().unwrap());
    let s = &v["settings"];
    for (k, want) in [
        ("store", "s3://bkt/p"),
        ("sse", "aws:kms"),
        ("sse_kms_key_id", "k1"),
        ("storage_class", "STANDARD_IA"),
        ("accelerate", "true"),
        ("retries", "3"),
        ("jobs", "2"),
        ("part_size", "8MiB"),
        ("cache", "/var/cache/x"),
    ] {
        assert_eq!(s[k]["value"], want, "{k}: {v}");
        assert_eq!(s[k]["source"], "profile default", "{k}: {v}");
    }
    // A flag still beats the profile.
    let mut c = s3dock(&by_flag);
    c.args(["--json", "config", "show", "--retries", "9"]);
    let v: serde_json::Value = serde_json::from_slice(&ok(c).stdout).unwrap();
    assert_eq!(v["settings"]["retries"]["value"], "9");
    assert_eq!(v["settings"]["retries"]["source"], "flag --retries");
}

#[test]
fn wrong_usage_gets_a_correct_hint() {
    let store = TestStore::local();
    // Two images make a bundle, whose images keep their own tags.
    let err = store.fails(&["pull", "a:1", "b:2", "--tag", "c:1"], None);
    assert!(err.contains("--tag renames the one image"), "{err}");
    // history --event lists the kinds that are written.
    let mut c = s3dock(Path::new("/nonexistent"));
    c.args(&store.args)
        .args(["history", "app", "--event", "deploy-everything"]);
    let o = c.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("push"), "{err}");
}

#[test]
fn completions_and_man_pages() {
    for shell in ["bash", "zsh", "fish"] {
        let mut c = s3dock(Path::new("/nonexistent"));
        c.args(["completions", shell]);
        let out = String::from_utf8(ok(c).stdout).unwrap();
        assert!(out.contains("s3dock") && out.contains("promote"), "{shell}");
        // The hidden old-style globals are not offered.
        assert!(!out.is_empty());
    }
    let bash = {
        let mut c = s3dock(Path::new("/nonexistent"));
        c.args(["completions", "bash"]);
        String::from_utf8(ok(c).stdout).unwrap()
    };
    // Bash reads the script without errors.
    let o = Command::new("bash")
        .arg("-c")
        .arg("source /dev/stdin && complete -p s3dock")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut ch| {
            use std::io::Write;
            ch.stdin.take().unwrap().write_all(bash.as_bytes())?;
            ch.wait_with_output()
        })
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut c = s3dock(Path::new("/nonexistent"));
    c.arg("man");
    let page = String::from_utf8(ok(c).stdout).unwrap();
    assert!(
        page.contains(".TH s3dock"),
        "{}",
        &page[..page.len().min(300)]
    );
    let dir = tempfile::tempdir().unwrap();
    let mut c = s3dock(Path::new("/nonexistent"));
    c.args(["man", "--dir", dir.path().to_str().unwrap()]);
    ok(c);
    for f in ["s3dock.1", "s3dock-push.1", "s3dock-config-show.1"] {
        assert!(dir.path().join(f).exists(), "{f} missing");
    }
}
