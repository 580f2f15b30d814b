//! Interruption of a run: SIGTERM, SIGINT or SIGHUP to the agent, or the driver going away
//! (its input ended). The first interruption ends running lock, backup and restore scripts
//! (process group TERM, grace, KILL) and starts no new ones, so the workflow falls through to
//! its unlock path; unlock scripts always run. A second interruption skips the grace periods.
//!
//! Signals are process-wide, so this state is too. A dedicated thread receives the signals
//! through signal-hook's self-pipe and only records them here; everything else polls.

use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

static COUNT: AtomicU32 = AtomicU32::new(0);
static SIGNAL: AtomicI32 = AtomicI32::new(0);

/// Records an interruption: a signal number, or `None` when the driver went away.
pub fn trigger(signal: Option<i32>) {
    if let Some(sig) = signal {
        let _ = SIGNAL.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
    }
    let n = COUNT.fetch_add(1, Ordering::SeqCst) + 1;
    let cause = match signal {
        Some(sig) => nix::sys::signal::Signal::try_from(sig)
            .map(|s| format!("interrupted by {}", s.as_str()))
            .unwrap_or_else(|_| format!("interrupted by signal {sig}")),
        None => "the driver went away".to_string(),
    };
    if n == 1 {
        tracing::warn!("{cause}: ending running scripts, then unlocking what is locked");
    } else {
        tracing::warn!("{cause} again: killing running scripts at once (no grace period)");
    }
}

pub fn is_interrupted() -> bool {
    COUNT.load(Ordering::SeqCst) > 0
}

/// A second interruption: terminate without grace periods.
pub fn is_hard() -> bool {
    COUNT.load(Ordering::SeqCst) > 1
}

/// The first signal received, if any.
pub fn signal() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        n => Some(n),
    }
}

/// Starts the thread that turns SIGTERM, SIGINT and SIGHUP into interruptions.
pub fn install_signal_handlers() -> std::io::Result<()> {
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

/// What interrupted the run, for its last lines: `None` while it is not interrupted.
pub fn cause() -> Option<String> {
    if !is_interrupted() {
        return None;
    }
    Some(match signal() {
        Some(sig) if sig == SIGINT => "the operator interrupted the run (SIGINT, Ctrl-C)".into(),
        Some(sig) => match nix::sys::signal::Signal::try_from(sig) {
            Ok(s) => format!("the run was interrupted by {}", s.as_str()),
            Err(_) => format!("the run was interrupted by signal {sig}"),
        },
        None => "the run was interrupted: the driver went away".into(),
    })
}

/// A reader that fails (with [`RunInterrupted`]) once the run is interrupted, so a copy
/// stops at the next read instead of running to its end.
///
/// [`RunInterrupted`]: crate::artifact::handoff::RunInterrupted
pub struct Interruptible<R>(pub R);

impl<R: std::io::Read> std::io::Read for Interruptible<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if is_interrupted() {
            return Err(crate::artifact::handoff::RunInterrupted::io());
        }
        self.0.read(buf)
    }
}
