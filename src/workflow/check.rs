//! A problem one of the workflow's own checks found, as data: the instance and job it is
//! about (when it is about one) and which check it was, with what that check saw. Made text
//! only by `Display`, for the console and the report.

use std::fmt;

use crate::artifact::plain_name::NotPlain;
use crate::artifact::stored_backup::{StoredBackupError, TarOwner};
use crate::contract::ScriptKind;
use crate::exec::ScriptEnd;
use crate::instance::journal::JournalState;
use crate::instance::{InstanceError, InstanceId};
use crate::order::CycleError;

/// One failed check.
#[derive(Debug)]
pub struct Problem {
    pub instance: Option<InstanceId>,
    pub job: Option<String>,
    /// Boxed: some checks see a good deal, and a `Problem` travels in `Result`s.
    pub what: Box<ProblemKind>,
}

/// Which check failed, and what it saw.
#[derive(Debug)]
pub enum ProblemKind {
    /// No job of the deployment has a backup script.
    NoBackupScripts { deployment: String },
    /// The VM reports a job whose name cannot name its tar (`tar`).
    TarNameNotPlain { why: NotPlain, tar: String },
    /// Two jobs would be written to one tar: `other` and this problem's.
    SameTar {
        other: (InstanceId, String),
        tar: String,
    },
    /// A script of `kind` has no execute bit.
    NotExecutable { kind: ScriptKind },
    /// A run that was killed left its journal (`cleanup` is the command's last word).
    LeftoverJournal {
        journal: Box<JournalState>,
        cleanup: &'static str,
    },
    /// A run that did not finish left its store.
    LeftoverStore {
        store: String,
        via: String,
        cleanup: &'static str,
    },
    /// A job's backup_one_restore_all artifact name cannot name a tar.
    OneForAllNameNotPlain { name: String, why: NotPlain },
    /// A backup_one_restore_all job whose named artifact no backup would make.
    OneForAllNotMade {
        group: String,
        name: String,
        bootstrap: Option<InstanceId>,
    },
    /// The lock order has a cycle.
    LockOrderCycle(CycleError),
    /// An instance of the backup is not in the deployment.
    MissingInstance { deployment: String },
    /// No job of the deployment has a restore script; `held` is what the backup holds (the
    /// first ten).
    NoRestoreScripts {
        deployment: String,
        held: Vec<(InstanceId, String)>,
    },
    /// A job asks for the discontinued `restore_name`.
    RestoreNameSet,
    /// A backup_one_restore_all job whose named artifact the backup does not hold.
    OneForAllArtifactMissing { name: String },
    /// A job that can restore has no artifact in the backup; `held` is what the backup holds
    /// for its instance (the first ten).
    NoArtifactForJob { held: Vec<String> },
    /// The stored backup is incomplete, damaged or not a backup.
    Backup(StoredBackupError),
    /// A cleanup could not reach (or claim) the VM: it was not cleaned up.
    NotCleanedUp { error: Box<InstanceError> },
    /// A cleanup cannot unlock a job whose metadata or scripts it could not have (`error`
    /// is the VM's sentence).
    CannotUnlock { error: String },
    /// A cleanup's unlock of a job the journal records as locked, but that is not among the
    /// VM's jobs, did not run.
    JournalUnlockFailed { kind: ScriptKind, end: ScriptEnd },
}

impl Problem {
    /// A problem of the deployment or the backup as a whole.
    pub fn general(what: ProblemKind) -> Problem {
        Problem {
            instance: None,
            job: None,
            what: Box::new(what),
        }
    }

    /// A problem of one instance.
    pub fn of_instance(instance: &InstanceId, what: ProblemKind) -> Problem {
        Problem {
            instance: Some(instance.clone()),
            job: None,
            what: Box::new(what),
        }
    }

    /// A problem of one job on one instance.
    pub fn of_job(instance: &InstanceId, job: &str, what: ProblemKind) -> Problem {
        Problem {
            instance: Some(instance.clone()),
            job: Some(job.to_string()),
            what: Box::new(what),
        }
    }
}

impl std::error::Error for Problem {}

