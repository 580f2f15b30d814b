//! A child's process group, and the SIGTERM -> grace -> SIGKILL sequence that ends it.
//!
//! Scripts run as group leaders (`setpgid(0, 0)` at spawn), so a signal to the group also
//! reaches whatever the script started in the background; what left the group is found by
//! `descendants`.

use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::descendants::{Escaped, reap_orphans};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessGroup(Pid);

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

    /// Ends the group and `escaped` (its script's descendants outside it): SIGTERM, then
    /// SIGKILL to whatever is left once `grace` has passed, or at once when `hurry` says so
    /// (a second interruption). `leader_exited` reports, with a wait of at most the given
    /// time, whether the leader has been reaped; the group outlives its leader when
    /// background children ignore SIGTERM. `escaped` is asked before the SIGTERM (given
    /// nothing) and again before the SIGKILL (given what it found the first time), so what
    /// was started during the grace is ended too.
    pub fn terminate(
        self,
        grace: Duration,
        mut leader_exited: impl FnMut(Duration) -> bool,
        hurry: impl Fn() -> bool,
        escaped: impl Fn(&[Escaped]) -> Vec<Escaped>,
    ) {
        let others = escaped(&[]);
        self.signal(Signal::SIGTERM);
        for process in &others {
            process.signal(Signal::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        let mut leader_gone = false;
        let others_alive = || others.iter().any(Escaped::is_alive);
        while Instant::now() < deadline
            && !hurry()
            && (!leader_gone || self.is_alive() || others_alive())
        {
            let pause =
                Duration::from_millis(20).min(deadline.saturating_duration_since(Instant::now()));
            if leader_gone {
                // Members the agent inherited as a subreaper and that died are its zombies,
                // which still count as the group's until reaped.
                reap_orphans();
                std::thread::sleep(pause);
            } else {
                leader_gone = leader_exited(pause);
            }
        }
        reap_orphans();
        if self.is_alive() {
            self.signal(Signal::SIGKILL);
        }
        for process in escaped(&others) {
            process.signal(Signal::SIGKILL);
        }
    }
}
