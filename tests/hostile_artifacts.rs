//! Hostile artifacts (docs/behaviour.md, "The artifact"): a tar entry with `..`, an absolute path, a link leading
//! outside the job's directory, a hard link to anything but an earlier file, an entry below a
//! symlink, a name that appears twice, or a special file makes the whole restore fail before
//! any file is written and before any script runs. So do checksums that do not match the tar
//! and a backup that never finished. A tar made by GNU tar, as BBR makes it, restores fine.
//!
//! Each hostile tar is built here, byte by byte where the `tar` crate would refuse the name, and
//! sits in an artifact `acme_20260101T000000Z` beside a `metadata` file that matches it.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Run, Vm, tree, write_file};
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

const ARTIFACT: &str = "acme_20260101T000000Z";
const TAR: &str = "backend-0-store.tar";

/// One entry of a hand-made tar, its name written as given.
enum E<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    CharDevice(&'a str),
    Fifo(&'a str),
}

/// A GNU header named exactly `name` (the tar crate's setters refuse `..` and absolute names).
fn header(name: &str, kind: EntryType, mode: u32, size: u64) -> Header {
    let mut h = Header::new_gnu();
    let slot = &mut h.as_old_mut().name;
    assert!(
        name.len() <= slot.len(),
        "test names fit the header: {name}"
    );
    slot.fill(0);
    slot[..name.len()].copy_from_slice(name.as_bytes());
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(1_767_225_600);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn tar_bytes(entries: &[E]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let (mut h, data): (Header, &[u8]) = match *entry {
            E::Dir(name) => (header(name, EntryType::Directory, 0o755, 0), &[]),
            E::File(name, data) => (
                header(name, EntryType::Regular, 0o644, data.len() as u64),
                data,
            ),
            E::Symlink(name, target) => {
                let mut h = header(name, EntryType::Symlink, 0o777, 0);
                h.set_link_name(target).unwrap();
                (h, &[])
            }
            E::Hardlink(name, target) => {
                let mut h = header(name, EntryType::Link, 0o644, 0);
                h.set_link_name(target).unwrap();
                (h, &[])
            }
            E::CharDevice(name) => {
                let mut h = header(name, EntryType::Char, 0o666, 0);
                h.set_device_major(1).unwrap();
                h.set_device_minor(3).unwrap();
                (h, &[])
            }
            E::Fifo(name) => (header(name, EntryType::Fifo, 0o644, 0), &[]),
        };
        h.set_cksum();
        builder.append(&h, data).unwrap();
    }
    builder.into_inner().unwrap()
}

fn sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The manifest key an entry name would have: `./` before a relative name.
fn key(name: &str) -> String {
    if name.starts_with("./") || name.starts_with('/') {
        name.to_string()
    } else {
        format!("./{name}")
    }
}

/// Writes `metadata` for one artifact `backend/0 store` with these checksums.
fn write_metadata(dir: &Path, checksums: &[(String, String)], finished: bool) {
    let sums: serde_json::Map<String, serde_json::Value> = checksums
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let mut activity = serde_json::json!({ "start_time": "2026/01/01 00:00:00 UTC" });
    if finished {
        activity["finish_time"] = "2026/01/01 00:00:05 UTC".into();
    }
    let metadata = serde_json::json!({
        "instances": [{
            "name": "backend",
            "index": "0",
            "artifacts": [{ "name": "store", "checksums": sums }],
        }],
        "backup_activity": activity,
    });
    write_file(
        &dir.join("metadata"),
        serde_yaml::to_string(&metadata).unwrap().as_bytes(),
    );
}

/// The checksums of every regular file among `entries`.
fn checksums_of(entries: &[E]) -> Vec<(String, String)> {
    entries
        .iter()
        .filter_map(|e| match *e {
            E::File(name, data) => Some((key(name), sha256(data))),
            _ => None,
        })
        .collect()
}

/// A VM with one job `store`: recording lock scripts and a recording restore script.
fn vm() -> Vm {
    let vm = Vm::with_identity("acme", "backend");
    vm.job("store").copying_backup_restore().recording_locks();
    vm
}

/// Writes the artifact (`entries` as its tar, `checksums` in its metadata) and returns its dir.
fn artifact(vm: &Vm, entries: &[E], checksums: &[(String, String)], finished: bool) -> PathBuf {
    let dir = vm.artifacts().join(ARTIFACT);
    write_file(&dir.join(TAR), &tar_bytes(entries));
    write_metadata(&dir, checksums, finished);
    dir
}

/// Every path under the test's directory except the agent's own run and log directories.
fn paths(vm: &Vm) -> BTreeSet<String> {
    let top = vm.dir.path();
    let skip = vm.root().join("var/vcap/sys");
    let mut found = BTreeSet::new();
    let mut stack = vec![top.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.starts_with(&skip) {
                continue;
            }
            found.insert(path.strip_prefix(top).unwrap().display().to_string());
            if fs::symlink_metadata(&path).unwrap().is_dir() {
                stack.push(path);
            }
        }
    }
    found
}

