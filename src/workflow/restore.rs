//! The restore workflow, as BBR's flowchart draws it:
//! check the local artifact -> the deployment matches the backup -> copy the artifacts to the
//! VMs, every checksum verified on both ends as they pass -> pre-restore-lock -> restore ->
//! post-restore-unlock (always) -> clean up the VMs.
//!
//! As BBR does, the whole backup is read once to validate it, before any VM is touched (a
//! corrupted backup runs no script at all, metadata included), and again to copy it. The copy
//! is verified too: the agent checks every file it unpacks against the BLAKE3 the validation
//! took of the same bytes (an older agent: the backup's SHA-256 checksums), and when it
//! refuses a tar the driver reads that tar again, to say whether the backup (changed since it
//! was validated) is to blame.
//!
//! From an object store the backup is read once: the copy is the check (every read is paid
//! for, and a restore of terabytes should not download them twice). A damaged object then
//! stops the copy before anything is locked, so no lock or restore script runs on it; the
//! metadata scripts, which only describe the jobs, have run by then.

use std::io::BufReader;
use std::path::{Path, PathBuf};

use super::check::{Problem, ProblemKind};
use super::deployment::{Deployment, JobRef};
use super::failure::{Failure, TransferError};
use super::finish::{remove_stores, write_report};
use super::outcome::Outcome;
use crate::artifact::Checksums;
use crate::artifact::backup_dir::BackupMetadata;
use crate::artifact::digest::DigestKind;
use crate::artifact::stored_backup::{Blake3Sums, StoredBackup, StoredBackupError};
use crate::console::Console;
use crate::contract::{ScriptKind, Side, exit_bits};
use crate::instance::{Expected, InstanceId};
use crate::interrupt::Interruptible;
use crate::progress::{self, Counted};

pub struct RestoreOptions<'b> {
    /// The `<deployment>_<timestamp>` backup, in whatever storage holds it.
    pub backup: &'b StoredBackup<'b>,
    /// Restore only this instance of the backup (a local restore of one VM).
    pub only: Option<InstanceId>,
    /// Where to write the HTML run report, if anywhere.
    pub report: Option<PathBuf>,
}

/// A job to restore and the artifact it receives.
struct Transfer {
    job: JobRef,
    /// The tar's key in the backup's storage.
    tar: String,
    checksums: Checksums,
}

/// Restores the deployment. The backup's artifact directory is only read; the run report is
/// written where `report` says, if it says.
pub fn restore(dep: &mut Deployment, opts: &RestoreOptions, console: &Console) -> Outcome {
    console.run("restore", &dep.name, None);
    let mut outcome = run_restore(dep, opts, console);
    outcome.name_next_step(dep.cleanup_via.as_deref(), "restore");
    if let Some(path) = &opts.report {
        let shown = Path::new(opts.backup.shown());
        write_report(path, "restore", dep, &outcome, shown, console);
    }
    console.run("restore", &dep.name, Some(outcome.exit_code()));
    outcome
}

