//! What each script sees (docs/behaviour.md, "Running a script"): exactly its BBR variables and a clean environment,
//! sudo's PATH, stdin from /dev/null, the job's directory as working directory and a process
//! group of its own; through a real backup and restore, through `run`, and the order `plan`
//! shows.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{AGENT, Job, Run, Vm, listing};

/// sudo's `secure_path` on a stemcell.
const SECURE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Set by the sh that runs the script; anything else but sudo's set and the BBR variables is
/// a leak.
const SET_BY_SH: [&str; 4] = ["PWD", "OLDPWD", "SHLVL", "_"];

/// The variables sudo always gives (checked against `sudo /usr/bin/env`, sudo 1.9, with
/// `env_reset`), besides `PATH`.
const SUDO_SET: [&str; 10] = [
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "MAIL",
    "TERM",
    "SUDO_COMMAND",
    "SUDO_USER",
    "SUDO_UID",
    "SUDO_GID",
];

/// `(name, home, shell)` of `uid` in /etc/passwd.
fn passwd_entry(uid: u32) -> (String, String, String) {
    let passwd = fs::read_to_string("/etc/passwd").unwrap();
    passwd
        .lines()
        .map(|l| l.split(':').map(str::to_string).collect::<Vec<_>>())
        .find(|f| f.len() >= 7 && f[2] == uid.to_string())
        .map(|f| (f[0].clone(), f[5].clone(), f[6].clone()))
        .unwrap_or_else(|| panic!("uid {uid} is not in /etc/passwd"))
}

/// What sudo gives `script` when the agent runs with `agent_env` (the test's own environment
/// for an agent that inherits it): the target user is the one the agent runs as; the caller
/// is the one the agent's own SUDO_* name (it was started by sudo), else its real user; TERM
/// is kept unless sudo's env_check refuses it, else "unknown".
fn sudo_expected(
    script: &Path,
    agent_env: &dyn Fn(&str) -> Option<String>,
) -> Vec<(String, String)> {
    let (name, home, shell) = passwd_entry(nix::unistd::geteuid().as_raw());
    let caller = match (
        agent_env("SUDO_USER"),
        agent_env("SUDO_UID"),
        agent_env("SUDO_GID"),
    ) {
        (Some(user), Some(uid), Some(gid)) => (user, uid, gid),
        _ => (
            passwd_entry(nix::unistd::getuid().as_raw()).0,
            nix::unistd::getuid().to_string(),
            nix::unistd::getgid().to_string(),
        ),
    };
    let term = agent_env("TERM")
        .filter(|t| !t.is_empty() && !t.contains('/') && !t.contains('%'))
        .unwrap_or_else(|| "unknown".to_string());
    [
        ("PATH", SECURE_PATH.to_string()),
        ("HOME", home),
        ("USER", name.clone()),
        ("LOGNAME", name.clone()),
        ("SHELL", shell),
        ("MAIL", format!("/var/mail/{name}")),
        ("TERM", term),
        ("SUDO_COMMAND", script.display().to_string()),
        ("SUDO_USER", caller.0),
        ("SUDO_UID", caller.1),
        ("SUDO_GID", caller.2),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The variables set in the agent's own environment that no script may see.
const LEAKS: [(&str, &str); 4] = [
    ("SECRET_TOKEN", "hunter2"),
    ("BBR_ARTIFACT_DIRECTORY", "/leaked/"),
    ("ARTIFACT_DIRECTORY", "/leaked/"),
    ("BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL", "leaked"),
];

/// Where a script of a job records what it saw.
fn seen_dir(vm: &Vm, job: &str, script: &str) -> PathBuf {
    vm.dir.path().join("seen").join(format!("{job}.{script}"))
}

/// Makes `script` of `job` record its environment, working directory, pid, process group and
/// stdin under `seen_dir`, and its name in the call log. `extra` runs after that.
fn recording_env(vm: &Vm, job: &Job<'_>, script: &str, extra: &str) {
    let dir = seen_dir(vm, &job.name, script);
    job.script(
        script,
        &format!(
            r#"d='{dir}'
rm -rf "$d" && mkdir -p "$d"
env > "$d/env"
pwd -P > "$d/cwd"
echo $$ > "$d/pid"
read -r _pid _comm _state _ppid pgid _rest < /proc/$$/stat
echo "$pgid" > "$d/pgid"
readlink /proc/$$/fd/0 > "$d/stdin"
timeout 3 cat > "$d/stdin-content"
echo $? > "$d/cat-status"
echo "$ME" >> "$LOG"
{extra}"#,
            dir = dir.display()
        ),
    );
}

/// Every script of `job` records what it saw; backup writes a file into its artifact.
fn env_recording_job<'a>(vm: &'a Vm, name: &str) -> Job<'a> {
    let job = vm.job(name);
    for s in [
        "metadata",
        "pre-backup-lock",
        "post-backup-unlock",
        "pre-restore-lock",
        "restore",
        "post-restore-unlock",
    ] {
        recording_env(vm, &job, s, "");
    }
    recording_env(
        vm,
        &job,
        "backup",
        "echo saved > \"${BBR_ARTIFACT_DIRECTORY}data\"",
    );
    job
}

