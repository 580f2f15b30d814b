//! A backup kept in a [`Storage`]: its metadata read (bounded) and checked (complete, every
//! name a plain one, every tar there), each tar opened for reading, and the whole backup
//! validated (every tar read once, every checksum compared). The restore and `backups verify`
//! both work through this, whatever kind of place holds the backup.

use std::io::{self, BufReader, Read};
use std::path::PathBuf;
use std::sync::OnceLock;

use super::Checksums;
use super::backup_dir::{
    BackupDirError, BackupMetadata, LOOK_AT_MOST, custom_tar_file_name, tar_file_name,
};
use super::checksums::{Mismatch, compare};
use super::codec::{self, CHECKSUMS_OBJECT, Identities, Layers, sealed};
use super::metadata_keys;
use super::plain_name::{self, NAME_MAX, NotPlain};
use super::tar_reader::{self, check_tar};
use crate::console::Console;
use crate::contract::METADATA_FILE;
use crate::interrupt::Interruptible;
use crate::progress::{self, Counted};
use crate::storage::{Location, Storage, StorageError};

/// The largest metadata file read: about a million files' checksums. One larger is refused,
/// not read into memory.
pub const METADATA_MAX: u64 = 256 << 20;

/// The end of a metadata file looked at for `finish_time`, which BBR and bbr-agent write last.
const TAIL: usize = 4096;

/// Who found a stored backup's problem: what it did not do then is said in its words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// A restore: nothing was restored, nothing touched.
    Restore,
    /// `backups verify`, which restores and touches nothing whatever it finds.
    Verify,
}

impl Reader {
    /// What the reader did not do, as the end of a sentence (`; nothing was restored`).
    fn did_not(self, restore: &'static str, verify: &'static str) -> &'static str {
        match self {
            Reader::Restore => restore,
            Reader::Verify => verify,
        }
    }
}

/// What is wrong with a stored backup, found before anything is restored from it. Its
/// `Display` is the restore's words; [`StoredBackupError::in_words_of`] gives a verify's.
#[derive(Debug, thiserror::Error)]
pub enum StoredBackupError {
    /// The metadata cannot be read or parsed, or the place holds no backup.
    #[error(transparent)]
    Metadata(#[from] BackupDirError),
    /// The backup did not complete: its metadata has no finish_time.
    #[error("{}", self.in_words_of(Reader::Restore))]
    Incomplete { backup: String, start_time: String },
    /// A name in the metadata cannot name a tar in the backup.
    #[error("{}", self.in_words_of(Reader::Restore))]
    BadName {
        metadata: String,
        key: String,
        value: String,
        why: NotPlain,
    },
    /// A tar the metadata lists is not there.
    #[error("{}", self.in_words_of(Reader::Restore))]
    Missing { tar: String },
    /// The storage could not say whether a tar is there.
    #[error("{}", self.in_words_of(Reader::Restore))]
    Unreachable { source: StorageError },
    /// A plain backup was given an identity: it may not be the backup that was meant.
    #[error("{}", self.in_words_of(Reader::Restore))]
    NotEncrypted { backup: String, identity: PathBuf },
    /// An encrypted backup's checksums object is not there.
    #[error("{}", self.in_words_of(Reader::Restore))]
    SealedMissing { object: String },
    /// An object cannot be read from where it is kept.
    #[error(transparent)]
    Storage(StorageError),
    /// An object cannot be decrypted or decompressed (no identity, not a recipient, damaged).
    #[error(transparent)]
    Codec(#[from] codec::CodecError),
    /// A tar does not hold what its checksums say.
    #[error("{}", self.in_words_of(Reader::Restore))]
    Corrupted {
        owner: Box<TarOwner>,
        corruption: Box<Corruption>,
    },
}

impl StoredBackupError {
    /// The problem as `reader` says it: what it found, then what it did not do.
    pub fn in_words_of(&self, reader: Reader) -> String {
        let restored = reader.did_not("; nothing was restored", "");
        match self {
            StoredBackupError::Metadata(e) => e.to_string(),
            StoredBackupError::Incomplete { backup, start_time } => format!(
                "{backup} is not a complete backup: the backup started {} did not complete (it failed or was interrupted: its metadata has no finish_time), so it cannot be restored{}",
                started(start_time),
                reader.did_not("; nothing was touched", "")
            ),
            StoredBackupError::BadName {
                metadata,
                key,
                value,
                why,
            } => format!(
                "{metadata}: {key} {value:?} {why}, so it cannot name a tar in the backup; the metadata is damaged or was not written by BBR{}",
                reader.did_not("; nothing was read", "; no tar was read")
            ),
            StoredBackupError::Missing { tar } => {
                format!("the backup is incomplete: {tar} is missing (or is not a file){restored}")
            }
            StoredBackupError::Unreachable { source } => {
                format!("the backup is incomplete: {source}{restored}")
            }
            StoredBackupError::NotEncrypted { backup, identity } => format!(
                "{backup} is not encrypted, but --identity {} was given: was the backup replaced? {} it without --identity if it is the one you meant",
                identity.display(),
                reader.did_not("Restore", "Verify")
            ),
            StoredBackupError::SealedMissing { object } => format!(
                "the backup is incomplete: {object} (the encrypted checksums) is missing{restored}"
            ),
            StoredBackupError::Storage(e) => e.to_string(),
            StoredBackupError::Codec(e) => e.to_string(),
            StoredBackupError::Corrupted { owner, corruption } => {
                format!("{}: {}", owner.label(), corruption.in_words_of(reader))
            }
        }
    }
}

/// What is wrong with one tar of a stored backup.
#[derive(Debug, thiserror::Error)]
pub enum Corruption {
    #[error("{}", self.in_words_of(Reader::Restore))]
    Unreadable { tar: String, error: String },
    #[error("{}", self.in_words_of(Reader::Restore))]
    ChecksumMismatch { tar: String, mismatch: Mismatch },
}

impl Corruption {
    fn in_words_of(&self, reader: Reader) -> String {
        let restored = reader.did_not("; nothing was restored", "");
        match self {
            Corruption::Unreadable { tar, error } => {
                format!("the backup is corrupted: {tar}: {error}{restored}")
            }
            Corruption::ChecksumMismatch { tar, mismatch } => format!(
                "the backup is corrupted: {tar} does not match its checksums ({mismatch}){restored}"
            ),
        }
    }
}

/// The start time is the artifact's text: shown as is only when it is a short plain line.
fn started(start: &str) -> String {
    if start.is_empty() {
        "at an unrecorded time".to_string()
    } else if start.len() <= 64 && start.chars().all(|c| c == ' ' || c.is_ascii_graphic()) {
        format!("at {start}")
    } else {
        format!("at {start:.64?}")
    }
}

/// Whose a tar is: a job's of an instance, or a named (custom) artifact's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TarOwner {
    Job {
        group: String,
        index: String,
        job: String,
    },
    Named(String),
}

impl TarOwner {
    /// `group/index job`, or the named artifact's name.
    pub fn label(&self) -> String {
        match self {
            TarOwner::Job { group, index, job } => format!("{group}/{index} {job}"),
            TarOwner::Named(name) => name.clone(),
        }
    }
}

/// What a check of a backup's tars found good: how many tars, files and bytes, in how long.
pub struct Tally {
    tars: usize,
    files: usize,
    bytes: u64,
    started: std::time::Instant,
}

impl Tally {
    pub fn start() -> Tally {
        Tally {
            tars: 0,
            files: 0,
            bytes: 0,
            started: std::time::Instant::now(),
        }
    }

