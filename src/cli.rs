//! Command-line interface: argument parsing, and turning results into output.
//! stdout carries data only (archives, `--json`); everything else goes to stderr.

use crate::archive::{Format, Writeback};
use crate::codec::Compression;
use crate::config::{ArgSources, ConfigCommand};
use crate::model::image::host_platform;
use crate::model::reference::Reference;
use crate::registry::Registry;
use crate::release;
use crate::store::{Location, S3Options, StoreConfig};
use crate::transfer::pull::{pull, PullOptions};
use crate::transfer::push::{push, PushOptions};
use crate::transfer::stats::{human_bytes, Stats};
use anyhow::{bail, Context, Result};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(
    name = "s3dock",
    version,
    about = "Push and pull container images between docker-save archives and S3, in the registry v2 layout"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Store: s3://bucket[/prefix], file:///path or a directory [default: ~/.local/share/s3dock/store]
    #[arg(long, global = true, env = "S3DOCK_STORE")]
    pub store: Option<String>,
    /// S3 endpoint URL for S3-compatible servers (implies path-style addressing)
    #[arg(long, global = true, env = "S3DOCK_ENDPOINT")]
    pub endpoint: Option<String>,
    #[arg(long, global = true, env = "S3DOCK_REGION")]
    pub region: Option<String>,
    /// Directory inside the bucket or store directory (the registry's `rootdirectory`)
    #[arg(long, global = true, env = "S3DOCK_ROOT_DIR")]
    pub root_dir: Option<String>,
    /// Path-style S3 addressing [default: on with --endpoint, else off]
    #[arg(long, global = true, num_args = 0..=1, default_missing_value = "true")]
    pub path_style: Option<bool>,
    /// s3dock profile from the config file (~/.config/s3dock/config.toml); with no
    /// config file, taken as the AWS profile
    #[arg(long, global = true, env = "S3DOCK_PROFILE")]
    pub profile: Option<String>,
    /// AWS shared-config profile for credentials and region
    #[arg(long, global = true, env = "AWS_PROFILE")]
    pub aws_profile: Option<String>,
    /// Server-side encryption: AES256 or aws:kms
    #[arg(long, global = true, value_parser = ["AES256", "aws:kms"])]
    pub sse: Option<String>,
    #[arg(long, global = true)]
    pub sse_kms_key_id: Option<String>,
    /// S3 storage class for new objects (STANDARD, INTELLIGENT_TIERING, ...)
    #[arg(long, global = true)]
    pub storage_class: Option<String>,
    /// Use S3 Transfer Acceleration
    #[arg(long, global = true)]
    pub accelerate: bool,
    /// Concurrent part uploads / ranged downloads [default: 4]
    #[arg(long, short = 'j', global = true, env = "S3DOCK_JOBS")]
    pub jobs: Option<usize>,
    /// Multipart part size (and download chunk size), e.g. 16MiB; grows for huge blobs [default: 16MiB]
    #[arg(long, global = true, value_parser = parse_size)]
    pub part_size: Option<u64>,
    /// Attempts per S3 request, with exponential backoff and jitter
    #[arg(long, global = true, default_value_t = 5)]
    pub retries: u32,
    /// No progress or summary on stderr
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Print the result as JSON on stdout
    #[arg(long, global = true)]
    pub json: bool,
    /// More logging on stderr (-v, -vv)
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Who the audit trail names [default: git user, else user@host]
    #[arg(long, global = true, env = "S3DOCK_ACTOR")]
    pub actor: Option<String>,
    /// Push compression from the selected profile (set by `config::apply`).
    #[arg(skip)]
    pub profile_compression: Option<Compression>,
    /// Builder from the selected profile (set by `config::apply`).
    #[arg(skip)]
    pub profile_builder: Option<String>,
}

