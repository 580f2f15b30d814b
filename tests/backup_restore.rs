//! Backup, wipe, restore: the data comes back byte for byte, in BBR's artifact format.

mod common;

use std::fs;
use std::process::Command;

use common::{Vm, tree, write_file};

/// A VM whose `store` job holds awkward file names.
fn vm_with_awkward_data() -> Vm {
    let vm = Vm::with_identity("acme", "backend");
    vm.job("store").copying_backup_restore();
    let data = vm.data_dir("store");
    for (name, contents) in [
        ("plain.txt", &b"plain\n"[..]),
        ("with spaces.txt", b"spaces"),
        ("ünïcödé ☃.bin", b"\x00\x01\x02 unicode"),
        ("-leading-dash", b"dash"),
        ("nested/deeper/still/file", b"deep"),
        ("nested/empty", b""),
        (
            "a name that is much longer than one hundred bytes so that the tar header cannot hold it and GNU long names are needed.txt",
            b"long",
        ),
    ] {
        write_file(&data.join(name), contents);
    }
    fs::create_dir_all(data.join("empty dir")).unwrap();
    vm
}

#[test]
fn backup_then_wipe_then_restore_gives_identical_data() {
    let vm = vm_with_awkward_data();
    let before = tree(&vm.data_dir("store"));

    vm.agent(&[
        "backup",
        "--artifact-path",
        vm.artifacts().to_str().unwrap(),
    ])
    .assert_success()
    .assert_stdout_contains("Backup created in");
    let artifact = vm.artifact_dir();
    assert!(
        artifact
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("acme_"),
        "artifact dir is <deployment>_<timestamp>: {artifact:?}"
    );
    assert!(!vm.store().exists(), "the store is removed after a backup");

    fs::remove_dir_all(vm.data_dir("store")).unwrap();
    vm.agent(&["restore", "--artifact-path", artifact.to_str().unwrap()])
        .assert_success();

    assert_eq!(tree(&vm.data_dir("store")), before);
    assert!(!vm.store().exists(), "the store is removed after a restore");
    assert_eq!(vm.calls(), ["store backup", "store restore"]);
}

#[test]
fn the_artifact_has_bbrs_layout_and_checksums() {
    let vm = vm_with_awkward_data();
    vm.agent(&[
        "backup",
        "--artifact-path",
        vm.artifacts().to_str().unwrap(),
    ])
    .assert_success();
    let artifact = vm.artifact_dir();
    let mode = fs::metadata(&artifact).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o700
    );

    let metadata_mode = fs::metadata(artifact.join("metadata"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&metadata_mode) & 0o777,
        0o644,
        "the metadata file is 0644 as BBR's (inside the 0700 directory)"
    );

    let tar = artifact.join("backend-0-store.tar");
    let listing = Command::new("tar").arg("-tf").arg(&tar).output().unwrap();
    let names = String::from_utf8(listing.stdout).unwrap();
    assert!(
        names.lines().all(|n| n.starts_with("./")),
        "GNU tar sees ./ names:\n{names}"
    );
    assert!(names.lines().any(|n| n == "./with spaces.txt"), "{names}");

    // The checksums are exactly what BBR computes on the VM:
    // cd <dir> && find . -type f | xargs shasum -a 256 (here with -print0 for odd names).
    let expected = Command::new("sh")
        .arg("-c")
        .arg("cd \"$1\" && find . -type f -print0 | xargs -0 sha256sum")
        .arg("sh")
        .arg(vm.data_dir("store"))
        .output()
        .unwrap();
    let metadata: serde_yaml::Value =
        serde_yaml::from_str(&fs::read_to_string(artifact.join("metadata")).unwrap()).unwrap();
    let instance = &metadata["instances"][0];
    assert_eq!(instance["name"], "backend");
    assert_eq!(instance["index"], serde_yaml::Value::String("0".into()));
    assert_eq!(instance["artifacts"][0]["name"], "store");
    let checksums = &instance["artifacts"][0]["checksums"];
    let lines = String::from_utf8(expected.stdout).unwrap();
    assert_eq!(lines.lines().count(), checksums.as_mapping().unwrap().len());
    for line in lines.lines() {
        let (sum, name) = line.split_once("  ").unwrap();
        assert_eq!(checksums[name].as_str(), Some(sum), "checksum of {name}");
    }
    let activity = &metadata["backup_activity"];
    for key in ["start_time", "finish_time"] {
        let t = activity[key].as_str().unwrap();
        assert!(
            t.ends_with(" UTC") && t.len() == 23,
            "{key} is like 2026/11/26 10:02:03 UTC: {t}"
        );
    }
}

