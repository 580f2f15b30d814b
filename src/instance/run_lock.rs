//! One run at a time per VM: an exclusive `flock` on `<run-dir>/lock`, taken by every command
//! that runs scripts or touches the store, held until the process exits. The kernel drops it
//! when the holder dies, so a crashed run never leaves it stale. The file names the holder,
//! so a refusal can say who holds it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

#[derive(Debug, thiserror::Error)]
pub enum RunLockError {
    #[error(
        "another bbr-agent run holds this VM: {holder} (lock {path}); wait for it to finish, or stop it: its own signal handling unlocks what it locked"
    )]
    Busy { path: PathBuf, holder: String },
    #[error("cannot take the run lock {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// The held lock; dropping it releases it.
#[derive(Debug)]
pub struct RunLock {
    _file: Flock<File>,
}

/// Takes the VM's run lock without waiting.
pub fn acquire(run_dir: &Path) -> Result<RunLock, RunLockError> {
    let path = run_dir.join("lock");
    let io_err = |source| RunLockError::Io {
        path: path.clone(),
        source,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(run_dir)
        .map_err(io_err)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io_err)?;
    let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(locked) => locked,
        Err((mut file, Errno::EWOULDBLOCK)) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim().replace('\n', " ");
            return Err(RunLockError::Busy {
                path,
                holder: if holder.is_empty() {
                    "a process that has not yet written its name".to_string()
                } else {
                    holder
                },
            });
        }
        Err((_, errno)) => return Err(io_err(io::Error::from(errno))),
    };
    let me = format!(
        "pid {} (`{}`)\n",
        std::process::id(),
        crate::printable::this_command_line()
    );
    // Over the last holder's line, then cut to this one's length: emptying the file first
    // (set_len(0), then a write) made ext4 free its block (a discard, on this disk) and
    // allocate another, and write the file back at its close (auto_da_alloc: a file truncated
    // to 0 and rewritten), once a session. Only a holder's line is ever read here (by a
    // refused run, while the lock is held), and a dead holder holds no lock.
    file.write_all_at(me.as_bytes(), 0).map_err(io_err)?;
    file.set_len(me.len() as u64).map_err(io_err)?;
    Ok(RunLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_name() {
        let dir = tempfile::tempdir().unwrap();
        let first = acquire(dir.path()).unwrap();
        // flock locks belong to the open file description, so a second open in the same
        // process conflicts just as another process would.
        let err = acquire(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        assert!(acquire(dir.path()).is_ok(), "released on drop");
    }

    /// The line is written over the last holder's, and nothing of a longer one is left after
    /// it.
    #[test]
    fn a_new_holders_line_replaces_a_longer_one_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let stale = format!("pid 4294967 (`{}`)\n", "x".repeat(5000));
        fs::write(&path, &stale).unwrap();
        let lock = acquire(dir.path()).unwrap();
        let line = fs::read_to_string(&path).unwrap();
        assert_eq!(
            line,
            format!(
                "pid {} (`{}`)\n",
                std::process::id(),
                crate::printable::this_command_line()
            )
        );
        drop(lock);
    }
}
