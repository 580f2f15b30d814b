//! BBR's director mode end to end through a real sshd: `bbr-agent director --host HOST:PORT
//! --username NAME --private-key-path KEY ...` backs up and restores the director VM's own
//! jobs as instance `bosh/0`, into `<host>_<timestamp>`; its host key must be in the user's
//! `~/.ssh/known_hosts`, and when it is missing (or another) the run stops before anything
//! runs, saying how to add it.

mod common;

use std::fs;
use std::process::Command;

use common::sshd::Sshd;
use common::{AGENT, Run, Vm, tree, write_file};

struct Director {
    sshd: Sshd,
    vm: Vm,
    home: tempfile::TempDir,
}

/// What the operator's ~/.ssh/known_hosts holds for the director.
enum KnownHost {
    Its,
    Another,
    Missing,
}

fn director(known: KnownHost) -> Director {
    let sshd = Sshd::start();
    let vm = Vm::with_identity("bosh", "bosh");
    vm.job("director-db")
        .recording_locks()
        .copying_backup_restore();
    write_file(
        &vm.data_dir("director-db").join("bosh.sql"),
        b"the director's database\n",
    );
    let home = tempfile::tempdir().unwrap();
    let key = match known {
        KnownHost::Its => Some(sshd.host_public_key()),
        KnownHost::Another => Some(sshd.other_host_public_key()),
        KnownHost::Missing => None,
    };
    if let Some(key) = key {
        write_file(
            &home.path().join(".ssh/known_hosts"),
            format!("[127.0.0.1]:{} {key}\n", sshd.port).as_bytes(),
        );
    }
    Director { sshd, vm, home }
}

impl Director {
    fn run(&self, args: &[&str]) -> Run {
        let remote = format!("{AGENT} --root {} serve", self.vm.root().display());
        self.run_remote(&remote, args)
    }

    /// [`Director::run`] with `remote` as the command run over SSH on the director.
    fn run_remote(&self, remote: &str, args: &[&str]) -> Run {
        let host = format!("127.0.0.1:{}", self.sshd.port);
        let mut command = Command::new(AGENT);
        command
            .args([
                "director",
                "--host",
                &host,
                "--username",
                "root",
                "--private-key-path",
            ])
            .arg(self.sshd.key())
            .args(args)
            .current_dir(self.vm.dir.path())
            .env("HOME", self.home.path())
            .env("BBR_AGENT_REMOTE_COMMAND", remote);
        Run::of(&mut command, self.vm.dir.path())
    }

    fn backup(&self) -> Run {
        let artifacts = self.vm.artifacts().display().to_string();
        self.run(&["backup", "--artifact-path", &artifacts])
    }

    fn nothing_ran(&self, explain: &str) {
        assert_eq!(
            self.vm.calls(),
            Vec::<String>::new(),
            "a script ran\n{explain}"
        );
    }
}

#[test]
fn the_director_vm_is_backed_up_and_restored_as_bosh_0() {
    let d = director(KnownHost::Its);
    let before = tree(&d.vm.data_dir("director-db"));
    let sessions = d.sshd.sessions();
    let run = d.backup();
    run.assert_success();
    assert_eq!(
        d.sshd.sessions() - sessions,
        1,
        "one SSH session\n{}",
        run.explain()
    );
    let artifact = d.vm.artifact_dir();
    let name = artifact.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("127.0.0.1_"),
        "BBR names it <host>_<timestamp>: {name}"
    );
    assert!(
        artifact.join("bosh-0-director-db.tar").exists(),
        "{}",
        run.explain()
    );
    let metadata = fs::read_to_string(artifact.join("metadata")).unwrap();
    assert!(
        metadata.contains("- name: bosh\n  index: '0'"),
        "instance bosh/0:\n{metadata}"
    );

    fs::remove_dir_all(d.vm.data_dir("director-db")).unwrap();
    let path = artifact.display().to_string();
    d.run(&["restore", "--artifact-path", &path])
        .assert_success();
    assert_eq!(tree(&d.vm.data_dir("director-db")), before);
    let calls = d.vm.calls();
    for script in [
        "pre-backup-lock",
        "backup",
        "post-backup-unlock",
        "pre-restore-lock",
        "restore",
        "post-restore-unlock",
    ] {
        assert!(
            calls.iter().any(|c| c == &format!("director-db {script}")),
            "{script} did not run: {calls:#?}"
        );
    }
}

