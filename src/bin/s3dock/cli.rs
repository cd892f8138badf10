//! The command line: clap arguments only. What they resolve to is in `settings`,
//! what runs in `commands`, how results look in `render`.
//!
//! Shape: only `-q`, `-v`, `--json` and `--config` are global ([`Global`]). The store
//! flags ([`StoreArgs`]) and transfer flags ([`TransferArgs`]) belong to the
//! subcommands that use them, so `stamp --help` lists no `--sse`. A new subcommand
//! that opens the store adds
//!
//! ```text
//! #[command(flatten)]
//! pub store: StoreArgs,
//! #[command(flatten)]          // only if it moves blobs (jobs, part size, retries)
//! pub transfer: TransferArgs,
//! ```
//!
//! and an arm in [`Command::shared`]; `settings` resolves them in one place. For old
//! command lines, [`command`] also accepts every store/transfer flag before the
//! subcommand (hidden globals with the same ids, so clap merges their values into the
//! subcommand's). Every argument needs a `///` line: a unit test walks the tree.

use clap::{Args, CommandFactory, Parser, Subcommand};
use s3dock::archive::Format;
use s3dock::codec::PushCompression;
use s3dock::model::units::{parse_duration, parse_size};
use s3dock::release::builder::Builder;
use std::path::PathBuf;

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

/// The clap command: [`Cli`] plus the store/transfer flags as hidden globals, so
/// `s3dock --store X push` keeps working.
pub fn command() -> clap::Command {
    let shared = TransferArgs::augment_args(StoreArgs::augment_args(clap::Command::new("shared")));
    shared.get_arguments().fold(Cli::command(), |cmd, a| {
        cmd.arg(a.clone().global(true).hide(true))
    })
}

/// `s3dock completions SHELL`: the script on stdout.
pub fn completions(shell: clap_complete::Shell) {
    clap_complete::generate(shell, &mut command(), "s3dock", &mut std::io::stdout());
}

/// `s3dock man [--dir DIR]`: the top page on stdout, or every page into DIR.
pub fn man(dir: Option<&std::path::Path>) -> anyhow::Result<()> {
    use anyhow::Context;
    match dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            clap_mangen::generate_to(command(), d)
                .with_context(|| format!("cannot write man pages in {}", d.display()))
        }
        None => Ok(clap_mangen::Man::new(command()).render(&mut std::io::stdout())?),
    }
}

#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// No progress or summary on stderr
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Print the result as JSON on stdout (pull to stdout: as the last line on stderr)
    #[arg(long, global = true)]
    pub json: bool,
    /// More logging on stderr, including the S3 SDK's (-v, -vv)
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Config file [default: $XDG_CONFIG_HOME/s3dock/config.toml, ~/.config/s3dock/config.toml]
    #[arg(long, global = true, value_name = "FILE", env = "S3DOCK_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Where the store is and how to reach it.
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Store options")]
pub struct StoreArgs {
    /// Store: s3://bucket[/prefix], file:///path or a directory [default: ~/.local/share/s3dock/store]
    #[arg(long, env = "S3DOCK_STORE")]
    pub store: Option<String>,
    /// S3 endpoint URL for S3-compatible servers (implies path-style addressing)
    #[arg(long, env = "S3DOCK_ENDPOINT")]
    pub endpoint: Option<String>,
    /// AWS region of the bucket [default: from the AWS config; us-east-1 with --endpoint]
    #[arg(long, env = "S3DOCK_REGION")]
    pub region: Option<String>,
    /// Directory inside the bucket or store directory (the registry's `rootdirectory`)
    #[arg(long, env = "S3DOCK_ROOT_DIR")]
    pub root_dir: Option<String>,
    /// Path-style S3 addressing [default: on with --endpoint, else off]
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub path_style: Option<bool>,
    /// s3dock profile from the config file; with no config file, taken as the AWS profile
    #[arg(long, env = "S3DOCK_PROFILE")]
    pub profile: Option<String>,
    /// AWS shared-config profile for credentials and region
    #[arg(long, env = "AWS_PROFILE")]
    pub aws_profile: Option<String>,
    /// Server-side encryption of new objects: AES256 or aws:kms
    #[arg(long, value_parser = crate::profiles::SSE)]
    pub sse: Option<String>,
    /// KMS key id or ARN for --sse aws:kms [default: the bucket's AWS-managed key]
    #[arg(long)]
    pub sse_kms_key_id: Option<String>,
    /// S3 storage class for new objects (STANDARD, INTELLIGENT_TIERING, ...)
    #[arg(long)]
    pub storage_class: Option<String>,
    /// Use S3 Transfer Acceleration
    #[arg(long)]
    pub accelerate: bool,
    /// Send S3 requests unsigned, without credentials (public buckets; read-only use)
    #[arg(long)]
    pub no_sign_request: bool,
    /// Hash uploaded bodies into the SigV4 signature [default: over http only, like the aws CLI]
    #[arg(long, num_args = 0..=1, default_missing_value = "true", env = "S3DOCK_PAYLOAD_SIGNING")]
    pub payload_signing: Option<bool>,
    /// Who the audit trail names [default: git user, else user@host]
    #[arg(long, env = "S3DOCK_ACTOR")]
    pub actor: Option<String>,
}

