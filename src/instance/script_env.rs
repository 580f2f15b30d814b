//! The BBR variables each script kind gets, and nothing else (docs/behaviour.md, "Running a script").

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::contract::{
    ENV_AFTER_BACKUP_SCRIPTS_SUCCESSFUL, ENV_ARTIFACT_DIRECTORY, ENV_BBR_VERSION,
    ENV_LEGACY_ARTIFACT_DIRECTORY, ScriptKind,
};

/// The BBR variables for `kind`. The artifact directory is passed with a trailing slash, as
/// BBR passes it; scripts concatenate file names onto it. Its bytes are the path's, UTF-8 or
/// not.
pub fn script_env(
    kind: ScriptKind,
    artifact_dir: &Path,
    bbr_version: &str,
    after_backup_successful: bool,
) -> Vec<(String, OsString)> {
    let with_slash = || {
        let mut dir = artifact_dir.as_os_str().to_owned();
        if !dir.as_bytes().ends_with(b"/") {
            dir.push("/");
        }
        dir
    };
    match kind {
        ScriptKind::Backup | ScriptKind::Restore => vec![
            (ENV_ARTIFACT_DIRECTORY.to_string(), with_slash()),
            (ENV_LEGACY_ARTIFACT_DIRECTORY.to_string(), with_slash()),
        ],
        ScriptKind::Metadata => vec![(ENV_BBR_VERSION.to_string(), bbr_version.into())],
        ScriptKind::PostBackupUnlock => vec![(
            ENV_AFTER_BACKUP_SCRIPTS_SUCCESSFUL.to_string(),
            after_backup_successful.to_string().into(),
        )],
        ScriptKind::PreBackupLock | ScriptKind::PreRestoreLock | ScriptKind::PostRestoreUnlock => {
            Vec::new()
        }
    }
}
