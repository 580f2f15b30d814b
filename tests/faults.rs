//! Fault injection (never left locked, one run at a time per VM: docs/behaviour.md, "Signals
//! and interruption"): a signal to a running agent, a second signal, the agent killed with
//! SIGKILL (its journal and `backup-cleanup`), two runs at once on one VM, the driver vanishing,
//! tampered script files, a metadata script that floods its output, and a secret in the agent's
//! own environment.
//! docs/reliability.md indexes these tests together with the other fault tests.
//!
//! No test leaves a process behind, passed or failed: every agent (or driver) runs in a
//! process group of its own under a `Spawned` guard that kills the group when dropped, and
//! every script writes its pid (its process group: scripts lead their own) under `pids/` for a
//! `Survivors` guard (both in tests/faults_support, shared with tests/faults_ssh.rs). Every
//! wait has a deadline, so a broken feature fails the test instead of hanging it.

mod common;
mod faults_support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use common::fleet::Fleet;
use common::{Vm, listing, tree};
use faults_support::{
    Exit, Spawned, Survivors, alive, assert_backup_scripts_gone,
    assert_driver_left_the_unlocks_to_the_agents, eventually, group_alive, group_gone_soon,
    run_agent,
};

// ---------------------------------------------------------------------------------------
// VMs and scripts.
// ---------------------------------------------------------------------------------------

fn backup_args(vm: &Vm) -> Vec<String> {
    vec![
        "backup".to_string(),
        "--artifact-path".to_string(),
        vm.artifacts().display().to_string(),
    ]
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn run_dir(vm: &Vm) -> PathBuf {
    vm.root().join("var/vcap/sys/run/bbr-agent")
}

fn journal_path(vm: &Vm) -> PathBuf {
    run_dir(vm).join("journal.jsonl")
}

/// What a journal says, folded from its records as docs/reliability.md describes them.
#[derive(Debug, Default)]
struct JournalSays {
    pid: i64,
    locked: Vec<(String, String)>,
    /// (job, script, process group)
    running: Vec<(String, String, i64)>,
}

fn journal_says(text: &str) -> JournalSays {
    let mut says = JournalSays::default();
    for line in text.lines() {
        let record: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a journal line is not JSON ({e}): {line}\n{text}"));
        let str_of = |v: &Value| v.as_str().unwrap_or_else(|| panic!("{line}")).to_string();
        let jobs = |r: &Value| -> Vec<String> {
            r["jobs"]
                .as_array()
                .unwrap_or_else(|| panic!("{line}"))
                .iter()
                .map(str_of)
                .collect()
        };
        if let Some(run) = record.get("run") {
            says.pid = run["pid"].as_i64().unwrap();
        } else if let Some(r) = record.get("locking") {
            for job in jobs(r) {
                if !says.locked.iter().any(|(j, _)| *j == job) {
                    says.locked.push((job, str_of(&r["lock"])));
                }
            }
        } else if let Some(r) = record.get("unlocked") {
            // `lock`: the lock it releases (every lock of the job without it).
            let jobs = jobs(r);
            let lock = r.get("lock").map(str_of);
            says.locked
                .retain(|(j, l)| !(jobs.contains(j) && lock.as_ref().is_none_or(|k| k == l)));
        } else if let Some(r) = record.get("started") {
            says.running.push((
                str_of(&r["job"]),
                str_of(&r["script"]),
                r["pgid"].as_i64().unwrap(),
            ));
        } else if let Some(r) = record.get("finished") {
            let pgid = r["pgid"].as_i64().unwrap();
            says.running.retain(|(_, _, g)| *g != pgid);
        } else if record == "strays_ended" {
            says.running.clear();
        } else {
            panic!("an unknown journal record: {line}\n{text}");
        }
    }
    says
}

/// A `post-backup-unlock` that records whether it was told the backup succeeded.
const UNLOCK_RECORDING: &str = "echo \"$ME $BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL\" >> \"$LOG\"";

fn metadata_before(job: &str) -> String {
    format!("backup_should_be_locked_before:\n- job_name: {job}\n  release: r")
}

/// A backup script that records its process group (`pids/<job>-backup`) and its background
/// `sleep 300` (`pids/<job>-sleep`), then the call-log line `<job> backup`, then waits for
/// the sleep.
fn hanging_backup(pids: &Survivors, job: &str) -> String {
    format!(
        "echo $$ > '{group}'\n\
         sleep 300 &\n\
         echo $! > '{sleep}'\n\
         echo \"$ME\" >> \"$LOG\"\n\
         wait",
        group = pids.file(&format!("{job}-backup")).display(),
        sleep = pids.file(&format!("{job}-sleep")).display(),
    )
}

/// `api` (locked before `db`) and `db`, each with recording lock and unlock scripts and a
/// backup that hangs in `sleep 300`.
fn hanging_vm() -> (Vm, Survivors) {
    let vm = Vm::with_identity("acme", "backend");
    let pids = Survivors::new(vm.dir.path());
    for job in ["api", "db"] {
        vm.job(job)
            .recording("pre-backup-lock")
            .script("post-backup-unlock", UNLOCK_RECORDING)
            .script("backup", &hanging_backup(&pids, job));
    }
    vm.job("api").metadata(&metadata_before("db"));
    (vm, pids)
}

fn of_script(calls: &[String], script: &str) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c.split(' ').any(|w| w == script))
        .cloned()
        .collect()
}

/// Waits until every line of `lines` is in the call log at `log`.
fn wait_for_calls(log: &Path, lines: &[&str], agent: &Spawned) {
    let read = || fs::read_to_string(log).unwrap_or_default();
    let seen = eventually(Duration::from_secs(8), || {
        let calls = read();
        lines.iter().all(|l| calls.lines().any(|c| c == *l))
    });
    assert!(
        seen,
        "the call log never showed {lines:?}: {:?}\n{}",
        read(),
        agent.explain()
    );
}

/// Waits until the journal on `vm` records `scripts` running scripts.
fn wait_for_running(vm: &Vm, scripts: usize, agent: &Spawned) {
    let running = || {
        fs::read_to_string(journal_path(vm))
            .ok()
            // A line being written right now: look again.
            .filter(|text| text.ends_with('\n'))
            .map(|text| journal_says(&text).running.len())
            .unwrap_or(0)
    };
    assert!(
        eventually(Duration::from_secs(5), || running() == scripts),
        "the journal never recorded {scripts} running scripts (it has {})\n{}",
        running(),
        agent.explain()
    );
}

