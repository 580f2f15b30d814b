//! Script timeouts (docs/behaviour.md, "Running a script"): on expiry the script's whole process group gets SIGTERM,
//! then SIGKILL after the grace period, and the workflow goes down its failure path, so unlock
//! still runs. A script that leaves a daemon holding its output open does not hang the run.
//!
//! Every process a test starts writes its pid to a file under `<vm>/pids`; a [`Survivors`] guard
//! kills whatever is left of them when the test ends, passed or failed.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use common::{AGENT, Run, Vm};

/// Kills every process whose pid file is under `dir` when dropped.
struct Survivors {
    dir: PathBuf,
}

impl Survivors {
    fn new(vm: &Vm) -> Survivors {
        let dir = vm.dir.path().join("pids");
        fs::create_dir_all(&dir).unwrap();
        Survivors { dir }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The pid a script wrote to `<pids>/<name>`.
    fn pid(&self, name: &str, run: &Run) -> i32 {
        read_pid(&self.file(name))
            .unwrap_or_else(|| panic!("the script wrote no pid to pids/{name}\n{}", run.explain()))
    }
}

impl Drop for Survivors {
    fn drop(&mut self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            if let Some(pid) = read_pid(&entry.path())
                && alive(pid)
            {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `kill -0`, except that a zombie counts as gone: it has ended and only waits for whoever
/// inherited it (init, in a container maybe nobody) to reap it.
fn alive(pid: i32) -> bool {
    if kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z'),
        Err(_) => false,
    }
}

/// Whether `pid` is gone, allowing a moment for a signal already sent to land.
fn gone_soon(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(1);
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
    true
}

fn assert_gone(survivors: &Survivors, names: &[&str], run: &Run) {
    for name in names {
        let pid = survivors.pid(name, run);
        assert!(
            gone_soon(pid),
            "process {name} (pid {pid}) outlived the agent\n{}",
            run.explain()
        );
    }
}

/// How long any agent run here may take before the test's watchdog kills it: a broken
/// timeout must fail the test, not hang it.
const WATCHDOG_SECS: u32 = 20;

/// Runs the agent under a watchdog (`timeout -s KILL`) and measures how long it took.
fn timed(vm: &Vm, args: &[&str]) -> (Run, Duration) {
    timed_with(vm, args, &[])
}

/// `timed`, with these variables added to the agent's environment.
fn timed_with(vm: &Vm, args: &[&str], env: &[(&str, &str)]) -> (Run, Duration) {
    let started = Instant::now();
    let mut command = Command::new("timeout");
    command
        .args(["-s", "KILL", &WATCHDOG_SECS.to_string(), AGENT, "--root"])
        .arg(vm.root())
        .args(args)
        .envs(env.iter().copied())
        .current_dir(vm.dir.path());
    let run = Run::of(&mut command, vm.dir.path());
    assert_ne!(
        run.code,
        Some(137),
        "the agent hung: the watchdog killed it after {WATCHDOG_SECS}s\n{}",
        run.explain()
    );
    (run, started.elapsed())
}

fn backup_args(vm: &Vm, extra: &[&'static str]) -> Vec<String> {
    let mut args = vec![
        "backup".to_string(),
        "--artifact-path".to_string(),
        vm.artifacts().display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

const QUICK: [&str; 4] = ["--script-timeout", "1s", "--kill-grace", "1s"];

fn metadata_before(job: &str) -> String {
    format!(
        "backup_should_be_locked_before:\n- job_name: {job}\n  release: r\n\
         restore_should_be_locked_before:\n- job_name: {job}\n  release: r"
    )
}

/// api (locked first) and db, each with recording scripts and a backup that writes a file.
fn two_job_vm() -> Vm {
    let vm = Vm::with_identity("acme", "backend");
    for name in ["api", "db"] {
        vm.job(name)
            .recording_locks()
            .script(
                "post-backup-unlock",
                "echo \"$ME $BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL\" >> \"$LOG\"",
            )
            .script(
                "backup",
                "echo \"$ME\" >> \"$LOG\"\necho data > \"${BBR_ARTIFACT_DIRECTORY}data\"",
            )
            .script("restore", "echo \"$ME\" >> \"$LOG\"");
    }
    vm.job("api").metadata(&metadata_before("db"));
    vm
}

fn of_script(calls: &[String], script: &str) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c.split(' ').nth(1) == Some(script))
        .cloned()
        .collect()
}

fn assert_says_timed_out(run: &Run, job_script: &str) {
    let all = format!("{}\n{}", run.stdout, run.stderr);
    assert!(
        all.lines()
            .any(|l| l.contains(job_script) && l.contains("timed out")),
        "no message says {job_script} timed out\n{}",
        run.explain()
    );
}

#[test]
fn a_hung_lock_has_its_whole_process_group_ended_and_unlock_still_runs() {
    let vm = two_job_vm();
    let survivors = Survivors::new(&vm);
    vm.job("api").script(
        "pre-backup-lock",
        &format!(
            "echo \"$ME\" >> \"$LOG\"\n\
             echo $$ > '{script}'\n\
             sleep 300 &\n\
             echo $! > '{sleeper}'\n\
             sh -c 'trap \"\" TERM; exec sleep 300' &\n\
             echo $! > '{stubborn}'\n\
             wait",
            script = survivors.file("script").display(),
            sleeper = survivors.file("sleeper").display(),
            stubborn = survivors.file("stubborn").display(),
        ),
    );

    let (run, took) = timed(&vm, &as_strs(&backup_args(&vm, &QUICK)));
    run.assert_code(4);
    assert_says_timed_out(&run, "api pre-backup-lock");
    assert_gone(&survivors, &["script", "sleeper", "stubborn"], &run);

    let calls = vm.calls();
    assert!(
        of_script(&calls, "backup").is_empty(),
        "no backup after a failed lock: {calls:?}\n{}",
        run.explain()
    );
    assert_eq!(
        of_script(&calls, "post-backup-unlock"),
        [
            "db post-backup-unlock false",
            "api post-backup-unlock false"
        ],
        "{}",
        run.explain()
    );
    assert!(!vm.store().exists(), "{}", run.explain());
    assert!(
        took < Duration::from_secs(8),
        "1s timeout + 1s grace took {took:?}\n{}",
        run.explain()
    );
}

/// The processes whose command line is `sleep <seconds>`, from /proc.
fn sleeping(seconds: &str) -> Vec<i32> {
    let want = format!("sleep\0{seconds}\0");
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want.as_bytes())
                && alive(*pid)
        })
        .collect()
}

/// Turns the agent's cgroup per script off: it follows the process tree alone.
const NO_CGROUPS: (&str, &str) = ("BBR_AGENT_CGROUPS", "off");

/// A timed-out lock script's children that left its process group with `setsid` are ended
/// with it: one whose parent is still the script, and one orphaned by a subshell that
/// exited at once (reparented to the agent, a child subreaper). Judged from /proc. With a
/// cgroup per script (where the host lets the agent make them) and without.
#[test]
fn a_timed_out_lock_scripts_setsid_children_are_ended_too() {
    for env in [&[][..], &[NO_CGROUPS][..]] {
        a_timed_out_lock_scripts_setsid_children_are_ended_with(env);
    }
}

fn a_timed_out_lock_scripts_setsid_children_are_ended_with(env: &[(&str, &str)]) {
    let vm = two_job_vm();
    let survivors = Survivors::new(&vm);
    vm.job("api").script(
        "pre-backup-lock",
        &format!(
            "echo \"$ME\" >> \"$LOG\"\n\
             setsid sleep 313 &\n\
             echo $! > '{child}'\n\
             (setsid sleep 314 & echo $! > '{orphan}')\n\
             sleep 300",
            child = survivors.file("child").display(),
            orphan = survivors.file("orphan").display(),
        ),
    );

    let (run, _) = timed_with(&vm, &as_strs(&backup_args(&vm, &QUICK)), env);
    run.assert_code(4);
    assert_says_timed_out(&run, "api pre-backup-lock");
    assert_gone(&survivors, &["child", "orphan"], &run);
    for seconds in ["313", "314"] {
        assert_eq!(
            sleeping(seconds),
            Vec::<i32>::new(),
            "a `sleep {seconds}` the lock script started outlived it\n{}",
            run.explain()
        );
    }
    assert_eq!(
        of_script(&vm.calls(), "post-backup-unlock"),
        [
            "db post-backup-unlock false",
            "api post-backup-unlock false"
        ],
        "{}",
        run.explain()
    );
}

/// Where the host lets the agent make a cgroup per script, what a timed-out script orphaned
/// is ended even while other scripts run beside it (backups run all at once), and their own
/// orphans are not: the cgroup says whose each process is.
#[test]
fn with_a_cgroup_per_script_a_concurrent_scripts_orphan_is_told_apart() {
    let vm = two_job_vm();
    let survivors = Survivors::new(&vm);
    let cgroup = vm.dir.path().join("cgroup");
    vm.job("api").script(
        "backup",
        &format!(
            "echo \"$ME\" >> \"$LOG\"\n\
             grep '^0::' /proc/self/cgroup > '{cgroup}'\n\
             (setsid sleep 318 > /dev/null 2>&1 & echo $! > '{daemon}')\n\
             sleep 300",
            cgroup = cgroup.display(),
            daemon = survivors.file("daemon").display(),
        ),
    );
    vm.job("db").script(
        "backup",
        &format!(
            "echo \"$ME\" >> \"$LOG\"\n\
             (setsid sleep 319 > /dev/null 2>&1 & echo $! > '{kept}')\n\
             echo data > \"${{BBR_ARTIFACT_DIRECTORY}}data\"",
            kept = survivors.file("kept").display(),
        ),
    );
    let args = backup_args(&vm, &["--timeout", "backup=1s", "--kill-grace", "1s"]);
    let (run, _) = timed(&vm, &as_strs(&args));
    let line = fs::read_to_string(&cgroup).unwrap_or_default();
    if !line.contains("/bbr-agent-") {
        eprintln!("skipped: no cgroup per script on this host ({line:?})");
        return;
    }
    run.assert_code(1);
    assert_gone(&survivors, &["daemon"], &run);
    let kept = survivors.pid("kept", &run);
    assert!(
        alive(kept),
        "db's daemon (pid {kept}) was ended with api's backup\n{}",
        run.explain()
    );
}

/// What an earlier lock script left running in a session of its own (a daemon holding its
/// lock) is not taken for the timed-out script's: it outlives the run, as under BBR. With a
/// cgroup per script and without (then the agent tells them apart by the process tree).
#[test]
fn a_daemon_an_earlier_lock_left_is_not_ended_with_a_later_timed_out_lock() {
    for env in [&[][..], &[NO_CGROUPS][..]] {
        a_daemon_an_earlier_lock_left_is_not_ended_with(env);
    }
}

fn a_daemon_an_earlier_lock_left_is_not_ended_with(env: &[(&str, &str)]) {
    let vm = two_job_vm();
    let survivors = Survivors::new(&vm);
    vm.job("api").script(
        "pre-backup-lock",
        &format!(
            "echo \"$ME\" >> \"$LOG\"\n\
             (setsid sleep 315 > /dev/null 2>&1 & echo $! > '{daemon}')",
            daemon = survivors.file("daemon").display(),
        ),
    );
    vm.job("db").script(
        "pre-backup-lock",
        &format!(
            "echo \"$ME\" >> \"$LOG\"\n\
             (setsid sleep 316 & echo $! > '{orphan}')\n\
             sleep 300",
            orphan = survivors.file("orphan").display(),
        ),
    );

    let (run, _) = timed_with(&vm, &as_strs(&backup_args(&vm, &QUICK)), env);
    run.assert_code(4);
    assert_says_timed_out(&run, "db pre-backup-lock");
    assert_gone(&survivors, &["orphan"], &run);
    let daemon = survivors.pid("daemon", &run);
    assert!(
        alive(daemon),
        "api's lock daemon (pid {daemon}) was ended with db's lock\n{}",
        run.explain()
    );
}

#[test]
fn a_script_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let vm = two_job_vm();
    let survivors = Survivors::new(&vm);
    let (term_at, alive_at) = (survivors.file("term-at"), survivors.file("alive-at"));
    vm.job("db").script(
        "backup",
        &format!(
            "echo $$ > '{script}'\n\
             trap 'date +%s%N > \"{term_at}\"; echo \"$ME got TERM\" >> \"$LOG\"' TERM\n\
             echo \"$ME\" >> \"$LOG\"\n\
             while :; do date +%s%N > '{alive_at}.new'; mv '{alive_at}.new' '{alive_at}'; sleep 0.05; done",
            script = survivors.file("script").display(),
            term_at = term_at.display(),
            alive_at = alive_at.display(),
        ),
    );

