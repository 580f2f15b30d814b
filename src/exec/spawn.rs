//! Starting a process with `posix_spawn`: a script (clean environment, its job's directory,
//! stdin `/dev/null`) or the driver's session command (stdin a pipe); always in its own
//! process group, with stdout and stderr on pipes and no other descriptor inherited.
//!
//! Not `std::process::Command`: in a static glibc binary std cannot find glibc's version
//! at run time, so it never uses `posix_spawn` and forks the whole process (page tables,
//! copy-on-write faults, then exec throws it all away) for every child. glibc's
//! `posix_spawn` shares the parent's memory until the exec (`CLONE_VM | CLONE_VFORK`), which
//! costs a fraction of a fork. See docs/benchmarks.md (fleet).

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::thread;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::libc;
use nix::spawn::{
    PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags, posix_spawn, posix_spawnp,
};
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::{Pid, pipe2};

use super::cgroup::Birth;

/// What to start.
pub struct Spawn<'a> {
    pub program: &'a Path,
    /// The arguments after the program's own name.
    pub args: &'a [&'a OsStr],
    /// Exactly these variables; `None`: this process's own environment.
    pub env: Option<&'a [(String, OsString)]>,
    /// `None`: this process's working directory.
    pub working_dir: Option<&'a Path>,
    /// Whether stdin is a pipe (`Spawned::stdin`) rather than `/dev/null`.
    pub stdin_pipe: bool,
    /// Whether a `program` without a `/` is looked up in `PATH`, as a shell would.
    pub search_path: bool,
}

/// A started process: the leader of its own process group, and our ends of its pipes.
pub struct Spawned {
    pub pid: Pid,
    pub stdin: Option<File>,
    pub stdout: File,
    pub stderr: File,
}

/// What `Spawn::start` prepares before it starts the child: its arguments, environment and
/// directory as C strings, and both ends of its pipes.
pub(super) struct Prepared {
    pub(super) program: CString,
    pub(super) argv: Vec<CString>,
    pub(super) envp: Vec<CString>,
    pub(super) dir: Option<CString>,
    /// The child's stdin, stdout and stderr (close-on-exec here, dup'ed to 0, 1, 2 there).
    pub(super) child_fds: [File; 3],
    stdin_ours: Option<File>,
    stdout_ours: File,
    stderr_ours: File,
}

impl Prepared {
    fn into_spawned(self, pid: Pid) -> Spawned {
        Spawned {
            pid,
            stdin: self.stdin_ours,
            stdout: self.stdout_ours,
            stderr: self.stderr_ours,
        }
    }
}

impl Spawn<'_> {
    /// Starts the process as the leader of a new process group.
    pub fn start(&self) -> io::Result<Spawned> {
        let prepared = self.prepare()?;
        let pid = retry_busy(|| self.posix_spawn(&prepared))?;
        Ok(prepared.into_spawned(pid))
    }

    /// Starts the process as `start` does, but born in the cgroup `cgroup` (a directory
    /// descriptor) without this process entering it (`clone_into`). An error of kind
    /// `Unsupported`: the kernel cannot, and nothing was started.
    pub(super) fn start_in_cgroup(&self, cgroup: BorrowedFd<'_>) -> io::Result<Spawned> {
        // posix_spawnp looks it up; this start only, not every later one.
        if self.search_path {
            return Err(super::clone_into::not_this_cgroup(Errno::ENOEXEC));
        }
        let prepared = self.prepare()?;
        let pid = retry_busy(|| super::clone_into::spawn(&prepared, cgroup))?;
        Ok(prepared.into_spawned(pid))
    }

    /// Starts it as `birth` says: into a cgroup (`start_in_cgroup`), else a plain `start`.
    pub(super) fn start_born(&self, birth: Birth<'_>) -> io::Result<Spawned> {
        match birth {
            Birth::Into(cgroup) => self.start_in_cgroup(cgroup),
            Birth::Moved | Birth::Outside => self.start(),
        }
    }

    fn prepare(&self) -> io::Result<Prepared> {
        let program = c_string(self.program.as_os_str())?;
        let mut argv = vec![program.clone()];
        for arg in self.args {
            argv.push(c_string(arg)?);
        }
        let envp = match self.env {
            Some(env) => env
                .iter()
                .map(|(k, v)| {
                    let mut pair = OsString::from(k);
                    pair.push("=");
                    pair.push(v);
                    c_string(&pair)
                })
                .collect::<io::Result<Vec<_>>>()?,
            None => std::env::vars_os()
                .map(|(k, v)| {
                    let mut pair = k;
                    pair.push("=");
                    pair.push(v);
                    c_string(&pair)
                })
                .collect::<io::Result<Vec<_>>>()?,
        };
        let dir = self
            .working_dir
            .map(|d| c_string(d.as_os_str()))
            .transpose()?;

        let (stdin_child, stdin_ours) = if self.stdin_pipe {
            let (read, write) = pipe2(OFlag::O_CLOEXEC)?;
            (File::from(read), Some(File::from(write)))
        } else {
            (File::open("/dev/null")?, None)
        };
        let (stdout_read, stdout_write) = pipe2(OFlag::O_CLOEXEC)?;
        let (stderr_read, stderr_write) = pipe2(OFlag::O_CLOEXEC)?;
        Ok(Prepared {
            program,
            argv,
            envp,
            dir,
            child_fds: [
                stdin_child,
                File::from(stdout_write),
                File::from(stderr_write),
            ],
            stdin_ours,
            stdout_ours: File::from(stdout_read),
            stderr_ours: File::from(stderr_read),
        })
    }

    fn posix_spawn(&self, prepared: &Prepared) -> io::Result<Pid> {
        let mut actions = PosixSpawnFileActions::init()?;
        for (fd, file) in prepared.child_fds.iter().enumerate() {
            actions.add_dup2(file.as_raw_fd(), fd as i32)?;
        }
        // What this process opened is close-on-exec, but not what it inherited without the
        // flag (from an SSH session, a shell): sudo, which runs BBR's scripts, closes
        // everything from 3 up, so we do too. A script's daemon must not hold, say, a
        // protocol pipe open.
        raw_action(&mut actions, |raw| unsafe {
            // SAFETY: see `raw_action`; this one takes only the lowest descriptor to close.
            libc::posix_spawn_file_actions_addclosefrom_np(raw, 3)
        })?;
        if let Some(dir) = &prepared.dir {
            raw_action(&mut actions, |raw| unsafe {
                // SAFETY: see `raw_action`; glibc copies `dir`, which is NUL-terminated and
                // outlives the call.
                libc::posix_spawn_file_actions_addchdir_np(raw, dir.as_ptr())
            })?;
        }

        let mut attr = PosixSpawnAttr::init()?;
        attr.set_flags(
            PosixSpawnFlags::POSIX_SPAWN_SETPGROUP
                | PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK
                | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF,
        )?;
        attr.set_pgroup(Pid::from_raw(0))?;
        attr.set_sigmask(&SigSet::empty())?;
        // Every signal back to its default: Rust ignores SIGPIPE, and a signal the agent was
        // started with ignored (nohup's SIGHUP) must not stay ignored in a script.
        attr.set_sigdefault(&every_catchable_signal())?;
        let program = prepared.program.as_c_str();
        Ok(if self.search_path {
            posix_spawnp(program, &actions, &attr, &prepared.argv, &prepared.envp)?
        } else {
            posix_spawn(program, &actions, &attr, &prepared.argv, &prepared.envp)?
        })
    }
}

