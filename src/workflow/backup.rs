//! The backup workflow, as BBR's flowchart draws it:
//! checks -> make the local artifact -> lock (ordered) -> backup (all) -> unlock (reversed,
//! always) -> drain the artifacts if the backup succeeded -> clean up the VMs.

use super::checks::backup_checks;
use super::deployment::Deployment;
use super::drain::drain;
use super::failure::Failure;
use super::finish::{remove_stores, report_html};
use super::outcome::Outcome;
use crate::artifact::backup_dir::{BackupActivity, BackupMetadata};
use crate::artifact::codec::{self, Codecs};
use crate::artifact::metadata_keys;
use crate::console::Console;
use crate::contract::METADATA_FILE;
use crate::contract::{Side, exit_bits};
use crate::storage::{Storage, StorageError};
use crate::timestamp::Utc;

pub struct BackupOptions<'s> {
    /// Where the `<deployment>_<timestamp>` directory is made (`--artifact-path`).
    pub storage: &'s dyn Storage,
    /// Skip lock and unlock scripts (`--unsafe-lock-free`), as BBR's flag does.
    pub lock_free: bool,
    /// How each tar is stored (`--compress`, `--encrypt-to`): plain by default.
    pub codecs: &'s Codecs,
}

/// Backs the deployment up. Returns the outcome and the artifact directory's name in the
/// storage, if one was made; the run report goes into it, whatever the outcome.
pub fn backup(
    dep: &mut Deployment,
    opts: &BackupOptions,
    console: &Console,
) -> (Outcome, Option<String>) {
    console.run("backup", &dep.name, None);
    let (mut outcome, artifact) = run_backup(dep, opts, console);
    outcome.name_next_step(dep.cleanup_via.as_deref(), "backup");
    if let Some(dir) = &artifact {
        let report = format!("{dir}/report.html");
        let shown = opts.storage.describe(dir);
        let html = report_html(
            "backup",
            dep,
            &outcome,
            std::path::Path::new(&shown),
            console,
        );
        let written = html.and_then(|html| {
            opts.storage
                .put(&report, html.as_bytes())
                .map_err(|e| e.to_string())
        });
        if let Err(e) = written {
            console.warn(e);
        }
    }
    console.run("backup", &dep.name, Some(outcome.exit_code()));
    (outcome, artifact)
}

/// Writes the metadata as it stands, whole or not at all, after everything before it. An
/// encrypted backup's checksums go first into their own encrypted object, and the metadata
/// lists the files without them (`codec::sealed`).
fn put_metadata(
    storage: &dyn Storage,
    dir: &str,
    codecs: &Codecs,
    metadata: &BackupMetadata,
) -> Result<(), StorageError> {
    let key = format!("{dir}/{METADATA_FILE}");
    let sealed;
    let metadata = match codecs.recipients.is_empty() {
        true => metadata,
        false => {
            let sealed_key = format!("{dir}/{}", codec::CHECKSUMS_OBJECT);
            let (plain, object) =
                codec::sealed::seal(metadata, &codecs.recipients).map_err(|source| {
                    StorageError::Io {
                        doing: "encrypt",
                        what: storage.describe(&sealed_key),
                        source,
                    }
                })?;
            storage.put(&sealed_key, &object)?;
            sealed = plain;
            &sealed
        }
    };
    let yaml = metadata_keys::to_yaml(metadata).map_err(|e| StorageError::Io {
        doing: "write",
        what: storage.describe(&key),
        source: std::io::Error::other(e),
    })?;
    storage.put(&key, yaml.as_bytes())
}

/// Removes what killed backups of this deployment left in its earlier directories
/// (`<deployment>_<timestamp>/`, exactly: not another deployment's whose name starts alike).
fn abort_unfinished(storage: &dyn Storage, deployment: &str) -> Result<usize, StorageError> {
    let prefix = format!("{deployment}_");
    let stamp = "YYYYMMDDTHHMMSSZ".len();
    // Found by what they left unfinished: a killed backup to an object store leaves nothing
    // else, not even a metadata.
    let mut dirs: Vec<String> = storage
        .unfinished(&prefix, LISTED_AT_MOST)?
        .into_iter()
        .filter_map(|key| key.split_once('/').map(|(dir, _)| dir.to_string()))
        .filter(|dir| {
            dir.strip_prefix(&prefix).is_some_and(|ts| {
                ts.len() == stamp
                    && ts
                        .bytes()
                        .all(|b| b.is_ascii_digit() || b == b'T' || b == b'Z')
            })
        })
        .collect();
    dirs.dedup();
    let mut removed = 0;
    for dir in dirs {
        removed += storage.abort_unfinished(&format!("{dir}/"))?;
    }
    Ok(removed)
}

/// Unfinished writes looked at, at most, to find this deployment's earlier backups.
const LISTED_AT_MOST: usize = 1_000_000;

