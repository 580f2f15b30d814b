//! What a prune keeps and removes, and the removing.
//!
//! Per deployment, only complete backups are weighed by the policy ([`super::policy`]); the
//! newest complete backup of a deployment is never removed, whatever the policy. An
//! incomplete backup whose run has a heartbeat (`storage::claim`) is judged by it: left while
//! the heartbeat is fresh, however long ago the run started, and removed once it has stopped
//! for two hours (a killed run). One without (no claim, or a claim written before heartbeats,
//! or beside one) is judged by its age: removed once it started more than a day ago, left
//! before, unless a heartbeat is fresh. So a run is taken for stopped only when every claim
//! read has a heartbeat that stopped, as the next run's cleanup takes it; a directory with
//! more claims than are read is left whatever they say. The
//! incomplete ones go first, so an interrupted prune has cleared those before any complete
//! backup; one whose metadata cannot be read is left alone (it may be a good backup this
//! version cannot read).
//!
//! A backup goes metadata first, so a prune stopped halfway leaves an incomplete backup, never
//! one that looks complete and lacks a tar; then what interrupted writes left under it
//! (`abort_unfinished`: temporary files, in-progress multipart uploads), then its objects.

use super::policy::{self, Policy, Reason};
use super::{Backup, Catalogue, State};
use crate::contract::METADATA_FILE;
use crate::storage::{CLAIM, Storage, StorageError, claim};

/// An incomplete backup younger than this may still be running.
pub(crate) const RUNNING_AT_MOST_SECS: i64 = 24 * 3600;

/// Listings of one backup's objects a removal makes, at most.
const REMOVE_ROUNDS_AT_MOST: usize = 1000;

/// What a prune does with one backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Complete, and kept by these rules.
    Keep(Vec<Reason>),
    /// Complete, the newest of its deployment, and kept by no rule: kept all the same.
    KeepNewest,
    /// Complete, and kept by no rule.
    Remove,
    /// Incomplete, without a heartbeat, and started more than a day ago.
    RemoveIncomplete,
    /// Incomplete, and its run's last heartbeat (this Unix time) is more than two hours old: the
    /// run was killed.
    RemoveStopped { beat: i64 },
    /// Incomplete, without a heartbeat, and younger than a day: it may still be running.
    LeaveRunning,
    /// Incomplete, and its run's last heartbeat (this Unix time) is fresh: it is running.
    LeaveBeating { beat: i64 },
    /// Incomplete, with more claims than are read: one not read may be beating.
    LeaveCrowded,
    /// Its metadata cannot be read.
    LeaveUnreadable(String),
}

impl Decision {
    pub(crate) fn removes(&self) -> bool {
        self.removes_incomplete() || *self == Decision::Remove
    }

    /// Removes an incomplete backup (they go before the complete ones).
    pub(crate) fn removes_incomplete(&self) -> bool {
        matches!(
            self,
            Decision::RemoveIncomplete | Decision::RemoveStopped { .. }
        )
    }
}

/// Each backup of `catalogue` (in its order) with what `policy` does with it, `now` being the
/// Unix time the prune runs at.
pub(crate) fn plan<'a>(
    catalogue: &'a Catalogue,
    policy: &Policy,
    now: i64,
) -> Vec<(&'a Backup, Decision)> {
    let mut decisions: Vec<Option<Decision>> = vec![None; catalogue.backups.len()];
    // The complete backups of each deployment, newest first (the catalogue's order).
    let mut by_deployment: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
    for (i, b) in catalogue.backups.iter().enumerate() {
        match &b.state {
            State::Complete => by_deployment.entry(&b.deployment).or_default().push(i),
            State::Incomplete => decisions[i] = Some(incomplete(b, now)),
            State::Unreadable(why) => decisions[i] = Some(Decision::LeaveUnreadable(why.clone())),
        }
    }
    for indices in by_deployment.values() {
        let times: Vec<_> = indices
            .iter()
            .map(|&i| catalogue.backups[i].started)
            .collect();
        let kept = policy::apply(policy, &times);
        for (n, (&i, reasons)) in indices.iter().zip(kept).enumerate() {
            decisions[i] = Some(match reasons.is_empty() {
                false => Decision::Keep(reasons),
                // The newest is kept by any policy that keeps something; this holds it even
                // if a rule changed.
                true if n == 0 => Decision::KeepNewest,
                true => Decision::Remove,
            });
        }
    }
    catalogue
        .backups
        .iter()
        .zip(decisions)
        .map(|(b, d)| (b, d.unwrap_or(Decision::LeaveRunning)))
        .collect()
}