pub const DEFAULT_JOBS: usize = 4;
pub const DEFAULT_PART_SIZE: u64 = 16 << 20;

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Push the images of a docker save / OCI archive (stdin or -i FILE) to the store
    Push(PushArgs),
    /// Write an image from the store as an archive for docker load / podman load
    Pull(PullArgs),
    /// List the tags of a repository
    Tags { name: String },
    /// Remove temporary objects and incomplete multipart uploads left by interrupted pushes
    Cleanup {
        /// Only what is older than this, so running pushes are left alone (e.g. 30m, 2h, 0s)
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        older_than: std::time::Duration,
        /// Only report what would be removed
        #[arg(long)]
        dry_run: bool,
    },
    /// Build an image from a clean git tree, tagged APP:{YYYYMMDD-HHMM}-{commit} (--push to push it)
    Build(release::BuildArgs),
    /// Print the git-stable tag of the current commit, for other build tools
    Stamp(release::StampArgs),
    /// Give an image a semantic version: s3dock tag APP:TAG v1.2.0
    Tag(release::TagArgs),
    /// Point an environment at an image tag or version: s3dock promote APP:TAG ENV
    Promote(release::PromoteArgs),
    /// Print the image an environment runs: APP:TAG
    Current(release::CurrentArgs),
    /// List apps, or one app's images, versions and environments
    List(release::ListArgs),
    /// Show an app's audit trail, newest first
    History(release::HistoryArgs),
    /// Manage configuration profiles
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Args, Debug)]
pub struct PushArgs {
    /// Target reference (name[:tag]), or s3://bucket/name[:tag]; default: the archive's own tags
    pub reference: Option<String>,
    /// Archive to read; - or absent means stdin
    #[arg(long, short)]
    pub input: Option<PathBuf>,
    /// Layer compression: gzip, zstd or none [default: gzip, or the profile's]
    #[arg(long, env = "S3DOCK_COMPRESSION")]
    pub compression: Option<Compression>,
    /// Compression level [default: gzip 1, zstd 3]
    #[arg(long)]
    pub level: Option<i32>,
    /// Platform to take from a multi-platform archive
    #[arg(long)]
    pub platform: Option<String>,
    /// Do not use the store's diff_id index to skip layers already stored
    #[arg(long)]
    pub no_index: bool,
    /// Upload every part again instead of continuing the multipart uploads an
    /// interrupted push left open
    #[arg(long)]
    pub no_resume: bool,
    /// Refuse to replace a tag that already exists
    #[arg(long)]
    pub no_clobber: bool,
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// name[:tag] or name@sha256:<digest>, or s3://bucket/name[:tag]; or APP with NAME
    pub reference: String,
    /// An environment, version or tag of the app: s3dock pull myapp production
    pub name: Option<String>,
    /// Write to FILE (atomically) instead of stdout
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// docker: OCI layout + manifest.json (docker/podman load); oci: OCI layout only
    #[arg(long, default_value = "docker")]
    pub format: Format,
    /// RepoTags for the archive instead of the pulled reference
    #[arg(long)]
    pub tag: Option<String>,
    /// os/arch[/variant] to pick from a multi-platform image [default: this host's]
    #[arg(long)]
    pub platform: Option<String>,
    /// Directory of blobs already on this host (content-addressed), filled as blobs are pulled
    #[arg(long, env = "S3DOCK_CACHE")]
    pub cache: Option<PathBuf>,
    /// Write layers uncompressed (for Docker < 23 with zstd layers); spools each layer to a temp file
    #[arg(long)]
    pub decompress: bool,
}

pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: use e.g. 30m, 2h, 1d"))?;
    let unit_secs: u64 = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("invalid duration unit in {s:?}: use s, m, h or d")),
    };
    // Unchecked, `--older-than 213503982334602d` wrapped around to 17 hours.
    let secs = n
        .checked_mul(unit_secs)
        .ok_or_else(|| format!("duration {s:?} is too large"))?;
    Ok(std::time::Duration::from_secs(secs))
}

pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: use e.g. 16MiB"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "invalid size unit in {s:?}: use B, KiB, MiB or GiB"
            ))
        }
    };
    let v = n
        .checked_mul(mult)
        .ok_or_else(|| format!("part size {s:?} is too large"))?;
    if v < 5 << 20 {
        return Err(format!("part size {s} is below S3's 5 MiB minimum"));
    }
    Ok(v)
}

