//! Every failure route of a workflow (docs/behaviour.md, "Workflows"): which scripts still run, what happens to the store
//! and the artifact, and the exit code's bits (1 general, 4 lock, 8 unlock, 16 cleanup).
//!
//! One VM with three jobs locked in the order api -> db -> blobstore (backup and restore alike);
//! each test makes one or two scripts fail.

mod common;

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{AGENT, Run, Vm};

const ORDER: [&str; 3] = ["api", "db", "blobstore"];

fn metadata(after: Option<&str>) -> String {
    match after {
        Some(next) => format!(
            "backup_should_be_locked_before:\n- job_name: {next}\n  release: acme-release\n\
             restore_should_be_locked_before:\n- job_name: {next}\n  release: acme-release"
        ),
        None => String::new(),
    }
}

/// The body of a script that records itself, then `rest`.
fn recording_then(rest: &str) -> String {
    format!("echo \"$ME\" >> \"$LOG\"\n{rest}")
}

/// The body of a failing script: it records itself, says something on both streams, exits 1.
const FAILING: &str = "echo \"$ME\" >> \"$LOG\"\n\
                       echo \"stdout of $ME: it went wrong\"\n\
                       echo \"stderr of $ME: details here\" >&2\n\
                       exit 1";

/// post-backup-unlock records `<job> post-backup-unlock <BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL>`.
const UNLOCK_RECORDING: &str = "echo \"$ME $BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL\" >> \"$LOG\"";

fn three_job_vm() -> Vm {
    let vm = Vm::with_identity("acme", "backend");
    for (i, name) in ORDER.iter().enumerate() {
        vm.job(name)
            .recording("pre-backup-lock")
            .script(
                "backup",
                &recording_then("echo \"$ME\" > \"${BBR_ARTIFACT_DIRECTORY}data\""),
            )
            .script("post-backup-unlock", UNLOCK_RECORDING)
            .recording("pre-restore-lock")
            .script(
                "restore",
                &recording_then("test -f \"${BBR_ARTIFACT_DIRECTORY}data\""),
            )
            .recording("post-restore-unlock")
            .metadata(&metadata(ORDER.get(i + 1).copied()));
    }
    vm
}

fn backup(vm: &Vm) -> Run {
    vm.agent(&[
        "backup",
        "--artifact-path",
        vm.artifacts().to_str().unwrap(),
    ])
}

/// A good backup to restore from; the call log is emptied afterwards.
fn backed_up(vm: &Vm) -> PathBuf {
    backup(vm).assert_success();
    fs::write(vm.log_path(), "").unwrap();
    vm.artifact_dir()
}

fn restore(vm: &Vm, artifact: &Path) -> Run {
    vm.agent(&["restore", "--artifact-path", artifact.to_str().unwrap()])
}

fn unlocks(jobs: &[&str], successful: bool) -> Vec<String> {
    jobs.iter()
        .map(|j| format!("{j} post-backup-unlock {successful}"))
        .collect()
}

fn of_script(calls: &[String], script: &str) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c.split(' ').nth(1) == Some(script))
        .cloned()
        .collect()
}

fn reversed() -> Vec<&'static str> {
    ORDER.iter().rev().copied().collect()
}

fn lines(jobs: &[&str], script: &str) -> Vec<String> {
    jobs.iter().map(|j| format!("{j} {script}")).collect()
}

fn tars(artifact: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(artifact)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tar"))
        .collect();
    names.sort();
    names
}

fn artifact_metadata(artifact: &Path, run: &Run) -> serde_yaml::Value {
    let text = fs::read_to_string(artifact.join("metadata")).unwrap_or_else(|e| {
        panic!(
            "no metadata in {}: {e}\n{}",
            artifact.display(),
            run.explain()
        )
    });
    serde_yaml::from_str(&text).unwrap()
}

fn finish_time(artifact: &Path, run: &Run) -> Option<String> {
    let metadata = artifact_metadata(artifact, run);
    metadata["backup_activity"]["finish_time"]
        .as_str()
        .map(str::to_string)
}

