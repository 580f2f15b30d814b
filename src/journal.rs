//! The run journal, `<run-dir>/journal.json`: which jobs are locked (written, and synced,
//! before each lock script starts) and the process groups of running scripts. It outlives an
//! agent killed with SIGKILL, so `backup-cleanup` and `restore-cleanup` can end that run's
//! stray scripts and unlock exactly what it locked. The file exists only while something is
//! locked or running: its presence is the mark of a run that did not finish.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::contract::ScriptKind;
use crate::exec::ProcessGroup;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalState {
    /// The run that wrote it.
    pub pid: u32,
    pub command: String,
    /// Jobs whose lock script started, in lock order, and not yet unlocked.
    pub locked: Vec<LockedJob>,
    pub running: Vec<RunningScript>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedJob {
    pub job: String,
    pub lock: ScriptKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningScript {
    pub job: String,
    pub script: ScriptKind,
    pub pgid: i32,
    /// The leader's start time (clock ticks since boot), to tell it from a later process
    /// that reused its pid.
    pub start_time: Option<u64>,
}

impl JournalState {
    pub fn is_idle(&self) -> bool {
        self.locked.is_empty() && self.running.is_empty()
    }
}

/// How far a journal update must reach before the step it records may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sync {
    ToDisk,
    PageCache,
}

/// The journal of this process's run, shared by the threads that run scripts.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    state: Mutex<JournalState>,
}

impl Journal {
    pub fn path_in(run_dir: &Path) -> PathBuf {
        run_dir.join("journal.json")
    }

    /// Reads the journal a run left behind, if any.
    pub fn read(run_dir: &Path) -> io::Result<Option<JournalState>> {
        match fs::read(Self::path_in(run_dir)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(io::Error::other),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The journal for this run, carrying on from one left behind (cleanup works on it).
    pub fn open(run_dir: &Path) -> Journal {
        let state = Self::read(run_dir).ok().flatten().unwrap_or_default();
        Journal {
            path: Self::path_in(run_dir),
            state: Mutex::new(state),
        }
    }

    pub fn state(&self) -> JournalState {
        self.state.lock().expect("journal lock").clone()
    }

    /// Records, on disk, that these jobs' lock scripts are about to run.
    pub fn locking(&self, jobs: &[&str], lock: ScriptKind) -> io::Result<()> {
        self.update(Sync::ToDisk, |s| {
            for job in jobs {
                if !s.locked.iter().any(|l| l.job == *job) {
                    s.locked.push(LockedJob {
                        job: job.to_string(),
                        lock,
                    });
                }
            }
        })
    }

    /// Records that these jobs were unlocked. (Should the VM crash before this reaches the
    /// disk, a cleanup unlocks them once more: unlock scripts must bear that anyway.)
    pub fn unlocked(&self, jobs: &[&str]) -> io::Result<()> {
        self.update(Sync::PageCache, |s| {
            s.locked.retain(|l| !jobs.contains(&l.job.as_str()))
        })
    }

    pub fn started(&self, job: &str, script: ScriptKind, group: ProcessGroup) -> io::Result<()> {
        let start_time = start_time(group.id());
        self.update(Sync::PageCache, |s| {
            s.running.push(RunningScript {
                job: job.to_string(),
                script,
                pgid: group.id(),
                start_time,
            })
        })
    }

    pub fn finished(&self, group: ProcessGroup) -> io::Result<()> {
        self.update(Sync::PageCache, |s| {
            s.running.retain(|r| r.pgid != group.id())
        })
    }

    /// Ends the scripts a dead run left running: SIGTERM to each group that is still that
    /// run's, SIGKILL after `grace`. Returns what was ended, for the operator.
    pub fn end_strays(&self, grace: Duration) -> io::Result<Vec<String>> {
        let running = self.state().running;
        let mut ended = Vec::new();
        for script in &running {
            let group = ProcessGroup::from_id(script.pgid);
            if !still_ours(script) || !group.is_alive() {
                continue;
            }
            group.signal(nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + grace;
            while group.is_alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if group.is_alive() {
                group.signal(nix::sys::signal::Signal::SIGKILL);
            }
            ended.push(format!(
                "{} {} (process group {})",
                script.job, script.script, script.pgid
            ));
        }
        self.update(Sync::PageCache, |s| s.running.clear())?;
        Ok(ended)
    }

    /// Applies `change` and writes the whole journal: temporary file, rename (so a reader
    /// never sees half of it); or removes it when nothing is left locked or running. Lock
    /// changes are also synced to disk (file and directory), so they survive the VM itself.
    /// Running scripts are not: after a crash of the VM they are gone as well, and a SIGKILLed
    /// agent's writes are in the page cache for the cleanup to read.
    fn update(&self, sync: Sync, change: impl FnOnce(&mut JournalState)) -> io::Result<()> {
        let mut state = self.state.lock().expect("journal lock");
        change(&mut state);
        if state.is_idle() {
            return match fs::remove_file(&self.path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        if state.pid == 0 || state.pid != std::process::id() {
            state.pid = std::process::id();
            state.command = std::env::args().collect::<Vec<_>>().join(" ");
        }
        let dir = self.path.parent().expect("the journal is in a directory");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let tmp = self.path.with_extension("json.tmp");
        let mut file = File::create(&tmp)?;
        file.write_all(&serde_json::to_vec_pretty(&*state).map_err(io::Error::other)?)?;
        if sync == Sync::ToDisk {
            file.sync_all()?;
        }
        fs::rename(&tmp, &self.path)?;
        match sync {
            Sync::ToDisk => File::open(dir)?.sync_all(),
            Sync::PageCache => Ok(()),
        }
    }
}

/// Whether the recorded group can still be the dead run's. A pid is not reused while it names
/// a live process group, so: the leader alive with the same start time is ours; a leader gone
/// while its group lives on is ours too; a live process of that pid with another start time
/// is someone else's.
fn still_ours(script: &RunningScript) -> bool {
    match start_time(script.pgid) {
        Some(now) => script.start_time == Some(now),
        None => true,
    }
}

/// Field 22 of `/proc/<pid>/stat`: the start time in clock ticks since boot.
fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_locks_in_order_and_is_gone_once_nothing_is_locked() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path());
        journal.locking(&["a"], ScriptKind::PreBackupLock).unwrap();
        journal
            .locking(&["b", "a"], ScriptKind::PreBackupLock)
            .unwrap();
        let on_disk = Journal::read(dir.path()).unwrap().unwrap();
        let jobs: Vec<&str> = on_disk.locked.iter().map(|l| l.job.as_str()).collect();
        assert_eq!(jobs, ["a", "b"]);
        assert_eq!(on_disk.pid, std::process::id());

        journal.unlocked(&["a"]).unwrap();
        assert!(
            Journal::read(dir.path()).unwrap().is_some(),
            "kept while a job is locked"
        );
        journal.unlocked(&["b"]).unwrap();
        assert_eq!(
            Journal::read(dir.path()).unwrap(),
            None,
            "gone once nothing is locked"
        );
    }

    #[test]
    fn reads_its_own_start_time() {
        let me = std::process::id() as i32;
        assert!(start_time(me).is_some());
        let script = RunningScript {
            job: "j".into(),
            script: ScriptKind::Backup,
            pgid: me,
            start_time: start_time(me),
        };
        assert!(still_ours(&script));
        let reused = RunningScript {
            start_time: Some(1),
            ..script
        };
        assert!(
            !still_ours(&reused),
            "another start time is another process"
        );
    }
}
