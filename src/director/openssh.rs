//! The OpenSSH command line that reaches an agent: nothing but the given key (no ssh config,
//! no agent, no other identity), strict host key checking against the given known_hosts file
//! only, never a prompt; then the agent's command for the remote shell.

use std::path::Path;

pub struct OpenSsh<'a> {
    pub key: &'a Path,
    pub known_hosts: &'a Path,
    /// The name the host's key is filed under, when not `host` / `[host]:port`.
    pub host_key_alias: Option<String>,
    pub port: u16,
    pub user: &'a str,
    pub address: &'a str,
    /// How to reach the host: a jumpbox's `ssh -W %h:%p` (`BOSH_ALL_PROXY`).
    pub proxy_command: Option<&'a str>,
}

impl OpenSsh<'_> {
    /// `ssh ... -l user address -- remote`, as a line for `sh` (plain words when it can be).
    pub fn command(&self, remote: &str) -> String {
        let mut words: Vec<String> = vec![
            "ssh".into(),
            "-F".into(),
            "/dev/null".into(),
            "-i".into(),
            self.key.display().to_string(),
        ];
        let mut options = vec![
            "BatchMode=yes".to_string(),
            "IdentitiesOnly=yes".to_string(),
            "IdentityAgent=none".to_string(),
            "StrictHostKeyChecking=yes".to_string(),
            format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "GlobalKnownHostsFile=/dev/null".to_string(),
        ];
        if let Some(alias) = &self.host_key_alias {
            options.push(format!("HostKeyAlias={alias}"));
            options.push("CheckHostIP=no".to_string());
        }
        if let Some(proxy) = self.proxy_command {
            options.push(format!("ProxyCommand={proxy}"));
        }
        options.extend(
            [
                "UpdateHostKeys=no",
                "ConnectTimeout=30",
                "ServerAliveInterval=30",
                "LogLevel=ERROR",
            ]
            .map(String::from),
        );
        for option in options {
            words.push("-o".into());
            words.push(option);
        }
        words.extend([
            "-p".to_string(),
            self.port.to_string(),
            "-l".to_string(),
            self.user.to_string(),
            self.address.to_string(),
            "--".to_string(),
        ]);
        let mut command: Vec<String> = words.iter().map(|w| shell_word(w)).collect();
        // The remote command is a line for the VM's shell: one word here, passed on as it is.
        command.push(if is_plain(remote) {
            remote.to_string()
        } else {
            shell_word(remote)
        });
        command.join(" ")
    }
}

fn is_plain(s: &str) -> bool {
    !s.trim().is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@%+,= ".contains(c))
}

/// `s` as one word for `sh`: as it is when plain, else in single quotes.
pub(crate) fn shell_word(s: &str) -> String {
    if !s.is_empty() && !s.contains(' ') && is_plain(s) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_the_shell_would_change_are_quoted() {
        assert_eq!(shell_word("/tmp/a b"), "'/tmp/a b'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word("/tmp/k"), "/tmp/k");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn without_an_alias_the_host_is_checked_under_its_own_name() {
        let c = OpenSsh {
            key: Path::new("/k"),
            known_hosts: Path::new("/root/.ssh/known_hosts"),
            host_key_alias: None,
            port: 2222,
            user: "jumpbox",
            address: "10.0.0.6",
            proxy_command: None,
        }
        .command("sudo bbr-agent serve");
        assert!(!c.contains("HostKeyAlias"), "{c}");
        assert!(
            c.contains("-o UserKnownHostsFile=/root/.ssh/known_hosts"),
            "{c}"
        );
        assert!(
            c.ends_with("-p 2222 -l jumpbox 10.0.0.6 -- sudo bbr-agent serve"),
            "{c}"
        );
    }
}
