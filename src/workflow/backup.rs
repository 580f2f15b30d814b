//! The backup workflow, as BBR's flowchart draws it:
//! checks -> make the local artifact -> lock (ordered) -> backup (all) -> unlock (reversed,
//! always) -> drain the artifacts if the backup succeeded -> clean up the VMs.

use super::checks::backup_checks;
use super::deployment::Deployment;
use super::drain::drain;
use super::failure::Failure;
use super::finish::{remove_stores, report_html};
use super::outcome::Outcome;
use crate::artifact::backup_dir::{
    BackupActivity, BackupMetadata, custom_tar_file_name, tar_file_name,
};
use crate::artifact::codec::{self, Codecs};
use crate::artifact::metadata_keys;
use crate::console::Console;
use crate::contract::METADATA_FILE;
use crate::contract::{Side, exit_bits};
use crate::storage::{CLAIM, Storage, StorageError, claim};
use crate::timestamp::Utc;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

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

/// Marks the backup complete: its claim still held and every tar there, the metadata with its
/// finish time. Both are looked at again after the metadata, and the mark withdrawn if either
/// went meanwhile: a prune that took the run for a dead one (a claim whose heartbeat stopped)
/// and removed the claim and the tars between the first look and the write would leave a
/// complete backup without tars, the newest, which a later prune keeps over real ones.
fn complete(
    storage: &dyn Storage,
    claim_key: &str,
    artifact: &str,
    codecs: &Codecs,
    metadata: &mut BackupMetadata,
    new: bool,
) -> Result<(), StorageError> {
    let checked = still_whole(storage, claim_key, artifact, codecs, metadata);
    if checked.is_err() && !new {
        // A local backup's metadata, written at its start, says what the failed run drained.
        put_metadata(storage, artifact, codecs, metadata, new)?;
    }
    checked?;
    metadata.backup_activity.finish_time = Some(Utc::now().activity());
    put_metadata(storage, artifact, codecs, metadata, new)?;
    if let Err(e) = still_whole(storage, claim_key, artifact, codecs, metadata) {
        // Withdrawn: an object store's metadata is the mark itself; a local one goes back to
        // its start's, without the finish time.
        metadata.backup_activity.finish_time = None;
        let _ = match new {
            true => storage.remove(&format!("{artifact}/{METADATA_FILE}")),
            false => put_metadata(storage, artifact, codecs, metadata, false),
        };
        return Err(e);
    }
    Ok(())
}

/// This run's claim is still its own (one removed by someone who took the run for a dead
/// one: its tars may be gone too), and every tar the metadata names is there.
fn still_whole(
    storage: &dyn Storage,
    claim_key: &str,
    artifact: &str,
    codecs: &Codecs,
    metadata: &BackupMetadata,
) -> Result<(), StorageError> {
    claim::still_held(storage, claim_key)?;
    let gone = tars_gone(storage, artifact, codecs, metadata)?;
    match gone.first() {
        None => Ok(()),
        Some(first) => Err(StorageError::TarsGone {
            first: storage.describe(first),
            more: gone.len() - 1,
        }),
    }
}

/// Writes the metadata as it stands, whole or not at all, after everything before it. An
/// encrypted backup's checksums go first into their own encrypted object, and the metadata
/// lists the files without them (`codec::sealed`).
fn put_metadata(
    storage: &dyn Storage,
    dir: &str,
    codecs: &Codecs,
    metadata: &BackupMetadata,
    new: bool,
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
    match new {
        true => storage.put_new(&key, yaml.as_bytes()),
        false => storage.put(&key, yaml.as_bytes()),
    }
}

/// The tars `metadata` names that `storage` no longer holds under `artifact`, found with one
/// listing: right before the metadata that makes them a backup, a prune (or a hand) that took
/// the run for a dead one may have removed them, whatever its claim says now.
fn tars_gone(
    storage: &dyn Storage,
    artifact: &str,
    codecs: &Codecs,
    metadata: &BackupMetadata,
) -> Result<Vec<String>, StorageError> {
    let suffix = codecs.layers().suffix();
    let named = metadata.instances.iter().flat_map(|i| {
        i.artifacts
            .iter()
            .map(|a| tar_file_name(&i.name, &i.index, &a.name))
    });
    let custom = metadata
        .custom_artifacts
        .iter()
        .map(|a| custom_tar_file_name(&a.name));
    let expected: Vec<String> = named
        .chain(custom)
        .map(|file| format!("{artifact}/{file}{suffix}"))
        .collect();
    // Room for what else the directory holds (its metadata, claims, a report, partials).
    let listed = storage.list(&format!("{artifact}/"), 2 * expected.len() + 10_000)?;
    let held: std::collections::HashSet<&str> = listed.iter().map(|o| o.key.as_str()).collect();
    Ok(expected
        .into_iter()
        .filter(|key| !held.contains(key.as_str()))
        .collect())
}

