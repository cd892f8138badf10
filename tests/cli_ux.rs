//! The command line as a user meets it: each command's help lists only what it uses
//! and has text for every option; `--json` on every command that prints a result;
//! config files; shell completions and man pages.

mod common;

use common::{fixture, TestStore};
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
    for p in ["push", "pull", "promote"] {
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

/// Every command that prints a result prints JSON with --json.
#[test]
fn json_on_every_command() {
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
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("a.tar");
    let v = json(&["pull", "--json", "app:1", "-o", file.to_str().unwrap()]);
    assert!(v["manifest_digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    // Archive on stdout: the summary is the last stderr line.
    let o = run(&["pull", "--json", "app:1"]);
    assert!(o.stdout.len() > 1024);
    let err = String::from_utf8_lossy(&o.stderr);
    let last: serde_json::Value = serde_json::from_str(err.trim_end().lines().last().unwrap())
        .unwrap_or_else(|e| panic!("last stderr line is not JSON ({e}): {err}"));
    assert_eq!(last["manifest_digest"], v["manifest_digest"]);
    assert_eq!(json(&["tags", "--json", "app"])["tags"][0], "1");
    assert!(json(&["cleanup", "--json"]).is_object());
    assert_eq!(
        json(&["tag", "--json", "app:1", "v1.0.0"])["version"],
        "v1.0.0"
    );
    assert!(json(&["promote", "--json", "app:1", "staging"]).is_object());
    assert!(json(&["current", "--json", "app", "staging"]).is_object());
    assert!(json(&["list", "--json"]).is_object() || json(&["list", "--json"]).is_array());
    assert!(!json(&["list", "--json", "app"]).is_null());
    assert!(!json(&["history", "--json", "app"]).is_null());
    assert!(json(&["config", "show", "--json"]).is_object());
    // config list with no file: exit 0, an empty list.
    assert_eq!(
        json(&["config", "list", "--json"])["profiles"],
        serde_json::json!([])
    );
    assert_eq!(
        json(&["config", "init", "--json", "--no-input"])["profile"],
        "default"
    );
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
    git(&["add", "f"]);
    git(&["commit", "-qm", "c"]);
    let v = json(&[
        "stamp",
        "--json",
        "app",
        "-C",
        repo.path().to_str().unwrap(),
    ]);
    assert_eq!(v["app"], "app");
    assert!(v["reference"].as_str().unwrap().starts_with("app:"), "{v}");
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
