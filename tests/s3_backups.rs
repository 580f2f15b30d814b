//! Backups straight into object storage, against a real single-node Garage: the bucket holds a
//! BBR artifact directory (downloaded, it restores as a local one, and a local one uploaded
//! restores from the bucket), a driver killed mid-upload leaves no metadata and the next backup
//! aborts the upload it left, a GiB streams through in bounded memory without a local file,
//! and the catalogue lists, verifies and prunes what the bucket holds.

mod common;
mod faults_support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::garage::Garage;
use common::s3::{TestBucket, s3_env};
use common::{AGENT, Run, fleet::Fleet, write_file};
use faults_support::{Spawned, eventually};
use nix::sys::signal::Signal;

/// Every file under `dir` with its bytes, by relative path.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                files.insert(rel, fs::read(&p).unwrap());
            }
        }
    }
    files
}

/// db/0, web/0 and web/1, each with a job whose backup and restore copy its data.
fn three_vms() -> Fleet {
    let mut fleet = Fleet::new();
    for (group, index) in [("db", 0), ("web", 0), ("web", 1)] {
        let vm = fleet.add(group, index);
        vm.job("store").copying_backup_restore();
        write_file(
            &vm.data_dir("store").join("rows.txt"),
            format!("{group}/{index} rows\n").repeat(1000).as_bytes(),
        );
        write_file(
            &vm.data_dir("store").join("nested/blob"),
            &[index as u8; 70_000],
        );
    }
    fleet
}

/// The data of every VM's job.
fn fleet_data(fleet: &Fleet) -> Vec<BTreeMap<String, Vec<u8>>> {
    fleet
        .members
        .iter()
        .map(|m| tree(&m.vm.data_dir("store")))
        .collect()
}

fn wipe_data(fleet: &Fleet) {
    for m in &fleet.members {
        let d = m.vm.data_dir("store");
        fs::remove_dir_all(&d).unwrap();
        fs::create_dir_all(&d).unwrap();
    }
}

/// `bbr-agent deployment --inventory INV ARGS`, reaching Garage with `env`.
fn driver(fleet: &Fleet, inventory: &Path, args: &[&str], env: &[(String, String)]) -> Run {
    let mut command = Command::new(AGENT);
    command
        .arg("deployment")
        .arg("--inventory")
        .arg(inventory)
        .args(args)
        .current_dir(fleet.dir.path());
    for (k, v) in env {
        command.env(k, v);
    }
    command.env_remove("AWS_PROFILE");
    Run::of(&mut command, fleet.dir.path())
}

/// `bbr-agent ARGS` (the catalogue), reaching Garage with `env`.
fn agent(cwd: &Path, args: &[&str], env: &[(String, String)]) -> Run {
    let mut command = Command::new(AGENT);
    command.args(args).current_dir(cwd);
    for (k, v) in env {
        command.env(k, v);
    }
    Run::of(&mut command, cwd)
}

/// The one `<deployment>_<timestamp>` directory under `prefix/`, and the names it holds.
fn only_backup(bucket: &TestBucket, prefix: &str, explain: &str) -> (String, Vec<String>) {
    let keys = bucket.keys(&format!("{prefix}/"));
    let mut dirs: Vec<String> = keys
        .iter()
        .filter_map(|k| k.strip_prefix(&format!("{prefix}/"))?.split_once('/'))
        .map(|(d, _)| d.to_string())
        .collect();
    dirs.dedup();
    assert_eq!(
        dirs.len(),
        1,
        "one backup under {prefix}: {keys:?}\n{explain}"
    );
    let names = keys
        .iter()
        .filter_map(|k| k.rsplit_once('/').map(|(_, n)| n.to_string()))
        .collect();
    (dirs.remove(0), names)
}