    pub fn add(&mut self, tar: &StoredTar, bytes: u64) {
        self.tars += 1;
        self.files += tar.checksums.len();
        self.bytes += bytes;
    }

    /// `2 tars, 3 files, 1.0 MiB, every checksum matches (12ms)`.
    pub fn line(&self) -> String {
        let count = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        format!(
            "{}, {}, {}, every checksum matches ({})",
            count(self.tars, "tar"),
            count(self.files, "file"),
            crate::console::human_bytes(self.bytes),
            crate::duration::format(self.started.elapsed())
        )
    }
}

/// One tar the metadata lists.
pub struct StoredTar<'m> {
    pub owner: TarOwner,
    /// Names it to the operator: `group/index job`, or a named artifact's name.
    pub label: String,
    /// Its key in the storage.
    pub key: String,
    pub checksums: &'m Checksums,
}

/// A backup: the directory `dir` of `storage` (`""`: the storage's root is the backup).
pub struct StoredBackup<'s> {
    storage: &'s dyn Storage,
    dir: String,
    /// How the backup is named to the operator (`--artifact-path` as given).
    shown: String,
    /// The local directory `--artifact-path` named, if it names one: its absence is said as
    /// such.
    local: Option<PathBuf>,
    /// `--identity`: what an encrypted backup is decrypted with.
    identities: Option<Identities>,
    /// The layers of the backup's tars and its recipients, as its metadata's record says;
    /// set when the metadata is read (plain until then).
    codecs: OnceLock<(Layers, Vec<String>)>,
}

