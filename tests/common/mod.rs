//! The test harness: a fake VM in a temp dir, written job by job, and the real `bbr-agent`
//! binary run against it. A failed assertion prints the command, both output streams and the
//! VM's directory listing, so the failure explains itself.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub mod director_standin;
pub mod fleet;
pub mod garage;
pub mod s3;
pub mod sshd;

pub const AGENT: &str = env!("CARGO_BIN_EXE_bbr-agent");

/// A VM: `<dir>/vm` is its `--root`; `<dir>/calls.log` records what its scripts did.
pub struct Vm {
    pub dir: tempfile::TempDir,
    /// A call log shared with other VMs (a fleet's), instead of `<dir>/calls.log`.
    shared_log: Option<PathBuf>,
    /// `group/index`, put before each call-log line when VMs share a log.
    label: Option<String>,
}

impl Vm {
    pub fn new() -> Vm {
        let vm = Vm {
            dir: tempfile::tempdir().expect("temp dir"),
            shared_log: None,
            label: None,
        };
        fs::create_dir_all(vm.jobs_root()).unwrap();
        vm
    }

    /// A VM with the identity BOSH writes under /var/vcap/instance.
    pub fn with_identity(deployment: &str, group: &str) -> Vm {
        let vm = Vm::new();
        vm.write("var/vcap/instance/deployment", &format!("{deployment}\n"));
        vm.write("var/vcap/instance/name", &format!("{group}\n"));
        vm
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("vm")
    }

    pub fn jobs_root(&self) -> PathBuf {
        self.root().join("var/vcap/jobs")
    }

    pub fn store(&self) -> PathBuf {
        self.root().join("var/vcap/store/bbr-backup")
    }

    /// Where tests put artifacts.
    pub fn artifacts(&self) -> PathBuf {
        let dir = self.dir.path().join("artifacts");
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    pub fn log_path(&self) -> PathBuf {
        self.shared_log
            .clone()
            .unwrap_or_else(|| self.dir.path().join("calls.log"))
    }

    /// This VM as a member of a fleet: its scripts log to `log`, each line led by `label`.
    pub fn in_fleet(mut self, log: PathBuf, label: &str) -> Vm {
        self.shared_log = Some(log);
        self.label = Some(label.to_string());
        self
    }

    /// Writes a file below the VM root, making its parent directories.
    pub fn write(&self, relative: &str, contents: &str) -> PathBuf {
        write_file(&self.root().join(relative), contents.as_bytes())
    }

    pub fn job(&self, name: &str) -> Job<'_> {
        let dir = self.jobs_root().join(name);
        fs::create_dir_all(dir.join("bin/bbr")).unwrap();
        Job {
            vm: self,
            dir,
            name: name.to_string(),
        }
    }

    /// Every line the scripts appended to the call log.
    pub fn calls(&self) -> Vec<String> {
        read_calls(&self.log_path())
    }

    /// Runs the agent with `--root <vm>` and the given arguments.
    pub fn agent(&self, args: &[&str]) -> Run {
        let mut all = vec!["--root".to_string(), self.root().display().to_string()];
        all.extend(args.iter().map(|s| s.to_string()));
        Run::new(&all, self.dir.path())
    }

    /// The single `<deployment>_<timestamp>` directory under `artifacts()`.
    pub fn artifact_dir(&self) -> PathBuf {
        only_artifact_dir(&self.artifacts())
    }
}

pub struct Job<'a> {
    vm: &'a Vm,
    pub dir: PathBuf,
    pub name: String,
}

