//! Where things live on a VM: the jobs root, the artifact store, the agent's run and log
//! directories and the instance identity files, all found under one `--root`.
//!
//! A test "VM" is just a directory, so several VMs can share a machine without sharing paths.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
    pub jobs_root: PathBuf,
    pub store: PathBuf,
}

impl Layout {
    /// The layout of a VM whose `/var/vcap` tree is under `root`, with optional overrides.
    /// Paths are made absolute: scripts run in their job's directory, not ours.
    pub fn new(root: &Path, jobs_root: Option<PathBuf>, store: Option<PathBuf>) -> Layout {
        let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let root = absolute(root);
        let vcap = root.join("var/vcap");
        Layout {
            jobs_root: jobs_root.map_or_else(|| vcap.join("jobs"), |p| absolute(&p)),
            store: store.map_or_else(|| vcap.join("store/bbr-backup"), |p| absolute(&p)),
            root,
        }
    }

    /// The artifact directory of one job: `<store>/<job>`.
    pub fn job_artifact_dir(&self, job: &str) -> PathBuf {
        self.store.join(job)
    }

    /// Where BOSH writes the instance's identity (`deployment`, `name`, `id`).
    pub fn instance_dir(&self) -> PathBuf {
        self.root.join("var/vcap/instance")
    }

    /// The agent's own run directory (lock file, journal).
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("var/vcap/sys/run/bbr-agent")
    }

    /// The agent's log directory, where BOSH keeps job logs.
    pub fn log_dir(&self) -> PathBuf {
        self.root.join("var/vcap/sys/log/bbr-agent")
    }
}
