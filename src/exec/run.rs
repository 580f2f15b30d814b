//! Running a script to its end, with a timeout that ends its whole process group and what it
//! started outside it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::os::fd::BorrowedFd;
use std::os::unix::process::ExitStatusExt;

use super::capture::{Captured, LineSink};
use super::descendants::{self, Escaped, Ticket};
use super::process_group::{Members, ProcessGroup};
use super::spawn::Spawn;
use super::sudo_env::sudo_env;
use super::watch::Watch;
use crate::interrupt::Level;

/// How long output pipes may stay open after the script itself exited: a script that starts
/// a daemon without redirecting its output must not hold the run up.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// Everything needed to run one script.
pub struct ScriptCommand {
    pub path: PathBuf,
    pub working_dir: PathBuf,
    /// The BBR variables for this script; added to what sudo would give it.
    pub env: Vec<(String, std::ffi::OsString)>,
    pub timeout: Option<Duration>,
    /// Between SIGTERM and SIGKILL when the timeout expires.
    pub grace: Duration,
    /// How many bytes of each stream to keep.
    pub keep_bytes: usize,
    pub sink: LineSink,
    /// Whether an interruption ends it (lock, backup, restore) or lets it finish (unlock).
    pub interruptible: bool,
    /// Told the process group, and its leader's start time (clock ticks after boot, `None`
    /// if `/proc` did not show it), right after the script starts (for the journal).
    pub on_spawn: Option<Box<OnSpawn>>,
}

/// What `ScriptCommand::on_spawn` is told: the script's group and its leader's start time,
/// read once at the spawn (one `/proc/<pid>/stat` a script, not one for each who needs it).
pub type OnSpawn = dyn Fn(ProcessGroup, Option<u64>) + Send + Sync;

/// How a script ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptEnd {
    Exited(i32),
    Signalled(i32),
    TimedOut(Duration),
    /// Ended because the run was interrupted (a signal, or the driver went away).
    Interrupted,
    /// It could not be started at all (not executable, no interpreter, ...).
    NotStarted(String),
    /// A backup script that exited 0 but left an artifact directory no backup can hold.
    ArtifactRefused(String),
    /// Never run by the driver: the session to the VM was ended by the run's interruption,
    /// and the VM's agent runs the unlock itself as its session ends (driver side only).
    LeftToAgent,
}

impl ScriptEnd {
    pub fn success(&self) -> bool {
        matches!(self, ScriptEnd::Exited(0))
    }

