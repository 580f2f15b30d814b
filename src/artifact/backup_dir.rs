//! The operator-side artifact, byte-compatible with BBR's: a directory
//! `<deployment>_<UTC timestamp>` (mode 0700) holding one `<group>-<index>-<job>.tar` per job
//! and a YAML `metadata` file with every file's checksum. `finish_time` is written last and
//! only for a complete backup, so an artifact without it is never taken for a good one.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::checksums::Checksums;
use super::metadata_keys;
use crate::contract::METADATA_FILE;
use crate::timestamp::Utc;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupMetadata {
    /// BBR leaves it out when no instance has a plain artifact.
    #[serde(default)]
    pub instances: Vec<InstanceArtifacts>,
    /// BBR's named artifacts (`<name>.tar`): today a `bbr.backup_one_restore_all` job's one
    /// artifact; of old, the discontinued `backup_name`'s.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom_artifacts: Vec<ArtifactChecksums>,
    /// bbr-agent's own record of how the tars are stored (compressed, encrypted); absent from
    /// a plain backup, whose metadata is then BBR's byte for byte. Before `backup_activity`,
    /// so `finish_time` stays the metadata's last line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bbr_agent: Option<super::codec::Record>,
    pub backup_activity: BackupActivity,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstanceArtifacts {
    /// The instance group.
    pub name: String,
    /// The BOSH index, as a string.
    pub index: String,
    #[serde(default)]
    pub artifacts: Vec<ArtifactChecksums>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ArtifactChecksums {
    /// The job.
    pub name: String,
    #[serde(default, deserialize_with = "metadata_keys::unique_keys")]
    pub checksums: Checksums,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupActivity {
    pub start_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupDirError {
    #[error("cannot create the artifact directory {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error(
        "--artifact-path {parent} is not an existing directory: make it first (mkdir -p), or give one that exists"
    )]
    NoParent { parent: PathBuf },
    #[error(
        "{path} already exists (a backup of this deployment started in the same second?): run the backup again"
    )]
    Exists { path: PathBuf },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot read {path}: {source} (is this a BBR artifact directory?)")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is not valid BBR metadata: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("{path} {why}")]
    NotABackup { path: PathBuf, why: String },
}

/// Entries of a directory looked at for backups it holds, at most.
const LOOK_AT_MOST: usize = 10_000;

/// Why `dir`, which has no metadata file, is not a backup, and what to give instead: it does
/// not exist, is a file, or holds backups (the parent a backup was made in, a usual slip).
fn not_a_backup(dir: &Path) -> BackupDirError {
    let is_backup = |p: &Path| p.join(METADATA_FILE).is_file();
    let why = match fs::metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            "does not exist: give --artifact-path the backup's own directory, `<deployment>_<timestamp>`"
                .to_string()
        }
        Ok(m) if !m.is_dir() => {
            "is not a directory: give --artifact-path the backup's own directory, `<deployment>_<timestamp>`"
                .to_string()
        }
        _ => {
            let mut held: Vec<String> = fs::read_dir(dir)
                .into_iter()
                .flatten()
                .take(LOOK_AT_MOST)
                .filter_map(|e| e.ok())
                .filter(|e| is_backup(&e.path()))
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| !n.chars().any(char::is_control))
                .collect();
            // Only backups that completed can be restored: offer those, newest first by the
            // `_<timestamp>` BBR ends their names with (not by the deployment's name).
            let all = held.len();
            held.retain(|n| completed(&dir.join(n)));
            let stamp = |n: &String| n.rsplit_once('_').map(|(_, t)| t.to_string());
            held.sort_by_key(|n| std::cmp::Reverse((stamp(n), n.clone())));
            let incomplete = match all - held.len() {
                0 => String::new(),
                1 => "; 1 other did not complete and cannot be restored".to_string(),
                n => format!("; {n} others did not complete and cannot be restored"),
            };
            match held.len() {
                0 if all > 0 => format!(
                    "is not a backup, and the {all} it holds did not complete (their metadata has no finish_time): none can be restored"
                ),
                0 => "holds no `metadata` file, so it is not a BBR backup (a backup's directory holds `metadata` and one tar per job): give --artifact-path the backup's own directory, `<deployment>_<timestamp>`".to_string(),
                1 => format!(
                    "is not a backup but holds one: give --artifact-path {}{incomplete}",
                    dir.join(&held[0]).display()
                ),
                n => {
                    let latest: Vec<&str> = held.iter().take(3).map(String::as_str).collect();
                    format!(
                        "is not a backup but holds {n} complete backups: give --artifact-path one of them, such as {} (the newest; also {}{}){incomplete}",
                        dir.join(latest[0]).display(),
                        latest[1..].join(", "),
                        if n > 3 { ", ..." } else { "" }
                    )
                }
            }
        }
    };
    BackupDirError::NotABackup {
        path: dir.to_path_buf(),
        why,
    }
}