impl<'s> StoredBackup<'s> {
    /// The identities an encrypted backup is decrypted with (`--identity FILE`).
    pub fn with_identities(mut self, identities: Option<Identities>) -> StoredBackup<'s> {
        self.identities = identities;
        self
    }

    /// Whether the backup's tars are compressed (known once the metadata was read).
    pub fn compressed(&self) -> bool {
        self.layers().zstd
    }

    fn layers(&self) -> Layers {
        self.codecs.get().map(|(l, _)| *l).unwrap_or_default()
    }

    /// The backup `dir` (`<deployment>_<timestamp>`) in `storage`.
    #[cfg(test)]
    pub fn new(storage: &'s dyn Storage, dir: &str) -> StoredBackup<'s> {
        StoredBackup {
            storage,
            dir: dir.trim_end_matches('/').to_string(),
            shown: storage.describe(dir),
            local: None,
            identities: None,
            codecs: OnceLock::new(),
        }
    }

    /// The backup `location` names itself, opened as `storage` (`--artifact-path` of a
    /// restore).
    pub fn at(storage: &'s dyn Storage, location: &Location) -> StoredBackup<'s> {
        let (shown, local) = match location {
            Location::Local(path) => (path.display().to_string(), Some(path.clone())),
            Location::S3 { bucket, prefix } => (format!("s3://{bucket}/{prefix}"), None),
        };
        StoredBackup {
            storage,
            dir: String::new(),
            shown,
            local,
            identities: None,
            codecs: OnceLock::new(),
        }
    }

    /// Whether the backup is read once only, as it is copied to the VMs (an object store:
    /// see [`Storage::remote`]).
    pub fn read_once(&self) -> bool {
        self.storage.remote()
    }

    /// The backup as the operator is shown it.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The key of `file` in the backup.
    pub fn key(&self, file: &str) -> String {
        match self.dir.as_str() {
            "" => file.to_string(),
            dir => format!("{dir}/{file}"),
        }
    }

    /// How `key` is shown to the operator.
    pub fn describe(&self, key: &str) -> String {
        self.storage.describe(key)
    }

    /// The size of `key`, if it is there.
    pub fn size(&self, key: &str) -> Result<Option<u64>, StorageError> {
        self.storage.size(key)
    }

    /// The metadata, parsed; at most [`METADATA_MAX`] bytes are read.
    pub fn read_metadata(&self) -> Result<BackupMetadata, BackupDirError> {
        let key = self.key(METADATA_FILE);
        let path = PathBuf::from(self.describe(&key));
        let read_err = |source| BackupDirError::Read {
            path: path.clone(),
            source,
        };
        let input = match self.storage.open(&key) {
            Ok(input) => input,
            Err(StorageError::NotFound { .. }) => return Err(self.not_a_backup()),
            Err(StorageError::Io { source, .. })
                if source.kind() == io::ErrorKind::NotADirectory =>
            {
                return Err(self.not_a_backup());
            }
            Err(e) => return Err(read_err(io::Error::other(e.to_string()))),
        };
        let text = read_bounded(input, METADATA_MAX)
            .map_err(read_err)?
            .ok_or_else(|| BackupDirError::Parse {
                path: path.clone(),
                detail: format!(
                    "it is larger than {} MiB, more than any backup's metadata",
                    METADATA_MAX >> 20
                ),
            })?;
        let text = String::from_utf8(text).map_err(|_| BackupDirError::Parse {
            path: path.clone(),
            detail: "it is not UTF-8 text".to_string(),
        })?;
        let mut metadata: BackupMetadata =
            serde_yaml::from_str(&text).map_err(|e| BackupDirError::Parse {
                path: path.clone(),
                detail: e.to_string(),
            })?;
        metadata_keys::read_keys(&mut metadata).map_err(|detail| BackupDirError::Parse {
            path: path.clone(),
            detail,
        })?;
        if let Some(record) = &metadata.bbr_agent {
            let layers = record.layers().map_err(|e| BackupDirError::Parse {
                path,
                detail: e.to_string(),
            })?;
            let _ = self.codecs.set((layers, record.recipients.clone()));
        }
        Ok(metadata)
    }

    /// An encrypted backup's checksums, decrypted from their own object into `metadata`
    /// (which lists the files without them); nothing to do for a backup that is not
    /// encrypted. Refused: no `--identity` or one that is none of the recipients (naming
    /// them), a damaged object, one that does not match the metadata, and `--identity` given
    /// for a backup that is not encrypted (one swapped for a plain one is not taken silently).
    pub fn unseal(&self, metadata: &mut BackupMetadata) -> Result<(), StoredBackupError> {
        if !self.layers().age {
            return match &self.identities {
                Some(ids) => Err(StoredBackupError::NotEncrypted {
                    backup: self.shown.clone(),
                    identity: ids.path.clone(),
                }),
                None => Ok(()),
            };
        }
        let key = self.key(CHECKSUMS_OBJECT);
        let shown = self.describe(&key);
        let input = self.storage.open(&key).map_err(|e| match e {
            StorageError::NotFound { .. } => StoredBackupError::SealedMissing {
                object: shown.clone(),
            },
            e => StoredBackupError::Storage(e),
        })?;
        *metadata = sealed::open(
            input,
            &shown,
            metadata,
            self.identities.as_ref(),
            METADATA_MAX,
        )?;
        Ok(())
    }

    /// The tar `key` for reading as the backup holds it: decrypted, and decompressed unless
    /// `vm_decompresses` (then the stream stays zstd, and the result says so).
    /// The tar `key` as a local file, when it is a plain tar in a directory: a driver can
    /// move it to a VM without copying it ([`crate::instance::Instance::receive_artifact_file`]).
    /// `None` otherwise, or when it cannot be opened ([`Self::open_tar`] then says why).
    pub fn plain_file(&self, key: &str) -> Option<std::fs::File> {
        let layers = self.layers();
        if layers.zstd || layers.age {
            return None;
        }
        self.storage.open_file(key)?.ok()
    }

    pub fn open_tar(
        &self,
        key: &str,
        vm_decompresses: bool,
    ) -> Result<(Box<dyn Read + Send>, bool), StoredBackupError> {
        let shown = self.describe(key);
        let input = self.storage.open(key).map_err(StoredBackupError::Storage)?;
        let layers = self.layers();
        let compressed = layers.zstd && vm_decompresses;
        let recipients = self.codecs.get().map(|(_, r)| r.as_slice()).unwrap_or(&[]);
        let input = codec::decoder(
            input,
            &shown,
            layers,
            self.identities.as_ref(),
            recipients,
            !compressed,
        )?;
        Ok((input, compressed))
    }

    /// Why the backup, which has no metadata, is not one, and what to give instead: it does
    /// not exist, is a file, or holds backups (the place a backup was made in, a usual slip).
    fn not_a_backup(&self) -> BackupDirError {
        let give = "give --artifact-path the backup's own directory, `<deployment>_<timestamp>`";
        let why = match self.local.as_deref().map(std::fs::metadata) {
            Some(Err(e)) if e.kind() == io::ErrorKind::NotFound => {
                format!("does not exist: {give}")
            }
            Some(Ok(m)) if !m.is_dir() => format!("is not a directory: {give}"),
            _ => self.held_backups(give),
        };
        BackupDirError::NotABackup {
            path: PathBuf::from(&self.shown),
            why,
        }
    }

    /// What the place the backup was looked for in holds, said as the backups it offers.
    fn held_backups(&self, give: &str) -> String {
        let base = self.key("");
        let listed = self
            .storage
            .list(&base, LOOK_AT_MOST * 10)
            .unwrap_or_default();
        let mut held: Vec<String> = listed
            .iter()
            .filter_map(|o| o.key.strip_prefix(&base))
            .filter_map(|k| k.strip_suffix(&format!("/{METADATA_FILE}")))
            .filter(|n| !n.contains('/') && !n.chars().any(char::is_control))
            .take(LOOK_AT_MOST)
            .map(str::to_string)
            .collect();
        held.dedup();
        // Only backups that completed can be restored: offer those, newest first by the
        // `_<timestamp>` BBR ends their names with (not by the deployment's name).
        let all = held.len();
        held.retain(|n| self.completed(&format!("{base}{n}/{METADATA_FILE}")));
        let stamp = |n: &String| n.rsplit_once('_').map(|(_, t)| t.to_string());
        held.sort_by_key(|n| std::cmp::Reverse((stamp(n), n.clone())));
        let incomplete = match all - held.len() {
            0 => String::new(),
            1 => "; 1 other did not complete and cannot be restored".to_string(),
            n => format!("; {n} others did not complete and cannot be restored"),
        };
        let shown = |n: &str| self.describe(&format!("{base}{n}"));
        match held.len() {
            0 if all > 0 => format!(
                "is not a backup, and the {all} it holds did not complete (their metadata has no finish_time): none can be restored"
            ),
            0 => format!(
                "holds no `metadata` file, so it is not a BBR backup (a backup's directory holds `metadata` and one tar per job): {give}"
            ),
            1 => format!(
                "is not a backup but holds one: give --artifact-path {}{incomplete}",
                shown(&held[0])
            ),
            n => {
                let latest: Vec<&str> = held.iter().take(3).map(String::as_str).collect();
                format!(
                    "is not a backup but holds {n} complete backups: give --artifact-path one of them, such as {} (the newest; also {}{}){incomplete}",
                    shown(latest[0]),
                    latest[1..].join(", "),
                    if n > 3 { ", ..." } else { "" }
                )
            }
        }
    }

    /// Whether the metadata at `key` ends with a `finish_time` (written last, by BBR and by
    /// us). It is read through, at most [`METADATA_MAX`] bytes, keeping only its end.
    fn completed(&self, key: &str) -> bool {
        // An object store holds a metadata only for a backup that completed: nothing to read.
        if !self.storage.marks_a_start() {
            return true;
        }
        let Ok(input) = self.storage.open(key) else {
            return false;
        };
        let mut input = input.take(METADATA_MAX);
        let (mut tail, mut buf) = (Vec::with_capacity(2 * TAIL), vec![0u8; 64 << 10]);
        loop {
            match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    tail.extend_from_slice(&buf[..n]);
                    if tail.len() > TAIL {
                        tail.drain(..tail.len() - TAIL);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        String::from_utf8_lossy(&tail)
            .lines()
            .any(|l| l.trim_start().starts_with("finish_time:"))
    }

    /// A backup without `finish_time` did not complete (it failed or was interrupted): it is
    /// refused whole, before anything else is read from its metadata, so the operator learns
    /// that first.
    pub fn check_complete(&self, metadata: &BackupMetadata) -> Result<(), StoredBackupError> {
        if metadata.backup_activity.finish_time.is_some() {
            return Ok(());
        }
        Err(StoredBackupError::Incomplete {
            backup: self.shown.clone(),
            start_time: metadata.backup_activity.start_time.clone(),
        })
    }

    /// Every instance and job name in the metadata must name a tar inside the backup: checked
    /// before any tar is opened, so a metadata file naming `../../x` reads nothing outside it.
    pub fn check_names(&self, metadata: &BackupMetadata) -> Result<(), StoredBackupError> {
        let refuse = |key: String, value: &str, why: NotPlain| StoredBackupError::BadName {
            metadata: self.describe(&self.key(METADATA_FILE)),
            key,
            value: value.to_string(),
            why,
        };
        for (i, instance) in metadata.instances.iter().enumerate() {
            plain_name::check(&instance.name, NAME_MAX)
                .map_err(|why| refuse(format!("instances[{i}].name"), &instance.name, why))?;
            plain_name::check(&instance.index, NAME_MAX)
                .map_err(|why| refuse(format!("instances[{i}].index"), &instance.index, why))?;
            for (j, artifact) in instance.artifacts.iter().enumerate() {
                let key = format!("instances[{i}].artifacts[{j}].name");
                plain_name::check(&artifact.name, NAME_MAX)
                    .and_then(|()| {
                        plain_name::check_tar_name(&instance.name, &instance.index, &artifact.name)
                    })
                    .map_err(|why| refuse(key, &artifact.name, why))?;
            }
        }
        for (i, artifact) in metadata.custom_artifacts.iter().enumerate() {
            plain_name::check_custom_tar_name(&artifact.name).map_err(|why| {
                refuse(format!("custom_artifacts[{i}].name"), &artifact.name, why)
            })?;
        }
        Ok(())
    }

    /// Every tar the metadata lists must be there (its names were checked by
    /// [`Self::check_names`]).
    pub fn check_present(&self, metadata: &BackupMetadata) -> Result<(), StoredBackupError> {
        for tar in self.tars(metadata) {
            match self.storage.size(&tar.key) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(StoredBackupError::Missing {
                        tar: self.describe(&tar.key),
                    });
                }
                Err(source) => return Err(StoredBackupError::Unreachable { source }),
            }
        }
        Ok(())
    }

    /// The key of the tar of `job` of instance `group/index` (`.tar`, or `.tar.zst`, ... as
    /// the metadata's record says).
    pub fn tar_key(&self, group: &str, index: &str, job: &str) -> String {
        let suffix = self.layers().suffix();
        self.key(&format!("{}{suffix}", tar_file_name(group, index, job)))
    }

    /// The key of the named artifact `name`'s tar.
    pub fn custom_tar_key(&self, name: &str) -> String {
        let suffix = self.layers().suffix();
        self.key(&format!("{}{suffix}", custom_tar_file_name(name)))
    }

    /// Every tar the metadata lists: the instances' first, then the named (custom) ones.
    pub fn tars<'m>(&self, metadata: &'m BackupMetadata) -> Vec<StoredTar<'m>> {
        let plain = metadata.instances.iter().flat_map(|instance| {
            instance.artifacts.iter().map(|artifact| StoredTar {
                owner: TarOwner::Job {
                    group: instance.name.clone(),
                    index: instance.index.clone(),
                    job: artifact.name.clone(),
                },
                label: format!("{}/{} {}", instance.name, instance.index, artifact.name),
                key: self.tar_key(&instance.name, &instance.index, &artifact.name),
                checksums: &artifact.checksums,
            })
        });
        let named = metadata.custom_artifacts.iter().map(|artifact| StoredTar {
            owner: TarOwner::Named(artifact.name.clone()),
            label: artifact.name.clone(),
            key: self.custom_tar_key(&artifact.name),
            checksums: &artifact.checksums,
        });
        plain.chain(named).collect()
    }

    /// Reads every tar of the backup and checks it against the metadata's checksums: the pass
    /// BBR makes before it runs anything on a VM. The names are checked first, whoever checked
    /// them before. Tars are checked side by side, one per core (at most
    /// [`CHECKS_AT_ONCE`]): a deployment's tars are independent, and a restore waits for all
    /// of them. What is wrong is said as a check one tar after another would say it: of the
    /// tars the metadata lists first.
    ///
    /// Returns the BLAKE3 of every file of every tar, by the tar's key, taken in the same read:
    /// what an agent that takes them checks the files it unpacks against.
    pub fn validate(
        &self,
        metadata: &BackupMetadata,
        console: &Console,
    ) -> Result<Blake3Sums, StoredBackupError> {
        let at_once = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, CHECKS_AT_ONCE);
        self.validate_on(metadata, console, at_once)
    }

    /// [`Self::validate`], checking `at_once` tars side by side.
    fn validate_on(
        &self,
        metadata: &BackupMetadata,
        console: &Console,
        at_once: usize,
    ) -> Result<Blake3Sums, StoredBackupError> {
        self.check_names(metadata)?;
        let tars = self.tars(metadata);
        let mut tally = Tally::start();
        let checked = in_order_until_failed(&tars, at_once, |tar, overtaken| {
            self.check_tar_until(tar, true, console, overtaken)
        });
        let mut blake3 = Blake3Sums::new();
        for (tar, checked) in tars.iter().zip(checked) {
            let (bytes, sums) = checked?;
            tally.add(tar, bytes);
            if let Some(sums) = sums {
                blake3.insert(tar.key.clone(), sums);
            }
        }
        console.info(format!("Checked the backup: {}", tally.line()));
        Ok(blake3)
    }

    /// Reads the tar `tar` whole (onto a progress bar) and checks it against its checksums;
    /// its size, or what is wrong with it: missing, unreachable, or corrupted.
    pub fn check_tar(&self, tar: &StoredTar, console: &Console) -> Result<u64, StoredBackupError> {
        self.check_tar_until(tar, false, console, &Overtaken::never())
            .map(|(size, _)| size)
    }

    /// [`Self::check_tar`], taking its files' BLAKE3 too when `blake3` says, whose reading
    /// stops once `overtaken` says an earlier tar failed.
    fn check_tar_until(
        &self,
        tar: &StoredTar,
        blake3: bool,
        console: &Console,
        overtaken: &Overtaken,
    ) -> Result<(u64, Option<Checksums>), StoredBackupError> {
        let size = match self.storage.size(&tar.key) {
            Ok(Some(size)) => size,
            Ok(None) => {
                return Err(StoredBackupError::Missing {
                    tar: self.describe(&tar.key),
                });
            }
            Err(source) => return Err(StoredBackupError::Unreachable { source }),
        };
        let bar = progress::transfer_bar(console, format!("{} check", tar.label), Some(size));
        match self.checked(&tar.key, tar.checksums, blake3, bar, overtaken) {
            Ok(sums) => Ok((size, sums)),
            Err(corruption) => Err(StoredBackupError::Corrupted {
                owner: Box::new(tar.owner.clone()),
                corruption: Box::new(corruption),
            }),
        }
    }

    /// What is wrong with the tar `key`, if anything: read whole (onto `bar`, if any) and
    /// checked against the backup's checksums.
    pub fn corruption(
        &self,
        key: &str,
        checksums: &Checksums,
        bar: Option<indicatif::ProgressBar>,
    ) -> Option<Corruption> {
        self.checked(key, checksums, false, bar, &Overtaken::never())
            .err()
    }

    /// [`Self::corruption`] as a result: with `blake3`, the BLAKE3 of the files that matched.
    /// It is read only until `overtaken` says so.
    fn checked(
        &self,
        key: &str,
        checksums: &Checksums,
        blake3: bool,
        bar: Option<indicatif::ProgressBar>,
        overtaken: &Overtaken,
    ) -> Result<Option<Checksums>, Corruption> {
        let shown = self.describe(key);
        // A plain tar in a directory is read by offset too, on two threads (`split_check`).
        if let Some(file) = self.plain_file(key) {
            let counted = |n: u64| {
                if let Some(bar) = &bar {
                    bar.inc(n);
                }
            };
            let found = tar_reader::check_tar_file(&file, blake3, &counted, &|| overtaken.is());
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            return match found {
                Err(e) => Err(Corruption::Unreadable {
                    tar: shown,
                    error: e.to_string(),
                }),
                Ok(found) => matched(checksums, found, shown),
            };
        }
        let found = match self.storage.open(key) {
            Err(StorageError::Io { source, .. }) => Err(source.to_string()),
            Err(e) => Err(e.to_string()),
            Ok(input) => {
                // Counted as stored (the bar's total is the object's size), then decoded.
                let input = Interruptible(BufReader::with_capacity(1 << 20, input));
                let input = Stopping {
                    inner: input,
                    overtaken: overtaken.clone(),
                };
                let counted = Counted::new(input, bar.clone());
                let recipients = self.codecs.get().map(|(_, r)| r.as_slice()).unwrap_or(&[]);
                let read = codec::decoder(
                    Box::new(counted),
                    &shown,
                    self.layers(),
                    self.identities.as_ref(),
                    recipients,
                    true,
                )
                .map_err(|e| e.to_string())
                .and_then(|mut input| {
                    let sums = check_tar(&mut input, blake3).map_err(|e| e.to_string())?;
                    // Read to its end: every encrypted chunk is checked, the last one too,
                    // even where the tar's end needs no more of it.
                    io::copy(&mut input, &mut io::sink())
                        .map_err(|e| format!("cannot read the artifact stream: {e}"))?;
                    Ok(sums)
                });
                if let Some(bar) = &bar {
                    bar.finish_and_clear();
                }
                read
            }
        };
        match found {
            Err(error) => Err(Corruption::Unreadable { tar: shown, error }),
            Ok(found) => matched(checksums, found, shown),
        }
    }
}