fn restore(vm: &Vm, dir: &Path) -> Run {
    vm.agent(&["restore", "--artifact-path", dir.to_str().unwrap()])
}

/// Restores a tar of `entries` (benign files first, so a streaming extraction would have
/// written something) and checks the refusal: exit 1, `named` in the message, no script run,
/// no store, not one path added anywhere under the test's directory.
fn assert_refused(entries: &[E], named: &str, why: &str) -> (Vm, Run) {
    let vm = vm();
    let mut all = vec![E::Dir("./"), E::File("./good.txt", b"good\n")];
    all.extend(entries.iter().map(|e| match *e {
        E::Dir(n) => E::Dir(n),
        E::File(n, d) => E::File(n, d),
        E::Symlink(n, t) => E::Symlink(n, t),
        E::Hardlink(n, t) => E::Hardlink(n, t),
        E::CharDevice(n) => E::CharDevice(n),
        E::Fifo(n) => E::Fifo(n),
    }));
    let dir = artifact(&vm, &all, &checksums_of(&all), true);
    let before = paths(&vm);

    let run = restore(&vm, &dir);
    run.assert_code(1)
        .assert_stderr_contains(&format!("'{named}'"))
        .assert_stderr_contains("is refused")
        .assert_stderr_contains(why);
    assert!(
        vm.calls().is_empty(),
        "no script may run: {:?}\n{}",
        vm.calls(),
        run.explain()
    );
    assert!(
        !vm.store().exists(),
        "the store must not be made\n{}",
        run.explain()
    );
    let after = paths(&vm);
    let added: Vec<_> = after.difference(&before).collect();
    assert!(
        added.is_empty(),
        "nothing may be written: {added:?}\n{}",
        run.explain()
    );
    for escaped in [
        vm.dir.path().join("escape"),
        vm.root().join("var/vcap/store/escape"),
        vm.root().join("var/vcap/escape"),
        vm.root().join("var/vcap/store/outside"),
    ] {
        assert!(
            fs::symlink_metadata(&escaped).is_err(),
            "{} was written\n{}",
            escaped.display(),
            run.explain()
        );
    }
    (vm, run)
}

#[test]
fn a_parent_dir_entry_is_refused() {
    assert_refused(&[E::File("../escape", b"x")], "../escape", "'..'");
}

#[test]
fn a_parent_dir_inside_the_name_is_refused() {
    assert_refused(
        &[E::Dir("./a/"), E::File("./a/../../escape", b"x")],
        "./a/../../escape",
        "'..'",
    );
}

