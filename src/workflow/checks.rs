//! The checks that come before anything is locked: there is something to back up, every job
//! names a tar of its own, no instance holds a leftover store, and the lock order has no
//! cycle.

use std::collections::BTreeMap;

use super::check::{Problem, ProblemKind};
use super::deployment::{Deployment, JobRef};
use super::outcome::Outcome;
use crate::artifact::plain_name;
use crate::console::Console;
use crate::contract::{ScriptKind, Side};
use crate::instance::InstanceId;
use crate::order::Steps;

/// What a backup will do, once the checks have passed.
#[derive(Debug)]
pub struct BackupPlan {
    pub lock_steps: Steps<JobRef>,
    pub backup_jobs: Vec<JobRef>,
}

/// Runs every check and reports every failure, not just the first.
pub fn backup_checks(dep: &Deployment, console: &Console) -> Result<BackupPlan, Vec<Problem>> {
    let mut errors = Vec::new();
    let backup_jobs = dep.jobs_with(ScriptKind::Backup);
    if backup_jobs.is_empty() {
        errors.push(Problem::general(ProblemKind::NoBackupScripts {
            deployment: dep.name.clone(),
        }));
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
    match dep.lock_steps(Side::Backup) {
        Ok(lock_steps) if errors.is_empty() => Ok(BackupPlan {
            lock_steps,
            backup_jobs,
        }),
        Ok(_) => Err(errors),
        Err(cycle) => {
            errors.push(Problem::general(ProblemKind::LockOrderCycle(cycle)));
            Err(errors)
        }
    }
}

/// The scripts of `kinds` that have no execute bit: each would fail to start, mid-run (a
/// backup script after the locks), so they are refused before anything is locked.
pub fn not_executable(dep: &Deployment, kinds: &[ScriptKind]) -> Vec<Problem> {
    dep.jobs()
        .into_iter()
        .flat_map(|r| {
            let job = dep.job(r);
            let id = dep.id(r.instance);
            job.not_executable
                .iter()
                .filter(|k| kinds.contains(k))
                .map(move |&kind| {
                    Problem::of_job(id, &job.name, ProblemKind::NotExecutable { kind })
                })
        })
        .collect()
}

/// The jobs whose names, reported by their VMs, cannot name their tar
/// (`<group>-<index>-<job>.tar`) in the artifact directory: checked before anything is
/// locked or any file is made.
pub fn tar_name_errors(dep: &Deployment, jobs: &[JobRef]) -> Vec<Problem> {
    let mut errors = Vec::new();
    // Two jobs whose names join to the same tar name (`a-0-b` job `c` and `a` job `b-0-c`)
    // would write one file: refused, not one silently lost.
    let mut tars: BTreeMap<String, (InstanceId, String)> = BTreeMap::new();
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
            errors.push(Problem::of_job(
                id,
                name,
                ProblemKind::TarNameNotPlain { why, tar },
            ));
        } else if let Some(other) = tars.insert(tar.clone(), (id.clone(), name.clone())) {
            errors.push(Problem::of_job(
                id,
                name,
                ProblemKind::SameTar { other, tar },
            ));
        }
    }
    errors
}

/// What a run that did not finish left on each VM: a journal (locked jobs, running scripts)
/// or a store. Each problem names the cleanup command to run (`cleanup`: `backup-cleanup` or
/// `restore-cleanup`), as the dead run's mode gives it: the deployment's command when a driver
/// ran it, the local one otherwise.
pub fn leftovers(dep: &Deployment, cleanup: &'static str) -> Vec<Problem> {
    let mut errors = Vec::new();
    for (i, description) in dep.descriptions() {
        if let Some(journal) = &description.journal {
            errors.push(Problem::of_instance(
                dep.id(i),
                ProblemKind::LeftoverJournal {
                    journal: Box::new(journal.clone()),
                    cleanup,
                },
            ));
        } else if description.store_exists {
            // This run's own cleanup command (the driver's, with its inventory or director
            // flags), not the VM-local one a driver's operator cannot run as it is.
            let via = dep.cleanup_via.as_deref().unwrap_or("bbr-agent");
            errors.push(Problem::of_instance(
                dep.id(i),
                ProblemKind::LeftoverStore {
                    store: description.store_path.clone(),
                    via: via.to_string(),
                    cleanup,
                },
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

#[cfg(test)]
mod tests {
    use super::super::fake::{Fake, Ran};
    use super::super::outcome::Failure;
    use super::*;
    use crate::console::Format;
    use crate::metadata::JobMetadata;

    #[test]
    fn a_failed_check_keeps_its_instance_and_job_as_data_and_says_todays_line() {
        let db = Fake {
            id: InstanceId {
                group: "db".into(),
                index: "0".into(),
            },
            jobs: Some(vec![("postgres", JobMetadata::default())]),
            not_executable: vec![ScriptKind::Backup],
            ran: Ran::default(),
        };
        let mut dep = Deployment::new("d", vec![Box::new(db)]);
        let console = Console::new(false, Format::Json);
        let outcome = pre_backup_check(&mut dep, &console);
        match outcome.failures() {
            [
                Failure::Check(Problem {
                    instance: Some(id),
                    job: Some(job),
                    what,
                }),
            ] => {
                assert_eq!(id.to_string(), "db/0");
                assert_eq!(job, "postgres");
                assert!(
                    matches!(
                        **what,
                        ProblemKind::NotExecutable {
                            kind: ScriptKind::Backup
                        }
                    ),
                    "{what:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            outcome.lines(),
            [
                "db/0 postgres: bin/bbr/backup is not executable, so it would fail to start; nothing was locked: the job's release must ship it executable (chmod +x)"
            ]
        );
        assert_eq!(outcome.exit_code(), crate::contract::exit_bits::GENERAL);
    }
}
