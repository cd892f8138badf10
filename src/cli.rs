//! Command-line interface: argument parsing, and turning results into output.
//! stdout carries data only (archives, `--json`); everything else goes to stderr.

use crate::archive::Format;
use crate::compress::Compression;
use crate::image::host_platform;
use crate::pull::{pull, PullOptions};
use crate::push::{push, PushOptions};
use crate::reference::Reference;
use crate::stats::{human_bytes, Stats};
use crate::store::{Location, S3Options, Store, StoreConfig};
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
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
    /// AWS shared-config profile for credentials and region
    #[arg(long, global = true, env = "AWS_PROFILE")]
    pub profile: Option<String>,
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
    /// Concurrent part uploads / ranged downloads
    #[arg(
        long,
        short = 'j',
        global = true,
        default_value_t = 4,
        env = "S3DOCK_JOBS"
    )]
    pub jobs: usize,
    /// Multipart part size (and download chunk size), e.g. 16MiB; grows for huge blobs
    #[arg(long, global = true, default_value = "16MiB", value_parser = parse_size)]
    pub part_size: u64,
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
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Push the images of a docker save / OCI archive (stdin or -i FILE) to the store
    Push(PushArgs),
    /// Write an image from the store as an archive for docker load / podman load
    Pull(PullArgs),
    /// List the tags of a repository
    Tags { name: String },
}

#[derive(Args, Debug)]
pub struct PushArgs {
    /// Target reference (name[:tag]), or s3://bucket/name[:tag]; default: the archive's own tags
    pub reference: Option<String>,
    /// Archive to read; - or absent means stdin
    #[arg(long, short)]
    pub input: Option<PathBuf>,
    #[arg(long, default_value = "gzip")]
    pub compression: Compression,
    /// Compression level [default: gzip 1, zstd 3]
    #[arg(long)]
    pub level: Option<i32>,
    /// Platform to take from a multi-platform archive
    #[arg(long)]
    pub platform: Option<String>,
    /// Do not use the store's diff_id index to skip layers already stored
    #[arg(long)]
    pub no_index: bool,
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// name[:tag] or name@sha256:<digest>, or s3://bucket/name[:tag]
    pub reference: String,
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

fn parse_size(s: &str) -> Result<u64, String> {
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
    let v = n * mult;
    if v < 5 << 20 {
        return Err(format!("part size {s} is below S3's 5 MiB minimum"));
    }
    Ok(v)
}

fn default_store() -> String {
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
    fn store_config(&self, store: Option<String>) -> Result<StoreConfig> {
        let url = store
            .or_else(|| self.store.clone())
            .unwrap_or_else(default_store);
        let location = Location::parse(&url)?;
        if let Some(ep) = &self.endpoint {
            let u = url::Url::parse(ep).with_context(|| format!("invalid --endpoint {ep:?}"))?;
            if u.scheme() == "http" {
                let host = u.host_str().unwrap_or("");
                let loopback = host == "localhost"
                    || host
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|a| a.is_loopback());
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
                profile: self.profile.clone(),
                path_style: self.path_style.unwrap_or(self.endpoint.is_some()),
                accelerate: self.accelerate,
                sse: self.sse.clone(),
                sse_kms_key_id: self.sse_kms_key_id.clone(),
                storage_class: self.storage_class.clone(),
                max_attempts: self.retries,
            },
            jobs: self.jobs,
            part_size: self.part_size,
        })
    }

    fn show_progress(&self) -> bool {
        !self.quiet && std::io::stderr().is_terminal()
    }
}

pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
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
    match rt.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("s3dock: error: {}", one_line(&e));
            std::process::ExitCode::FAILURE
        }
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

async fn run(cli: Cli) -> Result<()> {
    let g = cli.global;
    match cli.command {
        Command::Push(a) => run_push(&g, a).await,
        Command::Pull(a) => run_pull(&g, a).await,
        Command::Tags { name } => {
            let (store_url, name) = split_store_ref(&g, &name)?;
            let store = Store::open(&g.store_config(store_url)?).await?;
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
    let store = Store::open(&g.store_config(store_url)?).await?;
    let stats = Arc::new(Stats::default());
    let opts = PushOptions {
        compression: a.compression,
        level: a.level,
        platform: a.platform.unwrap_or_else(host_platform),
        use_index: !a.no_index,
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
    let secs = start.elapsed().as_secs_f64();
    let read = stats.bytes_read.load(Ordering::Relaxed);
    let summary = serde_json::json!({
        "images": pushed,
        "layers": stats.layers.load(Ordering::Relaxed),
        "bytes_read": read,
        "bytes_uploaded": stats.bytes_uploaded.load(Ordering::Relaxed),
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
        eprintln!(
            "{} layers, read {}, uploaded {}, {} blobs skipped, {:.1}s, {}/s",
            summary["layers"],
            human_bytes(read),
            human_bytes(stats.bytes_uploaded.load(Ordering::Relaxed)),
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
    Ok((Box::new(std::io::stdin()), None))
}

async fn run_pull(g: &Global, a: PullArgs) -> Result<()> {
    let (store_url, name) = split_store_ref(g, &a.reference)?;
    let r = Reference::parse(&name)?;
    if a.output.is_none() && std::io::stdout().is_terminal() {
        bail!("refusing to write an image archive to a terminal: pipe it (| docker load) or use -o FILE");
    }
    let store = Store::open(&g.store_config(store_url)?).await?;
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
        Some(path) => {
            // Written beside the target and renamed, so FILE is complete or absent.
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let tmp = tempfile::NamedTempFile::new_in(dir)
                .with_context(|| format!("cannot write in {}", dir.display()))?;
            let out = std::io::BufWriter::with_capacity(1 << 20, tmp);
            let (report, out) =
                pull(&store, &r, out, &opts, stats.clone(), g.show_progress()).await?;
            let tmp = out.into_inner().map_err(|e| e.into_error())?;
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