#[test]
fn an_absolute_entry_is_refused() {
    let target = format!(
        "/tmp/escape-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let (_vm, run) = assert_refused(&[E::File(&target, b"x")], &target, "absolute");
    assert!(
        fs::symlink_metadata(&target).is_err(),
        "{target} was written\n{}",
        run.explain()
    );
}

#[test]
fn a_symlink_to_an_absolute_path_is_refused() {
    assert_refused(&[E::Symlink("./link", "/etc")], "./link", "absolute");
}

#[test]
fn a_symlink_leading_outside_is_refused() {
    assert_refused(
        &[E::Symlink("./link", "../outside")],
        "./link",
        "outside the job's directory",
    );
}

#[test]
fn a_symlink_leading_outside_through_another_symlink_is_refused() {
    // `./dot` -> `.` is the job's directory, so `./up1` -> `dot/..` is its parent (the store),
    // `./up2` -> `up1/..` the parent of that, and so on up to `/`; `./etc` -> `up12/etc` is then
    // the VM's /etc. Each target alone looks as if it stays inside.
    let ups: Vec<(String, String)> = (1..=12)
        .map(|i| {
            let below = if i == 1 {
                "dot".to_string()
            } else {
                format!("up{}", i - 1)
            };
            (format!("./up{i}"), format!("{below}/.."))
        })
        .collect();
    let mut entries = vec![E::Symlink("./dot", ".")];
    entries.extend(ups.iter().map(|(n, t)| E::Symlink(n, t)));
    entries.push(E::Symlink("./etc", "up12/etc"));
    assert_refused(&entries, "./up1", "outside the job's directory");
}

#[test]
fn a_hard_link_to_an_absolute_path_is_refused() {
    assert_refused(
        &[E::Hardlink("./hard", "/etc/passwd")],
        "./hard",
        "hard link",
    );
}

#[test]
fn a_hard_link_leading_outside_is_refused() {
    assert_refused(&[E::Hardlink("./hard", "../x")], "./hard", "hard link");
}

#[test]
fn a_character_device_is_refused() {
    assert_refused(&[E::CharDevice("./null")], "./null", "special file");
}

#[test]
fn a_fifo_is_refused() {
    assert_refused(&[E::Fifo("./pipe")], "./pipe", "special file");
}

#[test]
fn an_entry_below_a_symlink_is_refused() {
    assert_refused(
        &[
            E::Dir("./sub/"),
            E::Symlink("./link", "sub"),
            E::File("./link/file", b"through the link"),
        ],
        "./link/file",
        "below the symlink",
    );
}

#[test]
fn a_name_that_appears_twice_is_refused() {
    assert_refused(
        &[E::File("./dup", b"first"), E::File("./dup", b"second")],
        "./dup",
        "appears twice",
    );
}

/// A restore refused for its checksums: exit 1, the message names `file`, nothing runs.
fn assert_checksums_refused(vm: &Vm, dir: &Path, file: &str) {
    let before = paths(vm);
    let run = restore(vm, dir);
    run.assert_code(1)
        .assert_stderr_contains("does not match its checksums")
        .assert_stderr_contains(file);
    assert!(
        vm.calls().is_empty(),
        "no script may run: {:?}\n{}",
        vm.calls(),
        run.explain()
    );
    assert!(!vm.store().exists(), "{}", run.explain());
    assert_eq!(
        paths(vm),
        before,
        "nothing may be written\n{}",
        run.explain()
    );
}

#[test]
fn a_file_missing_from_the_metadata_is_refused() {
    let vm = vm();
    let entries = [
        E::Dir("./"),
        E::File("./good.txt", b"good\n"),
        E::File("./extra.txt", b"smuggled in"),
    ];
    let listed = vec![(key("./good.txt"), sha256(b"good\n"))];
    let dir = artifact(&vm, &entries, &listed, true);
    assert_checksums_refused(&vm, &dir, "./extra.txt");
}

#[test]
fn a_file_missing_from_the_tar_is_refused() {
    let vm = vm();
    let entries = [E::Dir("./"), E::File("./good.txt", b"good\n")];
    let mut listed = checksums_of(&entries);
    listed.push((key("./gone.txt"), sha256(b"gone")));
    let dir = artifact(&vm, &entries, &listed, true);
    assert_checksums_refused(&vm, &dir, "./gone.txt");
}

#[test]
fn a_backup_without_finish_time_is_refused_as_incomplete() {
    let vm = vm();
    let entries = [E::Dir("./"), E::File("./good.txt", b"good\n")];
    let dir = artifact(&vm, &entries, &checksums_of(&entries), false);
    let before = paths(&vm);
    let run = restore(&vm, &dir);
    run.assert_code(1)
        .assert_stderr_contains("not a complete backup")
        .assert_stderr_contains("finish_time");
    assert!(vm.calls().is_empty(), "{:?}\n{}", vm.calls(), run.explain());
    assert!(!vm.store().exists(), "{}", run.explain());
    assert_eq!(paths(&vm), before, "{}", run.explain());
}

/// What BBR itself makes: `tar -C <dir> -cf <job>.tar .` by GNU tar, checksums from
/// `find . -type f | xargs shasum -a 256`.
#[test]
fn a_tar_made_by_gnu_tar_restores() {
    let vm = vm();
    let source = vm.dir.path().join("made-by-bbr");
    let long_dir = "a directory whose name is long enough on its own";
    let long_file = "and a file name that together with it is far longer than the hundred bytes \
                     a tar header holds.txt";
    assert!(long_dir.len() + long_file.len() > 100);
    write_file(&source.join("top.txt"), b"top\n");
    write_file(&source.join("nested/deeper/still/file"), b"deep");
    write_file(
        &source.join("nested").join(long_dir).join(long_file),
        b"long",
    );
    write_file(&source.join("with spaces.bin"), b"\x00\x01\x02");
    fs::create_dir_all(source.join("empty dir")).unwrap();
    std::os::unix::fs::symlink("../top.txt", source.join("nested/link-to-top")).unwrap();
    std::os::unix::fs::symlink("deeper/still", source.join("nested/link-to-dir")).unwrap();
    fs::hard_link(source.join("top.txt"), source.join("hard-to-top")).unwrap();

    let dir = vm.artifacts().join(ARTIFACT);
    fs::create_dir_all(&dir).unwrap();
    let tar = Command::new("tar")
        .arg("-C")
        .arg(&source)
        .arg("-cf")
        .arg(dir.join(TAR))
        .arg(".")
        .output()
        .unwrap();
    assert!(tar.status.success(), "GNU tar: {tar:?}");
    let sums = Command::new("sh")
        .arg("-c")
        .arg("cd \"$1\" && find . -type f -print0 | xargs -0 sha256sum")
        .arg("sh")
        .arg(&source)
        .output()
        .unwrap();
    assert!(sums.status.success(), "sha256sum: {sums:?}");
    let checksums: Vec<(String, String)> = String::from_utf8(sums.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (sum, name) = l.split_once("  ").unwrap();
            (name.to_string(), sum.to_string())
        })
        .collect();
    assert_eq!(checksums.len(), 5, "{checksums:?}");
    write_metadata(&dir, &checksums, true);

    restore(&vm, &dir).assert_success();
    assert_eq!(tree(&vm.data_dir("store")), tree(&source));
    assert_eq!(
        vm.calls(),
        [
            "store pre-restore-lock",
            "store restore",
            "store post-restore-unlock"
        ]
    );
    assert!(!vm.store().exists());
}

