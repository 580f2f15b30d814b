//! Backups in a directory on this machine: the `--artifact-path` directory holds one
//! `<deployment>_<timestamp>` directory (mode 0700) per backup, BBR's layout.
//!
//! An object is written under a hidden temporary name in its directory and renamed to its key
//! only when it is complete and synced, so a run killed halfway leaves no file under a tar's
//! own name, only a `.bbr-agent-partial-*` file that [`Storage::abort_unfinished`] removes.
//! The metadata is written last, after the directory's entries are durable.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{ObjectInfo, ObjectWriter, Storage, StorageError};
use crate::artifact::writeback::WritebackFile;

/// What a temporary object's name starts with: hidden, and never a BBR artifact's name.
const PARTIAL: &str = ".bbr-agent-partial-";

/// Directories below the root that a listing descends into: a backup's own directory and
/// nothing deeper, as BBR's layout is flat.
const DEPTH: usize = 2;

pub(crate) struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    pub(crate) fn new(root: &Path) -> LocalStorage {
        LocalStorage {
            root: root.to_path_buf(),
        }
    }

    /// The path of `key`, refused when a part is empty, `.` or `..` (a key never leaves the
    /// root).
    fn path(&self, key: &str) -> Result<PathBuf, StorageError> {
        let key = key.trim_end_matches('/');
        if key
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
        {
            return Err(StorageError::Location(format!(
                "{}: not a key of a backup (empty, `.` or `..` part)",
                self.root.join(key).display()
            )));
        }
        Ok(self.root.join(key))
    }

    /// The file of `key`, opened to read.
    fn file(&self, key: &str) -> Result<File, StorageError> {
        let path = self.path(key)?;
        File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StorageError::NotFound {
                what: path.display().to_string(),
            },
            _ => Self::io("read", &path)(e),
        })
    }

    fn io(doing: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StorageError {
        let what = path.display().to_string();
        move |source| StorageError::Io {
            doing,
            what,
            source,
        }
    }
}

/// Makes `dir`'s entries durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Storage for LocalStorage {
    fn describe(&self, key: &str) -> String {
        self.root.join(key).display().to_string()
    }

    fn create_dir(&self, name: &str) -> Result<(), StorageError> {
        let path = self.path(name)?;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|source| match source.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => {
                    StorageError::Location(format!(
                        "--artifact-path {} is not an existing directory: make it first (mkdir -p), or give one that exists",
                        self.root.display()
                    ))
                }
                io::ErrorKind::AlreadyExists => StorageError::Exists {
                    what: path.display().to_string(),
                    hint: "a backup of this deployment started in the same second? run the backup again"
                        .to_string(),
                },
                _ => Self::io("create", &path)(source),
            })
    }

    fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
        let path = self.path(key)?;
        let dir = path.parent().unwrap_or(&self.root);
        let tmp = tempfile::Builder::new()
            .prefix(PARTIAL)
            .tempfile_in(dir)
            .map_err(Self::io("create", &path))?;
        // 0600 as it is made; 0644 as BBR's tars are once complete (the directory, 0700, keeps
        // others out).
        let file = tmp
            .as_file()
            .try_clone()
            .map_err(Self::io("create", &path))?;
        Ok(Box::new(LocalWriter {
            out: WritebackFile::new(file),
            tmp,
            path,
        }))
    }

    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StorageError> {
        let path = self.path(key)?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        let err = Self::io("write", &path);
        let write = || -> io::Result<()> {
            // What was written before (the tars' names) is durable before this makes it a
            // backup.
            sync_dir(&dir)?;
            let mut tmp = tempfile::Builder::new().prefix(PARTIAL).tempfile_in(&dir)?;
            tmp.as_file()
                .set_permissions(fs::Permissions::from_mode(0o644))?;
            tmp.write_all(bytes)?;
            tmp.as_file().sync_all()?;
            tmp.persist(&path).map_err(|e| e.error)?;
            sync_dir(&dir)
        };
        write().map_err(err)
    }

    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>, StorageError> {
        Ok(Box::new(self.file(key)?))
    }

    fn open_file(&self, key: &str) -> Option<Result<File, StorageError>> {
        Some(self.file(key))
    }

    fn size(&self, key: &str) -> Result<Option<u64>, StorageError> {
        let path = self.path(key)?;
        match fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(Self::io("read", &path)(e)),
        }
    }

    fn list(&self, prefix: &str, limit: usize) -> Result<Vec<ObjectInfo>, StorageError> {
        let mut found = Vec::new();
        walk(&self.root, "", prefix, DEPTH, limit, &mut found)?;
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    fn remove(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path(key)?;
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Self::io("remove", &path)(e)),
        }
        // A backup's directory is there to hold its objects, as a prefix is on S3: the last
        // one removed takes it along (a directory that still holds anything stays).
        if let Some(dir) = path.parent().filter(|d| *d != self.root) {
            let _ = fs::remove_dir(dir);
        }
        Ok(())
    }

    fn remove_dir(&self, name: &str) -> Result<(), StorageError> {
        let path = self.path(name)?;
        match fs::remove_dir(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => Err(StorageError::Io {
                doing: "remove",
                what: path.display().to_string(),
                source: io::Error::new(
                    e.kind(),
                    "it still holds entries that are not a backup's files (a sub-directory, or \
                     a name that is not UTF-8)",
                ),
            }),
            Err(e) => Err(Self::io("remove", &path)(e)),
        }
    }

    fn abort_unfinished_before(
        &self,
        prefix: &str,
        before: Option<SystemTime>,
    ) -> Result<usize, StorageError> {
        let mut partial = Vec::new();
        walk_partial(&self.root, "", prefix, DEPTH, &mut partial)?;
        let mut removed = 0;
        for (_, path) in &partial {
            // Its last write is when the writer was last seen alive.
            let old = |b: SystemTime| {
                fs::symlink_metadata(path)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t < b)
            };
            if before.is_some_and(|b| !old(b)) {
                continue;
            }
            match fs::remove_file(path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Self::io("remove", path)(e)),
            }
        }
        Ok(removed)
    }

    fn unfinished(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StorageError> {
        let mut partial = Vec::new();
        walk_partial(&self.root, "", prefix, DEPTH, &mut partial)?;
        let mut keys: Vec<String> = partial.into_iter().map(|(key, _)| key).collect();
        keys.sort();
        keys.truncate(limit);
        Ok(keys)
    }

    fn marks_a_start(&self) -> bool {
        true
    }

    fn remote(&self) -> bool {
        false
    }
}