/// What one script recorded.
struct Seen {
    what: String,
    /// The script's path as the agent ran it (through the job's symlink, if any).
    script: PathBuf,
    env: BTreeMap<String, String>,
    cwd: String,
    pid: String,
    pgid: String,
    stdin: String,
    cat_status: String,
}

fn seen(vm: &Vm, job: &str, script: &str) -> Seen {
    let dir = seen_dir(vm, job, script);
    let read = |file: &str| {
        fs::read_to_string(dir.join(file))
            .unwrap_or_else(|e| {
                panic!(
                    "{job} {script} did not record {file} ({e}); calls: {:?}\n{}",
                    vm.calls(),
                    listing(vm.dir.path())
                )
            })
            .trim()
            .to_string()
    };
    let env = read("env")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Seen {
        what: format!("{job} {script}"),
        script: vm.jobs_root().join(job).join("bin/bbr").join(script),
        env,
        cwd: read("cwd"),
        pid: read("pid"),
        pgid: read("pgid"),
        stdin: read("stdin"),
        cat_status: read("cat-status"),
    }
}

impl Seen {
    /// The environment is exactly what sudo gives (for an agent with the test's own
    /// environment), the BBR variables `bbr`, and what sh adds.
    fn assert_env_is(&self, bbr: &[(&str, &str)]) -> &Self {
        self.assert_env_under(bbr, &|k| std::env::var(k).ok())
    }

