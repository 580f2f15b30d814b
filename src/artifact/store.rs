//! The VM-side artifact store, `/var/vcap/store/bbr-backup`: made for one run, removed after it.
//! A store that is already there is the leftover of a run that did not finish.

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::remove_tree::remove_tree;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the artifact store {path} already exists: it is left over from a run that did not finish; run `bbr-agent backup-cleanup` (or `restore-cleanup`) first"
    )]
    Leftover { path: PathBuf },
    #[error("cannot create {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot remove {path}: {source}")]
    Remove { path: PathBuf, source: io::Error },
}

#[derive(Debug, Clone)]
pub struct Store {
    path: PathBuf,
}

impl Store {
    pub fn new(path: &Path) -> Store {
        Store {
            path: path.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn exists(&self) -> bool {
        fs::symlink_metadata(&self.path).is_ok()
    }

    /// Makes the store for a new run; refuses a leftover one.
    pub fn create(&self) -> Result<(), StoreError> {
        if self.exists() {
            return Err(StoreError::Leftover {
                path: self.path.clone(),
            });
        }
        if let Some(parent) = self.path.parent() {
            fs::create_dir_all(parent).map_err(|source| StoreError::Create {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        // Artifacts may hold credentials or customer data: root only, as BBR's `sudo mkdir`.
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&self.path)
            .map_err(|source| match source.kind() {
                io::ErrorKind::AlreadyExists => StoreError::Leftover {
                    path: self.path.clone(),
                },
                _ => StoreError::Create {
                    path: self.path.clone(),
                    source,
                },
            })
    }

    /// The artifact directory of `job`, made if missing.
    pub fn job_dir(&self, job: &str) -> Result<PathBuf, StoreError> {
        let dir = self.path.join(job);
        fs::create_dir_all(&dir).map_err(|source| StoreError::Create {
            path: dir.clone(),
            source,
        })?;
        Ok(dir)
    }

    /// Removes the store and everything in it, on several threads; a missing store is fine.
    pub fn remove(&self) -> Result<(), StoreError> {
        match remove_tree(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StoreError::Remove {
                path: self.path.clone(),
                source: e,
            }),
            _ => Ok(()),
        }
    }
}
