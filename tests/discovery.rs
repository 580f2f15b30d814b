//! Discovery edge cases (docs/behaviour.md, "Discovery" and "Metadata"), seen through `list`, `backup` and `restore`:
//! which files are scripts, which jobs count, and how metadata can leave a job out or stop a
//! run before anything is locked.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};

use common::{Run, Vm, write_file};
use serde_json::Value;

const SEVEN: [&str; 7] = [
    "metadata",
    "pre-backup-lock",
    "backup",
    "post-backup-unlock",
    "pre-restore-lock",
    "restore",
    "post-restore-unlock",
];

/// `list --json`, with the exit code checked.
fn list_json(vm: &Vm, code: i32) -> (Run, Value) {
    let run = vm.agent(&["list", "--json"]);
    run.assert_code(code);
    let json = run.json();
    (run, json)
}

/// The names under "jobs".
fn listed_names(run: &Run, json: &Value) -> Vec<String> {
    json["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("no jobs array\n{}", run.explain()))
        .iter()
        .map(|j| j["name"].as_str().unwrap().to_string())
        .collect()
}

/// The listed job called `name`.
fn listed<'a>(run: &Run, json: &'a Value, name: &str) -> &'a Value {
    json["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == name)
        .unwrap_or_else(|| panic!("job {name} is not listed\n{}", run.explain()))
}

