//! `--artifact-path s3://BUCKET/PREFIX` end to end, against a real Garage: the backup's
//! objects are the BBR artifact directory's files, and a restore reads them back.

mod common;
mod faults_support;

use std::process::Command;
use std::time::Duration;

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

/// The URL a run says its backup was created in.
fn created(run: &Run) -> Option<String> {
    run.stdout
        .lines()
        .find_map(|l| l.strip_prefix("Backup created in "))
        .map(str::to_string)
}

/// Two VMs of one deployment backing themselves up to one prefix at the same instant (cron on
/// NTP-synced VMs) name the same `<deployment>_<timestamp>` directory: one run gets it, the
/// other stops with one line saying to run it again; neither's backup holds the other's data.
#[test]
fn two_vms_backing_up_in_the_same_second_never_share_a_directory() {
    let g = Garage::shared();
    g.bucket("it-shared");
    let mut collided = 0;
    for attempt in 0..10 {
        let web = Vm::with_identity("acme", "web");
        web.job("store").copying_backup_restore();
        write_file(&web.data_dir("store").join("w.txt"), b"web");
        let db = Vm::with_identity("acme", "db");
        db.job("store").copying_backup_restore();
        write_file(&db.data_dir("store").join("d.txt"), b"db");
        let prefix = format!("s3://it-shared/p{attempt}");
        let barrier = std::sync::Barrier::new(2);
        let backup = |vm: &Vm| {
            barrier.wait();
            agent(vm, g, &["backup", "--artifact-path", &prefix])
        };
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| backup(&web));
            let b = s.spawn(|| backup(&db));
            (a.join().unwrap(), b.join().unwrap())
        });
        let explain = format!("WEB:\n{}\nDB:\n{}", a.explain(), b.explain());
        let refused = |r: &Run| r.stderr.contains("run the backup again");
        match (created(&a), created(&b)) {
            (Some(x), Some(y)) => assert_ne!(x, y, "both runs claimed one directory\n{explain}"),
            (None, None) => assert!(refused(&a) && refused(&b), "{explain}"),
            (Some(_), None) => assert!(refused(&b), "{explain}"),
            (None, Some(_)) => assert!(refused(&a), "{explain}"),
        }
        for r in [&a, &b] {
            if created(r).is_none() {
                let lines: Vec<&str> = r.stderr.lines().filter(|l| l.contains("again")).collect();
                assert_eq!(lines.len(), 1, "{explain}");
                assert!(lines[0].contains(&format!("{prefix}/acme_")), "{explain}");
                collided += 1;
            }
        }
        if let Some(url) = created(&b) {
            std::fs::remove_dir_all(db.data_dir("store")).unwrap();
            agent(&db, g, &["restore", "--artifact-path", &url]).assert_success();
            assert!(
                !db.data_dir("store").join("w.txt").exists(),
                "db's restore brought web's data\n{explain}"
            );
            assert!(db.data_dir("store").join("d.txt").exists(), "{explain}");
        }
        if collided > 0 {
            return;
        }
    }
    panic!("ten pairs of runs never started in the same second");
}

/// A second VM's backup of the same deployment, started while the first one's tar is being
/// uploaded, leaves that upload alone (its directory is claimed by another owner) and says so:
/// both backups complete.
#[test]
fn a_second_vms_backup_leaves_the_first_ones_running_upload_alone() {
    let g = Garage::shared();
    g.bucket("it-abort");
    let web = Vm::with_identity("acme", "web");
    web.job("store").copying_backup_restore();
    write_file(&web.data_dir("store").join("w.txt"), b"web");
    // 3 GiB, sparse: Garage stores zero blocks once, so it costs no disk, but the drain takes
    // long enough for the second backup to run beside it.
    let big = std::fs::File::create(web.data_dir("store").join("big.bin")).unwrap();
    big.set_len(3 << 30).unwrap();
    // Runs between the backup scripts and the drain.
    let draining = web.dir.path().join("draining");
    web.job("store").script(
        "post-backup-unlock",
        &format!("touch '{}'", draining.display()),
    );
    let db = Vm::with_identity("acme", "db");
    db.job("store").copying_backup_restore();
    write_file(&db.data_dir("store").join("d.txt"), b"db");

    let home = web.dir.path().display().to_string();
    let mut env: Vec<(&str, String)> = g.env();
    env.push(("HOME", home));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut first = faults_support::Spawned::on_with(
        &web,
        &["backup", "--artifact-path", "s3://it-abort/p"],
        &env,
    );
    assert!(
        faults_support::eventually(Duration::from_secs(60), || draining.exists()),
        "the first backup never got to its drain"
    );
    // Its first part is filled and its upload started.
    std::thread::sleep(Duration::from_secs(2));
    let second = agent(&db, g, &["backup", "--artifact-path", "s3://it-abort/p"]);
    let first = first.wait(Duration::from_secs(600));
    let explain = format!("FIRST:\n{}\nSECOND:\n{}", first.explain, second.explain());
    first.assert_code(0);
    second.assert_success();
    assert!(
        second
            .stdout
            .contains("Left 1 unfinished file of other backups of acme (in s3://it-abort/p/acme_"),
        "the second backup did not run while the first was uploading\n{explain}"
    );
    assert!(!second.stdout.contains("Removed"), "{explain}");
}
