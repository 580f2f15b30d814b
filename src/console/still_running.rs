//! The still-running notice: while a script runs (a backup can take hours), one line per
//! script at growing marks of its elapsed time (30s, 1m, 2m, 5m, 10m, 15m, then every 15m),
//! and on a terminal a live line in the progress area from the first mark until it ends.
//!
//! The driver times the scripts itself, around each `run_scripts` call, for local and remote
//! instances alike: the workflow asks for one job at a time, or for jobs that all start at
//! once, so the call's start is each script's start. In a step of jobs that run all at once,
//! the instance says when each ends (`ScriptEvent::Ended`; from an agent, `script_ended`), and
//! its notices and live line stop naming that job while the others go on; an older agent does
//! not say, and its jobs are named until the step ends. An agent of any version gets the
//! notices.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::{Console, Event, Format, phase_of};
use crate::contract::ScriptKind;
use crate::instance::InstanceId;

/// Hidden, for tests: the first mark, as a duration (`300ms`); the later marks keep their
/// proportions to it.
pub const FIRST_ENV: &str = "BBR_AGENT_STILL_RUNNING_FIRST";

/// The marks, in seconds of elapsed time; after the last, one every [`REPEAT`] seconds.
const MARKS: [u64; 6] = [30, 60, 120, 300, 600, 900];
const REPEAT: u64 = 900;

/// When the notices fall due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// The first mark; every mark is scaled by `first / 30s`.
    first: Duration,
}

impl Schedule {
    pub fn from_env() -> Schedule {
        let first = std::env::var(FIRST_ENV)
            .ok()
            .and_then(|v| crate::duration::parse(&v).ok())
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_secs(MARKS[0]));
        Schedule { first }
    }

    /// The elapsed time at which notice `n` (from 0) is due.
    pub fn mark(&self, n: usize) -> Duration {
        let secs = match MARKS.get(n) {
            Some(&s) => s,
            None => {
                let beyond = (n - MARKS.len() + 1) as u64;
                MARKS[MARKS.len() - 1].saturating_add(REPEAT.saturating_mul(beyond))
            }
        };
        let nanos = self.first.as_nanos().saturating_mul(u128::from(secs)) / u128::from(MARKS[0]);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// The steps now running and the one thread that gives their notices, for the whole
/// console: a fleet runs thousands of steps, nearly all over long before their first mark,
/// and a thread started and ended for each was a tenth of the driver's CPU. Started at the
/// first step, it sleeps until the earliest mark of the steps then running.
pub(super) struct Notices {
    shared: Arc<Shared>,
    /// The console the thread writes to: weak, so the thread never keeps it alive.
    console: Weak<Console>,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the thread: a step with an earlier mark than it waits for, or the console gone.
    wake: Condvar,
}

#[derive(Default)]
struct State {
    steps: HashMap<u64, Step>,
    next_key: u64,
    /// Whether the thread runs (false again only if the OS refused it one).
    running: bool,
    /// When the thread wakes on its own; `None` while it waits for a step.
    wakes_at: Option<Instant>,
    /// The console has gone: the thread ends.
    closed: bool,
    /// Threads started, for tests.
    started: usize,
}

/// One `while_running` call: `jobs` of `id` running `kind` since `started`.
struct Step {
    id: InstanceId,
    kind: ScriptKind,
    jobs: Vec<String>,
    started: Instant,
    schedule: Schedule,
    /// Notices given so far.
    given: usize,
    /// The live line of each job still running, once the first notice was given.
    bars: Vec<(String, ProgressBar)>,
}

impl Step {
    fn due(&self) -> Instant {
        self.started
            .checked_add(self.schedule.mark(self.given))
            .unwrap_or_else(|| self.started + Duration::from_secs(u64::from(u32::MAX)))
    }
}

impl Notices {
    pub(super) fn new(console: Weak<Console>) -> Notices {
        Notices {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                wake: Condvar::new(),
            }),
            console,
        }
    }

    /// Threads started so far for this console's notices.
    #[cfg(test)]
    fn threads_started(&self) -> usize {
        self.shared.lock().started
    }

    /// Registers a step now starting; the key ends it.
    fn begin(&self, id: &InstanceId, kind: ScriptKind, jobs: &[String], schedule: Schedule) -> u64 {
        let step = Step {
            id: id.clone(),
            kind,
            jobs: jobs.to_vec(),
            started: Instant::now(),
            schedule,
            given: 0,
            bars: Vec::new(),
        };
        let due = step.due();
        let mut state = self.shared.lock();
        let key = state.next_key;
        state.next_key += 1;
        state.steps.insert(key, step);
        if !state.running {
            let (shared, console) = (Arc::clone(&self.shared), self.console.clone());
            // A notice is a decoration: no thread to spare (the OS refused one) means no
            // notices, never a run cut short while jobs are locked; the next step tries again.
            match std::thread::Builder::new().spawn(move || notify(&shared, &console)) {
                Ok(_) => {
                    state.running = true;
                    state.started += 1;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "no still-running notices: cannot start a thread")
                }
            }
        } else if state.wakes_at.is_none_or(|at| due < at) {
            self.shared.wake.notify_one();
        }
        key
    }

    /// Ends the step: no notice of it after this returns (one being given is finished
    /// first, under the lock), and its live lines are cleared. Returns the notices given.
    fn end(&self, key: u64) -> usize {
        let Some(step) = self.shared.lock().steps.remove(&key) else {
            return 0;
        };
        for (_, bar) in step.bars {
            bar.finish_and_clear();
        }
        step.given
    }

    /// `job`, of the step of `id` running `kind`, ended while the others of its step go on:
    /// no notice names it after this returns, and its live line is cleared.
    pub(super) fn ended(&self, id: &InstanceId, kind: ScriptKind, job: &str) {
        let mut state = self.shared.lock();
        for step in state
            .steps
            .values_mut()
            .filter(|s| s.id == *id && s.kind == kind)
        {
            step.jobs.retain(|j| j != job);
            step.bars.retain(|(j, bar)| {
                let over = j == job;
                if over {
                    bar.finish_and_clear();
                }
                !over
            });
        }
    }
}