#[test]
fn a_deployment_backup_to_s3_is_a_bbr_artifact_in_both_directions() {
    let garage = Garage::shared();
    let bucket = TestBucket::new(garage, "both-ways");
    let fleet = three_vms();
    let env = s3_env(garage, fleet.dir.path());
    let inventory = fleet.local_inventory();
    let before = fleet_data(&fleet);

    // To the bucket: BBR's layout, the metadata among the objects, no upload left open.
    let url = bucket.url("nightly");
    let run = driver(
        &fleet,
        &inventory,
        &["backup", "--artifact-path", &url],
        &env,
    );
    run.assert_success();
    let (dir, names) = only_backup(&bucket, "nightly", &run.explain());
    assert!(dir.starts_with("acme_"), "{dir}");
    assert_eq!(
        names,
        [
            "db-0-store.tar",
            "metadata",
            "report.html",
            "web-0-store.tar",
            "web-1-store.tar"
        ],
        "{}",
        run.explain()
    );
    assert!(bucket.uploads("").is_empty(), "{:?}", bucket.uploads(""));
    let metadata = String::from_utf8(bucket.get(&format!("nightly/{dir}/metadata"))).unwrap();
    assert!(metadata.contains("finish_time:"), "{metadata}");
    assert!(
        !metadata.contains("bbr_agent"),
        "a plain run's metadata is BBR's: {metadata}"
    );

    // Downloaded, it restores as a local artifact directory.
    let local = fleet.dir.path().join("downloaded").join(&dir);
    bucket.download(&format!("nightly/{dir}/"), &local);
    wipe_data(&fleet);
    driver(
        &fleet,
        &inventory,
        &["restore", "--artifact-path", local.to_str().unwrap()],
        &env,
    )
    .assert_success();
    assert_eq!(fleet_data(&fleet), before, "restored from the download");

    // A local backup, uploaded, restores from the bucket.
    let run = fleet.backup(&inventory, &[]);
    run.assert_success();
    let made = fleet.artifact_dir();
    let name = made.file_name().unwrap().to_str().unwrap().to_string();
    bucket.upload(&made, &format!("uploaded/{name}"));
    wipe_data(&fleet);
    let from = bucket.url(&format!("uploaded/{name}"));
    let run = driver(
        &fleet,
        &inventory,
        &["restore", "--artifact-path", &from],
        &env,
    );
    run.assert_success();
    assert_eq!(
        fleet_data(&fleet),
        before,
        "restored from the bucket\n{}",
        run.explain()
    );
}

/// A VM whose job's artifact is `mib` MiB of random bytes.
fn big_vm(fleet: &mut Fleet, mib: usize) {
    let vm = fleet.add("db", 0);
    vm.job("store").copying_backup_restore();
    let mut bytes = vec![0u8; mib << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in bytes.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    write_file(&vm.data_dir("store").join("dump"), &bytes);
}

/// A copier that lets at most `per_second` bytes a second through from stdin to stdout: the
/// VM's side of a slow network.
fn throttle(dir: &Path, per_second: usize) -> PathBuf {
    let path = dir.join("throttle.py");
    fs::write(
        &path,
        format!(
            "import os, time\nwhile True:\n    b = os.read(0, 65536)\n    if not b:\n        break\n    while b:\n        b = b[os.write(1, b):]\n    time.sleep(65536 / {per_second})\n"
        ),
    )
    .unwrap();
    path
}

/// Whether a process whose command line holds `text` is running.
fn running_with(text: &str) -> bool {
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| {
            fs::read(e.path().join("cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(text)
                })
                .unwrap_or(false)
        })
}

