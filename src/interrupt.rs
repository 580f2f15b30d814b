//! Interruption of a run: SIGTERM, SIGINT or SIGHUP to the agent, or the driver going away
//! (its input ended). The first interruption ends running lock, backup and restore scripts
//! (process group TERM, grace, KILL) and starts no new ones, so the workflow falls through to
//! its unlock path; unlock scripts always run. A second interruption skips the grace periods.
//! (docs/behaviour.md, "Signals and interruption", says it for the operator.)
//!
//! Signals are process-wide, so this state is too. A dedicated thread receives the signals
//! through signal-hook's self-pipe and records them here. Each level of interruption (the
//! first, then any later one) is a latch: a reason, and a pipe whose read end becomes
//! readable when the latch is set and stays readable (it is never drained), so any number of
//! waiters can `poll` it beside their own descriptors and wake at once instead of sleeping
//! in slices. Waiters on a condition variable (the artifact hand-offs) cannot poll: they
//! register a [`Wake`], called right after the first interruption is recorded.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Why the run is interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// SIGINT, SIGTERM or SIGHUP to this process.
    Signal(Signal),
    /// The driver's input ended or broke (`serve`).
    DriverGone,
    /// An interruption after the first (of either kind): grace periods are skipped.
    SecondSignal,
}

/// The two levels a waiter can wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    /// Any interruption: end interruptible scripts, start no new ones.
    Interrupted,
    /// A second one: no more grace periods.
    Hard,
}

/// How long a waiter may sleep between looks where the latch has no pipe (the process could
/// not create one: out of descriptors), so it still notices an interruption.
pub(crate) const FALLBACK_POLL: Duration = Duration::from_millis(25);

struct Latch {
    reason: OnceLock<Reason>,
    /// (read end, write end); `None` when the pipe could not be created.
    pipe: OnceLock<Option<(OwnedFd, OwnedFd)>>,
}

impl Latch {
    const fn new() -> Latch {
        Latch {
            reason: OnceLock::new(),
            pipe: OnceLock::new(),
        }
    }

    fn pipe(&self) -> Option<&(OwnedFd, OwnedFd)> {
        self.pipe
            .get_or_init(|| {
                // Close-on-exec: scripts and sessions must not inherit it.
                nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).ok()
            })
            .as_ref()
    }

    /// Sets the latch; false when it was already set.
    fn set(&self, reason: Reason) -> bool {
        if self.reason.set(reason).is_err() {
            return false;
        }
        if let Some((_, write)) = self.pipe() {
            // One byte, never read: the read end stays readable from now on.
            let _ = nix::unistd::write(write, &[1]);
        }
        true
    }
}

static FIRST: Latch = Latch::new();
static SECOND: Latch = Latch::new();
/// The first signal received, for the exit status and the run's last lines (a signal may
/// come after the driver went away).
static SIGNAL: OnceLock<Signal> = OnceLock::new();

fn latch(level: Level) -> &'static Latch {
    match level {
        Level::Interrupted => &FIRST,
        Level::Hard => &SECOND,
    }
}

/// Something waiting on a condition variable that the first interruption must wake. `wake`
/// takes the waiter's mutex before notifying, so a waiter that looked at the flag under that
/// mutex and then waits cannot miss it.
pub(crate) trait Wake: Send + Sync {
    fn wake(&self);
}

static WAKERS: Mutex<Vec<Weak<dyn Wake>>> = Mutex::new(Vec::new());

fn wakers() -> std::sync::MutexGuard<'static, Vec<Weak<dyn Wake>>> {
    // A panic elsewhere while holding it leaves a list that is still a list.
    WAKERS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Registers `waker` for the first interruption, for as long as it lives.
pub(crate) fn wake_on_interruption(waker: Weak<dyn Wake>) {
    let mut list = wakers();
    list.retain(|w| w.strong_count() > 0);
    list.push(waker);
}

/// Wakes every registered waiter, which then looks at its own stop condition again (a
/// spurious wake-up is harmless). Called by [`trigger`]; tests that stop waiters with their
/// own flag call it too.
pub(crate) fn wake_waiters() {
    let live: Vec<Arc<dyn Wake>> = wakers().iter().filter_map(Weak::upgrade).collect();
    for waker in live {
        waker.wake();
    }
}

