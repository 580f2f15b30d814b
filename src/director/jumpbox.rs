//! `BOSH_ALL_PROXY=ssh+socks5://USER@JUMPBOX[:PORT]?private-key=PATH`, as the BOSH CLI and
//! BBR read it: the director's API and every VM's SSH go through the jumpbox.
//!
//! - HTTP: OpenSSH's dynamic forward (`ssh -N -D 127.0.0.1:PORT`) to the jumpbox, held for
//!   the run, and the director client speaks SOCKS5 to it (`socks5h`: names are resolved on
//!   the jumpbox's side, as through BBR's proxy).
//! - SSH: each VM's `ssh` gets `ProxyCommand=ssh ... -W %h:%p JUMPBOX`: the VM's own host key
//!   is still checked end to end, against what the director reported.
//!
//! The jumpbox's host key: the BOSH CLI's proxy (cloudfoundry/socks5-proxy `HostKey.Get`)
//! takes whatever key the jumpbox shows on a first connection and pins it for the process,
//! which checks nothing. Here it must be in the user's `~/.ssh/known_hosts` (as for
//! `bbr-agent director`), checked before anything is sent; when it is not, the error says how
//! to add it. The user defaults to `jumpbox` and the port to 22, as the CLI's.

use std::io::Read as _;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::ssh_access::parse_address;
use crate::exec::{ChildLeader, ProcessGroup};
use crate::interrupt::Level;

pub const ENV: &str = "BOSH_ALL_PROXY";
const SCHEME: &str = "ssh+socks5://";
/// How long the tunnel may take to come up.
const TUNNEL_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum JumpboxError {
    #[error(
        "{ENV} is not ssh+socks5://USER@HOST[:PORT]?private-key=PATH (the only form bbr-agent takes): {why}"
    )]
    Bad { why: String },
    #[error("{ENV}: cannot read the private key {path}: {source}")]
    Key {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{ENV}: the host key of the jumpbox {name} is not in {file}: check its fingerprint with its operator, then add it: ssh-keyscan -p {port} {host} >> {file}"
    )]
    UnknownHost {
        name: String,
        file: String,
        port: u16,
        host: String,
    },
    #[error(
        "{ENV}: cannot find the jumpbox's host key: HOME is not set, so there is no ~/.ssh/known_hosts"
    )]
    NoHome,
    #[error("{ENV}: cannot run {what}: {source}")]
    Spawn {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{ENV}: the tunnel through the jumpbox {host} did not come up: {detail}")]
    Tunnel { host: String, detail: String },
}

/// The jumpbox of `BOSH_ALL_PROXY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jumpbox {
    pub user: String,
    pub host: String,
    pub port: u16,
    pub key: PathBuf,
    /// The user's known_hosts, where the jumpbox's key must be.
    pub known_hosts: PathBuf,
}

impl Jumpbox {
    /// The jumpbox `BOSH_ALL_PROXY` names, if it is set (and not empty), its key readable
    /// and its host key known.
    pub fn from_env() -> Result<Option<Jumpbox>, JumpboxError> {
        let Some(value) = std::env::var(ENV).ok().filter(|v| !v.trim().is_empty()) else {
            return Ok(None);
        };
        let home = std::env::var_os("HOME").ok_or(JumpboxError::NoHome)?;
        let jumpbox = Jumpbox::parse(&value, &Path::new(&home).join(".ssh/known_hosts"))?;
        std::fs::File::open(&jumpbox.key).map_err(|source| JumpboxError::Key {
            path: jumpbox.key.clone(),
            source,
        })?;
        jumpbox.check_known()?;
        Ok(Some(jumpbox))
    }