    let (run, took) = timed(&vm, &as_strs(&backup_args(&vm, &QUICK)));
    run.assert_code(1);
    assert_says_timed_out(&run, "db backup");
    assert_gone(&survivors, &["script"], &run);

    let calls = vm.calls();
    assert!(
        calls.contains(&"db backup got TERM".to_string()),
        "SIGTERM comes first: {calls:?}\n{}",
        run.explain()
    );
    let nanos = |path: &Path| -> i128 {
        fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| panic!("no timestamp in {}\n{}", path.display(), run.explain()))
    };
    // (The loop renames each timestamp into place, so SIGKILL never leaves a half-written one.)
    let survived = Duration::from_nanos((nanos(&alive_at) - nanos(&term_at)).max(0) as u64);
    assert!(
        survived >= Duration::from_millis(700),
        "the script got its grace period after SIGTERM, but was seen alive only {survived:?} after it\n{}",
        run.explain()
    );
    assert!(
        survived < Duration::from_secs(3),
        "SIGKILL came {survived:?} after SIGTERM with a 1s grace\n{}",
        run.explain()
    );
    assert_eq!(
        of_script(&calls, "post-backup-unlock"),
        [
            "db post-backup-unlock false",
            "api post-backup-unlock false"
        ],
        "{}",
        run.explain()
    );
    assert!(
        took < Duration::from_secs(8),
        "took {took:?}\n{}",
        run.explain()
    );
}

