//! The adapter from what the director said to what the driver already runs on: each instance
//! the director opened to the temporary user becomes an inventory [`Target`] whose command
//! is OpenSSH to that instance (the throw-away key, the private known_hosts with the host key
//! the director reported, nothing else trusted) running the agent there.
//!
//! The agent's command on the VM is `sudo {{ agent }} serve`: the bootstrap, which runs the
//! installed agent or brings this driver's (docs/protocol.md, "Bringing the agent"), unless
//! `BBR_AGENT_REMOTE_COMMAND` says otherwise: a tera template with `agent`, `deployment`,
//! `group`, `index`, `id` and `address`, for testing (tests map instances to `--root` trees)
//! and for an agent installed elsewhere.

use std::path::Path;

use super::instances::Vm;
use super::openssh::OpenSsh;
use super::ssh_access::{Host, host_alias};
use crate::driver::inventory::Target;
use crate::instance::InstanceId;

/// The bootstrap, run as root through the temporary user's sudo: the agent the BOSH job
/// installs, or this driver's.
pub const DEFAULT_REMOTE_COMMAND: &str = "sudo {{ agent }} serve";
/// The environment variable that replaces [`DEFAULT_REMOTE_COMMAND`].
pub const REMOTE_COMMAND_ENV: &str = "BBR_AGENT_REMOTE_COMMAND";

#[derive(Debug, thiserror::Error)]
pub enum TargetsError {
    #[error(
        "the director set up SSH on instance {group}/{id}, which is not among the deployment's VMs"
    )]
    UnknownInstance { group: String, id: String },
    #[error("the director lists instance {group}/{id} without an index")]
    NoIndex { group: String, id: String },
    #[error("the director set up SSH on instance {group}/{index} twice")]
    Twice { group: String, index: u32 },
    #[error("{REMOTE_COMMAND_ENV} cannot be rendered for instance {instance}: {detail}")]
    Template { instance: String, detail: String },
}

/// One instance of the deployment, reached through the director's SSH access.
#[derive(Debug, Clone)]
pub struct Member {
    pub group: String,
    pub index: u32,
    pub id: String,
    pub host: Host,
}

/// Joins the SSH hosts with the VM list (by group and id), in the director's order.
pub fn members(vms: &[Vm], hosts: &[Host]) -> Result<Vec<Member>, TargetsError> {
    let members: Vec<Member> = hosts
        .iter()
        .map(|h| {
            let vm = vms
                .iter()
                .find(|v| {
                    v.job_name == h.group
                        && (v.id == h.id || v.index.map(|i| i.to_string()) == Some(h.id.clone()))
                })
                .ok_or_else(|| TargetsError::UnknownInstance {
                    group: h.group.clone(),
                    id: h.id.clone(),
                })?;
            let index = vm.index.ok_or_else(|| TargetsError::NoIndex {
                group: vm.job_name.clone(),
                id: vm.id.clone(),
            })?;
            Ok(Member {
                group: vm.job_name.clone(),
                index,
                id: vm.id.clone(),
                host: h.clone(),
            })
        })
        .collect::<Result<_, _>>()?;
    let mut seen = std::collections::BTreeSet::new();
    for m in &members {
        if !seen.insert((m.group.as_str(), m.index)) {
            return Err(TargetsError::Twice {
                group: m.group.clone(),
                index: m.index,
            });
        }
    }
    Ok(members)
}

/// The driver's targets: `ssh ... user@address -- <agent command>` per member.
pub fn targets(
    deployment: &str,
    members: &[Member],
    user: &str,
    key: &Path,
    known_hosts: &Path,
    remote_template: &str,
    proxy_command: Option<&str>,
) -> Result<Vec<Target>, TargetsError> {
    members
        .iter()
        .map(|m| {
            let id = InstanceId {
                group: m.group.clone(),
                index: m.index.to_string(),
            };
            let remote = render(remote_template, deployment, m).map_err(|detail| {
                TargetsError::Template {
                    instance: id.to_string(),
                    detail,
                }
            })?;
            Ok(Target {
                id,
                command: ssh_command(m, user, key, known_hosts, &remote, proxy_command),
            })
        })
        .collect()
}

fn render(template: &str, deployment: &str, m: &Member) -> Result<String, String> {
    render_remote(
        template,
        deployment,
        &m.group,
        m.index,
        &m.id,
        &m.host.address,
    )
}

