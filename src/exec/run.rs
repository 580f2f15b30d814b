//! Spawning a script and waiting for it, with a timeout that ends its whole process group.

use std::io;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::capture::{Captured, LineSink, Stream, drain};
use super::process_group::ProcessGroup;

/// How long output pipes may stay open after the script itself exited: a script that starts
/// a daemon without redirecting its output must not hold the run up.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// The `PATH` that `sudo` gives on a BOSH stemcell (its `secure_path`), since BBR runs every
/// script through `sudo`.
const SCRIPT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything needed to run one script.
pub struct ScriptCommand {
    pub path: PathBuf,
    pub working_dir: PathBuf,
    /// The BBR variables for this script; added to a clean base environment.
    pub env: Vec<(String, String)>,
    pub timeout: Option<Duration>,
    /// Between SIGTERM and SIGKILL when the timeout expires.
    pub grace: Duration,
    /// How many bytes of each stream to keep.
    pub keep_bytes: usize,
    pub sink: LineSink,
    /// Whether an interruption ends it (lock, backup, restore) or lets it finish (unlock).
    pub interruptible: bool,
    /// Told the process group right after the script starts (for the journal).
    pub on_spawn: Option<Box<dyn Fn(ProcessGroup) + Send + Sync>>,
}

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
    let mut child = match spawn(command) {
        Ok(child) => child,
        Err(e) => {
            return ScriptOutcome {
                end: ScriptEnd::NotStarted(e.to_string()),
                group: None,
                stdout: Captured::default(),
                stderr: Captured::default(),
                duration: started.elapsed(),
            };
        }
    };
    let group = ProcessGroup::led_by(child.id());
    // Recorded first (in the journal), so an agent killed now still leaves its trace.
    if let Some(hook) = &command.on_spawn {
        hook(group);
    }

    let (done_tx, done_rx) = mpsc::channel::<()>();
    let mut kept = Vec::new();
    for (stream, pipe) in [
        (
            Stream::Stdout,
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn io::Read + Send>),
        ),
        (
            Stream::Stderr,
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn io::Read + Send>),
        ),
    ] {
        let buffer = Arc::new(Mutex::new(Captured::default()));
        kept.push(Arc::clone(&buffer));
        let (sink, limit, done) = (
            Arc::clone(&command.sink),
            command.keep_bytes,
            done_tx.clone(),
        );
        let pipe = pipe.expect("both streams are piped");
        // Not scoped: a daemon the script started may hold the pipe open long after it exits.
        thread::spawn(move || {
            drain(pipe, stream, &sink, &buffer, limit);
            let _ = done.send(());
        });
    }
    drop(done_tx);

    let (status_tx, status_rx) = mpsc::channel::<io::Result<ExitStatus>>();
    thread::spawn(move || {
        let _ = status_tx.send(child.wait());
    });

    let (status, stopped) = wait(command, group, &status_rx);

    let drain_deadline = Instant::now() + DRAIN_AFTER_EXIT;
    for _ in 0..2 {
        let left = drain_deadline.saturating_duration_since(Instant::now());
        if done_rx.recv_timeout(left).is_err() {
            break;
        }
    }
    let take = |i: usize| kept[i].lock().expect("capture lock").clone();

    let end = match (stopped, status) {
        (Some(Stopped::TimedOut(after)), _) => ScriptEnd::TimedOut(after),
        (Some(Stopped::Interrupted), _) => ScriptEnd::Interrupted,
        (None, Some(Ok(status))) => match (status.code(), status.signal()) {
            (Some(code), _) => ScriptEnd::Exited(code),
            (None, Some(signal)) => ScriptEnd::Signalled(signal),
            (None, None) => ScriptEnd::NotStarted("unknown wait status".to_string()),
        },
        (None, Some(Err(e))) => ScriptEnd::NotStarted(format!("waiting for it failed: {e}")),
        (None, None) => ScriptEnd::NotStarted("waiting for it failed".to_string()),
    };
    ScriptOutcome {
        end,
        group: Some(group),
        stdout: take(0),
        stderr: take(1),
        duration: started.elapsed(),
    }
}

/// Why the agent ended a script.
enum Stopped {
    TimedOut(Duration),
    Interrupted,
}

/// How often the wait looks at the clock and for an interruption.
const POLL: Duration = Duration::from_millis(25);

/// Waits for the script, ending its group when the timeout expires or the run is interrupted.
/// The first look at the interruption comes right after the spawn, so an interruption that
/// arrived while the script was starting still ends it.
fn wait(
    command: &ScriptCommand,
    group: ProcessGroup,
    status_rx: &mpsc::Receiver<io::Result<ExitStatus>>,
) -> (Option<io::Result<ExitStatus>>, Option<Stopped>) {
    let deadline = command.timeout.map(|t| Instant::now() + t);
    let stopped = loop {
        if command.interruptible && crate::interrupt::is_interrupted() {
            break Stopped::Interrupted;
        }
        let now = Instant::now();
        if let (Some(deadline), Some(limit)) = (deadline, command.timeout)
            && now >= deadline
        {
            break Stopped::TimedOut(limit);
        }
        let slice = deadline.map_or(POLL, |d| POLL.min(d - now));
        match status_rx.recv_timeout(slice) {
            Ok(status) => return (Some(status), None),
            Err(RecvTimeoutError::Disconnected) => return (None, None),
            Err(RecvTimeoutError::Timeout) => {}
        }
    };
    let grace = if crate::interrupt::is_hard() {
        Duration::ZERO
    } else {
        command.grace
    };
    let mut status = None;
    let leader_exited = |wait| {
        if status.is_none() {
            status = status_rx.recv_timeout(wait).ok();
        }
        status.is_some()
    };
    // Only an interruption hurries: a timed-out script on a calm run gets its whole grace.
    let interrupted = matches!(stopped, Stopped::Interrupted);
    group.terminate(grace, leader_exited, || {
        interrupted && crate::interrupt::is_hard()
    });
    (status.or_else(|| status_rx.recv().ok()), Some(stopped))
}

fn spawn(command: &ScriptCommand) -> io::Result<std::process::Child> {
    let mut cmd = Command::new(&command.path);
    cmd.env_clear()
        .env("PATH", SCRIPT_PATH)
        .envs(user_env())
        .envs(command.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&command.working_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // ETXTBSY: another thread of this process may be between fork and exec while holding a
    // just-written script open for writing; the window is short, so try again briefly.
    let mut attempts = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) && attempts < 20 => {
                attempts += 1;
                thread::sleep(Duration::from_millis(25));
            }
            result => return result,
        }
    }
}

/// `HOME`, `USER` and `LOGNAME` of the user we run as, as `sudo` sets them. Read from
/// `/etc/passwd` itself: the binary is static, and glibc's NSS would load the VM's own
/// (possibly other-version) modules for a user it does not find there.
fn user_env() -> Vec<(&'static str, String)> {
    let uid = nix::unistd::geteuid().as_raw().to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.len() >= 7 && fields[2] == uid)
        .map(|f| {
            vec![
                ("HOME", f[5].to_string()),
                ("USER", f[0].to_string()),
                ("LOGNAME", f[0].to_string()),
            ]
        })
        .unwrap_or_default()
}
