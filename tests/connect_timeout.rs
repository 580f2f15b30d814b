//! `deployment --connect-timeout`: a VM whose command never answers (an `ssh` to a host that
//! drops packets, modelled by a command that sleeps) stops the run before anything is locked,
//! names the instance and its command, and its session is ended; while sessions connect, one
//! line names those still connecting.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use common::fleet::Fleet;
use common::{AGENT, Run};

/// db/0 answers; db/1's command writes its pid to `pid_file` and sleeps, never answering.
fn fleet_with_a_hanging_vm() -> (Fleet, PathBuf, PathBuf) {
    let mut fleet = Fleet::new();
    fleet.add("db", 0).job("db").recording_locks();
    fleet.add("db", 1).job("db").recording_locks();
    let pid_file = fleet.dir.path().join("hanging.pid");
    let inventory = fleet.inventory_with(|m| {
        if m.index == 1 {
            format!("echo $$ > {}; exec sleep 300", pid_file.display())
        } else {
            format!("{AGENT} --root {} serve", m.vm.root().display())
        }
    });
    (fleet, inventory, pid_file)
}

/// Runs the driver's backup with `env`, failing the test (not hanging it) when the driver
/// does not end within a minute.
fn backup(fleet: &Fleet, inventory: &Path, extra: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(AGENT);
    command
        .arg("deployment")
        .arg("--inventory")
        .arg(inventory)
        .args(["backup", "--artifact-path"])
        .arg(fleet.artifacts())
        .args(extra)
        .envs(env.iter().copied())
        .current_dir(fleet.dir.path());
    let shown = format!("{command:?}");
    let cwd = fleet.dir.path().to_path_buf();
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = send.send(Run::of(&mut command, &cwd));
    });
    receive
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("the driver still waits after 60s: {shown}"))
}

/// Whether `pid` is gone (or dead and waiting for its parent to reap it).
fn gone(pid: &str) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn a_vm_that_never_answers_stops_the_backup_before_any_lock_and_its_session_is_ended() {
    let (fleet, inventory, pid_file) = fleet_with_a_hanging_vm();
    let run = backup(&fleet, &inventory, &["--connect-timeout", "2s"], &[]);
    run.assert_code(1)
        .assert_stderr_contains("db/1: cannot reach the agent with `echo $$ > ")
        .assert_stderr_contains("exec sleep 300`: no answer within 2s: check that the VM is reachable and that the command works");
    assert!(
        !run.stderr.contains("db/0: cannot reach"),
        "db/0 answered\n{}",
        run.explain()
    );
    assert!(
        fleet.calls().is_empty(),
        "nothing may be locked: {:?}\n{}",
        fleet.calls(),
        run.explain()
    );
    assert_eq!(
        fs::read_dir(fleet.artifacts()).unwrap().count(),
        0,
        "no artifact directory\n{}",
        run.explain()
    );
    let pid = fs::read_to_string(&pid_file).expect("the hanging command ran");
    let pid = pid.trim();
    // The driver has exited, so its sessions' ends are behind it; allow the reaper a moment.
    let mut waited = 0;
    while !gone(pid) && waited < 50 {
        std::thread::sleep(Duration::from_millis(100));
        waited += 1;
    }
    assert!(
        gone(pid),
        "the hanging command (pid {pid}) still runs\n{}",
        run.explain()
    );
}

#[test]
fn sessions_still_connecting_are_named_while_they_connect() {
    let (fleet, inventory, _) = fleet_with_a_hanging_vm();
    let run = backup(
        &fleet,
        &inventory,
        &["--connect-timeout", "3s"],
        &[("BBR_AGENT_CONNECTING_EVERY", "1s")],
    );
    run.assert_code(1);
    let lines: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("still connecting: "))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("still connecting: db/1 (") && l.ends_with("s)")),
        "a line names db/1, still connecting: {lines:?}\n{}",
        run.explain()
    );
    assert!(
        lines.len() <= 3,
        "one line a second for 3s, not more: {lines:?}\n{}",
        run.explain()
    );
}

