//! The catalogue of the backups kept in one place (a local directory or an `s3://` prefix),
//! through the storage contract only: which backups there are, of which deployment, when,
//! whether each completed, how big, and how it was stored (`list`); which ones a retention
//! policy keeps and removing the others (`prune`).
//!
//! A backup is a `<deployment>_<timestamp>` directory (a key prefix) holding a `metadata` or a
//! tar. Everything else under the place is someone else's and is left alone. The place is
//! hostile input: names are checked, the listing and each metadata read are bounded, and a
//! metadata that cannot be read makes its backup "unreadable", which nothing removes.

pub(crate) mod name;
pub(crate) mod policy;
pub(crate) mod prune;
pub(crate) mod summary;

use std::collections::BTreeMap;

use crate::contract::METADATA_FILE;
use crate::storage::{CLAIM, ObjectInfo, Storage, StorageError, claim};
use crate::timestamp::Utc;
use summary::Summary;

/// Objects a listing looks at, at most: a place with more is listed in part, and not pruned.
pub(crate) const LIST_AT_MOST: usize = 100_000;

/// Whether a backup completed, as far as its metadata tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum State {
    /// Its metadata has a `finish_time`.
    Complete,
    /// No metadata yet, or one without `finish_time`: running, or failed, or killed.
    Incomplete,
    /// The metadata is there but cannot be read; why, in words.
    Unreadable(String),
}

/// One backup in the place.
#[derive(Debug, Clone)]
pub(crate) struct Backup {
    /// `<deployment>_<timestamp>`, its directory's name (a key prefix without the `/`).
    pub name: String,
    pub deployment: String,
    /// When it started, from its name.
    pub started: Utc,
    pub state: State,
    /// The metadata's summary, when it could be read.
    pub summary: Option<Summary>,
    /// Incomplete: what its claims say of its runs (`storage::claim`); the default (nothing)
    /// otherwise, or when it has no claim.
    pub beats: claim::Beats,
    /// The sum of its objects' sizes.
    pub size: u64,
    pub objects: usize,
}

/// What a listing of the place found.
#[derive(Debug, Default)]
pub(crate) struct Catalogue {
    /// Newest first; of one moment, by name.
    pub backups: Vec<Backup>,
    /// Top-level names that are not backups (other files and directories), left alone.
    pub others: usize,
    /// The place holds a `metadata` of its own: it is a backup, not a place of backups (a
    /// usual slip).
    pub is_a_backup: bool,
    /// The listing stopped at [`LIST_AT_MOST`] objects: there may be more backups, and the
    /// last one listed may be listed in part.
    pub truncated: bool,
}

/// Lists every backup in `storage`, reading each one's metadata summary, and the claims of
/// the incomplete ones for their runs' heartbeats.
pub(crate) fn scan(storage: &dyn Storage) -> Result<Catalogue, StorageError> {
    let objects = storage.list("", LIST_AT_MOST + 1)?;
    let truncated = objects.len() > LIST_AT_MOST;
    let now = crate::timestamp::Utc::now().to_unix();
    // Each top-level name with its objects (their names below it).
    let mut dirs: BTreeMap<&str, Vec<(&str, &ObjectInfo)>> = BTreeMap::new();
    for object in objects.iter().take(LIST_AT_MOST) {
        let (dir, rest) = object.key.split_once('/').unwrap_or((&object.key, ""));
        dirs.entry(dir).or_default().push((rest, object));
    }
    let mut catalogue = Catalogue {
        truncated,
        is_a_backup: dirs
            .get(METADATA_FILE)
            .is_some_and(|f| f.len() == 1 && f[0].0.is_empty()),
        ..Catalogue::default()
    };
    for (dir, files) in dirs {
        // A claim alone is a run that made nothing yet, or whose unfinished writes a cleanup
        // removed: an incomplete backup, judged by its run's heartbeat like any other.
        let is_backup_file = |f: &&(&str, &ObjectInfo)| {
            f.0 == METADATA_FILE || f.0.contains(".tar") || f.0.starts_with(CLAIM)
        };
        let parsed = name::parse(dir);
        let (Some(parsed), true) = (parsed, files.iter().any(|f| is_backup_file(&f))) else {
            catalogue.others += 1;
            continue;
        };
        let metadata = files.iter().find(|f| f.0 == METADATA_FILE);
        let (state, summary) = match metadata {
            None => (State::Incomplete, None),
            Some(&(_, object)) => match read_summary(storage, dir, object.size) {
                Ok(s) if s.complete() => (State::Complete, Some(s)),
                Ok(s) => (State::Incomplete, Some(s)),
                Err(why) => (State::Unreadable(why), None),
            },
        };
        let (state, beats) = match state {
            State::Incomplete => {
                let claims: Vec<ObjectInfo> = files
                    .iter()
                    .filter(|f| f.0.starts_with(CLAIM))
                    .map(|f| f.1.clone())
                    .collect();
                // A claim that cannot be read leaves the backup alone: its run may be alive.
                match claim::beats(storage, &claims, now) {
                    Ok(beats) => (State::Incomplete, beats),
                    Err(e) => (
                        State::Unreadable(format!("its run's claim: {e}")),
                        claim::Beats::default(),
                    ),
                }
            }
            state => (state, claim::Beats::default()),
        };
        catalogue.backups.push(Backup {
            name: dir.to_string(),
            deployment: parsed.deployment,
            started: parsed.started,
            state,
            summary,
            beats,
            size: files.iter().map(|f| f.1.size).sum(),
            objects: files.len(),
        });
    }
    catalogue
        .backups
        .sort_by(|a, b| (b.started.to_unix(), &a.name).cmp(&(a.started.to_unix(), &b.name)));
    Ok(catalogue)
}

