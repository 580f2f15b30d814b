//! SSH access the way BBR gets it: a throw-away key pair (OpenSSH's `ssh-keygen`, into a
//! private temporary directory), a temporary user `bosh_<15 hex>` that the director creates
//! on every instance of each instance group (`POST /deployments/NAME/ssh`, `command: setup`,
//! a task whose result lists each instance's IP and host public key), a private
//! `known_hosts` built from those host keys, and `command: cleanup` for that user at the end:
//! [`SshAccess::finish`], or its `Drop` on any other way out, so failed and interrupted runs
//! clean up too.
//!
//! Unlike BBR (whose cleanup call does not wait), the cleanup task is waited for (bounded),
//! so that when the driver exits the user is gone, or the operator is told it may not be.

use crate::interrupt::Level;
use std::fmt::Write as _;
use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::api::{ApiError, Director};
use super::instances::plain_name;

/// How long the director may take to create the user on an instance group's VMs.
const SETUP_LIMIT: Duration = Duration::from_secs(600);
/// How long the removal may take before the operator is told to check.
const CLEANUP_LIMIT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum SshAccessError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("cannot make the temporary SSH key: {0}")]
    KeyGen(String),
    #[error("the director could not set up SSH on instance {instance}: status '{status}'")]
    SetupFailed { instance: String, status: String },
    #[error("the director set up SSH on no instance of group '{group}'")]
    NoHosts { group: String },
    #[error("the director's SSH setup answer for group '{group}' is not valid: {detail}")]
    BadAnswer { group: String, detail: String },
    #[error("cannot write the SSH known_hosts file {path}: {source}")]
    KnownHosts {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("interrupted while the director set up SSH; its temporary user was removed")]
    Interrupted,
}

/// One instance the director opened to the temporary user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub group: String,
    /// The instance's id (the director answers with the id, else the index).
    pub id: String,
    /// Where to connect: the address, and the port when the director named one (BBR takes
    /// `host:port` there too; 22 otherwise).
    pub address: String,
    pub port: Option<u16>,
    /// `type base64`, the host key the director read off the instance.
    pub host_key: String,
}

pub struct SshAccess {
    director: Director,
    deployment: String,
    user: String,
    dir: tempfile::TempDir,
    public_key: String,
    /// Groups the setup was asked for, each to be cleaned up, whatever the setup answered.
    set_up: Vec<String>,
}

impl SshAccess {
    /// Makes the key pair; nothing is asked of the director yet.
    pub fn new(director: Director, deployment: &str) -> Result<SshAccess, SshAccessError> {
        let user = format!(
            "bosh_{}",
            random_hex(15).map_err(|e| SshAccessError::KeyGen(e.to_string()))?
        );
        // tempfile makes the directory 0700: the private key is for this run only.
        let dir = tempfile::Builder::new()
            .prefix("bbr-agent-ssh-")
            .tempdir()
            .map_err(|e| SshAccessError::KeyGen(format!("a private directory: {e}")))?;
        let key = dir.path().join("id_ed25519");
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", &user, "-f"])
            .arg(&key)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| {
                SshAccessError::KeyGen(format!(
                    "cannot run ssh-keygen ({e}): install the OpenSSH client"
                ))
            })?;
        if !out.status.success() {
            return Err(SshAccessError::KeyGen(format!(
                "ssh-keygen failed: {}",
                super::client::one_line(&String::from_utf8_lossy(&out.stderr))
            )));
        }
        let public_key = fs::read_to_string(key.with_extension("pub"))
            .map_err(|e| SshAccessError::KeyGen(format!("cannot read the public key: {e}")))?
            .trim()
            .to_string();
        Ok(SshAccess {
            director,
            deployment: deployment.to_string(),
            user,
            dir,
            public_key,
            set_up: Vec::new(),
        })
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn private_key(&self) -> PathBuf {
        self.dir.path().join("id_ed25519")
    }

    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// Asks the director for the temporary user on every instance of each group, one group
    /// after the other as BBR does, and writes the known_hosts file of what it answered.
    pub fn set_up(&mut self, groups: &[String]) -> Result<Vec<Host>, SshAccessError> {
        let mut hosts = Vec::new();
        for group in groups {
            if crate::interrupt::is_interrupted() {
                return Err(SshAccessError::Interrupted);
            }
            let body = serde_json::json!({
                "command": "setup",
                "deployment_name": self.deployment,
                "target": {"job": group, "indexes": [], "ids": []},
                "params": {"user": self.user, "password": "", "public_key": self.public_key},
            });
            let what = format!("setting up SSH on '{group}'");
            let path = format!("/deployments/{}/ssh", self.deployment);
            // Asked: cleaned up from here on, whatever the answer.
            self.set_up.push(group.clone());
            let id = match self.director.start_task(&path, Some(&body), &what)? {
                Ok(id) => id,
                Err(reply) => return Err(self.director.status(&what, &reply).into()),
            };
            let result = match self
                .director
                .wait_task(id, &what, SETUP_LIMIT, Level::Interrupted)
            {
                // One way to say it, whenever in the setup the interruption came.
                Err(ApiError::TaskInterrupted { .. }) => return Err(SshAccessError::Interrupted),
                other => other?,
            };
            hosts.extend(parse_setup(group, &result)?);
        }
        if crate::interrupt::is_interrupted() {
            return Err(SshAccessError::Interrupted);
        }
        write_known_hosts(&self.known_hosts(), &hosts)?;
        Ok(hosts)
    }