fn assert_groups_gone(pids: &Survivors, names: &[&str], explain: &str) {
    for name in names {
        let pid = pids.pid(name);
        assert!(
            group_gone_soon(pid) && !alive(pid),
            "{name} (process group {pid}) is still running\n{explain}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 1. SIGTERM, SIGINT, SIGHUP mid-backup.
// ---------------------------------------------------------------------------------------

/// While both backup scripts hang: the scripts end (group and background sleep), every job is
/// unlocked with `false` in reverse lock order, the store and journal are removed, and the
/// exit status is 128 + the signal.
fn a_signal_mid_backup_ends_the_scripts_unlocks_and_exits_128_plus(signal: Signal) {
    let (vm, pids) = hanging_vm();
    let mut agent = Spawned::on(&vm, &strs(&backup_args(&vm)));
    wait_for_calls(&vm.log_path(), &["api backup", "db backup"], &agent);
    assert!(vm.store().exists(), "{}", agent.explain());

    agent.signal(signal);
    let exit = agent.wait(Duration::from_secs(8));
    exit.assert_code(128 + signal as i32);
    assert_groups_gone(
        &pids,
        &["api-backup", "api-sleep", "db-backup", "db-sleep"],
        &exit.explain,
    );
    let calls = vm.calls();
    assert_eq!(
        of_script(&calls, "post-backup-unlock"),
        [
            "db post-backup-unlock false",
            "api post-backup-unlock false"
        ],
        "every job unlocked, told the backup failed, in reverse lock order\n{}",
        exit.explain
    );
    assert_eq!(
        calls.last().map(String::as_str),
        Some("api post-backup-unlock false"),
        "nothing after the unlock: {calls:?}\n{}",
        exit.explain
    );
    assert!(
        !vm.store().exists(),
        "the store is removed\n{}",
        exit.explain
    );
    assert!(
        !journal_path(&vm).exists(),
        "the journal is removed once nothing is locked\n{}",
        exit.explain
    );
}

#[test]
fn sigterm_mid_backup_ends_the_scripts_unlocks_with_false_and_exits_143() {
    a_signal_mid_backup_ends_the_scripts_unlocks_and_exits_128_plus(Signal::SIGTERM);
}

#[test]
fn sigint_mid_backup_ends_the_scripts_unlocks_with_false_and_exits_130() {
    a_signal_mid_backup_ends_the_scripts_unlocks_and_exits_128_plus(Signal::SIGINT);
}

#[test]
fn sighup_mid_backup_ends_the_scripts_unlocks_with_false_and_exits_129() {
    a_signal_mid_backup_ends_the_scripts_unlocks_and_exits_128_plus(Signal::SIGHUP);
}

// ---------------------------------------------------------------------------------------
// 2. A second signal skips the grace period.
// ---------------------------------------------------------------------------------------

#[test]
fn a_second_sigterm_skips_the_grace_period() {
    let vm = Vm::with_identity("acme", "backend");
    let pids = Survivors::new(vm.dir.path());
    vm.job("db")
        .recording("pre-backup-lock")
        .script("post-backup-unlock", UNLOCK_RECORDING)
        .script(
            "backup",
            &format!(
                "echo $$ > '{group}'\n\
                 trap 'echo \"$ME got TERM\" >> \"$LOG\"' TERM\n\
                 echo \"$ME\" >> \"$LOG\"\n\
                 while :; do sleep 0.1; done",
                group = pids.file("db-backup").display()
            ),
        );
    let mut args = backup_args(&vm);
    args.extend(["--kill-grace".to_string(), "30s".to_string()]);
    let mut agent = Spawned::on(&vm, &strs(&args));
    wait_for_calls(&vm.log_path(), &["db backup"], &agent);

    let first = Instant::now();
    agent.signal(Signal::SIGTERM);
    wait_for_calls(&vm.log_path(), &["db backup got TERM"], &agent);
    agent.signal(Signal::SIGTERM);
    // Within the 10 s budget, well short of the 30 s grace.
    let exit = agent.wait(agent.started.elapsed() + Duration::from_secs(6));
    let after_first = first.elapsed();
    exit.assert_code(143);
    assert!(
        after_first < Duration::from_secs(5),
        "the second signal should have ended the script at once, yet the agent took {after_first:?}\n{}",
        exit.explain
    );
    assert_groups_gone(&pids, &["db-backup"], &exit.explain);
    assert_eq!(
        of_script(&vm.calls(), "post-backup-unlock"),
        ["db post-backup-unlock false"],
        "{}",
        exit.explain
    );
    assert!(!vm.store().exists(), "{}", exit.explain);
}

// ---------------------------------------------------------------------------------------
// 3. SIGKILL mid-backup: the journal, the refusal, backup-cleanup.
// ---------------------------------------------------------------------------------------

/// Jobs `a` (locked first; its backup hangs), `b` (locked after `a`) and `c`, which has an
/// unlock script but no lock script: nothing ever locks it, so cleanup by the journal must
/// not unlock it (BBR's journal-less cleanup would).
fn three_jobs(vm: &Vm, pids: &Survivors) {
    vm.job("a")
        .recording("pre-backup-lock")
        .script("post-backup-unlock", UNLOCK_RECORDING)
        .script("backup", &hanging_backup(pids, "a"))
        .metadata(&metadata_before("b"));
    vm.job("b")
        .recording("pre-backup-lock")
        .script("post-backup-unlock", UNLOCK_RECORDING);
    vm.job("c").script("post-backup-unlock", UNLOCK_RECORDING);
}

/// Starts a local backup on `vm`, waits until `a`'s backup hangs, and kills the agent with
/// SIGKILL. Returns the dead agent's pid.
fn kill_mid_backup(vm: &Vm, log_prefix: &str) -> i32 {
    let mut agent = Spawned::on(vm, &strs(&backup_args(vm)));
    wait_for_calls(
        &vm.log_path(),
        &[
            &format!("{log_prefix}a pre-backup-lock"),
            &format!("{log_prefix}b pre-backup-lock"),
            &format!("{log_prefix}a backup"),
        ],
        &agent,
    );
    // The agent records a script's process group just after starting it; kill it once it has
    // (a SIGKILL inside that instant is a window this test does not aim at).
    wait_for_running(vm, 1, &agent);
    agent.signal(Signal::SIGKILL);
    let exit = agent.wait(Duration::from_secs(8));
    assert_eq!(exit.signal, Some(9), "{}", exit.explain);
    agent.pid()
}

/// The journal the killed agent left: its pid, `a` and `b` locked, `a`'s backup running as
/// the script's process group.
fn assert_journal_of_the_killed_run(vm: &Vm, killed: i32, stray: i32) {
    let path = journal_path(vm);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{} should outlive the killed agent: {e}\n{}",
            path.display(),
            listing(vm.dir.path())
        )
    });
    let journal = journal_says(&text);
    assert_eq!(journal.pid, i64::from(killed), "{text}");
    let locked: Vec<(&str, &str)> = journal
        .locked
        .iter()
        .map(|(job, lock)| (job.as_str(), lock.as_str()))
        .collect();
    assert_eq!(
        locked,
        [("a", "pre-backup-lock"), ("b", "pre-backup-lock")],
        "{text}"
    );
    let running: Vec<(&str, &str, i64)> = journal
        .running
        .iter()
        .map(|(job, script, pgid)| (job.as_str(), script.as_str(), *pgid))
        .collect();
    assert_eq!(running, [("a", "backup", i64::from(stray))], "{text}");
}