/// Whether a listing of `prefix` may find something under `key` (a directory's key ends
/// with `/`).
fn may_hold(key: &str, prefix: &str) -> bool {
    key.starts_with(prefix) || prefix.starts_with(key)
}

/// The files under `dir` (whose key is `base`) whose keys start with `prefix`: plain files
/// only (no symlink is followed), names that are UTF-8, at most `limit` in all.
fn walk(
    dir: &Path,
    base: &str,
    prefix: &str,
    depth: usize,
    limit: usize,
    found: &mut Vec<ObjectInfo>,
) -> Result<(), StorageError> {
    for entry in read_dir(dir)? {
        if found.len() >= limit {
            return Ok(());
        }
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if name.starts_with(PARTIAL) {
            continue;
        }
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        let key = format!("{base}{name}");
        if meta.is_file() && key.starts_with(prefix) {
            found.push(ObjectInfo {
                key,
                size: meta.len(),
                modified: meta.modified().ok(),
            });
        } else if meta.is_dir() && depth > 1 && may_hold(&format!("{key}/"), prefix) {
            walk(
                &entry.path(),
                &format!("{key}/"),
                prefix,
                depth - 1,
                limit,
                found,
            )?;
        }
    }
    Ok(())
}

/// The temporary files an interrupted write left under `prefix`.
fn walk_partial(
    dir: &Path,
    base: &str,
    prefix: &str,
    depth: usize,
    found: &mut Vec<(String, PathBuf)>,
) -> Result<(), StorageError> {
    for entry in read_dir(dir)? {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        let key = format!("{base}{name}");
        if meta.is_file() && name.starts_with(PARTIAL) && key.starts_with(prefix) {
            found.push((key, entry.path()));
        } else if meta.is_dir() && depth > 1 && may_hold(&format!("{key}/"), prefix) {
            walk_partial(&entry.path(), &format!("{key}/"), prefix, depth - 1, found)?;
        }
    }
    Ok(())
}

/// `dir`'s entries; a directory that is not there holds nothing.
fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>, StorageError> {
    match fs::read_dir(dir) {
        Ok(entries) => Ok(entries.filter_map(Result::ok).collect()),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(Vec::new())
        }
        Err(e) => Err(LocalStorage::io("list", dir)(e)),
    }
}

