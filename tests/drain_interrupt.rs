//! A driver in a drain always ends on SIGTERM, whatever the agent at the other end sends:
//! stuck mid-stream (an agent that stops sending), or with its checksum thread busy on what
//! the agent sent (a tar of symlinks whose check took exponential time). The agent here is a
//! fake one (`sh`), speaking the protocol as a compromised VM could; it leaves the locks out,
//! so the only thing between SIGTERM and the exit is the drain. A local `backup` is its own
//! driver: in the middle of a long drain it ends on SIGTERM too. A stream that breaks (an
//! agent that dies inside a data chunk, or a chunk longer than the protocol allows) fails the
//! backup at once, and nothing is left under the tar's name.

mod common;
mod faults_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Vm, write_file};
use faults_support::{Spawned, eventually};
use nix::sys::signal::Signal;
use sha2::{Digest, Sha256};

/// A fake `bbr-agent serve` with one job `store`: it sends `$1` (a tar of at most 1 MiB) as
/// the artifact and then, with `$2` = `stall`, stops sending (touching `$3/sending`);
/// otherwise it ends the stream, answers with the checksums in `$3/checksums.json` and
/// touches `$3/sent`. With `cut` it says its chunk is 100,000 bytes longer than the tar and
/// exits after the tar; with `huge` it says 2 GiB, sends the tar and waits.
const FAKE_AGENT: &str = r#"#!/bin/sh
tar=$1 mode=$2 dir=$3
ok() { printf '{"type":"ok","id":%s,"result":%s}\n' "$1" "$2"; }
byte() { printf "\\$(printf %03o "$1")"; }
len4() { byte $(($1 >> 24 & 255)); byte $(($1 >> 16 & 255)); byte $(($1 >> 8 & 255)); byte $(($1 & 255)); }
while IFS= read -r line; do
  id=${line#'{"id":'}; id=${id%%,*}
  case $line in
  *'"op":"hello"'*) ok "$id" '{"agent_version":"0.1.0","bbr_version":"1.9.73","protocol":2}' ;;
  *'"op":"describe"'*) ok "$id" '{"jobs":[{"metadata":{"backup_should_be_locked_before":[],"restore_should_be_locked_before":[],"skip_bbr_scripts":false},"name":"store","release":null,"scripts":["backup"]}],"journal":null,"skipped":[],"store_exists":false,"store_path":"/var/vcap/store/bbr-backup"}' ;;
  *'"op":"run_scripts"'*) ok "$id" '[{"duration_ms":1,"end":{"exited":0},"job":"store","script":"backup","stderr":"","stdout":""}]' ;;
  *'"op":"send_artifact"'*)
    printf '{"type":"data","id":%s}\n' "$id"
    if [ "$mode" = cut ]; then len4 $(($(wc -c < "$tar") + 100000)); cat "$tar"; exit 0; fi
    if [ "$mode" = huge ]; then len4 2147483648; cat "$tar"; sleep 60; exit 0; fi
    len4 "$(wc -c < "$tar")"; cat "$tar"
    if [ "$mode" = stall ]; then touch "$dir/sending"; sleep 60; exit 0; fi
    len4 0
    ok "$id" "{\"checksums\":$(cat "$dir/checksums.json")}"
    touch "$dir/sent" ;;
  *) ok "$id" null ;;
  esac
