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

    /// Ends a failed run that leaves something to clean up (a lock or unlock that failed, a
    /// store not removed, an interruption) with the command that cleans it up, `<via>
    /// <cleanup>`: said last by the console, and the report's next step.
    pub fn name_cleanup(&mut self, via: Option<&str>, cleanup: &str) {
        let leaves = self.bits & (exit_bits::LOCK | exit_bits::UNLOCK | exit_bits::CLEANUP) != 0
            || !self.succeeded() && crate::interrupt::is_interrupted();
        if let (true, Some(via)) = (leaves, via) {
            self.cleanup = Some(format!("{via} {cleanup}"));
        }
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
        outcome.name_cleanup(Some("bbr-agent"), "backup-cleanup");
        match outcome.failures() {
            [Failure::Script { failed, .. }] => {
                assert_eq!(failed.instance.to_string(), "db/0");
                assert_eq!(failed.report.end, ScriptEnd::Exited(3));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(outcome.cleanup(), Some("bbr-agent backup-cleanup"));
        assert_eq!(
            outcome.lines(),
            [
                "db/0 postgres pre-backup-lock failed (exit status 3): backup scripts were not run",
                "to clean up, run: bbr-agent backup-cleanup",
            ]
        );
        assert_eq!(outcome.exit_code(), exit_bits::LOCK);
    }
}
