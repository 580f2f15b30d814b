//! `deployment --inventory FILE <command>` (or with a director: `director_deployment`): the
//! workflows over every VM of a deployment, each reached through its own `bbr-agent serve`
//! session.

use super::context::Context;
use crate::cli::{DeploymentArgs, DeploymentCommand};
use std::sync::Arc;

use crate::artifact::stored_backup::StoredBackup;
use crate::director::releases::WithReleases;
use crate::driver::bootstrap::{self, AgentMode, Bring};
use crate::driver::connecting::Connecting;
use crate::driver::inventory;
use crate::driver::{DEFAULT_CONNECT_TIMEOUT, RemoteInstance};
use crate::error::AppError;
use crate::instance::Instance;
use crate::protocol::WireSettings;
use crate::shell_quote::quote;
use crate::workflow::{self, BackupOptions, Deployment, OneForAll, RestoreOptions};

pub fn run(ctx: &Context, args: &DeploymentArgs) -> Result<i32, AppError> {
    if args.max_in_flight == 0 {
        return Err(AppError::Usage("--max-in-flight must be at least 1".into()));
    }
    let Some(path) = super::director_deployment::inventory(args)? else {
        return super::director_deployment::run(ctx, args);
    };
    let inventory = inventory::load(path)?;
    // The inventory names its deployment; `-d` naming another is a mistake to say, not to
    // pass over (BOSH_DEPLOYMENT left in the environment is).
    if let Some(named) = &args.director.deployment
        && named != &inventory.deployment
        && super::director_deployment::on_command_line("--deployment", 'd')
    {
        return Err(AppError::Usage(format!(
            "--deployment {} names another deployment than the inventory {} ({}): drop -d, or use the inventory of that deployment",
            quote(named),
            path.display(),
            quote(&inventory.deployment)
        )));
    }
    let cleanup_via = std::path::absolute(path).ok().and_then(|p| {
        p.to_str()
            .map(|p| format!("bbr-agent deployment --inventory {}", quote(p)))
    });
    no_manifest_here(args)?;
    let deployment = &inventory.deployment;
    let sessions = remote_instances(
        ctx,
        args,
        deployment,
        &inventory.targets,
        cleanup_via.clone(),
    )?;
    // An instance that lists its jobs' releases describes them with those.
    let instances = sessions
        .into_iter()
        .zip(&inventory.targets)
        .map(|(session, t)| match inventory.releases.get(&t.id) {
            Some(releases) => {
                Box::new(WithReleases::new(session, releases.clone())) as Box<dyn Instance>
            }
            None => session,
        })
        .collect();
    let one_for_all = OneForAll::new(
        inventory.backup_one_restore_all.iter().cloned(),
        inventory.bootstrap.iter().cloned(),
    );
    run_instances(
        ctx,
        args,
        deployment,
        instances,
        None,
        one_for_all,
        cleanup_via,
    )
}

/// The workflows over `targets`, wherever they came from: an inventory or a director.
pub fn run_targets(
    ctx: &Context,
    args: &DeploymentArgs,
    deployment: &str,
    targets: &[inventory::Target],
    cleanup_via: Option<String>,
) -> Result<i32, AppError> {
    no_manifest_here(args)?;
    let instances = remote_instances(ctx, args, deployment, targets, cleanup_via.clone())?;
    let none = OneForAll::default();
    run_instances(ctx, args, deployment, instances, None, none, cleanup_via)
}

/// `--with-manifest` without a director's deployment is a usage error.
fn no_manifest_here(args: &DeploymentArgs) -> Result<(), AppError> {
    match args.command {
        DeploymentCommand::Backup {
            with_manifest: true,
            ..
        } => Err(AppError::Usage(
            "--with-manifest needs a director (--target): the manifest is the director's".into(),
        )),
        _ => Ok(()),
    }
}