#[test]
fn after_sigkill_the_journal_refuses_a_new_backup_and_backup_cleanup_unlocks_exactly_what_was_locked()
 {
    let vm = Vm::with_identity("acme", "backend");
    let pids = Survivors::new(vm.dir.path());
    three_jobs(&vm, &pids);
    let killed = kill_mid_backup(&vm, "");
    let (stray, sleep) = (pids.pid("a-backup"), pids.pid("a-sleep"));
    assert!(
        group_alive(stray) && alive(sleep),
        "the orphaned backup script runs on after its agent died (else this test proves nothing)"
    );
    assert_journal_of_the_killed_run(&vm, killed, stray);
    let calls_before = vm.calls();

    // A new backup is refused: it names the leftover and the exact cleanup command.
    let refused = run_agent(&vm, &strs(&backup_args(&vm)));
    refused
        .assert_code(1)
        .assert_stderr_contains(&format!("a run that was killed (pid {killed}, started "))
        .assert_stderr_contains("a locked")
        .assert_stderr_contains("b locked")
        .assert_stderr_contains(&format!("a backup running as process group {stray}"))
        .assert_stderr_contains(&format!(
            "run `bbr-agent --root {} backup-cleanup` first",
            vm.root().display()
        ));
    assert_eq!(vm.calls(), calls_before, "{}", refused.explain);
    assert!(
        journal_path(&vm).exists() && group_alive(stray),
        "the refusal changes nothing\n{}",
        refused.explain
    );

    // backup-cleanup ends the stray, unlocks a and b (not c), removes the store and journal.
    let cleanup = run_agent(&vm, &["backup-cleanup"]);
    cleanup.assert_code(0);
    assert_groups_gone(&pids, &["a-backup", "a-sleep"], &cleanup.explain);
    let calls = vm.calls();
    assert_eq!(
        calls[calls_before.len()..],
        ["b post-backup-unlock false", "a post-backup-unlock false"],
        "exactly the jobs the journal records as locked, in reverse lock order; c was never locked\n{}",
        cleanup.explain
    );
    assert!(!vm.store().exists(), "{}", cleanup.explain);
    assert!(!journal_path(&vm).exists(), "{}", cleanup.explain);

    // And the VM is usable again.
    vm.job("a").script("backup", "echo \"$ME\" >> \"$LOG\"");
    run_agent(&vm, &strs(&backup_args(&vm))).assert_code(0);
}

#[test]
fn after_sigkill_deployment_backup_cleanup_ends_the_stray_and_unlocks_by_the_journal() {
    let mut fleet = Fleet::new();
    let pids = Survivors::new(fleet.dir.path());
    three_jobs(fleet.add("db", 0), &pids);
    // A VM whose run left no journal: cleanup unlocks every job there, as BBR does.
    fleet
        .add("web", 0)
        .job("w")
        .recording("pre-backup-lock")
        .script("post-backup-unlock", UNLOCK_RECORDING);
    let db = fleet.vm("db", 0);
    let killed = kill_mid_backup(db, "db/0 ");
    let stray = pids.pid("a-backup");
    assert_journal_of_the_killed_run(db, killed, stray);
    let calls_before = fleet.calls();

    let inventory = fleet.local_inventory();
    let refused = Spawned::start(
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
    )
    .wait(Duration::from_secs(10));
    // The killed run was db/0's own (local): its cleanup command is the local one.
    refused
        .assert_code(1)
        .assert_stderr_contains(&format!(
            "db/0: a run that was killed (pid {killed}, started "
        ))
        .assert_stderr_contains(&format!(
            "run `bbr-agent --root {} backup-cleanup` first",
            db.root().display()
        ));
    assert_eq!(fleet.calls(), calls_before, "{}", refused.explain);

    let cleanup = Spawned::start(
        fleet.dir.path(),
        &[
            "deployment".into(),
            "--inventory".into(),
            inventory.display().to_string(),
            "backup-cleanup".into(),
        ],
        &[],
    )
    .wait(Duration::from_secs(10));
    cleanup.assert_code(0);
    assert_groups_gone(&pids, &["a-backup", "a-sleep"], &cleanup.explain);
    let mut unlocks = fleet.calls()[calls_before.len()..].to_vec();
    let b_first = unlocks.first().map(String::as_str) == Some("db/0 b post-backup-unlock false");
    unlocks.sort();
    assert_eq!(
        unlocks,
        [
            "db/0 a post-backup-unlock false",
            "db/0 b post-backup-unlock false",
            "web/0 w post-backup-unlock false"
        ],
        "db/0: what its journal records (not c); web/0: every job\n{}",
        cleanup.explain
    );
    assert!(b_first, "b unlocks before a\n{}", cleanup.explain);
    assert!(!db.store().exists(), "{}", cleanup.explain);
    assert!(!journal_path(db).exists(), "{}", cleanup.explain);
}

/// After the SIGKILL another job's metadata script fails, and so does that of `b`, which the
/// journal records as locked: neither is needed to end the stray and to unlock `a` and `b`
/// (BBR's order still known from `a`'s metadata). Before, cleanup stopped at the metadata
/// ("nothing was locked", exit 8) and left the stray backup running.
#[test]
fn after_sigkill_backup_cleanup_unlocks_by_the_journal_whatever_the_metadata_scripts_do() {
    let vm = Vm::with_identity("acme", "backend");
    let pids = Survivors::new(vm.dir.path());
    three_jobs(&vm, &pids);
    kill_mid_backup(&vm, "");
    assert!(group_alive(pids.pid("a-backup")), "the stray runs on");
    vm.job("b").script(
        "metadata",
        "echo 'b: metadata is broken' >&2
exit 3",
    );
    vm.job("d")
        .script(
            "metadata",
            "echo 'd: metadata is broken' >&2
exit 3",
        )
        .script("post-backup-unlock", UNLOCK_RECORDING);
    let calls_before = vm.calls();

    let cleanup = run_agent(&vm, &["backup-cleanup"]);
    cleanup
        .assert_code(0)
        .assert_stderr_contains("job 'd': its metadata script failed")
        .assert_stderr_contains("job 'b': its metadata script failed");
    assert_groups_gone(&pids, &["a-backup", "a-sleep"], &cleanup.explain);
    let calls = vm.calls();
    assert_eq!(
        calls[calls_before.len()..],
        ["b post-backup-unlock false", "a post-backup-unlock false"],
        "what the journal records, in reverse lock order; not c or d, never locked
{}",
        cleanup.explain
    );
    assert!(!vm.store().exists(), "{}", cleanup.explain);
    assert!(!journal_path(&vm).exists(), "{}", cleanup.explain);
}