/// Whether the backup in `dir` completed: its metadata ends with a `finish_time` (written
/// last, by BBR and by us). Only the metadata's last 4 KiB are read, however long it is.
fn completed(dir: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = fs::File::open(dir.join(METADATA_FILE)) else {
        return false;
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut tail = Vec::new();
    file.seek(SeekFrom::Start(len.saturating_sub(4096)))
        .and_then(|_| file.take(4096).read_to_end(&mut tail))
        .is_ok_and(|_| {
            String::from_utf8_lossy(&tail)
                .lines()
                .any(|l| l.trim_start().starts_with("finish_time:"))
        })
}

/// The longest deployment name whose `<deployment>_<timestamp>` is one file name.
pub const DEPLOYMENT_NAME_MAX: usize = super::plain_name::NAME_MAX - "_YYYYMMDDTHHMMSSZ".len();

/// `<group>-<index>-<job>.tar`, as BBR names a job's tar.
pub fn tar_file_name(group: &str, index: &str, job: &str) -> String {
    format!("{group}-{index}-{job}.tar")
}

/// `<name>.tar`, as BBR names a named (custom) artifact's tar.
pub fn custom_tar_file_name(name: &str) -> String {
    format!("{name}.tar")
}

/// One artifact directory on the operator's side.
#[derive(Debug, Clone)]
pub struct BackupDir {
    pub path: PathBuf,
}

impl BackupDir {
    /// Makes `<parent>/<deployment>_<timestamp>` with mode 0700.
    pub fn create(
        parent: &Path,
        deployment: &str,
        started: Utc,
    ) -> Result<BackupDir, BackupDirError> {
        let path = parent.join(format!("{deployment}_{}", started.compact()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|source| match source.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => {
                    BackupDirError::NoParent {
                        parent: parent.to_path_buf(),
                    }
                }
                io::ErrorKind::AlreadyExists => BackupDirError::Exists { path: path.clone() },
                _ => BackupDirError::Create {
                    path: path.clone(),
                    source,
                },
            })?;
        Ok(BackupDir { path })
    }

    pub fn open(path: &Path) -> BackupDir {
        BackupDir {
            path: path.to_path_buf(),
        }
    }

    /// `<group>-<index>-<job>.tar`; each name was checked by [`super::plain_name`].
    pub fn tar_path(&self, group: &str, index: &str, job: &str) -> PathBuf {
        self.path.join(tar_file_name(group, index, job))
    }

    /// `<name>.tar` of a named artifact; the name was checked by [`super::plain_name`].
    pub fn custom_tar_path(&self, name: &str) -> PathBuf {
        self.path.join(custom_tar_file_name(name))
    }

    pub fn metadata_path(&self) -> PathBuf {
        self.path.join(METADATA_FILE)
    }

    pub fn read_metadata(&self) -> Result<BackupMetadata, BackupDirError> {
        let path = self.metadata_path();
        let text = fs::read_to_string(&path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => not_a_backup(&self.path),
            _ => BackupDirError::Read {
                path: path.clone(),
                source,
            },
        })?;
        let mut metadata: BackupMetadata =
            serde_yaml::from_str(&text).map_err(|e| BackupDirError::Parse {
                path: path.clone(),
                detail: e.to_string(),
            })?;
        metadata_keys::read_keys(&mut metadata)
            .map_err(|detail| BackupDirError::Parse { path, detail })?;
        Ok(metadata)
    }

    /// Makes the directory's entries (the tars' names) durable; each tar's data was synced
    /// when it was drained. The metadata, written after this, is what makes the backup a
    /// backup.
    pub fn sync(&self) -> Result<(), BackupDirError> {
        let write_err = |source| BackupDirError::Write {
            path: self.path.clone(),
            source,
        };
        fs::File::open(&self.path)
            .and_then(|dir| dir.sync_all())
            .map_err(write_err)
    }

    /// Writes the metadata whole or not at all: a temporary file, synced, then renamed. It is
    /// 0644 as BBR's is (the directory, 0700, is what keeps others out).
    pub fn write_metadata(&self, metadata: &BackupMetadata) -> Result<(), BackupDirError> {
        let path = self.metadata_path();
        let write_err = |source| BackupDirError::Write {
            path: path.clone(),
            source,
        };
        let yaml = metadata_keys::to_yaml(metadata).map_err(|e| write_err(io::Error::other(e)))?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.path).map_err(write_err)?;
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(write_err)?;
        tmp.write_all(yaml.as_bytes()).map_err(write_err)?;
        tmp.as_file().sync_all().map_err(write_err)?;
        tmp.persist(&path).map_err(|e| write_err(e.error))?;
        Ok(())
    }
}
