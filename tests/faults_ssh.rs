//! The driver vanishes mid-backup, through a real sshd (docs/behaviour.md, "Signals and
//! interruption": never left locked): every VM's agent notices that its session ended, ends its backup scripts, runs
//! the unlock scripts of what it locked and removes its store. What "locked" means here is
//! visible on disk: each lock script creates a marker file and each unlock script removes
//! it, so a VM left locked is a marker left behind.
//!
//! As in tests/faults.rs, no process outlives a test: the driver (and its `sh -c` and `ssh`
//! children) runs in a process group of its own that is killed when the test ends, and every
//! script writes its own pid and its agent's under `pids/`.

mod common;
mod faults_support;

use std::fs;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use common::fleet::{Fleet, Member};
use common::sshd::Sshd;
use common::{AGENT, Vm, listing};
use faults_support::{Spawned, Survivors, alive, assert_backup_scripts_gone, eventually};

/// A job whose lock script creates `markers/<group>-<job>` and whose unlock script removes it;
/// its backup records its process group and its agent (`$PPID`: the script's parent is
/// `serve`), then hangs.
fn locking_job(vm: &Vm, pids: &Survivors, markers: &Path, group: &str, name: &str) {
    let marker = markers.join(format!("{group}-{name}"));
    vm.job(name)
        .script(
            "pre-backup-lock",
            &format!("touch '{}'\necho \"$ME\" >> \"$LOG\"", marker.display()),
        )
        .script(
            "post-backup-unlock",
            &format!(
                "rm -f '{}'\necho \"$ME $BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL\" >> \"$LOG\"",
                marker.display()
            ),
        )
        .script(
            "backup",
            &format!(
                "echo $$ > '{group_file}'\n\
                 echo $PPID > '{agent_file}'\n\
                 sleep 300 &\n\
                 echo $! > '{sleep_file}'\n\
                 echo \"$ME\" >> \"$LOG\"\n\
                 wait",
                group_file = pids.file(&format!("{name}-backup")).display(),
                agent_file = pids.file(&format!("{name}-agent")).display(),
                sleep_file = pids.file(&format!("{name}-sleep")).display(),
            ),
        );
}

/// `db/0` with jobs `first` (locked first) and `second`; `web/0` with job `web`.
fn locking_fleet(pids: &Survivors, markers: &Path) -> Fleet {
    let mut fleet = Fleet::new();
    fleet.add("db", 0);
    fleet.add("web", 0);
    let db = fleet.vm("db", 0);
    locking_job(db, pids, markers, "db", "first");
    locking_job(db, pids, markers, "db", "second");
    db.job("first")
        .metadata("backup_should_be_locked_before:\n- {job_name: second, release: r}");
    locking_job(fleet.vm("web", 0), pids, markers, "web", "web");
    fleet
}

const JOBS: [&str; 3] = ["first", "second", "web"];

/// Starts `deployment backup` through sshd and waits until every backup script hangs, with
/// every lock marker in place.
fn backup_in_flight(fleet: &Fleet, sshd: &Sshd, markers: &Path) -> Spawned {
    backup_in_flight_with(fleet, sshd, markers, |m| {
        sshd.ssh(&format!("{AGENT} --root {} serve", m.vm.root().display()))
    })
}

/// [`backup_in_flight`] with each VM reached through `command(member)`.
fn backup_in_flight_with(
    fleet: &Fleet,
    sshd: &Sshd,
    markers: &Path,
    command: impl Fn(&Member) -> String,
) -> Spawned {
    let inventory = fleet.inventory_with(command);
    let driver = Spawned::start(
        fleet.dir.path(),
        &[
            "deployment".into(),
            "--inventory".into(),
            inventory.display().to_string(),
            "backup".into(),
            "--artifact-path".into(),
            fleet.artifacts().display().to_string(),
        ],
        &[],
    );
    let started = [
        "db/0 first backup",
        "db/0 second backup",
        "web/0 web backup",
    ];
    // Generous: the brought agent (a debug build, >100 MiB) is copied over ssh first, which takes
    // seconds on a loaded machine; the wait ends as soon as every script has started.
    let all_started = eventually(Duration::from_secs(45), || {
        let calls = fleet.calls();
        started.iter().all(|s| calls.iter().any(|c| c == s))
    });
    assert!(
        all_started,
        "the backup scripts never all started: {:#?}\n{}\n--- sshd ---\n{}",
        fleet.calls(),
        driver.explain(),
        sshd.log()
    );
    assert_eq!(
        markers_left(markers),
        ["db-first", "db-second", "web-web"],
        "every job is locked while its backup runs"
    );
    driver
}

fn markers_left(markers: &Path) -> Vec<String> {
    let mut left: Vec<String> = fs::read_dir(markers)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    left
}