/// The BLAKE3 of every file of a checked backup, by its tar's key.
pub type Blake3Sums = std::collections::BTreeMap<String, Checksums>;

/// The check of the tar `shown`: `found` against the backup's `checksums`.
fn matched(
    checksums: &Checksums,
    found: tar_reader::Checked,
    shown: String,
) -> Result<Option<Checksums>, Corruption> {
    match compare(checksums, &found.sha256) {
        None => Ok(found.blake3),
        Some(mismatch) => Err(Corruption::ChecksumMismatch {
            tar: shown,
            mismatch,
        }),
    }
}

/// Tars a restore's check reads at once, at most.
const CHECKS_AT_ONCE: usize = 4;

/// Says, while a tar is checked side by side with others, that a tar earlier in order failed
/// its check: this one's result will not be told, and its reading stops at its next read.
#[derive(Clone)]
struct Overtaken {
    /// The position of the first failure yet (`usize::MAX` for none), and this tar's.
    failed_at: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    position: usize,
}

impl Overtaken {
    /// For a check alone: never overtaken.
    fn never() -> Overtaken {
        Overtaken {
            failed_at: std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(usize::MAX)),
            position: 0,
        }
    }

    fn is(&self) -> bool {
        self.failed_at.load(std::sync::atomic::Ordering::SeqCst) < self.position
    }
}

