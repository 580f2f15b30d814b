//! The acceptance harness, shaped like Cloud Foundry's disaster-recovery-acceptance-tests
//! (DRATS): each system a deployment backs up is a `TestCase` that puts state in, destroys it
//! after the backup, and checks it came back after the restore; the runner does the BBR part
//! once for all cases, through the real driver (`bbr-agent deployment ...`) and a real sshd.
//! How to add a case: docs/acceptance.md.
#![allow(dead_code)]

pub mod acme_postgres;
pub mod postgres_server;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::sshd::Sshd;
use crate::common::{AGENT, Run, listing};

/// One system under test. The runner calls, for every case, in this order:
/// `deploy`, `populate_state`, (backup), `destroy_state`, (restore), `check_state`, and then
/// `cleanup` always, even when a step panicked; a step fails by panicking (`assert!`).
pub trait TestCase {
    /// A short name for progress lines and failure messages.
    fn name(&self) -> &str;

    /// Starts what the case's jobs talk to (a database server, a live writer...) and fills in
    /// the deployment's configuration, e.g. the real port in a job's `config/config.json`.
    /// A VM of the deployment is `deployment.root("<group>-<index>")`.
    fn deploy(&mut self, deployment: &Deployment);

    /// Creates the state the backup must capture.
    fn populate_state(&mut self, deployment: &Deployment);

    /// Runs after a successful backup: destroys the state, so that only the restore can
    /// bring it back.
    fn destroy_state(&mut self, deployment: &Deployment);

    /// Runs after a successful restore: asserts the state is what was backed up.
    fn check_state(&mut self, deployment: &Deployment);

    /// Stops everything `deploy` and `populate_state` started. Called after a failure too,
    /// so it must cope with a half-done set-up. (Resources should also stop on `Drop`.)
    fn cleanup(&mut self, deployment: &Deployment);
}

/// The example deployment `examples/<name>` of this repository.
pub fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

/// One VM of a deployment: the template's directory `<group>-<index>`.
#[derive(Debug, Clone)]
pub struct Vm {
    pub group: String,
    pub index: u32,
}

impl Vm {
    pub fn dir_name(&self) -> String {
        format!("{}-{}", self.group, self.index)
    }
}

/// A copy of a template deployment in a temp dir: `<dir>/vms/<group>-<index>` is each VM's
/// `--root`, `<dir>/artifacts` receives the backup.
pub struct Deployment {
    dir: tempfile::TempDir,
    pub name: String,
    pub vms: Vec<Vm>,
}

impl Deployment {
    /// Copies every `<group>-<index>` directory of `template`. The deployment's name is the
    /// first VM's `var/vcap/instance/deployment`.
    pub fn from_template(template: &Path) -> Deployment {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::create_dir(dir.path().join("vms")).unwrap();
        let mut vms: Vec<Vm> = fs::read_dir(template)
            .unwrap_or_else(|e| panic!("cannot read the template {}: {e}", template.display()))
            .filter_map(Result::ok)
            .filter(|e| e.path().is_dir())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let (group, index) = name.rsplit_once('-')?;
                Some(Vm {
                    group: group.to_string(),
                    index: index.parse().ok()?,
                })
            })
            .collect();
        vms.sort_by_key(Vm::dir_name);
        assert!(
            !vms.is_empty(),
            "{} holds no <group>-<index> VM directory",
            template.display()
        );
        for vm in &vms {
            // Not `cp -a`: the copy must be owned by whoever runs the test (root), whoever
            // owns the checkout.
            let status = Command::new("cp")
                .arg("-R")
                .arg(template.join(vm.dir_name()))
                .arg(dir.path().join("vms"))
                .status()
                .expect("run cp");
            assert!(status.success(), "cp -R {} failed", template.display());
            install_modes(&dir.path().join("vms").join(vm.dir_name()), false);
        }
        let name = fs::read_to_string(
            dir.path()
                .join("vms")
                .join(vms[0].dir_name())
                .join("var/vcap/instance/deployment"),
        )
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "acme".to_string());
        Deployment { dir, name, vms }
    }

    /// The `--root` of VM `<group>-<index>`.
    pub fn root(&self, vm: &str) -> PathBuf {
        let root = self.dir.path().join("vms").join(vm);
        assert!(root.is_dir(), "the deployment has no VM {vm}");
        root
    }

    /// `/var/vcap` on VM `<group>-<index>`.
    pub fn vcap(&self, vm: &str) -> PathBuf {
        self.root(vm).join("var/vcap")
    }

    /// `/var/vcap/jobs/<job>` on VM `<group>-<index>`.
    pub fn job_dir(&self, vm: &str, job: &str) -> PathBuf {
        let dir = self.vcap(vm).join("jobs").join(job);
        assert!(dir.is_dir(), "VM {vm} has no job {job}");
        dir
    }

    /// Rewrites the JSON object in `path` (a job's `config/config.json`, say).
    pub fn edit_json(
        &self,
        path: &Path,
        edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
    ) {
        let text = fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let mut value: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        edit(
            value
                .as_object_mut()
                .unwrap_or_else(|| panic!("{} is not a JSON object", path.display())),
        );
        fs::write(path, serde_json::to_string_pretty(&value).unwrap() + "\n").unwrap();
    }

    pub fn artifacts(&self) -> PathBuf {
        self.dir.path().join("artifacts")
    }

    /// Writes the inventory; each VM's command is `command(its root)`.
    fn write_inventory(&self, command: impl Fn(&Path) -> String) -> PathBuf {
        let mut text = format!("deployment: {}\ninstances:\n", self.name);
        for vm in &self.vms {
            let cmd = command(&self.root(&vm.dir_name())).replace('\'', "''");
            text.push_str(&format!(
                "- group: {}\n  index: {}\n  command: '{cmd}'\n",
                vm.group, vm.index
            ));
        }
        let path = self.dir.path().join("inventory.yml");
        fs::write(&path, text).unwrap();
        path
    }

    /// `bbr-agent -v deployment --inventory <inventory> <args>`.
    fn driver(&self, inventory: &Path, args: &[&str]) -> Run {
        let mut all: Vec<String> = ["-v", "deployment", "--inventory"].map(String::from).into();
        all.push(inventory.display().to_string());
        all.extend(args.iter().map(|s| s.to_string()));
        Run::new(&all, self.dir.path())
    }

    /// The single `<deployment>_<timestamp>` directory under `artifacts()`.
    fn artifact_dir(&self) -> PathBuf {
        let dirs: Vec<_> = fs::read_dir(self.artifacts())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(dirs.len(), 1, "expected one artifact directory: {dirs:?}");
        dirs[0].clone()
    }

    /// Every job on every VM that has a backup script, as `<group>-<index>-<job>`.
    fn backed_up_jobs(&self) -> Vec<String> {
        let mut jobs = Vec::new();
        for vm in &self.vms {
            let jobs_root = self.vcap(&vm.dir_name()).join("jobs");
            for entry in fs::read_dir(jobs_root).into_iter().flatten().flatten() {
                if entry.path().join("bin/bbr/backup").is_file() {
                    let job = entry.file_name().to_string_lossy().into_owned();
                    jobs.push(format!("{}-{job}", vm.dir_name()));
                }
            }
        }
        jobs
    }
}

