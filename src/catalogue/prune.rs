//! What a prune keeps and removes, and the removing.
//!
//! Per deployment, only complete backups are weighed by the policy ([`super::policy`]); the
//! newest complete backup of a deployment is never removed, whatever the policy. An
//! incomplete backup that started more than a day ago is removed (a failed or killed run's
//! leftovers), and goes first, so an interrupted prune has cleared those before any complete
//! backup; a younger one may still be running and is left alone, as is one whose metadata
//! cannot be read (it may be a good backup this version cannot read).
//!
//! A backup goes metadata first, so a prune stopped halfway leaves an incomplete backup, never
//! one that looks complete and lacks a tar; then what interrupted writes left under it
//! (`abort_unfinished`: temporary files, in-progress multipart uploads), then its objects.

use super::policy::{self, Policy, Reason};
use super::{Backup, Catalogue, State};
use crate::contract::METADATA_FILE;
use crate::storage::{Storage, StorageError};

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
    /// Incomplete, and started more than a day ago.
    RemoveIncomplete,
    /// Incomplete and younger than a day: it may still be running.
    LeaveRunning,
    /// Its metadata cannot be read.
    LeaveUnreadable(String),
}

impl Decision {
    pub(crate) fn removes(&self) -> bool {
        matches!(self, Decision::Remove | Decision::RemoveIncomplete)
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
            State::Incomplete if now - b.started.to_unix() > RUNNING_AT_MOST_SECS => {
                decisions[i] = Some(Decision::RemoveIncomplete)
            }
            State::Incomplete => decisions[i] = Some(Decision::LeaveRunning),
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

/// Removes `backup` from `storage`: metadata first, then what interrupted writes left, then its
/// other objects. Returns the bytes removed.
pub(crate) fn remove(storage: &dyn Storage, backup: &Backup) -> Result<u64, StorageError> {
    let prefix = format!("{}/", backup.name);
    let metadata = format!("{prefix}{METADATA_FILE}");
    let mut removed = storage.size(&metadata)?.unwrap_or(0);
    storage.remove(&metadata)?;
    // Before the objects: the last object removed takes the directory along (locally), once
    // nothing else is in it.
    storage.abort_unfinished(&prefix)?;
    // Listed again, in rounds: the catalogue's listing was bounded, and is older. Each round
    // removes what it lists, so the rounds end; the bound holds against a store that does not.
    for _ in 0..REMOVE_ROUNDS_AT_MOST {
        let objects = storage.list(&prefix, super::LIST_AT_MOST)?;
        for object in &objects {
            storage.remove(&object.key)?;
            removed += object.size;
        }
        if objects.len() < super::LIST_AT_MOST {
            break;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timestamp::Utc;

    fn backup(name: &str, state: State) -> Backup {
        let parsed = super::super::name::parse(name).unwrap();
        Backup {
            name: name.to_string(),
            deployment: parsed.deployment,
            started: parsed.started,
            state,
            summary: None,
            size: 1,
            objects: 1,
        }
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
        let decisions: Vec<Decision> = plan(&catalogue, &Policy::default(), now)
            .into_iter()
            .map(|(_, d)| d)
            .collect();
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
}
