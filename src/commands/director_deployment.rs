//! `deployment --target URL --username NAME --password SECRET [--ca-cert PATH|PEM]
//! --deployment NAME <command>`: BBR's own command line. The director lists the deployment's
//! VMs, says each job's release (its manifest) and opens the VMs to a temporary SSH user; the workflows then run over those VMs exactly
//! as over an inventory's, and the user is removed at the end of every run, failed and
//! interrupted ones included.

use std::path::Path;

use super::context::Context;
use super::deployment::{remote_instances, run_instances_counted};
use crate::cli::{DeploymentArgs, DeploymentCommand};
use crate::director::jumpbox::{Jumpbox, Tunnel};
use crate::director::releases::WithReleases;
use crate::director::targets::{self, DEFAULT_REMOTE_COMMAND, REMOTE_COMMAND_ENV};
use crate::director::{Director, DirectorError, SshAccess, instances, manifest};
use crate::error::AppError;
use crate::instance::{Instance, InstanceId};
use crate::shell_quote::quote;
use crate::workflow::{Failure, OneForAll};

/// The inventory to use, or `None` for a director; both or neither is a usage error. A
/// director known only from `BOSH_ENVIRONMENT` gives way to an explicit `--inventory` (the
/// flag on the command line wins over the environment, as everywhere).
pub fn inventory(args: &DeploymentArgs) -> Result<Option<&Path>, AppError> {
    let target_given = args.director.target.is_some() && on_command_line("--target", 't');
    match (&args.inventory, &args.director.target) {
        (Some(_), Some(_)) if target_given => Err(AppError::Usage(
            "--inventory and a director (--target) are both given: use one of them".into(),
        )),
        (Some(_), _) if args.director.all_deployments => Err(AppError::Usage(
            "--all-deployments needs a director (--target): an inventory is one deployment".into(),
        )),
        (Some(path), _) => Ok(Some(path)),
        (None, Some(_)) => Ok(None),
        (None, None) => Err(AppError::Usage(
            "say where the deployment is: a BOSH director (--target/-t or BOSH_ENVIRONMENT, with --username, --password and --deployment) or --inventory FILE".into(),
        )),
    }
}

/// Whether `--LONG`/`-S` is on this process's command line (not only in the environment
/// that clap also reads it from).
pub fn on_command_line(long: &str, short: char) -> bool {
    let short = format!("-{short}");
    std::env::args_os().skip(1).any(|a| {
        let a = a.as_encoded_bytes();
        a == long.as_bytes()
            || a.starts_with(format!("{long}=").as_bytes())
            || (a.starts_with(short.as_bytes()) && !a.starts_with(b"--"))
    })
}

pub fn run(ctx: &Context, args: &DeploymentArgs) -> Result<i32, AppError> {
    if args.director.all_deployments {
        return super::all_deployments::run(ctx, args);
    }
    let deployment = required(
        &args.director.deployment,
        "--deployment (-d) or BOSH_DEPLOYMENT, or --all-deployments",
    )?;
    let login = Login::of(args)?;
    let director = login.connect()?;
    run_one(ctx, args, &login, director, deployment).map(|(code, _)| code)
}

/// How to reach and log in to the director: BBR's flags and environment variables. With
/// `BOSH_ALL_PROXY`, the tunnel through the jumpbox is held as long as this is.
pub struct Login<'a> {
    pub target: &'a str,
    user: &'a str,
    secret: &'a str,
    ca: Option<String>,
    jumpbox: Option<Jumpbox>,
    tunnel: Option<Tunnel>,
}

