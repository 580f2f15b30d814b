//! The result of a workflow: the exit-code bits it earned, the failures behind them (as
//! data, see [`Failure`]) and, when something may be left, the command that cleans it up.

use super::deployment::{Deployment, FailedScript, JobRef};
pub use super::failure::Failure;
use crate::contract::{Side, exit_bits};
use crate::order::Steps;

/// How many failed scripts the last lines name one by one.
pub const NAMED_FAILURES: usize = 3;

#[derive(Debug, Default)]
pub struct Outcome {
    bits: i32,
    failures: Vec<Failure>,
    /// The command that cleans up what the run may have left (see [`Outcome::name_cleanup`]).
    cleanup: Option<String>,
    /// The lock that failed, for a run that left nothing (see [`Outcome::retry`]).
    retry: Option<(Box<FailedScript>, &'static str)>,
}

impl Outcome {
    /// Records a failure of the kind `bit` (one of [`exit_bits`]).
    pub fn fail(&mut self, bit: i32, failure: impl Into<Failure>) {
        self.bits |= bit;
        self.failures.push(failure.into());
    }

    /// Records each of `failures` (the workflow's own, or an instance's).
    pub fn fail_all(&mut self, bit: i32, failures: impl IntoIterator<Item = impl Into<Failure>>) {
        for f in failures {
            self.fail(bit, f);
        }
    }

    /// Records the scripts that failed, each with `then` (what that failure meant for the
    /// run); past [`NAMED_FAILURES`] of them, how many more.
    pub fn fail_scripts(&mut self, bit: i32, failed: &[FailedScript], then: Option<&'static str>) {
        for f in failed.iter().take(NAMED_FAILURES) {
            self.fail(
                bit,
                Failure::Script {
                    failed: Box::new(f.clone()),
                    then,
                },
            );
        }
        if failed.len() > NAMED_FAILURES {
            let count = failed.len() - NAMED_FAILURES;
            self.fail(bit, Failure::MoreScripts { count, then });
        }
    }

    /// Ends the workflow early: the same failure, returned for `return outcome.stop(..)`.
    pub fn stop(mut self, failure: impl Into<Failure>) -> Outcome {
        self.fail(exit_bits::GENERAL, failure);
        self
    }

    /// Ends a failed run with its next step. One that may leave something behind (an unlock
    /// that failed or did not run, a store not removed, a VM not reached, an interruption)
    /// names the command that cleans it up, `<via> <workflow>-cleanup`: said last by the
    /// console, and the report's next step. One whose only failure was a lock, every unlock
    /// and store removal having succeeded, left nothing: it names the lock to fix instead.
    pub fn name_next_step(&mut self, via: Option<&str>, workflow: &'static str) {
        if self.succeeded() {
            return;
        }
        let leaves = self.bits & (exit_bits::UNLOCK | exit_bits::CLEANUP) != 0
            || crate::interrupt::is_interrupted();
        let failed_lock = self.failures.iter().find_map(|f| match f {
            Failure::Script { failed, .. } if failed.report.kind.is_lock() => Some(failed),
            _ => None,
        });
        match (leaves, failed_lock) {
            (false, Some(failed)) if self.bits & exit_bits::LOCK != 0 => {
                self.retry = Some((failed.clone(), workflow));
            }
            (true, _) => {
                self.retry = None;
                if let Some(via) = via {
                    self.cleanup = Some(format!("{via} {workflow}-cleanup"));
                }
            }
            _ => {}
        }
    }

    /// After a failed lock that left nothing locked: what to fix, and that the run can be
    /// made again.
    pub fn retry(&self) -> Option<String> {
        self.retry.as_ref().map(|(failed, workflow)| {
            format!(
                "every lock was released; fix {} {}'s {} and run the {workflow} again",
                failed.instance, failed.report.job, failed.report.kind
            )
        })
    }

