//! The run journal, `<run-dir>/journal.jsonl`: which jobs are locked (written, and synced,
//! before each lock script starts) and the process groups of running scripts. It outlives an
//! agent killed with SIGKILL, so `backup-cleanup` and `restore-cleanup` can end that run's
//! stray scripts and unlock exactly what it locked. The file exists only while something is
//! locked or running: its presence is the mark of a run that did not finish.
//!
//! It is a log, one JSON record per line, appended to and never rewritten: a script's start
//! costs one small write, not a new file and a rename (which on ext4 is most of what a no-op
//! script costs the agent). A reader folds the records into the state; a last line cut short
//! by a crash mid-write is ignored, since the step it would record had not started. Any other
//! line it cannot read (damage, or a record of another agent version) is named in
//! [`JournalState::unreadable`], and the rest is still read: a cleanup unlocks what it can
//! read and, for the rest, every job (BBR's rule without a journal).
//!
//! A lock is released only by its own side's unlock (`post-backup-unlock` for
//! `pre-backup-lock`): once that unlock script has run, whether it succeeded or not (a failed
//! one is recorded as attempted, and reported by the run), so a failed unlock does not hold up
//! the next run. What stays recorded is what a run died before unlocking.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::contract::ScriptKind;
use crate::exec::descendants::start_time;
use crate::exec::{NotOurs, ProcessGroup};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalState {
    /// The run that wrote it last.
    pub pid: u32,
    pub command: String,
    /// When that run's process started (`2026/11/26 10:02:03 UTC`), where it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    /// The command that cleans up after that run, without its last word (`backup-cleanup` or
    /// `restore-cleanup`): `bbr-agent --root /x` for a local run, `bbr-agent deployment
    /// --inventory FILE` for a deployment run. Absent in journals of older agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup_via: Option<String>,
    /// Jobs whose lock script started, in lock order, and not yet unlocked; a job locked on
    /// both sides is listed once per side.
    pub locked: Vec<LockedJob>,
    pub running: Vec<RunningScript>,
    /// The lines that could not be read, as one line naming the file and the line numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
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

    /// Whether a run left anything here: something locked or running, or lines that could
    /// not be read (which may have been either).
    pub fn left_anything(&self) -> bool {
        !self.is_idle() || self.unreadable.is_some()
    }

    fn apply(&mut self, record: &Record) {
        match record {
            Record::Run {
                pid,
                command,
                started,
                cleanup_via,
            } => {
                self.pid = *pid;
                self.command = command.clone();
                self.started = started.clone();
                self.cleanup_via = cleanup_via.clone();
            }
            Record::Locking { jobs, lock } => {
                for job in jobs {
                    let entry = LockedJob {
                        job: job.clone(),
                        lock: *lock,
                    };
                    if !self.locked.contains(&entry) {
                        self.locked.push(entry);
                    }
                }
            }
            // Without `lock` (older agents): every lock of the job.
            Record::Unlocked { jobs, lock, .. } => self
                .locked
                .retain(|l| !(jobs.contains(&l.job) && lock.is_none_or(|k| k == l.lock))),
            Record::Started(script) => self.running.push(script.clone()),
            Record::Finished { pgid } => self.running.retain(|r| r.pgid != *pgid),
            Record::StraysEnded => self.running.clear(),
        }
    }
}

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Record {
    /// The process that appends the records after it (a cleanup carries on a dead run's).
    Run {
        pid: u32,
        command: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        started: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cleanup_via: Option<String>,
    },
    Locking {
        jobs: Vec<String>,
        lock: ScriptKind,
    },
    /// The jobs' unlock script ran (or they have none): their `lock` is released. `failed`:
    /// the script failed; the release was attempted, and the run reported it.
    Unlocked {
        jobs: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lock: Option<ScriptKind>,
        #[serde(default, skip_serializing_if = "is_false")]
        failed: bool,
    },
    Started(RunningScript),
    Finished {
        pgid: i32,
    },
    StraysEnded,
}

/// How far a journal record must reach before the step it records may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sync {
    ToDisk,
    PageCache,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Line numbers of unreadable lines named in [`JournalState::unreadable`], at most.
const NAMED_LINES: usize = 5;

/// The journal of this process's run, shared by the threads that run scripts.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    /// Written into this process's `Run` record (see [`JournalState::cleanup_via`]).
    cleanup_via: Option<String>,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: JournalState,
    /// The locks this process recorded and has not released, in lock order.
    mine: Vec<LockedJob>,
    /// Open for appending once this process has written its `Run` record to the file.
    file: Option<File>,
}