#[test]
fn a_zero_connect_timeout_is_refused() {
    let (fleet, inventory, _) = fleet_with_a_hanging_vm();
    let run = backup(&fleet, &inventory, &["--connect-timeout", "0s"], &[]);
    run.assert_code(2)
        .assert_stderr_contains("--connect-timeout")
        .assert_stderr_contains("give more than 0s");
    assert!(fleet.calls().is_empty(), "{:?}", fleet.calls());
}

#[test]
fn a_command_that_ignores_sigterm_is_killed_and_named() {
    let mut fleet = Fleet::new();
    fleet.add("db", 0).job("db").recording_locks();
    let inventory = fleet.inventory_with(|_| "trap '' TERM; sleep 300; echo".to_string());
    let run = backup(&fleet, &inventory, &["--connect-timeout", "1s"], &[]);
    run.assert_code(1).assert_stderr_contains(
        "db/0: cannot reach the agent with `trap '' TERM; sleep 300; echo`: no answer within 1s",
    );
    assert!(fleet.calls().is_empty(), "{:?}", fleet.calls());
}

/// A VM that asks for the agent and then reads nothing (a stopped `sh`, a wedged link): the
/// driver's write of the binary blocks once the pipe is full, and `--connect-timeout` still
/// ends it, naming the transfer, before anything is locked.
#[test]
fn a_vm_that_asks_for_the_agent_and_reads_nothing_stops_at_the_connect_timeout() {
    let mut fleet = Fleet::new();
    fleet.add("db", 0).job("db").recording_locks();
    let fake = fleet.dir.path().join("asks-and-stalls.sh");
    fs::write(
        &fake,
        "#!/bin/sh\nhead -c 100 >/dev/null\necho 'bbr-agent-bootstrap send'\nexec sleep 300\n",
    )
    .unwrap();
    fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let inventory = fleet.inventory_with(|_| format!("{} {{{{ agent }}}} serve", fake.display()));
    let run = backup(
        &fleet,
        &inventory,
        &["--connect-timeout", "2s", "--agent", "bring"],
        &[],
    );
    run.assert_code(1)
        .assert_stderr_contains("bringing the agent did not end within 2s (--connect-timeout)");
    assert!(
        fleet.calls().is_empty(),
        "nothing may be locked: {:?}\n{}",
        fleet.calls(),
        run.explain()
    );
}

/// A VM whose disk is full as the agent is brought (here a `head` that fails to write): the
/// error is the bootstrap's own reason, not the broken pipe the driver's write then meets.
#[test]
fn a_vm_that_cannot_write_the_brought_agent_says_why() {
    let mut fleet = Fleet::new();
    fleet.add("db", 0).job("db").recording_locks();
    let bin = fleet.dir.path().join("full-disk-bin");
    fs::create_dir_all(&bin).unwrap();
    let head = bin.join("head");
    fs::write(
        &head,
        "#!/bin/sh\ndd bs=1 count=1 >/dev/null 2>&1\necho \"head: error writing 'bbr-agent': No space left on device\" >&2\nexit 1\n",
    )
    .unwrap();
    fs::set_permissions(&head, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let tmp = fleet.dir.path().join("data-tmp");
    fs::create_dir_all(&tmp).unwrap();
    let root = fleet.members[0].vm.root().display().to_string();
    let inventory = fleet.inventory_with(|_| {
        format!(
            "PATH={}:$PATH BBR_AGENT_INSTALLED=/nonexistent BBR_AGENT_TMP={} {{{{ agent }}}} --root {root} serve",
            bin.display(),
            tmp.display()
        )
    });
    let run = backup(&fleet, &inventory, &["--agent", "bring"], &[]);
    run.assert_code(1)
        .assert_stderr_contains("the bootstrap could not take the agent: cannot write");
    assert!(
        fleet.calls().is_empty(),
        "nothing may be locked: {:?}",
        fleet.calls()
    );
    assert_eq!(
        fs::read_dir(&tmp).unwrap().count(),
        0,
        "nothing left\n{}",
        run.explain()
    );
}
