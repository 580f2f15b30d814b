//! BBR's director mode (`bbr director`): one host over plain SSH, the director VM's own
//! `/var/vcap/jobs`, as instance `bosh/0`. The user's key and the user's
//! `~/.ssh/known_hosts`: the host key must be there already (BBR's director mode trusts any
//! key; this does not), and when it is not, the error says how to add it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::openssh::OpenSsh;
use super::ssh_access::parse_address;
use super::targets::{REMOTE_COMMAND_ENV, render_remote};
use crate::driver::inventory::Target;
use crate::instance::InstanceId;

/// BBR's name for the director's instance group.
pub const GROUP: &str = "bosh";

#[derive(Debug, thiserror::Error)]
pub enum StandaloneError {
    #[error("--host '{0}' is not HOST or HOST:PORT")]
    BadHost(String),
    #[error("cannot read the private key {path}: {source}")]
    Key {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot find the director's host key: HOME is not set, so there is no ~/.ssh/known_hosts"
    )]
    NoHome,
    #[error(
        "the host key of {name} is not in {file}: check its fingerprint with the director's operator, then add it: ssh-keyscan -p {port} {host} >> {file}"
    )]
    UnknownHost {
        name: String,
        file: String,
        port: u16,
        host: String,
    },
    #[error("cannot run ssh-keygen to look {name} up in {file}: {detail}")]
    Lookup {
        name: String,
        file: String,
        detail: String,
    },
    #[error("{REMOTE_COMMAND_ENV} cannot be rendered: {0}")]
    Template(String),
}

/// Where the director is, and the artifact's deployment name: the host without its port.
pub struct Standalone {
    pub host: String,
    pub port: u16,
}

impl Standalone {
    pub fn parse(host: &str) -> Result<Standalone, StandaloneError> {
        let (host_only, port) =
            parse_address(host).ok_or_else(|| StandaloneError::BadHost(host.to_string()))?;
        Ok(Standalone {
            host: host_only,
            port: port.unwrap_or(22),
        })
    }

    /// The name OpenSSH files the host's key under.
    fn known_hosts_name(&self) -> String {
        if self.port == 22 {
            self.host.clone()
        } else {
            format!("[{}]:{}", self.host, self.port)
        }
    }

    /// The target `bosh/0`, its host key checked against the user's known_hosts.
    pub fn target(
        &self,
        user: &str,
        key: &Path,
        remote_template: &str,
        proxy_command: Option<&str>,
    ) -> Result<Target, StandaloneError> {
        std::fs::File::open(key).map_err(|source| StandaloneError::Key {
            path: key.to_path_buf(),
            source,
        })?;
        let home = std::env::var_os("HOME").ok_or(StandaloneError::NoHome)?;
        let known_hosts = Path::new(&home).join(".ssh/known_hosts");
        self.check_known(&known_hosts)?;
        let remote = render_remote(remote_template, &self.host, GROUP, 0, "0", &self.host)
            .map_err(StandaloneError::Template)?;
        let command = OpenSsh {
            key,
            known_hosts: &known_hosts,
            host_key_alias: None,
            port: self.port,
            user,
            address: &self.host,
            proxy_command,
            ciphers: super::openssh::fast_ciphers(),
        }
        .command(&remote);
        Ok(Target {
            id: InstanceId {
                group: GROUP.to_string(),
                index: "0".to_string(),
            },
            command,
        })
    }

    /// `ssh-keygen -F` finds hashed entries too; a missing file is a missing key.
    fn check_known(&self, file: &Path) -> Result<(), StandaloneError> {
        let name = self.known_hosts_name();
        let unknown = || StandaloneError::UnknownHost {
            name: name.clone(),
            file: file.display().to_string(),
            port: self.port,
            host: self.host.clone(),
        };
        match is_known(&name, file) {
            Ok(true) => Ok(()),
            Ok(false) => Err(unknown()),
            Err(e) => Err(StandaloneError::Lookup {
                name: name.clone(),
                file: file.display().to_string(),
                detail: e.to_string(),
            }),
        }
    }
}

/// Whether `file` (a known_hosts) holds a key for `name` (`host` or `[host]:port`);
/// `ssh-keygen -F` finds hashed entries too; a missing file holds none.
pub fn is_known(name: &str, file: &Path) -> std::io::Result<bool> {
    if !file.exists() {
        return Ok(false);
    }
    let status = Command::new("ssh-keygen")
        .args(["-F", name, "-f"])
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    Ok(status.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_with_and_without_ports() {
        let s = Standalone::parse("10.0.0.6").unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.known_hosts_name()),
            ("10.0.0.6", 22, "10.0.0.6".into())
        );
        let s = Standalone::parse("10.0.0.6:2222").unwrap();
        assert_eq!(s.known_hosts_name(), "[10.0.0.6]:2222");
        assert!(Standalone::parse("-oProxyCommand=x").is_err());
        assert!(Standalone::parse("a b").is_err());
    }

    #[test]
    fn a_host_missing_from_known_hosts_says_how_to_add_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        std::fs::write(
            &file,
            "other.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKp0\n",
        )
        .unwrap();
        let err = Standalone::parse("10.0.0.6:2222")
            .unwrap()
            .check_known(&file)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ssh-keyscan -p 2222 10.0.0.6 >>"), "{err}");
    }
}
