//! Profiles in `~/.config/s3dock/config.toml` (`$XDG_CONFIG_HOME/s3dock/config.toml`,
//! or the file `S3DOCK_CONFIG` names). A profile fills in whatever the command line
//! and the environment left unset: precedence is flag > environment > profile > default.
//!
//! `--profile NAME` / `S3DOCK_PROFILE` select an s3dock profile; the profile named
//! `default` applies when none is selected. For compatibility, `--profile NAME` with
//! no config file at all is taken as the AWS shared-config profile (`--aws-profile`).

use crate::cli::{parse_size, Global};
use crate::codec::Compression;
use anyhow::{anyhow, bail, Context, Result};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, Subcommand};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

/// One profile: every key optional. Unknown keys are refused, so credentials can
/// never be stored here by mistake (they come from the AWS credential chain).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub store: Option<String>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub root_dir: Option<String>,
    pub path_style: Option<bool>,
    pub aws_profile: Option<String>,
    pub compression: Option<String>,
    pub jobs: Option<usize>,
    pub part_size: Option<String>,
    pub builder: Option<String>,
    pub actor: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

/// Where the config file is: `S3DOCK_CONFIG`, else `$XDG_CONFIG_HOME/s3dock/config.toml`,
/// else `~/.config/s3dock/config.toml`.
pub fn config_path() -> PathBuf {
    if let Some(p) = std::env::var_os("S3DOCK_CONFIG").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("s3dock/config.toml")
}

/// Reads the config file; None when there is none.
pub fn load(path: &std::path::Path) -> Result<Option<ConfigFile>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let cfg: ConfigFile = toml::from_str(&text)
        .map_err(|e| anyhow!("invalid config file {}: {}", path.display(), e.message()))?;
    for (name, p) in &cfg.profiles {
        check_profile(name, p).with_context(|| format!("profile {name} in {}", path.display()))?;
    }
    Ok(Some(cfg))
}

fn check_profile(name: &str, p: &Profile) -> Result<()> {
    if !valid_profile_name(name) {
        bail!("profile names are letters, digits, '_' and '-'");
    }
    if let Some(c) = &p.compression {
        c.parse::<Compression>()?;
    }
    if let Some(b) = &p.builder {
        if !matches!(b.as_str(), "docker" | "podman" | "buildah") {
            bail!("unknown builder {b:?}: use docker, podman or buildah");
        }
    }
    if let Some(s) = &p.part_size {
        parse_size(s).map_err(|e| anyhow!(e))?;
    }
    if let Some(s) = &p.store {
        crate::store::Location::parse(s).map_err(|_| {
            anyhow!(
                "invalid store {}: use s3://bucket[/prefix], file:///path or a directory",
                redact_url(s)
            )
        })?;
    }
    if p.jobs == Some(0) {
        bail!("jobs must be at least 1");
    }
    Ok(())
}

