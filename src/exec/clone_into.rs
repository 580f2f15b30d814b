//! Starting a script straight into its cgroup: `clone3` with `CLONE_INTO_CGROUP` (Linux 5.7),
//! so that the agent never moves itself into the script's cgroup and back (two writes to
//! `cgroup.procs`, each moving every thread of the agent and waiting for an RCU grace
//! period). glibc's `posix_spawn` has no cgroup attribute before 2.39 (Debian 12 has 2.36),
//! so this is a spawn of our own, doing in the child what `Spawn::start` asks of
//! `posix_spawn`: a new process group, stdin/stdout/stderr, no other descriptor, the working
//! directory, every signal at its default and none blocked, then `execve`.
//!
//! Without `CLONE_VM`: the child is a copy (a fork) of this process, so it runs on its own
//! copy of the stack and cannot corrupt the parent's memory; `CLONE_VFORK` holds this
//! thread until the child has exec'ed or exited. The child only makes system calls (no
//! allocation, no lock: other threads' locks are copied held). Why the exec failed reaches
//! the parent through a close-on-exec pipe. See docs/benchmarks.md ("Fleet CPU, stop 12").

use std::ffi::c_char;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::libc;
use nix::sys::wait::waitpid;
use nix::unistd::{Pid, pipe2};

use super::spawn::Prepared;

/// `CLONE_INTO_CGROUP` (linux/sched.h), not in the libc crate for glibc targets.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` as of Linux 5.7 (`CLONE_ARGS_SIZE_VER2`, 88 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Signals are numbered 1 to 64 (`_NSIG`), and the kernel's signal set is 8 bytes.
const SIGNALS: i32 = 64;
const KERNEL_SIGSET_BYTES: usize = 8;

