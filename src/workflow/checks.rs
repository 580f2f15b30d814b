//! The checks that come before anything is locked: there is something to back up, no
//! instance holds a leftover store, and the lock order has no cycle.

use super::deployment::{Deployment, JobRef, LockSide};
use super::outcome::Outcome;
use crate::console::Console;
use crate::contract::ScriptKind;

/// What a backup will do, once the checks have passed.
#[derive(Debug)]
pub struct BackupPlan {
    pub lock_steps: Vec<Vec<JobRef>>,
    pub backup_jobs: Vec<JobRef>,
}

/// Runs every check and reports every failure, not just the first.
pub fn backup_checks(dep: &Deployment, console: &Console) -> Result<BackupPlan, Vec<String>> {
    let mut errors = Vec::new();
    let backup_jobs = dep.jobs_with(ScriptKind::Backup);
    if backup_jobs.is_empty() {
        errors.push(format!(
            "deployment '{}' has no backup scripts: no job has bin/bbr/backup, so there is nothing to back up",
            dep.name
        ));
    }
    errors.extend(leftovers(dep, "backup-cleanup"));
    for r in dep.jobs() {
        if dep.job(r).metadata.backup_name.is_some() {
            console.warn(format!(
                "{} {}: discontinued metadata key backup_name is ignored; a backup that depends on it cannot be restored",
                dep.id(r.instance),
                dep.job(r).name
            ));
        }
    }
    let lock_steps = dep.lock_steps(LockSide::Backup).map_err(|e| e.to_string());
    match lock_steps {
        Ok(lock_steps) if errors.is_empty() => Ok(BackupPlan {
            lock_steps,
            backup_jobs,
        }),
        Ok(_) => Err(errors),
        Err(cycle) => {
            errors.push(cycle);
            Err(errors)
        }
    }
}

/// What a run that did not finish left on each VM: a journal (locked jobs, running scripts)
/// or a store. Each error names the cleanup command to run (`cleanup`: `backup-cleanup` or
/// `restore-cleanup`), as the dead run's mode gives it: the deployment's command when a driver
/// ran it, the local one otherwise.
pub fn leftovers(dep: &Deployment, cleanup: &str) -> Vec<String> {
    let mut errors = Vec::new();
    for (i, description) in dep.descriptions.iter().enumerate() {
        if let Some(journal) = &description.journal {
            let mut left = Vec::new();
            for l in &journal.locked {
                left.push(format!("{} locked", l.job));
            }
            for r in &journal.running {
                left.push(format!(
                    "{} {} running as process group {}",
                    r.job, r.script, r.pgid
                ));
            }
            if let Some(unreadable) = &journal.unreadable {
                left.push(format!("a journal it cannot all read ({unreadable})"));
            }
            let started = journal
                .started
                .as_ref()
                .map(|t| format!(", started {t}"))
                .unwrap_or_default();
            let via = journal.cleanup_via.as_deref().unwrap_or("bbr-agent");
            errors.push(format!(
                "{}: a run that was killed (pid {}{started}) left {}; run `{via} {cleanup}` first",
                dep.id(i),
                journal.pid,
                left.join(", ")
            ));
        } else if description.store_exists {
            errors.push(format!(
                "{}: the artifact store {} already exists: it is left over from a run that did not finish; run `bbr-agent {cleanup}` first",
                dep.id(i),
                description.store_path
            ));
        }
    }
    errors
}

/// `pre-backup-check`: the checks and nothing else; no script but `metadata` runs.
pub fn pre_backup_check(dep: &mut Deployment, console: &Console) -> Outcome {
    let mut outcome = Outcome::default();
    if let Err(errors) = dep.begin().and_then(|()| dep.describe(console)) {
        outcome.fail_all(crate::contract::exit_bits::GENERAL, errors);
        return outcome;
    }
    match backup_checks(dep, console) {
        Ok(_) => console.info(format!("Deployment '{}' can be backed up.", dep.name)),
        Err(errors) => {
            outcome.fail_all(crate::contract::exit_bits::GENERAL, errors);
            console.info(format!("Deployment '{}' cannot be backed up.", dep.name));
        }
    }
    outcome
}