fn valid_profile_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Where each global setting came from, as reported by clap.
#[derive(Debug, Clone, Default)]
pub struct ArgSources(BTreeMap<&'static str, ValueSource>);

/// The global settings a profile can fill in, with their clap ids and env vars.
const SETTINGS: &[(&str, Option<&str>)] = &[
    ("store", Some("S3DOCK_STORE")),
    ("endpoint", Some("S3DOCK_ENDPOINT")),
    ("region", Some("S3DOCK_REGION")),
    ("root_dir", Some("S3DOCK_ROOT_DIR")),
    ("path_style", None),
    ("aws_profile", Some("AWS_PROFILE")),
    ("jobs", Some("S3DOCK_JOBS")),
    ("part_size", None),
    ("actor", Some("S3DOCK_ACTOR")),
];

impl ArgSources {
    pub fn from_matches(m: &ArgMatches) -> Self {
        let mut out = BTreeMap::new();
        for id in SETTINGS
            .iter()
            .map(|(id, _)| *id)
            .chain(["profile", "compression", "builder"])
        {
            if let Ok(Some(src)) = m.try_get_raw(id).map(|_| m.value_source(id)) {
                out.insert(id, src);
            }
        }
        // Subcommand-level options (push --compression, build --builder).
        let mut cur = m;
        while let Some((_, sub)) = cur.subcommand() {
            for id in ["compression", "builder"] {
                if let Ok(Some(_)) = sub.try_get_raw(id) {
                    if let Some(src) = sub.value_source(id) {
                        out.insert(id, src);
                    }
                }
            }
            cur = sub;
        }
        ArgSources(out)
    }

    fn describe(&self, id: &str, env: Option<&str>) -> Option<String> {
        match self.0.get(id)? {
            ValueSource::CommandLine => Some(format!("flag --{}", id.replace('_', "-"))),
            ValueSource::EnvVariable => Some(format!("env {}", env.unwrap_or("?"))),
            _ => None,
        }
    }
}

/// The s3dock profile in use and how it was chosen.
#[derive(Debug, Clone)]
pub struct Selected {
    pub path: PathBuf,
    pub file_exists: bool,
    pub name: Option<String>,
    pub chosen_by: String,
    pub profile: Profile,
}

/// Picks the profile (if any) and fills every global setting the command line and the
/// environment left unset. Also sets the profile-only settings (compression, builder).
pub fn apply(g: &mut Global, sources: &ArgSources) -> Result<Selected> {
    let path = config_path();
    let file = load(&path)?;
    let requested = g.profile.clone();
    let by_flag = matches!(sources.0.get("profile"), Some(ValueSource::CommandLine));
    let (name, chosen_by) = match (&requested, &file) {
        (Some(n), Some(f)) => {
            if !f.profiles.contains_key(n) {
                let names: Vec<&str> = f.profiles.keys().map(String::as_str).collect();
                bail!(
                    "no s3dock profile {n:?} in {} (profiles: {}); for an AWS profile use --aws-profile {n}",
                    path.display(),
                    if names.is_empty() { "none".to_string() } else { names.join(", ") }
                );
            }
            (
                Some(n.clone()),
                if by_flag { "flag --profile" } else { "env S3DOCK_PROFILE" }.to_string(),
            )
        }
        (Some(n), None) if by_flag => {
            tracing::debug!(
                "no s3dock config file at {}: taking --profile {n} as the AWS profile",
                path.display()
            );
            if !matches!(sources.0.get("aws_profile"), Some(ValueSource::CommandLine)) {
                g.aws_profile = Some(n.clone());
            }
            g.profile = None;
            (None, "none".to_string())
        }
        (Some(n), None) => bail!(
            "S3DOCK_PROFILE={n} but there is no config file at {}: create it with s3dock config init --profile {n}",
            path.display()
        ),
        (None, Some(f)) if f.profiles.contains_key("default") => {
            (Some("default".to_string()), "the default profile".to_string())
        }
        (None, _) => (None, "none".to_string()),
    };
    let profile = name
        .as_ref()
        .and_then(|n| file.as_ref().and_then(|f| f.profiles.get(n)).cloned())
        .unwrap_or_default();
    fill(g, &profile)?;
    Ok(Selected {
        path,
        file_exists: file.is_some(),
        name,
        chosen_by,
        profile,
    })
}

fn fill(g: &mut Global, p: &Profile) -> Result<()> {
    fn or<T: Clone>(slot: &mut Option<T>, v: &Option<T>) {
        if slot.is_none() {
            *slot = v.clone();
        }
    }
    or(&mut g.store, &p.store);
    or(&mut g.endpoint, &p.endpoint);
    or(&mut g.region, &p.region);
    or(&mut g.root_dir, &p.root_dir);
    or(&mut g.path_style, &p.path_style);
    or(&mut g.aws_profile, &p.aws_profile);
    or(&mut g.jobs, &p.jobs);
    or(&mut g.actor, &p.actor);
    if g.part_size.is_none() {
        g.part_size = p
            .part_size
            .as_deref()
            .map(parse_size)
            .transpose()
            .map_err(|e| anyhow!(e))?;
    }
    g.profile_compression = p.compression.as_deref().map(str::parse).transpose()?;
    g.profile_builder = p.builder.clone();
    Ok(())
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Write a profile to the config file (interactively on a terminal, or from flags)
    Init(InitArgs),
    /// Print the effective settings and where each came from (secrets are never printed)
    Show,
    /// List the profiles in the config file
    List,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Layer compression for pushes: gzip, zstd or none
    #[arg(long)]
    pub compression: Option<Compression>,
    /// Image builder for `s3dock build`: docker, podman or buildah
    #[arg(long)]
    pub builder: Option<String>,
    /// Replace the profile if it exists
    #[arg(long)]
    pub force: bool,
    /// Never prompt, even on a terminal
    #[arg(long)]
    pub no_input: bool,
}

pub fn run(cmd: ConfigCommand, g: Global, sources: &ArgSources) -> Result<()> {
    match cmd {
        ConfigCommand::Init(a) => init(g, a),
        ConfigCommand::Show => show(g, sources),
        ConfigCommand::List => list(g.json),
    }
}

fn list(json: bool) -> Result<()> {
    let path = config_path();
    let Some(file) = load(&path)? else {
        bail!(
            "no config file at {}: create one with s3dock config init",
            path.display()
        );
    };
    let active = std::env::var("S3DOCK_PROFILE")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            file.profiles
                .contains_key("default")
                .then(|| "default".to_string())
        });
    if json {
        let v: Vec<_> = file
            .profiles
            .iter()
            .map(|(n, p)| serde_json::json!({"name": n, "active": Some(n) == active.as_ref(), "store": p.store}))
            .collect();
        println!("{}", serde_json::json!({"path": path, "profiles": v}));
        return Ok(());
    }
    for (n, p) in &file.profiles {
        let mark = if Some(n) == active.as_ref() { "*" } else { " " };
        println!(
            "{mark} {n:<16} {}",
            p.store.as_deref().map(redact_url).unwrap_or_default()
        );
    }
    Ok(())
}

