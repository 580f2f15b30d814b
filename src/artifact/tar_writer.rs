//! Writes a job's artifact directory as the tar BBR makes with `tar -C <dir> -c .`: entries
//! named `./...`, directories before their contents, regular files hashed as they are read so
//! the checksum manifest costs no second pass over the data. The hashing runs on a thread of
//! its own, beside the reading and writing, on the same buffers.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use super::checksums::{Checksums, key};
use super::entry_path::{check_entry, check_symlink_target};
use super::hasher::Hasher;
use super::tar_header::encode_time;

#[derive(Debug, thiserror::Error)]
pub enum TarWriteError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write the artifact stream: {0}")]
    Write(io::Error),
    #[error("{path}: {why}; a restore would refuse it, so the backup does too")]
    Unsupported { path: PathBuf, why: &'static str },
}

/// Streams `dir` as a tar into `out` and returns the manifest of its regular files.
pub fn write_tar(dir: &Path, out: impl Write) -> Result<Checksums, TarWriteError> {
    let mut builder = tar::Builder::new(out);
    builder.mode(tar::HeaderMode::Complete);
    let mut checksums = Checksums::new();
    let hasher = Hasher::new();
    let root_meta = fs::metadata(dir).map_err(|source| TarWriteError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    append_header(&mut builder, b"./", &root_meta, EntryType::Directory, 0)?;
    walk(dir, Path::new(""), &mut builder, &hasher)?;
    checksums.extend(hasher.finish());
    builder
        .into_inner()
        .map_err(TarWriteError::Write)?
        .flush()
        .map_err(TarWriteError::Write)?;
    Ok(checksums)
}

fn walk<W: Write>(
    root: &Path,
    relative: &Path,
    builder: &mut tar::Builder<W>,
    hasher: &Hasher,
) -> Result<(), TarWriteError> {
    let dir = root.join(relative);
    let read_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TarWriteError::Read { path, source }
    };
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .map_err(read_err(&dir))?
        .collect::<Result<_, _>>()
        .map_err(read_err(&dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let rel = relative.join(entry.file_name());
        // Names are bytes, in the tar as on disk; only the manifest key encodes them.
        let rel_bytes = rel.as_os_str().as_bytes();
        let mut name = Vec::with_capacity(rel_bytes.len() + 3);
        name.extend_from_slice(b"./");
        name.extend_from_slice(rel_bytes);
        let meta = fs::symlink_metadata(&path).map_err(read_err(&path))?;
        let file_type = meta.file_type();
        if file_type.is_dir() {
            let mut dir_name = name.clone();
            dir_name.push(b'/');
            append_header(builder, &dir_name, &meta, EntryType::Directory, 0)?;
            walk(root, &rel, builder, hasher)?;
        } else if file_type.is_file() {
            let mut file = File::open(&path).map_err(read_err(&path))?;
            append_header(builder, &name, &meta, EntryType::Regular, meta.len())?;
            copy_hashing(&mut file, builder.get_mut(), meta.len(), hasher)
                .map_err(|e| match e {
                    CopyError::Read(source) => TarWriteError::Read { path: path.clone(), source },
                    CopyError::Write(e) => TarWriteError::Write(e),
                    CopyError::Shrunk => TarWriteError::Unsupported {
                        path: path.clone(),
                        why: "the file shrank while it was being read (is the job still writing it?)",
                    },
                })?;
            pad(builder.get_mut(), meta.len())?;
            hasher.end_file(key(rel_bytes));
        } else if file_type.is_symlink() {
            let target = fs::read_link(&path).map_err(read_err(&path))?;
            let entry_path = check_entry(&rel).expect("walked names are relative");
            check_symlink_target(&entry_path, &target)
                .and_then(|()| resolves_on_disk(root, &path))
                .map_err(|why| TarWriteError::Unsupported {
                    path: path.clone(),
                    why,
                })?;
            let mut header = header_for(&meta, EntryType::Symlink, 0);
            header
                .set_link_name(&target)
                .map_err(|_| TarWriteError::Unsupported {
                    path: path.clone(),
                    why: "its symlink target is too long for a tar header",
                })?;
            write_named(builder, &name, &mut header)?;
        } else {
            return Err(TarWriteError::Unsupported {
                path,
                why: "it is a device, fifo or socket, which an artifact cannot hold",
            });
        }
    }
    Ok(())
}

/// A link whose target exists must resolve, on the real filesystem, inside the job's directory.
fn resolves_on_disk(root: &Path, link: &Path) -> Result<(), &'static str> {
    match (fs::canonicalize(link), fs::canonicalize(root)) {
        (Ok(resolved), Ok(root)) if !resolved.starts_with(&root) => {
            Err("it is a symlink that, through other symlinks, leads outside the job's directory")
        }
        _ => Ok(()),
    }
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
    Shrunk,
}

