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
    /// The ciphers to offer, in order, when not OpenSSH's own (see [`fast_ciphers`]).
    pub ciphers: Option<&'a str>,
}

/// OpenSSH's default ciphers with AES-GCM first, on a CPU with AES and carry-less multiply
/// instructions; `None` elsewhere. OpenSSH offers chacha20-poly1305 first, the safe choice
/// without AES instructions; with them AES-GCM costs the VM under backup about a third less CPU
/// a GiB (docs/benchmarks.md, "Targets 3 and 4, stop 13"). The list is a whole one, not `^...`,
/// so that OpenSSH before 8.x takes it; a server without AES-GCM still agrees on chacha20.
pub fn fast_ciphers() -> Option<&'static str> {
    const AES_GCM_FIRST: &str = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,\
        chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr";
    #[cfg(target_arch = "x86_64")]
    let fast = std::arch::is_x86_feature_detected!("aes")
        && std::arch::is_x86_feature_detected!("pclmulqdq");
    #[cfg(target_arch = "aarch64")]
    let fast = std::arch::is_aarch64_feature_detected!("aes")
        && std::arch::is_aarch64_feature_detected!("pmull");
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let fast = false;
    fast.then_some(AES_GCM_FIRST)
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
        if let Some(ciphers) = self.ciphers {
            options.push(format!("Ciphers={ciphers}"));
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
            ciphers: None,
        }
        .command("sudo bbr-agent serve");
        assert!(!c.contains("HostKeyAlias"), "{c}");
        assert!(!c.contains("Ciphers"), "{c}");
        assert!(
            c.contains("-o UserKnownHostsFile=/root/.ssh/known_hosts"),
            "{c}"
        );
        assert!(
            c.ends_with("-p 2222 -l jumpbox 10.0.0.6 -- sudo bbr-agent serve"),
            "{c}"
        );
    }

    #[test]
    fn the_given_ciphers_are_offered_in_their_order() {
        let c = OpenSsh {
            key: Path::new("/k"),
            known_hosts: Path::new("/kh"),
            host_key_alias: None,
            port: 22,
            user: "vcap",
            address: "10.0.0.5",
            proxy_command: None,
            ciphers: Some("aes128-gcm@openssh.com,chacha20-poly1305@openssh.com"),
        }
        .command("sudo bbr-agent serve");
        assert!(
            c.contains("-o Ciphers=aes128-gcm@openssh.com,chacha20-poly1305@openssh.com "),
            "{c}"
        );
    }

    #[test]
    fn the_fast_list_keeps_every_default_cipher_and_puts_aes_gcm_first() {
        let Some(list) = fast_ciphers() else {
            return; // no AES instructions here: OpenSSH's own order is kept
        };
        let ciphers: Vec<&str> = list.split(',').collect();
        assert_eq!(ciphers[0], "aes128-gcm@openssh.com");
        for default in [
            "chacha20-poly1305@openssh.com",
            "aes128-ctr",
            "aes192-ctr",
            "aes256-ctr",
            "aes128-gcm@openssh.com",
            "aes256-gcm@openssh.com",
        ] {
            assert!(ciphers.contains(&default), "{default} missing from {list}");
        }
        assert!(
            ciphers.iter().all(|c| !c.contains(char::is_whitespace)),
            "{list}"
        );
    }
}