/// A stderr line carries both `prefix` (`group/index job script`) at its start and `text`.
fn assert_prefixed_line(run: &Run, prefix: &str, text: &str) {
    assert!(
        run.stderr
            .lines()
            .any(|l| l.starts_with(prefix) && l.contains(text)),
        "stderr has no line starting {prefix:?} with {text:?}\n{}",
        run.explain()
    );
}

fn assert_calls(vm: &Vm, expected: &[String], run: &Run) {
    assert_eq!(vm.calls(), expected, "call log\n{}", run.explain());
}

fn concat(parts: &[Vec<String>]) -> Vec<String> {
    parts.concat()
}

// ---------------------------------------------------------------- backup

#[test]
fn a_lock_failure_skips_backup_unlocks_every_job_with_false_and_exits_4() {
    let vm = three_job_vm();
    vm.job("db").script("pre-backup-lock", FAILING);
    // A job with no lock script at all: its lock "never ran", its unlock must.
    vm.job("worker")
        .script("backup", "true")
        .script("post-backup-unlock", UNLOCK_RECORDING);

    let run = backup(&vm);
    run.assert_code(4);

    let calls = vm.calls();
    let locks = of_script(&calls, "pre-backup-lock");
    assert_eq!(
        &locks[..2],
        lines(&["api", "db"], "pre-backup-lock"),
        "{}",
        run.explain()
    );
    assert!(
        of_script(&calls, "backup").is_empty(),
        "no backup script may run: {calls:?}\n{}",
        run.explain()
    );
    let mut got_unlocks = of_script(&calls, "post-backup-unlock");
    assert_eq!(
        got_unlocks.len(),
        4,
        "every job is unlocked: {calls:?}\n{}",
        run.explain()
    );
    // worker has no lock dependencies: it shares the first lock step with api, so it
    // unlocks in the last step; the rest is blobstore, db, api.
    let worker_at = got_unlocks
        .iter()
        .position(|l| l == "worker post-backup-unlock false")
        .unwrap_or_else(|| {
            panic!(
                "worker is unlocked with false: {calls:?}\n{}",
                run.explain()
            )
        });
    assert!(worker_at >= 2, "{calls:?}\n{}", run.explain());
    got_unlocks.remove(worker_at);
    assert_eq!(
        got_unlocks,
        unlocks(&reversed(), false),
        "reverse order, all with false\n{}",
        run.explain()
    );
    assert!(
        calls.last().unwrap().contains("post-backup-unlock"),
        "unlock comes last: {calls:?}"
    );

    assert!(!vm.store().exists(), "store removed\n{}", run.explain());
    assert_prefixed_line(
        &run,
        "backend/0 db pre-backup-lock",
        "stdout of db pre-backup-lock: it went wrong",
    );
    assert_prefixed_line(
        &run,
        "backend/0 db pre-backup-lock",
        "stderr of db pre-backup-lock: details here",
    );
    let artifact = vm.artifact_dir();
    assert!(
        artifact_metadata(&artifact, &run)["backup_activity"]["start_time"]
            .as_str()
            .is_some(),
        "{}",
        run.explain()
    );
    assert_eq!(
        finish_time(&artifact, &run),
        None,
        "a failed backup never looks complete\n{}",
        run.explain()
    );
    assert_eq!(tars(&artifact), Vec::<String>::new(), "{}", run.explain());
}

#[test]
fn a_backup_failure_unlocks_with_false_drains_nothing_and_exits_1() {
    let vm = three_job_vm();
    vm.job("db").script("backup", FAILING);

    let run = backup(&vm);
    run.assert_code(1);
    let calls = vm.calls();
    assert_eq!(
        &calls[..3],
        lines(&ORDER, "pre-backup-lock"),
        "{}",
        run.explain()
    );
    let mut backups = calls[3..6].to_vec();
    backups.sort();
    let mut all_backups = lines(&ORDER, "backup");
    all_backups.sort();
    assert_eq!(backups, all_backups, "{}", run.explain());
    assert_eq!(
        &calls[6..],
        unlocks(&reversed(), false),
        "{}",
        run.explain()
    );
    assert_prefixed_line(
        &run,
        "backend/0 db backup",
        "stderr of db backup: details here",
    );

    let artifact = vm.artifact_dir();
    assert_eq!(
        tars(&artifact),
        Vec::<String>::new(),
        "nothing drained\n{}",
        run.explain()
    );
    assert_eq!(finish_time(&artifact, &run), None, "{}", run.explain());
    assert!(!vm.store().exists(), "{}", run.explain());
}

