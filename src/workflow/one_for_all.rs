//! BBR's `bbr.backup_one_restore_all`: a job whose manifest properties set it is backed up
//! into one named artifact, `<job>-<release>-backup-one-restore-all`, by the bootstrap
//! instance of its group, and that one artifact is restored to every instance of the group.
//!
//! The rules are BBR's (`instance/job.go`): on the bootstrap instance the job's artifact is
//! the named one (its tar `<name>.tar`, listed under the metadata's `custom_artifacts:`); on
//! the group's other instances the job still backs up, into a plain artifact
//! (`<group>-<index>-<job>.tar` under `instances:`), which no restore reads. On restore every
//! instance of the group with the job's restore script receives the named artifact, bootstrap
//! or not. Only a director knows these flags (the manifest, the bootstrap instance): without
//! one, nothing here applies.
//!
//! On the VM the job's artifact directory stays `<store>/<job>`, whichever artifact it is:
//! the name only decides where the tar goes on the operator's side, and which tar a restore
//! sends.

use std::collections::BTreeSet;

use super::check::{Problem, ProblemKind};
use super::deployment::{Deployment, JobRef};
use crate::artifact::plain_name;
use crate::contract::ScriptKind;
use crate::instance::{InstanceId, JobInfo};

/// Which jobs of which groups are backed up once and restored to all, and which instance is
/// each group's bootstrap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OneForAll {
    /// `(instance group, job)` whose manifest sets `bbr.backup_one_restore_all: true`.
    jobs: BTreeSet<(String, String)>,
    /// The bootstrap instance of each group, as the director says.
    bootstrap: BTreeSet<InstanceId>,
}

/// BBR's name of the one artifact: `<job>-<release>-backup-one-restore-all` (an unknown
/// release is empty, as in BBR).
pub fn artifact_name(job: &str, release: Option<&str>) -> String {
    format!(
        "{job}-{}-backup-one-restore-all",
        release.unwrap_or_default()
    )
}

impl OneForAll {
    pub fn new(
        jobs: impl IntoIterator<Item = (String, String)>,
        bootstrap: impl IntoIterator<Item = InstanceId>,
    ) -> OneForAll {
        OneForAll {
            jobs: jobs.into_iter().collect(),
            bootstrap: bootstrap.into_iter().collect(),
        }
    }

    fn applies(&self, group: &str, job: &str) -> bool {
        self.jobs.contains(&(group.to_string(), job.to_string()))
    }

    /// The named artifact `job` on instance `id` backs up into, if it is one.
    pub fn backup_name(&self, id: &InstanceId, job: &JobInfo) -> Option<String> {
        (self.applies(&id.group, &job.name) && self.bootstrap.contains(id))
            .then(|| artifact_name(&job.name, job.release.as_deref()))
    }

    /// The named artifact `job` on instance `id` is restored from, if it is one.
    pub fn restore_name(&self, id: &InstanceId, job: &JobInfo) -> Option<String> {
        self.applies(&id.group, &job.name)
            .then(|| artifact_name(&job.name, job.release.as_deref()))
    }

    /// Whether `job` of group `group` is restored from a named artifact: its plain artifacts
    /// (the non-bootstrap instances') are not restored, and not worth a warning.
    pub fn restores_named(&self, group: &str, job: &str) -> bool {
        self.applies(group, job)
    }
}

/// The checks before a backup: every job restored from a named artifact must have that
/// artifact made by the backup (its group's bootstrap instance backs the job up), else the
/// backup could be made but never restored. BBR finds out only when it restores.
pub fn backup_errors(dep: &Deployment) -> Vec<Problem> {
    let one = &dep.one_for_all;
    let made: BTreeSet<String> = dep
        .jobs_with(ScriptKind::Backup)
        .into_iter()
        .filter_map(|r| one.backup_name(dep.id(r.instance), dep.job(r)))
        .collect();
    let mut errors = Vec::new();
    let mut named: BTreeSet<String> = BTreeSet::new();
    for r in dep.jobs_with(ScriptKind::Restore) {
        let (id, job) = (dep.id(r.instance), dep.job(r));
        let Some(name) = one.restore_name(id, job) else {
            continue;
        };
        if let Err(why) = plain_name::check_custom_tar_name(&name) {
            errors.push(Problem::of_job(
                id,
                &job.name,
                ProblemKind::OneForAllNameNotPlain { name, why },
            ));
        } else if !made.contains(&name) && named.insert(name.clone()) {
            // About the group, not one of its instances.
            errors.push(Problem {
                instance: None,
                job: Some(job.name.clone()),
                what: Box::new(ProblemKind::OneForAllNotMade {
                    group: id.group.clone(),
                    name,
                    bootstrap: bootstrap_of(dep, &id.group).cloned(),
                }),
            });
        }
    }
    errors
}

fn bootstrap_of<'a>(dep: &'a Deployment, group: &str) -> Option<&'a InstanceId> {
    dep.one_for_all.bootstrap.iter().find(|b| b.group == group)
}

/// The tar `r`'s backup is written to, in the artifact directory: named or plain.
pub fn backup_tar_name(dep: &Deployment, r: JobRef) -> String {
    let (id, job) = (dep.id(r.instance), dep.job(r));
    match dep.one_for_all.backup_name(id, job) {
        Some(name) => crate::artifact::backup_dir::custom_tar_file_name(&name),
        None => crate::artifact::backup_dir::tar_file_name(&id.group, &id.index, &job.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(group: &str, index: &str) -> InstanceId {
        InstanceId {
            group: group.into(),
            index: index.into(),
        }
    }

    fn job(name: &str, release: Option<&str>) -> JobInfo {
        JobInfo {
            name: name.into(),
            release: release.map(str::to_string),
            scripts: vec![ScriptKind::Backup, ScriptKind::Restore],
            not_executable: Vec::new(),
            metadata: Default::default(),
        }
    }

    #[test]
    fn the_bootstrap_backs_up_the_named_artifact_and_every_instance_restores_it() {
        let one = OneForAll::new(
            [("redis".into(), "redis-server".into())],
            [id("redis", "0")],
        );
        let server = job("redis-server", Some("redis"));
        assert_eq!(
            one.backup_name(&id("redis", "0"), &server).as_deref(),
            Some("redis-server-redis-backup-one-restore-all")
        );
        assert_eq!(one.backup_name(&id("redis", "1"), &server), None);
        for index in ["0", "1"] {
            assert_eq!(
                one.restore_name(&id("redis", index), &server).as_deref(),
                Some("redis-server-redis-backup-one-restore-all")
            );
        }
        // Another job of the group, and the same job in another group, are plain.
        assert_eq!(
            one.backup_name(&id("redis", "0"), &job("other", None)),
            None
        );
        assert_eq!(one.restore_name(&id("cache", "0"), &server), None);
        assert_eq!(artifact_name("j", None), "j--backup-one-restore-all");
    }
}
