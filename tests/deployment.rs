//! The deployment driver over the local `serve` transport: cross-VM ordering, round trips,
//! refusals before any VM is touched, unreachable VMs and `--max-in-flight`.

mod common;

use std::fs;

use common::fleet::Fleet;
use common::{tree, write_file};

/// api/0 holds a lock-only job; db/0 and blob/0 hold data. Metadata: api before db, db before
/// blob, for backup and restore alike.
fn three_vm_fleet() -> Fleet {
    let mut fleet = Fleet::new();
    let api = fleet.add("api", 0);
    api.job("api-lock")
        .recording_locks()
        .metadata("backup_should_be_locked_before:\n- {job_name: db, release: acme}\nrestore_should_be_locked_before:\n- {job_name: db, release: acme}");
    let db = fleet.add("db", 0);
    db.job("db")
        .recording_locks()
        .copying_backup_restore()
        .metadata("backup_should_be_locked_before:\n- {job_name: blob, release: acme}\nrestore_should_be_locked_before:\n- {job_name: blob, release: acme}");
    write_file(
        &db.data_dir("db").join("dump.sql"),
        b"insert into t values (1);\n",
    );
    write_file(&db.data_dir("db").join("with space/ünï.txt"), b"x");
    let blob = fleet.add("blob", 0);
    blob.job("blob").recording_locks().copying_backup_restore();
    write_file(
        &blob.data_dir("blob").join("objects/aa/bb"),
        &[7u8; 100_000],
    );
    write_file(&blob.data_dir("blob").join("empty"), b"");
    fleet
}

fn position(calls: &[String], line: &str) -> usize {
    calls
        .iter()
        .position(|c| c == line)
        .unwrap_or_else(|| panic!("{line:?} not in the call log: {calls:#?}"))
}

#[test]
fn backup_and_restore_of_three_vms_follow_the_cross_vm_lock_order() {
    let fleet = three_vm_fleet();
    let inventory = fleet.local_inventory();
    let before_db = tree(&fleet.vm("db", 0).data_dir("db"));
    let before_blob = tree(&fleet.vm("blob", 0).data_dir("blob"));

    let run = fleet.backup(&inventory, &[]);
    run.assert_success();
    let calls = fleet.calls();
    let lock = |l: &str| position(&calls, l);
    assert!(
        lock("api/0 api-lock pre-backup-lock") < lock("db/0 db pre-backup-lock"),
        "{calls:#?}"
    );
    assert!(
        lock("db/0 db pre-backup-lock") < lock("blob/0 blob pre-backup-lock"),
        "{calls:#?}"
    );
    assert!(
        lock("blob/0 blob pre-backup-lock") < lock("db/0 db backup"),
        "{calls:#?}"
    );
    assert!(
        lock("db/0 db backup") < lock("blob/0 blob post-backup-unlock"),
        "{calls:#?}"
    );
    assert!(
        lock("blob/0 blob post-backup-unlock") < lock("db/0 db post-backup-unlock"),
        "{calls:#?}"
    );
    assert!(
        lock("db/0 db post-backup-unlock") < lock("api/0 api-lock post-backup-unlock"),
        "{calls:#?}"
    );

    let artifact = fleet.artifact_dir();
    for tar in ["db-0-db.tar", "blob-0-blob.tar"] {
        assert!(
            artifact.join(tar).is_file(),
            "{tar} in {artifact:?}\n{}",
            run.explain()
        );
    }
    for m in &fleet.members {
        assert!(
            !m.vm.store().exists(),
            "{}/{} store removed",
            m.group,
            m.index
        );
    }
    fs::remove_dir_all(fleet.vm("db", 0).data_dir("db")).unwrap();
    fs::remove_dir_all(fleet.vm("blob", 0).data_dir("blob")).unwrap();
    fs::write(fleet.log_path(), "").unwrap();

    fleet
        .driver(
            &inventory,
            &["restore", "--artifact-path", artifact.to_str().unwrap()],
        )
        .assert_success();
    assert_eq!(tree(&fleet.vm("db", 0).data_dir("db")), before_db);
    assert_eq!(tree(&fleet.vm("blob", 0).data_dir("blob")), before_blob);
    let calls = fleet.calls();
    let at = |l: &str| position(&calls, l);
    assert!(
        at("api/0 api-lock pre-restore-lock") < at("db/0 db pre-restore-lock"),
        "{calls:#?}"
    );
    assert!(
        at("db/0 db pre-restore-lock") < at("blob/0 blob pre-restore-lock"),
        "{calls:#?}"
    );
    assert!(
        at("blob/0 blob post-restore-unlock") < at("db/0 db post-restore-unlock"),
        "{calls:#?}"
    );
    assert!(
        at("db/0 db post-restore-unlock") < at("api/0 api-lock post-restore-unlock"),
        "{calls:#?}"
    );
}