#[test]
fn an_unlock_failure_after_a_good_backup_still_drains_and_exits_8() {
    let vm = three_job_vm();
    vm.job("db").script(
        "post-backup-unlock",
        &format!("{UNLOCK_RECORDING}\necho 'unlock broke' >&2\nexit 1"),
    );

    let run = backup(&vm);
    run.assert_code(8);
    let calls = vm.calls();
    assert_eq!(
        of_script(&calls, "post-backup-unlock"),
        unlocks(&reversed(), true),
        "every unlock runs, after a good backup: true\n{}",
        run.explain()
    );
    assert_prefixed_line(&run, "backend/0 db post-backup-unlock", "unlock broke");
    let artifact = vm.artifact_dir();
    assert_eq!(
        tars(&artifact),
        [
            "backend-0-api.tar",
            "backend-0-blobstore.tar",
            "backend-0-db.tar"
        ],
        "{}",
        run.explain()
    );
    assert!(
        finish_time(&artifact, &run).is_some(),
        "the drained backup is complete\n{}",
        run.explain()
    );
    assert!(!vm.store().exists(), "{}", run.explain());
}

#[test]
fn a_lock_failure_and_an_unlock_failure_exit_12() {
    let vm = three_job_vm();
    vm.job("db").script("pre-backup-lock", FAILING);
    vm.job("api")
        .script("post-backup-unlock", &format!("{UNLOCK_RECORDING}\nexit 3"));

    let run = backup(&vm);
    run.assert_code(12);
    assert_eq!(
        of_script(&vm.calls(), "post-backup-unlock"),
        unlocks(&reversed(), false),
        "{}",
        run.explain()
    );
    assert!(!vm.store().exists(), "{}", run.explain());
}

// ---------------------------------------------------------------- restore

#[test]
fn a_restore_failure_still_unlocks_every_job_and_exits_1() {
    let vm = three_job_vm();
    let artifact = backed_up(&vm);
    vm.job("db").script("restore", FAILING);

    let run = restore(&vm, &artifact);
    run.assert_code(1);
    let calls = vm.calls();
    assert_eq!(
        of_script(&calls, "pre-restore-lock"),
        lines(&ORDER, "pre-restore-lock"),
        "{}",
        run.explain()
    );
    assert!(
        calls.contains(&"db restore".to_string()),
        "{calls:?}\n{}",
        run.explain()
    );
    assert_eq!(
        &calls[calls.len() - 3..],
        lines(&reversed(), "post-restore-unlock"),
        "unlock runs last, for every job, in reverse\n{}",
        run.explain()
    );
    assert_prefixed_line(
        &run,
        "backend/0 db restore",
        "stdout of db restore: it went wrong",
    );
    assert!(!vm.store().exists(), "{}", run.explain());
}

#[test]
fn a_pre_restore_lock_failure_skips_restore_unlocks_and_exits_4() {
    let vm = three_job_vm();
    let artifact = backed_up(&vm);
    vm.job("db").script("pre-restore-lock", FAILING);

    let run = restore(&vm, &artifact);
    run.assert_code(4);
    let calls = vm.calls();
    assert_eq!(
        &of_script(&calls, "pre-restore-lock")[..2],
        lines(&["api", "db"], "pre-restore-lock"),
        "{}",
        run.explain()
    );
    assert!(
        of_script(&calls, "restore").is_empty(),
        "no restore script may run: {calls:?}\n{}",
        run.explain()
    );
    assert_eq!(
        of_script(&calls, "post-restore-unlock"),
        lines(&reversed(), "post-restore-unlock"),
        "{}",
        run.explain()
    );
    assert!(
        calls.last().unwrap().ends_with("post-restore-unlock"),
        "{calls:?}"
    );
    assert_prefixed_line(
        &run,
        "backend/0 db pre-restore-lock",
        "stderr of db pre-restore-lock: details here",
    );
    assert!(!vm.store().exists(), "{}", run.explain());
}

