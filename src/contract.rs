//! The BBR contract as constants: script names, environment variables, store layout,
//! legacy job names and the exit-code bits of a deployment command.
//!
//! Everything here is a fact about how BOSH Backup and Restore behaves (docs/behaviour.md, from "Discovery" to "Exit codes");
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

    /// The side whose lock, data or unlock step this script is; none for `metadata`.
    pub fn side(self) -> Option<Side> {
        match self {
            ScriptKind::Metadata => None,
            ScriptKind::PreBackupLock | ScriptKind::Backup | ScriptKind::PostBackupUnlock => {
                Some(Side::Backup)
            }
            ScriptKind::PreRestoreLock | ScriptKind::Restore | ScriptKind::PostRestoreUnlock => {
                Some(Side::Restore)
            }
        }
    }

    /// Whether the script is handed the job's artifact directory.
    pub fn uses_artifact_directory(self) -> bool {
        self.side().is_some_and(|s| s.data() == self)
    }

    /// The lock scripts: what they lock, the journal records before they run.
    pub fn is_lock(self) -> bool {
        self.side().is_some_and(|s| s.lock() == self)
    }

    /// The unlock scripts: they always run, even after an interruption.
    pub fn is_unlock(self) -> bool {
        self.side().is_some_and(|s| s.unlock() == self)
    }

    /// The lock an unlock script releases: `pre-backup-lock` for `post-backup-unlock`, and so on.
    pub fn lock_it_releases(self) -> Option<ScriptKind> {
        self.side().filter(|_| self.is_unlock()).map(Side::lock)
    }

    /// The unlock script that releases a lock script's lock.
    pub fn unlock_releasing(self) -> Option<ScriptKind> {
        self.side().filter(|_| self.is_lock()).map(Side::unlock)
    }
}

/// A side of BBR's contract: the backup's three scripts or the restore's, and how BBR runs
/// them. Every rule that differs between the two sides is answered here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    Backup,
    Restore,
}

/// How the jobs of one step run: BBR runs a backup's scripts of a step all at once, and every
/// restore-side script one job at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    AllAtOnce,
    OneAtATime,
}

impl Mode {
    /// The protocol's `parallel` flag.
    pub fn from_parallel(parallel: bool) -> Mode {
        match parallel {
            true => Mode::AllAtOnce,
            false => Mode::OneAtATime,
        }
    }

    pub fn parallel(self) -> bool {
        self == Mode::AllAtOnce
    }
}

impl Side {
    pub const BOTH: [Side; 2] = [Side::Backup, Side::Restore];

    /// `backup` or `restore`: the workflow's name.
    pub fn name(self) -> &'static str {
        match self {
            Side::Backup => "backup",
            Side::Restore => "restore",
        }
    }

    pub fn lock(self) -> ScriptKind {
        match self {
            Side::Backup => ScriptKind::PreBackupLock,
            Side::Restore => ScriptKind::PreRestoreLock,
        }
    }

    /// The script that moves the data: `backup` or `restore`.
    pub fn data(self) -> ScriptKind {
        match self {
            Side::Backup => ScriptKind::Backup,
            Side::Restore => ScriptKind::Restore,
        }
    }

    pub fn unlock(self) -> ScriptKind {
        match self {
            Side::Backup => ScriptKind::PostBackupUnlock,
            Side::Restore => ScriptKind::PostRestoreUnlock,
        }
    }

    /// How the jobs of each of this side's steps run.
    pub fn mode(self) -> Mode {
        match self {
            Side::Backup => Mode::AllAtOnce,
            Side::Restore => Mode::OneAtATime,
        }
    }

    /// What the unlock scripts are told of the data step
    /// ([`ENV_AFTER_BACKUP_SCRIPTS_SUCCESSFUL`], backup side only): whether it succeeded.
    pub fn unlock_env(self, data_succeeded: bool) -> Option<bool> {
        match self {
            Side::Backup => Some(data_succeeded),
            Side::Restore => None,
        }
    }

    /// The command that cleans up after a run of this side.
    pub fn cleanup_command(self) -> &'static str {
        match self {
            Side::Backup => "backup-cleanup",
            Side::Restore => "restore-cleanup",
        }
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

    #[test]
    fn each_side_names_its_three_scripts_and_each_script_its_side() {
        for side in Side::BOTH {
            for kind in [side.lock(), side.data(), side.unlock()] {
                assert_eq!(kind.side(), Some(side), "{kind}");
            }
            assert_eq!(side.unlock().lock_it_releases(), Some(side.lock()));
            assert_eq!(side.lock().unlock_releasing(), Some(side.unlock()));
            assert!(side.data().uses_artifact_directory());
            assert!(side.lock().is_lock() && side.unlock().is_unlock());
            assert!(!side.data().is_lock() && !side.data().is_unlock());
        }
        assert_eq!(ScriptKind::Metadata.side(), None);
        assert_eq!(Side::Backup.mode(), Mode::AllAtOnce);
        assert_eq!(Side::Restore.mode(), Mode::OneAtATime);
        assert_eq!(Side::Backup.unlock_env(false), Some(false));
        assert_eq!(Side::Restore.unlock_env(true), None);
    }
}
