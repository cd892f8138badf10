//! Local-directory driver: the same keys as files under a root directory, the
//! layout `registry:2`'s filesystem driver reads. Writes go to a temp file and are
//! renamed into place, so a reader never sees a partial object.
//!
//! The directory's content is untrusted (anyone who can write to it can plant
//! files): objects are opened without following symlinks and must be regular
//! files (a FIFO would block a reader forever, a device would never end), no
//! directory below the root may be a symlink (it would make listing walk the
//! host filesystem), and sizes are checked with fstat before reading.

use super::{ObjectInfo, PartTag, Precondition, StorageDriver, StoreError};
use async_trait::async_trait;
use bytes::Bytes;
use std::fs::{File, Metadata};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

#[derive(Debug)]
pub struct FsDriver {
    root: PathBuf,
}

/// Temp files live beside the layout, on the same filesystem so renames are atomic.
pub(crate) const TMP_DIR: &str = ".s3dock-tmp";

type Res<T> = Result<T, StoreError>;

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Res<T> + Send + 'static) -> Res<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Other(format!("file task failed: {e}")))?
}

/// What a non-regular file is, for the refusal message.
fn kind(m: &Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_symlink() {
        "a symlink"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a plain file"
    }
}

fn is_not_found(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

impl FsDriver {
    pub fn new(root: PathBuf) -> Self {
        FsDriver { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of `key`, after checking that no existing directory between the
    /// root and it is a symlink (the root itself may be one: users do that).
    fn path(&self, key: &str) -> Res<PathBuf> {
        let rel = Path::new(key.trim_end_matches('/'));
        if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(StoreError::Other(format!(
                "refusing object key {}: it is not a plain relative path",
                crate::model::text::excerpt(key.as_bytes())
            )));
        }
        let mut dir = self.root.clone();
        let mut parents = rel.components().peekable();
        while let Some(c) = parents.next() {
            if parents.peek().is_none() {
                break;
            }
            dir.push(c);
            match std::fs::symlink_metadata(&dir) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(StoreError::NotARegularFile {
                        key: format!("{} (in the path of {key})", self.key_of(&dir)),
                        what: "a symlinked directory",
                    })
                }
                Ok(_) => {}
                Err(e) if is_not_found(&e) => break,
                Err(e) => return Err(StoreError::io("inspect", &dir, e)),
            }
        }
        Ok(self.root.join(rel))
    }

    fn key_of(&self, p: &Path) -> String {
        p.strip_prefix(&self.root)
            .unwrap_or(p)
            .to_string_lossy()
            .into_owned()
    }

    /// A directory to walk: `path` plus the check that it is not itself a symlink.
    fn dir_path(&self, prefix: &str) -> Res<Option<PathBuf>> {
        let p = self.path(prefix)?;
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => Ok(Some(p)),
            Ok(m) if m.file_type().is_symlink() => Err(StoreError::NotARegularFile {
                key: prefix.to_string(),
                what: "a symlinked directory",
            }),
            Ok(_) => Ok(None),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(StoreError::io("inspect", &p, e)),
        }
    }

    /// Opens an object for reading: never through a symlink, never blocking (a FIFO
    /// opened without O_NONBLOCK waits for a writer), and only a regular file.
    fn open(&self, key: &str) -> Res<(File, u64)> {
        let p = self.path(key)?;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&p);
        let f = match f {
            Ok(f) => f,
            Err(e) if is_not_found(&e) => return Err(StoreError::NotFound(key.to_string())),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(StoreError::NotARegularFile {
                    key: key.to_string(),
                    what: "a symlink",
                })
            }
            Err(e) => return Err(StoreError::io("open", &p, e)),
        };
        let m = f.metadata().map_err(|e| StoreError::io("stat", &p, e))?;
        if !m.is_file() {
            return Err(StoreError::NotARegularFile {
                key: key.to_string(),
                what: kind(&m),
            });
        }
        Ok((f, m.len()))
    }

    /// Reads a whole object of at most `max` bytes, checked before reading (and
    /// while reading, should it grow meanwhile).
    fn read_all(&self, key: &str, max: u64) -> Res<Bytes> {
        let (f, size) = self.open(key)?;
        let too_large = |size| StoreError::TooLarge {
            key: key.to_string(),
            size,
            max,
        };
        if size > max {
            return Err(too_large(size));
        }
        let mut buf = Vec::with_capacity(size as usize);
        f.take(max.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|e| StoreError::io("read", &self.root.join(key), e))?;
        if buf.len() as u64 > max {
            return Err(too_large(buf.len() as u64));
        }
        Ok(buf.into())
    }

    fn temp_path(&self) -> Res<PathBuf> {
        let dir = self.root.join(TMP_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::io("create", &dir, e))?;
        Ok(dir.join(uuid::Uuid::new_v4().to_string()))
    }

    fn write_temp(&self, data: &[u8]) -> Res<PathBuf> {
        let tmp = self.temp_path()?;
        if let Err(e) = std::fs::write(&tmp, data) {
            let _ = std::fs::remove_file(&tmp);
            return Err(StoreError::io("write", &tmp, e));
        }
        Ok(tmp)
    }

    fn parent_of(&self, key: &str) -> Res<PathBuf> {
        let dst = self.path(key)?;
        let parent = dst.parent().unwrap_or(&self.root).to_path_buf();
        std::fs::create_dir_all(&parent).map_err(|e| StoreError::io("create", &parent, e))?;
        Ok(dst)
    }

    fn rename_into_place(&self, tmp: &Path, key: &str) -> Res<()> {
        let dst = self.parent_of(key)?;
        std::fs::rename(tmp, &dst).map_err(|e| {
            StoreError::Other(format!(
                "cannot move {} to {}: {e}",
                tmp.display(),
                dst.display()
            ))
        })
    }

    /// Creates `key` only if it does not exist. `link(2)` makes this atomic.
    fn create(&self, key: &str, data: &[u8]) -> Res<()> {
        let tmp = self.write_temp(data)?;
        let linked = self
            .parent_of(key)
            .and_then(|dst| match std::fs::hard_link(&tmp, &dst) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    Err(StoreError::PreconditionFailed(key.to_string()))
                }
                Err(e) => Err(StoreError::io("create", &dst, e)),
            });
        let _ = std::fs::remove_file(&tmp);
        linked
    }

    /// Replaces `key` only if its content still hashes to `etag`. An exclusive
    /// `flock` on the key's directory makes the compare-and-rename atomic among
    /// writers (and leaves no lock files behind); readers see old or new content,
    /// as the rename is atomic.
    fn replace(&self, key: &str, data: &[u8], etag: &str) -> Res<()> {
        use std::os::fd::AsRawFd;
        let dst = self.path(key)?;
        let dir = dst.parent().unwrap_or(&self.root).to_path_buf();
        let conflict = || StoreError::PreconditionFailed(key.to_string());
        let lock = match File::open(&dir) {
            Ok(f) => f,
            Err(e) if is_not_found(&e) => return Err(conflict()),
            Err(e) => return Err(StoreError::io("open", &dir, e)),
        };
        // SAFETY: flock on a descriptor we own; the lock goes when `lock` is closed.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(StoreError::io(
                "lock",
                &dir,
                std::io::Error::last_os_error(),
            ));
        }
        match self.read_all(key, u64::MAX) {
            Ok(cur) if etag_of(&cur) == etag => {}
            Ok(_) | Err(StoreError::NotFound(_)) => return Err(conflict()),
            Err(e) => return Err(e),
        }
        let tmp = self.write_temp(data)?;
        let moved = self.rename_into_place(&tmp, key);
        if moved.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        drop(lock);
        moved
    }

    /// Upload ids are the names of temp files in TMP_DIR: check one is, before using it.
    fn upload_path(&self, id: &str) -> Res<PathBuf> {
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(StoreError::Other(format!(
                "invalid upload id {}",
                crate::model::text::excerpt(id.as_bytes())
            )));
        }
        Ok(self.root.join(TMP_DIR).join(id))
    }
}

