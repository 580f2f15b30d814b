//! Where backups are kept on the operator's side: a local directory or an `s3://` prefix.
//!
//! Everything above this layer (the drain, the restore, the `backups` catalogue) names what it
//! keeps by a key relative to a [`Location`] (`<deployment>_<timestamp>/<file>`), and never
//! asks which kind of place that is. This layer owns how an object is written whole or not at
//! all (a local file synced then kept, a multipart upload completed), read back, listed and
//! removed, and how what an interrupted write left behind (a temporary file, an in-progress
//! multipart upload) is found and removed.
//!
//! The layout is BBR's artifact directory in both kinds of place, so a bucket synced to disk
//! is a BBR artifact and the reverse.

pub(crate) mod claim;
#[cfg(test)]
pub(crate) mod hooked;
pub(crate) mod local;
pub(crate) mod s3;

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::time::SystemTime;

pub(crate) use local::LocalStorage;

/// What a run's claim of its backup directory is named, after the directory: hidden, and
/// never a BBR artifact's name.
pub(crate) const CLAIM: &str = ".bbr-agent-run-";

/// A run's claim holds at most this much: its owner, a few names.
pub(crate) const CLAIM_MAX: u64 = 1 << 20;

/// A random id for one run: the process's randomly seeded hasher, its pid and the time, so two
/// runs on two VMs in the same second get two ids.
fn run_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.write_u128(nanos);
    let a = h.finish();
    h.write_u64(a);
    format!("{a:016x}{:016x}", h.finish())
}

/// A place that holds backups, as `--artifact-path` or `backups ... DEST` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    /// A directory on this machine.
    Local(PathBuf),
    /// `s3://BUCKET/PREFIX`: every key is under `PREFIX/` (no prefix: the bucket's root).
    S3 { bucket: String, prefix: String },
}

/// One object as a listing sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ObjectInfo {
    /// The key relative to the location, `/`-separated.
    pub key: String,
    pub size: u64,
    /// When the store last wrote it (a file's mtime, an object's `LastModified`), if known.
    pub modified: Option<SystemTime>,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The location itself is wrong (a bad URL, a missing parent directory, no credentials):
    /// the message says what to give instead.
    #[error("{0}")]
    Location(String),
    #[error("{what} already exists: {hint}")]
    Exists { what: String, hint: String },
    #[error("{what} does not exist")]
    NotFound { what: String },
    /// Reading or writing failed; `what` names the file or `s3://` URL.
    #[error("cannot {doing} {what}: {source}")]
    Io {
        doing: &'static str,
        what: String,
        source: io::Error,
    },
    /// The object store answered with an error.
    #[error("{what}: {message}")]
    Service { what: String, message: String },
    /// The run's own claim was removed while it ran (`claim::still_held`).
    #[error(
        "this run's claim {what} was removed while the backup ran (a prune, or someone by hand, took the run for a dead one, and may have removed its tars too): the backup is not marked complete, so this is no backup; run it again"
    )]
    ClaimGone { what: String },
    /// Tars the run wrote are gone right before its metadata would have made them a backup.
    #[error(
        "{first}{} that this run wrote {} gone before the backup was complete (a prune, or someone by hand, took the run for a dead one): the backup is not marked complete, so this is no backup; run it again",
        match .more { 0 => String::new(), n => format!(" and {n} more tars") },
        if *.more == 0 { "is" } else { "are" }
    )]
    TarsGone { first: String, more: usize },
}

/// What every kind of place can do. Keys are checked names (`plain_name`) joined by `/`; an
/// implementation still refuses a key with an empty, `.` or `..` part.
pub(crate) trait Storage: Send + Sync {
    /// How the operator is shown `key`: a path, or an `s3://` URL.
    fn describe(&self, key: &str) -> String;

    /// Starts the backup directory `name` (`<deployment>_<timestamp>`): locally a new
    /// directory, mode 0700, that must not exist yet; on S3 a check that nothing is stored
    /// under `name/` yet.
    fn create_dir(&self, name: &str) -> Result<(), StorageError>;