#[test]
fn a_daemon_holding_stdout_open_does_not_hang_the_run() {
    let vm = two_job_vm();
    let survivors = Survivors::new(&vm);
    // No timeout at all: the script exits at once, its daemon keeps both pipes open.
    vm.job("db").script(
        "backup",
        &format!(
            "echo \"$ME\" >> \"$LOG\"\n\
             echo data > \"${{BBR_ARTIFACT_DIRECTORY}}data\"\n\
             sleep 300 &\n\
             echo $! > '{daemon}'\n\
             echo 'started a daemon'",
            daemon = survivors.file("daemon").display(),
        ),
    );

    let (run, took) = timed(&vm, &as_strs(&backup_args(&vm, &[])));
    run.assert_success();
    let daemon = survivors.pid("daemon", &run);
    assert!(
        alive(daemon),
        "the daemon was alive while the agent finished (else this test proves nothing)\n{}",
        run.explain()
    );
    assert!(
        took < Duration::from_secs(6),
        "a daemon holding the pipes held the run up for {took:?}\n{}",
        run.explain()
    );
    let tar = vm.artifact_dir().join("backend-0-db.tar");
    assert!(tar.exists(), "{}", run.explain());
}

/// A lock script's helper that keeps writing to the output it inherited keeps running after
/// the script itself exited and the agent stopped waiting for that output: it is not killed
/// by SIGPIPE (a lock held by such a helper must last until the unlock).
#[test]
fn a_chatty_helper_of_a_lock_script_lives_until_the_unlock() {
    let vm = two_job_vm();
    let survivors = Survivors::new(&vm);
    let helper = survivors.file("helper");
    let seen = vm.dir.path().join("helper-seen-by-backup");
    vm.job("db")
        .script(
            "pre-backup-lock",
            &format!(
                "echo \"$ME\" >> \"$LOG\"\n\
                 (while :; do echo held; sleep 0.1; done) &\n\
                 echo $! > '{helper}'",
                helper = helper.display(),
            ),
        )
        // Longer than the 2 s the agent reads a finished script's output for.
        .script(
            "backup",
            &format!(
                "echo \"$ME\" >> \"$LOG\"\n\
                 echo data > \"${{BBR_ARTIFACT_DIRECTORY}}data\"\n\
                 sleep 3\n\
                 if kill -0 \"$(cat '{helper}')\"; then echo alive; else echo dead; fi > '{seen}'",
                helper = helper.display(),
                seen = seen.display(),
            ),
        )
        .script(
            "post-backup-unlock",
            &format!(
                "echo \"$ME $BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL\" >> \"$LOG\"\n\
                 kill \"$(cat '{helper}')\"",
                helper = helper.display(),
            ),
        );

    let (run, _) = timed(&vm, &as_strs(&backup_args(&vm, &[])));
    run.assert_success();
    survivors.pid("helper", &run);
    assert_eq!(
        fs::read_to_string(&seen).unwrap_or_default().trim(),
        "alive",
        "the helper still ran 3 s after its lock script exited\n{}",
        run.explain()
    );
}