#[test]
fn a_flipped_byte_makes_restore_refuse_before_any_restore_side_script() {
    let vm = vm_with_awkward_data();
    vm.job("store").recording_locks();
    vm.agent(&[
        "backup",
        "--artifact-path",
        vm.artifacts().to_str().unwrap(),
    ])
    .assert_success();
    let tar = vm.artifact_dir().join("backend-0-store.tar");
    let mut bytes = fs::read(&tar).unwrap();
    // The file content "deep", padded with zeros (headers hold "deeper/" instead).
    let at = bytes.windows(5).position(|w| w == b"deep\0").unwrap();
    bytes[at] ^= 0x20;
    fs::write(&tar, bytes).unwrap();
    fs::write(vm.log_path(), "").unwrap();

    let run = vm.agent(&[
        "restore",
        "--artifact-path",
        vm.artifact_dir().to_str().unwrap(),
    ]);
    run.assert_code(1)
        .assert_stderr_contains("the backup is corrupted")
        .assert_stderr_contains("./nested/deeper/still/file");
    assert!(
        vm.calls().is_empty(),
        "no script may run: {:?}\n{}",
        vm.calls(),
        run.explain()
    );
    assert!(!vm.store().exists());
}

#[test]
fn a_backup_refuses_a_leftover_store_and_names_the_cleanup() {
    let vm = vm_with_awkward_data();
    vm.job("store").recording_locks();
    fs::create_dir_all(vm.store().join("store")).unwrap();
    vm.agent(&[
        "backup",
        "--artifact-path",
        vm.artifacts().to_str().unwrap(),
    ])
    .assert_code(1)
    .assert_stderr_contains("already exists")
    // The command that cleans this very VM: with its --root.
    .assert_stderr_contains(&format!(
        "run `bbr-agent --root {} backup-cleanup` first",
        vm.root().display()
    ));
    assert!(
        vm.calls().is_empty(),
        "nothing may be locked: {:?}",
        vm.calls()
    );
    assert!(
        vm.store().join("store").exists(),
        "the leftover is left for the operator to inspect"
    );
    assert_eq!(
        fs::read_dir(vm.artifacts()).unwrap().count(),
        0,
        "no artifact directory"
    );

    vm.agent(&["backup-cleanup"]).assert_success();
    assert!(!vm.store().exists());
    assert_eq!(vm.calls(), ["store post-backup-unlock"]);
}

/// `run backup` by hand makes the store as a backup makes it: root only (0700), since a dump
/// in it may hold credentials; it is left for the operator to look at. Before, it was made
/// with the umask's mode (0755 here): readable by any user.
#[test]
fn run_backup_makes_the_store_root_only() {
    use std::os::unix::fs::PermissionsExt;
    let vm = vm_with_awkward_data();
    vm.agent(&["run", "backup"]).assert_success();
    let mode = fs::metadata(vm.store()).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700, "the store's mode is {mode:o}");
    assert!(
        vm.store().join("store/plain.txt").is_file(),
        "left to look at"
    );
}

