//! The restore workflow, as BBR's flowchart draws it:
//! check the local artifact -> the deployment matches the backup -> copy the artifacts to the
//! VMs, every checksum verified on both ends as they pass -> pre-restore-lock -> restore ->
//! post-restore-unlock (always) -> clean up the VMs.
//!
//! As BBR does, the whole backup is read once to validate it, before any VM is touched (a
//! corrupted backup runs no script at all, metadata included), and again to copy it. The copy
//! is verified too: the agent checks every file it unpacks against the backup's checksums, and
//! when it refuses a tar the driver reads that tar again, to say whether the backup (changed
//! since it was validated) is to blame.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use super::check::{Corruption, Problem, ProblemKind};
use super::deployment::{Deployment, JobRef};
use super::failure::{Failure, TransferError};
use super::finish::{remove_stores, write_report};
use super::outcome::Outcome;
use crate::artifact::Checksums;
use crate::artifact::backup_dir::{BackupDir, BackupMetadata};
use crate::artifact::checksums::compare;
use crate::artifact::plain_name::{self, NAME_MAX, NotPlain};
use crate::artifact::tar_reader::read_tar;
use crate::console::Console;
use crate::contract::{ScriptKind, Side, exit_bits};
use crate::instance::InstanceId;
use crate::interrupt::Interruptible;
use crate::progress::{self, Counted};

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The `<deployment>_<timestamp>` artifact directory.
    pub artifact: PathBuf,
    /// Restore only this instance of the backup (a local restore of one VM).
    pub only: Option<InstanceId>,
    /// Where to write the HTML run report, if anywhere.
    pub report: Option<PathBuf>,
}

/// A job to restore and the artifact it receives.
struct Transfer {
    job: JobRef,
    tar: PathBuf,
    checksums: Checksums,
}

/// Restores the deployment. The backup's artifact directory is only read; the run report is
/// written where `report` says, if it says.
pub fn restore(dep: &mut Deployment, opts: &RestoreOptions, console: &Console) -> Outcome {
    console.run("restore", &dep.name, None);
    let mut outcome = run_restore(dep, opts, console);
    outcome.name_next_step(dep.cleanup_via.as_deref(), "restore");
    if let Some(path) = &opts.report {
        write_report(path, "restore", dep, &outcome, &opts.artifact, console);
    }
    console.run("restore", &dep.name, Some(outcome.exit_code()));
    outcome
}