    /// As `assert_env_is`, for an agent whose environment is `agent_env`.
    fn assert_env_under(
        &self,
        bbr: &[(&str, &str)],
        agent_env: &dyn Fn(&str) -> Option<String>,
    ) -> &Self {
        let mut expected = sudo_expected(&self.script, agent_env);
        expected.extend(bbr.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        for (key, value) in &expected {
            assert_eq!(
                self.env.get(key),
                Some(value),
                "{}: {key}; env: {:#?}",
                self.what,
                self.env
            );
        }
        let unexpected: Vec<String> = self
            .env
            .iter()
            .filter(|(k, _)| {
                !SET_BY_SH.contains(&k.as_str()) && !expected.iter().any(|(e, _)| e == *k)
            })
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert!(
            unexpected.is_empty(),
            "{}: unexpected variables {unexpected:?}",
            self.what
        );
        self
    }

    fn assert_runs_like_a_bbr_script(&self, job_dir: &Path) -> &Self {
        let want = fs::canonicalize(job_dir).unwrap();
        assert_eq!(
            Path::new(&self.cwd),
            want,
            "{}: the working directory is the job's directory",
            self.what
        );
        assert_eq!(self.stdin, "/dev/null", "{}: stdin", self.what);
        assert_eq!(
            self.cat_status, "0",
            "{}: `cat` reached the end of stdin (124: it waited for input)",
            self.what
        );
        assert_eq!(
            self.pgid, self.pid,
            "{}: the script leads its own process group",
            self.what
        );
        self
    }
}

/// `<root>/var/vcap/store/bbr-backup/<job>/`, with the trailing slash.
fn artifact_env(vm: &Vm, job: &str) -> String {
    format!("{}/", vm.store().join(job).display())
}

/// Runs the agent with `--root <vm>`, extra variables in its environment and its stdin a pipe
/// that stays open (so a script that inherited it would wait).
fn agent_with(vm: &Vm, env: &[(&str, &str)], args: &[&str]) -> Run {
    let (reader, writer) = std::io::pipe().expect("pipe");
    let mut command = Command::new(AGENT);
    command
        .arg("--root")
        .arg(vm.root())
        .args(args)
        .envs(env.iter().copied())
        .stdin(reader)
        .current_dir(vm.dir.path());
    let run = Run::of(&mut command, vm.dir.path());
    drop(writer);
    run
}

fn backup(vm: &Vm) -> Run {
    let artifacts = vm.artifacts();
    let run = agent_with(
        vm,
        &LEAKS,
        &["backup", "--artifact-path", artifacts.to_str().unwrap()],
    );
    run.assert_success();
    run
}

/// Runs the agent with exactly `env` (and stdin a pipe that stays open).
fn agent_in(vm: &Vm, env: &[(&str, &str)], args: &[&str]) -> Run {
    let (reader, writer) = std::io::pipe().expect("pipe");
    let mut command = Command::new(AGENT);
    command
        .env_clear()
        .arg("--root")
        .arg(vm.root())
        .args(args)
        .envs(env.iter().copied())
        .stdin(reader)
        .current_dir(vm.dir.path());
    let run = Run::of(&mut command, vm.dir.path());
    drop(writer);
    run
}

/// Each script kind with the BBR variables it gets for `vm`'s job `postgres`.
fn bbr_variables(vm: &Vm) -> Vec<(&'static str, Vec<(&'static str, String)>)> {
    let dir = artifact_env(vm, "postgres");
    vec![
        ("metadata", vec![("BBR_VERSION", "1.9.73".to_string())]),
        ("pre-backup-lock", vec![]),
        (
            "backup",
            vec![
                ("BBR_ARTIFACT_DIRECTORY", dir.clone()),
                ("ARTIFACT_DIRECTORY", dir.clone()),
            ],
        ),
        (
            "post-backup-unlock",
            vec![("BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL", "true".to_string())],
        ),
        ("pre-restore-lock", vec![]),
        (
            "restore",
            vec![
                ("BBR_ARTIFACT_DIRECTORY", dir.clone()),
                ("ARTIFACT_DIRECTORY", dir),
            ],
        ),
        ("post-restore-unlock", vec![]),
    ]
}

/// BBR runs every script as `sudo VARS... /var/vcap/jobs/<job>/bin/bbr/<script>`: each script
/// sees sudo's whole set (SUDO_COMMAND its own path, SUDO_USER the caller, TERM=unknown when
/// the caller has none), for an agent started without sudo (as root: the values sudo gives
/// root) and for one started by sudo (the caller its SUDO_* name).
#[test]
fn every_script_gets_the_environment_sudo_gives() {
    let by_sudo = [
        ("SUDO_USER", "vcap"),
        ("SUDO_UID", "1000"),
        ("SUDO_GID", "1001"),
        ("SUDO_COMMAND", "/usr/local/bin/bbr-agent serve"),
        ("TERM", "xterm-256color"),
    ];
    for agent_env in [&LEAKS[..], &[&LEAKS[..], &by_sudo[..]].concat()] {
        let vm = Vm::with_identity("acme", "db");
        env_recording_job(&vm, "postgres");
        let artifacts = vm.artifacts();
        agent_in(
            &vm,
            agent_env,
            &["backup", "--artifact-path", artifacts.to_str().unwrap()],
        )
        .assert_success();
        agent_in(
            &vm,
            agent_env,
            &[
                "restore",
                "--artifact-path",
                vm.artifact_dir().to_str().unwrap(),
            ],
        )
        .assert_success();
        let lookup = |key: &str| {
            agent_env
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
        };
        for (script, bbr) in bbr_variables(&vm) {
            let seen = seen(&vm, "postgres", script);
            for key in SUDO_SET {
                assert!(
                    seen.env.contains_key(key),
                    "{}: no {key}; env: {:#?}",
                    seen.what,
                    seen.env
                );
            }
            let bbr: Vec<(&str, &str)> = bbr.iter().map(|(k, v)| (*k, v.as_str())).collect();
            seen.assert_env_under(&bbr, &lookup);
        }
    }
}

