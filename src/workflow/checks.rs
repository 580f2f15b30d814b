//! The checks that come before anything is locked: there is something to back up, every job
//! names a tar of its own, no instance holds a leftover store, and the lock order has no
//! cycle.

use std::collections::BTreeMap;

use super::deployment::{Deployment, JobRef};
use super::outcome::Outcome;
use crate::artifact::plain_name;
use crate::console::Console;
use crate::contract::{ScriptKind, Side};
use crate::order::Steps;

/// What a backup will do, once the checks have passed.
#[derive(Debug)]
pub struct BackupPlan {
    pub lock_steps: Steps<JobRef>,
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
    errors.extend(tar_name_errors(dep, &backup_jobs));
    errors.extend(not_executable(
        dep,
        &[
            ScriptKind::PreBackupLock,
            ScriptKind::Backup,
            ScriptKind::PostBackupUnlock,
        ],
    ));
    errors.extend(super::one_for_all::backup_errors(dep));
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
    let lock_steps = dep.lock_steps(Side::Backup).map_err(|e| e.to_string());
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

/// The scripts of `kinds` that have no execute bit: each would fail to start, mid-run (a
/// backup script after the locks), so they are refused before anything is locked.
pub fn not_executable(dep: &Deployment, kinds: &[ScriptKind]) -> Vec<String> {
    dep.jobs()
        .into_iter()
        .flat_map(|r| {
            let job = dep.job(r);
            job.not_executable
                .iter()
                .filter(|k| kinds.contains(k))
                .map(move |kind| {
                    format!(
                        "{} {}: bin/bbr/{kind} is not executable, so it would fail to start; nothing was locked: the job's release must ship it executable (chmod +x)",
                        dep.id(r.instance),
                        job.name
                    )
                })
        })
        .collect()
}

/// The jobs whose names, reported by their VMs, cannot name their tar
/// (`<group>-<index>-<job>.tar`) in the artifact directory: checked before anything is
/// locked or any file is made.
pub fn tar_name_errors(dep: &Deployment, jobs: &[JobRef]) -> Vec<String> {
    let mut errors = Vec::new();
    // Two jobs whose names join to the same tar name (`a-0-b` job `c` and `a` job `b-0-c`)
    // would write one file: refused, not one silently lost.
    let mut tars: BTreeMap<String, String> = BTreeMap::new();
    for &r in jobs {
        let (id, name) = (dep.id(r.instance), &dep.job(r).name);
        // A backup_one_restore_all job's tar on its bootstrap instance is a named one.
        let named = dep.one_for_all.backup_name(id, dep.job(r));
        let tar = super::one_for_all::backup_tar_name(dep, r);
        let checked = plain_name::check(name, plain_name::NAME_MAX)
            .and_then(|()| plain_name::check_tar_name(&id.group, &id.index, name))
            .and_then(|()| {
                named
                    .as_deref()
                    .map_or(Ok(()), plain_name::check_custom_tar_name)
            });
        if let Err(why) = checked {
            errors.push(format!(
                "{id}: the VM reports a job named {name:?}, which {why}, so it cannot name the job's tar {tar:?}; nothing was locked: check the VM's jobs directory (and that its agent is bbr-agent)"
            ));
        } else if let Some(other) = tars.insert(tar.clone(), format!("{id} {name}")) {
            errors.push(format!(
                "{other} and {id} {name} would both be written to {tar:?} (BBR names a tar <group>-<index>-<job>); nothing was locked: rename the instance group or the job"
            ));
        }
    }
    errors
}

/// What a run that did not finish left on each VM: a journal (locked jobs, running scripts)
/// or a store. Each error names the cleanup command to run (`cleanup`: `backup-cleanup` or
/// `restore-cleanup`), as the dead run's mode gives it: the deployment's command when a driver
/// ran it, the local one otherwise.
pub fn leftovers(dep: &Deployment, cleanup: &str) -> Vec<String> {
    let mut errors = Vec::new();
    for (i, description) in dep.descriptions() {
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
            // This run's own cleanup command (the driver's, with its inventory or director
            // flags), not the VM-local one a driver's operator cannot run as it is.
            let via = dep.cleanup_via.as_deref().unwrap_or("bbr-agent");
            errors.push(format!(
                "{}: the artifact store {} already exists: it is left over from a run that did not finish; run `{via} {cleanup}` first",
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