impl Job<'_> {
    /// Writes `bin/bbr/<script>`: a shell script whose prelude sets `LOG` (the call log) and
    /// `ME` (`<job> <script>`), then `body`.
    pub fn script(&self, script: &str, body: &str) -> &Self {
        let label = self
            .vm
            .label
            .as_ref()
            .map(|l| format!("{l} "))
            .unwrap_or_default();
        let text = format!(
            "#!/bin/sh\nLOG='{}'\nME='{label}{} {}'\n{body}\n",
            self.vm.log_path().display(),
            self.name,
            script
        );
        let path = write_file(&self.dir.join("bin/bbr").join(script), text.as_bytes());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        self
    }

    /// A script that only records that it ran: `<job> <script>` in the call log.
    pub fn recording(&self, script: &str) -> &Self {
        self.script(script, "echo \"$ME\" >> \"$LOG\"")
    }

    /// Every lock and unlock script, recording.
    pub fn recording_locks(&self) -> &Self {
        for s in [
            "pre-backup-lock",
            "post-backup-unlock",
            "pre-restore-lock",
            "post-restore-unlock",
        ] {
            self.recording(s);
        }
        self
    }

    /// A metadata script printing `yaml`.
    pub fn metadata(&self, yaml: &str) -> &Self {
        self.script("metadata", &format!("cat <<'YAML'\n{yaml}\nYAML"))
    }

    /// Backup and restore scripts that copy `<root>/data/<job>` to and from the artifact.
    pub fn copying_backup_restore(&self) -> &Self {
        let data = self.vm.data_dir(&self.name);
        fs::create_dir_all(&data).unwrap();
        self.script(
            "backup",
            &format!(
                "echo \"$ME\" >> \"$LOG\"\ncp -a '{}/.' \"$BBR_ARTIFACT_DIRECTORY\"",
                data.display()
            ),
        );
        self.script(
            "restore",
            &format!(
                "echo \"$ME\" >> \"$LOG\"\nrm -rf '{d}' && mkdir -p '{d}' && cp -a \"$BBR_ARTIFACT_DIRECTORY\". '{d}/'",
                d = data.display()
            ),
        )
    }
}

impl Vm {
    /// A job's live data, outside the jobs tree (like /var/vcap/store/<job>).
    pub fn data_dir(&self, job: &str) -> PathBuf {
        self.root().join("var/vcap/store").join(job)
    }
}

/// The lines of a call log (none when there is no log yet).
pub fn read_calls(log: &Path) -> Vec<String> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A free TCP port on loopback, for a server a test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The one `<deployment>_<timestamp>` directory a backup made under `parent`.
pub fn only_artifact_dir(parent: &Path) -> PathBuf {
    only_artifact_dir_after(parent, "")
}

/// [`only_artifact_dir`], whose failure also shows `explain` (the run that made it).
pub fn only_artifact_dir_after(parent: &Path, explain: &str) -> PathBuf {
    let dirs: Vec<_> = fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        dirs.len(),
        1,
        "expected one artifact directory, found {dirs:?}\n{explain}"
    );
    dirs[0].clone()
}

/// The UTC moment `secs_ago` seconds before now, in `date`'s `format` (`+%Y%m%dT%H%M%SZ`).
pub fn utc_ago(secs_ago: u64, format: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let out = Command::new("date")
        .args(["-u", "-d", &format!("@{}", now - secs_ago), format])
        .output()
        .expect("run date");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// What a run's claim (`.bbr-agent-run-<id>`) holds when its run's last heartbeat was
/// `beat_secs_ago` seconds ago, by its own clock (another owner's than any test VM's).
pub fn claim_with_heartbeat(deployment: &str, beat_secs_ago: u64) -> String {
    format!(
        "bbr-agent backup\ndeployment: {deployment:?}\nfrom: \"elsewhere\"\ninstances: [\"db/0\"]\nheartbeat: {}\n",
        utc_ago(beat_secs_ago, "+%Y-%m-%dT%H:%M:%SZ")
    )
}

pub fn write_file(path: &Path, contents: &[u8]) -> PathBuf {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, contents).unwrap();
    path.to_path_buf()
}

/// One finished run of the agent.
pub struct Run {
    pub command: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    cwd: PathBuf,
}

impl Run {
    pub fn new(args: &[String], cwd: &Path) -> Run {
        Run::of(Command::new(AGENT).args(args).current_dir(cwd), cwd)
    }

