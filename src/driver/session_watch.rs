//! What ends a driver's session besides the driver itself: an interruption of the driver
//! (every live session at once, so each agent sees its input end and unlocks what it locked,
//! on its own) and a `hello` not answered in time.
//!
//! No thread per session: one thread for the whole driver waits on the interruption's
//! descriptor, and the session's output is read through [`SessionOutput`], whose wait for the
//! `hello` answer is a `poll` bounded by the connect deadline.
//!
//! A session's exit is waited for on a pidfd (Linux 5.3), which says it exited without reaping
//! it; then it is reaped, one session at a time for the whole driver. A reap flushes the
//! leader's `/proc` entries from the dentry cache (`release_task` ->
//! `proc_invalidate_siblings_dcache` -> `d_walk`), and fifty of them at once (a fleet's
//! sessions end together) spun on each other's locks: 0.9 of the driver's 2.2 CPU-s at 1,000
//! VMs, half that one at a time (docs/benchmarks.md, "Fleet, stop 14").

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::exec::{ChildLeader, Members, ProcessGroup};
use crate::interrupt::{self, Level};
use crate::thread_start::{self, NoThread};

/// How long a session that did not answer in time has after SIGTERM, before SIGKILL.
const HELLO_KILL_GRACE: Duration = Duration::from_secs(2);

/// The groups of the sessions still running, SIGTERMed on the first interruption.
struct Live {
    groups: BTreeSet<i32>,
    watching: bool,
}

static LIVE: Mutex<Live> = Mutex::new(Live {
    groups: BTreeSet::new(),
    watching: false,
});

fn live() -> std::sync::MutexGuard<'static, Live> {
    // A panic elsewhere while holding it leaves a set that is still a set.
    LIVE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A session's group, ended with the others on an interruption until [`Registered::end`]
/// (which comes before its leader is reaped, so a reused pid is never signalled).
pub struct Registered {
    group: ProcessGroup,
    ended: bool,
}

/// Starts the thread that ends every live session on the first interruption, unless it runs
/// already. Called before a session starts: one that could not be ended by an interruption
/// (its VM's jobs left locked until the session's own end) is not started.
pub fn watch() -> Result<(), NoThread> {
    start_watching(&mut live())
}

fn start_watching(live: &mut Live) -> Result<(), NoThread> {
    if !live.watching {
        thread_start::start(
            || "end the sessions on an interruption".into(),
            end_all_on_interruption,
        )?;
        live.watching = true;
    }
    Ok(())
}

/// Registers a session's group; one started after the interruption is ended at once.
pub fn register(group: ProcessGroup) -> Registered {
    let mut live = live();
    if interrupt::is_interrupted() {
        group.signal(Signal::SIGTERM);
    } else {
        live.groups.insert(group.id());
        // Started by [`watch`] before the session was: only a caller that did not call it
        // can meet a refusal here.
        if let Err(e) = start_watching(&mut live) {
            tracing::warn!(error = %e, "a session an interruption will not end");
        }
    }
    Registered {
        group,
        ended: false,
    }
}

impl Registered {
    /// The session is over (or being ended by its driver): an interruption leaves it alone.
    pub fn end(&mut self) {
        if !self.ended {
            self.ended = true;
            live().groups.remove(&self.group.id());
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.end();
    }
}

/// Waits for the first interruption (blocked on its descriptor), then sends SIGTERM to every
/// live session.
fn end_all_on_interruption() {
    while !interrupt::wait(Level::Interrupted, None) {}
    let live = live();
    for &id in &live.groups {
        ProcessGroup::from_id(id).signal(Signal::SIGTERM);
    }
}

/// The session's stdout. Until [`SessionOutput::answered`], a read waits at most until the
/// connect deadline; past it the session is ended (SIGTERM, a grace, SIGKILL) and the read
/// goes on to the end of the output.
pub struct SessionOutput {
    file: File,
    deadline: Option<Instant>,
    group: Registered,
    pid: Pid,
    leader: ChildLeader,
    timed_out: bool,
}

impl SessionOutput {
    /// `deadline`: `None` for no limit.
    pub fn new(file: File, pid: Pid, deadline: Option<Instant>) -> SessionOutput {
        let group = ProcessGroup::led_by(pid.as_raw() as u32);
        SessionOutput {
            file,
            deadline,
            group: register(group),
            pid,
            leader: ChildLeader::new(pid),
            timed_out: false,
        }
    }

    /// `hello` was answered: no more deadline. False when it came too late (the session was
    /// ended for not answering).
    pub fn answered(&mut self) -> bool {
        self.deadline = None;
        !self.timed_out
    }

    pub fn timed_out(&self) -> bool {
        self.timed_out
    }

