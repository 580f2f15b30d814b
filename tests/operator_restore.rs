//! What the operator reads when a restore cannot go ahead or is cut short: a failed backup is
//! named as one (when it started, that it cannot be restored), and the deployment a local
//! restore names is the VM's, whatever the artifact directory is called.

mod common;
mod faults_support;

use std::fs;
use std::path::Path;

use common::fleet::Fleet;
use common::{Run, Vm};

/// A VM of deployment `acme` whose job `db` backs up and restores its data.
fn vm() -> Vm {
    let vm = Vm::with_identity("acme", "backend");
    vm.job("db").recording_locks().copying_backup_restore();
    fs::write(vm.data_dir("db").join("rows"), "1\n2\n").unwrap();
    vm
}

fn backup(vm: &Vm) -> Run {
    vm.agent(&[
        "backup",
        "--artifact-path",
        vm.artifacts().to_str().unwrap(),
    ])
}

fn restore(vm: &Vm, artifact: &Path) -> Run {
    vm.agent(&["restore", "--artifact-path", artifact.to_str().unwrap()])
}

fn start_time(artifact: &Path) -> String {
    let text = fs::read_to_string(artifact.join("metadata")).unwrap();
    let metadata: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    metadata["backup_activity"]["start_time"]
        .as_str()
        .expect("a start_time")
        .to_string()
}

fn assert_refused_as_incomplete(run: &Run, artifact: &Path) {
    run.assert_code(1)
        .assert_stderr_contains("is not a complete backup")
        .assert_stderr_contains(&format!(
            "the backup started at {} did not complete",
            start_time(artifact)
        ))
        .assert_stderr_contains("so it cannot be restored");
    assert!(
        !run.stderr.contains("holds no instance") && !run.stderr.contains("does not match"),
        "the refusal blames something else than the failed backup\n{}",
        run.explain()
    );
}

#[test]
fn a_local_restore_from_a_failed_backup_says_the_backup_did_not_complete() {
    let vm = vm();
    vm.job("db").script("backup", "echo broke >&2\nexit 1");
    backup(&vm).assert_code(1);
    let artifact = vm.artifact_dir();
    fs::write(vm.log_path(), "").unwrap();

    let run = restore(&vm, &artifact);
    assert_refused_as_incomplete(&run, &artifact);
    assert!(vm.calls().is_empty(), "{:?}\n{}", vm.calls(), run.explain());
}

#[test]
fn a_deployment_restore_from_a_failed_backup_says_the_backup_did_not_complete() {
    let mut fleet = Fleet::new();
    let db = fleet.add("db", 0);
    db.job("db").recording_locks().copying_backup_restore();
    db.job("db").script("backup", "echo broke >&2\nexit 1");
    let inventory = fleet.local_inventory();
    fleet.backup(&inventory, &[]).assert_code(1);
    let artifact = fleet.artifact_dir();
    fs::write(fleet.log_path(), "").unwrap();

    let run = fleet.driver(
        &inventory,
        &["restore", "--artifact-path", artifact.to_str().unwrap()],
    );
    assert_refused_as_incomplete(&run, &artifact);
    assert!(
        fleet.calls().is_empty(),
        "{:?}\n{}",
        fleet.calls(),
        run.explain()
    );
}

#[test]
fn a_local_restore_names_the_vms_deployment_not_the_artifact_directorys() {
    let vm = vm();
    backup(&vm).assert_success();
    let renamed = vm.artifacts().join("mybackup");
    fs::rename(vm.artifact_dir(), &renamed).unwrap();

    let run = restore(&vm, &renamed);
    run.assert_success()
        .assert_stdout_contains(&format!("Restored acme from {}", renamed.display()));
    assert!(
        !run.stdout.contains("mybackup from") && !run.stdout.contains("of mybackup"),
        "the deployment came from the directory's name\n{}",
        run.explain()
    );

    let named = restore_with(&vm, &renamed, &["--deployment", "prod"]);
    named
        .assert_success()
        .assert_stdout_contains(&format!("Restored prod from {}", renamed.display()));
}

fn restore_with(vm: &Vm, artifact: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["restore", "--artifact-path", artifact.to_str().unwrap()];
    args.extend_from_slice(extra);
    vm.agent(&args)
}

