//! The driver end to end through a real OpenSSH server: three VMs behind one sshd, backup,
//! wipe, restore, and exactly one SSH session per VM for each run.

mod common;

use std::fs;

use common::fleet::Fleet;
use common::sshd::Sshd;
use common::{AGENT, tree, write_file};

#[test]
fn a_deployment_round_trip_over_sshd_uses_one_session_per_vm() {
    let sshd = Sshd::start();
    let mut fleet = Fleet::new();
    fleet
        .add("api", 0)
        .job("api-lock")
        .recording_locks()
        .metadata("backup_should_be_locked_before:\n- {job_name: db, release: acme}");
    for i in 0..2 {
        let db = fleet.add("db", i);
        db.job("db").recording_locks().copying_backup_restore();
        write_file(
            &db.data_dir("db").join("dump.sql"),
            format!("rows of db/{i}\n").as_bytes(),
        );
        write_file(
            &db.data_dir("db").join("dir with space/blob"),
            &vec![i as u8; 2 << 20],
        );
    }
    let inventory = fleet
        .inventory_with(|m| sshd.ssh(&format!("{AGENT} --root {} serve", m.vm.root().display())));
    let before: Vec<_> = (0..2)
        .map(|i| tree(&fleet.vm("db", i).data_dir("db")))
        .collect();

    let sessions = sshd.sessions();
    let run = fleet.backup(&inventory, &[]);
    run.assert_success();
    assert_eq!(
        sshd.sessions() - sessions,
        3,
        "one session per VM for the backup\n{}",
        sshd.log()
    );
    let calls = fleet.calls();
    let at = |l: &str| {
        calls
            .iter()
            .position(|c| c == l)
            .unwrap_or_else(|| panic!("{l} missing: {calls:#?}"))
    };
    assert!(
        at("api/0 api-lock pre-backup-lock") < at("db/0 db pre-backup-lock"),
        "{calls:#?}"
    );
    assert!(
        at("api/0 api-lock pre-backup-lock") < at("db/1 db pre-backup-lock"),
        "{calls:#?}"
    );
    assert!(
        at("db/1 db post-backup-unlock") < at("api/0 api-lock post-backup-unlock"),
        "{calls:#?}"
    );

    for i in 0..2 {
        fs::remove_dir_all(fleet.vm("db", i).data_dir("db")).unwrap();
    }
    let artifact = fleet.artifact_dir();
    let sessions = sshd.sessions();
    fleet
        .driver(
            &inventory,
            &["restore", "--artifact-path", artifact.to_str().unwrap()],
        )
        .assert_success();
    assert_eq!(
        sshd.sessions() - sessions,
        3,
        "one session per VM for the restore\n{}",
        sshd.log()
    );
    for i in 0..2 {
        assert_eq!(
            tree(&fleet.vm("db", i).data_dir("db")),
            before[i as usize],
            "db/{i}"
        );
    }
}