done
"#;

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(tar: &[u8], checksums: &str, mode: &str) -> Setup {
        let setup = Setup {
            dir: tempfile::tempdir().unwrap(),
        };
        let d = setup.dir.path();
        let agent = write_file(&d.join("fake-agent"), FAKE_AGENT.as_bytes());
        write_file(&d.join("artifact.tar"), tar);
        write_file(&d.join("checksums.json"), checksums.as_bytes());
        fs::create_dir_all(d.join("artifacts")).unwrap();
        let command = format!(
            "sh {} {} {mode} {}",
            agent.display(),
            d.join("artifact.tar").display(),
            d.display()
        );
        write_file(
            &d.join("inventory.yml"),
            format!(
                "deployment: acme\ninstances:\n- group: backend\n  index: 0\n  command: '{}'\n",
                command.replace('\'', "''")
            )
            .as_bytes(),
        );
        setup
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn driver(&self) -> Spawned {
        let args: Vec<String> = [
            "deployment",
            "--inventory",
            self.path("inventory.yml").to_str().unwrap(),
            "backup",
            "--artifact-path",
            self.path("artifacts").to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        Spawned::start(self.dir.path(), &args, &[])
    }

    /// No tar that could pass for a drained one, and no finish_time.
    fn assert_no_usable_backup(&self, explain: &str) {
        let artifact = common::only_artifact_dir_after(&self.path("artifacts"), explain);
        let tars: Vec<_> = fs::read_dir(&artifact)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tar"))
            .collect();
        assert!(tars.is_empty(), "a tar was left: {tars:?}\n{explain}");
        let metadata = fs::read_to_string(artifact.join("metadata")).unwrap_or_default();
        assert!(!metadata.contains("finish_time"), "{metadata}\n{explain}");
    }
}

fn wait_for(path: &Path, driver: &Spawned) {
    assert!(
        eventually(Duration::from_secs(30), || path.exists()),
        "the fake agent never got to {}\n{}",
        path.display(),
        driver.explain()
    );
}

#[test]
fn a_driver_whose_agent_stops_sending_mid_drain_ends_on_sigterm() {
    // A file said to be 1 GiB, of which 64 KiB arrive.
    let mut header = tar::Header::new_gnu();
    header.set_path("./big").unwrap();
    header.set_size(1 << 30);
    header.set_mode(0o644);
    header.set_cksum();
    let mut tar = header.as_bytes().to_vec();
    tar.extend_from_slice(&[7u8; 64 * 1024]);
    let setup = Setup::new(&tar, "{}", "stall");
    let mut driver = setup.driver();
    wait_for(&setup.path("sending"), &driver);
    std::thread::sleep(Duration::from_millis(300));

    driver.signal(Signal::SIGTERM);
    let signalled = driver.started.elapsed();
    let exit = driver.wait(signalled + Duration::from_secs(20));
    exit.assert_code(143);
    setup.assert_no_usable_backup(&exit.explain);
}

/// A driver killed mid-drain (SIGKILL: nothing of it runs after) leaves no file under the
/// tar's name, only the storage's temporary one, its claim, and metadata without finish_time.
#[test]
fn a_driver_killed_mid_drain_leaves_no_file_under_the_tars_name() {
    let mut header = tar::Header::new_gnu();
    header.set_path("./big").unwrap();
    header.set_size(1 << 30);
    header.set_mode(0o644);
    header.set_cksum();
    let mut tar = header.as_bytes().to_vec();
    tar.extend_from_slice(&[7u8; 64 * 1024]);
    let setup = Setup::new(&tar, "{}", "stall");
    let mut driver = setup.driver();
    wait_for(&setup.path("sending"), &driver);
    std::thread::sleep(Duration::from_millis(300));

    driver.signal(Signal::SIGKILL);
    let signalled = driver.started.elapsed();
    let exit = driver.wait(signalled + Duration::from_secs(20));
    let artifact = common::only_artifact_dir_after(&setup.path("artifacts"), &exit.explain);
    let names: Vec<String> = fs::read_dir(&artifact)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| n == "metadata"
            || n.starts_with(".bbr-agent-partial-")
            || n.starts_with(".bbr-agent-run-")),
        "only the start metadata, the run's claim and a temporary file may stay: {names:?}\n{}",
        exit.explain
    );
    setup.assert_no_usable_backup(&exit.explain);
}

/// A tar of a 300 KiB file (so the check runs on its own thread, beside the stream) and the
/// symlinks `a0 -> .`, `aN -> a(N-1)/a(N-1)/...` (eight times): checked by following every
/// link to its end, with a limit on the depth and not on the steps, that was 8^10 steps.
fn symlink_chain_tar() -> (Vec<u8>, String) {
    let mut tar = tar::Builder::new(Vec::new());
    let data = vec![0u8; 300 * 1024];
    let mut file = tar::Header::new_gnu();
    file.set_size(data.len() as u64);
    file.set_mode(0o644);
    tar.append_data(&mut file, "./padding", &data[..]).unwrap();
    for i in 0..=10 {
        let target = if i == 0 {
            ".".to_string()
        } else {
            vec![format!("a{}", i - 1); 8].join("/")
        };
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        link.set_mode(0o777);
        tar.append_link(&mut link, format!("./a{i}"), &target)
            .unwrap();
    }
    let sum: String = Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (
        tar.into_inner().unwrap(),
        format!("{{\"./padding\":\"{sum}\"}}"),
    )
}