#[test]
fn a_driver_killed_mid_upload_leaves_no_metadata_and_the_next_backup_aborts_its_upload() {
    let garage = Garage::shared();
    let bucket = TestBucket::new(garage, "killed");
    let mut fleet = Fleet::new();
    big_vm(&mut fleet, 40);
    let env = s3_env(garage, fleet.dir.path());
    let slow = throttle(fleet.dir.path(), 4 << 20);
    let inventory = fleet.inventory_with(|m| {
        format!(
            "sh -c \"{AGENT} --root {} serve | python3 {}\"",
            m.vm.root().display(),
            slow.display()
        )
    });
    let url = bucket.url("nightly");
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut killed = Spawned::start(
        fleet.dir.path(),
        &[
            "deployment".into(),
            "--inventory".into(),
            inventory.display().to_string(),
            "backup".into(),
            "--artifact-path".into(),
            url.clone(),
        ],
        &env_refs,
    );
    let uploading = eventually(Duration::from_secs(60), || {
        !bucket.uploads("nightly/").is_empty()
    });
    assert!(uploading, "no upload started\n{}", killed.explain());
    killed.signal(Signal::SIGKILL);
    killed.wait(Duration::from_secs(10));

    let keys = bucket.keys("nightly/");
    assert!(
        !keys.iter().any(|k| k.ends_with("/metadata")),
        "a killed backup left a metadata object: {keys:?}\n{}",
        killed.explain()
    );
    assert!(
        !keys.iter().any(|k| k.ends_with(".tar")),
        "a killed backup left a tar that looks complete: {keys:?}"
    );
    let left = bucket.uploads("nightly/");
    assert_eq!(
        left.len(),
        1,
        "the killed run's upload is still open: {left:?}"
    );

    // The killed driver's agent notices, ends its scripts, unlocks and goes: only then may
    // the next backup claim the VM.
    let root = fleet.vm("db", 0).root().display().to_string();
    let agent_gone = eventually(Duration::from_secs(30), || !running_with(&root));
    assert!(agent_gone, "the killed driver's agent is still running");

    // The next backup of the deployment, once its VMs' stores say no other backup of it runs,
    // aborts what the killed one left.
    let run = driver(
        &fleet,
        &fleet.local_inventory(),
        &["backup", "--artifact-path", &url],
        &env,
    );
    run.assert_success();
    assert!(
        bucket.uploads("").is_empty(),
        "uploads left: {:?}\n{}",
        bucket.uploads(""),
        run.explain()
    );
    // The killed run's directory keeps only its claim (whose owner is this run's: same
    // deployment, inventory and instances, which is why its upload was aborted); the new
    // backup is BBR's layout alone.
    let created = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("Backup created in {url}/")))
        .unwrap_or_else(|| panic!("{}", run.explain()))
        .to_string();
    let mut names: Vec<String> = bucket.keys("nightly/");
    names.sort();
    assert_eq!(names.len(), 4, "{names:?}\n{}", run.explain());
    assert!(
        names[0].starts_with("nightly/acme_")
            && names[0].contains("/.bbr-agent-run-")
            && !names[0].contains(&created),
        "{names:?}"
    );
    assert_eq!(
        names[1..],
        ["db-0-store.tar", "metadata", "report.html"].map(|n| format!("nightly/{created}/{n}"))
    );
}

#[test]
fn a_gib_streams_to_s3_in_bounded_memory_and_without_a_local_file_larger_than_a_mib() {
    let garage = Garage::shared();
    let bucket = TestBucket::new(garage, "gib");
    let mut fleet = Fleet::new();
    let vm = fleet.add("db", 0);
    vm.job("store").copying_backup_restore();
    // A sparse GiB: the tar carries a GiB of zeros, and Garage keeps one block of them.
    let data = vm.data_dir("store").join("gib");
    fs::create_dir_all(data.parent().unwrap()).unwrap();
    fs::File::create(&data).unwrap().set_len(1 << 30).unwrap();
    let env = s3_env(garage, fleet.dir.path());
    // The VM's side may write what it likes (the job's store is its disk); the driver may
    // write no file larger than 1 MiB: RLIMIT_FSIZE makes any larger write fail.
    let inventory = fleet.inventory_with(|m| {
        format!(
            "sh -c \"ulimit -f unlimited; exec {AGENT} --root {} serve\"",
            m.vm.root().display()
        )
    });
    let url = bucket.url("big");
    let mut command = Command::new("prlimit");
    command
        .arg("--fsize=1048576:unlimited")
        .arg(AGENT)
        .args(["deployment", "--inventory"])
        .arg(&inventory)
        .args(["backup", "--artifact-path", &url])
        .current_dir(fleet.dir.path());
    for (k, v) in &env {
        command.env(k, v);
    }
    let (run, peak_kib) = Run::measured(&mut command, fleet.dir.path());
    run.assert_success();
    let (dir, _) = only_backup(&bucket, "big", &run.explain());
    eprintln!("peak RSS of the driver and its agents: {peak_kib} KiB");
    assert!(
        peak_kib < 64 * 1024,
        "peak RSS of the driver and its agents {peak_kib} KiB, over 64 MiB\n{}",
        run.explain()
    );
    let metadata = String::from_utf8(bucket.get(&format!("big/{dir}/metadata"))).unwrap();
    assert!(metadata.contains("gib:"), "{metadata}");
}

