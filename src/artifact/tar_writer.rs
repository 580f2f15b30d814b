//! Writes a job's artifact directory as the tar BBR makes with `tar -C <dir> -c .`: entries
//! named `./...`, directories before their contents, headers as GNU tar writes them (see
//! `gnu_header`), regular files hashed as they are read so the checksum manifest costs no
//! second pass over the data. The hashing runs on a thread of its own, beside the reading and
//! writing, on the same buffers. What is read is what `dir_walk` listed and checked.
//!
//! A file's data goes out with the file it was read from ([`TarOut`]), so a writer that can
//! have the kernel move it from the file may; what is hashed is always the bytes read.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use nix::sys::stat::FileStat;

use super::checksums::{Checksums, key_of_name};
use super::digest::DigestKind;
use super::dir_walk::{self, Entry, Node};
use super::gnu_header::{self, Fields, Kind, RootNames};
use super::hasher::Hasher;
use super::owner_names::OwnerNames;

#[derive(Debug, thiserror::Error)]
pub enum TarWriteError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write the artifact stream: {0}")]
    Write(io::Error),
    #[error("{path}: {why}")]
    Unsupported { path: PathBuf, why: String },
    #[error("the run was interrupted while the artifact was being read")]
    Interrupted,
}

/// Where a tar's bytes go.
pub trait TarOut: Write {
    /// Writes `bytes`, a regular file's data, which `file` holds from offset `at`. A writer
    /// that can may send the file's own bytes from there instead (see `serve::file_data`): a
    /// file changed meanwhile then differs from what was hashed, which the receiver's check of
    /// the digests finds.
    fn file_data(&mut self, bytes: &[u8], _file: &File, _at: u64) -> io::Result<()> {
        self.write_all(bytes)
    }
}

impl<T: TarOut + ?Sized> TarOut for &mut T {
    fn file_data(&mut self, bytes: &[u8], file: &File, at: u64) -> io::Result<()> {
        (**self).file_data(bytes, file, at)
    }
}

/// A plain writer: a file's data is written from the bytes read.
pub struct Plain<W>(pub W);

impl<W: Write> Write for Plain<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.write(bytes)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write> TarOut for Plain<W> {}

/// Streams `dir` as a tar into `out` and returns the manifest of its regular files, of digests
/// of `kind`.
pub fn write_tar_as(
    dir: &Path,
    out: impl Write,
    kind: DigestKind,
) -> Result<Checksums, TarWriteError> {
    write_tar_to(dir, Plain(out), kind)
}

/// [`write_tar_as`], into a [`TarOut`].
pub fn write_tar_to(
    dir: &Path,
    out: impl TarOut,
    kind: DigestKind,
) -> Result<Checksums, TarWriteError> {
    let names = OwnerNames::load();
    let mut tar = TarStream {
        out,
        written: 0,
        head: Vec::with_capacity(3 * gnu_header::BLOCK),
        root: RootNames {
            uname: names.user(0),
            gname: names.group(0),
        },
        names: &names,
    };
    let hasher = Hasher::new(kind);
    dir_walk::walk(dir, &mut |entry| tar.entry(entry, &hasher))?;
    let mut checksums = Checksums::new();
    checksums.extend(hasher.finish());
    let end = gnu_header::end_of_archive(tar.written);
    tar.write(&vec![0u8; end])?;
    tar.out.flush().map_err(TarWriteError::Write)?;
    Ok(checksums)
}

struct TarStream<'n, W> {
    out: W,
    /// Bytes written so far, to end the archive on a whole record.
    written: u64,
    /// The blocks that open an entry, reused.
    head: Vec<u8>,
    root: RootNames<'n>,
    names: &'n OwnerNames,
}

impl<W: TarOut> TarStream<'_, W> {
    fn entry(&mut self, entry: Entry<'_>, hasher: &Hasher) -> Result<(), TarWriteError> {
        match entry.node {
            Node::Dir => self.header(entry.name, entry.stat, Kind::Directory, 0, b""),
            Node::Symlink(target) => self.header(entry.name, entry.stat, Kind::Symlink, 0, target),
            Node::File(file) => {
                // The header says what the descriptor holds, not what was listed.
                let (mut data, stat) = file.open()?;
                let len = stat.st_size as u64;
                self.header(entry.name, &stat, Kind::Regular, len, b"")?;
                copy_hashing(&mut data, &mut self.out, len, hasher).map_err(|e| match e {
                    CopyError::Read(source) => TarWriteError::Read {
                        path: entry.path.to_path_buf(),
                        source,
                    },
                    CopyError::Write(e) => TarWriteError::Write(e),
                    CopyError::Shrunk => TarWriteError::Unsupported {
                        path: entry.path.to_path_buf(),
                        why:
                            "the file shrank while it was being read (is the job still writing it?)"
                                .to_string(),
                    },
                    CopyError::Interrupted => TarWriteError::Interrupted,
                })?;
                self.written += len;
                let rem = (len % gnu_header::BLOCK as u64) as usize;
                if rem != 0 {
                    self.write(&[0u8; gnu_header::BLOCK][..gnu_header::BLOCK - rem])?;
                }
                // The tar keeps the name's own bytes; the manifest keys a name that is not
                // UTF-8 as BBR's YAML does (see `checksums::key_of_name`).
                hasher.end_file(key_of_name(entry.name.to_vec()));
                Ok(())
            }
        }
    }

    fn header(
        &mut self,
        name: &[u8],
        stat: &FileStat,
        kind: Kind,
        size: u64,
        link: &[u8],
    ) -> Result<(), TarWriteError> {
        let (uid, gid) = (u64::from(stat.st_uid), u64::from(stat.st_gid));
        let fields = Fields {
            name,
            kind,
            mode: stat.st_mode,
            uid,
            gid,
            size,
            mtime: stat.st_mtime,
            link,
            uname: self.names.user(uid),
            gname: self.names.group(gid),
        };
        let mut head = std::mem::take(&mut self.head);
        head.clear();
        gnu_header::write_entry(&mut head, &fields, self.root);
        let written = self.write(&head);
        self.head = head;
        written
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), TarWriteError> {
        self.out.write_all(bytes).map_err(TarWriteError::Write)?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
    Shrunk,
    Interrupted,
}

/// Copies exactly `len` bytes (the size already in the header), handing each buffer to the
/// hasher once it is written.
fn copy_hashing(
    file: &mut File,
    out: &mut impl TarOut,
    len: u64,
    hasher: &Hasher,
) -> Result<(), CopyError> {
    let mut left = len;
    while left > 0 {
        // A big file takes a while: an interrupted run stops at the next chunk, not its end.
        if crate::interrupt::is_interrupted() {
            return Err(CopyError::Interrupted);
        }
        let mut buf = hasher.buffer(left);
        let want = buf.len().min(left as usize);
        // Interrupted reads are retried with the same buffer: one taken from the hasher
        // must go back to it, or its budget would shrink for good.
        let n = match read_retrying(file, &mut buf[..want]) {
            Ok(0) => return Err(CopyError::Shrunk),
            Ok(n) => n,
            Err(e) => return Err(CopyError::Read(e)),
        };
        out.file_data(&buf[..n], file, len - left)
            .map_err(CopyError::Write)?;
        hasher.data(buf, n);
        left -= n as u64;
    }
    Ok(())
}

/// `read`, tried again while it is interrupted by a signal.
pub(super) fn read_retrying(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match input.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}