    pub fn parse(value: &str, known_hosts: &Path) -> Result<Jumpbox, JumpboxError> {
        let bad = |why: &str| JumpboxError::Bad {
            why: why.to_string(),
        };
        if value.chars().any(char::is_control) {
            return Err(bad("it holds a control character"));
        }
        let rest = value
            .strip_prefix(SCHEME)
            .ok_or_else(|| bad("it does not start with ssh+socks5://"))?;
        let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
        let authority = authority.trim_end_matches('/');
        let (user, address) = match authority.rsplit_once('@') {
            Some((user, address)) => (
                percent_decoded(user).ok_or_else(|| bad("bad %-escape"))?,
                address,
            ),
            None => ("jumpbox".to_string(), authority),
        };
        let plain_user = !user.is_empty()
            && !user.starts_with('-')
            && user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !plain_user {
            return Err(bad("the user is not a plain name"));
        }
        let (host, port) = parse_address(address).ok_or_else(|| bad("no HOST[:PORT]"))?;
        let mut key = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            if let Some(path) = pair.strip_prefix("private-key=") {
                key = Some(percent_decoded(path).ok_or_else(|| bad("bad %-escape"))?);
            }
        }
        let key = key
            .filter(|k| !k.is_empty())
            .ok_or_else(|| bad("no private-key=PATH"))?;
        Ok(Jumpbox {
            user,
            host,
            port: port.unwrap_or(22),
            key: PathBuf::from(key),
            known_hosts: known_hosts.to_path_buf(),
        })
    }

    /// The name OpenSSH files the jumpbox's key under.
    fn known_hosts_name(&self) -> String {
        match self.port {
            22 => self.host.clone(),
            port => format!("[{}]:{port}", self.host),
        }
    }

    fn check_known(&self) -> Result<(), JumpboxError> {
        let name = self.known_hosts_name();
        let known = super::standalone::is_known(&name, &self.known_hosts).map_err(|source| {
            JumpboxError::Spawn {
                what: "ssh-keygen",
                source,
            }
        })?;
        match known {
            true => Ok(()),
            false => Err(JumpboxError::UnknownHost {
                name,
                file: self.known_hosts.display().to_string(),
                port: self.port,
                host: self.host.clone(),
            }),
        }
    }

    /// `ssh` to the jumpbox with its key only, its host key checked against the user's
    /// known_hosts, never a prompt: every word but the jumpbox's address, which comes last.
    fn ssh_words(&self) -> Vec<String> {
        let mut words: Vec<String> = ["ssh", "-F", "/dev/null", "-i"].map(String::from).to_vec();
        words.push(self.key.display().to_string());
        for option in [
            "BatchMode=yes".to_string(),
            "IdentitiesOnly=yes".to_string(),
            "IdentityAgent=none".to_string(),
            "StrictHostKeyChecking=yes".to_string(),
            format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "GlobalKnownHostsFile=/dev/null".to_string(),
            "UpdateHostKeys=no".to_string(),
            "ConnectTimeout=30".to_string(),
            "ServerAliveInterval=30".to_string(),
            "LogLevel=ERROR".to_string(),
        ] {
            words.push("-o".into());
            words.push(option);
        }
        words.extend(["-p".to_string(), self.port.to_string()]);
        words.extend(["-l".to_string(), self.user.clone()]);
        words
    }

    /// The VMs' `ProxyCommand`: a line for the shell OpenSSH runs it with, `%h:%p` the VM's.
    pub fn proxy_command(&self) -> String {
        let mut words = self.ssh_words();
        words.extend(["-W".to_string(), "%h:%p".to_string(), self.host.clone()]);
        words
            .iter()
            .map(|w| super::openssh::shell_word(w))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Opens the SOCKS5 tunnel for the director's API: `ssh -N -D 127.0.0.1:PORT`, held until
    /// the [`Tunnel`] is dropped. Returns once the port accepts connections.
    pub fn tunnel(&self) -> Result<Tunnel, JumpboxError> {
        let failed = |detail: String| JumpboxError::Tunnel {
            host: self.host.clone(),
            detail,
        };
        // A free port, given to ssh; ExitOnForwardFailure makes a port taken meanwhile an
        // error, not a tunnel that does not forward.
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| failed(format!("no free local port: {e}")))?
            .port();
        let mut words = self.ssh_words();
        words.extend([
            "-o".to_string(),
            "ExitOnForwardFailure=yes".to_string(),
            "-N".to_string(),
            "-D".to_string(),
            format!("127.0.0.1:{port}"),
            "--".to_string(),
            self.host.clone(),
        ]);
        // Its own group: a terminal's Ctrl-C must not end the tunnel before the run's SSH
        // cleanup has gone through it to the director.
        let mut child = Command::new(&words[0])
            .args(&words[1..])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| JumpboxError::Spawn {
                what: "ssh",
                source,
            })?;
        let deadline = Instant::now() + TUNNEL_LIMIT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.by_ref().take(64 * 1024).read_to_string(&mut stderr);
                }
                let said = super::client::one_line(stderr.trim());
                return Err(failed(format!("ssh exited ({status}): {said}")));
            }
            if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
                // Whoever listens there gets the director's traffic: it must be our ssh, not
                // a local user who bound the port first (ssh then fails to bind, and exits).
                if listens_on(child.id(), port) {
                    return Ok(Tunnel { child, port });
                }
                // An ssh that exited is reaped here: its pid is not ours to signal any more.
                let exited = matches!(child.try_wait(), Ok(Some(_)));
                if exited || Instant::now() > deadline {
                    if !exited {
                        end(&mut child);
                    }
                    return Err(failed(format!(
                        "127.0.0.1:{port} is held by another process, not by the tunnel's ssh: run again (another port is chosen)"
                    )));
                }
            }
            if Instant::now() > deadline {
                end(&mut child);
                return Err(failed(format!(
                    "no SOCKS port after {}",
                    crate::duration::format(TUNNEL_LIMIT)
                )));
            }
            if crate::interrupt::wait(Level::Interrupted, Some(Duration::from_millis(20))) {
                end(&mut child);
                return Err(failed(
                    "the run was interrupted while the tunnel opened".into(),
                ));
            }
        }
    }
}

