//! BBR's own command line end to end: `bbr-agent deployment -t URL -u NAME -p SECRET
//! --ca-cert CA -d NAME ...`, no inventory. A director stand-in (tests/common/director_standin.rs,
//! whose doc comment says which director behaviour it models) lists a 3-instance deployment
//! and creates the temporary SSH user on the test's real sshd; the driver reaches each
//! instance through OpenSSH with the host key the director reported, and the user is gone
//! after every run: a good one, a failed one and an interrupted one. Bad input (a wrong
//! password, a CA that does not match, a deployment that does not exist, a host key that is
//! not the VM's) is one clear line and a non-zero exit, with nothing locked.

mod common;
mod faults_support;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;

use common::director_standin::{
    DirectorStandin, Options, StandinAuth, StandinVm, unix_user_exists, unrelated_ca_pem,
};
use common::fleet::Fleet;
use common::sshd::Sshd;
use common::{AGENT, Run, tree, write_file};
use faults_support::{Spawned, eventually};

const MEMBERS: [(&str, u32); 3] = [("api", 0), ("db", 0), ("db", 1)];

struct Scenario {
    sshd: Sshd,
    fleet: Fleet,
    standin: DirectorStandin,
}

fn uaa() -> StandinAuth {
    StandinAuth::Uaa {
        client: "admin".into(),
        secret: "s3cret".into(),
    }
}

fn id_of(group: &str, index: u32) -> String {
    format!("{group}{index}-5f0c-4b7e-9d2a")
}

/// api/0 with a job that locks first and records which temporary users have a key while it
/// runs; db/0 and db/1 with a job that backs up and restores real files.
fn scenario(auth: StandinAuth, token_uses: Option<u32>, wrong_host_key: bool) -> Scenario {
    scenario_with(auth, token_uses, wrong_host_key, |_| {})
}

/// [`scenario`], with the stand-in's options changed by `change`.
fn scenario_with(
    auth: StandinAuth,
    token_uses: Option<u32>,
    wrong_host_key: bool,
    change: impl FnOnce(&mut Options),
) -> Scenario {
    // DEBUG1: sshd logs the cipher each connection agreed on.
    let sshd = Sshd::start_logging("DEBUG1");
    let mut fleet = Fleet::new();
    let keys = sshd.authorized_keys();
    fleet
        .add("api", 0)
        .job("api-lock")
        .recording_locks()
        .script(
            "pre-backup-lock",
            &format!(
                "echo \"$ME\" >> \"$LOG\"\nfor u in $(grep -o ' bosh_[0-9a-f]*$' '{}'); do echo \"key of $u\" >> \"$LOG\"; done",
                keys.display()
            ),
        )
        .metadata("backup_should_be_locked_before:\n- {job_name: db, release: acme}");
    for i in 0..2 {
        let db = fleet.add("db", i);
        db.job("db").recording_locks().copying_backup_restore();
        write_file(
            &db.data_dir("db").join("dump.sql"),
            format!("rows of db/{i}\n").as_bytes(),
        );
    }
    let vms = MEMBERS
        .iter()
        .map(|(group, index)| StandinVm {
            group: group.to_string(),
            index: *index,
            id: id_of(group, *index),
            bootstrap: *index == 0,
            host_public_key: if wrong_host_key && *group == "db" && *index == 1 {
                sshd.other_host_public_key()
            } else {
                sshd.host_public_key()
            },
            ssh_port: sshd.port,
        })
        .collect();
    let mut options = Options {
        auth,
        deployments: vec![
            ("acme".into(), vms),
            ("other-deployment".into(), Vec::new()),
        ],
        authorized_keys: keys,
        token_uses,
        releases: Vec::new(),
        fail_setup_of: None,
        fail_cleanup: false,
        one_for_all: Vec::new(),
        hang_on: None,
        setup_never_ends: false,
    };
    change(&mut options);
    let standin = DirectorStandin::start(options);
    Scenario {
        sshd,
        fleet,
        standin,
    }
}

impl Scenario {
    /// The agent command on each "VM": the stand-in's instances are the fleet's trees.
    fn remote_command(&self) -> String {
        let mut chain = String::new();
        for (n, m) in self.fleet.members.iter().enumerate() {
            let (group, index) = (&m.group, m.index);
            chain.push_str(&format!(
                "{{% {} group == \"{group}\" and index == {index} and id == \"{}\" %}}{}",
                if n == 0 { "if" } else { "elif" },
                id_of(group, index),
                m.vm.root().display()
            ));
        }
        chain.push_str("{% else %}/nonexistent{% endif %}");
        format!("{AGENT} --root {chain} serve")
    }

    fn args(&self, password: &str, ca: &str, deployment: &str, rest: &[&str]) -> Vec<String> {
        let mut all: Vec<String> = [
            "deployment",
            "-t",
            &self.standin.url,
            "-u",
            "admin",
            "-p",
            password,
            "--ca-cert",
            ca,
            "-d",
            deployment,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        all.extend(rest.iter().map(|s| s.to_string()));
        all
    }

    fn command(&self, args: &[String]) -> Command {
        let mut command = Command::new(AGENT);
        command
            .args(args)
            .current_dir(self.fleet.dir.path())
            .env("BBR_AGENT_REMOTE_COMMAND", self.remote_command());
        for var in [
            "BOSH_ENVIRONMENT",
            "BOSH_CLIENT",
            "BOSH_CLIENT_SECRET",
            "BOSH_DEPLOYMENT",
            "BOSH_CA_CERT",
            "CA_CERT",
        ] {
            command.env_remove(var);
        }
        command
    }

    /// The driver with a good password and CA against deployment `acme`.
    fn driver(&self, rest: &[&str]) -> Run {
        let ca = self.standin.ca_path().display().to_string();
        self.run(&self.args("s3cret", &ca, "acme", rest))
    }

    fn run(&self, args: &[String]) -> Run {
        Run::of(&mut self.command(args), self.fleet.dir.path())
    }

    fn backup(&self) -> Run {
        let artifacts = self.fleet.artifacts().display().to_string();
        self.driver(&["backup", "--artifact-path", &artifacts])
    }

    /// Temporary users with a key in the sshd's authorized_keys.
    fn keyed_users(&self) -> Vec<String> {
        fs::read_to_string(self.sshd.authorized_keys())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(2))
            .filter(|c| c.starts_with("bosh_"))
            .map(str::to_string)
            .collect()
    }