#[test]
fn restore_is_refused_before_any_vm_is_touched_when_an_instance_is_missing() {
    let mut fleet = three_vm_fleet();
    let inventory = fleet.local_inventory();
    fleet.backup(&inventory, &[]).assert_success();
    let artifact = fleet.artifact_dir();
    fs::write(fleet.log_path(), "").unwrap();

    fleet.members.retain(|m| m.group != "blob");
    let partial = fleet.local_inventory();
    let run = fleet.driver(
        &partial,
        &["restore", "--artifact-path", artifact.to_str().unwrap()],
    );
    run.assert_code(1)
        .assert_stderr_contains("has no instance blob/0");
    assert!(
        fleet.calls().is_empty(),
        "no script may run: {:?}",
        fleet.calls()
    );
    for m in &fleet.members {
        assert!(
            !m.vm.store().exists(),
            "nothing written on {}/{}",
            m.group,
            m.index
        );
    }
}

/// Flips one byte of a file of sevens in `tar`, `offset` bytes into the first run of them:
/// the checksum no longer matches, and the tar itself stays well-formed.
fn flip_a_seven(tar: &std::path::Path, offset: usize) {
    let mut bytes = fs::read(tar).unwrap();
    let at = bytes
        .windows(64)
        .position(|w| w.iter().all(|&b| b == 7))
        .expect("a run of sevens in the tar")
        + offset;
    bytes[at] = 8;
    fs::write(tar, bytes).unwrap();
}

/// A tar corrupted on its last VM stops the restore before any lock or restore script on any
/// VM, names the tar and the file, and leaves no store behind.
#[test]
fn a_corrupted_tar_stops_the_restore_before_any_script_on_any_vm() {
    let fleet = three_vm_fleet();
    let inventory = fleet.local_inventory();
    fleet.backup(&inventory, &[]).assert_success();
    let artifact = fleet.artifact_dir();
    let tar = artifact.join("blob-0-blob.tar");
    // A byte of objects/aa/bb (100,000 sevens) flipped; the tar itself stays well-formed.
    flip_a_seven(&tar, 500);
    fs::write(fleet.log_path(), "").unwrap();

    let run = fleet.driver(
        &inventory,
        &["restore", "--artifact-path", artifact.to_str().unwrap()],
    );
    run.assert_code(1)
        .assert_stderr_contains("the backup is corrupted")
        .assert_stderr_contains(&tar.display().to_string())
        .assert_stderr_contains("./objects/aa/bb")
        .assert_stderr_contains("nothing was restored");
    assert!(
        fleet.calls().is_empty(),
        "no script may run: {:?}\n{}",
        fleet.calls(),
        run.explain()
    );
    for m in &fleet.members {
        assert!(
            !m.vm.store().exists(),
            "{}/{}: the store is removed\n{}",
            m.group,
            m.index,
            run.explain()
        );
    }
    let data = fleet.vm("blob", 0).data_dir("blob").join("objects/aa/bb");
    assert_eq!(
        fs::read(&data).unwrap(),
        vec![7u8; 100_000],
        "the data was not touched\n{}",
        run.explain()
    );
}

/// A session's last words ("Host key verification failed.") can reach its stderr after its
/// stdout has closed and its leader has exited (here from a child of it, as under load from a
/// stderr thread not yet scheduled): the error waits for the end of that pipe (bounded)
/// rather than a fixed moment, so what it says does not depend on how busy the machine is.
#[test]
fn the_last_words_of_a_session_on_stderr_after_its_output_closed_are_in_the_error() {
    let fleet = three_vm_fleet();
    let inventory = fleet.inventory_with(|m| {
        if m.group == "blob" {
            "exec >&-; (sleep 0.5; echo 'Host key verification failed.' >&2) & exit 255".to_string()
        } else {
            format!("{} --root {} serve", common::AGENT, m.vm.root().display())
        }
    });
    let run = fleet.backup(&inventory, &[]);
    run.assert_code(1)
        .assert_stderr_contains("blob/0: cannot reach the agent")
        .assert_stderr_contains("the VM's SSH host key is not the one expected");
    assert!(
        fleet.calls().is_empty(),
        "nothing may be locked: {:?}",
        fleet.calls()
    );
}

/// What a session's command says on stderr comes from the VM's side: a terminal escape in it
/// (a title change, a cleared screen) reaches the operator's error line escaped, not raw.
#[test]
fn a_terminal_escape_on_a_sessions_stderr_is_shown_escaped() {
    let fleet = three_vm_fleet();
    let inventory = fleet.inventory_with(|m| {
        if m.group == "blob" {
            r"printf '\033]0;owned\007\033[2Jgone\n' >&2; exit 255".to_string()
        } else {
            format!("{} --root {} serve", common::AGENT, m.vm.root().display())
        }
    });
    let run = fleet.backup(&inventory, &[]);
    run.assert_code(1)
        .assert_stderr_contains("blob/0: cannot reach the agent")
        .assert_stderr_contains(r"\u{1b}]0;owned\u{7}\u{1b}[2Jgone");
    assert!(
        !run.stderr.contains('\u{1b}'),
        "a raw escape reached the terminal\n{}",
        run.explain()
    );
}

