//! The backup's artifact directory is written through the storage layer: a tar is under its
//! own name only once it is checked, and what a killed backup left half-written is removed by
//! the next backup of the same deployment, and by no other deployment's.

mod common;

use std::fs;
use std::path::Path;

use common::{Vm, write_file};

/// Every name in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// An earlier backup directory that a killed run left: its start metadata and a tar that was
/// being drained, last written two days ago (an older agent's run, which left no claim).
fn killed_backup(artifacts: &Path, dir: &str) {
    let dir = artifacts.join(dir);
    fs::create_dir(&dir).unwrap();
    write_file(
        &dir.join("metadata"),
        b"backup_activity:\n  start_time: 2026/01/01 00:00:00 UTC\n",
    );
    let partial = write_file(&dir.join(".bbr-agent-partial-AbC123"), &[0u8; 4096]);
    let two_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86400);
    fs::File::options()
        .write(true)
        .open(partial)
        .unwrap()
        .set_modified(two_days_ago)
        .unwrap();
}

#[test]
fn the_next_backup_removes_what_a_killed_backup_of_its_deployment_left_and_nothing_else() {
    let vm = Vm::with_identity("acme", "backend");
    vm.job("store").copying_backup_restore();
    write_file(&vm.data_dir("store").join("a.txt"), b"a");
    let artifacts = vm.artifacts();
    killed_backup(&artifacts, "acme_20260101T000000Z");
    // Deployments whose names start alike: their backups may be running right now.
    killed_backup(&artifacts, "acme_prod_20260101T000000Z");
    killed_backup(&artifacts, "acmeish_20260101T000000Z");

    let run = vm.agent(&["backup", "--artifact-path", artifacts.to_str().unwrap()]);
    run.assert_success()
        .assert_stdout_contains("Removed 1 unfinished file that interrupted backups of acme left");
    let listing = |dir: &str| names(&artifacts.join(dir));
    assert_eq!(
        listing("acme_20260101T000000Z"),
        ["metadata"],
        "{}",
        run.explain()
    );
    for other in ["acme_prod_20260101T000000Z", "acmeish_20260101T000000Z"] {
        assert_eq!(
            listing(other),
            [".bbr-agent-partial-AbC123", "metadata"],
            "another deployment's unfinished file was touched\n{}",
            run.explain()
        );
    }
    let made: Vec<String> = names(&artifacts)
        .into_iter()
        .filter(|n| n.starts_with("acme_2") && n != "acme_20260101T000000Z")
        .collect();
    assert_eq!(made.len(), 1, "{made:?}\n{}", run.explain());
    assert_eq!(
        listing(&made[0]),
        ["backend-0-store.tar", "metadata", "report.html"],
        "{}",
        run.explain()
    );
}

/// The claim a backup of `vm` writes: got from a run that failed (its claim stays).
fn claim_of(vm: &Vm, artifacts: &Path) -> Vec<u8> {
    vm.job("broken").script("backup", "exit 1");
    let run = vm.agent(&["backup", "--artifact-path", artifacts.to_str().unwrap()]);
    assert_ne!(run.code, Some(0), "{}", run.explain());
    fs::remove_dir_all(vm.jobs_root().join("broken")).unwrap();
    let dir = common::only_artifact_dir_after(artifacts, &run.explain());
    let claim = names(&dir)
        .into_iter()
        .find(|n| n.starts_with(".bbr-agent-run-"))
        .unwrap_or_else(|| panic!("a failed run left no claim\n{}", run.explain()));
    let owner = fs::read(dir.join(claim)).unwrap();
    fs::remove_dir_all(&dir).unwrap();
    owner
}

