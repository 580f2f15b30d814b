//! A process group, and the one way the agent and the driver end one: SIGTERM, a grace
//! period, SIGKILL ([`ProcessGroup::terminate`]).
//!
//! Scripts run as group leaders (`setpgid(0, 0)` at spawn), so a signal to the group also
//! reaches whatever the script started in the background; what left the group is found by
//! `descendants`. The driver's sessions lead groups of their own too, and the journal names
//! the groups of a run that died.

use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::descendants::Escaped;
use crate::interrupt::{self, Level};

/// How often the end of a group whose leader is gone is looked for: the kernel tells no one
/// when the last member of a group exits.
const MEMBERS_POLL: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessGroup(Pid);

/// What ending a group looks after besides the group itself: its leader, when it is this
/// process's child (it must be reaped: a zombie still counts as the group's), and processes
/// that left the group but end with it.
pub trait Members {
    /// Waits at most `max` for the leader to exit and be reaped, or until `wake` is
    /// readable; says whether it has been reaped (or is not this process's to reap).
    fn wait_leader(&mut self, max: Duration, wake: Option<BorrowedFd<'_>>) -> bool;

    /// Processes outside the group to end with it, given those found before.
    fn escaped(&self, _known: &[Escaped]) -> Vec<Escaped> {
        Vec::new()
    }

    /// Reaps members this process inherited (as a subreaper) that died.
    fn reap(&mut self) {}
}

/// A group none of whose processes are this process's children (the scripts of a run that
/// died): nothing to reap, only to signal and watch.
pub struct NotOurs;

impl Members for NotOurs {
    fn wait_leader(&mut self, _max: Duration, _wake: Option<BorrowedFd<'_>>) -> bool {
        true
    }
}

/// A group led by this process's child `pid`, reaped with `waitpid` (a driver's session).
pub struct ChildLeader {
    pid: Pid,
    reaped: bool,
}

impl ChildLeader {
    pub fn new(pid: Pid) -> ChildLeader {
        ChildLeader { pid, reaped: false }
    }

    /// Waits for the leader however long it takes (it has been sent SIGKILL).
    pub fn reap_blocking(&mut self) {
        while !self.reaped {
            // EINTR: a signal came first; any other answer means nothing is left to wait for.
            self.reaped = waitpid(self.pid, None) != Err(Errno::EINTR);
        }
    }
}

impl Members for ChildLeader {
    fn wait_leader(&mut self, max: Duration, wake: Option<BorrowedFd<'_>>) -> bool {
        let deadline = Instant::now() + max;
        let mut pause = Duration::from_micros(250);
        while !self.reaped {
            match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => {}
                // Reaped, or not ours to reap (ECHILD): either way, nothing left to wait for.
                Ok(_) | Err(_) => self.reaped = true,
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if self.reaped || left.is_zero() {
                break;
            }
            // No pidfd for a session: the leader is looked at ever less often, up to 20 ms.
            let nap = pause.min(left);
            match wake {
                Some(fd) => {
                    let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
                    if nix::poll::poll(&mut fds, interrupt::poll_timeout(Some(nap))) == Ok(1) {
                        break;
                    }
                }
                None => std::thread::sleep(nap),
            }
            pause = (pause * 2).min(MEMBERS_POLL);
        }
        self.reaped
    }
}

impl ProcessGroup {
    /// The group led by the child with this pid.
    pub fn led_by(pid: u32) -> ProcessGroup {
        ProcessGroup(Pid::from_raw(pid as i32))
    }

    /// A group known by its id (e.g. from the journal of a run that died).
    pub fn from_id(pgid: i32) -> ProcessGroup {
        ProcessGroup(Pid::from_raw(pgid))
    }

    pub fn id(self) -> i32 {
        self.0.as_raw()
    }

    pub fn signal(self, signal: Signal) {
        // ESRCH: the group is already gone, which is what we want.
        let _ = killpg(self.0, signal);
    }

    /// Whether any process of the group is still alive (signal 0 probes without sending).
    pub fn is_alive(self) -> bool {
        !matches!(killpg(self.0, None), Err(Errno::ESRCH))
    }

    /// Ends the group and what `members` names outside it: SIGTERM, then SIGKILL to whatever
    /// is left once `grace` has passed. With `hurry`, a second interruption cuts the grace
    /// short (at once if it came already). The group outlives its leader when background
    /// children ignore SIGTERM, so the wait goes on until the group is gone. `members` is
    /// asked for escaped processes before the SIGTERM (given nothing) and again before the
    /// SIGKILL (given what it found the first time), so what was started during the grace
    /// is ended too.
    pub fn terminate(self, grace: Duration, hurry: bool, members: &mut dyn Members) {
        let others = members.escaped(&[]);
        self.signal(Signal::SIGTERM);
        for process in &others {
            process.signal(Signal::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        let wake = hurry.then(|| interrupt::fd(Level::Hard)).flatten();
        let hurried = || hurry && interrupt::is_hard();
        let others_alive = || others.iter().any(Escaped::is_alive);
        let mut leader_gone = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || hurried() {
                break;
            }
            // Without the pipe, a second interruption is looked for every FALLBACK_POLL.
            let left = match (hurry, wake) {
                (true, None) => left.min(interrupt::FALLBACK_POLL),
                _ => left,
            };
            if !leader_gone {
                leader_gone = members.wait_leader(left, wake);
                continue;
            }
            // Members this process inherited and that died are its zombies, which still
            // count as the group's until reaped.
            members.reap();
            if !self.is_alive() && !others_alive() {
                break;
            }
            let pause = left.min(MEMBERS_POLL);
            match wake {
                Some(_) => {
                    interrupt::wait(Level::Hard, Some(pause));
                }
                None => std::thread::sleep(pause),
            }
        }
        members.reap();
        if self.is_alive() {
            self.signal(Signal::SIGKILL);
        }
        for process in members.escaped(&others) {
            process.signal(Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    /// Gone, or a zombie nobody reaped yet (the test process may be a subreaper).
    fn gone(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        }
    }

    /// A leader whose background child (same group) ignores SIGTERM: `terminate` ends the
    /// leader with SIGTERM, waits out the grace for the grandchild, then kills it.
    #[test]
    #[allow(clippy::zombie_processes)]
    fn terminating_the_leader_ends_a_grandchild_in_its_group_that_ignores_sigterm() {
        let mut leader = Command::new("/bin/sh")
            // The grandchild says its pid once it ignores SIGTERM, then becomes `sleep`.
            .args([
                "-c",
                "sh -c 'trap \"\" TERM; echo $$; exec sleep 60' & wait",
            ])
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("start sh");
        let mut line = String::new();
        BufReader::new(leader.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("the grandchild's pid");
        let grandchild: i32 = line.trim().parse().expect("a pid");
        let group = ProcessGroup::led_by(leader.id());
        assert!(!gone(grandchild), "the grandchild should run first");

        // The leader is reaped by `terminate` (through ChildLeader), not by `leader.wait()`.
        let mut members = ChildLeader::new(Pid::from_raw(leader.id() as i32));
        group.terminate(Duration::from_millis(300), false, &mut members);

        assert!(members.reaped, "the leader should have been reaped");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !gone(grandchild) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let outlived = !gone(grandchild);
        if outlived {
            // Leave nothing running behind a failure.
            group.signal(Signal::SIGKILL);
        }
        assert!(
            !outlived,
            "the grandchild {grandchild} outlived its group's end"
        );
    }
}