#[test]
fn an_unreachable_vm_stops_the_run_before_anything_is_locked() {
    let fleet = three_vm_fleet();
    let inventory = fleet.inventory_with(|m| {
        if m.group == "blob" {
            "echo 'ssh: connect to host 10.0.0.9 port 22: Connection refused' >&2; exit 255"
                .to_string()
        } else {
            format!("{} --root {} serve", common::AGENT, m.vm.root().display())
        }
    });
    let run = fleet.backup(&inventory, &[]);
    run.assert_code(1)
        .assert_stderr_contains("blob/0: cannot reach the agent")
        .assert_stderr_contains("Connection refused")
        .assert_stderr_contains("exit 255");
    assert!(
        fleet.calls().is_empty(),
        "nothing may be locked: {:?}",
        fleet.calls()
    );
    assert_eq!(
        fs::read_dir(fleet.artifacts()).unwrap().count(),
        0,
        "no artifact directory"
    );
}

#[test]
fn an_agent_speaking_another_protocol_version_is_refused() {
    let fleet = three_vm_fleet();
    let inventory = fleet.inventory_with(|m| {
        if m.group == "db" {
            // Reads the hello and answers as an agent of protocol 99 would.
            r#"read line; echo '{"type":"ok","id":1,"result":{"protocol":99,"agent_version":"9.0.0","bbr_version":"1.9.73"}}'; cat >/dev/null"#.to_string()
        } else {
            format!("{} --root {} serve", common::AGENT, m.vm.root().display())
        }
    });
    fleet
        .backup(&inventory, &[])
        .assert_code(1)
        .assert_stderr_contains("db/0")
        .assert_stderr_contains("protocol 99");
    assert!(
        fleet.calls().is_empty(),
        "nothing may be locked: {:?}",
        fleet.calls()
    );
}

/// Three VMs whose backup scripts log their start and end around a pause.
fn slow_fleet() -> Fleet {
    let mut fleet = Fleet::new();
    for i in 0..3 {
        fleet.add("worker", i).job("work").script(
            "backup",
            "echo \"start $ME\" >> \"$LOG\"; sleep 0.3; echo \"end $ME\" >> \"$LOG\"",
        );
    }
    fleet
}

/// Whether two scripts ever ran at the same time, from start/end lines.
fn overlapped(calls: &[String]) -> bool {
    let mut running = 0;
    for c in calls {
        if c.starts_with("start ") {
            running += 1;
            if running > 1 {
                return true;
            }
        } else if c.starts_with("end ") {
            running -= 1;
        }
    }
    false
}

#[test]
fn max_in_flight_one_runs_one_vm_at_a_time() {
    let fleet = slow_fleet();
    let inventory = fleet.local_inventory();
    fleet
        .backup(&inventory, &["--max-in-flight", "1"])
        .assert_success();
    let calls = fleet.calls();
    assert_eq!(calls.len(), 6, "{calls:#?}");
    assert!(
        !overlapped(&calls),
        "scripts overlapped with --max-in-flight 1: {calls:#?}"
    );
}

#[test]
fn without_a_limit_the_vms_run_at_once() {
    let fleet = slow_fleet();
    let inventory = fleet.local_inventory();
    fleet.backup(&inventory, &[]).assert_success();
    assert!(overlapped(&fleet.calls()), "{:#?}", fleet.calls());
}

