//! What the operator reads: the agent's own warnings are lines for a person (no tracing
//! target, no `Some(2)`), coloured only on a terminal and never with `NO_COLOR`. The terminal
//! cases run the real binary under util-linux `script`, so its stderr is a real
//! pseudo-terminal.

mod common;

use std::process::Command;

use common::{Run, Vm};

/// A VM whose backup script interrupts the agent that runs it (SIGINT to its parent, as a
/// Ctrl-C would) and then waits to be ended.
fn vm_interrupted_mid_backup() -> Vm {
    let vm = Vm::with_identity("acme", "backend");
    vm.job("db").recording_locks().script(
        "backup",
        "echo \"$ME\" >> \"$LOG\"\nkill -INT $PPID\nsleep 30",
    );
    vm
}

fn backup_args(vm: &Vm) -> Vec<String> {
    vec![
        "--root".to_string(),
        vm.root().display().to_string(),
        "backup".to_string(),
        "--artifact-path".to_string(),
        vm.artifacts().display().to_string(),
    ]
}

const WARNING: &str = "bbr-agent: warning: interrupted by SIGINT: ending running scripts, then unlocking what is locked";

/// Runs the agent under `script`, which gives it a pseudo-terminal; returns what the terminal
/// showed.
fn on_a_terminal(vm: &Vm, env: &[(&str, &str)]) -> Run {
    let quoted: Vec<String> = std::iter::once(common::AGENT.to_string())
        .chain(backup_args(vm))
        .map(|a| format!("'{a}'"))
        .collect();
    let mut command = Command::new("script");
    command
        .args(["--quiet", "--return", "--command"])
        .arg(quoted.join(" "))
        .arg("/dev/null")
        .env_remove("NO_COLOR")
        .envs(env.iter().copied())
        .current_dir(vm.dir.path());
    Run::of(&mut command, vm.dir.path())
}

#[test]
fn an_interruption_warning_is_a_plain_line_without_escapes_when_stderr_is_a_file() {
    let vm = vm_interrupted_mid_backup();
    let run = Run::of(
        Command::new(common::AGENT)
            .args(backup_args(&vm))
            .env_remove("NO_COLOR"),
        vm.dir.path(),
    );
    run.assert_code(130).assert_stderr_contains(WARNING);
    assert!(
        !run.stderr.contains('\x1b'),
        "stderr is not a terminal, yet it holds escape codes\n{}",
        run.explain()
    );
    assert!(
        !run.stderr.contains("bbr_agent::") && !run.stderr.contains("Some("),
        "the warning reads like a tracing record\n{}",
        run.explain()
    );
}

#[test]
fn on_a_terminal_a_warning_is_coloured_unless_no_color_is_set() {
    let vm = vm_interrupted_mid_backup();
    let coloured = on_a_terminal(&vm, &[]);
    assert!(
        coloured
            .stdout
            .contains("\x1b[1;33mbbr-agent: warning:\x1b[0m interrupted by SIGINT"),
        "the terminal shows no coloured warning\n{}",
        coloured.explain()
    );

    let vm = vm_interrupted_mid_backup();
    let plain = on_a_terminal(&vm, &[("NO_COLOR", "1")]);
    assert!(
        plain.stdout.contains(WARNING) && !plain.stdout.contains("\x1b[1;33m"),
        "NO_COLOR is set, yet the warning is coloured (or missing)\n{}",
        plain.explain()
    );
}

#[test]
fn a_plan_says_which_jobs_run_side_by_side() {
    let vm = Vm::with_identity("acme", "backend");
    for job in ["api", "db", "worker"] {
        vm.job(job).recording_locks().copying_backup_restore();
    }
    vm.job("db")
        .metadata("backup_should_be_locked_before:\n- {job_name: api, release: acme}\nrestore_should_be_locked_before:\n- {job_name: api, release: acme}");

    let backup = vm.agent(&["plan", "backup"]);
    backup
        .assert_success()
        .assert_stdout_contains("1. pre-backup-lock (all 2 jobs in parallel): db, worker\n")
        .assert_stdout_contains("2. pre-backup-lock: api\n")
        .assert_stdout_contains("3. backup (all 3 jobs in parallel): ");
    let restore = vm.agent(&["plan", "restore"]);
    restore
        .assert_success()
        .assert_stdout_contains("1. pre-restore-lock (one job at a time): db, worker\n")
        .assert_stdout_contains("2. pre-restore-lock: api\n");
    assert!(
        !backup.stdout.contains("at once") && !restore.stdout.contains("at once"),
        "\"at once\" says nothing of what runs at once\n{}{}",
        backup.explain(),
        restore.explain()
    );
}

#[test]
fn transfers_read_as_bbr_says_them_not_as_drain_and_copy() {
    let vm = Vm::with_identity("acme", "backend");
    vm.job("store").recording_locks().copying_backup_restore();
    common::write_file(&vm.data_dir("store").join("one"), b"1");
    let backup = vm.agent(&[
        "backup",
        "--artifact-path",
        vm.artifacts().to_str().unwrap(),
    ]);
    backup
        .assert_success()
        .assert_stdout_contains("backend/0 store: backup copied from the VM: 1 file, ");
    let restore = vm.agent(&[
        "restore",
        "--artifact-path",
        vm.artifact_dir().to_str().unwrap(),
    ]);
    restore
        .assert_success()
        .assert_stdout_contains("backend/0 store: backup copied to the VM: 1 file, ");
    for run in [&backup, &restore] {
        assert!(
            !run.stdout.contains(" drain:") && !run.stdout.contains(" copy:"),
            "jargon a BBR user does not know\n{}",
            run.explain()
        );
    }
}
