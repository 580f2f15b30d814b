//! `--artifact-path s3://BUCKET/PREFIX` end to end, against a real Garage: the backup's
//! objects are the BBR artifact directory's files, and a restore reads them back.

mod common;

use std::process::Command;

use common::garage::Garage;
use common::{AGENT, Run, Vm, write_file};

/// The agent on `vm`, pointed at Garage by AWS's variables alone (no ~/.aws of this machine).
fn agent(vm: &Vm, g: &Garage, args: &[&str]) -> Run {
    let mut command = Command::new(AGENT);
    command
        .arg("--root")
        .arg(vm.root())
        .args(args)
        .current_dir(vm.dir.path())
        .env("HOME", vm.dir.path())
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_DEFAULT_REGION")
        .env_remove("AWS_ENDPOINT_URL_S3");
    for (name, value) in g.env() {
        command.env(name, value);
    }
    Run::of(&mut command, vm.dir.path())
}

#[test]
fn a_backup_to_s3_restores_from_s3() {
    let g = Garage::shared();
    g.bucket("it-roundtrip");
    let vm = Vm::with_identity("acme", "backend");
    vm.job("store").copying_backup_restore();
    let data = vm.data_dir("store");
    write_file(&data.join("a.txt"), b"a");
    let big: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    write_file(&data.join("big.bin"), &big);

    let run = agent(
        &vm,
        g,
        &["backup", "--artifact-path", "s3://it-roundtrip/nightly"],
    );
    run.assert_success();
    let url = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Backup created in "))
        .unwrap_or_else(|| panic!("no backup URL\n{}", run.explain()))
        .to_string();
    assert!(url.starts_with("s3://it-roundtrip/nightly/acme_"), "{url}");
    // Nothing was staged on this machine's disk.
    let staged = vm.dir.path().join("artifacts");
    assert!(
        std::fs::read_dir(&staged).map_or(true, |mut d| d.next().is_none()),
        "{}",
        run.explain()
    );

    std::fs::remove_dir_all(&data).unwrap();
    let run = agent(&vm, g, &["restore", "--artifact-path", &url]);
    run.assert_success();
    assert_eq!(
        std::fs::read(data.join("a.txt")).unwrap(),
        b"a",
        "{}",
        run.explain()
    );
    assert!(
        std::fs::read(data.join("big.bin")).unwrap() == big,
        "{}",
        run.explain()
    );
}

#[test]
fn a_missing_region_is_one_line_naming_the_variables_and_nothing_runs() {
    let g = Garage::shared();
    let vm = Vm::with_identity("acme", "backend");
    vm.job("store").copying_backup_restore();
    let mut command = Command::new(AGENT);
    command
        .arg("--root")
        .arg(vm.root())
        .args(["backup", "--artifact-path", "s3://it-noregion/p"])
        .current_dir(vm.dir.path())
        .env("HOME", vm.dir.path())
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .env("AWS_ACCESS_KEY_ID", &g.key_id)
        .env("AWS_SECRET_ACCESS_KEY", &g.secret)
        .env("AWS_ENDPOINT_URL", &g.endpoint);
    let run = Run::of(&mut command, vm.dir.path());
    assert_ne!(run.code, Some(0), "{}", run.explain());
    assert!(
        run.stderr.contains("s3://it-noregion/p"),
        "{}",
        run.explain()
    );
    assert!(run.stderr.contains("AWS_REGION"), "{}", run.explain());
    assert!(vm.calls().is_empty(), "a script ran\n{}", run.explain());
}
