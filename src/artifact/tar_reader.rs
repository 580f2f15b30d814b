//! Reads a job's artifact tar: every entry is checked before it is trusted, every regular
//! file hashed, and, when extracting, written below the destination and nowhere else.
//!
//! Refused: names with `..` or an absolute path, links leading outside the job's directory,
//! hard links to anything but an earlier file, entries below a symlink, names that appear
//! twice, and devices, fifos and other special files. Symlinks are made last, after every
//! file, so nothing is ever written through one.
//!
//! A check (nothing extracted) hashes the files' data one of three ways: as it reads them
//! ([`check_tar`]), on threads beside, each file read by its offset ([`check_tar_file`],
//! `split_check`), or where the data lies in a stream's chunks ([`check_tar_chunks`],
//! `skip_hash`). The headers are judged the same way in all three.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use tar::EntryType;

use super::checksums::{Checksums, shown, shown_key};
use super::digest::{DigestKind, FileDigests, Manifests};
use super::entry_path::{EntryPath, check_entry, check_symlink_target, resolve_inside};
use super::hasher::Hasher;
use super::skip_hash::{self, Announced, HashingSkips};
use super::tar_header::{
    PATH_MAX, PAX_MAX, decode_time, pax_time, read_record, system_time, until_nul,
};
use super::tar_writer::read_retrying;
use crate::chunk_stream::{ChunkSource, ChunkStream};

#[derive(Debug, thiserror::Error)]
pub enum TarReadError {
    #[error("entry '{entry}' is refused: {why}")]
    Refused { entry: String, why: String },
    #[error("cannot read the artifact stream: {0}")]
    Read(io::Error),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// The manifests a check of a tar gives: the SHA-256 of every regular file, and, when asked
/// for, the BLAKE3 of the same bytes, taken in the same read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Checked {
    pub sha256: Checksums,
    pub blake3: Option<Checksums>,
}

impl From<Manifests> for Checked {
    /// A check's manifests: their main kind is SHA-256.
    fn from(sums: Manifests) -> Checked {
        Checked {
            sha256: sums.main,
            blake3: sums.blake3,
        }
    }
}

/// Reads the tar in `input`; with `extract_to`, writes it below that (existing) directory.
/// Returns the manifest of its regular files.
#[cfg(test)]
pub fn read_tar(input: impl Read, extract_to: Option<&Path>) -> Result<Checksums, TarReadError> {
    read_tar_as(input, extract_to, DigestKind::Sha256)
}

/// As [`read_tar`], the manifest holding digests of `kind`.
pub fn read_tar_as(
    input: impl Read,
    extract_to: Option<&Path>,
    kind: DigestKind,
) -> Result<Checksums, TarReadError> {
    let mut archive = tar::Archive::new(input);
    let entries = archive.entries().map_err(TarReadError::Read)?;
    let reader = Reader::new(extract_to, None, kind, false).read(entries)?;
    Ok(reader.finish()?.main)
}

/// Checks the tar in `input` without extracting it; with `blake3`, takes every file's BLAKE3
/// too, in the same read.
pub fn check_tar(input: impl Read, blake3: bool) -> Result<Checked, TarReadError> {
    let mut archive = tar::Archive::new(input);
    let entries = archive.entries().map_err(TarReadError::Read)?;
    let sums = Reader::new(None, None, DigestKind::Sha256, blake3)
        .read(entries)?
        .finish()?;
    Ok(Checked::from(sums))
}

/// Checks the tar in the chunks of `input` as [`check_tar`] does, each file's data hashed
/// where it lies in the chunks, not copied out of them first: the parsing reads every header
/// and skips past the data, and the skip hashes it (`skip_hash`). (That copy was about a tenth
/// of a drain's checking thread, the drain's longest: docs/benchmarks.md, "Drain, stop 19".)
pub fn check_tar_chunks<S: ChunkSource>(
    input: &mut ChunkStream<S>,
    blake3: bool,
) -> Result<Checked, TarReadError> {
    check_chunks_as(input, DigestKind::Sha256, blake3).map(Checked::from)
}

/// As [`check_tar_chunks`], with BLAKE3 the only digest: the half of a drain's check that a
/// thread beside takes (`verify_stream`), while another takes the SHA-256 of the same chunks.
/// Every header is judged here too, so either half alone refuses what the other refuses.
pub fn check_tar_chunks_blake3<S: ChunkSource>(
    input: &mut ChunkStream<S>,
) -> Result<Checksums, TarReadError> {
    check_chunks_as(input, DigestKind::Blake3, false).map(|sums| sums.main)
}

fn check_chunks_as<S: ChunkSource>(
    input: &mut ChunkStream<S>,
    kind: DigestKind,
    blake3: bool,
) -> Result<Manifests, TarReadError> {
    let in_place = skip_hash::announced(kind, blake3);
    let mut archive = tar::Archive::new(HashingSkips::new(input, Rc::clone(&in_place)));
    let entries = archive.entries_with_seek().map_err(TarReadError::Read)?;
    let side = Side::InPlace(Rc::clone(&in_place));
    let mut reader = Reader::new(None, Some(side), kind, blake3).read(entries)?;
    let hashed = in_place.borrow_mut().take_sums();
    reader.sums.extend(hashed);
    reader.finish()
}