/// As root (as on a VM), what a job backed up comes back with its owners, modes and
/// modification times, as `sudo tar -x` gives them: a restore script copying with `cp -a`
/// finds files owned by the job's user, not by root.
#[test]
fn owners_modes_and_times_survive_the_round_trip() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt, chown, lchown, symlink};
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: only root can give files other owners (CI runs as root)");
        return;
    }
    let vm = Vm::with_identity("acme", "backend");
    vm.job("store").copying_backup_restore();
    let data = vm.data_dir("store");
    let file = write_file(&data.join("pgdata/base/1"), b"rows");
    let dir = data.join("pgdata");
    let link = data.join("pgdata/current");
    symlink("base/1", &link).unwrap();
    chown(&file, Some(1000), Some(1001)).unwrap();
    chown(&dir, Some(1002), Some(1003)).unwrap();
    lchown(&link, Some(1004), Some(1005)).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
    // Root's own, with bits a umask of 022 would take away, and plain root 0644.
    let shared = write_file(&data.join("pgdata/shared"), b"shared");
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o666)).unwrap();
    let plain = write_file(&data.join("pgdata/plain"), b"plain");
    fs::set_permissions(&plain, fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o750)).unwrap();
    let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
    fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let seen = |path: &std::path::Path| {
        let m = fs::symlink_metadata(path).unwrap();
        (m.uid(), m.gid(), m.mode() & 0o7777, m.mtime())
    };
    let before = [
        seen(&file),
        seen(&dir),
        seen(&link),
        seen(&shared),
        seen(&plain),
    ];

    vm.agent(&[
        "backup",
        "--artifact-path",
        vm.artifacts().to_str().unwrap(),
    ])
    .assert_success();
    fs::remove_dir_all(&data).unwrap();
    let run = vm.agent(&[
        "restore",
        "--artifact-path",
        vm.artifact_dir().to_str().unwrap(),
    ]);
    run.assert_success();

    let after = [
        seen(&file),
        seen(&dir),
        seen(&link),
        seen(&shared),
        seen(&plain),
    ];
    assert_eq!(
        (after[3], after[4]),
        (before[3], before[4]),
        "root's files: uid, gid, mode (0666 and 0644), mtime\n{}",
        run.explain()
    );
    assert_eq!(
        after[0],
        before[0],
        "the file: uid, gid, mode, mtime\n{}",
        run.explain()
    );
    let (a, b) = (after[1], before[1]);
    assert_eq!(
        (a.0, a.1, a.2),
        (b.0, b.1, b.2),
        "the directory: uid, gid, mode\n{}",
        run.explain()
    );
    let (a, b) = (after[2], before[2]);
    assert_eq!(
        (a.0, a.1),
        (b.0, b.1),
        "the symlink: uid, gid\n{}",
        run.explain()
    );
}

/// The VM's own names become the artifact directory's and the tar's: one that is not a plain
/// name (a `/var/vcap/instance/name` of `../../x`, a `--deployment ../x`) is refused before
/// any script runs, naming where it came from.
#[test]
fn a_local_identity_that_is_not_a_plain_name_is_refused() {
    let vm = Vm::with_identity("acme", "../../x");
    vm.job("store").recording_locks().copying_backup_restore();
    let artifacts = vm.artifacts().display().to_string();
    vm.agent(&["backup", "--artifact-path", &artifacts])
        .assert_code(1)
        .assert_stderr_contains("var/vcap/instance/name \"../../x\" contains `/`");
    vm.agent(&[
        "backup",
        "--artifact-path",
        &artifacts,
        "--deployment",
        "../x",
        "--instance-group",
        "store",
    ])
    .assert_code(1)
    .assert_stderr_contains("--deployment \"../x\" contains `/`");
    assert!(vm.calls().is_empty(), "{:?}", vm.calls());
    assert_eq!(fs::read_dir(vm.artifacts()).unwrap().count(), 0);
    let outside: Vec<_> = fs::read_dir(vm.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with('x'))
        .collect();
    assert!(outside.is_empty(), "written outside: {outside:?}");
}

/// A file from before 1970 and one from far ahead: our tar holds their times as GNU tar
/// writes them (GNU tar lists the same dates), and a restore gives them back.
#[test]
fn times_before_1970_and_far_ahead_survive_the_round_trip() {
    use std::os::unix::fs::MetadataExt;
    let vm = Vm::with_identity("acme", "backend");
    vm.job("store").copying_backup_restore();
    let data = vm.data_dir("store");
    for (name, date) in [
        ("old", "1960-01-01 00:00:00 UTC"),
        ("far", "2400-01-01 00:00:00 UTC"),
    ] {
        write_file(&data.join(name), name.as_bytes());
        let touch = Command::new("touch")
            .arg("-d")
            .arg(date)
            .arg(data.join(name))
            .output()
            .unwrap();
        assert!(touch.status.success(), "touch: {touch:?}");
    }
    vm.agent(&[
        "backup",
        "--artifact-path",
        vm.artifacts().to_str().unwrap(),
    ])
    .assert_success();
    let listing = Command::new("tar")
        .args(["--utc", "--full-time", "-tvf"])
        .arg(vm.artifact_dir().join("backend-0-store.tar"))
        .output()
        .unwrap();
    let listing = String::from_utf8(listing.stdout).unwrap();
    assert!(listing.contains("1960-01-01 00:00:00 ./old"), "{listing}");
    assert!(listing.contains("2400-01-01 00:00:00 ./far"), "{listing}");

    fs::remove_dir_all(&data).unwrap();
    let run = vm.agent(&[
        "restore",
        "--artifact-path",
        vm.artifact_dir().to_str().unwrap(),
    ]);
    run.assert_success();
    let mtime = |name: &str| fs::metadata(data.join(name)).unwrap().mtime();
    assert_eq!(mtime("old"), -315_619_200, "{}", run.explain());
    assert_eq!(mtime("far"), 13_569_465_600, "{}", run.explain());
}