#[test]
fn backup_side_scripts_get_exactly_their_bbr_variables() {
    let vm = Vm::with_identity("acme", "db");
    let job = env_recording_job(&vm, "postgres");
    backup(&vm);

    let dir = artifact_env(&vm, "postgres");
    seen(&vm, "postgres", "backup")
        .assert_env_is(&[
            ("BBR_ARTIFACT_DIRECTORY", &dir),
            ("ARTIFACT_DIRECTORY", &dir),
        ])
        .assert_runs_like_a_bbr_script(&job.dir);
    seen(&vm, "postgres", "metadata")
        .assert_env_is(&[("BBR_VERSION", "1.9.73")])
        .assert_runs_like_a_bbr_script(&job.dir);
    seen(&vm, "postgres", "pre-backup-lock")
        .assert_env_is(&[])
        .assert_runs_like_a_bbr_script(&job.dir);
    seen(&vm, "postgres", "post-backup-unlock")
        .assert_env_is(&[("BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL", "true")])
        .assert_runs_like_a_bbr_script(&job.dir);
    assert!(
        vm.artifact_dir().join("db-0-postgres.tar").is_file(),
        "the backup script wrote into the directory it was given"
    );
}

#[test]
fn restore_side_scripts_get_exactly_their_bbr_variables() {
    let vm = Vm::with_identity("acme", "db");
    let job = env_recording_job(&vm, "postgres");
    backup(&vm);
    // The restore script checks the artifact is where its variables say.
    recording_env(
        &vm,
        &job,
        "restore",
        "test \"$(cat \"${BBR_ARTIFACT_DIRECTORY}data\")\" = saved",
    );

    let artifact = vm.artifact_dir();
    agent_with(
        &vm,
        &LEAKS,
        &["restore", "--artifact-path", artifact.to_str().unwrap()],
    )
    .assert_success();

    let dir = artifact_env(&vm, "postgres");
    seen(&vm, "postgres", "restore")
        .assert_env_is(&[
            ("BBR_ARTIFACT_DIRECTORY", &dir),
            ("ARTIFACT_DIRECTORY", &dir),
        ])
        .assert_runs_like_a_bbr_script(&job.dir);
    for script in ["pre-restore-lock", "post-restore-unlock"] {
        seen(&vm, "postgres", script)
            .assert_env_is(&[])
            .assert_runs_like_a_bbr_script(&job.dir);
    }
    seen(&vm, "postgres", "metadata").assert_env_is(&[("BBR_VERSION", "1.9.73")]);
}

#[test]
fn metadata_gets_bbr_version_and_the_flag_changes_it() {
    let vm = Vm::new();
    let job = vm.job("api");
    recording_env(&vm, &job, "metadata", "");

    vm.agent(&["list"]).assert_success();
    seen(&vm, "api", "metadata").assert_env_is(&[("BBR_VERSION", "1.9.73")]);

    vm.agent(&["--bbr-version", "1.4.0", "list"])
        .assert_success();
    seen(&vm, "api", "metadata").assert_env_is(&[("BBR_VERSION", "1.4.0")]);
}

#[test]
fn post_backup_unlock_is_told_whether_the_backup_succeeded() {
    let vm = Vm::with_identity("acme", "db");
    env_recording_job(&vm, "postgres");
    backup(&vm);
    seen(&vm, "postgres", "post-backup-unlock")
        .assert_env_is(&[("BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL", "true")]);

    // A second job whose backup fails: every unlock is told so.
    vm.job("broken").script("backup", "exit 1");
    let second = vm.dir.path().join("second");
    fs::create_dir_all(&second).unwrap();
    vm.agent(&["backup", "--artifact-path", second.to_str().unwrap()])
        .assert_code(1)
        .assert_stdout_contains("broken backup: FAILED");
    seen(&vm, "postgres", "post-backup-unlock")
        .assert_env_is(&[("BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL", "false")]);
}