/// A session command of plain words runs without `sh -c`, found on PATH; one naming a
/// program without a `#!` line still runs, as `sh -c` would run it (as a shell script).
#[test]
fn plain_word_commands_run_and_a_script_without_shebang_still_runs() {
    use std::os::unix::fs::PermissionsExt;
    let mut fleet = Fleet::new();
    fleet
        .add("db", 0)
        .job("db")
        .recording_locks()
        .copying_backup_restore();
    let launcher = fleet.dir.path().join("start-agent");
    let vm_root = fleet.vm("db", 0).root();
    fs::write(
        &launcher,
        format!(
            "exec {} --root {} serve\n",
            common::AGENT,
            vm_root.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&launcher, fs::Permissions::from_mode(0o755)).unwrap();

    let inventory = fleet.inventory_with(|_| launcher.display().to_string());
    let run = fleet.backup(&inventory, &[]);
    run.assert_success();
    assert_eq!(
        fleet.calls(),
        [
            "db/0 db pre-backup-lock",
            "db/0 db backup",
            "db/0 db post-backup-unlock"
        ],
        "{}",
        run.explain()
    );
}

/// Every file and directory under `dir`, relative to it.
fn entries(dir: &std::path::Path) -> Vec<String> {
    common::listing(dir)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
        .collect()
}

/// An inventory naming a group or the deployment `../..`-style would put the tar or the
/// artifact directory outside `--artifact-path`: refused, naming the file and the field,
/// before any VM is reached.
#[test]
fn inventory_names_that_are_not_plain_names_are_refused_before_anything_runs() {
    let mut fleet = Fleet::new();
    fleet
        .add("../../x", 0)
        .job("db")
        .recording_locks()
        .copying_backup_restore();
    let inventory = fleet.local_inventory();
    let before = entries(fleet.dir.path());
    let run = fleet.backup(&inventory, &[]);
    run.assert_code(1)
        .assert_stderr_contains(&format!(
            "the inventory {}: instances[0].group (index 0) \"../../x\" contains `/`",
            inventory.display()
        ))
        .assert_stderr_contains("write the name BOSH gives it");
    assert!(
        fleet.calls().is_empty(),
        "{:?}\n{}",
        fleet.calls(),
        run.explain()
    );
    let after = entries(fleet.dir.path());
    let added: Vec<_> = after.iter().filter(|e| !before.contains(e)).collect();
    assert_eq!(added, ["artifacts"], "nothing written\n{}", run.explain());

    let mut fleet = Fleet::new();
    fleet
        .add("db", 0)
        .job("db")
        .recording_locks()
        .copying_backup_restore();
    let inventory = fleet.local_inventory();
    let text = fs::read_to_string(&inventory).unwrap();
    fs::write(
        &inventory,
        text.replace("deployment: acme", "deployment: ../x"),
    )
    .unwrap();
    let before = entries(fleet.dir.path());
    let run = fleet.backup(&inventory, &[]);
    run.assert_code(1)
        .assert_stderr_contains("deployment \"../x\" contains `/`");
    assert!(
        fleet.calls().is_empty(),
        "{:?}\n{}",
        fleet.calls(),
        run.explain()
    );
    let after = entries(fleet.dir.path());
    let added: Vec<_> = after.iter().filter(|e| !before.contains(e)).collect();
    assert_eq!(added, ["artifacts"], "nothing written\n{}", run.explain());
}

/// A VM that reports a job named `../../x` (a compromised VM: its answer is rewritten on the
/// way) gets no file made for it: the backup stops before anything is locked.
#[test]
fn a_job_name_from_a_vm_that_is_not_a_plain_name_is_refused_before_anything_is_locked() {
    let mut fleet = Fleet::new();
    fleet
        .add("db", 0)
        .job("victim")
        .recording_locks()
        .copying_backup_restore();
    let inventory = fleet.inventory_with(|m| {
        format!(
            "{} --root {} serve | sed -u 's|\"name\":\"victim\"|\"name\":\"../../x\"|'",
            common::AGENT,
            m.vm.root().display()
        )
    });
    let run = fleet.backup(&inventory, &[]);
    run.assert_code(1)
        .assert_stderr_contains("db/0: the VM reports a job named \"../../x\", which contains `/`")
        .assert_stderr_contains("nothing was locked");
    assert!(
        fleet.calls().is_empty(),
        "{:?}\n{}",
        fleet.calls(),
        run.explain()
    );
    assert_eq!(
        fs::read_dir(fleet.artifacts()).unwrap().count(),
        0,
        "no artifact directory\n{}",
        run.explain()
    );
}

/// A fleet of one VM, `db/0`, and an inventory whose only instance has the YAML `fields`
/// (lines) given by `fields(agent command)`, the agent command being `<agent> --root <vm>`.
fn one_vm_inventory(fields: impl Fn(&str) -> String) -> (Fleet, std::path::PathBuf) {
    let mut fleet = Fleet::new();
    fleet
        .add("db", 0)
        .job("db")
        .recording_locks()
        .copying_backup_restore();
    let agent = format!(
        "{} --root {}",
        common::AGENT,
        fleet.vm("db", 0).root().display()
    );
    let text = format!(
        "deployment: acme\ninstances:\n- group: db\n  index: 0\n{}",
        fields(&agent)
    );
    let inventory = fleet.dir.path().join("inventory.yml");
    fs::write(&inventory, text).unwrap();
    (fleet, inventory)
}

fn assert_backed_up(fleet: &Fleet, run: &common::Run) {
    run.assert_success();
    assert_eq!(
        fleet.calls(),
        [
            "db/0 db pre-backup-lock",
            "db/0 db backup",
            "db/0 db post-backup-unlock"
        ],
        "{}",
        run.explain()
    );
}

/// An inventory value is one word to the shell, whatever it holds: an address of
/// `$V; touch pwned #` runs nothing.
#[test]
fn inventory_values_are_quoted_for_the_shell() {
    let (fleet, inventory) = one_vm_inventory(|agent| {
        format!(
            "  address: '$V; touch pwned #'\n  command: 'env BBR_TARGET={{{{ address }}}} {agent} serve'\n"
        )
    });
    let run = fleet.backup(&inventory, &[]);
    assert!(
        !fleet.dir.path().join("pwned").exists(),
        "the address ran as shell\n{}",
        run.explain()
    );
    assert_backed_up(&fleet, &run);
}

/// A value meant to be shell says so: `{{ id | unquoted }}` is split into words.
#[test]
fn an_unquoted_inventory_value_is_taken_as_shell() {
    let (fleet, inventory) = one_vm_inventory(|agent| {
        let (program, root_flag) = agent.split_once(' ').unwrap();
        format!("  id: '{root_flag}'\n  command: '{program} {{{{ id | unquoted }}}} serve'\n")
    });
    let run = fleet.backup(&inventory, &[]);
    assert_backed_up(&fleet, &run);
}

/// `backup-cleanup` and `restore-cleanup` with VMs that cannot be reached clean up every VM
/// that can (its unlock scripts, its leftover store), name each of the others on a line of
/// its own with the command's error, and exit 1.
#[test]
fn cleanup_with_unreachable_vms_cleans_up_every_vm_it_can_reach() {
    let fleet = three_vm_fleet();
    let inventory = fleet.inventory_with(|m| {
        if m.group == "db" {
            format!("{} --root {} serve", common::AGENT, m.vm.root().display())
        } else {
            format!(
                "echo 'ssh: connect to host {}: Connection refused' >&2; exit 255",
                m.group
            )
        }
    });
    for (command, unlock) in [
        ("backup-cleanup", "db/0 db post-backup-unlock"),
        ("restore-cleanup", "db/0 db post-restore-unlock"),
    ] {
        fs::write(fleet.log_path(), "").unwrap();
        let store = fleet.vm("db", 0).store();
        fs::create_dir_all(&store).unwrap();
        let run = fleet.driver(&inventory, &[command]);
        run.assert_code(1);
        for group in ["api", "blob"] {
            let lines: Vec<_> = run
                .stderr
                .lines()
                .filter(|l| l.contains(&format!("{group}/0: cannot reach the agent")))
                .collect();
            assert_eq!(lines.len(), 1, "{command}: {group}\n{}", run.explain());
            assert!(
                lines[0].contains(&format!("connect to host {group}: Connection refused"))
                    && lines[0].contains("was not cleaned up"),
                "{command}: {}\n{}",
                lines[0],
                run.explain()
            );
        }
        assert_eq!(fleet.calls(), [unlock], "{command}\n{}", run.explain());
        assert!(
            !store.exists(),
            "{command}: db/0's store\n{}",
            run.explain()
        );
    }
}

/// BBR checks the whole local artifact before it runs anything on a VM, and so does the
/// restore: a corrupted tar for one of two VMs, and no session is even started, so no script
/// at all runs (metadata included) on either VM; the error names the tar and the file.
#[test]
fn a_corrupted_tar_is_refused_before_any_vm_is_reached() {
    let mut fleet = Fleet::new();
    for group in ["db", "blob"] {
        let vm = fleet.add(group, 0);
        vm.job(group)
            .recording_locks()
            .copying_backup_restore()
            .script("metadata", "echo \"$ME\" >> \"$LOG\"; echo '{}'");
        write_file(&vm.data_dir(group).join("data"), &[7u8; 10_000]);
    }
    let log = fleet.log_path();
    let inventory = fleet.inventory_with(|m| {
        format!(
            "echo '{}/{} session' >> '{}'; exec {} --root {} serve",
            m.group,
            m.index,
            log.display(),
            common::AGENT,
            m.vm.root().display()
        )
    });
    fleet.backup(&inventory, &[]).assert_success();
    let artifact = fleet.artifact_dir();
    let tar = artifact.join("blob-0-blob.tar");
    flip_a_seven(&tar, 100);
    fs::write(fleet.log_path(), "").unwrap();

    let run = fleet.driver(
        &inventory,
        &["restore", "--artifact-path", artifact.to_str().unwrap()],
    );
    run.assert_code(1)
        .assert_stderr_contains("blob/0 blob: the backup is corrupted")
        .assert_stderr_contains(&tar.display().to_string())
        .assert_stderr_contains("./data")
        .assert_stderr_contains("nothing was restored");
    assert!(
        fleet.calls().is_empty(),
        "no session, no script: {:?}\n{}",
        fleet.calls(),
        run.explain()
    );
    for m in &fleet.members {
        assert!(!m.vm.store().exists(), "{}\n{}", m.group, run.explain());
    }
}

/// `a-0-b` job `c` and `a` job `b-0-c` both make `a-0-b-0-c.tar`: refused before anything
/// is locked, naming both, instead of one tar written over the other.
#[test]
fn two_jobs_whose_tars_would_have_one_name_are_refused_before_anything_is_locked() {
    let mut fleet = Fleet::new();
    fleet
        .add("a-0-b", 0)
        .job("c")
        .recording_locks()
        .copying_backup_restore();
    fleet
        .add("a", 0)
        .job("b-0-c")
        .recording_locks()
        .copying_backup_restore();
    let inventory = fleet.local_inventory();
    let run = fleet.backup(&inventory, &[]);
    run.assert_code(1).assert_stderr_contains(
        "a-0-b/0 c and a/0 b-0-c would both be written to \"a-0-b-0-c.tar\"",
    );
    assert!(
        fleet.calls().is_empty(),
        "{:?}\n{}",
        fleet.calls(),
        run.explain()
    );
    assert_eq!(
        fs::read_dir(fleet.artifacts()).unwrap().count(),
        0,
        "no artifact directory\n{}",
        run.explain()
    );
}

/// Through the driver and `serve`: names that are not UTF-8 travel between agent and driver
/// as their `!!binary` keys, the driver's check of the stream keys them the same, the
/// metadata holds them as BBR's YAML does, and a restore gives back the exact bytes, with a
/// time from before 1970.
#[test]
fn names_that_are_not_utf8_and_old_times_round_trip_through_the_driver() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let mut fleet = Fleet::new();
    let db = fleet.add("db", 0);
    db.job("db").copying_backup_restore();
    let data = db.data_dir("db");
    let files: [(&[u8], &[u8]); 3] = [(b"caf\xe9", b"latin-1"), (b"\xff", b"ff"), (b"\xfe", b"fe")];
    for (name, contents) in files {
        write_file(&data.join(OsStr::from_bytes(name)), contents);
    }
    let old = write_file(&data.join("old"), b"1960");
    let touched = std::process::Command::new("touch")
        .args(["-d", "1960-01-01 00:00:00 UTC"])
        .arg(&old)
        .status()
        .unwrap();
    assert!(touched.success());
    let inventory = fleet.local_inventory();
    let run = fleet.backup(&inventory, &[]);
    run.assert_success();
    let artifact = fleet.artifact_dir();
    let metadata = fs::read_to_string(artifact.join("metadata")).unwrap();
    for encoded in ["!!binary Li9jYWbp: ", "!!binary Li//: ", "!!binary Li/+: "] {
        assert!(
            metadata.contains(encoded),
            "{encoded} in\n{metadata}\n{}",
            run.explain()
        );
    }

    fs::remove_dir_all(&data).unwrap();
    let run = fleet.driver(
        &inventory,
        &["restore", "--artifact-path", artifact.to_str().unwrap()],
    );
    run.assert_success();
    for (name, contents) in files {
        assert_eq!(
            fs::read(data.join(OsStr::from_bytes(name))).ok().as_deref(),
            Some(contents),
            "{name:?}\n{}",
            run.explain()
        );
    }
    assert_eq!(
        fs::metadata(data.join("old")).unwrap().mtime(),
        -315_619_200
    );
}