#[test]
fn a_post_restore_unlock_failure_exits_8_after_every_unlock() {
    let vm = three_job_vm();
    let artifact = backed_up(&vm);
    vm.job("blobstore").script("post-restore-unlock", FAILING);

    let run = restore(&vm, &artifact);
    run.assert_code(8);
    let calls = vm.calls();
    let mut restores = of_script(&calls, "restore");
    restores.sort();
    let mut all = lines(&ORDER, "restore");
    all.sort();
    assert_eq!(restores, all, "{}", run.explain());
    assert_eq!(
        of_script(&calls, "post-restore-unlock"),
        lines(&reversed(), "post-restore-unlock"),
        "a failed unlock does not stop the others\n{}",
        run.explain()
    );
    assert!(!vm.store().exists(), "{}", run.explain());
}

/// The body of an unlock script that records itself and fails the first time only (a
/// `monit start` that timed out, a CredHub down for a minute), the second time succeeds.
fn failing_once(marker: &Path) -> String {
    recording_then(&format!(
        "if [ ! -e '{m}' ]; then touch '{m}'; echo \"stderr of $ME: monit start timed out\" >&2; exit 1; fi",
        m = marker.display()
    ))
}

/// An unlock that failed was attempted: the run reports it (exit 8, the script's output) and
/// the next backup runs, as under BBR. Before, the journal kept the job locked and every later
/// backup was refused until `backup-cleanup`.
#[test]
fn an_unlock_that_fails_once_does_not_stop_the_next_backup() {
    let vm = three_job_vm();
    let marker = vm.dir.path().join("unlock-failed-once");
    vm.job("db").script(
        "post-backup-unlock",
        &format!(
            "{UNLOCK_RECORDING}
{}",
            failing_once(&marker)
        ),
    );

    let first = backup(&vm);
    first.assert_code(8);
    assert_prefixed_line(
        &first,
        "backend/0 db post-backup-unlock stderr:",
        "stderr of db post-backup-unlock: monit start timed out",
    );
    // Another artifact path: two backups within one second would want the same directory.
    let elsewhere = vm.dir.path().join("second");
    fs::create_dir_all(&elsewhere).unwrap();
    let second = vm.agent(&["backup", "--artifact-path", elsewhere.to_str().unwrap()]);
    second.assert_success();
    assert_eq!(
        of_script(&vm.calls(), "pre-backup-lock").len(),
        6,
        "the second backup locked every job again\n{}",
        second.explain()
    );
}

/// The same for a restore: a failed `post-restore-unlock` does not stop the next restore.
#[test]
fn a_restore_unlock_that_fails_once_does_not_stop_the_next_restore() {
    let vm = three_job_vm();
    let artifact = backed_up(&vm);
    let marker = vm.dir.path().join("unlock-failed-once");
    vm.job("api")
        .script("post-restore-unlock", &failing_once(&marker));

    restore(&vm, &artifact).assert_code(8);
    let second = restore(&vm, &artifact);
    second.assert_success();
    assert_eq!(
        of_script(&vm.calls(), "restore").len(),
        6,
        "the second restore ran every restore script\n{}",
        second.explain()
    );
}

// ---------------------------------------------------------------- cleanup commands

#[test]
fn backup_cleanup_unlocks_every_job_with_false_in_reverse_and_removes_the_store() {
    let vm = three_job_vm();
    vm.write("var/vcap/store/bbr-backup/db/half-written", "partial");

    let run = vm.agent(&["backup-cleanup"]);
    run.assert_success();
    assert_calls(&vm, &unlocks(&reversed(), false), &run);
    assert!(!vm.store().exists(), "{}", run.explain());
}

