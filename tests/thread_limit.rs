//! The driver under a tight limit on its threads and processes (a container's `pids.max`): in
//! a pids cgroup of its own, made for the test and removed after it, the driver is refused
//! threads and processes at every point of a backup in turn. Whatever it is refused, it never
//! panics, every job it locked is unlocked, and a backup that failed is never marked complete.
//! The VMs' agents leave the cgroup as they start: only the driver is limited.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::fleet::Fleet;
use common::{AGENT, Run, write_file};

/// The pids controller's hierarchy, where a child cgroup can be made (cgroup v1's `pids`, or
/// v2's root with the controller enabled for its children).
fn pids_hierarchy() -> Result<PathBuf, String> {
    let v1 = Path::new("/sys/fs/cgroup/pids");
    if v1.join("cgroup.procs").is_file() {
        return Ok(v1.to_path_buf());
    }
    let v2 = Path::new("/sys/fs/cgroup");
    let enabled = fs::read_to_string(v2.join("cgroup.subtree_control")).unwrap_or_default();
    if enabled.split_whitespace().any(|c| c == "pids") {
        return Ok(v2.to_path_buf());
    }
    Err("no pids controller to make a cgroup in (neither cgroup v1's pids nor v2's)".into())
}

/// A pids cgroup made for the test, removed when dropped (its processes have ended by then:
/// every run in it is waited for).
struct Limited {
    dir: PathBuf,
    parent: PathBuf,
}

impl Limited {
    fn new() -> Result<Limited, String> {
        let parent = pids_hierarchy()?;
        let dir = parent.join(format!("bbr-agent-test-{}", std::process::id()));
        fs::create_dir(&dir)
            .map_err(|e| format!("the kernel refused a cgroup {}: {e}", dir.display()))?;
        Ok(Limited { dir, parent })
    }

    fn set_max(&self, max: usize) {
        fs::write(self.dir.join("pids.max"), max.to_string()).expect("write pids.max");
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        // A process still inside (it should not be) is moved out, so the cgroup can go.
        if let Ok(procs) = fs::read_to_string(self.dir.join("cgroup.procs")) {
            for pid in procs.split_whitespace() {
                let _ = fs::write(self.parent.join("cgroup.procs"), pid);
            }
        }
        if let Err(e) = fs::remove_dir(&self.dir) {
            eprintln!("cannot remove {}: {e}", self.dir.display());
        }
    }
}

/// The jobs locked (`lock` ran) more often than unlocked (`unlock` ran), from the call log.
fn locks_left(fleet: &Fleet, lock: &str, unlock: &str) -> Vec<String> {
    let calls = fleet.calls();
    let count = |line: &str| calls.iter().filter(|c| *c == line).count();
    ["db/0 db", "blob/0 blob"]
        .into_iter()
        .filter(|job| count(&format!("{job} {lock}")) > count(&format!("{job} {unlock}")))
        .map(str::to_string)
        .collect()
}

/// Whether any backup under `artifacts` is marked complete (its metadata has a finish time).
fn any_complete(artifacts: &Path) -> bool {
    fs::read_dir(artifacts)
        .into_iter()
        .flatten()
        .flatten()
        .any(|d| {
            fs::read_to_string(d.path().join("metadata")).is_ok_and(|m| m.contains("finish_time"))
        })
}

/// Runs `args(max)` of the driver in the cgroup for each `pids.max` from 1 until one run
/// succeeds (at most 64), checking each run as the module says; `lock` and `unlock` are the
/// scripts that must pair up. Returns the `pids.max` it succeeded at, and every run's outcome.
fn sweep(
    fleet: &Fleet,
    limited: &Limited,
    args: impl Fn(usize) -> String,
    (lock, unlock): (&str, &str),
    check_failed: impl Fn(usize, &Run),
) -> (Option<usize>, Vec<String>) {
    // Each session leaves the cgroup before it starts the agent: only the driver is limited.
    let out = limited.parent.join("cgroup.procs");
    let inventory = fleet.inventory_with(|m| {
        format!(
            "echo $$ > {} && exec {AGENT} --root {} serve",
            out.display(),
            m.vm.root().display()
        )
    });
    let mut outcomes = Vec::new();
    for max in 1..=64 {
        limited.set_max(max);
        fs::write(fleet.log_path(), "").unwrap();
        // The driver enters the cgroup, then becomes the driver.
        let script = format!(
            "echo $$ > {} && exec {AGENT} deployment --inventory {} {}",
            limited.dir.join("cgroup.procs").display(),
            inventory.display(),
            args(max)
        );
        let run = Run::of(Command::new("sh").args(["-c", &script]), fleet.dir.path());
        let said = run
            .stderr
            .lines()
            .find(|l| l.contains("could not start") || l.contains("error"))
            .unwrap_or("")
            .to_string();
        outcomes.push(format!("pids.max {max}: exit {:?} {said}", run.code));
        assert!(
            !run.stderr.contains("panicked"),
            "pids.max {max}: the driver panicked\n{}",
            run.explain()
        );
        assert!(
            run.code.is_some(),
            "pids.max {max}: killed by a signal\n{}",
            run.explain()
        );
        let left = locks_left(fleet, lock, unlock);
        assert!(
            left.is_empty(),
            "pids.max {max}: {left:?} left locked\n{}",
            run.explain()
        );
        if run.code == Some(0) {
            return (Some(max), outcomes);
        }
        check_failed(max, &run);
    }
    (None, outcomes)
}

#[test]
fn a_driver_refused_threads_and_processes_fails_cleanly_and_leaves_nothing_locked() {
    let limited = match Limited::new() {
        Ok(limited) => limited,
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let mut fleet = Fleet::new();
    for group in ["db", "blob"] {
        let vm = fleet.add(group, 0);
        vm.job(group).recording_locks().copying_backup_restore();
        // Past one 256 KiB batch: the drain starts its writer and checker threads.
        let data: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        write_file(&vm.data_dir(group).join("rows"), &data);
    }
    let artifacts = |max: usize| fleet.dir.path().join(format!("artifacts-{max}"));
    let (backed_up, outcomes) = sweep(
        &fleet,
        &limited,
        |max| {
            fs::create_dir(artifacts(max)).unwrap();
            format!("backup --artifact-path {}", artifacts(max).display())
        },
        ("pre-backup-lock", "post-backup-unlock"),
        |max, run| {
            assert!(
                !any_complete(&artifacts(max)),
                "pids.max {max}: a failed backup is marked complete\n{}",
                run.explain()
            )
        },
    );
    eprintln!("backup:\n{}", outcomes.join("\n"));
    let Some(max) = backed_up else {
        panic!(
            "no backup succeeded within 64 pids:\n{}",
            outcomes.join("\n")
        );
    };
    assert!(any_complete(&artifacts(max)));
    let backup = common::only_artifact_dir(&artifacts(max));

    // The restore of that backup, refused the same way.
    let (restored, outcomes) = sweep(
        &fleet,
        &limited,
        |_| format!("restore --artifact-path {}", backup.display()),
        ("pre-restore-lock", "post-restore-unlock"),
        |_, _| {},
    );
    eprintln!("restore:\n{}", outcomes.join("\n"));
    assert!(
        restored.is_some(),
        "no restore succeeded within 64 pids:\n{}",
        outcomes.join("\n")
    );
}