    /// Removes the temporary user from every group it was asked for; what could not be
    /// removed comes back as warnings naming the user.
    pub fn finish(mut self) -> Vec<String> {
        self.cleanup()
    }

    fn cleanup(&mut self) -> Vec<String> {
        let mut warnings = Vec::new();
        for group in std::mem::take(&mut self.set_up) {
            let body = serde_json::json!({
                "command": "cleanup",
                "deployment_name": self.deployment,
                "target": {"job": group, "indexes": [], "ids": []},
                "params": {"user_regex": format!("^{}", self.user)},
            });
            let what = format!("removing the SSH user from '{group}'");
            let path = format!("/deployments/{}/ssh", self.deployment);
            let done = self
                .director
                .start_task(&path, Some(&body), &what)
                .and_then(|started| match started {
                    Ok(id) => self
                        .director
                        .wait_task(id, &what, CLEANUP_LIMIT, Level::Hard)
                        .map(drop),
                    Err(reply) => Err(self.director.status(&what, &reply)),
                });
            if let Err(e) = done {
                warnings.push(format!(
                    "the temporary SSH user {} may still be on the VMs of {}/{group}: remove it there (userdel -r {}): {e}",
                    self.user, self.deployment, self.user
                ));
            }
        }
        warnings
    }
}

impl Drop for SshAccess {
    fn drop(&mut self) {
        for warning in self.cleanup() {
            tracing::warn!("{warning}");
        }
    }
}

/// The hosts of one group's setup result: `[{status, job, index, id, ip, host_public_key}]`.
fn parse_setup(group: &str, result: &[u8]) -> Result<Vec<Host>, SshAccessError> {
    #[derive(serde::Deserialize)]
    struct SshResp {
        #[serde(default)]
        status: String,
        #[serde(default)]
        job: String,
        #[serde(default)]
        index: Option<u32>,
        #[serde(default)]
        id: String,
        #[serde(default)]
        ip: String,
        #[serde(default)]
        host_public_key: String,
    }
    let bad = |detail: String| SshAccessError::BadAnswer {
        group: group.to_string(),
        detail,
    };
    let resps: Vec<SshResp> = serde_json::from_slice(result).map_err(|e| bad(e.to_string()))?;
    if resps.is_empty() {
        return Err(SshAccessError::NoHosts {
            group: group.to_string(),
        });
    }
    let mut hosts = Vec::new();
    for r in resps {
        let id = match (r.id.is_empty(), r.index) {
            (false, _) => r.id,
            (true, Some(i)) => i.to_string(),
            (true, None) => return Err(bad("an instance with neither id nor index".into())),
        };
        let job = if r.job.is_empty() {
            group.to_string()
        } else {
            r.job
        };
        if !plain_name(&job) || !plain_name(&id) {
            return Err(bad(format!(
                "instance '{}/{}': not plain names",
                job.escape_debug(),
                id.escape_debug()
            )));
        }
        let instance = format!("{job}/{id}");
        if r.status != "success" {
            return Err(SshAccessError::SetupFailed {
                instance,
                status: super::client::one_line(&r.status),
            });
        }
        let (address, port) = parse_address(&r.ip).ok_or_else(|| {
            bad(format!(
                "instance {instance}: address '{}'",
                r.ip.escape_debug()
            ))
        })?;
        let host_key = parse_host_key(&r.host_public_key).ok_or_else(|| {
            bad(format!(
                "instance {instance}: host key '{}'",
                r.host_public_key.escape_debug()
            ))
        })?;
        hosts.push(Host {
            group: job,
            id,
            address,
            port,
            host_key,
        });
    }
    Ok(hosts)
}