/// Copies exactly `len` bytes (the size already in the header), handing each buffer to the
/// hasher once it is written.
fn copy_hashing(
    file: &mut File,
    out: &mut impl Write,
    len: u64,
    hasher: &Hasher,
) -> Result<(), CopyError> {
    let mut left = len;
    while left > 0 {
        let mut buf = hasher.buffer(left);
        let want = buf.len().min(left as usize);
        // Interrupted reads are retried with the same buffer: one taken from the hasher
        // must go back to it, or its budget would shrink for good.
        let n = match read_retrying(file, &mut buf[..want]) {
            Ok(0) => return Err(CopyError::Shrunk),
            Ok(n) => n,
            Err(e) => return Err(CopyError::Read(e)),
        };
        out.write_all(&buf[..n]).map_err(CopyError::Write)?;
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

/// Pads a file's data to the 512-byte block boundary.
fn pad(out: &mut impl Write, len: u64) -> Result<(), TarWriteError> {
    let rem = (len % 512) as usize;
    if rem != 0 {
        out.write_all(&[0u8; 512][..512 - rem])
            .map_err(TarWriteError::Write)?;
    }
    Ok(())
}

fn header_for(meta: &fs::Metadata, kind: EntryType, size: u64) -> Header {
    let mut header = Header::new_gnu();
    header.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
    header.set_entry_type(kind);
    header.set_size(size);
    // Times before 1970 as GNU tar writes them (the crate would write them as far-future).
    encode_time(&mut header.as_old_mut().mtime, meta.mtime());
    header
}

fn append_header<W: Write>(
    builder: &mut tar::Builder<W>,
    name: &[u8],
    meta: &fs::Metadata,
    kind: EntryType,
    size: u64,
) -> Result<(), TarWriteError> {
    let mut header = header_for(meta, kind, size);
    write_named(builder, name, &mut header)
}

/// Writes `header` under exactly `name`. The tar crate drops a leading `./` from names it sets,
/// and BBR's manifests and GNU tar keep it, so the name bytes are written here: in the header
/// when they fit, otherwise in a GNU long-name entry before it, as GNU tar does.
fn write_named<W: Write>(
    builder: &mut tar::Builder<W>,
    name: &[u8],
    header: &mut Header,
) -> Result<(), TarWriteError> {
    let bytes = name;
    let slot = &mut header.as_old_mut().name;
    if bytes.len() <= slot.len() {
        slot.fill(0);
        slot[..bytes.len()].copy_from_slice(bytes);
    } else {
        let mut long = Header::new_gnu();
        long.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        long.set_mode(0o644);
        long.set_entry_type(EntryType::GNULongName);
        long.set_size(bytes.len() as u64 + 1);
        long.set_cksum();
        let mut data = bytes.to_vec();
        data.push(0);
        builder
            .append(&long, data.as_slice())
            .map_err(TarWriteError::Write)?;
        let slot = &mut header.as_old_mut().name;
        slot.fill(0);
        slot.copy_from_slice(&bytes[..100]);
    }
    header.set_cksum();
    builder
        .get_mut()
        .write_all(header.as_bytes())
        .map_err(TarWriteError::Write)
}