    /// A short phrase for messages: "exit status 3", "timed out after 30s", ...
    pub fn describe(&self) -> String {
        match self {
            ScriptEnd::Exited(code) => format!("exit status {code}"),
            ScriptEnd::Signalled(sig) => format!("killed by signal {sig}"),
            ScriptEnd::TimedOut(after) => format!(
                "timed out after {}; its process group was terminated",
                crate::duration::format(*after)
            ),
            ScriptEnd::Interrupted => "interrupted; its process group was terminated".to_string(),
            ScriptEnd::NotStarted(why) => format!("could not be started: {why}"),
            ScriptEnd::ArtifactRefused(why) => {
                format!("exited 0, but its artifact directory is refused: {why}")
            }
            ScriptEnd::LeftToAgent => {
                "left to the VM's agent, which unlocks what it locked as its session ends"
                    .to_string()
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct ScriptOutcome {
    pub end: ScriptEnd,
    /// The script's process group, once it started.
    pub group: Option<ProcessGroup>,
    pub stdout: Captured,
    pub stderr: Captured,
    pub duration: Duration,
}

/// Runs the script to its end. Never fails: a script that cannot start is an outcome too.
pub fn run_script(command: &ScriptCommand) -> ScriptOutcome {
    let started = Instant::now();
    // What sudo gives it (BBR runs every script through sudo), then its BBR variables.
    let mut env = sudo_env(&command.path);
    env.extend(command.env.iter().cloned());
    let spawn = Spawn {
        program: &command.path,
        args: &[],
        env: Some(&env),
        working_dir: Some(&command.working_dir),
        stdin_pipe: false,
        search_path: false,
    };
    let (child, ticket) =
        match descendants::start_script(|birth| spawn.start_born(birth), |c| c.pid.as_raw()) {
            Ok(started) => started,
            Err(e) => {
                return ScriptOutcome {
                    end: ScriptEnd::NotStarted(super::start_error::describe(&command.path, &e)),
                    group: None,
                    stdout: Captured::default(),
                    stderr: Captured::default(),
                    duration: started.elapsed(),
                };
            }
        };
    let group = ProcessGroup::led_by(child.pid.as_raw() as u32);
    // Recorded first (in the journal), so an agent killed now still leaves its trace.
    if let Some(hook) = &command.on_spawn {
        hook(group, ticket.start_time());
    }

    let mut watch = Watch::new(child, Arc::clone(&command.sink), command.keep_bytes);
    let stopped = wait(command, started, &mut watch);
    if let Some(stopped) = &stopped {
        let grace = if crate::interrupt::is_hard() {
            Duration::ZERO
        } else {
            command.grace
        };
        // Only an interruption hurries: a timed-out script on a calm run gets its whole grace.
        let interrupted = matches!(stopped, Stopped::Interrupted);
        group.terminate(
            grace,
            interrupted,
            &mut ScriptMembers {
                watch: &mut watch,
                ticket: &ticket,
            },
        );
    }
    watch.reap_blocking();
    ticket.finished();
    // What the script's descendants left to the agent and has ended since (a lock script's
    // daemon that its unlock stopped, say): not left as zombies.
    descendants::reap_orphans();
    let status = watch.status();
    let (stdout, stderr) = watch.finish(Instant::now() + DRAIN_AFTER_EXIT);

    let end = match (stopped, status) {
        (Some(Stopped::TimedOut(after)), _) => ScriptEnd::TimedOut(after),
        (Some(Stopped::Interrupted), _) => ScriptEnd::Interrupted,
        (None, Some(Ok(status))) if status.code().is_some() => {
            ScriptEnd::Exited(status.code().unwrap_or_default())
        }
        (None, Some(Ok(status))) if status.signal().is_some() => {
            ScriptEnd::Signalled(status.signal().unwrap_or_default())
        }
        (None, Some(Err(e))) => ScriptEnd::NotStarted(format!("waiting for it failed: {e}")),
        (None, _) => ScriptEnd::NotStarted("unknown wait status".to_string()),
    };
    ScriptOutcome {
        end,
        group: Some(group),
        stdout,
        stderr,
        duration: started.elapsed(),
    }
}

/// A script's group as `terminate` sees it: the leader watched (its output passed on), the
/// descendants that left the group, the orphans the agent inherited as a subreaper.
struct ScriptMembers<'a> {
    watch: &'a mut Watch,
    ticket: &'a Ticket,
}

impl Members for ScriptMembers<'_> {
    fn wait_leader(&mut self, max: Duration, wake: Option<BorrowedFd<'_>>) -> bool {
        self.watch.wait(max, wake)
    }

    fn escaped(&self, known: &[Escaped]) -> Vec<Escaped> {
        self.ticket.descendants(known)
    }

    fn reap(&mut self) {
        descendants::reap_orphans();
    }
}

/// Why the agent ended a script.
enum Stopped {
    TimedOut(Duration),
    Interrupted,
}

/// Waits for the script's leader to exit, passing its output on, and says why it stopped
/// waiting early: the timeout expired or the run was interrupted. The wait wakes on the
/// interruption's descriptor beside the script's own. The first look at the interruption
/// comes right after the spawn, so an interruption that arrived while the script was
/// starting still ends it.
fn wait(command: &ScriptCommand, started: Instant, watch: &mut Watch) -> Option<Stopped> {
    let deadline = command.timeout.map(|t| started + t);
    let wake = command
        .interruptible
        .then(|| crate::interrupt::fd(Level::Interrupted))
        .flatten();
    loop {
        if command.interruptible && crate::interrupt::is_interrupted() {
            return Some(Stopped::Interrupted);
        }
        let now = Instant::now();
        if let (Some(deadline), Some(limit)) = (deadline, command.timeout)
            && now >= deadline
        {
            return Some(Stopped::TimedOut(limit));
        }
        let mut slice = deadline.map_or(Duration::MAX, |d| d - now);
        if command.interruptible && wake.is_none() {
            slice = slice.min(crate::interrupt::FALLBACK_POLL);
        }
        if watch.wait(slice, wake) {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::descendants::tests::STAT_READS;
    use std::sync::Mutex;

    /// Field 22 of `/proc/<pid>/stat`, read here without the agent's reader.
    fn start_ticks(pid: i32) -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(19)?
            .parse()
            .ok()
    }

    /// A script's start reads its leader's `/proc/<pid>/stat` once (it was read twice: for
    /// the registry, then again by the journal's hook), and `on_spawn` is told the start
    /// time read then.
    #[test]
    fn a_scripts_start_reads_its_stat_once_and_on_spawn_gets_the_start_time() {
        // (leader, the start time on_spawn is told, the leader's own as /proc shows it)
        type Told = Vec<(i32, Option<u64>, Option<u64>)>;
        let told: Arc<Mutex<Told>> = Arc::default();
        let record = Arc::clone(&told);
        let command = ScriptCommand {
            path: PathBuf::from("/bin/true"),
            working_dir: PathBuf::from("/"),
            env: Vec::new(),
            timeout: None,
            grace: Duration::from_secs(1),
            keep_bytes: 1024,
            sink: Arc::new(|_, _| {}),
            interruptible: false,
            // The leader is not reaped before the hook returns: its stat is still there.
            on_spawn: Some(Box::new(move |group: ProcessGroup, start: Option<u64>| {
                record
                    .lock()
                    .unwrap()
                    .push((group.id(), start, start_ticks(group.id())));
            })),
        };
        STAT_READS.with(|pids| pids.borrow_mut().clear());
        let outcome = run_script(&command);
        let read = STAT_READS.with(|pids| pids.take());
        assert_eq!(outcome.end, ScriptEnd::Exited(0), "{outcome:?}");
        let told = told.lock().unwrap();
        assert_eq!(told.len(), 1, "on_spawn once");
        let (leader, start, own) = told[0];
        assert!(start.is_some(), "a start time for the journal: {told:?}");
        assert_eq!(start, own, "the leader's own start time");
        // Other tests' children, zombies for a moment, may be looked at by the reap after it.
        let of_leader = read.iter().filter(|pid| **pid == leader).count();
        assert_eq!(of_leader, 1, "stat reads of the leader {leader}: {read:?}");
    }
}
