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

use crate::cli::{ConfigCommand, CopyArgs, Global, StoreArgs, TransferArgs};
use crate::profiles::{config_path, init, list, load, redact_url, Profile};
use anyhow::{bail, Context, Result};
use clap::parser::ValueSource;
use clap::ArgMatches;
use s3dock::codec::{Compression, PushCompression};
use s3dock::model::units::{format_size, parse_size};
use s3dock::release::audit::local_actor;
use s3dock::release::builder::Builder;
use s3dock::store::{Location, S3Options, StoreConfig};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;

pub const DEFAULT_JOBS: usize = 4;
pub const DEFAULT_PART_SIZE: u64 = 16 << 20;
pub const DEFAULT_RETRIES: u32 = 5;

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
    ("sse", None),
    ("sse_kms_key_id", None),
    ("storage_class", None),
    ("accelerate", None),
    ("retries", None),
    ("cache", Some("S3DOCK_CACHE")),
];

impl ArgSources {
    /// Read from the innermost subcommand's matches: clap copies the global flags
    /// (and their hidden top-level spellings) there.
    pub fn from_matches(m: &ArgMatches) -> Self {
        let mut leaf = m;
        while let Some((_, sub)) = leaf.subcommand() {
            leaf = sub;
        }
        let mut out = BTreeMap::new();
        for id in SETTINGS
            .iter()
            .map(|(id, _)| *id)
            .chain(["profile", "compression", "builder"])
        {
            if let Ok(Some(src)) = leaf.try_get_raw(id).map(|_| leaf.value_source(id)) {
                out.insert(id, src);
            }
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
fn select(g: &Global, st: &StoreArgs, sources: &ArgSources) -> Result<(Selected, Option<String>)> {
    let path = config_path(g.config.as_deref());
    let file = load(&path)?;
    let by_flag = matches!(sources.0.get("profile"), Some(ValueSource::CommandLine));
    let mut aws_profile = None;
    let (name, chosen_by) = match (&st.profile, &file) {
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
    pub compression: Setting<PushCompression>,
    pub builder: Setting<Builder>,
    /// None: the git user, else user@host (see `local_actor`).
    pub actor: Setting<Option<String>>,
    pub sse: Setting<Option<String>>,
    pub sse_kms_key_id: Setting<Option<String>>,
    pub storage_class: Setting<Option<String>>,
    pub accelerate: Setting<bool>,
    pub retries: Setting<u32>,
    /// `pull --cache` when the command line and environment leave it unset.
    pub cache: Setting<Option<String>>,
    /// Flag-only settings.
    pub no_sign_request: bool,
    pub payload_signing: Option<bool>,
    pub quiet: bool,
    pub json: bool,
}

impl Settings {
    /// `cmd_compression`/`cmd_builder` are the subcommand's `--compression`/`--builder`
    /// (flag or environment, as clap read them), for the commands that have them.
    pub fn resolve(
        g: &Global,
        st: &StoreArgs,
        tr: &TransferArgs,
        sources: &ArgSources,
        cmd_compression: Option<PushCompression>,
        cmd_builder: Option<Builder>,
    ) -> Result<Settings> {
        let (config, aws_from_profile_flag) = select(g, st, sources)?;
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
                st.store.clone(),
                p.store.clone(),
            ),
            default_store(),
        );
        let endpoint = pick(
            "endpoint",
            Some("S3DOCK_ENDPOINT"),
            st.endpoint.clone(),
            p.endpoint.clone(),
        );
        let region = pick(
            "region",
            Some("S3DOCK_REGION"),
            st.region.clone(),
            p.region.clone(),
        );
        let root_dir = pick(
            "root_dir",
            Some("S3DOCK_ROOT_DIR"),
            st.root_dir.clone(),
            p.root_dir.clone(),
        );
        let path_style = pick(
            "path_style",
            None,
            st.path_style.map(|b| b.to_string()),
            p.path_style.map(|b| b.to_string()),
        );
        let path_style = Setting {
            value: path_style
                .value
                .map_or(endpoint.value.is_some(), |v| v == "true"),
            source: path_style.source,
        };
        let cli_aws = match (&st.aws_profile, aws_from_profile_flag) {
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
            tr.jobs.map(|j| j.to_string()),
            p.jobs.map(|j| j.to_string()),
        );
        let jobs = Setting {
            value: jobs.value.map_or(Ok(DEFAULT_JOBS), |j| j.parse())?,
            source: jobs.source,
        };
        let part_size = pick(
            "part_size",
            None,
            tr.part_size.map(|n| n.to_string()),
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
            PushCompression::Fixed(Compression::Gzip),
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
            st.actor.clone(),
            p.actor.clone(),
        );
        let sse = pick("sse", None, st.sse.clone(), p.sse.clone());
        let sse_kms_key_id = pick(
            "sse_kms_key_id",
            None,
            st.sse_kms_key_id.clone(),
            p.sse_kms_key_id.clone(),
        );
        let storage_class = pick(
            "storage_class",
            None,
            st.storage_class.clone(),
            p.storage_class.clone(),
        );
        let accelerate = pick(
            "accelerate",
            None,
            st.accelerate.then(|| "true".to_string()),
            p.accelerate.map(|b| b.to_string()),
        );
        let accelerate = Setting {
            value: accelerate.value.is_some_and(|v| v == "true"),
            source: accelerate.source,
        };
        let retries = pick(
            "retries",
            None,
            tr.retries.map(|r| r.to_string()),
            p.retries.map(|r| r.to_string()),
        );
        let retries = Setting {
            value: retries.value.map_or(Ok(DEFAULT_RETRIES), |r| r.parse())?,
            source: retries.source,
        };
        let cache = pick("cache", Some("S3DOCK_CACHE"), None, p.cache.clone());
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
            sse,
            sse_kms_key_id,
            storage_class,
            accelerate,
            retries,
            cache,
            no_sign_request: st.no_sign_request,
            payload_signing: st.payload_signing,
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
                accelerate: self.accelerate.value,
                sse: self.sse.value.clone(),
                sse_kms_key_id: self.sse_kms_key_id.value.clone(),
                storage_class: self.storage_class.value.clone(),
                max_attempts: self.retries.value,
                no_sign_request: self.no_sign_request,
                payload_signing: self.payload_signing,
            },
            jobs: self.jobs.value,
            part_size: self.part_size.value,
        })
    }

    /// The target of `copy --to`. A store URL or path takes the source's connection
    /// settings (endpoint, region, AWS profile: one server, two buckets, as `aws s3 cp`);
    /// the name of a profile in the config file takes that profile's store and settings
    /// (write `./NAME` for a directory of that name). `--to-*` flags override either.
    /// `--sse`, `--sse-kms-key-id` and `--storage-class` apply to what copy writes, which
    /// is only ever the target; a `--to` profile's own take their place unless given as flags.
    pub fn copy_target(&self, a: &CopyArgs) -> Result<StoreConfig> {
        let profile = load(&self.config.path)?
            .and_then(|f| f.profiles.get(&a.to).cloned())
            .filter(|_| !a.to.contains(['/', ':']));
        let mut cfg = match &profile {
            Some(p) => {
                let store = p.store.clone().with_context(|| {
                    format!(
                        "profile {:?} names no store: set one, or give --to a store URL",
                        a.to
                    )
                })?;
                let flag = |s: &Setting<Option<String>>, own: &Option<String>| {
                    if s.source.starts_with("flag") {
                        s.value.clone()
                    } else {
                        own.clone()
                    }
                };
                let mut c = self.store_config(Some(store))?;
                c.root_dir = p.root_dir.clone();
                c.s3.endpoint = p.endpoint.clone();
                c.s3.region = p.region.clone();
                c.s3.profile = p.aws_profile.clone();
                c.s3.path_style = p.path_style.unwrap_or(p.endpoint.is_some());
                c.s3.accelerate = p.accelerate.unwrap_or(false);
                c.s3.sse = flag(&self.sse, &p.sse);
                c.s3.sse_kms_key_id = flag(&self.sse_kms_key_id, &p.sse_kms_key_id);
                c.s3.storage_class = flag(&self.storage_class, &p.storage_class);
                c
            }
            None => {
                let mut c = self.store_config(Some(a.to.clone()))?;
                c.root_dir = None;
                c
            }
        };
        if let Some(ep) = &a.to_endpoint {
            url::Url::parse(ep).with_context(|| format!("invalid --to-endpoint {ep:?}"))?;
            cfg.s3.endpoint = Some(ep.clone());
            cfg.s3.path_style = true;
        }
        if a.to_region.is_some() {
            cfg.s3.region = a.to_region.clone();
        }
        if a.to_root_dir.is_some() {
            cfg.root_dir = a.to_root_dir.clone();
        }
        if a.to_aws_profile.is_some() {
            cfg.s3.profile = a.to_aws_profile.clone();
        }
        // The target is written: never anonymously.
        cfg.s3.no_sign_request = false;
        Ok(cfg)
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
        ConfigCommand::Show(a) => show(&Settings::resolve(
            g,
            &a.store,
            &a.transfer,
            sources,
            None,
            None,
        )?),
        ConfigCommand::List => list(g),
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
        ("sse", opt(&s.sse.value), s.sse.source.clone()),
        (
            "sse_kms_key_id",
            opt(&s.sse_kms_key_id.value),
            s.sse_kms_key_id.source.clone(),
        ),
        (
            "storage_class",
            opt(&s.storage_class.value),
            s.storage_class.source.clone(),
        ),
        (
            "accelerate",
            s.accelerate.value.to_string(),
            s.accelerate.source.clone(),
        ),
        (
            "retries",
            s.retries.value.to_string(),
            s.retries.source.clone(),
        ),
        ("cache", opt(&s.cache.value), s.cache.source.clone()),
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
        println!("{k:<14} {v:<40} {s}");
    }
    Ok(())
}