/// What a prune does with the incomplete `backup` at `now`.
fn incomplete(backup: &Backup, now: i64) -> Decision {
    judge(backup, &backup.beats, now)
}

/// What a prune does with the incomplete `backup` whose claims say `beats` at `now`.
fn judge(backup: &Backup, beats: &claim::Beats, now: i64) -> Decision {
    let old = now - backup.started.to_unix() > RUNNING_AT_MOST_SECS;
    match beats.newest {
        _ if beats.unread => Decision::LeaveCrowded,
        Some(beat) if claim::alive(beat, now) => Decision::LeaveBeating { beat },
        // A run without a heartbeat beside them: judged by the backup's age.
        _ if beats.unbeating && old => Decision::RemoveIncomplete,
        _ if beats.unbeating => Decision::LeaveRunning,
        Some(beat) => Decision::RemoveStopped { beat },
        None if old => Decision::RemoveIncomplete,
        None => Decision::LeaveRunning,
    }
}

/// Why the incomplete `backup`, planned for removal, is kept after all when looked at again
/// just before (a moment after the listing), or `None` to remove it: its claims no longer say
/// its run is over, or its metadata became complete (or unreadable). The claims are looked at
/// first: a run writes its metadata and then removes its claim, so a run that completes
/// between the two looks shows one or the other. (Looked at the other way round, its
/// metadata still incomplete and then its claim gone, a backup that had just completed was
/// removed.)
pub(crate) fn kept_after_all(
    storage: &dyn Storage,
    backup: &Backup,
    now: i64,
) -> Result<Option<&'static str>, StorageError> {
    let claims = storage.list(&format!("{}/{CLAIM}", backup.name), claim::READ_AT_MOST + 1)?;
    let beats = claim::beats(storage, &claims, now)?;
    let judged = match judge(backup, &beats, now) {
        d if d.removes_incomplete() => None,
        Decision::LeaveBeating { .. } => Some("its run's heartbeat is fresh now"),
        _ => Some("its claims no longer say its run is over"),
    };
    if judged.is_some() {
        return Ok(judged);
    }
    Ok(match still_incomplete(storage, backup)? {
        true => None,
        false => Some("it has a complete or unreadable metadata now"),
    })
}

/// Whether the incomplete `backup` is still incomplete now, a moment after the listing: a run
/// that took more than a day may have written its metadata since. (It narrows the window, as
/// far as a store without locks allows.)
pub(crate) fn still_incomplete(
    storage: &dyn Storage,
    backup: &Backup,
) -> Result<bool, StorageError> {
    let metadata = format!("{}/{METADATA_FILE}", backup.name);
    let Some(size) = storage.size(&metadata)? else {
        return Ok(true);
    };
    let summary = match size > super::summary::READ_AT_MOST {
        true => return Ok(false),
        false => super::summary::read(size, storage.open(&metadata)?),
    };
    Ok(summary.is_ok_and(|s| !s.complete()))
}

/// Keys left by a removal that are named in its error, at most.
const LEFT_NAMED_AT_MOST: usize = 10;

