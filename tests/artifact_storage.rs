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
/// being drained.
fn killed_backup(artifacts: &Path, dir: &str) {
    let dir = artifacts.join(dir);
    fs::create_dir(&dir).unwrap();
    write_file(
        &dir.join("metadata"),
        b"backup_activity:\n  start_time: 2026/01/01 00:00:00 UTC\n",
    );
    write_file(&dir.join(".bbr-agent-partial-AbC123"), &[0u8; 4096]);
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