fn run_restore(dep: &mut Deployment, opts: &RestoreOptions, console: &Console) -> Outcome {
    let mut outcome = Outcome::default();
    let backup = opts.backup;
    console.info(format!(
        "Starting restore of {} from {}...",
        dep.name,
        backup.shown()
    ));

    let metadata = match check_artifact(backup, opts.only.as_ref()) {
        Ok(m) => m,
        Err(e) => return outcome.stop(e),
    };
    // Before any VM is touched: every instance of the backup must be in the deployment, and
    // every tar must match its checksums.
    if let Err(errors) = check_instances(dep, &metadata) {
        outcome.fail_all(exit_bits::GENERAL, errors);
        return outcome;
    }
    // Read from an object store, the backup is checked as it is copied: every file against
    // its checksum, by the agent as it unpacks, every encrypted chunk by the driver as it
    // decrypts, all before anything is locked. A local one is checked first, as BBR does.
    let checked = if backup.read_once() {
        console.info(format!(
            "The backup is read once, from {}, and checked as it is copied to the VMs, before anything is locked",
            backup.shown()
        ));
        Blake3Sums::new()
    } else {
        match backup.validate(&metadata, console) {
            Ok(checked) => checked,
            Err(e) => {
                return match crate::interrupt::cause() {
                    Some(cause) => outcome.stop(Failure::Interrupted(format!(
                        "{cause} while the backup was being checked; nothing on the VMs was touched"
                    ))),
                    None => outcome.stop(Problem::from(e)),
                };
            }
        }
    };
    if let Err(errors) = dep.begin().and_then(|()| dep.describe(console)) {
        outcome.fail_all(exit_bits::GENERAL, errors);
        return outcome;
    }
    let leftovers = super::checks::leftovers(dep, "restore-cleanup");
    if !leftovers.is_empty() {
        outcome.fail_all(exit_bits::GENERAL, leftovers);
        return outcome;
    }
    let transfers = match plan_transfers(dep, backup, &metadata, console) {
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
    if let Err(failure) = copy_to_instances(dep, backup, &transfers, &checked, console) {
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
        console.info(format!("Restored {} from {}", dep.name, backup.shown()));
    }
    outcome
}

/// Reads the metadata and checks that the backup is complete and every tar is there, before
/// any VM is touched. The tars' contents are checked next, by [`validate`].
fn check_artifact(
    backup: &StoredBackup,
    only: Option<&InstanceId>,
) -> Result<BackupMetadata, Failure> {
    let mut metadata = backup
        .read_metadata()
        .map_err(|e| Problem::from(StoredBackupError::from(e)))?;
    backup.check_complete(&metadata).map_err(Problem::from)?;
    // An encrypted backup's checksums: without the identity for them, nothing goes further.
    backup.unseal(&mut metadata).map_err(Problem::from)?;
    backup.check_names(&metadata).map_err(Problem::from)?;
    if let Some(id) = only {
        metadata
            .instances
            .retain(|i| i.name == id.group && i.index == id.index);
    }
    backup.check_present(&metadata).map_err(Problem::from)?;
    Ok(metadata)
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
    backup: &StoredBackup,
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
                    tar: backup.custom_tar_key(&name),
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
                tar: backup.tar_key(&id.group, &id.index, &job.name),
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
        let tar = backup.custom_tar_key(&artifact.name);
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
/// restored anyway, and the rest may be hours of data). `checked` holds the BLAKE3 of the
/// files the backup's check read, by tar.
fn copy_to_instances(
    dep: &mut Deployment,
    backup: &StoredBackup,
    transfers: &[Transfer],
    checked: &Blake3Sums,
    console: &Console,
) -> Result<(), Failure> {
    for t in transfers {
        let name = dep.job(t.job).name.clone();
        let id = dep.id(t.job.instance).clone();
        let started = std::time::Instant::now();
        let size = backup.size(&t.tar).ok().flatten();
        // A compressed tar goes to the VM compressed when its agent can decompress it (the
        // network is the narrow part), else decompressed here; an encrypted one is decrypted
        // here, either way.
        let instance = dep.instance(t.job.instance);
        let vm_decompresses = backup.compressed() && instance.can_compress().unwrap_or(false);
        // The agent checks what it unpacks against the BLAKE3 the check took of the same
        // bytes, when it can (a fifth of SHA-256's CPU on the VM); else against the backup's
        // own SHA-256 checksums.
        let expected = match checked.get(&t.tar) {
            Some(sums) if instance.takes_blake3().unwrap_or(false) => Expected {
                kind: DigestKind::Blake3,
                sums,
            },
            _ => Expected::sha256(&t.checksums),
        };
        // A plain tar in a directory goes without passing through this process's memory.
        let received = match backup.plain_file(&t.tar) {
            Some(file) => {
                let bar = progress::transfer_bar(
                    console,
                    format!("{id} {name}: copying backup to the VM"),
                    size,
                );
                Ok(instance.receive_artifact_file(&name, &file, expected, bar))
            }
            None => backup
                .open_tar(&t.tar, vm_decompresses)
                .map_err(|e| TransferError::Read(Box::new(e)))
                .map(|(file, compressed)| {
                    // Decompressed here, the bytes sent outgrow the object: no total then.
                    let total = size.filter(|_| compressed || !backup.compressed());
                    let bar = progress::transfer_bar(
                        console,
                        format!("{id} {name}: copying backup to the VM"),
                        total,
                    );
                    let file = Interruptible(BufReader::with_capacity(1 << 20, file));
                    let mut input = Counted::new(file, bar);
                    let instance = dep.instance(t.job.instance);
                    let received = match compressed {
                        true => instance.receive_artifact_compressed(&name, &mut input, expected),
                        false => instance.receive_artifact(&name, &mut input, expected),
                    };
                    input.finish();
                    received
                }),
        };
        // The agent verified every file against the checked digests. Only when it refused
        // is the tar read again here, to tell a corrupted backup (named as such) from a
        // failure on the VM (a full disk, say); not from an object store, whose every read is
        // paid for: the agent's refusal names the job.
        let result = received.and_then(|received| {
            received.map_err(|agent_error| {
                let agent_error = TransferError::Instance(Box::new(agent_error));
                if crate::interrupt::is_interrupted() || backup.read_once() {
                    return agent_error;
                }
                match backup.corruption(&t.tar, &t.checksums, None) {
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
        let bytes = size.unwrap_or(0);
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
