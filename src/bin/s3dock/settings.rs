//! Profiles in `~/.config/s3dock/config.toml` (`$XDG_CONFIG_HOME/s3dock/config.toml`,
//! or the file `S3DOCK_CONFIG` names). A profile fills in whatever the command line
//! and the environment left unset: precedence is flag > environment > profile > default.
//!
//! `--profile NAME` / `S3DOCK_PROFILE` select an s3dock profile; the profile named
//! `default` applies when none is selected. For compatibility, `--profile NAME` with
//! no config file at all is taken as the AWS shared-config profile (`--aws-profile`).
//!
//! [`Settings::resolve`] is the one place that applies that precedence; every command
//! and `config show` read its result.

use crate::cli::{ConfigCommand, Global, InitArgs};
use anyhow::{anyhow, bail, Context, Result};
use clap::parser::ValueSource;
use clap::ArgMatches;
use s3dock::codec::Compression;
use s3dock::model::units::{format_size, parse_size};
use s3dock::release::audit::local_actor;
use s3dock::release::builder::Builder;
use s3dock::store::{Location, S3Options, StoreConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

pub const DEFAULT_JOBS: usize = 4;
pub const DEFAULT_PART_SIZE: u64 = 16 << 20;

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
        b.parse::<Builder>()?;
    }
    if let Some(s) = &p.part_size {
        parse_size(s)?;
    }
    if let Some(s) = &p.store {
        Location::parse(s).map_err(|_| {
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

/// Picks the profile (if any): `--profile`/`S3DOCK_PROFILE`, else the profile named
/// `default`. With no config file, `--profile NAME` names the AWS profile instead
/// (returned as the second value).
fn select(g: &Global, sources: &ArgSources) -> Result<(Selected, Option<String>)> {
    let path = config_path();
    let file = load(&path)?;
    let by_flag = matches!(sources.0.get("profile"), Some(ValueSource::CommandLine));
    let mut aws_profile = None;
    let (name, chosen_by) = match (&g.profile, &file) {
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
            aws_profile = Some(n.clone());
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
    let sel = Selected {
        path,
        file_exists: file.is_some(),
        name,
        chosen_by,
        profile,
    };
    Ok((sel, aws_profile))
}

/// A resolved value and where it came from (`flag --jobs`, `env S3DOCK_JOBS`,
/// `profile ci`, `default`).
#[derive(Debug, Clone)]
pub struct Setting<T> {
    pub value: T,
    pub source: String,
}

/// Every setting, resolved once: flag > environment > profile > default.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: Selected,
    pub store: Setting<String>,
    pub endpoint: Setting<Option<String>>,
    pub region: Setting<Option<String>>,
    pub root_dir: Setting<Option<String>>,
    pub path_style: Setting<bool>,
    pub aws_profile: Setting<Option<String>>,
    pub jobs: Setting<usize>,
    pub part_size: Setting<u64>,
    pub compression: Setting<Compression>,
    pub builder: Setting<Builder>,
    /// None: the git user, else user@host (see `local_actor`).
    pub actor: Setting<Option<String>>,
    /// Flag-only settings.
    pub sse: Option<String>,
    pub sse_kms_key_id: Option<String>,
    pub storage_class: Option<String>,
    pub accelerate: bool,
    pub retries: u32,
    pub quiet: bool,
    pub json: bool,
}

impl Settings {
    /// `cmd_compression`/`cmd_builder` are the subcommand's `--compression`/`--builder`
    /// (flag or environment, as clap read them), for the commands that have them.
    pub fn resolve(
        g: &Global,
        sources: &ArgSources,
        cmd_compression: Option<Compression>,
        cmd_builder: Option<Builder>,
    ) -> Result<Settings> {
        let (config, aws_from_profile_flag) = select(g, sources)?;
        let p = config.profile.clone();
        let profile_src = format!("profile {}", config.name.as_deref().unwrap_or(""));
        // The value from the command line or environment, else the profile's, else none.
        let pick = |id: &str, env: Option<&str>, cli: Option<String>, prof: Option<String>| {
            match (cli, prof) {
                (Some(v), _) => Setting {
                    value: Some(v),
                    // Clap names the flag or variable it read; else the variable was
                    // read here, for a command without that flag.
                    source: sources
                        .describe(id, env)
                        .or_else(|| env.map(|e| format!("env {e}")))
                        .unwrap_or_else(|| "default".into()),
                },
                (None, Some(v)) => Setting {
                    value: Some(v),
                    source: profile_src.clone(),
                },
                (None, None) => Setting {
                    value: None,
                    source: "default".into(),
                },
            }
        };
        let or_default = |s: Setting<Option<String>>, default: String| Setting {
            value: s.value.unwrap_or(default),
            source: s.source,
        };
        let store = or_default(
            pick(
                "store",
                Some("S3DOCK_STORE"),
                g.store.clone(),
                p.store.clone(),
            ),
            default_store(),
        );
        let endpoint = pick(
            "endpoint",
            Some("S3DOCK_ENDPOINT"),
            g.endpoint.clone(),
            p.endpoint.clone(),
        );
        let region = pick(
            "region",
            Some("S3DOCK_REGION"),
            g.region.clone(),
            p.region.clone(),
        );
        let root_dir = pick(
            "root_dir",
            Some("S3DOCK_ROOT_DIR"),
            g.root_dir.clone(),
            p.root_dir.clone(),
        );
        let path_style = pick(
            "path_style",
            None,
            g.path_style.map(|b| b.to_string()),
            p.path_style.map(|b| b.to_string()),
        );
        let path_style = Setting {
            value: path_style
                .value
                .map_or(endpoint.value.is_some(), |v| v == "true"),
            source: path_style.source,
        };
        let cli_aws = match (&g.aws_profile, aws_from_profile_flag) {
            (Some(a), _)
                if matches!(sources.0.get("aws_profile"), Some(ValueSource::CommandLine)) =>
            {
                Some((a.clone(), None))
            }
            (_, Some(n)) => Some((n, Some("flag --profile (no config file)".to_string()))),
            (a, None) => a.clone().map(|a| (a, None)),
        };
        let mut aws_profile = pick(
            "aws_profile",
            Some("AWS_PROFILE"),
            cli_aws.as_ref().map(|(a, _)| a.clone()),
            p.aws_profile.clone(),
        );
        if let Some((_, Some(src))) = cli_aws {
            aws_profile.source = src;
        }
        let jobs = pick(
            "jobs",
            Some("S3DOCK_JOBS"),
            g.jobs.map(|j| j.to_string()),
            p.jobs.map(|j| j.to_string()),
        );
        let jobs = Setting {
            value: jobs.value.map_or(Ok(DEFAULT_JOBS), |j| j.parse())?,
            source: jobs.source,
        };
        let part_size = pick(
            "part_size",
            None,
            g.part_size.map(|n| n.to_string()),
            p.part_size.clone(),
        );
        let part_size = Setting {
            value: match &part_size.value {
                Some(v) => parse_size(v)?,
                None => DEFAULT_PART_SIZE,
            },
            source: part_size.source,
        };
        let compression = typed(
            pick(
                "compression",
                Some("S3DOCK_COMPRESSION"),
                cmd_compression
                    .map(|c| c.name().to_string())
                    .or_else(|| env("S3DOCK_COMPRESSION")),
                p.compression.clone(),
            ),
            "compression",
            Compression::Gzip,
        )?;
        let builder = typed(
            pick(
                "builder",
                Some("S3DOCK_BUILDER"),
                cmd_builder
                    .map(|b| b.bin().to_string())
                    .or_else(|| env("S3DOCK_BUILDER")),
                p.builder.clone(),
            ),
            "builder",
            Builder::Docker,
        )?;
        let actor = pick(
            "actor",
            Some("S3DOCK_ACTOR"),
            g.actor.clone(),
            p.actor.clone(),
        );
        Ok(Settings {
            config,
            store,
            endpoint,
            region,
            root_dir,
            path_style,
            aws_profile,
            jobs,
            part_size,
            compression,
            builder,
            actor,
            sse: g.sse.clone(),
            sse_kms_key_id: g.sse_kms_key_id.clone(),
            storage_class: g.storage_class.clone(),
            accelerate: g.accelerate,
            retries: g.retries,
            quiet: g.quiet,
            json: g.json,
        })
    }

    /// The store to open: `store` (from an `s3://bucket/name` reference) or the setting.
    pub fn store_config(&self, store: Option<String>) -> Result<StoreConfig> {
        let url = store.unwrap_or_else(|| self.store.value.clone());
        let location = Location::parse(&url)?;
        if let Some(ep) = &self.endpoint.value {
            let u = url::Url::parse(ep).with_context(|| format!("invalid --endpoint {ep:?}"))?;
            if u.scheme() == "http" {
                let loopback = match u.host() {
                    Some(url::Host::Ipv4(a)) => a.is_loopback(),
                    Some(url::Host::Ipv6(a)) => a.is_loopback(),
                    Some(url::Host::Domain(d)) => d == "localhost",
                    None => false,
                };
                if !loopback {
                    tracing::warn!("--endpoint {ep} uses plain http: traffic, including signed requests, is unencrypted");
                }
            }
        }
        Ok(StoreConfig {
            location,
            root_dir: self.root_dir.value.clone(),
            s3: S3Options {
                endpoint: self.endpoint.value.clone(),
                region: self.region.value.clone(),
                profile: self.aws_profile.value.clone(),
                path_style: self.path_style.value,
                accelerate: self.accelerate,
                sse: self.sse.clone(),
                sse_kms_key_id: self.sse_kms_key_id.clone(),
                storage_class: self.storage_class.clone(),
                max_attempts: self.retries,
            },
            jobs: self.jobs.value,
            part_size: self.part_size.value,
        })
    }

    pub fn show_progress(&self) -> bool {
        !self.quiet && std::io::stderr().is_terminal()
    }
}

fn env(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|s| !s.is_empty())
}

/// A string setting parsed into its type; the default when unset.
fn typed<T: std::str::FromStr<Err = anyhow::Error>>(
    s: Setting<Option<String>>,
    what: &str,
    default: T,
) -> Result<Setting<T>> {
    let value = match &s.value {
        Some(v) => v
            .parse()
            .with_context(|| format!("invalid {what} (from {})", s.source))?,
        None => default,
    };
    Ok(Setting {
        value,
        source: s.source,
    })
}

pub fn default_store() -> String {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("s3dock/store").to_string_lossy().into_owned()
}

pub fn run(cmd: ConfigCommand, g: &Global, sources: &ArgSources) -> Result<()> {
    match cmd {
        ConfigCommand::Init(a) => init(g, a),
        ConfigCommand::Show => show(&Settings::resolve(g, sources, None, None)?),
        ConfigCommand::List => list(g.json),
    }
}

fn show(s: &Settings) -> Result<()> {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let actor = match &s.actor.value {
        Some(a) => (a.clone(), s.actor.source.clone()),
        None => {
            let (a, how) = local_actor();
            (a, how.to_string())
        }
    };
    let rows: Vec<(&str, String, String)> = vec![
        ("store", redact_url(&s.store.value), s.store.source.clone()),
        (
            "endpoint",
            s.endpoint
                .value
                .as_deref()
                .map(redact_url)
                .unwrap_or_default(),
            s.endpoint.source.clone(),
        ),
        ("region", opt(&s.region.value), s.region.source.clone()),
        (
            "root_dir",
            opt(&s.root_dir.value),
            s.root_dir.source.clone(),
        ),
        (
            "path_style",
            s.path_style.value.to_string(),
            s.path_style.source.clone(),
        ),
        (
            "aws_profile",
            opt(&s.aws_profile.value),
            s.aws_profile.source.clone(),
        ),
        ("jobs", s.jobs.value.to_string(), s.jobs.source.clone()),
        (
            "part_size",
            format_size(s.part_size.value),
            s.part_size.source.clone(),
        ),
        (
            "compression",
            s.compression.value.name().to_string(),
            s.compression.source.clone(),
        ),
        (
            "builder",
            s.builder.value.bin().to_string(),
            s.builder.source.clone(),
        ),
        ("actor", actor.0, actor.1),
        (
            "credentials",
            "AWS credential chain (not shown)".to_string(),
            "aws".to_string(),
        ),
    ];
    let sel = &s.config;
    if s.json {
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

fn init(g: &Global, a: InitArgs) -> Result<()> {
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
        part_size: g.part_size.map(format_size),
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