pub fn default_store() -> String {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("s3dock/store").to_string_lossy().into_owned()
}

/// Splits `s3://bucket/name:tag` into a store and a reference.
fn split_store_ref(g: &Global, r: &str) -> Result<(Option<String>, String)> {
    if let Some(rest) = r.strip_prefix("s3://") {
        let (bucket, name) = rest
            .split_once('/')
            .context("s3:// references need a name: s3://bucket/name:tag")?;
        if g.store.is_some() {
            bail!("the reference {r:?} names a bucket; drop --store (or S3DOCK_STORE) or the s3:// prefix");
        }
        return Ok((Some(format!("s3://{bucket}")), name.to_string()));
    }
    Ok((None, r.to_string()))
}

impl Global {
    pub fn store_config(&self, store: Option<String>) -> Result<StoreConfig> {
        let url = store
            .or_else(|| self.store.clone())
            .unwrap_or_else(default_store);
        let location = Location::parse(&url)?;
        if let Some(ep) = &self.endpoint {
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
            root_dir: self.root_dir.clone(),
            s3: S3Options {
                endpoint: self.endpoint.clone(),
                region: self.region.clone(),
                profile: self.aws_profile.clone(),
                path_style: self.path_style.unwrap_or(self.endpoint.is_some()),
                accelerate: self.accelerate,
                sse: self.sse.clone(),
                sse_kms_key_id: self.sse_kms_key_id.clone(),
                storage_class: self.storage_class.clone(),
                max_attempts: self.retries,
            },
            jobs: self.jobs.unwrap_or(DEFAULT_JOBS),
            part_size: self.part_size.unwrap_or(DEFAULT_PART_SIZE),
        })
    }

    pub fn show_progress(&self) -> bool {
        !self.quiet && std::io::stderr().is_terminal()
    }
}

pub fn main() -> std::process::ExitCode {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let sources = ArgSources::from_matches(&matches);
    let filter = match (cli.global.quiet, cli.global.verbose) {
        (true, _) => "error",
        (_, 0) => "warn",
        (_, 1) => "info,aws=warn",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("S3DOCK_LOG")
                .unwrap_or_else(|_| filter.into()),
        )
        .with_target(false)
        .without_time()
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = rt.block_on(async {
        tokio::select! {
            r = run(cli, sources) => match r {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("s3dock: error: {}", one_line(&e));
                    1
                }
            },
            (name, code) = interrupted() => {
                // The work future is dropped here; then clean up what it had in flight.
                let n = crate::registry::inflight::abort_all().await;
                eprintln!("s3dock: error: interrupted by {name}: aborted {n} upload(s) in flight; no tag was changed by the unfinished work");
                code
            }
        }
    });
    // Blocking threads (archive readers) may be parked on a pipe; don't wait for them.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    std::process::ExitCode::from(code)
}

/// Resolves on SIGINT or SIGTERM with the signal's name and the shell's exit code for it.
async fn interrupted() -> (&'static str, u8) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = int.recv() => ("SIGINT", 130),
        _ = term.recv() => ("SIGTERM", 143),
    }
}

