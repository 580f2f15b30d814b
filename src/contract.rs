//! The BBR contract as constants: script names, environment variables, store layout,
//! legacy job names and the exit-code bits of a deployment command.
//!
//! Everything here is a fact about how BOSH Backup and Restore behaves (DESIGN sections 1-4);
//! release authors have written scripts against it, so nothing here is ours to change.

use std::fmt;
use std::str::FromStr;

/// The BBR version whose contract we implement, handed to `metadata` scripts as `BBR_VERSION`.
/// Scripts compare it with BBR's own release numbers, so it is BBR's, not the agent's, version.
pub const DEFAULT_BBR_VERSION: &str = "1.9.73";

/// Jobs BBR skips by name, whatever scripts they hold.
pub const LEGACY_SKIPPED_JOBS: [&str; 2] = ["mysql-backup", "mysql-restore"];

pub const ENV_ARTIFACT_DIRECTORY: &str = "BBR_ARTIFACT_DIRECTORY";
pub const ENV_LEGACY_ARTIFACT_DIRECTORY: &str = "ARTIFACT_DIRECTORY";
pub const ENV_BBR_VERSION: &str = "BBR_VERSION";
pub const ENV_AFTER_BACKUP_SCRIPTS_SUCCESSFUL: &str = "BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL";

/// The one file name of the operator-side artifact that is not a tar.
pub const METADATA_FILE: &str = "metadata";

/// The seven scripts BBR looks for in `<job>/bin/bbr/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScriptKind {
    Metadata,
    PreBackupLock,
    Backup,
    PostBackupUnlock,
    PreRestoreLock,
    Restore,
    PostRestoreUnlock,
}

impl ScriptKind {
    pub const ALL: [ScriptKind; 7] = [
        ScriptKind::Metadata,
        ScriptKind::PreBackupLock,
        ScriptKind::Backup,
        ScriptKind::PostBackupUnlock,
        ScriptKind::PreRestoreLock,
        ScriptKind::Restore,
        ScriptKind::PostRestoreUnlock,
    ];

    /// The file name under `bin/bbr/`.
    pub fn file_name(self) -> &'static str {
        match self {
            ScriptKind::Metadata => "metadata",
            ScriptKind::PreBackupLock => "pre-backup-lock",
            ScriptKind::Backup => "backup",
            ScriptKind::PostBackupUnlock => "post-backup-unlock",
            ScriptKind::PreRestoreLock => "pre-restore-lock",
            ScriptKind::Restore => "restore",
            ScriptKind::PostRestoreUnlock => "post-restore-unlock",
        }
    }

    pub fn from_file_name(name: &str) -> Option<ScriptKind> {
        ScriptKind::ALL.into_iter().find(|k| k.file_name() == name)
    }

    /// Whether the script is handed the job's artifact directory.
    pub fn uses_artifact_directory(self) -> bool {
        matches!(self, ScriptKind::Backup | ScriptKind::Restore)
    }

    /// The unlock scripts: they always run, even after an interruption.
    pub fn is_unlock(self) -> bool {
        matches!(
            self,
            ScriptKind::PostBackupUnlock | ScriptKind::PostRestoreUnlock
        )
    }

    /// The lock an unlock script releases: `pre-backup-lock` for `post-backup-unlock`, and so on.
    pub fn lock_it_releases(self) -> Option<ScriptKind> {
        match self {
            ScriptKind::PostBackupUnlock => Some(ScriptKind::PreBackupLock),
            ScriptKind::PostRestoreUnlock => Some(ScriptKind::PreRestoreLock),
            _ => None,
        }
    }

    /// The unlock script that releases a lock script's lock.
    pub fn unlock_releasing(self) -> Option<ScriptKind> {
        match self {
            ScriptKind::PreBackupLock => Some(ScriptKind::PostBackupUnlock),
            ScriptKind::PreRestoreLock => Some(ScriptKind::PostRestoreUnlock),
            _ => None,
        }
    }

    /// Lock and unlock scripts: the ones whose timeout defaults differ from data-moving ones.
    pub fn is_lock_or_unlock(self) -> bool {
        matches!(
            self,
            ScriptKind::PreBackupLock
                | ScriptKind::PostBackupUnlock
                | ScriptKind::PreRestoreLock
                | ScriptKind::PostRestoreUnlock
        )
    }
}

impl fmt::Display for ScriptKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.file_name())
    }
}

impl FromStr for ScriptKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ScriptKind::from_file_name(s).ok_or_else(|| {
            let names: Vec<&str> = ScriptKind::ALL.iter().map(|k| k.file_name()).collect();
            format!("unknown script '{s}': expected one of {}", names.join(", "))
        })
    }
}

impl serde::Serialize for ScriptKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.file_name())
    }
}

impl<'de> serde::Deserialize<'de> for ScriptKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// Exit-code bits of a workflow, OR-ed together as BBR does. 2 stays free for usage errors.
pub mod exit_bits {
    pub const GENERAL: i32 = 1;
    pub const LOCK: i32 = 4;
    pub const UNLOCK: i32 = 8;
    pub const CLEANUP: i32 = 16;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_names_round_trip_and_unknown_names_are_rejected() {
        for kind in ScriptKind::ALL {
            assert_eq!(kind.file_name().parse::<ScriptKind>(), Ok(kind));
        }
        let err = "pre-backup".parse::<ScriptKind>().unwrap_err();
        assert!(err.contains("pre-backup-lock"), "{err}");
    }
}