/// The inventory's command for each member: its agent, run locally.
fn local_command(m: &common::fleet::Member) -> String {
    format!("{} --root {} serve", common::AGENT, m.vm.root().display())
}

#[test]
fn an_inventorys_releases_make_lock_order_entries_match_on_the_release_too() {
    // api-lock is locked before `db` of release `acme`: db/0's, as its inventory entry says;
    // legacy/0's `db` is of release `legacy` and is not ordered after api-lock. So api-lock's
    // lock waits to see legacy/0's lock: matched on the name alone (no releases), legacy/0
    // would wait for api-lock, and api-lock would give up.
    let fleet = Fleet::release_ordered();
    let inventory = fleet.inventory_with_keys(local_command, |m| match m.group.as_str() {
        "api" => "  releases: {api-lock: acme}\n".into(),
        "db" => "  releases: {db: acme}\n".into(),
        _ => "  releases: {db: legacy}\n".into(),
    });
    let run = fleet.backup(&inventory, &[]);
    run.assert_success();
    let calls = fleet.calls();
    let at = |l: &str| {
        calls
            .iter()
            .position(|c| c == l)
            .unwrap_or_else(|| panic!("{l} missing: {calls:#?}"))
    };
    assert!(at("api/0 api-lock pre-backup-lock") < at("db/0 db pre-backup-lock"));
    assert!(at("db/0 db post-backup-unlock") < at("api/0 api-lock post-backup-unlock"));
}

