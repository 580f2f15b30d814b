//! Reads a job's artifact tar: every entry is checked before it is trusted, every regular
//! file hashed, and, when extracting, written below the destination and nowhere else.
//!
//! Refused: names with `..` or an absolute path, links leading outside the job's directory,
//! hard links to anything but an earlier file, entries below a symlink, names that appear
//! twice, and devices, fifos and other special files. Symlinks are made last, after every
//! file, so nothing is ever written through one.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use tar::EntryType;

use super::checksums::{Checksums, hex};
use super::entry_path::{EntryPath, check_entry, check_symlink_target, resolves_inside};

#[derive(Debug, thiserror::Error)]
pub enum TarReadError {
    #[error("entry '{entry}' is refused: {why}")]
    Refused { entry: String, why: String },
    #[error("cannot read the artifact stream: {0}")]
    Read(io::Error),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// Reads the tar in `input`; with `extract_to`, writes it below that (existing) directory.
/// Returns the manifest of its regular files.
pub fn read_tar(input: impl Read, extract_to: Option<&Path>) -> Result<Checksums, TarReadError> {
    let mut archive = tar::Archive::new(input);
    let mut reader = Reader {
        dest: extract_to,
        checksums: Checksums::new(),
        seen: BTreeSet::new(),
        files: BTreeMap::new(),
        symlinks: Vec::new(),
        dir_modes: Vec::new(),
        // 256 KiB: a fleet drains many artifacts at once, each with its own reader.
        buf: vec![0u8; 256 * 1024],
    };
    for entry in archive.entries().map_err(TarReadError::Read)? {
        let entry = entry.map_err(TarReadError::Read)?;
        reader.entry(entry)?;
    }
    reader.finish()
}

type Owner = Option<(u64, u64)>;

struct Reader<'a> {
    dest: Option<&'a Path>,
    checksums: Checksums,
    seen: BTreeSet<PathBuf>,
    /// Regular files so far, by relative path, with their digest (for hard links).
    files: BTreeMap<PathBuf, String>,
    /// Symlinks to make once every file exists: where, to what, owned by whom.
    symlinks: Vec<(EntryPath, PathBuf, Owner)>,
    dir_modes: Vec<(PathBuf, u32)>,
    buf: Vec<u8>,
}

fn refused(entry: &str, why: impl Into<String>) -> TarReadError {
    TarReadError::Refused {
        entry: entry.to_string(),
        why: why.into(),
    }
}