    /// Ends the session's part in the interruption, then reaps the leader, killing its group
    /// once `limit` has passed.
    pub fn wait_or_kill(&mut self, limit: Duration) {
        self.group.end();
        let deadline = Instant::now() + limit;
        // Without a pidfd (an old kernel), the leader is looked at ever less often instead,
        // and reaped as soon as it is seen gone.
        let exited = pidfd_open(self.pid).is_some_and(|pidfd| exited_by(&pidfd, deadline));
        // Held only for a reap that does not wait: the leader has exited.
        let _one_at_a_time = exited.then(|| REAPING.lock().unwrap_or_else(|p| p.into_inner()));
        let left = deadline.saturating_duration_since(Instant::now());
        if !self.leader.wait_leader(left, None) {
            self.group.group.signal(Signal::SIGKILL);
            self.leader.reap_blocking();
        }
    }

    fn wait_readable(&mut self) {
        let Some(deadline) = self.deadline else {
            return;
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let mut fds = [PollFd::new(self.file.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, interrupt::poll_timeout(Some(left))) {
                Ok(0) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                // Readable, or a poll that cannot work: the read says what is there.
                Ok(_) | Err(_) => return,
            }
        }
        self.deadline = None;
        self.timed_out = true;
        // Ended by its driver from here on, not by an interruption.
        self.group.end();
        let group = self.group.group;
        group.terminate(HELLO_KILL_GRACE, false, &mut self.leader);
    }
}

/// A pidfd for the session's leader, or `None` where the kernel has no `pidfd_open`.
fn pidfd_open(pid: Pid) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and a flags word and returns a new descriptor or -1; no
    // memory is passed. The pid is our unreaped child, so it cannot name another process.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the descriptor was just created for us and nothing else owns it; pidfds are
    // created close-on-exec.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Held while a session that has exited is reaped: one reap at a time.
static REAPING: Mutex<()> = Mutex::new(());

/// Whether the process of `pidfd` exited by `deadline` (not reaped: a pidfd becomes readable
/// when its process exits).
fn exited_by(pidfd: &OwnedFd, deadline: Instant) -> bool {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, interrupt::poll_timeout(Some(left))) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => {}
            Ok(_) => return true,
            // A poll that cannot work: the waits without a pidfd take over.
            Err(_) => return false,
        }
    }
}

impl Read for SessionOutput {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.wait_readable();
        self.file.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::errno::Errno;
    use nix::sys::wait::{WaitPidFlag, waitpid};

    fn session(command: &str, limit: Duration) -> Pid {
        let child = super::super::session_command::spawn(command).unwrap();
        let pid = child.pid;
        drop(child.stdin);
        let mut out = SessionOutput::new(child.stdout, pid, None);
        out.wait_or_kill(limit);
        pid
    }

    /// A session that ends by itself is waited for to its end (not killed at once) and reaped.
    #[test]
    fn a_session_that_exits_is_reaped_once_it_ended() {
        let dir = tempfile::tempdir().unwrap();
        let done = dir.path().join("done");
        let pid = session(
            &format!("sleep 0.2; echo > '{}'", done.display()),
            Duration::from_secs(60),
        );
        assert!(done.exists(), "the session was ended before it finished");
        assert_eq!(waitpid(pid, Some(WaitPidFlag::WNOHANG)), Err(Errno::ECHILD));
    }

    /// One that does not end within its limit is killed, its group with it, and reaped.
    #[test]
    fn a_session_that_does_not_exit_is_killed_at_its_limit_and_reaped() {
        let pid = session("sleep 600", Duration::from_millis(100));
        assert_eq!(waitpid(pid, Some(WaitPidFlag::WNOHANG)), Err(Errno::ECHILD));
        let group = nix::sys::signal::killpg(pid, None);
        assert_eq!(group, Err(Errno::ESRCH), "its group is gone");
    }

    /// Without a thread to watch for the interruption, `watch` says so (and a session is not
    /// started); the next call tries again.
    #[test]
    fn a_refused_watcher_is_an_error_and_is_tried_again() {
        let mut live = Live {
            groups: BTreeSet::new(),
            watching: false,
        };
        let refused = thread_start::with_threads_allowed(0, || start_watching(&mut live));
        let e = refused.unwrap_err().to_string();
        assert!(
            e.starts_with("could not start a thread to end the sessions on an interruption: "),
            "{e}"
        );
        assert!(!live.watching);
        start_watching(&mut live).unwrap();
        assert!(live.watching);
    }

    /// Sessions ending together are each reaped, one at a time.
    #[test]
    fn sessions_ending_together_are_all_reaped() {
        let pids: Vec<Pid> = std::thread::scope(|s| {
            let ends: Vec<_> = (0..8)
                .map(|_| s.spawn(|| session("true", Duration::from_secs(60))))
                .collect();
            ends.into_iter().map(|e| e.join().unwrap()).collect()
        });
        for pid in pids {
            assert_eq!(waitpid(pid, Some(WaitPidFlag::WNOHANG)), Err(Errno::ECHILD));
        }
    }
}
