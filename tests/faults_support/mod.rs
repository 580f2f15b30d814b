//! Process handling for the fault-injection tests (tests/faults.rs, tests/faults_ssh.rs):
//! agents started in a process group of their own and killed with it when dropped, pids that
//! scripts write for a guard that kills them, and polling with deadlines, so that no test
//! leaves a process behind or hangs, whether it passes or fails.
#![allow(dead_code)]

use std::fs::{self, File};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::Value;

use crate::common::{AGENT, Vm, listing};

/// Kills, when dropped, every process (and process group) whose pid a script wrote to a file
/// under `dir`.
pub struct Survivors {
    dir: PathBuf,
}

impl Survivors {
    pub fn new(base: &Path) -> Survivors {
        let dir = base.join("pids");
        fs::create_dir_all(&dir).unwrap();
        Survivors { dir }
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The pid a script wrote to `pids/<name>`.
    pub fn pid(&self, name: &str) -> i32 {
        read_pid(&self.file(name))
            .unwrap_or_else(|| panic!("no pid in {}", self.file(name).display()))
    }
}

impl Drop for Survivors {
    fn drop(&mut self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            if let Some(pid) = read_pid(&entry.path()) {
                // Scripts lead their own process group: take their background children too.
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

fn read_pid(path: &Path) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The state letter, parent and process group of `pid`, from `/proc/<pid>/stat`.
fn proc_stat(pid: i32) -> Option<(char, i32, i32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, ppid, pgrp))
}

/// Whether `pid` runs; a zombie has ended and only waits to be reaped, so it counts as gone.
pub fn alive(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|(state, _, _)| state != 'Z')
}

/// Whether any live (non-zombie) process is in the process group `pgid`.
pub fn group_alive(pgid: i32) -> bool {
    let Ok(entries) = fs::read_dir("/proc") else {
        return false;
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .any(|pid| proc_stat(pid).is_some_and(|(state, _, pgrp)| pgrp == pgid && state != 'Z'))
}

/// Polls `done` until it holds or `limit` passes; false if it never held.
pub fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the process group `pgid` is gone, allowing a moment for a signal already sent.
pub fn group_gone_soon(pgid: i32) -> bool {
    eventually(Duration::from_secs(2), || !group_alive(pgid))
}

/// Each job's backup script (its group, recorded as `<job>-backup`) and the `sleep` it left in
/// the background (`<job>-sleep`) are gone: nothing of the run outlived its session.
pub fn assert_backup_scripts_gone(pids: &Survivors, jobs: &[&str], explain: &dyn Fn() -> String) {
    for job in jobs {
        assert!(
            group_gone_soon(pids.pid(&format!("{job}-backup")))
                && !alive(pids.pid(&format!("{job}-sleep"))),
            "{job}'s backup script outlived its session\n{}",
            explain()
        );
    }
}

static OUTPUTS: AtomicUsize = AtomicUsize::new(0);

/// An agent (or driver) started in a process group of its own, its output going to files.
/// Dropping it kills the whole group (a driver's `sh -c` and `serve` children are in it) and
/// reaps the agent, so a failing test leaves nothing running.
pub struct Spawned {
    child: Child,
    command: String,
    /// Where its output files are; listed in failure messages.
    dir: PathBuf,
    stdout: PathBuf,
    stderr: PathBuf,
    pub started: Instant,
}

impl Spawned {
    pub fn start(dir: &Path, args: &[String], env: &[(&str, &str)]) -> Spawned {
        let n = OUTPUTS.fetch_add(1, Ordering::SeqCst);
        let (stdout, stderr) = (
            dir.join(format!("agent-{n}.stdout")),
            dir.join(format!("agent-{n}.stderr")),
        );
        let mut command = Command::new(AGENT);
        command
            .args(args)
            .envs(env.iter().copied())
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap())
            .process_group(0);
        let shown = format!("{command:?}");
        let child = command.spawn().expect("start bbr-agent");
        Spawned {
            child,
            command: shown,
            dir: dir.to_path_buf(),
            stdout,
            stderr,
            started: Instant::now(),
        }
    }

    /// `bbr-agent --root <vm> <args>`.
    pub fn on(vm: &Vm, args: &[&str]) -> Spawned {
        Spawned::on_with(vm, args, &[])
    }

    pub fn on_with(vm: &Vm, args: &[&str], env: &[(&str, &str)]) -> Spawned {
        let mut all = vec!["--root".to_string(), vm.root().display().to_string()];
        all.extend(args.iter().map(|s| s.to_string()));
        Spawned::start(vm.dir.path(), &all, env)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid()), signal).expect("signal the agent");
    }

    /// Waits for it to exit; a hang past `limit` fails the test (and the drop kills it).
    pub fn wait(&mut self, limit: Duration) -> Exit {
        let deadline = self.started + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the agent") {
                let (stdout, stderr) = self.output();
                return Exit {
                    code: status.code(),
                    signal: status.signal(),
                    took: self.started.elapsed(),
                    explain: format!(
                        "command: {}\nexit: {status}\ntook: {:?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n--- files under {} ---\n{}",
                        self.command,
                        self.started.elapsed(),
                        self.dir.display(),
                        listing(&self.dir)
                    ),
                    stdout,
                    stderr,
                };
            }
            if Instant::now() > deadline {
                panic!(
                    "the agent did not exit within {limit:?}: it hangs\n{}",
                    self.explain()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn output(&self) -> (String, String) {
        let read =
            |p: &Path| String::from_utf8_lossy(&fs::read(p).unwrap_or_default()).into_owned();
        (read(&self.stdout), read(&self.stderr))
    }

    /// For failure messages while it still runs.
    pub fn explain(&self) -> String {
        let (stdout, stderr) = self.output();
        format!(
            "command: {}\nrunning for {:?}\n--- stdout so far ---\n{stdout}\n--- stderr so far ---\n{stderr}\n--- files under {} ---\n{}",
            self.command,
            self.started.elapsed(),
            self.dir.display(),
            listing(&self.dir)
        )
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.pid()), Signal::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a spawned agent ended.
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub took: Duration,
    pub stdout: String,
    pub stderr: String,
    pub explain: String,
}

impl Exit {
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            (self.code, self.signal),
            (Some(code), None),
            "unexpected exit\n{}",
            self.explain
        );
        self
    }

    pub fn assert_stderr_contains(&self, text: &str) -> &Self {
        assert!(
            self.stderr.contains(text),
            "stderr lacks {text:?}\n{}",
            self.explain
        );
        self
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON: {e}\n{}", self.explain))
    }
}