#[test]
fn backup_cleanup_with_a_failing_unlock_unlocks_the_rest_removes_the_store_and_exits_8() {
    let vm = three_job_vm();
    vm.write("var/vcap/store/bbr-backup/db/half-written", "partial");
    vm.job("db")
        .script("post-backup-unlock", &format!("{UNLOCK_RECORDING}\nexit 1"));

    let run = vm.agent(&["backup-cleanup"]);
    run.assert_code(8);
    assert_calls(&vm, &unlocks(&reversed(), false), &run);
    assert!(!vm.store().exists(), "{}", run.explain());
}

#[test]
fn restore_cleanup_unlocks_every_job_in_reverse_and_removes_the_store() {
    let vm = three_job_vm();
    vm.write("var/vcap/store/bbr-backup/db/data", "restored half");

    let run = vm.agent(&["restore-cleanup"]);
    run.assert_success();
    assert_calls(&vm, &lines(&reversed(), "post-restore-unlock"), &run);
    assert!(!vm.store().exists(), "{}", run.explain());
}

#[test]
fn cleanup_commands_without_a_store_still_unlock_and_succeed() {
    let vm = three_job_vm();
    let run = vm.agent(&["backup-cleanup"]);
    run.assert_success();
    assert_calls(&vm, &unlocks(&reversed(), false), &run);
}

// ---------------------------------------------------------------- cleanup failure (16)
//
// As root nothing short of a mount or an immutable attribute stops the store's removal, and
// neither is dependable on a CI machine. So these tests drop the agent (and so its scripts) to
// `nobody`, give it the VM, and have a script leave a directory it cannot write in the store:
// removing the store then fails with EACCES, a real error no implementation may ignore.

const NOBODY: u32 = 65534;

/// Runs the agent as `nobody` against `vm`, after handing the whole temp dir to it.
fn agent_as_nobody(vm: &Vm, args: &[&str]) -> Run {
    let chown = Command::new("chown")
        .arg("-R")
        .arg(format!("{NOBODY}:{NOBODY}"))
        .arg(vm.dir.path())
        .status()
        .expect("run chown");
    assert!(
        chown.success(),
        "chown -R the VM to nobody (the test runs as root)"
    );
    let mut command = Command::new(AGENT);
    command
        .arg("--root")
        .arg(vm.root())
        .args(args)
        .current_dir(vm.dir.path())
        .uid(NOBODY)
        .gid(NOBODY);
    Run::of(&mut command, vm.dir.path())
}

/// `restore` or `backup` body addition: leave the job's artifact directory unwritable.
const PIN_ARTIFACT_DIR: &str = "chmod 0555 \"$BBR_ARTIFACT_DIRECTORY\"";

#[test]
fn a_store_that_cannot_be_removed_after_a_good_backup_exits_16_with_the_backup_drained() {
    let vm = three_job_vm();
    vm.job("blobstore").script(
        "backup",
        &recording_then(&format!(
            "echo \"$ME\" > \"${{BBR_ARTIFACT_DIRECTORY}}data\"\n{PIN_ARTIFACT_DIR}"
        )),
    );
    let artifacts = vm.artifacts();
    let run = agent_as_nobody(
        &vm,
        &["backup", "--artifact-path", artifacts.to_str().unwrap()],
    );
    run.assert_code(16)
        .assert_stderr_contains(vm.store().to_str().unwrap())
        .assert_stderr_contains("Permission denied");
    assert_eq!(
        of_script(&vm.calls(), "post-backup-unlock"),
        unlocks(&reversed(), true),
        "{}",
        run.explain()
    );
    let artifact = vm.artifact_dir();
    assert_eq!(tars(&artifact).len(), 3, "{}", run.explain());
    assert!(finish_time(&artifact, &run).is_some(), "{}", run.explain());
}

