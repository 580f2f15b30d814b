//! Walks a job's artifact directory, for the tar writer and for the check that follows a
//! backup script, by descriptors, so that what is read is what was listed: each directory is
//! opened below its parent without following links and must be the one listed; a regular file
//! is opened the same way, non-blocking (a FIFO put in its place cannot stall the open), and
//! must be the very file listed. Names are bytes, in byte order, directories before their
//! contents. Symlinks are judged here too: one leading outside the job's directory, or that
//! cannot be followed to its end, is refused, as a restore would refuse it.

use std::ffi::{CStr, CString, OsStr};
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{self, AtFlags, FcntlArg, OFlag};
use nix::sys::stat::{self, FileStat, Mode, SFlag};

use super::entry_path::{check_entry, check_symlink_target};
use super::tar_writer::TarWriteError;

/// The longest entry name a restore accepts: PATH_MAX.
const MAX_NAME: usize = 4096;

/// The tail of a refusal that a restore would make as well.
/// The deepest an artifact's directories may nest. The walk holds a descriptor and a stack
/// frame per level, on threads with small stacks: bounded here rather than by PATH_MAX
/// (some 2,000 levels of one-letter names), and far past what any release writes.
const MAX_DEPTH: usize = 128;

const RESTORE_REFUSES: &str = "a restore would refuse it, so the backup does too";

pub enum Node<'a> {
    Dir,
    File(FileAt<'a>),
    /// The link's target, as bytes.
    Symlink(&'a [u8]),
}

/// One entry of the walk.
pub struct Entry<'a> {
    /// The tar name: `./` and the path; a directory's ends in `/`, the root's is `./`.
    pub name: &'a [u8],
    /// Its `lstat`, or for a directory the `fstat` of the descriptor it is read through.
    pub stat: &'a FileStat,
    /// Its path, for messages.
    pub path: &'a Path,
    pub node: Node<'a>,
}

/// A regular file as listed, to be opened.
pub struct FileAt<'a> {
    dir: &'a Dir,
    name: &'a CStr,
    listed: &'a FileStat,
    path: &'a Path,
}

impl FileAt<'_> {
    /// Opens the file listed, and refuses what now stands in its place (another file, a link,
    /// a FIFO, a device): the descriptor returned is the listed file's, with its `fstat`.
    pub fn open(&self) -> Result<(File, FileStat), TarWriteError> {
        let flags = OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY
            | OFlag::O_CLOEXEC;
        let fd = fcntl::openat(self.dir, self.name, flags, Mode::empty())
            .map_err(|e| self.vanished_or(e))?;
        let opened = stat::fstat(&fd).map_err(|e| read_error(self.path, e))?;
        if !is(&opened, SFlag::S_IFREG) || !same_file(self.listed, &opened) {
            return Err(replaced(self.path));
        }
        // Reads of a regular file never block anyway; cleared so the descriptor is plain.
        // F_SETFL sets only the status flags, of which this open asked for O_NONBLOCK alone.
        fcntl::fcntl(&fd, FcntlArg::F_SETFL(OFlag::empty()))
            .map_err(|e| read_error(self.path, e))?;
        Ok((File::from(fd), opened))
    }

    fn vanished_or(&self, e: Errno) -> TarWriteError {
        match e {
            // Now a symlink.
            Errno::ELOOP => replaced(self.path),
            Errno::ENOENT => TarWriteError::Unsupported {
                path: self.path.to_path_buf(),
                why: "it was removed while the artifact was being read (is the job still writing it?)"
                    .to_string(),
            },
            e => read_error(self.path, e),
        }
    }
}