/// An object being written under its temporary name.
struct LocalWriter {
    out: WritebackFile,
    /// Removed when dropped: an object not finished leaves nothing.
    tmp: tempfile::NamedTempFile,
    path: PathBuf,
}

impl Write for LocalWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl ObjectWriter for LocalWriter {
    fn is_local_file(&self) -> bool {
        true
    }

    fn finish(self: Box<Self>) -> Result<u64, StorageError> {
        let LocalWriter { out, tmp, path } = *self;
        let err = LocalStorage::io("write", &path);
        let keep = || -> io::Result<u64> {
            // Synced through its own descriptor, which is the one to report what went wrong
            // in its writeback (an I/O error, a full NFS quota).
            let file = out.into_file()?;
            file.sync_data()?;
            file.set_permissions(fs::Permissions::from_mode(0o644))?;
            let len = file.metadata()?.len();
            // Never over an object already there: a key is written once.
            tmp.persist_noclobber(&path).map_err(|e| e.error)?;
            Ok(len)
        };
        keep().map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(s: &LocalStorage, prefix: &str) -> Vec<String> {
        s.list(prefix, 100)
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect()
    }

    #[test]
    fn an_object_is_seen_under_its_key_only_once_finished() {
        let root = tempfile::tempdir().unwrap();
        let s = LocalStorage::new(root.path());
        s.create_dir("dep_1").unwrap();
        let mut w = s.create("dep_1/a.tar").unwrap();
        w.write_all(b"bytes").unwrap();
        assert_eq!(s.size("dep_1/a.tar").unwrap(), None);
        assert!(keys(&s, "").is_empty(), "a partial object is not listed");
        assert_eq!(w.finish().unwrap(), 5);
        assert_eq!(s.size("dep_1/a.tar").unwrap(), Some(5));
        let mode = fs::metadata(root.path().join("dep_1/a.tar"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
        let mut back = String::new();
        s.open("dep_1/a.tar")
            .unwrap()
            .read_to_string(&mut back)
            .unwrap();
        assert_eq!(back, "bytes");
    }

    #[test]
    fn an_aborted_or_dropped_writer_leaves_nothing_and_a_killed_one_is_cleaned_up() {
        let root = tempfile::tempdir().unwrap();
        let s = LocalStorage::new(root.path());
        s.create_dir("dep_1").unwrap();
        let mut w = s.create("dep_1/a.tar").unwrap();
        w.write_all(b"half").unwrap();
        drop(w);
        drop(s.create("dep_1/b.tar").unwrap());
        assert_eq!(fs::read_dir(root.path().join("dep_1")).unwrap().count(), 0);
        // What a SIGKILL leaves: the temporary file, which no drop removed.
        let w = s.create("dep_1/c.tar").unwrap();
        std::mem::forget(w);
        assert_eq!(s.abort_unfinished("dep_1/").unwrap(), 1);
        assert_eq!(fs::read_dir(root.path().join("dep_1")).unwrap().count(), 0);
    }

    #[test]
    fn listing_finds_backups_by_prefix_and_removing_the_last_object_removes_the_directory() {
        let root = tempfile::tempdir().unwrap();
        let s = LocalStorage::new(root.path());
        for dir in ["cf_1", "cf_2", "db_1"] {
            s.create_dir(dir).unwrap();
            s.put(&format!("{dir}/metadata"), b"m").unwrap();
        }
        std::os::unix::fs::symlink("/etc/passwd", root.path().join("cf_1/link")).unwrap();
        assert_eq!(keys(&s, "cf_"), ["cf_1/metadata", "cf_2/metadata"]);
        assert_eq!(keys(&s, "db_1/"), ["db_1/metadata"]);
        assert_eq!(s.list("", 2).unwrap().len(), 2, "the limit holds");
        s.remove("db_1/metadata").unwrap();
        s.remove("db_1/metadata").unwrap();
        assert!(!root.path().join("db_1").exists());
        assert!(s.path("cf_1/../x").is_err());
    }

    #[test]
    fn a_backup_directory_is_made_once_and_needs_its_parent() {
        let root = tempfile::tempdir().unwrap();
        let s = LocalStorage::new(root.path());
        s.create_dir("dep_1").unwrap();
        let mode = fs::metadata(root.path().join("dep_1"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(matches!(
            s.create_dir("dep_1"),
            Err(StorageError::Exists { .. })
        ));
        let missing = LocalStorage::new(&root.path().join("nope"));
        let e = missing.create_dir("dep_1").unwrap_err().to_string();
        assert!(e.contains("is not an existing directory"), "{e}");
    }
}