/// Checks the tar file `file` as [`check_tar`] does: this thread parses and judges every
/// header and seeks past the data, which threads beside hash, each file read there by its
/// offset (`split_check`): one file's SHA-256 is one chain, but two files' are two. `read` is
/// told the bytes read, as they are; once `stop` says so, nothing more is read (a check beside
/// failed first), and the result is an error.
pub fn check_tar_file(
    file: &fs::File,
    blake3: bool,
    read: &(dyn Fn(u64) + Sync),
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<Checked, TarReadError> {
    let len = file.metadata().map_err(TarReadError::Read)?.len();
    super::split_check::beside(file, len, blake3, read, stop, |side| {
        let mut archive = tar::Archive::new(Counting {
            inner: io::BufReader::with_capacity(1 << 20, file),
            read,
            stop,
            at: 0,
            len,
        });
        // Seeks past the data of the files the side hashes.
        let entries = archive.entries_with_seek().map_err(TarReadError::Read)?;
        let side = side.map(|to| Side::Threads {
            to,
            batch: Vec::new(),
            batched: 0,
        });
        Reader::new(None, side, DigestKind::Sha256, blake3).read(entries)
    })
    .and_then(|(reader, beside)| {
        let mut reader = reader;
        reader.sums.extend(beside);
        reader.finish().map(Checked::from)
    })
}

/// Who hashes the files whose data the parsing skips.
enum Side {
    /// The threads beside a check of a tar file, sent the files as (key, offset, length) in
    /// batches of about [`BATCH_BYTES`] (one wake-up for many small files; a big file alone).
    Threads {
        to: super::split_check::Ranges,
        batch: super::split_check::Batch,
        batched: u64,
    },
    /// The skip itself, in the stream's chunks: told of each file just before it is skipped.
    InPlace(Announced),
}

const BATCH_BYTES: u64 = 4 << 20;

impl Side {
    fn hand(&mut self, key: String, at: u64, len: u64) -> Result<(), TarReadError> {
        match self {
            Side::Threads { batch, batched, .. } => {
                batch.push((key, at, len));
                *batched += len;
                match *batched >= BATCH_BYTES {
                    true => self.send(),
                    false => Ok(()),
                }
            }
            Side::InPlace(in_place) => in_place.borrow_mut().announce(key, at, len),
        }
    }

    /// Hands on what is batched; in place, checks that every file's data was reached.
    fn send(&mut self) -> Result<(), TarReadError> {
        match self {
            Side::Threads { to, batch, batched } => {
                *batched = 0;
                if batch.is_empty() {
                    return Ok(());
                }
                to.send(std::mem::take(batch)).map_err(|_| {
                    TarReadError::Read(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the hashing beside stopped",
                    ))
                })
            }
            Side::InPlace(in_place) => in_place.borrow().all_reached(),
        }
    }
}

/// Counts the bytes read through it, for a progress bar, and knows its position: a skip
/// within what is buffered keeps the buffer (a seek of a `BufReader` empties it, and each
/// next header would read a whole buffer again). A skip past the file's end (`len`) is the
/// error a read of the stream meets there: a seek would go on without one, and a tar cut
/// inside its last entry's data or padding would pass.
struct Counting<'a> {
    inner: io::BufReader<&'a fs::File>,
    read: &'a (dyn Fn(u64) + Sync),
    stop: &'a (dyn Fn() -> bool + Sync),
    at: u64,
    len: u64,
}

/// A check stopped by its caller's word: a tar before it failed its check.
pub(super) fn stopped() -> io::Error {
    io::Error::other("not read further: a tar before it failed its check")
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if crate::interrupt::is_interrupted() {
            return Err(super::handoff::RunInterrupted::io());
        }
        if (self.stop)() {
            return Err(stopped());
        }
        let n = self.inner.read(buf)?;
        self.at += n as u64;
        (self.read)(n as u64);
        Ok(n)
    }
}

pub(super) fn past_the_end() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the archive ends inside an entry's data or padding",
    )
}

impl io::Seek for Counting<'_> {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        match pos {
            io::SeekFrom::Current(by) => {
                let to = self
                    .at
                    .checked_add_signed(by)
                    .ok_or_else(|| io::Error::other("a seek before the start"))?;
                if to > self.len {
                    return Err(past_the_end());
                }
                self.inner.seek_relative(by)?;
                self.at = to;
            }
            pos => self.at = self.inner.seek(pos)?,
        }
        if self.at > self.len {
            return Err(past_the_end());
        }
        Ok(self.at)
    }
}

/// The extension records read so far for the next entry.
#[derive(Default)]
struct Extensions {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<Vec<u8>>,
}

impl Extensions {
    /// Reads `entry` if it is an extension record (and returns true), within its bound.
    fn take_record<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<bool, TarReadError> {
        let kind = entry.header().entry_type();
        let (slot, limit, what) = match kind {
            EntryType::GNULongName => (&mut self.long_name, PATH_MAX, "GNU long name"),
            EntryType::GNULongLink => (&mut self.long_link, PATH_MAX, "GNU long link target"),
            EntryType::XHeader => (&mut self.pax, PAX_MAX, "PAX record set"),
            EntryType::XGlobalHeader => {
                // Global records (a comment from `git archive`, say) change nothing here.
                let shown = shown(&entry.header().path_bytes());
                read_record(entry, entry.size(), PAX_MAX, "global PAX record set")
                    .map_err(|e| refused(&shown, e.to_string()))?;
                return Ok(true);
            }
            _ => return Ok(false),
        };
        let shown = shown(&entry.header().path_bytes());
        if slot.is_some() {
            return Err(refused(
                &shown,
                format!("it is a second {what} for the same entry"),
            ));
        }
        let data = read_record(entry, entry.size(), limit, what)
            .map_err(|e| refused(&shown, e.to_string()))?;
        *slot = Some(match kind {
            EntryType::XHeader => data,
            _ => until_nul(data),
        });
        Ok(true)
    }

    /// What to name in an error about records that describe no entry.
    fn first(&self) -> Option<&'static str> {
        match (&self.long_name, &self.long_link, &self.pax) {
            (None, None, None) => None,
            (Some(_), _, _) | (_, Some(_), _) => Some("././@LongLink"),
            _ => Some("PAX record set"),
        }
    }
}