/// A metadata file naming an instance `../../outside/x` (or an index or a job with `/`) would
/// read a tar from outside the backup: refused, naming the metadata key, before any tar is
/// read or any script runs. The planted tar outside is valid, so only the name check stops it.
#[test]
fn metadata_names_that_are_not_plain_names_are_refused_before_anything_is_read() {
    let entries = [E::Dir("./"), E::File("./planted.txt", b"from outside\n")];
    let sums = checksums_of(&entries);
    for (key, name, index, job) in [
        ("instances[0].name", "../../outside/x", "0", "store"),
        (
            "instances[0].index",
            "backend",
            "0/../../../outside",
            "store",
        ),
        (
            "instances[0].artifacts[0].name",
            "backend",
            "0",
            "../../outside/y",
        ),
    ] {
        let vm = vm();
        let dir = vm.artifacts().join(ARTIFACT);
        let tar = dir.join(format!("{name}-{index}-{job}.tar"));
        fs::create_dir_all(tar.parent().unwrap()).unwrap();
        fs::create_dir_all(dir.join("backend-0-../../outside")).unwrap();
        write_file(&tar, &tar_bytes(&entries));
        write_metadata(&dir, &sums, true);
        let text = fs::read_to_string(dir.join("metadata")).unwrap();
        let text = text
            .replace("name: backend", &format!("name: '{name}'"))
            .replace("index: '0'", &format!("index: '{index}'"))
            .replace("name: store", &format!("name: '{job}'"));
        fs::write(dir.join("metadata"), text).unwrap();
        let before = paths(&vm);

        let run = restore(&vm, &dir);
        run.assert_code(1)
            .assert_stderr_contains(&format!("metadata: {key} "))
            .assert_stderr_contains("nothing was read");
        assert!(
            vm.calls().is_empty(),
            "{key}: {:?}\n{}",
            vm.calls(),
            run.explain()
        );
        assert!(!vm.store().exists(), "{key}\n{}", run.explain());
        assert_eq!(
            paths(&vm),
            before,
            "{key}: nothing written\n{}",
            run.explain()
        );
    }
}