/// A size as `parse_size` reads it back (`16MiB`, `1GiB`, or bytes).
fn fmt_size(n: u64) -> String {
    if n.is_multiple_of(1 << 30) {
        format!("{}GiB", n >> 30)
    } else if n.is_multiple_of(1 << 20) {
        format!("{}MiB", n >> 20)
    } else if n.is_multiple_of(1 << 10) {
        format!("{}KiB", n >> 10)
    } else {
        n.to_string()
    }
}

/// URLs are printed without any user:password part.
pub fn redact_url(s: &str) -> String {
    match url::Url::parse(s) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("***");
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => s.to_string(),
    }
}

fn show(mut g: Global, sources: &ArgSources) -> Result<()> {
    let sel = apply(&mut g, sources)?;
    let from_profile = |set: bool| -> String {
        match (&sel.name, set) {
            (Some(n), true) => format!("profile {n}"),
            _ => "default".to_string(),
        }
    };
    let src = |id: &str, env: Option<&str>, in_profile: bool| -> String {
        sources
            .describe(id, env)
            .unwrap_or_else(|| from_profile(in_profile))
    };
    let p = &sel.profile;
    let env_or = |var: &str| std::env::var(var).ok().filter(|s| !s.is_empty());
    let compression = env_or("S3DOCK_COMPRESSION")
        .map(|v| (v, "env S3DOCK_COMPRESSION".to_string()))
        .or_else(|| p.compression.clone().map(|v| (v, from_profile(true))))
        .unwrap_or(("gzip".into(), "default".into()));
    let builder = env_or("S3DOCK_BUILDER")
        .map(|v| (v, "env S3DOCK_BUILDER".to_string()))
        .or_else(|| p.builder.clone().map(|v| (v, from_profile(true))))
        .unwrap_or(("docker".into(), "default".into()));
    let actor = match &g.actor {
        Some(a) => (
            a.clone(),
            src("actor", Some("S3DOCK_ACTOR"), p.actor.is_some()),
        ),
        None => {
            let (a, how) = crate::release::audit::local_actor();
            (a, how.to_string())
        }
    };
    let store = g.store.clone().unwrap_or_else(crate::cli::default_store);
    let rows: Vec<(&str, String, String)> = vec![
        (
            "store",
            redact_url(&store),
            src("store", Some("S3DOCK_STORE"), p.store.is_some()),
        ),
        (
            "endpoint",
            g.endpoint.as_deref().map(redact_url).unwrap_or_default(),
            src("endpoint", Some("S3DOCK_ENDPOINT"), p.endpoint.is_some()),
        ),
        (
            "region",
            g.region.clone().unwrap_or_default(),
            src("region", Some("S3DOCK_REGION"), p.region.is_some()),
        ),
        (
            "root_dir",
            g.root_dir.clone().unwrap_or_default(),
            src("root_dir", Some("S3DOCK_ROOT_DIR"), p.root_dir.is_some()),
        ),
        (
            "path_style",
            g.path_style.unwrap_or(g.endpoint.is_some()).to_string(),
            src("path_style", None, p.path_style.is_some()),
        ),
        (
            "aws_profile",
            g.aws_profile.clone().unwrap_or_default(),
            if sel.chosen_by == "none"
                && g.aws_profile.is_some()
                && matches!(sources.0.get("profile"), Some(ValueSource::CommandLine))
            {
                "flag --profile (no config file)".to_string()
            } else {
                src("aws_profile", Some("AWS_PROFILE"), p.aws_profile.is_some())
            },
        ),
        (
            "jobs",
            g.jobs.unwrap_or(crate::cli::DEFAULT_JOBS).to_string(),
            src("jobs", Some("S3DOCK_JOBS"), p.jobs.is_some()),
        ),
        (
            "part_size",
            fmt_size(g.part_size.unwrap_or(crate::cli::DEFAULT_PART_SIZE)),
            src("part_size", None, p.part_size.is_some()),
        ),
        ("compression", compression.0, compression.1),
        ("builder", builder.0, builder.1),
        ("actor", actor.0, actor.1),
        (
            "credentials",
            "AWS credential chain (not shown)".to_string(),
            "aws".to_string(),
        ),
    ];
    if g.json {
        let settings: serde_json::Map<String, serde_json::Value> = rows
            .iter()
            .map(|(k, v, s)| {
                (
                    (*k).to_string(),
                    serde_json::json!({"value": v, "source": s}),
                )
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "config_file": sel.path,
                "config_file_exists": sel.file_exists,
                "profile": sel.name,
                "profile_chosen_by": sel.chosen_by,
                "settings": settings,
            })
        );
        return Ok(());
    }
    println!(
        "config file  {} ({})",
        sel.path.display(),
        if sel.file_exists {
            "found"
        } else {
            "not found"
        }
    );
    println!(
        "profile      {}",
        match &sel.name {
            Some(n) => format!("{n} (from {})", sel.chosen_by),
            None => "none".to_string(),
        }
    );
    for (k, v, s) in rows {
        let v = if v.is_empty() { "-".to_string() } else { v };
        println!("{k:<12} {v:<40} {s}");
    }
    Ok(())
}

