//! What a backup script may leave in its artifact directory that no backup can hold: a chain
//! of symlinks too long to follow, a FIFO, a device. The agent checks the directory right
//! after the script, before the unlock: the job's backup fails (exit 1), every unlock script
//! runs with BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL=false, nothing is drained, and the message
//! names the job and the file. Locally and through `serve` alike.

mod common;

use std::fs;
use std::path::Path;

use common::fleet::Fleet;
use common::{Run, Vm};

/// Records `<job> <script>` and, for the unlock, the flag it was given.
const UNLOCK: &str = "echo \"$ME $BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL\" >> \"$LOG\"";

/// `a0 -> .`, `a1 -> a0/a0`, ... `a8 -> a7/a7`: each level doubles the links a resolution
/// follows, past the 40 the kernel allows from `a5` on.
const CHAIN: &str = "cd \"$BBR_ARTIFACT_DIRECTORY\" && ln -s . a0 && \
                     for i in 1 2 3 4 5 6 7 8; do p=$((i - 1)); ln -s a$p/a$p a$i; done";

const FIFO: &str = "mkfifo \"${BBR_ARTIFACT_DIRECTORY}pipe\"";

/// A VM with `store` (locks, the given backup script) and `other` (locks, a good backup).
fn with_backup(vm: &Vm, backup: &str) {
    vm.job("store")
        .recording("pre-backup-lock")
        .script(
            "backup",
            &format!("echo \"$ME\" >> \"$LOG\"\nset -e\nprintf data > \"${{BBR_ARTIFACT_DIRECTORY}}data\"\n{backup}"),
        )
        .script("post-backup-unlock", UNLOCK);
    vm.job("other")
        .recording("pre-backup-lock")
        .script(
            "backup",
            "echo \"$ME\" >> \"$LOG\"\nprintf ok > \"${BBR_ARTIFACT_DIRECTORY}ok\"",
        )
        .script("post-backup-unlock", UNLOCK);
}

fn sorted(mut lines: Vec<String>) -> Vec<String> {
    lines.sort();
    lines
}

/// The refusal: exit 1, the job's backup failed naming `file` and `why`, both jobs unlocked
/// with false, no tar drained, no finish_time.
fn assert_refused(run: &Run, calls: Vec<String>, artifacts: &Path, file: &str, why: &str) {
    run.assert_code(1);
    let line = run
        .stderr
        .lines()
        .chain(run.stdout.lines())
        .find(|l| l.contains("store backup: FAILED"))
        .unwrap_or_else(|| panic!("no line says the store backup failed\n{}", run.explain()));
    for part in [
        "its artifact directory is refused",
        &format!("store/{file}:"),
        why,
    ] {
        assert!(
            line.contains(part),
            "{part:?} not in {line:?}\n{}",
            run.explain()
        );
    }
    let strip = |c: &String| {
        c.split_once(' ')
            .map_or(c.clone(), |(_, rest)| rest.to_string())
    };
    let calls: Vec<String> = calls
        .iter()
        .map(|c| if c.contains('/') { strip(c) } else { c.clone() })
        .collect();
    assert_eq!(
        sorted(calls[..4].to_vec()),
        sorted(vec![
            "other pre-backup-lock".into(),
            "store pre-backup-lock".into(),
            "other backup".into(),
            "store backup".into(),
        ]),
        "{}",
        run.explain()
    );
    assert_eq!(
        sorted(calls[4..].to_vec()),
        [
            "other post-backup-unlock false",
            "store post-backup-unlock false"
        ],
        "every unlock runs, told the backup failed\n{}",
        run.explain()
    );
    let artifact = common::only_artifact_dir_after(artifacts, &run.explain());
    let tars: Vec<_> = fs::read_dir(&artifact)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tar"))
        .collect();
    assert!(
        tars.is_empty(),
        "nothing drained: {tars:?}\n{}",
        run.explain()
    );
    let metadata = fs::read_to_string(artifact.join("metadata")).unwrap();
    assert!(
        !metadata.contains("finish_time"),
        "not a complete backup:\n{metadata}\n{}",
        run.explain()
    );
}

fn local_backup(backup: &str) -> (Vm, Run) {
    let vm = Vm::with_identity("acme", "backend");
    with_backup(&vm, backup);
    let run = vm.agent(&[
        "backup",
        "--artifact-path",
        vm.artifacts().to_str().unwrap(),
    ]);
    (vm, run)
}

#[test]
fn a_symlink_chain_left_by_a_backup_script_fails_its_backup_before_the_unlock() {
    let (vm, run) = local_backup(CHAIN);
    assert_refused(
        &run,
        vm.calls(),
        &vm.artifacts(),
        "a5",
        "cannot be followed to its end",
    );
    assert!(!vm.store().exists(), "{}", run.explain());
}

#[test]
fn a_fifo_left_by_a_backup_script_fails_its_backup_before_the_unlock() {
    let (vm, run) = local_backup(FIFO);
    assert_refused(
        &run,
        vm.calls(),
        &vm.artifacts(),
        "pipe",
        "device, FIFO or socket",
    );
    assert!(!vm.store().exists(), "{}", run.explain());
}

#[test]
fn through_serve_a_symlink_chain_fails_the_jobs_backup_before_the_unlock() {
    let mut fleet = Fleet::new();
    with_backup(fleet.add("backend", 0), CHAIN);
    let run = fleet.backup(&fleet.local_inventory(), &[]);
    assert_refused(
        &run,
        fleet.calls(),
        &fleet.artifacts(),
        "a5",
        "cannot be followed to its end",
    );
    assert!(
        !fleet.vm("backend", 0).store().exists(),
        "{}",
        run.explain()
    );
}

/// A backup script that leaves directories nested thousands deep (by `cd`,
/// no path is ever long): the job's backup fails before the unlock, naming the bound, every
/// unlock runs, and the store is removed, however deep it goes. (The walk used to overflow
/// its stack here and abort the agent with every job locked.)
#[test]
fn a_tree_nested_thousands_deep_fails_the_backup_and_the_store_is_still_removed() {
    let vm = Vm::with_identity("acme", "backend");
    vm.job("deep").recording_locks().script(
        "backup",
        "echo \"$ME\" >> \"$LOG\"\ncd \"$BBR_ARTIFACT_DIRECTORY\" || exit 1\n\
         i=0; while [ $i -lt 1900 ]; do mkdir a && cd a || exit 2; i=$((i+1)); done\necho x > f",
    );
    vm.job("other")
        .recording_locks()
        .script("backup", "echo \"$ME\" >> \"$LOG\"");
    // With few descriptors, as on a VM (a soft limit of 1024 is common): the removal must
    // not need one per level.
    let run = Run::of(
        std::process::Command::new("sh")
            .arg("-c")
            .arg("ulimit -n 200 && exec \"$0\" \"$@\"")
            .arg(common::AGENT)
            .arg("--root")
            .arg(vm.root())
            .args(["backup", "--artifact-path"])
            .arg(vm.artifacts()),
        vm.dir.path(),
    );
    run.assert_code(1)
        .assert_stdout_contains("deep backup: FAILED")
        .assert_stdout_contains("nest more than 128 deep");
    let calls = vm.calls();
    for unlock in ["deep post-backup-unlock", "other post-backup-unlock"] {
        assert!(
            calls.iter().any(|c| c == unlock),
            "{unlock} did not run: {calls:?}\n{}",
            run.explain()
        );
    }
    assert!(!vm.store().exists(), "the store is left\n{}", run.explain());
}