/// A journal with a line this agent cannot read (damage, or a record of another agent
/// version): the refusal and the cleanup name the file and the line; the cleanup unlocks what
/// it can read (`r`'s restore lock, with its own side's unlock), and for the rest every job,
/// as BBR does without a journal; then the journal is gone and a backup runs again. Before,
/// cleanup unlocked nothing and kept the journal, so every run failed the same way.
#[test]
fn a_journal_line_that_cannot_be_read_is_named_and_cleanup_unlocks_the_rest_as_bbr_does() {
    let vm = Vm::with_identity("acme", "backend");
    for job in ["a", "b"] {
        vm.job(job)
            .recording("pre-backup-lock")
            .script("post-backup-unlock", UNLOCK_RECORDING);
    }
    vm.job("a").recording("backup");
    vm.job("c").script("post-backup-unlock", UNLOCK_RECORDING);
    vm.job("r")
        .recording("pre-restore-lock")
        .recording("post-restore-unlock");
    let journal = [
        r#"{"run":{"pid":4000000,"command":"bbr-agent backup"}}"#,
        r#"{"locking":{"jobs":["a"],"lock":"pre-backup-lock"}}"#,
        r#"{"locking":{"jobs":["r"],"lock":"pre-restore-lock"}}"#,
        r#"{"unlocking_soon":{"jobs":["a"],"lock":"pre-backup-lock"}}"#,
        r#"{"started":{"job":"a","script":"backup","pgid":4000001,"start_time":1}}"#,
    ]
    .join(
        "
",
    );
    common::write_file(
        &journal_path(&vm),
        format!(
            "{journal}
"
        )
        .as_bytes(),
    );
    let path = journal_path(&vm).display().to_string();

    let refused = run_agent(&vm, &strs(&backup_args(&vm)));
    refused
        .assert_code(1)
        .assert_stderr_contains(&format!("{path} line 4: a record this agent cannot read"))
        .assert_stderr_contains("a locked, r locked");
    assert!(vm.calls().is_empty(), "{}", refused.explain);

    let cleanup = run_agent(&vm, &["backup-cleanup"]);
    cleanup
        .assert_code(0)
        .assert_stderr_contains(&format!("{path} line 4: a record this agent cannot read"));
    let mut calls = vm.calls();
    calls.sort();
    assert_eq!(
        calls,
        [
            "a post-backup-unlock false",
            "b post-backup-unlock false",
            "c post-backup-unlock false",
            "r post-restore-unlock",
        ],
        "r by the journal, on its own side; a, b and c as BBR does
{}",
        cleanup.explain
    );
    assert!(!journal_path(&vm).exists(), "{}", cleanup.explain);

    run_agent(&vm, &strs(&backup_args(&vm))).assert_code(0);
}

/// A journal naming a job that is no longer on the VM (removed by a deploy since the run
/// died): cleanup unlocks the rest, says that job cannot be unlocked (exit 8), and leaves no
/// journal behind, so the next backup is not refused for a job that is not there.
#[test]
fn cleanup_reports_a_locked_job_that_is_gone_and_leaves_no_journal() {
    let vm = Vm::with_identity("acme", "backend");
    vm.job("a")
        .recording("pre-backup-lock")
        .recording("backup")
        .script("post-backup-unlock", UNLOCK_RECORDING);
    let journal = [
        r#"{"run":{"pid":4000000,"command":"bbr-agent backup"}}"#,
        r#"{"locking":{"jobs":["gone","a"],"lock":"pre-backup-lock"}}"#,
    ]
    .join("\n");
    common::write_file(&journal_path(&vm), format!("{journal}\n").as_bytes());

    let cleanup = run_agent(&vm, &["backup-cleanup"]);
    cleanup
        .assert_code(8)
        .assert_stderr_contains("the journal records gone as locked")
        .assert_stderr_contains("job 'gone' is not a BBR job on this instance");
    assert_eq!(
        vm.calls(),
        ["a post-backup-unlock false"],
        "{}",
        cleanup.explain
    );
    assert!(!journal_path(&vm).exists(), "{}", cleanup.explain);
    run_agent(&vm, &strs(&backup_args(&vm))).assert_code(0);
}

/// A deployment run whose agents were killed with SIGKILL (the VMs' power, say; not the
/// driver, whose death the agents survive and clean up after): the journals name the
/// deployment's cleanup command, and a new run, deployment or local, says exactly that one.
#[test]
fn after_its_agents_are_killed_a_deployment_run_is_refused_naming_the_deployments_cleanup() {
    let pids_dir = tempfile::tempdir().unwrap();
    let pids = Survivors::new(pids_dir.path());
    let fleet = hanging_fleet(&pids);
    let mut driver = driver_mid_backup(&fleet);
    // A script runs (and logs its call) a moment before its agent journals it; the known gap
    // of that moment (docs/reliability.md) is not what this test is about.
    wait_for_running(fleet.vm("db", 0), 2, &driver);
    wait_for_running(fleet.vm("web", 0), 1, &driver);
    let db_agent = pids.pid("first-agent");
    for job in ["first", "web"] {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pids.pid(&format!("{job}-agent"))),
            Signal::SIGKILL,
        )
        .unwrap();
    }
    let exit = driver.wait(driver.started.elapsed() + Duration::from_secs(8));
    assert_ne!(
        exit.code,
        Some(0),
        "the backup failed
{}",
        exit.explain
    );
    let calls_before = fleet.calls();
    assert!(
        of_script(&calls_before, "post-backup-unlock").is_empty(),
        "no agent lived to unlock
{}",
        exit.explain
    );

    let inventory = fleet.local_inventory();
    let command = format!(
        "run `bbr-agent deployment --inventory {} backup-cleanup` first",
        inventory.display()
    );
    let refused = fleet.backup(&inventory, &[]);
    refused
        .assert_code(1)
        .assert_stderr_contains(&format!(
            "db/0: a run that was killed (pid {db_agent}, started "
        ))
        .assert_stderr_contains("first locked, second locked")
        .assert_stderr_contains(&command);
    let local = run_agent(fleet.vm("db", 0), &strs(&backup_args(fleet.vm("db", 0))));
    local.assert_code(1).assert_stderr_contains(&command);
    assert_eq!(fleet.calls(), calls_before, "refusals change nothing");

    let cleanup = fleet.driver(&inventory, &["backup-cleanup"]);
    cleanup.assert_success();
    let explain = || cleanup.explain();
    assert_backup_scripts_gone(&pids, &FLEET_JOBS, &explain);
    let mut unlocks = of_script(&fleet.calls(), "post-backup-unlock");
    unlocks.sort();
    assert_eq!(
        unlocks,
        [
            "db/0 first post-backup-unlock false",
            "db/0 second post-backup-unlock false",
            "web/0 web post-backup-unlock false"
        ],
        "{}",
        cleanup.explain()
    );
}