impl Journal {
    pub fn path_in(run_dir: &Path) -> PathBuf {
        run_dir.join("journal.jsonl")
    }

    /// Reads the journal a run left behind, if any. Only a file that cannot be read at all is
    /// an error; lines that cannot be read are named in the state's `unreadable`.
    pub fn read(run_dir: &Path) -> io::Result<Option<JournalState>> {
        let path = Self::path_in(run_dir);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut state = JournalState::default();
        let (mut bad_lines, mut bad_count, mut first_error) = (Vec::new(), 0usize, None);
        let mut lines = bytes.split_inclusive(|&b| b == b'\n').peekable();
        let mut number = 0usize;
        while let Some(line) = lines.next() {
            number += 1;
            let complete = line.ends_with(b"\n");
            // A process taking the journal over starts with its `run` record.
            let taken_over = lines
                .peek()
                .is_some_and(|next| matches!(serde_json::from_slice(next), Ok(Record::Run { .. })));
            match serde_json::from_slice::<Record>(line) {
                Ok(record) => state.apply(&record),
                // Cut short by a crash mid-write: the step it records never started. It is the
                // last line, or the one before a later process's first record.
                Err(_) if (!complete && lines.peek().is_none()) || taken_over => {}
                Err(e) => {
                    bad_count += 1;
                    if bad_lines.len() < NAMED_LINES {
                        bad_lines.push(number.to_string());
                    }
                    first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
        if bad_count > 0 {
            let more = bad_count - bad_lines.len();
            state.unreadable = Some(format!(
                "{} line{} {}{}: a record this agent cannot read (damaged, or from another agent version: {}); what {} recorded is not known",
                path.display(),
                if bad_count > 1 { "s" } else { "" },
                bad_lines.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                },
                first_error.unwrap_or_default(),
                if bad_count > 1 { "they" } else { "it" },
            ));
        }
        Ok(Some(state))
    }

    /// The journal for this run, carrying on from one left behind (cleanup works on it).
    pub fn open(run_dir: &Path) -> Journal {
        let state = match Self::read(run_dir) {
            Ok(state) => state.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %e, "the journal a run left cannot be read; starting afresh");
                JournalState {
                    unreadable: Some(format!("{}: {e}", Self::path_in(run_dir).display())),
                    ..JournalState::default()
                }
            }
        };
        Journal {
            path: Self::path_in(run_dir),
            cleanup_via: None,
            inner: Mutex::new(Inner {
                state,
                mine: Vec::new(),
                file: None,
            }),
        }
    }

    /// A journal not read yet: for an instance that has not taken the run lock, before which
    /// what the file says may still change.
    pub fn unread(run_dir: &Path) -> Journal {
        Journal {
            path: Self::path_in(run_dir),
            cleanup_via: None,
            inner: Mutex::new(Inner {
                state: JournalState::default(),
                mine: Vec::new(),
                file: None,
            }),
        }
    }

    /// The cleanup command this run's `Run` record names (see [`JournalState::cleanup_via`]).
    pub fn with_cleanup_via(mut self, cleanup_via: String) -> Journal {
        self.cleanup_via = Some(cleanup_via);
        self
    }

    pub fn state(&self) -> JournalState {
        self.inner.lock().expect("journal lock").state.clone()
    }

    /// The locks this process recorded and has not released since, in lock order.
    pub fn held_here(&self) -> Vec<LockedJob> {
        self.inner.lock().expect("journal lock").mine.clone()
    }

    /// Records, on disk, that these jobs' lock scripts are about to run.
    pub fn locking(&self, jobs: &[&str], lock: ScriptKind) -> io::Result<()> {
        let jobs = jobs.iter().map(|j| j.to_string()).collect();
        self.append(Sync::ToDisk, Record::Locking { jobs, lock })
    }