/// The summary of `dir`'s metadata of `size` bytes, or why it cannot be read.
fn read_summary(storage: &dyn Storage, dir: &str, size: u64) -> Result<Summary, String> {
    if size > summary::READ_AT_MOST {
        // Not even opened.
        return summary::read(size, std::io::empty());
    }
    let input = storage
        .open(&format!("{dir}/{METADATA_FILE}"))
        .map_err(|e| e.to_string())?;
    summary::read(size, input)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::ObjectWriter;
    use std::io::Read;

    /// A place that holds more objects than a listing looks at: a tar in each of many backups.
    struct Crowded;

    impl Storage for Crowded {
        fn describe(&self, key: &str) -> String {
            key.to_string()
        }
        fn create_dir(&self, _: &str) -> Result<(), StorageError> {
            unimplemented!()
        }
        fn create(&self, _: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
            unimplemented!()
        }
        fn put(&self, _: &str, _: &[u8]) -> Result<(), StorageError> {
            unimplemented!()
        }
        fn open(&self, _: &str) -> Result<Box<dyn Read + Send>, StorageError> {
            unimplemented!()
        }
        fn size(&self, _: &str) -> Result<Option<u64>, StorageError> {
            unimplemented!()
        }
        fn list(&self, _: &str, limit: usize) -> Result<Vec<ObjectInfo>, StorageError> {
            // Asked for more than it may keep, it answers with as many as it is asked for.
            Ok((0..limit)
                .map(|i| ObjectInfo {
                    key: format!("cf_{}/a.tar", Utc::from_unix(i as i64).compact()),
                    size: 1,
                    modified: None,
                })
                .collect())
        }
        fn remove(&self, _: &str) -> Result<(), StorageError> {
            unimplemented!()
        }
        fn abort_unfinished_before(
            &self,
            _: &str,
            _: Option<std::time::SystemTime>,
        ) -> Result<usize, StorageError> {
            unimplemented!()
        }
        fn unfinished(&self, _: &str, _: usize) -> Result<Vec<String>, StorageError> {
            unimplemented!()
        }
        fn marks_a_start(&self) -> bool {
            true
        }
        fn remote(&self) -> bool {
            false
        }
    }

    #[test]
    fn a_listing_past_its_bound_is_cut_there_and_says_so() {
        let catalogue = scan(&Crowded).unwrap();
        assert!(catalogue.truncated);
        assert_eq!(catalogue.backups.len(), LIST_AT_MOST);
        assert_eq!(
            catalogue.backups[0].name,
            format!("cf_{}", Utc::from_unix(LIST_AT_MOST as i64 - 1).compact())
        );
        assert!(
            catalogue
                .backups
                .iter()
                .all(|b| b.state == State::Incomplete)
        );
    }
}