/// `10.0.0.5`, `10.0.0.5:2222`, `fd00::5`, `[fd00::5]:2222`: the address and any port.
pub fn parse_address(ip: &str) -> Option<(String, Option<u16>)> {
    let ok = |a: &str| {
        !a.is_empty()
            && a.len() <= 255
            && !a.starts_with('-')
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".:-".contains(c))
    };
    if let Some(v6) = ip.strip_prefix('[') {
        let (address, rest) = v6.split_once(']')?;
        let port = match rest {
            "" => None,
            _ => Some(rest.strip_prefix(':')?.parse().ok()?),
        };
        return ok(address).then(|| (address.to_string(), port));
    }
    match ip.matches(':').count() {
        1 => {
            let (address, port) = ip.split_once(':')?;
            ok(address).then_some(())?;
            Some((address.to_string(), Some(port.parse().ok()?)))
        }
        _ => ok(ip).then(|| (ip.to_string(), None)),
    }
}

/// `type base64` of an authorized_keys-style host key (any comment dropped).
fn parse_host_key(key: &str) -> Option<String> {
    if key.chars().any(|c| c.is_control() && c != ' ') {
        return None;
    }
    let mut words = key.split_whitespace();
    let (kind, data) = (words.next()?, words.next()?);
    let kind_ok = !kind.is_empty()
        && kind.len() <= 64
        && kind
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-@.".contains(c));
    let data_ok = !data.is_empty()
        && data.len() <= 16 * 1024
        && data
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c));
    (kind_ok && data_ok).then(|| format!("{kind} {data}"))
}

/// The name a host's key is filed under in the private known_hosts: its own alias, so each
/// instance's key is good for that instance only, whatever address it is reached at.
pub fn host_alias(host: &Host) -> String {
    format!("{}.{}.bbr-agent", host.id, host.group)
}

fn write_known_hosts(path: &Path, hosts: &[Host]) -> Result<(), SshAccessError> {
    let mut text = String::new();
    for h in hosts {
        let _ = writeln!(text, "{} {}", host_alias(h), h.host_key);
    }
    fs::write(path, text).map_err(|source| SshAccessError::KnownHosts {
        path: path.to_path_buf(),
        source,
    })
}

fn random_hex(n: usize) -> std::io::Result<String> {
    let mut bytes = vec![0u8; n.div_ceil(2)];
    fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let mut hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    hex.truncate(n);
    Ok(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_setup_result_as_the_director_writes_it() {
        let result = br#"[{"status":"success","ip":"10.0.0.5","host_public_key":"ssh-ed25519 AAAAC3Nz root@vm","id":"3f2c-1","index":0,"job":"db","command":"setup"},
                          {"status":"success","ip":"127.0.0.1:2222","host_public_key":"ssh-rsa AAAAB3+/=","index":1,"job":"db"}]"#;
        let hosts = parse_setup("db", result).unwrap();
        assert_eq!(hosts[0].id, "3f2c-1");
        assert_eq!(hosts[0].address, "10.0.0.5");
        assert_eq!(hosts[0].port, None);
        assert_eq!(hosts[0].host_key, "ssh-ed25519 AAAAC3Nz");
        assert_eq!(hosts[1].id, "1");
        assert_eq!(hosts[1].port, Some(2222));
    }

    #[test]
    fn a_failed_or_hostile_setup_is_refused_naming_the_instance() {
        let failed =
            br#"[{"status":"failure","ip":"10.0.0.5","host_public_key":"","id":"x","job":"db"}]"#;
        let err = parse_setup("db", failed).unwrap_err().to_string();
        assert!(err.contains("db/x") && err.contains("failure"), "{err}");
        for bad in [
            r#"[{"status":"success","ip":"-oProxyCommand=x","host_public_key":"ssh-ed25519 AAAA","id":"x"}]"#,
            r#"[{"status":"success","ip":"10.0.0.5","host_public_key":"ssh-ed25519 AA\nAA","id":"x"}]"#,
            r#"[{"status":"success","ip":"10.0.0.5","host_public_key":"ssh-ed25519 AAAA","id":"../x"}]"#,
            r#"[]"#,
        ] {
            assert!(parse_setup("db", bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn addresses_with_and_without_ports() {
        assert_eq!(parse_address("fd00::5"), Some(("fd00::5".into(), None)));
        assert_eq!(
            parse_address("[fd00::5]:22"),
            Some(("fd00::5".into(), Some(22)))
        );
        assert_eq!(parse_address("h:x"), None);
        assert_eq!(parse_address("a b"), None);
    }

    #[test]
    fn user_names_are_bosh_and_15_hex() {
        let hex = random_hex(15).unwrap();
        assert_eq!(hex.len(), 15);
        assert!(hex.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