/// The error and its causes on one line.
fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in e.chain() {
        let s = c.to_string().replace('\n', " ");
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

async fn run(cli: Cli, sources: ArgSources) -> Result<()> {
    let mut g = cli.global;
    if let Command::Config { command } = cli.command {
        return crate::config::run(command, g, &sources);
    }
    crate::config::apply(&mut g, &sources)?;
    match cli.command {
        Command::Push(a) => run_push(&g, a).await,
        Command::Pull(a) => run_pull(&g, a).await,
        Command::Cleanup {
            older_than,
            dry_run,
        } => {
            let store = Registry::open(&g.store_config(None)?).await?;
            let r = crate::registry::cleanup::cleanup(&store, older_than, dry_run).await?;
            if g.json {
                println!("{}", serde_json::to_string(&r)?);
            }
            if !g.quiet {
                let verb = if dry_run { "would remove" } else { "removed" };
                eprintln!(
                    "{verb} {} temporary object(s) ({}) and {} incomplete upload(s)",
                    r.temp_objects,
                    human_bytes(r.temp_bytes),
                    r.incomplete_uploads
                );
            }
            Ok(())
        }
        Command::Tags { name } => {
            let (store_url, name) = split_store_ref(&g, &name)?;
            let store = Registry::open(&g.store_config(store_url)?).await?;
            let r = Reference::parse(&name)?;
            let tags = store.tags(&r.name).await?;
            if g.json {
                println!("{}", serde_json::json!({"name": r.name, "tags": tags}));
            } else {
                for t in tags {
                    println!("{t}");
                }
            }
            Ok(())
        }
        Command::Build(a) => release::build(&g, a).await,
        Command::Stamp(a) => release::stamp(a),
        Command::Tag(a) => release::tag(&release::Ctx::open(&g).await?, a).await,
        Command::Promote(a) => release::promote(&release::Ctx::open(&g).await?, a).await,
        Command::Current(a) => release::current(&release::Ctx::open_read(&g).await?, a).await,
        Command::List(a) => release::list(&release::Ctx::open_read(&g).await?, a).await,
        Command::History(a) => release::history(&release::Ctx::open_read(&g).await?, a).await,
        Command::Config { .. } => unreachable!("handled above"),
    }
}

async fn run_push(g: &Global, a: PushArgs) -> Result<()> {
    let (store_url, reference) = match &a.reference {
        Some(r) => {
            let (s, r) = split_store_ref(g, r)?;
            (s, Some(Reference::parse(&r)?))
        }
        None => (None, None),
    };
    let (input, size): (Box<dyn Read + Send>, Option<u64>) = match a.input.as_deref() {
        None => stdin_input()?,
        Some(p) if p.as_os_str() == "-" => stdin_input()?,
        Some(p) => {
            let f =
                std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
            let size = f.metadata().ok().map(|m| m.len());
            (Box::new(f), size)
        }
    };
    let store = Registry::open(&g.store_config(store_url)?).await?;
    if let Some(r) = &reference {
        release::check_push_target(&store, r, a.no_clobber).await?;
    } else if a.no_clobber {
        bail!("--no-clobber needs the target reference: s3dock push --no-clobber myapp:TAG");
    }
    let stats = Arc::new(Stats::default());
    let opts = PushOptions {
        compression: a
            .compression
            .or(g.profile_compression)
            .unwrap_or(Compression::Gzip),
        level: a.level,
        platform: a.platform.unwrap_or_else(host_platform),
        use_index: !a.no_index,
        resume: !a.no_resume,
    };
    let start = Instant::now();
    let pushed = push(
        &store,
        input,
        size,
        reference,
        opts,
        stats.clone(),
        g.show_progress(),
    )
    .await?;
    let ctx = release::Ctx::for_store(g, store.clone()).await;
    let recorded = release::record_push(&ctx, &pushed, None).await?;
    let secs = start.elapsed().as_secs_f64();
    let read = stats.bytes_read.load(Ordering::Relaxed);
    let summary = serde_json::json!({
        "images": pushed,
        "recorded": recorded,
        "layers": stats.layers.load(Ordering::Relaxed),
        "bytes_read": read,
        "bytes_uploaded": stats.bytes_uploaded.load(Ordering::Relaxed),
        "bytes_resumed": stats.bytes_resumed.load(Ordering::Relaxed),
        "blobs_skipped": stats.blobs_skipped.load(Ordering::Relaxed),
        "seconds": secs,
        "store": store.display,
    });
    if g.json {
        println!("{summary}");
    }
    if !g.quiet {
        for p in &pushed {
            eprintln!("pushed {} {}", p.reference, p.manifest_digest);
        }
        release::report_push(&ctx, &recorded);
        let resumed = stats.bytes_resumed.load(Ordering::Relaxed);
        eprintln!(
            "{} layers, read {}, uploaded {}{}, {} blobs skipped, {:.1}s, {}/s",
            summary["layers"],
            human_bytes(read),
            human_bytes(stats.bytes_uploaded.load(Ordering::Relaxed)),
            if resumed > 0 {
                format!(" (and {} resumed)", human_bytes(resumed))
            } else {
                String::new()
            },
            summary["blobs_skipped"],
            secs,
            human_bytes((read as f64 / secs.max(1e-3)) as u64)
        );
    }
    Ok(())
}

fn stdin_input() -> Result<(Box<dyn Read + Send>, Option<u64>)> {
    if std::io::stdin().is_terminal() {
        bail!(
            "no archive on stdin: pipe one in (docker save IMAGE | s3dock push ...) or use -i FILE"
        );
    }
    // A pipe hands over 64 KiB per read by default; a 1 MiB pipe buffer cuts the
    // syscalls and context switches per GiB sixteenfold. Best effort: not a pipe is fine.
    unsafe {
        libc::fcntl(0, libc::F_SETPIPE_SZ, 1 << 20);
    }
    Ok((Box::new(std::io::stdin()), None))
}

async fn run_pull(g: &Global, a: PullArgs) -> Result<()> {
    let (store_url, name) = split_store_ref(g, &a.reference)?;
    let r = Reference::parse(&name)?;
    if a.output.is_none() && std::io::stdout().is_terminal() {
        bail!("refusing to write an image archive to a terminal: pipe it (| docker load) or use -o FILE");
    }
    let store = Registry::open(&g.store_config(store_url)?).await?;
    // `pull APP NAME`: an environment, version or tag of the app.
    let r = match &a.name {
        Some(n) => {
            if r.tag.is_some() || r.digest.is_some() {
                bail!(
                    "with a second argument, the first names the app only: s3dock pull {} {n}",
                    r.name
                );
            }
            release::resolve_for_pull(&store, &r.name, n).await?
        }
        None => r,
    };
    let opts = PullOptions {
        format: a.format,
        tag: a.tag.as_deref().map(Reference::parse).transpose()?,
        platform: a.platform.unwrap_or_else(host_platform),
        cache: a.cache,
        decompress: a.decompress,
    };
    let stats = Arc::new(Stats::default());
    let start = Instant::now();
    let report = match &a.output {
        // A device or FIFO (`-o /dev/null`, a named pipe) is written in place: renaming
        // a temp file over it would replace it.
        Some(path) if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) => {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            let out = std::io::BufWriter::with_capacity(1 << 20, f);
            pull(&store, &r, out, &opts, stats.clone(), g.show_progress())
                .await?
                .0
        }
        Some(path) => {
            // Written beside the target and renamed, so FILE is complete or absent.
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let tmp = tempfile::Builder::new()
                .prefix(".s3dock-pull-")
                .tempfile_in(dir)
                .with_context(|| format!("cannot write in {}", dir.display()))?;
            let out = std::io::BufWriter::with_capacity(1 << 20, Writeback::new(tmp));
            let (report, out) =
                pull(&store, &r, out, &opts, stats.clone(), g.show_progress()).await?;
            let tmp = out.into_inner().map_err(|e| e.into_error())?.into_inner();
            tmp.as_file().sync_all()?;
            tmp.persist(path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            report
        }
        None => {
            let out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
            pull(&store, &r, out, &opts, stats.clone(), g.show_progress())
                .await?
                .0
        }
    };
    let secs = start.elapsed().as_secs_f64();
    if g.json && a.output.is_some() {
        println!("{}", serde_json::to_string(&report)?);
    }
    if !g.quiet {
        eprintln!(
            "pulled {} {} ({} layers, {} written, {} downloaded, {:.1}s)",
            report.reference,
            report.manifest_digest,
            report.layers,
            human_bytes(report.bytes_written),
            human_bytes(stats.bytes_downloaded.load(Ordering::Relaxed)),
            secs
        );
    }
    Ok(())
}