/// A stored tar's bytes, until its check is overtaken.
struct Stopping<R> {
    inner: R,
    overtaken: Overtaken,
}

impl<R: Read> Read for Stopping<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.overtaken.is() {
            return Err(tar_reader::stopped());
        }
        self.inner.read(buf)
    }
}

/// `check` of each of `items`, on up to `at_once` threads, each taking the next unchecked item
/// in order. Once one fails, no later item is started, and those in flight are told they are
/// overtaken (they may stop); earlier ones still run to their end: one of them may fail too,
/// and the first failure in order is the one to tell. Returns the results in order, up to and
/// including the first failure.
fn in_order_until_failed<T: Sync, R: Send, E: Send>(
    items: &[T],
    at_once: usize,
    check: impl Fn(&T, &Overtaken) -> Result<R, E> + Sync,
) -> Vec<Result<R, E>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let next = AtomicUsize::new(0);
    // The position of the first failure yet, or `usize::MAX`.
    let failed_at = Arc::new(AtomicUsize::new(usize::MAX));
    let results: Mutex<Vec<Option<Result<R, E>>>> =
        Mutex::new((0..items.len()).map(|_| None).collect());
    let work = || {
        loop {
            let i = next.fetch_add(1, Ordering::SeqCst);
            if i >= items.len() || i > failed_at.load(Ordering::SeqCst) {
                return;
            }
            let overtaken = Overtaken {
                failed_at: Arc::clone(&failed_at),
                position: i,
            };
            let result = check(&items[i], &overtaken);
            // An overtaken item's failure comes after the first: it changes nothing.
            if result.is_err() {
                failed_at.fetch_min(i, Ordering::SeqCst);
            }
            results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(result);
        }
    };
    std::thread::scope(|scope| {
        // The calling thread is one of them; a thread the OS refuses is one fewer.
        for _ in 1..at_once.min(items.len()) {
            let _ = std::thread::Builder::new().spawn_scoped(scope, work);
        }
        work();
    });
    let end = failed_at.load(Ordering::SeqCst);
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .take(end.saturating_add(1))
        .map(|r| r.expect("every item up to the first failure was checked"))
        .collect()
}

