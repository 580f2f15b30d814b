//! Bringing the artifacts home: each job's tar is written to the storage while a second thread
//! reads it as a tar and hashes every file, so the operator's side checks the VM's checksums
//! without a second read. A tar is kept under its own name only once its checksums matched
//! (the storage's object is finished then, and aborted on any failure). Instances drain in
//! parallel, as under BBR.
//!
//! The metadata's SHA-256 checksums are the ones taken here, of the bytes stored. The VM's
//! only prove the bytes are the ones it read: an agent that takes BLAKE3 gives those (a fifth
//! of SHA-256's CPU on a production VM), and this side takes both digests in its one read.

use std::collections::BTreeMap;

use super::deployment::{Deployment, JobRef};
use super::failure::{Failure, TransferError};
use crate::artifact::Checksums;
use crate::artifact::backup_dir::{
    ArtifactChecksums, BackupMetadata, InstanceArtifacts, custom_tar_file_name, tar_file_name,
};
use crate::artifact::checksums::compare;
use crate::artifact::codec::Codecs;
use crate::artifact::handoff::RunInterrupted;
use crate::artifact::tar_reader::TarReadError;
use crate::artifact::verify_stream::VerifyingWriter;
use crate::console::Console;
use crate::instance::{DigestKind, Instance};
use crate::progress::{self, Counted};
use crate::storage::{Storage, StorageError};
use crate::thread_start::NoThread;

/// Drains every job in `jobs` into the directory `artifact` of `storage`, recording checksums
/// in `metadata`; each tar is compressed and encrypted as `codecs` say.
pub fn drain(
    dep: &mut Deployment,
    jobs: &[JobRef],
    storage: &dyn Storage,
    artifact: &str,
    codecs: &Codecs,
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
                let file = match &named {
                    Some(name) => custom_tar_file_name(name),
                    None => tar_file_name(&id.group, &id.index, &job),
                };
                let key = format!("{artifact}/{file}{}", codecs.layers().suffix());
                (
                    named,
                    drain_job(instance, &job, storage, &key, codecs, console),
                )
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

/// Drains `job`'s artifact into the object `key` of `storage`.
fn drain_job(
    instance: &mut dyn Instance,
    job: &str,
    storage: &dyn Storage,
    key: &str,
    codecs: &Codecs,
    console: &Console,
) -> Result<ArtifactChecksums, Failure> {
    let id = instance.id().clone();
    let started = std::time::Instant::now();
    let shown = storage.describe(key);
    // A tar that failed its check must not sit in the artifact looking like a good one: its
    // object is never finished (dropped, it is aborted), so nothing is under its name.
    let fail_with = |error: TransferError| {
        Err(Failure::Transfer {
            instance: id.clone(),
            job: job.to_string(),
            error,
        })
    };
    let storage_failed = |e: StorageError| fail_with(TransferError::Storage(Box::new(e)));
    let write_failed = |source: std::io::Error| {
        fail_with(if RunInterrupted::is(&source) {
            TransferError::Interrupted(source)
        } else if NoThread::is(&source) {
            TransferError::NoThread(source)
        } else {
            TransferError::Write {
                object: shown.clone(),
                source,
            }
        })
    };
    let object = match storage.create(key) {
        Ok(object) => object,
        Err(e) => return storage_failed(e),
    };
    // Compressed (when the driver compresses) and encrypted on the file's thread, after the
    // check saw the bytes: the check reads the tar, the object gets what is stored.
    let local_file = object.is_local_file();
    let object = match codecs.encoder(object) {
        Ok(object) => object,
        Err(e) => return write_failed(e),
    };
    let on_vm = codecs.on_vm();
    // Written by its own thread in whole batches: no buffering needed here. A VM's zstd
    // stream is decompressed by the check, which hashes the tar inside.
    let digest = match instance.takes_blake3() {
        Ok(true) => DigestKind::Blake3,
        _ => DigestKind::Sha256,
    };
    let mut writer = match on_vm {
        None => VerifyingWriter::new(object),
        Some(_) => VerifyingWriter::new_zstd(object),
    }
    .in_large_batches(local_file)
    .taking_blake3(digest == DigestKind::Blake3);
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
    let sent = match on_vm {
        None => instance.send_artifact_sized(job, &mut counted, digest, total),
        Some(zstd) => instance.send_artifact_compressed(job, &mut counted, digest, zstd.level),
    };
    counted.finish();
    // The artifact's own object failing (a full disk) is the cause to name, with its path.
    let (out, received) = match writer.finish() {
        Ok(done) => done,
        Err(e) => return write_failed(e),
    };
    let checked = match (sent, received) {
        (Err(e), _) => Err(TransferError::Instance(Box::new(e))),
        // The check that could not start says nothing of the tar.
        (_, Err(TarReadError::Read(e))) if NoThread::is(&e) => Err(TransferError::NoThread(e)),
        (_, Err(e)) => Err(TransferError::NotATar(e)),
        (Ok(sent), Ok(received)) => {
            // What the VM's digests are compared with: the same kind, of the same bytes. (The
            // check was asked for BLAKE3 whenever the VM was; were they missing, nothing of
            // the VM's would match.)
            let none = Checksums::new();
            let same_kind = match digest {
                DigestKind::Blake3 => received.blake3.as_ref().unwrap_or(&none),
                DigestKind::Sha256 => &received.sha256,
            };
            match compare(&sent, same_kind) {
                Some(mismatch) => Err(TransferError::Mismatch {
                    digest,
                    mismatch: Box::new(mismatch),
                    // A VM's zstd stream holds the bytes it read.
                    sent_from_files: on_vm.is_none(),
                }),
                None => Ok::<Checksums, TransferError>(received.sha256),
            }
        }
    };
    // Dropped unfinished, the object is aborted: nothing is left under its name.
    let received = match checked {
        Ok(received) => received,
        Err(error) => return fail_with(error),
    };
    // The codecs' last bytes (zstd's end of frame, age's last chunk), then the object.
    let out = match out.finish() {
        Ok(out) => out,
        Err(e) => return write_failed(e),
    };
    // Only now is the tar seen under its name: the storage makes it durable first (a local
    // file synced through its own descriptor, which reports its own writeback errors).
    let bytes = match out.finish() {
        Ok(bytes) => bytes,
        Err(e) => return storage_failed(e),
    };
    console.transfer(&id, job, "drain", bytes, received.len(), started.elapsed());
    Ok(ArtifactChecksums {
        name: job.to_string(),
        checksums: received,
    })
}
