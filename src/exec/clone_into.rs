//! Starting a script straight into its cgroup: `clone3` with `CLONE_INTO_CGROUP` (Linux 5.7),
//! so that the agent never moves itself into the script's cgroup and back (two writes to
//! `cgroup.procs`, each moving every thread of the agent and waiting for an RCU grace
//! period). glibc's `posix_spawn` has no cgroup attribute before 2.39 (Debian 12 has 2.36),
//! so this is a spawn of our own, doing in the child what `Spawn::start` asks of
//! `posix_spawn`: a new process group, stdin/stdout/stderr, no other descriptor, the working
//! directory, every signal at its default and none blocked, then `execve`.
//!
//! As glibc's `posix_spawn` does: `CLONE_VM | CLONE_VFORK`, the child on a stack of its own
//! (a fork's copy of the agent's page tables, and the copy-on-write faults after it, cost
//! about what the two moves saved), this thread held until the child has exec'ed or exited.
//! Sharing the agent's memory, the child only makes system calls on what the parent
//! prepared: no allocation, no lock (another thread may hold one). Why the exec failed, it
//! writes where the parent reads it. x86_64 only (the switch to the child's stack is a few
//! instructions of assembly); elsewhere the agent moves itself, as before. See
//! docs/benchmarks.md ("Fleet CPU, stop 12").

use std::ffi::c_char;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};
use nix::libc;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

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

/// The child's stack: its frames are small (system calls only).
const CHILD_STACK_BYTES: usize = 64 * 1024;

/// Starts `prepared` as a new process group's leader born in `cgroup`. An error of kind
/// `Unsupported`: this kernel (or this cgroup, or this architecture) cannot, and nothing
/// was started.
pub(super) fn spawn(prepared: &Prepared, cgroup: BorrowedFd<'_>) -> io::Result<Pid> {
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
    // Not zeroed: the child writes what it uses (its top page or two), so a spawn touches
    // those pages only, not 64 KiB of fresh memory (a page fault each, thousands of spawns).
    let mut stack: Box<[MaybeUninit<u8>]> = Box::new_uninit_slice(CHILD_STACK_BYTES);
    let plan = Child {
        program: prepared.program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        dir,
        sources: [
            high[0].as_raw_fd(),
            high[1].as_raw_fd(),
            high[2].as_raw_fd(),
        ],
        failed: AtomicI32::new(0),
    };
    let args = CloneArgs {
        flags: (libc::CLONE_VM | libc::CLONE_VFORK) as u64 | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        stack: stack.as_mut_ptr() as u64,
        stack_size: stack.len() as u64,
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
    let pid = clone3(&args, &plan);
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
    drop(stack);
    let pid = match pid {
        Ok(pid) => pid,
        // No clone3, no CLONE_INTO_CGROUP (E2BIG: a kernel before 5.7): never this way.
        Err(e @ (Errno::ENOSYS | Errno::E2BIG | Errno::EINVAL)) => {
            return Err(unsupported(&format!("clone3 into a cgroup: {e}")));
        }
        // Out of processes or memory: the script's own failure to start, as posix_spawn's.
        Err(e @ (Errno::EAGAIN | Errno::ENOMEM)) => return Err(e.into()),
        // The cgroup refused (EACCES, ENOENT, ENODEV, EBUSY, EPERM, EOPNOTSUPP, EBADF: its
        // files not ours, removed under us, a seccomp filter): not this way this time; the
        // caller moves the agent instead, and that falls back to no cgroup by itself.
        Err(e) => return Err(not_this_cgroup(e)),
    };
    // CLONE_VFORK: the child has exec'ed, or failed and exited.
    match plan.failed.load(Ordering::Acquire) {
        0 => Ok(pid),
        errno => {
            let _ = waitpid(pid, None);
            Err(io::Error::from_raw_os_error(errno))
        }
    }
}

/// clone3 with the child running `plan` on `args`' stack; returns the child's pid.
#[cfg(target_arch = "x86_64")]
fn clone3(args: &CloneArgs, plan: &Child) -> Result<Pid, Errno> {
    extern "C" fn child_entry(plan: *const Child) -> ! {
        // SAFETY: `plan` points at the parent's `Child`, alive: CLONE_VFORK holds the parent
        // until this child has exec'ed or exited.
        unsafe { (*plan).run() }
    }
    let ret: i64;
    // SAFETY: the syscall instruction with clone3's number and arguments (a live
    // `clone_args` and its size). The parent gets the pid or an error in rax and carries on
    // (the asm touches no stack). The child starts with rax 0 on the stack `args` names
    // (the kernel sets rsp to its top), which nothing else uses: it aligns it, calls
    // `child_entry(plan)` (r12, r13 survive the syscall) and never returns (ud2 if it did).
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "and rsp, -16",
            "mov rdi, r12",
            "call r13",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") args as *const CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") plan as *const Child,
            in("r13") child_entry as *const () as usize,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    if ret < 0 {
        Err(Errno::from_raw(-ret as i32))
    } else {
        Ok(Pid::from_raw(ret as i32))
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn clone3(_args: &CloneArgs, _plan: &Child) -> Result<Pid, Errno> {
    Err(Errno::ENOSYS)
}

fn unsupported(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, why.to_string())
}

/// The cgroup refused a process born into it; nothing was started.
#[derive(Debug, thiserror::Error)]
#[error("the script's cgroup refused it at birth: {0}")]
pub(super) struct NotThisCgroup(Errno);

pub(super) fn not_this_cgroup(e: Errno) -> io::Error {
    io::Error::other(NotThisCgroup(e))
}

/// Whether `e` says this one birth into a cgroup was refused (not that it never works).
pub(super) fn is_not_this_cgroup(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<NotThisCgroup>())
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
    /// The errno of a failed step, for the parent (0: none).
    failed: AtomicI32,
}

impl Child {
    /// In the child: system calls only, then exec; on any failure, its errno to the parent
    /// and exit 127.
    fn run(&self) -> ! {
        // SAFETY: every call below is a plain system call on descriptors and NUL-terminated
        // strings the parent prepared (shared memory, alive while the parent waits); none
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
            // Nothing but 0, 1, 2 survives the exec, as under sudo.
            self.close_range(3, u32::MAX);
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
        // SAFETY: errno is the suspended parent thread's (the child shares its thread area),
        // just set by the failed call; _exit is a plain system call.
        unsafe {
            let errno = *libc::__errno_location();
            self.failed.store(errno.max(1), Ordering::Release);
            libc::_exit(127)
        }
    }
}
