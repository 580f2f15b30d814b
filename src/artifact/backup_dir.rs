//! The operator-side artifact, byte-compatible with BBR's: a directory
//! `<deployment>_<UTC timestamp>` (mode 0700) holding one `<group>-<index>-<job>.tar` per job
//! and a YAML `metadata` file with every file's checksum. `finish_time` is written last and
//! only for a complete backup, so an artifact without it is never taken for a good one.
//! This module owns the metadata's shape and the names in the directory; where the directory
//! is kept, and how it is written and read, is `crate::storage`'s and
//! [`super::stored_backup`]'s.

use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::checksums::Checksums;
use super::metadata_keys;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupMetadata {
    /// BBR leaves it out when no instance has a plain artifact.
    #[serde(default)]
    pub instances: Vec<InstanceArtifacts>,
    /// BBR's named artifacts (`<name>.tar`): today a `bbr.backup_one_restore_all` job's one
    /// artifact; of old, the discontinued `backup_name`'s.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom_artifacts: Vec<ArtifactChecksums>,
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
    #[error("cannot read {path}: {source} (is this a BBR artifact directory?)")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is not valid BBR metadata: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("{path} {why}")]
    NotABackup { path: PathBuf, why: String },
}

/// Backups a folder of backups is looked at for, at most.
pub(crate) const LOOK_AT_MOST: usize = 10_000;

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
