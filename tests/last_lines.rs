//! What a failed run's last lines say: which instance, job and script failed and how it
//! ended, locally and through the driver; and a cleanup only when something may be left.

mod common;

use std::fs;

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

/// The `error: ` lines of a run, in order.
fn errors(run: &Run) -> Vec<&str> {
    run.stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect()
}

fn assert_error_line(run: &Run, line: &str) {
    assert!(
        errors(run).contains(&line),
        "no error line {line:?}\n{}",
        run.explain()
    );
}

#[test]
fn a_failed_lock_is_named_with_its_instance_job_and_exit_locally_and_through_the_driver() {
    let vm = vm();
    vm.job("db")
        .script("pre-backup-lock", "echo lock broke >&2\nexit 3");
    let local = backup(&vm);
    local.assert_code(4);
    assert_error_line(
        &local,
        "error: backend/0 db pre-backup-lock failed (exit status 3): backup scripts were not run",
    );

    let mut fleet = Fleet::new();
    let db = fleet.add("db", 0);
    db.job("db").recording_locks().copying_backup_restore();
    db.job("db")
        .script("pre-backup-lock", "echo lock broke >&2\nexit 3");
    let inventory = fleet.local_inventory();
    let driven = fleet.backup(&inventory, &[]);
    driven.assert_code(4);
    assert_error_line(
        &driven,
        "error: db/0 db pre-backup-lock failed (exit status 3): backup scripts were not run",
    );
}

#[test]
fn failed_backup_and_unlock_scripts_are_each_named_and_many_are_capped() {
    let vm = vm();
    for job in ["a", "b", "c", "d"] {
        vm.job(job).script("backup", "exit 5");
    }
    vm.job("db")
        .script("post-backup-unlock", "echo unlock broke >&2\nexit 2");
    let run = backup(&vm);
    run.assert_code(9);
    let named = errors(&run)
        .iter()
        .filter(|l| l.contains(" backup failed (exit status 5): nothing was drained"))
        .count();
    assert_eq!(named, 3, "{}", run.explain());
    assert_error_line(
        &run,
        "error: and 1 more failed (see FAILED above): nothing was drained",
    );
    assert_error_line(
        &run,
        "error: backend/0 db post-backup-unlock failed (exit status 2)",
    );
}

#[test]
fn a_failed_lock_whose_unlocks_ran_names_no_cleanup_and_says_what_to_fix() {
    let vm = vm();
    vm.job("db").script(
        "pre-backup-lock",
        "echo \"$ME\" >> \"$LOG\"\necho lock broke >&2\nexit 3",
    );
    let run = backup(&vm);
    run.assert_code(4);
    let fix =
        "every lock was released; fix backend/0 db's pre-backup-lock and run the backup again";
    assert_eq!(
        errors(&run).last().copied(),
        Some(format!("error: {fix}").as_str()),
        "{}",
        run.explain()
    );
    assert!(
        !run.stderr.contains("to clean up"),
        "a cleanup is named though nothing is left\n{}",
        run.explain()
    );
    assert!(
        vm.calls().contains(&"db post-backup-unlock".to_string()),
        "{:?}\n{}",
        vm.calls(),
        run.explain()
    );
    let report = fs::read_to_string(vm.artifact_dir().join("report.html")).unwrap();
    assert!(
        report.contains("Every lock was released; fix backend/0 db&#39;s pre-backup-lock and run the backup again."),
        "the report's next step does not say what to fix\n{report}"
    );
    assert!(
        !report.contains("backup-cleanup"),
        "the report names a cleanup\n{report}"
    );
}

/// A session command that passes the driver's first 50 reads (200 KiB at most) on to the
/// agent, each at once, and then stops reading: the restore's copy of a larger artifact
/// breaks part-way.
const CUT_SHORT: &str = "dd bs=4096 count=50 2>/dev/null | exec {agent} --root {root} serve";

#[test]
fn a_restore_whose_copy_to_a_vm_fails_names_its_instance_and_job_once() {
    let mut fleet = Fleet::new();
    let db = fleet.add("db", 0);
    db.job("pgsql").recording_locks().copying_backup_restore();
    // Random-ish bytes, so the tar is larger than what reaches the agent.
    let data: Vec<u8> = (0..(4u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(db.data_dir("pgsql").join("rows"), data).unwrap();
    let inventory = fleet.local_inventory();
    fleet.backup(&inventory, &[]).assert_success();
    let artifact = fleet.artifact_dir();
    fs::write(fleet.log_path(), "").unwrap();

    let cut = fleet.inventory_with(|m| {
        CUT_SHORT
            .replace("{agent}", common::AGENT)
            .replace("{root}", &m.vm.root().display().to_string())
    });
    let run = fleet.driver(
        &cut,
        &["restore", "--artifact-path", artifact.to_str().unwrap()],
    );
    assert_eq!(
        run.code.map(|c| c & 1),
        Some(1),
        "not a general failure\n{}",
        run.explain()
    );
    let copy: Vec<&str> = errors(&run)
        .into_iter()
        .filter(|l| l.contains("pgsql"))
        .collect();
    let [line] = copy[..] else {
        panic!("not one error line names the job\n{}", run.explain());
    };
    assert!(
        line.starts_with("error: db/0 pgsql: ") || line.starts_with("error: db/0: job 'pgsql'"),
        "the line does not start with the instance and job: {line:?}\n{}",
        run.explain()
    );
    assert_eq!(
        (line.matches("db/0").count(), line.matches("pgsql").count()),
        (1, 1),
        "the instance or the job is named more than once: {line:?}\n{}",
        run.explain()
    );
    assert!(
        fleet.calls().is_empty(),
        "a script ran after the copy failed: {:?}\n{}",
        fleet.calls(),
        run.explain()
    );
}