/// Walks `root`, handing `visit` every entry: the root first, then each directory's entries
/// in byte order of their names, a directory's contents right after it.
pub fn walk(
    root: &Path,
    visit: &mut dyn FnMut(Entry<'_>) -> Result<(), TarWriteError>,
) -> Result<(), TarWriteError> {
    walk_from(root, Beneath::Untried, visit)
}

fn walk_from(
    root: &Path,
    beneath: Beneath,
    visit: &mut dyn FnMut(Entry<'_>) -> Result<(), TarWriteError>,
) -> Result<(), TarWriteError> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = fcntl::open(root, flags, Mode::empty()).map_err(|e| match e {
        Errno::ELOOP | Errno::ENOTDIR => TarWriteError::Unsupported {
            path: root.to_path_buf(),
            why: "the job's artifact directory is not a directory (a symlink?)".to_string(),
        },
        e => read_error(root, e),
    })?;
    let stat = stat::fstat(&fd).map_err(|e| read_error(root, e))?;
    let root_fd = fd.try_clone().map_err(|source| TarWriteError::Read {
        path: root.to_path_buf(),
        source,
    })?;
    let mut walker = Walker {
        visit,
        root_fd,
        beneath,
        root: root.to_path_buf(),
        real_root: None,
        name: b"./".to_vec(),
        path: root.to_path_buf(),
        depth: 0,
    };
    (walker.visit)(Entry {
        name: &walker.name,
        stat: &stat,
        path: &walker.path,
        node: Node::Dir,
    })?;
    let dir = Dir::from_fd(fd).map_err(|e| read_error(root, e))?;
    walker.dir(dir)
}

/// Walks `root` as the tar writer would, reading no file: whether a backup of it is possible,
/// and the length of the tar the writer would make of it as it stands (the total of a copy's
/// progress bar): headers, data padded to blocks, the archive's end.
pub fn tar_len(root: &Path) -> Result<u64, TarWriteError> {
    let mut len: u64 = 0;
    walk(root, &mut |entry| {
        let (link, size) = match entry.node {
            Node::Dir => (0, 0),
            Node::Symlink(target) => (target.len(), 0),
            Node::File(_) => (0, u64::try_from(entry.stat.st_size).unwrap_or(0)),
        };
        len = len.saturating_add(super::gnu_header::entry_len(entry.name.len(), link, size));
        Ok(())
    })?;
    Ok(len.saturating_add(super::gnu_header::end_of_archive(len) as u64))
}

struct Walker<'v> {
    visit: &'v mut dyn FnMut(Entry<'_>) -> Result<(), TarWriteError>,
    /// The root, for resolving links below it in the kernel.
    root_fd: std::os::fd::OwnedFd,
    beneath: Beneath,
    /// The root's path, as given.
    root: PathBuf,
    /// The root with every symlink resolved, for judging where links lead without openat2:
    /// found at the first link that needs it (most artifacts have none, and the lookup is a
    /// `readlink` for every component of the root's path).
    real_root: Option<PathBuf>,
    /// The tar name of the current entry (while in a directory: its name, ending in `/`).
    name: Vec<u8>,
    /// The path of the current entry.
    path: PathBuf,
    /// How many directories below the root the current one is.
    depth: usize,
}