#[test]
fn the_catalogue_lists_verifies_and_prunes_backups_in_a_bucket() {
    let garage = Garage::shared();
    let bucket = TestBucket::new(garage, "catalogue");
    let fleet = three_vms();
    let env = s3_env(garage, fleet.dir.path());
    let inventory = fleet.local_inventory();
    let url = bucket.url("cat");
    for _ in 0..2 {
        driver(
            &fleet,
            &inventory,
            &["backup", "--artifact-path", &url],
            &env,
        )
        .assert_success();
        // Backups of one deployment are named by the second they start in.
        std::thread::sleep(Duration::from_millis(1100));
    }
    let cwd = fleet.dir.path();
    let list = agent(cwd, &["backups", "list", &url, "--json"], &env);
    list.assert_success();
    let listed: serde_json::Value = serde_json::from_str(&list.stdout).unwrap_or_else(|e| {
        panic!("backups list --json: {e}\n{}", list.explain());
    });
    let backups = listed["backups"].as_array().expect("a backups array");
    assert_eq!(backups.len(), 2, "{}", list.explain());
    for b in backups {
        assert_eq!(b["deployment"], "acme", "{}", list.explain());
        assert_eq!(b["state"], "complete", "{}", list.explain());
        assert_eq!(
            b["objects"],
            5,
            "metadata, report and 3 tars\n{}",
            list.explain()
        );
    }

    let mut dirs: Vec<String> = bucket
        .keys("cat/")
        .iter()
        .filter_map(|k| {
            k.strip_prefix("cat/")?
                .split_once('/')
                .map(|(d, _)| d.to_string())
        })
        .collect();
    dirs.dedup();
    assert_eq!(dirs.len(), 2, "{dirs:?}");
    let newest = bucket.url(&format!("cat/{}", dirs[1]));
    agent(cwd, &["backups", "verify", &newest], &env).assert_success();

    // A flipped byte in a tar is found by verify, naming the object.
    let key = format!("cat/{}/web-1-store.tar", dirs[1]);
    let mut tar = bucket.get(&key);
    tar[600] ^= 0x20;
    bucket.put(&key, &tar);
    let verify = agent(cwd, &["backups", "verify", &newest], &env);
    assert_ne!(verify.code, Some(0), "{}", verify.explain());
    assert!(
        verify.stdout.contains("web-1-store.tar") || verify.stderr.contains("web-1-store.tar"),
        "{}",
        verify.explain()
    );

    let prune = agent(cwd, &["backups", "prune", &url, "--keep-last", "1"], &env);
    prune.assert_success();
    let mut left: Vec<String> = bucket
        .keys("cat/")
        .iter()
        .filter_map(|k| {
            k.strip_prefix("cat/")?
                .split_once('/')
                .map(|(d, _)| d.to_string())
        })
        .collect();
    left.dedup();
    assert_eq!(left, [dirs[1].clone()], "{}", prune.explain());
}