impl<'a> Login<'a> {
    pub fn of(args: &'a DeploymentArgs) -> Result<Login<'a>, AppError> {
        let d = &args.director;
        let target = required(&d.target, "--target (-t) or BOSH_ENVIRONMENT")?;
        let user = required(&d.username, "--username (-u) or BOSH_CLIENT")?;
        let secret = required(&d.password, "--password (-p) or BOSH_CLIENT_SECRET")?;
        let jumpbox = Jumpbox::from_env().map_err(err)?;
        let tunnel = jumpbox
            .as_ref()
            .map(Jumpbox::tunnel)
            .transpose()
            .map_err(err)?;
        Ok(Login {
            target,
            user,
            secret,
            ca: d.ca_cert.clone().or_else(|| std::env::var("CA_CERT").ok()),
            jumpbox,
            tunnel,
        })
    }

    pub fn connect(&self) -> Result<Director, AppError> {
        let proxy = self.tunnel.as_ref().map(Tunnel::proxy_url);
        let ca = self.ca.as_deref();
        Director::connect(self.target, ca, proxy.as_deref(), self.user, self.secret).map_err(err)
    }

    /// The VMs' ProxyCommand through the jumpbox, if there is one.
    fn proxy_command(&self) -> Option<String> {
        self.jumpbox.as_ref().map(Jumpbox::proxy_command)
    }
}

/// The command over one deployment of `director`. Returns the exit code, and whether the
/// deployment has no BBR job at all (its VMs were described and none has a BBR script).
pub fn run_one(
    ctx: &Context,
    args: &DeploymentArgs,
    login: &Login<'_>,
    mut director: Director,
    deployment: &str,
) -> Result<(i32, bool), AppError> {
    let (target, user, ca) = (login.target, login.user, &login.ca);
    let remote = std::env::var(REMOTE_COMMAND_ENV)
        .ok()
        .filter(|c| !c.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_REMOTE_COMMAND.to_string());

    let cleanup_via = Some(cleanup_command(target, user, ca.as_deref(), deployment));
    let proxy_command = login.proxy_command();

    let vms = match instances::vms(&mut director, deployment) {
        // A deployment without VMs has no BBR scripts: --all-deployments passes it by.
        Err(instances::InstancesError::Empty { .. }) if args.director.all_deployments => {
            return Ok((0, true));
        }
        vms => vms.map_err(err)?,
    };
    let manifest = manifest::fetch(&mut director, deployment).map_err(err)?;
    let mut groups: Vec<String> = Vec::new();
    for vm in &vms {
        if !groups.contains(&vm.job_name) {
            groups.push(vm.job_name.clone());
        }
    }
    let mut access = SshAccess::new(director, deployment).map_err(err)?;
    let prepared = access.set_up(&groups).map_err(err).and_then(|hosts| {
        let members = targets::members(&vms, &hosts).map_err(err)?;
        let targets = targets::targets(
            deployment,
            &members,
            access.user(),
            &access.private_key(),
            &access.known_hosts(),
            &remote,
            proxy_command.as_deref(),
        )
        .map_err(err)?;
        // Each instance's jobs carry their releases, from its group in the manifest.
        let sessions = remote_instances(ctx, args, deployment, &targets, cleanup_via.clone())?;
        Ok(sessions
            .into_iter()
            .zip(&members)
            .map(|(session, m)| {
                Box::new(WithReleases::new(session, manifest.releases_of(&m.group)))
                    as Box<dyn Instance>
            })
            .collect::<Vec<_>>())
    });
    let with_manifest = matches!(
        args.command,
        DeploymentCommand::Backup {
            with_manifest: true,
            ..
        }
    );
    let text = with_manifest.then(|| manifest.text());
    let one_for_all = one_for_all(&manifest, &vms);
    let outcome = prepared.and_then(|i| {
        run_instances_counted(
            ctx,
            args,
            deployment,
            i,
            text,
            one_for_all,
            cleanup_via.clone(),
        )
    });
    // Every session has ended (run_targets says bye to each): the user can go.
    for warning in access.finish() {
        ctx.console.warn(warning);
    }
    outcome
}

/// The manifest's `backup_one_restore_all` jobs and the director's bootstrap instances.
fn one_for_all(manifest: &manifest::Manifest, vms: &[instances::Vm]) -> OneForAll {
    let bootstrap = vms.iter().filter(|v| v.bootstrap).filter_map(|v| {
        v.index.map(|index| InstanceId {
            group: v.job_name.clone(),
            index: index.to_string(),
        })
    });
    OneForAll::new(manifest.one_for_all().iter().cloned(), bootstrap)
}

fn err(e: impl Into<DirectorError>) -> AppError {
    AppError::Director(e.into())
}

fn required<'a>(value: &'a Option<String>, name: &str) -> Result<&'a str, AppError> {
    value
        .as_deref()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| AppError::Usage(format!("a director needs {name}")))
}

/// `--with-manifest`: the manifest as `manifest.yml` beside the metadata, as BBR stores it;
/// written whole or not at all, through the storage. Failing to is a failure of
/// the backup, as for BBR.
pub fn save_manifest(
    storage: &dyn crate::storage::Storage,
    dir: &str,
    text: &str,
    outcome: &mut crate::workflow::Outcome,
) {
    let key = format!("{dir}/manifest.yml");
    if let Err(e) = storage.put(&key, text.as_bytes()) {
        outcome.fail(crate::contract::exit_bits::GENERAL, Failure::Storage(e));
    }
}

/// What the agents name after a run they could not finish: this command line, without the
/// secret (given again as `--password` or `BOSH_CLIENT_SECRET`) and without a CA given as
/// PEM text.
fn cleanup_command(target: &str, user: &str, ca: Option<&str>, deployment: &str) -> String {
    let mut words = vec![
        "bbr-agent deployment --target".to_string(),
        quote(target).into_owned(),
        "--username".to_string(),
        quote(user).into_owned(),
    ];
    if let Some(path) = ca.filter(|c| !c.contains("-----BEGIN")) {
        // Absolute: the line is shown later, from another directory or off a VM's journal.
        let path = std::path::absolute(path)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| path.to_string());
        words.extend(["--ca-cert".to_string(), quote(&path).into_owned()]);
    }
    words.extend(["--deployment".to_string(), quote(deployment).into_owned()]);
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::cleanup_command;

    #[test]
    fn the_cleanup_command_has_the_directors_flags_and_no_secret() {
        assert_eq!(
            cleanup_command(
                "https://10.0.0.6:25555",
                "bbr_client",
                Some("/ca.pem"),
                "cf"
            ),
            "bbr-agent deployment --target https://10.0.0.6:25555 --username bbr_client --ca-cert /ca.pem --deployment cf"
        );
        let relative = cleanup_command("10.0.0.6", "u", Some("ca.pem"), "cf");
        let cwd = std::env::current_dir().unwrap();
        assert!(
            relative.contains(&format!("--ca-cert {}", cwd.join("ca.pem").display())),
            "{relative}"
        );
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";
        assert_eq!(
            cleanup_command("10.0.0.6", "admin user", Some(pem), "cf"),
            "bbr-agent deployment --target 10.0.0.6 --username 'admin user' --deployment cf"
        );
    }
}