    /// Records that these jobs' `lock` was released: their unlock script ran (`failed`: and
    /// failed), or they have none. (Should the VM crash before this reaches the disk, a
    /// cleanup unlocks them once more: unlock scripts must bear that anyway.)
    pub fn unlocked(&self, jobs: &[&str], lock: ScriptKind, failed: bool) -> io::Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        let jobs = jobs.iter().map(|j| j.to_string()).collect();
        self.append(
            Sync::PageCache,
            Record::Unlocked {
                jobs,
                lock: Some(lock),
                failed,
            },
        )
    }

    /// A script of `job` runs as `group`, whose leader started at `start_time` (clock ticks
    /// after boot, as read at its spawn: what tells it from a later process of that pid).
    pub fn started(
        &self,
        job: &str,
        script: ScriptKind,
        group: ProcessGroup,
        start_time: Option<u64>,
    ) -> io::Result<()> {
        let record = Record::Started(RunningScript {
            job: job.to_string(),
            script,
            pgid: group.id(),
            start_time,
        });
        self.append(Sync::PageCache, record)
    }

    pub fn finished(&self, group: ProcessGroup) -> io::Result<()> {
        self.append(Sync::PageCache, Record::Finished { pgid: group.id() })
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
            // The dead run's scripts are not this process's children: nothing to reap.
            group.terminate(grace, false, &mut NotOurs);
            ended.push(format!(
                "{} {} (process group {})",
                script.job, script.script, script.pgid
            ));
        }
        self.append(Sync::PageCache, Record::StraysEnded)?;
        Ok(ended)
    }

    /// Applies `record` and appends it to the file, or removes the file once nothing is left
    /// locked or running. Lock records are also synced to disk (and the directory, when the
    /// file is new), so they survive the VM itself. The others are not: after a crash of the
    /// VM its scripts are gone as well, and a SIGKILLed agent's writes are in the page cache
    /// for the cleanup to read.
    fn append(&self, sync: Sync, record: Record) -> io::Result<()> {
        let mut inner = self.inner.lock().expect("journal lock");
        let inner = &mut *inner;
        inner.state.apply(&record);
        if let Record::Locking { jobs, lock } = &record {
            for job in jobs {
                let entry = LockedJob {
                    job: job.clone(),
                    lock: *lock,
                };
                if !inner.mine.contains(&entry) {
                    inner.mine.push(entry);
                }
            }
        }
        inner.mine.retain(|l| inner.state.locked.contains(l));
        if inner.state.is_idle() {
            inner.file = None;
            return match fs::remove_file(&self.path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        let mut line = Vec::new();
        let created = if inner.file.is_none() {
            let (file, created) = self.open_for_append()?;
            inner.file = Some(file);
            let me = Record::Run {
                pid: std::process::id(),
                command: crate::printable::this_command_line(),
                started: process_started(),
                cleanup_via: self.cleanup_via.clone(),
            };
            inner.state.apply(&me);
            push_line(&mut line, &me)?;
            created
        } else {
            false
        };
        push_line(&mut line, &record)?;
        let file = inner.file.as_mut().expect("opened above");
        // One write per record: with O_APPEND it lands whole or, on a crash, cut short.
        if let Err(e) = file.write_all(&line) {
            // Possibly cut short: the next record starts from a reopened file, on a new line.
            inner.file = None;
            return Err(e);
        }
        if sync == Sync::ToDisk {
            file.sync_data()?;
            if created {
                let dir = self.path.parent().expect("the journal is in a directory");
                File::open(dir)?.sync_all()?;
            }
        }
        Ok(())
    }

    /// Opens the file for appending, creating it and its directory as needed; says whether
    /// the file is new.
    fn open_for_append(&self) -> io::Result<(File, bool)> {
        let dir = self.path.parent().expect("the journal is in a directory");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let existed = self.path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)?;
        // A record cut short by a crash (or a failed write) ends without a newline: ours start
        // on a line of their own.
        let len = file.metadata()?.len();
        if len > 0 {
            let mut last = [0u8; 1];
            file.read_exact_at(&mut last, len - 1)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")?;
            }
        }
        Ok((file, !existed))
    }
}

fn push_line(buf: &mut Vec<u8>, record: &Record) -> io::Result<()> {
    serde_json::to_writer(&mut *buf, record).map_err(io::Error::other)?;
    buf.push(b'\n');
    Ok(())
}

/// Whether the recorded group can still be the dead run's. A pid is not reused while it names
/// a live process group, so: the leader alive with the same start time is ours; a leader gone
/// while its group lives on is ours too; a live process of that pid with another start time
/// is someone else's.
/// A leader whose stat cannot be read is not provably ours: it is left alone.
fn still_ours(script: &RunningScript) -> bool {
    match start_time(script.pgid) {
        Ok(Some(now)) => script.start_time == Some(now),
        Ok(None) => true,
        Err(_) => false,
    }
}