/// How blobs move.
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Transfer options")]
pub struct TransferArgs {
    /// Concurrent part uploads / ranged downloads [default: 4]
    #[arg(long, short = 'j', env = "S3DOCK_JOBS")]
    pub jobs: Option<usize>,
    /// Multipart part size (and download chunk size), e.g. 16MiB; grows for huge blobs [default: 16MiB]
    #[arg(long, value_parser = parse_size)]
    pub part_size: Option<u64>,
    /// Attempts per S3 request, with exponential backoff and jitter [default: 5]
    #[arg(long)]
    pub retries: Option<u32>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Push the images of a docker save / OCI archive (stdin or -i FILE) to the store
    #[command(after_help = PUSH_EXAMPLES)]
    Push(PushArgs),
    /// Write images from the store as one archive for docker load / podman load (or a delta for s3dock push)
    #[command(after_help = PULL_EXAMPLES)]
    Pull(PullArgs),
    /// Copy images from the store to another (--to), blob by blob; tags are written last
    #[command(after_help = COPY_EXAMPLES)]
    Copy(CopyArgs),
    /// List the tags of a repository
    Tags {
        /// Repository name, or s3://bucket/name
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove temporary objects and incomplete multipart uploads left by interrupted pushes
    Cleanup {
        /// Only what is older than this, so running pushes are left alone (e.g. 30m, 2h, 0s)
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        older_than: std::time::Duration,
        /// Only report what would be removed
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Build an image from a clean git tree, tagged APP:{YYYYMMDD-HHMM}-{commit} (--push to push it)
    Build(BuildArgs),
    /// Print the git-stable tag of the current commit, for other build tools
    Stamp(StampArgs),
    /// Give an image a semantic version: s3dock tag APP:TAG v1.2.0
    Tag(TagArgs),
    /// Point an environment at an image tag or version: s3dock promote APP:TAG ENV
    #[command(after_help = PROMOTE_EXAMPLES)]
    Promote(PromoteArgs),
    /// Print the image an environment runs: APP:TAG
    Current(CurrentArgs),
    /// List apps, or one app's images, versions and environments
    List(ListArgs),
    /// Show an app's audit trail, newest first
    History(HistoryArgs),
    /// Untag images (APP:TAG) or delete manifest revisions (APP@sha256:...); blobs go with gc
    Rm(RmArgs),
    /// Remove an app's build tags beyond the newest N and older than an age (never what an environment runs)
    Prune(PruneArgs),
    /// Delete blobs, layer links and index entries nothing references (safe while pushes run)
    Gc(GcArgs),
    /// Check the store's integrity: exit 0 clean, 1 problems found, 2 could not check
    Verify(VerifyArgs),
    /// Run an environment's image on this host, blue-green: health-checked, then given the traffic
    #[command(after_help = DEPLOY_EXAMPLES)]
    Deploy(DeployArgs),
    /// Point an environment back at its previous generation and serve that on this host
    #[command(after_help = ROLLBACK_EXAMPLES)]
    Rollback(DeployArgs),
    /// Watch an environment and deploy it on this host whenever it moves (SIGTERM stops it)
    #[command(after_help = AGENT_EXAMPLES)]
    Agent(AgentArgs),
    /// Show what this host serves for an environment: colour, digest, since when, last deploy
    Status(StatusArgs),
    /// Manage configuration profiles
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print a shell completion script (bash, zsh, fish)
    Completions {
        /// Shell to complete for
        shell: clap_complete::Shell,
    },
    /// Print the man page, or write one page per command into a directory
    Man {
        /// Write s3dock.1 and s3dock-COMMAND.1 pages here (e.g. ~/.local/share/man/man1)
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

const PUSH_EXAMPLES: &str = "Examples:
  docker save myapp:1.4 | s3dock push --store s3://my-bucket/images
  s3dock push -i myapp.tar --compression zstd myapp:1.4
  docker save myapp:1.4 | s3dock push s3://my-bucket/myapp:1.4 --sse aws:kms";

const PULL_EXAMPLES: &str = "Examples:
  s3dock pull --store s3://my-bucket/images myapp:1.4 | docker load
  s3dock pull myapp production -o myapp.tar
  s3dock pull web:2.1 worker:2.1 -o bundle.tar          # one archive, each blob once
  s3dock pull --env production -o production.tar       # every app's production image
  s3dock pull myapp:v2 --exclude myapp:v1 -o delta.tar  # only what the far side lacks; s3dock push reads it
  s3dock pull myapp:1.4 --platform linux/arm64 --cache ~/.cache/s3dock | podman load";

const COPY_EXAMPLES: &str = "Examples:
  s3dock copy myapp:1.4 --store ./store --to s3://backup-bucket/images
  s3dock copy --all --with-releases --store s3://prod --to s3://dr-bucket --to-region eu-west-1
  s3dock copy myapp --to dr          (every tag of myapp, to the store of profile dr)";

const DEPLOY_EXAMPLES: &str = "Examples:
  s3dock deploy --blue-green myapp production --port 80 --container-port 8080 --health /health
  s3dock deploy myapp staging --switch hook --hook 'haproxy-set-backend $S3DOCK_ADDR' -- -e MODE=staging
  s3dock agent myapp production --interval 30s --container-port 8080 --health /health";

const ROLLBACK_EXAMPLES: &str = "Examples:
  s3dock rollback myapp production --port 80 --container-port 8080 --health /health
  s3dock rollback myapp staging --switch hook --hook 'haproxy-set-backend $S3DOCK_ADDR' --json";

const AGENT_EXAMPLES: &str = "Examples:
  s3dock agent myapp production --interval 30s --port 80 --container-port 8080 --health /health
  s3dock agent myapp staging --engine podman --cache /var/cache/s3dock --switch hook --hook ./switch.sh";

const PROMOTE_EXAMPLES: &str = "Examples:
  s3dock promote myapp:20250721-2118-1a2b3c4 staging
  s3dock promote myapp v1.2.0 production
  s3dock promote myapp staging production   (what staging runs, to production)";

impl Command {
    /// The subcommand's store and transfer flags, for `settings` (None: it has none).
    pub fn shared(&self) -> (Option<&StoreArgs>, Option<&TransferArgs>) {
        match self {
            Command::Push(a) => (Some(&a.store), Some(&a.transfer)),
            Command::Copy(a) => (Some(&a.store), Some(&a.transfer)),
            Command::Pull(a) => (Some(&a.store), Some(&a.transfer)),
            Command::Build(a) => (Some(&a.store), Some(&a.transfer)),
            Command::Tags { store, .. } | Command::Cleanup { store, .. } => (Some(store), None),
            Command::Tag(TagArgs { store, .. })
            | Command::Promote(PromoteArgs { store, .. })
            | Command::Current(CurrentArgs { store, .. })
            | Command::List(ListArgs { store, .. })
            | Command::History(HistoryArgs { store, .. }) => (Some(store), None),
            Command::Config { command } => match command {
                ConfigCommand::Init(a) => (Some(&a.store), Some(&a.transfer)),
                ConfigCommand::Show(a) => (Some(&a.store), Some(&a.transfer)),
                ConfigCommand::List => (None, None),
            },
            Command::Rm(RmArgs { store, .. })
            | Command::Prune(PruneArgs { store, .. })
            | Command::Gc(GcArgs { store, .. }) => (Some(store), None),
            Command::Verify(a) => (Some(&a.store), Some(&a.transfer)),
            Command::Deploy(DeployArgs { store, .. })
            | Command::Rollback(DeployArgs { store, .. })
            | Command::Agent(AgentArgs { store, .. }) => (Some(store), None),
            Command::Stamp(_)
            | Command::Status(_)
            | Command::Completions { .. }
            | Command::Man { .. } => (None, None),
        }
    }
}

#[derive(Args, Debug)]
pub struct PushArgs {
    /// Target reference (name[:tag]), or s3://bucket/name[:tag]; default: the archive's own tags
    pub reference: Option<String>,
    /// Archive to read; - or absent means stdin
    #[arg(long, short)]
    pub input: Option<PathBuf>,
    /// Layer compression: gzip, zstd, none, or auto (zstd, level adapted to the upload rate) [default: gzip, or the profile's]
    #[arg(long, env = "S3DOCK_COMPRESSION")]
    pub compression: Option<PushCompression>,
    /// Compression level [default: gzip 1, zstd 3; with auto: the level to start from]
    #[arg(long)]
    pub level: Option<i32>,
    /// Platform to take from a multi-platform archive
    #[arg(long)]
    pub platform: Option<String>,
    /// Push a multi-platform archive whole: every platform's image, and the index under the tag
    #[arg(long)]
    pub all_platforms: bool,
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
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub transfer: TransferArgs,
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// name[:tag], name@sha256:<digest> or s3://bucket/name[:tag], several for one bundle
    /// archive; or APP NAME: an environment, version or tag of the app (s3dock pull myapp production)
    #[arg(value_name = "REFERENCE")]
    pub references: Vec<String>,
    /// Environment ENV of each APP given, or of every app that has one: s3dock pull --env production
    #[arg(long, value_name = "ENV")]
    pub env: Option<String>,
    /// Write to FILE (atomically) instead of stdout
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// docker: OCI layout + manifest.json (docker/podman load); oci: OCI layout only
    #[arg(long, default_value = "docker")]
    pub format: Format,
    /// RepoTags for the archive instead of the pulled reference (one image only)
    #[arg(long)]
    pub tag: Option<String>,
    /// os/arch[/variant] to pick from multi-platform images [default: this host's]
    #[arg(long)]
    pub platform: Option<String>,
    /// Keep a multi-platform image whole: its index, every platform's manifest, config and
    /// layers (manifest.json names this host's image)
    #[arg(long)]
    pub all_platforms: bool,
    /// Leave out the layers of REF, which the far side holds: a delta archive for s3dock push (repeatable)
    #[arg(long, value_name = "REF")]
    pub exclude: Vec<String>,
    /// Leave out the layer blobs FILE lists (sha256:<hex>, one a line, # comments): the far side holds them
    #[arg(long, value_name = "FILE")]
    pub exclude_from: Vec<PathBuf>,
    /// With --exclude: write a full, loadable archive taking the excluded layers from --cache, not the store
    #[arg(long)]
    pub loadable: bool,
    /// Directory of blobs already on this host (content-addressed), filled as blobs are pulled
    #[arg(long, env = "S3DOCK_CACHE")]
    pub cache: Option<PathBuf>,
    /// Write layers uncompressed (for Docker < 23 with zstd layers); spools each layer to a temp file
    #[arg(long)]
    pub decompress: bool,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub transfer: TransferArgs,
}

/// `copy`: the source is the usual store (`--store` ...), the target `--to` (...).
#[derive(Args, Debug)]
pub struct CopyArgs {
    /// Images: name:tag, name@sha256:DIGEST, or a name alone for every tag of it
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub refs: Vec<String>,
    /// Every tag of every repository in the source store
    #[arg(long)]
    pub all: bool,
    /// Target store: s3://bucket[/prefix], file:///path, a directory, or a profile of the config file
    #[arg(long, value_name = "STORE")]
    pub to: String,
    /// S3 endpoint of the target [default: the source's, or the --to profile's]
    #[arg(long, value_name = "URL")]
    pub to_endpoint: Option<String>,
    /// AWS region of the target bucket [default: the source's, or the --to profile's]
    #[arg(long, value_name = "REGION")]
    pub to_region: Option<String>,
    /// Directory inside the target bucket or directory (its `rootdirectory`) [default: none]
    #[arg(long, value_name = "DIR")]
    pub to_root_dir: Option<String>,
    /// AWS shared-config profile for the target's credentials [default: the source's]
    #[arg(long, value_name = "NAME")]
    pub to_aws_profile: Option<String>,
    /// Also copy the apps' image records, versions and environments (those whose image is in the target)
    #[arg(long)]
    pub with_releases: bool,
    /// Upload every part again instead of continuing the multipart uploads an
    /// interrupted copy left open
    #[arg(long)]
    pub no_resume: bool,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub transfer: TransferArgs,
}

#[derive(Args, Debug)]
pub struct StampArgs {
    /// App name: prints APP:TAG instead of TAG
    pub app: Option<String>,
    /// Directory inside the git repository
    #[arg(long, short = 'C', default_value = ".")]
    pub context: PathBuf,
    /// Print the tag even if the tree has uncommitted changes
    #[arg(long)]
    pub allow_dirty: bool,
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// App (repository) name; the tag is {YYYYMMDD-HHMM}-{7-hex commit}
    pub app: String,
    /// Dockerfile [default: CONTEXT/Dockerfile]
    #[arg(long, short = 'f')]
    pub dockerfile: Option<PathBuf>,
    /// Build context, inside the git repository
    #[arg(long, default_value = ".")]
    pub context: PathBuf,
    /// Target platform, e.g. linux/arm64
    #[arg(long)]
    pub platform: Option<String>,
    /// Builder CLI to run [default: docker, or the profile's builder]
    #[arg(long, env = "S3DOCK_BUILDER")]
    pub builder: Option<Builder>,
    /// --build-arg KEY=VALUE, passed to the builder
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// Stream the builder's save output straight into a push
    #[arg(long)]
    pub push: bool,
    /// Layer compression for --push: gzip, zstd, none or auto [default: gzip, or the profile's]
    #[arg(long, env = "S3DOCK_COMPRESSION")]
    pub compression: Option<PushCompression>,
    /// Compression level [default: gzip 1, zstd 3; with auto: the level to start from]
    #[arg(long)]
    pub level: Option<i32>,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub transfer: TransferArgs,
}

#[derive(Args, Debug)]
pub struct TagArgs {
    /// The image: APP:IMAGE_TAG (or APP:VERSION to alias a version)
    pub image: String,
    /// Semantic version, e.g. v1.2.0 or 1.2.0 (one style per app)
    pub version: String,
    /// Move the version if it already names another image (recorded)
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Args, Debug)]
pub struct PromoteArgs {
    /// APP:TAG ENV, or APP TAG ENV (TAG: an image tag, a version, or another environment)
    #[arg(num_args = 2..=3, required = true, value_names = ["APP[:TAG]", "TAG|ENV"])]
    pub args: Vec<String>,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Args, Debug)]
pub struct CurrentArgs {
    /// App name
    pub app: String,
    /// Environment, e.g. production
    pub env: String,
    /// Print APP:TAG@sha256:... (pullable by digest)
    #[arg(long)]
    pub digest: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// App to show; all apps when absent
    pub app: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// App name
    pub app: String,
    /// Only events since this month (2025-07) or day (2025-07-21), UTC
    #[arg(long)]
    pub since: Option<String>,
    /// Only this kind of event: push, tag, promote, remove, rollback, deploy or deploy-failed
    #[arg(long)]
    pub event: Option<String>,
    /// At most N events
    #[arg(long, short = 'n')]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// APP:TAG to untag (image tag or version), or APP@sha256:DIGEST to delete a revision
    #[arg(required = true)]
    pub refs: Vec<String>,
    /// Delete a revision even while tags, versions or environments name it (its tags go too)
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// App whose build tags to prune
    pub app: Option<String>,
    /// Every app in the store
    #[arg(long)]
    pub all_apps: bool,
    /// Always keep the newest N image tags
    #[arg(long)]
    pub keep_last: usize,
    /// Only remove image tags pushed longer ago than this, e.g. 30d, 12h, 0s
    #[arg(long, value_parser = parse_duration)]
    pub older_than: std::time::Duration,
    /// Only print what would be removed
    #[arg(long)]
    pub dry_run: bool,
    /// Also remove images that have a semantic version (and those versions)
    #[arg(long)]
    pub versions: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Args, Debug)]
pub struct GcArgs {
    /// Only delete what was last written longer ago than this (e.g. 1h, 30m, 0s)
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub grace: std::time::Duration,
    /// Only report what would be deleted
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// APP:TAG or APP@sha256:DIGEST to check; the whole store when absent
    pub refs: Vec<String>,
    /// The whole store (the default without references)
    #[arg(long, conflicts_with = "refs")]
    pub all: bool,
    /// Also re-hash every blob and each layer's diff_id (reads every byte)
    #[arg(long)]
    pub deep: bool,
    /// Apply the safe fixes: drop dangling index entries, restore missing layer links of stored blobs
    #[arg(long)]
    pub repair: bool,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub transfer: TransferArgs,
}

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Write a profile to the config file (interactively on a terminal, or from flags)
    Init(InitArgs),
    /// Print the effective settings and where each came from (secrets are never printed)
    Show(ShowArgs),
    /// List the profiles in the config file
    List,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Layer compression for pushes: gzip, zstd, none or auto
    #[arg(long)]
    pub compression: Option<PushCompression>,
    /// Image builder for `s3dock build`: docker, podman or buildah
    #[arg(long)]
    pub builder: Option<String>,
    /// Replace the profile if it exists
    #[arg(long)]
    pub force: bool,
    /// Never prompt, even on a terminal
    #[arg(long)]
    pub no_input: bool,
    /// Directory of blobs already on this host, for pulls
    #[arg(long)]
    pub cache: Option<PathBuf>,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub transfer: TransferArgs,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub transfer: TransferArgs,
}