/// The last line the operator reads.
fn last_line(stderr: &str) -> &str {
    stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
}

fn assert_told_interrupted(run: &Run, what: &str, blamed: &str) {
    run.assert_code(130).assert_stderr_contains(&format!(
        "the operator interrupted the run (SIGINT, Ctrl-C) {what}"
    ));
    assert!(
        !run.stderr.contains(blamed),
        "an interruption is blamed on a script ({blamed:?})\n{}",
        run.explain()
    );
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(
        lines.len() >= 2 && lines[lines.len() - 2].contains("the operator interrupted the run"),
        "the interruption is not the last line before the cleanup command\n{}",
        run.explain()
    );
    assert!(
        cleanup_command(run).ends_with("-cleanup"),
        "{}",
        run.explain()
    );
}

#[test]
fn ctrl_c_during_a_backup_script_says_the_operator_interrupted_the_run_and_what_was_unlocked() {
    let vm = vm();
    vm.job("db").script(
        "backup",
        "echo \"$ME\" >> \"$LOG\"\nkill -INT $PPID\nsleep 30",
    );
    let run = backup(&vm);
    assert_told_interrupted(
        &run,
        "while backup scripts ran",
        "backend/0 db backup failed",
    );
    run.assert_stderr_contains("post-backup-unlock ran for backend/0 db");
    assert!(
        vm.calls().contains(&"db post-backup-unlock".to_string()),
        "{:?}\n{}",
        vm.calls(),
        run.explain()
    );
}

#[test]
fn ctrl_c_during_a_restore_lock_or_restore_script_says_so_and_what_was_unlocked() {
    for (script, what, blamed) in [
        (
            "pre-restore-lock",
            "while jobs were being locked (pre-restore-lock); restore scripts were not run",
            "backend/0 db pre-restore-lock failed",
        ),
        (
            "restore",
            "while restore scripts ran; the restore is incomplete",
            "backend/0 db restore failed",
        ),
    ] {
        let vm = vm();
        backup(&vm).assert_success();
        let artifact = vm.artifact_dir();
        vm.job("db").script(
            script,
            "echo \"$ME\" >> \"$LOG\"\nkill -INT $PPID\nsleep 30",
        );
        fs::write(vm.log_path(), "").unwrap();
        let run = restore(&vm, &artifact);
        assert_told_interrupted(&run, what, blamed);
        run.assert_stderr_contains("post-restore-unlock ran for backend/0 db");
        assert!(
            vm.calls().contains(&"db post-restore-unlock".to_string()),
            "{:?}\n{}",
            vm.calls(),
            run.explain()
        );
    }
}

/// A session command that passes the driver's bytes on to the agent a 4 KiB read at a time,
/// 10 ms apart: a copy of 8 MiB takes minutes, so Ctrl-C lands in the middle of it.
const THROTTLED: &str = r#"#!/bin/sh
while :; do
  dd bs=4096 count=1 of="$CHUNK" 2>/dev/null
  [ -s "$CHUNK" ] || break
  cat "$CHUNK"
  sleep 0.01
done | exec "$AGENT" --root "$ROOT" serve
"#;