#[test]
fn a_driver_busy_checking_a_hostile_artifact_ends_on_sigterm() {
    let (tar, checksums) = symlink_chain_tar();
    let setup = Setup::new(&tar, &checksums, "send");
    let mut driver = setup.driver();
    wait_for(&setup.path("sent"), &driver);
    std::thread::sleep(Duration::from_millis(300));

    // A check that takes its steps in linear time may already have refused the artifact;
    // either way the driver ends at once and leaves no usable backup.
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(driver.pid()), Signal::SIGTERM);
    let signalled = driver.started.elapsed();
    let exit = driver.wait(signalled + Duration::from_secs(20));
    match exit.code {
        Some(143) => {}
        Some(1) => {
            exit.assert_stderr_contains("./a");
        }
        _ => panic!("unexpected exit\n{}", exit.explain),
    }
    setup.assert_no_usable_backup(&exit.explain);
}

#[test]
fn a_local_backup_in_the_middle_of_a_long_drain_ends_on_sigterm() {
    let vm = Vm::with_identity("acme", "backend");
    // 64 GiB that take no disk: minutes of reading and hashing.
    vm.job("store")
        .script("backup", "truncate -s 64G \"${BBR_ARTIFACT_DIRECTORY}big\"");
    let mut agent = Spawned::on(
        &vm,
        &[
            "backup",
            "--artifact-path",
            vm.artifacts().to_str().unwrap(),
        ],
    );
    let tar_growing = || {
        fs::read_dir(vm.artifacts())
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|d| fs::read_dir(d.path()).into_iter().flatten().flatten())
            .any(|e| {
                // A tar is drained under a temporary name, and renamed once checked.
                e.file_name()
                    .to_string_lossy()
                    .starts_with(".bbr-agent-partial-")
                    && e.metadata().is_ok_and(|m| m.len() > 1 << 20)
            })
    };
    assert!(
        eventually(Duration::from_secs(30), tar_growing),
        "the drain never started\n{}",
        agent.explain()
    );

    agent.signal(Signal::SIGTERM);
    let signalled = agent.started.elapsed();
    let exit = agent.wait(signalled + Duration::from_secs(20));
    exit.assert_code(143).assert_stderr_contains("interrupted");
    let artifact = vm.artifact_dir();
    let left: Vec<_> = fs::read_dir(&artifact)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tar"))
        .collect();
    assert!(
        left.is_empty(),
        "a tar was left: {left:?}\n{}",
        exit.explain
    );
    assert!(!vm.store().exists(), "{}", exit.explain);
}

/// An agent that dies inside a data chunk, or says a chunk is 2 GiB long (a compromised VM's
/// stream, read straight into the drain's batches): the backup fails at once, naming the
/// broken stream, and no tar is left that could pass for a drained one.
#[test]
fn a_stream_cut_inside_a_chunk_or_with_a_chunk_over_the_limit_fails_the_backup() {
    let data = vec![3u8; 300 * 1024];
    let mut tar = tar::Builder::new(Vec::new());
    let mut file = tar::Header::new_gnu();
    file.set_size(data.len() as u64);
    file.set_mode(0o644);
    tar.append_data(&mut file, "./data", &data[..]).unwrap();
    let tar = tar.into_inner().unwrap();
    let sum: String = Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let checksums = format!("{{\"./data\":\"{sum}\"}}");
    for (mode, said) in [
        ("cut", "the stream ended inside a data chunk"),
        (
            "huge",
            "a data chunk of 2147483648 bytes is larger than 1048576",
        ),
    ] {
        let setup = Setup::new(&tar, &checksums, mode);
        let mut driver = setup.driver();
        let exit = driver.wait(Duration::from_secs(30));
        assert_ne!(exit.code, Some(0), "{mode}\n{}", exit.explain);
        assert!(
            exit.explain.contains(said),
            "{mode}: no '{said}'\n{}",
            exit.explain
        );
        setup.assert_no_usable_backup(&exit.explain);
    }
}
