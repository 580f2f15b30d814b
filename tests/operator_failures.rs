//! Failures a new operator provokes, each met with one line that names the file, job or flag
//! and says what to do: the parent of the backups given as the backup, a restore onto a VM
//! without restore scripts, a script without its execute bit, an unknown job, a VM that is
//! not a BOSH VM.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::Vm;

fn vm() -> Vm {
    let vm = Vm::with_identity("acme", "backend");
    vm.job("db").recording_locks().copying_backup_restore();
    fs::write(vm.data_dir("db").join("rows"), b"1\n").unwrap();
    vm
}

fn backup(vm: &Vm) -> common::Run {
    vm.agent(&[
        "backup",
        "--artifact-path",
        vm.artifacts().to_str().unwrap(),
    ])
}

fn restore(vm: &Vm, path: &std::path::Path) -> common::Run {
    vm.agent(&["restore", "--artifact-path", path.to_str().unwrap()])
}

#[test]
fn a_restore_from_the_directory_the_backups_were_made_in_names_the_backup_to_give() {
    let vm = vm();
    backup(&vm).assert_success();
    let backup_dir = vm.artifact_dir();
    let run = restore(&vm, &vm.artifacts());
    run.assert_code(1).assert_stderr_contains(&format!(
        "{} is not a backup but holds one: give --artifact-path {}",
        vm.artifacts().display(),
        backup_dir.display()
    ));
    assert!(
        vm.calls().iter().all(|c| !c.contains("restore")),
        "a restore script ran\n{}",
        run.explain()
    );

    let missing = vm.dir.path().join("nowhere");
    restore(&vm, &missing)
        .assert_code(1)
        .assert_stderr_contains(&format!(
            "{} does not exist: give --artifact-path the backup's own directory",
            missing.display()
        ));
    let file = common::write_file(&vm.dir.path().join("a-file"), b"x");
    restore(&vm, &file)
        .assert_code(1)
        .assert_stderr_contains("a-file is not a directory: give --artifact-path");
    let empty = vm.dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    restore(&vm, &empty)
        .assert_code(1)
        .assert_stderr_contains("empty holds no `metadata` file, so it is not a BBR backup");
}

#[test]
fn a_restore_onto_a_vm_without_restore_scripts_is_refused_before_any_lock() {
    let vm = vm();
    backup(&vm).assert_success();
    let artifact = vm.artifact_dir();
    // Another VM: only a lock-only job, as a VM of another instance group would have.
    let other = Vm::with_identity("acme", "api");
    other.job("web").recording_locks();
    let run = restore(&other, &artifact);
    run.assert_code(1).assert_stderr_contains(
        "deployment 'acme' has no restore scripts (no job here has bin/bbr/restore), so nothing in the backup can be restored; nothing was locked. The backup holds backend/0 db",
    );
    assert_eq!(
        other.calls(),
        Vec::<String>::new(),
        "a lock or unlock ran on a VM where nothing could be restored\n{}",
        run.explain()
    );
    assert!(
        !run.stdout.contains("Restored"),
        "a restore that restored nothing says it restored\n{}",
        run.explain()
    );
}

#[test]
fn a_script_without_its_execute_bit_is_refused_before_any_lock_and_named_with_the_fix() {
    let vm = vm();
    let script = vm.job("db").dir.join("bin/bbr/backup");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o644)).unwrap();
    let list = vm.agent(&["list"]);
    list.assert_success()
        .assert_stdout_contains("    NOT EXECUTABLE: backup (each would fail to start");
    let refused = "backend/0 db: bin/bbr/backup is not executable, so it would fail to start; nothing was locked: the job's release must ship it executable (chmod +x)";
    let run = backup(&vm);
    run.assert_code(1).assert_stderr_contains(refused);
    assert_eq!(vm.calls(), Vec::<String>::new(), "{}", run.explain());
    vm.agent(&["pre-backup-check"])
        .assert_code(1)
        .assert_stderr_contains(refused);

    // Through the driver: the VM's description says so.
    let mut fleet = common::fleet::Fleet::new();
    fleet
        .add("db", 0)
        .job("db")
        .recording_locks()
        .copying_backup_restore();
    let restore_script = fleet.vm("db", 0).job("db").dir.join("bin/bbr/restore");
    fs::set_permissions(&restore_script, fs::Permissions::from_mode(0o600)).unwrap();
    let inventory = fleet.local_inventory();
    fleet.backup(&inventory, &[]).assert_success();
    fs::write(fleet.log_path(), "").unwrap();
    let artifact = fleet.artifact_dir();
    let run = fleet.driver(
        &inventory,
        &["restore", "--artifact-path", artifact.to_str().unwrap()],
    );
    run.assert_code(1).assert_stderr_contains(
        "db/0 db: bin/bbr/restore is not executable, so it would fail to start; nothing was locked",
    );
    assert_eq!(fleet.calls(), Vec::<String>::new(), "{}", run.explain());

    // Run by hand, the start failure itself names the file, its mode and the fix.
    let by_hand = vm.agent(&["run", "backup"]);
    by_hand.assert_code(1).assert_stdout_contains(&format!(
        "backend/0 db backup: FAILED (could not be started: {} is not executable (mode 0644): the job's release must ship it executable (chmod +x))",
        script.display()
    ));
    assert!(
        !by_hand.stdout.contains("os error 13"),
        "a bare errno\n{}",
        by_hand.explain()
    );
}