#[test]
fn a_hung_pre_restore_lock_is_ended_restore_is_skipped_and_unlock_runs() {
    let vm = two_job_vm();
    let survivors = Survivors::new(&vm);
    timed(&vm, &as_strs(&backup_args(&vm, &[])))
        .0
        .assert_success();
    let artifact = vm.artifact_dir();
    fs::write(vm.log_path(), "").unwrap();
    vm.job("api").script(
        "pre-restore-lock",
        &format!(
            "echo \"$ME\" >> \"$LOG\"\n\
             echo $$ > '{script}'\n\
             sleep 300 &\n\
             echo $! > '{sleeper}'\n\
             wait",
            script = survivors.file("script").display(),
            sleeper = survivors.file("sleeper").display(),
        ),
    );

    let mut args = vec!["restore", "--artifact-path", artifact.to_str().unwrap()];
    args.extend(QUICK);
    let (run, took) = timed(&vm, &args);
    run.assert_code(4);
    assert_says_timed_out(&run, "api pre-restore-lock");
    assert_gone(&survivors, &["script", "sleeper"], &run);
    let calls = vm.calls();
    assert!(
        of_script(&calls, "restore").is_empty(),
        "{calls:?}\n{}",
        run.explain()
    );
    assert_eq!(
        of_script(&calls, "post-restore-unlock"),
        ["db post-restore-unlock", "api post-restore-unlock"],
        "{}",
        run.explain()
    );
    assert!(!vm.store().exists(), "{}", run.explain());
    assert!(took < Duration::from_secs(8), "took {took:?}");
}