impl Walker<'_> {
    /// Every entry of `dir`, whose tar name and path are the current ones.
    fn dir(&mut self, mut dir: Dir) -> Result<(), TarWriteError> {
        let mut names: Vec<CString> = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(|e| read_error(&self.path, e))?;
            let name = entry.file_name();
            if name != c"." && name != c".." {
                names.push(name.to_owned());
            }
        }
        names.sort_unstable();
        for name in names {
            if crate::interrupt::is_interrupted() {
                return Err(TarWriteError::Interrupted);
            }
            let mark = self.name.len();
            self.name.extend_from_slice(name.to_bytes());
            self.path.push(OsStr::from_bytes(name.to_bytes()));
            let result = self.entry(&dir, &name);
            self.name.truncate(mark);
            self.path.pop();
            result?;
        }
        Ok(())
    }

    fn entry(&mut self, dir: &Dir, name: &CStr) -> Result<(), TarWriteError> {
        // A directory's name gets a `/` more.
        if self.name.len() + 1 > MAX_NAME {
            return Err(self.refused(format!(
                "its path is longer than {MAX_NAME} bytes; {RESTORE_REFUSES}"
            )));
        }
        let listed = stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| read_error(&self.path, e))?;
        if is(&listed, SFlag::S_IFDIR) {
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let fd = fcntl::openat(dir, name, flags, Mode::empty()).map_err(|e| match e {
                Errno::ELOOP | Errno::ENOTDIR | Errno::ENOENT => replaced(&self.path),
                e => read_error(&self.path, e),
            })?;
            let opened = stat::fstat(&fd).map_err(|e| read_error(&self.path, e))?;
            if !same_file(&listed, &opened) {
                return Err(replaced(&self.path));
            }
            self.name.push(b'/');
            (self.visit)(Entry {
                name: &self.name,
                stat: &opened,
                path: &self.path,
                node: Node::Dir,
            })?;
            if self.depth >= MAX_DEPTH {
                return Err(self.refused(format!(
                    "its directories nest more than {MAX_DEPTH} deep, more than an artifact may"
                )));
            }
            let child = Dir::from_fd(fd).map_err(|e| read_error(&self.path, e))?;
            self.depth += 1;
            let result = self.dir(child);
            self.depth -= 1;
            result
        } else if is(&listed, SFlag::S_IFREG) {
            (self.visit)(Entry {
                name: &self.name,
                stat: &listed,
                path: &self.path,
                node: Node::File(FileAt {
                    dir,
                    name,
                    listed: &listed,
                    path: &self.path,
                }),
            })
        } else if is(&listed, SFlag::S_IFLNK) {
            let target = fcntl::readlinkat(dir, name).map_err(|e| read_error(&self.path, e))?;
            self.check_symlink(target.as_bytes())?;
            (self.visit)(Entry {
                name: &self.name,
                stat: &listed,
                path: &self.path,
                node: Node::Symlink(target.as_bytes()),
            })
        } else {
            Err(self.refused(format!(
                "it is a device, FIFO or socket, which an artifact cannot hold; {RESTORE_REFUSES}"
            )))
        }
    }

    /// A link whose target, by name, stays inside the job's directory, and that on the
    /// filesystem resolves inside it or to nothing (a dangling link is judged by its name).
    fn check_symlink(&mut self, target: &[u8]) -> Result<(), TarWriteError> {
        let path = &self.path;
        let refuse = |why: &str| TarWriteError::Unsupported {
            path: path.clone(),
            why: format!("{why}; {RESTORE_REFUSES}"),
        };
        let entry = check_entry(Path::new(OsStr::from_bytes(&self.name))).map_err(refuse)?;
        check_symlink_target(&entry, Path::new(OsStr::from_bytes(target))).map_err(refuse)?;
        if self.beneath != Beneath::Missing {
            match self.resolve_beneath() {
                Err(Errno::ENOSYS | Errno::EPERM) if self.beneath == Beneath::Untried => {
                    self.beneath = Beneath::Missing;
                }
                Ok(()) | Err(Errno::ENOENT | Errno::ENOTDIR) => {
                    self.beneath = Beneath::Works;
                    return Ok(());
                }
                Err(Errno::EXDEV) => {
                    return Err(refuse(
                        "it is a symlink that, through other symlinks, leads outside the job's directory",
                    ));
                }
                Err(e) => {
                    return Err(refuse(&format!(
                        "it is a symlink that cannot be followed to its end ({})",
                        io::Error::from(e)
                    )));
                }
            }
        }
        if self.real_root.is_none() {
            let root = &self.root;
            self.real_root =
                Some(
                    fs::canonicalize(root).map_err(|source| TarWriteError::Read {
                        path: root.clone(),
                        source,
                    })?,
                );
        }
        let real_root = self.real_root.as_deref().expect("found above");
        match fs::canonicalize(&self.path) {
            Ok(resolved) if !resolved.starts_with(real_root) => Err(refuse(
                "it is a symlink that, through other symlinks, leads outside the job's directory",
            )),
            Ok(_) => Ok(()),
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(Errno::ENOTDIR as i32) =>
            {
                Ok(())
            }
            // Too many links (a chain of them), a name too long: a restore cannot follow it
            // either.
            Err(e) => Err(refuse(&format!(
                "it is a symlink that cannot be followed to its end ({e})"
            ))),
        }
    }

    /// Follows the current entry, a symlink, in the kernel, which refuses (EXDEV) to leave
    /// the root on the way, as a restore's check does, and gives up after 40 links (ELOOP):
    /// one system call, where `realpath` takes one per component of the absolute path.
    fn resolve_beneath(&self) -> Result<(), Errno> {
        let relative = OsStr::from_bytes(&self.name[2..]);
        let how = fcntl::OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
            .resolve(fcntl::ResolveFlag::RESOLVE_BENEATH);
        fcntl::openat2(&self.root_fd, relative, how).map(drop)
    }

    fn refused(&self, why: String) -> TarWriteError {
        TarWriteError::Unsupported {
            path: self.path.clone(),
            why,
        }
    }
}

/// Whether the kernel has `openat2` (Linux 5.6 on): learnt from the first symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Beneath {
    Untried,
    Works,
    /// Not there (or forbidden by a seccomp filter): `realpath` instead.
    Missing,
}