#[test]
fn ctrl_c_during_a_restores_copy_stops_it_at_once_and_says_the_operator_interrupted_the_run() {
    use faults_support::{Spawned, eventually};
    use std::time::Duration;

    let mut fleet = Fleet::new();
    let db = fleet.add("db", 0);
    db.job("db").recording_locks().copying_backup_restore();
    fs::write(db.data_dir("db").join("rows"), vec![7u8; 8 << 20]).unwrap();
    let inventory = fleet.local_inventory();
    fleet.backup(&inventory, &[]).assert_success();
    let artifact = fleet.artifact_dir();
    fs::write(fleet.log_path(), "").unwrap();

    let launcher = common::write_file(&fleet.dir.path().join("throttled"), THROTTLED.as_bytes());
    let root = fleet.vm("db", 0).root();
    let throttled = fleet.inventory_with(|_| {
        format!(
            "CHUNK={} AGENT={} ROOT={} sh {}",
            fleet.dir.path().join("chunk").display(),
            common::AGENT,
            root.display(),
            launcher.display()
        )
    });
    let args: Vec<String> = [
        "deployment",
        "--inventory",
        throttled.to_str().unwrap(),
        "restore",
        "--artifact-path",
        artifact.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut driver = Spawned::start(fleet.dir.path(), &args, &[]);
    let receiving = fleet.vm("db", 0).store().join(".db.receiving");
    assert!(
        eventually(Duration::from_secs(60), || receiving.exists()),
        "the copy never started\n{}",
        driver.explain()
    );
    driver.signal(nix::sys::signal::Signal::SIGINT);
    // At 400 KiB/s at most the copy would take 20 s more; a stopped one ends well before.
    let exit = driver.wait(Duration::from_secs(60));
    exit.assert_code(130).assert_stderr_contains(
        "the operator interrupted the run (SIGINT, Ctrl-C) while the backup was being copied to the VMs; the copy was stopped and removed; nothing was locked or restored",
    );
    let (stdout, stderr) = driver.output();
    assert!(
        !stdout.contains("db: backup copied to the VM:")
            && !stderr.contains("db: backup copied to the VM:"),
        "the copy ran to its end\n{}",
        driver.explain()
    );
    assert!(
        fleet.calls().is_empty(),
        "{:?}\n{}",
        fleet.calls(),
        driver.explain()
    );
    assert!(
        eventually(Duration::from_secs(30), || !fleet
            .vm("db", 0)
            .store()
            .exists()),
        "the VM's store was left\n{}",
        driver.explain()
    );
}

/// The cleanup command a failed run ends with, as the operator would copy it.
fn cleanup_command(run: &Run) -> String {
    let last = last_line(&run.stderr);
    match last.split_once("to clean up, run: ") {
        Some((_, command)) => command.to_string(),
        None => panic!("the last line names no cleanup command\n{}", run.explain()),
    }
}

/// Runs a cleanup command the way the operator would paste it into a shell.
fn run_pasted(command: &str, cwd: &Path) -> Run {
    let agent_dir = Path::new(common::AGENT).parent().unwrap();
    let path = format!(
        "{}:{}",
        agent_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Run::of(
        std::process::Command::new("sh")
            .args(["-c", command])
            .env("PATH", path),
        cwd,
    )
}

/// An unlock that fails once leaves its job locked: the run names the cleanup, in the report
/// too, and the pasted command unlocks it. (A failed lock whose unlocks all ran names none:
/// last_lines.rs.)
#[test]
fn a_failed_unlock_ends_with_the_local_cleanup_command_which_cleans_up_and_is_in_the_report() {
    let vm = vm();
    let marker = vm.dir.path().join("failed-once");
    vm.job("db").script(
        "post-backup-unlock",
        &format!(
            "echo \"$ME\" >> \"$LOG\"\nif [ ! -e '{m}' ]; then touch '{m}'; echo unlock broke >&2; exit 1; fi",
            m = marker.display()
        ),
    );
    let run = backup(&vm);
    run.assert_code(8);
    let command = cleanup_command(&run);
    assert_eq!(
        command,
        format!("bbr-agent --root {} backup-cleanup", vm.root().display()),
        "{}",
        run.explain()
    );
    let report = fs::read_to_string(vm.artifact_dir().join("report.html")).unwrap();
    assert!(
        report.contains(&command),
        "the report lacks the cleanup command\n{report}"
    );

    fs::write(vm.log_path(), "").unwrap();
    run_pasted(&command, vm.dir.path()).assert_success();
    assert_eq!(
        vm.calls(),
        ["db post-backup-unlock"],
        "the cleanup did not unlock"
    );
}

#[test]
fn a_failed_unlock_after_a_restore_ends_with_the_restore_cleanup_command_also_in_the_report() {
    let vm = vm();
    backup(&vm).assert_success();
    let artifact = vm.artifact_dir();
    vm.job("db")
        .script("post-restore-unlock", "echo unlock broke >&2\nexit 1");
    let report = vm.dir.path().join("restore-report.html");
    let run = restore_with(&vm, &artifact, &["--report", report.to_str().unwrap()]);
    run.assert_code(8);
    assert_eq!(
        cleanup_command(&run),
        format!("bbr-agent --root {} restore-cleanup", vm.root().display()),
        "{}",
        run.explain()
    );
    let html = fs::read_to_string(&report).unwrap();
    assert!(
        html.contains("restore-cleanup"),
        "the report lacks the cleanup command\n{html}"
    );
}

#[test]
fn a_driver_run_with_a_failed_unlock_ends_with_the_deployments_cleanup_command() {
    let mut fleet = Fleet::new();
    let db = fleet.add("db", 0);
    db.job("db").recording_locks().copying_backup_restore();
    db.job("db")
        .script("post-backup-unlock", "echo unlock broke >&2\nexit 1");
    let inventory = fleet.local_inventory();
    let run = fleet.backup(&inventory, &[]);
    run.assert_code(8);
    let command = cleanup_command(&run);
    assert_eq!(
        command,
        format!(
            "bbr-agent deployment --inventory {} backup-cleanup",
            inventory.display()
        ),
        "{}",
        run.explain()
    );
}

#[test]
fn a_run_that_leaves_nothing_locked_names_no_cleanup() {
    let broken = vm();
    broken.job("db").script("backup", "echo broke >&2\nexit 1");
    let failed = backup(&broken);
    failed.assert_code(1);
    let ok = vm();
    let good = backup(&ok);
    good.assert_success();
    for run in [&failed, &good] {
        assert!(
            !run.stderr.contains("to clean up") && !run.stdout.contains("to clean up"),
            "nothing is left to clean up, yet a cleanup is named\n{}",
            run.explain()
        );
    }
}

/// Ctrl-C (SIGINT) to the driver while a restore script runs on a VM (issue 18): the
/// sessions end at once and each VM's agent unlocks what it locked; the driver says so, one
/// line per VM, blames no unlock script and names no VM unreachable, and ends with the
/// interruption and then the cleanup command. The report's exit code is the process's.
#[test]
fn ctrl_c_during_a_restore_through_the_driver_leaves_the_unlocks_to_each_agent_and_says_so() {
    use faults_support::{Spawned, assert_driver_left_the_unlocks_to_the_agents, eventually};
    use std::time::Duration;

    let mut fleet = Fleet::new();
    for group in ["db", "web"] {
        let vm = fleet.add(group, 0);
        vm.job(group).recording_locks().copying_backup_restore();
        fs::write(vm.data_dir(group).join("rows"), "1\n").unwrap();
    }
    let inventory = fleet.local_inventory();
    fleet.backup(&inventory, &[]).assert_success();
    let artifact = fleet.artifact_dir();
    for group in ["db", "web"] {
        fleet
            .vm(group, 0)
            .job(group)
            .script("restore", "echo \"$ME\" >> \"$LOG\"\nexec sleep 30");
    }
    fs::write(fleet.log_path(), "").unwrap();
    let report = fleet.dir.path().join("restore-report.html");
    let args: Vec<String> = [
        "deployment",
        "--inventory",
        inventory.to_str().unwrap(),
        "restore",
        "--artifact-path",
        artifact.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut driver = Spawned::start(fleet.dir.path(), &args, &[]);
    // Restores run one at a time: web's waits for db's, and is not started once the run is
    // interrupted (its VM's session ended, it would only say it could not start).
    assert!(
        eventually(Duration::from_secs(30), || fleet
            .calls()
            .iter()
            .any(|c| c.ends_with(" restore"))),
        "no restore script started\n{}",
        driver.explain()
    );
    driver.signal(nix::sys::signal::Signal::SIGINT);
    let exit = driver.wait(Duration::from_secs(30));
    exit.assert_code(130);
    assert_driver_left_the_unlocks_to_the_agents(&exit, &["db/0", "web/0"], "restore-cleanup");
    assert!(
        exit.stderr
            .contains("while restore scripts ran; the restore is incomplete"),
        "{}",
        exit.explain
    );
    let unlocked = [
        "db/0 db post-restore-unlock",
        "web/0 web post-restore-unlock",
    ];
    assert!(
        eventually(Duration::from_secs(10), || {
            let calls = fleet.calls();
            unlocked.iter().all(|u| calls.iter().any(|c| c == u))
                && ["db", "web"]
                    .iter()
                    .all(|g| !fleet.vm(g, 0).store().exists())
        }),
        "every VM unlocked and removed its store: {:?}\n{}",
        fleet.calls(),
        exit.explain
    );
    let html = fs::read_to_string(&report).unwrap();
    assert!(
        html.contains("exit code 130"),
        "the report gives the process's exit code\n{html}"
    );
}