// ---------------------------------------------------------------------------------------
// 4. Two runs at once on one VM.
// ---------------------------------------------------------------------------------------

#[test]
fn a_second_run_on_a_busy_vm_is_refused_at_once_naming_the_holder_and_changes_nothing() {
    let (vm, pids) = hanging_vm();
    // A backup to restore from, made before the backup scripts hang.
    for job in ["api", "db"] {
        vm.job(job).script(
            "backup",
            "echo \"$ME\" >> \"$LOG\"\necho data > \"${BBR_ARTIFACT_DIRECTORY}data\"",
        );
        vm.job(job).recording("restore");
    }
    run_agent(&vm, &strs(&backup_args(&vm))).assert_code(0);
    let artifact = vm.artifact_dir();
    for job in ["api", "db"] {
        vm.job(job).script("backup", &hanging_backup(&pids, job));
    }
    fs::write(vm.log_path(), "").unwrap();

    let holding = vm.dir.path().join("holding");
    fs::create_dir_all(&holding).unwrap();
    let holder = Spawned::on(
        &vm,
        &["backup", "--artifact-path", holding.to_str().unwrap()],
    );
    wait_for_calls(&vm.log_path(), &["api backup", "db backup"], &holder);
    wait_for_running(&vm, 2, &holder);
    let calls = vm.calls();
    let store = tree(&vm.store());
    let journal = fs::read(journal_path(&vm)).unwrap();
    let elsewhere = vm.dir.path().join("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();

    let attempts: [Vec<&str>; 3] = [
        vec!["backup", "--artifact-path", elsewhere.to_str().unwrap()],
        vec!["backup-cleanup"],
        vec!["restore", "--artifact-path", artifact.to_str().unwrap()],
    ];
    for args in attempts {
        let refused = run_agent(&vm, &args);
        refused
            .assert_code(1)
            .assert_stderr_contains("another bbr-agent run holds this VM")
            .assert_stderr_contains(&format!("pid {}", holder.pid()))
            .assert_stderr_contains(&format!(
                "--root {} backup --artifact-path {}",
                vm.root().display(),
                holding.display()
            ));
        assert!(
            refused.took < Duration::from_secs(3),
            "refused at once, not after waiting\n{}",
            refused.explain
        );
        assert_eq!(vm.calls(), calls, "no script ran\n{}", refused.explain);
        assert_eq!(
            tree(&vm.store()),
            store,
            "the store is untouched\n{}",
            refused.explain
        );
        assert_eq!(
            fs::read(journal_path(&vm)).unwrap(),
            journal,
            "{}",
            refused.explain
        );
        assert_eq!(
            fs::read_dir(&elsewhere).unwrap().count(),
            0,
            "no artifact directory made\n{}",
            refused.explain
        );
    }
    assert!(
        group_alive(pids.pid("api-backup")) && group_alive(pids.pid("db-backup")),
        "the holder's scripts run on"
    );

    // Reading is not running: list and plan work meanwhile.
    let list = run_agent(&vm, &["list", "--json"]);
    list.assert_code(0);
    let names: Vec<String> = list.json()["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["api", "db"], "{}", list.explain);
    let plan = run_agent(&vm, &["plan", "backup"]);
    plan.assert_code(0);
    assert!(plan.stdout.contains("api"), "{}", plan.explain);
    assert_eq!(vm.calls(), calls);
}

// ---------------------------------------------------------------------------------------
// 5. The driver vanishes (local serve transport; tests/faults_ssh.rs does it through sshd).
// ---------------------------------------------------------------------------------------

const FLEET_JOBS: [&str; 3] = ["first", "second", "web"];

/// `db/0` with `first` (locked before `second`) and `second`; `web/0` with `web`. Every job
/// locks and unlocks with a record in the fleet log, and has a hanging backup that also
/// records its agent's pid (`$PPID`: the script's parent is `serve`) as `pids/<job>-agent`.
fn hanging_fleet(pids: &Survivors) -> Fleet {
    let mut fleet = Fleet::new();
    fleet.add("db", 0);
    fleet.add("web", 0);
    for (group, job) in [("db", "first"), ("db", "second"), ("web", "web")] {
        fleet
            .vm(group, 0)
            .job(job)
            .recording("pre-backup-lock")
            .script("post-backup-unlock", UNLOCK_RECORDING)
            .script(
                "backup",
                &format!(
                    "echo $PPID > '{agent}'\n{}",
                    hanging_backup(pids, job),
                    agent = pids.file(&format!("{job}-agent")).display()
                ),
            );
    }
    fleet
        .vm("db", 0)
        .job("first")
        .metadata(&metadata_before("second"));
    fleet
}

/// Starts `deployment backup` over the local `serve` transport and waits until every backup
/// script hangs.
fn driver_mid_backup(fleet: &Fleet) -> Spawned {
    let inventory = fleet.local_inventory();
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
    wait_for_calls(
        &fleet.log_path(),
        &[
            "db/0 first backup",
            "db/0 second backup",
            "web/0 web backup",
        ],
        &driver,
    );
    driver
}

/// Within `limit`: every job unlocked exactly once, told the backup failed (reverse lock order
/// on db/0), every agent exited, every backup script's process group ended, no store and no
/// journal left.
fn assert_every_vm_unlocked_itself(fleet: &Fleet, pids: &Survivors, limit: Duration, extra: &str) {
    let expected = [
        "db/0 first post-backup-unlock false",
        "db/0 second post-backup-unlock false",
        "web/0 web post-backup-unlock false",
    ];
    let since = Instant::now();
    let done = eventually(limit, || {
        let calls = fleet.calls();
        expected.iter().all(|e| calls.iter().any(|c| c == e))
            && FLEET_JOBS
                .iter()
                .all(|j| !alive(pids.pid(&format!("{j}-agent"))))
    });
    let explain = || {
        format!(
            "calls: {:#?}\n{extra}\n--- files ---\n{}",
            fleet.calls(),
            listing(fleet.dir.path())
        )
    };
    assert!(
        done,
        "within {limit:?} every agent should have unlocked its jobs and exited\n{}",
        explain()
    );
    assert!(
        since.elapsed() < limit + Duration::from_secs(1),
        "{}",
        explain()
    );
    assert_backup_scripts_gone(pids, &FLEET_JOBS, &explain);
    let calls = fleet.calls();
    let unlocks = of_script(&calls, "post-backup-unlock");
    assert_eq!(unlocks.len(), 3, "each job unlocked once\n{}", explain());
    let at = |l: &str| calls.iter().position(|c| c == l).unwrap();
    assert!(
        at("db/0 second post-backup-unlock false") < at("db/0 first post-backup-unlock false"),
        "reverse lock order on db/0\n{}",
        explain()
    );
    for (group, vm) in [("db", fleet.vm("db", 0)), ("web", fleet.vm("web", 0))] {
        assert!(!vm.store().exists(), "{group}/0's store\n{}", explain());
        assert!(
            !journal_path(vm).exists(),
            "{group}/0's journal\n{}",
            explain()
        );
    }
}

/// The driver killed outright: each agent's input ends (EOF) and everything it writes to the
/// driver fails (a broken pipe, on stdout and on stderr, where its own warnings go).
#[test]
fn when_the_driver_is_killed_every_vm_ends_its_scripts_unlocks_and_removes_its_store() {
    let pids_dir = tempfile::tempdir().unwrap();
    let pids = Survivors::new(pids_dir.path());
    let fleet = hanging_fleet(&pids);
    let mut driver = driver_mid_backup(&fleet);
    // Only the driver: its sessions' agents must notice by themselves.
    driver.signal(Signal::SIGKILL);
    driver.wait(Duration::from_secs(5));
    assert_every_vm_unlocked_itself(&fleet, &pids, Duration::from_secs(5), "");
}

/// SIGHUP to every `serve` while its driver stays (what a dropped SSH session with a
/// terminal delivers): each agent ends its scripts and unlocks, and the driver ends too.
#[test]
fn sighup_to_every_serve_agent_mid_backup_unlocks_every_vm() {
    let pids_dir = tempfile::tempdir().unwrap();
    let pids = Survivors::new(pids_dir.path());
    let fleet = hanging_fleet(&pids);
    let mut driver = driver_mid_backup(&fleet);
    for job in ["first", "web"] {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pids.pid(&format!("{job}-agent"))),
            Signal::SIGHUP,
        )
        .unwrap();
    }
    let exit = driver.wait(driver.started.elapsed() + Duration::from_secs(6));
    assert_ne!(exit.code, Some(0), "the backup failed\n{}", exit.explain);
    assert_every_vm_unlocked_itself(&fleet, &pids, Duration::from_secs(3), &exit.explain);
}