fn init(g: Global, a: InitArgs) -> Result<()> {
    let path = config_path();
    let mut file = load(&path)?.unwrap_or_default();
    let name = g.profile.clone().unwrap_or_else(|| "default".to_string());
    if !valid_profile_name(&name) {
        bail!("invalid profile name {name:?}: use letters, digits, '_' and '-'");
    }
    if file.profiles.contains_key(&name) && !a.force {
        bail!(
            "profile {name} already exists in {}: use --force to replace it",
            path.display()
        );
    }
    let mut p = Profile {
        store: g.store.clone(),
        endpoint: g.endpoint.clone(),
        region: g.region.clone(),
        root_dir: g.root_dir.clone(),
        path_style: g.path_style,
        aws_profile: g.aws_profile.clone(),
        compression: a.compression.map(|c| c.name().to_string()),
        jobs: g.jobs,
        part_size: g.part_size.map(fmt_size),
        builder: a.builder.clone(),
        actor: g.actor.clone(),
    };
    let interactive = !a.no_input && std::io::stdin().is_terminal() && p.store.is_none();
    if interactive {
        ask(&mut p)?;
    }
    check_profile(&name, &p)?;
    file.profiles.insert(name.clone(), p);
    let text = render(&file);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    tmp.write_all(text.as_bytes())?;
    tmp.persist(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    if !g.quiet {
        eprintln!("wrote profile {name} to {}", path.display());
    }
    Ok(())
}

/// Asks for each setting on stderr/stdin; an empty answer keeps the shown default.
fn ask(p: &mut Profile) -> Result<()> {
    let stdin = std::io::stdin();
    let mut line = String::new();
    let mut prompt = |q: &str, cur: Option<String>| -> Result<Option<String>> {
        eprint!(
            "{q}{}: ",
            cur.as_deref()
                .map(|c| format!(" [{c}]"))
                .unwrap_or_default()
        );
        std::io::stderr().flush()?;
        line.clear();
        stdin.lock().read_line(&mut line)?;
        let v = line.trim();
        Ok(if v.is_empty() {
            cur
        } else {
            Some(v.to_string())
        })
    };
    p.store = prompt(
        "store (s3://bucket[/prefix], file:///path or a directory)",
        p.store.clone(),
    )?;
    p.endpoint = prompt("S3 endpoint (empty for AWS)", p.endpoint.clone())?;
    p.region = prompt("region", p.region.clone())?;
    p.root_dir = prompt("root directory in the store", p.root_dir.clone())?;
    p.aws_profile = prompt("AWS profile", p.aws_profile.clone())?;
    p.compression = prompt("compression (gzip, zstd, none)", p.compression.clone())?;
    p.builder = prompt("builder (docker, podman, buildah)", p.builder.clone())?;
    p.actor = prompt(
        "actor for the audit trail (empty: git user)",
        p.actor.clone(),
    )?;
    Ok(())
}

/// The config file as TOML with a comment on every key; unset keys are shown commented out.
pub fn render(file: &ConfigFile) -> String {
    let mut out = String::from(
        "# s3dock configuration, written by `s3dock config init`.\n\
         # Select a profile with --profile NAME or S3DOCK_PROFILE=NAME; the profile named\n\
         # \"default\" applies when none is selected.\n\
         # Precedence: command-line flag > environment variable > profile > built-in default.\n\
         # Credentials never go here: they come from the AWS credential chain\n\
         # (environment, ~/.aws/credentials, SSO, instance roles; see aws_profile).\n",
    );
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    for (name, p) in &file.profiles {
        out.push_str(&format!("\n[profiles.{name}]\n"));
        let mut key = |comment: &str, k: &str, v: Option<String>, example: &str| {
            out.push_str(&format!("# {comment}\n"));
            match v {
                Some(v) => out.push_str(&format!("{k} = {v}\n")),
                None => out.push_str(&format!("# {k} = {example}\n")),
            }
        };
        key(
            "store: s3://bucket[/prefix], file:///path or a directory",
            "store",
            p.store.as_deref().map(q),
            "\"s3://my-bucket/images\"",
        );
        key(
            "S3-compatible endpoint (implies path-style addressing)",
            "endpoint",
            p.endpoint.as_deref().map(q),
            "\"http://127.0.0.1:9000\"",
        );
        key(
            "AWS region",
            "region",
            p.region.as_deref().map(q),
            "\"eu-west-1\"",
        );
        key(
            "directory inside the bucket or store (the registry's rootdirectory)",
            "root_dir",
            p.root_dir.as_deref().map(q),
            "\"registry\"",
        );
        key(
            "path-style S3 addressing",
            "path_style",
            p.path_style.map(|b| b.to_string()),
            "true",
        );
        key(
            "AWS shared-config profile for credentials and region",
            "aws_profile",
            p.aws_profile.as_deref().map(q),
            "\"prod\"",
        );
        key(
            "layer compression for pushes: gzip, zstd or none",
            "compression",
            p.compression.as_deref().map(q),
            "\"gzip\"",
        );
        key(
            "concurrent part uploads / ranged downloads",
            "jobs",
            p.jobs.map(|j| j.to_string()),
            "4",
        );
        key(
            "multipart part size",
            "part_size",
            p.part_size.as_deref().map(q),
            "\"16MiB\"",
        );
        key(
            "image builder for s3dock build: docker, podman or buildah",
            "builder",
            p.builder.as_deref().map(q),
            "\"docker\"",
        );
        key(
            "who the audit trail names (default: git user, else user@host)",
            "actor",
            p.actor.as_deref().map(q),
            "\"ci@example.com\"",
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_file_parses_back() {
        let mut f = ConfigFile::default();
        f.profiles.insert(
            "prod".into(),
            Profile {
                store: Some("s3://b/p \"q\"".into()),
                jobs: Some(8),
                path_style: Some(true),
                ..Default::default()
            },
        );
        f.profiles.insert("default".into(), Profile::default());
        let text = render(&f);
        let back: ConfigFile = toml::from_str(&text).unwrap();
        assert_eq!(back.profiles, f.profiles);
    }

    #[test]
    fn secrets_are_refused_and_urls_redacted() {
        let bad = "[profiles.x]\naws_secret_access_key = \"k\"\n";
        assert!(toml::from_str::<ConfigFile>(bad).is_err());
        assert_eq!(
            redact_url("https://user:secret@example.com/x"),
            "https://***@example.com/x"
        );
    }
}
