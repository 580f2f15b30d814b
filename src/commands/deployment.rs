//! `deployment --inventory FILE <command>` (or with a director: `director_deployment`): the
//! workflows over every VM of a deployment, each reached through its own `bbr-agent serve`
//! session.

use super::context::Context;
use crate::cli::{DeploymentArgs, DeploymentCommand};
use std::sync::Arc;

use crate::driver::bootstrap::{self, AgentMode, Bring};
use crate::driver::connecting::Connecting;
use crate::driver::inventory;
use crate::driver::{DEFAULT_CONNECT_TIMEOUT, RemoteInstance};
use crate::error::AppError;
use crate::instance::Instance;
use crate::protocol::WireSettings;
use crate::shell_quote::quote;
use crate::workflow::{self, BackupOptions, Deployment, RestoreOptions};

pub fn run(ctx: &Context, args: &DeploymentArgs) -> Result<i32, AppError> {
    if args.max_in_flight == 0 {
        return Err(AppError::Usage("--max-in-flight must be at least 1".into()));
    }
    let Some(path) = super::director_deployment::inventory(args)? else {
        return super::director_deployment::run(ctx, args);
    };
    let inventory = inventory::load(path)?;
    let cleanup_via = std::path::absolute(path).ok().and_then(|p| {
        p.to_str()
            .map(|p| format!("bbr-agent deployment --inventory {}", quote(p)))
    });
    run_targets(
        ctx,
        args,
        &inventory.deployment,
        &inventory.targets,
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
    if let DeploymentCommand::Backup {
        with_manifest: true,
        ..
    } = args.command
    {
        return Err(AppError::Usage(
            "--with-manifest needs a director (--target): the manifest is the director's".into(),
        ));
    }
    let instances = remote_instances(ctx, args, deployment, targets, cleanup_via.clone())?;
    run_instances(ctx, args, deployment, instances, None, cleanup_via)
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
    let connecting = Connecting::new(Arc::new(move |line: &str| console.info(line)));
    Ok(targets
        .iter()
        .map(|t| {
            let expanded = bring.as_ref().and_then(|b| b.expand(&t.command));
            let instance = RemoteInstance::new(
                t.id.clone(),
                deployment,
                expanded.as_deref().unwrap_or(&t.command),
                settings.clone(),
                ctx.console.script_lines(),
            )
            .with_cleanup_via(cleanup_via.clone())
            .with_connect_timeout(limit, connecting.clone())
            .with_bring(expanded.and(bring.clone()));
            Box::new(instance) as Box<dyn Instance>
        })
        .collect())
}

/// The workflow the command asks for, over `instances`; a failed run names `cleanup_via`'s
/// cleanup as its next step.
pub fn run_instances(
    ctx: &Context,
    args: &DeploymentArgs,
    deployment: &str,
    instances: Vec<Box<dyn Instance>>,
    manifest: Option<&str>,
    cleanup_via: Option<String>,
) -> Result<i32, AppError> {
    let mut dep = Deployment::new(deployment.to_string(), instances).with_cleanup_via(cleanup_via);
    dep.max_in_flight = args.max_in_flight;
    let console = &ctx.console;
    let outcome = match &args.command {
        DeploymentCommand::PreBackupCheck => workflow::pre_backup_check(&mut dep, console),
        DeploymentCommand::Backup {
            artifact_path,
            unsafe_lock_free,
            ..
        } => {
            let opts = BackupOptions {
                artifact_parent: artifact_path.clone(),
                lock_free: *unsafe_lock_free,
            };
            let (mut outcome, dir) = workflow::backup(&mut dep, &opts, console);
            if let (Some(text), Some(dir)) = (manifest, &dir) {
                super::director_deployment::save_manifest(dir, text, &mut outcome);
            }
            outcome
        }
        DeploymentCommand::Restore {
            artifact_path,
            report,
        } => {
            let opts = RestoreOptions {
                artifact: artifact_path.clone(),
                only: None,
                report: report.clone(),
            };
            workflow::restore(&mut dep, &opts, console)
        }
        DeploymentCommand::BackupCleanup => workflow::backup_cleanup(&mut dep, console),
        DeploymentCommand::RestoreCleanup => workflow::restore_cleanup(&mut dep, console),
    };
    // Every session ends (bye) before the result is reported.
    drop(dep);
    for error in &outcome.errors {
        console.error(error);
    }
    Ok(outcome.exit_code())
}