/// Who runs this backup, as its claim records it: the deployment, where its instances come
/// from (the director, the inventory or the VM's root, as the cleanup command names them) and
/// every instance it drives, sorted. A later run with the same owner drives the same VMs.
fn owner(dep: &Deployment) -> String {
    let mut ids: Vec<String> = (0..dep.len()).map(|i| dep.id(i).to_string()).collect();
    ids.sort();
    format!(
        "bbr-agent backup\ndeployment: {:?}\nfrom: {:?}\ninstances: {:?}\n",
        dep.name,
        dep.cleanup_via.as_deref().unwrap_or(""),
        ids
    )
}

/// Whose run a backup directory was.
enum Whose {
    /// This run's owner: the run that left it is over, as its VMs' stores were free.
    Ours,
    /// No claim (an older bbr-agent's run).
    Nobody,
    /// Other owners', each with a heartbeat that stopped more than two hours ago: killed runs.
    Stopped,
    /// Another owner's, or more than one claim, beating or without a heartbeat: it may still
    /// be running.
    Other,
}

fn whose(storage: &dyn Storage, dir: &str, owner: &str, now: i64) -> Result<Whose, StorageError> {
    let claims = storage.list(&format!("{dir}/{CLAIM}"), claim::READ_AT_MOST + 1)?;
    if claims.is_empty() {
        return Ok(Whose::Nobody);
    }
    let mut stopped = claims.len() <= claim::READ_AT_MOST;
    for object in claims.iter().take(claim::READ_AT_MOST) {
        let bytes = match claim::read(storage, &object.key) {
            Ok(bytes) => bytes,
            // Removed since the listing: that run completed, and left nothing unfinished.
            Err(StorageError::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        let held = claim::parse(&bytes);
        if claims.len() == 1 && held.owner == owner.as_bytes() {
            return Ok(Whose::Ours);
        }
        // No heartbeat, or one dated to come: it may be running (prune judges it by its age).
        let dead = held
            .heartbeat
            .and_then(|t| claim::beat(t, object.modified, now))
            .is_some_and(|beat| !claim::alive(beat, now));
        stopped &= dead;
    }
    Ok(match stopped {
        true => Whose::Stopped,
        false => Whose::Other,
    })
}

/// What a run's cleanup of earlier runs did.
#[derive(Default)]
struct Cleaned {
    removed: usize,
    /// Unfinished writes left, and the first directory they are in.
    left: usize,
    left_in: Option<String>,
}

/// Removes what killed backups of this deployment left in its earlier directories
/// (`<deployment>_<timestamp>/`, exactly: not another deployment's whose name starts alike),
/// where that is provably a dead run's: the directory's claim names this run's owner, or its
/// claims' heartbeats stopped more than two hours ago, or it has no claim and the write started
/// more than a day ago. The rest is left.
fn abort_unfinished(
    storage: &dyn Storage,
    deployment: &str,
    owner: &str,
) -> Result<Cleaned, StorageError> {
    let prefix = format!("{deployment}_");
    let stamp = "YYYYMMDDTHHMMSSZ".len();
    // Found by what they left unfinished: a killed backup to an object store leaves nothing
    // else, not even a metadata.
    let mut dirs: BTreeMap<String, usize> = BTreeMap::new();
    for key in storage.unfinished(&prefix, LISTED_AT_MOST)? {
        let Some((dir, _)) = key.split_once('/') else {
            continue;
        };
        let ours = dir.strip_prefix(&prefix).is_some_and(|ts| {
            ts.len() == stamp
                && ts
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b == b'T' || b == b'Z')
        });
        if ours {
            *dirs.entry(dir.to_string()).or_default() += 1;
        }
    }
    let mut cleaned = Cleaned::default();
    let day_ago = SystemTime::now().checked_sub(UNCLAIMED_DEAD_AFTER);
    let now = Utc::now().to_unix();
    for (dir, count) in dirs {
        let within = format!("{dir}/");
        let removed = match (whose(storage, &dir, owner, now)?, day_ago) {
            (Whose::Ours | Whose::Stopped, _) => storage.abort_unfinished_before(&within, None)?,
            (Whose::Nobody, Some(day_ago)) => {
                storage.abort_unfinished_before(&within, Some(day_ago))?
            }
            (Whose::Nobody, None) | (Whose::Other, _) => 0,
        };
        cleaned.removed += removed;
        if removed < count {
            cleaned.left += count - removed;
            cleaned.left_in.get_or_insert(dir);
        }
    }
    Ok(cleaned)
}

/// An unfinished write in a directory no run claims is taken as dead after this long (prune
/// takes an incomplete backup as dead after a day too).
const UNCLAIMED_DEAD_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

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
    let owner = owner(dep);
    let claim_key = match storage.claim(&artifact, &owner) {
        Ok(key) => key,
        Err(e) => return (outcome.stop(Failure::Storage(e)), None),
    };
    // From now until the claim is removed (or the run ends), the claim is written again every
    // few minutes: a prune or another run's cleanup takes this run for a live one, however
    // long it takes.
    let warn = |w: String| console.warn(w);
    claim::with_heartbeat(
        storage,
        &claim_key,
        &owner,
        claim::HEARTBEAT_EVERY,
        &warn,
        |beating| {
            let claimed = Claimed {
                plan: &plan,
                artifact,
                claim_key: &claim_key,
                owner: &owner,
                started,
                beating,
            };
            run_claimed(dep, opts, console, outcome, claimed)
        },
    )
}

