//! The config file: profiles in `~/.config/s3dock/config.toml` (or `S3DOCK_CONFIG`),
//! read and checked, listed, and written by `config init`.

use crate::cli::{Global, InitArgs};
use anyhow::{anyhow, bail, Context, Result};
use s3dock::codec::PushCompression;
use s3dock::model::units::{format_size, parse_size};
use s3dock::release::builder::Builder;
use s3dock::store::Location;
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
    pub sse: Option<String>,
    pub sse_kms_key_id: Option<String>,
    pub storage_class: Option<String>,
    pub accelerate: Option<bool>,
    pub retries: Option<u32>,
    pub cache: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

/// Where the config file is: `--config FILE` or `S3DOCK_CONFIG`, else `$XDG_CONFIG_HOME/s3dock/config.toml`,
/// else `~/.config/s3dock/config.toml`.
/// `explicit` is `--config FILE` (clap reads `S3DOCK_CONFIG` into it).
pub fn config_path(explicit: Option<&std::path::Path>) -> PathBuf {
    if let Some(p) = explicit.filter(|p| !p.as_os_str().is_empty()) {
        return p.to_path_buf();
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
        c.parse::<PushCompression>()?;
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
    if let Some(sse) = p.sse.as_deref().filter(|s| !SSE.contains(s)) {
        bail!("invalid sse {sse:?}: use {}", SSE.join(" or "));
    }
    Ok(())
}

/// The server-side encryption modes `--sse` and a profile's `sse` accept.
pub const SSE: [&str; 2] = ["AES256", "aws:kms"];

fn valid_profile_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub fn list(g: &Global) -> Result<()> {
    let json = g.json;
    let path = config_path(g.config.as_deref());
    // No file is a valid state (every setting has a default), not an error.
    let file = load(&path)?.unwrap_or_else(|| {
        if !g.quiet {
            eprintln!(
                "no config file at {}: create one with s3dock config init",
                path.display()
            );
        }
        ConfigFile::default()
    });
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

pub fn init(g: &Global, a: InitArgs) -> Result<()> {
    let path = config_path(g.config.as_deref());
    let mut file = load(&path)?.unwrap_or_default();
    let (st, tr) = (&a.store, &a.transfer);
    let name = st.profile.clone().unwrap_or_else(|| "default".to_string());
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
        store: st.store.clone(),
        endpoint: st.endpoint.clone(),
        region: st.region.clone(),
        root_dir: st.root_dir.clone(),
        path_style: st.path_style,
        aws_profile: st.aws_profile.clone(),
        compression: a.compression.map(|c| c.name().to_string()),
        jobs: tr.jobs,
        part_size: tr.part_size.map(format_size),
        builder: a.builder.clone(),
        actor: st.actor.clone(),
        sse: st.sse.clone(),
        sse_kms_key_id: st.sse_kms_key_id.clone(),
        storage_class: st.storage_class.clone(),
        accelerate: st.accelerate.then_some(true),
        retries: tr.retries,
        cache: a.cache.as_ref().map(|c| c.to_string_lossy().into_owned()),
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
    if g.json {
        println!("{}", serde_json::json!({"profile": name, "path": path}));
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
    p.compression = prompt(
        "compression (gzip, zstd, none, auto)",
        p.compression.clone(),
    )?;
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
        let s = |v: &Option<String>| v.as_deref().map(q);
        let keys: [(&str, &str, Option<String>, &str); 17] = [
            (
                "store: s3://bucket[/prefix], file:///path or a directory",
                "store",
                s(&p.store),
                "\"s3://my-bucket/images\"",
            ),
            (
                "S3-compatible endpoint (implies path-style addressing)",
                "endpoint",
                s(&p.endpoint),
                "\"http://127.0.0.1:9000\"",
            ),
            ("AWS region", "region", s(&p.region), "\"eu-west-1\""),
            (
                "directory inside the bucket or store (the registry's rootdirectory)",
                "root_dir",
                s(&p.root_dir),
                "\"registry\"",
            ),
            (
                "path-style S3 addressing",
                "path_style",
                p.path_style.map(|b| b.to_string()),
                "true",
            ),
            (
                "AWS shared-config profile for credentials and region",
                "aws_profile",
                s(&p.aws_profile),
                "\"prod\"",
            ),
            (
                "layer compression for pushes: gzip, zstd, none or auto",
                "compression",
                s(&p.compression),
                "\"gzip\"",
            ),
            (
                "concurrent part uploads / ranged downloads",
                "jobs",
                p.jobs.map(|j| j.to_string()),
                "4",
            ),
            (
                "multipart part size",
                "part_size",
                s(&p.part_size),
                "\"16MiB\"",
            ),
            (
                "image builder for s3dock build: docker, podman or buildah",
                "builder",
                s(&p.builder),
                "\"docker\"",
            ),
            (
                "who the audit trail names (default: git user, else user@host)",
                "actor",
                s(&p.actor),
                "\"ci@example.com\"",
            ),
            (
                "server-side encryption of new objects: AES256 or aws:kms",
                "sse",
                s(&p.sse),
                "\"aws:kms\"",
            ),
            (
                "KMS key for sse = \"aws:kms\" (default: the bucket's AWS-managed key)",
                "sse_kms_key_id",
                s(&p.sse_kms_key_id),
                "\"arn:aws:kms:eu-west-1:111122223333:key/...\"",
            ),
            (
                "S3 storage class for new objects",
                "storage_class",
                s(&p.storage_class),
                "\"INTELLIGENT_TIERING\"",
            ),
            (
                "S3 Transfer Acceleration",
                "accelerate",
                p.accelerate.map(|b| b.to_string()),
                "true",
            ),
            (
                "attempts per S3 request",
                "retries",
                p.retries.map(|r| r.to_string()),
                "5",
            ),
            (
                "directory of blobs already on this host, for pulls",
                "cache",
                s(&p.cache),
                "\"/var/cache/s3dock\"",
            ),
        ];
        for (comment, k, v, example) in keys {
            out.push_str(&format!("# {comment}\n"));
            match v {
                Some(v) => out.push_str(&format!("{k} = {v}\n")),
                None => out.push_str(&format!("# {k} = {example}\n")),
            }
        }
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
