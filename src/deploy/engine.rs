//! The local container engine, driven through its CLI (`docker`, or `podman`, whose
//! CLI and `inspect` JSON have the same shape for what is used here). Deploy is the
//! one place s3dock talks to an engine: pushing and pulling stay daemon-free.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::HashMap;
use std::process::{Child, Command, Output, Stdio};

/// Labels s3dock puts on the containers it runs, so the host's state can be rebuilt
/// from `ps` alone.
pub const LABEL_DEPLOY: &str = "s3dock.deploy";
pub const LABEL_COLOUR: &str = "s3dock.colour";
pub const LABEL_DIGEST: &str = "s3dock.digest";
pub const LABEL_IMAGE_TAG: &str = "s3dock.image-tag";
pub const LABEL_PORT: &str = "s3dock.port";

#[derive(Debug, Clone)]
pub struct Engine {
    bin: String,
}

/// A container as the engine reports it.
#[derive(Debug, Clone)]
pub struct Container {
    pub name: String,
    pub running: bool,
    pub labels: HashMap<String, String>,
    pub started_at: String,
}

impl Container {
    pub fn label(&self, k: &str) -> Option<&str> {
        self.labels.get(k).map(String::as_str)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Inspected {
    name: String,
    state: InspectedState,
    config: InspectedConfig,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectedState {
    running: bool,
    #[serde(default)]
    started_at: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectedConfig {
    #[serde(default)]
    labels: Option<HashMap<String, String>>,
}

impl From<Inspected> for Container {
    fn from(i: Inspected) -> Self {
        Container {
            name: i.name.trim_start_matches('/').to_string(),
            running: i.state.running,
            labels: i.config.labels.unwrap_or_default(),
            started_at: i.state.started_at,
        }
    }
}

/// What `run` starts.
pub struct RunSpec<'a> {
    pub name: &'a str,
    pub image: &'a str,
    pub host_port: u16,
    pub container_port: u16,
    pub labels: Vec<(&'static str, String)>,
    /// The user's extra `docker run` arguments (after `--`), before the image.
    pub extra: &'a [String],
}

impl Engine {
    /// `docker` or `podman` (or a path to either).
    pub fn new(bin: &str) -> Engine {
        Engine { bin: bin.into() }
    }

    pub fn name(&self) -> &str {
        &self.bin
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.stdin(Stdio::null());
        c
    }

    /// Runs `args`; an error carries the engine's own stderr.
    fn run(&self, args: &[&str]) -> Result<Output> {
        let out =
            self.cmd().args(args).output().with_context(|| {
                format!("cannot run {}: is it installed and on PATH?", self.bin)
            })?;
        if !out.status.success() {
            bail!(
                "{} {} failed: {}",
                self.bin,
                args.first().copied().unwrap_or_default(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out)
    }

    /// The container named `name`, or None.
    pub fn inspect(&self, name: &str) -> Result<Option<Container>> {
        let out = self
            .cmd()
            .args(["container", "inspect", name])
            .output()
            .with_context(|| format!("cannot run {}: is it installed and on PATH?", self.bin))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
            if err.contains("no such") || err.contains("not found") {
                return Ok(None);
            }
            bail!(
                "{} container inspect {name} failed: {}",
                self.bin,
                err.trim()
            );
        }
        let mut v: Vec<Inspected> = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("unexpected {} inspect output", self.bin))?;
        let Some(i) = v.pop() else { return Ok(None) };
        Ok(Some(i.into()))
    }

    /// The containers named, in one engine call (the deploy path is timed: a rollback
    /// must switch in under a second); a name that vanished meanwhile is left out.
    pub fn inspect_all(&self, names: &[String]) -> Result<Vec<Container>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let out = self
            .cmd()
            .args(["container", "inspect"])
            .args(names)
            .output()
            .with_context(|| format!("cannot run {}: is it installed and on PATH?", self.bin))?;
        // Only "no such container" failures leave the others' answers usable.
        let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
        let only_missing = out.status.success()
            || err
                .lines()
                .filter(|l| !l.trim().is_empty())
                .all(|l| l.contains("no such") || l.contains("not found"));
        let parsed = serde_json::from_slice::<Vec<Inspected>>(&out.stdout);
        match parsed {
            Ok(v) if only_missing => Ok(v.into_iter().map(Container::from).collect()),
            // Anything unexpected: one at a time, with the precise errors.
            _ => {
                let mut v = Vec::new();
                for n in names {
                    v.extend(self.inspect(n)?);
                }
                Ok(v)
            }
        }
    }

    /// Names of the containers (running or not) with `label=value`.
    pub fn with_label(&self, label: &str, value: &str) -> Result<Vec<String>> {
        let filter = format!("label={label}={value}");
        let out = self.run(&["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"])?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect())
    }

    pub fn has_image(&self, id: &str) -> bool {
        self.cmd()
            .args(["image", "inspect", id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// `load` reading an archive from its stdin.
    pub fn load(&self) -> Result<Child> {
        self.cmd()
            .arg("load")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {} load", self.bin))
    }

    /// Starts a detached container publishing `host_port` on 127.0.0.1 only; it is
    /// restarted with the engine unless it was stopped on purpose.
    pub fn run_container(&self, spec: &RunSpec) -> Result<()> {
        let publish = format!("127.0.0.1:{}:{}", spec.host_port, spec.container_port);
        let mut args: Vec<String> = ["run", "-d", "--name", spec.name, "--restart"]
            .map(String::from)
            .into();
        args.push("unless-stopped".into());
        args.extend(["-p".into(), publish]);
        for (k, v) in &spec.labels {
            args.extend(["--label".into(), format!("{k}={v}")]);
        }
        args.extend(spec.extra.iter().cloned());
        args.push(spec.image.into());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run(&refs)?;
        Ok(())
    }

    pub fn start(&self, name: &str) -> Result<()> {
        self.run(&["start", name]).map(drop)
    }

    /// Stops with `grace` seconds for the process to finish its requests.
    pub fn stop(&self, name: &str, grace: u64) -> Result<()> {
        self.run(&["stop", "-t", &grace.to_string(), name])
            .map(drop)
    }

    /// Removes the container, running or not; a missing one is fine.
    pub fn remove(&self, name: &str) -> Result<()> {
        if self.inspect(name)?.is_none() {
            return Ok(());
        }
        self.run(&["rm", "-f", name]).map(drop)
    }

    /// The last lines of the container's output, for a failure report.
    pub fn logs_tail(&self, name: &str, lines: usize) -> String {
        match self
            .cmd()
            .args(["logs", "--tail", &lines.to_string(), name])
            .output()
        {
            Ok(o) => {
                let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
                s.push_str(&String::from_utf8_lossy(&o.stderr));
                s.trim().to_string()
            }
            Err(_) => String::new(),
        }
    }
}
