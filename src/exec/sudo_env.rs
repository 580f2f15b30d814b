//! The base environment of every script: what `sudo` (with the stemcell's `env_reset` and
//! `secure_path`) gives the command BBR runs as `sudo VAR=... /var/vcap/jobs/<job>/bin/bbr/<name>`.
//!
//! Checked against sudo 1.9 (`sudo /usr/bin/env` as root and as another user): `PATH`
//! (`secure_path`); `HOME`, `USER`, `LOGNAME`, `SHELL` and `MAIL` of the target user (the one
//! the agent runs as, root on a VM); `SUDO_USER`, `SUDO_UID`, `SUDO_GID` of the user who ran
//! sudo and `SUDO_COMMAND`, the command as given; `TERM` from the caller when it passes sudo's
//! `env_check` (no `/`, no `%`), else `TERM=unknown`, as sudo sets it.
//!
//! Who "ran sudo": when the agent was itself started by sudo (`ssh user@vm sudo bbr-agent
//! serve`), its own `SUDO_USER`/`SUDO_UID`/`SUDO_GID` name that SSH user, which is who BBR's
//! sudo would name; otherwise the agent's own real user, as sudo names root when root runs it.

use std::ffi::OsString;
use std::path::Path;
use std::sync::OnceLock;

/// The `PATH` that `sudo` gives on a BOSH stemcell (its `secure_path`).
pub const SCRIPT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// sudo's `TERM` when the caller has none it keeps.
const UNKNOWN_TERM: &str = "unknown";

/// Where sudo points `MAIL` (glibc's `_PATH_MAILDIR`).
const MAIL_DIR: &str = "/var/mail";

/// sudo's shell for a user whose passwd entry has none (`_PATH_BSHELL`).
const DEFAULT_SHELL: &str = "/bin/sh";

/// The variables sudo would give `script`, in a fixed order.
pub fn sudo_env(script: &Path) -> Vec<(String, OsString)> {
    let mut env: Vec<(String, OsString)> = base()
        .iter()
        .map(|(k, v)| (k.clone(), OsString::from(v)))
        .collect();
    // sudo shows the command as it was given (its bytes): BBR gives the job's path.
    env.push(("SUDO_COMMAND".to_string(), script.as_os_str().to_owned()));
    env
}

/// Everything but `SUDO_COMMAND`: the same for every script of this process.
fn base() -> &'static Vec<(String, String)> {
    static BASE: OnceLock<Vec<(String, String)>> = OnceLock::new();
    BASE.get_or_init(|| {
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let own = |key: &str| std::env::var(key).ok();
        build(&passwd, Ids::of_this_process(), &own)
    })
}

/// The ids sudo looks at: the target user (effective) and the caller (real).
#[derive(Debug, Clone, Copy)]
struct Ids {
    euid: u32,
    uid: u32,
    gid: u32,
}

impl Ids {
    fn of_this_process() -> Ids {
        Ids {
            euid: nix::unistd::geteuid().as_raw(),
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
        }
    }
}

/// One `/etc/passwd` entry's fields we need. Read from the file itself: the binary is static,
/// and glibc's NSS would load the VM's own (possibly other-version) modules for a user it
/// does not find there.
struct PasswdEntry<'a> {
    name: &'a str,
    home: &'a str,
    shell: &'a str,
}

fn passwd_entry(passwd: &str, uid: u32) -> Option<PasswdEntry<'_>> {
    let uid = uid.to_string();
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 7 && f[2] == uid)
        .map(|f| PasswdEntry {
            name: f[0],
            home: f[5],
            shell: f[6],
        })
}