#[test]
fn an_inventory_can_say_bootstrap_and_backup_one_restore_all() {
    let mut fleet = Fleet::new();
    for i in 0..2 {
        let vm = fleet.add("redis", i);
        vm.job("redis-server").copying_backup_restore();
        write_file(
            &vm.data_dir("redis-server").join("dump.rdb"),
            format!("keys of redis/{i}\n").as_bytes(),
        );
    }
    let inventory = fleet.inventory_with_keys(local_command, |m| {
        let bootstrap = if m.index == 0 { "  bootstrap: true\n" } else { "" };
        format!("  releases: {{redis-server: redis}}\n  backup_one_restore_all: [redis-server]\n{bootstrap}")
    });
    fleet.backup(&inventory, &[]).assert_success();
    let artifact = fleet.artifact_dir();
    assert!(
        artifact
            .join("redis-server-redis-backup-one-restore-all.tar")
            .is_file(),
        "{:?}",
        tree(&artifact)
            .into_iter()
            .map(|(n, _)| n)
            .collect::<Vec<_>>()
    );
    let path = artifact.display().to_string();
    fleet
        .driver(&inventory, &["restore", "--artifact-path", &path])
        .assert_success();
    for i in 0..2 {
        let dump = fleet
            .vm("redis", i)
            .data_dir("redis-server")
            .join("dump.rdb");
        assert_eq!(fs::read_to_string(dump).unwrap(), "keys of redis/0\n");
    }
}

#[test]
fn bbrs_short_artifact_path_and_debug_flag_are_taken() {
    // `-a` is BBR's --artifact-path; `--debug` shows everything: every script's output live,
    // as -v does, and the driver's own debug log.
    let mut fleet = Fleet::new();
    let vm = fleet.add("db", 0);
    vm.job("db")
        .copying_backup_restore()
        .script("pre-backup-lock", "echo 'flushing tables'");
    let data = vm.data_dir("db");
    write_file(&data.join("dump.sql"), b"rows\n");
    let inventory = fleet.local_inventory();
    let artifacts = fleet.artifacts().display().to_string();
    let run = fleet.driver(&inventory, &["--debug", "backup", "-a", &artifacts]);
    run.assert_success()
        .assert_stderr_contains("db/0 db pre-backup-lock stdout: flushing tables");
    let artifact = fleet.artifact_dir();
    let other = fleet.dir.path().join("quiet");
    fs::create_dir_all(&other).unwrap();
    let quiet = fleet.driver(&inventory, &["backup", "-a", other.to_str().unwrap()]);
    quiet.assert_success();
    assert!(!quiet.stderr.contains("flushing"), "{}", quiet.explain());
    fs::remove_dir_all(&data).unwrap();
    let path = artifact.display().to_string();
    fleet
        .driver(&inventory, &["restore", "-a", &path])
        .assert_success();
    assert_eq!(fs::read_to_string(data.join("dump.sql")).unwrap(), "rows\n");
}