/// `%XX` escapes decoded; `None` for a bad one or bytes that are not UTF-8.
fn percent_decoded(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The SOCKS5 tunnel to the jumpbox: ended (ssh killed) when dropped.
pub struct Tunnel {
    child: Child,
    pub port: u16,
}

impl Tunnel {
    /// The proxy URL for the director client.
    pub fn proxy_url(&self) -> String {
        format!("socks5h://127.0.0.1:{}", self.port)
    }
}

impl Drop for Tunnel {
    /// SIGTERM first, so that ssh says goodbye to the jumpbox (a SIGKILLed client leaves the
    /// jumpbox a reset connection), SIGKILL after a grace: the one way a group is ended.
    fn drop(&mut self) {
        end(&mut self.child);
    }
}

/// Whether process `pid` holds the socket listening on 127.0.0.1:`port` (`/proc/net/tcp`'s
/// LISTEN entry for it, by inode, among the process's descriptors).
fn listens_on(pid: u32, port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let local = format!("0100007F:{port:04X}");
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl, local_address, rem_address, st (0A: LISTEN), ..., inode is the tenth.
            (fields.len() > 9 && fields[1] == local && fields[3] == "0A")
                .then(|| format!("socket:[{}]", fields[9]))
        })
        .collect();
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .any(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
}

/// Ends the tunnel's ssh (the leader of its own group) and reaps it.
fn end(child: &mut Child) {
    let Ok(pid) = i32::try_from(child.id()) else {
        return;
    };
    let leader = nix::unistd::Pid::from_raw(pid);
    ProcessGroup::from_id(pid).terminate(
        Duration::from_secs(2),
        crate::interrupt::is_hard(),
        &mut ChildLeader::new(leader),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_is_told_apart_by_the_process_that_holds_it() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(
            listens_on(std::process::id(), port),
            "this process holds it"
        );
        // Another process (the parent of this test) does not.
        let parent = nix::unistd::getppid().as_raw() as u32;
        assert!(!listens_on(parent, port));
        drop(listener);
        assert!(
            !listens_on(std::process::id(), port),
            "no one listens any more"
        );
    }

    #[test]
    fn bosh_all_proxy_as_the_bosh_cli_writes_it() {
        let kh = Path::new("/home/op/.ssh/known_hosts");
        let j = Jumpbox::parse(
            "ssh+socks5://jumpbox@10.0.0.5:2222?private-key=/k/jump%20box.pem",
            kh,
        )
        .unwrap();
        assert_eq!(
            (j.user.as_str(), j.host.as_str(), j.port, j.key.as_path()),
            ("jumpbox", "10.0.0.5", 2222, Path::new("/k/jump box.pem"))
        );
        let j = Jumpbox::parse("ssh+socks5://10.0.0.5?private-key=/k", kh).unwrap();
        assert_eq!((j.user.as_str(), j.port), ("jumpbox", 22));
        assert_eq!(j.known_hosts_name(), "10.0.0.5");
        for bad in [
            "socks5://10.0.0.5:1080",
            "ssh+socks5://j@10.0.0.5:22",
            "ssh+socks5://-oProxyCommand=x@10.0.0.5?private-key=/k",
            "ssh+socks5://j@-oProxyCommand=x?private-key=/k",
            "ssh+socks5://j@10.0.0.5?private-key=/k%zz",
            "ssh+socks5://j@10.0.0.5?private-key=/k\n",
        ] {
            let err = Jumpbox::parse(bad, kh).unwrap_err().to_string();
            assert!(
                err.starts_with("BOSH_ALL_PROXY is not ssh+socks5://"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn the_proxy_command_checks_the_jumpbox_key_and_forwards_to_the_vm() {
        let j = Jumpbox::parse(
            "ssh+socks5://jumpbox@10.0.0.5:2222?private-key=/k/a b",
            Path::new("/h/.ssh/known_hosts"),
        )
        .unwrap();
        let c = j.proxy_command();
        assert!(c.contains("-i '/k/a b'"), "{c}");
        assert!(c.contains("-o StrictHostKeyChecking=yes"), "{c}");
        assert!(
            c.contains("-o UserKnownHostsFile=/h/.ssh/known_hosts"),
            "{c}"
        );
        assert!(c.ends_with("-p 2222 -l jumpbox -W %h:%p 10.0.0.5"), "{c}");
    }
}
