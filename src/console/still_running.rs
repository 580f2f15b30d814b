//! The still-running notice: while a script runs (a backup can take hours), one line per
//! script at growing marks of its elapsed time (30s, 1m, 2m, 5m, 10m, 15m, then every 15m),
//! and on a terminal a live line in the progress area from the first mark until it ends.
//!
//! The driver times the scripts itself, around each `run_scripts` call, for local and remote
//! instances alike: the workflow asks for one job at a time, or for jobs that all start at
//! once, so the call's start is each script's start. No protocol message is needed, and an
//! agent of any version gets the notice.

use std::sync::mpsc::{self, RecvTimeoutError};
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
        let started = Instant::now();
        let schedule = Schedule::from_env();
        let (stop, stopped) = mpsc::channel::<()>();
        std::thread::scope(|scope| {
            // A notice is a decoration: no thread to spare (the OS refused one) means no
            // notices, never a run cut short while jobs are locked.
            let notices = std::thread::Builder::new().spawn_scoped(scope, || {
                self.notify(id, kind, jobs, started, schedule, stopped)
            });
            if let Err(e) = notices {
                tracing::debug!(error = %e, "no still-running notices: cannot start a thread");
            }
            let result = run();
            drop(stop);
            result
        })
    }

    fn notify(
        &self,
        id: &InstanceId,
        kind: ScriptKind,
        jobs: &[String],
        started: Instant,
        schedule: Schedule,
        stopped: mpsc::Receiver<()>,
    ) {
        let mut bars: Vec<ProgressBar> = Vec::new();
        for n in 0.. {
            let wait = schedule.mark(n).saturating_sub(started.elapsed());
            match stopped.recv_timeout(wait) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => break,
            }
            let elapsed = started.elapsed();
            for job in jobs {
                self.still_running(id, job, kind, elapsed);
            }
            if bars.is_empty() {
                bars = jobs
                    .iter()
                    .filter_map(|job| self.running_bar(format!("{id} {job} {kind}"), elapsed))
                    .collect();
            }
        }
        for bar in bars {
            bar.finish_and_clear();
        }
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
        bar.enable_steady_tick(Duration::from_millis(250));
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
}
