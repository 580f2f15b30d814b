//! `backups verify ARTIFACT`: a backup made by `bbr-agent backup` is read whole, every tar
//! parsed and every checksum compared, without a script run or a file restored. Exit 0 only
//! when all is good; each problem is one line naming the file.

mod common;

use std::fs;
use std::path::PathBuf;

use common::{Run, Vm, age_identity, tree, write_file};

/// A VM with two jobs, backed up locally into `vm.artifacts()`: the backup's directory.
fn backed_up() -> (Vm, PathBuf) {
    let vm = Vm::with_identity("acme", "backend");
    vm.job("store").copying_backup_restore().recording_locks();
    vm.job("other").copying_backup_restore();
    write_file(&vm.data_dir("store").join("nested/deep/file"), b"deep data");
    write_file(&vm.data_dir("store").join("plain.txt"), b"plain\n");
    write_file(&vm.data_dir("other").join("x"), b"other data");
    vm.agent(&[
        "backup",
        "--artifact-path",
        vm.artifacts().to_str().unwrap(),
    ])
    .assert_success();
    let artifact = vm.artifact_dir();
    (vm, artifact)
}

/// The backup's metadata without its `finish_time`: a backup that did not complete.
fn unfinish(artifact: &std::path::Path) {
    let metadata = fs::read_to_string(artifact.join("metadata")).unwrap();
    let unfinished: String = metadata
        .lines()
        .filter(|l| !l.trim_start().starts_with("finish_time:"))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(artifact.join("metadata"), unfinished).unwrap();
}

fn verify(vm: &Vm, artifact: &std::path::Path) -> Run {
    vm.agent(&["backups", "verify", artifact.to_str().unwrap()])
}

#[test]
fn a_good_backup_verifies_and_nothing_runs_or_changes() {
    let (vm, artifact) = backed_up();
    fs::write(vm.log_path(), "").unwrap();
    let data_before = tree(&vm.root());
    let artifact_before = tree(&artifact);
    let run = verify(&vm, &artifact);
    run.assert_success()
        .assert_stdout_contains("2 tars, 3 files")
        .assert_stdout_contains("every checksum matches");
    assert!(vm.calls().is_empty(), "no script may run: {:?}", vm.calls());
    assert_eq!(tree(&vm.root()), data_before, "{}", run.explain());
    assert_eq!(tree(&artifact), artifact_before, "{}", run.explain());
}

#[test]
fn a_flipped_byte_and_a_missing_tar_are_each_one_line_naming_the_file() {
    let (vm, artifact) = backed_up();
    let store_tar = artifact.join("backend-0-store.tar");
    let mut bytes = fs::read(&store_tar).unwrap();
    let at = bytes.windows(9).position(|w| w == b"deep data").unwrap();
    bytes[at] ^= 0x20;
    fs::write(&store_tar, bytes).unwrap();
    let run = verify(&vm, &artifact);
    run.assert_code(1)
        .assert_stderr_contains("backend-0-store.tar does not match its checksums")
        .assert_stderr_contains("./nested/deep/file");
    assert!(
        !run.stderr.contains("backend-0-other.tar"),
        "{}",
        run.explain()
    );

    fs::remove_file(artifact.join("backend-0-other.tar")).unwrap();
    let run = verify(&vm, &artifact);
    run.assert_code(1);
    let problems: Vec<&str> = run.stderr.lines().filter(|l| l.contains(".tar")).collect();
    assert_eq!(problems.len(), 2, "one line per problem\n{}", run.explain());
    assert!(
        problems
            .iter()
            .any(|l| l.contains("backend-0-other.tar") && l.contains("missing")),
        "{}",
        run.explain()
    );
    assert!(
        problems.iter().any(|l| l.contains("backend-0-store.tar")),
        "{}",
        run.explain()
    );
}

#[test]
fn a_truncated_tar_and_an_incomplete_backup_fail_naming_them() {
    let (vm, artifact) = backed_up();
    let tar = artifact.join("backend-0-other.tar");
    // `./` and `./x`'s headers, and 6 bytes of x's 10.
    fs::File::options()
        .write(true)
        .open(&tar)
        .unwrap()
        .set_len(2 * 512 + 6)
        .unwrap();
    unfinish(&artifact);
    let run = verify(&vm, &artifact);
    run.assert_code(1)
        .assert_stderr_contains("is not a complete backup")
        .assert_stderr_contains("backend-0-other.tar")
        .assert_stderr_contains("2 problems");
}