fn run_restore(dep: &mut Deployment, opts: &RestoreOptions, console: &Console) -> Outcome {
    let mut outcome = Outcome::default();
    let backup = BackupDir::open(&opts.artifact);
    console.info(format!(
        "Starting restore of {} from {}...",
        dep.name,
        opts.artifact.display()
    ));

    let metadata = match check_artifact(&backup, opts.only.as_ref()) {
        Ok(m) => m,
        Err(e) => return outcome.stop(e),
    };
    // Before any VM is touched: every instance of the backup must be in the deployment, and
    // every tar must match its checksums.
    if let Err(errors) = check_instances(dep, &metadata) {
        outcome.fail_all(exit_bits::GENERAL, errors);
        return outcome;
    }
    if let Err(e) = validate(&backup, &metadata, console) {
        return match crate::interrupt::cause() {
            Some(cause) => outcome.stop(Failure::Interrupted(format!(
                "{cause} while the backup was being checked; nothing on the VMs was touched"
            ))),
            None => outcome.stop(e),
        };
    }
    if let Err(errors) = dep.begin().and_then(|()| dep.describe(console)) {
        outcome.fail_all(exit_bits::GENERAL, errors);
        return outcome;
    }
    let leftovers = super::checks::leftovers(dep, "restore-cleanup");
    if !leftovers.is_empty() {
        outcome.fail_all(exit_bits::GENERAL, leftovers);
        return outcome;
    }
    let transfers = match plan_transfers(dep, &backup, &metadata, console) {
        Ok(t) => t,
        Err(errors) => {
            outcome.fail_all(exit_bits::GENERAL, errors);
            return outcome;
        }
    };
    let lock_steps = match dep.lock_steps(Side::Restore) {
        Ok(steps) => steps,
        Err(cycle) => return outcome.stop(Problem::general(ProblemKind::LockOrderCycle(cycle))),
    };

    if let Err(errors) = dep.each_instance(|i| i.create_store()) {
        outcome.fail_all(exit_bits::GENERAL, errors);
        remove_stores(dep, &mut outcome);
        return outcome;
    }
    if let Err(failure) = copy_to_instances(dep, &transfers, console) {
        match crate::interrupt::cause() {
            // The copy stopped at once; what it copied goes with the stores.
            Some(cause) => {
                remove_stores(dep, &mut outcome);
                outcome.fail(
                    exit_bits::GENERAL,
                    Failure::Interrupted(format!("{cause} while the backup was being copied to the VMs; the copy was stopped and removed; nothing was locked or restored")),
                );
            }
            None => {
                outcome.fail(exit_bits::GENERAL, failure);
                remove_stores(dep, &mut outcome);
            }
        }
        return outcome;
    }

    // BBR runs every restore-side script one at a time (see `Side::mode`).
    let lock_failed = dep.lock(Side::Restore, &lock_steps, console);
    let locked = lock_failed.is_empty();
    // An interruption is told once, last, by what it cut short: not as a script's failure.
    let mut cut_short = None;
    if !locked {
        match crate::interrupt::is_interrupted() {
            true => {
                cut_short = Some((
                    exit_bits::LOCK,
                    "while jobs were being locked (pre-restore-lock); restore scripts were not run",
                ))
            }
            false => outcome.fail_scripts(
                exit_bits::LOCK,
                &lock_failed,
                Some("restore scripts were not run"),
            ),
        }
    }
    let restore_jobs: Vec<JobRef> = transfers.iter().map(|t| t.job).collect();
    let restore_failed = match locked {
        true => dep.run_data(Side::Restore, &restore_jobs, console),
        false => Vec::new(),
    };
    if !restore_failed.is_empty() {
        match crate::interrupt::is_interrupted() {
            true => {
                cut_short = Some((
                    exit_bits::GENERAL,
                    "while restore scripts ran; the restore is incomplete",
                ))
            }
            false => outcome.fail_scripts(exit_bits::GENERAL, &restore_failed, None),
        }
    }
    // The restore's outcome is not told to restore-side unlocks.
    let unlock_failed = dep.unlock(Side::Restore, &lock_steps, true, console);
    outcome.fail_scripts(exit_bits::UNLOCK, &unlock_failed, None);

    remove_stores(dep, &mut outcome);
    if let Some((bit, what)) = cut_short {
        let cause = crate::interrupt::cause().unwrap_or_else(|| "the run was interrupted".into());
        let unlocked = super::outcome::unlocked(dep, &lock_steps, Side::Restore);
        outcome.fail(
            bit,
            Failure::Interrupted(format!("{cause} {what}; {unlocked}")),
        );
    }
    if outcome.succeeded() {
        console.info(format!(
            "Restored {} from {}",
            dep.name,
            opts.artifact.display()
        ));
    }
    outcome
}

/// Reads the metadata and checks that the backup is complete and every tar is there, before
/// any VM is touched. The tars' contents are checked next, by [`validate`].
fn check_artifact(
    backup: &BackupDir,
    only: Option<&InstanceId>,
) -> Result<BackupMetadata, Failure> {
    let mut metadata = backup
        .read_metadata()
        .map_err(|e| Failure::Other(e.to_string()))?;
    check_complete(backup, &metadata)?;
    check_names(backup, &metadata)?;
    if let Some(id) = only {
        metadata
            .instances
            .retain(|i| i.name == id.group && i.index == id.index);
    }
    for (_, tar, _) in tars(backup, &metadata) {
        match std::fs::metadata(&tar) {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => {
                return Err(Problem::general(ProblemKind::ArtifactNotAFile { tar }).into());
            }
            Err(error) => {
                return Err(Problem::general(ProblemKind::ArtifactMissing { tar, error }).into());
            }
        }
    }
    Ok(metadata)
}

/// Which tar of the backup: an instance's job's, or a named (custom) one.
enum TarOf {
    Job(InstanceId, String),
    Named(String),
}