/// SIGTERM to the driver alone (a CI job's timeout, `kill <pid>`): it must not sit waiting
/// for backup scripts that may never end while every VM stays locked.
#[test]
fn sigterm_to_the_driver_mid_backup_unlocks_every_vm_and_exits_143() {
    let pids_dir = tempfile::tempdir().unwrap();
    let pids = Survivors::new(pids_dir.path());
    let fleet = hanging_fleet(&pids);
    let mut driver = driver_mid_backup(&fleet);
    driver.signal(Signal::SIGTERM);
    let exit = driver.wait(driver.started.elapsed() + Duration::from_secs(6));
    exit.assert_code(143);
    assert_every_vm_unlocked_itself(&fleet, &pids, Duration::from_secs(3), &exit.explain);
}

/// Ctrl-C (SIGINT) to the driver mid-backup (issue 18): the sessions end at once, so each
/// VM's agent unlocks what it locked. The console says that, one line per VM, and blames no
/// script: no unlock FAILED, no "cannot reach" error; the interruption is the last error before
/// the cleanup command, and the report's exit code is the process's.
#[test]
fn sigint_to_the_driver_mid_backup_says_each_agent_unlocks_and_names_the_cleanup_last() {
    let pids_dir = tempfile::tempdir().unwrap();
    let pids = Survivors::new(pids_dir.path());
    let fleet = hanging_fleet(&pids);
    let mut driver = driver_mid_backup(&fleet);
    driver.signal(Signal::SIGINT);
    let exit = driver.wait(driver.started.elapsed() + Duration::from_secs(6));
    exit.assert_code(130);
    assert_every_vm_unlocked_itself(&fleet, &pids, Duration::from_secs(3), &exit.explain);
    assert_driver_left_the_unlocks_to_the_agents(&exit, &["db/0", "web/0"], "backup-cleanup");

    let reports: Vec<PathBuf> = fs::read_dir(fleet.artifacts())
        .unwrap()
        .map(|e| e.unwrap().path().join("report.html"))
        .collect();
    assert_eq!(reports.len(), 1, "one artifact directory\n{}", exit.explain);
    let html = fs::read_to_string(&reports[0]).unwrap();
    assert!(
        html.contains("exit code 130"),
        "the report gives the process's exit code\n{html}"
    );
}