#[test]
fn scripts_that_finish_in_time_are_not_affected_by_the_timeout() {
    let vm = two_job_vm();
    vm.job("db").script(
        "backup",
        "echo \"$ME\" >> \"$LOG\"\nsleep 0.3\necho data > \"${BBR_ARTIFACT_DIRECTORY}data\"",
    );
    let (run, _) = timed(&vm, &as_strs(&backup_args(&vm, &QUICK)));
    run.assert_success();
    assert_eq!(
        of_script(&vm.calls(), "post-backup-unlock"),
        ["db post-backup-unlock true", "api post-backup-unlock true"],
        "{}",
        run.explain()
    );
}

/// Where each script of a test appends the `0::` line of its cgroup, to be read back in order.
struct CgroupLog(PathBuf);

impl CgroupLog {
    fn new(vm: &Vm) -> CgroupLog {
        CgroupLog(vm.dir.path().join("cgroups"))
    }

    /// The line of shell that records the running script's cgroup.
    fn record(&self) -> String {
        format!("grep '^0::' /proc/self/cgroup >> '{}'", self.0.display())
    }

    /// The cgroups recorded, in the scripts' order; `None` (the test is skipped) where the
    /// agent makes no cgroup per script.
    fn lines(&self, run: &Run) -> Option<Vec<String>> {
        let lines: Vec<String> = fs::read_to_string(&self.0)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        assert!(!lines.is_empty(), "no script ran\n{}", run.explain());
        if !lines[0].contains("/bbr-agent-") {
            eprintln!("skipped: no cgroup per script on this host ({lines:?})");
            return None;
        }
        Some(lines)
    }
}

/// The directory of the cgroup a `0::<path>` line of `/proc/<pid>/cgroup` names, under the
/// cgroup2 mount of `/proc/self/mountinfo`.
fn cgroup_dir(line: &str) -> Option<PathBuf> {
    let path = line.trim().strip_prefix("0::")?;
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let (root, mount_point) = mountinfo.lines().find_map(|line| {
        let (fields, after) = line.split_once(" - ")?;
        if after.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let fields: Vec<&str> = fields.split_whitespace().collect();
        Some((fields.get(3)?.to_string(), fields.get(4)?.to_string()))
    })?;
    let relative = path.strip_prefix(root.trim_end_matches('/'))?;
    Some(Path::new(&mount_point).join(relative.trim_start_matches('/')))
}

