//! Discovery of BBR jobs under a jobs root, exactly as BBR finds them.
//!
//! BBR runs `find /var/vcap/jobs/*/bin/bbr/* -type f`: the shell glob follows the job
//! directory symlinks the BOSH agent makes (and skips hidden names), `find` keeps regular files only (a symlinked
//! script is not one, so BBR ignores it, and so do we, with a note an operator can see), and
//! only the seven contract names count. Subdirectories of `bin/bbr/` are ignored.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::contract::{LEGACY_SKIPPED_JOBS, ScriptKind};

#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("cannot read the jobs root {path}: {source} (pass --root or --jobs-root)")]
    JobsRoot { path: PathBuf, source: io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
}

/// One job with at least one BBR script.
#[derive(Debug, Clone)]
pub struct DiscoveredJob {
    pub name: String,
    /// `<jobs-root>/<job>` as found (possibly a symlink, as the BOSH agent makes it).
    pub dir: PathBuf,
    pub scripts: BTreeMap<ScriptKind, PathBuf>,
}

impl DiscoveredJob {
    pub fn script(&self, kind: ScriptKind) -> Option<&Path> {
        self.scripts.get(&kind).map(PathBuf::as_path)
    }

    pub fn has(&self, kind: ScriptKind) -> bool {
        self.scripts.contains_key(&kind)
    }
}

/// What discovery saw but left out, for `list` to explain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    pub job: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default)]
pub struct Discovery {
    /// Jobs with scripts, sorted by name.
    pub jobs: Vec<DiscoveredJob>,
    /// Jobs skipped by name, and script-named entries that are not regular files.
    pub ignored: Vec<Ignored>,
}

/// Finds every BBR job under `jobs_root`.
pub fn discover(jobs_root: &Path) -> Result<Discovery, DiscoverError> {
    let entries = fs::read_dir(jobs_root).map_err(|source| DiscoverError::JobsRoot {
        path: jobs_root.to_path_buf(),
        source,
    })?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| DiscoverError::Read {
            path: jobs_root.to_path_buf(),
            source,
        })?;
        // BBR's shell glob `/var/vcap/jobs/*` does not match names that start with a dot.
        if let Some(name) = entry.file_name().to_str().filter(|n| !n.starts_with('.')) {
            names.push(name.to_string());
        }
    }
    names.sort();

    let mut discovery = Discovery::default();
    for name in names {
        let dir = jobs_root.join(&name);
        let bbr_dir = dir.join("bin/bbr");
        // Following the job symlink, as the shell glob does. No `bin/bbr` directory: no job.
        let Some((scripts, not_regular)) = scripts_in(&bbr_dir)? else {
            continue;
        };
        if scripts.is_empty() && not_regular.is_empty() {
            continue;
        }
        if LEGACY_SKIPPED_JOBS.contains(&name.as_str()) {
            discovery.ignored.push(Ignored {
                job: name,
                reason: "legacy job name that BBR always skips".to_string(),
            });
            continue;
        }
        for script in not_regular {
            discovery.ignored.push(Ignored {
                job: name.clone(),
                reason: format!(
                    "bin/bbr/{script} is not a regular file (a symlink or special file); BBR ignores it"
                ),
            });
        }
        if !scripts.is_empty() {
            discovery.jobs.push(DiscoveredJob { name, dir, scripts });
        }
    }
    Ok(discovery)
}

type ScriptsFound = (BTreeMap<ScriptKind, PathBuf>, Vec<ScriptKind>);

/// The contract scripts in one `bin/bbr` directory, and contract names that are not files;
/// `None` when there is no such directory.
fn scripts_in(bbr_dir: &Path) -> Result<Option<ScriptsFound>, DiscoverError> {
    let read_err = |source| DiscoverError::Read {
        path: bbr_dir.to_path_buf(),
        source,
    };
    let entries = match fs::read_dir(bbr_dir) {
        Ok(entries) => entries,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(read_err(e)),
    };
    let mut scripts = BTreeMap::new();
    let mut not_regular = Vec::new();
    for entry in entries {
        let entry = entry.map_err(read_err)?;
        let Some(kind) = entry
            .file_name()
            .to_str()
            .and_then(ScriptKind::from_file_name)
        else {
            continue;
        };
        // `file_type()` does not follow symlinks: like `find -type f`.
        let file_type = entry.file_type().map_err(read_err)?;
        if file_type.is_file() {
            scripts.insert(kind, entry.path());
        } else if !file_type.is_dir() {
            not_regular.push(kind);
        }
    }
    not_regular.sort();
    Ok(Some((scripts, not_regular)))
}