/// A removal that could not remove all of a backup.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RemoveError {
    /// Its metadata could not be removed: nothing else was touched.
    #[error(transparent)]
    Metadata(StorageError),
    /// The metadata went, and what could be removed; these are left.
    #[error("{}", left_line(.removed, .bytes, .left, .more))]
    Left {
        /// Objects removed, and their bytes.
        removed: usize,
        bytes: u64,
        /// The first keys (or listings) left, each with why, at most [`LEFT_NAMED_AT_MOST`].
        left: Vec<(String, StorageError)>,
        /// How many more are left beyond those.
        more: usize,
    },
}

fn left_line(
    removed: &usize,
    bytes: &u64,
    left: &[(String, StorageError)],
    more: &usize,
) -> String {
    let named: Vec<String> = left
        .iter()
        .map(|(key, why)| format!("{} ({why})", crate::printable::printable(key, 300)))
        .collect();
    format!(
        "its metadata (if any) and {removed} other object{} ({bytes} bytes) are removed, but {} {} left: {}{}; remove {} by hand",
        if *removed == 1 { "" } else { "s" },
        left.len() + more,
        if left.len() + more == 1 { "is" } else { "are" },
        named.join(", "),
        match more {
            0 => String::new(),
            n => format!(" and {n} more"),
        },
        if left.len() + more == 1 { "it" } else { "them" },
    )
}

