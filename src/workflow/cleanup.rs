//! `backup-cleanup` and `restore-cleanup`: after a run that did not finish, end its stray
//! scripts, run the unlock scripts (in reverse lock order) and remove the store, on every VM
//! that can be reached.
//!
//! Where the dead run left a journal, exactly the jobs it records as locked are unlocked, each
//! with the unlock script of the lock it took. Without a journal, cleanup does what BBR does:
//! the command's unlock script for every job; and so for a journal with lines it cannot read,
//! besides what it can read.
//!
//! Nothing but the journal is needed to end the stray scripts and to unlock a job the journal
//! names: the strays are ended first, and a job whose metadata script fails is unlocked all
//! the same (outside any lock order; the failure is said). What cannot be unlocked is
//! reported, and the journal is gone afterwards, so the next run is not held up by it.

use std::collections::BTreeSet;

use super::check::{Problem, ProblemKind};
use super::deployment::{Deployment, InstanceFailure, JobRef};
use super::outcome::Outcome;
use crate::console::Console;
use crate::contract::{Side, exit_bits};
use crate::instance::{Description, ScriptStep};
use crate::order::Steps;

pub fn backup_cleanup(dep: &mut Deployment, console: &Console) -> Outcome {
    side_cleanup(dep, Side::Backup, console)
}

pub fn restore_cleanup(dep: &mut Deployment, console: &Console) -> Outcome {
    side_cleanup(dep, Side::Restore, console)
}

fn side_cleanup(dep: &mut Deployment, side: Side, console: &Console) -> Outcome {
    let command = side.cleanup_command();
    console.run(command, &dep.name, None);
    let outcome = cleanup(dep, side, console);
    console.run(command, &dep.name, Some(outcome.exit_code()));
    outcome
}

fn cleanup(dep: &mut Deployment, side: Side, console: &Console) -> Outcome {
    let mut outcome = Outcome::default();
    // A VM that cannot be reached (or that a live run holds) is named and left out; every
    // other VM is still cleaned up. Exit 1, as BBR's for a VM it cannot reach: 16 stays the
    // store removal that failed on a VM that was reached.
    let failed = dep.begin_each();
    if !failed.is_empty() {
        let left_out: BTreeSet<usize> = failed.iter().map(|(i, _)| *i).collect();
        for (_, failure) in failed {
            outcome.fail(
                exit_bits::GENERAL,
                Problem::of_instance(
                    &failure.instance,
                    ProblemKind::NotCleanedUp {
                        error: failure.error,
                    },
                ),
            );
        }
        dep.leave_out(&left_out);
        if dep.is_empty() {
            return outcome;
        }
    }
    // Whatever the metadata scripts do: this needs the journals alone.
    end_strays(dep, &mut outcome, console);
    match dep.describe_for_cleanup(console) {
        // No jobs known on an instance (unreachable, its jobs cannot be listed): say so and
        // still clear the store.
        Err(errors) => outcome.fail_all(exit_bits::UNLOCK, errors),
        Ok(()) => {
            report_problems(dep, side, &mut outcome, console);
            for lock_side in Side::BOTH {
                let chosen = to_unlock(dep, side, lock_side);
                if !chosen.is_empty() {
                    unlock(dep, lock_side, &chosen, &mut outcome, console);
                }
            }
            unlock_jobs_not_here(dep, &mut outcome, console);
        }
    }
    if let Err(errors) = dep.each_instance(|i| i.remove_store()) {
        outcome.fail_all(exit_bits::CLEANUP, errors);
    }
    if outcome.succeeded() {
        console.info(format!("Cleaned up {}.", dep.name));
    }
    outcome
}

/// Ends what the journals record as still running, on every instance.
fn end_strays(dep: &mut Deployment, outcome: &mut Outcome, console: &Console) {
    let all = dep.all();
    for (i, result) in dep.on_instances(all, |_, instance, ()| instance.end_strays()) {
        match result {
            Ok(ended) => {
                for script in ended {
                    console.info(format!("{}: ended the stray script {script}", dep.id(i)));
                }
            }
            Err(e) => outcome.fail(
                exit_bits::CLEANUP,
                InstanceFailure {
                    instance: dep.id(i).clone(),
                    error: Box::new(e),
                },
            ),
        }
    }
}