/// One `serve` session per target, none started yet; `cleanup_via` is the driver's command
/// that cleans up after this run, for the agents to name after a run they could not finish.
/// When a target's command runs the bootstrap (`{{ agent }}`), the binary it may bring is
/// read and checked here, before any session starts.
pub fn remote_instances(
    ctx: &Context,
    args: &DeploymentArgs,
    deployment: &str,
    targets: &[inventory::Target],
    cleanup_via: Option<String>,
) -> Result<Vec<Box<dyn Instance>>, AppError> {
    let bring = match targets
        .iter()
        .any(|t| t.command.contains(bootstrap::PLACEHOLDER))
    {
        true => {
            let console = Arc::clone(&ctx.console);
            let notice = Arc::new(move |line: &str| console.info(line));
            let bring =
                Bring::prepare(args.agent.agent, args.agent.agent_binary.as_deref(), notice)
                    .map_err(|e| AppError::Usage(e.to_string()))?;
            Some(Arc::new(bring))
        }
        false => {
            if args.agent.agent != AgentMode::Auto || args.agent.agent_binary.is_some() {
                ctx.console.warn(
                    "--agent and --agent-binary apply to commands with {{ agent }}, and no command of this run has it: each runs as it is",
                );
            }
            None
        }
    };
    let settings = WireSettings::from(&ctx.overrides(&args.scripts));
    let limit = args.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let console = Arc::clone(&ctx.console);
    // Where stdout holds JSON (`plan --json`), the line goes to stderr.
    let stdout_is_json = matches!(args.command, DeploymentCommand::Plan { json: true, .. });
    let connecting = Connecting::new(Arc::new(move |line: &str| match stdout_is_json {
        true => console.note(line),
        false => console.info(line),
    }));
    Ok(targets
        .iter()
        .map(|t| {
            let expanded = bring.as_ref().and_then(|b| b.expand(&t.command));
            let instance = RemoteInstance::new(
                t.id.clone(),
                deployment,
                expanded.as_deref().unwrap_or(&t.command),
                settings.clone(),
                ctx.console.script_events(),
            )
            .with_cleanup_via(cleanup_via.clone())
            .with_connect_timeout(limit, connecting.clone())
            .with_bring(expanded.and(bring.clone()));
            Box::new(instance) as Box<dyn Instance>
        })
        .collect())
}

/// The workflow the command asks for, over `instances`; a failed run names `cleanup_via`'s
/// cleanup as its next step. A director gives the manifest (for `--with-manifest`) and its
/// `backup_one_restore_all` jobs.
pub fn run_instances(
    ctx: &Context,
    args: &DeploymentArgs,
    deployment: &str,
    instances: Vec<Box<dyn Instance>>,
    manifest: Option<&str>,
    one_for_all: OneForAll,
    cleanup_via: Option<String>,
) -> Result<i32, AppError> {
    let run = run_instances_counted(
        ctx,
        args,
        deployment,
        instances,
        manifest,
        one_for_all,
        cleanup_via,
    );
    run.map(|(code, _)| code)
}

/// [`run_instances`], also saying whether the deployment has no BBR job at all: its every
/// instance was described and not one job with a BBR script was found (`--all-deployments`
/// passes such a deployment by).
pub fn run_instances_counted(
    ctx: &Context,
    args: &DeploymentArgs,
    deployment: &str,
    instances: Vec<Box<dyn Instance>>,
    manifest: Option<&str>,
    one_for_all: OneForAll,
    cleanup_via: Option<String>,
) -> Result<(i32, bool), AppError> {
    let mut dep = Deployment::new(deployment.to_string(), instances)
        .with_cleanup_via(cleanup_via)
        .with_one_for_all(one_for_all);
    dep.max_in_flight = args.max_in_flight;
    let console = &ctx.console;
    let outcome = match &args.command {
        DeploymentCommand::PreBackupCheck => workflow::pre_backup_check(&mut dep, console),
        DeploymentCommand::Backup {
            artifact_path,
            unsafe_lock_free,
            codecs,
            ..
        } => {
            let codecs = codecs.codecs()?;
            let (_, storage) = super::artifact_path::open(artifact_path)?;
            let opts = BackupOptions {
                storage: &*storage,
                lock_free: *unsafe_lock_free,
                codecs: &codecs,
            };
            let (mut outcome, dir) = workflow::backup(&mut dep, &opts, console);
            if let (Some(text), Some(dir)) = (manifest, &dir) {
                super::director_deployment::save_manifest(&*storage, dir, text, &mut outcome);
            }
            outcome
        }
        DeploymentCommand::Restore {
            artifact_path,
            report,
            decode,
        } => {
            let identities = decode.identities()?;
            let (location, storage) = super::artifact_path::open(artifact_path)?;
            let backup = StoredBackup::at(&*storage, &location).with_identities(identities);
            let opts = RestoreOptions {
                backup: &backup,
                only: None,
                report: report.clone(),
            };
            workflow::restore(&mut dep, &opts, console)
        }
        DeploymentCommand::BackupCleanup => workflow::backup_cleanup(&mut dep, console),
        DeploymentCommand::RestoreCleanup => workflow::restore_cleanup(&mut dep, console),
        // Nothing but metadata scripts runs: no outcome, no cleanup to name.
        DeploymentCommand::Plan { workflow, json } => {
            return super::deployment_plan::plan(&mut dep, *workflow, *json, console)
                .map(|code| (code, false));
        }
    };
    let no_bbr_jobs = dep.descriptions().count() == dep.len() && dep.jobs().is_empty();
    // Every session ends (bye) before the result is reported.
    drop(dep);
    if no_bbr_jobs && args.director.all_deployments {
        return Ok((0, true));
    }
    for error in outcome.lines() {
        console.error(error);
    }
    Ok((outcome.exit_code(), no_bbr_jobs))
}