/// What a backup that has claimed its directory goes on with.
struct Claimed<'a> {
    plan: &'a super::checks::BackupPlan,
    artifact: String,
    claim_key: &'a str,
    owner: &'a str,
    started: Utc,
    beating: &'a claim::Beating,
}

/// The backup once its directory is claimed, with the claim's heartbeat going.
fn run_claimed(
    dep: &mut Deployment,
    opts: &BackupOptions,
    console: &Console,
    mut outcome: Outcome,
    claimed: Claimed,
) -> (Outcome, Option<String>) {
    let Claimed {
        plan,
        artifact,
        claim_key,
        owner,
        started,
        beating,
    } = claimed;
    let storage = opts.storage;
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
        && let Err(e) = put_metadata(storage, &artifact, opts.codecs, &metadata, false)
    {
        return (outcome.stop(Failure::Storage(e)), Some(artifact));
    }

    if let Err(errors) = dep.each_instance(|i| i.create_store()) {
        outcome.fail_all(exit_bits::GENERAL, errors);
        // Only stores this run made are removed: a leftover would have failed the checks.
        remove_stores(dep, &mut outcome);
        return (outcome, Some(artifact));
    }
    // No other backup of these VMs is running now: their stores are this run's (a leftover
    // one failed the checks), so a directory claimed by this same owner is a dead run's. Other
    // runs of this deployment's name (other VMs, another director) may be running: theirs is
    // left. Another deployment's directories are not looked at.
    match abort_unfinished(storage, &dep.name, owner) {
        Ok(cleaned) => {
            let files = |n: usize| if n == 1 { "file" } else { "files" };
            if cleaned.removed > 0 {
                console.info(format!(
                    "Removed {} unfinished {} that interrupted backups of {} left",
                    cleaned.removed,
                    files(cleaned.removed),
                    dep.name
                ));
            }
            if let Some(dir) = cleaned.left_in {
                console.info(format!(
                    "Left {} unfinished {} of other backups of {} (in {} and maybe others): another run may still be writing them",
                    cleaned.left,
                    files(cleaned.left),
                    dep.name,
                    storage.describe(&dir)
                ));
            }
        }
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

    // Last: the storage makes every tar durable before the metadata that makes them a backup.
    // An object store keeps no metadata of a backup that did not complete.
    // On an object store it is refused, not replaced, if another run wrote one.
    let new = !storage.marks_a_start();
    if drained {
        if let Err(e) = complete(
            storage,
            claim_key,
            &artifact,
            opts.codecs,
            &mut metadata,
            new,
        ) {
            outcome.fail(exit_bits::GENERAL, Failure::Storage(e));
            drained = false;
        }
    } else if storage.marks_a_start()
        && let Err(e) = put_metadata(storage, &artifact, opts.codecs, &metadata, new)
    {
        // A local backup's metadata, written at its start, says what the failed run drained.
        outcome.fail(exit_bits::GENERAL, Failure::Storage(e));
    }
    // A complete backup is BBR's layout, nothing extra; a failed run's claim stays, for the
    // next run's cleanup to know whose its unfinished writes are (its heartbeat ends with the
    // run, so it is taken for a dead run's two hours later).
    beating.stop();
    if drained && let Err(e) = storage.remove(claim_key) {
        console.warn(e.to_string());
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
            false => {
                format!("Backup failed; {shown} has no metadata and is not a usable backup")
            }
        });
    }
    (outcome, Some(artifact))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::backup_dir::{ArtifactChecksums, InstanceArtifacts};
    use crate::storage::LocalStorage;
    use crate::storage::hooked::{Call, Hooked};
    use std::io::Read;

    /// A prune between the run's last look and its mark leaves no complete backup without
    /// its tars: the run looks again after the mark, and withdraws it. An object store's
    /// metadata (written once, the mark itself) is removed; a local one goes back to one
    /// without a finish time. Without the second look, the newest backup would be a complete
    /// one with no tars, which a later `--keep-last 1` prune keeps over the real ones.
    #[test]
    fn a_mark_made_while_a_prune_removed_the_tars_is_withdrawn() {
        for new in [true, false] {
            let root = tempfile::tempdir().unwrap();
            let dir = "cf_20261201T000000Z";
            // As the metadata that marks the backup complete is written, a prune that took
            // the run for a dead one removes a tar and the run's claim.
            let storage = Hooked {
                inner: LocalStorage::new(root.path()),
                hook: |inner: &LocalStorage, call: Call<'_>| {
                    if let Call::Put { key, bytes } = call
                        && key.ends_with("/metadata")
                        && String::from_utf8_lossy(bytes).contains("finish_time")
                    {
                        let _ = inner.remove(&format!("{dir}/db-0-pg.tar"));
                        for claim in inner.list(&format!("{dir}/.bbr-agent-run-"), 10).unwrap() {
                            let _ = inner.remove(&claim.key);
                        }
                    }
                },
            };
            let claim = storage.claim(dir, "the run").unwrap();
            storage
                .put(&format!("{dir}/db-0-pg.tar"), b"a tar")
                .unwrap();
            // What else the directory holds (a report): the prune has not reached it yet.
            storage
                .put(&format!("{dir}/report.html"), b"a report")
                .unwrap();
            let mut metadata = BackupMetadata {
                instances: vec![InstanceArtifacts {
                    name: "db".into(),
                    index: "0".into(),
                    artifacts: vec![ArtifactChecksums {
                        name: "pg".into(),
                        checksums: Default::default(),
                    }],
                }],
                ..BackupMetadata::default()
            };
            let codecs = Codecs::default();
            let e = complete(&storage, &claim, dir, &codecs, &mut metadata, new)
                .expect_err("marked complete without its tar and its claim");
            assert!(
                e.to_string().contains("was removed while the backup ran"),
                "{e}"
            );
            let held = storage
                .inner
                .size(&format!("{dir}/{METADATA_FILE}"))
                .unwrap();
            match new {
                true => assert_eq!(held, None, "the object store's mark stayed"),
                false => {
                    let mut text = String::new();
                    storage
                        .open(&format!("{dir}/{METADATA_FILE}"))
                        .unwrap()
                        .read_to_string(&mut text)
                        .unwrap();
                    assert!(!text.contains("finish_time"), "still marked:\n{text}");
                }
            }
            assert!(metadata.backup_activity.finish_time.is_none());
        }
    }

    /// Right before the metadata, the tars it names are looked for in one listing: one that a
    /// prune removed since it was written is named, and one that is there is not.
    #[test]
    fn the_tars_a_prune_removed_before_the_metadata_are_named() {
        let root = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(root.path());
        let dir = "cf_20261201T000000Z";
        storage.create_dir(dir).unwrap();
        let artifact = |name: &str| ArtifactChecksums {
            name: name.to_string(),
            checksums: Default::default(),
        };
        let metadata = BackupMetadata {
            instances: vec![InstanceArtifacts {
                name: "db".into(),
                index: "0".into(),
                artifacts: vec![artifact("pg"), artifact("agent")],
            }],
            custom_artifacts: vec![artifact("blobs")],
            ..BackupMetadata::default()
        };
        for tar in ["db-0-pg.tar", "db-0-agent.tar", "blobs.tar"] {
            storage.put(&format!("{dir}/{tar}"), b"a tar").unwrap();
        }
        let codecs = Codecs::default();
        assert!(
            tars_gone(&storage, dir, &codecs, &metadata)
                .unwrap()
                .is_empty()
        );
        storage.remove(&format!("{dir}/db-0-agent.tar")).unwrap();
        storage.remove(&format!("{dir}/blobs.tar")).unwrap();
        assert_eq!(
            tars_gone(&storage, dir, &codecs, &metadata).unwrap(),
            [format!("{dir}/db-0-agent.tar"), format!("{dir}/blobs.tar")]
        );
        let e = StorageError::TarsGone {
            first: storage.describe(&format!("{dir}/db-0-agent.tar")),
            more: 1,
        };
        assert!(
            e.to_string().ends_with(
                "db-0-agent.tar and 1 more tars that this run wrote are gone before the backup was complete (a prune, or someone by hand, took the run for a dead one): the backup is not marked complete, so this is no backup; run it again"
            ),
            "{e}"
        );
    }
}