/// Names that are not UTF-8 (two of them, and one that a lossy mapping would make the same as
/// another): the tar keeps the bytes, the metadata keys them `!!binary` as BBR's YAML does,
/// and a restore gives back exactly those names.
#[test]
fn names_that_are_not_utf8_round_trip_as_bytes() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let vm = Vm::with_identity("acme", "backend");
    vm.job("store").copying_backup_restore();
    let data = vm.data_dir("store");
    let files: [(&[u8], &[u8]); 4] = [
        (b"caf\xe9", b"latin-1"),
        (b"\xff", b"ff"),
        (b"\xfe", b"fe"),
        (b"dir\x80/inner\x81", b"nested"),
    ];
    for (name, contents) in files {
        write_file(&data.join(OsStr::from_bytes(name)), contents);
    }
    vm.agent(&[
        "backup",
        "--artifact-path",
        vm.artifacts().to_str().unwrap(),
    ])
    .assert_success();
    let artifact = vm.artifact_dir();
    let listing = Command::new("tar")
        .args(["--quoting-style=literal", "-tf"])
        .arg(artifact.join("backend-0-store.tar"))
        .output()
        .unwrap();
    let names: Vec<&[u8]> = listing.stdout.split(|b| *b == b'\n').collect();
    for (name, _) in files {
        let full = [b"./", name].concat();
        assert!(names.contains(&&full[..]), "GNU tar lists {full:?}");
    }
    let metadata = fs::read_to_string(artifact.join("metadata")).unwrap();
    for encoded in ["!!binary Li9jYWbp: ", "!!binary Li//: ", "!!binary Li/+: "] {
        assert!(metadata.contains(encoded), "{encoded} in\n{metadata}");
    }

    fs::remove_dir_all(&data).unwrap();
    let run = vm.agent(&["restore", "--artifact-path", artifact.to_str().unwrap()]);
    run.assert_success();
    for (name, contents) in files {
        assert_eq!(
            fs::read(data.join(OsStr::from_bytes(name))).ok().as_deref(),
            Some(contents),
            "{name:?}\n{}",
            run.explain()
        );
    }
    let top: std::collections::BTreeSet<Vec<u8>> = fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    let expected: std::collections::BTreeSet<Vec<u8>> =
        [&b"caf\xe9"[..], b"\xff", b"\xfe", b"dir\x80"]
            .iter()
            .map(|n| n.to_vec())
            .collect();
    assert_eq!(top, expected, "{}", run.explain());
}

/// A tar's entries by name: each entry's blocks before its data (GNU long-name and
/// long-link records, then its header), and its data.
fn tar_entries(tar: &[u8]) -> std::collections::BTreeMap<Vec<u8>, (Vec<u8>, Vec<u8>)> {
    fn size(header: &[u8]) -> usize {
        let field = &header[124..136];
        if field[0] & 0x80 != 0 {
            field[1..].iter().fold(0, |n, &b| n << 8 | b as usize)
        } else {
            let digits: String = field
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .map(|&b| b as char)
                .collect();
            usize::from_str_radix(&digits, 8).unwrap()
        }
    }
    let mut entries = std::collections::BTreeMap::new();
    let (mut at, mut opening, mut long_name) = (0, Vec::new(), None);
    while at + 512 <= tar.len() && tar[at..at + 512].iter().any(|&b| b != 0) {
        let header = &tar[at..at + 512];
        let len = size(header);
        let data = &tar[at + 512..at + 512 + len];
        let blocks = 512 + len.div_ceil(512) * 512;
        opening.extend_from_slice(&tar[at..at + blocks]);
        at += blocks;
        match header[156] {
            b'L' => long_name = Some(data[..len - 1].to_vec()),
            b'K' => {}
            _ => {
                let name = long_name.take().unwrap_or_else(|| {
                    header[..100]
                        .iter()
                        .take_while(|&&b| b != 0)
                        .copied()
                        .collect()
                });
                let header_at = opening.len() - blocks;
                let data = opening.split_off(header_at + 512);
                entries.insert(name, (std::mem::take(&mut opening), data));
            }
        }
    }
    assert!(
        tar[at..].iter().all(|&b| b == 0),
        "only zeros after the last entry"
    );
    entries
}

