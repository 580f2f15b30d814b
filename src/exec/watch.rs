//! Watching a started script from the thread that started it: both output pipes and the
//! leader's exit in one `poll` loop, so a script costs no thread of its own.
//!
//! Output still arriving after the leader exited (from a daemon it started) is read for a
//! little while, then on a thread of its own until the daemon closes its end.
//!
//! The exit is seen through a pidfd (Linux 5.3), which becomes readable when the leader
//! terminates. Without one (an older kernel), the leader is looked at with `WNOHANG` after
//! each wait, and every millisecond once its output has ended.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::libc;
use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::wait::WaitPidFlag;
use nix::unistd::Pid;

use super::capture::{Captured, LineSink, Stream, StreamCapture};
use super::spawn::Spawned;

/// Bytes read from a pipe at once, at most.
const READ_SIZE: usize = 64 * 1024;
/// The read buffer's first size: most scripts say little or nothing, and a fleet starts
/// thousands of them; the buffer grows to [`READ_SIZE`] at the first read that fills it.
const FIRST_READ_SIZE: usize = 4 * 1024;
/// Without a pidfd, the longest a wait goes without looking at the leader (`WNOHANG`).
const NO_PIDFD_SLICE: Duration = Duration::from_millis(25);

pub struct Watch {
    pid: Pid,
    pidfd: Option<OwnedFd>,
    status: Option<Result<ExitStatus, Errno>>,
    /// Open pipes; `None` once at their end.
    pipes: [Option<File>; 2],
    captures: [StreamCapture; 2],
    sink: LineSink,
    buf: Vec<u8>,
}

impl Watch {
    pub fn new(child: Spawned, sink: LineSink, keep_bytes: usize) -> Watch {
        Watch {
            pid: child.pid,
            pidfd: pidfd_open(child.pid),
            status: None,
            pipes: [Some(child.stdout), Some(child.stderr)],
            captures: [
                StreamCapture::new(Stream::Stdout, keep_bytes),
                StreamCapture::new(Stream::Stderr, keep_bytes),
            ],
            sink,
            buf: vec![0; FIRST_READ_SIZE],
        }
    }

    /// The leader's status once it has been reaped (an error if waiting for it failed).
    pub fn status(&self) -> Option<Result<ExitStatus, Errno>> {
        self.status
    }

    /// Waits at most `max` for output (passed on to the sink) or the leader's exit, or until
    /// `wake` becomes readable (an interruption), and says whether the leader has exited by
    /// now. It may return earlier: callers look at their clock and at `wake` again.
    pub fn wait(&mut self, max: Duration, wake: Option<BorrowedFd<'_>>) -> bool {
        if self.status.is_some() {
            if self.pipes.iter().any(Option::is_some) {
                self.poll_once(max, wake);
            }
            return true;
        }
        let max = match self.pidfd {
            Some(_) => max,
            None => max.min(NO_PIDFD_SLICE),
        };
        let events = self.poll_once(max, wake);
        if events.exit || self.pidfd.is_none() {
            self.reap(WaitPidFlag::WNOHANG);
        }
        self.status.is_some()
    }

    /// Waits for the leader, however long it takes (it has been sent SIGKILL, or ended).
    pub fn reap_blocking(&mut self) {
        if self.status.is_none() {
            self.reap(WaitPidFlag::empty());
        }
    }