    /// Starts the backup directory `name` for this run alone: [`Storage::create_dir`], then a
    /// claim object `name/.bbr-agent-run-<random id>` holding `owner` (who runs the backup)
    /// and a first heartbeat ([`claim`]). Returns the claim's key, which the run removes once
    /// its backup is complete; a failed or killed run's claim stays, so the next run can tell
    /// whose unfinished writes these are, and, by its heartbeat, whether that run stopped.
    fn claim(&self, name: &str, owner: &str) -> Result<String, StorageError> {
        self.create_dir(name)?;
        let key = format!("{name}/{CLAIM}{}", run_id());
        self.put(
            &key,
            claim::text(owner, crate::timestamp::Utc::now()).as_bytes(),
        )?;
        Ok(key)
    }

    /// [`Storage::put`] of an object that must not be there yet (a completed backup's
    /// metadata on an object store): refused, not replaced, where the store can tell.
    fn put_new(&self, key: &str, bytes: &[u8]) -> Result<(), StorageError> {
        self.put(key, bytes)
    }

    /// A new object under `key`, written as a stream. It is seen under `key` only after
    /// [`ObjectWriter::finish`]; dropped or aborted, it leaves nothing that looks complete.
    fn create(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StorageError>;

    /// Writes a small object (the metadata) whole or not at all, after everything written
    /// before it in the same directory is durable.
    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StorageError>;

    /// Reads `key` from its start.
    fn open(&self, key: &str) -> Result<Box<dyn Read + Send>, StorageError>;

    /// The size of `key`, or `None` when there is no such object.
    fn size(&self, key: &str) -> Result<Option<u64>, StorageError>;

    /// The object `key` as a local file, where the storage is a directory, so that a check
    /// can read it by offset on two threads; `None` where objects are not files.
    fn open_file(&self, _key: &str) -> Option<Result<std::fs::File, StorageError>> {
        None
    }

    /// Every object whose key starts with `prefix`, in key order, at most `limit` of them.
    fn list(&self, prefix: &str, limit: usize) -> Result<Vec<ObjectInfo>, StorageError>;

    /// Removes `key`; removing what is not there is not an error.
    fn remove(&self, key: &str) -> Result<(), StorageError>;

    /// Removes the backup directory `name` once its objects are removed: a directory that
    /// still holds what the listing does not show (a sub-directory, a name that is not UTF-8)
    /// is an error naming it. On S3 a prefix is nothing of its own: there is nothing to do.
    fn remove_dir(&self, name: &str) -> Result<(), StorageError> {
        let _ = name;
        Ok(())
    }

    /// Removes what interrupted writes under `prefix` left (temporary files, in-progress
    /// multipart uploads); returns how many.
    fn abort_unfinished(&self, prefix: &str) -> Result<usize, StorageError> {
        self.abort_unfinished_before(prefix, None)
    }

    /// [`Storage::abort_unfinished`], of the writes started before `before` only (a local
    /// file's mtime, an upload's `Initiated`; one whose start is not known is left), or of
    /// every one with `None`.
    fn abort_unfinished_before(
        &self,
        prefix: &str,
        before: Option<SystemTime>,
    ) -> Result<usize, StorageError>;

    /// The keys that interrupted writes under `prefix` were writing, at most `limit`: what
    /// [`Storage::abort_unfinished`] would remove. A killed backup may have left nothing else.
    fn unfinished(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StorageError>;

    /// Whether a backup's start is marked by a `metadata` with its start time only, which the
    /// finish then replaces, as BBR does in a directory. An object store is not marked: there
    /// a `metadata` object is written only by a backup that completed, last, so a failed or
    /// killed one leaves none.
    fn marks_a_start(&self) -> bool;

    /// Whether every read crosses a network and is paid for (time, egress): a restore then
    /// reads the backup once, checking it on the VMs as it is copied, before anything is
    /// locked, rather than once to check it and again to copy it.
    fn remote(&self) -> bool;
}

/// An object being written. Bytes go in through `Write`; `finish` makes it durable and
/// visible under its key. Dropped without `finish` (a failed check, an error, an
/// interruption), it drops what was written: a local file removed, a multipart upload aborted.
pub(crate) trait ObjectWriter: Write + Send {
    /// Makes the object durable and visible; returns its length.
    fn finish(self: Box<Self>) -> Result<u64, StorageError>;

    /// Whether it is a file on a local disk, which a drain hands larger batches (an upload
    /// keeps within its own memory budget).
    fn is_local_file(&self) -> bool {
        false
    }
}

impl Location {
    /// The storage this location names, an `s3://` one with the default sizes and the
    /// AWS settings of the environment.
    pub(crate) fn open(&self) -> Result<Box<dyn Storage>, StorageError> {
        self.open_with(&s3::S3Options::default())
    }

    /// [`Location::open`], with `s3` for how an `s3://` one is set up (the CLI's flags).
    pub(crate) fn open_with(&self, s3: &s3::S3Options) -> Result<Box<dyn Storage>, StorageError> {
        match self {
            Location::Local(path) => Ok(Box::new(LocalStorage::new(path))),
            Location::S3 { bucket, prefix } => {
                Ok(Box::new(s3::S3Storage::open(bucket, prefix, s3)?))
            }
        }
    }

    /// `s3://BUCKET[/PREFIX]` or a local path; the argument is bytes, checked here.
    pub(crate) fn parse(arg: &OsStr) -> Result<Location, StorageError> {
        let Some(text) = arg.to_str() else {
            // Not taken for a local path named `s3:/...` by accident.
            if arg.as_encoded_bytes().starts_with(b"s3://") {
                return Err(StorageError::Location(format!(
                    "{}: an s3:// URL must be UTF-8",
                    arg.to_string_lossy()
                )));
            }
            return Ok(Location::Local(PathBuf::from(arg)));
        };
        let Some(rest) = text.strip_prefix("s3://") else {
            return Ok(Location::Local(PathBuf::from(arg)));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_end_matches('/');
        if prefix.starts_with('/') {
            return Err(StorageError::Location(format!(
                "{text}: the prefix must be `/`-separated names without empty, `.` or `..` parts"
            )));
        }
        if !valid_bucket(bucket) {
            return Err(StorageError::Location(format!(
                "{text}: `{bucket}` is not an S3 bucket name (3 to 63 lower-case letters, digits, `-` and `.`): give s3://BUCKET/PREFIX"
            )));
        }
        if prefix.split('/').any(|part| part == "." || part == "..")
            || prefix.contains("//")
            || prefix.chars().any(char::is_control)
        {
            return Err(StorageError::Location(format!(
                "{text}: the prefix must be `/`-separated names without empty, `.` or `..` parts"
            )));
        }
        Ok(Location::S3 {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }
}

/// S3's bucket naming rules, as far as they keep a URL unambiguous.
fn valid_bucket(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Location, StorageError> {
        Location::parse(OsStr::new(s))
    }

    #[test]
    fn s3_urls_give_bucket_and_prefix_and_paths_stay_paths() {
        assert_eq!(
            parse("s3://backups/cf/nightly/").unwrap(),
            Location::S3 {
                bucket: "backups".into(),
                prefix: "cf/nightly".into()
            }
        );
        assert_eq!(
            parse("s3://backups").unwrap(),
            Location::S3 {
                bucket: "backups".into(),
                prefix: String::new()
            }
        );
        assert_eq!(
            parse("./s3:/x").unwrap(),
            Location::Local(PathBuf::from("./s3:/x"))
        );
    }

    #[test]
    fn bad_buckets_and_prefixes_are_refused_naming_the_url() {
        for bad in [
            "s3://",
            "s3://ab",
            "s3://Upper",
            "s3://b_x/p",
            "s3://bucket/../x",
            "s3://bucket/a//b",
            "s3://bucket//x",
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.starts_with(bad), "{bad}: {e}");
        }
        use std::os::unix::ffi::OsStrExt;
        let not_utf8 = OsStr::from_bytes(b"s3://bucket/\xff");
        let e = Location::parse(not_utf8).unwrap_err().to_string();
        assert!(e.contains("must be UTF-8"), "{e}");
    }
}
