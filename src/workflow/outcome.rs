//! The result of a workflow: the exit-code bits it earned and the errors behind them.

use super::deployment::{Deployment, FailedScript, JobRef};
use crate::contract::{Side, exit_bits};
use crate::order::Steps;

/// How the error that names a failed run's cleanup starts; the command follows (the report
/// shows it as the next step).
pub const CLEANUP_LINE: &str = "to clean up, run: ";

/// How many failed scripts the last lines name one by one.
pub const NAMED_FAILURES: usize = 3;

#[derive(Debug, Default)]
pub struct Outcome {
    bits: i32,
    pub errors: Vec<String>,
}

impl Outcome {
    /// Records a failure of the kind `bit` (one of [`exit_bits`]).
    pub fn fail(&mut self, bit: i32, error: impl Into<String>) {
        self.bits |= bit;
        self.errors.push(error.into());
    }

    /// Records each of `errors` (the workflow's own, or an instance's failures): where they
    /// become the text the console and the report show.
    pub fn fail_all(&mut self, bit: i32, errors: impl IntoIterator<Item = impl ToString>) {
        for e in errors {
            self.fail(bit, e.to_string());
        }
    }

    /// Records the scripts that failed, one line each naming the instance, job, script and
    /// its end, followed by `then` (what that failure meant for the run); past
    /// [`NAMED_FAILURES`] of them, one line says how many more (the console showed each).
    pub fn fail_scripts(&mut self, bit: i32, failed: &[FailedScript], then: Option<&str>) {
        let then = then.map(|t| format!(": {t}")).unwrap_or_default();
        for f in failed.iter().take(NAMED_FAILURES) {
            self.fail(bit, format!("{f}{then}"));
        }
        if failed.len() > NAMED_FAILURES {
            let more = failed.len() - NAMED_FAILURES;
            self.fail(
                bit,
                format!("and {more} more failed (see FAILED above){then}"),
            );
        }
    }

    /// Ends the workflow early: the same failure, returned for `return outcome.stop(..)`.
    pub fn stop(mut self, error: impl Into<String>) -> Outcome {
        self.fail(exit_bits::GENERAL, error);
        self
    }

    /// Ends a failed run that leaves something to clean up (a lock or unlock that failed, a
    /// store not removed, an interruption) with the command that cleans it up, `<via>
    /// <cleanup>`: the last of the errors, so the console's last line and the report say it.
    pub fn name_cleanup(&mut self, via: Option<&str>, cleanup: &str) {
        let leaves = self.bits & (exit_bits::LOCK | exit_bits::UNLOCK | exit_bits::CLEANUP) != 0
            || !self.succeeded() && crate::interrupt::is_interrupted();
        if let (true, Some(via)) = (leaves, via) {
            self.errors.push(format!("{CLEANUP_LINE}{via} {cleanup}"));
        }
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