/// The scripts of a listed job, as a set (their order is not part of the contract).
fn scripts_of(run: &Run, json: &Value, name: &str) -> BTreeSet<String> {
    listed(run, json, name)["scripts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// The reasons given under "skipped" for `name` (empty when it is not there).
fn skip_reasons(json: &Value, name: &str) -> Vec<String> {
    json["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["job"] == name)
        .map(|s| s["reason"].as_str().unwrap().to_string())
        .collect()
}

/// Writes an executable file that is not under any job's `bin/bbr`.
fn executable(path: &std::path::Path, body: &str) {
    write_file(path, format!("#!/bin/sh\n{body}\n").as_bytes());
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn only_the_seven_contract_names_are_scripts() {
    let vm = Vm::new();
    let job = vm.job("all");
    for s in SEVEN {
        job.recording(s);
    }
    for other in [
        "backup.sh",
        "README",
        "Backup",
        "pre-backup",
        "restore~",
        ".backup",
    ] {
        job.recording(other);
    }

    let (run, json) = list_json(&vm, 0);
    assert_eq!(listed_names(&run, &json), ["all"], "{}", run.explain());
    let want: BTreeSet<String> = SEVEN.iter().map(|s| s.to_string()).collect();
    assert_eq!(scripts_of(&run, &json, "all"), want, "{}", run.explain());
    assert!(
        skip_reasons(&json, "all").is_empty(),
        "other names are ignored silently\n{}",
        run.explain()
    );
}

#[test]
fn subdirectories_of_bin_bbr_are_ignored_even_when_named_like_a_script() {
    let vm = Vm::new();
    let mixed = vm.job("mixed");
    mixed.recording("restore");
    // bin/bbr/backup is a directory holding an executable `backup`; bin/bbr/sub/backup too.
    let record = format!("echo nested >> '{}'", vm.log_path().display());
    executable(&mixed.dir.join("bin/bbr/backup/backup"), &record);
    executable(&mixed.dir.join("bin/bbr/sub/backup"), &record);
    let only_nested = vm.job("nested-only");
    executable(&only_nested.dir.join("bin/bbr/sub/backup"), &record);
    fs::create_dir_all(only_nested.dir.join("bin/bbr/pre-backup-lock")).unwrap();

    let (run, json) = list_json(&vm, 0);
    assert_eq!(listed_names(&run, &json), ["mixed"], "{}", run.explain());
    assert_eq!(
        scripts_of(&run, &json, "mixed"),
        BTreeSet::from(["restore".to_string()]),
        "{}",
        run.explain()
    );
    assert!(
        skip_reasons(&json, "nested-only").is_empty(),
        "a job with nothing but subdirectories is not a BBR job at all\n{}",
        run.explain()
    );

    // Nothing found means nothing runs.
    vm.agent(&["run", "backup"]).assert_success();
    assert!(vm.calls().is_empty(), "ran: {:?}", vm.calls());
}

#[test]
fn a_job_without_a_recognised_script_is_not_listed() {
    let vm = Vm::new();
    vm.job("real").recording("backup");
    let other = vm.job("other-files");
    other.recording("backup.sh");
    other.recording("README");
    vm.job("empty-bbr");
    fs::create_dir_all(vm.jobs_root().join("no-bbr/bin")).unwrap();
    write_file(&vm.jobs_root().join("no-bbr/bin/ctl"), b"#!/bin/sh\n");
    write_file(&vm.jobs_root().join("a-plain-file"), b"not a job\n");

    let (run, json) = list_json(&vm, 0);
    assert_eq!(listed_names(&run, &json), ["real"], "{}", run.explain());
    assert_eq!(
        json["skipped"],
        serde_json::json!([]),
        "non-BBR jobs are not 'skipped', they are not BBR jobs\n{}",
        run.explain()
    );

    let human = vm.agent(&["list"]);
    human.assert_success().assert_stdout_contains("real");
    for name in ["other-files", "empty-bbr", "no-bbr", "a-plain-file"] {
        assert!(
            !human.stdout.contains(name),
            "{name} is not a BBR job\n{}",
            human.explain()
        );
    }

    let none = Vm::new();
    none.job("nothing").recording("README");
    none.agent(&["list"])
        .assert_success()
        .assert_stdout_contains("No BBR jobs under");
}

#[test]
fn legacy_mysql_jobs_are_skipped_entirely_with_a_reason() {
    let vm = Vm::with_identity("acme", "db");
    for legacy in ["mysql-backup", "mysql-restore"] {
        let job = vm.job(legacy);
        job.recording("metadata")
            .recording("backup")
            .recording_locks();
    }
    vm.job("mysql").recording("backup").recording_locks();

    let (run, json) = list_json(&vm, 0);
    assert_eq!(listed_names(&run, &json), ["mysql"], "{}", run.explain());
    for legacy in ["mysql-backup", "mysql-restore"] {
        let reasons = skip_reasons(&json, legacy);
        assert_eq!(
            reasons.len(),
            1,
            "{legacy} is skipped once\n{}",
            run.explain()
        );
        assert!(
            !reasons[0].trim().is_empty(),
            "{legacy} has a reason\n{}",
            run.explain()
        );
    }
    assert!(
        vm.calls().is_empty(),
        "not even their metadata runs: {:?}",
        vm.calls()
    );
    let human = vm.agent(&["list"]);
    human
        .assert_success()
        .assert_stdout_contains("Skipped:")
        .assert_stdout_contains("mysql-backup:")
        .assert_stdout_contains("mysql-restore:");

    vm.agent(&[
        "backup",
        "--artifact-path",
        vm.artifacts().to_str().unwrap(),
    ])
    .assert_success();
    assert_eq!(
        vm.calls(),
        [
            "mysql pre-backup-lock",
            "mysql backup",
            "mysql post-backup-unlock"
        ]
    );
    assert!(
        !vm.artifact_dir().join("db-0-mysql-backup.tar").exists(),
        "no artifact for a legacy job"
    );
}

#[test]
fn a_symlinked_job_directory_is_followed() {
    let vm = Vm::with_identity("acme", "cache");
    // As the BOSH agent lays it out: /var/vcap/jobs/redis -> /var/vcap/data/jobs/redis/<sha>/
    let versioned = vm.root().join("var/vcap/data/jobs/redis/0123abcd");
    let log = vm.log_path();
    executable(
        &versioned.join("bin/bbr/backup"),
        &format!(
            "echo 'redis backup' >> '{}'\necho saved > \"${{BBR_ARTIFACT_DIRECTORY}}dump.rdb\"",
            log.display()
        ),
    );
    executable(
        &versioned.join("bin/bbr/pre-backup-lock"),
        &format!("echo 'redis pre-backup-lock' >> '{}'", log.display()),
    );
    symlink(&versioned, vm.jobs_root().join("redis")).unwrap();

    let (run, json) = list_json(&vm, 0);
    assert_eq!(listed_names(&run, &json), ["redis"], "{}", run.explain());
    assert_eq!(
        scripts_of(&run, &json, "redis"),
        BTreeSet::from(["backup".to_string(), "pre-backup-lock".to_string()]),
        "{}",
        run.explain()
    );

    vm.agent(&[
        "backup",
        "--artifact-path",
        vm.artifacts().to_str().unwrap(),
    ])
    .assert_success();
    assert_eq!(vm.calls(), ["redis pre-backup-lock", "redis backup"]);
    assert!(vm.artifact_dir().join("cache-0-redis.tar").is_file());
}

#[test]
fn a_symlinked_script_is_not_a_script_and_list_says_it_was_ignored() {
    let vm = Vm::new();
    let elsewhere = vm.dir.path().join("elsewhere/backup");
    executable(
        &elsewhere,
        &format!("echo 'linked backup' >> '{}'", vm.log_path().display()),
    );
    let half = vm.job("half");
    half.recording("restore");
    symlink(&elsewhere, half.dir.join("bin/bbr/backup")).unwrap();
    let only = vm.job("only-link");
    symlink(&elsewhere, only.dir.join("bin/bbr/backup")).unwrap();

    let (run, json) = list_json(&vm, 0);
    assert_eq!(listed_names(&run, &json), ["half"], "{}", run.explain());
    assert_eq!(
        scripts_of(&run, &json, "half"),
        BTreeSet::from(["restore".to_string()]),
        "{}",
        run.explain()
    );
    for job in ["half", "only-link"] {
        let reasons = skip_reasons(&json, job);
        assert!(
            reasons.iter().any(|r| r.contains("bin/bbr/backup")),
            "{job}: list names the ignored bin/bbr/backup\n{}",
            run.explain()
        );
    }

    let human = vm.agent(&["list"]);
    human.assert_success();
    assert!(
        human
            .stdout
            .lines()
            .any(|l| l.contains("half") && l.contains("bin/bbr/backup")),
        "the human listing says half's bin/bbr/backup was ignored\n{}",
        human.explain()
    );

    vm.agent(&["run", "backup"]).assert_success();
    vm.agent(&["run", "backup", "--job", "half"])
        .assert_code(2)
        .assert_stderr_contains("half");
    assert!(
        vm.calls().is_empty(),
        "the linked script never runs: {:?}",
        vm.calls()
    );
}

#[test]
fn skip_bbr_scripts_moves_the_job_to_skipped() {
    let vm = Vm::with_identity("acme", "web");
    vm.job("skipper")
        .metadata("skip_bbr_scripts: true")
        .recording("backup")
        .recording_locks();
    vm.job("keeper")
        .metadata("skip_bbr_scripts: false")
        .recording("backup")
        .recording_locks();

    let (run, json) = list_json(&vm, 0);
    assert_eq!(listed_names(&run, &json), ["keeper"], "{}", run.explain());
    let reasons = skip_reasons(&json, "skipper");
    assert!(
        reasons.len() == 1 && reasons[0].contains("skip_bbr_scripts"),
        "skipper is skipped because of skip_bbr_scripts\n{}",
        run.explain()
    );
    vm.agent(&["list"])
        .assert_success()
        .assert_stdout_contains("skipper: ");

    vm.agent(&[
        "backup",
        "--artifact-path",
        vm.artifacts().to_str().unwrap(),
    ])
    .assert_success();
    assert_eq!(
        vm.calls(),
        [
            "keeper pre-backup-lock",
            "keeper backup",
            "keeper post-backup-unlock"
        ]
    );
    assert!(!vm.artifact_dir().join("web-0-skipper.tar").exists());
}

/// A VM with a healthy job `good` and a job `bad` whose metadata script runs `body`; both
/// have recording lock scripts, so the call log shows whether anything was locked.
fn vm_with_bad_metadata(body: &str) -> Vm {
    let vm = Vm::with_identity("acme", "api");
    vm.job("good")
        .metadata("backup_should_be_locked_before: []")
        .recording("backup")
        .recording_locks();
    vm.job("bad")
        .script("metadata", body)
        .recording("backup")
        .recording_locks();
    vm
}

/// Every metadata error: `list` lists both jobs, the error naming `bad`, and exits 1; `backup`
/// exits 1 with one `error:` line naming `bad` before anything is locked.
fn assert_metadata_error_is_reported(body: &str) {
    let vm = vm_with_bad_metadata(body);

    let (run, json) = list_json(&vm, 1);
    assert_eq!(
        listed_names(&run, &json),
        ["bad", "good"],
        "{}",
        run.explain()
    );
    assert!(
        listed(&run, &json, "good")["metadata"].is_object(),
        "the other job's metadata is still shown\n{}",
        run.explain()
    );
    let error = listed(&run, &json, "bad")["metadata_error"]
        .as_str()
        .unwrap_or_else(|| panic!("bad has a metadata_error\n{}", run.explain()))
        .to_string();
    assert!(error.contains("'bad'"), "the error names the job: {error}");
    assert!(listed(&run, &json, "bad")["metadata"].is_null());

    let human = vm.agent(&["list"]);
    human
        .assert_code(1)
        .assert_stdout_contains("good")
        .assert_stdout_contains("ERROR");
    assert!(
        human
            .stdout
            .lines()
            .any(|l| l.contains("ERROR") && l.contains("'bad'")),
        "{}",
        human.explain()
    );

    let backup = vm.agent(&[
        "backup",
        "--artifact-path",
        vm.artifacts().to_str().unwrap(),
    ]);
    backup.assert_code(1);
    assert!(
        vm.calls().is_empty(),
        "nothing may be locked: {:?}\n{}",
        vm.calls(),
        backup.explain()
    );
    let errors: Vec<&str> = backup
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line\n{}", backup.explain());
    assert!(
        errors[0].contains("'bad'") && !errors[0].contains("'good'"),
        "the error names the job: {}\n{}",
        errors[0],
        backup.explain()
    );
    assert!(
        !vm.store().exists(),
        "no store was made\n{}",
        backup.explain()
    );
    assert_eq!(
        fs::read_dir(vm.artifacts()).unwrap().count(),
        0,
        "no artifact directory\n{}",
        backup.explain()
    );
}

#[test]
fn metadata_with_bad_yaml_is_an_error_naming_the_job() {
    assert_metadata_error_is_reported("echo 'backup_should_be_locked_before: [job_name: x'");
}

#[test]
fn a_lock_entry_without_release_is_an_error_naming_the_job() {
    assert_metadata_error_is_reported(
        "printf 'backup_should_be_locked_before:\\n- job_name: good\\n'",
    );
}

#[test]
fn a_metadata_key_of_the_wrong_type_is_an_error_naming_the_job() {
    assert_metadata_error_is_reported("echo 'backup_should_be_locked_before: good'");
}

#[test]
fn a_failing_metadata_script_is_an_error_naming_the_job() {
    assert_metadata_error_is_reported("echo 'skip_bbr_scripts: true'\necho oops >&2\nexit 3");
}

#[test]
fn backup_name_is_warned_about_and_the_backup_proceeds() {
    let vm = Vm::with_identity("acme", "api");
    vm.job("named")
        .metadata("backup_name: my-custom-artifact")
        .recording("backup")
        .recording_locks();

    let run = vm.agent(&[
        "backup",
        "--artifact-path",
        vm.artifacts().to_str().unwrap(),
    ]);
    run.assert_success()
        .assert_stdout_contains("Backup created in");
    assert!(
        run.stderr
            .lines()
            .any(|l| l.starts_with("warning:") && l.contains("named") && l.contains("backup_name")),
        "a warning names the job and the key\n{}",
        run.explain()
    );
    assert_eq!(
        vm.calls(),
        [
            "named pre-backup-lock",
            "named backup",
            "named post-backup-unlock"
        ]
    );
    assert!(vm.artifact_dir().join("api-0-named.tar").is_file());
}

#[test]
fn restore_name_on_a_job_with_a_restore_script_makes_restore_refuse() {
    let vm = Vm::with_identity("acme", "api");
    vm.job("named")
        .metadata("restore_name: my-custom-artifact")
        .copying_backup_restore()
        .recording_locks();
    write_file(&vm.data_dir("named").join("data"), b"data");
    vm.agent(&[
        "backup",
        "--artifact-path",
        vm.artifacts().to_str().unwrap(),
    ])
    .assert_success();
    fs::write(vm.log_path(), "").unwrap();

    let run = vm.agent(&[
        "restore",
        "--artifact-path",
        vm.artifact_dir().to_str().unwrap(),
    ]);
    run.assert_code(1);
    assert!(
        run.stderr
            .lines()
            .any(|l| l.starts_with("error:") && l.contains("named") && l.contains("restore_name")),
        "the refusal names the job and the key\n{}",
        run.explain()
    );
    assert!(
        vm.calls().is_empty(),
        "no restore-side script may run: {:?}\n{}",
        vm.calls(),
        run.explain()
    );
    assert!(!vm.store().exists(), "{}", run.explain());
}

#[test]
fn a_hidden_job_directory_is_not_a_job_as_bbrs_glob_skips_it() {
    let vm = Vm::new();
    vm.job("visible").recording("backup");
    vm.job(".hidden").recording("backup");

    let (run, json) = list_json(&vm, 0);
    assert_eq!(listed_names(&run, &json), ["visible"], "{}", run.explain());
    vm.agent(&["run", "backup"]).assert_success();
    assert_eq!(vm.calls(), ["visible backup"]);
}