fn is(stat: &FileStat, kind: SFlag) -> bool {
    SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits()) == kind
}

fn same_file(a: &FileStat, b: &FileStat) -> bool {
    (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
}

fn replaced(path: &Path) -> TarWriteError {
    TarWriteError::Unsupported {
        path: path.to_path_buf(),
        why: "it was replaced by something else (another file, a link, a FIFO) while the artifact was being read; a backup holds only what the job wrote"
            .to_string(),
    }
}

fn read_error(path: &Path, e: Errno) -> TarWriteError {
    TarWriteError::Read {
        path: path.to_path_buf(),
        source: io::Error::from(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::symlink;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Walks `root`, doing `before_open` to each file's path before the file is opened;
    /// returns the names and contents read, or the refusal.
    fn read_all(
        root: &Path,
        before_open: &dyn Fn(&Path),
    ) -> Result<Vec<(String, Vec<u8>)>, TarWriteError> {
        let mut read = Vec::new();
        walk(root, &mut |entry| {
            if let Node::File(file) = entry.node {
                before_open(entry.path);
                let (mut f, _) = file.open()?;
                let status = fcntl::fcntl(&f, FcntlArg::F_GETFL).unwrap();
                assert_eq!(
                    status & OFlag::O_NONBLOCK.bits(),
                    0,
                    "O_NONBLOCK is cleared"
                );
                let mut data = Vec::new();
                f.read_to_end(&mut data).unwrap();
                read.push((String::from_utf8_lossy(entry.name).into_owned(), data));
            }
            Ok(())
        })
        .map(|()| read)
    }

    fn refusal(result: Result<Vec<(String, Vec<u8>)>, TarWriteError>) -> String {
        match result {
            Err(e) => e.to_string(),
            Ok(read) => panic!("accepted, and read {read:?}"),
        }
    }

    #[test]
    fn the_tar_length_is_the_length_of_the_tar_written() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(root.join("small"), "x").unwrap();
        fs::write(root.join("blocks"), vec![7u8; 1536]).unwrap();
        let deep = format!("{}/{}", "d".repeat(90), "e".repeat(90));
        fs::create_dir_all(root.join(&deep)).unwrap();
        fs::write(root.join(&deep).join("f".repeat(120)), vec![1u8; 70_000]).unwrap();
        std::os::unix::fs::symlink("f".repeat(150), root.join("link")).unwrap();
        let mut tar = Vec::new();
        super::super::tar_writer::write_tar_as(
            root,
            &mut tar,
            super::super::digest::DigestKind::Sha256,
        )
        .unwrap();
        assert_eq!(tar_len(root).unwrap(), tar.len() as u64);
    }

    #[test]
    fn files_are_read_in_name_order_directories_before_their_contents() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("b/c")).unwrap();
        fs::write(dir.path().join("b/c/f"), "deep").unwrap();
        fs::write(dir.path().join("a"), "a").unwrap();
        symlink("a", dir.path().join("l")).unwrap();
        let mut names = Vec::new();
        walk(dir.path(), &mut |e| {
            names.push(String::from_utf8_lossy(e.name).into_owned());
            Ok(())
        })
        .unwrap();
        assert_eq!(names, ["./", "./a", "./b/", "./b/c/", "./b/c/f", "./l"]);
        let read = read_all(dir.path(), &|_| {}).unwrap();
        assert_eq!(read[1], ("./b/c/f".to_string(), b"deep".to_vec()));
    }

    #[test]
    fn a_file_exchanged_for_another_between_listing_and_opening_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("data"), "the job's data").unwrap();
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret");
        fs::write(&secret, "someone else's bytes").unwrap();
        let exchange = |path: &Path| {
            fcntl::renameat2(
                fcntl::AT_FDCWD,
                path,
                fcntl::AT_FDCWD,
                secret.as_path(),
                fcntl::RenameFlags::RENAME_EXCHANGE,
            )
            .unwrap()
        };
        let why = refusal(read_all(dir.path(), &exchange));
        assert!(why.contains("/data: it was replaced"), "{why}");
    }

    #[test]
    fn a_fifo_put_in_place_of_a_file_is_refused_and_never_blocks_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        fs::write(root.join("data"), "x").unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let to_fifo = |path: &Path| {
                fs::remove_file(path).unwrap();
                nix::unistd::mkfifo(path, Mode::from_bits_truncate(0o600)).unwrap();
            };
            let _ = tx.send(refusal(read_all(&root, &to_fifo)));
        });
        let why = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("opening the FIFO blocked");
        assert!(why.contains("/data: it was replaced"), "{why}");
    }

    #[test]
    fn a_fifo_and_a_symlink_chain_too_long_to_follow_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        nix::unistd::mkfifo(&dir.path().join("pipe"), Mode::from_bits_truncate(0o600)).unwrap();
        let why = tar_len(dir.path()).unwrap_err().to_string();
        assert!(
            why.contains("/pipe: it is a device, FIFO or socket"),
            "{why}"
        );

        // a1 -> a0/a0 -> ./. : each level doubles the links a resolution follows.
        let dir = tempfile::tempdir().unwrap();
        symlink(".", dir.path().join("a0")).unwrap();
        for i in 1..=8 {
            symlink(
                format!("a{0}/a{0}", i - 1),
                dir.path().join(format!("a{i}")),
            )
            .unwrap();
        }
        let why = tar_len(dir.path()).unwrap_err().to_string();
        assert!(why.contains("cannot be followed to its end"), "{why}");
        assert!(why.contains("a restore would refuse it"), "{why}");
    }

    #[test]
    fn a_link_leading_outside_through_other_links_is_refused_with_or_without_openat2() {
        for beneath in [Beneath::Untried, Beneath::Missing] {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("job");
            fs::create_dir(&root).unwrap();
            fs::write(root.join("a"), "a").unwrap();
            symlink(".", root.join("dot")).unwrap();
            symlink("dot/a", root.join("inside")).unwrap();
            symlink("dot/nothing", root.join("dangling")).unwrap();
            walk_from(&root, beneath, &mut |_| Ok(())).unwrap();

            // Each target alone stays inside; through `dot` it is the directory above.
            symlink("dot/..", root.join("up")).unwrap();
            let why = walk_from(&root, beneath, &mut |_| Ok(()))
                .unwrap_err()
                .to_string();
            assert!(
                why.contains("/up: it is a symlink that, through other symlinks, leads outside"),
                "{beneath:?}: {why}"
            );

            fs::remove_file(root.join("up")).unwrap();
            symlink(".", root.join("b0")).unwrap();
            for i in 1..=8 {
                symlink(format!("b{0}/b{0}", i - 1), root.join(format!("b{i}"))).unwrap();
            }
            let why = walk_from(&root, beneath, &mut |_| Ok(()))
                .unwrap_err()
                .to_string();
            assert!(
                why.contains("cannot be followed to its end"),
                "{beneath:?}: {why}"
            );
        }
    }

    #[test]
    fn an_artifact_directory_that_is_a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("real")).unwrap();
        symlink("real", dir.path().join("job")).unwrap();
        let why = tar_len(&dir.path().join("job")).unwrap_err().to_string();
        assert!(why.contains("not a directory"), "{why}");
    }

    /// A tree `levels` directories deep, made relative to its root so no path is long.
    fn nested(root: &Path, levels: usize) {
        let mut at = root.to_path_buf();
        for _ in 0..levels {
            at.push("a");
        }
        fs::create_dir_all(&at).unwrap();
        fs::write(at.join("f"), "x").unwrap();
    }

    /// A backup script can leave a tree thousands of levels deep within PATH_MAX: refused at
    /// the bound, with a message, instead of the walk overflowing its thread's stack (which
    /// aborted the agent with every job locked). Run on a thread with a 2 MiB stack, as the
    /// check runs for each of several jobs.
    #[test]
    fn directories_nested_past_the_bound_are_refused_and_not_a_stack_overflow() {
        let dir = tempfile::tempdir().unwrap();
        let (deep, bound) = (dir.path().join("deep"), dir.path().join("bound"));
        nested(&deep, 2000);
        nested(&bound, MAX_DEPTH);
        let (deep_result, bound_result) = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || (tar_len(&deep).map_err(|e| e.to_string()), tar_len(&bound)))
            .unwrap()
            .join()
            .unwrap();
        let why = deep_result.unwrap_err();
        assert!(why.contains("nest more than 128 deep"), "{why}");
        assert!(
            bound_result.is_ok(),
            "{:?}",
            bound_result.err().map(|e| e.to_string())
        );
    }
}
