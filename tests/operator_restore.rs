//! What the operator reads when a restore cannot go ahead or is cut short: a failed backup is
//! named as one (when it started, that it cannot be restored), and the deployment a local
//! restore names is the VM's, whatever the artifact directory is called.

mod common;

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
