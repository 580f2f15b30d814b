//! The sessions of a run that are still connecting (their command started, no `hello` answer
//! yet), and the one line that names them every 10s: a VM that is slow to answer, or never
//! answers, is never a silent wait.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::thread;
use std::time::{Duration, Instant};

use crate::instance::InstanceId;
use crate::thread_start;

/// Hidden, for tests: the interval between the lines, as a duration (`500ms`).
pub const INTERVAL_ENV: &str = "BBR_AGENT_CONNECTING_EVERY";
const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// At most this many names on the line; the rest are counted.
const MAX_NAMED: usize = 20;

/// Where the line goes (the console).
pub type Notice = Arc<dyn Fn(&str) + Send + Sync>;

/// Shared by every session of a run.
#[derive(Clone)]
pub struct Connecting {
    inner: Arc<Inner>,
}

struct Inner {
    notice: Notice,
    every: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// By the order they started in: the name and when.
    pending: BTreeMap<u64, (String, Instant)>,
    next: u64,
    ticking: bool,
}

/// One session that is connecting; it leaves the list when dropped.
pub struct Pending {
    inner: Arc<Inner>,
    key: u64,
}

impl Connecting {
    pub fn new(notice: Notice) -> Connecting {
        let every = std::env::var(INTERVAL_ENV)
            .ok()
            .and_then(|v| crate::duration::parse(&v).ok())
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_INTERVAL);
        Connecting {
            inner: Arc::new(Inner {
                notice,
                every,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// `id` starts connecting; the line names it until the returned guard is dropped.
    pub fn start(&self, id: &InstanceId) -> Pending {
        let mut state = lock(&self.inner.state);
        let key = state.next;
        state.next += 1;
        state.pending.insert(key, (id.to_string(), Instant::now()));
        if !state.ticking {
            let weak = Arc::downgrade(&self.inner);
            // The line is a nicety: without a thread for it (the OS refused one), the sessions
            // connect all the same, unnamed; the next one to start tries again.
            match thread_start::start(
                || "name the sessions still connecting".into(),
                move || tick(weak),
            ) {
                Ok(_) => state.ticking = true,
                Err(e) => tracing::debug!(error = %e, "no still-connecting line"),
            }
        }
        Pending {
            inner: Arc::clone(&self.inner),
            key,
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        lock(&self.inner.state).pending.remove(&self.key);
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    // A panic elsewhere while holding it leaves a list that is still a list.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Says the line every interval while any session is connecting; ends when none is (the next
/// one to start starts it again) or when the run's sessions are all gone.
fn tick(weak: Weak<Inner>) {
    let step = Duration::from_millis(100);
    let mut since = Instant::now();
    loop {
        thread::sleep(step);
        let Some(inner) = weak.upgrade() else { return };
        let mut state = lock(&inner.state);
        if state.pending.is_empty() {
            state.ticking = false;
            return;
        }
        if since.elapsed() < inner.every {
            continue;
        }
        since = Instant::now();
        let line = line(&state.pending);
        drop(state);
        (inner.notice)(&line);
    }
}

/// `still connecting: db/0, db/1 (20s)`: the time is the longest wait among them.
fn line(pending: &BTreeMap<u64, (String, Instant)>) -> String {
    let mut names: Vec<&str> = pending
        .values()
        .take(MAX_NAMED)
        .map(|(n, _)| n.as_str())
        .collect();
    let more = pending.len().saturating_sub(MAX_NAMED);
    let more = format!("{more} more");
    if pending.len() > MAX_NAMED {
        names.push(&more);
    }
    let longest = pending
        .values()
        .map(|(_, t)| t.elapsed())
        .max()
        .unwrap_or_default();
    let waited = crate::duration::format_limit(Duration::from_secs(longest.as_secs()));
    format!("still connecting: {} ({waited})", names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_each_pending_session_and_counts_past_the_limit() {
        let now = Instant::now() - Duration::from_secs(21);
        let pending: BTreeMap<u64, (String, Instant)> =
            (0..25).map(|i| (i, (format!("db/{i}"), now))).collect();
        let text = line(&pending);
        assert!(text.starts_with("still connecting: db/0, db/1, "), "{text}");
        assert!(text.contains("db/19, 5 more (21s)"), "{text}");
        assert!(!text.contains("db/20"), "{text}");
    }

    #[test]
    fn a_finished_session_leaves_the_list() {
        let connecting = Connecting::new(Arc::new(|_| {}));
        let id = |index: &str| InstanceId {
            group: "db".into(),
            index: index.into(),
        };
        let a = connecting.start(&id("0"));
        let _b = connecting.start(&id("1"));
        drop(a);
        let state = lock(&connecting.inner.state);
        let names: Vec<_> = state.pending.values().map(|(n, _)| n.clone()).collect();
        assert_eq!(names, ["db/1"]);
    }

    /// Without a thread for the line, a session still connects (listed, unnamed on the
    /// console); the next session to start starts the line.
    #[test]
    fn a_refused_ticker_is_skipped_and_tried_again_by_the_next_session() {
        let connecting = Connecting::new(Arc::new(|_| {}));
        let id = |index: &str| InstanceId {
            group: "db".into(),
            index: index.into(),
        };
        let first = thread_start::with_threads_allowed(0, || connecting.start(&id("0")));
        {
            let state = lock(&connecting.inner.state);
            assert!(!state.ticking);
            assert_eq!(state.pending.len(), 1);
        }
        let _second = connecting.start(&id("1"));
        assert!(lock(&connecting.inner.state).ticking);
        drop(first);
    }
}