/// Starts `prepared` as a new process group's leader born in `cgroup`. An error of kind
/// `Unsupported`: this kernel (or this cgroup) cannot, and nothing was started.
pub(super) fn spawn(prepared: &Prepared, cgroup: BorrowedFd<'_>) -> io::Result<Pid> {
    if !cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
        // The zeroed `struct sigaction` below is the kernel's SIG_DFL on these two.
        return Err(unsupported("clone3 spawn not built for this architecture"));
    }
    // Everything the child needs, ready before the clone: it must not allocate.
    let argv = pointers(&prepared.argv);
    let envp = pointers(&prepared.envp);
    let dir = prepared.dir.as_ref().map(|d| d.as_ptr());
    // The child's 0, 1, 2 come from descriptors above 2, so that no dup2 overwrites another's
    // source (and none is a no-op that leaves close-on-exec set).
    let high: Vec<OwnedFd> = prepared
        .child_fds
        .iter()
        .map(above_stdio)
        .collect::<io::Result<_>>()?;
    let sources = [
        high[0].as_raw_fd(),
        high[1].as_raw_fd(),
        high[2].as_raw_fd(),
    ];
    let (report_read, mut report_write) = pipe2(OFlag::O_CLOEXEC)?;
    if report_write.as_raw_fd() < 3 {
        report_write = above_stdio(&report_write)?;
    }
    let plan = Child {
        program: prepared.program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        dir,
        sources,
        report: report_write.as_raw_fd(),
    };

    let args = CloneArgs {
        flags: libc::CLONE_VFORK as u64 | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // Every signal blocked across the clone: no handler of the agent's may run in the child
    // before the child has set them all back to the default.
    let all: u64 = !0;
    let mut old: u64 = 0;
    // SAFETY: rt_sigprocmask reads `all` and writes `old`, both live 8-byte locals, the
    // kernel's signal set size; it changes only this thread's mask, restored below.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &all as *const u64,
            &mut old as *mut u64,
            KERNEL_SIGSET_BYTES,
        )
    };
    // SAFETY: clone3 without CLONE_VM is a fork: the child gets a copy of this process's
    // memory and continues here on its own copy of this stack, so it cannot write the
    // parent's memory. The child (`pid == 0`) runs only `Child::run`, which makes system
    // calls on data prepared above and never returns. `args` is a live, initialised
    // `clone_args` of the size passed.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid == 0 {
        plan.run();
    }
    let clone_error = Errno::last();
    // SAFETY: as above; puts back the mask saved before the clone.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &old as *const u64,
            std::ptr::null_mut::<u64>(),
            KERNEL_SIGSET_BYTES,
        )
    };
    if pid < 0 {
        return Err(match clone_error {
            // No clone3, no CLONE_INTO_CGROUP (E2BIG: a kernel before 5.7), or a cgroup
            // that cannot take a process this way.
            Errno::ENOSYS | Errno::E2BIG | Errno::EINVAL | Errno::EOPNOTSUPP | Errno::EBADF => {
                unsupported(&format!("clone3 into a cgroup: {clone_error}"))
            }
            other => other.into(),
        });
    }
    let pid = Pid::from_raw(pid as i32);
    drop(report_write);
    drop(high);
    // The child has exec'ed (the pipe closed with nothing in it) or failed and exited
    // (CLONE_VFORK waited for either).
    let mut errno = [0u8; 4];
    let mut report = File::from(report_read);
    let mut got = 0;
    while got < errno.len() {
        match report.read(&mut errno[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if got == 0 {
        return Ok(pid);
    }
    let _ = waitpid(pid, None);
    if got < errno.len() {
        return Err(io::Error::other("the child reported a cut-short error"));
    }
    Err(io::Error::from_raw_os_error(i32::from_ne_bytes(errno)))
}

fn unsupported(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, why.to_string())
}

/// A NULL-terminated array of pointers to `strings`, which must outlive it.
fn pointers(strings: &[std::ffi::CString]) -> Vec<*const c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// A close-on-exec copy of `file`'s descriptor numbered 3 or more.
fn above_stdio(fd: &impl AsFd) -> io::Result<OwnedFd> {
    let raw = fcntl(fd.as_fd(), FcntlArg::F_DUPFD_CLOEXEC(3))?;
    // SAFETY: F_DUPFD_CLOEXEC just made `raw`, a descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// What the child does, all of it prepared by the parent.
struct Child {
    program: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    dir: Option<*const c_char>,
    /// Become 0, 1 and 2.
    sources: [RawFd; 3],
    /// Where the errno of a failed step goes (close-on-exec).
    report: RawFd,
}

impl Child {
    /// In the child: system calls only, then exec; on any failure, its errno to the parent
    /// and exit 127.
    fn run(&self) -> ! {
        // SAFETY: every call below is a plain system call on descriptors and NUL-terminated
        // strings the parent prepared (copied into this child's memory by the fork); none
        // allocates or takes a lock. The zeroed `sigaction` is SIG_DFL with no flags, no
        // restorer and an empty mask (x86_64, aarch64: handler, flags, restorer, mask).
        unsafe {
            let dfl = [0u64; 4];
            for signal in 1..=SIGNALS {
                if signal == libc::SIGKILL || signal == libc::SIGSTOP {
                    continue;
                }
                // glibc's sigaction refuses its internal 32 and 33; the system call does not.
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    signal,
                    dfl.as_ptr(),
                    std::ptr::null_mut::<u64>(),
                    KERNEL_SIGSET_BYTES,
                );
            }
            if libc::setpgid(0, 0) != 0 {
                self.fail();
            }
            for (target, source) in self.sources.iter().enumerate() {
                if libc::dup2(*source, target as RawFd) < 0 {
                    self.fail();
                }
            }
            // Nothing but 0, 1, 2 survives the exec (as under sudo), the report pipe
            // until then (it is close-on-exec).
            if self.report > 3 {
                self.close_range(3, self.report as u32 - 1);
            }
            self.close_range(self.report as u32 + 1, u32::MAX);
            if let Some(dir) = self.dir
                && libc::chdir(dir) != 0
            {
                self.fail();
            }
            let none: u64 = 0;
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &none as *const u64,
                std::ptr::null_mut::<u64>(),
                KERNEL_SIGSET_BYTES,
            );
            libc::execve(self.program, self.argv, self.envp);
            self.fail()
        }
    }

    /// Closes `first..=last`; one by one where the kernel has no `close_range` (before 5.9).
    ///
    /// # Safety
    /// In the child only.
    unsafe fn close_range(&self, first: u32, last: u32) {
        // SAFETY: plain system calls on this child's own descriptor table.
        unsafe {
            if libc::syscall(libc::SYS_close_range, first, last, 0) == 0 {
                return;
            }
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            let end = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
                limit.rlim_cur.min(1 << 16) as u32
            } else {
                1 << 16
            };
            for fd in first..=last.min(end) {
                libc::close(fd as RawFd);
            }
        }
    }

    /// Tells the parent `errno` and exits.
    fn fail(&self) -> ! {
        // SAFETY: errno is this thread's (the fork copied its thread area); write and _exit
        // are plain system calls.
        unsafe {
            let errno = *libc::__errno_location();
            let bytes = errno.to_ne_bytes();
            libc::write(self.report, bytes.as_ptr().cast(), bytes.len());
            libc::_exit(127)
        }
    }
}
