//! The backup workflow, as BBR's flowchart draws it:
//! checks -> make the local artifact -> lock (ordered) -> backup (all) -> unlock (reversed,
//! always) -> drain the artifacts if the backup succeeded -> clean up the VMs.

use std::path::PathBuf;

use super::checks::backup_checks;
use super::deployment::Deployment;
use super::drain::drain;
use super::failure::Failure;
use super::finish::{remove_stores, write_report};
use super::outcome::Outcome;
use crate::artifact::backup_dir::{BackupActivity, BackupDir, BackupMetadata};
use crate::console::Console;
use crate::contract::{Side, exit_bits};
use crate::timestamp::Utc;

#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// Where the `<deployment>_<timestamp>` directory is made.
    pub artifact_parent: PathBuf,
    /// Skip lock and unlock scripts (`--unsafe-lock-free`), as BBR's flag does.
    pub lock_free: bool,
}

/// Backs the deployment up. Returns the outcome and the artifact directory, if one was made;
/// the run report goes into it, whatever the outcome.
pub fn backup(
    dep: &mut Deployment,
    opts: &BackupOptions,
    console: &Console,
) -> (Outcome, Option<PathBuf>) {
    console.run("backup", &dep.name, None);
    let (mut outcome, artifact) = run_backup(dep, opts, console);
    outcome.name_next_step(dep.cleanup_via.as_deref(), "backup");
    if let Some(dir) = &artifact {
        write_report(
            &dir.join("report.html"),
            "backup",
            dep,
            &outcome,
            dir,
            console,
        );
    }
    console.run("backup", &dep.name, Some(outcome.exit_code()));
    (outcome, artifact)
}

fn run_backup(
    dep: &mut Deployment,
    opts: &BackupOptions,
    console: &Console,
) -> (Outcome, Option<PathBuf>) {
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

    let artifact = match BackupDir::create(&opts.artifact_parent, &dep.name, started) {
        Ok(dir) => dir,
        Err(e) => return (outcome.stop(Failure::Other(e.to_string())), None),
    };
    let mut metadata = BackupMetadata {
        backup_activity: BackupActivity {
            start_time: started.activity(),
            finish_time: None,
        },
        ..Default::default()
    };
    if let Err(e) = artifact.write_metadata(&metadata) {
        return (
            outcome.stop(Failure::Other(e.to_string())),
            Some(artifact.path),
        );
    }

    if let Err(errors) = dep.each_instance(|i| i.create_store()) {
        outcome.fail_all(exit_bits::GENERAL, errors);
        // Only stores this run made are removed: a leftover would have failed the checks.
        remove_stores(dep, &mut outcome);
        return (outcome, Some(artifact.path));
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
        match drain(dep, &plan.backup_jobs, &artifact, &mut metadata, console) {
            Ok(()) => true,
            Err(errors) => {
                outcome.fail_all(exit_bits::GENERAL, errors);
                false
            }
        }
    };

    // The artifact directory's entries reach the disk while the VMs remove their stores: the
    // two wait on different disks and neither needs the other.
    let synced = std::thread::scope(|s| {
        let sync = drained.then(|| s.spawn(|| artifact.sync()));
        remove_stores(dep, &mut outcome);
        sync.map(|t| t.join().expect("the sync thread does not panic"))
    });
    if let Some(Err(e)) = synced {
        outcome.fail(exit_bits::GENERAL, Failure::Other(e.to_string()));
        drained = false;
    }

    if drained {
        metadata.backup_activity.finish_time = Some(Utc::now().activity());
    }
    if let Err(e) = artifact.write_metadata(&metadata) {
        outcome.fail(exit_bits::GENERAL, Failure::Other(e.to_string()));
    }
    if drained && outcome.succeeded() {
        console.info(format!("Backup created in {}", artifact.path.display()));
    } else if drained {
        console.info(format!(
            "Backup created in {}, but the run had errors (see below)",
            artifact.path.display()
        ));
    } else {
        console.info(format!(
            "Backup failed; {} holds no finish_time and is not a usable backup",
            artifact.path.display()
        ));
    }
    (outcome, Some(artifact.path))
}