/// A script's cgroup, once empty, is kept for the next script (a fleet's `mkdir` and `rmdir`
/// of one per script were 15% of a session's CPU), never one that a daemon still holds (a
/// timeout of the next script would end the daemon with it), and the agent leaves none
/// behind but the daemon's.
#[test]
fn an_empty_script_cgroup_is_reused_a_daemons_is_not_and_none_is_left_behind() {
    let vm = Vm::with_identity("acme", "backend");
    let survivors = Survivors::new(&vm);
    let cgroups = CgroupLog::new(&vm);
    let record = cgroups.record();
    vm.job("api")
        .script(
            "pre-backup-lock",
            &format!(
                "{record}\n(setsid sleep 314 > /dev/null 2>&1 & echo $! > '{daemon}')",
                daemon = survivors.file("daemon").display(),
            ),
        )
        .script(
            "backup",
            &format!("{record}\necho data > \"${{BBR_ARTIFACT_DIRECTORY}}data\""),
        )
        .script("post-backup-unlock", &record);
    let args = backup_args(&vm, &[]);
    let (run, _) = timed(&vm, &as_strs(&args));
    run.assert_success();
    let Some(lines) = cgroups.lines(&run) else {
        return;
    };
    let [lock, backup, unlock] = &lines[..] else {
        panic!(
            "expected the cgroups of 3 scripts, got {lines:?}\n{}",
            run.explain()
        );
    };
    let held = cgroup_dir(lock).expect("the lock's cgroup directory");
    let kept = cgroup_dir(backup).expect("the backup's cgroup directory");
    // Tidy up, whatever is asserted: the daemon ended, its cgroup and the agent's directory
    // removed once the kernel has emptied it.
    let daemon = survivors.pid("daemon", &run);
    let tidy = || {
        let _ = kill(Pid::from_raw(daemon), Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        while fs::remove_dir(&held).is_err() && held.exists() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        if let Some(agents) = held.parent() {
            let _ = fs::remove_dir(agents);
        }
    };
    let checks = std::panic::catch_unwind(|| {
        assert_ne!(
            lock,
            backup,
            "the backup was born in the cgroup the lock's daemon holds\n{}",
            run.explain()
        );
        assert_eq!(
            backup,
            unlock,
            "the unlock was not born in the backup's cgroup, empty and kept\n{}",
            run.explain()
        );
        assert!(
            !kept.exists(),
            "the agent left its empty cgroup {} behind\n{}",
            kept.display(),
            run.explain()
        );
        assert!(
            held.exists(),
            "the cgroup {} of the lock's daemon (still running) was removed",
            held.display()
        );
    });
    tidy();
    if let Err(panic) = checks {
        std::panic::resume_unwind(panic);
    }
}

/// A script that leaves its cgroup frozen (`cgroup.freeze`) and is ended for its timeout:
/// its cgroup, empty, is not kept for the next script, which would be born frozen and hang.
#[test]
fn a_cgroup_a_script_left_frozen_is_not_given_to_the_next_script() {
    let Some(mount) = cgroup_dir("0::/") else {
        eprintln!("skipped: the cgroup2 mount's root is not / on this host");
        return;
    };
    let vm = Vm::with_identity("acme", "backend");
    let cgroups = CgroupLog::new(&vm);
    let unlocked = vm.dir.path().join("unlocked");
    let record = cgroups.record();
    vm.job("api")
        .script(
            "pre-backup-lock",
            &format!(
                "{record}\n\
                 cg='{mount}'$(sed -n 's/^0:://p' /proc/self/cgroup)\n\
                 echo 1 > \"$cg/cgroup.freeze\"\n\
                 sleep 30",
                mount = mount.display(),
            ),
        )
        .script("backup", "echo data > \"${BBR_ARTIFACT_DIRECTORY}data\"")
        .script(
            "post-backup-unlock",
            &format!("{record}\ntouch '{}'", unlocked.display()),
        );
    let args = backup_args(
        &vm,
        &[
            "--timeout",
            "pre-backup-lock=1s",
            "--timeout",
            "post-backup-unlock=3s",
            "--kill-grace",
            "1s",
        ],
    );
    let (run, _) = timed(&vm, &as_strs(&args));
    let Some(lines) = cgroups.lines(&run) else {
        return;
    };
    run.assert_code(4);
    assert_says_timed_out(&run, "api pre-backup-lock");
    let [lock, unlock] = &lines[..] else {
        panic!(
            "expected the cgroups of the lock and the unlock, got {lines:?}\n{}",
            run.explain()
        );
    };
    assert_ne!(
        lock,
        unlock,
        "the unlock was born in the cgroup the lock left frozen\n{}",
        run.explain()
    );
    assert!(
        unlocked.exists(),
        "the unlock did not run to its end\n{}",
        run.explain()
    );
    let frozen = cgroup_dir(lock).expect("the lock's cgroup directory");
    assert!(
        !frozen.exists(),
        "the agent left the frozen cgroup {} behind\n{}",
        frozen.display(),
        run.explain()
    );
}

/// An agent killed (SIGKILL) in the middle of a backup cannot remove the cgroups it kept: the
/// next agent on the VM that runs a script, here the operator's `backup-cleanup` with its
/// unlocks, removes them once they are empty, and its own as it exits.
#[test]
fn the_cgroups_an_agent_killed_halfway_kept_are_removed_by_the_next_agent() {
    let vm = Vm::with_identity("acme", "backend");
    let cgroups = CgroupLog::new(&vm);
    let record = cgroups.record();
    let started = vm.dir.path().join("started");
    // Locked, so that the cleanup has unlocks to run (it unlocks what the journal says).
    vm.job("api")
        .script("pre-backup-lock", "exit 0")
        .script(
            "backup",
            &format!("{record}\necho a > \"${{BBR_ARTIFACT_DIRECTORY}}a\""),
        )
        .script("post-backup-unlock", "exit 0");
    vm.job("db")
        .script("pre-backup-lock", "exit 0")
        .script(
            "backup",
            &format!("{record}\ntouch '{}'\nexec sleep 60", started.display()),
        )
        .script("post-backup-unlock", "exit 0");
    let mut agent = Command::new(AGENT)
        .arg("--root")
        .arg(vm.root())
        .args(backup_args(&vm, &[]))
        .current_dir(vm.dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let two = || fs::read_to_string(&cgroups.0).is_ok_and(|t| t.lines().count() == 2);
    while !(started.exists() && two()) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    let recorded = fs::read_to_string(&cgroups.0).unwrap_or_default();
    let dirs: Vec<PathBuf> = recorded.lines().filter_map(cgroup_dir).collect();
    // api's backup ends at once: its cgroup, empty, is kept, beside db's, which its sleep holds.
    let kept = |dir: &Path| {
        fs::read_to_string(dir.join("cgroup.events")).is_ok_and(|e| e.contains("populated 0"))
    };
    while !dirs.iter().any(|d| kept(d)) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    let kept_at_the_kill = dirs.iter().filter(|d| kept(d)).count();
    agent.kill().unwrap();
    agent.wait().unwrap();
    // db's backup outlives the agent (nobody ended it): ended here, as the test's tidying.
    for dir in &dirs {
        for pid in fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
        {
            let _ = kill(Pid::from_raw(pid.parse().unwrap()), Signal::SIGKILL);
        }
    }
    if !recorded.contains("/bbr-agent-") {
        eprintln!("skipped: no cgroup per script on this host ({recorded:?})");
        return;
    }
    let [a, b] = &dirs[..] else {
        panic!("expected the cgroups of two backups, got {recorded:?}");
    };
    assert_ne!(a, b, "two backups at once shared a cgroup");
    let agents = a
        .parent()
        .expect("the killed agent's directory")
        .to_path_buf();
    assert!(
        agents.ends_with(format!("bbr-agent-{}", agent.id())),
        "{agents:?} is not the killed agent's"
    );
    assert_eq!(
        kept_at_the_kill, 1,
        "api's cgroup (empty) kept, db's held by its backup: {dirs:?}"
    );
    while dirs.iter().any(|d| !kept(d)) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }

    let (run, _) = timed(&vm, &["backup-cleanup"]);
    run.assert_success();
    assert!(
        !agents.exists(),
        "the killed agent's cgroups {} were left behind\n{}",
        agents.display(),
        run.explain()
    );
}