/// A named (custom) artifact `../../outside/z` would be read from `../../outside/z.tar`,
/// outside the backup: refused by its metadata key before any tar is read or script runs.
#[test]
fn a_custom_artifact_name_that_is_not_plain_is_refused_before_anything_is_read() {
    let entries = [E::Dir("./"), E::File("./planted.txt", b"from outside\n")];
    let vm = vm();
    let dir = artifact(&vm, &entries, &checksums_of(&entries), true);
    let outside = dir.join("../../outside");
    fs::create_dir_all(&outside).unwrap();
    write_file(&outside.join("z.tar"), &tar_bytes(&entries));
    let text = fs::read_to_string(dir.join("metadata")).unwrap();
    let text = text.replace(
        "backup_activity:",
        "custom_artifacts:\n- name: '../../outside/z'\n  checksums: {}\nbackup_activity:",
    );
    fs::write(dir.join("metadata"), text).unwrap();
    let before = paths(&vm);

    let run = restore(&vm, &dir);
    run.assert_code(1)
        .assert_stderr_contains("metadata: custom_artifacts[0].name ")
        .assert_stderr_contains("nothing was read");
    assert!(vm.calls().is_empty(), "{:?}\n{}", vm.calls(), run.explain());
    assert!(!vm.store().exists(), "{}", run.explain());
    assert_eq!(paths(&vm), before, "nothing written\n{}", run.explain());
}

