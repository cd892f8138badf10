//! The image builder, as a subprocess: `docker`/`podman`/`buildah build` tagged with
//! the git-stable tag, and its save output streamed straight into a push.

use super::git::Commit;
use super::push::{record_push, PushRecord};
use super::Ctx;
use crate::model::reference::Reference;
use crate::transfer::push::{push, PushOptions};
use crate::transfer::stats::Stats;
use anyhow::{bail, Context, Result};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Builder {
    Docker,
    Podman,
    Buildah,
}

impl Builder {
    pub const ALL: [Builder; 3] = [Builder::Docker, Builder::Podman, Builder::Buildah];

    /// The command, which is also the name users write.
    pub fn bin(self) -> &'static str {
        match self {
            Builder::Docker => "docker",
            Builder::Podman => "podman",
            Builder::Buildah => "buildah",
        }
    }
}

impl std::str::FromStr for Builder {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match Builder::ALL.into_iter().find(|b| b.bin() == s) {
            Some(b) => Ok(b),
            None => bail!("unknown builder {s:?}: use docker, podman or buildah"),
        }
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildSpec {
    pub builder: Builder,
    /// Build context, inside the git repository.
    pub context: PathBuf,
    /// Default: CONTEXT/Dockerfile.
    pub dockerfile: Option<PathBuf>,
    pub platform: Option<String>,
    /// `KEY=VALUE` build arguments.
    pub build_args: Vec<String>,
}

/// The builder's output goes to our stderr: stdout carries only data.
fn to_stderr() -> Result<Stdio> {
    Ok(Stdio::from(std::io::stderr().as_fd().try_clone_to_owned()?))
}

/// Builds `reference` from the spec, labelled with the commit.
pub fn build(spec: &BuildSpec, reference: &str, commit: &Commit) -> Result<()> {
    let bin = spec.builder.bin();
    let dockerfile = spec
        .dockerfile
        .clone()
        .unwrap_or_else(|| spec.context.join("Dockerfile"));
    // `docker build`, `podman build` and `buildah build` take the same flags here.
    let mut cmd = Command::new(bin);
    cmd.arg("build")
        .arg("-t")
        .arg(reference)
        .arg("-f")
        .arg(&dockerfile);
    if let Some(p) = &spec.platform {
        cmd.arg("--platform").arg(p);
    }
    for b in &spec.build_args {
        cmd.arg("--build-arg").arg(b);
    }
    cmd.arg("--label")
        .arg(format!("org.opencontainers.image.revision={}", commit.hash))
        .arg(&spec.context)
        .stdin(Stdio::null())
        .stdout(to_stderr()?);
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {bin} (is it installed?)"))?;
    if !status.success() {
        bail!("{bin} build of {reference} failed ({status})");
    }
    Ok(())
}

/// Streams the builder's save output of `app:tag` into a push to the store, then
/// records it with the commit.
pub async fn save_and_push(
    ctx: &Ctx,
    builder: Builder,
    (app, tag): (&str, &str),
    opts: PushOptions,
    commit: &Commit,
    show_progress: bool,
) -> Result<Vec<PushRecord>> {
    let bin = builder.bin();
    let r = Reference::parse(&format!("{app}:{tag}"))?;
    let name = r.to_string();
    let mut save = Command::new(bin);
    match builder {
        Builder::Docker => save.arg("save").arg(&name),
        Builder::Podman => save.args(["save", "--format", "docker-archive"]).arg(&name),
        Builder::Buildah => save
            .arg("push")
            .arg(&name)
            .arg(format!("docker-archive:/dev/stdout:{name}")),
    };
    let mut child = save
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {bin} save"))?;
    let out = child.stdout.take().context("no pipe from the builder")?;
    let stats = Arc::new(Stats::default());
    let pushed = push(&ctx.store, out, None, Some(r), opts, stats, show_progress).await;
    if pushed.is_err() {
        let _ = child.kill();
    }
    let status = tokio::task::spawn_blocking(move || child.wait()).await??;
    let pushed = pushed?;
    if !status.success() {
        bail!("{bin} save of {name} failed ({status})");
    }
    record_push(ctx, &pushed, Some(commit.info())).await
}
