//! `deployment --target ... --all-deployments <pre-backup-check | backup | backup-cleanup>`,
//! as BBR's `cli/command/all_deployments.go`: the director's deployments are listed, each one
//! is run as `--deployment NAME` would run it (its own SSH user, its own artifact directory
//! `<name>_<timestamp>`), a line per deployment says how it went, and the exit code is the
//! bits of every deployment's OR-ed together.
//!
//! **Differences from BBR:** a deployment none of whose VMs has a BBR script (or that has no
//! VMs) is passed by with a line saying so, where BBR fails it ("has no backup scripts"), and
//! when every one is, the run fails: nothing was done; the
//! deployments run one after another (BBR runs up to 10 at once), so their output does not
//! interleave; and the exit code keeps each deployment's bits where BBR's is 1.

use super::context::Context;
use super::director_deployment::{Login, run_one};
use crate::cli::{DeploymentArgs, DeploymentCommand};
use crate::director::{DirectorError, instances};
use crate::error::AppError;

pub fn run(ctx: &Context, args: &DeploymentArgs) -> Result<i32, AppError> {
    let (doing, done, failed) = match &args.command {
        DeploymentCommand::PreBackupCheck => (
            "pre-backup-check",
            "can be backed up",
            "cannot be backed up",
        ),
        DeploymentCommand::Backup {
            unsafe_lock_free: true,
            ..
        } => {
            return Err(AppError::Usage(
                "--unsafe-lock-free cannot be used with --all-deployments (as with bbr)".into(),
            ));
        }
        DeploymentCommand::Backup { .. } => ("backup", "backed up", "cannot be backed up"),
        DeploymentCommand::BackupCleanup => {
            ("backup-cleanup", "cleaned up", "cannot be cleaned up")
        }
        DeploymentCommand::Restore { .. }
        | DeploymentCommand::RestoreCleanup
        | DeploymentCommand::Plan { .. } => {
            return Err(AppError::Usage(
                "--all-deployments is for pre-backup-check, backup and backup-cleanup; a restore or a plan names its deployment with --deployment (-d)".into(),
            ));
        }
    };
    if let Some(name) = &args.director.deployment {
        return Err(AppError::Usage(format!(
            "give one of --deployment (here '{}', maybe from BOSH_DEPLOYMENT) and --all-deployments",
            name.escape_debug()
        )));
    }
    let login = Login::of(args)?;
    let mut director = login.connect()?;
    let names = instances::deployments(&mut director).map_err(DirectorError::from)?;
    if names.is_empty() {
        let url = director.url().to_string();
        return Err(DirectorError::from(instances::InstancesError::NoDeployments { url }).into());
    }
    let console = &ctx.console;
    console.info(format!("{doing} of every deployment: {}", names.join(", ")));

    let mut code = 0;
    let mut lines = Vec::new();
    let mut failures = Vec::new();
    let mut skipped = 0;
    // The first deployment goes on with the connection that listed them; each other gets its
    // own (and its own token), as BBR builds a client per deployment.
    let mut listed = Some(director);
    for (i, name) in names.iter().enumerate() {
        // After Ctrl-C no other deployment is started: each left is said as not run.
        if crate::interrupt::is_interrupted() {
            for name in &names[i..] {
                let line = format!("{name}: not run, the run was interrupted");
                console.info(&line);
                lines.push(line);
                failures.push(name.clone());
            }
            code |= 1;
            break;
        }
        let director = match listed.take() {
            Some(director) => Ok(director),
            None => login.connect(),
        };
        let line = match director.and_then(|d| run_one(ctx, args, &login, d, name)) {
            Ok((_, true)) => {
                skipped += 1;
                format!("{name}: skipped, none of its VMs has a BBR script")
            }
            Ok((0, false)) => format!("{name}: {done}"),
            Ok((bits, false)) => {
                code |= bits;
                failures.push(name.clone());
                format!("{name}: {failed} (exit {bits})")
            }
            Err(e) => {
                // The deployment's own error, said now; the others still run.
                let bits = e.exit_code();
                console.error(e.to_string());
                code |= bits;
                failures.push(name.clone());
                format!("{name}: {failed} (exit {bits})")
            }
        };
        console.info(&line);
        lines.push(line);
    }
    console.info("-------------------------");
    for line in &lines {
        console.info(line);
    }
    if failures.is_empty() {
        let passed = match skipped {
            0 => String::new(),
            n => format!(" ({n} skipped: no BBR scripts)"),
        };
        console.info(format!(
            "{} of {} deployments {done}{passed}",
            names.len() - skipped,
            names.len()
        ));
    } else {
        console.info(format!(
            "{} out of {} deployments {failed}: {}",
            failures.len(),
            names.len(),
            failures.join(", ")
        ));
    }
    // Every deployment passed by: nothing was done, which a nightly job watching only the
    // exit code must not take for success.
    if skipped == names.len() {
        console.error(format!(
            "none of the {} deployments has a VM with a BBR script: {doing} had nothing to do",
            names.len()
        ));
        code |= 1;
    }
    Ok(code)
}