/// Says what a cleanup cannot know (journal lines it cannot read, jobs without metadata) and
/// what it cannot do (unlock a job whose scripts are not trusted).
fn report_problems(dep: &Deployment, side: Side, outcome: &mut Outcome, console: &Console) {
    let unlock = side.unlock();
    for (i, d) in dep.descriptions() {
        let id = dep.id(i);
        if let Some(unreadable) = d.journal.as_ref().and_then(|j| j.unreadable.as_ref()) {
            console.warn(format!(
                "{id}: {unreadable}; so besides what it records, every job's {unlock} runs, as without a journal"
            ));
        }
        for problem in &d.problems {
            if d.jobs.iter().any(|j| j.name == problem.job) {
                console.warn(format!(
                    "{id}: {}; it is unlocked all the same, outside any lock order",
                    problem.error
                ));
            } else if !recorded_locked(d, &problem.job) {
                // (One its journal names is reported as it is tried, below.)
                outcome.fail(
                    exit_bits::UNLOCK,
                    Problem::of_job(
                        id,
                        &problem.job,
                        ProblemKind::CannotUnlock {
                            error: problem.error.clone(),
                        },
                    ),
                );
            }
        }
    }
}

fn recorded_locked(d: &Description, job: &str) -> bool {
    d.journal
        .as_ref()
        .is_some_and(|j| j.locked.iter().any(|l| l.job == job))
}

/// The jobs whose `lock_side` unlock script runs: those a journal records as locked on that
/// side, and, on instances without a journal (or with lines it cannot read), every job when
/// it is the command's own side.
fn to_unlock(dep: &Deployment, command_side: Side, lock_side: Side) -> BTreeSet<JobRef> {
    let lock = lock_side.lock();
    dep.jobs()
        .into_iter()
        .filter(
            |&r| match dep.description(r.instance).and_then(|d| d.journal.as_ref()) {
                Some(journal) => {
                    journal
                        .locked
                        .iter()
                        .any(|l| l.lock == lock && l.job == dep.job(r).name)
                        || (journal.unreadable.is_some() && lock_side == command_side)
                }
                None => lock_side == command_side,
            },
        )
        .collect()
}

/// The jobs a journal records as locked that are not among the instance's jobs (gone from
/// the VM, or their scripts refused): asked to unlock by name, the instance says why it
/// cannot and records that the release was attempted, so the journal does not outlive it.
fn unlock_jobs_not_here(dep: &mut Deployment, outcome: &mut Outcome, console: &Console) {
    for side in Side::BOTH {
        let (lock, kind) = (side.lock(), side.unlock());
        let chosen: Vec<(usize, Vec<String>)> = dep
            .descriptions()
            .filter_map(|(i, d)| {
                let names: Vec<String> = d
                    .journal
                    .iter()
                    .flat_map(|j| &j.locked)
                    .filter(|l| l.lock == lock && !d.jobs.iter().any(|j| j.name == l.job))
                    .map(|l| l.job.clone())
                    .collect();
                (!names.is_empty()).then_some((i, names))
            })
            .collect();
        let results = dep.on_instances(chosen, |_, instance, names| {
            let reports = instance.run_scripts(&ScriptStep::unlock(side, names, false));
            for report in &reports {
                console.script(instance.id(), report);
            }
            reports
        });
        for (i, reports) in results {
            for report in reports.iter().filter(|r| !r.success()) {
                outcome.fail(
                    exit_bits::UNLOCK,
                    Problem::of_job(
                        dep.id(i),
                        &report.job,
                        ProblemKind::JournalUnlockFailed {
                            kind,
                            end: report.end.clone(),
                        },
                    ),
                );
            }
        }
    }
}

/// Runs `side`'s unlock scripts for the `chosen` jobs, in unlock order; the data step is
/// taken to have failed (`BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL=false`), as under BBR.
fn unlock(
    dep: &mut Deployment,
    side: Side,
    chosen: &BTreeSet<JobRef>,
    outcome: &mut Outcome,
    console: &Console,
) {
    let steps = match dep.lock_steps(side) {
        Ok(steps) => steps,
        Err(cycle) => {
            console.warn(format!("{cycle}; unlocking every job at once instead"));
            Steps(vec![dep.jobs()])
        }
    };
    let steps = steps.retain(|r| chosen.contains(r));
    let failed = dep.unlock(side, &steps, false, console);
    outcome.fail_scripts(exit_bits::UNLOCK, &failed, None);
}