/// Runs the agent on `vm` to its end, at most 10 s.
pub fn run_agent(vm: &Vm, args: &[&str]) -> Exit {
    Spawned::on(vm, args).wait(Duration::from_secs(10))
}

/// What the driver says of an interrupted run whose sessions it ended: per VM, that its agent
/// unlocks; no unlock failure and no unreachable VM; the cleanup command last, after the
/// interruption, which says the unlocks were left to the agents.
pub fn assert_driver_left_the_unlocks_to_the_agents(exit: &Exit, vms: &[&str], cleanup: &str) {
    let both = format!("{}\n{}", exit.stdout, exit.stderr);
    for wrong in [
        "FAILED (could not be started",
        "-unlock failed (",
        "cannot reach the agent",
        "unlock ran for",
    ] {
        assert!(!both.contains(wrong), "no {wrong:?}\n{}", exit.explain);
    }
    for vm in vms {
        let line = format!(
            "{vm}: its agent unlocks what it locked as its session ends (its log: /var/vcap/sys/log/bbr-agent/bbr-agent.log on the VM)"
        );
        assert_eq!(
            both.lines().filter(|l| *l == line).count(),
            1,
            "one line for {vm}\n{}",
            exit.explain
        );
    }
    let errors: Vec<&str> = exit
        .stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    let n = errors.len();
    assert!(n >= 2, "{}", exit.explain);
    assert!(
        errors[n - 1].starts_with("error: to clean up, run: ") && errors[n - 1].ends_with(cleanup),
        "the cleanup command last\n{}",
        exit.explain
    );
    assert_eq!(
        exit.stderr.lines().last(),
        Some(errors[n - 1]),
        "{}",
        exit.explain
    );
    assert!(
        errors[n - 2].starts_with("error: the operator interrupted the run (SIGINT, Ctrl-C)")
            && errors[n - 2].contains("left to each VM's agent"),
        "the interruption, then the cleanup\n{}",
        exit.explain
    );
}