/// Removes `backup` from `storage`: metadata first, then what interrupted writes left, then its
/// other objects, going on past one that cannot be removed (an odd key the store refuses, a
/// failed request), so the removal finishes or says exactly what is left. Returns the bytes
/// removed.
pub(crate) fn remove(storage: &dyn Storage, backup: &Backup) -> Result<u64, RemoveError> {
    let prefix = format!("{}/", backup.name);
    let metadata = format!("{prefix}{METADATA_FILE}");
    let mut bytes = storage
        .size(&metadata)
        .map_err(RemoveError::Metadata)?
        .unwrap_or(0);
    storage.remove(&metadata).map_err(RemoveError::Metadata)?;
    let mut left: Vec<(String, StorageError)> = Vec::new();
    // Before the objects: the last object removed takes the directory along (locally), once
    // nothing else is in it.
    if let Err(e) = storage.abort_unfinished(&prefix) {
        left.push((format!("{prefix} (its unfinished writes)"), e));
    }
    // Listed again, in rounds: the catalogue's listing was bounded, and is older. Each round
    // removes what it lists but what failed before; a round that lists only those ends it, and
    // the bound holds against a store that never does. A round that removed anything is
    // followed by another, even after a short listing: a run taken for a dead one may have
    // written its metadata since, which alone would be a complete backup without its tars.
    let mut failed: std::collections::BTreeSet<String> = Default::default();
    let mut removed = 0;
    for _ in 0..REMOVE_ROUNDS_AT_MOST {
        let objects = match storage.list(&prefix, super::LIST_AT_MOST) {
            Ok(objects) => objects,
            Err(e) => {
                left.push((format!("{prefix} (its listing)"), e));
                break;
            }
        };
        let mut progressed = false;
        for object in &objects {
            if failed.contains(&object.key) {
                continue;
            }
            match storage.remove(&object.key) {
                Ok(()) => {
                    removed += 1;
                    bytes += object.size;
                    progressed = true;
                }
                Err(e) => {
                    failed.insert(object.key.clone());
                    left.push((object.key.clone(), e));
                }
            }
        }
        if !progressed {
            break;
        }
    }
    if left.is_empty() {
        // What the listing cannot show (a sub-directory, a name that is not UTF-8) keeps a
        // local directory: said, not passed over as removed.
        match storage.remove_dir(&backup.name) {
            Ok(()) => return Ok(bytes),
            Err(e) => left.push((prefix.clone(), e)),
        }
    }
    let more = left.len().saturating_sub(LEFT_NAMED_AT_MOST);
    left.truncate(LEFT_NAMED_AT_MOST);
    Err(RemoveError::Left {
        removed,
        bytes,
        left,
        more,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timestamp::Utc;

    /// A backup named three days ago whose run (more than a day long, its claim without a
    /// heartbeat) completes between the prune's listing and its last look: it writes its
    /// metadata, then removes its claim, as a run does, while the last look reads the claims.
    /// The prune keeps it.
    #[test]
    fn a_backup_that_completes_during_the_last_look_is_kept() {
        use crate::storage::LocalStorage;
        use crate::storage::hooked::{Call, Hooked};
        let now = Utc::now().to_unix();
        let started = Utc::from_unix(now - 3 * 86_400);
        let name = format!("cf_{}", started.compact());
        let root = tempfile::tempdir().unwrap();
        let completed = std::sync::atomic::AtomicBool::new(false);
        let storage = Hooked {
            inner: LocalStorage::new(root.path()),
            hook: |inner: &LocalStorage, call: Call<'_>| {
                if let Call::List { prefix } = call
                    && prefix.ends_with("/.bbr-agent-run-")
                    && !completed.swap(true, std::sync::atomic::Ordering::SeqCst)
                {
                    let metadata = "backup_activity:\n  start_time: 2026/11/28 00:00:00 UTC\n  finish_time: 2026/11/28 01:00:00 UTC\ninstances: []\n";
                    inner
                        .put(&format!("{name}/metadata"), metadata.as_bytes())
                        .unwrap();
                    for claim in inner.list(prefix, 10).unwrap() {
                        inner.remove(&claim.key).unwrap();
                    }
                }
            },
        };
        storage.inner.create_dir(&name).unwrap();
        storage
            .inner
            .put(&format!("{name}/.bbr-agent-run-1"), b"cf\nthe run\n")
            .unwrap();
        storage
            .inner
            .put(&format!("{name}/db-0-pg.tar"), b"a tar")
            .unwrap();
        let planned = Backup {
            beats: claim::Beats {
                unbeating: true,
                ..claim::Beats::default()
            },
            ..backup(&name, State::Incomplete)
        };
        assert!(
            incomplete(&planned, now).removes_incomplete(),
            "not planned for removal"
        );
        let kept = kept_after_all(&storage, &planned, now).unwrap();
        assert_eq!(kept, Some("it has a complete or unreadable metadata now"));
    }

    /// A run taken for a dead one writes the metadata that marks its backup complete while
    /// the prune removes the backup, after the prune's listing: the prune lists again, and
    /// removes it too, so no complete backup without its tars is left.
    #[test]
    fn a_metadata_written_during_a_removal_is_removed_too() {
        use crate::storage::LocalStorage;
        use crate::storage::hooked::{Call, Hooked};
        let name = "cf_20261128T000000Z".to_string();
        let root = tempfile::tempdir().unwrap();
        let storage = Hooked {
            inner: LocalStorage::new(root.path()),
            hook: |inner: &LocalStorage, call: Call<'_>| {
                if let Call::Remove { key } = call
                    && key.ends_with("/db-0-pg.tar")
                {
                    let metadata = "backup_activity:\n  finish_time: 2026/11/28 01:00:00 UTC\n";
                    inner
                        .put(&format!("{name}/metadata"), metadata.as_bytes())
                        .unwrap();
                }
            },
        };
        storage.inner.create_dir(&name).unwrap();
        for object in ["db-0-pg.tar", "db-0-pg2.tar", "report.html"] {
            storage
                .inner
                .put(&format!("{name}/{object}"), b"bytes")
                .unwrap();
        }
        remove(&storage, &backup(&name, State::Incomplete)).unwrap();
        assert!(
            !root.path().join(&name).exists(),
            "left: {:?}",
            std::fs::read_dir(root.path().join(&name))
                .map(|d| d.map(|e| e.unwrap().file_name()).collect::<Vec<_>>())
        );
    }

    fn backup(name: &str, state: State) -> Backup {
        let parsed = super::super::name::parse(name).unwrap();
        Backup {
            name: name.to_string(),
            deployment: parsed.deployment,
            started: parsed.started,
            state,
            summary: None,
            beats: claim::Beats::default(),
            size: 1,
            objects: 1,
        }
    }

    /// What a prune with no policy decides for each backup of `catalogue` at `now`.
    fn decisions(catalogue: &Catalogue, now: i64) -> Vec<Decision> {
        plan(catalogue, &Policy::default(), now)
            .into_iter()
            .map(|(_, d)| d)
            .collect()
    }

    #[test]
    fn the_newest_complete_backup_stays_even_under_a_policy_that_keeps_none() {
        // The command refuses an empty policy; the plan holds the newest all the same.
        let catalogue = Catalogue {
            backups: vec![
                backup("cf_20261127T000000Z", State::Incomplete),
                backup("cf_20261126T000000Z", State::Complete),
                backup("cf_20261125T000000Z", State::Complete),
            ],
            ..Catalogue::default()
        };
        let now = Utc::parse_compact("20261127T010000Z").unwrap().to_unix();
        let decisions = decisions(&catalogue, now);
        assert_eq!(
            decisions,
            [
                Decision::LeaveRunning,
                Decision::KeepNewest,
                Decision::Remove
            ]
        );
        // A day later it is more than a day old, and goes.
        let later = now + RUNNING_AT_MOST_SECS;
        assert_eq!(
            plan(&catalogue, &Policy::default(), later)[0].1,
            Decision::RemoveIncomplete
        );
    }

    #[test]
    fn an_incomplete_backup_that_completed_since_the_listing_is_not_removed() {
        let root = tempfile::tempdir().unwrap();
        let storage = crate::storage::LocalStorage::new(root.path());
        let b = backup("cf_20261120T000000Z", State::Incomplete);
        storage.create_dir(&b.name).unwrap();
        storage.put(&format!("{}/a.tar", b.name), b"t").unwrap();
        assert!(still_incomplete(&storage, &b).unwrap());
        let key = format!("{}/{METADATA_FILE}", b.name);
        storage
            .put(&key, b"backup_activity:\n  start_time: s\n")
            .unwrap();
        assert!(still_incomplete(&storage, &b).unwrap());
        std::fs::remove_file(root.path().join(&key)).unwrap();
        storage
            .put(
                &key,
                b"backup_activity:\n  start_time: s\n  finish_time: f\n",
            )
            .unwrap();
        assert!(!still_incomplete(&storage, &b).unwrap());
    }

    #[test]
    fn an_incomplete_backup_with_a_heartbeat_is_judged_by_it_whatever_its_start() {
        let now = Utc::parse_compact("20261201T120000Z").unwrap().to_unix();
        let with_beat = |name: &str, beat: Option<i64>| Backup {
            beats: claim::Beats {
                newest: beat,
                ..claim::Beats::default()
            },
            ..backup(name, State::Incomplete)
        };
        let catalogue = Catalogue {
            backups: vec![
                // Young, but its heartbeat stopped more than two hours ago: killed.
                with_beat("cf_20261201T100000Z", Some(now - claim::ALIVE_WITHIN_SECS)),
                // Young, beating.
                with_beat("cf_20261201T090000Z", Some(now - 60)),
                // Young, no heartbeat (stop 12's claim): as before.
                with_beat("cf_20261201T080000Z", None),
                // Three days old, beating: a long backup still going.
                with_beat("cf_20261128T120000Z", Some(now - 600)),
                // Three days old, no heartbeat: as before.
                with_beat("cf_20261128T110000Z", None),
            ],
            ..Catalogue::default()
        };
        let decisions = decisions(&catalogue, now);
        assert_eq!(
            decisions,
            [
                Decision::RemoveStopped {
                    beat: now - claim::ALIVE_WITHIN_SECS
                },
                Decision::LeaveBeating { beat: now - 60 },
                Decision::LeaveRunning,
                Decision::LeaveBeating { beat: now - 600 },
                Decision::RemoveIncomplete,
            ]
        );
    }
}
