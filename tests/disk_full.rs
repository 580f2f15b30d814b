//! A full disk, on either side: the run fails with the operating system's own "No space left on
//! device" and the path, unlock scripts still run, the VM's store is removed, and nothing is
//! left that could be taken for a good backup.
//!
//! Each test mounts its own 1 MiB tmpfs (so it must run as root) and unmounts it when it ends,
//! pass or fail.

mod common;

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Run, Vm, write_file};

/// A small tmpfs mounted on a temp dir, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount() -> Tmpfs {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run mount(8): {e}; these tests mount a tmpfs"));
        assert!(
            out.status.success(),
            "`mount -t tmpfs -o size=1m tmpfs {}` failed ({}): {}\n\
             These tests need root with the right to mount (CAP_SYS_ADMIN); \"Operation not \
             permitted\" means this machine or container forbids it. They do not pass without it.",
            dir.path().display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Busy (a script left running?): detach it so the temp dir can go.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

const SIZE: u64 = 3 << 20;

fn random_bytes(len: u64) -> Vec<u8> {
    let mut data = Vec::new();
    File::open("/dev/urandom")
        .unwrap()
        .take(len)
        .read_to_end(&mut data)
        .unwrap();
    data
}

/// post-backup-unlock records `<job> post-backup-unlock <BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL>`.
const UNLOCK_RECORDING: &str = "echo \"$ME $BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL\" >> \"$LOG\"";

/// A VM whose job `store` copies 3 MiB of random data in and out, with recording lock scripts.
fn vm_with_big_data() -> Vm {
    let vm = Vm::with_identity("acme", "backend");
    vm.job("store")
        .copying_backup_restore()
        .recording_locks()
        .script("post-backup-unlock", UNLOCK_RECORDING);
    write_file(&vm.data_dir("store").join("big.bin"), &random_bytes(SIZE));
    vm
}

/// A failed backup's artifact dir holds no tar and no metadata with a finish_time: nothing that
/// could be taken for a good backup (the run report may stay: it says the run failed; so does
/// the run's claim, for the next run's cleanup).
fn assert_nothing_looks_complete(artifact: &Path, run: &Run) {
    let names: Vec<String> = fs::read_dir(artifact)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| n == "metadata" || n == "report.html" || n.starts_with(".bbr-agent-run-")),
        "only the metadata, the report and the claim may stay, no tar and no temporary file: {names:?}\n{}",
        run.explain()
    );
    if let Ok(text) = fs::read_to_string(artifact.join("metadata")) {
        let metadata: serde_yaml::Value = serde_yaml::from_str(&text)
            .unwrap_or_else(|e| panic!("metadata is YAML: {e}\n{text}\n{}", run.explain()));
        assert!(
            metadata["backup_activity"]["finish_time"].is_null(),
            "a failed backup has no finish_time:\n{text}\n{}",
            run.explain()
        );
    }
}

/// Backs `vm` up into a full tmpfs; returns the run and the artifact directory it made.
fn backup_into_full_artifact_path(vm: &Vm, full: &Tmpfs) -> (Run, PathBuf) {
    let run = vm.agent(&["backup", "--artifact-path", full.path().to_str().unwrap()]);
    let artifact = common::only_artifact_dir_after(full.path(), &run.explain());
    (run, artifact)
}

#[test]
fn a_full_artifact_path_fails_the_backup_and_leaves_nothing_complete() {
    let vm = vm_with_big_data();
    let full = Tmpfs::mount();

    let (run, artifact) = backup_into_full_artifact_path(&vm, &full);
    run.assert_code(1)
        .assert_stderr_contains("No space left on device");
    assert_eq!(
        vm.calls(),
        [
            "store pre-backup-lock",
            "store backup",
            "store post-backup-unlock true"
        ],
        "unlock runs before the drain\n{}",
        run.explain()
    );
    assert!(
        !vm.store().exists(),
        "the store is removed\n{}",
        run.explain()
    );
    assert_nothing_looks_complete(&artifact, &run);
}

#[test]
fn a_full_artifact_path_is_named_in_the_error() {
    let vm = vm_with_big_data();
    let full = Tmpfs::mount();

    let (run, artifact) = backup_into_full_artifact_path(&vm, &full);
    let tar = artifact.join("backend-0-store.tar");
    run.assert_code(1)
        .assert_stderr_contains("No space left on device")
        .assert_stderr_contains(tar.to_str().unwrap());
}

#[test]
fn a_full_store_fails_the_backup_script_and_unlocks_with_false() {
    let vm = Vm::with_identity("acme", "backend");
    vm.job("store")
        .recording_locks()
        .script("post-backup-unlock", UNLOCK_RECORDING)
        .script(
            "backup",
            &format!(
                "echo \"$ME\" >> \"$LOG\"\nhead -c {SIZE} /dev/urandom > \"${{BBR_ARTIFACT_DIRECTORY}}big.bin\""
            ),
        );
    let full = Tmpfs::mount();
    let store = full.path().join("bbr-backup");

    let run = vm.agent(&[
        "--store",
        store.to_str().unwrap(),
        "backup",
        "--artifact-path",
        vm.artifacts().to_str().unwrap(),
    ]);
    run.assert_code(1)
        .assert_stderr_contains("No space left on device");
    assert_eq!(
        vm.calls(),
        [
            "store pre-backup-lock",
            "store backup",
            "store post-backup-unlock false"
        ],
        "{}",
        run.explain()
    );
    assert!(
        fs::symlink_metadata(&store).is_err(),
        "the store is removed\n{}",
        run.explain()
    );
    assert_nothing_looks_complete(&vm.artifact_dir(), &run);
}

#[test]
fn a_full_store_fails_the_restore_before_any_lock() {
    let vm = vm_with_big_data();
    vm.agent(&[
        "backup",
        "--artifact-path",
        vm.artifacts().to_str().unwrap(),
    ])
    .assert_success();
    let artifact = vm.artifact_dir();
    fs::write(vm.log_path(), "").unwrap();
    let full = Tmpfs::mount();
    let store = full.path().join("bbr-backup");

    let run = vm.agent(&[
        "--store",
        store.to_str().unwrap(),
        "restore",
        "--artifact-path",
        artifact.to_str().unwrap(),
    ]);
    run.assert_code(1)
        .assert_stderr_contains("No space left on device")
        .assert_stderr_contains(store.to_str().unwrap());
    assert!(
        !run.stderr.contains("corrupted"),
        "the backup is intact: the VM's disk is to blame, not the backup\n{}",
        run.explain()
    );
    assert!(
        vm.calls().is_empty(),
        "no restore-side script may run: {:?}\n{}",
        vm.calls(),
        run.explain()
    );
    assert!(
        fs::symlink_metadata(&store).is_err(),
        "the store is removed\n{}",
        run.explain()
    );
    assert_eq!(
        fs::read_dir(full.path()).unwrap().count(),
        0,
        "nothing is left on the full filesystem\n{}",
        run.explain()
    );
}