/// Issue 12 item 2: the agent's tar of a job's artifact directory has the headers GNU tar's
/// `tar -C DIR -c .` (what BBR runs) writes for the same tree, byte for byte: permission
/// bits alone in the mode, uid/gid, the owners' names (empty for an unknown id), mtime (before
/// 1970 too), type, magic, checksum, long-name and long-link records; and ends on a whole
/// 10240-byte record as GNU tar's does. Only the order of the entries differs
/// (docs/behaviour.md).
#[test]
fn the_tar_headers_are_gnu_tars_byte_for_byte() {
    let vm = Vm::with_identity("acme", "backend");
    let gnu = vm.dir.path().join("gnu.tar");
    let as_root = nix::unistd::geteuid().is_root();
    let owners = if as_root {
        // A known user and group, and ids no name belongs to.
        "chown 65534:65534 exec.sh && chown 4000000:4000001 unknown-owner && chown -h 65534:0 link"
    } else {
        ":"
    };
    let long = "d".repeat(120);
    vm.job("store").script(
        "backup",
        &format!(
            r#"set -e
cd "$BBR_ARTIFACT_DIRECTORY"
printf 'plain\n' > plain.txt && chmod 0644 plain.txt
printf '#!/bin/sh\n' > exec.sh && chmod 0755 exec.sh
printf 'x' > setuid && chmod 04750 setuid
mkdir -p sub/deeper && chmod 0750 sub && printf 'deep' > sub/deeper/file
printf 'old' > old && touch -d @-315619200 old
printf 'unknown' > unknown-owner
ln -s plain.txt link
mkdir -p {long} && printf 'long' > {long}/{long}.txt
ln -s {long}/{long}.txt long-link
touch -h -d @1767225600 . sub sub/deeper {long} link long-link
{owners}
tar -C "$BBR_ARTIFACT_DIRECTORY" -cf '{gnu}' .
"#,
            gnu = gnu.display()
        ),
    );
    vm.agent(&[
        "backup",
        "--artifact-path",
        vm.artifacts().to_str().unwrap(),
    ])
    .assert_success();

    let ours = fs::read(vm.artifact_dir().join("backend-0-store.tar")).unwrap();
    let theirs = fs::read(&gnu).unwrap();
    assert_eq!(ours.len() % 10240, 0, "whole records, as GNU tar");
    let (ours, theirs) = (tar_entries(&ours), tar_entries(&theirs));
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>(),
        "the same entries"
    );
    let show = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert_eq!(
        ours.len(),
        13,
        "{:?}",
        ours.keys().map(|k| show(k)).collect::<Vec<_>>()
    );
    let fields = [
        ("name", 0, 100),
        ("mode", 100, 8),
        ("uid", 108, 8),
        ("gid", 116, 8),
        ("size", 124, 12),
        ("mtime", 136, 12),
        ("checksum", 148, 8),
        ("typeflag", 156, 1),
        ("linkname", 157, 100),
        ("magic", 257, 8),
        ("uname", 265, 32),
        ("gname", 297, 32),
        ("devices and the rest", 329, 183),
    ];
    for (name, (our_opening, our_data)) in &ours {
        let (their_opening, their_data) = &theirs[name];
        assert_eq!(our_data, their_data, "data of {}", show(name));
        assert_eq!(
            our_opening.len(),
            their_opening.len(),
            "records before {}",
            show(name)
        );
        for (block, (a, b)) in our_opening
            .chunks(512)
            .zip(their_opening.chunks(512))
            .enumerate()
        {
            for (field, at, len) in fields {
                assert_eq!(
                    &a[at..at + len],
                    &b[at..at + len],
                    "{} (block {block}): {field} differs: ours {:?}, GNU tar's {:?}",
                    show(name),
                    show(&a[at..at + len]),
                    show(&b[at..at + len]),
                );
            }
        }
    }
}