/// When this process started, from its start time and the boot time (`btime` in
/// `/proc/stat`); `USER_HZ`, the unit of `/proc`'s clock ticks, is 100 on Linux.
fn process_started() -> Option<String> {
    const USER_HZ: u64 = 100;
    let ticks = start_time(std::process::id() as i32).ok()??;
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let boot: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let at = boot.checked_add(ticks / USER_HZ)?;
    Some(crate::timestamp::Utc::from_unix(i64::try_from(at).ok()?).activity())
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

        journal
            .unlocked(&["a"], ScriptKind::PreBackupLock, false)
            .unwrap();
        assert!(
            Journal::read(dir.path()).unwrap().is_some(),
            "kept while a job is locked"
        );
        journal
            .unlocked(&["b"], ScriptKind::PreBackupLock, false)
            .unwrap();
        assert_eq!(
            Journal::read(dir.path()).unwrap(),
            None,
            "gone once nothing is locked"
        );
    }

    #[test]
    fn running_scripts_come_and_go_and_a_cleanup_carries_on_a_dead_runs_journal() {
        let dir = tempfile::tempdir().unwrap();
        let first = Journal::open(dir.path());
        first.locking(&["a"], ScriptKind::PreBackupLock).unwrap();
        first
            .started("a", ScriptKind::Backup, ProcessGroup::from_id(1), None)
            .unwrap();
        first
            .started("b", ScriptKind::Backup, ProcessGroup::from_id(2), None)
            .unwrap();
        first.finished(ProcessGroup::from_id(1)).unwrap();
        let left = Journal::read(dir.path()).unwrap().unwrap();
        let running: Vec<(&str, i32)> = left
            .running
            .iter()
            .map(|r| (r.job.as_str(), r.pgid))
            .collect();
        assert_eq!(running, [("b", 2)]);
        drop(first);

        // The "dead" run's journal, taken over by a cleanup: state carried on, records appended.
        let cleanup = Journal::open(dir.path());
        assert_eq!(cleanup.state(), left);
        cleanup
            .append(Sync::PageCache, Record::StraysEnded)
            .unwrap();
        let after = Journal::read(dir.path()).unwrap().unwrap();
        assert!(after.running.is_empty());
        assert_eq!(after.locked.len(), 1, "a is still locked");
        cleanup
            .unlocked(&["a"], ScriptKind::PreBackupLock, false)
            .unwrap();
        assert_eq!(Journal::read(dir.path()).unwrap(), None);
    }

    #[test]
    fn a_lock_is_released_by_its_own_sides_unlock_only_and_a_failed_unlock_releases_it() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path());
        journal.locking(&["a"], ScriptKind::PreRestoreLock).unwrap();
        journal.locking(&["a"], ScriptKind::PreBackupLock).unwrap();
        let locks = |state: &JournalState| -> Vec<(String, ScriptKind)> {
            state
                .locked
                .iter()
                .map(|l| (l.job.clone(), l.lock))
                .collect()
        };
        assert_eq!(
            locks(&Journal::read(dir.path()).unwrap().unwrap()),
            [
                ("a".to_string(), ScriptKind::PreRestoreLock),
                ("a".to_string(), ScriptKind::PreBackupLock)
            ],
            "one entry per side"
        );
        journal
            .unlocked(&["a"], ScriptKind::PreBackupLock, true)
            .unwrap();
        let left = Journal::read(dir.path()).unwrap().unwrap();
        assert_eq!(
            locks(&left),
            [("a".to_string(), ScriptKind::PreRestoreLock)],
            "the backup unlock, failed but attempted, releases the backup lock only"
        );
        assert_eq!(journal.held_here(), left.locked);
        journal
            .unlocked(&["a"], ScriptKind::PreRestoreLock, false)
            .unwrap();
        assert_eq!(Journal::read(dir.path()).unwrap(), None);
        assert!(journal.held_here().is_empty());
    }

    #[test]
    fn the_locks_held_here_are_this_processs_not_a_dead_runs() {
        let dir = tempfile::tempdir().unwrap();
        let dead = Journal::open(dir.path());
        dead.locking(&["a"], ScriptKind::PreBackupLock).unwrap();
        drop(dead);
        let next = Journal::open(dir.path()).with_cleanup_via("bbr-agent --root /x".into());
        assert!(next.held_here().is_empty(), "a is the dead run's");
        next.locking(&["b"], ScriptKind::PreBackupLock).unwrap();
        let held: Vec<String> = next.held_here().into_iter().map(|l| l.job).collect();
        assert_eq!(held, ["b"]);
        let state = Journal::read(dir.path()).unwrap().unwrap();
        assert_eq!(state.cleanup_via.as_deref(), Some("bbr-agent --root /x"));
        assert!(state.started.is_some_and(|t| t.ends_with(" UTC")));
        // An older agent's record, without the lock: every lock of the job.
        let path = Journal::path_in(dir.path());
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(b"{\"unlocked\":{\"jobs\":[\"a\",\"b\"]}}\n");
        fs::write(&path, &bytes).unwrap();
        assert!(Journal::read(dir.path()).unwrap().unwrap().is_idle());
    }

    #[test]
    fn a_line_cut_short_at_the_end_is_ignored_and_damage_elsewhere_is_named_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path());
        journal.locking(&["a"], ScriptKind::PreRestoreLock).unwrap();
        let path = Journal::path_in(dir.path());
        let whole = fs::read(&path).unwrap();

        let mut torn = whole.clone();
        torn.extend_from_slice(br#"{"locking":{"jobs":["b"],"lo"#);
        fs::write(&path, &torn).unwrap();
        let state = Journal::read(dir.path()).unwrap().unwrap();
        assert_eq!(state.locked.len(), 1, "the torn record of b is not read");

        // Damage between two records of the same run is not a crash's doing; nor is a record
        // of another agent version. Both are named, with their line numbers, and skipped.
        let mut damaged = whole.clone();
        damaged.extend_from_slice(b"{\"locking\":{\"jobs\n");
        damaged
            .extend_from_slice(b"{\"locking\":{\"jobs\":[\"b\"],\"lock\":\"pre-restore-lock\"}}\n");
        damaged.extend_from_slice(b"{\"frobnicated\":{\"jobs\":[\"a\"]}}\n");
        fs::write(&path, &damaged).unwrap();
        let state = Journal::read(dir.path()).unwrap().unwrap();
        let jobs: Vec<&str> = state.locked.iter().map(|l| l.job.as_str()).collect();
        assert_eq!(jobs, ["a", "b"], "what can be read is read");
        let unreadable = state.unreadable.expect("named");
        assert!(
            unreadable.contains("journal.jsonl lines 3, 5:"),
            "{unreadable}"
        );
        assert!(!unreadable.contains('\n'), "one line: {unreadable}");
    }

    #[test]
    fn a_run_taking_over_a_journal_cut_short_by_a_crash_starts_on_a_new_line() {
        let dir = tempfile::tempdir().unwrap();
        let dead = Journal::open(dir.path());
        dead.locking(&["a"], ScriptKind::PreBackupLock).unwrap();
        drop(dead);
        // The crash: half a record, no newline.
        let path = Journal::path_in(dir.path());
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(br#"{"locking":{"jobs":["b"],"lo"#);
        fs::write(&path, &bytes).unwrap();

        let cleanup = Journal::open(dir.path());
        assert_eq!(cleanup.state().locked.len(), 1, "a is locked, b never was");
        cleanup
            .started(
                "a",
                ScriptKind::PostBackupUnlock,
                ProcessGroup::from_id(7),
                None,
            )
            .unwrap();
        let state = Journal::read(dir.path())
            .expect("readable after the take-over")
            .unwrap();
        assert_eq!(state.pid, std::process::id());
        assert_eq!(state.locked.len(), 1);
        assert_eq!(state.running.len(), 1);
        cleanup.finished(ProcessGroup::from_id(7)).unwrap();
        cleanup
            .unlocked(&["a"], ScriptKind::PreBackupLock, false)
            .unwrap();
        assert_eq!(Journal::read(dir.path()).unwrap(), None);
    }

    #[test]
    fn reads_its_own_start_time() {
        let me = std::process::id() as i32;
        assert!(matches!(start_time(me), Ok(Some(_))));
        let script = RunningScript {
            job: "j".into(),
            script: ScriptKind::Backup,
            pgid: me,
            start_time: start_time(me).ok().flatten(),
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

    /// A process that reused a recorded group id and whose command name is not UTF-8 (the
    /// stat line then is not text) is someone else's: a cleanup must not end it.
    #[test]
    fn a_process_named_with_bytes_that_are_not_utf8_is_not_taken_for_a_gone_leader() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join(std::ffi::OsStr::from_bytes(b"\xffsleep"));
        fs::copy("/bin/sleep", &program).unwrap();
        let mut child = std::process::Command::new(&program)
            .arg("30")
            .spawn()
            .unwrap();
        let reused = RunningScript {
            job: "j".into(),
            script: ScriptKind::Backup,
            pgid: child.id() as i32,
            start_time: Some(1),
        };
        let ours = still_ours(&reused);
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            !ours,
            "a live process of another start time was taken for the dead run's"
        );
    }
}