/// The directory store's etag: the sha256 of the content, which `replace` compares.
fn etag_of(data: &[u8]) -> String {
    crate::model::digest::Digest::of(data).hex()
}

#[async_trait]
impl StorageDriver for FsDriver {
    async fn get_with_etag(&self, key: &str, max: u64) -> Res<(Bytes, String)> {
        let me = self.clone_handle();
        let key = key.to_string();
        blocking(move || {
            let b = me.read_all(&key, max)?;
            let etag = etag_of(&b);
            Ok((b, etag))
        })
        .await
    }

    async fn get(&self, key: &str, max: u64) -> Res<Bytes> {
        let me = self.clone_handle();
        let key = key.to_string();
        blocking(move || me.read_all(&key, max)).await
    }

    async fn get_range(&self, key: &str, start: u64, len: usize) -> Res<Bytes> {
        let me = self.clone_handle();
        let key = key.to_string();
        blocking(move || {
            let (f, size) = me.open(&key)?;
            if start + len as u64 > size {
                return Err(StoreError::OutOfRange { key, start, len });
            }
            let mut buf = vec![0u8; len];
            f.read_exact_at(&mut buf, start)
                .map_err(|e| StoreError::Other(format!("cannot read {key} at {start}: {e}")))?;
            Ok(buf.into())
        })
        .await
    }

