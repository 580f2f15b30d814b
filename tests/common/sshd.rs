//! A real OpenSSH server on a free loopback port, with a generated host key and client key,
//! for the driver's end-to-end tests. Stopped when dropped.

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub const SSHD: &str = "/usr/sbin/sshd";

pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
}

impl Sshd {
    /// Starts sshd, or panics saying what is missing (CI installs openssh-server).
    pub fn start() -> Sshd {
        Sshd::start_logging("VERBOSE")
    }

    /// [`Sshd::start`] with sshd's `LogLevel` (`DEBUG1` logs each forwarded connection's
    /// target: `server_request_direct_tcpip: ... target HOST port PORT`).
    pub fn start_logging(level: &str) -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: install Debian's openssh-server (scripts/test does)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        for key in ["host_key", "client_key"] {
            let status = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(d.join(key))
                .status()
                .expect("run ssh-keygen");
            assert!(status.success(), "ssh-keygen failed");
        }
        fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
        // sshd's privilege separation directory.
        fs::create_dir_all("/run/sshd").unwrap();
        let port = super::free_port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\n\
             PidFile {d}/sshd.pid\nStrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nLogLevel {level}\n\
             MaxStartups 100:30:200\nMaxSessions 100\n",
            d = d.display()
        );
        fs::write(d.join("sshd_config"), config).unwrap();
        let child = Command::new(SSHD)
            .args(["-D", "-f"])
            .arg(d.join("sshd_config"))
            .arg("-E")
            .arg(d.join("sshd.log"))
            .stdin(Stdio::null())
            .spawn()
            .expect("start sshd");
        let sshd = Sshd { dir, port, child };
        sshd.wait_until_listening();
        sshd
    }

    fn wait_until_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd did not listen:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn key(&self) -> PathBuf {
        self.dir.path().join("client_key")
    }

    /// The ssh command that runs `remote` as root on this server.
    pub fn ssh(&self, remote: &str) -> String {
        format!(
            "ssh -p {} -i {} -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR root@127.0.0.1 {remote}",
            self.port,
            self.key().display()
        )
    }

    /// The file sshd reads every user's authorized keys from.
    pub fn authorized_keys(&self) -> PathBuf {
        self.dir.path().join("authorized_keys")
    }

    /// The server's real host public key, `type base64 comment`, as a BOSH agent reports it.
    pub fn host_public_key(&self) -> String {
        fs::read_to_string(self.dir.path().join("host_key.pub"))
            .expect("the host public key")
            .trim()
            .to_string()
    }

    /// A host public key that is not this server's (for a director that reports a wrong one).
    pub fn other_host_public_key(&self) -> String {
        let path = self.dir.path().join("other_host_key");
        if !path.exists() {
            let status = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(&path)
                .status()
                .expect("run ssh-keygen");
            assert!(status.success(), "ssh-keygen failed");
        }
        fs::read_to_string(path.with_extension("pub"))
            .unwrap()
            .trim()
            .to_string()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// How many SSH connections were authenticated so far.
    pub fn sessions(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("Accepted publickey"))
            .count()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Appends `line` to an authorized_keys file.
pub fn add_authorized_key(path: &Path, line: &str) {
    use std::io::Write as _;
    let mut file = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .expect("open authorized_keys");
    writeln!(file, "{line}").expect("append to authorized_keys");
}

/// Removes every line of an authorized_keys file for which `remove` holds; how many went.
pub fn remove_authorized_keys(path: &Path, remove: impl Fn(&str) -> bool) -> usize {
    let text = fs::read_to_string(path).unwrap_or_default();
    let (gone, kept): (Vec<&str>, Vec<&str>) = text.lines().partition(|l| remove(l));
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    // Whole, then renamed: sshd never reads a half-written file.
    let tmp = path.with_extension("new");
    fs::write(&tmp, out).expect("write authorized_keys");
    fs::rename(&tmp, path).expect("replace authorized_keys");
    gone.len()
}