/// Records an interruption: a signal number, or `None` when the driver went away.
pub(crate) fn trigger(signal: Option<i32>) {
    let reason = match signal.map(Signal::try_from) {
        Some(Ok(sig)) => Reason::Signal(sig),
        // signal-hook only hands over the signals registered, all of which nix names.
        Some(Err(_)) | None => Reason::DriverGone,
    };
    if let Reason::Signal(sig) = reason {
        let _ = SIGNAL.set(sig);
    }
    let cause = match reason {
        Reason::Signal(sig) => format!("interrupted by {}", sig.as_str()),
        _ => "the driver went away".to_string(),
    };
    if FIRST.set(reason) {
        // Said before the waiters wake: a session with nothing to release exits at once, and
        // the VM's log would lose why it ended.
        tracing::warn!("{cause}: ending running scripts, then unlocking what is locked");
        wake_waiters();
    } else {
        SECOND.set(Reason::SecondSignal);
        tracing::warn!("{cause} again: killing running scripts at once (no grace period)");
    }
}

pub(crate) fn is_interrupted() -> bool {
    FIRST.reason.get().is_some()
}

/// A second interruption: terminate without grace periods.
pub(crate) fn is_hard() -> bool {
    SECOND.reason.get().is_some()
}

/// A descriptor that becomes readable once `level` is reached, for a waiter's `poll`; never
/// read it. `None` when no pipe could be created: the waiter then wakes every
/// [`FALLBACK_POLL`] to look.
pub(crate) fn fd(level: Level) -> Option<BorrowedFd<'static>> {
    latch(level).pipe().map(|(read, _)| read.as_fd())
}

/// Whether `level` is reached, waiting at most `max` for it (`None`: for ever).
pub(crate) fn wait(level: Level, max: Option<Duration>) -> bool {
    let reached = || latch(level).reason.get().is_some();
    if reached() {
        return true;
    }
    match fd(level) {
        Some(fd) => {
            let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
            // EINTR or a failed poll: the caller looks again.
            let _ = poll(&mut fds, poll_timeout(max));
        }
        None => std::thread::sleep(max.map_or(FALLBACK_POLL, |m| m.min(FALLBACK_POLL))),
    }
    reached()
}

/// A `poll` timeout of at most `max` (`None`: none), rounded up to the millisecond so a short
/// wait does not become a busy loop.
pub(crate) fn poll_timeout(max: Option<Duration>) -> PollTimeout {
    match max {
        None => PollTimeout::NONE,
        Some(max) => {
            let millis = max.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
            PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX)
        }
    }
}

/// The first signal received, if any.
pub fn signal() -> Option<i32> {
    SIGNAL.get().map(|s| *s as i32)
}

/// Starts the thread that turns SIGTERM, SIGINT and SIGHUP into interruptions.
pub fn install_signal_handlers() -> std::io::Result<()> {
    // Created now, while descriptors are plenty, not at the first wait.
    let _ = (fd(Level::Interrupted), fd(Level::Hard));
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                trigger(Some(sig));
            }
        })?;
    Ok(())
}

/// The process's exit status for a run whose exit-code bits are `bits`: `128 + the signal`
/// once a signal interrupted it, as shells report it (the cleanup has run by then).
pub fn exit_status(bits: i32) -> i32 {
    signal().map_or(bits, |sig| 128 + sig)
}

/// What interrupted the run, for its last lines: `None` while it is not interrupted.
pub(crate) fn cause() -> Option<String> {
    if !is_interrupted() {
        return None;
    }
    Some(match SIGNAL.get() {
        Some(Signal::SIGINT) => "the operator interrupted the run (SIGINT, Ctrl-C)".into(),
        Some(sig) => format!("the run was interrupted by {}", sig.as_str()),
        None => "the run was interrupted: the driver went away".into(),
    })
}

/// A reader that fails (with [`RunInterrupted`]) once the run is interrupted, so a copy
/// stops at the next read instead of running to its end.
///
/// [`RunInterrupted`]: crate::artifact::handoff::RunInterrupted
pub(crate) struct Interruptible<R>(pub R);

impl<R: std::io::Read> std::io::Read for Interruptible<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if is_interrupted() {
            return Err(crate::artifact::handoff::RunInterrupted::io());
        }
        self.0.read(buf)
    }
}
