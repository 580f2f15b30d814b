//! Starting a process with `posix_spawn`: a script (clean environment, its job's directory,
//! stdin `/dev/null`) or the driver's session command (stdin a pipe); always in its own
//! process group, with stdout and stderr on pipes and no other descriptor inherited.
//!
//! Not `std::process::Command`: in a static glibc binary std cannot find glibc's version
//! at run time, so it never uses `posix_spawn` and forks the whole process (page tables,
//! copy-on-write faults, then exec throws it all away) for every child. glibc's
//! `posix_spawn` shares the parent's memory until the exec (`CLONE_VM | CLONE_VFORK`), which
//! costs a fraction of a fork. See docs/benchmarks.md (fleet).

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
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

/// What to start.
pub struct Spawn<'a> {
    pub program: &'a Path,
    /// The arguments after the program's own name.
    pub args: &'a [&'a OsStr],
    /// Exactly these variables; `None`: this process's own environment.
    pub env: Option<&'a [(String, String)]>,
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

impl Spawn<'_> {
    /// Starts the process as the leader of a new process group.
    pub fn start(&self) -> io::Result<Spawned> {
        let program = c_string(self.program.as_os_str())?;
        let mut argv = vec![program.clone()];
        for arg in self.args {
            argv.push(c_string(arg)?);
        }
        let envp = match self.env {
            Some(env) => env
                .iter()
                .map(|(k, v)| c_string(OsStr::new(&format!("{k}={v}"))))
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

        let mut actions = PosixSpawnFileActions::init()?;
        actions.add_dup2(stdin_child.as_raw_fd(), 0)?;
        actions.add_dup2(stdout_write.as_raw_fd(), 1)?;
        actions.add_dup2(stderr_write.as_raw_fd(), 2)?;
        // What this process opened is close-on-exec, but not what it inherited without the
        // flag (from an SSH session, a shell): sudo, which runs BBR's scripts, closes
        // everything from 3 up, so we do too. A script's daemon must not hold, say, a
        // protocol pipe open.
        raw_action(&mut actions, |raw| unsafe {
            // SAFETY: see `raw_action`; this one takes only the lowest descriptor to close.
            libc::posix_spawn_file_actions_addclosefrom_np(raw, 3)
        })?;
        if let Some(dir) = &dir {
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

        // ETXTBSY: another thread of this process may be starting a child while holding a
        // just-written script open for writing; the window is short, so try again briefly.
        let mut attempts = 0;
        let pid = loop {
            let spawned = if self.search_path {
                posix_spawnp(program.as_c_str(), &actions, &attr, &argv, &envp)
            } else {
                posix_spawn(program.as_c_str(), &actions, &attr, &argv, &envp)
            };
            match spawned {
                Err(Errno::ETXTBSY) if attempts < 20 => {
                    attempts += 1;
                    thread::sleep(Duration::from_millis(25));
                }
                result => break result?,
            }
        };
        Ok(Spawned {
            pid,
            stdin: stdin_ours,
            stdout: File::from(stdout_read),
            stderr: File::from(stderr_read),
        })
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