/// The agent's command for one instance, from [`REMOTE_COMMAND_ENV`]'s template.
pub fn render_remote(
    template: &str,
    deployment: &str,
    group: &str,
    index: u32,
    id: &str,
    address: &str,
) -> Result<String, String> {
    let mut context = tera::Context::new();
    context.insert("agent", crate::driver::bootstrap::PLACEHOLDER);
    context.insert("deployment", deployment);
    context.insert("group", group);
    context.insert("index", &index);
    context.insert("id", id);
    context.insert("address", address);
    tera::Tera::one_off(template, &context, false).map_err(|e| {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text.replace('\n', " ")
    })
}

/// OpenSSH with this run's key, and the key the director reported for this instance as the
/// only one trusted.
fn ssh_command(
    m: &Member,
    user: &str,
    key: &Path,
    known_hosts: &Path,
    remote: &str,
    proxy_command: Option<&str>,
) -> String {
    OpenSsh {
        key,
        known_hosts,
        host_key_alias: Some(host_alias(&m.host)),
        port: m.host.port.unwrap_or(22),
        user,
        address: &m.host.address,
        proxy_command,
        ciphers: super::openssh::fast_ciphers(),
    }
    .command(remote)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member() -> Member {
        Member {
            group: "db".into(),
            index: 1,
            id: "3f2c".into(),
            host: Host {
                group: "db".into(),
                id: "3f2c".into(),
                address: "10.0.0.7".into(),
                port: None,
                host_key: "ssh-ed25519 AAAA".into(),
            },
        }
    }

    #[test]
    fn the_command_pins_the_host_key_and_runs_the_agent_with_sudo() {
        let t = targets(
            "acme",
            &[member()],
            "bosh_0123456789abcde",
            Path::new("/tmp/k/id_ed25519"),
            Path::new("/tmp/k/known_hosts"),
            DEFAULT_REMOTE_COMMAND,
            None,
        )
        .unwrap();
        assert_eq!(t[0].id.to_string(), "db/1");
        let c = &t[0].command;
        assert!(
            c.starts_with("ssh -F /dev/null -i /tmp/k/id_ed25519 "),
            "{c}"
        );
        assert!(c.contains("-o StrictHostKeyChecking=yes"), "{c}");
        assert!(
            c.contains("-o UserKnownHostsFile=/tmp/k/known_hosts"),
            "{c}"
        );
        assert!(c.contains("-o HostKeyAlias=3f2c.db.bbr-agent"), "{c}");
        assert!(!c.contains("StrictHostKeyChecking=no"), "{c}");
        assert!(
            c.ends_with(&format!(
                "-p 22 -l bosh_0123456789abcde 10.0.0.7 -- sudo {} serve",
                crate::driver::bootstrap::PLACEHOLDER
            )),
            "{c}"
        );
        // Plain words: the driver starts it without a shell.
        assert!(!c.contains('\''), "{c}");
    }

    #[test]
    fn the_remote_command_template_and_quoting() {
        let t = targets(
            "acme",
            &[member()],
            "u",
            Path::new("/tmp/a b/id"),
            Path::new("/tmp/kh"),
            "cd /x && agent --root /vms/{{ group }}-{{ index }}-{{ id }} serve",
            Some("ssh -i /j -W %h:%p jumpbox"),
        )
        .unwrap();
        let c = &t[0].command;
        assert!(c.contains("-i '/tmp/a b/id'"), "{c}");
        assert!(
            c.contains("-o 'ProxyCommand=ssh -i /j -W %h:%p jumpbox'"),
            "{c}"
        );
        assert!(
            c.ends_with("-- 'cd /x && agent --root /vms/db-1-3f2c serve'"),
            "{c}"
        );
    }

    #[test]
    fn hosts_join_vms_by_group_and_id() {
        let vms = vec![Vm {
            job_name: "db".into(),
            index: Some(1),
            id: "3f2c".into(),
            ips: vec![],
            bootstrap: true,
        }];
        let m = members(&vms, &[member().host]).unwrap();
        assert_eq!(m[0].index, 1);
        assert!(matches!(
            members(&vms, &[member().host, member().host]),
            Err(TargetsError::Twice { .. })
        ));
        let mut stranger = member().host;
        stranger.id = "other".into();
        assert!(matches!(
            members(&vms, &[stranger]),
            Err(TargetsError::UnknownInstance { .. })
        ));
    }
}