fn run_backup(
    dep: &mut Deployment,
    opts: &BackupOptions,
    console: &Console,
) -> (Outcome, Option<String>) {
    let mut outcome = Outcome::default();
    let started = Utc::now();
    console.info(format!("Starting backup of {}...", dep.name));

    if let Err(errors) = dep.begin().and_then(|()| dep.describe(console)) {
        outcome.fail_all(exit_bits::GENERAL, errors);
        return (outcome, None);
    }
    let plan = match backup_checks(dep, console) {
        Ok(plan) => plan,
        Err(errors) => {
            outcome.fail_all(exit_bits::GENERAL, errors);
            return (outcome, None);
        }
    };

    // An agent that cannot compress would send the plain tar: refused before anything is made
    // or locked, naming --compress-on driver.
    if opts.codecs.on_vm().is_some() {
        let cannot = dep.each_instance(|i| match i.can_compress()? {
            true => Ok(()),
            false => Err(crate::instance::InstanceError::NoCompression),
        });
        if let Err(errors) = cannot {
            outcome.fail_all(exit_bits::GENERAL, errors);
            return (outcome, None);
        }
    }

    let storage = opts.storage;
    let artifact = format!("{}_{}", dep.name, started.compact());
    if let Err(e) = storage.create_dir(&artifact) {
        return (outcome.stop(Failure::Storage(e)), None);
    }
    let shown = storage.describe(&artifact);
    let mut metadata = BackupMetadata {
        // None for a plain backup: its metadata stays BBR's.
        bbr_agent: opts.codecs.record(),
        backup_activity: BackupActivity {
            start_time: started.activity(),
            finish_time: None,
        },
        ..Default::default()
    };
    // BBR marks the start in the directory; an object store gets its metadata only at the end.
    if storage.marks_a_start()
        && let Err(e) = put_metadata(storage, &artifact, opts.codecs, &metadata)
    {
        return (outcome.stop(Failure::Storage(e)), Some(artifact));
    }

    if let Err(errors) = dep.each_instance(|i| i.create_store()) {
        outcome.fail_all(exit_bits::GENERAL, errors);
        // Only stores this run made are removed: a leftover would have failed the checks.
        remove_stores(dep, &mut outcome);
        return (outcome, Some(artifact));
    }
    // No other backup of this deployment is running now: its stores on the VMs are this run's
    // (a leftover one failed the checks), so what an earlier run's tars left half-written is
    // no one's. Another deployment's directories, which may be in use, are not looked at.
    match abort_unfinished(storage, &dep.name) {
        Ok(0) => {}
        Ok(n) => console.info(format!(
            "Removed {n} unfinished file{} that interrupted backups of {} left",
            if n == 1 { "" } else { "s" },
            dep.name
        )),
        Err(e) => console.warn(format!(
            "cannot remove what interrupted backups of {} left: {e}",
            dep.name
        )),
    }

    let lock_failed = match opts.lock_free {
        true => Vec::new(),
        false => dep.lock(Side::Backup, &plan.lock_steps, console),
    };
    let locked = lock_failed.is_empty();
    // An interruption is told once, after the unlocks, by what it cut short: not as a
    // script's failure.
    let mut cut_short = None;
    if !locked {
        match crate::interrupt::is_interrupted() {
            true => {
                cut_short = Some((
                    exit_bits::LOCK,
                    "while jobs were being locked (pre-backup-lock); backup scripts were not run",
                ))
            }
            false => outcome.fail_scripts(
                exit_bits::LOCK,
                &lock_failed,
                Some("backup scripts were not run"),
            ),
        }
    }

    let backup_failed = match locked {
        true => dep.run_data(Side::Backup, &plan.backup_jobs, console),
        false => Vec::new(),
    };
    let backed_up = locked && backup_failed.is_empty();
    if locked && !backed_up {
        match crate::interrupt::is_interrupted() {
            true => {
                cut_short = Some((
                    exit_bits::GENERAL,
                    "while backup scripts ran; nothing was drained",
                ))
            }
            false => outcome.fail_scripts(
                exit_bits::GENERAL,
                &backup_failed,
                Some("nothing was drained"),
            ),
        }
    }

    if !opts.lock_free {
        let unlock_failed = dep.unlock(Side::Backup, &plan.lock_steps, backed_up, console);
        outcome.fail_scripts(exit_bits::UNLOCK, &unlock_failed, None);
    }
    if let Some((bit, what)) = cut_short {
        let cause = crate::interrupt::cause().unwrap_or_else(|| "the run was interrupted".into());
        let unlocked = match opts.lock_free {
            true => "nothing was locked (--unsafe-lock-free)".to_string(),
            false => super::outcome::unlocked(dep, &plan.lock_steps, Side::Backup),
        };
        outcome.fail(
            bit,
            Failure::Interrupted(format!("{cause} {what}; {unlocked}")),
        );
    }

    let mut drained = backed_up && {
        match drain(
            dep,
            &plan.backup_jobs,
            storage,
            &artifact,
            opts.codecs,
            &mut metadata,
            console,
        ) {
            Ok(()) => true,
            Err(errors) => {
                outcome.fail_all(exit_bits::GENERAL, errors);
                false
            }
        }
    };

    remove_stores(dep, &mut outcome);

    if drained {
        metadata.backup_activity.finish_time = Some(Utc::now().activity());
    }
    // Last: the storage makes every tar durable before the metadata that makes them a backup.
    // An object store keeps no metadata of a backup that did not complete.
    if (drained || storage.marks_a_start())
        && let Err(e) = put_metadata(storage, &artifact, opts.codecs, &metadata)
    {
        outcome.fail(exit_bits::GENERAL, Failure::Storage(e));
        drained = false;
    }
    if drained && outcome.succeeded() {
        console.info(format!("Backup created in {shown}"));
    } else if drained {
        console.info(format!(
            "Backup created in {shown}, but the run had errors (see below)"
        ));
    } else {
        console.info(match storage.marks_a_start() {
            true => {
                format!("Backup failed; {shown} holds no finish_time and is not a usable backup")
            }
            false => format!("Backup failed; {shown} has no metadata and is not a usable backup"),
        });
    }
    (outcome, Some(artifact))
}