#[test]
fn no_script_sees_the_agents_own_environment() {
    let vm = Vm::with_identity("acme", "db");
    env_recording_job(&vm, "postgres");
    backup(&vm);
    agent_with(
        &vm,
        &LEAKS,
        &[
            "restore",
            "--artifact-path",
            vm.artifact_dir().to_str().unwrap(),
        ],
    )
    .assert_success();

    for script in [
        "metadata",
        "pre-backup-lock",
        "backup",
        "post-backup-unlock",
        "pre-restore-lock",
        "restore",
        "post-restore-unlock",
    ] {
        let text = fs::read_to_string(seen_dir(&vm, "postgres", script).join("env")).unwrap();
        for (key, value) in LEAKS {
            assert!(
                !text.contains(value),
                "postgres {script} sees {key}={value} from the agent's environment:\n{text}"
            );
        }
        assert!(
            !text.contains("CARGO"),
            "postgres {script} sees the test runner's environment:\n{text}"
        );
    }
}

#[test]
fn a_symlinked_job_runs_in_its_own_directory() {
    let vm = Vm::new();
    let versioned = vm.root().join("var/vcap/data/jobs/web/abc123");
    fs::create_dir_all(&versioned).unwrap();
    std::os::unix::fs::symlink(&versioned, vm.jobs_root().join("web")).unwrap();
    let job = vm.job("web");
    recording_env(&vm, &job, "metadata", "");
    vm.agent(&["list"]).assert_success();
    seen(&vm, "web", "metadata").assert_runs_like_a_bbr_script(&versioned);
}

#[test]
fn run_gives_each_kind_the_workflows_environment() {
    let vm = Vm::with_identity("acme", "db");
    let job = env_recording_job(&vm, "postgres");
    let dir = artifact_env(&vm, "postgres");

    for (script, bbr) in [
        ("metadata", vec![("BBR_VERSION", "1.9.73")]),
        ("pre-backup-lock", vec![]),
        (
            "backup",
            vec![
                ("BBR_ARTIFACT_DIRECTORY", dir.as_str()),
                ("ARTIFACT_DIRECTORY", dir.as_str()),
            ],
        ),
        (
            "post-backup-unlock",
            vec![("BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL", "true")],
        ),
        ("pre-restore-lock", vec![]),
        (
            "restore",
            vec![
                ("BBR_ARTIFACT_DIRECTORY", dir.as_str()),
                ("ARTIFACT_DIRECTORY", dir.as_str()),
            ],
        ),
        ("post-restore-unlock", vec![]),
    ] {
        fs::write(vm.log_path(), "").unwrap();
        agent_with(&vm, &LEAKS, &["run", script]).assert_success();
        assert_eq!(
            vm.calls(),
            [format!("postgres {script}")],
            "run {script} runs just that script"
        );
        seen(&vm, "postgres", script)
            .assert_env_is(&bbr)
            .assert_runs_like_a_bbr_script(&job.dir);
    }

    vm.agent(&[
        "run",
        "post-backup-unlock",
        "--after-backup-successful",
        "false",
    ])
    .assert_success();
    seen(&vm, "postgres", "post-backup-unlock")
        .assert_env_is(&[("BBR_AFTER_BACKUP_SCRIPTS_SUCCESSFUL", "false")]);

    vm.agent(&["--bbr-version", "1.4.0", "run", "metadata"])
        .assert_success();
    seen(&vm, "postgres", "metadata").assert_env_is(&[("BBR_VERSION", "1.4.0")]);
}

#[test]
fn run_with_artifact_dir_gives_dir_slash_job() {
    let vm = Vm::new();
    let job = vm.job("postgres");
    recording_env(
        &vm,
        &job,
        "backup",
        "echo saved > \"${BBR_ARTIFACT_DIRECTORY}data\"",
    );
    recording_env(&vm, &job, "restore", "");
    let parent = vm.dir.path().join("by-hand");

    for script in ["backup", "restore"] {
        vm.agent(&["run", script, "--artifact-dir", parent.to_str().unwrap()])
            .assert_success();
        let want = format!("{}/", parent.join("postgres").display());
        seen(&vm, "postgres", script).assert_env_is(&[
            ("BBR_ARTIFACT_DIRECTORY", &want),
            ("ARTIFACT_DIRECTORY", &want),
        ]);
    }
    assert_eq!(
        fs::read_to_string(parent.join("postgres/data")).unwrap(),
        "saved\n",
        "the backup script wrote into <DIR>/<job>/"
    );
}