impl TarOf {
    /// `what` about this tar.
    fn problem(self, what: impl FnOnce(Option<String>) -> ProblemKind) -> Problem {
        match self {
            TarOf::Job(id, job) => Problem::of_job(&id, &job, what(None)),
            TarOf::Named(name) => Problem::general(what(Some(name))),
        }
    }

    fn label(&self) -> String {
        match self {
            TarOf::Job(id, job) => format!("{id} {job}"),
            TarOf::Named(name) => name.clone(),
        }
    }
}

/// Every tar the metadata lists: which it is, its path and its checksums; the instances'
/// first, then the named (custom) ones.
fn tars<'a>(
    backup: &BackupDir,
    metadata: &'a BackupMetadata,
) -> Vec<(TarOf, PathBuf, &'a Checksums)> {
    let plain = metadata.instances.iter().flat_map(|instance| {
        instance.artifacts.iter().map(|artifact| {
            (
                TarOf::Job(
                    InstanceId {
                        group: instance.name.clone(),
                        index: instance.index.clone(),
                    },
                    artifact.name.clone(),
                ),
                backup.tar_path(&instance.name, &instance.index, &artifact.name),
                &artifact.checksums,
            )
        })
    });
    let named = metadata.custom_artifacts.iter().map(|artifact| {
        (
            TarOf::Named(artifact.name.clone()),
            backup.custom_tar_path(&artifact.name),
            &artifact.checksums,
        )
    });
    plain.chain(named).collect()
}

/// A backup without `finish_time` did not complete (it failed or was interrupted): it is refused
/// whole, before anything else is read from its metadata, so the operator learns that first.
pub fn check_complete(backup: &BackupDir, metadata: &BackupMetadata) -> Result<(), Problem> {
    if metadata.backup_activity.finish_time.is_some() {
        return Ok(());
    }
    Err(Problem::general(ProblemKind::Incomplete {
        backup: backup.path.clone(),
        start_time: metadata.backup_activity.start_time.clone(),
    }))
}

/// Every instance and job name in the metadata must name a tar inside the backup: checked
/// before any tar is opened, so a metadata file naming `../../x` reads nothing outside it.
fn check_names(backup: &BackupDir, metadata: &BackupMetadata) -> Result<(), Problem> {
    let refuse = |key: String, value: &str, why: NotPlain| {
        Problem::general(ProblemKind::BadMetadataName {
            metadata: backup.metadata_path(),
            key,
            value: value.to_string(),
            why,
        })
    };
    for (i, instance) in metadata.instances.iter().enumerate() {
        plain_name::check(&instance.name, NAME_MAX)
            .map_err(|why| refuse(format!("instances[{i}].name"), &instance.name, why))?;
        plain_name::check(&instance.index, NAME_MAX)
            .map_err(|why| refuse(format!("instances[{i}].index"), &instance.index, why))?;
        for (j, artifact) in instance.artifacts.iter().enumerate() {
            let key = format!("instances[{i}].artifacts[{j}].name");
            plain_name::check(&artifact.name, NAME_MAX)
                .and_then(|()| {
                    plain_name::check_tar_name(&instance.name, &instance.index, &artifact.name)
                })
                .map_err(|why| refuse(key, &artifact.name, why))?;
        }
    }
    for (i, artifact) in metadata.custom_artifacts.iter().enumerate() {
        plain_name::check_custom_tar_name(&artifact.name)
            .map_err(|why| refuse(format!("custom_artifacts[{i}].name"), &artifact.name, why))?;
    }
    Ok(())
}

