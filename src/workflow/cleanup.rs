//! `backup-cleanup` and `restore-cleanup`: after a run that did not finish, end its stray
//! scripts, run the unlock scripts (in reverse lock order) and remove the store, on every VM
//! that can be reached.
//!
//! Where the dead run left a journal, exactly the jobs it records as locked are unlocked, each
//! with the unlock script of the lock it took. Without a journal, cleanup does what BBR does:
//! the command's unlock script for every job.

use std::collections::BTreeSet;

use super::deployment::{Deployment, JobRef, LockSide};
use super::outcome::Outcome;
use crate::console::Console;
use crate::contract::{ScriptKind, exit_bits};
use crate::instance::UnlockContext;

pub fn backup_cleanup(dep: &mut Deployment, console: &Console) -> Outcome {
    console.run("backup-cleanup", &dep.name, None);
    let outcome = cleanup(dep, LockSide::Backup, console);
    console.run("backup-cleanup", &dep.name, Some(outcome.exit_code()));
    outcome
}

pub fn restore_cleanup(dep: &mut Deployment, console: &Console) -> Outcome {
    console.run("restore-cleanup", &dep.name, None);
    let outcome = cleanup(dep, LockSide::Restore, console);
    console.run("restore-cleanup", &dep.name, Some(outcome.exit_code()));
    outcome
}

fn cleanup(dep: &mut Deployment, side: LockSide, console: &Console) -> Outcome {
    let mut outcome = Outcome::default();
    // A VM that cannot be reached (or that a live run holds) is named and left out; every
    // other VM is still cleaned up. Exit 1, as BBR's for a VM it cannot reach: 16 stays the
    // store removal that failed on a VM that was reached.
    let failed = dep.begin_each();
    if !failed.is_empty() {
        for (_, error) in &failed {
            outcome.fail(
                exit_bits::GENERAL,
                format!(
                    "{error}; this VM was not cleaned up (its jobs may still be locked): run this cleanup again once it can be reached"
                ),
            );
        }
        dep.leave_out(&failed.iter().map(|(i, _)| *i).collect());
        if dep.instances.is_empty() {
            return outcome;
        }
    }
    match dep.describe(console) {
        // Without metadata there is no order to unlock in; say so and still clear the store.
        Err(errors) => outcome.fail_all(exit_bits::UNLOCK, errors),
        Ok(()) => {
            end_strays(dep, &mut outcome, console);
            for lock_side in [LockSide::Backup, LockSide::Restore] {
                let chosen = to_unlock(dep, side, lock_side);
                if !chosen.is_empty() {
                    unlock(dep, lock_side, &chosen, &mut outcome, console);
                }
            }
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

/// Ends what the journals record as still running.
fn end_strays(dep: &mut Deployment, outcome: &mut Outcome, console: &Console) {
    let with_strays: Vec<(usize, ())> = dep
        .descriptions
        .iter()
        .enumerate()
        .filter(|(_, d)| d.journal.as_ref().is_some_and(|j| !j.running.is_empty()))
        .map(|(i, _)| (i, ()))
        .collect();
    for (i, result) in dep.on_instances(with_strays, |_, instance, ()| instance.end_strays()) {
        match result {
            Ok(ended) => {
                for script in ended {
                    console.info(format!("{}: ended the stray script {script}", dep.id(i)));
                }
            }
            Err(e) => outcome.fail(exit_bits::CLEANUP, format!("{}: {e}", dep.id(i))),
        }
    }
}

/// The jobs whose `lock_side` unlock script runs: those a journal records as locked on that
/// side, and, on instances without a journal, every job when it is the command's own side.
fn to_unlock(dep: &Deployment, command_side: LockSide, lock_side: LockSide) -> BTreeSet<JobRef> {
    let lock_kind = match lock_side {
        LockSide::Backup => ScriptKind::PreBackupLock,
        LockSide::Restore => ScriptKind::PreRestoreLock,
    };
    dep.jobs()
        .into_iter()
        .filter(|&r| match &dep.descriptions[r.instance].journal {
            Some(journal) => journal
                .locked
                .iter()
                .any(|l| l.lock == lock_kind && l.job == dep.job(r).name),
            None => lock_side == command_side,
        })
        .collect()
}

fn unlock(
    dep: &mut Deployment,
    side: LockSide,
    chosen: &BTreeSet<JobRef>,
    outcome: &mut Outcome,
    console: &Console,
) {
    let (kind, context, parallel) = match side {
        LockSide::Backup => (
            ScriptKind::PostBackupUnlock,
            Some(UnlockContext {
                after_backup_successful: false,
            }),
            true,
        ),
        LockSide::Restore => (ScriptKind::PostRestoreUnlock, None, false),
    };
    let steps: Vec<Vec<JobRef>> = match dep.lock_steps(side) {
        Ok(steps) => steps.into_iter().rev().collect(),
        Err(cycle) => {
            console.warn(format!("{cycle}; unlocking every job at once instead"));
            vec![dep.jobs()]
        }
    };
    let steps: Vec<Vec<JobRef>> = steps
        .into_iter()
        .map(|step| step.into_iter().filter(|r| chosen.contains(r)).collect())
        .collect();
    if !dep.run_every_step(kind, &steps, parallel, context, console) {
        outcome.fail(exit_bits::UNLOCK, format!("a {kind} script failed"));
    }
}
