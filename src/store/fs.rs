//! Local-directory driver: the same keys as files under a root directory, the
//! layout `registry:2`'s filesystem driver reads. Writes go to a temp file and are
//! renamed into place, so a reader never sees a partial object.

use super::{ObjectInfo, PartTag};
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};

#[derive(Debug)]
pub struct FsDriver {
    root: PathBuf,
}

/// Temp files live beside the layout, on the same filesystem so renames are atomic.
pub(crate) const TMP_DIR: &str = ".s3dock-tmp";

impl FsDriver {
    pub fn new(root: PathBuf) -> Self {
        FsDriver { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        let rel = Path::new(key);
        if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            bail!("refusing object key {key:?}: it is not a plain relative path");
        }
        Ok(self.root.join(rel))
    }

    fn temp_path(&self) -> Result<PathBuf> {
        let dir = self.root.join(TMP_DIR);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(dir.join(uuid::Uuid::new_v4().to_string()))
    }

    fn rename_into_place(&self, tmp: &Path, key: &str) -> Result<()> {
        let dst = self.path(key)?;
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::rename(tmp, &dst)
            .with_context(|| format!("cannot move {} to {}", tmp.display(), dst.display()))
    }

    pub async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let p = self.path(key)?;
        match tokio::fs::read(&p).await {
            Ok(v) => Ok(Some(v.into())),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", p.display())),
        }
    }

    pub async fn get_range(&self, key: &str, start: u64, len: usize) -> Result<Bytes> {
        let p = self.path(key)?;
        tokio::task::spawn_blocking(move || -> Result<Bytes> {
            let f =
                std::fs::File::open(&p).with_context(|| format!("cannot open {}", p.display()))?;
            let mut buf = vec![0u8; len];
            f.read_exact_at(&mut buf, start)
                .with_context(|| format!("cannot read {} at {start}", p.display()))?;
            Ok(buf.into())
        })
        .await?
    }

    pub async fn stat(&self, key: &str) -> Result<Option<u64>> {
        let p = self.path(key)?;
        match tokio::fs::metadata(&p).await {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot stat {}", p.display())),
        }
    }

    pub async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let tmp = self.temp_path()?;
        if let Err(e) = tokio::fs::write(&tmp, &data).await {
            let _ = std::fs::remove_file(&tmp);
            return Err(e).with_context(|| format!("cannot write {}", tmp.display()));
        }
        self.rename_into_place(&tmp, key)
    }

    /// Creates `key` only if it does not exist; false if it did. `link(2)` makes this atomic.
    pub async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool> {
        let tmp = self.temp_path()?;
        tokio::fs::write(&tmp, &data)
            .await
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        let dst = self.path(key)?;
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let res = std::fs::hard_link(&tmp, &dst);
        let _ = std::fs::remove_file(&tmp);
        match res {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e).with_context(|| format!("cannot create {}", dst.display())),
        }
    }

    /// The object and an etag (the sha256 of its content, which is what the
    /// conditional write below compares).
    pub async fn get_with_etag(&self, key: &str) -> Result<Option<(Bytes, String)>> {
        Ok(self.get(key).await?.map(|b| {
            let etag = crate::model::digest::Digest::of(&b).hex();
            (b, etag)
        }))
    }

    /// Replaces `key` only if its content still hashes to `etag`; false if it does not
    /// (or the key is gone). An exclusive `flock` on the key's directory makes the
    /// compare-and-rename atomic among writers (and leaves no lock files behind);
    /// readers see old or new content, as the rename is atomic.
    pub async fn put_if_match(&self, key: &str, data: Bytes, etag: &str) -> Result<bool> {
        let dst = self.path(key)?;
        let dir = dst
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.root.clone());
        let tmp = self.temp_path()?;
        let etag = etag.to_string();
        tokio::task::spawn_blocking(move || -> Result<bool> {
            use std::os::fd::AsRawFd;
            let lock = match std::fs::File::open(&dir) {
                Ok(f) => f,
                Err(e) if is_not_found(&e) => return Ok(false),
                Err(e) => return Err(e).with_context(|| format!("cannot open {}", dir.display())),
            };
            // SAFETY: flock on a descriptor we own; the lock goes when `lock` is closed.
            if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("cannot lock {}", dir.display()));
            }
            let current = match std::fs::read(&dst) {
                Ok(v) => Some(crate::model::digest::Digest::of(&v).hex()),
                Err(e) if is_not_found(&e) => None,
                Err(e) => return Err(e).with_context(|| format!("cannot read {}", dst.display())),
            };
            if current.as_deref() != Some(etag.as_str()) {
                return Ok(false);
            }
            std::fs::write(&tmp, &data)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            let moved = std::fs::rename(&tmp, &dst)
                .with_context(|| format!("cannot move {} to {}", tmp.display(), dst.display()));
            if moved.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            moved?;
            drop(lock);
            Ok(true)
        })
        .await?
    }

    /// A multipart upload here is a temp file written at part offsets; the id is its path.
    pub async fn create_upload(&self, _key: &str) -> Result<String> {
        let tmp = self.temp_path()?;
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        Ok(tmp.to_string_lossy().into_owned())
    }

    pub async fn upload_part(&self, id: &str, offset: u64, data: Bytes) -> Result<PartTag> {
        let path = PathBuf::from(id);
        let len = data.len();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let f = std::fs::OpenOptions::new().write(true).open(&path)?;
            f.write_all_at(&data, offset)
                .with_context(|| format!("cannot write {}", path.display()))
        })
        .await??;
        Ok(PartTag {
            etag: format!("{offset}+{len}"),
        })
    }

    pub async fn complete_upload(&self, key: &str, id: &str) -> Result<()> {
        self.rename_into_place(Path::new(id), key)
    }

    pub async fn abort_upload(&self, id: &str) -> Result<()> {
        match std::fs::remove_file(id) {
            Err(e) if !is_not_found(&e) => Err(e.into()),
            _ => Ok(()),
        }
    }

    pub async fn move_object(&self, from: &str, to: &str) -> Result<()> {
        self.rename_into_place(&self.path(from)?, to)
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        let p = self.path(key)?;
        match tokio::fs::remove_file(&p).await {
            Ok(()) => {
                // Drop now-empty parent dirs, as object stores have no directories.
                let mut dir = p.parent();
                while let Some(d) = dir {
                    if d == self.root || std::fs::remove_dir(d).is_err() {
                        break;
                    }
                    dir = d.parent();
                }
                Ok(())
            }
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot delete {}", p.display())),
        }
    }

    /// Every object under `prefix` (a key prefix ending in `/`), recursively.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let base = self.path(prefix.trim_end_matches('/'))?;
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let mut stack = vec![base];
            while let Some(dir) = stack.pop() {
                let rd = match std::fs::read_dir(&dir) {
                    Ok(rd) => rd,
                    Err(e) if is_not_found(&e) || e.raw_os_error() == Some(libc::ENOTDIR) => {
                        continue
                    }
                    Err(e) => {
                        return Err(e).with_context(|| format!("cannot list {}", dir.display()))
                    }
                };
                for ent in rd {
                    let ent = ent?;
                    let ft = ent.file_type()?;
                    if ft.is_dir() {
                        stack.push(ent.path());
                    } else if ft.is_file() {
                        let key = ent
                            .path()
                            .strip_prefix(&root)?
                            .to_string_lossy()
                            .into_owned();
                        out.push(ObjectInfo {
                            key,
                            size: ent.metadata()?.len(),
                        });
                    }
                }
            }
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await?
    }

    /// Names directly under `prefix` that have children (S3 common prefixes).
    pub async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>> {
        let base = self.path(prefix.trim_end_matches('/'))?;
        let mut out = Vec::new();
        match std::fs::read_dir(&base) {
            Ok(rd) => {
                for ent in rd {
                    let ent = ent?;
                    if ent.file_type()?.is_dir() {
                        out.push(ent.file_name().to_string_lossy().into_owned());
                    }
                }
            }
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e).with_context(|| format!("cannot list {}", base.display())),
        }
        out.sort();
        Ok(out)
    }
}

fn is_not_found(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}