/// `--inventory` on the command line wins over a director left in the environment
/// (`BOSH_ENVIRONMENT` exported in the operator's shell, as `bosh` users have it), and `-d`
/// naming another deployment than the inventory's is refused, not passed over.
#[test]
fn the_inventory_flag_wins_over_bosh_environment_and_a_different_d_is_refused() {
    let fleet = three_vm_fleet();
    let inventory = fleet.local_inventory();
    let artifacts = fleet.artifacts().display().to_string();
    let mut command = std::process::Command::new(common::AGENT);
    command
        .args(["deployment", "--inventory"])
        .arg(&inventory)
        .args(["backup", "--artifact-path", &artifacts])
        .env("BOSH_ENVIRONMENT", "https://10.0.0.6:25555")
        .env("BOSH_DEPLOYMENT", "cf")
        .current_dir(fleet.dir.path());
    common::Run::of(&mut command, fleet.dir.path()).assert_success();

    let mut command = std::process::Command::new(common::AGENT);
    command
        .args(["deployment", "--inventory"])
        .arg(&inventory)
        .args(["-d", "cf", "backup", "--artifact-path", &artifacts])
        .current_dir(fleet.dir.path());
    let calls = fleet.calls();
    common::Run::of(&mut command, fleet.dir.path())
        .assert_code(2)
        .assert_stderr_contains("--deployment cf names another deployment than the inventory");
    assert_eq!(fleet.calls(), calls, "nothing ran");
}

/// The tars are checked side by side, but the restore names the same corrupted tar as a check
/// one after another would: the first the metadata lists, here the larger one, whose check
/// ends after the later tar's has found its own corruption.
#[test]
fn of_two_corrupted_tars_the_restore_names_the_first_the_metadata_lists() {
    let fleet = three_vm_fleet();
    write_file(
        &fleet.vm("db", 0).data_dir("db").join("big.bin"),
        &vec![3u8; 24 << 20],
    );
    let inventory = fleet.local_inventory();
    fleet.backup(&inventory, &[]).assert_success();
    let artifact = fleet.artifact_dir();
    let db = artifact.join("db-0-db.tar");
    let mut bytes = fs::read(&db).unwrap();
    let at = bytes
        .windows(6)
        .position(|w| w == b"insert")
        .expect("the dump in the tar");
    bytes[at] = b'I';
    fs::write(&db, bytes).unwrap();
    let blob = artifact.join("blob-0-blob.tar");
    flip_a_seven(&blob, 500);
    fs::write(fleet.log_path(), "").unwrap();

    let run = fleet.driver(
        &inventory,
        &["restore", "--artifact-path", artifact.to_str().unwrap()],
    );
    run.assert_code(1)
        .assert_stderr_contains("the backup is corrupted")
        .assert_stderr_contains(&db.display().to_string())
        .assert_stderr_contains("./dump.sql");
    assert!(
        !run.stderr.contains(&blob.display().to_string()),
        "named the later tar\n{}",
        run.explain()
    );
    assert!(fleet.calls().is_empty(), "{:?}", fleet.calls());
}

/// A backup changed on disk after the restore checked it (here by blob's metadata script,
/// which runs after the check) is refused by the agent as it unpacks, against the digests the
/// check took: the driver reads the tar again and names it corrupted, and no lock or restore
/// script runs anywhere.
#[test]
fn a_tar_changed_after_the_check_is_refused_by_the_vm_and_named_corrupted() {
    let fleet = three_vm_fleet();
    let inventory = fleet.local_inventory();
    fleet.backup(&inventory, &[]).assert_success();
    let artifact = fleet.artifact_dir();
    let tar = artifact.join("blob-0-blob.tar");
    let bytes = fs::read(&tar).unwrap();
    let at = bytes
        .windows(64)
        .position(|w| w.iter().all(|&b| b == 7))
        .unwrap()
        + 500;
    // The same length, one byte of objects/aa/bb changed: only a digest tells.
    fleet.vm("blob", 0).job("blob").script(
        "metadata",
        &format!(
            "printf '\\010' | dd of='{}' bs=1 seek={at} conv=notrunc 2>/dev/null\necho '{{}}'",
            tar.display()
        ),
    );
    fs::write(fleet.log_path(), "").unwrap();
    // What the driver asks of the VMs is recorded: blob's agent checks by BLAKE3.
    let requests = fleet.dir.path().join("requests");
    let inventory =
        fleet.inventory_with(|m| format!("tee -a {} | {}", requests.display(), local_command(m)));
    let run = fleet.driver(
        &inventory,
        &["restore", "--artifact-path", artifact.to_str().unwrap()],
    );
    let sent = String::from_utf8_lossy(&fs::read(&requests).unwrap()).into_owned();
    let blob = sent
        .lines()
        .find(|l| l.contains("\"op\":\"receive_artifact\"") && l.contains("\"job\":\"blob\""))
        .unwrap_or_else(|| panic!("blob's receive_artifact\n{}", run.explain()));
    assert!(blob.contains("\"digest\":\"blake3\""), "{blob}");
    run.assert_code(1)
        .assert_stdout_contains("every checksum matches")
        .assert_stderr_contains("the backup is corrupted")
        .assert_stderr_contains("./objects/aa/bb")
        .assert_stderr_contains("nothing was restored");
    assert_eq!(
        fs::read(&tar).unwrap()[at],
        8,
        "the script changed the tar\n{}",
        run.explain()
    );
    let said = run.explain();
    assert!(
        said.contains("corrupted"),
        "named as a corrupted backup:\n{said}"
    );
    assert!(
        fleet.calls().is_empty(),
        "no lock or restore script may run: {:?}\n{said}",
        fleet.calls()
    );
    let data = fleet.vm("blob", 0).data_dir("blob").join("objects/aa/bb");
    assert_eq!(fs::read(&data).unwrap(), vec![7u8; 100_000], "{said}");
    for m in &fleet.members {
        assert!(
            !m.vm.store().exists(),
            "{}/{}: store removed\n{said}",
            m.group,
            m.index
        );
    }
}

