//! What the operator sees while something takes long: a still-running line per script at
//! growing marks of its elapsed time (with a live line in the progress area on a terminal),
//! and for a backup's copy from a VM a real bar with its total, percentage and ETA. The
//! terminal cases run the real binary under util-linux `script`, so its stderr is a real
//! pseudo-terminal, and assert on what the terminal was sent.

mod common;

use std::process::Command;

use common::fleet::Fleet;
use common::{AGENT, Run, Vm};

/// Marks at 300ms, 600ms, 1.2s, 3s... instead of 30s, 1m, 2m, 5m.
const FAST: (&str, &str) = ("BBR_AGENT_STILL_RUNNING_FIRST", "300ms");

fn quoted(args: &[String]) -> String {
    args.iter()
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs the agent with `args` under `script`, which gives it a pseudo-terminal; returns what
/// the terminal was sent (as the run's stdout).
fn on_a_terminal(cwd: &std::path::Path, args: &[String], env: &[(&str, &str)]) -> Run {
    let all: Vec<String> = std::iter::once(AGENT.to_string())
        .chain(args.iter().cloned())
        .collect();
    let mut command = Command::new("script");
    command
        .args(["--quiet", "--return", "--command"])
        .arg(quoted(&all))
        .arg("/dev/null")
        .env("NO_COLOR", "1")
        .env("COLUMNS", "160")
        .env("LINES", "40")
        .envs(env.iter().copied())
        .current_dir(cwd);
    Run::of(&mut command, cwd)
}

fn slow_backup_vm(seconds: &str) -> Vm {
    let vm = Vm::with_identity("acme", "backend");
    vm.job("db").recording_locks().script(
        "backup",
        &format!("echo \"$ME\" >> \"$LOG\"\nsleep {seconds}"),
    );
    vm
}

fn local_backup_args(vm: &Vm) -> Vec<String> {
    vec![
        "--root".to_string(),
        vm.root().display().to_string(),
        "backup".to_string(),
        "--artifact-path".to_string(),
        vm.artifacts().display().to_string(),
    ]
}

/// The positions of every `needle` in `haystack`.
fn positions(haystack: &str, needle: &str) -> Vec<usize> {
    haystack.match_indices(needle).map(|(i, _)| i).collect()
}

#[test]
fn a_long_backup_script_gets_still_running_lines_and_a_live_line_on_a_terminal() {
    let vm = slow_backup_vm("2");
    let run = on_a_terminal(vm.dir.path(), &local_backup_args(&vm), &[FAST]);
    run.assert_success();
    let screen = &run.stdout;
    let lines = positions(screen, "backend/0 db backup: still running after ");
    assert!(
        lines.len() >= 2,
        "a 2s backup script with marks at 300ms, 600ms, 1.2s got {} still-running lines\n{}",
        lines.len(),
        run.explain()
    );
    assert!(
        screen.contains("backend/0 db backup: running for 00:00:0"),
        "the progress area never showed the running script\n{}",
        run.explain()
    );
    let done = screen
        .find("backend/0 db backup: done in ")
        .unwrap_or_else(|| panic!("no done line\n{}", run.explain()));
    assert!(
        lines.iter().all(|&l| l < done),
        "a still-running line came after the script's done line\n{}",
        run.explain()
    );
    // A quick script gets none: its lock script ended before the first mark.
    assert!(
        !screen.contains("pre-backup-lock: still running"),
        "{}",
        run.explain()
    );
}

#[test]
fn without_a_terminal_the_lines_still_come_and_nothing_is_drawn() {
    let vm = slow_backup_vm("1");
    let mut command = Command::new(AGENT);
    command.args(local_backup_args(&vm)).env(FAST.0, FAST.1);
    let run = Run::of(&mut command, vm.dir.path());
    run.assert_success()
        .assert_stdout_contains("backend/0 db backup: still running after ");
    assert!(
        !run.stdout.contains("running for") && !run.stderr.contains("running for"),
        "a progress line was drawn with no terminal\n{}",
        run.explain()
    );
}

#[test]
fn a_driver_run_says_which_script_is_still_running_on_which_vm_also_as_json_events() {
    let mut fleet = Fleet::new();
    fleet
        .add("db", 0)
        .job("postgres")
        .recording_locks()
        .script("backup", "echo \"$ME\" >> \"$LOG\"\nsleep 1");
    fleet.add("api", 0).job("web").recording_locks();
    let inventory = fleet.local_inventory();
    let artifacts = fleet.artifacts().display().to_string();
    let mut command = Command::new(AGENT);
    command
        .args(["deployment", "--inventory"])
        .arg(&inventory)
        .args(["backup", "--artifact-path", &artifacts])
        .env(FAST.0, FAST.1);
    let human = Run::of(&mut command, fleet.dir.path());
    human
        .assert_success()
        .assert_stdout_contains("db/0 postgres backup: still running after ");

    // Into a directory of its own: two backups in one second would share a name.
    let second = fleet.dir.path().join("second");
    std::fs::create_dir_all(&second).unwrap();
    let artifacts = second.display().to_string();
    let mut command = Command::new(AGENT);
    command
        .args(["--log-format", "json", "deployment", "--inventory"])
        .arg(&inventory)
        .args(["backup", "--artifact-path", &artifacts])
        .env(FAST.0, FAST.1);
    let json = Run::of(&mut command, fleet.dir.path());
    json.assert_success();
    let running: Vec<serde_json::Value> = json
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "script_running")
        .collect();
    assert!(
        running.iter().any(|e| e["instance"] == "db/0"
            && e["job"] == "postgres"
            && e["script"] == "backup"
            && e["phase"] == "backup"
            && e["duration_ms"].as_u64().is_some_and(|ms| ms >= 300)),
        "no script_running event for db/0 postgres backup\n{}",
        json.explain()
    );
    assert!(
        running.iter().all(|e| e["instance"] == "db/0"),
        "a quick script got a still-running event\n{}",
        json.explain()
    );
}

