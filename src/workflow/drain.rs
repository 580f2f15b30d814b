//! Bringing the artifacts home: each job's tar is written to the artifact directory while a
//! second thread reads it as a tar and hashes every file, so the operator's side checks the
//! VM's checksums without a second read. Instances drain in parallel, as under BBR.

use std::collections::BTreeMap;
use std::fs::File;

use super::deployment::{Deployment, JobRef};
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
) -> Result<(), Vec<String>> {
    let mut by_instance: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for &r in jobs {
        by_instance
            .entry(r.instance)
            .or_default()
            .push(dep.job(r).name.clone());
    }
    let results = dep.on_instances(by_instance, |_, instance, names| {
        names
            .iter()
            .map(|job| drain_job(instance, job, artifact, console))
            .collect::<Vec<_>>()
    });

    let mut errors = Vec::new();
    for (i, results) in results {
        let id = dep.id(i);
        let mut artifacts = Vec::new();
        for result in results {
            match result {
                Ok(a) => artifacts.push(a),
                Err(e) => errors.push(e),
            }
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

fn drain_job(
    instance: &mut dyn Instance,
    job: &str,
    artifact: &BackupDir,
    console: &Console,
) -> Result<ArtifactChecksums, String> {
    let id = instance.id().clone();
    let path = artifact.tar_path(&id.group, &id.index, job);
    let started = std::time::Instant::now();
    let fail = |what: String| {
        // A tar that failed its check must not sit in the artifact looking like a good one.
        let _ = std::fs::remove_file(&path);
        Err(format!("{id} {job}: {what}"))
    };
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
        Err(e) => return fail(e.to_string()),
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