/// An agent that takes BLAKE3 (its hello says so) is asked for the BLAKE3 of the files it
/// sends, and given the BLAKE3 the restore's check took; an agent that does not (an older one,
/// whose hello lists no `digests`) gets SHA-256 both ways. Either way the metadata holds the
/// SHA-256 of the stored files, and the same bytes come back.
#[test]
fn blake3_digests_go_only_to_an_agent_whose_hello_lists_them() {
    use sha2::Digest;
    let fleet = three_vm_fleet();
    let requests =
        |m: &common::fleet::Member| fleet.dir.path().join(format!("{}.requests", m.group));
    let sevens = hex(&sha2::Sha256::digest(vec![7u8; 100_000]));
    for older in [false, true] {
        // What the driver sends is recorded; an older agent's hello is given by removing the
        // field from the real one.
        let hide = match older {
            true => r#"sed -u 's/,"digests":\["blake3"\]//'"#,
            false => "cat",
        };
        let inventory = fleet.inventory_with(|m| {
            format!(
                "tee -a {} | {} | {hide}",
                requests(m).display(),
                local_command(m)
            )
        });
        let artifacts = fleet.dir.path().join(format!("older-{older}"));
        fs::create_dir_all(&artifacts).unwrap();
        let args = ["backup", "--artifact-path", artifacts.to_str().unwrap()];
        fleet.driver(&inventory, &args).assert_success();
        let artifact = common::only_artifact_dir(&artifacts);
        let metadata = fs::read_to_string(artifact.join("metadata")).unwrap();
        assert!(
            metadata.contains(&format!("./objects/aa/bb: {sevens}")),
            "older agent: {older}: the metadata holds SHA-256:\n{metadata}"
        );
        let data = fleet.vm("blob", 0).data_dir("blob").join("objects/aa/bb");
        fs::write(&data, b"changed since the backup").unwrap();
        let run = fleet.driver(
            &inventory,
            &["restore", "--artifact-path", artifact.to_str().unwrap()],
        );
        run.assert_success();
        let blob = fleet.members.iter().find(|m| m.group == "blob").unwrap();
        let sent = fs::read(requests(blob)).unwrap();
        fs::remove_file(requests(blob)).unwrap();
        let sent = String::from_utf8_lossy(&sent);
        for op in ["send_artifact", "receive_artifact"] {
            let request = sent
                .lines()
                .find(|l| l.contains(&format!("\"op\":\"{op}\"")))
                .unwrap_or_else(|| panic!("a {op} request\n{}", run.explain()));
            assert_eq!(
                request.contains("\"digest\":\"blake3\""),
                !older,
                "older agent: {older}: {request}\n{}",
                run.explain()
            );
        }
        assert_eq!(
            fs::read(&data).unwrap(),
            vec![7u8; 100_000],
            "{}",
            run.explain()
        );
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The BLAKE3 an agent gives for the files it sends must be those of the bytes that arrive:
/// one altered on the way (here in its answer) fails that job's backup, naming the file, and
/// leaves no tar under its name.
#[test]
fn a_wrong_blake3_from_the_vm_fails_the_backup_and_keeps_no_tar() {
    let fleet = three_vm_fleet();
    let inventory = fleet.inventory_with(|m| {
        let alter = match m.group.as_str() {
            "blob" => r#"sed -u 's/\("\.\/objects\/aa\/bb":"\)[0-9a-f]\{4\}/\10000/'"#,
            _ => "cat",
        };
        format!("{} | {alter}", local_command(m))
    });
    let run = fleet.backup(&inventory, &[]);
    run.assert_code(1)
        .assert_stderr_contains("blob/0 blob")
        .assert_stderr_contains("BLAKE3 checksums do not match")
        .assert_stderr_contains("./objects/aa/bb");
    let artifact = fleet.artifact_dir();
    assert!(
        !artifact.join("blob-0-blob.tar").exists(),
        "no tar under its name\n{}",
        run.explain()
    );
    assert!(artifact.join("db-0-db.tar").exists(), "{}", run.explain());
}
