//! Moving traffic: nginx (an upstream file written atomically, then a reload) or a
//! user hook (HAProxy, a cloud load balancer, a service mesh).

use super::state::write_atomic;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::Command;

#[derive(Debug, Clone)]
pub enum Switch {
    Nginx {
        /// The file holding `upstream APP_ENV { ... }`, included by nginx.conf.
        upstream: PathBuf,
        /// Run through `sh -c` after the file is in place.
        reload: String,
    },
    /// Run through `sh -c` with the new colour in `S3DOCK_*` variables.
    Hook { command: String },
}

/// Where traffic should go.
#[derive(Debug, Clone)]
pub struct Route<'a> {
    pub app: &'a str,
    pub env: &'a str,
    pub colour: &'a str,
    pub port: u16,
    pub digest: &'a str,
}

/// The nginx upstream name of an environment: `APP_ENV`, anything but letters,
/// digits and `_` in the app name (`/`, `.`, `-`) replaced by `_`.
pub fn upstream_name(app: &str, env: &str) -> String {
    format!("{app}_{env}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The upstream block pointing at one local port.
pub fn upstream_conf(r: &Route) -> String {
    format!(
        "# written by s3dock deploy: {} {} -> {} ({})\nupstream {} {{\n    server 127.0.0.1:{};\n}}\n",
        r.app,
        r.env,
        r.colour,
        r.digest,
        upstream_name(r.app, r.env),
        r.port
    )
}

impl Switch {
    /// Points traffic at `to`.
    pub fn apply(&self, to: &Route) -> Result<()> {
        match self {
            Switch::Nginx { upstream, reload } => {
                write_atomic(upstream, upstream_conf(to).as_bytes())?;
                shell(reload, &[]).context("nginx reload failed")
            }
            Switch::Hook { command } => {
                let port = to.port.to_string();
                let addr = format!("127.0.0.1:{port}");
                shell(
                    command,
                    &[
                        ("S3DOCK_APP", to.app),
                        ("S3DOCK_ENV", to.env),
                        ("S3DOCK_COLOUR", to.colour),
                        ("S3DOCK_ADDR", &addr),
                        ("S3DOCK_PORT", &port),
                        ("S3DOCK_DIGEST", to.digest),
                    ],
                )
                .context("switch hook failed")
            }
        }
    }

    /// The port the switch currently routes to, when it can be read back (nginx).
    pub fn current_port(&self) -> Option<u16> {
        let Switch::Nginx { upstream, .. } = self else {
            return None;
        };
        let text = std::fs::read_to_string(upstream).ok()?;
        let i = text.find("server 127.0.0.1:")? + "server 127.0.0.1:".len();
        let digits: String = text[i..].chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    }
}

/// Runs `command` with `sh -c`; a failure carries its output.
fn shell(command: &str, env: &[(&str, &str)]) -> Result<()> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(command)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("cannot run sh -c {command:?}"))?;
    if !out.status.success() {
        let mut msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if msg.is_empty() {
            msg = String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        bail!("`{command}` exited with {}: {msg}", out.status);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_file_round_trips_its_port() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("up.conf");
        let r = Route {
            app: "team/web.app",
            env: "production",
            colour: "green",
            port: 41234,
            digest: "sha256:ab",
        };
        assert!(upstream_conf(&r).contains("upstream team_web_app_production {"));
        write_atomic(&f, upstream_conf(&r).as_bytes()).unwrap();
        let s = Switch::Nginx {
            upstream: f,
            reload: "true".into(),
        };
        assert_eq!(s.current_port(), Some(41234));
    }
}