/// Gives a copied VM tree the modes the BOSH agent installs jobs with, whatever the checkout's
/// umask was: directories and everything under a `bin/` 0755, other files 0644. (The agent
/// refuses, as root, scripts that others can write.)
fn install_modes(dir: &Path, in_bin: bool) {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            install_modes(&path, in_bin || entry.file_name() == "bin");
        } else if kind.is_file() {
            let mode = if in_bin { 0o755 } else { 0o644 };
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        }
    }
}

/// Copies `template`, starts sshd, and runs the cases through backup and restore with the
/// real driver. Panics with the first failure, after every case's `cleanup` has run.
pub fn run(template: &Path, cases: Vec<Box<dyn TestCase>>) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the acceptance test runs as root, as BBR runs scripts (sudo): it logs in to sshd as \
         root and starts services as their own users"
    );
    let started = Instant::now();
    let deployment = Deployment::from_template(template);
    let sshd = Sshd::start();
    let inventory = deployment
        .write_inventory(|root| sshd.ssh(&format!("{AGENT} --root {} serve", root.display())));
    let mut deployed: Vec<Box<dyn TestCase>> = Vec::new();
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        for case in cases {
            deployed.push(case);
            let case = deployed.last_mut().unwrap();
            let name = case.name().to_string();
            step(&name, "deploy", || case.deploy(&deployment));
        }
        for case in deployed.iter_mut() {
            let name = case.name().to_string();
            step(&name, "populate_state", || case.populate_state(&deployment));
        }
        step("driver", "backup", || backup(&deployment, &inventory));
        for case in deployed.iter_mut() {
            let name = case.name().to_string();
            step(&name, "destroy_state", || case.destroy_state(&deployment));
        }
        step("driver", "restore", || restore(&deployment, &inventory));
        for case in deployed.iter_mut() {
            let name = case.name().to_string();
            step(&name, "check_state", || case.check_state(&deployment));
        }
    }));
    let mut cleanup_failure = None;
    for case in deployed.iter_mut().rev() {
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            let name = case.name().to_string();
            step(&name, "cleanup", || case.cleanup(&deployment))
        }));
        cleanup_failure = cleanup_failure.or(result.err());
    }
    if let Err(failure) = outcome.and(cleanup_failure.map_or(Ok(()), Err)) {
        eprintln!("--- sshd log ---\n{}", sshd.log());
        panic::resume_unwind(failure);
    }
    for vm in &deployment.vms {
        let store = deployment.vcap(&vm.dir_name()).join("store/bbr-backup");
        assert!(!store.exists(), "{} was left behind", store.display());
    }
    eprintln!("acceptance: passed in {:.1?}", started.elapsed());
}

/// Runs one step, printing its name and how long it took.
fn step<T>(who: &str, what: &str, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    eprintln!("acceptance: {who}: {what}");
    let result = f();
    eprintln!(
        "acceptance: {who}: {what} done in {:.1?}",
        started.elapsed()
    );
    result
}

fn backup(deployment: &Deployment, inventory: &Path) {
    fs::create_dir_all(deployment.artifacts()).unwrap();
    deployment
        .driver(inventory, &["pre-backup-check"])
        .assert_success();
    let artifacts = deployment.artifacts().display().to_string();
    let run = deployment.driver(inventory, &["backup", "--artifact-path", &artifacts]);
    run.assert_success();
    let artifact = deployment.artifact_dir();
    for job in deployment.backed_up_jobs() {
        assert!(
            artifact.join(format!("{job}.tar")).is_file(),
            "the artifact lacks {job}.tar\n{}\n{}",
            listing(&artifact),
            run.explain()
        );
    }
}

fn restore(deployment: &Deployment, inventory: &Path) {
    let artifact = deployment.artifact_dir().display().to_string();
    deployment
        .driver(inventory, &["restore", "--artifact-path", &artifact])
        .assert_success();
}

/// Polls `probe` every 20 ms until it returns `Some`; `None` after `within`.
pub fn wait_for<T>(within: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
