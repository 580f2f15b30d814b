//! Bringing the artifacts home: each job's tar is written to the artifact directory while a
//! second thread reads it as a tar and hashes every file, so the operator's side checks the
//! VM's checksums without a second read. Instances drain in parallel, as under BBR.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;

use super::deployment::{Deployment, JobRef};
use super::failure::{Failure, TransferError};
use crate::artifact::Checksums;
use crate::artifact::backup_dir::{
    ArtifactChecksums, BackupDir, BackupMetadata, InstanceArtifacts,
};
use crate::artifact::checksums::compare;
use crate::artifact::handoff::RunInterrupted;
use crate::artifact::verify_stream::VerifyingWriter;
use crate::artifact::writeback::WritebackFile;
use crate::console::Console;
use crate::instance::Instance;
use crate::progress::{self, Counted};

/// Drains every job in `jobs` into `artifact`, recording checksums in `metadata`.
pub fn drain(
    dep: &mut Deployment,
    jobs: &[JobRef],
    artifact: &BackupDir,
    metadata: &mut BackupMetadata,
    console: &Console,
) -> Result<(), Vec<Failure>> {
    // Each job with the named artifact it makes, if it makes one (backup_one_restore_all).
    let mut by_instance: BTreeMap<usize, Vec<(String, Option<String>)>> = BTreeMap::new();
    for &r in jobs {
        let named = dep.one_for_all.backup_name(dep.id(r.instance), dep.job(r));
        by_instance
            .entry(r.instance)
            .or_default()
            .push((dep.job(r).name.clone(), named));
    }
    let results = dep.on_instances(by_instance, |_, instance, names| {
        names
            .into_iter()
            .map(|(job, named)| {
                let id = instance.id();
                let path = match &named {
                    Some(name) => artifact.custom_tar_path(name),
                    None => artifact.tar_path(&id.group, &id.index, &job),
                };
                (named, drain_job(instance, &job, path, console))
            })
            .collect::<Vec<_>>()
    });

    let mut errors = Vec::new();
    for (i, results) in results {
        let id = dep.id(i);
        let mut artifacts = Vec::new();
        let mut any_named = false;
        for (named, result) in results {
            match (named, result) {
                // Named artifacts are listed once for the deployment, under custom_artifacts.
                (Some(name), Ok(a)) => {
                    any_named = true;
                    metadata.custom_artifacts.push(ArtifactChecksums {
                        name,
                        checksums: a.checksums,
                    })
                }
                (None, Ok(a)) => artifacts.push(a),
                (_, Err(e)) => errors.push(e),
            }
        }
        // As BBR, an instance whose only artifacts are named ones is not listed.
        if artifacts.is_empty() && any_named {
            continue;
        }
        metadata.instances.push(InstanceArtifacts {
            name: id.group.clone(),
            index: id.index.clone(),
            artifacts,
        });
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Drains `job`'s artifact into the tar at `path`.
fn drain_job(
    instance: &mut dyn Instance,
    job: &str,
    path: PathBuf,
    console: &Console,
) -> Result<ArtifactChecksums, Failure> {
    let id = instance.id().clone();
    let started = std::time::Instant::now();
    let fail_with = |error: TransferError| {
        // A tar that failed its check must not sit in the artifact looking like a good one.
        let _ = std::fs::remove_file(&path);
        Err(Failure::Transfer {
            instance: id.clone(),
            job: job.to_string(),
            error,
        })
    };
    let fail = |what: String| fail_with(TransferError::Local(what));
    let file = match File::create(&path) {
        Ok(f) => f,
        Err(e) => return fail(format!("cannot create {}: {e}", path.display())),
    };
    // Written by its own thread in whole batches: no buffering needed here.
    let mut writer = VerifyingWriter::new(WritebackFile::new(file));
    let bar = progress::transfer_bar(
        console,
        format!("{id} {job}: copying backup from the VM"),
        None,
    );
    // The VM says the tar's length as it starts sending: the bar then has a total and an ETA.
    let sized = bar.clone();
    let total = Box::new(move |len: u64| {
        if let Some(bar) = &sized {
            progress::set_total(bar, len);
        }
    });
    let mut counted = Counted::new(&mut writer, bar);
    let sent = instance.send_artifact_sized(job, &mut counted, total);
    counted.finish();
    // The artifact's own file failing (a full disk) is the cause to name, with its path.
    let (out, received) = match writer.finish() {
        Ok(done) => done,
        Err(e) if RunInterrupted::is(&e) => return fail(e.to_string()),
        Err(e) => return fail(format!("cannot write {}: {e}", path.display())),
    };
    let sent: Checksums = match sent {
        Ok(c) => c,
        Err(e) => return fail_with(TransferError::Instance(Box::new(e))),
    };
    let received = match received {
        Ok(c) => c,
        Err(e) => return fail(format!("the artifact stream is not a valid tar: {e}")),
    };
    if let Some(mismatch) = compare(&sent, &received) {
        return fail(format!(
            "the artifact is corrupted: checksums do not match ({mismatch})"
        ));
    }
    // Synced through its own descriptor, which is the one to report what went wrong in its
    // writeback (an I/O error, a full NFS quota): syncfs would not report it on kernels
    // before 5.8, nor when another process's syncfs saw the error first.
    let file = out.into_file();
    if let Err(e) = file.sync_data() {
        return fail(format!("cannot write {}: {e}", path.display()));
    }
    let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    console.transfer(&id, job, "drain", bytes, received.len(), started.elapsed());
    Ok(ArtifactChecksums {
        name: job.to_string(),
        checksums: received,
    })
}