impl Reader<'_> {
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), TarReadError> {
        let raw_name = entry.path().map_err(TarReadError::Read)?.into_owned();
        let shown = raw_name.display().to_string();
        let path = check_entry(&raw_name).map_err(|why| refused(&shown, why))?;
        if !path.is_root() && !self.seen.insert(path.relative.clone()) {
            return Err(refused(
                &shown,
                "the same name appears twice in the archive",
            ));
        }
        let below_link = self.symlinks.iter().find(|(l, _, _)| {
            path.relative.starts_with(&l.relative) && l.relative != path.relative
        });
        if let Some((link, _, _)) = below_link {
            return Err(refused(
                &shown,
                format!("it lies below the symlink {}", link.key),
            ));
        }
        let header = entry.header();
        let mode = header.mode().map_err(TarReadError::Read)? & 0o777;
        let owner = match (header.uid(), header.gid()) {
            (Ok(u), Ok(g)) => Some((u, g)),
            _ => None,
        };
        let mtime = header.mtime().ok();
        match header.entry_type() {
            EntryType::Directory => {
                if let Some(dest) = self.dest {
                    let target = dest.join(&path.relative);
                    fs::create_dir_all(&target).map_err(|source| TarReadError::Write {
                        path: target.clone(),
                        source,
                    })?;
                    chown_if_root(&target, owner, false);
                    self.dir_modes.push((target, mode));
                }
            }
            EntryType::Regular | EntryType::Continuous => {
                let digest = self.file(&mut entry, &path, mode, owner, mtime)?;
                self.files.insert(path.relative.clone(), digest.clone());
                self.checksums.insert(path.key, digest);
            }
            EntryType::Link => {
                let target_name = entry
                    .link_name()
                    .map_err(TarReadError::Read)?
                    .ok_or_else(|| refused(&shown, "it is a hard link without a target"))?;
                let target = check_entry(&target_name).map_err(|why| {
                    refused(
                        &shown,
                        format!("it is a hard link whose target is refused: {why}"),
                    )
                })?;
                let digest = self.files.get(&target.relative).cloned().ok_or_else(|| {
                    refused(
                        &shown,
                        "it is a hard link to something that is not an earlier file in the archive",
                    )
                })?;
                if let Some(dest) = self.dest {
                    let at = dest.join(&path.relative);
                    fs::hard_link(dest.join(&target.relative), &at)
                        .map_err(|source| TarReadError::Write { path: at, source })?;
                }
                self.files.insert(path.relative.clone(), digest.clone());
                self.checksums.insert(path.key, digest);
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(TarReadError::Read)?
                    .ok_or_else(|| refused(&shown, "it is a symlink without a target"))?
                    .into_owned();
                check_symlink_target(&path, &target).map_err(|why| refused(&shown, why))?;
                if self
                    .files
                    .keys()
                    .any(|f| f.starts_with(&path.relative) && *f != path.relative)
                {
                    return Err(refused(
                        &shown,
                        "it is a symlink over a directory of earlier entries",
                    ));
                }
                self.symlinks.push((path, target, owner));
            }
            other => {
                return Err(refused(
                    &shown,
                    format!(
                        "it is a special file ({other:?}); artifacts hold files, directories and links only"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: &EntryPath,
        mode: u32,
        owner: Option<(u64, u64)>,
        mtime: Option<u64>,
    ) -> Result<String, TarReadError> {
        let shown = &path.key;
        if path.is_root() {
            return Err(refused(shown, "a file cannot be the archive's root"));
        }
        let mut out = match self.dest {
            Some(dest) => {
                let target = dest.join(&path.relative);
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&target)
                    .map_err(|source| TarReadError::Write {
                        path: target.clone(),
                        source,
                    })?;
                Some((file, target))
            }
            None => None,
        };
        let mut hasher = Sha256::new();
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(TarReadError::Read(e)),
            };
            hasher.update(&self.buf[..n]);
            if let Some((file, target)) = out.as_mut() {
                file.write_all(&self.buf[..n])
                    .map_err(|source| TarReadError::Write {
                        path: target.clone(),
                        source,
                    })?;
            }
        }
        if let Some((file, target)) = out {
            let write_err = |source| TarReadError::Write {
                path: target.clone(),
                source,
            };
            file.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(write_err)?;
            if let Some(secs) = mtime {
                let _ = file.set_modified(UNIX_EPOCH + Duration::from_secs(secs));
            }
            chown_if_root(&target, owner, false);
            // Not synced: a restored store is scratch (see LocalInstance::receive_artifact).
        }
        Ok(hex(&hasher.finalize()))
    }

    fn finish(mut self) -> Result<Checksums, TarReadError> {
        let links: BTreeMap<PathBuf, PathBuf> = self
            .symlinks
            .iter()
            .map(|(p, t, _)| (p.relative.clone(), t.clone()))
            .collect();
        for (path, target, _) in &self.symlinks {
            if !resolves_inside(&links, &path.relative, target) {
                return Err(refused(
                    &path.key,
                    "it is a symlink that, through the archive's other symlinks, leads outside the job's directory",
                ));
            }
        }
        if let Some(dest) = self.dest {
            for (path, target, owner) in &self.symlinks {
                let at = dest.join(&path.relative);
                std::os::unix::fs::symlink(target, &at).map_err(|source| TarReadError::Write {
                    path: at.clone(),
                    source,
                })?;
                chown_if_root(&at, *owner, true);
            }
            // Deepest first, so a read-only directory is closed only after its contents exist.
            self.dir_modes
                .sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
            for (dir, mode) in &self.dir_modes {
                fs::set_permissions(dir, fs::Permissions::from_mode(*mode)).map_err(|source| {
                    TarReadError::Write {
                        path: dir.clone(),
                        source,
                    }
                })?;
            }
        }
        Ok(self.checksums)
    }
}

/// As root, files get the archive's owners back, as `sudo tar -x` gives them.
fn chown_if_root(path: &Path, owner: Option<(u64, u64)>, is_link: bool) {
    let Some((uid, gid)) = owner else { return };
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let (uid, gid) = (Some(uid as u32), Some(gid as u32));
    let _ = if is_link {
        std::os::unix::fs::lchown(path, uid, gid)
    } else {
        std::os::unix::fs::chown(path, uid, gid)
    };
}