    /// The temporary user is gone: its key, its Unix user, and the stand-in's record of it.
    fn assert_user_gone(&self, explain: &str) {
        assert_eq!(
            self.keyed_users(),
            Vec::<String>::new(),
            "a key is left\n{explain}"
        );
        assert_eq!(
            self.standin.users(),
            Vec::<String>::new(),
            "a user is left\n{explain}"
        );
        let calls = self.standin.calls();
        assert!(
            calls.iter().any(|c| c == "POST /deployments/acme/ssh"),
            "no SSH setup was asked for: {calls:#?}\n{explain}"
        );
    }

    /// The users whose key the api job saw during the run.
    fn users_seen_during_the_run(&self) -> Vec<String> {
        self.fleet
            .calls()
            .iter()
            .filter_map(|c| c.strip_prefix("key of "))
            .map(str::to_string)
            .collect()
    }

    fn nothing_locked(&self, explain: &str) {
        let calls = self.fleet.calls();
        assert!(
            !calls.iter().any(|c| c.ends_with("lock")),
            "a lock or unlock script ran: {calls:#?}\n{explain}"
        );
    }
}

#[test]
fn backup_and_restore_of_a_deployment_with_bbrs_flags_only() {
    // Tokens stop working after 5 calls: the driver must ask the UAA again on its way.
    let s = scenario(uaa(), Some(5), false);
    let before: Vec<_> = (0..2)
        .map(|i| tree(&s.fleet.vm("db", i).data_dir("db")))
        .collect();

    let sessions = s.sshd.sessions();
    let run = s.backup();
    run.assert_success();
    assert_eq!(
        s.sshd.sessions() - sessions,
        3,
        "one SSH session per VM\n{}",
        run.explain()
    );
    let mut seen = s.users_seen_during_the_run();
    seen.dedup();
    assert_eq!(
        seen.len(),
        1,
        "the temporary user's key during the run: {seen:?}\n{}",
        run.explain()
    );
    assert!(
        seen[0].len() == 20 && seen[0].starts_with("bosh_"),
        "BBR's user names are bosh_ and 15 hex digits: {seen:?}"
    );
    s.assert_user_gone(&run.explain());
    // On a CPU with AES instructions the driver offers AES-GCM first, the cheaper cipher for
    // the VM under backup; OpenSSH alone would agree on chacha20-poly1305.
    let cpu = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let has = |flag: &str| cpu.split_whitespace().any(|w| w == flag);
    if has("aes") && has("pclmulqdq") {
        let log = s.sshd.log();
        let agreed: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("kex: client->server cipher:"))
            .collect();
        assert!(
            !agreed.is_empty()
                && agreed
                    .iter()
                    .all(|l| l.contains("cipher: aes128-gcm@openssh.com")),
            "the ciphers agreed: {agreed:#?}"
        );
    }
    assert!(
        !unix_user_exists(&seen[0]),
        "the Unix user {} is left",
        seen[0]
    );
    assert!(
        s.standin.grants() > 1,
        "the token was never renewed\n{}",
        run.explain()
    );
    let calls = s.fleet.calls();
    let at = |l: &str| {
        calls
            .iter()
            .position(|c| c == l)
            .unwrap_or_else(|| panic!("{l} missing: {calls:#?}"))
    };
    assert!(at("api/0 api-lock pre-backup-lock") < at("db/0 db pre-backup-lock"));
    assert!(at("db/1 db post-backup-unlock") < at("api/0 api-lock post-backup-unlock"));

    // The same artifact as an inventory's backup of the same VMs makes, byte for byte but
    // for the run's times.
    let artifact = s.fleet.artifact_dir();
    let other = s.fleet.dir.path().join("by-inventory");
    fs::create_dir_all(&other).unwrap();
    let inventory = s.fleet.local_inventory();
    s.fleet
        .driver(
            &inventory,
            &["backup", "--artifact-path", other.to_str().unwrap()],
        )
        .assert_success();
    let by_inventory = common::only_artifact_dir(&other);
    let files = |dir: &Path| {
        let mut files: Vec<(String, Vec<u8>)> = tree(dir)
            .into_iter()
            .filter(|(name, _)| name != "report.html")
            .map(|(name, bytes)| {
                let text = String::from_utf8_lossy(&bytes);
                match name.as_str() {
                    "metadata" => (name, without_times(&text).into_bytes()),
                    _ => (name, bytes),
                }
            })
            .collect();
        files.sort();
        files
    };
    assert_eq!(files(&artifact), files(&by_inventory), "{}", run.explain());
    let metadata = fs::read_to_string(artifact.join("metadata")).unwrap();
    assert!(
        metadata.contains("- name: db\n  index: '1'"),
        "metadata lacks db/1:\n{metadata}"
    );

    for i in 0..2 {
        fs::remove_dir_all(s.fleet.vm("db", i).data_dir("db")).unwrap();
    }
    let path = artifact.display().to_string();
    let run = s.driver(&["restore", "--artifact-path", &path]);
    run.assert_success();
    for i in 0..2 {
        assert_eq!(
            tree(&s.fleet.vm("db", i).data_dir("db")),
            before[i as usize],
            "db/{i}"
        );
    }
    s.assert_user_gone(&run.explain());
}

