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