/// A verify restores nothing, whatever it finds: its lines say what it found, not what a
/// restore did not do ("nothing was restored", "nothing was touched").
#[test]
fn verify_says_what_it_found_in_its_own_words_not_the_restores() {
    let (vm, artifact) = backed_up();
    let store_tar = artifact.join("backend-0-store.tar");
    let mut bytes = fs::read(&store_tar).unwrap();
    let at = bytes.windows(9).position(|w| w == b"deep data").unwrap();
    bytes[at] ^= 0x20;
    fs::write(&store_tar, bytes).unwrap();
    fs::remove_file(artifact.join("backend-0-other.tar")).unwrap();
    unfinish(&artifact);
    let run = verify(&vm, &artifact);
    run.assert_code(1)
        .assert_stderr_contains("is not a complete backup")
        .assert_stderr_contains(", so it cannot be restored\n")
        .assert_stderr_contains("backend-0-store.tar does not match its checksums (content differs: ./nested/deep/file)\n")
        .assert_stderr_contains("backend-0-other.tar is missing (or is not a file)\n")
        .assert_stderr_contains("failed verification: 3 problems");
    for restores in [
        "nothing was restored",
        "nothing was touched",
        "nothing was read",
    ] {
        assert!(
            !run.stderr.contains(restores),
            "a restore's words: {restores:?}\n{}",
            run.explain()
        );
    }
}

#[test]
fn an_encrypted_and_compressed_backup_verifies_with_its_identity_and_a_flipped_byte_is_named() {
    let vm = Vm::with_identity("acme", "backend");
    vm.job("store").copying_backup_restore();
    write_file(
        &vm.data_dir("store").join("rows.sql"),
        "insert 1;\n".repeat(5000).as_bytes(),
    );
    let (key, recipient) = age_identity(vm.dir.path(), "key.txt");
    vm.agent(&[
        "backup",
        "--artifact-path",
        vm.artifacts().to_str().unwrap(),
        "--compress",
        "zstd",
        "--encrypt-to",
        &recipient,
    ])
    .assert_success();
    let artifact = vm.artifact_dir();
    let with_key = |vm: &Vm| {
        vm.agent(&[
            "backups",
            "verify",
            artifact.to_str().unwrap(),
            "--identity",
            key.to_str().unwrap(),
        ])
    };
    with_key(&vm)
        .assert_success()
        .assert_stdout_contains("1 tar, 1 file")
        .assert_stdout_contains("every checksum matches");
    // Without the identity, the recipients it was made for are named.
    verify(&vm, &artifact)
        .assert_code(1)
        .assert_stderr_contains(&recipient);
    let tar = artifact.join("backend-0-store.tar.zst.age");
    let mut bytes = fs::read(&tar).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    fs::write(&tar, bytes).unwrap();
    with_key(&vm)
        .assert_code(1)
        .assert_stderr_contains("backend-0-store.tar.zst.age")
        .assert_stderr_contains("altered or damaged");
}

#[test]
fn verify_of_what_is_not_a_backup_says_what_to_give() {
    let (vm, artifact) = backed_up();
    let run = verify(&vm, artifact.parent().unwrap());
    run.assert_code(1)
        .assert_stderr_contains("is not a backup but holds one: give ")
        .assert_stderr_contains(artifact.to_str().unwrap());
    assert!(!run.stderr.contains("--artifact-path"), "{}", run.explain());
}

#[test]
fn a_metadata_naming_hostile_recipients_is_refused_without_printing_them() {
    let vm = Vm::with_identity("acme", "backend");
    vm.job("store").copying_backup_restore();
    write_file(&vm.data_dir("store").join("x"), b"x");
    let (_, recipient) = age_identity(vm.dir.path(), "key.txt");
    vm.agent(&[
        "backup",
        "--artifact-path",
        vm.artifacts().to_str().unwrap(),
        "--encrypt-to",
        &recipient,
    ])
    .assert_success();
    let artifact = vm.artifact_dir();
    // The recipients are what a restore without an identity names: a hostile metadata's
    // would reach the terminal.
    let metadata = fs::read_to_string(artifact.join("metadata")).unwrap();
    let hostile = metadata.replace(&recipient, "\"\\e]0;PWNED\\a\\e[31m\"");
    assert_ne!(hostile, metadata);
    fs::write(artifact.join("metadata"), hostile).unwrap();
    let run = verify(&vm, &artifact);
    run.assert_code(1)
        .assert_stderr_contains("not age public keys");
    assert!(
        !run.stderr.contains('\u{1b}') && !run.stdout.contains('\u{1b}'),
        "a terminal escape reached the output\n{}",
        run.explain()
    );
}

/// A plain backup verified with an identity may have been replaced: verify says so in its own
/// words (verify it without the identity), not the restore's.
#[test]
fn a_plain_backup_verified_with_an_identity_is_named_with_verifys_way_out() {
    let (vm, artifact) = backed_up();
    let (key, _) = age_identity(vm.dir.path(), "key.txt");
    let run = vm.agent(&[
        "backups",
        "verify",
        artifact.to_str().unwrap(),
        "--identity",
        key.to_str().unwrap(),
    ]);
    run.assert_code(1)
        .assert_stderr_contains("is not encrypted, but --identity")
        .assert_stderr_contains("Verify it without --identity if it is the one you meant");
    assert!(!run.stderr.contains("Restore it"), "{}", run.explain());
}
