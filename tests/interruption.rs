//! Interruption is an event the agent's waits wake on, not a flag they look at now and then:
//! a script that would sleep for a minute is ended as soon as the agent is signalled, and a
//! `serve` session waiting for its driver ends on a signal while the driver stays silent.
//! Bounds are far below the sleeps (20 s against 60 s, against for ever), not timings.

mod common;
mod faults_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{AGENT, Vm};
use faults_support::Spawned;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Well short of the scripts' 60 s sleep, far above any scheduling delay.
const BOUND: Duration = Duration::from_secs(20);

#[test]
fn a_sigint_ends_a_backup_script_sleeping_for_a_minute_at_once_and_unlocks() {
    let vm = Vm::with_identity("acme", "backend");
    vm.job("db").recording_locks().script(
        "backup",
        // The agent is signalled while the script sleeps in its wait.
        "echo \"$ME\" >> \"$LOG\"\n(sleep 0.5; kill -INT $PPID) &\nsleep 60",
    );
    let artifacts = vm.artifacts().display().to_string();
    let mut agent = Spawned::on(&vm, &["backup", "--artifact-path", &artifacts]);
    // `wait` fails the test past the bound: the sleep would have held the run for 60 s.
    let exit = agent.wait(BOUND);
    exit.assert_code(130)
        .assert_stderr_contains("interrupted by SIGINT");
    assert_eq!(
        vm.calls(),
        ["db pre-backup-lock", "db backup", "db post-backup-unlock"],
        "{}",
        exit.explain
    );
}

#[test]
fn a_serve_session_waiting_for_its_driver_ends_on_sigterm() {
    let vm = Vm::with_identity("acme", "backend");
    vm.job("db").recording_locks();
    // The driver's end stays open and says nothing: only the signal can end the session.
    let mut child = Command::new(AGENT)
        .arg("--root")
        .arg(vm.root())
        .arg("serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start bbr-agent serve");
    let stdin = child.stdin.take();
    // Past its start-up, so the signal thread is there to take the signal.
    std::thread::sleep(Duration::from_millis(500));
    let signalled = Instant::now();
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("signal serve");
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for serve") {
            break Some(status);
        }
        if signalled.elapsed() > BOUND {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if status.is_none() {
        let _ = child.kill();
    }
    drop(stdin);
    let out = child.wait_with_output().expect("serve's output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let status = status.unwrap_or_else(|| {
        panic!(
            "serve was still waiting for its driver {BOUND:?} after SIGTERM\n--- stderr ---\n{stderr}"
        )
    });
    assert_eq!(
        status.code(),
        Some(143),
        "serve should end as signalled\n--- stderr ---\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