/// What an entry says about itself once its extension records are applied, each field read
/// within its bound.
struct Described {
    name: Vec<u8>,
    link: Option<Vec<u8>>,
    mtime: Option<i64>,
    owner: Option<(u64, u64)>,
}

fn describe<R: Read>(
    entry: &tar::Entry<'_, R>,
    ext: Extensions,
) -> Result<Described, TarReadError> {
    let header = entry.header();
    let header_name = shown(&header.path_bytes());
    let (mut pax_path, mut pax_link, mut pax_mtime) = (None, None, None);
    let (mut uid, mut gid) = (header.uid().ok(), header.gid().ok());
    if let Some(records) = &ext.pax {
        for record in tar::PaxExtensions::new(records) {
            let record =
                record.map_err(|_| refused(&header_name, "its PAX records are malformed"))?;
            let value = record.value_bytes();
            let number = || {
                std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
            };
            match record.key_bytes() {
                b"path" => pax_path = Some(value.to_vec()),
                b"linkpath" => pax_link = Some(value.to_vec()),
                b"mtime" => pax_mtime = Some(pax_time(value)),
                b"uid" => uid = number(),
                b"gid" => gid = number(),
                b"size" if number() != Some(entry.size()) => {
                    return Err(refused(
                        &header_name,
                        "its PAX size record differs from its header's size (not supported)",
                    ));
                }
                _ => {}
            }
        }
    }
    let name = ext
        .long_name
        .or(pax_path)
        .unwrap_or_else(|| header.path_bytes().into_owned());
    let link = ext
        .long_link
        .or(pax_link)
        .or_else(|| header.link_name_bytes().map(|l| l.into_owned()));
    for (what, bytes) in [("name", Some(&name)), ("link target", link.as_ref())] {
        let Some(bytes) = bytes else { continue };
        // A name past any bound is shown by its start only: the message stays one line.
        let shown = match name.len() {
            0..=200 => shown(&name),
            _ => format!("{}...", shown(&name[..200])),
        };
        if bytes.len() as u64 >= PATH_MAX {
            return Err(refused(
                &shown,
                format!(
                    "its {what} is {} bytes; names are at most {} bytes (PATH_MAX)",
                    bytes.len(),
                    PATH_MAX - 1
                ),
            ));
        }
        if bytes.contains(&0) {
            return Err(refused(&shown, format!("its {what} holds a NUL byte")));
        }
    }
    let mtime = match pax_mtime {
        Some(t) => t,
        None => decode_time(&header.as_old().mtime),
    };
    Ok(Described {
        name,
        link,
        mtime,
        owner: uid.zip(gid),
    })
}

type Owner = Option<(u64, u64)>;

struct Reader<'a> {
    dest: Option<&'a Path>,
    /// What `sums.main` holds.
    kind: DigestKind,
    /// Digests known so far (and the BLAKE3 ones, when a check asked for them too); with a
    /// hasher, it has the rest.
    sums: Manifests,
    seen: BTreeSet<PathBuf>,
    /// Regular files (and hard links to them) so far, by relative path.
    files: BTreeSet<PathBuf>,
    /// Every directory above a file so far: a symlink there would hide earlier entries.
    /// Looked up, not searched, so checking an entry costs its depth, not the archive's size.
    file_dirs: HashSet<PathBuf>,
    /// The symlinks so far, by relative path: nothing may lie below one.
    symlink_paths: HashSet<PathBuf>,
    /// Hard links, by key, and the key of the file each is a link to: its digest is theirs.
    hard_links: Vec<(String, String)>,
    /// Symlinks to make once every file exists: where, to what, owned by whom.
    symlinks: Vec<(EntryPath, PathBuf, Owner)>,
    dir_modes: Vec<(PathBuf, u32)>,
    hasher: Option<Hasher>,
    /// Whether unpacked entries get the owners the tar names (only root can give them).
    as_root: bool,
    /// This process's umask, when known: a file created with its mode already has it unless
    /// the umask takes bits away, and then needs no `fchmod`.
    umask: Option<u32>,
    /// The owner a new file below the destination gets, when it is sure: one the archive
    /// names too needs no `fchown`.
    created_owner: Option<(u64, u64)>,
    buf: Vec<u8>,
    /// Checking only: who hashes the files' data, which this reader skips.
    side: Option<Side>,
}

pub(super) fn refused(entry: &str, why: impl Into<String>) -> TarReadError {
    TarReadError::Refused {
        entry: entry.to_string(),
        why: why.into(),
    }
}

