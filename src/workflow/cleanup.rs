//! `backup-cleanup` and `restore-cleanup`: after a run that did not finish, run every unlock
//! script (in reverse lock order) and remove the store, as BBR's cleanup commands do.

use super::deployment::{Deployment, LockSide};
use super::outcome::Outcome;
use crate::console::Console;
use crate::contract::{ScriptKind, exit_bits};
use crate::instance::UnlockContext;

pub fn backup_cleanup(dep: &mut Deployment, console: &Console) -> Outcome {
    cleanup(
        dep,
        LockSide::Backup,
        ScriptKind::PostBackupUnlock,
        Some(UnlockContext {
            after_backup_successful: false,
        }),
        true,
        console,
    )
}

pub fn restore_cleanup(dep: &mut Deployment, console: &Console) -> Outcome {
    cleanup(
        dep,
        LockSide::Restore,
        ScriptKind::PostRestoreUnlock,
        None,
        false,
        console,
    )
}

fn cleanup(
    dep: &mut Deployment,
    side: LockSide,
    unlock_kind: ScriptKind,
    unlock: Option<UnlockContext>,
    parallel: bool,
    console: &Console,
) -> Outcome {
    let mut outcome = Outcome::default();
    match dep.describe(console) {
        Err(errors) => {
            // Without metadata there is no order to unlock in; say so and still clear the store.
            outcome.fail_all(exit_bits::UNLOCK, errors);
        }
        Ok(()) => {
            let steps = match dep.lock_steps(side) {
                Ok(steps) => steps.into_iter().rev().collect(),
                Err(cycle) => {
                    console.warn(format!("{cycle}; unlocking every job at once instead"));
                    vec![dep.jobs()]
                }
            };
            if !dep.run_every_step(unlock_kind, &steps, parallel, unlock, console) {
                outcome.fail(exit_bits::UNLOCK, format!("a {unlock_kind} script failed"));
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