#[test]
fn run_with_an_unknown_job_names_the_jobs_there_are_and_a_missing_script_names_the_scripts() {
    let vm = vm();
    vm.job("web").recording("pre-backup-lock");
    let unknown = vm.agent(&["run", "backup", "--job", "postgres"]);
    unknown.assert_code(2).assert_stderr_contains(&format!(
        "there is no BBR job 'postgres' under {} (its BBR jobs: db, web); `bbr-agent list` shows them",
        vm.jobs_root().display()
    ));
    vm.agent(&["run", "backup", "--job", "web"])
        .assert_code(2)
        .assert_stderr_contains("job 'web' has no bin/bbr/backup (it has pre-backup-lock)");
}

#[test]
fn a_vm_without_boshs_instance_files_is_told_every_flag_it_needs_at_once() {
    let vm = Vm::new();
    vm.job("db").recording_locks().copying_backup_restore();
    let run = backup(&vm);
    run.assert_code(1).assert_stderr_contains(&format!(
        "{} holds no deployment and name files (is this a BOSH VM, and is --root right?); pass --deployment NAME and --instance-group NAME",
        vm.root().join("var/vcap/instance").display()
    ));
    assert_eq!(vm.calls(), Vec::<String>::new(), "{}", run.explain());
}

#[test]
fn a_backup_into_a_directory_that_does_not_exist_says_to_make_it() {
    let vm = vm();
    let missing = vm.dir.path().join("backups");
    let run = vm.agent(&["backup", "--artifact-path", missing.to_str().unwrap()]);
    run.assert_code(1).assert_stderr_contains(&format!(
        "--artifact-path {} is not an existing directory: make it first (mkdir -p), or give one that exists",
        missing.display()
    ));
    assert!(!missing.exists(), "{}", run.explain());
}

#[test]
fn a_leftover_store_on_a_vm_of_a_deployment_names_the_deployments_own_cleanup() {
    let mut fleet = common::fleet::Fleet::new();
    fleet
        .add("db", 0)
        .job("db")
        .recording_locks()
        .copying_backup_restore();
    fs::create_dir_all(fleet.vm("db", 0).store()).unwrap();
    let inventory = fleet.local_inventory();
    let run = fleet.backup(&inventory, &[]);
    run.assert_code(1).assert_stderr_contains(&format!(
        "db/0: the artifact store {} already exists: it is left over from a run that did not finish; run `bbr-agent deployment --inventory {} backup-cleanup` first",
        fleet.vm("db", 0).store().display(),
        inventory.display()
    ));
}

#[test]
fn a_restore_onto_a_vm_with_a_job_the_backup_lacks_names_what_it_holds_and_locks_nothing() {
    let vm = vm();
    backup(&vm).assert_success();
    let artifact = vm.artifact_dir();
    vm.job("extra").recording_locks().recording("restore");
    fs::write(vm.log_path(), "").unwrap();
    let run = restore(&vm, &artifact);
    run.assert_code(1).assert_stderr_contains(
        "backend/0 extra: the job has a restore script but the backup holds no artifact for it (for backend/0 it holds db), so nothing was locked",
    );
    assert_eq!(vm.calls(), Vec::<String>::new(), "{}", run.explain());
}

/// The folder of several backups: only those that completed are offered, newest first by
/// their timestamp (not by name: `zeta_` of last year is not the newest), and the ones that
/// did not complete are counted, not offered.
#[test]
fn the_folder_of_several_backups_offers_the_newest_complete_one() {
    let vm = vm();
    backup(&vm).assert_success();
    let made = vm.artifact_dir();
    let text = fs::read_to_string(made.join("metadata")).unwrap();
    let folder = vm.artifacts();
    let copy = |name: &str, metadata: &str| {
        let dir = folder.join(name);
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("metadata"), metadata).unwrap();
        dir
    };
    let old = copy("zeta_20250101T000000Z", &text);
    let incomplete: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("finish_time:"))
        .map(|l| format!("{l}\n"))
        .collect();
    copy("acme_29990101T000000Z", &incomplete);
    let run = restore(&vm, &folder);
    run.assert_code(1).assert_stderr_contains(&format!(
        "is not a backup but holds 2 complete backups: give --artifact-path one of them, such as {} (the newest; also {}); 1 other did not complete and cannot be restored",
        made.display(),
        old.file_name().unwrap().to_str().unwrap()
    ));
}

/// The one `bbr-agent ...` command between backticks in `text`'s line about `job`.
fn unlock_command(text: &str, job: &str) -> String {
    let line = text
        .lines()
        .find(|l| l.contains(&format!("warning: {job} ")))
        .unwrap_or_else(|| panic!("no line about {job}:\n{text}"));
    let start = line.find('`').expect("a command") + 1;
    let end = line[start..].find('`').expect("its end") + start;
    line[start..end].to_string()
}