/// ETXTBSY: another thread of this process may be starting a child while holding a
/// just-written script open for writing; the window is short, so `start` tries again briefly.
fn retry_busy(mut start: impl FnMut() -> io::Result<Pid>) -> io::Result<Pid> {
    let mut attempts = 0;
    loop {
        match start() {
            Err(e) if e.raw_os_error() == Some(Errno::ETXTBSY as i32) && attempts < 20 => {
                attempts += 1;
                thread::sleep(Duration::from_millis(25));
            }
            result => return result,
        }
    }
}

/// glibc's two internal signals (SIGCANCEL 32, SIGSETXID 33), which `sigfillset` and
/// `sigaddset` leave out of every set.
const GLIBC_INTERNAL_SIGNALS: [usize; 2] = [32, 33];

/// Every signal but SIGKILL and SIGSTOP, glibc's internal ones included. glibc's
/// `posix_spawn` sets a signal that is not in the "default" set, and that it blocked for the
/// spawn (it blocks all), to SIG_IGN when the signal is internal, and an ignored signal stays
/// ignored across exec: without 32 and 33 here every script, and everything it starts,
/// would run with them ignored, which is not what sudo gives.
fn every_catchable_signal() -> SigSet {
    let mut set = SigSet::all();
    set.remove(Signal::SIGKILL);
    set.remove(Signal::SIGSTOP);
    let mut raw: libc::sigset_t = *set.as_ref();
    let word_bits = 8 * std::mem::size_of::<libc::c_ulong>();
    let words = (&mut raw as *mut libc::sigset_t).cast::<libc::c_ulong>();
    for signal in GLIBC_INTERNAL_SIGNALS {
        let (word, bit) = ((signal - 1) / word_bits, (signal - 1) % word_bits);
        // SAFETY: glibc's `sigset_t` is an array of `unsigned long` (1024 bits) with signal n
        // at bit n - 1; `word` is 0 for these signals, inside the array, and `raw` is a local
        // that outlives the write. (`sigaddset` refuses these two signals by design.)
        unsafe { *words.add(word) |= 1 << bit };
    }
    // SAFETY: `raw` is a valid, initialised signal set (a copy of one, with two more bits).
    unsafe { SigSet::from_sigset_t_unchecked(raw) }
}

fn c_string(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} contains a NUL byte", s.to_string_lossy()),
        )
    })
}

/// Adds a file action that nix does not wrap (`addchdir_np`, glibc 2.29; `addclosefrom_np`,
/// glibc 2.34; the binary carries its own glibc, so the VM's does not matter).
fn raw_action(
    actions: &mut PosixSpawnFileActions,
    add: impl FnOnce(*mut libc::posix_spawn_file_actions_t) -> libc::c_int,
) -> io::Result<()> {
    // `PosixSpawnFileActions` is `#[repr(transparent)]` over an initialised
    // `posix_spawn_file_actions_t`, so this points at one, borrowed mutably for the call.
    let raw = (actions as *mut PosixSpawnFileActions).cast::<libc::posix_spawn_file_actions_t>();
    match add(raw) {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}
