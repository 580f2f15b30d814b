//! Whether a script may be run as root: it, and every directory from its job up to the jobs
//! root, must be owned by root and writable by nobody else, the rule OpenSSH applies with
//! StrictModes. The BOSH agent installs job files that way (0755, root), so anything else is a
//! sign of tampering, and nothing of that job runs.
//!
//! Checked only when the agent runs as root: an unprivileged agent can only run what its own
//! user could run anyway.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::discover::DiscoveredJob;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "job '{job}': refusing to run its scripts as root: {path} {why}; BOSH installs job files owned by root and writable only by root, so fix it (chown root, chmod go-w) or find out who changed it"
)]
pub struct Untrusted {
    pub job: String,
    pub path: PathBuf,
    pub why: String,
}

/// The checks for one jobs root. The root itself is judged once, not once per job.
#[derive(Debug)]
pub struct Trust {
    jobs_root: PathBuf,
    /// Whether the agent runs as root (the only case the rule applies to).
    enforced: bool,
    jobs_root_verdict: OnceLock<Result<(), String>>,
}

impl Trust {
    pub fn new(jobs_root: &Path) -> Trust {
        Trust {
            jobs_root: jobs_root.to_path_buf(),
            enforced: nix::unistd::geteuid().is_root(),
            jobs_root_verdict: OnceLock::new(),
        }
    }

    /// Checks every script of `job` and the directories above them up to the jobs root.
    pub fn check_job(&self, job: &DiscoveredJob) -> Result<(), Untrusted> {
        if !self.enforced {
            return Ok(());
        }
        let untrusted = |path: &Path, why: String| Untrusted {
            job: job.name.clone(),
            path: path.to_path_buf(),
            why,
        };
        let bbr = job.dir.join("bin/bbr");
        let mut paths: Vec<PathBuf> = job.scripts.values().cloned().collect();
        paths.extend([bbr, job.dir.join("bin")]);
        // The job directory is usually a symlink the BOSH agent made: judge where it leads
        // (which is what following it would stat anyway). Otherwise the lstat is the stat.
        match fs::symlink_metadata(&job.dir) {
            Ok(meta) if meta.file_type().is_symlink() => match fs::canonicalize(&job.dir) {
                Ok(real) => paths.push(real),
                Err(e) => return Err(untrusted(&job.dir, format!("cannot be examined ({e})"))),
            },
            Ok(meta) => judge(&meta).map_err(|why| untrusted(&job.dir, why))?,
            Err(e) => return Err(untrusted(&job.dir, format!("cannot be examined ({e})"))),
        }
        for path in paths {
            check_path(&path).map_err(|why| untrusted(&path, why))?;
        }
        self.jobs_root_verdict
            .get_or_init(|| check_path(&self.jobs_root))
            .clone()
            .map_err(|why| untrusted(&self.jobs_root, why))
    }
}

fn check_path(path: &Path) -> Result<(), String> {
    let meta = fs::metadata(path).map_err(|e| format!("cannot be examined ({e})"))?;
    judge(&meta)
}

fn judge(meta: &fs::Metadata) -> Result<(), String> {
    if meta.uid() != 0 {
        return Err(format!("is owned by uid {}, not root", meta.uid()));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!("is writable by group or others (mode {mode:04o})"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn group_or_world_writable_paths_are_refused_as_root() {
        if !nix::unistd::geteuid().is_root() {
            return; // The rule applies to root only; CI runs the suite as root.
        }
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("backup");
        fs::write(&script, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(check_path(&script), Ok(()));
        fs::set_permissions(&script, fs::Permissions::from_mode(0o775)).unwrap();
        assert_eq!(
            check_path(&script),
            Err("is writable by group or others (mode 0775)".to_string())
        );
        nix::unistd::chown(&script, Some(nix::unistd::Uid::from_raw(1000)), None).unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            check_path(&script),
            Err("is owned by uid 1000, not root".to_string())
        );
    }
}