impl Drop for Notices {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays whole whatever panicked while holding it: a notice is a decoration.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The notice thread: sleeps until the earliest mark of the steps running, gives the
/// notices due, and ends with the console.
fn notify(shared: &Shared, console: &Weak<Console>) {
    let mut state = shared.lock();
    loop {
        if state.closed {
            return;
        }
        let now = Instant::now();
        let next = state.steps.values().map(Step::due).min();
        state.wakes_at = next;
        match next {
            None => {
                state = shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner)
            }
            Some(due) if due > now => {
                state = shared
                    .wake
                    .wait_timeout(state, due - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
            Some(_) => {
                let Some(console) = console.upgrade() else {
                    return;
                };
                for step in state.steps.values_mut().filter(|s| s.due() <= now) {
                    console.give_notice(step);
                }
                // The console may go with this last reference, and its drop takes the lock.
                drop(state);
                drop(console);
                state = shared.lock();
            }
        }
    }
}

impl Console {
    /// Runs `run` (which runs `kind` for `jobs` on `id`, all starting now) and, while it
    /// runs, gives the still-running notices for each job; every notice is over when it
    /// returns, so a script's own line comes after them.
    pub fn while_running<R>(
        &self,
        id: &InstanceId,
        kind: ScriptKind,
        jobs: &[String],
        run: impl FnOnce() -> R,
    ) -> R {
        /// Ends the step however `run` ends, a panic included.
        struct Running<'a>(&'a Notices, u64);
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                let _ = self.0.end(self.1);
            }
        }
        let key = self.notices.begin(id, kind, jobs, Schedule::from_env());
        let _running = Running(&self.notices, key);
        run()
    }

    /// The notices of `step` now due: one line per job, and the live lines the first time.
    fn give_notice(&self, step: &mut Step) {
        let elapsed = step.started.elapsed();
        for job in &step.jobs {
            self.still_running(&step.id, job, step.kind, elapsed);
        }
        if step.bars.is_empty() {
            step.bars = step
                .jobs
                .iter()
                .filter_map(|job| {
                    self.running_bar(format!("{} {job} {}", step.id, step.kind), elapsed)
                        .map(|bar| (job.clone(), bar))
                })
                .collect();
        }
        step.given += 1;
    }

    /// One notice: `db/0 postgres backup: still running after 5m00s`.
    fn still_running(&self, id: &InstanceId, job: &str, kind: ScriptKind, elapsed: Duration) {
        match self.format {
            Format::Human => self.info(format!(
                "{id} {job} {kind}: still running after {}",
                crate::duration::format(elapsed)
            )),
            Format::Json => self.emit(Event {
                instance: Some(id.to_string()),
                job: Some(job),
                script: Some(kind),
                phase: Some(phase_of(kind)),
                duration_ms: Some(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)),
                ..self.event("info", "script_running")
            }),
        }
    }

    /// The live line in the progress area, on a terminal only.
    fn running_bar(&self, label: String, elapsed: Duration) -> Option<ProgressBar> {
        let bar = ProgressBar::no_length().with_elapsed(elapsed);
        bar.set_style(
            ProgressStyle::with_template("{prefix}: running for {elapsed_precise} {spinner}")
                .expect("a valid progress template"),
        );
        bar.set_prefix(label);
        let bar = self.add_bar(bar)?;
        crate::progress::steady_tick(&bar, Duration::from_millis(250));
        Some(bar)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marks_grow_then_repeat_every_fifteen_minutes() {
        let s = Schedule {
            first: Duration::from_secs(30),
        };
        let marks: Vec<u64> = (0..9).map(|n| s.mark(n).as_secs()).collect();
        assert_eq!(marks, [30, 60, 120, 300, 600, 900, 1800, 2700, 3600]);
    }

    #[test]
    fn a_shorter_first_mark_scales_the_others_and_huge_counts_saturate() {
        let s = Schedule {
            first: Duration::from_millis(300),
        };
        assert_eq!(s.mark(0), Duration::from_millis(300));
        assert_eq!(s.mark(3), Duration::from_secs(3));
        assert_eq!(s.mark(6), Duration::from_secs(18));
        let _ = s.mark(usize::MAX);
    }

    fn vm() -> InstanceId {
        InstanceId {
            group: "db".into(),
            index: "0".into(),
        }
    }

    #[test]
    fn steps_over_before_their_first_mark_share_one_thread_and_get_no_notice() {
        let console = Console::new(false, Format::Json);
        let jobs = ["postgres".to_string()];
        for _ in 0..50 {
            let ran = console.while_running(&vm(), ScriptKind::Backup, &jobs, || 7);
            assert_eq!(ran, 7);
        }
        // One thread for the console, not one a step (a fleet runs thousands of steps).
        assert_eq!(console.notices.threads_started(), 1);
        let key = console
            .notices
            .begin(&vm(), ScriptKind::Backup, &jobs, Schedule::from_env());
        assert_eq!(
            console.notices.end(key),
            0,
            "a notice before the first mark"
        );
    }

    #[test]
    fn steps_running_at_once_each_get_their_notices_from_the_one_thread() {
        let console = Console::new(false, Format::Json);
        let fast = Schedule {
            first: Duration::from_millis(20),
        };
        let jobs = ["postgres".to_string()];
        let (a, b) = (
            console
                .notices
                .begin(&vm(), ScriptKind::Backup, &jobs, fast),
            console
                .notices
                .begin(&vm(), ScriptKind::PreBackupLock, &jobs, fast),
        );
        // 25 times the first mark: each step is past it, whatever the machine's load.
        std::thread::sleep(Duration::from_millis(500));
        let (given_a, given_b) = (console.notices.end(a), console.notices.end(b));
        assert!(
            given_a >= 1 && given_b >= 1,
            "notices given: {given_a}, {given_b}"
        );
        assert_eq!(console.notices.threads_started(), 1);
    }

    #[test]
    fn the_thread_ends_with_its_console() {
        let console = Console::new(false, Format::Json);
        console.while_running(&vm(), ScriptKind::Backup, &["postgres".to_string()], || ());
        let shared = Arc::downgrade(&console.notices.shared);
        drop(console);
        // The thread holds the shared state until it ends; it ends once woken by the drop.
        let mut waited = 0;
        while shared.upgrade().is_some() {
            assert!(
                waited < 2000,
                "the notice thread outlived its console by 20 s"
            );
            std::thread::sleep(Duration::from_millis(10));
            waited += 1;
        }
    }
}