/// Every instance of the backup must be in the deployment.
fn check_instances(dep: &Deployment, metadata: &BackupMetadata) -> Result<(), Vec<Problem>> {
    let mut errors = Vec::new();
    let ids: Vec<InstanceId> = (0..dep.len()).map(|i| dep.id(i).clone()).collect();
    for instance in &metadata.instances {
        let id = InstanceId {
            group: instance.name.clone(),
            index: instance.index.clone(),
        };
        if !ids.contains(&id) {
            errors.push(Problem::of_instance(
                &id,
                ProblemKind::MissingInstance {
                    deployment: dep.name.clone(),
                },
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Every job that can restore must have an artifact, and no job may ask for the discontinued
/// `restore_name`.
fn plan_transfers(
    dep: &Deployment,
    backup: &BackupDir,
    metadata: &BackupMetadata,
    console: &Console,
) -> Result<Vec<Transfer>, Vec<Problem>> {
    let mut transfers = Vec::new();
    let receivers = dep.jobs_with(ScriptKind::Restore);
    if receivers.is_empty() {
        // As BBR refuses it; else the locks and unlocks would run and the run "succeed"
        // with nothing restored (a backup restored onto the wrong VM, a wrong --root).
        let held: Vec<(InstanceId, String)> = metadata
            .instances
            .iter()
            .flat_map(|i| {
                i.artifacts.iter().map(move |a| {
                    let id = InstanceId {
                        group: i.name.clone(),
                        index: i.index.clone(),
                    };
                    (id, a.name.clone())
                })
            })
            .take(10)
            .collect();
        return Err(vec![Problem::general(ProblemKind::NoRestoreScripts {
            deployment: dep.name.clone(),
            held,
        })]);
    }
    let mut errors = super::checks::tar_name_errors(dep, &receivers);
    errors.extend(super::checks::not_executable(
        dep,
        &[
            ScriptKind::PreRestoreLock,
            ScriptKind::Restore,
            ScriptKind::PostRestoreUnlock,
        ],
    ));
    if !errors.is_empty() {
        return Err(errors);
    }
    for r in dep.jobs() {
        let (id, job) = (dep.id(r.instance), dep.job(r));
        if job.metadata.restore_name.is_some() && job.has(ScriptKind::Restore) {
            errors.push(Problem::of_job(id, &job.name, ProblemKind::RestoreNameSet));
            continue;
        }
        if !job.has(ScriptKind::Restore) {
            continue;
        }
        // A backup_one_restore_all job receives its group's one named artifact.
        if let Some(name) = dep.one_for_all.restore_name(id, job) {
            match metadata.custom_artifacts.iter().find(|a| a.name == name) {
                Some(a) => transfers.push(Transfer {
                    job: r,
                    tar: backup.custom_tar_path(&name),
                    checksums: a.checksums.clone(),
                }),
                None => errors.push(Problem::of_job(
                    id,
                    &job.name,
                    ProblemKind::OneForAllArtifactMissing { name },
                )),
            }
            continue;
        }
        let artifact = metadata
            .instances
            .iter()
            .find(|i| i.name == id.group && i.index == id.index)
            .and_then(|i| i.artifacts.iter().find(|a| a.name == job.name));
        match artifact {
            Some(a) => transfers.push(Transfer {
                job: r,
                tar: backup.tar_path(&id.group, &id.index, &job.name),
                checksums: a.checksums.clone(),
            }),
            None => {
                let held: Vec<String> = metadata
                    .instances
                    .iter()
                    .filter(|i| i.name == id.group && i.index == id.index)
                    .flat_map(|i| i.artifacts.iter().map(|a| a.name.clone()))
                    .take(10)
                    .collect();
                errors.push(Problem::of_job(
                    id,
                    &job.name,
                    ProblemKind::NoArtifactForJob { held },
                ))
            }
        }
    }
    for artifact in &metadata.custom_artifacts {
        let tar = backup.custom_tar_path(&artifact.name);
        if !transfers.iter().any(|t| t.tar == tar) {
            console.warn(format!(
                "{}: no job with a restore script receives this named artifact; it is not restored",
                artifact.name
            ));
        }
    }
    for instance in &metadata.instances {
        for artifact in &instance.artifacts {
            let receiver = transfers.iter().any(|t| {
                let id = dep.id(t.job.instance);
                id.group == instance.name
                    && id.index == instance.index
                    && dep.job(t.job).name == artifact.name
            });
            // A backup_one_restore_all job's plain artifacts (its non-bootstrap instances')
            // are not restored, as under BBR: its named one is.
            let one_for_all = dep
                .one_for_all
                .restores_named(&instance.name, &artifact.name);
            if !receiver && !one_for_all {
                console.warn(format!(
                    "{}/{} {}: no job with a restore script receives this artifact; it is not restored",
                    instance.name, instance.index, artifact.name
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(transfers)
    } else {
        Err(errors)
    }
}

/// Copies each job's artifact to its VM; the first that fails stops the copy (nothing is
/// restored anyway, and the rest may be hours of data).
fn copy_to_instances(
    dep: &mut Deployment,
    transfers: &[Transfer],
    console: &Console,
) -> Result<(), Failure> {
    for t in transfers {
        let name = dep.job(t.job).name.clone();
        let id = dep.id(t.job.instance).clone();
        let started = std::time::Instant::now();
        let result = File::open(&t.tar)
            .map_err(|e| TransferError::Local(format!("cannot read {}: {e}", t.tar.display())))
            .and_then(|file| {
                let size = file.metadata().map(|m| m.len()).ok();
                let bar = progress::transfer_bar(
                    console,
                    format!("{id} {name}: copying backup to the VM"),
                    size,
                );
                let file = Interruptible(BufReader::with_capacity(1 << 20, file));
                let mut input = Counted::new(file, bar);
                let received =
                    dep.instance(t.job.instance)
                        .receive_artifact(&name, &mut input, &t.checksums);
                input.finish();
                // The agent verified every file against the backup's checksums. Only when it
                // refused is the tar read again here, to tell a corrupted backup (named as
                // such) from a failure on the VM (a full disk, say).
                received.map_err(|agent_error| {
                    let agent_error = TransferError::Instance(Box::new(agent_error));
                    if crate::interrupt::is_interrupted() {
                        return agent_error;
                    }
                    match corruption(&t.tar, &t.checksums, None) {
                        Some(why) => TransferError::Corrupted(Box::new(why)),
                        None => agent_error,
                    }
                })
            });
        if let Err(error) = result {
            return Err(Failure::Transfer {
                instance: id,
                job: name,
                error,
            });
        }
        let bytes = std::fs::metadata(&t.tar).map(|m| m.len()).unwrap_or(0);
        console.transfer(
            &id,
            &name,
            "copy",
            bytes,
            t.checksums.len(),
            started.elapsed(),
        );
    }
    Ok(())
}

/// Reads every tar of the backup, one after another, and checks it against the metadata's
/// checksums: the pass BBR makes before it runs anything on a VM. Nothing else runs beside it.
fn validate(
    backup: &BackupDir,
    metadata: &BackupMetadata,
    console: &Console,
) -> Result<(), Problem> {
    let started = std::time::Instant::now();
    let (mut tars, mut files, mut bytes) = (0, 0, 0);
    for (of, tar, checksums) in self::tars(backup, metadata) {
        let size = std::fs::metadata(&tar).map(|m| m.len()).ok();
        let bar = progress::transfer_bar(console, format!("{} check", of.label()), size);
        if let Some(corruption) = corruption(&tar, checksums, bar) {
            return Err(of.problem(|label| ProblemKind::Corrupted { label, corruption }));
        }
        tars += 1;
        files += checksums.len();
        bytes += size.unwrap_or(0);
    }
    let count = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    console.info(format!(
        "Checked the backup: {}, {}, {}, every checksum matches ({})",
        count(tars, "tar"),
        count(files, "file"),
        crate::console::human_bytes(bytes),
        crate::duration::format(started.elapsed())
    ));
    Ok(())
}

/// What is wrong with the local tar, if anything: read whole (onto `bar`, if any) and checked
/// against the backup's checksums.
fn corruption(
    tar: &Path,
    checksums: &Checksums,
    bar: Option<indicatif::ProgressBar>,
) -> Option<Corruption> {
    let found = File::open(tar).map_err(|e| e.to_string()).and_then(|file| {
        let file = Interruptible(BufReader::with_capacity(1 << 20, file));
        let mut input = Counted::new(file, bar);
        let read = read_tar(&mut input, None).map_err(|e| e.to_string());
        input.finish();
        read
    });
    match found {
        Err(error) => Some(Corruption::Unreadable {
            tar: tar.to_path_buf(),
            error,
        }),
        Ok(found) => compare(checksums, &found).map(|mismatch| Corruption::ChecksumMismatch {
            tar: tar.to_path_buf(),
            mismatch,
        }),
    }
}
