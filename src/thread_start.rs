//! Threads the driver and the agent ask of the OS where it may refuse one (a container's
//! `pids.max`, `RLIMIT_NPROC`, memory): a refusal is an error that names what could not start,
//! never a panic while VMs are locked. What it then means (fewer threads, a step failed, a
//! nicety skipped) is the caller's to decide.

use std::io;
use std::thread::JoinHandle;

/// A thread the OS refused.
#[derive(Debug, thiserror::Error)]
#[error("could not start a thread to {what}: {error}")]
pub struct NoThread {
    /// What the thread was for: "read db/0's stderr".
    pub what: String,
    pub error: io::Error,
}

impl NoThread {
    /// As an I/O error (for a writer's or a reader's result), still told apart by [`Self::is`].
    pub fn io(self) -> io::Error {
        io::Error::other(self)
    }

    /// Whether `e` is a refused thread.
    pub fn is(e: &io::Error) -> bool {
        e.get_ref().is_some_and(|inner| inner.is::<NoThread>())
    }
}

/// Starts `work` on a thread of its own; `what` says what it is for, in the error.
pub fn start<T: Send + 'static>(
    what: impl FnOnce() -> String,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>, NoThread> {
    let started = match refused_by_test() {
        Some(error) => Err(error),
        None => std::thread::Builder::new().spawn(work),
    };
    started.map_err(|error| NoThread {
        what: what(),
        error,
    })
}

#[cfg(not(test))]
fn refused_by_test() -> Option<io::Error> {
    None
}

#[cfg(test)]
thread_local! {
    /// How many more threads this (test) thread may start, when limited, and how many it was
    /// refused.
    static LIMIT: std::cell::Cell<Option<(usize, usize)>> = const { std::cell::Cell::new(None) };
}

/// `run` of every item at once: a thread each but the last, which runs on the calling thread,
/// as does each item whose thread the OS refuses (after the others started). The results in
/// the items' order.
pub fn all_at_once<T: Sync, R: Send>(items: &[T], run: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let Some((last, others)) = items.split_last() else {
        return Vec::new();
    };
    let run = &run;
    std::thread::scope(|s| {
        let started: Vec<_> = others
            .iter()
            .map(|item| {
                let refused = refused_by_test();
                let spawned = match refused {
                    Some(error) => Err(error),
                    None => std::thread::Builder::new().spawn_scoped(s, move || run(item)),
                };
                spawned.ok()
            })
            .collect();
        let mut results: Vec<Option<R>> = started
            .iter()
            .zip(others)
            .map(|(thread, item)| match thread {
                Some(_) => None,
                None => Some(run(item)),
            })
            .collect();
        let last = run(last);
        for (result, thread) in results.iter_mut().zip(started) {
            if let Some(thread) = thread {
                *result = Some(
                    thread
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                );
            }
        }
        results
            .into_iter()
            .map(|r| r.expect("every item ran, on a thread of its own or this one"))
            .chain(std::iter::once(last))
            .collect()
    })
}

/// The OS's refusal, as the tests make it: once this thread's allowance is spent.
#[cfg(test)]
fn refused_by_test() -> Option<io::Error> {
    LIMIT.with(|limit| match limit.get() {
        None => None,
        Some((0, refused)) => {
            limit.set(Some((0, refused + 1)));
            Some(io::Error::from_raw_os_error(nix::libc::EAGAIN))
        }
        Some((n, refused)) => {
            limit.set(Some((n - 1, refused)));
            None
        }
    })
}

/// Runs `f` with at most `allowed` threads started by this thread through [`start`]; every
/// one past them is refused as the OS refuses one (EAGAIN).
#[cfg(test)]
pub fn with_threads_allowed<R>(allowed: usize, f: impl FnOnce() -> R) -> R {
    counting_refusals(allowed, f).0
}

/// [`with_threads_allowed`], and how many threads were refused: a site that asks the OS
/// directly is seen asking nothing.
#[cfg(test)]
pub fn counting_refusals<R>(allowed: usize, f: impl FnOnce() -> R) -> (R, usize) {
    let before = LIMIT.with(|l| l.replace(Some((allowed, 0))));
    let result = f();
    let refused = LIMIT
        .with(|l| l.replace(before))
        .map_or(0, |(_, refused)| refused);
    (result, refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_thread_is_an_error_naming_what_it_was_for() {
        let (first, second) = with_threads_allowed(1, || {
            let first = start(|| "count".into(), || 1).map(|t| t.join().unwrap());
            let second = start(|| "read db/0's stderr".into(), || 2).map(|t| t.join().unwrap());
            (first, second)
        });
        assert_eq!(first.unwrap(), 1);
        let e = second.unwrap_err();
        assert_eq!(
            e.to_string(),
            "could not start a thread to read db/0's stderr: Resource temporarily unavailable (os error 11)"
        );
        assert!(NoThread::is(&e.io()));
        assert!(!NoThread::is(&io::Error::other("other")));
        // Outside the limit, threads start again.
        assert_eq!(start(|| "x".into(), || 3).unwrap().join().unwrap(), 3);
    }

    /// Every item runs once whatever threads the OS gives, the results in order; with every
    /// thread it gives, they run at once (each waits for all the others to start).
    #[test]
    fn all_at_once_runs_every_item_on_the_threads_there_are() {
        let items: Vec<u32> = (0..5).collect();
        for allowed in [0, 1, 2, 4] {
            let (results, refused) = counting_refusals(allowed, || {
                all_at_once(&items, |i| (i * 10, std::thread::current().id()))
            });
            let values: Vec<u32> = results.iter().map(|(v, _)| *v).collect();
            assert_eq!(values, [0, 10, 20, 30, 40], "{allowed} allowed");
            assert_eq!(refused, 4 - allowed, "{allowed} allowed");
            let here = std::thread::current().id();
            let on_this_thread = results.iter().filter(|(_, t)| *t == here).count();
            assert_eq!(on_this_thread, 5 - allowed, "{allowed} allowed");
        }
        let barrier = std::sync::Barrier::new(3);
        let met = all_at_once(&[1, 2, 3], |i| {
            barrier.wait();
            *i
        });
        assert_eq!(met, [1, 2, 3]);
        assert!(all_at_once(&Vec::<u32>::new(), |i| *i).is_empty());
    }
}