    /// Reads the pipes to their ends, or until `deadline`: a script that started a daemon
    /// without redirecting its output must not hold the run up. Returns what was kept.
    /// A pipe still open then (a daemon the script started holds it) is read to its end on a
    /// thread of its own, its output dropped: closing it would kill the daemon with SIGPIPE
    /// at its next write. When the OS refuses that thread, the pipe is left open and unread
    /// until the agent exits (the daemon blocks once it has filled it, rather than dying).
    pub fn finish(mut self, deadline: Instant) -> (Captured, Captured) {
        while self.pipes.iter().any(Option::is_some) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.poll_once(left, None);
        }
        for pipe in self.pipes.iter_mut().filter_map(Option::take) {
            let pipe = std::sync::Arc::new(pipe);
            let reader = std::sync::Arc::clone(&pipe);
            let drained = crate::thread_start::start(
                || "read a daemon's output to its end".into(),
                move || {
                    let _ = io::copy(&mut &*reader, &mut io::sink());
                },
            );
            if drained.is_err() {
                // Never closed: the refused thread's copy is gone, this one is kept.
                std::mem::forget(pipe);
            }
        }
        let [out, err] = self.captures;
        (out.finish(&self.sink), err.finish(&self.sink))
    }

    /// Reaps the leader if it has ended (or waits for it, without `WNOHANG`). The raw wait
    /// status is kept: nix's `waitpid` cannot name a real-time signal (SIGRTMIN+n) and fails
    /// after the child is already reaped.
    fn reap(&mut self, flags: WaitPidFlag) {
        loop {
            let mut status: libc::c_int = 0;
            // SAFETY: waitpid writes one int through the pointer, which points at a local
            // that outlives the call; the pid is our own child.
            let reaped = unsafe { libc::waitpid(self.pid.as_raw(), &mut status, flags.bits()) };
            match reaped {
                0 => return,
                -1 if Errno::last() == Errno::EINTR => continue,
                -1 => {
                    self.status = Some(Err(Errno::last()));
                    self.pidfd = None;
                    return;
                }
                _ => {
                    self.status = Some(Ok(ExitStatus::from_raw(status)));
                    self.pidfd = None;
                    return;
                }
            }
        }
    }

    /// One `poll` over the open pipes, the pidfd and `wake`; reads what is ready.
    fn poll_once(&mut self, max: Duration, wake: Option<BorrowedFd<'_>>) -> Events {
        let pipes_open = self.pipes.iter().any(Option::is_some);
        let watch_exit = self.status.is_none() && self.pidfd.is_some();
        let mut max = max;
        if !pipes_open && !watch_exit {
            // Only `wake`, if anything, to poll: the pipes are done and the exit cannot be
            // watched, so the leader is looked at every millisecond.
            max = max.min(Duration::from_millis(1));
            if wake.is_none() {
                std::thread::sleep(max);
                return Events { exit: false };
            }
        }
        let mut fds = Vec::with_capacity(4);
        let mut slots = Vec::with_capacity(4);
        for (i, pipe) in self.pipes.iter().enumerate() {
            if let Some(pipe) = pipe {
                fds.push(PollFd::new(pipe.as_fd(), PollFlags::POLLIN));
                slots.push(Slot::Pipe(i));
            }
        }
        if let (true, Some(pidfd)) = (watch_exit, &self.pidfd) {
            fds.push(PollFd::new(pidfd.as_fd(), PollFlags::POLLIN));
            slots.push(Slot::Exit);
        }
        if let Some(wake) = wake {
            fds.push(PollFd::new(wake, PollFlags::POLLIN));
            slots.push(Slot::Wake);
        }
        match poll(&mut fds, crate::interrupt::poll_timeout(Some(max))) {
            Ok(0) | Err(_) => return Events { exit: false },
            Ok(_) => {}
        }
        let ready: Vec<(Slot, bool)> = fds
            .iter()
            .zip(&slots)
            .map(|(fd, slot)| (*slot, fd.any().unwrap_or(false)))
            .collect();
        drop(fds);
        let mut exit = false;
        for (slot, is_ready) in ready {
            match (slot, is_ready) {
                (Slot::Pipe(i), true) => self.read_pipe(i),
                (Slot::Exit, true) => exit = true,
                // The caller looks at what woke it.
                (Slot::Wake, _) | (_, false) => {}
            }
        }
        Events { exit }
    }

    fn read_pipe(&mut self, i: usize) {
        let Some(pipe) = self.pipes[i].as_mut() else {
            return;
        };
        match pipe.read(&mut self.buf) {
            Ok(0) => self.pipes[i] = None,
            Ok(n) => {
                self.captures[i].feed(&self.buf[..n], &self.sink);
                if n == self.buf.len() && n < READ_SIZE {
                    // A script that writes a lot: read it in big pieces from now on.
                    self.buf.resize(READ_SIZE, 0);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => self.pipes[i] = None,
        }
    }
}

/// What each polled descriptor is.
#[derive(Clone, Copy)]
enum Slot {
    Pipe(usize),
    Exit,
    Wake,
}

struct Events {
    /// The pidfd said the leader terminated.
    exit: bool,
}

/// A pidfd for the child, or `None` where the kernel has no `pidfd_open`.
fn pidfd_open(pid: Pid) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and a flags word and returns a new descriptor or -1;
    // no memory is passed. The pid is our unreaped child, so it cannot name another process.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the descriptor was just created for us and nothing else owns it. pidfds are
    // created close-on-exec.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command, Stdio};
    use std::sync::{Arc, Mutex};

    type Lines = Arc<Mutex<Vec<(Stream, String)>>>;

    fn watch(script: &str) -> (Watch, Child, Lines) {
        let mut child = Command::new("/bin/sh")
            .args(["-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sh starts");
        let spawned = Spawned {
            pid: Pid::from_raw(child.id() as i32),
            stdin: None,
            stdout: File::from(OwnedFd::from(child.stdout.take().expect("piped"))),
            stderr: File::from(OwnedFd::from(child.stderr.take().expect("piped"))),
        };
        let lines: Lines = Arc::default();
        let seen = Arc::clone(&lines);
        let sink: LineSink = Arc::new(move |s, l| seen.lock().unwrap().push((s, l.to_string())));
        (Watch::new(spawned, sink, 1 << 20), child, lines)
    }

    /// Reads both pipes to their ends (the test's generous limit: a minute).
    fn drain(w: &mut Watch) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while w.pipes.iter().any(Option::is_some) && Instant::now() < deadline {
            w.poll_once(Duration::from_secs(1), None);
        }
        assert!(
            w.pipes.iter().all(Option::is_none),
            "pipes still open after a minute"
        );
    }

    #[test]
    fn a_silent_script_is_read_with_a_small_buffer() {
        let (mut w, mut child, lines) = watch("exit 0");
        drain(&mut w);
        // A fleet starts thousands of such scripts: 4 KiB each, not 64 KiB of fresh memory.
        assert_eq!(w.buf.len(), FIRST_READ_SIZE);
        assert!(lines.lock().unwrap().is_empty());
        let _ = child.wait();
    }

    #[test]
    fn a_chatty_script_is_read_whole_and_in_big_pieces() {
        let (mut w, mut child, lines) =
            watch("i=0; while [ $i -lt 5000 ]; do echo line-$i; i=$((i+1)); done; echo oops >&2");
        drain(&mut w);
        let (out, err) = w.finish(Instant::now());
        let _ = child.wait();
        let expected: String = (0..5000).map(|i| format!("line-{i}\n")).collect();
        assert_eq!(String::from_utf8_lossy(&out.bytes), expected);
        assert_eq!(err.bytes, b"oops\n");
        let lines = lines.lock().unwrap();
        let out_lines: Vec<&str> = lines
            .iter()
            .filter(|(s, _)| *s == Stream::Stdout)
            .map(|(_, l)| l.as_str())
            .collect();
        assert_eq!(out_lines.len(), 5000);
        assert_eq!((out_lines[0], out_lines[4999]), ("line-0", "line-4999"));
    }
}
