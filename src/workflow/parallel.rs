//! Work on many instances at once, never more than `--max-in-flight` at a time.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::thread;

/// Applies `f` to every item on at most `limit` threads; results come back in item order.
/// A thread the OS refuses (a container's `pids.max`, a fleet's many sessions) is one fewer,
/// never a panic while VMs are locked: the calling thread is one of the workers.
pub fn bounded_map<T: Send, R: Send>(
    items: Vec<T>,
    limit: usize,
    f: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    map_on(items, limit, f, |_| true)
}

/// [`bounded_map`], where `may_start(n)` says whether the `n`th extra thread (from 0) may be
/// asked of the OS: a refusal stands for the OS's in the tests.
fn map_on<T: Send, R: Send>(
    items: Vec<T>,
    limit: usize,
    f: impl Fn(T) -> R + Sync,
    may_start: impl Fn(usize) -> bool,
) -> Vec<R> {
    let count = items.len();
    if count <= 1 || limit <= 1 {
        return items.into_iter().map(f).collect();
    }
    let queue = Mutex::new(items.into_iter().enumerate().collect::<VecDeque<_>>());
    let results = Mutex::new((0..count).map(|_| None).collect::<Vec<Option<R>>>());
    let work = || {
        loop {
            let next = queue.lock().expect("queue lock").pop_front();
            let Some((i, item)) = next else { break };
            let result = f(item);
            results.lock().expect("results lock")[i] = Some(result);
        }
    };
    thread::scope(|s| {
        for n in 0..limit.min(count) - 1 {
            let started = may_start(n) && thread::Builder::new().spawn_scoped(s, work).is_ok();
            if !started {
                tracing::debug!(threads = n + 1, "no more threads: going on with these");
                break;
            }
        }
        work();
    });
    results
        .into_inner()
        .expect("results lock")
        .into_iter()
        .map(|r| r.expect("every item was processed"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn keeps_order_and_never_exceeds_the_limit() {
        let running = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let out = bounded_map((0..20).collect(), 3, |i: usize| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            thread::sleep(Duration::from_millis(5));
            running.fetch_sub(1, Ordering::SeqCst);
            i * 2
        });
        assert_eq!(out, (0..20).map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(peak.load(Ordering::SeqCst), 3);
    }

    /// With no thread to be had beyond the caller's (or one), every item is still done, in
    /// order, by the threads there are.
    #[test]
    fn threads_refused_leave_the_work_to_the_threads_there_are() {
        for allowed in [0, 1] {
            let running = AtomicUsize::new(0);
            let peak = AtomicUsize::new(0);
            let out = map_on(
                (0..12).collect(),
                8,
                |i: usize| {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    thread::sleep(Duration::from_millis(5));
                    running.fetch_sub(1, Ordering::SeqCst);
                    i + 1
                },
                |n| n < allowed,
            );
            assert_eq!(out, (1..13).collect::<Vec<_>>());
            assert_eq!(peak.load(Ordering::SeqCst), allowed + 1);
        }
    }
}