/// GNU tar's own artifact of files from before 1970 (negative base-256 times, as BBR's
/// `tar -c` writes them), from far ahead (past what the octal field holds), and one whose
/// header holds no time: each restores, and the times that were there come back.
#[test]
fn times_before_1970_far_ahead_and_absent_restore_as_they_were() {
    use std::os::unix::fs::MetadataExt;
    let vm = vm();
    let source = vm.dir.path().join("made-by-bbr");
    write_file(&source.join("old.txt"), b"from 1960\n");
    write_file(&source.join("far.txt"), b"from 2400\n");
    write_file(&source.join("now.txt"), b"now\n");
    for (file, date) in [
        ("old.txt", "1960-01-01 00:00:00 UTC"),
        ("far.txt", "2400-01-01 00:00:00 UTC"),
    ] {
        let touch = Command::new("touch")
            .arg("-d")
            .arg(date)
            .arg(source.join(file))
            .output()
            .unwrap();
        assert!(touch.status.success(), "touch: {touch:?}");
    }
    let mtime = |p: &Path| fs::metadata(p).unwrap().mtime();
    assert_eq!(mtime(&source.join("old.txt")), -315_619_200);
    assert_eq!(mtime(&source.join("far.txt")), 13_569_465_600);

    let dir = vm.artifacts().join(ARTIFACT);
    fs::create_dir_all(&dir).unwrap();
    let tar = Command::new("tar")
        .arg("-C")
        .arg(&source)
        .arg("-cf")
        .arg(dir.join(TAR))
        .arg(".")
        .output()
        .unwrap();
    assert!(tar.status.success(), "GNU tar: {tar:?}");
    // `now.txt` gets a header with no time at all (the field all NULs, checksum redone).
    let mut bytes = fs::read(dir.join(TAR)).unwrap();
    let at = (0..bytes.len())
        .step_by(512)
        .find(|&o| bytes[o..].starts_with(b"./now.txt\0"))
        .unwrap();
    bytes[at + 136..at + 148].fill(0);
    bytes[at + 148..at + 156].fill(b' ');
    let sum: u32 = bytes[at..at + 512].iter().map(|b| u32::from(*b)).sum();
    bytes[at + 148..at + 156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    fs::write(dir.join(TAR), &bytes).unwrap();
    let checksums: Vec<(String, String)> = [
        ("old.txt", &b"from 1960\n"[..]),
        ("far.txt", b"from 2400\n"),
        ("now.txt", b"now\n"),
    ]
    .iter()
    .map(|(n, d)| (key(n), sha256(d)))
    .collect();
    write_metadata(&dir, &checksums, true);

    let run = restore(&vm, &dir);
    run.assert_success();
    let data = vm.data_dir("store");
    assert_eq!(tree(&data), tree(&source), "{}", run.explain());
    assert_eq!(
        mtime(&data.join("old.txt")),
        -315_619_200,
        "{}",
        run.explain()
    );
    assert_eq!(
        mtime(&data.join("far.txt")),
        13_569_465_600,
        "{}",
        run.explain()
    );
    assert!(!vm.store().exists());
}

/// `aN -> aN-1/aN-1/...` (as many components as the header holds), `a0 -> .`: each level
/// multiplies the symlinks a resolution follows by about thirty.
fn multiplying_chain(levels: usize) -> Vec<(String, String)> {
    let mut links = vec![("./a0".to_string(), ".".to_string())];
    for i in 1..=levels {
        let below = format!("a{}", i - 1);
        let mut target = below.clone();
        while target.len() + below.len() < 100 {
            target = format!("{target}/{below}");
        }
        links.push((format!("./a{i}"), target));
    }
    links
}

/// The chain of eight levels (and one of forty straight links) is refused at once
/// with the kernel's limit named; counting depth instead of steps took minutes from six
/// levels on, and for ever at eight.
#[test]
fn a_symlink_chain_past_the_kernels_limit_is_refused() {
    let chain = multiplying_chain(8);
    let entries: Vec<E> = chain.iter().map(|(n, t)| E::Symlink(n, t)).collect();
    assert_refused(&entries, "./a2", "follows more than 40 symlinks");

    let straight: Vec<(String, String)> = (0..=41)
        .map(|i| {
            let target = if i == 0 {
                "good.txt".to_string()
            } else {
                format!("l{}", i - 1)
            };
            (format!("./l{i}"), target)
        })
        .collect();
    let entries: Vec<E> = straight.iter().map(|(n, t)| E::Symlink(n, t)).collect();
    assert_refused(&entries, "./l40", "follows more than 40 symlinks");
}

/// A chain within the limit that stays inside restores, its links as they were.
#[test]
fn a_symlink_chain_within_the_kernels_limit_restores() {
    let vm = vm();
    let mut chain = multiplying_chain(1);
    // Opening `l39` follows 40 symlinks, as many as Linux follows.
    chain.extend((0..=39).map(|i| {
        let target = if i == 0 {
            "good.txt".to_string()
        } else {
            format!("l{}", i - 1)
        };
        (format!("./l{i}"), target)
    }));
    let mut entries = vec![E::Dir("./"), E::File("./good.txt", b"good\n")];
    entries.extend(chain.iter().map(|(n, t)| E::Symlink(n, t)));
    let dir = artifact(&vm, &entries, &checksums_of(&entries), true);
    let run = restore(&vm, &dir);
    run.assert_success();
    let data = vm.data_dir("store");
    for (name, target) in &chain {
        assert_eq!(
            fs::read_link(data.join(&name[2..])).unwrap(),
            Path::new(target),
            "{}",
            run.explain()
        );
    }
    assert_eq!(fs::read(data.join("l39")).unwrap(), b"good\n");
}

/// A GNU long-name record claiming 2 GiB (a sparse tar that size): refused from its header,
/// the agent's memory staying small (it read the whole record into memory: 2.5 GB).
#[test]
fn a_2_gib_long_name_record_is_refused_with_bounded_memory() {
    let vm = vm();
    let dir = vm.artifacts().join(ARTIFACT);
    let mut long = Header::new_gnu();
    long.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
    long.set_entry_type(EntryType::GNULongName);
    long.set_mode(0o644);
    long.set_size(2 << 30);
    long.set_cksum();
    let tar = write_file(&dir.join(TAR), long.as_bytes());
    let file = fs::OpenOptions::new().write(true).open(&tar).unwrap();
    file.set_len(512 + (2 << 30) + 512 + 1024).unwrap();
    write_metadata(&dir, &[(key("./x"), sha256(b"x"))], true);

    let mut command = Command::new(common::AGENT);
    command
        .args([
            "--root",
            vm.root().to_str().unwrap(),
            "restore",
            "--artifact-path",
        ])
        .arg(&dir)
        .current_dir(vm.dir.path());
    let (run, peak_kib) = Run::measured(&mut command, vm.dir.path());
    eprintln!("peak RSS of the refused restore: {peak_kib} KiB");
    run.assert_code(1)
        .assert_stderr_contains("'././@LongLink' is refused")
        .assert_stderr_contains(
            "GNU long name is 2147483648 bytes, more than the 4096 bytes allowed",
        );
    assert!(
        peak_kib < 64 * 1024,
        "peak RSS {peak_kib} KiB, more than 64 MiB\n{}",
        run.explain()
    );
    assert!(vm.calls().is_empty(), "{:?}\n{}", vm.calls(), run.explain());
    assert!(!vm.store().exists(), "{}", run.explain());
}

/// A tar of regular files named by the given bytes (under `./`).
fn byte_named_tar(files: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut root = header("./", EntryType::Directory, 0o755, 0);
    root.set_cksum();
    builder.append(&root, &[][..]).unwrap();
    for (name, data) in files {
        let mut h = header("", EntryType::Regular, 0o644, data.len() as u64);
        let full = [b"./", *name].concat();
        h.as_old_mut().name[..full.len()].copy_from_slice(&full);
        h.set_cksum();
        builder.append(&h, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

/// BBR's metadata for one artifact, written as BBR's Go YAML writes it: a name that is not
/// UTF-8 as a `!!binary` key of its bytes in base64.
fn write_bbr_metadata(dir: &Path, checksums: &[(&[u8], String)]) {
    let mut sums = String::new();
    for (name, sum) in checksums {
        let full = [b"./", *name].concat();
        match std::str::from_utf8(&full) {
            Ok(text) => sums.push_str(&format!("      {text}: {sum}\n")),
            Err(_) => sums.push_str(&format!("      !!binary {}: {sum}\n", base64(&full))),
        }
    }
    let text = format!(
        "instances:\n- name: backend\n  index: \"0\"\n  artifacts:\n  - name: store\n    checksums:\n{sums}backup_activity:\n  start_time: 2026/01/01 00:00:00 UTC\n  finish_time: 2026/01/01 00:00:05 UTC\n"
    );
    write_file(&dir.join("metadata"), text.as_bytes());
}

fn base64(bytes: &[u8]) -> String {
    let out = Command::new("base64")
        .arg("-w0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(bytes)?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// Names in the restored job's data directory, as bytes.
fn names_in(dir: &Path) -> BTreeSet<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect()
}

/// `\xff` and `\xfe` were one key once names were mapped to UTF-8 lossily, so the file the
/// metadata did not list reached the restore script unchecked. Each is its own key now: the
/// unlisted one is named, and nothing runs.
#[test]
fn a_file_whose_name_once_collided_with_a_listed_one_is_refused() {
    let vm = vm();
    let dir = vm.artifacts().join(ARTIFACT);
    write_file(
        &dir.join(TAR),
        &byte_named_tar(&[(b"\xff", b"listed"), (b"\xfe", b"smuggled in")]),
    );
    write_bbr_metadata(&dir, &[(b"\xff", sha256(b"listed"))]);
    assert_checksums_refused(&vm, &dir, "not in the manifest: ./\\xfe");

    // And the reverse: listed, but not in the tar.
    write_file(&dir.join(TAR), &byte_named_tar(&[(b"\xff", b"listed")]));
    write_bbr_metadata(
        &dir,
        &[(b"\xff", sha256(b"listed")), (b"\xfe", sha256(b"gone"))],
    );
    assert_checksums_refused(&vm, &dir, "missing: ./\\xfe");
}

/// An artifact as BBR makes it from names that are not UTF-8 (GNU tar keeps the bytes, the
/// metadata keys them `!!binary`): it restores, each name exactly as it was.
#[test]
fn names_that_are_not_utf8_from_a_gnu_tar_artifact_restore_as_bytes() {
    use std::os::unix::ffi::OsStrExt;
    let vm = vm();
    let source = vm.dir.path().join("made-by-bbr");
    let files: [(&[u8], &[u8]); 4] = [
        (b"caf\xe9", b"latin-1"),
        (b"\xff", b"ff"),
        (b"\xfe", b"fe"),
        ("café".as_bytes(), b"utf-8"),
    ];
    for (name, data) in files {
        write_file(&source.join(std::ffi::OsStr::from_bytes(name)), data);
    }
    let dir = vm.artifacts().join(ARTIFACT);
    fs::create_dir_all(&dir).unwrap();
    let tar = Command::new("tar")
        .arg("-C")
        .arg(&source)
        .arg("-cf")
        .arg(dir.join(TAR))
        .arg(".")
        .output()
        .unwrap();
    assert!(tar.status.success(), "GNU tar: {tar:?}");
    let sums: Vec<(&[u8], String)> = files.iter().map(|(n, d)| (*n, sha256(d))).collect();
    write_bbr_metadata(&dir, &sums);

    let run = restore(&vm, &dir);
    run.assert_success();
    let data = vm.data_dir("store");
    let expected: BTreeSet<Vec<u8>> = files.iter().map(|(n, _)| n.to_vec()).collect();
    assert_eq!(names_in(&data), expected, "{}", run.explain());
    for (name, contents) in files {
        assert_eq!(
            fs::read(data.join(std::ffi::OsStr::from_bytes(name))).unwrap(),
            contents
        );
    }
}