/// A session command whose agent's answers reach the driver a 4 KiB read at a time, 10 ms
/// apart: a copy of 1 MiB takes seconds, time enough for the bar to be drawn.
const THROTTLED: &str = r#"#!/bin/sh
"$AGENT" --root "$ROOT" serve | while :; do
  dd bs=4096 count=1 of="$CHUNK" 2>/dev/null
  [ -s "$CHUNK" ] || break
  cat "$CHUNK"
  sleep 0.01
done
"#;

#[test]
fn a_backups_copy_from_a_vm_shows_a_bar_with_its_total_percentage_and_eta() {
    let mut fleet = Fleet::new();
    let db = fleet.add("db", 0);
    db.job("db").recording_locks().copying_backup_restore();
    std::fs::write(db.data_dir("db").join("rows"), vec![7u8; 1 << 20]).unwrap();
    let launcher = common::write_file(&fleet.dir.path().join("throttled"), THROTTLED.as_bytes());
    let root = fleet.vm("db", 0).root();
    let inventory = fleet.inventory_with(|_| {
        format!(
            "CHUNK={} AGENT={AGENT} ROOT={} sh {}",
            fleet.dir.path().join("chunk").display(),
            root.display(),
            launcher.display()
        )
    });
    let args: Vec<String> = [
        "deployment",
        "--inventory",
        inventory.to_str().unwrap(),
        "backup",
        "--artifact-path",
        fleet.artifacts().to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let run = on_a_terminal(fleet.dir.path(), &args, &[]);
    run.assert_success();
    let tar = fleet.artifact_dir().join("db-0-db.tar");
    let len = std::fs::metadata(&tar).unwrap().len();
    assert!(len > 1 << 20, "{len}");
    // indicatif's binary units, two decimals: 1.00 MiB.
    let total = format!("/{:.2} MiB", len as f64 / f64::from(1 << 20));
    let screen = &run.stdout;
    let bar = screen
        .split(['\r', '\n'])
        .find(|l| l.contains("db/0 db: copying backup from the VM [") && l.contains(&total))
        .unwrap_or_else(|| {
            panic!(
                "no bar with the total {total} on the terminal\n{}",
                run.explain()
            )
        });
    assert!(
        bar.contains("% ") && bar.contains("ETA "),
        "the bar has no percentage or ETA: {bar:?}\n{}",
        run.explain()
    );
    assert!(
        !screen.contains(" drain "),
        "the bar says drain\n{}",
        run.explain()
    );
}

/// The `script_running` events of `run`'s JSON log, as `(job, script)`.
fn running_events(run: &Run) -> Vec<(String, String)> {
    run.stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "script_running")
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (s("job"), s("script"))
        })
        .collect()
}

/// Two backup scripts of one VM run at once; the quick one ends at once while the slow one
/// runs on: only the slow one is said to be still running, through `serve` (the agent says
/// when each ends) and on the VM itself alike.
#[test]
fn a_script_that_ended_beside_a_slow_one_is_not_said_to_be_still_running() {
    let mut fleet = Fleet::new();
    let vm = fleet.add("db", 0);
    vm.job("slow")
        .recording_locks()
        .script("backup", "echo \"$ME\" >> \"$LOG\"\nsleep 1.5");
    vm.job("quick")
        .recording_locks()
        .script("backup", "echo \"$ME\" >> \"$LOG\"");
    let inventory = fleet.local_inventory();
    let artifacts = fleet.artifacts().display().to_string();
    let through_serve = Run::of(
        Command::new(AGENT)
            .args(["--log-format", "json", "deployment", "--inventory"])
            .arg(&inventory)
            .args(["backup", "--artifact-path", &artifacts])
            .env(FAST.0, FAST.1),
        fleet.dir.path(),
    );
    let local_artifacts = fleet.dir.path().join("local-artifacts");
    std::fs::create_dir_all(&local_artifacts).unwrap();
    let on_the_vm = Run::of(
        Command::new(AGENT)
            .args(["--log-format", "json", "--root"])
            .arg(fleet.vm("db", 0).root())
            .args(["backup", "--artifact-path"])
            .arg(&local_artifacts)
            .env(FAST.0, FAST.1),
        fleet.dir.path(),
    );
    for run in [&through_serve, &on_the_vm] {
        run.assert_success();
        let events = running_events(run);
        assert!(
            events.contains(&("slow".to_string(), "backup".to_string())),
            "the slow script was never said to be still running: {events:?}\n{}",
            run.explain()
        );
        assert!(
            events.iter().all(|(job, _)| job != "quick"),
            "the quick script, done at once, was said to be still running: {events:?}\n{}",
            run.explain()
        );
    }
}
