//! What ends a driver's session besides the driver itself: an interruption of the driver
//! (every live session at once, so each agent sees its input end and unlocks what it locked,
//! on its own) and a `hello` not answered in time.
//!
//! No thread per session: one thread for the whole driver waits on the interruption's
//! descriptor, and the session's output is read through [`SessionOutput`], whose wait for the
//! `hello` answer is a `poll` bounded by the connect deadline.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::exec::{ChildLeader, Members, ProcessGroup};
use crate::interrupt::{self, Level};

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

/// Registers a session's group; one started after the interruption is ended at once.
pub fn register(group: ProcessGroup) -> Registered {
    let mut live = live();
    if interrupt::is_interrupted() {
        group.signal(Signal::SIGTERM);
    } else {
        live.groups.insert(group.id());
        if !live.watching {
            live.watching = true;
            thread::spawn(end_all_on_interruption);
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
        if !self.leader.wait_leader(limit, None) {
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

impl Read for SessionOutput {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.wait_readable();
        self.file.read(buf)
    }
}