/// All of `input` if it holds at most `max` bytes; `None` if it holds more.
fn read_bounded(input: impl Read, max: u64) -> io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::new();
    input.take(max + 1).read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= max).then_some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::backup_dir::{ArtifactChecksums, InstanceArtifacts};
    use crate::artifact::checksums::hex;
    use crate::storage::LocalStorage;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Checked side by side, the results come back in order, up to and including the first
    /// failure in order, even when a later item fails first.
    #[test]
    fn side_by_side_checks_report_the_first_failure_in_order() {
        let items: Vec<u64> = (0..20).collect();
        let started = std::sync::Mutex::new(Vec::new());
        let results = in_order_until_failed(&items, 4, |&i, _| {
            started.lock().unwrap().push(i);
            // Item 5 fails late, item 6 early.
            std::thread::sleep(std::time::Duration::from_millis(if i == 5 {
                300
            } else {
                5
            }));
            match i {
                5 | 6 => Err(i),
                _ => Ok(i * 10),
            }
        });
        let got: Vec<Result<u64, u64>> = results;
        assert_eq!(got, [Ok(0), Ok(10), Ok(20), Ok(30), Ok(40), Err(5)]);
        // Nothing far past the first failure was started: at most the items in flight.
        let started = started.into_inner().unwrap();
        assert!(started.iter().all(|&i| i < 5 + 4 + 1), "{started:?}");
        // One at a time, the same.
        let one = in_order_until_failed(&items, 1, |&i, _| if i == 3 { Err(i) } else { Ok(i) });
        assert_eq!(one, [Ok(0), Ok(1), Ok(2), Err(3)]);
        let none: Vec<Result<u64, u64>> = in_order_until_failed(&items, 3, |&i, _| Ok(i));
        assert_eq!(none.len(), 20);
    }

    /// A check in flight is told once an earlier item failed, and only then: never when a
    /// later one did (the earlier one's result is still to tell).
    #[test]
    fn only_the_checks_after_a_failure_are_overtaken() {
        use std::sync::mpsc;
        // Item 0 fails once item 1 runs; item 1 reads until it is overtaken.
        let (running, wait_running) = mpsc::channel::<()>();
        let wait_running = std::sync::Mutex::new(wait_running);
        let running = std::sync::Mutex::new(running);
        let reads = std::sync::atomic::AtomicU64::new(0);
        let results = in_order_until_failed(&[0u64, 1], 2, |&i, overtaken| match i {
            0 => {
                let _ = wait_running.lock().unwrap().recv();
                Err(0)
            }
            _ => {
                let _ = running.lock().unwrap().send(());
                // Bounded: without the word, a few million reads, then an end.
                while !overtaken.is() && reads.load(Ordering::SeqCst) < 1 << 22 {
                    reads.fetch_add(1, Ordering::SeqCst);
                    std::thread::yield_now();
                }
                Ok(overtaken.is())
            }
        });
        assert_eq!(results, [Err(0)]);
        assert!(reads.into_inner() < 1 << 22, "item 1 was never overtaken");

        // Item 1 fails while item 0 runs: item 0 is not overtaken, and its failure is told.
        let (failed, wait_failed) = mpsc::channel::<()>();
        let wait_failed = std::sync::Mutex::new(wait_failed);
        let failed = std::sync::Mutex::new(failed);
        let results = in_order_until_failed(&[0u64, 1], 2, |&i, overtaken| match i {
            0 => {
                let _ = wait_failed.lock().unwrap().recv();
                // Once item 1's failure is in.
                let mut steps = 0u64;
                while overtaken.failed_at.load(Ordering::SeqCst) == usize::MAX && steps < 1 << 22 {
                    steps += 1;
                    std::thread::yield_now();
                }
                match overtaken.is() {
                    true => Ok(0),
                    false => Err(0),
                }
            }
            _ => {
                let _ = failed.lock().unwrap().send(());
                Err(1)
            }
        });
        assert_eq!(results, [Err(0)]);
    }

    /// Where objects are not files (an S3 bucket): the big tar's bytes counted as read, and
    /// the others read only once it is being read (so that it is in flight beside them).
    struct Counting {
        inner: LocalStorage,
        read: std::sync::Arc<AtomicU64>,
    }

    struct CountedRead {
        inner: Box<dyn Read + Send>,
        read: std::sync::Arc<AtomicU64>,
        big: bool,
    }

    impl Read for CountedRead {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            // Bounded: a check that never reads the big tar does not hold this one for ever.
            let mut steps = 0u64;
            while !self.big && self.read.load(Ordering::SeqCst) == 0 && steps < 1 << 22 {
                steps += 1;
                std::thread::yield_now();
            }
            let n = self.inner.read(buf)?;
            if self.big {
                self.read.fetch_add(n as u64, Ordering::SeqCst);
            }
            Ok(n)
        }
    }

    impl Storage for Counting {
        fn describe(&self, key: &str) -> String {
            self.inner.describe(key)
        }
        fn create_dir(&self, name: &str) -> Result<(), StorageError> {
            self.inner.create_dir(name)
        }
        fn create(&self, key: &str) -> Result<Box<dyn crate::storage::ObjectWriter>, StorageError> {
            self.inner.create(key)
        }
        fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StorageError> {
            self.inner.put(key, bytes)
        }
        fn open(&self, key: &str) -> Result<Box<dyn Read + Send>, StorageError> {
            Ok(Box::new(CountedRead {
                inner: self.inner.open(key)?,
                read: self.read.clone(),
                big: key.ends_with("-big.tar"),
            }))
        }
        fn size(&self, key: &str) -> Result<Option<u64>, StorageError> {
            self.inner.size(key)
        }
        fn list(
            &self,
            prefix: &str,
            limit: usize,
        ) -> Result<Vec<crate::storage::ObjectInfo>, StorageError> {
            self.inner.list(prefix, limit)
        }
        fn remove(&self, key: &str) -> Result<(), StorageError> {
            self.inner.remove(key)
        }
        fn abort_unfinished_before(
            &self,
            prefix: &str,
            before: Option<std::time::SystemTime>,
        ) -> Result<usize, StorageError> {
            self.inner.abort_unfinished_before(prefix, before)
        }
        fn unfinished(&self, prefix: &str, limit: usize) -> Result<Vec<String>, StorageError> {
            self.inner.unfinished(prefix, limit)
        }
        fn marks_a_start(&self) -> bool {
            false
        }
        fn remote(&self) -> bool {
            true
        }
    }

    /// A tar of one file of `len` zeros (sparse on disk), and its checksums.
    fn zeros_tar(path: &std::path::Path, len: u64) -> Checksums {
        let mut header = tar::Header::new_gnu();
        header.set_size(len);
        header.set_mode(0o644);
        header.set_path("./zeros").unwrap();
        header.set_cksum();
        let mut file = std::fs::File::create(path).unwrap();
        io::Write::write_all(&mut file, header.as_bytes()).unwrap();
        file.set_len(512 + len.div_ceil(512) * 512 + 1024).unwrap();
        let mut sha = <sha2::Sha256 as sha2::Digest>::new();
        let zeros = vec![0u8; 1 << 20];
        let mut left = len;
        while left > 0 {
            let n = left.min(zeros.len() as u64);
            sha2::Digest::update(&mut sha, &zeros[..n as usize]);
            left -= n;
        }
        let mut sums = Checksums::new();
        sums.insert("./zeros".into(), hex(&sha2::Digest::finalize(sha)));
        sums
    }

    /// A restore's check of a bucket's backup whose small first tar is corrupted names it
    /// without reading the big tar after it to its end (it was in flight beside it).
    #[test]
    fn a_failed_check_stops_the_check_of_a_later_tar_in_flight() {
        let root = tempfile::tempdir().unwrap();
        let dir = "cf_20260101T000000Z";
        std::fs::create_dir(root.path().join(dir)).unwrap();
        let big: u64 = 256 << 20;
        let mut small_sums = zeros_tar(&root.path().join(dir).join("a-0-small.tar"), 10_000);
        small_sums.insert("./zeros".into(), "0".repeat(64));
        let big_sums = zeros_tar(&root.path().join(dir).join("b-0-big.tar"), big);
        let artifacts =
            |name: &str, index: &str, job: &str, checksums: &Checksums| InstanceArtifacts {
                name: name.into(),
                index: index.into(),
                artifacts: vec![ArtifactChecksums {
                    name: job.into(),
                    checksums: checksums.clone(),
                }],
            };
        let metadata = BackupMetadata {
            instances: vec![
                artifacts("a", "0", "small", &small_sums),
                artifacts("b", "0", "big", &big_sums),
            ],
            ..BackupMetadata::default()
        };
        let read = std::sync::Arc::new(AtomicU64::new(0));
        let storage = Counting {
            inner: LocalStorage::new(root.path()),
            read: read.clone(),
        };
        let backup = StoredBackup::new(&storage, dir);
        let console = Console::new(false, crate::console::Format::Json);
        // Side by side, whatever the cores here.
        let e = backup
            .validate_on(&metadata, &console, 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a-0-small.tar"), "{e}");
        let read = read.load(Ordering::SeqCst);
        assert!(
            read > 0,
            "the big tar was never read: the test shows nothing"
        );
        assert!(read < big / 4, "{read} bytes read: the big tar was read on");
    }

    #[test]
    fn a_metadata_file_larger_than_the_bound_is_refused_unread() {
        assert_eq!(read_bounded(&b"abc"[..], 3).unwrap(), Some(b"abc".to_vec()));
        assert_eq!(read_bounded(&b"abcd"[..], 3).unwrap(), None);
    }

    /// A changed byte in an encrypted tar's last chunk is found even when that chunk holds
    /// only the padding after the tar's end, which a tar reader never needs to read.
    #[test]
    fn a_flipped_byte_in_the_padding_after_an_encrypted_tars_end_is_found() {
        use std::io::Write;
        let root = tempfile::tempdir().unwrap();
        let (path, public) = codec::age::tests::identity_file(root.path(), "key");
        let mut builder = tar::Builder::new(Vec::new());
        let data = vec![7u8; 64_000];
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, "./f", &data[..]).unwrap();
        let mut tar = builder.into_inner().unwrap();
        // To a whole 10240-byte record, as GNU tar (and ours) pads it: past age's 64 KiB.
        tar.resize(7 * 10240, 0);
        let sums = tar_reader::read_tar(&tar[..], None).unwrap();
        let mut recipients = codec::Recipients::default();
        recipients.add(&public).unwrap();
        let mut sealed = recipients.encryptor(Vec::new()).unwrap();
        sealed.write_all(&tar).unwrap();
        let mut sealed = sealed.finish().unwrap();
        let storage = LocalStorage::new(root.path());
        storage.create_dir("cf_20260101T000000Z").unwrap();
        let backup = StoredBackup::new(&storage, "cf_20260101T000000Z")
            .with_identities(Some(Identities::read(&path).unwrap()));
        let layers = Layers {
            zstd: false,
            age: true,
        };
        let _ = backup.codecs.set((layers, vec![public]));
        let key = backup.key("a-0-j.tar.age");
        storage.put(&key, &sealed).unwrap();
        assert!(backup.corruption(&key, &sums, None).is_none());
        let last = sealed.len() - 30;
        sealed[last] ^= 1;
        let key = backup.key("b-0-j.tar.age");
        storage.put(&key, &sealed).unwrap();
        let why = backup
            .corruption(&key, &sums, None)
            .expect("the flipped byte is found")
            .to_string();
        assert!(why.contains("altered or damaged"), "{why}");
    }

    #[test]
    fn a_folder_of_backups_offers_the_complete_one_through_the_storage() {
        let root = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(root.path());
        storage.create_dir("cf_20260101T000000Z").unwrap();
        storage
            .put(
                "cf_20260101T000000Z/metadata",
                b"backup_activity:\n  start_time: x\n  finish_time: y\n",
            )
            .unwrap();
        storage.create_dir("cf_20260102T000000Z").unwrap();
        storage
            .put(
                "cf_20260102T000000Z/metadata",
                b"backup_activity:\n  start_time: x\n",
            )
            .unwrap();
        let location = Location::Local(root.path().to_path_buf());
        let backup = StoredBackup::at(&storage, &location);
        let e = backup.read_metadata().unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "is not a backup but holds one: give --artifact-path {}; 1 other did not complete",
                root.path().join("cf_20260101T000000Z").display()
            )),
            "{e}"
        );
    }
}