#[test]
fn a_compressed_encrypted_backup_in_a_bucket_restores_and_a_flipped_byte_runs_no_restore_script() {
    let garage = Garage::shared();
    let bucket = TestBucket::new(garage, "sealed");
    let fleet = three_vms();
    for m in &fleet.members {
        m.vm.job("store").recording_locks();
    }
    let env = s3_env(garage, fleet.dir.path());
    let (identity, recipient) = common::age_identity(fleet.dir.path(), "key.txt");
    let inventory = fleet.local_inventory();
    let before = fleet_data(&fleet);
    let url = bucket.url("sealed");
    let run = driver(
        &fleet,
        &inventory,
        &[
            "backup",
            "--artifact-path",
            &url,
            "--compress",
            "zstd",
            "--encrypt-to",
            &recipient,
        ],
        &env,
    );
    run.assert_success();
    let (dir, names) = only_backup(&bucket, "sealed", &run.explain());
    assert!(
        names.contains(&"db-0-store.tar.zst.age".to_string())
            && names.contains(&"checksums.age".to_string()),
        "{names:?}"
    );
    let from = bucket.url(&format!("sealed/{dir}"));
    wipe_data(&fleet);
    let restore = |env: &[(String, String)]| {
        driver(
            &fleet,
            &inventory,
            &[
                "restore",
                "--artifact-path",
                &from,
                "--identity",
                identity.to_str().unwrap(),
            ],
            env,
        )
    };
    let run = restore(&env);
    run.assert_success()
        .assert_stdout_contains("The backup is read once");
    assert_eq!(fleet_data(&fleet), before, "{}", run.explain());

    // One flipped byte in one object: refused before any restore-side script runs anywhere.
    let key = format!("sealed/{dir}/web-1-store.tar.zst.age");
    let mut object = bucket.get(&key);
    let middle = object.len() / 2;
    object[middle] ^= 0x01;
    bucket.put(&key, &object);
    let calls_before = fleet.calls().len();
    let run = restore(&env);
    assert_ne!(run.code, Some(0), "{}", run.explain());
    assert!(
        run.stderr.contains("web-1-store.tar.zst.age"),
        "the altered object is named\n{}",
        run.explain()
    );
    let after: Vec<String> = fleet.calls().split_off(calls_before);
    assert!(
        !after.iter().any(|c| c.contains("restore")),
        "a restore-side script ran on an altered backup: {after:?}\n{}",
        run.explain()
    );
}

#[test]
fn a_local_restore_from_a_bucket_refuses_an_encrypted_object_whose_last_chunk_was_altered() {
    let garage = Garage::shared();
    let bucket = TestBucket::new(garage, "last-chunk");
    let vm = common::Vm::with_identity("acme", "web");
    vm.job("store").copying_backup_restore();
    // 60,000 bytes: the tar is padded to 71,680, so age's last 64 KiB chunk holds only the
    // tar's padding, which a tar reader stops short of.
    write_file(&vm.data_dir("store").join("f.bin"), &[7u8; 60_000]);
    let env = s3_env(garage, vm.dir.path());
    let (identity, recipient) = common::age_identity(vm.dir.path(), "key.txt");
    let root = vm.root().display().to_string();
    let on_vm = |args: &[&str]| {
        let mut all = vec!["--root", root.as_str()];
        all.extend_from_slice(args);
        agent(vm.dir.path(), &all, &env)
    };
    let url = bucket.url("p");
    on_vm(&[
        "backup",
        "--artifact-path",
        &url,
        "--encrypt-to",
        &recipient,
    ])
    .assert_success();
    let (dir, _) = only_backup(&bucket, "p", "");
    let key = format!("p/{dir}/web-0-store.tar.age");
    let mut object = bucket.get(&key);
    let at = object.len() - 30;
    object[at] ^= 1;
    bucket.put(&key, &object);
    fs::remove_dir_all(vm.data_dir("store")).unwrap();
    let from = bucket.url(&format!("p/{dir}"));
    let run = on_vm(&[
        "restore",
        "--artifact-path",
        &from,
        "--identity",
        identity.to_str().unwrap(),
    ]);
    assert_ne!(
        run.code,
        Some(0),
        "the altered last chunk was taken\n{}",
        run.explain()
    );
    assert!(
        !vm.calls().iter().any(|c| c.contains("restore")),
        "a restore script ran: {:?}",
        vm.calls()
    );
}