impl<'a> Reader<'a> {
    fn new(
        dest: Option<&'a Path>,
        side: Option<Side>,
        kind: DigestKind,
        blake3: bool,
    ) -> Reader<'a> {
        Reader {
            dest,
            kind,
            sums: Manifests::new(blake3),
            seen: BTreeSet::new(),
            files: BTreeSet::new(),
            file_dirs: HashSet::new(),
            symlink_paths: HashSet::new(),
            hard_links: Vec::new(),
            symlinks: Vec::new(),
            dir_modes: Vec::new(),
            // Unpacking hashes on a thread of its own, beside the writing; a reader that only
            // checks (on a thread of its own already) hashes as it reads.
            hasher: dest.map(|_| Hasher::new(kind)),
            as_root: nix::unistd::geteuid().is_root(),
            umask: dest.and_then(|_| process_umask()),
            created_owner: dest.and_then(created_owner),
            buf: Vec::new(),
            side,
        }
    }

    /// Reads every entry of `entries`; the checksums are complete only after [`Self::finish`].
    fn read<R: Read>(mut self, entries: tar::Entries<'_, R>) -> Result<Self, TarReadError> {
        // Raw entries: the extension records (long names, PAX) are read here, each with a
        // bound, where the crate would read any size whole into memory.
        let mut pending = Extensions::default();
        for entry in entries.raw(true) {
            let mut entry = entry.map_err(TarReadError::Read)?;
            if !pending.take_record(&mut entry)? {
                self.entry(entry, std::mem::take(&mut pending))?;
            }
        }
        if let Some(record) = pending.first() {
            return Err(refused(
                record,
                "the archive ends after this extension record, without the entry it describes",
            ));
        }
        // The side's work is all given: it ends once done.
        if let Some(mut side) = self.side.take() {
            side.send()?;
        }
        Ok(self)
    }

    fn entry<R: Read>(
        &mut self,
        mut entry: tar::Entry<'_, R>,
        ext: Extensions,
    ) -> Result<(), TarReadError> {
        let described = describe(&entry, ext)?;
        let raw_name = Path::new(OsStr::from_bytes(&described.name));
        let shown = shown(&described.name);
        let path = check_entry(raw_name).map_err(|why| refused(&shown, why))?;
        if !path.is_root() && !self.seen.insert(path.relative.clone()) {
            return Err(refused(
                &shown,
                "the same name appears twice in the archive",
            ));
        }
        if let Some(link) = path
            .relative
            .ancestors()
            .skip(1)
            .find(|above| self.symlink_paths.contains(*above))
        {
            return Err(refused(
                &shown,
                format!("it lies below the symlink ./{}", link.display()),
            ));
        }
        let header = entry.header();
        let mode = header.mode().map_err(TarReadError::Read)? & 0o777;
        let (owner, mtime) = (described.owner, described.mtime);
        let link_name = described
            .link
            .as_deref()
            .map(|l| Path::new(OsStr::from_bytes(l)));
        match header.entry_type() {
            EntryType::Directory => {
                if let Some(dest) = self.dest {
                    let target = dest.join(&path.relative);
                    fs::create_dir_all(&target).map_err(|source| TarReadError::Write {
                        path: target.clone(),
                        source,
                    })?;
                    if self.as_root {
                        chown(&target, owner, false);
                    }
                    self.dir_modes.push((target, mode));
                }
            }
            EntryType::Regular | EntryType::Continuous => {
                self.file(&mut entry, &path, mode, owner, mtime)?;
                self.add_file(&path);
            }
            EntryType::Link => {
                let target_name = link_name
                    .ok_or_else(|| refused(&shown, "it is a hard link without a target"))?;
                let target = check_entry(target_name).map_err(|why| {
                    refused(
                        &shown,
                        format!("it is a hard link whose target is refused: {why}"),
                    )
                })?;
                if !self.files.contains(&target.relative) {
                    return Err(refused(
                        &shown,
                        "it is a hard link to something that is not an earlier file in the archive",
                    ));
                }
                if let Some(dest) = self.dest {
                    let at = dest.join(&path.relative);
                    fs::hard_link(dest.join(&target.relative), &at)
                        .map_err(|source| TarReadError::Write { path: at, source })?;
                }
                self.add_file(&path);
                self.hard_links.push((path.key, target.key));
            }
            EntryType::Symlink => {
                let target = link_name
                    .ok_or_else(|| refused(&shown, "it is a symlink without a target"))?
                    .to_path_buf();
                check_symlink_target(&path, &target).map_err(|why| refused(&shown, why))?;
                if self.file_dirs.contains(&path.relative) {
                    return Err(refused(
                        &shown,
                        "it is a symlink over a directory of earlier entries",
                    ));
                }
                self.symlink_paths.insert(path.relative.clone());
                self.symlinks.push((path, target, owner));
            }
            other => {
                return Err(refused(
                    &shown,
                    format!(
                        "it is a special file ({other:?}); artifacts hold files, directories and links only"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Records a regular file or hard link, and the directories above it.
    fn add_file(&mut self, path: &EntryPath) {
        self.files.insert(path.relative.clone());
        for dir in path.relative.ancestors().skip(1) {
            // Its own ancestors are there already when it is.
            if !self.file_dirs.insert(dir.to_path_buf()) {
                break;
            }
        }
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: &EntryPath,
        mode: u32,
        owner: Option<(u64, u64)>,
        mtime: Option<i64>,
    ) -> Result<(), TarReadError> {
        let shown = &path.key;
        if path.is_root() {
            return Err(refused(shown, "a file cannot be the archive's root"));
        }
        if let Some(side) = &mut self.side
            && entry.size() > 0
        {
            // Left unread here: the archive seeks past it to the next header.
            return side.hand(path.key.clone(), entry.raw_file_position(), entry.size());
        }
        let mut out = match self.dest {
            Some(dest) => {
                let target = dest.join(&path.relative);
                // Created with its own mode when the umask is known (the store is the agent's
                // alone, mode 0700, so nobody can open it early), else private until written.
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(if self.umask.is_some() { mode } else { 0o600 })
                    .open(&target)
                    .map_err(|source| TarReadError::Write {
                        path: target.clone(),
                        source,
                    })?;
                Some((file, target))
            }
            None => None,
        };
        // Hashed here only without a hasher thread (a check).
        let mut digests = self
            .hasher
            .is_none()
            .then(|| FileDigests::new(self.kind, self.sums.blake3.is_some()));
        let mut left = entry.size();
        while left > 0 {
            let mut buf = match &self.hasher {
                Some(hasher) => hasher.buffer(left),
                None if self.buf.is_empty() => vec![0u8; 256 * 1024],
                None => std::mem::take(&mut self.buf),
            };
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            // Interrupted reads are retried with the same buffer (see tar_writer).
            let n = match read_retrying(entry, &mut buf[..want]) {
                Ok(0) => {
                    return Err(TarReadError::Read(io::ErrorKind::UnexpectedEof.into()));
                }
                Ok(n) => n,
                Err(e) => return Err(TarReadError::Read(e)),
            };
            left -= n as u64;
            if let Some((file, target)) = out.as_mut() {
                file.write_all(&buf[..n])
                    .map_err(|source| TarReadError::Write {
                        path: target.clone(),
                        source,
                    })?;
            }
            match (&self.hasher, digests.as_mut()) {
                (Some(hasher), _) => hasher.data(buf, n),
                (None, digests) => {
                    if let Some(digests) = digests {
                        digests.update(&buf[..n]);
                    }
                    self.buf = buf;
                }
            }
        }
        if let Some((file, target)) = out {
            let write_err = |source| TarReadError::Write {
                path: target.clone(),
                source,
            };
            if self.umask.is_none_or(|umask| mode & umask != 0) {
                file.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(write_err)?;
            }
            // A time the system cannot hold (or the filesystem refuses) leaves the file's own,
            // as an absent one does: the data is what must come back.
            if let Some(time) = mtime.and_then(system_time) {
                let _ = file.set_modified(time);
            }
            if let (true, Some((uid, gid))) = (self.as_root, owner)
                && self.created_owner != owner
            {
                let _ = std::os::unix::fs::fchown(&file, Some(uid as u32), Some(gid as u32));
            }
            // Not synced: a restored store is scratch (see LocalInstance::receive_artifact).
        }
        match (&self.hasher, digests) {
            (Some(hasher), _) => hasher.end_file(path.key.clone()),
            (None, Some(digests)) => self.sums.insert(path.key.clone(), digests),
            (None, None) => {}
        }
        Ok(())
    }

    /// The manifest of `kind`, and with it the BLAKE3 one when asked for.
    fn finish(mut self) -> Result<Manifests, TarReadError> {
        if let Some(hasher) = self.hasher.take() {
            self.sums.main.extend(hasher.finish());
        }
        for (link, target) in &self.hard_links {
            self.sums.link(link, target);
        }
        let links: BTreeMap<PathBuf, PathBuf> = self
            .symlinks
            .iter()
            .map(|(p, t, _)| (p.relative.clone(), t.clone()))
            .collect();
        for (path, target, _) in &self.symlinks {
            resolve_inside(&links, &path.relative, target)
                .map_err(|why| refused(&shown_key(&path.key), why.why()))?;
        }
        if let Some(dest) = self.dest {
            for (path, target, owner) in &self.symlinks {
                let at = dest.join(&path.relative);
                std::os::unix::fs::symlink(target, &at).map_err(|source| TarReadError::Write {
                    path: at.clone(),
                    source,
                })?;
                if self.as_root {
                    chown(&at, *owner, true);
                }
            }
            // Deepest first, so a read-only directory is closed only after its contents exist.
            self.dir_modes
                .sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
            for (dir, mode) in &self.dir_modes {
                fs::set_permissions(dir, fs::Permissions::from_mode(*mode)).map_err(|source| {
                    TarReadError::Write {
                        path: dir.clone(),
                        source,
                    }
                })?;
            }
        }
        Ok(self.sums)
    }
}

/// This process's umask, from `/proc/self/status` (reading it with `umask(2)` would change it
/// for a moment, under every other thread).
fn process_umask() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let value = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(value.trim(), 8).ok()
}

/// The owner of a file created below `dest`: this process's, unless `dest` is set-group-ID
/// (its files then take its group).
fn created_owner(dest: &Path) -> Option<(u64, u64)> {
    let meta = fs::metadata(dest).ok()?;
    if std::os::unix::fs::MetadataExt::mode(&meta) & 0o2000 != 0 {
        return None;
    }
    let (uid, gid) = (nix::unistd::geteuid(), nix::unistd::getegid());
    Some((u64::from(uid.as_raw()), u64::from(gid.as_raw())))
}

/// Gives a directory or symlink the owner the archive names; callers do it only as root, as
/// `sudo tar -x` does.
fn chown(path: &Path, owner: Option<(u64, u64)>, is_link: bool) {
    let Some((uid, gid)) = owner else { return };
    let (uid, gid) = (Some(uid as u32), Some(gid as u32));
    let _ = if is_link {
        std::os::unix::fs::lchown(path, uid, gid)
    } else {
        std::os::unix::fs::chown(path, uid, gid)
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk_stream::testing::{Listed, listed};

    /// A header of `kind` named `name` with `size` bytes of data to follow.
    fn raw_header(name: &[u8], kind: EntryType, size: u64) -> [u8; 512] {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_size(size);
        h.set_cksum();
        *h.as_bytes()
    }

    /// Reads like an endless stream of zeros after `start`, counting what was taken.
    struct Endless {
        start: Vec<u8>,
        taken: u64,
    }

    impl Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(64 * 1024);
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = self
                    .start
                    .get(self.taken as usize + i)
                    .copied()
                    .unwrap_or(0);
            }
            self.taken += n as u64;
            Ok(n)
        }
    }

    /// The GNU long-name record of 2 GiB (and a PAX record set of 1 GiB) that a compromised
    /// VM can send the driver: refused from its header, having read a few blocks.
    #[test]
    fn oversized_extension_records_are_refused_before_they_are_read() {
        for (kind, why) in [
            (
                EntryType::GNULongName,
                "its GNU long name is 2147483648 bytes, more than the 4096 bytes allowed",
            ),
            (
                EntryType::GNULongLink,
                "its GNU long link target is 2147483648 bytes, more than the 4096 bytes allowed",
            ),
            (
                EntryType::XHeader,
                "its PAX record set is 2147483648 bytes, more than the 65536 bytes allowed",
            ),
        ] {
            let mut input = Endless {
                start: raw_header(b"././@LongLink", kind, 2 << 30).to_vec(),
                taken: 0,
            };
            let err = read_tar(&mut input, None).unwrap_err().to_string();
            assert_eq!(err, format!("entry '././@LongLink' is refused: {why}"));
            assert!(
                input.taken <= 1 << 20,
                "{kind:?}: read {} bytes",
                input.taken
            );
        }
    }

    #[test]
    fn long_names_within_path_max_are_read_and_longer_ones_refused() {
        for (len, ok) in [(4095, true), (4096, false)] {
            let name = format!("./{}", "n".repeat(len - 2));
            let mut tar =
                raw_header(b"././@LongLink", EntryType::GNULongName, len as u64 + 1).to_vec();
            tar.extend_from_slice(name.as_bytes());
            tar.resize(tar.len().div_ceil(512) * 512 + 512, 0);
            tar.truncate(512 + (len + 1).div_ceil(512) * 512);
            tar.extend_from_slice(&raw_header(b"./short", EntryType::Regular, 0));
            tar.extend_from_slice(&[0u8; 1024]);
            let result = read_tar(&tar[..], None);
            match ok {
                true => assert!(result.unwrap().contains_key(&name), "{len}"),
                false => assert!(
                    result
                        .unwrap_err()
                        .to_string()
                        .contains("more than the 4096 bytes"),
                    "{len}"
                ),
            }
        }
        // From a PAX path record (up to 64 KiB): refused, and shown by its start.
        let name = format!("./{}", "p".repeat(5000));
        let body = format!(" path={name}\n");
        let record = format!("{}{body}", body.len() + 4);
        assert_eq!(
            record.len(),
            body.len() + 4,
            "the length counts its own 4 digits"
        );
        let mut tar = raw_header(b"PaxHeaders/x", EntryType::XHeader, record.len() as u64).to_vec();
        tar.extend_from_slice(record.as_bytes());
        tar.resize(tar.len().div_ceil(512) * 512, 0);
        tar.extend_from_slice(&raw_header(b"./short", EntryType::Regular, 0));
        tar.extend_from_slice(&[0u8; 1024]);
        let err = read_tar(&tar[..], None).unwrap_err().to_string();
        assert!(
            err.contains("its name is 5002 bytes; names are at most 4095 bytes (PATH_MAX)"),
            "{err}"
        );
        assert!(err.len() < 400, "{err}");
    }

    use std::sync::mpsc;
    use std::time::Duration;

    /// A tar of `n` empty files and `n` symlinks to them, two directories deep.
    fn files_and_symlinks(n: usize) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::with_capacity(2 * n * 512 + 4096));
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(EntryType::Directory);
        dir.set_mode(0o755);
        dir.set_size(0);
        for name in ["./", "./a/", "./a/b/"] {
            tar.append_data(&mut dir.clone(), name, io::empty())
                .unwrap();
        }
        for i in 0..n {
            let mut file = tar::Header::new_gnu();
            file.set_mode(0o644);
            file.set_size(0);
            tar.append_data(&mut file, format!("a/b/file-{i}"), io::empty())
                .unwrap();
            let mut link = tar::Header::new_gnu();
            link.set_entry_type(EntryType::Symlink);
            link.set_mode(0o777);
            link.set_size(0);
            tar.append_link(&mut link, format!("a/b/link-{i}"), format!("file-{i}"))
                .unwrap();
        }
        tar.into_inner().unwrap()
    }

    #[test]
    fn checking_many_files_and_symlinks_takes_linear_time() {
        // 2 x 40,000 entries: checked in about a second (a debug build); checking each entry
        // against every symlink and each symlink against every file, as before, took minutes.
        let n = 40_000;
        let tar = files_and_symlinks(n);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(read_tar(&tar[..], None));
        });
        let sums = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("checking the archive took more than 30 s: its time grows faster than linear")
            .unwrap();
        assert_eq!(sums.len(), n);
    }

    #[test]
    fn an_entry_below_a_symlink_and_a_symlink_over_files_are_still_refused() {
        let mut tar = tar::Builder::new(Vec::new());
        let mut file = tar::Header::new_gnu();
        file.set_mode(0o644);
        file.set_size(0);
        tar.append_data(&mut file.clone(), "d/e/f", io::empty())
            .unwrap();
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(EntryType::Symlink);
        link.set_mode(0o777);
        link.set_size(0);
        tar.append_link(&mut link.clone(), "d", "e").unwrap();
        let over = read_tar(&tar.into_inner().unwrap()[..], None).unwrap_err();
        assert!(
            over.to_string().contains("symlink over a directory"),
            "{over}"
        );

        let mut tar = tar::Builder::new(Vec::new());
        tar.append_link(&mut link, "x/l", "y").unwrap();
        tar.append_data(&mut file, "x/l/deep/f", io::empty())
            .unwrap();
        let below = read_tar(&tar.into_inner().unwrap()[..], None).unwrap_err();
        assert!(
            below.to_string().contains("below the symlink ./x/l"),
            "{below}"
        );
    }

    /// A tar of `files` (name, bytes), then a hard link `link` to the last of them.
    fn tar_with(files: &[(&str, Vec<u8>)], link: &str) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (name, bytes) in files {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o644);
            header.set_size(bytes.len() as u64);
            tar.append_data(&mut header, name, &bytes[..]).unwrap();
        }
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(EntryType::Link);
        header.set_mode(0o644);
        header.set_size(0);
        tar.append_link(&mut header, link, files.last().unwrap().0)
            .unwrap();
        tar.into_inner().unwrap()
    }

    fn file_of(bytes: &[u8]) -> (tempfile::NamedTempFile, fs::File) {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(bytes).unwrap();
        let file = fs::File::open(tmp.path()).unwrap();
        (tmp, file)
    }

    /// A file checked on two threads gives what one read gives: every file's digest (those in
    /// its second half hashed beside, a hard link to one of them too), SHA-256 and BLAKE3 from
    /// the same read, every byte counted; a byte changed in the second half changes its file's
    /// digests; a tar cut inside a file of the second half is an error, not a digest of what is
    /// there.
    #[test]
    fn a_tar_file_checked_on_two_threads_gives_what_one_read_gives() {
        let big = |seed: u8, n: usize| (0..n).map(|i| (i as u8).wrapping_mul(seed)).collect();
        let files = [
            ("./first", big(3, 300_000)),
            ("./a/second", big(5, 70_000)),
            ("./a/third", big(7, 250_000)),
            ("./last", big(11, 90_000)),
        ];
        let bytes = tar_with(&files, "./linked");
        let one_read = read_tar(&bytes[..], None).unwrap();
        let (tmp, file) = file_of(&bytes);
        let counted = std::sync::atomic::AtomicU64::new(0);
        let count = |n: u64| {
            counted.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
        };
        let blake3 = read_tar_as(&bytes[..], None, DigestKind::Blake3).unwrap();
        assert_ne!(blake3, one_read);
        let both = Checked {
            sha256: one_read.clone(),
            blake3: Some(blake3.clone()),
        };
        assert_eq!(check_tar(&bytes[..], true).unwrap(), both);
        let two = check_tar_file(&file, true, &count, &|| false).unwrap();
        assert_eq!(two, both);
        assert_eq!(two.sha256.get("./linked"), one_read.get("./last"));
        assert_eq!(blake3.get("./linked"), blake3.get("./last"));
        assert!(two.sha256.contains_key("./linked"));
        // A file is read from its start: opened again.
        let again = fs::File::open(tmp.path()).unwrap();
        let sha256_only = check_tar_file(&again, false, &|_| {}, &|| false).unwrap();
        assert_eq!(sha256_only.sha256, one_read);
        assert_eq!(sha256_only.blake3, None);
        // Every file's bytes were counted, on one thread or the other.
        let data: u64 = files.iter().map(|(_, b)| b.len() as u64).sum();
        assert!(counted.into_inner() >= data);

        // One byte of the last file (second half) changed.
        let mut changed = bytes.clone();
        let at = changed.len() - 2 * 1024 - 512 - 10_000;
        changed[at] ^= 1;
        let (_tmp, file) = file_of(&changed);
        let found = check_tar_file(&file, true, &|_| {}, &|| false).unwrap();
        let found_b3 = found.blake3.unwrap();
        assert_ne!(found.sha256.get("./last"), one_read.get("./last"));
        assert_ne!(found_b3.get("./last"), blake3.get("./last"));
        assert_eq!(found.sha256.get("./first"), one_read.get("./first"));
        assert_eq!(found_b3.get("./first"), blake3.get("./first"));

        // Cut inside the padding after the last file's data (no end blocks either): a read of
        // the stream fails on it, so must the check that seeks past it.
        let cut = tar_with(
            &[("./first", big(3, 100_000)), ("./last", big(5, 100_001))],
            "./l",
        );
        // The second header follows the first file's 100,000 bytes, padded to 100,352.
        let last = 512 + 100_352;
        assert_eq!(&cut[last..last + 5], b"last\0");
        let cut = &cut[..last + 512 + 100_001];
        assert!(read_tar(cut, None).is_err());
        let (_tmp, file) = file_of(cut);
        let found = check_tar_file(&file, true, &|_| {}, &|| false);
        assert!(found.is_err(), "{found:?}");

        // Cut inside the third file, which lies in the second half.
        let third = bytes.windows(7).position(|w| w == b"a/third").unwrap();
        let (_tmp, file) = file_of(&bytes[..third + 512 + 1000]);
        let cut = check_tar_file(&file, true, &|_| {}, &|| false);
        assert!(cut.is_err(), "{cut:?}");
    }

    /// A stream in chunks of `size` bytes, as a drain's batches hand it to its check.
    fn in_chunks(bytes: &[u8], size: usize) -> ChunkStream<Listed> {
        listed(&bytes.chunks(size).collect::<Vec<_>>())
    }

    /// Hashed where it lies in the chunks, a stream gives what a read of it gives, whatever
    /// its chunks' sizes (a header or a file's data split anywhere), with a long name's
    /// record, an empty file and a hard link among its entries; a changed byte changes that
    /// file's digests alone, and a stream cut inside a file's data or its padding is refused.
    #[test]
    fn a_stream_checked_in_place_gives_what_a_read_gives_whatever_its_chunks() {
        let big = |seed: u8, n: usize| (0..n).map(|i| (i as u8).wrapping_mul(seed)).collect();
        let long = format!("./{}/long", "d".repeat(150));
        let files = [
            ("./first", big(3, 300_000)),
            ("./empty", Vec::new()),
            (long.as_str(), big(5, 70_001)),
            ("./last", big(11, 90_000)),
        ];
        let bytes = tar_with(&files, "./linked");
        let read = check_tar(&bytes[..], true).unwrap();
        assert_eq!(read.sha256.len(), 5, "{read:?}");
        assert_eq!(read.sha256.get("./linked"), read.sha256.get("./last"));
        for size in [1, 7, 512, 4096, 65_537, bytes.len()] {
            let in_place = check_tar_chunks(&mut in_chunks(&bytes, size), true);
            assert_eq!(in_place.unwrap(), read, "in chunks of {size} bytes");
        }
        let sha256_only = check_tar_chunks(&mut in_chunks(&bytes, 4096), false).unwrap();
        assert_eq!(sha256_only.sha256, read.sha256);
        assert_eq!(sha256_only.blake3, None);

        // One byte of the long-named file changed: its digests change, the others' do not.
        let mut changed = bytes.clone();
        let at = changed
            .windows(4)
            .position(|w| w == [0, 5, 10, 15])
            .unwrap()
            + 40_000;
        changed[at] ^= 1;
        let found = check_tar_chunks(&mut in_chunks(&changed, 65_537), true).unwrap();
        let (sha, b3) = (&found.sha256, found.blake3.as_ref().unwrap());
        let known_b3 = read.blake3.as_ref().unwrap();
        assert_ne!(sha.get(long.as_str()), read.sha256.get(long.as_str()));
        assert_ne!(b3.get(long.as_str()), known_b3.get(long.as_str()));
        assert_eq!(sha.get("./first"), read.sha256.get("./first"));
        assert_eq!(b3.get("./last"), known_b3.get("./last"));

        // The link's header follows the last file's 90,000 bytes, padded to 90,112.
        let link = bytes.windows(7).position(|w| w == b"linked\0").unwrap();
        let last_data = link - 90_112;
        // Cut inside its data, inside its padding, right after its header, and inside the
        // first file: refused as a short stream, as a read of it is.
        let first_data = 512 + 1000;
        for cut in [last_data + 1_000, link - 50, last_data, first_data] {
            let short = check_tar_chunks(&mut in_chunks(&bytes[..cut], 4096), true);
            assert!(
                matches!(&short, Err(TarReadError::Read(e)) if e.kind() == io::ErrorKind::UnexpectedEof),
                "cut at {cut} of {}: {short:?}",
                bytes.len()
            );
            assert!(check_tar(&bytes[..cut], true).is_err());
        }
    }

    /// What the in-place check skips without hashing (a global PAX record, a PAX record that
    /// names the next file, a directory that says it has data) keeps it in step: it gives
    /// what a read gives, whatever its chunks.
    #[test]
    fn records_and_a_directory_with_data_are_skipped_in_step_in_place() {
        let pax = |key: &str, value: &str| {
            let body = format!(" {key}={value}\n");
            let mut len = body.len() + 1;
            while format!("{len}{body}").len() != len {
                len += 1;
            }
            format!("{len}{body}").into_bytes()
        };
        let global = pax("comment", "made by git archive");
        let named = pax("path", &format!("./{}/named", "p".repeat(120)));
        let mut tar = Vec::new();
        let mut entry = |name: &[u8], kind: EntryType, mut data: Vec<u8>| {
            tar.extend(raw_header(name, kind, data.len() as u64));
            data.resize(data.len().div_ceil(512) * 512, 0);
            tar.extend(data);
        };
        entry(b"pax_global_header", EntryType::XGlobalHeader, global);
        entry(b"./f", EntryType::Regular, vec![1u8; 700]);
        entry(b"./d/", EntryType::Directory, vec![2u8; 600]);
        entry(b"PaxHeaders/named", EntryType::XHeader, named);
        entry(
            b"./short",
            EntryType::Regular,
            (0..1_030).map(|i| (i % 251) as u8).collect(),
        );
        tar.extend([0u8; 1024]);
        let read = check_tar(&tar[..], true).unwrap();
        let named_key = format!("./{}/named", "p".repeat(120));
        assert!(read.sha256.contains_key(&named_key), "{read:?}");
        assert_eq!(read.sha256.len(), 2, "{read:?}");
        for size in [1, 100, 512, 4096, tar.len()] {
            let in_place = check_tar_chunks(&mut in_chunks(&tar, size), true);
            assert_eq!(in_place.unwrap(), read, "in chunks of {size} bytes");
        }
    }

    /// A VM that declares a file far larger than it sends, in a header's base-256 size (up to
    /// the largest a header holds): the in-place check walks what arrives once and refuses it,
    /// as a read does, without holding more than the chunks it is given.
    #[test]
    fn a_file_declared_far_larger_than_the_stream_is_refused_in_place() {
        for size in [1u64 << 40, i64::MAX as u64, u64::MAX] {
            let mut tar = raw_header(b"./huge", EntryType::Regular, size).to_vec();
            tar.extend(vec![7u8; 100_000]);
            let in_place = check_tar_chunks(&mut in_chunks(&tar, 4096), true);
            assert!(in_place.is_err(), "size {size}: {in_place:?}");
            assert!(check_tar(&tar[..], true).is_err(), "size {size}");
        }
    }

    /// Told to stop (a check beside it failed), a check of a tar file reads no further, on
    /// its reading thread and the threads beside, and ends in an error, not a manifest.
    #[test]
    fn a_tar_file_check_told_to_stop_reads_no_further() {
        let big = vec![9u8; 48 << 20];
        let files: Vec<(String, Vec<u8>)> = std::iter::once(("./big".to_string(), big))
            .chain((0..64).map(|i| (format!("./small/{i}"), vec![i as u8; 100_000])))
            .collect();
        let files: Vec<(&str, Vec<u8>)> =
            files.iter().map(|(n, d)| (n.as_str(), d.clone())).collect();
        let bytes = tar_with(&files, "./l");
        let (_tmp, file) = file_of(&bytes);
        let counted = std::sync::atomic::AtomicU64::new(0);
        let count = |n: u64| {
            counted.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
        };
        let stop = || counted.load(std::sync::atomic::Ordering::SeqCst) > 2 << 20;
        let found = check_tar_file(&file, true, &count, &stop);
        assert!(found.is_err(), "{found:?}");
        let read = counted.into_inner();
        assert!(
            read < bytes.len() as u64 / 4,
            "{read} of {} bytes read after the word to stop",
            bytes.len()
        );
    }
}