#[test]
fn pre_backup_check_and_cleanups_with_basic_auth_and_the_pem_itself() {
    let s = scenario(
        StandinAuth::Basic {
            user: "admin".into(),
            password: "s3cret".into(),
        },
        None,
        false,
    );
    let pem = s.standin.ca_pem.clone();
    for command in ["pre-backup-check", "backup-cleanup", "restore-cleanup"] {
        let run = s.run(&s.args("s3cret", &pem, "acme", &[command]));
        run.assert_success();
        s.assert_user_gone(&run.explain());
    }
    assert_eq!(s.standin.grants(), 0, "basic auth asks no UAA");
}

#[test]
fn a_failed_backup_removes_the_temporary_user_too() {
    let s = scenario(uaa(), None, false);
    s.fleet.vm("db", 1).job("db").script(
        "backup",
        "echo \"$ME\" >> \"$LOG\"\necho 'disk on fire' >&2\nexit 1",
    );
    let run = s.backup();
    assert_ne!(run.code, Some(0), "{}", run.explain());
    run.assert_stderr_contains("disk on fire");
    let mut seen = s.users_seen_during_the_run();
    seen.dedup();
    assert_eq!(seen.len(), 1, "{}", run.explain());
    s.assert_user_gone(&run.explain());
    let calls = s.fleet.calls();
    assert!(
        calls
            .iter()
            .any(|c| c == "api/0 api-lock post-backup-unlock"),
        "{calls:#?}"
    );
}

#[test]
fn an_interrupted_backup_removes_the_temporary_user_too() {
    let s = scenario(uaa(), None, false);
    s.fleet
        .vm("db", 0)
        .job("db")
        .script("backup", "echo \"$ME\" >> \"$LOG\"\nsleep 60 &\nwait");
    let mut driver = Spawned::start(
        s.fleet.dir.path(),
        &s.args(
            "s3cret",
            &s.standin.ca_path().display().to_string(),
            "acme",
            &[
                "backup",
                "--artifact-path",
                &s.fleet.artifacts().display().to_string(),
            ],
        ),
        &[("BBR_AGENT_REMOTE_COMMAND", &s.remote_command())],
    );
    let started = eventually(Duration::from_secs(30), || {
        s.fleet.calls().iter().any(|c| c == "db/0 db backup")
    });
    assert!(started, "the backup never started\n{}", driver.explain());
    let mut keyed = s.keyed_users();
    keyed.dedup();
    assert_eq!(
        keyed.len(),
        1,
        "the key during the run\n{}",
        driver.explain()
    );
    driver.signal(Signal::SIGTERM);
    let exit = driver.wait(Duration::from_secs(60));
    exit.assert_code(143);
    s.assert_user_gone(&exit.explain);
    // Each agent unlocks on its own once its session ends: soon after the driver exits.
    let unlocked = eventually(Duration::from_secs(20), || {
        let calls = s.fleet.calls();
        [
            "db/0 db post-backup-unlock",
            "db/1 db post-backup-unlock",
            "api/0 api-lock post-backup-unlock",
        ]
        .iter()
        .all(|l| calls.iter().any(|c| c == l))
    });
    assert!(
        unlocked,
        "everything locked is unlocked: {:?}\n{}",
        fs::read_to_string(s.fleet.log_path()),
        exit.explain
    );
}