fn build(
    passwd: &str,
    ids: Ids,
    own_env: &dyn Fn(&str) -> Option<String>,
) -> Vec<(String, String)> {
    let mut env = vec![("PATH".to_string(), SCRIPT_PATH.to_string())];
    let mut set = |k: &str, v: &str| env.push((k.to_string(), v.to_string()));
    if let Some(target) = passwd_entry(passwd, ids.euid) {
        set("HOME", target.home);
        set("USER", target.name);
        set("LOGNAME", target.name);
        set(
            "SHELL",
            if target.shell.is_empty() {
                DEFAULT_SHELL
            } else {
                target.shell
            },
        );
        set("MAIL", &format!("{MAIL_DIR}/{}", target.name));
    }
    let numeric = |key: &str| own_env(key).filter(|v| !v.is_empty() && v.parse::<u32>().is_ok());
    let inherited = match (
        own_env("SUDO_USER"),
        numeric("SUDO_UID"),
        numeric("SUDO_GID"),
    ) {
        (Some(user), Some(uid), Some(gid)) if !user.is_empty() => Some((user, uid, gid)),
        _ => None,
    };
    let caller = inherited.or_else(|| {
        passwd_entry(passwd, ids.uid)
            .map(|e| (e.name.to_string(), ids.uid.to_string(), ids.gid.to_string()))
    });
    if let Some((user, uid, gid)) = caller {
        set("SUDO_USER", &user);
        set("SUDO_UID", &uid);
        set("SUDO_GID", &gid);
    }
    let term = own_env("TERM")
        .filter(|t| !t.is_empty() && !t.contains('/') && !t.contains('%'))
        .unwrap_or_else(|| UNKNOWN_TERM.to_string());
    set("TERM", &term);
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
                          vcap:x:1000:1000:BOSH System User:/home/vcap:/bin/bash\n\
                          nosh:x:1001:1001::/home/nosh:\n";

    fn env_of(ids: Ids, own: &[(&str, &str)]) -> BTreeMap<String, String> {
        let own: BTreeMap<String, String> = own
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        build(PASSWD, ids, &|k| own.get(k).cloned())
            .into_iter()
            .collect()
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const ROOT: Ids = Ids {
        euid: 0,
        uid: 0,
        gid: 0,
    };

    #[test]
    fn root_without_sudo_gets_what_sudo_gives_root() {
        assert_eq!(
            env_of(ROOT, &[("HOME", "/elsewhere"), ("TERM", "xterm-256color")]),
            map(&[
                ("PATH", SCRIPT_PATH),
                ("HOME", "/root"),
                ("USER", "root"),
                ("LOGNAME", "root"),
                ("SHELL", "/bin/bash"),
                ("MAIL", "/var/mail/root"),
                ("SUDO_USER", "root"),
                ("SUDO_UID", "0"),
                ("SUDO_GID", "0"),
                ("TERM", "xterm-256color"),
            ])
        );
    }

    #[test]
    fn an_agent_started_by_sudo_names_its_caller_and_term_is_checked_as_sudo_does() {
        let sudo = [
            ("SUDO_USER", "vcap"),
            ("SUDO_UID", "1000"),
            ("SUDO_GID", "1000"),
            ("SUDO_COMMAND", "/usr/local/bin/bbr-agent serve"),
        ];
        let env = env_of(ROOT, &sudo);
        assert_eq!(env["SUDO_USER"], "vcap");
        assert_eq!(env["SUDO_UID"], "1000");
        assert_eq!(env["SUDO_GID"], "1000");
        assert_eq!(env["HOME"], "/root", "the target user's, not the caller's");
        assert_eq!(
            env["TERM"], "unknown",
            "sudo's TERM when the caller has none"
        );
        assert!(!env.contains_key("SUDO_COMMAND"), "set per script");
        // A half or non-numeric set is not trusted: the real ids are named instead.
        let env = env_of(ROOT, &[("SUDO_USER", "vcap"), ("SUDO_UID", "x1000")]);
        assert_eq!(env["SUDO_USER"], "root");
        assert_eq!(env_of(ROOT, &[("TERM", "../../x")])["TERM"], "unknown");
        assert_eq!(env_of(ROOT, &[("TERM", "%s")])["TERM"], "unknown");
    }

    #[test]
    fn an_unprivileged_agent_is_its_own_target_and_caller() {
        let env = env_of(
            Ids {
                euid: 1001,
                uid: 1001,
                gid: 1001,
            },
            &[],
        );
        assert_eq!(env["USER"], "nosh");
        assert_eq!(env["SHELL"], "/bin/sh", "an empty shell is sudo's /bin/sh");
        assert_eq!(env["MAIL"], "/var/mail/nosh");
        assert_eq!(env["SUDO_USER"], "nosh");
        assert_eq!(env["SUDO_GID"], "1001");
    }

    #[test]
    fn sudo_command_is_the_script_as_bbr_gives_it() {
        let env = sudo_env(Path::new("/var/vcap/jobs/api/bin/bbr/backup"));
        assert_eq!(
            env.last(),
            Some(&(
                "SUDO_COMMAND".to_string(),
                OsString::from("/var/vcap/jobs/api/bin/bbr/backup")
            ))
        );
    }
}