#[test]
fn run_runs_only_the_chosen_jobs_and_streams_prefixed_output_on_stderr() {
    let vm = Vm::with_identity("acme", "db");
    for name in ["alpha", "beta", "gamma"] {
        vm.job(name)
            .script(
                "pre-backup-lock",
                "echo \"$ME\" >> \"$LOG\"\necho \"out of $ME\"\necho \"err of $ME\" >&2",
            )
            .recording("backup");
    }

    let run = vm.agent(&["run", "pre-backup-lock", "--job", "alpha", "--job", "gamma"]);
    run.assert_success()
        .assert_stderr_contains("db/0 alpha pre-backup-lock stdout: out of alpha pre-backup-lock")
        .assert_stderr_contains("db/0 alpha pre-backup-lock stderr: err of alpha pre-backup-lock")
        .assert_stderr_contains("db/0 gamma pre-backup-lock stdout: out of gamma pre-backup-lock");
    assert!(
        !run.stdout.contains("out of") && !run.stdout.contains("err of"),
        "script output goes to stderr\n{}",
        run.explain()
    );
    let mut calls = vm.calls();
    calls.sort();
    assert_eq!(
        calls,
        ["alpha pre-backup-lock", "gamma pre-backup-lock"],
        "{}",
        run.explain()
    );

    fs::write(vm.log_path(), "").unwrap();
    vm.agent(&["run", "pre-backup-lock"]).assert_success();
    let mut calls = vm.calls();
    calls.sort();
    assert_eq!(
        calls,
        [
            "alpha pre-backup-lock",
            "beta pre-backup-lock",
            "gamma pre-backup-lock"
        ],
        "without --job every job with the script runs, and nothing else"
    );
}

#[test]
fn run_exits_1_when_a_script_fails() {
    let vm = Vm::with_identity("acme", "db");
    vm.job("fine").recording("post-restore-unlock");
    vm.job("failing").script(
        "post-restore-unlock",
        "echo \"$ME\" >> \"$LOG\"\necho broken >&2\nexit 7",
    );
    let run = vm.agent(&["run", "post-restore-unlock"]);
    run.assert_code(1)
        .assert_stderr_contains("db/0 failing post-restore-unlock stderr: broken");
    let mut calls = vm.calls();
    calls.sort();
    assert_eq!(
        calls,
        ["failing post-restore-unlock", "fine post-restore-unlock"],
        "{}",
        run.explain()
    );
}

/// A script ended by a real-time signal (SIGRTMIN+1, 35 on Linux) is reported as killed by
/// it, not as a script that could not be started.
#[test]
fn a_script_killed_by_a_real_time_signal_says_so() {
    let vm = Vm::with_identity("acme", "db");
    vm.job("j").script(
        "post-restore-unlock",
        "echo \"$ME\" >> \"$LOG\"\nkill -35 $$\nsleep 5",
    );
    let run = vm.agent(&["run", "post-restore-unlock"]);
    run.assert_code(1)
        .assert_stdout_contains("j post-restore-unlock: FAILED (killed by signal 35)");
    assert_eq!(vm.calls(), ["j post-restore-unlock"], "{}", run.explain());
}

#[test]
fn run_refuses_a_job_without_that_script_as_a_usage_error() {
    let vm = Vm::with_identity("acme", "db");
    vm.job("locker").recording("pre-backup-lock");
    vm.job("saver").recording("backup");
    let run = vm.agent(&[
        "run",
        "pre-backup-lock",
        "--job",
        "locker",
        "--job",
        "saver",
    ]);
    run.assert_code(2).assert_stderr_contains("saver");
    assert!(
        vm.calls().is_empty(),
        "nothing runs when a job is wrong: {:?}\n{}",
        vm.calls(),
        run.explain()
    );
    vm.agent(&["run", "backup", "--job", "nosuchjob"])
        .assert_code(2)
        .assert_stderr_contains("nosuchjob");
}