#[test]
fn a_store_that_cannot_be_removed_after_a_restore_exits_16_after_every_unlock() {
    let vm = three_job_vm();
    let artifacts = vm.artifacts();
    agent_as_nobody(
        &vm,
        &["backup", "--artifact-path", artifacts.to_str().unwrap()],
    )
    .assert_success();
    let artifact = vm.artifact_dir();
    fs::write(vm.log_path(), "").unwrap();
    vm.job("db").script(
        "restore",
        &recording_then(&format!(
            "test -f \"${{BBR_ARTIFACT_DIRECTORY}}data\"\n{PIN_ARTIFACT_DIR}"
        )),
    );

    let run = agent_as_nobody(
        &vm,
        &["restore", "--artifact-path", artifact.to_str().unwrap()],
    );
    run.assert_code(16)
        .assert_stderr_contains(vm.store().to_str().unwrap());
    assert_eq!(
        of_script(&vm.calls(), "post-restore-unlock"),
        lines(&reversed(), "post-restore-unlock"),
        "{}",
        run.explain()
    );
}

#[test]
fn backup_cleanup_that_cannot_remove_the_store_exits_16_after_every_unlock() {
    let vm = three_job_vm();
    vm.write("var/vcap/store/bbr-backup/db/half-written", "partial");
    let run = {
        // Pinned after the chown inside agent_as_nobody would be too late; pin first, the
        // chown -R does not touch modes.
        fs::set_permissions(
            vm.store().join("db"),
            std::os::unix::fs::PermissionsExt::from_mode(0o555),
        )
        .unwrap();
        agent_as_nobody(&vm, &["backup-cleanup"])
    };
    run.assert_code(16)
        .assert_stderr_contains(vm.store().to_str().unwrap());
    assert_calls(&vm, &unlocks(&reversed(), false), &run);
}

// ---------------------------------------------------------------- pre-backup-check

#[test]
fn pre_backup_check_passes_a_good_vm_and_runs_nothing_but_metadata() {
    let vm = three_job_vm();
    let run = vm.agent(&["pre-backup-check"]);
    run.assert_success()
        .assert_stdout_contains("can be backed up");
    assert_calls(&vm, &[], &run);
    assert!(!vm.store().exists(), "{}", run.explain());
}

#[test]
fn pre_backup_check_fails_when_no_job_has_a_backup_script() {
    let vm = Vm::with_identity("acme", "backend");
    vm.job("api").recording_locks();
    vm.job("db").recording_locks().recording("restore");
    let run = vm.agent(&["pre-backup-check"]);
    run.assert_code(1)
        .assert_stdout_contains("cannot be backed up")
        .assert_stderr_contains("no backup script");
    assert_calls(&vm, &[], &run);
}

#[test]
fn pre_backup_check_fails_on_a_leftover_store_and_names_backup_cleanup() {
    let vm = three_job_vm();
    vm.write("var/vcap/store/bbr-backup/db/half-written", "partial");
    let run = vm.agent(&["pre-backup-check"]);
    run.assert_code(1)
        .assert_stderr_contains(vm.store().to_str().unwrap())
        .assert_stderr_contains("backup-cleanup");
    assert_calls(&vm, &[], &run);
    assert!(
        vm.store().join("db/half-written").exists(),
        "the leftover is left alone\n{}",
        run.explain()
    );
}

#[test]
fn pre_backup_check_fails_on_a_lock_cycle() {
    let vm = three_job_vm();
    vm.job("blobstore").metadata(&metadata(Some("api")));
    let run = vm.agent(&["pre-backup-check"]);
    run.assert_code(1).assert_stderr_contains("cyclic");
    assert_calls(&vm, &[], &run);
}

#[test]
fn every_script_of_the_happy_path_runs_once_in_order() {
    // The baseline the failure routes differ from.
    let vm = three_job_vm();
    let run = backup(&vm);
    run.assert_success();
    let calls = vm.calls();
    let mut backups = calls[3..6].to_vec();
    backups.sort();
    let mut sorted_backups = lines(&ORDER, "backup");
    sorted_backups.sort();
    assert_eq!(
        concat(&[calls[..3].to_vec(), backups, calls[6..].to_vec()]),
        concat(&[
            lines(&ORDER, "pre-backup-lock"),
            sorted_backups,
            unlocks(&reversed(), true)
        ]),
        "{}",
        run.explain()
    );
}