    /// What failed, in the order it happened.
    pub fn failures(&self) -> &[Failure] {
        &self.failures
    }

    /// The command that cleans up after this run, if it may have left something.
    pub fn cleanup(&self) -> Option<&str> {
        self.cleanup.as_deref()
    }

    /// The lines the console ends a run with: each failure, then the cleanup command.
    pub fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.failures.iter().map(|f| f.to_string()).collect();
        if let Some(command) = &self.cleanup {
            lines.push(format!("to clean up, run: {command}"));
        }
        lines.extend(self.retry());
        lines
    }

    pub fn succeeded(&self) -> bool {
        self.bits == 0
    }

    pub fn exit_code(&self) -> i32 {
        self.bits
    }
}

/// What `side`'s unlock scripts of `steps` were run for, for an interrupted run's last line:
/// the unlock side runs every one of them, whatever was cut short, but those of a VM whose
/// session the interruption ended are left to its agent (the cleanup named after this line
/// is then for a VM whose log shows a failed unlock, or one that could not be reached).
pub fn unlocked(dep: &Deployment, steps: &Steps<JobRef>, side: Side) -> String {
    let unlock = side.unlock();
    let left: Vec<usize> = dep.left_to_agents().collect();
    let ran: Vec<String> = steps
        .unlock_order()
        .flatten()
        .filter(|&&r| dep.job(r).has(unlock) && !left.contains(&r.instance))
        .map(|&r| format!("{} {}", dep.id(r.instance), dep.job(r).name))
        .collect();
    let mut said = Vec::new();
    if !ran.is_empty() {
        said.push(format!("{unlock} ran for {}", ran.join(", ")));
    }
    if !left.is_empty() {
        let vms: Vec<String> = left.iter().map(|&i| dep.id(i).to_string()).collect();
        said.push(format!(
            "the unlocks were left to each VM's agent as its session ended ({}): run the cleanup below if a VM's bbr-agent.log shows a failed unlock, or a VM could not be reached",
            vms.join(", ")
        ));
    }
    if said.is_empty() {
        format!("no job has a {unlock} script, so nothing was unlocked")
    } else {
        said.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::ScriptKind;
    use crate::exec::ScriptEnd;
    use crate::instance::{InstanceId, ScriptReport};

    #[test]
    fn a_failed_script_stays_data_and_the_cleanup_is_its_own_field_said_last() {
        let failed = FailedScript {
            instance: InstanceId {
                group: "db".into(),
                index: "0".into(),
            },
            report: ScriptReport {
                end: ScriptEnd::Exited(3),
                ..ScriptReport::not_started("postgres", ScriptKind::PreBackupLock, "")
            },
        };
        let mut outcome = Outcome::default();
        outcome.fail_scripts(
            exit_bits::LOCK,
            &[failed],
            Some("backup scripts were not run"),
        );
        outcome.name_next_step(Some("bbr-agent"), "backup");
        match outcome.failures() {
            [Failure::Script { failed, .. }] => {
                assert_eq!(failed.instance.to_string(), "db/0");
                assert_eq!(failed.report.end, ScriptEnd::Exited(3));
            }
            other => panic!("{other:?}"),
        }
        // Nothing else failed: every lock was released, and no cleanup is needed.
        assert_eq!(outcome.cleanup(), None);
        assert_eq!(
            outcome.lines(),
            [
                "db/0 postgres pre-backup-lock failed (exit status 3): backup scripts were not run",
                "every lock was released; fix db/0 postgres's pre-backup-lock and run the backup again",
            ]
        );
        outcome.fail(
            exit_bits::UNLOCK,
            Failure::Interrupted("an unlock failed".into()),
        );
        outcome.name_next_step(Some("bbr-agent"), "backup");
        assert_eq!(outcome.cleanup(), Some("bbr-agent backup-cleanup"));
        assert_eq!(outcome.exit_code(), exit_bits::LOCK | exit_bits::UNLOCK);
    }
}
