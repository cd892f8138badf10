//! Git, as a subprocess: the commit a build names, its git-stable tag, and the
//! refusal to build from a dirty tree.

use super::records::GitInfo;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run git (is it installed?)")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!(
            "git {} failed in {}: {}",
            args.join(" "),
            dir.display(),
            err.lines().next().unwrap_or("").trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[derive(Debug, Clone)]
pub struct Commit {
    pub hash: String,
    pub committer_time: i64,
    pub author: String,
}

impl Commit {
    /// `{YYYYMMDD-HHMM}-{7 hex}` from the committer time in UTC.
    pub fn stamp(&self) -> Result<String> {
        let t = OffsetDateTime::from_unix_timestamp(self.committer_time)?;
        let f = time::macros::format_description!("[year][month][day]-[hour][minute]");
        let short = self
            .hash
            .get(..7)
            .context("git printed a short commit hash")?;
        Ok(format!("{}-{short}", t.format(&f)?))
    }

    pub fn info(&self) -> GitInfo {
        GitInfo {
            commit: self.hash.clone(),
            author: Some(self.author.clone()),
            time: OffsetDateTime::from_unix_timestamp(self.committer_time)
                .ok()
                .and_then(|t| t.format(&Rfc3339).ok()),
        }
    }
}

fn git_toplevel(dir: &Path) -> Result<PathBuf> {
    if !dir.is_dir() {
        bail!("build context {} is not a directory", dir.display());
    }
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "--show-toplevel"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .context("cannot run git (is it installed?)")?;
    if !out.status.success() {
        bail!(
            "{} is not in a git repository: git-stable tags need a commit",
            dir.display()
        );
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn commit_at(dir: &Path, rev: &str) -> Result<Commit> {
    let out = git(
        dir,
        &[
            "log",
            "-1",
            "--no-show-signature",
            "--format=%H%x00%ct%x00%an <%ae>",
            rev,
        ],
    )?;
    let mut parts = out.trim_end_matches('\n').split('\0');
    let (Some(hash), Some(ct), Some(author)) = (parts.next(), parts.next(), parts.next()) else {
        bail!("unexpected git log output in {}", dir.display());
    };
    if !super::records::is_commit(hash) {
        bail!("unexpected commit hash from git in {}", dir.display());
    }
    Ok(Commit {
        hash: hash.to_string(),
        committer_time: ct
            .parse()
            .with_context(|| format!("unexpected committer time {ct:?} from git"))?,
        author: author.to_string(),
    })
}

/// Modified, staged and untracked (not ignored) files, as `git status --porcelain` shows them.
fn dirty_files(top: &Path) -> Result<Vec<String>> {
    Ok(
        git(top, &["status", "--porcelain=v1", "--untracked-files=all"])?
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.trim().to_string())
            .collect(),
    )
}

fn refuse_dirty(top: &Path) -> Result<()> {
    let dirty = dirty_files(top)?;
    if dirty.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = dirty.iter().take(20).map(String::as_str).collect();
    let more = if dirty.len() > shown.len() {
        format!(" and {} more", dirty.len() - shown.len())
    } else {
        String::new()
    };
    bail!(
        "refusing to build from a dirty git tree at {} (commit or stash first; the tag must name a commit): {}{more}",
        top.display(),
        shown.join(", ")
    )
}

/// The commit at HEAD of the repository holding `context`; a dirty tree is refused
/// unless `allow_dirty`.
pub fn head(context: &Path, allow_dirty: bool) -> Result<Commit> {
    let top = git_toplevel(context)?;
    if !allow_dirty {
        refuse_dirty(&top)?;
    }
    commit_at(&top, "HEAD")
}

/// Labels in an image config (`config.Labels`).
fn config_label(cfg: &[u8], label: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(cfg).ok()?;
    v.get("config")?
        .get("Labels")?
        .get(label)?
        .as_str()
        .map(str::to_string)
}

/// Git details for an image pushed without `build`: the commit from the image's
/// revision label or its git-stable tag, completed from the local repository if it
/// has that commit.
pub fn git_for(tag: &str, cfg: &[u8]) -> Option<GitInfo> {
    let rev = config_label(cfg, "org.opencontainers.image.revision")
        .filter(|r| super::records::is_commit(r))
        .or_else(|| super::records::stamp_commit(tag).map(str::to_string))?;
    match commit_at(Path::new("."), &format!("{rev}^{{commit}}")) {
        Ok(c) if c.hash.starts_with(&rev) => Some(c.info()),
        _ => Some(GitInfo {
            commit: rev,
            author: None,
            time: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps() {
        let c = Commit {
            hash: "f7a5a27d0c0ffee0000000000000000000000000".into(),
            committer_time: 1753132710, // 2025-07-21T21:18:30Z
            author: "a <a@x>".into(),
        };
        assert_eq!(c.stamp().unwrap(), "20250721-2118-f7a5a27");
    }
}