/// Jobs a, b, c where a is locked before b and b before c (for both workflows), all with
/// every lock script except b's post-backup-unlock and pre-restore-lock; d only backs up.
fn ordered_vm() -> Vm {
    let vm = Vm::with_identity("acme", "db");
    let before = |next: &str| {
        format!(
            "backup_should_be_locked_before:\n- job_name: {next}\n  release: r\nrestore_should_be_locked_before:\n- {{job_name: {next}, release: r}}"
        )
    };
    vm.job("c")
        .recording_locks()
        .recording("backup")
        .recording("restore");
    vm.job("b")
        .metadata(&before("c"))
        .recording("pre-backup-lock")
        .recording("post-restore-unlock")
        .recording("backup");
    vm.job("a")
        .metadata(&before("b"))
        .recording_locks()
        .recording("backup")
        .recording("restore");
    vm.job("d").recording("backup");
    vm
}

#[test]
fn plan_orders_locks_by_metadata_and_unlocks_in_reverse() {
    let vm = ordered_vm();
    let run = vm.agent(&["plan", "backup", "--json"]);
    run.assert_success();
    let plan = run.json();
    assert_eq!(
        plan["lock"],
        serde_json::json!([["a"], ["b"], ["c"]]),
        "{}",
        run.explain()
    );
    assert_eq!(
        plan["unlock"],
        serde_json::json!([["c"], ["a"]]),
        "b has no post-backup-unlock\n{}",
        run.explain()
    );
    let mut backups: Vec<String> = serde_json::from_value(plan["run"].clone()).unwrap();
    backups.sort();
    assert_eq!(backups, ["a", "b", "c", "d"], "{}", run.explain());

    let run = vm.agent(&["plan", "restore", "--json"]);
    run.assert_success();
    let plan = run.json();
    assert_eq!(
        plan["lock"],
        serde_json::json!([["a"], ["c"]]),
        "b has no pre-restore-lock\n{}",
        run.explain()
    );
    assert_eq!(
        plan["unlock"],
        serde_json::json!([["c"], ["b"], ["a"]]),
        "{}",
        run.explain()
    );
    let mut restores: Vec<String> = serde_json::from_value(plan["run"].clone()).unwrap();
    restores.sort();
    assert_eq!(restores, ["a", "c"], "{}", run.explain());
    assert!(vm.calls().is_empty(), "plan runs no script but metadata");
}

#[test]
fn a_backup_locks_in_plan_order_and_unlocks_in_reverse() {
    let vm = ordered_vm();
    vm.agent(&[
        "backup",
        "--artifact-path",
        vm.artifacts().to_str().unwrap(),
    ])
    .assert_success();
    let calls = vm.calls();
    let locks: Vec<&str> = calls
        .iter()
        .filter(|c| c.ends_with("pre-backup-lock"))
        .map(String::as_str)
        .collect();
    let unlocks: Vec<&str> = calls
        .iter()
        .filter(|c| c.ends_with("post-backup-unlock"))
        .map(String::as_str)
        .collect();
    assert_eq!(
        locks,
        [
            "a pre-backup-lock",
            "b pre-backup-lock",
            "c pre-backup-lock"
        ]
    );
    assert_eq!(unlocks, ["c post-backup-unlock", "a post-backup-unlock"]);
}

/// Runs the agent from the VM's temp dir with `--root vm`: a relative root.
fn agent_relative(vm: &Vm, args: &[&str]) -> Run {
    let mut all = vec!["--root".to_string(), "vm".to_string()];
    all.extend(args.iter().map(|s| s.to_string()));
    Run::new(&all, vm.dir.path())
}

#[test]
fn a_relative_root_still_gives_scripts_absolute_paths() {
    let vm = Vm::with_identity("acme", "db");
    let job = env_recording_job(&vm, "postgres");
    agent_relative(&vm, &["list"]).assert_success();
    seen(&vm, "postgres", "metadata").assert_runs_like_a_bbr_script(&job.dir);

    agent_relative(&vm, &["run", "backup"]).assert_success();
    let dir = artifact_env(&vm, "postgres");
    seen(&vm, "postgres", "backup")
        .assert_env_is(&[
            ("BBR_ARTIFACT_DIRECTORY", &dir),
            ("ARTIFACT_DIRECTORY", &dir),
        ])
        .assert_runs_like_a_bbr_script(&job.dir);
    assert!(vm.store().join("postgres/data").is_file());
}