/// A lock run by hand stays: the operator is told, on stderr, of each job it ran for and of the
/// exact command that unlocks it (a failed lock may have locked in part; a job without an
/// unlock script is said to have none), and that command, run as printed, unlocks the job.
#[test]
fn a_lock_run_by_hand_names_each_job_it_left_locked_and_the_command_that_unlocks_it() {
    let vm = vm();
    vm.job("web").script("pre-backup-lock", "exit 3");
    // A name that looks like an option, and an unlock that says what it was told.
    vm.job("-x").script("pre-backup-lock", "exit 0").script(
        "post-backup-unlock",
        "echo \"-x unlocked, after a successful backup: $BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL\" >> \"$LOG\"",
    );
    let run = vm.agent(&["run", "pre-backup-lock"]);
    run.assert_code(1)
        .assert_stderr_contains(
            "warning: db is locked (its pre-backup-lock ran by hand, and nothing unlocks it): unlock it with `bbr-agent --root ",
        )
        .assert_stderr_contains(
            "warning: web may be locked in part (its pre-backup-lock ran by hand and failed: exit status 3), and it has no bin/bbr/post-backup-unlock: undo the lock by hand",
        );
    let command = unlock_command(&run.stderr, "db");
    // No backup ran: the unlock is told so.
    assert!(
        command.ends_with(" run post-backup-unlock --job=db --after-backup-successful false"),
        "{}",
        run.explain()
    );
    fs::write(vm.log_path(), "").unwrap();
    // As printed, with the agent found on PATH.
    let bin = std::path::Path::new(common::AGENT).parent().unwrap();
    let as_printed = |command: &str| {
        common::Run::of(
            std::process::Command::new("sh")
                .args(["-c", command])
                .env("PATH", format!("{}:/usr/bin:/bin", bin.display())),
            vm.dir.path(),
        )
    };
    let unlock = as_printed(&command);
    unlock.assert_success();
    assert_eq!(
        vm.calls(),
        ["db post-backup-unlock"],
        "{}",
        unlock.explain()
    );
    fs::write(vm.log_path(), "").unwrap();
    let unlock_x = as_printed(&unlock_command(&run.stderr, "-x"));
    unlock_x.assert_success();
    assert_eq!(
        vm.calls(),
        ["-x unlocked, after a successful backup: false"],
        "{}\n{}",
        run.explain(),
        unlock_x.explain()
    );
    assert!(
        !unlock.stderr.contains("unlock it with"),
        "an unlock is no lock\n{}",
        unlock.explain()
    );

    // And `run --help` says so before anything runs.
    vm.agent(&["run", "--help"])
        .assert_success()
        .assert_stdout_contains(
            "Nothing is unlocked for you: a pre-backup-lock or pre-restore-lock run by hand leaves",
        );

    let restore = vm.agent(&["run", "pre-restore-lock", "--job", "db"]);
    restore.assert_success();
    assert!(
        unlock_command(&restore.stderr, "db").ends_with(" run post-restore-unlock --job=db"),
        "{}",
        restore.explain()
    );
}

/// A VM root whose path is not UTF-8 (argv is bytes) is recorded in the run's lock and journal
/// as text, not a panic: the backup runs.
#[test]
fn a_root_whose_path_is_not_utf8_backs_up() {
    use std::os::unix::ffi::OsStrExt;
    let vm = Vm::with_identity("acme", "backend");
    // Its script names no path of the VM's: the VM moves below.
    vm.job("db")
        .recording_locks()
        .script("backup", "echo rows > \"$BBR_ARTIFACT_DIRECTORY/dump\"");
    let odd = vm.dir.path().join(std::ffi::OsStr::from_bytes(b"vm-\xff"));
    fs::rename(vm.root(), &odd).unwrap();
    let out = vm.artifacts();
    let run = common::Run::of(
        std::process::Command::new(common::AGENT)
            .arg("--root")
            .arg(&odd)
            .args(["backup", "--artifact-path"])
            .arg(&out),
        vm.dir.path(),
    );
    run.assert_success();
    assert!(
        fs::read_dir(&out).unwrap().count() == 1,
        "{}\n{}",
        run.explain(),
        common::listing(vm.dir.path())
    );
}

/// A job whose name holds terminal escapes (a directory name is bytes): the hand-run lock's
/// warning shows none of them, and says the name cannot be typed as shown.
#[test]
fn a_hand_run_locks_warning_never_prints_a_job_names_escapes() {
    let vm = Vm::with_identity("acme", "backend");
    vm.job("evil\u{1b}]0;owned\u{7}")
        .script("pre-backup-lock", "exit 0")
        .script("post-backup-unlock", "exit 0");
    let run = vm.agent(&["run", "pre-backup-lock"]);
    run.assert_success().assert_stderr_contains(
        "run post-backup-unlock --job=<its name> --after-backup-successful false` (the name holds characters a terminal cannot show)",
    );
    assert!(
        !run.stderr.contains('\u{1b}') && !run.stderr.contains('\u{7}'),
        "{}",
        run.explain()
    );
}