// ---------------------------------------------------------------------------------------
// 6. Tampered script files, as root.
// ---------------------------------------------------------------------------------------

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A VM with a good job and a job `tampered`, all with recording scripts; `tamper` then
/// changes one of `tampered`'s files and returns the path it changed and why it is refused.
fn assert_tampering_is_refused_before_any_lock(
    tamper: impl FnOnce(&Path) -> (PathBuf, &'static str),
) {
    if !is_root() {
        eprintln!(
            "skipped: the agent checks script ownership and modes only as root (CI runs as root)"
        );
        return;
    }
    let vm = Vm::with_identity("acme", "backend");
    for job in ["good", "tampered"] {
        vm.job(job)
            .recording_locks()
            .script("backup", "echo \"$ME\" >> \"$LOG\"");
    }
    let (path, why) = tamper(&vm.jobs_root().join("tampered"));

    let exit = run_agent(&vm, &strs(&backup_args(&vm)));
    exit.assert_code(1)
        .assert_stderr_contains("job 'tampered'")
        .assert_stderr_contains(&path.display().to_string())
        .assert_stderr_contains(why);
    assert_eq!(
        vm.calls(),
        Vec::<String>::new(),
        "nothing ran, nothing was locked\n{}",
        exit.explain
    );
    assert!(!vm.store().exists(), "{}", exit.explain);

    let list = run_agent(&vm, &["list", "--json"]);
    let json = list.json();
    let tampered = json["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "tampered")
        .unwrap_or_else(|| panic!("list shows the job\n{}", list.explain));
    let error = tampered["metadata_error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&path.display().to_string()) && error.contains(why),
        "list shows the refusal for the job: {error:?}\n{}",
        list.explain
    );
    assert_eq!(list.code, Some(1), "{}", list.explain);
    assert_eq!(vm.calls(), Vec::<String>::new(), "{}", list.explain);
}

#[test]
fn a_group_writable_script_is_refused_before_any_lock() {
    assert_tampering_is_refused_before_any_lock(|job| {
        let script = job.join("bin/bbr/backup");
        fs::set_permissions(&script, fs::Permissions::from_mode(0o775)).unwrap();
        (script, "writable by group or others (mode 0775)")
    });
}

#[test]
fn a_world_writable_bin_bbr_directory_is_refused_before_any_lock() {
    assert_tampering_is_refused_before_any_lock(|job| {
        let dir = job.join("bin/bbr");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        (dir, "writable by group or others (mode 0777)")
    });
}

#[test]
fn a_script_owned_by_another_user_is_refused_before_any_lock() {
    assert_tampering_is_refused_before_any_lock(|job| {
        let script = job.join("bin/bbr/post-backup-unlock");
        std::os::unix::fs::chown(&script, Some(65534), None).unwrap();
        (script, "owned by uid 65534, not root")
    });
}

/// A job directory that is a symlink into a directory another user owns: that user could
/// swap the target between the check and the run, so the job is refused, naming the
/// directory.
#[test]
fn a_job_symlinked_into_another_users_directory_is_refused_before_any_lock() {
    assert_tampering_is_refused_before_any_lock(|job| {
        let vcap = job.parent().unwrap().parent().unwrap();
        let evil = vcap.join("data/home/evil");
        fs::create_dir_all(&evil).unwrap();
        std::os::unix::fs::chown(&evil, Some(65534), None).unwrap();
        let target = evil.join("tampered");
        fs::rename(job, &target).unwrap();
        std::os::unix::fs::symlink(&target, job).unwrap();
        (evil, "is owned by uid 65534, not root")
    });
}

/// Every directory up to `/` is judged, not only those up to the jobs root: a group-writable
/// one above it refuses every job. A sticky one owned by root (as `/tmp`) is accepted: only
/// root may swap what lies in it.
#[test]
fn a_group_writable_directory_above_the_jobs_root_is_refused_and_a_sticky_one_is_not() {
    if !is_root() {
        eprintln!("skipped: the agent checks ownership and modes only as root (CI runs as root)");
        return;
    }
    let vm = Vm::with_identity("acme", "backend");
    vm.job("good")
        .recording_locks()
        .script("backup", "echo \"$ME\" >> \"$LOG\"");
    let vcap = vm.root().join("var/vcap");
    fs::set_permissions(&vcap, fs::Permissions::from_mode(0o775)).unwrap();
    let exit = run_agent(&vm, &strs(&backup_args(&vm)));
    exit.assert_code(1)
        .assert_stderr_contains("job 'good'")
        .assert_stderr_contains(&format!(
            "{} is writable by group or others (mode 0775)",
            vcap.display()
        ));
    assert_eq!(vm.calls(), Vec::<String>::new(), "{}", exit.explain);
    assert!(!vm.store().exists(), "{}", exit.explain);

    fs::set_permissions(&vcap, fs::Permissions::from_mode(0o1777)).unwrap();
    run_agent(&vm, &strs(&backup_args(&vm))).assert_code(0);
    assert!(
        vm.calls().contains(&"good backup".to_string()),
        "{:?}",
        vm.calls()
    );
}

/// A script replaced after the check (here by the job's own metadata script, the only
/// writer a trusted path leaves: root) is not run: the file started must be the one judged.
/// The job's lock and unlock still run; the backup fails, naming the script.
#[test]
fn a_script_replaced_between_the_check_and_its_run_is_not_run() {
    if !is_root() {
        eprintln!("skipped: the agent checks scripts only as root (CI runs as root)");
        return;
    }
    let vm = Vm::with_identity("acme", "backend");
    let job = vm.job("swapped");
    job.recording_locks()
        .script("backup", "echo \"$ME\" >> \"$LOG\"");
    let backup = job.dir.join("bin/bbr/backup");
    let impostor = job.dir.join("bin/bbr/.impostor");
    fs::write(&impostor, "#!/bin/sh\necho impostor >> \"$0.ran\"\n").unwrap();
    fs::set_permissions(&impostor, fs::Permissions::from_mode(0o755)).unwrap();
    job.script(
        "metadata",
        &format!("mv '{}' '{}'", impostor.display(), backup.display()),
    );
    let exit = run_agent(&vm, &strs(&backup_args(&vm)));
    assert_ne!(exit.code, Some(0), "{}", exit.explain);
    let all = format!("{}\n{}", exit.stdout, exit.stderr);
    assert!(
        all.contains(&backup.display().to_string()) && all.contains("replaced or changed since"),
        "the failure names the replaced script\n{}",
        exit.explain
    );
    assert!(
        !job.dir.join("bin/bbr/backup.ran").exists(),
        "the replacing script ran\n{}",
        exit.explain
    );
    assert_eq!(
        vm.calls(),
        ["swapped pre-backup-lock", "swapped post-backup-unlock"],
        "{}",
        exit.explain
    );
}

// ---------------------------------------------------------------------------------------
// 7. A metadata script that prints 5 MiB.
// ---------------------------------------------------------------------------------------

#[test]
fn metadata_printing_5_mib_is_an_error_naming_the_job_before_any_lock() {
    let vm = Vm::with_identity("acme", "backend");
    for job in ["quiet", "chatty"] {
        vm.job(job)
            .recording_locks()
            .script("backup", "echo \"$ME\" >> \"$LOG\"");
    }
    vm.job("chatty").script(
        "metadata",
        "echo 'backup_should_be_locked_before:'\n\
         head -c 5242880 /dev/zero | tr '\\0' 'x'\n\
         echo",
    );
    let exit = run_agent(&vm, &strs(&backup_args(&vm)));
    exit.assert_code(1)
        .assert_stderr_contains("chatty")
        .assert_stderr_contains("larger than");
    assert_eq!(
        vm.calls(),
        Vec::<String>::new(),
        "nothing was locked\n{}",
        exit.explain
    );
    assert!(!vm.store().exists(), "{}", exit.explain);
    assert!(
        exit.took < Duration::from_secs(5),
        "took {:?}\n{}",
        exit.took,
        exit.explain
    );
    assert!(
        exit.stderr.len() < 64 * 1024,
        "a clear error, not the flood: stderr is {} bytes",
        exit.stderr.len()
    );
}

// ---------------------------------------------------------------------------------------
// 8. Secrets in the agent's own environment.
// ---------------------------------------------------------------------------------------

const SECRET: &str = "s3cr3t-value";

/// Every backup-side script of `job` writes its environment to `<env_dir>/<job>.<script>` and
/// prints it (so `-v` streams it).
fn env_dumping_job(vm: &Vm, job: &str, env_dir: &Path) {
    let j = vm.job(job);
    for script in [
        "metadata",
        "pre-backup-lock",
        "backup",
        "post-backup-unlock",
    ] {
        let file = env_dir.join(format!("{job}.{script}"));
        let print = if script == "metadata" { "" } else { "env\n" };
        j.script(
            script,
            &format!(
                "env > '{file}'\n{print}echo \"$ME\" >> \"$LOG\"",
                file = file.display()
            ),
        );
    }
}

/// Every file under `dir` that holds `needle`.
fn files_holding(dir: &Path, needle: &str) -> Vec<String> {
    tree(dir)
        .into_iter()
        .filter(|(_, bytes)| String::from_utf8_lossy(bytes).contains(needle))
        .map(|(path, _)| path)
        .collect()
}

fn assert_no_secret(dir: &Path, env_dir: &Path, exit: &Exit, scripts: usize) {
    let dumps = fs::read_dir(env_dir).unwrap().count();
    assert_eq!(
        dumps, scripts,
        "every script dumped its environment\n{}",
        exit.explain
    );
    assert!(
        !exit.stdout.contains(SECRET) && !exit.stderr.contains(SECRET),
        "the secret reached the agent's output\n{}",
        exit.explain
    );
    assert_eq!(
        files_holding(dir, SECRET),
        Vec::<String>::new(),
        "no file (script environments, journal, lock, artifact) holds the secret\n{}",
        exit.explain
    );
}

#[test]
fn a_secret_in_the_agents_environment_reaches_no_script_and_no_output() {
    let vm = Vm::with_identity("acme", "backend");
    let env_dir = vm.dir.path().join("env");
    fs::create_dir_all(&env_dir).unwrap();
    env_dumping_job(&vm, "db", &env_dir);
    let mut args = vec!["-v".to_string()];
    args.extend(backup_args(&vm));
    let exit = Spawned::on_with(
        &vm,
        &strs(&args),
        &[
            ("BBR_AGENT_LOG", "trace"),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
        ],
    )
    .wait(Duration::from_secs(10));
    exit.assert_code(0);
    assert!(
        ["bbr-agent: info:", "bbr-agent: debug:", "bbr-agent: trace:"]
            .iter()
            .any(|level| exit.stderr.contains(level)),
        "BBR_AGENT_LOG=trace took effect (else this test proves less)\n{}",
        exit.explain
    );
    assert!(
        exit.stderr.contains("PATH="),
        "-v streamed the scripts' env output\n{}",
        exit.explain
    );
    assert_no_secret(vm.dir.path(), &env_dir, &exit, 4);
}

#[test]
fn a_secret_in_the_drivers_environment_reaches_no_script_and_no_output() {
    let mut fleet = Fleet::new();
    let env_dir = fleet.dir.path().join("env");
    fs::create_dir_all(&env_dir).unwrap();
    env_dumping_job(fleet.add("db", 0), "db", &env_dir);
    let inventory = fleet.local_inventory();
    let exit = Spawned::start(
        fleet.dir.path(),
        &[
            "-v".into(),
            "deployment".into(),
            "--inventory".into(),
            inventory.display().to_string(),
            "backup".into(),
            "--artifact-path".into(),
            fleet.artifacts().display().to_string(),
        ],
        &[
            ("BBR_AGENT_LOG", "trace"),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
        ],
    )
    .wait(Duration::from_secs(10));
    exit.assert_code(0);
    assert_no_secret(fleet.dir.path(), &env_dir, &exit, 4);
}

/// A VM whose lock marks its job locked (a file beside the unlock script, which the unlock
/// removes) and then runs `then_to_unlock` on the unlock script's path (`$U`); returns the
/// VM and the marker.
fn vm_whose_lock_then_touches_its_unlock(then_to_unlock: &str) -> (Vm, PathBuf) {
    let vm = Vm::with_identity("acme", "backend");
    let job = vm.job("db");
    job.script("backup", "echo \"$ME\" >> \"$LOG\"");
    job.script("post-backup-unlock", "rm -f \"$0.locked\"");
    let unlock = job.dir.join("bin/bbr/post-backup-unlock");
    job.script(
        "pre-backup-lock",
        &format!(
            "U='{}'; touch \"$U.locked\"; {then_to_unlock}",
            unlock.display()
        ),
    );
    let marker = job.dir.join("bin/bbr/post-backup-unlock.locked");
    (vm, marker)
}

/// An unlock script that cannot be started (here the re-check before its spawn refuses it:
/// its content changed after the run's first script) has unlocked nothing: the journal keeps
/// the job as locked, so the next backup is refused and names the cleanup, instead of
/// locking a job that is still locked.
#[test]
fn an_unlock_that_never_started_is_not_recorded_as_attempted() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the agent checks scripts only as root");
        return;
    }
    let (vm, marker) = vm_whose_lock_then_touches_its_unlock("echo '# changed' >> \"$U\"");
    let exit = run_agent(&vm, &strs(&backup_args(&vm)));
    assert_eq!(exit.code, Some(8), "{}", exit.explain);
    assert!(
        marker.exists(),
        "the unlock did not run, so the job is still locked\n{}",
        exit.explain
    );
    assert!(
        journal_path(&vm).exists(),
        "the job is still locked, yet the journal no longer records it\n{}",
        exit.explain
    );
    run_agent(&vm, &strs(&backup_args(&vm)))
        .assert_code(1)
        .assert_stderr_contains("left db locked")
        .assert_stderr_contains("backup-cleanup");
}

/// A chmod that leaves an unlock script as trusted as it was (a redeploy sets the same
/// modes) does not keep the unlock from running.
#[test]
fn an_unlock_chmodded_to_the_same_mode_mid_run_still_runs() {
    let (vm, marker) = vm_whose_lock_then_touches_its_unlock(
        "chmod 0755 \"$U\"; chown 0:0 \"$U\" 2>/dev/null; true",
    );
    let exit = run_agent(&vm, &strs(&backup_args(&vm)));
    exit.assert_code(0);
    assert!(!marker.exists(), "the unlock did not run\n{}", exit.explain);
}
