//! Compressed and encrypted backups (`--compress`, `--encrypt-to`), through the real binary:
//! each layer round-trips through a deployment backup and restore (compressed on the VM or on
//! the driver, encrypted, both), a changed byte in an encrypted object is refused before any
//! restore-side script runs, a restore without the identity names the recipients before any
//! VM is touched, and a plain run stays BBR's.

mod common;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use common::fleet::Fleet;
use common::{Run, listing, write_file};

/// A fleet of two VMs whose `db` jobs copy their data in and out, with lock scripts that
/// record, and a text-heavy data file (a SQL dump) and a binary one each.
fn fleet() -> Fleet {
    let mut fleet = Fleet::new();
    for group in ["db", "api"] {
        let vm = fleet.add(group, 0);
        vm.job("db").recording_locks().copying_backup_restore();
        let dump: String = (0..20_000)
            .map(|i| format!("INSERT INTO orders VALUES ({i}, '{group}', 'shipped');\n"))
            .collect();
        write_file(&vm.data_dir("db").join("dump.sql"), dump.as_bytes());
        let noise: Vec<u8> = (0..70_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        write_file(&vm.data_dir("db").join("sub/blob.bin"), &noise);
    }
    fleet
}

/// A new age identity file in `dir`, and its recipient.
fn identity(dir: &Path, name: &str) -> (PathBuf, String) {
    common::age_identity(dir, name)
}

/// Every file of `dir` (a tree) with its bytes, by relative path.
fn data_of(fleet: &Fleet, group: &str) -> Vec<(String, Vec<u8>)> {
    common::tree(&fleet.vm(group, 0).data_dir("db"))
}

/// Names of the backup directory's entries, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Backs the fleet up with `extra`, wipes the data, restores with `restore_extra`, and checks
/// the data came back byte for byte. Returns the backup directory.
fn round_trip(fleet: &Fleet, extra: &[&str], restore_extra: &[&str]) -> PathBuf {
    let inventory = fleet.local_inventory();
    let before = (data_of(fleet, "db"), data_of(fleet, "api"));
    fleet.backup(&inventory, extra).assert_success();
    let dir = fleet.artifact_dir();
    for group in ["db", "api"] {
        fs::remove_dir_all(fleet.vm(group, 0).data_dir("db")).unwrap();
    }
    let shown = dir.display().to_string();
    let mut args = vec!["restore", "--artifact-path", &shown];
    args.extend_from_slice(restore_extra);
    let run = fleet.driver(&inventory, &args);
    run.assert_success();
    assert_eq!(
        (data_of(fleet, "db"), data_of(fleet, "api")),
        before,
        "the data did not come back\n{}\n{}",
        run.explain(),
        listing(&dir)
    );
    dir
}

fn metadata(dir: &Path) -> serde_yaml::Value {
    serde_yaml::from_str(&fs::read_to_string(dir.join("metadata")).unwrap()).unwrap()
}

fn decrypt(bytes: &[u8], identity: &Path) -> Vec<u8> {
    let text = fs::read_to_string(identity).unwrap();
    let key = text
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap();
    let id: age::x25519::Identity = key.parse().unwrap();
    let mut out = Vec::new();
    age::Decryptor::new(bytes)
        .unwrap()
        .decrypt(std::iter::once(&id as &dyn age::Identity))
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// The names of a tar's entries.
fn entries(tar: &[u8]) -> Vec<String> {
    tar::Archive::new(tar)
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect()
}

#[test]
fn compressed_on_the_vm_round_trips_as_tar_zst_with_the_files_checksums() {
    let fleet = fleet();
    let dir = round_trip(&fleet, &["--compress", "zstd"], &[]);
    assert_eq!(
        names(&dir),
        [
            "api-0-db.tar.zst",
            "db-0-db.tar.zst",
            "metadata",
            "report.html"
        ],
        "{}",
        listing(&dir)
    );
    let m = metadata(&dir);
    assert_eq!(m["bbr_agent"]["format"], 1);
    assert_eq!(m["bbr_agent"]["compression"], "zstd");
    assert_eq!(m["bbr_agent"]["compressed_on"], "vm");
    assert!(m["bbr_agent"].get("encryption").is_none(), "{m:?}");
    let packed = fs::read(dir.join("db-0-db.tar.zst")).unwrap();
    let tar = zstd::decode_all(&packed[..]).unwrap();
    assert!(
        packed.len() * 3 < tar.len(),
        "{} of {}",
        packed.len(),
        tar.len()
    );
    assert_eq!(
        entries(&tar),
        ["./", "./dump.sql", "./sub/", "./sub/blob.bin"]
    );
    // The checksums are the files', as a plain backup's.
    let sums = &m["instances"][0]["artifacts"][0]["checksums"];
    assert_eq!(sums.as_mapping().unwrap().len(), 2, "{sums:?}");
}

#[test]
fn compressed_on_the_driver_round_trips_at_the_level_asked() {
    let fleet = fleet();
    let dir = round_trip(
        &fleet,
        &["--compress", "zstd:9", "--compress-on", "driver"],
        &[],
    );
    assert_eq!(metadata(&dir)["bbr_agent"]["compressed_on"], "driver");
    let packed = fs::read(dir.join("api-0-db.tar.zst")).unwrap();
    assert!(zstd::decode_all(&packed[..]).is_ok());
}

#[test]
fn encrypted_backups_round_trip_and_their_file_names_are_encrypted_too() {
    let fleet = fleet();
    let (key, recipient) = identity(fleet.dir.path(), "key.txt");
    let dir = round_trip(
        &fleet,
        &["--encrypt-to", &recipient],
        &["--identity", key.to_str().unwrap()],
    );
    assert_eq!(
        names(&dir),
        [
            "api-0-db.tar.age",
            "checksums.age",
            "db-0-db.tar.age",
            "metadata",
            "report.html"
        ],
        "{}",
        listing(&dir)
    );
    let text = fs::read_to_string(dir.join("metadata")).unwrap();
    assert!(
        !text.contains("dump.sql"),
        "a file name in the plain metadata:\n{text}"
    );
    let m = metadata(&dir);
    assert_eq!(m["bbr_agent"]["encryption"], "age");
    assert_eq!(m["bbr_agent"]["recipients"][0], recipient.as_str());
    assert!(m["bbr_agent"].get("compression").is_none(), "{m:?}");
    let tar = decrypt(&fs::read(dir.join("db-0-db.tar.age")).unwrap(), &key);
    assert_eq!(
        entries(&tar),
        ["./", "./dump.sql", "./sub/", "./sub/blob.bin"]
    );
    let sealed =
        String::from_utf8(decrypt(&fs::read(dir.join("checksums.age")).unwrap(), &key)).unwrap();
    assert!(sealed.contains("./dump.sql: "), "{sealed}");
}

#[test]
fn compressed_and_encrypted_backups_round_trip_with_a_recipients_file() {
    let fleet = fleet();
    let (key, recipient) = identity(fleet.dir.path(), "key.txt");
    let (_, other) = identity(fleet.dir.path(), "other.txt");
    let list = write_file(
        &fleet.dir.path().join("recipients.txt"),
        format!("# the ops team\n{recipient}\n\n{other}\n").as_bytes(),
    );
    let dir = round_trip(
        &fleet,
        &[
            "--compress",
            "zstd",
            "--recipients-file",
            list.to_str().unwrap(),
        ],
        &["--identity", key.to_str().unwrap()],
    );
    let m = metadata(&dir);
    assert_eq!(
        m["bbr_agent"]["recipients"],
        serde_yaml::to_value([recipient.as_str(), other.as_str()]).unwrap()
    );
    let tar =
        zstd::decode_all(&decrypt(&fs::read(dir.join("db-0-db.tar.zst.age")).unwrap(), &key)[..])
            .unwrap();
    assert_eq!(entries(&tar).len(), 4);
}

/// A backup of the fleet encrypted to a new identity: (the backup's directory, the
/// identity's file, its recipient).
fn encrypted_backup(fleet: &Fleet, extra: &[&str]) -> (PathBuf, PathBuf, String) {
    let (key, recipient) = identity(fleet.dir.path(), "key.txt");
    let mut args = vec!["--encrypt-to", &recipient];
    args.extend_from_slice(extra);
    fleet
        .backup(&fleet.local_inventory(), &args)
        .assert_success();
    (fleet.artifact_dir(), key, recipient)
}

fn restore(fleet: &Fleet, dir: &Path, extra: &[&str]) -> Run {
    let shown = dir.display().to_string();
    let mut args = vec!["restore", "--artifact-path", &shown];
    args.extend_from_slice(extra);
    fleet.driver(&fleet.local_inventory(), &args)
}

/// Whether any restore-side script ran (they record `group/index job script`).
fn restore_side_ran(fleet: &Fleet) -> Vec<String> {
    fleet
        .calls()
        .into_iter()
        .filter(|c| c.contains("restore"))
        .collect()
}

#[test]
fn a_flipped_byte_in_any_encrypted_object_is_refused_before_any_restore_side_script() {
    let fleet = fleet();
    let (dir, key, _) = encrypted_backup(&fleet, &["--compress", "zstd"]);
    let id = key.to_str().unwrap();
    for object in [
        "db-0-db.tar.zst.age",
        "api-0-db.tar.zst.age",
        "checksums.age",
    ] {
        let path = dir.join(object);
        let good = fs::read(&path).unwrap();
        // In the header, in the middle, and in the last chunk (past the tar's end).
        for at in [40, good.len() / 2, good.len() - 3] {
            let mut bad = good.clone();
            bad[at] ^= 0x20;
            fs::write(&path, &bad).unwrap();
            let run = restore(&fleet, &dir, &["--identity", id]);
            run.assert_code(1);
            assert!(
                run.stderr.contains(object) || run.stdout.contains(object),
                "the error does not name {object}\n{}",
                run.explain()
            );
            assert_eq!(
                restore_side_ran(&fleet),
                Vec::<String>::new(),
                "{}",
                run.explain()
            );
        }
        fs::write(&path, &good).unwrap();
    }
    // Cut short at a chunk's end: refused the same way.
    let path = dir.join("db-0-db.tar.zst.age");
    let good = fs::read(&path).unwrap();
    fs::write(&path, &good[..good.len() - 17]).unwrap();
    let run = restore(&fleet, &dir, &["--identity", id]);
    run.assert_code(1);
    assert_eq!(
        restore_side_ran(&fleet),
        Vec::<String>::new(),
        "{}",
        run.explain()
    );
    // And whole again, it restores.
    fs::write(&path, &good).unwrap();
    restore(&fleet, &dir, &["--identity", id]).assert_success();
    assert!(!restore_side_ran(&fleet).is_empty());
}

#[test]
fn a_restore_without_the_identity_names_the_recipients_before_any_vm_is_touched() {
    let fleet = fleet();
    let (dir, _, recipient) = encrypted_backup(&fleet, &[]);
    let calls = fleet.calls().len();
    let run = restore(&fleet, &dir, &[]);
    run.assert_code(1);
    let said = format!("{}{}", run.stdout, run.stderr);
    assert!(
        said.contains(&format!(
            "is encrypted with age to {recipient}: give --identity FILE"
        )),
        "{}",
        run.explain()
    );
    let (wrong, wrong_public) = identity(fleet.dir.path(), "wrong.txt");
    let run = restore(&fleet, &dir, &["--identity", wrong.to_str().unwrap()]);
    run.assert_code(1);
    let said = format!("{}{}", run.stdout, run.stderr);
    assert!(
        said.contains(&wrong_public) && said.contains(&format!("it was made for {recipient}")),
        "{}",
        run.explain()
    );
    // No VM was reached: not even a metadata script ran.
    assert_eq!(fleet.calls().len(), calls, "{:?}", fleet.calls());
}

#[test]
fn a_plain_run_writes_bbrs_artifact_unchanged() {
    let fleet = fleet();
    let inventory = fleet.local_inventory();
    fleet.backup(&inventory, &[]).assert_success();
    let plain_dir = fleet.artifact_dir();
    assert_eq!(
        names(&plain_dir),
        ["api-0-db.tar", "db-0-db.tar", "metadata", "report.html"]
    );
    let text = fs::read_to_string(plain_dir.join("metadata")).unwrap();
    assert!(!text.contains("bbr_agent"), "{text}");
    let keys: Vec<String> = metadata(&plain_dir)
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys, ["instances", "backup_activity"]);
    // The tar a compressed or encrypted run stores is the same plain tar, byte for byte.
    let plain = fs::read(plain_dir.join("db-0-db.tar")).unwrap();
    let moved = fleet.dir.path().join("plain");
    fs::rename(&plain_dir, &moved).unwrap();
    let (key, recipient) = identity(fleet.dir.path(), "key.txt");
    fleet
        .backup(
            &inventory,
            &["--compress", "zstd", "--encrypt-to", &recipient],
        )
        .assert_success();
    let dir = fleet.artifact_dir();
    let inside =
        zstd::decode_all(&decrypt(&fs::read(dir.join("db-0-db.tar.zst.age")).unwrap(), &key)[..])
            .unwrap();
    assert!(
        inside == plain,
        "the tar inside differs from the plain run's"
    );
    // And the sealed metadata is the plain run's but for its times and the record.
    let sealed: serde_yaml::Value = serde_yaml::from_slice(&decrypt(
        &fs::read(dir.join("checksums.age")).unwrap(),
        &key,
    ))
    .unwrap();
    let plain_meta: serde_yaml::Value =
        serde_yaml::from_str(&fs::read_to_string(moved.join("metadata")).unwrap()).unwrap();
    assert_eq!(sealed["instances"], plain_meta["instances"]);
}

#[test]
fn a_local_backup_compressed_and_encrypted_restores_on_its_vm() {
    let vm = common::Vm::with_identity("acme", "backend");
    vm.job("store").copying_backup_restore();
    write_file(
        &vm.data_dir("store").join("a.sql"),
        "SELECT 1;\n".repeat(5000).as_bytes(),
    );
    let (key, recipient) = identity(vm.root().parent().unwrap(), "key.txt");
    let artifacts = vm.artifacts();
    vm.agent(&[
        "backup",
        "--artifact-path",
        artifacts.to_str().unwrap(),
        "--compress",
        "zstd:19",
        "--encrypt-to",
        &recipient,
    ])
    .assert_success();
    let dir = vm.artifact_dir();
    assert!(
        dir.join("backend-0-store.tar.zst.age").is_file(),
        "{}",
        listing(&dir)
    );
    fs::remove_dir_all(vm.data_dir("store")).unwrap();
    let shown = dir.display().to_string();
    vm.agent(&["restore", "--artifact-path", &shown])
        .assert_code(1)
        .assert_stderr_contains(&format!("encrypted with age to {recipient}"));
    vm.agent(&[
        "restore",
        "--artifact-path",
        &shown,
        "--identity",
        key.to_str().unwrap(),
    ])
    .assert_success();
    assert_eq!(
        fs::read(vm.data_dir("store").join("a.sql")).unwrap(),
        "SELECT 1;\n".repeat(5000).as_bytes()
    );
}

#[test]
fn bad_recipients_and_identities_are_refused_naming_them_before_anything_runs() {
    let fleet = fleet();
    let inventory = fleet.local_inventory();
    let run = fleet.backup(&inventory, &["--encrypt-to", "age1notakey"]);
    run.assert_code(1)
        .assert_stderr_contains("--encrypt-to `age1notakey` is not an age X25519 recipient");
    assert!(fleet.calls().is_empty(), "{:?}", fleet.calls());
    let (dir, key, _) = encrypted_backup(&fleet, &[]);
    let _ = key;
    let bogus = write_file(
        &fleet.dir.path().join("bogus"),
        b"# nothing\nAGE-SECRET-KEY-1NOPE\n",
    );
    restore(&fleet, &dir, &["--identity", bogus.to_str().unwrap()])
        .assert_code(1)
        .assert_stderr_contains("line 2: not an age X25519 identity");
    // A plain backup restored with --identity: refused, it may have been swapped.
    fs::remove_dir_all(&dir).unwrap();
    fleet.backup(&inventory, &[]).assert_success();
    let plain = fleet.artifact_dir();
    let (other, _) = identity(fleet.dir.path(), "other.txt");
    let run = restore(&fleet, &plain, &["--identity", other.to_str().unwrap()]);
    run.assert_code(1);
    assert!(
        format!("{}{}", run.stdout, run.stderr).contains("is not encrypted, but --identity"),
        "{}",
        run.explain()
    );
}

/// An inventory whose agents answer `hello` without `codecs`, as an older bbr-agent does.
fn older_agents(fleet: &Fleet) -> PathBuf {
    fleet.inventory_with(|m| {
        format!(
            "sh -c \"{} --root {} serve | LC_ALL=C sed -u 's/,\\\"codecs\\\":\\[\\\"zstd\\\"\\]//'\"",
            common::AGENT,
            m.vm.root().display()
        )
    })
}

/// A compressed backup restores onto agents that cannot decompress: the driver decompresses
/// what it sends them.
#[test]
fn a_compressed_backup_restores_onto_agents_that_cannot_decompress() {
    let fleet = fleet();
    let before = data_of(&fleet, "db");
    fleet
        .backup(&fleet.local_inventory(), &["--compress", "zstd"])
        .assert_success();
    let dir = fleet.artifact_dir();
    fs::remove_dir_all(fleet.vm("db", 0).data_dir("db")).unwrap();
    let shown = dir.display().to_string();
    let run = fleet.driver(
        &older_agents(&fleet),
        &["restore", "--artifact-path", &shown],
    );
    run.assert_success();
    assert_eq!(data_of(&fleet, "db"), before, "{}", run.explain());
}

/// An agent whose `hello` lists no codecs (an older bbr-agent, played here by this one with
/// `codecs` cut from its answer) would ignore a request to compress and send the plain tar:
/// the backup is refused before anything is made or locked, naming --compress-on driver,
/// which then works.
#[test]
fn an_agent_that_cannot_compress_is_refused_before_anything_is_locked() {
    let fleet = fleet();
    let inventory = older_agents(&fleet);
    let run = fleet.backup(&inventory, &["--compress", "zstd"]);
    run.assert_code(1)
        .assert_stderr_contains("cannot compress or decompress artifacts with zstd")
        .assert_stderr_contains("give --compress-on driver");
    assert!(
        fleet.calls().is_empty(),
        "{:?}\n{}",
        fleet.calls(),
        run.explain()
    );
    assert!(names(&fleet.artifacts()).is_empty(), "{}", run.explain());
    fleet
        .backup(
            &inventory,
            &["--compress", "zstd", "--compress-on", "driver"],
        )
        .assert_success();
    assert!(fleet.artifact_dir().join("db-0-db.tar.zst").is_file());
}