    pub fn of(command: &mut Command, cwd: &Path) -> Run {
        let shown = format!("{:?}", command);
        let out = command.output().expect("run bbr-agent");
        Run {
            command: shown,
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            cwd: cwd.to_path_buf(),
        }
    }

    /// Runs `command` and also returns the peak resident memory of its process, in KiB, from
    /// the kernel's accounting of that one child (`wait4`).
    #[allow(dead_code)]
    pub fn measured(command: &mut Command, cwd: &Path) -> (Run, u64) {
        use std::io::Read as _;
        use std::process::Stdio;
        let shown = format!("{:?}", command);
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run bbr-agent");
        let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let reader = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = err.read_to_end(&mut s);
            s
        });
        let mut stdout = Vec::new();
        let _ = out.read_to_end(&mut stdout);
        let stderr = reader.join().unwrap();
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value of that plain C struct.
        let mut usage: nix::libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: waits for our own child by its pid, writing only into the two locals; the
        // Child is not waited for again (it is forgotten below).
        let pid = unsafe { nix::libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
        assert_eq!(pid, child.id() as i32, "wait4");
        std::mem::forget(child);
        let code = nix::libc::WIFEXITED(status).then(|| nix::libc::WEXITSTATUS(status));
        let run = Run {
            command: shown,
            code,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            cwd: cwd.to_path_buf(),
        };
        (run, usage.ru_maxrss as u64)
    }

    /// Everything a reader of a failed test needs.
    pub fn explain(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "command: {}", self.command);
        let _ = writeln!(s, "exit code: {:?}", self.code);
        let _ = writeln!(s, "--- stdout ---\n{}", self.stdout);
        let _ = writeln!(s, "--- stderr ---\n{}", self.stderr);
        let _ = writeln!(
            s,
            "--- files under {} ---\n{}",
            self.cwd.display(),
            listing(&self.cwd)
        );
        s
    }

    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "unexpected exit code\n{}",
            self.explain()
        );
        self
    }

    pub fn assert_success(&self) -> &Self {
        self.assert_code(0)
    }

    pub fn assert_stdout_contains(&self, text: &str) -> &Self {
        assert!(
            self.stdout.contains(text),
            "stdout lacks {text:?}\n{}",
            self.explain()
        );
        self
    }

    pub fn assert_stderr_contains(&self, text: &str) -> &Self {
        assert!(
            self.stderr.contains(text),
            "stderr lacks {text:?}\n{}",
            self.explain()
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON: {e}\n{}", self.explain()))
    }
}

/// `find`-like listing of a directory, for failure messages.
pub fn listing(dir: &Path) -> String {
    let mut out = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
        entries.sort_by_key(|e| e.path());
        for e in entries {
            let path = e.path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(dir).unwrap_or(&path);
            let _ = writeln!(
                out,
                "{:o} {:>9} {}",
                meta.permissions().mode() & 0o7777,
                meta.len(),
                rel.display()
            );
            if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    out
}

/// Every file under `dir` with its content, for comparing trees byte for byte.
pub fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            let rel = path.strip_prefix(dir).unwrap().display().to_string();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                files.push((format!("{rel}/"), Vec::new()));
                stack.push(path);
            } else if meta.file_type().is_symlink() {
                files.push((
                    rel,
                    fs::read_link(&path)
                        .unwrap()
                        .display()
                        .to_string()
                        .into_bytes(),
                ));
            } else {
                files.push((rel, fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

/// A new age identity file `dir/name`, and its public recipient (`age1...`).
#[allow(dead_code)]
pub fn age_identity(dir: &Path, name: &str) -> (PathBuf, String) {
    use age::secrecy::ExposeSecret;
    let id = age::x25519::Identity::generate();
    let path = dir.join(name);
    fs::write(
        &path,
        format!(
            "# public key: {}\n{}\n",
            id.to_public(),
            id.to_string().expose_secret()
        ),
    )
    .unwrap();
    (path, id.to_public().to_string())
}