/// Metadata without the lines that hold a run's times.
fn without_times(metadata: &str) -> String {
    metadata
        .lines()
        .filter(|l| !l.contains("_time:") && !l.contains("timestamp"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The one `error:` line of a failed run, which must say `says`.
fn assert_one_clear_line(run: &Run, says: &[&str]) {
    assert_eq!(run.code, Some(1), "{}", run.explain());
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line\n{}", run.explain());
    for s in says {
        assert!(
            errors[0].contains(s),
            "the error lacks {s:?}\n{}",
            run.explain()
        );
    }
}

#[test]
fn a_wrong_password_is_said_to_be_one() {
    let s = scenario(uaa(), None, false);
    let ca = s.standin.ca_path().display().to_string();
    let run = s.run(&s.args("wrong", &ca, "acme", &["pre-backup-check"]));
    assert_one_clear_line(
        &run,
        &[
            "refused the client 'admin'",
            "Bad credentials",
            "--password",
        ],
    );
    s.nothing_locked(&run.explain());

    let s = scenario(
        StandinAuth::Basic {
            user: "admin".into(),
            password: "s3cret".into(),
        },
        None,
        false,
    );
    let ca = s.standin.ca_path().display().to_string();
    let run = s.run(&s.args("wrong", &ca, "acme", &["backup"]));
    assert_one_clear_line(&run, &["refused user 'admin'", "--password"]);
    s.nothing_locked(&run.explain());
}

#[test]
fn a_ca_that_does_not_match_is_refused() {
    let s = scenario(uaa(), None, false);
    let run = s.run(&s.args("s3cret", &unrelated_ca_pem(), "acme", &["backup"]));
    assert_one_clear_line(&run, &["not trusted", "--ca-cert"]);
    s.nothing_locked(&run.explain());
    assert!(
        s.standin.calls().is_empty(),
        "no request got through: {:?}",
        s.standin.calls()
    );
}

#[test]
fn a_deployment_that_does_not_exist_names_those_that_do() {
    let s = scenario(uaa(), None, false);
    let ca = s.standin.ca_path().display().to_string();
    let run = s.run(&s.args("s3cret", &ca, "acmee", &["backup"]));
    assert_one_clear_line(&run, &["'acmee' does not exist", "acme, other-deployment"]);
    s.nothing_locked(&run.explain());
}

#[test]
fn a_host_key_that_is_not_what_the_director_said_stops_the_run_before_any_lock() {
    let s = scenario(uaa(), None, true);
    let run = s.backup();
    assert_eq!(run.code, Some(1), "{}", run.explain());
    run.assert_stderr_contains("db/1");
    run.assert_stderr_contains("the VM's SSH host key is not the one expected");
    assert!(!run.stderr.contains("@@@"), "no banner\n{}", run.explain());
    s.nothing_locked(&run.explain());
    s.assert_user_gone(&run.explain());
}

#[test]
fn a_director_and_an_inventory_together_or_neither_is_a_usage_error() {
    let s = scenario(uaa(), None, false);
    let inventory = s.fleet.local_inventory();
    let mut args = s.args("s3cret", "x", "acme", &["backup"]);
    args.splice(
        1..1,
        ["--inventory".to_string(), inventory.display().to_string()],
    );
    let run = s.run(&args);
    run.assert_code(2)
        .assert_stderr_contains("--inventory and a director");
    let run = s.run(&["deployment".to_string(), "backup".to_string()]);
    run.assert_code(2).assert_stderr_contains("--target");
    assert!(s.standin.calls().is_empty());
}

#[test]
fn bbrs_environment_variables_stand_for_the_flags() {
    let s = scenario(uaa(), None, false);
    let mut command = s.command(&["deployment".to_string(), "pre-backup-check".to_string()]);
    command
        .env("BOSH_ENVIRONMENT", &s.standin.url)
        .env("BOSH_CLIENT", "admin")
        .env("BOSH_CLIENT_SECRET", "s3cret")
        .env("BOSH_DEPLOYMENT", "acme")
        .env("CA_CERT", &s.standin.ca_pem);
    let run = Run::of(&mut command, s.fleet.dir.path());
    run.assert_success();
    s.assert_user_gone(&run.explain());
}

#[test]
fn an_instance_whose_ssh_setup_fails_is_named_and_nothing_is_locked() {
    let s = scenario_with(uaa(), None, false, |o| {
        o.fail_setup_of = Some(id_of("db", 1));
    });
    let run = s.backup();
    assert_one_clear_line(
        &run,
        &[
            &format!("instance db/{}", id_of("db", 1)),
            "could not set up SSH",
            "failure",
        ],
    );
    s.nothing_locked(&run.explain());
    s.assert_user_gone(&run.explain());
}

#[test]
fn a_failed_cleanup_is_a_warning_naming_the_user_and_the_backup_stands() {
    let s = scenario_with(uaa(), None, false, |o| o.fail_cleanup = true);
    let run = s.backup();
    run.assert_success();
    let user = s
        .standin
        .users()
        .pop()
        .expect("the user is left, as the cleanup failed");
    run.assert_stderr_contains(&format!(
        "the temporary SSH user {user} may still be on the VMs of acme/api"
    ));
    run.assert_stderr_contains(&format!("userdel -r {user}"));
    assert!(
        s.fleet.artifact_dir().join("db-1-db.tar").exists(),
        "the backup stands\n{}",
        run.explain()
    );
}

#[test]
fn lock_order_entries_match_a_job_only_from_the_release_they_name() {
    // api-lock is locked before `db` of release `acme`: that is db/0's, by the manifest; the
    // `db` of legacy/0 comes from release `legacy` and is not ordered after api-lock. So
    // api-lock's lock waits to see legacy/0's lock: matched on the name alone, legacy/0 would
    // wait for api-lock, and api-lock would give up.
    let sshd = Sshd::start();
    let fleet = Fleet::release_ordered();
    let vms = fleet
        .members
        .iter()
        .map(|m| StandinVm {
            group: m.group.clone(),
            index: m.index,
            id: id_of(&m.group, m.index),
            bootstrap: true,
            host_public_key: sshd.host_public_key(),
            ssh_port: sshd.port,
        })
        .collect();
    let release = |g: &str, j: &str, r: &str| (g.to_string(), j.to_string(), r.to_string());
    let standin = DirectorStandin::start(Options {
        auth: uaa(),
        deployments: vec![("acme".into(), vms)],
        authorized_keys: sshd.authorized_keys(),
        token_uses: None,
        releases: vec![
            release("api", "api-lock", "acme"),
            release("db", "db", "acme"),
            release("legacy", "db", "legacy"),
        ],
        fail_setup_of: None,
        fail_cleanup: false,
        one_for_all: Vec::new(),
        hang_on: None,
        setup_never_ends: false,
    });
    let s = Scenario {
        sshd,
        fleet,
        standin,
    };
    let run = s.backup();
    run.assert_success();
    let calls = s.fleet.calls();
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
        at("db/0 db post-backup-unlock") < at("api/0 api-lock post-backup-unlock"),
        "{calls:#?}"
    );
    s.assert_user_gone(&run.explain());
}

#[test]
fn with_manifest_stores_the_directors_manifest_and_the_artifact_still_restores() {
    let s = scenario(uaa(), None, false);
    let artifacts = s.fleet.artifacts().display().to_string();
    let run = s.driver(&["backup", "--with-manifest", "--artifact-path", &artifacts]);
    run.assert_success();
    let artifact = s.fleet.artifact_dir();
    let manifest = fs::read_to_string(artifact.join("manifest.yml"))
        .unwrap_or_else(|e| panic!("no manifest.yml ({e})\n{}", run.explain()));
    assert!(
        manifest.starts_with("name: acme\ninstance_groups:\n- name: api\n"),
        "the director's manifest as it gave it:\n{manifest}"
    );
    let path = artifact.display().to_string();
    s.driver(&["restore", "--artifact-path", &path])
        .assert_success();

    let inventory = s.fleet.local_inventory();
    s.fleet
        .driver(&inventory, &["backup", "--with-manifest"])
        .assert_code(2)
        .assert_stderr_contains("--with-manifest needs a director");
}

/// redis/0..2, each with job `redis-server` of release `redis` (its data: which VM it is on),
/// the manifest setting `bbr.backup_one_restore_all` on it, and redis/`bootstrap` the
/// director's bootstrap instance. `backs_up(i)`: whether redis/i's job has a backup script.
fn one_for_all_scenario(bootstrap: u32, backs_up: impl Fn(u32) -> bool) -> Scenario {
    let sshd = Sshd::start();
    let mut fleet = Fleet::new();
    for i in 0..3 {
        let vm = fleet.add("redis", i);
        let data = vm.data_dir("redis-server");
        let job = vm.job("redis-server");
        if backs_up(i) {
            job.copying_backup_restore();
        } else {
            fs::create_dir_all(&data).unwrap();
            job.script(
                "restore",
                &format!(
                    "echo \"$ME\" >> \"$LOG\"\ncp -a \"$BBR_ARTIFACT_DIRECTORY\". '{}/'",
                    data.display()
                ),
            );
        }
        write_file(
            &data.join("dump.rdb"),
            format!("keys of redis/{i}\n").as_bytes(),
        );
    }
    let vms = fleet
        .members
        .iter()
        .map(|m| StandinVm {
            group: m.group.clone(),
            index: m.index,
            id: id_of(&m.group, m.index),
            bootstrap: m.index == bootstrap,
            host_public_key: sshd.host_public_key(),
            ssh_port: sshd.port,
        })
        .collect();
    let standin = DirectorStandin::start(Options {
        auth: uaa(),
        deployments: vec![("acme".into(), vms)],
        authorized_keys: sshd.authorized_keys(),
        token_uses: None,
        releases: vec![("redis".into(), "redis-server".into(), "redis".into())],
        fail_setup_of: None,
        fail_cleanup: false,
        one_for_all: vec![("redis".into(), "redis-server".into())],
        hang_on: None,
        setup_never_ends: false,
    });
    Scenario {
        sshd,
        fleet,
        standin,
    }
}

const ONE_FOR_ALL_TAR: &str = "redis-server-redis-backup-one-restore-all.tar";

#[test]
fn a_backup_one_restore_all_job_is_backed_up_from_the_bootstrap_and_restored_to_all() {
    // redis/1 is the bootstrap instance: its artifact is the named one, listed under
    // custom_artifacts; redis/0 and redis/2 back up too (as under BBR), into plain artifacts
    // that no restore reads. The restore gives every instance redis/1's data.
    let s = one_for_all_scenario(1, |_| true);
    let run = s.backup();
    run.assert_success();
    let artifact = s.fleet.artifact_dir();
    let mut names: Vec<String> = tree(&artifact).into_iter().map(|(n, _)| n).collect();
    names.retain(|n| n.ends_with(".tar"));
    names.sort();
    assert_eq!(
        names,
        [
            "redis-0-redis-server.tar",
            "redis-2-redis-server.tar",
            ONE_FOR_ALL_TAR,
        ],
        "{}",
        run.explain()
    );
    let metadata = fs::read_to_string(artifact.join("metadata")).unwrap();
    let parsed: serde_yaml::Value = serde_yaml::from_str(&metadata).unwrap();
    let custom = &parsed["custom_artifacts"];
    assert_eq!(
        custom[0]["name"].as_str(),
        Some("redis-server-redis-backup-one-restore-all"),
        "{metadata}"
    );
    assert!(
        custom[0]["checksums"]["./dump.rdb"].is_string(),
        "{metadata}"
    );
    let listed: Vec<&str> = parsed["instances"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|i| i["index"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        ["0", "2"],
        "the bootstrap is not under instances:\n{metadata}"
    );

    for i in 0..3 {
        fs::remove_dir_all(s.fleet.vm("redis", i).data_dir("redis-server")).unwrap();
    }
    let path = artifact.display().to_string();
    let run = s.driver(&["restore", "--artifact-path", &path]);
    run.assert_success();
    assert!(
        !run.stderr.contains("not restored"),
        "the plain artifacts of the job are not worth a warning\n{}",
        run.explain()
    );
    for i in 0..3 {
        let dump = s
            .fleet
            .vm("redis", i)
            .data_dir("redis-server")
            .join("dump.rdb");
        assert_eq!(
            fs::read_to_string(&dump).unwrap_or_default(),
            "keys of redis/1\n",
            "redis/{i} got the bootstrap's artifact\n{}",
            run.explain()
        );
    }
    s.assert_user_gone(&run.explain());
}

#[test]
fn a_backup_one_restore_all_artifact_written_by_bbr_restores_to_every_instance() {
    // BBR's own shape (its restore fixture): the named tar, `custom_artifacts:` with its
    // checksums, and `instances:` holding only the non-bootstrap instances' plain artifacts.
    let s = one_for_all_scenario(0, |_| true);
    let dir = s.fleet.artifacts().join("acme_20190227T101030Z");
    fs::create_dir_all(&dir).unwrap();
    let content = b"keys from bbr\n";
    tar_of_one_file(&dir.join(ONE_FOR_ALL_TAR), content);
    for i in 1..3 {
        tar_of_one_file(
            &dir.join(format!("redis-{i}-redis-server.tar")),
            b"ignored\n",
        );
    }
    fs::write(
        dir.join("metadata"),
        format!(
            "instances:\n- name: redis\n  index: \"1\"\n  artifacts:\n  - name: redis-server\n    checksums:\n      ./dump.rdb: {p}\n- name: redis\n  index: \"2\"\n  artifacts:\n  - name: redis-server\n    checksums:\n      ./dump.rdb: {p}\ncustom_artifacts:\n- name: redis-server-redis-backup-one-restore-all\n  checksums:\n    ./dump.rdb: {c}\nbackup_activity:\n  start_time: 2019/02/27 10:10:30 GMT\n  finish_time: 2019/02/27 10:10:31 GMT\n",
            p = sha256_hex(b"ignored\n"),
            c = sha256_hex(content)
        ),
    )
    .unwrap();
    let path = dir.display().to_string();
    let run = s.driver(&["restore", "--artifact-path", &path]);
    run.assert_success();
    for i in 0..3 {
        let dump = s
            .fleet
            .vm("redis", i)
            .data_dir("redis-server")
            .join("dump.rdb");
        assert_eq!(
            fs::read(&dump).unwrap_or_default(),
            content,
            "redis/{i}\n{}",
            run.explain()
        );
    }
}

#[test]
fn a_backup_one_restore_all_job_its_bootstrap_cannot_back_up_is_refused_before_any_lock() {
    // The bootstrap redis/0 has the job's restore script but no backup script: no backup
    // would hold the one artifact the group restores from.
    let s = one_for_all_scenario(0, |i| i != 0);
    let run = s.backup();
    assert_one_clear_line(
        &run,
        &[
            "instance group 'redis' job redis-server",
            "bbr.backup_one_restore_all",
            "redis/0 has no backup script",
        ],
    );
    s.nothing_locked(&run.explain());
    assert!(
        !s.fleet.calls().iter().any(|c| c.ends_with(" backup")),
        "a backup script ran: {:#?}",
        s.fleet.calls()
    );
    s.assert_user_gone(&run.explain());
}

/// A tar as BBR's `tar -C DIR -c .` makes it, of one file `./dump.rdb` holding `content`.
fn tar_of_one_file(tar: &Path, content: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("dump.rdb"), content).unwrap();
    let status = Command::new("tar")
        .arg("-C")
        .arg(dir.path())
        .arg("-cf")
        .arg(tar)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success(), "tar failed");
}

fn sha256_hex(content: &[u8]) -> String {
    let file = tempfile::NamedTempFile::new().unwrap();
    fs::write(file.path(), content).unwrap();
    let out = Command::new("sha256sum").arg(file.path()).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// [`scenario`] with a second deployment, `cache` (cache/0, one job `cache` that backs up
/// real files; its pre-backup-lock fails when `cache_lock_fails`), beside `acme` and the
/// VM-less `other-deployment`.
fn two_deployments(cache_lock_fails: bool) -> Scenario {
    let mut s = scenario_with(uaa(), None, false, |o| {
        let mut vm = o.deployments[0].1[0].clone();
        vm.group = "cache".into();
        vm.index = 0;
        vm.id = id_of("cache", 0);
        vm.bootstrap = true;
        o.deployments.push(("cache".into(), vec![vm]));
    });
    let cache = s.fleet.add("cache", 0);
    let job = cache.job("cache");
    job.recording_locks().copying_backup_restore();
    if cache_lock_fails {
        job.script("pre-backup-lock", "echo \"$ME\" >> \"$LOG\"\nexit 1");
    }
    write_file(&cache.data_dir("cache").join("entries"), b"cached\n");
    s
}

#[test]
fn all_deployments_backs_up_each_into_its_own_artifact_and_ors_the_exit_bits() {
    let s = two_deployments(true);
    let artifacts = s.fleet.artifacts();
    let path = artifacts.display().to_string();
    let args = {
        let mut a = s.args(
            "s3cret",
            &s.standin.ca_path().display().to_string(),
            "x",
            &[],
        );
        // No --deployment: every deployment instead.
        let at = a.iter().position(|w| w == "-d").unwrap();
        a.drain(at..at + 2);
        a.extend(["--all-deployments", "backup", "--artifact-path", &path].map(String::from));
        a
    };
    let run = s.run(&args);
    // cache's lock failed (4); acme backed up; other-deployment has no VMs.
    run.assert_code(4);
    for line in [
        "acme: backed up",
        "cache: cannot be backed up (exit 4)",
        "other-deployment: skipped, none of its VMs has a BBR script",
        "1 out of 3 deployments cannot be backed up: cache",
    ] {
        run.assert_stdout_contains(line);
    }
    let mut dirs: Vec<String> = fs::read_dir(&artifacts)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    assert_eq!(dirs.len(), 2, "{dirs:?}\n{}", run.explain());
    assert!(
        dirs[0].starts_with("acme_") && dirs[1].starts_with("cache_"),
        "{dirs:?}"
    );
    let acme = fs::read_to_string(artifacts.join(&dirs[0]).join("metadata")).unwrap();
    assert!(acme.contains("finish_time"), "acme is a backup:\n{acme}");
    let cache = fs::read_to_string(artifacts.join(&dirs[1]).join("metadata")).unwrap();
    assert!(!cache.contains("finish_time"), "cache is not:\n{cache}");
    let calls = s.fleet.calls();
    assert!(
        calls.iter().any(|c| c == "db/1 db post-backup-unlock"),
        "{calls:#?}"
    );
    // Every deployment's temporary user is gone.
    assert_eq!(s.keyed_users(), Vec::<String>::new(), "{}", run.explain());
    assert_eq!(s.standin.users(), Vec::<String>::new(), "{}", run.explain());
    let calls = s.standin.calls();
    for d in ["acme", "cache"] {
        assert!(
            calls
                .iter()
                .any(|c| c == &format!("POST /deployments/{d}/ssh")),
            "{d}: {calls:#?}"
        );
    }
}

#[test]
fn all_deployments_pre_backup_check_and_backup_cleanup_pass_when_every_one_does() {
    let s = two_deployments(false);
    let ca = s.standin.ca_path().display().to_string();
    for command in ["pre-backup-check", "backup-cleanup"] {
        let mut args = s.args("s3cret", &ca, "x", &[]);
        let at = args.iter().position(|w| w == "-d").unwrap();
        args.drain(at..at + 2);
        args.extend(["--all-deployments", command].map(String::from));
        let run = s.run(&args);
        run.assert_success();
        run.assert_stdout_contains("2 of 3 deployments ")
            .assert_stdout_contains("(1 skipped: no BBR scripts)");
        if command == "pre-backup-check" {
            s.nothing_locked(&run.explain());
        } else {
            // A cleanup runs every unlock script, as BBR's: in both deployments.
            let calls = s.fleet.calls();
            for l in [
                "cache/0 cache post-backup-unlock",
                "db/1 db post-backup-unlock",
            ] {
                assert!(calls.iter().any(|c| c == l), "{l}: {calls:#?}");
            }
        }
    }
    assert_eq!(s.standin.users(), Vec::<String>::new());
}

#[test]
fn all_deployments_with_a_deployment_a_restore_or_lock_free_is_a_usage_error() {
    let s = two_deployments(false);
    let ca = s.standin.ca_path().display().to_string();
    let artifacts = s.fleet.artifacts().display().to_string();
    for (rest, says) in [
        (
            vec!["--all-deployments", "backup"],
            "give one of --deployment",
        ),
        (
            vec![
                "--all-deployments",
                "restore",
                "--artifact-path",
                &artifacts,
            ],
            "--all-deployments is for pre-backup-check, backup and backup-cleanup",
        ),
        (
            vec!["--all-deployments", "restore-cleanup"],
            "--all-deployments is for pre-backup-check, backup and backup-cleanup",
        ),
    ] {
        let run = s.run(&s.args("s3cret", &ca, "acme", &rest));
        run.assert_code(2).assert_stderr_contains(says);
    }
    let mut args = s.args("s3cret", &ca, "x", &[]);
    let at = args.iter().position(|w| w == "-d").unwrap();
    args.drain(at..at + 2);
    args.extend(["--all-deployments", "backup", "--unsafe-lock-free"].map(String::from));
    s.run(&args)
        .assert_code(2)
        .assert_stderr_contains("--unsafe-lock-free cannot be used with --all-deployments");
    let inventory = s.fleet.local_inventory();
    s.fleet
        .driver(&inventory, &["--all-deployments", "backup"])
        .assert_code(2)
        .assert_stderr_contains("--all-deployments needs a director");
    assert!(
        !s.standin.calls().iter().any(|c| c.contains("/ssh")),
        "no SSH was set up: {:#?}",
        s.standin.calls()
    );
    s.nothing_locked("usage errors");
}

/// A director whose SSH setup task never ends (its agents slow or gone): Ctrl-C stops the
/// wait at once (not after the setup task's limit of 10 minutes), the user is cleaned up, and
/// nothing is locked.
#[test]
fn ctrl_c_while_the_director_sets_up_ssh_stops_the_wait_at_once() {
    let s = scenario_with(uaa(), None, false, |o| o.setup_never_ends = true);
    let ca = s.standin.ca_path().display().to_string();
    let artifacts = s.fleet.artifacts().display().to_string();
    let mut driver = Spawned::start(
        s.fleet.dir.path(),
        &s.args("s3cret", &ca, "acme", &["backup", "-a", &artifacts]),
        &[("BBR_AGENT_REMOTE_COMMAND", &s.remote_command())],
    );
    // Three polls of the setup task, after its POST: the driver is in the wait.
    let polling = eventually(Duration::from_secs(30), || {
        let calls = s.standin.calls();
        let setup = calls
            .iter()
            .position(|c| c.starts_with("POST /deployments/acme/ssh"));
        setup.is_some_and(|i| {
            calls[i..]
                .iter()
                .filter(|c| c.starts_with("GET /tasks/"))
                .count()
                >= 3
        })
    });
    assert!(
        polling,
        "the setup task was never polled\n{}",
        driver.explain()
    );
    driver.signal(Signal::SIGINT);
    let exit = driver.wait(Duration::from_secs(20));
    assert_ne!(exit.code, Some(0), "{}", exit.explain);
    assert!(
        exit.stderr
            .contains("interrupted while the director set up SSH; its temporary user was removed"),
        "the error says the wait was interrupted\n{}",
        exit.explain
    );
    s.assert_user_gone(&exit.explain);
    s.nothing_locked(&exit.explain);
}

#[test]
fn a_director_that_does_not_answer_is_said_in_one_line_and_nothing_is_touched() {
    // The VM list is never answered; BBR_AGENT_DIRECTOR_TIMEOUT shortens the 5 minutes a call
    // may take to 2 s.
    let s = scenario_with(uaa(), None, false, |o| {
        o.hang_on = Some("/deployments/acme/vms".into())
    });
    let ca = s.standin.ca_path().display().to_string();
    let artifacts = s.fleet.artifacts().display().to_string();
    let args = s.args("s3cret", &ca, "acme", &["backup", "-a", &artifacts]);
    let mut command = s.command(&args);
    command.env("BBR_AGENT_DIRECTOR_TIMEOUT", "2s");
    let run = Run::of(&mut command, s.fleet.dir.path());
    assert_one_clear_line(&run, &["the director did not answer within 2.0s", "/vms"]);
    s.nothing_locked(&run.explain());
    let calls = s.standin.calls();
    assert!(
        !calls.iter().any(|c| c.contains("/ssh")),
        "no SSH set up: {calls:#?}"
    );
    assert_eq!(
        fs::read_dir(s.fleet.artifacts()).unwrap().count(),
        0,
        "no artifact directory\n{}",
        run.explain()
    );
}

/// A second sshd as the jumpbox of `BOSH_ALL_PROXY`, logging each forwarded connection's
/// target, and a HOME whose ~/.ssh/known_hosts holds its host key (`known`) or not.
struct Jump {
    sshd: Sshd,
    home: tempfile::TempDir,
}

impl Jump {
    fn start(known: bool) -> Jump {
        let sshd = Sshd::start_logging("DEBUG1");
        let home = tempfile::tempdir().unwrap();
        let key = sshd.host_public_key();
        let mut line = format!("[127.0.0.1]:{} ", sshd.port);
        line.push_str(&key.split_whitespace().take(2).collect::<Vec<_>>().join(" "));
        let known_hosts = if known { line } else { String::new() };
        write_file(
            &home.path().join(".ssh/known_hosts"),
            format!("{known_hosts}\n").as_bytes(),
        );
        Jump { sshd, home }
    }

    fn all_proxy(&self) -> String {
        format!(
            "ssh+socks5://root@127.0.0.1:{}?private-key={}",
            self.sshd.port,
            self.sshd.key().display()
        )
    }

    /// The ports the jumpbox forwarded connections to.
    fn forwarded_to(&self) -> Vec<String> {
        self.sshd
            .log()
            .lines()
            .filter(|l| l.contains("server_request_direct_tcpip"))
            .filter_map(|l| l.rsplit("port ").next().map(|p| p.trim().to_string()))
            .collect()
    }
}

fn through(s: &Scenario, jump: &Jump, rest: &[&str]) -> Run {
    let ca = s.standin.ca_path().display().to_string();
    let args = s.args("s3cret", &ca, "acme", rest);
    let mut command = s.command(&args);
    command
        .env("BOSH_ALL_PROXY", jump.all_proxy())
        .env("HOME", jump.home.path());
    Run::of(&mut command, s.fleet.dir.path())
}

#[test]
fn bosh_all_proxy_takes_the_api_and_every_vm_through_the_jumpbox() {
    let s = scenario(uaa(), None, false);
    let jump = Jump::start(true);
    let artifacts = s.fleet.artifacts().display().to_string();
    let run = through(&s, &jump, &["backup", "-a", &artifacts]);
    run.assert_success();
    let standin_port = s.standin.url.rsplit(':').next().unwrap().to_string();
    let forwarded = jump.forwarded_to();
    assert!(
        forwarded.contains(&standin_port),
        "the director's API went through the jumpbox: {forwarded:?}\n{}",
        run.explain()
    );
    let vm_port = s.sshd.port.to_string();
    assert_eq!(
        forwarded.iter().filter(|p| **p == vm_port).count(),
        3,
        "each VM's SSH went through the jumpbox: {forwarded:?}\n{}",
        run.explain()
    );
    s.assert_user_gone(&run.explain());
    // The tunnel ended with the run: every connection to the jumpbox was closed.
    let closed = eventually(Duration::from_secs(10), || {
        let log = jump.sshd.log();
        let port_of = |l: &str| {
            l.split(" port ")
                .nth(1)
                .and_then(|p| p.split(' ').next())
                .map(str::to_string)
        };
        let ended: Vec<String> = log
            .lines()
            .filter(|l| {
                [
                    "Connection closed by",
                    "Connection reset by",
                    "Disconnected from",
                ]
                .iter()
                .any(|s| l.starts_with(s))
            })
            .filter_map(port_of)
            .collect();
        log.lines()
            .filter(|l| l.starts_with("Accepted publickey"))
            .filter_map(port_of)
            .all(|p| ended.contains(&p))
    });
    assert!(
        closed,
        "a connection to the jumpbox is left:\n{}",
        jump.sshd.log()
    );
    assert!(jump.sshd.sessions() >= 4, "the tunnel and 3 VMs");
    let path = s.fleet.artifact_dir().display().to_string();
    through(&s, &jump, &["restore", "-a", &path]).assert_success();
}

#[test]
fn a_jumpbox_whose_host_key_is_not_known_or_a_proxy_not_understood_is_one_line() {
    let s = scenario(uaa(), None, false);
    let jump = Jump::start(false);
    let run = through(&s, &jump, &["pre-backup-check"]);
    assert_one_clear_line(
        &run,
        &[
            "BOSH_ALL_PROXY: the host key of the jumpbox",
            &format!("ssh-keyscan -p {} 127.0.0.1 >>", jump.sshd.port),
        ],
    );
    assert!(
        s.standin.calls().is_empty(),
        "nothing asked of the director"
    );
    assert_eq!(jump.sshd.sessions(), 0, "no connection to the jumpbox");

    let ca = s.standin.ca_path().display().to_string();
    let args = s.args("s3cret", &ca, "acme", &["pre-backup-check"]);
    let mut command = s.command(&args);
    command
        .env("BOSH_ALL_PROXY", "socks5://127.0.0.1:1080")
        .env("HOME", jump.home.path());
    let run = Run::of(&mut command, s.fleet.dir.path());
    assert_one_clear_line(&run, &["BOSH_ALL_PROXY is not ssh+socks5://"]);
    assert!(
        s.standin.calls().is_empty(),
        "nothing asked of the director"
    );
}

#[test]
fn a_backup_without_the_named_artifact_a_job_restores_from_is_refused_before_anything_is_touched() {
    // A backup made without the flag (plain artifacts only, by an inventory), restored where
    // the manifest sets it: the job would restore from the named artifact, which is not there.
    let s = one_for_all_scenario(0, |_| true);
    let inventory = s.fleet.local_inventory();
    s.fleet.backup(&inventory, &[]).assert_success();
    let path = s.fleet.artifact_dir().display().to_string();
    let before = s.fleet.calls().len();
    let run = s.driver(&["restore", "-a", &path]);
    assert_eq!(run.code, Some(1), "{}", run.explain());
    run.assert_stderr_contains(
        "redis/0 redis-server: the manifest sets bbr.backup_one_restore_all, but the backup holds no artifact redis-server-redis-backup-one-restore-all",
    );
    let calls = s.fleet.calls();
    assert_eq!(calls.len(), before, "a script ran: {:#?}", &calls[before..]);
    s.assert_user_gone(&run.explain());
}

/// `--all-deployments` where no deployment has a BBR script: each is passed by, and the run
/// fails (exit 1), so that a nightly job watching the exit code does not take "nothing backed
/// up" for a backup.
#[test]
fn all_deployments_where_none_has_bbr_scripts_fails_saying_nothing_was_done() {
    let s = scenario_with(uaa(), None, false, |o| {
        o.deployments = vec![
            ("empty-a".into(), Vec::new()),
            ("empty-b".into(), Vec::new()),
        ]
    });
    let ca = s.standin.ca_path().display().to_string();
    let path = s.fleet.artifacts().display().to_string();
    let mut args = s.args("s3cret", &ca, "x", &[]);
    let at = args.iter().position(|w| w == "-d").unwrap();
    args.drain(at..at + 2);
    args.extend(["--all-deployments", "backup", "--artifact-path", &path].map(String::from));
    let run = s.run(&args);
    run.assert_code(1).assert_stderr_contains(
        "none of the 2 deployments has a VM with a BBR script: backup had nothing to do",
    );
    s.nothing_locked(&run.explain());
}