/// A stored backup's problem is about the job whose tar it is, when it is about one.
impl From<StoredBackupError> for Problem {
    fn from(e: StoredBackupError) -> Problem {
        let job = match &e {
            StoredBackupError::Corrupted { owner, .. } => match &**owner {
                TarOwner::Job { group, index, job } => Some((
                    InstanceId {
                        group: group.clone(),
                        index: index.clone(),
                    },
                    job.clone(),
                )),
                TarOwner::Named(_) => None,
            },
            _ => None,
        };
        match job {
            Some((id, job)) => Problem::of_job(&id, &job, ProblemKind::Backup(e)),
            None => Problem::general(ProblemKind::Backup(e)),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = self
            .instance
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        let job = self.job.as_deref().unwrap_or_default();
        match &*self.what {
            ProblemKind::NoBackupScripts { deployment } => write!(
                f,
                "deployment '{deployment}' has no backup scripts: no job has bin/bbr/backup, so there is nothing to back up"
            ),
            ProblemKind::TarNameNotPlain { why, tar } => write!(
                f,
                "{id}: the VM reports a job named {job:?}, which {why}, so it cannot name the job's tar {tar:?}; nothing was locked: check the VM's jobs directory (and that its agent is bbr-agent)"
            ),
            ProblemKind::SameTar {
                other: (other_id, other_job),
                tar,
            } => write!(
                f,
                "{other_id} {other_job} and {id} {job} would both be written to {tar:?} (BBR names a tar <group>-<index>-<job>); nothing was locked: rename the instance group or the job"
            ),
            ProblemKind::NotExecutable { kind } => write!(
                f,
                "{id} {job}: bin/bbr/{kind} is not executable, so it would fail to start; nothing was locked: the job's release must ship it executable (chmod +x)"
            ),
            ProblemKind::LeftoverJournal { journal, cleanup } => {
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
                write!(
                    f,
                    "{id}: a run that was killed (pid {}{started}) left {}; run `{via} {cleanup}` first",
                    journal.pid,
                    left.join(", ")
                )
            }
            ProblemKind::LeftoverStore {
                store,
                via,
                cleanup,
            } => write!(
                f,
                "{id}: the artifact store {store} already exists: it is left over from a run that did not finish; run `{via} {cleanup}` first"
            ),
            ProblemKind::OneForAllNameNotPlain { name, why } => write!(
                f,
                "{id} {job}: its backup_one_restore_all artifact name {name:?} {why}, so it cannot name a tar; nothing was locked: check the job's release name"
            ),
            ProblemKind::OneForAllNotMade {
                group,
                name,
                bootstrap,
            } => {
                let why = match bootstrap {
                    Some(b) => {
                        format!("its bootstrap instance {b} has no backup script for the job")
                    }
                    None => "the director names no bootstrap instance of the group".to_string(),
                };
                write!(
                    f,
                    "instance group '{group}' job {job}: the manifest sets bbr.backup_one_restore_all, but {why} so no backup would hold {name}.tar for its restore; nothing was locked"
                )
            }
            ProblemKind::LockOrderCycle(cycle) => write!(f, "{cycle}"),
            ProblemKind::MissingInstance { deployment } => write!(
                f,
                "deployment '{deployment}' does not match the structure of the backup: it has no instance {id}; nothing was touched"
            ),
            ProblemKind::NoRestoreScripts { deployment, held } => {
                let held = if held.is_empty() {
                    "no artifact".to_string()
                } else {
                    let held: Vec<String> = held.iter().map(|(i, a)| format!("{i} {a}")).collect();
                    held.join(", ")
                };
                write!(
                    f,
                    "deployment '{deployment}' has no restore scripts (no job here has bin/bbr/restore), so nothing in the backup can be restored; nothing was locked. The backup holds {held}: restore it onto the VMs it was taken from"
                )
            }
            ProblemKind::RestoreNameSet => write!(
                f,
                "{id} {job}: discontinued metadata key restore_name is set; bbr-agent, like BBR, cannot restore this job"
            ),
            ProblemKind::OneForAllArtifactMissing { name } => write!(
                f,
                "{id} {job}: the manifest sets bbr.backup_one_restore_all, but the backup holds no artifact {name} (custom_artifacts) for it; nothing was touched"
            ),
            ProblemKind::NoArtifactForJob { held } => {
                let held = if held.is_empty() {
                    "none".to_string()
                } else {
                    held.join(", ")
                };
                write!(
                    f,
                    "{id} {job}: the job has a restore script but the backup holds no artifact for it (for {id} it holds {held}), so nothing was locked: was the job added after the backup, or is this backup another deployment's?"
                )
            }
            ProblemKind::Backup(e) => write!(f, "{e}"),
            ProblemKind::NotCleanedUp { error } => write!(
                f,
                "{id}: {error}; this VM was not cleaned up (its jobs may still be locked): run this cleanup again once it can be reached"
            ),
            ProblemKind::CannotUnlock { error } => {
                write!(f, "{id}: {error}; it cannot be unlocked")
            }
            ProblemKind::JournalUnlockFailed { kind, end } => write!(
                f,
                "{id}: the journal records {job} as locked, but its {kind} cannot run: {}",
                end.describe()
            ),
        }
    }
}