/// Another run of the same deployment name (another VM's local backup to a shared directory,
/// another director's deployment of that name) may be writing right now: its fresh unfinished
/// files are left, and said so; this run's own killed run's, and an unclaimed old one, go.
#[test]
fn the_next_backup_leaves_what_another_running_backup_of_its_name_is_writing() {
    let vm = Vm::with_identity("acme", "backend");
    vm.job("store").copying_backup_restore();
    write_file(&vm.data_dir("store").join("a.txt"), b"a");
    let artifacts = vm.artifacts();
    let ours = claim_of(&vm, &artifacts);
    let text = String::from_utf8(ours.clone()).unwrap();
    assert!(
        text.contains("acme") && text.contains("backend/0"),
        "{text}"
    );
    let theirs = text.replace("backend/0", "db/0");
    let fresh = |dir: &str, claim: Option<&[u8]>| {
        let d = artifacts.join(dir);
        fs::create_dir(&d).unwrap();
        write_file(&d.join(".bbr-agent-partial-Fresh1"), &[0u8; 4096]);
        if let Some(owner) = claim {
            write_file(&d.join(".bbr-agent-run-0123"), owner);
        }
    };
    fresh("acme_20260101T000001Z", Some(theirs.as_bytes()));
    fresh("acme_20260101T000002Z", None);
    fresh("acme_20260101T000003Z", Some(&ours));
    killed_backup(&artifacts, "acme_20260101T000004Z");

    let run = vm.agent(&["backup", "--artifact-path", artifacts.to_str().unwrap()]);
    run.assert_success()
        .assert_stdout_contains("Removed 2 unfinished files that interrupted backups of acme left")
        .assert_stdout_contains("Left 2 unfinished files of other backups of acme (in ");
    let listing = |dir: &str| names(&artifacts.join(dir));
    let explain = run.explain();
    assert_eq!(
        listing("acme_20260101T000001Z"),
        [".bbr-agent-partial-Fresh1", ".bbr-agent-run-0123"],
        "another owner's running backup was touched\n{explain}"
    );
    assert_eq!(
        listing("acme_20260101T000002Z"),
        [".bbr-agent-partial-Fresh1"],
        "a fresh unclaimed write was touched\n{explain}"
    );
    assert_eq!(
        listing("acme_20260101T000003Z"),
        [".bbr-agent-run-0123"],
        "this owner's dead run's write was left\n{explain}"
    );
    assert_eq!(listing("acme_20260101T000004Z"), ["metadata"], "{explain}");
    // The completed backup is BBR's layout: its claim is gone.
    let made: Vec<String> = names(&artifacts)
        .into_iter()
        .filter(|n| n.starts_with("acme_2") && !n.starts_with("acme_20260101"))
        .collect();
    assert_eq!(made.len(), 1, "{made:?}\n{explain}");
    assert_eq!(
        listing(&made[0]),
        ["backend-0-store.tar", "metadata", "report.html"],
        "{explain}"
    );
}

/// A run's claim carries its heartbeat (its last line, the run's clock; the file's mtime, the
/// store's). Another owner's run whose heartbeat stopped more than two hours ago was killed: the
/// next backup removes what it left, and leaves what a beating one is writing.
#[test]
fn the_next_backup_removes_what_another_owners_stopped_run_left_and_leaves_a_beating_ones() {
    let vm = Vm::with_identity("acme", "backend");
    vm.job("store").copying_backup_restore();
    write_file(&vm.data_dir("store").join("a.txt"), b"a");
    let artifacts = vm.artifacts();
    let ours = String::from_utf8(claim_of(&vm, &artifacts)).unwrap();
    let last = ours.lines().last().unwrap_or("");
    assert!(
        last.starts_with("heartbeat: 20") && last.ends_with('Z'),
        "the run's claim has no heartbeat line: {ours:?}"
    );
    let theirs = ours.replace("backend/0", "db/0");
    let three_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3 * 3600);
    for (dir, stopped) in [
        ("acme_20260101T000001Z", true),
        ("acme_20260101T000002Z", false),
    ] {
        let d = artifacts.join(dir);
        fs::create_dir(&d).unwrap();
        write_file(&d.join(".bbr-agent-partial-Half1"), &[0u8; 4096]);
        let claim = write_file(&d.join(".bbr-agent-run-0123"), theirs.as_bytes());
        if stopped {
            fs::File::options()
                .write(true)
                .open(claim)
                .unwrap()
                .set_modified(three_hours_ago)
                .unwrap();
        }
    }

    let run = vm.agent(&["backup", "--artifact-path", artifacts.to_str().unwrap()]);
    run.assert_success()
        .assert_stdout_contains("Removed 1 unfinished file that interrupted backups of acme left")
        .assert_stdout_contains("Left 1 unfinished file of other backups of acme (in ");
    let listing = |dir: &str| names(&artifacts.join(dir));
    let explain = run.explain();
    assert_eq!(
        listing("acme_20260101T000001Z"),
        [".bbr-agent-run-0123"],
        "a stopped run's write was left\n{explain}"
    );
    assert_eq!(
        listing("acme_20260101T000002Z"),
        [".bbr-agent-partial-Half1", ".bbr-agent-run-0123"],
        "a beating run's write was touched\n{explain}"
    );
}

/// A prune that took a long backup for a dead one (or someone by hand) removed its claim while
/// it ran, and may have removed its tars too: the backup fails instead of writing the metadata
/// that would make what is left look complete.
#[test]
fn a_backup_whose_claim_was_removed_while_it_ran_is_not_marked_complete() {
    let vm = Vm::with_identity("acme", "backend");
    let artifacts = vm.artifacts();
    vm.job("store").copying_backup_restore().script(
        "post-backup-unlock",
        &format!("rm -f '{}'/acme_*/.bbr-agent-run-*", artifacts.display()),
    );
    write_file(&vm.data_dir("store").join("a.txt"), b"a");

    let run = vm.agent(&["backup", "--artifact-path", artifacts.to_str().unwrap()]);
    run.assert_code(1)
        .assert_stderr_contains("this run's claim ")
        .assert_stderr_contains("was removed while the backup ran")
        .assert_stdout_contains("holds no finish_time and is not a usable backup");
    let dir = common::only_artifact_dir_after(&artifacts, &run.explain());
    let metadata = fs::read_to_string(dir.join("metadata")).unwrap();
    assert!(
        !metadata.contains("finish_time"),
        "marked complete:\n{metadata}\n{}",
        run.explain()
    );
}