/// Within seconds every marker is gone, every agent has exited, and every backup script's
/// process group has ended; the unlocks said `false`, and no store is left.
fn assert_every_vm_unlocked_itself(fleet: &Fleet, pids: &Survivors, markers: &Path, sshd: &Sshd) {
    let agents: Vec<i32> = JOBS
        .iter()
        .map(|j| pids.pid(&format!("{j}-agent")))
        .collect();
    let done = eventually(Duration::from_secs(6), || {
        markers_left(markers).is_empty() && agents.iter().all(|&a| !alive(a))
    });
    let explain = || {
        format!(
            "markers left: {:?}\nagents alive: {:?}\ncalls: {:#?}\n--- files ---\n{}\n--- sshd ---\n{}",
            markers_left(markers),
            agents.iter().filter(|&&a| alive(a)).collect::<Vec<_>>(),
            fleet.calls(),
            listing(fleet.dir.path()),
            sshd.log()
        )
    };
    assert!(
        done,
        "a VM was left locked after its driver vanished\n{}",
        explain()
    );
    assert_backup_scripts_gone(pids, &JOBS, &explain);
    let calls = fleet.calls();
    for unlock in [
        "db/0 first post-backup-unlock false",
        "db/0 second post-backup-unlock false",
        "web/0 web post-backup-unlock false",
    ] {
        assert!(calls.iter().any(|c| c == unlock), "{unlock}\n{}", explain());
    }
    let at = |l: &str| calls.iter().position(|c| c == l).unwrap();
    assert!(
        at("db/0 second post-backup-unlock false") < at("db/0 first post-backup-unlock false"),
        "reverse lock order on db/0\n{}",
        explain()
    );
    for (group, vm) in [("db", fleet.vm("db", 0)), ("web", fleet.vm("web", 0))] {
        assert!(!vm.store().exists(), "{group}/0's store\n{}", explain());
    }
}

#[test]
fn killing_the_driver_mid_backup_through_sshd_leaves_no_vm_locked() {
    let sshd = Sshd::start();
    let base = tempfile::tempdir().unwrap();
    let pids = Survivors::new(base.path());
    let markers = base.path().join("markers");
    fs::create_dir_all(&markers).unwrap();
    let fleet = locking_fleet(&pids, &markers);
    let mut driver = backup_in_flight(&fleet, &sshd, &markers);

    // The driver alone: its ssh clients see their input end and pass the EOF on.
    driver.signal(Signal::SIGKILL);
    driver.wait(Duration::from_secs(5));
    assert_every_vm_unlocked_itself(&fleet, &pids, &markers, &sshd);
}

/// Issue 15: VMs with no agent installed get the driver's over their session; killed mid-backup,
/// the driver leaves no VM locked and no brought binary on any VM (the agent removed its file
/// as it started).
#[test]
fn killing_the_driver_mid_backup_leaves_no_brought_agent_on_any_vm() {
    let sshd = Sshd::start();
    let base = tempfile::tempdir().unwrap();
    let pids = Survivors::new(base.path());
    let markers = base.path().join("markers");
    fs::create_dir_all(&markers).unwrap();
    let fleet = locking_fleet(&pids, &markers);
    let data_tmp = |m: &Member| m.vm.dir.path().join("data-tmp");
    let mut driver = backup_in_flight_with(&fleet, &sshd, &markers, |m| {
        fs::create_dir_all(data_tmp(m)).unwrap();
        sshd.ssh(&format!(
            "BBR_AGENT_INSTALLED=/nonexistent/bbr-agent BBR_AGENT_TMP={} {{{{ agent }}}} --root {} serve",
            data_tmp(m).display(),
            m.vm.root().display()
        ))
    });
    let (stdout, _) = driver.output();
    assert!(
        stdout.contains("db/0: agent brought") && stdout.contains("web/0: agent brought"),
        "{}",
        driver.explain()
    );

    driver.signal(Signal::SIGKILL);
    // Counted from its start, the transfers included.
    driver.wait(Duration::from_secs(30));
    assert_every_vm_unlocked_itself(&fleet, &pids, &markers, &sshd);
    for m in &fleet.members {
        let left: Vec<_> = fs::read_dir(data_tmp(m)).unwrap().collect();
        assert!(
            left.is_empty(),
            "{}/{}: the brought agent was left behind\n{}",
            m.group,
            m.index,
            listing(&data_tmp(m))
        );
    }
}

#[test]
fn dropping_the_ssh_connections_mid_backup_leaves_no_vm_locked() {
    let sshd = Sshd::start();
    let base = tempfile::tempdir().unwrap();
    let pids = Survivors::new(base.path());
    let markers = base.path().join("markers");
    fs::create_dir_all(&markers).unwrap();
    let fleet = locking_fleet(&pids, &markers);
    let mut driver = backup_in_flight(&fleet, &sshd, &markers);

    // The driver, its `sh -c`s and their ssh clients at once, as when the operator's laptop
    // dies: the connections drop and sshd ends the sessions.
    killpg(Pid::from_raw(driver.pid()), Signal::SIGKILL).unwrap();
    driver.wait(Duration::from_secs(5));
    assert_every_vm_unlocked_itself(&fleet, &pids, &markers, &sshd);
}