#[test]
fn run_with_a_relative_artifact_dir_resolves_it_against_the_current_directory() {
    let vm = Vm::with_identity("acme", "db");
    let job = vm.job("postgres");
    recording_env(
        &vm,
        &job,
        "backup",
        "echo saved > \"${BBR_ARTIFACT_DIRECTORY}data\"",
    );
    // From the VM's temp dir: `--artifact-dir by-hand` means <temp>/by-hand.
    agent_relative(&vm, &["run", "backup", "--artifact-dir", "by-hand"]).assert_success();
    let want = format!("{}/", vm.dir.path().join("by-hand/postgres").display());
    seen(&vm, "postgres", "backup").assert_env_is(&[
        ("BBR_ARTIFACT_DIRECTORY", &want),
        ("ARTIFACT_DIRECTORY", &want),
    ]);
    assert_eq!(
        fs::read_to_string(vm.dir.path().join("by-hand/postgres/data")).unwrap(),
        "saved\n"
    );
}

/// Scripts inherit no descriptor but 0, 1 and 2, as under sudo (not the agent's protocol
/// pipes, not what the agent itself inherited from an SSH session), and start with every
/// signal at its default and none blocked, even when the agent was started with signals
/// ignored (as under `nohup`; Rust itself ignores SIGPIPE); and so does what a script starts.
#[test]
fn scripts_inherit_no_descriptor_and_no_ignored_signal() {
    let vm = Vm::with_identity("acme", "web");
    let job = vm.job("web");
    let seen = vm.dir.path().join("seen");
    fs::create_dir_all(&seen).unwrap();
    job.script(
        "backup",
        &format!(
            // The signal state first, read with builtins only: while the shell waits for a
            // command it starts, it may block signals itself.
            "while read -r field value; do\n\
               case $field in SigBlk:|SigIgn:) echo \"$field $value\";; esac\n\
             done < /proc/$$/status > '{seen}/signals'\n\
             grep -E '^Sig(Blk|Ign):' /proc/self/status > '{seen}/child-signals'\n\
             ls /proc/self/fd | sort -n | tr '\\n' ' ' > '{seen}/fds'",
            seen = seen.display()
        ),
    );
    let artifacts = vm.artifacts();
    // sh sets SIGUSR1 and SIGQUIT to ignored and execs the agent, which inherits that.
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg("trap '' USR1 QUIT; exec \"$0\" \"$@\"")
        .arg(AGENT)
        .arg("--root")
        .arg(vm.root())
        .args(["backup", "--artifact-path", artifacts.to_str().unwrap()])
        .current_dir(vm.dir.path());
    let run = Run::of(&mut command, vm.dir.path());
    run.assert_success();

    let read = |name: &str| {
        fs::read_to_string(seen.join(name))
            .unwrap_or_else(|e| panic!("backup did not record {name} ({e})\n{}", run.explain()))
    };
    // `ls` itself holds descriptor 3 (the directory it reads).
    assert_eq!(
        read("fds").trim(),
        "0 1 2 3",
        "the script has only stdin, stdout and stderr\n{}",
        run.explain()
    );
    let mask = |file: &str, field: &str| {
        let signals = read(file);
        let hex = signals
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .unwrap_or_else(|| panic!("no {field} in {file}: {signals:?}"));
        u64::from_str_radix(hex.trim(), 16).unwrap()
    };
    // The script and what it starts (a grep in the foreground): all 64 signals, glibc's
    // internal 32 and 33 included (glibc's posix_spawn used to leave those two ignored, and
    // so every process under a script had them ignored).
    for (file, who) in [
        ("signals", "the script"),
        ("child-signals", "the script's child"),
    ] {
        assert_eq!(
            mask(file, "SigBlk:"),
            0,
            "no signal blocked in {who}\n{}",
            run.explain()
        );
        assert_eq!(
            mask(file, "SigIgn:"),
            0,
            "no signal ignored in {who} (bit n - 1 is signal n: SIGUSR1 is bit 9, SIGQUIT \
             bit 2, glibc's 32 and 33 bits 31 and 32)\n{}",
            run.explain()
        );
    }
}