    async fn stat(&self, key: &str) -> Res<u64> {
        let p = self.path(key)?;
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_file() => Ok(m.len()),
            Ok(m) => Err(StoreError::NotARegularFile {
                key: key.to_string(),
                what: kind(&m),
            }),
            Err(e) if is_not_found(&e) => Err(StoreError::NotFound(key.to_string())),
            Err(e) => Err(StoreError::io("stat", &p, e)),
        }
    }

    async fn put(&self, key: &str, data: Bytes, cond: Precondition) -> Res<()> {
        let me = self.clone_handle();
        let key = key.to_string();
        blocking(move || match cond {
            Precondition::None => {
                let tmp = me.write_temp(&data)?;
                me.rename_into_place(&tmp, &key).inspect_err(|_| {
                    let _ = std::fs::remove_file(&tmp);
                })
            }
            Precondition::IfAbsent => me.create(&key, &data),
            Precondition::IfMatch(etag) => me.replace(&key, &data, &etag),
        })
        .await
    }

    async fn delete(&self, key: &str) -> Res<()> {
        let p = self.path(key)?;
        match std::fs::remove_file(&p) {
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
            Err(e) => Err(StoreError::io("delete", &p, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Res<Vec<ObjectInfo>> {
        let me = self.clone_handle();
        let prefix = prefix.to_string();
        blocking(move || {
            let mut out = Vec::new();
            let mut stack: Vec<PathBuf> = me.dir_path(&prefix)?.into_iter().collect();
            while let Some(dir) = stack.pop() {
                let rd = match std::fs::read_dir(&dir) {
                    Ok(rd) => rd,
                    Err(e) if is_not_found(&e) => continue,
                    Err(e) => return Err(StoreError::io("list", &dir, e)),
                };
                for ent in rd {
                    let ent = ent.map_err(|e| StoreError::io("list", &dir, e))?;
                    let m = ent
                        .metadata()
                        .map_err(|e| StoreError::io("stat", &ent.path(), e))?;
                    let key = me.key_of(&ent.path());
                    if m.is_dir() {
                        stack.push(ent.path());
                    } else if m.is_file() {
                        out.push(ObjectInfo {
                            key,
                            size: m.len(),
                            modified: m.modified().ok(),
                        });
                    } else {
                        return Err(StoreError::NotARegularFile {
                            key,
                            what: kind(&m),
                        });
                    }
                }
            }
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
    }

    async fn list_dirs(&self, prefix: &str) -> Res<Vec<String>> {
        let Some(base) = self.dir_path(prefix)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let rd = match std::fs::read_dir(&base) {
            Ok(rd) => rd,
            Err(e) if is_not_found(&e) => return Ok(out),
            Err(e) => return Err(StoreError::io("list", &base, e)),
        };
        for ent in rd {
            let ent = ent.map_err(|e| StoreError::io("list", &base, e))?;
            let ft = ent
                .file_type()
                .map_err(|e| StoreError::io("stat", &ent.path(), e))?;
            if ft.is_symlink() {
                return Err(StoreError::NotARegularFile {
                    key: self.key_of(&ent.path()),
                    what: "a symlink",
                });
            }
            if ft.is_dir() {
                out.push(ent.file_name().to_string_lossy().into_owned());
            }
        }
        out.sort();
        Ok(out)
    }

    async fn move_object(&self, from: &str, to: &str, _size: u64, _jobs: usize) -> Res<()> {
        self.rename_into_place(&self.path(from)?, to)
    }

    /// A multipart upload here is a temp file written at part offsets; the id is its name.
    async fn create_upload(&self, _key: &str) -> Res<String> {
        let tmp = self.temp_path()?;
        File::create(&tmp).map_err(|e| StoreError::io("create", &tmp, e))?;
        Ok(tmp
            .file_name()
            .expect("temp file name")
            .to_string_lossy()
            .into_owned())
    }

    /// The part's tag is where it was written ("offset+length"), which completing checks.
    async fn upload_part(
        &self,
        key: &str,
        id: &str,
        number: i32,
        part_size: u64,
        data: Bytes,
    ) -> Res<PartTag> {
        let path = self.upload_path(id)?;
        let offset = (number as u64 - 1) * part_size;
        let key = key.to_string();
        blocking(move || {
            let f = match std::fs::OpenOptions::new().write(true).open(&path) {
                Ok(f) => f,
                Err(e) if is_not_found(&e) => return Err(StoreError::UploadGone(key)),
                Err(e) => return Err(StoreError::io("open", &path, e)),
            };
            f.write_all_at(&data, offset)
                .map_err(|e| StoreError::io("write", &path, e))?;
            Ok(PartTag {
                etag: format!("{offset}+{}", data.len()),
            })
        })
        .await
    }

    /// Checks the parts cover the file exactly, in order, before moving it into place.
    async fn complete_upload(&self, key: &str, id: &str, parts: &[PartTag]) -> Res<()> {
        let path = self.upload_path(id)?;
        let size = match std::fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if is_not_found(&e) => return Err(StoreError::UploadGone(key.to_string())),
            Err(e) => return Err(StoreError::io("stat", &path, e)),
        };
        let mut end = 0u64;
        for p in parts {
            let (offset, len) = p
                .etag
                .split_once('+')
                .and_then(|(o, l)| Some((o.parse::<u64>().ok()?, l.parse::<u64>().ok()?)))
                .ok_or_else(|| StoreError::Other(format!("invalid part tag {:?}", p.etag)))?;
            if offset != end {
                return Err(StoreError::Other(format!(
                    "upload of {key}: part at {offset} does not follow the previous part (ends at {end})"
                )));
            }
            end += len;
        }
        if end != size {
            return Err(StoreError::Other(format!(
                "upload of {key}: the parts hold {end} bytes but the upload has {size}"
            )));
        }
        self.rename_into_place(&path, key)
    }

    async fn abort_upload(&self, _key: &str, id: &str) -> Res<()> {
        let path = self.upload_path(id)?;
        match std::fs::remove_file(&path) {
            Err(e) if !is_not_found(&e) => Err(StoreError::io("delete", &path, e)),
            _ => Ok(()),
        }
    }

    /// The driver's temp and part files (TMP_DIR) left by killed processes.
    async fn sweep_scratch(&self, cutoff: SystemTime, dry_run: bool) -> Res<(usize, u64)> {
        let dir = self.root.join(TMP_DIR);
        let (mut n, mut bytes) = (0, 0);
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return Ok((0, 0));
        };
        for e in rd.flatten() {
            let m = e
                .metadata()
                .map_err(|err| StoreError::io("stat", &e.path(), err))?;
            if m.is_file() && m.modified().is_ok_and(|t| t <= cutoff) {
                n += 1;
                bytes += m.len();
                if !dry_run {
                    std::fs::remove_file(e.path())
                        .map_err(|err| StoreError::io("delete", &e.path(), err))?;
                }
            }
        }
        Ok((n, bytes))
    }
}

impl FsDriver {
    /// A copy for blocking tasks (the driver is just its root path).
    fn clone_handle(&self) -> FsDriver {
        FsDriver {
            root: self.root.clone(),
        }
    }
}