/// In a bucket, where a test cannot set an object's `LastModified`, the claim's own heartbeat
/// line is what says a run stopped: prune leaves a backup that started days ago whose run beat
/// just now, and removes one whose run last beat two hours ago (its claim was written now, by
/// the store's clock: the older of the two times counts).
#[test]
fn prune_in_a_bucket_keeps_a_days_long_run_whose_heartbeat_is_fresh_and_removes_a_stopped_one() {
    let garage = Garage::shared();
    let bucket = TestBucket::new(garage, "heartbeat");
    let dir = tempfile::tempdir().unwrap();
    let env = s3_env(garage, dir.path());
    let day = 86_400;
    let name = |secs_ago: u64| format!("cf_{}", common::utc_ago(secs_ago, "+%Y%m%dT%H%M%SZ"));
    let (running, stopped) = (name(3 * day), name(3 * day + 10));
    for (backup, beat_ago) in [(&running, 0), (&stopped, 3 * 3600)] {
        bucket.put(&format!("hb/{backup}/db-0-pg.tar"), b"part of a tar");
        bucket.put(
            &format!("hb/{backup}/.bbr-agent-run-0123"),
            common::claim_with_heartbeat("cf", beat_ago).as_bytes(),
        );
    }
    let url = bucket.url("hb");
    let prune = agent(
        dir.path(),
        &["backups", "prune", &url, "--keep-last", "1"],
        &env,
    );
    prune
        .assert_success()
        .assert_stdout_contains(&format!("leave {running} (incomplete, started "))
        .assert_stdout_contains(&format!("remove {stopped} (incomplete: started "))
        .assert_stdout_contains("more than two hours ago: the run stopped)");
    let mut left: Vec<String> = bucket.keys("hb/");
    left.sort();
    assert_eq!(
        left,
        [
            format!("hb/{running}/.bbr-agent-run-0123"),
            format!("hb/{running}/db-0-pg.tar"),
        ],
        "{}",
        prune.explain()
    );
}

/// A backup holding a key the store layer refuses to address (an empty part, `a//b`, which a
/// URL would not keep apart from `a/b`): prune removes everything else of it, past that key,
/// and names exactly what is left.
#[test]
fn prune_goes_on_past_an_odd_key_and_names_exactly_what_is_left() {
    let garage = Garage::shared();
    let bucket = TestBucket::new(garage, "odd-keys");
    let dir = tempfile::tempdir().unwrap();
    let env = s3_env(garage, dir.path());
    let old = format!("cf_{}", common::utc_ago(3 * 86_400, "+%Y%m%dT%H%M%SZ"));
    // Listed in this order: the odd key comes between the two tars.
    for name in ["a.tar", "m//odd", "z.tar"] {
        bucket.put(&format!("p/{old}/{name}"), b"bytes");
    }
    let prune = agent(
        dir.path(),
        &["backups", "prune", &bucket.url("p"), "--keep-last", "1"],
        &env,
    );
    prune.assert_code(1).assert_stderr_contains(&format!(
        "error: cannot remove {old} whole: its metadata (if any) and 2 other objects (10 bytes) are removed, but 1 is left: {old}/m//odd ("
    ));
    assert!(
        prune.stderr.contains("; remove it by hand"),
        "{}",
        prune.explain()
    );
    assert_eq!(
        bucket.keys("p/"),
        [format!("p/{old}/m//odd")],
        "{}",
        prune.explain()
    );
}