#[test]
fn a_director_whose_host_key_is_not_known_says_how_to_add_it() {
    let d = director(KnownHost::Missing);
    let run = d.backup();
    run.assert_code(1);
    run.assert_stderr_contains(&format!(
        "the host key of [127.0.0.1]:{port} is not in {}/.ssh/known_hosts",
        d.home.path().display(),
        port = d.sshd.port
    ));
    run.assert_stderr_contains(&format!("ssh-keyscan -p {} 127.0.0.1 >>", d.sshd.port));
    d.nothing_ran(&run.explain());
    assert_eq!(
        d.sshd.sessions(),
        0,
        "no connection was made\n{}",
        run.explain()
    );
}

#[test]
fn a_director_whose_host_key_is_another_stops_before_any_lock() {
    let d = director(KnownHost::Another);
    let run = d.backup();
    run.assert_code(1);
    run.assert_stderr_contains("bosh/0");
    run.assert_stderr_contains("the VM's SSH host key is not the one expected");
    d.nothing_ran(&run.explain());
}

#[test]
fn a_director_that_never_answers_stops_at_the_connect_timeout_before_any_lock() {
    let d = director(KnownHost::Its);
    let artifacts = d.vm.artifacts().display().to_string();
    let run = d.run_remote(
        // Waits as a host that drops packets would, and ends once its session does.
        "cat >/dev/null",
        &[
            "--connect-timeout",
            "3s",
            "backup",
            "--artifact-path",
            &artifacts,
        ],
    );
    run.assert_code(1)
        .assert_stderr_contains("bosh/0: cannot reach the agent with `ssh ")
        .assert_stderr_contains("no answer within 3s: check that the VM is reachable");
    d.nothing_ran(&run.explain());
}

/// Issue 15: `{{ agent }}` in director mode's remote command (its default is `sudo {{ agent }}
/// serve`) brings the driver's agent to a director that has none, over the one session.
#[test]
fn a_director_without_an_agent_gets_the_drivers_over_its_session() {
    let d = director(KnownHost::Its);
    let tmp = d.vm.dir.path().join("data-tmp");
    fs::create_dir_all(&tmp).unwrap();
    let remote = format!(
        "BBR_AGENT_INSTALLED=/nonexistent/bbr-agent BBR_AGENT_TMP={} {{{{ agent }}}} --root {} serve",
        tmp.display(),
        d.vm.root().display()
    );
    let artifacts = d.vm.artifacts().display().to_string();
    let run = d.run_remote(&remote, &["backup", "--artifact-path", &artifacts]);
    run.assert_success()
        .assert_stdout_contains("bosh/0: no bbr-agent of protocol")
        .assert_stdout_contains("bosh/0: agent brought");
    assert_eq!(d.sshd.sessions(), 1, "one SSH session\n{}", run.explain());
    assert!(
        d.vm.artifact_dir().join("bosh-0-director-db.tar").exists(),
        "{}",
        run.explain()
    );
    assert_eq!(
        fs::read_dir(&tmp).unwrap().count(),
        0,
        "nothing left on the director\n{}",
        run.explain()
    );
}

#[test]
fn bosh_all_proxy_reaches_the_director_vm_through_the_jumpbox() {
    let d = director(KnownHost::Its);
    let jump = Sshd::start_logging("DEBUG1");
    let known = d.home.path().join(".ssh/known_hosts");
    let mut text = fs::read_to_string(&known).unwrap();
    text.push_str(&format!(
        "[127.0.0.1]:{} {}\n",
        jump.port,
        jump.host_public_key()
    ));
    fs::write(&known, text).unwrap();
    let host = format!("127.0.0.1:{}", d.sshd.port);
    let artifacts = d.vm.artifacts().display().to_string();
    let mut command = Command::new(AGENT);
    command
        .args([
            "director",
            "--host",
            &host,
            "--username",
            "root",
            "--private-key-path",
        ])
        .arg(d.sshd.key())
        .args(["backup", "-a", &artifacts])
        .current_dir(d.vm.dir.path())
        .env("HOME", d.home.path())
        .env(
            "BBR_AGENT_REMOTE_COMMAND",
            format!("{AGENT} --root {} serve", d.vm.root().display()),
        )
        .env(
            "BOSH_ALL_PROXY",
            format!(
                "ssh+socks5://root@127.0.0.1:{}?private-key={}",
                jump.port,
                jump.key().display()
            ),
        );
    let run = Run::of(&mut command, d.vm.dir.path());
    run.assert_success();
    let target = format!("target 127.0.0.1 port {}", d.sshd.port);
    assert!(
        jump.log().contains(&target),
        "the director VM was reached through the jumpbox\n{}\n{}",
        jump.log(),
        run.explain()
    );
    assert!(d.vm.artifact_dir().join("bosh-0-director-db.tar").exists());
}
