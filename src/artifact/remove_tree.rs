//! Removing a directory tree on several threads: the store at the end of a run.
//!
//! Unlinking is kernel work (freeing blocks, dropping cached pages), and a restore store holds
//! as many files as the artifact, and two removals side by side finish sooner than one (see
//! docs/benchmarks.md, "Figures behind the code"). So the tree is cut into pieces a few levels
//! down, threads take the pieces one by one, and the emptied directories above
//! them go last, deepest first.
//!
//! Everything below the root is reached through directory descriptors opened with
//! `O_NOFOLLOW` and removed with `unlinkat`, never by path: a directory swapped for a symlink
//! while the tree is removed cannot lead the removal outside it. Something that vanishes
//! meanwhile is taken as removed; something that appears in a directory being emptied is
//! removed with it.
//!
//! A script can nest directories as deep as it likes (by `cd`, no path is ever long), and the
//! removal holds a descriptor and a stack frame per level: so a directory [`MAX_HELD`] levels
//! down is first moved up to the root (`renameat2`, no replacing, on the same descriptors)
//! and removed from there afterwards. No tree is too deep to remove.

use std::ffi::{CStr, CString};
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, RenameFlags, open, openat, renameat2};
use nix::sys::stat::{Mode, SFlag, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

/// Enough pieces that threads finishing at different times still share the work.
const PIECES: usize = 64;
/// How far down the tree is cut.
const DEPTH: usize = 3;
/// Threads at most, whatever the machine.
const MAX_THREADS: usize = 4;
/// Pieces this few are removed on the calling thread alone: a fleet's empty stores (a
/// directory per job) are not worth a thread, nor the look at the machine's cores (which
/// reads the cgroup's CPU quota).
const FEW: usize = 16;
/// The most directory levels one removal descends (descriptors held, stack frames) before it
/// moves the rest up to the root.
const MAX_HELD: usize = 128;

/// The root, where directories too deep to descend into are moved, and what was moved.
struct Lift {
    root: Arc<OwnedFd>,
    moved: Mutex<Vec<Entry>>,
    count: AtomicUsize,
}

/// An entry to remove: a name in an open directory.
struct Entry {
    parent: Arc<OwnedFd>,
    name: CString,
    is_dir: bool,
}

/// Removes `root` and everything below it; a missing `root` is an error of kind `NotFound`.
pub fn remove_tree(root: &Path) -> io::Result<()> {
    if !fs::symlink_metadata(root)?.is_dir() {
        return fs::remove_file(root);
    }
    let root_fd = Arc::new(open_dir(None, root)?);
    let lift = Lift {
        root: Arc::clone(&root_fd),
        moved: Mutex::new(Vec::new()),
        count: AtomicUsize::new(0),
    };
    let (pieces, dirs) = cut(root_fd)?;
    let threads = match pieces.len() {
        n if n <= FEW => 1,
        n => thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, MAX_THREADS)
            .min(n),
    };
    let next = AtomicUsize::new(0);
    let first_error = Mutex::new(None);
    let work = || {
        while let Some(piece) = pieces.get(next.fetch_add(1, Ordering::Relaxed)) {
            if let Err(e) = remove_entry(piece, DEPTH, &lift) {
                first_error.lock().expect("error lock").get_or_insert(e);
            }
        }
    };
    thread::scope(|s| {
        // The calling thread is one of them; a thread the OS refuses is one fewer.
        for _ in 1..threads {
            if thread::Builder::new().spawn_scoped(s, work).is_err() {
                break;
            }
        }
        work();
    });
    if let Some(e) = first_error.into_inner().expect("error lock") {
        return Err(e);
    }
    // Deepest first: each is empty once the directories below it are gone.
    for dir in dirs.iter().rev() {
        remove_entry(dir, 0, &lift)?;
    }
    // What was too deep, moved up to the root: each removed from there, moving up in turn
    // what lies too deep below it.
    loop {
        let moved = std::mem::take(&mut *lift.moved.lock().expect("lift lock"));
        if moved.is_empty() {
            break;
        }
        for entry in &moved {
            remove_entry(entry, 0, &lift)?;
        }
    }
    match fs::remove_dir(root) {
        Err(e) if e.raw_os_error() == Some(Errno::ENOTEMPTY as i32) => fs::remove_dir_all(root),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// The pieces to remove (files, symlinks and whole subtrees), and the directories they hang
/// from, shallowest first: breadth first, a level at a time, until there are enough pieces.
fn cut(root: Arc<OwnedFd>) -> io::Result<(Vec<Entry>, Vec<Entry>)> {
    let mut dirs = Vec::new();
    let mut pieces = Vec::new();
    let mut level = vec![root];
    for depth in 1..=DEPTH {
        let mut subdirs = Vec::new();
        for dir in &level {
            for entry in list(dir)? {
                if entry.is_dir {
                    subdirs.push(entry);
                } else {
                    pieces.push(entry);
                }
            }
        }
        if depth == DEPTH || pieces.len() + subdirs.len() >= PIECES || subdirs.is_empty() {
            pieces.extend(subdirs);
            break;
        }
        level = Vec::new();
        for dir in subdirs {
            match open_dir(Some(&dir.parent), dir.name.as_c_str()) {
                Ok(fd) => {
                    level.push(Arc::new(fd));
                    dirs.push(dir);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                // Swapped for something else meanwhile: removed as what it is now.
                Err(_) => pieces.push(Entry {
                    is_dir: false,
                    ..dir
                }),
            }
        }
    }
    Ok((pieces, dirs))
}

/// Removes an entry, `depth` levels below the root, and everything in it if it is a
/// directory; gone already is fine.
fn remove_entry(entry: &Entry, depth: usize, lift: &Lift) -> io::Result<()> {
    if !entry.is_dir {
        return match unlinkat(
            &*entry.parent,
            entry.name.as_c_str(),
            UnlinkatFlags::NoRemoveDir,
        ) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            // A directory now: emptied and removed as one.
            Err(Errno::EISDIR) => remove_entry(
                &Entry {
                    parent: Arc::clone(&entry.parent),
                    name: entry.name.clone(),
                    is_dir: true,
                },
                depth,
                lift,
            ),
            Err(e) => Err(e.into()),
        };
    }
    if depth >= MAX_HELD {
        return lift_up(entry, lift);
    }
    let dir = match open_dir(Some(&entry.parent), entry.name.as_c_str()) {
        Ok(fd) => Arc::new(fd),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        // A symlink or a file now: unlinked, never followed.
        Err(_) => {
            return remove_entry(
                &Entry {
                    parent: Arc::clone(&entry.parent),
                    name: entry.name.clone(),
                    is_dir: false,
                },
                depth,
                lift,
            );
        }
    };
    for child in list(&dir)? {
        remove_entry(&child, depth + 1, lift)?;
    }
    match unlinkat(
        &*entry.parent,
        entry.name.as_c_str(),
        UnlinkatFlags::RemoveDir,
    ) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Moves a directory too deep to descend into up to the root, to be removed from there.
fn lift_up(entry: &Entry, lift: &Lift) -> io::Result<()> {
    loop {
        let n = lift.count.fetch_add(1, Ordering::Relaxed);
        let name = CString::new(format!(".bbr-agent-deep-{n}")).expect("no NUL");
        match renameat2(
            &*entry.parent,
            entry.name.as_c_str(),
            &*lift.root,
            name.as_c_str(),
            RenameFlags::RENAME_NOREPLACE,
        ) {
            Ok(()) => {
                lift.moved.lock().expect("lift lock").push(Entry {
                    parent: Arc::clone(&lift.root),
                    name,
                    is_dir: true,
                });
                return Ok(());
            }
            Err(Errno::EEXIST) => continue,
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

/// The entries of an open directory, without `.` and `..`.
fn list(dir: &Arc<OwnedFd>) -> io::Result<Vec<Entry>> {
    let mut stream = Dir::from_fd(dir.try_clone()?)?;
    let mut entries = Vec::new();
    for item in stream.iter() {
        let item = item?;
        let name = item.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let is_dir = match item.file_type() {
            Some(kind) => kind == Type::Directory,
            None => is_dir_at(dir, name)?,
        };
        entries.push(Entry {
            parent: Arc::clone(dir),
            name: name.to_owned(),
            is_dir,
        });
    }
    Ok(entries)
}

/// For file systems that do not say an entry's type in the listing.
fn is_dir_at(dir: &OwnedFd, name: &CStr) -> io::Result<bool> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR),
        Err(Errno::ENOENT) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Opens a directory without following a symlink in its last component.
fn open_dir(parent: Option<&OwnedFd>, path: &(impl nix::NixPath + ?Sized)) -> io::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let opened = match parent {
        Some(parent) => openat(parent, path, flags, Mode::empty()),
        None => open(path, flags, Mode::empty()),
    };
    opened.map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lift_to(root: &Arc<OwnedFd>) -> Lift {
        Lift {
            root: Arc::clone(root),
            moved: Mutex::new(Vec::new()),
            count: AtomicUsize::new(0),
        }
    }

    /// Nested ten times deeper than one removal descends: removed whole, the parts too deep
    /// moved up and removed from the root, and nothing beside the tree touched.
    #[test]
    fn a_tree_nested_far_deeper_than_one_removal_descends_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("beside"), b"kept").unwrap();
        let root = dir.path().join("store");
        // Made through descriptors, so no path grows long.
        let mut at = Arc::new({
            fs::create_dir(&root).unwrap();
            open_dir(None, &root).unwrap()
        });
        for _ in 0..MAX_HELD * 10 {
            nix::sys::stat::mkdirat(&*at, "d", Mode::from_bits_truncate(0o755)).unwrap();
            at = Arc::new(open_dir(Some(&at), "d").unwrap());
        }
        drop(at);
        remove_tree(&root).unwrap();
        assert!(fs::symlink_metadata(&root).is_err(), "the store is gone");
        assert_eq!(fs::read(dir.path().join("beside")).unwrap(), b"kept");
    }

    #[test]
    fn removes_a_deep_wide_tree_and_no_symlinks_target() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir_all(outside.join("keep")).unwrap();
        fs::write(outside.join("keep/file"), b"kept").unwrap();
        let root = dir.path().join("store");
        for a in 0..5 {
            for b in 0..30 {
                let leaf = root.join(format!("job{a}/d{b}/deeper/still"));
                fs::create_dir_all(&leaf).unwrap();
                fs::write(leaf.join("f"), b"x").unwrap();
                fs::write(root.join(format!("job{a}/d{b}/g")), b"y").unwrap();
            }
            fs::write(root.join(format!("job{a}/top")), b"z").unwrap();
        }
        fs::create_dir_all(root.join("empty/dirs/only")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("job0/link-to-outside")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("job1/d3/link")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("job2/d4/deeper/link")).unwrap();

        remove_tree(&root).unwrap();
        assert!(fs::symlink_metadata(&root).is_err(), "the store is gone");
        assert_eq!(fs::read(outside.join("keep/file")).unwrap(), b"kept");
    }

    #[test]
    fn a_directory_swapped_for_a_symlink_is_unlinked_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("precious"), b"kept").unwrap();
        let root = dir.path().join("store");
        fs::create_dir_all(root.join("job/sub")).unwrap();
        fs::write(root.join("job/sub/f"), b"x").unwrap();
        // What a swap between the listing and the removal leaves: a piece known as a
        // directory that is a symlink by the time it is removed.
        let parent = Arc::new(open_dir(None, &root.join("job")).unwrap());
        let piece = Entry {
            parent,
            name: CString::new("sub").unwrap(),
            is_dir: true,
        };
        fs::remove_dir_all(root.join("job/sub")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("job/sub")).unwrap();
        remove_entry(&piece, 0, &lift_to(&piece.parent)).unwrap();
        assert!(fs::symlink_metadata(root.join("job/sub")).is_err());
        assert_eq!(fs::read(outside.join("precious")).unwrap(), b"kept");
    }

    #[test]
    fn what_vanishes_meanwhile_counts_as_removed_and_a_missing_tree_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        fs::create_dir_all(root.join("job")).unwrap();
        let parent = Arc::new(open_dir(None, &root.join("job")).unwrap());
        for (name, is_dir) in [("gone-file", false), ("gone-dir", true)] {
            let piece = Entry {
                parent: Arc::clone(&parent),
                name: CString::new(name).unwrap(),
                is_dir,
            };
            remove_entry(&piece, 0, &lift_to(&parent)).unwrap();
        }
        remove_tree(&root).unwrap();
        let err = remove_tree(&root).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        let file = dir.path().join("file");
        fs::write(&file, b"x").unwrap();
        remove_tree(&file).unwrap();
        assert!(!file.exists());
    }
}