/// Traffic switches `deploy` can drive.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwitchKind {
    /// Write an nginx upstream file and reload nginx
    Nginx,
    /// Run --hook CMD with the new colour's address
    Hook,
}

/// How an environment runs on this host (deploy, rollback, agent).
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Host options")]
pub struct HostArgs {
    /// Container engine CLI: docker or podman
    #[arg(long, default_value = "docker", value_parser = ["docker", "podman"], env = "S3DOCK_ENGINE")]
    pub engine: String,
    /// Directory of the host state files (APP-ENV.json)
    #[arg(long, default_value = s3dock::deploy::state::STATE_DIR, env = "S3DOCK_STATE_DIR")]
    pub state_dir: PathBuf,
    /// Public port on this host (where nginx listens); the switch is confirmed through it
    #[arg(long, default_value_t = 80)]
    pub port: u16,
    /// Port the application listens on inside the container
    #[arg(long, default_value_t = 80)]
    pub container_port: u16,
    /// Health check path: must answer 2xx before traffic moves
    #[arg(long, default_value = "/")]
    pub health: String,
    /// How long the new colour gets to become healthy (e.g. 60s, 5m)
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub health_timeout: std::time::Duration,
    /// How long the old colour keeps running after the switch, for requests in flight
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub drain: std::time::Duration,
    /// Traffic switch: nginx (upstream file + reload) or hook (--hook CMD)
    #[arg(long, value_enum, default_value = "nginx")]
    pub switch: SwitchKind,
    /// Command (sh -c) that moves traffic, with S3DOCK_ADDR=127.0.0.1:PORT, S3DOCK_PORT, S3DOCK_COLOUR, S3DOCK_APP, S3DOCK_ENV, S3DOCK_DIGEST set
    #[arg(long)]
    pub hook: Option<String>,
    /// nginx upstream file to write [default: /etc/nginx/conf.d/s3dock-APP-ENV.conf]
    #[arg(long)]
    pub nginx_upstream: Option<PathBuf>,
    /// Command that makes nginx read the upstream file
    #[arg(long, default_value = "nginx -s reload")]
    pub nginx_reload: String,
    /// Directory of blobs already on this host (content-addressed), filled as blobs are pulled
    #[arg(long, env = "S3DOCK_CACHE")]
    pub cache: Option<PathBuf>,
    /// os/arch[/variant] to run [default: this host's]
    #[arg(long)]
    pub platform: Option<String>,
    /// Extra `docker run` arguments, after `--` (e.g. -- -e KEY=VALUE --memory 512m)
    #[arg(last = true)]
    pub run_args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct DeployArgs {
    /// App name
    pub app: String,
    /// Environment, e.g. production
    pub env: String,
    /// Blue-green (the only strategy; accepted for clarity)
    #[arg(long)]
    pub blue_green: bool,
    #[command(flatten)]
    pub host: HostArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// App name
    pub app: String,
    /// Environment, e.g. production
    pub env: String,
    /// How often to read the environment pointer (failures back off up to 10m)
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub interval: std::time::Duration,
    #[command(flatten)]
    pub host: HostArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// App name
    pub app: String,
    /// Environment, e.g. production
    pub env: String,
    /// Container engine CLI: docker or podman
    #[arg(long, default_value = "docker", value_parser = ["docker", "podman"], env = "S3DOCK_ENGINE")]
    pub engine: String,
    /// Directory of the host state files (APP-ENV.json)
    #[arg(long, default_value = s3dock::deploy::state::STATE_DIR, env = "S3DOCK_STATE_DIR")]
    pub state_dir: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every visible argument of every command, at any depth, has a line of help.
    #[test]
    fn every_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                if !a.is_hide_set()
                    && a.get_help().is_none()
                    && a.get_id() != "help"
                    && a.get_id() != "version"
                {
                    missing.push(format!("{path} {}", a.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut cmd = command();
        cmd.build();
        let mut missing = Vec::new();
        walk(&cmd, "s3dock", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:?}");
    }

    #[test]
    fn command_is_consistent() {
        command().debug_assert();
    }
}
